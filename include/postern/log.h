/*
 * postern/log.h - logging from modules.
 *
 * One line per call on the daemon's log, prefixed with the session id when
 * ctx is given and with the module instance name. Write key=value fields;
 * never log passwords or AUTH payloads.
 */
#ifndef POSTERN_LOG_H
#define POSTERN_LOG_H

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

/* ctx may be NULL (outside a hook call). */
void postern_log(const postern_ctx *ctx, postern_log_level level,
                 const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#ifdef __cplusplus
}
#endif
#endif
