/*
 * test_auth_file.c - the auth_file module: parsing the password file
 * (comments, extra fields, bad hashes named by line), every supported
 * hash scheme as `postern hash-password` writes it, the identical reply
 * for a wrong password and an unknown user, reloading, the thread pool
 * (refusal, deferred completion, orphaned contexts) and wiping the
 * password copy.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <crypt.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "mock_core.h"

#define REJECT_TEXT "Error: authentication credentials invalid"

static char tmpdir[64];
static char path[128];

/* --- the module's test hook: look at each job as it is freed ------------- */

void auth_file_test_job_wiped(const void *job, size_t size);

static int jobs_wiped;
static int jobs_not_zero;

void
auth_file_test_job_wiped(const void *job, size_t size)
{
    const unsigned char *p = job;

    jobs_wiped++;
    for (size_t i = 0; i < size; i++)
        if (p[i] != 0) {
            jobs_not_zero++;
            break;
        }
}

/* --- helpers -------------------------------------------------------------- */

static int
rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static int
group_setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/postern-auth-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(path, sizeof path, "%s/passwd", tmpdir);
    return 0;
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
    jobs_wiped = jobs_not_zero = 0;
    unlink(path);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    mock_cleanup();
    return 0;
}

/* A crypt(3) hash of password, made the way `postern hash-password` makes
 * it: crypt_gensalt(prefix, 0, NULL, 0) then crypt_r. Caller frees. */
static char *
make_hash(const char *prefix, const char *password)
{
    struct crypt_data *data = calloc(1, sizeof *data);
    assert_non_null(data);
    const char *salt = crypt_gensalt(prefix, 0, NULL, 0);
    assert_non_null(salt);
    const char *hash = crypt_r(password, salt, data);
    assert_non_null(hash);
    assert_int_equal(hash[0], '$');
    char *copy = strdup(hash);
    assert_non_null(copy);
    free(data);
    return copy;
}

