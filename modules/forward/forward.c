/*
 * forward.c - relay each accepted message to a next-hop MTA over SMTP,
 * with libcurl on the core's loop (postern/curl.h).
 *
 * rcpt: a transaction goes to one next hop. A recipient whose route
 *   differs from that of the transaction's first recipient gets 452 4.5.3
 *   (RFC 5321 3.3: the client sends it again in a later transaction), so
 *   each message is one SMTP transaction downstream and the single reply
 *   the client gets for it is true for every recipient.
 *
 * store: the original envelope (null sender included) and the message as
 *   postern stores it go to the route's next hop in one transaction; the
 *   client gets 250 only once the next hop answered 250 to the final dot,
 *   else the next hop's own class of refusal, or 451 (forward_reply.c).
 *
 *   1. On a pool thread, the message is read once to count the lines that
 *      begin with a dot. libcurl 7.88 stops reading a body once the bytes
 *      it has *sent* reach CURLOPT_INFILESIZE_LARGE, and it counts the dots
 *      it adds: with the plain size it silently drops the last bytes of a
 *      message over 64 KiB that holds such lines. The size it gets is the
 *      message's plus those dots, so it reads to the end.
 *   2. On the loop, the transfer: libcurl reads the body from the spool
 *      through the module's read callback (never the whole message in
 *      memory), dot-stuffs it and ends it.
 *
 * Transactions with no route are not this instance's: its store handler
 * says CONTINUE, and another store module may take them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <postern/curl.h>
#include <postern/postern.h>

#include "forward.h"

#define FW_SCAN_BUFFER (64 * 1024)

struct forward {
    struct fw_config cfg;
    char *instance;
    struct forward *next; /* the live instances of this process */
};

/* Instances alive in this process, to refuse two that would share
 * connections to one next hop with different TLS settings. */
static struct forward *fw_instances;

struct fw_job {
    const struct forward *fw;
    postern_ctx *ctx;
    const struct fw_route *route;
    char *id;
    char *mail_from;
    struct curl_slist *rcpts;
    size_t n_rcpts;
    unsigned long long size;    /* postern_message_size() */
    unsigned long long stuffed; /* dots libcurl will add */
    postern_message_reader *reader;
    int scan_errno; /* the pool's read failed */
    int read_errno; /* libcurl's read callback failed */
    bool read_failed;
    CURL *easy;
    struct fw_transcript transcript;
    char errbuf[CURL_ERROR_SIZE];
};

static void
fw_job_free(struct fw_job *job)
{
    if (job == NULL)
        return;
    if (job->easy != NULL)
        curl_easy_cleanup(job->easy);
    curl_slist_free_all(job->rcpts);
    postern_message_close(job->reader);
    free(job->id);
    free(job->mail_from);
    free(job);
}

/* --- routes of a transaction --------------------------------------------- */

static bool
fw_same_route(const struct fw_route *a, const struct fw_route *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a->curl_url, b->curl_url) == 0;
}

/* The rcpt hook: one next hop per transaction. */
static postern_result
fw_rcpt(postern_ctx *ctx, void *instance)
{
    const struct forward *fw = instance;
    const char *rcpt = postern_rcpt_current(ctx);

    if (rcpt == NULL || postern_rcpt_count(ctx) == 0)
        return POSTERN_CONTINUE;
    const struct fw_route *first =
        fw_route_for(&fw->cfg, postern_rcpt_address(ctx, 0));
    const struct fw_route *route = fw_route_for(&fw->cfg, rcpt);
    if (fw_same_route(first, route))
        return POSTERN_CONTINUE;
    postern_log(
        ctx, POSTERN_LOG_INFO, "deferred rcpt=%s route=%s first_route=%s",
        postern_log_value(rcpt), postern_log_value(route ? route->url : "none"),
        postern_log_value(first ? first->url : "none"));
    postern_reply(ctx, 452, "4.5.3",
                  "Error: this recipient goes to another next hop; send "
                  "it again in a new transaction");
    return POSTERN_TEMPFAIL;
}

