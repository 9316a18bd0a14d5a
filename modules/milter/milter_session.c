/*
 * milter_session.c - the connection to one milter for one SMTP session:
 * a non-blocking connect, the option negotiation (SMFIC_OPTNEG: version 6,
 * the actions postern can apply, the protocol flags it honours, and the
 * macro lists the milter asks for), then packets both ways on the loop
 * (postern_io) with one timer for the reply that is due (postern_timer).
 *
 * Output is queued and written as the socket takes it; input is cut into
 * packets and handed to the owner (milter.c) one by one. Anything the
 * milter sends when no reply is due, a packet over the limit, an early
 * close or a reply that does not come in time fails the connection: the
 * owner hears on_failure() once, with the reason, and the socket is closed.
 * A failed connection stays failed for the rest of the SMTP session; the
 * next session opens a new one.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "milter.h"

static void milter_conn_on_io(int fd, int events, void *arg);

static void
milter_conn_timer_stop(struct milter_conn *c)
{
    if (c->timer != NULL) {
        postern_timer_cancel(c->timer);
        c->timer = NULL;
    }
}

static void
milter_conn_teardown(struct milter_conn *c)
{
    milter_conn_timer_stop(c);
    if (c->io != NULL) {
        postern_io_stop(c->io);
        c->io = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    milter_buf_free(&c->out);
    milter_buf_free(&c->in);
    c->waiting = false;
    c->timeout = 0;
}

void
milter_conn_close(struct milter_conn *c)
{
    milter_conn_teardown(c);
    milter_optneg_free(&c->neg);
    if (c->state != MILTER_CONN_FAILED)
        c->state = MILTER_CONN_CLOSED;
}

void
milter_conn_fail(struct milter_conn *c)
{
    milter_conn_teardown(c);
    c->state = MILTER_CONN_FAILED;
}

/* Fail and tell the owner (once). */
static void
milter_conn_failed(struct milter_conn *c, const char *reason)
{
    if (c->state == MILTER_CONN_FAILED || c->state == MILTER_CONN_CLOSED)
        return;
    milter_conn_fail(c);
    c->ops->on_failure(c->owner, reason);
}

static void
milter_conn_on_timeout(void *arg)
{
    struct milter_conn *c = arg;

    c->timer = NULL; /* fired: freed by the core */
    milter_conn_failed(
        c, c->state == MILTER_CONN_CONNECTING    ? "connect timed out"
           : c->state == MILTER_CONN_NEGOTIATING ? "negotiation timed out"
           : c->waiting                          ? "reply timed out"
                                                 : "write timed out");
}

/* (Re)arm the timer: while a reply is due or output is queued. */
static void
milter_conn_arm(struct milter_conn *c)
{
    milter_conn_timer_stop(c);
    if (c->timeout <= 0)
        return;
    if (!c->waiting && c->out.len == c->out.off &&
        c->state == MILTER_CONN_READY)
        return;
    c->timer = postern_timer_start(c->timeout, milter_conn_on_timeout, c);
}

static void
milter_conn_watch(struct milter_conn *c)
{
    int want = POSTERN_IO_READ;

    if (c->state == MILTER_CONN_CONNECTING || c->out.len > c->out.off)
        want |= POSTERN_IO_WRITE;
    if (c->io != NULL && want != c->io_events) {
        postern_io_set(c->io, want);
        c->io_events = want;
    }
}

