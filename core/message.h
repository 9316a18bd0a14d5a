/*
 * message.h - the message as it will be stored: the header lines postern
 * adds (module headers, then its own Received) in memory, followed by the
 * spooled body. Readers (include/postern/session.h) see the two as one.
 */
#ifndef POSTERN_MESSAGE_INTERNAL_H
#define POSTERN_MESSAGE_INTERNAL_H

#include "smtp_session.h"

/* Most bytes of headers modules may add to one message. */
#define MESSAGE_ADDED_HEADERS_MAX (64 * 1024)

/* Prepend "name: value" (folded as given, CRLF-terminated). 0 or -1. */
int message_add_header(struct transaction *tx, const char *name,
                       const char *value);

/* Add the RFC 5321 4.4 trace header for this session and transaction. */
int message_add_received(const struct session *s);

/* Size of the message as stored (added headers + body). */
uint64_t message_size(const struct transaction *tx);

#endif
