/*
 * spf.c - the spf module: SPF (RFC 7208) for the HELO and MAIL FROM
 * identities, on the core's asynchronous DNS service.
 *
 * At MAIL the module checks the HELO identity, then the MAIL FROM identity
 * (postmaster@<helo> for the null sender, which is the HELO check again,
 * so its result is reused). A HELO fail that the config rejects decides
 * at once (RFC 7208 2.3); otherwise the MAIL FROM result is the verdict.
 * The verdict is kept in the transaction (the note "spf.result" for other
 * modules) and acted on at MAIL or at RCPT, as configured; at the message
 * hook it becomes a Received-SPF and an Authentication-Results header.
 *
 * The evaluator (spf_eval.c) is bound to postern_dns_lookup() here; when
 * the client leaves mid-check the core answers the lookup in flight with
 * POSTERN_DNS_CANCELLED, the check is freed and the context resumed.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>

#include <postern/postern.h>

#include "spf_eval.h"
#include "spf_record.h"

#define SPF_NOTE_RESULT "spf.result"
#define SPF_NOTE_VERDICT "spf.verdict"

typedef enum spf_action {
    SPF_ACT_CONTINUE,
    SPF_ACT_REJECT,
    SPF_ACT_TEMPFAIL
} spf_action;

struct spf_net {
    struct spf_ip ip;
    unsigned prefix;
};

struct spf_module {
    spf_action actions[SPF_RESULT_COUNT];
    postern_hook act_at; /* POSTERN_HOOK_MAIL or POSTERN_HOOK_RCPT */
    bool check_helo;
    bool add_headers;
    double dns_timeout;   /* 0: the core's default */
    double check_timeout; /* for all the lookups of a check; 0: none */
    char *authserv_id;
    struct spf_net *trusted;
    size_t n_trusted;
};

/* The result of one identity. */
struct spf_identity {
    bool checked;
    spf_result result;
    char *domain;      /* the domain checked */
    char *explanation; /* fail with exp=, or NULL */
    char *mechanism;
    char *problem;
};

/* Kept in the transaction (SPF_NOTE_VERDICT). */
struct spf_verdict {
    struct spf_identity helo, mailfrom;
    bool from_helo; /* the verdict is the HELO result */
    spf_result result;
    char *client_ip, *envelope_from, *helo_name;
};

/* One MAIL hook call in progress. */
struct spf_check {
    struct spf_module *mod;
    postern_ctx *ctx;
    struct spf_ip ip;
    spf_eval *eval;
    struct spf_identity *current; /* being evaluated */
    struct spf_verdict *verdict;
    postern_timer *timer; /* check_timeout, while pending */
};

/* --- small helpers --------------------------------------------------------
 */

static void
spf_identity_clear(struct spf_identity *id)
{
    free(id->domain);
    free(id->explanation);
    free(id->mechanism);
    free(id->problem);
    memset(id, 0, sizeof *id);
}

static void
spf_verdict_free(void *p)
{
    struct spf_verdict *v = p;

    if (v == NULL)
        return;
    spf_identity_clear(&v->helo);
    spf_identity_clear(&v->mailfrom);
    free(v->client_ip);
    free(v->envelope_from);
    free(v->helo_name);
    free(v);
}

static char *
spf_strdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* --- the resolver binding ---------------------------------------------------
 */

struct spf_dns_call {
    postern_dns_query *query;
    spf_dns_type type;
    spf_dns_cb cb;
    void *arg;
};

