/*
 * log.h - the daemon's log: one line per event on stderr,
 *   2026-11-22T10:00:00.123Z info 0123456789abcdef connect client=192.0.2.1
 * time, level, session id ("-" outside a session), event word, then
 * key=value fields (a worker process adds worker=N last). A value the core made
 * itself (a number, a keyword, an address from inet_ntop, a session id) is
 * written bare; every other value (from a client, a file, the config, a
 * library's error text) goes through postern_log_value(), which quotes and
 * escapes it so that it cannot end its field and forge another.
 *
 * log_format "json" writes the same line as one JSON object (log_json.h);
 * log_target "syslog" sends each line, without the time (syslog stamps
 * it), as one datagram to the syslog socket.
 */
#ifndef POSTERN_LOG_INTERNAL_H
#define POSTERN_LOG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "postern/log.h"

typedef enum log_level {
    LOG_LEVEL_ERROR,
    LOG_LEVEL_WARNING,
    LOG_LEVEL_INFO,
    LOG_LEVEL_DEBUG
} log_level;

typedef enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON } log_format;
typedef enum log_target { LOG_TARGET_STDERR, LOG_TARGET_SYSLOG } log_target;

/* The syslog facilities log_facility may name, in config.c's order. */
typedef enum log_facility {
    LOG_FACILITY_MAIL,
    LOG_FACILITY_DAEMON,
    LOG_FACILITY_USER,
    LOG_FACILITY_LOCAL0,
    LOG_FACILITY_LOCAL1,
    LOG_FACILITY_LOCAL2,
    LOG_FACILITY_LOCAL3,
    LOG_FACILITY_LOCAL4,
    LOG_FACILITY_LOCAL5,
    LOG_FACILITY_LOCAL6,
    LOG_FACILITY_LOCAL7
} log_facility;

#define LOG_SYSLOG_SOCKET_DEFAULT "/dev/log"

struct log_output {
    log_format format;
    log_target target;
    log_facility facility;
    const char *syslog_socket; /* NULL: LOG_SYSLOG_SOCKET_DEFAULT */
};

void log_set_level(log_level level);

/*
 * Where and how lines go from now on (start-up, reload). Before any
 * thread runs: the settings are read without a lock. The syslog socket
 * is opened here and inherited by forked workers. 0, or -1 with err (the
 * old output stays).
 */
int log_set_output(const struct log_output *out, char *err, size_t errlen);
/* In a worker process: every line ends with " worker=slot". */
void log_set_worker(unsigned slot);
bool log_enabled(log_level level);

/* sid may be NULL. fmt continues the line after the event word. */
void log_event(log_level level, const char *sid, const char *event,
               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
