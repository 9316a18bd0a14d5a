/*
 * test_module.c - unit tests for the module loader (core/module.c) with the
 * real test plugins from tests/plugins, found through
 * POSTERN_TEST_PLUGIN_DIR: a good module (test_reject), one built for
 * another ABI, one without a descriptor, and module and config errors.
 *
 * The plugins resolve postern_* from this executable (export_dynamic). The
 * few core functions test_reject calls are stood in for here as weak
 * aliases, so its handlers can be run against a fake context; when a real
 * core definition is linked instead, those handler checks are skipped.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <ftw.h>
#include <sys/stat.h>

#include <cmocka.h>

#include <postern/postern.h>

#include "config.h"
#include "module.h"

/* --- stand-ins for the core functions test_reject calls ------------------ */

struct postern_ctx {
    const char *mail_from;
    const char *rcpt;
    int code;
    char enhanced[16];
    char text[512];
};

static const char *
fake_hook_name(postern_hook hook)
{
    static const char *const names[] = {
        "connect", "helo",    "auth",  "mail",  "rcpt",
        "data",    "message", "store", "reset", "disconnect"};

    return (unsigned)hook < POSTERN_HOOK_COUNT ? names[hook] : NULL;
}

static void
fake_reply(postern_ctx *ctx, int code, const char *enhanced, const char *fmt,
           ...)
{
    va_list ap;

    ctx->code = code;
    snprintf(ctx->enhanced, sizeof ctx->enhanced, "%s", enhanced);
    va_start(ap, fmt);
    vsnprintf(ctx->text, sizeof ctx->text, fmt, ap);
    va_end(ap);
}

static const char *
fake_mail_from(const postern_ctx *ctx)
{
    return ctx->mail_from;
}

static const char *
fake_rcpt_current(const postern_ctx *ctx)
{
    return ctx->rcpt;
}

extern __typeof__(fake_hook_name) postern_hook_name
    __attribute__((weak, alias("fake_hook_name")));
extern __typeof__(fake_reply) postern_reply
    __attribute__((weak, alias("fake_reply")));
extern __typeof__(fake_mail_from) postern_mail_from
    __attribute__((weak, alias("fake_mail_from")));
extern __typeof__(fake_rcpt_current) postern_rcpt_current
    __attribute__((weak, alias("fake_rcpt_current")));

/* Are the stand-ins the ones the plugins will call? */
static bool
fakes_active(void)
{
    return postern_reply == fake_reply && postern_mail_from == fake_mail_from &&
           postern_rcpt_current == fake_rcpt_current;
}

/* --- fixture: a fresh plugins.d and a config pointing at it --------------- */

static char tmpdir[64];
static const char *plugin_dir;
static char err[1024];

struct fixture {
    struct config *cfg;
    struct module_set *set;
    char dir[256];
};

