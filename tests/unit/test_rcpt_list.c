/*
 * test_rcpt_list.c - the rcpt_list module: inline and file lists,
 * catch-alls, the 550 for unknown users, case rules, on_match, config
 * errors, reloading the file, and a 1e5-entry list.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "mock_core.h"

static char tmpdir[64];

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int
group_setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/postern-rcpt-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int
group_teardown(void **state)
{
    (void)state;
    return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int
setup(void **state)
{
    (void)state;
    mock_reset();
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    mock_cleanup();
    return 0;
}

static void
write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* Create an instance from JSON text; NULL (and the error recorded by the
 * mock) when create() fails. */
static void *
create(const char *config_text)
{
    return mock_create(config_text, 0);
}

static void
destroy(void *instance)
{
    postern_module_descriptor.destroy(instance);
}

static postern_result
rcpt(void *instance, const char *addr)
{
    mock_set_rcpt_current(addr);
    return postern_module_descriptor.handlers[POSTERN_HOOK_RCPT](mock_ctx(),
                                                                 instance);
}

/* A REJECT with exactly the 550 5.1.1 User unknown reply for addr. */
static void
assert_unknown(void *instance, const char *addr)
{
    char text[512];
    int before = mock_last_reply()->count;
    long long unknown = mock_counter("unknown_total");

    assert_int_equal(rcpt(instance, addr), POSTERN_REJECT);
    const struct mock_reply *reply = mock_last_reply();
    assert_int_equal(reply->count, before + 1);
    /* each refusal counts once in postern_rcpt_list_unknown_total */
    assert_true(unknown >= 0);
    assert_int_equal(mock_counter("unknown_total"), unknown + 1);
    assert_int_equal(reply->code, 550);
    assert_string_equal(reply->enhanced, "5.1.1");
    snprintf(text, sizeof text,
             "<%s>: Recipient address rejected: User unknown", addr);
    assert_string_equal(reply->text, text);
}

/* A result that sets no reply. */
static void
assert_quiet(void *instance, const char *addr, postern_result expected)
{
    int before = mock_last_reply()->count;

    assert_int_equal(rcpt(instance, addr), expected);
    assert_int_equal(mock_last_reply()->count, before);
}

static void
test_descriptor(void **state)
{
    (void)state;
    const postern_module *m = &postern_module_descriptor;

    assert_int_equal(m->abi_version, POSTERN_ABI_VERSION);
    assert_string_equal(m->name, "rcpt_list");
    assert_non_null(m->handlers[POSTERN_HOOK_RCPT]);
    assert_null(m->handlers[POSTERN_HOOK_STORE]);
    assert_non_null(m->destroy);
}

static void
test_inline_list(void **state)
{
    (void)state;
    void *rl = create("{\"addresses\": [\"alice@example.com\", "
                      "\"@catchall.org\"]}");
    assert_non_null(rl);

    assert_quiet(rl, "alice@example.com", POSTERN_ACCEPT);
    assert_quiet(rl, "anyone@catchall.org", POSTERN_ACCEPT);
    assert_quiet(rl, "x@sub.catchall.org", POSTERN_CONTINUE);
    assert_unknown(rl, "bob@example.com");
    assert_quiet(rl, "alice@other.net", POSTERN_CONTINUE);
    /* "<Postmaster>" arrives without a domain: not ours to decide. */
    assert_quiet(rl, "Postmaster", POSTERN_CONTINUE);
    assert_quiet(rl, "", POSTERN_CONTINUE);
    assert_quiet(rl, "@example.com", POSTERN_CONTINUE);
    assert_quiet(rl, "alice@", POSTERN_CONTINUE);
    mock_set_rcpt_current(NULL);
    assert_int_equal(
        postern_module_descriptor.handlers[POSTERN_HOOK_RCPT](mock_ctx(), rl),
        POSTERN_CONTINUE);
    destroy(rl);
}