static void
write_file(const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

/* Rewrite the file and move its mtime, so even a same-size rewrite within
 * the same clock tick is a change. */
static void
rewrite_file(const char *text, long mtime)
{
    struct timeval times[2] = {{mtime, 0}, {mtime, 0}};

    write_file(text);
    assert_int_equal(utimes(path, times), 0);
}

/* Create an instance from JSON text; NULL (and the error recorded by the
 * mock) when create() fails. */
static void *
create(const char *config_text)
{
    return mock_create(config_text, 0);
}

/* An instance over the test's file with the default reload_interval. */
static void *
create_default(void)
{
    char config[256];

    snprintf(config, sizeof config, "{\"file\": \"%s\"}", path);
    return create(config);
}

static void
destroy(void *instance)
{
    postern_module_descriptor.destroy(instance);
}

/* Run the auth hook on (login, password); with the pool in MOCK_POOL_RUN
 * mode the job completes inside the call. The handler must answer
 * PENDING and resume exactly once; the resumed result is returned. */
static postern_result
auth(void *instance, const char *login, const char *password)
{
    int resumes = mock_resume_count();

    mock_set_auth("PLAIN", login, password, "");
    postern_result r = postern_module_descriptor.handlers[POSTERN_HOOK_AUTH](
        mock_ctx(), instance);
    assert_int_equal(r, POSTERN_PENDING);
    assert_int_equal(mock_resume_count(), resumes + 1);
    return mock_last_resume();
}

/* REJECT with exactly the 535 5.7.8 reply. */
static void
assert_rejected(void *instance, const char *login, const char *password)
{
    int replies = mock_last_reply()->count;

    assert_int_equal(auth(instance, login, password), POSTERN_REJECT);
    const struct mock_reply *reply = mock_last_reply();
    assert_int_equal(reply->count, replies + 1);
    assert_int_equal(reply->code, 535);
    assert_string_equal(reply->enhanced, "5.7.8");
    assert_string_equal(reply->text, REJECT_TEXT);
}

/* ACCEPT with no reply of the module's own (the core says 235). */
static void
assert_accepted(void *instance, const char *login, const char *password)
{
    int replies = mock_last_reply()->count;

    assert_int_equal(auth(instance, login, password), POSTERN_ACCEPT);
    assert_int_equal(mock_last_reply()->count, replies);
}

/* create() fails with an error on "file" whose text is exactly
 * "<path>:<line>: <what>". */
static void
assert_line_error(int line, const char *what)
{
    char expected[512];

    assert_null(create_default());
    assert_string_equal(mock_init_error_path(), "file");
    snprintf(expected, sizeof expected, "%s:%d: %s", path, line, what);
    assert_string_equal(mock_init_error_text(), expected);
}

/* Run every job the pool holds, oldest first (a reload, a hash). */
static int
run_pool(void)
{
    int n = 0;

    while (mock_pool_run())
        n++;
    return n;
}

/* --- tests ---------------------------------------------------------------- */

static void
test_descriptor(void **state)
{
    (void)state;
    const postern_module *m = &postern_module_descriptor;

    assert_int_equal(m->abi_version, POSTERN_ABI_VERSION);
    assert_string_equal(m->name, "auth_file");
    assert_non_null(m->create);
    assert_non_null(m->destroy);
    for (int h = 0; h < POSTERN_HOOK_SLOTS; h++) {
        if (h == POSTERN_HOOK_AUTH)
            assert_non_null(m->handlers[h]);
        else
            assert_null(m->handlers[h]);
    }
    destroy(NULL); /* accepted */
}

/* Comments, blank lines, surrounding whitespace, CRLF and shadow-style
 * extra fields are all read as documented. */
static void
test_parse_good_file(void **state)
{
    (void)state;
    char *alice = make_hash("$6$", "alice-pw");
    char *bob = make_hash("$6$", "bob-pw");
    char *carol = make_hash("$5$", "carol-pw");
    char *dave = make_hash("$6$", "dave pw: with colon");
    char text[2048];

    snprintf(text, sizeof text,
             "# postern users\n"
             "\n"
             "   \t\n"
             "alice:%s\n"
             "  # indented comment\n"
             "bob:%s:19000:0:99999:7:::\r\n"
             "  carol:%s  \n"
             "dave:%s",
             alice, bob, carol, dave); /* no final newline */
    write_file(text);
    void *af = create_default();
    assert_non_null(af);
    assert_accepted(af, "alice", "alice-pw");
    assert_accepted(af, "bob", "bob-pw");
    assert_accepted(af, "carol", "carol-pw");
    assert_accepted(af, "dave", "dave pw: with colon");
    assert_rejected(af, "bob", "alice-pw");
    /* A comment is not a user. */
    assert_rejected(af, "# postern users", "");
    destroy(af);
    free(alice);
    free(bob);
    free(carol);
    free(dave);
}

static void
test_user_names_exact(void **state)
{
    (void)state;
    char *hash = make_hash("$6$", "pw");
    char text[512];

    snprintf(text, sizeof text, "Alice:%s\n", hash);
    write_file(text);
    void *af = create_default();
    assert_non_null(af);
    assert_accepted(af, "Alice", "pw");
    assert_rejected(af, "alice", "pw");
    assert_rejected(af, "ALICE", "pw");
    assert_rejected(af, "Alice ", "pw");
    assert_rejected(af, "Alic", "pw");
    destroy(af);
    free(hash);
}

/* A bad hash, wherever it is, names its line; nothing else loads. */
static void
test_bad_hash_lines(void **state)
{
    (void)state;
    char *good = make_hash("$6$", "pw");
    char *bcrypt = make_hash("$2b$", "pw");
    static const struct {
        const char *hash, *what;
    } cases[] = {
        {"*", "locked or disabled account (no password hash)"},
        {"!", "locked or disabled account (no password hash)"},
        {"!$6$abc$def", "locked or disabled account (no password hash)"},
        {"", "empty password hash"},
        {"ab01FAX.bQRSU",
         "unsupported password hash (expected yescrypt $y$, bcrypt "
         "$2b$/$2y$, sha512-crypt $6$ or sha256-crypt $5$)"},
        {"$1$14h5p.Q4$dtrc8nYPRU/P.fnjmdm1f0",
         "unsupported password hash (expected yescrypt $y$, bcrypt "
         "$2b$/$2y$, sha512-crypt $6$ or sha256-crypt $5$)"},
        {"$6$x$y", "malformed password hash"},
        {"$6$rounds=10$abc$"
         "JcZOIQK7yrmXc1lgruIJPMLxsTXH7pRrOyFKZM4HhSrCPZKesKFNCYhEK6PxNI7eoU"
         "25Z00FixiM6V7lK53BH/",
         "malformed password hash"},
        {"$6$salt-longer-than-16$"
         "JcZOIQK7yrmXc1lgruIJPMLxsTXH7pRrOyFKZM4HhSrCPZKesKFNCYhEK6PxNI7eoU"
         "25Z00FixiM6V7lK53BH/",
         "malformed password hash"},
        {"$y$j9T$$", "malformed password hash"},
        {"$y$j9T$OHExfemIYjp3M0UENFoV91$short", "malformed password hash"},
        {"$2b$05$short", "malformed password hash"},
        {"$2b$99$1FuATpHjhVk4UkHp4ovAG.juXuq5Hdj1tdlsCB2ekGIrlnsg9wyry",
         "malformed password hash"},
    };
    char text[1024];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mock_reset();
        /* Line 4: after a comment, a good line and a blank line. */
        snprintf(text, sizeof text, "# users\nok:%s\n\nbad:%s\nlater:%s\n",
                 good, cases[i].hash, good);
        write_file(text);
        assert_line_error(4, cases[i].what);
    }

    /* A truncated bcrypt hash (one character short). */
    mock_reset();
    size_t len = strlen(bcrypt);
    snprintf(text, sizeof text, "u:%.*s\n", (int)(len - 1), bcrypt);
    write_file(text);
    assert_line_error(1, "malformed password hash");

    /* A yescrypt hash one character short, and one too long. */
    char *yescrypt = make_hash("$y$", "pw");
    mock_reset();
    snprintf(text, sizeof text, "u:%.*s\n", (int)strlen(yescrypt) - 1,
             yescrypt);
    write_file(text);
    assert_line_error(1, "malformed password hash");
    mock_reset();
    snprintf(text, sizeof text, "u:%sA\n", yescrypt);
    write_file(text);
    assert_line_error(1, "malformed password hash");
    free(yescrypt);

    /* A hash with trailing garbage before the next field. */
    mock_reset();
    snprintf(text, sizeof text, "u:%sX:1:2\n", bcrypt);
    write_file(text);
    assert_line_error(1, "malformed password hash");
    free(good);
    free(bcrypt);
}

