/*
 * postern/log.h - logging from modules.
 *
 * One line per call on the daemon's log, prefixed with the session id when
 * ctx is given and with the module instance name. Write key=value fields;
 * never log passwords or AUTH payloads. Every value that comes from a
 * client, a file or a config (an address, a user name, a path, an error
 * text) goes through postern_log_value(), so that it cannot end its field
 * and forge another:
 *
 *     postern_log(ctx, POSTERN_LOG_INFO, "user=%s result=rejected",
 *                 postern_log_value(user));
 */
#ifndef POSTERN_LOG_H
#define POSTERN_LOG_H

#include <stddef.h>

#include "hook.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum postern_log_level {
    POSTERN_LOG_ERROR,
    POSTERN_LOG_WARNING,
    POSTERN_LOG_INFO,
    POSTERN_LOG_DEBUG
} postern_log_level;

/*
 * ctx may be NULL (outside a hook call): the line then names the instance
 * the core is running code for (create(), a timer, a pool job, ...).
 *
 * Safe on any thread (pool threads, a module's own threads): a line is
 * written whole with one write(2), never interleaved with another. With a
 * ctx off the loop thread, only while that call is pending: after the
 * handler returned POSTERN_PENDING and before its resume was handed to
 * the loop (the pool job's done, or postern_loop_call()); the line keeps
 * the session id, also when the client has gone (orphaned context).
 */
void postern_log(const postern_ctx *ctx, postern_log_level level,
                 const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * s rendered as one log field value: between double quotes, with the
 * characters " and \ written as \" and \\, and control bytes, DEL and
 * non-ASCII bytes as \xNN (so the line stays ASCII and one line). A value
 * that would take more than 511 bytes rendered is cut and ends in ...
 * before the closing quote. NULL gives - (no quotes).
 *
 * The result is in a per-thread ring of 8 buffers: it stays valid until
 * the same thread made 8 more calls, so up to 8 values may be rendered for
 * one postern_log() call. Safe on any thread, pool threads included.
 */
const char *postern_log_value(const char *s);
/* The same for len bytes of s, which need not be NUL-terminated. */
const char *postern_log_value_n(const char *s, size_t len);

#ifdef __cplusplus
}
#endif
#endif
