/*
 * mock_http.c - the fake HTTP service behind mock_http.h: requests are
 * recorded and wait in a FIFO until the test answers them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mock_http.h"

#define MOCK_HTTP_HEADERS 64

struct mock_header {
    char *name, *value;
};

struct postern_http_request {
    char *method, *url;
    struct mock_header headers[MOCK_HTTP_HEADERS];
    size_t n_headers;
    int has_body;
    char *body;
    size_t body_len;
    int has_source, source_read, source_failed;
    postern_http_body_source source;
    double timeout;
    size_t max_response;
    char *ca_file, *cert_file, *key_file;
    int insecure;
};

struct postern_http_response {
    int code;
    struct mock_header headers[MOCK_HTTP_HEADERS];
    size_t n_headers;
    char *body;
    size_t len;
    const char *error;
};

struct postern_http_call {
    struct postern_http_call *next;
    postern_http_request *req;
    postern_ctx *ctx;
    postern_http_cb cb;
    void *arg;
};

struct postern_curl_call {
    struct postern_curl_call *next;
    CURL *easy;
    postern_ctx *ctx;
    postern_curl_cb cb;
    void *arg;
};

static struct {
    struct postern_http_call *calls; /* oldest first */
    struct postern_curl_call *transfers;
    size_t sent, cancels;
    int refusing;
} mh;

static char *
dup_or_die(const char *s)
{
    char *d = strdup(s);
    if (!d)
        abort();
    return d;
}

/* --- the request builder, with the core's checks --- */

postern_http_request *
postern_http_request_new(const char *method, const char *url)
{
    if (!method || !url || !*method || strpbrk(method, " \t\r\n:") ||
        strpbrk(url, "\r\n") ||
        (strncasecmp(url, "http://", 7) != 0 &&
         strncasecmp(url, "https://", 8) != 0))
        return NULL;
    postern_http_request *req = calloc(1, sizeof(*req));
    if (!req)
        abort();
    req->method = dup_or_die(method);
    req->url = dup_or_die(url);
    req->max_response = 64 * 1024;
    return req;
}

int
postern_http_request_header(postern_http_request *req, const char *name,
                            const char *value)
{
    if (!req || !name || !value || !*name || strpbrk(name, "\r\n: \t") ||
        strpbrk(value, "\r\n") || req->n_headers == MOCK_HTTP_HEADERS)
        return -1;
    req->headers[req->n_headers].name = dup_or_die(name);
    req->headers[req->n_headers].value = dup_or_die(value);
    req->n_headers++;
    return 0;
}

int
postern_http_request_body(postern_http_request *req, const void *data,
                          size_t len)
{
    if (!req || (!data && len))
        return -1;
    free(req->body);
    req->body = malloc(len + 1);
    if (!req->body)
        abort();
    if (len)
        memcpy(req->body, data, len);
    req->body[len] = '\0';
    req->body_len = len;
    req->has_body = 1;
    req->has_source = 0;
    return 0;
}

int
postern_http_request_body_source(postern_http_request *req,
                                 const postern_http_body_source *src)
{
    if (!req || !src || !src->read || src->size < -1)
        return -1;
    free(req->body);
    req->body = NULL;
    req->body_len = 0;
    req->source = *src;
    req->has_source = req->has_body = 1;
    return 0;
}

void
postern_http_request_timeout(postern_http_request *req, double seconds)
{
    if (req && seconds >= 0)
        req->timeout = seconds;
}

void
postern_http_request_max_response(postern_http_request *req, size_t bytes)
{
    if (req)
        req->max_response = bytes;
}

int
postern_http_request_tls(postern_http_request *req, const postern_http_tls *tls)
{
    if (!req || !tls || !tls->cert_file != !tls->key_file)
        return -1;
    free(req->ca_file);
    free(req->cert_file);
    free(req->key_file);
    req->ca_file = tls->ca_file ? dup_or_die(tls->ca_file) : NULL;
    req->cert_file = tls->cert_file ? dup_or_die(tls->cert_file) : NULL;
    req->key_file = tls->key_file ? dup_or_die(tls->key_file) : NULL;
    req->insecure = tls->insecure != 0;
    return 0;
}

static void
headers_free(struct mock_header *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(h[i].name);
        free(h[i].value);
    }
}

void
postern_http_request_free(postern_http_request *req)
{
    if (!req)
        return;
    free(req->method);
    free(req->url);
    headers_free(req->headers, req->n_headers);
    free(req->body);
    free(req->ca_file);
    free(req->cert_file);
    free(req->key_file);
    free(req);
}

/* --- the response --- */

