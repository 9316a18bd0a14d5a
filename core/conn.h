/*
 * conn.h - one client connection's transport: the socket, the read and
 * write buffers, TLS when active, and the idle timer. It knows nothing of
 * SMTP; it calls its owner back when bytes arrive, when the peer is gone
 * and when the timer fires.
 *
 * Reads go into one buffer of fixed size (large enough for a command line
 * and for efficient DATA reads); the owner consumes from its front.
 * Writes are appended to an output buffer and flushed with one write(2)
 * per flush, so a pipelined group is answered with one segment.
 */
#ifndef POSTERN_CONN_H
#define POSTERN_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include <ev.h>
#include <gnutls/gnutls.h>

struct conn;

struct conn_callbacks {
    void (*on_input)(struct conn *c, void *owner);   /* new bytes in c->in */
    void (*on_drained)(struct conn *c, void *owner); /* output went out */
    void (*on_timeout)(struct conn *c, void *owner);
    void (*on_error)(struct conn *c, void *owner); /* EOF or I/O error */
    void (*on_tls_ready)(struct conn *c, void *owner, int ok);
};

struct conn {
    int fd;
    struct ev_loop *loop;
    ev_io rw; /* readable */
    ev_io ww; /* writable, only while output is blocked */
    ev_timer idle;
    const struct conn_callbacks *cb;
    void *owner;

    char *in; /* unconsumed input is in[in_start .. in_end) */
    size_t in_start, in_end, in_cap;

    char *out;
    size_t out_start, out_end, out_cap;

    bool reading; /* rw wanted by the owner */
    bool eof;     /* peer closed its side */
    bool failed;  /* an I/O error happened; owner told */
    bool close_after_flush;

    /* TLS (tls.c); NULL while plaintext */
    gnutls_session_t tls;
    bool tls_handshaking;
    bool tls_active;

    struct sockaddr_storage peer;
    socklen_t peer_len;
    struct sockaddr_storage local;
    socklen_t local_len;
};

/* peer: the address accept() returned (kept as the client's address, so
 * it is known even when the client already reset the connection); NULL
 * asks getpeername(). */
int conn_init(struct conn *c, struct ev_loop *loop, int fd, size_t in_cap,
              const struct sockaddr *peer, socklen_t peer_len,
              const struct conn_callbacks *cb, void *owner);
/* Stops watchers and closes the socket; frees the buffers. */
void conn_close(struct conn *c);

/* Pause or resume reading. Reading also stops by itself while the input
 * buffer is full, so a session that waits (a pending hook, the spool)
 * holds at most one buffer of client bytes; the owner turns reading back
 * on after it consumed input. */
void conn_set_reading(struct conn *c, bool on);
/* Re-arm the idle timer with this timeout (seconds). */
void conn_touch(struct conn *c, double timeout);

/* Append bytes to the output buffer; -1 if it cannot grow. */
int conn_write(struct conn *c, const char *buf, size_t len);
/* Send what is buffered; waits for writability when the socket is full.
 * Returns -1 on a hard error (on_error follows from the loop). */
int conn_flush(struct conn *c);
size_t conn_pending_output(const struct conn *c);

/* Drop n bytes from the front of the input. */
static inline void
conn_consume(struct conn *c, size_t n)
{
    c->in_start += n;
    if (c->in_start == c->in_end)
        c->in_start = c->in_end = 0;
}

/* Start a TLS handshake on this connection with a prepared GnuTLS session
 * (tls.c). Buffered plaintext input is discarded. on_tls_ready follows,
 * possibly before this returns. */
void conn_start_tls(struct conn *c, gnutls_session_t tls);

/* Throw away all buffered input (STARTTLS: no plaintext survives). */
void conn_discard_input(struct conn *c);

#endif
