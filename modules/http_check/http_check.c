/*
 * http_check.c - the http_check module: policy delegation over HTTP.
 *
 * At each hook it is attached to (any of connect, helo, mail, rcpt, data,
 * message) the handler POSTs a JSON description of the stage to the
 * configured URL (http_check_request.c) through the core's HTTP service,
 * goes PENDING, and resumes with what the service answered
 * (http_check_answer.c): continue, accept, reject, tempfail or disconnect,
 * with its reply and headers to add. A service that cannot be reached,
 * times out, answers other than 2xx or answers what the module does not
 * understand has failed: the call ends as on_error says, with a log line
 * giving the reason.
 *
 * Each call owns one struct http_check_call from the handler to the HTTP
 * callback, which runs exactly once (the request is tied to the context,
 * so a client leaving meanwhile ends it with POSTERN_HTTP_CANCELLED);
 * the callback frees the call and resumes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "http_check.h"

#define HTTP_CHECK_DEFAULT_TIMEOUT 10.0
#define HTTP_CHECK_MAX_TIMEOUT 300.0
#define HTTP_CHECK_DEFAULT_HEADER_BYTES (64 * 1024)
#define HTTP_CHECK_MIN_HEADER_BYTES 1024
#define HTTP_CHECK_MAX_HEADER_BYTES (1024 * 1024)
#define HTTP_CHECK_MAX_ANSWER (64 * 1024)

typedef enum http_check_on_error {
    HTTP_CHECK_ERROR_TEMPFAIL,
    HTTP_CHECK_ERROR_CONTINUE,
    HTTP_CHECK_ERROR_REJECT
} http_check_on_error;

static const char *const http_check_on_error_names[] = {"tempfail", "continue",
                                                        "reject"};

struct http_check_module {
    char *url;
    double timeout;
    char *ca_file, *cert_file, *key_file;
    char *authorization; /* "Bearer <token>", or NULL */
    http_check_on_error on_error;
    size_t max_header_bytes;
};

/* One call to the service, from the handler to the callback. */
struct http_check_call {
    const struct http_check_module *mod;
    postern_ctx *ctx;
    postern_hook hook;
};

/* --- the decision --------------------------------------------------------- */

/* The service failed (why: for the log): the result on_error asks for,
 * with its reply. */
static postern_result
http_check_failed(postern_ctx *ctx, const struct http_check_module *mod,
                  postern_hook hook, const char *error, const char *why)
{
    postern_log(ctx, POSTERN_LOG_WARNING,
                "stage=%s error=%s reason=%s on_error=%s",
                postern_hook_name(hook), error, postern_log_value(why),
                http_check_on_error_names[mod->on_error]);
    switch (mod->on_error) {
    case HTTP_CHECK_ERROR_CONTINUE:
        return POSTERN_CONTINUE;
    case HTTP_CHECK_ERROR_REJECT:
        /* A greeting or a DATA refusal is 554 (RFC 5321 3.1, 4.3.2). */
        postern_reply(ctx,
                      hook == POSTERN_HOOK_CONNECT || hook == POSTERN_HOOK_DATA
                          ? 554
                          : 550,
                      "5.7.1", "Rejected by policy");
        return POSTERN_REJECT;
    default:
        postern_reply(ctx, hook == POSTERN_HOOK_CONNECT ? 421 : 451, "4.3.0",
                      "Policy service unavailable, try again later");
        return POSTERN_TEMPFAIL;
    }
}

/* Apply a valid answer: its headers, then its reply. */
static postern_result
http_check_apply(postern_ctx *ctx, postern_hook hook,
                 const struct http_check_answer *answer)
{
    for (size_t i = 0; i < answer->n_headers; i++)
        if (postern_header_add(ctx, answer->headers[i].name,
                               answer->headers[i].value) != 0)
            postern_log(ctx, POSTERN_LOG_WARNING,
                        "stage=%s header=%s not added (over the header "
                        "limit, or refused)",
                        postern_hook_name(hook),
                        postern_log_value(answer->headers[i].name));

    int code = answer->code;
    if (hook == POSTERN_HOOK_CONNECT && answer->result == POSTERN_REJECT)
        code = 554; /* the only refusal a greeting may be */
    else if (hook == POSTERN_HOOK_CONNECT && answer->result == POSTERN_TEMPFAIL)
        code = 421;
    else if (answer->result == POSTERN_DISCONNECT)
        code = 421;
    if (answer->result != POSTERN_CONTINUE &&
        (code != 0 || answer->enhanced[0] || answer->text[0]))
        postern_reply(ctx, code, answer->enhanced[0] ? answer->enhanced : NULL,
                      "%s", answer->text);

    postern_log(ctx, POSTERN_LOG_INFO, "stage=%s action=%s code=%d headers=%zu",
                postern_hook_name(hook), answer->action, code,
                answer->n_headers);
    return answer->result;
}

