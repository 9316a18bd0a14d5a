/*
 * test_spool.c - the spool file (core/spool.c) and the message as modules
 * read it (core/message.c): added headers, the Received header and the
 * spooled body seen through postern_message_read().
 *
 * Spool contents are checked against a deterministic pattern written in
 * many chunk sizes around the spool's 64 KiB blocks, inline (no pool) and
 * on pool threads with the room/wake back-pressure. Failures are provoked with
 * /dev/full under the spool's descriptor. The reader is checked in small and
 * large reads, after its transaction is gone, and from a pool thread.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdbool.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "postern/postern.h"

#include "config.h"
#include "hook.h"
#include "log.h"
#include "message.h"
#include "pool.h"
#include "services.h"
#include "smtp_session.h"
#include "spool.h"

static char tmpdir[64];

/* Byte i of the test pattern: not periodic at any buffer size used. */
static char
pattern_byte(uint64_t i)
{
    uint64_t x = i * 0x9E3779B97F4A7C15ULL;
    return (char)((x >> 29) ^ (i >> 11));
}

static void
fill_pattern(char *buf, uint64_t from, size_t len)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = pattern_byte(from + i);
}

/* The spool (file, then the block in memory) holds exactly the pattern's
 * first len bytes. */
static void
assert_spool_pattern(struct spool *sp, uint64_t len)
{
    char buf[8192];
    uint64_t pos = 0;

    assert_int_equal(spool_size(sp), len);
    while (pos < len) {
        ssize_t n = spool_pread(sp, buf, sizeof(buf), pos);
        assert_true(n > 0);
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != pattern_byte(pos + (uint64_t)i))
                fail_msg("spool byte %llu differs",
                         (unsigned long long)(pos + (uint64_t)i));
        pos += (uint64_t)n;
    }
    assert_int_equal(spool_pread(sp, buf, sizeof(buf), len), 0);
}

static size_t
dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = 0;

    assert_non_null(d);
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

/* --- spool_prepare_dir --- */

static void
test_prepare_dir_nested(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct stat st;

    snprintf(path, sizeof(path), "%s/a/b/c", tmpdir);
    assert_int_equal(spool_prepare_dir(path), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 0777 & ~0700, 0); /* private */
    /* Existing: fine, again and with a trailing slash. */
    assert_int_equal(spool_prepare_dir(path), 0);
    snprintf(path, sizeof(path), "%s/a/b/c/", tmpdir);
    assert_int_equal(spool_prepare_dir(path), 0);
    snprintf(path, sizeof(path), "%s/a/b/c", tmpdir);
    assert_int_equal(rmdir(path), 0);
    snprintf(path, sizeof(path), "%s/a/b", tmpdir);
    assert_int_equal(rmdir(path), 0);
    snprintf(path, sizeof(path), "%s/a", tmpdir);
    assert_int_equal(rmdir(path), 0);
}

static void
test_prepare_dir_errors(void **state)
{
    (void)state;
    char file[PATH_MAX], below[PATH_MAX + 8];

    errno = 0;
    assert_int_equal(spool_prepare_dir(""), -1);
    assert_int_not_equal(errno, 0);

    /* A regular file in the way. */
    snprintf(file, sizeof(file), "%s/plain", tmpdir);
    int fd = open(file, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    close(fd);
    snprintf(below, sizeof(below), "%s/x", file);
    errno = 0;
    int rc_below = spool_prepare_dir(below);
    int errno_below = errno;
    int rc_file = spool_prepare_dir(file);
    unlink(file);
    assert_int_equal(rc_below, -1);
    assert_int_equal(errno_below, ENOTDIR);
    if (rc_file != -1)
        fail_msg("spool_prepare_dir(\"%s\") succeeded on a regular file "
                 "(mkdir -p fails there)",
                 file);

    /* Longer than any path. */
    char *huge = malloc(PATH_MAX + 16);
    assert_non_null(huge);
    memset(huge, 'd', PATH_MAX + 15);
    huge[0] = '/';
    huge[PATH_MAX + 15] = '\0';
    assert_int_equal(spool_prepare_dir(huge), -1);
    free(huge);
}

/* --- spool files --- */

/*
 * The spool's callers write at most spool_room() bytes and wait for the
 * wake callback when there is none. Without a pool (most tests here) the
 * work runs inline and there is always room; with one (the async tests)
 * the helpers below run the loop until the spool wakes them.
 */
static struct ev_loop *test_loop;

static void
on_wake(void *arg)
{
    *(bool *)arg = true;
}

static void
run_until(bool *flag)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!*flag) {
        assert_non_null(test_loop);
        ev_run(test_loop, EVRUN_NOWAIT);
        usleep(200);
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec > 10)
            fail_msg("the spool never woke its caller");
    }
}

