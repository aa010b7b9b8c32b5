/* The tiny JSON helper of the waio C SDK; see waio_json.h. */
#include "waio_json.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 128

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) {
        p++;
    }
    return p;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* `p` at the opening quote; returns the position after the closing quote, or NULL. */
static const char *skip_string(const char *p, const char *end) {
    p++;
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            return p + 1;
        }
        if (c < 0x20) {
            return NULL;
        }
        if (c == '\\') {
            if (++p >= end) return NULL;
            if (*p == 'u') {
                if (end - p < 5) return NULL;
                for (int i = 1; i <= 4; i++) {
                    if (hex_digit(p[i]) < 0) return NULL;
                }
                p += 4;
            } else if (!strchr("\"\\/bfnrt", *p) || *p == 0) {
                return NULL;
            }
        }
        p++;
    }
    return NULL;
}

static const char *skip_digits(const char *p, const char *end) {
    const char *start = p;
    while (p < end && *p >= '0' && *p <= '9') p++;
    return p == start ? NULL : p;
}

static const char *skip_number(const char *p, const char *end) {
    if (p < end && *p == '-') p++;
    if (p < end && *p == '0') {
        p++;
    } else if (!(p = skip_digits(p, end))) {
        return NULL;
    }
    if (p < end && *p == '.') {
        if (!(p = skip_digits(p + 1, end))) return NULL;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (!(p = skip_digits(p, end))) return NULL;
    }
    return p;
}

static const char *skip_literal(const char *p, const char *end, const char *word) {
    size_t n = strlen(word);
    return (size_t)(end - p) >= n && memcmp(p, word, n) == 0 ? p + n : NULL;
}

/* `p` at the first character of a value (no leading whitespace); returns the position after
 * it, or NULL if it is not valid JSON. */
static const char *skip_value(const char *p, const char *end, int depth, waio_json_type_t *type) {
    if (p >= end || depth > MAX_DEPTH) return NULL;
    switch (*p) {
    case '"':
        *type = WAIO_JSON_STRING;
        return skip_string(p, end);
    case 't':
        *type = WAIO_JSON_BOOL;
        return skip_literal(p, end, "true");
    case 'f':
        *type = WAIO_JSON_BOOL;
        return skip_literal(p, end, "false");
    case 'n':
        *type = WAIO_JSON_NULL;
        return skip_literal(p, end, "null");
    case '[':
    case '{': {
        bool object = *p == '{';
        char close = object ? '}' : ']';
        *type = object ? WAIO_JSON_OBJECT : WAIO_JSON_ARRAY;
        p = skip_ws(p + 1, end);
        if (p < end && *p == close) return p + 1;
        for (;;) {
            waio_json_type_t t;
            if (object) {
                if (p >= end || *p != '"' || !(p = skip_string(p, end))) return NULL;
                p = skip_ws(p, end);
                if (p >= end || *p != ':') return NULL;
                p = skip_ws(p + 1, end);
            }
            if (!(p = skip_value(p, end, depth + 1, &t))) return NULL;
            p = skip_ws(p, end);
            if (p < end && *p == ',') {
                p = skip_ws(p + 1, end);
            } else if (p < end && *p == close) {
                return p + 1;
            } else {
                return NULL;
            }
        }
    }
    default:
        *type = WAIO_JSON_NUMBER;
        return skip_number(p, end);
    }
}

static const waio_json_t NONE = {WAIO_JSON_NONE, NULL, 0};

waio_json_t waio_json_parse(const char *text, size_t len) {
    if (text == NULL) return NONE;
    const char *end = text + len;
    const char *start = skip_ws(text, end);
    waio_json_type_t type;
    const char *after = skip_value(start, end, 0, &type);
    if (!after || skip_ws(after, end) != end) return NONE;
    return (waio_json_t){type, start, (size_t)(after - start)};
}

bool waio_json_next(waio_json_t c, size_t *pos, waio_json_t *key, waio_json_t *value) {
    if ((c.type != WAIO_JSON_OBJECT && c.type != WAIO_JSON_ARRAY) || c.len < 2) return false;
    const char *end = c.ptr + c.len - 1; /* the closing bracket */
    const char *p = skip_ws(c.ptr + (*pos ? *pos : 1), end);
    if (p < end && *p == ',') p = skip_ws(p + 1, end);
    if (p >= end) return false;
    waio_json_t k = NONE;
    if (c.type == WAIO_JSON_OBJECT) {
        const char *after = *p == '"' ? skip_string(p, end) : NULL;
        if (!after) return false;
        k = (waio_json_t){WAIO_JSON_STRING, p, (size_t)(after - p)};
        p = skip_ws(after, end);
        if (p >= end || *p != ':') return false;
        p = skip_ws(p + 1, end);
    }
    waio_json_type_t type;
    const char *after = skip_value(p, end, 1, &type);
    if (!after) return false;
    if (key) *key = k;
    *value = (waio_json_t){type, p, (size_t)(after - p)};
    *pos = (size_t)(after - c.ptr);
    return true;
}

waio_json_t waio_json_get(waio_json_t object, const char *key) {
    waio_json_t found = NONE, k, v;
    size_t pos = 0;
    if (object.type != WAIO_JSON_OBJECT) return NONE;
    while (waio_json_next(object, &pos, &k, &v)) {
        if (waio_json_eq(k, key)) found = v;
    }
    return found;
}

waio_json_t waio_json_at(waio_json_t array, size_t index) {
    waio_json_t v;
    size_t pos = 0, i = 0;
    if (array.type != WAIO_JSON_ARRAY) return NONE;
    while (waio_json_next(array, &pos, NULL, &v)) {
        if (i++ == index) return v;
    }
    return NONE;
}

