/*
 * milter.c - the milter module: postern as the MTA side of the Sendmail
 * milter protocol (version 6, as Postfix speaks it), so that the filters
 * people run with Sendmail or Postfix (OpenDKIM, OpenDMARC, rspamd...)
 * plug into postern. One instance talks to one milter; several milters are
 * several instances, in the order of their plugins.d files.
 *
 * Each SMTP session gets its own connection to the milter, opened at the
 * first hook that reaches the instance and kept in a session note. Every
 * hook becomes milter events: connect (SMFIC_CONNECT), helo, mail, rcpt,
 * data, and at the message hook the header fields one by one (raw values),
 * the end of the headers, the body in chunks of at most 65535 bytes read
 * from the spool, then the end of the message, whose answer may carry
 * changes (headers, body, recipients, sender, quarantine) that are
 * applied through postern/message.h before the store hook. Each event is
 * preceded by the macros of its stage (SMFIC_MACRO). An event the milter
 * did not see because an earlier module decided the hook for everyone
 * (an ACCEPT stops the chain) is sent before the next one, so the milter
 * always sees a whole conversation.
 *
 * Nothing blocks: the handler goes PENDING and resumes from the
 * connection's callbacks (milter_session.c). A milter that is down, sends
 * garbage, closes or stalls costs the session the instance's
 * default_action, logged with the reason; the next session reconnects.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "milter.h"

struct milter_module {
    struct milter_config cfg;
    char *note_key;
};

typedef enum milter_fate {
    MILTER_ACTIVE,
    MILTER_ACCEPTED, /* accepted the session: no more events */
    MILTER_REJECTED, /* refused the session at connect or helo */
    MILTER_FAILED    /* down or misbehaved: default_action */
} milter_fate;

typedef enum milter_event {
    EV_CONNECT,
    EV_HELO,
    EV_MAIL,
    EV_RCPT,
    EV_CATCHUP_RCPTS,
    EV_DATA,
    EV_MESSAGE
} milter_event;

typedef enum milter_phase {
    PHASE_HEADERS,
    PHASE_EOH,
    PHASE_BODY,
    PHASE_EOB,
    PHASE_EDITS
} milter_phase;

/* A decision to give back: result and reply. */
struct milter_verdict {
    postern_result result;
    bool has_reply;
    struct milter_replycode reply;
};

/* The session note: the connection and where the conversation is. */
struct milter_state {
    const struct milter_module *mod;
    struct milter_conn conn;
    milter_fate fate;
    const char *fail_reason;
    struct milter_verdict *refusal; /* MILTER_REJECTED: what later gets */
    uint32_t protocol, actions;
    char *macros[MILTER_STAGE_COUNT]; /* borrowed: milter's or config's */

    /* what the milter has seen */
    bool negotiated;
    bool connect_sent, helo_sent, in_tx, accept_tx, data_sent;
    char skip_cmd;
    char *tx_id;
    char **rcpts_sent;
    size_t n_rcpts_sent;

    /* the hook call in progress */
    postern_ctx *ctx;
    postern_hook hook;
    milter_event plan[8];
    size_t n_plan, at;
    bool in_handler, done, awaiting;
    unsigned depth;    /* inside a connection callback */
    char awaiting_cmd; /* the command whose reply is due */
    struct milter_verdict verdict;

    /* the message hook */
    milter_phase phase;
    size_t hdr_i;
    postern_message_reader *reader;
    uint8_t *chunk;
    bool body_eof;
    postern_body_writer *writer;
    bool body_cr; /* the replacement's last byte written was CR */
    bool body_lf; /* ... was LF (or nothing was written yet) */
    bool body_replaced;
    bool edit_failed;
    struct milter_verdict edit_verdict;
};

static void milter_run(struct milter_state *ms);
static void milter_message_close(struct milter_state *ms);

/* --- logging and decisions ------------------------------------------------ */

static const char *
milter_result_name(postern_result r)
{
    switch (r) {
    case POSTERN_CONTINUE:
        return "continue";
    case POSTERN_ACCEPT:
        return "accept";
    case POSTERN_REJECT:
        return "reject";
    case POSTERN_TEMPFAIL:
        return "tempfail";
    case POSTERN_DISCONNECT:
        return "disconnect";
    case POSTERN_DISCARD:
        return "discard";
    default:
        return "pending";
    }
}

static void
milter_verdict_text(struct milter_verdict *v, postern_result result, int code,
                    const char *enhanced, const char *text)
{
    memset(v, 0, sizeof *v);
    v->result = result;
    if (text == NULL)
        return;
    v->has_reply = true;
    v->reply.code = code;
    snprintf(v->reply.enhanced, sizeof v->reply.enhanced, "%s", enhanced);
    v->reply.n_lines = 1;
    snprintf(v->reply.lines[0], sizeof v->reply.lines[0], "%s", text);
}

/* Attach the verdict's reply to ctx and return its result. At connect the
 * code is the stage's own (421 or 554: a greeting has no other), the text
 * stays. */
static postern_result
milter_verdict_apply(postern_ctx *ctx, postern_hook hook,
                     const struct milter_verdict *v)
{
    if (!v->has_reply || v->result == POSTERN_CONTINUE ||
        v->result == POSTERN_DISCARD || v->result == POSTERN_ACCEPT)
        return v->result;
    const struct milter_replycode *rc = &v->reply;
    int code = rc->code;
    if (hook == POSTERN_HOOK_CONNECT && v->result != POSTERN_DISCONNECT)
        code = 0;
    if (v->result == POSTERN_DISCONNECT && code != 421 && code / 100 != 5)
        code = 0;
    postern_reply(ctx, code, rc->enhanced[0] ? rc->enhanced : NULL, "%s",
                  rc->lines[0]);
    for (size_t i = 1; i < rc->n_lines; i++)
        postern_reply_line(ctx, "%s", rc->lines[i]);
    return v->result;
}

/* What the default action gives at hook. */
static void
milter_default_verdict(const struct milter_module *mod,
                       struct milter_verdict *v)
{
    switch (mod->cfg.default_action) {
    case MILTER_DEFAULT_ACCEPT:
        milter_verdict_text(v, POSTERN_CONTINUE, 0, NULL, NULL);
        break;
    case MILTER_DEFAULT_REJECT:
        milter_verdict_text(v, POSTERN_REJECT, 550, "5.7.1",
                            "Service unavailable");
        break;
    default:
        milter_verdict_text(v, POSTERN_TEMPFAIL, 451, "4.7.1",
                            "Service unavailable - try again later");
        break;
    }
}

/* The hook call ends with v. In the handler, the result is returned by
 * it; from a callback, the context resumes (the caller's last act). */
static void
milter_finish(struct milter_state *ms, const struct milter_verdict *v)
{
    if (ms->done || ms->ctx == NULL)
        return;
    ms->verdict = *v;
    ms->done = true;
    ms->awaiting = false;
    if (ms->hook == POSTERN_HOOK_MESSAGE)
        milter_message_close(ms); /* an uncommitted body is dropped */
    milter_conn_settle(&ms->conn);
}

