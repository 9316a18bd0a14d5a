/*
 * supervisor.c - worker processes, restarts, reload and stop (see
 * supervisor.h).
 *
 * The supervisor has no event loop library: one poll() over a self-pipe
 * fed by the signal handlers and one readiness pipe per starting worker.
 * Children are reaped only in that loop (never in a handler), so the
 * reload's check child can be waited for by its pid.
 *
 * A generation is one configuration with its listening sockets and its
 * workers. Sockets are shared between generations when the address and
 * port are the same, so a reload never closes a socket with connections
 * in its queue; the workers of both generations accept from it until the
 * old ones retire.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config_check.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "metrics_server.h"
#include "notify.h"
#include "server.h"
#include "shared_state.h"
#include "socket_activation.h"
#include "supervisor.h"
#include "tls.h"
#include "worker.h"

#define RESTART_DELAY_FIRST 0.1 /* seconds; doubles with each quick death */
#define RESTART_DELAY_MAX 30.0
#define RESTART_RESET_AFTER 10.0 /* a worker that ran this long was fine */
#define MAX_WORKERS 64           /* config.c's range for "workers" */

struct bound_socket {
    char *address;
    int port;
    int fd;
};

struct generation {
    struct config *cfg;
    int *fds; /* fds[i] serves cfg->listeners[i] */
    unsigned id;
    unsigned alive; /* its workers not yet reaped */
};

struct worker {
    pid_t pid;      /* 0: the slot is free */
    unsigned index; /* 0..workers-1 in its generation */
    struct generation *gen;
    int ready_fd; /* -1 once closed */
    bool said;    /* the first byte ('R' or 'E') came */
    bool ready;
    bool retiring; /* told to go: its exit is no death */
    double started;
    char err[2048];
    size_t errlen;
};

static struct {
    const char *config_path;
    struct worker workers[SHARED_STATE_MAX_SLOTS]; /* index = slot */
    struct generation *current;
    struct generation *next; /* reload: starting, not ready yet */
    struct generation *old[SHARED_STATE_MAX_SLOTS]; /* retiring ones */
    struct bound_socket *sockets;
    size_t n_sockets;
    /* Restarts of the current generation's workers, by index. */
    double restart_at[MAX_WORKERS]; /* 0: none pending */
    double restart_delay[MAX_WORKERS];
    int sigpipe[2];
    /* The metrics process (metrics_server.h), when "metrics" is set. */
    int metrics_fd; /* -1: metrics off */
    pid_t metrics_pid;
    double metrics_restart_at; /* 0: none pending */
    bool starting;             /* the first generation is not ready yet */
    bool start_failed;
    bool reload_wanted;    /* SIGHUP came */
    double watchdog_every; /* seconds between WATCHDOG=1; 0: none wanted */
    double watchdog_next;
    unsigned stop_signals;
    unsigned next_gen_id;
    int exit_code;
} sup;

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* --- signals ------------------------------------------------------------ */

static void
on_signal(int signo)
{
    int saved = errno;
    unsigned char c = (unsigned char)signo;
    ssize_t w = write(sup.sigpipe[1], &c, 1);
    (void)w; /* full pipe: a wakeup is pending anyway */
    errno = saved;
}

static int
signals_install(void)
{
    if (pipe2(sup.sigpipe, O_NONBLOCK | O_CLOEXEC) < 0)
        return -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGCHLD};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        if (sigaction(sigs[i], &sa, NULL) < 0)
            return -1;
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static const char *
signal_name(int signo)
{
    const char *d = sigabbrev_np(signo);
    return d ? d : "unknown";
}

/* --- sockets ------------------------------------------------------------ */

static bool
socket_used_by(const struct generation *g, int fd)
{
    if (!g)
        return false;
    for (size_t i = 0; i < g->cfg->n_listeners; i++)
        if (g->fds[i] == fd)
            return true;
    return false;
}

/* Close the supervisor's copy of every socket no generation that can
 * still start a worker (current, next) uses. */
