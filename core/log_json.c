/*
 * log_json.c - a log line as one JSON object (see log_json.h). No
 * allocation and no other dependency than libc: it runs inside log_event()
 * on any thread, and a unit test drives it with hostile bytes.
 *
 * The output is built member by member in the caller's buffer; a member
 * that does not fit is taken back whole, so the object always closes.
 */
#include <stdio.h>
#include <string.h>

#include "log_json.h"

#define KEYS_MAX 64      /* members a line may have from its fields */
#define KEY_TEXT_MAX 256 /* a member name as written: escapes, suffix */
#define NUMBER_DIGITS 15 /* more digits than a double keeps exactly */
/* Room kept back for ,"truncated":true ,"worker":N and } */
#define TAIL_ROOM 48

struct jw {
    char *buf;
    size_t n, cap; /* cap: bytes usable, the NUL not counted */
    bool over;
};

static void
jw_put(struct jw *w, const char *s, size_t len)
{
    if (w->over || len > w->cap - w->n) {
        w->over = true;
        return;
    }
    memcpy(w->buf + w->n, s, len);
    w->n += len;
}

static void
jw_byte(struct jw *w, char c)
{
    jw_put(w, &c, 1);
}

/* --- bytes in, escaped JSON string content out --- */

static int
hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The next byte of s at *i, with postern_log_value()'s escapes undone
 * when decode is set. */
static unsigned char
next_byte(const char *s, size_t len, size_t *i, bool decode)
{
    size_t at = *i;
    if (decode && s[at] == '\\' && at + 1 < len) {
        if (s[at + 1] == '"' || s[at + 1] == '\\') {
            *i = at + 2;
            return (unsigned char)s[at + 1];
        }
        if (s[at + 1] == 'x' && at + 3 < len && hex_value(s[at + 2]) >= 0 &&
            hex_value(s[at + 3]) >= 0) {
            *i = at + 4;
            return (unsigned char)(hex_value(s[at + 2]) * 16 +
                                   hex_value(s[at + 3]));
        }
    }
    *i = at + 1;
    return (unsigned char)s[at];
}

/* Bytes of a well-formed UTF-8 sequence starting with b0 (RFC 3629), and
 * the range its second byte must fall in; 0 when b0 cannot start one. */
static int
utf8_lead(unsigned char b0, unsigned char *lo, unsigned char *hi)
{
    *lo = 0x80;
    *hi = 0xbf;
    if (b0 >= 0xc2 && b0 <= 0xdf)
        return 2;
    if (b0 >= 0xe0 && b0 <= 0xef) {
        if (b0 == 0xe0)
            *lo = 0xa0; /* no overlong forms */
        else if (b0 == 0xed)
            *hi = 0x9f; /* no surrogates */
        return 3;
    }
    if (b0 >= 0xf0 && b0 <= 0xf4) {
        if (b0 == 0xf0)
            *lo = 0x90;
        else if (b0 == 0xf4)
            *hi = 0x8f; /* nothing above U+10FFFF */
        return 4;
    }
    return 0;
}

static void
jw_escaped_byte(struct jw *w, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xf]};

    switch (c) {
    case '"':
        jw_put(w, "\\\"", 2);
        return;
    case '\\':
        jw_put(w, "\\\\", 2);
        return;
    case '\n':
        jw_put(w, "\\n", 2);
        return;
    case '\r':
        jw_put(w, "\\r", 2);
        return;
    case '\t':
        jw_put(w, "\\t", 2);
        return;
    default:
        if (c < 0x20 || c == 0x7f)
            jw_put(w, esc, sizeof(esc));
        else
            jw_byte(w, (char)c);
    }
}

/* The content of a JSON string (no quotes) for len bytes of s. */
static void
jw_escaped(struct jw *w, const char *s, size_t len, bool decode)
{
    size_t i = 0;

    while (i < len && !w->over) {
        unsigned char seq[4], lo, hi;
        seq[0] = next_byte(s, len, &i, decode);
        if (seq[0] < 0x80) {
            jw_escaped_byte(w, seq[0]);
            continue;
        }
        int need = utf8_lead(seq[0], &lo, &hi);
        size_t after_lead = i;
        int got = 1;
        while (need && got < need && i < len) {
            unsigned char b = next_byte(s, len, &i, decode);
            if (b < lo || b > hi)
                break;
            seq[got++] = b;
            lo = 0x80;
            hi = 0xbf;
        }
        if (need && got == need) {
            jw_put(w, (const char *)seq, (size_t)need);
        } else {
            /* Not UTF-8: one replacement character for the lead byte,
             * then the bytes after it are looked at afresh. */
            jw_put(w, "\\ufffd", 6);
            i = after_lead;
        }
    }
}

