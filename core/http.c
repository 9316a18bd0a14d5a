/*
 * http.c - asynchronous HTTP for modules (include/postern/http.h) on the
 * core's libcurl multi (core/curl_loop.c).
 *
 * A request is a plain description until postern_http_send(), which turns
 * it into an easy handle: one per call (the connections live in the
 * multi's cache and are reused across calls). Redirects are not followed;
 * only http and https are allowed; "Expect: 100-continue" is turned off so
 * an upload does not wait a second for a server that does not answer it.
 *
 * Response headers: every response's lines arrive through the header
 * callback (a 100 Continue first, say); a status line starts a new set,
 * so the module sees the headers of the last response only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "curl_loop.h"
#include "http.h"
#include "http_status.h"
#include "log.h"
#include "module_scope.h"
#include "postern/http.h"
#include "postern_build.h"

#define HTTP_DEFAULT_MAX_RESPONSE (64 * 1024)
#define HTTP_MAX_HEADERS 200 /* response fields kept; more are dropped */

struct postern_http_request {
    char *method;
    char *url;
    struct curl_slist *headers;
    bool has_content_type;
    bool has_body;
    char *body; /* memory body */
    size_t body_len;
    bool has_source;
    postern_http_body_source source;
    double timeout;
    size_t max_response;
    char *ca_file, *cert_file, *key_file;
    bool insecure;
};

struct http_header {
    char *name;
    char *value;
};

struct postern_http_response {
    int code;
    int version;
    char *body;
    size_t len, cap;
    struct http_header *headers;
    size_t n_headers;
    const char *error;
    char errbuf[CURL_ERROR_SIZE];
};

struct postern_http_call {
    struct curl_job job; /* first: the loop hands back this */
    postern_http_request *req;
    struct postern_http_response resp;
    postern_http_cb cb;
    void *arg;
    bool too_large;
    bool body_failed;
    bool finished; /* the body source must not be read any more */
    char sid[17];  /* the session that sent it, for the log ("" none) */
    const struct module_instance *scope; /* who sent it */
};

/* --- the request --- */

