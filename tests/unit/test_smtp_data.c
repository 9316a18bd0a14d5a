/*
 * test_smtp_data.c - unit tests for the DATA receiver (core/smtp_data.c).
 *
 * Golden cases give input, policy and the expected message bytes, status,
 * consumed count and flags; each is checked fed whole, split at every
 * point, split at every pair of points and one byte at a time, since the
 * output must not depend on how reads split the stream. A small reference
 * model, written with look-ahead over the whole buffer instead of held
 * state, is compared against the receiver on random inputs and splits.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdbool.h>
#include <string.h>

#include <cmocka.h>

#include "smtp_data.h"

#define CAP_MAX 4096
#define NO_LIMIT UINT64_MAX

/* What the sink saw. */
struct capture {
    char buf[CAP_MAX];
    size_t len;
    size_t calls;
    size_t fail_at_call; /* return -1 on this call (1-based); 0: never */
    size_t calls_after_fail;
    bool failed;
};

static int
capture_sink(void *arg, const char *buf, size_t len)
{
    struct capture *cap = arg;

    if (cap->failed)
        cap->calls_after_fail++;
    cap->calls++;
    assert_true(len > 0);
    assert_true(cap->len + len <= CAP_MAX);
    memcpy(cap->buf + cap->len, buf, len);
    cap->len += len;
    if (cap->fail_at_call != 0 && cap->calls == cap->fail_at_call) {
        cap->failed = true;
        return -1;
    }
    return 0;
}

/* Everything a run of the receiver produced. */
struct result {
    struct capture cap;
    smtp_data_status status;
    size_t consumed; /* across all feed calls */
    uint64_t size;
    uint64_t header_size;
    bool too_big, header_too_big, bare_line_end, sink_failed;
};

struct limits {
    smtp_data_policy policy;
    uint64_t max_size;
    uint64_t max_header_size;
    size_t fail_at_call;
};

/*
 * Feed in[0..len) in pieces ending at cuts[0..ncuts) (ascending) and then
 * at len, stopping at DONE.
 */
static void
run_cuts(const struct limits *lim, const char *in, size_t len,
         const size_t *cuts, size_t ncuts, struct result *res)
{
    struct smtp_data_rx rx;
    size_t start = 0, i, stop, used;

    memset(res, 0, sizeof(*res));
    res->cap.fail_at_call = lim->fail_at_call;
    smtp_data_init(&rx, lim->policy, lim->max_size, lim->max_header_size,
                   capture_sink, &res->cap);
    res->status = SMTP_DATA_NEED_MORE;
    for (i = 0; i <= ncuts; i++) {
        stop = i < ncuts ? cuts[i] : len;
        assert_true(stop >= start && stop <= len);
        used = (size_t)-1;
        res->status = smtp_data_feed(&rx, in + start, stop - start, &used);
        assert_true(used <= stop - start);
        res->consumed += used;
        if (res->status == SMTP_DATA_DONE)
            break;
        assert_int_equal(used, stop - start);
        start = stop;
    }
    res->size = rx.size;
    res->header_size = rx.header_size;
    res->too_big = rx.too_big;
    res->header_too_big = rx.header_too_big;
    res->bare_line_end = rx.bare_line_end;
    res->sink_failed = rx.sink_failed;
}

static void
run_whole(const struct limits *lim, const char *in, size_t len,
          struct result *res)
{
    run_cuts(lim, in, len, NULL, 0, res);
}

static void
run_bytewise(const struct limits *lim, const char *in, size_t len,
             struct result *res)
{
    size_t cuts[CAP_MAX], i;

    assert_true(len < CAP_MAX);
    for (i = 1; i < len; i++)
        cuts[i - 1] = i;
    run_cuts(lim, in, len, cuts, len > 0 ? len - 1 : 0, res);
}

