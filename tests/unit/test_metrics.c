/*
 * test_metrics.c - the shared counters (core/metrics.c) and their text
 * exposition (core/metrics_text.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"
#include "metrics_text.h"

static char *
text_of(struct metrics_text *t)
{
    metrics_text_printf(t, "%s", ""); /* a buffer even when empty */
    assert_false(t->failed);
    return t->buf;
}

static void
test_label_escaping(void **state)
{
    (void)state;
    struct metrics_text t = {0};
    metrics_text_label_value(&t, "a\"b\\c\nd");
    assert_string_equal(text_of(&t), "a\\\"b\\\\c\\nd");
    metrics_text_free(&t);

    /* UTF-8 stays; a byte that is not UTF-8 becomes \\xNN, so one bad
     * file name cannot make Prometheus refuse the whole page */
    metrics_text_label_value(&t, "caf\xc3\xa9-\xff\xc3(");
    assert_string_equal(text_of(&t), "caf\xc3\xa9-\\\\xff\\\\xc3(");
    metrics_text_free(&t);

    /* help text: backslash and newline escaped, quotes kept */
    metrics_text_header(&t, "postern_x_total", "say \"hi\"\\\nnow", "counter");
    assert_string_equal(text_of(&t),
                        "# HELP postern_x_total say \"hi\"\\\\\\nnow\n"
                        "# TYPE postern_x_total counter\n");
    metrics_text_free(&t);
}

static void
test_histogram_text(void **state)
{
    (void)state;
    struct metrics_histogram h = {0};
    h.buckets[0] = 2;               /* <= 0.001 */
    h.buckets[3] = 1;               /* <= 0.01 */
    h.buckets[METRICS_BUCKETS] = 4; /* beyond the last bound */
    h.sum_ns = 1500000000;          /* 1.5 s */
    struct metrics_text t = {0};
    metrics_text_histogram(&t, "h", "module_instance=\"i\"", &h);
    const char *s = text_of(&t);
    assert_non_null(
        strstr(s, "h_bucket{module_instance=\"i\",le=\"0.001\"} 2\n"));
    assert_non_null(
        strstr(s, "h_bucket{module_instance=\"i\",le=\"0.005\"} 2\n"));
    assert_non_null(
        strstr(s, "h_bucket{module_instance=\"i\",le=\"0.01\"} 3\n"));
    assert_non_null(strstr(s, "h_bucket{module_instance=\"i\",le=\"10\"} 3\n"));
    assert_non_null(
        strstr(s, "h_bucket{module_instance=\"i\",le=\"+Inf\"} 7\n"));
    assert_non_null(strstr(s, "h_sum{module_instance=\"i\"} 1.5\n"));
    assert_non_null(strstr(s, "h_count{module_instance=\"i\"} 7\n"));
    /* buckets never decrease, and +Inf is the last bucket line */
    unsigned long long last = 0;
    const char *p = s;
    unsigned lines = 0;
    while ((p = strstr(p, "h_bucket{"))) {
        const char *v = strchr(p, '}') + 2;
        unsigned long long n = strtoull(v, NULL, 10);
        assert_true(n >= last);
        last = n;
        p = v;
        lines++;
    }
    assert_int_equal(lines, METRICS_BUCKETS + 1);
    metrics_text_free(&t);

    /* without labels: no braces on _sum and _count */
    metrics_text_histogram(&t, "s", "", &h);
    s = text_of(&t);
    assert_non_null(strstr(s, "s_bucket{le=\"+Inf\"} 7\n"));
    assert_non_null(strstr(s, "s_sum 1.5\n"));
    assert_non_null(strstr(s, "s_count 7\n"));
    metrics_text_free(&t);
}

static int
setup(void **state)
{
    (void)state;
    char err[256];
    return metrics_create(err, sizeof(err));
}

static int
teardown(void **state)
{
    (void)state;
    metrics_destroy();
    return 0;
}

static struct metrics_snapshot *
snap(void)
{
    static struct metrics_snapshot s;
    assert_int_equal(metrics_snapshot_take(&s), 0);
    return &s;
}

static void
test_sum_over_slots(void **state)
{
    (void)state;
    metrics_slot_started(0);
    metrics_slot_started(3);
    metrics_enter_slot(0);
    metrics_connection_opened();
    metrics_stage_reply(POSTERN_HOOK_STORE, 250);
    metrics_stage_reply(POSTERN_HOOK_RCPT, 550);
    metrics_spool(1, 100);
    metrics_enter_slot(3);
    metrics_connection_opened();
    metrics_connection_opened();
    metrics_stage_reply(POSTERN_HOOK_STORE, 250);
    metrics_stage_reply(POSTERN_HOOK_RCPT, 451);
    metrics_stage_reply(POSTERN_HOOK_AUTH, 535); /* counted by metrics_auth */
    metrics_auth(false);
    metrics_stage_reply(POSTERN_HOOK_MAIL, 250);
    metrics_stage_reply(POSTERN_HOOK_DATA, 354); /* not a decision */

    struct metrics_snapshot *s = snap();
    assert_int_equal(s->workers_up, 2);
    assert_int_equal(s->total.c.connections, 3);
    assert_int_equal(s->total.g.connections_open, 3);
    assert_int_equal(s->total.c.messages[METRICS_STAGE_STORE][METRICS_ACCEPTED],
                     2);
    assert_int_equal(s->total.c.messages[METRICS_STAGE_RCPT][METRICS_REJECTED],
                     1);
    assert_int_equal(
        s->total.c.messages[METRICS_STAGE_RCPT][METRICS_TEMPFAILED], 1);
    assert_int_equal(s->total.c.messages[METRICS_STAGE_DATA][METRICS_ACCEPTED],
                     0);
    assert_int_equal(s->total.c.auth[1], 1);
    assert_int_equal(s->total.c.transactions, 1);
    assert_int_equal(s->total.g.spool_bytes, 100);

    /* slot 0's worker exits: its counts stay, its gauges go */
    metrics_release_slot(0);
    s = snap();
    assert_int_equal(s->workers_up, 1);
    assert_int_equal(s->total.c.connections, 3);
    assert_int_equal(s->total.c.messages[METRICS_STAGE_STORE][METRICS_ACCEPTED],
                     2);
    assert_int_equal(s->total.g.connections_open, 2);
    assert_int_equal(s->total.g.spool_bytes, 0);
    assert_int_equal(s->total.g.spool_files, 0);

    /* a new worker in slot 0 starts from zero; the sum goes on */
    metrics_slot_started(0);
    metrics_enter_slot(0);
    metrics_connection_opened();
    s = snap();
    assert_int_equal(s->workers_up, 2);
    assert_int_equal(s->total.c.connections, 4);
    assert_int_equal(metrics_slot_block(0)->c.connections, 1);
    metrics_enter_slot(3);
}

