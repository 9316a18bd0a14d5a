/*
 * postern/curl.h - run a libcurl transfer a module configured on the
 * core's loop. Since ABI 1.2.
 *
 * For what postern/http.h does not cover (SMTP to a next hop, other
 * protocols): the module builds a CURL easy handle with the options it
 * needs, links libcurl itself (pkg-config libcurl), and hands the handle
 * to the core, which runs it on the same multi handle as postern_http_*
 * (one connection cache, the same http.max_in_flight cap and queue, the
 * same loop). Not included by postern/postern.h: include it by name.
 *
 * The module keeps the easy handle: it must not touch it (nor free it)
 * between postern_curl_perform() and the callback or
 * postern_curl_cancel(); it must not set CURLOPT_PRIVATE, which the core
 * uses. The module's own libcurl callbacks (read, write, ...) run on the
 * loop thread and may call postern_ functions.
 *
 * The callback and the hook context follow postern/http.h: it runs exactly
 * once, later, unless cancelled; when the context is orphaned or postern
 * stops, the transfer is aborted and the callback runs with
 * CURLE_ABORTED_BY_CALLBACK.
 *
 * A transfer aborted while it runs (orphaned context, shutdown,
 * postern_curl_cancel()) loses its CURLOPT_MAIL_RCPT before libcurl lets
 * go of it: otherwise libcurl would end a half-sent SMTP message with the
 * final dot, and the next hop would deliver it. Set it again to reuse the
 * handle.
 */
#ifndef POSTERN_CURL_H
#define POSTERN_CURL_H

#include <curl/curl.h>

#include "hook.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*postern_curl_cb)(void *arg, CURLcode result, CURL *easy);

typedef struct postern_curl_call postern_curl_call;

/* Start (or queue) the transfer. NULL if it could not start (out of
 * memory, the handle already running); then cb never runs. */
postern_curl_call *postern_curl_perform(postern_ctx *ctx, CURL *easy,
                                        postern_curl_cb cb, void *arg);

/* Stop caring: the transfer is aborted, cb will not run, and the easy
 * handle is the module's again when this returns. Only before cb ran. */
void postern_curl_cancel(postern_curl_call *call);

#ifdef __cplusplus
}
#endif
#endif