static void
test_bad_lines(void **state)
{
    (void)state;
    char *hash = make_hash("$6$", "pw");
    char text[1024];

    write_file("no colon here\n");
    assert_line_error(1, "expected user:hash");

    mock_reset();
    snprintf(text, sizeof text, "\n:%s\n", hash);
    write_file(text);
    assert_line_error(2, "empty user name");

    mock_reset();
    snprintf(text, sizeof text, "a:%s\nb:%s\na:%s\n", hash, hash, hash);
    write_file(text);
    assert_line_error(3, "duplicate user");

    mock_reset();
    snprintf(text, sizeof text, "a\x01:%s\n", hash);
    write_file(text);
    assert_line_error(1, "control character in user name");

    /* A NUL byte inside a line. */
    mock_reset();
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite("x\0y:", 1, 4, f), 4);
    fputs(hash, f);
    assert_int_equal(fclose(f), 0);
    assert_line_error(1, "NUL byte in line");
    free(hash);
}

/* An empty file (or only comments) is valid: nobody can log in. */
static void
test_empty_file(void **state)
{
    (void)state;
    write_file("# nobody yet\n\n");
    void *af = create_default();
    assert_non_null(af);
    assert_rejected(af, "alice", "pw");
    destroy(af);
}

static void
test_missing_file(void **state)
{
    (void)state;
    char expected[256];

    assert_null(create_default());
    assert_string_equal(mock_init_error_path(), "file");
    snprintf(expected, sizeof expected,
             "cannot read %s: No such file or directory", path);
    assert_string_equal(mock_init_error_text(), expected);

    /* A directory is not a password file either. */
    mock_reset();
    char config[256];
    snprintf(config, sizeof config, "{\"file\": \"%s\"}", tmpdir);
    assert_null(create(config));
    assert_string_equal(mock_init_error_path(), "file");
    assert_non_null(strstr(mock_init_error_text(), tmpdir));
}

static void
test_config_errors(void **state)
{
    (void)state;
    static const struct {
        const char *config, *path, *needle;
    } cases[] = {
        {"{}", "file", "required"},
        {"{\"file\": \"\"}", "file", "non-empty string"},
        {"{\"file\": 7}", "file", "non-empty string"},
        {"{\"file\": \"/x\", \"reload_interval\": -1}", "reload_interval",
         ">= 0"},
        {"{\"file\": \"/x\", \"reload_interval\": \"1\"}", "reload_interval",
         ">= 0"},
        {"{\"file\": \"/x\", \"users\": []}", "users", "unknown key"},
        {"[]", "", "expected an object"},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mock_reset();
        assert_null(create(cases[i].config));
        assert_string_equal(mock_init_error_path(), cases[i].path);
        assert_non_null(strstr(mock_init_error_text(), cases[i].needle));
    }
}

