/*
 * test_milter.c - the milter module's pure parts: the packet codec (what
 * postern sends, byte for byte; how the milter's stream is cut), the
 * option negotiation answer, every reply's data checked against its
 * command, reply codes (multi-line, enhanced codes, Sendmail's %%), macro
 * lists, and the instance config (socket syntaxes, errors naming the
 * path). The conversation itself runs against a scripted milter in
 * tests/integration/test_milter.py.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "../../modules/milter/milter.h"
#include "mock_core.h"

static int
setup(void **state)
{
    (void)state;
    mock_reset();
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    mock_milter_clear();
    mock_cleanup();
    return 0;
}

static struct milter_packet
pkt(char cmd, const void *data, size_t len)
{
    return (struct milter_packet){.cmd = cmd, .data = data, .len = len};
}

/* --- building ------------------------------------------------------------- */

static void
test_build_optneg(void **state)
{
    (void)state;
    struct milter_buf b = {0};
    size_t start;

    assert_int_equal(milter_packet_begin(&b, SMFIC_OPTNEG, &start), 0);
    assert_int_equal(milter_packet_add_u32(&b, 6), 0);
    assert_int_equal(milter_packet_add_u32(&b, 0x1ff), 0);
    assert_int_equal(milter_packet_add_u32(&b, MILTER_PROTOCOL_OFFERED), 0);
    assert_int_equal(milter_packet_end(&b, start), 0);
    static const uint8_t want[] = {0, 0, 0, 13,   'O', 0,    0,    0,   6,
                                   0, 0, 1, 0xff, 0,   0x1f, 0xf7, 0xff};
    assert_int_equal(b.len, sizeof want);
    assert_memory_equal(b.data, want, sizeof want);
    milter_buf_free(&b);
}

static void
test_build_strings_two_packets(void **state)
{
    (void)state;
    struct milter_buf b = {0};
    size_t start;

    assert_int_equal(milter_packet_begin(&b, SMFIC_MAIL, &start), 0);
    assert_int_equal(milter_packet_add_str(&b, "<a@b>"), 0);
    assert_int_equal(milter_packet_add_str(&b, "SIZE=10"), 0);
    assert_int_equal(milter_packet_end(&b, start), 0);
    assert_int_equal(milter_packet_begin(&b, SMFIC_CONNECT, &start), 0);
    assert_int_equal(milter_packet_add_str(&b, "[127.0.0.1]"), 0);
    assert_int_equal(milter_packet_add(&b, "4", 1), 0);
    assert_int_equal(milter_packet_add_u16(&b, 25), 0);
    assert_int_equal(milter_packet_add_str(&b, "127.0.0.1"), 0);
    assert_int_equal(milter_packet_end(&b, start), 0);
    static const char want[] = "\0\0\0\x0fM<a@b>\0SIZE=10\0"
                               "\0\0\0\x1a"
                               "C[127.0.0.1]\0"
                               "4\0\x19"
                               "127.0.0.1";
    assert_int_equal(b.len, sizeof want); /* the final NUL is the last */
    assert_memory_equal(b.data, want, sizeof want);

    /* And back: two packets, cut where they end. */
    struct milter_packet p;
    size_t used;
    assert_int_equal(milter_packet_decode(b.data, b.len, 1000, &p, &used),
                     MILTER_DECODE_OK);
    assert_int_equal(p.cmd, 'M');
    assert_int_equal(p.len, 14);
    assert_int_equal(used, 19);
    assert_int_equal(
        milter_packet_decode(b.data + used, b.len - used, 1000, &p, &used),
        MILTER_DECODE_OK);
    assert_int_equal(p.cmd, 'C');
    milter_buf_free(&b);
}

