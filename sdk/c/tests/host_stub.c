/* See host_stub.h. */
#include "host_stub.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Defined (weak) by the bindings; not in their header. */
void *cabi_realloc(void *ptr, size_t old_size, size_t align, size_t new_size);

static char *trace_buf;
static size_t trace_len, trace_cap;
static char *taken;

void stub_trace(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    va_list copy;
    va_copy(copy, args);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    if (trace_len + (size_t)n + 2 > trace_cap) {
        trace_cap = (trace_len + (size_t)n + 2) * 2;
        trace_buf = realloc(trace_buf, trace_cap);
    }
    vsnprintf(trace_buf + trace_len, (size_t)n + 1, fmt, args);
    va_end(args);
    trace_len += (size_t)n;
    trace_buf[trace_len++] = '\n';
    trace_buf[trace_len] = 0;
}

const char *stub_trace_take(void) {
    free(taken);
    taken = trace_buf ? trace_buf : calloc(1, 1);
    trace_buf = NULL;
    trace_len = trace_cap = 0;
    return taken;
}

bool stub_expect(const char *what, const char *want) {
    const char *got = stub_trace_take();
    if (strcmp(got, want) == 0) {
        return true;
    }
    fprintf(stderr, "%s: trace differs\n--- want\n%s--- got\n%s---\n", what, want, got);
    return false;
}

static void free_taken(void) { free(taken); }

/* ---- the imports ---------------------------------------------------------------------------- */

void __wasm_import_waio_enricher_completion_method_result_future_complete(int32_t self,
                                                                         uint8_t *ptr,
                                                                         size_t len) {
    const waio_enricher_completion_event_t *events = (const void *)ptr;
    char line[512];
    size_t at = (size_t)snprintf(line, sizeof line, "complete %d:", self);
    for (size_t i = 0; i < len && at < sizeof line; i++) {
        const waio_enricher_completion_event_t *e = &events[i];
        at += (size_t)snprintf(line + at, sizeof line - at, " [%.*s|%lld|%.*s]",
                               e->key.is_some ? (int)e->key.val.len : 1,
                               e->key.is_some ? (const char *)e->key.val.ptr : "-",
                               e->timestamp.is_some ? (long long)e->timestamp.val : -1LL,
                               (int)e->payload.len, (const char *)e->payload.ptr);
    }
    stub_trace("%s", line);
}

void __wasm_import_waio_enricher_completion_method_result_future_complete_exceptionally(
    int32_t self, int32_t kind, uint8_t *msg, size_t len) {
    stub_trace("fail %d %s: %.*s", self, kind == 0 ? "retriable" : "fatal", (int)len,
               (const char *)msg);
}

void __wasm_import_waio_enricher_completion_method_result_future_begin(int32_t self) {
    stub_trace("begin %d", self);
}

/* The headers `input-headers` answers with (see stub_set_headers). */
static const char *const *header_names;
static const char *const *header_values;
static size_t header_count;

void stub_set_headers(const char *const *names, const char *const *values, size_t n) {
    header_names = names;
    header_values = values;
    header_count = n;
}

static void string_in(enricher_plugin_string_t *s, const char *text);

void __wasm_import_waio_enricher_completion_method_result_future_input_headers(int32_t self,
                                                                              uint8_t *ret) {
    stub_trace("input-headers %d", self);
    enricher_plugin_tuple2_string_list_u8_t *list =
        cabi_realloc(NULL, 0, sizeof(void *), header_count * sizeof *list);
    for (size_t i = 0; i < header_count; i++) {
        string_in(&list[i].f0, header_names[i]);
        enricher_plugin_string_t value;
        string_in(&value, header_values[i]);
        list[i].f1.ptr = value.ptr;
        list[i].f1.len = value.len;
    }
    /* The return area holds the list's pointer and length, as the canonical ABI writes it. */
    *(enricher_plugin_tuple2_string_list_u8_t **)ret = list;
    *(size_t *)(ret + sizeof(void *)) = header_count;
}

/* The running `invoke-columns` call (see stub_invoke_columns): its size and first handle. */
static bool columns_running;
static size_t columns_len;
static int32_t columns_first_handle;

int32_t __wasm_import_waio_enricher_completion_hold(int32_t index) {
    if (!columns_running || index < 0 || (size_t)index >= columns_len) {
        fprintf(stderr, "hold %d outside an invoke-columns call or its records\n", index);
        abort();
    }
    stub_trace("hold %d", index);
    return columns_first_handle + index;
}

void __wasm_import_waio_enricher_completion_result_future_drop(int32_t self) {
    stub_trace("drop %d", self);
}

static uint64_t next_call_id = 100;

