/*
 * waio C SDK: the WIT exports of world `enricher-plugin`, mapped onto the callbacks in waio.h.
 * The bindings (gen/enricher_plugin.[ch]) come from `wit-bindgen c`; see regenerate.sh.
 *
 * Ownership of the generated types: arguments of exports belong to the callee (allocated with
 * cabi_realloc, so freed with free()); arguments of imports are only borrowed by the host.
 */
#include "waio.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enricher_plugin.h"

struct waio_future {
    /* Valid when `held`: futures of `async-invoke` and `timeout` come with one; a record of an
     * `invoke-columns` call gets one from `completion.hold` only when it needs the host (begin,
     * headers) during the call, or at the end of the call when it is still uncompleted. */
    waio_enricher_completion_own_result_future_t handle;
    bool held;
    uint64_t call;  /* the `invoke-columns` call of the record (see `call_gen`), 0 for none */
    uint32_t index; /* its index in that call's inputs */
    exports_waio_enricher_enricher_event_t event; /* owned: freed with the future */
    waio_record_t record;                         /* a view into `event` */
    /* The input's headers, asked of the host on the first `waio_future_headers` (NULL views
     * until then); owned, freed with the future. */
    enricher_plugin_list_tuple2_string_list_u8_t headers;
    waio_input_header_t *header_views;
    bool headers_asked;
};

/* Allocation failure inside the SDK cannot be reported anywhere sensible: trap. The host
 * replaces the instance and fails the records that were in flight. */
static void *xrealloc(void *ptr, size_t size) {
    void *p = realloc(ptr, size ? size : 1);
    if (p == NULL) {
        __builtin_trap();
    }
    return p;
}

/* Appends a NUL to a string the host handed over (it has exactly `len` bytes). An empty one
 * points at no allocation (cabi_realloc hands out a dummy pointer for size 0), so it gets a
 * static "" instead; the generated free functions skip empty lists. */
static char *nul_terminate(uint8_t **ptr, size_t len) {
    if (len == 0) {
        *ptr = (uint8_t *)"";
        return (char *)*ptr;
    }
    *ptr = xrealloc(*ptr, len + 1);
    (*ptr)[len] = 0;
    return (char *)*ptr;
}

static void cm_string(enricher_plugin_string_t *s, const char *text) {
    s->ptr = (uint8_t *)(text ? text : "");
    s->len = text ? strlen(text) : 0;
}

/* ---- the running invoke-columns call ---------------------------------------------------- */

/* A record of the running call completes or fails into the call's result (no host call); one
 * that needs the host during the call is held first (`completion.hold`), and every record still
 * open at the end of the call is held then, so that it can complete through its handle later. */
static uint64_t call_gen;            /* counts the calls; the running one, when `call_running` */
static bool call_running;
static waio_future_t **call_slots;   /* record i's future while the plugin owns it, else NULL */
static waio_future_t *call_current;  /* the record whose per-record code runs now, or NULL */
static int64_t call_begun;           /* the record last told of with `begin` in this call, or -1 */
static exports_waio_enricher_enricher_batch_completions_t call_result;
static size_t cap_completed, cap_output_ends, cap_payloads, cap_payload_ends, cap_keys,
    cap_timestamps, cap_failed;

/* Makes room for one more element (`extra` more for bytes) in a result list. */
#define GROW(list, cap, extra)                                                                 \
    do {                                                                                       \
        if ((list).len + (extra) > (cap)) {                                                    \
            size_t want_ = (cap) ? (cap) * 2 : 16;                                             \
            while (want_ < (list).len + (extra)) {                                             \
                want_ *= 2;                                                                    \
            }                                                                                  \
            (list).ptr = xrealloc((list).ptr, want_ * sizeof *(list).ptr);                     \
            (cap) = want_;                                                                     \
        }                                                                                      \
    } while (0)

static bool in_its_call(const waio_future_t *fut) {
    return call_running && fut->call == call_gen;
}

