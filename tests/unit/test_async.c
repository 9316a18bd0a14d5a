/*
 * test_async.c - the thread-facing services of issue 10 item 4:
 * postern_loop_call() (core/loop_call.c) from many threads at once, its
 * order, and its shutdown; postern_log() (core/module_log.c) hammered from
 * several threads, with and without a pending hook context, while the
 * loop thread grows the context table: every line whole, with its session
 * id and instance; and the module scope naming the instance of a line
 * logged without a context (create(), timers); and the pool of an
 * instance with threads of its own, reached from a callback it registered
 * while the shared pool is held.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include "postern/postern.h"

#include "hook.h"
#include "log.h"
#include "loop_call.h"
#include "module.h"
#include "module_scope.h"
#include "pool.h"
#include "services.h"

/* --- postern_loop_call() ---------------------------------------------- */

#define CALL_THREADS 6
#define CALLS_PER_THREAD 2000

struct call_record {
    int thread, seq;
};

static struct call_record *records; /* written on the loop thread only */
static size_t n_records;
static pthread_t loop_thread;
static bool off_loop_thread; /* a call ran on another thread */

struct call_arg {
    int thread, seq;
};

static void
record_call(void *arg)
{
    struct call_arg *a = arg;
    if (!pthread_equal(pthread_self(), loop_thread))
        off_loop_thread = true;
    records[n_records++] = (struct call_record){a->thread, a->seq};
    free(a);
}

static void *
caller(void *arg)
{
    int thread = (int)(intptr_t)arg;
    for (int seq = 0; seq < CALLS_PER_THREAD; seq++) {
        struct call_arg *a = malloc(sizeof(*a));
        assert_non_null(a);
        *a = (struct call_arg){thread, seq};
        assert_int_equal(postern_loop_call(record_call, a), 0);
    }
    return NULL;
}

/* Run the loop until want calls arrived; bounded by iterations, each of
 * which either runs calls or waits for the next wake. */
static void
run_until_records(struct ev_loop *loop, size_t want)
{
    for (int i = 0; n_records < want && i < 10000000; i++)
        ev_run(loop, EVRUN_ONCE | EVRUN_NOWAIT);
}

static void
test_loop_call_from_many_threads(void **state)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    pthread_t threads[CALL_THREADS];
    size_t total = CALL_THREADS * CALLS_PER_THREAD;
    int next[CALL_THREADS] = {0};

    assert_non_null(loop);
    records = calloc(total, sizeof(*records));
    n_records = 0;
    loop_thread = pthread_self();
    loop_call_init(loop);
    for (int t = 0; t < CALL_THREADS; t++)
        assert_int_equal(
            pthread_create(&threads[t], NULL, caller, (void *)(intptr_t)t), 0);
    run_until_records(loop, total); /* while the threads still call */
    for (int t = 0; t < CALL_THREADS; t++)
        pthread_join(threads[t], NULL);
    run_until_records(loop, total);

    /* All ran, on the loop thread, each thread's calls in its order. */
    assert_int_equal(n_records, total);
    assert_false(off_loop_thread);
    for (size_t i = 0; i < total; i++) {
        assert_int_equal(records[i].seq, next[records[i].thread]);
        next[records[i].thread]++;
    }
    loop_call_shutdown();
    free(records);
    ev_loop_destroy(loop);
}

static int chained_runs;

static void
chained(void *arg)
{
    /* A call made from a call runs too, in a later turn of the loop. */
    if (++chained_runs < 3)
        assert_int_equal(postern_loop_call(chained, arg), 0);
}

static void
test_loop_call_from_the_loop_thread(void **state)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);

    loop_call_init(loop);
    chained_runs = 0;
    assert_int_equal(postern_loop_call(chained, NULL), 0);
    ev_run(loop, EVRUN_ONCE | EVRUN_NOWAIT);
    assert_int_equal(chained_runs, 1); /* one per turn, not all at once */
    for (int i = 0; chained_runs < 3 && i < 1000; i++)
        ev_run(loop, EVRUN_ONCE | EVRUN_NOWAIT);
    assert_int_equal(chained_runs, 3);
    assert_int_equal(postern_loop_call(NULL, NULL), -1);
    loop_call_shutdown();
    ev_loop_destroy(loop);
}

static const struct module_instance *scope_seen;
static int shutdown_runs;

static void
at_shutdown(void *arg)
{
    shutdown_runs++;
    scope_seen = module_scope();
    /* Shutdown has begun: no new calls. */
    assert_int_equal(postern_loop_call(at_shutdown, arg), -1);
}

