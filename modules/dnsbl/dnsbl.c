/*
 * dnsbl.c - the dnsbl module: the client address against DNS blocklists.
 *
 * At the first hook of the session that reaches the instance (connect,
 * unless the instance is attached to fewer hooks) the module asks every
 * configured list at once: an A lookup of the client's reversed address
 * (IPv4 octets, IPv6 nibbles) under the list's zone. The lookups run in the
 * background while the session goes on; their state lives in a session
 * note, whose free function cancels what is still in flight when the
 * session ends. At the acting hook (rcpt by default) the handler decides
 * from the answers, or, when some are still outstanding, goes PENDING and
 * ties them to its own context (the core joins them to the queries already
 * in flight, within what is left of the timeout), so that a client leaving
 * meanwhile gets them answered POSTERN_DNS_CANCELLED: the handler resumes
 * and the session, with the note, is freed.
 *
 * A list lists the client when one of its A answers is among the list's
 * codes (default 127.0.0.0/8); each listing list adds its weight, and a
 * score reaching the threshold rejects. The zones that listed the client
 * are left in the session note "dnsbl.listed" (space-separated).
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <postern/postern.h>

#define DNSBL_NOTE_LISTED "dnsbl.listed"
#define DNSBL_MAX_LISTS 64
/* The reversed IPv6 address takes 64 bytes ("x." 32 times) of the 253 a
 * name may have. */
#define DNSBL_MAX_ZONE (253 - 64)
#define DNSBL_WEIGHT_MAX 1000.0

struct dnsbl_net {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    unsigned prefix;
};

struct dnsbl_list {
    char *zone;
    double weight;
    struct dnsbl_net *codes; /* IPv4; none: 127.0.0.0/8 */
    size_t n_codes;
};

typedef enum dnsbl_on_error {
    DNSBL_ERROR_CONTINUE,
    DNSBL_ERROR_TEMPFAIL
} dnsbl_on_error;

struct dnsbl_module {
    struct dnsbl_list *lists;
    size_t n_lists;
    double threshold;
    struct dnsbl_net *allow;
    size_t n_allow;
    postern_hook act_at;
    int code;
    char enhanced[16];
    double timeout;
    bool postmaster;
    dnsbl_on_error on_error;
    char *state_key; /* the session note of this instance's check */
    /* postern_dnsbl_listed_total (postern/metrics.h) */
    postern_counter *listed;
};

typedef enum dnsbl_outcome {
    DNSBL_PENDING,
    DNSBL_CLEAR, /* no such name, or no answer among the codes */
    DNSBL_LISTED,
    DNSBL_FAILED /* temporary failure, error, no answer in time */
} dnsbl_outcome;

typedef enum dnsbl_verdict {
    DNSBL_PASS,
    DNSBL_BLOCK,
    DNSBL_DEFER
} dnsbl_verdict;

struct dnsbl_check;

/* One list asked about the client. */
struct dnsbl_probe {
    struct dnsbl_check *check;
    size_t list;
    dnsbl_outcome outcome;
    postern_dns_query *query; /* while in flight */
    char name[256];
};

/* The session note: the lookups and, once they are all answered, the
 * verdict. */
struct dnsbl_check {
    const struct dnsbl_module *mod;
    char ip[INET6_ADDRSTRLEN];
    struct dnsbl_probe *probes;
    size_t n_probes, pending;
    double deadline;     /* when the lookups time out (postern_now()) */
    postern_ctx *waiter; /* the acting hook's call, pending on us */
    postern_hook waiter_hook;
    bool done, published;
    dnsbl_verdict verdict;
    double score;
    char *listed; /* zones that listed the client, space-separated */
    char *failed; /* zones whose lookup failed, space-separated */
};

/* --- addresses ----------------------------------------------------------- */

/* The client as an IPv4 or IPv6 address (an IPv4-mapped IPv6 address is
 * its IPv4 address). false when it is neither. */