static void
assert_same_result(const struct result *a, const struct result *b)
{
    assert_int_equal(a->status, b->status);
    assert_int_equal(a->consumed, b->consumed);
    assert_int_equal(a->cap.len, b->cap.len);
    assert_memory_equal(a->cap.buf, b->cap.buf, a->cap.len);
    assert_int_equal(a->size, b->size);
    assert_int_equal(a->header_size, b->header_size);
    assert_int_equal(a->too_big, b->too_big);
    assert_int_equal(a->header_too_big, b->header_too_big);
    assert_int_equal(a->bare_line_end, b->bare_line_end);
    assert_int_equal(a->sink_failed, b->sink_failed);
}

/*
 * Every way of cutting the input into two or three pieces, and one byte at
 * a time, must give the same result as feeding it whole.
 */
static void
assert_split_invariant(const struct limits *lim, const char *in, size_t len,
                       const struct result *whole)
{
    struct result res;
    size_t cuts[2], i, j;

    for (i = 0; i <= len; i++) {
        cuts[0] = i;
        run_cuts(lim, in, len, cuts, 1, &res);
        assert_same_result(whole, &res);
        for (j = i; j <= len; j++) {
            cuts[1] = j;
            run_cuts(lim, in, len, cuts, 2, &res);
            assert_same_result(whole, &res);
        }
    }
    run_bytewise(lim, in, len, &res);
    assert_same_result(whole, &res);
}

/* --- golden cases ------------------------------------------------------ */

#define S(lit) lit, sizeof(lit) - 1

struct golden {
    const char *name;
    smtp_data_policy policy;
    const char *in;
    size_t in_len;
    const char *out;
    size_t out_len;
    smtp_data_status status;
    size_t consumed;
    bool bare;
    uint64_t header_size;
};

#define STRICT SMTP_DATA_STRICT
#define NORM SMTP_DATA_NORMALISE
#define DONE SMTP_DATA_DONE
#define MORE SMTP_DATA_NEED_MORE

