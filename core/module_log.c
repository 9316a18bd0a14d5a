/*
 * module_log.c - postern_log(), the modules' way into the daemon's log:
 * the line gets the session id and the instance name from the hook
 * context. Kept apart from log.c so the log stays below the hook engine.
 */
#include <stdarg.h>
#include <stdio.h>

#include "postern/log.h"

#include "hook.h"
#include "log.h"

/* Modules log through here; the session id and instance come from ctx. */

void
postern_log(const postern_ctx *ctx, postern_log_level level, const char *fmt,
            ...)
{
    char prefix[160];
    char msg[1536];
    va_list ap;

    if (level > POSTERN_LOG_DEBUG)
        level = POSTERN_LOG_DEBUG;
    if (!log_enabled((log_level)level))
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    const char *instance = ctx ? hook_ctx_log_instance(ctx) : NULL;
    snprintf(prefix, sizeof(prefix), "module=%s", postern_log_value(instance));
    log_event((log_level)level, ctx ? hook_ctx_log_sid(ctx) : NULL, "module",
              "%s %s", prefix, msg);
}
