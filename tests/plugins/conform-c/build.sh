#!/bin/sh
# Builds conform.c into conform-c.wasm with the waio C SDK (toolchain: scripts/setup-c).
# Runs from this directory; the SDK is found relative to it.
exec sh ../../../sdk/c/build.sh conform-c.wasm conform.c
