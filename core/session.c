/*
 * session.c - the life of a session: start, greeting, the protocol state
 * and the wait, the input loop, the transport callbacks, and the close.
 *
 * Input is processed in batches: every complete command in the read buffer
 * is handled in turn and the replies are flushed together (RFC 2920). A
 * command that starts something the session must wait for (a hook that
 * goes PENDING, a TLS handshake, spool I/O on the pool) sets the wait; the
 * remaining input stays in the read buffer, which stops filling when it is
 * full, until whatever was waited for calls session_resume().
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client_limit.h"
#include "client_rdns.h"
#include "hook.h"
#include "id.h"
#include "log.h"
#include "metrics.h"
#include "message_receipt.h"
#include "notes.h"
#include "session_proxy.h"
#include "services.h"
#include "smtp_auth.h"
#include "smtp_commands.h"
#include "smtp_reply.h"
#include "smtp_session.h"
#include "tls.h"
#include "transaction.h"

#define SESSION_INPUT_BUFFER (32 * 1024)
#define SESSION_OUTPUT_HIGH_WATER (64 * 1024)
static struct session *dead_sessions;
static struct session *live_list;
static bool draining; /* shutting down: no new transactions */
static unsigned live_sessions;

static void session_process(struct session *s);
static void session_flush(struct session *s);
static void session_free(struct session *s);
static const struct hook_owner_ops session_hook_ops;

static const char *const state_names[] = {"greeting", "ready", "helo", "mail",
                                          "rcpt",     "data",  "bdat", "auth",
                                          "quitting", "closed"};

const char *
session_id(const struct session *s)
{
    return s ? s->id : NULL;
}

const char *
session_hostname(const struct session *s)
{
    return s->cfg->hostname;
}

unsigned
session_count(void)
{
    return live_sessions;
}

bool
session_draining(void)
{
    return draining;
}

/* --- states and waits --- */

void
session_set_state(struct session *s, session_state state)
{
    if (s->state == state || s->state == SESSION_QUITTING ||
        s->state == SESSION_CLOSED)
        return; /* final states stay */
    if (log_enabled(LOG_LEVEL_DEBUG))
        log_event(LOG_LEVEL_DEBUG, s->id, "state", "from=%s to=%s",
                  state_names[s->state], state_names[state]);
    s->state = state;
    /* Message data is read straight into a buffer of the session's own;
     * commands need none while idle (conn.h). */
    conn_keep_input(&s->conn, state == SESSION_DATA || state == SESSION_BDAT);
}

void
session_quit(struct session *s)
{
    session_set_state(s, SESSION_QUITTING);
}

void
session_error(struct session *s)
{
    if (++s->errors >= s->cfg->limits.errors) {
        smtp_reply(&s->conn, 421, "4.7.0", "%s Error: too many errors",
                   session_hostname(s));
        log_event(LOG_LEVEL_INFO, s->id, "error_limit", "errors=%u", s->errors);
        session_quit(s);
    }
}

void
session_touch(struct session *s)
{
    double timeout;

    switch (s->wait) {
    case SESSION_WAIT_HOOK:
    case SESSION_WAIT_HOOK_PENDING:
    case SESSION_WAIT_SPOOL:
        /* we are the slow side: limits.pending_timeout */
        timeout = s->cfg->limits.pending_timeout;
        break;
    case SESSION_WAIT_TLS:
        timeout = s->cfg->tls.handshake_timeout;
        break;
    default:
        timeout = s->state == SESSION_DATA || s->state == SESSION_BDAT
                      ? s->cfg->limits.data_timeout
                      : s->cfg->limits.command_timeout;
        break;
    }
    conn_touch(&s->conn, timeout);
}

void
session_wait_for(struct session *s, session_wait wait)
{
    s->wait = wait;
    if (wait == SESSION_WAIT_SPOOL)
        session_touch(s);
}

void
session_continue(struct session *s)
{
    if (s->state == SESSION_CLOSED)
        return;
    if (s->wait != SESSION_WAIT_NONE) {
        session_flush(s); /* replies queued before the new wait */
        return;
    }
    session_touch(s);
    session_process(s);
}

