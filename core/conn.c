/*
 * conn.c - the transport of one connection (see conn.h): non-blocking
 * reads into a fixed buffer, buffered writes flushed in one call, the idle
 * timer, and the TLS record layer once a handshake is done. The handshake
 * itself is driven from here too, because it shares the same watchers.
 *
 * Buffers (see conn.h): one shared input buffer, lent to a connection for
 * the length of its read callback, and one shared output buffer, lent
 * from a conn_write() until the output is sent. The loop is
 * single-threaded and one process runs one loop, so a loan needs no lock.
 * Output that cannot be sent at once moves to a buffer of the connection's
 * own; a connection that writes while the output loan is out gets its own.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "metrics.h"

#define CONN_OUT_INITIAL 4096
#define CONN_OUT_SHARED (16 * 1024)
#define CONN_OUT_MAX (4u << 20) /* a client that never reads gets cut off */
#define CONN_SPARE_INPUTS 4     /* own input buffers kept for reuse, at most */

static struct {
    char *buf;
    size_t cap;
} shared_in; /* lent during conn_on_readable only */

static struct {
    char *buf;
    struct conn *holder; /* NULL: free */
} shared_out;

/* Own input buffers given back, for the next one who needs one: a session
 * gets one per message (conn_keep_input), and malloc/free of 32 KiB each
 * time showed in the profile. Bounded, whatever the connection count. */
static struct {
    char *buf[CONN_SPARE_INPUTS];
    unsigned n;
    size_t cap;
} spare_in;

static unsigned open_conns;   /* the shared buffers go with the last one */
static bool in_read_callback; /* bytes in shared_in may still be in use */

#define container_of(ptr, type, member)                                        \
    ((type *)((char *)(ptr)-offsetof(type, member)))

static void conn_on_readable(struct ev_loop *loop, ev_io *w, int revents);
static void conn_on_writable(struct ev_loop *loop, ev_io *w, int revents);
static void conn_on_idle(struct ev_loop *loop, ev_timer *w, int revents);
static void conn_tls_handshake_step(struct conn *c);

/* --- buffers --- */

static bool
conn_input_shared(const struct conn *c)
{
    return c->in && c->in == shared_in.buf;
}

static char *
conn_input_alloc(size_t cap)
{
    if (spare_in.n > 0 && spare_in.cap == cap)
        return spare_in.buf[--spare_in.n];
    return malloc(cap);
}

/* Give the input buffer back, whatever it holds. */
static void
conn_input_release(struct conn *c)
{
    if (c->in && !conn_input_shared(c)) {
        if (spare_in.n == 0)
            spare_in.cap = c->in_cap;
        if (spare_in.n < CONN_SPARE_INPUTS && spare_in.cap == c->in_cap)
            spare_in.buf[spare_in.n++] = c->in;
        else
            free(c->in);
    }
    c->in = NULL;
    c->in_start = c->in_end = 0;
}

/* A buffer to read into, for a connection that has none: its own while it
 * keeps one, else the shared one. */
static int
conn_input_take(struct conn *c)
{
    if (c->keep_in) {
        c->in = conn_input_alloc(c->in_cap);
        return c->in ? 0 : -1;
    }
    if (shared_in.cap < c->in_cap) {
        /* Not lent now: loans end with the read callback. */
        free(shared_in.buf);
        shared_in.cap = 0;
        if (!(shared_in.buf = malloc(c->in_cap)))
            return -1;
        shared_in.cap = c->in_cap;
    }
    c->in = shared_in.buf;
    return 0;
}

/* The read callback is over: unconsumed bytes move from the shared buffer
 * to one of the connection's own. -1: no memory for them. */
static int
conn_input_settle(struct conn *c)
{
    if (!conn_input_shared(c))
        return 0;
    size_t left = c->in_end - c->in_start;
    char *own = left > 0 ? conn_input_alloc(c->in_cap) : NULL;
    if (own)
        memcpy(own, c->in + c->in_start, left);
    c->in = own;
    c->in_start = 0;
    c->in_end = own ? left : 0;
    return own || left == 0 ? 0 : -1;
}

/* An own input buffer that holds nothing is freed, unless kept. */
static void
conn_input_trim(struct conn *c)
{
    if (c->in && !conn_input_shared(c) && !c->keep_in &&
        c->in_start == c->in_end)
        conn_input_release(c);
}

