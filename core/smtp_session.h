/*
 * smtp_session.h - one SMTP session (a connection) and its current
 * transaction (MAIL to the end of the message or RSET), as OpenSMTPD splits
 * them: the session lives as long as the connection, the transaction is
 * freed at RSET or at the end of each message.
 *
 * The session is in one protocol state (what the client may send next) and
 * at most one wait (what the session waits for before it reads the next
 * command). The code is split by concern:
 *   session.c          life cycle, states and waits, the input loop
 *   session_proxy.c    the PROXY protocol header, before the session opens
 *   smtp_commands.c    the command table and the simple commands
 *   smtp_envelope.c    MAIL and RCPT, their parameters
 *   relay_policy.c     which recipients may be accepted without a module
 *   message_receipt.c  DATA and BDAT content, then the message/store hooks
 *   transaction.c      the transaction and its recipient set
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
struct rcpt_set;

typedef enum session_state {
    SESSION_GREETING, /* connect hook or greet pause; nothing sent yet */
    SESSION_READY,    /* greeted, no HELO/EHLO yet */
    SESSION_HELO,     /* HELO/EHLO done, no transaction */
    SESSION_MAIL,     /* MAIL accepted, no recipient yet */
    SESSION_RCPT,     /* at least one recipient */
    SESSION_DATA,     /* receiving the DATA stream */
    SESSION_BDAT,     /* receiving the bytes of one BDAT chunk */
    SESSION_AUTH,     /* inside a SASL exchange */
    SESSION_QUITTING, /* the last reply is queued; close once it is sent */
    SESSION_CLOSED
} session_state;

/* What the session waits for; input is not processed meanwhile. */
typedef enum session_wait {
    SESSION_WAIT_NONE,
    SESSION_WAIT_GREET_PAUSE,  /* greet_pause; early talkers are caught */
    SESSION_WAIT_RDNS,         /* the client's reverse name, before the
                                  connect hook (bounded by
                                  dns.reverse_timeout); early talkers are
                                  caught */
    SESSION_WAIT_HOOK,         /* a hook chain runs in this call stack */
    SESSION_WAIT_HOOK_PENDING, /* a handler went PENDING: only the hook's
                                  own limit applies, client bytes do not
                                  re-arm the idle timer */
    SESSION_WAIT_TIMER,        /* a deliberate delay (AUTH failure) */
    SESSION_WAIT_STARTTLS,     /* 220 queued; handshake once it is sent */
    SESSION_WAIT_TLS,          /* TLS handshake */
    SESSION_WAIT_SPOOL,        /* spool file creation or writes (pool) */
    SESSION_WAIT_PROXY         /* the PROXY protocol header, before
                                  anything else (session_proxy.c) */
} session_wait;

/* BDAT (RFC 3030): the chunk whose bytes are being read. */
struct bdat_chunk {
    uint64_t size, remaining;
    bool last;
    bool discard; /* read only to stay in step, then refused */
    /* The reply owed after a discarded chunk; allocated only then, so an
     * idle session does not carry a reply buffer. */
    struct hook_reply *error;
};

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
    struct rcpt_set *rcpt_set; /* de-duplication, see transaction.c */
    struct note *notes;

    struct spool *spool; /* open from DATA/first BDAT until the end */
    struct smtp_data_rx rx;
    bool bdat;        /* the body comes by BDAT */
    bool bdat_failed; /* a chunk was refused: later chunks are too */

    char *headers; /* "Name: value\r\n" lines added by modules */
    size_t headers_len, headers_cap;
    char *received; /* our trace header, stored below the module headers */
    size_t received_len;
    uint64_t body_size;

    /* Changes by modules (envelope_change.c) and the outcome. */
    char **retired; /* replaced envelope strings, freed with the tx */
    size_t n_retired, cap_retired;
    size_t rcpts_added;    /* by postern_rcpt_add() */
    unsigned from_changes; /* by postern_mail_from_set() */
    bool rcpts_deleted;    /* postern_rcpt_delete() removed one */
    bool store_started;    /* the envelope is final */
    bool discarded;        /* a handler answered POSTERN_DISCARD */
    char *discard_by;      /* its instance, or who deleted the last rcpt */
    postern_hook discard_hook;
    char *quarantine;                /* the reason, NULL: not quarantined */
    struct message_content *content; /* parsed on demand (message_content.h) */

    /* For its final log line (transaction.c): the outcome, where it was
     * decided (the last hook run), the store's id, and the time spent. */
    int end_code;            /* the SMTP code; 0: none, the tx was aborted */
    const char *end_reason;  /* aborted: why ("rset", "quit", ...) */
    postern_hook last_stage; /* the last hook run in the transaction */
    char *stored_id;         /* the store's "queued as" id */
    char *stored_by;         /* the instance that stored it */
    unsigned rcpts_refused;  /* RCPT answered with an error */
    double started_ms;       /* monotonic, at MAIL */
    double data_started_ms;  /* DATA or the first BDAT; 0: not yet */
    double data_ms;          /* DATA to the last byte spooled */
    double hook_ms[POSTERN_HOOK_COUNT]; /* hook time, by hook */
};