/* The record's handle, taken with `hold` the first time it needs one in its call. */
static void ensure_held(waio_future_t *fut) {
    if (!fut->held) {
        if (!in_its_call(fut)) {
            /* Never happens: every open record of a call is held at its end. */
            __builtin_trap();
        }
        fut->handle = waio_enricher_completion_hold(fut->index);
        fut->held = true;
    }
}

/* ---- futures ---------------------------------------------------------------------------- */

static waio_future_t *future_new(exports_waio_enricher_enricher_event_t *input,
                                 exports_waio_enricher_enricher_own_result_future_t handle) {
    waio_future_t *fut = xrealloc(NULL, sizeof *fut);
    fut->handle = handle;
    fut->held = true;
    fut->call = 0;
    fut->index = 0;
    fut->event = *input;
    fut->headers.ptr = NULL;
    fut->headers.len = 0;
    fut->header_views = NULL;
    fut->headers_asked = false;
    waio_record_t *r = &fut->record;
    if (fut->event.key.is_some) {
        r->key = nul_terminate(&fut->event.key.val.ptr, fut->event.key.val.len);
        r->key_len = fut->event.key.val.len;
    } else {
        r->key = NULL;
        r->key_len = 0;
    }
    r->has_timestamp = fut->event.timestamp.is_some;
    r->timestamp = fut->event.timestamp.is_some ? fut->event.timestamp.val : 0;
    r->payload = nul_terminate(&fut->event.payload.ptr, fut->event.payload.len);
    r->payload_len = fut->event.payload.len;
    return fut;
}

static void future_free(waio_future_t *fut) {
    if (in_its_call(fut)) {
        call_slots[fut->index] = NULL;
        if (call_current == fut) {
            call_current = NULL;
        }
    }
    if (fut->held) {
        waio_enricher_completion_result_future_drop_own(fut->handle);
    }
    exports_waio_enricher_enricher_event_free(&fut->event);
    if (fut->headers_asked) {
        enricher_plugin_list_tuple2_string_list_u8_free(&fut->headers);
        free(fut->header_views);
    }
    free(fut);
}

static waio_enricher_completion_borrow_result_future_t borrow(waio_future_t *fut) {
    ensure_held(fut);
    return waio_enricher_completion_borrow_result_future(fut->handle);
}

const waio_record_t *waio_future_input(const waio_future_t *fut) { return &fut->record; }

const waio_input_header_t *waio_future_headers(waio_future_t *fut, size_t *n) {
    if (!fut->headers_asked) {
        fut->headers_asked = true;
        waio_enricher_completion_method_result_future_input_headers(borrow(fut), &fut->headers);
        size_t count = fut->headers.len;
        fut->header_views = count ? xrealloc(NULL, count * sizeof *fut->header_views) : NULL;
        for (size_t i = 0; i < count; i++) {
            enricher_plugin_tuple2_string_list_u8_t *h = &fut->headers.ptr[i];
            waio_input_header_t *view = &fut->header_views[i];
            view->name_len = h->f0.len;
            view->name = nul_terminate(&h->f0.ptr, h->f0.len);
            view->value_len = h->f1.len;
            view->value = nul_terminate(&h->f1.ptr, h->f1.len);
        }
    }
    if (n != NULL) {
        *n = fut->headers.len;
    }
    return fut->header_views;
}

/* Appends record `fut`'s outputs to the running call's result. */
static void complete_in_call(waio_future_t *fut, const waio_output_t *outputs, size_t n) {
    exports_waio_enricher_enricher_batch_completions_t *r = &call_result;
    exports_waio_enricher_enricher_event_columns_t *o = &r->outputs;
    GROW(r->completed, cap_completed, 1);
    r->completed.ptr[r->completed.len++] = fut->index;
    GROW(o->payload_ends, cap_payload_ends, n);
    GROW(o->keys, cap_keys, n);
    GROW(o->timestamps, cap_timestamps, n);
    for (size_t i = 0; i < n; i++) {
        if (outputs[i].len != 0) {
            GROW(o->payloads, cap_payloads, outputs[i].len);
            memcpy(o->payloads.ptr + o->payloads.len, outputs[i].data, outputs[i].len);
            o->payloads.len += outputs[i].len;
        }
        o->payload_ends.ptr[o->payload_ends.len++] = (uint32_t)o->payloads.len;
        enricher_plugin_option_string_t *key = &o->keys.ptr[o->keys.len++];
        key->is_some = fut->event.key.is_some;
        key->val.ptr = NULL;
        key->val.len = 0;
        if (key->is_some && fut->event.key.val.len != 0) {
            /* Its own allocation: the post-return function frees each key. */
            key->val.len = fut->event.key.val.len;
            key->val.ptr = xrealloc(NULL, key->val.len);
            memcpy(key->val.ptr, fut->event.key.val.ptr, key->val.len);
        }
        o->timestamps.ptr[o->timestamps.len++] = fut->event.timestamp;
    }
    GROW(r->output_ends, cap_output_ends, 1);
    r->output_ends.ptr[r->output_ends.len++] = (uint32_t)o->keys.len;
}

