/*
 * client_limit.c - connection counters (see client_limit.h). Per-address
 * counts live in an open-addressing table keyed by the 16-byte address,
 * sized for the configured total, so a lookup is a few probes.
 *
 * An IPv6 client is keyed by its network, the address with every bit past
 * limits.connections_per_ip_ipv6_prefix cleared: one site gets a /64 and
 * picks any of its 2^64 addresses, so counting per /128 limits nothing.
 * IPv4 (and IPv4-mapped IPv6) is keyed by the address. A release has no
 * config, so the prefix in use is kept here: it is taken from the config
 * when nothing is counted, and stays while anything is, so every release
 * finds the slot its acquire took (a changed prefix applies once the
 * counted connections are gone).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>

#include "client_limit.h"

struct ip_slot {
    unsigned char addr[16];
    unsigned count; /* 0: empty; deleted slots keep a tombstone */
    bool tombstone;
};

static struct {
    unsigned total;
    struct ip_slot *slots;
    size_t n_slots;     /* power of two */
    size_t tombstones;  /* freed slots that still lengthen probe chains */
    unsigned counted;   /* connections holding a per-address slot */
    unsigned v6_prefix; /* bits of an IPv6 key; fixed while counted > 0 */
} limits;

static void
client_key(const struct sockaddr *sa, unsigned char key[16])
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
        unsigned bits = limits.v6_prefix;
        if (bits < 128) {
            key[bits / 8] &= (unsigned char)(0xff00u >> (bits % 8));
            memset(key + bits / 8 + 1, 0, 15 - bits / 8);
        }
    }
}

static size_t
client_hash(const unsigned char key[16])
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (int i = 0; i < 16; i++)
        h = (h ^ key[i]) * 1099511628211ULL;
    return (size_t)h;
}

/* Re-insert the live entries so probe chains lose their tombstones. */
static void
client_table_rebuild(void)
{
    struct ip_slot *old = limits.slots;
    struct ip_slot *fresh = calloc(limits.n_slots, sizeof(*fresh));
    size_t mask = limits.n_slots - 1;

    if (!fresh)
        return; /* keep the old table: correct, only slower */
    for (size_t i = 0; i < limits.n_slots; i++) {
        if (old[i].count == 0)
            continue;
        size_t j = client_hash(old[i].addr) & mask;
        while (fresh[j].count > 0)
            j = (j + 1) & mask;
        fresh[j] = old[i];
    }
    free(old);
    limits.slots = fresh;
    limits.tombstones = 0;
}

static struct ip_slot *
client_slot(const unsigned char key[16], bool create)
{
    struct ip_slot *grave = NULL;
    size_t mask = limits.n_slots - 1;

    for (size_t i = client_hash(key) & mask, probes = 0;
         probes < limits.n_slots; i = (i + 1) & mask, probes++) {
        struct ip_slot *s = &limits.slots[i];
        if (s->count > 0 && memcmp(s->addr, key, 16) == 0)
            return s;
        if (s->count == 0 && s->tombstone) {
            if (!grave)
                grave = s;
            continue;
        }
        if (s->count == 0) {
            if (!create)
                return NULL;
            if (grave)
                limits.tombstones--;
            s = grave ? grave : s;
            memcpy(s->addr, key, 16);
            s->tombstone = false;
            return s;
        }
    }
    if (create && grave) {
        memcpy(grave->addr, key, 16);
        grave->tombstone = false;
        limits.tombstones--;
    }
    return create ? grave : NULL;
}

client_limit_verdict
client_limit_acquire(const struct config *cfg, const struct sockaddr *addr,
                     bool *per_ip)
{
    *per_ip = false;
    if (limits.total >= cfg->limits.connections)
        return CLIENT_LIMIT_TOTAL;
    if (!cidr_match(cfg->limits.exempt_networks, cfg->limits.n_exempt_networks,
                    addr)) {
        if (!limits.slots) {
            size_t n = 64;
            while (n < (size_t)cfg->limits.connections * 2)
                n *= 2;
            limits.slots = calloc(n, sizeof(*limits.slots));
            if (!limits.slots)
                return CLIENT_LIMIT_TOTAL;
            limits.n_slots = n;
        }
        if (limits.counted == 0) {
            unsigned p = cfg->limits.connections_per_ip_ipv6_prefix;
            limits.v6_prefix = p >= 1 && p <= 128 ? p : 64;
        }
        unsigned char key[16];
        client_key(addr, key);
        struct ip_slot *s = client_slot(key, true);
        if (!s)
            return CLIENT_LIMIT_TOTAL;
        if (s->count >= cfg->limits.connections_per_ip)
            return CLIENT_LIMIT_PER_IP;
        s->count++;
        limits.counted++;
        *per_ip = true;
    }
    limits.total++;
    return CLIENT_LIMIT_OK;
}

void
client_limit_release(const struct sockaddr *addr, bool per_ip)
{
    if (limits.total > 0)
        limits.total--;
    if (!per_ip || !limits.slots)
        return;
    unsigned char key[16];
    client_key(addr, key);
    struct ip_slot *s = client_slot(key, false);
    if (s && s->count > 0 && limits.counted > 0)
        limits.counted--;
    if (s && s->count > 0 && --s->count == 0) {
        s->tombstone = true;
        if (++limits.tombstones > limits.n_slots / 4)
            client_table_rebuild();
    }
}

unsigned
client_limit_total(void)
{
    return limits.total;
}