static void
spf_dns_answer(void *arg, postern_dns_status status,
               const postern_dns_result *result)
{
    struct spf_dns_call *call = arg;
    spf_dns_cb cb = call->cb;
    void *cb_arg = call->arg;
    spf_dns_type type = call->type;
    struct spf_answer answer = {.status = SPF_DNS_TEMPFAIL};
    struct spf_rr *rrs = NULL;

    free(call);
    switch (status) {
    case POSTERN_DNS_OK:
        answer.status = SPF_DNS_OK;
        break;
    case POSTERN_DNS_NXDOMAIN:
        answer.status = SPF_DNS_NXDOMAIN;
        break;
    case POSTERN_DNS_NODATA:
        answer.status = SPF_DNS_NODATA;
        break;
    case POSTERN_DNS_CANCELLED:
        answer.status = SPF_DNS_CANCELLED;
        break;
    case POSTERN_DNS_ERROR:
        answer.status = SPF_DNS_ERROR;
        break;
    default:
        break;
    }
    size_t n = answer.status == SPF_DNS_OK ? postern_dns_count(result) : 0;
    if (n > 0 && (rrs = calloc(n, sizeof *rrs)) == NULL) {
        answer.status = SPF_DNS_TEMPFAIL;
        n = 0;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        struct spf_rr *rr = &rrs[k];
        if (type == SPF_DNS_TXT) {
            rr->data = postern_dns_txt(result, i, &rr->len);
        } else if (type == SPF_DNS_MX || type == SPF_DNS_PTR) {
            rr->data = postern_dns_name(result, i);
            rr->len = rr->data ? strlen(rr->data) : 0;
        } else {
            struct sockaddr_storage ss;
            socklen_t len = sizeof ss;
            if (postern_dns_addr(result, i, &ss, &len) != 0)
                continue;
            rr->ip.family = ss.ss_family;
            if (ss.ss_family == AF_INET)
                memcpy(rr->ip.addr,
                       &((const struct sockaddr_in *)&ss)->sin_addr, 4);
            else
                memcpy(rr->ip.addr,
                       &((const struct sockaddr_in6 *)&ss)->sin6_addr, 16);
        }
        if (type == SPF_DNS_A || type == SPF_DNS_AAAA || rr->data != NULL)
            k++;
    }
    answer.count = k;
    answer.rrs = rrs;
    cb(cb_arg, &answer);
    free(rrs);
}

static void *
spf_dns_lookup(void *ctx, const char *name, spf_dns_type type, spf_dns_cb cb,
               void *arg)
{
    struct spf_check *check = ctx;
    struct spf_dns_call *call = calloc(1, sizeof *call);

    if (call == NULL)
        return NULL;
    call->type = type;
    call->cb = cb;
    call->arg = arg;
    call->query =
        postern_dns_lookup(check->ctx, name, (postern_dns_type)type,
                           check->mod->dns_timeout, spf_dns_answer, call);
    if (call->query == NULL) {
        free(call);
        return NULL;
    }
    return call;
}

/*
 * The DNS service refuses names with spaces, backslashes or control bytes
 * (postern_dns_lookup() returns NULL, which would be a temperror); a macro
 * can build such a name (%_, %{l}). No server is asked: no such name.
 */
static bool
spf_dns_askable(void *ctx, const char *name)
{
    (void)ctx;
    for (const char *p = name; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '\\')
            return false;
    return true;
}

static void
spf_dns_cancel(void *ctx, void *handle)
{
    struct spf_dns_call *call = handle;

    (void)ctx;
    postern_dns_cancel(call->query);
    free(call);
}

/* --- checking ----------------------------------------------------------------
 */

static void
spf_check_free(struct spf_check *check)
{
    if (check == NULL)
        return;
    if (check->timer != NULL)
        postern_timer_cancel(check->timer);
    spf_eval_free(check->eval);
    spf_verdict_free(check->verdict);
    free(check);
}

static void spf_on_done(void *arg, const struct spf_outcome *out);

/* Record the outcome of the identity being checked. */
static void
spf_check_store(struct spf_check *check, const struct spf_outcome *out)
{
    struct spf_identity *id = check->current;

    id->checked = true;
    id->result = out->result;
    id->explanation = spf_strdup(out->explanation);
    id->mechanism = spf_strdup(out->mechanism);
    id->problem = spf_strdup(out->problem);
    spf_eval_free(check->eval);
    check->eval = NULL;
    check->current = NULL;
}