static void
create_wait(struct spool *sp)
{
    bool woken = false;
    if (spool_create(sp, on_wake, &woken) == 0)
        run_until(&woken);
}

/* Write len bytes; -1 as soon as a write fails. */
static int
write_all(struct spool *sp, const char *buf, size_t len)
{
    bool woken = false;
    spool_on_wake(sp, on_wake, &woken);
    while (len > 0) {
        size_t n = spool_room(sp);
        if (n == 0) {
            woken = false;
            run_until(&woken);
            continue;
        }
        if (n > len)
            n = len;
        if (spool_write(sp, buf, n) < 0)
            return -1;
        buf += n;
        len -= n;
    }
    spool_on_wake(sp, NULL, NULL);
    return 0;
}

/* Finish; 0 or -1 as spool_error() says. */
static int
finish_wait(struct spool *sp)
{
    bool woken = false;
    if (spool_finish(sp, on_wake, &woken) == 0)
        run_until(&woken);
    spool_on_wake(sp, NULL, NULL);
    return spool_error(sp) ? -1 : 0;
}

static void
test_open_missing_dir(void **state)
{
    (void)state;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/does/not/exist", tmpdir);
    assert_int_equal(spool_check_dir(path), -1);
    /* Opening does no I/O; creating the file fails and says why. */
    struct spool *sp = spool_open(path);
    assert_non_null(sp);
    assert_int_equal(spool_create(sp, NULL, NULL), 1);
    assert_int_equal(spool_error(sp), ENOENT);
    assert_int_equal(spool_write(sp, "x", 1), -1);
    spool_free(sp);
    spool_free(NULL);
    assert_int_equal(spool_check_dir(tmpdir), 0);
    assert_int_equal(dir_entries(tmpdir), 0);
}

/* The file has no name: nothing in the directory, no link to it. */
static void
test_file_is_anonymous(void **state)
{
    (void)state;
    struct stat st;
    struct spool *sp = spool_open(tmpdir);

    assert_non_null(sp);
    assert_int_equal(spool_fd(sp), -1); /* not before spool_create() */
    create_wait(sp);
    assert_true(spool_fd(sp) >= 0);
    char *big = calloc(1, 200000); /* more than a block: it is written */
    assert_non_null(big);
    assert_int_equal(write_all(sp, big, 200000), 0);
    free(big);
    assert_int_equal(finish_wait(sp), 0);
    assert_int_equal(dir_entries(tmpdir), 0);
    assert_int_equal(fstat(spool_fd(sp), &st), 0);
    assert_int_equal(st.st_nlink, 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 077, 0);
    /* The descriptor does not leak into programs the daemon may run. */
    assert_true(fcntl(spool_fd(sp), F_GETFD) & FD_CLOEXEC);
    spool_free(sp);
    assert_int_equal(dir_entries(tmpdir), 0);
}

