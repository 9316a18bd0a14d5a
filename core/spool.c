/*
 * spool.c - anonymous spool files written in blocks by the pool (see
 * spool.h). The loop thread owns every field except while a job is in
 * flight (busy): then the job's fields and fd belong to the pool thread,
 * and the pool's queue hands them back before the job's done runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "postern/services.h"

#include "metrics.h"
#include "pool.h"
#include "spool.h"

#define SPOOL_BLOCK SPOOL_BLOCK_SIZE
#define SPOOL_SPARES 64                 /* recycled files kept */
#define SPOOL_RECYCLE_MAX (1024 * 1024) /* bigger files are not kept */

struct spool {
    int fd; /* -1 until the first job created the file */
    char *dir;
    atomic_uint refs;
    int error;
    uint64_t high_water; /* largest size the file has had */
    uint64_t size;       /* bytes accepted by spool_write */
    uint64_t flushed;    /* bytes handed to block writes */
    char *fill;          /* the block being filled on the loop */
    size_t filled;
    char *other;   /* the second block: being written while busy */
    bool busy;     /* a job is in flight */
    bool released; /* the transaction let go (spool_free) */
    bool finishing;
    spool_wake_fn wake;
    void *wake_arg;
    /* the job in flight (busy) */
    const char *job_buf;
    size_t job_len;
    uint64_t job_off;
    int job_error;
};

