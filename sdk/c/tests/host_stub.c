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

/* The generated export wrapper of async-invoke-batch: on wasm32 it reinterprets the canonical
 * ABI list as the C tuple array, which is what the native call below hands it. */
void __wasm_export_exports_waio_enricher_enricher_async_invoke_batch(uint8_t *arg, size_t len);

static void string_in(enricher_plugin_string_t *s, const char *text) {
    s->len = strlen(text);
    s->ptr = cabi_realloc(NULL, 0, 1, s->len);
    if (s->len) {
        memcpy(s->ptr, text, s->len);
    }
}

exports_waio_enricher_enricher_event_t stub_event(const char *key, bool has_ts, int64_t ts,
                                                  const char *payload) {
    static bool registered;
    if (!registered) {
        atexit(free_taken);
        registered = true;
    }
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

void stub_invoke_batch(const char *const *keys, const char *const *payloads, size_t n,
                       int32_t first_handle) {
    exports_waio_enricher_enricher_tuple2_event_own_result_future_t *items =
        cabi_realloc(NULL, 0, _Alignof(exports_waio_enricher_enricher_tuple2_event_own_result_future_t),
                     n * sizeof *items);
    for (size_t i = 0; i < n; i++) {
        items[i].f0 = stub_event(keys ? keys[i] : NULL, true, 1000 + (int64_t)i, payloads[i]);
        items[i].f1.__handle = first_handle + (int32_t)i;
    }
    __wasm_export_exports_waio_enricher_enricher_async_invoke_batch((uint8_t *)items, n);
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
