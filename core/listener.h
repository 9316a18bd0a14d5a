/*
 * listener.h - listening sockets: bind every configured address, accept
 * clients, enforce the connection limits, hand the rest to sessions.
 */
#ifndef POSTERN_LISTENER_H
#define POSTERN_LISTENER_H

#include <stddef.h>

#include <ev.h>

#include "config.h"

/* In the supervisor: a bound, listening, non-blocking socket for lc (its
 * address and port; the TLS mode is the worker's business). The fd, or -1
 * with err naming the address. */
int listener_socket_open(const struct listener_config *lc, char *err,
                         size_t errlen);

/* In a worker: accept on the inherited sockets, fds[i] serving
 * cfg->listeners[i]. 0, or -1 with err. */
int listeners_start(struct ev_loop *loop, const struct config *cfg,
                    const int *fds, char *err, size_t errlen);
/* Stop accepting and close the sockets, so new clients are refused at
 * once (draining); sessions in progress go on. */
void listeners_close(void);

#endif
