/*
 * message_headers.c - header fields parsed, edited and rendered (see
 * message_headers.h).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "message_headers.h"

static bool
is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static bool
is_name_char(char c)
{
    return c >= 33 && c <= 126 && c != ':';
}

/* Length of the field name that starts the line at p (len bytes up to its
 * end), with *colon the offset of the colon; 0 when the line is no field. */
static size_t
field_name_len(const char *p, size_t len, size_t *colon)
{
    size_t i = 0;
    while (i < len && is_name_char(p[i]))
        i++;
    size_t name_len = i;
    /* obsolete syntax (RFC 5322 4.5): blanks before the colon */
    while (i < len && is_blank(p[i]))
        i++;
    if (name_len == 0 || i == len || p[i] != ':')
        return 0;
    *colon = i;
    return name_len;
}

/* A field from its stored bytes; the strings are derived from them. */
static struct header_field *
field_new(const char *raw, size_t raw_len, size_t name_len, size_t colon)
{
    size_t eol_len = 0;
    if (raw_len > colon + 1 && raw[raw_len - 1] == '\n')
        eol_len = raw_len > colon + 2 && raw[raw_len - 2] == '\r' ? 2 : 1;
    size_t value_len = raw_len - eol_len - colon - 1;

    struct header_field *f =
        malloc(sizeof(*f) + raw_len + name_len + 1 + 2 * (value_len + 1));
    if (!f)
        return NULL;
    f->raw_len = raw_len;
    f->eol_len = eol_len;
    memcpy(f->raw, raw, raw_len);
    f->name = f->raw + raw_len;
    memcpy(f->name, raw, name_len);
    f->name[name_len] = '\0';
    f->raw_value = f->name + name_len + 1;
    memcpy(f->raw_value, raw + colon + 1, value_len);
    f->raw_value[value_len] = '\0';

    /* Unfold: inside a field every line end is followed by a blank (that
     * is what made the next line part of it), so all of them go. */
    char *o = f->value = f->raw_value + value_len + 1;
    const char *v = f->raw_value;
    while (is_blank(*v) || *v == '\r' || *v == '\n') {
        if (*v == '\r' && v[1] != '\n')
            break; /* a lone CR is text */
        v++;
    }
    for (; v < f->raw_value + value_len; v++) {
        if (*v == '\n' || (*v == '\r' && v[1] == '\n'))
            continue;
        *o++ = *v;
    }
    *o = '\0';
    return f;
}

static int
list_reserve(struct header_list *l)
{
    if (l->n < l->cap)
        return 0;
    size_t cap = l->cap ? l->cap * 2 : 32;
    struct header_field **grown = realloc(l->fields, cap * sizeof(*grown));
    if (!grown)
        return -1;
    l->fields = grown;
    l->cap = cap;
    return 0;
}

static int
list_put(struct header_list *l, size_t index, struct header_field *f)
{
    if (list_reserve(l) < 0) {
        free(f);
        return -1;
    }
    if (index > l->n)
        index = l->n;
    memmove(l->fields + index + 1, l->fields + index,
            (l->n - index) * sizeof(*l->fields));
    l->fields[index] = f;
    l->n++;
    return 0;
}

header_parse_status
header_list_parse(struct header_list *l, const char *buf, size_t len,
                  bool complete, size_t *fields_len, size_t *sep_len)
{
    size_t pos = 0;

    *sep_len = 0;
    for (;;) {
        *fields_len = pos;
        if (pos == len)
            return complete ? HEADER_PARSE_END : HEADER_PARSE_MORE;
        const char *lf = memchr(buf + pos, '\n', len - pos);
        if (!lf && !complete)
            return HEADER_PARSE_MORE; /* the line is not over */
        size_t end = lf ? (size_t)(lf - buf) + 1 : len;

        if (buf[pos] == '\n' || (buf[pos] == '\r' && end == pos + 2 && lf)) {
            *sep_len = end - pos; /* the empty line */
            return HEADER_PARSE_END;
        }
        size_t colon;
        size_t name_len = field_name_len(buf + pos, end - pos, &colon);
        if (name_len == 0)
            return HEADER_PARSE_END; /* the body starts on this line */

        /* Continuation lines start with a blank. */
        while (end < len && is_blank(buf[end])) {
            lf = memchr(buf + end, '\n', len - end);
            end = lf ? (size_t)(lf - buf) + 1 : len;
        }
        if (end == len && !complete)
            return HEADER_PARSE_MORE; /* the next bytes may continue it */
        struct header_field *f =
            field_new(buf + pos, end - pos, name_len, colon);
        if (!f || list_put(l, l->n, f) < 0)
            return HEADER_PARSE_ERROR;
        pos = end;
    }
}

