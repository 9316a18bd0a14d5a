/*
 * notify.c - sd_notify(3) messages for the supervisor (see notify.h).
 *
 * libsystemd does the socket work (abstract and path sockets, the
 * credentials); this file only words the messages. Status text is
 * cut at a line end: one STATUS= line must stay one line.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "notify.h"

/* "STATUS=<fmt expanded>" into buf, newlines replaced by spaces. */
static void
status_line(char *buf, size_t len, const char *fmt, va_list ap)
{
    int n = snprintf(buf, len, "STATUS=");
    vsnprintf(buf + n, len - (size_t)n, fmt, ap);
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
}

static void
send_with_status(const char *head, const char *fmt, va_list ap)
{
    char status[512];

    status_line(status, sizeof(status), fmt, ap);
    sd_notifyf(0, "%s%s", head, status);
}

void
notify_ready(const char *fmt, ...)
{
    char head[64];
    va_list ap;

    /* MAINPID: the manager learns the pid even when postern was started
     * through a wrapper (valgrind, a shell) that is not the process it
     * forked. */
    snprintf(head, sizeof(head), "READY=1\nMAINPID=%ld\n", (long)getpid());
    va_start(ap, fmt);
    send_with_status(head, fmt, ap);
    va_end(ap);
}

void
notify_reloading(void)
{
    struct timespec ts;

    /* systemd 253 and later want the time the reload began (Type=
     * notify-reload); older ones ignore the field. */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    sd_notifyf(0,
               "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading the "
               "configuration",
               (unsigned long long)ts.tv_sec * 1000000ull +
                   (unsigned long long)ts.tv_nsec / 1000ull);
}

void
notify_stopping(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    send_with_status("STOPPING=1\n", fmt, ap);
    va_end(ap);
}

void
notify_status(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    send_with_status("", fmt, ap);
    va_end(ap);
}

uint64_t
notify_watchdog_interval(void)
{
    uint64_t usec = 0;

    /* > 0 only when WATCHDOG_USEC is set and WATCHDOG_PID, if set, is
     * this process: a worker never pings in the supervisor's name. */
    if (sd_watchdog_enabled(0, &usec) <= 0)
        return 0;
    return usec / 2 ? usec / 2 : 1;
}

void
notify_watchdog(void)
{
    sd_notify(0, "WATCHDOG=1");
}
