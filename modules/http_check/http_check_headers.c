/*
 * http_check_headers.c - text for the policy service's JSON: any bytes
 * made UTF-8 (JSON carries nothing else, and an SMTP client may send any
 * byte in a header), and a message's header section as unfolded fields.
 *
 * Pure functions of their input (no hook context): the fuzz harness
 * tests/fuzz/fuzz_http_check.c drives them with arbitrary bytes.
 */
#include <stdlib.h>
#include <string.h>

#include "http_check.h"

/* --- UTF-8 ---------------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at p (at most n bytes), or 0
 * (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF). */
static size_t
http_check_utf8_len(const unsigned char *p, size_t n)
{
    unsigned char lo = 0x80, hi = 0xbf;
    size_t len;

    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        len = 2;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        len = 3;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        len = 4;
    else
        return 0;
    if (n < len)
        return 0;
    if (p[0] == 0xe0)
        lo = 0xa0;
    else if (p[0] == 0xed)
        hi = 0x9f;
    else if (p[0] == 0xf0)
        lo = 0x90;
    else if (p[0] == 0xf4)
        hi = 0x8f;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return len;
}

json_t *
http_check_text(const char *s, size_t len)
{
    static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    if (s == NULL)
        return json_null();
    while (i < len && http_check_utf8_len(p + i, len - i) > 0)
        i += http_check_utf8_len(p + i, len - i);
    if (i == len)
        return json_stringn(s, len);

    /* Each bad byte becomes 3 bytes at most. */
    char *fixed = malloc(len * 3 + 1);
    if (fixed == NULL)
        return NULL;
    memcpy(fixed, s, i);
    size_t k = i;
    while (i < len) {
        size_t n = http_check_utf8_len(p + i, len - i);
        if (n == 0) {
            memcpy(fixed + k, replacement, 3);
            k += 3;
            i++;
        } else {
            memcpy(fixed + k, s + i, n);
            k += n;
            i += n;
        }
    }
    json_t *out = json_stringn(fixed, k);
    free(fixed);
    return out;
}

/* --- the header section --------------------------------------------------- */

static bool
http_check_wsp(char c)
{
    return c == ' ' || c == '\t';
}

/* A field name (RFC 5322 3.6.8): printable ASCII except ':'. */
static bool
http_check_name_valid(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 33 || (unsigned char)s[i] > 126 ||
            s[i] == ':')
            return false;
    return true;
}

/* Append {"name", "value"} to fields; value without its surrounding
 * blanks. 0 or -1. */
static int
http_check_field_add(json_t *fields, const char *name, size_t name_len,
                     const char *value, size_t value_len)
{
    while (value_len > 0 && http_check_wsp(value[0])) {
        value++;
        value_len--;
    }
    while (value_len > 0 && http_check_wsp(value[value_len - 1]))
        value_len--;
    json_t *field = json_object();
    if (field == NULL ||
        json_object_set_new(field, "name", http_check_text(name, name_len)) !=
            0 ||
        json_object_set_new(field, "value",
                            http_check_text(value, value_len)) != 0 ||
        json_array_append_new(fields, field) != 0) {
        json_decref(field);
        return -1;
    }
    return 0;
}

json_t *
http_check_parse_headers(const char *data, size_t len, bool eof, bool *complete)
{
    json_t *fields = json_array();
    /* The field being built: its name, and its value unfolded (the line
     * breaks before continuation lines taken out). */
    const char *name = NULL;
    size_t name_len = 0;
    char *value = malloc(len + 1);
    size_t value_len = 0;
    size_t pos = 0;

    *complete = false;
    if (fields == NULL || value == NULL)
        goto fail;
    while (pos < len) {
        const char *line = data + pos;
        const char *lf = memchr(line, '\n', len - pos);
        if (lf == NULL && !eof)
            break; /* cut: the field may go on beyond what was read */
        size_t line_len = lf ? (size_t)(lf - line) : len - pos;
        pos += line_len + (lf != NULL);
        if (line_len > 0 && line[line_len - 1] == '\r')
            line_len--;
        if (line_len > 0 && http_check_wsp(line[0]) && name != NULL) {
            memcpy(value + value_len, line, line_len);
            value_len += line_len;
            continue;
        }
        if (name != NULL &&
            http_check_field_add(fields, name, name_len, value, value_len) != 0)
            goto fail;
        name = NULL;
        const char *colon = memchr(line, ':', line_len);
        size_t n = colon ? (size_t)(colon - line) : 0;
        while (n > 0 && http_check_wsp(line[n - 1]))
            n--; /* "Subject :" (RFC 5322 4.5.3, obsolete but seen) */
        if (colon == NULL || !http_check_name_valid(line, n)) {
            /* The empty line, or a line that is no field: the body. */
            *complete = true;
            break;
        }
        name = line;
        name_len = n;
        value_len = line_len - (size_t)(colon + 1 - line);
        memcpy(value, colon + 1, value_len);
    }
    /* A field still open when the data ran out may lack continuation
     * lines: it is left out rather than sent cut, unless the message
     * ended there. */
    if (!*complete && eof) {
        *complete = true;
        if (name != NULL &&
            http_check_field_add(fields, name, name_len, value, value_len) != 0)
            goto fail;
    }
    free(value);
    return fields;
fail:
    free(value);
    json_decref(fields);
    return NULL;
}