/* What the HTTP call came to, as a hook result. */
static postern_result
http_check_result(struct http_check_call *call, postern_http_status status,
                  const postern_http_response *resp)
{
    static const struct {
        const char *error, *why;
    } errors[] = {
        [POSTERN_HTTP_TIMEOUT] = {"timeout", "no answer in time"},
        [POSTERN_HTTP_CONNECT] = {"connect", "could not connect"},
        [POSTERN_HTTP_TLS] = {"tls", "TLS handshake or verification failed"},
        [POSTERN_HTTP_TOO_LARGE] = {"too_large", "answer over 64 KiB"},
        [POSTERN_HTTP_BODY] = {"body", "request body failed"},
        [POSTERN_HTTP_ERROR] = {"http", "HTTP error"},
    };
    postern_ctx *ctx = call->ctx;
    const struct http_check_module *mod = call->mod;
    char why[512];

    if (status != POSTERN_HTTP_OK) {
        size_t i = (size_t)status < sizeof errors / sizeof errors[0] &&
                           errors[status].error
                       ? (size_t)status
                       : POSTERN_HTTP_ERROR;
        const char *detail = resp ? postern_http_response_error(resp) : NULL;
        return http_check_failed(ctx, mod, call->hook, errors[i].error,
                                 detail && detail[0] ? detail : errors[i].why);
    }
    int code = postern_http_response_code(resp);
    if (code < 200 || code > 299) {
        snprintf(why, sizeof why, "HTTP status %d", code);
        return http_check_failed(ctx, mod, call->hook, "status", why);
    }
    size_t len = 0;
    const char *body = postern_http_response_body(resp, &len);
    struct http_check_answer answer;
    if (http_check_answer_parse(body ? body : "", body ? len : 0, call->hook,
                                &answer, why, sizeof why) != 0)
        return http_check_failed(ctx, mod, call->hook, "answer", why);
    postern_result r = http_check_apply(ctx, call->hook, &answer);
    http_check_answer_clear(&answer);
    return r;
}

static void
http_check_done(void *arg, postern_http_status status,
                const postern_http_response *resp)
{
    struct http_check_call *call = arg;
    postern_ctx *ctx = call->ctx;
    postern_result r = POSTERN_CONTINUE;

    if (status == POSTERN_HTTP_CANCELLED || postern_ctx_orphaned(ctx))
        /* The client left (or postern stops): nobody reads a decision. */
        postern_log(ctx, POSTERN_LOG_DEBUG, "stage=%s cancelled",
                    postern_hook_name(call->hook));
    else
        r = http_check_result(call, status, resp);
    free(call);
    postern_resume(ctx, r);
}

/* --- the handlers --------------------------------------------------------- */

/* The request for this call, ready to send; NULL (after logging) on
 * failure. */
static postern_http_request *
http_check_request(postern_ctx *ctx, const struct http_check_module *mod,
                   postern_hook hook)
{
    json_t *desc = http_check_describe(ctx, hook, mod->max_header_bytes);
    char *body = desc ? json_dumps(desc, JSON_COMPACT) : NULL;
    postern_http_request *req = postern_http_request_new("POST", mod->url);
    postern_http_tls tls = {.ca_file = mod->ca_file,
                            .cert_file = mod->cert_file,
                            .key_file = mod->key_file};

    json_decref(desc);
    if (body == NULL || req == NULL ||
        postern_http_request_header(req, "Content-Type", "application/json") !=
            0 ||
        postern_http_request_header(req, "Accept", "application/json") != 0 ||
        (mod->authorization != NULL &&
         postern_http_request_header(req, "Authorization",
                                     mod->authorization) != 0) ||
        postern_http_request_body(req, body, strlen(body)) != 0 ||
        ((mod->ca_file || mod->cert_file) &&
         postern_http_request_tls(req, &tls) != 0)) {
        free(body);
        postern_http_request_free(req);
        return NULL;
    }
    free(body);
    postern_http_request_timeout(req, mod->timeout);
    postern_http_request_max_response(req, HTTP_CHECK_MAX_ANSWER);
    return req;
}

