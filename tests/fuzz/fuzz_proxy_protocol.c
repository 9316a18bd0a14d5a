/*
 * fuzz_proxy_protocol.c - libFuzzer harness for core/proxy_protocol.c.
 *
 * Input: the first bytes a balancer (or anyone) sends on a proxied
 * listener. The input is parsed whole and then every prefix of it, as a
 * header arriving in pieces would be. Invariants: a prefix is NEED_MORE
 * until the header is complete, then DONE with the same length and
 * addresses, or INVALID and INVALID for every longer prefix; NEED_MORE
 * never covers more bytes than a header may have; a DONE header is
 * inside the input and within the version's limit, and its addresses are
 * well-formed IPv4 or IPv6 socket addresses. A broken invariant aborts.
 */
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy_protocol.h"

#define FUZZ_CHECK(cond)                                                       \
    do {                                                                       \
        if (!(cond))                                                           \
            abort();                                                           \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fuzz_check_address(const struct sockaddr_storage *ss, socklen_t len)
{
    if (ss->ss_family == AF_INET)
        FUZZ_CHECK(len == sizeof(struct sockaddr_in));
    else
        FUZZ_CHECK(ss->ss_family == AF_INET6 &&
                   len == sizeof(struct sockaddr_in6));
}

static void
fuzz_check_header(const struct proxy_protocol_header *h, size_t used,
                  size_t size)
{
    FUZZ_CHECK(used > 0 && used <= size && used <= PROXY_PROTOCOL_MAX);
    FUZZ_CHECK(h->version == 1 || h->version == 2);
    if (h->version == 1)
        FUZZ_CHECK(used <= PROXY_PROTOCOL_V1_MAX && !h->local);
    else
        FUZZ_CHECK(used >= 16);
    if (h->local)
        FUZZ_CHECK(!h->has_address);
    if (h->has_address) {
        fuzz_check_address(&h->source, h->source_len);
        fuzz_check_address(&h->destination, h->destination_len);
        FUZZ_CHECK(h->source.ss_family == h->destination.ss_family);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proxy_protocol_header whole, part;
    size_t used = 0, part_used = 0;
    proxy_protocol_status st = proxy_protocol_parse(data, size, &whole, &used);

    if (st == PROXY_PROTOCOL_DONE)
        fuzz_check_header(&whole, used, size);
    if (st == PROXY_PROTOCOL_NEED_MORE)
        FUZZ_CHECK(size < PROXY_PROTOCOL_MAX);

    /* The same bytes in pieces: NEED_MORE, then one final answer. */
    bool final = false;
    for (size_t k = 0; k <= size; k++) {
        proxy_protocol_status ps =
            proxy_protocol_parse(data, k, &part, &part_used);
        if (final) {
            FUZZ_CHECK(ps == st);
            if (ps == PROXY_PROTOCOL_DONE)
                FUZZ_CHECK(part_used == used);
            continue;
        }
        if (ps == PROXY_PROTOCOL_NEED_MORE) {
            FUZZ_CHECK(k < PROXY_PROTOCOL_MAX);
            continue;
        }
        final = true;
        FUZZ_CHECK(ps == st);
        if (ps == PROXY_PROTOCOL_DONE) {
            FUZZ_CHECK(part_used == used && part_used == k);
            FUZZ_CHECK(part.version == whole.version &&
                       part.local == whole.local &&
                       part.has_address == whole.has_address);
            if (part.has_address)
                FUZZ_CHECK(
                    part.source_len == whole.source_len &&
                    memcmp(&part.source, &whole.source, part.source_len) == 0 &&
                    memcmp(&part.destination, &whole.destination,
                           part.destination_len) == 0);
        }
        if (k > 4096)
            break; /* the rest only repeats the answer */
    }
    if (st == PROXY_PROTOCOL_NEED_MORE)
        FUZZ_CHECK(!final);
    return 0;
}
