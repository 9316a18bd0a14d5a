/*
 * log.c - formats and writes log lines (see log.h for the shape). Lines
 * are built whole in a stack buffer and written with one write(2), or sent
 * as one datagram, so lines from different threads never interleave.
 *
 * syslog: the datagram is what syslog(3) sends, "<PRI>Mmm dd hh:mm:ss
 * postern[PID]: line", to an unconnected AF_UNIX datagram socket with
 * sendto(), so a restarted syslog daemon needs no reconnect and the path
 * can be other than /dev/log (glibc's syslog(3) cannot be pointed
 * elsewhere). A line the daemon does not take goes to stderr instead.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "log_json.h"

#define LINE_MAX_TEXT 2048
#define LINE_MAX_JSON 8192 /* escaping may grow the text line */

static log_level log_threshold = LOG_LEVEL_INFO;
static char log_worker_field[24]; /* " worker=N" in a worker process */
static int log_worker_slot = -1;

static struct {
    log_format format;
    log_target target;
    int facility; /* syslog's number, shifted (LOG_MAIL is 2 << 3) */
    int fd;       /* the syslog socket, -1 when none */
    struct sockaddr_un addr;
    socklen_t addr_len;
} out = {.fd = -1};

static const char *const log_level_names[] = {"error", "warning", "info",
                                              "debug"};

/* syslog severities: err, warning, info, debug (RFC 5424 6.2.1) */
static const int log_severity[] = {3, 4, 6, 7};

/* In log_facility order: mail, daemon, user, local0..local7. */
static const int log_facility_code[] = {2,  3,  1,  16, 17, 18,
                                        19, 20, 21, 22, 23};

void
log_set_level(log_level level)
{
    log_threshold = level;
}

void
log_set_worker(unsigned slot)
{
    snprintf(log_worker_field, sizeof(log_worker_field), " worker=%u", slot);
    log_worker_slot = (int)slot;
}

bool
log_enabled(log_level level)
{
    return level <= log_threshold;
}

int
log_set_output(const struct log_output *o, char *err, size_t errlen)
{
    int fd = -1;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    const char *path =
        o->syslog_socket ? o->syslog_socket : LOG_SYSLOG_SOCKET_DEFAULT;

    if (o->target == LOG_TARGET_SYSLOG) {
        if (strlen(path) >= sizeof(addr.sun_path)) {
            snprintf(err, errlen, "syslog socket path too long: %s", path);
            return -1;
        }
        memcpy(addr.sun_path, path, strlen(path) + 1);
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            snprintf(err, errlen, "syslog socket: %s", strerror(errno));
            return -1;
        }
    }
    if (out.fd >= 0)
        close(out.fd);
    out.fd = fd;
    out.addr = addr;
    out.addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
                               strlen(addr.sun_path) + 1);
    out.format = o->format;
    out.target = o->target;
    out.facility =
        log_facility_code[(unsigned)o->facility < sizeof(log_facility_code) /
                                                      sizeof(*log_facility_code)
                              ? o->facility
                              : 0]
        << 3;
    return 0;
}

