/*
 * waio C SDK: write a waio enricher plugin in C.
 *
 * A plugin implements a few callbacks (`waio_plugin_open`, `waio_plugin_invoke`, optionally
 * `waio_plugin_invoke_batch`, `waio_plugin_timeout` and `waio_plugin_close`); the SDK implements
 * the WIT world `waio:enricher/enricher-plugin` (0.5.0) on top of them and hides handles and
 * call-ids.
 *
 * Model (Flink's AsyncFunction): the SDK calls `waio_plugin_invoke` once per record with a
 * future (the host hands records over in batches; see `waio_plugin_invoke_batch`). The callback
 * must return at once. It completes the future now (`waio_complete*` / `waio_fail`), or starts
 * HTTP requests (`waio_http_send`) and completes it later from the answer callback. Everything
 * runs on one thread, inside calls from the host: never block, never sleep.
 *
 * Ownership, in one rule: a future is owned by the plugin from `waio_plugin_invoke` (or
 * `waio_plugin_invoke_batch`, `waio_plugin_timeout`) until exactly one of `waio_complete`,
 * `waio_complete_one`, `waio_complete_none`, `waio_fail` or `waio_drop` is called on it; that
 * call frees it. The record `waio_future_input(fut)` lives as long as its future. All other
 * pointers handed to plugin callbacks are valid during the callback only; all pointers the
 * plugin hands to the SDK are only read during the call (the SDK copies what it keeps).
 */
#ifndef WAIO_H
#define WAIO_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- records ---------------------------------------------------------------------------- */

/* One stream record. Strings are NUL-terminated (and have a length, as they may hold NULs). */
typedef struct waio_record {
    const char *key;      /* the record's key, or NULL when it has none */
    size_t key_len;
    bool has_timestamp;   /* event time, milliseconds since the Unix epoch */
    int64_t timestamp;
    const char *payload;  /* usually one JSON document (UTF-8) */
    size_t payload_len;
} waio_record_t;

/* The pending result of one record (Flink's ResultFuture). Opaque. */
typedef struct waio_future waio_future_t;

/* One output payload. Outputs always keep the input's key and timestamp. */
typedef struct waio_output {
    const char *data;
    size_t len;
} waio_output_t;

typedef enum waio_failure_kind {
    WAIO_RETRIABLE = 0, /* a passing fault (rate limit, 5xx, timeout): a retry may succeed */
    WAIO_FATAL = 1,     /* a fault of the record or the plugin: retrying gives the same answer */
} waio_failure_kind_t;

/* The input record of `fut`; valid until the future is completed, failed or dropped. */
const waio_record_t *waio_future_input(const waio_future_t *fut);

/* One header of an input record. Both strings have a length (a value is bytes and may hold
 * NULs) and are NUL-terminated for convenience. */
typedef struct waio_input_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} waio_input_header_t;

/* The headers of `fut`'s input record: a Kafka record's headers in the order they came (a name
 * may repeat); none for records of other sources. Stores their number in `*n` and returns them
 * (NULL when there are none). The first call asks the host (records that never ask pay
 * nothing); later calls return the same array, which lives as long as the future. */
const waio_input_header_t *waio_future_headers(waio_future_t *fut, size_t *n);

/* Completes the record with `n` outputs (0 filters it out, several fan out). Frees `fut`. */
void waio_complete(waio_future_t *fut, const waio_output_t *outputs, size_t n);
/* Completes the record with one output of `len` bytes. Frees `fut`. */
void waio_complete_one(waio_future_t *fut, const char *data, size_t len);
/* Completes the record with no output. Frees `fut`. */
void waio_complete_none(waio_future_t *fut);
/* Fails the record; the message is printf-formatted. The operator's `on_failure` decides what
 * happens: stop the job or dead-letter the record. Frees `fut`. */
