/*
 * tls.h - TLS for sessions with GnuTLS: credentials (several certificates,
 * picked by SNI), the priority string, session tickets for resumption
 * (one master key per daemon start, shared by the workers),
 * optional client certificates, STARTTLS (RFC 3207) and implicit TLS
 * (RFC 8314). Credentials are reference-counted so a reload (SIGHUP)
 * swaps them for new sessions while old sessions keep theirs.
 */
#ifndef POSTERN_TLS_H
#define POSTERN_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "smtp_parse.h"

struct session;

/* Load credentials when any listener uses TLS and, the first time only,
 * make the session ticket master key; 0 or -1 with err. Call it before
 * forking workers so they share the key. Called again with a new config
 * (a reload), it replaces the credentials and keeps the key; on error the
 * old state stays. cfg must outlive the TLS state (until the next
 * tls_init or tls_deinit). */
int tls_init(const struct config *cfg, char *err, size_t errlen);
/* Load cfg's credentials and drop them: --check-config and the check of a
 * new config on reload. Touches no state (unlike tls_init + tls_deinit,
 * which would wipe the ticket key). 0 or -1 with err. */
int tls_check(const struct config *cfg, char *err, size_t errlen);
/* Re-read certificates and keys; on error the old ones stay. The ticket
 * key is kept. */
int tls_reload(char *err, size_t errlen);
/* Drop the credentials and wipe the ticket key (daemon exit). */
void tls_deinit(void);

bool tls_can_starttls(const struct session *s);
void tls_command(struct session *s, const struct smtp_command *cmd);
/* Implicit TLS: start the handshake on a new session. 0 or -1. */
int tls_start(struct session *s);
/* STARTTLS after the 220 reply went out. */
void tls_begin_handshake(struct session *s);
void tls_handshake_done(struct session *s, int ok);
void tls_session_release(struct session *s);

#endif
