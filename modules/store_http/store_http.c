/*
 * store_http.c - hand each message to an HTTP endpoint: one POST of a
 * JSON document (envelope, client, TLS, results, the message in base64)
 * per message, and 250 only once the endpoint answered 2xx.
 *
 * The store handler builds the document head and goes pending. With a
 * signing key, a pool thread first reads the whole body once to compute
 * its HMAC (the body is streamed, so its signature must be known before
 * the first byte goes out). Then attempts run on the loop: each URL in
 * order (failover), and when all failed, again after a growing delay, up
 * to "retries" more rounds and never past the deadline. An answer that
 * rejects or defers ends the job at once. The job resumes its context
 * exactly once, on every path, and frees everything it holds.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_http.h"

/* Less than this left before the deadline: no new attempt. */
#define SH_MIN_ATTEMPT 0.05

struct sh_job {
    struct store_http *mod;
    postern_ctx *ctx;
    struct sh_job *prev, *next; /* in mod->jobs */
    char id[64];                /* transaction id, for logs and replies */
    struct sh_document doc;
    struct sh_body *body;
    char timestamp[24];
    char signature[65]; /* "" without a key */
    bool signed_ok;     /* written by the pool thread */
    postern_http_call *call;
    postern_timer *timer;
    double deadline;
    size_t url;       /* endpoint of the current attempt */
    unsigned round;   /* 0 for the first pass over the URLs */
    unsigned tries;   /* attempts made */
    char enhanced[8]; /* of the last failure */
    char why[64];     /* of the last failure, for the reply */
};

static void sh_attempt(struct sh_job *job);

static void
sh_job_free(struct sh_job *job)
{
    struct store_http *mod = job->mod;

    if (job->prev != NULL)
        job->prev->next = job->next;
    else if (mod->jobs == job)
        mod->jobs = job->next;
    if (job->next != NULL)
        job->next->prev = job->prev;
    sh_body_free(job->body);
    sh_document_free(&job->doc);
    free(job);
}

/* The end of a job: resume (even an orphaned context, which the core
 * then frees) and free it. */
static void
sh_finish(struct sh_job *job, postern_result result)
{
    postern_ctx *ctx = job->ctx;

    sh_job_free(job);
    postern_resume(ctx, result);
}

static void
sh_fail(struct sh_job *job)
{
    postern_ctx *ctx = job->ctx;

    if (!postern_ctx_orphaned(ctx)) {
        postern_log(ctx, POSTERN_LOG_WARNING,
                    "not stored id=%s attempts=%u error=%s", job->id,
                    job->tries, postern_log_value(job->why));
        postern_reply(ctx, 451, job->enhanced[0] ? job->enhanced : "4.4.7",
                      "Error: hand-off failed (%s), try again later",
                      job->why[0] ? job->why : "out of time");
    }
    sh_finish(job, POSTERN_TEMPFAIL);
}

/* The failure of one attempt, as RFC 3463 puts it. */
static void
sh_note_failure(struct sh_job *job, postern_http_status status, int code,
                const char *detail)
{
    const char *enhanced = "4.4.0", *why = "unexpected answer";
    char text[64];

    switch (status) {
    case POSTERN_HTTP_CONNECT:
        enhanced = "4.4.1"; /* no answer from host */
        why = "no connection";
        break;
    case POSTERN_HTTP_TIMEOUT:
        enhanced = "4.4.2"; /* bad connection: timed out */
        why = "timed out";
        break;
    case POSTERN_HTTP_TLS:
        enhanced = "4.4.2";
        why = "TLS failed";
        break;
    case POSTERN_HTTP_BODY:
        enhanced = "4.3.0"; /* our own side: the message */
        why = "cannot read the message";
        break;
    case POSTERN_HTTP_OK:
        snprintf(text, sizeof text, "HTTP status %d", code);
        why = text;
        break;
    default:
        break;
    }
    snprintf(job->enhanced, sizeof job->enhanced, "%s", enhanced);
    snprintf(job->why, sizeof job->why, "%s", why);
    postern_log(job->ctx, POSTERN_LOG_INFO,
                "attempt failed id=%s endpoint=%zu round=%u status=%d "
                "error=%s",
                job->id, job->url + 1, job->round, code,
                postern_log_value(detail && detail[0] ? detail : why));
}

