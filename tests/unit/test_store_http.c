/*
 * test_store_http.c - the store_http module over the fake core and its
 * fake HTTP service (mock_http.c): the document streamed through the body
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

#include "../../modules/store_http/store_http.h"
#include "mock_core.h"
#include "mock_http.h"

#define ID "a1b2c3d4e5f60718"

/* The body of the oldest waiting request; it must be there, whole. */
static const char *
sent_body(size_t *len)
{
    int failed = 1;
    const char *body = mock_http_body(0, len, &failed);

    assert_non_null(body);
    assert_int_equal(failed, 0);
    return body;
}

static void
respond(int code, const char *body)
{
    assert_int_equal(mock_http_respond(code, NULL, body ? body : "",
                                       body ? strlen(body) : 0),
                     1);
}

static void
fail_with(postern_http_status status)
{
    assert_int_equal(mock_http_fail(status, "fake failure"), 1);
}

/* --- helpers ---------------------------------------------------------------
 */

static unsigned char *message;
static size_t message_len;

static void
set_message(size_t len)
{
    free(message);
    message = malloc(len ? len : 1);
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
    assert_int_equal(mock_http_sent_count(), 1);
    assert_string_equal(mock_http_header(0, "Content-Type"),
                        "application/json");
    assert_string_equal(mock_http_header(0, "X-Postern-Id"), ID);
    assert_null(mock_http_header(0, "Authorization"));
    assert_null(mock_http_header(0, "X-Postern-Signature"));
    assert_null(mock_http_ca_file(0));
    size_t len;
    const char *body = sent_body(&len);
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
    assert_true(json_is_null(json_object_get(doc, "quarantine")));
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

    respond(201, "{\"id\": \"Q-42\\r\\nX\"}");
    assert_int_equal(mock_resume_count(), 1);
    assert_int_equal(mock_last_resume(), POSTERN_ACCEPT);
    assert_int_equal(mock_last_reply()->code, 250);
    assert_string_equal(mock_last_reply()->text, "Ok: queued as Q-42??X");
    assert_int_equal(mock_readers_open(), 0);
    postern_module_descriptor.destroy(mod);
}

/* A quarantined message carries its reason; the envelope as changed. */
static void
test_quarantine_and_changed_envelope(void **state)
{
    (void)state;
    void *mod = mock_create("{\"url\": \"http://127.0.0.1:9/\"}", 0);

    postern_mail_from_set(mock_ctx(), "new@example.org", NULL);
    postern_rcpt_add(mock_ctx(), "added@example.com");
    postern_message_quarantine(mock_ctx(), "spam score 12");
    assert_int_equal(store(mod), POSTERN_PENDING);
    size_t len;
    const char *body = sent_body(&len);
    json_t *doc = check_document(body, len);
    assert_string_equal(json_string_value(json_object_get(doc, "quarantine")),
                        "spam score 12");
    json_t *env = json_object_get(doc, "envelope");
    assert_string_equal(json_string_value(json_object_get(env, "mail_from")),
                        "new@example.org");
    json_t *rcpts = json_object_get(env, "rcpt_to");
    assert_string_equal(
        json_string_value(json_array_get(rcpts, json_array_size(rcpts) - 1)),
        "added@example.com");
    json_decref(doc);
    respond(200, "");
    assert_int_equal(mock_last_resume(), POSTERN_ACCEPT);
    postern_module_descriptor.destroy(mod);
}

