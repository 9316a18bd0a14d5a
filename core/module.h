/*
 * module.h - the module loader: turns the plugins.d files into a set of
 * module instances, each a loaded .so, its checked descriptor, the hooks
 * it is attached to and the state its create() returned.
 *
 * A set is built once (start-up, --check-config, SIGHUP) and freed as a
 * whole; the hook dispatcher flattens it into per-hook chains in set order,
 * which is the order of the plugins.d file names.
 */
#ifndef POSTERN_MODULE_INTERNAL_H
#define POSTERN_MODULE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <ltdl.h>

#include <postern/module.h>

#include "config.h"

struct module_instance {
    char *instance; /* plugins.d file name without .json */
    char *file;     /* the plugins.d file, for messages */
    const postern_module *desc;
    void *state;         /* what create() returned */
    unsigned hooks_mask; /* effective: the hooks this instance is on */
    unsigned threads;    /* "threads" of its file: 0 uses the shared pool */
    struct pool *pool;   /* its own, while the pools run (pool.c) */
    lt_dlhandle handle;
    unsigned metrics_id; /* its labels in metrics.h; METRICS_NO_ID: none */
};

struct module_set {
    struct module_instance *items; /* in plugins.d file name order */
    size_t n;
};

/*
 * Load the plugin configs from cfg->plugins_dir; for each, open
 * <module>.so from the first directory of cfg->module_path that has it,
 * check the ABI, the descriptor's name and the hooks the file asks for,
 * then call create() with the instance's config (borrowed for the call:
 * a module copies what it keeps). check_only is what
 * postern_init_check_only() answers. Returns 0 and the set, or -1 with one
 * line in err naming the file (and the JSON path where there is one).
 */
int module_set_load(const struct config *cfg, bool check_only,
                    struct module_set **out, char *err, size_t errlen);

/* destroy() each instance in reverse order, close the .so files. NULL ok. */
void module_set_free(struct module_set *set);

/* Would the loader accept a descriptor with this abi_version? */
bool module_abi_compatible(unsigned abi_version);

#endif
