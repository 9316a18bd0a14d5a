/*
 * config_check.h - what --check-config does, for the command line and for
 * the supervisor's reload (which runs it in a child process, so module
 * create() in check mode and the switch to "user" never touch it).
 */
#ifndef POSTERN_CONFIG_CHECK_H
#define POSTERN_CONFIG_CHECK_H

#include <stddef.h>
#include <stdio.h>

#include "config.h"

/* Make the event loop and the services module create() may use (the
 * default libev loop, loop calls, libcurl). Once per process. 0, or -1
 * with err. */
int services_start(char *err, size_t errlen);

/*
 * The start-up of a worker minus the sockets and the spool: the TLS
 * credentials are read as the user postern was started as, then postern
 * becomes cfg->user (when root) and every module is loaded and checks its
 * own config. Needs services_start(). 0 with the number of module
 * instances in *n_modules, or -1 with one line in err.
 */
int config_check(const struct config *cfg, size_t *n_modules, char *err,
                 size_t errlen);

/*
 * --print-hooks: load the modules as config_check() does, build the hook
 * chains the daemon would run (hook.c), and print each hook point with
 * its module instances in the order they run and the plugins.d file of
 * each. Needs services_start(). 0, or -1 with one line in err.
 */
int config_print_hooks(const struct config *cfg, FILE *out, char *err,
                       size_t errlen);

#endif
