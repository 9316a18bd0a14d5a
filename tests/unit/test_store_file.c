/*
 * test_store_file.c - the store_file module against a real file system:
 * maildir creation, exact bytes, the envelope file, per-recipient copies,
 * failures (unwritable maildir, failing reader, refusing pool) answering
 * 451 and leaving nothing behind, orphaned contexts and config errors.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "mock_core.h"
#include "../../modules/store_file/store_file.h"

#define ID "a1b2c3d4e5f60718"

static char tmpdir[64];
static char root[128];

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    chmod(path, 0700); /* undo what a test took away */
    return remove(path);
}

static int
setup(void **state)
{
    (void)state;
    mock_reset();
    mock_set_transaction_id(ID);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/postern-store-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(root, sizeof root, "%s/mail", tmpdir);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    mock_cleanup();
    chmod(tmpdir, 0700);
    return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* --- helpers ------------------------------------------------------------- */

static void *
create(const char *config_text, int check_only)
{
    return mock_create(config_text, check_only);
}

/* An instance on root with extra config keys (",\"k\": v" or ""). */
static void *
create_root(const char *extra)
{
    char config[512];

    snprintf(config, sizeof config, "{\"root\": \"%s\"%s}", root, extra);
    return create(config, 0);
}

/* The config text create_root() uses, in buf. */
static const char *
config_of_root(char *buf, size_t size, const char *extra)
{
    snprintf(buf, size, "{\"root\": \"%s\"%s}", root, extra);
    return buf;
}

static void
destroy(void *instance)
{
    postern_module_descriptor.destroy(instance);
}

static postern_result
store(void *instance)
{
    return postern_module_descriptor.handlers[POSTERN_HOOK_STORE](mock_ctx(),
                                                                  instance);
}

/* "a/b" in one of a few rotating buffers, so calls may nest. */
static char *
path_of(const char *a, const char *b)
{
    static char buf[8][1024];
    static int next;
    char joined[sizeof buf[0]];
    size_t la = strlen(a), lb = strlen(b);

    assert_true(la + 1 + lb < sizeof joined);
    memcpy(joined, a, la);
    joined[la] = '/';
    memcpy(joined + la + 1, b, lb + 1);
    char *p = buf[next++ % 8];
    memcpy(p, joined, la + lb + 2);
    return p;
}

/* Entries of dir other than . and ..; the first name goes in first. */
static int
count_entries(const char *dir, char *first, size_t size)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (n++ == 0 && first != NULL)
            snprintf(first, size, "%s", e->d_name);
    }
    closedir(d);
    return n;
}

static int
is_dir_0700(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode) &&
           (st.st_mode & 0777) == 0700;
}