static void
test_hooks_and_registry(void **state)
{
    (void)state;
    metrics_slot_started(1);
    metrics_enter_slot(1);
    unsigned a = metrics_instance_id("10-a");
    unsigned b = metrics_instance_id("20-b");
    assert_int_equal(a, 0);
    assert_int_equal(b, 1);
    assert_int_equal(metrics_instance_id("10-a"), a); /* same name, same id */
    metrics_hook_result(b, POSTERN_HOOK_RCPT, POSTERN_REJECT, 0.003);
    metrics_hook_result(b, POSTERN_HOOK_RCPT, POSTERN_REJECT, 20);
    metrics_hook_result(METRICS_NO_ID, POSTERN_HOOK_RCPT, POSTERN_REJECT, 1);
    unsigned m = metrics_module_counter_id("postern_x_hits_total", "20-b",
                                           "Hits \"of\" x.");
    assert_int_equal(
        metrics_module_counter_id("postern_x_hits_total", "20-b", NULL), m);
    assert_int_not_equal(
        metrics_module_counter_id("postern_x_hits_total", "30-c", NULL), m);
    metrics_module_add(m, 5);

    struct metrics_snapshot *s = snap();
    assert_int_equal(s->n_instances, 2);
    assert_string_equal(s->instances[1].name, "20-b");
    assert_int_equal(
        s->total.c.hook_results[b][POSTERN_HOOK_RCPT][POSTERN_REJECT], 2);
    const struct metrics_histogram *h = &s->total.c.hook_latency[b];
    assert_int_equal(h->buckets[2], 1); /* 0.0025 < 0.003 <= 0.005 */
    assert_int_equal(h->buckets[METRICS_BUCKETS], 1);
    assert_int_equal(h->sum_ns, 20003000000ull);

    struct metrics_text t = {0};
    assert_int_equal(metrics_text_render(&t, s, NULL), 0);
    const char *page = text_of(&t);
    assert_non_null(
        strstr(page, "postern_hook_results_total{module_instance=\"20-b\","
                     "hook=\"rcpt\",result=\"reject\"} 2\n"));
    assert_non_null(strstr(
        page,
        "postern_hook_duration_seconds_count{module_instance=\"20-b\"} 2\n"));
    assert_non_null(
        strstr(page, "# TYPE postern_x_hits_total counter\n"
                     "postern_x_hits_total{module_instance=\"20-b\"} 5\n"
                     "postern_x_hits_total{module_instance=\"30-c\"} 0\n"));
    /* one HELP and TYPE per family */
    assert_null(strstr(strstr(page, "# TYPE postern_x_hits_total") + 1,
                       "# TYPE postern_x_hits_total"));
    assert_non_null(strstr(page, "postern_workers_up 1\n"));
    assert_non_null(strstr(page, "postern_messages_total{stage=\"rcpt\","
                                 "result=\"rejected\"} 0\n"));
    assert_null(strstr(page, "stage=\"rcpt\",result=\"accepted\""));
    metrics_text_free(&t);
}

static void
test_registry_bounded(void **state)
{
    (void)state;
    char name[32];
    for (unsigned i = 0; i < METRICS_MAX_INSTANCES; i++) {
        snprintf(name, sizeof(name), "i%u", i);
        assert_int_equal(metrics_instance_id(name), i);
    }
    assert_int_equal(metrics_instance_id("one-too-many"), METRICS_NO_ID);
    assert_int_equal(metrics_instance_id("i7"), 7);
}

static void
test_no_mapping(void **state)
{
    (void)state;
    /* without a mapping (unit tests, --check-config) nothing counts */
    metrics_enter_slot(0);
    metrics_connection_opened();
    metrics_stage_reply(POSTERN_HOOK_STORE, 250);
    assert_int_equal(metrics_instance_id("x"), METRICS_NO_ID);
    assert_true(metrics_clock() == 0);
    struct metrics_snapshot s;
    assert_int_equal(metrics_snapshot_take(&s), -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_histogram_text),
        cmocka_unit_test_setup_teardown(test_sum_over_slots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hooks_and_registry, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_registry_bounded, setup, teardown),
        cmocka_unit_test(test_no_mapping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
