/*
 * spf_record.c - the SPF record grammar (RFC 7208 4.6, 5, 6, 12) and
 * macro expansion (RFC 7208 7). No DNS here: the evaluator (spf_eval.c)
 * looks things up and calls these pure functions.
 *
 * A record is parsed whole before anything is evaluated: a syntax error in
 * any term, including a macro error in an unknown modifier or a term that
 * would never be reached, makes the record a permerror (RFC 7208 4.6).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "spf_record.h"

#define SPF_MAX_DOMAIN 253

static const char *const spf_result_names[SPF_RESULT_COUNT] = {
    [SPF_NONE] = "none",          [SPF_NEUTRAL] = "neutral",
    [SPF_PASS] = "pass",          [SPF_FAIL] = "fail",
    [SPF_SOFTFAIL] = "softfail",  [SPF_TEMPERROR] = "temperror",
    [SPF_PERMERROR] = "permerror"};

const char *
spf_result_name(spf_result result)
{
    if ((unsigned)result >= SPF_RESULT_COUNT)
        return "permerror";
    return spf_result_names[result];
}

static char
spf_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static bool
spf_is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool
spf_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool
spf_is_alnum(char c)
{
    return spf_is_alpha(c) || spf_is_digit(c);
}

/* Case-insensitive comparison of len bytes of s with the literal word. */
static bool
spf_word_eq(const char *s, size_t len, const char *word)
{
    if (strlen(word) != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (spf_lower(s[i]) != word[i])
            return false;
    return true;
}

int
spf_result_from_name(const char *name)
{
    for (int i = 0; i < SPF_RESULT_COUNT; i++)
        if (spf_word_eq(name, strlen(name), spf_result_names[i]))
            return i;
    return -1;
}

/* --- addresses ------------------------------------------------------------
 */

/* Dotted quad, each part 0..255 without leading zeros (RFC 7208 qnum). */
static int
spf_ip4_parse(const char *s, size_t len, uint8_t out[4])
{
    size_t i = 0;

    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (i >= len || s[i] != '.')
                return -1;
            i++;
        }
        size_t start = i;
        unsigned value = 0;
        while (i < len && spf_is_digit(s[i]) && i - start < 3)
            value = value * 10 + (unsigned)(s[i++] - '0');
        if (i == start || value > 255 || (s[start] == '0' && i - start > 1))
            return -1;
        out[part] = (uint8_t)value;
    }
    return i == len ? 0 : -1;
}

static int
spf_ip6_parse(const char *s, size_t len, struct spf_ip *out)
{
    char buf[INET6_ADDRSTRLEN + 1];

    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET6, buf, out->addr) != 1)
        return -1;
    out->family = AF_INET6;
    return 0;
}

int
spf_ip_parse(const char *text, struct spf_ip *out)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0,    0,
                                       0, 0, 0, 0, 0xff, 0xff};
    size_t len = strlen(text);

    memset(out, 0, sizeof *out);
    if (spf_ip4_parse(text, len, out->addr) == 0) {
        out->family = AF_INET;
        return 0;
    }
    if (spf_ip6_parse(text, len, out) != 0)
        return -1;
    if (memcmp(out->addr, mapped, sizeof mapped) == 0) {
        memmove(out->addr, out->addr + 12, 4);
        memset(out->addr + 4, 0, 12);
        out->family = AF_INET;
    }
    return 0;
}

bool
spf_ip_match(const struct spf_ip *a, const struct spf_ip *b, unsigned prefix)
{
    unsigned bits = a->family == AF_INET ? 32 : 128;

    if (a->family != b->family)
        return false;
    if (prefix > bits)
        prefix = bits;
    size_t whole = prefix / 8;
    if (memcmp(a->addr, b->addr, whole) != 0)
        return false;
    if (prefix % 8 == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - prefix % 8));
    return ((a->addr[whole] ^ b->addr[whole]) & mask) == 0;
}

/* --- macro-strings (RFC 7208 7.1) -----------------------------------------
 */

static bool
spf_is_delimiter(char c)
{
    return c != '\0' && strchr(".-+,/_=", c) != NULL;
}

static bool
spf_is_macro_letter(char c, bool explanation)
{
    c = spf_lower(c);
    if (c != '\0' && strchr("slodiphv", c) != NULL)
        return true;
    return explanation && (c == 'c' || c == 'r' || c == 't');
}

