/*
 * server.c - start-up, the loop and shutdown.
 *
 * SIGTERM/SIGINT stop accepting and let sessions finish (up to a drain
 * timeout, then they are closed); SIGHUP reloads the TLS certificates.
 * Sessions closed during a loop iteration are freed in an ev_check
 * watcher, after every callback that might still hold them has returned.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
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
#include "shared_state.h"
#include "smtp_session.h"
#include "spool.h"
#include "tls.h"

#define DRAIN_TIMEOUT 30.0

static struct {
    ev_signal sigterm, sigint, sighup;
    ev_check reaper;
    ev_timer drain;
    double drain_started;
    bool draining;
} srv;

static void
on_reap(struct ev_loop *loop, ev_check *w, int revents)
{
    session_reap();
}

static void
on_drain_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    if (session_count() == 0 ||
        ev_now(loop) - srv.drain_started > DRAIN_TIMEOUT) {
        log_event(LOG_LEVEL_INFO, NULL, "stopping", "open_sessions=%u",
                  session_count());
        ev_break(loop, EVBREAK_ALL);
    }
}

static void
on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    if (srv.draining) {
        ev_break(loop, EVBREAK_ALL); /* second signal: now */
        return;
    }
    srv.draining = true;
    srv.drain_started = ev_now(loop);
    log_event(LOG_LEVEL_INFO, NULL, "draining", "signal=%d sessions=%u",
              w->signum, session_count());
    listeners_close();
    session_drain();
    ev_timer_init(&srv.drain, on_drain_tick, 0., 0.1);
    ev_timer_again(loop, &srv.drain);
}

static void
on_reload_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    char err[512];
    if (tls_reload(err, sizeof(err)) < 0)
        log_event(LOG_LEVEL_ERROR, NULL, "reload_failed", "error=%s",
                  postern_log_value(err));
    else
        log_event(LOG_LEVEL_INFO, NULL, "reloaded", "what=tls");
}

/* One descriptor per client plus spool and store files: use what the
 * hard limit allows rather than the usual soft 1024. */
static void
raise_fd_limit(void)
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

/* Check the spool works for the user postern now runs as. */
static int
spool_check(const struct config *cfg)
{
    if (spool_prepare_dir(cfg->spool_dir) < 0) {
        fprintf(stderr, "postern: %s: $.spool_dir: cannot create %s: %s\n",
                cfg->source, cfg->spool_dir, strerror(errno));
        return -1;
    }
    if (spool_check_dir(cfg->spool_dir) < 0) {
        fprintf(stderr,
                "postern: %s: $.spool_dir: cannot create files in %s%s%s: "
                "%s\n",
                cfg->source, cfg->spool_dir, cfg->user ? " as user " : "",
                cfg->user ? cfg->user : "", strerror(errno));
        return -1;
    }
    return 0;
}

int
server_prepare(const struct config *cfg)
{
    char err[1024];

    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    /* Connection and rate limits shared by all processes; the supervisor
     * makes this before forking workers once it exists. */
    if (shared_state_create(cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "postern: %s\n", err);
        return -1;
    }
    /* Keys and privileged ports while still root; then the user. */
    if (tls_init(cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "postern: %s\n", err);
        return -1;
    }
    if (listeners_open(services_loop(), cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "postern: %s\n", err);
        return -1;
    }
    if (server_become_user(cfg, false, err, sizeof(err)) < 0) {
        fprintf(stderr, "postern: %s\n", err);
        return -1;
    }
    return spool_check(cfg);
}

int
server_run(const struct config *cfg, struct module_set *modules)
{
    struct ev_loop *loop = services_loop();
    int rc = 1;

    char err[512];

    if (hook_chains_build(modules) < 0 ||
        pools_start(loop, cfg->spool_threads, cfg->pool_threads, modules) < 0) {
        fprintf(stderr, "postern: out of memory at start-up\n");
        goto out;
    }
    if (dns_init(loop, &cfg->dns, err, sizeof(err)) < 0 ||
        curl_loop_init(loop, &cfg->http, err, sizeof(err)) < 0) {
        fprintf(stderr, "postern: %s\n", err);
        goto out;
    }

    ev_signal_init(&srv.sigterm, on_stop_signal, SIGTERM);
    ev_signal_init(&srv.sigint, on_stop_signal, SIGINT);
    ev_signal_init(&srv.sighup, on_reload_signal, SIGHUP);
    ev_signal_start(loop, &srv.sigterm);
    ev_signal_start(loop, &srv.sigint);
    ev_signal_start(loop, &srv.sighup);
    ev_check_init(&srv.reaper, on_reap);
    ev_check_start(loop, &srv.reaper);
    ev_unref(loop); /* the reaper alone must not keep the loop running */

    log_event(LOG_LEVEL_INFO, NULL, "started", "version=%s hostname=%s",
              POSTERN_VERSION, postern_log_value(cfg->hostname));
    ev_run(loop, 0);
    rc = 0;
    session_close_all("shutdown");
    session_reap();

    ev_ref(loop);
    ev_check_stop(loop, &srv.reaper);
    ev_timer_stop(loop, &srv.drain);
    ev_signal_stop(loop, &srv.sigterm);
    ev_signal_stop(loop, &srv.sigint);
    ev_signal_stop(loop, &srv.sighup);
out:
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
    return rc;
}

void
server_cleanup(void)
{
    listeners_close();
    spool_spares_free();
    tls_deinit();
    shared_state_destroy();
}
