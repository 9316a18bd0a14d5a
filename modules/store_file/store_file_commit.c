/*
 * store_file_commit.c - group commit: the durability points shared by
 * every delivery written while the previous commit ran (see
 * sf_commit_queue() in store_file.c), on a pool thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "store_file.h"

/* The new/ directories of a commit, each opened once: their file system
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
sf_dirs_fail_jobs(const struct sf_dirs *d, struct sf_job *jobs, const char *op,
                  bool only_delivered)
{
    for (struct sf_job *j = jobs; j != NULL; j = j->next)
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
        if (t->fd >= 0 ? fdatasync(t->fd) != 0
                       : sf_sync_path(t->tmp, false) != 0)
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
 * The first durability point of a commit: every file written (an unnamed
 * one too) and every envelope is on disk. syncfs(2) once per file system:
 * "sync() or syncfs() provide the same guarantees as fsync() called on every
 * file in the system or filesystem respectively", and it costs one journal
 * commit and one cache flush, where an fdatasync per file costs a cache flush
 * each. Where syncfs() is missing, the files one by one.
 */
static void
sf_sync_written(struct sf_dirs *d, struct sf_job *jobs)
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
    sf_dirs_fail_jobs(d, jobs, "syncfs", false);
    for (struct sf_job *j = jobs; fallback && j != NULL; j = j->next)
        sf_sync_each_file(j);
}

/*
 * The durability points of deliveries whose files are all written and
 * whose envelopes are in envelope/:
 *
 *   1. syncfs() the file system of the maildirs: every message file and
 *      envelope, data and names, is on disk;
 *   2. link or rename every message into new/, fsync each new/ once.
 *
 * So a message is complete on disk before its name appears in new/, its
 * envelope is on disk before that, and every message of the commit is in
 * new/ on disk before any of their 250s. A delivery failing at any step is
 * undone (sf_undo) without holding up the others.
 */
void
sf_commit(struct sf_job *jobs)
{
    struct sf_dirs dirs = {0};

    for (struct sf_job *j = jobs; j != NULL; j = j->next)
        for (size_t i = 0; j->error.err == 0 && i < j->n_targets; i++) {
            int err = sf_dirs_add(&dirs, j->targets[i].dir);
            if (err != 0)
                sf_fail(&j->error, "open", j->targets[i].dir, err);
        }
    sf_dirs_fail_jobs(&dirs, jobs, "open", false);
    sf_sync_written(&dirs, jobs);
    for (struct sf_job *j = jobs; j != NULL; j = j->next)
        if (j->error.err == 0)
            (void)sf_deliver_all(j);
    for (size_t i = 0; i < dirs.n; i++)
        if (dirs.errs[i] == 0 && fsync(dirs.fds[i]) != 0)
            dirs.errs[i] = errno;
    sf_dirs_fail_jobs(&dirs, jobs, "fsync", true);
    sf_dirs_free(&dirs);
    for (struct sf_job *j = jobs; j != NULL; j = j->next)
        if (j->error.err != 0)
            sf_undo(j);
}