static void
sockets_prune(void)
{
    size_t k = 0;
    for (size_t i = 0; i < sup.n_sockets; i++) {
        struct bound_socket *b = &sup.sockets[i];
        if (socket_used_by(sup.current, b->fd) ||
            socket_used_by(sup.next, b->fd)) {
            sup.sockets[k++] = *b;
            continue;
        }
        log_event(LOG_LEVEL_INFO, NULL, "listener_closed", "address=%s port=%d",
                  postern_log_value(b->address), b->port);
        close(b->fd);
        free(b->address);
    }
    sup.n_sockets = k;
}

/* The socket for lc: the one already bound to its address and port, or a
 * new one. fd or -1 with err. */
static int
socket_for(const struct listener_config *lc, char *err, size_t errlen)
{
    for (size_t i = 0; i < sup.n_sockets; i++)
        if (sup.sockets[i].port == lc->port &&
            strcmp(sup.sockets[i].address, lc->address) == 0)
            return sup.sockets[i].fd;
    struct bound_socket *grown =
        realloc(sup.sockets, (sup.n_sockets + 1) * sizeof(*grown));
    if (!grown) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    sup.sockets = grown;
    char *address = strdup(lc->address);
    if (!address) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int fd = socket_activation_claim(lc);
    if (fd < 0)
        fd = listener_socket_open(lc, err, errlen);
    if (fd < 0) {
        free(address);
        return -1;
    }
    sup.sockets[sup.n_sockets++] =
        (struct bound_socket){.address = address, .port = lc->port, .fd = fd};
    return fd;
}

/* --- generations -----------------------------------------------------------
 */

static void
generation_free(struct generation *g)
{
    if (!g)
        return;
    config_free(g->cfg);
    free(g->fds);
    free(g);
}

/* A generation for cfg (taken) with its sockets bound; NULL with err
 * (cfg freed). */
static struct generation *
generation_new(struct config *cfg, char *err, size_t errlen)
{
    struct generation *g = calloc(1, sizeof(*g));
    if (g)
        g->fds = calloc(cfg->n_listeners ? cfg->n_listeners : 1, sizeof(int));
    if (!g || !g->fds) {
        if (g)
            free(g);
        config_free(cfg);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    g->cfg = cfg;
    g->id = ++sup.next_gen_id;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        g->fds[i] = socket_for(&cfg->listeners[i], err, errlen);
        if (g->fds[i] < 0) {
            generation_free(g);
            sockets_prune();
            return NULL;
        }
    }
    return g;
}

static void
generation_retire_list_add(struct generation *g)
{
    for (size_t i = 0; i < SHARED_STATE_MAX_SLOTS; i++)
        if (!sup.old[i]) {
            sup.old[i] = g;
            return;
        }
}

/* A generation neither current nor next goes when its last worker did. */
static void
generation_maybe_free(struct generation *g)
{
    if (g == sup.current || g == sup.next || g->alive > 0)
        return;
    for (size_t i = 0; i < SHARED_STATE_MAX_SLOTS; i++)
        if (sup.old[i] == g)
            sup.old[i] = NULL;
    generation_free(g);
}

/* --- workers ------------------------------------------------------------- */

static unsigned
live_workers(void)
{
    unsigned n = 0;
    for (size_t i = 0; i < SHARED_STATE_MAX_SLOTS; i++)
        n += sup.workers[i].pid > 0;
    return n;
}

static void
signal_generation(const struct generation *g, int signo, bool retire)
{
    for (size_t i = 0; i < SHARED_STATE_MAX_SLOTS; i++) {
        struct worker *w = &sup.workers[i];
        if (w->pid > 0 && w->gen == g) {
            kill(w->pid, signo);
            if (retire)
                w->retiring = true;
        }
    }
}

