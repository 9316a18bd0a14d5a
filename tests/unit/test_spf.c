/*
 * test_spf.c - the spf module over the mock core and its in-memory DNS:
 * verdicts and replies at MAIL or RCPT, the HELO and MAIL FROM
 * identities, the null sender, skipped clients, the headers, the
 * transaction note, a client that leaves mid-check, config errors.
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

static int
setup(void **state)
{
    (void)state;
    mock_reset();
    mock_set_client("192.0.2.1", 40000);
    mock_set_helo("mail.example.org", 1);
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

static postern_result
call(postern_hook hook, void *inst)
{
    return postern_module_descriptor.handlers[hook](mock_ctx(), inst);
}

/* The MAIL hook, with its DNS answered: what it decided, at once or by
 * its resume. */
static postern_result
run_mail(void *inst)
{
    int before = mock_resume_count();
    postern_result r = call(POSTERN_HOOK_MAIL, inst);

    if (r != POSTERN_PENDING) {
        assert_int_equal(mock_dns_pending(), 0);
        return r;
    }
    assert_int_equal(mock_resume_count(), before); /* never inside */
    mock_dns_run();
    assert_int_equal(mock_resume_count(), before + 1);
    assert_int_equal(mock_dns_pending(), 0);
    return mock_last_resume();
}

static const char *
note_result(void)
{
    return postern_note_get(mock_ctx(), POSTERN_NOTE_TRANSACTION, "spf.result");
}

static const char *
header(const char *name)
{
    for (size_t i = 0; i < mock_header_count(); i++)
        if (strcmp(mock_header_name(i), name) == 0)
            return mock_header_value(i);
    return NULL;
}

static void
zone_example_org(void)
{
    mock_dns_add("example.org", POSTERN_DNS_TXT,
                 "v=spf1 ip4:192.0.2.0/25 a:relay.example.org -all");
    mock_dns_add("example.org", POSTERN_DNS_TXT, "some other text");
    mock_dns_add("relay.example.org", POSTERN_DNS_A, "198.51.100.7");
    mock_dns_add("mail.example.org", POSTERN_DNS_A, "192.0.2.1");
}

static void
test_descriptor(void **state)
{
    (void)state;
    assert_string_equal(postern_module_descriptor.name, "spf");
    assert_non_null(postern_module_descriptor.handlers[POSTERN_HOOK_MAIL]);
    assert_non_null(postern_module_descriptor.handlers[POSTERN_HOOK_RCPT]);
    assert_non_null(postern_module_descriptor.handlers[POSTERN_HOOK_MESSAGE]);
}

static void
test_pass_and_headers(void **state)
{
    (void)state;
    zone_example_org();
    void *inst = mock_create("{\"authserv_id\": \"mx.example.net\"}", 0);
    assert_int_equal(run_mail(inst), POSTERN_CONTINUE);
    assert_string_equal(note_result(), "pass");
    assert_int_equal(call(POSTERN_HOOK_MESSAGE, inst), POSTERN_CONTINUE);

    const char *rs = header("Received-SPF");
    assert_non_null(rs);
    assert_true(strncmp(rs,
                        "pass (mx.example.net: domain of example.org "
                        "designates 192.0.2.1)",
                        64) == 0);
    assert_non_null(strstr(rs, "receiver=mx.example.net;"));
    assert_non_null(strstr(rs, "client-ip=192.0.2.1;"));
    assert_non_null(strstr(rs, "envelope-from=\"alice@example.org\";"));
    assert_non_null(strstr(rs, "helo=\"mail.example.org\";"));
    assert_non_null(strstr(rs, "identity=mailfrom;"));
    assert_non_null(strstr(rs, "mechanism=\"ip4:192.0.2.0/25\""));

    const char *ar = header("Authentication-Results");
    assert_non_null(ar);
    assert_string_equal(ar, "mx.example.net;\r\n\tspf=pass "
                            "smtp.mailfrom=alice@example.org;\r\n\t"
                            "spf=none smtp.helo=mail.example.org");
    postern_module_descriptor.destroy(inst);
}

