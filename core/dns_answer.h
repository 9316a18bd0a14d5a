/*
 * dns_answer.h - what a DNS server answered, decoded: the c-ares status
 * mapped to ours, the records parsed into a postern_dns_result, and the
 * TTL to keep it for. Pure functions over untrusted bytes (fuzzed by
 * tests/fuzz/fuzz_dns_answer.c); the service around them is dns.c.
 */
#ifndef POSTERN_DNS_ANSWER_H
#define POSTERN_DNS_ANSWER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "postern/dns.h"

/* Answers without a SOA to take a negative TTL from (RFC 2308 5) are
 * kept this long; every TTL is capped at DNS_MAX_TTL. */
#define DNS_NEGATIVE_TTL 60
#define DNS_MAX_TTL 86400

struct dns_record {
    struct sockaddr_storage addr; /* A, AAAA */
    socklen_t addr_len;
    char *name;     /* MX exchange, PTR name */
    unsigned pref;  /* MX */
    char *txt;      /* TXT: the strings joined, NUL-terminated */
    size_t txt_len; /* without that NUL */
};

struct postern_dns_result {
    unsigned refs;
    postern_dns_type type;
    double expires; /* loop time */
    size_t n;
    struct dns_record *rec;
};

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

/*
 * Decode what c-ares handed to a query's callback (status, abuf, alen)
 * for a query of type. Returns our status; *result gets the records
 * (OK only, a new reference; NULL otherwise) and *ttl how long the
 * answer may be kept: the smallest answer TTL, or for NXDOMAIN/NODATA
 * the SOA's negative TTL, else DNS_NEGATIVE_TTL; at most DNS_MAX_TTL.
 */
postern_dns_status dns_answer_decode(int ares_status, const unsigned char *abuf,
                                     int alen, postern_dns_type type,
                                     struct postern_dns_result **result,
                                     uint32_t *ttl);

struct postern_dns_result *dns_result_ref(struct postern_dns_result *r);
void dns_result_unref(struct postern_dns_result *r);

#endif