int
postern_http_response_code(const postern_http_response *resp)
{
    return resp ? resp->code : 0;
}

int
postern_http_response_version(const postern_http_response *resp)
{
    return resp && resp->code ? 11 : 0;
}

const char *
postern_http_response_header(const postern_http_response *resp,
                             const char *name)
{
    if (!resp || !name)
        return NULL;
    for (size_t i = resp->n_headers; i-- > 0;)
        if (strcasecmp(resp->headers[i].name, name) == 0)
            return resp->headers[i].value;
    return NULL;
}

const char *
postern_http_response_body(const postern_http_response *resp, size_t *len)
{
    if (len)
        *len = resp ? resp->len : 0;
    return resp && resp->body ? resp->body : "";
}

const char *
postern_http_response_error(const postern_http_response *resp)
{
    return resp && resp->error ? resp->error : "";
}

/* --- calls --- */

postern_http_call *
postern_http_send(postern_ctx *ctx, postern_http_request *req,
                  postern_http_cb cb, void *arg)
{
    if (!req)
        return NULL;
    if (mh.refusing || !cb) {
        postern_http_request_free(req);
        return NULL;
    }
    struct postern_http_call *c = calloc(1, sizeof(*c)), **tail = &mh.calls;
    if (!c)
        abort();
    c->req = req;
    c->ctx = ctx;
    c->cb = cb;
    c->arg = arg;
    while (*tail)
        tail = &(*tail)->next;
    *tail = c;
    mh.sent++;
    return c;
}

static void
call_free(struct postern_http_call *c)
{
    postern_http_request_free(c->req);
    free(c);
}

void
postern_http_cancel(postern_http_call *call)
{
    for (struct postern_http_call **pp = &mh.calls; *pp; pp = &(*pp)->next)
        if (*pp == call) {
            *pp = call->next;
            call_free(call);
            mh.cancels++;
            return;
        }
    fail_msg("postern_http_cancel() of a call that is not waiting");
}

static struct postern_http_call *
call_at(size_t i)
{
    struct postern_http_call *c = mh.calls;
    while (c && i-- > 0)
        c = c->next;
    return c;
}

void
mock_http_refuse(int refuse)
{
    mh.refusing = refuse;
}

size_t
mock_http_pending(void)
{
    size_t n = 0;
    for (struct postern_http_call *c = mh.calls; c; c = c->next)
        n++;
    return n;
}

size_t
mock_http_sent_count(void)
{
    return mh.sent;
}

size_t
mock_http_cancel_count(void)
{
    return mh.cancels;
}

const char *
mock_http_method(size_t i)
{
    struct postern_http_call *c = call_at(i);
    return c ? c->req->method : NULL;
}

const char *
mock_http_url(size_t i)
{
    struct postern_http_call *c = call_at(i);
    return c ? c->req->url : NULL;
}

const char *
mock_http_header(size_t i, const char *name)
{
    struct postern_http_call *c = call_at(i);
    if (!c)
        return NULL;
    for (size_t k = c->req->n_headers; k-- > 0;)
        if (strcasecmp(c->req->headers[k].name, name) == 0)
            return c->req->headers[k].value;
    return NULL;
}

const char *
mock_http_body(size_t i, size_t *len, int *failed)
{
    struct postern_http_call *c = call_at(i);
    if (len)
        *len = 0;
    if (failed)
        *failed = 0;
    if (!c || !c->req->has_body)
        return NULL;
    postern_http_request *req = c->req;
    if (req->has_source && !req->source_read) {
        size_t cap = 4096;
        req->body = malloc(cap);
        if (!req->body)
            abort();
        for (;;) {
            if (req->body_len + 1024 + 1 > cap) {
                cap *= 2;
                if (!(req->body = realloc(req->body, cap)))
                    abort();
            }
            ssize_t n = req->source.read(req->source.arg,
                                         req->body + req->body_len, 1024);
            if (n < 0) {
                req->source_failed = 1;
                break;
            }
            if (n == 0)
                break;
            req->body_len += (size_t)n;
        }
        req->body[req->body_len] = '\0';
        req->source_read = 1;
    }
    if (len)
        *len = req->body_len;
    if (failed)
        *failed = req->source_failed;
    return req->body;
}

double
mock_http_timeout(size_t i)
{
    struct postern_http_call *c = call_at(i);
    return c ? c->req->timeout : 0;
}

size_t
mock_http_max_response(size_t i)
{
    struct postern_http_call *c = call_at(i);
    return c ? c->req->max_response : 0;
}

