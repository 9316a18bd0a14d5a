/*
 * test_store_http.c - the store_http module over the fake core and a fake
 * HTTP service (defined here): the document streamed through the body
 * source decodes to the exact message, chunk boundaries and rewinds
 * included; the answers (id, reject, defer, failure statuses); failover
 * and retry rounds on timers inside the deadline; the HMAC signature;
 * cancellation; config errors. Every path resumes once and leaves no
 * reader open.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "mock_core.h"

#define ID "a1b2c3d4e5f60718"

/* --- the fake HTTP service ------------------------------------------------ */

struct postern_http_request {
    char url[256];
    char headers[16][512];
    size_t n_headers;
    postern_http_body_source src;
    int has_src;
    double timeout;
    int has_tls;
    char ca_file[256];
};

struct postern_http_response {
    int code;
    const char *body;
    size_t len;
};

static struct {
    struct postern_http_request *req; /* the call in flight, or NULL */
    postern_http_cb cb;
    void *arg;
    int sent, cancelled;
    char urls[16][256]; /* of every call, in order */
} fh;

postern_http_request *
postern_http_request_new(const char *method, const char *url)
{
    if (strcmp(method, "POST") != 0 || strncmp(url, "http", 4) != 0)
        return NULL;
    struct postern_http_request *req = calloc(1, sizeof *req);
    assert_non_null(req);
    snprintf(req->url, sizeof req->url, "%s", url);
    return req;
}

int
postern_http_request_header(postern_http_request *req, const char *name,
                            const char *value)
{
    assert_true(req->n_headers < 16);
    snprintf(req->headers[req->n_headers++], 512, "%s: %s", name, value);
    return 0;
}

int
postern_http_request_body(postern_http_request *req, const void *data,
                          size_t len)
{
    (void)req;
    (void)data;
    (void)len;
    fail_msg("store_http must stream its body");
    return -1;
}

int
postern_http_request_body_source(postern_http_request *req,
                                 const postern_http_body_source *src)
{
    req->src = *src;
    req->has_src = 1;
    return 0;
}

void
postern_http_request_timeout(postern_http_request *req, double seconds)
{
    req->timeout = seconds;
}

void
postern_http_request_max_response(postern_http_request *req, size_t bytes)
{
    (void)req;
    (void)bytes;
}

int
postern_http_request_tls(postern_http_request *req, const postern_http_tls *tls)
{
    req->has_tls = 1;
    snprintf(req->ca_file, sizeof req->ca_file, "%s",
             tls->ca_file ? tls->ca_file : "");
    return 0;
}

void
postern_http_request_free(postern_http_request *req)
{
    free(req);
}

int
postern_http_response_code(const postern_http_response *resp)
{
    return resp ? resp->code : 0;
}

int
postern_http_response_version(const postern_http_response *resp)
{
    return resp ? 11 : 0;
}

const char *
postern_http_response_header(const postern_http_response *resp,
                             const char *name)
{
    (void)resp;
    (void)name;
    return NULL;
}

const char *
postern_http_response_body(const postern_http_response *resp, size_t *len)
{
    *len = resp ? resp->len : 0;
    return resp ? resp->body : "";
}

const char *
postern_http_response_error(const postern_http_response *resp)
{
    return resp && resp->code ? "" : "fake failure";
}

postern_http_call *
postern_http_send(postern_ctx *ctx, postern_http_request *req,
                  postern_http_cb cb, void *arg)
{
    (void)ctx;
    assert_null(fh.req); /* one call at a time per message */
    assert_true(req->has_src);
    fh.req = req;
    fh.cb = cb;
    fh.arg = arg;
    snprintf(fh.urls[fh.sent++ % 16], 256, "%s", req->url);
    return (postern_http_call *)&fh;
}

void
postern_http_cancel(postern_http_call *call)
{
    assert_ptr_equal(call, &fh);
    fh.cancelled++;
    free(fh.req);
    fh.req = NULL;
}

/* The header named name of the call in flight, or NULL. */
static const char *
fh_header(const char *name)
{
    size_t len = strlen(name);

    for (size_t i = 0; fh.req && i < fh.req->n_headers; i++)
        if (strncmp(fh.req->headers[i], name, len) == 0 &&
            fh.req->headers[i][len] == ':')
            return fh.req->headers[i] + len + 2;
    return NULL;
}

/* The whole body of the call in flight, read in odd-sized pieces; its
 * length must be the announced size. */
