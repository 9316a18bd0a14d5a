/*
 * test_log_json.c - log lines as JSON objects (core/log_json.c): every
 * output is parsed back with jansson (which rejects invalid UTF-8 and bad
 * escapes), whatever bytes the fields held: quotes, backslashes, control
 * characters, invalid UTF-8, values too long for the line, random bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "postern/log.h"

#include "log_json.h"

#define LINE_CAP 8192

/* Format fields as one line and parse it back; the object (caller frees). */
static json_t *
line_of(const char *fields, size_t len, int worker, char *out, size_t cap)
{
    struct log_json_line l = {
        .time = "2026-11-22T10:00:00.123Z",
        .level = "info",
        .sid = "0123456789abcdef",
        .event = "test",
        .fields = fields,
        .fields_len = len,
        .worker = worker,
    };
    size_t n = log_json_format(out, cap, &l);
    assert_int_equal(strlen(out), n);
    assert_null(memchr(out, '\n', n)); /* one line */
    json_error_t err;
    json_t *j =
        json_loadb(out, n, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    if (!j)
        fail_msg("not JSON (%s): %s", err.text, out);
    assert_true(json_is_object(j));
    return j;
}

static json_t *
fields_json(const char *fields)
{
    static char out[LINE_CAP];
    return line_of(fields, strlen(fields), 3, out, sizeof(out));
}

static const char *
str(const json_t *j, const char *key)
{
    const json_t *v = json_object_get(j, key);
    if (!json_is_string(v))
        fail_msg("%s is not a string", key);
    return json_string_value(v);
}

static void
test_the_fixed_members(void **state)
{
    json_t *j = fields_json("client=192.0.2.1");
    assert_string_equal(str(j, "time"), "2026-11-22T10:00:00.123Z");
    assert_string_equal(str(j, "level"), "info");
    assert_string_equal(str(j, "session"), "0123456789abcdef");
    assert_string_equal(str(j, "event"), "test");
    assert_string_equal(str(j, "client"), "192.0.2.1");
    assert_int_equal(json_integer_value(json_object_get(j, "worker")), 3);
    json_decref(j);

    /* Without a session, time or worker: no such members. */
    char out[512];
    struct log_json_line l = {.level = "error", .event = "x", .worker = -1};
    log_json_format(out, sizeof(out), &l);
    assert_string_equal(out, "{\"level\":\"error\",\"event\":\"x\"}");
}

/* postern_log_value() renderings come back as the bytes they stand for. */
static void
test_quotes_and_backslashes(void **state)
{
    char fields[600];
    snprintf(fields, sizeof(fields), "from=%s user=%s",
             postern_log_value("bob\" result=accepted x=\""),
             postern_log_value("a\\b\\"));
    json_t *j = fields_json(fields);
    assert_string_equal(str(j, "from"), "bob\" result=accepted x=\"");
    assert_string_equal(str(j, "user"), "a\\b\\");
    assert_null(json_object_get(j, "result")); /* not forged */
    assert_int_equal(json_object_size(j), 7);
    json_decref(j);
}

static void
test_control_characters(void **state)
{
    static const char raw[] = "a\r\nb\tc\x01\x1b[31m\x7f";
    char fields[600];
    snprintf(fields, sizeof(fields), "v=%s",
             postern_log_value_n(raw, sizeof(raw) - 1));
    json_t *j = fields_json(fields);
    assert_string_equal(str(j, "v"), raw);
    json_decref(j);

    /* NUL inside a value: kept, escaped as \u0000. */
    snprintf(fields, sizeof(fields), "v=%s", postern_log_value_n("a\0b", 3));
    char out[LINE_CAP];
    j = line_of(fields, strlen(fields), -1, out, sizeof(out));
    assert_non_null(strstr(out, "\"v\":\"a\\u0000b\""));
    assert_int_equal(json_string_length(json_object_get(j, "v")), 3);
    json_decref(j);

    /* Raw control bytes from a module that skipped postern_log_value. */
    j = fields_json("text \x02\x1f here=x\x7fy");
    assert_string_equal(str(j, "here"), "x\x7fy");
    assert_string_equal(str(j, "msg"), "text \x02\x1f");
    json_decref(j);
}

static void
test_utf8_kept_and_invalid_replaced(void **state)
{
    char fields[600];
    /* é, € and an emoji are whole sequences: kept. */
    snprintf(fields, sizeof(fields), "v=%s",
             postern_log_value("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
    json_t *j = fields_json(fields);
    assert_string_equal(str(j, "v"),
                        "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    json_decref(j);

    static const struct {
        const char *in, *want;
    } bad[] = {
        {"\xff", "\xef\xbf\xbd"},                 /* never in UTF-8 */
        {"a\xc3", "a\xef\xbf\xbd"},               /* cut short */
        {"\xc3(", "\xef\xbf\xbd("},               /* no continuation */
        {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"}, /* overlong "/" */
        {"\xed\xa0\x80",                          /* a surrogate */
         "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xf4\x90\x80\x80", /* above U+10FFFF */
         "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\x80\xc3\xa9", "\xef\xbf\xbd\xc3\xa9"}, /* then a good one */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        snprintf(fields, sizeof(fields), "v=%s", postern_log_value(bad[i].in));
        j = fields_json(fields);
        assert_string_equal(str(j, "v"), bad[i].want);
        json_decref(j);
        /* The same bytes raw, as a bare value. */
        snprintf(fields, sizeof(fields), "v=%s", bad[i].in);
        j = fields_json(fields);
        assert_string_equal(str(j, "v"), bad[i].want);
        json_decref(j);
    }
}

static void
test_numbers_null_and_strings(void **state)
{
    json_t *j = fields_json("port=2525 size=0 neg=-3 ms=1.5 code=- "
                            "id=0123456789abcdef all=1234567890123456 "
                            "lead=007 ver=1.2.3 q=\"25\" dot=1. e=1e5");
    assert_int_equal(json_integer_value(json_object_get(j, "port")), 2525);
    assert_true(json_is_integer(json_object_get(j, "size")));
    assert_int_equal(json_integer_value(json_object_get(j, "neg")), -3);
    assert_true(json_is_real(json_object_get(j, "ms")));
    assert_true(json_is_null(json_object_get(j, "code")));
    /* ids stay strings, even when all their digits are decimal */
    assert_string_equal(str(j, "id"), "0123456789abcdef");
    assert_string_equal(str(j, "all"), "1234567890123456");
    assert_string_equal(str(j, "lead"), "007");
    assert_string_equal(str(j, "ver"), "1.2.3");
    assert_string_equal(str(j, "q"), "25"); /* quoted: a string */
    assert_string_equal(str(j, "dot"), "1.");
    assert_string_equal(str(j, "e"), "1e5");
    json_decref(j);
}

static void
test_duplicate_and_reserved_keys(void **state)
{
    json_t *j = fields_json("a=1 a=2 a=3 event=x worker=9 session=s time=t");
    assert_int_equal(json_integer_value(json_object_get(j, "a")), 1);
    assert_int_equal(json_integer_value(json_object_get(j, "a_2")), 2);
    assert_int_equal(json_integer_value(json_object_get(j, "a_3")), 3);
    assert_string_equal(str(j, "event"), "test");
    assert_string_equal(str(j, "event_2"), "x");
    assert_int_equal(json_integer_value(json_object_get(j, "worker")), 3);
    assert_int_equal(json_integer_value(json_object_get(j, "worker_2")), 9);
    assert_string_equal(str(j, "session_2"), "s");
    assert_string_equal(str(j, "time_2"), "t");
    json_decref(j);

    /* Outside a worker, a worker= field is just a field. */
    char out[LINE_CAP];
    j = line_of("worker=0 pid=12", 15, -1, out, sizeof(out));
    assert_int_equal(json_integer_value(json_object_get(j, "worker")), 0);
    json_decref(j);
}

/*
 * Names that only meet once written (found by fuzz_log_json): a field
 * named like a suffixed one, and more members than are remembered for
 * the check.
 */
static void
test_names_collide_only_as_written(void **state)
{
    (void)state;
    json_t *j = fields_json("m=1 m=2 m_2=3");
    assert_int_equal(json_integer_value(json_object_get(j, "m")), 1);
    assert_int_equal(json_integer_value(json_object_get(j, "m_2")), 2);
    assert_int_equal(json_integer_value(json_object_get(j, "m_2_2")), 3);
    json_decref(j);

    char many[2048] = "";
    for (int i = 0; i < 100; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many), "k=%d ", i);
    j = fields_json(many); /* parsed with duplicates rejected */
    assert_true(json_is_true(json_object_get(j, "truncated")));
    assert_int_equal(json_integer_value(json_object_get(j, "k_64")), 63);
    assert_null(json_object_get(j, "k_65"));
    json_decref(j);
}

static void
test_free_words_become_msg(void **state)
{
    json_t *j = fields_json("module=\"10-a\" reload failed, keeping the "
                            "table: error=\"no such file\" users=3");
    assert_string_equal(str(j, "module"), "10-a");
    assert_string_equal(str(j, "msg"), "reload failed, keeping the table:");
    assert_string_equal(str(j, "error"), "no such file");
    assert_int_equal(json_integer_value(json_object_get(j, "users")), 3);
    json_decref(j);

    /* An unterminated quote (a line cut short) still gives JSON. */
    j = fields_json("a=\"abc\\\" b=1");
    assert_string_equal(str(j, "a"), "abc\" b=1");
    json_decref(j);
    j = fields_json("a=\"abc\\");
    json_decref(j);
    j = fields_json("=x ==y a= \"q\" z=\"\"");
    assert_string_equal(str(j, "a"), "");
    assert_string_equal(str(j, "z"), "");
    assert_string_equal(str(j, "msg"), "=x ==y \"q\"");
    json_decref(j);
}

/* Values that do not fit end the line early, never inside a member. */
static void
test_long_values_truncate_whole_members(void **state)
{
    char big[2000], fields[4096];
    memset(big, '\x01', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    /* Each \x01 is \u0001 in JSON: 6 bytes for one. */
    int n = snprintf(fields, sizeof(fields), "a=1 v=%s w=%s b=2",
                     postern_log_value(big), postern_log_value(big));
    char out[LINE_CAP];
    json_t *j = line_of(fields, (size_t)n, 1, out, sizeof(out));
    assert_null(json_object_get(j, "truncated")); /* 2 x 126 x 6 bytes fit */
    assert_int_equal(json_integer_value(json_object_get(j, "b")), 2);
    /* 126 bytes, then the cut mark "..." */
    assert_int_equal(json_string_length(json_object_get(j, "v")), 129);
    json_decref(j);

    /* A small buffer: the members that fit, then "truncated". */
    char small[300];
    j = line_of(fields, (size_t)n, 1, small, sizeof(small));
    assert_int_equal(json_integer_value(json_object_get(j, "a")), 1);
    assert_null(json_object_get(j, "v"));
    assert_true(json_is_true(json_object_get(j, "truncated")));
    assert_int_equal(json_integer_value(json_object_get(j, "worker")), 1);
    json_decref(j);

    /* A raw value of control bytes, 2000 long, in a tight buffer. */
    char raw[2100];
    memset(raw, '\x1f', sizeof(raw) - 1);
    memcpy(raw, "v=", 2);
    raw[sizeof(raw) - 1] = '\0';
    j = line_of(raw, strlen(raw), 0, small, sizeof(small));
    assert_true(json_is_true(json_object_get(j, "truncated")));
    json_decref(j);
}

static void
test_string_escaper(void **state)
{
    char out[64];
    assert_int_equal(log_json_string(out, sizeof(out), "a\"\\\n", 4, false), 9);
    assert_string_equal(out, "\"a\\\"\\\\\\n\"");
    assert_int_equal(log_json_string(out, sizeof(out), "\\x41\\\"", 6, true),
                     5);
    assert_string_equal(out, "\"A\\\"\"");
    /* Too long for the buffer: nothing, not half a string. */
    assert_int_equal(log_json_string(out, 8, "abcdefgh", 8, false), 0);
    assert_string_equal(out, "");
}

/* Random bytes, decoded or not, always give a JSON object. */
static void
test_random_bytes_always_json(void **state)
{
    static const char alphabet[] = "ab =\"\\x0fF\xc3\xa9\xff\x80\xed\x01";
    unsigned seed = 12345;
    char fields[700], out[LINE_CAP], small[256];

    for (int round = 0; round < 5000; round++) {
        size_t len = (size_t)(rand_r(&seed) % sizeof(fields));
        for (size_t i = 0; i < len; i++)
            fields[i] = (round & 1)
                            ? (char)(rand_r(&seed) & 0xff)
                            : alphabet[rand_r(&seed) % (sizeof(alphabet) - 1)];
        json_decref(line_of(fields, len, round % 3 - 1, out, sizeof(out)));
        json_decref(line_of(fields, len, 1, small, sizeof(small)));
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_fixed_members),
        cmocka_unit_test(test_quotes_and_backslashes),
        cmocka_unit_test(test_control_characters),
        cmocka_unit_test(test_utf8_kept_and_invalid_replaced),
        cmocka_unit_test(test_numbers_null_and_strings),
        cmocka_unit_test(test_duplicate_and_reserved_keys),
        cmocka_unit_test(test_names_collide_only_as_written),
        cmocka_unit_test(test_free_words_become_msg),
        cmocka_unit_test(test_long_values_truncate_whole_members),
        cmocka_unit_test(test_string_escaper),
        cmocka_unit_test(test_random_bytes_always_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
