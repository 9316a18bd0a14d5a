/*
 * services.c - timers, I/O watchers and the clock lent to modules. libev
 * types stay private: modules see opaque postern_timer / postern_io. A
 * callback runs in the module scope (module_scope.h) of whoever started
 * it.
 */
#include <stdlib.h>
#include <sys/time.h>

#include "postern/services.h"

#include "module_scope.h"
#include "services.h"

static struct ev_loop *loop_for_modules;

void
services_init(struct ev_loop *loop)
{
    loop_for_modules = loop;
}

struct ev_loop *
services_loop(void)
{
    return loop_for_modules;
}

double
postern_now(void)
{
    if (!loop_for_modules) {
        /* Before the loop exists (module create() at start-up). */
        struct timeval tv;
        gettimeofday(&tv, NULL);
        return tv.tv_sec + tv.tv_usec / 1e6;
    }
    return ev_now(loop_for_modules);
}

struct postern_timer {
    ev_timer w;
    postern_timer_cb cb;
    void *arg;
    const struct module_instance *scope; /* who started it */
};

static void
timer_fired(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct postern_timer *t = (struct postern_timer *)w;
    postern_timer_cb cb = t->cb;
    void *arg = t->arg;
    const struct module_instance *was = module_scope_enter(t->scope);

    free(t); /* before cb: the callback may start a new timer */
    cb(arg);
    module_scope_leave(was);
}

postern_timer *
postern_timer_start(double seconds, postern_timer_cb cb, void *arg)
{
    struct postern_timer *t;

    if (!cb || seconds < 0)
        return NULL;
    t = malloc(sizeof(*t));
    if (!t)
        return NULL;
    t->cb = cb;
    t->arg = arg;
    t->scope = module_scope();
    ev_timer_init(&t->w, timer_fired, seconds, 0.);
    ev_timer_start(loop_for_modules, &t->w);
    return t;
}

void
postern_timer_cancel(postern_timer *t)
{
    if (!t)
        return;
    ev_timer_stop(loop_for_modules, &t->w);
    free(t);
}

struct postern_io {
    ev_io w;
    postern_io_cb cb;
    void *arg;
    const struct module_instance *scope; /* who started it */
};

static int
io_to_ev(int events)
{
    return ((events & POSTERN_IO_READ) ? EV_READ : 0) |
           ((events & POSTERN_IO_WRITE) ? EV_WRITE : 0);
}

static void
io_ready(struct ev_loop *loop, ev_io *w, int revents)
{
    struct postern_io *io = (struct postern_io *)w;
    int events = ((revents & EV_READ) ? POSTERN_IO_READ : 0) |
                 ((revents & EV_WRITE) ? POSTERN_IO_WRITE : 0);
    const struct module_instance *was = module_scope_enter(io->scope);
    io->cb(w->fd, events, io->arg); /* may stop (free) io */
    module_scope_leave(was);
}

postern_io *
postern_io_start(int fd, int events, postern_io_cb cb, void *arg)
{
    struct postern_io *io;

    if (fd < 0 || !cb)
        return NULL;
    io = malloc(sizeof(*io));
    if (!io)
        return NULL;
    io->cb = cb;
    io->arg = arg;
    io->scope = module_scope();
    ev_io_init(&io->w, io_ready, fd, io_to_ev(events));
    if (events)
        ev_io_start(loop_for_modules, &io->w);
    return io;
}

void
postern_io_set(postern_io *io, int events)
{
    ev_io_stop(loop_for_modules, &io->w);
    ev_io_set(&io->w, io->w.fd, io_to_ev(events));
    if (events)
        ev_io_start(loop_for_modules, &io->w);
}

void
postern_io_stop(postern_io *io)
{
    if (!io)
        return;
    ev_io_stop(loop_for_modules, &io->w);
    free(io);
}