/* Called last by every callback: resume a hook call that is over. */
static void
milter_settle(struct milter_state *ms)
{
    if (!ms->done || ms->in_handler || ms->depth > 0 || ms->ctx == NULL)
        return;
    postern_ctx *ctx = ms->ctx;
    ms->ctx = NULL;
    ms->done = false;
    postern_result r = milter_verdict_apply(ctx, ms->hook, &ms->verdict);
    postern_log(ctx, POSTERN_LOG_DEBUG, "milter=%s hook=%s result=%s",
                postern_log_value(ms->mod->cfg.instance),
                postern_hook_name(ms->hook), milter_result_name(r));
    postern_resume(ctx, r);
}

/* The milter failed: it gets nothing more this session, and the hook in
 * progress (if any) ends with the default action. */
static void
milter_failed(struct milter_state *ms, const char *reason)
{
    if (ms->fate == MILTER_FAILED)
        return;
    ms->fate = MILTER_FAILED;
    ms->fail_reason = reason;
    milter_conn_fail(&ms->conn);
    static const char *const actions[] = {"tempfail", "accept", "reject"};
    postern_log(ms->ctx, POSTERN_LOG_WARNING,
                "milter=%s socket=%s event=failure reason=%s action=%s",
                postern_log_value(ms->mod->cfg.instance),
                postern_log_value(ms->mod->cfg.socket),
                postern_log_value(reason),
                actions[ms->mod->cfg.default_action]);
    if (ms->ctx != NULL) {
        struct milter_verdict v;
        milter_default_verdict(ms->mod, &v);
        milter_finish(ms, &v);
    }
}

/* --- macros --------------------------------------------------------------- */

static const char *
milter_macro_value(struct milter_state *ms, const char *name, char *buf,
                   size_t size)
{
    const postern_ctx *ctx = ms->ctx;
    const struct milter_config *cfg = &ms->mod->cfg;
    const char *v = NULL;

    if (strcmp(name, "j") == 0)
        return cfg->hostname;
    if (strcmp(name, "daemon_name") == 0)
        return cfg->daemon_name;
    if (strcmp(name, "v") == 0)
        return "postern";
    if (strcmp(name, "i") == 0)
        return postern_transaction_id(ctx);
    if (strcmp(name, "_") == 0) {
        const char *rdns = postern_client_rdns(ctx);
        const char *ip = postern_client_ip(ctx);
        if (ip == NULL)
            return NULL;
        snprintf(buf, size, "%s [%s]", rdns ? rdns : "unknown", ip);
        return buf;
    }
    if (strcmp(name, "client_addr") == 0)
        return postern_client_ip(ctx);
    if (strcmp(name, "client_port") == 0 || strcmp(name, "daemon_port") == 0) {
        int port =
            name[0] == 'c' ? postern_client_port(ctx) : postern_local_port(ctx);
        snprintf(buf, size, "%d", port);
        return buf;
    }
    if (strcmp(name, "client_name") == 0) {
        v = postern_client_rdns(ctx);
        return v ? v : "unknown";
    }
    if (strcmp(name, "client_ptr") == 0)
        return postern_client_rdns(ctx);
    if (strcmp(name, "daemon_addr") == 0 || strcmp(name, "if_addr") == 0)
        return postern_local_ip(ctx);
    if (strcmp(name, "if_name") == 0)
        return cfg->hostname;
    if (strcmp(name, "auth_authen") == 0)
        return postern_auth_user(ctx);
    if (strcmp(name, "auth_type") == 0)
        return postern_auth_user(ctx) ? postern_auth_mechanism(ctx) : NULL;
    if (strcmp(name, "tls_version") == 0)
        return postern_tls_active(ctx) ? postern_tls_version(ctx) : NULL;
    if (strcmp(name, "cipher") == 0)
        return postern_tls_active(ctx) ? postern_tls_cipher(ctx) : NULL;
    if (strcmp(name, "cert_subject") == 0)
        return postern_tls_active(ctx) ? postern_tls_peer_dn(ctx) : NULL;
    if (strcmp(name, "mail_addr") == 0)
        return postern_mail_from(ctx);
    if (strcmp(name, "rcpt_addr") == 0)
        return postern_rcpt_current(ctx);
    if (strcmp(name, "mail_mailer") == 0 || strcmp(name, "rcpt_mailer") == 0)
        return "smtp";
    return NULL;
}

/* SMFIC_MACRO for the command cmd with the stage's list, into b. Nothing
 * when no macro has a value. */
static int
milter_macros_add(struct milter_state *ms, struct milter_buf *b, char cmd,
                  enum milter_stage stage)
{
    const char *list = ms->macros[stage];
    char name[64], value_buf[600];
    bool bad = false;
    size_t start = 0;
    bool begun = false;

    while (list != NULL &&
           (list = milter_macro_next(list, name, sizeof name, &bad)) != NULL) {
        const char *value =
            milter_macro_value(ms, name, value_buf, sizeof value_buf);
        if (value == NULL)
            continue;
        if (!begun) {
            if (milter_packet_begin(b, SMFIC_MACRO, &start) != 0 ||
                milter_packet_add(b, &cmd, 1) != 0)
                return -1;
            begun = true;
        }
        char braced[70];
        if (strlen(name) == 1)
            snprintf(braced, sizeof braced, "%s", name);
        else
            snprintf(braced, sizeof braced, "{%s}", name);
        if (milter_packet_add_str(b, braced) != 0 ||
            milter_packet_add_str(b, value) != 0)
            return -1;
    }
    return begun ? milter_packet_end(b, start) : 0;
}

/* --- sending events ------------------------------------------------------- */

static double
milter_timeout_for(const struct milter_state *ms, char cmd)
{
    switch (cmd) {
    case SMFIC_HEADER:
    case SMFIC_EOH:
    case SMFIC_BODY:
    case SMFIC_BODYEOB:
        return ms->mod->cfg.content_timeout;
    default:
        return ms->mod->cfg.command_timeout;
    }
}

/*
 * Send one event: its macros, then the command unless the milter asked
 * not to get it (no_flag), then wait for the reply unless it asked to
 * send none (nr_flag). b holds the command's data already (after a
 * packet_begin at start). 1 when a reply is due, 0 when not, -1 when the
 * connection failed.
 */
static int
milter_emit(struct milter_state *ms, char cmd, enum milter_stage stage,
            uint32_t no_flag, uint32_t nr_flag, struct milter_buf *cmd_buf)
{
    struct milter_buf b = {0};

    if (ms->skip_cmd != 0 && ms->skip_cmd != cmd)
        ms->skip_cmd = 0;
    if (ms->skip_cmd == cmd) {
        milter_buf_free(cmd_buf);
        return 0; /* SMFIR_SKIP: no more of these */
    }
    if (milter_macros_add(ms, &b, cmd, stage) != 0 ||
        ((ms->protocol & no_flag) == 0 &&
         milter_buf_append(&b, cmd_buf->data, cmd_buf->len) != 0)) {
        milter_buf_free(&b);
        milter_buf_free(cmd_buf);
        milter_failed(ms, "out of memory");
        return -1;
    }
    milter_buf_free(cmd_buf);
    int rc = b.len > 0 ? milter_conn_send(&ms->conn, &b) : 0;
    milter_buf_free(&b);
    if (rc != 0) {
        if (ms->fate != MILTER_FAILED)
            milter_failed(ms, "write failed");
        return -1;
    }
    if ((ms->protocol & no_flag) != 0 || (ms->protocol & nr_flag) != 0)
        return 0;
    ms->awaiting = true;
    ms->awaiting_cmd = cmd;
    milter_conn_expect(&ms->conn, milter_timeout_for(ms, cmd));
    return 1;
}