static void
jw_string(struct jw *w, const char *s, size_t len, bool decode)
{
    jw_byte(w, '"');
    jw_escaped(w, s, len, decode);
    jw_byte(w, '"');
}

size_t
log_json_string(char *out, size_t cap, const char *s, size_t len, bool decode)
{
    struct jw w = {out, 0, cap ? cap - 1 : 0, false};

    if (cap == 0)
        return 0;
    jw_string(&w, s, len, decode);
    if (w.over) {
        out[0] = '\0';
        return 0;
    }
    out[w.n] = '\0';
    return w.n;
}

/* --- the fields text: key=value words and free words --- */

struct token {
    const char *key; /* NULL: a free word (text) */
    size_t key_len;
    const char *text; /* the value (without its quotes), or the word */
    size_t text_len;
    bool quoted;
};

static bool
is_key_char(char c, bool first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           (!first && ((c >= '0' && c <= '9') || c == '.' || c == '-'));
}

/* The next token of s[*pos..len); false at the end. */
static bool
next_token(const char *s, size_t len, size_t *pos, struct token *t)
{
    size_t i = *pos;

    while (i < len && s[i] == ' ')
        i++;
    if (i >= len)
        return false;
    size_t start = i, k = i;
    while (k < len && is_key_char(s[k], k == start))
        k++;
    *t = (struct token){0};
    if (k > start && k < len && s[k] == '=') {
        t->key = s + start;
        t->key_len = k - start;
        i = k + 1;
        if (i < len && s[i] == '"') {
            /* A quoted value: up to the first quote not escaped. */
            size_t v = ++i;
            while (i < len && s[i] != '"')
                i += s[i] == '\\' && i + 1 < len ? 2 : 1;
            t->text = s + v;
            t->text_len = (i < len ? i : len) - v;
            t->quoted = true;
            *pos = i < len ? i + 1 : len;
            return true;
        }
        start = i;
    }
    while (i < len && s[i] != ' ')
        i++;
    t->text = s + start;
    t->text_len = i - start;
    *pos = i;
    return true;
}

/* A bare value written as a JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)? */
static bool
is_number(const char *s, size_t len)
{
    size_t i = 0, digits = 0;

    if (i < len && s[i] == '-')
        i++;
    if (i >= len || s[i] < '0' || s[i] > '9')
        return false;
    if (s[i] == '0' && i + 1 < len && s[i + 1] != '.')
        return false;
    while (i < len && s[i] >= '0' && s[i] <= '9')
        i++, digits++;
    if (i < len && s[i] == '.') {
        i++;
        if (i >= len || s[i] < '0' || s[i] > '9')
            return false;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++, digits++;
    }
    return i == len && digits <= NUMBER_DIGITS;
}

/*
 * The member names written so far, as written (escaped, with any "_N"
 * suffix). The escaping is the same for the same bytes, so two names are
 * the same JSON string exactly when they are written alike: comparing the
 * written text catches a field "m_2" meeting the second "m".
 */
struct seen_names {
    char text[KEYS_MAX][KEY_TEXT_MAX];
    size_t len[KEYS_MAX];
    size_t n;
};

/* The members the line has besides its fields. */
struct fixed_keys {
    const char *names[7];
    size_t n;
};

/* key with suffix (0: none) as written between the quotes, into dst;
 * its length, or 0 when it does not fit KEY_TEXT_MAX. */
static size_t
render_key(char *dst, const char *key, size_t len, unsigned suffix)
{
    struct jw k = {dst, 0, KEY_TEXT_MAX, false};

    jw_escaped(&k, key, len, false);
    if (suffix) {
        char tail[16];
        int n = snprintf(tail, sizeof(tail), "_%u", suffix);
        jw_put(&k, tail, (size_t)n);
    }
    return k.over ? 0 : k.n;
}

static bool
name_taken(const struct fixed_keys *fixed, const struct seen_names *seen,
           const char *name, size_t len)
{
    for (size_t i = 0; i < fixed->n; i++)
        if (strlen(fixed->names[i]) == len &&
            memcmp(fixed->names[i], name, len) == 0)
            return true;
    for (size_t i = 0; i < seen->n; i++)
        if (seen->len[i] == len && memcmp(seen->text[i], name, len) == 0)
            return true;
    return false;
}

