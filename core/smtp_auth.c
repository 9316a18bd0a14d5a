/*
 * smtp_auth.c - the AUTH command (RFC 4954) and its SASL exchanges.
 *
 * PLAIN takes an initial response or one 334 round; LOGIN asks for the
 * user name and the password in two rounds. "*" cancels (501). Decoded
 * credentials go to the auth hook; passwords are wiped from memory as soon
 * as the hook is done and are never logged. After each failure the reply
 * is held back a little longer (a timer, not a sleep), and past the
 * configured number of failures the session ends with 421.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gnutls/gnutls.h>

#include "postern/services.h"
#include "postern/session.h"

#include "client_limit.h"
#include "hook.h"
#include "log.h"
#include "metrics.h"
#include "smtp_auth.h"
#include "smtp_reply.h"
#include "smtp_session.h"

#define AUTH_DELAY_STEP 0.5 /* seconds added per failure */
#define AUTH_DELAY_MAX 4.0

typedef enum sasl_mech { SASL_PLAIN, SASL_LOGIN } sasl_mech;

struct sasl_state {
    sasl_mech mech;
    int step;      /* LOGIN: 0 user name wanted, 1 password wanted */
    char *decoded; /* PLAIN message, or LOGIN password (wiped) */
    size_t decoded_len;
    char *login;                            /* LOGIN user name (wiped) */
    const char *authzid, *authcid, *passwd; /* for the hook */
    postern_timer *delay;
};

static void
wipe_free(char *p, size_t len)
{
    if (!p)
        return;
    gnutls_memset(p, 0, len);
    free(p);
}

static void
sasl_clear(struct session *s)
{
    struct sasl_state *st = s->sasl;
    if (!st)
        return;
    postern_timer_cancel(st->delay);
    wipe_free(st->decoded, st->decoded_len);
    if (st->login)
        wipe_free(st->login, strlen(st->login));
    free(st);
    s->sasl = NULL;
}

void
smtp_auth_free(struct session *s)
{
    sasl_clear(s);
}

sasl_status
sasl_base64_decode(const char *in, size_t in_len, char **out, size_t *len)
{
    gnutls_datum_t src, dst = {NULL, 0};

    *out = NULL;
    *len = 0;
    if (in_len == 1 && in[0] == '=') {
        *out = calloc(1, 1);
        return *out ? SASL_OK : SASL_BAD_BASE64;
    }
    if (in_len == 0 || in_len % 4 != 0)
        return SASL_BAD_BASE64;
    for (size_t i = 0; i < in_len; i++) {
        char ch = in[i];
        bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                  (ch >= '0' && ch <= '9') || ch == '+' || ch == '/' ||
                  (ch == '=' && i >= in_len - 2);
        if (!ok)
            return SASL_BAD_BASE64;
    }
    if (in[in_len - 2] == '=' && in[in_len - 1] != '=')
        return SASL_BAD_BASE64;
    src.data = (unsigned char *)in;
    src.size = (unsigned)in_len;
    if (gnutls_base64_decode2(&src, &dst) < 0)
        return SASL_BAD_BASE64;
    *out = malloc(dst.size + 1);
    if (!*out) {
        gnutls_memset(dst.data, 0, dst.size);
        gnutls_free(dst.data);
        return SASL_BAD_BASE64;
    }
    memcpy(*out, dst.data, dst.size);
    (*out)[dst.size] = '\0';
    *len = dst.size;
    gnutls_memset(dst.data, 0, dst.size);
    gnutls_free(dst.data);
    return SASL_OK;
}

sasl_status
sasl_plain_split(char *msg, size_t len, const char **authzid,
                 const char **authcid, const char **passwd)
{
    char *nul1 = memchr(msg, '\0', len);
    if (!nul1)
        return SASL_BAD_MESSAGE;
    char *nul2 = memchr(nul1 + 1, '\0', len - (size_t)(nul1 + 1 - msg));
    if (!nul2)
        return SASL_BAD_MESSAGE;
    /* No third NUL: msg[len] is the terminator added by the decoder. */
    if (memchr(nul2 + 1, '\0', len - (size_t)(nul2 + 1 - msg)))
        return SASL_BAD_MESSAGE;
    if (nul2 == nul1 + 1 || nul2 + 1 == msg + len)
        return SASL_BAD_MESSAGE; /* empty authcid or password */
    *authzid = msg;
    *authcid = nul1 + 1;
    *passwd = nul2 + 1;
    return SASL_OK;
}

bool
smtp_auth_offered(const struct session *s)
{
    if (hook_chain_length(POSTERN_HOOK_AUTH) == 0)
        return false;
    if (s->conn.tls_active)
        return true;
    /* Plaintext AUTH only where allowed, and never where TLS is required. */
    return s->listener->auth_plaintext && !s->listener->tls_required;
}

/* End the exchange and go back to command mode. */
static void
auth_finish(struct session *s)
{
    sasl_clear(s);
    session_set_state(s, SESSION_HELO);
}