/* In the child: drop what belongs to the supervisor and other workers. */
static void
child_close_inherited(const struct generation *keep)
{
    close(sup.sigpipe[0]);
    close(sup.sigpipe[1]);
    for (size_t i = 0; i < SHARED_STATE_MAX_SLOTS; i++)
        if (sup.workers[i].pid > 0 && sup.workers[i].ready_fd >= 0)
            close(sup.workers[i].ready_fd);
    for (size_t i = 0; i < sup.n_sockets; i++)
        if (!socket_used_by(keep, sup.sockets[i].fd))
            close(sup.sockets[i].fd);
    if (sup.metrics_fd >= 0 && keep)
        close(sup.metrics_fd);
}

/* --- the metrics process ------------------------------------------------ */

static void
metrics_spawn(void)
{
    sup.metrics_restart_at = 0;
    if (sup.metrics_fd < 0 || sup.metrics_pid > 0 || sup.stop_signals > 0)
        return;
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    fflush(NULL);
    pid_t supervisor = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        child_close_inherited(NULL); /* no client listener; keeps ours */
        metrics_server_main(sup.current->cfg, sup.metrics_fd, supervisor);
    }
    int saved = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        log_event(LOG_LEVEL_ERROR, NULL, "metrics_start_failed", "error=%s",
                  postern_log_value(strerror(saved)));
        sup.metrics_restart_at = now() + RESTART_DELAY_MAX;
        return;
    }
    sup.metrics_pid = pid;
    log_event(LOG_LEVEL_INFO, NULL, "metrics_started", "pid=%ld", (long)pid);
}

/* The metrics process ended: again in a second, unless postern stops. */
static void
metrics_reaped(int status)
{
    bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (clean)
        log_event(LOG_LEVEL_INFO, NULL, "metrics_exited", "pid=%ld",
                  (long)sup.metrics_pid);
    else if (WIFSIGNALED(status))
        log_event(LOG_LEVEL_ERROR, NULL, "metrics_died", "pid=%ld signal=SIG%s",
                  (long)sup.metrics_pid, signal_name(WTERMSIG(status)));
    else
        log_event(LOG_LEVEL_ERROR, NULL, "metrics_died", "pid=%ld exit_code=%d",
                  (long)sup.metrics_pid, WEXITSTATUS(status));
    sup.metrics_pid = 0;
    if (sup.stop_signals == 0)
        sup.metrics_restart_at = now() + (clean ? 0.001 : 1.0);
}

/* Fork worker `index` of g. 0, or -1 (logged). */
static int
worker_spawn(struct generation *g, unsigned index)
{
    unsigned slot = 0;
    while (slot < SHARED_STATE_MAX_SLOTS && sup.workers[slot].pid != 0)
        slot++;
    if (slot == SHARED_STATE_MAX_SLOTS) {
        log_event(LOG_LEVEL_ERROR, NULL, "worker_start_failed",
                  "error=no_free_slot");
        return -1;
    }
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        log_event(LOG_LEVEL_ERROR, NULL, "worker_start_failed", "error=%s",
                  postern_log_value(strerror(errno)));
        return -1;
    }
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    fflush(NULL);
    pid_t supervisor = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        child_close_inherited(g);
        struct worker_start ws = {
            .cfg = g->cfg,
            .listen_fds = g->fds,
            .slot = slot,
            .ready_fd = p[1],
            .supervisor = supervisor,
        };
        worker_main(&ws); /* signals stay blocked until it serves */
    }
    int saved = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    close(p[1]);
    if (pid < 0) {
        close(p[0]);
        log_event(LOG_LEVEL_ERROR, NULL, "worker_start_failed", "error=%s",
                  postern_log_value(strerror(saved)));
        return -1;
    }
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    struct worker *w = &sup.workers[slot];
    *w = (struct worker){
        .pid = pid,
        .index = index,
        .gen = g,
        .ready_fd = p[0],
        .started = now(),
    };
    g->alive++;
    metrics_slot_started(slot);
    log_event(LOG_LEVEL_INFO, NULL, "worker_started",
              "pid=%ld worker=%u generation=%u", (long)pid, slot, g->id);
    return 0;
}

