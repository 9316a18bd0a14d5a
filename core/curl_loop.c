/*
 * curl_loop.c - libcurl's multi-socket interface driven by libev.
 *
 * libcurl says which sockets it wants watched (CURLMOPT_SOCKETFUNCTION):
 * each gets an ev_io, stored with curl_multi_assign(); one ev_timer
 * follows CURLMOPT_TIMERFUNCTION. Both call curl_multi_socket_action(),
 * then finished transfers are collected with curl_multi_info_read().
 *
 * Three lists hold the jobs: the FIFO queue (waiting for one of the
 * max_in_flight slots), running (in the multi) and ready (outcome known,
 * callback not yet run). A zero-delay timer ("kick") starts queued jobs and
 * delivers the ready ones, so that no owner callback runs inside
 * curl_job_start() or inside libcurl, and no curl_multi_* call is made
 * from inside a libcurl callback (libcurl refuses recursive calls).
 *
 * An orphaned hook call or a shutdown makes a running job ready at once;
 * it leaves the multi when it is delivered (or when libcurl reports it
 * done first). Owners stop feeding it meanwhile (see core/http.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "curl_loop.h"
#include "log.h"

struct curl_io {
    ev_io w;
    struct curl_io *prev, *next;
};

struct job_list {
    struct curl_job *head, *tail;
    size_t n;
};

static struct {
    bool global_done;
    bool up;
    struct ev_loop *loop;
    CURLM *multi;
    struct http_config cfg;
    ev_timer curl_timer; /* libcurl's own timeouts */
    ev_timer kick;       /* zero delay: start queued, deliver ready */
    struct curl_io *ios;
    struct job_list queue, running, ready, dropped;
    size_t in_multi; /* jobs in the multi (running, or ready not yet out) */
    int in_curl;     /* inside curl_multi_socket_action() */
} cl;

/* --- lists --- */

static void
list_push(struct job_list *l, struct curl_job *j)
{
    j->next = NULL;
    j->prev = l->tail;
    if (l->tail)
        l->tail->next = j;
    else
        l->head = j;
    l->tail = j;
    l->n++;
}

static void
list_unlink(struct job_list *l, struct curl_job *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        l->head = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else
        l->tail = j->prev;
    j->prev = j->next = NULL;
    l->n--;
}

static struct job_list *
list_of(struct curl_job *j)
{
    switch (j->state) {
    case CURL_JOB_QUEUED:
        return &cl.queue;
    case CURL_JOB_RUNNING:
        return &cl.running;
    case CURL_JOB_READY:
        return &cl.ready;
    case CURL_JOB_DROPPED:
        return &cl.dropped;
    default:
        return NULL;
    }
}

static void
job_move(struct curl_job *j, enum curl_job_state to)
{
    struct job_list *from = list_of(j);
    if (from)
        list_unlink(from, j);
    j->state = to;
    struct job_list *dest = list_of(j);
    if (dest)
        list_push(dest, j);
}

static void
kick(void)
{
    if (cl.loop && !ev_is_active(&cl.kick))
        ev_timer_start(cl.loop, &cl.kick);
}

/* Take the easy handle out of the multi; never inside libcurl. */
static void
multi_remove(struct curl_job *j)
{
    if (!j->in_multi)
        return;
    curl_multi_remove_handle(cl.multi, j->easy);
    j->in_multi = false;
    cl.in_multi--;
}

/*
 * Take out a transfer libcurl has not finished (cancelled, or postern
 * stopping). libcurl then ends it as if it had gone well: for an SMTP
 * upload its smtp_done() sends the final dot and waits for the reply, so
 * the next hop would accept the part of the message it got. Without the
 * recipient list libcurl skips that and closes the connection, and the
 * next hop drops the half message (libcurl 7.88 lib/smtp.c).
 */
static void
multi_abort(struct curl_job *j)
{
    if (j->in_multi)
        curl_easy_setopt(j->easy, CURLOPT_MAIL_RCPT, (struct curl_slist *)NULL);
    multi_remove(j);
}

/* The job has its outcome (from anywhere): queue its delivery. */
static void
job_ready(struct curl_job *j, CURLcode result, bool cancelled)
{
    if (j->state == CURL_JOB_READY || j->state == CURL_JOB_DROPPED)
        return; /* the first outcome stands */
    ev_timer_stop(cl.loop, &j->timer);
    j->result = cancelled ? CURLE_ABORTED_BY_CALLBACK : result;
    j->cancelled = cancelled;
    job_move(j, CURL_JOB_READY);
    kick();
}

/* --- libcurl on the loop --- */

static void
collect_done(void)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(cl.multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result;
        struct curl_job *j = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&j);
        if (!j)
            continue;
        multi_remove(j);
        if (j->state == CURL_JOB_RUNNING)
            job_ready(j, result, false);
    }
}

