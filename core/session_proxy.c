/*
 * session_proxy.c - the PROXY header at the start of a proxied connection
 * (see session_proxy.h).
 *
 * The header is read with its own watcher, straight from the socket, and
 * never past its end: each read peeks first and then takes only header
 * bytes (the parser guarantees that bytes it needs more after all belong
 * to the header). Whatever the balancer sent after the header stays in
 * the socket, so the client's first SMTP bytes reach the session by the
 * ordinary read path (early talkers are caught, pipelining works), and on
 * an implicit TLS listener the handshake reads its ClientHello itself.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <ev.h>

#include "client_limit.h"
#include "log.h"
#include "metrics.h"
#include "proxy_protocol.h"
#include "session_proxy.h"
#include "smtp_reply.h"

struct session_proxy {
    ev_io w;
    struct session *s;
    size_t len; /* header bytes taken from the socket so far */
    unsigned char buf[PROXY_PROTOCOL_MAX];
};

static void
session_proxy_fail(struct session *s, const char *reason)
{
    log_event(LOG_LEVEL_INFO, s->id, "proxy_failed", "reason=%s proxy=%s",
              reason, s->client_ip);
    session_close(s, "proxy_failed");
}

/* The client's address for the log, before session_open() sets
 * s->client_ip. */
static void
session_proxy_peer_text(const struct session *s, char *ip, size_t len,
                        int *port)
{
    const struct sockaddr_storage *ss = &s->conn.peer;

    ip[0] = '\0';
    *port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in->sin_addr, ip, (socklen_t)len);
        *port = ntohs(in->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, (socklen_t)len);
        *port = ntohs(in6->sin6_port);
    }
}

/* The client is known: count it as if it had connected directly. */
static void
session_proxy_admit(struct session *s)
{
    bool per_ip;
    client_limit_verdict v = client_limit_acquire(
        s->cfg, (const struct sockaddr *)&s->conn.peer, &per_ip);

    if (v != CLIENT_LIMIT_OK) {
        char client[INET6_ADDRSTRLEN];
        int port;
        session_proxy_peer_text(s, client, sizeof(client), &port);
        /* As the listener words it: the reply names the limits key. */
        smtp_reply(&s->conn, 421, "4.7.0",
                   "%s Error: too many connections%s (%s)", s->cfg->hostname,
                   v == CLIENT_LIMIT_TOTAL ? "" : " from your address",
                   client_limit_name(v));
        conn_flush(&s->conn);
        log_event(LOG_LEVEL_INFO, s->id, "connection_refused",
                  "reason=%s limit=%s client=%s port=%d",
                  v == CLIENT_LIMIT_PER_IP  ? "per_ip_limit"
                  : v == CLIENT_LIMIT_RATE  ? "rate_limit"
                  : v == CLIENT_LIMIT_TOTAL ? "total_limit"
                                            : "limit",
                  client_limit_name(v), client, port);
        metrics_refused(client_limit_name(v));
        session_close(s, "connection_limit");
        return;
    }
    s->counted = true;
    s->counted_ip = per_ip;
    session_open(s);
}

static void
session_proxy_done(struct session *s, const struct proxy_protocol_header *h)
{
    char proxy[INET6_ADDRSTRLEN];
    int proxy_port = s->client_port;

    memcpy(proxy, s->client_ip, sizeof(proxy));
    session_proxy_cancel(s);
    if (h->has_address) {
        memcpy(&s->conn.peer, &h->source, h->source_len);
        s->conn.peer_len = h->source_len;
    }
    s->wait = SESSION_WAIT_NONE;
    log_event(LOG_LEVEL_INFO, s->id, "proxy",
              "version=%d command=%s proxy=%s proxy_port=%d", h->version,
              h->local         ? "local"
              : h->has_address ? "proxy"
                               : "unknown",
              proxy, proxy_port);
    session_proxy_admit(s); /* session_open() sets client_ip */
}

static void
session_proxy_on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    struct session_proxy *p = (struct session_proxy *)w;
    struct session *s = p->s;
    struct proxy_protocol_header h;
    size_t used = 0;

    ssize_t n = recv(w->fd, p->buf + p->len, sizeof(p->buf) - p->len, MSG_PEEK);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            session_proxy_fail(s, "io_error");
        return;
    }
    if (n == 0) {
        session_proxy_fail(s, p->len ? "truncated" : "closed");
        return;
    }
    size_t have = p->len + (size_t)n;
    proxy_protocol_status st = proxy_protocol_parse(p->buf, have, &h, &used);
    if (st == PROXY_PROTOCOL_INVALID) {
        session_proxy_fail(s, "invalid");
        return;
    }
    /* Take the header bytes out of the socket, and only those. */
    size_t take = st == PROXY_PROTOCOL_DONE ? used - p->len : (size_t)n;
    ssize_t got = 0;
    if (take > 0) {
        do
            got = recv(w->fd, p->buf + p->len, take, 0);
        while (got < 0 && errno == EINTR);
    }
    if (got != (ssize_t)take) {
        session_proxy_fail(s, "io_error");
        return;
    }
    p->len += take;
    if (st == PROXY_PROTOCOL_DONE)
        session_proxy_done(s, &h);
}

void
session_proxy_start(struct session *s)
{
    const struct listener_config *lc = s->listener;

    if (!cidr_match(lc->proxy_networks, lc->n_proxy_networks,
                    (const struct sockaddr *)&s->conn.peer)) {
        /* It could claim to be any client: no header is read from it. */
        log_event(LOG_LEVEL_WARNING, s->id, "connection_refused",
                  "reason=untrusted_proxy client=%s port=%d", s->client_ip,
                  s->client_port);
        smtp_reply(&s->conn, 421, "4.7.0",
                   "%s Error: connection not accepted from your address",
                   s->cfg->hostname);
        conn_flush(&s->conn);
        session_close(s, "untrusted_proxy");
        return;
    }
    struct session_proxy *p = malloc(sizeof(*p));
    if (!p) {
        session_close(s, "out_of_memory");
        return;
    }
    p->s = s;
    p->len = 0;
    ev_io_init(&p->w, session_proxy_on_readable, s->conn.fd, EV_READ);
    ev_io_start(s->conn.loop, &p->w);
    s->proxy = p;
    s->wait = SESSION_WAIT_PROXY;
    conn_touch(&s->conn, lc->proxy_timeout > 0 ? lc->proxy_timeout
                                               : SESSION_PROXY_TIMEOUT_DEFAULT);
}

void
session_proxy_cancel(struct session *s)
{
    if (!s->proxy)
        return;
    ev_io_stop(s->conn.loop, &s->proxy->w);
    free(s->proxy);
    s->proxy = NULL;
}
