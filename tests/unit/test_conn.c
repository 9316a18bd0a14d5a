/*
 * test_conn.c - core/conn.c, the transport of one connection, driven on a
 * socketpair with a real libev loop: an idle connection holds no buffer,
 * one is lent for each read and kept only while bytes stay unconsumed (or
 * while the owner keeps it for message data), output buffers go once sent
 * and move to the connection's own when the peer does not read, and a
 * full input buffer still stops reading (the bound a waiting session
 * relies on).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#include "conn.h"

#define IN_CAP 4096

/* What the owner does with the bytes of a read. */
enum consume { CONSUME_ALL, CONSUME_LINES, CONSUME_NONE };

struct owner {
    enum consume consume;
    unsigned inputs, drained, errors;
    bool saw_buffer; /* c->in was set inside on_input */
    char seen[8192]; /* every byte the owner consumed, in order */
    size_t seen_len;
};

static struct ev_loop *loop;

static void
on_input(struct conn *c, void *arg)
{
    struct owner *o = arg;
    size_t avail = c->in_end - c->in_start, take = 0;

    o->inputs++;
    o->saw_buffer = c->in != NULL;
    if (o->consume == CONSUME_ALL) {
        take = avail;
    } else if (o->consume == CONSUME_LINES) {
        /* up to the last LF: a partial line stays for the next read */
        for (size_t i = avail; i > 0; i--)
            if (c->in[c->in_start + i - 1] == '\n') {
                take = i;
                break;
            }
    }
    assert_true(o->seen_len + take <= sizeof(o->seen));
    memcpy(o->seen + o->seen_len, c->in + c->in_start, take);
    o->seen_len += take;
    conn_consume(c, take);
}

static void
on_drained(struct conn *c, void *arg)
{
    (void)c;
    ((struct owner *)arg)->drained++;
}

static void
on_timeout(struct conn *c, void *arg)
{
    (void)c;
    (void)arg;
    fail_msg("idle timer fired");
}

static void
on_error(struct conn *c, void *arg)
{
    (void)c;
    ((struct owner *)arg)->errors++;
}

static void
on_tls_ready(struct conn *c, void *arg, int ok)
{
    (void)c;
    (void)arg;
    (void)ok;
}

static const struct conn_callbacks callbacks = {
    .on_input = on_input,
    .on_drained = on_drained,
    .on_timeout = on_timeout,
    .on_error = on_error,
    .on_tls_ready = on_tls_ready,
};

struct pair {
    struct conn c;
    struct owner o;
    int peer; /* the client's end */
};

static void
nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    assert_true(fl >= 0);
    assert_int_equal(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
}

static void
pair_open(struct pair *p, enum consume consume)
{
    int sv[2];

    memset(p, 0, sizeof(*p));
    p->o.consume = consume;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    nonblock(sv[0]);
    nonblock(sv[1]);
    p->peer = sv[1];
    assert_int_equal(
        conn_init(&p->c, loop, sv[0], IN_CAP, NULL, 0, &callbacks, &p->o), 0);
    conn_set_reading(&p->c, true);
}

static void
pair_close(struct pair *p)
{
    conn_close(&p->c);
    close(p->peer);
}

static void
send_all(int fd, const char *s, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, s, len, MSG_NOSIGNAL);
        assert_true(n > 0);
        s += n;
        len -= (size_t)n;
    }
}

static void
send_str(int fd, const char *s)
{
    send_all(fd, s, strlen(s));
}

/* Run the loop until nothing is pending (bounded). */
static void
spin(void)
{
    for (int i = 0; i < 20; i++)
        ev_run(loop, EVRUN_NOWAIT);
}

/* --- input --- */

/* A read lends a buffer for the callback; consumed, nothing stays. */
static void
test_input_lent_for_the_callback(void **state)
{
    (void)state;
    struct pair p;

    pair_open(&p, CONSUME_ALL);
    assert_null(p.c.in);
    send_str(p.peer, "EHLO client.example\r\n");
    spin();
    assert_int_equal(p.o.inputs, 1);
    assert_true(p.o.saw_buffer);
    assert_null(p.c.in);
    assert_int_equal(p.c.in_end - p.c.in_start, 0);
    assert_int_equal(p.o.seen_len, 21);
    assert_memory_equal(p.o.seen, "EHLO client.example\r\n", 21);
    pair_close(&p);
}

/* A partial line stays in a buffer of the connection's own until the rest
 * arrives; then the buffer goes. Bytes come out in order, none lost. */
