/*
 * worker.c - a worker process (see worker.h).
 *
 * Everything that makes threads or pools (module create(), the spool and
 * module pools, DNS, libcurl) happens here, after the fork: a process
 * with threads must never fork.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "config_check.h"
#include "hook.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "module.h"
#include "server.h"
#include "services.h"
#include "shared_state.h"
#include "worker.h"

static pid_t parent;
static const int *parent_fds;
static size_t n_parent_fds;

/* The supervisor died (PR_SET_PDEATHSIG): close the listening sockets
 * first, in the handler, so that they stop listening now rather than when
 * the kernel has torn down this whole process, then go. Any thread may
 * run this; _exit ends them all. */
static void
on_parent_death(int signo)
{
    if (getppid() == parent)
        return; /* not from the kernel: the supervisor lives */
    for (size_t i = 0; i < n_parent_fds; i++)
        close(parent_fds[i]);
    _exit(1);
}

static void
worker_report(int fd, const char *msg, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, msg, len);
        if (w <= 0)
            return;
        msg += w;
        len -= (size_t)w;
    }
}

static _Noreturn void
worker_fail(const struct worker_start *w, const char *err)
{
    char msg[2100];
    int n = snprintf(msg, sizeof(msg), "E%s", err);
    worker_report(w->ready_fd, msg,
                  n < (int)sizeof(msg) ? (size_t)n : sizeof(msg) - 1);
    _exit(1);
}

_Noreturn void
worker_main(const struct worker_start *w)
{
    const struct config *cfg = w->cfg;
    struct module_set *modules = NULL;
    char err[2048];

    /* A supervisor killed with SIGKILL takes its workers with it, and
     * the port is free for the next postern at once. */
    parent = w->supervisor;
    parent_fds = w->listen_fds;
    n_parent_fds = cfg->n_listeners;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_parent_death;
    sigfillset(&sa.sa_mask);
    sigaction(SIGUSR2, &sa, NULL);
    prctl(PR_SET_PDEATHSIG, SIGUSR2);
    if (getppid() != w->supervisor)
        _exit(1);
    sigset_t death;
    sigemptyset(&death);
    sigaddset(&death, SIGUSR2);
    sigprocmask(SIG_UNBLOCK, &death, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* SIGINT from a terminal reaches the whole group: the supervisor
     * decides and forwards SIGTERM. SIGHUP is the supervisor's. */
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGTERM, SIG_DFL);
    signal(SIGUSR1, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    shared_state_enter_slot(w->slot);
    metrics_enter_slot(w->slot);
    log_set_worker(w->slot);

    if (services_start(err, sizeof(err)) < 0 ||
        listeners_start(services_loop(), cfg, w->listen_fds, err, sizeof(err)) <
            0 ||
        server_become_user(cfg, false, err, sizeof(err)) < 0 ||
        server_spool_check(cfg, err, sizeof(err)) < 0)
        worker_fail(w, err);
    if (module_set_load(cfg, false, &modules, err, sizeof(err)) < 0)
        worker_fail(w, err);
    if (server_start(cfg, modules, err, sizeof(err)) < 0) {
        server_stop(modules);
        module_set_free(modules);
        worker_fail(w, err);
    }
    worker_report(w->ready_fd, "R", 1);
    close(w->ready_fd);

    /* Module threads keep every signal blocked (they inherited the mask
     * before this point); the loop's thread takes them. */
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_UNBLOCK, &all, NULL);

    int rc = server_run(cfg, modules);
    module_set_free(modules);
    hook_orphans_free();
    exit(rc);
}
