/*
 * message_body.c - the replacement body of include/postern/message.h.
 *
 * A writer owns a 64 KiB block and, from the first full block on, an
 * anonymous file in the spool directory, both its own: it shares nothing
 * with the session, so any one thread may write, and the session may go
 * away meanwhile. Full blocks are written with pwrite on the writer's
 * thread (a pool thread, usually); the last, partial block stays in memory.
 * The commit, on the loop thread, hands file and block to a spool
 * (spool_adopt) without any I/O: readers find the tail in memory as they
 * do for a received message.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "postern/message.h"

#include "config.h"
#include "hook.h"
#include "message_content.h"
#include "smtp_session.h"
#include "spool.h"

struct postern_body_writer {
    char *dir;
    int fd; /* -1 until the first block is written */
    char *block;
    size_t filled;
    uint64_t flushed; /* bytes in the file */
    uint64_t limit;   /* most body bytes the size limit leaves */
    int error;        /* errno of the first failure; then it stays */
};

static void
writer_free(postern_body_writer *w)
{
    if (w->fd >= 0)
        close(w->fd);
    free(w->block);
    free(w->dir);
    free(w);
}

/* The message size limit less the header section as it is now, with the
 * empty line a replaced body always has before it. */
static uint64_t
body_limit(const struct session *s, const struct message_content *c)
{
    uint64_t max = s->cfg->limits.message_size;
    uint64_t headers = header_list_render_size(&c->headers, true) +
                       (c->sep_len ? c->sep_len : 2);
    return headers < max ? max - headers : 0;
}

postern_body_writer *
postern_body_replace(postern_ctx *ctx)
{
    struct session *s = hook_ctx_session(ctx);
    struct message_content *c;

    if (!s || !s->tx || postern_ctx_hook(ctx) != POSTERN_HOOK_MESSAGE ||
        !(c = message_content_get(s->tx)))
        return NULL;
    postern_body_writer *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->fd = -1;
    w->limit = body_limit(s, c);
    if (!(w->dir = strdup(s->cfg->spool_dir)) ||
        !(w->block = malloc(SPOOL_BLOCK_SIZE))) {
        writer_free(w);
        return NULL;
    }
    return w;
}

/* Write the full block to the file (made now if it is the first). */
static int
writer_flush(postern_body_writer *w)
{
    if (w->fd < 0 && (w->fd = spool_anonymous_file(w->dir)) < 0)
        return -1;
    if (spool_pwrite_all(w->fd, w->block, w->filled, w->flushed) < 0)
        return -1;
    w->flushed += w->filled;
    w->filled = 0;
    return 0;
}

int
postern_body_write(postern_body_writer *w, const void *buf, size_t len)
{
    const char *p = buf;

    if (!w || (!buf && len > 0)) {
        errno = EINVAL;
        return -1;
    }
    if (w->error) {
        errno = w->error;
        return -1;
    }
    if (len > w->limit - (w->flushed + w->filled)) {
        errno = w->error = EFBIG;
        return -1;
    }
    while (len > 0) {
        if (w->filled == SPOOL_BLOCK_SIZE && writer_flush(w) < 0) {
            w->error = errno ? errno : EIO;
            errno = w->error;
            return -1;
        }
        size_t n = SPOOL_BLOCK_SIZE - w->filled;
        if (n > len)
            n = len;
        memcpy(w->block + w->filled, p, n);
        w->filled += n;
        p += n;
        len -= n;
    }
    return 0;
}

int
postern_body_commit(postern_ctx *ctx, postern_body_writer *w)
{
    struct session *s = hook_ctx_session(ctx);
    struct message_content *c = NULL;
    int error = EINVAL;

    if (!w)
        goto out;
    if (w->error)
        error = w->error;
    else if (s && s->tx && postern_ctx_hook(ctx) == POSTERN_HOOK_MESSAGE)
        c = message_content_get(s->tx);
    if (!c)
        goto out;
    uint64_t size = w->flushed + w->filled;
    if (size > body_limit(s, c)) {
        /* headers grew since the writer began */
        error = EFBIG;
        goto out;
    }
    struct spool *sp =
        spool_adopt(w->dir, w->fd, w->flushed, w->block, w->filled);
    if (!sp) {
        error = ENOMEM;
        goto out;
    }
    w->fd = -1;
    w->block = NULL;
    writer_free(w);
    message_content_set_body(c, sp, size);
    return 0;
out:
    if (w)
        writer_free(w);
    errno = error;
    return -1;
}

void
postern_body_abort(postern_body_writer *w)
{
    if (w)
        writer_free(w);
}
