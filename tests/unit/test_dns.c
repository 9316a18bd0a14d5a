/*
 * test_dns.c - the DNS service (core/dns.c): status mapping, the answer
 * walker (TTLs, the SOA negative TTL), reverse names, and, against a small
 * responder in this process (UDP on 127.0.0.1, on the same libev loop,
 * answering crafted packets), the cache (TTL, negative answers, LRU
 * bound), shared in-flight queries, per-lookup timeouts, cancellation,
 * lookups tied to a hook call, and "never from inside postern_dns_lookup".
 *
 * The integration test (tests/integration/test_dns.py) checks the same
 * service against a real server (dnsmasq).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdbool.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ares.h>
#include <ev.h>

#include "postern/postern.h"

#include "config.h"
#include "dns.h"
#include "dns_answer.h"
#include "hook.h"
#include "module.h"
#include "services.h"

/* --- status mapping, walker, reverse names --- */

static void
test_status_mapping(void **state)
{
    (void)state;
    assert_int_equal(dns_status_from_ares(ARES_SUCCESS), POSTERN_DNS_OK);
    assert_int_equal(dns_status_from_ares(ARES_ENOTFOUND),
                     POSTERN_DNS_NXDOMAIN);
    assert_int_equal(dns_status_from_ares(ARES_ENODATA), POSTERN_DNS_NODATA);
    assert_int_equal(dns_status_from_ares(ARES_ETIMEOUT), POSTERN_DNS_TEMPFAIL);
    assert_int_equal(dns_status_from_ares(ARES_ESERVFAIL),
                     POSTERN_DNS_TEMPFAIL);
    assert_int_equal(dns_status_from_ares(ARES_ECONNREFUSED),
                     POSTERN_DNS_TEMPFAIL);
    assert_int_equal(dns_status_from_ares(ARES_EBADRESP), POSTERN_DNS_ERROR);
    assert_int_equal(dns_status_from_ares(ARES_EFORMERR), POSTERN_DNS_ERROR);
    assert_int_equal(dns_status_from_ares(ARES_EREFUSED), POSTERN_DNS_ERROR);
    assert_int_equal(dns_status_from_ares(ARES_ENOMEM), POSTERN_DNS_ERROR);
    assert_int_equal(dns_status_from_ares(ARES_EDESTRUCTION),
                     POSTERN_DNS_CANCELLED);
}

/* A message builder for the walker and the responder. */
struct msg {
    unsigned char b[1024];
    size_t n;
};

static void
put16(struct msg *m, unsigned v)
{
    m->b[m->n++] = (unsigned char)(v >> 8);
    m->b[m->n++] = (unsigned char)v;
}

static void
put32(struct msg *m, uint32_t v)
{
    put16(m, v >> 16);
    put16(m, v & 0xffff);
}

static void
put_name(struct msg *m, const char *name)
{
    while (*name) {
        const char *dot = strchr(name, '.');
        size_t len = dot ? (size_t)(dot - name) : strlen(name);
        m->b[m->n++] = (unsigned char)len;
        memcpy(m->b + m->n, name, len);
        m->n += len;
        name += len + (dot ? 1 : 0);
    }
    m->b[m->n++] = 0;
}

static void
put_header(struct msg *m, unsigned id, unsigned rcode, unsigned an, unsigned ns)
{
    m->n = 0;
    put16(m, id);
    put16(m, 0x8180 | rcode);
    put16(m, 1);
    put16(m, an);
    put16(m, ns);
    put16(m, 0);
}

/* An RR owned by the question's name (a pointer to offset 12). */
static void
put_rr(struct msg *m, unsigned type, uint32_t ttl, const void *rdata,
       size_t len)
{
    put16(m, 0xc00c);
    put16(m, type);
    put16(m, 1);
    put32(m, ttl);
    put16(m, (unsigned)len);
    memcpy(m->b + m->n, rdata, len);
    m->n += len;
}

