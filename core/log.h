/*
 * log.h - the daemon's log: one line per event on stderr,
 *   2026-11-22T10:00:00.123Z info 0123456789abcdef connect client=192.0.2.1
 * time, level, session id ("-" outside a session), event word, then
 * key=value fields. Values that may hold spaces are quoted by the caller.
 */
#ifndef POSTERN_LOG_INTERNAL_H
#define POSTERN_LOG_INTERNAL_H

#include <stdbool.h>

typedef enum log_level {
    LOG_LEVEL_ERROR,
    LOG_LEVEL_WARNING,
    LOG_LEVEL_INFO,
    LOG_LEVEL_DEBUG
} log_level;

void log_set_level(log_level level);
bool log_enabled(log_level level);

/* sid may be NULL. fmt continues the line after the event word. */
void log_event(log_level level, const char *sid, const char *event,
               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
