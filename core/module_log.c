/*
 * module_log.c - postern_log(), the modules' way into the daemon's log:
 * the line gets the session id and the instance name from the hook
 * context, or, without one, the instance from the module scope. Kept apart
 * from log.c so the log stays below the hook engine. Safe on any thread:
 * stack buffers, one write(2) per line (log.c), the per-thread rings of
 * postern_log_value() and a locked look-up of the context.
 */
#include <stdarg.h>
#include <stdio.h>

#include "postern/log.h"

#include "hook.h"
#include "log.h"
#include "module_scope.h"

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
    const char *sid = NULL, *instance = NULL;
    if (ctx)
        hook_ctx_log_names(ctx, &sid, &instance);
    /* No context (create(), a timer, a pool job): the instance the core
     * is running code for. */
    if (!instance)
        instance = module_scope_name();
    snprintf(prefix, sizeof(prefix), "module=%s", postern_log_value(instance));
    log_event((log_level)level, sid, "module", "%s %s", prefix, msg);
}