static int
generation_spawn(struct generation *g)
{
    for (unsigned i = 0; i < g->cfg->workers; i++)
        if (worker_spawn(g, i) < 0)
            return -1;
    return 0;
}

static bool
generation_ready(const struct generation *g)
{
    unsigned ready = 0;
    for (size_t i = 0; i < SHARED_STATE_MAX_SLOTS; i++) {
        const struct worker *w = &sup.workers[i];
        if (w->pid > 0 && w->gen == g && w->ready)
            ready++;
    }
    return ready == g->cfg->workers;
}

/* Read what a starting worker says; close the pipe at its end. */
static void
worker_read(struct worker *w)
{
    for (;;) {
        char buf[512];
        ssize_t r = read(w->ready_fd, buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return; /* EAGAIN: more later */
        if (r == 0) {
            close(w->ready_fd);
            w->ready_fd = -1;
            return;
        }
        size_t from = 0;
        if (!w->said) {
            w->said = true;
            w->ready = buf[0] == 'R';
            from = 1;
        }
        if (w->ready)
            continue;
        size_t n = (size_t)r - from;
        if (n > sizeof(w->err) - 1 - w->errlen)
            n = sizeof(w->err) - 1 - w->errlen;
        memcpy(w->err + w->errlen, buf + from, n);
        w->errlen += n;
        w->err[w->errlen] = '\0';
    }
}

/* --- stopping ---------------------------------------------------------- */

static void
stop_all(int signo)
{
    sup.stop_signals++;
    if (sup.stop_signals == 1) {
        log_event(LOG_LEVEL_INFO, NULL, "supervisor_stopping",
                  "signal=%s workers=%u", signal_name(signo), live_workers());
        notify_stopping("stopping on SIG%s: draining %u workers",
                        signal_name(signo), live_workers());
        /* No worker will start again: the supervisor's copies of the
         * sockets go now, so the port closes when the workers let go. */
        for (size_t i = 0; i < sup.n_sockets; i++) {
            close(sup.sockets[i].fd);
            free(sup.sockets[i].address);
        }
        sup.n_sockets = 0;
        if (sup.metrics_fd >= 0)
            close(sup.metrics_fd);
        sup.metrics_fd = -1;
        if (sup.metrics_pid > 0)
            kill(sup.metrics_pid, SIGTERM);
    }
    sup.metrics_restart_at = 0;
    for (size_t i = 0; i < MAX_WORKERS; i++)
        sup.restart_at[i] = 0;
    /* The second: SIGQUIT, as two SIGTERMs close together could reach a
     * worker as one. */
    int forward = sup.stop_signals == 1 ? SIGTERM : SIGQUIT;
    for (size_t i = 0; i < SHARED_STATE_MAX_SLOTS; i++)
        if (sup.workers[i].pid > 0) {
            sup.workers[i].retiring = true;
            kill(sup.workers[i].pid, forward);
        }
}

/* --- reload ------------------------------------------------------------- */

/* --check-config in a child: module create() in check mode and the switch
 * to "user" never touch the supervisor. 0, or -1 with err. */
static int
reload_check(char *err, size_t errlen)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    fflush(NULL);
    pid_t supervisor = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != supervisor)
            _exit(1);
        close(p[0]);
        child_close_inherited(NULL);
        if (sup.metrics_fd >= 0)
            close(sup.metrics_fd);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        signal(SIGCHLD, SIG_DFL);
        signal(SIGINT, SIG_IGN);
        sigprocmask(SIG_SETMASK, &old, NULL);
        char e[2048];
        size_t n;
        struct config *c = config_load(sup.config_path, e, sizeof(e));
        if (!c || services_start(e, sizeof(e)) < 0 ||
            config_check(c, &n, e, sizeof(e)) < 0) {
            ssize_t w = write(p[1], e, strlen(e));
            (void)w;
            config_free(c); /* NULL-safe; keeps leak checkers quiet */
            _exit(1);
        }
        _exit(0);
    }
    int saved = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    close(p[1]);
    if (pid < 0) {
        close(p[0]);
        snprintf(err, errlen, "fork: %s", strerror(saved));
        return -1;
    }
    size_t len = 0;
    for (;;) {
        ssize_t r = read(p[0], err + len, errlen - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == errlen - 1)
            break;
    }
    err[len] = '\0';
    close(p[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (len == 0) {
        if (WIFSIGNALED(status))
            snprintf(err, errlen, "the check died from SIG%s",
                     signal_name(WTERMSIG(status)));
        else
            snprintf(err, errlen, "the check failed (exit code %d)",
                     WEXITSTATUS(status));
    }
    return -1;
}

static void
reload_failed(const char *why)
{
    log_event(LOG_LEVEL_ERROR, NULL, "reload_failed", "error=%s",
              postern_log_value(why));
    /* The old generation serves on: ready again, with the reason. */
    notify_ready("reload failed, serving generation %u: %s", sup.current->id,
                 why);
}

/* Back to the current generation's TLS credentials and log settings
 * (the session ticket key never changed). */
static void
reload_undo(void)
{
    char err[1024];
    if (tls_init(sup.current->cfg, err, sizeof(err)) < 0)
        log_event(LOG_LEVEL_ERROR, NULL, "tls_reread_failed", "error=%s",
                  postern_log_value(err));
    if (config_apply_log(sup.current->cfg, err, sizeof(err)) < 0)
        log_event(LOG_LEVEL_ERROR, NULL, "log_reopen_failed", "error=%s",
                  postern_log_value(err));
}

static void
reload_begin(void)
{
    char err[2048];

    log_event(LOG_LEVEL_INFO, NULL, "reloading", "config=%s",
              postern_log_value(sup.config_path ? sup.config_path
                                                : "(built-in defaults)"));
    notify_reloading();
    if (reload_check(err, sizeof(err)) < 0) {
        reload_failed(err);
        return;
    }
    struct config *cfg = config_load(sup.config_path, err, sizeof(err));
    if (!cfg) {
        reload_failed(err);
        return;
    }
    /* Keys are read here, with the supervisor's rights. tls_init keeps
     * the session ticket key, so clients resume across the reload, and
     * leaves the old credentials in place when it fails. */
    if (tls_init(cfg, err, sizeof(err)) < 0 ||
        shared_state_create(cfg, err, sizeof(err)) < 0) {
        config_free(cfg);
        reload_undo();
        reload_failed(err);
        return;
    }
    struct generation *g = generation_new(cfg, err, sizeof(err));
    if (!g) {
        reload_undo();
        reload_failed(err);
        return;
    }
    /* The new workers inherit the new log settings (format, target). */
    if (config_apply_log(cfg, err, sizeof(err)) < 0) {
        generation_free(g);
        sockets_prune();
        reload_undo();
        reload_failed(err);
        return;
    }
    sup.next = g;
    if (generation_spawn(g) < 0) {
        /* the ones started retire; the reap frees g */
        sup.next = NULL;
        signal_generation(g, SIGUSR1, true);
        generation_retire_list_add(g);
        generation_maybe_free(g);
        sockets_prune();
        reload_undo();
        reload_failed("cannot start the new workers");
    }
}

/* The metrics process serves the current configuration (its spool_dir
 * and user): it is started again on it. The socket stays: a changed
 * "metrics" address needs a restart of postern. */
static void
metrics_reload(const struct config *old)
{
    const struct metrics_config *a = &old->metrics,
                                *b = &sup.current->cfg->metrics;
    if ((a->address == NULL) != (b->address == NULL) ||
        (a->address &&
         (strcmp(a->address, b->address) != 0 || a->port != b->port)))
        log_event(LOG_LEVEL_WARNING, NULL, "metrics_unchanged",
                  "reason=a_changed_metrics_key_needs_a_restart");
    if (sup.metrics_pid > 0)
        kill(sup.metrics_pid, SIGTERM); /* its exit starts the new one */
}

/* Every new worker is serving: the old generation retires. */
static void
reload_commit(void)
{
    struct generation *old = sup.current;
    sup.current = sup.next;
    sup.next = NULL;
    for (size_t i = 0; i < MAX_WORKERS; i++) {
        sup.restart_at[i] = 0;
        sup.restart_delay[i] = 0;
    }
    signal_generation(old, SIGUSR1, true);
    generation_retire_list_add(old);
    sockets_prune();
    metrics_reload(old->cfg);
    log_event(LOG_LEVEL_INFO, NULL, "reloaded", "generation=%u workers=%u",
              sup.current->id, sup.current->cfg->workers);
    notify_ready("serving: generation %u, %u workers, %zu listeners",
                 sup.current->id, sup.current->cfg->workers,
                 sup.current->cfg->n_listeners);
    generation_maybe_free(old);
}

/* A worker of the next generation failed before it was ready. */
static void
reload_abort(const char *why)
{
    struct generation *g = sup.next;
    sup.next = NULL;
    signal_generation(g, SIGUSR1, true);
    generation_retire_list_add(g);
    sockets_prune();
    reload_undo();
    reload_failed(why);
    generation_maybe_free(g);
}

/* --- reaping ------------------------------------------------------------- */

static void
worker_schedule_restart(const struct worker *w)
{
    double ran = now() - w->started;
    double *delay = &sup.restart_delay[w->index];
    if (ran >= RESTART_RESET_AFTER || *delay == 0)
        *delay = RESTART_DELAY_FIRST;
    else
        *delay =
            *delay * 2 > RESTART_DELAY_MAX ? RESTART_DELAY_MAX : *delay * 2;
    sup.restart_at[w->index] = now() + *delay;
    log_event(LOG_LEVEL_INFO, NULL, "worker_restart", "index=%u delay=%.1f",
              w->index, *delay);
}

static void
worker_reaped(struct worker *w, int status)
{
    unsigned slot = (unsigned)(w - sup.workers);
    struct generation *g = w->gen;
    char how[64];

    if (w->ready_fd >= 0) {
        worker_read(w);
        if (w->ready_fd >= 0)
            close(w->ready_fd);
        w->ready_fd = -1;
    }
    if (WIFSIGNALED(status))
        snprintf(how, sizeof(how), "signal=SIG%s",
                 signal_name(WTERMSIG(status)));
    else
        snprintf(how, sizeof(how), "exit_code=%d", WEXITSTATUS(status));
    bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    /* Before the log line: once a death is logged, what the worker held
     * no longer counts. */
    shared_state_release_slot(slot);
    metrics_release_slot(slot);
    if (w->retiring && clean)
        log_event(LOG_LEVEL_INFO, NULL, "worker_exited",
                  "pid=%ld worker=%u generation=%u %s", (long)w->pid, slot,
                  g->id, how);
    else
        log_event(LOG_LEVEL_ERROR, NULL, "worker_died",
                  "pid=%ld worker=%u generation=%u %s%s%s", (long)w->pid, slot,
                  g->id, how, w->errlen ? " error=" : "",
                  w->errlen ? postern_log_value(w->err) : "");
    g->alive--;
    if (!clean && sup.stop_signals > 0)
        sup.exit_code = 1;

    bool was_ready = w->ready, retiring = w->retiring;
    struct worker dead = *w;
    memset(w, 0, sizeof(*w));
    w->ready_fd = -1;

    if (!was_ready && sup.starting && g == sup.current) {
        /* Start-up: the first error goes to stderr as a one-process
         * postern said it; the others stop and postern exits 1. */
        if (!sup.start_failed) {
            sup.start_failed = true;
            if (dead.errlen)
                fprintf(stderr, "postern: %s\n", dead.err);
            else
                fprintf(stderr, "postern: a worker failed at start-up (%s)\n",
                        how);
            notify_status("start-up failed: %s", dead.errlen ? dead.err : how);
        }
        sup.exit_code = 1;
        if (sup.stop_signals == 0)
            stop_all(SIGTERM);
    } else if (g == sup.next) {
        reload_abort(dead.errlen ? dead.err : how);
    } else if (g == sup.current && !retiring && sup.stop_signals == 0) {
        notify_status("serving; worker %u died (%s) and is started again", slot,
                      how);
        worker_schedule_restart(&dead);
    }
    generation_maybe_free(g);
}

static void
reap_children(void)
{
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0)
            return;
        if (pid == sup.metrics_pid) {
            metrics_reaped(status);
            continue;
        }
        for (size_t i = 0; i < SHARED_STATE_MAX_SLOTS; i++)
            if (sup.workers[i].pid == pid) {
                worker_reaped(&sup.workers[i], status);
                break;
            }
    }
}

