/*
 * test_discard.c - the discard module: accepts at the store hook, warns at
 * create, takes no configuration.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>

#include <cmocka.h>

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
    mock_cleanup();
    return 0;
}

static int
create_with(const char *config_text, void **instance)
{
    json_error_t jerr;
    json_t *config = json_loads(config_text, 0, &jerr);
    assert_non_null(config);
    int rc = postern_module_descriptor.create(mock_init(config, 0), instance);
    json_decref(config);
    return rc;
}

static void
test_descriptor(void **state)
{
    (void)state;
    const postern_module *m = &postern_module_descriptor;

    assert_int_equal(m->abi_version, POSTERN_ABI_VERSION);
    assert_string_equal(m->name, "discard");
    assert_non_null(m->handlers[POSTERN_HOOK_STORE]);
    for (int h = 0; h < POSTERN_HOOK_SLOTS; h++)
        if (h != POSTERN_HOOK_STORE)
            assert_null(m->handlers[h]);
}

static void
test_create_warns(void **state)
{
    (void)state;
    void *instance = (void *)1;

    assert_int_equal(create_with("{}", &instance), 0);
    assert_int_equal(mock_init_error_count(), 0);
    int i = mock_log_find(POSTERN_LOG_WARNING, "discard module enabled");
    assert_true(i >= 0);
    assert_non_null(
        strstr(mock_log_text((size_t)i), "for benchmarks and tests only"));
    if (postern_module_descriptor.destroy)
        postern_module_descriptor.destroy(instance);
}

static void
test_store_accepts(void **state)
{
    (void)state;
    void *instance = NULL;

    assert_int_equal(create_with("{}", &instance), 0);
    mock_set_transaction_id("00000000deadbeef");
    postern_result r = postern_module_descriptor.handlers[POSTERN_HOOK_STORE](
        mock_ctx(), instance);
    assert_int_equal(r, POSTERN_ACCEPT);
    const struct mock_reply *reply = mock_last_reply();
    assert_int_equal(reply->count, 1);
    assert_int_equal(reply->code, 250);
    assert_string_equal(reply->enhanced, "2.0.0");
    assert_string_equal(reply->text, "Ok: discarded 00000000deadbeef");
    assert_int_equal(mock_readers_open(), 0);
    assert_int_equal(mock_resume_count(), 0);
    if (postern_module_descriptor.destroy)
        postern_module_descriptor.destroy(instance);
}

static void
test_config_rejected(void **state)
{
    (void)state;
    void *instance = NULL;

    assert_int_equal(create_with("{\"root\": \"x\"}", &instance), -1);
    assert_int_equal(mock_init_error_count(), 1);
    assert_string_equal(mock_init_error_path(), "root");
    assert_non_null(strstr(mock_init_error_text(), "unknown key"));
    assert_int_equal(mock_log_find(POSTERN_LOG_WARNING, "discard"), -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_descriptor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_warns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_accepts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_rejected, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
