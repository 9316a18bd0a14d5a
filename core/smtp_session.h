/*
 * smtp_session.h - one SMTP session (a connection) and its current
 * transaction (MAIL to the end of the message or RSET), as OpenSMTPD splits
 * them: the session lives as long as the connection, the transaction is
 * freed at RSET or at the end of each message.
 */
#ifndef POSTERN_SMTP_SESSION_H
#define POSTERN_SMTP_SESSION_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "conn.h"
#include "config.h"
#include "hook.h"
#include "postern/services.h"
#include "smtp_data.h"
#include "smtp_parse.h"

struct note;
struct spool;

typedef enum session_state {
    SESSION_GREETING, /* connect hook or greet pause; nothing sent yet */
    SESSION_READY,    /* greeted, no HELO/EHLO yet */
    SESSION_HELO,     /* HELO/EHLO done, no transaction */
    SESSION_MAIL,     /* MAIL accepted, no recipient yet */
    SESSION_RCPT,     /* at least one recipient */
    SESSION_DATA,     /* receiving the DATA stream */
    SESSION_BDAT,     /* receiving the bytes of one BDAT chunk */
    SESSION_AUTH,     /* inside a SASL exchange */
    SESSION_CLOSED
} session_state;

struct transaction {
    char id[17];
    char *mail_from;
    /* The raw parameter text after the path; session_api.c replaces it by
     * key/value pairs when a module first asks, and sets the flag. */
    char *mail_params;
    bool mail_params_packed;
    bool smtputf8;
    char **rcpts;
    size_t n_rcpts, cap_rcpts;
    struct note *notes;

    struct spool *spool; /* open from DATA/first BDAT until the end */
    struct smtp_data_rx rx;
    bool bdat;               /* the body came by BDAT */
    bool bdat_failed;        /* a chunk failed: later chunks are refused */
    bool bdat_discard;       /* the chunk being read is thrown away */
    bool bdat_last;          /* the chunk being read is the last */
    uint64_t bdat_remaining; /* bytes of the current chunk still to read */
    uint64_t bdat_chunk;     /* size of the current chunk */
    struct hook_reply *bdat_error; /* reply owed after a discarded chunk */

    char *headers; /* "Name: value\r\n" lines added by modules */
    size_t headers_len, headers_cap;
    char *received; /* our trace header, stored below the module headers */
    size_t received_len;
    uint64_t body_size;
    int state_before; /* BDAT outside a transaction: the session state */
};

struct sasl_state;
struct tls_creds;

struct session {
    struct conn conn; /* first: the transport */
    char id[17];
    char client_ip[INET6_ADDRSTRLEN];
    int client_port;
    char local_ip[INET6_ADDRSTRLEN];
    int local_port;
    const struct listener_config *listener;
    const struct config *cfg;

    session_state state;
    bool busy;       /* a hook or TLS handshake is under way */
    bool processing; /* inside the input loop (no re-entry) */
    bool peer_gone;  /* EOF seen; close once buffered input is done */
    bool quitting;   /* 221 sent; close when flushed */
    bool esmtp;
    bool counted_ip; /* holds a per-IP connection slot */
    char *helo;
    char *auth_user;
    struct note *notes;
    struct transaction *tx;
    struct postern_ctx *ctx;
    struct smtp_line_parser lines;
    unsigned errors;
    unsigned transactions;
    unsigned auth_failures;
    const char *rcpt_current; /* the rcpt hook's subject */

    /* TLS (tls.c): credentials in use and facts after the handshake */
    struct tls_creds *tls_creds;
    bool tls_after_drain; /* STARTTLS: handshake once 220 is sent */
    char *tls_version;
    char *tls_cipher;
    char *tls_sni;
    char *tls_peer_dn;

    /* AUTH exchange (sasl.c) */
    struct sasl_state *sasl;

    postern_timer *greet_timer;            /* greet_pause, while it runs */
    struct session *next_dead;             /* deferred-free list */
    struct session *live_prev, *live_next; /* open sessions */
};

/* Serve a new client on fd (already non-blocking). peer is the address
 * accept() gave (NULL: ask the socket). The client holds a connection
 * slot (client_limit.h; counted_ip: a per-address one too), released when
 * the session ends, or here if it cannot start. */
void session_start(int fd, const struct sockaddr *peer, socklen_t peer_len,
                   const struct listener_config *listener,
                   const struct config *cfg, bool counted_ip);

/* For tls.c: the handshake finished; implicit TLS greets, STARTTLS resets
 * the session to its state before EHLO (RFC 3207 4.2). */
void session_tls_established(struct session *s, bool implicit);

/* Close a session now: disconnect hook, socket closed, freed after the
 * current callback returns. */
void session_close(struct session *s, const char *why);

const char *session_id(const struct session *s);

/* Free sessions closed during this loop iteration (from an ev_check). */
void session_reap(void);

/* The session was busy (a hook, a delay): go on with buffered input. */
void session_resume(struct session *s);

/* Shutting down: idle sessions get 421 now, the others after their
 * transaction (RFC 5321 3.8). */
void session_drain(void);

/* Close every open session (shutdown). */
void session_close_all(const char *why);

/* Run a decision hook for this session (busy until done is called). */
void session_hook_run(struct session *s, postern_hook hook, hook_done_fn done);

/* Sessions open now. */
unsigned session_count(void);

#endif
