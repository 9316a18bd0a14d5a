/*
 * smtp_commands.c - the command table, and the commands that need no file
 * of their own: HELO/EHLO, RSET, NOOP, QUIT, VRFY, EXPN, HELP. MAIL and
 * RCPT are in smtp_envelope.c, DATA and BDAT in message_receipt.c,
 * STARTTLS in tls.c and AUTH in smtp_auth.c.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "message_receipt.h"
#include "smtp_auth.h"
#include "smtp_commands.h"
#include "smtp_envelope.h"
#include "smtp_reply.h"
#include "smtp_session.h"
#include "tls.h"
#include "transaction.h"

/* --- HELO / EHLO --- */

static void
on_helo_done(struct session *s, postern_result r,
             const struct hook_reply *reply)
{
    if (r == POSTERN_CONTINUE || r == POSTERN_ACCEPT) {
        session_set_state(s, SESSION_HELO);
        if (!s->esmtp) {
            smtp_reply(&s->conn, 250, NULL, "%s", session_hostname(s));
        } else {
            const char *lines[12];
            char size_line[40];
            size_t n = 0;
            lines[n++] = session_hostname(s);
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
        session_set_state(s, SESSION_READY);
        if (r == POSTERN_REJECT)
            smtp_reply_hook(&s->conn, reply, 550, "5.7.1",
                            "Error: HELO/EHLO rejected");
        else if (r == POSTERN_TEMPFAIL)
            smtp_reply_hook(&s->conn, reply, 451, "4.7.1",
                            "Error: HELO/EHLO temporarily rejected");
        else
            session_reply_disconnect(s, reply);
    }
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
    transaction_abort(s, "helo"); /* EHLO is also a reset (RFC 5321 4.1.4) */
    free(s->helo);
    s->helo = strndup(cmd->arg, cmd->arg_len);
    s->esmtp = ehlo;
    session_hook_run(s, POSTERN_HOOK_HELO, on_helo_done);
}

static void
cmd_rset(struct session *s, const struct smtp_command *cmd)
{
    if (cmd->arg_len > 0) {
        smtp_reply(&s->conn, 501, "5.5.4", "Syntax: RSET");
        session_error(s);
        return;
    }
    transaction_abort(s, "rset");
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
    [SMTP_VERB_EHLO] = cmd_helo,       [SMTP_VERB_MAIL] = envelope_mail,
    [SMTP_VERB_RCPT] = envelope_rcpt,  [SMTP_VERB_DATA] = receipt_data,
    [SMTP_VERB_BDAT] = receipt_bdat,   [SMTP_VERB_RSET] = cmd_rset,
    [SMTP_VERB_NOOP] = cmd_noop,       [SMTP_VERB_QUIT] = cmd_quit,
    [SMTP_VERB_VRFY] = cmd_vrfy,       [SMTP_VERB_EXPN] = cmd_expn,
    [SMTP_VERB_HELP] = cmd_help,       [SMTP_VERB_STARTTLS] = cmd_starttls,
    [SMTP_VERB_AUTH] = cmd_auth,
};

/* One command line (without its line end). */
void
smtp_command_line(struct session *s, const char *line, size_t len)
{
    struct smtp_command cmd;

    if (s->state == SESSION_AUTH) {
        smtp_auth_line(s, line, len);
        return;
    }
    smtp_verb verb = smtp_command_parse(line, len, &cmd);
    if (session_draining() && !s->tx && verb != SMTP_VERB_QUIT) {
        /* RFC 5321 3.8: between transactions, say goodbye. */
        smtp_reply(&s->conn, 421, "4.3.2",
                   "%s Service shutting down, closing channel",
                   session_hostname(s));
        session_quit(s);
        return;
    }
    if (log_enabled(LOG_LEVEL_DEBUG) && verb != SMTP_VERB_AUTH)
        log_event(LOG_LEVEL_DEBUG, s->id, "command", "line=%s",
                  postern_log_value_n(line, len > 200 ? 200 : len));
    commands[verb](s, &cmd);
}