/* Start check_host() for one identity. true when it finished at once. */
static bool
spf_check_identity(struct spf_check *check, struct spf_identity *id,
                   const char *sender, const char *domain)
{
    struct spf_resolver resolver = {spf_dns_lookup, spf_dns_cancel, check,
                                    spf_dns_askable};
    struct spf_request req = {.ip = check->ip,
                              .domain = domain,
                              .sender = sender,
                              .helo = check->verdict->helo_name,
                              .receiver = check->mod->authserv_id,
                              .now = (long long)postern_now()};

    id->domain = spf_strdup(domain);
    check->current = id;
    check->eval = spf_eval_new(&resolver, &req, spf_on_done, check);
    if (check->eval == NULL || id->domain == NULL) {
        struct spf_outcome out = {.result = SPF_TEMPERROR,
                                  .problem = "out of memory"};
        spf_check_store(check, &out);
        return true;
    }
    if (spf_eval_start(check->eval)) {
        spf_check_store(check, spf_eval_outcome(check->eval));
        return true;
    }
    return false;
}

/*
 * Run the checks still to do. true when all are done (the verdict is
 * complete), false when a lookup is in flight.
 */
static bool
spf_check_run(struct spf_check *check)
{
    struct spf_module *mod = check->mod;
    struct spf_verdict *v = check->verdict;
    const char *helo = v->helo_name;
    char *postmaster = NULL;

    if (mod->check_helo && helo != NULL && !v->helo.checked) {
        if (asprintf(&postmaster, "postmaster@%s", helo) < 0)
            postmaster = NULL;
        bool done = spf_check_identity(check, &v->helo,
                                       postmaster ? postmaster : "", helo);
        free(postmaster);
        if (!done)
            return false;
    }
    if (v->helo.checked && v->helo.result == SPF_FAIL &&
        mod->actions[SPF_FAIL] != SPF_ACT_CONTINUE) {
        v->from_helo = true; /* RFC 7208 2.3: conclusive */
    } else if (!v->mailfrom.checked) {
        const char *from = v->envelope_from;
        if (from[0] == '\0') {
            /* RFC 7208 2.4: the null sender is postmaster@<helo> */
            if (helo == NULL) {
                v->mailfrom.checked = true;
                v->mailfrom.result = SPF_NONE;
            } else if (v->helo.checked) {
                v->from_helo = true;
            } else {
                if (asprintf(&postmaster, "postmaster@%s", helo) < 0)
                    postmaster = NULL;
                bool done = spf_check_identity(
                    check, &v->mailfrom, postmaster ? postmaster : "", helo);
                free(postmaster);
                if (!done)
                    return false;
            }
        } else {
            const char *at = strrchr(from, '@');
            if (!spf_check_identity(check, &v->mailfrom, from,
                                    at ? at + 1 : ""))
                return false;
        }
    }
    v->result = v->from_helo ? v->helo.result : v->mailfrom.result;
    return true;
}

static const char *const spf_enhanced[SPF_RESULT_COUNT][2] = {
    /* [result][reject, tempfail]: RFC 7372 for fail and the errors */
    [SPF_NONE] = {"5.7.1", "4.7.1"},
    [SPF_NEUTRAL] = {"5.7.1", "4.7.1"},
    [SPF_PASS] = {"5.7.1", "4.7.1"},
    [SPF_FAIL] = {"5.7.23", "4.7.23"},
    [SPF_SOFTFAIL] = {"5.7.23", "4.7.23"},
    [SPF_TEMPERROR] = {"5.7.24", "4.7.24"},
    [SPF_PERMERROR] = {"5.7.24", "4.7.24"},
};

/* The decision for a verdict, with its reply. */
static postern_result
spf_decide(postern_ctx *ctx, const struct spf_module *mod,
           const struct spf_verdict *v)
{
    spf_action action = mod->actions[v->result];
    const struct spf_identity *id = v->from_helo ? &v->helo : &v->mailfrom;
    const char *identity = v->from_helo ? "HELO" : "MAIL FROM";

    if (action == SPF_ACT_CONTINUE)
        return POSTERN_CONTINUE;
    bool reject = action == SPF_ACT_REJECT;
    const char *enhanced = spf_enhanced[v->result][reject ? 0 : 1];
    int code = reject ? 550 : 451;
    const char *domain = id->domain ? id->domain : "";
    if (id->explanation != NULL) {
        /* The sender's domain wrote it, and macros bring the client's
         * words: printable ASCII only in our reply. */
        char text[401];
        size_t n = 0;
        for (const char *p = id->explanation; *p && n < sizeof text - 1; p++)
            text[n++] = (*p >= 0x20 && *p <= 0x7e) ? *p : '?';
        text[n] = '\0';
        postern_reply(ctx, code, enhanced, "SPF %s for %s %s: %s",
                      spf_result_name(v->result), identity, domain, text);
    } else if (v->result == SPF_TEMPERROR) {
        postern_reply(ctx, code, enhanced,
                      "SPF temporary error for %s %s, try again later",
                      identity, domain);
    } else {
        postern_reply(ctx, code, enhanced,
                      "SPF %s for %s %s: %s is not a permitted sender",
                      spf_result_name(v->result), identity, domain,
                      v->client_ip);
    }
    return reject ? POSTERN_REJECT : POSTERN_TEMPFAIL;
}

