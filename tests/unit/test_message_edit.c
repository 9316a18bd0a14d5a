/*
 * test_message_edit.c - structured content and changes through the public
 * calls of postern/message.h, as a module makes them: the header list
 * (the added headers, Received, the client's fields), lookups, inserts,
 * changes and deletes; the body from its first byte and its replacement,
 * streamed, within the size limit, from a pool thread; and what the
 * message reader (postern_message_open) and postern_message_size() give
 * after all that, byte for byte.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdbool.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "postern/postern.h"
#include "postern/message.h"

#include "config.h"
#include "hook.h"
#include "log.h"
#include "message.h"
#include "message_content.h"
#include "pool.h"
#include "services.h"
#include "smtp_session.h"
#include "spool.h"
#include "transaction.h"

static char tmpdir[64];

static struct {
    struct config *cfg;
    struct session *s;
    struct hook_ctx *hctx;
    postern_ctx *ctx;
    char *expect; /* the message as received */
    size_t expect_len;
} m;

static void
hook_done(struct session *s, postern_result r, const struct hook_reply *reply)
{
    (void)s;
    (void)r;
    (void)reply;
}

/* Make the handle one of a call at this hook (no handlers: the chain is
 * over at once, and the handle stays live). */
static void
at_hook(postern_hook hook)
{
    hook_run(m.hctx, hook, hook_done);
    m.ctx = hook_ctx_handle(m.hctx);
}

static int
setup(void **state)
{
    (void)state;
    memset(&m, 0, sizeof(m));
    if (!(m.cfg = config_defaults()))
        return -1;
    free(m.cfg->hostname);
    m.cfg->hostname = strdup("test.example");
    free(m.cfg->spool_dir);
    m.cfg->spool_dir = strdup(tmpdir);
    m.s = calloc(1, sizeof(*m.s));
    if (!m.s || !(m.s->tx = transaction_new()))
        return -1;
    m.s->cfg = m.cfg;
    snprintf(m.s->id, sizeof(m.s->id), "1111222233334444");
    snprintf(m.s->client_ip, sizeof(m.s->client_ip), "192.0.2.7");
    m.s->helo = strdup("client.example");
    m.s->esmtp = true;
    m.s->tx->mail_from = strdup("a@example.org");
    assert_int_equal(transaction_add_rcpt(m.s->tx, "b@example.com", 13), 0);
    if (!(m.hctx = hook_ctx_new(m.s, m.s->id, NULL)))
        return -1;
    at_hook(POSTERN_HOOK_DATA);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    hook_ctx_release(m.hctx);
    transaction_free(m.s->tx);
    free(m.s->helo);
    free(m.s);
    config_free(m.cfg);
    free(m.expect);
    return 0;
}

/* The data is over: a module header, Received, then the client's bytes
 * in the spool; the handle is at the message hook. */
static void
receive(const char *client, size_t len)
{
    struct transaction *tx = m.s->tx;

    assert_int_equal(message_add_header(tx, "X-First", "1"), 0);
    assert_int_equal(message_add_received(m.s), 0);
    assert_non_null(tx->spool = spool_open(tmpdir));
    assert_int_equal(spool_create(tx->spool, NULL, NULL), 1); /* no pool */
    assert_int_equal(spool_write(tx->spool, client, len), 0);
    assert_int_equal(spool_finish(tx->spool, NULL, NULL), 1);
    tx->body_size = spool_size(tx->spool);
    m.expect_len = tx->headers_len + tx->received_len + len;
    assert_non_null(m.expect = malloc(m.expect_len));
    memcpy(m.expect, tx->headers, tx->headers_len);
    memcpy(m.expect + tx->headers_len, tx->received, tx->received_len);
    memcpy(m.expect + tx->headers_len + tx->received_len, client, len);
    at_hook(POSTERN_HOOK_MESSAGE);
}

static void
receive_text(const char *client)
{
    receive(client, strlen(client));
}

