/*
 * spf_eval.c - check_host() (RFC 7208 4, 5, 6) as a state machine.
 *
 * The state is a stack of frames, one per check_host() call in progress:
 * the top-level one, then one per include being evaluated (a redirect
 * replaces its frame, since its result is the frame's result). Each step
 * either decides something, moves to the next term, or starts exactly one
 * lookup and returns; the lookup's callback stores what it needs and runs
 * the steps again. Only one lookup is in flight at a time, so freeing a
 * check cancels at most one.
 *
 * Limits (RFC 7208 4.6.4): 10 terms that query DNS (include, a, mx, ptr,
 * exists, redirect) over the whole evaluation, 2 void lookups (NXDOMAIN or
 * no records), 10 MX names per mx (more is a permerror), 10 PTR names per
 * ptr or %{p} (the rest ignored). The exp= lookup counts for none of them.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "spf_eval.h"

#define SPF_MAX_LOOKUPS 10
#define SPF_MAX_VOID 2
#define SPF_MAX_NAMES 10
#define SPF_MAX_DEPTH (SPF_MAX_LOOKUPS + 2)

struct spf_frame {
    char *domain;              /* <domain> of this check_host() */
    struct spf_record *record; /* NULL until fetched */
    size_t next;               /* the term under evaluation */
    bool redirected;           /* reached by redirect: none is permerror */
};

typedef enum spf_wait {
    SPF_WAIT_NONE,
    SPF_WAIT_RECORD,   /* TXT of the top frame's domain */
    SPF_WAIT_ADDR,     /* a: A or AAAA of the target */
    SPF_WAIT_MX,       /* mx: MX of the target */
    SPF_WAIT_MX_ADDR,  /* mx: A or AAAA of names[name_i] */
    SPF_WAIT_PTR,      /* ptr: PTR of the client address */
    SPF_WAIT_PTR_ADDR, /* ptr: A or AAAA of names[name_i] */
    SPF_WAIT_EXISTS,   /* exists: A of the target */
    SPF_WAIT_P_PTR,    /* %{p}: PTR of the client address */
    SPF_WAIT_P_ADDR,   /* %{p}: A or AAAA of p_names[p_i] */
    SPF_WAIT_EXP       /* exp=: TXT of the explanation */
} spf_wait;

typedef enum spf_phase {
    SPF_PHASE_TERM,     /* start the term at top->next */
    SPF_PHASE_MX_ADDRS, /* look up names[name_i] for mx */
    SPF_PHASE_PTR_ADDRS /* look up names[name_i] for ptr */
} spf_phase;

typedef enum spf_p_state {
    SPF_P_UNKNOWN,
    SPF_P_ADDRS, /* validating p_names[p_i] */
    SPF_P_DONE
} spf_p_state;

struct spf_eval {
    struct spf_resolver resolver;
    spf_done_cb done;
    void *done_arg;

    /* the request */
    struct spf_ip ip;
    char *domain0, *sender, *local, *sender_dom, *helo, *receiver;
    long long now;

    struct spf_frame frames[SPF_MAX_DEPTH];
    size_t depth;
    unsigned lookups, voids;

    /* the term under evaluation */
    spf_phase phase;
    bool counted; /* its DNS lookup was counted */
    char *target; /* its expanded domain */
    char *names[SPF_MAX_NAMES];
    size_t n_names, name_i;

    /* %{p}: validated names of the client address */
    spf_p_state p_state;
    char *p_names[SPF_MAX_NAMES];
    size_t n_p_names, p_i;
    char *p_valid[SPF_MAX_NAMES];
    size_t n_p_valid;

    /* exp= of a top-level fail */
    bool exp_wanted;
    char *exp_spec, *exp_domain, *exp_text;

    void *pending;
    spf_wait wait;
    bool finished;
    struct spf_outcome out;
    char *explanation, *mechanism;
    char problem[256];
};

/* --- helpers -------------------------------------------------------------- */

static char *
spf_dup(const char *s)
{
    return s ? strdup(s) : NULL;
}

static char *
spf_dupn(const char *s, size_t n)
{
    char *copy = malloc(n + 1);

    if (copy != NULL) {
        memcpy(copy, s, n);
        copy[n] = '\0';
    }
    return copy;
}