/* Without authserv_id the headers carry the gateway's configured name. */
static void
test_authserv_id_defaults_to_hostname(void **state)
{
    (void)state;
    zone_example_org();
    void *inst = mock_create("{}", 0);
    assert_int_equal(run_mail(inst), POSTERN_CONTINUE);
    assert_int_equal(call(POSTERN_HOOK_MESSAGE, inst), POSTERN_CONTINUE);
    const char *ar = header("Authentication-Results");
    assert_non_null(ar);
    assert_true(strncmp(ar, "mx.mock.test;", 13) == 0);
    assert_non_null(strstr(header("Received-SPF"), "receiver=mx.mock.test;"));
    postern_module_descriptor.destroy(inst);
}

static void
test_fail_rejects_at_mail(void **state)
{
    (void)state;
    zone_example_org();
    mock_set_client("203.0.113.9", 40000);
    void *inst = mock_create("{}", 0);
    assert_int_equal(run_mail(inst), POSTERN_REJECT);
    assert_int_equal(mock_last_reply()->code, 550);
    assert_string_equal(mock_last_reply()->enhanced, "5.7.23");
    assert_non_null(strstr(mock_last_reply()->text, "SPF fail"));
    assert_string_equal(note_result(), "fail");
    postern_module_descriptor.destroy(inst);
}

static void
test_fail_explanation(void **state)
{
    (void)state;
    mock_dns_add("example.org", POSTERN_DNS_TXT, "v=spf1 -all exp=why.%{d}");
    mock_dns_add("why.example.org", POSTERN_DNS_TXT,
                 "%{i} may not send for %{d}, see %{r} (%{l})");
    mock_set_client("203.0.113.9", 40000);
    mock_set_mail_from("j\xc3\xb6rg@example.org");
    void *inst = mock_create("{\"authserv_id\": \"mx.example.net\"}", 0);
    assert_int_equal(run_mail(inst), POSTERN_REJECT);
    assert_string_equal(mock_last_reply()->enhanced, "5.7.23");
    assert_non_null(strstr(mock_last_reply()->text,
                           "203.0.113.9 may not send for example.org, see "
                           "mx.example.net (j??rg)"));
    postern_module_descriptor.destroy(inst);
}

static void
test_temperror_tempfails(void **state)
{
    (void)state;
    mock_dns_fail("example.org", POSTERN_DNS_TEMPFAIL);
    void *inst = mock_create("{\"check_helo\": false}", 0);
    assert_int_equal(run_mail(inst), POSTERN_TEMPFAIL);
    assert_int_equal(mock_last_reply()->code, 451);
    assert_string_equal(mock_last_reply()->enhanced, "4.7.24");
    assert_string_equal(note_result(), "temperror");
    postern_module_descriptor.destroy(inst);
}

static void
test_configured_actions(void **state)
{
    (void)state;
    mock_dns_add("example.org", POSTERN_DNS_TXT, "v=spf1 ~all");
    mock_dns_add("bad.example.org", POSTERN_DNS_TXT, "v=spf1 ip4:300.1.1.1");
    void *inst = mock_create("{\"actions\": {\"softfail\": \"tempfail\", "
                             "\"permerror\": \"reject\", \"fail\": "
                             "\"continue\"}}",
                             0);
    assert_int_equal(run_mail(inst), POSTERN_TEMPFAIL);
    assert_int_equal(mock_last_reply()->code, 451);
    assert_string_equal(mock_last_reply()->enhanced, "4.7.23");

    mock_end_transaction();
    mock_set_mail_from("bob@bad.example.org");
    assert_int_equal(run_mail(inst), POSTERN_REJECT);
    assert_int_equal(mock_last_reply()->code, 550);
    assert_string_equal(mock_last_reply()->enhanced, "5.7.24");
    assert_string_equal(note_result(), "permerror");
    postern_module_descriptor.destroy(inst);
}

static void
test_act_at_rcpt(void **state)
{
    (void)state;
    zone_example_org();
    mock_set_client("203.0.113.9", 40000);
    void *inst = mock_create("{\"hook\": \"rcpt\"}", 0);
    assert_int_equal(run_mail(inst), POSTERN_CONTINUE);
    assert_string_equal(note_result(), "fail");
    mock_set_rcpt_current("bob@example.net");
    assert_int_equal(call(POSTERN_HOOK_RCPT, inst), POSTERN_REJECT);
    assert_int_equal(mock_last_reply()->code, 550);
    assert_string_equal(mock_last_reply()->enhanced, "5.7.23");
    postern_module_descriptor.destroy(inst);

    /* Acting at MAIL, the rcpt hook has nothing to say. */
    inst = mock_create("{\"actions\": {\"fail\": \"continue\"}}", 0);
    mock_end_transaction();
    assert_int_equal(run_mail(inst), POSTERN_CONTINUE);
    assert_int_equal(call(POSTERN_HOOK_RCPT, inst), POSTERN_CONTINUE);
    postern_module_descriptor.destroy(inst);
}

