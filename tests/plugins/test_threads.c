/*
 * test_threads.c - test plugin for the thread-facing services (issue 10):
 * postern_loop_call() from a module's own thread, postern_log() off the
 * loop thread, a pool of the instance's own, and a handler that never
 * resumes.
 *
 * Offers the rcpt hook. Config:
 *
 *   {"mode": "thread",   thread: a pthread of its own waits for the
 *                        release file, then resumes through
 *                        postern_loop_call(); pool: a postern_pool_submit()
 *                        job waits for it, its done resumes; never: PENDING
 *                        and no resume at all
 *    "release": "/path", the file whose existence lets the wait end
 *    "result": "accept", accept (default) or reject (550 5.7.1)
 *    "match": "slow"}    optional: act only on recipients containing it
 *
 * Log lines the integration tests look for, all through postern_log():
 *   "test_threads created"            from create()
 *   "test_threads create_call ran"    a loop call queued by create()
 *   "test_threads waiting where=W"    W = thread or pool, off the loop
 *                                     thread, with the pending context
 *   "test_threads released where=W"   the same, when the file appeared
 *   "test_threads resumed orphaned=N" on the loop, before the resume
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <postern/postern.h>

enum mode { MODE_THREAD, MODE_POOL, MODE_NEVER };

struct job;

struct test_threads {
    enum mode mode;
    char *release;
    char *match;
    postern_result result;
    pthread_mutex_t lock;
    bool stopping;    /* under lock: destroy() waits for the threads */
    struct job *jobs; /* under lock: threads not yet joined */
};

struct job {
    struct test_threads *owner;
    postern_ctx *ctx;
    pthread_t thread;
    struct job *next;
};

static bool
stopping(struct test_threads *t)
{
    pthread_mutex_lock(&t->lock);
    bool s = t->stopping;
    pthread_mutex_unlock(&t->lock);
    return s;
}

/* Off the loop thread: wait (bounded: 60 s in 10 ms steps) for the file. */
static void
wait_release(struct job *job, const char *where)
{
    struct timespec step = {0, 10 * 1000 * 1000};

    postern_log(job->ctx, POSTERN_LOG_INFO, "test_threads waiting where=%s",
                where);
    for (int i = 0; i < 6000 && access(job->owner->release, F_OK) != 0 &&
                    !stopping(job->owner);
         i++)
        nanosleep(&step, NULL);
    postern_log(job->ctx, POSTERN_LOG_INFO, "test_threads released where=%s",
                where);
}

static void
resume_job(struct job *job)
{
    int orphaned = postern_ctx_orphaned(job->ctx);
    postern_log(job->ctx, POSTERN_LOG_INFO, "test_threads resumed orphaned=%d",
                orphaned);
    if (job->owner->result == POSTERN_REJECT)
        postern_reply(job->ctx, 550, "5.7.1", "test_threads says no");
    postern_resume(job->ctx, job->owner->result);
}

/* --- thread mode: the module's own thread, back through a loop call --- */

static void
job_unlink(struct job *job)
{
    struct test_threads *t = job->owner;
    pthread_mutex_lock(&t->lock);
    for (struct job **p = &t->jobs; *p; p = &(*p)->next)
        if (*p == job) {
            *p = job->next;
            break;
        }
    pthread_mutex_unlock(&t->lock);
}

static void
thread_back_on_loop(void *arg)
{
    struct job *job = arg;
    resume_job(job);
    job_unlink(job);
    pthread_join(job->thread, NULL); /* it returns right after the call */
    free(job);
}

static void *
job_thread(void *arg)
{
    struct job *job = arg;
    wait_release(job, "thread");
    /* On failure (shutdown) the job stays listed: destroy() frees it. */
    postern_loop_call(thread_back_on_loop, job);
    return NULL;
}

/* --- pool mode ------------------------------------------------------- */

static void
pool_work(void *arg)
{
    wait_release(arg, "pool");
}

static void
pool_done(void *arg)
{
    struct job *job = arg;
    resume_job(job);
    free(job);
}

static postern_result
threads_rcpt(postern_ctx *ctx, void *instance)
{
    struct test_threads *t = instance;
    const char *rcpt = postern_rcpt_current(ctx);

    if (t->match && (!rcpt || !strstr(rcpt, t->match)))
        return POSTERN_CONTINUE;
    if (t->mode == MODE_NEVER)
        return POSTERN_PENDING;
    struct job *job = calloc(1, sizeof(*job));
    if (!job)
        return POSTERN_TEMPFAIL;
    job->owner = t;
    job->ctx = ctx;
    if (t->mode == MODE_POOL) {
        if (postern_pool_submit(pool_work, pool_done, job) != 0) {
            free(job);
            return POSTERN_TEMPFAIL;
        }
        return POSTERN_PENDING;
    }
    pthread_mutex_lock(&t->lock);
    if (pthread_create(&job->thread, NULL, job_thread, job) != 0) {
        pthread_mutex_unlock(&t->lock);
        free(job);
        return POSTERN_TEMPFAIL;
    }
    job->next = t->jobs;
    t->jobs = job;
    pthread_mutex_unlock(&t->lock);
    return POSTERN_PENDING;
}

static void
create_call(void *arg)
{
    postern_log(NULL, POSTERN_LOG_INFO, "test_threads create_call ran");
}

static void
threads_destroy(void *instance)
{
    struct test_threads *t = instance;
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    t->stopping = true;
    pthread_mutex_unlock(&t->lock);
    /* Threads whose loop call was refused (shutdown): theirs to free. */
    while (t->jobs) {
        struct job *job = t->jobs;
        t->jobs = job->next;
        pthread_join(job->thread, NULL);
        free(job);
    }
    pthread_mutex_destroy(&t->lock);
    free(t->release);
    free(t->match);
    free(t);
}

static int
threads_create(postern_module_init *init, void **instance)
{
    const json_t *cfg = postern_init_config(init);
    const char *mode = json_string_value(json_object_get(cfg, "mode"));
    const char *release = json_string_value(json_object_get(cfg, "release"));
    const char *result = json_string_value(json_object_get(cfg, "result"));
    const char *match = json_string_value(json_object_get(cfg, "match"));
    struct test_threads *t = calloc(1, sizeof(*t));

    if (!t) {
        postern_init_error(init, "", "out of memory");
        return -1;
    }
    pthread_mutex_init(&t->lock, NULL);
    *instance = t;
    if (mode && strcmp(mode, "thread") == 0)
        t->mode = MODE_THREAD;
    else if (mode && strcmp(mode, "pool") == 0)
        t->mode = MODE_POOL;
    else if (mode && strcmp(mode, "never") == 0)
        t->mode = MODE_NEVER;
    else {
        postern_init_error(init, "mode", "expected thread, pool or never");
        return 0;
    }
    if (t->mode != MODE_NEVER && !release) {
        postern_init_error(init, "release", "expected a file name");
        return 0;
    }
    t->release = release ? strdup(release) : NULL;
    t->match = match ? strdup(match) : NULL;
    t->result = result && strcmp(result, "reject") == 0 ? POSTERN_REJECT
                                                        : POSTERN_ACCEPT;
    postern_log(NULL, POSTERN_LOG_INFO, "test_threads created");
    if (!postern_init_check_only(init))
        postern_loop_call(create_call, NULL);
    return 0;
}

POSTERN_MODULE_DEFINE = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "test_threads",
    .create = threads_create,
    .destroy = threads_destroy,
    .handlers = {[POSTERN_HOOK_RCPT] = threads_rcpt},
};