static void spf_finish(spf_eval *e, spf_result result, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
spf_finish(spf_eval *e, spf_result result, const char *fmt, ...)
{
    if (e->finished)
        return;
    e->finished = true;
    e->out.result = result;
    e->out.explanation = e->explanation;
    e->out.mechanism = e->mechanism;
    e->out.lookups = e->lookups;
    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->problem, sizeof e->problem, fmt, ap);
        va_end(ap);
        e->out.problem = e->problem;
    }
}

static void
spf_nomem(spf_eval *e)
{
    spf_finish(e, SPF_TEMPERROR, "out of memory");
}

static void
spf_names_clear(char **names, size_t *n)
{
    for (size_t i = 0; i < *n; i++) {
        free(names[i]);
        names[i] = NULL;
    }
    *n = 0;
}

/* The reverse-lookup name of an address (RFC 7208 5.5). */
static void
spf_reverse_name(const struct spf_ip *ip, char *out, size_t size)
{
    static const char hex[] = "0123456789abcdef";

    if (ip->family == AF_INET) {
        snprintf(out, size, "%u.%u.%u.%u.in-addr.arpa", ip->addr[3],
                 ip->addr[2], ip->addr[1], ip->addr[0]);
        return;
    }
    size_t n = 0;
    for (int i = 15; i >= 0 && n + 4 < size; i--) {
        out[n++] = hex[ip->addr[i] & 15];
        out[n++] = '.';
        out[n++] = hex[ip->addr[i] >> 4];
        out[n++] = '.';
    }
    snprintf(out + n, size - n, "ip6.arpa");
}

/* name equals domain or is a subdomain of it (case-insensitive, trailing
 * dots ignored). */
static bool
spf_name_under(const char *name, const char *domain)
{
    size_t n = strlen(name), d = strlen(domain);

    if (n > 0 && name[n - 1] == '.')
        n--;
    if (d > 0 && domain[d - 1] == '.')
        d--;
    if (n < d || strncasecmp(name + n - d, domain, d) != 0)
        return false;
    return n == d || name[n - d - 1] == '.';
}

static spf_dns_type
spf_addr_type(const spf_eval *e)
{
    return e->ip.family == AF_INET6 ? SPF_DNS_AAAA : SPF_DNS_A;
}

static void spf_on_answer(void *arg, const struct spf_answer *answer);
static void spf_handle_answer(spf_eval *e, spf_wait wait,
                              const struct spf_answer *a);

static void
spf_lookup(spf_eval *e, const char *name, spf_dns_type type, spf_wait wait)
{
    if (e->resolver.askable != NULL &&
        !e->resolver.askable(e->resolver.ctx, name)) {
        /* No server can be asked for it: no such name. Handled here,
         * inside the steps, so no callback runs from inside a step. */
        struct spf_answer nx = {.status = SPF_DNS_NXDOMAIN};
        spf_handle_answer(e, wait, &nx);
        return;
    }
    e->wait = wait;
    e->pending =
        e->resolver.lookup(e->resolver.ctx, name, type, spf_on_answer, e);
    if (e->pending == NULL) {
        e->wait = SPF_WAIT_NONE;
        spf_finish(e, SPF_TEMPERROR, "cannot start a DNS lookup for %s", name);
    }
}

static struct spf_frame *
spf_top(spf_eval *e)
{
    return &e->frames[e->depth - 1];
}

static void
spf_frame_clear(struct spf_frame *f)
{
    free(f->domain);
    spf_record_free(f->record);
    memset(f, 0, sizeof *f);
}

/* The macro values for the top frame. */
static void
spf_env(const spf_eval *e, const char *domain, struct spf_macro_env *env)
{
    *env = (struct spf_macro_env){.sender = e->sender,
                                  .local = e->local,
                                  .sender_dom = e->sender_dom,
                                  .domain = domain,
                                  .ip = &e->ip,
                                  .helo = e->helo,
                                  .receiver = e->receiver,
                                  .now = e->now};
    /* RFC 7208 7.3: prefer the domain itself, then a subdomain of it,
     * then any validated name. */
    for (size_t i = 0; i < e->n_p_valid && env->ptr == NULL; i++)
        if (strcasecmp(e->p_valid[i], domain) == 0)
            env->ptr = e->p_valid[i];
    for (size_t i = 0; i < e->n_p_valid && env->ptr == NULL; i++)
        if (spf_name_under(e->p_valid[i], domain))
            env->ptr = e->p_valid[i];
    if (env->ptr == NULL && e->n_p_valid > 0)
        env->ptr = e->p_valid[0];
}

