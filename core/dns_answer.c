/*
 * dns_answer.c - decoding a DNS answer (dns_answer.h): c-ares' parsers for
 * the records, a small walker over the raw message for the TTLs (the
 * c-ares 1.18 MX, TXT and PTR parsers drop them) and the SOA's negative
 * TTL, and the read accessors of include/postern/dns.h.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <ares.h>
#include <arpa/nameser.h>

#include "dns_answer.h"

/* --- status mapping and the answer walker --- */

postern_dns_status
dns_status_from_ares(int st)
{
    switch (st) {
    case ARES_SUCCESS:
        return POSTERN_DNS_OK;
    case ARES_ENOTFOUND: /* rcode NXDOMAIN */
        return POSTERN_DNS_NXDOMAIN;
    case ARES_ENODATA: /* NOERROR without a record of the type */
        return POSTERN_DNS_NODATA;
    case ARES_ETIMEOUT:
    case ARES_ESERVFAIL:
    case ARES_ECONNREFUSED:
        return POSTERN_DNS_TEMPFAIL;
    case ARES_ECANCELLED:
    case ARES_EDESTRUCTION:
        return POSTERN_DNS_CANCELLED;
    default: /* REFUSED, FORMERR, NOTIMP, a bad name or answer, ENOMEM */
        return POSTERN_DNS_ERROR;
    }
}

/* Step over a (maybe compressed) name at *off; 0 or -1. */
static int
walk_name(const unsigned char *p, size_t len, size_t *off)
{
    size_t o = *off;
    for (int labels = 0; labels < 128; labels++) {
        if (o >= len)
            return -1;
        unsigned c = p[o];
        if (c == 0) {
            *off = o + 1;
            return 0;
        }
        if ((c & 0xc0) == 0xc0) {
            if (o + 2 > len)
                return -1;
            *off = o + 2;
            return 0;
        }
        if (c & 0xc0)
            return -1;
        o += 1 + c;
    }
    return -1;
}

static uint32_t
get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

static unsigned
get16(const unsigned char *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

/* RFC 2181 8: a TTL with the top bit set is zero. */
static uint32_t
ttl_value(uint32_t t)
{
    return (t & 0x80000000u) ? 0 : t;
}

int
dns_answer_walk(const unsigned char *abuf, size_t alen, uint32_t *answer_ttl,
                uint32_t *negative_ttl, bool *have_negative, size_t *n_answers)
{
    *answer_ttl = 0;
    *negative_ttl = 0;
    *have_negative = false;
    *n_answers = 0;
    if (!abuf || alen < HFIXEDSZ)
        return -1;
    unsigned qd = get16(abuf + 4), an = get16(abuf + 6), ns = get16(abuf + 8);
    size_t off = HFIXEDSZ;
    for (unsigned i = 0; i < qd; i++) {
        if (walk_name(abuf, alen, &off) < 0 || off + QFIXEDSZ > alen)
            return -1;
        off += QFIXEDSZ;
    }
    bool first = true;
    for (unsigned i = 0; i < an + ns; i++) {
        if (walk_name(abuf, alen, &off) < 0 || off + RRFIXEDSZ > alen)
            return -1;
        unsigned type = get16(abuf + off);
        uint32_t ttl = ttl_value(get32(abuf + off + 4));
        size_t rdlen = get16(abuf + off + 8);
        off += RRFIXEDSZ;
        if (off + rdlen > alen)
            return -1;
        if (i < an) {
            if (first || ttl < *answer_ttl)
                *answer_ttl = ttl;
            first = false;
        } else if (type == ns_t_soa && !*have_negative) {
            size_t r = off;
            if (walk_name(abuf, off + rdlen, &r) < 0 ||
                walk_name(abuf, off + rdlen, &r) < 0 || r + 20 > off + rdlen)
                return -1;
            uint32_t minimum = ttl_value(get32(abuf + r + 16));
            *negative_ttl = minimum < ttl ? minimum : ttl;
            *have_negative = true;
        }
        off += rdlen;
    }
    *n_answers = an;
    return 0;
}

/* --- answers --- */

void
dns_result_unref(struct postern_dns_result *r)
{
    if (!r || --r->refs > 0)
        return;
    for (size_t i = 0; i < r->n; i++) {
        free(r->rec[i].name);
        free(r->rec[i].txt);
    }
    free(r->rec);
    free(r);
}

static struct postern_dns_result *
result_new(postern_dns_type type, size_t n)
{
    struct postern_dns_result *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->refs = 1;
    r->type = type;
    if (n && !(r->rec = calloc(n, sizeof(*r->rec)))) {
        free(r);
        return NULL;
    }
    return r;
}

static int
parse_addresses(const unsigned char *abuf, int alen, size_t max,
                struct postern_dns_result *r)
{
    int n = (int)max;
    if (r->type == POSTERN_DNS_A) {
        struct ares_addrttl *a = calloc(max, sizeof(*a));
        if (!a)
            return ARES_ENOMEM;
        int st = ares_parse_a_reply(abuf, alen, NULL, a, &n);
        for (int i = 0; st == ARES_SUCCESS && i < n; i++) {
            struct sockaddr_in *in = (struct sockaddr_in *)&r->rec[i].addr;
            in->sin_family = AF_INET;
            in->sin_addr = a[i].ipaddr;
            r->rec[i].addr_len = sizeof(*in);
        }
        free(a);
        r->n = st == ARES_SUCCESS ? (size_t)n : 0;
        return st;
    }
    struct ares_addr6ttl *a = calloc(max, sizeof(*a));
    if (!a)
        return ARES_ENOMEM;
    int st = ares_parse_aaaa_reply(abuf, alen, NULL, a, &n);
    for (int i = 0; st == ARES_SUCCESS && i < n; i++) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&r->rec[i].addr;
        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, &a[i].ip6addr, sizeof(in6->sin6_addr));
        r->rec[i].addr_len = sizeof(*in6);
    }
    free(a);
    r->n = st == ARES_SUCCESS ? (size_t)n : 0;
    return st;
}

