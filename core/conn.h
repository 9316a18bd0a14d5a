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
 *
 * An idle connection owns no buffer (as nginx does with its keep-alive
 * connections): a read goes into a buffer the process shares, and only
 * bytes the owner left unconsumed when its callback returns are copied
 * into a buffer of the connection's own; replies go into a shared output
 * buffer too, and a connection gets its own only while its output cannot
 * be sent at once. Own buffers are freed as soon as they are empty,
 * except the input buffer while the owner keeps it (conn_keep_input:
 * message data, read straight into it).
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

    /* unconsumed input is in[in_start .. in_end); in is NULL when
     * nothing is buffered, outside the on_input callback */
    char *in;
    size_t in_start, in_end, in_cap;

    char *out; /* NULL when nothing is queued */
    size_t out_start, out_end, out_cap;

    bool keep_in; /* conn_keep_input(): keep an own input buffer */
    bool reading; /* rw wanted by the owner */
    bool eof;     /* peer closed its side */
    bool failed;  /* an I/O error happened; owner told */
    bool close_after_flush;
    int last_code; /* of the last SMTP reply queued (smtp_reply.c) */

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

/* Keep an input buffer of the connection's own, allocated at the next
 * read and kept even when empty (message data: no copy, no allocation per
 * read); off: it is freed once empty, by the end of the next read callback
 * or conn_trim(), never inside this call. */
void conn_keep_input(struct conn *c, bool keep);

/* Free the buffers that hold nothing (the owner went idle). Input pointers
 * the owner took from c->in are invalid afterwards. */
void conn_trim(struct conn *c);

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
