/*
 * test_http.c - test plugin: HTTP calls through include/postern/http.h,
 * answered in SMTP replies and log lines.
 *
 *   RCPT TO:<get=PATH@x>     GET url+PATH, tied to the hook context
 *   RCPT TO:<post=PATH@x>    POST url+PATH with the memory body "hello
 *                            postern" and the header "X-Test: rcpt"
 *   RCPT TO:<cancel=PATH@x>  GET and cancel at once: 250 "cancelled"; its
 *                            callback must never run (logged as an error)
 *   RCPT TO:<curl=PATH@x>    GET url+PATH with the module's own libcurl
 *                            handle through postern/curl.h: 250 "curl
 *                            result=<CURLcode> code=<status> body=<...>"
 *   anything else            CONTINUE
 *   message hook             POST url+"message" with the message as a
 *                            streamed body (postern_message_read), the
 *                            header "X-Tx: <transaction id>"; a 2xx
 *                            answer accepts, anything else is a 451
 *
 * The reply to a call: 250 (451 for the message when not 2xx)
 *   "http status=ok code=200 version=11 reply=<X-Reply header> body=<the
 *   first 60 bytes, printable>"
 * and every callback logs
 *   "test_http result status=... code=... error=... orphaned=0|1".
 *
 * Config: {"url": "http://127.0.0.1:8080/" (required), "timeout": seconds
 * (0: the core's), "max_response": bytes (0: the default), "ca_file",
 * "insecure": bool, "chunked": bool (message body of unknown size),
 * "fail_body": bool (the message body source fails after its first
 * read)}.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <postern/curl.h>
#include <postern/postern.h>

struct test_http {
    char *url;
    double timeout;
    size_t max_response;
    char *ca_file;
    int insecure;
    int chunked;
    int fail_body;
};

struct call {
    postern_ctx *ctx;
    postern_message_reader *reader; /* message hook */
    int message;
    int fail_body;
    size_t reads;
};

static const char *const status_names[] = {"ok",    "timeout",   "connect",
                                           "tls",   "too_large", "body",
                                           "error", "cancelled"};

static int
http_create(postern_module_init *init, void **instance)
{
    const json_t *cfg = postern_init_config(init);
    const json_t *url = json_object_get(cfg, "url");
    const json_t *timeout = json_object_get(cfg, "timeout");
    const json_t *max = json_object_get(cfg, "max_response");
    const json_t *ca = json_object_get(cfg, "ca_file");
    if (!json_is_string(url)) {
        postern_init_error(init, "url", "expected a URL string");
        return -1;
    }
    if (timeout && !json_is_number(timeout)) {
        postern_init_error(init, "timeout", "expected a number");
        return -1;
    }
    if (max && !json_is_integer(max)) {
        postern_init_error(init, "max_response", "expected an integer");
        return -1;
    }
    if (ca && !json_is_string(ca)) {
        postern_init_error(init, "ca_file", "expected a file name");
        return -1;
    }
    struct test_http *t = calloc(1, sizeof(*t));
    if (!t || !(t->url = strdup(json_string_value(url))) ||
        (ca && !(t->ca_file = strdup(json_string_value(ca))))) {
        if (t)
            free(t->url);
        free(t);
        postern_init_error(init, NULL, "out of memory");
        return -1;
    }
    t->timeout = timeout ? json_number_value(timeout) : 0;
    t->max_response = max ? (size_t)json_integer_value(max) : 0;
    t->insecure = json_is_true(json_object_get(cfg, "insecure"));
    t->chunked = json_is_true(json_object_get(cfg, "chunked"));
    t->fail_body = json_is_true(json_object_get(cfg, "fail_body"));
    *instance = t;
    return 0;
}

static void
http_destroy(void *instance)
{
    struct test_http *t = instance;
    free(t->url);
    free(t->ca_file);
    free(t);
}