static char *
fh_body(size_t *out_len)
{
    const postern_http_body_source *src = &fh.req->src;
    char *buf = malloc((size_t)src->size + 1);
    size_t n = 0;

    assert_non_null(buf);
    for (;;) {
        size_t want = 1 + (n * 7919) % 70001; /* odd sizes */
        if (want > (size_t)src->size + 1 - n)
            want = (size_t)src->size + 1 - n;
        ssize_t got = src->read(src->arg, buf + n, want);
        assert_true(got >= 0);
        if (got == 0)
            break;
        n += (size_t)got;
        assert_true(n <= (size_t)src->size);
    }
    assert_int_equal(n, (size_t)src->size);
    buf[n] = '\0';
    *out_len = n;
    return buf;
}

/* End the call in flight: status, and for OK a code and body. */
static void
fh_answer(postern_http_status status, int code, const char *body)
{
    struct postern_http_response resp = {code, body ? body : "",
                                         body ? strlen(body) : 0};
    postern_http_cb cb = fh.cb;
    void *arg = fh.arg;

    assert_non_null(fh.req);
    free(fh.req);
    fh.req = NULL;
    cb(arg, status, status == POSTERN_HTTP_OK ? &resp : NULL);
}

/* --- helpers ---------------------------------------------------------------
 */

static unsigned char *message;
static size_t message_len;

static void
set_message(size_t len)
{
    free(message);
    message = malloc(len);
    assert_non_null(message);
    for (size_t i = 0; i < len; i++)
        message[i] = (unsigned char)((i * 131 + i / 997) & 0xff);
    message_len = len;
    mock_set_message(message, len);
}

static int
setup(void **state)
{
    (void)state;
    mock_reset();
    memset(&fh, 0, sizeof fh);
    mock_set_session_id("0011223344556677");
    mock_set_client("192.0.2.7", 40123);
    mock_set_helo("client.example", 1);
    mock_set_transaction_id(ID);
    mock_set_mail_from("alice@example.org");
    mock_add_mail_param("SIZE", "1234");
    mock_add_mail_param("BODY", "8BITMIME");
    mock_add_rcpt("bob@example.com");
    mock_add_rcpt("carol@example.com");
    mock_set_now(1700000000.25);
    set_message(1000);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    free(fh.req);
    fh.req = NULL;
    mock_cleanup();
    free(message);
    message = NULL;
    return 0;
}

static postern_result
store(void *instance)
{
    return postern_module_descriptor.handlers[POSTERN_HOOK_STORE](mock_ctx(),
                                                                  instance);
}

/* Parse the document body and check the message in it decodes to the
 * message; returns the parsed document. */
static json_t *
check_document(const char *body, size_t len)
{
    json_error_t err;
    json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);

    if (doc == NULL)
        fail_msg("not JSON: %s at %d", err.text, err.position);
    json_t *msg = json_object_get(doc, "message");
    assert_string_equal(json_string_value(json_object_get(msg, "encoding")),
                        "base64");
    assert_int_equal(json_integer_value(json_object_get(msg, "size")),
                     message_len);
    const char *b64 = json_string_value(json_object_get(msg, "data"));
    assert_non_null(b64);
    gnutls_datum_t in = {(unsigned char *)b64, (unsigned)strlen(b64)}, out;
    assert_int_equal(gnutls_base64_decode2(&in, &out), 0);
    assert_int_equal(out.size, message_len);
    assert_memory_equal(out.data, message, message_len);
    gnutls_free(out.data);
    return doc;
}

/* --- tests ------------------------------------------------------------------
 */

