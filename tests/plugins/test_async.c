/*
 * test_async.c - test plugin: answers any hook asynchronously.
 *
 * Offers every hook. For each hook named in its config it returns
 * POSTERN_PENDING and resumes from a timer after "delay" seconds with the
 * configured result (and reply, when "code" is given). Hooks it is not
 * configured for get CONTINUE at once. Config:
 *
 *   {"hooks": {"rcpt": {"delay": 0.2,          seconds, 0-3600 (default 0)
 *                       "result": "reject",    continue | accept | reject |
 *                                              tempfail | disconnect
 *                       "code": 550,           optional reply code
 *                       "enhanced": "5.7.1",   optional enhanced code
 *                       "text": "no",          optional reply text
 *                       "match": "slow"},      optional: act only when the
 *              ...}}                           sender or the recipient under
 *                                              decision contains this
 *
 * It logs "test_async pending hook=<name>" when it parks a hook.
 * On resume it logs "test_async resumed hook=<name>", and also
 * "test_async orphaned hook=<name>" when the client went away meanwhile,
 * which the integration tests look for.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <postern/postern.h>

struct async_hook {
    bool set;
    double delay;
    postern_result result;
    int code;       /* 0: the stage default */
    char *enhanced; /* NULL: the stage default */
    char *text;     /* NULL: the stage default */
    char *match;    /* NULL: always act */
};

/* One handler call waiting for its timer; linked so destroy can cancel. */
struct async_pending {
    struct test_async *owner;
    const struct async_hook *hook;
    postern_ctx *ctx;
    postern_timer *timer;
    struct async_pending *prev, *next;
};

struct test_async {
    struct async_hook hooks[POSTERN_HOOK_COUNT];
    struct async_pending *pending;
};

static const struct {
    const char *name;
    postern_result result;
} result_names[] = {
    {"continue", POSTERN_CONTINUE},     {"accept", POSTERN_ACCEPT},
    {"reject", POSTERN_REJECT},         {"tempfail", POSTERN_TEMPFAIL},
    {"disconnect", POSTERN_DISCONNECT}, {"discard", POSTERN_DISCARD},
};

static void
async_destroy(void *instance)
{
    struct test_async *a = instance;
    struct async_pending *p, *next;

    if (!a)
        return;
    /* Timers that never fired: the core has not freed them yet. */
    for (p = a->pending; p; p = next) {
        next = p->next;
        postern_timer_cancel(p->timer);
        free(p);
    }
    for (int h = 0; h < POSTERN_HOOK_COUNT; h++) {
        free(a->hooks[h].enhanced);
        free(a->hooks[h].text);
        free(a->hooks[h].match);
    }
    free(a);
}

static int
hook_by_name(const char *name)
{
    for (int h = 0; h < POSTERN_HOOK_COUNT; h++) {
        const char *n = postern_hook_name((postern_hook)h);

        if (n && strcmp(n, name) == 0)
            return h;
    }
    return -1;
}

/* An optional string key of one hook's object: 0, or -1 after an error. */
static int
string_key(postern_module_init *init, const char *path, const json_t *obj,
           const char *key, char **out)
{
    const json_t *v = json_object_get(obj, key);

    if (!v)
        return 0;
    if (!json_is_string(v)) {
        postern_init_error(init, path, "%s: expected a string", key);
        return -1;
    }
    if (!(*out = strdup(json_string_value(v)))) {
        postern_init_error(init, path, "out of memory");
        return -1;
    }
    return 0;
}

static int
parse_hook(postern_module_init *init, const char *name, const json_t *obj,
           struct async_hook *hook)
{
    char path[64];
    const char *key;
    json_t *v;

