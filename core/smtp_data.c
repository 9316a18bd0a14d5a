/*
 * smtp_data.c - the DATA receiver: finds <CRLF>.<CRLF>, removes dot-stuffing
 * and applies the bare CR/LF policy, streaming message bytes to a sink.
 *
 * Verbatim bytes are not copied: the receiver remembers where the current
 * run of unchanged input starts and hands the whole run to the sink in one
 * call when something breaks it (a removed dot, a normalised line end, the
 * end of the input). Bytes whose meaning depends on the next byte (a CR, a
 * dot at the start of a line, ".\r") are held in the state, not in a
 * buffer: they are known by the state alone, so when they come from an
 * earlier call they are re-created from static storage.
 *
 * Rules (the header has the contract):
 * - Only a real CRLF, or the start of the data, begins a line where "."
 *   CRLF ends the data. A line that starts after a bare CR or LF never ends
 *   it, whatever the policy.
 * - A real line that starts with "." followed by anything but CRLF loses
 *   that dot. After a line end normalised by NORMALISE the dot is removed
 *   the same way, except that a dot followed by CR or LF is kept: a lone
 *   "." there is a literal line, not a terminator. STRICT emits a bare CR
 *   or LF unchanged and starts no line with it.
 * - The header section runs up to and including the first empty line of
 *   the message bytes (CRLF CRLF as emitted, or CRLF at the start).
 */
#include "smtp_data.h"

#include <string.h>

enum {
    S_BOL,      /* start of a real line (terminator and unstuffing apply) */
    S_BOL_SOFT, /* start of a line after a normalised bare line end */
    S_TEXT,     /* inside a line with output already on it */
    S_CR,       /* held CR after text */
    S_CR_EMPTY, /* held CR at the start of an empty output line */
    S_DOT,      /* held "." at S_BOL */
    S_DOT_CR,   /* held ".\r" at S_BOL */
    S_SOFT_DOT, /* held "." at S_BOL_SOFT */
    S_DONE      /* the terminator was consumed */
};

/* How many input bytes each state holds back from the sink. */
static size_t
smtp_data_held(int state)
{
    switch (state) {
    case S_CR:
    case S_CR_EMPTY:
    case S_DOT:
    case S_SOFT_DOT:
        return 1;
    case S_DOT_CR:
        return SMTP_DATA_MAX_HELD;
    default:
        return 0;
    }
}

void
smtp_data_init(struct smtp_data_rx *rx, smtp_data_policy policy,
               uint64_t max_size, uint64_t max_header_size, smtp_data_sink sink,
               void *sink_arg)
{
    memset(rx, 0, sizeof(*rx));
    rx->policy = policy;
    rx->max_size = max_size;
    rx->max_header_size = max_header_size;
    rx->sink = sink;
    rx->sink_arg = sink_arg;
    rx->state = S_BOL;
    rx->in_header = true;
}

void
smtp_data_init_raw(struct smtp_data_rx *rx, smtp_data_policy policy,
                   uint64_t max_size, uint64_t max_header_size,
                   smtp_data_sink sink, void *sink_arg)
{
    smtp_data_init(rx, policy, max_size, max_header_size, sink, sink_arg);
    rx->raw = true;
}

static void smtp_data_emit(struct smtp_data_rx *rx, const char *buf,
                           size_t len);

void
smtp_data_end_raw(struct smtp_data_rx *rx)
{
    if (rx->state != S_CR && rx->state != S_CR_EMPTY)
        return;
    if (rx->policy == SMTP_DATA_STRICT) {
        rx->bare_line_end = true;
        smtp_data_emit(rx, "\r", 1);
    } else {
        smtp_data_emit(rx, "\r\n", 2);
        if (rx->state == S_CR_EMPTY)
            rx->in_header = false;
    }
    rx->state = S_TEXT;
}

/* Count message bytes and pass them on while the limits and sink allow. */
static void
smtp_data_emit(struct smtp_data_rx *rx, const char *buf, size_t len)
{
    uint64_t room;

    if (len == 0)
        return;
    if (rx->in_header) {
        rx->header_size += len;
        if (rx->header_size > rx->max_header_size)
            rx->header_too_big = true;
    }
    /* The sink gets exactly the first max_size bytes, however the input
     * was split, so what it holds never depends on read sizes. */
    room = rx->size < rx->max_size ? rx->max_size - rx->size : 0;
    rx->size += len;
    if (rx->size > rx->max_size)
        rx->too_big = true;
    if (len > room)
        len = (size_t)room;
    if (len == 0 || rx->sink_failed || rx->sink == NULL)
        return;
    if (rx->sink(rx->sink_arg, buf, len) != 0)
        rx->sink_failed = true;
}

/*
 * A bare LF at p: STRICT flags it and leaves it in the verbatim run;
 * NORMALISE writes CRLF instead. empty says the output line had nothing on
 * it, so a normalised LF ends an empty line (the end of the header).
 * Returns where the verbatim run now starts; the caller steps over the LF.
 */
static const char *
smtp_data_bare_lf(struct smtp_data_rx *rx, const char *run, const char *p,
                  bool empty)
{
    if (rx->policy == SMTP_DATA_STRICT) {
        rx->bare_line_end = true;
        rx->state = S_TEXT;
        return run;
    }
    smtp_data_emit(rx, run, (size_t)(p - run));
    smtp_data_emit(rx, "\r\n", 2);
    if (empty)
        rx->in_header = false;
    rx->state = S_BOL_SOFT;
    return p + 1;
}

