#!/usr/bin/env bash
# Builds a waio JavaScript plugin into a WebAssembly component.
#
#   bash path/to/sdk/js/build.sh PLUGIN.js OUTPUT.wasm
#
# PLUGIN.js default-exports the plugin class (or object) and imports the SDK as "waio". The
# script generates an entry module that registers it as the `enricher` export, bundles it with
# the SDK (esbuild), then makes the component (componentize-js, world `enricher-plugin` of the
# repository's wit/). Tools come from $WAIO_NODE (default ~/.cache/waio/node, see scripts/setup-js).
set -euo pipefail

if [ "$#" -ne 2 ]; then
    echo "usage: build.sh PLUGIN.js OUTPUT.wasm" >&2
    exit 2
fi
sdk="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
wit="$(cd "$sdk/../../wit" && pwd)"
bin="${WAIO_NODE:-$HOME/.cache/waio/node}/node_modules/.bin"
# scripts/setup-js installs a node >= 20 there when the machine's is older.
if [ -x "${WAIO_NODE:-$HOME/.cache/waio/node}/runtime/bin/node" ]; then
    export PATH="${WAIO_NODE:-$HOME/.cache/waio/node}/runtime/bin:$PATH"
fi
for tool in esbuild componentize-js; do
    if [ ! -x "$bin/$tool" ]; then
        echo "build.sh: $bin/$tool not found; run scripts/setup-js first" >&2
        exit 1
    fi
done
plugin="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
out="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
[ -f "$plugin" ] || { echo "build.sh: $1 not found" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat >"$work/entry.js" <<JS
import Plugin from $(node -p 'JSON.stringify(process.argv[1])' "$plugin");
import { enricherExport } from $(node -p 'JSON.stringify(process.argv[1])' "$sdk/src/runtime.js");
export const enricher = enricherExport(Plugin);
JS
# The WIT imports (waio:enricher/...) stay imports; everything else is inlined.
"$bin/esbuild" "$work/entry.js" --bundle --format=esm --platform=neutral --target=es2022 \
    --alias:waio="$sdk/src/waio.js" --external:'waio:*' --log-level=warning \
    --outfile="$work/bundle.js"
# componentize-js reads the WIT inside a WASI sandbox that sees only the current directory, so
# it gets a copy next to the bundle, with relative paths: the current contract only, not the
# earlier ones kept under wit/compat for the host.
mkdir "$work/wit"
cp "$wit/waio.wit" "$work/wit/"
(cd "$work" && "$bin/componentize-js" bundle.js --wit wit --world-name enricher-plugin \
    --disable http fetch-event -o "$out")
