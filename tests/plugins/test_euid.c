/*
 * test_euid.c - test plugin that logs the user and group its create() runs
 * as:
 *   test_euid create euid=<n> egid=<n> check_only=<0|1>
 * so the tests can see that --check-config, like the daemon, creates
 * modules as the configured "user", never as root. No config.
 */
#include <unistd.h>

#include <postern/postern.h>

static int
euid_create(postern_module_init *init, void **instance)
{
    postern_log(NULL, POSTERN_LOG_INFO,
                "test_euid create euid=%u egid=%u check_only=%d",
                (unsigned)geteuid(), (unsigned)getegid(),
                postern_init_check_only(init));
    *instance = NULL;
    return 0;
}

static postern_result
euid_connect(postern_ctx *ctx, void *instance)
{
    return POSTERN_CONTINUE;
}

POSTERN_MODULE_DEFINE = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "test_euid",
    .description = "test plugin: logs the euid of create()",
    .create = euid_create,
    .handlers = {[POSTERN_HOOK_CONNECT] = euid_connect},
};
