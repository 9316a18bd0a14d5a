/*
 * test_http.c - the HTTP service (core/http.c, core/curl_loop.c): status
 * mapping, header lines, the request builder's checks, and on the libev
 * loop against a socket in this process that accepts and never answers:
 * "never from inside postern_http_send", the max_in_flight queue and its
 * timeout, cancellation, shutdown.
 *
 * Requests against a real server are in
 * tests/integration/test_http_service.py.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdbool.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#include "postern/postern.h"

#include "config.h"
#include "curl_loop.h"
#include "http.h"
#include "http_status.h"
#include "services.h"

static void
test_status_mapping(void **state)
{
    (void)state;
    assert_int_equal(http_status_from_curl(CURLE_OK, false, false),
                     POSTERN_HTTP_OK);
    assert_int_equal(
        http_status_from_curl(CURLE_OPERATION_TIMEDOUT, false, false),
        POSTERN_HTTP_TIMEOUT);
    assert_int_equal(http_status_from_curl(CURLE_COULDNT_CONNECT, false, false),
                     POSTERN_HTTP_CONNECT);
    assert_int_equal(
        http_status_from_curl(CURLE_COULDNT_RESOLVE_HOST, false, false),
        POSTERN_HTTP_CONNECT);
    assert_int_equal(
        http_status_from_curl(CURLE_PEER_FAILED_VERIFICATION, false, false),
        POSTERN_HTTP_TLS);
    assert_int_equal(
        http_status_from_curl(CURLE_SSL_CONNECT_ERROR, false, false),
        POSTERN_HTTP_TLS);
    assert_int_equal(
        http_status_from_curl(CURLE_SSL_CACERT_BADFILE, false, false),
        POSTERN_HTTP_TLS);
    assert_int_equal(http_status_from_curl(CURLE_WRITE_ERROR, true, false),
                     POSTERN_HTTP_TOO_LARGE);
    assert_int_equal(http_status_from_curl(CURLE_WRITE_ERROR, false, false),
                     POSTERN_HTTP_ERROR);
    assert_int_equal(
        http_status_from_curl(CURLE_FILESIZE_EXCEEDED, false, false),
        POSTERN_HTTP_TOO_LARGE);
    assert_int_equal(
        http_status_from_curl(CURLE_ABORTED_BY_CALLBACK, false, true),
        POSTERN_HTTP_BODY);
    assert_int_equal(
        http_status_from_curl(CURLE_ABORTED_BY_CALLBACK, false, false),
        POSTERN_HTTP_ERROR);
    assert_int_equal(http_status_from_curl(CURLE_SEND_FAIL_REWIND, false, true),
                     POSTERN_HTTP_BODY);
    assert_int_equal(http_status_from_curl(CURLE_URL_MALFORMAT, false, false),
                     POSTERN_HTTP_ERROR);
    assert_int_equal(http_status_from_curl(CURLE_GOT_NOTHING, false, false),
                     POSTERN_HTTP_ERROR);
    assert_string_equal(http_status_name(POSTERN_HTTP_TOO_LARGE), "too_large");
    assert_string_equal(http_status_name(POSTERN_HTTP_CANCELLED), "cancelled");
    assert_int_equal(http_version_number(CURL_HTTP_VERSION_1_1), 11);
    assert_int_equal(http_version_number(CURL_HTTP_VERSION_2_0), 20);
    assert_int_equal(http_version_number(0), 0);
}

static int
line(const char *s, char *name, char *value)
{
    const char *n, *v;
    size_t nl, vl;
    int kind = http_header_line(s, strlen(s), &n, &nl, &v, &vl);
    if (kind == 2) {
        snprintf(name, 64, "%.*s", (int)nl, n);
        snprintf(value, 64, "%.*s", (int)vl, v);
    }
    return kind;
}

static void
test_header_lines(void **state)
{
    char name[64], value[64];
    (void)state;
    assert_int_equal(line("HTTP/1.1 100 Continue\r\n", name, value), 1);
    assert_int_equal(line("HTTP/2 200\r\n", name, value), 1);
    assert_int_equal(line("X-Reply:  a b \t\r\n", name, value), 2);
    assert_string_equal(name, "X-Reply");
    assert_string_equal(value, "a b");
    assert_int_equal(line("Empty:\r\n", name, value), 2);
    assert_string_equal(value, "");
    assert_int_equal(line("Url: http://x:1/\n", name, value), 2);
    assert_string_equal(value, "http://x:1/");
    assert_int_equal(line("\r\n", name, value), 0);
    assert_int_equal(line(" folded\r\n", name, value), 0);
    assert_int_equal(line(": novalue\r\n", name, value), 0);
    assert_int_equal(line("bad name: x\r\n", name, value), 0);
    assert_int_equal(line("garbage\r\n", name, value), 0);
}

static void
test_request_builder(void **state)
{
    (void)state;
    assert_null(postern_http_request_new("GET", "ftp://127.0.0.1/"));
    assert_null(postern_http_request_new("GET", "file:///etc/passwd"));
    assert_null(postern_http_request_new("GET", "http://a/\r\nX: y"));
    assert_null(postern_http_request_new("GE T", "http://a/"));
    assert_null(postern_http_request_new("", "http://a/"));
    assert_null(postern_http_request_new(NULL, "http://a/"));
    postern_http_request *req =
        postern_http_request_new("PUT", "HTTPS://127.0.0.1/x");
    assert_non_null(req);
    assert_int_equal(postern_http_request_header(req, "X-A", "b"), 0);
    assert_int_equal(postern_http_request_header(req, "X-A", "b\r\nX-C: d"),
                     -1);
    assert_int_equal(postern_http_request_header(req, "", "b"), -1);
    assert_int_equal(postern_http_request_header(req, "X:A", "b"), -1);
    assert_int_equal(postern_http_request_header(req, "X A", "b"), -1);
    assert_int_equal(postern_http_request_body(req, "abc", 3), 0);
    assert_int_equal(postern_http_request_body(req, NULL, 3), -1);
    postern_http_body_source src = {.size = -1};
    assert_int_equal(postern_http_request_body_source(req, &src), -1);
    postern_http_tls tls = {.cert_file = "c.pem"}; /* no key */
    assert_int_equal(postern_http_request_tls(req, &tls), -1);
    tls.key_file = "k.pem";
    assert_int_equal(postern_http_request_tls(req, &tls), 0);
    postern_http_request_free(req);
    /* Not up: send takes the request and fails. */
    req = postern_http_request_new("GET", "http://127.0.0.1/");
    assert_null(postern_http_send(NULL, req, NULL, NULL));
}