static void
put_soa(struct msg *m, uint32_t ttl, uint32_t minimum)
{
    struct msg rd = {.n = 0};
    put_name(&rd, "ns.test");
    put_name(&rd, "hostmaster.test");
    put32(&rd, 1);
    put32(&rd, 3600);
    put32(&rd, 600);
    put32(&rd, 86400);
    put32(&rd, minimum);
    put_rr(m, 6, ttl, rd.b, rd.n);
}

static void
test_answer_walk(void **state)
{
    (void)state;
    struct msg m;
    uint32_t ttl, neg;
    bool have_neg;
    size_t n;
    unsigned char a[4] = {192, 0, 2, 1};

    put_header(&m, 1, 0, 2, 0);
    put_name(&m, "a.test");
    put16(&m, 1);
    put16(&m, 1);
    put_rr(&m, 1, 300, a, 4);
    put_rr(&m, 1, 120, a, 4);
    assert_int_equal(dns_answer_walk(m.b, m.n, &ttl, &neg, &have_neg, &n), 0);
    assert_int_equal(ttl, 120);
    assert_int_equal(n, 2);
    assert_false(have_neg);

    /* RFC 2308 5: the smaller of the SOA's TTL and its MINIMUM */
    put_header(&m, 1, 3, 0, 1);
    put_name(&m, "nx.test");
    put16(&m, 1);
    put16(&m, 1);
    put_soa(&m, 900, 300);
    assert_int_equal(dns_answer_walk(m.b, m.n, &ttl, &neg, &have_neg, &n), 0);
    assert_true(have_neg);
    assert_int_equal(neg, 300);
    put_header(&m, 1, 3, 0, 1);
    put_name(&m, "nx.test");
    put16(&m, 1);
    put16(&m, 1);
    put_soa(&m, 30, 300);
    assert_int_equal(dns_answer_walk(m.b, m.n, &ttl, &neg, &have_neg, &n), 0);
    assert_int_equal(neg, 30);

    /* RFC 2181 8: a TTL with the top bit set counts as zero */
    put_header(&m, 1, 0, 1, 0);
    put_name(&m, "a.test");
    put16(&m, 1);
    put16(&m, 1);
    put_rr(&m, 1, 0x80000001u, a, 4);
    assert_int_equal(dns_answer_walk(m.b, m.n, &ttl, &neg, &have_neg, &n), 0);
    assert_int_equal(ttl, 0);

    /* every truncation of a good message is refused, never overread */
    put_header(&m, 1, 3, 1, 1);
    put_name(&m, "nx.test");
    put16(&m, 1);
    put16(&m, 1);
    put_rr(&m, 1, 5, a, 4);
    put_soa(&m, 900, 300);
    for (size_t cut = 0; cut < m.n; cut++) {
        unsigned char *copy = malloc(cut ? cut : 1);
        memcpy(copy, m.b, cut);
        assert_int_equal(dns_answer_walk(copy, cut, &ttl, &neg, &have_neg, &n),
                         -1);
        free(copy);
    }
    assert_int_equal(dns_answer_walk(m.b, m.n, &ttl, &neg, &have_neg, &n), 0);
    /* a compression loop ends */
    put_header(&m, 1, 0, 0, 0);
    put16(&m, 0xc00c);
    assert_int_equal(dns_answer_walk(m.b, m.n, &ttl, &neg, &have_neg, &n), -1);
}

static void
test_reverse_name(void **state)
{
    (void)state;
    char out[80];
    struct sockaddr_in in = {.sin_family = AF_INET};
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};

    inet_pton(AF_INET, "192.0.2.1", &in.sin_addr);
    assert_int_equal(
        postern_dns_reverse_name((struct sockaddr *)&in, out, sizeof(out)), 0);
    assert_string_equal(out, "1.2.0.192.in-addr.arpa");
    assert_int_equal(postern_dns_reverse_name((struct sockaddr *)&in, out, 22),
                     -1);
    inet_pton(AF_INET6, "2001:db8::567:89ab", &in6.sin6_addr);
    assert_int_equal(postern_dns_reverse_name((struct sockaddr *)&in6, out, 73),
                     0);
    assert_string_equal(out, "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0."
                             "8.b.d.0.1.0.0.2.ip6.arpa");
    assert_int_equal(strlen(out), 72);
    assert_int_equal(postern_dns_reverse_name((struct sockaddr *)&in6, out, 72),
                     -1);
    struct sockaddr un = {.sa_family = AF_UNIX};
    assert_int_equal(postern_dns_reverse_name(&un, out, sizeof(out)), -1);
}