/* A command's packet with string arguments (NULL-terminated list). */
static int
milter_cmd_strings(struct milter_buf *b, char cmd, const char *const *args)
{
    size_t start;

    if (milter_packet_begin(b, cmd, &start) != 0)
        return -1;
    for (; *args != NULL; args++)
        if (milter_packet_add_str(b, *args) != 0)
            return -1;
    return milter_packet_end(b, start);
}

static int
milter_send_connect(struct milter_state *ms)
{
    struct milter_buf b = {0};
    const char *ip = postern_client_ip(ms->ctx);
    const char *rdns = postern_client_rdns(ms->ctx);
    char host[300], addr[64];
    char family = '4';
    size_t start;

    snprintf(addr, sizeof addr, "%s", ip ? ip : "");
    if (strncasecmp(addr, "::ffff:", 7) == 0 && strchr(addr, '.') != NULL)
        memmove(addr, addr + 7, strlen(addr + 7) + 1);
    else if (strchr(addr, ':') != NULL)
        family = '6';
    if (addr[0] == '\0')
        family = 'U';
    if (rdns != NULL)
        snprintf(host, sizeof host, "%s", rdns);
    else
        snprintf(host, sizeof host, "[%s]", addr);
    ms->connect_sent = true;
    if (milter_packet_begin(&b, SMFIC_CONNECT, &start) != 0 ||
        milter_packet_add_str(&b, host) != 0 ||
        milter_packet_add(&b, &family, 1) != 0 ||
        (family != 'U' &&
         (milter_packet_add_u16(&b, (uint16_t)postern_client_port(ms->ctx)) !=
              0 ||
          milter_packet_add_str(&b, addr) != 0)) ||
        milter_packet_end(&b, start) != 0) {
        milter_buf_free(&b);
        milter_failed(ms, "out of memory");
        return -1;
    }
    return milter_emit(ms, SMFIC_CONNECT, MILTER_STAGE_CONNECT, SMFIP_NOCONNECT,
                       SMFIP_NR_CONN, &b);
}

/* SMFIC_ABORT when the milter is inside a transaction (no reply). */
static void
milter_abort_tx(struct milter_state *ms)
{
    if (ms->in_tx && ms->conn.state == MILTER_CONN_READY) {
        struct milter_buf b = {0};
        size_t start;
        if (milter_packet_begin(&b, SMFIC_ABORT, &start) != 0 ||
            milter_packet_end(&b, start) != 0 ||
            milter_conn_send(&ms->conn, &b) != 0) {
            milter_buf_free(&b);
            if (ms->fate != MILTER_FAILED)
                milter_failed(ms, "write failed");
            return;
        }
        milter_buf_free(&b);
    }
    ms->in_tx = false;
}

static void
milter_tx_forget(struct milter_state *ms)
{
    for (size_t i = 0; i < ms->n_rcpts_sent; i++)
        free(ms->rcpts_sent[i]);
    free(ms->rcpts_sent);
    ms->rcpts_sent = NULL;
    ms->n_rcpts_sent = 0;
    free(ms->tx_id);
    ms->tx_id = NULL;
    ms->accept_tx = false;
    ms->data_sent = false;
    ms->skip_cmd = 0;
}

/* A new transaction (another id than the one the milter has seen):
 * abort the old one. */
static void
milter_tx_check(struct milter_state *ms)
{
    const char *id = postern_transaction_id(ms->ctx);

    if (ms->tx_id != NULL && (id == NULL || strcmp(id, ms->tx_id) != 0)) {
        milter_abort_tx(ms);
        milter_tx_forget(ms);
    }
    if (ms->tx_id == NULL && id != NULL)
        ms->tx_id = strdup(id);
}

static int
milter_send_mail(struct milter_state *ms)
{
    static const char *const keys[] = {"SIZE",  "BODY", "SMTPUTF8",  "RET",
                                       "ENVID", "AUTH", "REQUIRETLS"};
    const char *from = postern_mail_from(ms->ctx);
    char *args[9] = {0};
    size_t n = 0;
    int rc = -1;
    struct milter_buf b = {0};

    if (asprintf(&args[n++], "<%s>", from ? from : "") < 0)
        goto out;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *v = postern_mail_param(ms->ctx, keys[i]);
        if (v == NULL)
            continue;
        if ((v[0] ? asprintf(&args[n], "%s=%s", keys[i], v)
                  : asprintf(&args[n], "%s", keys[i])) < 0) {
            args[n] = NULL;
            goto out;
        }
        n++;
    }
    ms->in_tx = true;
    if (milter_cmd_strings(&b, SMFIC_MAIL, (const char *const *)args) != 0)
        goto out;
    rc = milter_emit(ms, SMFIC_MAIL, MILTER_STAGE_MAIL, SMFIP_NOMAIL,
                     SMFIP_NR_MAIL, &b);
out:
    for (size_t i = 0; i < n; i++)
        free(args[i]);
    if (rc < 0 && ms->fate != MILTER_FAILED) {
        milter_buf_free(&b);
        milter_failed(ms, "out of memory");
    }
    return rc;
}

static int
milter_send_rcpt(struct milter_state *ms, const char *rcpt)
{
    char *arg = NULL;
    struct milter_buf b = {0};
    char **grown =
        realloc(ms->rcpts_sent, (ms->n_rcpts_sent + 1) * sizeof *grown);

    if (grown != NULL)
        ms->rcpts_sent = grown;
    if (grown == NULL || asprintf(&arg, "<%s>", rcpt) < 0 ||
        (ms->rcpts_sent[ms->n_rcpts_sent] = strdup(rcpt)) == NULL) {
        free(arg);
        milter_failed(ms, "out of memory");
        return -1;
    }
    ms->n_rcpts_sent++;
    const char *args[] = {arg, NULL};
    int rc = milter_cmd_strings(&b, SMFIC_RCPT, args);
    free(arg);
    if (rc != 0) {
        milter_buf_free(&b);
        milter_failed(ms, "out of memory");
        return -1;
    }
    return milter_emit(ms, SMFIC_RCPT, MILTER_STAGE_RCPT, SMFIP_NORCPT,
                       SMFIP_NR_RCPT, &b);
}

static bool
milter_rcpt_was_sent(const struct milter_state *ms, const char *rcpt)
{
    for (size_t i = 0; i < ms->n_rcpts_sent; i++)
        if (strcmp(ms->rcpts_sent[i], rcpt) == 0)
            return true;
    return false;
}

static int
milter_send_simple(struct milter_state *ms, char cmd, enum milter_stage stage,
                   uint32_t no_flag, uint32_t nr_flag)
{
    struct milter_buf b = {0};
    size_t start;

    if (milter_packet_begin(&b, cmd, &start) != 0 ||
        milter_packet_end(&b, start) != 0) {
        milter_buf_free(&b);
        milter_failed(ms, "out of memory");
        return -1;
    }
    return milter_emit(ms, cmd, stage, no_flag, nr_flag, &b);
}

/* --- the message ---------------------------------------------------------- */

/* One header field: its name and raw value, folding as LF (as Sendmail
 * and Postfix send it), the space after the colon left out unless the
 * milter asked for it (SMFIP_HDR_LEADSPC). */
