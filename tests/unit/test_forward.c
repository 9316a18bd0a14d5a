/*
 * test_forward.c - the forward module without a network: its config
 * (errors name their JSON path), route matching, the 452 4.5.3 split at
 * RCPT, the store handler's paths through the module's worker threads
 * (a next hop on a closed loopback port; the completion pipe is watched by
 * the stubs below), the transcript of a conversation and the reply it
 * becomes, and the count of dots libcurl adds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <poll.h>

#include "../../modules/forward/forward.h"
#include "mock_core.h"

#define ID "a1b2c3d4e5f60718"

/* The module's completion pipe: mock_core.c has no I/O watchers. */
struct postern_io {
    int fd;
    postern_io_cb cb;
    void *arg;
};
static struct postern_io *watched;

postern_io *
postern_io_start(int fd, int events, postern_io_cb cb, void *arg)
{
    assert_null(watched);
    watched = malloc(sizeof *watched);
    assert_non_null(watched);
    *watched = (struct postern_io){.fd = fd, .cb = cb, .arg = arg};
    (void)events;
    return watched;
}

void
postern_io_set(postern_io *io, int events)
{
    (void)io;
    (void)events;
}

void
postern_io_stop(postern_io *io)
{
    if (io == NULL)
        return;
    assert_ptr_equal(io, watched);
    free(io);
    watched = NULL;
}

/* Run the loop's side until the module resumed `resumes` times in all
 * (at most 20 s: a worker thread does the transfer). */
static void
wait_resumes(int resumes)
{
    for (int i = 0; i < 200 && mock_resume_count() < resumes; i++) {
        assert_non_null(watched);
        struct pollfd p = {.fd = watched->fd, .events = POLLIN};
        if (poll(&p, 1, 100) > 0)
            watched->cb(watched->fd, POSTERN_IO_READ, watched->arg);
        else
            mock_timer_fire(); /* the check for clients that left */
    }
    assert_int_equal(mock_resume_count(), resumes);
}

/* Nothing listens on port 1 of the loopback: connection refused. */
static const char *const CLOSED =
    "{\"routes\": {\"*\": \"smtp://127.0.0.1:1\"}, \"concurrency\": 2, "
    "\"timeout\": 10}";

static int
setup(void **state)
{
    (void)state;
    mock_reset();
    mock_set_transaction_id(ID);
    mock_set_mail_from("alice@example.org");
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    mock_cleanup();
    return 0;
}

static void
destroy(void *instance)
{
    postern_module_descriptor.destroy(instance);
}

static postern_result
rcpt(void *instance, const char *addr)
{
    mock_set_rcpt_current(addr);
    return postern_module_descriptor.handlers[POSTERN_HOOK_RCPT](mock_ctx(),
                                                                 instance);
}

static postern_result
store(void *instance)
{
    return postern_module_descriptor.handlers[POSTERN_HOOK_STORE](mock_ctx(),
                                                                  instance);
}

static const char *const ROUTES =
    "{\"routes\": {\"example.org\": \"smtp://192.0.2.1:25\", "
    "\".example.org\": \"smtp://192.0.2.2\", "
    "\".b.example.org\": \"smtp://192.0.2.3:2525\", "
    "\"*\": \"smtp://127.0.0.1:10025\"}}";

/* --- configuration ------------------------------------------------------- */

static void
assert_config_error(const char *config, const char *path, const char *needle)
{
    mock_reset();
    assert_null(mock_create(config, 0));
    assert_string_equal(mock_init_error_path(), path);
    if (needle != NULL && strstr(mock_init_error_text(), needle) == NULL)
        fail_msg("error text %s lacks %s", mock_init_error_text(), needle);
}

static void
test_config_minimal(void **state)
{
    (void)state;
    void *fw = mock_create("{\"routes\": {\"*\": \"smtp://127.0.0.1\"}}", 0);
    assert_non_null(fw);
    destroy(fw);
    fw = mock_create(ROUTES, 1);
    assert_non_null(fw);
    destroy(fw);
}