void
smtp_auth_cancel(struct session *s)
{
    if (s->state == SESSION_AUTH && s->wait == SESSION_WAIT_NONE)
        auth_finish(s);
}

static void
auth_reply_failure(struct session *s)
{
    smtp_reply(&s->conn, 535, "5.7.8",
               "Error: authentication credentials invalid");
    if (s->auth_failures >= s->cfg->limits.auth_failures) {
        smtp_reply(&s->conn, 421, "4.7.0",
                   "%s Error: too many authentication failures (auth_failures)",
                   s->cfg->hostname);
        session_quit(s);
    }
}

static void
on_auth_delay(void *arg)
{
    struct session *s = arg;
    s->sasl->delay = NULL;
    auth_reply_failure(s);
    auth_finish(s);
    session_resume(s);
}

static void
on_auth_done(struct session *s, postern_result r,
             const struct hook_reply *reply)
{
    struct sasl_state *st = s->sasl;

    if (r == POSTERN_ACCEPT && !(s->auth_user = strdup(st->authcid)))
        r = POSTERN_TEMPFAIL; /* out of memory: say so, never half-auth */
    if (r == POSTERN_ACCEPT) {
        smtp_reply_hook(&s->conn, reply, 235, "2.7.0",
                        "Authentication successful");
        metrics_auth(true);
        log_event(LOG_LEVEL_INFO, s->id, "auth", "mechanism=%s user=%s",
                  st->mech == SASL_PLAIN ? "PLAIN" : "LOGIN",
                  postern_log_value(st->authcid));
    } else if (r == POSTERN_TEMPFAIL) {
        smtp_reply_hook(&s->conn, reply, 454, "4.7.0",
                        "Temporary authentication failure");
    } else if (r == POSTERN_DISCONNECT) {
        session_reply_disconnect(s, reply);
    } else {
        /* REJECT, or no module said yes: a failure, replied after a
         * delay that grows with each failure. */
        s->auth_failures++;
        metrics_auth(false);
        client_limit_auth_failed(s->cfg,
                                 (const struct sockaddr *)&s->conn.peer);
        log_event(LOG_LEVEL_INFO, s->id, "auth_failed",
                  "mechanism=%s user=%s failures=%u",
                  st->mech == SASL_PLAIN ? "PLAIN" : "LOGIN",
                  postern_log_value(st->authcid), s->auth_failures);
        double delay = AUTH_DELAY_STEP * s->auth_failures;
        if (delay > AUTH_DELAY_MAX)
            delay = AUTH_DELAY_MAX;
        /* Wipe now; only the timer is left. */
        wipe_free(st->decoded, st->decoded_len);
        st->decoded = NULL;
        st->authcid = st->authzid = st->passwd = NULL;
        st->delay = postern_timer_start(delay, on_auth_delay, s);
        if (st->delay) {
            session_wait_for(s, SESSION_WAIT_TIMER);
            return;
        }
        auth_reply_failure(s);
    }
    auth_finish(s);
}

/* Credentials are complete: hand them to the auth hook. */
static void
auth_decide(struct session *s)
{
    session_hook_run(s, POSTERN_HOOK_AUTH, on_auth_done);
}

static void
auth_bad_base64(struct session *s)
{
    smtp_reply(&s->conn, 501, "5.5.2", "Error: invalid base64 data");
    auth_finish(s);
}

static void
auth_plain_response(struct session *s, const char *b64, size_t len)
{
    struct sasl_state *st = s->sasl;

    if (sasl_base64_decode(b64, len, &st->decoded, &st->decoded_len) !=
        SASL_OK) {
        auth_bad_base64(s);
        return;
    }
    if (sasl_plain_split(st->decoded, st->decoded_len, &st->authzid,
                         &st->authcid, &st->passwd) != SASL_OK) {
        smtp_reply(&s->conn, 501, "5.5.2", "Error: malformed PLAIN response");
        auth_finish(s);
        return;
    }
    auth_decide(s);
}

static void
auth_login_response(struct session *s, const char *b64, size_t len)
{
    struct sasl_state *st = s->sasl;
    char *value;
    size_t value_len;

    if (sasl_base64_decode(b64, len, &value, &value_len) != SASL_OK) {
        auth_bad_base64(s);
        return;
    }
    if (memchr(value, '\0', value_len) || value_len == 0) {
        wipe_free(value, value_len);
        smtp_reply(&s->conn, 501, "5.5.2", "Error: malformed LOGIN response");
        auth_finish(s);
        return;
    }
    if (st->step == 0) {
        st->login = value;
        st->step = 1;
        smtp_reply(&s->conn, 334, NULL, "UGFzc3dvcmQ6"); /* "Password:" */
        return;
    }
    st->decoded = value;
    st->decoded_len = value_len;
    st->authzid = "";
    st->authcid = st->login;
    st->passwd = st->decoded;
    auth_decide(s);
}

