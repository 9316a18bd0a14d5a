/*
 * hook.c - hook chains, the hook context and the result/reply/resume
 * contract of include/postern/hook.h.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "postern/log.h"

#include "hook.h"
#include "log.h"
#include "module.h"
#include "smtp_session.h"

struct hook_handler {
    const struct module_instance *instance;
    postern_handler fn;
};

struct hook_chain {
    struct hook_handler *handlers;
    size_t n;
};

static struct hook_chain chains[POSTERN_HOOK_COUNT];

static const char *const hook_names[POSTERN_HOOK_COUNT] = {
    "connect", "helo",    "auth",  "mail",  "rcpt",
    "data",    "message", "store", "reset", "disconnect"};

struct postern_ctx {
    struct session *session; /* NULL once orphaned */
    postern_hook hook;
    size_t index; /* handler running or pending */
    hook_done_fn done;
    bool pending;
    bool in_handler;
    bool resumed_early; /* resume called before the handler returned */
    postern_result early_result;
    struct hook_reply reply;
    struct postern_ctx *orphan_prev, *orphan_next; /* while orphaned */
};

/* Orphaned contexts still held by modules; freed at resume or at exit. */
static struct postern_ctx *orphans;

static void
orphan_add(struct postern_ctx *ctx)
{
    ctx->session = NULL;
    ctx->orphan_prev = NULL;
    ctx->orphan_next = orphans;
    if (orphans)
        orphans->orphan_prev = ctx;
    orphans = ctx;
}

static void
orphan_free(struct postern_ctx *ctx)
{
    if (ctx->orphan_prev)
        ctx->orphan_prev->orphan_next = ctx->orphan_next;
    else
        orphans = ctx->orphan_next;
    if (ctx->orphan_next)
        ctx->orphan_next->orphan_prev = ctx->orphan_prev;
    free(ctx);
}

void
hook_orphans_free(void)
{
    while (orphans)
        orphan_free(orphans);
}

const char *
postern_hook_name(postern_hook hook)
{
    return (unsigned)hook < POSTERN_HOOK_COUNT ? hook_names[hook] : NULL;
}

int
hook_chains_build(const struct module_set *set)
{
    hook_chains_free();
    for (int h = 0; h < POSTERN_HOOK_COUNT; h++) {
        size_t n = 0;
        for (size_t i = 0; i < set->n; i++)
            if (set->items[i].hooks_mask & POSTERN_HOOK_BIT(h))
                n++;
        if (n == 0)
            continue;
        chains[h].handlers = calloc(n, sizeof(struct hook_handler));
        if (!chains[h].handlers)
            return -1;
        for (size_t i = 0; i < set->n; i++) {
            const struct module_instance *mi = &set->items[i];
            if (!(mi->hooks_mask & POSTERN_HOOK_BIT(h)))
                continue;
            chains[h].handlers[chains[h].n].instance = mi;
            chains[h].handlers[chains[h].n].fn = mi->desc->handlers[h];
            chains[h].n++;
        }
    }
    return 0;
}

void
hook_chains_free(void)
{
    for (int h = 0; h < POSTERN_HOOK_COUNT; h++) {
        free(chains[h].handlers);
        chains[h].handlers = NULL;
        chains[h].n = 0;
    }
}

size_t
hook_chain_length(postern_hook hook)
{
    return chains[hook].n;
}

struct postern_ctx *
hook_ctx_new(struct session *s)
{
    struct postern_ctx *ctx = calloc(1, sizeof(*ctx));
    if (ctx)
        ctx->session = s;
    return ctx;
}

void
hook_ctx_release(struct postern_ctx *ctx)
{
    if (!ctx)
        return;
    if (ctx->pending) {
        orphan_add(ctx); /* freed by postern_resume() */
        return;
    }
    free(ctx);
}

bool
hook_ctx_pending(const struct postern_ctx *ctx)
{
    return ctx && ctx->pending;
}

struct session *
hook_ctx_session(const struct postern_ctx *ctx)
{
    return ctx ? ctx->session : NULL;
}

static void
hook_finish(struct postern_ctx *ctx, postern_result result)
{
    struct hook_reply reply = ctx->reply;
    /* The reply belongs to the result of the handler that set it. */
    if (result == POSTERN_CONTINUE)
        memset(&reply, 0, sizeof(reply));
    ctx->done(ctx->session, result, &reply);
}