static void
test_config_errors(void **state)
{
    (void)state;
    assert_config_error("[]", "", "object");
    assert_config_error("{}", "routes", "required");
    assert_config_error("{\"routes\": {}}", "routes", "non-empty");
    assert_config_error("{\"routes\": {\"*\": \"http://127.0.0.1\"}}",
                        "routes.*", "smtp://");
    assert_config_error("{\"routes\": {\"*\": \"127.0.0.1:25\"}}", "routes.*",
                        "URL");
    assert_config_error("{\"routes\": {\"*\": \"smtp://127.0.0.1/x\"}}",
                        "routes.*", "path");
    assert_config_error("{\"routes\": {\"*\": \"smtp://u:p@127.0.0.1\"}}",
                        "routes.*", "auth");
    assert_config_error("{\"routes\": {\"*\": 25}}", "routes.*", "URL");
    assert_config_error("{\"routes\": {\"a..b\": \"smtp://127.0.0.1\"}}",
                        "routes.a..b", "domain");
    assert_config_error("{\"routes\": {\"Ex.org\": \"smtp://127.0.0.1\", "
                        "\"ex.ORG\": \"smtp://127.0.0.2\"}}",
                        "routes.ex.ORG", "case");
    assert_config_error("{\"routes\": {\"*\": \"smtp://127.0.0.1\"}, "
                        "\"starttls\": \"always\"}",
                        "starttls", "required");
    assert_config_error("{\"routes\": {\"*\": \"smtp://127.0.0.1\"}, "
                        "\"timeout\": 0}",
                        "timeout", "seconds");
    assert_config_error("{\"routes\": {\"*\": \"smtp://127.0.0.1\"}, "
                        "\"timeout\": 9999}",
                        "timeout", "at most");
    assert_config_error("{\"routes\": {\"*\": \"smtp://127.0.0.1\"}, "
                        "\"helo\": \"bad name\"}",
                        "helo", "domain");
    assert_config_error("{\"routes\": {\"*\": \"smtp://127.0.0.1\"}, "
                        "\"ca_file\": \"/nonexistent/ca.pem\"}",
                        "ca_file", "/nonexistent/ca.pem");
    assert_config_error("{\"routes\": {\"*\": \"smtp://127.0.0.1\"}, "
                        "\"colour\": 1}",
                        "colour", "unknown key");
    assert_config_error("{\"routes\": {\"*\": \"smtp://127.0.0.1\"}, "
                        "\"quarantine\": \"drop\"}",
                        "quarantine", "expected \"header\" or \"refuse\"");
    /* AUTH in clear is refused unless asked for. */
    assert_config_error("{\"routes\": {\"*\": \"smtp://127.0.0.1\"}, "
                        "\"auth\": {\"user\": \"u\", \"password\": \"p\"}}",
                        "auth", "in clear");
    assert_config_error("{\"routes\": {\"*\": \"smtp://127.0.0.1\"}, "
                        "\"starttls\": \"required\", "
                        "\"auth\": {\"user\": \"u\"}}",
                        "auth", "password");
    assert_config_error("{\"routes\": {\"*\": \"smtp://127.0.0.1\"}, "
                        "\"starttls\": \"required\", \"auth\": {\"user\": "
                        "\"u\", \"password_file\": \"/nonexistent/pw\"}}",
                        "auth.password_file", "/nonexistent/pw");
    assert_config_error("{\"routes\": {\"*\": \"smtp://127.0.0.1\"}, "
                        "\"starttls\": \"required\", \"auth\": {\"user\": "
                        "\"u\", \"password\": \"p\", \"realm\": \"x\"}}",
                        "auth.realm", "unknown key");
}

static void
test_config_auth(void **state)
{
    (void)state;
    char path[] = "/tmp/postern-fw-pw-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "s3cret\n", 7), 7);
    close(fd);

    char config[512];
    snprintf(config, sizeof config,
             "{\"routes\": {\"*\": \"smtp://127.0.0.1\"}, \"starttls\": "
             "\"required\", \"auth\": {\"user\": \"u\", \"password_file\": "
             "\"%s\"}}",
             path);
    void *fw = mock_create(config, 0);
    assert_non_null(fw);
    destroy(fw);
    fw = mock_create("{\"routes\": {\"*\": \"smtps://127.0.0.1\"}, "
                     "\"auth\": {\"user\": \"u\", \"password\": \"p\"}}",
                     0);
    assert_non_null(fw);
    destroy(fw);
    fw = mock_create("{\"routes\": {\"*\": \"smtp://127.0.0.1\"}, "
                     "\"allow_plaintext_auth\": true, "
                     "\"auth\": {\"user\": \"u\", \"password\": \"p\"}}",
                     0);
    assert_non_null(fw);
    destroy(fw);
    unlink(path);
}