static int
remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int
group_setup(void **state)
{
    plugin_dir = getenv("POSTERN_TEST_PLUGIN_DIR");
    if (!plugin_dir) {
        fprintf(stderr, "POSTERN_TEST_PLUGIN_DIR is not set\n");
        return -1;
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/postern-test-module-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int
group_teardown(void **state)
{
    return nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Replace cfg->module_path with the n directories given. */
static void
set_module_path(struct config *cfg, size_t n, ...)
{
    va_list ap;

    for (size_t i = 0; i < cfg->n_module_path; i++)
        free(cfg->module_path[i]);
    free(cfg->module_path);
    cfg->module_path = calloc(n ? n : 1, sizeof *cfg->module_path);
    assert_non_null(cfg->module_path);
    cfg->n_module_path = n;
    va_start(ap, n);
    for (size_t i = 0; i < n; i++)
        assert_non_null(cfg->module_path[i] = strdup(va_arg(ap, char *)));
    va_end(ap);
}

static int
setup(void **state)
{
    static int seq;
    struct fixture *fx = calloc(1, sizeof *fx);

    assert_non_null(fx);
    snprintf(fx->dir, sizeof fx->dir, "%s/plugins%d.d", tmpdir, seq++);
    assert_int_equal(mkdir(fx->dir, 0700), 0);
    assert_non_null(fx->cfg = config_defaults());
    free(fx->cfg->plugins_dir);
    assert_non_null(fx->cfg->plugins_dir = strdup(fx->dir));
    set_module_path(fx->cfg, 1, plugin_dir);
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *fx = *state;

    module_set_free(fx->set);
    config_free(fx->cfg);
    free(fx);
    return 0;
}

/* Write plugins.d/<name>.json; returns its path (static, overwritten). */
static const char *
plugin_file(struct fixture *fx, const char *name, const char *json)
{
    static char path[512];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s.json", fx->dir, name);
    assert_non_null(f = fopen(path, "w"));
    assert_true(fputs(json, f) >= 0);
    assert_int_equal(fclose(f), 0);
    return path;
}

static void
load_ok(struct fixture *fx)
{
    if (module_set_load(fx->cfg, false, &fx->set, err, sizeof err) < 0)
        fail_msg("load failed: %s", err);
    assert_non_null(fx->set);
}

/* The load must fail with a message that starts with want. */
static void
load_fails(struct fixture *fx, const char *want)
{
    struct module_set *set = (void *)1;

    assert_int_equal(module_set_load(fx->cfg, false, &set, err, sizeof err),
                     -1);
    assert_null(set);
    if (strncmp(err, want, strlen(want)) != 0)
        fail_msg("got  \"%s\"\nwant \"%s...\"", err, want);
    assert_null(strchr(err, '\n'));
}

/* Run a test_reject handler on a fake context. */
static postern_result
run_handler(const struct module_instance *mi, postern_hook hook,
            const char *mail_from, const char *rcpt, postern_ctx *ctx)
{
    *ctx = (postern_ctx){.mail_from = mail_from, .rcpt = rcpt};
    return mi->desc->handlers[hook](ctx, mi->state);
}

/* --- tests ---------------------------------------------------------------- */

static void
test_load_good(void **state)
{
    struct fixture *fx = *state;
    const struct module_instance *mi;
    char path[512];
    postern_ctx ctx;

    snprintf(path, sizeof path, "%s",
             plugin_file(fx, "10-reject",
                         "{\"module\": \"test_reject\", \"config\":"
                         " {\"code\": 551, \"text\": \"go away\","
                         " \"match\": \"spam\"}}"));
    load_ok(fx);
    assert_int_equal(fx->set->n, 1);
    mi = &fx->set->items[0];
    assert_string_equal(mi->instance, "10-reject");
    assert_string_equal(mi->file, path);
    assert_non_null(mi->handle);
    assert_non_null(mi->desc);
    assert_string_equal(mi->desc->name, "test_reject");
    assert_int_equal(mi->desc->abi_version, POSTERN_ABI_VERSION);
    assert_non_null(mi->desc->handlers[POSTERN_HOOK_RCPT]);
    assert_non_null(mi->desc->handlers[POSTERN_HOOK_MAIL]);
    assert_null(mi->desc->handlers[POSTERN_HOOK_DATA]);
    assert_non_null(mi->state);
    /* no "hooks" in the file: every hook the module offers */
    assert_int_equal(mi->hooks_mask, POSTERN_HOOK_BIT(POSTERN_HOOK_RCPT) |
                                         POSTERN_HOOK_BIT(POSTERN_HOOK_MAIL));

    if (!fakes_active())
        skip();
    assert_int_equal(run_handler(mi, POSTERN_HOOK_RCPT, "a@b", "spam@x", &ctx),
                     POSTERN_REJECT);
    assert_int_equal(ctx.code, 551);
    assert_string_equal(ctx.enhanced, "5.7.1");
    assert_string_equal(ctx.text, "go away");
    assert_int_equal(run_handler(mi, POSTERN_HOOK_RCPT, "a@b", "ham@x", &ctx),
                     POSTERN_CONTINUE);
    assert_int_equal(ctx.code, 0);
    assert_int_equal(
        run_handler(mi, POSTERN_HOOK_MAIL, "x@spam.example", NULL, &ctx),
        POSTERN_REJECT);
    assert_int_equal(run_handler(mi, POSTERN_HOOK_MAIL, "", NULL, &ctx),
                     POSTERN_CONTINUE);
}

/* test_reject with an empty config rejects everything with 550. */
static void
test_load_defaults(void **state)
{
    struct fixture *fx = *state;
    postern_ctx ctx;

    plugin_file(fx, "50-all", "{\"module\": \"test_reject\"}");
    load_ok(fx);
    assert_int_equal(fx->set->n, 1);
    if (!fakes_active())
        skip();
    assert_int_equal(
        run_handler(&fx->set->items[0], POSTERN_HOOK_MAIL, "", NULL, &ctx),
        POSTERN_REJECT);
    assert_int_equal(ctx.code, 550);
    assert_string_equal(ctx.text, "rejected by 50-all");
}

/* Within a major, older modules keep loading: one built for 1.0 loads in
 * a 1.1 core. */
static void
test_older_minor_loads(void **state)
{
    struct fixture *fx = *state;

    assert_true(POSTERN_ABI_MINOR >= 1);
    plugin_file(fx, "10-old", "{\"module\": \"test_abi10\"}");
    load_ok(fx);
    assert_int_equal(fx->set->n, 1);
    assert_int_equal(fx->set->items[0].desc->abi_version, 1u << 16);
}

static void
test_hooks_subset(void **state)
{
    struct fixture *fx = *state;

    plugin_file(fx, "10-r",
                "{\"module\": \"test_reject\", \"hooks\": [\"rcpt\"]}");
    load_ok(fx);
    assert_int_equal(fx->set->items[0].hooks_mask,
                     POSTERN_HOOK_BIT(POSTERN_HOOK_RCPT));
}

static void
test_hook_not_offered(void **state)
{
    struct fixture *fx = *state;
    char want[600];

    snprintf(want, sizeof want,
             "%s: $.hooks[1]: module test_reject does not offer hook 'data'",
             plugin_file(fx, "10-r",
                         "{\"module\": \"test_reject\","
                         " \"hooks\": [\"rcpt\", \"data\", \"mail\"]}"));
    load_fails(fx, want);
    assert_string_equal(err, want);
}

static void
test_bad_abi(void **state)
{
    struct fixture *fx = *state;
    char want[800];

    snprintf(want, sizeof want,
             "%s: module test_bad_abi (%s/test_bad_abi.so) was built for ABI "
             "2.0, this postern has ABI %d.%d",
             plugin_file(fx, "10-x", "{\"module\": \"test_bad_abi\"}"),
             plugin_dir, POSTERN_ABI_MAJOR, POSTERN_ABI_MINOR);
    load_fails(fx, want);
    assert_string_equal(err, want);
}

static void
test_no_symbol(void **state)
{
    struct fixture *fx = *state;
    char want[800];

    snprintf(want, sizeof want,
             "%s: module test_no_symbol (%s/test_no_symbol.so) has no symbol "
             "postern_module_descriptor: ",
             plugin_file(fx, "10-x", "{\"module\": \"test_no_symbol\"}"),
             plugin_dir);
    load_fails(fx, want);
}

static void
test_not_found(void **state)
{
    struct fixture *fx = *state;
    char nowhere[128], want[800];

    snprintf(nowhere, sizeof nowhere, "%s/nowhere", tmpdir);
    set_module_path(fx->cfg, 2, nowhere, plugin_dir);
    snprintf(want, sizeof want,
             "%s: module no_such_module: no_such_module.so not found in %s, "
             "%s (",
             plugin_file(fx, "10-x", "{\"module\": \"no_such_module\"}"),
             nowhere, plugin_dir);
    load_fails(fx, want);
    assert_int_equal(err[strlen(err) - 1], ')');

    set_module_path(fx->cfg, 0);
    snprintf(want, sizeof want,
             "%s/10-x.json: module no_such_module: no_such_module.so not "
             "found in no directory (module_path is empty)",
             fx->dir);
    load_fails(fx, want);
    assert_string_equal(err, want);
}

/* The first directory that has the .so wins; a broken one is reported. */
static void
test_broken_so(void **state)
{
    struct fixture *fx = *state;
    char dir[128], path[256], want[800];
    FILE *f;

    snprintf(dir, sizeof dir, "%s/broken", tmpdir);
    mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/test_reject.so", dir);
    assert_non_null(f = fopen(path, "w"));
    fputs("not an ELF file\n", f);
    fclose(f);
    set_module_path(fx->cfg, 2, dir, plugin_dir);
    snprintf(want, sizeof want, "%s: module test_reject (%s): cannot load: ",
             plugin_file(fx, "10-x", "{\"module\": \"test_reject\"}"), path);
    load_fails(fx, want);

    /* found in the second directory when the first lacks it */
    set_module_path(fx->cfg, 2, tmpdir, plugin_dir);
    load_ok(fx);
    assert_int_equal(fx->set->n, 1);
}

/* A descriptor whose name is not its file name is refused. */
static void
test_name_mismatch(void **state)
{
    struct fixture *fx = *state;
    char dir[128], link[256], target[256], want[800];

    snprintf(dir, sizeof dir, "%s/links", tmpdir);
    mkdir(dir, 0700);
    snprintf(link, sizeof link, "%s/renamed.so", dir);
    snprintf(target, sizeof target, "%s/test_reject.so", plugin_dir);
    unlink(link);
    assert_int_equal(symlink(target, link), 0);
    set_module_path(fx->cfg, 1, dir);
    snprintf(want, sizeof want,
             "%s: module renamed (%s) calls itself \"test_reject\"; the name "
             "must match the file name",
             plugin_file(fx, "10-x", "{\"module\": \"renamed\"}"), link);
    load_fails(fx, want);
    assert_string_equal(err, want);
}

static void
test_create_error(void **state)
{
    struct fixture *fx = *state;
    const char *path;
    char want[800];

    path = plugin_file(fx, "10-r",
                       "{\"module\": \"test_reject\", \"config\": {\"code\": "
                       "200}}");
    snprintf(want, sizeof want,
             "%s: $.config.code: expected an integer between 500 and 599, "
             "got 200",
             path);
    load_fails(fx, want);
    assert_string_equal(err, want);

    path = plugin_file(fx, "10-r",
                       "{\"module\": \"test_reject\", \"config\": {\"match\": "
                       "\"\"}}");
    snprintf(want, sizeof want,
             "%s: $.config.match: expected a non-empty string, got \"\"", path);
    load_fails(fx, want);
    assert_string_equal(err, want);

    path = plugin_file(fx, "10-r",
                       "{\"module\": \"test_reject\", \"config\": {\"text\": "
                       "\"x\", \"bogus\": 1}}");
    snprintf(want, sizeof want, "%s: $.config.bogus: unknown key", path);
    load_fails(fx, want);
    assert_string_equal(err, want);
}

static void
test_two_instances(void **state)
{
    struct fixture *fx = *state;
    const struct module_instance *a, *b;
    postern_ctx ctx;

    plugin_file(fx, "20-b",
                "{\"module\": \"test_reject\", \"hooks\": [\"mail\"],"
                " \"config\": {\"text\": \"B\"}}");
    plugin_file(fx, "10-a",
                "{\"module\": \"test_reject\", \"config\": {\"text\": \"A\"}}");
    load_ok(fx);
    assert_int_equal(fx->set->n, 2);
    a = &fx->set->items[0];
    b = &fx->set->items[1];
    assert_string_equal(a->instance, "10-a");
    assert_string_equal(b->instance, "20-b");
    assert_ptr_equal(a->desc, b->desc); /* one mapping of the .so */
    assert_ptr_not_equal(a->state, b->state);
    assert_int_equal(b->hooks_mask, POSTERN_HOOK_BIT(POSTERN_HOOK_MAIL));
    if (!fakes_active())
        skip();
    run_handler(a, POSTERN_HOOK_RCPT, "", "x@y", &ctx);
    assert_string_equal(ctx.text, "A");
    run_handler(b, POSTERN_HOOK_MAIL, "x@y", NULL, &ctx);
    assert_string_equal(ctx.text, "B");
}

/* A later failure unwinds the instances already created (valgrind). */
static void
test_error_after_good(void **state)
{
    struct fixture *fx = *state;
    char want[600];

    plugin_file(fx, "10-good", "{\"module\": \"test_reject\"}");
    snprintf(want, sizeof want, "%s: module test_bad_abi",
             plugin_file(fx, "20-bad", "{\"module\": \"test_bad_abi\"}"));
    load_fails(fx, want);
}

/* Two sets at once: freeing one leaves the other's module loaded. */
static void
test_two_sets(void **state)
{
    struct fixture *fx = *state;
    struct module_set *other;
    postern_ctx ctx;

    plugin_file(fx, "10-a", "{\"module\": \"test_reject\"}");
    load_ok(fx);
    assert_int_equal(module_set_load(fx->cfg, true, &other, err, sizeof err),
                     0);
    assert_int_equal(other->n, 1);
    module_set_free(other);
    if (!fakes_active())
        skip();
    assert_int_equal(
        run_handler(&fx->set->items[0], POSTERN_HOOK_RCPT, "", "x@y", &ctx),
        POSTERN_REJECT);
}

static void
test_plugin_file_errors(void **state)
{
    struct fixture *fx = *state;
    char want[600];

    snprintf(want, sizeof want, "%s: $.hooks[0]: expected one of",
             plugin_file(fx, "10-x",
                         "{\"module\": \"test_reject\", \"hooks\": [\"x\"]}"));
    load_fails(fx, want);

    free(fx->cfg->plugins_dir);
    fx->cfg->plugins_dir = strdup("/nonexistent/plugins.d");
    load_fails(fx, "/nonexistent/plugins.d: cannot open directory: ");
}

static void
test_empty_plugins_dir(void **state)
{
    struct fixture *fx = *state;

    load_ok(fx);
    assert_int_equal(fx->set->n, 0);
}

static void
test_abi_compatible(void **state)
{
    assert_true(module_abi_compatible(POSTERN_ABI_VERSION));
    assert_true(module_abi_compatible(POSTERN_ABI_MAJOR << 16));
    assert_false(module_abi_compatible(POSTERN_ABI_VERSION + 1));
    assert_false(module_abi_compatible((POSTERN_ABI_MAJOR + 1) << 16));
    assert_false(module_abi_compatible(0));
    assert_false(module_abi_compatible(~0u));
}

int
main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_load_good),
        T(test_load_defaults),
        T(test_hooks_subset),
        T(test_hook_not_offered),
        T(test_bad_abi),
        T(test_older_minor_loads),
        T(test_no_symbol),
        T(test_not_found),
        T(test_broken_so),
        T(test_name_mismatch),
        T(test_create_error),
        T(test_two_instances),
        T(test_error_after_good),
        T(test_two_sets),
        T(test_plugin_file_errors),
        T(test_empty_plugins_dir),
        cmocka_unit_test(test_abi_compatible),
    };
#undef T

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
