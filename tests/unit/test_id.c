/*
 * test_id.c - core/id.c: session and queue ids are 16 lowercase hex digits,
 * never repeat, do not reveal a counter (issue 7, defect 5: the old ids
 * were a splitmix64 of a counter, which anyone can invert), and a forked
 * child does not hand out the ids its parent will.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "id.h"

#define MANY 200000

static uint64_t
id_value(const char *id)
{
    return strtoull(id, NULL, 16);
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void
test_format(void **state)
{
    for (int n = 0; n < 1000; n++) {
        char id[ID_LEN + 8];
        memset(id, 'X', sizeof(id));
        id_generate(id);
        assert_int_equal(strlen(id), ID_LEN);
        assert_int_equal(strspn(id, "0123456789abcdef"), ID_LEN);
        assert_int_equal(id[ID_LEN + 1], 'X'); /* writes 17 bytes, no more */
    }
}

static void
test_no_repeats(void **state)
{
    uint64_t *v = malloc(MANY * sizeof(*v));
    char id[ID_LEN + 1];

    assert_non_null(v);
    for (size_t i = 0; i < MANY; i++) {
        id_generate(id);
        v[i] = id_value(id);
    }
    qsort(v, MANY, sizeof(*v), cmp_u64);
    for (size_t i = 1; i < MANY; i++)
        if (v[i] == v[i - 1])
            fail_msg("id %016llx repeated", (unsigned long long)v[i]);
    free(v);
}

/* Every bit is set in about half of the ids: a counter's high bits are
 * not. */
static void
test_bits_balanced(void **state)
{
    unsigned ones[64] = {0};
    char id[ID_LEN + 1];
    const unsigned n = 20000;

    for (unsigned i = 0; i < n; i++) {
        id_generate(id);
        uint64_t x = id_value(id);
        for (int b = 0; b < 64; b++)
            ones[b] += (x >> b) & 1;
    }
    for (int b = 0; b < 64; b++)
        if (ones[b] < n * 45 / 100 || ones[b] > n * 55 / 100)
            fail_msg("bit %d set in %u of %u ids", b, ones[b], n);
}

/* Undo the splitmix64 finaliser, the "invertible mix" the old ids used. */
static uint64_t
unmix(uint64_t z)
{
    z ^= (z >> 31) ^ (z >> 62);
    z *= 0x319642B2D24D8EC3ULL;
    z ^= (z >> 27) ^ (z >> 54);
    z *= 0x96DE1B173F119089ULL;
    z ^= (z >> 30) ^ (z >> 60);
    return z;
}

static uint64_t
mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Neither the ids nor their unmixed values step by a constant. */
static void
test_not_sequential(void **state)
{
    char id[ID_LEN + 1];
    uint64_t a, b, c;

    assert_int_equal(unmix(mix(0x0123456789abcdefULL)), 0x0123456789abcdefULL);
    id_generate(id);
    a = id_value(id);
    id_generate(id);
    b = id_value(id);
    for (int i = 0; i < 1000; i++) {
        id_generate(id);
        c = id_value(id);
        if (c - b == b - a)
            fail_msg("ids step by a constant");
        if (unmix(c) - unmix(b) == unmix(b) - unmix(a))
            fail_msg("ids are a mixed counter: %016llx %016llx %016llx",
                     (unsigned long long)a, (unsigned long long)b,
                     (unsigned long long)c);
        a = b;
        b = c;
    }
}

/* A forked worker must not repeat the ids its parent hands out next. */
static void
test_fork_does_not_share(void **state)
{
    char parent[4][ID_LEN + 1], child[4][ID_LEN + 1];
    int fds[2];

    id_generate(parent[0]); /* a batch is in memory when fork happens */
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        for (int i = 0; i < 4; i++)
            id_generate(child[i]);
        ssize_t w = write(fds[1], child, sizeof(child));
        _exit(w == (ssize_t)sizeof(child) ? 0 : 1);
    }
    close(fds[1]);
    for (int i = 0; i < 4; i++)
        id_generate(parent[i]);
    assert_int_equal(read(fds[0], child, sizeof(child)), sizeof(child));
    close(fds[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            if (strcmp(parent[i], child[j]) == 0)
                fail_msg("parent and child both made id %s", parent[i]);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_no_repeats),
        cmocka_unit_test(test_bits_balanced),
        cmocka_unit_test(test_not_sequential),
        cmocka_unit_test(test_fork_does_not_share),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