/* Instances never share connections (each worker thread has its own
 * easy handle), so one next hop may have different TLS settings in two. */
static void
test_config_shared_peer(void **state)
{
    (void)state;
    void *a = mock_create("{\"routes\": {\"*\": \"smtp://192.0.2.9:25\"}, "
                          "\"starttls\": \"off\", \"concurrency\": 1}",
                          0);
    assert_non_null(a);
    void *b = mock_create("{\"routes\": {\"x.org\": \"smtp://192.0.2.9\"}, "
                          "\"starttls\": \"required\", \"concurrency\": 1}",
                          0);
    assert_non_null(b);
    destroy(a);
    destroy(b);
}

static void
test_config_concurrency(void **state)
{
    (void)state;
    assert_config_error("{\"routes\": {\"*\": \"smtp://127.0.0.1\"}, "
                        "\"concurrency\": 0}",
                        "concurrency", "1 to 256");
    assert_config_error("{\"routes\": {\"*\": \"smtp://127.0.0.1\"}, "
                        "\"concurrency\": 257}",
                        "concurrency", "1 to 256");
    assert_config_error("{\"routes\": {\"*\": \"smtp://127.0.0.1\"}, "
                        "\"concurrency\": 2.5}",
                        "concurrency", "integer");
    mock_reset();
    void *fw = mock_create("{\"routes\": {\"*\": \"smtp://127.0.0.1\"}, "
                           "\"concurrency\": 256}",
                           1);
    assert_non_null(fw); /* checking only: no thread started */
    destroy(fw);
}

/* --- routes -------------------------------------------------------------- */

static const char *
route_url(const char *address)
{
    static struct fw_config cfg;
    static int loaded;
    json_error_t jerr;

    if (!loaded) {
        json_t *config = json_loads(ROUTES, 0, &jerr);
        assert_non_null(config);
        assert_int_equal(fw_config_parse(mock_init(config, 0), &cfg), 0);
        json_decref(config);
        loaded = 1;
    }
    if (address == NULL) {
        fw_config_free(&cfg);
        loaded = 0;
        return NULL;
    }
    const struct fw_route *r = fw_route_for(&cfg, address);
    return r ? r->url : "none";
}

static void
test_route_matching(void **state)
{
    (void)state;
    assert_string_equal(route_url("a@example.org"), "smtp://192.0.2.1:25");
    assert_string_equal(route_url("a@EXAMPLE.Org."), "smtp://192.0.2.1:25");
    assert_string_equal(route_url("a@x.example.org"), "smtp://192.0.2.2");
    assert_string_equal(route_url("a@y.x.example.org"), "smtp://192.0.2.2");
    assert_string_equal(route_url("a@b.example.org"), "smtp://192.0.2.2");
    assert_string_equal(route_url("a@c.b.example.org"),
                        "smtp://192.0.2.3:2525");
    assert_string_equal(route_url("a@example.net"), "smtp://127.0.0.1:10025");
    assert_string_equal(route_url("a@notexample.org"),
                        "smtp://127.0.0.1:10025");
    assert_string_equal(route_url("postmaster"), "smtp://127.0.0.1:10025");
    assert_string_equal(route_url("\"a@b\"@example.org"),
                        "smtp://192.0.2.1:25");
    route_url(NULL);

    /* Without "*", an unknown domain has no route. */
    json_error_t jerr;
    struct fw_config cfg = {0};
    json_t *config = json_loads(
        "{\"routes\": {\".example.org\": \"smtp://192.0.2.2\"}}", 0, &jerr);
    assert_int_equal(fw_config_parse(mock_init(config, 0), &cfg), 0);
    json_decref(config);
    assert_null(fw_route_for(&cfg, "a@example.org"));
    assert_null(fw_route_for(&cfg, "a@example.net"));
    assert_non_null(fw_route_for(&cfg, "a@x.example.org"));
    /* The EHLO name rides in the URL's path. */
    assert_string_equal(cfg.routes[0].curl_url,
                        "smtp://192.0.2.2/mx.mock.test");
    assert_string_equal(cfg.routes[0].peer, "192.0.2.2:25");
    fw_config_free(&cfg);

    /* An address literal as the EHLO name. */
    config = json_loads("{\"routes\": {\"*\": \"smtps://[::1]:4465\"}, "
                        "\"helo\": \"[192.0.2.7]\"}",
                        0, &jerr);
    assert_int_equal(fw_config_parse(mock_init(config, 0), &cfg), 0);
    json_decref(config);
    assert_string_equal(cfg.routes[0].curl_url,
                        "smtps://[::1]:4465/[192.0.2.7]");
    assert_string_equal(cfg.routes[0].peer, "[::1]:4465");
    assert_true(cfg.routes[0].implicit_tls);
    fw_config_free(&cfg);
}