static void
socket_action(curl_socket_t fd, int events)
{
    int running;
    cl.in_curl++;
    curl_multi_socket_action(cl.multi, fd, events, &running);
    cl.in_curl--;
    collect_done();
    if (cl.dropped.n || cl.ready.n ||
        (cl.queue.n && cl.in_multi < cl.cfg.max_in_flight))
        kick();
}

static void
on_curl_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    socket_action(CURL_SOCKET_TIMEOUT, 0);
}

static void
on_curl_io(struct ev_loop *loop, ev_io *w, int revents)
{
    int events = ((revents & EV_READ) ? CURL_CSELECT_IN : 0) |
                 ((revents & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    socket_action(w->fd, events);
}

static int
on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp,
               void *socketp)
{
    struct curl_io *io = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (io) {
            ev_io_stop(cl.loop, &io->w);
            if (io->prev)
                io->prev->next = io->next;
            else
                cl.ios = io->next;
            if (io->next)
                io->next->prev = io->prev;
            free(io);
            curl_multi_assign(cl.multi, fd, NULL);
        }
        return 0;
    }
    if (!io) {
        if (!(io = calloc(1, sizeof(*io)))) {
            log_event(LOG_LEVEL_ERROR, NULL, "http",
                      "error=\"out of memory watching a socket\"");
            return -1; /* libcurl fails the transfer */
        }
        ev_init(&io->w, on_curl_io);
        io->next = cl.ios;
        if (cl.ios)
            cl.ios->prev = io;
        cl.ios = io;
        curl_multi_assign(cl.multi, fd, io);
    }
    int events = ((what & CURL_POLL_IN) ? EV_READ : 0) |
                 ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    ev_io_stop(cl.loop, &io->w);
    ev_io_set(&io->w, fd, events);
    ev_io_start(cl.loop, &io->w);
    return 0;
}

static int
on_curl_timer_set(CURLM *multi, long timeout_ms, void *userp)
{
    ev_timer_stop(cl.loop, &cl.curl_timer);
    if (timeout_ms >= 0) {
        ev_timer_set(&cl.curl_timer, timeout_ms / 1000.0, 0.);
        ev_timer_start(cl.loop, &cl.curl_timer);
    }
    return 0;
}

/* --- starting, delivering --- */

static void
job_begin(struct curl_job *j)
{
    if (j->deadline > 0) {
        double left = j->deadline - ev_now(cl.loop);
        if (left <= 0) {
            job_ready(j, CURLE_OPERATION_TIMEDOUT, false);
            return;
        }
        if (j->set_timeout) {
            long ms = (long)(left * 1000);
            curl_easy_setopt(j->easy, CURLOPT_TIMEOUT_MS, ms > 0 ? ms : 1L);
        }
    }
    ev_timer_stop(cl.loop, &j->timer);
    CURLMcode mc = curl_multi_add_handle(cl.multi, j->easy);
    if (mc != CURLM_OK) {
        log_event(LOG_LEVEL_WARNING, NULL, "http", "error=%s",
                  postern_log_value(curl_multi_strerror(mc)));
        job_ready(j,
                  mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY
                                            : CURLE_FAILED_INIT,
                  false);
        return;
    }
    j->in_multi = true;
    cl.in_multi++;
    job_move(j, CURL_JOB_RUNNING);
}

static void
job_deliver(struct curl_job *j)
{
    list_unlink(&cl.ready, j);
    j->state = CURL_JOB_IDLE;
    multi_abort(j);
    hook_work_detach(&j->work);
    curl_easy_setopt(j->easy, CURLOPT_PRIVATE, (void *)NULL);
    j->done(j, j->result, j->cancelled);
}

static void
on_kick(struct ev_loop *loop, ev_timer *w, int revents)
{
    while (cl.dropped.head) {
        struct curl_job *j = cl.dropped.head;
        list_unlink(&cl.dropped, j);
        j->state = CURL_JOB_IDLE;
        multi_abort(j);
        if (j->release)
            j->release(j);
    }
    /* Deliver what was ready when this began: later ones wait a turn. */
    size_t n = cl.ready.n;
    while (n-- > 0 && cl.ready.head)
        job_deliver(cl.ready.head);
    while (cl.queue.head && cl.in_multi < cl.cfg.max_in_flight)
        job_begin(cl.queue.head);
    if (cl.ready.n)
        kick();
}

static void
on_queue_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct curl_job *j =
        (struct curl_job *)((char *)w - offsetof(struct curl_job, timer));
    if (j->state == CURL_JOB_QUEUED)
        job_ready(j, CURLE_OPERATION_TIMEDOUT, false);
}

static void
on_abandon(struct hook_work *w)
{
    struct curl_job *j =
        (struct curl_job *)((char *)w - offsetof(struct curl_job, work));
    job_ready(j, CURLE_ABORTED_BY_CALLBACK, true);
}

/* --- the interface --- */

