/* A plugin's own waio_plugin_invoke_batch: it gets every record of an `invoke-columns` batch
 * with its future at once and sends one request for all of them (no `begin`), completing each
 * future from the answer: those futures are held (`hold(i)`) at the end of the call. A record it
 * completes during the call goes into the call's result, with no host call; one it calls
 * `waio_begin` on is held then (and completes through its handle); records it hands to
 * waio_invoke_each complete into the result too. Single records still go to
 * waio_plugin_invoke. Run with AddressSanitizer. The host is host_stub.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host_stub.h"
#include "waio.h"

void waio_plugin_invoke(const waio_record_t *in, waio_future_t *fut) {
    stub_trace("invoke %s", in->payload);
    waio_complete_one(fut, in->payload, in->payload_len);
}

typedef struct batch {
    size_t n;
    waio_future_t *futs[];
} batch_t;

/* The answer holds one line per record, in order. */
static void on_batch(const waio_http_response_t *resp, const waio_http_error_t *err, void *ud) {
    batch_t *b = ud;
    if (!err && strcmp(resp->body, "each") == 0) {
        /* Per-record code after the call: `begin` before each record (handles held). */
        waio_invoke_each(b->futs, b->n);
        free(b);
        return;
    }
    const char *line = resp->body;
    for (size_t i = 0; i < b->n; i++) {
        if (err || !line) {
            waio_fail(b->futs[i], WAIO_RETRIABLE, "no answer for this record");
            continue;
        }
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        waio_complete_one(b->futs[i], line, len);
        line = end ? end + 1 : NULL;
    }
    free(b);
}

void waio_plugin_invoke_batch(waio_future_t *const *futs, size_t n) {
    stub_trace("batch %zu", n);
    if (strcmp(waio_future_input(futs[0])->payload, "each") == 0) {
        waio_invoke_each(futs, n); /* this batch the per-record way */
        return;
    }
    batch_t *b = malloc(sizeof *b + n * sizeof b->futs[0]);
    b->n = 0;
    char body[4096];
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const waio_record_t *in = waio_future_input(futs[i]);
        if (strcmp(in->payload, "now") == 0) {
            waio_complete_one(futs[i], "NOW", 3);
            continue;
        }
        if (strcmp(in->payload, "solo") == 0) {
            waio_begin(futs[i]);
            waio_plugin_invoke(in, futs[i]);
            continue;
        }
        b->futs[b->n++] = futs[i];
        if (at < sizeof body) {
            at += (size_t)snprintf(body + at, sizeof body - at, "%s,", in->payload);
        }
    }
    waio_http_request_t req = {.method = "POST", .url = "http://x/batch", .body = body,
                               .body_len = at};
    waio_http_send(&req, on_batch, b);
}

int main(void) {
    int failures = 0;

    const char *keys[] = {"ka", NULL, "kb", "kn"};
    const int64_t stamps[] = {-1, 7, 8, 9};
    const char *payloads[] = {"a", "solo", "b", "now"};
    stub_invoke_columns(keys, stamps, payloads, 4, 1);
    failures += !stub_expect("batch", "batch 4\n"
                                      "hold 1\n"
                                      "begin 2\n"
                                      "invoke solo\n"
                                      "complete 2: [-|7|solo]\n"
                                      "drop 2\n"
                                      "send 100 POST http://x/batch body=a,b,\n"
                                      "hold 0\n"
                                      "hold 2\n"
                                      "completed 3\n"
                                      "output-ends 1\n"
                                      "outputs [kn|9|NOW]\n"
                                      "failed\n");
    stub_answer(100, "A\nB");
    failures += !stub_expect("answer", "complete 1: [ka|-1|A]\n"
                                       "drop 1\n"
                                       "complete 3: [kb|8|B]\n"
                                       "drop 3\n");

    /* A batch the plugin hands back to per-record code: completed at once, into the result. */
    const char *each[] = {"each", "y"};
    stub_invoke_columns(NULL, NULL, each, 2, 30);
    failures += !stub_expect("invoke_each", "batch 2\n"
                                            "invoke each\n"
                                            "invoke y\n"
                                            "completed 0 1\n"
                                            "output-ends 1 2\n"
                                            "outputs [-|1000|each] [-|1001|y]\n"
                                            "failed\n");

    /* The answer hands the records to per-record code after the call: each is begun first and
     * completes through the handle held at the end of the call. */
    const char *later[] = {"p", "q"};
    stub_invoke_columns(NULL, NULL, later, 2, 40);
    failures += !stub_expect("each later", "batch 2\n"
                                           "send 101 POST http://x/batch body=p,q,\n"
                                           "hold 0\n"
                                           "hold 1\n");
    stub_answer(101, "each");
    failures += !stub_expect("each later answer", "begin 40\n"
                                                  "invoke p\n"
                                                  "complete 40: [-|1000|p]\n"
                                                  "drop 40\n"
                                                  "begin 41\n"
                                                  "invoke q\n"
                                                  "complete 41: [-|1001|q]\n"
                                                  "drop 41\n");

    /* An empty batch does not reach the plugin. */
    stub_invoke_columns(NULL, NULL, NULL, 0, 10);
    failures += !stub_expect("empty batch", "");

    /* A single record goes to waio_plugin_invoke, with no begin. */
    stub_invoke_one(NULL, "x", 20);
    failures += !stub_expect("single record", "invoke x\n"
                                              "complete 20: [-|-1|x]\n"
                                              "drop 20\n");

    /* More records than the SDK's stack array: all in order, one request. */
    enum { N = 100 };
    const char *many[N];
    for (size_t i = 0; i < N; i++) {
        many[i] = "m";
    }
    stub_invoke_columns(NULL, NULL, many, N, 1000);
    char *want = malloc(N * 16 + 64);
    size_t at = (size_t)sprintf(want, "batch %d\nsend 102 POST http://x/batch body=", N);
    for (int i = 0; i < N; i++) {
        at += (size_t)sprintf(want + at, "m,");
    }
    at += (size_t)sprintf(want + at, "\n");
    for (int i = 0; i < N; i++) {
        at += (size_t)sprintf(want + at, "hold %d\n", i);
    }
    failures += !stub_expect("large batch", want);
    free(want);
    char *answer = malloc(N * 2);
    for (int i = 0; i < N; i++) {
        answer[2 * i] = 'M';
        answer[2 * i + 1] = i + 1 < N ? '\n' : 0;
    }
    stub_answer(102, answer);
    free(answer);
    want = malloc(N * 64);
    at = 0;
    for (int i = 0; i < N; i++) {
        at += (size_t)sprintf(want + at, "complete %d: [-|%d|M]\ndrop %d\n", 1000 + i, 1000 + i,
                              1000 + i);
    }
    failures += !stub_expect("large answer", want);
    free(want);

    if (failures) {
        return 1;
    }
    printf("batch_hook_test: ok\n");
    return 0;
}