static bool
dnsbl_client(const postern_ctx *ctx, struct dnsbl_net *ip)
{
    socklen_t len = 0;
    const struct sockaddr *sa = postern_client_addr(ctx, &len);

    memset(ip, 0, sizeof *ip);
    if (sa == NULL)
        return false;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        ip->family = AF_INET;
        memcpy(ip->addr, &sin->sin_addr, 4);
        ip->prefix = 32;
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
            ip->family = AF_INET;
            memcpy(ip->addr, sin6->sin6_addr.s6_addr + 12, 4);
            ip->prefix = 32;
        } else {
            ip->family = AF_INET6;
            memcpy(ip->addr, &sin6->sin6_addr, 16);
            ip->prefix = 128;
        }
        return true;
    }
    return false;
}

static bool
dnsbl_net_match(const struct dnsbl_net *net, int family, const uint8_t *addr)
{
    unsigned bits = net->prefix;

    if (net->family != family)
        return false;
    if (memcmp(net->addr, addr, bits / 8) != 0)
        return false;
    if (bits % 8 == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - bits % 8));
    return (net->addr[bits / 8] & mask) == (addr[bits / 8] & mask);
}

/* "192.0.2.0/24", "2001:db8::/32" or a bare address; family 0: either.
 * The address is kept masked to its prefix. 0 or -1. */
static int
dnsbl_net_parse(const char *s, int family, struct dnsbl_net *net)
{
    char buf[INET6_ADDRSTRLEN];
    const char *slash = strchr(s, '/');
    size_t len = slash ? (size_t)(slash - s) : strlen(s);

    memset(net, 0, sizeof *net);
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (family != AF_INET6 && inet_pton(AF_INET, buf, net->addr) == 1)
        net->family = AF_INET;
    else if (family != AF_INET && inet_pton(AF_INET6, buf, net->addr) == 1)
        net->family = AF_INET6;
    else
        return -1;
    unsigned max = net->family == AF_INET ? 32 : 128;
    net->prefix = max;
    if (slash != NULL) {
        const char *p = slash + 1;
        unsigned v = 0;
        if (*p == '\0' || strlen(p) > 3)
            return -1;
        for (; *p; p++) {
            if (*p < '0' || *p > '9')
                return -1;
            v = v * 10 + (unsigned)(*p - '0');
        }
        if (v > max)
            return -1;
        net->prefix = v;
    }
    for (unsigned i = net->prefix; i < max; i++)
        net->addr[i / 8] &= (uint8_t) ~(0x80 >> (i % 8));
    return 0;
}

/* The name to ask: the reversed address under zone. 0 or -1. */
static int
dnsbl_query_name(const struct dnsbl_net *ip, const char *zone, char *out,
                 size_t size)
{
    static const char hex[] = "0123456789abcdef";
    int n;

    if (ip->family == AF_INET) {
        n = snprintf(out, size, "%u.%u.%u.%u.%s", ip->addr[3], ip->addr[2],
                     ip->addr[1], ip->addr[0], zone);
        return n < 0 || (size_t)n >= size ? -1 : 0;
    }
    if (size < 64 + 1)
        return -1;
    size_t k = 0;
    for (int i = 15; i >= 0; i--) {
        out[k++] = hex[ip->addr[i] & 15];
        out[k++] = '.';
        out[k++] = hex[ip->addr[i] >> 4];
        out[k++] = '.';
    }
    n = snprintf(out + k, size - k, "%s", zone);
    return n < 0 || (size_t)n >= size - k ? -1 : 0;
}

/* --- the check ------------------------------------------------------------ */

static void
dnsbl_check_free(void *p)
{
    struct dnsbl_check *c = p;

    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n_probes; i++)
        if (c->probes[i].query != NULL)
            postern_dns_cancel(c->probes[i].query);
    free(c->probes);
    free(c->listed);
    free(c->failed);
    free(c);
}

/* Append zone to a space-separated list unless it is there already. */
static int
dnsbl_words_add(char **list, const char *zone)
{
    size_t zlen = strlen(zone);

    if (*list != NULL) {
        for (const char *w = *list; *w;) {
            size_t n = strcspn(w, " ");
            if (n == zlen && strncasecmp(w, zone, n) == 0)
                return 0;
            w += n;
            w += *w == ' ';
        }
    }
    size_t old = *list ? strlen(*list) : 0;
    char *grown = realloc(*list, old + (old > 0) + zlen + 1);
    if (grown == NULL)
        return -1;
    if (old > 0)
        grown[old++] = ' ';
    memcpy(grown + old, zone, zlen + 1);
    *list = grown;
    return 0;
}