void waio_complete(waio_future_t *fut, const waio_output_t *outputs, size_t n) {
    if (!fut->held && in_its_call(fut)) {
        complete_in_call(fut, outputs, n);
        future_free(fut);
        return;
    }
    waio_enricher_completion_event_t stack[4];
    waio_enricher_completion_event_t *events =
        n <= 4 ? stack : xrealloc(NULL, n * sizeof *events);
    for (size_t i = 0; i < n; i++) {
        /* Borrowed views: the host copies what it needs during the call. */
        events[i].key = fut->event.key;
        events[i].timestamp = fut->event.timestamp;
        events[i].payload.ptr = (uint8_t *)outputs[i].data;
        events[i].payload.len = outputs[i].len;
    }
    waio_enricher_completion_list_event_t list = {.ptr = events, .len = n};
    waio_enricher_completion_method_result_future_complete(borrow(fut), &list);
    if (events != stack) {
        free(events);
    }
    future_free(fut);
}

void waio_complete_one(waio_future_t *fut, const char *data, size_t len) {
    waio_output_t out = {.data = data, .len = len};
    waio_complete(fut, &out, 1);
}

void waio_complete_none(waio_future_t *fut) { waio_complete(fut, NULL, 0); }

/* printf into a malloc'd string. */
static char *vformat(const char *fmt, va_list args) {
    va_list copy;
    va_copy(copy, args);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    if (n < 0) {
        n = 0;
    }
    char *s = xrealloc(NULL, (size_t)n + 1);
    vsnprintf(s, (size_t)n + 1, fmt, args);
    return s;
}

static void fail_message(waio_future_t *fut, waio_failure_kind_t kind, const char *message) {
    waio_enricher_completion_failure_t failure;
    failure.kind = kind == WAIO_RETRIABLE ? WAIO_ENRICHER_TYPES_FAILURE_KIND_RETRIABLE
                                          : WAIO_ENRICHER_TYPES_FAILURE_KIND_FATAL;
    if (!fut->held && in_its_call(fut)) {
        /* Into the result; the post-return function frees the message. */
        GROW(call_result.failed, cap_failed, 1);
        waio_enricher_types_tuple2_u32_failure_t *f =
            &call_result.failed.ptr[call_result.failed.len++];
        f->f0 = fut->index;
        f->f1.kind = failure.kind;
        f->f1.message.len = strlen(message);
        f->f1.message.ptr = NULL;
        if (f->f1.message.len != 0) {
            f->f1.message.ptr = xrealloc(NULL, f->f1.message.len);
            memcpy(f->f1.message.ptr, message, f->f1.message.len);
        }
        future_free(fut);
        return;
    }
    cm_string(&failure.message, message);
    waio_enricher_completion_method_result_future_complete_exceptionally(borrow(fut), &failure);
    future_free(fut);
}

void waio_fail(waio_future_t *fut, waio_failure_kind_t kind, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    char *message = vformat(fmt, args);
    va_end(args);
    fail_message(fut, kind, message);
    free(message);
}

void waio_drop(waio_future_t *fut) { future_free(fut); }

void waio_begin(waio_future_t *fut) {
    waio_enricher_completion_method_result_future_begin(borrow(fut));
    if (in_its_call(fut)) {
        call_begun = fut->index;
    }
}