static void
test_write_finish_size(void **state)
{
    (void)state;
    struct spool *sp = spool_open(tmpdir);
    char buf[64];

    assert_non_null(sp);
    assert_int_equal(spool_size(sp), 0);
    assert_int_equal(spool_error(sp), 0);
    assert_int_equal(finish_wait(sp), 0); /* empty: fine */
    fill_pattern(buf, 0, sizeof(buf));
    assert_int_equal(write_all(sp, buf, 10), 0);
    assert_int_equal(write_all(sp, buf + 10, 0), 0);
    assert_int_equal(write_all(sp, buf + 10, 54), 0);
    assert_int_equal(spool_size(sp), 64);
    assert_int_equal(finish_wait(sp), 0);
    assert_spool_pattern(sp, 64);
    /* Writing after finish appends. */
    fill_pattern(buf, 64, sizeof(buf));
    assert_int_equal(write_all(sp, buf, 64), 0);
    assert_int_equal(finish_wait(sp), 0);
    assert_int_equal(spool_size(sp), 128);
    assert_spool_pattern(sp, 128);
    spool_free(sp);
}

/* Many chunk sizes, around and across the 64 KiB blocks. */
static void
write_chunk_sizes(void)
{
    static const size_t chunks[] = {1,     7,     4096,   65535,  65536,
                                    65537, 70000, 200000, 1 << 20};
    const uint64_t total = 3u << 20;
    char *buf = malloc(1 << 20);

    assert_non_null(buf);
    for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
        struct spool *sp = spool_open(tmpdir);
        uint64_t pos = 0;
        assert_non_null(sp);
        create_wait(sp);
        /* Byte-sized chunks only for the first 256 KiB: it is slow. */
        uint64_t limit = chunks[c] == 1 ? (256u << 10) : total;
        while (pos < limit) {
            size_t n = chunks[c];
            if (n > limit - pos)
                n = (size_t)(limit - pos);
            fill_pattern(buf, pos, n);
            assert_int_equal(write_all(sp, buf, n), 0);
            pos += n;
            assert_int_equal(spool_size(sp), pos);
        }
        assert_int_equal(finish_wait(sp), 0);
        assert_spool_pattern(sp, limit);
        spool_free(sp);
    }
    /* Mixed sizes in one spool. */
    struct spool *sp = spool_open(tmpdir);
    uint64_t pos = 0;
    create_wait(sp);
    for (size_t i = 0; pos < total; i++) {
        size_t n = chunks[(i * 5) % (sizeof(chunks) / sizeof(chunks[0]))];
        if (n > total - pos)
            n = (size_t)(total - pos);
        fill_pattern(buf, pos, n);
        assert_int_equal(write_all(sp, buf, n), 0);
        pos += n;
    }
    assert_int_equal(finish_wait(sp), 0);
    assert_int_equal(spool_size(sp), total);
    assert_spool_pattern(sp, total);
    spool_free(sp);
    free(buf);
}

static void
test_large_writes(void **state)
{
    (void)state;
    write_chunk_sizes();
}

/* Put /dev/full under the spool's descriptor: writes fail with ENOSPC. */
static struct spool *
open_full(void)
{
    struct spool *sp = spool_open(tmpdir);
    assert_non_null(sp);
    create_wait(sp);
    int full = open("/dev/full", O_WRONLY);
    if (full < 0)
        skip();
    assert_true(dup2(full, spool_fd(sp)) >= 0);
    close(full);
    return sp;
}

static void
test_write_errors(void **state)
{
    (void)state;
    char *big = calloc(1, 100000);
    assert_non_null(big);

    /* A write past one block sends the block and fails at once. */
    struct spool *sp = open_full();
    assert_int_equal(write_all(sp, big, 100000), -1);
    assert_int_equal(spool_error(sp), ENOSPC);
    assert_int_equal(spool_write(sp, "x", 1), -1); /* sticky */
    assert_int_equal(finish_wait(sp), -1);
    spool_free(sp);

    /* A message within one block is never written: a full disk does not
     * matter to it, and its bytes are read from memory. */
    sp = open_full();
    assert_int_equal(write_all(sp, "abc", 3), 0);
    assert_int_equal(finish_wait(sp), 0);
    char got[4] = "";
    assert_int_equal(spool_pread(sp, got, sizeof(got), 0), 3);
    assert_memory_equal(got, "abc", 3);
    spool_free(sp);
    spool_spares_free(); /* it was recycled, /dev/full and all */
    free(big);
}

