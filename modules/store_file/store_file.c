/*
 * store_file.c - deliver each message into a maildir, durably.
 *
 * The store hook gathers what it needs from the context on the loop
 * thread (the envelope as JSON text, a message reader, the file name) and
 * queues the delivery; the queue goes to the thread pool in batches (group
 * commit, see sf_batch_submit()), so no open, write or fsync ever blocks
 * the loop, and deliveries that finish together share their fsyncs. A
 * pool thread, for a batch:
 *
 *   1. writes each message to tmp/<name> of its first maildir (the other
 *      maildirs get a hard link to that file in their tmp/, or a copy when
 *      linking fails), each envelope to tmp/<name>.json, and renames the
 *      envelopes into envelope/;
 *   2. syncfs()s their file system once: every file and envelope is on
 *      disk;
 *   3. renames every tmp/<name> to new/<name>, then fsyncs each new/ once.
 *
 * Every envelope is on disk before its message reaches new/, so a reader
 * of new/ always finds the envelope. The 250s of a batch are sent only
 * once all its copies are in new/ and on disk. On any failure the client
 * gets 451 and retries, and what no reader can have seen is unlinked:
 * files in tmp/, and the envelopes of messages that are not in new/. A
 * copy already in new/ is never taken back (see sf_place_envelopes() for
 * a rename failing half way).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <postern/postern.h>

#define SF_BUFFER_SIZE (64 * 1024)

struct store_file {
    char *root;
    /* Where quarantined messages go (postern_message_quarantine()): a
     * Maildir++ folder ".<name>" inside each maildir, or, when the config
     * value is an absolute path, a separate root laid out like root. */
    char *quarantine_folder; /* ".Quarantine"; NULL with quarantine_root */
    char *quarantine_root;
    bool per_recipient;
    bool envelope;
    bool fsync;
    char host[256]; /* sanitised host name, for unique file names */
    /* Group commit, on the loop thread only (see sf_batch_submit()). */
    struct sf_job *queue, **queue_tail; /* waiting for a batch */
    unsigned in_flight;                 /* batches in the pool */
    unsigned long commits, committed;   /* batches done, their deliveries */
};

/* Unique names within this process, across instances and threads. */
static atomic_ulong sf_counter;

/* The first failure of a delivery: what, where, errno. */
struct sf_error {
    int err;
    const char *op;
    char *path;
};

static int
sf_fail(struct sf_error *e, const char *op, const char *path, int err)
{
    if (e->err == 0) {
        e->err = err ? err : EIO;
        e->op = op;
        e->path = strdup(path);
    }
    return -1;
}

/* "a/b/c" from up to three parts; NULL parts are skipped. */
static char *
sf_path(const char *a, const char *b, const char *c)
{
    char *path = NULL;

    if (asprintf(&path, "%s%s%s%s%s", a, b ? "/" : "", b ? b : "", c ? "/" : "",
                 c ? c : "") < 0)
        return NULL;
    return path;
}

static int
sf_mkdir(const char *path, bool *created, struct sf_error *e)
{
    if (mkdir(path, 0700) == 0) {
        *created = true;
        return 0;
    }
    if (errno == EEXIST)
        return 0;
    return sf_fail(e, "mkdir", path, errno);
}

/* fsync a directory, so the entries just made in it survive a crash. */
static int
sf_sync_dir(const char *path, struct sf_error *e)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd < 0)
        return sf_fail(e, "open", path, errno);
    if (fsync(fd) != 0) {
        int err = errno;
        close(fd);
        return sf_fail(e, "fsync", path, err);
    }
    close(fd);
    return 0;
}

/* mkdir -p with mode 0700. */
static int
sf_mkdir_parents(const char *path, struct sf_error *e)
{
    char *copy = strdup(path);
    bool created = false;

    if (copy == NULL)
        return sf_fail(e, "mkdir", path, ENOMEM);
    for (char *s = copy + 1; *s != '\0'; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        int rc = sf_mkdir(copy, &created, e);
        *s = '/';
        if (rc != 0) {
            free(copy);
            return -1;
        }
    }
    free(copy);
    return sf_mkdir(path, &created, e);
}

/*
 * Make dir a maildir: dir/{tmp,new,cur}, and envelope/ when asked. With
 * sync, the directories created are fsynced into their parents.
 */
