/*
 * test_log.c - postern_log_value(), the one escaping function for log
 * field values (issue 7, defect 6): a value can never end its field and
 * forge another, control and non-ASCII bytes become \xNN, long values are
 * cut on an escape boundary, and the per-thread ring keeps 8 values alive
 * on every thread at once.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "postern/log.h"

#define S(lit) (lit), (sizeof(lit) - 1)

static void
test_plain_values_are_quoted(void **state)
{
    assert_string_equal(postern_log_value("bob"), "\"bob\"");
    assert_string_equal(postern_log_value("bob@example.com"),
                        "\"bob@example.com\"");
    assert_string_equal(postern_log_value("a b=c"), "\"a b=c\"");
    assert_string_equal(postern_log_value(""), "\"\"");
    assert_string_equal(postern_log_value(NULL), "-");
    assert_string_equal(postern_log_value_n(NULL, 3), "-");
    assert_string_equal(postern_log_value_n("abcdef", 3), "\"abc\"");
}

/* The identity of the issue: it must stay inside one quoted value. */
static void
test_quote_cannot_end_the_value(void **state)
{
    assert_string_equal(postern_log_value("bob\" result=accepted x=\""),
                        "\"bob\\\" result=accepted x=\\\"\"");
    /* A trailing backslash cannot escape the closing quote. */
    assert_string_equal(postern_log_value("bob\\"), "\"bob\\\\\"");
    assert_string_equal(postern_log_value("\\\""), "\"\\\\\\\"\"");
}

static void
test_control_and_non_ascii_bytes(void **state)
{
    assert_string_equal(postern_log_value("a\r\nb\tc"),
                        "\"a\\x0d\\x0ab\\x09c\"");
    assert_string_equal(postern_log_value("\x1b[31m\x7f"),
                        "\"\\x1b[31m\\x7f\"");
    assert_string_equal(postern_log_value("caf\xc3\xa9 \x80\xff"),
                        "\"caf\\xc3\\xa9 \\x80\\xff\"");
    assert_string_equal(postern_log_value_n(S("a\0b")), "\"a\\x00b\"");
    /* Printable ASCII other than " and \ passes unchanged. */
    char all[96];
    size_t n = 0;
    for (int c = 0x20; c < 0x7f; c++)
        if (c != '"' && c != '\\')
            all[n++] = (char)c;
    all[n] = '\0';
    const char *r = postern_log_value(all);
    assert_int_equal(strlen(r), n + 2);
    assert_memory_equal(r + 1, all, n);
}

/* Between the quotes, a rendering is a sequence of whole escapes. */
static void
assert_whole_escapes(const char *r, size_t inner_len)
{
    for (size_t i = 1; i < 1 + inner_len;) {
        if (r[i] != '\\') {
            assert_true(r[i] != '"');
            i++;
        } else if (r[i + 1] == 'x') {
            assert_true(i + 4 <= 1 + inner_len);
            i += 4;
        } else {
            assert_true(r[i + 1] == '"' || r[i + 1] == '\\');
            assert_true(i + 2 <= 1 + inner_len);
            i += 2;
        }
    }
}

static void
assert_cut(const char *r)
{
    size_t len = strlen(r);
    assert_true(len <= 511);
    assert_true(len > 400);
    assert_int_equal(r[0], '"');
    assert_string_equal(r + len - 4, "...\"");
    assert_whole_escapes(r, len - 5);
}

static void
test_long_values_are_cut_on_an_escape(void **state)
{
    char big[2000];

    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_cut(postern_log_value(big));
    memset(big, '"', sizeof(big) - 1);
    assert_cut(postern_log_value(big));
    memset(big, '\x01', sizeof(big) - 1);
    assert_cut(postern_log_value(big));
    for (size_t i = 0; i < sizeof(big) - 1; i++)
        big[i] = "a\"\x02"[i % 3];
    assert_cut(postern_log_value(big));
    /* Just under the limit: whole, no mark. */
    memset(big, 'b', 500);
    big[500] = '\0';
    const char *r = postern_log_value(big);
    assert_int_equal(strlen(r), 502);
    assert_int_equal(r[501], '"');
    assert_int_equal(strstr(r, "..."), NULL);
}

static void
test_eight_values_in_one_line(void **state)
{
    char line[256];

    snprintf(line, sizeof(line), "%s %s %s %s %s %s %s %s",
             postern_log_value("1"), postern_log_value("2"),
             postern_log_value("3"), postern_log_value("4"),
             postern_log_value("5"), postern_log_value("6"),
             postern_log_value("7"), postern_log_value("8"));
    assert_string_equal(line,
                        "\"1\" \"2\" \"3\" \"4\" \"5\" \"6\" \"7\" \"8\"");
}

struct worker {
    int id;
    int failures;
};

static void *
worker_run(void *arg)
{
    struct worker *w = arg;
    char in[64], want[64];

    for (int i = 0; i < 20000; i++) {
        snprintf(in, sizeof(in), "t%d\"%d", w->id, i);
        snprintf(want, sizeof(want), "\"t%d\\\"%d\"", w->id, i);
        const char *a = postern_log_value(in);
        const char *b = postern_log_value("other");
        if (strcmp(a, want) != 0 || strcmp(b, "\"other\"") != 0)
            w->failures++;
    }
    return NULL;
}

/* Pool threads log at the same time as the loop: no shared buffer. */
static void
test_threads_do_not_share_buffers(void **state)
{
    pthread_t t[4];
    struct worker w[4];

    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){.id = i};
        assert_int_equal(pthread_create(&t[i], NULL, worker_run, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(w[i].failures, 0);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_values_are_quoted),
        cmocka_unit_test(test_quote_cannot_end_the_value),
        cmocka_unit_test(test_control_and_non_ascii_bytes),
        cmocka_unit_test(test_long_values_are_cut_on_an_escape),
        cmocka_unit_test(test_eight_values_in_one_line),
        cmocka_unit_test(test_threads_do_not_share_buffers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