static void
test_no_id_uses_transaction_id(void **state)
{
    (void)state;
    void *mod = mock_create("{\"url\": \"http://127.0.0.1:9/\"}", 0);

    assert_int_equal(store(mod), POSTERN_PENDING);
    respond(200, "not json");
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
    respond(200, "{\"action\":\"reject\",\"code\":554,\"enhanced\":\"5.7.0\","
                 "\"text\":\"Spam\\u00e9 here\"}");
    assert_int_equal(mock_last_resume(), POSTERN_REJECT);
    assert_int_equal(mock_last_reply()->code, 554);
    assert_string_equal(mock_last_reply()->enhanced, "5.7.0");
    assert_string_equal(mock_last_reply()->text, "Spam?? here");
    assert_int_equal(mock_http_sent_count(), 1); /* never retried */

    /* a bad code and enhanced code give the defaults */
    assert_int_equal(store(mod), POSTERN_PENDING);
    respond(403, "{\"action\":\"defer\",\"code\":550,\"enhanced\":\"5.1.1\"}");
    assert_int_equal(mock_last_resume(), POSTERN_TEMPFAIL);
    assert_int_equal(mock_last_reply()->code, 451);
    assert_string_equal(mock_last_reply()->enhanced, "4.7.1");
    assert_int_equal(mock_http_sent_count(), 2);
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
    assert_true(mock_http_timeout(0) == 5.0);
    respond(500, "{\"id\":\"no\"}");
    /* failover at once to b */
    assert_int_equal(mock_http_sent_count(), 2);
    assert_string_equal(mock_http_url(0), "http://127.0.0.1:9/b");
    fail_with(POSTERN_HTTP_CONNECT);
    /* a round failed: the retry waits */
    assert_int_equal(mock_http_pending(), 0);
    assert_int_equal(mock_timers_active(), 1);
    assert_true(mock_timer_seconds() == 2.0);
    assert_int_equal(mock_readers_open(), 0);
    assert_int_equal(mock_resume_count(), 0);
    mock_set_now(1700000003.0);
    assert_int_equal(mock_timer_fire(), 1);
    assert_int_equal(mock_http_sent_count(), 3);
    assert_string_equal(mock_http_url(0), "http://127.0.0.1:9/a");
    fail_with(POSTERN_HTTP_TIMEOUT);
    assert_int_equal(mock_http_sent_count(), 4);
    fail_with(POSTERN_HTTP_CONNECT);
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
    assert_true(mock_http_timeout(0) == 4.0); /* capped by the deadline */
    fail_with(POSTERN_HTTP_TIMEOUT);
    mock_set_now(1700000002.5); /* the timer fired late */
    assert_int_equal(mock_timer_fire(), 1);
    assert_true(mock_http_timeout(0) > 1.7 && mock_http_timeout(0) < 1.8);
    fail_with(POSTERN_HTTP_TIMEOUT);
    /* the next delay (2 s) would end past the deadline */
    assert_int_equal(mock_timers_active(), 0);
    assert_int_equal(mock_last_resume(), POSTERN_TEMPFAIL);
    assert_string_equal(mock_last_reply()->enhanced, "4.4.2");
    assert_int_equal(mock_http_sent_count(), 2);
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
    assert_int_equal(mock_http_sent_count(), 1);
    assert_int_equal(mock_http_insecure(0), 0);
    assert_string_equal(mock_http_header(0, "Authorization"), "Bearer tok");
    const char *ts = mock_http_header(0, "X-Postern-Timestamp");
    assert_string_equal(ts, "1700000000");
    const char *sig = mock_http_header(0, "X-Postern-Signature");
    assert_non_null(sig);
    size_t len;
    const char *body = sent_body(&len);
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
    respond(204, NULL);
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
    fail_with(POSTERN_HTTP_CANCELLED);
    assert_int_equal(mock_resume_count(), 1);
    assert_int_equal(mock_last_resume(), POSTERN_TEMPFAIL);
    assert_int_equal(mock_readers_open(), 0);

    /* orphaned while signing: no request at all */
    mock_set_pool_mode(MOCK_POOL_DEFER);
    assert_int_equal(store(mod), POSTERN_PENDING);
    mock_set_orphaned(1);
    assert_int_equal(mock_pool_run(), 1);
    assert_int_equal(mock_http_sent_count(), 1);
    assert_int_equal(mock_resume_count(), 2);
    assert_int_equal(mock_readers_open(), 0);

    /* the endpoint stored it, but the client left meanwhile: resumed,
     * no reply written */
    mock_set_orphaned(0);
    mock_set_pool_mode(MOCK_POOL_RUN);
    int replies = mock_last_reply()->count;
    assert_int_equal(store(mod), POSTERN_PENDING);
    mock_set_orphaned(1);
    respond(200, "{\"id\": \"late\"}");
    assert_int_equal(mock_resume_count(), 3);
    assert_int_equal(mock_last_reply()->count, replies);
    assert_int_equal(mock_log_find(POSTERN_LOG_INFO, "remote_id=\"late\"") >= 0,
                     1);

    /* a retry timer pending at shutdown: destroy frees the job */
    mock_set_orphaned(0);
    mock_set_pool_mode(MOCK_POOL_RUN);
    assert_int_equal(store(mod), POSTERN_PENDING);
    respond(503, NULL);
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
    assert_int_equal(mock_http_sent_count(), 0);

    mock_set_reader(MOCK_READER_READ_FAILS, 500);
    assert_int_equal(store(mod), POSTERN_PENDING);
    size_t len;
    int failed = 0;
    mock_http_body(0, &len, &failed);
    assert_int_equal(failed, 1);
    fail_with(POSTERN_HTTP_BODY);
    assert_int_equal(mock_http_sent_count(), 1); /* not retried */
    assert_int_equal(mock_last_resume(), POSTERN_TEMPFAIL);
    assert_string_equal(mock_last_reply()->enhanced, "4.3.0");
    assert_int_equal(mock_readers_open(), 0);

    /* a signing pass that cannot read */
    void *signing = mock_create("{\"url\": \"http://127.0.0.1:9/\", "
                                "\"hmac_key\": \"k\"}",
                                0);
    assert_int_equal(store(signing), POSTERN_PENDING);
    assert_int_equal(mock_http_sent_count(), 1);
    assert_int_equal(mock_resume_count(), 2);
    assert_int_equal(mock_last_resume(), POSTERN_TEMPFAIL);
    assert_int_equal(mock_readers_open(), 0);
    postern_module_descriptor.destroy(signing);
    postern_module_descriptor.destroy(mod);
}

