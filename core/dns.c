/*
 * dns.c - asynchronous DNS for modules and the core
 * (include/postern/dns.h), c-ares driven by the libev loop.
 *
 * c-ares tells us which sockets it wants watched (ARES_OPT_SOCK_STATE_CB):
 * each gets an ev_io that calls ares_process_fd(); one ev_timer follows
 * ares_timeout() for its retransmissions. ares_query() is used (never the
 * search-list variants: mail names are absolute).
 *
 * Three objects:
 *   request  one c-ares query in flight for a (name, type). Lookups of the
 *            same name and type while it runs wait on it (SPF asks the
 *            same names from many sessions at once). It belongs to c-ares
 *            until its callback; it may outlive every lookup waiting on it
 *            (its answer still fills the cache).
 *   lookup   (postern_dns_query) one caller's wait: its own timeout timer,
 *            its callback, maybe a hook call it is tied to (hook_work).
 *   answer   (postern_dns_result) parsed records, reference counted: held
 *            by the cache and by each lookup about to be told.
 *
 * Callbacks never run inside postern_dns_lookup(): a lookup that is
 * answered (from the cache, by c-ares, by its timer, by cancellation) moves
 * to the ready list, and a zero-delay timer delivers the ready list from
 * the loop. Module code never runs from inside a c-ares callback either.
 *
 * The cache keeps OK, NXDOMAIN and NODATA answers (never temporary
 * failures) for their TTL: the smallest TTL of the answer records, or for
 * a negative answer the SOA's (RFC 2308 5), else DNS_NEGATIVE_TTL; at most
 * DNS_MAX_TTL. It holds at most cache_entries answers, dropping the least
 * recently used first.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ares.h>
#include <arpa/nameser.h>

#include "dns.h"
#include "hook.h"
#include "log.h"

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

struct dns_request {
    struct dns_request *prev, *next; /* in flight */
    char *name;                      /* lowercase, no trailing dot */
    postern_dns_type type;
    struct postern_dns_query *waiters;
};

struct postern_dns_query {
    struct postern_dns_query *prev, *next; /* request's waiters or ready */
    struct dns_request *req;               /* NULL once ready */
    bool ready;
    postern_dns_cb cb;
    void *arg;
    ev_timer timer; /* the lookup's own timeout */
    struct hook_work work;
    postern_dns_status status;
    struct postern_dns_result *result;
};

struct cache_entry {
    struct cache_entry *hnext;               /* bucket chain */
    struct cache_entry *lru_prev, *lru_next; /* head: most recent */
    uint32_t hash;
    postern_dns_type type;
    char *name;
    postern_dns_status status;
    struct postern_dns_result *result; /* OK only */
    double expires;
};

struct dns_io {
    ev_io w;
    struct dns_io *next;
};

static struct {
    bool up;
    struct ev_loop *loop;
    ares_channel channel;
    ev_timer ares_timer; /* c-ares' own retransmission timeouts */
    ev_timer deliver;    /* zero delay: runs the ready list */
    struct dns_io *ios;
    struct dns_request *inflight;
    struct postern_dns_query *ready_head, *ready_tail;
    double timeout; /* default per-lookup timeout */
    /* cache */
    struct cache_entry **buckets;
    size_t n_buckets, n_entries, max_entries;
    struct cache_entry *lru_head, *lru_tail;
} dns;

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

static void
result_unref(struct postern_dns_result *r)
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

/* --- the cache --- */

