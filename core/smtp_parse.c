/*
 * smtp_parse.c - the SMTP command parser; the contract is in smtp_parse.h.
 *
 * Pure functions over the caller's buffer: no I/O, no allocation, no
 * global state. Grammar names (Dot-string, Quoted-string, A-d-l, ...) are
 * those of RFC 5321 section 4.1.2; RFC 6531 adds UTF-8 octets to local
 * parts, domains and ESMTP values. Character classes are ASCII-only on
 * purpose: <ctype.h> depends on the locale.
 */
#include "smtp_parse.h"

#include <arpa/inet.h>
#include <limits.h>
#include <string.h>

/* RFC 5321 4.5.3.1: local part, domain and whole path (with "<>"). */
#define SMTP_PARSE_MAX_LOCAL 64
#define SMTP_PARSE_MAX_DOMAIN 255
#define SMTP_PARSE_MAX_PATH 256

typedef const unsigned char *uptr;

static bool
smtp_parse_is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool
smtp_parse_is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool
smtp_parse_is_alnum(unsigned char c)
{
    return smtp_parse_is_alpha(c) || smtp_parse_is_digit(c);
}

static unsigned char
smtp_parse_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c - 'A' + 'a') : c;
}

/* Case-insensitive compare of n bytes of s with the ASCII literal lit. */
static bool
smtp_parse_ieq(const char *s, const char *lit, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (smtp_parse_lower((unsigned char)s[i]) !=
            smtp_parse_lower((unsigned char)lit[i]))
            return false;
    }
    return true;
}

/*
 * Length of the well-formed UTF-8 sequence (RFC 3629) of two to four
 * octets at s, or 0. Rejects overlong forms, surrogates and code points
 * above U+10FFFF.
 */
static size_t
smtp_parse_utf8(uptr s, uptr end)
{
    unsigned char lo = 0x80, hi = 0xBF;
    size_t n;

    if (s[0] >= 0xC2 && s[0] <= 0xDF) {
        n = 2;
    } else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        n = 3;
        if (s[0] == 0xE0)
            lo = 0xA0;
        else if (s[0] == 0xED)
            hi = 0x9F;
    } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        n = 4;
        if (s[0] == 0xF0)
            lo = 0x90;
        else if (s[0] == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if ((size_t)(end - s) < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++) {
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    }
    return n;
}

/* --- 1. line framing --- */

void
smtp_line_init(struct smtp_line_parser *p, size_t max_len)
{
    p->max_len = max_len;
    p->scanned = 0;
    p->discarding = false;
}

smtp_line_status
smtp_line_next(struct smtp_line_parser *p, const char *buf, size_t len,
               size_t *consumed, const char **line, size_t *line_len)
{
    const char *lf = NULL;
    size_t end;
    bool crlf;

    *consumed = 0;
    *line = NULL;
    *line_len = 0;
    if (p->scanned > len)
        p->scanned = 0; /* the caller lost bytes: search them all */
    if (len > p->scanned)
        lf = memchr(buf + p->scanned, '\n', len - p->scanned);

    if (p->discarding) {
        /* Inside an over-long line: everything up to its LF is dropped. */
        p->scanned = 0;
        if (lf == NULL) {
            *consumed = len;
            return SMTP_LINE_NEED_MORE;
        }
        *consumed = (size_t)(lf - buf) + 1;
        p->discarding = false;
        return SMTP_LINE_TOO_LONG;
    }

    if (lf == NULL) {
        p->scanned = len;
        /*
         * More than max_len bytes and no LF: the line is too long, unless
         * exactly max_len bytes plus a CR wait for their LF.
         */
        if (len > p->max_len &&
            !(len - 1 == p->max_len && buf[len - 1] == '\r')) {
            p->discarding = true;
            p->scanned = 0;
            *consumed = len;
        }
        return SMTP_LINE_NEED_MORE;
    }

    end = (size_t)(lf - buf);
    p->scanned = 0;
    *consumed = end + 1;
    crlf = end > 0 && buf[end - 1] == '\r';
    if (crlf)
        end--;
    if (end > p->max_len)
        return SMTP_LINE_TOO_LONG;
    *line = buf;
    *line_len = end;
    return crlf ? SMTP_LINE_OK : SMTP_LINE_BARE_LF;
}

/* --- 2. verbs --- */