static void
test_decode_partial_and_garbage(void **state)
{
    (void)state;
    struct milter_packet p;
    size_t used = 0;
    const uint8_t cont[] = {0, 0, 0, 1, 'c'};

    for (size_t n = 0; n < sizeof cont; n++)
        assert_int_equal(milter_packet_decode(cont, n, 100, &p, &used),
                         MILTER_DECODE_MORE);
    assert_int_equal(milter_packet_decode(cont, sizeof cont, 100, &p, &used),
                     MILTER_DECODE_OK);
    assert_int_equal(p.cmd, 'c');
    assert_int_equal(p.len, 0);
    assert_int_equal(used, 5);

    const uint8_t zero[] = {0, 0, 0, 0, 'c'};
    assert_int_equal(milter_packet_decode(zero, sizeof zero, 100, &p, &used),
                     MILTER_DECODE_BAD);
    /* A length over the limit is garbage before its bytes arrive. */
    const uint8_t big[] = {0, 0, 0x10, 0};
    assert_int_equal(milter_packet_decode(big, sizeof big, 100, &p, &used),
                     MILTER_DECODE_BAD);
    const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff};
    assert_int_equal(
        milter_packet_decode(huge, sizeof huge, MILTER_MAX_PACKET, &p, &used),
        MILTER_DECODE_BAD);
    /* "HTTP/1.1 ..." from a wrong port: a length of 1.2 GB. */
    assert_int_equal(milter_packet_decode((const uint8_t *)"HTTP/1.1", 8,
                                          MILTER_MAX_PACKET, &p, &used),
                     MILTER_DECODE_BAD);
}

/* --- negotiation ---------------------------------------------------------- */

static void
test_optneg_with_macro_lists(void **state)
{
    (void)state;
    static const uint8_t data[] = "\0\0\0\x06"
                                  "\0\0\0\x01"
                                  "\0\x10\0\x80"
                                  "\0\0\0\x02{mail_addr} i\0"
                                  "\0\0\0\x09ignored\0"
                                  "\0\0\0\x06{x}\0";
    struct milter_packet p = pkt('O', data, sizeof data - 1);
    struct milter_optneg o;
    const char *why = NULL;

    assert_int_equal(milter_optneg_parse(&p, &o, &why), 0);
    assert_int_equal(o.version, 6);
    assert_int_equal(o.actions, SMFIF_ADDHDRS);
    assert_int_equal(o.protocol, SMFIP_HDR_LEADSPC | SMFIP_NR_HDR);
    assert_string_equal(o.macros[MILTER_STAGE_MAIL], "{mail_addr} i");
    assert_string_equal(o.macros[MILTER_STAGE_EOH], "{x}");
    assert_null(o.macros[MILTER_STAGE_CONNECT]);
    milter_optneg_free(&o);
}

static void
test_optneg_refused(void **state)
{
    (void)state;
    struct milter_optneg o;
    const char *why = NULL;
    static const uint8_t v1[] = "\0\0\0\x01\0\0\0\0\0\0\0\0";
    static const uint8_t v7[] = "\0\0\0\x07\0\0\0\0\0\0\0\0";
    static const uint8_t actions[] = "\0\0\0\x06\0\0\x02\0\0\0\0\0";
    static const uint8_t nonul[] = "\0\0\0\x06\0\0\0\0\0\0\0\0\0\0\0\0ab";
    static const uint8_t shortlist[] = "\0\0\0\x06\0\0\0\0\0\0\0\0\0\0";

    struct milter_packet p = pkt('O', v1, 11);
    assert_int_equal(milter_optneg_parse(&p, &o, &why), -1); /* short */
    p = pkt('O', v1, 12);
    assert_int_equal(milter_optneg_parse(&p, &o, &why), -1);
    assert_non_null(why);
    p = pkt('O', v7, 12);
    assert_int_equal(milter_optneg_parse(&p, &o, &why), -1);
    p = pkt('O', actions, 12);
    assert_int_equal(milter_optneg_parse(&p, &o, &why), -1);
    p = pkt('O', nonul, sizeof nonul - 1);
    assert_int_equal(milter_optneg_parse(&p, &o, &why), -1);
    p = pkt('O', shortlist, sizeof shortlist - 1);
    assert_int_equal(milter_optneg_parse(&p, &o, &why), -1);
    p = pkt('c', v7, 12);
    assert_int_equal(milter_optneg_parse(&p, &o, &why), -1);
}

/* --- replies -------------------------------------------------------------- */