static void
test_loop_call_shutdown_runs_what_is_queued(void **state)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct module_instance mi = {.instance = "30-caller"};

    loop_call_init(loop);
    shutdown_runs = 0;
    /* Queued from inside an instance's scope: it runs in that scope. */
    const struct module_instance *was = module_scope_enter(&mi);
    assert_int_equal(postern_loop_call(at_shutdown, NULL), 0);
    assert_int_equal(postern_loop_call(at_shutdown, NULL), 0);
    module_scope_leave(was);
    assert_null(module_scope());
    loop_call_shutdown(); /* the loop never ran: the calls run here */
    assert_int_equal(shutdown_runs, 2);
    assert_ptr_equal(scope_seen, &mi);
    assert_int_equal(postern_loop_call(at_shutdown, NULL), -1);
    assert_int_equal(shutdown_runs, 2);
    ev_loop_destroy(loop);
}

/* --- postern_log() from many threads ------------------------------------ */

#define LOG_THREADS 4
#define LINES_PER_THREAD 400
#define PAD 900 /* long lines: a torn write would show */

static char log_path[64];
static int saved_stderr = -1;

static void
stderr_to_file(void)
{
    snprintf(log_path, sizeof(log_path), "/tmp/postern-test-async-XXXXXX");
    int fd = mkstemp(log_path);
    assert_true(fd >= 0);
    fflush(stderr);
    saved_stderr = dup(STDERR_FILENO);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    close(fd);
}

static char *
stderr_back(void)
{
    fflush(stderr);
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    FILE *f = fopen(log_path, "r");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    char *text = calloc(1, (size_t)len + 1);
    assert_int_equal(fread(text, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    unlink(log_path);
    return text;
}

static postern_ctx *pending_handle;

static postern_result
go_pending(postern_ctx *ctx, void *instance)
{
    pending_handle = ctx;
    return POSTERN_PENDING;
}

static const postern_module pending_module = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "pend",
    .handlers = {[POSTERN_HOOK_RCPT] = go_pending},
};

static void
on_done(struct session *s, postern_result r, const struct hook_reply *reply)
{
}

static char pad[PAD + 1];

struct logger {
    int thread;
    const postern_ctx *ctx; /* NULL: no context */
};

static void *
logger(void *arg)
{
    const struct logger *l = arg;
    for (int seq = 0; seq < LINES_PER_THREAD; seq++)
        postern_log(l->ctx, POSTERN_LOG_INFO,
                    "thread=%d seq=%d value=%s pad=%s", l->thread, seq,
                    postern_log_value("a \"quoted\" value"), pad);
    return NULL;
}

static void
test_log_from_many_threads(void **state)
{
    static struct module_instance mi = {
        .instance = "10-pend",
        .desc = &pending_module,
        .hooks_mask = POSTERN_HOOK_BIT(POSTERN_HOOK_RCPT)};
    struct module_set set = {.items = &mi, .n = 1};
    struct logger loggers[LOG_THREADS];
    pthread_t threads[LOG_THREADS];
    struct hook_ctx *churn[256];

    memset(pad, 'p', PAD);
    log_set_level(LOG_LEVEL_INFO);
    assert_int_equal(hook_chains_build(&set), 0);
    struct hook_ctx *ctx = hook_ctx_new(NULL, "0123456789abcdef", NULL);
    assert_non_null(ctx);
    hook_run(ctx, POSTERN_HOOK_RCPT, on_done);
    assert_true(hook_ctx_pending(ctx));

    stderr_to_file();
    for (int t = 0; t < LOG_THREADS; t++) {
        /* half log with the pending context, half without */
        loggers[t] = (struct logger){t, t % 2 ? pending_handle : NULL};
        assert_int_equal(pthread_create(&threads[t], NULL, logger, &loggers[t]),
                         0);
    }
    /* Meanwhile the loop thread makes and drops contexts: the table
     * grows (realloc) under the loggers' feet. */
    for (int round = 0; round < 20; round++) {
        for (size_t i = 0; i < 256; i++)
            churn[i] = hook_ctx_new(NULL, "ffffffffffffffff", NULL);
        for (size_t i = 0; i < 256; i++)
            hook_ctx_release(churn[i]);
    }
    for (int t = 0; t < LOG_THREADS; t++)
        pthread_join(threads[t], NULL);
    char *text = stderr_back();

    int next[LOG_THREADS] = {0};
    size_t lines = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        int thread, seq, n = 0;
        char sid[17], module[32];
        /* time level sid module module=NAME thread=T seq=S ... */
        const char *rest = strchr(line, ' ');
        assert_non_null(rest);
        assert_int_equal(sscanf(rest,
                                " info %16s module module=%31s "
                                "thread=%d seq=%d %n",
                                sid, module, &thread, &seq, &n),
                         4);
        assert_true(thread >= 0 && thread < LOG_THREADS);
        assert_int_equal(seq, next[thread]++);
        if (thread % 2) {
            assert_string_equal(sid, "0123456789abcdef");
            assert_string_equal(module, "\"10-pend\"");
        } else {
            assert_string_equal(sid, "-");
            assert_string_equal(module, "-");
        }
        const char *tail = rest + n;
        assert_true(strncmp(tail, "value=\"a \\\"quoted\\\" value\" pad=",
                            strlen("value=\"a \\\"quoted\\\" value\" pad=")) ==
                    0);
        tail = strchr(tail, '=');
        tail = strchr(tail + 1, '=') + 1;
        assert_int_equal(strlen(tail), PAD);
        assert_int_equal(strspn(tail, "p"), PAD);
        lines++;
    }
    assert_int_equal(lines, LOG_THREADS * LINES_PER_THREAD);
    free(text);

    postern_resume(pending_handle, POSTERN_CONTINUE);
    hook_ctx_release(ctx);
    hook_chains_free();
    hook_orphans_free();
}

