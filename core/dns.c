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
 * What the server answered is decoded by dns_answer.c (status, records,
 * TTL); this file is the service around it.
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
#include "dns_answer.h"
#include "hook.h"
#include "log.h"
#include "module_scope.h"

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
    const struct module_instance *scope; /* who asked */
    ev_timer timer;                      /* the lookup's own timeout */
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
    dns_result_unref(e->result);
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
        dns_result_unref(q->result);
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
    dns_result_unref(q->result);
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
        const struct module_instance *was = module_scope_enter(q->scope);
        q->cb(q->arg, q->status, q->result);
        module_scope_leave(was);
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
    struct postern_dns_result *result;
    uint32_t ttl;
    postern_dns_status st =
        dns_answer_decode(status, abuf, alen, req->type, &result, &ttl);

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
    dns_result_unref(result);
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
    q->scope = module_scope();
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

uint32_t
postern_dns_ttl(const postern_dns_result *r)
{
    if (!r || !dns.loop)
        return 0;
    double left = r->expires - ev_now(dns.loop);
    return left > 0 ? (uint32_t)(left + 0.5) : 0;
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
        const struct module_instance *was = module_scope_enter(q->scope);
        q->cb(q->arg, q->status, q->result);
        module_scope_leave(was);
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
