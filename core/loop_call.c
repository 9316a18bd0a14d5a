/*
 * loop_call.c - run a function on the loop thread, asked from any thread
 * (see loop_call.h). Each call remembers the module scope of its caller
 * (module_scope.h: the instance on the loop thread or on a pool thread,
 * none on a thread the core did not start) and runs in it.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "postern/services.h"

#include "loop_call.h"
#include "module_scope.h"

struct loop_call {
    struct loop_call *next;
    postern_loop_fn fn;
    void *arg;
    const struct module_instance *scope;
};

static struct {
    struct ev_loop *loop;
    ev_async wake;
    pthread_mutex_t lock;
    struct loop_call *head, *tail; /* under lock */
    bool open;                     /* under lock */
} lc = {.lock = PTHREAD_MUTEX_INITIALIZER};

static struct loop_call *
take_all(void)
{
    pthread_mutex_lock(&lc.lock);
    struct loop_call *all = lc.head;
    lc.head = lc.tail = NULL;
    pthread_mutex_unlock(&lc.lock);
    return all;
}

/* Calls queued while these run wait for the next wake: a module that
 * keeps calling itself cannot hold the loop. */
static void
run_all(struct loop_call *c)
{
    while (c) {
        struct loop_call *next = c->next;
        const struct module_instance *was = module_scope_enter(c->scope);
        c->fn(c->arg);
        module_scope_leave(was);
        free(c);
        c = next;
    }
}

static void
on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    run_all(take_all());
}

void
loop_call_init(struct ev_loop *loop)
{
    lc.loop = loop;
    ev_async_init(&lc.wake, on_wake);
    ev_async_start(loop, &lc.wake);
    ev_unref(loop); /* waiting for calls must not keep the loop alive */
    pthread_mutex_lock(&lc.lock);
    lc.open = true;
    pthread_mutex_unlock(&lc.lock);
}

void
loop_call_shutdown(void)
{
    pthread_mutex_lock(&lc.lock);
    bool was_open = lc.open;
    lc.open = false;
    pthread_mutex_unlock(&lc.lock);
    if (!was_open)
        return;
    run_all(take_all());
    ev_ref(lc.loop);
    ev_async_stop(lc.loop, &lc.wake);
}

int
postern_loop_call(postern_loop_fn fn, void *arg)
{
    struct loop_call *c;

    if (!fn || !(c = malloc(sizeof(*c))))
        return -1;
    c->next = NULL;
    c->fn = fn;
    c->arg = arg;
    c->scope = module_scope();
    pthread_mutex_lock(&lc.lock);
    if (!lc.open) {
        pthread_mutex_unlock(&lc.lock);
        free(c);
        return -1;
    }
    if (lc.tail)
        lc.tail->next = c;
    else
        lc.head = c;
    lc.tail = c;
    /* Under the lock: loop_call_shutdown() cannot stop the watcher
     * between the queueing and the wake. */
    ev_async_send(lc.loop, &lc.wake);
    pthread_mutex_unlock(&lc.lock);
    return 0;
}