/* --- the same with a pool: writes off the calling thread --- */

static void
pool_up(void)
{
    test_loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(test_loop);
    services_init(test_loop);
    assert_int_equal(pools_start(test_loop, 2, 2, NULL), 0);
}

static void
pool_down(void)
{
    pools_stop(NULL);
    ev_loop_destroy(test_loop);
    services_init(NULL);
    test_loop = NULL;
}

static void
test_async_writes(void **state)
{
    (void)state;
    pool_up();
    write_chunk_sizes();
    /* Room runs out while a block is being written, and comes back. */
    struct spool *sp = spool_open(tmpdir);
    char *buf = calloc(1, 1 << 20);
    assert_non_null(buf);
    create_wait(sp);
    size_t room = spool_room(sp);
    assert_true(room > 0);
    assert_int_equal(spool_write(sp, buf, room), 0);
    assert_int_equal(spool_room(sp), 0); /* both blocks busy or full */
    assert_int_equal(write_all(sp, buf, 1 << 20), 0);
    assert_int_equal(finish_wait(sp), 0);
    assert_int_equal(spool_size(sp), room + (1 << 20));
    spool_free(sp);
    free(buf);
    pool_down();
}

/* A spool let go while its block is being written: the write finishes,
 * nobody is woken, nothing leaks (ASan and valgrind check). */
static void
test_async_free_in_flight(void **state)
{
    (void)state;
    bool woken = false;
    char buf[100];

    pool_up();
    struct spool *sp = spool_open(tmpdir);
    assert_non_null(sp);
    assert_int_equal(spool_create(sp, on_wake, &woken), 0);
    run_until(&woken);
    woken = false;
    memset(buf, 'x', sizeof(buf));
    while (spool_room(sp) > 0) /* until a block is being written */
        assert_int_equal(spool_write(sp, buf,
                                     spool_room(sp) < sizeof(buf)
                                         ? spool_room(sp)
                                         : sizeof(buf)),
                         0);
    assert_int_equal(spool_finish(sp, on_wake, &woken), 0);
    spool_free(sp);   /* before the job is done */
    pools_stop(NULL); /* runs the job and its completion */
    assert_false(woken);
    ev_loop_destroy(test_loop);
    services_init(NULL);
    test_loop = NULL;
}

/* --- the message reader --- */

static struct {
    struct config *cfg;
    struct session *s;
    struct hook_ctx *hctx;
    postern_ctx *ctx; /* its handle, as a module would hold it */
    char *expect;     /* module headers + Received + body */
    size_t expect_len;
} m;

static int
setup_message(void **state)
{
    (void)state;
    memset(&m, 0, sizeof(m));
    m.cfg = config_defaults();
    if (!m.cfg)
        return -1;
    free(m.cfg->hostname);
    m.cfg->hostname = strdup("test.example");
    m.s = calloc(1, sizeof(*m.s));
    m.s->tx = calloc(1, sizeof(*m.s->tx));
    if (!m.s || !m.s->tx)
        return -1;
    m.s->cfg = m.cfg;
    snprintf(m.s->id, sizeof(m.s->id), "1111222233334444");
    snprintf(m.s->client_ip, sizeof(m.s->client_ip), "192.0.2.7");
    m.s->helo = strdup("client.example");
    m.s->esmtp = true;
    snprintf(m.s->tx->id, sizeof(m.s->tx->id), "aaaabbbbccccdddd");
    m.s->tx->mail_from = strdup("a@example.org");
    m.s->tx->rcpts = calloc(1, sizeof(char *));
    m.s->tx->rcpts[0] = strdup("b@example.com");
    m.s->tx->n_rcpts = m.s->tx->cap_rcpts = 1;
    m.hctx = hook_ctx_new(m.s, m.s->id, NULL);
    if (!m.hctx)
        return -1;
    m.ctx = hook_ctx_handle(m.hctx);
    return 0;
}