static void
test_null_sender(void **state)
{
    (void)state;
    mock_set_mail_from("");
    mock_dns_add("mail.example.org", POSTERN_DNS_TXT, "v=spf1 a -all");
    mock_dns_add("mail.example.org", POSTERN_DNS_A, "192.0.2.1");
    void *inst = mock_create("{\"authserv_id\": \"mx.example.net\"}", 0);
    assert_int_equal(run_mail(inst), POSTERN_CONTINUE);
    assert_string_equal(note_result(), "pass");
    /* One check of mail.example.org: its TXT and its A record. */
    assert_int_equal(mock_dns_lookup_count(), 2);
    assert_int_equal(call(POSTERN_HOOK_MESSAGE, inst), POSTERN_CONTINUE);
    const char *rs = header("Received-SPF");
    assert_non_null(strstr(rs, "identity=helo;"));
    assert_null(strstr(rs, "envelope-from"));
    assert_string_equal(header("Authentication-Results"),
                        "mx.example.net;\r\n\tspf=pass "
                        "smtp.mailfrom=postmaster@mail.example.org;\r\n\t"
                        "spf=pass smtp.helo=mail.example.org");
    postern_module_descriptor.destroy(inst);
}

static void
test_helo_fail_decides(void **state)
{
    (void)state;
    mock_dns_add("mail.example.org", POSTERN_DNS_TXT, "v=spf1 -all");
    mock_dns_add("example.org", POSTERN_DNS_TXT, "v=spf1 +all");
    void *inst = mock_create("{}", 0);
    assert_int_equal(run_mail(inst), POSTERN_REJECT);
    assert_non_null(strstr(mock_last_reply()->text, "HELO mail.example.org"));
    assert_int_equal(mock_dns_lookup_count(), 1); /* no MAIL FROM check */
    postern_module_descriptor.destroy(inst);

    /* Without check_helo, the MAIL FROM identity decides. */
    mock_end_transaction();
    inst = mock_create("{\"check_helo\": false}", 0);
    assert_int_equal(run_mail(inst), POSTERN_CONTINUE);
    assert_string_equal(note_result(), "pass");
    postern_module_descriptor.destroy(inst);
}

static void
test_skipped_clients(void **state)
{
    (void)state;
    zone_example_org();
    mock_set_client("203.0.113.9", 40000);
    void *inst = mock_create(
        "{\"trusted_networks\": [\"198.51.100.0/24\", \"203.0.113.8/30\", "
        "\"2001:db8::/32\"]}",
        0);
    assert_int_equal(call(POSTERN_HOOK_MAIL, inst), POSTERN_CONTINUE);
    assert_int_equal(mock_dns_lookup_count(), 0);
    assert_null(note_result());

    mock_set_client("2001:db8::25", 40000);
    assert_int_equal(call(POSTERN_HOOK_MAIL, inst), POSTERN_CONTINUE);
    assert_int_equal(mock_dns_lookup_count(), 0);

    mock_set_client("203.0.113.12", 40000);
    mock_set_auth_user("alice");
    assert_int_equal(call(POSTERN_HOOK_MAIL, inst), POSTERN_CONTINUE);
    assert_int_equal(mock_dns_lookup_count(), 0);

    mock_set_auth_user(NULL);
    assert_int_equal(run_mail(inst), POSTERN_REJECT); /* not trusted */
    postern_module_descriptor.destroy(inst);
}

static void
test_decided_without_dns(void **state)
{
    (void)state;
    /* Neither identity is a domain SPF can check: none, at once. */
    mock_set_helo("[192.0.2.1]", 1);
    mock_set_mail_from("alice@[192.0.2.1]");
    void *inst = mock_create("{\"actions\": {\"none\": \"reject\"}}", 0);
    assert_int_equal(call(POSTERN_HOOK_MAIL, inst), POSTERN_REJECT);
    assert_int_equal(mock_dns_lookup_count(), 0);
    assert_string_equal(mock_last_reply()->enhanced, "5.7.1");
    assert_string_equal(note_result(), "none");
    postern_module_descriptor.destroy(inst);
}

