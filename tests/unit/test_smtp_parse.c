/*
 * test_smtp_parse.c - unit tests for core/smtp_parse.c: line framing
 * (partial, pipelined, over-long, byte-at-a-time against whole-buffer
 * feeding), verb recognition, MAIL/RCPT paths, ESMTP parameters, HELO
 * names, address literals and BDAT arguments, with real-world and hostile
 * inputs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp_parse.h"

/* String literal with its length, embedded NULs included. */
#define S(lit) (lit), (sizeof(lit) - 1)

/* --- helpers --- */

/*
 * Append one framing result to a transcript: OK[line], LF[line] or LONG,
 * with bytes outside printable ASCII (and '[', ']', '\\') as \xNN.
 */
static void
transcript_add(char *t, size_t cap, smtp_line_status st, const char *line,
               size_t len)
{
    size_t n = strlen(t);

    assert_true(st != SMTP_LINE_NEED_MORE);
    if (st == SMTP_LINE_TOO_LONG) {
        n += (size_t)snprintf(t + n, cap - n, "LONG ");
        assert_true(n < cap);
        return;
    }
    n += (size_t)snprintf(t + n, cap - n, "%s[",
                          st == SMTP_LINE_OK ? "OK" : "LF");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)line[i];

        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '[' && c != ']')
            n += (size_t)snprintf(t + n, cap - n, "%c", c);
        else
            n += (size_t)snprintf(t + n, cap - n, "\\x%02X", c);
        assert_true(n < cap);
    }
    n += (size_t)snprintf(t + n, cap - n, "] ");
    assert_true(n < cap);
}

/*
 * Play a caller: a read buffer of cap bytes, reads of at most chunk bytes,
 * unconsumed bytes kept at the front. Records every result but NEED_MORE
 * in t, and checks the framer's promises on the way: consumed never
 * exceeds the buffer, lines lie inside it and fit max_len, and after
 * NEED_MORE at most max_len + 1 bytes stay (so max_len + 2 bytes always
 * leave room to read). Returns the bytes left pending at the end.
 */
static size_t
feed(const char *in, size_t in_len, size_t max_len, size_t cap, size_t chunk,
     char *t, size_t tcap)
{
    struct smtp_line_parser p;
    char *buf = malloc(cap);
    size_t have = 0, pos = 0;

    assert_non_null(buf);
    t[0] = '\0';
    smtp_line_init(&p, max_len);
    while (pos < in_len) {
        size_t n = in_len - pos;

        assert_true(have < cap); /* there is always room to read */
        if (n > chunk)
            n = chunk;
        if (n > cap - have)
            n = cap - have;
        memcpy(buf + have, in + pos, n);
        have += n;
        pos += n;
        for (;;) {
            const char *line;
            size_t line_len, consumed;
            smtp_line_status st =
                smtp_line_next(&p, buf, have, &consumed, &line, &line_len);

            assert_true(consumed <= have);
            if (st == SMTP_LINE_OK || st == SMTP_LINE_BARE_LF) {
                assert_ptr_equal(line, buf);
                assert_true(line_len <= max_len);
                assert_true(line_len < consumed);
            }
            if (st != SMTP_LINE_NEED_MORE)
                transcript_add(t, tcap, st, line, line_len);
            memmove(buf, buf + consumed, have - consumed);
            have -= consumed;
            if (st == SMTP_LINE_NEED_MORE) {
                assert_true(have <= max_len + 1);
                break;
            }
        }
    }
    free(buf);
    return have;
}

/* One call on a fixed buffer, checking the status and consumed count. */
static void
expect_line(struct smtp_line_parser *p, const char *buf, size_t len,
            smtp_line_status want, size_t want_consumed, const char *want_line,
            size_t want_line_len)
{
    const char *line = (const char *)1;
    size_t line_len = 99, consumed = 99;

    assert_int_equal(smtp_line_next(p, buf, len, &consumed, &line, &line_len),
                     want);
    assert_int_equal(consumed, want_consumed);
    if (want == SMTP_LINE_OK || want == SMTP_LINE_BARE_LF) {
        assert_ptr_equal(line, buf);
        assert_int_equal(line_len, want_line_len);
        assert_memory_equal(line, want_line, want_line_len);
    } else {
        assert_null(line);
        assert_int_equal(line_len, 0);
    }
}

/* --- 1. line framing --- */

static void
test_line_crlf_and_bare_lf(void **state)
{
    struct smtp_line_parser p;

    (void)state;
    smtp_line_init(&p, 512);
    assert_int_equal(p.max_len, 512);
    assert_int_equal(p.scanned, 0);
    assert_false(p.discarding);
    expect_line(&p, S("EHLO mail.example.com\r\n"), SMTP_LINE_OK, 23,
                S("EHLO mail.example.com"));
    expect_line(&p, S("NOOP\n"), SMTP_LINE_BARE_LF, 5, S("NOOP"));
    expect_line(&p, S("\r\n"), SMTP_LINE_OK, 2, S(""));
    expect_line(&p, S("\n"), SMTP_LINE_BARE_LF, 1, S(""));
    /* Only the CR right before the LF belongs to the terminator. */
    expect_line(&p, S("\r\r\n"), SMTP_LINE_OK, 3, S("\r"));
    expect_line(&p, S("a\rb\n"), SMTP_LINE_BARE_LF, 4, S("a\rb"));
    expect_line(&p, S("\n\r\n"), SMTP_LINE_BARE_LF, 1, S(""));
}

static void
test_line_nul_and_cr_are_bytes(void **state)
{
    struct smtp_line_parser p;

    (void)state;
    smtp_line_init(&p, 512);
    expect_line(&p, S("MA\0IL FROM:<a@b>\r\n"), SMTP_LINE_OK, 18,
                S("MA\0IL FROM:<a@b>"));
    expect_line(&p, S("\0\0\0\r\n"), SMTP_LINE_OK, 5, S("\0\0\0"));
    expect_line(&p, S("DATA\r\r\r\n"), SMTP_LINE_OK, 8, S("DATA\r\r"));
    /* A lone CR is no line end. */
    expect_line(&p, S("RSET\rQUIT\r"), SMTP_LINE_NEED_MORE, 0, NULL, 0);
}

static void
test_line_need_more_and_scanned(void **state)
{
    struct smtp_line_parser p;
    const char *full = "MAIL FROM:<user@example.com>\r\nRC";

    (void)state;
    smtp_line_init(&p, 512);
    expect_line(&p, NULL, 0, SMTP_LINE_NEED_MORE, 0, NULL, 0);
    expect_line(&p, full, 4, SMTP_LINE_NEED_MORE, 0, NULL, 0);
    assert_int_equal(p.scanned, 4);
    expect_line(&p, full, 28, SMTP_LINE_NEED_MORE, 0, NULL, 0);
    assert_int_equal(p.scanned, 28);
    /* The CR is there, the LF not yet. */
    expect_line(&p, full, 29, SMTP_LINE_NEED_MORE, 0, NULL, 0);
    assert_int_equal(p.scanned, 29);
    expect_line(&p, full, 32, SMTP_LINE_OK, 30,
                S("MAIL FROM:<user@example.com>"));
    assert_int_equal(p.scanned, 0);
    expect_line(&p, full + 30, 2, SMTP_LINE_NEED_MORE, 0, NULL, 0);
    assert_int_equal(p.scanned, 2);
}

