/*
 * message_headers.h - a header section as a list of fields: parsed from
 * the bytes as stored, edited, rendered again. Pure: no I/O, no session.
 *
 * Each field keeps its bytes as stored ("Name: value\r\n", folding and
 * line ends included), so rendering an unedited list gives back the input
 * byte for byte. A field made by an edit is "Name: value\r\n".
 *
 * The header section ends at the first empty line, or, as Postfix does,
 * at the first line that is neither a field ("name:" with an optional
 * blank before the colon) nor a continuation (a line that starts with a
 * space or tab); then it has no empty line and the rest is body. A bare
 * LF is taken as a line end too.
 */
#ifndef POSTERN_MESSAGE_HEADERS_H
#define POSTERN_MESSAGE_HEADERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Most bytes of a header section that are parsed into fields; the rest of
 * a longer one counts as body (it is still stored unchanged). */
#define HEADER_SECTION_MAX (1024 * 1024)

struct header_field {
    size_t raw_len;  /* bytes as stored, with the final line end */
    size_t eol_len;  /* that line end: 2 (CRLF), 1 (LF) or 0 (none) */
    char *name;      /* as written, NUL-terminated */
    char *raw_value; /* after the colon up to the final line end */
    char *value;     /* unfolded: line ends removed, leading blanks skipped */
    char raw[];      /* raw_len bytes, then the three strings */
};

struct header_list {
    struct header_field **fields;
    size_t n, cap;
};

typedef enum header_parse_status {
    HEADER_PARSE_END,  /* the header section ended */
    HEADER_PARSE_MORE, /* the bytes ran out inside the header section */
    HEADER_PARSE_ERROR /* out of memory */
} header_parse_status;

/*
 * Append the fields at the start of buf to l. complete: buf holds the
 * whole message, so its end ends the last field (otherwise a field that
 * reaches the end of buf may go on in bytes not seen yet, and is not
 * taken). *fields_len is set to the bytes of the fields taken; on END,
 * *sep_len to the empty line after them (2 CRLF, 1 LF, 0 none). On MORE
 * the caller may parse again from buf + *fields_len with more bytes.
 */
header_parse_status header_list_parse(struct header_list *l, const char *buf,
                                      size_t len, bool complete,
                                      size_t *fields_len, size_t *sep_len);

void header_list_free(struct header_list *l);

/* RFC 5322 field name (printable ASCII but ':'); value folded only as
 * CRLF followed by a space or tab. */
bool header_name_valid(const char *name);
bool header_value_valid(const char *value);

/* Bytes a field "name: value\r\n" takes. */
size_t header_field_size(const char *name, const char *value);

/* Insert "name: value" before the index-th field (appended when index >=
 * n). Checked by the caller. 0 or -1 (out of memory). */
int header_list_insert(struct header_list *l, size_t index, const char *name,
                       const char *value);

/* Give the index-th field the value (its name as written stays). 0 or -1
 * (out of memory: the field is unchanged). */
int header_list_replace(struct header_list *l, size_t index, const char *value);

void header_list_delete(struct header_list *l, size_t index);

/* Index of the nth (0-based) field called name (any case); SIZE_MAX when
 * there are not that many. */
size_t header_list_find(const struct header_list *l, const char *name,
                        size_t nth);

/* The list as bytes. A field stored without a final line end (the message
 * ended there) gets CRLF when anything is rendered after it: another field,
 * or more_follows (an empty line or body after the section). */
size_t header_list_render_size(const struct header_list *l, bool more_follows);
/* Writes header_list_render_size() bytes to out. */
void header_list_render(const struct header_list *l, bool more_follows,
                        char *out);

#endif
