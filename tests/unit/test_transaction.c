/*
 * test_transaction.c - the recipient set of a transaction (core/
 * transaction.c): de-duplication as RFC 5321 compares mailboxes, and
 * deletion (postern_rcpt_delete()) that keeps the order, the set and the
 * strings modules read before.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdbool.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "smtp_session.h"
#include "transaction.h"

static int
add(struct transaction *tx, const char *addr)
{
    return transaction_add_rcpt(tx, addr, strlen(addr));
}

static void
test_dedup_and_delete(void **state)
{
    (void)state;
    struct transaction *tx = transaction_new();
    assert_non_null(tx);
    assert_int_equal(add(tx, "a@example.com"), 0);
    assert_int_equal(add(tx, "a@EXAMPLE.com"), 1); /* domain: any case */
    assert_int_equal(add(tx, "A@example.com"), 0); /* local part: exact */
    assert_int_equal(add(tx, "b@example.com"), 0);
    assert_int_equal(tx->n_rcpts, 3);

    const char *first = tx->rcpts[0];
    assert_int_equal(transaction_delete_rcpt(tx, "a@Example.COM"), 0);
    assert_int_equal(transaction_delete_rcpt(tx, "a@example.com"), -1);
    /* Retired, not freed: still readable. */
    assert_string_equal(first, "a@example.com");
    assert_int_equal(tx->n_rcpts, 2);
    assert_string_equal(tx->rcpts[0], "A@example.com");
    assert_string_equal(tx->rcpts[1], "b@example.com");
    assert_int_equal(add(tx, "a@example.com"), 0); /* back, at the end */
    assert_string_equal(tx->rcpts[2], "a@example.com");
    assert_int_equal(transaction_delete_rcpt(tx, "nobody@example.com"), -1);
    transaction_free(tx);
}

/* Many adds and deletes against a plain model: the set must find every
 * recipient left and none deleted, whatever the probe runs looked like. */
static void
test_delete_against_model(void **state)
{
    (void)state;
    enum { N = 3000 };
    static bool present[N];
    struct transaction *tx = transaction_new();
    char addr[64];
    unsigned seed = 12345;

    memset(present, 0, sizeof(present));
    for (int round = 0; round < 20000; round++) {
        seed = seed * 1103515245u + 12345u;
        int i = (int)((seed >> 8) % N);
        snprintf(addr, sizeof(addr), "user%d@d%d.example", i, i % 7);
        if ((seed >> 4) & 1) {
            assert_int_equal(add(tx, addr), present[i] ? 1 : 0);
            present[i] = true;
        } else {
            assert_int_equal(transaction_delete_rcpt(tx, addr),
                             present[i] ? 0 : -1);
            present[i] = false;
        }
    }
    size_t n = 0;
    for (int i = 0; i < N; i++) {
        snprintf(addr, sizeof(addr), "USER%d@D%d.EXAMPLE", i, i % 7);
        /* other case in the local part: never a duplicate */
        assert_int_equal(transaction_delete_rcpt(tx, addr), -1);
        snprintf(addr, sizeof(addr), "user%d@D%d.EXAMPLE", i, i % 7);
        assert_int_equal(add(tx, addr), present[i] ? 1 : 0);
        if (!present[i])
            assert_int_equal(transaction_delete_rcpt(tx, addr), 0);
        n += present[i];
    }
    assert_int_equal(tx->n_rcpts, n);
    transaction_free(tx);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dedup_and_delete),
        cmocka_unit_test(test_delete_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