static const struct golden goldens[] = {
    {"empty message", STRICT, S(".\r\n"), S(""), DONE, 3, false, 0},
    {"empty, pipelined", STRICT, S(".\r\nQUIT\r\n"), S(""), DONE, 3, false, 0},
    {"simple", STRICT, S("Subject: x\r\n\r\nhello\r\n.\r\n"),
     S("Subject: x\r\n\r\nhello\r\n"), DONE, 24, false, 14},
    {"pipelined next command", STRICT, S("hi\r\n.\r\nMAIL FROM:<a@b>\r\n"),
     S("hi\r\n"), DONE, 7, false, 4},
    {"dot-stuffed lines", STRICT, S("..\r\n..x\r\n...\r\n.x\r\n.\r\n"),
     S(".\r\n.x\r\n..\r\nx\r\n"), DONE, 21, false, 14},
    {"lone dot inside lines", STRICT, S("a.b\r\na .\r\n. \r\n.\r\n"),
     S("a.b\r\na .\r\n \r\n"), DONE, 17, false, 13},
    {"empty lines", STRICT, S("\r\n\r\n.\r\n"), S("\r\n\r\n"), DONE, 7, false,
     2},
    {"unterminated: held dot", STRICT, S("hi\r\n."), S("hi\r\n"), MORE, 5,
     false, 4},
    {"unterminated: held dot CR", STRICT, S("hi\r\n.\r"), S("hi\r\n"), MORE, 6,
     false, 4},
    {"unterminated: held CR", STRICT, S("hi\r"), S("hi"), MORE, 3, false, 2},
    {"unterminated: dot line only", STRICT, S(".\r"), S(""), MORE, 2, false, 0},
    {"8-bit and NUL", STRICT,
     S("\0\xff\x80"
       "abc\0\r\n\xe9t\xe9\r\n.\0\r\n.\r\n"),
     S("\0\xff\x80"
       "abc\0\r\n\xe9t\xe9\r\n\0\r\n"),
     DONE, 21, false, 17},
    /* smuggling: none of these ends the data at the fake terminator */
    {"LF.LF strict", STRICT, S("a\n.\nb\r\n.\r\n"), S("a\n.\nb\r\n"), DONE, 10,
     true, 7},
    {"CR.CR strict", STRICT, S("a\r.\rb\r\n.\r\n"), S("a\r.\rb\r\n"), DONE, 10,
     true, 7},
    {"LF.CRLF strict", STRICT, S("a\n.\r\nb\r\n.\r\n"), S("a\n.\r\nb\r\n"),
     DONE, 11, true, 8},
    {"CRLF.LF strict", STRICT, S("a\r\n.\nb\r\n.\r\n"), S("a\r\n\nb\r\n"), DONE,
     11, true, 7},
    {"CRLF.CR strict", STRICT, S("a\r\n.\rb\r\n.\r\n"), S("a\r\n\rb\r\n"), DONE,
     11, true, 7},
    {"CRLF.CR then MAIL strict", STRICT, S("a\r\n.\rMAIL FROM:<x>\r\n"),
     S("a\r\n\rMAIL FROM:<x>\r\n"), MORE, 20, true, 19},
    {"LF.LF alone strict", STRICT, S("a\n.\n"), S("a\n.\n"), MORE, 4, true, 4},
    {"CR CRLF strict", STRICT, S("a\r\r\n.\r\n"), S("a\r\r\n"), DONE, 7, true,
     4},
    {"LF.LF normalise", NORM, S("a\n.\nb\r\n.\r\n"), S("a\r\n.\r\nb\r\n"), DONE,
     10, false, 9},
    {"CR.CR normalise", NORM, S("a\r.\rb\r\n.\r\n"), S("a\r\n.\r\nb\r\n"), DONE,
     10, false, 9},
    {"LF.CRLF normalise", NORM, S("a\n.\r\nb\r\n.\r\n"), S("a\r\n.\r\nb\r\n"),
     DONE, 11, false, 9},
    {"CRLF.LF normalise", NORM, S("a\r\n.\nb\r\n.\r\n"), S("a\r\n\r\nb\r\n"),
     DONE, 11, false, 5},
    {"CRLF.CR normalise", NORM, S("a\r\n.\rb\r\n.\r\n"), S("a\r\n\r\nb\r\n"),
     DONE, 11, false, 5},
    {"LF at start normalise", NORM, S("\n.\r\n.\r\n"), S("\r\n.\r\n"), DONE, 7,
     false, 2},
    {"CR CRLF normalise", NORM, S("a\r\r\n.\r\n"), S("a\r\n\r\n"), DONE, 7,
     false, 5},
    {"bare LF lines normalise", NORM, S("x: 1\ny: 2\n\nbody\n.\r\n"),
     S("x: 1\r\ny: 2\r\n\r\nbody\r\n.\r\n"), MORE, 19, false, 14},
    {"soft dot-stuffing normalise", NORM, S("a\n..b\n.c\r\n.\r\n"),
     S("a\r\n.b\r\nc\r\n"), DONE, 13, false, 10},
    {"CRLF after bare line ends it", NORM, S("a\n\r\n.\r\n"), S("a\r\n\r\n"),
     DONE, 7, false, 5},
    {"normalise without bare input", NORM, S("a\r\n..\r\n.\r\n"),
     S("a\r\n.\r\n"), DONE, 10, false, 6},
};

static void
test_golden(void **state)
{
    size_t g;

    (void)state;
    for (g = 0; g < sizeof(goldens) / sizeof(goldens[0]); g++) {
        const struct golden *t = &goldens[g];
        struct limits lim = {t->policy, NO_LIMIT, NO_LIMIT, 0};
        struct result res;

        print_message("golden: %s\n", t->name);
        run_whole(&lim, t->in, t->in_len, &res);
        assert_int_equal(res.status, t->status);
        assert_int_equal(res.consumed, t->consumed);
        assert_int_equal(res.cap.len, t->out_len);
        assert_memory_equal(res.cap.buf, t->out, t->out_len);
        assert_int_equal(res.size, t->out_len);
        assert_int_equal(res.bare_line_end, t->bare);
        assert_int_equal(res.header_size, t->header_size);
        assert_false(res.too_big);
        assert_false(res.header_too_big);
        assert_false(res.sink_failed);
        assert_split_invariant(&lim, t->in, t->in_len, &res);
    }
}

