/*
 * forward_workers.c - the module's own worker threads: a FIFO of jobs
 * under a mutex and a condition variable, each thread with one libcurl
 * easy handle kept between its jobs (so its connections to next hops are
 * kept alive and reused), and a pipe that brings finished jobs back to
 * the loop, watched with postern_io_start(). A job goes to the thread idle
 * most recently (its connection to the next hop is the likeliest still
 * open); when none is idle, jobs wait in order.
 *
 * The loop side also keeps every job it has not finished in a list, and
 * while there are some, a timer looks for contexts the client left
 * (postern_ctx_orphaned(), on the loop only) and raises their job's abort
 * flag: a queued job is then dropped without connecting, a running one is
 * aborted by its progress callback, without the final dot.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "forward.h"

#define FW_ORPHAN_CHECK 0.25 /* seconds */

/* One thread. An idle one waits on its own condition variable for a job
 * handed to it directly. */
struct fw_thread {
    struct fw_workers *w;
    pthread_t id;
    pthread_cond_t wake;
    struct fw_job *job;          /* under lock: handed over by submit */
    struct fw_thread *next_idle; /* under lock */
    struct fw_sockets sockets;   /* its handle's */
};

struct fw_workers {
    pthread_mutex_t lock;
    struct fw_job *queue, *queue_tail; /* under lock: no thread was idle */
    struct fw_job *done, *done_tail;   /* under lock */
    /* Under lock: the idle threads, the last one idle first, so that jobs
     * one after the other go to one thread and reuse its connection. */
    struct fw_thread *idle;
    atomic_bool stop;
    struct fw_thread *threads;
    size_t n_threads;
    int pipe[2]; /* workers write a byte after a job; the loop drains */
    /* The loop's. */
    postern_io *io;
    postern_timer *timer;
    struct fw_job *live; /* submitted, not yet handed to done() */
    fw_done_fn done_fn;
    void *done_arg;
};

static void
fw_append(struct fw_job **head, struct fw_job **tail, struct fw_job *job)
{
    job->next = NULL;
    if (*tail != NULL)
        (*tail)->next = job;
    else
        *head = job;
    *tail = job;
}

/* Lock held: the next job of thread t, or NULL when postern stops. */
static struct fw_job *
fw_next_job(struct fw_workers *w, struct fw_thread *t)
{
    struct fw_job *job = w->queue;

    if (atomic_load(&w->stop))
        return NULL;
    if (job != NULL) {
        w->queue = job->next;
        if (w->queue == NULL)
            w->queue_tail = NULL;
        return job;
    }
    t->next_idle = w->idle;
    w->idle = t;
    while (!atomic_load(&w->stop) && t->job == NULL)
        pthread_cond_wait(&t->wake, &w->lock);
    job = t->job; /* submit took t off the idle list */
    t->job = NULL;
    if (job == NULL) {
        for (struct fw_thread **p = &w->idle; *p != NULL; p = &(*p)->next_idle)
            if (*p == t) {
                *p = t->next_idle;
                break;
            }
    }
    return job;
}

static void *
fw_worker(void *arg)
{
    struct fw_thread *t = arg;
    struct fw_workers *w = t->w;
    CURL *easy = NULL; /* made by the first job */
    struct fw_job *job;

    pthread_mutex_lock(&w->lock);
    while ((job = fw_next_job(w, t)) != NULL) {
        pthread_mutex_unlock(&w->lock);
        if (!atomic_load(&job->abort))
            fw_transfer_run(job, &easy, &t->sockets, &w->stop);
        pthread_mutex_lock(&w->lock);
        fw_append(&w->done, &w->done_tail, job);
        char byte = 1;
        /* A full pipe (EAGAIN) already says there is something to
         * collect. */
        if (write(w->pipe[1], &byte, 1) < 0)
            continue;
    }
    pthread_mutex_unlock(&w->lock);
    if (easy != NULL)
        fw_transfer_drop(easy, &t->sockets);
    return NULL;
}

static void
fw_live_remove(struct fw_workers *w, struct fw_job *job)
{
    if (job->live_prev != NULL)
        job->live_prev->live_next = job->live_next;
    else
        w->live = job->live_next;
    if (job->live_next != NULL)
        job->live_next->live_prev = job->live_prev;
    job->live_prev = job->live_next = NULL;
}