static void
sh_retry_timer(void *arg)
{
    struct sh_job *job = arg;

    job->timer = NULL;
    job->url = 0;
    sh_attempt(job);
}

/* The current attempt failed: the next URL, or a new round later. */
static void
sh_next(struct sh_job *job)
{
    struct store_http *mod = job->mod;

    if (++job->url < mod->n_urls) {
        sh_attempt(job);
        return;
    }
    if (job->round >= mod->retries || postern_ctx_orphaned(job->ctx)) {
        sh_fail(job);
        return;
    }
    double delay = mod->retry_delay;
    for (unsigned i = 0; i < job->round; i++)
        delay *= 2.0;
    if (postern_now() + delay + SH_MIN_ATTEMPT >= job->deadline) {
        sh_fail(job);
        return;
    }
    job->round++;
    if ((job->timer = postern_timer_start(delay, sh_retry_timer, job)) == NULL)
        sh_fail(job);
}

static void
sh_stored(struct sh_job *job, const struct sh_answer *a, int code)
{
    const char *id = a->id[0] ? a->id : job->id;

    postern_log(job->ctx, POSTERN_LOG_INFO,
                "stored id=%s endpoint=%zu status=%d remote_id=%s "
                "attempts=%u",
                job->id, job->url + 1, code,
                postern_log_value(a->id[0] ? a->id : NULL), job->tries);
    /* A client gone meanwhile never hears it, and sends again. */
    if (!postern_ctx_orphaned(job->ctx))
        postern_reply(job->ctx, 250, "2.0.0", "Ok: queued as %s", id);
    sh_finish(job, POSTERN_ACCEPT);
}

static void
sh_decided(struct sh_job *job, const struct sh_answer *a, int code)
{
    int reject = a->verdict == SH_REJECTED;

    postern_log(job->ctx, POSTERN_LOG_INFO,
                "%s id=%s endpoint=%zu status=%d reply=%d enhanced=%s "
                "text=%s",
                reject ? "rejected" : "deferred", job->id, job->url + 1, code,
                a->code, a->enhanced, postern_log_value(a->text));
    if (!postern_ctx_orphaned(job->ctx))
        postern_reply(job->ctx, a->code, a->enhanced, "%s", a->text);
    sh_finish(job, reject ? POSTERN_REJECT : POSTERN_TEMPFAIL);
}

static void
sh_answered(void *arg, postern_http_status status,
            const postern_http_response *resp)
{
    struct sh_job *job = arg;
    int code = postern_http_response_code(resp);

    job->call = NULL;
    /* The attempt is over: no descriptor kept while waiting. */
    sh_body_restart(job->body, NULL);
    if (status == POSTERN_HTTP_CANCELLED) {
        postern_log(job->ctx, POSTERN_LOG_INFO, "cancelled id=%s", job->id);
        snprintf(job->enhanced, sizeof job->enhanced, "4.3.0");
        snprintf(job->why, sizeof job->why, "shutting down");
        sh_fail(job);
        return;
    }
    if (status == POSTERN_HTTP_OK) {
        size_t len = 0;
        const char *text = postern_http_response_body(resp, &len);
        struct sh_answer a;
        sh_answer_read(code, text, len, &a);
        if (a.verdict == SH_STORED) {
            sh_stored(job, &a, code);
            return;
        }
        if (a.verdict != SH_FAILED) {
            sh_decided(job, &a, code);
            return;
        }
    }
    sh_note_failure(job, status, code, postern_http_response_error(resp));
    if (status == POSTERN_HTTP_BODY) {
        sh_fail(job); /* the message itself: no endpoint can help */
        return;
    }
    sh_next(job);
}

/* --- the body source: the job's stream, reopened to rewind ------------- */