static unsigned char *
read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    unsigned char *data = malloc((size_t)n + 1);
    assert_non_null(data);
    assert_int_equal(fread(data, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return data;
}

/* A message with everything a careless copy would break: 8-bit bytes, a
 * NUL, lines starting with '.', and more than one 64 KiB buffer. */
static unsigned char *
make_message(size_t *len)
{
    size_t cap = 200 * 1024, n = 0;
    unsigned char *m = malloc(cap);
    assert_non_null(m);
    const char *head = "Received: from x\r\nSubject: =?utf-8?q?t?=\r\n\r\n"
                       ".leading dot\r\n..two dots\r\n.\r\n";
    memcpy(m, head, strlen(head));
    n = strlen(head);
    while (n < cap) {
        m[n] = (unsigned char)((n * 7 + 13) & 0xff); /* all byte values */
        n++;
    }
    *len = n;
    return m;
}

static void
assert_file_equals(const char *path, const unsigned char *data, size_t len)
{
    size_t got_len;
    unsigned char *got = read_all(path, &got_len);

    assert_int_equal(got_len, len);
    assert_memory_equal(got, data, len);
    free(got);
}

/* The n-th delivery since reset went through: PENDING, resumed ACCEPT
 * with the 250. */
static void
assert_stored_nth(postern_result r, int n)
{
    assert_int_equal(r, POSTERN_PENDING);
    assert_int_equal(mock_resume_count(), n);
    assert_int_equal(mock_last_resume(), POSTERN_ACCEPT);
    const struct mock_reply *reply = mock_last_reply();
    assert_int_equal(reply->count, n);
    assert_int_equal(reply->code, 250);
    assert_string_equal(reply->enhanced, "2.0.0");
    assert_string_equal(reply->text, "Ok: queued as " ID);
    assert_int_equal(mock_readers_open(), 0);
}

static void
assert_stored(postern_result r)
{
    assert_stored_nth(r, 1);
}

static void
assert_451(void)
{
    const struct mock_reply *reply = mock_last_reply();
    assert_int_equal(reply->count, 1);
    assert_int_equal(reply->code, 451);
    assert_string_equal(reply->enhanced, "4.3.0");
    assert_string_equal(reply->text, "Error: local storage failure");
    assert_int_equal(mock_readers_open(), 0);
}

/* The delivery failed after it was submitted: resumed TEMPFAIL, 451. */
static void
assert_tempfailed(postern_result r)
{
    assert_int_equal(r, POSTERN_PENDING);
    assert_int_equal(mock_resume_count(), 1);
    assert_int_equal(mock_last_resume(), POSTERN_TEMPFAIL);
    assert_451();
    assert_true(mock_log_find(POSTERN_LOG_ERROR, "delivery failed") >= 0);
}

/* --- tests -----------------------------------------------------------------
 */

static void
test_descriptor(void **state)
{
    (void)state;
    const postern_module *m = &postern_module_descriptor;

    assert_int_equal(m->abi_version, POSTERN_ABI_VERSION);
    assert_string_equal(m->name, "store_file");
    assert_non_null(m->handlers[POSTERN_HOOK_STORE]);
    assert_null(m->handlers[POSTERN_HOOK_RCPT]);
}

static void
test_creates_maildir(void **state)
{
    (void)state;
    char nested[160], config[256];

    /* Missing parents are made too. */
    snprintf(nested, sizeof nested, "%s/a/b/mail", tmpdir);
    snprintf(config, sizeof config, "{\"root\": \"%s\"}", nested);
    void *sf = create(config, 0);
    assert_non_null(sf);
    assert_true(is_dir_0700(nested));
    assert_true(is_dir_0700(path_of(nested, "tmp")));
    assert_true(is_dir_0700(path_of(nested, "new")));
    assert_true(is_dir_0700(path_of(nested, "cur")));
    assert_true(is_dir_0700(path_of(nested, "envelope")));
    destroy(sf);
    /* Again, over the existing maildir. */
    sf = create(config, 0);
    assert_non_null(sf);
    destroy(sf);

    /* --check-config creates nothing. */
    sf = create_root("");
    destroy(sf);
    snprintf(nested, sizeof nested, "%s/checked", tmpdir);
    snprintf(config, sizeof config, "{\"root\": \"%s\"}", nested);
    sf = create(config, 1);
    assert_non_null(sf);
    assert_int_equal(access(nested, F_OK), -1);
    destroy(sf);

    /* No envelope dir without envelopes; per_recipient: only the root. */
    snprintf(nested, sizeof nested, "%s/noenv", tmpdir);
    snprintf(config, sizeof config, "{\"root\": \"%s\", \"envelope\": false}",
             nested);
    sf = create(config, 0);
    assert_true(is_dir_0700(path_of(nested, "new")));
    assert_int_equal(access(path_of(nested, "envelope"), F_OK), -1);
    destroy(sf);
    snprintf(nested, sizeof nested, "%s/perrcpt", tmpdir);
    snprintf(config, sizeof config,
             "{\"root\": \"%s\", \"per_recipient\": true}", nested);
    sf = create(config, 0);
    assert_true(is_dir_0700(nested));
    assert_int_equal(count_entries(nested, NULL, 0), 0);
    destroy(sf);
    /* With the journal, it goes where no recipient's maildir can be
     * named. */
    snprintf(nested, sizeof nested, "%s/perrcpt-journal", tmpdir);
    snprintf(config, sizeof config,
             "{\"root\": \"%s\", \"per_recipient\": true, "
             "\"journal\": true}",
             nested);
    sf = create(config, 0);
    assert_int_equal(count_entries(nested, NULL, 0), 1);
    assert_true(is_dir_0700(path_of(nested, ".journal")));
    destroy(sf);
    assert_int_equal(mock_log_find(POSTERN_LOG_WARNING, "fsync"), -1);
}

static void
test_stores_exact_bytes(void **state)
{
    (void)state;
    size_t len;
    unsigned char *msg = make_message(&len);
    char name[256], expect[128];

    mock_set_message(msg, len);
    mock_add_rcpt("rcpt@example.com");
    mock_set_read_chunk(7777); /* reads that do not line up with writes */
    mock_set_now(1700000000.25);
    void *sf = create_root("");
    assert_non_null(sf);

    assert_stored(store(sf));
    /* One job writes the files, and its thread commits them. */
    assert_int_equal(mock_pool_submit_count(), 1);
    assert_int_equal(count_entries(path_of(root, "new"), name, sizeof name), 1);
    assert_int_equal(count_entries(path_of(root, "tmp"), NULL, 0), 0);
    assert_int_equal(count_entries(path_of(root, "cur"), NULL, 0), 0);
    assert_file_equals(path_of(path_of(root, "new"), name), msg, len);

    struct stat st;
    assert_int_equal(stat(path_of(path_of(root, "new"), name), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    /* <sec>.M<usec>P<pid>Q<id>R<counter>.<host> */
    snprintf(expect, sizeof expect, "1700000000.M250000P%ldQ" ID "R",
             (long)getpid());
    assert_int_equal(strncmp(name, expect, strlen(expect)), 0);
    const char *p = name + strlen(expect);
    assert_true(*p >= '1' && *p <= '9');
    while (*p >= '0' && *p <= '9')
        p++;
    assert_int_equal(*p, '.');
    assert_true(p[1] != '\0');
    assert_null(strchr(name, '/'));
    assert_null(strchr(name, ':'));

    /* A second message gets a name of its own. */
    assert_int_equal(count_entries(path_of(root, "envelope"), NULL, 0), 1);
    mock_reset();
    mock_set_transaction_id(ID);
    mock_set_message("x\r\n", 3);
    mock_set_now(1700000000.25);
    assert_stored(store(sf));
    assert_int_equal(count_entries(path_of(root, "new"), NULL, 0), 2);
    assert_int_equal(count_entries(path_of(root, "envelope"), NULL, 0), 2);
    destroy(sf);
    free(msg);
}

static void
test_envelope(void **state)
{
    (void)state;
    char name[256], env_name[300];

    mock_set_session_id("00112233445566ff");
    mock_set_client("2001:db8::5", 52525);
    mock_set_helo("mx.example.net", 1);
    mock_set_tls(1);
    mock_set_auth_user("alice");
    mock_set_mail_from("sender@example.org");
    mock_add_mail_param("SIZE", "1234");
    mock_add_mail_param("BODY", "8BITMIME");
    mock_add_mail_param("SMTPUTF8", NULL);
    mock_add_mail_param("X-OTHER", "kept out");
    mock_add_rcpt("one@example.com");
    mock_add_rcpt("Two@Example.com");
    mock_set_message("Subject: hi\r\n\r\nbody\r\n", 21);
    mock_set_now(1700000000.25);
    void *sf = create_root("");
    assert_stored(store(sf));

    assert_int_equal(count_entries(path_of(root, "new"), name, sizeof name), 1);
    assert_int_equal(
        count_entries(path_of(root, "envelope"), env_name, sizeof env_name), 1);
    char expect[300];
    snprintf(expect, sizeof expect, "%s.json", name);
    assert_string_equal(env_name, expect);

    json_error_t jerr;
    json_t *env =
        json_load_file(path_of(path_of(root, "envelope"), env_name), 0, &jerr);
    if (env == NULL)
        fail_msg("envelope does not parse: %s", jerr.text);
    assert_string_equal(json_string_value(json_object_get(env, "id")), ID);
    assert_string_equal(json_string_value(json_object_get(env, "session")),
                        "00112233445566ff");
    assert_string_equal(json_string_value(json_object_get(env, "client_ip")),
                        "2001:db8::5");
    assert_int_equal(json_integer_value(json_object_get(env, "client_port")),
                     52525);
    assert_string_equal(json_string_value(json_object_get(env, "helo")),
                        "mx.example.net");
    assert_true(json_is_true(json_object_get(env, "esmtp")));
    assert_true(json_is_true(json_object_get(env, "tls")));
    assert_string_equal(json_string_value(json_object_get(env, "auth_user")),
                        "alice");
    assert_string_equal(json_string_value(json_object_get(env, "mail_from")),
                        "sender@example.org");
    json_t *params = json_object_get(env, "mail_params");
    assert_true(json_is_object(params));
    assert_int_equal(json_object_size(params), 3);
    assert_string_equal(json_string_value(json_object_get(params, "SIZE")),
                        "1234");
    assert_string_equal(json_string_value(json_object_get(params, "BODY")),
                        "8BITMIME");
    assert_string_equal(json_string_value(json_object_get(params, "SMTPUTF8")),
                        "");
    json_t *rcpts = json_object_get(env, "rcpt_to");
    assert_int_equal(json_array_size(rcpts), 2);
    assert_string_equal(json_string_value(json_array_get(rcpts, 0)),
                        "one@example.com");
    assert_string_equal(json_string_value(json_array_get(rcpts, 1)),
                        "Two@Example.com");
    assert_int_equal(json_integer_value(json_object_get(env, "size")), 21);
    assert_string_equal(json_string_value(json_object_get(env, "received_at")),
                        "2023-11-14T22:13:20Z");
    json_decref(env);
    destroy(sf);

    /* Unauthenticated, plain, HELO, null sender, a non-UTF-8 address. */
    mock_reset();
    mock_set_transaction_id(ID);
    mock_set_helo("old.example", 0);
    mock_add_rcpt("caf\xe9@example.com");
    mock_set_message("x", 1);
    sf = create_root(", \"envelope\": true");
    assert_stored(store(sf));
    assert_int_equal(count_entries(path_of(root, "envelope"), NULL, 0), 2);
    DIR *d = opendir(path_of(root, "envelope"));
    struct dirent *e;
    int checked = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        env = json_load_file(path_of(path_of(root, "envelope"), e->d_name), 0,
                             &jerr);
        assert_non_null(env);
        if (json_integer_value(json_object_get(env, "size")) != 1) {
            json_decref(env);
            continue;
        }
        assert_true(json_is_null(json_object_get(env, "auth_user")));
        assert_true(json_is_false(json_object_get(env, "esmtp")));
        assert_true(json_is_false(json_object_get(env, "tls")));
        assert_string_equal(
            json_string_value(json_object_get(env, "mail_from")), "");
        assert_int_equal(json_object_size(json_object_get(env, "mail_params")),
                         0);
        assert_string_equal(json_string_value(json_array_get(
                                json_object_get(env, "rcpt_to"), 0)),
                            "caf?@example.com");
        json_decref(env);
        checked++;
    }
    closedir(d);
    assert_int_equal(checked, 1);
    destroy(sf);

    /* "envelope": false writes none. */
    mock_reset();
    mock_set_transaction_id(ID);
    mock_set_message("y", 1);
    char other[160], config[256];
    snprintf(other, sizeof other, "%s/noenv", tmpdir);
    snprintf(config, sizeof config, "{\"root\": \"%s\", \"envelope\": false}",
             other);
    sf = create(config, 0);
    assert_stored(store(sf));
    assert_int_equal(count_entries(path_of(other, "new"), NULL, 0), 1);
    assert_int_equal(access(path_of(other, "envelope"), F_OK), -1);
    assert_int_equal(count_entries(path_of(other, "tmp"), NULL, 0), 0);
    destroy(sf);
}

/* --- the envelope line against jansson ------------------------------------
 *
 * store_file writes the envelope without jansson; until it did, the line
 * was json_dumps(JSON_COMPACT) of this object. Readers may compare bytes,
 * so the two must agree on every string, valid UTF-8 or not. */

static json_t *
oracle_string(const char *s)
{
    if (s == NULL)
        return json_null();
    json_t *j = json_string(s);
    if (j != NULL)
        return j;
    char *copy = strdup(s);
    for (char *p = copy; *p != '\0'; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    j = json_string(copy);
    free(copy);
    return j;
}

static char *
oracle_envelope(const char *s, const char *received_at)
{
    json_t *env = json_object(), *params = json_object(), *rcpts = json_array();

    json_object_set_new(params, "SIZE", oracle_string("12"));
    json_object_set_new(params, "ENVID", oracle_string(s));
    json_array_append_new(rcpts, oracle_string(s));
    json_array_append_new(rcpts, oracle_string("b@example.com"));
    json_object_set_new(env, "id", oracle_string(ID));
    json_object_set_new(env, "session", oracle_string("00112233445566ff"));
    json_object_set_new(env, "client_ip", oracle_string("192.0.2.7"));
    json_object_set_new(env, "client_port", json_integer(2525));
    json_object_set_new(env, "helo", oracle_string(s));
    json_object_set_new(env, "esmtp", json_true());
    json_object_set_new(env, "tls", json_false());
    json_object_set_new(env, "auth_user", oracle_string(s));
    json_object_set_new(env, "mail_from", oracle_string(s));
    json_object_set_new(env, "mail_params", params);
    json_object_set_new(env, "rcpt_to", rcpts);
    json_object_set_new(env, "size", json_integer(5));
    json_object_set_new(env, "quarantine", oracle_string(s));
    json_object_set_new(env, "received_at", oracle_string(received_at));
    char *text = json_dumps(env, JSON_COMPACT);
    json_decref(env);
    size_t len = strlen(text);
    text = realloc(text, len + 2);
    memcpy(text + len, "\n", 2);
    return text;
}

/* s in every string of the envelope; 0 when both writers agree. */
static int
envelope_differs(const char *s)
{
    static const size_t rcpts[] = {0, 1};
    const char *received_at = "2023-11-14T22:13:20Z";

    mock_reset();
    mock_set_transaction_id(ID);
    mock_set_session_id("00112233445566ff");
    mock_set_client("192.0.2.7", 2525);
    mock_set_helo(s, 1);
    mock_set_auth_user(s);
    mock_set_mail_from(s);
    mock_add_mail_param("SIZE", "12");
    mock_add_mail_param("ENVID", s);
    mock_add_rcpt(s);
    mock_add_rcpt("b@example.com");
    mock_set_message("hello", 5);
    postern_message_quarantine(mock_ctx(), s);
    char *ours = sf_envelope_text(mock_ctx(), rcpts, 2, received_at);
    char *theirs = oracle_envelope(s, received_at);
    int differs = ours == NULL || strcmp(ours, theirs) != 0;
    if (differs)
        print_message("string %s\n ours:   %s theirs: %s", s,
                      ours ? ours : "(null)\n", theirs);
    free(ours);
    free(theirs);
    return differs;
}

static void
test_envelope_bytes_as_jansson(void **state)
{
    (void)state;
    static const char *const strings[] = {
        "",
        "plain@example.org",
        "quote\" back\\slash /slash",
        "\x01\x02\b\f\n\r\t\x1f\x7f end",
        "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", /* UTF-8 */
        "caf\xe9@example.com",                       /* Latin-1 */
        "\xc0\xaf overlong",                         /* overlong '/' */
        "\xed\xa0\x80 surrogate",                    /* U+D800 */
        "\xf4\x90\x80\x80 above U+10FFFF",
        "\xe2\x82 cut short",
        "\xc3\xa9 then \xff", /* valid, then not */
        "\xe0\x80\xaf 3-byte overlong",
        "\xf0\x80\x80\xaf 4-byte overlong",
        "\xc1\xbf 2-byte overlong",
        "\xf5\x80\x80\x80 no such lead byte",
    };
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++)
        assert_int_equal(envelope_differs(strings[i]), 0);

    /* Random strings of whole sequences, valid and near-valid UTF-8
     * (overlong, surrogate, too high, cut short) and bytes that need
     * escaping. */
    static const char *const pieces[] = {"a",
                                         "\"",
                                         "\\",
                                         "/",
                                         "\x01",
                                         "\x1f",
                                         "\x7f",
                                         "\xc3\xa9",
                                         "\xe2\x82\xac",
                                         "\xf0\x9f\x98\x80",
                                         "\xf4\x8f\xbf\xbf",
                                         "\xc2\x80",
                                         "\xe0\xa0\x80",
                                         "\xf0\x90\x80\x80",
                                         "\xc1\xbf",
                                         "\xe0\x80\xaf",
                                         "\xf0\x80\x80\xaf",
                                         "\xed\xa0\x80",
                                         "\xf4\x90\x80\x80",
                                         "\xe2\x82",
                                         "\x80",
                                         "\xff"};
    unsigned seed = 12345;
    for (int round = 0; round < 3000; round++) {
        char s[64] = "";
        size_t n = (size_t)(rand_r(&seed) % 8);
        for (size_t k = 0; k < n; k++)
            strcat(s, pieces[rand_r(&seed) % (sizeof pieces / sizeof *pieces)]);
        assert_int_equal(envelope_differs(s), 0);
    }
}

static void
test_per_recipient(void **state)
{
    (void)state;
    static const struct {
        const char *dir;
        int n_rcpts;
    } expected[] = {
        {"alice@example.com", 2},
        {"bob_.._x@example.com", 1},
        {"_hidden@example.com", 1},
        {"we_ird__@example.com", 1},
    };
    size_t len;
    unsigned char *msg = make_message(&len);

    mock_set_message(msg, len);
    mock_add_rcpt("Alice@Example.COM");
    mock_add_rcpt("bob/../x@example.com");
    mock_add_rcpt(".hidden@example.com");
    mock_add_rcpt("alice@example.com");
    mock_add_rcpt("we:ird\xc3\xa9@example.com");
    void *sf = create_root(", \"per_recipient\": true");
    assert_stored(store(sf));

    assert_int_equal(count_entries(root, NULL, 0), 4);
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        char *dir = path_of(root, expected[i].dir), name[256], env_name[300];
        char sub[512];
        assert_true(is_dir_0700(dir));
        snprintf(sub, sizeof sub, "%s/new", dir);
        assert_int_equal(count_entries(sub, name, sizeof name), 1);
        assert_file_equals(path_of(sub, name), msg, len);
        /* One inode, linked into every maildir. */
        struct stat st;
        assert_int_equal(stat(path_of(sub, name), &st), 0);
        assert_int_equal(st.st_nlink, 4);
        snprintf(sub, sizeof sub, "%s/tmp", dir);
        assert_int_equal(count_entries(sub, NULL, 0), 0);
        snprintf(sub, sizeof sub, "%s/envelope", dir);
        assert_int_equal(count_entries(sub, env_name, sizeof env_name), 1);
        json_t *env = json_load_file(path_of(sub, env_name), 0, NULL);
        assert_non_null(env);
        json_t *rcpts = json_object_get(env, "rcpt_to");
        assert_int_equal(json_array_size(rcpts), expected[i].n_rcpts);
        json_decref(env);
    }
    destroy(sf);
    free(msg);
}

static void
test_per_recipient_failure(void **state)
{
    (void)state;
    char config[256];

    /* bob's maildir cannot be made: nobody gets the message. */
    snprintf(config, sizeof config,
             "{\"root\": \"%s\", \"per_recipient\": true}", root);
    void *sf = create(config, 0);
    FILE *f = fopen(path_of(root, "bob@example.com"), "w");
    assert_non_null(f);
    fclose(f);
    mock_set_message("hello\r\n", 7);
    mock_add_rcpt("alice@example.com");
    mock_add_rcpt("bob@example.com");
    assert_tempfailed(store(sf));
    assert_int_equal(
        count_entries(path_of(path_of(root, "alice@example.com"), "new"), NULL,
                      0),
        0);
    assert_int_equal(
        count_entries(path_of(path_of(root, "alice@example.com"), "tmp"), NULL,
                      0),
        0);
    destroy(sf);
}

/* Make dir a maildir whose new/ is a plain file: every step before the
 * rename into new/ works there, and that rename fails (even as root). */
static void
make_maildir_without_new(const char *dir)
{
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(mkdir(path_of(dir, "tmp"), 0700), 0);
    assert_int_equal(mkdir(path_of(dir, "cur"), 0700), 0);
    assert_int_equal(mkdir(path_of(dir, "envelope"), 0700), 0);
    FILE *f = fopen(path_of(dir, "new"), "w");
    assert_non_null(f);
    fclose(f);
}

/* Without fsync, the rename into bob's new/ fails after alice's copy was
 * renamed into hers: the client gets 451 (not every copy is delivered),
 * and alice's copy, already visible to her mail reader, is never taken
 * back. Her envelope stays with it; bob's files (tmp/ and envelope/) are
 * removed. */
static void
test_per_recipient_rename_fails(void **state)
{
    (void)state;
    char name[256], env_name[300], expect[300], alice[256], bob[256];

    void *sf = create_root(", \"per_recipient\": true, \"fsync\": false");
    snprintf(alice, sizeof alice, "%s/alice@example.com", root);
    snprintf(bob, sizeof bob, "%s/bob@example.com", root);
    make_maildir_without_new(bob);
    mock_set_message("hello\r\n", 7);
    mock_add_rcpt("alice@example.com");
    mock_add_rcpt("bob@example.com");
    assert_tempfailed(store(sf));
    int i = mock_log_find(POSTERN_LOG_ERROR, "delivery failed");
    assert_non_null(strstr(mock_log_text((size_t)i), "op=rename"));
    assert_true(mock_log_find(POSTERN_LOG_WARNING, "in_new=1 maildirs=2") >= 0);

    assert_int_equal(count_entries(path_of(alice, "new"), name, sizeof name),
                     1);
    assert_file_equals(path_of(path_of(alice, "new"), name),
                       (const unsigned char *)"hello\r\n", 7);
    assert_int_equal(
        count_entries(path_of(alice, "envelope"), env_name, sizeof env_name),
        1);
    snprintf(expect, sizeof expect, "%s.json", name);
    assert_string_equal(env_name, expect);
    assert_int_equal(count_entries(path_of(alice, "tmp"), NULL, 0), 0);
    assert_int_equal(count_entries(path_of(bob, "tmp"), NULL, 0), 0);
    assert_int_equal(count_entries(path_of(bob, "envelope"), NULL, 0), 0);
    destroy(sf);
}

/* With fsync, the group commit opens every new/ before any rename: a new/
 * that is not a directory fails the delivery before any copy is visible,
 * so nothing is left anywhere. */
static void
test_per_recipient_new_not_a_directory(void **state)
{
    (void)state;
    char alice[256], bob[256];

    void *sf = create_root(", \"per_recipient\": true");
    snprintf(alice, sizeof alice, "%s/alice@example.com", root);
    snprintf(bob, sizeof bob, "%s/bob@example.com", root);
    make_maildir_without_new(bob);
    mock_set_message("hello\r\n", 7);
    mock_add_rcpt("alice@example.com");
    mock_add_rcpt("bob@example.com");
    assert_tempfailed(store(sf));
    int i = mock_log_find(POSTERN_LOG_ERROR, "delivery failed");
    assert_non_null(strstr(mock_log_text((size_t)i), "op=open"));
    assert_true(mock_log_find(POSTERN_LOG_WARNING, "partial delivery") < 0);
    assert_int_equal(count_entries(path_of(alice, "new"), NULL, 0), 0);
    assert_int_equal(count_entries(path_of(alice, "envelope"), NULL, 0), 0);
    assert_int_equal(count_entries(path_of(alice, "tmp"), NULL, 0), 0);
    assert_int_equal(count_entries(path_of(bob, "tmp"), NULL, 0), 0);
    assert_int_equal(count_entries(path_of(bob, "envelope"), NULL, 0), 0);
    destroy(sf);
}

static void
test_unwritable_maildir(void **state)
{
    (void)state;
    void *sf = create_root("");
    mock_set_message("hello\r\n", 7);
    mock_add_rcpt("rcpt@example.com");

    /* tmp/ replaced by a file (works even as root, unlike chmod). */
    assert_int_equal(rmdir(path_of(root, "tmp")), 0);
    FILE *f = fopen(path_of(root, "tmp"), "w");
    assert_non_null(f);
    fclose(f);
    assert_tempfailed(store(sf));
    int i = mock_log_find(POSTERN_LOG_ERROR, "delivery failed");
    assert_non_null(strstr(mock_log_text((size_t)i), "Not a directory"));
    assert_non_null(strstr(mock_log_text((size_t)i), "/tmp/"));
    assert_int_equal(count_entries(path_of(root, "new"), NULL, 0), 0);
    assert_int_equal(count_entries(path_of(root, "envelope"), NULL, 0), 0);
    assert_int_equal(unlink(path_of(root, "tmp")), 0);
    assert_int_equal(mkdir(path_of(root, "tmp"), 0700), 0);

    /* Not writable by permission, where permissions apply (not root). */
    if (geteuid() != 0) {
        mock_reset();
        mock_set_transaction_id(ID);
        mock_set_message("hello\r\n", 7);
        assert_int_equal(chmod(path_of(root, "tmp"), 0500), 0);
        assert_tempfailed(store(sf));
        assert_int_equal(count_entries(path_of(root, "new"), NULL, 0), 0);
        assert_int_equal(chmod(path_of(root, "tmp"), 0700), 0);
    }

    /* new/ is gone: the last step fails, and the message and envelope
     * already written are unlinked again. */
    mock_reset();
    mock_set_transaction_id(ID);
    mock_set_message("hello\r\n", 7);
    assert_int_equal(rmdir(path_of(root, "new")), 0);
    f = fopen(path_of(root, "new"), "w");
    assert_non_null(f);
    fclose(f);
    assert_tempfailed(store(sf));
    assert_int_equal(count_entries(path_of(root, "tmp"), NULL, 0), 0);
    assert_int_equal(count_entries(path_of(root, "envelope"), NULL, 0), 0);
    destroy(sf);
}

static void
test_reader_fails(void **state)
{
    (void)state;
    size_t len;
    unsigned char *msg = make_message(&len);
    void *sf = create_root("");

    /* Mid-way, after more than one buffer was written. */
    mock_set_message(msg, len);
    mock_set_reader(MOCK_READER_READ_FAILS, 100000);
    assert_tempfailed(store(sf));
    int i = mock_log_find(POSTERN_LOG_ERROR, "delivery failed");
    assert_non_null(strstr(mock_log_text((size_t)i), "Input/output error"));
    assert_int_equal(count_entries(path_of(root, "tmp"), NULL, 0), 0);
    assert_int_equal(count_entries(path_of(root, "new"), NULL, 0), 0);
    assert_int_equal(count_entries(path_of(root, "envelope"), NULL, 0), 0);

    /* The reader cannot even be opened: 451 at once, nothing submitted. */
    mock_reset();
    mock_set_transaction_id(ID);
    mock_set_message(msg, len);
    mock_set_reader(MOCK_READER_OPEN_FAILS, 0);
    assert_int_equal(store(sf), POSTERN_TEMPFAIL);
    assert_451();
    assert_int_equal(mock_resume_count(), 0);
    assert_int_equal(mock_pool_submit_count(), 0);
    assert_true(mock_log_find(POSTERN_LOG_ERROR, "cannot open") >= 0);
    assert_int_equal(count_entries(path_of(root, "tmp"), NULL, 0), 0);
    destroy(sf);
    free(msg);
}

static void
test_pool_refuses(void **state)
{
    (void)state;
    void *sf = create_root("");

    mock_set_message("hello\r\n", 7);
    mock_set_pool_mode(MOCK_POOL_REFUSE);
    assert_int_equal(store(sf), POSTERN_TEMPFAIL);
    assert_451();
    assert_int_equal(mock_resume_count(), 0);
    assert_true(mock_log_find(POSTERN_LOG_ERROR, "refused") >= 0);
    assert_int_equal(count_entries(path_of(root, "tmp"), NULL, 0), 0);
    assert_int_equal(count_entries(path_of(root, "new"), NULL, 0), 0);
    destroy(sf);
}

static void
test_orphaned(void **state)
{
    (void)state;
    void *sf = create_root("");

    mock_set_message("hello\r\n", 7);
    mock_set_pool_mode(MOCK_POOL_DEFER);
    assert_int_equal(store(sf), POSTERN_PENDING);
    assert_int_equal(mock_resume_count(), 0);
    assert_int_equal(mock_readers_open(), 1);
    /* The client goes away while the pool works: the files are written
     * and committed, and the loop is told. */
    mock_set_orphaned(1);
    assert_int_equal(mock_pool_run(), 1);
    assert_int_equal(mock_resume_count(), 1);
    assert_int_equal(mock_last_resume(), POSTERN_ACCEPT);
    assert_int_equal(mock_last_reply()->count, 0);
    assert_int_equal(mock_readers_open(), 0);
    assert_int_equal(count_entries(path_of(root, "new"), NULL, 0), 1);
    destroy(sf);
}

/* A commit whose answers the loop cannot take (postern_loop_call() out
 * of memory) is still answered, once, by the pool's done of the delivery
 * whose thread made it. */
static void
test_commit_answered_without_loop_call(void **state)
{
    (void)state;
    void *sf = create_root("");

    mock_set_message("hello\r\n", 7);
    mock_set_pool_mode(MOCK_POOL_DEFER);
    mock_set_loop_calls_refused(true);
    assert_int_equal(store(sf), POSTERN_PENDING);
    assert_int_equal(mock_pool_run(), 1);
    assert_int_equal(mock_resume_count(), 1);
    assert_int_equal(mock_last_resume(), POSTERN_ACCEPT);
    assert_int_equal(mock_last_reply()->code, 250);
    assert_int_equal(count_entries(path_of(root, "new"), NULL, 0), 1);
    destroy(sf);
}

/* The size of the only journal segment of dir, or -1. */
static long long
segment_size(const char *dir)
{
    char name[256];
    struct stat st;

    if (count_entries(dir, name, sizeof name) != 1 ||
        stat(path_of(dir, name), &st) != 0)
        return -1;
    return (long long)st.st_size;
}

/*
 * With the journal: the write puts the message into new/ at once and
 * appends it to the segment; the 250 waits for the commit (the segment
 * synced). At exit the segment is checkpointed and deleted.
 */
static void
test_written_then_journaled(void **state)
{
    (void)state;
    void *sf = create_root(", \"journal\": true");
    const char *journal = path_of(root, "journal");

    long long empty = segment_size(journal);
    assert_true(empty > 0); /* its header only */
    mock_set_message("hello\r\n", 7);
    mock_set_pool_mode(MOCK_POOL_DEFER);
    mock_set_loop_calls_deferred(true);
    assert_int_equal(store(sf), POSTERN_PENDING);
    assert_int_equal(mock_pool_run(), 1); /* the write, then the commit */
    assert_int_equal(count_entries(path_of(root, "tmp"), NULL, 0), 0);
    assert_int_equal(count_entries(path_of(root, "new"), NULL, 0), 1);
    /* header, name, maildir, envelope, the 7 bytes, trailer */
    assert_true(segment_size(journal) > empty + 7 + (long long)strlen(root));
    assert_int_equal(mock_resume_count(), 0);
    assert_int_equal(mock_loop_run(), 1); /* the commit's answers */
    assert_int_equal(mock_last_resume(), POSTERN_ACCEPT);
    assert_int_equal(mock_last_reply()->code, 250);
    destroy(sf);
    assert_int_equal(count_entries(journal, NULL, 0), 0);
}

/*
 * A delivery is written, then committed on the same pool thread, and
 * answered when the loop runs the commit's call: a delivery to one
 * maildir is an unnamed file (nothing ever in tmp/), linked into new/
 * with its envelope in envelope/. A delivery to two maildirs writes a
 * named file in the first tmp/ and links it into the second.
 */
static void
test_written_then_committed(void **state)
{
    (void)state;
    void *sf = create_root("");

    mock_set_message("hello\r\n", 7);
    mock_set_pool_mode(MOCK_POOL_DEFER);
    mock_set_loop_calls_deferred(true);
    assert_int_equal(store(sf), POSTERN_PENDING);
    assert_int_equal(mock_pool_run(), 1); /* the write, then the commit */
    assert_int_equal(count_entries(path_of(root, "tmp"), NULL, 0), 0);
    assert_int_equal(count_entries(path_of(root, "envelope"), NULL, 0), 1);
    assert_int_equal(count_entries(path_of(root, "new"), NULL, 0), 1);
    assert_int_equal(mock_resume_count(), 0);
    assert_int_equal(mock_loop_run(), 1); /* the commit's answers */
    assert_int_equal(mock_last_resume(), POSTERN_ACCEPT);
    destroy(sf);

    mock_reset();
    mock_set_transaction_id(ID);
    mock_set_message("hello\r\n", 7);
    mock_add_rcpt("alice@example.com");
    mock_add_rcpt("bob@example.com");
    mock_set_pool_mode(MOCK_POOL_DEFER);
    sf = create_root(", \"per_recipient\": true");
    assert_non_null(sf);
    assert_int_equal(store(sf), POSTERN_PENDING);
    assert_int_equal(mock_pool_run(), 1);
    char alice[512], bob[512], name[256];
    snprintf(alice, sizeof alice, "%s/alice@example.com", root);
    snprintf(bob, sizeof bob, "%s/bob@example.com", root);
    assert_int_equal(count_entries(path_of(alice, "tmp"), NULL, 0), 0);
    assert_int_equal(count_entries(path_of(alice, "new"), name, sizeof name),
                     1);
    /* one file, two names */
    struct stat a, b;
    assert_int_equal(stat(path_of(path_of(alice, "new"), name), &a), 0);
    assert_int_equal(stat(path_of(path_of(bob, "new"), name), &b), 0);
    assert_true(a.st_ino == b.st_ino && a.st_nlink == 2);
    assert_int_equal(mock_last_resume(), POSTERN_ACCEPT);
    destroy(sf);
}

static void
test_fsync_off_warns(void **state)
{
    (void)state;
    void *sf = create_root(", \"fsync\": false");

    assert_true(mock_log_find(POSTERN_LOG_WARNING, "fsync disabled") >= 0);
    mock_set_message("hello\r\n", 7);
    assert_stored(store(sf));
    assert_int_equal(count_entries(path_of(root, "new"), NULL, 0), 1);
    destroy(sf);
}

/* A file at path whose mtime (and atime) is age seconds before now. */
static void
make_file_aged(const char *path, double now, double age)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("partial message\r\n", f);
    assert_int_equal(fclose(f), 0);
    struct timespec times[2] = {{.tv_sec = (time_t)(now - age)},
                                {.tv_sec = (time_t)(now - age)}};
    assert_int_equal(utimensat(AT_FDCWD, path, times, 0), 0);
}

