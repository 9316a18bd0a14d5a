/*
 * store_http_document.c - the JSON document store_http posts, built with
 * jansson around the message: everything but the message text makes the
 * head, which ends inside the "message" object with "data":" open; the
 * base64 text follows while the body is sent, then the tail closes the
 * string and the objects. docs/store_http.schema.json describes it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store_http.h"

#define SH_DOCUMENT_VERSION 1

static const char sh_tail[] = "\"}}";

/* A JSON string, or null for NULL; bytes of text that is not UTF-8
 * become '?' (jansson refuses such strings). */
static json_t *
sh_json_string(const char *s)
{
    if (s == NULL)
        return json_null();
    json_t *j = json_string(s);
    if (j != NULL)
        return j;
    char *copy = strdup(s);
    if (copy == NULL)
        return NULL;
    for (char *p = copy; *p != '\0'; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    j = json_string(copy);
    free(copy);
    return j;
}

/* Set key, taking value: -1 when it is missing (out of memory). */
static int
sh_set(json_t *obj, const char *key, json_t *value)
{
    return value != NULL ? json_object_set_new(obj, key, value) : -1;
}

static json_t *
sh_envelope(postern_ctx *ctx)
{
    /* The MAIL parameters postern knows (RFC 1870, 6152, 6531, 3461,
     * 4954); an unknown one is not passed on. */
    static const char *const params[] = {"SIZE", "BODY",  "SMTPUTF8",
                                         "RET",  "ENVID", "AUTH"};
    json_t *env = json_object(), *mail_params = json_object(),
           *rcpt_to = json_array();
    int rc = env && mail_params && rcpt_to ? 0 : -1;

    for (size_t i = 0; rc == 0 && i < sizeof params / sizeof params[0]; i++) {
        const char *value = postern_mail_param(ctx, params[i]);
        if (value != NULL)
            rc = sh_set(mail_params, params[i], sh_json_string(value));
    }
    for (size_t i = 0; rc == 0 && i < postern_rcpt_count(ctx); i++) {
        json_t *addr = sh_json_string(postern_rcpt_address(ctx, i));
        rc = addr ? json_array_append_new(rcpt_to, addr) : -1;
    }
    if (rc == 0)
        rc = sh_set(env, "mail_from", sh_json_string(postern_mail_from(ctx))) |
             sh_set(env, "mail_params", json_incref(mail_params)) |
             sh_set(env, "rcpt_to", json_incref(rcpt_to));
    json_decref(mail_params);
    json_decref(rcpt_to);
    if (rc != 0) {
        json_decref(env);
        return NULL;
    }
    return env;
}

static json_t *
sh_client(postern_ctx *ctx)
{
    json_t *client = json_object();

    if (client == NULL ||
        (sh_set(client, "ip", sh_json_string(postern_client_ip(ctx))) |
         sh_set(client, "port", json_integer(postern_client_port(ctx))) |
         sh_set(client, "helo", sh_json_string(postern_helo_name(ctx))) |
         sh_set(client, "esmtp", json_boolean(postern_is_esmtp(ctx))) |
         sh_set(client, "rdns", sh_json_string(postern_client_rdns(ctx))) |
         sh_set(client, "auth_user", sh_json_string(postern_auth_user(ctx)))) !=
            0) {
        json_decref(client);
        return NULL;
    }
    return client;
}

static json_t *
sh_tls(postern_ctx *ctx)
{
    json_t *tls = json_object();
    int active = postern_tls_active(ctx);

    if (tls == NULL ||
        (sh_set(tls, "active", json_boolean(active)) |
         sh_set(tls, "version",
                sh_json_string(active ? postern_tls_version(ctx) : NULL)) |
         sh_set(tls, "cipher",
                sh_json_string(active ? postern_tls_cipher(ctx) : NULL)) |
         sh_set(tls, "peer_dn",
                sh_json_string(active ? postern_tls_peer_dn(ctx) : NULL))) !=
            0) {
        json_decref(tls);
        return NULL;
    }
    return tls;
}

/*
 * What other modules found, from the notes known to hold C strings:
 * "spf.result" (transaction; the spf module's result name, "pass",
 * "fail", ...) and "dnsbl.listed" (session; the dnsbl module's space-
 * separated list of the lists that named the client). A note is read
 * only when its owner documents it as a string: any other note may hold
 * a struct.
 */
static json_t *
sh_results(postern_ctx *ctx)
{
    static const struct {
        const char *name, *note;
        postern_note_scope scope;
    } notes[] = {
        {"spf", "spf.result", POSTERN_NOTE_TRANSACTION},
        {"dnsbl", "dnsbl.listed", POSTERN_NOTE_SESSION},
    };
    json_t *results = json_object();

    for (size_t i = 0; results && i < sizeof notes / sizeof notes[0]; i++) {
        const char *value =
            postern_note_get(ctx, notes[i].scope, notes[i].note);
        if (value != NULL &&
            sh_set(results, notes[i].name, sh_json_string(value)) != 0) {
            json_decref(results);
            return NULL;
        }
    }
    return results;
}

int
sh_document_build(const struct store_http *mod, postern_ctx *ctx, double now,
                  struct sh_document *doc)
{
    char received_at[32];
    time_t t = (time_t)now;
    struct tm tm;
    json_t *root = json_object();
    int rc = root != NULL && gmtime_r(&t, &tm) != NULL &&
                     strftime(received_at, sizeof received_at,
                              "%Y-%m-%dT%H:%M:%SZ", &tm) > 0
                 ? 0
                 : -1;

    memset(doc, 0, sizeof *doc);
    doc->message_size = postern_message_size(ctx);
    if (rc == 0)
        rc = sh_set(root, "version", json_integer(SH_DOCUMENT_VERSION)) |
             sh_set(root, "id", sh_json_string(postern_transaction_id(ctx))) |
             sh_set(root, "session", sh_json_string(postern_session_id(ctx))) |
             sh_set(root, "gateway", sh_json_string(mod->gateway)) |
             sh_set(root, "received_at", json_string(received_at)) |
             sh_set(root, "envelope", sh_envelope(ctx)) |
             sh_set(root, "quarantine",
                    sh_json_string(postern_message_quarantined(ctx))) |
             sh_set(root, "client", sh_client(ctx)) |
             sh_set(root, "tls", sh_tls(ctx)) |
             sh_set(root, "results", sh_results(ctx));
    char *text = rc == 0 ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (text == NULL)
        return -1;
    /* {..."results":{...}} becomes {...,"message":{...,"data":" */
    size_t len = strlen(text);
    char message[128];
    int n = snprintf(message, sizeof message,
                     ",\"message\":{\"size\":%llu,\"encoding\":\"base64\","
                     "\"data\":\"",
                     (unsigned long long)doc->message_size);
    char *head = len >= 2 && text[len - 1] == '}'
                     ? realloc(text, len - 1 + (size_t)n + 1)
                     : NULL;
    if (head == NULL) {
        free(text);
        return -1;
    }
    memcpy(head + len - 1, message, (size_t)n + 1);
    doc->head = head;
    doc->head_len = len - 1 + (size_t)n;
    doc->tail = sh_tail;
    doc->tail_len = sizeof sh_tail - 1;
    return 0;
}

void
sh_document_free(struct sh_document *doc)
{
    free(doc->head);
    doc->head = NULL;
}