static uint32_t
name_hash(const char *name, postern_dns_type type)
{
    uint32_t h = 2166136261u ^ (uint32_t)type; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

static void
lru_unlink(struct cache_entry *e)
{
    if (e->lru_prev)
        e->lru_prev->lru_next = e->lru_next;
    else
        dns.lru_head = e->lru_next;
    if (e->lru_next)
        e->lru_next->lru_prev = e->lru_prev;
    else
        dns.lru_tail = e->lru_prev;
}

static void
lru_push(struct cache_entry *e)
{
    e->lru_prev = NULL;
    e->lru_next = dns.lru_head;
    if (dns.lru_head)
        dns.lru_head->lru_prev = e;
    dns.lru_head = e;
    if (!dns.lru_tail)
        dns.lru_tail = e;
}

static void
cache_remove(struct cache_entry *e)
{
    struct cache_entry **pp = &dns.buckets[e->hash & (dns.n_buckets - 1)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(e);
    result_unref(e->result);
    free(e->name);
    free(e);
    dns.n_entries--;
}

static struct cache_entry *
cache_find(const char *name, postern_dns_type type)
{
    if (!dns.n_buckets)
        return NULL;
    uint32_t h = name_hash(name, type);
    for (struct cache_entry *e = dns.buckets[h & (dns.n_buckets - 1)]; e;
         e = e->hnext) {
        if (e->hash != h || e->type != type || strcmp(e->name, name) != 0)
            continue;
        if (e->expires <= ev_now(dns.loop)) {
            cache_remove(e);
            return NULL;
        }
        lru_unlink(e);
        lru_push(e);
        return e;
    }
    return NULL;
}

static void
cache_put(const char *name, postern_dns_type type, postern_dns_status status,
          struct postern_dns_result *result, uint32_t ttl)
{
    if (!dns.max_entries || ttl == 0)
        return;
    struct cache_entry *old = cache_find(name, type);
    if (old)
        cache_remove(old);
    struct cache_entry *e = calloc(1, sizeof(*e));
    if (!e || !(e->name = strdup(name))) {
        free(e);
        return; /* the cache is an optimisation */
    }
    while (dns.n_entries >= dns.max_entries)
        cache_remove(dns.lru_tail);
    e->hash = name_hash(name, type);
    e->type = type;
    e->status = status;
    e->expires = ev_now(dns.loop) + ttl;
    if ((e->result = result))
        result->refs++;
    struct cache_entry **b = &dns.buckets[e->hash & (dns.n_buckets - 1)];
    e->hnext = *b;
    *b = e;
    lru_push(e);
    dns.n_entries++;
}

size_t
dns_cache_size(void)
{
    return dns.n_entries;
}

static void
cache_free(void)
{
    while (dns.lru_head)
        cache_remove(dns.lru_head);
    free(dns.buckets);
    dns.buckets = NULL;
    dns.n_buckets = 0;
}

/* --- lookups: waiting, ready, delivered --- */

static void
waiter_unlink(struct postern_dns_query *q)
{
    struct dns_request *req = q->req;
    if (q->prev)
        q->prev->next = q->next;
    else
        req->waiters = q->next;
    if (q->next)
        q->next->prev = q->prev;
    q->req = NULL;
    q->prev = q->next = NULL;
}

static void
ready_unlink(struct postern_dns_query *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        dns.ready_head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        dns.ready_tail = q->prev;
    q->prev = q->next = NULL;
    q->ready = false;
}

/* The lookup has its outcome: stop waiting, queue the callback. */
static void
query_ready(struct postern_dns_query *q, postern_dns_status status,
            struct postern_dns_result *result)
{
    if (q->req)
        waiter_unlink(q);
    if (q->ready) { /* already queued: only the outcome changes */
        result_unref(q->result);
    } else {
        q->ready = true;
        q->prev = dns.ready_tail;
        q->next = NULL;
        if (dns.ready_tail)
            dns.ready_tail->next = q;
        else
            dns.ready_head = q;
        dns.ready_tail = q;
    }
    ev_timer_stop(dns.loop, &q->timer);
    q->status = status;
    q->result = status == POSTERN_DNS_OK ? result : NULL;
    if (q->result)
        q->result->refs++;
    if (!ev_is_active(&dns.deliver))
        ev_timer_start(dns.loop, &dns.deliver);
}

static void
query_free(struct postern_dns_query *q)
{
    hook_work_detach(&q->work);
    ev_timer_stop(dns.loop, &q->timer);
    result_unref(q->result);
    free(q);
}

/* Deliver what was ready when this began; later ones wait for the next
 * turn of the loop, so a module answering itself from the cache in a
 * loop cannot starve the others. */
static void
on_deliver(struct ev_loop *loop, ev_timer *w, int revents)
{
    size_t n = 0;
    for (struct postern_dns_query *q = dns.ready_head; q; q = q->next)
        n++;
    while (n-- > 0 && dns.ready_head) {
        struct postern_dns_query *q = dns.ready_head;
        ready_unlink(q);
        hook_work_detach(&q->work);
        q->cb(q->arg, q->status, q->result);
        query_free(q);
    }
    if (dns.ready_head)
        ev_timer_start(dns.loop, &dns.deliver);
}

static void
on_query_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct postern_dns_query *q =
        (struct postern_dns_query *)((char *)w -
                                     offsetof(struct postern_dns_query, timer));
    /* The request runs on (its answer still fills the cache). */
    query_ready(q, POSTERN_DNS_TEMPFAIL, NULL);
}

/* The hook call this lookup belongs to was orphaned (hook_ctx_release). */
static void
on_abandon(struct hook_work *w)
{
    struct postern_dns_query *q =
        (struct postern_dns_query *)((char *)w -
                                     offsetof(struct postern_dns_query, work));
    query_ready(q, POSTERN_DNS_CANCELLED, NULL);
}

static void
request_free(struct dns_request *req)
{
    if (req->prev)
        req->prev->next = req->next;
    else
        dns.inflight = req->next;
    if (req->next)
        req->next->prev = req->prev;
    free(req->name);
    free(req);
}

/* c-ares is done with a request (maybe from inside ares_query()). */
static void
on_ares_answer(void *arg, int status, int timeouts, unsigned char *abuf,
               int alen)
{
    struct dns_request *req = arg;
    struct postern_dns_result *result = NULL;
    uint32_t ttl = 0, neg_ttl = 0;
    bool have_neg = false;
    size_t n_answers = 0;

    if (status == ARES_SUCCESS || status == ARES_ENODATA ||
        status == ARES_ENOTFOUND) {
        if (!abuf || dns_answer_walk(abuf, (size_t)alen, &ttl, &neg_ttl,
                                     &have_neg, &n_answers) < 0)
            status = ARES_EBADRESP;
    }
    if (status == ARES_SUCCESS) {
        result = result_new(req->type, n_answers);
        status =
            result ? answer_parse(abuf, alen, n_answers, result) : ARES_ENOMEM;
    }
    postern_dns_status st = dns_status_from_ares(status);
    if (st != POSTERN_DNS_OK) {
        result_unref(result);
        result = NULL;
    }
    if (st == POSTERN_DNS_NXDOMAIN || st == POSTERN_DNS_NODATA)
        ttl = have_neg ? neg_ttl : DNS_NEGATIVE_TTL;
    if (ttl > DNS_MAX_TTL)
        ttl = DNS_MAX_TTL;
    if (dns.up) {
        if (result)
            result->expires = ev_now(dns.loop) + ttl;
        if (st == POSTERN_DNS_OK || st == POSTERN_DNS_NXDOMAIN ||
            st == POSTERN_DNS_NODATA)
            cache_put(req->name, req->type, st, result, ttl);
        if (log_enabled(LOG_LEVEL_DEBUG))
            log_event(LOG_LEVEL_DEBUG, NULL, "dns",
                      "name=%s type=%d status=%d ares=%s ttl=%u",
                      postern_log_value(req->name), (int)req->type, (int)st,
                      ares_strerror(status), ttl);
    }
    while (req->waiters)
        query_ready(req->waiters, st, result);
    result_unref(result);
    request_free(req);
}

/* --- c-ares on the loop --- */

static void
ares_timer_update(void)
{
    struct timeval tv, *t = ares_timeout(dns.channel, NULL, &tv);
    ev_timer_stop(dns.loop, &dns.ares_timer);
    if (t) {
        ev_timer_set(&dns.ares_timer, t->tv_sec + t->tv_usec / 1e6, 0.);
        ev_timer_start(dns.loop, &dns.ares_timer);
    }
}

static void
on_ares_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    ares_process_fd(dns.channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    ares_timer_update();
}

static void
on_ares_io(struct ev_loop *loop, ev_io *w, int revents)
{
    ares_process_fd(dns.channel, (revents & EV_READ) ? w->fd : ARES_SOCKET_BAD,
                    (revents & EV_WRITE) ? w->fd : ARES_SOCKET_BAD);
    ares_timer_update();
}

static void
on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct dns_io **pp = &dns.ios, *io;
    while (*pp && (*pp)->w.fd != fd)
        pp = &(*pp)->next;
    io = *pp;
    if (!readable && !writable) {
        if (io) {
            ev_io_stop(dns.loop, &io->w);
            *pp = io->next;
            free(io);
        }
        return;
    }
    if (!io) {
        if (!(io = calloc(1, sizeof(*io)))) {
            log_event(LOG_LEVEL_ERROR, NULL, "dns",
                      "error=\"out of memory watching a resolver socket\"");
            return; /* its queries end by their timers */
        }
        ev_init(&io->w, on_ares_io);
        io->next = dns.ios;
        dns.ios = io;
    }
    ev_io_stop(dns.loop, &io->w);
    ev_io_set(&io->w, fd, (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
    ev_io_start(dns.loop, &io->w);
}

/* --- the public API --- */

/* Lowercase copy without the trailing dot, or NULL when it cannot be a
 * domain name to ask for (empty labels, labels over 63 bytes, over 253
 * bytes, spaces, control bytes, backslashes). */
static char *
name_normalise(const char *name)
{
    if (!name)
        return NULL;
    size_t len = strlen(name);
    if (len > 0 && name[len - 1] == '.')
        len--;
    if (len == 0 || len > 253)
        return NULL;
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '.') {
            if (label == 0)
                goto bad;
            label = 0;
        } else if (c <= 0x20 || c == 0x7f || c == '\\' || ++label > 63) {
            goto bad;
        }
        out[i] = (char)tolower(c);
    }
    if (label == 0)
        goto bad;
    out[len] = '\0';
    return out;
bad:
    free(out);
    return NULL;
}

