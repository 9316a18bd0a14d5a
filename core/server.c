/*
 * server.c - start-up, the loop and shutdown.
 *
 * This is one worker process (supervisor.h starts them). SIGTERM stops
 * accepting, answers 421 to sessions between transactions and lets
 * transactions in flight finish within drain_timeout; a second SIGTERM,
 * or SIGQUIT (the supervisor's second signal: two SIGTERMs close together
 * would arrive as one), closes everything at once. SIGUSR1 (reload) stops
 * accepting and lets sessions run on for reload_drain_timeout, then drains as
 * SIGTERM does. Sessions closed during a loop iteration are freed in an
 * ev_check watcher, after every callback that might still hold them has
 * returned.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <ev.h>

#include "curl_loop.h"
#include "http.h"
#include "dns.h"
#include "hook.h"
#include "postern_build.h"
#include "listener.h"
#include "log.h"
#include "loop_call.h"
#include "module.h"
#include "pool.h"
#include "server.h"
#include "services.h"
#include "smtp_session.h"
#include "spool.h"
#include "tls.h"

static struct {
    const struct config *cfg;
    ev_signal sigterm, sigquit, sigretire;
    ev_check reaper;
    ev_timer drain;
    double stop_started;   /* SIGTERM: transactions get drain_timeout */
    double retire_started; /* SIGUSR1: sessions get reload_drain_timeout */
    bool stopping, retiring;
} srv;

static void on_drain_tick(struct ev_loop *loop, ev_timer *w, int revents);

static void
on_reap(struct ev_loop *loop, ev_check *w, int revents)
{
    session_reap();
}

static void
server_stop_listening(struct ev_loop *loop)
{
    if (srv.retiring || srv.stopping)
        return;
    listeners_close();
    ev_timer_init(&srv.drain, on_drain_tick, 0., 0.1);
    ev_timer_again(loop, &srv.drain);
}

/* Stop: idle sessions get 421 now, the others after their transaction. */
static void
server_begin_stop(struct ev_loop *loop, const char *why)
{
    server_stop_listening(loop);
    srv.stopping = true;
    srv.stop_started = ev_now(loop);
    log_event(LOG_LEVEL_INFO, NULL, "draining", "reason=%s sessions=%u", why,
              session_count());
    session_drain();
}

static void
on_drain_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    double now = ev_now(loop);
    if (session_count() == 0 ||
        (srv.stopping && now - srv.stop_started > srv.cfg->drain_timeout)) {
        log_event(LOG_LEVEL_INFO, NULL, "stopping", "open_sessions=%u",
                  session_count());
        ev_break(loop, EVBREAK_ALL);
    } else if (!srv.stopping &&
               now - srv.retire_started > srv.cfg->reload_drain_timeout) {
        server_begin_stop(loop, "reload_drain_timeout");
    }
}

static void
on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    if (srv.stopping || w->signum == SIGQUIT) {
        /* second signal, or SIGQUIT: close every session now */
        if (!srv.stopping)
            server_begin_stop(loop, "signal");
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    server_begin_stop(loop, "signal");
}

/* Reload: a new generation of workers has taken over the listeners; this
 * one stops accepting and lets its sessions run to their end. */
static void
on_retire_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    if (srv.retiring || srv.stopping)
        return;
    server_stop_listening(loop);
    srv.retiring = true;
    srv.retire_started = ev_now(loop);
    log_event(LOG_LEVEL_INFO, NULL, "retiring", "sessions=%u", session_count());
}

/* One descriptor per client plus spool and store files: use what the
 * hard limit allows rather than the usual soft 1024. */
