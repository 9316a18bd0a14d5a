/*
 * log.c - formats and writes log lines (see log.h for the shape). Lines
 * are built whole in a stack buffer and written with one write(2) so lines
 * from different threads never interleave.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "postern/log.h"

#include "hook.h"
#include "log.h"

static log_level log_threshold = LOG_LEVEL_INFO;

static const char *const log_level_names[] = {"error", "warning", "info",
                                              "debug"};

void
log_set_level(log_level level)
{
    log_threshold = level;
}

bool
log_enabled(log_level level)
{
    return level <= log_threshold;
}

static void
log_write_line(log_level level, const char *sid, const char *event,
               const char *fmt, va_list ap)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    size_t n;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03dZ %s %s %s",
                          (int)(tv.tv_usec / 1000), log_level_names[level],
                          sid ? sid : "-", event);
    if (fmt && *fmt && n < sizeof(line) - 1) {
        line[n++] = ' ';
        int k = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        if (k > 0)
            n += (size_t)k;
    }
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2; /* truncated: keep the newline */
    /* Control characters from untrusted input never reach the terminal. */
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
            line[i] = '?';
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

void
log_event(log_level level, const char *sid, const char *event, const char *fmt,
          ...)
{
    va_list ap;

    if (!log_enabled(level))
        return;
    va_start(ap, fmt);
    log_write_line(level, sid, event, fmt, ap);
    va_end(ap);
}

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
