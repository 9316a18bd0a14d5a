/*
 * transaction.h - the mail transaction of a session: from MAIL to the end
 * of the message, RSET, EHLO or the close. Owns the envelope, the spool
 * and what modules added (notes, headers).
 */
#ifndef POSTERN_TRANSACTION_H
#define POSTERN_TRANSACTION_H

#include <stddef.h>

struct session;
struct transaction;

/* A new transaction with its id, or NULL when out of memory. */
struct transaction *transaction_new(void);
void transaction_free(struct transaction *tx);

/* End the session's transaction, if any: reset hook, free, back to HELO. */
void transaction_end(struct session *s);

/* Add a recipient unless the same mailbox is already there (local parts
 * are case-sensitive, RFC 5321 2.4; domains are not). 0 added, 1 already
 * there, -1 out of memory. */
int transaction_add_rcpt(struct transaction *tx, const char *addr, size_t len);

#endif
