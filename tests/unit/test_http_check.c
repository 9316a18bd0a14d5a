/*
 * test_http_check.c - the http_check module over the mock core and its
 * fake HTTP service (mock_http.h): the request (URL, headers, the JSON
 * description of each stage, the header section of the message), the answer
 * mapped to a result, reply and headers, every kind of bad answer and service
 * failure with each on_error, a cancelled call, and config errors.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mock_core.h"
#include "mock_http.h"

#define URL "http://127.0.0.1:9/policy"
#define CONFIG "{\"url\": \"" URL "\"}"

static int
setup(void **state)
{
    (void)state;
    mock_reset();
    mock_set_client("192.0.2.1", 40000);
    mock_set_helo("client.example.org", 1);
    mock_set_mail_from("alice@example.org");
    mock_add_mail_param("SIZE", "1234");
    mock_add_mail_param("BODY", "8BITMIME");
    mock_add_rcpt("first@example.com");
    mock_set_rcpt_current("bob@example.com");
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    mock_cleanup();
    return 0;
}

static postern_result
call(postern_hook hook, void *inst)
{
    return postern_module_descriptor.handlers[hook](mock_ctx(), inst);
}

/* The request body of the waiting call, parsed. */
static json_t *
request_json(void)
{
    json_error_t jerr;
    const char *body = mock_http_body(0, NULL, NULL);

    assert_non_null(body);
    json_t *root = json_loads(body, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        fail_msg("request is not JSON: %s: %s", jerr.text, body);
    return root;
}

static const char *
str_at(json_t *root, const char *path)
{
    json_t *v = root;
    char buf[128];

    snprintf(buf, sizeof buf, "%s", path);
    for (char *key = strtok(buf, "."); key; key = strtok(NULL, "."))
        v = json_object_get(v, key);
    if (!json_is_string(v))
        fail_msg("%s: not a string", path);
    return json_string_value(v);
}

/* Answer the oldest request with code and a JSON body. */
static int
answer(int code, const char *body)
{
    return mock_http_respond(code, "Content-Type: application/json", body,
                             strlen(body));
}

/* Call hook, answer it with code and body, return the resumed result. */
static postern_result
decide(void *inst, postern_hook hook, int code, const char *body)
{
    int resumes = mock_resume_count();

    assert_int_equal(call(hook, inst), POSTERN_PENDING);
    assert_int_equal(mock_http_pending(), 1);
    assert_int_equal(mock_resume_count(), resumes);
    assert_int_equal(answer(code, body), 1);
    assert_int_equal(mock_resume_count(), resumes + 1);
    return mock_last_resume();
}

static void
test_rcpt_request(void **state)
{
    (void)state;
    void *inst = mock_create("{\"url\": \"" URL "\", \"token\": \"s3cret\", "
                             "\"timeout\": 2.5}",
                             0);
    mock_set_rdns("client.example.org");
    mock_set_tls(1);
    mock_set_tls_info("TLS1.3", "AES-256-GCM");

    assert_int_equal(call(POSTERN_HOOK_RCPT, inst), POSTERN_PENDING);
    assert_string_equal(mock_http_method(0), "POST");
    assert_string_equal(mock_http_url(0), URL);
    assert_string_equal(mock_http_header(0, "Content-Type"),
                        "application/json");
    assert_string_equal(mock_http_header(0, "Authorization"), "Bearer s3cret");
    assert_true(mock_http_timeout(0) == 2.5);

    json_t *req = request_json();
    assert_string_equal(str_at(req, "stage"), "rcpt");
    assert_string_equal(str_at(req, "session.id"), "0123456789abcdef");
    assert_string_equal(str_at(req, "session.client.address"), "192.0.2.1");
    assert_int_equal(
        json_integer_value(json_object_get(
            json_object_get(json_object_get(req, "session"), "client"),
            "port")),
        40000);
    assert_string_equal(str_at(req, "session.client.rdns"),
                        "client.example.org");
    assert_string_equal(str_at(req, "session.helo"), "client.example.org");
    assert_string_equal(str_at(req, "session.tls.version"), "TLS1.3");
    assert_string_equal(str_at(req, "session.tls.cipher"), "AES-256-GCM");
    assert_true(
        json_is_null(json_object_get(json_object_get(req, "session"), "auth")));
    assert_string_equal(str_at(req, "transaction.id"), "fedcba9876543210");
    assert_string_equal(str_at(req, "transaction.sender"), "alice@example.org");
    assert_string_equal(str_at(req, "transaction.params.SIZE"), "1234");
    assert_string_equal(str_at(req, "transaction.params.BODY"), "8BITMIME");
    json_t *rcpts =
        json_object_get(json_object_get(req, "transaction"), "recipients");
    assert_int_equal(json_array_size(rcpts), 1);
    assert_string_equal(json_string_value(json_array_get(rcpts, 0)),
                        "first@example.com");
    assert_string_equal(str_at(req, "recipient"), "bob@example.com");
    assert_null(json_object_get(req, "headers"));
    json_decref(req);

    answer(200, "{\"action\": \"continue\"}");
    assert_int_equal(mock_last_resume(), POSTERN_CONTINUE);
    assert_int_equal(mock_last_reply()->count, 0);
    postern_module_descriptor.destroy(inst);
}

static void
test_connect_request_has_no_transaction(void **state)
{
    (void)state;
    void *inst = mock_create(CONFIG, 0);
    mock_set_transaction_id(NULL);
    mock_set_helo(NULL, 0);

    assert_int_equal(call(POSTERN_HOOK_CONNECT, inst), POSTERN_PENDING);
    json_t *req = request_json();
    assert_string_equal(str_at(req, "stage"), "connect");
    assert_true(json_is_null(json_object_get(req, "transaction")));
    assert_true(
        json_is_null(json_object_get(json_object_get(req, "session"), "helo")));
    assert_true(
        json_is_null(json_object_get(json_object_get(req, "session"), "tls")));
    assert_null(json_object_get(req, "recipient"));
    json_decref(req);
    answer(200, "{\"action\": \"accept\"}");
    assert_int_equal(mock_last_resume(), POSTERN_ACCEPT);
    postern_module_descriptor.destroy(inst);
}

static const char MESSAGE[] =
    "Received: from client.example.org by mx.test;\r\n"
    "\tMon, 30 Nov 2026 20:00:00 +0000\r\n"
    "Subject: hello\r\n"
    "X-Long: one\r\n"
    "  two\r\n"
    "X-Bytes: caf\xe9\r\n"
    "\r\n"
    "Subject: not a header\r\n";

static json_t *
message_headers(void *inst, json_t **req_out)
{
    assert_int_equal(call(POSTERN_HOOK_MESSAGE, inst), POSTERN_PENDING);
    json_t *req = request_json();
    *req_out = req;
    return json_object_get(req, "headers");
}

static void
test_message_headers(void **state)
{
    (void)state;
    void *inst = mock_create(CONFIG, 0);
    mock_set_message(MESSAGE, sizeof MESSAGE - 1);
    mock_set_read_chunk(7); /* the end of the section across reads */

    json_t *req;
    json_t *headers = message_headers(inst, &req);
    assert_string_equal(str_at(req, "stage"), "message");
    assert_int_equal(json_integer_value(json_object_get(req, "size")),
                     sizeof MESSAGE - 1);
    assert_true(json_is_true(json_object_get(req, "headers_complete")));
    assert_int_equal(json_array_size(headers), 4);
    const char *expect[][2] = {
        {"Received", "from client.example.org by mx.test;\tMon, 30 Nov 2026 "
                     "20:00:00 +0000"},
        {"Subject", "hello"},
        {"X-Long", "one  two"},
        {"X-Bytes", "caf\xef\xbf\xbd"}, /* not UTF-8: U+FFFD */
    };
    for (size_t i = 0; i < 4; i++) {
        json_t *h = json_array_get(headers, i);
        assert_string_equal(json_string_value(json_object_get(h, "name")),
                            expect[i][0]);
        assert_string_equal(json_string_value(json_object_get(h, "value")),
                            expect[i][1]);
    }
    json_decref(req);
    answer(200, "{\"action\": \"continue\"}");
    assert_int_equal(mock_readers_open(), 0);
    postern_module_descriptor.destroy(inst);
}

static void
test_message_header_limit(void **state)
{
    (void)state;
    void *inst = mock_create("{\"url\": \"" URL "\", "
                             "\"max_header_bytes\": 1024}",
                             0);
    /* 40 fields of 30 bytes: the section goes on beyond 1024 bytes. */
    char msg[2048] = "";
    for (int i = 0; i < 40; i++)
        snprintf(msg + strlen(msg), sizeof msg - strlen(msg),
                 "X-Field-%02d: 0123456789abcdef\r\n", i);
    strcat(msg, "\r\nbody\r\n");
    mock_set_message(msg, strlen(msg));

    json_t *req;
    json_t *headers = message_headers(inst, &req);
    assert_true(json_is_false(json_object_get(req, "headers_complete")));
    /* 1024 / 30: 34 whole lines; the last of them might go on. */
    assert_int_equal(json_array_size(headers), 33);
    json_decref(req);
    answer(200, "{\"action\": \"continue\"}");

    /* A message that is all header section, without a line end. */
    mock_set_message("Subject: only", 13);
    headers = message_headers(inst, &req);
    assert_true(json_is_true(json_object_get(req, "headers_complete")));
    assert_int_equal(json_array_size(headers), 1);
    json_decref(req);
    answer(200, "{\"action\": \"continue\"}");

    /* The message cannot be read: on_error, no call. */
    mock_set_reader(MOCK_READER_OPEN_FAILS, 0);
    assert_int_equal(call(POSTERN_HOOK_MESSAGE, inst), POSTERN_TEMPFAIL);
    assert_int_equal(mock_http_pending(), 0);
    postern_module_descriptor.destroy(inst);
}

static void
test_answers(void **state)
{
    (void)state;
    void *inst = mock_create(CONFIG, 0);

    assert_int_equal(decide(inst, POSTERN_HOOK_RCPT, 200,
                            "{\"action\": \"reject\", \"code\": 550, "
                            "\"enhanced\": \"5.7.1\", \"text\": \"No "
                            "thanks\"}"),
                     POSTERN_REJECT);
    assert_int_equal(mock_last_reply()->code, 550);
    assert_string_equal(mock_last_reply()->enhanced, "5.7.1");
    assert_string_equal(mock_last_reply()->text, "No thanks");

    assert_int_equal(decide(inst, POSTERN_HOOK_MAIL, 200,
                            "{\"action\": \"tempfail\", \"code\": 450, "
                            "\"text\": \"Later\"}"),
                     POSTERN_TEMPFAIL);
    assert_int_equal(mock_last_reply()->code, 450);
    assert_string_equal(mock_last_reply()->enhanced, "");

    assert_int_equal(decide(inst, POSTERN_HOOK_HELO, 200,
                            "{\"action\": \"disconnect\", \"text\": \"Bye\"}"),
                     POSTERN_DISCONNECT);
    assert_int_equal(mock_last_reply()->code, 421);
    assert_string_equal(mock_last_reply()->text, "Bye");

    /* A greeting refusal is 554 whatever 5xx the service chose. */
    assert_int_equal(decide(inst, POSTERN_HOOK_CONNECT, 200,
                            "{\"action\": \"reject\", \"code\": 550}"),
                     POSTERN_REJECT);
    assert_int_equal(mock_last_reply()->code, 554);

    int replies = mock_last_reply()->count;
    assert_int_equal(decide(inst, POSTERN_HOOK_RCPT, 201,
                            "{\"action\": \"accept\", \"headers\": [{\"name\": "
                            "\"X-Policy\", \"value\": \"ok; score=1\"}]}"),
                     POSTERN_ACCEPT);
    assert_int_equal(mock_last_reply()->count, replies); /* stage default */
    assert_int_equal(mock_header_count(), 1);
    assert_string_equal(mock_header_name(0), "X-Policy");
    assert_string_equal(mock_header_value(0), "ok; score=1");
    assert_true(mock_log_find(POSTERN_LOG_INFO, "stage=rcpt action=accept") >=
                0);
    postern_module_descriptor.destroy(inst);
}

/* Each of these answers is a service failure: the default on_error gives
 * 451 4.3.0 and a warning naming what was wrong. */
static void
test_bad_answers(void **state)
{
    (void)state;
    static const struct {
        postern_hook hook;
        int status;
        const char *body, *why;
    } cases[] = {
        {POSTERN_HOOK_RCPT, 200, "not json", "not JSON"},
        {POSTERN_HOOK_RCPT, 200, "", "not JSON"},
        {POSTERN_HOOK_RCPT, 200, "[]", "expected a JSON object"},
        {POSTERN_HOOK_RCPT, 200, "{}", "action: expected"},
        {POSTERN_HOOK_RCPT, 200, "{\"action\": \"maybe\"}", "action: expected"},
        {POSTERN_HOOK_RCPT, 200, "{\"action\": \"reject\", \"code\": 451}",
         "code: expected a 5xx"},
        {POSTERN_HOOK_RCPT, 200, "{\"action\": \"accept\", \"code\": 550}",
         "code: expected a 2xx"},
        {POSTERN_HOOK_RCPT, 200,
         "{\"action\": \"tempfail\", \"code\": \"451\"}",
         "code: expected a 4xx"},
        {POSTERN_HOOK_RCPT, 200, "{\"action\": \"disconnect\", \"code\": 451}",
         "code: expected 421"},
        {POSTERN_HOOK_RCPT, 200, "{\"action\": \"continue\", \"code\": 250}",
         "code: not allowed"},
        {POSTERN_HOOK_RCPT, 200,
         "{\"action\": \"reject\", \"enhanced\": \"4.7.1\"}", "enhanced"},
        {POSTERN_HOOK_RCPT, 200,
         "{\"action\": \"reject\", \"enhanced\": \"5.7\"}", "enhanced"},
        {POSTERN_HOOK_RCPT, 200, "{\"action\": \"reject\", \"text\": 5}",
         "text: expected"},
        {POSTERN_HOOK_RCPT, 200,
         "{\"action\": \"reject\", \"text\": \"a\\nb\"}", "text: expected"},
        {POSTERN_HOOK_RCPT, 200, "{\"action\": \"reject\", \"colour\": 1}",
         "colour: unknown key"},
        {POSTERN_HOOK_RCPT, 200,
         "{\"action\": \"accept\", \"action\": \"reject\"}", "not JSON"},
        {POSTERN_HOOK_RCPT, 200,
         "{\"action\": \"accept\", \"headers\": [{\"name\": \"X A\", "
         "\"value\": \"v\"}]}",
         "headers[0]"},
        {POSTERN_HOOK_RCPT, 200,
         "{\"action\": \"accept\", \"headers\": [{\"name\": \"X-A\", "
         "\"value\": \"v\\r\\nBcc: x\"}]}",
         "headers[0]"},
        {POSTERN_HOOK_RCPT, 200,
         "{\"action\": \"accept\", \"headers\": {\"name\": \"X-A\"}}",
         "headers: expected an array"},
        {POSTERN_HOOK_HELO, 200,
         "{\"action\": \"accept\", \"headers\": [{\"name\": \"X-A\", "
         "\"value\": \"v\"}]}",
         "no message"},
        {POSTERN_HOOK_RCPT, 500, "{\"action\": \"continue\"}",
         "HTTP status 500"},
        {POSTERN_HOOK_RCPT, 302, "", "HTTP status 302"},
    };
    void *inst = mock_create(CONFIG, 0);

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t logs = mock_log_count();
        if (decide(inst, cases[i].hook, cases[i].status, cases[i].body) !=
            POSTERN_TEMPFAIL)
            fail_msg("case %zu (%s): not TEMPFAIL", i, cases[i].body);
        assert_int_equal(mock_last_reply()->code, 451);
        assert_string_equal(mock_last_reply()->enhanced, "4.3.0");
        int at = mock_log_find(POSTERN_LOG_WARNING, cases[i].why);
        if (at < (int)logs)
            fail_msg("case %zu (%s): no warning with \"%s\"", i, cases[i].body,
                     cases[i].why);
        assert_non_null(strstr(mock_log_text((size_t)at), "on_error=tempfail"));
        assert_int_equal(mock_header_count(), 0);
        mock_reset(); /* the log from scratch for the next case */
        mock_set_mail_from("alice@example.org");
        mock_set_rcpt_current("bob@example.com");
    }
    postern_module_descriptor.destroy(inst);
}