/* --- the loop --------------------------------------------------------------
 */

static void
handle_signals(void)
{
    unsigned char sigs[64];
    ssize_t r;
    while ((r = read(sup.sigpipe[0], sigs, sizeof(sigs))) > 0) {
        for (ssize_t i = 0; i < r; i++) {
            if (sigs[i] == SIGCHLD)
                reap_children();
            else if (sigs[i] == SIGTERM || sigs[i] == SIGINT)
                stop_all(sigs[i]);
            else if (sigs[i] == SIGHUP)
                sup.reload_wanted = true; /* see supervisor_loop */
        }
    }
}

static void
restarts_due(void)
{
    double t = now();
    for (unsigned i = 0; i < MAX_WORKERS; i++)
        if (sup.restart_at[i] != 0 && sup.restart_at[i] <= t) {
            sup.restart_at[i] = 0;
            if (worker_spawn(sup.current, i) < 0)
                sup.restart_at[i] = t + RESTART_DELAY_MAX;
        }
    if (sup.metrics_restart_at != 0 && sup.metrics_restart_at <= t)
        metrics_spawn();
}

/* WATCHDOG=1 when its time came: the supervisor's loop turns, so it
 * can still restart workers, reload and stop. */
static void
watchdog_due(void)
{
    if (sup.watchdog_every == 0)
        return;
    double t = now();
    if (t < sup.watchdog_next)
        return;
    notify_watchdog();
    sup.watchdog_next = t + sup.watchdog_every;
}

