/*
 * module.c - the module loader and the postern_init_* functions a module's
 * create() uses.
 *
 * For each plugins.d file, in name order: find <module>.so on the module
 * path, open it with libltdl (symbols local, so every module may export the
 * same descriptor name; every symbol bound at once, see module_open), check
 * the descriptor (ABI first: nothing else in
 * it may be read when the major differs), attach the hooks the file asks
 * for, and let create() validate the module's own config. Any failure
 * stops the load with one line naming the file.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include <postern/metrics.h>

#include "metrics.h"
#include "module.h"
#include "module_scope.h"

struct postern_module_init {
    const json_t *config;
    const char *instance;
    const char *file;
    const char *hostname; /* the main config's */
    bool check_only;
    bool failed; /* postern_init_error() was called */
    char *err;
    size_t errlen;
    const char *module; /* the module's name, for its counters' names */
};

/* --- what create() is given ------------------------------------------- */

const json_t *
postern_init_config(const postern_module_init *init)
{
    return init->config;
}

const char *
postern_init_instance(const postern_module_init *init)
{
    return init->instance;
}

int
postern_init_check_only(const postern_module_init *init)
{
    return init->check_only;
}

const char *
postern_init_hostname(const postern_module_init *init)
{
    return init->hostname;
}

/* Control characters would split the one-line message. */
static void
one_line(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = ' ';
}

/* --- a module's own counters (postern/metrics.h) -------------------- */

/* A handle is the counter's id + 1 (no allocation, nothing to free); a
 * handle that counts nothing (metrics off, --check-config, a full
 * registry) is NO_COUNTER. */
#define NO_COUNTER ((postern_counter *)(uintptr_t)(METRICS_NO_ID + 1))

static bool
counter_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n < 7 || n > 64 || strcmp(name + n - 6, "_total") != 0 ||
        !(name[0] >= 'a' && name[0] <= 'z'))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((name[i] >= 'a' && name[i] <= 'z') ||
              (name[i] >= '0' && name[i] <= '9') || name[i] == '_'))
            return false;
    return true;
}

postern_counter *
postern_init_counter(postern_module_init *init, const char *name,
                     const char *help)
{
    if (!counter_name_ok(name)) {
        postern_init_error(init, "",
                           "module %s registers a counter named \"%s\"; "
                           "expected lower-case letters, digits and '_', "
                           "ending in _total",
                           init->module, name ? name : "");
        return NULL;
    }
    if (init->check_only)
        return NO_COUNTER;
    char full[METRICS_NAME_MAX];
    snprintf(full, sizeof(full), "postern_%s_%s", init->module, name);
    char line[METRICS_HELP_MAX];
    snprintf(line, sizeof(line), "%s", help ? help : "");
    one_line(line);
    unsigned id = metrics_module_counter_id(full, init->instance, line);
    return (postern_counter *)(uintptr_t)(id + 1);
}

void
postern_counter_add(postern_counter *counter, uint64_t n)
{
    uintptr_t id = (uintptr_t)counter;
    if (id > 0 && counter != NO_COUNTER)
        metrics_module_add((unsigned)(id - 1), n);
}

