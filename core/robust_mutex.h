/*
 * robust_mutex.h - a pthread mutex that lives in a MAP_SHARED mapping and
 * survives the death of the process holding it (PTHREAD_PROCESS_SHARED,
 * PTHREAD_MUTEX_ROBUST). The shared connection tables (shared_state.c) and
 * the shared metrics blocks (metrics.c) each keep one; this is the set-up
 * and the lock with owner-death recovery they share.
 */
#ifndef POSTERN_ROBUST_MUTEX_H
#define POSTERN_ROBUST_MUTEX_H

#include <pthread.h>
#include <stdbool.h>

/* Initialise *m, which must sit in memory every process that locks it
 * shares (a MAP_SHARED mapping made before the fork). 0, or an errno
 * value. */
int robust_mutex_init(pthread_mutex_t *m);

/* Lock *m. When the last holder died holding it (EOWNERDEAD), the mutex
 * is made consistent and *owner_died set, so the caller can repair what
 * the dead holder may have left half-changed before it unlocks (should it
 * die too meanwhile, the next locker is told again); otherwise *owner_died
 * is cleared. owner_died may be NULL when there is nothing to repair.
 * 0 with the lock held, or an errno value. A failure to make the mutex
 * consistent (not possible for one from robust_mutex_init) returns its
 * errno value with the lock still held and *owner_died set. Unlock with
 * pthread_mutex_unlock. */
int robust_mutex_lock(pthread_mutex_t *m, bool *owner_died);

#endif