static void
test_line_scanned_bytes_not_searched_again(void **state)
{
    struct smtp_line_parser p;
    const char *line;
    size_t consumed, line_len;
    char buf[] = "NOOP\r\n";

    (void)state;
    smtp_line_init(&p, 512);
    expect_line(&p, buf, 3, SMTP_LINE_NEED_MORE, 0, NULL, 0);
    assert_int_equal(p.scanned, 3);
    /*
     * Overwrite a byte that was already searched with an LF: a framer that
     * searched from the start again would cut the line there.
     */
    buf[1] = '\n';
    assert_int_equal(smtp_line_next(&p, buf, 6, &consumed, &line, &line_len),
                     SMTP_LINE_OK);
    assert_int_equal(consumed, 6);
    assert_int_equal(line_len, 4);
    /* A caller that shrinks the buffer below scanned gets a full search. */
    smtp_line_init(&p, 512);
    expect_line(&p, S("abcdef"), SMTP_LINE_NEED_MORE, 0, NULL, 0);
    expect_line(&p, S("a\n"), SMTP_LINE_BARE_LF, 2, S("a"));
}

static void
test_line_pipelined(void **state)
{
    struct smtp_line_parser p;
    const char *in = "MAIL FROM:<a@example.org>\r\n"
                     "RCPT TO:<b@example.net>\r\n"
                     "RCPT TO:<c@example.net>\n"
                     "DATA\r\n"
                     "QU";
    size_t len = strlen(in), off = 0, consumed, line_len;
    const char *line;
    static const char *const want[] = {"MAIL FROM:<a@example.org>",
                                       "RCPT TO:<b@example.net>",
                                       "RCPT TO:<c@example.net>", "DATA"};
    static const smtp_line_status want_st[] = {SMTP_LINE_OK, SMTP_LINE_OK,
                                               SMTP_LINE_BARE_LF, SMTP_LINE_OK};

    (void)state;
    smtp_line_init(&p, 512);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(smtp_line_next(&p, in + off, len - off, &consumed,
                                        &line, &line_len),
                         want_st[i]);
        assert_int_equal(line_len, strlen(want[i]));
        assert_memory_equal(line, want[i], line_len);
        assert_ptr_equal(line, in + off);
        off += consumed;
    }
    assert_int_equal(
        smtp_line_next(&p, in + off, len - off, &consumed, &line, &line_len),
        SMTP_LINE_NEED_MORE);
    assert_int_equal(consumed, 0);
    assert_int_equal(len - off, 2);
}

static void
test_line_max_len_boundaries(void **state)
{
    struct smtp_line_parser p;

    (void)state;
    smtp_line_init(&p, 8);
    /* exactly max_len plus CRLF or LF: fine */
    expect_line(&p, S("12345678\r\n"), SMTP_LINE_OK, 10, S("12345678"));
    expect_line(&p, S("12345678\n"), SMTP_LINE_BARE_LF, 9, S("12345678"));
    /* max_len + 1 in one buffer: too long, consumed with its terminator */
    expect_line(&p, S("123456789\r\n"), SMTP_LINE_TOO_LONG, 11, NULL, 0);
    expect_line(&p, S("123456789\n"), SMTP_LINE_TOO_LONG, 10, NULL, 0);
    /* the CR before the LF does not count, but another CR does */
    expect_line(&p, S("12345678\r\r\n"), SMTP_LINE_TOO_LONG, 11, NULL, 0);
    assert_false(p.discarding);

    /* max_len bytes and a CR waiting for the LF: keep waiting */
    expect_line(&p, S("12345678\r"), SMTP_LINE_NEED_MORE, 0, NULL, 0);
    assert_false(p.discarding);
    expect_line(&p, S("12345678\r\n"), SMTP_LINE_OK, 10, S("12345678"));
    /* max_len bytes with no CR: still possible */
    expect_line(&p, S("12345678"), SMTP_LINE_NEED_MORE, 0, NULL, 0);
    assert_false(p.discarding);
    /* max_len + 1 bytes that are not max_len + CR: hopeless, dropped */
    expect_line(&p, S("123456789"), SMTP_LINE_NEED_MORE, 9, NULL, 0);
    assert_true(p.discarding);
    expect_line(&p, S("\r\n"), SMTP_LINE_TOO_LONG, 2, NULL, 0);
    assert_false(p.discarding);
    /* max_len + CR + another byte */
    expect_line(&p, S("12345678\rx"), SMTP_LINE_NEED_MORE, 10, NULL, 0);
    assert_true(p.discarding);
    expect_line(&p, S("\n"), SMTP_LINE_TOO_LONG, 1, NULL, 0);
}

static void
test_line_too_long_discarding(void **state)
{
    struct smtp_line_parser p;

    (void)state;
    smtp_line_init(&p, 8);
    expect_line(&p, S("0123456789"), SMTP_LINE_NEED_MORE, 10, NULL, 0);
    assert_true(p.discarding);
    assert_int_equal(p.scanned, 0);
    expect_line(&p, S("abc\r"), SMTP_LINE_NEED_MORE, 4, NULL, 0);
    assert_true(p.discarding);
    expect_line(&p, NULL, 0, SMTP_LINE_NEED_MORE, 0, NULL, 0);
    assert_true(p.discarding);
    /* The LF ends it: TOO_LONG once, then normal lines again. */
    expect_line(&p, S("xyz\r\nNOOP\r\n"), SMTP_LINE_TOO_LONG, 5, NULL, 0);
    assert_false(p.discarding);
    expect_line(&p, S("NOOP\r\n"), SMTP_LINE_OK, 6, S("NOOP"));
    /* A line ending right where discarding starts: just the LF is left. */
    expect_line(&p, S("0123456789"), SMTP_LINE_NEED_MORE, 10, NULL, 0);
    expect_line(&p, S("\nQUIT\r\n"), SMTP_LINE_TOO_LONG, 1, NULL, 0);
    expect_line(&p, S("QUIT\r\n"), SMTP_LINE_OK, 6, S("QUIT"));
}

static void
test_line_too_long_whole_buffer(void **state)
{
    struct smtp_line_parser p;
    char big[5000];

    (void)state;
    memset(big, 'A', sizeof big);
    big[4998] = '\r';
    big[4999] = '\n';
    smtp_line_init(&p, 512);
    expect_line(&p, big, sizeof big, SMTP_LINE_TOO_LONG, sizeof big, NULL, 0);
    assert_false(p.discarding);
    /* Same without the LF: all dropped at once. */
    expect_line(&p, big, 4999, SMTP_LINE_NEED_MORE, 4999, NULL, 0);
    assert_true(p.discarding);
    expect_line(&p, S("\nRSET\r\n"), SMTP_LINE_TOO_LONG, 1, NULL, 0);
}

static void
test_line_max_len_zero(void **state)
{
    struct smtp_line_parser p;

    (void)state;
    smtp_line_init(&p, 0);
    expect_line(&p, S("\r"), SMTP_LINE_NEED_MORE, 0, NULL, 0);
    expect_line(&p, S("\r\n"), SMTP_LINE_OK, 2, S(""));
    expect_line(&p, S("\n"), SMTP_LINE_BARE_LF, 1, S(""));
    expect_line(&p, S("a"), SMTP_LINE_NEED_MORE, 1, NULL, 0);
    expect_line(&p, S("\n"), SMTP_LINE_TOO_LONG, 1, NULL, 0);
}

/*
 * Golden streams for max_len 10: the transcript must be the same whether
 * the stream arrives whole, byte by byte, or in chunks, through a caller
 * buffer of max_len + 2 bytes or a large one.
 */