/* One element of a macro-string. */
struct spf_macro_tok {
    enum { SPF_TOK_LITERAL, SPF_TOK_ESCAPE, SPF_TOK_MACRO } kind;
    size_t start, end; /* bytes [start, end) of the string */
    char letter;       /* SPF_TOK_MACRO: as written (upper: URL-escape) */
    unsigned digits;   /* 0: all parts */
    bool reverse;
    const char *delims; /* inside the string */
    size_t n_delims;
};

/*
 * Read the token at *pos. An explanation string may hold any printable
 * ASCII and spaces; a domain-spec only macro-literal (%x21-24 / %x26-7E).
 * 1 and *pos advanced, 0 at the end, -1 on a syntax error.
 */
static int
spf_macro_next(const char *s, size_t len, size_t *pos, bool explanation,
               struct spf_macro_tok *tok)
{
    size_t i = *pos;

    if (i >= len)
        return 0;
    memset(tok, 0, sizeof *tok);
    tok->start = i;
    if (s[i] != '%') {
        unsigned char c = (unsigned char)s[i];
        bool ok =
            explanation ? (c >= 0x20 && c <= 0x7e) : (c >= 0x21 && c <= 0x7e);
        if (!ok)
            return -1;
        tok->kind = SPF_TOK_LITERAL;
        tok->end = *pos = i + 1;
        return 1;
    }
    if (i + 1 >= len)
        return -1;
    char next = s[i + 1];
    if (next == '%' || next == '_' || next == '-') {
        tok->kind = SPF_TOK_ESCAPE;
        tok->letter = next;
        tok->end = *pos = i + 2;
        return 1;
    }
    if (next != '{')
        return -1;
    i += 2;
    if (i >= len || !spf_is_macro_letter(s[i], explanation))
        return -1;
    tok->kind = SPF_TOK_MACRO;
    tok->letter = s[i++];
    size_t digits_start = i;
    unsigned long digits = 0;
    while (i < len && spf_is_digit(s[i])) {
        if (digits < 1000)
            digits = digits * 10 + (unsigned long)(s[i] - '0');
        i++;
    }
    if (i > digits_start && digits == 0)
        return -1; /* RFC 7208 7.1: the number must be nonzero */
    tok->digits = digits > 1000 ? 1000 : (unsigned)digits;
    if (i < len && spf_lower(s[i]) == 'r') {
        tok->reverse = true;
        i++;
    }
    tok->delims = s + i;
    while (i < len && spf_is_delimiter(s[i]))
        i++;
    tok->n_delims = (size_t)(s + i - tok->delims);
    if (i >= len || s[i] != '}')
        return -1;
    tok->end = *pos = i + 1;
    return 1;
}

bool
spf_macro_valid(const char *s, size_t len, bool explanation)
{
    struct spf_macro_tok tok;
    size_t pos = 0;
    int r;

    while ((r = spf_macro_next(s, len, &pos, explanation, &tok)) == 1)
        ;
    return r == 0;
}

bool
spf_macro_uses_p(const char *s, size_t len)
{
    struct spf_macro_tok tok;
    size_t pos = 0;

    while (spf_macro_next(s, len, &pos, true, &tok) == 1)
        if (tok.kind == SPF_TOK_MACRO && spf_lower(tok.letter) == 'p')
            return true;
    return false;
}

/*
 * toplabel = ( *alphanum ALPHA *alphanum ) /
 *            ( 1*alphanum "-" *( alphanum / "-" ) alphanum )
 */
static bool
spf_toplabel_valid(const char *s, size_t len)
{
    bool alpha = false, dash = false;

    if (len == 0 || len > 63)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '-')
            dash = true;
        else if (spf_is_alpha(s[i]))
            alpha = true;
        else if (!spf_is_digit(s[i]))
            return false;
    }
    if (!dash)
        return alpha;
    return spf_is_alnum(s[0]) && spf_is_alnum(s[len - 1]);
}

/*
 * domain-spec = macro-string domain-end
 * domain-end  = ( "." toplabel [ "." ] ) / macro-expand
 */
static bool
spf_domain_spec_valid(const char *s, size_t len)
{
    struct spf_macro_tok tok;
    size_t pos = 0, literal_from = 0;
    bool ends_in_macro = false;
    int r;

    if (len == 0)
        return false;
    while ((r = spf_macro_next(s, len, &pos, false, &tok)) == 1) {
        ends_in_macro = tok.kind != SPF_TOK_LITERAL;
        if (ends_in_macro)
            literal_from = pos;
    }
    if (r != 0)
        return false;
    if (ends_in_macro)
        return true;
    /* The trailing literal run holds "." toplabel [ "." ]. */
    size_t end = len;
    if (end > literal_from && s[end - 1] == '.')
        end--;
    const char *dot = NULL;
    for (size_t i = end; i > literal_from; i--)
        if (s[i - 1] == '.') {
            dot = s + i - 1;
            break;
        }
    if (dot == NULL)
        return false;
    return spf_toplabel_valid(dot + 1, (size_t)(s + end - dot - 1));
}

