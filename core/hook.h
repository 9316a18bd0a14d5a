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

/* Lines of one reply, postern_reply_line() included (hook.h). */
#define HOOK_REPLY_LINES_MAX 16

struct hook_reply {
    int code;          /* 0: the stage default */
    char enhanced[16]; /* "" : the stage default */
    char text[401];    /* "" : the stage default (400 bytes at most) */
    /* Lines after the first (postern_reply_line()): n_more NUL-terminated
     * strings back to back, each 400 bytes at most. Owned by the hook
     * context until the done callback returns; copy to keep longer. */
    char *more;
    size_t more_len;
    unsigned n_more;
    bool set; /* postern_reply() was called (postern_reply_line() needs it) */
};

/* Free the extra lines and clear the reply. */
void hook_reply_clear(struct hook_reply *r);
/* Deep copy of src into dst (which holds nothing). 0, or -1 when out of
 * memory (dst then has the first line only). */
int hook_reply_copy(struct hook_reply *dst, const struct hook_reply *src);

typedef void (*hook_done_fn)(struct session *s, postern_result result,
                             const struct hook_reply *reply);

int hook_chains_build(const struct module_set *set);
void hook_chains_free(void);
size_t hook_chain_length(postern_hook hook);
/* The instance of handler i of the hook's chain, in the order they run
 * (--print-hooks); NULL past the end. */
const struct module_instance *hook_chain_instance(postern_hook hook, size_t i);

/*
 * The core's side of a hook context. A session owns one and reuses it for
 * each hook run. What a handler gets is a handle (postern_ctx *): a slot
 * number and a generation, never a pointer. A handle is good from the
 * handler's call until it returns a decision, or until its resume; after
 * that every use of it (a second resume, a resume after the session
 * closed, a resume meant for an earlier hook) is detected, logged with the
 * module instance and ignored, because the generation has moved on.
 */
struct hook_ctx;

/* What a context needs from its session, without knowing what it is: an
 * orphaned context holds its session (so strings handed to a pending
 * handler stay valid until its resume) and releases it when freed. */
struct hook_owner_ops {
    void (*hold)(struct session *s);
    void (*release)(struct session *s);
};

/* sid (the session id) names the context's log lines; it must live as
 * long as the session. ops may be NULL (tests). */
struct hook_ctx *hook_ctx_new(struct session *s, const char *sid,
                              const struct hook_owner_ops *ops);
/* The session is going away: free the context, or orphan it if a handler
 * is pending (then its postern_resume() frees it). */
void hook_ctx_release(struct hook_ctx *ctx);
bool hook_ctx_pending(const struct hook_ctx *ctx);

/* The handle of the context's current call (tests, and callers that act
 * for a module outside a hook). */
postern_ctx *hook_ctx_handle(struct hook_ctx *ctx);

/* Run the chain for hook; done is called once with the outcome (maybe
 * before hook_run returns, when no handler goes PENDING). */
void hook_run(struct hook_ctx *ctx, postern_hook hook, hook_done_fn done);

/*
 * Notification hooks (reset, disconnect): every handler runs, results are
 * ignored. A handler that goes PENDING keeps its context (orphaned, freed
 * by its postern_resume()); the session continues with the context
 * returned here, NULL if a new one could not be allocated.
 */
struct hook_ctx *hook_notify(struct hook_ctx *ctx, postern_hook hook);

/*
 * Work a module started for one handler call (a DNS lookup) can be tied to
 * the call: if the session goes away while the call is pending, abandon(w)
 * runs, from inside the session's close, so it must only schedule its own
 * completion (the module's callback then resumes the orphaned context as
 * always). When the call ends normally (a decision, or its resume) the
 * work is detached and simply runs on. The work's owner detaches it when it
 * completes first.
 */
struct hook_work {
    struct hook_work *prev, *next;
    struct hook_ctx *ctx; /* NULL: not attached */
    void (*abandon)(struct hook_work *w);
};

/* 0, or -1 when the handle is dead or orphaned (nothing to tie to). */
int hook_work_attach(const postern_ctx *handle, struct hook_work *w);
void hook_work_detach(struct hook_work *w);

/* At exit, after the modules are destroyed: free the contexts modules
 * never resumed. */
void hook_orphans_free(void);

/* For postern_log(), from any thread while the context is live (the
 * handler runs, or it is pending and not yet resumed): the session id
 * (kept while orphaned) and the name of the instance whose handler runs
 * or is pending. Both NULL for a dead handle. The strings live as long
 * as the session and the module set. */
void hook_ctx_log_names(const postern_ctx *handle, const char **sid,
                        const char **instance);
const char *hook_ctx_log_sid(const postern_ctx *handle);
const char *hook_ctx_log_instance(const postern_ctx *handle);

/* The hook ctx runs or last ran (POSTERN_HOOK_COUNT for NULL). */
postern_hook hook_ctx_hook(const struct hook_ctx *ctx);

/* The instance whose handler decided the last outcome of ctx (valid in
 * the done callback); NULL when no handler decided. */
const char *hook_ctx_decider(const struct hook_ctx *ctx);

/* The session behind a handle; NULL when orphaned or dead. */
struct session *hook_ctx_session(const postern_ctx *handle);

#endif
