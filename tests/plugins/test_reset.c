/*
 * test_reset.c - test plugin: logs the transaction id the reset hook sees,
 *   test_reset id=<0123456789abcdef>
 * ("id=<(null)>" when there is none). The tests check that every reset is
 * for a real transaction with a real id. No config.
 */
#include <postern/postern.h>

static postern_result
reset_log(postern_ctx *ctx, void *instance)
{
    const char *id = postern_transaction_id(ctx);
    postern_log(ctx, POSTERN_LOG_INFO, "test_reset id=<%s>",
                id ? id : "(null)");
    return POSTERN_CONTINUE;
}

POSTERN_MODULE_DEFINE = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "test_reset",
    .description = "test plugin: logs the id the reset hook sees",
    .handlers = {[POSTERN_HOOK_RESET] = reset_log},
};
