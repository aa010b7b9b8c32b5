/*
 * Classifies support tickets with an OpenAI-compatible chat model.
 *
 * Each record is a ticket ({"id", "text", ...}); the answer (one of the labels) goes into
 * `label`. Config: `base_url` (e.g. "http://127.0.0.1:18084/v1"), `model`. The API key never
 * enters the plugin: the header names the secret `openai` and the host fills it in.
 * Failures: no answer in time, connection trouble, HTTP 429 and 5xx are retriable; everything
 * else (a bad ticket, another HTTP error, an answer without text) is fatal.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "waio.h"
#include "waio_json.h"

static const char SYSTEM_PROMPT[] =
    "You triage customer support tickets. Answer with exactly one label and nothing else.\n"
    "urgent: outage, data loss or a security problem. billing: charges, invoices, refunds, "
    "plans.\n"
    "bug: something works incorrectly. other: everything else.\n"
    "Labels: urgent, billing, bug, other";

static char *url;   /* {base_url}/chat/completions */
static char *model;
static char open_error[128];

const char *waio_plugin_open(const char *config_json, size_t len) {
    waio_json_t config = waio_json_parse(config_json, len);
    char *base_url = waio_json_string(waio_json_get(config, "base_url"), NULL);
    model = waio_json_string(waio_json_get(config, "model"), NULL);
    if (!base_url || !model) {
        snprintf(open_error, sizeof open_error, "config field `%s` must be a string",
                 base_url ? "model" : "base_url");
        free(base_url);
        return open_error;
    }
    size_t n = strlen(base_url);
    while (n > 0 && base_url[n - 1] == '/') {
        n--;
    }
    waio_buf_t b = {0};
    waio_buf_put(&b, base_url, n);
    waio_buf_puts(&b, "/chat/completions");
    url = b.data;
    free(base_url);
    return NULL;
}

static void on_answer(const waio_http_response_t *resp, const waio_http_error_t *err,
                      void *user_data) {
    waio_future_t *fut = user_data;
    if (err) {
        bool passing = waio_http_error_is_retriable(err->kind);
        waio_fail(fut, passing ? WAIO_RETRIABLE : WAIO_FATAL, "%s", err->message);
        return;
    }
    if (resp->status < 200 || resp->status > 299) {
        bool passing = waio_status_is_retriable(resp->status);
        waio_fail(fut, passing ? WAIO_RETRIABLE : WAIO_FATAL, "HTTP %u from %s: %.200s",
                  resp->status, url, resp->body);
        return;
    }
    waio_json_t answer = waio_json_parse(resp->body, resp->body_len);
    waio_json_t usage = waio_json_get(answer, "usage");
    int64_t input_tokens = 0, output_tokens = 0;
    waio_json_int(waio_json_get(usage, "prompt_tokens"), &input_tokens);
    waio_json_int(waio_json_get(usage, "completion_tokens"), &output_tokens);
    if (usage.type == WAIO_JSON_OBJECT) {
        waio_report_usage(model, (uint32_t)input_tokens, (uint32_t)output_tokens);
    }

    waio_json_t message = waio_json_get(waio_json_at(waio_json_get(answer, "choices"), 0), "message");
    size_t label_len;
    char *label = waio_json_string(waio_json_get(message, "content"), &label_len);
    if (!label) {
        waio_fail(fut, WAIO_FATAL, "answer has no text at choices[0].message.content");
        return;
    }
    const char *start = label;
    while (*start == ' ' || *start == '\n' || *start == '\t' || *start == '\r') {
        start++, label_len--;
    }
    while (label_len > 0 && strchr(" \n\t\r", start[label_len - 1])) {
        label_len--;
    }

    /* The ticket with `label` set: every other member copied as it is. */
    const waio_record_t *in = waio_future_input(fut);
    waio_json_t ticket = waio_json_parse(in->payload, in->payload_len);
    waio_json_t key, value;
    size_t pos = 0;
    waio_buf_t out = {0};
    waio_buf_puts(&out, "{");
    while (waio_json_next(ticket, &pos, &key, &value)) {
        if (waio_json_eq(key, "label")) {
            continue;
        }
        waio_buf_json(&out, key);
        waio_buf_puts(&out, ":");
        waio_buf_json(&out, value);
        waio_buf_puts(&out, ",");
    }
    waio_buf_puts(&out, "\"label\":");
    waio_buf_str(&out, start, label_len);
    waio_buf_puts(&out, "}");
    waio_complete_one(fut, out.data, out.len);
    waio_buf_free(&out);
    free(label);
}

void waio_plugin_invoke(const waio_record_t *in, waio_future_t *fut) {
    waio_json_t ticket = waio_json_parse(in->payload, in->payload_len);
    waio_json_t text = waio_json_get(ticket, "text");
    if (text.type != WAIO_JSON_STRING) {
        waio_fail(fut, WAIO_FATAL, "ticket has no string field `text`");
        return;
    }
    waio_buf_t body = {0};
    waio_buf_puts(&body, "{\"model\":");
    waio_buf_str(&body, model, strlen(model));
    waio_buf_puts(&body, ",\"temperature\":0.0,\"max_tokens\":3,\"messages\":["
                         "{\"role\":\"system\",\"content\":");
    waio_buf_str(&body, SYSTEM_PROMPT, sizeof SYSTEM_PROMPT - 1);
    waio_buf_puts(&body, "},{\"role\":\"user\",\"content\":");
    waio_buf_json(&body, text); /* already a valid JSON string: copied as it is */
    waio_buf_puts(&body, "}]}");

    waio_header_t headers[] = {
        {"content-type", "application/json"},
        {"authorization", "Bearer ${secret:openai}"},
    };
    waio_http_request_t req = {
        .method = "POST",
        .url = url,
        .headers = headers,
        .n_headers = 2,
        .body = body.data,
        .body_len = body.len,
    };
    waio_http_send(&req, on_answer, fut);
    waio_buf_free(&body);
}
