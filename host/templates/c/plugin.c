/* {{name}}: a waio enricher. For each record, looks up `/kv/<id>` and stores the answer in
 * `lookup`. Build with `waio plugin build`, run with `waio run --build pipeline.toml`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "waio.h"
#include "waio_json.h"

static char *base_url;

const char *waio_plugin_open(const char *config_json, size_t len) {
    waio_json_t config = waio_json_parse(config_json, len);
    base_url = waio_json_string(waio_json_get(config, "base_url"), NULL);
    return base_url ? NULL : "config field `base_url` must be a string";
}

/* The answer arrives here; `user_data` is the record's future. */
static void on_answer(const waio_http_response_t *resp, const waio_http_error_t *err, void *user_data) {
    waio_future_t *fut = user_data;
    if (err) {
        waio_fail(fut, waio_http_error_is_retriable(err->kind) ? WAIO_RETRIABLE : WAIO_FATAL,
                  "%s", err->message);
        return;
    }
    if (resp->status != 200) {
        waio_fail(fut, waio_status_is_retriable(resp->status) ? WAIO_RETRIABLE : WAIO_FATAL, "HTTP %u",
                  (unsigned)resp->status);
        return;
    }
    /* The input object without its closing brace, then the lookup field. */
    const waio_record_t *in = waio_future_input(fut);
    waio_json_t record = waio_json_parse(in->payload, in->payload_len);
    const char *end = record.ptr + record.len - 1; /* the closing '}' */
    waio_buf_t out = {0};
    waio_buf_put(&out, record.ptr, (size_t)(end - record.ptr));
    waio_buf_puts(&out, record.len > 2 ? ",\"lookup\":" : "\"lookup\":");
    waio_buf_put(&out, resp->body, resp->body_len);
    waio_buf_puts(&out, "}");
    waio_complete_one(fut, out.data, out.len);
    waio_buf_free(&out);
}

void waio_plugin_invoke(const waio_record_t *in, waio_future_t *fut) {
    waio_json_t record = waio_json_parse(in->payload, in->payload_len);
    char *id = waio_json_string(waio_json_get(record, "id"), NULL);
    if (record.type != WAIO_JSON_OBJECT || !id) {
        free(id);
        waio_fail(fut, WAIO_FATAL, "record is not an object with a string `id`");
        return;
    }
    char url[512];
    snprintf(url, sizeof url, "%s/kv/%s", base_url, id);
    free(id);
    waio_http_request_t req = {.method = "GET", .url = url};
    waio_http_send(&req, on_answer, fut);
}
