/*
 * test_reject.c - test plugin: refuses senders and recipients.
 *
 * Offers the mail and rcpt hooks. Config (all keys optional):
 *   "code":  SMTP reply code, 500-599 (default 550)
 *   "text":  reply text (default "rejected by <instance>")
 *   "match": reject only addresses containing this substring (default:
 *            reject every address)
 * Its create() checks the config strictly, so the loader tests can watch a
 * module's own config errors come out as "FILE: $.config.KEY: ...".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <postern/postern.h>

struct test_reject {
    int code;
    char *text;
    char *match;
};

static int
bad_value(postern_module_init *init, const char *key, const char *expected,
          const json_t *v)
{
    char *got = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);

    postern_init_error(init, key, "expected %s, got %s", expected,
                       got ? got : "?");
    free(got);
    return -1;
}

/* An optional non-empty string: 0 (and *out, which may stay NULL) or -1. */
static int
string_key(postern_module_init *init, const char *key, const char **out)
{
    const json_t *v = json_object_get(postern_init_config(init), key);

    if (!v)
        return 0;
    if (!json_is_string(v) || !*json_string_value(v))
        return bad_value(init, key, "a non-empty string", v);
    *out = json_string_value(v);
    return 0;
}

static void
reject_destroy(void *instance)
{
    struct test_reject *r = instance;

    if (!r)
        return;
    free(r->text);
    free(r->match);
    free(r);
}

static int
reject_create(postern_module_init *init, void **instance)
{
    json_t *cfg = (json_t *)postern_init_config(init);
    const json_t *code = json_object_get(cfg, "code");
    const char *text = NULL, *match = NULL, *key;
    struct test_reject *r;
    json_t *v;

    json_object_foreach(cfg, key, v)
    {
        if (strcmp(key, "code") != 0 && strcmp(key, "text") != 0 &&
            strcmp(key, "match") != 0) {
            postern_init_error(init, key, "unknown key");
            return -1;
        }
    }
    if (code && (!json_is_integer(code) || json_integer_value(code) < 500 ||
                 json_integer_value(code) > 599))
        return bad_value(init, "code", "an integer between 500 and 599", code);
    if (string_key(init, "text", &text) < 0 ||
        string_key(init, "match", &match) < 0)
        return -1;
    if (!(r = calloc(1, sizeof *r)))
        return -1;
    r->code = code ? (int)json_integer_value(code) : 550;
    if (text) {
        r->text = strdup(text);
    } else {
        size_t len = strlen(postern_init_instance(init)) + 16;

        if ((r->text = malloc(len)))
            snprintf(r->text, len, "rejected by %s",
                     postern_init_instance(init));
    }
    if (!r->text || (match && !(r->match = strdup(match)))) {
        reject_destroy(r);
        postern_init_error(init, NULL, "out of memory");
        return -1;
    }
    *instance = r;
    return 0;
}

static postern_result
reject_address(postern_ctx *ctx, const struct test_reject *r,
               const char *address)
{
    if (r->match && (!address || !strstr(address, r->match)))
        return POSTERN_CONTINUE;
    postern_reply(ctx, r->code, "5.7.1", "%s", r->text);
    return POSTERN_REJECT;
}

static postern_result
reject_mail(postern_ctx *ctx, void *instance)
{
    return reject_address(ctx, instance, postern_mail_from(ctx));
}

static postern_result
reject_rcpt(postern_ctx *ctx, void *instance)
{
    return reject_address(ctx, instance, postern_rcpt_current(ctx));
}

POSTERN_MODULE_DEFINE = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "test_reject",
    .description = "test plugin: rejects MAIL and RCPT",
    .create = reject_create,
    .destroy = reject_destroy,
    .handlers =
        {
            [POSTERN_HOOK_MAIL] = reject_mail,
            [POSTERN_HOOK_RCPT] = reject_rcpt,
        },
};