/* --- a responder on the loop --- */

static struct ev_loop *loop;
static int responder_fd = -1;
static ev_io responder_io;
static unsigned queries;    /* every query the responder saw */
static char last_name[256]; /* the name of the last one */
static bool drop_next;      /* leave the next query unanswered */
static struct msg held;     /* the dropped query, for answer_held() */
static struct sockaddr_in held_from;

/* Reply to the query q (its question copied) as the name asks:
 *   a*.test       A 192.0.2.1, TTL 300 ("zero*": TTL 0)
 *   txt.test      TXT "v=spf1 " "-all" and TXT "second"
 *   nx.test       NXDOMAIN + SOA (min 300); nxzero.test: SOA min 0
 *   nodata.test   NOERROR, no records, no SOA
 *   servfail.test SERVFAIL;  formerr.test FORMERR
 *   bad.test      claims an answer it does not hold
 *   drop.test     no reply */
static size_t
respond(const unsigned char *q, size_t qlen, char *name, struct msg *r)
{
    size_t off = 12, nlen = 0;
    while (off < qlen && q[off]) {
        size_t l = q[off];
        if (nlen)
            name[nlen++] = '.';
        memcpy(name + nlen, q + off + 1, l);
        nlen += l;
        off += l + 1;
    }
    name[nlen] = '\0';
    off += 5; /* the root label, type, class */
    unsigned id = (unsigned)q[0] << 8 | q[1];
    unsigned char a[4] = {192, 0, 2, 1};
    const size_t question = off - 12;

#define HEADER(rcode, an, ns)                                                  \
    do {                                                                       \
        put_header(r, id, rcode, an, ns);                                      \
        memcpy(r->b + r->n, q + 12, question);                                 \
        r->n += question;                                                      \
    } while (0)

    if (strcmp(name, "drop.test") == 0)
        return 0;
    if (strncmp(name, "zero", 4) == 0) {
        HEADER(0, 1, 0);
        put_rr(r, 1, 0, a, 4);
    } else if (name[0] == 'a') {
        HEADER(0, 1, 0);
        put_rr(r, 1, 300, a, 4);
    } else if (strcmp(name, "txt.test") == 0) {
        HEADER(0, 2, 0);
        put_rr(r, 16, 300, "\x07v=spf1 \x04-all", 13);
        put_rr(r, 16, 300, "\x06second", 7);
    } else if (strcmp(name, "nx.test") == 0) {
        HEADER(3, 0, 1);
        put_soa(r, 900, 300);
    } else if (strcmp(name, "nxzero.test") == 0) {
        HEADER(3, 0, 1);
        put_soa(r, 900, 0);
    } else if (strcmp(name, "nodata.test") == 0) {
        HEADER(0, 0, 0);
    } else if (strcmp(name, "servfail.test") == 0) {
        HEADER(2, 0, 0);
    } else if (strcmp(name, "formerr.test") == 0) {
        HEADER(1, 0, 0);
    } else if (strcmp(name, "bad.test") == 0) {
        HEADER(0, 1, 0);
        put16(r, 0xc00c);
    } else {
        HEADER(3, 0, 0);
    }
#undef HEADER
    return r->n;
}

