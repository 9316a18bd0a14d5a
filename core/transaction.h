/*
 * transaction.h - the mail transaction of a session: from MAIL to the end
 * of the message, RSET, EHLO or the close. Owns the envelope, the spool
 * and what modules added (notes, headers).
 */
#ifndef POSTERN_TRANSACTION_H
#define POSTERN_TRANSACTION_H

#include <stdbool.h>
#include <stddef.h>

#include "postern/hook.h"

struct session;
struct transaction;

/* A new transaction with its id, or NULL when out of memory. */
struct transaction *transaction_new(void);
void transaction_free(struct transaction *tx);

/* End the session's transaction, if any: its final log line, reset
 * hook, free, back to HELO. */
void transaction_end(struct session *s);

/* The same for a transaction ended before its outcome (RSET, EHLO, QUIT,
 * a closed connection): logged result=aborted reason=why (a static
 * string). */
void transaction_abort(struct session *s, const char *why);

/* The outcome of the transaction is the reply code sent for it (at MAIL,
 * DATA or the end of the message); its stage is the last hook run. */
void transaction_outcome(struct transaction *tx, int code);

/* The store hook accepted: remember who stored it and under which id
 * (copied; NULL ok). */
void transaction_stored(struct transaction *tx, const char *by, const char *id,
                        size_t id_len);

/* The final line of s->tx alone (transaction_end() writes it); for a
 * transaction set aside rather than ended. */
void transaction_log_end(const struct session *s);

/* Monotonic milliseconds, for the stage times of the final line. */
double transaction_clock_ms(void);

/* Add a recipient unless the same mailbox is already there (local parts
 * are case-sensitive, RFC 5321 2.4; domains are not). 0 added, 1 already
 * there, -1 out of memory. */
int transaction_add_rcpt(struct transaction *tx, const char *addr, size_t len);

/* A handler of hook answered POSTERN_DISCARD (the session's hook context
 * names it): the message will be accepted and dropped. The first stays. */
void transaction_discard(struct session *s, postern_hook hook);

/* The message is to be dropped: discarded, or every recipient deleted. */
bool transaction_dropped(const struct transaction *tx);

/* Delete the recipient that is the same mailbox as addr (as above); its
 * string is retired, not freed. 0, or -1 when it is not there or out of
 * memory (then nothing changed). */
int transaction_delete_rcpt(struct transaction *tx, const char *addr);

/* Keep str (malloc'd) until the transaction is freed: a string a module
 * may still hold after the envelope changed. Make room for n first (0, or
 * -1 when out of memory); retiring into that room cannot fail. */
int transaction_retire_room(struct transaction *tx, size_t n);
void transaction_retire(struct transaction *tx, char *str);

#endif
