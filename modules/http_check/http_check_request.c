/*
 * http_check_request.c - what http_check tells the policy service: the
 * stage it is called at, as one JSON object built from the hook context.
 *
 * Every string comes from the client or the session, so each goes through
 * http_check_text() (http_check_headers.c): JSON carries only UTF-8. At
 * the message stage the header section is read from the spooled message
 * (postern_message_read(), on the loop thread: a bounded read of a file
 * just written, in the page cache) and parsed by
 * http_check_parse_headers().
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_check.h"

static json_t *
http_check_str(const char *s)
{
    return http_check_text(s, s ? strlen(s) : 0);
}

/* Set key to value in obj, taking the reference; -1 when value is NULL
 * (out of memory) or the set failed. */
static int
http_check_set(json_t *obj, const char *key, json_t *value)
{
    return value == NULL ? -1 : json_object_set_new(obj, key, value);
}

/* Read the message up to the end of its header section, at most max
 * bytes, and parse it. NULL on failure (reading, memory). */
static json_t *
http_check_read_headers(postern_ctx *ctx, size_t max, bool *complete)
{
    postern_message_reader *reader = postern_message_open(ctx);
    char *buf = malloc(max + 1);
    size_t n = 0;
    bool eof = false, fail = reader == NULL || buf == NULL;

    while (!fail && n < max) {
        ssize_t got = postern_message_read(reader, buf + n, max - n);
        if (got < 0) {
            fail = true;
            break;
        }
        if (got == 0) {
            eof = true;
            break;
        }
        /* Look for the empty line from just before the new bytes. */
        size_t from = n >= 3 ? n - 3 : 0;
        n += (size_t)got;
        buf[n] = '\0';
        if (memmem(buf + from, n - from, "\n\r\n", 3) != NULL ||
            memmem(buf + from, n - from, "\n\n", 2) != NULL)
            break;
    }
    if (reader != NULL)
        postern_message_close(reader);
    json_t *fields = NULL;
    if (!fail) {
        fields = http_check_parse_headers(buf, n, eof, complete);
    }
    free(buf);
    return fields;
}

/* --- the stage ------------------------------------------------------------ */

static json_t *
http_check_session(postern_ctx *ctx)
{
    json_t *session = json_object();
    json_t *client = json_object();
    json_t *tls = postern_tls_active(ctx) ? json_object() : json_null();

    if (session == NULL || client == NULL || tls == NULL ||
        http_check_set(client, "address",
                       http_check_str(postern_client_ip(ctx))) != 0 ||
        http_check_set(client, "port",
                       json_integer(postern_client_port(ctx))) != 0 ||
        http_check_set(client, "rdns",
                       http_check_str(postern_client_rdns(ctx))) != 0 ||
        (json_is_object(tls) &&
         (http_check_set(tls, "version",
                         http_check_str(postern_tls_version(ctx))) != 0 ||
          http_check_set(tls, "cipher",
                         http_check_str(postern_tls_cipher(ctx))) != 0)) ||
        http_check_set(session, "id",
                       http_check_str(postern_session_id(ctx))) != 0) {
        json_decref(client);
        json_decref(tls);
        json_decref(session);
        return NULL;
    }
    if (http_check_set(session, "client", client) != 0) {
        json_decref(tls);
        json_decref(session);
        return NULL;
    }
    if (http_check_set(session, "helo",
                       http_check_str(postern_helo_name(ctx))) != 0 ||
        http_check_set(session, "esmtp", json_boolean(postern_is_esmtp(ctx))) !=
            0 ||
        http_check_set(session, "tls", tls) != 0 ||
        http_check_set(session, "auth",
                       http_check_str(postern_auth_user(ctx))) != 0) {
        json_decref(session);
        return NULL;
    }
    return session;
}

/* The MAIL parameters given by the client, of those postern knows. */
static json_t *
http_check_params(postern_ctx *ctx)
{
    static const char *const keys[] = {"SIZE", "BODY", "SMTPUTF8",
                                       "AUTH", "RET",  "ENVID"};
    json_t *params = json_object();

    if (params == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *v = postern_mail_param(ctx, keys[i]);
        if (v != NULL && http_check_set(params, keys[i], http_check_str(v)))
            goto fail;
    }
    return params;
fail:
    json_decref(params);
    return NULL;
}

static json_t *
http_check_transaction(postern_ctx *ctx)
{
    const char *id = postern_transaction_id(ctx);
    const char *sender = postern_mail_from(ctx);

    if (id == NULL || sender == NULL)
        return json_null();
    json_t *tx = json_object();
    json_t *rcpts = json_array();
    if (tx == NULL || rcpts == NULL)
        goto fail;
    size_t n = postern_rcpt_count(ctx);
    for (size_t i = 0; i < n; i++) {
        const char *addr = postern_rcpt_address(ctx, i);
        json_t *item = http_check_str(addr);
        if (item == NULL || json_array_append_new(rcpts, item) != 0)
            goto fail;
    }
    if (http_check_set(tx, "id", http_check_str(id)) != 0 ||
        http_check_set(tx, "sender", http_check_str(sender)) != 0 ||
        http_check_set(tx, "params", http_check_params(ctx)) != 0)
        goto fail;
    if (json_object_set_new(tx, "recipients", rcpts) != 0) {
        json_decref(tx);
        return NULL;
    }
    return tx;
fail:
    json_decref(rcpts);
    json_decref(tx);
    return NULL;
}

json_t *
http_check_describe(postern_ctx *ctx, postern_hook hook,
                    size_t max_header_bytes)
{
    json_t *req = json_object();

    if (req == NULL ||
        http_check_set(req, "stage", http_check_str(postern_hook_name(hook))) !=
            0 ||
        http_check_set(req, "session", http_check_session(ctx)) != 0 ||
        http_check_set(req, "transaction", http_check_transaction(ctx)) != 0)
        goto fail;
    if (hook == POSTERN_HOOK_RCPT &&
        http_check_set(req, "recipient",
                       http_check_str(postern_rcpt_current(ctx))) != 0)
        goto fail;
    if (hook == POSTERN_HOOK_MESSAGE) {
        bool complete = false;
        json_t *headers =
            http_check_read_headers(ctx, max_header_bytes, &complete);
        if (http_check_set(
                req, "size",
                json_integer((json_int_t)postern_message_size(ctx))) != 0 ||
            http_check_set(req, "headers", headers) != 0 ||
            http_check_set(req, "headers_complete", json_boolean(complete)) !=
                0)
            goto fail;
    }
    return req;
fail:
    json_decref(req);
    return NULL;
}
