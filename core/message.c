/*
 * message.c - added headers, the Received trace header and the message
 * and body readers of the public API.
 *
 * A message nobody changed is read as it always was: the added headers and
 * Received from memory, then the spool from its first byte. Once a module
 * changed it (message_content.h), a reader gets the header section
 * rendered from the fields and the body from wherever it is now.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "postern/message.h"
#include "postern/session.h"

#include "hook.h"
#include "message.h"
#include "message_content.h"
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

int
message_add_header(struct transaction *tx, const char *name, const char *value)
{
    if (tx->content) /* parsed already: the fields are the message now */
        return message_content_add(tx, name, value);
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
    if (tx->content && tx->content->changed)
        return message_content_size(tx->content);
    return tx->headers_len + tx->received_len + tx->body_size;
}

/* --- the public readers --- */

struct postern_message_reader {
    struct spool *spool; /* referenced: it outlives the transaction */
    char *headers;
    size_t headers_len;
    uint64_t body_offset; /* of the body's first byte in the spool */
    uint64_t body_size;
    uint64_t pos; /* over headers then body */
};

/* A reader over headers (taken) then size bytes of sp from offset. */
static postern_message_reader *
reader_new(char *headers, size_t headers_len, struct spool *sp, uint64_t offset,
           uint64_t size)
{
    postern_message_reader *r = calloc(1, sizeof(*r));
    if (!r) {
        free(headers);
        return NULL;
    }
    r->headers = headers;
    r->headers_len = headers_len;
    r->spool = sp;
    spool_ref(sp);
    r->body_offset = offset;
    r->body_size = size;
    return r;
}

/* The message as received: added headers and Received, then the spool. */
static postern_message_reader *
reader_open_received(const struct transaction *tx)
{
    char *headers = malloc(tx->headers_len + tx->received_len + 1);
    if (!headers)
        return NULL;
    if (tx->headers_len)
        memcpy(headers, tx->headers, tx->headers_len);
    if (tx->received_len)
        memcpy(headers + tx->headers_len, tx->received, tx->received_len);
    return reader_new(headers, tx->headers_len + tx->received_len, tx->spool, 0,
                      tx->body_size);
}

/* The message with its changes: the fields rendered, then the body. */
static postern_message_reader *
reader_open_changed(const struct transaction *tx,
                    const struct message_content *c)
{
    size_t len;
    uint64_t offset, size;
    char *headers = message_content_render(c, &len);
    if (!headers)
        return NULL;
    struct spool *sp = message_content_body(tx, c, &offset, &size);
    return reader_new(headers, len, sp, offset, size);
}

postern_message_reader *
postern_message_open(const postern_ctx *ctx)
{
    struct session *s = hook_ctx_session(ctx);
    struct transaction *tx = s ? s->tx : NULL;

    if (!tx || !tx->spool)
        return NULL;
    if (tx->content && tx->content->changed)
        return reader_open_changed(tx, tx->content);
    return reader_open_received(tx);
}

postern_message_reader *
postern_body_open(const postern_ctx *ctx)
{
    struct session *s = hook_ctx_session(ctx);
    struct message_content *c;
    uint64_t offset, size;

    if (!s || !s->tx || !(c = message_content_get(s->tx)))
        return NULL;
    struct spool *sp = message_content_body(s->tx, c, &offset, &size);
    return reader_new(NULL, 0, sp, offset, size);
}

uint64_t
postern_body_size(const postern_ctx *ctx)
{
    struct session *s = hook_ctx_session(ctx);
    struct message_content *c;

    if (!s || !s->tx || !(c = message_content_get(s->tx)))
        return 0;
    return c->body_size;
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
    ssize_t n = spool_pread(r->spool, buf, len, r->body_offset + body_pos);
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