static void
test_case_rules(void **state)
{
    (void)state;
    void *rl = create("{\"addresses\": [\"Alice@Example.COM\", "
                      "\"\\\"John Doe\\\"@example.com\", "
                      "\"@Trailing.Example.\"]}");
    assert_non_null(rl);

    /* Local parts and domains fold by default; one trailing dot is
     * ignored on either side. */
    assert_quiet(rl, "alice@example.com", POSTERN_ACCEPT);
    assert_quiet(rl, "ALICE@EXAMPLE.COM.", POSTERN_ACCEPT);
    assert_quiet(rl, "x@trailing.example", POSTERN_ACCEPT);
    assert_quiet(rl, "x@TRAILING.EXAMPLE.", POSTERN_ACCEPT);
    /* Quoted local parts compare as given. */
    assert_quiet(rl, "\"John Doe\"@EXAMPLE.com", POSTERN_ACCEPT);
    assert_unknown(rl, "\"john doe\"@example.com");
    destroy(rl);

    rl = create("{\"addresses\": [\"Alice@Example.COM\"], "
                "\"case_sensitive_local\": true}");
    assert_non_null(rl);
    assert_quiet(rl, "Alice@example.com", POSTERN_ACCEPT);
    assert_unknown(rl, "alice@example.com");
    assert_unknown(rl, "ALICE@example.com");
    destroy(rl);

    rl = create("{\"addresses\": [\"alice@example.com\"], "
                "\"case_sensitive_local\": false}");
    assert_non_null(rl);
    assert_quiet(rl, "ALICE@example.com", POSTERN_ACCEPT);
    destroy(rl);
}

static void
test_on_match_continue(void **state)
{
    (void)state;
    void *rl = create("{\"addresses\": [\"alice@example.com\", \"@x.org\"], "
                      "\"on_match\": \"continue\"}");
    assert_non_null(rl);
    assert_quiet(rl, "alice@example.com", POSTERN_CONTINUE);
    assert_quiet(rl, "z@x.org", POSTERN_CONTINUE);
    assert_unknown(rl, "bob@example.com");
    destroy(rl);

    rl = create("{\"addresses\": [\"alice@example.com\"], "
                "\"on_match\": \"accept\"}");
    assert_non_null(rl);
    assert_quiet(rl, "alice@example.com", POSTERN_ACCEPT);
    destroy(rl);
}

static void
test_file_list(void **state)
{
    (void)state;
    char path[128], config[256];

    snprintf(path, sizeof path, "%s/list.txt", tmpdir);
    write_file(path, "# users of example.com\n"
                     "\n"
                     "  carol@example.com  \n"
                     "\tdave@example.com\r\n"
                     "   # an indented comment\n"
                     "@catchall.net\n"
                     "erin@example.org"); /* no final newline */
    snprintf(config, sizeof config,
             "{\"file\": \"%s\", \"addresses\": [\"alice@inline.test\"]}",
             path);
    void *rl = create(config);
    assert_non_null(rl);

    assert_quiet(rl, "carol@example.com", POSTERN_ACCEPT);
    assert_quiet(rl, "dave@example.com", POSTERN_ACCEPT);
    assert_quiet(rl, "erin@example.org", POSTERN_ACCEPT);
    assert_quiet(rl, "who@catchall.net", POSTERN_ACCEPT);
    assert_quiet(rl, "alice@inline.test", POSTERN_ACCEPT);
    assert_unknown(rl, "mallory@example.com");
    assert_unknown(rl, "bob@inline.test");
    assert_quiet(rl, "#@example.net", POSTERN_CONTINUE);
    destroy(rl);

    /* An empty file is a valid (empty) list. */
    write_file(path, "# nothing yet\n\n");
    snprintf(config, sizeof config, "{\"file\": \"%s\"}", path);
    rl = create(config);
    assert_non_null(rl);
    assert_quiet(rl, "carol@example.com", POSTERN_CONTINUE);
    destroy(rl);
}