static int
teardown_message(void **state)
{
    (void)state;
    struct transaction *tx = m.s->tx;
    hook_ctx_release(m.hctx);
    if (tx) {
        spool_free(tx->spool);
        free(tx->headers);
        free(tx->received);
        free(tx->mail_from);
        free(tx->rcpts[0]);
        free(tx->rcpts);
        free(tx);
    }
    free(m.s->helo);
    free(m.s);
    config_free(m.cfg);
    free(m.expect);
    return 0;
}

/* Spool body_len pattern bytes and two module headers; fill m.expect. */
static void
build_message(size_t body_len)
{
    struct transaction *tx = m.s->tx;
    char *body = malloc(body_len + 1);

    assert_non_null(body);
    assert_int_equal(message_add_header(tx, "X-First", "1"), 0);
    assert_int_equal(
        message_add_header(tx, "X-Folded", "one\r\n\ttwo\r\n three"), 0);
    assert_int_equal(message_add_received(m.s), 0);
    tx->spool = spool_open(tmpdir);
    assert_non_null(tx->spool);
    create_wait(tx->spool);
    fill_pattern(body, 0, body_len);
    assert_int_equal(write_all(tx->spool, body, body_len), 0);
    assert_int_equal(finish_wait(tx->spool), 0);
    tx->body_size = spool_size(tx->spool);

    m.expect_len = tx->headers_len + tx->received_len + body_len;
    m.expect = malloc(m.expect_len + 1);
    assert_non_null(m.expect);
    memcpy(m.expect, tx->headers, tx->headers_len);
    memcpy(m.expect + tx->headers_len, tx->received, tx->received_len);
    memcpy(m.expect + tx->headers_len + tx->received_len, body, body_len);
    free(body);
}

/* Read the whole message in reads of len; compare with m.expect. */
static void
read_and_compare(postern_message_reader *r, size_t len)
{
    char *got = malloc(m.expect_len + 1);
    char *buf = malloc(len);
    size_t total = 0;
    ssize_t n;

    assert_non_null(got);
    assert_non_null(buf);
    while ((n = postern_message_read(r, buf, len)) > 0) {
        assert_true((size_t)n <= len);
        assert_true(total + (size_t)n <= m.expect_len);
        memcpy(got + total, buf, (size_t)n);
        total += (size_t)n;
    }
    assert_int_equal(n, 0);
    assert_int_equal(total, m.expect_len);
    assert_memory_equal(got, m.expect, m.expect_len);
    assert_int_equal(postern_message_read(r, buf, len), 0); /* stays at end */
    free(buf);
    free(got);
}