/* --- on the loop --- */

static struct ev_loop *loop;
static int listen_fd;
static char url[64];
static struct http_config hcfg;

struct outcome {
    bool done;
    int calls;
    postern_http_status status;
    char error[128];
};

static bool in_send;
static bool called_inside;

static void
on_done(void *arg, postern_http_status status,
        const postern_http_response *resp)
{
    struct outcome *o = arg;
    if (in_send)
        called_inside = true;
    o->done = true;
    o->calls++;
    o->status = status;
    snprintf(o->error, sizeof(o->error), "%s",
             postern_http_response_error(resp));
}

static void
on_never(void *arg, postern_http_status status,
         const postern_http_response *resp)
{
    fail_msg("the callback of a cancelled call ran");
}

static ev_timer guard;
static bool guard_fired;

static void
on_guard(struct ev_loop *l, ev_timer *w, int revents)
{
    guard_fired = true;
}

static void
run_until(const bool *flag)
{
    guard_fired = false;
    ev_timer_init(&guard, on_guard, 10., 0.);
    ev_timer_start(loop, &guard);
    while (!*flag && !guard_fired)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &guard);
    assert_false(guard_fired);
}

static postern_http_call *
send_get(double timeout, postern_http_cb cb, struct outcome *o)
{
    postern_http_request *req = postern_http_request_new("GET", url);
    assert_non_null(req);
    postern_http_request_timeout(req, timeout);
    in_send = true;
    postern_http_call *call = postern_http_send(NULL, req, cb, o);
    in_send = false;
    return call;
}

