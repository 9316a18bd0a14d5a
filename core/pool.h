/*
 * pool.h - the core's small thread pool for blocking work (fsync, password
 * hashing). Jobs run on pool threads; their completions run on the loop
 * thread, woken by an ev_async.
 */
#ifndef POSTERN_POOL_H
#define POSTERN_POOL_H

#include <ev.h>

int pool_start(struct ev_loop *loop, unsigned threads);
/* Waits for queued jobs to finish and runs their completions. */
void pool_stop(void);

#endif
