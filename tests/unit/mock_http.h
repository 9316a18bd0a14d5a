/*
 * mock_http.h - the fake HTTP service (include/postern/http.h) behind the
 * module unit tests.
 *
 * Requests are kept as sent and wait, in order, until the test answers
 * them with mock_http_answer(): the callback never runs inside
 * postern_http_send(), as with the core.
 */
#ifndef POSTERN_MOCK_HTTP_H
#define POSTERN_MOCK_HTTP_H

#include <stddef.h>

#include <postern/postern.h>

/* Free every request still waiting (their callbacks never run) and forget
 * what was recorded. */
void mock_http_clear(void);
/* postern_http_send() returns NULL while refuse is set. */
void mock_http_refuse(int refuse);
/* Requests sent and neither answered nor cancelled. */
size_t mock_http_pending(void);
size_t mock_http_cancel_count(void);

/* The i-th waiting request, oldest first: its method, URL, body (NUL
 * terminated), the value of a header (NULL when absent), its timeout and
 * whether TLS settings were given with a CA file. NULL/0 past the end. */
const char *mock_http_method(size_t i);
const char *mock_http_url(size_t i);
const char *mock_http_body(size_t i);
const char *mock_http_header(size_t i, const char *name);
double mock_http_timeout(size_t i);
const char *mock_http_ca_file(size_t i);

/* Answer the oldest waiting request: status, and for POSTERN_HTTP_OK the
 * response code and body (NULL: empty). 1, or 0 if none waits. */
int mock_http_answer(postern_http_status status, int code, const char *body);

#endif
