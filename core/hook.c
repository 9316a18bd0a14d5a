/*
 * hook.c - hook chains, the hook context and the result/reply/resume
 * contract of include/postern/hook.h.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "postern/log.h"

#include "hook.h"
#include "log.h"
#include "metrics.h"
#include "module.h"
#include "module_scope.h"

struct hook_handler {
    const struct module_instance *instance;
    postern_handler fn;
};

struct hook_chain {
    struct hook_handler *handlers;
    size_t n;
};

static struct hook_chain chains[POSTERN_HOOK_COUNT];

struct hook_ctx {
    struct session *session; /* held by this context while orphaned */
    const char *sid;
    const struct hook_owner_ops *ops;
    bool orphaned;
    postern_hook hook;
    size_t index; /* handler running or pending */
    hook_done_fn done;
    bool pending;
    bool in_handler;
    bool resumed_early; /* resume called before the handler returned */
    postern_result early_result;
    struct hook_reply reply;
    uint32_t slot;
    struct hook_ctx *orphan_prev, *orphan_next; /* while orphaned */
    struct hook_work *works;                    /* tied to the current call */
    double run_started, call_started; /* metrics_clock(), for the metrics */
};

/* --- handles: slot + generation --- */

/* Half of a pointer's bits for the slot, half for the generation. */
#define HANDLE_BITS (sizeof(uintptr_t) * 4)
#define HANDLE_MASK (((uintptr_t)1 << HANDLE_BITS) - 1)
#define HANDLE_HISTORY 8

struct ctx_slot {
    struct hook_ctx *ctx; /* NULL: free */
    uintptr_t gen;        /* generation of the live handle */
    uint32_t next_free;   /* free list, index + 1 */
    /* who held the last few generations, for the log of a stray call */
    const char *retired[HANDLE_HISTORY];
};

static struct ctx_slot *slots;
static uint32_t n_slots, cap_slots, free_slots; /* free_slots: index + 1 */

/*
 * Only the loop thread changes the table and the contexts, and it reads
 * them without a lock. postern_log() may be called with a pending
 * context from any thread (log.h), so what it reads (the table, which
 * grows by realloc, a slot's context and generation) is changed under
 * this lock, and read under it off the loop thread.
 */
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;

static postern_ctx *
handle_make(uint32_t slot, uintptr_t gen)
{
    return (postern_ctx *)(((gen & HANDLE_MASK) << HANDLE_BITS) |
                           ((uintptr_t)slot + 1));
}

static bool
handle_split(const postern_ctx *handle, uint32_t *slot, uintptr_t *gen)
{
    uintptr_t h = (uintptr_t)handle;
    uintptr_t s = h & HANDLE_MASK;
    if (s == 0 || s > n_slots)
        return false;
    *slot = (uint32_t)(s - 1);
    *gen = h >> HANDLE_BITS;
    return true;
}

/* The context a handle is live for; NULL when dead or never valid. */
static struct hook_ctx *
ctx_from(const postern_ctx *handle)
{
    uint32_t slot;
    uintptr_t gen;
    if (!handle_split(handle, &slot, &gen))
        return NULL;
    const struct ctx_slot *cs = &slots[slot];
    return cs->ctx && (cs->gen & HANDLE_MASK) == gen ? cs->ctx : NULL;
}

postern_ctx *
hook_ctx_handle(struct hook_ctx *ctx)
{
    return handle_make(ctx->slot, slots[ctx->slot].gen);
}

/* --- work tied to a call --- */

int
hook_work_attach(const postern_ctx *handle, struct hook_work *w)
{
    struct hook_ctx *ctx = ctx_from(handle);
    if (!ctx || ctx->orphaned)
        return -1;
    w->ctx = ctx;
    w->prev = NULL;
    w->next = ctx->works;
    if (ctx->works)
        ctx->works->prev = w;
    ctx->works = w;
    return 0;
}

void
hook_work_detach(struct hook_work *w)
{
    if (!w->ctx)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        w->ctx->works = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->ctx = NULL;
    w->prev = w->next = NULL;
}

static void
works_detach_all(struct hook_ctx *ctx)
{
    while (ctx->works)
        hook_work_detach(ctx->works);
}