void
session_resume(struct session *s)
{
    s->wait = SESSION_WAIT_NONE;
    session_continue(s);
}

/* --- hooks --- */

/* Every decision hook ends here: the stage's handler replies, then, if
 * the hook had gone PENDING (we are in a module's callback, not in the
 * input loop), the session goes on. */
static void
session_on_hook_done(struct session *s, postern_result r,
                     const struct hook_reply *reply)
{
    bool was_pending = s->wait == SESSION_WAIT_HOOK_PENDING;
    hook_done_fn done = s->hook_done;
    postern_hook hook = hook_ctx_hook(s->ctx);

    if (s->tx) /* before done(), which may end the transaction */
        s->tx->hook_ms[s->hook_running] +=
            transaction_clock_ms() - s->hook_started_ms;

    s->wait = SESSION_WAIT_NONE;
    s->hook_done = NULL;
    /* What the stage answered: a reply made inside done (last_code) is
     * counted once, here, and not again by an outer hook's done. */
    s->conn.last_code = 0;
    done(s, r, reply);
    metrics_stage_reply(hook, s->conn.last_code);
    s->conn.last_code = 0;
    if (was_pending)
        session_continue(s);
}

/* The hook context, made when a hook runs: an idle session has none. */
static struct hook_ctx *
session_ctx(struct session *s)
{
    if (!s->ctx)
        s->ctx = hook_ctx_new(s, s->id, &session_hook_ops);
    return s->ctx;
}

void
session_hook_run(struct session *s, postern_hook hook, hook_done_fn done)
{
    if (!session_ctx(s)) {
        smtp_reply(&s->conn, 421, "4.3.0", "%s Error: out of memory",
                   session_hostname(s));
        session_quit(s);
        return;
    }
    s->wait = SESSION_WAIT_HOOK;
    s->hook_done = done;
    s->hook_running = hook;
    s->hook_started_ms = transaction_clock_ms();
    if (s->tx && hook >= POSTERN_HOOK_MAIL && hook <= POSTERN_HOOK_STORE)
        s->tx->last_stage = hook;
    hook_run(s->ctx, hook, session_on_hook_done);
    if (s->wait == SESSION_WAIT_HOOK) {
        /* A handler went PENDING. Only its limit applies now: client
         * bytes are buffered (bounded) but never re-arm the timer. */
        s->wait = SESSION_WAIT_HOOK_PENDING;
        session_touch(s);
    }
}

void
session_notify(struct session *s, postern_hook hook)
{
    if (hook_chain_length(hook) > 0 && session_ctx(s) &&
        !hook_ctx_pending(s->ctx))
        s->ctx = hook_notify(s->ctx, hook);
}

int
session_reply_disconnect(struct session *s, const struct hook_reply *r)
{
    int code = 421;
    /* A module may close with a permanent refusal (ABI 1.3). */
    if (r && r->code / 100 == 5) {
        code = r->code;
        smtp_reply_hook(&s->conn, r, 554, "5.7.1",
                        "Error: refused, closing transmission channel");
    } else {
        if (r && r->code / 100 == 4)
            code = r->code;
        smtp_reply_hook(&s->conn, r, 421, "4.7.0",
                        "Service not available, closing transmission channel");
    }
    session_quit(s);
    return code;
}

/* --- connect and greeting --- */

static void
on_connect_done(struct session *s, postern_result r,
                const struct hook_reply *reply)
{
    switch (r) {
    case POSTERN_CONTINUE:
    case POSTERN_ACCEPT:
        session_set_state(s, SESSION_READY);
        smtp_reply(&s->conn, 220, NULL, "%s ESMTP postern",
                   session_hostname(s));
        break;
    case POSTERN_REJECT:
        smtp_reply_hook(&s->conn, reply, 554, "5.7.1", "Access denied");
        session_quit(s);
        break;
    case POSTERN_TEMPFAIL:
        smtp_reply_hook(&s->conn, reply, 421, "4.3.2",
                        "Service temporarily unavailable");
        session_quit(s);
        break;
    default:
        session_reply_disconnect(s, reply);
        break;
    }
    if (s->state == SESSION_QUITTING)
        log_event(LOG_LEVEL_INFO, s->id, "connect_refused", "client=%s",
                  s->client_ip);
}

