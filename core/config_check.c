/*
 * config_check.c - --check-config (see config_check.h).
 */
#include <stdio.h>

#include <ev.h>

#include "config_check.h"
#include "curl_loop.h"
#include "hook.h"
#include "loop_call.h"
#include "module.h"
#include "server.h"
#include "services.h"
#include "tls.h"

int
services_start(char *err, size_t errlen)
{
    /* The loop exists before modules are created: create() may start
     * timers or read the clock. */
    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    if (!loop) {
        snprintf(err, errlen, "cannot start the event loop");
        return -1;
    }
    services_init(loop);
    loop_call_init(loop); /* create() may already hand calls to the loop */
    /* Before modules: their create() may make libcurl easy handles. */
    return curl_loop_global_init(err, errlen);
}

int
config_check(const struct config *cfg, size_t *n_modules, char *err,
             size_t errlen)
{
    struct module_set *modules = NULL;

    int rc = tls_check(cfg, err, errlen);
    if (rc == 0)
        rc = server_become_user(cfg, true, err, errlen);
    if (rc == 0)
        rc = module_set_load(cfg, true, &modules, err, errlen);
    if (rc < 0)
        return -1;
    *n_modules = modules->n;
    loop_call_shutdown(); /* what create() queued runs before destroy() */
    module_set_free(modules);
    hook_orphans_free();
    return 0;
}