static int
poll_timeout_ms(void)
{
    double first = sup.watchdog_every ? sup.watchdog_next : 0;
    for (unsigned i = 0; i < MAX_WORKERS; i++)
        if (sup.restart_at[i] != 0 && (first == 0 || sup.restart_at[i] < first))
            first = sup.restart_at[i];
    if (sup.metrics_restart_at != 0 &&
        (first == 0 || sup.metrics_restart_at < first))
        first = sup.metrics_restart_at;
    if (first == 0)
        return -1;
    double ms = (first - now()) * 1000;
    return ms < 0 ? 0 : (int)ms + 1;
}

static void
supervisor_loop(void)
{
    struct pollfd fds[1 + SHARED_STATE_MAX_SLOTS];
    struct worker *owner[1 + SHARED_STATE_MAX_SLOTS];

    while (sup.stop_signals == 0 || live_workers() > 0 || sup.metrics_pid > 0) {
        size_t n = 0;
        fds[n++] = (struct pollfd){.fd = sup.sigpipe[0], .events = POLLIN};
        for (size_t i = 0; i < SHARED_STATE_MAX_SLOTS; i++)
            if (sup.workers[i].pid > 0 && sup.workers[i].ready_fd >= 0) {
                owner[n] = &sup.workers[i];
                fds[n++] = (struct pollfd){.fd = sup.workers[i].ready_fd,
                                           .events = POLLIN};
            }
        int r = poll(fds, n, poll_timeout_ms());
        if (r < 0 && errno != EINTR)
            break;
        for (size_t i = 1; r > 0 && i < n; i++)
            if (fds[i].revents && owner[i]->pid > 0 &&
                owner[i]->ready_fd == fds[i].fd)
                worker_read(owner[i]);
        handle_signals();
        if (sup.starting && sup.stop_signals == 0 &&
            generation_ready(sup.current)) {
            sup.starting = false;
            log_event(LOG_LEVEL_INFO, NULL, "supervisor_ready",
                      "pid=%ld workers=%u", (long)getpid(),
                      sup.current->cfg->workers);
            notify_ready("serving: %u workers, %zu listeners",
                         sup.current->cfg->workers,
                         sup.current->cfg->n_listeners);
        }
        if (sup.next && generation_ready(sup.next))
            reload_commit();
        /* One reload at a time, and not before the first generation
         * serves: a SIGHUP meanwhile waits its turn. */
        if (sup.reload_wanted && !sup.starting && !sup.next &&
            sup.stop_signals == 0) {
            sup.reload_wanted = false;
            reload_begin();
        }
        if (sup.stop_signals == 0)
            restarts_due();
        watchdog_due();
    }
}