/* --- rcpt: one next hop per transaction ---------------------------------- */

static void
test_rcpt_split(void **state)
{
    (void)state;
    void *fw = mock_create(ROUTES, 0);
    assert_non_null(fw);

    assert_int_equal(rcpt(fw, "a@example.org"), POSTERN_CONTINUE);
    mock_add_rcpt("a@example.org");
    assert_int_equal(rcpt(fw, "b@Example.ORG"), POSTERN_CONTINUE);
    mock_add_rcpt("b@Example.ORG");
    assert_int_equal(rcpt(fw, "c@x.example.org"), POSTERN_TEMPFAIL);
    assert_int_equal(mock_last_reply()->code, 452);
    assert_string_equal(mock_last_reply()->enhanced, "4.5.3");
    assert_int_equal(rcpt(fw, "d@example.net"), POSTERN_TEMPFAIL);
    destroy(fw);
}

static void
test_rcpt_unrouted_split(void **state)
{
    (void)state;
    void *fw =
        mock_create("{\"routes\": {\"example.org\": \"smtp://192.0.2.1\"}}", 0);
    assert_non_null(fw);
    mock_add_rcpt("a@example.com"); /* no route: another store's */
    assert_int_equal(rcpt(fw, "b@example.com"), POSTERN_CONTINUE);
    assert_int_equal(rcpt(fw, "c@example.org"), POSTERN_TEMPFAIL);
    assert_int_equal(mock_last_reply()->code, 452);
    destroy(fw);
}

/* --- store --------------------------------------------------------------- */

static const char MESSAGE[] = "Received: from x\r\n\r\n.one\r\nb\r\n.two\r\n";

static void
test_store_not_ours(void **state)
{
    (void)state;
    void *fw =
        mock_create("{\"routes\": {\"example.org\": \"smtp://192.0.2.1\"}}", 0);
    mock_add_rcpt("a@example.com");
    mock_set_message(MESSAGE, sizeof MESSAGE - 1);
    assert_int_equal(store(fw), POSTERN_CONTINUE);
    assert_null(watched);
    assert_int_equal(mock_readers_open(), 0);
    destroy(fw);
}

/* A quarantined message: marked with a header at the message hook and
 * forwarded, or, unmarked (quarantine: refuse), held back with 451. */
static void
test_quarantine(void **state)
{
    (void)state;
    void *fw = mock_create(ROUTES, 1);
    postern_handler message =
        postern_module_descriptor.handlers[POSTERN_HOOK_MESSAGE];

    mock_add_rcpt("a@example.org");
    assert_int_equal(message(mock_ctx(), fw), POSTERN_CONTINUE);
    assert_int_equal(mock_header_count(), 0); /* not quarantined */
    mock_set_quarantine("spam");
    assert_int_equal(message(mock_ctx(), fw), POSTERN_CONTINUE);
    assert_int_equal(mock_header_count(), 1);
    assert_string_equal(mock_header_name(0), "X-Postern-Quarantine");
    assert_string_equal(mock_header_value(0), "spam");
    destroy(fw);

    mock_end_transaction(); /* the mark is gone: store refuses */
    fw = mock_create("{\"routes\": {\"*\": \"smtp://127.0.0.1:25\"}, "
                     "\"quarantine\": \"refuse\"}",
                     1);
    assert_int_equal(message(mock_ctx(), fw), POSTERN_CONTINUE);
    assert_int_equal(mock_header_count(), 1); /* nothing more */
    assert_int_equal(store(fw), POSTERN_TEMPFAIL);
    assert_int_equal(mock_last_reply()->code, 451);
    assert_string_equal(mock_last_reply()->enhanced, "4.7.1");
    destroy(fw);
}