static void
test_service_failures_and_on_error(void **state)
{
    (void)state;
    static const struct {
        postern_http_status status;
        const char *error;
    } failures[] = {
        {POSTERN_HTTP_TIMEOUT, "error=timeout"},
        {POSTERN_HTTP_CONNECT, "error=connect"},
        {POSTERN_HTTP_TLS, "error=tls"},
        {POSTERN_HTTP_TOO_LARGE, "error=too_large"},
        {POSTERN_HTTP_ERROR, "error=http"},
    };
    static const struct {
        const char *config;
        postern_result result;
        int code;
    } modes[] = {
        {CONFIG, POSTERN_TEMPFAIL, 451},
        {"{\"url\": \"" URL "\", \"on_error\": \"continue\"}", POSTERN_CONTINUE,
         0},
        {"{\"url\": \"" URL "\", \"on_error\": \"reject\"}", POSTERN_REJECT,
         550},
    };

    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        for (size_t f = 0; f < sizeof failures / sizeof failures[0]; f++) {
            setup(NULL);
            void *inst = mock_create(modes[m].config, 0);
            assert_int_equal(call(POSTERN_HOOK_RCPT, inst), POSTERN_PENDING);
            mock_http_fail(failures[f].status, "mock failure");
            assert_int_equal(mock_resume_count(), 1);
            assert_int_equal(mock_last_resume(), modes[m].result);
            if (modes[m].code)
                assert_int_equal(mock_last_reply()->code, modes[m].code);
            else
                assert_int_equal(mock_last_reply()->count, 0);
            assert_true(mock_log_find(POSTERN_LOG_WARNING, failures[f].error) >=
                        0);
            assert_true(mock_log_find(POSTERN_LOG_WARNING, "mock failure") >=
                        0);
            postern_module_descriptor.destroy(inst);
        }
    }
    /* At the greeting, a temporary failure is 421. */
    setup(NULL);
    void *inst = mock_create(CONFIG, 0);
    assert_int_equal(call(POSTERN_HOOK_CONNECT, inst), POSTERN_PENDING);
    mock_http_fail(POSTERN_HTTP_CONNECT, "mock failure");
    assert_int_equal(mock_last_resume(), POSTERN_TEMPFAIL);
    assert_int_equal(mock_last_reply()->code, 421);

    /* The request cannot start: decided at once, never pending. */
    mock_http_refuse(1);
    assert_int_equal(call(POSTERN_HOOK_RCPT, inst), POSTERN_TEMPFAIL);
    assert_int_equal(mock_resume_count(), 1);
    assert_int_equal(mock_http_pending(), 0);
    postern_module_descriptor.destroy(inst);
}