struct sasl_state;
struct tls_creds;
struct client_rdns;
struct session_proxy;

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
    session_wait wait;
    hook_done_fn hook_done; /* the running hook's outcome handler */
    postern_hook hook_running;
    double hook_started_ms; /* monotonic, when it began */
    bool esmtp;
    bool counted;    /* holds a connection slot (client_limit.h) */
    bool counted_ip; /* holds a per-IP connection slot */
    unsigned holds;  /* orphaned hook contexts that still borrow from us */
    bool reaped;     /* closed and off the dead list; the last hold frees */
    char *rdns;      /* forward-confirmed client name; NULL: unknown */
    struct client_rdns *rdns_lookup; /* while it runs (client_rdns.c) */
    struct session_proxy *proxy;     /* reading the PROXY header */
    char *helo;
    char *auth_user;
    struct note *notes;
    struct transaction *tx;
    struct transaction *retired_tx; /* ended while a module still borrows */
    struct hook_ctx *ctx;
    struct smtp_line_parser lines;
    struct bdat_chunk chunk;
    session_state chunk_return; /* state after a discarded chunk */
    unsigned errors;
    unsigned transactions;
    unsigned auth_failures;
    const char *rcpt_current; /* the rcpt hook's subject */

    /* TLS (tls.c): credentials in use and facts after the handshake */
    struct tls_creds *tls_creds;
    char *tls_version;
    char *tls_cipher;
    char *tls_sni;
    char *tls_peer_dn;

    /* AUTH exchange (smtp_auth.c) */
    struct sasl_state *sasl;

    postern_timer *greet_timer;            /* greet_pause, while it runs */
    struct session *next_dead;             /* deferred-free list */
    struct session *live_prev, *live_next; /* open sessions */
};

/* Serve a new client on fd (already non-blocking). peer is the address
 * accept() gave (NULL: ask the socket). The client holds a connection
 * slot (client_limit.h; counted_ip: a per-address one too), released when
 * the session ends, or here if it cannot start. On a proxy_protocol
 * listener it holds none yet: the session reads the PROXY header first
 * and counts the real client then (session_proxy.c). */
void session_start(int fd, const struct sockaddr *peer, socklen_t peer_len,
                   const struct listener_config *listener,
                   const struct config *cfg, bool counted_ip);

/* The client's address in s->conn.peer is final (after the PROXY header,
 * if any): log the connection, start the reverse lookup, then implicit
 * TLS or the greeting. */
void session_open(struct session *s);

/* For tls.c: the handshake finished; implicit TLS greets, STARTTLS resets
 * what the client said (RFC 3207 4.2); what modules noted about the
 * client stays. */
void session_tls_established(struct session *s, bool implicit);

/* Close a session now: disconnect hook, socket closed, freed after the
 * current callback returns (or once no orphaned context borrows from it). */
void session_close(struct session *s, const char *why);

const char *session_id(const struct session *s);

/* Free sessions closed during this loop iteration (from an ev_check). */
void session_reap(void);

/* Enter a protocol state. QUITTING and CLOSED are final. */
void session_set_state(struct session *s, session_state state);

/* The last reply is queued: close once it is sent. */
void session_quit(struct session *s);

/* Count a protocol error; past the limit the session ends with 421. */
void session_error(struct session *s);

/* Wait for something; input is kept but not processed. */
void session_wait_for(struct session *s, session_wait wait);

/* The wait is over (called from a loop callback, never from inside the
 * session's own processing): go on with buffered input. */
void session_resume(struct session *s);

/* Go on with buffered input unless a new wait began (same calling rule as
 * session_resume; for callbacks that end one wait and may start another). */
void session_continue(struct session *s);

/* Shutting down: idle sessions get 421 now, the others after their
 * transaction (RFC 5321 3.8). */
void session_drain(void);
bool session_draining(void);

/* Close every open session (shutdown). */
void session_close_all(const char *why);

/* Run a decision hook. done replies; it runs once, maybe before this
 * returns. The session waits until then. */
void session_hook_run(struct session *s, postern_hook hook, hook_done_fn done);

/* Run a notification hook (reset, disconnect); results are ignored. */
void session_notify(struct session *s, postern_hook hook);

/* Reply for a DISCONNECT result, whatever the stage, and quit: 421, or
 * the module's 4xx or 5xx code. Returns the code sent. */
int session_reply_disconnect(struct session *s, const struct hook_reply *r);

/* Re-arm the idle timer for the current state. */
void session_touch(struct session *s);

const char *session_hostname(const struct session *s);

/* Sessions open now. */
unsigned session_count(void);

#endif