static void
test_requests(void **state)
{
    (void)state;
    struct milter_request r;
    const char *why = NULL;

    struct milter_packet p = pkt('c', "", 0);
    assert_int_equal(milter_request_parse(&p, &r, &why), 0);
    p = pkt('a', "x", 1);
    assert_int_equal(milter_request_parse(&p, &r, &why), -1);

    p = pkt('h', "X-A\0v 1\0", 8);
    assert_int_equal(milter_request_parse(&p, &r, &why), 0);
    assert_string_equal(r.name, "X-A");
    assert_string_equal(r.value, "v 1");
    p = pkt('h', "X-A\0v 1", 7); /* no final NUL */
    assert_int_equal(milter_request_parse(&p, &r, &why), -1);
    p = pkt('h', "X-A\0v\0z", 7); /* bytes left over */
    assert_int_equal(milter_request_parse(&p, &r, &why), -1);
    p = pkt('h', "\0v\0", 3); /* empty name */
    assert_int_equal(milter_request_parse(&p, &r, &why), -1);

    p = pkt('i', "\0\0\0\x02Subject\0\0", 13);
    assert_int_equal(milter_request_parse(&p, &r, &why), 0);
    assert_int_equal(r.index, 2);
    assert_string_equal(r.value, "");
    p = pkt('m', "\0\0\0", 3);
    assert_int_equal(milter_request_parse(&p, &r, &why), -1);

    p = pkt('+', "<a@b>\0", 6);
    assert_int_equal(milter_request_parse(&p, &r, &why), 0);
    assert_string_equal(r.name, "<a@b>");
    p = pkt('-', "<a@b>\0\0", 7);
    assert_int_equal(milter_request_parse(&p, &r, &why), -1);

    p = pkt('e', "<s@x>\0", 6);
    assert_int_equal(milter_request_parse(&p, &r, &why), 0);
    assert_null(r.value);
    p = pkt('e', "<s@x>\0SIZE=1\0", 13);
    assert_int_equal(milter_request_parse(&p, &r, &why), 0);
    assert_string_equal(r.value, "SIZE=1");
    p = pkt('2', "<s@x>\0SIZE=1", 12);
    assert_int_equal(milter_request_parse(&p, &r, &why), -1);

    p = pkt('b', "a\r\nb", 4);
    assert_int_equal(milter_request_parse(&p, &r, &why), 0);
    assert_int_equal(r.n_bytes, 4);

    p = pkt('y', "550 5.7.1 no\0", 13);
    assert_int_equal(milter_request_parse(&p, &r, &why), 0);
    assert_int_equal(r.n_bytes, 12);
    p = pkt('y', "550 x\0y\0", 8);
    assert_int_equal(milter_request_parse(&p, &r, &why), -1);

    p = pkt('Z', "", 0);
    assert_int_equal(milter_request_parse(&p, &r, &why), -1);
    assert_string_equal(why, "unknown reply");
}

static void
test_replycode_single(void **state)
{
    (void)state;
    struct milter_replycode rc;
    const char *why = NULL;
    const char *t = "554 5.7.1 Spam detected, 100%% sure";

    assert_int_equal(milter_replycode_parse(t, strlen(t), &rc, &why), 0);
    assert_int_equal(rc.code, 554);
    assert_string_equal(rc.enhanced, "5.7.1");
    assert_int_equal(rc.n_lines, 1);
    assert_string_equal(rc.lines[0], "Spam detected, 100% sure");

    t = "451 try later";
    assert_int_equal(milter_replycode_parse(t, strlen(t), &rc, &why), 0);
    assert_int_equal(rc.code, 451);
    assert_string_equal(rc.enhanced, "");
    assert_string_equal(rc.lines[0], "try later");

    t = "421";
    assert_int_equal(milter_replycode_parse(t, strlen(t), &rc, &why), 0);
    assert_int_equal(rc.code, 421);
    assert_string_equal(rc.lines[0], "");
}

static void
test_replycode_multiline(void **state)
{
    (void)state;
    struct milter_replycode rc;
    const char *why = NULL;
    const char *t = "550-5.7.1 first line\r\n550-5.7.1 second\r\n"
                    "550 5.7.1 last";

    assert_int_equal(milter_replycode_parse(t, strlen(t), &rc, &why), 0);
    assert_int_equal(rc.code, 550);
    assert_string_equal(rc.enhanced, "5.7.1");
    assert_int_equal(rc.n_lines, 3);
    assert_string_equal(rc.lines[0], "first line");
    assert_string_equal(rc.lines[1], "second");
    assert_string_equal(rc.lines[2], "last");
}