static void
test_document_and_id(void **state)
{
    (void)state;
    void *mod = mock_create("{\"url\": \"http://127.0.0.1:9/in\"}", 0);
    char *spf = strdup("pass");
    assert_int_equal(postern_note_set(mock_ctx(), POSTERN_NOTE_TRANSACTION,
                                      "spf.result", spf, free),
                     0);
    set_message(100003); /* several chunks, not a multiple of 3 */
    mock_set_read_chunk(777);

    assert_int_equal(store(mod), POSTERN_PENDING);
    assert_int_equal(fh.sent, 1);
    assert_string_equal(fh_header("Content-Type"), "application/json");
    assert_string_equal(fh_header("X-Postern-Id"), ID);
    assert_null(fh_header("Authorization"));
    assert_null(fh_header("X-Postern-Signature"));
    assert_false(fh.req->has_tls);
    size_t len;
    char *body = fh_body(&len);
    json_t *doc = check_document(body, len);
    assert_int_equal(json_integer_value(json_object_get(doc, "version")), 1);
    assert_string_equal(json_string_value(json_object_get(doc, "id")), ID);
    assert_string_equal(json_string_value(json_object_get(doc, "session")),
                        "0011223344556677");
    assert_string_equal(json_string_value(json_object_get(doc, "received_at")),
                        "2023-11-14T22:13:20Z");
    json_t *env = json_object_get(doc, "envelope");
    assert_string_equal(json_string_value(json_object_get(env, "mail_from")),
                        "alice@example.org");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(env, "mail_params"), "BODY")),
                        "8BITMIME");
    assert_int_equal(json_array_size(json_object_get(env, "rcpt_to")), 2);
    json_t *client = json_object_get(doc, "client");
    assert_string_equal(json_string_value(json_object_get(client, "ip")),
                        "192.0.2.7");
    assert_int_equal(json_integer_value(json_object_get(client, "port")),
                     40123);
    assert_true(json_is_null(json_object_get(client, "rdns")));
    assert_true(
        json_is_false(json_object_get(json_object_get(doc, "tls"), "active")));
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(doc, "results"), "spf")),
                        "pass");
    json_decref(doc);

    /* rewind: the same bytes again */
    assert_int_equal(fh.req->src.rewind(fh.req->src.arg), 0);
    size_t len2;
    char *again = fh_body(&len2);
    assert_int_equal(len2, len);
    assert_memory_equal(again, body, len);
    free(again);
    free(body);

    fh_answer(POSTERN_HTTP_OK, 201, "{\"id\": \"Q-42\\r\\nX\"}");
    assert_int_equal(mock_resume_count(), 1);
    assert_int_equal(mock_last_resume(), POSTERN_ACCEPT);
    assert_int_equal(mock_last_reply()->code, 250);
    assert_string_equal(mock_last_reply()->text, "Ok: queued as Q-42??X");
    assert_int_equal(mock_readers_open(), 0);
    postern_module_descriptor.destroy(mod);
}

static void
test_no_id_uses_transaction_id(void **state)
{
    (void)state;
    void *mod = mock_create("{\"url\": \"http://127.0.0.1:9/\"}", 0);

    assert_int_equal(store(mod), POSTERN_PENDING);
    fh_answer(POSTERN_HTTP_OK, 200, "not json");
    assert_int_equal(mock_last_resume(), POSTERN_ACCEPT);
    assert_string_equal(mock_last_reply()->text, "Ok: queued as " ID);
    postern_module_descriptor.destroy(mod);
}

static void
test_reject_and_defer(void **state)
{
    (void)state;
    void *mod = mock_create("{\"url\": \"http://127.0.0.1:9/\"}", 0);

    assert_int_equal(store(mod), POSTERN_PENDING);
    fh_answer(POSTERN_HTTP_OK, 200,
              "{\"action\":\"reject\",\"code\":554,\"enhanced\":\"5.7.0\","
              "\"text\":\"Spam\\u00e9 here\"}");
    assert_int_equal(mock_last_resume(), POSTERN_REJECT);
    assert_int_equal(mock_last_reply()->code, 554);
    assert_string_equal(mock_last_reply()->enhanced, "5.7.0");
    assert_string_equal(mock_last_reply()->text, "Spam?? here");
    assert_int_equal(fh.sent, 1); /* never retried */

    /* a bad code and enhanced code give the defaults */
    assert_int_equal(store(mod), POSTERN_PENDING);
    fh_answer(POSTERN_HTTP_OK, 403,
              "{\"action\":\"defer\",\"code\":550,\"enhanced\":\"5.1.1\"}");
    assert_int_equal(mock_last_resume(), POSTERN_TEMPFAIL);
    assert_int_equal(mock_last_reply()->code, 451);
    assert_string_equal(mock_last_reply()->enhanced, "4.7.1");
    assert_int_equal(fh.sent, 2);
    assert_int_equal(mock_resume_count(), 2);
    assert_int_equal(mock_readers_open(), 0);
    postern_module_descriptor.destroy(mod);
}