/* Verbatim input reaches the sink as one run, not byte by byte. */
static void
test_runs_not_bytes(void **state)
{
    static const char in[] = "From: a@b\r\nSubject: hi\r\n\r\nline one\r\n"
                             "line two\r\n.\r\n";
    struct limits lim = {SMTP_DATA_STRICT, NO_LIMIT, NO_LIMIT, 0};
    struct result res;

    (void)state;
    run_whole(&lim, in, sizeof(in) - 1, &res);
    assert_int_equal(res.status, SMTP_DATA_DONE);
    assert_int_equal(res.cap.len, sizeof(in) - 1 - 3);
    /* the header end flushes once, the rest is the second run */
    assert_int_equal(res.cap.calls, 2);
}

/* The terminator split across calls: the bytes after it stay unconsumed. */
static void
test_split_terminator_pipelined(void **state)
{
    struct smtp_data_rx rx;
    struct capture cap;
    size_t used;

    (void)state;
    memset(&cap, 0, sizeof(cap));
    smtp_data_init(&rx, SMTP_DATA_STRICT, NO_LIMIT, NO_LIMIT, capture_sink,
                   &cap);
    assert_int_equal(smtp_data_feed(&rx, "hi\r\n.\r", 6, &used),
                     SMTP_DATA_NEED_MORE);
    assert_int_equal(used, 6);
    assert_int_equal(smtp_data_feed(&rx, "\nQUIT\r\n", 7, &used),
                     SMTP_DATA_DONE);
    assert_int_equal(used, 1);
    assert_int_equal(cap.len, 4);
    assert_memory_equal(cap.buf, "hi\r\n", 4);
    /* after DONE nothing more is taken */
    assert_int_equal(smtp_data_feed(&rx, "QUIT\r\n", 6, &used), SMTP_DATA_DONE);
    assert_int_equal(used, 0);
    assert_int_equal(cap.len, 4);
}

/* --- limits ------------------------------------------------------------ */

static void
test_size_exactly_at_limit(void **state)
{
    static const char in[] = "abcd\r\n..\r\n.\r\n"; /* 9 message bytes */
    struct limits lim = {SMTP_DATA_STRICT, 9, NO_LIMIT, 0};
    struct result res;

    (void)state;
    run_whole(&lim, in, sizeof(in) - 1, &res);
    assert_int_equal(res.status, SMTP_DATA_DONE);
    assert_int_equal(res.size, 9);
    assert_false(res.too_big);
    assert_int_equal(res.cap.len, 9);
    assert_memory_equal(res.cap.buf, "abcd\r\n.\r\n", 9);
    assert_split_invariant(&lim, in, sizeof(in) - 1, &res);
}

static void
test_size_one_over(void **state)
{
    static const char in[] = "abcd\r\n..\r\n.\r\nRSET\r\n";
    struct limits lim = {SMTP_DATA_STRICT, 8, NO_LIMIT, 0};
    struct result res;

    (void)state;
    run_whole(&lim, in, sizeof(in) - 1, &res);
    assert_int_equal(res.status, SMTP_DATA_DONE);
    assert_int_equal(res.consumed, 13);
    assert_int_equal(res.size, 9); /* counted past the limit */
    assert_true(res.too_big);
    /* the sink never got more than max_size bytes */
    assert_int_equal(res.cap.len, 8);
    assert_memory_equal(res.cap.buf, "abcd\r\n.\r", 8);
    assert_split_invariant(&lim, in, sizeof(in) - 1, &res);
}

static void
test_size_far_over(void **state)
{
    static const char in[] = "0123456789\r\n0123456789\r\n.\r\n";
    struct limits lim = {SMTP_DATA_NORMALISE, 5, NO_LIMIT, 0};
    struct result res;

    (void)state;
    run_bytewise(&lim, in, sizeof(in) - 1, &res);
    assert_int_equal(res.status, SMTP_DATA_DONE);
    assert_int_equal(res.consumed, sizeof(in) - 1);
    assert_int_equal(res.size, 24);
    assert_true(res.too_big);
    assert_int_equal(res.cap.len, 5);
    /* one byte at a time: exactly 5 calls, none after the limit */
    assert_int_equal(res.cap.calls, 5);
}