static int
setup(void **state)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);
    char err[256];

    loop = ev_default_loop(0);
    services_init(loop);
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    /* Listening, never accepting: the kernel completes the handshake and
     * the request sits unanswered. */
    if (listen_fd < 0 ||
        bind(listen_fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
        listen(listen_fd, 16) < 0 ||
        getsockname(listen_fd, (struct sockaddr *)&sin, &len) < 0)
        return -1;
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/", ntohs(sin.sin_port));
    hcfg = (struct http_config){.max_in_flight = 1, .timeout = 30};
    called_inside = false;
    return curl_loop_init(loop, &hcfg, err, sizeof(err));
}

static int
teardown(void **state)
{
    curl_loop_shutdown();
    http_spares_free();
    close(listen_fd);
    return 0;
}

static void
test_queue_timeout_and_cap(void **state)
{
    struct outcome a = {0}, b = {0};
    assert_non_null(send_get(30, on_done, &a));
    assert_non_null(send_get(0.2, on_done, &b));
    assert_false(a.done);
    assert_false(b.done);
    ev_run(loop, EVRUN_NOWAIT);
    assert_int_equal(curl_loop_running(), 1); /* the cap */
    assert_int_equal(curl_loop_queued(), 1);
    run_until(&b.done);
    /* b ran out of time in the queue, never started; a still runs. */
    assert_int_equal(b.status, POSTERN_HTTP_TIMEOUT);
    assert_int_equal(b.calls, 1);
    assert_false(a.done);
    assert_int_equal(curl_loop_running(), 1);
    assert_int_equal(curl_loop_queued(), 0);
    assert_false(called_inside);
    /* Shutdown tells a. */
    curl_loop_shutdown();
    http_spares_free();
    assert_true(a.done);
    assert_int_equal(a.status, POSTERN_HTTP_CANCELLED);
    assert_int_equal(a.calls, 1);
    assert_null(send_get(1, on_done, &a)); /* down */
    char err[256];
    assert_int_equal(curl_loop_init(loop, &hcfg, err, sizeof(err)), 0);
}

static void
test_running_call_times_out(void **state)
{
    struct outcome a = {0};
    assert_non_null(send_get(0.2, on_done, &a));
    run_until(&a.done);
    assert_int_equal(a.status, POSTERN_HTTP_TIMEOUT);
    assert_true(strlen(a.error) > 0);
    assert_false(called_inside);
}

static void
test_cancel(void **state)
{
    struct outcome a = {0}, b = {0};
    postern_http_call *queued, *running;
    running = send_get(30, on_never, NULL);
    queued = send_get(30, on_never, NULL);
    assert_non_null(running);
    assert_non_null(queued);
    ev_run(loop, EVRUN_NOWAIT);
    assert_int_equal(curl_loop_running(), 1);
    postern_http_cancel(queued);
    postern_http_cancel(running);
    assert_int_equal(curl_loop_running(), 0);
    assert_int_equal(curl_loop_queued(), 0);
    /* Cancelled before the loop ever ran it. */
    postern_http_cancel(send_get(30, on_never, NULL));
    /* The slot is free for the next call. */
    assert_non_null(send_get(0.2, on_done, &a));
    ev_run(loop, EVRUN_NOWAIT);
    assert_int_equal(curl_loop_running(), 1);
    run_until(&a.done);
    assert_int_equal(a.status, POSTERN_HTTP_TIMEOUT);
    (void)b;
}

static void
test_connection_refused(void **state)
{
    struct outcome a = {0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd); /* bound, never listened: nobody there */
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/", ntohs(sin.sin_port));
    assert_non_null(send_get(5, on_done, &a));
    run_until(&a.done);
    assert_int_equal(a.status, POSTERN_HTTP_CONNECT);
    assert_true(strlen(a.error) > 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_mapping),
        cmocka_unit_test(test_header_lines),
        cmocka_unit_test(test_request_builder),
        cmocka_unit_test_setup_teardown(test_queue_timeout_and_cap, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_running_call_times_out, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_refused, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
