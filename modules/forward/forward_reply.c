/*
 * forward_reply.c - from the conversation with the next hop to the reply
 * the client gets for its message.
 *
 * libcurl tells how a transfer ended in one CURLcode; which command the
 * next hop refused, and with what words, it does not say. So the module
 * keeps a transcript: every command libcurl sends (its debug callback,
 * CURLINFO_HEADER_OUT) moves the stage, and every reply line it reads (its
 * header callback) builds the last reply. A refusal is then answered with
 * the next hop's own class, code and words (RFC 3463 codes of our own
 * where the failure is ours or the network's):
 *
 *   250 from the next hop after the data       -> 250, its words quoted
 *   5xx to MAIL, RCPT, DATA or the message     -> 550, 552 or 554 (else 554)
 *   4xx to MAIL, RCPT, DATA or the message     -> 451
 *   any refusal of the session (greeting, EHLO) -> 451 4.4.0
 *   STARTTLS refused or not offered, TLS error -> 451 4.7.5
 *   AUTH refused                               -> 451 4.7.0
 *   no connection, timeout                     -> 451 4.4.1
 *   connection lost                            -> 451 4.4.2
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "forward.h"

void
fw_transcript_init(struct fw_transcript *t)
{
    memset(t, 0, sizeof *t);
    t->stage = FW_STAGE_GREETING;
}

/* Copy len bytes of s into dst (size bytes), printable ASCII only. */
static size_t
fw_copy_text(char *dst, size_t size, const char *s, size_t len)
{
    size_t n = 0;

    for (size_t i = 0; i < len && n + 1 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[n++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    dst[n] = '\0';
    return n;
}

static size_t
fw_line_length(const char *line, size_t len)
{
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    return len;
}

/* line begins with word, followed by a blank, ':' or its end. */
static bool
fw_verb_is(const char *line, size_t len, const char *word)
{
    size_t n = strlen(word);

    return len >= n && strncasecmp(line, word, n) == 0 &&
           (len == n || line[n] == ' ' || line[n] == ':');
}

void
fw_transcript_command(struct fw_transcript *t, const char *line, size_t len)
{
    len = fw_line_length(line, len);
    /* MAIL and RCPT carry a ':' and a blank, which base64 never does: a
     * line of a SASL exchange can never pass for them. */
    if (len >= 10 && strncasecmp(line, "MAIL FROM:", 10) == 0) {
        t->stage = FW_STAGE_MAIL;
        fw_copy_text(t->command, sizeof t->command, line, len);
        return;
    }
    if (len >= 8 && strncasecmp(line, "RCPT TO:", 8) == 0) {
        t->stage = FW_STAGE_RCPT;
        fw_copy_text(t->command, sizeof t->command, line, len);
        return;
    }
    if (t->stage == FW_STAGE_AUTH && !fw_verb_is(line, len, "QUIT"))
        return; /* SASL continuation lines: never copied */
    t->command[0] = '\0';
    if (fw_verb_is(line, len, "EHLO") || fw_verb_is(line, len, "HELO"))
        t->stage = FW_STAGE_EHLO;
    else if (fw_verb_is(line, len, "STARTTLS"))
        t->stage = FW_STAGE_STARTTLS;
    else if (fw_verb_is(line, len, "AUTH"))
        t->stage = FW_STAGE_AUTH;
    else if (fw_verb_is(line, len, "DATA"))
        t->stage = FW_STAGE_DATA;
    else if (fw_verb_is(line, len, "QUIT"))
        t->stage = FW_STAGE_QUIT;
}

void
fw_transcript_reply_line(struct fw_transcript *t, const char *line, size_t len)
{
    len = fw_line_length(line, len);
    if (len < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' ||
        line[1] > '9' || line[2] < '0' || line[2] > '9' ||
        (len > 3 && line[3] != ' ' && line[3] != '-'))
        return;
    bool last = len == 3 || line[3] == ' ';
    if (!t->in_reply) {
        t->partial_len = fw_copy_text(t->partial, sizeof t->partial, line, len);
        if (len > 3)
            t->partial[3] = ' ';
        t->in_reply = true;
    } else if (len > 4 && t->partial_len + 2 < sizeof t->partial) {
        t->partial[t->partial_len++] = ' ';
        t->partial_len +=
            fw_copy_text(t->partial + t->partial_len,
                         sizeof t->partial - t->partial_len, line + 4, len - 4);
    }
    if (!last)
        return;
    t->in_reply = false;
    /* libcurl says QUIT after a refusal: its 221 is not the answer. */
    if (t->stage == FW_STAGE_QUIT)
        return;
    t->code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    t->code_stage = t->stage;
    memcpy(t->code_command, t->command, sizeof t->command);
    memcpy(t->text, t->partial, sizeof t->text);
    if (t->stage == FW_STAGE_DATA && t->code == 354)
        t->stage = FW_STAGE_END_OF_DATA;
}

/* The enhanced status code at the start of the reply's text ("550 5.1.1
 * ..."), when its class is the reply's. */
static bool
fw_enhanced_of(const char *text, char *out, size_t size)
{
    const char *s = text + 4;
    size_t n = 0;

    if (strlen(text) < 9 || s[0] != text[0] || s[1] != '.')
        return false;
    n = 2;
    for (int part = 0; part < 2; part++) {
        size_t digits = 0;
        while (s[n + digits] >= '0' && s[n + digits] <= '9')
            digits++;
        if (digits < 1 || digits > 3)
            return false;
        n += digits;
        if (part == 0 && s[n++] != '.')
            return false;
    }
    if (s[n] != '\0' && s[n] != ' ')
        return false;
    snprintf(out, size, "%.*s", (int)n, s);
    return true;
}

static void fw_set(struct fw_outcome *out, postern_result result, int code,
                   const char *enhanced, const char *reason, const char *fmt,
                   ...) __attribute__((format(printf, 6, 7)));

static void
fw_set(struct fw_outcome *out, postern_result result, int code,
       const char *enhanced, const char *reason, const char *fmt, ...)
{
    va_list ap;

    out->result = result;
    out->code = code;
    snprintf(out->enhanced, sizeof out->enhanced, "%s", enhanced);
    out->reason = reason;
    va_start(ap, fmt);
    vsnprintf(out->text, sizeof out->text, fmt, ap);
    va_end(ap);
}

static const char *
fw_stage_command(fw_stage stage, const char *command)
{
    switch (stage) {
    case FW_STAGE_GREETING:
        return "the connection";
    case FW_STAGE_EHLO:
        return "EHLO";
    case FW_STAGE_STARTTLS:
        return "STARTTLS";
    case FW_STAGE_AUTH:
        return "AUTH";
    case FW_STAGE_MAIL:
    case FW_STAGE_RCPT:
        return command[0] ? command : "the envelope";
    case FW_STAGE_DATA:
        return "DATA";
    case FW_STAGE_END_OF_DATA:
        return "the end of the message";
    case FW_STAGE_QUIT:
        return "QUIT";
    }
    return "?";
}

/* The next hop refused with t->code: answer with its class. */
static void
fw_answered(const struct fw_transcript *t, const char *peer,
            struct fw_outcome *out)
{
    const char *what = fw_stage_command(t->code_stage, t->code_command);
    bool permanent = t->code >= 500;
    char enhanced[16];

    switch (t->code_stage) {
    case FW_STAGE_MAIL:
    case FW_STAGE_RCPT:
    case FW_STAGE_DATA:
    case FW_STAGE_END_OF_DATA:
        if (!fw_enhanced_of(t->text, enhanced, sizeof enhanced))
            snprintf(enhanced, sizeof enhanced, "%s",
                     permanent ? "5.0.0" : "4.0.0");
        if (permanent)
            fw_set(out, POSTERN_REJECT,
                   (t->code == 550 || t->code == 552 || t->code == 554)
                       ? t->code
                       : 554,
                   enhanced, "refused", "next hop %s said: %s (in reply to %s)",
                   peer, t->text, what);
        else
            fw_set(out, POSTERN_TEMPFAIL, 451, enhanced, "deferred",
                   "next hop %s said: %s (in reply to %s)", peer, t->text,
                   what);
        return;
    case FW_STAGE_STARTTLS:
        fw_set(out, POSTERN_TEMPFAIL, 451, "4.7.5", "tls",
               "TLS is required, but next hop %s refused STARTTLS: %s", peer,
               t->text);
        return;
    case FW_STAGE_AUTH:
        fw_set(out, POSTERN_TEMPFAIL, 451, "4.7.0", "auth",
               "next hop %s refused our login: %s", peer, t->text);
        return;
    default:
        /* The session, not this message: never a bounce for it. */
        fw_set(out, POSTERN_TEMPFAIL, 451, "4.4.0", "session_refused",
               "next hop %s said: %s (in reply to %s)", peer, t->text, what);
        return;
    }
}

static bool
fw_is_tls_error(CURLcode rc)
{
    switch (rc) {
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
        return true;
    default:
        return false;
    }
}

void
fw_outcome_of(CURLcode rc, const struct fw_transcript *t, const char *peer,
              const char *id, bool read_failed, struct fw_outcome *out)
{
    const char *err = curl_easy_strerror(rc);

    if (rc == CURLE_OK) {
        fw_set(out, POSTERN_ACCEPT, 250, "2.0.0", "forwarded",
               "Ok: queued as %s, forwarded to %s: %s", id ? id : "-", peer,
               t->code ? t->text : "accepted");
        return;
    }
    if (read_failed) {
        fw_set(out, POSTERN_TEMPFAIL, 451, "4.3.0", "spool",
               "Error: local error reading the message");
        return;
    }
    bool answered = t->code >= 400 && t->code <= 599 &&
                    (rc == CURLE_SEND_ERROR || rc == CURLE_WEIRD_SERVER_REPLY ||
                     rc == CURLE_REMOTE_ACCESS_DENIED ||
                     rc == CURLE_USE_SSL_FAILED || rc == CURLE_LOGIN_DENIED);
    if (answered) {
        fw_answered(t, peer, out);
        return;
    }
    if (rc == CURLE_USE_SSL_FAILED) {
        fw_set(out, POSTERN_TEMPFAIL, 451, "4.7.5", "tls",
               "TLS is required, but next hop %s did not offer STARTTLS", peer);
    } else if (fw_is_tls_error(rc)) {
        fw_set(out, POSTERN_TEMPFAIL, 451, "4.7.5", "tls",
               "TLS with next hop %s failed: %s", peer, err);
    } else if (rc == CURLE_COULDNT_CONNECT ||
               rc == CURLE_COULDNT_RESOLVE_HOST) {
        fw_set(out, POSTERN_TEMPFAIL, 451, "4.4.1", "unreachable",
               "next hop %s: %s", peer, err);
    } else if (rc == CURLE_OPERATION_TIMEDOUT) {
        fw_set(out, POSTERN_TEMPFAIL, 451, "4.4.1", "timeout",
               "next hop %s did not answer in time", peer);
    } else if (rc == CURLE_LOGIN_DENIED || rc == CURLE_AUTH_ERROR) {
        fw_set(out, POSTERN_TEMPFAIL, 451, "4.7.0", "auth",
               "next hop %s: login failed", peer);
    } else if (rc == CURLE_SEND_ERROR || rc == CURLE_RECV_ERROR ||
               rc == CURLE_GOT_NOTHING) {
        fw_set(out, POSTERN_TEMPFAIL, 451, "4.4.2", "connection_lost",
               "connection to next hop %s lost", peer);
    } else if (rc == CURLE_WEIRD_SERVER_REPLY) {
        fw_set(out, POSTERN_TEMPFAIL, 451, "4.5.0", "protocol",
               "next hop %s: unexpected reply%s%s", peer, t->code ? ": " : "",
               t->code ? t->text : "");
    } else if (rc == CURLE_ABORTED_BY_CALLBACK) {
        fw_set(out, POSTERN_TEMPFAIL, 451, "4.3.2", "cancelled",
               "Error: forwarding interrupted, try again later");
    } else if (rc == CURLE_OUT_OF_MEMORY) {
        fw_set(out, POSTERN_TEMPFAIL, 451, "4.3.0", "local",
               "Error: local error: out of memory");
    } else {
        fw_set(out, POSTERN_TEMPFAIL, 451, "4.4.0", "error",
               "forwarding to next hop %s failed: %s", peer, err);
    }
}