static int
sf_make_maildir(const char *dir, bool envelope, bool sync, struct sf_error *e)
{
    static const char *const subdirs[] = {"tmp", "new", "cur", "envelope"};
    bool made_dir = false, made_sub = false;

    if (sf_mkdir(dir, &made_dir, e) != 0)
        return -1;
    for (size_t i = 0; i < (envelope ? 4u : 3u); i++) {
        char *sub = sf_path(dir, subdirs[i], NULL);
        int rc = sub ? sf_mkdir(sub, &made_sub, e)
                     : sf_fail(e, "mkdir", dir, ENOMEM);
        free(sub);
        if (rc != 0)
            return -1;
    }
    if (sync && made_sub && sf_sync_dir(dir, e) != 0)
        return -1;
    if (sync && made_dir) {
        char *parent = sf_path(dir, "..", NULL);
        int rc =
            parent ? sf_sync_dir(parent, e) : sf_fail(e, "fsync", dir, ENOMEM);
        free(parent);
        return rc;
    }
    return 0;
}

/* write() all of buf, through short writes and EINTR. */
static int
sf_write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* --- one delivery ------------------------------------------------------- */

struct sf_target {
    char *base;     /* a maildir to make before dir (dir is its folder) */
    char *dir;      /* the maildir */
    char *envelope; /* JSON text, or NULL with "envelope": false */
    char *tmp, *new, *env_tmp, *env;
    bool tmp_made, env_tmp_made, env_placed, delivered;
};

struct sf_job {
    struct sf_job *next; /* in the instance's queue, or in a batch */
    const struct store_file *sf;
    postern_ctx *ctx;
    postern_message_reader *reader;
    char *id;   /* transaction id, for the reply */
    char *name; /* the unique file name */
    bool quarantined;
    bool make_dirs; /* the target maildirs may not exist yet */
    struct sf_target *targets;
    size_t n_targets;
    struct sf_error error;
};

static void
sf_job_free(struct sf_job *job)
{
    if (job == NULL)
        return;
    postern_message_close(job->reader);
    for (size_t i = 0; i < job->n_targets; i++) {
        struct sf_target *t = &job->targets[i];
        free(t->base);
        free(t->dir);
        free(t->envelope);
        free(t->tmp);
        free(t->new);
        free(t->env_tmp);
        free(t->env);
    }
    free(job->targets);
    free(job->id);
    free(job->name);
    free(job->error.path);
    free(job);
}

/* Open path for a new file: it must not exist. */
static int
sf_create(const char *path, struct sf_error *e)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

    if (fd < 0)
        sf_fail(e, "open", path, errno);
    return fd;
}

/* Close a file just written; with fsync, the batch's syncfs() makes it
 * durable (see sf_sync_written()). */
static int
sf_finish_file(struct sf_job *job, int fd, const char *path)
{
    if (close(fd) != 0)
        return sf_fail(&job->error, "close", path, errno);
    return 0;
}

/* Copy everything src_read yields into fd. */
typedef ssize_t (*sf_read_fn)(void *src, void *buf, size_t len);

static int
sf_copy(struct sf_job *job, sf_read_fn read_fn, void *src, const char *what,
        int fd, const char *path)
{
    char *buf = malloc(SF_BUFFER_SIZE);

    if (buf == NULL)
        return sf_fail(&job->error, "copy to", path, ENOMEM);
    for (;;) {
        ssize_t n = read_fn(src, buf, SF_BUFFER_SIZE);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            sf_fail(&job->error, "read", what, errno);
            break;
        }
        if (n == 0) {
            free(buf);
            return 0;
        }
        if (sf_write_all(fd, buf, (size_t)n) != 0) {
            sf_fail(&job->error, "write", path, errno);
            break;
        }
    }
    free(buf);
    return -1;
}

static ssize_t
sf_read_message(void *src, void *buf, size_t len)
{
    return postern_message_read(src, buf, len);
}

static ssize_t
sf_read_fd(void *src, void *buf, size_t len)
{
    return read(*(int *)src, buf, len);
}

/* The message from the reader into the first target's tmp/. */
static int
sf_write_message(struct sf_job *job, struct sf_target *t)
{
    int fd = sf_create(t->tmp, &job->error);

    if (fd < 0)
        return -1;
    t->tmp_made = true;
    if (sf_copy(job, sf_read_message, job->reader, "message", fd, t->tmp) !=
        0) {
        close(fd);
        return -1;
    }
    return sf_finish_file(job, fd, t->tmp);
}

