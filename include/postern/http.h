/*
 * postern/http.h - asynchronous HTTP requests for modules. Since ABI 1.2.
 *
 * The core runs requests with libcurl's multi-socket interface on its own
 * loop: no call here blocks, no thread runs per request. Connections are
 * kept alive and reused for later requests to the same server; HTTP/2 is
 * used when a TLS server offers it (ALPN), HTTP/1.1 otherwise. At most
 * http.max_in_flight requests (main config) run at once; the others wait
 * their turn in the order they were sent. TLS servers are verified
 * against the system CA store, or the CA file of the main config or of
 * the request.
 *
 * Everything here is called on the loop thread. A request's callback runs
 * exactly once, later (never from inside postern_http_send()), unless the
 * module cancelled the call first; then it never runs.
 *
 * A request sent with a hook context belongs to that call: when the client
 * goes away and the context is orphaned, the request is aborted and its
 * callback runs soon with POSTERN_HTTP_CANCELLED, so the module frees its
 * state and calls postern_resume() as always. Once that call is over (the
 * handler returned a decision, or resumed), a request still running just
 * goes on. When postern stops, every request still queued or running
 * completes with POSTERN_HTTP_CANCELLED before the modules are destroyed.
 */
#ifndef POSTERN_HTTP_H
#define POSTERN_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "hook.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How a call ended. Only POSTERN_HTTP_OK comes with a response; any
 * status code counts as a response (a 500 is OK here). */
typedef enum postern_http_status {
    POSTERN_HTTP_OK,        /* a response arrived: see its code */
    POSTERN_HTTP_TIMEOUT,   /* the request's time ran out (queue included) */
    POSTERN_HTTP_CONNECT,   /* name not resolved, or connection refused */
    POSTERN_HTTP_TLS,       /* handshake or certificate verification failed */
    POSTERN_HTTP_TOO_LARGE, /* the response body was over its limit */
    POSTERN_HTTP_BODY,      /* the request body's source failed */
    POSTERN_HTTP_ERROR,     /* anything else: bad URL, protocol, memory */
    POSTERN_HTTP_CANCELLED  /* the hook context was orphaned, or shutdown */
} postern_http_status;

/* A request being built: owned by the module until postern_http_send(). */
typedef struct postern_http_request postern_http_request;

/* method: "GET", "POST", "PUT", ...; url: http:// or https://. NULL on
 * bad input or out of memory. */
postern_http_request *postern_http_request_new(const char *method,
                                               const char *url);

/* Add "name: value" to the request headers. 0, or -1 on bad input
 * (CR or LF anywhere, an empty name). */
int postern_http_request_header(postern_http_request *req, const char *name,
                                const char *value);

/* A body held in memory; the bytes are copied. 0 or -1. */
int postern_http_request_body(postern_http_request *req, const void *data,
                              size_t len);

/*
 * A body produced while it is sent, so a large one never sits in memory.
 * read() fills buf with up to len bytes and returns how many, 0 at the
 * end, -1 on failure (the call ends with POSTERN_HTTP_BODY). rewind()
 * goes back to the first byte when a request must be sent again (a
 * kept-alive connection the server had closed); 0, or -1 (NULL: cannot).
 * size is the total in bytes (sent as Content-Length), or -1 when unknown
 * (then chunked). Both functions run on the loop thread, only between
 * postern_http_send() and the callback or postern_http_cancel(); arg
 * stays the module's, to free after either.
 */
typedef struct postern_http_body_source {
    int64_t size;
    ssize_t (*read)(void *arg, char *buf, size_t len);
    int (*rewind)(void *arg);
    void *arg;
} postern_http_body_source;
int postern_http_request_body_source(postern_http_request *req,
                                     const postern_http_body_source *src);

/* Whole-call time limit in seconds, queue wait included; 0 (the
 * default) takes http.timeout from the main config. */
void postern_http_request_timeout(postern_http_request *req, double seconds);

/* Largest response body kept, in bytes (default 64 KiB); a longer one
 * ends the call with POSTERN_HTTP_TOO_LARGE. */
void postern_http_request_max_response(postern_http_request *req, size_t bytes);

/* TLS for an https:// URL. Every field may be NULL or 0: ca_file then
 * comes from the main config (or the system store), no client
 * certificate is shown, and the server is verified (name and chain).
 * The strings are copied. 0, or -1 on bad input. */
typedef struct postern_http_tls {
    const char *ca_file;   /* PEM CA bundle that verifies the server */
    const char *cert_file; /* PEM client certificate, with key_file */
    const char *key_file;
    int insecure; /* 1: do not verify the server (tests, never default) */
} postern_http_tls;
int postern_http_request_tls(postern_http_request *req,
                             const postern_http_tls *tls);

/* Free a request that was never sent. */
void postern_http_request_free(postern_http_request *req);

/* The answer: valid only during the callback. */
typedef struct postern_http_response postern_http_response;

/* Status code (200, 503, ...); 0 without a response. */
int postern_http_response_code(const postern_http_response *resp);
/* 11 for HTTP/1.1, 20 for HTTP/2; 0 without a response. */
int postern_http_response_version(const postern_http_response *resp);
/* Value of the last header named name (case-insensitive), without
 * surrounding blanks; NULL when absent. */
const char *postern_http_response_header(const postern_http_response *resp,
                                         const char *name);
/* The body, NUL-terminated (it may hold NUL bytes: use len). */
const char *postern_http_response_body(const postern_http_response *resp,
                                       size_t *len);
/* Why the call failed, for logs ("Connection refused"); "" when OK. */
const char *postern_http_response_error(const postern_http_response *resp);

typedef void (*postern_http_cb)(void *arg, postern_http_status status,
                                const postern_http_response *resp);

typedef struct postern_http_call postern_http_call;

/*
 * Send req (postern_http_send always takes it, also when it fails). ctx
 * ties the call to a hook call (see above) and may be NULL. Returns a
 * handle for postern_http_cancel(), or NULL if the call could not start
 * (out of memory); then cb never runs.
 */
postern_http_call *postern_http_send(postern_ctx *ctx,
                                     postern_http_request *req,
                                     postern_http_cb cb, void *arg);

/* Stop caring: cb will not run, the body source is not read again. Only
 * before cb ran. */
void postern_http_cancel(postern_http_call *call);

#ifdef __cplusplus
}
#endif
#endif