/* The checks are complete: keep the verdict, decide if acting at MAIL. */
static postern_result
spf_check_finish(struct spf_check *check)
{
    postern_ctx *ctx = check->ctx;
    struct spf_verdict *v = check->verdict;
    const struct spf_identity *id = v->from_helo ? &v->helo : &v->mailfrom;
    postern_result result = POSTERN_CONTINUE;

    postern_log(ctx, POSTERN_LOG_INFO,
                "result=%s identity=%s domain=%s mechanism=%s problem=%s",
                spf_result_name(v->result), v->from_helo ? "helo" : "mailfrom",
                postern_log_value(id->domain), postern_log_value(id->mechanism),
                postern_log_value(id->problem));
    char *name = strdup(spf_result_name(v->result));
    if (name == NULL || postern_note_set(ctx, POSTERN_NOTE_TRANSACTION,
                                         SPF_NOTE_RESULT, name, free) != 0) {
        free(name);
        spf_check_free(check);
        return POSTERN_TEMPFAIL;
    }
    if (postern_note_set(ctx, POSTERN_NOTE_TRANSACTION, SPF_NOTE_VERDICT, v,
                         spf_verdict_free) != 0) {
        spf_check_free(check);
        return POSTERN_TEMPFAIL;
    }
    check->verdict = NULL; /* the note owns it now */
    if (check->mod->act_at == POSTERN_HOOK_MAIL)
        result = spf_decide(ctx, check->mod, v);
    spf_check_free(check);
    return result;
}

static void
spf_on_done(void *arg, const struct spf_outcome *out)
{
    struct spf_check *check = arg;
    postern_ctx *ctx = check->ctx;

    if (out->cancelled || postern_ctx_orphaned(ctx)) {
        /* The client left: nobody reads the verdict. */
        postern_log(ctx, POSTERN_LOG_DEBUG,
                    "check abandoned: the client left lookups=%u",
                    out->lookups);
        spf_check_free(check);
        postern_resume(ctx, POSTERN_CONTINUE);
        return;
    }
    spf_check_store(check, out);
    if (!spf_check_run(check))
        return; /* the next identity is being looked up */
    postern_resume(ctx, spf_check_finish(check));
}

/*
 * check_timeout passed (RFC 7208 4.6.4: a limit on the time check_host()
 * takes; over it, temperror). The lookup in flight is cancelled.
 */
static void
spf_on_timeout(void *arg)
{
    struct spf_check *check = arg;
    postern_ctx *ctx = check->ctx;
    struct spf_verdict *v = check->verdict;
    char problem[96];

    check->timer = NULL; /* fired: the core frees it */
    snprintf(problem, sizeof problem, "no result within %g s",
             check->mod->check_timeout);
    if (check->current == &v->helo)
        v->from_helo = true; /* the verdict is this temperror */
    struct spf_outcome out = {.result = SPF_TEMPERROR, .problem = problem};
    spf_check_store(check, &out); /* frees the evaluator: cancels */
    v->result = SPF_TEMPERROR;
    if (postern_ctx_orphaned(ctx)) {
        spf_check_free(check);
        postern_resume(ctx, POSTERN_CONTINUE);
        return;
    }
    postern_resume(ctx, spf_check_finish(check));
}

/* Is the client in a trusted network? */
static bool
spf_trusted(const struct spf_module *mod, const struct spf_ip *ip)
{
    for (size_t i = 0; i < mod->n_trusted; i++)
        if (spf_ip_match(ip, &mod->trusted[i].ip, mod->trusted[i].prefix))
            return true;
    return false;
}

