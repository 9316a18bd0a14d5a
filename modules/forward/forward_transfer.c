/*
 * forward_transfer.c - one message to its next hop, on a worker thread,
 * with a blocking curl_easy_perform(): however long the next hop takes
 * (libcurl 7.88 waits for the reply to the final dot, and to QUIT, without
 * returning), only this thread waits.
 *
 * 1. The message is read once to count the lines that begin with a dot.
 *    libcurl 7.88 stops reading a body once the bytes it has *sent* reach
 *    CURLOPT_INFILESIZE_LARGE, and it counts the dots it adds: with the
 *    plain size it silently drops the last bytes of a message over 64 KiB
 *    that holds such lines. The size it gets is the message's plus those
 *    dots, so it reads to the end.
 * 2. libcurl reads the body from the spool through the read callback
 *    (never the whole message in memory), dot-stuffs it and ends it.
 *
 * Only postern_message_read() and postern_message_close() are called here;
 * the reply, the log and the resume are the loop's (forward.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "forward.h"

#define FW_SCAN_BUFFER (64 * 1024)

/* The transfer's callbacks carry this. */
struct fw_run {
    struct fw_job *job;
    const atomic_bool *stop;
};

static size_t
fw_read(char *buf, size_t size, size_t nitems, void *arg)
{
    struct fw_job *job = ((struct fw_run *)arg)->job;

    for (;;) {
        ssize_t n = postern_message_read(job->reader, buf, size * nitems);
        if (n >= 0) {
            job->sent += (unsigned long long)n;
            return (size_t)n;
        }
        if (errno == EINTR)
            continue;
        job->read_failed = true;
        job->read_errno = errno;
        return CURL_READFUNC_ABORT;
    }
}

/* libcurl rewinds when it must send the message again (a kept-alive
 * connection the next hop had closed). Nothing read yet: nothing to do.
 * A new reader can only be opened on the loop, so past that the transfer
 * fails (451) and the client sends the message again. */
static int
fw_seek(void *arg, curl_off_t offset, int origin)
{
    struct fw_job *job = ((struct fw_run *)arg)->job;

    if (offset == 0 && origin == SEEK_SET && job->sent == 0)
        return CURL_SEEKFUNC_OK;
    return CURL_SEEKFUNC_CANTSEEK;
}

/* Called by libcurl about once a second, and at every step: a non-zero
 * return aborts the transfer, and libcurl, seeing an error, closes the
 * connection without the final dot. */
static int
fw_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
            curl_off_t ulnow)
{
    const struct fw_run *run = arg;

    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    return atomic_load(&run->job->abort) || atomic_load(run->stop);
}

/* Every reply line of the next hop. */
static size_t
fw_header(char *buf, size_t size, size_t nitems, void *arg)
{
    struct fw_job *job = ((struct fw_run *)arg)->job;

    fw_transcript_reply_line(&job->transcript, buf, size * nitems);
    return size * nitems;
}

/* Every command libcurl sends (and, unused, its other chatter). */
static int
fw_debug(CURL *easy, curl_infotype type, char *data, size_t size, void *arg)
{
    struct fw_job *job = ((struct fw_run *)arg)->job;

    (void)easy;
    if (type == CURLINFO_HEADER_OUT)
        fw_transcript_command(&job->transcript, data, size);
    return 0;
}

/* libcurl writes nothing for a mail upload; never let it reach stdout. */
static size_t
fw_discard(char *buf, size_t size, size_t nitems, void *arg)
{
    (void)buf;
    (void)arg;
    return size * nitems;
}

/* Every socket of the handle is known, to be cut by fw_transfer_drop().
 * Both run on the thread that owns the handle (libcurl keeps them with
 * each connection, also for closing it later). */
