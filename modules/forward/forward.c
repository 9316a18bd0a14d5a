/*
 * forward.c - relay each accepted message to a next-hop MTA over SMTP,
 * with libcurl on the module's own worker threads (forward_workers.c).
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
 *   The store handler copies what the transfer needs into a job, queues
 *   it and says PENDING; a worker thread runs it (forward_transfer.c);
 *   back on the loop, fw_finish() logs, replies and resumes.
 *
 * Transactions with no route are not this instance's: its store handler
 * says CONTINUE, and another store module may take them.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <postern/postern.h>

#include "forward.h"

struct forward {
    struct fw_config cfg;
    struct fw_workers *workers; /* NULL when only checking the config */
};

void
fw_job_free(struct fw_job *job)
{
    if (job == NULL)
        return;
    curl_slist_free_all(job->rcpts);
    postern_message_close(job->scanner);
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

/* --- the end of a transfer (loop thread) ------------------------------- */

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

/* A worker handed the job back: the transfer is over, failed to start,
 * or never started because the client had left. */
static void
fw_finish(struct fw_job *job, void *arg)
{
    postern_ctx *ctx = job->ctx;
    bool orphaned = postern_ctx_orphaned(ctx);
    struct fw_outcome out;

    (void)arg;
    if (!job->started) {
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
    if (job->setup_failed) {
        postern_log(ctx, POSTERN_LOG_ERROR,
                    "cannot prepare the transfer id=%s peer=%s error=%s",
                    job->id, postern_log_value(job->route->peer),
                    "libcurl setup failed");
        fw_finish_now(job, POSTERN_TEMPFAIL, 451, "4.3.0",
                      "Error: local error, try again later");
        return;
    }
    postern_log(ctx, POSTERN_LOG_DEBUG,
                "forwarded_transfer id=%s peer=%s rcpts=%zu size=%llu "
                "stuffed=%llu",
                job->id, postern_log_value(job->route->peer), job->n_rcpts,
                job->size, job->stuffed);
    fw_outcome_of(job->rc, &job->transcript, job->route->peer, job->id,
                  job->read_failed, &out);
    fw_log_outcome(job, &out, job->rc, orphaned);
    if (!orphaned)
        postern_reply(ctx, out.code, out.enhanced, "%s", out.text);
    postern_resume(ctx, out.result);
    fw_job_free(job);
}

/* --- starting the transfer ----------------------------------------------- */

static struct fw_job *
fw_job_new(const struct forward *fw, postern_ctx *ctx,
           const struct fw_route *route)
{
    struct fw_job *job = calloc(1, sizeof *job);
    const char *from = postern_mail_from(ctx);
    size_t n = postern_rcpt_count(ctx);

    if (job == NULL)
        return NULL;
    job->cfg = &fw->cfg;
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

/* Transaction note: the quarantine header is on the message. */
#define FW_NOTE_MARKED "forward.quarantine_marked"

/* The message hook: a message quarantined by now is marked for the next
 * hop, since the message cannot change once the store hook runs. Modules
 * that quarantine at the message hook must sort before this instance. */
static postern_result
fw_message(postern_ctx *ctx, void *instance)
{
    const struct forward *fw = instance;
    const char *reason = postern_message_quarantined(ctx);
    static char marked[] = "yes";

    if (reason == NULL || fw->cfg.quarantine_refuse ||
        postern_rcpt_count(ctx) == 0 ||
        fw_route_for(&fw->cfg, postern_rcpt_address(ctx, 0)) == NULL)
        return POSTERN_CONTINUE; /* not quarantined, or not ours */
    if (postern_header_add(ctx, FW_QUARANTINE_HEADER, reason) != 0 ||
        postern_note_set(ctx, POSTERN_NOTE_TRANSACTION, FW_NOTE_MARKED, marked,
                         NULL) != 0) {
        postern_log(ctx, POSTERN_LOG_ERROR,
                    "cannot add the quarantine header id=%s",
                    postern_log_value(postern_transaction_id(ctx)));
        postern_reply(ctx, 451, "4.3.0", "Error: local error");
        return POSTERN_TEMPFAIL;
    }
    return POSTERN_CONTINUE;
}

/* A quarantined message is forwarded only with its header; otherwise
 * (quarantine: refuse, or marked after this instance's message hook) the
 * sender keeps it: a quarantined message is never delivered unmarked. */
static bool
fw_quarantine_refused(postern_ctx *ctx)
{
    const char *reason = postern_message_quarantined(ctx);

    if (reason == NULL ||
        postern_note_get(ctx, POSTERN_NOTE_TRANSACTION, FW_NOTE_MARKED))
        return false;
    postern_log(ctx, POSTERN_LOG_WARNING,
                "quarantined message not forwarded id=%s reason=%s",
                postern_log_value(postern_transaction_id(ctx)),
                postern_log_value(reason));
    postern_reply(ctx, 451, "4.7.1",
                  "Error: message held for review, not forwarded");
    return true;
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
    if (fw_quarantine_refused(ctx))
        return POSTERN_TEMPFAIL;
    if ((job = fw_job_new(fw, ctx, route)) == NULL) {
        postern_log(ctx, POSTERN_LOG_ERROR,
                    "cannot prepare the transfer: out of memory");
        postern_reply(ctx, 451, "4.3.0", "Error: local error");
        return POSTERN_TEMPFAIL;
    }
    errno = 0;
    if ((job->scanner = postern_message_open(ctx)) == NULL ||
        (job->reader = postern_message_open(ctx)) == NULL) {
        postern_log(
            ctx, POSTERN_LOG_ERROR, "cannot open the message id=%s error=%s",
            job->id,
            postern_log_value(errno ? strerror(errno) : "unknown error"));
        fw_job_free(job);
        postern_reply(ctx, 451, "4.3.0", "Error: local error");
        return POSTERN_TEMPFAIL;
    }
    if (fw->workers == NULL || fw_workers_submit(fw->workers, job) != 0) {
        postern_log(ctx, POSTERN_LOG_ERROR, "cannot queue the transfer id=%s",
                    job->id);
        fw_job_free(job);
        postern_reply(ctx, 451, "4.3.0", "Error: local error");
        return POSTERN_TEMPFAIL;
    }
    return POSTERN_PENDING;
}

/* --- instances ----------------------------------------------------------- */

static void
fw_destroy(void *instance)
{
    struct forward *fw = instance;

    if (fw == NULL)
        return;
    fw_workers_stop(fw->workers);
    fw_config_free(&fw->cfg);
    free(fw);
}

static int
fw_create(postern_module_init *init, void **instance)
{
    struct forward *fw = calloc(1, sizeof *fw);

    if (fw == NULL) {
        postern_init_error(init, "", "out of memory");
        return -1;
    }
    if (fw_config_parse(init, &fw->cfg) != 0) {
        fw_destroy(fw);
        return -1;
    }
    if (!postern_init_check_only(init) &&
        (fw->workers = fw_workers_start((size_t)fw->cfg.concurrency, fw_finish,
                                        fw)) == NULL) {
        postern_init_error(init, "concurrency",
                           "cannot start %ld worker threads: %s",
                           fw->cfg.concurrency, strerror(errno));
        fw_destroy(fw);
        return -1;
    }
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
        {
            [POSTERN_HOOK_RCPT] = fw_rcpt,
            [POSTERN_HOOK_MESSAGE] = fw_message,
            [POSTERN_HOOK_STORE] = fw_store,
        },
};