static void
write_stderr(const char *line, size_t n)
{
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

/* line: n bytes ending in '\n'. */
static void
log_emit(log_level level, char *line, size_t n)
{
    if (out.target != LOG_TARGET_SYSLOG || out.fd < 0) {
        write_stderr(line, n);
        return;
    }
    char dgram[LINE_MAX_JSON + 64];
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    int k = snprintf(dgram, sizeof(dgram), "<%d>",
                     out.facility | log_severity[level]);
    k += (int)strftime(dgram + k, sizeof(dgram) - (size_t)k, "%b %e %T", &tm);
    k += snprintf(dgram + k, sizeof(dgram) - (size_t)k,
                  " postern[%ld]: ", (long)getpid());
    size_t body = n - 1; /* syslog lines carry no newline */
    if (body > sizeof(dgram) - (size_t)k)
        body = sizeof(dgram) - (size_t)k;
    memcpy(dgram + k, line, body);
    if (sendto(out.fd, dgram, (size_t)k + body, MSG_NOSIGNAL,
               (const struct sockaddr *)&out.addr, out.addr_len) < 0)
        write_stderr(line, n); /* no syslog daemon: the line is not lost */
}

/* "2026-11-22T10:00:00.123Z" (len >= 25). The date and time to the second
 * are formatted once per second and thread: most lines share them. */
static size_t
log_time(char *buf, size_t len)
{
    static _Thread_local time_t cached_sec = -1;
    static _Thread_local char cached[24];
    static _Thread_local size_t cached_len;
    struct timeval tv;

    gettimeofday(&tv, NULL);
    if (tv.tv_sec != cached_sec) {
        struct tm tm;
        gmtime_r(&tv.tv_sec, &tm);
        cached_len = strftime(cached, sizeof(cached), "%Y-%m-%dT%H:%M:%S", &tm);
        cached_sec = tv.tv_sec;
    }
    if (len < cached_len + 6)
        return 0;
    unsigned ms = (unsigned)(tv.tv_usec / 1000);
    memcpy(buf, cached, cached_len);
    char *p = buf + cached_len;
    *p++ = '.';
    *p++ = (char)('0' + ms / 100);
    *p++ = (char)('0' + ms / 10 % 10);
    *p++ = (char)('0' + ms % 10);
    *p++ = 'Z';
    *p = '\0';
    return cached_len + 5;
}

/* Append s to line[n..cap), as much as fits; the new length. */
static size_t
log_append(char *line, size_t n, size_t cap, const char *s)
{
    size_t k = strlen(s);

    if (k > cap - n)
        k = cap - n;
    memcpy(line + n, s, k);
    return n + k;
}

static void
log_write_text(log_level level, const char *sid, const char *event,
               const char *fmt, va_list ap)
{
    char line[LINE_MAX_TEXT];
    size_t n = 0;

    if (out.target != LOG_TARGET_SYSLOG) {
        n = log_time(line, sizeof(line));
        line[n++] = ' ';
    }
    n = log_append(line, n, sizeof(line) - 1, log_level_names[level]);
    n = log_append(line, n, sizeof(line) - 1, " ");
    n = log_append(line, n, sizeof(line) - 1, sid ? sid : "-");
    n = log_append(line, n, sizeof(line) - 1, " ");
    n = log_append(line, n, sizeof(line) - 1, event);
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
    log_emit(level, line, n);
}

static void
log_write_json(log_level level, const char *sid, const char *event,
               const char *fmt, va_list ap)
{
    char fields[LINE_MAX_TEXT], stamp[40], line[LINE_MAX_JSON];
    int k = fmt && *fmt ? vsnprintf(fields, sizeof(fields), fmt, ap) : 0;
    if (k < 0)
        k = 0;
    if ((size_t)k >= sizeof(fields))
        k = (int)sizeof(fields) - 1;
    if (out.target != LOG_TARGET_SYSLOG)
        log_time(stamp, sizeof(stamp));
    struct log_json_line l = {
        .time = out.target != LOG_TARGET_SYSLOG ? stamp : NULL,
        .level = log_level_names[level],
        .sid = sid,
        .event = event,
        .fields = fields,
        .fields_len = (size_t)k,
        .worker = log_worker_slot,
    };
    size_t n = log_json_format(line, sizeof(line) - 1, &l);
    line[n++] = '\n';
    log_emit(level, line, n);
}

void
log_event(log_level level, const char *sid, const char *event, const char *fmt,
          ...)
{
    va_list ap;

    if (!log_enabled(level))
        return;
    va_start(ap, fmt);
    if (out.format == LOG_FORMAT_JSON)
        log_write_json(level, sid, event, fmt, ap);
    else
        log_write_text(level, sid, event, fmt, ap);
    va_end(ap);
}