static ssize_t
sh_source_read(void *arg, char *buf, size_t len)
{
    struct sh_job *job = arg;

    return sh_body_read(job->body, buf, len);
}

static int
sh_source_rewind(void *arg)
{
    struct sh_job *job = arg;
    postern_message_reader *reader = postern_message_open(job->ctx);

    sh_body_restart(job->body, reader);
    return reader != NULL ? 0 : -1;
}

static postern_http_request *
sh_request(struct sh_job *job, double timeout)
{
    const struct store_http *mod = job->mod;
    postern_http_request *req =
        postern_http_request_new("POST", mod->urls[job->url]);
    postern_http_body_source src = {
        .size = sh_body_size(&job->doc),
        .read = sh_source_read,
        .rewind = sh_source_rewind,
        .arg = job,
    };
    postern_http_tls tls = {
        .ca_file = mod->ca_file,
        .cert_file = mod->cert_file,
        .key_file = mod->key_file,
    };
    char bearer[4200];
    int rc = req != NULL ? 0 : -1;

    if (rc == 0)
        rc = postern_http_request_header(req, "Content-Type",
                                         "application/json") |
             postern_http_request_header(req, "X-Postern-Id", job->id) |
             postern_http_request_body_source(req, &src);
    if (rc == 0 && mod->token != NULL) {
        snprintf(bearer, sizeof bearer, "Bearer %s", mod->token);
        rc = postern_http_request_header(req, "Authorization", bearer);
    }
    if (rc == 0 && job->signature[0] != '\0') {
        char value[80];
        snprintf(value, sizeof value, "sha256=%s", job->signature);
        rc = postern_http_request_header(req, "X-Postern-Timestamp",
                                         job->timestamp) |
             postern_http_request_header(req, "X-Postern-Signature", value);
    }
    if (rc == 0 && strncmp(mod->urls[job->url], "https://", 8) == 0)
        rc = postern_http_request_tls(req, &tls);
    if (rc != 0) {
        postern_http_request_free(req);
        return NULL;
    }
    postern_http_request_timeout(req, timeout);
    return req;
}

/* One POST to the current URL, with what is left of the deadline. */
static void
sh_attempt(struct sh_job *job)
{
    double left = job->deadline - postern_now();

    if (postern_ctx_orphaned(job->ctx) || left < SH_MIN_ATTEMPT) {
        sh_fail(job);
        return;
    }
    postern_message_reader *reader = postern_message_open(job->ctx);
    if (reader == NULL) {
        snprintf(job->enhanced, sizeof job->enhanced, "4.3.0");
        snprintf(job->why, sizeof job->why, "cannot read the message");
        sh_fail(job);
        return;
    }
    sh_body_restart(job->body, reader);
    postern_http_request *req =
        sh_request(job, left < job->mod->timeout ? left : job->mod->timeout);
    job->tries++;
    if (req == NULL || (job->call = postern_http_send(
                            job->ctx, req, sh_answered, job)) == NULL) {
        snprintf(job->enhanced, sizeof job->enhanced, "4.3.0");
        snprintf(job->why, sizeof job->why, "out of memory");
        sh_fail(job);
    }
}

/* --- signing on a pool thread ------------------------------------------- */

static void
sh_sign_work(void *arg)
{
    struct sh_job *job = arg;

    job->signed_ok =
        sh_body_sign(job->body, job->mod->hmac_key, job->mod->hmac_key_len,
                     job->timestamp, job->signature) == 0;
}

static void
sh_sign_done(void *arg)
{
    struct sh_job *job = arg;

    if (!job->signed_ok) {
        job->signature[0] = '\0';
        if (!postern_ctx_orphaned(job->ctx))
            postern_log(job->ctx, POSTERN_LOG_ERROR,
                        "cannot sign id=%s: the message cannot be read",
                        job->id);
        snprintf(job->enhanced, sizeof job->enhanced, "4.3.0");
        snprintf(job->why, sizeof job->why, "cannot read the message");
        sh_fail(job);
        return;
    }
    sh_attempt(job);
}

/* --- the store hook ------------------------------------------------------ */