postern_dns_query *
postern_dns_lookup(postern_ctx *ctx, const char *name, postern_dns_type type,
                   double timeout, postern_dns_cb cb, void *arg)
{
    if (!dns.up || !cb)
        return NULL;
    switch (type) {
    case POSTERN_DNS_A:
    case POSTERN_DNS_AAAA:
    case POSTERN_DNS_MX:
    case POSTERN_DNS_TXT:
    case POSTERN_DNS_PTR:
        break;
    default:
        return NULL;
    }
    char *key = name_normalise(name);
    struct postern_dns_query *q = key ? calloc(1, sizeof(*q)) : NULL;
    if (!q) {
        free(key);
        return NULL;
    }
    q->cb = cb;
    q->arg = arg;
    q->work.abandon = on_abandon;
    ev_timer_init(&q->timer, on_query_timeout,
                  timeout > 0 ? timeout : dns.timeout, 0.);

    /* Tied to a call that is already over or orphaned: nothing to do. */
    if (ctx && hook_work_attach(ctx, &q->work) < 0) {
        free(key);
        query_ready(q, POSTERN_DNS_CANCELLED, NULL);
        return q;
    }
    struct cache_entry *e = cache_find(key, type);
    if (e) {
        free(key);
        query_ready(q, e->status, e->result);
        return q;
    }
    struct dns_request *req = dns.inflight;
    while (req && (req->type != type || strcmp(req->name, key) != 0))
        req = req->next;
    bool fresh = !req;
    if (fresh) {
        if (!(req = calloc(1, sizeof(*req)))) {
            hook_work_detach(&q->work);
            free(key);
            free(q);
            return NULL;
        }
        req->name = key;
        req->type = type;
        req->next = dns.inflight;
        if (dns.inflight)
            dns.inflight->prev = req;
        dns.inflight = req;
    } else {
        free(key);
    }
    q->req = req;
    q->next = req->waiters;
    if (req->waiters)
        req->waiters->prev = q;
    req->waiters = q;
    ev_timer_start(dns.loop, &q->timer);
    if (fresh) {
        /* May answer at once (then req is gone); q is ready then. */
        ares_query(dns.channel, req->name, ns_c_in, (int)type, on_ares_answer,
                   req);
        ares_timer_update();
    }
    return q;
}

