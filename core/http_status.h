/*
 * http_status.h - the pure parts of core/http.c: what a libcurl outcome
 * means to a module, and the response header lines.
 */
#ifndef POSTERN_HTTP_STATUS_H
#define POSTERN_HTTP_STATUS_H

#include <stdbool.h>
#include <stddef.h>

#include <curl/curl.h>

#include "postern/http.h"

/* The status of a call libcurl ended with result. too_large: the write
 * callback refused a body over the limit; body_failed: the body source's
 * read() failed. */
postern_http_status http_status_from_curl(CURLcode result, bool too_large,
                                          bool body_failed);

/* "ok", "timeout", ... for logs. */
const char *http_status_name(postern_http_status status);

/* CURLINFO_HTTP_VERSION's value as 10, 11, 20, 30; 0 unknown. */
int http_version_number(long curl_version);

/* One header line as libcurl hands it (CRLF included, not NUL-ended):
 * 1 when it starts a response ("HTTP/1.1 200 OK", "HTTP/2 200"), 2 for a
 * "name: value" field (name and value then point into line, value with
 * its surrounding blanks gone), 0 for anything else (the blank line, a
 * continuation, garbage). */
int http_header_line(const char *line, size_t len, const char **name,
                     size_t *name_len, const char **value, size_t *value_len);

#endif
