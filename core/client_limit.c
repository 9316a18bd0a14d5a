/*
 * client_limit.c - connection counters and rate limits per client address
 * (see client_limit.h), on the shared table of shared_state.c: one lock
 * round trip per accept, close, MAIL or AUTH.
 *
 * An IPv6 client is keyed by its network, the address with every bit past
 * limits.connections_per_ip_ipv6_prefix cleared: one site gets a /64 and
 * picks any of its 2^64 addresses, so counting per /128 limits nothing.
 * IPv4 (and IPv4-mapped IPv6) is keyed by the address. A release has no
 * config, so the prefix in use is kept in the shared counts: it is taken
 * from the config when nothing is counted, and stays while anything is, so
 * every release finds the entry its acquire took (a changed prefix applies
 * once the counted connections are gone).
 *
 * Rates are token buckets per client: a bucket holds up to `capacity`
 * tokens, refills at `per_second`, and each event takes one; with less
 * than one token the event is refused and takes nothing. All three are
 * refilled together whenever the client is looked at.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <netinet/in.h>

#include "client_limit.h"
#include "shared_state.h"

enum { RATE_CONNECT, RATE_MESSAGE, RATE_AUTH };

struct bucket_rule {
    double per_second; /* 0: this limit is off */
    double capacity;
};

static double (*clock_now)(void);

void
client_limit_set_clock(double (*now)(void))
{
    clock_now = now;
}