static const struct {
    const char *name;
    size_t len;
    smtp_verb verb;
} smtp_parse_verbs[] = {
    {"HELO", 4, SMTP_VERB_HELO},         {"EHLO", 4, SMTP_VERB_EHLO},
    {"MAIL", 4, SMTP_VERB_MAIL},         {"RCPT", 4, SMTP_VERB_RCPT},
    {"DATA", 4, SMTP_VERB_DATA},         {"BDAT", 4, SMTP_VERB_BDAT},
    {"RSET", 4, SMTP_VERB_RSET},         {"NOOP", 4, SMTP_VERB_NOOP},
    {"QUIT", 4, SMTP_VERB_QUIT},         {"VRFY", 4, SMTP_VERB_VRFY},
    {"EXPN", 4, SMTP_VERB_EXPN},         {"HELP", 4, SMTP_VERB_HELP},
    {"STARTTLS", 8, SMTP_VERB_STARTTLS}, {"AUTH", 4, SMTP_VERB_AUTH},
};

smtp_verb
smtp_command_parse(const char *line, size_t len, struct smtp_command *cmd)
{
    size_t vlen = 0, start, end;

    if (line == NULL) {
        line = "";
        len = 0;
    }
    while (vlen < len && line[vlen] != ' ')
        vlen++;

    cmd->verb = SMTP_VERB_UNKNOWN;
    for (size_t i = 0; i < sizeof smtp_parse_verbs / sizeof *smtp_parse_verbs;
         i++) {
        if (vlen == smtp_parse_verbs[i].len &&
            smtp_parse_ieq(line, smtp_parse_verbs[i].name, vlen)) {
            cmd->verb = smtp_parse_verbs[i].verb;
            break;
        }
    }

    start = vlen;
    while (start < len && line[start] == ' ')
        start++;
    end = len;
    while (end > start && (line[end - 1] == ' ' || line[end - 1] == '\t'))
        end--;
    cmd->arg = line + start;
    cmd->arg_len = end - start;
    return cmd->verb;
}

/* --- 3. arguments --- */