/* The stream itself: odd read sizes, a restart half way, a message
 * shorter or longer than announced. */
static void
test_body_stream(void **state)
{
    (void)state;
    struct sh_document doc = {.head = strdup("{\"a\":\""),
                              .head_len = 6,
                              .tail = "\"}",
                              .tail_len = 2,
                              .message_size = 100003};

    set_message(100003);
    mock_set_read_chunk(4093);
    struct sh_body *body = sh_body_new(&doc, postern_message_open(mock_ctx()));
    int64_t size = sh_body_size(&doc);
    assert_int_equal(size, 6 + (100003 + 2) / 3 * 4 + 2);
    char *first = malloc((size_t)size + 1), *second = malloc((size_t)size);
    assert_non_null(first);
    assert_non_null(second);
    size_t n = 0;
    ssize_t got;
    while ((got = sh_body_read(body, first + n, 1 + n % 9973)) > 0)
        n += (size_t)got;
    assert_int_equal(got, 0);
    assert_int_equal(n, (size_t)size);
    /* half way, then again from the start with a new reader */
    sh_body_restart(body, postern_message_open(mock_ctx()));
    n = 0;
    while (n < (size_t)size / 2 &&
           (got = sh_body_read(body, second + n, 7)) > 0)
        n += (size_t)got;
    sh_body_restart(body, postern_message_open(mock_ctx()));
    assert_int_equal(mock_readers_open(), 1);
    n = 0;
    while ((got = sh_body_read(body, second + n, 65536)) > 0)
        n += (size_t)got;
    assert_int_equal(n, (size_t)size);
    assert_memory_equal(first, second, (size_t)size);
    first[size] = '\0';
    assert_memory_equal(first, "{\"a\":\"", 6);
    assert_memory_equal(first + size - 2, "\"}", 2);
    gnutls_datum_t in = {(unsigned char *)first + 6, (unsigned)(size - 8)}, out;
    assert_int_equal(gnutls_base64_decode2(&in, &out), 0);
    assert_int_equal(out.size, message_len);
    assert_memory_equal(out.data, message, message_len);
    gnutls_free(out.data);

    /* the message longer, then shorter than announced: an error, never
     * a body of another length than Content-Length said */
    char buf[65536];
    doc.message_size = 100002;
    sh_body_restart(body, postern_message_open(mock_ctx()));
    while ((got = sh_body_read(body, buf, sizeof buf)) > 0)
        ;
    assert_int_equal(got, -1);
    doc.message_size = 100004;
    sh_body_restart(body, postern_message_open(mock_ctx()));
    while ((got = sh_body_read(body, buf, sizeof buf)) > 0)
        ;
    assert_int_equal(got, -1);
    /* without a reader */
    sh_body_restart(body, NULL);
    while ((got = sh_body_read(body, buf, sizeof buf)) > 0)
        ;
    assert_int_equal(got, -1);
    sh_body_free(body);
    assert_int_equal(mock_readers_open(), 0);
    free(first);
    free(second);

    /* every padding case, as GnuTLS encodes it */
    for (size_t len = 0; len <= 7; len++) {
        set_message(len);
        doc.message_size = len;
        body = sh_body_new(&doc, postern_message_open(mock_ctx()));
        n = 0;
        while ((got = sh_body_read(body, buf + n, 3)) > 0)
            n += (size_t)got;
        assert_int_equal(n, (size_t)sh_body_size(&doc));
        gnutls_datum_t raw = {message, (unsigned)len}, want;
        assert_int_equal(gnutls_base64_encode2(&raw, &want), 0);
        assert_int_equal(n, 6 + want.size + 2);
        assert_memory_equal(buf + 6, want.data, want.size);
        gnutls_free(want.data);
        sh_body_free(body);
    }
    free(doc.head);
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
        cmocka_unit_test_setup_teardown(test_quarantine_and_changed_envelope,
                                        setup, teardown),
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
        cmocka_unit_test_setup_teardown(test_body_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_config, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