static bool
has_crlf(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

postern_http_request *
postern_http_request_new(const char *method, const char *url)
{
    if (!method || !url || !*method || !*url || has_crlf(method) ||
        has_crlf(url) || strpbrk(method, " \t:"))
        return NULL;
    if (strncasecmp(url, "http://", 7) != 0 &&
        strncasecmp(url, "https://", 8) != 0)
        return NULL;
    postern_http_request *req = calloc(1, sizeof(*req));
    if (!req)
        return NULL;
    req->max_response = HTTP_DEFAULT_MAX_RESPONSE;
    if (!(req->method = strdup(method)) || !(req->url = strdup(url))) {
        postern_http_request_free(req);
        return NULL;
    }
    return req;
}

int
postern_http_request_header(postern_http_request *req, const char *name,
                            const char *value)
{
    if (!req || !name || !value || !*name || has_crlf(name) ||
        has_crlf(value) || strchr(name, ':'))
        return -1;
    for (const char *p = name; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return -1;
    size_t len = strlen(name) + strlen(value) + 3;
    char *line = malloc(len);
    if (!line)
        return -1;
    /* "name;" is libcurl's way to send a header with an empty value. */
    if (*value)
        snprintf(line, len, "%s: %s", name, value);
    else
        snprintf(line, len, "%s;", name);
    struct curl_slist *l = curl_slist_append(req->headers, line);
    free(line);
    if (!l)
        return -1;
    req->headers = l;
    if (strcasecmp(name, "Content-Type") == 0)
        req->has_content_type = true;
    return 0;
}

int
postern_http_request_body(postern_http_request *req, const void *data,
                          size_t len)
{
    if (!req || (!data && len))
        return -1;
    char *copy = malloc(len ? len : 1);
    if (!copy)
        return -1;
    if (len)
        memcpy(copy, data, len);
    free(req->body);
    req->body = copy;
    req->body_len = len;
    req->has_body = true;
    req->has_source = false;
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
    req->has_source = true;
    req->has_body = true;
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

static int
string_set(char **dst, const char *src)
{
    char *copy = NULL;
    if (src && *src && !(copy = strdup(src)))
        return -1;
    free(*dst);
    *dst = copy;
    return 0;
}

int
postern_http_request_tls(postern_http_request *req, const postern_http_tls *tls)
{
    if (!req || !tls || (tls->cert_file && !tls->key_file) ||
        (!tls->cert_file && tls->key_file))
        return -1;
    if (string_set(&req->ca_file, tls->ca_file) < 0 ||
        string_set(&req->cert_file, tls->cert_file) < 0 ||
        string_set(&req->key_file, tls->key_file) < 0)
        return -1;
    req->insecure = tls->insecure != 0;
    return 0;
}

void
postern_http_request_free(postern_http_request *req)
{
    if (!req)
        return;
    free(req->method);
    free(req->url);
    curl_slist_free_all(req->headers);
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
    return resp ? resp->version : 0;
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
        *len = resp && resp->body ? resp->len : 0;
    if (!resp)
        return NULL;
    return resp->body ? resp->body : "";
}

const char *
postern_http_response_error(const postern_http_response *resp)
{
    return resp && resp->error ? resp->error : "";
}

static void
headers_clear(struct postern_http_response *resp)
{
    for (size_t i = 0; i < resp->n_headers; i++) {
        free(resp->headers[i].name);
        free(resp->headers[i].value);
    }
    free(resp->headers);
    resp->headers = NULL;
    resp->n_headers = 0;
}

/* Easy handles kept for the next call: a curl_easy_init() per request
 * showed in the store_http benchmark. A handle is reset before it is kept;
 * the connections themselves live in the multi's cache either way. */
#define HTTP_SPARE_EASY 64
static CURL *spare_easy[HTTP_SPARE_EASY];
static size_t n_spare_easy;

static CURL *
easy_take(void)
{
    if (n_spare_easy > 0)
        return spare_easy[--n_spare_easy];
    return curl_easy_init();
}

/* The handle is out of the multi (curl_loop releases a job only then). */
static void
easy_give(CURL *easy)
{
    if (!curl_loop_up() || n_spare_easy == HTTP_SPARE_EASY) {
        curl_easy_cleanup(easy);
        return;
    }
    curl_easy_reset(easy);
    spare_easy[n_spare_easy++] = easy;
}

void
http_spares_free(void)
{
    while (n_spare_easy > 0)
        curl_easy_cleanup(spare_easy[--n_spare_easy]);
}

static void
call_free(struct postern_http_call *call)
{
    if (call->job.easy)
        easy_give(call->job.easy);
    postern_http_request_free(call->req);
    headers_clear(&call->resp);
    free(call->resp.body);
    free(call);
}

/* --- libcurl callbacks (inside libcurl: record, never call out but to
 * the module's body source) --- */

static size_t
on_write(char *data, size_t size, size_t nmemb, void *userp)
{
    struct postern_http_call *call = userp;
    struct postern_http_response *resp = &call->resp;
    size_t n = size * nmemb;
    if (call->finished)
        return 0;
    if (n > call->req->max_response - resp->len) {
        call->too_large = true;
        return 0; /* CURLE_WRITE_ERROR */
    }
    if (resp->len + n + 1 > resp->cap) {
        size_t cap = resp->cap ? resp->cap : 1024;
        while (cap < resp->len + n + 1)
            cap *= 2;
        char *b = realloc(resp->body, cap);
        if (!b)
            return 0;
        resp->body = b;
        resp->cap = cap;
    }
    memcpy(resp->body + resp->len, data, n);
    resp->len += n;
    resp->body[resp->len] = '\0';
    return n;
}

static size_t
on_header(char *line, size_t size, size_t nmemb, void *userp)
{
    struct postern_http_call *call = userp;
    struct postern_http_response *resp = &call->resp;
    size_t n = size * nmemb;
    const char *name, *value;
    size_t nlen, vlen;

    switch (http_header_line(line, n, &name, &nlen, &value, &vlen)) {
    case 1: /* a new response: forget the one before (100, ...) */
        headers_clear(resp);
        resp->len = 0;
        if (resp->body)
            resp->body[0] = '\0';
        break;
    case 2: {
        if (resp->n_headers >= HTTP_MAX_HEADERS)
            break;
        struct http_header *h =
            realloc(resp->headers, (resp->n_headers + 1) * sizeof(*h));
        if (!h)
            return 0;
        resp->headers = h;
        h = &resp->headers[resp->n_headers];
        h->name = strndup(name, nlen);
        h->value = strndup(value, vlen);
        if (!h->name || !h->value) {
            free(h->name);
            free(h->value);
            return 0;
        }
        resp->n_headers++;
        break;
    }
    default:
        break;
    }
    return n;
}

static size_t
on_read(char *buf, size_t size, size_t nmemb, void *userp)
{
    struct postern_http_call *call = userp;
    if (call->finished)
        return CURL_READFUNC_ABORT;
    const postern_http_body_source *src = &call->req->source;
    const struct module_instance *was = module_scope_enter(call->scope);
    ssize_t n = src->read(src->arg, buf, size * nmemb);
    module_scope_leave(was);
    if (n < 0 || (size_t)n > size * nmemb) {
        call->body_failed = true;
        return CURL_READFUNC_ABORT;
    }
    return (size_t)n;
}

static int
on_seek(void *userp, curl_off_t offset, int origin)
{
    struct postern_http_call *call = userp;
    const postern_http_body_source *src = &call->req->source;
    if (call->finished || offset != 0 || origin != SEEK_SET || !src->rewind)
        return CURL_SEEKFUNC_CANTSEEK;
    const struct module_instance *was = module_scope_enter(call->scope);
    int rc = src->rewind(src->arg);
    module_scope_leave(was);
    if (rc < 0) {
        call->body_failed = true;
        return CURL_SEEKFUNC_FAIL;
    }
    return CURL_SEEKFUNC_OK;
}

/* --- the call --- */

static void
on_job_done(struct curl_job *job, CURLcode result, bool cancelled)
{
    struct postern_http_call *call = (struct postern_http_call *)job;
    struct postern_http_response *resp = &call->resp;
    postern_http_status st =
        cancelled
            ? POSTERN_HTTP_CANCELLED
            : http_status_from_curl(result, call->too_large, call->body_failed);
    call->finished = true;
    if (st == POSTERN_HTTP_OK) {
        long code = 0, version = 0;
        curl_easy_getinfo(job->easy, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_getinfo(job->easy, CURLINFO_HTTP_VERSION, &version);
        resp->code = (int)code;
        resp->version = http_version_number(version);
        resp->error = "";
    } else {
        resp->code = 0;
        resp->version = 0;
        headers_clear(resp);
        resp->len = 0;
        if (resp->body)
            resp->body[0] = '\0';
        if (cancelled)
            resp->error = "cancelled";
        else if (st == POSTERN_HTTP_TOO_LARGE)
            resp->error = "response body over its limit";
        else if (st == POSTERN_HTTP_BODY)
            resp->error = "the request body's source failed";
        else if (result == CURLE_OPERATION_TIMEDOUT && !resp->errbuf[0])
            resp->error = "timed out waiting for a free transfer slot";
        else
            resp->error =
                resp->errbuf[0] ? resp->errbuf : curl_easy_strerror(result);
        log_event(LOG_LEVEL_DEBUG, call->sid[0] ? call->sid : NULL, "http",
                  "method=%s url=%s status=%s error=%s",
                  postern_log_value(call->req->method),
                  postern_log_value(call->req->url), http_status_name(st),
                  postern_log_value(resp->error));
    }
    const struct module_instance *was = module_scope_enter(call->scope);
    call->cb(call->arg, st, resp); /* also on failure: its error text */
    module_scope_leave(was);
    call_free(call);
}

static void
on_job_release(struct curl_job *job)
{
    call_free((struct postern_http_call *)job);
}

static const char *
user_agent(void)
{
    return "postern/" POSTERN_VERSION;
}

/* Every option of the easy handle; 0 or -1. */
static int
easy_setup(struct postern_http_call *call)
{
    postern_http_request *req = call->req;
    CURL *e = call->job.easy;
    const struct http_config *cfg = curl_loop_config();
    CURLcode rc = CURLE_OK;

#define SET(opt, val)                                                          \
    do {                                                                       \
        if (rc == CURLE_OK)                                                    \
            rc = curl_easy_setopt(e, opt, val);                                \
    } while (0)

    SET(CURLOPT_URL, req->url);
#if LIBCURL_VERSION_NUM >= 0x075500
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
#else
    SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_USERAGENT, user_agent());
    SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    /* https: wait for a connection being set up to learn whether it can
     * carry this request as another HTTP/2 stream, rather than open one
     * more. (http:// is HTTP/1.1, one request per connection at a time.) */
    if (strncasecmp(req->url, "https://", 8) == 0)
        SET(CURLOPT_PIPEWAIT, 1L);
    SET(CURLOPT_ERRORBUFFER, call->resp.errbuf);
    SET(CURLOPT_WRITEFUNCTION, on_write);
    SET(CURLOPT_WRITEDATA, call);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, call);
    if (req->max_response < ((size_t)1 << 62))
        SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)req->max_response);

    /* The method and the body. */
    bool is_post = strcmp(req->method, "POST") == 0;
    if (strcmp(req->method, "HEAD") == 0)
        SET(CURLOPT_NOBODY, 1L);
    else if (!req->has_body && strcmp(req->method, "GET") != 0)
        SET(CURLOPT_CUSTOMREQUEST, req->method);
    if (req->has_body) {
        SET(CURLOPT_POST, 1L);
        if (!is_post)
            SET(CURLOPT_CUSTOMREQUEST, req->method);
        if (req->has_source) {
            SET(CURLOPT_READFUNCTION, on_read);
            SET(CURLOPT_READDATA, call);
            SET(CURLOPT_SEEKFUNCTION, on_seek);
            SET(CURLOPT_SEEKDATA, call);
            /* -1: libcurl sends it chunked (HTTP/1.1) or as HTTP/2 data
             * frames. */
            SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->source.size);
        } else {
            SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
            SET(CURLOPT_POSTFIELDS, req->body);
        }
        /* Not libcurl's form-urlencoded guess. */
        if (!req->has_content_type &&
            postern_http_request_header(req, "Content-Type",
                                        "application/octet-stream") < 0)
            return -1;
    }
    /* No 1 s wait for a 100 Continue. */
    struct curl_slist *l = curl_slist_append(req->headers, "Expect:");
    if (!l)
        return -1;
    req->headers = l;
    SET(CURLOPT_HTTPHEADER, req->headers);

    /* TLS: verified unless the module says otherwise. */
    const char *ca = req->ca_file ? req->ca_file : cfg ? cfg->ca_file : NULL;
    if (ca)
        SET(CURLOPT_CAINFO, ca);
    if (req->cert_file) {
        SET(CURLOPT_SSLCERT, req->cert_file);
        SET(CURLOPT_SSLKEY, req->key_file);
    }
    SET(CURLOPT_SSL_VERIFYPEER, req->insecure ? 0L : 1L);
    SET(CURLOPT_SSL_VERIFYHOST, req->insecure ? 0L : 2L);
