/*
 * hook.h - hook chains and their dispatch.
 *
 * At start-up the loaded module instances are flattened into one array of
 * handlers per hook, in plugins.d file-name order. hook_run() walks a
 * chain for one session: CONTINUE moves on, any other result ends it,
 * PENDING suspends it until postern_resume(). The session learns the
 * outcome through its done callback, never from inside a handler call
 * that has not returned yet.
 */
#ifndef POSTERN_HOOK_INTERNAL_H
#define POSTERN_HOOK_INTERNAL_H

#include <stdbool.h>

#include "postern/hook.h"

struct module_set;
struct session;

struct hook_reply {
    int code;          /* 0: the stage default */
    char enhanced[16]; /* "" : the stage default */
    char text[401];    /* "" : the stage default (400 bytes at most) */
};

typedef void (*hook_done_fn)(struct session *s, postern_result result,
                             const struct hook_reply *reply);

int hook_chains_build(const struct module_set *set);
void hook_chains_free(void);
size_t hook_chain_length(postern_hook hook);

/* One context per session, reused for each hook run. */
struct postern_ctx *hook_ctx_new(struct session *s);
/* The session is going away: free the context, or orphan it if a handler
 * is pending (then postern_resume() frees it). */
void hook_ctx_release(struct postern_ctx *ctx);
bool hook_ctx_pending(const struct postern_ctx *ctx);

/* Run the chain for hook; done is called once with the outcome (maybe
 * before hook_run returns, when no handler goes PENDING). */
void hook_run(struct postern_ctx *ctx, postern_hook hook, hook_done_fn done);

/*
 * Notification hooks (reset, disconnect): every handler runs, results are
 * ignored. A handler that goes PENDING keeps its context (detached from
 * the session, freed by its postern_resume()); the session continues with
 * the context returned here, NULL if a new one could not be allocated.
 */
struct postern_ctx *hook_notify(struct postern_ctx *ctx, postern_hook hook);

/* At exit, after the modules are destroyed: free the contexts modules
 * never resumed. */
void hook_orphans_free(void);

/* For postern_log(): the session id (NULL when orphaned) and the name of
 * the instance whose handler is running. */
const char *hook_ctx_log_sid(const postern_ctx *ctx);
const char *hook_ctx_log_instance(const postern_ctx *ctx);

/* The session behind a context; NULL when orphaned. */
struct session *hook_ctx_session(const struct postern_ctx *ctx);

#endif
