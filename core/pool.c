/*
 * pool.c - a fixed set of worker threads with a job queue and a completion
 * queue. postern_pool_submit() (public, services.h) appends a job; a worker
 * runs job->work, moves the job to the completion queue and signals the
 * loop; the loop runs job->done. done always runs, exactly once.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "postern/services.h"

#include "pool.h"

struct pool_job {
    struct pool_job *next;
    postern_work_fn work;
    postern_done_fn done;
    void *arg;
};

struct job_queue {
    struct pool_job *head, *tail;
};

static struct {
    struct ev_loop *loop;
    ev_async wake;
    pthread_t *threads;
    unsigned n_threads;
    pthread_mutex_t lock;
    pthread_cond_t more;
    struct job_queue todo;
    struct job_queue finished;
    unsigned in_flight; /* submitted, done not yet run */
    bool stopping;
} pool;

static void
queue_push(struct job_queue *q, struct pool_job *job)
{
    job->next = NULL;
    if (q->tail)
        q->tail->next = job;
    else
        q->head = job;
    q->tail = job;
}

static struct pool_job *
queue_take_all(struct job_queue *q)
{
    struct pool_job *all = q->head;
    q->head = q->tail = NULL;
    return all;
}

static void *
pool_worker(void *unused)
{
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        while (!pool.todo.head && !pool.stopping)
            pthread_cond_wait(&pool.more, &pool.lock);
        struct pool_job *job = pool.todo.head;
        if (!job)
            break; /* stopping and nothing left */
        pool.todo.head = job->next;
        if (!pool.todo.head)
            pool.todo.tail = NULL;
        pthread_mutex_unlock(&pool.lock);

        if (job->work)
            job->work(job->arg);

        pthread_mutex_lock(&pool.lock);
        queue_push(&pool.finished, job);
        ev_async_send(pool.loop, &pool.wake);
    }
    pthread_mutex_unlock(&pool.lock);
    return NULL;
}

static void
pool_run_completions(void)
{
    pthread_mutex_lock(&pool.lock);
    struct pool_job *job = queue_take_all(&pool.finished);
    pthread_mutex_unlock(&pool.lock);

    while (job) {
        struct pool_job *next = job->next;
        pool.in_flight--;
        if (job->done)
            job->done(job->arg);
        free(job);
        job = next;
    }
}

static void
pool_on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    pool_run_completions();
}

int
pool_start(struct ev_loop *loop, unsigned threads)
{
    pool.loop = loop;
    pool.stopping = false;
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.more, NULL);
    ev_async_init(&pool.wake, pool_on_wake);
    ev_async_start(loop, &pool.wake);
    ev_unref(loop); /* an idle pool must not keep the loop alive */
    pool.threads = calloc(threads, sizeof(*pool.threads));
    if (!pool.threads)
        return -1;
    for (pool.n_threads = 0; pool.n_threads < threads; pool.n_threads++)
        if (pthread_create(&pool.threads[pool.n_threads], NULL, pool_worker,
                           NULL) != 0)
            break;
    return pool.n_threads > 0 ? 0 : -1;
}

void
pool_stop(void)
{
    if (!pool.threads)
        return;
    pthread_mutex_lock(&pool.lock);
    pool.stopping = true;
    pthread_cond_broadcast(&pool.more);
    pthread_mutex_unlock(&pool.lock);
    for (unsigned i = 0; i < pool.n_threads; i++)
        pthread_join(pool.threads[i], NULL);
    pool_run_completions();
    free(pool.threads);
    pool.threads = NULL;
    ev_ref(pool.loop);
    ev_async_stop(pool.loop, &pool.wake);
}

int
postern_pool_submit(postern_work_fn work, postern_done_fn done, void *arg)
{
    struct pool_job *job;

    if (!pool.threads || pool.stopping)
        return -1;
    job = malloc(sizeof(*job));
    if (!job)
        return -1;
    job->work = work;
    job->done = done;
    job->arg = arg;
    pool.in_flight++;
    pthread_mutex_lock(&pool.lock);
    queue_push(&pool.todo, job);
    pthread_cond_signal(&pool.more);
    pthread_mutex_unlock(&pool.lock);
    return 0;
}
