/*
 * smtp_session.c - the RFC 5321 state machine of one session.
 *
 * Input is processed in batches: every complete command in the read buffer
 * is handled in turn and the replies are flushed together (RFC 2920). A
 * command whose hook goes PENDING makes the session busy: the remaining
 * input waits in the buffer until the hook's done callback has replied.
 * Each command is: check syntax and sequence (reply and stop on error),
 * run its hook, then proceed in the hook's done callback.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "client_limit.h"
#include "hook.h"
#include "id.h"
#include "log.h"
#include "message.h"
#include "notes.h"
#include "services.h"
#include "smtp_auth.h"
#include "smtp_reply.h"
#include "smtp_session.h"
#include "spool.h"
#include "tls.h"

#define SESSION_INPUT_BUFFER (32 * 1024)
#define SESSION_OUTPUT_HIGH_WATER (64 * 1024)
/* How long a hook may keep a session waiting (RFC 5321 4.5.3.2.6: a client
 * waits 10 minutes for the reply to the end of data). */
#define SESSION_HOOK_TIMEOUT 600.0

static struct session *dead_sessions;
static struct session *live_list;
static bool draining; /* shutting down: no new transactions */
static unsigned live_sessions;

static void session_process(struct session *s);
static void session_greet(struct session *s);
static void session_flush(struct session *s);
static void session_quit(struct session *s);
static const char *hostname(const struct session *s);

/* --- small helpers --- */

static void
make_id(char out[17])
{
    id_generate(out); /* random: ids reveal no connection counts */
}

static char *
dup_range(const char *s, size_t len)
{
    char *d = malloc(len + 1);
    if (d) {
        memcpy(d, s, len);
        d[len] = '\0';
    }
    return d;
}

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

const char *
session_id(const struct session *s)
{
    return s ? s->id : NULL;
}

void
session_drain(void)
{
    draining = true;
    /* Idle sessions go now; those in a transaction finish it first. */
    for (struct session *s = live_list, *next; s; s = next) {
        next = s->live_next;
        if (s->busy || s->tx || s->quitting ||
            (s->state != SESSION_READY && s->state != SESSION_HELO))
            continue;
        smtp_reply(&s->conn, 421, "4.3.2",
                   "%s Service shutting down, closing channel", hostname(s));
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
        if (!s->conn.tls_handshaking && !s->quitting) {
            smtp_reply(&s->conn, 421, "4.3.2",
                       "%s Service shutting down, closing channel",
                       s->cfg->hostname);
            conn_flush(&s->conn);
        }
        session_close(s, why);
    }
}

unsigned
session_count(void)
{
    return live_sessions;
}

static const char *
hostname(const struct session *s)
{
    return s->cfg->hostname;
}

/* Count a protocol error; past the limit the session ends with 421. */
static void
session_error(struct session *s)
{
    if (++s->errors >= s->cfg->limits.errors) {
        smtp_reply(&s->conn, 421, "4.7.0", "%s Error: too many errors",
                   hostname(s));
        log_event(LOG_LEVEL_INFO, s->id, "error_limit", "errors=%u", s->errors);
        s->quitting = true;
    }
}

/* Finish with a last reply already queued: flush, then close. */
static void
session_quit(struct session *s)
{
    s->quitting = true;
}

/* Run a decision hook; done replies. Without a context (it could not be
 * allocated) the session ends with a temporary error. */
void
session_hook_run(struct session *s, postern_hook hook, hook_done_fn done)
{
    s->busy = true;
    if (!s->ctx) {
        smtp_reply(&s->conn, 421, "4.3.0", "%s Error: out of memory",
                   hostname(s));
        s->quitting = true;
        s->busy = false;
        return;
    }
    /* The client waits for us now: the idle timeout must not fire. */
    conn_touch(&s->conn, SESSION_HOOK_TIMEOUT);
    hook_run(s->ctx, hook, done);
}

static void
session_notify(struct session *s, postern_hook hook)
{
    if (s->ctx && !hook_ctx_pending(s->ctx) && hook_chain_length(hook) > 0)
        s->ctx = hook_notify(s->ctx, hook);
}

/* --- transactions --- */

static void
transaction_free(struct transaction *tx)
{
    if (!tx)
        return;
    free(tx->mail_from);
    free(tx->mail_params);
    for (size_t i = 0; i < tx->n_rcpts; i++)
        free(tx->rcpts[i]);
    free(tx->rcpts);
    notes_free(&tx->notes);
    spool_free(tx->spool);
    free(tx->headers);
    free(tx->received);
    free(tx->bdat_error);
    free(tx);
}

/* End the transaction (RSET, end of message, EHLO, close). */
static void
transaction_end(struct session *s)
{
    if (!s->tx)
        return;
    session_notify(s, POSTERN_HOOK_RESET);
    transaction_free(s->tx);
    s->tx = NULL;
    if (s->state == SESSION_MAIL || s->state == SESSION_RCPT ||
        s->state == SESSION_DATA || s->state == SESSION_BDAT)
        s->state = SESSION_HELO;
}

static int
transaction_add_rcpt(struct transaction *tx, const char *addr, size_t len)
{
    /* The same mailbox twice is stored once. Local parts are
     * case-sensitive (RFC 5321 2.4); domains are not. */
    const char *at = memrchr(addr, '@', len);
    size_t local_len =
        at ? (size_t)(at - addr) : 0; /* <Postmaster>: any case */
    for (size_t i = 0; i < tx->n_rcpts; i++)
        if (strlen(tx->rcpts[i]) == len &&
            memcmp(tx->rcpts[i], addr, local_len) == 0 &&
            strncasecmp(tx->rcpts[i] + local_len, addr + local_len,
                        len - local_len) == 0)
            return 0;
    if (tx->n_rcpts == tx->cap_rcpts) {
        size_t cap = tx->cap_rcpts ? tx->cap_rcpts * 2 : 4;
        char **grown = realloc(tx->rcpts, cap * sizeof(*grown));
        if (!grown)
            return -1;
        tx->rcpts = grown;
        tx->cap_rcpts = cap;
    }
    char *copy = dup_range(addr, len);
    if (!copy)
        return -1;
    tx->rcpts[tx->n_rcpts++] = copy;
    return 0;
}

