/*
 * store_file_envelope.c - the envelope of a delivery as one line of JSON,
 * written straight into a buffer on the loop thread.
 *
 * Byte for byte what jansson's json_dumps(JSON_COMPACT) made of the same
 * object (keys in insertion order, '/' and non-ASCII as they are, other
 * escapes as jansson writes them; tests/unit/test_store_file.c checks it
 * against jansson), at a fifth of the instructions: building a jansson
 * object and dumping it was a quarter of the loop's work per stored
 * message (callgrind, 10 KB messages).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_file.h"

/* A growing text; on out of memory it stops growing and says so. */
struct sf_text {
    char *s;
    size_t len, cap;
    bool failed;
};

static void
sf_text_add(struct sf_text *t, const char *s, size_t n)
{
    if (t->failed)
        return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 512;
        while (cap < t->len + n + 1)
            cap *= 2;
        char *grown = realloc(t->s, cap);
        if (grown == NULL) {
            t->failed = true;
            return;
        }
        t->s = grown;
        t->cap = cap;
    }
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = '\0';
}

static void
sf_text_put(struct sf_text *t, const char *s)
{
    sf_text_add(t, s, strlen(s));
}

/* Length of the UTF-8 sequence at s (1..4), or 0 when it is not one:
 * overlong forms, surrogates and code points above U+10FFFF are not. */
static size_t
sf_utf8_length(const unsigned char *s)
{
    unsigned c = s[0];
    size_t n = c < 0x80   ? 1
               : c < 0xc2 ? 0
               : c < 0xe0 ? 2
               : c < 0xf0 ? 3
               : c < 0xf5 ? 4
                          : 0;
    uint32_t cp = n == 2 ? c & 0x1f : n == 3 ? c & 0x0f : c & 0x07;

    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return n;
}

static bool
sf_utf8_valid(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0';) {
        size_t n = sf_utf8_length(p);
        if (n == 0)
            return false;
        p += n;
    }
    return true;
}

/* s as a JSON string, null for NULL. Text that is not UTF-8 has its 8-bit
 * bytes written as '?', so the line stays valid JSON. */
static void
sf_json_put_string(struct sf_text *t, const char *s)
{
    if (s == NULL) {
        sf_text_put(t, "null");
        return;
    }
    bool utf8 = sf_utf8_valid(s);
    const char *run = s;

    sf_text_put(t, "\"");
    for (const char *p = s;; p++) {
        unsigned char c = (unsigned char)*p;
        bool plain = c >= 0x20 && c != '"' && c != '\\' && (c < 0x80 || utf8);
        if (plain)
            continue;
        sf_text_add(t, run, (size_t)(p - run));
        run = p + 1;
        if (c == '\0')
            break;
        /* jansson's escapes: short ones, else \u00XX for a control. */
        static const char short_from[] = "\"\\\b\f\n\r\t";
        static const char short_to[] = "\"\\bfnrt";
        const char *at = strchr(short_from, c);
        char escape[8];
        if (c >= 0x80)
            snprintf(escape, sizeof escape, "?");
        else if (at != NULL)
            snprintf(escape, sizeof escape, "\\%c", short_to[at - short_from]);
        else
            snprintf(escape, sizeof escape, "\\u%04X", c);
        sf_text_put(t, escape);
    }
    sf_text_put(t, "\"");
}

/* ,"key": (the comma unless it opens the object) */
static void
sf_json_key(struct sf_text *t, const char *key, bool first)
{
    if (!first)
        sf_text_put(t, ",");
    sf_json_put_string(t, key);
    sf_text_put(t, ":");
}

static void
sf_json_integer(struct sf_text *t, long long value)
{
    char digits[24];

    snprintf(digits, sizeof digits, "%lld", value);
    sf_text_put(t, digits);
}

/* The envelope of this transaction, for the recipients rcpts[0..n), as
 * one line ending in a newline; NULL when out of memory. */
char *
sf_envelope_text(postern_ctx *ctx, const size_t *rcpts, size_t n,
                 const char *received_at)
{
    static const char *const params[] = {"SIZE", "BODY", "SMTPUTF8",
                                         "AUTH", "RET",  "ENVID"};
    struct sf_text t = {0};
    bool first = true;

    sf_text_put(&t, "{");
    sf_json_key(&t, "id", true);
    sf_json_put_string(&t, postern_transaction_id(ctx));
    sf_json_key(&t, "session", false);
    sf_json_put_string(&t, postern_session_id(ctx));
    sf_json_key(&t, "client_ip", false);
    sf_json_put_string(&t, postern_client_ip(ctx));
    sf_json_key(&t, "client_port", false);
    sf_json_integer(&t, postern_client_port(ctx));
    sf_json_key(&t, "helo", false);
    sf_json_put_string(&t, postern_helo_name(ctx));
    sf_json_key(&t, "esmtp", false);
    sf_text_put(&t, postern_is_esmtp(ctx) ? "true" : "false");
    sf_json_key(&t, "tls", false);
    sf_text_put(&t, postern_tls_active(ctx) ? "true" : "false");
    sf_json_key(&t, "auth_user", false);
    sf_json_put_string(&t, postern_auth_user(ctx));
    sf_json_key(&t, "mail_from", false);
    sf_json_put_string(&t, postern_mail_from(ctx));
    sf_json_key(&t, "mail_params", false);
    sf_text_put(&t, "{");
    for (size_t i = 0; i < sizeof params / sizeof params[0]; i++) {
        const char *value = postern_mail_param(ctx, params[i]);
        if (value == NULL)
            continue;
        sf_json_key(&t, params[i], first);
        sf_json_put_string(&t, value);
        first = false;
    }
    sf_text_put(&t, "}");
    sf_json_key(&t, "rcpt_to", false);
    sf_text_put(&t, "[");
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            sf_text_put(&t, ",");
        sf_json_put_string(&t, postern_rcpt_address(ctx, rcpts[i]));
    }
    sf_text_put(&t, "]");
    sf_json_key(&t, "size", false);
    sf_json_integer(&t, (long long)postern_message_size(ctx));
    sf_json_key(&t, "quarantine", false);
    sf_json_put_string(&t, postern_message_quarantined(ctx));
    sf_json_key(&t, "received_at", false);
    sf_json_put_string(&t, received_at);
    sf_text_put(&t, "}\n");
    if (t.failed) {
        free(t.s);
        return NULL;
    }
    return t.s;
}