/* Everything a reader yields, in reads of odd sizes; *len its size. */
static char *
read_all(postern_message_reader *r, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    ssize_t got;

    assert_non_null(r);
    assert_non_null(buf);
    for (;;) {
        if (cap - n < 1000) {
            assert_non_null(buf = realloc(buf, cap *= 2));
        }
        got = postern_message_read(r, buf + n, 777);
        if (got <= 0)
            break;
        n += (size_t)got;
    }
    assert_int_equal(got, 0);
    postern_message_close(r);
    *len = n;
    return buf;
}

/* The message as stored is exactly want (want_len bytes), and its size
 * says so. */
static void
assert_message(const char *want, size_t want_len)
{
    size_t len;
    char *got = read_all(postern_message_open(m.ctx), &len);
    assert_int_equal(len, want_len);
    assert_memory_equal(got, want, want_len);
    assert_int_equal(postern_message_size(m.ctx), want_len);
    assert_int_equal(message_size(m.s->tx), want_len);
    free(got);
}

static void
assert_body(const char *want, size_t want_len)
{
    size_t len;
    char *got = read_all(postern_body_open(m.ctx), &len);
    assert_int_equal(len, want_len);
    assert_memory_equal(got, want, want_len);
    assert_int_equal(postern_body_size(m.ctx), want_len);
    free(got);
}

/* The message with the added and Received lines, then text. */
static char *
with_own_headers(const char *text, size_t *len)
{
    struct transaction *tx = m.s->tx;
    size_t own = tx->headers_len + tx->received_len;
    char *out = malloc(own + strlen(text));
    assert_non_null(out);
    memcpy(out, m.expect, own);
    memcpy(out + own, text, strlen(text));
    *len = own + strlen(text);
    return out;
}

/* Byte i of a body pattern that no buffer size divides. */
static char
pattern_byte(uint64_t i)
{
    return (char)('a' + (i * 7 + i / 1000) % 26);
}

static void
test_before_the_data_is_over(void **state)
{
    (void)state;
    assert_int_equal(postern_header_count(m.ctx), 0);
    assert_null(postern_header_name(m.ctx, 0));
    assert_null(postern_header_get(m.ctx, "Subject", 0));
    assert_int_equal(postern_header_insert(m.ctx, 0, "X-A", "1"), -1);
    assert_int_equal(postern_header_change(m.ctx, "X-A", 0, NULL), -1);
    assert_null(postern_body_open(m.ctx));
    assert_null(postern_body_replace(m.ctx));
    assert_int_equal(postern_body_size(m.ctx), 0);
    /* and a dead handle */
    assert_int_equal(postern_header_count(NULL), 0);
    assert_null(postern_header_get(NULL, "Subject", 0));
    assert_int_equal(postern_header_insert(NULL, 0, "X-A", "1"), -1);
    assert_null(postern_body_replace(NULL));
    assert_int_equal(postern_body_commit(NULL, NULL), -1);
    postern_body_abort(NULL);
    errno = 0;
    assert_int_equal(postern_body_write(NULL, "x", 1), -1);
    assert_int_equal(errno, EINVAL);
}

