/*
 * notify.h - telling systemd (or whatever set NOTIFY_SOCKET) what the
 * supervisor is doing: sd_notify(3) READY, RELOADING, STOPPING, STATUS
 * and WATCHDOG messages. Without NOTIFY_SOCKET every call does nothing,
 * so postern runs the same from a terminal, a test or another manager.
 *
 * Only the supervisor calls these: it is the service's main process
 * (MAINPID), and NotifyAccess=main is all the unit grants.
 */
#ifndef POSTERN_NOTIFY_H
#define POSTERN_NOTIFY_H

#include <stdint.h>

/* The listeners are bound and every worker serves. */
void notify_ready(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A SIGHUP reload begins; notify_ready() again when it finished or
 * failed (the old workers serve either way). */
void notify_reloading(void);

/* Draining after SIGTERM or SIGINT. */
void notify_stopping(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* A STATUS= line alone. */
void notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* How often to send WATCHDOG=1, in microseconds: half of WATCHDOG_USEC
 * when the manager wants pings from this process, else 0. */
uint64_t notify_watchdog_interval(void);

void notify_watchdog(void);

#endif