static int
milter_send_header(struct milter_state *ms, size_t index)
{
    const char *name = postern_header_name(ms->ctx, index);
    const char *raw = postern_header_raw(ms->ctx, index);
    struct milter_buf b = {0};
    size_t start;

    if (name == NULL)
        return 0;
    if (raw == NULL)
        raw = "";
    if ((ms->protocol & SMFIP_HDR_LEADSPC) == 0 && raw[0] == ' ')
        raw++;
    if (milter_packet_begin(&b, SMFIC_HEADER, &start) != 0 ||
        milter_packet_add_str(&b, name) != 0)
        goto oom;
    for (const char *p = raw; *p; p++) {
        if (p[0] == '\r' && p[1] == '\n')
            continue;
        if (milter_packet_add(&b, p, 1) != 0)
            goto oom;
    }
    if (milter_packet_add(&b, "", 1) != 0 || milter_packet_end(&b, start) != 0)
        goto oom;
    return milter_emit(ms, SMFIC_HEADER, MILTER_STAGE_EOH, SMFIP_NOHDRS,
                       SMFIP_NR_HDR, &b);
oom:
    milter_buf_free(&b);
    milter_failed(ms, "out of memory");
    return -1;
}

/* The next body chunk: up to MILTER_CHUNK bytes from the reader. 1 when a
 * reply is due, 0 when not (or at the end: body_eof), -1 on failure. */
static int
milter_send_body_chunk(struct milter_state *ms)
{
    size_t have = 0;

    if (ms->chunk == NULL && (ms->chunk = malloc(MILTER_CHUNK)) == NULL) {
        milter_failed(ms, "out of memory");
        return -1;
    }
    while (have < MILTER_CHUNK) {
        ssize_t n = postern_message_read(ms->reader, ms->chunk + have,
                                         MILTER_CHUNK - have);
        if (n < 0) {
            struct milter_verdict v;
            postern_log(ms->ctx, POSTERN_LOG_ERROR,
                        "milter=%s cannot read the body: %s",
                        postern_log_value(ms->mod->cfg.instance),
                        strerror(errno));
            milter_verdict_text(&v, POSTERN_TEMPFAIL, 451, "4.3.0",
                                "Error: local error reading the message");
            milter_finish(ms, &v);
            return -1;
        }
        if (n == 0) {
            ms->body_eof = true;
            break;
        }
        have += (size_t)n;
    }
    if (have == 0)
        return 0;
    struct milter_buf b = {0};
    size_t start;
    if (milter_packet_begin(&b, SMFIC_BODY, &start) != 0 ||
        milter_packet_add(&b, ms->chunk, have) != 0 ||
        milter_packet_end(&b, start) != 0) {
        milter_buf_free(&b);
        milter_failed(ms, "out of memory");
        return -1;
    }
    return milter_emit(ms, SMFIC_BODY, MILTER_STAGE_EOM, SMFIP_NOBODY,
                       SMFIP_NR_BODY, &b);
}

static void
milter_message_close(struct milter_state *ms)
{
    if (ms->reader != NULL) {
        postern_message_close(ms->reader);
        ms->reader = NULL;
    }
    if (ms->writer != NULL) {
        postern_body_abort(ms->writer);
        ms->writer = NULL;
    }
    free(ms->chunk);
    ms->chunk = NULL;
}

/* One step of the message event. 1: a reply (or the socket) is awaited;
 * 0: the message is done; -1: the hook call is over (failed). */
static int
milter_message_step(struct milter_state *ms)
{
    for (;;) {
        int rc;
        switch (ms->phase) {
        case PHASE_HEADERS:
            if (ms->hdr_i >= postern_header_count(ms->ctx) ||
                (ms->protocol & SMFIP_NOHDRS) != 0) {
                ms->phase = PHASE_EOH;
                continue;
            }
            rc = milter_send_header(ms, ms->hdr_i++);
            if (rc != 0)
                return rc;
            /* Unanswered headers: at most a buffer's worth queued. */
            if (milter_conn_pending_output(&ms->conn) > 4 * MILTER_CHUNK)
                return 1;
            continue;
        case PHASE_EOH:
            ms->phase = PHASE_BODY;
            rc = milter_send_simple(ms, SMFIC_EOH, MILTER_STAGE_EOH,
                                    SMFIP_NOEOH, SMFIP_NR_EOH);
            if (rc != 0)
                return rc;
            continue;
        case PHASE_BODY:
            if ((ms->protocol & SMFIP_NOBODY) != 0 || ms->skip_cmd == 'B') {
                ms->phase = PHASE_EOB;
                continue;
            }
            if (ms->reader == NULL) {
                ms->reader = postern_body_open(ms->ctx);
                if (ms->reader == NULL) {
                    struct milter_verdict v;
                    milter_verdict_text(&v, POSTERN_TEMPFAIL, 451, "4.3.0",
                                        "Error: local error reading the "
                                        "message");
                    milter_finish(ms, &v);
                    return -1;
                }
            }
            if (ms->body_eof) {
                ms->phase = PHASE_EOB;
                continue;
            }
            rc = milter_send_body_chunk(ms);
            if (rc != 0)
                return rc;
            /* Unanswered chunks (SMFIP_NR_BODY): wait for the socket. */
            if (milter_conn_pending_output(&ms->conn) > 0)
                return 1;
            continue;
        case PHASE_EOB:
            ms->phase = PHASE_EDITS;
            if (ms->reader != NULL) {
                postern_message_close(ms->reader);
                ms->reader = NULL;
            }
            rc = milter_send_simple(ms, SMFIC_BODYEOB, MILTER_STAGE_EOM, 0, 0);
            return rc == 0 ? 1 : rc; /* always answered */
        case PHASE_EDITS:
            return 0;
        }
    }
}

/* --- the plan of a hook call ---------------------------------------------- */

static void
milter_plan_add(struct milter_state *ms, milter_event ev)
{
    if (ms->n_plan < sizeof ms->plan / sizeof ms->plan[0])
        ms->plan[ms->n_plan++] = ev;
}

static void
milter_plan(struct milter_state *ms, postern_hook hook)
{
    ms->n_plan = ms->at = 0;
    if (!ms->connect_sent)
        milter_plan_add(ms, EV_CONNECT);
    if (hook == POSTERN_HOOK_HELO ||
        (hook > POSTERN_HOOK_HELO && !ms->helo_sent &&
         postern_helo_name(ms->ctx) != NULL))
        milter_plan_add(ms, EV_HELO);
    if (hook == POSTERN_HOOK_MAIL || (hook > POSTERN_HOOK_MAIL && !ms->in_tx))
        milter_plan_add(ms, EV_MAIL);
    if (hook == POSTERN_HOOK_RCPT)
        milter_plan_add(ms, EV_RCPT);
    if (hook == POSTERN_HOOK_DATA || hook == POSTERN_HOOK_MESSAGE) {
        milter_plan_add(ms, EV_CATCHUP_RCPTS);
        if (!ms->data_sent)
            milter_plan_add(ms, EV_DATA);
    }
    if (hook == POSTERN_HOOK_MESSAGE)
        milter_plan_add(ms, EV_MESSAGE);
}

/* Start the event plan[at]. 1: a reply is awaited; 0: the event is done;
 * -1: the call is over. */