/* --- closing and freeing --- */

void
session_close(struct session *s, const char *why)
{
    if (s->state == SESSION_CLOSED)
        return;
    postern_timer_cancel(s->greet_timer);
    s->greet_timer = NULL;
    if (hook_ctx_pending(s->ctx)) {
        /* The module finishes later; it gets an orphaned context. */
        hook_ctx_release(s->ctx);
        s->ctx = hook_ctx_new(s);
    }
    if (s->ctx) {
        transaction_end(s);
        session_notify(s, POSTERN_HOOK_DISCONNECT);
    } else {
        transaction_free(s->tx);
        s->tx = NULL;
    }
    log_event(LOG_LEVEL_INFO, s->id, "disconnect",
              "reason=%s transactions=%u errors=%u", why, s->transactions,
              s->errors);
    s->state = SESSION_CLOSED;
    client_limit_release((const struct sockaddr *)&s->conn.peer, s->counted_ip);
    conn_close(&s->conn);
    tls_session_release(s);
    smtp_auth_free(s);
    live_sessions--;
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
    free((char *)s->rcpt_current);
    notes_free(&s->notes);
    free(s->helo);
    free(s->auth_user);
    free(s->tls_version);
    free(s->tls_cipher);
    free(s->tls_sni);
    free(s->tls_peer_dn);
    free(s);
}