static const struct {
    const char *in;
    size_t len;
    const char *want;
} golden[] = {
    {S("EHLO a\r\nMAIL\r\n"), "OK[EHLO a] OK[MAIL] "},
    {S("NOOP\nQUIT\r\n"), "LF[NOOP] OK[QUIT] "},
    {S("0123456789\r\n"), "OK[0123456789] "},
    {S("0123456789\n"), "LF[0123456789] "},
    {S("0123456789A\r\nX\r\n"), "LONG OK[X] "},
    {S("0123456789A\nX\n"), "LONG LF[X] "},
    {S("0123456789\r\r\n"), "LONG "},
    {S("0123456789\r0123456789\r\nY\r\n"), "LONG OK[Y] "},
    {S("01234567890123456789012345678901234\r\nNOOP\n"), "LONG LF[NOOP] "},
    {S("a\rb\r\n"), "OK[a\\x0Db] "},
    {S("\r\n\n\r\r\n"), "OK[] LF[] OK[\\x0D] "},
    {S("x\0y\r\n"), "OK[x\\x00y] "},
    {S("\r\r\r\r\r\r\r\r\r\r\r\r\n"), "LONG "},
    {S("\r\r\r\r\r\r\r\r\r\r\r\n"), "OK[\\x0D\\x0D\\x0D\\x0D\\x0D\\x0D\\x0D"
                                    "\\x0D\\x0D\\x0D] "},
    {S("partial"), ""},
    {S("0123456789\r"), ""},
    {S("0123456789ABCDEF"), ""},
    {S("RSET\r\nRSET\r\nRSET\r\nRSET\r\nRSET\r\nRSET\r\n"),
     "OK[RSET] OK[RSET] OK[RSET] OK[RSET] OK[RSET] OK[RSET] "},
    {S("AAAAAAAAAAAAAAAAAAAA\nB\r\nCCCCCCCCCCCCCCCCCCCC\r\n\nDDDDDDDDDD\r\n"),
     "LONG OK[B] LONG LF[] OK[DDDDDDDDDD] "},
    {S("\xff\xfe\x80\r\n\x01\x02\r\n"), "OK[\\xFF\\xFE\\x80] OK[\\x01\\x02] "},
    {S("HELO x\r\n\r\n\r\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
       "AAAAAAAAAAAAAAAAAAAAAA\r\nQUIT\r\n"),
     "OK[HELO x] OK[] OK[] LONG OK[QUIT] "},
};

static void
test_line_golden_chunking(void **state)
{
    static const size_t chunks[] = {1, 2, 3, 5, 7, 11, 13, 64, 100000};
    char t[1024];

    (void)state;
    for (size_t g = 0; g < sizeof golden / sizeof *golden; g++) {
        for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++) {
            /* a tight caller buffer of max_len + 2, and a roomy one */
            feed(golden[g].in, golden[g].len, 10, 12, chunks[c], t, sizeof t);
            if (strcmp(t, golden[g].want) != 0)
                fail_msg("golden %zu chunk %zu cap 12: got '%s' want '%s'", g,
                         chunks[c], t, golden[g].want);
            feed(golden[g].in, golden[g].len, 10, 100000, chunks[c], t,
                 sizeof t);
            if (strcmp(t, golden[g].want) != 0)
                fail_msg("golden %zu chunk %zu cap big: got '%s' want '%s'", g,
                         chunks[c], t, golden[g].want);
        }
    }
}

static void
test_line_random_stream_chunking(void **state)
{
    char in[4000], whole[40000], part[40000];
    uint32_t seed = 12345;

    (void)state;
    /* A pseudo-random stream rich in CR, LF and long runs. */
    for (size_t i = 0; i < sizeof in; i++) {
        seed = seed * 1103515245u + 12345u;
        switch ((seed >> 16) % 16) {
        case 0:
            in[i] = '\r';
            break;
        case 1:
            in[i] = '\n';
            break;
        case 2:
            in[i] = '\0';
            break;
        default:
            in[i] = (char)('a' + (seed >> 8) % 26);
        }
    }
    for (size_t max_len = 0; max_len < 40; max_len += 3) {
        feed(in, sizeof in, max_len, sizeof in, sizeof in, whole, sizeof whole);
        assert_true(strlen(whole) > 0);
        for (size_t chunk = 1; chunk < 20; chunk += 3) {
            feed(in, sizeof in, max_len, max_len + 2, chunk, part, sizeof part);
            assert_string_equal(part, whole);
        }
    }
}

/* --- 2. verbs --- */

static void
expect_cmd(const char *line, size_t len, smtp_verb want, const char *want_arg,
           size_t want_arg_len)
{
    struct smtp_command cmd;

    memset(&cmd, 0x55, sizeof cmd);
    assert_int_equal(smtp_command_parse(line, len, &cmd), want);
    assert_int_equal(cmd.verb, want);
    assert_int_equal(cmd.arg_len, want_arg_len);
    assert_true(cmd.arg >= line && cmd.arg + cmd.arg_len <= line + len);
    assert_memory_equal(cmd.arg, want_arg, want_arg_len);
}

static void
test_command_verbs(void **state)
{
    static const struct {
        const char *name;
        smtp_verb verb;
    } verbs[] = {
        {"HELO", SMTP_VERB_HELO},         {"EHLO", SMTP_VERB_EHLO},
        {"MAIL", SMTP_VERB_MAIL},         {"RCPT", SMTP_VERB_RCPT},
        {"DATA", SMTP_VERB_DATA},         {"BDAT", SMTP_VERB_BDAT},
        {"RSET", SMTP_VERB_RSET},         {"NOOP", SMTP_VERB_NOOP},
        {"QUIT", SMTP_VERB_QUIT},         {"VRFY", SMTP_VERB_VRFY},
        {"EXPN", SMTP_VERB_EXPN},         {"HELP", SMTP_VERB_HELP},
        {"STARTTLS", SMTP_VERB_STARTTLS}, {"AUTH", SMTP_VERB_AUTH},
    };
    char buf[64];

    (void)state;
    for (size_t i = 0; i < sizeof verbs / sizeof *verbs; i++) {
        size_t n = strlen(verbs[i].name);

        /* bare, lower case, mixed case, with an argument */
        expect_cmd(verbs[i].name, n, verbs[i].verb, "", 0);
        for (size_t j = 0; j < n; j++)
            buf[j] = (char)(verbs[i].name[j] | 0x20);
        expect_cmd(buf, n, verbs[i].verb, "", 0);
        for (size_t j = 0; j < n; j += 2)
            buf[j] = verbs[i].name[j];
        expect_cmd(buf, n, verbs[i].verb, "", 0);
        snprintf(buf, sizeof buf, "%s  some arg  ", verbs[i].name);
        expect_cmd(buf, strlen(buf), verbs[i].verb, S("some arg"));
        /* one byte more or less is another word */
        snprintf(buf, sizeof buf, "%sX", verbs[i].name);
        expect_cmd(buf, n + 1, SMTP_VERB_UNKNOWN, "", 0);
        expect_cmd(verbs[i].name, n - 1, SMTP_VERB_UNKNOWN, "", 0);
    }
}

static void
test_command_args(void **state)
{
    (void)state;
    expect_cmd(S("EHLO mail.example.com"), SMTP_VERB_EHLO,
               S("mail.example.com"));
    expect_cmd(S("EHLO    mail.example.com \t \t"), SMTP_VERB_EHLO,
               S("mail.example.com"));
    expect_cmd(S("MAIL FROM:<a@b> SIZE=10"), SMTP_VERB_MAIL,
               S("FROM:<a@b> SIZE=10"));
    expect_cmd(S("mail from: <a@b>"), SMTP_VERB_MAIL, S("from: <a@b>"));
    expect_cmd(S("DATA   "), SMTP_VERB_DATA, S(""));
    expect_cmd(S("QUIT \t"), SMTP_VERB_QUIT, S(""));
    expect_cmd(S("AUTH PLAIN AGpvZQBzZWNyZXQ="), SMTP_VERB_AUTH,
               S("PLAIN AGpvZQBzZWNyZXQ="));
    expect_cmd(S("BDAT 100 LAST"), SMTP_VERB_BDAT, S("100 LAST"));
    /* a NUL is just a byte */
    expect_cmd(S("NOOP \0"), SMTP_VERB_NOOP, S("\0"));
    expect_cmd(S("NOOP a\0b"), SMTP_VERB_NOOP, S("a\0b"));
    expect_cmd(S("NO\0OP"), SMTP_VERB_UNKNOWN, S(""));
    expect_cmd(S("NOOP\0"), SMTP_VERB_UNKNOWN, S(""));
    /* inner tabs and CRs stay in the argument */
    expect_cmd(S("HELP a\tb\rc"), SMTP_VERB_HELP, S("a\tb\rc"));
}

