/*
 * postern/services.h - what the core lends to modules: the loop's clock,
 * timers, I/O watchers and the thread pool.
 *
 * Everything here is called from the loop thread, except
 * postern_loop_call(), which any thread may call. Code running off the
 * loop thread (the work function given to postern_pool_submit(), a
 * module's own threads, a library's callback threads) may call only
 * these postern_ functions: postern_message_read() (on a reader it owns),
 * postern_log() and postern_log_value()/_n() (log.h: with a ctx only
 * while the call is pending, before its resume is handed to the loop),
 * postern_loop_call(), and postern_body_write() (message.h, on a writer
 * it owns). Everything else, postern_resume() included, happens on the
 * loop thread: in a pool job's done, or in a function given to
 * postern_loop_call().
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
 * pool cannot take the job (then neither function runs): before the
 * daemon started serving (in create()) and once it is shutting down.
 *
 * Which pool: an instance whose plugins.d file says "threads": N has a
 * pool of N threads of its own, and every job it submits (from create,
 * its handlers, or any callback it registered: timers, I/O, pool done,
 * DNS and HTTP callbacks, loop calls queued from the loop or a pool
 * thread) runs there; other instances share the module pool of
 * "pool_threads" threads. The core's own spool writes use neither.
 */
typedef void (*postern_work_fn)(void *arg);
typedef void (*postern_done_fn)(void *arg);
int postern_pool_submit(postern_work_fn work, postern_done_fn done, void *arg);

/*
 * Since ABI 1.3: run fn(arg) on the loop thread, soon. Safe to call from
 * any thread (a module's own threads, a library's callback thread) and
 * from signal-free code on the loop thread itself; calls run in the order
 * they were made (per thread, and overall in the order they took the
 * queue), each once. A call made from fn runs in a later turn of the
 * loop. 0, or -1 when the daemon is shutting down (then fn does not run:
 * free arg yourself). A pending handler resumes from fn.
 *
 * Shutdown: calls are accepted from start-up (create() may queue some)
 * through the drain; once the loop stopped and the thread pools finished,
 * every call still queued runs, then postern_loop_call() returns -1, and
 * only then are the modules destroyed. destroy() must therefore stop and
 * join its own threads, which may see -1 from their last call.
 * fn runs in the instance scope of its caller when that was the loop
 * thread or a pool thread (so its postern_pool_submit() uses the
 * instance's own pool); from any other thread, in the shared scope.
 */
typedef void (*postern_loop_fn)(void *arg);
int postern_loop_call(postern_loop_fn fn, void *arg);

#ifdef __cplusplus
}
#endif
#endif