/* At start, files left in tmp/ for more than 36 hours (a crash between
 * write and rename) are removed, as Maildir readers do; younger ones may
 * belong to a delivery in progress in another process and stay. */
static void
test_old_tmp_files_removed(void **state)
{
    (void)state;
    char tmp[256], dir[256], config[512];
    double now = (double)time(NULL);

    mock_set_now(now);
    void *sf = create_root("");
    destroy(sf);
    snprintf(tmp, sizeof tmp, "%s/tmp", root);
    make_file_aged(path_of(tmp, "old"), now, 37 * 3600);
    make_file_aged(path_of(tmp, "old.json"), now, 40 * 24 * 3600);
    make_file_aged(path_of(tmp, "young"), now, 35 * 3600);
    make_file_aged(path_of(tmp, "fresh"), now, 0);
    assert_int_equal(mkdir(path_of(tmp, "old-dir"), 0700), 0);
    struct timespec old[2] = {{.tv_sec = (time_t)now - 40 * 3600},
                              {.tv_sec = (time_t)now - 40 * 3600}};
    assert_int_equal(utimensat(AT_FDCWD, path_of(tmp, "old-dir"), old, 0), 0);

    /* --check-config touches nothing. */
    sf = create(config_of_root(config, sizeof config, ""), 1);
    destroy(sf);
    assert_int_equal(count_entries(tmp, NULL, 0), 5);

    sf = create_root("");
    assert_non_null(sf);
    assert_int_equal(count_entries(tmp, NULL, 0), 3);
    assert_int_equal(access(path_of(tmp, "old"), F_OK), -1);
    assert_int_equal(access(path_of(tmp, "old.json"), F_OK), -1);
    assert_int_equal(access(path_of(tmp, "young"), F_OK), 0);
    assert_int_equal(access(path_of(tmp, "fresh"), F_OK), 0);
    assert_int_equal(access(path_of(tmp, "old-dir"), F_OK), 0);
    int i = mock_log_find(POSTERN_LOG_INFO, "older than 36 hours");
    assert_true(i >= 0);
    assert_non_null(strstr(mock_log_text((size_t)i), "removed=2"));
    destroy(sf);

    /* Nothing old left: no log line. */
    mock_reset();
    mock_set_now(now);
    sf = create_root("");
    assert_int_equal(mock_log_find(POSTERN_LOG_INFO, "older than 36 hours"),
                     -1);
    destroy(sf);

    /* per_recipient: the tmp/ of every maildir under the root. */
    mock_reset();
    mock_set_now(now);
    snprintf(config, sizeof config,
             "{\"root\": \"%s/per\", \"per_recipient\": true}", tmpdir);
    static const char *const users[] = {"alice@example.com", "bob@example.com"};
    snprintf(dir, sizeof dir, "%s/per", tmpdir);
    assert_int_equal(mkdir(dir, 0700), 0);
    for (size_t u = 0; u < 2; u++) {
        snprintf(tmp, sizeof tmp, "%s/per/%s", tmpdir, users[u]);
        assert_int_equal(mkdir(tmp, 0700), 0);
        snprintf(tmp, sizeof tmp, "%s/per/%s/tmp", tmpdir, users[u]);
        assert_int_equal(mkdir(tmp, 0700), 0);
        make_file_aged(path_of(tmp, "old"), now, 37 * 3600);
        make_file_aged(path_of(tmp, "fresh"), now, 60);
    }
    make_file_aged(path_of(dir, "stray-old-file"), now, 37 * 3600);
    sf = create(config, 0);
    assert_non_null(sf);
    for (size_t u = 0; u < 2; u++) {
        snprintf(tmp, sizeof tmp, "%s/per/%s/tmp", tmpdir, users[u]);
        assert_int_equal(count_entries(tmp, NULL, 0), 1);
        assert_int_equal(access(path_of(tmp, "fresh"), F_OK), 0);
    }
    assert_int_equal(access(path_of(dir, "stray-old-file"), F_OK), 0);
    i = mock_log_find(POSTERN_LOG_INFO, "older than 36 hours");
    assert_true(i >= 0);
    assert_non_null(strstr(mock_log_text((size_t)i), "removed=2"));
    destroy(sf);
}

