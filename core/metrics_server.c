/*
 * metrics_server.c - GET /metrics with libmicrohttpd (metrics_server.h).
 *
 * libmicrohttpd runs its own polling thread; this process never forks,
 * so a thread is safe here. The main thread waits for a stop signal.
 * Each scrape takes a snapshot of the shared counters (metrics.c) and
 * renders it (metrics_text.c); the spool's free space is read here.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <microhttpd.h>

#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "metrics_server.h"
#include "metrics_text.h"
#include "server.h"

#define METRICS_CONNECTIONS 16   /* scrapers at once */
#define METRICS_IDLE_TIMEOUT 30u /* seconds an idle HTTP connection stays */

int
metrics_socket_open(const struct config *cfg, char *err, size_t errlen)
{
    struct listener_config lc = {.address = cfg->metrics.address,
                                 .port = cfg->metrics.port};
    int fd = listener_socket_open(&lc, err, errlen);
    if (fd < 0) {
        char e[1024];
        snprintf(e, sizeof(e), "%s", err);
        snprintf(err, errlen, "%s: $.metrics: %s", cfg->source, e);
    }
    return fd;
}

static struct MHD_Response *
page_render(const struct config *cfg, unsigned *status)
{
    struct metrics_snapshot *snap = malloc(sizeof(*snap));
    struct metrics_text t = {0};
    struct metrics_extra x = {0};
    struct statvfs vfs;

    if (snap && metrics_snapshot_take(snap) == 0) {
        if (statvfs(cfg->spool_dir, &vfs) == 0) {
            x.have_spool_free = true;
            x.spool_free_bytes = (uint64_t)vfs.f_bavail * vfs.f_frsize;
        }
        if (metrics_text_render(&t, snap, &x) < 0)
            metrics_text_free(&t);
    }
    free(snap);
    if (!t.buf) {
        *status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        return MHD_create_response_from_buffer(0, (void *)"",
                                               MHD_RESPMEM_PERSISTENT);
    }
    *status = MHD_HTTP_OK;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(t.len, t.buf, MHD_RESPMEM_MUST_FREE);
    if (!r)
        metrics_text_free(&t);
    return r;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url,
           const char *method, const char *version, const char *upload_data,
           size_t *upload_data_size, void **con_cls)
{
    const struct config *cfg = cls;
    unsigned status;
    struct MHD_Response *r;
    (void)version;
    (void)upload_data;

    if (*upload_data_size != 0) {
        *upload_data_size = 0; /* a body is ignored */
        return MHD_YES;
    }
    (void)con_cls;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
        strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
        r = MHD_create_response_from_buffer(0, (void *)"",
                                            MHD_RESPMEM_PERSISTENT);
        if (r)
            MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    } else if (strcmp(url, "/metrics") != 0) {
        static const char body[] = "not found; try /metrics\n";
        status = MHD_HTTP_NOT_FOUND;
        r = MHD_create_response_from_buffer(sizeof(body) - 1, (void *)body,
                                            MHD_RESPMEM_PERSISTENT);
    } else {
        r = page_render(cfg, &status);
        if (r && status == MHD_HTTP_OK)
            MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                    METRICS_CONTENT_TYPE);
    }
    if (!r)
        return MHD_NO;
    enum MHD_Result rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

_Noreturn void
metrics_server_main(const struct config *cfg, int fd, pid_t supervisor)
{
    char err[1024];

    /* The supervisor gone (even by SIGKILL), this goes too. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != supervisor)
        _exit(1);
    if (server_become_user(cfg, false, err, sizeof(err)) < 0) {
        log_event(LOG_LEVEL_ERROR, NULL, "metrics_failed", "error=%s",
                  postern_log_value(err));
        _exit(1);
    }
    /* Every signal stays blocked (the fork left them so), in the MHD
     * thread too; this thread takes the ones that stop it. */
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
        on_request, (void *)cfg, MHD_OPTION_LISTEN_SOCKET, fd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)METRICS_CONNECTIONS,
        MHD_OPTION_CONNECTION_TIMEOUT, METRICS_IDLE_TIMEOUT, MHD_OPTION_END);
    if (!d) {
        log_event(LOG_LEVEL_ERROR, NULL, "metrics_failed",
                  "error=cannot_start_http_server");
        _exit(1);
    }
    log_event(LOG_LEVEL_INFO, NULL, "metrics_serving", "address=%s port=%d",
              postern_log_value(cfg->metrics.address), cfg->metrics.port);
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGQUIT);
    sigaddset(&stop, SIGUSR1);
    int signo = 0;
    while (sigwait(&stop, &signo) != 0)
        ;
    /* No MHD_stop_daemon(): it shuts the listening socket down, and that
     * socket is the supervisor's too, kept for the next metrics process
     * (scrapes wait in its queue meanwhile). A scrape in progress is cut. */
    _exit(0);
}
