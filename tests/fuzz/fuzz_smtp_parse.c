/*
 * fuzz_smtp_parse.c - libFuzzer harness for core/smtp_parse.c.
 *
 * Input: byte 0 picks max_len, byte 1 the read size, the rest is a client
 * byte stream. The stream is framed twice, whole and through a caller
 * buffer of max_len + 2 bytes filled a few bytes at a time; both must give
 * the same lines. Every line, and the raw stream, then goes through every
 * argument parser, and whatever they return is checked to lie inside the
 * input and to obey the grammar's invariants. A broken invariant aborts.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_parse.h"

#define FUZZ_MAX_LINE 1024

#define FUZZ_CHECK(cond)                                                       \
    do {                                                                       \
        if (!(cond))                                                           \
            abort();                                                           \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool
fuzz_inside(const char *p, size_t n, const char *buf, size_t len)
{
    return p != NULL && p >= buf && n <= len && (size_t)(p - buf) <= len - n;
}

static void
fuzz_params(const char *s, size_t len)
{
    const char *cur = s, *end = s + len;
    struct smtp_param prm;
    size_t rounds = 0;
    int r;

    while ((r = smtp_param_next(&cur, end, &prm)) == 1) {
        FUZZ_CHECK(++rounds <= len); /* each parameter eats a byte or more */
        FUZZ_CHECK(fuzz_inside(prm.key, prm.key_len, s, len));
        FUZZ_CHECK(prm.key_len > 0 && prm.key[0] != '-');
        FUZZ_CHECK(cur >= prm.key + prm.key_len && cur <= end);
        if (prm.value != NULL) {
            FUZZ_CHECK(fuzz_inside(prm.value, prm.value_len, s, len));
            FUZZ_CHECK(prm.value_len > 0);
            FUZZ_CHECK(memchr(prm.value, '=', prm.value_len) == NULL);
            FUZZ_CHECK(memchr(prm.value, ' ', prm.value_len) == NULL);
        }
        FUZZ_CHECK(smtp_param_is(&prm, "SIZE") ==
                   (prm.key_len == 4 && (prm.key[0] | 0x20) == 's' &&
                    (prm.key[1] | 0x20) == 'i' && (prm.key[2] | 0x20) == 'z' &&
                    (prm.key[3] | 0x20) == 'e'));
    }
    FUZZ_CHECK(r == 0 || r == -1);
}

static void
fuzz_path(const char *arg, size_t len, bool mail)
{
    struct smtp_path path, again;
    char buf[300];
    size_t n;
    smtp_path_status st = mail ? smtp_parse_mail_arg(arg, len, &path)
                               : smtp_parse_rcpt_arg(arg, len, &path);

    FUZZ_CHECK(st == SMTP_PATH_OK || st == SMTP_PATH_NO_KEYWORD ||
               st == SMTP_PATH_SYNTAX || st == SMTP_PATH_TOO_LONG);
    if (st != SMTP_PATH_OK)
        return;
    FUZZ_CHECK(fuzz_inside(path.addr, path.addr_len, arg, len));
    FUZZ_CHECK(fuzz_inside(path.params, path.params_len, arg, len));
    FUZZ_CHECK(path.addr_len <= 254); /* 256 minus "<>" */
    FUZZ_CHECK(memchr(path.addr, ' ', path.addr_len) == NULL ||
               path.addr[0] == '"');
    if (!path.non_ascii) {
        for (size_t i = 0; i < path.addr_len; i++)
            FUZZ_CHECK((unsigned char)path.addr[i] < 0x80);
    }
    if (path.addr_len == 0)
        FUZZ_CHECK(mail);
    if (path.postmaster)
        FUZZ_CHECK(!mail && path.addr_len == 10);
    if (path.params_len > 0) {
        FUZZ_CHECK(path.params[0] != ' ');
        FUZZ_CHECK(path.params[path.params_len - 1] != ' ' &&
                   path.params[path.params_len - 1] != '\t');
    }

    /* The bare mailbox, without route or params, must parse the same. */
    n = (size_t)(mail ? 6 : 4);
    memcpy(buf, mail ? "FROM:<" : "TO:<", n);
    memcpy(buf + n, path.addr, path.addr_len);
    n += path.addr_len;
    buf[n++] = '>';
    st = mail ? smtp_parse_mail_arg(buf, n, &again)
              : smtp_parse_rcpt_arg(buf, n, &again);
    FUZZ_CHECK(st == SMTP_PATH_OK);
    FUZZ_CHECK(again.addr_len == path.addr_len);
    FUZZ_CHECK(memcmp(again.addr, path.addr, path.addr_len) == 0);
    FUZZ_CHECK(again.postmaster == path.postmaster);
    FUZZ_CHECK(!again.non_ascii || path.non_ascii);
    FUZZ_CHECK(again.params_len == 0);

    fuzz_params(path.params, path.params_len);
}