static int
milter_event_start(struct milter_state *ms, milter_event ev)
{
    switch (ev) {
    case EV_CONNECT:
        return milter_send_connect(ms);
    case EV_HELO: {
        const char *helo = postern_helo_name(ms->ctx);
        if (ms->in_tx) /* HELO inside a transaction ends it */
            milter_abort_tx(ms);
        ms->helo_sent = true;
        if (helo == NULL)
            return 0;
        struct milter_buf b = {0};
        const char *args[] = {helo, NULL};
        if (milter_cmd_strings(&b, SMFIC_HELO, args) != 0) {
            milter_buf_free(&b);
            milter_failed(ms, "out of memory");
            return -1;
        }
        return milter_emit(ms, SMFIC_HELO, MILTER_STAGE_HELO, SMFIP_NOHELO,
                           SMFIP_NR_HELO, &b);
    }
    case EV_MAIL:
        if (ms->in_tx)
            milter_abort_tx(ms);
        milter_tx_forget(ms);
        if (postern_transaction_id(ms->ctx) != NULL)
            ms->tx_id = strdup(postern_transaction_id(ms->ctx));
        return milter_send_mail(ms);
    case EV_RCPT: {
        const char *rcpt = postern_rcpt_current(ms->ctx);
        return rcpt != NULL ? milter_send_rcpt(ms, rcpt) : 0;
    }
    case EV_CATCHUP_RCPTS:
        /* Recipients the milter has not seen (an earlier module accepted
         * them for everyone): one at a time, until all are sent. */
        for (size_t i = 0; i < postern_rcpt_count(ms->ctx); i++) {
            const char *rcpt = postern_rcpt_address(ms->ctx, i);
            if (rcpt != NULL && !milter_rcpt_was_sent(ms, rcpt)) {
                int rc = milter_send_rcpt(ms, rcpt);
                if (rc != 0)
                    return rc;
            }
        }
        return 0;
    case EV_DATA:
        ms->data_sent = true;
        return milter_send_simple(ms, SMFIC_DATA, MILTER_STAGE_DATA,
                                  SMFIP_NODATA, SMFIP_NR_DATA);
    case EV_MESSAGE:
        return milter_message_step(ms);
    }
    return 0;
}

/* Go on with the plan until a reply is due or the call is over. */
static void
milter_run(struct milter_state *ms)
{
    while (!ms->done && ms->ctx != NULL) {
        if (ms->fate == MILTER_FAILED) {
            struct milter_verdict v;
            milter_default_verdict(ms->mod, &v);
            milter_finish(ms, &v);
            return;
        }
        if (ms->conn.state != MILTER_CONN_READY || ms->awaiting)
            return; /* the connection calls back */
        if (ms->at >= ms->n_plan) {
            struct milter_verdict v;
            milter_verdict_text(&v, POSTERN_CONTINUE, 0, NULL, NULL);
            milter_finish(ms, &v);
            return;
        }
        milter_event ev = ms->plan[ms->at];
        int rc = milter_event_start(ms, ev);
        if (rc < 0)
            return; /* finished (failed) */
        if (rc > 0)
            return; /* a reply (or the socket) is awaited */
        ms->at++;
    }
}

/* --- answers -------------------------------------------------------------- */

/* The reply to the event in progress said go on: a one-packet event is
 * done; the recipients' catch-up and the message go on from their step. */
static void
milter_event_answered(struct milter_state *ms)
{
    if (ms->at < ms->n_plan && ms->plan[ms->at] != EV_CATCHUP_RCPTS &&
        ms->plan[ms->at] != EV_MESSAGE)
        ms->at++;
}

static void
milter_verdict_of(struct milter_state *ms, char cmd, struct milter_verdict *v)
{
    switch (cmd) {
    case SMFIR_REJECT:
        milter_verdict_text(v, POSTERN_REJECT, 550, "5.7.1",
                            "Command rejected");
        break;
    case SMFIR_TEMPFAIL:
        milter_verdict_text(v, POSTERN_TEMPFAIL, 451, "4.7.1",
                            "Service unavailable - try again later");
        break;
    case SMFIR_SHUTDOWN:
    case SMFIR_CONN_FAIL:
        milter_verdict_text(v, POSTERN_DISCONNECT, 421, "4.7.0",
                            "Service unavailable - closing connection");
        break;
    default:
        (void)ms;
        milter_verdict_text(v, POSTERN_CONTINUE, 0, NULL, NULL);
        break;
    }
}

/* A decision that refuses the session (at connect or helo) holds for
 * every later hook. */
static void
milter_refuse_session(struct milter_state *ms, const struct milter_verdict *v)
{
    if (ms->refusal == NULL)
        ms->refusal = malloc(sizeof *ms->refusal);
    if (ms->refusal != NULL)
        *ms->refusal = *v;
    ms->fate = MILTER_REJECTED;
    milter_conn_quit(&ms->conn);
}

/* --- changes at the end of the message ------------------------------------ */

static uint32_t
milter_action_needed(char cmd)
{
    switch (cmd) {
    case SMFIR_ADDHEADER:
    case SMFIR_INSHEADER:
        return SMFIF_ADDHDRS;
    case SMFIR_CHGHEADER:
        return SMFIF_CHGHDRS;
    case SMFIR_REPLBODY:
        return SMFIF_CHGBODY;
    case SMFIR_ADDRCPT:
        return SMFIF_ADDRCPT;
    case SMFIR_ADDRCPT_PAR:
        return SMFIF_ADDRCPT_PAR;
    case SMFIR_DELRCPT:
        return SMFIF_DELRCPT;
    case SMFIR_CHGFROM:
        return SMFIF_CHGFROM;
    case SMFIR_QUARANTINE:
        return SMFIF_QUARANTINE;
    default:
        return 0;
    }
}

/* An address as the milter writes it ("<a@b>" or "a@b"), without <>. */
static char *
milter_address(const char *s)
{
    size_t len = strlen(s);

    if (len >= 2 && s[0] == '<' && s[len - 1] == '>')
        return strndup(s + 1, len - 2);
    return strdup(s);
}

/* A header value from the milter, as postern_header_insert() takes it:
 * folding as CRLF + whitespace (the milter writes LF), the one space after
 * the colon postern writes itself taken off (SMFIP_HDR_LEADSPC). */
static char *
milter_header_value(const struct milter_state *ms, const char *v)
{
    size_t len = strlen(v);
    char *out = malloc(2 * len + 1);
    size_t k = 0;

    if (out == NULL)
        return NULL;
    if ((ms->protocol & SMFIP_HDR_LEADSPC) != 0 && v[0] == ' ')
        v++;
    for (; *v; v++) {
        if (v[0] == '\r' && v[1] == '\n')
            continue;
        if (v[0] == '\n')
            out[k++] = '\r';
        out[k++] = *v == '\r' ? ' ' : *v;
    }
    out[k] = '\0';
    return out;
}

static void
milter_edit_failed(struct milter_state *ms, const char *what, int code,
                   const char *enhanced, const char *text)
{
    postern_log(ms->ctx, POSTERN_LOG_WARNING, "milter=%s change=%s failed",
                postern_log_value(ms->mod->cfg.instance), what);
    if (ms->edit_failed)
        return;
    ms->edit_failed = true;
    milter_verdict_text(&ms->edit_verdict,
                        code / 100 == 5 ? POSTERN_REJECT : POSTERN_TEMPFAIL,
                        code, enhanced, text);
}

/* The replacement body, bytes as the milter sends them, with a bare LF
 * made CRLF (postern stores CRLF line ends only). */