    snprintf(path, sizeof path, "hooks.%s", name);
    if (!json_is_object(obj)) {
        postern_init_error(init, path, "expected an object");
        return -1;
    }
    json_object_foreach((json_t *)obj, key, v)
    {
        if (strcmp(key, "delay") && strcmp(key, "result") &&
            strcmp(key, "code") && strcmp(key, "enhanced") &&
            strcmp(key, "text") && strcmp(key, "match")) {
            postern_init_error(init, path, "unknown key \"%s\"", key);
            return -1;
        }
    }
    hook->set = true;
    hook->result = POSTERN_CONTINUE;
    if ((v = json_object_get(obj, "delay"))) {
        if (!json_is_number(v) || json_number_value(v) < 0 ||
            json_number_value(v) > 3600) {
            postern_init_error(init, path,
                               "delay: expected seconds between 0 and 3600");
            return -1;
        }
        hook->delay = json_number_value(v);
    }
    if ((v = json_object_get(obj, "result"))) {
        size_t i, n = sizeof result_names / sizeof result_names[0];

        for (i = 0; i < n; i++)
            if (json_is_string(v) &&
                strcmp(json_string_value(v), result_names[i].name) == 0)
                break;
        if (i == n) {
            postern_init_error(init, path,
                               "result: expected continue, accept, reject, "
                               "tempfail or disconnect");
            return -1;
        }
        hook->result = result_names[i].result;
    }
    if ((v = json_object_get(obj, "code"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 200 ||
            json_integer_value(v) > 599) {
            postern_init_error(init, path,
                               "code: expected an integer from 200 to 599");
            return -1;
        }
        hook->code = (int)json_integer_value(v);
    }
    if (string_key(init, path, obj, "enhanced", &hook->enhanced) < 0 ||
        string_key(init, path, obj, "text", &hook->text) < 0 ||
        string_key(init, path, obj, "match", &hook->match) < 0)
        return -1;
    return 0;
}

static int
async_create(postern_module_init *init, void **instance)
{
    const json_t *cfg = postern_init_config(init);
    const json_t *hooks = json_object_get(cfg, "hooks");
    struct test_async *a;
    const char *key;
    json_t *v;

    json_object_foreach((json_t *)cfg, key, v)
    {
        if (strcmp(key, "hooks") != 0) {
            postern_init_error(init, key, "unknown key");
            return -1;
        }
    }
    if (hooks && !json_is_object(hooks)) {
        postern_init_error(init, "hooks", "expected an object");
        return -1;
    }
    if (!(a = calloc(1, sizeof *a))) {
        postern_init_error(init, NULL, "out of memory");
        return -1;
    }
    json_object_foreach((json_t *)hooks, key, v)
    {
        int h = hook_by_name(key);

        if (h < 0) {
            char path[64];

            snprintf(path, sizeof path, "hooks.%s", key);
            postern_init_error(init, path, "expected a hook name");
            async_destroy(a);
            return -1;
        }
        if (parse_hook(init, key, v, &a->hooks[h]) < 0) {
            async_destroy(a);
            return -1;
        }
    }
    *instance = a;
    return 0;
}

static bool
contains(const char *s, const char *needle)
{
    return s && strstr(s, needle);
}

static void
async_fire(void *arg)
{
    struct async_pending *p = arg;
    const struct async_hook *hook = p->hook;
    postern_ctx *ctx = p->ctx;
    const char *name = postern_hook_name(postern_ctx_hook(ctx));

    /* Unlink first: the timer is the core's to free once we return. */
    if (p->prev)
        p->prev->next = p->next;
    else
        p->owner->pending = p->next;
    if (p->next)
        p->next->prev = p->prev;
    free(p);

    postern_log(ctx, POSTERN_LOG_INFO, "test_async resumed hook=%s",
                name ? name : "?");
    if (postern_ctx_orphaned(ctx))
        postern_log(ctx, POSTERN_LOG_INFO, "test_async orphaned hook=%s",
                    name ? name : "?");
    else if (hook->code || hook->enhanced || hook->text)
        postern_reply(ctx, hook->code, hook->enhanced, "%s",
                      hook->text ? hook->text : "test_async");
    postern_resume(ctx, hook->result);
}

static postern_result
async_handle(postern_ctx *ctx, void *instance)
{
    struct test_async *a = instance;
    postern_hook h = postern_ctx_hook(ctx);
    const struct async_hook *hook;
    struct async_pending *p;

    if ((int)h < 0 || h >= POSTERN_HOOK_COUNT || !a->hooks[h].set)
        return POSTERN_CONTINUE;
    hook = &a->hooks[h];
    if (hook->match && !contains(postern_mail_from(ctx), hook->match) &&
        !(h == POSTERN_HOOK_RCPT &&
          contains(postern_rcpt_current(ctx), hook->match)))
        return POSTERN_CONTINUE;
    if (!(p = calloc(1, sizeof *p))) {
        postern_log(ctx, POSTERN_LOG_ERROR, "test_async: out of memory");
        return POSTERN_TEMPFAIL;
    }
    p->owner = a;
    p->hook = hook;
    p->ctx = ctx;
    if (!(p->timer = postern_timer_start(hook->delay, async_fire, p))) {
        free(p);
        postern_log(ctx, POSTERN_LOG_ERROR, "test_async: no timer");
        return POSTERN_TEMPFAIL;
    }
    p->next = a->pending;
    if (a->pending)
        a->pending->prev = p;
    a->pending = p;
    postern_log(ctx, POSTERN_LOG_INFO, "test_async pending hook=%s",
                postern_hook_name(h));
    return POSTERN_PENDING;
}

POSTERN_MODULE_DEFINE = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "test_async",
    .description = "test plugin: resumes any hook from a timer",
    .create = async_create,
    .destroy = async_destroy,
    .handlers =
        {
            [POSTERN_HOOK_CONNECT] = async_handle,
            [POSTERN_HOOK_HELO] = async_handle,
            [POSTERN_HOOK_AUTH] = async_handle,
            [POSTERN_HOOK_MAIL] = async_handle,
            [POSTERN_HOOK_RCPT] = async_handle,
            [POSTERN_HOOK_DATA] = async_handle,
            [POSTERN_HOOK_MESSAGE] = async_handle,
            [POSTERN_HOOK_STORE] = async_handle,
            [POSTERN_HOOK_RESET] = async_handle,
            [POSTERN_HOOK_DISCONNECT] = async_handle,
        },
};