/* The session went away during the call: its work is abandoned. */
static void
works_abandon_all(struct hook_ctx *ctx)
{
    while (ctx->works) {
        struct hook_work *w = ctx->works;
        hook_work_detach(w);
        w->abandon(w);
    }
}

/* The call the live handle belongs to is over: the handle dies. */
static void
ctx_retire(struct hook_ctx *ctx, const char *instance)
{
    struct ctx_slot *cs = &slots[ctx->slot];
    works_detach_all(ctx);
    pthread_mutex_lock(&slots_lock);
    cs->retired[cs->gen % HANDLE_HISTORY] = instance;
    cs->gen++;
    pthread_mutex_unlock(&slots_lock);
}

static bool
slot_count_fits(uint64_t n)
{
    return n <= (uint64_t)HANDLE_MASK;
}

static int
slot_take_locked(struct hook_ctx *ctx)
{
    if (!free_slots && n_slots == cap_slots) {
        uint32_t cap = cap_slots ? cap_slots * 2 : 64;
        if (!slot_count_fits(cap))
            return -1;
        struct ctx_slot *grown = realloc(slots, cap * sizeof(*grown));
        if (!grown)
            return -1;
        slots = grown;
        cap_slots = cap;
    }
    uint32_t i;
    if (free_slots) {
        i = free_slots - 1;
        free_slots = slots[i].next_free;
    } else {
        i = n_slots++;
        slots[i] = (struct ctx_slot){0};
    }
    slots[i].ctx = ctx;
    ctx->slot = i;
    return 0;
}

static int
slot_take(struct hook_ctx *ctx)
{
    pthread_mutex_lock(&slots_lock);
    int rc = slot_take_locked(ctx);
    pthread_mutex_unlock(&slots_lock);
    return rc;
}

/* Freed contexts kept for the next one: an idle session gives its context
 * back (session.c), so each transaction makes one, and calloc/free of it
 * showed in the profile. Loop thread only; bounded. */
#define SPARE_CTXS 8
static struct hook_ctx *spare_ctxs[SPARE_CTXS];
static unsigned n_spare_ctxs;

static void
ctx_free(struct hook_ctx *ctx)
{
    struct ctx_slot *cs = &slots[ctx->slot];
    works_detach_all(ctx);
    hook_reply_clear(&ctx->reply);
    pthread_mutex_lock(&slots_lock);
    cs->ctx = NULL;
    cs->gen++; /* any handle still around is dead */
    cs->next_free = free_slots;
    free_slots = ctx->slot + 1;
    pthread_mutex_unlock(&slots_lock);
    if (n_spare_ctxs < SPARE_CTXS)
        spare_ctxs[n_spare_ctxs++] = ctx;
    else
        free(ctx);
}

/* A call on a dead handle: logged with the instance it belonged to. */
static void
log_dead_handle(const postern_ctx *handle, const char *what)
{
    uint32_t slot;
    uintptr_t gen;
    const char *instance = NULL;
    if (handle_split(handle, &slot, &gen)) {
        const struct ctx_slot *cs = &slots[slot];
        uintptr_t age = (cs->gen - gen) & HANDLE_MASK;
        if (age >= 1 && age <= HANDLE_HISTORY)
            instance = cs->retired[gen % HANDLE_HISTORY];
    }
    log_event(LOG_LEVEL_ERROR, NULL, "hook",
              "stray %s module=%s: its hook call is already over; ignored",
              what, postern_log_value(instance));
}

/* --- orphans --- */

/* Orphaned contexts still held by modules; freed at resume or at exit. */
static struct hook_ctx *orphans;

static void
orphan_add(struct hook_ctx *ctx)
{
    ctx->orphaned = true;
    ctx->orphan_prev = NULL;
    ctx->orphan_next = orphans;
    if (orphans)
        orphans->orphan_prev = ctx;
    orphans = ctx;
    if (ctx->ops && ctx->ops->hold)
        ctx->ops->hold(ctx->session);
}

