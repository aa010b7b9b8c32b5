#!/bin/sh
# Builds classify.c into classify.wasm with the waio C SDK (toolchain: scripts/setup-c).
# Runs from this directory; the SDK is found relative to it.
exec sh ../../../sdk/c/build.sh classify.wasm classify.c
