/*
 * client_limit.h - connection counting: total, and per client address
 * (IPv4, and IPv4-mapped IPv6 as IPv4) or per IPv6 network of
 * limits.connections_per_ip_ipv6_prefix bits (/64 by default). Exempt
 * networks are not counted per address. Loop thread only.
 */
#ifndef POSTERN_CLIENT_LIMIT_H
#define POSTERN_CLIENT_LIMIT_H

#include <stdbool.h>
#include <sys/socket.h>

#include "config.h"

typedef enum client_limit_verdict {
    CLIENT_LIMIT_OK,
    CLIENT_LIMIT_TOTAL, /* too many connections in all */
    CLIENT_LIMIT_PER_IP /* too many from this address */
} client_limit_verdict;

/* Count a new connection, or say which limit it breaks. *per_ip tells
 * whether a per-address slot was taken (release it with the same flag). */
client_limit_verdict client_limit_acquire(const struct config *cfg,
                                          const struct sockaddr *addr,
                                          bool *per_ip);
void client_limit_release(const struct sockaddr *addr, bool per_ip);
unsigned client_limit_total(void);

#endif