static postern_result
http_check_handle(postern_ctx *ctx, void *instance, postern_hook hook)
{
    const struct http_check_module *mod = instance;
    struct http_check_call *call = calloc(1, sizeof *call);
    postern_http_request *req =
        call ? http_check_request(ctx, mod, hook) : NULL;

    if (req == NULL) {
        free(call);
        return http_check_failed(ctx, mod, hook, "request",
                                 "could not build the request (reading the "
                                 "message, or out of memory)");
    }
    call->mod = mod;
    call->ctx = ctx;
    call->hook = hook;
    if (postern_http_send(ctx, req, http_check_done, call) == NULL) {
        free(call);
        return http_check_failed(ctx, mod, hook, "request",
                                 "could not start the request");
    }
    postern_log(ctx, POSTERN_LOG_DEBUG, "stage=%s asking url=%s",
                postern_hook_name(hook), postern_log_value(mod->url));
    return POSTERN_PENDING;
}

static postern_result
http_check_connect(postern_ctx *ctx, void *instance)
{
    return http_check_handle(ctx, instance, POSTERN_HOOK_CONNECT);
}

static postern_result
http_check_helo(postern_ctx *ctx, void *instance)
{
    return http_check_handle(ctx, instance, POSTERN_HOOK_HELO);
}

static postern_result
http_check_mail(postern_ctx *ctx, void *instance)
{
    return http_check_handle(ctx, instance, POSTERN_HOOK_MAIL);
}

static postern_result
http_check_rcpt(postern_ctx *ctx, void *instance)
{
    return http_check_handle(ctx, instance, POSTERN_HOOK_RCPT);
}

static postern_result
http_check_data(postern_ctx *ctx, void *instance)
{
    return http_check_handle(ctx, instance, POSTERN_HOOK_DATA);
}

static postern_result
http_check_message(postern_ctx *ctx, void *instance)
{
    return http_check_handle(ctx, instance, POSTERN_HOOK_MESSAGE);
}

/* --- configuration -------------------------------------------------------- */

static void
http_check_destroy(void *instance)
{
    struct http_check_module *mod = instance;

    if (mod == NULL)
        return;
    free(mod->url);
    free(mod->ca_file);
    free(mod->cert_file);
    free(mod->key_file);
    free(mod->authorization);
    free(mod);
}

/* An http:// or https:// URL with a host, of printable ASCII. */
static bool
http_check_url_valid(const char *s, size_t len)
{
    size_t scheme;

    if (strlen(s) != len || len > 2048)
        return false;
    if (strncasecmp(s, "http://", 7) == 0)
        scheme = 7;
    else if (strncasecmp(s, "https://", 8) == 0)
        scheme = 8;
    else
        return false;
    if (s[scheme] == '\0' || s[scheme] == '/' || s[scheme] == ':')
        return false;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= 32 || (unsigned char)*p >= 127)
            return false;
    return true;
}

/* A readable file named by a non-empty string. */
static int
http_check_config_file(postern_module_init *init, const char *key,
                       const json_t *value, char **out)
{
    const char *s = json_string_value(value);

    if (s == NULL || s[0] == '\0' || strlen(s) != json_string_length(value)) {
        postern_init_error(init, key, "expected the path of a PEM file");
        return -1;
    }
    if (access(s, R_OK) != 0) {
        postern_init_error(init, key, "expected a readable file, \"%s\" is not",
                           s);
        return -1;
    }
    if ((*out = strdup(s)) == NULL) {
        postern_init_error(init, key, "out of memory");
        return -1;
    }
    return 0;
}

