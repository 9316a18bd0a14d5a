/*
 * server.h - one worker process: a libev loop with its listeners,
 * sessions, thread pools and signal handling.
 */
#ifndef POSTERN_SERVER_H
#define POSTERN_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

struct module_set;

/*
 * Switch to cfg->user (its groups, gid and uid); nothing when it is unset.
 * With check_only, as --check-config: the user must exist, and the switch
 * is made only by root (anyone else has nothing to give up and could not).
 * 0, or -1 with one line in err.
 */
int server_become_user(const struct config *cfg, bool check_only, char *err,
                       size_t errlen);

/* Allow as many descriptors as the hard limit does. */
void server_raise_fd_limit(void);

/* Can the user postern now runs as create files in the spool? 0, or -1
 * with one line in err. */
int server_spool_check(const struct config *cfg, char *err, size_t errlen);

/* In a worker, once the modules are loaded and the listeners started:
 * hook chains, thread pools, DNS, HTTP and the signal watchers. 0, or -1
 * with err (then server_stop() undoes what was done). */
int server_start(const struct config *cfg, struct module_set *modules,
                 char *err, size_t errlen);

/* Run until SIGTERM has drained the sessions, then server_stop(). 0. */
int server_run(const struct config *cfg, struct module_set *modules);

/* Stop the services server_start() started (modules still exist). */
void server_stop(struct module_set *modules);

/* Close the listeners, free spool spares and TLS credentials. */
void server_cleanup(void);

#endif
