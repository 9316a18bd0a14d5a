/*
 * metrics_text.c - the Prometheus text format of a snapshot (see
 * metrics_text.h and docs/operations.md, "Metrics", for every series).
 *
 * Series of a small fixed label set are always written, zeros included,
 * so a rate() has a start; hook results are written only once counted
 * (instances x hooks x results would be mostly zeros).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics_text.h"

void
metrics_text_printf(struct metrics_text *t, const char *fmt, ...)
{
    if (t->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = t->cap - t->len;
        int n = vsnprintf(t->buf ? t->buf + t->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = true;
            return;
        }
        if ((size_t)n < room) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap ? t->cap : 4096;
        while (cap - t->len <= (size_t)n)
            cap *= 2;
        char *grown = realloc(t->buf, cap);
        if (!grown) {
            t->failed = true;
            return;
        }
        t->buf = grown;
        t->cap = cap;
    }
}

/* Length of the valid UTF-8 sequence at p (1-4), or 0 if it is not one:
 * Prometheus refuses a whole scrape over one bad byte in a label. */
static size_t
utf8_length(const unsigned char *p)
{
    size_t n = p[0] < 0x80                    ? 1
               : p[0] >= 0xc2 && p[0] <= 0xdf ? 2
               : p[0] >= 0xe0 && p[0] <= 0xef ? 3
               : p[0] >= 0xf0 && p[0] <= 0xf4 ? 4
                                              : 0;
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    if ((n == 3 && p[0] == 0xe0 && p[1] < 0xa0) ||
        (n == 3 && p[0] == 0xed && p[1] > 0x9f) ||
        (n == 4 && p[0] == 0xf0 && p[1] < 0x90) ||
        (n == 4 && p[0] == 0xf4 && p[1] > 0x8f))
        return 0; /* overlong, surrogate, beyond U+10FFFF */
    return n;
}

static void
text_escaped(struct metrics_text *t, const char *v, bool quotes)
{
    for (const char *p = v; *p; p++) {
        size_t n = utf8_length((const unsigned char *)p);
        if (n == 0) {
            metrics_text_printf(t, "\\\\x%02x", (unsigned char)*p);
            continue;
        }
        if (n > 1) {
            metrics_text_printf(t, "%.*s", (int)n, p);
            p += n - 1;
            continue;
        }
        if (*p == '\\')
            metrics_text_printf(t, "\\\\");
        else if (*p == '\n')
            metrics_text_printf(t, "\\n");
        else if (*p == '"' && quotes)
            metrics_text_printf(t, "\\\"");
        else
            metrics_text_printf(t, "%c", *p);
    }
}

void
metrics_text_label_value(struct metrics_text *t, const char *v)
{
    text_escaped(t, v, true);
}

void
metrics_text_header(struct metrics_text *t, const char *name, const char *help,
                    const char *type)
{
    metrics_text_printf(t, "# HELP %s ", name);
    text_escaped(t, help, false);
    metrics_text_printf(t, "\n# TYPE %s %s\n", name, type);
}

/* A bound as Prometheus writes it: shortest form that reads back. */
static void
text_double(struct metrics_text *t, double v)
{
    metrics_text_printf(t, "%.9g", v);
}

static void
text_bound(char *out, size_t size, double v)
{
    snprintf(out, size, "%g", v);
}

void
metrics_text_histogram(struct metrics_text *t, const char *name,
                       const char *labels, const struct metrics_histogram *h)
{
    const char *sep = labels[0] ? "," : "";
    uint64_t cumulative = 0;
    for (unsigned b = 0; b < METRICS_BUCKETS; b++) {
        char le[32];
        cumulative += h->buckets[b];
        text_bound(le, sizeof(le), metrics_bucket_bounds[b]);
        metrics_text_printf(t, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, labels,
                            sep, le, (unsigned long long)cumulative);
    }
    cumulative += h->buckets[METRICS_BUCKETS];
    metrics_text_printf(t, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels,
                        sep, (unsigned long long)cumulative);
    metrics_text_printf(t, "%s_sum%s%s%s ", name, labels[0] ? "{" : "", labels,
                        labels[0] ? "}" : "");
    text_double(t, (double)h->sum_ns / 1e9);
    metrics_text_printf(t, "\n%s_count%s%s%s %llu\n", name,
                        labels[0] ? "{" : "", labels, labels[0] ? "}" : "",
                        (unsigned long long)cumulative);
}