void
server_raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int
server_become_user(const struct config *cfg, bool check_only, char *err,
                   size_t errlen)
{
    if (!cfg->user)
        return 0;
    errno = 0;
    struct passwd *pw = getpwnam(cfg->user);
    if (!pw) {
        snprintf(err, errlen, "%s: $.user: no user named %s%s%s", cfg->source,
                 cfg->user, errno ? ": " : "", errno ? strerror(errno) : "");
        return -1;
    }
    if (check_only && geteuid() != 0)
        return 0; /* cannot switch, and has nothing to give up */
    if (setgroups(1, &pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 ||
        setuid(pw->pw_uid) != 0) {
        snprintf(err, errlen, "%s: $.user: cannot become %s: %s", cfg->source,
                 cfg->user, strerror(errno));
        return -1;
    }
    return 0;
}

int
server_spool_check(const struct config *cfg, char *err, size_t errlen)
{
    if (spool_prepare_dir(cfg->spool_dir) < 0) {
        snprintf(err, errlen, "%s: $.spool_dir: cannot create %s: %s",
                 cfg->source, cfg->spool_dir, strerror(errno));
        return -1;
    }
    if (spool_check_dir(cfg->spool_dir) < 0) {
        snprintf(err, errlen,
                 "%s: $.spool_dir: cannot create files in %s%s%s: %s",
                 cfg->source, cfg->spool_dir, cfg->user ? " as user " : "",
                 cfg->user ? cfg->user : "", strerror(errno));
        return -1;
    }
    return 0;
}

int
server_start(const struct config *cfg, struct module_set *modules, char *err,
             size_t errlen)
{
    struct ev_loop *loop = services_loop();

    srv.cfg = cfg;
    if (hook_chains_build(modules) < 0 ||
        pools_start(loop, cfg->spool_threads, cfg->pool_threads, modules) < 0) {
        snprintf(err, errlen, "out of memory at start-up");
        return -1;
    }
    if (dns_init(loop, &cfg->dns, err, errlen) < 0 ||
        curl_loop_init(loop, &cfg->http, err, errlen) < 0)
        return -1;
    ev_signal_init(&srv.sigterm, on_stop_signal, SIGTERM);
    ev_signal_init(&srv.sigquit, on_stop_signal, SIGQUIT);
    ev_signal_init(&srv.sigretire, on_retire_signal, SIGUSR1);
    ev_signal_start(loop, &srv.sigterm);
    ev_signal_start(loop, &srv.sigquit);
    ev_signal_start(loop, &srv.sigretire);
    ev_check_init(&srv.reaper, on_reap);
    ev_check_start(loop, &srv.reaper);
    ev_unref(loop); /* the reaper alone must not keep the loop running */
    return 0;
}

int
server_run(const struct config *cfg, struct module_set *modules)
{
    struct ev_loop *loop = services_loop();

    log_event(LOG_LEVEL_INFO, NULL, "started", "version=%s hostname=%s",
              POSTERN_VERSION, postern_log_value(cfg->hostname));
    ev_run(loop, 0);
    session_close_all("shutdown");
    session_reap();
    server_stop(modules);
    return 0;
}

void
server_stop(struct module_set *modules)
{
    struct ev_loop *loop = services_loop();

    if (srv.cfg) {
        ev_ref(loop);
        ev_check_stop(loop, &srv.reaper);
        ev_timer_stop(loop, &srv.drain);
        /* Stopping a watcher gives its signal back its default action,
         * which for these is to die: a stop signal the supervisor sends
         * while this worker cleans up (a retired worker at shutdown) must
         * not kill it. It is stopping already, so they are ignored. */
        sigset_t stop_signals;
        sigemptyset(&stop_signals);
        sigaddset(&stop_signals, SIGTERM);
        sigaddset(&stop_signals, SIGQUIT);
        sigaddset(&stop_signals, SIGUSR1);
        pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
        ev_signal_stop(loop, &srv.sigterm);
        ev_signal_stop(loop, &srv.sigquit);
        ev_signal_stop(loop, &srv.sigretire);
        signal(SIGTERM, SIG_IGN);
        signal(SIGQUIT, SIG_IGN);
        signal(SIGUSR1, SIG_IGN);
        srv.cfg = NULL;
    }
    /* Lookups and HTTP calls still running are told (modules still
     * exist), and the sessions orphaned meanwhile are freed. */
    curl_loop_shutdown();
    http_spares_free();
    dns_shutdown();
    session_reap();
    pools_stop(modules);
    session_reap();
    /* Loop calls queued until now run (their modules still exist); later
     * ones are refused. */
    loop_call_shutdown();
    session_reap();
    hook_chains_free();
    server_cleanup();
}

void
server_cleanup(void)
{
    listeners_close();
    spool_spares_free();
    tls_deinit();
}
