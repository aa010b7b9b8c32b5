#!/bin/sh
# Builds app.py into conform-python.wasm with componentize-py (installed by scripts/setup-python).
# Runs from this directory; the SDK and the WIT are found relative to it.
exec sh ../../../sdk/python/build.sh app conform-python.wasm