static curl_socket_t
fw_open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *addr)
{
    struct fw_sockets *socks = arg;
    int fd;

    (void)purpose;
    if (socks->n == FW_MAX_SOCKETS)
        return CURL_SOCKET_BAD; /* cannot happen: CURLOPT_MAXCONNECTS */
    fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
    if (fd >= 0)
        socks->fd[socks->n++] = fd;
    return fd >= 0 ? fd : CURL_SOCKET_BAD;
}

static int
fw_close_socket(void *arg, curl_socket_t fd)
{
    struct fw_sockets *socks = arg;

    for (size_t i = 0; i < socks->n; i++)
        if (socks->fd[i] == fd) {
            socks->fd[i] = socks->fd[--socks->n];
            break;
        }
    return close(fd);
}

void
fw_transfer_drop(CURL *easy, struct fw_sockets *socks)
{
    /* A cut socket makes libcurl's QUIT fail at once. */
    for (size_t i = 0; i < socks->n; i++)
        shutdown(socks->fd[i], SHUT_RDWR);
    curl_easy_cleanup(easy);
}

#define FW_SET(easy, opt, value)                                               \
    do {                                                                       \
        if (curl_easy_setopt((easy), (opt), (value)) != CURLE_OK)              \
            return -1;                                                         \
    } while (0)

static int
fw_easy_setup(CURL *e, struct fw_run *run, struct fw_sockets *socks)
{
    struct fw_job *job = run->job;
    const struct fw_config *cfg = job->cfg;
    long seconds = (cfg->timeout_ms + 999) / 1000;

    FW_SET(e, CURLOPT_URL, job->route->curl_url);
#if LIBCURL_VERSION_NUM >= 0x075500
    FW_SET(e, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
#else
    FW_SET(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_SMTP | CURLPROTO_SMTPS));
#endif
    FW_SET(e, CURLOPT_NOSIGNAL, 1L);
    FW_SET(e, CURLOPT_OPENSOCKETFUNCTION, fw_open_socket);
    FW_SET(e, CURLOPT_OPENSOCKETDATA, socks);
    FW_SET(e, CURLOPT_CLOSESOCKETFUNCTION, fw_close_socket);
    FW_SET(e, CURLOPT_CLOSESOCKETDATA, socks);
    /* Kept connections, and room in socks for those being opened. */
    FW_SET(e, CURLOPT_MAXCONNECTS, (long)(FW_MAX_SOCKETS / 4));
    /* "" sends MAIL FROM:<>, the null sender. */
    FW_SET(e, CURLOPT_MAIL_FROM, job->mail_from);
    FW_SET(e, CURLOPT_MAIL_RCPT, job->rcpts);
    FW_SET(e, CURLOPT_UPLOAD, 1L);
    FW_SET(e, CURLOPT_READFUNCTION, fw_read);
    FW_SET(e, CURLOPT_READDATA, run);
    FW_SET(e, CURLOPT_SEEKFUNCTION, fw_seek);
    FW_SET(e, CURLOPT_SEEKDATA, run);
    /* SIZE= when the next hop offers it; see the top of the file. */
    FW_SET(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)(job->size + job->stuffed));
    FW_SET(e, CURLOPT_USE_SSL, cfg->use_ssl);
    FW_SET(e, CURLOPT_SSL_VERIFYPEER, cfg->verify ? 1L : 0L);
    FW_SET(e, CURLOPT_SSL_VERIFYHOST, cfg->verify ? 2L : 0L);
    if (cfg->ca_file != NULL)
        FW_SET(e, CURLOPT_CAINFO, cfg->ca_file);
    if (cfg->user != NULL) {
        FW_SET(e, CURLOPT_USERNAME, cfg->user);
        FW_SET(e, CURLOPT_PASSWORD, cfg->password);
    }
    FW_SET(e, CURLOPT_TIMEOUT_MS, cfg->timeout_ms);
    /* Also bounds libcurl's blocking waits: for the reply to the final
     * dot, and to QUIT. */
    FW_SET(e, CURLOPT_SERVER_RESPONSE_TIMEOUT, seconds);
    FW_SET(e, CURLOPT_NOPROGRESS, 0L);
    FW_SET(e, CURLOPT_XFERINFOFUNCTION, fw_progress);
    FW_SET(e, CURLOPT_XFERINFODATA, run);
    FW_SET(e, CURLOPT_HEADERFUNCTION, fw_header);
    FW_SET(e, CURLOPT_HEADERDATA, run);
    FW_SET(e, CURLOPT_WRITEFUNCTION, fw_discard);
    FW_SET(e, CURLOPT_WRITEDATA, run);
    /* The debug callback is how the commands are seen; libcurl calls it
     * only in verbose mode. Nothing goes to stderr. */
    FW_SET(e, CURLOPT_DEBUGFUNCTION, fw_debug);
    FW_SET(e, CURLOPT_DEBUGDATA, run);
    FW_SET(e, CURLOPT_VERBOSE, 1L);
    FW_SET(e, CURLOPT_ERRORBUFFER, job->errbuf);
    return 0;
}

