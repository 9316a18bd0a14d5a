/*
 * test_spf_suite.c - the RFC 7208 test suite (tests/data/spf) through the
 * SPF evaluator, with each scenario's zone data served by an in-memory
 * resolver that answers later, from a queue, as a real one does.
 *
 *   test_spf_suite SUITE.json README.md
 *
 * Zone data follows the suite's conventions: "TIMEOUT" makes a query for
 * the name time out (temperror) unless a record of the queried type is
 * listed before it; type SPF (99) is never queried (RFC
 * 7208 dropped it), but as the suite's drivers do, a name's SPF records
 * stand in for its TXT records when it has no TXT records of its own
 * ("TXT": "NONE" says it has none); a CNAME is followed.
 *
 * Prints one line per failing case and "rfc7208: N/203 pass". Exits 1
 * unless every case passes or is listed in the "Deviations" section of the
 * README (lines "- `name`: reason"); a listed case that passes fails too,
 * so the list stays true.
 */
#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <jansson.h>

#include "../../modules/spf/spf_eval.h"

struct pending {
    char name[512];
    spf_dns_type type;
    spf_dns_cb cb;
    void *arg;
    struct pending *next;
};

static const json_t *zone;    /* the current scenario's zonedata */
static struct pending *queue; /* lookups not answered yet */
static unsigned lookups_issued;

static void *
fake_lookup(void *ctx, const char *name, spf_dns_type type, spf_dns_cb cb,
            void *arg)
{
    struct pending *p = calloc(1, sizeof *p), **tail = &queue;

    (void)ctx;
    if (p == NULL)
        return NULL;
    snprintf(p->name, sizeof p->name, "%s", name);
    p->type = type;
    p->cb = cb;
    p->arg = arg;
    while (*tail != NULL)
        tail = &(*tail)->next;
    *tail = p;
    lookups_issued++;
    return p;
}

static void
fake_cancel(void *ctx, void *handle)
{
    (void)ctx;
    for (struct pending **pp = &queue; *pp != NULL; pp = &(*pp)->next)
        if (*pp == handle) {
            *pp = (*pp)->next;
            free(handle);
            return;
        }
    fprintf(stderr, "cancel of an unknown lookup\n");
    abort();
}

/* The zone's records for name (case-insensitive, trailing dot ignored). */
static const json_t *
zone_find(const char *name)
{
    size_t n = strlen(name);
    const char *key;
    const json_t *value;

    if (n > 0 && name[n - 1] == '.')
        n--;
    json_object_foreach((json_t *)zone, key, value)
    {
        size_t k = strlen(key);
        if (k > 0 && key[k - 1] == '.')
            k--;
        if (k == n && strncasecmp(key, name, n) == 0)
            return value;
    }
    return NULL;
}

static const char *
type_key(spf_dns_type type)
{
    switch (type) {
    case SPF_DNS_A:
        return "A";
    case SPF_DNS_AAAA:
        return "AAAA";
    case SPF_DNS_MX:
        return "MX";
    case SPF_DNS_PTR:
        return "PTR";
    default:
        return "TXT";
    }
}

#define MAX_RRS 64

struct answer_buf {
    struct spf_rr rrs[MAX_RRS];
    char *owned[MAX_RRS];
    size_t n;
};

/* A TXT value: a string, or a list of strings joined (RFC 7208 3.3). */
static void
add_txt(struct answer_buf *b, const json_t *v)
{
    if (b->n == MAX_RRS)
        return;
    char *text = NULL;
    size_t len = 0;
    if (json_is_string(v)) {
        len = json_string_length(v);
        text = malloc(len + 1);
        memcpy(text, json_string_value(v), len + 1);
    } else {
        FILE *f = open_memstream(&text, &len);
        size_t i;
        const json_t *s;
        json_array_foreach(v, i, s)
            fwrite(json_string_value(s), 1, json_string_length(s), f);
        fclose(f);
    }
    b->owned[b->n] = text;
    b->rrs[b->n++] = (struct spf_rr){.data = text, .len = len};
}