static void
test_reading_fields(void **state)
{
    (void)state;
    receive_text("Subject: Hi\r\n there\r\n"
                 "From: a@example.org\r\n"
                 "subject: second\r\n"
                 "\r\n"
                 "body line\r\n");
    /* Nothing parsed until asked. */
    assert_null(m.s->tx->content);
    assert_message(m.expect, m.expect_len);
    assert_null(m.s->tx->content);

    assert_int_equal(postern_header_count(m.ctx), 5);
    assert_string_equal(postern_header_name(m.ctx, 0), "X-First");
    assert_string_equal(postern_header_value(m.ctx, 0), "1");
    assert_string_equal(postern_header_name(m.ctx, 1), "Received");
    assert_true(strncmp(postern_header_value(m.ctx, 1), "from client.example",
                        19) == 0);
    assert_string_equal(postern_header_name(m.ctx, 2), "Subject");
    assert_string_equal(postern_header_raw(m.ctx, 2), " Hi\r\n there");
    assert_string_equal(postern_header_value(m.ctx, 2), "Hi there");
    assert_null(postern_header_name(m.ctx, 5));
    assert_null(postern_header_value(m.ctx, 5));
    assert_null(postern_header_raw(m.ctx, 5));
    assert_string_equal(postern_header_get(m.ctx, "SUBJECT", 0), "Hi there");
    assert_string_equal(postern_header_get(m.ctx, "subject", 1), "second");
    assert_null(postern_header_get(m.ctx, "subject", 2));
    assert_null(postern_header_get(m.ctx, NULL, 0));
    assert_body("body line\r\n", 11);
    /* Parsed, unchanged: read as before, byte for byte. */
    assert_false(m.s->tx->content->changed);
    assert_message(m.expect, m.expect_len);
    /* The store hook reads the same. */
    at_hook(POSTERN_HOOK_STORE);
    assert_string_equal(postern_header_get(m.ctx, "from", 0), "a@example.org");
    assert_body("body line\r\n", 11);
}

/* Rendered from the fields, the message is the one received, whatever
 * the shape of its header section. */
static void
test_render_is_byte_exact(void **state)
{
    (void)state;
    const char *clients[] = {
        "Subject: x\r\n\r\nbody\r\n",
        "Subject: x\r\nthis starts the body\r\nA: 1\r\n",
        "Subject: x\nB: y\n z\n\nbody\n",
        "Subject: x\r\nTo: y\r\n",
        "Subject: x\r\nTo: y",
        "\r\nonly body\r\n",
        "",
        "Subject : obsolete\r\n\tfolded\r\n\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(clients) / sizeof(*clients); i++) {
        teardown(NULL);
        setup(NULL);
        receive_text(clients[i]);
        assert_int_equal(postern_header_count(m.ctx) >= 2, 1);
        m.s->tx->content->changed = true; /* take the rendering path */
        assert_message(m.expect, m.expect_len);
    }
}

static void
test_edits(void **state)
{
    (void)state;
    receive_text("Subject: one\r\n"
                 "To: b@example.com\r\n"
                 "subject: two\r\n"
                 "\r\n"
                 "body\r\n");
    assert_int_equal(postern_header_insert(m.ctx, 0, "X-Top", "t"), 0);
    assert_int_equal(postern_header_insert(m.ctx, 4, "X-Mid", "a\r\n\tb"), 0);
    assert_int_equal(postern_header_insert(m.ctx, 1000, "X-End", "e"), 0);
    assert_int_equal(postern_header_change(m.ctx, "SUBJECT", 1, "2"), 0);
    assert_int_equal(postern_header_change(m.ctx, "to", 0, NULL), 0);
    /* postern_header_add() after the parse: still above Received */
    assert_int_equal(postern_header_add(m.ctx, "X-Added", "a"), 0);
    /* refused */
    assert_int_equal(postern_header_change(m.ctx, "to", 0, NULL), -1);
    assert_int_equal(postern_header_change(m.ctx, "Subject", 2, "x"), -1);
    assert_int_equal(postern_header_change(m.ctx, "Subject", 0, "a\nb"), -1);
    assert_int_equal(postern_header_change(m.ctx, NULL, 0, "x"), -1);
    assert_int_equal(postern_header_insert(m.ctx, 0, "Bad Name", "x"), -1);
    assert_int_equal(postern_header_insert(m.ctx, 0, "X-Bad", "a\r\nb"), -1);
    assert_int_equal(postern_header_insert(m.ctx, 0, NULL, "x"), -1);
    assert_int_equal(postern_header_insert(m.ctx, 0, "X-Null", NULL), -1);

    struct transaction *tx = m.s->tx;
    char *want = malloc(m.expect_len + 200);
    size_t n = 0;
    assert_non_null(want);
    n += (size_t)sprintf(want + n, "X-Top: t\r\n");
    memcpy(want + n, tx->headers, tx->headers_len); /* X-First */
    n += tx->headers_len;
    n += (size_t)sprintf(want + n, "X-Added: a\r\n");
    memcpy(want + n, tx->received, tx->received_len);
    n += tx->received_len;
    n += (size_t)sprintf(want + n, "Subject: one\r\n"
                                   "X-Mid: a\r\n\tb\r\n"
                                   "subject: 2\r\n"
                                   "X-End: e\r\n"
                                   "\r\n"
                                   "body\r\n");
    assert_message(want, n);
    assert_string_equal(postern_header_name(m.ctx, 0), "X-Top");
    assert_string_equal(postern_header_get(m.ctx, "x-mid", 0), "a\tb");
    assert_int_equal(postern_header_count(m.ctx), 8);
    assert_body("body\r\n", 6);
    free(want);

    /* Deleting everything leaves the empty line and the body. */
    while (postern_header_count(m.ctx) > 0)
        assert_int_equal(postern_header_change(
                             m.ctx, postern_header_name(m.ctx, 0), 0, NULL),
                         0);
    assert_message("\r\nbody\r\n", 8);
}