/* create() fails with an error at path whose text contains needle. */
static void
assert_config_error(const char *config, const char *path, const char *needle)
{
    mock_reset();
    assert_null(create(config));
    assert_string_equal(mock_init_error_path(), path);
    if (strstr(mock_init_error_text(), needle) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", mock_init_error_text(), needle);
}

static void
test_bad_config(void **state)
{
    (void)state;
    char config[256], missing[160];

    assert_config_error("[]", "", "expected an object");
    assert_config_error("{}", "addresses", "at least one");
    assert_config_error("{\"addresses\": [\"a@b.c\"], \"adresses\": []}",
                        "adresses", "unknown key");
    assert_config_error("{\"addresses\": \"a@b.c\"}", "addresses",
                        "expected an array");
    assert_config_error("{\"addresses\": [\"a@b.c\", 7]}", "addresses[1]",
                        "expected a string");
    assert_config_error("{\"addresses\": [\"nobody\"]}", "addresses[0]",
                        "expected user@domain or @domain");
    assert_config_error("{\"addresses\": [\"a@b.c\", \"x@\"]}", "addresses[1]",
                        "expected user@domain");
    assert_config_error("{\"addresses\": [\"a b@c.d\"]}", "addresses[0]",
                        "expected user@domain");
    assert_config_error("{\"addresses\": [\"a@b..c\"]}", "addresses[0]",
                        "expected user@domain");
    assert_config_error("{\"addresses\": [\"a@b.c\"], \"file\": 3}", "file",
                        "expected a non-empty string");
    assert_config_error("{\"addresses\": [], \"file\": \"\"}", "file",
                        "expected a non-empty string");
    assert_config_error("{\"addresses\": [], \"case_sensitive_local\": 1}",
                        "case_sensitive_local", "expected true or false");
    assert_config_error("{\"addresses\": [], \"on_match\": \"reject\"}",
                        "on_match", "expected \"accept\" or \"continue\"");
    assert_config_error("{\"addresses\": [], \"on_match\": true}", "on_match",
                        "expected \"accept\" or \"continue\"");

    snprintf(missing, sizeof missing, "%s/no-such-file", tmpdir);
    snprintf(config, sizeof config, "{\"file\": \"%s\"}", missing);
    assert_config_error(config, "file", missing);
    assert_non_null(strstr(mock_init_error_text(), "No such file"));
}

static void
test_bad_file_line(void **state)
{
    (void)state;
    char path[128], config[256], expected[256];

    snprintf(path, sizeof path, "%s/bad.txt", tmpdir);
    write_file(path, "# fine\n"
                     "alice@example.com\n"
                     "\n"
                     "this is not an address\n"
                     "bob@example.com\n");
    snprintf(config, sizeof config, "{\"file\": \"%s\"}", path);
    assert_null(create(config));
    assert_string_equal(mock_init_error_path(), "file");
    snprintf(expected, sizeof expected, "%s:4: expected user@domain or @domain",
             path);
    assert_string_equal(mock_init_error_text(), expected);

    /* A NUL byte inside a line is a bad line too. */
    mock_reset();
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite("a@b.c\nx\0y@b.c\n", 1, 14, f), 14);
    fclose(f);
    assert_null(create(config));
    snprintf(expected, sizeof expected, "%s:2: expected user@domain or @domain",
             path);
    assert_string_equal(mock_init_error_text(), expected);
}

/* Give path an mtime of its own, whatever the file system's resolution. */
static void
set_mtime(const char *path, time_t when)
{
    struct timeval tv[2] = {{.tv_sec = when}, {.tv_sec = when}};
    assert_int_equal(utimes(path, tv), 0);
}