int
supervisor_run(const char *config_path, struct config *cfg)
{
    char err[2048];

    sup.config_path = config_path;
    sup.sigpipe[0] = sup.sigpipe[1] = -1;
    sup.metrics_fd = -1;
    for (size_t i = 0; i < SHARED_STATE_MAX_SLOTS; i++)
        sup.workers[i].ready_fd = -1;
    server_raise_fd_limit();
    sup.watchdog_every = (double)notify_watchdog_interval() / 1e6;
    sup.watchdog_next = now();
    if (signals_install() < 0) {
        fprintf(stderr, "postern: signals: %s\n", strerror(errno));
        config_free(cfg);
        return 1;
    }
    /* Keys and privileged ports with the rights postern started with; the
     * workers drop them. */
    if (tls_init(cfg, err, sizeof(err)) < 0 ||
        shared_state_create(cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "postern: %s\n", err);
        tls_deinit();
        config_free(cfg);
        return 1;
    }
    if (cfg->metrics.address &&
        (metrics_create(err, sizeof(err)) < 0 ||
         (sup.metrics_fd = metrics_socket_open(cfg, err, sizeof(err))) < 0)) {
        fprintf(stderr, "postern: %s\n", err);
        tls_deinit();
        shared_state_destroy();
        metrics_destroy();
        config_free(cfg);
        return 1;
    }
    socket_activation_take();
    sup.current = generation_new(cfg, err, sizeof(err));
    socket_activation_close_unclaimed();
    if (!sup.current) {
        fprintf(stderr, "postern: %s\n", err);
        tls_deinit();
        shared_state_destroy();
        metrics_destroy();
        if (sup.metrics_fd >= 0)
            close(sup.metrics_fd);
        return 1;
    }
    sup.starting = true;
    if (generation_spawn(sup.current) < 0) {
        fprintf(stderr, "postern: cannot start the workers\n");
        sup.exit_code = 1;
        stop_all(SIGTERM);
    }
    metrics_spawn();
    supervisor_loop();

    if (sup.exit_code == 0)
        log_event(LOG_LEVEL_INFO, NULL, "supervisor_stopped", "workers=0");
    for (size_t i = 0; i < SHARED_STATE_MAX_SLOTS; i++)
        if (sup.old[i])
            generation_free(sup.old[i]);
    generation_free(sup.next);
    generation_free(sup.current);
    sup.current = sup.next = NULL;
    sockets_prune();
    free(sup.sockets);
    tls_deinit();
    shared_state_destroy();
    metrics_destroy();
    if (sup.metrics_fd >= 0)
        close(sup.metrics_fd);
    close(sup.sigpipe[0]);
    close(sup.sigpipe[1]);
    return sup.exit_code;
}
