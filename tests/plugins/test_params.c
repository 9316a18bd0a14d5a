/*
 * test_params.c - test plugin: reads several MAIL parameters in one mail
 * hook call and keeps every pointer before it uses any of them (as
 * session.h allows: each string is valid for the whole call), then rejects
 * the sender with a reply that shows what it read:
 *   550 5.7.1 size=<SIZE> body=<BODY> smtputf8=<SMTPUTF8> envid=<ENVID>
 * where an absent parameter shows as (null). No config.
 */
#include <postern/postern.h>

static const char *
shown(const char *value)
{
    return value ? value : "(null)";
}

static postern_result
params_mail(postern_ctx *ctx, void *instance)
{
    const char *size = postern_mail_param(ctx, "SIZE");
    const char *body = postern_mail_param(ctx, "body");
    const char *utf8 = postern_mail_param(ctx, "SMTPUTF8");
    const char *envid = postern_mail_param(ctx, "ENVID");
    const char *size_again = postern_mail_param(ctx, "Size");

    if (size != size_again)
        postern_log(ctx, POSTERN_LOG_INFO, "test_params size copied twice");
    postern_reply(ctx, 550, "5.7.1", "size=%s body=%s smtputf8=%s envid=%s",
                  shown(size), shown(body), shown(utf8), shown(envid));
    return POSTERN_REJECT;
}

POSTERN_MODULE_DEFINE = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "test_params",
    .description = "test plugin: reads MAIL parameters, rejects with them",
    .handlers = {[POSTERN_HOOK_MAIL] = params_mail},
};