void
smtp_auth_line(struct session *s, const char *line, size_t len)
{
    if (len == 1 && line[0] == '*') {
        smtp_reply(&s->conn, 501, "5.7.0", "Authentication aborted");
        auth_finish(s);
        return;
    }
    if (s->sasl->mech == SASL_PLAIN)
        auth_plain_response(s, line, len);
    else
        auth_login_response(s, line, len);
}

void
smtp_auth_command(struct session *s, const struct smtp_command *cmd)
{
    if (s->state == SESSION_READY || !s->esmtp) {
        smtp_reply(&s->conn, 503, "5.5.1", "Error: send EHLO first");
        return;
    }
    if (s->auth_user) {
        smtp_reply(&s->conn, 503, "5.5.1", "Error: already authenticated");
        return;
    }
    if (s->tx) {
        smtp_reply(&s->conn, 503, "5.5.1",
                   "Error: MAIL transaction in progress");
        return;
    }
    if (hook_chain_length(POSTERN_HOOK_AUTH) == 0) {
        smtp_reply(&s->conn, 502, "5.5.1", "Error: authentication not enabled");
        return;
    }
    if (!s->conn.tls_active && s->listener->tls_required) {
        smtp_reply(&s->conn, 530, "5.7.0",
                   "Must issue a STARTTLS command first");
        return;
    }
    if (!smtp_auth_offered(s)) {
        smtp_reply(&s->conn, 538, "5.7.11",
                   "Error: encryption required for authentication");
        return;
    }
    /* Failures across sessions from this address (the per-session
     * count is auth_failures). */
    if (client_limit_auth_check(s->cfg,
                                (const struct sockaddr *)&s->conn.peer) !=
        CLIENT_LIMIT_OK) {
        smtp_reply(&s->conn, 421, "4.7.0",
                   "%s Error: too many authentication failures from your "
                   "address (%s)",
                   s->cfg->hostname, client_limit_name(CLIENT_LIMIT_AUTH_RATE));
        log_event(LOG_LEVEL_INFO, s->id, "auth_refused", "limit=%s",
                  client_limit_name(CLIENT_LIMIT_AUTH_RATE));
        session_quit(s);
        return;
    }
    /* "AUTH mechanism [initial-response]" */
    const char *arg = cmd->arg, *end = cmd->arg + cmd->arg_len;
    const char *sp = memchr(arg, ' ', cmd->arg_len);
    size_t mech_len = sp ? (size_t)(sp - arg) : cmd->arg_len;
    const char *initial = NULL;
    size_t initial_len = 0;
    if (sp) {
        initial = sp + 1;
        while (initial < end && *initial == ' ')
            initial++;
        initial_len = (size_t)(end - initial);
    }
    sasl_mech mech;
    if (mech_len == 0) {
        smtp_reply(&s->conn, 501, "5.5.4", "Syntax: AUTH mechanism");
        return;
    }
    if (mech_len == 5 && strncasecmp(arg, "PLAIN", 5) == 0)
        mech = SASL_PLAIN;
    else if (mech_len == 5 && strncasecmp(arg, "LOGIN", 5) == 0)
        mech = SASL_LOGIN;
    else {
        smtp_reply(&s->conn, 504, "5.5.4",
                   "Error: unsupported authentication mechanism");
        return;
    }
    s->sasl = calloc(1, sizeof(*s->sasl));
    if (!s->sasl) {
        smtp_reply(&s->conn, 454, "4.7.0", "Temporary authentication failure");
        return;
    }
    s->sasl->mech = mech;
    session_set_state(s, SESSION_AUTH);
    if (initial && initial_len > 0) {
        if (initial_len == 1 && initial[0] == '*') {
            smtp_auth_line(s, initial, initial_len);
            return;
        }
        if (mech == SASL_PLAIN)
            auth_plain_response(s, initial, initial_len);
        else
            auth_login_response(s, initial, initial_len);
        return;
    }
    if (mech == SASL_PLAIN)
        smtp_reply(&s->conn, 334, NULL, "%s", "");
    else
        smtp_reply(&s->conn, 334, NULL, "VXNlcm5hbWU6"); /* "Username:" */
}

/* --- the auth hook's view of the credentials --- */

#define SASL_OR(ctx)                                                           \
    struct session *s = hook_ctx_session(ctx);                                 \
    if (!s || !s->sasl)                                                        \
        return NULL;

const char *
postern_auth_mechanism(const postern_ctx *ctx)
{
    SASL_OR(ctx);
    return s->sasl->mech == SASL_PLAIN ? "PLAIN" : "LOGIN";
}

const char *
postern_auth_login(const postern_ctx *ctx)
{
    SASL_OR(ctx);
    return s->sasl->authcid;
}

const char *
postern_auth_password(const postern_ctx *ctx)
{
    SASL_OR(ctx);
    return s->sasl->passwd;
}

const char *
postern_auth_authzid(const postern_ctx *ctx)
{
    SASL_OR(ctx);
    return s->sasl->authzid;
}