static void
test_replycode_bad(void **state)
{
    (void)state;
    struct milter_replycode rc;
    static const char *const bad[] = {
        "250 ok",         /* not a failure */
        "55 x",           /* two digits */
        "550x no",        /* no separator */
        "550-a\r\n551 b", /* codes differ */
        "550-a\r\n",      /* no last line */
        "550 a\r\n550 b", /* text after the last line */
        "",               /* nothing */
        "hello",          /* not a reply */
    };

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *why = NULL;
        assert_int_equal(
            milter_replycode_parse(bad[i], strlen(bad[i]), &rc, &why), -1);
        assert_non_null(why);
    }
}

static void
test_replycode_lines_cut(void **state)
{
    (void)state;
    char text[1024] = "";
    struct milter_replycode rc;
    const char *why = NULL;

    for (int i = 0; i < 39; i++)
        strcat(text, "550-5.7.1 x\r\n");
    strcat(text, "550 5.7.1 y");
    assert_int_equal(milter_replycode_parse(text, strlen(text), &rc, &why), 0);
    assert_int_equal(rc.n_lines, MILTER_REPLY_LINES);
}

static void
test_macro_lists(void **state)
{
    (void)state;
    char name[64];
    bool bad;
    const char *l = "j {daemon_name},  _ {i}";
    const char *want[] = {"j", "daemon_name", "_", "i"};

    for (size_t i = 0; i < 4; i++) {
        l = milter_macro_next(l, name, sizeof name, &bad);
        assert_non_null(l);
        assert_false(bad);
        assert_string_equal(name, want[i]);
    }
    assert_null(milter_macro_next(l, name, sizeof name, &bad));
    assert_false(bad);
    assert_null(milter_macro_next("{open", name, sizeof name, &bad));
    assert_true(bad);
    assert_null(milter_macro_next("{}", name, sizeof name, &bad));
    assert_true(bad);
}

/* --- configuration -------------------------------------------------------- */

static void
test_config_sockets(void **state)
{
    (void)state;
    static const struct {
        const char *socket;
        int family;
    } good[] = {
        {"unix:/run/milter.sock", AF_UNIX}, {"local:/run/m", AF_UNIX},
        {"inet:127.0.0.1:8891", AF_INET},   {"inet:8891@127.0.0.1", AF_INET},
        {"inet:[::1]:8891", AF_INET6},      {"inet6:8891@::1", AF_INET6}};
    char text[200];

    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        snprintf(text, sizeof text, "{\"socket\": \"%s\"}", good[i].socket);
        void *inst = mock_create(text, 0);
        assert_non_null(inst);
        postern_module_descriptor.destroy(inst);
    }
    static const char *const bad[] = {
        "tcp:127.0.0.1:1",      "inet:localhost:8891",
        "inet:127.0.0.1",       "inet:127.0.0.1:0",
        "inet:127.0.0.1:65536", "inet:::1:25",
        "unix:relative",        "inet:8891@"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text, "{\"socket\": \"%s\"}", bad[i]);
        assert_null(mock_create(text, 0));
        assert_string_equal(mock_init_error_path(), "socket");
    }
}

static void
test_config_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text, *path;
    } cases[] = {
        {"{}", "socket"},
        {"{\"socket\": \"unix:/x\", \"timeouts\": {\"command\": 0}}",
         "timeouts.command"},
        {"{\"socket\": \"unix:/x\", \"timeouts\": {\"eom\": 5}}",
         "timeouts.eom"},
        {"{\"socket\": \"unix:/x\", \"default_action\": \"discard\"}",
         "default_action"},
        {"{\"socket\": \"unix:/x\", \"macros\": {\"quit\": []}}",
         "macros.quit"},
        {"{\"socket\": \"unix:/x\", \"macros\": {\"mail\": [\"{x\"]}}",
         "macros.mail[0]"},
        {"{\"socket\": \"unix:/x\", \"skip\": [\"eom\"]}", "skip[0]"},
        {"{\"socket\": \"unix:/x\", \"colour\": 1}", "colour"},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_null(mock_create(cases[i].text, 0));
        assert_string_equal(mock_init_error_path(), cases[i].path);
    }
}