/*
 * Start of the bytes the current state holds back, clamped to this input:
 * held bytes from an earlier call were never part of this call's run.
 */
static const char *
smtp_data_hold_start(const struct smtp_data_rx *rx, const char *in,
                     const char *p)
{
    size_t k = smtp_data_held(rx->state);

    return (size_t)(p - in) >= k ? p - k : in;
}

smtp_data_status
smtp_data_feed(struct smtp_data_rx *rx, const char *in, size_t len,
               size_t *consumed)
{
    const char *p = in, *end = in + len;
    const char *run = in;  /* unflushed verbatim output starts here */
    const char *cr = NULL; /* next CR at or after p, or end; NULL: unknown */
    const char *lf;
    bool empty;
    char c;

    if (rx->state == S_DONE) {
        *consumed = 0;
        return SMTP_DATA_DONE;
    }
    while (p < end) {
        c = *p;
        switch (rx->state) {
        case S_TEXT:
            /* The hot loop: skip to the next CR or LF. The CR position is
             * kept so LF-only input does not rescan to the end each time. */
            if (cr == NULL || cr < p) {
                cr = memchr(p, '\r', (size_t)(end - p));
                if (cr == NULL)
                    cr = end;
            }
            lf = memchr(p, '\n', (size_t)(cr - p));
            if (lf != NULL) {
                run = smtp_data_bare_lf(rx, run, lf, false);
                p = lf + 1;
                break;
            }
            p = cr;
            if (p == end)
                break;
            if (p + 1 < end && p[1] == '\n') {
                p += 2; /* CRLF ending a non-empty line: stays verbatim */
                rx->state = S_BOL;
                break;
            }
            p++;
            rx->state = S_CR;
            break;

        case S_BOL:
        case S_BOL_SOFT:
            if (c == '.' && !rx->raw) {
                rx->state = rx->state == S_BOL ? S_DOT : S_SOFT_DOT;
                p++;
            } else if (c == '\r') {
                rx->state = S_CR_EMPTY;
                p++;
            } else if (c == '\n') {
                run = smtp_data_bare_lf(rx, run, p, true);
                p++;
            } else {
                rx->state = S_TEXT;
            }
            break;

        case S_CR:
        case S_CR_EMPTY:
            empty = rx->state == S_CR_EMPTY;
            if (c == '\n') {
                /* A real CRLF. A CR from an earlier call is re-created;
                 * the LF starts (or continues) the verbatim run. */
                if (p == in)
                    smtp_data_emit(rx, "\r", 1);
                p++;
                if (empty && rx->in_header) {
                    smtp_data_emit(rx, run, (size_t)(p - run));
                    run = p;
                    rx->in_header = false;
                }
                rx->state = S_BOL;
            } else if (rx->policy == SMTP_DATA_STRICT) {
                /* Bare CR kept as it is; c is looked at again as text. */
                rx->bare_line_end = true;
                if (p == in)
                    smtp_data_emit(rx, "\r", 1);
                rx->state = S_TEXT;
            } else {
                smtp_data_emit(rx, run,
                               (size_t)(smtp_data_hold_start(rx, in, p) - run));
                smtp_data_emit(rx, "\r\n", 2);
                if (empty)
                    rx->in_header = false;
                run = p;
                rx->state = S_BOL_SOFT;
            }
            break;

        case S_DOT:
            if (c == '\r') {
                rx->state = S_DOT_CR;
                p++;
                break;
            }
            /* Dot-stuffed line: drop the dot; the output line is still
             * empty, so a bare LF here ends an empty line. */
            smtp_data_emit(rx, run,
                           (size_t)(smtp_data_hold_start(rx, in, p) - run));
            run = p;
            if (c == '\n') {
                run = smtp_data_bare_lf(rx, run, p, true);
                p++;
            } else {
                rx->state = S_TEXT;
            }
            break;

        case S_DOT_CR:
            if (c == '\n') {
                smtp_data_emit(rx, run,
                               (size_t)(smtp_data_hold_start(rx, in, p) - run));
                rx->state = S_DONE;
                *consumed = (size_t)(p + 1 - in);
                return SMTP_DATA_DONE;
            }
            /* "." then a bare CR: the dot goes, the CR is a bare line end
             * on an empty output line; c is looked at again. */
            smtp_data_emit(rx, run,
                           (size_t)(smtp_data_hold_start(rx, in, p) - run));
            run = p;
            if (rx->policy == SMTP_DATA_STRICT) {
                rx->bare_line_end = true;
                smtp_data_emit(rx, "\r", 1);
                rx->state = S_TEXT;
            } else {
                smtp_data_emit(rx, "\r\n", 2);
                rx->in_header = false;
                rx->state = S_BOL_SOFT;
            }
            break;

        case S_SOFT_DOT:
            if (c == '\r' || c == '\n') {
                /* A lone "." after a bare line end is literal text. */
                if (p == in)
                    smtp_data_emit(rx, ".", 1);
            } else {
                smtp_data_emit(rx, run,
                               (size_t)(smtp_data_hold_start(rx, in, p) - run));
                run = p;
            }
            rx->state = S_TEXT;
            break;
        }
    }
    smtp_data_emit(rx, run, (size_t)(smtp_data_hold_start(rx, in, p) - run));
    *consumed = len;
    return SMTP_DATA_NEED_MORE;
}
