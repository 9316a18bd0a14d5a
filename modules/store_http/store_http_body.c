/*
 * store_http_body.c - the document as a stream: head, then the message
 * base64-encoded a chunk at a time as it is read, then tail. At most one
 * chunk of the message and its encoding are in memory, whatever the
 * message size, in two fixed buffers. The same stream serves the HTTP
 * body (on the loop) and the signature pass (on a pool thread: only
 * postern_message_read() and GnuTLS are called).
 *
 * The base64 encoder is written here: GnuTLS's only raw encoder
 * (gnutls_base64_encode2) returns a new allocation per call, which for a
 * 50 MB message means a thousand 64 KiB allocations (and, under ASan,
 * all of them held in its quarantine); RFC 4648 base64 into a caller's
 * buffer is a dozen lines.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "store_http.h"

/* Raw bytes encoded at once: a multiple of 3, so the chunks' encodings
 * concatenate into the encoding of the whole message. */
#define SH_RAW_CHUNK (48 * 1024)

#define SH_B64_CHUNK (SH_RAW_CHUNK / 3 * 4)

struct sh_body {
    const struct sh_document *doc;
    postern_message_reader *reader;
    uint64_t consumed; /* message bytes read so far */
    size_t head_off, tail_off;
    size_t encoded_len, encoded_off; /* the current chunk's base64 text */
    unsigned char raw[SH_RAW_CHUNK];
    char encoded[SH_B64_CHUNK];
};

/* RFC 4648 base64 of len bytes into out (4 * ceil(len / 3) bytes), with
 * padding, without line breaks. The length written. */
static size_t
sh_base64(const unsigned char *in, size_t len, char *out)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = 0;

    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[n++] = alphabet[(v >> 18) & 63];
        out[n++] = alphabet[(v >> 12) & 63];
        out[n++] = i + 1 < len ? alphabet[(v >> 6) & 63] : '=';
        out[n++] = i + 2 < len ? alphabet[v & 63] : '=';
    }
    return n;
}

int64_t
sh_body_size(const struct sh_document *doc)
{
    uint64_t b64 = (doc->message_size + 2) / 3 * 4;
    return (int64_t)(doc->head_len + b64 + doc->tail_len);
}

static void
sh_body_drop_chunk(struct sh_body *body)
{
    body->encoded_len = 0;
    body->encoded_off = 0;
}

struct sh_body *
sh_body_new(const struct sh_document *doc, postern_message_reader *reader)
{
    /* malloc, not calloc: the two buffers (112 KiB) need no zeroing, and
     * clearing them per message showed in the benchmark's profile. */
    struct sh_body *body = malloc(sizeof *body);

    if (body == NULL) {
        postern_message_close(reader);
        return NULL;
    }
    body->doc = doc;
    body->reader = reader;
    body->consumed = 0;
    body->head_off = 0;
    body->tail_off = 0;
    sh_body_drop_chunk(body);
    return body;
}

void
sh_body_restart(struct sh_body *body, postern_message_reader *reader)
{
    postern_message_close(body->reader);
    body->reader = reader;
    body->consumed = 0;
    body->head_off = 0;
    body->tail_off = 0;
    sh_body_drop_chunk(body);
}

void
sh_body_free(struct sh_body *body)
{
    if (body == NULL)
        return;
    postern_message_close(body->reader);
    sh_body_drop_chunk(body);
    free(body);
}

/* Read exactly want bytes of the message into raw. 0 or -1. */
static int
sh_body_read_raw(struct sh_body *body, size_t want)
{
    size_t got = 0;

    if (body->reader == NULL)
        return -1;
    while (got < want) {
        ssize_t n =
            postern_message_read(body->reader, body->raw + got, want - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1; /* an error, or shorter than its announced size */
        got += (size_t)n;
    }
    body->consumed += want;
    if (body->consumed == body->doc->message_size) {
        /* Content-Length was promised: a longer message is an error. */
        unsigned char extra;
        ssize_t n;
        while ((n = postern_message_read(body->reader, &extra, 1)) < 0 &&
               errno == EINTR)
            ;
        if (n != 0)
            return -1;
    }
    return 0;
}

/* The next chunk of base64 text. 0 or -1. */
static int
sh_body_next_chunk(struct sh_body *body)
{
    uint64_t left = body->doc->message_size - body->consumed;
    size_t want = left < SH_RAW_CHUNK ? (size_t)left : SH_RAW_CHUNK;

    sh_body_drop_chunk(body);
    if (sh_body_read_raw(body, want) != 0)
        return -1;
    body->encoded_len = sh_base64(body->raw, want, body->encoded);
    return 0;
}

static size_t
sh_copy(char *dst, size_t room, const char *src, size_t src_len, size_t *off)
{
    size_t n = src_len - *off < room ? src_len - *off : room;

    memcpy(dst, src + *off, n);
    *off += n;
    return n;
}

ssize_t
sh_body_read(struct sh_body *body, char *buf, size_t len)
{
    const struct sh_document *doc = body->doc;
    size_t n = 0;

    while (n < len) {
        if (body->head_off < doc->head_len) {
            n += sh_copy(buf + n, len - n, doc->head, doc->head_len,
                         &body->head_off);
        } else if (body->encoded_off < body->encoded_len) {
            n += sh_copy(buf + n, len - n, body->encoded, body->encoded_len,
                         &body->encoded_off);
        } else if (body->consumed < doc->message_size) {
            if (sh_body_next_chunk(body) != 0)
                return -1;
        } else if (body->tail_off < doc->tail_len) {
            n += sh_copy(buf + n, len - n, doc->tail, doc->tail_len,
                         &body->tail_off);
        } else {
            break;
        }
    }
    return (ssize_t)n;
}

int
sh_body_sign(struct sh_body *body, const unsigned char *key, size_t key_len,
             const char *timestamp, char hex[65])
{
    gnutls_hmac_hd_t hmac;
    unsigned char digest[32];
    char *buf = malloc(SH_RAW_CHUNK);
    int rc = -1;

    if (buf == NULL)
        return -1;
    if (gnutls_hmac_init(&hmac, GNUTLS_MAC_SHA256, key, key_len) != 0) {
        free(buf);
        return -1;
    }
    if (gnutls_hmac(hmac, timestamp, strlen(timestamp)) == 0 &&
        gnutls_hmac(hmac, ".", 1) == 0) {
        for (;;) {
            ssize_t n = sh_body_read(body, buf, SH_RAW_CHUNK);
            if (n <= 0) {
                rc = n == 0 ? 0 : -1;
                break;
            }
            if (gnutls_hmac(hmac, buf, (size_t)n) != 0)
                break;
        }
    }
    gnutls_hmac_deinit(hmac, digest);
    free(buf);
    for (size_t i = 0; rc == 0 && i < sizeof digest; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    return rc;
}
