/*
 * curl_loop.h - one libcurl multi handle on the libev loop, shared by
 * postern/http.h (core/http.c) and postern/curl.h (core/curl_call.c).
 *
 * A job is one easy handle the loop runs for an owner. At most
 * http.max_in_flight jobs are in the multi at once; the others wait in a
 * FIFO queue. A job's time limit counts its queue wait: one that runs out
 * while queued completes with CURLE_OPERATION_TIMEDOUT without starting,
 * and one that starts is given what is left as CURLOPT_TIMEOUT_MS (when
 * set_timeout asks for it).
 *
 * done() runs exactly once per started job, from the loop: never inside
 * curl_job_start(), never inside a libcurl callback. cancelled is true when
 * the job's hook call was orphaned or postern is stopping; result is then
 * CURLE_ABORTED_BY_CALLBACK.
 */
#ifndef POSTERN_CURL_LOOP_H
#define POSTERN_CURL_LOOP_H

#include <stdbool.h>
#include <stddef.h>

#include <curl/curl.h>
#include <ev.h>

#include "config.h"
#include "hook.h"

struct curl_job;
typedef void (*curl_job_done_fn)(struct curl_job *job, CURLcode result,
                                 bool cancelled);

enum curl_job_state {
    CURL_JOB_IDLE,
    CURL_JOB_QUEUED,  /* waiting for a slot */
    CURL_JOB_RUNNING, /* in the multi */
    CURL_JOB_READY,   /* has its outcome, waits for delivery */
    CURL_JOB_DROPPED  /* cancelled inside libcurl: removed later */
};

struct curl_job {
    /* Set by the owner before curl_job_start(). */
    CURL *easy;
    double timeout;   /* seconds, queue included; 0: no limit */
    bool set_timeout; /* give libcurl the rest as CURLOPT_TIMEOUT_MS */
    curl_job_done_fn done;
    /* cancelled jobs: the loop lets go of the job (maybe later than
     * curl_job_cancel() when that ran inside libcurl); may be NULL. */
    void (*release)(struct curl_job *job);

    /* The loop's. */
    struct curl_job *prev, *next;
    enum curl_job_state state;
    bool in_multi;
    bool cancelled;
    CURLcode result;
    double deadline;
    ev_timer timer; /* the queue wait */
    struct hook_work work;
};

/* curl_global_init(): once, before modules are loaded (they may create
 * easy handles in create()). 0, or -1 with one line in err. */
int curl_loop_global_init(char *err, size_t errlen);

/* Start the multi on loop. 0, or -1 with one line in err. */
int curl_loop_init(struct ev_loop *loop, const struct http_config *cfg,
                   char *err, size_t errlen);

/* Stopping, before the modules are destroyed: every job queued, running
 * or ready completes now (cancelled), then the multi goes. New jobs fail
 * from here on. */
void curl_loop_shutdown(void);

/* True between curl_loop_init() and curl_loop_shutdown(). */
bool curl_loop_up(void);

/* The main config's http section (NULL before init). */
const struct http_config *curl_loop_config(void);

/* Queue job (the easy handle's CURLOPT_PRIVATE becomes job). ctx may be
 * NULL; a dead or orphaned ctx completes the job cancelled. 0, or -1
 * (not up); then done never runs. */
int curl_job_start(struct curl_job *job, const postern_ctx *ctx);

/* Stop the job: done will not run. When this returns the easy handle is
 * out of the multi, unless this ran inside a libcurl callback; then
 * release() runs once it is. */
void curl_job_cancel(struct curl_job *job);

/* --- for the tests --- */
size_t curl_loop_running(void);
size_t curl_loop_queued(void);

#endif
