/*
 * tls.h - TLS for sessions with GnuTLS: credentials (several certificates,
 * picked by SNI), the priority string, session tickets for resumption,
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

/* Load credentials when any listener uses TLS; 0 or -1 with err. */
int tls_init(const struct config *cfg, char *err, size_t errlen);
/* Re-read certificates and keys; on error the old ones stay. */
int tls_reload(char *err, size_t errlen);
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
