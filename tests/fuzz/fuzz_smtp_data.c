/*
 * fuzz_smtp_data.c - libFuzzer harness for the DATA receiver.
 *
 * The first two bytes choose the policy, the limits and a split point; the
 * rest is the DATA stream. It is fed whole, in two pieces cut at the split
 * point and (when short) one byte at a time: status, consumed count, output
 * bytes and flags must be identical, and a few invariants of the contract
 * must hold. Any difference aborts.
 *
 *   clang -std=c11 -D_GNU_SOURCE -g -O1 \
 *       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
 *       -Icore core/smtp_data.c tests/fuzz/fuzz_smtp_data.c -o fuzz_smtp_data
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct out {
    char *buf;
    size_t len, cap;
};

static int
fuzz_sink(void *arg, const char *buf, size_t len)
{
    struct out *o = arg;

    /* Normalising at most doubles the input: the buffer is big enough. */
    if (len == 0 || len > o->cap - o->len)
        abort();
    memcpy(o->buf + o->len, buf, len);
    o->len += len;
    return 0;
}

struct run {
    struct out out;
    struct smtp_data_rx rx;
    smtp_data_status status;
    size_t consumed;
};

/* Feed in pieces of at most step bytes, the first piece cut at first. */
static void
fuzz_run(struct run *r, smtp_data_policy policy, uint64_t max_size,
         uint64_t max_header, const char *in, size_t n, size_t first,
         size_t step)
{
    size_t off = 0, piece = first, used;

    r->out.len = 0;
    r->consumed = 0;
    smtp_data_init(&r->rx, policy, max_size, max_header, fuzz_sink, &r->out);
    r->status = SMTP_DATA_NEED_MORE;
    for (;;) {
        if (piece > n - off)
            piece = n - off;
        r->status = smtp_data_feed(&r->rx, in + off, piece, &used);
        if (used > piece)
            abort();
        r->consumed += used;
        if (r->status == SMTP_DATA_DONE)
            break;
        if (used != piece)
            abort();
        off += piece;
        if (off == n)
            break;
        piece = step;
    }
}

static void
fuzz_same(const struct run *a, const struct run *b)
{
    if (a->status != b->status || a->consumed != b->consumed ||
        a->out.len != b->out.len ||
        memcmp(a->out.buf, b->out.buf, a->out.len) != 0 ||
        a->rx.size != b->rx.size || a->rx.header_size != b->rx.header_size ||
        a->rx.too_big != b->rx.too_big ||
        a->rx.header_too_big != b->rx.header_too_big ||
        a->rx.bare_line_end != b->rx.bare_line_end ||
        a->rx.sink_failed != b->rx.sink_failed)
        abort();
}

/* What the contract promises whatever the input. */
static void
fuzz_check(const struct run *r, const char *in, size_t n)
{
    const struct smtp_data_rx *rx = &r->rx;
    uint64_t want_len = rx->size < rx->max_size ? rx->size : rx->max_size;

    if (r->out.len != want_len || rx->too_big != (rx->size > rx->max_size))
        abort();
    if (rx->header_size > rx->size ||
        rx->header_too_big != (rx->header_size > rx->max_header_size))
        abort();
    if (rx->policy == SMTP_DATA_NORMALISE && rx->bare_line_end)
        abort();
    if (r->status == SMTP_DATA_NEED_MORE && r->consumed != n)
        abort();
    if (r->status == SMTP_DATA_DONE) {
        /* ended by ".\r\n" at the start or by "\r\n.\r\n" */
        if (r->consumed < 3 || memcmp(in + r->consumed - 3, ".\r\n", 3) != 0)
            abort();
        if (r->consumed > 3 &&
            (r->consumed < 5 || memcmp(in + r->consumed - 5, "\r\n", 2) != 0))
            abort();
        /* the message is what came before the final ".\r\n" */
        if (rx->size > r->consumed * 2)
            abort();
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    smtp_data_policy policy;
    uint64_t max_size = UINT64_MAX, max_header = UINT64_MAX;
    struct run whole, split, bytes;
    const char *in;
    size_t n, cut;
    char *bufs;

    if (size < 2)
        return 0;
    policy = data[0] & 1 ? SMTP_DATA_NORMALISE : SMTP_DATA_STRICT;
    if (data[0] & 2)
        max_size = data[0] >> 2; /* 0..63: exercises the cut-off */
    if (data[1] & 1)
        max_header = data[1] >> 3;
    in = (const char *)data + 2;
    n = size - 2;
    /* a split point derived from the data */
    cut = n > 0
              ? ((size_t)data[1] * 131u + n * 7u + (uint8_t)in[n / 2]) % (n + 1)
              : 0;

    bufs = malloc(3 * (2 * n + 1));
    if (bufs == NULL)
        return 0;
    whole.out.buf = bufs;
    split.out.buf = bufs + (2 * n + 1);
    bytes.out.buf = bufs + 2 * (2 * n + 1);
    whole.out.cap = split.out.cap = bytes.out.cap = 2 * n + 1;

    fuzz_run(&whole, policy, max_size, max_header, in, n, n, n + 1);
    fuzz_check(&whole, in, n);
    fuzz_run(&split, policy, max_size, max_header, in, n, cut, n + 1);
    fuzz_same(&whole, &split);
    if (n <= 512) {
        fuzz_run(&bytes, policy, max_size, max_header, in, n, 1, 1);
        fuzz_same(&whole, &bytes);
    }
    free(bufs);
    return 0;
}