static void
session_run_connect(struct session *s)
{
    if (client_rdns_running(s)) {
        /* The connect hook and its modules see the client's name. */
        s->wait = SESSION_WAIT_RDNS;
        return;
    }
    session_hook_run(s, POSTERN_HOOK_CONNECT, on_connect_done);
    session_continue(s);
}

/* The reverse lookup ended (client_rdns.c calls from a loop callback). */
static void
on_rdns_done(struct session *s)
{
    if (s->wait != SESSION_WAIT_RDNS)
        return; /* greet_pause or the TLS handshake still runs */
    s->wait = SESSION_WAIT_NONE;
    session_run_connect(s);
}

/* greet_pause expired without the client talking. */
static void
on_greet_pause(void *arg)
{
    struct session *s = arg;
    s->greet_timer = NULL;
    if (s->state == SESSION_CLOSED)
        return;
    s->wait = SESSION_WAIT_NONE;
    session_run_connect(s);
}

/* Called once the transport is ready (after implicit TLS, if any). */
static void
session_begin(struct session *s)
{
    s->wait = SESSION_WAIT_NONE;
    if (s->cfg->limits.greet_pause > 0) {
        s->greet_timer =
            postern_timer_start(s->cfg->limits.greet_pause, on_greet_pause, s);
        if (s->greet_timer) {
            s->wait = SESSION_WAIT_GREET_PAUSE;
            return;
        }
    }
    session_run_connect(s);
}

/* --- closing and freeing --- */

void
session_drain(void)
{
    draining = true;
    /* Idle sessions go now; those in a transaction finish it first. */
    for (struct session *s = live_list, *next; s; s = next) {
        next = s->live_next;
        if (s->wait != SESSION_WAIT_NONE || s->tx ||
            (s->state != SESSION_READY && s->state != SESSION_HELO))
            continue;
        smtp_reply(&s->conn, 421, "4.3.2",
                   "%s Service shutting down, closing channel",
                   session_hostname(s));
        session_quit(s);
        session_flush(s);
    }
}

void
session_close_all(const char *why)
{
    while (live_list) {
        struct session *s = live_list;
        /* RFC 5321 3.8: tell the client before going away. */
        if (!s->conn.tls_handshaking && s->state != SESSION_QUITTING &&
            s->wait != SESSION_WAIT_PROXY) {
            smtp_reply(&s->conn, 421, "4.3.2",
                       "%s Service shutting down, closing channel",
                       session_hostname(s));
            conn_flush(&s->conn);
        }
        session_close(s, why);
    }
}

/* An orphaned hook context borrows the session's strings (session.h
 * promises them to a pending handler until its resume): the session is
 * freed only after the last one let go. */
static void
session_hold(struct session *s)
{
    s->holds++;
}

static void
session_release(struct session *s)
{
    if (--s->holds == 0 && s->reaped)
        session_free(s);
}

static const struct hook_owner_ops session_hook_ops = {
    .hold = session_hold,
    .release = session_release,
};

