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

#include "log.h"

static log_level log_threshold = LOG_LEVEL_INFO;
static char log_worker_field[24]; /* " worker=N" in a worker process */

static const char *const log_level_names[] = {"error", "warning", "info",
                                              "debug"};

void
log_set_level(log_level level)
{
    log_threshold = level;
}

void
log_set_worker(unsigned slot)
{
    snprintf(log_worker_field, sizeof(log_worker_field), " worker=%u", slot);
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
    size_t tag = strlen(log_worker_field);
    if (n > sizeof(line) - 2 - tag)
        n = sizeof(line) - 2 - tag; /* truncated: keep the tag, newline */
    memcpy(line + n, log_worker_field, tag);
    n += tag;
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