static void
conn_output_release(struct conn *c)
{
    if (shared_out.holder == c)
        shared_out.holder = NULL;
    else
        free(c->out);
    c->out = NULL;
    c->out_start = c->out_end = c->out_cap = 0;
}

/* Queued output moves from the shared buffer to one of the connection's
 * own, of at least cap bytes. */
static int
conn_output_own(struct conn *c, size_t cap)
{
    size_t used = c->out_end - c->out_start;
    if (cap < CONN_OUT_INITIAL)
        cap = CONN_OUT_INITIAL;
    char *own = malloc(cap);
    if (!own)
        return -1;
    memcpy(own, c->out + c->out_start, used);
    shared_out.holder = NULL;
    c->out = own;
    c->out_start = 0;
    c->out_end = used;
    c->out_cap = cap;
    return 0;
}

/* An output buffer for a connection that has none: the shared one unless
 * another connection's output waits in it. */
static int
conn_output_take(struct conn *c)
{
    struct conn *holder = shared_out.holder;

    if (holder && holder->out_start == holder->out_end) {
        conn_output_release(holder); /* lent, but nothing waits in it */
        holder = NULL;
    }
    if (!holder && !shared_out.buf)
        shared_out.buf = malloc(CONN_OUT_SHARED);
    if (!holder && shared_out.buf) {
        shared_out.holder = c;
        c->out = shared_out.buf;
        c->out_cap = CONN_OUT_SHARED;
    } else if ((c->out = malloc(CONN_OUT_INITIAL))) {
        c->out_cap = CONN_OUT_INITIAL;
    } else {
        return -1;
    }
    c->out_start = c->out_end = 0;
    return 0;
}

/* No connection left: the shared buffers go too, unless the callback of
 * the last one still runs (its command line may point into shared_in). */
static void
conn_shared_free(void)
{
    if (open_conns > 0 || in_read_callback)
        return;
    free(shared_in.buf);
    shared_in.buf = NULL;
    shared_in.cap = 0;
    free(shared_out.buf);
    shared_out.buf = NULL;
    while (spare_in.n > 0)
        free(spare_in.buf[--spare_in.n]);
}

void
conn_keep_input(struct conn *c, bool keep)
{
    /* No trim here: the owner may still use a line it took from c->in. */
    c->keep_in = keep;
}

void
conn_trim(struct conn *c)
{
    conn_input_trim(c);
    if (c->out && c->out_start == c->out_end)
        conn_output_release(c);
}

/* --- life cycle --- */

int
conn_init(struct conn *c, struct ev_loop *loop, int fd, size_t in_cap,
          const struct sockaddr *peer, socklen_t peer_len,
          const struct conn_callbacks *cb, void *owner)
{
    memset(c, 0, sizeof(*c));
    c->fd = fd;
    c->loop = loop;
    c->cb = cb;
    c->owner = owner;
    c->in_cap = in_cap; /* buffers come with the first bytes */
    open_conns++;
    if (peer && peer_len <= sizeof(c->peer)) {
        memcpy(&c->peer, peer, peer_len);
        c->peer_len = peer_len;
    } else {
        c->peer_len = sizeof(c->peer);
        if (getpeername(fd, (struct sockaddr *)&c->peer, &c->peer_len) != 0)
            c->peer_len = 0;
    }
    c->local_len = sizeof(c->local);
    if (getsockname(fd, (struct sockaddr *)&c->local, &c->local_len) != 0)
        c->local_len = 0;
    ev_io_init(&c->rw, conn_on_readable, fd, EV_READ);
    ev_io_init(&c->ww, conn_on_writable, fd, EV_WRITE);
    ev_init(&c->idle, conn_on_idle);
    return 0;
}

void
conn_close(struct conn *c)
{
    if (c->fd < 0)
        return;
    ev_io_stop(c->loop, &c->rw);
    ev_io_stop(c->loop, &c->ww);
    ev_timer_stop(c->loop, &c->idle);
    if (c->tls) {
        if (c->tls_active && !c->failed)
            gnutls_bye(c->tls, GNUTLS_SHUT_WR); /* best effort, no wait */
        gnutls_deinit(c->tls);
        c->tls = NULL;
    }
    close(c->fd);
    c->fd = -1;
    conn_input_release(c);
    conn_output_release(c);
    open_conns--;
    conn_shared_free();
}

