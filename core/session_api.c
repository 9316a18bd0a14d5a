/*
 * session_api.c - the read accessors and notes of include/postern/session.h.
 * Every accessor tolerates an orphaned context (the session is gone).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "postern/session.h"

#include "hook.h"
#include "message.h"
#include "notes.h"
#include "smtp_parse.h"
#include "smtp_session.h"

#define SESSION_OR(ctx, fallback)                                              \
    struct session *s = hook_ctx_session(ctx);                                 \
    if (!s)                                                                    \
        return fallback;

const char *
postern_session_id(const postern_ctx *ctx)
{
    SESSION_OR(ctx, NULL);
    return s->id;
}

const char *
postern_client_ip(const postern_ctx *ctx)
{
    SESSION_OR(ctx, NULL);
    return s->client_ip;
}

int
postern_client_port(const postern_ctx *ctx)
{
    SESSION_OR(ctx, 0);
    return s->client_port;
}

const struct sockaddr *
postern_client_addr(const postern_ctx *ctx, socklen_t *len)
{
    SESSION_OR(ctx, NULL);
    if (len)
        *len = s->conn.peer_len;
    return (const struct sockaddr *)&s->conn.peer;
}

const char *
postern_client_rdns(const postern_ctx *ctx)
{
    SESSION_OR(ctx, NULL);
    return s->rdns;
}

int
postern_client_relay(const postern_ctx *ctx)
{
    SESSION_OR(ctx, 0);
    return cidr_match(s->cfg->relay_networks, s->cfg->n_relay_networks,
                      (const struct sockaddr *)&s->conn.peer);
}

const char *
postern_local_ip(const postern_ctx *ctx)
{
    SESSION_OR(ctx, NULL);
    return s->local_ip;
}

int
postern_local_port(const postern_ctx *ctx)
{
    SESSION_OR(ctx, 0);
    return s->local_port;
}

const char *
postern_helo_name(const postern_ctx *ctx)
{
    SESSION_OR(ctx, NULL);
    return s->helo;
}

int
postern_is_esmtp(const postern_ctx *ctx)
{
    SESSION_OR(ctx, 0);
    return s->esmtp;
}

int
postern_tls_active(const postern_ctx *ctx)
{
    SESSION_OR(ctx, 0);
    return s->conn.tls_active;
}

const char *
postern_tls_version(const postern_ctx *ctx)
{
    SESSION_OR(ctx, NULL);
    return s->tls_version;
}

const char *
postern_tls_cipher(const postern_ctx *ctx)
{
    SESSION_OR(ctx, NULL);
    return s->tls_cipher;
}

const char *
postern_tls_sni(const postern_ctx *ctx)
{
    SESSION_OR(ctx, NULL);
    return s->tls_sni;
}

const char *
postern_tls_peer_dn(const postern_ctx *ctx)
{
    SESSION_OR(ctx, NULL);
    return s->tls_peer_dn;
}

const char *
postern_auth_user(const postern_ctx *ctx)
{
    SESSION_OR(ctx, NULL);
    return s->auth_user;
}

const char *
postern_transaction_id(const postern_ctx *ctx)
{
    SESSION_OR(ctx, NULL);
    return s->tx ? s->tx->id : NULL;
}

const char *
postern_mail_from(const postern_ctx *ctx)
{
    SESSION_OR(ctx, NULL);
    return s->tx ? s->tx->mail_from : NULL;
}

/*
 * The MAIL parameters as "KEY\0VALUE\0" pairs ended by an empty key (a
 * keyword without a value has an empty value; esmtp-values are never
 * empty). The raw text is split the first time a module asks and replaced
 * by the split form in the same field, which the transaction frees; every
 * value handed out points into it, so each stays valid until the
 * transaction ends. NULL when out of memory.
 */
static const char *
mail_params_split(struct transaction *tx)
{
    if (tx->mail_params_packed)
        return tx->mail_params;
    const char *cursor = tx->mail_params;
    const char *end = cursor + strlen(cursor);
    /* Each parameter of n raw bytes takes at most n + 2. */
    char *packed = malloc(2 * (size_t)(end - cursor) + 3);
    char *o = packed;
    struct smtp_param p;

    if (!packed)
        return NULL;
    /* Validated at MAIL: every parameter parses. */
    while (smtp_param_next(&cursor, end, &p) == 1) {
        memcpy(o, p.key, p.key_len);
        o += p.key_len;
        *o++ = '\0';
        if (p.value) {
            memcpy(o, p.value, p.value_len);
            o += p.value_len;
        }
        *o++ = '\0';
    }
    *o = '\0';
    free(tx->mail_params);
    tx->mail_params = packed;
    tx->mail_params_packed = true;
    return packed;
}

const char *
postern_mail_param(const postern_ctx *ctx, const char *key)
{
    SESSION_OR(ctx, NULL);
    if (!s->tx || !s->tx->mail_params || !key)
        return NULL;
    const char *k = mail_params_split(s->tx);
    if (!k)
        return NULL;
    while (*k) {
        const char *value = k + strlen(k) + 1;
        if (strcasecmp(k, key) == 0)
            return value;
        k = value + strlen(value) + 1;
    }
    return NULL;
}

size_t
postern_rcpt_count(const postern_ctx *ctx)
{
    SESSION_OR(ctx, 0);
    return s->tx ? s->tx->n_rcpts : 0;
}

const char *
postern_rcpt_address(const postern_ctx *ctx, size_t index)
{
    SESSION_OR(ctx, NULL);
    if (!s->tx || index >= s->tx->n_rcpts)
        return NULL;
    return s->tx->rcpts[index];
}

const char *
postern_rcpt_current(const postern_ctx *ctx)
{
    SESSION_OR(ctx, NULL);
    return s->rcpt_current;
}

uint64_t
postern_message_size(const postern_ctx *ctx)
{
    SESSION_OR(ctx, 0);
    return s->tx ? message_size(s->tx) : 0;
}

int
postern_header_add(postern_ctx *ctx, const char *name, const char *value)
{
    SESSION_OR(ctx, -1);
    /* Once the store hook started, every store module must see the same
     * message: no more changes. */
    if (!s->tx || !name || !value || s->tx->store_started ||
        postern_ctx_hook(ctx) == POSTERN_HOOK_STORE)
        return -1;
    return message_add_header(s->tx, name, value);
}

static struct note **
notes_of(struct session *s, postern_note_scope scope)
{
    if (scope == POSTERN_NOTE_SESSION)
        return &s->notes;
    if (scope == POSTERN_NOTE_TRANSACTION && s->tx)
        return &s->tx->notes;
    return NULL;
}

int
postern_note_set(postern_ctx *ctx, postern_note_scope scope, const char *key,
                 void *value, void (*free_fn)(void *))
{
    SESSION_OR(ctx, -1);
    struct note **list = notes_of(s, scope);
    return list ? notes_set(list, key, value, free_fn) : -1;
}

void *
postern_note_get(const postern_ctx *ctx, postern_note_scope scope,
                 const char *key)
{
    SESSION_OR(ctx, NULL);
    struct note **list = notes_of(s, scope);
    return list ? notes_get(list, key) : NULL;
}
