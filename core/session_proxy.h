/*
 * session_proxy.h - a session on a proxy_protocol listener reads the
 * PROXY header (proxy_protocol.h) before anything else: before the
 * greeting, before an implicit TLS handshake. The real client address it
 * carries replaces the connection's, then the session opens as any other
 * (session_open) and is counted against the connection limits under that
 * address.
 */
#ifndef POSTERN_SESSION_PROXY_H
#define POSTERN_SESSION_PROXY_H

#include "smtp_session.h"

/* Seconds the header may take when the listener sets no proxy_timeout. */
#define SESSION_PROXY_TIMEOUT_DEFAULT LISTENER_PROXY_TIMEOUT_DEFAULT

/* The session was just accepted and holds no connection slot: refuse a
 * peer outside the listener's proxy_networks, else wait for the header
 * (SESSION_WAIT_PROXY, bounded by the listener's proxy_timeout). */
void session_proxy_start(struct session *s);

/* The session closes: stop reading the header (no-op when not waiting). */
void session_proxy_cancel(struct session *s);

#endif