const char *
mock_http_ca_file(size_t i)
{
    struct postern_http_call *c = call_at(i);
    return c ? c->req->ca_file : NULL;
}

int
mock_http_insecure(size_t i)
{
    struct postern_http_call *c = call_at(i);
    return c ? c->req->insecure : 0;
}

int
mock_http_tied(size_t i)
{
    struct postern_http_call *c = call_at(i);
    return c && c->ctx;
}

/* Pop call from the queue and run its callback with resp. */
static void
deliver(struct postern_http_call *c, postern_http_status st,
        struct postern_http_response *resp)
{
    for (struct postern_http_call **pp = &mh.calls; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    c->cb(c->arg, st, resp);
    call_free(c);
}

int
mock_http_respond(int code, const char *headers, const char *body, size_t len)
{
    struct postern_http_call *c = mh.calls;
    if (!c)
        return 0;
    struct postern_http_response resp = {.code = code, .error = ""};
    for (const char *p = headers; p && *p;) {
        const char *end = strchr(p, '\n');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *colon = memchr(p, ':', n);
        if (colon && resp.n_headers < MOCK_HTTP_HEADERS) {
            const char *v = colon + 1;
            while (v < p + n && (*v == ' ' || *v == '\t'))
                v++;
            resp.headers[resp.n_headers].name = strndup(p, (size_t)(colon - p));
            resp.headers[resp.n_headers].value =
                strndup(v, (size_t)(p + n - v));
            resp.n_headers++;
        }
        p = end ? end + 1 : p + n;
    }
    resp.body = malloc(len + 1);
    if (!resp.body)
        abort();
    if (len)
        memcpy(resp.body, body, len);
    resp.body[len] = '\0';
    resp.len = len;
    deliver(c, POSTERN_HTTP_OK, &resp);
    headers_free(resp.headers, resp.n_headers);
    free(resp.body);
    return 1;
}

int
mock_http_fail(postern_http_status status, const char *error)
{
    struct postern_http_call *c = mh.calls;
    if (!c)
        return 0;
    struct postern_http_response resp = {.error = error ? error : "failed"};
    deliver(c, status, &resp);
    return 1;
}

size_t
mock_http_cancel_all(void)
{
    size_t n = 0;
    struct postern_http_call *c = mh.calls;
    while (c) {
        struct postern_http_call *next = c->next;
        if (c->ctx) {
            struct postern_http_response resp = {.error = "cancelled"};
            deliver(c, POSTERN_HTTP_CANCELLED, &resp);
            n++;
        }
        c = next;
    }
    return n;
}

/* --- postern/curl.h --- */

postern_curl_call *
postern_curl_perform(postern_ctx *ctx, CURL *easy, postern_curl_cb cb,
                     void *arg)
{
    if (mh.refusing || !easy || !cb)
        return NULL;
    for (struct postern_curl_call *t = mh.transfers; t; t = t->next)
        if (t->easy == easy)
            return NULL; /* already running */
    struct postern_curl_call *t = calloc(1, sizeof(*t)), **tail = &mh.transfers;
    if (!t)
        abort();
    t->easy = easy;
    t->ctx = ctx;
    t->cb = cb;
    t->arg = arg;
    while (*tail)
        tail = &(*tail)->next;
    *tail = t;
    return t;
}

void
postern_curl_cancel(postern_curl_call *call)
{
    for (struct postern_curl_call **pp = &mh.transfers; *pp; pp = &(*pp)->next)
        if (*pp == call) {
            *pp = call->next;
            free(call);
            mh.cancels++;
            return;
        }
    fail_msg("postern_curl_cancel() of a transfer that is not running");
}

size_t
mock_curl_pending(void)
{
    size_t n = 0;
    for (struct postern_curl_call *t = mh.transfers; t; t = t->next)
        n++;
    return n;
}

CURL *
mock_curl_easy(size_t i)
{
    struct postern_curl_call *t = mh.transfers;
    while (t && i-- > 0)
        t = t->next;
    return t ? t->easy : NULL;
}

int
mock_curl_complete(CURLcode result)
{
    struct postern_curl_call *t = mh.transfers;
    if (!t)
        return 0;
    mh.transfers = t->next;
    t->cb(t->arg, result, t->easy);
    free(t);
    return 1;
}

void
mock_http_clear(void)
{
    while (mh.calls) {
        struct postern_http_call *c = mh.calls;
        mh.calls = c->next;
        call_free(c);
    }
    while (mh.transfers) {
        struct postern_curl_call *t = mh.transfers;
        mh.transfers = t->next;
        free(t);
    }
    mh.sent = mh.cancels = 0;
    mh.refusing = 0;
}