static void
test_partial_line_kept_until_complete(void **state)
{
    (void)state;
    struct pair a, b;

    pair_open(&a, CONSUME_LINES);
    pair_open(&b, CONSUME_LINES);
    send_str(a.peer, "NOOP\r\nMAIL FROM:<a@exa");
    spin();
    assert_non_null(a.c.in);
    assert_int_equal(a.c.in_end - a.c.in_start, 16);
    assert_memory_equal(a.c.in + a.c.in_start, "MAIL FROM:<a@exa", 16);

    /* Another connection's read in between (same shared buffer) does not
     * touch what a keeps. */
    send_str(b.peer, "RSET\r\n");
    spin();
    assert_null(b.c.in);
    assert_memory_equal(a.c.in + a.c.in_start, "MAIL FROM:<a@exa", 16);

    send_str(a.peer, "mple.org>\r\n");
    spin();
    assert_null(a.c.in); /* complete, consumed: given back */
    assert_int_equal(a.o.seen_len, 6 + 27);
    assert_memory_equal(a.o.seen, "NOOP\r\nMAIL FROM:<a@example.org>\r\n", 33);
    assert_int_equal(b.o.seen_len, 6);
    pair_close(&a);
    pair_close(&b);
}

/* A buffer the owner keeps (message data) stays when empty and goes when
 * it is no longer kept. */
static void
test_kept_input_buffer(void **state)
{
    (void)state;
    struct pair p;

    pair_open(&p, CONSUME_ALL);
    conn_keep_input(&p.c, true);
    send_str(p.peer, "Subject: x\r\n\r\nbody\r\n");
    spin();
    assert_int_equal(p.o.inputs, 1);
    assert_non_null(p.c.in);
    char *kept = p.c.in;
    send_str(p.peer, "more\r\n");
    spin();
    assert_ptr_equal(p.c.in, kept); /* no new allocation per read */
    conn_trim(&p.c);
    assert_ptr_equal(p.c.in, kept); /* kept: trim leaves it */
    conn_keep_input(&p.c, false);
    assert_ptr_equal(p.c.in, kept); /* a line may still point into it */
    conn_trim(&p.c);
    assert_null(p.c.in);
    assert_int_equal(p.o.seen_len, 20 + 6);
    pair_close(&p);
}

/* An owner that does not consume (a session waiting for a hook) holds at
 * most one buffer: reading stops when it is full and goes on after the
 * owner consumed and asked for more. */
static void
test_full_buffer_stops_reading(void **state)
{
    (void)state;
    struct pair p;
    char chunk[1024];

    pair_open(&p, CONSUME_NONE);
    memset(chunk, 'x', sizeof(chunk));
    for (int i = 0; i < 6; i++)
        send_all(p.peer, chunk, sizeof(chunk));
    spin();
    assert_non_null(p.c.in);
    assert_int_equal(p.c.in_end - p.c.in_start, IN_CAP);
    assert_false(ev_is_active(&p.c.rw));

    p.o.consume = CONSUME_ALL;
    conn_consume(&p.c, IN_CAP);
    conn_set_reading(&p.c, true);
    spin();
    assert_int_equal(p.o.seen_len, 6 * 1024 - IN_CAP);
    conn_trim(&p.c);
    assert_null(p.c.in);
    pair_close(&p);
}

/* STARTTLS discards buffered plaintext: nothing survives, no buffer
 * stays (conn_discard_input inside the callback). */
static void
test_discard_input_frees(void **state)
{
    (void)state;
    struct pair p;

    pair_open(&p, CONSUME_NONE);
    send_str(p.peer, "STARTTLS\r\nMAIL FROM:<smuggled@example.org>\r\n");
    spin();
    assert_non_null(p.c.in);
    conn_discard_input(&p.c);
    conn_trim(&p.c);
    assert_null(p.c.in);
    pair_close(&p);
}

/* The peer closes: the owner hears of it, no buffer stays. */
static void
test_eof_leaves_no_buffer(void **state)
{
    (void)state;
    struct pair p;

    pair_open(&p, CONSUME_ALL);
    shutdown(p.peer, SHUT_WR);
    spin();
    assert_int_equal(p.o.errors, 1);
    assert_true(p.c.eof);
    assert_null(p.c.in);
    pair_close(&p);
}

/* --- output --- */

static size_t
drain_peer(int fd, char *buf, size_t cap)
{
    size_t got = 0;
    for (;;) {
        ssize_t n = recv(fd, buf + got, cap - got, 0);
        if (n <= 0)
            return got;
        got += (size_t)n;
        if (got == cap)
            return got;
    }
}

