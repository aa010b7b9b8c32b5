/*
 * waio conformance plugin in C: each record's JSON payload chooses the behaviour.
 *
 * Config: {"echo_url": "http://127.0.0.1:PORT/echo"}. Record fields: `id`, `mode` (now, later,
 * fail, never, headers), `results`, `delay_ms`, `on_timeout` (fail, fallback), `tokens`, `log`, `message`.
 * See docs/specs/LANGUAGES.md, "CONFORMANCE PROTOCOL". C has no exceptions, so the modes
 * `raise` and `raise_later` do not apply: they fail like any unknown mode.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "waio.h"
#include "waio_json.h"

static char *echo_url; /* NULL when the config has none */
static char open_error[256];

const char *waio_plugin_open(const char *config_json, size_t len) {
    waio_json_t config = waio_json_parse(config_json, len);
    if (config.type != WAIO_JSON_OBJECT) {
        return "config must be a JSON object";
    }
    waio_json_t url = waio_json_get(config, "echo_url");
    if (url.type != WAIO_JSON_NONE && url.type != WAIO_JSON_STRING) {
        snprintf(open_error, sizeof open_error, "config field `echo_url` must be a string");
        return open_error;
    }
    echo_url = waio_json_string(url, NULL);
    return NULL;
}

static int64_t int_field(waio_json_t record, const char *name, int64_t fallback) {
    int64_t value;
    return waio_json_int(waio_json_get(record, name), &value) ? value : fallback;
}

/* Completes `fut` with `results` outputs {"id": id, "n": i}. */
static void complete_now(waio_future_t *fut, waio_json_t record) {
    waio_json_t id = waio_json_get(record, "id");
    int64_t results = int_field(record, "results", 1);
    if (results < 0) {
        results = 0;
    }
    waio_buf_t buf = {0};
    size_t *ends = malloc(sizeof(size_t) * (size_t)(results + 1));
    for (int64_t n = 0; n < results; n++) {
        waio_buf_puts(&buf, "{\"id\":");
        waio_buf_json(&buf, id);
        waio_buf_puts(&buf, ",\"n\":");
        waio_buf_int(&buf, n);
        waio_buf_puts(&buf, "}");
        ends[n] = buf.len;
    }
    /* One buffer for all outputs: slice it only now, after it stopped moving. */
    waio_output_t *outs = malloc(sizeof(waio_output_t) * (size_t)(results + 1));
    size_t start = 0;
    for (int64_t n = 0; n < results; n++) {
        outs[n].data = buf.data + start;
        outs[n].len = ends[n] - start;
        start = ends[n];
    }
    waio_complete(fut, outs, (size_t)results);
    free(outs);
    free(ends);
    waio_buf_free(&buf);
}

/* Completes `fut` with {"id": id, "headers": [[name, value], ...]}: its input's headers. */
static void complete_headers(waio_future_t *fut, waio_json_t record) {
    size_t n = 0;
    const waio_input_header_t *headers = waio_future_headers(fut, &n);
    waio_buf_t buf = {0};
    waio_buf_puts(&buf, "{\"id\":");
    waio_buf_json(&buf, waio_json_get(record, "id"));
    waio_buf_puts(&buf, ",\"headers\":[");
    for (size_t i = 0; i < n; i++) {
        waio_buf_puts(&buf, i ? ",[" : "[");
        waio_buf_str(&buf, headers[i].name, headers[i].name_len);
        waio_buf_puts(&buf, ",");
        waio_buf_str(&buf, headers[i].value, headers[i].value_len);
        waio_buf_puts(&buf, "]");
    }
    waio_buf_puts(&buf, "]}");
    waio_complete_one(fut, buf.data, buf.len);
    waio_buf_free(&buf);
}

static waio_json_t parse_input(const waio_future_t *fut) {
    const waio_record_t *in = waio_future_input(fut);
    return waio_json_parse(in->payload, in->payload_len);
}

static void on_echo(const waio_http_response_t *resp, const waio_http_error_t *err,
                    void *user_data) {
    waio_future_t *fut = user_data;
    if (err) {
        waio_fail(fut, WAIO_RETRIABLE, "%s", err->message);
        return;
    }
    complete_now(fut, parse_input(fut));
}

void waio_plugin_invoke(const waio_record_t *in, waio_future_t *fut) {
    waio_json_t record = waio_json_parse(in->payload, in->payload_len);
    if (record.type != WAIO_JSON_OBJECT) {
        waio_fail(fut, WAIO_FATAL, "payload is not a JSON object");
        return;
    }
    int64_t tokens;
    if (waio_json_int(waio_json_get(record, "tokens"), &tokens)) {
        uint32_t t = tokens < 0 ? 0 : tokens > UINT32_MAX ? UINT32_MAX : (uint32_t)tokens;
        waio_report_usage("conform", t, t);
    }
    char *message = waio_json_string(waio_json_get(record, "log"), NULL);
    if (message) {
        waio_log(WAIO_LOG_INFO, "%s", message);
        free(message);
    }
    waio_json_t mode = waio_json_get(record, "mode");
    if (mode.type == WAIO_JSON_NONE || waio_json_eq(mode, "now")) {
        complete_now(fut, record);
    } else if (waio_json_eq(mode, "later")) {
        if (!echo_url) {
            waio_fail(fut, WAIO_FATAL, "mode needs `echo_url` in the plugin config");
            return;
        }
        char url[1024];
        snprintf(url, sizeof url, "%s?delay_ms=%lld", echo_url,
                 (long long)int_field(record, "delay_ms", 0));
        waio_http_request_t req = {.method = "GET", .url = url};
        waio_http_send(&req, on_echo, fut);
    } else if (waio_json_eq(mode, "fail")) {
        char *message = waio_json_string(waio_json_get(record, "message"), NULL);
        waio_fail(fut, WAIO_FATAL, "%s", message && *message ? message : "failed on purpose");
        free(message);
    } else if (waio_json_eq(mode, "never")) {
        waio_drop(fut);
    } else if (waio_json_eq(mode, "headers")) {
        complete_headers(fut, record);
    } else {
        waio_fail(fut, WAIO_FATAL, "unknown mode %.*s", (int)mode.len, mode.ptr);
    }
}

void waio_plugin_timeout(const waio_record_t *in, waio_future_t *fut) {
    waio_json_t record = waio_json_parse(in->payload, in->payload_len);
    if (waio_json_eq(waio_json_get(record, "on_timeout"), "fallback")) {
        waio_buf_t buf = {0};
        waio_buf_puts(&buf, "{\"id\":");
        waio_buf_json(&buf, waio_json_get(record, "id"));
        waio_buf_puts(&buf, ",\"fallback\":true}");
        waio_complete_one(fut, buf.data, buf.len);
        waio_buf_free(&buf);
        return;
    }
    waio_fail(fut, WAIO_RETRIABLE, "timed out");
}