static void
test_command_unknown(void **state)
{
    struct smtp_command cmd;

    (void)state;
    expect_cmd(S(""), SMTP_VERB_UNKNOWN, S(""));
    expect_cmd(S("   "), SMTP_VERB_UNKNOWN, S(""));
    expect_cmd(S(" NOOP"), SMTP_VERB_UNKNOWN, S("NOOP"));
    expect_cmd(S("NOOP\t"), SMTP_VERB_UNKNOWN, S(""));
    expect_cmd(S("MAIL\tFROM:<a@b>"), SMTP_VERB_UNKNOWN, S(""));
    expect_cmd(S("MAILX FROM:<a@b>"), SMTP_VERB_UNKNOWN, S("FROM:<a@b>"));
    expect_cmd(S("MAI"), SMTP_VERB_UNKNOWN, S(""));
    expect_cmd(S("XCLIENT ADDR=1.2.3.4"), SMTP_VERB_UNKNOWN, S("ADDR=1.2.3.4"));
    expect_cmd(S("GET / HTTP/1.1"), SMTP_VERB_UNKNOWN, S("/ HTTP/1.1"));
    expect_cmd(S("STARTTLSX"), SMTP_VERB_UNKNOWN, S(""));
    expect_cmd(S("START TLS"), SMTP_VERB_UNKNOWN, S("TLS"));
    expect_cmd(S("\xc5\x92HLO x"), SMTP_VERB_UNKNOWN, S("x"));
    assert_int_equal(smtp_command_parse(NULL, 0, &cmd), SMTP_VERB_UNKNOWN);
    assert_int_equal(cmd.arg_len, 0);
    assert_non_null(cmd.arg);
}

/* --- 3. paths --- */

static void
expect_mail(const char *arg, size_t len, smtp_path_status want,
            const char *addr, const char *params, bool non_ascii)
{
    struct smtp_path out;
    smtp_path_status st = smtp_parse_mail_arg(arg, len, &out);

    if (st != want)
        fail_msg("MAIL '%.*s': status %d, want %d", (int)len, arg, st, want);
    if (want != SMTP_PATH_OK)
        return;
    assert_int_equal(out.addr_len, strlen(addr));
    assert_memory_equal(out.addr, addr, out.addr_len);
    assert_true(out.addr >= arg && out.addr + out.addr_len <= arg + len);
    assert_int_equal(out.params_len, strlen(params));
    assert_memory_equal(out.params, params, out.params_len);
    assert_true(out.params >= arg && out.params + out.params_len <= arg + len);
    assert_int_equal(out.non_ascii, non_ascii);
    assert_false(out.postmaster);
}

static void
expect_rcpt(const char *arg, size_t len, smtp_path_status want,
            const char *addr, const char *params, bool non_ascii,
            bool postmaster)
{
    struct smtp_path out;
    smtp_path_status st = smtp_parse_rcpt_arg(arg, len, &out);

    if (st != want)
        fail_msg("RCPT '%.*s': status %d, want %d", (int)len, arg, st, want);
    if (want != SMTP_PATH_OK)
        return;
    assert_int_equal(out.addr_len, strlen(addr));
    assert_memory_equal(out.addr, addr, out.addr_len);
    assert_true(out.addr >= arg && out.addr + out.addr_len <= arg + len);
    assert_int_equal(out.params_len, strlen(params));
    assert_memory_equal(out.params, params, out.params_len);
    assert_int_equal(out.non_ascii, non_ascii);
    assert_int_equal(out.postmaster, postmaster);
}

#define MAIL_OK(a, addr, params)                                               \
    expect_mail(S(a), SMTP_PATH_OK, addr, params, false)
#define MAIL_ST(a, st) expect_mail(S(a), st, NULL, NULL, false)

static void
test_mail_ok(void **state)
{
    (void)state;
    MAIL_OK("FROM:<user@example.com>", "user@example.com", "");
    MAIL_OK("from:<user@example.com>", "user@example.com", "");
    MAIL_OK("FrOm:<User@Example.COM>", "User@Example.COM", "");
    MAIL_OK("FROM: <user@example.com>", "user@example.com", "");
    MAIL_OK("FROM:    <user@example.com>", "user@example.com", "");
    MAIL_OK("FROM:<>", "", "");
    MAIL_OK("FROM: <>", "", "");
    MAIL_OK("FROM:<> SIZE=1000 BODY=8BITMIME", "", "SIZE=1000 BODY=8BITMIME");
    MAIL_OK("FROM:<a@b>   SIZE=1  \t ", "a@b", "SIZE=1");
    MAIL_OK("FROM:<a@b>   ", "a@b", "");
    MAIL_OK("FROM:<a@b> ", "a@b", "");
    MAIL_OK("FROM:<a@localhost>", "a@localhost", "");
    MAIL_OK("FROM:<first.last+tag@sub.example.co.uk>",
            "first.last+tag@sub.example.co.uk", "");
    MAIL_OK("FROM:<!#$%&'*+-/=?^_`{|}~@example.com>",
            "!#$%&'*+-/=?^_`{|}~@example.com", "");
    MAIL_OK("FROM:<bounce-123=user=example.org@lists.example.net>",
            "bounce-123=user=example.org@lists.example.net", "");
    MAIL_OK("FROM:<a@my_host.example>", "a@my_host.example", "");
    MAIL_OK("FROM:<a@x-1.example>", "a@x-1.example", "");
    MAIL_OK("FROM:<a@123.example>", "a@123.example", "");
    /* quoted local parts */
    MAIL_OK("FROM:<\"john doe\"@example.com>", "\"john doe\"@example.com", "");
    MAIL_OK("FROM:<\"a\\\"b\\\\c\"@example.com>", "\"a\\\"b\\\\c\"@example.com",
            "");
    MAIL_OK("FROM:<\"\"@example.com>", "\"\"@example.com", "");
    MAIL_OK("FROM:<\"a@b<>,:;\"@example.com>", "\"a@b<>,:;\"@example.com", "");
    /* source routes are dropped */
    MAIL_OK("FROM:<@a.example,@b.example:user@c.example>", "user@c.example",
            "");
    MAIL_OK("FROM:<@a.example:user@c.example> AUTH=<>", "user@c.example",
            "AUTH=<>");
    /* address literals */
    MAIL_OK("FROM:<user@[192.0.2.1]>", "user@[192.0.2.1]", "");
    MAIL_OK("FROM:<user@[IPv6:2001:db8::1]>", "user@[IPv6:2001:db8::1]", "");
    MAIL_OK("FROM:<user@[ipv6:::ffff:192.0.2.1]>",
            "user@[ipv6:::ffff:192.0.2.1]", "");
    /* UTF-8 */
    expect_mail(S("FROM:<jos\xc3\xa9@example.com>"), SMTP_PATH_OK,
                "jos\xc3\xa9@example.com", "", true);
    expect_mail(S("FROM:<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90."
                  "\xe5\xb9\xbf\xe5\x91\x8a> SMTPUTF8"),
                SMTP_PATH_OK,
                "\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90."
                "\xe5\xb9\xbf\xe5\x91\x8a",
                "SMTPUTF8", true);
    expect_mail(S("FROM:<a@b\xc3\xbc\x63her.example>"), SMTP_PATH_OK,
                "a@b\xc3\xbc\x63her.example", "", true);
    expect_mail(S("FROM:<\"\xf0\x9f\x93\xa7 mail\"@example.com>"), SMTP_PATH_OK,
                "\"\xf0\x9f\x93\xa7 mail\"@example.com", "", true);
}

