/*
 * store_file.c - deliver each message into a maildir, durably.
 *
 * The store hook gathers what it needs from the context on the loop
 * thread (the envelope as JSON text, a message reader, the file name) and
 * hands the delivery to the thread pool at once, so no open, write or
 * fsync ever blocks the loop and deliveries are written in parallel
 * (store_file_write.c). With fsync, a written delivery then waits for a
 * group commit (store_file_commit.c), made on the pool thread that found
 * none running (sf_commit_queue()): one commit runs at a time and takes
 * every delivery written while the previous one ran, so deliveries that
 * finish together share their durability points, and the writing of the
 * next deliveries overlaps the commit of these. The 250s of a commit are
 * sent only once all its copies are in new/ and on disk. With the journal
 * ("journal": true) a delivery goes into new/ as soon as it is written and
 * appended to the journal, and the commit is one fdatasync of the journal
 * (store_file_journal.c). On any failure the client gets 451 and retries,
 * and what no reader can have seen is removed (sf_undo()).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store_file.h"

/* --- answering, and scheduling on the loop thread -------------------------
 */

/* A commit: the deliveries it covers; with the journal, the next
 * segment when the loop asked for one (rotate_seq), made by the commit. */
struct sf_batch {
    struct sf_batch *next; /* only while unanswered (sf_write_done()) */
    struct store_file *sf;
    struct sf_job *jobs;
    size_t n_jobs;
    unsigned long rotate_seq;
    struct sf_segment *next_segment;
    int rotate_err;
    double seconds; /* the commit's work, on its pool thread */
};

/* A delivery on its way through the pool: whether it went on to a
 * commit, which then answers it (the pool's done must not touch it). */
struct sf_write_task {
    struct sf_job *job;
    bool committing;
    /* What the commits this thread led could not hand to the loop:
     * answered by this task's done (see sf_commit_queue()). */
    struct sf_job *unanswered;
    struct sf_batch *unanswered_batches;
};

