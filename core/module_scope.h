/*
 * module_scope.h - which module instance the core is running code for.
 *
 * The core enters an instance's scope around every call into its code:
 * create() and destroy(), hook handlers, and the callbacks the instance
 * registered (timers, I/O watchers, pool jobs and their completions, DNS
 * and HTTP callbacks, loop calls), which run in the scope that was current
 * when they were registered. The scope decides the thread pool of
 * postern_pool_submit() and names the instance in postern_log() lines
 * that carry no hook context. It is per thread: a pool thread is in the
 * scope of the job it runs; a thread the core did not start has none.
 */
#ifndef POSTERN_MODULE_SCOPE_H
#define POSTERN_MODULE_SCOPE_H

struct module_instance;

/* The current instance; NULL in the core's own code. */
const struct module_instance *module_scope(void);
/* Enter mi's scope (NULL: the core's); returns what to give back to
 * module_scope_leave() when the call into module code is over. */
const struct module_instance *
module_scope_enter(const struct module_instance *mi);
void module_scope_leave(const struct module_instance *previous);
/* The current instance's name (its plugins.d file name), or NULL. */
const char *module_scope_name(void);

#endif