void
session_close(struct session *s, const char *why)
{
    if (s->state == SESSION_CLOSED)
        return;
    postern_timer_cancel(s->greet_timer);
    s->greet_timer = NULL;
    client_rdns_cancel(s);
    session_proxy_cancel(s);
    if (hook_ctx_pending(s->ctx)) {
        /* The module finishes later; it gets an orphaned context. */
        hook_ctx_release(s->ctx);
        s->ctx = NULL; /* the reset and disconnect hooks get a new one */
    }
    if (s->tx && s->tx->end_code == 0)
        s->tx->end_reason = why; /* aborted by the close */
    if (s->holds > 0 && s->tx) {
        /* The transaction ends for everyone else, but its strings stay
         * until the pending handler let go. */
        transaction_log_end(s);
        session_notify(s, POSTERN_HOOK_RESET);
        s->retired_tx = s->tx;
        s->tx = NULL;
    }
    transaction_end(s); /* without memory for a context: no hooks */
    session_notify(s, POSTERN_HOOK_DISCONNECT);
    log_event(LOG_LEVEL_INFO, s->id, "disconnect",
              "reason=%s transactions=%u errors=%u", why, s->transactions,
              s->errors);
    s->state = SESSION_CLOSED;
    s->wait = SESSION_WAIT_NONE;
    if (s->counted)
        client_limit_release((const struct sockaddr *)&s->conn.peer,
                             s->counted_ip);
    conn_close(&s->conn);
    tls_session_release(s);
    smtp_auth_free(s);
    live_sessions--;
    metrics_connection_closed();
    if (s->live_prev)
        s->live_prev->live_next = s->live_next;
    else
        live_list = s->live_next;
    if (s->live_next)
        s->live_next->live_prev = s->live_prev;
    s->next_dead = dead_sessions;
    dead_sessions = s;
}

static void
session_free(struct session *s)
{
    hook_ctx_release(s->ctx);
    transaction_free(s->tx);
    transaction_free(s->retired_tx);
    free((char *)s->rcpt_current);
    notes_free(&s->notes);
    free(s->rdns);
    free(s->helo);
    free(s->auth_user);
    free(s->tls_version);
    free(s->tls_cipher);
    free(s->tls_sni);
    free(s->tls_peer_dn);
    if (s->chunk.error) {
        hook_reply_clear(s->chunk.error);
        free(s->chunk.error);
    }
    free(s);
}

void
session_reap(void)
{
    while (dead_sessions) {
        struct session *s = dead_sessions;
        dead_sessions = s->next_dead;
        s->reaped = true;
        if (s->holds == 0)
            session_free(s);
        /* else: the last orphaned context frees it (session_unhold) */
    }
}

/* Send what is queued; close if the session is finishing. */
static void
session_flush(struct session *s)
{
    if (s->state == SESSION_CLOSED)
        return;
    if (conn_flush(&s->conn) < 0) {
        session_close(s, "write_error");
        return;
    }
    if (s->state == SESSION_QUITTING && conn_pending_output(&s->conn) == 0)
        session_close(s, "quit");
}

/* --- the input loop --- */

/* What a session does not use while it waits for the client goes back:
 * empty buffers, and the hook context between transactions (nginx frees
 * its keep-alive connections' buffers the same way). */
static void
session_idle(struct session *s)
{
    conn_trim(&s->conn);
    if (!s->tx && s->wait == SESSION_WAIT_NONE && !hook_ctx_pending(s->ctx)) {
        hook_ctx_release(s->ctx);
        s->ctx = NULL;
    }
}

