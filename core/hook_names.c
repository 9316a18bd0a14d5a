/*
 * hook_names.c - the hook names of include/postern/hook.h, used by the
 * config (plugins.d "hooks" lists) and the log. No dependencies.
 */
#include <stddef.h>

#include "postern/hook.h"

static const char *const hook_names[POSTERN_HOOK_COUNT] = {
    "connect", "helo",    "auth",  "mail",  "rcpt",
    "data",    "message", "store", "reset", "disconnect"};

const char *
postern_hook_name(postern_hook hook)
{
    return (unsigned)hook < POSTERN_HOOK_COUNT ? hook_names[hook] : NULL;
}