/*
 * Expand spec for the current domain into *out. 1: done; 0: a lookup for
 * %{p} started first (call again after it); -1: the check finished.
 */
static int
spf_expand(spf_eval *e, const char *spec, const char *domain, bool explanation,
           char **out)
{
    size_t len = strlen(spec);
    struct spf_macro_env env;

    if (e->p_state == SPF_P_UNKNOWN && spf_macro_uses_p(spec, len)) {
        char rev[80];
        spf_reverse_name(&e->ip, rev, sizeof rev);
        spf_lookup(e, rev, SPF_DNS_PTR, SPF_WAIT_P_PTR);
        return e->finished ? -1 : 0;
    }
    spf_env(e, domain, &env);
    switch (spf_macro_expand(spec, len, &env, explanation, out)) {
    case SPF_EXPAND_OK:
        return 1;
    case SPF_EXPAND_SYNTAX: /* the parser checked domain-specs already */
        spf_finish(e, SPF_PERMERROR, "bad macro in %s", spec);
        return -1;
    default:
        spf_nomem(e);
        return -1;
    }
}

/* --- frames and terms ----------------------------------------------------- */

static void spf_frame_result(spf_eval *e, spf_result result);

static void
spf_term_reset(spf_eval *e)
{
    e->phase = SPF_PHASE_TERM;
    e->counted = false;
    free(e->target);
    e->target = NULL;
    spf_names_clear(e->names, &e->n_names);
    e->name_i = 0;
}

static void
spf_term_next(spf_eval *e)
{
    spf_term_reset(e);
    spf_top(e)->next++;
}

static void
spf_term_matched(spf_eval *e)
{
    struct spf_frame *f = spf_top(e);
    const struct spf_term *term = &f->record->terms[f->next];

    spf_term_reset(e);
    if (e->depth == 1) {
        free(e->mechanism);
        e->mechanism = spf_dup(term->text);
    }
    spf_frame_result(e, term->qualifier);
}

/* A void lookup (RFC 7208 4.6.4): false when it was one too many. */
static bool
spf_void(spf_eval *e)
{
    if (++e->voids > SPF_MAX_VOID) {
        spf_finish(e, SPF_PERMERROR, "more than %d void lookups", SPF_MAX_VOID);
        return false;
    }
    return true;
}

/* The top frame's check_host() returned result. */
static void
spf_frame_result(spf_eval *e, spf_result result)
{
    if (e->depth == 1) {
        struct spf_frame *f = spf_top(e);
        if (result == SPF_FAIL && f->record != NULL && f->record->exp != NULL) {
            /* RFC 7208 6.2: fetch the explanation, then finish. */
            e->exp_wanted = true;
            e->exp_spec = spf_dup(f->record->exp);
            e->exp_domain = spf_dup(f->domain);
            e->out.result = SPF_FAIL;
            if (e->exp_spec == NULL || e->exp_domain == NULL)
                spf_finish(e, SPF_FAIL, NULL);
            return;
        }
        spf_finish(e, result, NULL);
        return;
    }
    /* An include (RFC 7208 5.2). */
    char *domain = spf_top(e)->domain;
    spf_top(e)->domain = NULL;
    spf_frame_clear(spf_top(e));
    e->depth--;
    switch (result) {
    case SPF_PASS:
        spf_term_matched(e);
        break;
    case SPF_FAIL:
    case SPF_SOFTFAIL:
    case SPF_NEUTRAL:
        spf_term_next(e);
        break;
    case SPF_TEMPERROR:
        spf_finish(e, SPF_TEMPERROR, NULL);
        break;
    default:
        spf_finish(e, SPF_PERMERROR, "include:%s gave %s", domain,
                   spf_result_name(result));
        break;
    }
    free(domain);
}

/* The top frame has no SPF record. */
static void
spf_frame_none(spf_eval *e)
{
    struct spf_frame *f = spf_top(e);

    if (e->depth == 1 && !f->redirected) {
        spf_finish(e, SPF_NONE, NULL);
    } else if (f->redirected) {
        spf_finish(e, SPF_PERMERROR, "redirect=%s has no SPF record",
                   f->domain);
    } else {
        spf_frame_result(e, SPF_NONE);
    }
}