/* Every list answered: the score and the verdict. */
static void
dnsbl_check_done(struct dnsbl_check *c)
{
    const struct dnsbl_module *mod = c->mod;
    double could = 0; /* what the failed lists might have added */
    bool oom = false;

    c->done = true;
    c->score = 0;
    for (size_t i = 0; i < c->n_probes; i++) {
        const struct dnsbl_list *list = &mod->lists[c->probes[i].list];
        if (c->probes[i].outcome == DNSBL_LISTED) {
            c->score += list->weight;
            oom |= dnsbl_words_add(&c->listed, list->zone) != 0;
        } else if (c->probes[i].outcome == DNSBL_FAILED) {
            if (list->weight > 0)
                could += list->weight;
            oom |= dnsbl_words_add(&c->failed, list->zone) != 0;
        }
    }
    if (c->score >= mod->threshold)
        c->verdict = DNSBL_BLOCK;
    else if (mod->on_error == DNSBL_ERROR_TEMPFAIL &&
             (oom || (c->failed != NULL && c->score + could >= mod->threshold)))
        c->verdict = DNSBL_DEFER;
    else
        c->verdict = DNSBL_PASS;
}

/* Once per check, on the first hook call after it is done: the note for
 * later modules and the log line. */
static void
dnsbl_publish(postern_ctx *ctx, struct dnsbl_check *c)
{
    static const char *const actions[] = {"none", "reject", "tempfail"};
    const struct dnsbl_module *mod = c->mod;

    if (c->published)
        return;
    c->published = true;
    if (c->listed != NULL) {
        postern_counter_add(mod->listed, 1);
        /* Another dnsbl instance may have noted its zones already. */
        const char *before =
            postern_note_get(ctx, POSTERN_NOTE_SESSION, DNSBL_NOTE_LISTED);
        char *value = NULL;
        if (before != NULL && before[0] != '\0') {
            if (asprintf(&value, "%s %s", before, c->listed) < 0)
                value = NULL;
        } else {
            value = strdup(c->listed);
        }
        if (value == NULL ||
            postern_note_set(ctx, POSTERN_NOTE_SESSION, DNSBL_NOTE_LISTED,
                             value, free) != 0) {
            free(value);
            postern_log(ctx, POSTERN_LOG_WARNING,
                        "could not keep the note " DNSBL_NOTE_LISTED);
        }
        postern_log(ctx, POSTERN_LOG_INFO,
                    "client=%s listed=%s score=%g threshold=%g failed=%s "
                    "action=%s",
                    postern_log_value(c->ip), postern_log_value(c->listed),
                    c->score, mod->threshold, postern_log_value(c->failed),
                    actions[c->verdict]);
    } else if (c->failed != NULL) {
        postern_log(ctx, POSTERN_LOG_INFO,
                    "client=%s listed=- failed=%s action=%s",
                    postern_log_value(c->ip), postern_log_value(c->failed),
                    actions[c->verdict]);
    } else {
        postern_log(ctx, POSTERN_LOG_DEBUG, "client=%s listed=- action=none",
                    postern_log_value(c->ip));
    }
}

/* The zones of a space-separated list, as "a, b" for a reply. */
static void
dnsbl_zones_text(const char *words, char *out, size_t size)
{
    size_t k = 0;

    out[0] = '\0';
    for (const char *p = words ? words : ""; *p && k + 3 < size; p++) {
        if (*p == ' ') {
            out[k++] = ',';
            out[k++] = ' ';
        } else {
            out[k++] = *p;
        }
    }
    out[k] = '\0';
}

/* The decision at an acting hook, with its reply. */
static postern_result
dnsbl_decide(postern_ctx *ctx, const struct dnsbl_check *c, postern_hook hook)
{
    const struct dnsbl_module *mod = c->mod;
    char zones[400];

    switch (c->verdict) {
    case DNSBL_BLOCK:
        dnsbl_zones_text(c->listed, zones, sizeof zones);
        /* A greeting may only be 554 (RFC 5321 3.1, 4.3.2). */
        postern_reply(ctx, hook == POSTERN_HOOK_CONNECT ? 554 : mod->code,
                      mod->enhanced, "Client host [%s] blocked using %s", c->ip,
                      zones);
        return POSTERN_REJECT;
    case DNSBL_DEFER:
        dnsbl_zones_text(c->failed, zones, sizeof zones);
        postern_reply(ctx, hook == POSTERN_HOOK_CONNECT ? 421 : 451, "4.7.1",
                      "Client host [%s] could not be checked against %s, "
                      "try again later",
                      c->ip, zones[0] ? zones : "the blocklists");
        return POSTERN_TEMPFAIL;
    default:
        return POSTERN_CONTINUE;
    }
}

