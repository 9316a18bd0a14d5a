/*
 * message_content.h - the received message as structured content: its
 * header section as a list of fields, and where its body is. Made on first
 * use (postern/message.h), at the message hook or later, once per
 * transaction; nothing is parsed for a message no module asks about.
 *
 * The list covers the whole header section as stored: the headers added
 * with postern_header_add(), postern's Received, then the client's fields,
 * read from the spool up to HEADER_SECTION_MAX bytes. The body is the
 * spool from the end of the header section on, or a replacement spool
 * once one is committed. While nothing was changed, readers take the
 * plain way of message.c; once something was, they get the rendered
 * list and the body from here.
 */
#ifndef POSTERN_MESSAGE_CONTENT_H
#define POSTERN_MESSAGE_CONTENT_H

#include <stdbool.h>
#include <stdint.h>

#include "message_headers.h"

struct spool;
struct transaction;

struct message_content {
    struct header_list headers;
    size_t added_end;     /* where postern_header_add() inserts: before
                             the Received line */
    size_t added_bytes;   /* bytes of fields inserted or changed */
    uint64_t body_offset; /* in the transaction's spool */
    size_t sep_len;       /* the empty line after the section, as stored */
    bool sep_lf;          /* ... and it is a bare LF */
    bool changed;         /* the message differs from what was received */
    struct spool *body;   /* a committed replacement, or NULL */
    uint64_t body_size;
};

/* The transaction's content, parsed on first call. NULL before the end of
 * the data, or when out of memory or the spool cannot be read (a later
 * call tries again). Loop thread. */
struct message_content *message_content_get(struct transaction *tx);

void message_content_free(struct message_content *c);

/* Whether size more bytes of inserted or changed fields stay within the
 * bound of added headers (MESSAGE_ADDED_HEADERS_MAX, with those added
 * before the parse). */
bool message_content_room(const struct transaction *tx,
                          const struct message_content *c, size_t size);

/* Add a header the way postern_header_add() does, after the parse. 0 or
 * -1 (bad input, over the limit, out of memory). */
int message_content_add(struct transaction *tx, const char *name,
                        const char *value);

/* The bytes between the header fields and the body: the stored empty
 * line, or CRLF when a replaced body needs one. */
size_t message_content_sep(const struct message_content *c, const char **sep);

/* Size of the header section with its empty line, as rendered now. */
uint64_t message_content_header_size(const struct message_content *c);

/* Size of the message as it will be stored, with the changes. */
uint64_t message_content_size(const struct message_content *c);

/* Render the header section and its empty line into a new buffer; NULL
 * when out of memory (or *len 0 and a 1-byte buffer). */
char *message_content_render(const struct message_content *c, size_t *len);

/* Where the body is: its spool (the replacement or the transaction's), its
 * first byte there and its size. */
struct spool *message_content_body(const struct transaction *tx,
                                   const struct message_content *c,
                                   uint64_t *offset, uint64_t *size);

/* Make sp (a finished spool holding size bytes) the body; the previous
 * replacement, if any, is let go. */
void message_content_set_body(struct message_content *c, struct spool *sp,
                              uint64_t size);

#endif