static void
test_size_zero_limit(void **state)
{
    struct limits lim = {SMTP_DATA_STRICT, 0, 0, 0};
    struct result res;

    (void)state;
    run_whole(&lim, S(".\r\n"), &res);
    assert_int_equal(res.status, SMTP_DATA_DONE);
    assert_false(res.too_big);
    assert_false(res.header_too_big);
    run_whole(&lim, S("x\r\n.\r\n"), &res);
    assert_int_equal(res.status, SMTP_DATA_DONE);
    assert_true(res.too_big);
    assert_int_equal(res.cap.calls, 0);
}

static void
test_header_limit(void **state)
{
    /* header section: "Subject: abc\r\n" + "\r\n" = 16 bytes */
    static const char in[] = "Subject: abc\r\n\r\na long body line that is "
                             "longer than the header\r\n.\r\n";
    struct limits at = {SMTP_DATA_STRICT, NO_LIMIT, 16, 0};
    struct limits over = {SMTP_DATA_STRICT, NO_LIMIT, 15, 0};
    struct result res;

    (void)state;
    run_whole(&at, in, sizeof(in) - 1, &res);
    assert_int_equal(res.header_size, 16);
    assert_false(res.header_too_big);
    assert_split_invariant(&at, in, sizeof(in) - 1, &res);

    run_whole(&over, in, sizeof(in) - 1, &res);
    assert_int_equal(res.status, SMTP_DATA_DONE);
    assert_int_equal(res.header_size, 16);
    assert_true(res.header_too_big);
    assert_false(res.too_big);
    /* still emitted in full */
    assert_int_equal(res.cap.len, sizeof(in) - 1 - 3);
    assert_memory_equal(res.cap.buf, in, res.cap.len);
    assert_split_invariant(&over, in, sizeof(in) - 1, &res);
}

static void
test_header_without_body(void **state)
{
    /* no empty line: the whole message is header */
    static const char in[] = "A: 1\r\nB: 2\r\n.\r\n";
    struct limits lim = {SMTP_DATA_STRICT, NO_LIMIT, 11, 0};
    struct result res;

    (void)state;
    run_whole(&lim, in, sizeof(in) - 1, &res);
    assert_int_equal(res.header_size, 12);
    assert_true(res.header_too_big);
    assert_split_invariant(&lim, in, sizeof(in) - 1, &res);
}

/* --- sink failure ------------------------------------------------------ */

static void
test_sink_failure(void **state)
{
    static const char in[] = "a\r\n..b\r\nc\nd\r\n.\r\nNOOP\r\n";
    struct limits lim = {SMTP_DATA_NORMALISE, NO_LIMIT, NO_LIMIT, 1};
    struct result res;
    size_t call;

    (void)state;
    run_bytewise(&lim, in, sizeof(in) - 1, &res);
    assert_int_equal(res.status, SMTP_DATA_DONE);
    assert_int_equal(res.consumed, sizeof(in) - 1 - 6);
    assert_true(res.sink_failed);
    assert_int_equal(res.cap.calls, 1);
    assert_int_equal(res.size, 13); /* "a\r\n.b\r\nc\r\nd\r\n" */

    for (call = 1; call <= 3; call++) {
        lim.fail_at_call = call;
        run_whole(&lim, in, sizeof(in) - 1, &res);
        assert_int_equal(res.status, SMTP_DATA_DONE);
        assert_int_equal(res.consumed, sizeof(in) - 1 - 6);
        assert_true(res.sink_failed);
        assert_int_equal(res.cap.calls, call);
        assert_int_equal(res.cap.calls_after_fail, 0);
    }
}

/* --- random inputs against a reference model --------------------------- */

enum { REF_REAL, REF_SOFT, REF_TEXT_EMPTY, REF_TEXT };

/*
 * The rules restated with look-ahead over the whole input: a byte whose
 * meaning depends on the next one stops the model with NEED_MORE when the
 * next one is missing.
 */
static void
reference(const struct limits *lim, const char *in, size_t n,
          struct result *res)
{
    bool strict = lim->policy == SMTP_DATA_STRICT;
    int kind = REF_REAL;
    char out[CAP_MAX];
    size_t o = 0, i = 0, header_end = (size_t)-1;
    bool line_end, empty;