static void
fuzz_line(const char *line, size_t len)
{
    struct smtp_command cmd;
    unsigned long long size;
    bool last;
    smtp_verb verb = smtp_command_parse(line, len, &cmd);

    FUZZ_CHECK(verb == cmd.verb);
    FUZZ_CHECK(verb >= SMTP_VERB_UNKNOWN && verb <= SMTP_VERB_AUTH);
    FUZZ_CHECK(cmd.arg_len == 0 ||
               fuzz_inside(cmd.arg, cmd.arg_len, line, len));
    if (cmd.arg_len > 0) {
        FUZZ_CHECK(cmd.arg[0] != ' ');
        FUZZ_CHECK(cmd.arg[cmd.arg_len - 1] != ' ' &&
                   cmd.arg[cmd.arg_len - 1] != '\t');
    }
    if (verb != SMTP_VERB_UNKNOWN) {
        size_t vlen = verb == SMTP_VERB_STARTTLS ? 8 : 4;

        FUZZ_CHECK(len >= vlen && (len == vlen || line[vlen] == ' '));
    }

    fuzz_path(cmd.arg, cmd.arg_len, true);
    fuzz_path(cmd.arg, cmd.arg_len, false);
    fuzz_params(cmd.arg, cmd.arg_len);

    if (smtp_valid_helo(cmd.arg, cmd.arg_len)) {
        FUZZ_CHECK(cmd.arg_len > 0 && cmd.arg_len <= 256);
        for (size_t i = 0; i < cmd.arg_len; i++)
            FUZZ_CHECK((unsigned char)cmd.arg[i] > ' ' &&
                       (unsigned char)cmd.arg[i] < 0x7f);
    }
    if (smtp_valid_address_literal(cmd.arg, cmd.arg_len))
        FUZZ_CHECK(cmd.arg[0] == '[' && cmd.arg[cmd.arg_len - 1] == ']');
    if (smtp_parse_bdat_arg(cmd.arg, cmd.arg_len, &size, &last))
        FUZZ_CHECK(cmd.arg[0] >= '0' && cmd.arg[0] <= '9');
}

/* FNV-1a over the framing results, to compare two runs. */
static uint64_t
fuzz_hash(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;

    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static uint64_t
fuzz_result(uint64_t h, smtp_line_status st, const char *line, size_t len)
{
    unsigned char tag = (unsigned char)st;

    h = fuzz_hash(h, &tag, 1);
    h = fuzz_hash(h, &len, sizeof len);
    return fuzz_hash(h, line, len);
}

/* The stream in one buffer, as a caller with a large read buffer sees it. */
static uint64_t
fuzz_frame_whole(const char *in, size_t len, size_t max_len)
{
    struct smtp_line_parser p;
    uint64_t h = 14695981039346656037ULL;
    size_t off = 0;

    smtp_line_init(&p, max_len);
    for (;;) {
        const char *line;
        size_t line_len, consumed;
        smtp_line_status st = smtp_line_next(&p, in + off, len - off, &consumed,
                                             &line, &line_len);

        FUZZ_CHECK(consumed <= len - off);
        if (st == SMTP_LINE_NEED_MORE) {
            FUZZ_CHECK(len - off - consumed <= max_len + 1);
            break;
        }
        FUZZ_CHECK(consumed > 0);
        if (st == SMTP_LINE_OK || st == SMTP_LINE_BARE_LF) {
            FUZZ_CHECK(line == in + off && line_len <= max_len);
            FUZZ_CHECK(line[line_len + (st == SMTP_LINE_OK)] == '\n');
            FUZZ_CHECK(consumed == line_len + 1 + (st == SMTP_LINE_OK));
            fuzz_line(line, line_len);
        } else {
            FUZZ_CHECK(st == SMTP_LINE_TOO_LONG);
            FUZZ_CHECK(in[off + consumed - 1] == '\n');
        }
        h = fuzz_result(h, st, line, line_len);
        off += consumed;
    }
    return h;
}

/* The same stream through a max_len + 2 buffer, chunk bytes per read. */
static uint64_t
fuzz_frame_chunked(const char *in, size_t len, size_t max_len, size_t chunk)
{
    struct smtp_line_parser p;
    char buf[FUZZ_MAX_LINE + 2];
    size_t cap = max_len + 2, have = 0, pos = 0;
    uint64_t h = 14695981039346656037ULL;

    smtp_line_init(&p, max_len);
    while (pos < len) {
        size_t n = len - pos;

        FUZZ_CHECK(have < cap);
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

            FUZZ_CHECK(consumed <= have);
            if (st != SMTP_LINE_NEED_MORE)
                h = fuzz_result(h, st, line, line_len);
            memmove(buf, buf + consumed, have - consumed);
            have -= consumed;
            if (st == SMTP_LINE_NEED_MORE)
                break;
        }
    }
    return h;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in;
    size_t len, max_len, chunk;

    if (size < 2)
        return 0;
    /* Mostly tiny limits, to reach the over-long paths often. */
    max_len = (data[0] & 0x80) ? 512 : (size_t)(data[0] & 0x3f);
    chunk = 1 + (size_t)(data[1] % 17);
    in = (const char *)data + 2;
    len = size - 2;

    FUZZ_CHECK(fuzz_frame_whole(in, len, max_len) ==
               fuzz_frame_chunked(in, len, max_len, chunk));
    FUZZ_CHECK(fuzz_frame_whole(in, len, FUZZ_MAX_LINE) ==
               fuzz_frame_chunked(in, len, FUZZ_MAX_LINE, chunk * 7));

    /* Raw bytes straight into the argument parsers, CR and LF included. */
    fuzz_line(in, len);
    return 0;
}