void
metrics_text_free(struct metrics_text *t)
{
    free(t->buf);
    memset(t, 0, sizeof(*t));
}

/* --- the page --- */

static const char *const limit_names[METRICS_LIMIT_COUNT] = {
    "connections", "connections_per_ip", "connection_rate"};
static const char *const tls_names[METRICS_TLS_COUNT] = {
    "TLS1.0", "TLS1.1", "TLS1.2", "TLS1.3", "other"};
static const char *const stage_names[METRICS_STAGE_COUNT] = {
    "connect", "helo", "mail", "rcpt", "data", "message", "store"};
static const char *const outcome_names[METRICS_OUTCOME_COUNT] = {
    "accepted", "rejected", "tempfailed"};
static const char *const hook_names[POSTERN_HOOK_COUNT] = {
    "connect", "helo",    "auth",  "mail",  "rcpt",
    "data",    "message", "store", "reset", "disconnect"};
static const char *const result_names[METRICS_RESULTS] = {
    "continue",   "accept",  "reject", "tempfail",
    "disconnect", "pending", "discard"};

static void
scalar(struct metrics_text *t, const char *name, const char *help,
       const char *type, long long v)
{
    metrics_text_header(t, name, help, type);
    metrics_text_printf(t, "%s %lld\n", name, v);
}

/* instance="<escaped>" into a small buffer of its own. */
static void
instance_label(struct metrics_text *lbl, const char *instance)
{
    lbl->len = 0;
    metrics_text_printf(lbl, "module_instance=\"");
    metrics_text_label_value(lbl, instance);
    metrics_text_printf(lbl, "\"");
}