/* Inside a call, before a request or usage on behalf of the record whose per-record code runs:
 * tells the host of that record (holding it), once, and only for records that need it, so that a
 * record completed at once costs no host call. */
static void begin_current(void) {
    if (call_running && call_current != NULL && call_begun != (int64_t)call_current->index) {
        waio_begin(call_current);
    }
}

/* Runs the per-record code on `fut`, with `fut` as the current record of its call. */
static void invoke_one(waio_future_t *fut) {
    if (in_its_call(fut)) {
        waio_future_t *previous = call_current;
        call_current = fut;
        waio_plugin_invoke(&fut->record, fut);
        call_current = previous;
    } else {
        /* Outside its call (say in the answer callback of a request sent for many records) the
         * host knows the record only from `begin`. */
        waio_begin(fut);
        waio_plugin_invoke(&fut->record, fut);
    }
}

void waio_invoke_each(waio_future_t *const *futs, size_t n) {
    for (size_t i = 0; i < n; i++) {
        invoke_one(futs[i]);
    }
}

/* ---- usage and logging ---------------------------------------------------------------------- */

void waio_report_usage(const char *model, uint32_t input_tokens, uint32_t output_tokens) {
    begin_current();
    waio_enricher_usage_token_usage_t usage;
    cm_string(&usage.model, model);
    usage.input_tokens = input_tokens;
    usage.output_tokens = output_tokens;
    waio_enricher_usage_report(&usage);
}

void waio_log(waio_log_level_t level, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    char *message = vformat(fmt, args);
    va_end(args);
    enricher_plugin_string_t s;
    cm_string(&s, message);
    waio_enricher_logging_log((waio_enricher_logging_log_level_t)level, &s);
    free(message);
}

/* ---- HTTP: call-id -> (callback, user_data) ------------------------------------------------ */

/* Open addressing with linear probing; deletion shifts entries back, so no tombstones. */
typedef struct pending {
    uint64_t id;
    waio_http_callback_t callback; /* NULL: free slot */
    void *user_data;
} pending_t;

static pending_t *pending_slots;
static size_t pending_cap; /* a power of two, or 0 */
static size_t pending_len;

static size_t slot_of(uint64_t id) {
    /* Fibonacci hashing spreads sequential ids. */
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 32) & (pending_cap - 1);
}

static void pending_put(uint64_t id, waio_http_callback_t callback, void *user_data);

static void pending_grow(void) {
    pending_t *old = pending_slots;
    size_t old_cap = pending_cap;
    pending_cap = old_cap ? old_cap * 2 : 64;
    pending_slots = xrealloc(NULL, pending_cap * sizeof *pending_slots);
    memset(pending_slots, 0, pending_cap * sizeof *pending_slots);
    pending_len = 0;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].callback) {
            pending_put(old[i].id, old[i].callback, old[i].user_data);
        }
    }
    free(old);
}

static void pending_put(uint64_t id, waio_http_callback_t callback, void *user_data) {
    if ((pending_len + 1) * 4 > pending_cap * 3) {
        pending_grow();
    }
    size_t i = slot_of(id);
    while (pending_slots[i].callback && pending_slots[i].id != id) {
        i = (i + 1) & (pending_cap - 1);
    }
    if (!pending_slots[i].callback) {
        pending_len++;
    }
    pending_slots[i] = (pending_t){.id = id, .callback = callback, .user_data = user_data};
}

/* Removes `id` and returns its entry; `callback` is NULL when it was not there. */
static pending_t pending_take(uint64_t id) {
    pending_t found = {0};
    if (pending_cap == 0) {
        return found;
    }
    size_t i = slot_of(id);
    while (pending_slots[i].callback && pending_slots[i].id != id) {
        i = (i + 1) & (pending_cap - 1);
    }
    if (!pending_slots[i].callback) {
        return found;
    }
    found = pending_slots[i];
    pending_slots[i].callback = NULL;
    pending_len--;
    /* Shift back the entries of the probe run that follows the hole. */
    size_t hole = i;
    for (size_t j = (i + 1) & (pending_cap - 1); pending_slots[j].callback;
         j = (j + 1) & (pending_cap - 1)) {
        size_t home = slot_of(pending_slots[j].id);
        /* Move j into the hole unless its home lies cyclically in (hole, j]. */
        bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
        if (!stays) {
            pending_slots[hole] = pending_slots[j];
            pending_slots[j].callback = NULL;
            hole = j;
        }
    }
    return found;
}

