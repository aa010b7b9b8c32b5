#!/bin/sh
# Runs the SDK's native unit tests (the JSON helper, the status and HTTP error rules), with the
# machine's clang-19.
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
