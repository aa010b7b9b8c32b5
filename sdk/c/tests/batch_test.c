/* The default `invoke-columns` of src/waio.c (the plugin defines no waio_plugin_invoke_batch):
 * each record sliced out of the columns and run through the single-record path (the plugin's
 * waio_plugin_invoke) in order. A record completed or failed during the call goes into the
 * call's result, with no host call; one that sends a request or reports usage is held (`hold`)
 * and begun first; one still open at the end of the call is held then and completes through its
 * handle later. Run with AddressSanitizer: the SDK must free the columns, every event, every
 * future and (through the generated post-return function) the result exactly once. The host is
 * host_stub.c. */
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

/* A future kept past its call (payload "keep"); main moves it to `earlier`, which a record of a
 * later call completes ("late"). */
static waio_future_t *kept, *earlier;

/* The payload says what to do: http, send (a request, no usage), fail, drop, none, two (two
 * outputs), keep, late; anything else completes at once. */
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
    } else if (strcmp(in->payload, "send") == 0) {
        waio_http_request_t req = {.method = "GET", .url = "http://x/two"};
        waio_http_send(&req, on_http, fut);
    } else if (strcmp(in->payload, "fail") == 0) {
        waio_fail(fut, WAIO_FATAL, "bad %s", in->payload);
    } else if (strcmp(in->payload, "drop") == 0) {
        waio_drop(fut);
    } else if (strcmp(in->payload, "none") == 0) {
        waio_complete_none(fut);
    } else if (strcmp(in->payload, "two") == 0) {
        waio_output_t outs[] = {{.data = "x", .len = 1}, {.data = "yz", .len = 2}};
        waio_complete(fut, outs, 2);
    } else if (strcmp(in->payload, "keep") == 0) {
        kept = fut;
    } else if (strcmp(in->payload, "late") == 0) {
        waio_complete_one(earlier, "K", 1);
        earlier = NULL;
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
     * record its own bytes). Only the record that sends a request (2) and the one kept (9) need
     * the host: `hold` for them alone, `begin` only before the request. */
    const char *keys[] = {"k0", "k1", NULL, "", "k4", "k5", NULL, "k7", "k8", "k9"};
    const int64_t stamps[] = {5, 7, -1, 0, 1004, -1, 1006, 1007, -1, 9};
    const char *payloads[] = {"", "a", "http", "", "fail", "drop", "none", "", "two", "keep"};
    stub_invoke_columns(keys, stamps, payloads, 10, 1);
    failures += !stub_expect("mixed batch",
                             "invoke  key=k0 ts=5\n"
                             "invoke a key=k1 ts=7\n"
                             "invoke http key=- ts=-1\n"
                             "hold 2\n"
                             "begin 3\n"
                             "usage m 1 2\n"
                             "send 100 POST http://x/one body=b\n"
                             "invoke  key= ts=0\n"
                             "invoke fail key=k4 ts=1004\n"
                             "invoke drop key=k5 ts=-1\n"
                             "invoke none key=- ts=1006\n"
                             "invoke  key=k7 ts=1007\n"
                             "invoke two key=k8 ts=-1\n"
                             "invoke keep key=k9 ts=9\n"
                             "hold 9\n"
                             "completed 0 1 3 6 7 8\n"
                             "output-ends 1 2 3 3 4 6\n"
                             "outputs [k0|5|out:] [k1|7|out:a] [|0|out:] [k7|1007|out:] "
                             "[k8|-1|x] [k8|-1|yz]\n"
                             "failed 4 fatal: bad fail;\n");
    /* The future held for record 2 outlives the batch call. */
    stub_answer(100, "B");
    failures += !stub_expect("answer after the batch", "complete 3: [-|-1|B]\n"
                                                       "drop 3\n");

    /* The future kept in the last call (held at its end, handle 10) completes through its
     * handle even while a later call runs: it is not a record of this one. */
    earlier = kept;
    kept = NULL;
    const char *late[] = {"late", "c"};
    stub_invoke_columns(NULL, NULL, late, 2, 20);
    failures += !stub_expect("kept future completed in a later call",
                             "invoke late key=- ts=1000\n"
                             "complete 10: [k9|9|K]\n"
                             "drop 10\n"
                             "invoke c key=- ts=1001\n"
                             "completed 0 1\n"
                             "output-ends 0 1\n"
                             "outputs [-|1001|out:c]\n"
                             "failed\n");

    /* A kept future completed during a later call must leave that call's record of the same
     * index alone: record 0 of the second call, kept too, is still held at its end. */
    const char *keep[] = {"keep"};
    stub_invoke_columns(NULL, NULL, keep, 1, 70);
    failures += !stub_expect("keep one", "invoke keep key=- ts=1000\n"
                                         "hold 0\n");
    earlier = kept;
    const char *keep_late[] = {"keep", "late"};
    stub_invoke_columns(NULL, NULL, keep_late, 2, 80);
    failures += !stub_expect("keep again, complete the earlier one",
                             "invoke keep key=- ts=1000\n"
                             "invoke late key=- ts=1001\n"
                             "complete 70: [-|1000|K]\n"
                             "drop 70\n"
                             "hold 0\n"
                             "completed 1\n"
                             "output-ends 0\n"
                             "outputs\n"
                             "failed\n");
    waio_fail(kept, WAIO_RETRIABLE, "after");
    kept = NULL;
    failures += !stub_expect("failed after its call", "fail 80 retriable: after\n"
                                                      "drop 80\n");

    /* A request without usage: `begin` (after `hold`) before the request too. */
    const char *send[] = {"a", "send"};
    stub_invoke_columns(NULL, NULL, send, 2, 90);
    failures += !stub_expect("send", "invoke a key=- ts=1000\n"
                                     "invoke send key=- ts=1001\n"
                                     "hold 1\n"
                                     "begin 91\n"
                                     "send 101 GET http://x/two body=\n"
                                     "completed 0\n"
                                     "output-ends 1\n"
                                     "outputs [-|1000|out:a]\n"
                                     "failed\n");
    stub_answer(101, "S");
    failures += !stub_expect("send answer", "complete 91: [-|1001|S]\n"
                                            "drop 91\n");

    /* Only failures: the outputs' lists stay empty. */
    const char *fails[] = {"fail", "fail"};
    stub_invoke_columns(NULL, NULL, fails, 2, 30);
    failures += !stub_expect("only failures", "invoke fail key=- ts=1000\n"
                                              "invoke fail key=- ts=1001\n"
                                              "completed\n"
                                              "output-ends\n"
                                              "outputs\n"
                                              "failed 0 fatal: bad fail; 1 fatal: bad fail;\n");

    /* An empty batch: the lists point at no allocation; nothing happens. */
    stub_invoke_columns(NULL, NULL, NULL, 0, 50);
    failures += !stub_expect("empty batch", "");

    /* Payloads of different lengths back to back, no keys. */
    const char *sizes[] = {"abc", "d", "efgh"};
    stub_invoke_columns(NULL, NULL, sizes, 3, 40);
    failures += !stub_expect("payload slices", "invoke abc key=- ts=1000\n"
                                               "invoke d key=- ts=1001\n"
                                               "invoke efgh key=- ts=1002\n"
                                               "completed 0 1 2\n"
                                               "output-ends 1 2 3\n"
                                               "outputs [-|1000|out:abc] [-|1001|out:d] "
                                               "[-|1002|out:efgh]\n"
                                               "failed\n");

    /* A single record goes through async-invoke: no begin. */
    stub_invoke_one("k", "x", 60);
    failures += !stub_expect("single record", "invoke x key=k ts=-1\n"
                                              "complete 60: [k|-1|out:x]\n"
                                              "drop 60\n");

    /* A large batch (more records than the SDK's stack array), all completed at once: no host
     * call but the result, whose lists grow past their first allocation. */
    enum { N = 300 };
    const char *many[N];
    for (size_t i = 0; i < N; i++) {
        many[i] = "m";
    }
    stub_invoke_columns(NULL, NULL, many, N, 1000);
    char *want = malloc(N * 64);
    size_t at = 0;
    for (int i = 0; i < N; i++) {
        at += (size_t)sprintf(want + at, "invoke m key=- ts=%d\n", 1000 + i);
    }
    at += (size_t)sprintf(want + at, "completed");
    for (int i = 0; i < N; i++) {
        at += (size_t)sprintf(want + at, " %d", i);
    }
    at += (size_t)sprintf(want + at, "\noutput-ends");
    for (int i = 0; i < N; i++) {
        at += (size_t)sprintf(want + at, " %d", i + 1);
    }
    at += (size_t)sprintf(want + at, "\noutputs");
    for (int i = 0; i < N; i++) {
        at += (size_t)sprintf(want + at, " [-|%d|out:m]", 1000 + i);
    }
    sprintf(want + at, "\nfailed\n");
    failures += !stub_expect("large batch", want);
    free(want);

    if (failures) {
        return 1;
    }
    printf("batch_test: ok\n");
    return 0;
}
