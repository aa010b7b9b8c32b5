#!/bin/sh
# Regenerates the committed bindings in gen/ from the WIT contract (../../wit, world
# enricher-plugin). Only needed after wit/waio.wit changes; plugin builds use the committed files
# so that no machine has to install wit-bindgen (a 3-10 minute `cargo install`).
#
# Needs wit-bindgen-cli 0.63.0 with the C generator:
#   cargo install wit-bindgen-cli@0.63.0 --locked --no-default-features --features c \
#       --root "$HOME/.cache/waio/wit-bindgen"
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
wit_bindgen="${WIT_BINDGEN:-$HOME/.cache/waio/wit-bindgen/bin/wit-bindgen}"
if ! "$wit_bindgen" --version 2>/dev/null | grep -q ' 0\.63\.0'; then
    echo "regenerate.sh: wit-bindgen 0.63.0 not found at $wit_bindgen (see the comment above)" >&2
    exit 1
fi
"$wit_bindgen" c "$here/../../wit" --world enricher-plugin --out-dir "$here/gen"