static void
test_store_mixed_routes(void **state)
{
    (void)state;
    void *fw = mock_create(ROUTES, 0);
    mock_add_rcpt("a@example.org");
    mock_add_rcpt("b@example.net");
    mock_set_message(MESSAGE, sizeof MESSAGE - 1);
    assert_int_equal(store(fw), POSTERN_TEMPFAIL);
    assert_int_equal(mock_last_reply()->code, 451);
    assert_string_equal(mock_last_reply()->enhanced, "4.3.5");
    assert_true(mock_log_find(POSTERN_LOG_ERROR, "rcpt hook") >= 0);
    destroy(fw);
}

static void
test_store_connect_failure(void **state)
{
    (void)state;
    void *fw = mock_create(CLOSED, 0);
    mock_add_rcpt("a@example.org");
    mock_add_rcpt("b@example.org");
    mock_set_message(MESSAGE, sizeof MESSAGE - 1);
    assert_int_equal(store(fw), POSTERN_PENDING);
    wait_resumes(1);
    assert_int_equal(mock_last_resume(), POSTERN_TEMPFAIL);
    assert_int_equal(mock_last_reply()->code, 451);
    assert_string_equal(mock_last_reply()->enhanced, "4.4.1");
    assert_non_null(strstr(mock_last_reply()->text, "127.0.0.1:1"));
    assert_int_equal(mock_readers_open(), 0);
    /* Two dots: ".one" and ".two" begin their lines. */
    assert_true(mock_log_find(POSTERN_LOG_DEBUG, "stuffed=2") >= 0);
    assert_true(mock_log_find(POSTERN_LOG_WARNING, "result=tempfail") >= 0);
    destroy(fw);
}

/* The client left: resumed once, without a reply, whether the worker had
 * started or the job was dropped from the queue. */
static void
test_store_orphaned(void **state)
{
    (void)state;
    void *fw = mock_create(CLOSED, 0);
    mock_add_rcpt("a@example.org");
    mock_set_message(MESSAGE, sizeof MESSAGE - 1);
    for (int i = 0; i < 4; i++)
        assert_int_equal(store(fw), POSTERN_PENDING);
    mock_set_orphaned(1);
    wait_resumes(4);
    assert_int_equal(mock_last_reply()->count, 0);
    assert_int_equal(mock_readers_open(), 0);
    assert_true(mock_log_find(POSTERN_LOG_INFO, "client_gone=yes") >= 0 ||
                mock_log_find(POSTERN_LOG_WARNING, "client_gone=yes") >= 0);
    destroy(fw);
}

/* postern stops with jobs in flight: nothing leaks, nothing resumes (the
 * core frees the orphaned contexts after the modules). */