/* Each scheme `postern hash-password [yescrypt|bcrypt|sha512crypt]`
 * offers, made exactly as core/main.c makes it, plus $2y$ and $5$ as other
 * systems write them: the right password is accepted, a wrong one not. */
static void
test_every_scheme(void **state)
{
    (void)state;
    static const char *const prefixes[] = {"$y$", "$2b$", "$6$", "$2y$", "$5$"};
    enum { N = sizeof prefixes / sizeof prefixes[0] };
    char *hashes[N];
    char text[2048] = "";

    for (size_t i = 0; i < N; i++) {
        char user[16], password[32];
        snprintf(user, sizeof user, "user%zu", i);
        snprintf(password, sizeof password, "s3cret \xc3\xa9 %zu!", i);
        hashes[i] = make_hash(prefixes[i], password);
        assert_true(strncmp(hashes[i], prefixes[i], strlen(prefixes[i])) == 0);
        size_t used = strlen(text);
        snprintf(text + used, sizeof text - used, "%s:%s\n", user, hashes[i]);
    }
    write_file(text);
    void *af = create_default();
    assert_non_null(af);
    for (size_t i = 0; i < N; i++) {
        char user[16], password[32];
        snprintf(user, sizeof user, "user%zu", i);
        snprintf(password, sizeof password, "s3cret \xc3\xa9 %zu!", i);
        assert_accepted(af, user, password);
        password[0] = 'S';
        assert_rejected(af, user, password);
        assert_rejected(af, user, "");
        free(hashes[i]);
    }
    destroy(af);
}

/* A wrong password and an unknown user get the same reply, and both pay
 * for a hash on the pool. */
static void
test_unknown_user_same_reply(void **state)
{
    (void)state;
    char *hash = make_hash("$y$", "right");
    char text[256];

    snprintf(text, sizeof text, "alice:%s\n", hash);
    write_file(text);
    void *af = create_default();
    assert_non_null(af);

    assert_rejected(af, "alice", "wrong");
    struct mock_reply wrong = *mock_last_reply();
    int submits = mock_pool_submit_count();
    assert_rejected(af, "mallory", "right");
    struct mock_reply unknown = *mock_last_reply();
    assert_int_equal(mock_pool_submit_count(), submits + 1);

    assert_int_equal(wrong.code, unknown.code);
    assert_string_equal(wrong.enhanced, unknown.enhanced);
    assert_string_equal(wrong.text, unknown.text);
    destroy(af);
    free(hash);
}

static double
now_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The fastest of n checks of (login, password), in seconds. The fastest
 * run is the one least disturbed by other work on the machine. */
static double
fastest_check(void *af, const char *login, const char *password, int n)
{
    double best = 1e9;

    for (int i = 0; i < n; i++) {
        double start = now_seconds();
        assert_int_equal(auth(af, login, password), POSTERN_REJECT);
        double took = now_seconds() - start;
        if (took < best)
            best = took;
    }
    return best;
}

/* An unknown user costs a yescrypt hash at the default cost, as a user
 * whose hash `postern hash-password` made does: the time taken does not
 * tell that the user does not exist. Bounds are loose on purpose (a
 * cheap dummy would be ~10 times faster). */
static void
test_unknown_user_same_cost(void **state)
{
    (void)state;
    char *hash = make_hash("$y$", "right");
    char text[256];

    snprintf(text, sizeof text, "alice:%s\n", hash);
    write_file(text);
    void *af = create_default();
    assert_non_null(af);
    double known = fastest_check(af, "alice", "wrong", 5);
    double unknown = fastest_check(af, "mallory", "wrong", 5);
    if (unknown < known * 0.4 || unknown > known * 2.5)
        fail_msg("known user %.4fs, unknown user %.4fs", known, unknown);
    destroy(af);
    free(hash);
}