static int
parse_mx(const unsigned char *abuf, int alen, size_t max,
         struct postern_dns_result *r)
{
    struct ares_mx_reply *mx = NULL;
    int st = ares_parse_mx_reply(abuf, alen, &mx);
    for (struct ares_mx_reply *m = mx; st == ARES_SUCCESS && m; m = m->next) {
        if (r->n == max)
            break;
        r->rec[r->n].pref = m->priority;
        if (!(r->rec[r->n].name = strdup(m->host)))
            st = ARES_ENOMEM;
        r->n++;
    }
    ares_free_data(mx);
    return st;
}

static int
parse_txt(const unsigned char *abuf, int alen, size_t max,
          struct postern_dns_result *r)
{
    struct ares_txt_ext *txt = NULL;
    int st = ares_parse_txt_reply_ext(abuf, alen, &txt);
    /* One record is a run of strings, the first with record_start set;
     * RFC 7208 3.3 joins them without separator. */
    for (struct ares_txt_ext *t = txt; st == ARES_SUCCESS && t;) {
        struct ares_txt_ext *end = t->next;
        size_t len = t->length;
        while (end && !end->record_start) {
            len += end->length;
            end = end->next;
        }
        if (r->n == max)
            break;
        char *joined = malloc(len + 1);
        if (!joined) {
            st = ARES_ENOMEM;
            break;
        }
        size_t at = 0;
        for (; t != end; t = t->next) {
            memcpy(joined + at, t->txt, t->length);
            at += t->length;
        }
        joined[len] = '\0';
        r->rec[r->n].txt = joined;
        r->rec[r->n].txt_len = len;
        r->n++;
    }
    ares_free_data(txt);
    return st;
}

static int
parse_ptr(const unsigned char *abuf, int alen, size_t max,
          struct postern_dns_result *r)
{
    struct hostent *h = NULL;
    struct in_addr none = {0};
    int st = ares_parse_ptr_reply(abuf, alen, &none, sizeof(none), AF_INET, &h);
    if (st != ARES_SUCCESS)
        return st;
    /* c-ares 1.18 lists every PTR name among the aliases, the first one
     * also as h_name. */
    char **names = h->h_aliases;
    size_t n = 0;
    while (names && names[n])
        n++;
    if (n == 0) {
        static char *first[2];
        first[0] = h->h_name;
        names = first;
        n = h->h_name ? 1 : 0;
    }
    for (size_t i = 0; i < n && r->n < max; i++) {
        if (!(r->rec[r->n].name = strdup(names[i]))) {
            st = ARES_ENOMEM;
            break;
        }
        r->n++;
    }
    ares_free_hostent(h);
    return st;
}