void waio_http_send(const waio_http_request_t *req, waio_http_callback_t on_answer,
                    void *user_data) {
    begin_current();
    waio_enricher_http_http_request_t r;
    cm_string(&r.method, req->method ? req->method : "GET");
    cm_string(&r.url, req->url);
    enricher_plugin_tuple2_string_string_t stack[8];
    enricher_plugin_tuple2_string_string_t *headers =
        req->n_headers <= 8 ? stack : xrealloc(NULL, req->n_headers * sizeof *headers);
    for (size_t i = 0; i < req->n_headers; i++) {
        cm_string(&headers[i].f0, req->headers[i].name);
        cm_string(&headers[i].f1, req->headers[i].value);
    }
    r.headers.ptr = headers;
    r.headers.len = req->n_headers;
    r.body.ptr = (uint8_t *)req->body;
    r.body.len = req->body ? req->body_len : 0;
    r.timeout_ms.is_some = req->timeout_ms != 0;
    r.timeout_ms.val = req->timeout_ms;
    uint64_t id = waio_enricher_http_send(&r);
    if (headers != stack) {
        free(headers);
    }
    pending_put(id, on_answer, user_data);
}

const char *waio_http_header(const waio_http_response_t *resp, const char *name) {
    for (size_t i = 0; i < resp->n_headers; i++) {
        const char *a = resp->headers[i].name;
        const char *b = name;
        while (*a && *b) {
            char ca = *a >= 'A' && *a <= 'Z' ? (char)(*a + 32) : *a;
            char cb = *b >= 'A' && *b <= 'Z' ? (char)(*b + 32) : *b;
            if (ca != cb) {
                break;
            }
            a++;
            b++;
        }
        if (*a == 0 && *b == 0) {
            return resp->headers[i].value;
        }
    }
    return NULL;
}

/* ---- exports ------------------------------------------------------------------------------ */

/* Defaults for the optional callbacks; a plugin's own definitions replace them at link time. */
__attribute__((weak)) const char *waio_plugin_open(const char *config_json, size_t len) {
    (void)config_json;
    (void)len;
    return NULL;
}

__attribute__((weak)) void waio_plugin_timeout(const waio_record_t *in, waio_future_t *fut) {
    (void)in;
    waio_fail(fut, WAIO_RETRIABLE, "timed out");
}

__attribute__((weak)) void waio_plugin_close(void) {}

bool exports_waio_enricher_enricher_open(enricher_plugin_string_t *config,
                                         enricher_plugin_string_t *err) {
    char *text = nul_terminate(&config->ptr, config->len);
    const char *message = waio_plugin_open(text, config->len);
    if (message != NULL) {
        /* Freed by the generated post-return function, hence a malloc'd copy. */
        enricher_plugin_string_dup(err, *message ? message : "open failed");
    }
    enricher_plugin_string_free(config);
    return message == NULL;
}

void exports_waio_enricher_enricher_async_invoke(
    exports_waio_enricher_enricher_event_t *input,
    exports_waio_enricher_enricher_own_result_future_t output) {
    waio_future_t *fut = future_new(input, output);
    waio_plugin_invoke(&fut->record, fut);
}

/* The plugin's own batch handler, or NULL when it defines none: a weak reference (not a weak
 * default definition), so that the default path below needs no array of futures. wasm-ld, like
 * native linkers, resolves an undefined weak function to a null address. */
extern void waio_plugin_invoke_batch(waio_future_t *const *futs, size_t n) __attribute__((weak));

/* Frees one list the host handed over; an empty one points at no allocation (cabi_realloc hands
 * out a dummy pointer for size 0). */
static void free_list(void *ptr, size_t len) {
    if (len != 0) {
        free(ptr);
    }
}