static void
test_failover_and_retries(void **state)
{
    (void)state;
    void *mod = mock_create("{\"urls\": [\"http://127.0.0.1:9/a\", "
                            "\"http://127.0.0.1:9/b\"], \"retries\": 1, "
                            "\"retry_delay\": 2, \"timeout\": 5}",
                            0);

    assert_int_equal(store(mod), POSTERN_PENDING);
    assert_true(fh.req->timeout == 5.0);
    fh_answer(POSTERN_HTTP_OK, 500, "{\"id\":\"no\"}");
    /* failover at once to b */
    assert_int_equal(fh.sent, 2);
    assert_string_equal(fh.urls[1], "http://127.0.0.1:9/b");
    fh_answer(POSTERN_HTTP_CONNECT, 0, NULL);
    /* a round failed: the retry waits */
    assert_null(fh.req);
    assert_int_equal(mock_timers_active(), 1);
    assert_true(mock_timer_seconds() == 2.0);
    assert_int_equal(mock_readers_open(), 0);
    assert_int_equal(mock_resume_count(), 0);
    mock_set_now(1700000003.0);
    assert_int_equal(mock_timer_fire(), 1);
    assert_int_equal(fh.sent, 3);
    assert_string_equal(fh.urls[2], "http://127.0.0.1:9/a");
    fh_answer(POSTERN_HTTP_TIMEOUT, 0, NULL);
    assert_int_equal(fh.sent, 4);
    fh_answer(POSTERN_HTTP_CONNECT, 0, NULL);
    /* retries used up: 451 with the last failure's code */
    assert_int_equal(mock_timers_active(), 0);
    assert_int_equal(mock_resume_count(), 1);
    assert_int_equal(mock_last_resume(), POSTERN_TEMPFAIL);
    assert_int_equal(mock_last_reply()->code, 451);
    assert_string_equal(mock_last_reply()->enhanced, "4.4.1");
    assert_int_equal(mock_readers_open(), 0);
    postern_module_descriptor.destroy(mod);
}

static void
test_deadline_bounds_retries(void **state)
{
    (void)state;
    void *mod = mock_create("{\"url\": \"http://127.0.0.1:9/\", \"retries\": "
                            "5, \"retry_delay\": 1, \"deadline\": 4, "
                            "\"timeout\": 10}",
                            0);

    assert_int_equal(store(mod), POSTERN_PENDING);
    assert_true(fh.req->timeout == 4.0); /* capped by the deadline */
    fh_answer(POSTERN_HTTP_TIMEOUT, 0, NULL);
    mock_set_now(1700000002.5); /* the timer fired late */
    assert_int_equal(mock_timer_fire(), 1);
    assert_true(fh.req->timeout > 1.7 && fh.req->timeout < 1.8);
    fh_answer(POSTERN_HTTP_TIMEOUT, 0, NULL);
    /* the next delay (2 s) would end past the deadline */
    assert_int_equal(mock_timers_active(), 0);
    assert_int_equal(mock_last_resume(), POSTERN_TEMPFAIL);
    assert_string_equal(mock_last_reply()->enhanced, "4.4.2");
    assert_int_equal(fh.sent, 2);
    postern_module_descriptor.destroy(mod);
}

static void
test_signature(void **state)
{
    (void)state;
    void *mod = mock_create("{\"url\": \"https://127.0.0.1:9/\", "
                            "\"hmac_key\": \"s3cret\", \"token\": \"tok\"}",
                            0);

    set_message(70001);
    assert_int_equal(store(mod), POSTERN_PENDING);
    assert_int_equal(mock_pool_submit_count(), 1);
    assert_int_equal(fh.sent, 1);
    assert_true(fh.req->has_tls);
    assert_string_equal(fh_header("Authorization"), "Bearer tok");
    const char *ts = fh_header("X-Postern-Timestamp");
    assert_string_equal(ts, "1700000000");
    const char *sig = fh_header("X-Postern-Signature");
    assert_non_null(sig);
    size_t len;
    char *body = fh_body(&len);
    gnutls_hmac_hd_t h;
    unsigned char digest[32];
    char hex[80] = "sha256=";
    assert_int_equal(gnutls_hmac_init(&h, GNUTLS_MAC_SHA256, "s3cret", 6), 0);
    gnutls_hmac(h, ts, strlen(ts));
    gnutls_hmac(h, ".", 1);
    gnutls_hmac(h, body, len);
    gnutls_hmac_deinit(h, digest);
    for (size_t i = 0; i < 32; i++)
        snprintf(hex + 7 + 2 * i, 3, "%02x", digest[i]);
    assert_string_equal(sig, hex);
    free(body);
    fh_answer(POSTERN_HTTP_OK, 204, NULL);
    assert_int_equal(mock_last_resume(), POSTERN_ACCEPT);
    assert_int_equal(mock_readers_open(), 0);
    postern_module_descriptor.destroy(mod);
}