static postern_result
spf_mail(postern_ctx *ctx, void *instance)
{
    struct spf_module *mod = instance;
    const char *ip_text = postern_client_ip(ctx);
    const char *from = postern_mail_from(ctx);
    struct spf_ip ip;

    if (postern_auth_user(ctx) != NULL || ip_text == NULL || from == NULL ||
        spf_ip_parse(ip_text, &ip) != 0 || spf_trusted(mod, &ip))
        return POSTERN_CONTINUE;

    struct spf_check *check = calloc(1, sizeof *check);
    struct spf_verdict *v = calloc(1, sizeof *v);
    if (check == NULL || v == NULL) {
        free(check);
        free(v);
        return POSTERN_TEMPFAIL;
    }
    check->mod = mod;
    check->ctx = ctx;
    check->ip = ip;
    check->verdict = v;
    v->client_ip = strdup(ip_text);
    v->envelope_from = strdup(from);
    v->helo_name = spf_strdup(postern_helo_name(ctx));
    if (v->client_ip == NULL || v->envelope_from == NULL ||
        (postern_helo_name(ctx) != NULL && v->helo_name == NULL)) {
        spf_check_free(check);
        return POSTERN_TEMPFAIL;
    }
    if (!spf_check_run(check)) {
        if (mod->check_timeout > 0)
            check->timer =
                postern_timer_start(mod->check_timeout, spf_on_timeout, check);
        return POSTERN_PENDING;
    }
    return spf_check_finish(check);
}

static postern_result
spf_rcpt(postern_ctx *ctx, void *instance)
{
    struct spf_module *mod = instance;

    if (mod->act_at != POSTERN_HOOK_RCPT)
        return POSTERN_CONTINUE;
    const struct spf_verdict *v =
        postern_note_get(ctx, POSTERN_NOTE_TRANSACTION, SPF_NOTE_VERDICT);
    return v ? spf_decide(ctx, mod, v) : POSTERN_CONTINUE;
}

/* --- headers ------------------------------------------------------------- */

struct spf_text {
    char buf[2048];
    size_t len;
    bool overflow;
};

static void spf_text_add(struct spf_text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
spf_text_add(struct spf_text *t, const char *fmt, ...)
{
    va_list ap;

    if (t->overflow)
        return;
    va_start(ap, fmt);
    int n = vsnprintf(t->buf + t->len, sizeof t->buf - t->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof t->buf - t->len) {
        t->overflow = true;
        t->buf[t->len] = '\0';
        return;
    }
    t->len += (size_t)n;
}

/* Append one byte (the hot path of the header builders below). */
static void
spf_text_byte(struct spf_text *t, char c)
{
    if (t->overflow)
        return;
    if (t->len + 1 >= sizeof t->buf) {
        t->overflow = true;
        return;
    }
    t->buf[t->len++] = c;
    t->buf[t->len] = '\0';
}

/* s with the bytes in special escaped by a backslash and bytes outside
 * printable ASCII written as '?', at most max bytes of s. */
static void
spf_text_escaped(struct spf_text *t, const char *s, size_t max,
                 const char *special)
{
    for (size_t i = 0; s[i] != '\0' && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        if (strchr(special, c)) {
            spf_text_byte(t, '\\');
            spf_text_byte(t, (char)c);
        } else {
            spf_text_byte(t, c < 0x20 || c > 0x7e ? '?' : (char)c);
        }
    }
}

/* s as an RFC 5322 quoted-string (printable ASCII kept, at most max
 * bytes of it; others become '?'). */
static void
spf_text_quoted(struct spf_text *t, const char *s, size_t max)
{
    spf_text_byte(t, '"');
    spf_text_escaped(t, s, max, "\"\\");
    spf_text_byte(t, '"');
}

/* s inside a comment: parentheses and backslashes escaped. */
static void
spf_text_comment(struct spf_text *t, const char *s, size_t max)
{
    spf_text_escaped(t, s, max, "()\\");
}

/* An RFC 8601 pvalue: a domain or addr-spec as is when it is made of
 * safe characters, else a quoted-string. */
static void
spf_text_pvalue(struct spf_text *t, const char *s)
{
    bool plain = s[0] != '\0';

    for (size_t i = 0; s[i] != '\0'; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || strchr(".-_@+", s[i])))
            plain = false;
    if (plain && strlen(s) <= 255)
        spf_text_add(t, "%s", s);
    else
        spf_text_quoted(t, s, 255);
}

