/*
 * pool.c - fixed sets of worker threads, each with a job queue and a
 * completion queue (see pool.h for which pools exist). A worker runs
 * job->work in the module scope the job was submitted from, moves the job
 * to the completion queue and signals the loop; the loop runs job->done
 * in the same scope. done always runs, exactly once.
 *
 * The queue of jobs and the queue of completions have a lock each, and a
 * submit wakes a thread only when one is idle, after letting go of the
 * lock: a woken thread that found the lock still held would sleep again
 * on it at once, and a lock shared by both queues had every finishing
 * thread contend with the submitting loop. Each of those waits is a
 * futex call and a context switch, per job.
 *
 * Pool threads run as SCHED_BATCH (see pool_worker()): under store_file
 * load on 2 CPUs, the loop spent a sixth of its time preempted by the
 * threads it had just woken, with every session waiting for it.
 */
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>

#include "postern/services.h"

#include "module.h"
#include "module_scope.h"
#include "pool.h"

struct pool_job {
    struct pool_job *next;
    postern_work_fn work;
    postern_done_fn done;
    void *arg;
    const struct module_instance *scope;
};

struct job_queue {
    struct pool_job *head, *tail;
};

struct pool {
    struct ev_loop *loop;
    ev_async wake;
    pthread_t *threads;
    unsigned n_threads;
    pthread_mutex_t lock; /* todo, idle, stopping */
    pthread_cond_t more;
    struct job_queue todo;
    unsigned idle; /* threads waiting on more */
    bool stopping;
    pthread_mutex_t finished_lock;
    struct job_queue finished;
    struct pool *next; /* every pool, for pools_stop() */
};

static struct pool *pools;       /* all of them */
static struct pool *core_pool;   /* the spool */
static struct pool *shared_pool; /* modules without a pool of their own */

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
pool_worker(void *arg)
{
    struct pool *p = arg;

    /* A thread the loop wakes waits for a free CPU rather than taking the
     * loop's (SCHED_BATCH: no preemption at wake-up); the loop serves
     * every session and must not sit preempted mid-turn. Best effort. */
    struct sched_param batch = {0};
    (void)pthread_setschedparam(pthread_self(), SCHED_BATCH, &batch);
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->todo.head && !p->stopping) {
            p->idle++;
            pthread_cond_wait(&p->more, &p->lock);
            p->idle--;
        }
        struct pool_job *job = p->todo.head;
        if (!job)
            break; /* stopping and nothing left */
        p->todo.head = job->next;
        if (!p->todo.head)
            p->todo.tail = NULL;
        pthread_mutex_unlock(&p->lock);

        if (job->work) {
            const struct module_instance *was = module_scope_enter(job->scope);
            job->work(job->arg);
            module_scope_leave(was);
        }

        pthread_mutex_lock(&p->finished_lock);
        queue_push(&p->finished, job);
        pthread_mutex_unlock(&p->finished_lock);
        /* The watcher lives until every thread is joined (pools_stop). */
        ev_async_send(p->loop, &p->wake);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static void
pool_run_completions(struct pool *p)
{
    pthread_mutex_lock(&p->finished_lock);
    struct pool_job *job = queue_take_all(&p->finished);
    pthread_mutex_unlock(&p->finished_lock);

    while (job) {
        struct pool_job *next = job->next;
        if (job->done) {
            const struct module_instance *was = module_scope_enter(job->scope);
            job->done(job->arg);
            module_scope_leave(was);
        }
        free(job);
        job = next;
    }
}

static void
pool_on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    pool_run_completions(
        (struct pool *)((char *)w - offsetof(struct pool, wake)));
}

static struct pool *
pool_new(struct ev_loop *loop, unsigned threads)
{
    struct pool *p = calloc(1, sizeof(*p));

    if (!p)
        return NULL;
    p->loop = loop;
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->finished_lock, NULL);
    pthread_cond_init(&p->more, NULL);
    ev_async_init(&p->wake, pool_on_wake);
    ev_async_start(loop, &p->wake);
    ev_unref(loop); /* an idle pool must not keep the loop alive */
    p->next = pools;
    pools = p;
    p->threads = calloc(threads, sizeof(*p->threads));
    if (!p->threads)
        return NULL;
    for (p->n_threads = 0; p->n_threads < threads; p->n_threads++)
        if (pthread_create(&p->threads[p->n_threads], NULL, pool_worker, p) !=
            0)
            break;
    return p->n_threads > 0 ? p : NULL;
}

static int
pool_submit(struct pool *p, const struct module_instance *scope,
            postern_work_fn work, postern_done_fn done, void *arg)
{
    struct pool_job *job;

    if (!p || !p->n_threads || p->stopping)
        return -1;
    job = malloc(sizeof(*job));
    if (!job)
        return -1;
    job->work = work;
    job->done = done;
    job->arg = arg;
    job->scope = scope;
    pthread_mutex_lock(&p->lock);
    queue_push(&p->todo, job);
    bool wake = p->idle > 0;
    pthread_mutex_unlock(&p->lock);
    /* A thread that goes idle after the unlock finds the job first. */
    if (wake)
        pthread_cond_signal(&p->more);
    return 0;
}

int
pools_start(struct ev_loop *loop, unsigned core_threads,
            unsigned module_threads, struct module_set *set)
{
    if (!(core_pool = pool_new(loop, core_threads)) ||
        !(shared_pool = pool_new(loop, module_threads)))
        return -1;
    for (size_t i = 0; set && i < set->n; i++) {
        struct module_instance *mi = &set->items[i];
        if (mi->threads && !(mi->pool = pool_new(loop, mi->threads)))
            return -1;
    }
    return 0;
}

void
pools_stop(struct module_set *set)
{
    for (size_t i = 0; set && i < set->n; i++)
        set->items[i].pool = NULL; /* freed below */
    /* Every pool stops taking jobs first: a completion of one pool must
     * not queue work on another that is already joined. */
    for (struct pool *p = pools; p; p = p->next) {
        pthread_mutex_lock(&p->lock);
        p->stopping = true;
        pthread_cond_broadcast(&p->more);
        pthread_mutex_unlock(&p->lock);
    }
    while (pools) {
        struct pool *p = pools;
        pools = p->next;
        for (unsigned i = 0; i < p->n_threads; i++)
            pthread_join(p->threads[i], NULL);
        pool_run_completions(p);
        free(p->threads);
        ev_ref(p->loop);
        ev_async_stop(p->loop, &p->wake);
        pthread_cond_destroy(&p->more);
        pthread_mutex_destroy(&p->lock);
        pthread_mutex_destroy(&p->finished_lock);
        free(p);
    }
    core_pool = shared_pool = NULL;
}

int
pool_submit_core(postern_work_fn work, postern_done_fn done, void *arg)
{
    return pool_submit(core_pool, NULL, work, done, arg);
}

int
postern_pool_submit(postern_work_fn work, postern_done_fn done, void *arg)
{
    const struct module_instance *mi = module_scope();

    return pool_submit(mi && mi->pool ? mi->pool : shared_pool, mi, work, done,
                       arg);
}