/* Parse a successful answer; an ares status (ARES_ENODATA when no record
 * of the type is there, after a CNAME for example). */
static int
answer_parse(const unsigned char *abuf, int alen, size_t n_answers,
             struct postern_dns_result *r)
{
    int st;
    if (n_answers == 0)
        return ARES_ENODATA;
    switch (r->type) {
    case POSTERN_DNS_A:
    case POSTERN_DNS_AAAA:
        st = parse_addresses(abuf, alen, n_answers, r);
        break;
    case POSTERN_DNS_MX:
        st = parse_mx(abuf, alen, n_answers, r);
        break;
    case POSTERN_DNS_TXT:
        st = parse_txt(abuf, alen, n_answers, r);
        break;
    case POSTERN_DNS_PTR:
        st = parse_ptr(abuf, alen, n_answers, r);
        break;
    default:
        st = ARES_ENOTIMP;
        break;
    }
    if (st == ARES_SUCCESS && r->n == 0)
        st = ARES_ENODATA;
    return st;
}

postern_dns_status
dns_answer_decode(int status, const unsigned char *abuf, int alen,
                  postern_dns_type type, struct postern_dns_result **result,
                  uint32_t *ttl)
{
    uint32_t neg_ttl = 0;
    bool have_neg = false;
    size_t n_answers = 0;

    *result = NULL;
    *ttl = 0;
    if (status == ARES_SUCCESS || status == ARES_ENODATA ||
        status == ARES_ENOTFOUND) {
        if (!abuf || alen < 0 ||
            dns_answer_walk(abuf, (size_t)alen, ttl, &neg_ttl, &have_neg,
                            &n_answers) < 0)
            status = ARES_EBADRESP;
    }
    if (status == ARES_SUCCESS) {
        *result = result_new(type, n_answers);
        status = *result ? answer_parse(abuf, alen, n_answers, *result)
                         : ARES_ENOMEM;
    }
    postern_dns_status st = dns_status_from_ares(status);
    if (st != POSTERN_DNS_OK) {
        dns_result_unref(*result);
        *result = NULL;
    }
    if (st == POSTERN_DNS_NXDOMAIN || st == POSTERN_DNS_NODATA)
        *ttl = have_neg ? neg_ttl : DNS_NEGATIVE_TTL;
    else if (st != POSTERN_DNS_OK)
        *ttl = 0;
    if (*ttl > DNS_MAX_TTL)
        *ttl = DNS_MAX_TTL;
    return st;
}

struct postern_dns_result *
dns_result_ref(struct postern_dns_result *r)
{
    if (r)
        r->refs++;
    return r;
}

/* --- the read accessors of include/postern/dns.h --- */

size_t
postern_dns_count(const postern_dns_result *r)
{
    return r ? r->n : 0;
}

int
postern_dns_addr(const postern_dns_result *r, size_t i,
                 struct sockaddr_storage *out, socklen_t *len)
{
    if (!r || i >= r->n ||
        (r->type != POSTERN_DNS_A && r->type != POSTERN_DNS_AAAA))
        return -1;
    if (out)
        memcpy(out, &r->rec[i].addr, sizeof(*out));
    if (len)
        *len = r->rec[i].addr_len;
    return 0;
}

const char *
postern_dns_name(const postern_dns_result *r, size_t i)
{
    if (!r || i >= r->n)
        return NULL;
    return r->rec[i].name;
}

unsigned
postern_dns_mx_preference(const postern_dns_result *r, size_t i)
{
    if (!r || i >= r->n || r->type != POSTERN_DNS_MX)
        return 0;
    return r->rec[i].pref;
}

const char *
postern_dns_txt(const postern_dns_result *r, size_t i, size_t *len)
{
    if (!r || i >= r->n || r->type != POSTERN_DNS_TXT) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = r->rec[i].txt_len;
    return r->rec[i].txt;
}
