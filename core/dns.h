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

/* Start the resolver on loop: servers from cfg->dns.servers, or from
 * /etc/resolv.conf when there are none. 0, or -1 with one line in err. */
int dns_init(struct ev_loop *loop, const struct dns_config *cfg, char *err,
             size_t errlen);

/* Shutting down, before the modules are destroyed: every lookup still
 * running completes now with POSTERN_DNS_CANCELLED, then c-ares, the cache
 * and the watchers go. New lookups fail from here on. */
void dns_shutdown(void);

/* --- for the unit tests --- */

/* Entries in the cache now (expired ones may still count until met). */
size_t dns_cache_size(void);

#endif