/* Count the current term's DNS lookup once. false when over the limit. */
static bool
spf_count(spf_eval *e)
{
    if (e->counted)
        return true;
    e->counted = true;
    if (++e->lookups > SPF_MAX_LOOKUPS) {
        spf_finish(e, SPF_PERMERROR, "more than %d DNS lookups",
                   SPF_MAX_LOOKUPS);
        return false;
    }
    return true;
}

static void
spf_step_term(spf_eval *e, struct spf_frame *f, const struct spf_term *term)
{
    switch (term->mech) {
    case SPF_MECH_ALL:
        spf_term_matched(e);
        return;
    case SPF_MECH_IP4:
    case SPF_MECH_IP6:
        if (spf_ip_match(&e->ip, &term->ip,
                         term->mech == SPF_MECH_IP4 ? term->cidr4
                                                    : term->cidr6))
            spf_term_matched(e);
        else
            spf_term_next(e);
        return;
    default:
        break;
    }
    if (!spf_count(e))
        return;
    if (e->target == NULL) {
        if (term->domain_spec == NULL) {
            if ((e->target = spf_dup(f->domain)) == NULL) {
                spf_nomem(e);
                return;
            }
        } else if (spf_expand(e, term->domain_spec, f->domain, false,
                              &e->target) != 1) {
            return;
        }
    }
    if (term->mech == SPF_MECH_INCLUDE) {
        if (e->depth == SPF_MAX_DEPTH) {
            spf_finish(e, SPF_PERMERROR, "includes nested too deep");
            return;
        }
        struct spf_frame *inc = &e->frames[e->depth++];
        memset(inc, 0, sizeof *inc);
        inc->domain = e->target;
        e->target = NULL;
        e->counted = false;
        return;
    }
    if (term->mech == SPF_MECH_PTR) {
        char rev[80];
        spf_reverse_name(&e->ip, rev, sizeof rev);
        spf_lookup(e, rev, SPF_DNS_PTR, SPF_WAIT_PTR);
        return;
    }
    if (!spf_domain_valid(e->target)) {
        spf_term_next(e); /* a name DNS cannot hold matches nothing */
        return;
    }
    switch (term->mech) {
    case SPF_MECH_A:
        spf_lookup(e, e->target, spf_addr_type(e), SPF_WAIT_ADDR);
        break;
    case SPF_MECH_MX:
        spf_lookup(e, e->target, SPF_DNS_MX, SPF_WAIT_MX);
        break;
    default: /* exists */
        spf_lookup(e, e->target, SPF_DNS_A, SPF_WAIT_EXISTS);
        break;
    }
}

/* No directive matched: redirect, or neutral (RFC 7208 4.7, 6.1). */
static void
spf_step_end(spf_eval *e, struct spf_frame *f)
{
    if (f->record->redirect == NULL) {
        if (e->depth == 1) {
            free(e->mechanism);
            e->mechanism = spf_dup("default");
        }
        spf_frame_result(e, SPF_NEUTRAL);
        return;
    }
    if (!spf_count(e))
        return;
    char *target = NULL;
    if (spf_expand(e, f->record->redirect, f->domain, false, &target) != 1)
        return;
    spf_frame_clear(f);
    f->domain = target;
    f->redirected = true;
    e->counted = false;
}