static void
test_cancelled(void **state)
{
    (void)state;
    void *inst = mock_create(CONFIG, 0);

    /* The client left: the core cancels the call; the module resumes once
     * and replies nothing. */
    assert_int_equal(call(POSTERN_HOOK_RCPT, inst), POSTERN_PENDING);
    assert_int_equal(mock_http_tied(0), 1);
    mock_set_orphaned(1);
    assert_int_equal(mock_http_cancel_all(), 1);
    assert_int_equal(mock_resume_count(), 1);
    assert_int_equal(mock_last_reply()->count, 0);

    /* An answer that arrives for an orphaned context is not applied. */
    mock_set_orphaned(0);
    assert_int_equal(call(POSTERN_HOOK_RCPT, inst), POSTERN_PENDING);
    mock_set_orphaned(1);
    answer(200, "{\"action\": \"accept\", \"headers\": [{\"name\": "
                "\"X-A\", \"value\": \"v\"}]}");
    assert_int_equal(mock_resume_count(), 2);
    assert_int_equal(mock_header_count(), 0);
    postern_module_descriptor.destroy(inst);
}

static void
expect_error(const char *config, const char *path, const char *text)
{
    mock_reset();
    assert_null(mock_create(config, 0));
    assert_string_equal(mock_init_error_path(), path);
    if (strstr(mock_init_error_text(), text) == NULL)
        fail_msg("error %s: %s, expected %s", path, mock_init_error_text(),
                 text);
}

