/*
 * test_dnsbl.c - the dnsbl module over the mock core and its in-memory
 * DNS: query names (IPv4, IPv6, IPv4-mapped), codes, weights and the
 * threshold, the acting hook and the postmaster exception, skipped
 * clients, DNS failures, the session note, a client that leaves while the
 * acting hook waits, a session that ends with lookups in flight, config
 * errors.
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

/* 192.0.2.1 reversed */
#define V4_NAME(zone) "1.2.0.192." zone
/* 2001:db8::1 reversed, nibble by nibble */
#define V6_NAME(zone)                                                          \
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2." zone

static int
setup(void **state)
{
    (void)state;
    mock_reset();
    mock_set_client("192.0.2.1", 40000);
    mock_set_helo("client.example.org", 1);
    mock_set_mail_from("alice@example.org");
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

static const char *
note_listed(void)
{
    return postern_note_get(mock_ctx(), POSTERN_NOTE_SESSION, "dnsbl.listed");
}

/* connect, helo, mail with the DNS answered meanwhile, then RCPT. */
static postern_result
session_to_rcpt(void *inst)
{
    assert_int_equal(call(POSTERN_HOOK_CONNECT, inst), POSTERN_CONTINUE);
    mock_dns_run();
    assert_int_equal(call(POSTERN_HOOK_HELO, inst), POSTERN_CONTINUE);
    assert_int_equal(call(POSTERN_HOOK_MAIL, inst), POSTERN_CONTINUE);
    return call(POSTERN_HOOK_RCPT, inst);
}

static void
test_listed_ipv4_rejected_at_rcpt(void **state)
{
    (void)state;
    void *inst = mock_create("{\"lists\": [{\"zone\": \"bl.test\"}]}", 0);
    mock_dns_add(V4_NAME("bl.test"), POSTERN_DNS_A, "127.0.0.2");
    long long listed = mock_counter("listed_total");

    assert_int_equal(call(POSTERN_HOOK_CONNECT, inst), POSTERN_CONTINUE);
    assert_int_equal(mock_dns_pending(), 1);
    assert_string_equal(mock_dns_pending_name(0), V4_NAME("bl.test"));
    assert_true(mock_dns_last_timeout() == 5.0);
    mock_dns_run();
    assert_int_equal(call(POSTERN_HOOK_HELO, inst), POSTERN_CONTINUE);
    /* the verdict is noted and logged at the first hook after it */
    assert_string_equal(note_listed(), "bl.test");
    assert_true(mock_log_find(POSTERN_LOG_INFO, "client=\"192.0.2.1\" "
                                                "listed=\"bl.test\" score=1 "
                                                "threshold=1") >= 0);
    assert_int_equal(call(POSTERN_HOOK_MAIL, inst), POSTERN_CONTINUE);
    assert_int_equal(call(POSTERN_HOOK_RCPT, inst), POSTERN_REJECT);
    assert_int_equal(mock_last_reply()->code, 554);
    assert_string_equal(mock_last_reply()->enhanced, "5.7.1");
    assert_string_equal(mock_last_reply()->text,
                        "Client host [192.0.2.1] blocked using bl.test");
    /* the next recipient: the same answer, no new lookup */
    assert_int_equal(call(POSTERN_HOOK_RCPT, inst), POSTERN_REJECT);
    assert_int_equal(mock_dns_lookup_count(), 1);
    /* counted once per listed client, in postern_dnsbl_listed_total */
    assert_true(listed >= 0);
    assert_int_equal(mock_counter("listed_total"), listed + 1);
    assert_int_equal(mock_resume_count(), 0);
    postern_module_descriptor.destroy(inst);
}

static void
test_ipv6_and_mapped_names(void **state)
{
    (void)state;
    void *inst = mock_create("{\"lists\": [{\"zone\": \"bl.test.\"}]}", 0);
    mock_dns_add(V6_NAME("bl.test"), POSTERN_DNS_A, "127.0.0.2");

    mock_set_client("2001:db8::1", 40000);
    assert_int_equal(call(POSTERN_HOOK_CONNECT, inst), POSTERN_CONTINUE);
    assert_string_equal(mock_dns_pending_name(0), V6_NAME("bl.test"));
    mock_dns_run();
    assert_int_equal(call(POSTERN_HOOK_RCPT, inst), POSTERN_REJECT);
    assert_string_equal(mock_last_reply()->text,
                        "Client host [2001:db8::1] blocked using bl.test");
    mock_end_session();

    /* a dual-stack listener: the IPv4 client's octets are asked */
    mock_set_client("::ffff:192.0.2.1", 40000);
    assert_int_equal(call(POSTERN_HOOK_CONNECT, inst), POSTERN_CONTINUE);
    assert_string_equal(mock_dns_pending_name(0), V4_NAME("bl.test"));
    mock_dns_run();
    assert_int_equal(call(POSTERN_HOOK_RCPT, inst), POSTERN_CONTINUE);
    assert_null(note_listed());
    postern_module_descriptor.destroy(inst);
}

static void
test_unlisted_passes(void **state)
{
    (void)state;
    void *inst = mock_create("{\"lists\": [{\"zone\": \"bl.test\"}]}", 0);
    mock_dns_add(V4_NAME("other.test"), POSTERN_DNS_A, "127.0.0.2");

    long long listed = mock_counter("listed_total");
    assert_int_equal(session_to_rcpt(inst), POSTERN_CONTINUE);
    assert_null(note_listed());
    assert_int_equal(mock_last_reply()->count, 0);
    assert_int_equal(mock_counter("listed_total"), listed);
    postern_module_descriptor.destroy(inst);
}

static void
test_codes(void **state)
{
    (void)state;
    void *inst =
        mock_create("{\"lists\": [{\"zone\": \"a.test\", \"codes\": "
                    "[\"127.0.0.2\", \"127.0.0.4/30\"]}, {\"zone\": "
                    "\"b.test\", \"codes\": [\"127.0.0.4/30\"]}, {\"zone\": "
                    "\"c.test\"}, {\"zone\": \"d.test\"}]}",
                    0);
    /* a: one answer outside, one inside; b: 127.0.0.3 is not in /30 */
    mock_dns_add(V4_NAME("a.test"), POSTERN_DNS_A, "127.0.0.3");
    mock_dns_add(V4_NAME("a.test"), POSTERN_DNS_A, "127.0.0.6");
    mock_dns_add(V4_NAME("b.test"), POSTERN_DNS_A, "127.0.0.3");
    /* c: default codes, any of 127.0.0.0/8; d: outside it */
    mock_dns_add(V4_NAME("c.test"), POSTERN_DNS_A, "127.1.2.3");
    mock_dns_add(V4_NAME("d.test"), POSTERN_DNS_A, "192.0.2.99");

    assert_int_equal(session_to_rcpt(inst), POSTERN_REJECT);
    assert_string_equal(note_listed(), "a.test c.test");
    assert_string_equal(mock_last_reply()->text,
                        "Client host [192.0.2.1] blocked using a.test, c.test");
    postern_module_descriptor.destroy(inst);
}

static void
test_weights_and_threshold(void **state)
{
    (void)state;
    const char *config =
        "{\"lists\": [{\"zone\": \"a.test\"}, {\"zone\": \"b.test\"}, "
        "{\"zone\": \"good.test\", \"weight\": -1.5}], \"threshold\": 2}";
    void *inst = mock_create(config, 0);

    /* one of two: noted, not enough */
    mock_dns_add(V4_NAME("a.test"), POSTERN_DNS_A, "127.0.0.2");
    assert_int_equal(session_to_rcpt(inst), POSTERN_CONTINUE);
    assert_string_equal(note_listed(), "a.test");
    assert_true(mock_log_find(POSTERN_LOG_INFO, "score=1 threshold=2") >= 0);
    mock_end_session();

    /* both: 2 reaches the threshold */
    mock_dns_add(V4_NAME("b.test"), POSTERN_DNS_A, "127.0.0.2");
    assert_int_equal(session_to_rcpt(inst), POSTERN_REJECT);
    assert_string_equal(note_listed(), "a.test b.test");
    assert_string_equal(mock_last_reply()->text,
                        "Client host [192.0.2.1] blocked using a.test, b.test");
    mock_end_session();

    /* a negative weight takes some back */
    mock_dns_add(V4_NAME("good.test"), POSTERN_DNS_A, "127.0.0.2");
    assert_int_equal(session_to_rcpt(inst), POSTERN_CONTINUE);
    assert_true(mock_log_find(POSTERN_LOG_INFO, "score=0.5 threshold=2") >= 0);
    postern_module_descriptor.destroy(inst);
}

static void
test_acting_hook_waits(void **state)
{
    (void)state;
    void *inst = mock_create("{\"lists\": [{\"zone\": \"a.test\"}, "
                             "{\"zone\": \"b.test\"}], \"timeout\": 4}",
                             0);
    mock_dns_add(V4_NAME("b.test"), POSTERN_DNS_A, "127.0.0.2");

    assert_int_equal(call(POSTERN_HOOK_CONNECT, inst), POSTERN_CONTINUE);
    assert_true(mock_dns_last_timeout() == 4.0);
    assert_int_equal(mock_dns_step(), 1); /* a.test answered, b.test not */
    mock_set_now(1700000001.5);
    assert_int_equal(call(POSTERN_HOOK_MAIL, inst), POSTERN_CONTINUE);
    assert_int_equal(call(POSTERN_HOOK_RCPT, inst), POSTERN_PENDING);
    /* b.test is asked again for the waiting call, within what is left */
    assert_int_equal(mock_dns_cancel_count(), 1);
    assert_int_equal(mock_dns_pending(), 1);
    assert_true(mock_dns_last_timeout() == 2.5);
    assert_int_equal(mock_resume_count(), 0);
    mock_dns_run();
    assert_int_equal(mock_resume_count(), 1);
    assert_int_equal(mock_last_resume(), POSTERN_REJECT);
    assert_int_equal(mock_last_reply()->code, 554);
    assert_string_equal(note_listed(), "b.test");
    postern_module_descriptor.destroy(inst);
}

static void
test_postmaster(void **state)
{
    (void)state;
    void *inst = mock_create("{\"lists\": [{\"zone\": \"bl.test\"}]}", 0);
    mock_dns_add(V4_NAME("bl.test"), POSTERN_DNS_A, "127.0.0.2");

    mock_set_rcpt_current("Postmaster");
    assert_int_equal(session_to_rcpt(inst), POSTERN_CONTINUE);
    mock_set_rcpt_current("postmaster@example.com");
    assert_int_equal(call(POSTERN_HOOK_RCPT, inst), POSTERN_CONTINUE);
    mock_set_rcpt_current("postmaster2@example.com");
    assert_int_equal(call(POSTERN_HOOK_RCPT, inst), POSTERN_REJECT);
    postern_module_descriptor.destroy(inst);
    mock_end_session();

    inst = mock_create(
        "{\"lists\": [{\"zone\": \"bl.test\"}], \"postmaster\": false}", 0);
    mock_set_rcpt_current("postmaster@example.com");
    assert_int_equal(session_to_rcpt(inst), POSTERN_REJECT);
    postern_module_descriptor.destroy(inst);
}

static void
test_act_at_connect_helo_mail(void **state)
{
    (void)state;
    void *inst =
        mock_create("{\"lists\": [{\"zone\": \"bl.test\"}], \"hook\": "
                    "\"connect\", \"code\": 550, \"enhanced\": \"5.7.99\"}",
                    0);
    mock_dns_add(V4_NAME("bl.test"), POSTERN_DNS_A, "127.0.0.2");

    /* connect waits for the answer; a greeting refusal is always 554 */
    assert_int_equal(call(POSTERN_HOOK_CONNECT, inst), POSTERN_PENDING);
    mock_dns_run();
    assert_int_equal(mock_resume_count(), 1);
    assert_int_equal(mock_last_resume(), POSTERN_REJECT);
    assert_int_equal(mock_last_reply()->code, 554);
    assert_string_equal(mock_last_reply()->enhanced, "5.7.99");
    postern_module_descriptor.destroy(inst);
    mock_end_session();

    inst = mock_create(
        "{\"lists\": [{\"zone\": \"bl.test\"}], \"hook\": \"helo\"}", 0);
    assert_int_equal(call(POSTERN_HOOK_CONNECT, inst), POSTERN_CONTINUE);
    mock_dns_run();
    assert_int_equal(call(POSTERN_HOOK_HELO, inst), POSTERN_REJECT);
    assert_int_equal(call(POSTERN_HOOK_MAIL, inst), POSTERN_REJECT);
    postern_module_descriptor.destroy(inst);
    mock_end_session();

    inst = mock_create(
        "{\"lists\": [{\"zone\": \"bl.test\"}], \"hook\": \"mail\"}", 0);
    assert_int_equal(call(POSTERN_HOOK_CONNECT, inst), POSTERN_CONTINUE);
    mock_dns_run();
    assert_int_equal(call(POSTERN_HOOK_HELO, inst), POSTERN_CONTINUE);
    assert_int_equal(call(POSTERN_HOOK_MAIL, inst), POSTERN_REJECT);
    postern_module_descriptor.destroy(inst);
    mock_end_session();

    /* attached to rcpt only: the lookups start there */
    inst = mock_create("{\"lists\": [{\"zone\": \"bl.test\"}]}", 0);
    size_t before = mock_dns_lookup_count();
    assert_int_equal(call(POSTERN_HOOK_RCPT, inst), POSTERN_PENDING);
    assert_int_equal(mock_dns_lookup_count(), before + 1);
    assert_int_equal(mock_dns_cancel_count(), 0);
    mock_dns_run();
    assert_int_equal(mock_last_resume(), POSTERN_REJECT);
    postern_module_descriptor.destroy(inst);
}

static void
test_skipped_clients(void **state)
{
    (void)state;
    void *inst =
        mock_create("{\"lists\": [{\"zone\": \"bl.test\"}], \"allow\": "
                    "[\"198.51.100.0/24\", \"192.0.2.0/25\", "
                    "\"2001:db8::/32\"]}",
                    0);
    mock_dns_add(V4_NAME("bl.test"), POSTERN_DNS_A, "127.0.0.2");
    mock_dns_add(V6_NAME("bl.test"), POSTERN_DNS_A, "127.0.0.2");

    /* allowed networks, IPv4 (also mapped) and IPv6 */
    const char *allowed[] = {"192.0.2.1", "::ffff:192.0.2.1", "2001:db8::1"};
    for (size_t i = 0; i < 3; i++) {
        mock_set_client(allowed[i], 40000);
        assert_int_equal(session_to_rcpt(inst), POSTERN_CONTINUE);
    }
    /* relay_networks */
    mock_set_client("192.0.2.200", 40000);
    mock_set_relay(1);
    assert_int_equal(session_to_rcpt(inst), POSTERN_CONTINUE);
    /* authenticated before the first hook */
    mock_set_relay(0);
    mock_set_auth_user("alice");
    assert_int_equal(session_to_rcpt(inst), POSTERN_CONTINUE);
    assert_int_equal(mock_dns_lookup_count(), 0);
    postern_module_descriptor.destroy(inst);
    mock_end_session();

    /* authenticated after the lookups started */
    inst = mock_create("{\"lists\": [{\"zone\": \"bl.test\"}]}", 0);
    mock_set_client("192.0.2.1", 40000);
    mock_set_auth_user(NULL);
    assert_int_equal(call(POSTERN_HOOK_CONNECT, inst), POSTERN_CONTINUE);
    mock_dns_run();
    mock_set_auth_user("alice");
    assert_int_equal(call(POSTERN_HOOK_RCPT, inst), POSTERN_CONTINUE);
    assert_int_equal(mock_dns_lookup_count(), 1);
    mock_set_auth_user(NULL);
    assert_int_equal(call(POSTERN_HOOK_RCPT, inst), POSTERN_REJECT);
    postern_module_descriptor.destroy(inst);
}

static void
test_dns_errors(void **state)
{
    (void)state;
    const char *lists = "\"lists\": [{\"zone\": \"a.test\"}, "
                        "{\"zone\": \"b.test\"}], \"threshold\": 2";
    char config[256];

    /* default: a failed lookup is "not listed" */
    snprintf(config, sizeof config, "{%s}", lists);
    void *inst = mock_create(config, 0);
    mock_dns_fail(V4_NAME("a.test"), POSTERN_DNS_TEMPFAIL);
    mock_dns_add(V4_NAME("b.test"), POSTERN_DNS_A, "127.0.0.2");
    assert_int_equal(session_to_rcpt(inst), POSTERN_CONTINUE);
    assert_true(mock_log_find(POSTERN_LOG_INFO, "failed=\"a.test\"") >= 0);
    postern_module_descriptor.destroy(inst);
    mock_end_session();

    /* tempfail: only when the failed list could have reached the
     * threshold (b.test lists: 1 + a.test's 1) */
    snprintf(config, sizeof config, "{%s, \"on_error\": \"tempfail\"}", lists);
    inst = mock_create(config, 0);
    assert_int_equal(session_to_rcpt(inst), POSTERN_TEMPFAIL);
    assert_int_equal(mock_last_reply()->code, 451);
    assert_string_equal(mock_last_reply()->enhanced, "4.7.1");
    assert_string_equal(mock_last_reply()->text,
                        "Client host [192.0.2.1] could not be checked against "
                        "a.test, try again later");
    mock_end_session();
    mock_reset();
    mock_set_client("192.0.2.1", 40000);
    mock_set_rcpt_current("bob@example.com");
    mock_dns_fail(V4_NAME("a.test"), POSTERN_DNS_ERROR);
    assert_int_equal(session_to_rcpt(inst), POSTERN_CONTINUE); /* 0 + 1 < 2 */
    postern_module_descriptor.destroy(inst);
    mock_end_session();

    /* the service refuses the lookups: all failed at once */
    inst = mock_create("{\"lists\": [{\"zone\": \"a.test\"}], \"on_error\": "
                       "\"tempfail\", \"hook\": \"connect\"}",
                       0);
    mock_dns_refuse(1);
    assert_int_equal(call(POSTERN_HOOK_CONNECT, inst), POSTERN_TEMPFAIL);
    assert_int_equal(mock_last_reply()->code, 421); /* at the greeting */
    postern_module_descriptor.destroy(inst);
}

static void
test_note_appended(void **state)
{
    (void)state;
    void *inst = mock_create("{\"lists\": [{\"zone\": \"bl.test\"}]}", 0);
    mock_dns_add(V4_NAME("bl.test"), POSTERN_DNS_A, "127.0.0.2");
    char *other = strdup("other.test");
    assert_non_null(other);
    /* as another dnsbl instance would have left it */
    assert_int_equal(postern_note_set(mock_ctx(), POSTERN_NOTE_SESSION,
                                      "dnsbl.listed", other, free),
                     0);
    assert_int_equal(session_to_rcpt(inst), POSTERN_REJECT);
    assert_string_equal(note_listed(), "other.test bl.test");
    postern_module_descriptor.destroy(inst);
}

static void
test_client_leaves_while_waiting(void **state)
{
    (void)state;
    void *inst = mock_create(
        "{\"lists\": [{\"zone\": \"a.test\"}, {\"zone\": \"b.test\"}]}", 0);

    assert_int_equal(call(POSTERN_HOOK_CONNECT, inst), POSTERN_CONTINUE);
    assert_int_equal(call(POSTERN_HOOK_RCPT, inst), POSTERN_PENDING);
    assert_int_equal(mock_dns_pending(), 2);
    mock_set_orphaned(1);
    mock_dns_cancel_all();
    /* resumed once, the other lookup cancelled, nothing in flight */
    assert_int_equal(mock_resume_count(), 1);
    assert_int_equal(mock_last_resume(), POSTERN_CONTINUE);
    assert_int_equal(mock_dns_pending(), 0);
    assert_true(mock_log_find(POSTERN_LOG_DEBUG, "check abandoned") >= 0);
    mock_set_orphaned(0);
    mock_end_session(); /* the session goes, with the note */
    postern_module_descriptor.destroy(inst);
}

static void
test_session_ends_mid_lookup(void **state)
{
    (void)state;
    void *inst = mock_create(
        "{\"lists\": [{\"zone\": \"a.test\"}, {\"zone\": \"b.test\"}]}", 0);

    assert_int_equal(call(POSTERN_HOOK_CONNECT, inst), POSTERN_CONTINUE);
    assert_int_equal(mock_dns_step(), 1);
    mock_end_session();
    assert_int_equal(mock_dns_cancel_count(), 1);
    assert_int_equal(mock_dns_pending(), 0);
    assert_int_equal(mock_resume_count(), 0);
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
    /* the shape the benchmark writes */
    void *inst = mock_create(
        "{\"lists\": [{\"zone\": \"bl.example.test\", \"weight\": 1, "
        "\"codes\": [\"127.0.0.2\", \"127.0.0.4/30\"]}], \"threshold\": 1, "
        "\"allow\": [\"192.0.2.0/24\", \"2001:db8::/32\"], \"hook\": "
        "\"rcpt\", \"code\": 554, \"enhanced\": \"5.7.1\", \"timeout\": 5, "
        "\"postmaster\": true, \"on_error\": \"continue\"}",
        1);
    assert_non_null(inst);
    postern_module_descriptor.destroy(inst);

    expect_error("{}", "lists", "expected an array");
    expect_error("{\"lists\": []}", "lists", "1 to 64");
    expect_error("{\"lists\": [\"bl.test\"]}", "lists[0]",
                 "expected an object");
    expect_error("{\"lists\": [{\"weight\": 1}]}", "lists[0]", "\"zone\"");
    expect_error(
        "{\"lists\": [{\"zone\": \"a.test\"}, {\"zone\": \"b..test\"}]}",
        "lists[1].zone", "DNS zone");
    expect_error("{\"lists\": [{\"zone\": \"a test\"}]}", "lists[0].zone",
                 "DNS zone");
    expect_error("{\"lists\": [{\"zone\": \"a.test\", \"weight\": \"1\"}]}",
                 "lists[0].weight", "between -1000 and 1000");
    expect_error("{\"lists\": [{\"zone\": \"a.test\", \"codes\": "
                 "[\"127.0.0.2\", \"::1\"]}]}",
                 "lists[0].codes[1]", "IPv4");
    expect_error("{\"lists\": [{\"zone\": \"a.test\", \"codes\": "
                 "[\"127.0.0.0/33\"]}]}",
                 "lists[0].codes[0]", "IPv4");
    expect_error("{\"lists\": [{\"zone\": \"a.test\", \"codes\": []}]}",
                 "lists[0].codes", "at least one");
    expect_error("{\"lists\": [{\"zone\": \"a.test\", \"colour\": 1}]}",
                 "lists[0].colour", "unknown key");
    expect_error("{\"lists\": [{\"zone\": \"a.test\"}], \"threshold\": 0}",
                 "threshold", "above 0");
    expect_error("{\"lists\": [{\"zone\": \"a.test\"}], \"allow\": "
                 "[\"10.0.0.0/8\", \"nonsense\"]}",
                 "allow[1]", "CIDR");
    expect_error("{\"lists\": [{\"zone\": \"a.test\"}], \"hook\": \"data\"}",
                 "hook", "\"rcpt\"");
    expect_error("{\"lists\": [{\"zone\": \"a.test\"}], \"code\": 451}", "code",
                 "between 500 and 599");
    expect_error("{\"lists\": [{\"zone\": \"a.test\"}], \"enhanced\": "
                 "\"4.7.1\"}",
                 "enhanced", "class 5");
    expect_error("{\"lists\": [{\"zone\": \"a.test\"}], \"timeout\": 0}",
                 "timeout", "above 0");
    expect_error("{\"lists\": [{\"zone\": \"a.test\"}], \"postmaster\": 1}",
                 "postmaster", "true or false");
    expect_error("{\"lists\": [{\"zone\": \"a.test\"}], \"on_error\": "
                 "\"reject\"}",
                 "on_error", "\"tempfail\"");
    expect_error("{\"lists\": [{\"zone\": \"a.test\"}], \"list\": []}", "list",
                 "unknown key");
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_listed_ipv4_rejected_at_rcpt),
        T(test_ipv6_and_mapped_names),
        T(test_unlisted_passes),
        T(test_codes),
        T(test_weights_and_threshold),
        T(test_acting_hook_waits),
        T(test_postmaster),
        T(test_act_at_connect_helo_mail),
        T(test_skipped_clients),
        T(test_dns_errors),
        T(test_note_appended),
        T(test_client_leaves_while_waiting),
        T(test_session_ends_mid_lookup),
        T(test_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
