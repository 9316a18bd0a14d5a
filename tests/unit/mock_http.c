/*
 * mock_http.c - the fake HTTP service of mock_http.h: requests queue up
 * until the test answers them.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>

#include <cmocka.h>

#include "mock_http.h"

#define MOCK_HTTP_MAX_HEADERS 16

struct postern_http_request {
    char *method, *url;
    char *names[MOCK_HTTP_MAX_HEADERS], *values[MOCK_HTTP_MAX_HEADERS];
    size_t n_headers;
    char *body;
    size_t body_len;
    double timeout;
    size_t max_response;
    char *ca_file;
};

struct postern_http_call {
    postern_http_request *req;
    postern_ctx *ctx;
    postern_http_cb cb;
    void *arg;
    struct postern_http_call *next;
};

struct postern_http_response {
    int code;
    const char *body;
    size_t len;
    const char *error;
};

static struct postern_http_call *mock_calls;
static size_t mock_cancels;
static int mock_refusing;

static char *
mock_http_strdup(const char *s)
{
    char *copy = strdup(s);

    if (copy == NULL)
        abort();
    return copy;
}

postern_http_request *
postern_http_request_new(const char *method, const char *url)
{
    if (method == NULL || url == NULL ||
        (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0))
        return NULL;
    postern_http_request *req = calloc(1, sizeof *req);
    if (req == NULL)
        abort();
    req->method = mock_http_strdup(method);
    req->url = mock_http_strdup(url);
    return req;
}

int
postern_http_request_header(postern_http_request *req, const char *name,
                            const char *value)
{
    if (req == NULL || name == NULL || value == NULL || name[0] == '\0' ||
        strpbrk(name, "\r\n") || strpbrk(value, "\r\n") ||
        req->n_headers == MOCK_HTTP_MAX_HEADERS)
        return -1;
    req->names[req->n_headers] = mock_http_strdup(name);
    req->values[req->n_headers++] = mock_http_strdup(value);
    return 0;
}

int
postern_http_request_body(postern_http_request *req, const void *data,
                          size_t len)
{
    if (req == NULL || (data == NULL && len > 0))
        return -1;
    free(req->body);
    req->body = malloc(len + 1);
    if (req->body == NULL)
        abort();
    if (len > 0)
        memcpy(req->body, data, len);
    req->body[len] = '\0';
    req->body_len = len;
    return 0;
}

int
postern_http_request_body_source(postern_http_request *req,
                                 const postern_http_body_source *src)
{
    (void)req;
    (void)src;
    fail_msg("postern_http_request_body_source() is not mocked");
    return -1;
}

void
postern_http_request_timeout(postern_http_request *req, double seconds)
{
    req->timeout = seconds;
}

void
postern_http_request_max_response(postern_http_request *req, size_t bytes)
{
    req->max_response = bytes;
}

int
postern_http_request_tls(postern_http_request *req, const postern_http_tls *tls)
{
    if (req == NULL || tls == NULL)
        return -1;
    free(req->ca_file);
    req->ca_file = tls->ca_file ? mock_http_strdup(tls->ca_file) : NULL;
    return 0;
}

void
postern_http_request_free(postern_http_request *req)
{
    if (req == NULL)
        return;
    free(req->method);
    free(req->url);
    for (size_t i = 0; i < req->n_headers; i++) {
        free(req->names[i]);
        free(req->values[i]);
    }
    free(req->body);
    free(req->ca_file);
    free(req);
}

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
    (void)resp;
    (void)name;
    return NULL;
}

const char *
postern_http_response_body(const postern_http_response *resp, size_t *len)
{
    if (len)
        *len = resp ? resp->len : 0;
    return resp ? resp->body : "";
}

const char *
postern_http_response_error(const postern_http_response *resp)
{
    return resp ? resp->error : "";
}

postern_http_call *
postern_http_send(postern_ctx *ctx, postern_http_request *req,
                  postern_http_cb cb, void *arg)
{
    if (mock_refusing) {
        postern_http_request_free(req);
        return NULL;
    }
    struct postern_http_call *call = calloc(1, sizeof *call), **tail;
    if (call == NULL)
        abort();
    call->req = req;
    call->ctx = ctx;
    call->cb = cb;
    call->arg = arg;
    for (tail = &mock_calls; *tail != NULL; tail = &(*tail)->next)
        ;
    *tail = call;
    return call;
}

static void
mock_http_call_free(struct postern_http_call *call)
{
    postern_http_request_free(call->req);
    free(call);
}

void
postern_http_cancel(postern_http_call *call)
{
    for (struct postern_http_call **p = &mock_calls; *p; p = &(*p)->next) {
        if (*p == call) {
            *p = call->next;
            mock_http_call_free(call);
            mock_cancels++;
            return;
        }
    }
    fail_msg("postern_http_cancel() of a call that is not waiting");
}

void
mock_http_clear(void)
{
    while (mock_calls != NULL) {
        struct postern_http_call *call = mock_calls;
        mock_calls = call->next;
        mock_http_call_free(call);
    }
    mock_cancels = 0;
    mock_refusing = 0;
}

void
mock_http_refuse(int refuse)
{
    mock_refusing = refuse;
}

size_t
mock_http_pending(void)
{
    size_t n = 0;

    for (struct postern_http_call *c = mock_calls; c != NULL; c = c->next)
        n++;
    return n;
}

size_t
mock_http_cancel_count(void)
{
    return mock_cancels;
}

static const struct postern_http_request *
mock_http_nth(size_t i)
{
    struct postern_http_call *c = mock_calls;

    while (c != NULL && i-- > 0)
        c = c->next;
    return c ? c->req : NULL;
}

const char *
mock_http_method(size_t i)
{
    const struct postern_http_request *r = mock_http_nth(i);
    return r ? r->method : NULL;
}

const char *
mock_http_url(size_t i)
{
    const struct postern_http_request *r = mock_http_nth(i);
    return r ? r->url : NULL;
}

const char *
mock_http_body(size_t i)
{
    const struct postern_http_request *r = mock_http_nth(i);
    return r ? r->body : NULL;
}

const char *
mock_http_header(size_t i, const char *name)
{
    const struct postern_http_request *r = mock_http_nth(i);

    for (size_t k = r ? r->n_headers : 0; k-- > 0;)
        if (strcasecmp(r->names[k], name) == 0)
            return r->values[k];
    return NULL;
}

double
mock_http_timeout(size_t i)
{
    const struct postern_http_request *r = mock_http_nth(i);
    return r ? r->timeout : 0;
}

const char *
mock_http_ca_file(size_t i)
{
    const struct postern_http_request *r = mock_http_nth(i);
    return r ? r->ca_file : NULL;
}

int
mock_http_answer(postern_http_status status, int code, const char *body)
{
    struct postern_http_call *call = mock_calls;

    if (call == NULL)
        return 0;
    mock_calls = call->next;
    struct postern_http_response resp = {
        .code = status == POSTERN_HTTP_OK ? code : 0,
        .body = body && status == POSTERN_HTTP_OK ? body : "",
        .len = body && status == POSTERN_HTTP_OK ? strlen(body) : 0,
        .error = status == POSTERN_HTTP_OK ? "" : "mock failure",
    };
    /* A failure comes with its reason; a cancelled call with nothing. */
    call->cb(call->arg, status,
             status == POSTERN_HTTP_CANCELLED ? NULL : &resp);
    mock_http_call_free(call);
    return 1;
}