/* Changes stop when the store hook starts: every store module sees one
 * message. */
static void
test_store_hook_changes_nothing(void **state)
{
    (void)state;
    receive_text("Subject: s\r\n\r\nbody\r\n");
    at_hook(POSTERN_HOOK_STORE);
    assert_int_equal(postern_header_insert(m.ctx, 0, "X-A", "1"), -1);
    assert_int_equal(postern_header_change(m.ctx, "Subject", 0, "x"), -1);
    assert_int_equal(postern_header_change(m.ctx, "Subject", 0, NULL), -1);
    assert_null(postern_body_replace(m.ctx));
    assert_int_equal(postern_header_count(m.ctx), 3);
    assert_message(m.expect, m.expect_len);

    /* A writer begun at the message hook cannot commit at store. */
    at_hook(POSTERN_HOOK_MESSAGE);
    postern_body_writer *w = postern_body_replace(m.ctx);
    assert_non_null(w);
    assert_int_equal(postern_body_write(w, "new\r\n", 5), 0);
    at_hook(POSTERN_HOOK_STORE);
    assert_int_equal(postern_body_commit(m.ctx, w), -1);
    assert_message(m.expect, m.expect_len);
}

static void
test_added_bytes_bounded(void **state)
{
    (void)state;
    char value[1000];
    receive_text("Subject: s\r\n\r\nbody\r\n");
    memset(value, 'v', sizeof(value) - 1);
    value[sizeof(value) - 1] = '\0';
    size_t i = 0;
    while (postern_header_insert(m.ctx, 0, "X-Many", value) == 0)
        assert_true(++i < 1000);
    assert_true(i > 10);
    /* changes count too */
    assert_int_equal(postern_header_change(m.ctx, "Subject", 0, value), -1);
    assert_int_equal(postern_header_add(m.ctx, "X-More", value), -1);
    assert_true(message_size(m.s->tx) <=
                m.expect_len + MESSAGE_ADDED_HEADERS_MAX);
    /* deleting is always possible */
    assert_int_equal(postern_header_change(m.ctx, "X-Many", 0, NULL), 0);
}

static void
write_pattern(postern_body_writer *w, uint64_t from, size_t len)
{
    char buf[4099];
    while (len > 0) {
        size_t n = len < sizeof(buf) ? len : sizeof(buf);
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern_byte(from + i);
        assert_int_equal(postern_body_write(w, buf, n), 0);
        from += n;
        len -= n;
    }
}

static char *
pattern(size_t len)
{
    char *p = malloc(len + 1);
    assert_non_null(p);
    for (size_t i = 0; i < len; i++)
        p[i] = pattern_byte(i);
    return p;
}

