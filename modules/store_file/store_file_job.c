/*
 * store_file_job.c - a delivery gathered on the loop thread, where the
 * context may be read: its target maildirs, the envelope of each as JSON
 * text (store_file_envelope.c), and a file name unique across processes
 * and threads.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store_file.h"

/* Unique names within this process, across instances and threads. */
static atomic_ulong sf_counter;

void
sf_job_free(struct sf_job *job)
{
    if (job == NULL)
        return;
    postern_message_close(job->reader);
    for (size_t i = 0; i < job->n_targets; i++) {
        struct sf_target *t = &job->targets[i];
        if (t->fd >= 0)
            close(t->fd);
        free(t->base);
        free(t->dir);
        free(t->envelope);
        free(t->tmp);
        free(t->new);
        free(t->env);
    }
    free(job->targets);
    free(job->copy);
    free(job->id);
    free(job->name);
    free(job->error.path);
    free(job);
}

/* The per-recipient directory name: lowercased, anything outside
 * [a-z0-9.@_+=-] (so '/' too) becomes '_', and so does a leading '.'. */
static char *
sf_recipient_dir_name(const char *addr)
{
    size_t len = strlen(addr);
    char *name = malloc(len ? len + 1 : 2);

    if (name == NULL)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)addr[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  (c != '\0' && strchr(".@_+=-", c) != NULL);
        name[i] = ok ? (char)c : '_';
    }
    if (len == 0)
        name[len++] = '_';
    name[len] = '\0';
    if (name[0] == '.')
        name[0] = '_';
    return name;
}

/* The maildir of a delivery: the root, or the recipient directory sub
 * under it; for a quarantined message, the quarantine folder inside that
 * (its maildir made first, as base) or the same place under the separate
 * quarantine root. 0 or -1. */
static int
sf_target_dir(const struct store_file *sf, const char *sub, bool quarantined,
              struct sf_target *t)
{
    if (!quarantined) {
        t->dir = sub ? sf_path(sf->root, sub, NULL) : strdup(sf->root);
        return t->dir ? 0 : -1;
    }
    if (sf->quarantine_root) {
        t->dir = sub ? sf_path(sf->quarantine_root, sub, NULL)
                     : strdup(sf->quarantine_root);
        return t->dir ? 0 : -1;
    }
    if (sub && !(t->base = sf_path(sf->root, sub, NULL)))
        return -1;
    t->dir = sf_path(sub ? t->base : sf->root, sf->quarantine_folder, NULL);
    return t->dir ? 0 : -1;
}

/* The paths of target t in its maildir t->dir. 0 or -1. */
static int
sf_target_init(struct sf_target *t, const char *name)
{
    char json_name[512];
    const char *dir = t->dir;

    snprintf(json_name, sizeof json_name, "%s.json", name);
    t->fd = -1;
    t->tmp = sf_path(dir, "tmp", name);
    t->new = sf_path(dir, "new", name);
    t->env = sf_path(dir, "envelope", json_name);
    return (t->tmp && t->new && t->env) ? 0 : -1;
}

/*
 * The target maildirs: the root, or one per distinct recipient directory
 * (two recipients may share one, "A@x" and "a@x"). For each, the envelope
 * lists the recipients delivered there.
 */
