/*
 * http_check.h - the parts of the http_check module shared by its files:
 * the request (what the policy service is told about the stage) and the
 * answer (what it decided), each in its own file so they can be read and
 * tested on their own.
 */
#ifndef HTTP_CHECK_H
#define HTTP_CHECK_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>
#include <postern/postern.h>

/* Longest reply text the module passes on; postern_reply() cuts there. */
#define HTTP_CHECK_MAX_TEXT 400
/* Headers one answer may ask to add. */
#define HTTP_CHECK_MAX_HEADERS 16
/* Longest header name and value accepted from an answer (a header line
 * should stay within 998 bytes, RFC 5322 2.1.1). */
#define HTTP_CHECK_MAX_HEADER_NAME 76
#define HTTP_CHECK_MAX_HEADER_VALUE 900

/* --- the request (http_check_request.c) --------------------------------- */

/*
 * The JSON description of the stage the handler is called at: stage,
 * session, transaction, and the recipient (rcpt) or the size and header
 * section (message, the headers read up to max_header_bytes). NULL when
 * out of memory.
 */
json_t *http_check_describe(postern_ctx *ctx, postern_hook hook,
                            size_t max_header_bytes);

/* --- text and the header section (http_check_headers.c) ------------------ */

/* A JSON string of s with every byte sequence that is not UTF-8 replaced
 * by U+FFFD (jansson takes only UTF-8); json null for NULL. */
json_t *http_check_text(const char *s, size_t len);

/*
 * Parse a header section: the unfolded fields of data[0..len), as an array
 * of {"name", "value"}, up to the empty line that ends the section or the
 * first line that is not a field. eof: the message ends at len (else it
 * goes on, and a field cut at len is left out). *complete tells whether
 * the section's end was seen. NULL when out of memory.
 */
json_t *http_check_parse_headers(const char *data, size_t len, bool eof,
                                 bool *complete);

/* --- the answer (http_check_answer.c) ------------------------------------- */

struct http_check_header {
    char *name, *value;
};

struct http_check_answer {
    postern_result result; /* CONTINUE ACCEPT REJECT TEMPFAIL DISCONNECT */
    const char *action;    /* its name, for the log */
    int code;              /* 0: the stage default */
    char enhanced[16];     /* "": the stage default */
    char text[HTTP_CHECK_MAX_TEXT + 1]; /* "": the stage default */
    struct http_check_header headers[HTTP_CHECK_MAX_HEADERS];
    size_t n_headers;
};

/*
 * Read the service's answer body into *answer. 0, or -1 with why in
 * error (size bytes): not JSON, an unknown key or action, a code or
 * enhanced code of the wrong class for the action, a bad header, or
 * headers at a stage that has no transaction to add them to.
 */
int http_check_answer_parse(const char *body, size_t len, postern_hook hook,
                            struct http_check_answer *answer, char *error,
                            size_t size);

/* Free what http_check_answer_parse() allocated (the headers). */
void http_check_answer_clear(struct http_check_answer *answer);

#endif
