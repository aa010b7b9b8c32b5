#!/bin/sh
# Builds a waio plugin component from C sources:
#   sh path/to/sdk/c/build.sh OUT.wasm file.c [more.c ...] [-- extra clang flags]
# Needs what scripts/setup-c installs: clang-19 + wasi-libc (apt) and waio-componentize in
# $HOME/.cache/waio/bin. Works from any directory; paths are relative to the caller's cwd.
set -eu
if [ $# -lt 2 ]; then
    echo "usage: sh build.sh OUT.wasm file.c [more.c ...] [-- clang flags]" >&2
    exit 2
fi
sdk="$(cd "$(dirname "$0")" && pwd)"
out="$1"
shift
srcs=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    srcs="$srcs $1"
    shift
done
[ $# -gt 0 ] && shift # the "--"

cc="${WAIO_CC:-clang-19}"
componentize="${WAIO_COMPONENTIZE:-$HOME/.cache/waio/bin/waio-componentize}"
for tool in "$cc" "$componentize"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "build.sh: $tool not found; run scripts/setup-c first" >&2
        exit 1
    fi
done

core="$out.core.wasm"
# -mexec-model=reactor: a library-like module (exports, _initialize), no main().
# The component-type object carries the WIT world; waio-componentize reads it from the module.
# shellcheck disable=SC2086
"$cc" --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -O2 \
    -std=c11 -Wall -Wextra -Wno-unused-parameter \
    -I"$sdk/include" -I"$sdk/gen" \
    -Wl,--strip-debug -o "$core" \
    $srcs "$sdk/src/waio.c" "$sdk/src/waio_json.c" "$sdk/gen/enricher_plugin.c" \
    "$sdk/gen/enricher_plugin_component_type.o" "$@"
"$componentize" "$core" -o "$out"
rm -f "$core"