bool
spf_domain_valid(const char *name)
{
    size_t len = strlen(name), label = 0;

    if (len > 0 && name[len - 1] == '.')
        len--;
    if (len == 0 || len > SPF_MAX_DOMAIN)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if (c < 0x20 || c >= 0x7f || ++label > 63) {
            return false;
        }
    }
    return label > 0;
}

/* --- expansion ------------------------------------------------------------
 */

struct spf_buf {
    char *data;
    size_t len, cap;
    bool nomem;
};

static void
spf_buf_add(struct spf_buf *b, const char *s, size_t n)
{
    if (b->nomem)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *data = realloc(b->data, cap);
        if (data == NULL) {
            b->nomem = true;
            return;
        }
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

/* The value of a macro letter, written into tmp when it must be built. */
static const char *
spf_macro_value(char letter, const struct spf_macro_env *env, char *tmp,
                size_t tmp_size)
{
    const struct spf_ip *ip = env->ip;

    switch (spf_lower(letter)) {
    case 's':
        return env->sender ? env->sender : "";
    case 'l':
        return env->local ? env->local : "";
    case 'o':
        return env->sender_dom ? env->sender_dom : "";
    case 'd':
        return env->domain ? env->domain : "";
    case 'h':
        return env->helo ? env->helo : "";
    case 'p':
        return env->ptr ? env->ptr : "unknown";
    case 'r':
        return env->receiver ? env->receiver : "unknown";
    case 't':
        snprintf(tmp, tmp_size, "%lld", env->now);
        return tmp;
    case 'v':
        return ip != NULL && ip->family == AF_INET6 ? "ip6" : "in-addr";
    case 'i':
        if (ip != NULL && ip->family == AF_INET6) {
            static const char hex[] = "0123456789abcdef";
            size_t n = 0;
            for (int i = 0; i < 16; i++) {
                tmp[n++] = hex[ip->addr[i] >> 4];
                tmp[n++] = '.';
                tmp[n++] = hex[ip->addr[i] & 15];
                tmp[n++] = '.';
            }
            tmp[n - 1] = '\0';
            return tmp;
        }
        /* FALLTHROUGH */
    case 'c':
        if (ip == NULL)
            return "";
        if (inet_ntop(ip->family, ip->addr, tmp, (socklen_t)tmp_size) == NULL)
            return "";
        return tmp;
    default:
        return "";
    }
}

static void
spf_buf_url_escape(struct spf_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (spf_is_alnum((char)c) || c == '-' || c == '.' || c == '_' ||
            c == '~') {
            spf_buf_add(b, (const char *)&c, 1);
        } else {
            char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
            spf_buf_add(b, esc, 3);
        }
    }
}

/* Split value at the delimiters, reverse, keep the rightmost digits
 * parts, join with '.', URL-escape for an upper-case letter. */
static void
spf_expand_macro(struct spf_buf *b, const struct spf_macro_tok *tok,
                 const char *value)
{
    size_t len = strlen(value), n_parts = 1;
    const char *delims = ".";
    size_t n_delims = 1;

    if (tok->n_delims > 0) {
        delims = tok->delims;
        n_delims = tok->n_delims;
    }
    for (size_t i = 0; i < len; i++)
        if (memchr(delims, value[i], n_delims) != NULL)
            n_parts++;
    struct {
        const char *s;
        size_t n;
    } *parts = calloc(n_parts, sizeof *parts);
    if (parts == NULL) {
        b->nomem = true;
        return;
    }
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || memchr(delims, value[i], n_delims) != NULL) {
            parts[k].s = value + start;
            parts[k].n = i - start;
            k++;
            start = i + 1;
        }
    }
    if (tok->reverse)
        for (size_t i = 0; i < n_parts / 2; i++) {
            __typeof__(*parts) t = parts[i];
            parts[i] = parts[n_parts - 1 - i];
            parts[n_parts - 1 - i] = t;
        }
    size_t first = 0;
    if (tok->digits > 0 && tok->digits < n_parts)
        first = n_parts - tok->digits;
    struct spf_buf joined = {0};
    for (size_t i = first; i < n_parts; i++) {
        if (i > first)
            spf_buf_add(&joined, ".", 1);
        spf_buf_add(&joined, parts[i].s, parts[i].n);
    }
    free(parts);
    if (joined.nomem) {
        b->nomem = true;
    } else if (joined.len > 0) {
        if (tok->letter >= 'A' && tok->letter <= 'Z')
            spf_buf_url_escape(b, joined.data, joined.len);
        else
            spf_buf_add(b, joined.data, joined.len);
    }
    free(joined.data);
}