static void
test_cancelled_and_orphaned(void **state)
{
    (void)state;
    void *mod = mock_create("{\"url\": \"http://127.0.0.1:9/\", "
                            "\"hmac_key\": \"k\"}",
                            0);

    assert_int_equal(store(mod), POSTERN_PENDING);
    fh_answer(POSTERN_HTTP_CANCELLED, 0, NULL);
    assert_int_equal(mock_resume_count(), 1);
    assert_int_equal(mock_last_resume(), POSTERN_TEMPFAIL);
    assert_int_equal(mock_readers_open(), 0);

    /* orphaned while signing: no request at all */
    mock_set_pool_mode(MOCK_POOL_DEFER);
    assert_int_equal(store(mod), POSTERN_PENDING);
    mock_set_orphaned(1);
    assert_int_equal(mock_pool_run(), 1);
    assert_int_equal(fh.sent, 1);
    assert_int_equal(mock_resume_count(), 2);
    assert_int_equal(mock_readers_open(), 0);

    /* a retry timer pending at shutdown: destroy frees the job */
    mock_set_orphaned(0);
    mock_set_pool_mode(MOCK_POOL_RUN);
    assert_int_equal(store(mod), POSTERN_PENDING);
    fh_answer(POSTERN_HTTP_OK, 503, NULL);
    assert_int_equal(mock_timers_active(), 1);
    postern_module_descriptor.destroy(mod);
    assert_int_equal(mock_timers_active(), 0);
    assert_int_equal(mock_readers_open(), 0);
}

static void
test_message_unreadable(void **state)
{
    (void)state;
    void *mod = mock_create("{\"url\": \"http://127.0.0.1:9/\"}", 0);

    mock_set_reader(MOCK_READER_OPEN_FAILS, 0);
    assert_int_equal(store(mod), POSTERN_TEMPFAIL);
    assert_int_equal(mock_last_reply()->code, 451);
    assert_int_equal(fh.sent, 0);

    mock_set_reader(MOCK_READER_READ_FAILS, 500);
    assert_int_equal(store(mod), POSTERN_PENDING);
    char buf[4096];
    ssize_t n;
    while ((n = fh.req->src.read(fh.req->src.arg, buf, sizeof buf)) > 0)
        ;
    assert_int_equal(n, -1);
    fh_answer(POSTERN_HTTP_BODY, 0, NULL);
    assert_int_equal(fh.sent, 1); /* not retried */
    assert_int_equal(mock_last_resume(), POSTERN_TEMPFAIL);
    assert_string_equal(mock_last_reply()->enhanced, "4.3.0");
    assert_int_equal(mock_readers_open(), 0);

    /* a signing pass that cannot read */
    void *signing = mock_create("{\"url\": \"http://127.0.0.1:9/\", "
                                "\"hmac_key\": \"k\"}",
                                0);
    assert_int_equal(store(signing), POSTERN_PENDING);
    assert_int_equal(fh.sent, 1);
    assert_int_equal(mock_resume_count(), 2);
    assert_int_equal(mock_last_resume(), POSTERN_TEMPFAIL);
    assert_int_equal(mock_readers_open(), 0);
    postern_module_descriptor.destroy(signing);
    postern_module_descriptor.destroy(mod);
}

static void
expect_config_error(const char *config, const char *path)
{
    assert_null(mock_create(config, 0));
    assert_string_equal(mock_init_error_path(), path);
}

static void
test_bad_config(void **state)
{
    (void)state;
    expect_config_error("{}", "url");
    expect_config_error("{\"url\": \"ftp://x/\"}", "url");
    expect_config_error("{\"url\": 3}", "url");
    expect_config_error("{\"urls\": []}", "urls");
    expect_config_error("{\"urls\": [\"http://a/\", \"gopher://b\"]}",
                        "urls[1]");
    expect_config_error("{\"url\": \"http://a/\", \"urls\": [\"http://b/\"]}",
                        "urls");
    expect_config_error("{\"url\": \"http://a/\", \"retries\": 11}", "retries");
    expect_config_error("{\"url\": \"http://a/\", \"deadline\": 600}",
                        "deadline");
    expect_config_error("{\"url\": \"http://a/\", \"timeout\": 0}", "timeout");
    expect_config_error("{\"url\": \"http://a/\", \"token\": \"a b\"}",
                        "token");
    expect_config_error("{\"url\": \"http://a/\", \"token_file\": "
                        "\"/nonexistent/token\"}",
                        "token_file");
    expect_config_error("{\"url\": \"http://a/\", \"hmac_key\": \"k\", "
                        "\"hmac_key_file\": \"/etc/hostname\"}",
                        "hmac_key_file");
    expect_config_error("{\"url\": \"http://a/\", \"cert_file\": "
                        "\"/etc/hostname\"}",
                        "key_file");
    expect_config_error("{\"url\": \"http://a/\", \"colour\": 1}", "colour");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_document_and_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_id_uses_transaction_id, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reject_and_defer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failover_and_retries, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_deadline_bounds_retries, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_signature, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancelled_and_orphaned, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_message_unreadable, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_config, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