static void
test_body_replace(void **state)
{
    (void)state;
    const size_t body_len = 3 * SPOOL_BLOCK_SIZE + 12345;
    receive_text("Subject: s\r\n\r\nold body\r\n");
    postern_message_reader *before = postern_message_open(m.ctx);
    assert_non_null(before);

    postern_body_writer *w = postern_body_replace(m.ctx);
    assert_non_null(w);
    write_pattern(w, 0, body_len);
    assert_int_equal(postern_body_write(w, NULL, 0), 0);
    /* not yet */
    assert_body("old body\r\n", 10);
    assert_int_equal(postern_body_commit(m.ctx, w), 0);

    char *body = pattern(body_len);
    assert_body(body, body_len);
    size_t len;
    char *prefix = with_own_headers("Subject: s\r\n\r\n", &len);
    char *want = malloc(len + body_len);
    assert_non_null(want);
    memcpy(want, prefix, len);
    memcpy(want + len, body, body_len);
    assert_message(want, len + body_len);

    /* A second commit replaces the first; an abort changes nothing. */
    w = postern_body_replace(m.ctx);
    assert_int_equal(postern_body_write(w, "second\r\n", 8), 0);
    assert_int_equal(postern_body_commit(m.ctx, w), 0);
    w = postern_body_replace(m.ctx);
    assert_int_equal(postern_body_write(w, "dropped\r\n", 9), 0);
    postern_body_abort(w);
    assert_body("second\r\n", 8);

    /* A reader opened before still reads what it was opened on, after
     * the transaction is gone too. */
    transaction_free(m.s->tx);
    m.s->tx = NULL;
    char *old = read_all(before, &len);
    assert_int_equal(len, m.expect_len);
    assert_memory_equal(old, m.expect, len);
    free(old);
    free(want);
    free(prefix);
    free(body);
}

/* A message with no empty line gets one before a new body. */
static void
test_body_replace_headers_only(void **state)
{
    (void)state;
    receive_text("Subject: s\r\nTo: t");
    assert_body("", 0);
    postern_body_writer *w = postern_body_replace(m.ctx);
    assert_int_equal(postern_body_write(w, "new\r\n", 5), 0);
    assert_int_equal(postern_body_commit(m.ctx, w), 0);
    size_t len;
    char *want = with_own_headers("Subject: s\r\nTo: t\r\n\r\nnew\r\n", &len);
    assert_message(want, len);
    free(want);

    /* And an empty replacement is an empty body. */
    w = postern_body_replace(m.ctx);
    assert_int_equal(postern_body_commit(m.ctx, w), 0);
    want = with_own_headers("Subject: s\r\nTo: t\r\n\r\n", &len);
    assert_message(want, len);
    free(want);
}

/* The session's size limit holds for the message with its new body. */
static void
test_body_replace_size_limit(void **state)
{
    (void)state;
    receive_text("Subject: s\r\n\r\nold\r\n");
    uint64_t headers = m.expect_len - 5; /* with the empty line */
    m.cfg->limits.message_size = headers + 70000;

    postern_body_writer *w = postern_body_replace(m.ctx);
    write_pattern(w, 0, 70000); /* exactly the limit */
    errno = 0;
    assert_int_equal(postern_body_write(w, "x", 1), -1);
    assert_int_equal(errno, EFBIG);
    assert_int_equal(postern_body_write(w, "", 0), -1); /* it stays */
    errno = 0;
    assert_int_equal(postern_body_commit(m.ctx, w), -1);
    assert_int_equal(errno, EFBIG);
    assert_message(m.expect, m.expect_len); /* the old body stays */

    /* At the limit it fits... */
    w = postern_body_replace(m.ctx);
    write_pattern(w, 0, 70000);
    /* ...until the headers grow meanwhile. */
    assert_int_equal(postern_header_insert(m.ctx, 0, "X-Grown", "1"), 0);
    errno = 0;
    assert_int_equal(postern_body_commit(m.ctx, w), -1);
    assert_int_equal(errno, EFBIG);
    assert_body("old\r\n", 5);
    assert_int_equal(postern_header_change(m.ctx, "X-Grown", 0, NULL), 0);
    w = postern_body_replace(m.ctx);
    write_pattern(w, 0, 70000);
    assert_int_equal(postern_body_commit(m.ctx, w), 0);
    assert_int_equal(postern_message_size(m.ctx), m.cfg->limits.message_size);
}