spf_expand_status
spf_macro_expand(const char *s, size_t len, const struct spf_macro_env *env,
                 bool explanation, char **out)
{
    struct spf_buf b = {0};
    struct spf_macro_tok tok;
    size_t pos = 0;
    int r;
    char tmp[80];

    *out = NULL;
    spf_buf_add(&b, "", 0);
    while ((r = spf_macro_next(s, len, &pos, explanation, &tok)) == 1) {
        switch (tok.kind) {
        case SPF_TOK_LITERAL:
            spf_buf_add(&b, s + tok.start, 1);
            break;
        case SPF_TOK_ESCAPE:
            spf_buf_add(&b,
                        tok.letter == '%'   ? "%"
                        : tok.letter == '_' ? " "
                                            : "%20",
                        tok.letter == '-' ? 3 : 1);
            break;
        case SPF_TOK_MACRO:
            spf_expand_macro(&b, &tok,
                             spf_macro_value(tok.letter, env, tmp, sizeof tmp));
            break;
        }
    }
    if (r != 0) {
        free(b.data);
        return SPF_EXPAND_SYNTAX;
    }
    if (b.nomem) {
        free(b.data);
        return SPF_EXPAND_NOMEM;
    }
    if (!explanation) {
        if (b.len > 0 && b.data[b.len - 1] == '.')
            b.data[--b.len] = '\0';
        /* RFC 7208 7.3: drop labels from the left until it fits. */
        size_t skip = 0;
        while (b.len - skip > SPF_MAX_DOMAIN) {
            const char *dot = memchr(b.data + skip, '.', b.len - skip);
            if (dot == NULL)
                break;
            skip = (size_t)(dot - b.data) + 1;
        }
        if (skip > 0) {
            memmove(b.data, b.data + skip, b.len - skip + 1);
            b.len -= skip;
        }
    }
    *out = b.data;
    return SPF_EXPAND_OK;
}

/* --- records (RFC 7208 4.6, 12) -------------------------------------------
 */

bool
spf_record_is_spf1(const char *text, size_t len)
{
    return len >= 6 && spf_word_eq(text, 6, "v=spf1") &&
           (len == 6 || text[6] == ' ');
}

void
spf_record_free(struct spf_record *record)
{
    if (record == NULL)
        return;
    for (size_t i = 0; i < record->n_terms; i++) {
        free(record->terms[i].domain_spec);
        free(record->terms[i].text);
    }
    free(record->terms);
    free(record->redirect);
    free(record->exp);
    free(record);
}

static char *
spf_strndup(const char *s, size_t n, bool *nomem)
{
    char *copy = malloc(n + 1);

    if (copy == NULL) {
        *nomem = true;
        return NULL;
    }
    memcpy(copy, s, n);
    copy[n] = '\0';
    return copy;
}

/* "/" then "0" or a number without leading zero, at most max. */
static bool
spf_cidr_value(const char *s, size_t len, unsigned max, unsigned *out)
{
    unsigned value = 0;

    if (len == 0 || len > 3 || (s[0] == '0' && len > 1))
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!spf_is_digit(s[i]))
            return false;
        value = value * 10 + (unsigned)(s[i] - '0');
    }
    if (value > max)
        return false;
    *out = value;
    return true;
}

/*
 * Split a trailing dual-cidr-length off arg: "/n", "//m" or "/n//m".
 * *arg_len shrinks to what is left. false on a malformed length.
 */