static void
on_query(struct ev_loop *l, ev_io *w, int revents)
{
    struct msg q, r;
    struct sockaddr_in from;
    socklen_t flen = sizeof(from);
    ssize_t n =
        recvfrom(w->fd, q.b, sizeof(q.b), 0, (struct sockaddr *)&from, &flen);
    if (n < 12)
        return;
    q.n = (size_t)n;
    queries++;
    size_t len = respond(q.b, q.n, last_name, &r);
    if (drop_next) {
        drop_next = false;
        held = q;
        held_from = from;
        return;
    }
    if (len)
        sendto(w->fd, r.b, len, 0, (struct sockaddr *)&from, flen);
}

/* Send the answer to the query that was dropped (late). */
static void
answer_held(void)
{
    struct msg r;
    char name[256];
    size_t len = respond(held.b, held.n, name, &r);
    assert_true(len > 0);
    sendto(responder_fd, r.b, len, 0, (struct sockaddr *)&held_from,
           sizeof(held_from));
}

/* Run the loop until *flag (the guard fails a test that would hang). */
static bool guard_fired;

static void
on_guard(struct ev_loop *l, ev_timer *w, int revents)
{
    guard_fired = true;
}

static void
run_until(const bool *flag)
{
    ev_timer guard;
    guard_fired = false;
    ev_timer_init(&guard, on_guard, 20., 0.);
    ev_timer_start(loop, &guard);
    while (!*flag && !guard_fired)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &guard);
    assert_false(guard_fired);
}

static struct dns_config dcfg;
static char server[32];
static char *servers[1] = {server};

static int
start_dns(unsigned cache_entries)
{
    char err[256];
    dcfg = (struct dns_config){.servers = servers,
                               .n_servers = 1,
                               .timeout = 5,
                               .cache_entries = cache_entries};
    return dns_init(loop, &dcfg, err, sizeof(err));
}

static int
setup(void **state)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);

    loop = ev_default_loop(0);
    services_init(loop);
    responder_fd = socket(AF_INET, SOCK_DGRAM, 0);
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    if (responder_fd < 0 ||
        bind(responder_fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
        getsockname(responder_fd, (struct sockaddr *)&sin, &len) < 0)
        return -1;
    snprintf(server, sizeof(server), "127.0.0.1:%u", ntohs(sin.sin_port));
    ev_io_init(&responder_io, on_query, responder_fd, EV_READ);
    ev_io_start(loop, &responder_io);
    queries = 0;
    drop_next = false;
    return start_dns(100);
}

static int
teardown(void **state)
{
    dns_shutdown();
    ev_io_stop(loop, &responder_io);
    close(responder_fd);
    return 0;
}

/* --- lookups --- */

struct answer {
    bool done;
    int calls;
    postern_dns_status status;
    size_t n;
    uint32_t ttl;
    char text[256]; /* records as text, " | " between them */
};

static void
on_answer(void *arg, postern_dns_status status, const postern_dns_result *r)
{
    struct answer *a = arg;
    a->done = true;
    a->calls++;
    a->status = status;
    a->n = postern_dns_count(r);
    a->ttl = postern_dns_ttl(r);
    a->text[0] = '\0';
    for (size_t i = 0; i < a->n; i++) {
        size_t used = strlen(a->text), len = 0;
        char buf[128] = "";
        struct sockaddr_storage ss;
        const char *t = postern_dns_txt(r, i, &len);
        if (t)
            snprintf(buf, sizeof(buf), "%.*s", (int)len, t);
        else if (postern_dns_addr(r, i, &ss, NULL) == 0)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, buf,
                      sizeof(buf));
        snprintf(a->text + used, sizeof(a->text) - used, "%s%s", i ? " | " : "",
                 buf);
    }
}

static postern_dns_status
ask(const char *name, postern_dns_type type, struct answer *a)
{
    memset(a, 0, sizeof(*a));
    postern_dns_query *q =
        postern_dns_lookup(NULL, name, type, 0.5, on_answer, a);
    assert_non_null(q);
    assert_false(a->done); /* never from inside the call */
    run_until(&a->done);
    assert_int_equal(a->calls, 1);
    return a->status;
}

