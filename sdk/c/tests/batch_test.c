/* The default `async-invoke-batch` of src/waio.c (the plugin defines no waio_plugin_invoke_batch):
 * for each record in order, `begin` on its future and then the single-record path (the
 * plugin's waio_plugin_invoke). Run with AddressSanitizer: the SDK must free the list, every
 * event and every future exactly once. The host is host_stub.c. */
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

    /* Every kind of per-record outcome, keys present, absent and empty, an empty payload. */
    const char *keys[] = {"k1", NULL, "", "k4", "k5", "k6"};
    const char *payloads[] = {"a", "http", "fail", "drop", "none", ""};
    stub_invoke_batch(keys, payloads, 6, 1);
    failures += !stub_expect("mixed batch",
                             "begin 1\n"
                             "invoke a key=k1 ts=1000\n"
                             "complete 1: [k1|1000|out:a]\n"
                             "drop 1\n"
                             "begin 2\n"
                             "invoke http key=- ts=1001\n"
                             "usage m 1 2\n"
                             "send 100 POST http://x/one body=b\n"
                             "begin 3\n"
                             "invoke fail key= ts=1002\n"
                             "fail 3 fatal: bad fail\n"
                             "drop 3\n"
                             "begin 4\n"
                             "invoke drop key=k4 ts=1003\n"
                             "drop 4\n"
                             "begin 5\n"
                             "invoke none key=k5 ts=1004\n"
                             "complete 5:\n"
                             "drop 5\n"
                             "begin 6\n"
                             "invoke  key=k6 ts=1005\n"
                             "complete 6: [k6|1005|out:]\n"
                             "drop 6\n");
    /* The future kept by record 2 outlives the batch call. */
    stub_answer(100, "B");
    failures += !stub_expect("answer after the batch", "complete 2: [-|1001|B]\n"
                                                       "drop 2\n");

    /* An empty batch: the list points at no allocation; nothing happens. */
    stub_invoke_batch(NULL, NULL, 0, 50);
    failures += !stub_expect("empty batch", "");

    /* A single record goes through async-invoke: no begin. */
    stub_invoke_one("k", "x", 60);
    failures += !stub_expect("single record", "invoke x key=k ts=-1\n"
                                              "complete 60: [k|-1|out:x]\n"
                                              "drop 60\n");

    /* A large batch: begin i, invoke i, complete i, drop i, in input order. */
    enum { N = 300 };
    const char *many[N];
    for (size_t i = 0; i < N; i++) {
        many[i] = "m";
    }
    stub_invoke_batch(NULL, many, N, 1000);
    char *want = malloc(N * 160);
    size_t at = 0;
    for (int i = 0; i < N; i++) {
        at += (size_t)sprintf(want + at,
                              "begin %d\ninvoke m key=- ts=%d\ncomplete %d: [-|%d|out:m]\n"
                              "drop %d\n",
                              1000 + i, 1000 + i, 1000 + i, 1000 + i, 1000 + i);
    }
    failures += !stub_expect("large batch", want);
    free(want);

    if (failures) {
        return 1;
    }
    printf("batch_test: ok\n");
    return 0;
}
