/*
 * supervisor.h - the process postern starts as. It keeps the
 * configuration, the TLS credentials it read and the listening sockets it
 * bound, forks `workers` worker processes (worker.h) that inherit them,
 * restarts a worker that dies (with backoff) and logs why it died.
 *
 * Signals: SIGTERM or SIGINT is forwarded to the workers as SIGTERM
 * (drain, then exit; a second one: at once); SIGHUP reloads: the new
 * configuration is checked as --check-config does (in a child), a new
 * generation of workers starts on it, and only when every new worker is
 * ready are the old ones told to retire (SIGUSR1). On any failure the old
 * generation runs on and reload_failed is logged.
 *
 * The supervisor keeps the rights it was started with (root, typically)
 * for nothing but re-binding sockets and re-reading keys on reload; it
 * never talks to a client and loads no module.
 */
#ifndef POSTERN_SUPERVISOR_H
#define POSTERN_SUPERVISOR_H

#include "config.h"

/* Run until stopped. Takes cfg (loaded from config_path, NULL for the
 * built-in defaults). The exit code: 0 after SIGTERM, 1 when start-up
 * failed (the error is on stderr). */
int supervisor_run(const char *config_path, struct config *cfg);

#endif