static void
milter_body_write(struct milter_state *ms, const uint8_t *p, size_t n)
{
    uint8_t out[8192];
    size_t k = 0;

    for (size_t i = 0; i < n && !ms->edit_failed; i++) {
        if (k + 2 > sizeof out) {
            if (postern_body_write(ms->writer, out, k) != 0)
                goto failed;
            k = 0;
        }
        if (p[i] == '\n' && !ms->body_cr)
            out[k++] = '\r';
        out[k++] = p[i];
        ms->body_cr = p[i] == '\r';
        ms->body_lf = p[i] == '\n';
    }
    if (k > 0 && !ms->edit_failed &&
        postern_body_write(ms->writer, out, k) != 0)
        goto failed;
    return;
failed:
    if (errno == EFBIG)
        milter_edit_failed(ms, "body", 552, "5.3.4",
                           "Message size exceeds fixed maximum message size");
    else
        milter_edit_failed(ms, "body", 451, "4.3.0",
                           "Error: local error replacing the body");
}

static void
milter_body_commit(struct milter_state *ms)
{
    if (ms->writer == NULL)
        return;
    postern_body_writer *w = ms->writer;
    ms->writer = NULL;
    if (ms->edit_failed) {
        postern_body_abort(w);
        return;
    }
    /* A last line without its line end gets one. */
    if (!ms->body_lf && postern_body_write(w, ms->body_cr ? "\n" : "\r\n",
                                           ms->body_cr ? 1 : 2) != 0) {
        postern_body_abort(w);
        milter_edit_failed(ms, "body", 451, "4.3.0",
                           "Error: local error replacing the body");
        return;
    }
    if (postern_body_commit(ms->ctx, w) != 0)
        milter_edit_failed(ms, "body", 451, "4.3.0",
                           "Error: local error replacing the body");
    else
        ms->body_replaced = true;
}

/* One change requested at the end of the message. */
static void
milter_edit(struct milter_state *ms, const struct milter_request *r)
{
    postern_ctx *ctx = ms->ctx;
    char *a = NULL, *v = NULL;

    if (r->cmd != SMFIR_REPLBODY)
        milter_body_commit(ms);
    if (ms->edit_failed)
        return; /* read on to the decision, change nothing more */
    switch (r->cmd) {
    case SMFIR_ADDHEADER:
    case SMFIR_INSHEADER:
        if ((v = milter_header_value(ms, r->value)) == NULL ||
            postern_header_insert(
                ctx, r->cmd == SMFIR_ADDHEADER ? SIZE_MAX : (size_t)r->index,
                r->name, v) != 0)
            milter_edit_failed(ms, "header", 451, "4.3.0",
                               "Error: could not add a header");
        else
            postern_log(ctx, POSTERN_LOG_DEBUG,
                        "milter=%s change=header_insert name=%s",
                        postern_log_value(ms->mod->cfg.instance),
                        postern_log_value(r->name));
        break;
    case SMFIR_CHGHEADER: {
        /* 1-based, 0 taken as 1 (Sendmail); an empty value deletes. */
        size_t nth = r->index > 0 ? (size_t)r->index - 1 : 0;
        bool del = r->value[0] == '\0';
        if (!del && (v = milter_header_value(ms, r->value)) == NULL) {
            milter_edit_failed(ms, "header", 451, "4.3.0",
                               "Error: out of memory");
            break;
        }
        if (postern_header_change(ctx, r->name, nth, del ? NULL : v) != 0) {
            /* No such field: a change adds it (Sendmail); a delete is
             * nothing to do. */
            if (!del && postern_header_insert(ctx, SIZE_MAX, r->name, v) != 0)
                milter_edit_failed(ms, "header", 451, "4.3.0",
                                   "Error: could not change a header");
        }
        postern_log(ctx, POSTERN_LOG_DEBUG,
                    "milter=%s change=%s name=%s index=%u",
                    postern_log_value(ms->mod->cfg.instance),
                    del ? "header_delete" : "header_change",
                    postern_log_value(r->name), (unsigned)r->index);
        break;
    }
    case SMFIR_REPLBODY:
        if (ms->body_replaced) {
            /* Chunks after another request: Postfix refuses it too. */
            milter_failed(ms, "body replacement interleaved with other "
                              "requests");
            return;
        }
        if (ms->writer == NULL) {
            ms->body_cr = false;
            ms->body_lf = true;
            if ((ms->writer = postern_body_replace(ctx)) == NULL) {
                milter_edit_failed(ms, "body", 451, "4.3.0",
                                   "Error: local error replacing the body");
                break;
            }
        }
        milter_body_write(ms, r->bytes, r->n_bytes);
        break;
    case SMFIR_ADDRCPT:
    case SMFIR_ADDRCPT_PAR:
        if ((a = milter_address(r->name)) == NULL ||
            postern_rcpt_add(ctx, a) != 0)
            milter_edit_failed(ms, "rcpt_add", 451, "4.3.0",
                               "Error: could not add a recipient");
        else
            postern_log(ctx, POSTERN_LOG_INFO,
                        "milter=%s change=rcpt_add "
                        "rcpt=%s",
                        postern_log_value(ms->mod->cfg.instance),
                        postern_log_value(a));
        break;
    case SMFIR_DELRCPT:
        if ((a = milter_address(r->name)) == NULL) {
            milter_edit_failed(ms, "rcpt_delete", 451, "4.3.0",
                               "Error: out of memory");
        } else if (postern_rcpt_delete(ctx, a) != 0) {
            postern_log(ctx, POSTERN_LOG_INFO,
                        "milter=%s change=rcpt_delete rcpt=%s result=absent",
                        postern_log_value(ms->mod->cfg.instance),
                        postern_log_value(a));
        } else {
            postern_log(
                ctx, POSTERN_LOG_INFO, "milter=%s change=rcpt_delete rcpt=%s",
                postern_log_value(ms->mod->cfg.instance), postern_log_value(a));
        }
        break;
    case SMFIR_CHGFROM:
        if ((a = milter_address(r->name)) == NULL ||
            postern_mail_from_set(ctx, a, r->value) != 0)
            milter_edit_failed(ms, "sender", 451, "4.3.0",
                               "Error: could not change the sender");
        else
            postern_log(
                ctx, POSTERN_LOG_INFO, "milter=%s change=sender from=%s",
                postern_log_value(ms->mod->cfg.instance), postern_log_value(a));
        break;
    default:
        break;
    }
    free(a);
    free(v);
}

/* The answer that ends the message event. */
static void
milter_eom_decided(struct milter_state *ms, struct milter_verdict *v)
{
    bool accepted = v->result == POSTERN_CONTINUE;

    if (accepted)
        milter_body_commit(ms);
    if (accepted && ms->edit_failed)
        *v = ms->edit_verdict;
    milter_message_close(ms);
    ms->in_tx = false; /* the milter's message is over */
    milter_finish(ms, v);
}

/* --- the connection's callbacks ------------------------------------------- */

static int milter_answer(struct milter_state *ms,
                         const struct milter_packet *p);

/* Each callback resumes a finished hook call last, once its own work is
 * done (a failure deep inside a write must not resume under our feet). */
static int
milter_on_packet(void *owner, const struct milter_packet *p)
{
    struct milter_state *ms = owner;

    ms->depth++;
    int rc = milter_answer(ms, p);
    ms->depth--;
    milter_settle(ms);
    return rc;
}