/* A line without a context names the instance the core runs code for
 * (create(), a timer): "module=-" only in the core's own scope. */
static void
test_log_without_ctx_names_the_scope(void **state)
{
    struct module_instance mi = {.instance = "20-create"};

    stderr_to_file();
    postern_log(NULL, POSTERN_LOG_INFO, "outside");
    const struct module_instance *was = module_scope_enter(&mi);
    postern_log(NULL, POSTERN_LOG_INFO, "inside");
    module_scope_leave(was);
    char *text = stderr_back();
    assert_non_null(strstr(text, " - module module=- outside\n"));
    assert_non_null(strstr(text, " - module module=\"20-create\" inside\n"));
    free(text);
}

/* --- the pool of an instance, reached from its callbacks -------------- */

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_open = PTHREAD_COND_INITIALIZER;
static bool gate; /* the blocker job waits for it */
static bool blocker_done, own_done;
static const struct module_instance *own_work_scope, *own_done_scope,
    *own_call_scope;

static void
blocker_work(void *arg)
{
    pthread_mutex_lock(&gate_lock);
    while (!gate)
        pthread_cond_wait(&gate_open, &gate_lock);
    pthread_mutex_unlock(&gate_lock);
}

static void
blocker_finished(void *arg)
{
    blocker_done = true;
}

static void
own_call(void *arg)
{
    own_call_scope = module_scope();
}

static void
own_work(void *arg)
{
    own_work_scope = module_scope();
    /* from a pool thread: the call keeps the instance's scope */
    assert_int_equal(postern_loop_call(own_call, NULL), 0);
}

static void
own_finished(void *arg)
{
    own_done_scope = module_scope();
    own_done = true;
}

static void
submit_from_timer(void *arg)
{
    assert_int_equal(postern_pool_submit(own_work, own_finished, NULL), 0);
}

/*
 * The shared module pool has one thread, held by a job that waits for the
 * gate. An instance with "threads": 1 submits from a timer it started:
 * the job runs and completes meanwhile (so it ran on the instance's pool),
 * in the instance's scope, as do its done and a loop call made from it.
 */
static void
test_instance_pool_from_a_callback(void **state)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct module_instance mi = {.instance = "40-slow", .threads = 1};
    struct module_set set = {.items = &mi, .n = 1};

    services_init(loop);
    loop_call_init(loop);
    assert_int_equal(pools_start(loop, 1, 1, &set), 0);
    assert_non_null(mi.pool);
    assert_int_equal(postern_pool_submit(blocker_work, blocker_finished, NULL),
                     0);
    const struct module_instance *was = module_scope_enter(&mi);
    assert_non_null(postern_timer_start(0, submit_from_timer, NULL));
    module_scope_leave(was);
    for (int i = 0; (!own_done || !own_call_scope) && i < 10000000; i++)
        ev_run(loop, EVRUN_ONCE | EVRUN_NOWAIT);
    assert_true(own_done);
    assert_false(blocker_done); /* the shared thread is still held */
    assert_ptr_equal(own_work_scope, &mi);
    assert_ptr_equal(own_done_scope, &mi);
    assert_ptr_equal(own_call_scope, &mi);
    assert_null(module_scope());

    pthread_mutex_lock(&gate_lock);
    gate = true;
    pthread_cond_broadcast(&gate_open);
    pthread_mutex_unlock(&gate_lock);
    pools_stop(&set); /* waits for the blocker, runs its done */
    assert_true(blocker_done);
    assert_null(mi.pool);
    assert_int_equal(postern_pool_submit(blocker_work, NULL, NULL), -1);
    loop_call_shutdown();
    services_init(NULL);
    ev_loop_destroy(loop);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loop_call_from_many_threads),
        cmocka_unit_test(test_loop_call_from_the_loop_thread),
        cmocka_unit_test(test_loop_call_shutdown_runs_what_is_queued),
        cmocka_unit_test(test_log_from_many_threads),
        cmocka_unit_test(test_log_without_ctx_names_the_scope),
        cmocka_unit_test(test_instance_pool_from_a_callback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