/* The result is logged at info with the user; the password never is. */
static void
test_logging(void **state)
{
    (void)state;
    char *hash = make_hash("$6$", "Pa55-word");
    char text[256];

    snprintf(text, sizeof text, "alice:%s\n", hash);
    write_file(text);
    void *af = create_default();
    assert_non_null(af);
    assert_accepted(af, "alice", "Pa55-word");
    assert_true(
        mock_log_find(POSTERN_LOG_INFO, "user=\"alice\" result=accepted") >= 0);
    assert_rejected(af, "alice", "Wr0ng-word");
    assert_true(mock_log_find(POSTERN_LOG_INFO, "user=\"alice\" "
                                                "result=rejected") >= 0);
    /* A crafted name cannot end the quoted field. */
    assert_rejected(af, "x\" result=accepted", "Wr0ng-word");
    assert_true(
        mock_log_find(POSTERN_LOG_INFO, "user=\"x\\\" result=accepted\"") >= 0);
    for (size_t i = 0; i < mock_log_count(); i++) {
        assert_null(strstr(mock_log_text(i), "Pa55"));
        assert_null(strstr(mock_log_text(i), "Wr0ng"));
    }
    destroy(af);
    free(hash);
}

/* The file is re-read when it changes, but stat()ed at most once per
 * reload_interval of loop time. */
