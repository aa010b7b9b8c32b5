/* waio_http_error_is_retriable: every kind of the WIT `http-error`. A passing fault (timeout,
 * connection, unavailable: the endpoint's circuit breaker is open) is retriable; a denied or
 * invalid request is not. */
#include <stdio.h>

#include "waio.h"

int main(void) {
    struct {
        waio_http_error_kind_t kind;
        const char *name;
        bool retriable;
    } cases[] = {
        {WAIO_HTTP_DENIED, "denied", false},
        {WAIO_HTTP_INVALID_REQUEST, "invalid-request", false},
        {WAIO_HTTP_TIMEOUT, "timeout", true},
        {WAIO_HTTP_CONNECTION, "connection", true},
        {WAIO_HTTP_UNAVAILABLE, "unavailable", true},
    };
    int failures = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (waio_http_error_is_retriable(cases[i].kind) != cases[i].retriable) {
            fprintf(stderr, "%s: retriable should be %d\n", cases[i].name, cases[i].retriable);
            failures++;
        }
    }
    if (failures) return 1;
    printf("http_error_test: ok\n");
    return 0;
}