static void
answer(struct pending *p)
{
    struct answer_buf b = {0};
    struct spf_answer a = {.status = SPF_DNS_NXDOMAIN};
    char name[512];
    const json_t *recs = NULL;

    snprintf(name, sizeof name, "%s", p->name);
    for (int hops = 0; hops < 8; hops++) {
        recs = zone_find(name);
        if (recs == NULL)
            break;
        const json_t *cname = NULL;
        size_t i;
        const json_t *r;
        json_array_foreach(recs, i, r)
        {
            if (json_is_object(r) && json_object_get(r, "CNAME"))
                cname = json_object_get(r, "CNAME");
        }
        if (cname == NULL)
            break;
        snprintf(name, sizeof name, "%s", json_string_value(cname));
        recs = NULL;
        if (hops == 7)
            a.status = SPF_DNS_ERROR; /* a CNAME loop */
    }
    if (recs != NULL) {
        a.status = SPF_DNS_OK;
        const char *want = type_key(p->type);
        bool has_txt = false;
        size_t i;
        const json_t *r;
        bool answered = false;
        json_array_foreach(recs, i, r)
        {
            if (json_is_object(r) && json_object_get(r, "TXT"))
                has_txt = true;
        }
        /* TIMEOUT times out a query unless a record of its type came
         * before it (the SPF stand-ins for TXT count as coming last). */
        json_array_foreach(recs, i, r)
        {
            if (json_is_object(r) && json_object_get(r, want) &&
                strcmp(want, "TXT") != 0)
                answered = true;
            if (json_is_object(r) && p->type == SPF_DNS_TXT &&
                json_is_string(json_object_get(r, "TXT")) &&
                strcmp(json_string_value(json_object_get(r, "TXT")), "NONE") !=
                    0)
                answered = true;
            if (json_is_string(r) &&
                strcmp(json_string_value(r), "TIMEOUT") == 0 && !answered)
                a.status = SPF_DNS_TEMPFAIL;
        }
        json_array_foreach(recs, i, r)
        {
            if (!json_is_object(r) || a.status != SPF_DNS_OK)
                continue;
            const json_t *v = json_object_get(r, want);
            if (p->type == SPF_DNS_TXT && v == NULL && !has_txt)
                v = json_object_get(r, "SPF");
            if (v == NULL || (json_is_string(v) &&
                              strcmp(json_string_value(v), "NONE") == 0))
                continue;
            if (b.n == MAX_RRS)
                break;
            struct spf_rr *rr = &b.rrs[b.n];
            switch (p->type) {
            case SPF_DNS_TXT:
                add_txt(&b, v);
                break;
            case SPF_DNS_MX: {
                const json_t *host = json_array_get(v, 1);
                rr->data = json_string_value(host);
                rr->len = json_string_length(host);
                if (rr->len > 0 && rr->data[rr->len - 1] == '.')
                    rr->len--;
                b.n++;
                break;
            }
            case SPF_DNS_PTR:
                rr->data = json_string_value(v);
                rr->len = json_string_length(v);
                b.n++;
                break;
            default:
                if (spf_ip_parse(json_string_value(v), &rr->ip) == 0)
                    b.n++;
                break;
            }
        }
        if (a.status == SPF_DNS_OK && b.n == 0)
            a.status = SPF_DNS_NODATA;
    }
    a.count = a.status == SPF_DNS_OK ? b.n : 0;
    a.rrs = b.rrs;
    p->cb(p->arg, &a);
    for (size_t i = 0; i < b.n; i++)
        free(b.owned[i]);
}

/* --- the deviations listed in the README -------------------------------- */

static char **deviations;
static size_t n_deviations;

static void
load_deviations(const char *readme)
{
    FILE *f = fopen(readme, "r");
    char line[1024];
    bool in_section = false;

    if (f == NULL) {
        perror(readme);
        exit(2);
    }
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "## ", 3) == 0)
            in_section = strncmp(line, "## Deviations", 13) == 0;
        if (!in_section || strncmp(line, "- `", 3) != 0)
            continue;
        char *end = strchr(line + 3, '`');
        if (end == NULL)
            continue;
        deviations =
            realloc(deviations, (n_deviations + 1) * sizeof *deviations);
        deviations[n_deviations++] =
            strndup(line + 3, (size_t)(end - line - 3));
    }
    fclose(f);
}

static bool
is_deviation(const char *name)
{
    for (size_t i = 0; i < n_deviations; i++)
        if (strcmp(deviations[i], name) == 0)
            return true;
    return false;
}

/* --- running one case ------------------------------------------------------
 */

struct run {
    bool done;
    struct spf_outcome out;
    char *explanation;
};

static void
on_done(void *arg, const struct spf_outcome *out)
{
    struct run *run = arg;

    run->done = true;
    run->out = *out;
    run->explanation = out->explanation ? strdup(out->explanation) : NULL;
}

