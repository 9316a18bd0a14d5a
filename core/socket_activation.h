/*
 * socket_activation.h - listening sockets handed over by systemd
 * (postern.socket, sd_listen_fds(3)).
 *
 * The supervisor takes them once at start-up; a listener of the
 * configuration whose address and port are those of an inherited socket
 * uses it instead of binding its own, so connections that systemd
 * queued before postern ran are served. Without LISTEN_FDS nothing
 * changes.
 */
#ifndef POSTERN_SOCKET_ACTIVATION_H
#define POSTERN_SOCKET_ACTIVATION_H

#include "config.h"

/* Take the inherited sockets (and clear LISTEN_FDS, LISTEN_PID, so no
 * child sees them). The number taken. */
unsigned socket_activation_take(void);

/* The inherited socket listening on lc's address and port, which the
 * caller now owns, or -1 when none is. */
int socket_activation_claim(const struct listener_config *lc);

/* Close the inherited sockets no listener claimed, logging each. */
void socket_activation_close_unclaimed(void);

#endif