static int
milter_answer(struct milter_state *ms, const struct milter_packet *p)
{
    struct milter_request r;
    struct milter_verdict v;
    const char *why = NULL;

    if (p->cmd == SMFIC_OPTNEG && !ms->negotiated &&
        ms->conn.state == MILTER_CONN_READY) {
        /* Negotiated: the milter's macro lists replace the config's. */
        ms->negotiated = true;
        ms->protocol = ms->conn.neg.protocol;
        ms->actions = ms->conn.neg.actions;
        for (int i = 0; i < MILTER_STAGE_COUNT; i++)
            ms->macros[i] = ms->conn.neg.macros[i] ? ms->conn.neg.macros[i]
                                                   : ms->mod->cfg.macros[i];
        milter_conn_settle(&ms->conn);
        milter_run(ms);
        milter_settle(ms);
        return 0;
    }
    if (!ms->awaiting || ms->ctx == NULL) {
        milter_failed(ms, "sent a packet when none was due");
        return -1;
    }
    if (milter_request_parse(p, &r, &why) != 0) {
        milter_failed(ms, why);
        return -1;
    }
    char cmd = ms->awaiting_cmd;
    bool eom = cmd == SMFIC_BODYEOB;
    bool conn_stage = cmd == SMFIC_CONNECT || cmd == SMFIC_HELO;

    switch (r.cmd) {
    case SMFIR_PROGRESS:
        milter_conn_progress(&ms->conn);
        return 0;
    case SMFIR_QUARANTINE:
        if ((ms->actions & SMFIF_QUARANTINE) == 0 && eom) {
            milter_failed(ms, "quarantine without having asked for it");
            return -1;
        }
        if (postern_message_quarantine(ms->ctx, r.name) != 0)
            postern_log(ms->ctx, POSTERN_LOG_WARNING,
                        "milter=%s quarantine refused here hook=%s",
                        postern_log_value(ms->mod->cfg.instance),
                        postern_hook_name(ms->hook));
        else
            postern_log(ms->ctx, POSTERN_LOG_INFO,
                        "milter=%s change=quarantine reason=%s",
                        postern_log_value(ms->mod->cfg.instance),
                        postern_log_value(r.name));
        return 0;
    case SMFIR_CONTINUE:
    case SMFIR_SKIP:
        ms->awaiting = false;
        milter_conn_settle(&ms->conn);
        if (r.cmd == SMFIR_SKIP)
            ms->skip_cmd = cmd;
        if (eom) {
            milter_verdict_text(&v, POSTERN_CONTINUE, 0, NULL, NULL);
            milter_eom_decided(ms, &v);
            milter_settle(ms);
            return 0;
        }
        if (cmd == SMFIC_HEADER && r.cmd == SMFIR_SKIP)
            ms->phase = PHASE_EOH;
        milter_event_answered(ms);
        milter_run(ms);
        milter_settle(ms);
        return 0;
    case SMFIR_ACCEPT:
        ms->awaiting = false;
        milter_verdict_text(&v, POSTERN_CONTINUE, 0, NULL, NULL);
        if (conn_stage) {
            ms->fate = MILTER_ACCEPTED;
            milter_conn_quit(&ms->conn);
            milter_finish(ms, &v);
        } else if (eom) {
            milter_eom_decided(ms, &v);
        } else {
            ms->accept_tx = true;
            if (ms->hook == POSTERN_HOOK_MESSAGE)
                milter_message_close(ms);
            milter_finish(ms, &v);
        }
        milter_settle(ms);
        return ms->conn.fd < 0 ? -1 : 0;
    case SMFIR_DISCARD:
        ms->awaiting = false;
        if (conn_stage) {
            postern_log(ms->ctx, POSTERN_LOG_WARNING,
                        "milter=%s discard at %s ignored (not a message)",
                        postern_log_value(ms->mod->cfg.instance),
                        postern_hook_name(ms->hook));
            milter_conn_settle(&ms->conn);
            milter_event_answered(ms);
            milter_run(ms);
            milter_settle(ms);
            return 0;
        }
        milter_verdict_text(&v, POSTERN_DISCARD, 0, NULL, NULL);
        ms->accept_tx = true;
        if (eom)
            milter_eom_decided(ms, &v);
        else
            milter_finish(ms, &v);
        milter_settle(ms);
        return 0;
    case SMFIR_REJECT:
    case SMFIR_TEMPFAIL:
    case SMFIR_SHUTDOWN:
    case SMFIR_CONN_FAIL:
    case SMFIR_REPLYCODE:
        ms->awaiting = false;
        if (r.cmd == SMFIR_REPLYCODE) {
            struct milter_replycode rc;
            if (milter_replycode_parse((const char *)r.bytes, r.n_bytes, &rc,
                                       &why) != 0) {
                milter_failed(ms, why);
                milter_settle(ms);
                return -1;
            }
            memset(&v, 0, sizeof v);
            v.has_reply = true;
            v.reply = rc;
            v.result = rc.code == 421       ? POSTERN_DISCONNECT
                       : rc.code / 100 == 4 ? POSTERN_TEMPFAIL
                                            : POSTERN_REJECT;
        } else {
            milter_verdict_of(ms, r.cmd, &v);
        }
        postern_log(ms->ctx, POSTERN_LOG_INFO,
                    "milter=%s event=%c decision=%s code=%d",
                    postern_log_value(ms->mod->cfg.instance), cmd,
                    milter_result_name(v.result), v.reply.code);
        if (eom) {
            milter_eom_decided(ms, &v);
        } else {
            if (ms->hook == POSTERN_HOOK_MESSAGE)
                milter_message_close(ms);
            if (conn_stage || v.result == POSTERN_DISCONNECT)
                milter_refuse_session(ms, &v);
            milter_finish(ms, &v);
        }
        milter_settle(ms);
        return ms->conn.fd < 0 ? -1 : 0;
    default:
        if (!eom) {
            milter_failed(ms, "a change requested before the end of the "
                              "message");
            milter_settle(ms);
            return -1;
        }
        if ((ms->actions & milter_action_needed(r.cmd)) == 0) {
            milter_failed(ms, "a change it had not negotiated");
            milter_settle(ms);
            return -1;
        }
        milter_edit(ms, &r);
        if (ms->fate == MILTER_FAILED) {
            milter_settle(ms);
            return -1;
        }
        return 0;
    }
}

static void
milter_on_drained(void *owner)
{
    struct milter_state *ms = owner;

    /* Unanswered body chunks or headers went out: send the next ones. */
    if (ms->ctx != NULL && !ms->done && !ms->awaiting &&
        ms->conn.state == MILTER_CONN_READY) {
        ms->depth++;
        milter_run(ms);
        ms->depth--;
        milter_settle(ms);
    }
}

static void
milter_on_failure(void *owner, const char *reason)
{
    struct milter_state *ms = owner;

    milter_failed(ms, reason);
    milter_settle(ms);
}

static const struct milter_conn_ops milter_ops = {
    .on_packet = milter_on_packet,
    .on_drained = milter_on_drained,
    .on_failure = milter_on_failure,
};

/* --- the session note ----------------------------------------------------- */

static void
milter_state_free(void *p)
{
    struct milter_state *ms = p;

    if (ms == NULL)
        return;
    milter_message_close(ms);
    milter_conn_quit(&ms->conn);
    milter_tx_forget(ms);
    free(ms->refusal);
    free(ms);
}

