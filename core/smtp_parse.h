/*
 * smtp_parse.h - the SMTP command parser: pure functions, no I/O, no
 * allocation. Everything returned points into the caller's buffer.
 *
 * Three layers:
 *   1. line framing (smtp_line_next): finds the next command line in the
 *      read buffer, copes with partial reads and pipelined input, and
 *      skips over-long lines while reporting them once;
 *   2. verb recognition (smtp_command_parse);
 *   3. argument grammar: MAIL/RCPT paths and ESMTP parameters, EHLO domains.
 */
#ifndef POSTERN_SMTP_PARSE_H
#define POSTERN_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>

/* --- 1. line framing --- */

typedef enum smtp_line_status {
    SMTP_LINE_NEED_MORE, /* no complete line yet; see smtp_line_next() */
    SMTP_LINE_OK,        /* a line ending in CRLF */
    SMTP_LINE_BARE_LF,   /* a line ending in LF without CR (line is valid) */
    SMTP_LINE_TOO_LONG   /* a line over max_len ended; its bytes are gone */
} smtp_line_status;

struct smtp_line_parser {
    size_t max_len;  /* longest line accepted, without CRLF */
    size_t scanned;  /* bytes of the pending line already searched */
    bool discarding; /* inside an over-long line, skipping to its LF */
};

void smtp_line_init(struct smtp_line_parser *p, size_t max_len);

/*
 * Look for the next line in buf[0..len). Always sets *consumed: the number
 * of bytes at the front of buf the caller must drop before the next call
 * (the line and its terminator for OK/BARE_LF/TOO_LONG; skipped bytes of an
 * over-long line, or 0, for NEED_MORE). For OK and BARE_LF, *line and
 * *line_len give the line without its terminator. The caller keeps the
 * unconsumed bytes and calls again with them plus new input; bytes already
 * searched are not searched again. A buffer of max_len + 2 bytes is enough.
 */
smtp_line_status smtp_line_next(struct smtp_line_parser *p, const char *buf,
                                size_t len, size_t *consumed, const char **line,
                                size_t *line_len);

/* --- 2. verbs --- */

typedef enum smtp_verb {
    SMTP_VERB_UNKNOWN,
    SMTP_VERB_HELO,
    SMTP_VERB_EHLO,
    SMTP_VERB_MAIL,
    SMTP_VERB_RCPT,
    SMTP_VERB_DATA,
    SMTP_VERB_BDAT,
    SMTP_VERB_RSET,
    SMTP_VERB_NOOP,
    SMTP_VERB_QUIT,
    SMTP_VERB_VRFY,
    SMTP_VERB_EXPN,
    SMTP_VERB_HELP,
    SMTP_VERB_STARTTLS,
    SMTP_VERB_AUTH
} smtp_verb;

struct smtp_command {
    smtp_verb verb;
    const char *arg; /* after the verb and one or more spaces; may be "" */
    size_t arg_len;  /* trailing spaces removed */
};

/*
 * Split a line into verb and argument. The verb is matched
 * case-insensitively and must be followed by a space or the end of line
 * ("MAILX" is unknown). Returns the verb (also stored in cmd->verb).
 */
smtp_verb smtp_command_parse(const char *line, size_t len,
                             struct smtp_command *cmd);

/* --- 3. arguments --- */

typedef enum smtp_path_status {
    SMTP_PATH_OK,
    SMTP_PATH_NO_KEYWORD, /* "FROM:" / "TO:" missing */
    SMTP_PATH_SYNTAX,     /* the <path> does not follow RFC 5321 4.1.2 */
    SMTP_PATH_TOO_LONG    /* local part > 64 or domain > 255 or path > 256 */
} smtp_path_status;

struct smtp_path {
    const char *addr; /* mailbox without <> and source route; "" for <> */
    size_t addr_len;
    const char *params; /* the ESMTP parameters after the path, may be "" */
    size_t params_len;
    bool non_ascii;  /* the mailbox has octets >= 0x80 (needs SMTPUTF8) */
    bool postmaster; /* RCPT TO:<Postmaster> without a domain */
};

/*
 * Parse "FROM:<reverse-path> [params]" (MAIL) or "TO:<forward-path>
 * [params]" (RCPT). Keywords are case-insensitive; spaces after the colon
 * are tolerated as real clients send them. The null path <> is valid only
 * for MAIL; <Postmaster> (any case, no domain) only for RCPT. Source routes
 * (<@a,@b:user@d>) are accepted and dropped. Local parts may be dot-strings
 * or quoted strings; domains are names or address literals ([192.0.2.1],
 * [IPv6:...]). UTF-8 octets are accepted in local parts and domains and
 * flagged in non_ascii (the caller decides whether SMTPUTF8 allows them).
 */
smtp_path_status smtp_parse_mail_arg(const char *arg, size_t len,
                                     struct smtp_path *out);
smtp_path_status smtp_parse_rcpt_arg(const char *arg, size_t len,
                                     struct smtp_path *out);

struct smtp_param {
    const char *key; /* esmtp-keyword: ALPHA / DIGIT, then also "-" */
    size_t key_len;
    const char *value; /* esmtp-value or NULL when there is no "=" */
    size_t value_len;
};

/*
 * Iterate over space-separated "KEY[=VALUE]" parameters. *cursor starts at
 * params and moves on. Returns 1 with *out set, 0 at the end, -1 on a
 * syntax error (empty key, bad key character, "=" with an empty value,
 * value octets outside %d33-60 / %d62-126 / UTF-8).
 */
int smtp_param_next(const char **cursor, const char *end,
                    struct smtp_param *out);

/* A case-insensitive compare of a param key with a literal ("SIZE"). */
bool smtp_param_is(const struct smtp_param *p, const char *key);

/*
 * Validate the argument of HELO/EHLO: a domain name (labels of letters,
 * digits, '-' and '_', not starting or ending with '-', total <= 255) or an
 * address literal. A trailing dot is allowed.
 */
bool smtp_valid_helo(const char *s, size_t len);

/* Validate an address literal "[...]" (IPv4 or "IPv6:" form). */
bool smtp_valid_address_literal(const char *s, size_t len);

/*
 * Parse "BDAT <size> [LAST]". Returns true with *size and *last set, false
 * on syntax error (missing/non-digit/overflowing size, junk after LAST).
 */
bool smtp_parse_bdat_arg(const char *arg, size_t len, unsigned long long *size,
                         bool *last);

#endif
