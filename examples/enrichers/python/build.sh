#!/bin/sh
# Builds classify.py into classify.wasm with componentize-py (installed by scripts/setup-python).
# Runs from this directory; the SDK and the WIT are found relative to it.
exec sh ../../../sdk/python/build.sh classify classify.wasm
