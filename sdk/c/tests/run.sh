#!/bin/sh
# Runs the SDK's native unit tests (the JSON helper, the status and HTTP error rules, and the
# exports in src/waio.c against a stub host: batches), with the machine's clang-19.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"${CC:-clang-19}" -std=c11 -Wall -Wextra -Werror -g -fsanitize=address,undefined \
    -I"$here/../include" -o "$out/json_test" "$here/json_test.c" "$here/../src/waio_json.c"
"$out/json_test"
"${CC:-clang-19}" -std=c11 -Wall -Wextra -Werror -g -fsanitize=address,undefined \
    -I"$here/../include" -o "$out/status_test" "$here/status_test.c"
"$out/status_test" "$here/../../../wit/retriable-statuses.txt"
"${CC:-clang-19}" -std=c11 -Wall -Wextra -Werror -g -fsanitize=address,undefined \
    -I"$here/../include" -o "$out/http_error_test" "$here/http_error_test.c"
"$out/http_error_test"
# src/waio.c with the generated bindings compiled natively and their imports stubbed
# (host_stub.c); the wasm import/export attributes mean nothing natively.
for t in batch_test batch_hook_test headers_test; do
    "${CC:-clang-19}" -std=c11 -Wall -Wextra -Werror -Wno-unknown-attributes -g \
        -fsanitize=address,undefined -I"$here/../include" -I"$here/../gen" -o "$out/$t" \
        "$here/$t.c" "$here/host_stub.c" "$here/../src/waio.c" "$here/../gen/enricher_plugin.c"
    "$out/$t"
done