/* Record `i` of `cols` as an owned event, as `async-invoke` gets it: the key moves out of the
 * keys column (its string is its own allocation), the payload is copied out of the shared
 * buffer so that the future can own and free it alone. */
static exports_waio_enricher_enricher_event_t column_event(
    exports_waio_enricher_enricher_event_columns_t *cols, size_t i) {
    exports_waio_enricher_enricher_event_t e;
    e.key = cols->keys.ptr[i];
    e.timestamp = cols->timestamps.ptr[i];
    uint32_t start = i == 0 ? 0 : cols->payload_ends.ptr[i - 1];
    uint32_t end = cols->payload_ends.ptr[i];
    e.payload.len = end - start;
    e.payload.ptr = NULL;
    if (e.payload.len != 0) {
        e.payload.ptr = xrealloc(NULL, e.payload.len + 1);
        memcpy(e.payload.ptr, cols->payloads.ptr + start, e.payload.len);
    }
    return e;
}

/* Record `i` of the running call: its event and a future that knows only its call and index. */
static waio_future_t *call_future(exports_waio_enricher_enricher_event_columns_t *cols,
                                  size_t i) {
    exports_waio_enricher_enricher_event_t e = column_event(cols, i);
    waio_future_t *fut = future_new(&e, (waio_enricher_completion_own_result_future_t){0});
    fut->held = false;
    fut->call = call_gen;
    fut->index = (uint32_t)i;
    return fut;
}

/* A batch as columns: each record becomes an event with a future that knows only its call and
 * index, then the batch runs as 0.4.0's `async-invoke-batch` did (the plugin's batch handler,
 * else the single-record path per record). Records completed or failed during the call go into
 * `ret` (the generated post-return function frees its lists, keys and messages); those the plugin
 * still owns at the end are held then, to complete through their handles later. The columns'
 * lists belong to us: the keys' strings move into the events, everything else is freed here. */
void exports_waio_enricher_enricher_invoke_columns(
    exports_waio_enricher_enricher_event_columns_t *inputs,
    exports_waio_enricher_enricher_batch_completions_t *ret) {
    size_t n = inputs->payload_ends.len;
    /* Columns that do not fit together are a host bug: trap rather than read out of bounds. */
    if (inputs->keys.len != n || inputs->timestamps.len != n) {
        __builtin_trap();
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t start = i == 0 ? 0 : inputs->payload_ends.ptr[i - 1];
        uint32_t end = inputs->payload_ends.ptr[i];
        if (end < start || end > inputs->payloads.len) {
            __builtin_trap();
        }
    }
    memset(&call_result, 0, sizeof call_result);
    cap_completed = cap_output_ends = cap_payloads = cap_payload_ends = cap_keys =
        cap_timestamps = cap_failed = 0;
    waio_future_t *stack[64];
    waio_future_t **futs = n <= 64 ? stack : xrealloc(NULL, n * sizeof *futs);
    call_gen++;
    call_running = true;
    call_slots = futs;
    call_current = NULL;
    call_begun = -1;
    if (n != 0 && waio_plugin_invoke_batch == NULL) {
        /* waio_invoke_each, one record at a time. */
        for (size_t i = 0; i < n; i++) {
            futs[i] = NULL;
        }
        for (size_t i = 0; i < n; i++) {
            futs[i] = call_future(inputs, i);
            invoke_one(futs[i]);
        }
    } else if (n != 0) {
        /* The plugin gets its own copy of the array: `futs` is cleared as records complete. */
        waio_future_t *stack2[64];
        waio_future_t **given = n <= 64 ? stack2 : xrealloc(NULL, n * sizeof *given);
        for (size_t i = 0; i < n; i++) {
            futs[i] = given[i] = call_future(inputs, i);
        }
        waio_plugin_invoke_batch(given, n);
        if (given != stack2) {
            free(given);
        }
    }
    /* The records the plugin still owns may complete later: give each its handle now. */
    for (size_t i = 0; i < n; i++) {
        if (futs[i] != NULL) {
            ensure_held(futs[i]);
        }
    }
    call_running = false;
    call_slots = NULL;
    call_current = NULL;
    if (futs != stack) {
        free(futs);
    }
    *ret = call_result;
    memset(&call_result, 0, sizeof call_result);
    free_list(inputs->payloads.ptr, inputs->payloads.len);
    free_list(inputs->payload_ends.ptr, inputs->payload_ends.len);
    free_list(inputs->keys.ptr, inputs->keys.len);
    free_list(inputs->timestamps.ptr, inputs->timestamps.len);
}