static struct sh_job *
sh_job_new(struct store_http *mod, postern_ctx *ctx)
{
    struct sh_job *job = calloc(1, sizeof *job);
    double now = postern_now();

    if (job == NULL)
        return NULL;
    job->mod = mod;
    job->ctx = ctx;
    job->deadline = now + mod->deadline;
    snprintf(job->id, sizeof job->id, "%s", postern_transaction_id(ctx));
    snprintf(job->timestamp, sizeof job->timestamp, "%lld", (long long)now);
    job->next = mod->jobs;
    if (mod->jobs != NULL)
        mod->jobs->prev = job;
    mod->jobs = job;
    if (sh_document_build(mod, ctx, now, &job->doc) != 0 ||
        (job->body = sh_body_new(&job->doc, NULL)) == NULL) {
        sh_job_free(job);
        return NULL;
    }
    return job;
}

static postern_result
sh_store(postern_ctx *ctx, void *instance)
{
    struct store_http *mod = instance;
    struct sh_job *job = NULL;
    postern_message_reader *reader = NULL;
    postern_http_request *req = NULL;
    const char *why = "out of memory";

    if (postern_transaction_id(ctx) == NULL) {
        why = "outside a transaction";
        goto fail;
    }
    if ((job = sh_job_new(mod, ctx)) == NULL)
        goto fail;
    if ((reader = postern_message_open(ctx)) == NULL) {
        why = "cannot open the message";
        goto fail;
    }
    sh_body_restart(job->body, reader);
    if (mod->hmac_key != NULL) {
        /* The signature first; the attempts follow in sh_sign_done(). */
        if (postern_pool_submit(sh_sign_work, sh_sign_done, job) != 0) {
            why = "the thread pool refused the signing";
            goto fail;
        }
        return POSTERN_PENDING;
    }
    req = sh_request(job, mod->timeout < mod->deadline ? mod->timeout
                                                       : mod->deadline);
    job->tries = 1;
    if (req == NULL ||
        (job->call = postern_http_send(ctx, req, sh_answered, job)) == NULL)
        goto fail;
    return POSTERN_PENDING;
fail:
    postern_log(ctx, POSTERN_LOG_ERROR, "cannot hand off id=%s: %s",
                job ? job->id : "-", why);
    if (job != NULL)
        sh_job_free(job);
    postern_reply(ctx, 451, "4.3.0", "Error: local hand-off failure");
    return POSTERN_TEMPFAIL;
}

/* --- the instance -------------------------------------------------------- */

static void
sh_destroy(void *instance)
{
    struct store_http *mod = instance;

    if (mod == NULL)
        return;
    /* Requests in flight were cancelled and pool jobs done before this;
     * what can be left is a job waiting for its retry timer. Its context
     * is an orphan the core frees. */
    size_t dropped = 0;
    while (mod->jobs != NULL) {
        struct sh_job *job = mod->jobs;
        if (job->timer != NULL)
            postern_timer_cancel(job->timer);
        if (job->call != NULL)
            postern_http_cancel(job->call);
        sh_job_free(job);
        dropped++;
    }
    if (dropped > 0)
        postern_log(NULL, POSTERN_LOG_INFO,
                    "stopping with messages waiting for a retry dropped=%zu "
                    "(their clients were told nothing yet and will retry)",
                    dropped);
    sh_config_free(mod);
    free(mod);
}

static int
sh_create(postern_module_init *init, void **instance)
{
    struct store_http *mod = calloc(1, sizeof *mod);

    if (mod == NULL) {
        postern_init_error(init, "", "out of memory");
        return -1;
    }
    if (sh_config(init, mod) != 0) {
        sh_destroy(mod);
        return -1;
    }
    *instance = mod;
    return 0;
}

POSTERN_MODULE_DEFINE = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "store_http",
    .description = "hand messages to an HTTP endpoint as JSON documents",
    .create = sh_create,
    .destroy = sh_destroy,
    .handlers = {[POSTERN_HOOK_STORE] = sh_store},
};
