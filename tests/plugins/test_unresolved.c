/*
 * test_unresolved.c - test plugin with a valid descriptor whose mail
 * handler calls a function the core does not export. Bound lazily, it
 * would load, pass --check-config and kill the daemon at the first MAIL
 * ("symbol lookup error"); the loader must refuse it at load, naming the
 * symbol and the file.
 */
#include <postern/postern.h>

/* Not part of the API: nothing defines it. */
postern_result postern_test_no_such_function(postern_ctx *ctx);

static postern_result
unresolved_mail(postern_ctx *ctx, void *instance)
{
    return postern_test_no_such_function(ctx);
}

POSTERN_MODULE_DEFINE = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "test_unresolved",
    .description = "test plugin: calls a function the core does not have",
    .handlers = {[POSTERN_HOOK_MAIL] = unresolved_mail},
};
