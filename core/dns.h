/*
 * dns.h - the core's resolver behind include/postern/dns.h: c-ares on the
 * libev loop, a TTL cache, lookups tied to hook calls.
 */
#ifndef POSTERN_DNS_INTERNAL_H
#define POSTERN_DNS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "config.h"
#include "postern/dns.h"

/* Answers without a SOA to take a negative TTL from (RFC 2308 5) are
 * cached this long; every TTL is capped at DNS_MAX_TTL. */
#define DNS_NEGATIVE_TTL 60
#define DNS_MAX_TTL 86400

/* Start the resolver on loop: servers from cfg->dns.servers, or from
 * /etc/resolv.conf when there are none. 0, or -1 with one line in err. */
int dns_init(struct ev_loop *loop, const struct dns_config *cfg, char *err,
             size_t errlen);

/* Shutting down, before the modules are destroyed: every lookup still
 * running completes now with POSTERN_DNS_CANCELLED, then c-ares, the cache
 * and the watchers go. New lookups fail from here on. */
void dns_shutdown(void);

/* --- for the unit tests --- */

/* A c-ares status (ares_query's callback, or a parser) as ours. */
postern_dns_status dns_status_from_ares(int ares_status);

/*
 * Walk a DNS answer: the smallest TTL of the answer section (*answer_ttl,
 * 0 when it is empty) and, from a SOA in the authority section, the
 * negative TTL of RFC 2308 5 (the smaller of the SOA's TTL and its
 * MINIMUM; *have_negative false when there is no SOA). *n_answers gets
 * the answer count. 0, or -1 on a malformed message.
 */
int dns_answer_walk(const unsigned char *abuf, size_t alen,
                    uint32_t *answer_ttl, uint32_t *negative_ttl,
                    bool *have_negative, size_t *n_answers);

/* Entries in the cache now (expired ones may still count until met). */
size_t dns_cache_size(void);

#endif