/* --- the transfer's callbacks (loop thread) ------------------------------ */

static size_t
fw_read(char *buf, size_t size, size_t nitems, void *arg)
{
    struct fw_job *job = arg;

    for (;;) {
        ssize_t n = postern_message_read(job->reader, buf, size * nitems);
        if (n >= 0)
            return (size_t)n;
        if (errno == EINTR)
            continue;
        job->read_failed = true;
        job->read_errno = errno;
        return CURL_READFUNC_ABORT;
    }
}

/* libcurl rewinds when it must send the message again (a kept-alive
 * connection the next hop had closed): read it from the start. */
static int
fw_seek(void *arg, curl_off_t offset, int origin)
{
    struct fw_job *job = arg;
    postern_message_reader *reader;

    if (offset != 0 || origin != SEEK_SET)
        return CURL_SEEKFUNC_CANTSEEK;
    if ((reader = postern_message_open(job->ctx)) == NULL)
        return CURL_SEEKFUNC_FAIL;
    postern_message_close(job->reader);
    job->reader = reader;
    return CURL_SEEKFUNC_OK;
}

/* Every reply line of the next hop. */
static size_t
fw_header(char *buf, size_t size, size_t nitems, void *arg)
{
    struct fw_job *job = arg;

    fw_transcript_reply_line(&job->transcript, buf, size * nitems);
    return size * nitems;
}

