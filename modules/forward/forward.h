/*
 * forward.h - what the files of the forward module share: the
 * configuration with its routes (forward_config.c) and the account of a
 * conversation with the next hop that becomes the client's reply
 * (forward_reply.c); the job a worker thread runs (forward_transfer.c) and
 * the threads (forward_workers.c). forward.c has the hooks.
 */
#ifndef POSTERN_FORWARD_H
#define POSTERN_FORWARD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include <curl/curl.h>
#include <postern/postern.h>

/* --- configuration (forward_config.c) ------------------------------------ */

/* One entry of "routes". */
struct fw_route {
    char *key;         /* lowercase: "example.org", ".example.org" or "*" */
    char *url;         /* as configured, for logs */
    char *curl_url;    /* scheme://host:port/<EHLO name>, what libcurl gets */
    char *peer;        /* "host:port", named in replies and logs */
    bool implicit_tls; /* smtps:// */
};

struct fw_config {
    struct fw_route *routes;
    size_t n_routes;
    long use_ssl; /* CURLUSESSL_NONE, _TRY or _ALL, for smtp:// routes */
    bool verify;  /* verify the next hop's certificate ("required") */
    char *ca_file;
    char *user, *password; /* "auth", or NULL */
    long timeout_ms;
    char *helo;
    long concurrency; /* worker threads */
    /* A quarantined message (postern_message_quarantine()): true, refuse
     * it with 451; false (the default), forward it with a header that
     * tells the next hop (FW_QUARANTINE_HEADER). */
    bool quarantine_refuse;
};

/* Added at the message hook to a quarantined message that is forwarded;
 * the next hop holds it (Postfix: header_checks "/^X-Postern-Quarantine:/
 * HOLD"). */
#define FW_QUARANTINE_HEADER "X-Postern-Quarantine"

/* Read the instance's config into cfg (zeroed by the caller). 0, or -1
 * after postern_init_error(); fw_config_free() frees either way. */
int fw_config_parse(postern_module_init *init, struct fw_config *cfg);
void fw_config_free(struct fw_config *cfg);

/* The route of a recipient: its exact domain, else the nearest parent
 * domain given as ".parent", else "*". NULL when none matches. */
const struct fw_route *fw_route_for(const struct fw_config *cfg,
                                    const char *address);

/* --- the next hop's answer (forward_reply.c) ----------------------------- */

/* What the next reply of the next hop answers. */
typedef enum fw_stage {
    FW_STAGE_GREETING,
    FW_STAGE_EHLO, /* EHLO or HELO */
    FW_STAGE_STARTTLS,
    FW_STAGE_AUTH,
    FW_STAGE_MAIL,
    FW_STAGE_RCPT,
    FW_STAGE_DATA,
    FW_STAGE_END_OF_DATA, /* the message and its final dot */
    FW_STAGE_QUIT
} fw_stage;

#define FW_TEXT_MAX 320
#define FW_COMMAND_MAX 160

/* The conversation as libcurl reports it: the commands it sends (its
 * debug callback) and the replies it reads (its header callback). Only
 * the last complete reply is kept, with the command it answered. */
struct fw_transcript {
    fw_stage stage;               /* what the next reply answers */
    char command[FW_COMMAND_MAX]; /* "MAIL FROM:<..>" / "RCPT TO:<..>" */
    bool in_reply;                /* a multi-line reply is being read */
    char partial[FW_TEXT_MAX];
    size_t partial_len;
    /* The last complete reply. */
    int code; /* 0 before any */
    fw_stage code_stage;
    char code_command[FW_COMMAND_MAX];
    char text[FW_TEXT_MAX]; /* "550 5.1.1 <b@x>: User unknown" */
};

void fw_transcript_init(struct fw_transcript *t);
/* A command line libcurl sent (CURLINFO_HEADER_OUT), CRLF included. */
void fw_transcript_command(struct fw_transcript *t, const char *line,
                           size_t len);