static void
test_answers_and_statuses(void **state)
{
    struct answer a;
    assert_int_equal(ask("a1.test", POSTERN_DNS_A, &a), POSTERN_DNS_OK);
    assert_string_equal(a.text, "192.0.2.1");
    assert_true(a.ttl > 0 && a.ttl <= 300);
    assert_int_equal(ask("txt.test", POSTERN_DNS_TXT, &a), POSTERN_DNS_OK);
    assert_string_equal(a.text, "v=spf1 -all | second"); /* RFC 7208 3.3 */
    assert_int_equal(ask("nx.test", POSTERN_DNS_A, &a), POSTERN_DNS_NXDOMAIN);
    assert_int_equal(ask("nodata.test", POSTERN_DNS_A, &a), POSTERN_DNS_NODATA);
    /* an answer of another type only: no record of the type asked */
    assert_int_equal(ask("txt.test", POSTERN_DNS_MX, &a), POSTERN_DNS_NODATA);
    assert_int_equal(ask("servfail.test", POSTERN_DNS_A, &a),
                     POSTERN_DNS_TEMPFAIL);
    assert_int_equal(ask("formerr.test", POSTERN_DNS_A, &a), POSTERN_DNS_ERROR);
    assert_int_equal(ask("bad.test", POSTERN_DNS_A, &a), POSTERN_DNS_ERROR);
    assert_int_equal(ask("drop.test", POSTERN_DNS_A, &a), POSTERN_DNS_TEMPFAIL);
    /* names that cannot be asked never start */
    assert_null(
        postern_dns_lookup(NULL, "a..test", POSTERN_DNS_A, 0, on_answer, &a));
    assert_null(postern_dns_lookup(NULL, "", POSTERN_DNS_A, 0, on_answer, &a));
    assert_null(
        postern_dns_lookup(NULL, "a b.test", POSTERN_DNS_A, 0, on_answer, &a));
    assert_null(postern_dns_lookup(NULL, "a.test", (postern_dns_type)6, 0,
                                   on_answer, &a));
}

static void
test_cache(void **state)
{
    struct answer a;
    ask("a1.test", POSTERN_DNS_A, &a);
    ask("A1.Test.", POSTERN_DNS_A, &a); /* the same name */
    assert_int_equal(a.status, POSTERN_DNS_OK);
    assert_int_equal(queries, 1);
    ask("a1.test", POSTERN_DNS_AAAA, &a); /* another type: asked */
    assert_int_equal(queries, 2);
    /* negative answers: for the SOA's negative TTL, or 60 s without SOA */
    ask("nx.test", POSTERN_DNS_A, &a);
    ask("nx.test", POSTERN_DNS_A, &a);
    assert_int_equal(a.status, POSTERN_DNS_NXDOMAIN);
    assert_int_equal(queries, 3);
    ask("nodata.test", POSTERN_DNS_A, &a);
    ask("nodata.test", POSTERN_DNS_A, &a);
    assert_int_equal(a.status, POSTERN_DNS_NODATA);
    assert_int_equal(queries, 4);
    /* TTL 0, a SOA minimum of 0, and failures are not kept */
    ask("zero.test", POSTERN_DNS_A, &a);
    ask("zero.test", POSTERN_DNS_A, &a);
    ask("nxzero.test", POSTERN_DNS_A, &a);
    ask("nxzero.test", POSTERN_DNS_A, &a);
    ask("servfail.test", POSTERN_DNS_A, &a);
    unsigned before = queries;
    ask("servfail.test", POSTERN_DNS_A, &a);
    assert_true(queries > before);
    assert_int_equal(dns_cache_size(), 4);
}