#undef SET
    return rc == CURLE_OK ? 0 : -1;
}

postern_http_call *
postern_http_send(postern_ctx *ctx, postern_http_request *req,
                  postern_http_cb cb, void *arg)
{
    if (!req)
        return NULL;
    const struct http_config *cfg = curl_loop_config();
    struct postern_http_call *call = NULL;
    if (!cb || !curl_loop_up() || !(call = calloc(1, sizeof(*call)))) {
        postern_http_request_free(req);
        return NULL;
    }
    call->req = req;
    call->cb = cb;
    call->arg = arg;
    call->scope = module_scope();
    const char *sid = ctx ? hook_ctx_log_sid(ctx) : NULL;
    if (sid)
        snprintf(call->sid, sizeof(call->sid), "%s", sid);
    if (!(call->job.easy = easy_take()) || easy_setup(call) < 0) {
        call_free(call);
        return NULL;
    }
    call->job.timeout = req->timeout > 0 ? req->timeout : cfg->timeout;
    call->job.set_timeout = true;
    call->job.done = on_job_done;
    call->job.release = on_job_release;
    if (curl_job_start(&call->job, ctx) < 0) {
        call_free(call);
        return NULL;
    }
    return call;
}

void
postern_http_cancel(postern_http_call *call)
{
    if (!call)
        return;
    call->finished = true;
    curl_job_cancel(&call->job); /* frees call through on_job_release */
}