static int
http_check_config_key(postern_module_init *init, struct http_check_module *mod,
                      const char *key, const json_t *value)
{
    if (strcmp(key, "url") == 0) {
        const char *s = json_string_value(value);
        if (s == NULL || !http_check_url_valid(s, json_string_length(value))) {
            postern_init_error(init, key,
                               "expected an http:// or https:// URL "
                               "(\"http://127.0.0.1:8080/policy\")");
            return -1;
        }
        if ((mod->url = strdup(s)) == NULL) {
            postern_init_error(init, key, "out of memory");
            return -1;
        }
    } else if (strcmp(key, "timeout") == 0) {
        double v = json_number_value(value);
        if (!json_is_number(value) || !(v > 0) || v > HTTP_CHECK_MAX_TIMEOUT) {
            postern_init_error(init, key,
                               "expected a number of seconds above 0, at "
                               "most %g",
                               HTTP_CHECK_MAX_TIMEOUT);
            return -1;
        }
        mod->timeout = v;
    } else if (strcmp(key, "ca_file") == 0) {
        return http_check_config_file(init, key, value, &mod->ca_file);
    } else if (strcmp(key, "cert_file") == 0) {
        return http_check_config_file(init, key, value, &mod->cert_file);
    } else if (strcmp(key, "key_file") == 0) {
        return http_check_config_file(init, key, value, &mod->key_file);
    } else if (strcmp(key, "token") == 0) {
        const char *s = json_string_value(value);
        bool ok = s != NULL && s[0] != '\0' && strlen(s) <= 4096;
        for (const char *p = s; ok && *p; p++)
            ok = (unsigned char)*p > 32 && (unsigned char)*p < 127;
        if (!ok) {
            postern_init_error(init, key,
                               "expected a bearer token: printable ASCII "
                               "without spaces, at most 4096 bytes");
            return -1;
        }
        if (asprintf(&mod->authorization, "Bearer %s", s) < 0) {
            mod->authorization = NULL;
            postern_init_error(init, key, "out of memory");
            return -1;
        }
    } else if (strcmp(key, "on_error") == 0) {
        const char *s = json_string_value(value);
        size_t i = 0;
        while (s != NULL && i < 3 && strcmp(s, http_check_on_error_names[i]))
            i++;
        if (s == NULL || i == 3) {
            postern_init_error(init, key,
                               "expected \"tempfail\", \"continue\" or "
                               "\"reject\"");
            return -1;
        }
        mod->on_error = (http_check_on_error)i;
    } else if (strcmp(key, "max_header_bytes") == 0) {
        json_int_t v = json_integer_value(value);
        if (!json_is_integer(value) || v < HTTP_CHECK_MIN_HEADER_BYTES ||
            v > HTTP_CHECK_MAX_HEADER_BYTES) {
            postern_init_error(
                init, key, "expected an integer between %d and %d",
                HTTP_CHECK_MIN_HEADER_BYTES, HTTP_CHECK_MAX_HEADER_BYTES);
            return -1;
        }
        mod->max_header_bytes = (size_t)v;
    } else {
        postern_init_error(init, key,
                           "unknown key (expected url, timeout, ca_file, "
                           "cert_file, key_file, token, on_error or "
                           "max_header_bytes)");
        return -1;
    }
    return 0;
}

static int
http_check_config(postern_module_init *init, struct http_check_module *mod)
{
    const json_t *config = postern_init_config(init);
    const char *key;
    json_t *value;

    if (!json_is_object(config)) {
        postern_init_error(init, "", "expected an object");
        return -1;
    }
    json_object_foreach((json_t *)config, key, value)
    {
        if (http_check_config_key(init, mod, key, value) != 0)
            return -1;
    }
    if (mod->url == NULL) {
        postern_init_error(init, "url",
                           "expected the policy service's URL "
                           "(\"http://127.0.0.1:8080/policy\")");
        return -1;
    }
    if ((mod->cert_file == NULL) != (mod->key_file == NULL)) {
        postern_init_error(init, mod->cert_file ? "key_file" : "cert_file",
                           "expected with %s (a client certificate needs "
                           "both)",
                           mod->cert_file ? "cert_file" : "key_file");
        return -1;
    }
    if (strncasecmp(mod->url, "https://", 8) != 0 &&
        (mod->ca_file || mod->cert_file)) {
        postern_init_error(init, mod->ca_file ? "ca_file" : "cert_file",
                           "expected only with an https:// url");
        return -1;
    }
    return 0;
}

static int
http_check_create(postern_module_init *init, void **instance)
{
    struct http_check_module *mod = calloc(1, sizeof *mod);

    if (mod == NULL) {
        postern_init_error(init, "", "out of memory");
        return -1;
    }
    mod->timeout = HTTP_CHECK_DEFAULT_TIMEOUT;
    mod->on_error = HTTP_CHECK_ERROR_TEMPFAIL;
    mod->max_header_bytes = HTTP_CHECK_DEFAULT_HEADER_BYTES;
    if (http_check_config(init, mod) != 0) {
        http_check_destroy(mod);
        return -1;
    }
    *instance = mod;
    return 0;
}

POSTERN_MODULE_DEFINE = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "http_check",
    .description = "policy decisions from an HTTP service",
    .create = http_check_create,
    .destroy = http_check_destroy,
    .handlers = {[POSTERN_HOOK_CONNECT] = http_check_connect,
                 [POSTERN_HOOK_HELO] = http_check_helo,
                 [POSTERN_HOOK_MAIL] = http_check_mail,
                 [POSTERN_HOOK_RCPT] = http_check_rcpt,
                 [POSTERN_HOOK_DATA] = http_check_data,
                 [POSTERN_HOOK_MESSAGE] = http_check_message},
};
