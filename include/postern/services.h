/*
 * postern/services.h - what the core lends to modules: the loop's clock,
 * timers, I/O watchers and the thread pool.
 *
 * Everything here is called from the loop thread, except the work function
 * given to postern_pool_submit(), which runs on a pool thread and must not
 * call any postern_ function other than postern_message_read().
 */
#ifndef POSTERN_SERVICES_H
#define POSTERN_SERVICES_H

#ifdef __cplusplus
extern "C" {
#endif

/* The loop's cached time, in seconds since the epoch. */
double postern_now(void);

/* One-shot timer. The core frees it after cb returns; cancel it only
 * before it fired. */
typedef struct postern_timer postern_timer;
typedef void (*postern_timer_cb)(void *arg);
postern_timer *postern_timer_start(double seconds, postern_timer_cb cb,
                                   void *arg);
void postern_timer_cancel(postern_timer *timer);

/* Readiness watcher on a file descriptor the module owns. */
#define POSTERN_IO_READ 1
#define POSTERN_IO_WRITE 2
typedef struct postern_io postern_io;
typedef void (*postern_io_cb)(int fd, int events, void *arg);
postern_io *postern_io_start(int fd, int events, postern_io_cb cb, void *arg);
void postern_io_set(postern_io *io, int events);
void postern_io_stop(postern_io *io); /* stops and frees */

/*
 * Run work(arg) on a pool thread, then done(arg) on the loop thread.
 * done always runs exactly once, even if the session that asked went away;
 * it is where a pending handler calls postern_resume(). 0, or -1 if the
 * pool cannot take the job (then neither function runs).
 */
typedef void (*postern_work_fn)(void *arg);
typedef void (*postern_done_fn)(void *arg);
int postern_pool_submit(postern_work_fn work, postern_done_fn done, void *arg);

/*
 * Since ABI 1.3: run fn(arg) on the loop thread, soon. Safe to call from
 * any thread (a module's own threads, a library's callback thread) and
 * from signal-free code on the loop thread itself; calls run in the order
 * they were made. 0, or -1 when the daemon is shutting down (then fn does
 * not run: free arg yourself). A pending handler resumes from fn.
 */
typedef void (*postern_loop_fn)(void *arg);
int postern_loop_call(postern_loop_fn fn, void *arg);

#ifdef __cplusplus
}
#endif
#endif
