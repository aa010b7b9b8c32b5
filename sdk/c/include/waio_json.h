/*
 * A tiny JSON helper for waio C plugins: read fields of a JSON document without building a tree,
 * and write small JSON documents into a growable buffer. Not a full JSON library: numbers are
 * read as 64-bit integers or doubles, and no value is ever copied until you ask for it.
 *
 *     waio_json_t doc = waio_json_parse(in->payload, in->payload_len);
 *     waio_json_t mode = waio_json_get(doc, "mode");        // WAIO_JSON_NONE when missing
 *     if (waio_json_eq(mode, "later")) ...
 *     int64_t n = 1; waio_json_int(waio_json_get(doc, "results"), &n);
 *     char *text = waio_json_string(waio_json_get(doc, "text"));   // malloc'd, or NULL
 *
 *     waio_buf_t out = {0};
 *     waio_buf_puts(&out, "{\"id\":");
 *     waio_buf_json(&out, waio_json_get(doc, "id"));        // copies the raw JSON value
 *     waio_buf_puts(&out, ",\"label\":");
 *     waio_buf_str(&out, text, strlen(text));               // a quoted, escaped string
 *     waio_buf_puts(&out, "}");
 *     waio_complete_one(fut, out.data, out.len);
 *     waio_buf_free(&out);
 */
#ifndef WAIO_JSON_H
#define WAIO_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum waio_json_type {
    WAIO_JSON_NONE = 0, /* missing, or not valid JSON */
    WAIO_JSON_NULL,
    WAIO_JSON_BOOL,
    WAIO_JSON_NUMBER,
    WAIO_JSON_STRING,
    WAIO_JSON_ARRAY,
    WAIO_JSON_OBJECT,
} waio_json_type_t;

/* A JSON value: its type and its raw text (a view into the document; nothing is copied). */
typedef struct waio_json {
    waio_json_type_t type;
    const char *ptr;
    size_t len;
} waio_json_t;

/* The value of a whole document (surrounding whitespace allowed); type NONE if it is not one
 * valid JSON value. */
waio_json_t waio_json_parse(const char *text, size_t len);

/* Member `key` of an object (top level of that object only), or type NONE. When a key repeats,
 * the last one wins, as in most parsers. */
waio_json_t waio_json_get(waio_json_t object, const char *key);

/* Element `index` of an array, or type NONE. */
waio_json_t waio_json_at(waio_json_t array, size_t index);

/* Iterates over an object's members or an array's elements: start with *pos = 0; each call
 * fills `key` (type NONE for arrays; may be NULL) and `value` and returns true, false at the
 * end. */
bool waio_json_next(waio_json_t container, size_t *pos, waio_json_t *key, waio_json_t *value);

/* An integral number (e.g. `3`, `-7`, `2.0`, `1e3`) that fits in int64_t: true and *out set. */
bool waio_json_int(waio_json_t value, int64_t *out);
/* Any number: true and *out set. */
bool waio_json_double(waio_json_t value, double *out);
/* true / false: true and *out set. */
bool waio_json_bool(waio_json_t value, bool *out);

/* A string's decoded UTF-8 text, NUL-terminated and malloc'd (free() it); NULL if `value` is not
 * a string. `len` (may be NULL) receives the length, which counts any embedded NUL. */
char *waio_json_string(waio_json_t value, size_t *len);

/* Whether `value` is a string equal to `text` (after decoding escapes). */
bool waio_json_eq(waio_json_t value, const char *text);

/* A growable output buffer; zero-initialize it (`waio_buf_t b = {0};`). `data` is always
 * NUL-terminated once anything was written. Running out of memory traps. */
typedef struct waio_buf {
    char *data;
    size_t len;
    size_t cap;
} waio_buf_t;

void waio_buf_put(waio_buf_t *b, const char *data, size_t len); /* raw bytes */
void waio_buf_puts(waio_buf_t *b, const char *text);            /* raw NUL-terminated text */
void waio_buf_str(waio_buf_t *b, const char *text, size_t len); /* a quoted JSON string */
void waio_buf_int(waio_buf_t *b, int64_t value);                /* a JSON number */
void waio_buf_json(waio_buf_t *b, waio_json_t value);           /* raw JSON, `null` if NONE */
void waio_buf_free(waio_buf_t *b);

#ifdef __cplusplus
}
#endif

#endif /* WAIO_JSON_H */