static const char *
spf_comment_for(spf_result r)
{
    switch (r) {
    case SPF_PASS:
        return "designates";
    case SPF_FAIL:
        return "does not designate";
    case SPF_SOFTFAIL:
        return "does not designate (softfail)";
    case SPF_NEUTRAL:
        return "neither permits nor denies";
    case SPF_NONE:
        return "does not publish SPF for";
    case SPF_TEMPERROR:
        return "could not be checked (temporary error) for";
    default:
        return "has an invalid SPF record, checking";
    }
}

/* Received-SPF (RFC 7208 9.1). */
static void
spf_received_spf(const struct spf_module *mod, const struct spf_verdict *v,
                 struct spf_text *t)
{
    const struct spf_identity *id = v->from_helo ? &v->helo : &v->mailfrom;
    const char *domain = id->domain ? id->domain : "";

    spf_text_add(t, "%s (%s: domain of ", spf_result_name(v->result),
                 mod->authserv_id);
    spf_text_comment(t, domain, 255);
    spf_text_add(t, " %s %s)", spf_comment_for(v->result), v->client_ip);
    spf_text_add(t, " receiver=%s;\r\n\tclient-ip=%s;", mod->authserv_id,
                 v->client_ip);
    if (v->envelope_from[0] != '\0') {
        spf_text_add(t, "\r\n\tenvelope-from=");
        spf_text_quoted(t, v->envelope_from, 512);
        spf_text_add(t, ";");
    }
    if (v->helo_name != NULL) {
        spf_text_add(t, "\r\n\thelo=");
        spf_text_quoted(t, v->helo_name, 255);
        spf_text_add(t, ";");
    }
    spf_text_add(t, "\r\n\tidentity=%s;", v->from_helo ? "helo" : "mailfrom");
    if (id->mechanism != NULL) {
        spf_text_add(t, "\r\n\tmechanism=");
        spf_text_quoted(t, id->mechanism, 255);
        spf_text_add(t, ";");
    }
    if (id->problem != NULL &&
        (v->result == SPF_PERMERROR || v->result == SPF_TEMPERROR)) {
        spf_text_add(t, "\r\n\tproblem=");
        spf_text_quoted(t, id->problem, 255);
        spf_text_add(t, ";");
    }
    if (t->len > 0 && t->buf[t->len - 1] == ';')
        t->buf[--t->len] = '\0';
}

/* Authentication-Results (RFC 8601): one resinfo per identity checked. */
static void
spf_auth_results(const struct spf_module *mod, const struct spf_verdict *v,
                 struct spf_text *t)
{
    spf_text_add(t, "%s", mod->authserv_id);
    if (v->mailfrom.checked || (v->from_helo && v->envelope_from[0] == '\0')) {
        const struct spf_identity *id =
            v->mailfrom.checked ? &v->mailfrom : &v->helo;
        const char *from = v->envelope_from;
        char *pm = NULL;
        if (from[0] == '\0' && v->helo_name != NULL &&
            asprintf(&pm, "postmaster@%s", v->helo_name) >= 0)
            from = pm;
        spf_text_add(
            t, ";\r\n\tspf=%s smtp.mailfrom=", spf_result_name(id->result));
        spf_text_pvalue(t, from);
        free(pm);
    }
    if (v->helo.checked) {
        spf_text_add(
            t, ";\r\n\tspf=%s smtp.helo=", spf_result_name(v->helo.result));
        spf_text_pvalue(t, v->helo_name);
    }
}