static void
on_response(void *arg, postern_http_status status,
            const postern_http_response *resp)
{
    struct call *c = arg;
    int orphaned = postern_ctx_orphaned(c->ctx);
    int code = postern_http_response_code(resp);
    size_t len = 0;
    const char *body = postern_http_response_body(resp, &len);
    const char *reply = postern_http_response_header(resp, "X-Reply");
    char excerpt[61];
    size_t i;

    for (i = 0; i < len && i < sizeof(excerpt) - 1; i++)
        excerpt[i] = body[i] >= 0x20 && body[i] < 0x7f ? body[i] : '.';
    excerpt[i] = '\0';
    postern_log(NULL, POSTERN_LOG_INFO,
                "test_http result status=%s code=%d error=%s orphaned=%d",
                status_names[status], code,
                postern_log_value(postern_http_response_error(resp)), orphaned);
    if (c->reader)
        postern_message_close(c->reader);
    int ok = status == POSTERN_HTTP_OK && code >= 200 && code < 300;
    postern_reply(c->ctx, c->message && !ok ? 451 : 250,
                  c->message && !ok ? "4.3.0" : "2.0.0",
                  "http status=%s code=%d version=%d reply=%s body=%s",
                  status_names[status], code,
                  postern_http_response_version(resp), reply ? reply : "-",
                  excerpt);
    postern_resume(c->ctx,
                   c->message && !ok ? POSTERN_TEMPFAIL : POSTERN_ACCEPT);
    free(c);
}

static int cancelled_callbacks;

static void
on_cancelled_response(void *arg, postern_http_status status,
                      const postern_http_response *resp)
{
    cancelled_callbacks++;
    postern_log(NULL, POSTERN_LOG_ERROR,
                "test_http callback of a cancelled call ran (%d)",
                cancelled_callbacks);
}

static postern_http_request *
request_new(struct test_http *t, const char *method, const char *path)
{
    size_t len = strlen(t->url) + strlen(path) + 1;
    char *url = malloc(len);
    if (!url)
        return NULL;
    snprintf(url, len, "%s%s", t->url, path);
    postern_http_request *req = postern_http_request_new(method, url);
    free(url);
    if (!req)
        return NULL;
    if (t->timeout > 0)
        postern_http_request_timeout(req, t->timeout);
    if (t->max_response)
        postern_http_request_max_response(req, t->max_response);
    if (t->ca_file || t->insecure) {
        postern_http_tls tls = {.ca_file = t->ca_file, .insecure = t->insecure};
        postern_http_request_tls(req, &tls);
    }
    return req;
}

static postern_result transfer_start(struct test_http *t, postern_ctx *ctx,
                                     const char *path);

static postern_result
http_rcpt(postern_ctx *ctx, void *instance)
{
    struct test_http *t = instance;
    const char *rcpt = postern_rcpt_current(ctx);
    const char *at = rcpt ? strrchr(rcpt, '@') : NULL;
    char local[256];

    if (!at || (size_t)(at - rcpt) >= sizeof(local))
        return POSTERN_CONTINUE;
    memcpy(local, rcpt, (size_t)(at - rcpt));
    local[at - rcpt] = '\0';
    char *eq = strchr(local, '=');
    if (!eq)
        return POSTERN_CONTINUE;
    *eq = '\0';
    const char *path = eq + 1;
    if (strcmp(local, "curl") == 0)
        return transfer_start(t, ctx, path);
    int post = strcmp(local, "post") == 0;
    if (!post && strcmp(local, "get") != 0 && strcmp(local, "cancel") != 0)
        return POSTERN_CONTINUE;

    postern_http_request *req = request_new(t, post ? "POST" : "GET", path);
    if (!req) {
        postern_reply(ctx, 451, "4.3.0", "bad request");
        return POSTERN_TEMPFAIL;
    }
    if (post) {
        static const char body[] = "hello postern";
        postern_http_request_header(req, "X-Test", "rcpt");
        postern_http_request_header(req, "Content-Type", "text/plain");
        postern_http_request_body(req, body, sizeof(body) - 1);
    }
    if (strcmp(local, "cancel") == 0) {
        postern_http_call *call =
            postern_http_send(ctx, req, on_cancelled_response, NULL);
        postern_http_cancel(call);
        postern_reply(ctx, 250, "2.1.5", "cancelled");
        return POSTERN_ACCEPT;
    }
    struct call *c = calloc(1, sizeof(*c));
    if (!c) {
        postern_http_request_free(req);
        return POSTERN_TEMPFAIL;
    }
    c->ctx = ctx;
    if (!postern_http_send(ctx, req, on_response, c)) {
        free(c);
        postern_reply(ctx, 451, "4.3.0", "call did not start");
        return POSTERN_TEMPFAIL;
    }
    return POSTERN_PENDING;
}