static void
assert_config_error(const char *config, const char *path, const char *needle)
{
    mock_reset();
    assert_null(create(config, 0));
    assert_string_equal(mock_init_error_path(), path);
    if (strstr(mock_init_error_text(), needle) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", mock_init_error_text(), needle);
}

static void
test_bad_config(void **state)
{
    (void)state;
    char config[512], file[160];

    assert_config_error("[]", "", "expected an object");
    assert_config_error("{}", "root", "required");
    assert_config_error("{\"root\": 5}", "root", "expected a non-empty string");
    assert_config_error("{\"root\": \"\"}", "root",
                        "expected a non-empty string");
    assert_config_error("{\"root\": \"/x\", \"per_recipent\": true}",
                        "per_recipent", "unknown key");
    assert_config_error("{\"root\": \"/x\", \"per_recipient\": \"yes\"}",
                        "per_recipient", "expected true or false");
    assert_config_error("{\"root\": \"/x\", \"envelope\": 1}", "envelope",
                        "expected true or false");
    assert_config_error("{\"root\": \"/x\", \"fsync\": null}", "fsync",
                        "expected true or false");
    assert_config_error("{\"root\": \"/x\", \"quarantine\": \"a/b\"}",
                        "quarantine", "maildir folder name");
    assert_config_error("{\"root\": \"/x\", \"quarantine\": \".Junk\"}",
                        "quarantine", "not starting with '.'");
    assert_config_error("{\"root\": \"/x\", \"quarantine\": 1}", "quarantine",
                        "absolute directory path");
    assert_config_error("{\"root\": \"/x\", \"journal\": \"on\"}", "journal",
                        "expected true or false");
    assert_config_error("{\"root\": \"/x\", \"journal_dir\": \"\"}",
                        "journal_dir", "expected a non-empty string");
    assert_config_error("{\"root\": \"/x\", \"journal_checkpoint\": 0}",
                        "journal_checkpoint", "from 0.01 to 86400");
    assert_config_error("{\"root\": \"/x\", \"journal_checkpoint\": \"1\"}",
                        "journal_checkpoint", "seconds between checkpoints");

    /* A root that cannot be created. */
    snprintf(file, sizeof file, "%s/plain-file", tmpdir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(config, sizeof config, "{\"root\": \"%s/mail\"}", file);
    assert_config_error(config, "root", "Not a directory");
    assert_non_null(strstr(mock_init_error_text(), file));
    /* A journal directory that cannot be created. */
    snprintf(
        config, sizeof config,
        "{\"root\": \"%s/ok\", \"journal\": true, \"journal_dir\": \"%s/j\"}",
        tmpdir, file);
    assert_config_error(config, "journal_dir", "Not a directory");
    /* ... is fine under --check-config, which creates nothing. */
    mock_reset();
    void *sf = create(config, 1);
    assert_non_null(sf);
    destroy(sf);
}

/* The one message file under maildir/new, its envelope parsed. */
static json_t *
stored_in(const char *maildir)
{
    char name[256], env_name[300];
    assert_int_equal(count_entries(path_of(maildir, "new"), name, sizeof name),
                     1);
    assert_int_equal(
        count_entries(path_of(maildir, "envelope"), env_name, sizeof env_name),
        1);
    json_t *env = json_load_file(
        path_of(path_of(maildir, "envelope"), env_name), 0, NULL);
    assert_non_null(env);
    return env;
}

/* A quarantined message goes to the .Quarantine folder of the maildir
 * (Maildir++), with its reason in the envelope; others stay in new/. */
static void
test_quarantine_folder(void **state)
{
    (void)state;
    size_t len;
    unsigned char *msg = make_message(&len);

    mock_set_message(msg, len);
    mock_add_rcpt("bob@example.com");
    void *sf = create_root("");
    mock_set_quarantine("virus found");
    assert_stored(store(sf));
    assert_int_equal(count_entries(path_of(root, "new"), NULL, 0), 0);
    char *folder = path_of(root, ".Quarantine");
    assert_true(is_dir_0700(folder));
    json_t *env = stored_in(folder);
    assert_string_equal(json_string_value(json_object_get(env, "quarantine")),
                        "virus found");
    json_decref(env);
    assert_true(mock_log_find(POSTERN_LOG_INFO, "quarantine=yes") >= 0);

    mock_set_quarantine(NULL);
    assert_stored_nth(store(sf), 2);
    env = stored_in(root);
    assert_true(json_is_null(json_object_get(env, "quarantine")));
    json_decref(env);
    destroy(sf);

    /* per recipient: the folder inside each recipient's maildir. */
    sf = create_root(", \"per_recipient\": true, \"quarantine\": \"Held\"");
    mock_set_quarantine("spam");
    assert_stored_nth(store(sf), 3);
    env = stored_in(path_of(path_of(root, "bob@example.com"), ".Held"));
    json_decref(env);
    destroy(sf);
    free(msg);
}

/* An absolute path: a separate root, laid out like root. */
static void
test_quarantine_root(void **state)
{
    (void)state;
    size_t len;
    unsigned char *msg = make_message(&len);
    char extra[300], qroot[200];

    mock_set_message(msg, len);
    mock_add_rcpt("bob@example.com");
    snprintf(qroot, sizeof qroot, "%s/held/mail", tmpdir);
    snprintf(extra, sizeof extra, ", \"quarantine\": \"%s\"", qroot);
    void *sf = create_root(extra);
    assert_true(is_dir_0700(path_of(qroot, "new")));
    mock_set_quarantine("spam");
    assert_stored(store(sf));
    json_decref(stored_in(qroot));
    assert_int_equal(count_entries(path_of(root, "new"), NULL, 0), 0);
    destroy(sf);

    snprintf(extra, sizeof extra,
             ", \"per_recipient\": true, \"quarantine\": \"%s/pr\"", qroot);
    sf = create_root(extra);
    assert_stored_nth(store(sf), 2);
    json_decref(stored_in(path_of(path_of(qroot, "pr"), "bob@example.com")));
    destroy(sf);
    free(msg);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_descriptor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_creates_maildir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stores_exact_bytes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_envelope, setup, teardown),
        cmocka_unit_test_setup_teardown(test_envelope_bytes_as_jansson, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_per_recipient, setup, teardown),
        cmocka_unit_test_setup_teardown(test_per_recipient_failure, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_per_recipient_rename_fails, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_per_recipient_new_not_a_directory,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_unwritable_maildir, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reader_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_orphaned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_answered_without_loop_call,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_written_then_journaled, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_written_then_committed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fsync_off_warns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_old_tmp_files_removed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quarantine_folder, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_quarantine_root, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