static postern_result
spf_message(postern_ctx *ctx, void *instance)
{
    struct spf_module *mod = instance;
    const struct spf_verdict *v;

    if (!mod->add_headers ||
        (v = postern_note_get(ctx, POSTERN_NOTE_TRANSACTION,
                              SPF_NOTE_VERDICT)) == NULL)
        return POSTERN_CONTINUE;
    struct spf_text rs = {.len = 0}, ar = {.len = 0};
    spf_received_spf(mod, v, &rs);
    spf_auth_results(mod, v, &ar);
    if (rs.overflow || ar.overflow ||
        postern_header_add(ctx, "Received-SPF", rs.buf) != 0 ||
        postern_header_add(ctx, "Authentication-Results", ar.buf) != 0)
        postern_log(ctx, POSTERN_LOG_WARNING,
                    "could not add the SPF headers result=%s",
                    spf_result_name(v->result));
    return POSTERN_CONTINUE;
}

/* --- configuration --------------------------------------------------------
 */

static void
spf_destroy(void *instance)
{
    struct spf_module *mod = instance;

    if (mod == NULL)
        return;
    free(mod->authserv_id);
    free(mod->trusted);
    free(mod);
}

static int
spf_config_actions(postern_module_init *init, struct spf_module *mod,
                   json_t *value)
{
    const char *key;
    json_t *action;

    if (!json_is_object(value)) {
        postern_init_error(init, "actions",
                           "expected an object mapping SPF results to "
                           "\"continue\", \"reject\" or \"tempfail\"");
        return -1;
    }
    json_object_foreach(value, key, action)
    {
        char path[96];
        int r = spf_result_from_name(key);
        snprintf(path, sizeof path, "actions.%.64s", key);
        if (r < 0 || strcmp(key, spf_result_name((spf_result)r)) != 0) {
            postern_init_error(init, path,
                               "unknown SPF result (expected none, neutral, "
                               "pass, fail, softfail, temperror or permerror)");
            return -1;
        }
        const char *s = json_string_value(action);
        if (s != NULL && strcmp(s, "continue") == 0) {
            mod->actions[r] = SPF_ACT_CONTINUE;
        } else if (s != NULL && strcmp(s, "reject") == 0) {
            mod->actions[r] = SPF_ACT_REJECT;
        } else if (s != NULL && strcmp(s, "tempfail") == 0) {
            mod->actions[r] = SPF_ACT_TEMPFAIL;
        } else {
            postern_init_error(
                init, path,
                "expected \"continue\", \"reject\" or \"tempfail\"");
            return -1;
        }
    }
    return 0;
}

/* "192.0.2.0/24", "2001:db8::/32" or a bare address. */
static int
spf_parse_net(const char *s, struct spf_net *net)
{
    char buf[64];
    const char *slash = strchr(s, '/');
    size_t len = slash ? (size_t)(slash - s) : strlen(s);

    if (len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (spf_ip_parse(buf, &net->ip) != 0)
        return -1;
    unsigned max = net->ip.family == AF_INET ? 32 : 128;
    net->prefix = max;
    if (slash != NULL) {
        char *end;
        long p = strtol(slash + 1, &end, 10);
        if (slash[1] < '0' || slash[1] > '9' || *end != '\0' || p < 0 ||
            p > (long)max)
            return -1;
        net->prefix = (unsigned)p;
    }
    return 0;
}

static int
spf_config_trusted(postern_module_init *init, struct spf_module *mod,
                   json_t *value)
{
    if (!json_is_array(value)) {
        postern_init_error(init, "trusted_networks",
                           "expected an array of addresses or CIDR networks");
        return -1;
    }
    size_t n = json_array_size(value);
    mod->trusted = calloc(n ? n : 1, sizeof *mod->trusted);
    if (mod->trusted == NULL) {
        postern_init_error(init, "trusted_networks", "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(value, i));
        if (s == NULL || spf_parse_net(s, &mod->trusted[i]) != 0) {
            char path[48];
            snprintf(path, sizeof path, "trusted_networks[%zu]", i);
            postern_init_error(init, path,
                               "expected an address or a CIDR network "
                               "(\"192.0.2.0/24\", \"2001:db8::/32\")");
            return -1;
        }
        mod->n_trusted++;
    }
    return 0;
}

static bool
spf_authserv_valid(const char *s)
{
    if (s[0] == '\0' || strlen(s) > 255)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '.' || *p == '-' || *p == '_'))
            return false;
    return true;
}

