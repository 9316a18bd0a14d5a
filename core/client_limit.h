/*
 * client_limit.h - connection counting: total, and per client address
 * (IPv4, and IPv4-mapped IPv6 as IPv4) or per IPv6 network of
 * limits.connections_per_ip_ipv6_prefix bits (/64 by default); and the
 * rate limits per client address: new connections per second, messages
 * per minute, failed AUTH per hour (token buckets). Exempt networks are
 * counted in the total only, and never rate-limited. The counts live in
 * shared memory (shared_state.h), so they hold across worker processes.
 */
#ifndef POSTERN_CLIENT_LIMIT_H
#define POSTERN_CLIENT_LIMIT_H

#include <stdbool.h>
#include <sys/socket.h>

#include "config.h"

typedef enum client_limit_verdict {
    CLIENT_LIMIT_OK,
    CLIENT_LIMIT_TOTAL,        /* too many connections in all */
    CLIENT_LIMIT_PER_IP,       /* too many from this address */
    CLIENT_LIMIT_RATE,         /* new connections from it come too fast */
    CLIENT_LIMIT_MESSAGE_RATE, /* it sent too many messages lately */
    CLIENT_LIMIT_AUTH_RATE     /* it failed AUTH too often lately */
} client_limit_verdict;

/* Count a new connection, or say which limit it breaks. *per_ip tells
 * whether a per-address slot was taken (release it with the same flag). */
client_limit_verdict client_limit_acquire(const struct config *cfg,
                                          const struct sockaddr *addr,
                                          bool *per_ip);
void client_limit_release(const struct sockaddr *addr, bool per_ip);
unsigned client_limit_total(void);

/* A MAIL command: OK, or CLIENT_LIMIT_MESSAGE_RATE (then it is not
 * counted). */
client_limit_verdict client_limit_message(const struct config *cfg,
                                          const struct sockaddr *addr);
/* Before AUTH: OK, or CLIENT_LIMIT_AUTH_RATE once the address used up its
 * failures. After a failed AUTH: count it. */
client_limit_verdict client_limit_auth_check(const struct config *cfg,
                                             const struct sockaddr *addr);
void client_limit_auth_failed(const struct config *cfg,
                              const struct sockaddr *addr);

/* The limits key a verdict is about ("connections_per_ip", ...), for
 * replies and logs, so an operator finds what to change. */
const char *client_limit_name(client_limit_verdict v);

/* Tests: the clock the token buckets run on (seconds, monotonic); NULL
 * puts back CLOCK_MONOTONIC. */
void client_limit_set_clock(double (*now)(void));

#endif