static struct milter_state *
milter_state_get(postern_ctx *ctx, const struct milter_module *mod)
{
    struct milter_state *ms =
        postern_note_get(ctx, POSTERN_NOTE_SESSION, mod->note_key);

    if (ms != NULL)
        return ms;
    if ((ms = calloc(1, sizeof *ms)) == NULL)
        return NULL;
    ms->mod = mod;
    ms->conn.fd = -1;
    if (postern_note_set(ctx, POSTERN_NOTE_SESSION, mod->note_key, ms,
                         milter_state_free) != 0) {
        free(ms);
        return NULL;
    }
    return ms;
}

/* --- hooks ---------------------------------------------------------------- */

static postern_result
milter_handle(postern_ctx *ctx, struct milter_module *mod, postern_hook hook)
{
    struct milter_state *ms = milter_state_get(ctx, mod);
    struct milter_verdict v;

    if (ms == NULL) {
        postern_log(ctx, POSTERN_LOG_ERROR, "milter=%s out of memory",
                    postern_log_value(mod->cfg.instance));
        return POSTERN_TEMPFAIL;
    }
    if (ms->ctx != NULL) {
        /* Cannot happen: the session waits for our resume. */
        postern_log(ctx, POSTERN_LOG_ERROR, "milter=%s hook=%s while busy",
                    postern_log_value(mod->cfg.instance),
                    postern_hook_name(hook));
        return POSTERN_TEMPFAIL;
    }
    switch (ms->fate) {
    case MILTER_ACCEPTED:
        return POSTERN_CONTINUE;
    case MILTER_REJECTED:
        if (ms->refusal == NULL)
            return POSTERN_TEMPFAIL;
        return milter_verdict_apply(ctx, hook, ms->refusal);
    case MILTER_FAILED:
        milter_default_verdict(mod, &v);
        return milter_verdict_apply(ctx, hook, &v);
    default:
        break;
    }
    ms->ctx = ctx;
    ms->hook = hook;
    if (hook >= POSTERN_HOOK_MAIL && hook != POSTERN_HOOK_MAIL)
        milter_tx_check(ms);
    if (hook > POSTERN_HOOK_MAIL && ms->accept_tx) {
        ms->ctx = NULL;
        return POSTERN_CONTINUE;
    }
    ms->done = false;
    ms->awaiting = false;
    ms->in_handler = true;
    if (hook == POSTERN_HOOK_MESSAGE) {
        ms->phase = PHASE_HEADERS;
        ms->hdr_i = 0;
        ms->body_eof = false;
        ms->body_replaced = false;
        ms->edit_failed = false;
    }
    milter_plan(ms, hook);
    if (ms->conn.state == MILTER_CONN_CLOSED) {
        const char *why = NULL;
        if (milter_conn_open(&ms->conn, &mod->cfg, &milter_ops, ms, &why) != 0)
            milter_failed(ms, why);
    }
    milter_run(ms);
    ms->in_handler = false;
    if (!ms->done)
        return POSTERN_PENDING;
    ms->done = false;
    ms->ctx = NULL;
    postern_result r = milter_verdict_apply(ctx, hook, &ms->verdict);
    postern_log(ctx, POSTERN_LOG_DEBUG, "milter=%s hook=%s result=%s",
                postern_log_value(mod->cfg.instance), postern_hook_name(hook),
                milter_result_name(r));
    return r;
}

static postern_result
milter_connect(postern_ctx *ctx, void *instance)
{
    return milter_handle(ctx, instance, POSTERN_HOOK_CONNECT);
}

static postern_result
milter_helo(postern_ctx *ctx, void *instance)
{
    return milter_handle(ctx, instance, POSTERN_HOOK_HELO);
}

static postern_result
milter_mail(postern_ctx *ctx, void *instance)
{
    return milter_handle(ctx, instance, POSTERN_HOOK_MAIL);
}

static postern_result
milter_rcpt(postern_ctx *ctx, void *instance)
{
    return milter_handle(ctx, instance, POSTERN_HOOK_RCPT);
}

static postern_result
milter_data(postern_ctx *ctx, void *instance)
{
    return milter_handle(ctx, instance, POSTERN_HOOK_DATA);
}

static postern_result
milter_message(postern_ctx *ctx, void *instance)
{
    return milter_handle(ctx, instance, POSTERN_HOOK_MESSAGE);
}

/* The transaction ended (RSET, end of message, EHLO): the milter's ends
 * with it. */
static postern_result
milter_reset(postern_ctx *ctx, void *instance)
{
    struct milter_module *mod = instance;
    struct milter_state *ms =
        postern_note_get(ctx, POSTERN_NOTE_SESSION, mod->note_key);

    if (ms == NULL || ms->ctx != NULL)
        return POSTERN_CONTINUE; /* a call pending: the session closes */
    if (ms->fate == MILTER_ACTIVE)
        milter_abort_tx(ms);
    milter_tx_forget(ms);
    return POSTERN_CONTINUE;
}

/* The session closed: a hook call still waiting on the milter is let go,
 * and the milter gets SMFIC_QUIT. */
static postern_result
milter_disconnect(postern_ctx *ctx, void *instance)
{
    struct milter_module *mod = instance;
    struct milter_state *ms =
        postern_note_get(ctx, POSTERN_NOTE_SESSION, mod->note_key);

    if (ms == NULL)
        return POSTERN_CONTINUE;
    milter_message_close(ms);
    milter_conn_quit(&ms->conn);
    if (ms->ctx != NULL) {
        postern_ctx *waiting = ms->ctx;
        ms->ctx = NULL;
        ms->done = false;
        postern_resume(waiting, POSTERN_CONTINUE); /* orphaned */
    }
    return POSTERN_CONTINUE;
}

/* --- the instance --------------------------------------------------------- */

static void
milter_destroy(void *instance)
{
    struct milter_module *mod = instance;

    if (mod == NULL)
        return;
    milter_config_free(&mod->cfg);
    free(mod->note_key);
    free(mod);
}

static int
milter_create(postern_module_init *init, void **instance)
{
    struct milter_module *mod = calloc(1, sizeof *mod);

    if (mod == NULL) {
        postern_init_error(init, "", "out of memory");
        return -1;
    }
    if (milter_config_parse(init, &mod->cfg) != 0) {
        milter_destroy(mod);
        return -1;
    }
    if (asprintf(&mod->note_key, "milter.%s", mod->cfg.instance) < 0) {
        mod->note_key = NULL;
        postern_init_error(init, "", "out of memory");
        milter_destroy(mod);
        return -1;
    }
    *instance = mod;
    return 0;
}

POSTERN_MODULE_DEFINE = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "milter",
    .description = "the MTA side of the Sendmail milter protocol",
    .create = milter_create,
    .destroy = milter_destroy,
    .handlers = {[POSTERN_HOOK_CONNECT] = milter_connect,
                 [POSTERN_HOOK_HELO] = milter_helo,
                 [POSTERN_HOOK_MAIL] = milter_mail,
                 [POSTERN_HOOK_RCPT] = milter_rcpt,
                 [POSTERN_HOOK_DATA] = milter_data,
                 [POSTERN_HOOK_MESSAGE] = milter_message,
                 [POSTERN_HOOK_RESET] = milter_reset,
                 [POSTERN_HOOK_DISCONNECT] = milter_disconnect},
};