static void
test_headers_and_received(void **state)
{
    (void)state;
    struct transaction *tx = m.s->tx;
    char want[512];

    build_message(10);
    assert_int_equal(tx->headers_len,
                     strlen("X-First: 1\r\nX-Folded: one\r\n\ttwo\r\n "
                            "three\r\n"));
    assert_memory_equal(tx->headers,
                        "X-First: 1\r\nX-Folded: one\r\n\ttwo\r\n three\r\n",
                        tx->headers_len);
    /* RFC 5321 4.4: from, by, with, id, for; then the date. */
    snprintf(want, sizeof(want),
             "Received: from client.example (unknown [192.0.2.7])\r\n"
             "\tby test.example (postern) with ESMTP id aaaabbbbccccdddd\r\n"
             "\tfor <b@example.com>; ");
    assert_true(tx->received_len > strlen(want));
    assert_memory_equal(tx->received, want, strlen(want));
    /* the forward-confirmed client name, when there is one */
    m.s->rdns = strdup("mail.client.example");
    assert_int_equal(message_add_received(m.s), 0);
    free(m.s->rdns);
    m.s->rdns = NULL;
    assert_memory_equal(tx->received,
                        "Received: from client.example (mail.client.example "
                        "[192.0.2.7])\r\n",
                        strlen("Received: from client.example (mail.client."
                               "example [192.0.2.7])\r\n"));
    assert_int_equal(message_add_received(m.s), 0);
    assert_memory_equal(tx->received + tx->received_len - 2, "\r\n", 2);
    assert_int_equal(message_size(tx), m.expect_len);
    assert_int_equal(postern_message_size(m.ctx), m.expect_len);

    /* Bad headers are refused and leave the added headers untouched. */
    size_t before = tx->headers_len;
    assert_int_equal(message_add_header(tx, "Bad:Name", "v"), -1);
    assert_int_equal(message_add_header(tx, "", "v"), -1);
    assert_int_equal(message_add_header(tx, "Sp ace", "v"), -1);
    assert_int_equal(message_add_header(tx, "X-Bare", "a\nb"), -1);
    assert_int_equal(message_add_header(tx, "X-Cr", "a\rb"), -1);
    assert_int_equal(message_add_header(tx, "X-Fold", "a\r\nb"), -1);
    assert_int_equal(message_add_header(tx, "X-End", "a\r\n"), -1);
    assert_int_equal(postern_header_add(m.ctx, "X-Null", NULL), -1);
    assert_int_equal(tx->headers_len, before);

    /* The added headers have a ceiling; a refused one leaves no trace. */
    char *value = malloc(1000);
    memset(value, 'v', 999);
    value[999] = '\0';
    int rc = 0;
    for (int i = 0; i < 200 && rc == 0; i++) {
        before = tx->headers_len;
        rc = postern_header_add(m.ctx, "X-Many", value);
    }
    assert_int_equal(rc, -1);
    assert_int_equal(tx->headers_len, before);
    assert_true(tx->headers_len <= MESSAGE_ADDED_HEADERS_MAX);
    free(value);
}

/* One recipient is named in Received; several are not (RFC 5321 7.2). */
static void
test_received_without_for(void **state)
{
    (void)state;
    struct transaction *tx = m.s->tx;
    char *more[] = {tx->rcpts[0], "c@example.com"};
    char **saved = tx->rcpts;

    tx->rcpts = more;
    tx->n_rcpts = 2;
    assert_int_equal(message_add_received(m.s), 0);
    tx->rcpts = saved;
    tx->n_rcpts = 1;
    assert_null(memmem(tx->received, tx->received_len, "for <", 5));
}

static void
test_reader_chunk_sizes(void **state)
{
    (void)state;
    static const size_t sizes[] = {1, 2, 3, 17, 97, 4096, 65536, 1 << 20};

    build_message(300000);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        postern_message_reader *r = postern_message_open(m.ctx);
        assert_non_null(r);
        read_and_compare(r, sizes[i]);
        postern_message_close(r);
    }
    /* Two readers at once keep their own positions. */
    postern_message_reader *a = postern_message_open(m.ctx);
    postern_message_reader *b = postern_message_open(m.ctx);
    char ca[5], cb[9];
    assert_int_equal(postern_message_read(a, ca, 5), 5);
    assert_int_equal(postern_message_read(b, cb, 9), 9);
    assert_memory_equal(ca, m.expect, 5);
    assert_memory_equal(cb, m.expect, 9);
    assert_int_equal(postern_message_read(a, ca, 5), 5);
    assert_memory_equal(ca, m.expect + 5, 5);
    postern_message_close(a);
    postern_message_close(b);
}

static void
test_reader_empty_body(void **state)
{
    (void)state;
    build_message(0);
    postern_message_reader *r = postern_message_open(m.ctx);
    assert_non_null(r);
    read_and_compare(r, 7);
    postern_message_close(r);
}

/* The reader keeps its own descriptor and headers: it outlives the
 * transaction (a store module may finish on a pool thread). */
static void
test_reader_outlives_transaction(void **state)
{
    (void)state;
    struct transaction *tx = m.s->tx;

    build_message(70000);
    postern_message_reader *r = postern_message_open(m.ctx);
    assert_non_null(r);
    spool_free(tx->spool);
    tx->spool = NULL;
    free(tx->headers);
    tx->headers = NULL;
    tx->headers_len = tx->headers_cap = 0;
    free(tx->received);
    tx->received = NULL;
    tx->received_len = 0;
    assert_null(postern_message_open(m.ctx)); /* no spool: no reader */
    read_and_compare(r, 4000);
    postern_message_close(r);
}

