/*
 * pool.h - thread pools for blocking work (fsync, password hashing, a
 * module's slow checks). Jobs run on pool threads; their completions run
 * on the loop thread, woken by an ev_async.
 *
 * There are three kinds, so slow module work never holds the threads
 * that make messages durable:
 *  - the core pool ("spool_threads"): the core's own spool writes;
 *  - the shared module pool ("pool_threads"): postern_pool_submit() from
 *    instances without a pool of their own;
 *  - an instance pool: a plugins.d file with "threads": N gives its
 *    instance N threads of its own.
 * postern_pool_submit() picks the pool of the current module scope
 * (module_scope.h): the instance's own when it has one, else the shared
 * one.
 */
#ifndef POSTERN_POOL_H
#define POSTERN_POOL_H

#include <ev.h>

#include "postern/services.h"

struct module_set;

/* Start the core pool, the shared module pool and one pool per instance
 * of set that asks for threads. 0, or -1 (then pools_stop() cleans up). */
int pools_start(struct ev_loop *loop, unsigned core_threads,
                unsigned module_threads, struct module_set *set);
/* Waits for queued jobs of every pool to finish and runs their
 * completions (in the scope they were submitted from). Later submits
 * fail. */
void pools_stop(struct module_set *set);

/* The core's own work (the spool): always on the core pool. */
int pool_submit_core(postern_work_fn work, postern_done_fn done, void *arg);

#endif