static bool
spf_dual_cidr(const char *arg, size_t *arg_len, bool dual, unsigned *cidr4,
              unsigned *cidr6)
{
    size_t len = *arg_len, end = len;

    /* The digits at the end, then what precedes them. */
    while (end > 0 && spf_is_digit(arg[end - 1]))
        end--;
    if (end == len || end == 0 || arg[end - 1] != '/')
        return true; /* no cidr: the domain-spec check judges the rest */
    size_t slash = end - 1;
    if (dual && slash > 0 && arg[slash - 1] == '/') {
        if (!spf_cidr_value(arg + end, len - end, 128, cidr6))
            return false;
        len = slash - 1;
        end = len;
        while (end > 0 && spf_is_digit(arg[end - 1]))
            end--;
        if (end == len || end == 0 || arg[end - 1] != '/') {
            *arg_len = len;
            return true;
        }
        slash = end - 1;
    }
    if (!spf_cidr_value(arg + end, len - end, dual ? 32 : 128, cidr4))
        return false;
    *arg_len = slash;
    return true;
}

static const struct {
    const char *name;
    spf_mech mech;
} spf_mechs[] = {
    {"all", SPF_MECH_ALL}, {"include", SPF_MECH_INCLUDE}, {"a", SPF_MECH_A},
    {"mx", SPF_MECH_MX},   {"ptr", SPF_MECH_PTR},         {"ip4", SPF_MECH_IP4},
    {"ip6", SPF_MECH_IP6}, {"exists", SPF_MECH_EXISTS},
};

/* One directive: [qualifier] mechanism. */
static spf_parse_status
spf_parse_directive(const char *s, size_t len, struct spf_term *term,
                    const char **why)
{
    bool nomem = false;

    term->qualifier = SPF_PASS;
    if (len > 0 && strchr("+-?~", s[0]) != NULL) {
        term->qualifier = s[0] == '+'   ? SPF_PASS
                          : s[0] == '-' ? SPF_FAIL
                          : s[0] == '?' ? SPF_NEUTRAL
                                        : SPF_SOFTFAIL;
        s++;
        len--;
    }
    size_t name_len = 0;
    while (name_len < len && spf_is_alnum(s[name_len]))
        name_len++;
    size_t m;
    for (m = 0; m < sizeof spf_mechs / sizeof spf_mechs[0]; m++)
        if (spf_word_eq(s, name_len, spf_mechs[m].name))
            break;
    if (m == sizeof spf_mechs / sizeof spf_mechs[0]) {
        *why = "unknown mechanism";
        return SPF_PARSE_SYNTAX;
    }
    term->mech = spf_mechs[m].mech;
    term->cidr4 = 32;
    term->cidr6 = 128;
    const char *arg = s + name_len;
    size_t arg_len = len - name_len;
    bool has_domain = arg_len > 0 && arg[0] == ':';

    switch (term->mech) {
    case SPF_MECH_ALL:
        if (arg_len != 0) {
            *why = "all takes no argument";
            return SPF_PARSE_SYNTAX;
        }
        return SPF_PARSE_OK;
    case SPF_MECH_IP4:
    case SPF_MECH_IP6: {
        bool v4 = term->mech == SPF_MECH_IP4;
        if (!has_domain) {
            *why = "expected ':' and an address";
            return SPF_PARSE_SYNTAX;
        }
        arg++;
        arg_len--;
        unsigned cidr = v4 ? 32 : 128;
        const char *slash = memchr(arg, '/', arg_len);
        size_t addr_len = slash ? (size_t)(slash - arg) : arg_len;
        if (slash != NULL && !spf_cidr_value(slash + 1, arg_len - addr_len - 1,
                                             v4 ? 32 : 128, &cidr)) {
            *why = "bad cidr-length";
            return SPF_PARSE_SYNTAX;
        }
        if (v4) {
            term->ip.family = AF_INET;
            if (spf_ip4_parse(arg, addr_len, term->ip.addr) != 0) {
                *why = "bad ip4-network";
                return SPF_PARSE_SYNTAX;
            }
            term->cidr4 = cidr;
        } else {
            if (spf_ip6_parse(arg, addr_len, &term->ip) != 0) {
                *why = "bad ip6-network";
                return SPF_PARSE_SYNTAX;
            }
            term->cidr6 = cidr;
        }
        return SPF_PARSE_OK;
    }
    case SPF_MECH_A:
    case SPF_MECH_MX:
        if (!spf_dual_cidr(arg, &arg_len, true, &term->cidr4, &term->cidr6)) {
            *why = "bad cidr-length";
            return SPF_PARSE_SYNTAX;
        }
        break;
    default:
        break;
    }
    /* include, exists: ":" domain-spec; a, mx, ptr: [ ":" domain-spec ] */
    if (arg_len == 0) {
        if (term->mech == SPF_MECH_INCLUDE || term->mech == SPF_MECH_EXISTS) {
            *why = "expected ':' and a domain-spec";
            return SPF_PARSE_SYNTAX;
        }
        return SPF_PARSE_OK;
    }
    if (arg[0] != ':' || !spf_domain_spec_valid(arg + 1, arg_len - 1)) {
        *why = "bad domain-spec";
        return SPF_PARSE_SYNTAX;
    }
    term->domain_spec = spf_strndup(arg + 1, arg_len - 1, &nomem);
    return nomem ? SPF_PARSE_NOMEM : SPF_PARSE_OK;
}

