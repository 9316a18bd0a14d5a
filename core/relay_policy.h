/*
 * relay_policy.h - the built-in relay policy, last in the rcpt chain: a
 * recipient nobody accepted is taken only for a local domain, an
 * authenticated client or a client in relay_networks. No open relay.
 */
#ifndef POSTERN_RELAY_POLICY_H
#define POSTERN_RELAY_POLICY_H

#include <stdbool.h>

struct session;

bool relay_policy_allows(const struct session *s, const char *addr);

#endif