static void
test_reload(void **state)
{
    (void)state;
    char path[128], config[256];
    double t0 = 1700000000.0;

    snprintf(path, sizeof path, "%s/reload.txt", tmpdir);
    write_file(path, "alice@example.com\n");
    set_mtime(path, 1600000000);
    snprintf(config, sizeof config, "{\"file\": \"%s\"}", path);
    mock_set_now(t0);
    void *rl = create(config);
    assert_non_null(rl);
    assert_quiet(rl, "alice@example.com", POSTERN_ACCEPT);
    assert_unknown(rl, "bobby@example.com");

    /* Rewritten in place, same size, new mtime. */
    write_file(path, "bobby@example.com\n");
    set_mtime(path, 1600000100);

    /* Within the second: no stat(), the old list answers. */
    mock_set_now(t0 + 0.5);
    assert_quiet(rl, "alice@example.com", POSTERN_ACCEPT);
    assert_unknown(rl, "bobby@example.com");

    mock_set_now(t0 + 1.5);
    assert_quiet(rl, "bobby@example.com", POSTERN_ACCEPT);
    assert_unknown(rl, "alice@example.com");
    assert_true(mock_log_find(POSTERN_LOG_INFO, "reloaded") >= 0);

    /* A broken version keeps the current list, with one warning. */
    write_file(path, "bobby@example.com\nnot an address\n");
    set_mtime(path, 1600000200);
    mock_set_now(t0 + 3);
    assert_quiet(rl, "bobby@example.com", POSTERN_ACCEPT);
    int w = mock_log_find(POSTERN_LOG_WARNING, "reload failed");
    assert_true(w >= 0);
    char expected[256];
    snprintf(expected, sizeof expected, "%s:2: expected user@domain", path);
    assert_non_null(strstr(mock_log_text((size_t)w), expected));
    size_t logs = mock_log_count();
    mock_set_now(t0 + 5);
    assert_quiet(rl, "bobby@example.com", POSTERN_ACCEPT);
    assert_int_equal(mock_log_count(), logs); /* not warned again */

    /* A file that went away: same, the list stays. */
    assert_int_equal(unlink(path), 0);
    mock_set_now(t0 + 7);
    assert_quiet(rl, "bobby@example.com", POSTERN_ACCEPT);
    assert_true(mock_log_find(POSTERN_LOG_WARNING, "cannot stat") >= 0);

    /* Fixed again: picked up. */
    write_file(path, "carol@example.com\n");
    set_mtime(path, 1600000300);
    mock_set_now(t0 + 9);
    assert_quiet(rl, "carol@example.com", POSTERN_ACCEPT);
    assert_unknown(rl, "bobby@example.com");
    destroy(rl);
}

/* A file of one entry, with its own mtime so every rewrite is a change;
 * an instance over it, made at loop time t0. */
static void *
create_over(const char *path, const char *entry, time_t mtime, double t0)
{
    char config[256], text[128];

    snprintf(text, sizeof text, "%s\n", entry);
    write_file(path, text);
    set_mtime(path, mtime);
    snprintf(config, sizeof config, "{\"file\": \"%s\"}", path);
    mock_set_now(t0);
    return create(config);
}

/* The file is read and parsed on the pool, never in the hook: a slow disk
 * must not stall the loop. Lookups meanwhile answer from the list in use;
 * the new list replaces it on the loop thread when the pool is done. */
static void
test_reload_on_the_pool(void **state)
{
    (void)state;
    char path[128];
    double t0 = 1700000000.0;

    snprintf(path, sizeof path, "%s/pool.txt", tmpdir);
    void *rl = create_over(path, "alice@example.com", 1600000000, t0);
    assert_non_null(rl);
    mock_set_pool_mode(MOCK_POOL_DEFER);
    write_file(path, "bobby@example.com\n");
    set_mtime(path, 1600000100);

    /* The check is due: it goes to the pool, the old list answers. */
    mock_set_now(t0 + 1.5);
    assert_quiet(rl, "alice@example.com", POSTERN_ACCEPT);
    assert_int_equal(mock_pool_pending(), 1);

    /* While it is in progress: answered, and no second check started. */
    mock_set_now(t0 + 3);
    assert_unknown(rl, "bobby@example.com");
    assert_quiet(rl, "alice@example.com", POSTERN_ACCEPT);
    assert_int_equal(mock_pool_pending(), 1);
    assert_int_equal(mock_log_find(POSTERN_LOG_INFO, "reloaded"), -1);

    /* Done: the new list is in place. A check was due at t0 + 3 but
     * skipped; the next lookup starts it (the file is unchanged). */
    assert_int_equal(mock_pool_run(), 1);
    assert_true(mock_log_find(POSTERN_LOG_INFO, "reloaded") >= 0);
    assert_quiet(rl, "bobby@example.com", POSTERN_ACCEPT);
    assert_unknown(rl, "alice@example.com");
    assert_int_equal(mock_pool_pending(), 1);
    assert_int_equal(mock_pool_run(), 1);
    assert_unknown(rl, "alice@example.com");
    assert_int_equal(mock_pool_pending(), 0);

    /* A broken version, also judged on the pool: the list stays. */
    write_file(path, "bobby@example.com\nnot an address\n");
    set_mtime(path, 1600000200);
    mock_set_now(t0 + 5);
    assert_quiet(rl, "bobby@example.com", POSTERN_ACCEPT);
    assert_int_equal(mock_pool_run(), 1);
    assert_true(mock_log_find(POSTERN_LOG_WARNING, "reload failed") >= 0);
    assert_quiet(rl, "bobby@example.com", POSTERN_ACCEPT);
    assert_int_equal(mock_pool_run(), 0);
    destroy(rl);
}

