/*
 * server.h - the running daemon: one libev loop with its listeners,
 * sessions, thread pool and signal handling.
 */
#ifndef POSTERN_SERVER_H
#define POSTERN_SERVER_H

#include "config.h"

struct module_set;

/* Run until SIGTERM/SIGINT has drained the sessions. 0 or 1 (exit code). */
int server_run(const struct config *cfg, struct module_set *modules);

#endif