/* --- the writer on a pool thread --- */

static struct ev_loop *test_loop;

struct pool_write {
    postern_body_writer *w;
    size_t len;
    bool ok, committed, done;
};

static void
pool_write_work(void *arg)
{
    struct pool_write *p = arg;
    char buf[10000];
    uint64_t pos = 0;
    p->ok = true;
    while (pos < p->len && p->ok) {
        size_t n = p->len - pos < sizeof(buf) ? p->len - pos : sizeof(buf);
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern_byte(pos + i);
        p->ok = postern_body_write(p->w, buf, n) == 0;
        pos += n;
    }
}

static void
pool_write_done(void *arg)
{
    struct pool_write *p = arg;
    p->committed = postern_body_commit(m.ctx, p->w) == 0;
    p->done = true;
}

static void
test_body_written_on_pool_thread(void **state)
{
    (void)state;
    struct pool_write p = {.len = 300000};
    struct timespec t0, t;

    receive_text("Subject: s\r\n\r\nold\r\n");
    test_loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(test_loop);
    services_init(test_loop);
    assert_int_equal(pool_start(test_loop, 2), 0);
    assert_non_null(p.w = postern_body_replace(m.ctx));
    assert_int_equal(postern_pool_submit(pool_write_work, pool_write_done, &p),
                     0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        ev_run(test_loop, EVRUN_NOWAIT);
        usleep(500);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while (!p.done && t.tv_sec - t0.tv_sec < 10);
    pool_stop();
    ev_loop_destroy(test_loop);
    services_init(NULL);
    assert_true(p.done);
    assert_true(p.ok);
    assert_true(p.committed);
    char *body = pattern(p.len);
    assert_body(body, p.len);
    free(body);
}

/* A header section over HEADER_SECTION_MAX: the fields past the bound
 * count as body; the message is still read as stored. */
static void
test_long_header_section(void **state)
{
    (void)state;
    const char *field = "X-Long: 0123456789012345678901234567890123456789\r\n";
    size_t flen = strlen(field), n = HEADER_SECTION_MAX / flen + 1000;
    char *client = malloc(n * flen + 20);
    assert_non_null(client);
    for (size_t i = 0; i < n; i++)
        memcpy(client + i * flen, field, flen);
    memcpy(client + n * flen, "\r\nbody\r\n", 8);
    receive(client, n * flen + 8);

    size_t count = postern_header_count(m.ctx);
    size_t taken = count - 2; /* X-First and Received */
    assert_true(taken > 1000);
    assert_true(taken * flen <= HEADER_SECTION_MAX);
    assert_true((taken + 1) * flen > HEADER_SECTION_MAX);
    assert_int_equal(postern_body_size(m.ctx), (n - taken) * flen + 8);
    m.s->tx->content->changed = true;
    assert_message(m.expect, m.expect_len);
    free(client);
}

static int
group_setup(void **state)
{
    (void)state;
    log_set_level(LOG_LEVEL_ERROR);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/postern-edit-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int
group_teardown(void **state)
{
    (void)state;
    spool_spares_free();
    return rmdir(tmpdir);
}

#define TEST(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(test_before_the_data_is_over),
        TEST(test_reading_fields),
        TEST(test_render_is_byte_exact),
        TEST(test_edits),
        TEST(test_store_hook_changes_nothing),
        TEST(test_added_bytes_bounded),
        TEST(test_body_replace),
        TEST(test_body_replace_headers_only),
        TEST(test_body_replace_size_limit),
        TEST(test_body_written_on_pool_thread),
        TEST(test_long_header_section),
    };
    return cmocka_run_group_tests_name("message_edit", tests, group_setup,
                                       group_teardown);
}