/* A timer checks the file every second, so a change is picked up without
 * waiting for a recipient; --check-config starts no timer. */
static void
test_reload_by_timer(void **state)
{
    (void)state;
    char path[128], config[256];
    double t0 = 1700000000.0;

    snprintf(path, sizeof path, "%s/timer.txt", tmpdir);
    void *rl = create_over(path, "alice@example.com", 1600000000, t0);
    assert_non_null(rl);
    assert_int_equal(mock_timers_active(), 1);
    assert_true(mock_timer_seconds() == 1.0);
    mock_set_pool_mode(MOCK_POOL_DEFER);
    write_file(path, "bobby@example.com\n");
    set_mtime(path, 1600000100);

    mock_set_now(t0 + 1);
    assert_int_equal(mock_timer_fire(), 1);
    assert_int_equal(mock_pool_pending(), 1);
    assert_int_equal(mock_timers_active(), 1); /* armed again */
    assert_int_equal(mock_pool_run(), 1);
    assert_quiet(rl, "bobby@example.com", POSTERN_ACCEPT);
    assert_unknown(rl, "alice@example.com");
    assert_int_equal(mock_pool_pending(), 0); /* the timer checked already */
    destroy(rl);
    assert_int_equal(mock_timers_active(), 0);

    snprintf(config, sizeof config, "{\"file\": \"%s\"}", path);
    rl = mock_create(config, 1);
    assert_non_null(rl);
    assert_int_equal(mock_timers_active(), 0);
    destroy(rl);
}

/* destroy() while a reload is on the pool: the instance lives until the
 * completion, which frees it (ASan and valgrind watch this test). */
static void
test_reload_in_flight_at_destroy(void **state)
{
    (void)state;
    char path[128];
    double t0 = 1700000000.0;

    snprintf(path, sizeof path, "%s/destroy.txt", tmpdir);
    void *rl = create_over(path, "alice@example.com", 1600000000, t0);
    assert_non_null(rl);
    mock_set_pool_mode(MOCK_POOL_DEFER);
    write_file(path, "bobby@example.com\n");
    set_mtime(path, 1600000100);
    mock_set_now(t0 + 1.5);
    assert_quiet(rl, "alice@example.com", POSTERN_ACCEPT);
    assert_int_equal(mock_pool_pending(), 1);
    destroy(rl);
    assert_int_equal(mock_timers_active(), 0);
    size_t logs = mock_log_count();
    assert_int_equal(mock_pool_run(), 1);
    assert_int_equal(mock_log_count(), logs); /* nothing swapped in */
}

static void
test_large_list(void **state)
{
    (void)state;
    enum { N = 100000, DOMAINS = 100 };
    char path[128], config[256], addr[64];

    snprintf(path, sizeof path, "%s/large.txt", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < N; i++)
        fprintf(f, "User%d@D%d.example\n", i, i % DOMAINS);
    assert_int_equal(fclose(f), 0);
    snprintf(config, sizeof config, "{\"file\": \"%s\"}", path);
    void *rl = create(config);
    assert_non_null(rl);

    for (int i = 0; i < N; i++) {
        snprintf(addr, sizeof addr, "user%d@d%d.example", i, i % DOMAINS);
        if (rcpt(rl, addr) != POSTERN_ACCEPT)
            fail_msg("%s not accepted", addr);
    }
    assert_unknown(rl, "user5@d6.example");
    assert_unknown(rl, "nobody@d99.example");
    assert_unknown(rl, "user100000@d0.example");
    assert_quiet(rl, "user5@d100.example", POSTERN_CONTINUE);
    destroy(rl);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_descriptor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inline_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_case_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_on_match_continue, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_file_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_file_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_on_the_pool, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reload_by_timer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_in_flight_at_destroy, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_large_list, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
