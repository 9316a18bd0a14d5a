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

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

/* --- the tables, for client_limit.c (which owns what they mean) ---
 *
 * One open-addressing table holds two kinds of entry: a client entry
 * (owner SHARED_CLIENT) per client address or IPv6 network with its open
 * connections and rate-limit tokens, and a holding entry per worker slot
 * and client address with the connections that worker holds. Holdings and
 * per-slot totals are the record; a client's conns and the total are kept
 * in step with them and recomputed from them after a worker died. Every
 * call below but shared_state_lock() wants the lock held. */

#define SHARED_CLIENT 0xffffu
#define SHARED_RATES 3 /* token buckets per client (client_limit.c) */

struct shared_entry {
    unsigned char key[16];
    uint16_t owner; /* SHARED_CLIENT, or the slot of a holding */
    uint16_t used;
    uint32_t conns; /* open connections (client), held ones (holding) */
    double stamp;   /* client: tokens last refilled */
    double expires; /* client: all tokens full again; with conns 0, the
                       entry says nothing and may go */
    double tokens[SHARED_RATES];
};

struct shared_counts {
    unsigned total;     /* connections open in all workers */
    unsigned counted;   /* of which hold a per-address count */
    unsigned v6_prefix; /* bits of an IPv6 key; fixed while counted > 0 */
};

/* Take the lock; false if there is no usable state (then count nothing:
 * the server keeps serving). Makes a private mapping from cfg if
 * shared_state_create() was never called (a lone process, unit tests). */
bool shared_state_lock(const struct config *cfg);
void shared_state_unlock(void);
struct shared_counts *shared_state_counts(void);

/* The client entry of key; with create, a new one (used 1, conns 0,
 * tokens 0: the caller fills them) if missing, evicting entries that
 * expired before now, and if the table is still crowded, rate state of
 * clients without connections. NULL: not found, or no room. */
struct shared_entry *shared_state_client(const unsigned char key[16],
                                         bool create, double now);

/* Book a connection of this process: in the total and, with key, under
 * its client entry c and this slot's holding. -1 if there is no room for
 * the holding (nothing changed). */
int shared_state_hold(struct shared_entry *c, const unsigned char key[16]);
/* Give one back (key NULL: it was counted in the total only). */
void shared_state_unhold(const unsigned char key[16]);

/* Slots of the table, for tests and sizing checks. */
size_t shared_state_capacity(void);

#endif