/* Every lookup still in flight: cancelled; the check will not finish. */
static void
dnsbl_check_abandon(struct dnsbl_check *c)
{
    for (size_t i = 0; i < c->n_probes; i++) {
        struct dnsbl_probe *p = &c->probes[i];
        if (p->query != NULL) {
            postern_dns_cancel(p->query);
            p->query = NULL;
        }
        if (p->outcome == DNSBL_PENDING)
            p->outcome = DNSBL_FAILED;
    }
    c->pending = 0;
}

static bool
dnsbl_answer_counts(const struct dnsbl_list *list,
                    const postern_dns_result *result)
{
    size_t n = postern_dns_count(result);

    for (size_t i = 0; i < n; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        if (postern_dns_addr(result, i, &ss, &len) != 0 ||
            ss.ss_family != AF_INET)
            continue;
        const uint8_t *a =
            (const uint8_t *)&((const struct sockaddr_in *)&ss)->sin_addr;
        if (list->n_codes == 0 && a[0] == 127)
            return true;
        for (size_t k = 0; k < list->n_codes; k++)
            if (dnsbl_net_match(&list->codes[k], AF_INET, a))
                return true;
    }
    return false;
}

static void
dnsbl_on_answer(void *arg, postern_dns_status status,
                const postern_dns_result *result)
{
    struct dnsbl_probe *p = arg;
    struct dnsbl_check *c = p->check;
    const struct dnsbl_list *list = &c->mod->lists[p->list];

    p->query = NULL; /* answered: never cancel it */
    if (status == POSTERN_DNS_CANCELLED && c->waiter != NULL &&
        postern_ctx_orphaned(c->waiter)) {
        /* The client left while the acting hook waited. The note (and
         * this check) goes with the session, once the context is
         * resumed. */
        postern_ctx *ctx = c->waiter;
        c->waiter = NULL;
        dnsbl_check_abandon(c);
        postern_log(ctx, POSTERN_LOG_DEBUG,
                    "check abandoned: the client left zone=%s",
                    postern_log_value(list->zone));
        postern_resume(ctx, POSTERN_CONTINUE);
        return;
    }
    switch (status) {
    case POSTERN_DNS_OK:
        p->outcome =
            dnsbl_answer_counts(list, result) ? DNSBL_LISTED : DNSBL_CLEAR;
        break;
    case POSTERN_DNS_NXDOMAIN:
    case POSTERN_DNS_NODATA:
        p->outcome = DNSBL_CLEAR;
        break;
    default:
        p->outcome = DNSBL_FAILED;
        postern_log(c->waiter, POSTERN_LOG_DEBUG,
                    "lookup failed name=%s status=%d",
                    postern_log_value(p->name), (int)status);
        break;
    }
    if (--c->pending > 0)
        return;
    dnsbl_check_done(c);
    if (c->waiter == NULL)
        return; /* published at the next hook */
    postern_ctx *ctx = c->waiter;
    c->waiter = NULL;
    dnsbl_publish(ctx, c);
    /* Last: the resume may run the next (pipelined) command, and this
     * handler with it. */
    postern_resume(ctx, dnsbl_decide(ctx, c, c->waiter_hook));
}

/* Start the lookups, the check kept in the session note. NULL when out of
 * memory. */
