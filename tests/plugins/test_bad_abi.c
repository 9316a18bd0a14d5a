/*
 * test_bad_abi.c - test plugin built "for ABI 2.0": the loader must refuse
 * it and name both versions, without reading anything else in it.
 */
#include <postern/postern.h>

static postern_result
bad_abi_connect(postern_ctx *ctx, void *instance)
{
    return POSTERN_CONTINUE;
}

POSTERN_MODULE_DEFINE = {
    .abi_version = 2u << 16,
    .name = "test_bad_abi",
    .description = "test plugin: a future, incompatible ABI",
    .handlers = {[POSTERN_HOOK_CONNECT] = bad_abi_connect},
};
