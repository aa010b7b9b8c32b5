/* Native unit tests of the tiny JSON helper: sh sdk/c/tests/run.sh */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "waio_json.h"

static waio_json_t doc(const char *text) { return waio_json_parse(text, strlen(text)); }

int main(void) {
    /* Validity. */
    assert(doc(" {\"a\": [1, 2.5e3, -0, true, null, \"x\"]} ").type == WAIO_JSON_OBJECT);
    const char *bad[] = {"", "{", "{\"a\" 1}", "[1,]", "01", "\"\\x\"", "tru", "{} x", "1.", "\"a"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert(doc(bad[i]).type == WAIO_JSON_NONE);
    }

    /* Fields, nesting, last duplicate wins, escaped keys. */
    waio_json_t o = doc("{\"id\": {\"x\": [1, \"}\"]}, \"n\": 3, \"n\": 4, \"k\\u00e9y\": \"v\"}");
    waio_json_t id = waio_json_get(o, "id");
    assert(id.type == WAIO_JSON_OBJECT && id.len == strlen("{\"x\": [1, \"}\"]}"));
    int64_t n = 0;
    assert(waio_json_int(waio_json_get(o, "n"), &n) && n == 4);
    assert(waio_json_eq(waio_json_get(o, "k\xc3\xa9y"), "v"));
    assert(waio_json_get(o, "missing").type == WAIO_JSON_NONE);
    assert(waio_json_get(waio_json_get(o, "n"), "x").type == WAIO_JSON_NONE);
    waio_json_t arr = waio_json_get(id, "x");
    assert(waio_json_eq(waio_json_at(arr, 1), "}"));
    assert(waio_json_at(arr, 2).type == WAIO_JSON_NONE);

    /* Numbers. */
    assert(waio_json_int(doc("-9223372036854775808"), &n) && n == INT64_MIN);
    assert(!waio_json_int(doc("9223372036854775808"), &n));
    assert(waio_json_int(doc("2.0"), &n) && n == 2);
    assert(waio_json_int(doc("1e3"), &n) && n == 1000);
    assert(!waio_json_int(doc("2.5"), &n));
    assert(!waio_json_int(doc("\"3\""), &n));
    double d;
    assert(waio_json_double(doc("2.5"), &d) && d == 2.5);

    /* Strings: escapes, surrogate pairs, lone surrogates, embedded NUL. */
    size_t len;
    char *s = waio_json_string(doc("\"a\\n\\\"\\u00e9\\ud83d\\ude00\\ud800x\\u0000\""), &len);
    const char want[] = "a\n\"\xc3\xa9\xf0\x9f\x98\x80\xef\xbf\xbdx";
    assert(len == sizeof want && memcmp(s, want, sizeof want) == 0);
    free(s);
    assert(waio_json_string(doc("1"), NULL) == NULL);

    /* Output round trip. */
    waio_buf_t b = {0};
    const char raw[] = "q\"\\\n\t\x01\xc3\xa9";
    waio_buf_puts(&b, "{\"s\":");
    waio_buf_str(&b, raw, sizeof raw - 1);
    waio_buf_puts(&b, ",\"i\":");
    waio_buf_int(&b, -42);
    waio_buf_puts(&b, ",\"none\":");
    waio_buf_json(&b, waio_json_get(o, "missing"));
    waio_buf_puts(&b, "}");
    assert(strcmp(b.data, "{\"s\":\"q\\\"\\\\\\n\\t\\u0001\xc3\xa9\",\"i\":-42,\"none\":null}") == 0);
    waio_json_t back = waio_json_parse(b.data, b.len);
    s = waio_json_string(waio_json_get(back, "s"), &len);
    assert(len == sizeof raw - 1 && memcmp(s, raw, len) == 0);
    free(s);
    waio_buf_free(&b);

    /* Iteration. */
    size_t pos = 0, count = 0;
    waio_json_t k, v;
    while (waio_json_next(o, &pos, &k, &v)) count++;
    assert(count == 4);
    pos = count = 0;
    while (waio_json_next(doc("[]"), &pos, NULL, &v)) count++;
    assert(count == 0);

    puts("json_test: ok");
    return 0;
}
