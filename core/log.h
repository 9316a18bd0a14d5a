/*
 * log.h - the daemon's log: one line per event on stderr,
 *   2026-11-22T10:00:00.123Z info 0123456789abcdef connect client=192.0.2.1
 * time, level, session id ("-" outside a session), event word, then
 * key=value fields (a worker process adds worker=N last). A value the core made
 * itself (a number, a keyword, an address from inet_ntop, a session id) is
 * written bare; every other value (from a client, a file, the config, a
 * library's error text) goes through postern_log_value(), which quotes and
 * escapes it so that it cannot end its field and forge another.
 */
#ifndef POSTERN_LOG_INTERNAL_H
#define POSTERN_LOG_INTERNAL_H

#include <stdbool.h>

#include "postern/log.h"

typedef enum log_level {
    LOG_LEVEL_ERROR,
    LOG_LEVEL_WARNING,
    LOG_LEVEL_INFO,
    LOG_LEVEL_DEBUG
} log_level;

void log_set_level(log_level level);
/* In a worker process: every line ends with " worker=slot". */
void log_set_worker(unsigned slot);
bool log_enabled(log_level level);

/* sid may be NULL. fmt continues the line after the event word. */
void log_event(log_level level, const char *sid, const char *event,
               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