static void
conn_update_read_watcher(struct conn *c)
{
    bool want = c->reading && !c->eof && !c->failed && c->fd >= 0;
    if (want && !ev_is_active(&c->rw))
        ev_io_start(c->loop, &c->rw);
    else if (!want && ev_is_active(&c->rw))
        ev_io_stop(c->loop, &c->rw);
}

void
conn_set_reading(struct conn *c, bool on)
{
    c->reading = on;
    conn_update_read_watcher(c);
    /* TLS may hold decrypted bytes the socket will never signal again. */
    if (on && c->tls_active && gnutls_record_check_pending(c->tls) > 0)
        ev_feed_event(c->loop, &c->rw, EV_READ);
}

void
conn_touch(struct conn *c, double timeout)
{
    c->idle.repeat = timeout;
    ev_timer_again(c->loop, &c->idle);
}

void
conn_discard_input(struct conn *c)
{
    c->in_start = c->in_end = 0; /* the buffer goes after the callback */
}

static void
conn_fail(struct conn *c)
{
    if (c->failed)
        return;
    c->failed = true;
    conn_update_read_watcher(c);
    ev_io_stop(c->loop, &c->ww);
    c->cb->on_error(c, c->owner);
}

static ssize_t
conn_recv(struct conn *c, char *buf, size_t len)
{
    if (c->tls_active) {
        ssize_t n = gnutls_record_recv(c->tls, buf, len);
        if (n >= 0)
            return n;
        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
            errno = EAGAIN;
            return -1;
        }
        if (n == GNUTLS_E_PREMATURE_TERMINATION)
            return 0; /* peer closed without close_notify: treat as EOF */
        if (n == GNUTLS_E_REHANDSHAKE) {
            errno = EPROTO; /* no renegotiation: the client would wait */
            return -1;
        }
        if (!gnutls_error_is_fatal((int)n)) {
            errno = EAGAIN; /* e.g. a warning alert: wait for more */
            return -1;
        }
        errno = EIO;
        return -1;
    }
    for (;;) {
        ssize_t n = recv(c->fd, buf, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        return n;
    }
}

static void
conn_on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    struct conn *c = container_of(w, struct conn, rw);

    if (c->tls_handshaking) {
        conn_tls_handshake_step(c);
        return;
    }
    if (!c->in && conn_input_take(c) < 0) {
        conn_fail(c); /* no memory to read into */
        return;
    }
    /* Make room at the end: move the unconsumed tail to the front. */
    if (c->in_start > 0) {
        memmove(c->in, c->in + c->in_start, c->in_end - c->in_start);
        c->in_end -= c->in_start;
        c->in_start = 0;
    }
    if (c->in_end == c->in_cap) {
        /* The owner cannot consume what it has; stop until it can. */
        ev_io_stop(loop, &c->rw);
        return;
    }
    ssize_t n = conn_recv(c, c->in + c->in_end, c->in_cap - c->in_end);
    if (n <= 0) {
        int err = errno;
        /* Nothing new: a shared loan ends (empty), an own buffer stays. */
        conn_input_settle(c);
        conn_input_trim(c);
        if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK))
            return;
        if (n < 0) {
            conn_fail(c);
            return;
        }
        /* The peer may only have shut its sending side: replies to what
         * it already sent can still go out. */
        c->eof = true;
        conn_update_read_watcher(c);
        c->cb->on_error(c, c->owner);
        return;
    }
    c->in_end += (size_t)n;
    metrics_received((uint64_t)n);
    in_read_callback = true;
    c->cb->on_input(c, c->owner);
    in_read_callback = false;
    /* c stays valid: owners free connections only after callbacks. */
    if (c->fd < 0) {
        conn_shared_free(); /* closed: conn_close() gave the buffers back */
        return;
    }
    if (conn_input_settle(c) < 0) {
        conn_fail(c); /* unread bytes would be lost */
        return;
    }
    conn_input_trim(c);
    if (c->reading && !c->failed && c->tls_active &&
        gnutls_record_check_pending(c->tls) > 0)
        ev_feed_event(loop, &c->rw, EV_READ);
}