/* RFC 5322 atext. */
static bool
smtp_parse_is_atext(unsigned char c)
{
    return smtp_parse_is_alnum(c) ||
           (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/*
 * Dot-string = Atom *("." Atom), Atom = 1*atext (plus UTF-8). Advances *pp
 * past it; false when it is empty or has an empty atom.
 */
static bool
smtp_parse_dot_string(uptr *pp, uptr end, bool *non_ascii)
{
    uptr p = *pp;

    for (;;) {
        uptr atom = p;

        while (p < end) {
            size_t n;

            if (smtp_parse_is_atext(*p)) {
                p++;
            } else if (*p >= 0x80 && (n = smtp_parse_utf8(p, end)) > 0) {
                *non_ascii = true;
                p += n;
            } else {
                break;
            }
        }
        if (p == atom)
            return false;
        if (p == end || *p != '.')
            break;
        p++;
    }
    *pp = p;
    return true;
}

/* Quoted-string = DQUOTE *(qtextSMTP / quoted-pairSMTP) DQUOTE. */
static bool
smtp_parse_quoted_string(uptr *pp, uptr end, bool *non_ascii)
{
    uptr p = *pp + 1; /* past the opening quote */

    while (p < end && *p != '"') {
        size_t n;

        if (*p == '\\') {
            if (end - p < 2 || p[1] < 32 || p[1] > 126)
                return false;
            p += 2;
        } else if (*p >= 32 && *p <= 126) {
            p++;
        } else if (*p >= 0x80 && (n = smtp_parse_utf8(p, end)) > 0) {
            *non_ascii = true;
            p += n;
        } else {
            return false;
        }
    }
    if (p == end)
        return false;
    *pp = p + 1;
    return true;
}

/*
 * A domain name: labels of letters, digits, '-' and (leniently) '_', not
 * starting or ending with '-', separated by single dots. UTF-8 octets are
 * allowed in labels when non_ascii is not NULL. Advances *pp to the first
 * byte after the name; false on an empty label or a misplaced '-'.
 */
static bool
smtp_parse_domain_name(uptr *pp, uptr end, bool *non_ascii)
{
    uptr p = *pp;

    for (;;) {
        uptr label = p;

        while (p < end) {
            size_t n;

            if (smtp_parse_is_alnum(*p) || *p == '-' || *p == '_') {
                p++;
            } else if (non_ascii != NULL && *p >= 0x80 &&
                       (n = smtp_parse_utf8(p, end)) > 0) {
                *non_ascii = true;
                p += n;
            } else {
                break;
            }
        }
        if (p == label || *label == '-' || p[-1] == '-')
            return false;
        if (p == end || *p != '.')
            break;
        p++;
    }
    *pp = p;
    return true;
}

/* Snum "." Snum "." Snum "." Snum, each 1*3DIGIT in 0..255. */
static bool
smtp_parse_ipv4(const char *s, size_t len)
{
    size_t i = 0;

    for (int part = 0; part < 4; part++) {
        unsigned int v = 0;
        size_t digits = 0;

        if (part > 0) {
            if (i >= len || s[i] != '.')
                return false;
            i++;
        }
        while (i < len && digits < 3 && smtp_parse_is_digit(s[i])) {
            v = v * 10 + (unsigned int)(s[i] - '0');
            i++;
            digits++;
        }
        if (digits == 0 || v > 255)
            return false;
    }
    return i == len;
}

bool
smtp_valid_address_literal(const char *s, size_t len)
{
    const char *body;
    size_t blen;

    if (s == NULL || len < 3 || s[0] != '[' || s[len - 1] != ']')
        return false;
    body = s + 1;
    blen = len - 2;
    if (blen > 5 && smtp_parse_ieq(body, "IPv6:", 5)) {
        char tmp[INET6_ADDRSTRLEN];
        unsigned char bin[16];

        body += 5;
        blen -= 5;
        /* inet_pton wants a C string; a NUL would cut it short. */
        if (blen >= sizeof tmp || memchr(body, '\0', blen) != NULL)
            return false;
        memcpy(tmp, body, blen);
        tmp[blen] = '\0';
        return inet_pton(AF_INET6, tmp, bin) == 1;
    }
    return smtp_parse_ipv4(body, blen);
}

/*
 * Shared body of the MAIL and RCPT argument parsers. is_mail allows the
 * null path; otherwise <Postmaster> is allowed.
 */
static smtp_path_status
smtp_parse_path_arg(const char *arg, size_t len, const char *keyword,
                    bool is_mail, struct smtp_path *out)
{
    size_t kwlen = strlen(keyword);
    uptr p, end, open, mbox, mbox_end, dom;
    size_t local_len, dom_len;
    bool non_ascii = false, postmaster = false;

    if (arg == NULL) {
        arg = "";
        len = 0;
    }
    out->addr = arg;
    out->addr_len = 0;
    out->params = arg + len;
    out->params_len = 0;
    out->non_ascii = false;
    out->postmaster = false;

    if (len < kwlen || !smtp_parse_ieq(arg, keyword, kwlen))
        return SMTP_PATH_NO_KEYWORD;
    p = (uptr)arg + kwlen;
    end = (uptr)arg + len;
    while (p < end && *p == ' ')
        p++; /* not in the grammar, but common */
    if (p == end || *p != '<')
        return SMTP_PATH_SYNTAX;
    open = p++;

    if (p < end && *p == '>') {
        if (!is_mail)
            return SMTP_PATH_SYNTAX;
        mbox = mbox_end = p++;
        goto params;
    }

    if (p < end && *p == '@') {
        /* A-d-l ":" -- a source route, parsed then ignored (RFC 5321 C). */
        for (;;) {
            p++;
            if (!smtp_parse_domain_name(&p, end, &non_ascii))
                return SMTP_PATH_SYNTAX;
            if (p == end || *p != ',')
                break;
            if (++p == end || *p != '@')
                return SMTP_PATH_SYNTAX;
        }
        if (p == end || *p != ':')
            return SMTP_PATH_SYNTAX;
        p++;
    } else if (!is_mail && end - p >= 11 &&
               smtp_parse_ieq((const char *)p, "Postmaster>", 11)) {
        postmaster = true;
        mbox = p;
        mbox_end = p + 10;
        p += 11;
        goto params;
    }

    mbox = p;
    if (p < end && *p == '"') {
        if (!smtp_parse_quoted_string(&p, end, &non_ascii))
            return SMTP_PATH_SYNTAX;
    } else if (!smtp_parse_dot_string(&p, end, &non_ascii)) {
        return SMTP_PATH_SYNTAX;
    }
    local_len = (size_t)(p - mbox);
    if (p == end || *p != '@')
        return SMTP_PATH_SYNTAX;
    dom = ++p;
    if (p < end && *p == '[') {
        uptr close = memchr(p, ']', (size_t)(end - p));

        if (close == NULL || !smtp_valid_address_literal(
                                 (const char *)p, (size_t)(close - p) + 1))
            return SMTP_PATH_SYNTAX;
        p = close + 1;
    } else if (!smtp_parse_domain_name(&p, end, &non_ascii)) {
        return SMTP_PATH_SYNTAX;
    }
    dom_len = (size_t)(p - dom);
    if (p == end || *p != '>')
        return SMTP_PATH_SYNTAX;
    mbox_end = p++;
    if (local_len > SMTP_PARSE_MAX_LOCAL || dom_len > SMTP_PARSE_MAX_DOMAIN ||
        (size_t)(p - open) > SMTP_PARSE_MAX_PATH)
        return SMTP_PATH_TOO_LONG;

params:
    /* p is just past '>': the end, or spaces and then parameters. */
    if (p < end) {
        uptr tail = end;

        if (*p != ' ')
            return SMTP_PATH_SYNTAX;
        while (p < end && *p == ' ')
            p++;
        while (tail > p && (tail[-1] == ' ' || tail[-1] == '\t'))
            tail--;
        out->params = (const char *)p;
        out->params_len = (size_t)(tail - p);
    }
    out->addr = (const char *)mbox;
    out->addr_len = (size_t)(mbox_end - mbox);
    out->non_ascii = non_ascii;
    out->postmaster = postmaster;
    return SMTP_PATH_OK;
}

smtp_path_status
smtp_parse_mail_arg(const char *arg, size_t len, struct smtp_path *out)
{
    return smtp_parse_path_arg(arg, len, "FROM:", true, out);
}

smtp_path_status
smtp_parse_rcpt_arg(const char *arg, size_t len, struct smtp_path *out)
{
    return smtp_parse_path_arg(arg, len, "TO:", false, out);
}

int
smtp_param_next(const char **cursor, const char *end, struct smtp_param *out)
{
    uptr p = (uptr)*cursor, e = (uptr)end, key, value = NULL;
    size_t key_len, value_len = 0;

    out->key = NULL;
    out->key_len = 0;
    out->value = NULL;
    out->value_len = 0;
    if (p == NULL || e == NULL)
        return 0;
    while (p < e && *p == ' ')
        p++;
    if (p >= e) {
        *cursor = end;
        return 0;
    }

    /* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
    key = p;
    if (!smtp_parse_is_alnum(*p))
        return -1;
    while (p < e && (smtp_parse_is_alnum(*p) || *p == '-'))
        p++;
    key_len = (size_t)(p - key);

    if (p < e && *p == '=') {
        /* esmtp-value = 1*(%d33-60 / %d62-126 / UTF8-non-ascii) */
        value = ++p;
        while (p < e && *p != ' ') {
            size_t n;

            if (*p >= 33 && *p <= 126 && *p != '=')
                p++;
            else if (*p >= 0x80 && (n = smtp_parse_utf8(p, e)) > 0)
                p += n;
            else
                return -1;
        }
        value_len = (size_t)(p - value);
        if (value_len == 0)
            return -1;
    } else if (p < e && *p != ' ') {
        return -1;
    }

    out->key = (const char *)key;
    out->key_len = key_len;
    out->value = (const char *)value;
    out->value_len = value_len;
    *cursor = (const char *)p;
    return 1;
}

bool
smtp_param_is(const struct smtp_param *p, const char *key)
{
    size_t n = strlen(key);

    return p->key != NULL && p->key_len == n && smtp_parse_ieq(p->key, key, n);
}

bool
smtp_valid_helo(const char *s, size_t len)
{
    uptr p, end;

    if (s == NULL || len == 0)
        return false;
    if (s[0] == '[')
        return smtp_valid_address_literal(s, len);
    if (len > 1 && s[len - 1] == '.')
        len--; /* a fully qualified name may end in the root dot */
    if (len > SMTP_PARSE_MAX_DOMAIN)
        return false;
    p = (uptr)s;
    end = p + len;
    /* ASCII only: EHLO comes before SMTPUTF8 can be negotiated. */
    return smtp_parse_domain_name(&p, end, NULL) && p == end;
}

bool
smtp_parse_bdat_arg(const char *arg, size_t len, unsigned long long *size,
                    bool *last)
{
    unsigned long long v = 0;
    bool is_last = false;
    size_t i = 0;

    if (arg == NULL || len == 0 || !smtp_parse_is_digit(arg[0]))
        return false;
    while (i < len && smtp_parse_is_digit(arg[i])) {
        unsigned int d = (unsigned int)(arg[i] - '0');

        if (v > (ULLONG_MAX - d) / 10)
            return false;
        v = v * 10 + d;
        i++;
    }
    if (i < len) {
        if (arg[i] != ' ')
            return false;
        while (i < len && arg[i] == ' ')
            i++;
        if (i < len) {
            if (len - i < 4 || !smtp_parse_ieq(arg + i, "LAST", 4))
                return false;
            is_last = true;
            i += 4;
            while (i < len && arg[i] == ' ')
                i++;
            if (i != len)
                return false;
        }
    }
    *size = v;
    *last = is_last;
    return true;
}