bool waio_json_double(waio_json_t value, double *out) {
    char buf[64];
    if (value.type != WAIO_JSON_NUMBER || value.len >= sizeof buf) return false;
    /* A copy: the number may sit at the very end of a text that is not NUL-terminated. */
    memcpy(buf, value.ptr, value.len);
    buf[value.len] = 0;
    *out = strtod(buf, NULL);
    return true;
}

bool waio_json_int(waio_json_t value, int64_t *out) {
    if (value.type != WAIO_JSON_NUMBER) return false;
    bool plain = true;
    for (size_t i = 0; i < value.len; i++) {
        char c = value.ptr[i];
        if (c == '.' || c == 'e' || c == 'E') plain = false;
    }
    if (plain) {
        bool neg = value.ptr[0] == '-';
        uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
        uint64_t n = 0;
        for (size_t i = neg ? 1 : 0; i < value.len; i++) {
            uint64_t d = (uint64_t)(value.ptr[i] - '0');
            if (n > (limit - d) / 10) return false;
            n = n * 10 + d;
        }
        *out = neg ? (int64_t)(0 - n) : (int64_t)n;
        return true;
    }
    double d;
    if (!waio_json_double(value, &d)) return false;
    /* Integral and inside int64_t (2^63 itself is not). */
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0) || d != (double)(int64_t)d) {
        return false;
    }
    *out = (int64_t)d;
    return true;
}

bool waio_json_bool(waio_json_t value, bool *out) {
    if (value.type != WAIO_JSON_BOOL) return false;
    *out = value.ptr[0] == 't';
    return true;
}

static size_t put_utf8(char *dst, uint32_t cp) {
    if (cp < 0x80) {
        dst[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        dst[0] = (char)(0xC0 | (cp >> 6));
        dst[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        dst[0] = (char)(0xE0 | (cp >> 12));
        dst[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        dst[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    dst[0] = (char)(0xF0 | (cp >> 18));
    dst[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    dst[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    dst[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static uint32_t hex4(const char *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v = v * 16 + (uint32_t)hex_digit(p[i]);
    return v;
}

char *waio_json_string(waio_json_t value, size_t *len) {
    if (value.type != WAIO_JSON_STRING || value.len < 2) return NULL;
    const char *p = value.ptr + 1, *end = value.ptr + value.len - 1;
    /* Decoding never makes the text longer (\uXXXX is 6 bytes, at most 3 in UTF-8; a pair is
     * 12 bytes for 4). */
    char *out = malloc(value.len);
    if (!out) __builtin_trap();
    size_t n = 0;
    while (p < end) {
        if (*p != '\\') {
            out[n++] = *p++;
            continue;
        }
        p++;
        char e = *p++;
        switch (e) {
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'n': out[n++] = '\n'; break;
        case 'r': out[n++] = '\r'; break;
        case 't': out[n++] = '\t'; break;
        case 'u': {
            uint32_t cp = hex4(p);
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                uint32_t lo = hex4(p + 2);
                if (lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p += 6;
                }
            }
            if (cp >= 0xD800 && cp < 0xE000) cp = 0xFFFD; /* a lone surrogate */
            n += put_utf8(out + n, cp);
            break;
        }
        default: out[n++] = e; break; /* \" \\ \/ */
        }
    }
    out[n] = 0;
    if (len) *len = n;
    return out;
}

bool waio_json_eq(waio_json_t value, const char *text) {
    if (value.type != WAIO_JSON_STRING || value.len < 2) return false;
    size_t n = strlen(text);
    if (!memchr(value.ptr, '\\', value.len)) {
        return value.len - 2 == n && memcmp(value.ptr + 1, text, n) == 0;
    }
    size_t m;
    char *s = waio_json_string(value, &m);
    bool eq = s && m == n && memcmp(s, text, n) == 0;
    free(s);
    return eq;
}

/* ---- output ---------------------------------------------------------------------------------- */

void waio_buf_put(waio_buf_t *b, const char *data, size_t len) {
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + len + 1) cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown) __builtin_trap();
        b->data = grown;
        b->cap = cap;
    }
    if (len) memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = 0;
}

void waio_buf_puts(waio_buf_t *b, const char *text) { waio_buf_put(b, text, strlen(text)); }

void waio_buf_str(waio_buf_t *b, const char *text, size_t len) {
    waio_buf_put(b, "\"", 1);
    size_t run = 0; /* characters copied as they are, in one go */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        waio_buf_put(b, text + run, i - run);
        run = i + 1;
        char esc[8];
        switch (c) {
        case '"': waio_buf_put(b, "\\\"", 2); break;
        case '\\': waio_buf_put(b, "\\\\", 2); break;
        case '\n': waio_buf_put(b, "\\n", 2); break;
        case '\r': waio_buf_put(b, "\\r", 2); break;
        case '\t': waio_buf_put(b, "\\t", 2); break;
        default:
            snprintf(esc, sizeof esc, "\\u%04x", c);
            waio_buf_put(b, esc, 6);
        }
    }
    waio_buf_put(b, text + run, len - run);
    waio_buf_put(b, "\"", 1);
}

void waio_buf_int(waio_buf_t *b, int64_t value) {
    char num[24];
    int n = snprintf(num, sizeof num, "%" PRId64, value);
    waio_buf_put(b, num, (size_t)n);
}

void waio_buf_json(waio_buf_t *b, waio_json_t value) {
    if (value.type == WAIO_JSON_NONE) {
        waio_buf_put(b, "null", 4);
    } else {
        waio_buf_put(b, value.ptr, value.len);
    }
}

void waio_buf_free(waio_buf_t *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
