/*
 * shared_state.h - counters every worker process sees: open connections
 * per client address and in total, and the per-address rate limits
 * (client_limit.h). One shared anonymous mapping, made before the first
 * worker is forked, so each worker inherits it.
 *
 * Each worker books what it holds under its slot, so when a worker dies
 * (crash or SIGKILL) the supervisor can give back what it held without
 * asking it.
 */
#ifndef POSTERN_SHARED_STATE_H
#define POSTERN_SHARED_STATE_H

#include <stddef.h>

#include "config.h"

/* Workers alive at once, old and new generations during a reload. */
#define SHARED_STATE_MAX_SLOTS 256

/* Make the mapping, sized from cfg->limits; before any fork. A second call
 * keeps the existing mapping. 0, or -1 with one line in err. */
int shared_state_create(const struct config *cfg, char *err, size_t errlen);

/* In a worker, right after fork: book this process's counts under slot
 * (< SHARED_STATE_MAX_SLOTS). A single process without a supervisor uses
 * slot 0, the default. */
void shared_state_enter_slot(unsigned slot);

/* In the supervisor, after the worker of slot exited for any reason: the
 * connections it still held stop counting. */
void shared_state_release_slot(unsigned slot);

/* Unmap (at exit). */
void shared_state_destroy(void);

#endif
