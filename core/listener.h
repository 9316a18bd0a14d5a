/*
 * listener.h - listening sockets: bind every configured address, accept
 * clients, enforce the connection limits, hand the rest to sessions.
 */
#ifndef POSTERN_LISTENER_H
#define POSTERN_LISTENER_H

#include <stddef.h>

#include <ev.h>

#include "config.h"

/* Bind every listener; 0, or -1 with err naming the address. */
int listeners_open(struct ev_loop *loop, const struct config *cfg, char *err,
                   size_t errlen);
/* Stop accepting and close the sockets, so new clients are refused at
 * once (draining); sessions in progress go on. */
void listeners_close(void);

#endif