static struct dnsbl_check *
dnsbl_check_start(postern_ctx *ctx, const struct dnsbl_module *mod,
                  const struct dnsbl_net *ip)
{
    struct dnsbl_check *c = calloc(1, sizeof *c);

    if (c == NULL ||
        (c->probes = calloc(mod->n_lists, sizeof *c->probes)) == NULL) {
        free(c);
        return NULL;
    }
    c->mod = mod;
    c->n_probes = mod->n_lists;
    if (inet_ntop(ip->family, ip->addr, c->ip, sizeof c->ip) == NULL)
        snprintf(c->ip, sizeof c->ip, "?");
    if (postern_note_set(ctx, POSTERN_NOTE_SESSION, mod->state_key, c,
                         dnsbl_check_free) != 0) {
        dnsbl_check_free(c);
        return NULL;
    }
    c->deadline = postern_now() + mod->timeout;
    for (size_t i = 0; i < mod->n_lists; i++) {
        struct dnsbl_probe *p = &c->probes[i];
        p->check = c;
        p->list = i;
        p->outcome = DNSBL_FAILED;
        if (dnsbl_query_name(ip, mod->lists[i].zone, p->name, sizeof p->name) !=
            0)
            continue;
        p->query = postern_dns_lookup(ctx, p->name, POSTERN_DNS_A, mod->timeout,
                                      dnsbl_on_answer, p);
        if (p->query == NULL)
            continue;
        p->outcome = DNSBL_PENDING;
        c->pending++;
    }
    if (c->pending == 0)
        dnsbl_check_done(c);
    return c;
}

/*
 * The acting hook must wait: tie the lookups still in flight to its
 * context (unless this call started them), within what is left of their
 * time (the core joins each to the query already asked, or answers it
 * from its cache).
 */
static void
dnsbl_check_wait(postern_ctx *ctx, struct dnsbl_check *c, postern_hook hook,
                 bool started_here)
{
    double left = c->deadline - postern_now();

    if (left < 0.01)
        left = 0.01;
    c->waiter = ctx;
    c->waiter_hook = hook;
    for (size_t i = 0; !started_here && i < c->n_probes; i++) {
        struct dnsbl_probe *p = &c->probes[i];
        if (p->query == NULL)
            continue;
        postern_dns_cancel(p->query);
        p->query = postern_dns_lookup(ctx, p->name, POSTERN_DNS_A, left,
                                      dnsbl_on_answer, p);
        if (p->query == NULL) {
            p->outcome = DNSBL_FAILED;
            c->pending--;
        }
    }
    if (c->pending == 0) {
        c->waiter = NULL;
        dnsbl_check_done(c);
    }
}

static bool
dnsbl_is_postmaster(const char *rcpt)
{
    if (rcpt == NULL)
        return false;
    const char *at = strrchr(rcpt, '@');
    size_t len = at ? (size_t)(at - rcpt) : strlen(rcpt);
    return len == 10 && strncasecmp(rcpt, "postmaster", 10) == 0;
}

static postern_result
dnsbl_handle(postern_ctx *ctx, struct dnsbl_module *mod, postern_hook hook)
{
    struct dnsbl_check *c =
        postern_note_get(ctx, POSTERN_NOTE_SESSION, mod->state_key);
    bool started_here = c == NULL;

    if (c == NULL) {
        struct dnsbl_net ip;
        if (!dnsbl_client(ctx, &ip) || postern_auth_user(ctx) != NULL ||
            postern_client_relay(ctx))
            return POSTERN_CONTINUE;
        for (size_t i = 0; i < mod->n_allow; i++)
            if (dnsbl_net_match(&mod->allow[i], ip.family, ip.addr))
                return POSTERN_CONTINUE;
        if ((c = dnsbl_check_start(ctx, mod, &ip)) == NULL) {
            postern_log(ctx, POSTERN_LOG_ERROR,
                        "out of memory starting the lookups");
            return POSTERN_TEMPFAIL;
        }
    }
    if (c->done)
        dnsbl_publish(ctx, c);
    if (hook < mod->act_at || postern_auth_user(ctx) != NULL)
        return POSTERN_CONTINUE;
    if (hook == POSTERN_HOOK_RCPT && mod->postmaster &&
        dnsbl_is_postmaster(postern_rcpt_current(ctx)))
        return POSTERN_CONTINUE; /* the relay policy still decides */
    if (!c->done) {
        dnsbl_check_wait(ctx, c, hook, started_here);
        if (!c->done) {
            postern_log(ctx, POSTERN_LOG_DEBUG, "waiting hook=%s lookups=%zu",
                        postern_hook_name(hook), c->pending);
            return POSTERN_PENDING;
        }
        dnsbl_publish(ctx, c);
    }
    return dnsbl_decide(ctx, c, hook);
}

static postern_result
dnsbl_connect(postern_ctx *ctx, void *instance)
{
    return dnsbl_handle(ctx, instance, POSTERN_HOOK_CONNECT);
}