    memset(res, 0, sizeof(*res));
    res->status = SMTP_DATA_NEED_MORE;
    res->consumed = n;
    while (i < n) {
        if (in[i] == '.' && (kind == REF_REAL || kind == REF_SOFT)) {
            if (i + 1 >= n)
                break;
            if (kind == REF_REAL && in[i + 1] == '\r' && i + 2 >= n)
                break;
            if (kind == REF_REAL && in[i + 1] == '\r' && in[i + 2] == '\n') {
                res->status = SMTP_DATA_DONE;
                res->consumed = i + 3;
                break;
            }
            if (kind == REF_SOFT && (in[i + 1] == '\r' || in[i + 1] == '\n')) {
                out[o++] = '.';
                kind = REF_TEXT;
            } else {
                kind = REF_TEXT_EMPTY;
            }
            i++;
            continue;
        }
        empty = kind != REF_TEXT;
        line_end = false;
        if (in[i] == '\r' && i + 1 >= n)
            break;
        if (in[i] == '\r' && in[i + 1] == '\n') {
            out[o++] = '\r';
            out[o++] = '\n';
            i += 2;
            kind = REF_REAL;
            line_end = true;
        } else if (in[i] == '\r' || in[i] == '\n') {
            if (strict) {
                res->bare_line_end = true;
                out[o++] = in[i];
                kind = REF_TEXT;
            } else {
                out[o++] = '\r';
                out[o++] = '\n';
                kind = REF_SOFT;
                line_end = true;
            }
            i++;
        } else {
            out[o++] = in[i++];
            kind = REF_TEXT;
        }
        if (line_end && empty && header_end == (size_t)-1)
            header_end = o;
    }
    res->size = o;
    res->header_size = header_end == (size_t)-1 ? o : header_end;
    res->too_big = o > lim->max_size;
    res->header_too_big = res->header_size > lim->max_header_size;
    res->cap.len = o > lim->max_size ? (size_t)lim->max_size : o;
    memcpy(res->cap.buf, out, res->cap.len);
}

static uint32_t rng_state = 12345;

static uint32_t
rng(void)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return rng_state >> 16;
}

static void
test_random_against_reference(void **state)
{
    static const char alphabet[] = {'\r', '\n', '.', 'a', '\0', '\xff'};
    char in[64];
    size_t cuts[8], n, ncuts, i, iter;
    struct limits lim;
    struct result want, got;

    (void)state;
    for (iter = 0; iter < 20000; iter++) {
        n = rng() % sizeof(in);
        for (i = 0; i < n; i++)
            in[i] = alphabet[rng() % sizeof(alphabet)];
        lim.policy = rng() % 2 ? SMTP_DATA_STRICT : SMTP_DATA_NORMALISE;
        lim.max_size = rng() % 4 ? NO_LIMIT : rng() % 40;
        lim.max_header_size = rng() % 2 ? NO_LIMIT : rng() % 20;
        lim.fail_at_call = 0;
        ncuts = n > 0 ? rng() % 8 : 0;
        for (i = 0; i < ncuts; i++)
            cuts[i] = rng() % (n + 1);
        /* ascending cut points */
        for (i = 1; i < ncuts; i++) {
            size_t j = i, v = cuts[i];

            while (j > 0 && cuts[j - 1] > v) {
                cuts[j] = cuts[j - 1];
                j--;
            }
            cuts[j] = v;
        }
        reference(&lim, in, n, &want);
        run_cuts(&lim, in, n, cuts, ncuts, &got);
        assert_same_result(&want, &got);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_runs_not_bytes),
        cmocka_unit_test(test_split_terminator_pipelined),
        cmocka_unit_test(test_size_exactly_at_limit),
        cmocka_unit_test(test_size_one_over),
        cmocka_unit_test(test_size_far_over),
        cmocka_unit_test(test_size_zero_limit),
        cmocka_unit_test(test_header_limit),
        cmocka_unit_test(test_header_without_body),
        cmocka_unit_test(test_sink_failure),
        cmocka_unit_test(test_random_against_reference),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