void
header_list_free(struct header_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->fields[i]);
    free(l->fields);
    l->fields = NULL;
    l->n = l->cap = 0;
}

bool
header_name_valid(const char *name)
{
    if (!*name)
        return false;
    for (const char *p = name; *p; p++)
        if (!is_name_char(*p))
            return false;
    return true;
}

bool
header_value_valid(const char *value)
{
    for (const char *p = value; *p; p++) {
        if (*p == '\r') {
            if (p[1] != '\n' || !is_blank(p[2]))
                return false;
            p++;
        } else if (*p == '\n') {
            return false;
        }
    }
    return true;
}

size_t
header_field_size(const char *name, const char *value)
{
    return strlen(name) + 2 + strlen(value) + 2;
}

/* "name: value\r\n" as a field. */
static struct header_field *
field_make(const char *name, size_t name_len, const char *value)
{
    size_t value_len = strlen(value);
    size_t raw_len = name_len + 2 + value_len + 2;
    char *raw = malloc(raw_len);
    if (!raw)
        return NULL;
    memcpy(raw, name, name_len);
    memcpy(raw + name_len, ": ", 2);
    memcpy(raw + name_len + 2, value, value_len);
    memcpy(raw + raw_len - 2, "\r\n", 2);
    struct header_field *f = field_new(raw, raw_len, name_len, name_len);
    free(raw);
    return f;
}

int
header_list_insert(struct header_list *l, size_t index, const char *name,
                   const char *value)
{
    struct header_field *f = field_make(name, strlen(name), value);
    if (!f)
        return -1;
    return list_put(l, index, f);
}

int
header_list_replace(struct header_list *l, size_t index, const char *value)
{
    struct header_field *old = l->fields[index];
    struct header_field *f = field_make(old->name, strlen(old->name), value);
    if (!f)
        return -1;
    l->fields[index] = f;
    free(old);
    return 0;
}

void
header_list_delete(struct header_list *l, size_t index)
{
    free(l->fields[index]);
    memmove(l->fields + index, l->fields + index + 1,
            (l->n - index - 1) * sizeof(*l->fields));
    l->n--;
}

size_t
header_list_find(const struct header_list *l, const char *name, size_t nth)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcasecmp(l->fields[i]->name, name) == 0 && nth-- == 0)
            return i;
    return SIZE_MAX;
}

/* Whether the index-th field needs a CRLF of its own when rendered. */
static bool
field_needs_eol(const struct header_list *l, size_t index, bool more_follows)
{
    return l->fields[index]->eol_len == 0 && (index + 1 < l->n || more_follows);
}

size_t
header_list_render_size(const struct header_list *l, bool more_follows)
{
    size_t size = 0;
    for (size_t i = 0; i < l->n; i++)
        size += l->fields[i]->raw_len +
                (field_needs_eol(l, i, more_follows) ? 2 : 0);
    return size;
}

void
header_list_render(const struct header_list *l, bool more_follows, char *out)
{
    for (size_t i = 0; i < l->n; i++) {
        memcpy(out, l->fields[i]->raw, l->fields[i]->raw_len);
        out += l->fields[i]->raw_len;
        if (field_needs_eol(l, i, more_follows)) {
            memcpy(out, "\r\n", 2);
            out += 2;
        }
    }
}
