/*
 * postern/dns.h - asynchronous DNS lookups for modules.
 *
 * The core resolves with c-ares on its own loop: no call here blocks, no
 * thread runs per lookup. Resolvers come from /etc/resolv.conf unless the
 * main config names them ("dns": {"servers": ["127.0.0.1:5353"]}).
 * Answers are cached by the core within their TTL (bounded in entries), so
 * asking the same name again, as SPF does, is cheap.
 *
 * Everything here is called on the loop thread. A lookup's callback runs
 * exactly once, later (never from inside postern_dns_lookup()), unless the
 * module cancelled the lookup first; then it never runs.
 *
 * A lookup started with a hook context belongs to that call: when the
 * client goes away and the context is orphaned, the lookup is abandoned
 * and its callback runs soon with POSTERN_DNS_CANCELLED, so the module
 * frees its state and calls postern_resume() as always. Once that call is
 * over (the handler returned a decision, or resumed), a lookup still
 * running just goes on; started with a ctx whose call is already over or
 * orphaned, it completes soon with POSTERN_DNS_CANCELLED. The core never
 * calls back into memory the module freed after postern_dns_cancel().
 * When postern stops, every lookup still running completes with
 * POSTERN_DNS_CANCELLED before the modules are destroyed.
 */
#ifndef POSTERN_DNS_H
#define POSTERN_DNS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "hook.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Record types, numbered as on the wire. */
typedef enum postern_dns_type {
    POSTERN_DNS_A = 1,
    POSTERN_DNS_PTR = 12,
    POSTERN_DNS_MX = 15,
    POSTERN_DNS_TXT = 16,
    POSTERN_DNS_AAAA = 28
} postern_dns_type;

typedef enum postern_dns_status {
    POSTERN_DNS_OK,       /* one or more records */
    POSTERN_DNS_NXDOMAIN, /* the name does not exist */
    POSTERN_DNS_NODATA,   /* the name exists, with no record of the type */
    POSTERN_DNS_TEMPFAIL, /* timeout, SERVFAIL or REFUSED from every
                             server, no server answered */
    POSTERN_DNS_ERROR,    /* malformed answer, FORMERR, NOTIMP, no memory */
    POSTERN_DNS_CANCELLED /* the hook context was orphaned */
} postern_dns_status;

/* The answer: opaque, read with the accessors below, valid only during
 * the callback. Records come in the order the server gave them. */
typedef struct postern_dns_result postern_dns_result;

size_t postern_dns_count(const postern_dns_result *r);
/* Smallest TTL of the records, in seconds (what is left of it for an
 * answer from the cache). */
uint32_t postern_dns_ttl(const postern_dns_result *r);
/* A / AAAA: the address of record i as a sockaddr_in / sockaddr_in6
 * (port 0); 0, or -1 when i or the type does not fit. */
int postern_dns_addr(const postern_dns_result *r, size_t i,
                     struct sockaddr_storage *out, socklen_t *len);
/* MX: the exchange; PTR: the name. No trailing dot. */
const char *postern_dns_name(const postern_dns_result *r, size_t i);
/* MX: the preference of record i. */
unsigned postern_dns_mx_preference(const postern_dns_result *r, size_t i);
/* TXT: the character-strings of record i joined without separator
 * (RFC 7208 3.3), and its length (it may hold NUL bytes). */
const char *postern_dns_txt(const postern_dns_result *r, size_t i, size_t *len);

typedef void (*postern_dns_cb)(void *arg, postern_dns_status status,
                               const postern_dns_result *result);

typedef struct postern_dns_query postern_dns_query;

/*
 * Look up name (a domain, no trailing dot needed) for type. ctx ties the
 * lookup to a hook call (see above) and may be NULL. timeout is in
 * seconds; 0 takes the configured default. Returns a handle for
 * postern_dns_cancel(), or NULL if the lookup could not start (bad name,
 * out of memory); then cb never runs.
 */
postern_dns_query *postern_dns_lookup(postern_ctx *ctx, const char *name,
                                      postern_dns_type type, double timeout,
                                      postern_dns_cb cb, void *arg);

/* Stop caring: cb will not run. Only before cb ran. */
void postern_dns_cancel(postern_dns_query *query);

/* The reverse name for an address: "4.3.2.1.in-addr.arpa" or the
 * nibble form under ip6.arpa. 0, or -1 if out is too small (73 bytes is
 * always enough) or the family is neither AF_INET nor AF_INET6. */
int postern_dns_reverse_name(const struct sockaddr *addr, char *out,
                             size_t size);

#ifdef __cplusplus
}
#endif
#endif