int64_t __wasm_import_waio_enricher_http_send(uint8_t *method, size_t method_len, uint8_t *url,
                                              size_t url_len, uint8_t *headers,
                                              size_t n_headers, uint8_t *body, size_t body_len,
                                              int32_t has_timeout, int32_t timeout) {
    (void)headers;
    (void)n_headers;
    (void)has_timeout;
    (void)timeout;
    uint64_t id = next_call_id++;
    stub_trace("send %llu %.*s %.*s body=%.*s", (unsigned long long)id, (int)method_len,
               (const char *)method, (int)url_len, (const char *)url, (int)body_len,
               body_len ? (const char *)body : "");
    return (int64_t)id;
}

void __wasm_import_waio_enricher_usage_report(uint8_t *model, size_t len, int32_t input_tokens,
                                              int32_t output_tokens) {
    stub_trace("usage %.*s %d %d", (int)len, (const char *)model, input_tokens, output_tokens);
}

void __wasm_import_waio_enricher_logging_log(int32_t level, uint8_t *msg, size_t len) {
    stub_trace("log %d %.*s", level, (int)len, (const char *)msg);
}

/* Defined by gen/enricher_plugin_component_type.o in a wasm build (it carries the WIT world). */
void __component_type_object_force_link_enricher_plugin(void) {}

/* ---- calling the exports as the host does ------------------------------------------------ */

/* The generated export wrapper of invoke-columns and its post-return: on wasm32 they
 * reinterpret the canonical ABI lists as the C arrays, which is what the native calls below hand
 * them, and the return area's layout is written in units of sizeof(void *). */
uint8_t *__wasm_export_exports_waio_enricher_enricher_invoke_columns(
    uint8_t *payloads, size_t payloads_len, uint8_t *ends, size_t ends_len, uint8_t *keys,
    size_t keys_len, uint8_t *timestamps, size_t timestamps_len);
void __wasm_export_exports_waio_enricher_enricher_invoke_columns_post_return(uint8_t *ret);

static void string_in(enricher_plugin_string_t *s, const char *text) {
    s->len = strlen(text);
    s->ptr = cabi_realloc(NULL, 0, 1, s->len);
    if (s->len) {
        memcpy(s->ptr, text, s->len);
    }
}

/* Frees the last taken trace at exit (for LeakSanitizer); called by every input maker. */
static void register_cleanup(void) {
    static bool registered;
    if (!registered) {
        atexit(free_taken);
        registered = true;
    }
}

exports_waio_enricher_enricher_event_t stub_event(const char *key, bool has_ts, int64_t ts,
                                                  const char *payload) {
    register_cleanup();
    exports_waio_enricher_enricher_event_t e;
    memset(&e, 0, sizeof e);
    e.key.is_some = key != NULL;
    if (key) {
        string_in(&e.key.val, key);
    }
    e.timestamp.is_some = has_ts;
    e.timestamp.val = has_ts ? ts : 0;
    enricher_plugin_string_t p;
    string_in(&p, payload);
    e.payload.ptr = p.ptr;
    e.payload.len = p.len;
    return e;
}

/* Traces the result of `invoke-columns` (nothing when it is empty), after checking that its
 * lists fit together as the host does (a misfit aborts):
 *   "completed 0 2" / "output-ends 1 3" / "outputs [key|ts|payload] ..." / "failed 4 fatal: msg"
 * The return area is written in units of sizeof(void *): list k's pointer, then its length. */