int
milter_conn_open(struct milter_conn *c, const struct milter_config *cfg,
                 const struct milter_conn_ops *ops, void *owner,
                 const char **why)
{
    memset(c, 0, sizeof *c);
    c->cfg = cfg;
    c->ops = ops;
    c->owner = owner;
    c->fd = -1;
    c->state = MILTER_CONN_FAILED;

    int fd = socket(cfg->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *why = "cannot create a socket";
        return -1;
    }
    c->fd = fd;
    if (cfg->family != AF_UNIX) {
        /* A macro packet the milter does not answer, then the next
           command: without this, Nagle holds the command until the
           milter's delayed ACK (40 ms) on every message. */
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    int rc = connect(fd, (const struct sockaddr *)cfg->addr, cfg->addr_len);
    if (rc != 0 && errno != EINPROGRESS && errno != EAGAIN) {
        *why = errno == ECONNREFUSED ? "connection refused"
               : errno == ENOENT     ? "no such socket"
                                     : "cannot connect";
        milter_conn_teardown(c);
        return -1;
    }
    c->state = MILTER_CONN_CONNECTING;
    c->io_events = POSTERN_IO_READ | POSTERN_IO_WRITE;
    c->io = postern_io_start(fd, c->io_events, milter_conn_on_io, c);
    size_t start;
    if (c->io == NULL || milter_packet_begin(&c->out, SMFIC_OPTNEG, &start) ||
        milter_packet_add_u32(&c->out, MILTER_VERSION) ||
        milter_packet_add_u32(&c->out, MILTER_ACTIONS_ALL) ||
        milter_packet_add_u32(&c->out, MILTER_PROTOCOL_OFFERED) ||
        milter_packet_end(&c->out, start)) {
        *why = "out of memory";
        milter_conn_fail(c);
        return -1;
    }
    c->timeout = cfg->connect_timeout;
    milter_conn_arm(c);
    return 0;
}

/* Write what the socket takes. -1 when the connection failed. */
static int
milter_conn_flush(struct milter_conn *c)
{
    while (c->out.len > c->out.off) {
        ssize_t n = send(c->fd, c->out.data + c->out.off,
                         c->out.len - c->out.off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0) {
            milter_conn_failed(c, "write failed (the milter closed?)");
            return -1;
        }
        milter_buf_consume(&c->out, (size_t)n);
        if (c->timer != NULL && !c->waiting)
            milter_conn_arm(c); /* progress */
    }
    milter_conn_watch(c);
    return 0;
}

int
milter_conn_send(struct milter_conn *c, struct milter_buf *b)
{
    if (c->state == MILTER_CONN_FAILED || c->state == MILTER_CONN_CLOSED)
        return -1;
    if (milter_buf_append(&c->out, b->data + b->off, b->len - b->off) != 0) {
        milter_conn_failed(c, "out of memory");
        return -1;
    }
    b->off = b->len = 0;
    if (c->state == MILTER_CONN_CONNECTING)
        return 0; /* written once connected */
    if (c->timeout <= 0) {
        c->timeout = c->cfg->command_timeout;
        milter_conn_arm(c);
    } else if (c->timer == NULL) {
        milter_conn_arm(c);
    }
    return milter_conn_flush(c);
}

void
milter_conn_expect(struct milter_conn *c, double seconds)
{
    if (c->state == MILTER_CONN_FAILED || c->state == MILTER_CONN_CLOSED)
        return;
    c->waiting = true;
    c->timeout = seconds;
    milter_conn_arm(c);
}

void
milter_conn_settle(struct milter_conn *c)
{
    c->waiting = false;
    milter_conn_arm(c);
}

void
milter_conn_progress(struct milter_conn *c)
{
    milter_conn_arm(c);
}

size_t
milter_conn_pending_output(const struct milter_conn *c)
{
    return c->out.len - c->out.off;
}

void
milter_conn_quit(struct milter_conn *c)
{
    if (c->state == MILTER_CONN_READY && c->fd >= 0) {
        /* What the socket takes now; the milter sees EOF anyway. */
        size_t start;
        if (milter_packet_begin(&c->out, SMFIC_QUIT, &start) == 0 &&
            milter_packet_end(&c->out, start) == 0) {
            while (c->out.len > c->out.off) {
                ssize_t n = send(c->fd, c->out.data + c->out.off,
                                 c->out.len - c->out.off, MSG_NOSIGNAL);
                if (n <= 0)
                    break;
                milter_buf_consume(&c->out, (size_t)n);
            }
        }
    }
    milter_conn_close(c);
}

/* The answer to SMFIC_OPTNEG: checked and kept, then the owner hears it. */
static int
milter_conn_negotiated(struct milter_conn *c, const struct milter_packet *p)
{
    const char *why = NULL;

    if (milter_optneg_parse(p, &c->neg, &why) != 0) {
        milter_conn_failed(c, why);
        return -1;
    }
    c->neg.protocol &= MILTER_PROTOCOL_OFFERED;
    c->neg.protocol |= c->cfg->protocol_mask;
    c->state = MILTER_CONN_READY;
    c->waiting = false;
    c->timeout = c->cfg->command_timeout;
    milter_conn_arm(c);
    return c->ops->on_packet(c->owner, p);
}

/* Hand out every whole packet read. -1 once the connection is gone. */
static int
milter_conn_deliver(struct milter_conn *c)
{
    while (c->in.len > c->in.off && c->fd >= 0) {
        struct milter_packet p;
        size_t used = 0;
        milter_decode d =
            milter_packet_decode(c->in.data + c->in.off, c->in.len - c->in.off,
                                 MILTER_MAX_PACKET, &p, &used);
        if (d == MILTER_DECODE_MORE)
            return 0;
        if (d == MILTER_DECODE_BAD) {
            milter_conn_failed(c, "garbage (bad packet length)");
            return -1;
        }
        if (!c->waiting) {
            milter_conn_failed(c, "sent a packet when none was due");
            return -1;
        }
        /* The packet stays in c->in while the owner reads it. */
        if (c->state == MILTER_CONN_NEGOTIATING)
            (void)milter_conn_negotiated(c, &p);
        else
            (void)c->ops->on_packet(c->owner, &p);
        if (c->fd < 0)
            return -1; /* closed or failed meanwhile */
        milter_buf_consume(&c->in, used);
        if (c->waiting)
            milter_conn_arm(c); /* progress: a packet came */
    }
    return 0;
}

/* libmilter writes each reply of the end of message on its own (the
   modifications, then the verdict) and leaves Nagle on: the verdict waits
   for our ACK of the modification, which Linux delays by up to 40 ms
   unless told to ACK at once. The flag does not stick: set it after each
   read. */
static void
milter_conn_quickack(struct milter_conn *c)
{
#ifdef TCP_QUICKACK
    if (c->cfg->family != AF_UNIX) {
        int one = 1;
        (void)setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
    }
#else
    (void)c;
#endif
}

static void
milter_conn_read(struct milter_conn *c)
{
    uint8_t buf[16384];

    for (int rounds = 0; rounds < 64 && c->fd >= 0; rounds++) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            milter_conn_failed(c, n == 0 ? "the milter closed the connection"
                                         : "read failed");
            return;
        }
        if (milter_buf_append(&c->in, buf, (size_t)n) != 0) {
            milter_conn_failed(c, "out of memory");
            return;
        }
        milter_conn_quickack(c);
        if (milter_conn_deliver(c) != 0)
            return;
    }
}

static void
milter_conn_on_io(int fd, int events, void *arg)
{
    struct milter_conn *c = arg;
    (void)fd;

    if (c->state == MILTER_CONN_CONNECTING && (events & POSTERN_IO_WRITE)) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 ||
            err != 0) {
            milter_conn_failed(c, err == ECONNREFUSED ? "connection refused"
                                                      : "cannot connect");
            return;
        }
        c->state = MILTER_CONN_NEGOTIATING;
        c->waiting = true;
        milter_conn_arm(c); /* the connect timeout covers negotiation */
    }
    if ((events & POSTERN_IO_WRITE) && c->state != MILTER_CONN_CONNECTING) {
        if (milter_conn_flush(c) != 0)
            return;
        if (c->out.len == c->out.off && c->state == MILTER_CONN_READY) {
            if (!c->waiting)
                milter_conn_arm(c);
            c->ops->on_drained(c->owner);
            if (c->fd < 0)
                return;
        }
    }
    if (events & POSTERN_IO_READ)
        milter_conn_read(c);
}
