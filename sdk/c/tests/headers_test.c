/* `waio_future_headers`: asks the host once per future, keeps the headers (names and values
 * NUL-terminated, values may be empty) as long as the future, and frees them with it, for single
 * records and for those of a batch. Run with AddressSanitizer. The host is host_stub.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host_stub.h"
#include "waio.h"

/* Completes with "name=value;..." of the input's headers, asking for them twice; a record with
 * payload "plain" completes at once without asking. */
void waio_plugin_invoke(const waio_record_t *in, waio_future_t *fut) {
    if (strcmp(in->payload, "plain") == 0) {
        waio_complete_one(fut, "P", 1);
        return;
    }
    size_t n = 99;
    const waio_input_header_t *headers = waio_future_headers(fut, &n);
    size_t again = 0;
    if (waio_future_headers(fut, &again) != headers || again != n) {
        fprintf(stderr, "a second call must return the same headers\n");
        abort();
    }
    char out[256] = "";
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const waio_input_header_t *h = &headers[i];
        if (h->name[h->name_len] != 0 || h->value[h->value_len] != 0) {
            fprintf(stderr, "header %zu is not NUL-terminated\n", i);
            abort();
        }
        at += (size_t)snprintf(out + at, sizeof out - at, "%s=%s;", h->name, h->value);
    }
    waio_complete_one(fut, out, at);
}

int main(void) {
    int failures = 0;

    const char *names[] = {"trace", "tenant", "trace"};
    const char *values[] = {"t-1", "", "t-2"};
    stub_set_headers(names, values, 3);
    stub_invoke_one(NULL, "a", 7);
    failures += !stub_expect("three headers, one repeated, one empty",
                             "input-headers 7\n"
                             "complete 7: [-|-1|trace=t-1;tenant=;trace=t-2;]\n"
                             "drop 7\n");

    stub_set_headers(NULL, NULL, 0);
    stub_invoke_one(NULL, "b", 8);
    failures += !stub_expect("no headers", "input-headers 8\n"
                                           "complete 8: [-|-1|]\n"
                                           "drop 8\n");

    /* In an `invoke-columns` batch, a record that reads its headers is held first (that record
     * only; no `begin`: reading headers is no request) and then completes through its handle;
     * the one that does not goes into the result. */
    stub_set_headers(names, values, 1);
    const char *payloads[] = {"c", "plain", "d"};
    stub_invoke_columns(NULL, NULL, payloads, 3, 20);
    failures += !stub_expect("headers in a batch", "hold 0\n"
                                                   "input-headers 20\n"
                                                   "complete 20: [-|1000|trace=t-1;]\n"
                                                   "drop 20\n"
                                                   "hold 2\n"
                                                   "input-headers 22\n"
                                                   "complete 22: [-|1002|trace=t-1;]\n"
                                                   "drop 22\n"
                                                   "completed 1\n"
                                                   "output-ends 1\n"
                                                   "outputs [-|1001|P]\n"
                                                   "failed\n");

    if (failures) {
        fprintf(stderr, "headers_test: %d failed\n", failures);
        return 1;
    }
    printf("headers_test: ok\n");
    return 0;
}