void
postern_dns_cancel(postern_dns_query *q)
{
    if (!q)
        return;
    if (q->req)
        waiter_unlink(q);
    else if (q->ready)
        ready_unlink(q);
    query_free(q);
}

size_t
postern_dns_count(const postern_dns_result *r)
{
    return r ? r->n : 0;
}

uint32_t
postern_dns_ttl(const postern_dns_result *r)
{
    if (!r || !dns.loop)
        return 0;
    double left = r->expires - ev_now(dns.loop);
    return left > 0 ? (uint32_t)(left + 0.5) : 0;
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

int
postern_dns_reverse_name(const struct sockaddr *addr, char *out, size_t size)
{
    static const char hex[] = "0123456789abcdef";
    if (!addr || !out)
        return -1;
    if (addr->sa_family == AF_INET) {
        const unsigned char *b =
            (const unsigned char *)&((const struct sockaddr_in *)addr)
                ->sin_addr;
        int n = snprintf(out, size, "%u.%u.%u.%u.in-addr.arpa", b[3], b[2],
                         b[1], b[0]);
        return n < 0 || (size_t)n >= size ? -1 : 0;
    }
    if (addr->sa_family != AF_INET6 || size < 73)
        return -1;
    const unsigned char *b =
        ((const struct sockaddr_in6 *)addr)->sin6_addr.s6_addr;
    char *p = out;
    for (int i = 15; i >= 0; i--) {
        *p++ = hex[b[i] & 0xf];
        *p++ = '.';
        *p++ = hex[b[i] >> 4];
        *p++ = '.';
    }
    memcpy(p, "ip6.arpa", 9);
    return 0;
}

/* --- start and stop --- */

static int
servers_set(const struct dns_config *cfg, char *err, size_t errlen)
{
    struct ares_addr_port_node *nodes = calloc(cfg->n_servers, sizeof(*nodes));
    if (!nodes) {
        snprintf(err, errlen, "dns: out of memory");
        return -1;
    }
    for (size_t i = 0; i < cfg->n_servers; i++) {
        struct sockaddr_storage ss;
        if (config_server_parse(cfg->servers[i], &ss) < 0) {
            snprintf(err, errlen, "dns: bad server %s", cfg->servers[i]);
            free(nodes);
            return -1;
        }
        struct ares_addr_port_node *node = &nodes[i];
        node->next = i + 1 < cfg->n_servers ? &nodes[i + 1] : NULL;
        node->family = ss.ss_family;
        if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
            node->addr.addr4 = in->sin_addr;
            node->udp_port = node->tcp_port = ntohs(in->sin_port);
        } else {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
            memcpy(&node->addr.addr6, &in6->sin6_addr,
                   sizeof(node->addr.addr6));
            node->udp_port = node->tcp_port = ntohs(in6->sin6_port);
        }
    }
    int st = ares_set_servers_ports(dns.channel, nodes);
    free(nodes);
    if (st != ARES_SUCCESS) {
        snprintf(err, errlen, "dns: cannot set the servers: %s",
                 ares_strerror(st));
        return -1;
    }
    return 0;
}