/* Count the dots libcurl will add (see the top). */
static void
fw_scan(struct fw_job *job)
{
    char *buf = malloc(FW_SCAN_BUFFER);
    int state = FW_DOTS_START;

    if (buf == NULL) {
        job->scan_errno = ENOMEM;
        return;
    }
    for (;;) {
        ssize_t n = postern_message_read(job->scanner, buf, FW_SCAN_BUFFER);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            job->scan_errno = errno ? errno : EIO;
            break;
        }
        if (n == 0)
            break;
        job->stuffed += fw_count_stuffed_dots(buf, (size_t)n, &state);
    }
    free(buf);
}

void
fw_transfer_run(struct fw_job *job, CURL **easy, struct fw_sockets *socks,
                const atomic_bool *stop)
{
    struct fw_run run = {.job = job, .stop = stop};

    job->started = true;
    fw_scan(job);
    postern_message_close(job->scanner);
    job->scanner = NULL;
    if (job->scan_errno != 0)
        return;
    fw_transcript_init(&job->transcript);
    if (*easy == NULL)
        *easy = curl_easy_init();
    /* A reset keeps the connection cache: a kept-alive connection to the
     * next hop serves the next job of this thread. */
    if (*easy != NULL)
        curl_easy_reset(*easy);
    if (*easy == NULL || fw_easy_setup(*easy, &run, socks) != 0) {
        job->setup_failed = true;
    } else if (fw_progress(&run, 0, 0, 0, 0)) {
        job->rc = CURLE_ABORTED_BY_CALLBACK; /* left while counting */
    } else {
        job->rc = curl_easy_perform(*easy);
    }
    postern_message_close(job->reader);
    job->reader = NULL;
    if (*easy == NULL)
        return;
    /* After a failure (an abort, a timeout while waiting for the reply to
     * the final dot), libcurl may keep a connection whose next reply is
     * still due: never reuse it. */
    if (job->setup_failed || job->rc != CURLE_OK) {
        fw_transfer_drop(*easy, socks);
        *easy = NULL;
        return;
    }
    /* The handle and its connections outlive the job and run: no callback
     * of theirs may stay. */
    curl_easy_reset(*easy);
    curl_easy_setopt(*easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(*easy, CURLOPT_WRITEFUNCTION, fw_discard);
    curl_easy_setopt(*easy, CURLOPT_HEADERFUNCTION, fw_discard);
}

/*
 * The dots libcurl adds: one before each line that begins with a dot,
 * the first line included (libcurl acts as if a CRLF came before the
 * first byte). state: how much of CRLF was just seen (2: all of it).
 */
unsigned long long
fw_count_stuffed_dots(const char *buf, size_t len, int *state)
{
    unsigned long long dots = 0;
    int s = *state;

    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (s == 2 && c == '.') {
            dots++;
            s = 0;
        } else if (c == '\r') {
            s = 1;
        } else if (c == '\n' && s == 1) {
            s = 2;
        } else {
            s = 0;
        }
    }
    *state = s;
    return dots;
}
