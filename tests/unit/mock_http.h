/*
 * mock_http.h - the fake HTTP service (postern/http.h, postern/curl.h)
 * of the module unit tests, beside mock_core.h.
 *
 * Nothing goes on the network: postern_http_send() queues the request
 * and the test answers it later (never inside the send), oldest first,
 * with mock_http_respond() or mock_http_fail(). postern_curl_perform()
 * queues the easy handle untouched; mock_curl_complete() hands it back
 * with a CURLcode. mock_reset() (mock_core.h) forgets everything.
 */
#ifndef POSTERN_MOCK_HTTP_H
#define POSTERN_MOCK_HTTP_H

#include <stddef.h>

#include <postern/curl.h>
#include <postern/http.h>

/* postern_http_send() / postern_curl_perform() return NULL while set. */
void mock_http_refuse(int refuse);

/* Calls waiting for an answer, sent since reset, cancelled by the module. */
size_t mock_http_pending(void);
size_t mock_http_sent_count(void);
size_t mock_http_cancel_count(void);

/* The i-th waiting request (oldest first): NULL when there is none. */
const char *mock_http_method(size_t i);
const char *mock_http_url(size_t i);
/* The value of its header name (case-insensitive), NULL when absent. */
const char *mock_http_header(size_t i, const char *name);
/* Its body: the memory body, or everything a body source gives (read
 * once, on the first call, as the core would while sending). NULL for
 * none; *failed (may be NULL) is 1 when the source's read() failed. */
const char *mock_http_body(size_t i, size_t *len, int *failed);
/* Its time limit (0: the core's default), its response limit, TLS. */
double mock_http_timeout(size_t i);
size_t mock_http_max_response(size_t i);
const char *mock_http_ca_file(size_t i);
int mock_http_insecure(size_t i);
/* 1 when it was sent with a hook context. */
int mock_http_tied(size_t i);

/* Answer the oldest call with POSTERN_HTTP_OK: code, headers as
 * "Name: value" lines joined by "\n" (NULL: none), body of len bytes.
 * 1, or 0 if none waits. */
int mock_http_respond(int code, const char *headers, const char *body,
                      size_t len);
/* Answer the oldest call with a failure status and error text. */
int mock_http_fail(postern_http_status status, const char *error);
/* What the core does when the context is orphaned: every waiting call
 * sent with a context gets POSTERN_HTTP_CANCELLED. The number told. */
size_t mock_http_cancel_all(void);

/* --- postern/curl.h --- */
size_t mock_curl_pending(void);
CURL *mock_curl_easy(size_t i);
/* Hand the oldest transfer back with result: 1, or 0 if none waits. */
int mock_curl_complete(CURLcode result);

/* For mock_core.c: free everything. */
void mock_http_clear(void);

#endif
