/*
 * message.c - added headers, the Received trace header and the message
 * reader of the public API.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "postern/session.h"

#include "hook.h"
#include "message.h"
#include "spool.h"

static int
message_append(struct transaction *tx, const char *buf, size_t len)
{
    if (tx->headers_len + len > MESSAGE_ADDED_HEADERS_MAX)
        return -1;
    if (tx->headers_len + len > tx->headers_cap) {
        size_t cap = tx->headers_cap ? tx->headers_cap : 512;
        while (cap < tx->headers_len + len)
            cap *= 2;
        char *grown = realloc(tx->headers, cap);
        if (!grown)
            return -1;
        tx->headers = grown;
        tx->headers_cap = cap;
    }
    memcpy(tx->headers + tx->headers_len, buf, len);
    tx->headers_len += len;
    return 0;
}

static bool
header_name_valid(const char *name)
{
    /* RFC 5322 field-name: printable ASCII except ':' */
    if (!*name)
        return false;
    for (const char *p = name; *p; p++)
        if (*p < 33 || *p > 126 || *p == ':')
            return false;
    return true;
}

static bool
header_value_valid(const char *value)
{
    /* Folding is allowed only as CRLF followed by a space or tab. */
    for (const char *p = value; *p; p++) {
        if (*p == '\r') {
            if (p[1] != '\n' || (p[2] != ' ' && p[2] != '\t'))
                return false;
            p++;
        } else if (*p == '\n') {
            return false;
        }
    }
    return true;
}

int
message_add_header(struct transaction *tx, const char *name, const char *value)
{
    if (!header_name_valid(name) || !header_value_valid(value))
        return -1;
    size_t before = tx->headers_len;
    if (message_append(tx, name, strlen(name)) < 0 ||
        message_append(tx, ": ", 2) < 0 ||
        message_append(tx, value, strlen(value)) < 0 ||
        message_append(tx, "\r\n", 2) < 0) {
        tx->headers_len = before;
        return -1;
    }
    return 0;
}

/* "with" keyword of the Received header (RFC 3848, RFC 6531). */
static const char *
received_protocol(const struct session *s)
{
    static const char *const names[2][2][2][2] = {
        /* [utf8][esmtp][tls][auth] */
        {{{"SMTP", "SMTP"}, {"SMTP", "SMTP"}},
         {{"ESMTP", "ESMTPA"}, {"ESMTPS", "ESMTPSA"}}},
        {{{"SMTP", "SMTP"}, {"SMTP", "SMTP"}},
         {{"UTF8SMTP", "UTF8SMTPA"}, {"UTF8SMTPS", "UTF8SMTPSA"}}},
    };
    return names[s->tx->smtputf8][s->esmtp][s->conn.tls_active]
                [s->auth_user != NULL];
}

int
message_add_received(const struct session *s)
{
    struct transaction *tx = s->tx;
    char date[64], line[2048], comments[512] = "";
    time_t now = time(NULL);
    struct tm tm;
    bool v6 = strchr(s->client_ip, ':') != NULL;

    /* Trace comments: TLS (RFC 3207 6) and the authenticated sender. */

    localtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
    if (s->conn.tls_active && s->tls_version)
        snprintf(comments, sizeof(comments), "\r\n\t(using %s with cipher %s)",
                 s->tls_version, s->tls_cipher ? s->tls_cipher : "unknown");
    if (s->auth_user) {
        /* The identity is client-chosen text: keep it a clean comment. */
        char user[128];
        size_t i;
        for (i = 0; s->auth_user[i] && i < sizeof(user) - 1; i++) {
            unsigned char ch = (unsigned char)s->auth_user[i];
            user[i] =
                (ch < 0x21 || ch > 0x7e || ch == '(' || ch == ')' || ch == '\\')
                    ? '?'
                    : (char)ch;
        }
        user[i] = '\0';
        size_t used = strlen(comments);
        snprintf(comments + used, sizeof(comments) - used,
                 "\r\n\t(Authenticated sender: %s)", user);
    }

    int n =
        snprintf(line, sizeof(line),
                 "Received: from %s (%s [%s%s])%s\r\n"
                 "\tby %s (postern) with %s id %s",
                 s->helo ? s->helo : "unknown", s->rdns ? s->rdns : "unknown",
                 v6 ? "IPv6:" : "", s->client_ip, comments, s->cfg->hostname,
                 received_protocol(s), tx->id);
    /* Name the recipient only when there is one (no list disclosure). */
    if (tx->n_rcpts == 1 && n < (int)sizeof(line))
        n += snprintf(line + n, sizeof(line) - (size_t)n, "\r\n\tfor <%s>",
                      tx->rcpts[0]);
    if (n < (int)sizeof(line))
        n += snprintf(line + n, sizeof(line) - (size_t)n, "; %s\r\n", date);
    if (n >= (int)sizeof(line))
        return -1;
    free(tx->received);
    tx->received = malloc((size_t)n);
    if (!tx->received)
        return -1;
    memcpy(tx->received, line, (size_t)n);
    tx->received_len = (size_t)n;
    return 0;
}

uint64_t
message_size(const struct transaction *tx)
{
    return tx->headers_len + tx->received_len + tx->body_size;
}

/* --- the public reader --- */

struct postern_message_reader {
    struct spool *spool; /* referenced: it outlives the transaction */
    char *headers;
    size_t headers_len;
    uint64_t body_size;
    uint64_t pos; /* over headers then body */
};

postern_message_reader *
postern_message_open(const postern_ctx *ctx)
{
    struct session *s = hook_ctx_session(ctx);
    struct transaction *tx = s ? s->tx : NULL;
    postern_message_reader *r;

    if (!tx || !tx->spool)
        return NULL;
    r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->headers = malloc(tx->headers_len + tx->received_len + 1);
    if (!r->headers) {
        free(r);
        return NULL;
    }
    r->spool = tx->spool;
    spool_ref(r->spool);
    if (tx->headers_len)
        memcpy(r->headers, tx->headers, tx->headers_len);
    if (tx->received_len)
        memcpy(r->headers + tx->headers_len, tx->received, tx->received_len);
    r->headers_len = tx->headers_len + tx->received_len;
    r->body_size = tx->body_size;
    return r;
}

ssize_t
postern_message_read(postern_message_reader *r, void *buf, size_t len)
{
    if (!r) {
        errno = EINVAL;
        return -1;
    }
    if (r->pos < r->headers_len) {
        size_t n = r->headers_len - (size_t)r->pos;
        if (n > len)
            n = len;
        memcpy(buf, r->headers + r->pos, n);
        r->pos += n;
        return (ssize_t)n;
    }
    uint64_t body_pos = r->pos - r->headers_len;
    if (body_pos >= r->body_size)
        return 0;
    if (len > r->body_size - body_pos)
        len = (size_t)(r->body_size - body_pos);
    ssize_t n = spool_pread(r->spool, buf, len, body_pos);
    if (n == 0) {
        errno = EIO; /* the spool is shorter than promised */
        return -1;
    }
    if (n > 0)
        r->pos += (uint64_t)n;
    return n;
}

void
postern_message_close(postern_message_reader *r)
{
    if (!r)
        return;
    spool_unref(r->spool);
    free(r->headers);
    free(r);
}
