/*
 * server.h - the running daemon: one libev loop with its listeners,
 * sessions, thread pool and signal handling.
 */
#ifndef POSTERN_SERVER_H
#define POSTERN_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

struct module_set;

/*
 * Before the modules load: TLS credentials, listening sockets (privileged
 * ports), then the switch to cfg->user, then a check that the spool works
 * for that user. So modules create their files as the user that will use
 * them. 0, or -1 after a message on stderr.
 */
int server_prepare(const struct config *cfg);

/*
 * Switch to cfg->user (its groups, gid and uid); nothing when it is unset.
 * With check_only, as --check-config: the user must exist, and the switch
 * is made only by root (anyone else has nothing to give up and could not).
 * 0, or -1 with one line in err.
 */
int server_become_user(const struct config *cfg, bool check_only, char *err,
                       size_t errlen);

/* Run until SIGTERM/SIGINT has drained the sessions. 0 or 1 (exit code). */
int server_run(const struct config *cfg, struct module_set *modules);

/* Undo server_prepare() (also after a failed start). */
void server_cleanup(void);

#endif
