/*
 * conn.c - the transport of one connection (see conn.h): non-blocking
 * reads into a fixed buffer, buffered writes flushed in one call, the idle
 * timer, and the TLS record layer once a handshake is done. The handshake
 * itself is driven from here too, because it shares the same watchers.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"

#define CONN_OUT_INITIAL 4096
#define CONN_OUT_MAX (4u << 20) /* a client that never reads gets cut off */

#define container_of(ptr, type, member)                                        \
    ((type *)((char *)(ptr)-offsetof(type, member)))

static void conn_on_readable(struct ev_loop *loop, ev_io *w, int revents);
static void conn_on_writable(struct ev_loop *loop, ev_io *w, int revents);
static void conn_on_idle(struct ev_loop *loop, ev_timer *w, int revents);
static void conn_tls_handshake_step(struct conn *c);

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
    c->in = malloc(in_cap);
    c->out = malloc(CONN_OUT_INITIAL);
    if (!c->in || !c->out) {
        free(c->in);
        free(c->out);
        c->in = c->out = NULL;
        return -1;
    }
    c->in_cap = in_cap;
    c->out_cap = CONN_OUT_INITIAL;
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
    free(c->in);
    free(c->out);
    c->in = c->out = NULL;
    c->in_start = c->in_end = c->out_start = c->out_end = 0;
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
    c->in_start = c->in_end = 0;
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
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        conn_fail(c);
        return;
    }
    if (n == 0) {
        /* The peer may only have shut its sending side: replies to what
         * it already sent can still go out. */
        c->eof = true;
        conn_update_read_watcher(c);
        c->cb->on_error(c, c->owner);
        return;
    }
    c->in_end += (size_t)n;
    c->cb->on_input(c, c->owner);
    /* c stays valid: owners free connections only after callbacks. */
    if (c->fd >= 0 && c->reading && !c->failed && c->tls_active &&
        gnutls_record_check_pending(c->tls) > 0)
        ev_feed_event(loop, &c->rw, EV_READ);
}

int
conn_write(struct conn *c, const char *buf, size_t len)
{
    if (c->fd < 0)
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
            char *grown = realloc(c->out, cap);
            if (!grown)
                return -1;
            c->out = grown;
            c->out_cap = cap;
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
    c->out_start = c->out_end = 0;
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
    if (rc == 0)
        c->tls_active = true;
    else
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