void
session_reap(void)
{
    while (dead_sessions) {
        struct session *s = dead_sessions;
        dead_sessions = s->next_dead;
        session_free(s);
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
    if (s->quitting && conn_pending_output(&s->conn) == 0)
        session_close(s, "quit");
}

/* A hook finished or TLS completed: go on with buffered input. */
static void
session_unbusy(struct session *s)
{
    s->busy = false;
    if (s->state != SESSION_CLOSED)
        conn_touch(&s->conn,
                   s->state == SESSION_DATA || s->state == SESSION_BDAT
                       ? s->cfg->limits.data_timeout
                       : s->cfg->limits.command_timeout);
    /* Inside session_process already (the hook finished synchronously):
     * its loop goes on; recursing would grow the stack per command. */
    if (s->state == SESSION_CLOSED || s->processing)
        return;
    session_process(s);
}

void
session_resume(struct session *s)
{
    session_unbusy(s);
}

/* --- hook outcome helpers --- */

/* Reply for a DISCONNECT result, whatever the stage. */
static void
reply_disconnect(struct session *s, const struct hook_reply *r)
{
    smtp_reply_hook(&s->conn, r, 421, "4.7.0",
                    "Service not available, closing transmission channel");
    session_quit(s);
}

/* --- connect and greeting --- */

static void
on_connect_done(struct session *s, postern_result r,
                const struct hook_reply *reply)
{
    switch (r) {
    case POSTERN_CONTINUE:
    case POSTERN_ACCEPT:
        session_greet(s);
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
        reply_disconnect(s, reply);
        break;
    }
    if (s->quitting)
        log_event(LOG_LEVEL_INFO, s->id, "connect_refused", "client=%s",
                  s->client_ip);
    session_unbusy(s);
}

static void
session_greet(struct session *s)
{
    s->state = SESSION_READY;
    smtp_reply(&s->conn, 220, NULL, "%s ESMTP postern", hostname(s));
}

static void
session_run_connect(struct session *s)
{
    session_hook_run(s, POSTERN_HOOK_CONNECT, on_connect_done);
}

/* greet_pause expired without the client talking. */
static void
on_greet_pause(void *arg)
{
    struct session *s = arg;
    s->greet_timer = NULL;
    if (s->state == SESSION_CLOSED)
        return;
    session_run_connect(s);
    session_flush(s);
}

/* Called once the transport is ready (after implicit TLS, if any). */
static void
session_begin(struct session *s)
{
    if (s->cfg->limits.greet_pause > 0) {
        s->busy = true;
        s->greet_timer =
            postern_timer_start(s->cfg->limits.greet_pause, on_greet_pause, s);
        if (s->greet_timer)
            return;
    }
    session_run_connect(s);
    session_flush(s);
}

/* --- HELO / EHLO --- */

static void
on_helo_done(struct session *s, postern_result r,
             const struct hook_reply *reply)
{
    if (r == POSTERN_CONTINUE || r == POSTERN_ACCEPT) {
        s->state = SESSION_HELO;
        if (!s->esmtp) {
            smtp_reply(&s->conn, 250, NULL, "%s", hostname(s));
        } else {
            const char *lines[12];
            char size_line[40];
            size_t n = 0;
            lines[n++] = hostname(s);
            lines[n++] = "PIPELINING";
            snprintf(size_line, sizeof(size_line), "SIZE %" PRIu64,
                     s->cfg->limits.message_size);
            lines[n++] = size_line;
            if (tls_can_starttls(s))
                lines[n++] = "STARTTLS";
            if (smtp_auth_offered(s))
                lines[n++] = "AUTH PLAIN LOGIN";
            lines[n++] = "ENHANCEDSTATUSCODES";
            lines[n++] = "8BITMIME";
            lines[n++] = "SMTPUTF8";
            lines[n++] = "CHUNKING";
            smtp_reply_lines(&s->conn, 250, lines, n);
        }
    } else {
        free(s->helo);
        s->helo = NULL;
        s->esmtp = false;
        s->state = SESSION_READY;
        if (r == POSTERN_REJECT)
            smtp_reply_hook(&s->conn, reply, 550, "5.7.1",
                            "Error: HELO/EHLO rejected");
        else if (r == POSTERN_TEMPFAIL)
            smtp_reply_hook(&s->conn, reply, 451, "4.7.1",
                            "Error: HELO/EHLO temporarily rejected");
        else
            reply_disconnect(s, reply);
    }
    session_unbusy(s);
}

static void
cmd_helo(struct session *s, const struct smtp_command *cmd)
{
    bool ehlo = cmd->verb == SMTP_VERB_EHLO;

    if (cmd->arg_len == 0) {
        smtp_reply(&s->conn, 501, "5.5.4", "Syntax: %s hostname",
                   ehlo ? "EHLO" : "HELO");
        session_error(s);
        return;
    }
    if (!smtp_valid_helo(cmd->arg, cmd->arg_len)) {
        smtp_reply(&s->conn, 501, "5.5.4", "Error: invalid domain name");
        session_error(s);
        return;
    }
    transaction_end(s); /* EHLO is also a reset (RFC 5321 4.1.4) */
    free(s->helo);
    s->helo = dup_range(cmd->arg, cmd->arg_len);
    s->esmtp = ehlo;
    session_hook_run(s, POSTERN_HOOK_HELO, on_helo_done);
}

/* --- MAIL --- */

static void
on_mail_done(struct session *s, postern_result r,
             const struct hook_reply *reply)
{
    switch (r) {
    case POSTERN_CONTINUE:
    case POSTERN_ACCEPT:
        s->state = SESSION_MAIL;
        smtp_reply_hook(&s->conn, reply, 250, "2.1.0", "Ok");
        break;
    case POSTERN_REJECT:
        smtp_reply_hook(&s->conn, reply, 550, "5.7.1",
                        "Error: sender rejected");
        transaction_end(s);
        break;
    case POSTERN_TEMPFAIL:
        smtp_reply_hook(&s->conn, reply, 451, "4.7.1",
                        "Error: sender temporarily rejected");
        transaction_end(s);
        break;
    default:
        reply_disconnect(s, reply);
        transaction_end(s);
        break;
    }
    session_unbusy(s);
}

/*
 * Check MAIL parameters (RFC 1870 SIZE, RFC 6152 BODY, RFC 6531 SMTPUTF8,
 * RFC 4954 AUTH). Replies and returns -1 on the first problem.
 */
static int
mail_check_params(struct session *s, const struct smtp_path *path,
                  bool *smtputf8)
{
    const char *cursor = path->params;
    const char *end = path->params + path->params_len;
    struct smtp_param p;
    unsigned seen = 0;
    int rc;

    *smtputf8 = false;
    if (path->params_len > 0 && !s->esmtp) {
        smtp_reply(&s->conn, 555, "5.5.4",
                   "Error: parameters need EHLO, not HELO");
        return -1;
    }
    while ((rc = smtp_param_next(&cursor, end, &p)) == 1) {
        unsigned bit;
        if (smtp_param_is(&p, "SIZE")) {
            bit = 1;
            /* RFC 1870: 1*20DIGIT; beyond 64 bits it is simply too big */
            uint64_t size = 0;
            bool ok = p.value && p.value_len > 0 && p.value_len <= 20;
            for (size_t i = 0; ok && i < p.value_len; i++) {
                unsigned digit = (unsigned char)p.value[i] - '0';
                if (digit > 9)
                    ok = false;
                else if (size > (UINT64_MAX - digit) / 10)
                    size = UINT64_MAX;
                else
                    size = size * 10 + digit;
            }
            if (!ok) {
                smtp_reply(&s->conn, 501, "5.5.4", "Error: bad SIZE value");
                return -1;
            }
            if (size > s->cfg->limits.message_size) {
                smtp_reply(&s->conn, 552, "5.3.4",
                           "Error: message size exceeds fixed limit");
                return -2;
            }
        } else if (smtp_param_is(&p, "BODY")) {
            bit = 2;
            if (!p.value ||
                (!(p.value_len == 4 && strncasecmp(p.value, "7BIT", 4) == 0) &&
                 !(p.value_len == 8 &&
                   strncasecmp(p.value, "8BITMIME", 8) == 0))) {
                smtp_reply(&s->conn, 501, "5.5.4",
                           "Error: BODY must be 7BIT or 8BITMIME");
                return -1;
            }
        } else if (smtp_param_is(&p, "SMTPUTF8")) {
            bit = 4;
            if (p.value) {
                smtp_reply(&s->conn, 501, "5.5.4",
                           "Error: SMTPUTF8 takes no value");
                return -1;
            }
            *smtputf8 = true;
        } else if (smtp_param_is(&p, "AUTH")) {
            bit = 8; /* RFC 4954 5: accepted; identity is not trusted */
            if (!p.value) {
                smtp_reply(&s->conn, 501, "5.5.4", "Error: AUTH needs a value");
                return -1;
            }
        } else {
            smtp_reply(&s->conn, 555, "5.5.4", "Error: unsupported option %.*s",
                       (int)(p.key_len > 64 ? 64 : p.key_len), p.key);
            return -1;
        }
        if (seen & bit) {
            smtp_reply(&s->conn, 501, "5.5.4", "Error: duplicate parameter");
            return -1;
        }
        seen |= bit;
    }
    if (rc < 0) {
        smtp_reply(&s->conn, 501, "5.5.4", "Error: bad parameter syntax");
        return -1;
    }
    return 0;
}

static void
cmd_mail(struct session *s, const struct smtp_command *cmd)
{
    struct smtp_path path;
    bool smtputf8;

    if (s->state == SESSION_READY) {
        smtp_reply(&s->conn, 503, "5.5.1", "Error: send HELO/EHLO first");
        session_error(s);
        return;
    }
    if (s->tx) {
        smtp_reply(&s->conn, 503, "5.5.1", "Error: nested MAIL command");
        session_error(s);
        return;
    }
    if (s->listener->tls == TLS_MODE_STARTTLS && s->listener->tls_required &&
        !s->conn.tls_active) {
        smtp_reply(&s->conn, 530, "5.7.0",
                   "Must issue a STARTTLS command first");
        return;
    }
    if (s->listener->auth_required && !s->auth_user) {
        smtp_reply(&s->conn, 530, "5.7.0", "Authentication required");
        return;
    }
    switch (smtp_parse_mail_arg(cmd->arg, cmd->arg_len, &path)) {
    case SMTP_PATH_OK:
        break;
    case SMTP_PATH_NO_KEYWORD:
        smtp_reply(&s->conn, 501, "5.5.4", "Syntax: MAIL FROM:<address>");
        session_error(s);
        return;
    case SMTP_PATH_TOO_LONG:
        smtp_reply(&s->conn, 501, "5.1.7", "Error: sender address too long");
        session_error(s);
        return;
    default:
        smtp_reply(&s->conn, 501, "5.1.7", "Error: bad sender address syntax");
        session_error(s);
        return;
    }
    int rc = mail_check_params(s, &path, &smtputf8);
    if (rc < 0) {
        if (rc == -1)
            session_error(s);
        return;
    }
    if (path.non_ascii && !smtputf8) {
        smtp_reply(&s->conn, 553, "5.6.7",
                   "Error: non-ASCII address needs SMTPUTF8");
        return;
    }
    if (s->cfg->limits.transactions &&
        s->transactions >= s->cfg->limits.transactions) {
        smtp_reply(&s->conn, 452, "4.5.3",
                   "Error: too many messages in this session");
        return;
    }
    struct transaction *tx = calloc(1, sizeof(*tx));
    if (!tx || !(tx->mail_from = dup_range(path.addr, path.addr_len)) ||
        !(tx->mail_params = dup_range(path.params, path.params_len))) {
        transaction_free(tx);
        smtp_reply(&s->conn, 451, "4.3.0", "Error: out of memory");
        return;
    }
    make_id(tx->id);
    tx->smtputf8 = smtputf8;
    s->tx = tx;
    session_hook_run(s, POSTERN_HOOK_MAIL, on_mail_done);
}

/* --- RCPT --- */

/* user@[192.0.2.1]: local when the literal is the address the client
 * connected to (RFC 5321 4.1.3, as Postfix does for its own addresses). */
static bool
literal_is_local(const struct session *s, const char *lit, size_t len)
{
    char text[INET6_ADDRSTRLEN];
    unsigned char want[16], got[16];
    bool v6 = len > 5 && strncasecmp(lit, "IPv6:", 5) == 0;

    if (v6) {
        lit += 5;
        len -= 5;
    }
    if (len >= sizeof(text))
        return false;
    memcpy(text, lit, len);
    text[len] = '\0';
    int family = v6 ? AF_INET6 : AF_INET;
    return inet_pton(family, text, got) == 1 &&
           inet_pton(family, s->local_ip, want) == 1 &&
           memcmp(got, want, v6 ? 16 : 4) == 0;
}

static bool
rcpt_domain_is_local(const struct session *s, const char *addr)
{
    const char *at = strrchr(addr, '@');
    if (!at)
        return false;
    const char *domain = at + 1;
    size_t len = strlen(domain);
    if (len > 2 && domain[0] == '[' && domain[len - 1] == ']')
        return literal_is_local(s, domain + 1, len - 2);
    return config_is_local_domain(s->cfg, domain, len);
}

/* The built-in relay policy, last in the chain: no open relay. */
static bool
rcpt_relay_allowed(const struct session *s, const char *addr)
{
    return rcpt_domain_is_local(s, addr) || s->auth_user ||
           cidr_match(s->cfg->relay_networks, s->cfg->n_relay_networks,
                      (const struct sockaddr *)&s->conn.peer);
}

static void
on_rcpt_done(struct session *s, postern_result r,
             const struct hook_reply *reply)
{
    const char *addr = s->rcpt_current;
    bool postmaster = strchr(addr, '@') == NULL;

    if (r == POSTERN_CONTINUE) {
        if (postmaster || rcpt_relay_allowed(s, addr))
            r = POSTERN_ACCEPT;
        else {
            smtp_reply(&s->conn, 550, "5.7.1", "<%s>: Relay access denied",
                       addr);
            log_event(LOG_LEVEL_INFO, s->id, "relay_denied", "rcpt=<%s>", addr);
        }
    } else if (r == POSTERN_REJECT) {
        smtp_reply_hook(&s->conn, reply, 550, "5.7.1",
                        "Error: recipient rejected");
    } else if (r == POSTERN_TEMPFAIL) {
        smtp_reply_hook(&s->conn, reply, 451, "4.7.1",
                        "Error: recipient temporarily rejected");
    } else if (r == POSTERN_DISCONNECT) {
        reply_disconnect(s, reply);
    }
    if (r == POSTERN_ACCEPT) {
        if (transaction_add_rcpt(s->tx, addr, strlen(addr)) < 0) {
            smtp_reply(&s->conn, 451, "4.3.0", "Error: out of memory");
        } else {
            s->state = SESSION_RCPT;
            smtp_reply_hook(&s->conn, reply, 250, "2.1.5", "Ok");
        }
    }
    free((char *)s->rcpt_current);
    s->rcpt_current = NULL;
    session_unbusy(s);
}

static void
cmd_rcpt(struct session *s, const struct smtp_command *cmd)
{
    struct smtp_path path;

    if (!s->tx || s->state == SESSION_READY) {
        smtp_reply(&s->conn, 503, "5.5.1", "Error: need MAIL command");
        session_error(s);
        return;
    }
    if (s->tx->bdat) {
        smtp_reply(&s->conn, 503, "5.5.1", "Error: RCPT after BDAT");
        session_error(s);
        return;
    }
    switch (smtp_parse_rcpt_arg(cmd->arg, cmd->arg_len, &path)) {
    case SMTP_PATH_OK:
        break;
    case SMTP_PATH_NO_KEYWORD:
        smtp_reply(&s->conn, 501, "5.5.4", "Syntax: RCPT TO:<address>");
        session_error(s);
        return;
    case SMTP_PATH_TOO_LONG:
        smtp_reply(&s->conn, 501, "5.1.3", "Error: recipient address too long");
        session_error(s);
        return;
    default:
        smtp_reply(&s->conn, 501, "5.1.3",
                   "Error: bad recipient address syntax");
        session_error(s);
        return;
    }
    if (path.params_len > 0) {
        const char *cursor = path.params;
        struct smtp_param p;
        int rc = smtp_param_next(&cursor, path.params + path.params_len, &p);
        if (rc < 0)
            smtp_reply(&s->conn, 501, "5.5.4", "Error: bad parameter syntax");
        else
            smtp_reply(&s->conn, 555, "5.5.4", "Error: unsupported option %.*s",
                       (int)(p.key_len > 64 ? 64 : p.key_len), p.key);
        session_error(s);
        return;
    }
    if (path.non_ascii && !s->tx->smtputf8) {
        smtp_reply(&s->conn, 553, "5.6.7",
                   "Error: non-ASCII address needs SMTPUTF8");
        return;
    }
    if (s->tx->n_rcpts >= s->cfg->limits.recipients) {
        smtp_reply(&s->conn, 452, "4.5.3", "Error: too many recipients");
        return;
    }
    s->rcpt_current = dup_range(path.addr, path.addr_len);
    if (!s->rcpt_current) {
        smtp_reply(&s->conn, 451, "4.3.0", "Error: out of memory");
        return;
    }
    session_hook_run(s, POSTERN_HOOK_RCPT, on_rcpt_done);
}

/* --- the end of a message: message hook, then store hook --- */

static void
log_message(struct session *s, const char *event, int code)
{
    struct transaction *tx = s->tx;
    log_event(LOG_LEVEL_INFO, s->id, event,
              "id=%s from=<%s> rcpts=%zu size=%" PRIu64 " code=%d", tx->id,
              tx->mail_from, tx->n_rcpts, message_size(tx), code);
}

/* The reply for the message is queued: end the transaction. */
static void
message_finished(struct session *s)
{
    transaction_end(s);
    s->state = SESSION_HELO;
    session_unbusy(s);
}

static void
on_store_done(struct session *s, postern_result r,
              const struct hook_reply *reply)
{
    switch (r) {
    case POSTERN_ACCEPT: {
        char text[64];
        snprintf(text, sizeof(text), "Ok: queued as %s", s->tx->id);
        smtp_reply_hook(&s->conn, reply, 250, "2.0.0", text);
        log_message(s, "accepted", 250);
        break;
    }
    case POSTERN_CONTINUE: /* nobody stored it: the sender must retry */
        smtp_reply(&s->conn, 451, "4.3.0", "Error: message not stored");
        log_message(s, "not_stored", 451);
        break;
    case POSTERN_REJECT:
        smtp_reply_hook(&s->conn, reply, 554, "5.3.0",
                        "Error: message refused by storage");
        log_message(s, "rejected", 554);
        break;
    case POSTERN_TEMPFAIL:
        smtp_reply_hook(&s->conn, reply, 451, "4.3.0",
                        "Error: storage temporarily unavailable");
        log_message(s, "tempfail", 451);
        break;
    default:
        reply_disconnect(s, reply);
        log_message(s, "tempfail", 421);
        break;
    }
    message_finished(s);
}

static void
on_message_done(struct session *s, postern_result r,
                const struct hook_reply *reply)
{
    if (r == POSTERN_CONTINUE || r == POSTERN_ACCEPT) {
        session_hook_run(s, POSTERN_HOOK_STORE, on_store_done);
        return;
    }
    if (r == POSTERN_REJECT) {
        smtp_reply_hook(&s->conn, reply, 550, "5.7.1",
                        "Error: message content rejected");
        log_message(s, "rejected", 550);
    } else if (r == POSTERN_TEMPFAIL) {
        smtp_reply_hook(&s->conn, reply, 451, "4.7.1",
                        "Error: message temporarily rejected");
        log_message(s, "tempfail", 451);
    } else {
        reply_disconnect(s, reply);
    }
    message_finished(s);
}

/* All body bytes are in: check the receive flags, then run the hooks. */
static void
message_received(struct session *s, bool too_big, bool header_too_big,
                 bool bare_line_end)
{
    struct transaction *tx = s->tx;
    bool spool_ok = spool_finish(tx->spool) == 0;

    s->busy = true;
    s->transactions++; /* a message was sent, whatever becomes of it */
    tx->body_size = spool_size(tx->spool);
    if (too_big) {
        smtp_reply(&s->conn, 552, "5.3.4",
                   "Error: message size exceeds fixed limit");
        log_message(s, "too_big", 552);
    } else if (header_too_big) {
        smtp_reply(&s->conn, 552, "5.3.4",
                   "Error: message header size exceeds limit");
        log_message(s, "header_too_big", 552);
    } else if (bare_line_end) {
        smtp_reply(&s->conn, 550, "5.6.0",
                   "Error: bare CR or LF in message; lines must end "
                   "with CRLF");
        log_message(s, "bare_line_end", 550);
    } else if (!spool_ok) {
        smtp_reply(&s->conn, 451, "4.3.0", "Error: local spool failure");
        log_event(LOG_LEVEL_ERROR, s->id, "spool_error", "errno=%s",
                  strerror(spool_error(tx->spool)));
    } else if (message_add_received(s) < 0) {
        smtp_reply(&s->conn, 451, "4.3.0", "Error: out of memory");
    } else {
        session_hook_run(s, POSTERN_HOOK_MESSAGE, on_message_done);
        return;
    }
    message_finished(s);
}

/* --- DATA --- */

static int
spool_sink(void *arg, const char *buf, size_t len)
{
    return spool_write(arg, buf, len);
}

static bool
transaction_open_spool(struct session *s)
{
    s->tx->spool = spool_open(s->cfg->spool_dir);
    if (!s->tx->spool) {
        log_event(LOG_LEVEL_ERROR, s->id, "spool_error", "dir=%s errno=%s",
                  s->cfg->spool_dir, strerror(errno));
        return false;
    }
    return true;
}

static void
on_data_done(struct session *s, postern_result r,
             const struct hook_reply *reply)
{
    if (r == POSTERN_CONTINUE || r == POSTERN_ACCEPT) {
        if (!transaction_open_spool(s)) {
            smtp_reply(&s->conn, 451, "4.3.0", "Error: local spool failure");
        } else {
            smtp_data_init(
                &s->tx->rx, s->cfg->line_endings, s->cfg->limits.message_size,
                s->cfg->limits.header_size, spool_sink, s->tx->spool);
            s->state = SESSION_DATA;
            smtp_reply_hook(&s->conn, reply, 354, NULL,
                            "End data with <CR><LF>.<CR><LF>");
            conn_touch(&s->conn, s->cfg->limits.data_timeout);
        }
    } else if (r == POSTERN_REJECT) {
        smtp_reply_hook(&s->conn, reply, 554, "5.7.1", "Error: data rejected");
        transaction_end(s);
    } else if (r == POSTERN_TEMPFAIL) {
        smtp_reply_hook(&s->conn, reply, 451, "4.7.1",
                        "Error: data temporarily rejected");
        transaction_end(s);
    } else {
        reply_disconnect(s, reply);
    }
    session_unbusy(s);
}

/* Common sequence checks of DATA and BDAT; replies on failure. */
static bool
data_sequence_ok(struct session *s)
{
    if (!s->tx || s->state == SESSION_READY) {
        smtp_reply(&s->conn, 503, "5.5.1", "Error: need MAIL command");
        session_error(s);
        return false;
    }
    if (s->tx->n_rcpts == 0) {
        smtp_reply(&s->conn, 554, "5.5.1", "Error: no valid recipients");
        return false;
    }
    return true;
}

static void
cmd_data(struct session *s, const struct smtp_command *cmd)
{
    if (cmd->arg_len > 0) {
        smtp_reply(&s->conn, 501, "5.5.4", "Syntax: DATA");
        session_error(s);
        return;
    }
    if (!data_sequence_ok(s))
        return;
    if (s->tx->bdat) {
        smtp_reply(&s->conn, 503, "5.5.1", "Error: DATA after BDAT");
        session_error(s);
        return;
    }
    session_hook_run(s, POSTERN_HOOK_DATA, on_data_done);
}

/* Feed DATA bytes; true when the end was found (the loop goes on). */
static bool
data_step(struct session *s)
{
    struct conn *c = &s->conn;
    size_t len = c->in_end - c->in_start, consumed;

    if (len == 0)
        return false;
    smtp_data_status st =
        smtp_data_feed(&s->tx->rx, c->in + c->in_start, len, &consumed);
    conn_consume(c, consumed);
    if (st == SMTP_DATA_NEED_MORE)
        return false;
    const struct smtp_data_rx *rx = &s->tx->rx;
    conn_touch(c, s->cfg->limits.command_timeout);
    message_received(s, rx->too_big, rx->header_too_big, rx->bare_line_end);
    return true;
}

/* --- BDAT (RFC 3030) --- */

static void
bdat_chunk_done(struct session *s)
{
    struct transaction *tx = s->tx;

    s->state = SESSION_RCPT;
    conn_touch(&s->conn, s->cfg->limits.command_timeout);
    if (tx->bdat_discard) {
        /* The chunk was read only to stay in sync with the client. */
        if (tx->bdat_error)
            smtp_reply(&s->conn, tx->bdat_error->code, tx->bdat_error->enhanced,
                       "%s", tx->bdat_error->text);
        else
            smtp_reply(&s->conn, 451, "4.3.0", "Error: out of memory");
        bool throwaway = !tx->mail_from;
        session_state before = tx->state_before;
        transaction_end(s);
        if (throwaway)
            s->state = before; /* BDAT outside a transaction changes nothing */
        return;
    }
    if (!tx->bdat_last) {
        smtp_reply(&s->conn, 250, "2.0.0", "%" PRIu64 " octets received",
                   tx->bdat_chunk);
        return;
    }
    message_received(s, false, false, false);
}

/* The reply owed once the chunk being read (and thrown away) is over. */
static void
bdat_set_error(struct transaction *tx, int code, const char *enhanced,
               const char *text)
{
    free(tx->bdat_error);
    tx->bdat_error = calloc(1, sizeof(*tx->bdat_error));
    if (!tx->bdat_error)
        return; /* bdat_chunk_done answers 451 */
    tx->bdat_error->code = code;
    snprintf(tx->bdat_error->enhanced, sizeof(tx->bdat_error->enhanced), "%s",
             enhanced);
    snprintf(tx->bdat_error->text, sizeof(tx->bdat_error->text), "%s", text);
}

/* Read BDAT chunk bytes; true when the chunk is complete. */
static bool
bdat_step(struct session *s)
{
    struct conn *c = &s->conn;
    struct transaction *tx = s->tx;
    size_t len = c->in_end - c->in_start;

    if (tx->bdat_remaining > 0 && len == 0)
        return false;
    size_t take = len < tx->bdat_remaining ? len : (size_t)tx->bdat_remaining;
    if (!tx->bdat_discard && take > 0) {
        /* Past the size limit the bytes are only counted. */
        if (spool_size(tx->spool) + take <= s->cfg->limits.message_size)
            spool_write(tx->spool, c->in + c->in_start, take);
        else
            tx->bdat_discard = tx->bdat_failed = true;
    }
    conn_consume(c, take);
    tx->bdat_remaining -= take;
    if (tx->bdat_remaining > 0)
        return false;
    if (tx->bdat_discard && !tx->bdat_error && tx->spool) /* over the limit */
        bdat_set_error(tx, 552, "5.3.4",
                       "Error: message size exceeds fixed limit");
    bdat_chunk_done(s);
    return true;
}

/* Start reading a chunk that will be thrown away, replying err after. */
static void
bdat_discard_chunk(struct session *s, uint64_t size, int code,
                   const char *enhanced, const char *text)
{
    if (!s->tx) {
        /* A throwaway transaction carries the chunk state. */
        s->tx = calloc(1, sizeof(*s->tx));
        if (!s->tx) {
            session_close(s, "out_of_memory");
            return;
        }
    }
    struct transaction *tx = s->tx;
    if (!tx->mail_from)
        tx->state_before = s->state; /* a throwaway: restore it after */
    bdat_set_error(tx, code, enhanced, text);
    tx->bdat_discard = true;
    tx->bdat_remaining = size;
    tx->bdat_chunk = size;
    s->state = SESSION_BDAT;
    conn_touch(&s->conn, s->cfg->limits.data_timeout);
}

static void
bdat_begin_chunk(struct session *s)
{
    struct transaction *tx = s->tx;
    tx->bdat_discard = false;
    tx->bdat_remaining = tx->bdat_chunk;
    s->state = SESSION_BDAT;
    conn_touch(&s->conn, s->cfg->limits.data_timeout);
}

static void
on_bdat_data_done(struct session *s, postern_result r,
                  const struct hook_reply *reply)
{
    struct transaction *tx = s->tx;
    uint64_t size = tx->bdat_chunk;

    s->busy = false;
    if (r == POSTERN_CONTINUE || r == POSTERN_ACCEPT) {
        if (transaction_open_spool(s)) {
            tx->bdat = true;
            bdat_begin_chunk(s);
        } else {
            bdat_discard_chunk(s, size, 451, "4.3.0",
                               "Error: local spool failure");
        }
    } else if (r == POSTERN_REJECT) {
        bdat_discard_chunk(
            s, size, reply->code / 100 == 5 ? reply->code : 554,
            reply->enhanced[0] == '5' ? reply->enhanced : "5.7.1",
            reply->text[0] ? reply->text : "Error: data rejected");
    } else if (r == POSTERN_TEMPFAIL) {
        bdat_discard_chunk(s, size, reply->code / 100 == 4 ? reply->code : 451,
                           reply->enhanced[0] == '4' ? reply->enhanced
                                                     : "4.7.1",
                           reply->text[0] ? reply->text
                                          : "Error: data temporarily "
                                            "rejected");
    } else {
        reply_disconnect(s, reply);
    }
    session_unbusy(s);
}

static void
cmd_bdat(struct session *s, const struct smtp_command *cmd)
{
    unsigned long long size;
    bool last;

    if (!smtp_parse_bdat_arg(cmd->arg, cmd->arg_len, &size, &last)) {
        /* Without a size the chunk cannot be skipped: its bytes would be
         * read as commands. The stream cannot be resynchronised. */
        smtp_reply(&s->conn, 501, "5.5.4", "Syntax: BDAT size [LAST]");
        smtp_reply(&s->conn, 421, "4.7.0",
                   "%s Error: lost synchronisation, closing", hostname(s));
        session_quit(s);
        return;
    }
    if (!s->tx || s->state == SESSION_READY || s->tx->bdat_failed) {
        bdat_discard_chunk(s, size, 503, "5.5.1", "Error: need MAIL command");
        return;
    }
    if (s->tx->n_rcpts == 0) {
        bdat_discard_chunk(s, size, 554, "5.5.1", "Error: no valid recipients");
        return;
    }
    struct transaction *tx = s->tx;
    tx->bdat_chunk = size;
    tx->bdat_last = last;
    if (tx->bdat) {
        bdat_begin_chunk(s);
        return;
    }
    session_hook_run(s, POSTERN_HOOK_DATA, on_bdat_data_done);
}

/* --- the simple commands --- */

static void
cmd_rset(struct session *s, const struct smtp_command *cmd)
{
    if (cmd->arg_len > 0) {
        smtp_reply(&s->conn, 501, "5.5.4", "Syntax: RSET");
        session_error(s);
        return;
    }
    transaction_end(s);
    smtp_reply(&s->conn, 250, "2.0.0", "Ok");
}

static void
cmd_noop(struct session *s, const struct smtp_command *cmd)
{
    smtp_reply(&s->conn, 250, "2.0.0", "Ok");
}

static void
cmd_quit(struct session *s, const struct smtp_command *cmd)
{
    smtp_reply(&s->conn, 221, "2.0.0", "Bye");
    session_quit(s);
}

static void
cmd_vrfy(struct session *s, const struct smtp_command *cmd)
{
    if (cmd->arg_len == 0) {
        smtp_reply(&s->conn, 501, "5.5.4", "Syntax: VRFY address");
        session_error(s);
        return;
    }
    smtp_reply(&s->conn, 252, "2.0.0",
               "Cannot VRFY user, but will accept message and attempt "
               "delivery");
}

static void
cmd_expn(struct session *s, const struct smtp_command *cmd)
{
    smtp_reply(&s->conn, 502, "5.5.1", "Error: EXPN not supported");
}

static void
cmd_help(struct session *s, const struct smtp_command *cmd)
{
    smtp_reply(&s->conn, 214, "2.0.0",
               "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY "
               "HELP%s%s",
               tls_can_starttls(s) ? " STARTTLS" : "",
               smtp_auth_offered(s) ? " AUTH" : "");
}

static void
cmd_unknown(struct session *s, const struct smtp_command *cmd)
{
    smtp_reply(&s->conn, 500, "5.5.2", "Error: command not recognized");
    session_error(s);
}

static void
cmd_starttls(struct session *s, const struct smtp_command *cmd)
{
    tls_command(s, cmd);
}

static void
cmd_auth(struct session *s, const struct smtp_command *cmd)
{
    smtp_auth_command(s, cmd);
}

typedef void (*command_fn)(struct session *, const struct smtp_command *);

static const command_fn commands[] = {
    [SMTP_VERB_UNKNOWN] = cmd_unknown, [SMTP_VERB_HELO] = cmd_helo,
    [SMTP_VERB_EHLO] = cmd_helo,       [SMTP_VERB_MAIL] = cmd_mail,
    [SMTP_VERB_RCPT] = cmd_rcpt,       [SMTP_VERB_DATA] = cmd_data,
    [SMTP_VERB_BDAT] = cmd_bdat,       [SMTP_VERB_RSET] = cmd_rset,
    [SMTP_VERB_NOOP] = cmd_noop,       [SMTP_VERB_QUIT] = cmd_quit,
    [SMTP_VERB_VRFY] = cmd_vrfy,       [SMTP_VERB_EXPN] = cmd_expn,
    [SMTP_VERB_HELP] = cmd_help,       [SMTP_VERB_STARTTLS] = cmd_starttls,
    [SMTP_VERB_AUTH] = cmd_auth,
};

/* --- the input loop --- */

/* One command line (without its line end). */
static void
session_line(struct session *s, const char *line, size_t len)
{
    struct smtp_command cmd;

    if (s->state == SESSION_AUTH) {
        smtp_auth_line(s, line, len);
        return;
    }
    smtp_verb verb = smtp_command_parse(line, len, &cmd);
    if (draining && !s->tx && verb != SMTP_VERB_QUIT) {
        /* RFC 5321 3.8: between transactions, say goodbye. */
        smtp_reply(&s->conn, 421, "4.3.2",
                   "%s Service shutting down, closing channel", hostname(s));
        session_quit(s);
        return;
    }
    if (log_enabled(LOG_LEVEL_DEBUG) && verb != SMTP_VERB_AUTH)
        log_event(LOG_LEVEL_DEBUG, s->id, "command", "line=\"%.*s\"",
                  (int)(len > 200 ? 200 : len), line);
    commands[verb](s, &cmd);
}

static void
session_process(struct session *s)
{
    struct conn *c = &s->conn;
    bool output_blocked = false;

    s->processing = true;
    while (!s->busy && !s->quitting && s->state != SESSION_CLOSED) {
        if (conn_pending_output(c) > SESSION_OUTPUT_HIGH_WATER) {
            /* Send what we have; stop only while the client is not
             * reading (then on_drained resumes us). */
            if (conn_flush(c) < 0) {
                s->processing = false;
                session_close(s, "write_error");
                return;
            }
            if (conn_pending_output(c) > SESSION_OUTPUT_HIGH_WATER) {
                output_blocked = true;
                break;
            }
        }
        if (s->state == SESSION_DATA) {
            if (!data_step(s))
                break;
            continue;
        }
        if (s->state == SESSION_BDAT) {
            if (!bdat_step(s))
                break;
            continue;
        }
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
        session_line(s, line, len);
    }
    s->processing = false;
    if (s->state == SESSION_CLOSED)
        return;
    conn_set_reading(c, true); /* room was made in the buffer */
    /* The client closed its side and all it sent is answered: end once
     * the replies are out. */
    if (s->peer_gone && !s->busy && !output_blocked)
        s->quitting = true;
    session_flush(s);
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
                   hostname(s));
        log_event(LOG_LEVEL_INFO, s->id, "early_talker", "client=%s",
                  s->client_ip);
        conn_discard_input(c);
        session_quit(s);
        session_flush(s);
        return;
    }
    conn_touch(c, s->state == SESSION_DATA || s->state == SESSION_BDAT
                      ? s->cfg->limits.data_timeout
                      : s->cfg->limits.command_timeout);
    if (!s->busy)
        session_process(s);
}

