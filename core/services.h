/*
 * services.h - the loop handle behind the public timer, I/O and clock
 * services (include/postern/services.h).
 */
#ifndef POSTERN_SERVICES_INTERNAL_H
#define POSTERN_SERVICES_INTERNAL_H

#include <ev.h>

void services_init(struct ev_loop *loop);
struct ev_loop *services_loop(void);

#endif