void exports_waio_enricher_enricher_timeout(
    exports_waio_enricher_enricher_event_t *input,
    exports_waio_enricher_enricher_own_result_future_t output) {
    waio_future_t *fut = future_new(input, output);
    waio_plugin_timeout(&fut->record, fut);
}

static void http_error_text(const exports_waio_enricher_enricher_http_error_t *e,
                            waio_http_error_t *out, char **owned) {
    const char *prefix = "";
    const enricher_plugin_string_t *detail = NULL;
    switch (e->tag) {
    case WAIO_ENRICHER_TYPES_HTTP_ERROR_DENIED:
        out->kind = WAIO_HTTP_DENIED;
        prefix = "request denied: ";
        detail = &e->val.denied;
        break;
    case WAIO_ENRICHER_TYPES_HTTP_ERROR_INVALID_REQUEST:
        out->kind = WAIO_HTTP_INVALID_REQUEST;
        prefix = "invalid request: ";
        detail = &e->val.invalid_request;
        break;
    case WAIO_ENRICHER_TYPES_HTTP_ERROR_TIMEOUT:
        out->kind = WAIO_HTTP_TIMEOUT;
        prefix = "request timed out";
        break;
    case WAIO_ENRICHER_TYPES_HTTP_ERROR_UNAVAILABLE:
        out->kind = WAIO_HTTP_UNAVAILABLE;
        prefix = "unavailable: ";
        detail = &e->val.unavailable;
        break;
    default:
        out->kind = WAIO_HTTP_CONNECTION;
        prefix = "connection failed: ";
        detail = &e->val.connection;
        break;
    }
    size_t plen = strlen(prefix);
    size_t dlen = detail ? detail->len : 0;
    char *text = xrealloc(NULL, plen + dlen + 1);
    memcpy(text, prefix, plen);
    if (dlen) {
        memcpy(text + plen, detail->ptr, dlen);
    }
    text[plen + dlen] = 0;
    out->message = text;
    *owned = text;
}

void exports_waio_enricher_enricher_on_response(
    exports_waio_enricher_enricher_call_id_t id,
    exports_waio_enricher_enricher_result_http_response_http_error_t *response) {
    pending_t entry = pending_take(id);
    if (!entry.callback) {
        waio_log(WAIO_LOG_WARN, "waio: answer for unknown call id %llu ignored",
                 (unsigned long long)id);
    } else if (!response->is_err) {
        exports_waio_enricher_enricher_http_response_t *r = &response->val.ok;
        waio_header_t stack[16];
        size_t n = r->headers.len;
        waio_header_t *headers = n <= 16 ? stack : xrealloc(NULL, n * sizeof *headers);
        for (size_t i = 0; i < n; i++) {
            enricher_plugin_tuple2_string_string_t *h = &r->headers.ptr[i];
            headers[i].name = nul_terminate(&h->f0.ptr, h->f0.len);
            headers[i].value = nul_terminate(&h->f1.ptr, h->f1.len);
        }
        waio_http_response_t resp = {
            .status = r->status,
            .headers = headers,
            .n_headers = n,
            .body = nul_terminate(&r->body.ptr, r->body.len),
            .body_len = r->body.len,
        };
        entry.callback(&resp, NULL, entry.user_data);
        if (headers != stack) {
            free(headers);
        }
    } else {
        waio_http_error_t err;
        char *owned = NULL;
        http_error_text(&response->val.err, &err, &owned);
        entry.callback(NULL, &err, entry.user_data);
        free(owned);
    }
    exports_waio_enricher_enricher_result_http_response_http_error_free(response);
}

void exports_waio_enricher_enricher_close(void) { waio_plugin_close(); }
