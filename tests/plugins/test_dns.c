/*
 * test_dns.c - test plugin: DNS lookups through include/postern/dns.h,
 * driven by the recipient's local part, answered in the RCPT reply.
 *
 *   RCPT TO:<txt=example.test@x>   a TXT lookup tied to the hook context;
 *                                  the reply is 250 "dns status=ok ttl=300
 *                                  n=1 v=spf1 -all" (records joined with
 *                                  " | "); types a, aaaa, mx, txt, ptr
 *   RCPT TO:<cancel=example.test@x>  starts a TXT lookup and cancels it at
 *                                  once: 250 "cancelled"; its callback must
 *                                  never run (logged as an error if it does)
 *   RCPT TO:<rdns@x>               250 "rdns=NAME" (postern_client_rdns)
 *   RCPT TO:<"txt=a..b."@x>        a quoted local part is unquoted first
 *   anything else                  CONTINUE
 *
 * Config: {"timeout": 2.0} seconds per lookup (0: the core's default).
 * Every callback logs "test_dns result name=... status=...", and
 * "test_dns orphaned" when the context was orphaned meanwhile.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <postern/postern.h>

struct test_dns {
    double timeout;
};

struct lookup {
    postern_ctx *ctx;
    char name[256];
};

static const char *const status_names[] = {"ok",       "nxdomain", "nodata",
                                           "tempfail", "error",    "cancelled"};

static int
dns_create(postern_module_init *init, void **instance)
{
    const json_t *v = json_object_get(postern_init_config(init), "timeout");
    if (v && !json_is_number(v)) {
        postern_init_error(init, "timeout", "expected a number");
        return -1;
    }
    struct test_dns *t = calloc(1, sizeof(*t));
    if (!t) {
        postern_init_error(init, NULL, "out of memory");
        return -1;
    }
    t->timeout = v ? json_number_value(v) : 0;
    *instance = t;
    return 0;
}

static void
dns_destroy(void *instance)
{
    free(instance);
}

/* One record as text, appended to out. */
static void
record_text(const postern_dns_result *r, postern_dns_type type, size_t i,
            char *out, size_t size)
{
    size_t used = strlen(out);
    char buf[300] = "";

    if (type == POSTERN_DNS_A || type == POSTERN_DNS_AAAA) {
        struct sockaddr_storage ss;
        if (postern_dns_addr(r, i, &ss, NULL) == 0) {
            if (ss.ss_family == AF_INET)
                inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, buf,
                          sizeof(buf));
            else
                inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr,
                          buf, sizeof(buf));
        }
    } else if (type == POSTERN_DNS_MX) {
        snprintf(buf, sizeof(buf), "%u:%s", postern_dns_mx_preference(r, i),
                 postern_dns_name(r, i));
    } else if (type == POSTERN_DNS_TXT) {
        size_t len;
        const char *t = postern_dns_txt(r, i, &len);
        size_t k;
        for (k = 0; t && k < len && k < sizeof(buf) - 1; k++)
            buf[k] = (t[k] >= 0x20 && t[k] < 0x7f) ? t[k] : '?';
        buf[k] = '\0';
    } else {
        snprintf(buf, sizeof(buf), "%s", postern_dns_name(r, i));
    }
    snprintf(out + used, size - used, "%s%s", i ? " | " : "", buf);
}

static postern_dns_type lookup_type;

static void
on_answer(void *arg, postern_dns_status status, const postern_dns_result *r)
{
    struct lookup *l = arg;
    char records[360] = "";
    postern_dns_type type = lookup_type;

    postern_log(NULL, POSTERN_LOG_INFO, "test_dns result name=%s status=%s",
                postern_log_value(l->name), status_names[status]);
    if (postern_ctx_orphaned(l->ctx))
        postern_log(NULL, POSTERN_LOG_INFO, "test_dns orphaned name=%s",
                    postern_log_value(l->name));
    for (size_t i = 0; i < postern_dns_count(r); i++)
        record_text(r, type, i, records, sizeof(records));
    postern_reply(l->ctx, 250, "2.1.5", "dns status=%s ttl=%u n=%zu %s",
                  status_names[status], (unsigned)postern_dns_ttl(r),
                  postern_dns_count(r), records);
    postern_resume(l->ctx, POSTERN_ACCEPT);
    free(l);
}

static int cancelled_callbacks;

static void
on_cancelled_answer(void *arg, postern_dns_status status,
                    const postern_dns_result *r)
{
    cancelled_callbacks++;
    postern_log(NULL, POSTERN_LOG_ERROR,
                "test_dns callback of a cancelled lookup ran (%d)",
                cancelled_callbacks);
}

static postern_result
dns_rcpt(postern_ctx *ctx, void *instance)
{
    struct test_dns *t = instance;
    const char *rcpt = postern_rcpt_current(ctx);
    const char *at = rcpt ? strrchr(rcpt, '@') : NULL;
    char local[256];

    if (!at || (size_t)(at - rcpt) >= sizeof(local))
        return POSTERN_CONTINUE;
    memcpy(local, rcpt, (size_t)(at - rcpt));
    local[at - rcpt] = '\0';
    size_t len = strlen(local);
    if (len >= 2 && local[0] == '"' && local[len - 1] == '"') {
        /* a quoted local part: names a dot-atom cannot hold ("a..b") */
        memmove(local, local + 1, len - 2);
        local[len - 2] = '\0';
    }

    if (strcmp(local, "rdns") == 0) {
        const char *name = postern_client_rdns(ctx);
        postern_reply(ctx, 250, "2.1.5", "rdns=%s", name ? name : "(none)");
        return POSTERN_ACCEPT;
    }
    char *eq = strchr(local, '=');
    if (!eq)
        return POSTERN_CONTINUE;
    *eq = '\0';
    const char *name = eq + 1;
    if (strcmp(local, "cancel") == 0) {
        postern_dns_query *q = postern_dns_lookup(
            ctx, name, POSTERN_DNS_TXT, t->timeout, on_cancelled_answer, NULL);
        postern_dns_cancel(q);
        postern_reply(ctx, 250, "2.1.5", "cancelled");
        return POSTERN_ACCEPT;
    }
    static const struct {
        const char *name;
        postern_dns_type type;
    } types[] = {{"a", POSTERN_DNS_A},
                 {"aaaa", POSTERN_DNS_AAAA},
                 {"mx", POSTERN_DNS_MX},
                 {"txt", POSTERN_DNS_TXT},
                 {"ptr", POSTERN_DNS_PTR}};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (strcmp(local, types[i].name) != 0)
            continue;
        struct lookup *l = calloc(1, sizeof(*l));
        if (!l)
            return POSTERN_TEMPFAIL;
        l->ctx = ctx;
        snprintf(l->name, sizeof(l->name), "%s", name);
        lookup_type = types[i].type; /* one lookup at a time in the tests */
        if (!postern_dns_lookup(ctx, name, types[i].type, t->timeout, on_answer,
                                l)) {
            free(l);
            postern_reply(ctx, 451, "4.3.0", "lookup did not start");
            return POSTERN_TEMPFAIL;
        }
        return POSTERN_PENDING;
    }
    return POSTERN_CONTINUE;
}

POSTERN_MODULE_DEFINE = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "test_dns",
    .create = dns_create,
    .destroy = dns_destroy,
    .handlers = {[POSTERN_HOOK_RCPT] = dns_rcpt},
};