static void
test_cache_bound(void **state)
{
    struct answer a;
    dns_shutdown();
    assert_int_equal(start_dns(2), 0);
    ask("a1.test", POSTERN_DNS_A, &a);
    ask("a2.test", POSTERN_DNS_A, &a);
    ask("a1.test", POSTERN_DNS_A, &a); /* a1 is now the most recent */
    assert_int_equal(queries, 2);
    ask("a3.test", POSTERN_DNS_A, &a); /* a2 goes */
    assert_int_equal(dns_cache_size(), 2);
    ask("a1.test", POSTERN_DNS_A, &a);
    assert_int_equal(queries, 3);
    ask("a2.test", POSTERN_DNS_A, &a);
    assert_int_equal(queries, 4);

    dns_shutdown(); /* cache_entries 0: no cache */
    assert_int_equal(start_dns(0), 0);
    ask("a1.test", POSTERN_DNS_A, &a);
    ask("a1.test", POSTERN_DNS_A, &a);
    assert_int_equal(queries, 6);
    assert_int_equal(dns_cache_size(), 0);
}

static void
test_shared_query_timeout_and_cancel(void **state)
{
    struct answer a1, a2, a3;
    memset(&a1, 0, sizeof(a1));
    memset(&a2, 0, sizeof(a2));
    memset(&a3, 0, sizeof(a3));

    /* Three lookups of one name share one query. The first times out
     * (TEMPFAIL), the second is cancelled (never called), the third
     * waits long enough for the late answer. */
    drop_next = true;
    postern_dns_query *q1 =
        postern_dns_lookup(NULL, "a9.test", POSTERN_DNS_A, 0.2, on_answer, &a1);
    postern_dns_query *q2 =
        postern_dns_lookup(NULL, "a9.test", POSTERN_DNS_A, 30, on_answer, &a2);
    postern_dns_query *q3 =
        postern_dns_lookup(NULL, "a9.test", POSTERN_DNS_A, 30, on_answer, &a3);
    assert_non_null(q1);
    assert_non_null(q2);
    assert_non_null(q3);
    run_until(&a1.done);
    assert_int_equal(a1.status, POSTERN_DNS_TEMPFAIL);
    assert_false(a3.done);
    postern_dns_cancel(q2);
    answer_held();
    run_until(&a3.done);
    assert_int_equal(a3.status, POSTERN_DNS_OK);
    assert_int_equal(queries, 1);
    assert_int_equal(a1.calls, 1);
    assert_int_equal(a2.calls, 0);

    /* cancelling a cache hit before its turn: never called */
    struct answer a4 = {0};
    postern_dns_query *q4 =
        postern_dns_lookup(NULL, "a9.test", POSTERN_DNS_A, 1, on_answer, &a4);
    postern_dns_cancel(q4);
    struct answer a5 = {0};
    postern_dns_lookup(NULL, "a9.test", POSTERN_DNS_A, 1, on_answer, &a5);
    run_until(&a5.done);
    assert_int_equal(a4.calls, 0);
}

/* --- lookups tied to a hook call --- */

static struct answer tied;
static postern_ctx *tied_ctx;
static postern_result tied_resume_with = POSTERN_CONTINUE;

static void
on_tied_answer(void *arg, postern_dns_status status,
               const postern_dns_result *r)
{
    on_answer(&tied, status, r);
    tied.done = true;
    postern_resume(tied_ctx, tied_resume_with);
}

static postern_result
tied_handler(postern_ctx *ctx, void *instance)
{
    tied_ctx = ctx;
    if (!postern_dns_lookup(ctx, (const char *)instance, POSTERN_DNS_A, 30,
                            on_tied_answer, NULL))
        return POSTERN_TEMPFAIL;
    return POSTERN_PENDING;
}

static const postern_module tied_module = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "tied",
    .handlers = {[POSTERN_HOOK_RCPT] = tied_handler},
};

static bool hook_done_called;
static postern_result hook_done_result;

static void
on_hook_done(struct session *s, postern_result r, const struct hook_reply *rep)
{
    hook_done_called = true;
    hook_done_result = r;
}

static struct module_instance tied_instance;
static struct module_set tied_set;

