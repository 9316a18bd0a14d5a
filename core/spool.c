/*
 * spool.c - anonymous spool files with a write buffer (see spool.h).
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

#include "spool.h"

#define SPOOL_BUFFER (64 * 1024)
#define SPOOL_SPARES 64                 /* recycled files kept */
#define SPOOL_RECYCLE_MAX (1024 * 1024) /* bigger files are not kept */

struct spool {
    int fd;
    atomic_uint refs;
    int error;
    uint64_t high_water; /* largest size the file has had */
    uint64_t size;       /* bytes accepted by spool_write */
    size_t buffered;
    char buf[SPOOL_BUFFER];
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

static int
spool_create_anonymous(const char *dir)
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

/* Recycled spool files, touched only on the loop thread. */
static struct spool *spares[SPOOL_SPARES];
static size_t n_spares;

struct spool *
spool_open(const char *dir)
{
    struct spool *sp;

    if (n_spares > 0) {
        sp = spares[--n_spares];
        if (lseek(sp->fd, 0, SEEK_SET) != 0) {
            close(sp->fd);
            free(sp);
            return spool_open(dir);
        }
    } else {
        sp = malloc(sizeof(*sp));
        if (!sp)
            return NULL;
        sp->fd = spool_create_anonymous(dir);
        if (sp->fd < 0) {
            free(sp);
            return NULL;
        }
        sp->high_water = 0;
    }
    atomic_init(&sp->refs, 1);
    sp->error = 0;
    sp->size = 0;
    sp->buffered = 0;
    return sp;
}

static int
spool_write_fully(struct spool *sp, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(sp->fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            sp->error = errno;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

int
spool_write(struct spool *sp, const char *buf, size_t len)
{
    if (sp->error)
        return -1;
    sp->size += len;
    if (sp->buffered + len <= SPOOL_BUFFER) {
        memcpy(sp->buf + sp->buffered, buf, len);
        sp->buffered += len;
        return 0;
    }
    if (sp->buffered > 0 && spool_write_fully(sp, sp->buf, sp->buffered) < 0)
        return -1;
    sp->buffered = 0;
    if (len >= SPOOL_BUFFER)
        return spool_write_fully(sp, buf, len); /* large run: no copy */
    memcpy(sp->buf, buf, len);
    sp->buffered = len;
    return 0;
}

int
spool_finish(struct spool *sp)
{
    if (sp->error)
        return -1;
    if (sp->buffered > 0 && spool_write_fully(sp, sp->buf, sp->buffered) < 0)
        return -1;
    sp->buffered = 0;
    return 0;
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
    close(sp->fd);
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
    if (sp->size > sp->high_water)
        sp->high_water = sp->size;
    if (atomic_fetch_sub(&sp->refs, 1) != 1)
        return; /* a reader still has it; the reader destroys it */
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
