/*
 * log_json.h - a log line as one JSON object (log_format "json"):
 *   {"time":"...","level":"info","session":"...","event":"connect",
 *    "client":"192.0.2.1","port":40000,"worker":0}
 * The fields text is the key=value part of the text line (log.h); each
 * field becomes a member: a quoted value (postern_log_value()) a string
 * with its \" \\ \xNN escapes undone, a bare value a number when it is a
 * JSON number of at most 15 digits, null when it is "-", else a string.
 * Words that are not key=value (free text from a module) are gathered,
 * in order, into "msg". A key seen before gets a suffix: "event_2".
 *
 * Whatever the bytes, the output is valid JSON on one line: control
 * characters are escaped, invalid UTF-8 becomes U+FFFD, and a line that
 * does not fit is ended early with "truncated":true.
 */
#ifndef POSTERN_LOG_JSON_H
#define POSTERN_LOG_JSON_H

#include <stdbool.h>
#include <stddef.h>

struct log_json_line {
    const char *time;   /* NULL: no "time" member (syslog) */
    const char *level;  /* "info" */
    const char *sid;    /* NULL: no "session" member */
    const char *event;  /* "connect" */
    const char *fields; /* "client=192.0.2.1 port=40000", may be NULL */
    size_t fields_len;
    int worker; /* < 0: no "worker" member */
};

/* The line without its newline, NUL-terminated in out (cap >= 256).
 * Returns its length. */
size_t log_json_format(char *out, size_t cap, const struct log_json_line *l);

/* len bytes of s as a JSON string with its quotes into out; NUL-terminated.
 * Returns the length, or 0 when it does not fit in cap (out is then "").
 * decode: undo the \" \\ \xNN escapes of postern_log_value() first. */
size_t log_json_string(char *out, size_t cap, const char *s, size_t len,
                       bool decode);

#endif