static void
session_process(struct session *s)
{
    struct conn *c = &s->conn;
    bool output_blocked = false;

    while (s->wait == SESSION_WAIT_NONE && s->state != SESSION_QUITTING &&
           s->state != SESSION_CLOSED) {
        if (conn_pending_output(c) > SESSION_OUTPUT_HIGH_WATER) {
            /* Send what we have; stop only while the client is not
             * reading (then on_drained resumes us). */
            if (conn_flush(c) < 0) {
                session_close(s, "write_error");
                return;
            }
            if (conn_pending_output(c) > SESSION_OUTPUT_HIGH_WATER) {
                output_blocked = true;
                break;
            }
        }
        if (s->state == SESSION_DATA) {
            if (!receipt_data_step(s))
                break;
            continue;
        }
        if (s->state == SESSION_BDAT) {
            if (!receipt_chunk_step(s))
                break;
            continue;
        }
        if (c->in_start == c->in_end)
            break; /* nothing buffered (and maybe no buffer: conn.h) */
        const char *line;
        size_t len, consumed;
        smtp_line_status st =
            smtp_line_next(&s->lines, c->in + c->in_start,
                           c->in_end - c->in_start, &consumed, &line, &len);
        conn_consume(c, consumed); /* line stays valid until next read */
        if (st == SMTP_LINE_NEED_MORE)
            break;
        if (st == SMTP_LINE_TOO_LONG) {
            if (s->state == SESSION_AUTH) {
                /* RFC 4954 4: the exchange ends; the next line is a
                 * command again, never a credential. */
                smtp_reply(c, 500, "5.5.6",
                           "Error: authentication exchange line too long");
                smtp_auth_cancel(s);
            } else {
                smtp_reply(c, 500, "5.5.2", "Error: line too long");
            }
            session_error(s);
            continue;
        }
        if (st == SMTP_LINE_BARE_LF &&
            s->cfg->line_endings == SMTP_DATA_STRICT) {
            smtp_reply(c, 500, "5.5.2",
                       "Error: command lines must end with CRLF");
            smtp_auth_cancel(s);
            session_error(s);
            continue;
        }
        smtp_command_line(s, line, len);
    }
    if (s->state == SESSION_CLOSED)
        return;
    conn_set_reading(c, true); /* room was made in the buffer */
    /* The client closed its side and all it sent is answered: end once
     * the replies are out. */
    if (c->eof && s->wait == SESSION_WAIT_NONE && !output_blocked)
        session_quit(s);
    session_flush(s);
    if (s->state != SESSION_CLOSED)
        session_idle(s);
}

/* --- transport callbacks --- */

static void
on_input(struct conn *c, void *owner)
{
    struct session *s = owner;

    if (s->state == SESSION_GREETING) {
        /* Talking before the greeting: a bot that does not wait. */
        smtp_reply(c, 554, "5.5.0",
                   "%s Error: client sent data before the greeting",
                   session_hostname(s));
        log_event(LOG_LEVEL_INFO, s->id, "early_talker", "client=%s",
                  s->client_ip);
        conn_discard_input(c);
        session_quit(s);
        session_flush(s);
        return;
    }
    if (s->wait != SESSION_WAIT_NONE)
        return; /* kept for later; the wait's own timer runs on */
    session_touch(s);
    session_process(s);
}

static void
on_drained(struct conn *c, void *owner)
{
    struct session *s = owner;
    if (s->wait == SESSION_WAIT_STARTTLS) {
        tls_begin_handshake(s);
        return;
    }
    if (s->state == SESSION_QUITTING) {
        session_close(s, "quit");
        return;
    }
    if (s->wait == SESSION_WAIT_NONE)
        session_process(s);
}

static void
on_timeout(struct conn *c, void *owner)
{
    struct session *s = owner;
    if (s->wait == SESSION_WAIT_PROXY) {
        /* Nothing was said yet, and no SMTP is owed to a balancer. */
        log_event(LOG_LEVEL_INFO, s->id, "proxy_failed",
                  "reason=timeout proxy=%s", s->client_ip);
        session_close(s, "proxy_timeout");
        return;
    }
    if (!c->tls_handshaking) {
        smtp_reply(c, 421, "4.4.2", "%s Error: timeout exceeded",
                   session_hostname(s));
        conn_flush(c);
    }
    session_close(s, "timeout");
}

static void
on_error(struct conn *c, void *owner)
{
    struct session *s = owner;

    if (c->failed) {
        /* A reset or an I/O error, even after a half-close: gone. */
        session_close(s, "io_error");
        return;
    }
    /* The client shut its sending side. Commands it already sent still
     * get their replies: a client may half-close right after the final
     * dot or after a pipelined QUIT, and a 250 it never reads would make
     * it send the message again. */
    if (s->wait != SESSION_WAIT_NONE)
        return; /* an outcome is still owed: reply, then close */
    if (conn_pending_output(c) == 0)
        session_close(s, "client_closed");
    /* else: replies are still going out; on_drained finishes the rest. */
}