static void
spf_step(spf_eval *e)
{
    if (e->p_state == SPF_P_ADDRS) {
        if (e->p_i < e->n_p_names) {
            spf_lookup(e, e->p_names[e->p_i], spf_addr_type(e),
                       SPF_WAIT_P_ADDR);
            return;
        }
        e->p_state = SPF_P_DONE;
    }
    if (e->exp_text != NULL) {
        char *text = NULL;
        int r = spf_expand(e, e->exp_text, e->exp_domain, true, &text);
        if (r == 0)
            return;
        if (r < 0) { /* RFC 7208 6.2: a bad explanation is ignored */
            e->finished = false;
            e->out.problem = NULL;
        }
        e->explanation = text;
        spf_finish(e, SPF_FAIL, NULL);
        return;
    }
    if (e->exp_wanted) {
        char *name = NULL;
        int r = spf_expand(e, e->exp_spec, e->exp_domain, false, &name);
        if (r == 0)
            return;
        e->exp_wanted = false;
        if (r < 0 || !spf_domain_valid(name)) {
            e->finished = false;
            e->out.problem = NULL;
            spf_finish(e, SPF_FAIL, NULL);
        } else {
            spf_lookup(e, name, SPF_DNS_TXT, SPF_WAIT_EXP);
            if (e->finished) { /* cannot even ask: no explanation */
                e->finished = false;
                spf_finish(e, SPF_FAIL, NULL);
            }
        }
        free(name);
        return;
    }
    struct spf_frame *f = spf_top(e);
    if (f->record == NULL) {
        if (!spf_domain_valid(f->domain))
            spf_frame_none(e);
        else
            spf_lookup(e, f->domain, SPF_DNS_TXT, SPF_WAIT_RECORD);
        return;
    }
    if (e->phase == SPF_PHASE_MX_ADDRS || e->phase == SPF_PHASE_PTR_ADDRS) {
        if (e->name_i < e->n_names) {
            spf_lookup(e, e->names[e->name_i], spf_addr_type(e),
                       e->phase == SPF_PHASE_MX_ADDRS ? SPF_WAIT_MX_ADDR
                                                      : SPF_WAIT_PTR_ADDR);
        } else {
            spf_term_next(e);
        }
        return;
    }
    if (f->next < f->record->n_terms)
        spf_step_term(e, f, &f->record->terms[f->next]);
    else
        spf_step_end(e, f);
}

/* Run steps until a lookup is in flight or the check is over. */
static bool
spf_run(spf_eval *e)
{
    while (!e->finished && e->pending == NULL)
        spf_step(e);
    return e->finished;
}

/* --- answers -------------------------------------------------------------- */

static bool
spf_is_dns_error(const struct spf_answer *a)
{
    return a->status == SPF_DNS_TEMPFAIL || a->status == SPF_DNS_ERROR;
}

static bool
spf_is_void(const struct spf_answer *a)
{
    return a->status == SPF_DNS_NXDOMAIN || a->status == SPF_DNS_NODATA ||
           (a->status == SPF_DNS_OK && a->count == 0);
}

static void
spf_on_record(spf_eval *e, const struct spf_answer *a)
{
    struct spf_frame *f = spf_top(e);

    if (spf_is_dns_error(a)) {
        spf_finish(e, SPF_TEMPERROR, "DNS error on the TXT records of %s",
                   f->domain);
        return;
    }
    const struct spf_rr *found = NULL;
    size_t n = 0;
    for (size_t i = 0; a->status == SPF_DNS_OK && i < a->count; i++)
        if (spf_record_is_spf1(a->rrs[i].data, a->rrs[i].len)) {
            found = &a->rrs[i];
            n++;
        }
    if (n == 0) {
        spf_frame_none(e);
        return;
    }
    if (n > 1) {
        spf_finish(e, SPF_PERMERROR, "%s has %zu SPF records", f->domain, n);
        return;
    }
    char err[128];
    switch (spf_record_parse(found->data, found->len, &f->record, err,
                             sizeof err)) {
    case SPF_PARSE_OK:
        f->next = 0;
        spf_term_reset(e);
        break;
    case SPF_PARSE_SYNTAX:
        spf_finish(e, SPF_PERMERROR, "the SPF record of %s: %s", f->domain,
                   err);
        break;
    default:
        spf_nomem(e);
        break;
    }
}

/* Keep the names of the first SPF_MAX_NAMES records of an answer (MX or
 * PTR; RFC 7208 4.6.4: PTR records beyond those are ignored), only those
 * equal to or under under when it is given. */
static bool
spf_keep_names(spf_eval *e, const struct spf_answer *a, char **names, size_t *n,
               const char *under)
{
    for (size_t i = 0; i < a->count && i < SPF_MAX_NAMES; i++) {
        const struct spf_rr *rr = &a->rrs[i];
        if (rr->len == 0 || memchr(rr->data, '\0', rr->len) != NULL)
            continue; /* a null MX ("."), or junk */
        char *name = spf_dupn(rr->data, rr->len);
        if (name == NULL) {
            spf_nomem(e);
            return false;
        }
        /* A name that cannot be asked for (too long, empty labels) is
         * skipped like a name without addresses. */
        if (!spf_domain_valid(name) ||
            (under != NULL && !spf_name_under(name, under))) {
            free(name);
            continue;
        }
        names[(*n)++] = name;
    }
    return true;
}