void waio_fail(waio_future_t *fut, waio_failure_kind_t kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Releases `fut` without completing it: the record stays in flight until its timeout fires. */
void waio_drop(waio_future_t *fut);

/* Says the plugin now works on `fut`'s record: the HTTP requests it sends and the usage it
 * reports from now until the next `waio_begin` (or the end of the current call from the host)
 * are on this record's behalf (its timeout bounds their retries, its dead letter names their
 * last status, its cached result keeps their usage). Needed only where the host cannot know
 * the record: in `waio_plugin_invoke_batch` (and in the answer callback of a request sent for
 * many records), before per-record work on one of them. In `waio_plugin_invoke`,
 * `waio_plugin_timeout` and the answer callback of a request sent for one record the host knows
 * the record already (calling it there is harmless). Never call it for work on behalf of many
 * records. During a batch call it costs host calls (the record is held, see README "Batches"):
 * call it only before a request or usage report. */
void waio_begin(waio_future_t *fut);

/* ---- the callbacks a plugin implements --------------------------------------------------- */

/* Called once before any record with the operator's `[operator.config]` as a JSON object
 * (`config_json` is NUL-terminated). Return NULL to accept it, or an error message (copied by
 * the SDK; a static or global buffer is fine) to stop the job before it reads any input.
 * Optional: the default accepts any config. */
const char *waio_plugin_open(const char *config_json, size_t len);

/* Starts enriching one record (`in == waio_future_input(fut)`). Must return at once. Required,
 * even with `waio_plugin_invoke_batch`: the host sends single records (a retry, and the records
 * of a batch left uncompleted by a trap, again one by one on a fresh instance) here. */
void waio_plugin_invoke(const waio_record_t *in, waio_future_t *fut);

/* Starts enriching a batch of records at once, e.g. with one HTTP request for all of them (an
 * embeddings API takes a list of inputs), completing each future from the answer. `futs[0..n)`
 * (n >= 1) are the records' futures in input order, each owned by the plugin exactly as in
 * `waio_plugin_invoke`; `waio_future_input(futs[i])` is its record. The array itself is valid
 * during the call only: copy the pointers you keep. Must return at once. Each record keeps its
 * own timeout (`waio_plugin_timeout`) and its place in the output.
 * Work for the whole batch is on no single record's behalf: do not call `waio_begin` for it.
 * To hand records to per-record code instead, use `waio_invoke_each` (or call `waio_begin(fut)`
 * before per-record work on one record).
 * Optional: without it the SDK runs `waio_invoke_each` on every batch. */
void waio_plugin_invoke_batch(waio_future_t *const *futs, size_t n);

/* The default batch handling, for a `waio_plugin_invoke_batch` that serves only some records
 * (or some batches) itself: for each of `futs[0..n)` in order,
 * `waio_plugin_invoke(waio_future_input(fut), fut)` as that record's code: during the batch call
 * the SDK tells the host of the record (`begin`) before its first request or usage report, and
 * only then; after the call (say from an answer) it calls `waio_begin(fut)` first. Takes over
 * the futures, not the array. */
void waio_invoke_each(waio_future_t *const *futs, size_t n);

/* Called when the record's time is up before it completed, with a fresh future for the same
 * record. Complete it with a fallback, or fail it. Optional: the default fails the record,
 * retriable, with "timed out" (as Flink does). Completing the original future after this is
 * harmless: the host keeps the first completion. */
void waio_plugin_timeout(const waio_record_t *in, waio_future_t *fut);

/* Called once at the end of the job. Optional. */
void waio_plugin_close(void);

/* ---- HTTP, performed by the host ---------------------------------------------------------- */

typedef struct waio_header {
    const char *name;
    const char *value; /* may hold `${secret:NAME}`: the host fills in the secret */
} waio_header_t;

typedef struct waio_http_request {
    const char *method; /* "GET", "POST", ...; NULL means "GET" */
    const char *url;    /* absolute http:// or https:// URL on the operator's allowed_hosts */
    const waio_header_t *headers;
    size_t n_headers;
    const void *body;
    size_t body_len;
    uint32_t timeout_ms; /* 0: the operator's http_timeout */
} waio_http_request_t;

typedef struct waio_http_response {
    uint16_t status; /* any status is an answer, 4xx and 5xx included */
    const waio_header_t *headers;
    size_t n_headers;
    const char *body; /* NUL-terminated */
    size_t body_len;
} waio_http_response_t;

/* Whether an answer with this status is worth retrying: 408, 429 and 5xx (the server is busy or
 * failing; fail the record with waio_fail(..., WAIO_RETRIABLE, ...)). Every other non-2xx status is
 * final. The host applies the same rule (wit/retriable-statuses.txt). */
static inline bool waio_status_is_retriable(uint16_t status) {
    return status == 408 || status == 429 || (status >= 500 && status < 600);
}

typedef enum waio_http_error_kind {
    WAIO_HTTP_DENIED = 0,          /* host not allowed, or a secret not granted */
    WAIO_HTTP_INVALID_REQUEST = 1, /* bad URL, method or header */
    WAIO_HTTP_TIMEOUT = 2,         /* no answer within the request's time limit */
    WAIO_HTTP_CONNECTION = 3,      /* could not connect, or the connection broke */
    WAIO_HTTP_UNAVAILABLE = 4,     /* failed fast, not sent: the endpoint's circuit breaker is
                                      open because the provider keeps failing */
} waio_http_error_kind_t;

typedef struct waio_http_error {
    waio_http_error_kind_t kind;
    const char *message; /* e.g. "request timed out", "connection failed: refused",
                            "unavailable: circuit breaker open for https://api.example.com" */
} waio_http_error_t;

/* Whether a retry may succeed after this error: timeouts, connection failures and unavailable
 * endpoints (the record may succeed later, or through a fallback provider; fail it with
 * WAIO_RETRIABLE). A denied or invalid request gets the same answer every time. */
static inline bool waio_http_error_is_retriable(waio_http_error_kind_t kind) {
    return kind == WAIO_HTTP_TIMEOUT || kind == WAIO_HTTP_CONNECTION ||
           kind == WAIO_HTTP_UNAVAILABLE;
}

/* Receives the answer of `waio_http_send`: exactly one of `resp` and `err` is non-NULL. Both
 * are valid during the call only. */
typedef void (*waio_http_callback_t)(const waio_http_response_t *resp,
                                     const waio_http_error_t *err, void *user_data);

/* Sends `req` (copied) and returns at once. `on_answer(..., user_data)` runs later, in a later
 * call from the host, never inside this one. */
void waio_http_send(const waio_http_request_t *req, waio_http_callback_t on_answer,
                    void *user_data);

/* The value of the first header named `name` (case-insensitive), or NULL. */
const char *waio_http_header(const waio_http_response_t *resp, const char *name);

/* ---- usage and logging ---------------------------------------------------------------------- */

/* Reports the tokens one model call used, on behalf of the record being processed (the one of
 * the current call, or the last `waio_begin`'s). */
void waio_report_usage(const char *model, uint32_t input_tokens, uint32_t output_tokens);

typedef enum waio_log_level {
    WAIO_LOG_TRACE = 0,
    WAIO_LOG_DEBUG = 1,
    WAIO_LOG_INFO = 2,
    WAIO_LOG_WARN = 3,
    WAIO_LOG_ERROR = 4,
} waio_log_level_t;

/* Writes a printf-formatted line to the host's log. */
void waio_log(waio_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif

#endif /* WAIO_H */
