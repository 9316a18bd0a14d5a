/*
 * client_rdns.c - the forward-confirmed reverse name of a client
 * (client_rdns.h): PTR of its address, then A/AAAA of each PTR name in
 * turn (at most RDNS_MAX_NAMES) until one holds the address. One timer
 * bounds the whole; what is not confirmed by then is "unknown".
 */
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "client_rdns.h"
#include "log.h"
#include "postern/dns.h"
#include "postern/services.h"
#include "smtp_session.h"

#define RDNS_MAX_NAMES 10

struct client_rdns {
    struct session *s;
    void (*done)(struct session *s);
    struct sockaddr_storage addr; /* IPv4-mapped IPv6 as IPv4 */
    postern_dns_query *query;
    postern_timer *timer;
    char *names[RDNS_MAX_NAMES];
    size_t n_names, next;
};

static void rdns_ask_forward(struct client_rdns *r);

static void
rdns_free(struct client_rdns *r)
{
    postern_dns_cancel(r->query);
    postern_timer_cancel(r->timer);
    for (size_t i = 0; i < r->n_names; i++)
        free(r->names[i]);
    free(r);
}

/* The lookup is over, confirmed (name) or not (NULL). */
static void
rdns_finish(struct client_rdns *r, const char *name, const char *why)
{
    struct session *s = r->s;
    void (*done)(struct session *) = r->done;

    if (name)
        s->rdns = strdup(name); /* out of memory: unknown */
    log_event(LOG_LEVEL_INFO, s->id, "rdns", "client=%s name=%s result=%s",
              s->client_ip, postern_log_value(s->rdns ? s->rdns : "unknown"),
              why);
    s->rdns_lookup = NULL;
    rdns_free(r);
    done(s);
}

static void
rdns_on_timeout(void *arg)
{
    struct client_rdns *r = arg;
    r->timer = NULL; /* freed by the core after this call */
    rdns_finish(r, NULL, "timeout");
}

static bool
same_address(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET)
        return memcmp(&((const struct sockaddr_in *)a)->sin_addr,
                      &((const struct sockaddr_in *)b)->sin_addr,
                      sizeof(struct in_addr)) == 0;
    return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                  &((const struct sockaddr_in6 *)b)->sin6_addr,
                  sizeof(struct in6_addr)) == 0;
}

static void
rdns_on_forward(void *arg, postern_dns_status status,
                const postern_dns_result *res)
{
    struct client_rdns *r = arg;
    const char *name = r->names[r->next];
    r->query = NULL;
    for (size_t i = 0; status == POSTERN_DNS_OK && i < postern_dns_count(res);
         i++) {
        struct sockaddr_storage a;
        if (postern_dns_addr(res, i, &a, NULL) == 0 &&
            same_address(&a, &r->addr)) {
            rdns_finish(r, name, "confirmed");
            return;
        }
    }
    r->next++;
    if (r->next < r->n_names) {
        rdns_ask_forward(r);
        return;
    }
    rdns_finish(r, NULL,
                status == POSTERN_DNS_TEMPFAIL ? "tempfail" : "unconfirmed");
}

static void
rdns_ask_forward(struct client_rdns *r)
{
    postern_dns_type type =
        r->addr.ss_family == AF_INET ? POSTERN_DNS_A : POSTERN_DNS_AAAA;
    r->query =
        postern_dns_lookup(NULL, r->names[r->next], type,
                           r->s->cfg->dns.reverse_timeout, rdns_on_forward, r);
    if (!r->query) /* a name we cannot ask for: try the next */
        rdns_on_forward(r, POSTERN_DNS_ERROR, NULL);
}

/* A host name that can stand in a Received comment: letters, digits,
 * hyphens, underscores and dots (c-ares escapes anything else with a
 * backslash, which is refused here too). */
static bool
rdns_name_ok(const char *name)
{
    if (!name || !*name)
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
            return false;
    return true;
}

static void
rdns_on_ptr(void *arg, postern_dns_status status, const postern_dns_result *res)
{
    struct client_rdns *r = arg;
    r->query = NULL;
    size_t n = postern_dns_count(res);
    for (size_t i = 0; status == POSTERN_DNS_OK && i < n; i++) {
        const char *name = postern_dns_name(res, i);
        if (rdns_name_ok(name) && r->n_names < RDNS_MAX_NAMES &&
            (r->names[r->n_names] = strdup(name)))
            r->n_names++;
    }
    if (r->n_names == 0) {
        rdns_finish(r, NULL,
                    status == POSTERN_DNS_OK         ? "no_name"
                    : status == POSTERN_DNS_TEMPFAIL ? "tempfail"
                                                     : "no_ptr");
        return;
    }
    rdns_ask_forward(r);
}

void
client_rdns_start(struct session *s, void (*done)(struct session *s))
{
    struct client_rdns *r = calloc(1, sizeof(*r));
    char name[80];

    if (!r)
        return;
    r->s = s;
    r->done = done;
    memcpy(&r->addr, &s->conn.peer, sizeof(r->addr));
    if (r->addr.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&r->addr;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            struct sockaddr_in in = {.sin_family = AF_INET};
            memcpy(&in.sin_addr, &in6->sin6_addr.s6_addr[12], 4);
            memset(&r->addr, 0, sizeof(r->addr));
            memcpy(&r->addr, &in, sizeof(in));
        }
    }
    if (postern_dns_reverse_name((const struct sockaddr *)&r->addr, name,
                                 sizeof(name)) < 0 ||
        !(r->timer = postern_timer_start(s->cfg->dns.reverse_timeout,
                                         rdns_on_timeout, r)) ||
        !(r->query = postern_dns_lookup(NULL, name, POSTERN_DNS_PTR,
                                        s->cfg->dns.reverse_timeout,
                                        rdns_on_ptr, r))) {
        rdns_free(r);
        return;
    }
    s->rdns_lookup = r;
}

bool
client_rdns_running(const struct session *s)
{
    return s->rdns_lookup != NULL;
}

void
client_rdns_cancel(struct session *s)
{
    if (!s->rdns_lookup)
        return;
    rdns_free(s->rdns_lookup);
    s->rdns_lookup = NULL;
}