static int
sf_job_targets(struct sf_job *job, postern_ctx *ctx, const char *received_at)
{
    const struct store_file *sf = job->sf;
    size_t n_rcpts = postern_rcpt_count(ctx);
    size_t *group = calloc(n_rcpts ? n_rcpts : 1, sizeof *group);
    size_t *members = calloc(n_rcpts ? n_rcpts : 1, sizeof *members);
    size_t *first = calloc(n_rcpts ? n_rcpts : 1, sizeof *first);
    char **names = calloc(n_rcpts ? n_rcpts : 1, sizeof *names);
    int rc = -1;

    job->targets = calloc(n_rcpts ? n_rcpts : 1, sizeof *job->targets);
    if (!group || !members || !first || !names || !job->targets)
        goto out;
    for (size_t i = 0; i < (n_rcpts ? n_rcpts : 1); i++)
        job->targets[i].fd = -1;

    if (!sf->per_recipient) {
        job->n_targets = 1;
        if (sf_target_dir(sf, NULL, job->quarantined, &job->targets[0]) != 0 ||
            sf_target_init(&job->targets[0], job->name) != 0)
            goto out;
        for (size_t i = 0; i < n_rcpts; i++)
            members[i] = i;
        if (sf->envelope && !(job->targets[0].envelope = sf_envelope_text(
                                  ctx, members, n_rcpts, received_at)))
            goto out;
        rc = 0;
        goto out;
    }

    for (size_t i = 0; i < n_rcpts; i++) {
        const char *addr = postern_rcpt_address(ctx, i);
        if ((names[i] = sf_recipient_dir_name(addr ? addr : "")) == NULL)
            goto out;
        size_t g = 0;
        while (g < job->n_targets && strcmp(names[first[g]], names[i]))
            g++;
        group[i] = g;
        if (g == job->n_targets) {
            first[g] = i;
            struct sf_target *t = &job->targets[job->n_targets++];
            if (sf_target_dir(sf, names[i], job->quarantined, t) != 0 ||
                sf_target_init(t, job->name) != 0)
                goto out;
        }
    }
    for (size_t g = 0; sf->envelope && g < job->n_targets; g++) {
        size_t n = 0;
        for (size_t i = 0; i < n_rcpts; i++)
            if (group[i] == g)
                members[n++] = i;
        if (!(job->targets[g].envelope =
                  sf_envelope_text(ctx, members, n, received_at)))
            goto out;
    }
    rc = job->n_targets > 0 ? 0 : -1;
out:
    for (size_t i = 0; names && i < n_rcpts; i++)
        free(names[i]);
    free(names);
    free(members);
    free(first);
    free(group);
    return rc;
}

/* "<sec>.M<usec>P<pid>Q<id>R<counter>.<host>": unique across processes
 * (pid), transactions (id) and deliveries within a process (counter). */
static char *
sf_unique_name(const struct store_file *sf, double now, const char *id)
{
    long long sec = (long long)now;
    long usec = (long)((now - (double)sec) * 1e6);
    char safe_id[64];
    size_t n = 0;
    char *name = NULL;

    if (usec < 0 || usec > 999999)
        usec = 0;
    /* The id is 16 hex digits; keep any other byte out of the name. */
    for (const char *p = id; *p != '\0' && n < sizeof safe_id - 1; p++) {
        unsigned char c = (unsigned char)*p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9');
        safe_id[n++] = ok ? (char)c : '_';
    }
    safe_id[n] = '\0';
    unsigned long counter = atomic_fetch_add(&sf_counter, 1) + 1;
    if (asprintf(&name, "%lld.M%ldP%ldQ%sR%lu.%s", sec, usec, sf->pid, safe_id,
                 counter, sf->host) < 0)
        return NULL;
    return name;
}

struct sf_job *
sf_job_new(struct store_file *sf, postern_ctx *ctx)
{
    const char *id = postern_transaction_id(ctx);
    struct sf_job *job = calloc(1, sizeof *job);
    double now = postern_now();
    char received_at[64];
    struct tm tm;
    time_t t = (time_t)now;

    if (job == NULL)
        return NULL;
    job->sf = sf;
    job->ctx = ctx;
    job->quarantined = postern_message_quarantined(ctx) != NULL;
    /* Only the root maildir is made at start; with a separate quarantine
     * root that one too (when not per recipient). */
    job->make_dirs =
        sf->per_recipient || (job->quarantined && !sf->quarantine_root);
    if (gmtime_r(&t, &tm) == NULL ||
        strftime(received_at, sizeof received_at, "%Y-%m-%dT%H:%M:%SZ", &tm) ==
            0 ||
        (job->id = strdup(id)) == NULL ||
        (job->name = sf_unique_name(sf, now, id)) == NULL ||
        sf_job_targets(job, ctx, received_at) != 0) {
        sf_job_free(job);
        return NULL;
    }
    return job;
}
