/*
 * smtp_envelope.c - MAIL and RCPT (see smtp_envelope.h). Each command is
 * checked (syntax, sequence, parameters, limits; replies on failure), then
 * its hook runs, then its done handler replies.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "client_limit.h"
#include "log.h"
#include "relay_policy.h"
#include "smtp_envelope.h"
#include "smtp_reply.h"
#include "smtp_session.h"
#include "transaction.h"

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

/* --- MAIL --- */

static void
on_mail_done(struct session *s, postern_result r,
             const struct hook_reply *reply)
{
    switch (r) {
    case POSTERN_DISCARD: /* accepted; the message will be dropped */
        transaction_discard(s, POSTERN_HOOK_MAIL);
        /* fall through */
    case POSTERN_CONTINUE:
    case POSTERN_ACCEPT:
        session_set_state(s, SESSION_MAIL);
        smtp_reply_hook(&s->conn, reply, 250, "2.1.0", "Ok");
        break;
    case POSTERN_REJECT:
        smtp_reply_hook(&s->conn, reply, 550, "5.7.1",
                        "Error: sender rejected");
        transaction_outcome(s->tx, smtp_reply_hook_code(reply, 550));
        transaction_end(s);
        break;
    case POSTERN_TEMPFAIL:
        smtp_reply_hook(&s->conn, reply, 451, "4.7.1",
                        "Error: sender temporarily rejected");
        transaction_outcome(s->tx, smtp_reply_hook_code(reply, 451));
        transaction_end(s);
        break;
    default:
        transaction_outcome(s->tx, session_reply_disconnect(s, reply));
        transaction_end(s);
        break;
    }
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

void
envelope_mail(struct session *s, const struct smtp_command *cmd)
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
    if (client_limit_message(s->cfg, (const struct sockaddr *)&s->conn.peer) !=
        CLIENT_LIMIT_OK) {
        smtp_reply(&s->conn, 450, "4.7.1",
                   "Error: too many messages from your address (%s)",
                   client_limit_name(CLIENT_LIMIT_MESSAGE_RATE));
        log_event(LOG_LEVEL_INFO, s->id, "mail_refused", "limit=%s",
                  client_limit_name(CLIENT_LIMIT_MESSAGE_RATE));
        return;
    }
    struct transaction *tx = transaction_new();
    if (!tx || !(tx->mail_from = dup_range(path.addr, path.addr_len)) ||
        !(tx->mail_params = dup_range(path.params, path.params_len))) {
        transaction_free(tx);
        smtp_reply(&s->conn, 451, "4.3.0", "Error: out of memory");
        return;
    }
    tx->smtputf8 = smtputf8;
    s->tx = tx;
    session_hook_run(s, POSTERN_HOOK_MAIL, on_mail_done);
}

/* --- RCPT --- */

static void
on_rcpt_done(struct session *s, postern_result r,
             const struct hook_reply *reply)
{
    const char *addr = s->rcpt_current;

    if (r == POSTERN_DISCARD) {
        /* Accepted like ACCEPT; the message will be dropped. */
        transaction_discard(s, POSTERN_HOOK_RCPT);
        r = POSTERN_ACCEPT;
    }
    if (r == POSTERN_CONTINUE) {
        if (relay_policy_allows(s, addr))
            r = POSTERN_ACCEPT;
        else {
            smtp_reply(&s->conn, 550, "5.7.1", "<%s>: Relay access denied",
                       addr);
            log_event(LOG_LEVEL_INFO, s->id, "relay_denied", "rcpt=%s",
                      postern_log_value(addr));
        }
    } else if (r == POSTERN_REJECT) {
        smtp_reply_hook(&s->conn, reply, 550, "5.7.1",
                        "Error: recipient rejected");
    } else if (r == POSTERN_TEMPFAIL) {
        smtp_reply_hook(&s->conn, reply, 451, "4.7.1",
                        "Error: recipient temporarily rejected");
    } else if (r == POSTERN_DISCONNECT) {
        /* the transaction ends with the session, refused at RCPT */
        transaction_outcome(s->tx, session_reply_disconnect(s, reply));
    }
    if (r != POSTERN_ACCEPT)
        s->tx->rcpts_refused++;
    if (r == POSTERN_ACCEPT) {
        if (transaction_add_rcpt(s->tx, addr, strlen(addr)) < 0) {
            s->tx->rcpts_refused++;
            smtp_reply(&s->conn, 451, "4.3.0", "Error: out of memory");
        } else {
            session_set_state(s, SESSION_RCPT);
            smtp_reply_hook(&s->conn, reply, 250, "2.1.5", "Ok");
        }
    }
    free((char *)s->rcpt_current);
    s->rcpt_current = NULL;
}

void
envelope_rcpt(struct session *s, const struct smtp_command *cmd)
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
        s->tx->rcpts_refused++;
        return;
    }
    if (s->tx->n_rcpts >= s->cfg->limits.recipients) {
        smtp_reply(&s->conn, 452, "4.5.3", "Error: too many recipients");
        s->tx->rcpts_refused++;
        return;
    }
    s->rcpt_current = dup_range(path.addr, path.addr_len);
    if (!s->rcpt_current) {
        smtp_reply(&s->conn, 451, "4.3.0", "Error: out of memory");
        return;
    }
    session_hook_run(s, POSTERN_HOOK_RCPT, on_rcpt_done);
}