static void
test_name_the_service_refuses(void **state)
{
    (void)state;
    /* %{l} brings a space: the name is never asked for, it matches
     * nothing (a void lookup), and the check goes on. */
    mock_dns_add("example.org", POSTERN_DNS_TXT,
                 "v=spf1 exists:%{l}.list.example.org ~all");
    mock_set_mail_from("\"john doe\"@example.org");
    void *inst = mock_create("{\"check_helo\": false}", 0);
    mock_dns_refuse(0);
    assert_int_equal(run_mail(inst), POSTERN_CONTINUE);
    assert_string_equal(note_result(), "softfail");
    assert_int_equal(mock_dns_lookup_count(), 1); /* the TXT only */
    postern_module_descriptor.destroy(inst);
}

static void
test_check_timeout(void **state)
{
    (void)state;
    mock_dns_add("example.org", POSTERN_DNS_TXT, "v=spf1 +all");
    void *inst = mock_create("{\"check_helo\": false}", 0);

    /* Finished in time: the timer is cancelled. */
    assert_int_equal(call(POSTERN_HOOK_MAIL, inst), POSTERN_PENDING);
    assert_int_equal(mock_timers_active(), 1);
    assert_true(mock_timer_seconds() == 20);
    mock_dns_run();
    assert_int_equal(mock_last_resume(), POSTERN_CONTINUE);
    assert_int_equal(mock_timers_active(), 0);
    postern_module_descriptor.destroy(inst);

    /* Not in time: temperror, the lookup in flight cancelled. */
    mock_end_transaction();
    inst = mock_create("{\"check_timeout\": 5}", 0);
    assert_int_equal(call(POSTERN_HOOK_MAIL, inst), POSTERN_PENDING);
    assert_true(mock_timer_seconds() == 5);
    assert_int_equal(mock_dns_pending(), 1);
    assert_int_equal(mock_timer_fire(), 1);
    assert_int_equal(mock_resume_count(), 2);
    assert_int_equal(mock_last_resume(), POSTERN_TEMPFAIL);
    assert_string_equal(mock_last_reply()->enhanced, "4.7.24");
    assert_non_null(strstr(mock_last_reply()->text, "HELO mail.example.org"));
    assert_int_equal(mock_dns_pending(), 0);
    assert_int_equal(mock_dns_cancel_count(), 1);
    assert_string_equal(note_result(), "temperror");
    assert_int_equal(call(POSTERN_HOOK_MESSAGE, inst), POSTERN_CONTINUE);
    assert_non_null(
        strstr(header("Received-SPF"), "problem=\"no result within 5 s\""));
    postern_module_descriptor.destroy(inst);

    /* Without a limit, no timer. */
    mock_end_transaction();
    inst = mock_create("{\"check_timeout\": 0}", 0);
    assert_int_equal(call(POSTERN_HOOK_MAIL, inst), POSTERN_PENDING);
    assert_int_equal(mock_timers_active(), 0);
    mock_dns_run();
    postern_module_descriptor.destroy(inst);
}

static void
test_lookup_refused(void **state)
{
    (void)state;
    mock_dns_refuse(1);
    void *inst = mock_create("{}", 0);
    assert_int_equal(call(POSTERN_HOOK_MAIL, inst), POSTERN_TEMPFAIL);
    assert_string_equal(note_result(), "temperror");
    postern_module_descriptor.destroy(inst);
}

static void
test_client_leaves(void **state)
{
    (void)state;
    mock_dns_add("example.org", POSTERN_DNS_TXT,
                 "v=spf1 include:a.example.org include:b.example.org -all");
    mock_dns_add("a.example.org", POSTERN_DNS_TXT, "v=spf1 mx -all");
    mock_dns_add("a.example.org", POSTERN_DNS_MX, "10 mx1.example.org");
    void *inst = mock_create("{\"check_helo\": false}", 0);

    /* At every depth of the check, the client leaves. */
    for (int steps = 0; steps < 5; steps++) {
        mock_end_transaction();
        int resumes = mock_resume_count();
        mock_set_orphaned(0);
        assert_int_equal(call(POSTERN_HOOK_MAIL, inst), POSTERN_PENDING);
        for (int i = 0; i < steps; i++)
            assert_int_equal(mock_dns_step(), 1);
        assert_int_equal(mock_dns_pending(), 1);
        mock_set_orphaned(1);
        assert_int_equal(mock_dns_cancel_all(), 1);
        assert_int_equal(mock_resume_count(), resumes + 1);
        assert_int_equal(mock_last_resume(), POSTERN_CONTINUE);
        assert_true(mock_log_find(POSTERN_LOG_DEBUG, "check abandoned") >= 0);
        assert_int_equal(mock_dns_pending(), 0);
    }
    mock_set_orphaned(0);
    postern_module_descriptor.destroy(inst);
}