int
spool_prepare_dir(const char *dir)
{
    char path[PATH_MAX];
    size_t len = strlen(dir);

    if (len == 0 || len >= sizeof(path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(path, dir, len + 1);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return -1;
    struct stat st;
    if (stat(path, &st) != 0)
        return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

int
spool_anonymous_file(const char *dir)
{
    int fd;
#ifdef O_TMPFILE
    fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
#endif
    char path[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/spool.XXXXXX", dir) >=
        (int)sizeof(path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0)
        return -1;
    unlink(path);
    return fd;
}

int
spool_check_dir(const char *dir)
{
    int fd = spool_anonymous_file(dir);
    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

/* Recycled spool files, touched only on the loop thread. */
static struct spool *spares[SPOOL_SPARES];
static size_t n_spares;

struct spool *
spool_open(const char *dir)
{
    struct spool *sp;

    if (n_spares > 0) {
        sp = spares[--n_spares];
    } else {
        sp = calloc(1, sizeof(*sp));
        if (!sp || !(sp->dir = strdup(dir)) ||
            !(sp->fill = malloc(SPOOL_BLOCK))) {
            if (sp)
                free(sp->dir);
            free(sp);
            return NULL;
        }
        sp->fd = -1;
    }
    atomic_init(&sp->refs, 1);
    sp->error = 0;
    sp->size = sp->flushed = 0;
    sp->filled = 0;
    sp->finishing = false;
    sp->released = false;
    sp->wake = NULL;
    sp->wake_arg = NULL;
    metrics_spool(1, 0);
    return sp;
}

struct spool *
spool_adopt(const char *dir, int fd, uint64_t flushed, char *block,
            size_t filled)
{
    struct spool *sp = calloc(1, sizeof(*sp));
    if (!sp || !(sp->dir = strdup(dir))) {
        free(sp);
        return NULL;
    }
    atomic_init(&sp->refs, 1);
    sp->fd = fd;
    sp->fill = block;
    sp->filled = filled;
    sp->flushed = flushed;
    sp->size = flushed + filled;
    metrics_spool(1, (int64_t)sp->size);
    return sp;
}

/* --- the job: create the file if needed, then write one block --- */

int
spool_pwrite_all(int fd, const char *buf, size_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t n = pwrite(fd, buf, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

static void
spool_job_work(void *arg)
{
    struct spool *sp = arg;
    const char *buf = sp->job_buf;
    size_t len = sp->job_len;
    uint64_t off = sp->job_off;

    if (sp->fd < 0 && (sp->fd = spool_anonymous_file(sp->dir)) < 0) {
        sp->job_error = errno;
        return;
    }
    if (spool_pwrite_all(sp->fd, buf, len, off) < 0)
        sp->job_error = errno;
}

static void spool_submit(struct spool *sp);

/* The job is over (loop thread). wake: tell the owner (false when the job
 * ran inline, inside a call of the owner's). */
static void
spool_job_complete(struct spool *sp, bool wake)
{
    sp->busy = false;
    if (sp->job_error && !sp->error)
        sp->error = sp->job_error;
    if (!sp->error && !sp->released && !sp->finishing &&
        sp->filled == SPOOL_BLOCK) {
        spool_submit(sp); /* the next block is ready */
        return;
    }
    if (sp->busy)
        return;
    sp->finishing = false;
    if (wake && sp->wake)
        sp->wake(sp->wake_arg);
}

static void
spool_job_done(void *arg)
{
    struct spool *sp = arg;

    if (sp->released) {
        /* The transaction let go meanwhile: nobody to wake or feed. */
        spool_job_complete(sp, false);
        spool_unref(sp);
        return;
    }
    /* Drop the job's reference first: the owner may free the spool from
     * the wake callback, and then it must be the last reference, so the
     * file is recycled rather than closed. */
    atomic_fetch_sub(&sp->refs, 1);
    spool_job_complete(sp, true);
}

/* Hand the filled block (maybe empty: create only) to the pool. */
static void
spool_submit(struct spool *sp)
{
    if (sp->filled > 0 && !sp->other && !(sp->other = malloc(SPOOL_BLOCK))) {
        sp->error = ENOMEM;
        return;
    }
    char *full = sp->fill;
    sp->job_buf = full;
    sp->job_len = sp->filled;
    sp->job_off = sp->flushed;
    sp->job_error = 0;
    sp->flushed += sp->filled;
    if (sp->filled > 0) {
        sp->fill = sp->other;
        sp->other = full;
    }
    sp->filled = 0;
    sp->busy = true;
    spool_ref(sp);
    if (pool_submit_core(spool_job_work, spool_job_done, sp) == 0)
        return;
    /* No pool (tests, start-up) or it is full: do it here. */
    spool_job_work(sp);
    spool_job_complete(sp, false);
    atomic_fetch_sub(&sp->refs, 1); /* the caller still holds one */
}

int
spool_create(struct spool *sp, spool_wake_fn wake, void *arg)
{
    if (sp->fd >= 0 || sp->error)
        return 1;
    spool_on_wake(sp, wake, arg);
    if (!sp->busy)
        spool_submit(sp);
    return sp->busy ? 0 : 1;
}

size_t
spool_room(const struct spool *sp)
{
    if (sp->error)
        return SIZE_MAX; /* bytes are only counted now */
    return (SPOOL_BLOCK - sp->filled) + (sp->busy ? 0 : SPOOL_BLOCK);
}

void
spool_on_wake(struct spool *sp, spool_wake_fn wake, void *arg)
{
    sp->wake = wake;
    sp->wake_arg = arg;
}

int
spool_write(struct spool *sp, const char *buf, size_t len)
{
    if (sp->error)
        return -1;
    sp->size += len;
    metrics_spool(0, (int64_t)len);
    while (len > 0) {
        if (sp->filled == SPOOL_BLOCK) {
            if (sp->busy) { /* more than spool_room() allowed */
                sp->error = ENOBUFS;
                return -1;
            }
            spool_submit(sp);
            if (sp->error)
                return -1;
        }
        size_t n = SPOOL_BLOCK - sp->filled;
        if (n > len)
            n = len;
        memcpy(sp->fill + sp->filled, buf, n);
        sp->filled += n;
        buf += n;
        len -= n;
    }
    /* A full block goes now if it can; else when the job is done. */
    if (sp->filled == SPOOL_BLOCK && !sp->busy)
        spool_submit(sp);
    return sp->error ? -1 : 0;
}

int
spool_finish(struct spool *sp, spool_wake_fn wake, void *arg)
{
    /* The last, partial block stays in memory: readers get it from
     * there, so a message under 64 KiB never touches the disk here. */
    spool_on_wake(sp, wake, arg);
    if (!sp->busy)
        return 1;
    sp->finishing = true; /* wake follows when the block write is done */
    return 0;
}

ssize_t
spool_pread(const struct spool *sp, void *buf, size_t len, uint64_t off)
{
    if (off >= sp->size)
        return 0;
    if (len > sp->size - off)
        len = (size_t)(sp->size - off);
    if (off >= sp->flushed) { /* the block still in memory */
        memcpy(buf, sp->fill + (off - sp->flushed), len);
        return (ssize_t)len;
    }
    if (len > sp->flushed - off)
        len = (size_t)(sp->flushed - off);
    for (;;) {
        ssize_t n = pread(sp->fd, buf, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0) {
            errno = EIO; /* the file is shorter than what was written */
            return -1;
        }
        return n;
    }
}

int
spool_fd(const struct spool *sp)
{
    return sp->fd;
}

uint64_t
spool_size(const struct spool *sp)
{
    return sp->size;
}

int
spool_error(const struct spool *sp)
{
    return sp->error;
}

static void
spool_destroy(struct spool *sp)
{
    if (sp->fd >= 0)
        close(sp->fd);
    free(sp->fill);
    free(sp->other);
    free(sp->dir);
    free(sp);
}

void
spool_ref(struct spool *sp)
{
    atomic_fetch_add(&sp->refs, 1);
}

void
spool_unref(struct spool *sp)
{
    /* The last reader of a spool its transaction already let go. */
    if (atomic_fetch_sub(&sp->refs, 1) == 1)
        spool_destroy(sp);
}

void
spool_free(struct spool *sp)
{
    if (!sp)
        return;
    sp->wake = NULL;
    sp->finishing = false;
    sp->released = true;
    metrics_spool(-1, -(int64_t)sp->size);
    if (sp->size > sp->high_water)
        sp->high_water = sp->size;
    if (atomic_fetch_sub(&sp->refs, 1) != 1)
        return; /* a reader or a job still has it; the last one destroys it */
    if (sp->error || sp->high_water > SPOOL_RECYCLE_MAX ||
        n_spares == SPOOL_SPARES) {
        spool_destroy(sp);
        return;
    }
    spares[n_spares++] = sp;
}

void
spool_spares_free(void)
{
    while (n_spares > 0)
        spool_destroy(spares[--n_spares]);
}
