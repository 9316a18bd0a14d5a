/*
 * postern/session.h - what a handler may read about the session, the
 * transaction and the message, and where it may keep its own notes.
 *
 * Strings returned here are borrowed: valid during the handler call (and,
 * for a pending handler, until postern_resume(), even if the client
 * disconnected meanwhile). Copy what you keep longer. On an orphaned
 * context every accessor returns NULL, 0 or an empty value.
 */
#ifndef POSTERN_SESSION_H
#define POSTERN_SESSION_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "hook.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --- session (one per connection) --- */

const char *postern_session_id(const postern_ctx *ctx); /* 16 hex digits */
const char *postern_client_ip(const postern_ctx *ctx);  /* "192.0.2.1" */
int postern_client_port(const postern_ctx *ctx);
const struct sockaddr *postern_client_addr(const postern_ctx *ctx,
                                           socklen_t *len);
/* The client's forward-confirmed name: a PTR name of its address whose
 * A/AAAA records hold that address (dns.reverse, looked up before the
 * connect hook). NULL when unknown, unconfirmed, or the lookup is off. */
const char *postern_client_rdns(const postern_ctx *ctx);
/* 1 when the client address is in the main config's relay_networks (the
 * networks the relay policy lets relay; an IPv4-mapped IPv6 address
 * counts as its IPv4 address), else 0. */
int postern_client_relay(const postern_ctx *ctx);
const char *postern_local_ip(const postern_ctx *ctx);
int postern_local_port(const postern_ctx *ctx);
const char *postern_helo_name(const postern_ctx *ctx); /* NULL before HELO */
int postern_is_esmtp(const postern_ctx *ctx);          /* EHLO was used */

int postern_tls_active(const postern_ctx *ctx);
const char *postern_tls_version(const postern_ctx *ctx); /* "TLS1.3" */
const char *postern_tls_cipher(const postern_ctx *ctx);
const char *postern_tls_sni(const postern_ctx *ctx);
/* Subject DN of a client certificate verified against the CA file. */
const char *postern_tls_peer_dn(const postern_ctx *ctx);

/* The authenticated identity, NULL when the client has not authenticated. */
const char *postern_auth_user(const postern_ctx *ctx);

/* --- the auth hook: credentials under decision --- */

const char *postern_auth_mechanism(const postern_ctx *ctx); /* "PLAIN" */
const char *postern_auth_login(const postern_ctx *ctx);     /* authcid */
const char *postern_auth_password(const postern_ctx *ctx);
const char *postern_auth_authzid(const postern_ctx *ctx); /* "" if none */

/* --- transaction (MAIL to end of message or RSET) --- */

/* Queue id of the transaction: 16 hex digits, NULL outside one. */
const char *postern_transaction_id(const postern_ctx *ctx);
/* Reverse path without <>: "" for the null sender, NULL before MAIL. */
const char *postern_mail_from(const postern_ctx *ctx);
/* Value of a MAIL parameter ("SIZE", "BODY"); "" for a keyword without
 * value, NULL when absent. Keys compare case-insensitively. Each value is
 * its own string: reading one does not change another already read. */
const char *postern_mail_param(const postern_ctx *ctx, const char *key);
/* Recipients accepted so far, in order. */
size_t postern_rcpt_count(const postern_ctx *ctx);
const char *postern_rcpt_address(const postern_ctx *ctx, size_t index);
/* The rcpt hook: the recipient under decision. */
const char *postern_rcpt_current(const postern_ctx *ctx);

/* --- the message (message and store hooks) --- */

/* Size in bytes of the message as it will be stored: the headers added by
 * postern (Received, and those from postern_header_add) plus the body. */
uint64_t postern_message_size(const postern_ctx *ctx);

/*
 * A reader over the message as it will be stored. It holds its own file
 * descriptor and copy of the added headers, so it may be used from a pool
 * thread and outlives the context; close it exactly once.
 */
typedef struct postern_message_reader postern_message_reader;
postern_message_reader *postern_message_open(const postern_ctx *ctx);
/* Like read(2): bytes read, 0 at the end, -1 with errno on error. */
ssize_t postern_message_read(postern_message_reader *reader, void *buf,
                             size_t len);
void postern_message_close(postern_message_reader *reader);

/* Prepend "name: value" to the message (message hook, or earlier in the
 * transaction). 0 on success, -1 on bad input, when over the limit, or
 * (since ABI 1.3) once the store hook started. */
int postern_header_add(postern_ctx *ctx, const char *name, const char *value);

/* --- notes: a module's own data, freed with their scope --- */

typedef enum postern_note_scope {
    POSTERN_NOTE_SESSION,    /* freed when the connection closes */
    POSTERN_NOTE_TRANSACTION /* freed at RSET or the end of the message */
} postern_note_scope;

/* Set (or replace, freeing the old value) a note. free_fn may be NULL.
 * Keys are copied; use a module prefix ("spf.result"). 0 or -1. */
int postern_note_set(postern_ctx *ctx, postern_note_scope scope,
                     const char *key, void *value, void (*free_fn)(void *));
void *postern_note_get(const postern_ctx *ctx, postern_note_scope scope,
                       const char *key);

#ifdef __cplusplus
}
#endif
#endif
