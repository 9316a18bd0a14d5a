/*
 * loop_call.h - postern_loop_call() (include/postern/services.h): a
 * mutex-protected FIFO of calls from any thread, run on the loop thread
 * when an ev_async wakes it.
 *
 * Lifetime: open from services_init() (before modules are created) until
 * loop_call_shutdown(), which the server calls after the loop stopped
 * and the thread pools were drained, before modules are destroyed: it
 * runs every call still queued, in order, and from then on
 * postern_loop_call() returns -1.
 */
#ifndef POSTERN_LOOP_CALL_H
#define POSTERN_LOOP_CALL_H

#include <ev.h>

void loop_call_init(struct ev_loop *loop);
void loop_call_shutdown(void);

#endif