int
metrics_text_render(struct metrics_text *t, const struct metrics_snapshot *s,
                    const struct metrics_extra *x)
{
    const struct metrics_counters *c = &s->total.c;
    const struct metrics_gauges *g = &s->total.g;
    struct metrics_text lbl = {0};

    scalar(t, "postern_workers_up", "Worker processes running.", "gauge",
           s->workers_up);
    scalar(t, "postern_connections_open", "Client connections open now.",
           "gauge", g->connections_open);
    scalar(t, "postern_connections_total", "Client connections accepted.",
           "counter", (long long)c->connections);

    metrics_text_header(t, "postern_connections_refused_total",
                        "Client connections refused by a limit (the "
                        "limits key that refused).",
                        "counter");
    for (unsigned i = 0; i < METRICS_LIMIT_COUNT; i++)
        metrics_text_printf(t,
                            "postern_connections_refused_total{limit=\"%s\"} "
                            "%llu\n",
                            limit_names[i], (unsigned long long)c->refused[i]);

    metrics_text_header(t, "postern_tls_sessions_total",
                        "TLS handshakes completed, by protocol version.",
                        "counter");
    for (unsigned i = 0; i < METRICS_TLS_COUNT; i++)
        metrics_text_printf(
            t, "postern_tls_sessions_total{version=\"%s\"} %llu\n",
            tls_names[i], (unsigned long long)c->tls_sessions[i]);

    scalar(t, "postern_transactions_total",
           "Mail transactions begun (MAIL FROM accepted).", "counter",
           (long long)c->transactions);

    metrics_text_header(t, "postern_messages_total",
                        "Messages accepted (stored), and commands of a "
                        "transaction refused, by stage.",
                        "counter");
    for (unsigned st = 0; st < METRICS_STAGE_COUNT; st++)
        for (unsigned o = 0; o < METRICS_OUTCOME_COUNT; o++) {
            if (o == METRICS_ACCEPTED && st != METRICS_STAGE_STORE)
                continue;
            metrics_text_printf(
                t, "postern_messages_total{stage=\"%s\",result=\"%s\"} %llu\n",
                stage_names[st], outcome_names[o],
                (unsigned long long)c->messages[st][o]);
        }

    scalar(t, "postern_received_bytes_total",
           "Bytes read from clients (after TLS).", "counter",
           (long long)c->received_bytes);

    metrics_text_header(t, "postern_auth_total",
                        "AUTH credentials accepted or refused.", "counter");
    metrics_text_printf(t, "postern_auth_total{result=\"success\"} %llu\n",
                        (unsigned long long)c->auth[0]);
    metrics_text_printf(t, "postern_auth_total{result=\"failure\"} %llu\n",
                        (unsigned long long)c->auth[1]);

    scalar(t, "postern_pending_contexts",
           "Hook calls waiting for their module (PENDING).", "gauge",
           g->pending);
    scalar(t, "postern_spool_files", "Spool files held by messages now.",
           "gauge", g->spool_files);
    scalar(t, "postern_spool_bytes", "Bytes in the spool files of messages.",
           "gauge", g->spool_bytes);
    if (x && x->have_spool_free)
        scalar(t, "postern_spool_free_bytes",
               "Bytes free for postern on the spool's filesystem.", "gauge",
               (long long)x->spool_free_bytes);

    metrics_text_header(t, "postern_hook_results_total",
                        "Hook handler results, by module instance and hook.",
                        "counter");
    for (unsigned i = 0; i < s->n_instances; i++)
        for (unsigned h = 0; h < POSTERN_HOOK_COUNT; h++)
            for (unsigned r = 0; r < METRICS_RESULTS; r++) {
                uint64_t v = c->hook_results[i][h][r];
                if (!v)
                    continue;
                instance_label(&lbl, s->instances[i].name);
                metrics_text_printf(
                    t,
                    "postern_hook_results_total{%s,hook=\"%s\",result=\"%s\"} "
                    "%llu\n",
                    lbl.buf ? lbl.buf : "", hook_names[h], result_names[r],
                    (unsigned long long)v);
            }

    metrics_text_header(t, "postern_hook_duration_seconds",
                        "Time from a handler's call to its result (its "
                        "resume, when PENDING), by module instance.",
                        "histogram");
    for (unsigned i = 0; i < s->n_instances; i++) {
        instance_label(&lbl, s->instances[i].name);
        metrics_text_histogram(t, "postern_hook_duration_seconds",
                               lbl.buf ? lbl.buf : "", &c->hook_latency[i]);
    }

    metrics_text_header(t, "postern_store_duration_seconds",
                        "Time the store hook chain took per message.",
                        "histogram");
    metrics_text_histogram(t, "postern_store_duration_seconds", "",
                           &c->store_latency);

    /* module counters: one family per name, an instance label each */
    for (unsigned i = 0; i < s->n_module; i++) {
        bool first = true;
        for (unsigned j = 0; j < i; j++)
            if (strcmp(s->module[j].name, s->module[i].name) == 0)
                first = false;
        if (!first)
            continue;
        metrics_text_header(t, s->module[i].name, s->module[i].help, "counter");
        for (unsigned j = i; j < s->n_module; j++) {
            if (strcmp(s->module[j].name, s->module[i].name) != 0)
                continue;
            instance_label(&lbl, s->module[j].instance);
            metrics_text_printf(t, "%s{%s} %llu\n", s->module[j].name,
                                lbl.buf ? lbl.buf : "",
                                (unsigned long long)c->module[j]);
        }
    }
    bool failed = lbl.failed;
    metrics_text_free(&lbl);
    return t->failed || failed ? -1 : 0;
}