/* The other targets: a hard link to the first copy, or a copy of it when the
 * link cannot be made (another file system, no links). */
static int
sf_link_or_copy(struct sf_job *job, const struct sf_target *first,
                struct sf_target *t)
{
    if (link(first->tmp, t->tmp) == 0) {
        t->tmp_made = true;
        return 0;
    }
    if (errno == EEXIST)
        return sf_fail(&job->error, "link", t->tmp, errno);

    int in = open(first->tmp, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return sf_fail(&job->error, "open", first->tmp, errno);
    int out = sf_create(t->tmp, &job->error);
    if (out < 0) {
        close(in);
        return -1;
    }
    t->tmp_made = true;
    int rc = sf_copy(job, sf_read_fd, &in, first->tmp, out, t->tmp);
    close(in);
    if (rc != 0) {
        close(out);
        return -1;
    }
    return sf_finish_file(job, out, t->tmp);
}

/* The envelope into tmp/; sf_place_envelope() renames it. */
static int
sf_write_envelope(struct sf_job *job, struct sf_target *t)
{
    int fd = sf_create(t->env_tmp, &job->error);

    if (fd < 0)
        return -1;
    t->env_tmp_made = true;
    if (sf_write_all(fd, t->envelope, strlen(t->envelope)) != 0) {
        int err = errno;
        close(fd);
        return sf_fail(&job->error, "write", t->env_tmp, err);
    }
    return sf_finish_file(job, fd, t->env_tmp);
}

static int
sf_place_envelope(struct sf_job *job, struct sf_target *t)
{
    if (rename(t->env_tmp, t->env) != 0)
        return sf_fail(&job->error, "rename", t->env_tmp, errno);
    t->env_placed = true;
    return 0;
}

/* Into new/, the moment the message becomes visible. */
static int
sf_deliver(struct sf_job *job, struct sf_target *t)
{
    if (rename(t->tmp, t->new) != 0)
        return sf_fail(&job->error, "rename", t->tmp, errno);
    t->delivered = true;
    return 0;
}

/*
 * Undo a failed delivery: the client retries, so leave nothing behind that
 * no reader has seen yet. Only files in tmp/, and the envelopes of messages
 * that never reached new/, are removed. A copy already renamed into new/ is
 * never unlinked: a mail reader may have seen (even fetched and moved) it,
 * and taking it back would be worse than the duplicate the retry makes. Its
 * envelope stays with it, so every message in new/ keeps its envelope.
 */
static void
sf_undo(struct sf_job *job)
{
    for (size_t i = 0; i < job->n_targets; i++) {
        struct sf_target *t = &job->targets[i];
        if (t->delivered)
            continue;
        if (t->tmp_made)
            unlink(t->tmp);
        if (t->env_placed)
            unlink(t->env);
        else if (t->env_tmp_made)
            unlink(t->env_tmp);
    }
}

/*
 * The renames of a delivery whose files are written, in order: every
 * envelope first, then every message into new/. A failure half way leaves
 * the copies already in new/ there (see sf_undo) and the client still gets
 * 451: SMTP has one reply for all recipients of a DATA, and 250 must mean
 * every copy is durable. The retry then duplicates those copies; a
 * duplicate is the lesser harm, a lost or retracted message is not an
 * option. The loop stops at the first failure: every further rename would
 * only add a duplicate.
 */
static int
sf_place_envelopes(struct sf_job *job)
{
    for (size_t i = 0; job->sf->envelope && i < job->n_targets; i++)
        if (sf_place_envelope(job, &job->targets[i]) != 0)
            return -1;
    return 0;
}

static int
sf_deliver_all(struct sf_job *job)
{
    for (size_t i = 0; i < job->n_targets; i++)
        if (sf_deliver(job, &job->targets[i]) != 0)
            return -1;
    return 0;
}

/* Write every file of a delivery into tmp/ (and, without fsync, finish
 * it: nothing waits for the disk then). 0, or -1 after undoing it. */
static int
sf_write_job(struct sf_job *job)
{
    const struct store_file *sf = job->sf;

    for (size_t i = 0; job->make_dirs && i < job->n_targets; i++) {
        const struct sf_target *t = &job->targets[i];
        if ((t->base && sf_make_maildir(t->base, sf->envelope, sf->fsync,
                                        &job->error) != 0) ||
            sf_make_maildir(t->dir, sf->envelope, sf->fsync, &job->error) != 0)
            goto fail;
    }
    if (sf_write_message(job, &job->targets[0]) != 0)
        goto fail;
    for (size_t i = 1; i < job->n_targets; i++)
        if (sf_link_or_copy(job, &job->targets[0], &job->targets[i]) != 0)
            goto fail;
    for (size_t i = 0; sf->envelope && i < job->n_targets; i++)
        if (sf_write_envelope(job, &job->targets[i]) != 0)
            goto fail;
    /* The envelopes go to envelope/ now: with fsync, the commit makes
     * them durable before any message is renamed into new/. */
    if (sf_place_envelopes(job) != 0)
        goto fail;
    if (sf->fsync)
        return 0;
    if (sf_deliver_all(job) != 0)
        goto fail;
    return 0;
fail:
    sf_undo(job);
    return -1;
}

/* --- group commit --------------------------------------------------------- */

/*
 * Deliveries are handed to the pool in batches: everything the store hook
 * queued while the previous batch was in flight. A batch writes all its
 * files, then makes them durable together, in one round of durability
 * points shared by all its deliveries (see sf_commit()), and only then are
 * the 250s of the whole batch sent. One batch at a time: a second one
 * would only write its files while the first one's journal commit holds
 * the file system (creating a file waits for that commit on ext4), and
 * split the waiting deliveries into two commits where one would do. At
 * low load a delivery is a batch of its own and waits for nobody.
 */
#define SF_IN_FLIGHT 1

struct sf_batch {
    struct store_file *sf;
    struct sf_job *jobs;
    size_t n_jobs;
};

/* The new/ directories of a batch, each opened once: their file system
 * is synced through them, and they are fsynced after the renames. */
struct sf_dirs {
    char **paths;
    int *fds;
    int *errs; /* first error of a sync covering the directory */
    dev_t *devs;
    size_t n, cap;
};

/* Add dir/new unless present; opened and its file system looked up. */
static int
sf_dirs_add(struct sf_dirs *d, const char *dir)
{
    char *path = sf_path(dir, "new", NULL);

    if (path == NULL)
        return ENOMEM;
    for (size_t i = 0; i < d->n; i++)
        if (strcmp(d->paths[i], path) == 0) {
            free(path);
            return 0;
        }
    if (d->n == d->cap) {
        size_t cap = d->cap ? 2 * d->cap : 8;
        char **paths = realloc(d->paths, cap * sizeof *paths);
        int *fds = paths ? realloc(d->fds, cap * sizeof *fds) : NULL;
        int *errs = fds ? realloc(d->errs, cap * sizeof *errs) : NULL;
        dev_t *devs = errs ? realloc(d->devs, cap * sizeof *devs) : NULL;
        d->paths = paths ? paths : d->paths;
        d->fds = fds ? fds : d->fds;
        d->errs = errs ? errs : d->errs;
        d->devs = devs ? devs : d->devs;
        if (devs == NULL) {
            free(path);
            return ENOMEM;
        }
        d->cap = cap;
    }
    struct stat st;
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int err = fd < 0 ? errno : fstat(fd, &st) != 0 ? errno : 0;
    d->paths[d->n] = path;
    d->fds[d->n] = fd;
    d->errs[d->n] = err;
    d->devs[d->n] = err ? 0 : st.st_dev;
    d->n++;
    return 0;
}

/* The error recorded for dir/new: 0 when every sync of it worked. */
static int
sf_dirs_error(const struct sf_dirs *d, const char *dir)
{
    char *path = sf_path(dir, "new", NULL);
    int err = path ? 0 : ENOMEM;

    for (size_t i = 0; path && i < d->n; i++)
        if (strcmp(d->paths[i], path) == 0)
            err = d->errs[i];
    free(path);
    return err;
}

static void
sf_dirs_free(struct sf_dirs *d)
{
    for (size_t i = 0; i < d->n; i++) {
        if (d->fds[i] >= 0)
            close(d->fds[i]);
        free(d->paths[i]);
    }
    free(d->paths);
    free(d->fds);
    free(d->errs);
    free(d->devs);
}

/* A job fails when a sync covering one of its targets did; only_delivered:
 * count only the copies already in new/. */
static void
sf_dirs_fail_jobs(const struct sf_dirs *d, struct sf_batch *b, const char *op,
                  bool only_delivered)
{
    for (struct sf_job *j = b->jobs; j != NULL; j = j->next)
        for (size_t i = 0; i < j->n_targets; i++) {
            const struct sf_target *t = &j->targets[i];
            if (only_delivered ? !t->delivered : j->error.err != 0)
                continue;
            int err = sf_dirs_error(d, t->dir);
            if (err != 0) {
                char *path = sf_path(t->dir, "new", NULL);
                sf_fail(&j->error, op, path ? path : t->dir, err);
                free(path);
            }
        }
}

/* Without syncfs(): fdatasync every file, fsync every envelope/. */
static int
sf_sync_path(const char *path, bool dir)
{
    int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
    int rc = fd < 0 ? -1 : dir ? fsync(fd) : fdatasync(fd);
    int err = errno;

    if (fd >= 0)
        close(fd);
    errno = err;
    return rc;
}

static void
sf_sync_each_file(struct sf_job *j)
{
    for (size_t i = 0; j->error.err == 0 && i < j->n_targets; i++) {
        const struct sf_target *t = &j->targets[i];
        char *env_dir =
            j->sf->envelope ? sf_path(t->dir, "envelope", NULL) : NULL;
        if (sf_sync_path(t->tmp, false) != 0)
            sf_fail(&j->error, "fsync", t->tmp, errno);
        else if (j->sf->envelope && sf_sync_path(t->env, false) != 0)
            sf_fail(&j->error, "fsync", t->env, errno);
        else if (j->sf->envelope &&
                 (!env_dir || sf_sync_path(env_dir, true) != 0))
            sf_fail(&j->error, "fsync", env_dir ? env_dir : t->dir,
                    env_dir ? errno : ENOMEM);
        free(env_dir);
    }
}

/*
 * The first durability point of a batch: every file written and every
 * envelope renamed is on disk. syncfs(2) once per file system: "sync() or
 * syncfs() provide the same guarantees as fsync() called on every file in
 * the system or filesystem respectively", and it costs one journal commit
 * and one cache flush, where an fdatasync per file costs a cache flush
 * each. Where syncfs() is missing, the files one by one.
 */
static void
sf_sync_written(struct sf_dirs *d, struct sf_batch *b)
{
    bool fallback = false;

    for (size_t i = 0; i < d->n; i++) {
        bool done = false;
        for (size_t k = 0; k < i && !done; k++)
            if (d->errs[k] == 0 && d->devs[k] == d->devs[i]) {
                done = true;
                d->errs[i] = d->errs[k];
            }
        if (done || d->errs[i] != 0)
            continue;
        if (syncfs(d->fds[i]) != 0) {
            if (errno == ENOSYS)
                fallback = true;
            else
                d->errs[i] = errno;
        }
    }
    /* Maildirs sharing a file system share its sync's outcome. */
    for (size_t i = 0; i < d->n; i++)
        for (size_t k = 0; k < d->n; k++)
            if (d->errs[k] != 0 && d->devs[k] == d->devs[i] &&
                d->errs[i] == 0 && d->fds[i] >= 0)
                d->errs[i] = d->errs[k];
    sf_dirs_fail_jobs(d, b, "syncfs", false);
    for (struct sf_job *j = b->jobs; fallback && j != NULL; j = j->next)
        sf_sync_each_file(j);
}

/*
 * The durability points of a batch whose files are all written and
 * closed, and whose envelopes are in envelope/:
 *
 *   1. syncfs() the file system of the maildirs: every message file and
 *      envelope, data and names, is on disk;
 *   2. rename every message into new/, fsync each new/ once.
 *
 * So a message is complete on disk before its name appears in new/, its
 * envelope is on disk before that, and every message of the batch is in
 * new/ on disk before any 250. A delivery failing at any step is undone
 * (sf_undo) without holding up the others.
 */
static void
sf_commit(struct sf_batch *b)
{
    struct sf_dirs dirs = {0};

    for (struct sf_job *j = b->jobs; j != NULL; j = j->next)
        for (size_t i = 0; j->error.err == 0 && i < j->n_targets; i++) {
            int err = sf_dirs_add(&dirs, j->targets[i].dir);
            if (err != 0)
                sf_fail(&j->error, "open", j->targets[i].dir, err);
        }
    sf_dirs_fail_jobs(&dirs, b, "open", false);
    sf_sync_written(&dirs, b);
    for (struct sf_job *j = b->jobs; j != NULL; j = j->next)
        if (j->error.err == 0)
            (void)sf_deliver_all(j);
    for (size_t i = 0; i < dirs.n; i++)
        if (dirs.errs[i] == 0 && fsync(dirs.fds[i]) != 0)
            dirs.errs[i] = errno;
    sf_dirs_fail_jobs(&dirs, b, "fsync", true);
    sf_dirs_free(&dirs);
    for (struct sf_job *j = b->jobs; j != NULL; j = j->next)
        if (j->error.err != 0)
            sf_undo(j);
}

/* On a pool thread: all the file work of a batch. Only
 * postern_message_read() may be called here; errors are kept in each
 * job's error for sf_job_done(). */
static void
sf_batch_work(void *arg)
{
    struct sf_batch *b = arg;

    for (struct sf_job *j = b->jobs; j != NULL; j = j->next)
        (void)sf_write_job(j);
    if (b->sf->fsync)
        sf_commit(b);
}

static void
sf_reply_failure(postern_ctx *ctx)
{
    if (!postern_ctx_orphaned(ctx))
        postern_reply(ctx, 451, "4.3.0", "Error: local storage failure");
}

/* On the loop thread, once the job's batch is over. Resumes even an
 * orphaned context: the core ignores the result, and the job is freed
 * either way. */
static void
sf_job_done(struct sf_job *job, unsigned long commit)
{
    postern_ctx *ctx = job->ctx;

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

static int sf_batch_submit(struct store_file *sf);

/* On the loop thread: the batch is durable (or failed); answer all its
 * clients together, then start the next batch if deliveries wait. */
static void
sf_batch_done(void *arg)
{
    struct sf_batch *b = arg;
    struct store_file *sf = b->sf;
    unsigned long commit = ++sf->commits;

    sf->committed += b->n_jobs;
    for (struct sf_job *j = b->jobs, *next; j != NULL; j = next) {
        next = j->next;
        sf_job_done(j, commit);
    }
    free(b);
    sf->in_flight--;
    while (sf->queue != NULL && sf->in_flight < SF_IN_FLIGHT)
        if (sf_batch_submit(sf) != 0) {
            /* The pool is gone (shutting down): nobody will write these. */
            for (struct sf_job *j = sf->queue, *next; j != NULL; j = next) {
                next = j->next;
                sf_fail(&j->error, "submit", "thread pool", EAGAIN);
                sf_job_done(j, 0);
            }
            sf->queue = NULL;
            sf->queue_tail = &sf->queue;
        }
}

/* Hand every queued delivery to the pool as one batch. 0, or -1 when the
 * pool refused it (the queue is left as it was). */
static int
sf_batch_submit(struct store_file *sf)
{
    struct sf_batch *b = calloc(1, sizeof *b);

    if (b == NULL)
        return -1;
    b->sf = sf;
    b->jobs = sf->queue;
    for (struct sf_job *j = b->jobs; j != NULL; j = j->next)
        b->n_jobs++;
    if (postern_pool_submit(sf_batch_work, sf_batch_done, b) != 0) {
        free(b);
        return -1;
    }
    sf->queue = NULL;
    sf->queue_tail = &sf->queue;
    sf->in_flight++;
    return 0;
}

/* --- gathering the job on the loop thread ----------------------------------
 */

/* A JSON string; bytes of text that is not UTF-8 become '?'. */
static json_t *
sf_json_string(const char *s)
{
    if (s == NULL)
        return json_null();
    json_t *j = json_string(s);
    if (j != NULL)
        return j;
    char *copy = strdup(s);
    if (copy == NULL)
        return NULL;
    for (char *p = copy; *p != '\0'; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    j = json_string(copy);
    free(copy);
    return j;
}

/* Set key to value, taking value; -1 when either is missing. */
static int
sf_json_set(json_t *obj, const char *key, json_t *value)
{
    return value != NULL ? json_object_set_new(obj, key, value) : -1;
}

/* The envelope of this transaction, for the recipients rcpts[0..n). */
static char *
sf_envelope_text(postern_ctx *ctx, const size_t *rcpts, size_t n,
                 const char *received_at)
{
    static const char *const params[] = {"SIZE", "BODY", "SMTPUTF8",
                                         "AUTH", "RET",  "ENVID"};
    json_t *env = json_object(), *mail_params = json_object(),
           *rcpt_to = json_array();
    int rc = (env && mail_params && rcpt_to) ? 0 : -1;

    for (size_t i = 0; rc == 0 && i < sizeof params / sizeof params[0]; i++) {
        const char *value = postern_mail_param(ctx, params[i]);
        if (value != NULL)
            rc = sf_json_set(mail_params, params[i], sf_json_string(value));
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        json_t *addr = sf_json_string(postern_rcpt_address(ctx, rcpts[i]));
        rc = addr ? json_array_append_new(rcpt_to, addr) : -1;
    }
    if (rc == 0)
        rc |= sf_json_set(env, "id",
                          sf_json_string(postern_transaction_id(ctx))) |
              sf_json_set(env, "session",
                          sf_json_string(postern_session_id(ctx))) |
              sf_json_set(env, "client_ip",
                          sf_json_string(postern_client_ip(ctx))) |
              sf_json_set(env, "client_port",
                          json_integer(postern_client_port(ctx))) |
              sf_json_set(env, "helo", sf_json_string(postern_helo_name(ctx))) |
              sf_json_set(env, "esmtp", json_boolean(postern_is_esmtp(ctx))) |
              sf_json_set(env, "tls", json_boolean(postern_tls_active(ctx))) |
              sf_json_set(env, "auth_user",
                          sf_json_string(postern_auth_user(ctx))) |
              sf_json_set(env, "mail_from",
                          sf_json_string(postern_mail_from(ctx))) |
              sf_json_set(env, "mail_params", json_incref(mail_params)) |
              sf_json_set(env, "rcpt_to", json_incref(rcpt_to)) |
              sf_json_set(env, "size",
                          json_integer((json_int_t)postern_message_size(ctx))) |
              sf_json_set(env, "quarantine",
                          sf_json_string(postern_message_quarantined(ctx))) |
              sf_json_set(env, "received_at", json_string(received_at));
    char *text = rc == 0 ? json_dumps(env, JSON_COMPACT) : NULL;
    json_decref(env);
    json_decref(mail_params);
    json_decref(rcpt_to);
    if (text == NULL)
        return NULL;
    /* A final newline, as text files have. */
    size_t len = strlen(text);
    char *line = realloc(text, len + 2);
    if (line == NULL) {
        free(text);
        return NULL;
    }
    line[len] = '\n';
    line[len + 1] = '\0';
    return line;
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
    t->tmp = sf_path(dir, "tmp", name);
    t->new = sf_path(dir, "new", name);
    t->env_tmp = sf_path(dir, "tmp", json_name);
    t->env = sf_path(dir, "envelope", json_name);
    return (t->tmp && t->new && t->env_tmp && t->env) ? 0 : -1;
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
    if (asprintf(&name, "%lld.M%ldP%ldQ%sR%lu.%s", sec, usec, (long)getpid(),
                 safe_id, counter, sf->host) < 0)
        return NULL;
    return name;
}

static struct sf_job *
sf_job_new(const struct store_file *sf, postern_ctx *ctx)
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

/* The store hook: gather, queue for the next batch, answer later. */
static postern_result
sf_store(postern_ctx *ctx, void *instance)
{
    struct store_file *sf = instance;
    struct sf_job *job = NULL;

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
    /* The queue is empty unless a batch runs: then it takes this job
     * along in the next batch when it is done. */
    *sf->queue_tail = job;
    sf->queue_tail = &job->next;
    if (sf->in_flight < SF_IN_FLIGHT && sf_batch_submit(sf) != 0) {
        sf->queue = NULL;
        sf->queue_tail = &sf->queue;
        postern_log(ctx, POSTERN_LOG_ERROR,
                    "the thread pool refused the delivery id=%s", job->id);
        goto fail;
    }
    /* job now belongs to sf_batch_done(); it may even be freed already. */
    return POSTERN_PENDING;
fail:
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
                    "group commit: deliveries=%lu batches=%lu fsync=%s",
                    sf->committed, sf->commits, sf->fsync ? "yes" : "no");
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
        } else {
            postern_init_error(init, key,
                               "unknown key (expected root, quarantine, "
                               "per_recipient, envelope or fsync)");
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

/* --- leftovers in tmp/ ------------------------------------------------------
 */

/* How old a file in tmp/ must be before it is taken for a leftover: the
 * 36 hours of the Maildir specification (and of qmail, Dovecot). A younger
 * file may be a delivery in progress in another process. */
#define SF_TMP_MAX_AGE (36.0 * 3600.0)

struct sf_cleanup {
    size_t maildirs, removed, failed;
    int err;          /* errno of the first failure */
    char *first_fail; /* path of the first failure */
};

static void
sf_cleanup_fail(struct sf_cleanup *c, const char *dir, const char *name,
                int err)
{
    if (c->failed++ == 0) {
        c->err = err;
        c->first_fail = sf_path(dir, name, NULL);
    }
}

/* Remove the regular files of maildir/tmp last modified before cutoff.
 * Entries are looked at through the directory's descriptor and never
 * followed: a symbolic link or a directory in tmp/ stays, and so does
 * everything when tmp/ itself is a symbolic link. */
static void
sf_clean_tmp(const char *maildir, time_t cutoff, struct sf_cleanup *c)
{
    char *tmp = sf_path(maildir, "tmp", NULL);
    int fd =
        tmp ? open(tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    struct dirent *e;

    if (d == NULL) {
        int err = errno;
        if (fd >= 0)
            close(fd);
        /* No tmp/ (not a maildir, or not made yet): nothing to clean. */
        if (tmp != NULL && err != ENOENT && err != ENOTDIR)
            sf_cleanup_fail(c, tmp, NULL, err);
        free(tmp);
        return;
    }
    c->maildirs++;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISREG(st.st_mode) || st.st_mtime >= cutoff)
            continue;
        if (unlinkat(fd, e->d_name, 0) == 0)
            c->removed++;
        else if (errno != ENOENT)
            sf_cleanup_fail(c, tmp, e->d_name, errno);
    }
    closedir(d);
    free(tmp);
}

/* The tmp/ of maildir, and of its quarantine folder when there is one. */
static void
sf_clean_maildir(const struct store_file *sf, const char *maildir,
                 time_t cutoff, struct sf_cleanup *c)
{
    sf_clean_tmp(maildir, cutoff, c);
    if (sf->quarantine_folder) {
        char *folder = sf_path(maildir, sf->quarantine_folder, NULL);
        if (folder != NULL)
            sf_clean_tmp(folder, cutoff, c);
        free(folder);
    }
}

/* The maildirs of one root: the root, or with per_recipient every maildir
 * under it. */
static void
sf_clean_root(const struct store_file *sf, const char *root, time_t cutoff,
              struct sf_cleanup *c)
{
    if (!sf->per_recipient) {
        sf_clean_maildir(sf, root, cutoff, c);
        return;
    }
    int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    struct dirent *e;
    if (d == NULL) {
        int err = errno;
        if (fd >= 0)
            close(fd);
        sf_cleanup_fail(c, root, NULL, err);
        return;
    }
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (e->d_name[0] == '.' ||
            fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISDIR(st.st_mode))
            continue;
        char *maildir = sf_path(root, e->d_name, NULL);
        if (maildir != NULL)
            sf_clean_maildir(sf, maildir, cutoff, c);
        free(maildir);
    }
    closedir(d);
}

/* At start: clean the tmp/ of the root maildir, or with per_recipient of
 * every maildir under the root, and of the quarantine maildirs. Runs in
 * create(), before the loop serves anyone; failures are logged, never
 * fatal. */
static void
sf_clean_leftovers(const struct store_file *sf)
{
    time_t cutoff = (time_t)(postern_now() - SF_TMP_MAX_AGE);
    struct sf_cleanup c = {0};

    sf_clean_root(sf, sf->root, cutoff, &c);
    if (sf->quarantine_root)
        sf_clean_root(sf, sf->quarantine_root, cutoff, &c);
    if (c.removed > 0)
        postern_log(NULL, POSTERN_LOG_INFO,
                    "removed leftover files older than 36 hours from tmp/ "
                    "removed=%zu maildirs=%zu root=%s",
                    c.removed, c.maildirs, postern_log_value(sf->root));
    if (c.failed > 0)
        postern_log(NULL, POSTERN_LOG_WARNING,
                    "cannot clean leftovers in tmp/ failed=%zu path=%s "
                    "error=%s",
                    c.failed,
                    postern_log_value(c.first_fail ? c.first_fail : sf->root),
                    postern_log_value(strerror(c.err)));
    free(c.first_fail);
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
    sf->queue_tail = &sf->queue;
    if (sf_config(init, sf) != 0) {
        sf_destroy(sf);
        return -1;
    }
    sf_host_name(sf->host, sizeof sf->host);

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
    }
    if (!sf->fsync)
        postern_log(NULL, POSTERN_LOG_WARNING,
                    "fsync disabled: a 250 reply no longer means "
                    "the message is on disk; for tests only");
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
