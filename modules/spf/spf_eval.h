/*
 * spf_eval.h - check_host() (RFC 7208 4 to 6) as a state machine over an
 * abstract asynchronous resolver.
 *
 * The evaluator never blocks and never waits: it asks the resolver for one
 * record set at a time and returns; the resolver's callback resumes it.
 * The module binds the resolver to postern_dns_lookup(); the conformance
 * test binds it to the test suite's zone data.
 */
#ifndef POSTERN_SPF_EVAL_H
#define POSTERN_SPF_EVAL_H

#include <stdbool.h>
#include <stddef.h>

#include "spf_record.h"

typedef enum spf_dns_type {
    SPF_DNS_A = 1,
    SPF_DNS_PTR = 12,
    SPF_DNS_MX = 15,
    SPF_DNS_TXT = 16,
    SPF_DNS_AAAA = 28
} spf_dns_type;

typedef enum spf_dns_status {
    SPF_DNS_OK,       /* count records */
    SPF_DNS_NXDOMAIN, /* RCODE 3 */
    SPF_DNS_NODATA,   /* RCODE 0, no record of the type */
    SPF_DNS_TEMPFAIL, /* timeout, SERVFAIL */
    SPF_DNS_ERROR,    /* any other RCODE: also temperror (RFC 7208 4.4) */
    SPF_DNS_CANCELLED /* the lookup was abandoned: the check ends */
} spf_dns_status;

/* One record of an answer; valid only during the callback. */
struct spf_rr {
    const char *data; /* TXT: the joined strings; MX, PTR: the name */
    size_t len;       /* of data */
    struct spf_ip ip; /* A, AAAA */
};

struct spf_answer {
    spf_dns_status status;
    size_t count; /* records when status is SPF_DNS_OK */
    const struct spf_rr *rrs;
};

typedef void (*spf_dns_cb)(void *arg, const struct spf_answer *answer);

/*
 * The resolver. lookup() starts one lookup and returns a handle, or NULL
 * when it cannot start (then cb never runs and the check is a
 * temperror: out of memory, no service). cb runs exactly once, later, never
 * from inside lookup(), unless cancel() was called first.
 */
struct spf_resolver {
    void *(*lookup)(void *ctx, const char *name, spf_dns_type type,
                    spf_dns_cb cb, void *arg);
    void (*cancel)(void *ctx, void *handle);
    void *ctx;
    /* May be NULL. false for a name this resolver cannot ask for (its
     * rules are stricter than spf_domain_valid()): the evaluator takes
     * it as NXDOMAIN instead of calling lookup(). */
    bool (*askable)(void *ctx, const char *name);
};

/* What one check_host() call is about (RFC 7208 4.1). Copied. */
struct spf_request {
    struct spf_ip ip;
    const char *domain;   /* the domain to check */
    const char *sender;   /* MAIL FROM address, or "postmaster@helo" */
    const char *helo;     /* may be NULL */
    const char *receiver; /* for %{r}; NULL: "unknown" */
    long long now;        /* for %{t} */
};

struct spf_outcome {
    spf_result result;
    bool cancelled;          /* a lookup came back SPF_DNS_CANCELLED */
    const char *explanation; /* fail with an exp= that worked, else NULL */
    const char *mechanism;   /* the matching term, "default" or NULL */
    const char *problem;     /* permerror / temperror: why, else NULL */
    unsigned lookups;        /* DNS-querying terms evaluated */
};

typedef struct spf_eval spf_eval;
typedef void (*spf_done_cb)(void *arg, const struct spf_outcome *outcome);

/* A new check, not started. NULL when out of memory. */
spf_eval *spf_eval_new(const struct spf_resolver *resolver,
                       const struct spf_request *request, spf_done_cb done,
                       void *arg);

/*
 * Start it. true when it finished at once (no DNS needed, e.g. a domain
 * that is not a valid name): then spf_eval_outcome() holds the result and
 * done is never called. false when a lookup is in flight: done runs once,
 * later, from the resolver's callback.
 */
bool spf_eval_start(spf_eval *e);

/* The outcome once finished; valid until spf_eval_free(). */
const struct spf_outcome *spf_eval_outcome(const spf_eval *e);

/* Free a check: a lookup in flight is cancelled. NULL is fine. May be
 * called from the done callback. */
void spf_eval_free(spf_eval *e);

#endif
