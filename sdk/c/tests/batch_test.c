/* The default `invoke-columns` of src/waio.c (the plugin defines no waio_plugin_invoke_batch):
 * each record sliced out of the columns, its future taken with `hold(i)`, then in order `begin`
 * on it and the single-record path (the plugin's waio_plugin_invoke). Run with
 * AddressSanitizer: the SDK must free the columns, every event and every future exactly once.
 * The host is host_stub.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host_stub.h"
#include "waio.h"

static void on_http(const waio_http_response_t *resp, const waio_http_error_t *err, void *ud) {
    waio_future_t *fut = ud;
    if (err) {
        waio_fail(fut, WAIO_RETRIABLE, "%s", err->message);
        return;
    }
    waio_complete_one(fut, resp->body, resp->body_len);
}

/* The payload says what to do: http, fail, drop, none; anything else completes at once. */
void waio_plugin_invoke(const waio_record_t *in, waio_future_t *fut) {
    if (in != waio_future_input(fut) || in->payload[in->payload_len] != 0 ||
        (in->key && in->key[in->key_len] != 0)) {
        fprintf(stderr, "bad record view\n");
        abort();
    }
    stub_trace("invoke %s key=%s ts=%lld", in->payload, in->key ? in->key : "-",
               in->has_timestamp ? (long long)in->timestamp : -1LL);
    if (strcmp(in->payload, "http") == 0) {
        waio_report_usage("m", 1, 2);
        waio_http_request_t req = {.method = "POST", .url = "http://x/one", .body = "b",
                                   .body_len = 1};
        waio_http_send(&req, on_http, fut);
    } else if (strcmp(in->payload, "fail") == 0) {
        waio_fail(fut, WAIO_FATAL, "bad %s", in->payload);
    } else if (strcmp(in->payload, "drop") == 0) {
        waio_drop(fut);
    } else if (strcmp(in->payload, "none") == 0) {
        waio_complete_none(fut);
    } else {
        char out[64];
        int n = snprintf(out, sizeof out, "out:%s", in->payload);
        waio_complete_one(fut, out, (size_t)n);
    }
}

int main(void) {
    int failures = 0;

    /* Every kind of per-record outcome; keys present, absent and empty; timestamps present,
     * absent and zero; empty payloads first, in the middle and last (the slicing must give each
     * record its own bytes). */
    const char *keys[] = {"k0", "k1", NULL, "", "k4", "k5", NULL, "k7"};
    const int64_t stamps[] = {5, 7, -1, 0, 1004, -1, 1006, 1007};
    const char *payloads[] = {"", "a", "http", "", "fail", "drop", "none", ""};
    stub_invoke_columns(keys, stamps, payloads, 8, 1);
    failures += !stub_expect("mixed batch",
                             "hold 0\n"
                             "begin 1\n"
                             "invoke  key=k0 ts=5\n"
                             "complete 1: [k0|5|out:]\n"
                             "drop 1\n"
                             "hold 1\n"
                             "begin 2\n"
                             "invoke a key=k1 ts=7\n"
                             "complete 2: [k1|7|out:a]\n"
                             "drop 2\n"
                             "hold 2\n"
                             "begin 3\n"
                             "invoke http key=- ts=-1\n"
                             "usage m 1 2\n"
                             "send 100 POST http://x/one body=b\n"
                             "hold 3\n"
                             "begin 4\n"
                             "invoke  key= ts=0\n"
                             "complete 4: [|0|out:]\n"
                             "drop 4\n"
                             "hold 4\n"
                             "begin 5\n"
                             "invoke fail key=k4 ts=1004\n"
                             "fail 5 fatal: bad fail\n"
                             "drop 5\n"
                             "hold 5\n"
                             "begin 6\n"
                             "invoke drop key=k5 ts=-1\n"
                             "drop 6\n"
                             "hold 6\n"
                             "begin 7\n"
                             "invoke none key=- ts=1006\n"
                             "complete 7:\n"
                             "drop 7\n"
                             "hold 7\n"
                             "begin 8\n"
                             "invoke  key=k7 ts=1007\n"
                             "complete 8: [k7|1007|out:]\n"
                             "drop 8\n");
    /* The future held for record 2 outlives the batch call. */
    stub_answer(100, "B");
    failures += !stub_expect("answer after the batch", "complete 3: [-|-1|B]\n"
                                                       "drop 3\n");

    /* An empty batch: the lists point at no allocation; nothing happens. */
    stub_invoke_columns(NULL, NULL, NULL, 0, 50);
    failures += !stub_expect("empty batch", "");

    /* Payloads of different lengths back to back, no keys. */
    const char *sizes[] = {"abc", "d", "efgh"};
    stub_invoke_columns(NULL, NULL, sizes, 3, 40);
    failures += !stub_expect("payload slices", "hold 0\n"
                                               "begin 40\n"
                                               "invoke abc key=- ts=1000\n"
                                               "complete 40: [-|1000|out:abc]\n"
                                               "drop 40\n"
                                               "hold 1\n"
                                               "begin 41\n"
                                               "invoke d key=- ts=1001\n"
                                               "complete 41: [-|1001|out:d]\n"
                                               "drop 41\n"
                                               "hold 2\n"
                                               "begin 42\n"
                                               "invoke efgh key=- ts=1002\n"
                                               "complete 42: [-|1002|out:efgh]\n"
                                               "drop 42\n");

    /* A single record goes through async-invoke: no begin. */
    stub_invoke_one("k", "x", 60);
    failures += !stub_expect("single record", "invoke x key=k ts=-1\n"
                                              "complete 60: [k|-1|out:x]\n"
                                              "drop 60\n");

    /* A large batch: hold i, begin, invoke, complete, drop, in input order. */
    enum { N = 300 };
    const char *many[N];
    for (size_t i = 0; i < N; i++) {
        many[i] = "m";
    }
    stub_invoke_columns(NULL, NULL, many, N, 1000);
    char *want = malloc(N * 160);
    size_t at = 0;
    for (int i = 0; i < N; i++) {
        at += (size_t)sprintf(want + at,
                              "hold %d\nbegin %d\ninvoke m key=- ts=%d\n"
                              "complete %d: [-|%d|out:m]\ndrop %d\n",
                              i, 1000 + i, 1000 + i, 1000 + i, 1000 + i, 1000 + i);
    }
    failures += !stub_expect("large batch", want);
    free(want);

    if (failures) {
        return 1;
    }
    printf("batch_test: ok\n");
    return 0;
}