static double
sf_monotonic(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The durability points of a batch, on the pool thread leading it. */
static void
sf_commit_batch(struct sf_batch *b)
{
    double start = sf_monotonic();

    if (!b->sf->journal_on) {
        sf_commit(b->jobs);
        b->seconds = sf_monotonic() - start;
        return;
    }
    sf_journal_sync(b->jobs);
    for (struct sf_job *j = b->jobs; j != NULL; j = j->next)
        if (j->error.err != 0)
            sf_undo(j);
    if (b->rotate_seq != 0)
        b->next_segment =
            sf_journal_segment_new(b->sf, b->rotate_seq, &b->rotate_err);
    b->seconds = sf_monotonic() - start;
}

static void sf_commit_queue(struct store_file *sf, struct sf_job *job,
                            struct sf_write_task *task);

/* On a pool thread: one delivery's files. Only postern_message_read() may
 * be called here; errors are kept in the job's error for sf_job_done().
 * With fsync, a delivery written goes on to a commit. */
static void
sf_write_work(void *arg)
{
    struct sf_write_task *task = arg;
    struct sf_job *job = task->job;

    if (sf_write_job(job) == 0 && job->sf->fsync) {
        task->committing = true;
        sf_commit_queue(job->sf, job, task);
    }
}

static void
sf_reply_failure(postern_ctx *ctx)
{
    if (!postern_ctx_orphaned(ctx))
        postern_reply(ctx, 451, "4.3.0", "Error: local storage failure");
}

/* On the loop thread, once the job is written (and committed) or failed.
 * Resumes even an orphaned context: the core ignores the result, and the job is
 * freed either way. */
static void
sf_job_done(struct sf_job *job, unsigned long commit)
{
    postern_ctx *ctx = job->ctx;

    sf_journal_release(job->sf, job->segment);
    if (job->error.err == 0) {
        char point[48] = "";
        if (job->sf->fsync)
            snprintf(point, sizeof point, " commit=%lu", commit);
        postern_log(ctx, POSTERN_LOG_INFO,
                    "stored id=%s file=%s maildirs=%zu%s%s%s", job->id,
                    postern_log_value(job->name), job->n_targets, point,
                    job->quarantined ? " quarantine=yes" : "",
                    postern_ctx_orphaned(ctx) ? " client_gone=yes" : "");
        if (!postern_ctx_orphaned(ctx))
            postern_reply(ctx, 250, "2.0.0", "Ok: queued as %s", job->id);
        postern_resume(ctx, POSTERN_ACCEPT);
    } else {
        postern_log(ctx, POSTERN_LOG_ERROR,
                    "delivery failed id=%s op=%s path=%s error=%s", job->id,
                    job->error.op, postern_log_value(job->error.path),
                    postern_log_value(strerror(job->error.err)));
        size_t delivered = 0;
        for (size_t i = 0; i < job->n_targets; i++)
            delivered += job->targets[i].delivered;
        if (delivered > 0)
            postern_log(ctx, POSTERN_LOG_WARNING,
                        "partial delivery id=%s file=%s in_new=%zu "
                        "maildirs=%zu: those copies stay, and the client's "
                        "retry duplicates them",
                        job->id, postern_log_value(job->name), delivered,
                        job->n_targets);
        sf_reply_failure(ctx);
        postern_resume(ctx, POSTERN_TEMPFAIL);
    }
    sf_job_free(job);
}

/* On the loop thread: the commit is durable (or failed); answer all its
 * clients together. With the journal, ask the next commit for a new
 * segment when it is time. */
static void
sf_commit_done(void *arg)
{
    struct sf_batch *b = arg;
    struct store_file *sf = b->sf;
    unsigned long commit = ++sf->commits;

    sf->committed += b->n_jobs;
    sf->commit_seconds += b->seconds;
    if (b->rotate_seq != 0 && b->next_segment == NULL)
        postern_log(NULL, POSTERN_LOG_WARNING,
                    "journal: cannot start a new segment in %s error=%s: "
                    "the current one goes on",
                    postern_log_value(sf->journal.dir),
                    postern_log_value(strerror(b->rotate_err)));
    if (b->rotate_seq != 0)
        sf_journal_install(sf, b->next_segment);
    for (struct sf_job *j = b->jobs, *next; j != NULL; j = next) {
        next = j->next;
        sf_job_done(j, commit);
    }
    free(b);
    if (sf->journal_on && !sf->journal.rotating &&
        sf_journal_rotation_due(sf)) {
        sf->journal.rotating = true;
        pthread_mutex_lock(&sf->queue_lock);
        sf->rotate_seq = ++sf->journal.seq;
        pthread_mutex_unlock(&sf->queue_lock);
    }
}

/*
 * On a pool thread: queue a written delivery for the next commit. When no
 * commit is running, this thread makes it, and then the next as long as
 * deliveries were written meanwhile: one commit at a time, each starting
 * the moment the previous one ends, without a trip through the loop or
 * the pool's queue (as databases group the flushes of their log: the
 * first to arrive leads). Each commit's answers go to the loop by
 * postern_loop_call(), which takes calls as long as pool threads run.
 */
static void
sf_commit_queue(struct store_file *sf, struct sf_job *job,
                struct sf_write_task *task)
{
    pthread_mutex_lock(&sf->queue_lock);
    *sf->written_tail = job;
    sf->written_tail = &job->next;
    if (sf->committing) {
        pthread_mutex_unlock(&sf->queue_lock);
        return;
    }
    sf->committing = true;
    while (sf->written != NULL) {
        pthread_mutex_unlock(&sf->queue_lock);
        struct sf_batch *b = calloc(1, sizeof *b);
        pthread_mutex_lock(&sf->queue_lock);
        struct sf_job *jobs = sf->written;
        sf->written = NULL;
        sf->written_tail = &sf->written;
        if (b == NULL) {
            /* Out of memory: these deliveries fail, answered by the
             * done of this thread's own task. */
            for (struct sf_job *j = jobs, *next; j != NULL; j = next) {
                next = j->next;
                sf_fail(&j->error, "commit", "batch", ENOMEM);
                sf_undo(j);
                j->next = task->unanswered;
                task->unanswered = j;
            }
            continue;
        }
        b->sf = sf;
        b->jobs = jobs;
        b->rotate_seq = sf->rotate_seq;
        sf->rotate_seq = 0;
        pthread_mutex_unlock(&sf->queue_lock);

        for (struct sf_job *j = jobs; j != NULL; j = j->next)
            b->n_jobs++;
        sf_commit_batch(b);
        if (postern_loop_call(sf_commit_done, b) != 0) {
            /* The loop could not take the call (out of memory): the
             * done of this thread's own task answers it. */
            b->next = task->unanswered_batches;
            task->unanswered_batches = b;
        }
        pthread_mutex_lock(&sf->queue_lock);
    }
    sf->committing = false;
    pthread_mutex_unlock(&sf->queue_lock);
}

/* On the loop thread, once the pool is done with a delivery: answer it
 * unless a commit took it, and whatever a commit on this thread could not
 * hand to the loop (see sf_commit_queue()). */
static void
sf_write_done(void *arg)
{
    struct sf_write_task *task = arg;

    if (!task->committing)
        sf_job_done(task->job, 0); /* else it may be freed already */
    for (struct sf_job *j = task->unanswered, *next; j != NULL; j = next) {
        next = j->next;
        sf_job_done(j, 0);
    }
    for (struct sf_batch *b = task->unanswered_batches, *next; b != NULL;
         b = next) {
        next = b->next;
        sf_commit_done(b);
    }
    free(task);
}

/* The store hook: gather, hand to the pool, answer later. */
static postern_result
sf_store(postern_ctx *ctx, void *instance)
{
    struct store_file *sf = instance;
    struct sf_job *job = NULL;
    struct sf_write_task *task = NULL;

    if (postern_transaction_id(ctx) == NULL) {
        postern_log(ctx, POSTERN_LOG_ERROR,
                    "store hook called outside a transaction");
        goto fail;
    }
    if (sf->per_recipient && postern_rcpt_count(ctx) == 0) {
        postern_log(ctx, POSTERN_LOG_ERROR, "no recipients to deliver to");
        goto fail;
    }
    if ((job = sf_job_new(sf, ctx)) == NULL) {
        postern_log(ctx, POSTERN_LOG_ERROR,
                    "cannot prepare the delivery: out of memory");
        goto fail;
    }
    errno = 0;
    if ((job->reader = postern_message_open(ctx)) == NULL) {
        postern_log(
            ctx, POSTERN_LOG_ERROR, "cannot open the message id=%s error=%s",
            job->id,
            postern_log_value(errno ? strerror(errno) : "unknown error"));
        goto fail;
    }
    if ((task = calloc(1, sizeof *task)) == NULL) {
        postern_log(ctx, POSTERN_LOG_ERROR,
                    "cannot prepare the delivery: out of memory");
        goto fail;
    }
    task->job = job;
    if (sf->journal_on)
        job->segment = sf_journal_assign(sf);
    if (postern_pool_submit(sf_write_work, sf_write_done, task) != 0) {
        postern_log(ctx, POSTERN_LOG_ERROR,
                    "the thread pool refused the delivery id=%s", job->id);
        free(task);
        goto fail;
    }
    /* job now belongs to the pool and the commit; it may even be freed
     * already. */
    return POSTERN_PENDING;
fail:
    if (job != NULL)
        sf_journal_release(sf, job->segment);
    sf_job_free(job);
    sf_reply_failure(ctx);
    return POSTERN_TEMPFAIL;
}

/* --- configuration ---------------------------------------------------------
 */

static void
sf_destroy(void *instance)
{
    struct store_file *sf = instance;

    if (sf == NULL)
        return;
    if (sf->committed > 0)
        postern_log(NULL, POSTERN_LOG_INFO,
                    "group commit: deliveries=%lu batches=%lu fsync=%s%s "
                    "ms_per_batch=%.2f",
                    sf->committed, sf->commits, sf->fsync ? "yes" : "no",
                    sf->journal_on ? " journal=yes" : "",
                    sf->commit_seconds * 1e3 / (double)sf->commits);
    if (sf->journal.active != NULL)
        sf_journal_close(sf);
    free(sf->journal.dir);
    pthread_mutex_destroy(&sf->queue_lock);
    free(sf->root);
    free(sf->quarantine_folder);
    free(sf->quarantine_root);
    free(sf);
}

static int
sf_config_bool(postern_module_init *init, const char *key, const json_t *value,
               bool *out)
{
    if (!json_is_boolean(value)) {
        postern_init_error(init, key, "expected true or false");
        return -1;
    }
    *out = json_is_true(value);
    return 0;
}

/* "quarantine": a Maildir++ folder name ("Quarantine": the folder
 * .Quarantine of each maildir) or an absolute path (a separate root). */
static int
sf_config_quarantine(postern_module_init *init, struct store_file *sf,
                     const json_t *value)
{
    const char *v = json_is_string(value) ? json_string_value(value) : NULL;
    bool ok = v && *v && strlen(v) == json_string_length(value);

    if (ok && v[0] == '/') {
        sf->quarantine_root = strdup(v);
        if (!sf->quarantine_root) {
            postern_init_error(init, "quarantine", "out of memory");
            return -1;
        }
        return 0;
    }
    for (const char *p = v; ok && *p; p++)
        if ((unsigned char)*p < 0x20 || *p == '/' || *p == 0x7f)
            ok = false;
    if (!ok || v[0] == '.') {
        postern_init_error(init, "quarantine",
                           "expected a maildir folder name (\"Quarantine\", "
                           "no '/', not starting with '.') or an absolute "
                           "directory path");
        return -1;
    }
    if (asprintf(&sf->quarantine_folder, ".%s", v) < 0) {
        sf->quarantine_folder = NULL;
        postern_init_error(init, "quarantine", "out of memory");
        return -1;
    }
    return 0;
}

/* Read the config into sf. 0, or -1 after postern_init_error(). */
static int
sf_config(postern_module_init *init, struct store_file *sf)
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
        int rc = 0;
        if (strcmp(key, "root") == 0) {
            if (!json_is_string(value) || json_string_length(value) == 0 ||
                strlen(json_string_value(value)) != json_string_length(value)) {
                postern_init_error(init, "root",
                                   "expected a non-empty string (a "
                                   "directory)");
                return -1;
            }
            if ((sf->root = strdup(json_string_value(value))) == NULL) {
                postern_init_error(init, "root", "out of memory");
                return -1;
            }
        } else if (strcmp(key, "quarantine") == 0) {
            if (sf_config_quarantine(init, sf, value) != 0)
                return -1;
        } else if (strcmp(key, "per_recipient") == 0) {
            rc = sf_config_bool(init, key, value, &sf->per_recipient);
        } else if (strcmp(key, "envelope") == 0) {
            rc = sf_config_bool(init, key, value, &sf->envelope);
        } else if (strcmp(key, "fsync") == 0) {
            rc = sf_config_bool(init, key, value, &sf->fsync);
        } else if (strcmp(key, "journal") == 0) {
            rc = sf_config_bool(init, key, value, &sf->journal_on);
        } else if (strcmp(key, "journal_dir") == 0) {
            if (!json_is_string(value) || json_string_length(value) == 0 ||
                strlen(json_string_value(value)) != json_string_length(value)) {
                postern_init_error(init, key,
                                   "expected a non-empty string (a "
                                   "directory)");
                return -1;
            }
            free(sf->journal.dir);
            if (!(sf->journal.dir = strdup(json_string_value(value)))) {
                postern_init_error(init, key, "out of memory");
                return -1;
            }
        } else if (strcmp(key, "journal_checkpoint") == 0) {
            double v = json_is_number(value) ? json_number_value(value) : -1;
            if (!(v >= 0.01 && v <= 86400)) {
                postern_init_error(init, key,
                                   "expected seconds between checkpoints, "
                                   "from 0.01 to 86400");
                return -1;
            }
            sf->journal.checkpoint = v;
        } else {
            postern_init_error(init, key,
                               "unknown key (expected root, quarantine, "
                               "per_recipient, envelope, fsync, journal, "
                               "journal_dir or journal_checkpoint)");
            return -1;
        }
        if (rc != 0)
            return -1;
    }
    if (sf->root == NULL) {
        postern_init_error(init, "root",
                           "required: the directory to deliver into");
        return -1;
    }
    /* The journal, by default beside envelope/ in the maildir (no reader
     * looks there), or with per_recipient where no recipient's maildir
     * can be named (theirs never start with '.'). */
    if (sf->journal.dir == NULL &&
        !(sf->journal.dir = sf_path(
              sf->root, sf->per_recipient ? ".journal" : "journal", NULL))) {
        postern_init_error(init, "journal_dir", "out of memory");
        return -1;
    }
    if (!sf->quarantine_folder && !sf->quarantine_root &&
        !(sf->quarantine_folder = strdup(".Quarantine"))) {
        postern_init_error(init, "quarantine", "out of memory");
        return -1;
    }
    return 0;
}

