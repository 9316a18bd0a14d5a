/*
 * config_check.c - --check-config (see config_check.h).
 */
#include <stdio.h>
#include <string.h>

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

/* The modules as a worker would load them, in check mode. */
static int
check_load(const struct config *cfg, struct module_set **modules, char *err,
           size_t errlen)
{
    int rc = tls_check(cfg, err, errlen);
    if (rc == 0)
        rc = server_become_user(cfg, true, err, errlen);
    if (rc == 0)
        rc = module_set_load(cfg, true, modules, err, errlen);
    return rc;
}

static void
check_unload(struct module_set *modules)
{
    loop_call_shutdown(); /* what create() queued runs before destroy() */
    module_set_free(modules);
    hook_orphans_free();
}

int
config_check(const struct config *cfg, size_t *n_modules, char *err,
             size_t errlen)
{
    struct module_set *modules = NULL;

    if (check_load(cfg, &modules, err, errlen) < 0)
        return -1;
    *n_modules = modules->n;
    check_unload(modules);
    return 0;
}

/* One hook point: its handlers in chain order, columns aligned. */
static void
print_chain(FILE *out, postern_hook h)
{
    const struct module_instance *mi;
    int wi = 0, wm = 0;

    fprintf(out, "%s\n", postern_hook_name(h));
    for (size_t i = 0; (mi = hook_chain_instance(h, i)); i++) {
        int li = (int)strlen(mi->instance), lm = (int)strlen(mi->desc->name);
        wi = li > wi ? li : wi;
        wm = lm > wm ? lm : wm;
    }
    if (hook_chain_length(h) == 0)
        fprintf(out, "  (none)\n");
    for (size_t i = 0; (mi = hook_chain_instance(h, i)); i++)
        fprintf(out, "  %zu. %-*s  %-*s  %s\n", i + 1, wi, mi->instance, wm,
                mi->desc->name, mi->file);
}

int
config_print_hooks(const struct config *cfg, FILE *out, char *err,
                   size_t errlen)
{
    struct module_set *modules = NULL;

    if (check_load(cfg, &modules, err, errlen) < 0)
        return -1;
    /* The very chains the daemon builds from the set. */
    if (hook_chains_build(modules) < 0) {
        snprintf(err, errlen, "out of memory");
        hook_chains_free();
        check_unload(modules);
        return -1;
    }
    for (int h = 0; h < POSTERN_HOOK_COUNT; h++)
        print_chain(out, (postern_hook)h);
    hook_chains_free();
    check_unload(modules);
    return 0;
}