static int
spf_config(postern_module_init *init, struct spf_module *mod)
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
        if (strcmp(key, "actions") == 0) {
            if (spf_config_actions(init, mod, value) != 0)
                return -1;
        } else if (strcmp(key, "hook") == 0) {
            const char *s = json_string_value(value);
            if (s != NULL && strcmp(s, "mail") == 0) {
                mod->act_at = POSTERN_HOOK_MAIL;
            } else if (s != NULL && strcmp(s, "rcpt") == 0) {
                mod->act_at = POSTERN_HOOK_RCPT;
            } else {
                postern_init_error(init, "hook",
                                   "expected \"mail\" or \"rcpt\"");
                return -1;
            }
        } else if (strcmp(key, "check_helo") == 0 ||
                   strcmp(key, "add_headers") == 0) {
            if (!json_is_boolean(value)) {
                postern_init_error(init, key, "expected true or false");
                return -1;
            }
            if (key[0] == 'c')
                mod->check_helo = json_is_true(value);
            else
                mod->add_headers = json_is_true(value);
        } else if (strcmp(key, "dns_timeout") == 0) {
            if (!json_is_number(value) || json_number_value(value) < 0 ||
                json_number_value(value) > 60) {
                postern_init_error(init, "dns_timeout",
                                   "expected a number of seconds between 0 "
                                   "(the core's default) and 60");
                return -1;
            }
            mod->dns_timeout = json_number_value(value);
        } else if (strcmp(key, "check_timeout") == 0) {
            if (!json_is_number(value) || json_number_value(value) < 0 ||
                json_number_value(value) > 300) {
                postern_init_error(init, "check_timeout",
                                   "expected a number of seconds between 0 "
                                   "(no limit) and 300");
                return -1;
            }
            mod->check_timeout = json_number_value(value);
        } else if (strcmp(key, "authserv_id") == 0) {
            const char *s = json_string_value(value);
            if (s == NULL || strlen(s) != json_string_length(value) ||
                !spf_authserv_valid(s)) {
                postern_init_error(init, "authserv_id",
                                   "expected a host name (letters, digits, "
                                   "'.', '-', '_')");
                return -1;
            }
            free(mod->authserv_id);
            if ((mod->authserv_id = strdup(s)) == NULL) {
                postern_init_error(init, "authserv_id", "out of memory");
                return -1;
            }
        } else if (strcmp(key, "trusted_networks") == 0) {
            if (mod->trusted != NULL) {
                postern_init_error(init, key, "given twice");
                return -1;
            }
            if (spf_config_trusted(init, mod, value) != 0)
                return -1;
        } else {
            postern_init_error(init, key,
                               "unknown key (expected actions, hook, "
                               "check_helo, add_headers, trusted_networks, "
                               "authserv_id, dns_timeout or check_timeout)");
            return -1;
        }
    }
    return 0;
}

static int
spf_create(postern_module_init *init, void **instance)
{
    struct spf_module *mod = calloc(1, sizeof *mod);

    if (mod == NULL) {
        postern_init_error(init, "", "out of memory");
        return -1;
    }
    mod->actions[SPF_FAIL] = SPF_ACT_REJECT;
    mod->actions[SPF_TEMPERROR] = SPF_ACT_TEMPFAIL;
    mod->act_at = POSTERN_HOOK_MAIL;
    mod->check_helo = true;
    mod->add_headers = true;
    mod->check_timeout = 20;
    if (spf_config(init, mod) != 0) {
        spf_destroy(mod);
        return -1;
    }
    if (mod->authserv_id == NULL) {
        /* The gateway's configured name, as in its Received headers. */
        const char *host = postern_init_hostname(init);
        if (!host || !spf_authserv_valid(host))
            host = "localhost";
        if ((mod->authserv_id = strdup(host)) == NULL) {
            postern_init_error(init, "", "out of memory");
            spf_destroy(mod);
            return -1;
        }
    }
    *instance = mod;
    return 0;
}

POSTERN_MODULE_DEFINE = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "spf",
    .description = "SPF (RFC 7208) for the HELO and MAIL FROM identities",
    .create = spf_create,
    .destroy = spf_destroy,
    .handlers = {[POSTERN_HOOK_MAIL] = spf_mail,
                 [POSTERN_HOOK_RCPT] = spf_rcpt,
                 [POSTERN_HOOK_MESSAGE] = spf_message},
};