static void
tied_chain(const char *name)
{
    tied_instance = (struct module_instance){
        .instance = "10-tied",
        .file = "10-tied",
        .desc = &tied_module,
        .state = (void *)name,
        .hooks_mask = POSTERN_HOOK_BIT(POSTERN_HOOK_RCPT)};
    tied_set.items = &tied_instance;
    tied_set.n = 1;
    assert_int_equal(hook_chains_build(&tied_set), 0);
    memset(&tied, 0, sizeof(tied));
    hook_done_called = false;
}

static void
test_tied_lookup_completes(void **state)
{
    tied_chain("a1.test");
    struct hook_ctx *ctx = hook_ctx_new(NULL, "0000000000000001", NULL);
    hook_run(ctx, POSTERN_HOOK_RCPT, on_hook_done);
    assert_true(hook_ctx_pending(ctx));
    run_until(&tied.done);
    assert_int_equal(tied.status, POSTERN_DNS_OK);
    assert_true(hook_done_called);
    hook_ctx_release(ctx);
    hook_chains_free();
}

static void
test_tied_lookup_cancelled_when_orphaned(void **state)
{
    tied_chain("drop.test");
    drop_next = true;
    struct hook_ctx *ctx = hook_ctx_new(NULL, "0000000000000002", NULL);
    hook_run(ctx, POSTERN_HOOK_RCPT, on_hook_done);
    assert_true(hook_ctx_pending(ctx));
    ev_run(loop, EVRUN_NOWAIT); /* the query goes out */
    hook_ctx_release(ctx);      /* the session closes: orphaned */
    assert_false(tied.done);    /* not from inside the release */
    run_until(&tied.done);
    assert_int_equal(tied.status, POSTERN_DNS_CANCELLED);
    assert_int_equal(tied.calls, 1);
    assert_false(hook_done_called); /* nothing answers a closed session */
    hook_orphans_free();
    hook_chains_free();
}

/* A handler that returned a decision leaves its lookup running: an
 * orphaning later (of the next call) does not touch it. */
static void
test_lookup_outlives_its_call(void **state)
{
    struct answer a = {0};
    struct hook_ctx *ctx = hook_ctx_new(NULL, "0000000000000003", NULL);
    postern_ctx *handle = hook_ctx_handle(ctx);
    postern_dns_query *q =
        postern_dns_lookup(handle, "a1.test", POSTERN_DNS_A, 5, on_answer, &a);
    assert_non_null(q);
    hook_ctx_release(ctx); /* not pending: freed, the lookup detached */
    run_until(&a.done);
    assert_int_equal(a.status, POSTERN_DNS_OK);

    /* a dead handle: completes soon with CANCELLED */
    memset(&a, 0, sizeof(a));
    assert_non_null(
        postern_dns_lookup(handle, "a1.test", POSTERN_DNS_A, 5, on_answer, &a));
    assert_false(a.done);
    run_until(&a.done);
    assert_int_equal(a.status, POSTERN_DNS_CANCELLED);
    hook_orphans_free();
}

/* At shutdown, a lookup still running is told CANCELLED, once. */
static void
test_shutdown_tells_everyone(void **state)
{
    struct answer a = {0};
    drop_next = true;
    assert_non_null(postern_dns_lookup(NULL, "drop.test", POSTERN_DNS_A, 30,
                                       on_answer, &a));
    ev_run(loop, EVRUN_NOWAIT);
    dns_shutdown();
    assert_true(a.done);
    assert_int_equal(a.status, POSTERN_DNS_CANCELLED);
    assert_int_equal(a.calls, 1);
    assert_null(
        postern_dns_lookup(NULL, "a1.test", POSTERN_DNS_A, 30, on_answer, &a));
    assert_int_equal(start_dns(10), 0); /* for teardown */
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_mapping),
        cmocka_unit_test(test_answer_walk),
        cmocka_unit_test(test_reverse_name),
        cmocka_unit_test_setup_teardown(test_answers_and_statuses, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shared_query_timeout_and_cancel,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_tied_lookup_completes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_tied_lookup_cancelled_when_orphaned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lookup_outlives_its_call, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_tells_everyone, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
