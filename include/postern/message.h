/*
 * postern/message.h - the received message as structured content, and the
 * changes a module may make to the message and its envelope before it is
 * stored (the milter set). Since ABI 1.3.
 *
 * Everything here is called from the loop thread, in a handler or while it
 * is pending, unless a comment says otherwise. Changes are recorded, not
 * written: they take effect in what later readers, later handlers and the
 * store hook see. Every store module sees the changed message and envelope;
 * no change is possible once the store hook has started (calls then fail
 * with -1).
 *
 * The header section is the message's as it will be stored, in order: the
 * headers added with postern_header_add(), postern's Received line, then
 * the header fields the client sent. The core parses it once, on first
 * use, at the message hook or later; before the message hook the calls
 * below that read or change it return 0, NULL or -1.
 */
#ifndef POSTERN_MESSAGE_H
#define POSTERN_MESSAGE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "hook.h"
#include "session.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --- reading the header section (message and store hooks) --- */

/* Number of header fields, with the changes made so far. */
size_t postern_header_count(const postern_ctx *ctx);

/* The index-th field (0-based): its name as written ("Subject"). NULL when
 * index is out of range. */
const char *postern_header_name(const postern_ctx *ctx, size_t index);

/* The index-th field's value, unfolded: the CRLFs of folding removed and
 * the whitespace after the colon skipped ("Hello  world"). */
const char *postern_header_value(const postern_ctx *ctx, size_t index);

/* The index-th field's value as it will be stored: everything after the
 * colon up to, not including, the final CRLF, folding kept (" Hello\r\n
 * world"). What a DKIM signer with simple canonicalization needs. */
const char *postern_header_raw(const postern_ctx *ctx, size_t index);

/* The unfolded value of the nth (0-based) field called name (compared
 * case-insensitively), or NULL when there are not that many. */
const char *postern_header_get(const postern_ctx *ctx, const char *name,
                               size_t nth);

/* --- changing the header section (message hook, or a pending one) --- */

/* Insert "name: value" before the index-th field; index >= the count
 * appends at the end of the header section. value follows the rules of
 * postern_header_add() (folding only as CRLF + space or tab). 0, or -1 on
 * bad input, when over the limit of added bytes, or outside the hook. */
int postern_header_insert(postern_ctx *ctx, size_t index, const char *name,
                          const char *value);

/* Replace the value of the nth (0-based) field called name; value NULL
 * deletes the field. 0, or -1 when there is no such field or on bad
 * input. */
int postern_header_change(postern_ctx *ctx, const char *name, size_t nth,
                          const char *value);

/* --- the body: from its first byte, and its replacement --- */

/* A reader (postern/session.h) over the body only: the bytes after the
 * empty line that ends the header section (after the replacement, if one
 * was committed). Same rules as postern_message_open(): own descriptor,
 * usable from a pool thread, outlives the context, closed once. */
postern_message_reader *postern_body_open(const postern_ctx *ctx);

/* Size of the body in bytes, with the changes made so far. */
uint64_t postern_body_size(const postern_ctx *ctx);

/*
 * Replace the body, streamed: the new body is written to its own spool
 * file, never held in memory. Begin on the loop thread (message hook or
 * a pending one); write from any one thread at a time; then commit (loop
 * thread) to make it the body, or abort to drop it. Bytes are stored as
 * given: CRLF line ends, no dot-stuffing. The message size limit of the
 * session applies to the result. A second commit replaces the first.
 */
typedef struct postern_body_writer postern_body_writer;
postern_body_writer *postern_body_replace(postern_ctx *ctx);
/* 0, or -1 with errno (EFBIG past the size limit, EIO). */
int postern_body_write(postern_body_writer *writer, const void *buf,
                       size_t len);
/* 0 when the new body is in place; -1 (the old body stays) otherwise.
 * Frees the writer either way. */
int postern_body_commit(postern_ctx *ctx, postern_body_writer *writer);
void postern_body_abort(postern_body_writer *writer);

/* --- changing the envelope (mail hook and later, before store) --- */

/* Change the reverse path ("" is the null sender) and, when params is not
 * NULL, replace the MAIL parameters ("SIZE=100 BODY=8BITMIME"). 0 or -1 on
 * a syntactically bad address. */
int postern_mail_from_set(postern_ctx *ctx, const char *address,
                          const char *params);

/* Add a recipient (no <>); adding one already there is a no-op. 0 or -1.
 * Recipients added here skip the rcpt hook and the relay policy: the
 * module that adds one vouches for it. */
int postern_rcpt_add(postern_ctx *ctx, const char *address);

/* Delete a recipient (compared as the core de-duplicates: domain
 * case-insensitive). 0, or -1 when it is not there. A message whose
 * recipients were all deleted is discarded: 250, nothing stored, logged. */
int postern_rcpt_delete(postern_ctx *ctx, const char *address);

/* --- what becomes of the message --- */

/* Mark the message for quarantine, with a reason (cut at 400 bytes). It is
 * still stored by the store chain; store modules honour the mark (store_file
 * delivers into its quarantine folder, store_http sends the reason). 0 or
 * -1. The first reason stays. */
int postern_message_quarantine(postern_ctx *ctx, const char *reason);

/* The quarantine reason, or NULL when the message is not quarantined. */
const char *postern_message_quarantined(const postern_ctx *ctx);

/* 1 when a handler answered POSTERN_DISCARD for this transaction. */
int postern_message_discarded(const postern_ctx *ctx);

#ifdef __cplusplus
}
#endif
#endif