/* --- postern/curl.h: the module's own easy handle --- */

struct transfer {
    postern_ctx *ctx;
    char body[61];
    size_t len;
};

static size_t
transfer_write(char *data, size_t size, size_t nmemb, void *userp)
{
    struct transfer *x = userp;
    for (size_t i = 0; i < size * nmemb && x->len < sizeof(x->body) - 1; i++)
        x->body[x->len++] = data[i] >= 0x20 && data[i] < 0x7f ? data[i] : '.';
    x->body[x->len] = '\0';
    return size * nmemb;
}

static void
on_transfer(void *arg, CURLcode result, CURL *easy)
{
    struct transfer *x = arg;
    long code = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
    postern_log(NULL, POSTERN_LOG_INFO,
                "test_http curl result=%d code=%ld orphaned=%d", (int)result,
                code, postern_ctx_orphaned(x->ctx));
    curl_easy_cleanup(easy);
    postern_reply(x->ctx, 250, "2.0.0", "curl result=%d code=%ld body=%s",
                  (int)result, code, x->body);
    postern_resume(x->ctx, POSTERN_ACCEPT);
    free(x);
}

static postern_result
transfer_start(struct test_http *t, postern_ctx *ctx, const char *path)
{
    struct transfer *x = calloc(1, sizeof(*x));
    CURL *easy = x ? curl_easy_init() : NULL;
    char url[512];
    if (!easy) {
        free(x);
        return POSTERN_TEMPFAIL;
    }
    x->ctx = ctx;
    snprintf(url, sizeof(url), "%s%s", t->url, path);
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, transfer_write);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    if (t->timeout > 0)
        curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)(t->timeout * 1000));
    if (!postern_curl_perform(ctx, easy, on_transfer, x)) {
        curl_easy_cleanup(easy);
        free(x);
        return POSTERN_TEMPFAIL;
    }
    /* Running now: a second perform of the same handle is refused. */
    if (postern_curl_perform(ctx, easy, on_transfer, x))
        postern_log(NULL, POSTERN_LOG_ERROR,
                    "test_http a running handle was accepted twice");
    return POSTERN_PENDING;
}

static ssize_t
message_read(void *arg, char *buf, size_t len)
{
    struct call *c = arg;
    if (c->fail_body && c->reads++ > 0)
        return -1;
    return postern_message_read(c->reader, buf, len);
}

static int
message_rewind(void *arg)
{
    struct call *c = arg;
    postern_message_reader *r = postern_message_open(c->ctx);
    if (!r)
        return -1;
    postern_message_close(c->reader);
    c->reader = r;
    return 0;
}

static postern_result
http_message(postern_ctx *ctx, void *instance)
{
    struct test_http *t = instance;
    struct call *c = calloc(1, sizeof(*c));
    postern_http_request *req = c ? request_new(t, "POST", "message") : NULL;
    if (!req || !(c->reader = postern_message_open(ctx))) {
        postern_http_request_free(req);
        free(c);
        return POSTERN_TEMPFAIL;
    }
    c->ctx = ctx;
    c->message = 1;
    c->fail_body = t->fail_body;
    const char *tx = postern_transaction_id(ctx);
    postern_http_request_header(req, "X-Tx", tx ? tx : "-");
    postern_http_request_header(req, "Content-Type", "message/rfc822");
    postern_http_body_source src = {
        .size = t->chunked ? -1 : (int64_t)postern_message_size(ctx),
        .read = message_read,
        .rewind = message_rewind,
        .arg = c,
    };
    postern_http_request_body_source(req, &src);
    if (!postern_http_send(ctx, req, on_response, c)) {
        postern_message_close(c->reader);
        free(c);
        return POSTERN_TEMPFAIL;
    }
    return POSTERN_PENDING;
}

POSTERN_MODULE_DEFINE = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "test_http",
    .create = http_create,
    .destroy = http_destroy,
    .handlers = {[POSTERN_HOOK_RCPT] = http_rcpt,
                 [POSTERN_HOOK_MESSAGE] = http_message},
};
