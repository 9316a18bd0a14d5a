/*
 * metrics_server.h - the process that serves /metrics (the main config's
 * "metrics"), forked by the supervisor like a worker.
 *
 * Why a process of its own: the supervisor forks workers at start, on
 * every restart and on every reload, so it must never run a thread, and
 * libmicrohttpd serves best from its own thread; the supervisor also keeps
 * the rights it started with, and an HTTP server should not. The metrics
 * process drops to "user" like a worker, holds no client listener, loads
 * no module, and only reads the shared counters (metrics.h). When it dies
 * the supervisor starts it again; the counters live in the supervisor's
 * mapping, so nothing is lost.
 */
#ifndef POSTERN_METRICS_SERVER_H
#define POSTERN_METRICS_SERVER_H

#include <sys/types.h>

#include "config.h"

/* In the supervisor: bind cfg->metrics (which must be set). fd, or -1
 * with one line in err. */
int metrics_socket_open(const struct config *cfg, char *err, size_t errlen);

/* In the child right after fork (every signal blocked, the supervisor's
 * other descriptors closed): become cfg->user and serve on fd until
 * SIGTERM, SIGQUIT or SIGUSR1. Never returns. */
_Noreturn void metrics_server_main(const struct config *cfg, int fd,
                                   pid_t supervisor);

#endif