int
dns_init(struct ev_loop *loop, const struct dns_config *cfg, char *err,
         size_t errlen)
{
    struct ares_options opts;
    int st = ares_library_init(ARES_LIB_INIT_ALL);

    if (st != ARES_SUCCESS) {
        snprintf(err, errlen, "dns: %s", ares_strerror(st));
        return -1;
    }
    memset(&opts, 0, sizeof(opts));
    opts.sock_state_cb = on_sock_state;
    /* Retransmit within the lookup's own timeout (c-ares doubles the wait
     * on each round): tries at t, 3t, 7t. */
    opts.timeout = (int)(cfg->timeout * 1000 / 7);
    if (opts.timeout < 100)
        opts.timeout = 100;
    opts.tries = 3;
    opts.flags = ARES_FLAG_NOALIASES | ARES_FLAG_NOSEARCH;
    st = ares_init_options(&dns.channel, &opts,
                           ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS |
                               ARES_OPT_TRIES | ARES_OPT_FLAGS);
    if (st != ARES_SUCCESS) {
        snprintf(err, errlen, "dns: cannot start the resolver: %s",
                 ares_strerror(st));
        ares_library_cleanup();
        return -1;
    }
    dns.loop = loop;
    if (cfg->n_servers && servers_set(cfg, err, errlen) < 0) {
        ares_destroy(dns.channel);
        ares_library_cleanup();
        return -1;
    }
    dns.timeout = cfg->timeout;
    dns.max_entries = cfg->cache_entries;
    if (dns.max_entries) {
        size_t nb = 16;
        while (nb < dns.max_entries && nb < (1u << 20))
            nb <<= 1;
        if (!(dns.buckets = calloc(nb, sizeof(*dns.buckets)))) {
            snprintf(err, errlen, "dns: out of memory");
            ares_destroy(dns.channel);
            ares_library_cleanup();
            return -1;
        }
        dns.n_buckets = nb;
    }
    ev_init(&dns.ares_timer, on_ares_timer);
    ev_timer_init(&dns.deliver, on_deliver, 0., 0.);
    dns.up = true;
    return 0;
}

void
dns_shutdown(void)
{
    if (!dns.up)
        return;
    /* Every lookup still waiting is told now, while its module exists. */
    for (struct dns_request *req = dns.inflight; req; req = req->next)
        while (req->waiters)
            query_ready(req->waiters, POSTERN_DNS_CANCELLED, NULL);
    dns.up = false; /* no new lookups from the callbacks below */
    while (dns.ready_head) {
        struct postern_dns_query *q = dns.ready_head;
        ready_unlink(q);
        hook_work_detach(&q->work);
        q->cb(q->arg, q->status, q->result);
        query_free(q);
    }
    ev_timer_stop(dns.loop, &dns.deliver);
    ares_destroy(dns.channel); /* ends the requests: ARES_EDESTRUCTION */
    ev_timer_stop(dns.loop, &dns.ares_timer);
    while (dns.ios) {
        struct dns_io *io = dns.ios;
        dns.ios = io->next;
        ev_io_stop(dns.loop, &io->w);
        free(io);
    }
    cache_free();
    ares_library_cleanup();
}