static void
on_tls_ready(struct conn *c, void *owner, int ok)
{
    struct session *s = owner;
    tls_handshake_done(s, ok);
}

static const struct conn_callbacks session_callbacks = {
    .on_input = on_input,
    .on_drained = on_drained,
    .on_timeout = on_timeout,
    .on_error = on_error,
    .on_tls_ready = on_tls_ready,
};

static void
sockaddr_to_text(const struct sockaddr_storage *ss, char *ip, size_t iplen,
                 int *port)
{
    const struct sockaddr *sa = (const struct sockaddr *)ss;
    ip[0] = '\0';
    *port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, (socklen_t)iplen);
        *port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], ip,
                      (socklen_t)iplen);
        else
            inet_ntop(AF_INET6, &in6->sin6_addr, ip, (socklen_t)iplen);
        *port = ntohs(in6->sin6_port);
    }
}

void
session_start(int fd, const struct sockaddr *peer, socklen_t peer_len,
              const struct listener_config *listener, const struct config *cfg,
              bool counted_ip)
{
    struct session *s = calloc(1, sizeof(*s));
    size_t in_cap = cfg->limits.command_line + 2;

    if (in_cap < SESSION_INPUT_BUFFER)
        in_cap = SESSION_INPUT_BUFFER;
    if (!s || conn_init(&s->conn, services_loop(), fd, in_cap, peer, peer_len,
                        &session_callbacks, s) < 0) {
        if (s && s->conn.in)
            conn_close(&s->conn);
        else
            close(fd);
        free(s);
        if (peer && !listener->proxy_protocol)
            client_limit_release(peer, counted_ip);
        return;
    }
    s->cfg = cfg;
    s->listener = listener;
    s->counted = !listener->proxy_protocol;
    s->counted_ip = counted_ip;
    s->state = SESSION_GREETING;
    id_generate(s->id);
    sockaddr_to_text(&s->conn.peer, s->client_ip, sizeof(s->client_ip),
                     &s->client_port);
    sockaddr_to_text(&s->conn.local, s->local_ip, sizeof(s->local_ip),
                     &s->local_port);
    smtp_line_init(&s->lines, cfg->limits.command_line);
    live_sessions++;
    metrics_connection_opened();
    s->live_next = live_list;
    if (live_list)
        live_list->live_prev = s;
    live_list = s;
    if (listener->proxy_protocol) {
        session_proxy_start(s); /* session_open() once the header is in */
        return;
    }
    session_open(s);
}

void
session_open(struct session *s)
{
    const struct config *cfg = s->cfg;

    /* The PROXY header may have replaced the address accept() gave. */
    sockaddr_to_text(&s->conn.peer, s->client_ip, sizeof(s->client_ip),
                     &s->client_port);
    log_event(LOG_LEVEL_INFO, s->id, "connect", "client=%s port=%d local=%s:%d",
              s->client_ip, s->client_port, s->local_ip, s->local_port);
    conn_set_reading(&s->conn, true);
    conn_touch(&s->conn, cfg->limits.command_timeout);
    if (cfg->dns.reverse)
        client_rdns_start(s, on_rdns_done);
    if (s->listener->tls == TLS_MODE_IMPLICIT) {
        s->wait = SESSION_WAIT_TLS;
        if (tls_start(s) < 0)
            session_close(s, "tls_setup_failed");
        return;
    }
    session_begin(s);
}

void
session_tls_established(struct session *s, bool implicit)
{
    if (implicit) {
        session_begin(s);
        return;
    }
    /* STARTTLS: forget what the client said in plaintext (RFC 3207 4.2).
     * What the server decided about the client (the modules' session
     * notes, from the connect hook say) stays: it was not said by the
     * client and the connect hook does not run again. */
    transaction_abort(s, "starttls");
    free(s->helo);
    s->helo = NULL;
    s->esmtp = false;
    free(s->auth_user);
    s->auth_user = NULL;
    session_set_state(s, SESSION_READY);
    smtp_line_init(&s->lines, s->cfg->limits.command_line);
    session_resume(s);
}
