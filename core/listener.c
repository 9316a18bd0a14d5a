/*
 * listener.c - listening sockets and accept (see listener.h).
 *
 * The supervisor binds every socket once; the workers it forks inherit
 * them and all accept on the same sockets (no SO_REUSEPORT). A socket
 * with its one accept queue outlives any worker: a worker that dies or
 * retires on reload leaves the connections waiting in the queue to the
 * others, where per-worker SO_REUSEPORT sockets would take their queued
 * connections down with them (reset) and hash new ones by address.
 *
 * A connection over a limit gets its 421 written straight to the fresh
 * socket (it is tiny and the socket buffer is empty) and is closed; it
 * never costs a session.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client_limit.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "smtp_session.h"

#define ACCEPTS_PER_WAKEUP 64

struct listener {
    ev_io w;
    int fd;
    const struct listener_config *lc;
};

#define ACCEPT_BACKOFF 0.1 /* seconds without accepting after EMFILE */
#define BIND_RETRIES 20    /* EADDRINUSE: 20 x 50 ms */
#define BIND_RETRY_USEC 50000

static struct {
    struct ev_loop *loop;
    const struct config *cfg;
    struct listener *items;
    size_t n;
    ev_timer backoff; /* out of descriptors: pause accepting */
    bool stopped;
} listeners;

static void
listeners_pause(void)
{
    for (size_t i = 0; i < listeners.n; i++)
        ev_io_stop(listeners.loop, &listeners.items[i].w);
}

static void
listener_on_backoff(struct ev_loop *loop, ev_timer *w, int revents)
{
    if (listeners.stopped)
        return;
    for (size_t i = 0; i < listeners.n; i++)
        ev_io_start(loop, &listeners.items[i].w);
}

static void
listener_refuse(int fd, const char *reply)
{
    ssize_t w = send(fd, reply, strlen(reply), MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)w;
    close(fd);
}

static void
listener_on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    struct listener *l = (struct listener *)w;
    const struct config *cfg = listeners.cfg;
    char reply[300];

    for (int i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        int fd = accept4(l->fd, (struct sockaddr *)&peer, &len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                errno == ENOMEM) {
                /* The pending connection stays readable: without a pause
                 * the loop would spin on it. */
                log_event(LOG_LEVEL_WARNING, NULL, "accept_paused", "errno=%s",
                          postern_log_value(strerror(errno)));
                listeners_pause();
                ev_timer_stop(loop, &listeners.backoff);
                ev_timer_set(&listeners.backoff, ACCEPT_BACKOFF, 0.);
                ev_timer_start(loop, &listeners.backoff);
                return;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                log_event(LOG_LEVEL_WARNING, NULL, "accept_error", "errno=%s",
                          postern_log_value(strerror(errno)));
            return;
        }
        bool per_ip = false;
        /* Behind a balancer the peer is the balancer: the session counts
         * the real client once the PROXY header names it. */
        client_limit_verdict v =
            l->lc->proxy_protocol
                ? CLIENT_LIMIT_OK
                : client_limit_acquire(cfg, (struct sockaddr *)&peer, &per_ip);
        if (v != CLIENT_LIMIT_OK) {
            /* The reply and the log name the limits key that refused. */
            snprintf(reply, sizeof(reply),
                     "421 4.7.0 %s Error: too many connections%s (%s)\r\n",
                     cfg->hostname,
                     v == CLIENT_LIMIT_TOTAL ? "" : " from your address",
                     client_limit_name(v));
            log_event(LOG_LEVEL_INFO, NULL, "connection_refused",
                      "reason=%s limit=%s",
                      v == CLIENT_LIMIT_PER_IP ? "per_ip_limit"
                      : v == CLIENT_LIMIT_RATE ? "rate_limit"
                                               : "total_limit",
                      client_limit_name(v));
            listener_refuse(fd, reply);
            metrics_refused(client_limit_name(v));
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        session_start(fd, (struct sockaddr *)&peer, len, l->lc, cfg, per_ip);
    }
}

int
listener_socket_open(const struct listener_config *lc, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int family, fd, one = 1;

    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, lc->address, &in->sin_addr) == 1) {
        family = in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)lc->port);
        len = sizeof(*in);
    } else if (inet_pton(AF_INET6, lc->address, &in6->sin6_addr) == 1) {
        family = in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)lc->port);
        len = sizeof(*in6);
    } else {
        snprintf(err, errlen, "listen: bad address %s", lc->address);
        return -1;
    }
    fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "listen %s port %d: socket: %s", lc->address,
                 lc->port, strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    /* The workers of a postern killed a moment ago may still hold the
     * port: they die from their supervisor's death (PR_SET_PDEATHSIG),
     * but only once the kernel runs them. Give them a moment. */
    int rc;
    for (int tries = 0; (rc = bind(fd, (struct sockaddr *)&ss, len)) != 0 &&
                        errno == EADDRINUSE && tries < BIND_RETRIES;
         tries++)
        usleep(BIND_RETRY_USEC);
    if (rc != 0 || listen(fd, 511) != 0) {
        snprintf(err, errlen, "listen %s port %d: %s", lc->address, lc->port,
                 strerror(errno));
        close(fd);
        return -1;
    }
    log_event(LOG_LEVEL_INFO, NULL, "listening", "address=%s port=%d",
              postern_log_value(lc->address), lc->port);
    return fd;
}

int
listeners_start(struct ev_loop *loop, const struct config *cfg, const int *fds,
                char *err, size_t errlen)
{
    listeners.loop = loop;
    listeners.cfg = cfg;
    listeners.stopped = false;
    ev_timer_init(&listeners.backoff, listener_on_backoff, 0., 0.);
    listeners.items = calloc(cfg->n_listeners, sizeof(struct listener));
    if (!listeners.items) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        struct listener *l = &listeners.items[listeners.n++];
        l->fd = fds[i];
        l->lc = &cfg->listeners[i];
        ev_io_init(&l->w, listener_on_accept, l->fd, EV_READ);
        ev_io_start(loop, &l->w);
    }
    return 0;
}

void
listeners_close(void)
{
    listeners.stopped = true;
    if (listeners.loop)
        ev_timer_stop(listeners.loop, &listeners.backoff);
    listeners_pause();
    for (size_t i = 0; i < listeners.n; i++)
        close(listeners.items[i].fd);
    free(listeners.items);
    listeners.items = NULL;
    listeners.n = 0;
}