static double
now_seconds(void)
{
    if (clock_now)
        return clock_now();
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
bucket_rules(const struct config *cfg, struct bucket_rule r[SHARED_RATES])
{
    const struct limits_config *l = &cfg->limits;
    double burst = l->connection_rate_burst;
    r[RATE_CONNECT] =
        (struct bucket_rule){l->connection_rate, burst >= 1 ? burst : 1};
    r[RATE_MESSAGE] = (struct bucket_rule){
        l->message_rate / 60.0, l->message_rate >= 1 ? l->message_rate : 1};
    r[RATE_AUTH] = (struct bucket_rule){
        l->auth_failure_rate / 3600.0,
        l->auth_failure_rate >= 1 ? l->auth_failure_rate : 1};
}

/* Bring the buckets of c up to now (a new entry starts full), and note
 * when they will all be full again: from then on the entry says nothing
 * and may be dropped. */
static void
buckets_refill(struct shared_entry *c, const struct bucket_rule r[], double now)
{
    double elapsed = now > c->stamp ? now - c->stamp : 0;
    for (int i = 0; i < SHARED_RATES; i++) {
        double t = c->tokens[i];
        if (t < 0 || r[i].per_second <= 0)
            t = r[i].capacity;
        else
            t += elapsed * r[i].per_second;
        c->tokens[i] = t < r[i].capacity ? t : r[i].capacity;
    }
    c->stamp = now;
}

static bool
bucket_take(struct shared_entry *c, const struct bucket_rule r[], int i)
{
    if (r[i].per_second <= 0)
        return true;
    if (c->tokens[i] < 1)
        return false;
    c->tokens[i] -= 1;
    return true;
}

static void
buckets_set_expiry(struct shared_entry *c, const struct bucket_rule r[])
{
    double full = c->stamp;
    for (int i = 0; i < SHARED_RATES; i++) {
        if (r[i].per_second <= 0)
            continue;
        double t = c->stamp + (r[i].capacity - c->tokens[i]) / r[i].per_second;
        if (t > full)
            full = t;
    }
    c->expires = full;
}

static void
client_key(const struct sockaddr *sa, unsigned v6_prefix, unsigned char key[16])
{
    memset(key, 0, 16);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        key[10] = key[11] = 0xff; /* as ::ffff:a.b.c.d */
        memcpy(key + 12, &in->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        memcpy(key, &in6->sin6_addr, 16);
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            return; /* an IPv4 client: per address */
        unsigned bits = v6_prefix;
        if (bits < 128) {
            key[bits / 8] &= (unsigned char)(0xff00u >> (bits % 8));
            memset(key + bits / 8 + 1, 0, 15 - bits / 8);
        }
    }
}

static bool
exempt(const struct config *cfg, const struct sockaddr *addr)
{
    return cidr_match(cfg->limits.exempt_networks,
                      cfg->limits.n_exempt_networks, addr);
}

client_limit_verdict
client_limit_acquire(const struct config *cfg, const struct sockaddr *addr,
                     bool *per_ip)
{
    client_limit_verdict v = CLIENT_LIMIT_OK;
    bool counted = !exempt(cfg, addr);

    *per_ip = false;
    if (!shared_state_lock(cfg))
        return CLIENT_LIMIT_OK; /* no shared state: serve, count nothing */
    struct shared_counts *n = shared_state_counts();
    if (n->total >= cfg->limits.connections) {
        v = CLIENT_LIMIT_TOTAL;
    } else if (!counted) {
        shared_state_hold(NULL, NULL);
    } else {
        if (n->counted == 0) {
            unsigned p = cfg->limits.connections_per_ip_ipv6_prefix;
            n->v6_prefix = p >= 1 && p <= 128 ? p : 64;
        }
        unsigned char key[16];
        client_key(addr, n->v6_prefix, key);
        double now = now_seconds();
        struct shared_entry *c = shared_state_client(key, true, now);
        if (!c) {
            v = CLIENT_LIMIT_TOTAL; /* no room to count it */
        } else {
            struct bucket_rule r[SHARED_RATES];
            bucket_rules(cfg, r);
            buckets_refill(c, r, now);
            if (!bucket_take(c, r, RATE_CONNECT))
                v = CLIENT_LIMIT_RATE;
            else if (c->conns >= cfg->limits.connections_per_ip)
                v = CLIENT_LIMIT_PER_IP;
            else if (shared_state_hold(c, key) < 0)
                v = CLIENT_LIMIT_TOTAL;
            else
                *per_ip = true;
            buckets_set_expiry(c, r);
        }
    }
    shared_state_unlock();
    return v;
}

void
client_limit_release(const struct sockaddr *addr, bool per_ip)
{
    if (!shared_state_lock(NULL))
        return;
    if (per_ip) {
        unsigned char key[16];
        client_key(addr, shared_state_counts()->v6_prefix, key);
        shared_state_unhold(key);
    } else {
        shared_state_unhold(NULL);
    }
    shared_state_unlock();
}

unsigned
client_limit_total(void)
{
    if (!shared_state_lock(NULL))
        return 0;
    unsigned total = shared_state_counts()->total;
    shared_state_unlock();
    return total;
}

/* Take a token of bucket i for addr (create: remember an address not seen
 * yet), or only look whether one is there. */
static client_limit_verdict
client_rate(const struct config *cfg, const struct sockaddr *addr, int i,
            bool take, client_limit_verdict over)
{
    struct bucket_rule r[SHARED_RATES];
    client_limit_verdict v = CLIENT_LIMIT_OK;

    bucket_rules(cfg, r);
    if (r[i].per_second <= 0 || exempt(cfg, addr) || !shared_state_lock(cfg))
        return CLIENT_LIMIT_OK;
    unsigned char key[16];
    client_key(addr, shared_state_counts()->v6_prefix, key);
    double now = now_seconds();
    struct shared_entry *c = shared_state_client(key, take, now);
    if (c) {
        buckets_refill(c, r, now);
        if (take ? !bucket_take(c, r, i) : c->tokens[i] < 1)
            v = over;
        buckets_set_expiry(c, r);
    }
    shared_state_unlock();
    return v;
}

client_limit_verdict
client_limit_message(const struct config *cfg, const struct sockaddr *addr)
{
    return client_rate(cfg, addr, RATE_MESSAGE, true,
                       CLIENT_LIMIT_MESSAGE_RATE);
}

client_limit_verdict
client_limit_auth_check(const struct config *cfg, const struct sockaddr *addr)
{
    return client_rate(cfg, addr, RATE_AUTH, false, CLIENT_LIMIT_AUTH_RATE);
}

void
client_limit_auth_failed(const struct config *cfg, const struct sockaddr *addr)
{
    (void)client_rate(cfg, addr, RATE_AUTH, true, CLIENT_LIMIT_AUTH_RATE);
}

const char *
client_limit_name(client_limit_verdict v)
{
    switch (v) {
    case CLIENT_LIMIT_TOTAL:
        return "connections";
    case CLIENT_LIMIT_PER_IP:
        return "connections_per_ip";
    case CLIENT_LIMIT_RATE:
        return "connection_rate";
    case CLIENT_LIMIT_MESSAGE_RATE:
        return "message_rate";
    case CLIENT_LIMIT_AUTH_RATE:
        return "auth_failure_rate";
    default:
        return "none";
    }
}
