/*
 * test_abi10.c - test plugin built "for ABI 1.0", as every module was
 * before the 1.1 additions: a 1.x core must keep loading it.
 */
#include <postern/postern.h>

static postern_result
abi10_connect(postern_ctx *ctx, void *instance)
{
    return POSTERN_CONTINUE;
}

POSTERN_MODULE_DEFINE = {
    .abi_version = (1u << 16) | 0u,
    .name = "test_abi10",
    .description = "test plugin: a module built for ABI 1.0",
    .handlers = {[POSTERN_HOOK_CONNECT] = abi10_connect},
};