static void
on_drained(struct conn *c, void *owner)
{
    struct session *s = owner;
    if (s->tls_after_drain) {
        s->tls_after_drain = false;
        tls_begin_handshake(s);
        return;
    }
    if (s->quitting) {
        session_close(s, "quit");
        return;
    }
    if (!s->busy)
        session_process(s);
}

static void
on_timeout(struct conn *c, void *owner)
{
    struct session *s = owner;
    if (!c->tls_handshaking) {
        smtp_reply(c, 421, "4.4.2", "%s Error: timeout exceeded", hostname(s));
        conn_flush(c);
    }
    session_close(s, "timeout");
}

static void
on_error(struct conn *c, void *owner)
{
    struct session *s = owner;

    if (!c->eof) {
        session_close(s, "io_error");
        return;
    }
    /* The client shut its sending side. Commands it already sent still
     * get their replies: a client may half-close right after the final
     * dot or after a pipelined QUIT, and a 250 it never reads would make
     * it send the message again. A client that is really gone resets the
     * connection, which is an I/O error above. */
    s->peer_gone = true;
    if (s->busy)
        return; /* the hook's outcome is still owed: reply, then close */
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

void
session_start(int fd, const struct sockaddr *peer, socklen_t peer_len,
              const struct listener_config *listener, const struct config *cfg,
              bool counted_ip)
{
    struct session *s = calloc(1, sizeof(*s));
    size_t in_cap = cfg->limits.command_line + 2;

    if (in_cap < SESSION_INPUT_BUFFER)
        in_cap = SESSION_INPUT_BUFFER;
    if (!s ||
        conn_init(&s->conn, services_loop(), fd, in_cap, peer, peer_len,
                  &session_callbacks, s) < 0 ||
        !(s->ctx = hook_ctx_new(s))) {
        if (s && s->conn.in)
            conn_close(&s->conn);
        else
            close(fd);
        free(s);
        if (peer)
            client_limit_release(peer, counted_ip);
        return;
    }
    s->cfg = cfg;
    s->listener = listener;
    s->counted_ip = counted_ip;
    s->state = SESSION_GREETING;
    make_id(s->id);
    sockaddr_to_text(&s->conn.peer, s->client_ip, sizeof(s->client_ip),
                     &s->client_port);
    sockaddr_to_text(&s->conn.local, s->local_ip, sizeof(s->local_ip),
                     &s->local_port);
    smtp_line_init(&s->lines, cfg->limits.command_line);
    live_sessions++;
    s->live_next = live_list;
    if (live_list)
        live_list->live_prev = s;
    live_list = s;
    log_event(LOG_LEVEL_INFO, s->id, "connect", "client=%s port=%d local=%s:%d",
              s->client_ip, s->client_port, s->local_ip, s->local_port);
    conn_set_reading(&s->conn, true);
    conn_touch(&s->conn, cfg->limits.command_timeout);
    if (listener->tls == TLS_MODE_IMPLICIT) {
        s->busy = true;
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
    /* STARTTLS: forget everything learned in plaintext (RFC 3207 4.2). */
    transaction_end(s);
    free(s->helo);
    s->helo = NULL;
    s->esmtp = false;
    free(s->auth_user);
    s->auth_user = NULL;
    notes_free(&s->notes);
    s->state = SESSION_READY;
    smtp_line_init(&s->lines, s->cfg->limits.command_line);
    session_unbusy(s);
}
