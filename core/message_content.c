/*
 * message_content.c - the header section parsed from what was received,
 * and where the body is (see message_content.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "message.h"
#include "message_content.h"
#include "smtp_session.h"
#include "spool.h"

/* The first read of the spool: enough for nearly every header section. */
#define CONTENT_FIRST_READ (64 * 1024)

/* Read len bytes of the spool at off; 0 or -1. */
static int
content_read(struct spool *sp, char *buf, size_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t n = spool_pread(sp, buf, len, off);
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* Fields postern made itself: they parse whole, with nothing after. */
static int
content_parse_own(struct header_list *l, const char *buf, size_t len)
{
    size_t fields_len, sep_len;
    if (len == 0)
        return 0;
    if (header_list_parse(l, buf, len, true, &fields_len, &sep_len) !=
            HEADER_PARSE_END ||
        fields_len != len)
        return -1;
    return 0;
}

/* The client's header section: read from the spool, in one read for the
 * usual case and one more, up to HEADER_SECTION_MAX, for a long one. */
static int
content_parse_spool(struct message_content *c, struct spool *sp, uint64_t size)
{
    size_t window =
        size < CONTENT_FIRST_READ ? (size_t)size : CONTENT_FIRST_READ;
    size_t taken = 0, fields_len = 0, sep_len = 0;
    char *buf = malloc(window ? window : 1);
    header_parse_status st;

    if (!buf || content_read(sp, buf, window, 0) < 0)
        goto fail;
    st = header_list_parse(&c->headers, buf, window, window == size,
                           &fields_len, &sep_len);
    taken = fields_len;
    if (st == HEADER_PARSE_MORE && window < HEADER_SECTION_MAX) {
        size_t more =
            size < HEADER_SECTION_MAX ? (size_t)size : HEADER_SECTION_MAX;
        char *grown = realloc(buf, more);
        if (!grown)
            goto fail;
        buf = grown;
        if (content_read(sp, buf + window, more - window, window) < 0)
            goto fail;
        st = header_list_parse(&c->headers, buf + taken, more - taken,
                               more == size, &fields_len, &sep_len);
        taken += fields_len;
    }
    if (st == HEADER_PARSE_ERROR)
        goto fail;
    /* MORE here: the section is longer than the bound; the rest of it
     * counts as body. */
    c->body_offset = taken + sep_len;
    c->sep_len = sep_len;
    c->sep_lf = sep_len == 1;
    free(buf);
    return 0;
fail:
    free(buf);
    return -1;
}

struct message_content *
message_content_get(struct transaction *tx)
{
    if (tx->content)
        return tx->content;
    if (!tx->received || !tx->spool)
        return NULL; /* the data is not over */
    struct message_content *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    if (content_parse_own(&c->headers, tx->headers, tx->headers_len) < 0)
        goto fail;
    c->added_end = c->headers.n;
    if (content_parse_own(&c->headers, tx->received, tx->received_len) < 0 ||
        content_parse_spool(c, tx->spool, tx->body_size) < 0)
        goto fail;
    c->body_size = tx->body_size - c->body_offset;
    tx->content = c;
    return c;
fail:
    message_content_free(c);
    return NULL;
}

void
message_content_free(struct message_content *c)
{
    if (!c)
        return;
    header_list_free(&c->headers);
    spool_free(c->body);
    free(c);
}

bool
message_content_room(const struct transaction *tx,
                     const struct message_content *c, size_t size)
{
    return tx->headers_len + c->added_bytes + size <= MESSAGE_ADDED_HEADERS_MAX;
}

int
message_content_add(struct transaction *tx, const char *name, const char *value)
{
    struct message_content *c = tx->content;
    size_t size = header_field_size(name, value);

    if (!header_name_valid(name) || !header_value_valid(value) ||
        !message_content_room(tx, c, size))
        return -1;
    if (header_list_insert(&c->headers, c->added_end, name, value) < 0)
        return -1;
    c->added_end++;
    c->added_bytes += size;
    c->changed = true;
    return 0;
}

size_t
message_content_sep(const struct message_content *c, const char **sep)
{
    if (c->sep_len == 0 && c->body) {
        /* the new body must not read as more header fields */
        *sep = "\r\n";
        return 2;
    }
    *sep = c->sep_lf ? "\n" : "\r\n";
    return c->sep_len;
}

uint64_t
message_content_header_size(const struct message_content *c)
{
    const char *sep;
    size_t sep_len = message_content_sep(c, &sep);
    return header_list_render_size(&c->headers,
                                   sep_len > 0 || c->body_size > 0) +
           sep_len;
}

uint64_t
message_content_size(const struct message_content *c)
{
    return message_content_header_size(c) + c->body_size;
}

char *
message_content_render(const struct message_content *c, size_t *len)
{
    const char *sep;
    size_t sep_len = message_content_sep(c, &sep);
    bool more = sep_len > 0 || c->body_size > 0;
    size_t fields = header_list_render_size(&c->headers, more);
    char *out = malloc(fields + sep_len + 1);

    if (!out)
        return NULL;
    header_list_render(&c->headers, more, out);
    memcpy(out + fields, sep, sep_len);
    *len = fields + sep_len;
    return out;
}

struct spool *
message_content_body(const struct transaction *tx,
                     const struct message_content *c, uint64_t *offset,
                     uint64_t *size)
{
    *size = c->body_size;
    if (c->body) {
        *offset = 0;
        return c->body;
    }
    *offset = c->body_offset;
    return tx->spool;
}

void
message_content_set_body(struct message_content *c, struct spool *sp,
                         uint64_t size)
{
    spool_free(c->body); /* readers still open keep their reference */
    c->body = sp;
    c->body_size = size;
    c->changed = true;
}