static postern_result
dnsbl_helo(postern_ctx *ctx, void *instance)
{
    return dnsbl_handle(ctx, instance, POSTERN_HOOK_HELO);
}

static postern_result
dnsbl_mail(postern_ctx *ctx, void *instance)
{
    return dnsbl_handle(ctx, instance, POSTERN_HOOK_MAIL);
}

static postern_result
dnsbl_rcpt(postern_ctx *ctx, void *instance)
{
    return dnsbl_handle(ctx, instance, POSTERN_HOOK_RCPT);
}

/* --- configuration -------------------------------------------------------- */

static void
dnsbl_destroy(void *instance)
{
    struct dnsbl_module *mod = instance;

    if (mod == NULL)
        return;
    for (size_t i = 0; i < mod->n_lists; i++) {
        free(mod->lists[i].zone);
        free(mod->lists[i].codes);
    }
    free(mod->lists);
    free(mod->allow);
    free(mod->state_key);
    free(mod);
}

/* A zone: a domain name of LDH labels (and '_'), 1 to 63 bytes each, at
 * most DNSBL_MAX_ZONE bytes, one trailing dot allowed. A lowercase copy
 * without the dot, or NULL. */
static char *
dnsbl_zone_parse(const char *s, size_t len)
{
    if (len > 0 && s[len - 1] == '.')
        len--;
    if (len == 0 || len > DNSBL_MAX_ZONE || strlen(s) < len)
        return NULL;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (ch == '.') {
            if (label == 0)
                return NULL;
            label = 0;
            continue;
        }
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '-' || ch == '_') ||
            ++label > 63)
            return NULL;
    }
    if (label == 0)
        return NULL;
    char *zone = strndup(s, len);
    if (zone != NULL)
        for (char *p = zone; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
    return zone;
}