/* name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ), then "=": the length
 * of the name when s is a modifier, 0 when it is not one. */
static size_t
spf_modifier_name(const char *s, size_t len)
{
    size_t i = 0;

    if (len == 0 || !spf_is_alpha(s[0]))
        return 0;
    while (i < len &&
           (spf_is_alnum(s[i]) || s[i] == '-' || s[i] == '_' || s[i] == '.'))
        i++;
    return i < len && s[i] == '=' ? i : 0;
}

static spf_parse_status
spf_parse_term(struct spf_record *rec, const char *s, size_t len,
               const char **why)
{
    bool nomem = false;
    size_t name_len = spf_modifier_name(s, len);

    if (name_len > 0) {
        const char *value = s + name_len + 1;
        size_t value_len = len - name_len - 1;
        char **slot = NULL;
        if (spf_word_eq(s, name_len, "redirect"))
            slot = &rec->redirect;
        else if (spf_word_eq(s, name_len, "exp"))
            slot = &rec->exp;
        if (slot == NULL) { /* unknown-modifier = name "=" macro-string */
            if (!spf_macro_valid(value, value_len, false)) {
                *why = "bad macro-string in a modifier";
                return SPF_PARSE_SYNTAX;
            }
            return SPF_PARSE_OK;
        }
        if (*slot != NULL) {
            *why = "redirect or exp given twice";
            return SPF_PARSE_SYNTAX;
        }
        if (!spf_domain_spec_valid(value, value_len)) {
            *why = "bad domain-spec";
            return SPF_PARSE_SYNTAX;
        }
        *slot = spf_strndup(value, value_len, &nomem);
        return nomem ? SPF_PARSE_NOMEM : SPF_PARSE_OK;
    }

    if (rec->n_terms % 8 == 0) {
        struct spf_term *terms =
            realloc(rec->terms, (rec->n_terms + 8) * sizeof *terms);
        if (terms == NULL)
            return SPF_PARSE_NOMEM;
        rec->terms = terms;
    }
    struct spf_term *term = &rec->terms[rec->n_terms];
    memset(term, 0, sizeof *term);
    spf_parse_status st = spf_parse_directive(s, len, term, why);
    if (st == SPF_PARSE_OK)
        term->text = spf_strndup(s, len, &nomem);
    rec->n_terms++; /* so spf_record_free() frees what it holds */
    return nomem ? SPF_PARSE_NOMEM : st;
}

spf_parse_status
spf_record_parse(const char *text, size_t len, struct spf_record **out,
                 char *err, size_t err_size)
{
    struct spf_record *rec = calloc(1, sizeof *rec);
    spf_parse_status st = SPF_PARSE_OK;
    const char *why = NULL;
    size_t pos = 6;

    *out = NULL;
    if (rec == NULL)
        return SPF_PARSE_NOMEM;
    if (!spf_record_is_spf1(text, len)) {
        why = "not a v=spf1 record";
        st = SPF_PARSE_SYNTAX;
    }
    while (st == SPF_PARSE_OK && pos < len) {
        /* terms = *( 1*SP ( directive / modifier ) ), then *SP */
        if (text[pos] != ' ') {
            why = "terms are separated by spaces";
            st = SPF_PARSE_SYNTAX;
            break;
        }
        while (pos < len && text[pos] == ' ')
            pos++;
        size_t start = pos;
        while (pos < len && text[pos] != ' ')
            pos++;
        if (pos > start)
            st = spf_parse_term(rec, text + start, pos - start, &why);
        if (st == SPF_PARSE_SYNTAX && err != NULL && err_size > 0)
            snprintf(err, err_size, "%s: \"%.*s\"", why,
                     (int)(pos - start > 64 ? 64 : pos - start), text + start);
    }
    if (st != SPF_PARSE_OK) {
        if (st == SPF_PARSE_SYNTAX && err != NULL && err_size > 0 && pos <= 6)
            snprintf(err, err_size, "%s", why);
        spf_record_free(rec);
        return st;
    }
    *out = rec;
    return SPF_PARSE_OK;
}