static void
test_message_without_verdict(void **state)
{
    (void)state;
    void *inst = mock_create("{}", 0);
    assert_int_equal(call(POSTERN_HOOK_MESSAGE, inst), POSTERN_CONTINUE);
    assert_int_equal(mock_header_count(), 0);
    postern_module_descriptor.destroy(inst);

    zone_example_org();
    inst = mock_create("{\"add_headers\": false}", 0);
    assert_int_equal(run_mail(inst), POSTERN_CONTINUE);
    assert_int_equal(call(POSTERN_HOOK_MESSAGE, inst), POSTERN_CONTINUE);
    assert_int_equal(mock_header_count(), 0);
    postern_module_descriptor.destroy(inst);
}

static void
expect_error(const char *config, const char *path, const char *text)
{
    mock_reset();
    assert_null(mock_create(config, 0));
    assert_string_equal(mock_init_error_path(), path);
    assert_non_null(strstr(mock_init_error_text(), text));
}

static void
test_bad_config(void **state)
{
    (void)state;
    expect_error("{\"frobnicate\": 1}", "frobnicate", "unknown key");
    expect_error("{\"actions\": []}", "actions", "expected an object");
    expect_error("{\"actions\": {\"hardfail\": \"reject\"}}",
                 "actions.hardfail", "unknown SPF result");
    expect_error("{\"actions\": {\"fail\": \"drop\"}}", "actions.fail",
                 "expected \"continue\", \"reject\" or \"tempfail\"");
    expect_error("{\"hook\": \"data\"}", "hook", "expected \"mail\"");
    expect_error("{\"check_helo\": 1}", "check_helo", "true or false");
    expect_error("{\"add_headers\": \"yes\"}", "add_headers", "true or false");
    expect_error("{\"dns_timeout\": -1}", "dns_timeout", "seconds");
    expect_error("{\"check_timeout\": 301}", "check_timeout", "seconds");
    expect_error("{\"authserv_id\": \"a b\"}", "authserv_id", "host name");
    expect_error("{\"trusted_networks\": \"10.0.0.0/8\"}", "trusted_networks",
                 "expected an array");
    expect_error("{\"trusted_networks\": [\"10.0.0.0/8\", \"10.0.0.0/33\"]}",
                 "trusted_networks[1]", "CIDR");
    expect_error("{\"trusted_networks\": [\"::1/129\"]}", "trusted_networks[0]",
                 "CIDR");
    mock_reset();
    void *inst = mock_create("{\"actions\": {\"none\": \"continue\", "
                             "\"neutral\": \"continue\", \"pass\": "
                             "\"continue\", \"fail\": \"reject\", "
                             "\"softfail\": \"continue\", \"temperror\": "
                             "\"tempfail\", \"permerror\": \"continue\"}, "
                             "\"hook\": \"mail\", \"check_helo\": true, "
                             "\"add_headers\": true, \"dns_timeout\": 5, "
                             "\"check_timeout\": 30, "
                             "\"authserv_id\": \"mx.example.net\", "
                             "\"trusted_networks\": [\"127.0.0.1\"]}",
                             1);
    postern_module_descriptor.destroy(inst);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_descriptor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pass_and_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_authserv_id_defaults_to_hostname,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_fail_rejects_at_mail, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fail_explanation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_temperror_tempfails, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_configured_actions, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_act_at_rcpt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_null_sender, setup, teardown),
        cmocka_unit_test_setup_teardown(test_helo_fail_decides, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_skipped_clients, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decided_without_dns, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_name_the_service_refuses, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_check_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lookup_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_leaves, setup, teardown),
        cmocka_unit_test_setup_teardown(test_message_without_verdict, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_config, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