static bool
result_ok(const json_t *expected, spf_result got)
{
    if (json_is_string(expected))
        return strcasecmp(json_string_value(expected), spf_result_name(got)) ==
               0;
    size_t i;
    const json_t *v;
    json_array_foreach(expected, i, v)
    {
        if (strcasecmp(json_string_value(v), spf_result_name(got)) == 0)
            return true;
    }
    return false;
}

/* 1: pass, 0: fail (with a line on stdout). */
static int
run_case(const char *name, const json_t *t)
{
    const char *helo = json_string_value(json_object_get(t, "helo"));
    const char *host = json_string_value(json_object_get(t, "host"));
    const char *from = json_string_value(json_object_get(t, "mailfrom"));
    const json_t *expected = json_object_get(t, "result");
    const json_t *exp = json_object_get(t, "explanation");
    struct spf_request req = {
        .helo = helo, .receiver = "receiver.com", .now = 1700000000};
    char sender[1024];
    struct run run = {0};

    if (spf_ip_parse(host, &req.ip) != 0) {
        printf("FAIL %s: bad host %s\n", name, host);
        return 0;
    }
    if (from[0] == '\0')
        snprintf(sender, sizeof sender, "postmaster@%s", helo);
    else
        snprintf(sender, sizeof sender, "%s", from);
    const char *at = strrchr(sender, '@');
    req.sender = sender;
    req.domain = at ? at + 1 : sender;

    if (getenv("SPF_SUITE_TRACE"))
        fprintf(stderr, "case %s\n", name);
    struct spf_resolver res = {.lookup = fake_lookup, .cancel = fake_cancel};
    spf_eval *e = spf_eval_new(&res, &req, on_done, &run);
    if (e == NULL)
        abort();
    if (spf_eval_start(e)) {
        on_done(&run, spf_eval_outcome(e));
        if (queue != NULL) {
            printf("FAIL %s: finished with a lookup in flight\n", name);
            return 0;
        }
    } else {
        while (queue != NULL) {
            struct pending *p = queue;
            queue = p->next;
            if (run.done) {
                printf("FAIL %s: a lookup after the end\n", name);
                return 0;
            }
            answer(p);
            free(p);
        }
    }
    spf_eval_free(e);
    if (!run.done) {
        printf("FAIL %s: never finished\n", name);
        return 0;
    }
    int ok = result_ok(expected, run.out.result);
    const char *want_exp = json_string_value(exp);
    const char *got_exp = run.explanation ? run.explanation : "DEFAULT";
    if (ok && want_exp != NULL && run.out.result == SPF_FAIL &&
        strcmp(want_exp, got_exp) != 0)
        ok = 0;
    if (!ok) {
        char *want = json_dumps(expected, JSON_ENCODE_ANY);
        printf("FAIL %s: expected %s%s%s, got %s (%s) explanation \"%s\"\n",
               name, want, want_exp ? " explanation " : "",
               want_exp ? want_exp : "", spf_result_name(run.out.result),
               run.out.problem ? run.out.problem : "-", got_exp);
        free(want);
    }
    free(run.explanation);
    return ok;
}

int
main(int argc, char **argv)
{
    json_error_t err;

    if (argc != 3) {
        fprintf(stderr, "usage: %s SUITE.json README.md\n", argv[0]);
        return 2;
    }
    json_t *suite =
        json_load_file(argv[1], JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    if (suite == NULL) {
        fprintf(stderr, "%s:%d: %s\n", argv[1], err.line, err.text);
        return 2;
    }
    load_deviations(argv[2]);

    size_t total = 0, passed = 0, unlisted = 0, stale = 0, i;
    const json_t *scenario;
    json_array_foreach(suite, i, scenario)
    {
        zone = json_object_get(scenario, "zonedata");
        const char *name;
        const json_t *t;
        json_object_foreach(json_object_get(scenario, "tests"), name, t)
        {
            total++;
            int ok = run_case(name, t);
            passed += ok;
            if (!ok && !is_deviation(name))
                unlisted++;
            if (ok && is_deviation(name)) {
                printf("STALE %s: listed as a deviation but passes\n", name);
                stale++;
            }
        }
    }
    printf("rfc7208: %zu/%zu pass\n", passed, total);
    if (unlisted > 0)
        printf("%zu failing case(s) not listed under Deviations in %s\n",
               unlisted, argv[2]);
    json_decref(suite);
    for (size_t k = 0; k < n_deviations; k++)
        free(deviations[k]);
    free(deviations);
    return unlisted == 0 && stale == 0 && total == 203 ? 0 : 1;
}