void
postern_init_error(postern_module_init *init, const char *json_path,
                   const char *fmt, ...)
{
    const char *path = json_path ? json_path : "";
    va_list ap;
    int n;

    /* The first complaint is the one the operator sees. */
    if (init->failed || init->errlen == 0) {
        init->failed = true;
        return;
    }
    init->failed = true;
    n = snprintf(init->err, init->errlen, "%s: $.config%s%s: ", init->file,
                 *path && *path != '[' ? "." : "", path);
    if (n < 0 || (size_t)n >= init->errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(init->err + n, init->errlen - n, fmt, ap);
    va_end(ap);
    one_line(init->err);
}

/* --- loading ---------------------------------------------------------- */

bool
module_abi_compatible(unsigned abi_version)
{
    return (abi_version >> 16) == POSTERN_ABI_MAJOR &&
           (abi_version & 0xffffu) <= POSTERN_ABI_MINOR;
}

static const char *
dlerror_text(void)
{
    const char *e = lt_dlerror();

    return e ? e : "unknown error";
}

/*
 * Open <module>.so from the first module_path directory that has it. A file
 * that is there but does not load is reported as it is, not skipped.
 *
 * libltdl binds symbols lazily and has no advice for RTLD_NOW: a module
 * calling a function the core does not export would load, pass
 * --check-config, and kill the daemon with "symbol lookup error" the first
 * time the call is made. So the file is first opened with dlopen(RTLD_NOW),
 * which resolves every symbol or fails naming the one that is missing;
 * libltdl then opens the object already in memory (bound), and the first
 * reference is dropped.
 */
static int
module_open(const struct config *cfg, const struct plugin_config *pc,
            lt_dlhandle *handle, char **path, char *err, size_t errlen)
{
    char searched[1024] = "";
    const char *why = "module_path is empty";
    bool reported = false;
    lt_dladvise advise;
    size_t used = 0;

    *handle = NULL;
    if (lt_dladvise_init(&advise) != 0 || lt_dladvise_local(&advise) != 0) {
        snprintf(err, errlen, "%s: cannot set up libltdl: %s", pc->file,
                 dlerror_text());
        lt_dladvise_destroy(&advise);
        return -1;
    }
    for (size_t i = 0; i < cfg->n_module_path && !*handle; i++) {
        if (asprintf(path, "%s/%s.so", cfg->module_path[i], pc->module) < 0) {
            *path = NULL;
            snprintf(err, errlen, "%s: out of memory", pc->file);
            reported = true;
            break;
        }
        void *bound = dlopen(*path, RTLD_NOW | RTLD_LOCAL);
        if (bound) {
            *handle = lt_dlopenadvise(*path, advise);
            why = *handle ? NULL : dlerror_text();
            dlclose(bound); /* libltdl's reference keeps it loaded */
            if (*handle)
                break;
        } else {
            const char *e = dlerror();
            why = e ? e : "unknown error";
        }
        if (access(*path, F_OK) == 0) {
            snprintf(err, errlen, "%s: module %s (%s): cannot load: %s",
                     pc->file, pc->module, *path, why);
            reported = true;
            break;
        }
        used += (size_t)snprintf(searched + used, sizeof searched - used,
                                 "%s%s", used ? ", " : "", cfg->module_path[i]);
        if (used >= sizeof searched)
            used = sizeof searched - 1;
        free(*path);
        *path = NULL;
    }
    lt_dladvise_destroy(&advise);
    if (*handle)
        return 0;
    if (!reported)
        snprintf(err, errlen, "%s: module %s: %s.so not found in %s (%s)",
                 pc->file, pc->module, pc->module,
                 *searched ? searched : "no directory", why);
    free(*path);
    *path = NULL;
    one_line(err);
    return -1;
}

/*
 * The position of a hook name in the file's "hooks" array. plugin_config
 * keeps only the mask, so the file is read again; this runs only to word
 * an error message, and a file that changed meanwhile gets "$.hooks".
 */
static void
hooks_path(const char *file, const char *hook, char *out, size_t len)
{
    json_t *root = json_load_file(file, 0, NULL);
    json_t *hooks = json_object_get(root, "hooks");

    snprintf(out, len, "$.hooks");
    for (size_t i = 0; i < json_array_size(hooks); i++) {
        const char *name = json_string_value(json_array_get(hooks, i));

        if (name && strcmp(name, hook) == 0) {
            snprintf(out, len, "$.hooks[%zu]", i);
            break;
        }
    }
    json_decref(root);
}

/* Check the descriptor of an opened module; the effective hooks mask. */
static int
module_check(const struct plugin_config *pc, const postern_module *desc,
             const char *path, unsigned *mask, char *err, size_t errlen)
{
    unsigned offered = 0;
    char where[64];

    if (!module_abi_compatible(desc->abi_version)) {
        snprintf(err, errlen,
                 "%s: module %s (%s) was built for ABI %u.%u, this postern "
                 "has ABI %u.%u",
                 pc->file, pc->module, path, desc->abi_version >> 16,
                 desc->abi_version & 0xffffu, POSTERN_ABI_MAJOR,
                 POSTERN_ABI_MINOR);
        return -1;
    }
    if (!desc->name || strcmp(desc->name, pc->module) != 0) {
        snprintf(err, errlen,
                 "%s: module %s (%s) calls itself \"%s\"; the name must "
                 "match the file name",
                 pc->file, pc->module, path, desc->name ? desc->name : "");
        one_line(err);
        return -1;
    }
    for (int h = 0; h < POSTERN_HOOK_COUNT; h++)
        if (desc->handlers[h])
            offered |= POSTERN_HOOK_BIT(h);
    for (int h = 0; h < POSTERN_HOOK_COUNT; h++) {
        if ((pc->hooks_mask & POSTERN_HOOK_BIT(h)) &&
            !(offered & POSTERN_HOOK_BIT(h))) {
            const char *name = postern_hook_name((postern_hook)h);

            hooks_path(pc->file, name, where, sizeof where);
            snprintf(err, errlen, "%s: %s: module %s does not offer hook '%s'",
                     pc->file, where, pc->module, name);
            return -1;
        }
    }
    *mask = pc->hooks_mask ? pc->hooks_mask : offered;
    return 0;
}

static int
instance_load(const struct config *cfg, const struct plugin_config *pc,
              bool check_only, struct module_instance *mi, char *err,
              size_t errlen)
{
    struct postern_module_init init = {pc->config,    pc->instance, pc->file,
                                       cfg->hostname, check_only,   false,
                                       err,           errlen,       pc->module};
    const postern_module *desc;
    char *path = NULL;
    void *state = NULL;
    unsigned mask = 0;
    int rc;

    if (module_open(cfg, pc, &mi->handle, &path, err, errlen) < 0)
        return -1;
    if (!(desc = lt_dlsym(mi->handle, POSTERN_MODULE_SYMBOL))) {
        snprintf(err, errlen, "%s: module %s (%s) has no symbol %s: %s",
                 pc->file, pc->module, path, POSTERN_MODULE_SYMBOL,
                 dlerror_text());
        one_line(err);
        goto fail;
    }
    if (module_check(pc, desc, path, &mask, err, errlen) < 0)
        goto fail;
    /* Named before create(): its log lines carry the instance. */
    mi->instance = strdup(pc->instance);
    mi->file = strdup(pc->file);
    if (!mi->instance || !mi->file) {
        snprintf(err, errlen, "%s: out of memory", pc->file);
        goto fail;
    }
    const struct module_instance *was = module_scope_enter(mi);
    rc = desc->create ? desc->create(&init, &state) : 0;
    if (rc != 0 || init.failed) {
        /* An instance built despite a complaint is not kept. */
        if (rc == 0 && desc->destroy)
            desc->destroy(state);
        module_scope_leave(was);
        if (!init.failed)
            snprintf(err, errlen, "%s: module %s: create() failed", pc->file,
                     pc->module);
        goto fail;
    }
    mi->desc = desc;
    module_scope_leave(was);
    mi->metrics_id =
        check_only ? METRICS_NO_ID : metrics_instance_id(pc->instance);
    mi->state = state;
    mi->hooks_mask = mask;
    mi->threads = pc->threads;
    free(path);
    return 0;
fail:
    free(mi->instance);
    free(mi->file);
    free(path);
    lt_dlclose(mi->handle);
    *mi = (struct module_instance){0};
    return -1;
}

int
module_set_load(const struct config *cfg, bool check_only,
                struct module_set **out, char *err, size_t errlen)
{
    struct plugin_config *pcs;
    struct module_set *set;
    size_t n;

    *out = NULL;
    if (plugin_configs_load(cfg->plugins_dir, &pcs, &n, err, errlen) < 0)
        return -1;
    if (lt_dlinit() != 0) {
        snprintf(err, errlen, "cannot initialise libltdl: %s", dlerror_text());
        plugin_configs_free(pcs, n);
        return -1;
    }
    if (!(set = calloc(1, sizeof *set)) ||
        !(set->items = calloc(n ? n : 1, sizeof *set->items))) {
        snprintf(err, errlen, "out of memory");
        free(set);
        lt_dlexit();
        plugin_configs_free(pcs, n);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (instance_load(cfg, &pcs[i], check_only, &set->items[i], err,
                          errlen) < 0) {
            plugin_configs_free(pcs, n);
            module_set_free(set);
            return -1;
        }
        set->n++;
    }
    plugin_configs_free(pcs, n);
    *out = set;
    return 0;
}

void
module_set_free(struct module_set *set)
{
    if (!set)
        return;
    for (size_t i = set->n; i-- > 0;) {
        struct module_instance *mi = &set->items[i];

        if (mi->desc->destroy) {
            const struct module_instance *was = module_scope_enter(mi);
            mi->desc->destroy(mi->state);
            module_scope_leave(was);
        }
        lt_dlclose(mi->handle);
        free(mi->instance);
        free(mi->file);
    }
    free(set->items);
    free(set);
    lt_dlexit();
}