static void
test_reader_errors(void **state)
{
    (void)state;
    char c;

    errno = 0;
    assert_int_equal(postern_message_read(NULL, &c, 1), -1);
    assert_int_equal(errno, EINVAL);
    postern_message_close(NULL);
    assert_null(postern_message_open(m.ctx)); /* no spool yet */

    /* A spool shorter than the size promised: an error, not a hang. */
    build_message(100);
    m.s->tx->body_size = 200;
    postern_message_reader *r = postern_message_open(m.ctx);
    char buf[512];
    ssize_t n;
    size_t total = 0;
    while ((n = postern_message_read(r, buf, sizeof(buf))) > 0)
        total += (size_t)n;
    assert_int_equal(n, -1);
    assert_int_equal(errno, EIO);
    assert_int_equal(total, m.expect_len);
    postern_message_close(r);
}

/* --- the reader on a pool thread --- */

struct pool_read {
    postern_message_reader *r;
    char *got;
    size_t len;
    bool ok, done;
};

static void
pool_read_work(void *arg)
{
    struct pool_read *p = arg;
    char buf[333];
    ssize_t n;

    p->got = malloc(m.expect_len + 1);
    if (!p->got)
        return;
    while ((n = postern_message_read(p->r, buf, sizeof(buf))) > 0 &&
           p->len + (size_t)n <= m.expect_len) {
        memcpy(p->got + p->len, buf, (size_t)n);
        p->len += (size_t)n;
    }
    p->ok = n == 0;
}

static void
pool_read_done(void *arg)
{
    struct pool_read *p = arg;
    postern_message_close(p->r);
    p->done = true;
}

static void
test_reader_on_pool_thread(void **state)
{
    (void)state;
    struct pool_read p = {0};
    struct timespec t0, t;

    pool_up();
    build_message(150000);
    p.r = postern_message_open(m.ctx);
    assert_non_null(p.r);
    assert_int_equal(postern_pool_submit(pool_read_work, pool_read_done, &p),
                     0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        ev_run(test_loop, EVRUN_NOWAIT);
        usleep(500);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while (!p.done && t.tv_sec - t0.tv_sec < 10);
    pool_down();
    assert_true(p.done);
    assert_true(p.ok);
    assert_int_equal(p.len, m.expect_len);
    assert_memory_equal(p.got, m.expect, m.expect_len);
    free(p.got);
}

static int
group_setup(void **state)
{
    (void)state;
    log_set_level(LOG_LEVEL_ERROR);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/postern-spool-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int
group_teardown(void **state)
{
    (void)state;
    return rmdir(tmpdir);
}

#define MESSAGE_TEST(f)                                                        \
    cmocka_unit_test_setup_teardown(f, setup_message, teardown_message)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prepare_dir_nested),
        cmocka_unit_test(test_prepare_dir_errors),
        cmocka_unit_test(test_open_missing_dir),
        cmocka_unit_test(test_file_is_anonymous),
        cmocka_unit_test(test_write_finish_size),
        cmocka_unit_test(test_large_writes),
        cmocka_unit_test(test_write_errors),
        cmocka_unit_test(test_async_writes),
        cmocka_unit_test(test_async_free_in_flight),
        MESSAGE_TEST(test_headers_and_received),
        MESSAGE_TEST(test_received_without_for),
        MESSAGE_TEST(test_reader_chunk_sizes),
        MESSAGE_TEST(test_reader_empty_body),
        MESSAGE_TEST(test_reader_outlives_transaction),
        MESSAGE_TEST(test_reader_errors),
        MESSAGE_TEST(test_reader_on_pool_thread),
    };
    return cmocka_run_group_tests_name("spool", tests, group_setup,
                                       group_teardown);
}