static void
test_config_values(void **state)
{
    (void)state;
    json_error_t jerr;
    json_t *config = json_loads(
        "{\"socket\": \"inet:127.0.0.1:9\", \"timeouts\": {\"connect\": 1.5, "
        "\"command\": 2, \"content\": 3}, \"default_action\": \"accept\", "
        "\"macros\": {\"mail\": [\"i\", \"mail_addr\", \"{auth_type}\"]}, "
        "\"skip\": [\"body\"], \"daemon_name\": \"mx-in\"}",
        0, &jerr);
    struct milter_config cfg = {0};

    assert_non_null(config);
    assert_int_equal(milter_config_parse(mock_init(config, 0), &cfg), 0);
    assert_true(cfg.connect_timeout == 1.5);
    assert_true(cfg.command_timeout == 2);
    assert_true(cfg.content_timeout == 3);
    assert_int_equal(cfg.default_action, MILTER_DEFAULT_ACCEPT);
    assert_string_equal(cfg.macros[MILTER_STAGE_MAIL],
                        "i {mail_addr} {auth_type}");
    assert_string_equal(cfg.macros[MILTER_STAGE_CONNECT],
                        milter_config_default_macros(MILTER_STAGE_CONNECT));
    assert_int_equal(cfg.protocol_mask, SMFIP_NOBODY);
    assert_string_equal(cfg.daemon_name, "mx-in");
    assert_int_equal(cfg.family, AF_INET);
    milter_config_free(&cfg);
    json_decref(config);
}

static void
test_descriptor(void **state)
{
    (void)state;
    const postern_module *m = &postern_module_descriptor;

    assert_int_equal(m->abi_version, POSTERN_ABI_VERSION);
    assert_string_equal(m->name, "milter");
    for (int h = 0; h < POSTERN_HOOK_COUNT; h++)
        if (h != POSTERN_HOOK_AUTH && h != POSTERN_HOOK_STORE)
            assert_non_null(m->handlers[h]);
}

/* A milter that is not there: the first hook fails at once with the
 * default action (4xx), logged with the reason; the session's later hooks
 * get the same without trying again. */
static void
test_not_listening_tempfails(void **state)
{
    (void)state;
    void *inst =
        mock_create("{\"socket\": \"unix:/nonexistent/milter.sock\"}", 0);
    assert_non_null(inst);
    mock_set_client("192.0.2.1", 4000);
    mock_set_helo("client.test", 1);

    postern_result r =
        postern_module_descriptor.handlers[POSTERN_HOOK_HELO](mock_ctx(), inst);
    assert_int_equal(r, POSTERN_TEMPFAIL);
    assert_int_equal(mock_last_reply()->code, 451);
    assert_true(mock_log_find(POSTERN_LOG_WARNING, "event=failure") >= 0);
    assert_true(mock_log_find(POSTERN_LOG_WARNING, "no such socket") >= 0);
    r = postern_module_descriptor.handlers[POSTERN_HOOK_MAIL](mock_ctx(), inst);
    assert_int_equal(r, POSTERN_TEMPFAIL);
    assert_int_equal(mock_milter_ios(), 0);
    mock_end_session();
    postern_module_descriptor.destroy(inst);

    inst = mock_create("{\"socket\": \"unix:/nonexistent/m\", "
                       "\"default_action\": \"accept\"}",
                       0);
    r = postern_module_descriptor.handlers[POSTERN_HOOK_CONNECT](mock_ctx(),
                                                                 inst);
    assert_int_equal(r, POSTERN_CONTINUE);
    mock_end_session();
    postern_module_descriptor.destroy(inst);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_build_optneg, setup, teardown),
        cmocka_unit_test_setup_teardown(test_build_strings_two_packets, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_decode_partial_and_garbage, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_optneg_with_macro_lists, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_optneg_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replycode_single, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replycode_multiline, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_replycode_bad, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replycode_lines_cut, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_macro_lists, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_sockets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_descriptor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_listening_tempfails, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