int
curl_job_start(struct curl_job *j, const postern_ctx *ctx)
{
    if (!cl.up || !j->easy || !j->done)
        return -1;
    j->state = CURL_JOB_IDLE;
    j->in_multi = false;
    j->cancelled = false;
    j->result = CURLE_OK;
    j->prev = j->next = NULL;
    j->deadline = j->timeout > 0 ? ev_now(cl.loop) + j->timeout : 0;
    memset(&j->work, 0, sizeof(j->work));
    j->work.abandon = on_abandon;
    ev_timer_init(&j->timer, on_queue_timeout, j->timeout > 0 ? j->timeout : 0,
                  0.);
    curl_easy_setopt(j->easy, CURLOPT_PRIVATE, (void *)j);
    job_move(j, CURL_JOB_QUEUED);
    if (ctx && hook_work_attach(ctx, &j->work) < 0) {
        job_ready(j, CURLE_ABORTED_BY_CALLBACK, true);
        return 0;
    }
    if (j->timeout > 0)
        ev_timer_start(cl.loop, &j->timer);
    kick();
    return 0;
}

void
curl_job_cancel(struct curl_job *j)
{
    if (!j || j->state == CURL_JOB_IDLE || j->state == CURL_JOB_DROPPED)
        return;
    ev_timer_stop(cl.loop, &j->timer);
    hook_work_detach(&j->work);
    if (j->in_multi && cl.in_curl) {
        /* libcurl would refuse the removal now: after it returns. */
        job_move(j, CURL_JOB_DROPPED);
        kick();
        return;
    }
    job_move(j, CURL_JOB_IDLE);
    multi_abort(j);
    curl_easy_setopt(j->easy, CURLOPT_PRIVATE, (void *)NULL);
    if (j->release)
        j->release(j);
}

size_t
curl_loop_running(void)
{
    return cl.in_multi;
}

size_t
curl_loop_queued(void)
{
    return cl.queue.n;
}

bool
curl_loop_up(void)
{
    return cl.up;
}

const struct http_config *
curl_loop_config(void)
{
    return cl.loop ? &cl.cfg : NULL;
}

int
curl_loop_global_init(char *err, size_t errlen)
{
    if (cl.global_done)
        return 0;
    CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "http: cannot start libcurl: %s",
                 curl_easy_strerror(rc));
        return -1;
    }
    cl.global_done = true;
    return 0;
}

int
curl_loop_init(struct ev_loop *loop, const struct http_config *cfg, char *err,
               size_t errlen)
{
    if (curl_loop_global_init(err, errlen) < 0)
        return -1;
    if (!(cl.multi = curl_multi_init())) {
        snprintf(err, errlen, "http: cannot start libcurl's multi handle");
        return -1;
    }
    cl.loop = loop;
    cl.cfg = *cfg;
    if (cfg->ca_file && !(cl.cfg.ca_file = strdup(cfg->ca_file))) {
        snprintf(err, errlen, "http: out of memory");
        curl_multi_cleanup(cl.multi);
        cl.multi = NULL;
        return -1;
    }
    if (cl.cfg.max_in_flight == 0)
        cl.cfg.max_in_flight = 1;
    curl_multi_setopt(cl.multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(cl.multi, CURLMOPT_TIMERFUNCTION, on_curl_timer_set);
    /* Reuse connections, multiplex HTTP/2 streams on one. */
    curl_multi_setopt(cl.multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    long maxconnects = (long)cl.cfg.max_in_flight * 2;
    curl_multi_setopt(cl.multi, CURLMOPT_MAXCONNECTS,
                      maxconnects < 16 ? 16L : maxconnects);
    ev_init(&cl.curl_timer, on_curl_timer);
    ev_timer_init(&cl.kick, on_kick, 0., 0.);
    cl.up = true;
    return 0;
}

void
curl_loop_shutdown(void)
{
    if (!cl.up)
        return;
    while (cl.queue.head)
        job_ready(cl.queue.head, CURLE_ABORTED_BY_CALLBACK, true);
    while (cl.running.head)
        job_ready(cl.running.head, CURLE_ABORTED_BY_CALLBACK, true);
    cl.up = false; /* no new jobs from the callbacks below */
    while (cl.dropped.head) {
        struct curl_job *j = cl.dropped.head;
        list_unlink(&cl.dropped, j);
        j->state = CURL_JOB_IDLE;
        multi_abort(j);
        if (j->release)
            j->release(j);
    }
    while (cl.ready.head)
        job_deliver(cl.ready.head);
    ev_timer_stop(cl.loop, &cl.kick);
    curl_multi_cleanup(cl.multi); /* closes the kept connections */
    cl.multi = NULL;
    ev_timer_stop(cl.loop, &cl.curl_timer);
    while (cl.ios) {
        struct curl_io *io = cl.ios;
        cl.ios = io->next;
        ev_io_stop(cl.loop, &io->w);
        free(io);
    }
    free(cl.cfg.ca_file);
    cl.cfg.ca_file = NULL;
}