static void
orphan_free(struct hook_ctx *ctx)
{
    struct session *s = ctx->session;
    const struct hook_owner_ops *ops = ctx->ops;

    if (ctx->orphan_prev)
        ctx->orphan_prev->orphan_next = ctx->orphan_next;
    else
        orphans = ctx->orphan_next;
    if (ctx->orphan_next)
        ctx->orphan_next->orphan_prev = ctx->orphan_prev;
    ctx_free(ctx);
    if (ops && ops->release)
        ops->release(s);
}

void
hook_orphans_free(void)
{
    while (orphans)
        orphan_free(orphans);
    while (n_spare_ctxs > 0)
        free(spare_ctxs[--n_spare_ctxs]);
    if (n_slots == 0 || free_slots == 0)
        return;
    /* Nothing is left; the table goes when every slot is free. */
    uint32_t n_free = 0;
    for (uint32_t i = free_slots; i; i = slots[i - 1].next_free)
        n_free++;
    if (n_free == n_slots) {
        pthread_mutex_lock(&slots_lock);
        free(slots);
        slots = NULL;
        n_slots = cap_slots = free_slots = 0;
        pthread_mutex_unlock(&slots_lock);
    }
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

const struct module_instance *
hook_chain_instance(postern_hook hook, size_t i)
{
    return i < chains[hook].n ? chains[hook].handlers[i].instance : NULL;
}

struct hook_ctx *
hook_ctx_new(struct session *s, const char *sid,
             const struct hook_owner_ops *ops)
{
    struct hook_ctx *ctx =
        n_spare_ctxs > 0 ? spare_ctxs[--n_spare_ctxs] : malloc(sizeof(*ctx));
    if (!ctx)
        return NULL;
    memset(ctx, 0, sizeof(*ctx));
    if (slot_take(ctx) < 0) {
        free(ctx);
        return NULL;
    }
    ctx->session = s;
    ctx->sid = sid;
    ctx->ops = ops;
    return ctx;
}

void
hook_ctx_release(struct hook_ctx *ctx)
{
    if (!ctx)
        return;
    if (ctx->pending) {
        orphan_add(ctx); /* freed by postern_resume() */
        works_abandon_all(ctx);
        return;
    }
    ctx_free(ctx);
}

bool
hook_ctx_pending(const struct hook_ctx *ctx)
{
    return ctx && ctx->pending;
}

struct session *
hook_ctx_session(const postern_ctx *handle)
{
    const struct hook_ctx *ctx = ctx_from(handle);
    return ctx && !ctx->orphaned ? ctx->session : NULL;
}

static const char *
ctx_instance(const struct hook_ctx *ctx)
{
    const struct hook_chain *chain = &chains[ctx->hook];
    return ctx->index < chain->n
               ? chain->handlers[ctx->index].instance->instance
               : NULL;
}

/* Hooks where POSTERN_DISCARD means "accept, then drop the message". */
static bool
hook_discard_allowed(postern_hook hook)
{
    return hook == POSTERN_HOOK_MAIL || hook == POSTERN_HOOK_RCPT ||
           hook == POSTERN_HOOK_DATA || hook == POSTERN_HOOK_MESSAGE ||
           hook == POSTERN_HOOK_STORE;
}

static void
hook_finish(struct hook_ctx *ctx, postern_result result)
{
    /* The reply (and its extra lines) moves to this call: the done
     * callback may run the next hook on the same context. */
    struct hook_reply reply = ctx->reply;
    memset(&ctx->reply, 0, sizeof(ctx->reply));
    /* The reply belongs to the result of the handler that set it. */
    if (result == POSTERN_CONTINUE)
        hook_reply_clear(&reply);
    if (ctx->hook == POSTERN_HOOK_STORE)
        metrics_store_latency(metrics_clock() - ctx->run_started);
    if (result == POSTERN_DISCARD && !hook_discard_allowed(ctx->hook)) {
        log_event(LOG_LEVEL_WARNING, ctx->sid, "hook",
                  "hook=%s module=%s result=discard is not possible here; "
                  "treated as tempfail",
                  postern_hook_name(ctx->hook),
                  postern_log_value(ctx_instance(ctx)));
        result = POSTERN_TEMPFAIL;
    }
    ctx->done(ctx->session, result, &reply);
    hook_reply_clear(&reply); /* ctx may be gone: only the local copy */
}

/* A result outside the enum is a module bug: TEMPFAIL. */
static postern_result
result_checked(struct hook_ctx *ctx, postern_result r, const char *instance)
{
    if ((unsigned)r < POSTERN_PENDING || r == POSTERN_DISCARD)
        return r;
    log_event(LOG_LEVEL_ERROR, ctx->sid, "hook",
              "hook=%s module=%s bad_result=%d; treated as tempfail",
              postern_hook_name(ctx->hook), postern_log_value(instance),
              (int)r);
    hook_reply_clear(&ctx->reply);
    return POSTERN_TEMPFAIL;
}

/* Call handler h with a live handle; PENDING when it is still out. */
static postern_result
hook_call(struct hook_ctx *ctx, const struct hook_handler *h)
{
    hook_reply_clear(&ctx->reply);
    ctx->in_handler = true;
    ctx->resumed_early = false;
    ctx->call_started = metrics_clock();
    const struct module_instance *was = module_scope_enter(h->instance);
    postern_result r = h->fn(hook_ctx_handle(ctx), h->instance->state);
    module_scope_leave(was);
    ctx->in_handler = false;
    if (r == POSTERN_PENDING && ctx->resumed_early)
        r = ctx->early_result;
    else if (r == POSTERN_PENDING) {
        metrics_pending(1);
        return r; /* the handle stays live until the resume */
    }
    ctx_retire(ctx, h->instance->instance);
    r = result_checked(ctx, r, h->instance->instance);
    metrics_hook_result(h->instance->metrics_id, ctx->hook, r,
                        metrics_clock() - ctx->call_started);
    return r;
}

/* Walk the chain from ctx->index until a handler decides or goes pending. */
static void
hook_advance(struct hook_ctx *ctx)
{
    const struct hook_chain *chain = &chains[ctx->hook];

    while (ctx->index < chain->n) {
        postern_result r = hook_call(ctx, &chain->handlers[ctx->index]);
        if (r == POSTERN_PENDING) {
            ctx->pending = true;
            return;
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
hook_run(struct hook_ctx *ctx, postern_hook hook, hook_done_fn done)
{
    ctx->hook = hook;
    ctx->index = 0;
    ctx->done = done;
    ctx->pending = false;
    ctx->run_started = metrics_clock();
    hook_advance(ctx);
}

struct hook_ctx *
hook_notify(struct hook_ctx *ctx, postern_hook hook)
{
    const struct hook_chain *chain = &chains[hook];

    for (size_t i = 0; ctx && i < chain->n; i++) {
        ctx->hook = hook;
        ctx->index = i;
        ctx->done = NULL;
        if (hook_call(ctx, &chain->handlers[i]) != POSTERN_PENDING)
            continue;
        /* The module keeps this context until it resumes; it is orphaned
         * and the session goes on with a fresh one. */
        struct hook_ctx *next = hook_ctx_new(ctx->session, ctx->sid, ctx->ops);
        ctx->pending = true;
        orphan_add(ctx);
        ctx = next;
    }
    return ctx;
}

void
postern_resume(postern_ctx *handle, postern_result result)
{
    struct hook_ctx *ctx = ctx_from(handle);

    if (!ctx || (ctx->in_handler && ctx->resumed_early) ||
        (!ctx->in_handler && !ctx->pending)) {
        log_dead_handle(handle, "postern_resume");
        return;
    }
    if (ctx->in_handler) {
        ctx->resumed_early = true; /* taken when the handler returns */
        ctx->early_result = result;
        return;
    }
    const char *instance = ctx_instance(ctx);
    const struct hook_chain *chain = &chains[ctx->hook];
    if (ctx->index < chain->n) /* counted as the module said it */
        metrics_hook_result(
            chain->handlers[ctx->index].instance->metrics_id, ctx->hook,
            (unsigned)result < POSTERN_PENDING || result == POSTERN_DISCARD
                ? result
                : POSTERN_TEMPFAIL,
            metrics_clock() - ctx->call_started);
    metrics_pending(-1);
    ctx->pending = false;
    ctx_retire(ctx, instance);
    if (ctx->orphaned) {
        orphan_free(ctx); /* the client went away meanwhile */
        return;
    }
    if (!ctx->done)
        return; /* not from hook_run: nothing waits for it */
    /* What follows is the session's, not the resuming module's. */
    const struct module_instance *was = module_scope_enter(NULL);
    result = result_checked(ctx, result, instance);
    if (result == POSTERN_CONTINUE) {
        ctx->index++;
        hook_advance(ctx);
    } else {
        hook_finish(ctx, result);
    }
    module_scope_leave(was);
}

int
postern_ctx_orphaned(const postern_ctx *handle)
{
    const struct hook_ctx *ctx = ctx_from(handle);
    return !ctx || ctx->orphaned;
}

postern_hook
postern_ctx_hook(const postern_ctx *handle)
{
    const struct hook_ctx *ctx = ctx_from(handle);
    return ctx ? ctx->hook : POSTERN_HOOK_COUNT;
}

void
hook_reply_clear(struct hook_reply *r)
{
    free(r->more);
    memset(r, 0, sizeof(*r));
}

int
hook_reply_copy(struct hook_reply *dst, const struct hook_reply *src)
{
    *dst = *src;
    dst->more = NULL;
    dst->more_len = 0;
    dst->n_more = 0;
    if (!src->n_more)
        return 0;
    if (!(dst->more = malloc(src->more_len)))
        return -1;
    memcpy(dst->more, src->more, src->more_len);
    dst->more_len = src->more_len;
    dst->n_more = src->n_more;
    return 0;
}

/* One line of reply text: printf-formatted, cut to size, control
 * characters (CR and LF included) replaced so it stays one line. */
static void
reply_format(char *out, size_t size, const char *fmt, va_list ap)
{
    vsnprintf(out, size, fmt, ap);
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20)
            *p = ' ';
}

void
postern_reply(postern_ctx *handle, int code, const char *enhanced,
              const char *fmt, ...)
{
    struct hook_ctx *ctx = ctx_from(handle);
    va_list ap;

    if (!ctx) {
        log_dead_handle(handle, "postern_reply");
        return;
    }
    struct hook_reply *r = &ctx->reply;
    hook_reply_clear(r); /* a new reply replaces the lines of the last */
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
        reply_format(r->text, sizeof(r->text), fmt, ap);
        va_end(ap);
    }
    r->set = true;
}

int
postern_reply_line(postern_ctx *handle, const char *fmt, ...)
{
    struct hook_ctx *ctx = ctx_from(handle);
    va_list ap;

    if (!ctx) {
        log_dead_handle(handle, "postern_reply_line");
        return -1;
    }
    struct hook_reply *r = &ctx->reply;
    if (!r->set || r->n_more + 1 >= HOOK_REPLY_LINES_MAX || !fmt)
        return -1;
    char line[sizeof(r->text)];
    va_start(ap, fmt);
    reply_format(line, sizeof(line), fmt, ap);
    va_end(ap);
    size_t len = strlen(line) + 1;
    char *grown = realloc(r->more, r->more_len + len);
    if (!grown)
        return -1;
    memcpy(grown + r->more_len, line, len);
    r->more = grown;
    r->more_len += len;
    r->n_more++;
    return 0;
}

/* For postern_log(): who is logging. */

const char *
hook_ctx_log_sid(const postern_ctx *handle)
{
    const char *sid, *instance;
    hook_ctx_log_names(handle, &sid, &instance);
    return sid;
}

const char *
hook_ctx_log_instance(const postern_ctx *handle)
{
    const char *sid, *instance;
    hook_ctx_log_names(handle, &sid, &instance);
    return instance;
}

void
hook_ctx_log_names(const postern_ctx *handle, const char **sid,
                   const char **instance)
{
    pthread_mutex_lock(&slots_lock);
    const struct hook_ctx *ctx = ctx_from(handle);
    *sid = ctx ? ctx->sid : NULL;
    *instance = ctx ? ctx_instance(ctx) : NULL;
    pthread_mutex_unlock(&slots_lock);
}

postern_hook
hook_ctx_hook(const struct hook_ctx *ctx)
{
    return ctx ? ctx->hook : POSTERN_HOOK_COUNT;
}

const char *
hook_ctx_decider(const struct hook_ctx *ctx)
{
    return ctx ? ctx_instance(ctx) : NULL;
}