/* Our host name with anything but [A-Za-z0-9.-] replaced: it ends the
 * file name, where '/' and ':' (maildir flags) must not appear. */
static void
sf_host_name(char *out, size_t size)
{
    if (gethostname(out, size) != 0 || out[0] == '\0')
        snprintf(out, size, "localhost");
    out[size - 1] = '\0';
    for (char *p = out; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '-'))
            *p = '_';
    }
}

static int
sf_create_instance(postern_module_init *init, void **instance)
{
    struct store_file *sf = calloc(1, sizeof *sf);

    if (sf == NULL) {
        postern_init_error(init, "", "out of memory");
        return -1;
    }
    sf->envelope = true;
    sf->fsync = true;
    sf->journal.checkpoint = 1.0;
    sf->written_tail = &sf->written;
    pthread_mutex_init(&sf->queue_lock, NULL);
    if (sf_config(init, sf) != 0) {
        sf_destroy(sf);
        return -1;
    }
    sf_host_name(sf->host, sizeof sf->host);
    sf->pid = (long)getpid();
    /* journal_on means "running with one" from here on. */
    bool want_journal = sf->journal_on;
    sf->journal_on = false;

    /* The root maildir now, so a bad root fails at start, not at the
     * first message; per-recipient maildirs are made on demand. */
    if (!postern_init_check_only(init)) {
        struct sf_error e = {0};
        const char *q = sf->quarantine_root;
        if (sf_mkdir_parents(sf->root, &e) != 0 ||
            (!sf->per_recipient &&
             sf_make_maildir(sf->root, sf->envelope, false, &e) != 0) ||
            (q && sf_mkdir_parents(q, &e) != 0) ||
            (q && !sf->per_recipient &&
             sf_make_maildir(q, sf->envelope, false, &e) != 0)) {
            bool in_q = q && e.path && strncmp(e.path, q, strlen(q)) == 0;
            postern_init_error(init, in_q ? "quarantine" : "root",
                               "cannot create %s: %s",
                               e.path ? e.path : sf->root, strerror(e.err));
            free(e.path);
            sf_destroy(sf);
            return -1;
        }
        sf_clean_leftovers(sf);
        /* With per_recipient the root is no maildir (it holds one per
         * recipient), so the probe fails and files get names. */
        sf->unnamed_files = sf_unnamed_files_work(sf->root);
        char err[512];
        if (sf->fsync && want_journal &&
            sf_journal_open(sf, err, sizeof err) != 0) {
            postern_init_error(init, "journal_dir", "%s", err);
            sf_destroy(sf);
            return -1;
        }
    }
    /* Not under --check-config, nor without fsync. */
    sf->journal_on = want_journal && sf->fsync && sf->journal.active;
    if (!sf->fsync)
        postern_log(NULL, POSTERN_LOG_WARNING,
                    "fsync disabled: a 250 reply no longer means "
                    "the message is on disk; for tests only");
    if (!sf->fsync && want_journal)
        postern_log(NULL, POSTERN_LOG_WARNING,
                    "journal ignored: it needs fsync");
    *instance = sf;
    return 0;
}

POSTERN_MODULE_DEFINE = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "store_file",
    .description = "deliver messages durably into maildirs",
    .create = sf_create_instance,
    .destroy = sf_destroy,
    .handlers = {[POSTERN_HOOK_STORE] = sf_store},
};
