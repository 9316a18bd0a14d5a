/*
 * curl_call.c - a module's own libcurl transfer on the core's multi
 * (include/postern/curl.h).
 *
 * The module's handle gets no option from us but CURLOPT_PRIVATE (and, on
 * a start, CURLOPT_TIMEOUT_MS stays the module's own): its wait in the
 * queue is bounded by http.timeout of the main config.
 */
#include <stdlib.h>

#include "curl_loop.h"
#include "module_scope.h"
#include "postern/curl.h"

struct postern_curl_call {
    struct curl_job job; /* first: the loop hands back this */
    postern_curl_cb cb;
    void *arg;
    const struct module_instance *scope; /* who started it */
};

static void
on_job_done(struct curl_job *job, CURLcode result, bool cancelled)
{
    struct postern_curl_call *call = (struct postern_curl_call *)job;
    const struct module_instance *was = module_scope_enter(call->scope);
    call->cb(call->arg, cancelled ? CURLE_ABORTED_BY_CALLBACK : result,
             job->easy);
    module_scope_leave(was);
    free(call);
}

static void
on_job_release(struct curl_job *job)
{
    free(job);
}

postern_curl_call *
postern_curl_perform(postern_ctx *ctx, CURL *easy, postern_curl_cb cb,
                     void *arg)
{
    if (!easy || !cb || !curl_loop_up())
        return NULL;
    void *running = NULL;
    if (curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&running) !=
            CURLE_OK ||
        running)
        return NULL; /* already ours (or a module set CURLOPT_PRIVATE) */
    struct postern_curl_call *call = calloc(1, sizeof(*call));
    if (!call)
        return NULL;
    call->cb = cb;
    call->arg = arg;
    call->scope = module_scope();
    call->job.easy = easy;
    call->job.timeout = curl_loop_config()->timeout;
    call->job.set_timeout = false;
    call->job.done = on_job_done;
    call->job.release = on_job_release;
    if (curl_job_start(&call->job, ctx) < 0) {
        free(call);
        return NULL;
    }
    return call;
}

void
postern_curl_cancel(postern_curl_call *call)
{
    if (call)
        curl_job_cancel(&call->job); /* frees call through on_job_release */
}