static void
jw_value(struct jw *w, const struct token *t)
{
    if (t->quoted)
        jw_string(w, t->text, t->text_len, true);
    else if (t->text_len == 1 && t->text[0] == '-')
        jw_put(w, "null", 4);
    else if (is_number(t->text, t->text_len))
        jw_put(w, t->text, t->text_len);
    else
        jw_string(w, t->text, t->text_len, false);
}

/* Try one member; a member that does not fit is taken back whole. */
static bool
member_fits(struct jw *w, size_t mark)
{
    if (!w->over)
        return true;
    w->n = mark;
    w->over = false;
    return false;
}

size_t
log_json_format(char *out, size_t cap, const struct log_json_line *l)
{
    struct jw w = {out, 0, cap - 1 - TAIL_ROOM, false};
    struct seen_names seen; /* only n is set: the rest fills as used */
    size_t pos = 0, mark;
    bool truncated = false, any_text = false;
    struct token t;
    const char *f = l->fields ? l->fields : "";

    seen.n = 0;

    struct fixed_keys fixed = {{"level", "event", "msg", "truncated"}, 4};
    if (l->time)
        fixed.names[fixed.n++] = "time";
    if (l->sid)
        fixed.names[fixed.n++] = "session";
    if (l->worker >= 0)
        fixed.names[fixed.n++] = "worker";
    jw_byte(&w, '{');
    if (l->time) {
        jw_put(&w, "\"time\":", 7);
        jw_string(&w, l->time, strlen(l->time), false);
        jw_byte(&w, ',');
    }
    jw_put(&w, "\"level\":", 8);
    jw_string(&w, l->level, strlen(l->level), false);
    if (l->sid) {
        jw_put(&w, ",\"session\":", 11);
        jw_string(&w, l->sid, strlen(l->sid), false);
    }
    jw_put(&w, ",\"event\":", 9);
    jw_string(&w, l->event, strlen(l->event), false);
    if (w.over) { /* a buffer too small for the names themselves */
        w = (struct jw){out, 0, cap - 1, false};
        jw_put(&w, "{\"event\":\"log\"", 14);
        truncated = true;
    }
    while (!truncated && next_token(f, l->fields_len, &pos, &t)) {
        if (!t.key) {
            any_text = true;
            continue;
        }
        /* Past KEYS_MAX members, or a name too long to compare, the
         * rest of the line is left out rather than risk a duplicate. */
        char name[KEY_TEXT_MAX];
        size_t name_len = 0;
        unsigned suffix = 0;
        while (seen.n < KEYS_MAX &&
               (name_len = render_key(name, t.key, t.key_len, suffix)) &&
               name_taken(&fixed, &seen, name, name_len))
            suffix = suffix ? suffix + 1 : 2;
        if (seen.n == KEYS_MAX || name_len == 0) {
            truncated = true;
            break;
        }
        mark = w.n;
        jw_put(&w, ",\"", 2);
        jw_put(&w, name, name_len);
        jw_put(&w, "\":", 2);
        jw_value(&w, &t);
        if (!member_fits(&w, mark)) {
            truncated = true;
        } else {
            memcpy(seen.text[seen.n], name, name_len);
            seen.len[seen.n++] = name_len;
        }
    }
    if (any_text && !truncated) {
        /* The free words, in order, one space apart. */
        bool first = true;
        mark = w.n;
        jw_put(&w, ",\"msg\":\"", 8);
        for (pos = 0; next_token(f, l->fields_len, &pos, &t);) {
            if (t.key)
                continue;
            if (!first)
                jw_byte(&w, ' ');
            jw_escaped(&w, t.text, t.text_len, false);
            first = false;
        }
        jw_byte(&w, '"');
        if (!member_fits(&w, mark))
            truncated = true;
    }
    w.cap = cap - 1; /* the tail has its room */
    if (truncated)
        jw_put(&w, ",\"truncated\":true", 17);
    if (l->worker >= 0) {
        char tail[32];
        int k = snprintf(tail, sizeof(tail), ",\"worker\":%d", l->worker);
        jw_put(&w, tail, (size_t)k);
    }
    jw_byte(&w, '}');
    out[w.n] = '\0';
    return w.n;
}