/* Replies are queued, sent in one flush, and the buffer goes. */
static void
test_output_released_once_sent(void **state)
{
    (void)state;
    struct pair p;
    char got[64];

    pair_open(&p, CONSUME_ALL);
    assert_null(p.c.out);
    assert_int_equal(conn_write(&p.c, "250-a\r\n", 7), 0);
    assert_int_equal(conn_write(&p.c, "250 b\r\n", 7), 0);
    assert_non_null(p.c.out);
    assert_int_equal(conn_pending_output(&p.c), 14);
    assert_int_equal(conn_flush(&p.c), 0);
    assert_null(p.c.out);
    assert_int_equal(conn_pending_output(&p.c), 0);
    assert_int_equal(drain_peer(p.peer, got, sizeof(got)), 14);
    assert_memory_equal(got, "250-a\r\n250 b\r\n", 14);
    pair_close(&p);
}

/* A peer that does not read: the output waits in a buffer of the
 * connection's own, others still write and flush, and once the peer
 * reads everything arrives in order and the buffer goes. */
static void
test_stuck_output_moves_to_own_buffer(void **state)
{
    (void)state;
    struct pair slow, fast;
    static char big[256 * 1024], got[256 * 1024 + 16];
    int small = 4096;

    pair_open(&slow, CONSUME_ALL);
    pair_open(&fast, CONSUME_ALL);
    setsockopt(slow.c.fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    setsockopt(slow.peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)('a' + i % 26);

    /* Queued in steps, as a session queues replies; the socket fills. */
    for (size_t off = 0; off < sizeof(big); off += 8192)
        assert_int_equal(conn_write(&slow.c, big + off, 8192), 0);
    assert_int_equal(conn_flush(&slow.c), 0);
    assert_true(conn_pending_output(&slow.c) > 0);
    assert_true(ev_is_active(&slow.c.ww));

    /* The other connection writes meanwhile into another buffer. */
    assert_int_equal(conn_write(&fast.c, "220 hi\r\n", 8), 0);
    assert_ptr_not_equal(fast.c.out, slow.c.out);
    assert_int_equal(conn_flush(&fast.c), 0);
    assert_null(fast.c.out);
    assert_int_equal(drain_peer(fast.peer, got, sizeof(got)), 8);

    /* The slow peer reads: everything arrives, the buffer goes. */
    size_t total = 0;
    for (int i = 0; i < 10000 && total < sizeof(big); i++) {
        total += drain_peer(slow.peer, got + total, sizeof(got) - total);
        ev_run(loop, EVRUN_NOWAIT);
    }
    assert_int_equal(total, sizeof(big));
    assert_memory_equal(got, big, sizeof(big));
    spin();
    assert_int_equal(slow.o.drained, 1);
    assert_null(slow.c.out);
    pair_close(&slow);
    pair_close(&fast);
}

/* Output queued but not yet flushed when another connection writes: both
 * arrive intact. */
static void
test_two_writers_before_flush(void **state)
{
    (void)state;
    struct pair a, b;
    char got[64];

    pair_open(&a, CONSUME_ALL);
    pair_open(&b, CONSUME_ALL);
    assert_int_equal(conn_write(&a.c, "250 a\r\n", 7), 0);
    assert_int_equal(conn_write(&b.c, "250 b\r\n", 7), 0);
    assert_int_equal(conn_write(&a.c, "250 c\r\n", 7), 0);
    assert_int_equal(conn_flush(&b.c), 0);
    assert_int_equal(conn_flush(&a.c), 0);
    assert_null(a.c.out);
    assert_null(b.c.out);
    assert_int_equal(drain_peer(a.peer, got, sizeof(got)), 14);
    assert_memory_equal(got, "250 a\r\n250 c\r\n", 14);
    assert_int_equal(drain_peer(b.peer, got, sizeof(got)), 7);
    assert_memory_equal(got, "250 b\r\n", 7);
    pair_close(&a);
    pair_close(&b);
}

static int
group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    loop = ev_loop_new(EVFLAG_AUTO);
    return loop ? 0 : -1;
}

static int
group_teardown(void **state)
{
    (void)state;
    ev_loop_destroy(loop);
    return 0;
}

int
main(void)
{
    static const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_input_lent_for_the_callback),
        cmocka_unit_test(test_partial_line_kept_until_complete),
        cmocka_unit_test(test_kept_input_buffer),
        cmocka_unit_test(test_full_buffer_stops_reading),
        cmocka_unit_test(test_discard_input_frees),
        cmocka_unit_test(test_eof_leaves_no_buffer),
        cmocka_unit_test(test_output_released_once_sent),
        cmocka_unit_test(test_stuck_output_moves_to_own_buffer),
        cmocka_unit_test(test_two_writers_before_flush),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