static void
test_reload(void **state)
{
    (void)state;
    char *old_hash = make_hash("$6$", "old");
    char *new_hash = make_hash("$6$", "new");
    char *bob_hash = make_hash("$2b$", "bob");
    char text[512], config[256];
    double t = 1700000000.0;

    snprintf(text, sizeof text, "alice:%s\n", old_hash);
    rewrite_file(text, 1600000000);
    snprintf(config, sizeof config,
             "{\"file\": \"%s\", \"reload_interval\": 5}", path);
    mock_set_now(t);
    void *af = create(config);
    assert_non_null(af);
    assert_accepted(af, "alice", "old");

    /* In place (same inode): new password, bob added. */
    snprintf(text, sizeof text, "alice:%s\nbob:%s\n", new_hash, bob_hash);
    rewrite_file(text, 1600000100);

    mock_set_now(t + 4.0); /* within the interval: not looked at */
    assert_accepted(af, "alice", "old");
    assert_rejected(af, "bob", "bob");

    mock_set_now(t + 5.5);
    assert_accepted(af, "alice", "new");
    assert_rejected(af, "alice", "old");
    assert_accepted(af, "bob", "bob");
    assert_true(mock_log_find(POSTERN_LOG_INFO, "reloaded") >= 0);

    /* Replaced by rename: only the inode tells (same size, same mtime). */
    char other[160];
    struct timeval times[2] = {{1600000100, 0}, {1600000100, 0}};
    snprintf(other, sizeof other, "%s.new", path);
    snprintf(text, sizeof text, "alice:%s\nbob:%s\n", old_hash, bob_hash);
    FILE *f = fopen(other, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(utimes(other, times), 0);
    assert_int_equal(rename(other, path), 0);
    mock_set_now(t + 11.0);
    assert_accepted(af, "alice", "old");
    destroy(af);
    free(old_hash);
    free(new_hash);
    free(bob_hash);
}

/* A bad new version is logged once and the old table stays in use; a
 * fixed file loads again. A vanished file keeps the table too. */
static void
test_bad_reload_keeps_table(void **state)
{
    (void)state;
    char *hash = make_hash("$6$", "pw");
    char *hash2 = make_hash("$6$", "pw2");
    char text[512], needle[256];
    double t = 1700000000.0;

    snprintf(text, sizeof text, "alice:%s\n", hash);
    rewrite_file(text, 1600000000);
    mock_set_now(t);
    void *af = create_default();
    assert_non_null(af);
    assert_accepted(af, "alice", "pw");

    snprintf(text, sizeof text, "alice:%s\nbob:!\n", hash2);
    rewrite_file(text, 1600000100);
    mock_set_now(t + 2);
    assert_accepted(af, "alice", "pw");
    assert_rejected(af, "alice", "pw2");
    snprintf(needle, sizeof needle,
             "reload failed, keeping the current table: "
             "error=\"%s:2: locked",
             path);
    int first = mock_log_find(POSTERN_LOG_WARNING, needle);
    assert_true(first >= 0);

    /* Same broken version later: no second warning. */
    size_t logs = mock_log_count();
    mock_set_now(t + 4);
    assert_accepted(af, "alice", "pw");
    for (size_t i = logs; i < mock_log_count(); i++)
        assert_true(mock_log_level(i) != POSTERN_LOG_WARNING);

    /* Gone: still the old table, and one warning, not one per check. */
    assert_int_equal(unlink(path), 0);
    mock_set_now(t + 6);
    assert_accepted(af, "alice", "pw");
    assert_true(mock_log_find(POSTERN_LOG_WARNING, "cannot stat") >= 0);
    logs = mock_log_count();
    mock_set_now(t + 7.5);
    assert_accepted(af, "alice", "pw");
    for (size_t i = logs; i < mock_log_count(); i++)
        assert_true(mock_log_level(i) != POSTERN_LOG_WARNING);

    /* Fixed. */
    snprintf(text, sizeof text, "alice:%s\n", hash2);
    rewrite_file(text, 1600000200);
    mock_set_now(t + 10);
    assert_accepted(af, "alice", "pw2");
    destroy(af);
    free(hash);
    free(hash2);
}

/* The file is read and parsed on the pool, never in the auth hook: a slow
 * disk must not stall the loop. AUTHs meanwhile are judged on the table in
 * use; the new table replaces it on the loop thread when the pool is done. */
static void
test_reload_on_the_pool(void **state)
{
    (void)state;
    char *old_hash = make_hash("$6$", "old");
    char *new_hash = make_hash("$6$", "new");
    char text[512];
    double t = 1700000000.0;

    snprintf(text, sizeof text, "alice:%s\n", old_hash);
    rewrite_file(text, 1600000000);
    mock_set_now(t);
    void *af = create_default();
    assert_non_null(af);
    mock_set_pool_mode(MOCK_POOL_DEFER);
    snprintf(text, sizeof text, "alice:%s\n", new_hash);
    rewrite_file(text, 1600000100);

    /* The check is due: it goes to the pool before the hash does, and the
     * hash is taken from the table in use. */
    mock_set_now(t + 1.5);
    mock_set_auth("PLAIN", "alice", "old", "");
    postern_handler handler =
        postern_module_descriptor.handlers[POSTERN_HOOK_AUTH];
    assert_int_equal(handler(mock_ctx(), af), POSTERN_PENDING);
    assert_int_equal(mock_pool_pending(), 2);

    /* Another AUTH while the reload is in progress: the old table again,
     * and no second check. */
    mock_set_now(t + 3);
    assert_int_equal(handler(mock_ctx(), af), POSTERN_PENDING);
    assert_int_equal(mock_pool_pending(), 3);
    assert_int_equal(mock_log_find(POSTERN_LOG_INFO, "reloaded"), -1);

    assert_int_equal(run_pool(), 3);
    assert_int_equal(mock_resume_count(), 2);
    assert_int_equal(mock_last_resume(), POSTERN_ACCEPT);
    assert_true(mock_log_find(POSTERN_LOG_INFO, "reloaded") >= 0);

    /* Now the new table answers. */
    mock_set_pool_mode(MOCK_POOL_RUN);
    assert_accepted(af, "alice", "new");
    assert_rejected(af, "alice", "old");
    destroy(af);
    free(old_hash);
    free(new_hash);
}

/* A timer checks the file every reload_interval, so a change is picked up
 * before the next AUTH; with reload_interval 0 (every AUTH) and under
 * --check-config there is no timer. */
static void
test_reload_by_timer(void **state)
{
    (void)state;
    char *old_hash = make_hash("$6$", "old");
    char *new_hash = make_hash("$6$", "new");
    char text[512], config[256];
    double t = 1700000000.0;

    snprintf(text, sizeof text, "alice:%s\n", old_hash);
    rewrite_file(text, 1600000000);
    snprintf(config, sizeof config,
             "{\"file\": \"%s\", \"reload_interval\": 5}", path);
    mock_set_now(t);
    void *af = create(config);
    assert_non_null(af);
    assert_int_equal(mock_timers_active(), 1);
    assert_true(mock_timer_seconds() == 5.0);

    mock_set_pool_mode(MOCK_POOL_DEFER);
    snprintf(text, sizeof text, "alice:%s\n", new_hash);
    rewrite_file(text, 1600000100);
    mock_set_now(t + 5);
    assert_int_equal(mock_timer_fire(), 1);
    assert_int_equal(mock_pool_pending(), 1);
    assert_int_equal(mock_timers_active(), 1); /* armed again */
    assert_int_equal(run_pool(), 1);
    mock_set_pool_mode(MOCK_POOL_RUN);
    assert_accepted(af, "alice", "new");
    destroy(af);
    assert_int_equal(mock_timers_active(), 0);

    snprintf(config, sizeof config,
             "{\"file\": \"%s\", \"reload_interval\": 0}", path);
    af = create(config);
    assert_non_null(af);
    assert_int_equal(mock_timers_active(), 0);
    destroy(af);
    snprintf(config, sizeof config, "{\"file\": \"%s\"}", path);
    af = mock_create(config, 1);
    assert_non_null(af);
    assert_int_equal(mock_timers_active(), 0);
    destroy(af);
    free(old_hash);
    free(new_hash);
}

/* destroy() while a reload is on the pool: the instance lives until the
 * completion, which frees it (ASan and valgrind watch this test). */
static void
test_reload_in_flight_at_destroy(void **state)
{
    (void)state;
    char *hash = make_hash("$6$", "pw");
    char text[256];
    double t = 1700000000.0;

    snprintf(text, sizeof text, "alice:%s\n", hash);
    rewrite_file(text, 1600000000);
    mock_set_now(t);
    void *af = create_default();
    assert_non_null(af);
    rewrite_file(text, 1600000100);
    mock_set_pool_mode(MOCK_POOL_DEFER);
    mock_set_now(t + 1.5);
    assert_int_equal(mock_timer_fire(), 1);
    assert_int_equal(mock_pool_pending(), 1);
    destroy(af);
    assert_int_equal(mock_timers_active(), 0);
    size_t logs = mock_log_count();
    assert_int_equal(run_pool(), 1);
    assert_int_equal(mock_log_count(), logs); /* nothing swapped in */
    free(hash);
}

static void
test_pool_refuses(void **state)
{
    (void)state;
    char *hash = make_hash("$6$", "pw");
    char text[256];

    snprintf(text, sizeof text, "alice:%s\n", hash);
    write_file(text);
    void *af = create_default();
    assert_non_null(af);
    mock_set_pool_mode(MOCK_POOL_REFUSE);
    mock_set_auth("PLAIN", "alice", "pw", "");
    postern_result r =
        postern_module_descriptor.handlers[POSTERN_HOOK_AUTH](mock_ctx(), af);
    assert_int_equal(r, POSTERN_TEMPFAIL);
    assert_int_equal(mock_resume_count(), 0);
    assert_int_equal(mock_last_reply()->code, 454);
    assert_string_equal(mock_last_reply()->enhanced, "4.7.0");
    assert_int_equal(jobs_wiped, 1); /* the job was still wiped */
    assert_int_equal(jobs_not_zero, 0);
    destroy(af);
    free(hash);
}

/* The real pool completes later: nothing resumes before it runs, and the
 * hash is checked off the handler. */
static void
test_deferred_completion(void **state)
{
    (void)state;
    char *hash = make_hash("$y$", "pw");
    char text[256];

    snprintf(text, sizeof text, "alice:%s\n", hash);
    write_file(text);
    void *af = create_default();
    assert_non_null(af);
    mock_set_pool_mode(MOCK_POOL_DEFER);
    mock_set_auth("LOGIN", "alice", "pw", "");
    postern_result r =
        postern_module_descriptor.handlers[POSTERN_HOOK_AUTH](mock_ctx(), af);
    assert_int_equal(r, POSTERN_PENDING);
    assert_int_equal(mock_resume_count(), 0);
    /* The core's credentials may go away once the handler returned. */
    mock_set_auth(NULL, NULL, NULL, NULL);
    /* The first AUTH also started a check of the file: two jobs. */
    assert_int_equal(run_pool(), 2);
    assert_int_equal(mock_resume_count(), 1);
    assert_int_equal(mock_last_resume(), POSTERN_ACCEPT);
    destroy(af);
    free(hash);
}

/* The client left while the hash ran: resume anyway (the core frees the
 * context), without a reply. */
static void
test_orphaned(void **state)
{
    (void)state;
    char *hash = make_hash("$6$", "pw");
    char text[256];

    snprintf(text, sizeof text, "alice:%s\n", hash);
    write_file(text);
    void *af = create_default();
    assert_non_null(af);
    mock_set_pool_mode(MOCK_POOL_DEFER);
    mock_set_auth("PLAIN", "alice", "wrong", "");
    assert_int_equal(
        postern_module_descriptor.handlers[POSTERN_HOOK_AUTH](mock_ctx(), af),
        POSTERN_PENDING);
    mock_set_orphaned(1);
    assert_int_equal(run_pool(), 2); /* the check of the file, the hash */
    assert_int_equal(mock_resume_count(), 1);
    assert_int_equal(mock_last_resume(), POSTERN_REJECT);
    assert_int_equal(mock_last_reply()->count, 0);
    assert_int_equal(jobs_wiped, 1);
    destroy(af);
    free(hash);
}

/* Every job's memory, password copy included, is zero before free(). */
static void
test_password_wiped(void **state)
{
    (void)state;
    char *hash = make_hash("$6$", "pw");
    char text[256];

    snprintf(text, sizeof text, "alice:%s\n", hash);
    write_file(text);
    void *af = create_default();
    assert_non_null(af);
    assert_accepted(af, "alice", "pw");
    assert_rejected(af, "alice", "not the password");
    assert_rejected(af, "nobody", "not the password");
    assert_int_equal(jobs_wiped, 3);
    assert_int_equal(jobs_not_zero, 0);
    destroy(af);
    free(hash);
}

/* PLAIN's authzid: empty or the login itself is fine; anyone else is
 * refused with the usual reply, without hashing anything. */
static void
test_authzid(void **state)
{
    (void)state;
    char *hash = make_hash("$6$", "pw");
    char text[256];

    snprintf(text, sizeof text, "alice:%s\nbob:%s\n", hash, hash);
    write_file(text);
    void *af = create_default();
    assert_non_null(af);
    postern_handler handler =
        postern_module_descriptor.handlers[POSTERN_HOOK_AUTH];

    mock_set_auth("PLAIN", "alice", "pw", "alice");
    assert_int_equal(handler(mock_ctx(), af), POSTERN_PENDING);
    assert_int_equal(mock_last_resume(), POSTERN_ACCEPT);

    int submits = mock_pool_submit_count();
    mock_set_auth("PLAIN", "alice", "pw", "bob");
    assert_int_equal(handler(mock_ctx(), af), POSTERN_REJECT);
    assert_int_equal(mock_pool_submit_count(), submits);
    assert_int_equal(mock_last_reply()->code, 535);
    assert_string_equal(mock_last_reply()->enhanced, "5.7.8");
    assert_string_equal(mock_last_reply()->text, REJECT_TEXT);
    assert_true(mock_log_find(POSTERN_LOG_INFO, "authzid_not_allowed") >= 0);

    /* LOGIN has no authzid: NULL is the same as empty. */
    mock_set_auth("LOGIN", "alice", "pw", NULL);
    assert_int_equal(handler(mock_ctx(), af), POSTERN_PENDING);
    assert_int_equal(mock_last_resume(), POSTERN_ACCEPT);
    destroy(af);
    free(hash);
}

/* Odd credentials: none at all, an empty or overlong password. */
static void
test_odd_credentials(void **state)
{
    (void)state;
    char *hash = make_hash("$6$", "pw");
    char text[256];

    snprintf(text, sizeof text, "alice:%s\n", hash);
    write_file(text);
    void *af = create_default();
    assert_non_null(af);

    mock_set_auth(NULL, NULL, NULL, NULL);
    assert_int_equal(
        postern_module_descriptor.handlers[POSTERN_HOOK_AUTH](mock_ctx(), af),
        POSTERN_CONTINUE);
    assert_int_equal(mock_pool_submit_count(), 0);

    assert_rejected(af, "alice", "");
    char *big = malloc(4096);
    assert_non_null(big);
    memset(big, 'p', 4095);
    big[4095] = '\0';
    assert_rejected(af, "alice", big);
    assert_rejected(af, big, "pw");
    free(big);
    destroy(af);
    free(hash);
}

/* --check-config builds the instance the same way. */
static void
test_check_only(void **state)
{
    (void)state;
    char *hash = make_hash("$6$", "pw");
    char text[256], config[256];
    void *instance = NULL;

    snprintf(text, sizeof text, "alice:%s\nbob:*\n", hash);
    write_file(text);
    snprintf(config, sizeof config, "{\"file\": \"%s\"}", path);
    json_t *json = json_loads(config, 0, NULL);
    assert_non_null(json);
    assert_int_equal(
        postern_module_descriptor.create(mock_init(json, 1), &instance), -1);
    json_decref(json);
    assert_non_null(strstr(mock_init_error_text(), ":2: locked"));
    free(hash);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_descriptor),
        cmocka_unit_test_setup_teardown(test_parse_good_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_names_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_hash_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_scheme, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_user_same_reply, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unknown_user_same_cost, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_logging, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_reload_keeps_table, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reload_on_the_pool, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reload_by_timer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_in_flight_at_destroy, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pool_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deferred_completion, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_orphaned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_password_wiped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_authzid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_odd_credentials, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_only, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
