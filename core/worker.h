/*
 * worker.h - one worker process, forked by the supervisor: it accepts on
 * the listening sockets it inherited and runs sessions on its own loop.
 */
#ifndef POSTERN_WORKER_H
#define POSTERN_WORKER_H

#include <sys/types.h>

#include "config.h"

struct worker_start {
    const struct config *cfg;
    const int *listen_fds; /* listen_fds[i] serves cfg->listeners[i] */
    unsigned slot;         /* shared_state.h; also worker=N in the log */
    int ready_fd;          /* "R" when serving, or "E" and the error */
    pid_t supervisor;
};

/*
 * In the child right after fork (every signal blocked, descriptors of
 * other workers closed): become cfg->user, check the spool, load the
 * modules, start the services, say ready and serve until drained. Never
 * returns; exits 0, or 1 after sending the error down ready_fd.
 */
_Noreturn void worker_main(const struct worker_start *w);

#endif