/* Loop: jobs are back. */
static void
fw_collect(int fd, int events, void *arg)
{
    struct fw_workers *w = arg;
    char buf[256];
    struct fw_job *done;

    (void)events;
    while (read(fd, buf, sizeof buf) > 0)
        ;
    pthread_mutex_lock(&w->lock);
    done = w->done;
    w->done = w->done_tail = NULL;
    pthread_mutex_unlock(&w->lock);
    while (done != NULL) {
        struct fw_job *job = done;
        done = job->next;
        fw_live_remove(w, job);
        w->done_fn(job, w->done_arg);
    }
}

static void fw_arm_timer(struct fw_workers *w);

/* Loop: the client may have left; the workers cannot ask. */
static void
fw_check_orphans(void *arg)
{
    struct fw_workers *w = arg;

    w->timer = NULL;
    for (struct fw_job *job = w->live; job != NULL; job = job->live_next)
        if (postern_ctx_orphaned(job->ctx))
            atomic_store(&job->abort, true);
    fw_arm_timer(w);
}

static void
fw_arm_timer(struct fw_workers *w)
{
    if (w->timer == NULL && w->live != NULL)
        w->timer = postern_timer_start(FW_ORPHAN_CHECK, fw_check_orphans, w);
}

static int
fw_nonblocking_pipe(int fds[2])
{
    if (pipe(fds) != 0)
        return -1;
    for (int i = 0; i < 2; i++)
        if (fcntl(fds[i], F_SETFD, FD_CLOEXEC) != 0 ||
            fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK) != 0) {
            int err = errno;
            close(fds[0]);
            close(fds[1]);
            errno = err;
            return -1;
        }
    return 0;
}

struct fw_workers *
fw_workers_start(size_t n, fw_done_fn done, void *arg)
{
    struct fw_workers *w = calloc(1, sizeof *w);
    int err;

    if (w == NULL)
        return NULL;
    w->done_fn = done;
    w->done_arg = arg;
    atomic_init(&w->stop, false);
    if ((w->threads = calloc(n, sizeof *w->threads)) == NULL) {
        free(w);
        errno = ENOMEM;
        return NULL;
    }
    if (fw_nonblocking_pipe(w->pipe) != 0) {
        err = errno;
        free(w->threads);
        free(w);
        errno = err;
        return NULL;
    }
    pthread_mutex_init(&w->lock, NULL);
    for (; w->n_threads < n; w->n_threads++) {
        struct fw_thread *t = &w->threads[w->n_threads];
        t->w = w;
        pthread_cond_init(&t->wake, NULL);
        err = pthread_create(&t->id, NULL, fw_worker, t);
        if (err != 0) {
            pthread_cond_destroy(&t->wake);
            fw_workers_stop(w);
            errno = err;
            return NULL;
        }
    }
    return w;
}

int
fw_workers_submit(struct fw_workers *w, struct fw_job *job)
{
    /* The loop runs by now (not yet when create() runs). */
    if (w->io == NULL && (w->io = postern_io_start(w->pipe[0], POSTERN_IO_READ,
                                                   fw_collect, w)) == NULL)
        return -1;
    atomic_init(&job->abort, false);
    job->live_prev = NULL;
    job->live_next = w->live;
    if (w->live != NULL)
        w->live->live_prev = job;
    w->live = job;
    fw_arm_timer(w);
    pthread_mutex_lock(&w->lock);
    struct fw_thread *t = w->idle;
    if (t != NULL) {
        w->idle = t->next_idle;
        t->job = job;
        pthread_cond_signal(&t->wake);
    } else {
        fw_append(&w->queue, &w->queue_tail, job);
    }
    pthread_mutex_unlock(&w->lock);
    return 0;
}

void
fw_workers_stop(struct fw_workers *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    atomic_store(&w->stop, true); /* aborts the running transfers too */
    for (size_t i = 0; i < w->n_threads; i++)
        pthread_cond_signal(&w->threads[i].wake);
    pthread_mutex_unlock(&w->lock);
    for (size_t i = 0; i < w->n_threads; i++) {
        pthread_join(w->threads[i].id, NULL);
        pthread_cond_destroy(&w->threads[i].wake);
    }
    /* postern stops: the sessions are closed, their contexts orphaned, and
     * the core frees those after the modules. Nobody waits for a reply. */
    while (w->live != NULL) {
        struct fw_job *job = w->live;
        fw_live_remove(w, job);
        fw_job_free(job);
    }
    postern_io_stop(w->io);
    postern_timer_cancel(w->timer);
    close(w->pipe[0]);
    close(w->pipe[1]);
    pthread_mutex_destroy(&w->lock);
    free(w->threads);
    free(w);
}