/* A reply line libcurl read (its header callback), CRLF included. */
void fw_transcript_reply_line(struct fw_transcript *t, const char *line,
                              size_t len);

/* The client's reply to the end of its data. */
struct fw_outcome {
    postern_result result; /* ACCEPT, REJECT or TEMPFAIL */
    int code;
    char enhanced[16];
    char text[400];
    const char *reason; /* one word for the log: "forwarded", "refused", ... */
};

/*
 * Decide the reply from how the transfer ended. rc is libcurl's result,
 * t the transcript, peer the next hop's "host:port", id the transaction
 * id (named in the 250), read_failed true when the message could not be
 * read from the spool.
 */
void fw_outcome_of(CURLcode rc, const struct fw_transcript *t, const char *peer,
                   const char *id, bool read_failed, struct fw_outcome *out);

/* --- a message to forward (forward.c builds it, a worker runs it) -------- */

/* Everything a worker thread needs, copied on the loop: the worker calls
 * no postern_ function but postern_message_read() and _close(). */
struct fw_job {
    const struct fw_config *cfg;
    postern_ctx *ctx; /* the loop's only */
    const struct fw_route *route;
    char *id;
    char *mail_from;
    struct curl_slist *rcpts;
    size_t n_rcpts;
    unsigned long long size;         /* postern_message_size() */
    postern_message_reader *scanner; /* read once to count the dots */
    postern_message_reader *reader;  /* what libcurl sends */
    atomic_bool abort;               /* the client left, or postern stops */
    /* Written by the worker, read on the loop once it handed the job back. */
    bool started;   /* a worker took it (else dropped before connecting) */
    int scan_errno; /* counting the dots failed */
    bool setup_failed;
    unsigned long long stuffed; /* dots libcurl adds */
    unsigned long long sent;    /* bytes the read callback gave libcurl */
    bool read_failed;
    int read_errno;
    CURLcode rc;
    struct fw_transcript transcript;
    char errbuf[CURL_ERROR_SIZE];
    /* Lists: the workers' queue or done list (under the lock), and the
     * loop's list of the jobs it has not finished. */
    struct fw_job *next;
    struct fw_job *live_prev, *live_next;
};

void fw_job_free(struct fw_job *job);

/* --- the transfer, on a worker thread (forward_transfer.c) --------------- */

/* The sockets of one thread's easy handle, so they can be cut. */
#define FW_MAX_SOCKETS 16
struct fw_sockets {
    int fd[FW_MAX_SOCKETS];
    size_t n;
};

/* Count the dots, then send the message with *easy (kept between jobs for
 * its connections; replaced after a failed transfer). stop is the
 * workers' stop flag. */
void fw_transfer_run(struct fw_job *job, CURL **easy, struct fw_sockets *socks,
                     const atomic_bool *stop);
/* Close the handle's connections at once, without libcurl's QUIT (which
 * waits for a reply, up to 120 s when it closes a cached connection), and
 * free the handle. */
void fw_transfer_drop(CURL *easy, struct fw_sockets *socks);

/* Counts the dots libcurl adds to lines that begin with one, across
 * buffers: state starts at FW_DOTS_START. */
#define FW_DOTS_START 2
unsigned long long fw_count_stuffed_dots(const char *buf, size_t len,
                                         int *state);

/* --- the worker threads (forward_workers.c) ------------------------------ */

typedef void (*fw_done_fn)(struct fw_job *job, void *arg);

struct fw_workers;

/* Start n threads. done runs on the loop for every job handed back. NULL
 * with errno on failure. */
struct fw_workers *fw_workers_start(size_t n, fw_done_fn done, void *arg);
/* Queue a job (loop thread). 0, or -1 (then the job is still the
 * caller's). */
int fw_workers_submit(struct fw_workers *w, struct fw_job *job);
/* Stop: abort the transfers, join the threads, free every job not yet
 * handed back (their contexts are orphaned: postern is stopping). */
void fw_workers_stop(struct fw_workers *w);

#endif
