/*
 * smtp_data.h - the DATA receiver: a pure, incremental state machine that
 * turns the dot-stuffed DATA stream into message bytes.
 *
 * Only <CRLF>.<CRLF> ends the data (the CRLF that starts it may be the one
 * that ended the DATA command line). A bare CR or LF is never a line end for
 * the end-of-data search (SMTP smuggling); by policy it is either flagged
 * (the message is then refused after the data) or normalised to CRLF in the
 * output. Leading dots are removed from lines that start with one. Bytes
 * over the size limit are counted but not emitted. No I/O, no allocation:
 * output goes to the sink in runs that point into the input where possible.
 *
 * BDAT content (RFC 3030) goes through the same receiver in raw mode: no
 * dot-stuffing and no terminator (the caller knows where chunks end), but
 * the same size, header size and line-ending checks, so both ways of
 * sending a message are held to one policy.
 */
#ifndef POSTERN_SMTP_DATA_H
#define POSTERN_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum smtp_data_policy {
    SMTP_DATA_STRICT,   /* bare CR/LF: flag, keep going, refuse at end */
    SMTP_DATA_NORMALISE /* bare CR/LF: write CRLF instead */
} smtp_data_policy;

/* Receives message bytes. Returns 0, or -1 to flag a write error (the
 * receiver then stops calling it but still finds the end of the data). */
typedef int (*smtp_data_sink)(void *arg, const char *buf, size_t len);

/* Most input bytes one feed may hold back and emit with the next (".\r"
 * at the start of a line): a caller bounding the output must allow them. */
#define SMTP_DATA_MAX_HELD 2

struct smtp_data_rx {
    /* settings */
    smtp_data_policy policy;
    uint64_t max_size;        /* message bytes allowed (after unstuffing) */
    uint64_t max_header_size; /* bytes before the first empty line */
    smtp_data_sink sink;
    void *sink_arg;
    /* results, read by the caller when smtp_data_feed() returns DONE */
    uint64_t size;       /* message bytes seen (emitted or not) */
    bool too_big;        /* size went over max_size */
    bool header_too_big; /* header section went over max_header_size */
    bool bare_line_end;  /* a bare CR or LF was seen (STRICT policy) */
    bool sink_failed;    /* the sink returned -1 */
    /* private state */
    bool raw; /* BDAT: no dot-stuffing, no terminator */
    int state;
    bool in_header;
    uint64_t header_size;
};

typedef enum smtp_data_status {
    SMTP_DATA_NEED_MORE, /* all input consumed, the end not yet seen */
    SMTP_DATA_DONE       /* end seen; bytes after it belong to commands */
} smtp_data_status;

void smtp_data_init(struct smtp_data_rx *rx, smtp_data_policy policy,
                    uint64_t max_size, uint64_t max_header_size,
                    smtp_data_sink sink, void *sink_arg);

/* The same for BDAT content: raw mode (see above). */
void smtp_data_init_raw(struct smtp_data_rx *rx, smtp_data_policy policy,
                        uint64_t max_size, uint64_t max_header_size,
                        smtp_data_sink sink, void *sink_arg);

/* Raw mode: the last chunk is over. A CR still held at the very end is a
 * bare line end (flagged, or normalised to CRLF). */
void smtp_data_end_raw(struct smtp_data_rx *rx);

/*
 * Feed input. *consumed is set to the bytes used: all of len for NEED_MORE,
 * up to and including the final <CRLF>.<CRLF> for DONE. Raw mode consumes
 * all of it and never returns DONE. The receiver keeps
 * the partial state of a terminator split across calls, so the caller may
 * feed any split of the stream, down to one byte at a time, with the same
 * output.
 */
smtp_data_status smtp_data_feed(struct smtp_data_rx *rx, const char *in,
                                size_t len, size_t *consumed);

#endif