static bool
spf_addr_match(const spf_eval *e, const struct spf_answer *a,
               const struct spf_term *term)
{
    for (size_t i = 0; a->status == SPF_DNS_OK && i < a->count; i++) {
        const struct spf_ip *ip = &a->rrs[i].ip;
        unsigned cidr = ip->family == AF_INET ? term->cidr4 : term->cidr6;
        if (spf_ip_match(&e->ip, ip, cidr))
            return true;
    }
    return false;
}

static void
spf_on_term_answer(spf_eval *e, spf_wait wait, const struct spf_answer *a)
{
    struct spf_frame *f = spf_top(e);
    const struct spf_term *term = &f->record->terms[f->next];

    switch (wait) {
    case SPF_WAIT_ADDR:
    case SPF_WAIT_EXISTS:
        if (spf_is_dns_error(a)) {
            spf_finish(e, SPF_TEMPERROR, "DNS error on %s", e->target);
        } else if (spf_is_void(a)) {
            if (spf_void(e))
                spf_term_next(e);
        } else if (wait == SPF_WAIT_EXISTS || spf_addr_match(e, a, term)) {
            spf_term_matched(e);
        } else {
            spf_term_next(e);
        }
        break;
    case SPF_WAIT_MX:
        if (spf_is_dns_error(a)) {
            spf_finish(e, SPF_TEMPERROR, "DNS error on the MX of %s",
                       e->target);
        } else if (spf_is_void(a)) {
            if (spf_void(e))
                spf_term_next(e);
        } else if (a->count > SPF_MAX_NAMES) {
            spf_finish(e, SPF_PERMERROR, "%s has more than %d MX records",
                       e->target, SPF_MAX_NAMES);
        } else if (spf_keep_names(e, a, e->names, &e->n_names, NULL)) {
            e->phase = SPF_PHASE_MX_ADDRS;
            e->name_i = 0;
        }
        break;
    case SPF_WAIT_MX_ADDR:
        if (spf_is_dns_error(a))
            spf_finish(e, SPF_TEMPERROR, "DNS error on %s",
                       e->names[e->name_i]);
        else if (spf_addr_match(e, a, term))
            spf_term_matched(e);
        else
            e->name_i++;
        break;
    case SPF_WAIT_PTR:
        /* RFC 7208 5.5: a DNS error on the PTR lookup: no match */
        if (spf_is_void(a)) {
            if (spf_void(e))
                spf_term_next(e);
        } else if (a->status != SPF_DNS_OK) {
            spf_term_next(e);
        } else if (spf_keep_names(e, a, e->names, &e->n_names, e->target)) {
            e->phase = SPF_PHASE_PTR_ADDRS;
            e->name_i = 0;
        }
        break;
    case SPF_WAIT_PTR_ADDR: {
        /* An error on one name skips that name. */
        struct spf_term exact = {.cidr4 = 32, .cidr6 = 128};
        if (a->status == SPF_DNS_OK && spf_addr_match(e, a, &exact))
            spf_term_matched(e);
        else
            e->name_i++;
        break;
    }
    default:
        break;
    }
}

/* Take in the answer to the lookup that waited for wait. */
static void
spf_handle_answer(spf_eval *e, spf_wait wait, const struct spf_answer *a)
{
    if (a->status == SPF_DNS_CANCELLED) {
        e->out.cancelled = true;
        e->finished = false;
        spf_finish(e, SPF_TEMPERROR, "lookup cancelled");
    } else {
        switch (wait) {
        case SPF_WAIT_RECORD:
            spf_on_record(e, a);
            break;
        case SPF_WAIT_P_PTR:
            e->p_state = SPF_P_DONE;
            if (a->status == SPF_DNS_OK &&
                spf_keep_names(e, a, e->p_names, &e->n_p_names, NULL)) {
                e->p_state = SPF_P_ADDRS;
                e->p_i = 0;
            }
            break;
        case SPF_WAIT_P_ADDR: {
            struct spf_term exact = {.cidr4 = 32, .cidr6 = 128};
            if (a->status == SPF_DNS_OK && spf_addr_match(e, a, &exact)) {
                e->p_valid[e->n_p_valid++] = e->p_names[e->p_i];
                e->p_names[e->p_i] = NULL;
            }
            e->p_i++;
            break;
        }
        case SPF_WAIT_EXP:
            /* RFC 7208 6.2: exactly one TXT record, or no explanation */
            if (a->status == SPF_DNS_OK && a->count == 1) {
                const struct spf_rr *rr = &a->rrs[0];
                bool ascii = true;
                for (size_t i = 0; i < rr->len; i++)
                    if ((unsigned char)rr->data[i] < 0x20 ||
                        (unsigned char)rr->data[i] > 0x7e)
                        ascii = false;
                if (ascii && spf_macro_valid(rr->data, rr->len, true))
                    e->exp_text = spf_dupn(rr->data, rr->len);
            }
            if (e->exp_text == NULL)
                spf_finish(e, SPF_FAIL, NULL);
            break;
        default:
            spf_on_term_answer(e, wait, a);
            break;
        }
    }
}

