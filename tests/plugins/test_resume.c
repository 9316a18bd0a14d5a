/*
 * test_resume.c - test plugin: an asynchronous rcpt handler that keeps
 * borrowed strings across PENDING and, when asked, resumes twice.
 *
 * rcpt: goes PENDING, keeping the pointers postern_rcpt_current(),
 * postern_mail_from() and postern_helo_name() returned (session.h says
 * they stay valid until the resume). After "delay" seconds (default 0.2)
 * a timer reads them, logs
 *   test_resume kept rcpt=<...> from=<...> helo=<...>
 * and resumes with REJECT "550 5.1.1 <rcpt>: meant for <rcpt>". With
 * "twice": true a second timer, "delay" + 0.1 s later, resumes the same
 * context again: a stray resume the core must detect and ignore, never
 * deliver to another command or session.
 *
 *   {"delay": 0.2, "twice": true}
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <postern/postern.h>

struct resume_config {
    double delay;
    bool twice;
};

struct resume_call {
    postern_ctx *ctx;
    const char *rcpt, *from, *helo; /* borrowed from the core */
    bool stray;                     /* the second, deliberate resume */
};

static void
on_resume_timer(void *arg)
{
    struct resume_call *call = arg;

    if (call->stray) {
        postern_resume(call->ctx, POSTERN_ACCEPT);
        free(call);
        return;
    }
    postern_log(call->ctx, POSTERN_LOG_INFO,
                "test_resume kept rcpt=<%s> from=<%s> helo=<%s>", call->rcpt,
                call->from, call->helo);
    postern_reply(call->ctx, 550, "5.1.1", "<%s>: meant for <%s>", call->rcpt,
                  call->rcpt);
    postern_resume(call->ctx, POSTERN_REJECT);
    free(call);
}

static struct resume_call *
resume_schedule(postern_ctx *ctx, double delay, bool stray)
{
    struct resume_call *call = calloc(1, sizeof(*call));
    if (!call)
        return NULL;
    call->ctx = ctx;
    call->stray = stray;
    call->rcpt = postern_rcpt_current(ctx);
    call->from = postern_mail_from(ctx);
    call->helo = postern_helo_name(ctx);
    if (!postern_timer_start(delay, on_resume_timer, call)) {
        free(call);
        return NULL;
    }
    return call;
}

static postern_result
resume_rcpt(postern_ctx *ctx, void *instance)
{
    const struct resume_config *cfg = instance;

    if (!resume_schedule(ctx, cfg->delay, false))
        return POSTERN_TEMPFAIL;
    if (cfg->twice)
        resume_schedule(ctx, cfg->delay + 0.1, true);
    return POSTERN_PENDING;
}

static int
resume_create(postern_module_init *init, void **instance)
{
    const json_t *cfg = postern_init_config(init);
    const json_t *delay = json_object_get(cfg, "delay");
    const json_t *twice = json_object_get(cfg, "twice");
    struct resume_config *rc = calloc(1, sizeof(*rc));

    if (!rc) {
        postern_init_error(init, "root", "out of memory");
        return -1;
    }
    rc->delay = delay && json_is_number(delay) ? json_number_value(delay) : 0.2;
    rc->twice = json_is_true(twice);
    *instance = rc;
    return 0;
}

POSTERN_MODULE_DEFINE = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "test_resume",
    .description = "test plugin: borrowed strings and a stray resume",
    .create = resume_create,
    .destroy = free,
    .handlers = {[POSTERN_HOOK_RCPT] = resume_rcpt},
};