int
conn_write(struct conn *c, const char *buf, size_t len)
{
    if (c->fd < 0)
        return -1;
    if (!c->out && conn_output_take(c) < 0)
        return -1;
    if (c->out_start > 0 && c->out_start == c->out_end)
        c->out_start = c->out_end = 0;
    if (c->out_end + len > c->out_cap) {
        size_t used = c->out_end - c->out_start;
        if (c->out_start > 0) {
            memmove(c->out, c->out + c->out_start, used);
            c->out_start = 0;
            c->out_end = used;
        }
        if (used + len > c->out_cap) {
            size_t cap = c->out_cap;
            while (cap < used + len)
                cap *= 2;
            if (cap > CONN_OUT_MAX)
                return -1;
            if (shared_out.holder == c) {
                if (conn_output_own(c, cap) < 0)
                    return -1;
            } else {
                char *grown = realloc(c->out, cap);
                if (!grown)
                    return -1;
                c->out = grown;
                c->out_cap = cap;
            }
        }
    }
    memcpy(c->out + c->out_end, buf, len);
    c->out_end += len;
    return 0;
}

size_t
conn_pending_output(const struct conn *c)
{
    return c->out_end - c->out_start;
}

static ssize_t
conn_send(struct conn *c, const char *buf, size_t len)
{
    if (c->tls_active) {
        ssize_t n = gnutls_record_send(c->tls, buf, len);
        if (n >= 0)
            return n;
        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
            errno = EAGAIN;
            return -1;
        }
        errno = EIO;
        return -1;
    }
    for (;;) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        return n;
    }
}

int
conn_flush(struct conn *c)
{
    if (c->fd < 0 || c->failed)
        return -1;
    if (c->tls_handshaking)
        return 0; /* the handshake owns the watchers; nothing is queued */
    while (c->out_start < c->out_end) {
        ssize_t n =
            conn_send(c, c->out + c->out_start, c->out_end - c->out_start);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                /* Stuck: the shared buffer does not wait with it (without
                 * memory it does, and other writers take their own). */
                if (shared_out.holder == c)
                    conn_output_own(c, c->out_end - c->out_start);
                if (!ev_is_active(&c->ww))
                    ev_io_start(c->loop, &c->ww);
                return 0;
            }
            /* Report from the loop, not from inside the caller. */
            ev_feed_event(c->loop, &c->ww, EV_WRITE);
            return -1;
        }
        c->out_start += (size_t)n;
    }
    if (c->out)
        conn_output_release(c); /* all sent: no buffer while idle */
    if (ev_is_active(&c->ww))
        ev_io_stop(c->loop, &c->ww);
    return 0;
}

static void
conn_on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    struct conn *c = container_of(w, struct conn, ww);

    if (c->tls_handshaking) {
        conn_tls_handshake_step(c);
        return;
    }
    if (c->failed || conn_flush(c) < 0) {
        ev_io_stop(loop, &c->ww);
        conn_fail(c);
        return;
    }
    if (conn_pending_output(c) == 0)
        c->cb->on_drained(c, c->owner);
}

static void
conn_on_idle(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct conn *c = container_of(w, struct conn, idle);
    ev_timer_stop(loop, w);
    c->cb->on_timeout(c, c->owner);
}

/* --- TLS handshake (the session object comes from tls.c) --- */

static void
conn_tls_handshake_step(struct conn *c)
{
    int rc = gnutls_handshake(c->tls);

    if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) {
        bool want_write = gnutls_record_get_direction(c->tls) == 1;
        ev_io_stop(c->loop, &c->rw);
        ev_io_stop(c->loop, &c->ww);
        ev_io_start(c->loop, want_write ? &c->ww : &c->rw);
        return;
    }
    if (rc < 0 && !gnutls_error_is_fatal(rc)) {
        ev_io_stop(c->loop, &c->ww);
        ev_io_start(c->loop, &c->rw); /* e.g. a warning alert: go on */
        return;
    }
    c->tls_handshaking = false;
    ev_io_stop(c->loop, &c->ww);
    ev_io_stop(c->loop, &c->rw);
    if (rc == 0) {
        c->tls_active = true;
        metrics_tls_session((int)gnutls_protocol_get_version(c->tls));
    } else
        c->failed = true; /* no plaintext fallback after a failed TLS */
    conn_update_read_watcher(c);
    c->cb->on_tls_ready(c, c->owner, rc == 0);
}

void
conn_start_tls(struct conn *c, gnutls_session_t tls)
{
    c->tls = tls;
    c->tls_handshaking = true;
    c->in_start = c->in_end = 0; /* no plaintext survives STARTTLS */
    gnutls_transport_set_int(tls, c->fd);
    conn_tls_handshake_step(c);
}