static void
spf_on_answer(void *arg, const struct spf_answer *a)
{
    spf_eval *e = arg;
    spf_wait wait = e->wait;

    e->pending = NULL;
    e->wait = SPF_WAIT_NONE;
    spf_handle_answer(e, wait, a);
    if (spf_run(e))
        e->done(e->done_arg, &e->out); /* may free e: nothing after this */
}

/* --- the public part -------------------------------------------------------
 */

spf_eval *
spf_eval_new(const struct spf_resolver *resolver,
             const struct spf_request *request, spf_done_cb done, void *arg)
{
    spf_eval *e = calloc(1, sizeof *e);

    if (e == NULL)
        return NULL;
    e->resolver = *resolver;
    e->done = done;
    e->done_arg = arg;
    e->ip = request->ip;
    e->now = request->now;
    const char *sender = request->sender ? request->sender : "";
    const char *at = strrchr(sender, '@');
    size_t local_len = at ? (size_t)(at - sender) : 0;
    const char *sdom = at ? at + 1 : request->domain;
    e->domain0 = spf_dup(request->domain);
    e->helo = spf_dup(request->helo);
    e->receiver = spf_dup(request->receiver);
    e->sender_dom = spf_dup(sdom);
    /* RFC 7208 4.3: no local-part: "postmaster" */
    e->local =
        local_len > 0 ? spf_dupn(sender, local_len) : spf_dup("postmaster");
    if (e->local != NULL && e->sender_dom != NULL &&
        asprintf(&e->sender, "%s@%s", e->local, e->sender_dom) < 0)
        e->sender = NULL;
    if (e->domain0 == NULL || e->local == NULL || e->sender_dom == NULL ||
        e->sender == NULL || (request->helo && !e->helo) ||
        (request->receiver && !e->receiver)) {
        spf_eval_free(e);
        return NULL;
    }
    return e;
}

/* RFC 7208 4.3: a multi-label name with labels of 1..63 octets. */
static bool
spf_initial_domain_ok(const char *domain)
{
    size_t len = strlen(domain);

    if (!spf_domain_valid(domain) || domain[0] == '[')
        return false;
    const char *dot = memchr(domain, '.', len);
    return dot != NULL && dot != domain + len - 1;
}

bool
spf_eval_start(spf_eval *e)
{
    if (!spf_initial_domain_ok(e->domain0)) {
        spf_finish(e, SPF_NONE, "not a valid domain name");
    } else {
        e->depth = 1;
        e->frames[0].domain = spf_dup(e->domain0);
        if (e->frames[0].domain == NULL)
            spf_nomem(e);
    }
    return spf_run(e);
}

const struct spf_outcome *
spf_eval_outcome(const spf_eval *e)
{
    return e->finished ? &e->out : NULL;
}

void
spf_eval_free(spf_eval *e)
{
    if (e == NULL)
        return;
    if (e->pending != NULL && e->resolver.cancel != NULL)
        e->resolver.cancel(e->resolver.ctx, e->pending);
    for (size_t i = 0; i < e->depth; i++)
        spf_frame_clear(&e->frames[i]);
    spf_names_clear(e->names, &e->n_names);
    spf_names_clear(e->p_names, &e->n_p_names);
    spf_names_clear(e->p_valid, &e->n_p_valid);
    free(e->target);
    free(e->domain0);
    free(e->sender);
    free(e->local);
    free(e->sender_dom);
    free(e->helo);
    free(e->receiver);
    free(e->exp_spec);
    free(e->exp_domain);
    free(e->exp_text);
    free(e->explanation);
    free(e->mechanism);
    free(e);
}
