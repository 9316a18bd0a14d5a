/*
 * client_rdns.h - the client's name, forward-confirmed: its address's PTR
 * names, the first of which has an A (IPv4) or AAAA (IPv6) record holding
 * that address. Bounded by dns.reverse_timeout; it runs from the accept
 * (alongside a TLS handshake and greet_pause) and the connect hook waits
 * for it, so the greeting is never delayed by more than that bound.
 */
#ifndef POSTERN_CLIENT_RDNS_H
#define POSTERN_CLIENT_RDNS_H

#include <stdbool.h>

struct session;

/* Start the lookup for s (dns.reverse on). When it ends, s->rdns holds the
 * name or stays NULL, and done(s) runs from a loop callback (never from
 * inside this call). Nothing runs when it cannot start: s->rdns stays
 * NULL and client_rdns_running() is false. */
void client_rdns_start(struct session *s, void (*done)(struct session *s));

bool client_rdns_running(const struct session *s);

/* The session closes: stop without calling done. */
void client_rdns_cancel(struct session *s);

#endif