/* Walk the chain from ctx->index until a handler decides or goes pending. */
static void
hook_advance(struct postern_ctx *ctx)
{
    const struct hook_chain *chain = &chains[ctx->hook];

    while (ctx->index < chain->n) {
        const struct hook_handler *h = &chain->handlers[ctx->index];
        memset(&ctx->reply, 0, sizeof(ctx->reply));
        ctx->in_handler = true;
        ctx->resumed_early = false;
        postern_result r = h->fn(ctx, h->instance->state);
        ctx->in_handler = false;
        if (r == POSTERN_PENDING) {
            if (ctx->resumed_early) {
                r = ctx->early_result;
            } else {
                ctx->pending = true;
                return;
            }
        }
        if ((unsigned)r >= POSTERN_PENDING) { /* PENDING via early resume */
            log_event(LOG_LEVEL_ERROR, session_id(ctx->session), "hook",
                      "hook=%s module=%s bad_result=%d; treated as tempfail",
                      hook_names[ctx->hook], h->instance->instance, (int)r);
            r = POSTERN_TEMPFAIL;
            memset(&ctx->reply, 0, sizeof(ctx->reply));
        }
        if (r != POSTERN_CONTINUE) {
            hook_finish(ctx, r);
            return;
        }
        ctx->index++;
    }
    hook_finish(ctx, POSTERN_CONTINUE);
}

void
hook_run(struct postern_ctx *ctx, postern_hook hook, hook_done_fn done)
{
    ctx->hook = hook;
    ctx->index = 0;
    ctx->done = done;
    ctx->pending = false;
    hook_advance(ctx);
}

struct postern_ctx *
hook_notify(struct postern_ctx *ctx, postern_hook hook)
{
    const struct hook_chain *chain = &chains[hook];

    for (size_t i = 0; ctx && i < chain->n; i++) {
        const struct hook_handler *h = &chain->handlers[i];
        ctx->hook = hook;
        ctx->index = i;
        ctx->in_handler = true;
        ctx->resumed_early = false;
        postern_result r = h->fn(ctx, h->instance->state);
        ctx->in_handler = false;
        if (r != POSTERN_PENDING || ctx->resumed_early)
            continue;
        /* The module keeps this context until it resumes; it is detached
         * (orphaned) and the session goes on with a fresh one. */
        struct session *s = ctx->session;
        ctx->pending = true;
        orphan_add(ctx);
        ctx = hook_ctx_new(s);
    }
    return ctx;
}

void
postern_resume(postern_ctx *ctx, postern_result result)
{
    if (!ctx)
        return;
    if (ctx->in_handler) {
        ctx->resumed_early = true;
        ctx->early_result = result;
        return;
    }
    if (!ctx->pending) {
        log_event(LOG_LEVEL_ERROR, NULL, "hook",
                  "postern_resume called on a context that is not pending");
        return;
    }
    ctx->pending = false;
    if (!ctx->session) {
        orphan_free(ctx); /* the client went away meanwhile */
        return;
    }
    if (!ctx->done)
        return; /* not from hook_run: nothing waits for it */
    if ((unsigned)result >= POSTERN_PENDING) {
        log_event(LOG_LEVEL_ERROR, session_id(ctx->session), "hook",
                  "hook=%s bad_resume_result=%d; treated as tempfail",
                  hook_names[ctx->hook], (int)result);
        result = POSTERN_TEMPFAIL;
        memset(&ctx->reply, 0, sizeof(ctx->reply));
    }
    if (result == POSTERN_CONTINUE) {
        ctx->index++;
        hook_advance(ctx);
        return;
    }
    hook_finish(ctx, result);
}

int
postern_ctx_orphaned(const postern_ctx *ctx)
{
    return ctx && !ctx->session;
}

postern_hook
postern_ctx_hook(const postern_ctx *ctx)
{
    return ctx->hook;
}

void
postern_reply(postern_ctx *ctx, int code, const char *enhanced, const char *fmt,
              ...)
{
    struct hook_reply *r = &ctx->reply;
    va_list ap;

    r->code = (code >= 200 && code <= 599) ? code : 0;
    r->enhanced[0] = '\0';
    if (enhanced) {
        /* Keep only a well-formed class.subject.detail. */
        int a, b, c, n = 0;
        if (sscanf(enhanced, "%1d.%3d.%3d%n", &a, &b, &c, &n) == 3 &&
            enhanced[n] == '\0' && (a == 2 || a == 4 || a == 5))
            snprintf(r->enhanced, sizeof(r->enhanced), "%d.%d.%d", a, b, c);
    }
    r->text[0] = '\0';
    if (fmt) {
        va_start(ap, fmt);
        vsnprintf(r->text, sizeof(r->text), fmt, ap);
        va_end(ap);
        for (char *p = r->text; *p; p++)
            if (*p == '\r' || *p == '\n' || (unsigned char)*p < 0x20)
                *p = ' ';
    }
}

/* For postern_log(): who is logging. */

const char *
hook_ctx_log_sid(const postern_ctx *ctx)
{
    return ctx->session ? session_id(ctx->session) : NULL;
}

const char *
hook_ctx_log_instance(const postern_ctx *ctx)
{
    const struct hook_chain *chain = &chains[ctx->hook];
    return ctx->index < chain->n
               ? chain->handlers[ctx->index].instance->instance
               : NULL;
}