static void
test_mail_no_keyword(void **state)
{
    struct smtp_path out;

    (void)state;
    MAIL_ST("", SMTP_PATH_NO_KEYWORD);
    MAIL_ST("FROM", SMTP_PATH_NO_KEYWORD);
    MAIL_ST("FRO:<a@b>", SMTP_PATH_NO_KEYWORD);
    MAIL_ST("TO:<a@b>", SMTP_PATH_NO_KEYWORD);
    MAIL_ST("FROM <a@b>", SMTP_PATH_NO_KEYWORD);
    MAIL_ST("FROM :<a@b>", SMTP_PATH_NO_KEYWORD);
    MAIL_ST("<a@b>", SMTP_PATH_NO_KEYWORD);
    MAIL_ST(" FROM:<a@b>", SMTP_PATH_NO_KEYWORD);
    MAIL_ST("FROM;<a@b>", SMTP_PATH_NO_KEYWORD);
    MAIL_ST("FR\0M:<a@b>", SMTP_PATH_NO_KEYWORD);
    assert_int_equal(smtp_parse_mail_arg(NULL, 0, &out), SMTP_PATH_NO_KEYWORD);
}

static void
test_mail_syntax(void **state)
{
    (void)state;
    MAIL_ST("FROM:", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:   ", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:a@b", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:a@b>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a@b", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a@b>x", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a@b>,<c@d>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a@b><c@d>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a@b>\tSIZE=1", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<>x", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<<a@b>>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:\t<a@b>", SMTP_PATH_SYNTAX);
    /* spaces inside the path */
    MAIL_ST("FROM:< a@b>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a @b>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a@ b>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a@b >", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:< >", SMTP_PATH_SYNTAX);
    /* local parts */
    MAIL_ST("FROM:<a>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<@b>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a..b@c>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<.a@c>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a.@c>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a(b)@c>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a,b@c>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a\"b\"@c>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a@b@c>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a\0b@c>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a\rb@c>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<Postmaster>", SMTP_PATH_SYNTAX); /* RCPT only */
    /* quoted strings */
    MAIL_ST("FROM:<\"unterminated@b>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<\"a\x01\"@b>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<\"a\x7f\"@b>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<\"a\\\x01\"@b>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<\"a\\", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<\"a\"b@c>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<\"a\".b@c>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<\"a\0\"@b>", SMTP_PATH_SYNTAX);
    /* domains */
    MAIL_ST("FROM:<a@>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a@b..c>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a@.b>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a@b.>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a@-b>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a@b->", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a@b.-c.d>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a@b!c>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a@[300.1.1.1]>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a@[1.2.3]>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a@[IPv6:zz::1]>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a@[192.0.2.1>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a@[192.0.2.1]x>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a@[]>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a@[tag:content]>", SMTP_PATH_SYNTAX);
    /* source routes */
    MAIL_ST("FROM:<@a:>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<@:a@b>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<@a,b:c@d>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<@a,:c@d>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<@a@b>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<@a.example:user@c.example", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<@a;c@d>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<@", SMTP_PATH_SYNTAX);
    /* malformed UTF-8 */
    MAIL_ST("FROM:<\xc3@b>", SMTP_PATH_SYNTAX);             /* truncated */
    MAIL_ST("FROM:<\x80@b>", SMTP_PATH_SYNTAX);             /* lone trail */
    MAIL_ST("FROM:<\xc0\xaf@b>", SMTP_PATH_SYNTAX);         /* overlong */
    MAIL_ST("FROM:<\xe0\x80\xaf@b>", SMTP_PATH_SYNTAX);     /* overlong */
    MAIL_ST("FROM:<\xed\xa0\x80@b>", SMTP_PATH_SYNTAX);     /* surrogate */
    MAIL_ST("FROM:<\xf4\x90\x80\x80@b>", SMTP_PATH_SYNTAX); /* > 10FFFF */
    MAIL_ST("FROM:<\xf5\x80\x80\x80@b>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<\xff@b>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a@b\xc3>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a@\xe4\xbe>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<\"\xc3\"@b>", SMTP_PATH_SYNTAX);
    MAIL_ST("FROM:<a@[\xc3\xa9]>", SMTP_PATH_SYNTAX);
}

/* Build "FROM:<" local "@" domain ">" from repeated characters. */
static size_t
make_path(char *buf, size_t cap, const char *kw, size_t local, size_t domain)
{
    size_t n = (size_t)snprintf(buf, cap, "%s<", kw);

    assert_true(n + local + domain + 3 < cap);
    memset(buf + n, 'l', local);
    n += local;
    buf[n++] = '@';
    /* labels of 9 'd' then a dot, ending in a letter */
    for (size_t i = 0; i < domain; i++)
        buf[n++] = (i % 10 == 9 && i + 1 < domain) ? '.' : 'd';
    buf[n++] = '>';
    buf[n] = '\0';
    return n;
}

static void
test_path_too_long(void **state)
{
    char buf[2048];
    size_t n;
    struct smtp_path out;

    (void)state;
    /* local part: 64 fine, 65 too long (dot-string and quoted) */
    n = make_path(buf, sizeof buf, "FROM:", 64, 10);
    assert_int_equal(smtp_parse_mail_arg(buf, n, &out), SMTP_PATH_OK);
    assert_int_equal(out.addr_len, 64 + 1 + 10);
    n = make_path(buf, sizeof buf, "FROM:", 65, 10);
    assert_int_equal(smtp_parse_mail_arg(buf, n, &out), SMTP_PATH_TOO_LONG);
    n = make_path(buf, sizeof buf, "TO:", 65, 10);
    assert_int_equal(smtp_parse_rcpt_arg(buf, n, &out), SMTP_PATH_TOO_LONG);
    n = make_path(buf, sizeof buf, "FROM:", 1000, 10);
    assert_int_equal(smtp_parse_mail_arg(buf, n, &out), SMTP_PATH_TOO_LONG);
    n = make_path(buf, sizeof buf, "FROM:", 64, 10);
    buf[6] = '"';
    buf[6 + 63] = '"';
    assert_int_equal(smtp_parse_mail_arg(buf, n, &out), SMTP_PATH_OK);
    n = make_path(buf, sizeof buf, "FROM:", 65, 10);
    buf[6] = '"';
    buf[6 + 64] = '"';
    assert_int_equal(smtp_parse_mail_arg(buf, n, &out), SMTP_PATH_TOO_LONG);

    /* whole path incl. <>: 256 fine, 257 too long */
    n = make_path(buf, sizeof buf, "FROM:", 64, 189);
    assert_int_equal(smtp_parse_mail_arg(buf, n, &out), SMTP_PATH_OK);
    assert_int_equal(out.addr_len, 254);
    n = make_path(buf, sizeof buf, "FROM:", 64, 190);
    assert_int_equal(smtp_parse_mail_arg(buf, n, &out), SMTP_PATH_TOO_LONG);
    n = make_path(buf, sizeof buf, "FROM:", 1, 252);
    assert_int_equal(smtp_parse_mail_arg(buf, n, &out), SMTP_PATH_OK);
    /* domain over 255 */
    n = make_path(buf, sizeof buf, "FROM:", 1, 256);
    assert_int_equal(smtp_parse_mail_arg(buf, n, &out), SMTP_PATH_TOO_LONG);
    n = make_path(buf, sizeof buf, "TO:", 1, 1500);
    assert_int_equal(smtp_parse_rcpt_arg(buf, n, &out), SMTP_PATH_TOO_LONG);

    /* the source route counts toward the path */
    n = (size_t)snprintf(buf, sizeof buf, "FROM:<@");
    memset(buf + n, 'r', 250);
    n += 250;
    n += (size_t)snprintf(buf + n, sizeof buf - n, ":a@b>");
    assert_int_equal(smtp_parse_mail_arg(buf, n, &out), SMTP_PATH_TOO_LONG);
    n = (size_t)snprintf(buf, sizeof buf, "FROM:<@");
    memset(buf + n, 'r', 240);
    n += 240;
    n += (size_t)snprintf(buf + n, sizeof buf - n, ":a@b>");
    assert_int_equal(smtp_parse_mail_arg(buf, n, &out), SMTP_PATH_OK);
    assert_int_equal(out.addr_len, 3);

    /* a syntax error wins over the length */
    n = make_path(buf, sizeof buf, "FROM:", 100, 10);
    buf[10] = ' ';
    assert_int_equal(smtp_parse_mail_arg(buf, n, &out), SMTP_PATH_SYNTAX);
    /* params do not count */
    n = make_path(buf, sizeof buf, "FROM:", 64, 189);
    buf[n] = ' ';
    memset(buf + n + 1, 'X', 500);
    assert_int_equal(smtp_parse_mail_arg(buf, n + 501, &out), SMTP_PATH_OK);
    assert_int_equal(out.params_len, 500);
}

static void
test_rcpt(void **state)
{
    (void)state;
    expect_rcpt(S("TO:<user@example.com>"), SMTP_PATH_OK, "user@example.com",
                "", false, false);
    expect_rcpt(S("to: <user@example.com> NOTIFY=SUCCESS,FAILURE"),
                SMTP_PATH_OK, "user@example.com", "NOTIFY=SUCCESS,FAILURE",
                false, false);
    expect_rcpt(S("TO:<Postmaster>"), SMTP_PATH_OK, "Postmaster", "", false,
                true);
    expect_rcpt(S("TO:<postMASTER>"), SMTP_PATH_OK, "postMASTER", "", false,
                true);
    expect_rcpt(S("TO: <postmaster>  ORCPT=rfc822;postmaster  "), SMTP_PATH_OK,
                "postmaster", "ORCPT=rfc822;postmaster", false, true);
    expect_rcpt(S("TO:<postmaster@example.com>"), SMTP_PATH_OK,
                "postmaster@example.com", "", false, false);
    expect_rcpt(S("TO:<@relay.example:bob@example.org>"), SMTP_PATH_OK,
                "bob@example.org", "", false, false);
    expect_rcpt(S("TO:<\xd0\xb8\xd0\xb2\xd0\xb0\xd0\xbd@example.com>"),
                SMTP_PATH_OK, "\xd0\xb8\xd0\xb2\xd0\xb0\xd0\xbd@example.com",
                "", true, false);
    expect_rcpt(S("TO:<a@[IPv6:::1]>"), SMTP_PATH_OK, "a@[IPv6:::1]", "", false,
                false);

    expect_rcpt(S("TO:<>"), SMTP_PATH_SYNTAX, NULL, NULL, false, false);
    expect_rcpt(S("TO:<Postmasterx>"), SMTP_PATH_SYNTAX, NULL, NULL, false,
                false);
    expect_rcpt(S("TO:<Postmaster>x"), SMTP_PATH_SYNTAX, NULL, NULL, false,
                false);
    expect_rcpt(S("TO:<Postmaster"), SMTP_PATH_SYNTAX, NULL, NULL, false,
                false);
    expect_rcpt(S("TO:<@relay:Postmaster>"), SMTP_PATH_SYNTAX, NULL, NULL,
                false, false);
    expect_rcpt(S("TO:user@example.com"), SMTP_PATH_SYNTAX, NULL, NULL, false,
                false);
    expect_rcpt(S("TO:<user@example.com"), SMTP_PATH_SYNTAX, NULL, NULL, false,
                false);
    expect_rcpt(S("FROM:<user@example.com>"), SMTP_PATH_NO_KEYWORD, NULL, NULL,
                false, false);
    expect_rcpt(S("T:<a@b>"), SMTP_PATH_NO_KEYWORD, NULL, NULL, false, false);
    expect_rcpt(S(""), SMTP_PATH_NO_KEYWORD, NULL, NULL, false, false);
}

/* --- ESMTP parameters --- */

static void
test_params_iterate(void **state)
{
    const char *s = "  SIZE=1000   BODY=8BITMIME SMTPUTF8 ORCPT=rfc822;"
                    "a+2Bb@example.com RET=HDRS ENVID=x\xc3\xa9y  ";
    const char *cur = s, *end = s + strlen(s);
    struct smtp_param p;
    static const char *const keys[] = {"SIZE",  "BODY", "SMTPUTF8",
                                       "ORCPT", "RET",  "ENVID"};
    static const char *const vals[] = {"1000", "8BITMIME",
                                       NULL,   "rfc822;a+2Bb@example.com",
                                       "HDRS", "x\xc3\xa9y"};

    (void)state;
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(smtp_param_next(&cur, end, &p), 1);
        assert_int_equal(p.key_len, strlen(keys[i]));
        assert_memory_equal(p.key, keys[i], p.key_len);
        assert_true(smtp_param_is(&p, keys[i]));
        if (vals[i] == NULL) {
            assert_null(p.value);
            assert_int_equal(p.value_len, 0);
        } else {
            assert_int_equal(p.value_len, strlen(vals[i]));
            assert_memory_equal(p.value, vals[i], p.value_len);
        }
        assert_true(p.key >= s && p.key + p.key_len <= end);
    }
    assert_int_equal(smtp_param_next(&cur, end, &p), 0);
    assert_int_equal(smtp_param_next(&cur, end, &p), 0);
    assert_ptr_equal(cur, end);

    cur = end = "";
    assert_int_equal(smtp_param_next(&cur, end, &p), 0);
    s = "   ";
    cur = s;
    assert_int_equal(smtp_param_next(&cur, s + 3, &p), 0);
    /* end bounds the walk, not a NUL */
    s = "A=1 B=2";
    cur = s;
    assert_int_equal(smtp_param_next(&cur, s + 5, &p), 1);
    assert_int_equal(smtp_param_next(&cur, s + 5, &p), 1);
    assert_true(smtp_param_is(&p, "b"));
    assert_null(p.value);
    assert_int_equal(smtp_param_next(&cur, s + 5, &p), 0);
    /* keys with digits and hyphens */
    s = "X-FOO-2=bar 8BIT";
    cur = s;
    assert_int_equal(smtp_param_next(&cur, s + strlen(s), &p), 1);
    assert_true(smtp_param_is(&p, "x-foo-2"));
    assert_int_equal(smtp_param_next(&cur, s + strlen(s), &p), 1);
    assert_true(smtp_param_is(&p, "8bit"));
}

static void
expect_param_error(const char *s, size_t len, int good_before)
{
    const char *cur = s;
    struct smtp_param p;

    for (int i = 0; i < good_before; i++)
        assert_int_equal(smtp_param_next(&cur, s + len, &p), 1);
    if (smtp_param_next(&cur, s + len, &p) != -1)
        fail_msg("params '%.*s': no error after %d", (int)len, s, good_before);
}

static void
test_params_errors(void **state)
{
    (void)state;
    expect_param_error(S("=1"), 0);
    expect_param_error(S("A==1"), 0);
    expect_param_error(S("A=1=2"), 0);
    expect_param_error(S("A="), 0);
    expect_param_error(S("A= B"), 0);
    expect_param_error(S("-A"), 0);
    expect_param_error(S("A_B"), 0);
    expect_param_error(S("A.B=1"), 0);
    expect_param_error(S("A\tB"), 0);
    expect_param_error(S("A=b\x01"), 0);
    expect_param_error(S("A=\x7f"), 0);
    expect_param_error(S("A=b\tc"), 0);
    expect_param_error(S("A=\0"), 0);
    expect_param_error(S("A\0"), 0);
    expect_param_error(S("A=\xc3"), 0);
    expect_param_error(S("A=\xc0\x80"), 0);
    expect_param_error(S("A=\xed\xbf\xbf"), 0);
    expect_param_error(S("\xc3\xa9=1"), 0);
    expect_param_error(S("SIZE=1 =bad"), 1);
    expect_param_error(S("SIZE=1  BODY=8BITMIME  X="), 2);
    expect_param_error(S("SIZE=1 B\xff"), 1);
}

static void
test_param_is(void **state)
{
    struct smtp_param p = {"SIZE", 4, "10", 2};

    (void)state;
    assert_true(smtp_param_is(&p, "SIZE"));
    assert_true(smtp_param_is(&p, "size"));
    assert_true(smtp_param_is(&p, "SiZe"));
    assert_false(smtp_param_is(&p, "SIZ"));
    assert_false(smtp_param_is(&p, "SIZES"));
    assert_false(smtp_param_is(&p, "BODY"));
    assert_false(smtp_param_is(&p, ""));
    p.key_len = 3;
    assert_true(smtp_param_is(&p, "siz"));
}

/* --- HELO and address literals --- */

static void
test_helo(void **state)
{
    char buf[300];

    (void)state;
    assert_true(smtp_valid_helo(S("mail.example.com")));
    assert_true(smtp_valid_helo(S("MAIL.Example.COM")));
    assert_true(smtp_valid_helo(S("mail.example.com.")));
    assert_true(smtp_valid_helo(S("localhost")));
    assert_true(smtp_valid_helo(S("my_host")));
    assert_true(smtp_valid_helo(S("a-b.c-d.e")));
    assert_true(smtp_valid_helo(S("xn--bcher-kva.example")));
    assert_true(smtp_valid_helo(S("192.0.2.1"))); /* digits are labels */
    assert_true(smtp_valid_helo(S("[192.0.2.1]")));
    assert_true(smtp_valid_helo(S("[IPv6:::1]")));
    assert_true(smtp_valid_helo(S("[IPv6:2001:db8:0:0:1:0:0:1]")));

    assert_false(smtp_valid_helo(S("")));
    assert_false(smtp_valid_helo(NULL, 0));
    assert_false(smtp_valid_helo(S(".")));
    assert_false(smtp_valid_helo(S("..")));
    assert_false(smtp_valid_helo(S("a..")));
    assert_false(smtp_valid_helo(S(".a")));
    assert_false(smtp_valid_helo(S("a..b")));
    assert_false(smtp_valid_helo(S("-a")));
    assert_false(smtp_valid_helo(S("a-")));
    assert_false(smtp_valid_helo(S("a.-b")));
    assert_false(smtp_valid_helo(S("a-.b")));
    assert_false(smtp_valid_helo(S("a b")));
    assert_false(smtp_valid_helo(S("a\0b")));
    assert_false(smtp_valid_helo(S("a\r")));
    assert_false(smtp_valid_helo(S("host!")));
    assert_false(smtp_valid_helo(S("user@host")));
    assert_false(smtp_valid_helo(S("b\xc3\xbc\x63her.example")));
    assert_false(smtp_valid_helo(S("[192.0.2.1")));
    assert_false(smtp_valid_helo(S("[256.0.0.1]")));
    assert_false(smtp_valid_helo(S("[192.0.2.1].")));
    assert_false(smtp_valid_helo(S("[mail.example.com]")));

    /* 255 octets fine (plus a root dot), 256 not */
    for (size_t i = 0; i < 256; i++)
        buf[i] = (i % 10 == 9) ? '.' : 'h';
    buf[254] = 'h';
    assert_true(smtp_valid_helo(buf, 255));
    buf[255] = '.';
    assert_true(smtp_valid_helo(buf, 256));
    buf[255] = 'h';
    assert_false(smtp_valid_helo(buf, 256));
}

static void
test_address_literal(void **state)
{
    (void)state;
    assert_true(smtp_valid_address_literal(S("[0.0.0.0]")));
    assert_true(smtp_valid_address_literal(S("[255.255.255.255]")));
    assert_true(smtp_valid_address_literal(S("[001.002.003.004]")));
    assert_true(smtp_valid_address_literal(S("[192.0.2.1]")));
    assert_true(smtp_valid_address_literal(S("[IPv6:2001:db8::1]")));
    assert_true(smtp_valid_address_literal(S("[ipv6:::1]")));
    assert_true(smtp_valid_address_literal(S("[IPV6:::]")));
    assert_true(smtp_valid_address_literal(S("[IPv6:::ffff:192.0.2.1]")));
    assert_true(smtp_valid_address_literal(S("[IPv6:1:2:3:4:5:6:7:8]")));
    assert_true(smtp_valid_address_literal(
        S("[IPv6:ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]")));

    assert_false(smtp_valid_address_literal(NULL, 0));
    assert_false(smtp_valid_address_literal(S("")));
    assert_false(smtp_valid_address_literal(S("[")));
    assert_false(smtp_valid_address_literal(S("[]")));
    assert_false(smtp_valid_address_literal(S("192.0.2.1")));
    assert_false(smtp_valid_address_literal(S("[192.0.2.1")));
    assert_false(smtp_valid_address_literal(S("192.0.2.1]")));
    assert_false(smtp_valid_address_literal(S("[1.2.3]")));
    assert_false(smtp_valid_address_literal(S("[1.2.3.4.5]")));
    assert_false(smtp_valid_address_literal(S("[1.2.3.256]")));
    assert_false(smtp_valid_address_literal(S("[1..2.3]")));
    assert_false(smtp_valid_address_literal(S("[1.2.3.]")));
    assert_false(smtp_valid_address_literal(S("[.1.2.3]")));
    assert_false(smtp_valid_address_literal(S("[1234.1.1.1]")));
    assert_false(smtp_valid_address_literal(S("[0001.1.1.1]")));
    assert_false(smtp_valid_address_literal(S("[ 1.2.3.4]")));
    assert_false(smtp_valid_address_literal(S("[1.2.3.4 ]")));
    assert_false(smtp_valid_address_literal(S("[-1.2.3.4]")));
    assert_false(smtp_valid_address_literal(S("[0x7f.0.0.1]")));
    assert_false(smtp_valid_address_literal(S("[1.2.3.4\0]")));
    assert_false(smtp_valid_address_literal(S("[IPv6:]")));
    assert_false(smtp_valid_address_literal(S("[IPv6]")));
    assert_false(smtp_valid_address_literal(S("[IPv6:1.2.3.4]")));
    assert_false(smtp_valid_address_literal(S("[IPv6:::1%eth0]")));
    assert_false(smtp_valid_address_literal(S("[IPv6:::1\0junk]")));
    assert_false(smtp_valid_address_literal(S("[IPv6:1:2:3:4:5:6:7:8:9]")));
    assert_false(smtp_valid_address_literal(S("[IPv6:1::2::3]")));
    assert_false(smtp_valid_address_literal(S("[IPv6:12345::1]")));
    assert_false(smtp_valid_address_literal(S("[IPv6: ::1]")));
    assert_false(smtp_valid_address_literal(S("[::1]")));
    assert_false(smtp_valid_address_literal(
        S("[IPv6:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:1]")));
    assert_false(smtp_valid_address_literal(S("[tag:content]")));
    assert_false(smtp_valid_address_literal(S("[192.0.2.1]]")));
}

/* --- BDAT --- */

static void
expect_bdat(const char *arg, size_t len, bool ok, unsigned long long size,
            bool last)
{
    unsigned long long got = 4242;
    bool got_last = true;

    if (smtp_parse_bdat_arg(arg, len, &got, &got_last) != ok)
        fail_msg("BDAT '%.*s': want %s", (int)len, arg, ok ? "ok" : "error");
    if (ok) {
        assert_true(got == size);
        assert_int_equal(got_last, last);
    } else {
        /* outputs untouched on error */
        assert_true(got == 4242);
        assert_true(got_last);
    }
}

static void
test_bdat(void **state)
{
    (void)state;
    expect_bdat(S("0"), true, 0, false);
    expect_bdat(S("0 LAST"), true, 0, true);
    expect_bdat(S("1000"), true, 1000, false);
    expect_bdat(S("1000 LAST"), true, 1000, true);
    expect_bdat(S("1000 last"), true, 1000, true);
    expect_bdat(S("1000 LaSt"), true, 1000, true);
    expect_bdat(S("1000   LAST"), true, 1000, true);
    expect_bdat(S("1000 "), true, 1000, false);
    expect_bdat(S("1000 LAST "), true, 1000, true);
    expect_bdat(S("007"), true, 7, false);
    expect_bdat(S("18446744073709551615"), true, 18446744073709551615ULL,
                false);
    expect_bdat(S("18446744073709551615 LAST"), true, 18446744073709551615ULL,
                true);

    expect_bdat(S(""), false, 0, false);
    expect_bdat(NULL, 0, false, 0, false);
    expect_bdat(S("LAST"), false, 0, false);
    expect_bdat(S(" 1"), false, 0, false);
    expect_bdat(S("-1"), false, 0, false);
    expect_bdat(S("+1"), false, 0, false);
    expect_bdat(S("1x"), false, 0, false);
    expect_bdat(S("0x10"), false, 0, false);
    expect_bdat(S("1.5"), false, 0, false);
    expect_bdat(S("1 LASTX"), false, 0, false);
    expect_bdat(S("1 LAS"), false, 0, false);
    expect_bdat(S("1 LAST x"), false, 0, false);
    expect_bdat(S("1 LAST LAST"), false, 0, false);
    expect_bdat(S("1 FIRST"), false, 0, false);
    expect_bdat(S("1 2"), false, 0, false);
    expect_bdat(S("1\tLAST"), false, 0, false);
    expect_bdat(S("1\0"), false, 0, false);
    expect_bdat(S("1 LAST\0"), false, 0, false);
    expect_bdat(S("18446744073709551616"), false, 0, false);
    expect_bdat(S("99999999999999999999999 LAST"), false, 0, false);
    expect_bdat(S("184467440737095516150"), false, 0, false);
}

/* --- the layers together --- */

static void
test_pipeline_end_to_end(void **state)
{
    const char *in = "EHLO client.example\r\n"
                     "MAIL FROM:<alice@example.org> SIZE=42 BODY=8BITMIME\r\n"
                     "RCPT TO:<bob@example.net> NOTIFY=NEVER\r\n"
                     "RCPT TO:<Postmaster>\r\n"
                     "BDAT 42 LAST\r\n";
    size_t len = strlen(in), off = 0, consumed, line_len;
    struct smtp_line_parser lp;
    struct smtp_command cmd;
    struct smtp_path path;
    struct smtp_param prm;
    const char *line, *cur;
    unsigned long long size;
    bool last;

    (void)state;
    smtp_line_init(&lp, 512);
#define NEXT()                                                                 \
    do {                                                                       \
        assert_int_equal(smtp_line_next(&lp, in + off, len - off, &consumed,   \
                                        &line, &line_len),                     \
                         SMTP_LINE_OK);                                        \
        off += consumed;                                                       \
    } while (0)
    NEXT();
    assert_int_equal(smtp_command_parse(line, line_len, &cmd), SMTP_VERB_EHLO);
    assert_true(smtp_valid_helo(cmd.arg, cmd.arg_len));
    NEXT();
    assert_int_equal(smtp_command_parse(line, line_len, &cmd), SMTP_VERB_MAIL);
    assert_int_equal(smtp_parse_mail_arg(cmd.arg, cmd.arg_len, &path),
                     SMTP_PATH_OK);
    cur = path.params;
    assert_int_equal(smtp_param_next(&cur, cur + path.params_len, &prm), 1);
    assert_true(smtp_param_is(&prm, "SIZE"));
    assert_memory_equal(prm.value, "42", 2);
    assert_int_equal(smtp_param_next(&cur, path.params + path.params_len, &prm),
                     1);
    assert_true(smtp_param_is(&prm, "BODY"));
    assert_int_equal(smtp_param_next(&cur, path.params + path.params_len, &prm),
                     0);
    NEXT();
    assert_int_equal(smtp_command_parse(line, line_len, &cmd), SMTP_VERB_RCPT);
    assert_int_equal(smtp_parse_rcpt_arg(cmd.arg, cmd.arg_len, &path),
                     SMTP_PATH_OK);
    assert_int_equal(path.addr_len, strlen("bob@example.net"));
    NEXT();
    assert_int_equal(smtp_command_parse(line, line_len, &cmd), SMTP_VERB_RCPT);
    assert_int_equal(smtp_parse_rcpt_arg(cmd.arg, cmd.arg_len, &path),
                     SMTP_PATH_OK);
    assert_true(path.postmaster);
    NEXT();
    assert_int_equal(smtp_command_parse(line, line_len, &cmd), SMTP_VERB_BDAT);
    assert_true(smtp_parse_bdat_arg(cmd.arg, cmd.arg_len, &size, &last));
    assert_true(size == 42 && last);
    assert_int_equal(off, len);
#undef NEXT
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_crlf_and_bare_lf),
        cmocka_unit_test(test_line_nul_and_cr_are_bytes),
        cmocka_unit_test(test_line_need_more_and_scanned),
        cmocka_unit_test(test_line_scanned_bytes_not_searched_again),
        cmocka_unit_test(test_line_pipelined),
        cmocka_unit_test(test_line_max_len_boundaries),
        cmocka_unit_test(test_line_too_long_discarding),
        cmocka_unit_test(test_line_too_long_whole_buffer),
        cmocka_unit_test(test_line_max_len_zero),
        cmocka_unit_test(test_line_golden_chunking),
        cmocka_unit_test(test_line_random_stream_chunking),
        cmocka_unit_test(test_command_verbs),
        cmocka_unit_test(test_command_args),
        cmocka_unit_test(test_command_unknown),
        cmocka_unit_test(test_mail_ok),
        cmocka_unit_test(test_mail_no_keyword),
        cmocka_unit_test(test_mail_syntax),
        cmocka_unit_test(test_path_too_long),
        cmocka_unit_test(test_rcpt),
        cmocka_unit_test(test_params_iterate),
        cmocka_unit_test(test_params_errors),
        cmocka_unit_test(test_param_is),
        cmocka_unit_test(test_helo),
        cmocka_unit_test(test_address_literal),
        cmocka_unit_test(test_bdat),
        cmocka_unit_test(test_pipeline_end_to_end),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
