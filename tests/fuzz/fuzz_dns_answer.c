/*
 * fuzz_dns_answer.c - libFuzzer harness for core/dns_answer.c: what a DNS
 * server sends back, decoded as the resolver does (the raw walker for
 * TTLs and the SOA, then c-ares' parsers for the records).
 *
 * Input: byte 0 picks the record type asked for and the status c-ares
 * reported (success, NODATA, NXDOMAIN); the rest is the answer message.
 * Every record the decoder returns is read back through the public
 * accessors, whose results must fit their contracts. A broken invariant
 * aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <ares.h>

#include "dns_answer.h"

#define FUZZ_CHECK(cond)                                                       \
    do {                                                                       \
        if (!(cond))                                                           \
            abort();                                                           \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const postern_dns_type types[] = {POSTERN_DNS_A, POSTERN_DNS_AAAA,
                                             POSTERN_DNS_MX, POSTERN_DNS_TXT,
                                             POSTERN_DNS_PTR};
    static const int statuses[] = {ARES_SUCCESS, ARES_ENODATA, ARES_ENOTFOUND};

    if (size < 1 || size > 65536)
        return 0;
    postern_dns_type type = types[data[0] % 5];
    int status = statuses[(data[0] / 5) % 3];
    const unsigned char *abuf = data + 1;
    int alen = (int)(size - 1);

    struct postern_dns_result *r;
    uint32_t ttl;
    postern_dns_status st =
        dns_answer_decode(status, abuf, alen, type, &r, &ttl);

    FUZZ_CHECK(ttl <= DNS_MAX_TTL);
    FUZZ_CHECK((st == POSTERN_DNS_OK) == (r != NULL));
    FUZZ_CHECK(st != POSTERN_DNS_CANCELLED);
    if (status != ARES_SUCCESS)
        FUZZ_CHECK(st != POSTERN_DNS_OK);
    if (!r)
        return 0;
    size_t n = postern_dns_count(r);
    FUZZ_CHECK(n >= 1);
    for (size_t i = 0; i < n; i++) {
        struct sockaddr_storage ss;
        socklen_t len = 0;
        size_t tlen = 0;
        int rc = postern_dns_addr(r, i, &ss, &len);
        const char *name = postern_dns_name(r, i);
        const char *txt = postern_dns_txt(r, i, &tlen);
        switch (type) {
        case POSTERN_DNS_A:
            FUZZ_CHECK(rc == 0 && ss.ss_family == AF_INET &&
                       len == sizeof(struct sockaddr_in));
            break;
        case POSTERN_DNS_AAAA:
            FUZZ_CHECK(rc == 0 && ss.ss_family == AF_INET6 &&
                       len == sizeof(struct sockaddr_in6));
            break;
        case POSTERN_DNS_MX:
        case POSTERN_DNS_PTR:
            FUZZ_CHECK(rc == -1 && name != NULL);
            FUZZ_CHECK(strlen(name) < (size_t)alen * 4 + 2);
            break;
        case POSTERN_DNS_TXT:
            FUZZ_CHECK(rc == -1 && txt != NULL && tlen <= (size_t)alen);
            FUZZ_CHECK(txt[tlen] == '\0');
            break;
        }
    }
    FUZZ_CHECK(postern_dns_addr(r, n, NULL, NULL) == -1);
    FUZZ_CHECK(postern_dns_name(r, n) == NULL);
    dns_result_unref(r);
    return 0;
}