/* Every command libcurl sends (and, unused, its other chatter). */
static int
fw_debug(CURL *easy, curl_infotype type, char *data, size_t size, void *arg)
{
    struct fw_job *job = arg;

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

static void
fw_log_outcome(const struct fw_job *job, const struct fw_outcome *out,
               CURLcode rc, bool orphaned)
{
    postern_ctx *ctx = job->ctx;
    const struct fw_transcript *t = &job->transcript;

    if (out->result == POSTERN_ACCEPT) {
        postern_log(ctx, orphaned ? POSTERN_LOG_WARNING : POSTERN_LOG_INFO,
                    "forwarded id=%s peer=%s rcpts=%zu size=%llu "
                    "next_hop_reply=%s%s",
                    job->id, postern_log_value(job->route->peer), job->n_rcpts,
                    job->size, postern_log_value(t->text),
                    orphaned ? " client_gone=yes (the client did not hear "
                               "the 250 and may send the message again)"
                             : "");
        return;
    }
    postern_log(ctx, POSTERN_LOG_WARNING,
                "forward_failed id=%s peer=%s result=%s reason=%s code=%d "
                "next_hop_code=%d next_hop_reply=%s error=%s%s",
                job->id, postern_log_value(job->route->peer),
                out->result == POSTERN_REJECT ? "reject" : "tempfail",
                out->reason, out->code, t->code,
                postern_log_value(t->code ? t->text : NULL),
                postern_log_value(job->read_failed ? strerror(job->read_errno)
                                  : job->errbuf[0] ? job->errbuf
                                                   : curl_easy_strerror(rc)),
                orphaned ? " client_gone=yes" : "");
}

/* The transfer is over (or was aborted because the client left). */
static void
fw_done(void *arg, CURLcode rc, CURL *easy)
{
    struct fw_job *job = arg;
    postern_ctx *ctx = job->ctx;
    bool orphaned = postern_ctx_orphaned(ctx);
    struct fw_outcome out;

    (void)easy;
    fw_outcome_of(rc, &job->transcript, job->route->peer, job->id,
                  job->read_failed, &out);
    fw_log_outcome(job, &out, rc, orphaned);
    if (!orphaned)
        postern_reply(ctx, out.code, out.enhanced, "%s", out.text);
    postern_resume(ctx, out.result);
    fw_job_free(job);
}

/* --- starting the transfer ----------------------------------------------- */

#define FW_SET(easy, opt, value)                                               \
    do {                                                                       \
        if (curl_easy_setopt((easy), (opt), (value)) != CURLE_OK)              \
            return -1;                                                         \
    } while (0)

static int
fw_easy_setup(struct fw_job *job)
{
    const struct fw_config *cfg = &job->fw->cfg;
    CURL *e = job->easy;
    long seconds = (cfg->timeout_ms + 999) / 1000;

    FW_SET(e, CURLOPT_URL, job->route->curl_url);
#if LIBCURL_VERSION_NUM >= 0x075500
    FW_SET(e, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
#else
    FW_SET(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_SMTP | CURLPROTO_SMTPS));
#endif
    FW_SET(e, CURLOPT_NOSIGNAL, 1L);
    /* "" sends MAIL FROM:<>, the null sender. */
    FW_SET(e, CURLOPT_MAIL_FROM, job->mail_from);
    FW_SET(e, CURLOPT_MAIL_RCPT, job->rcpts);
    FW_SET(e, CURLOPT_UPLOAD, 1L);
    FW_SET(e, CURLOPT_READFUNCTION, fw_read);
    FW_SET(e, CURLOPT_READDATA, job);
    FW_SET(e, CURLOPT_SEEKFUNCTION, fw_seek);
    FW_SET(e, CURLOPT_SEEKDATA, job);
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
    /* Also bounds the waits libcurl makes without returning to the loop:
     * for the reply to the final dot, and to QUIT. */
    FW_SET(e, CURLOPT_SERVER_RESPONSE_TIMEOUT, seconds);
    FW_SET(e, CURLOPT_HEADERFUNCTION, fw_header);
    FW_SET(e, CURLOPT_HEADERDATA, job);
    FW_SET(e, CURLOPT_WRITEFUNCTION, fw_discard);
    FW_SET(e, CURLOPT_WRITEDATA, job);
    /* The debug callback is how the commands are seen; libcurl calls it
     * only in verbose mode. Nothing goes to stderr. */
    FW_SET(e, CURLOPT_DEBUGFUNCTION, fw_debug);
    FW_SET(e, CURLOPT_DEBUGDATA, job);
    FW_SET(e, CURLOPT_VERBOSE, 1L);
    FW_SET(e, CURLOPT_ERRORBUFFER, job->errbuf);
    return 0;
}

static void
fw_finish_now(struct fw_job *job, postern_result result, int code,
              const char *enhanced, const char *text)
{
    postern_ctx *ctx = job->ctx;

    if (!postern_ctx_orphaned(ctx))
        postern_reply(ctx, code, enhanced, "%s", text);
    postern_resume(ctx, result);
    fw_job_free(job);
}

/* Pool thread: count the dots libcurl will add (see the top). */
static void
fw_scan(void *arg)
{
    struct fw_job *job = arg;
    char *buf = malloc(FW_SCAN_BUFFER);
    int state = FW_DOTS_START;

    if (buf == NULL) {
        job->scan_errno = ENOMEM;
        return;
    }
    for (;;) {
        ssize_t n = postern_message_read(job->reader, buf, FW_SCAN_BUFFER);
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

/* Loop thread, after fw_scan(): start the transfer. */
static void
fw_scan_done(void *arg)
{
    struct fw_job *job = arg;
    postern_ctx *ctx = job->ctx;

    postern_message_close(job->reader);
    job->reader = NULL;
    if (postern_ctx_orphaned(ctx)) {
        postern_log(ctx, POSTERN_LOG_INFO,
                    "not forwarded id=%s client_gone=yes", job->id);
        fw_finish_now(job, POSTERN_TEMPFAIL, 451, "4.3.0", "");
        return;
    }
    if (job->scan_errno != 0) {
        postern_log(ctx, POSTERN_LOG_ERROR,
                    "cannot read the message id=%s error=%s", job->id,
                    postern_log_value(strerror(job->scan_errno)));
        fw_finish_now(job, POSTERN_TEMPFAIL, 451, "4.3.0",
                      "Error: local error reading the message");
        return;
    }
    errno = 0;
    if ((job->reader = postern_message_open(ctx)) == NULL ||
        (job->easy = curl_easy_init()) == NULL || fw_easy_setup(job) != 0) {
        postern_log(ctx, POSTERN_LOG_ERROR,
                    "cannot prepare the transfer id=%s error=%s", job->id,
                    postern_log_value(errno ? strerror(errno)
                                            : "libcurl setup failed"));
        fw_finish_now(job, POSTERN_TEMPFAIL, 451, "4.3.0",
                      "Error: local error, try again later");
        return;
    }
    fw_transcript_init(&job->transcript);
    if (postern_curl_perform(ctx, job->easy, fw_done, job) == NULL) {
        postern_log(ctx, POSTERN_LOG_ERROR,
                    "cannot start the transfer id=%s peer=%s", job->id,
                    postern_log_value(job->route->peer));
        fw_finish_now(job, POSTERN_TEMPFAIL, 451, "4.3.0",
                      "Error: local error, try again later");
        return;
    }
    postern_log(ctx, POSTERN_LOG_DEBUG,
                "forwarding id=%s peer=%s rcpts=%zu size=%llu stuffed=%llu",
                job->id, postern_log_value(job->route->peer), job->n_rcpts,
                job->size, job->stuffed);
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

static struct fw_job *
fw_job_new(const struct forward *fw, postern_ctx *ctx,
           const struct fw_route *route)
{
    struct fw_job *job = calloc(1, sizeof *job);
    const char *from = postern_mail_from(ctx);
    size_t n = postern_rcpt_count(ctx);

    if (job == NULL)
        return NULL;
    job->fw = fw;
    job->ctx = ctx;
    job->route = route;
    job->size = postern_message_size(ctx);
    if ((job->id = strdup(postern_transaction_id(ctx))) == NULL ||
        (job->mail_from = strdup(from ? from : "")) == NULL) {
        fw_job_free(job);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        struct curl_slist *list =
            curl_slist_append(job->rcpts, postern_rcpt_address(ctx, i));
        if (list == NULL) {
            fw_job_free(job);
            return NULL;
        }
        job->rcpts = list;
        job->n_rcpts++;
    }
    return job;
}

/* The store hook. */
static postern_result
fw_store(postern_ctx *ctx, void *instance)
{
    const struct forward *fw = instance;
    size_t n = postern_rcpt_count(ctx);
    const struct fw_route *route;
    struct fw_job *job;

    if (postern_transaction_id(ctx) == NULL || n == 0) {
        postern_log(ctx, POSTERN_LOG_ERROR,
                    "store hook called without a transaction or recipients");
        postern_reply(ctx, 451, "4.3.0", "Error: local error");
        return POSTERN_TEMPFAIL;
    }
    route = fw_route_for(&fw->cfg, postern_rcpt_address(ctx, 0));
    for (size_t i = 1; i < n; i++) {
        if (fw_same_route(route,
                          fw_route_for(&fw->cfg, postern_rcpt_address(ctx, i))))
            continue;
        postern_log(ctx, POSTERN_LOG_ERROR,
                    "recipients of several routes in one transaction id=%s "
                    "rcpt=%s: attach this instance to the rcpt hook, in a "
                    "plugins.d file sorted before any module that accepts "
                    "recipients",
                    postern_transaction_id(ctx),
                    postern_log_value(postern_rcpt_address(ctx, i)));
        postern_reply(ctx, 451, "4.3.5",
                      "Error: recipients for several next hops; local "
                      "configuration error");
        return POSTERN_TEMPFAIL;
    }
    if (route == NULL)
        return POSTERN_CONTINUE; /* not ours: another store module's */
    if ((job = fw_job_new(fw, ctx, route)) == NULL) {
        postern_log(ctx, POSTERN_LOG_ERROR,
                    "cannot prepare the transfer: out of memory");
        postern_reply(ctx, 451, "4.3.0", "Error: local error");
        return POSTERN_TEMPFAIL;
    }
    errno = 0;
    if ((job->reader = postern_message_open(ctx)) == NULL) {
        postern_log(
            ctx, POSTERN_LOG_ERROR, "cannot open the message id=%s error=%s",
            job->id,
            postern_log_value(errno ? strerror(errno) : "unknown error"));
        fw_job_free(job);
        postern_reply(ctx, 451, "4.3.0", "Error: local error");
        return POSTERN_TEMPFAIL;
    }
    if (postern_pool_submit(fw_scan, fw_scan_done, job) != 0) {
        postern_log(ctx, POSTERN_LOG_ERROR,
                    "the thread pool refused the job id=%s", job->id);
        fw_job_free(job);
        postern_reply(ctx, 451, "4.3.0", "Error: local error");
        return POSTERN_TEMPFAIL;
    }
    return POSTERN_PENDING;
}

/* --- instances ----------------------------------------------------------- */

static bool
fw_same_tls(const struct fw_config *a, const struct fw_config *b)
{
    const char *ca = a->ca_file ? a->ca_file : "";
    const char *cb = b->ca_file ? b->ca_file : "";

    return a->use_ssl == b->use_ssl && a->verify == b->verify &&
           strcmp(ca, cb) == 0;
}

/*
 * libcurl reuses a kept-alive smtp:// connection for any later transfer
 * to the same host and port without looking at the TLS it asked for: an
 * instance with "starttls": "required" could send over another's
 * cleartext connection. Two instances that share a next hop must
 * therefore share their TLS settings. 0, or -1 after postern_init_error().
 */
static int
fw_check_shared_peers(postern_module_init *init, const struct forward *fw)
{
    for (const struct forward *o = fw_instances; o != NULL; o = o->next) {
        if (fw_same_tls(&fw->cfg, &o->cfg))
            continue;
        for (size_t i = 0; i < fw->cfg.n_routes; i++) {
            const struct fw_route *r = &fw->cfg.routes[i];
            for (size_t j = 0; !r->implicit_tls && j < o->cfg.n_routes; j++) {
                const struct fw_route *p = &o->cfg.routes[j];
                if (p->implicit_tls || strcasecmp(r->peer, p->peer) != 0)
                    continue;
                char where[320];
                snprintf(where, sizeof where, "routes.%.300s", r->key);
                postern_init_error(init, where,
                                   "next hop %s is also a route of instance "
                                   "%s, with other \"starttls\" or "
                                   "\"ca_file\" settings: libcurl would "
                                   "share connections between the two; give "
                                   "them the same TLS settings",
                                   r->peer, o->instance);
                return -1;
            }
        }
    }
    return 0;
}

static void
fw_destroy(void *instance)
{
    struct forward *fw = instance;

    if (fw == NULL)
        return;
    for (struct forward **p = &fw_instances; *p != NULL; p = &(*p)->next)
        if (*p == fw) {
            *p = fw->next;
            break;
        }
    fw_config_free(&fw->cfg);
    free(fw->instance);
    free(fw);
}

static int
fw_create(postern_module_init *init, void **instance)
{
    struct forward *fw = calloc(1, sizeof *fw);
    const char *name = postern_init_instance(init);

    if (fw == NULL ||
        (fw->instance = strdup(name ? name : "forward")) == NULL) {
        free(fw);
        postern_init_error(init, "", "out of memory");
        return -1;
    }
    if (fw_config_parse(init, &fw->cfg) != 0 ||
        fw_check_shared_peers(init, fw) != 0) {
        fw_destroy(fw);
        return -1;
    }
    fw->next = fw_instances;
    fw_instances = fw;
    *instance = fw;
    return 0;
}

POSTERN_MODULE_DEFINE = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "forward",
    .description = "relay each message to a next-hop MTA over SMTP",
    .create = fw_create,
    .destroy = fw_destroy,
    .handlers =
        {[POSTERN_HOOK_RCPT] = fw_rcpt, [POSTERN_HOOK_STORE] = fw_store},
};