static void
test_store_destroy_in_flight(void **state)
{
    (void)state;
    void *fw = mock_create("{\"routes\": {\"*\": \"smtp://127.0.0.1:1\"}, "
                           "\"concurrency\": 1}",
                           0);
    mock_add_rcpt("a@example.org");
    mock_set_message(MESSAGE, sizeof MESSAGE - 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(store(fw), POSTERN_PENDING);
    destroy(fw);
    assert_null(watched);
    assert_int_equal(mock_readers_open(), 0);
}

static void
test_store_local_failures(void **state)
{
    (void)state;
    void *fw = mock_create(CLOSED, 0);
    mock_add_rcpt("a@example.org");
    mock_set_message(MESSAGE, sizeof MESSAGE - 1);

    mock_set_reader(MOCK_READER_OPEN_FAILS, 0);
    assert_int_equal(store(fw), POSTERN_TEMPFAIL);
    assert_int_equal(mock_last_reply()->code, 451);
    assert_int_equal(mock_resume_count(), 0);

    mock_set_reader(MOCK_READER_READ_FAILS, 10);
    assert_int_equal(store(fw), POSTERN_PENDING);
    wait_resumes(1);
    assert_int_equal(mock_last_resume(), POSTERN_TEMPFAIL);
    assert_string_equal(mock_last_reply()->enhanced, "4.3.0");
    assert_true(mock_log_find(POSTERN_LOG_ERROR, "cannot read") >= 0);
    assert_int_equal(mock_readers_open(), 0);
    destroy(fw);
}

/* --- the transcript and the reply ---------------------------------------- */

static void
say(struct fw_transcript *t, const char *command)
{
    fw_transcript_command(t, command, strlen(command));
}

static void
hear(struct fw_transcript *t, const char *line)
{
    fw_transcript_reply_line(t, line, strlen(line));
}

/* A conversation up to and including the recipients. */
static void
envelope(struct fw_transcript *t)
{
    fw_transcript_init(t);
    hear(t, "220 sink ESMTP\r\n");
    say(t, "EHLO mx.test\r\n");
    hear(t, "250-sink\r\n");
    hear(t, "250-SIZE 1000\r\n");
    hear(t, "250 8BITMIME\r\n");
    say(t, "MAIL FROM:<a@x.test> SIZE=10\r\n");
    hear(t, "250 2.1.0 Ok\r\n");
    say(t, "RCPT TO:<b@y.test>\r\n");
}

static void
test_outcome_accepted(void **state)
{
    (void)state;
    struct fw_transcript t;
    struct fw_outcome out;

    envelope(&t);
    hear(&t, "250 2.1.5 Ok\r\n");
    say(&t, "DATA\r\n");
    hear(&t, "354 go ahead\r\n");
    hear(&t, "250 2.0.0 Ok: queued as ABC123\r\n");
    fw_outcome_of(CURLE_OK, &t, "h:25", ID, false, &out);
    assert_int_equal(out.result, POSTERN_ACCEPT);
    assert_int_equal(out.code, 250);
    assert_string_equal(out.text, "Ok: queued as " ID
                                  ", forwarded to h:25: 250 2.0.0 Ok: "
                                  "queued as ABC123");
}

static void
test_outcome_rcpt_refused(void **state)
{
    (void)state;
    struct fw_transcript t;
    struct fw_outcome out;

    envelope(&t);
    hear(&t, "550 5.1.1 <b@y.test>: User unknown\r\n");
    fw_outcome_of(CURLE_SEND_ERROR, &t, "h:25", ID, false, &out);
    assert_int_equal(out.result, POSTERN_REJECT);
    assert_int_equal(out.code, 550);
    assert_string_equal(out.enhanced, "5.1.1");
    assert_string_equal(out.text, "next hop h:25 said: 550 5.1.1 <b@y.test>: "
                                  "User unknown (in reply to RCPT "
                                  "TO:<b@y.test>)");

    /* libcurl's QUIT after the refusal changes nothing. */
    say(&t, "QUIT\r\n");
    hear(&t, "221 2.0.0 Bye\r\n");
    fw_outcome_of(CURLE_SEND_ERROR, &t, "h:25", ID, false, &out);
    assert_int_equal(out.code, 550);

    envelope(&t);
    hear(&t, "450 4.2.0 <b@y.test>: try later\r\n");
    fw_outcome_of(CURLE_SEND_ERROR, &t, "h:25", ID, false, &out);
    assert_int_equal(out.result, POSTERN_TEMPFAIL);
    assert_int_equal(out.code, 451);
    assert_string_equal(out.enhanced, "4.2.0");

    /* A code that means nothing after the data becomes 554; a reply
     * without an enhanced code gets one of its class. */
    envelope(&t);
    hear(&t, "500 syntax\r\n");
    fw_outcome_of(CURLE_SEND_ERROR, &t, "h:25", ID, false, &out);
    assert_int_equal(out.code, 554);
    assert_string_equal(out.enhanced, "5.0.0");
}

static void
test_outcome_end_of_data(void **state)
{
    (void)state;
    struct fw_transcript t;
    struct fw_outcome out;

    envelope(&t);
    hear(&t, "250 2.1.5 Ok\r\n");
    say(&t, "DATA\r\n");
    hear(&t, "354 go ahead\r\n");
    hear(&t, "552-5.3.4 Message too big\r\n");
    hear(&t, "552 5.3.4 for this system\r\n");
    fw_outcome_of(CURLE_WEIRD_SERVER_REPLY, &t, "h:25", ID, false, &out);
    assert_int_equal(out.result, POSTERN_REJECT);
    assert_int_equal(out.code, 552);
    assert_string_equal(out.enhanced, "5.3.4");
    assert_string_equal(out.text,
                        "next hop h:25 said: 552 5.3.4 Message too big 5.3.4 "
                        "for this system (in reply to the end of the message)");
}

static void
test_outcome_session_refused(void **state)
{
    (void)state;
    struct fw_transcript t;
    struct fw_outcome out;

    fw_transcript_init(&t);
    hear(&t, "554 5.7.1 go away\r\n");
    fw_outcome_of(CURLE_WEIRD_SERVER_REPLY, &t, "h:25", ID, false, &out);
    assert_int_equal(out.result, POSTERN_TEMPFAIL);
    assert_int_equal(out.code, 451);
    assert_string_equal(out.enhanced, "4.4.0");
}

static void
test_outcome_auth_secret_kept_out(void **state)
{
    (void)state;
    struct fw_transcript t;
    struct fw_outcome out;

    fw_transcript_init(&t);
    hear(&t, "220 sink\r\n");
    say(&t, "EHLO mx.test\r\n");
    hear(&t, "250 AUTH LOGIN\r\n");
    say(&t, "AUTH LOGIN dXNlcg==\r\n");
    hear(&t, "334 UGFzc3dvcmQ6\r\n");
    say(&t, "c2VjcmV0\r\n");
    hear(&t, "535 5.7.8 Authentication failed\r\n");
    fw_outcome_of(CURLE_LOGIN_DENIED, &t, "h:25", ID, false, &out);
    assert_int_equal(out.code, 451);
    assert_string_equal(out.enhanced, "4.7.0");
    assert_null(strstr(out.text, "c2VjcmV0"));
    assert_null(strstr(t.code_command, "c2VjcmV0"));
}

static void
test_outcome_failures(void **state)
{
    (void)state;
    struct fw_transcript t;
    struct fw_outcome out;
    static const struct {
        CURLcode rc;
        const char *enhanced;
    } cases[] = {
        {CURLE_COULDNT_CONNECT, "4.4.1"},
        {CURLE_OPERATION_TIMEDOUT, "4.4.1"},
        {CURLE_USE_SSL_FAILED, "4.7.5"},
        {CURLE_PEER_FAILED_VERIFICATION, "4.7.5"},
        {CURLE_SSL_CONNECT_ERROR, "4.7.5"},
        {CURLE_RECV_ERROR, "4.4.2"},
        {CURLE_SEND_ERROR, "4.4.2"},
        {CURLE_ABORTED_BY_CALLBACK, "4.3.2"},
        {CURLE_OUT_OF_MEMORY, "4.3.0"},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        envelope(&t);
        hear(&t, "250 2.1.5 Ok\r\n");
        fw_outcome_of(cases[i].rc, &t, "h:25", ID, false, &out);
        assert_int_equal(out.result, POSTERN_TEMPFAIL);
        assert_int_equal(out.code, 451);
        assert_string_equal(out.enhanced, cases[i].enhanced);
    }
    /* A read failure of our own wins over how libcurl saw it. */
    fw_outcome_of(CURLE_ABORTED_BY_CALLBACK, &t, "h:25", ID, true, &out);
    assert_string_equal(out.enhanced, "4.3.0");
    /* STARTTLS refused by the next hop. */
    fw_transcript_init(&t);
    say(&t, "STARTTLS\r\n");
    hear(&t, "454 4.7.0 TLS not available\r\n");
    fw_outcome_of(CURLE_USE_SSL_FAILED, &t, "h:25", ID, false, &out);
    assert_string_equal(out.enhanced, "4.7.5");
}

/* --- dots ---------------------------------------------------------------- */

static void
test_stuffed_dots(void **state)
{
    (void)state;
    int s = FW_DOTS_START;
    const char *m = ".a\r\n.b\r\nc.\r\n\n.d\r\r\n.e\r\n..f\r\n";
    assert_int_equal(fw_count_stuffed_dots(m, strlen(m), &s), 4);

    /* The same, a byte at a time: the state carries over. */
    unsigned long long dots = 0;
    s = FW_DOTS_START;
    for (size_t i = 0; i < strlen(m); i++)
        dots += fw_count_stuffed_dots(m + i, 1, &s);
    assert_int_equal(dots, 4);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config_minimal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_shared_peer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config_concurrency, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_route_matching, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rcpt_split, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rcpt_unrouted_split, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_not_ours, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quarantine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_mixed_routes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_connect_failure, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_orphaned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_destroy_in_flight, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_local_failures, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_outcome_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outcome_rcpt_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_outcome_end_of_data, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_outcome_session_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_outcome_auth_secret_kept_out,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_outcome_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stuffed_dots, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