static void
test_config(void **state)
{
    (void)state;
    char cfg[1024];
    const char *pem = "/dev/null"; /* readable: all create() checks */

    snprintf(cfg, sizeof cfg,
             "{\"url\": \"https://policy.example:8443/check\", \"timeout\": "
             "3, \"ca_file\": \"%s\", \"cert_file\": \"%s\", \"key_file\": "
             "\"%s\", \"token\": \"abc\", \"on_error\": \"continue\", "
             "\"max_header_bytes\": 2048}",
             pem, pem, pem);
    void *inst = mock_create(cfg, 1);
    assert_non_null(inst);
    assert_int_equal(call(POSTERN_HOOK_RCPT, inst), POSTERN_PENDING);
    assert_string_equal(mock_http_ca_file(0), pem);
    answer(200, "{\"action\": \"continue\"}");
    postern_module_descriptor.destroy(inst);

    expect_error("{}", "url", "expected the policy service's URL");
    expect_error("{\"url\": 5}", "url", "http:// or https://");
    expect_error("{\"url\": \"ftp://x/\"}", "url", "http:// or https://");
    expect_error("{\"url\": \"http://\"}", "url", "http:// or https://");
    expect_error("{\"url\": \"http://a b/\"}", "url", "http:// or https://");
    expect_error("{\"url\": \"" URL "\", \"timeout\": 0}", "timeout",
                 "above 0");
    expect_error("{\"url\": \"" URL "\", \"timeout\": 301}", "timeout",
                 "at most 300");
    expect_error("{\"url\": \"https://x/\", \"ca_file\": \"/nonexistent\"}",
                 "ca_file", "readable file");
    expect_error("{\"url\": \"https://x/\", \"ca_file\": \"\"}", "ca_file",
                 "PEM file");
    snprintf(cfg, sizeof cfg,
             "{\"url\": \"https://x/\", \"cert_file\": \"%s\"}", pem);
    expect_error(cfg, "key_file", "with cert_file");
    snprintf(cfg, sizeof cfg, "{\"url\": \"" URL "\", \"ca_file\": \"%s\"}",
             pem);
    expect_error(cfg, "ca_file", "https://");
    expect_error("{\"url\": \"" URL "\", \"token\": \"a b\"}", "token",
                 "bearer token");
    expect_error("{\"url\": \"" URL "\", \"token\": \"\"}", "token",
                 "bearer token");
    expect_error("{\"url\": \"" URL "\", \"on_error\": \"accept\"}", "on_error",
                 "\"tempfail\", \"continue\" or \"reject\"");
    expect_error("{\"url\": \"" URL "\", \"max_header_bytes\": 10}",
                 "max_header_bytes", "between 1024 and 1048576");
    expect_error("{\"url\": \"" URL "\", \"urls\": []}", "urls", "unknown key");
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_rcpt_request),
        T(test_connect_request_has_no_transaction),
        T(test_message_headers),
        T(test_message_header_limit),
        T(test_answers),
        T(test_bad_answers),
        T(test_service_failures_and_on_error),
        T(test_cancelled),
        T(test_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
