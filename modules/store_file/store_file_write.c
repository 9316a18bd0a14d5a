/*
 * store_file_write.c - the files of one delivery, on a pool thread.
 *
 * For each target maildir: the message, and its envelope written straight
 * into envelope/<name>.json. The message of a delivery to one maildir is
 * an unnamed file (O_TMPFILE in tmp/) where the file system allows it,
 * linked into new/ when it is delivered: no name is made in tmp/ and
 * renamed away again. Otherwise it is tmp/<name>, renamed into new/, and
 * the other maildirs of the delivery get a hard link to it (or a copy).
 *
 * Nobody reads envelope/ but through a message in new/, and a message
 * reaches new/ only after its envelope is complete (and, with fsync, on
 * disk: see store_file_commit.c), so the envelope needs no tmp/ step.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store_file.h"

#define SF_BUFFER_SIZE (64 * 1024)

/* Open path for a new file: it must not exist. */
static int
sf_create(const char *path, struct sf_error *e)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

    if (fd < 0)
        sf_fail(e, "open", path, errno);
    return fd;
}

/* Copy everything read_fn yields into fd. */
typedef ssize_t (*sf_read_fn)(void *src, void *buf, size_t len);

static int
sf_copy(struct sf_job *job, sf_read_fn read_fn, void *src, const char *what,
        int fd, const char *path)
{
    char *buf = malloc(SF_BUFFER_SIZE);

    if (buf == NULL)
        return sf_fail(&job->error, "copy to", path, ENOMEM);
    /* The buffer is filled before it is written: a message reads as its
     * Received: header and then its body, and one write of both saves a
     * system call per message. */
    size_t len = 0;
    bool eof = false;
    while (!eof) {
        ssize_t n = read_fn(src, buf + len, SF_BUFFER_SIZE - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            free(buf);
            return sf_fail(&job->error, "read", what, errno);
        }
        eof = n == 0;
        len += (size_t)n;
        if (len == 0 || (!eof && len < SF_BUFFER_SIZE))
            continue;
        if (sf_write_all(fd, buf, len) != 0) {
            free(buf);
            return sf_fail(&job->error, "write", path, errno);
        }
        len = 0;
    }
    free(buf);
    return 0;
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

/*
 * With the journal: read the message into job->copy, up to SF_INLINE_MAX,
 * and write it to fd in one go; job->copy_whole tells whether that was
 * all of it (else the rest is copied as usual and the journal reads the
 * file back). 0 or -1.
 */
static int
sf_write_inline(struct sf_job *job, int fd, const char *path, bool *whole)
{
    size_t cap = 16 * 1024, len = 0;
    char *buf = malloc(cap);

    *whole = false;
    if (buf == NULL)
        return sf_fail(&job->error, "copy to", path, ENOMEM);
    for (;;) {
        if (len == cap) {
            if (cap >= SF_INLINE_MAX)
                break; /* too big to keep: the rest streams */
            char *bigger = realloc(buf, cap * 2);
            if (bigger == NULL) {
                free(buf);
                return sf_fail(&job->error, "copy to", path, ENOMEM);
            }
            buf = bigger;
            cap *= 2;
        }
        ssize_t n = postern_message_read(job->reader, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            free(buf);
            return sf_fail(&job->error, "read", "message", errno);
        }
        if (n == 0) {
            *whole = true;
            break;
        }
        len += (size_t)n;
    }
    if (sf_write_all(fd, buf, len) != 0) {
        free(buf);
        return sf_fail(&job->error, "write", path, errno);
    }
    if (*whole) {
        job->copy = buf;
        job->copy_len = len;
        job->copy_whole = true;
    } else {
        free(buf);
    }
    return 0;
}

/* An unnamed file in t's tmp/, or -1 with errno. */
static int
sf_create_unnamed(const struct sf_target *t)
{
    char *tmp = sf_path(t->dir, "tmp", NULL);
    /* Read back for the journal, so not write-only. */
    int fd = tmp ? open(tmp, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600) : -1;
    int err = tmp ? errno : ENOMEM;

    free(tmp);
    errno = err;
    return fd;
}

/*
 * The message from the reader into the first target: an unnamed file kept
 * open in t->fd when the delivery has one target and unnamed files work,
 * else tmp/<name>. A file system that turns O_TMPFILE down (a quarantine
 * root elsewhere) gets the named file.
 */
static int
sf_write_message(struct sf_job *job, struct sf_target *t)
{
    int fd = -1;

    if (job->sf->unnamed_files && job->n_targets == 1) {
        fd = sf_create_unnamed(t);
        if (fd < 0 && errno != EOPNOTSUPP && errno != EISDIR &&
            errno != EINVAL) {
            char *tmp = sf_path(t->dir, "tmp", NULL);
            sf_fail(&job->error, "open", tmp ? tmp : t->dir, errno);
            free(tmp);
            return -1;
        }
    }
    if (fd >= 0) {
        t->fd = fd;
    } else {
        if ((fd = sf_create(t->tmp, &job->error)) < 0)
            return -1;
        t->tmp_made = true;
    }
    bool whole = false;
    if ((job->sf->journal_on &&
         sf_write_inline(job, fd, t->tmp, &whole) != 0) ||
        (!whole && sf_copy(job, sf_read_message, job->reader, "message", fd,
                           t->tmp) != 0)) {
        if (t->fd < 0)
            close(fd);
        return -1;
    }
    if (t->fd < 0 && close(fd) != 0)
        return sf_fail(&job->error, "close", t->tmp, errno);
    return 0;
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
    if (close(out) != 0)
        return sf_fail(&job->error, "close", t->tmp, errno);
    return 0;
}

/* The envelope, straight into envelope/ (see the top of this file). */
static int
sf_write_envelope(struct sf_job *job, struct sf_target *t)
{
    int fd = sf_create(t->env, &job->error);

    if (fd < 0)
        return -1;
    t->env_made = true;
    if (sf_write_all(fd, t->envelope, strlen(t->envelope)) != 0) {
        int err = errno;
        close(fd);
        return sf_fail(&job->error, "write", t->env, err);
    }
    if (close(fd) != 0)
        return sf_fail(&job->error, "close", t->env, errno);
    return 0;
}

/* Into new/, the moment the message becomes visible: the unnamed file
 * gets its name there, a named one is renamed from tmp/. */
static int
sf_deliver(struct sf_job *job, struct sf_target *t)
{
    if (t->fd >= 0) {
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", t->fd);
        if (linkat(AT_FDCWD, proc, AT_FDCWD, t->new, AT_SYMLINK_FOLLOW) != 0)
            return sf_fail(&job->error, "link", t->new, errno);
        close(t->fd);
        t->fd = -1;
    } else if (rename(t->tmp, t->new) != 0) {
        return sf_fail(&job->error, "rename", t->tmp, errno);
    }
    t->delivered = true;
    return 0;
}

/* Every target's new/ opens as a directory, so a delivery to several
 * maildirs fails before the first rename, not half way (as the commit
 * checks without the journal). One target needs no check: its rename
 * fails alone. */
static int
sf_new_dirs_open(struct sf_job *job)
{
    for (size_t i = 0; job->n_targets > 1 && i < job->n_targets; i++) {
        char *dir = sf_path(job->targets[i].dir, "new", NULL);
        int fd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
        int err = dir ? errno : ENOMEM;
        if (fd < 0) {
            sf_fail(&job->error, "open", dir ? dir : job->targets[i].dir, err);
            free(dir);
            return -1;
        }
        close(fd);
        free(dir);
    }
    return 0;
}

/*
 * The renames of a delivery whose files are written, in order. A failure
 * half way leaves the copies already in new/ there (see sf_undo) and the
 * client still gets 451: SMTP has one reply for all recipients of a DATA,
 * and 250 must mean every copy is stored. The retry then duplicates those
 * copies; a duplicate is the lesser harm, a lost or retracted message is
 * not an option. The loop stops at the first failure: every further
 * rename would only add a duplicate.
 */
int
sf_deliver_all(struct sf_job *job)
{
    for (size_t i = 0; i < job->n_targets; i++)
        if (sf_deliver(job, &job->targets[i]) != 0)
            return -1;
    return 0;
}

/*
 * Undo a failed delivery: the client retries, so leave nothing behind that
 * no reader has seen yet. Only files in tmp/ (an unnamed one goes away
 * when closed), and the envelopes of messages that never reached new/, are
 * removed. A copy already in new/ is never unlinked: a mail reader may
 * have seen (even fetched and moved) it, and taking it back would be worse
 * than the duplicate the retry makes. Its envelope stays with it, so every
 * message in new/ keeps its envelope.
 */
void
sf_undo(struct sf_job *job)
{
    for (size_t i = 0; i < job->n_targets; i++) {
        struct sf_target *t = &job->targets[i];
        if (t->fd >= 0) {
            close(t->fd);
            t->fd = -1;
        }
        if (t->delivered)
            continue;
        if (t->tmp_made)
            unlink(t->tmp);
        if (t->env_made)
            unlink(t->env);
    }
}

int
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
    /* With fsync but no journal, the commit delivers once all this is on
     * disk. With the journal, it goes to new/ now, after its record. */
    if (sf->fsync && !sf->journal_on)
        return 0;
    if (sf->journal_on &&
        (sf_new_dirs_open(job) != 0 || sf_journal_append(job) != 0))
        goto fail;
    if (sf_deliver_all(job) != 0)
        goto fail;
    return 0;
fail:
    sf_undo(job);
    return -1;
}