static void trace_result(uint8_t *ret) {
    void *ptrs[7];
    size_t lens[7];
    bool any = false;
    for (size_t k = 0; k < 7; k++) {
        ptrs[k] = *(void **)(ret + 2 * k * sizeof(void *));
        lens[k] = *(size_t *)(ret + (2 * k + 1) * sizeof(void *));
        any |= lens[k] != 0;
    }
    if (!any) {
        return;
    }
    const uint32_t *completed = ptrs[0], *output_ends = ptrs[1], *payload_ends = ptrs[3];
    const uint8_t *payloads = ptrs[2];
    const enricher_plugin_option_string_t *keys = ptrs[4];
    const waio_enricher_types_option_timestamp_ms_t *stamps = ptrs[5];
    const waio_enricher_types_tuple2_u32_failure_t *failed = ptrs[6];
    size_t outputs = lens[3];
    if (lens[0] != lens[1] || lens[4] != outputs || lens[5] != outputs ||
        (outputs ? payload_ends[outputs - 1] : 0) != lens[2] ||
        (lens[1] ? output_ends[lens[1] - 1] : 0) != outputs) {
        fprintf(stderr, "invoke-columns returned lists that do not fit together\n");
        abort();
    }
    char line[8192];
    size_t at = (size_t)snprintf(line, sizeof line, "completed");
    for (size_t j = 0; j < lens[0]; j++) {
        if (completed[j] >= columns_len || (j && output_ends[j] < output_ends[j - 1])) {
            fprintf(stderr, "invoke-columns returned a bad completion %zu\n", j);
            abort();
        }
        at += (size_t)snprintf(line + at, sizeof line - at, " %u", completed[j]);
    }
    stub_trace("%s", line);
    at = (size_t)snprintf(line, sizeof line, "output-ends");
    for (size_t j = 0; j < lens[1]; j++) {
        at += (size_t)snprintf(line + at, sizeof line - at, " %u", output_ends[j]);
    }
    stub_trace("%s", line);
    at = (size_t)snprintf(line, sizeof line, "outputs");
    for (size_t j = 0; j < outputs && at < sizeof line; j++) {
        uint32_t start = j ? payload_ends[j - 1] : 0;
        if (payload_ends[j] < start) {
            fprintf(stderr, "invoke-columns returned decreasing payload ends\n");
            abort();
        }
        at += (size_t)snprintf(line + at, sizeof line - at, " [%.*s|%lld|%.*s]",
                               keys[j].is_some ? (int)keys[j].val.len : 1,
                               keys[j].is_some ? (const char *)keys[j].val.ptr : "-",
                               stamps[j].is_some ? (long long)stamps[j].val : -1LL,
                               (int)(payload_ends[j] - start), (const char *)payloads + start);
    }
    stub_trace("%s", line);
    at = (size_t)snprintf(line, sizeof line, "failed");
    for (size_t j = 0; j < lens[6] && at < sizeof line; j++) {
        if (failed[j].f0 >= columns_len) {
            fprintf(stderr, "invoke-columns failed record %u outside the batch\n", failed[j].f0);
            abort();
        }
        at += (size_t)snprintf(line + at, sizeof line - at, " %u %s: %.*s;", failed[j].f0,
                               failed[j].f1.kind == 0 ? "retriable" : "fatal",
                               (int)failed[j].f1.message.len,
                               (const char *)failed[j].f1.message.ptr);
    }
    stub_trace("%s", line);
}

void stub_invoke_columns(const char *const *keys, const int64_t *timestamps,
                         const char *const *payloads, size_t n, int32_t first_handle) {
    register_cleanup();
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        total += strlen(payloads[i]);
    }
    uint8_t *bytes = cabi_realloc(NULL, 0, 1, total);
    uint32_t *ends = cabi_realloc(NULL, 0, _Alignof(uint32_t), n * sizeof *ends);
    enricher_plugin_option_string_t *key_col =
        cabi_realloc(NULL, 0, _Alignof(enricher_plugin_option_string_t), n * sizeof *key_col);
    waio_enricher_types_option_timestamp_ms_t *ts_col = cabi_realloc(
        NULL, 0, _Alignof(waio_enricher_types_option_timestamp_ms_t), n * sizeof *ts_col);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(payloads[i]);
        memcpy(bytes + at, payloads[i], len);
        at += len;
        ends[i] = (uint32_t)at;
        memset(&key_col[i], 0, sizeof key_col[i]);
        key_col[i].is_some = keys != NULL && keys[i] != NULL;
        if (key_col[i].is_some) {
            string_in(&key_col[i].val, keys[i]);
        }
        int64_t ts = timestamps ? timestamps[i] : 1000 + (int64_t)i;
        memset(&ts_col[i], 0, sizeof ts_col[i]);
        ts_col[i].is_some = ts >= 0;
        ts_col[i].val = ts >= 0 ? ts : 0;
    }
    columns_running = true;
    columns_len = n;
    columns_first_handle = first_handle;
    uint8_t *ret = __wasm_export_exports_waio_enricher_enricher_invoke_columns(
        bytes, total, (uint8_t *)ends, n, (uint8_t *)key_col, n, (uint8_t *)ts_col, n);
    columns_running = false;
    trace_result(ret);
    __wasm_export_exports_waio_enricher_enricher_invoke_columns_post_return(ret);
}

void stub_invoke_one(const char *key, const char *payload, int32_t handle) {
    exports_waio_enricher_enricher_event_t e = stub_event(key, false, 0, payload);
    exports_waio_enricher_enricher_async_invoke(
        &e, (exports_waio_enricher_enricher_own_result_future_t){handle});
}

void stub_answer(uint64_t call_id, const char *body) {
    exports_waio_enricher_enricher_result_http_response_http_error_t r;
    memset(&r, 0, sizeof r);
    r.is_err = false;
    r.val.ok.status = 200;
    r.val.ok.headers.ptr = cabi_realloc(NULL, 0, 4, 0);
    r.val.ok.headers.len = 0;
    enricher_plugin_string_t b;
    string_in(&b, body);
    r.val.ok.body.ptr = b.ptr;
    r.val.ok.body.len = b.len;
    exports_waio_enricher_enricher_on_response(call_id, &r);
}