/* An array of networks at path; family 0: IPv4 or IPv6. */
static int
dnsbl_config_nets(postern_module_init *init, const char *path, json_t *value,
                  int family, struct dnsbl_net **out, size_t *n_out)
{
    const char *what = family == AF_INET
                           ? "an IPv4 address or network (\"127.0.0.2\", "
                             "\"127.0.0.4/30\")"
                           : "an address or a CIDR network "
                             "(\"192.0.2.0/24\", \"2001:db8::/32\")";

    if (!json_is_array(value)) {
        postern_init_error(init, path, "expected an array, each item %s", what);
        return -1;
    }
    size_t n = json_array_size(value);
    *out = calloc(n ? n : 1, sizeof **out);
    if (*out == NULL) {
        postern_init_error(init, path, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_array_get(value, i);
        const char *s = json_string_value(item);
        if (s == NULL || strlen(s) != json_string_length(item) ||
            dnsbl_net_parse(s, family, &(*out)[i]) != 0) {
            char where[160];
            snprintf(where, sizeof where, "%s[%zu]", path, i);
            postern_init_error(init, where, "expected %s", what);
            return -1;
        }
    }
    *n_out = n;
    return 0;
}

/* A weight (positive: the threshold) within DNSBL_WEIGHT_MAX. */
static int
dnsbl_config_number(postern_module_init *init, const char *path, json_t *value,
                    bool positive, double *out)
{
    double v = json_number_value(value);

    if (!json_is_number(value) || !isfinite(v) || v > DNSBL_WEIGHT_MAX ||
        (positive ? !(v > 0) : v < -DNSBL_WEIGHT_MAX)) {
        if (positive)
            postern_init_error(init, path,
                               "expected a number above 0, at most %g",
                               DNSBL_WEIGHT_MAX);
        else
            postern_init_error(init, path,
                               "expected a number between %g and %g",
                               -DNSBL_WEIGHT_MAX, DNSBL_WEIGHT_MAX);
        return -1;
    }
    *out = v;
    return 0;
}

static int
dnsbl_config_list(postern_module_init *init, size_t index, json_t *value,
                  struct dnsbl_list *list)
{
    char path[96];
    const char *key;
    json_t *v;

    list->weight = 1;
    snprintf(path, sizeof path, "lists[%zu]", index);
    if (!json_is_object(value)) {
        postern_init_error(init, path,
                           "expected an object with \"zone\" and optionally "
                           "\"weight\" and \"codes\"");
        return -1;
    }
    json_object_foreach(value, key, v)
    {
        char where[160];
        snprintf(where, sizeof where, "%s.%.48s", path, key);
        if (strcmp(key, "zone") == 0) {
            const char *s = json_string_value(v);
            if (s == NULL || (list->zone = dnsbl_zone_parse(
                                  s, json_string_length(v))) == NULL) {
                postern_init_error(init, where,
                                   "expected a DNS zone such as "
                                   "\"bl.example.org\" (letters, digits, '-', "
                                   "'_', at most %d bytes)",
                                   DNSBL_MAX_ZONE);
                return -1;
            }
        } else if (strcmp(key, "weight") == 0) {
            if (dnsbl_config_number(init, where, v, false, &list->weight) != 0)
                return -1;
        } else if (strcmp(key, "codes") == 0) {
            if (dnsbl_config_nets(init, where, v, AF_INET, &list->codes,
                                  &list->n_codes) != 0)
                return -1;
            if (list->n_codes == 0) {
                postern_init_error(init, where,
                                   "expected at least one code (leave "
                                   "\"codes\" out to count any 127.0.0.0/8 "
                                   "answer)");
                return -1;
            }
        } else {
            postern_init_error(init, where,
                               "unknown key (expected zone, weight or codes)");
            return -1;
        }
    }
    if (list->zone == NULL) {
        postern_init_error(init, path, "expected a \"zone\"");
        return -1;
    }
    return 0;
}

static int
dnsbl_config_lists(postern_module_init *init, struct dnsbl_module *mod,
                   json_t *value)
{
    size_t n = json_array_size(value);

    if (!json_is_array(value) || n == 0 || n > DNSBL_MAX_LISTS) {
        postern_init_error(init, "lists",
                           "expected an array of 1 to %d lists, each "
                           "{\"zone\": \"bl.example.org\"}",
                           DNSBL_MAX_LISTS);
        return -1;
    }
    if ((mod->lists = calloc(n, sizeof *mod->lists)) == NULL) {
        postern_init_error(init, "lists", "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        mod->n_lists = i + 1; /* what destroy frees */
        if (dnsbl_config_list(init, i, json_array_get(value, i),
                              &mod->lists[i]) != 0)
            return -1;
    }
    return 0;
}

/* "5.7.1": class 5, subject and detail of 1 to 3 digits. */
static bool
dnsbl_enhanced_valid(const char *s)
{
    if (s[0] != '5' || s[1] != '.')
        return false;
    s += 2;
    for (int part = 0; part < 2; part++) {
        size_t n = 0;
        while (s[n] >= '0' && s[n] <= '9')
            n++;
        if (n < 1 || n > 3)
            return false;
        s += n;
        if (part == 0 && *s++ != '.')
            return false;
    }
    return *s == '\0';
}

static int
dnsbl_config(postern_module_init *init, struct dnsbl_module *mod)
{
    const json_t *config = postern_init_config(init);
    const char *key;
    json_t *value;

    if (!json_is_object(config)) {
        postern_init_error(init, "", "expected an object");
        return -1;
    }
    json_object_foreach((json_t *)config, key, value)
    {
        if (strcmp(key, "lists") == 0) {
            if (dnsbl_config_lists(init, mod, value) != 0)
                return -1;
        } else if (strcmp(key, "threshold") == 0) {
            if (dnsbl_config_number(init, key, value, true, &mod->threshold) !=
                0)
                return -1;
        } else if (strcmp(key, "allow") == 0) {
            if (dnsbl_config_nets(init, key, value, 0, &mod->allow,
                                  &mod->n_allow) != 0)
                return -1;
        } else if (strcmp(key, "hook") == 0) {
            static const struct {
                const char *name;
                postern_hook hook;
            } hooks[] = {{"connect", POSTERN_HOOK_CONNECT},
                         {"helo", POSTERN_HOOK_HELO},
                         {"mail", POSTERN_HOOK_MAIL},
                         {"rcpt", POSTERN_HOOK_RCPT}};
            const char *s = json_string_value(value);
            size_t i = 0;
            while (s != NULL && i < sizeof hooks / sizeof hooks[0] &&
                   strcmp(s, hooks[i].name) != 0)
                i++;
            if (s == NULL || i == sizeof hooks / sizeof hooks[0]) {
                postern_init_error(init, key,
                                   "expected \"connect\", \"helo\", \"mail\" "
                                   "or \"rcpt\"");
                return -1;
            }
            mod->act_at = hooks[i].hook;
        } else if (strcmp(key, "code") == 0) {
            json_int_t v = json_integer_value(value);
            if (!json_is_integer(value) || v < 500 || v > 599) {
                postern_init_error(init, key,
                                   "expected a reply code between 500 and 599");
                return -1;
            }
            mod->code = (int)v;
        } else if (strcmp(key, "enhanced") == 0) {
            const char *s = json_string_value(value);
            if (s == NULL || strlen(s) >= sizeof mod->enhanced ||
                !dnsbl_enhanced_valid(s)) {
                postern_init_error(init, key,
                                   "expected an enhanced status code of "
                                   "class 5 (\"5.7.1\")");
                return -1;
            }
            snprintf(mod->enhanced, sizeof mod->enhanced, "%s", s);
        } else if (strcmp(key, "timeout") == 0) {
            double v = json_number_value(value);
            if (!json_is_number(value) || !(v > 0) || v > 60) {
                postern_init_error(init, key,
                                   "expected a number of seconds above 0, at "
                                   "most 60");
                return -1;
            }
            mod->timeout = v;
        } else if (strcmp(key, "postmaster") == 0) {
            if (!json_is_boolean(value)) {
                postern_init_error(init, key, "expected true or false");
                return -1;
            }
            mod->postmaster = json_is_true(value);
        } else if (strcmp(key, "on_error") == 0) {
            const char *s = json_string_value(value);
            if (s != NULL && strcmp(s, "continue") == 0) {
                mod->on_error = DNSBL_ERROR_CONTINUE;
            } else if (s != NULL && strcmp(s, "tempfail") == 0) {
                mod->on_error = DNSBL_ERROR_TEMPFAIL;
            } else {
                postern_init_error(init, key,
                                   "expected \"continue\" or \"tempfail\"");
                return -1;
            }
        } else {
            postern_init_error(init, key,
                               "unknown key (expected lists, threshold, "
                               "allow, hook, code, enhanced, timeout, "
                               "postmaster or on_error)");
            return -1;
        }
    }
    if (mod->lists == NULL) {
        postern_init_error(init, "lists",
                           "expected an array of lists, each "
                           "{\"zone\": \"bl.example.org\"}");
        return -1;
    }
    return 0;
}

static int
dnsbl_create(postern_module_init *init, void **instance)
{
    struct dnsbl_module *mod = calloc(1, sizeof *mod);

    if (mod == NULL) {
        postern_init_error(init, "", "out of memory");
        return -1;
    }
    mod->threshold = 1;
    mod->act_at = POSTERN_HOOK_RCPT;
    mod->code = 554;
    snprintf(mod->enhanced, sizeof mod->enhanced, "5.7.1");
    mod->timeout = 5;
    mod->postmaster = true;
    mod->on_error = DNSBL_ERROR_CONTINUE;
    if (dnsbl_config(init, mod) != 0) {
        dnsbl_destroy(mod);
        return -1;
    }
    mod->listed = postern_init_counter(
        init, "listed_total",
        "Clients found on at least one of the instance's lists.");
    if (mod->listed == NULL) {
        dnsbl_destroy(mod);
        return -1;
    }
    /* One check per instance and session: two instances, two notes. */
    const char *name = postern_init_instance(init);
    if (asprintf(&mod->state_key, "dnsbl.check.%s", name ? name : "") < 0) {
        mod->state_key = NULL;
        postern_init_error(init, "", "out of memory");
        dnsbl_destroy(mod);
        return -1;
    }
    *instance = mod;
    return 0;
}

POSTERN_MODULE_DEFINE = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "dnsbl",
    .description = "the client address against DNS blocklists",
    .create = dnsbl_create,
    .destroy = dnsbl_destroy,
    .handlers = {[POSTERN_HOOK_CONNECT] = dnsbl_connect,
                 [POSTERN_HOOK_HELO] = dnsbl_helo,
                 [POSTERN_HOOK_MAIL] = dnsbl_mail,
                 [POSTERN_HOOK_RCPT] = dnsbl_rcpt},
};
