/*
 * test_smtp_auth.c - the pure SASL helpers of core/smtp_auth.c: base64
 * decoding of AUTH responses (RFC 4954, including the "=" empty response)
 * and splitting PLAIN messages (RFC 4616), with valid and hostile input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <gnutls/gnutls.h>

#include "smtp_auth.h"

/* String literal with its length, embedded NULs included. */
#define S(lit) (lit), (sizeof(lit) - 1)

/* --- helpers -------------------------------------------------------------- */

/* Decode in and expect SASL_OK with exactly the len bytes of want, plus the
 * NUL terminator the decoder promises. */
static void
assert_decodes(const char *in, const char *want, size_t want_len)
{
    char *out = (char *)1;
    size_t len = 12345;

    assert_int_equal(sasl_base64_decode(in, strlen(in), &out, &len), SASL_OK);
    assert_non_null(out);
    assert_int_equal(len, want_len);
    if (want_len > 0)
        assert_memory_equal(out, want, want_len);
    assert_int_equal(out[len], '\0');
    free(out);
}

/* Decode in_len bytes of in and expect SASL_BAD_BASE64, with nothing
 * handed out. */
static void
assert_bad_base64_n(const char *in, size_t in_len)
{
    char *out = (char *)1;
    size_t len = 12345;

    if (sasl_base64_decode(in, in_len, &out, &len) != SASL_BAD_BASE64)
        fail_msg("\"%.*s\" (%zu bytes) decoded", (int)in_len, in, in_len);
    assert_null(out);
    assert_int_equal(len, 0);
}

static void
assert_bad_base64(const char *in)
{
    assert_bad_base64_n(in, strlen(in));
}

/* Split a copy of msg (len bytes, NUL-terminated as the decoder leaves
 * it); on SASL_OK check the three parts, which must point into the copy. */
static void
assert_split(const char *msg, size_t len, sasl_status want, const char *authzid,
             const char *authcid, const char *passwd)
{
    char *copy = malloc(len + 1);
    const char *z = NULL, *c = NULL, *p = NULL;

    assert_non_null(copy);
    memcpy(copy, msg, len);
    copy[len] = '\0';
    assert_int_equal(sasl_plain_split(copy, len, &z, &c, &p), want);
    if (want == SASL_OK) {
        assert_string_equal(z, authzid);
        assert_string_equal(c, authcid);
        assert_string_equal(p, passwd);
        assert_ptr_equal(z, copy);
        assert_ptr_equal(c, copy + strlen(authzid) + 1);
        assert_ptr_equal(p, copy + strlen(authzid) + strlen(authcid) + 2);
    }
    free(copy);
}

/* Base64 of len bytes, with gnutls (independent of the decoder). */
static char *
encode(const void *data, size_t len)
{
    gnutls_datum_t in = {(unsigned char *)data, (unsigned)len};
    gnutls_datum_t out = {NULL, 0};

    assert_int_equal(gnutls_base64_encode2(&in, &out), 0);
    char *s = malloc(out.size + 1);
    assert_non_null(s);
    memcpy(s, out.data, out.size);
    s[out.size] = '\0';
    gnutls_free(out.data);
    return s;
}

/* --- base64 --------------------------------------------------------------- */

static void
test_decode_valid(void **state)
{
    (void)state;
    assert_decodes("QQ==", S("A"));
    assert_decodes("QUI=", S("AB"));
    assert_decodes("QUJD", S("ABC"));
    assert_decodes("dGVzdA==", S("test"));
    assert_decodes("AA==", S("\0"));
    assert_decodes("////", S("\xff\xff\xff"));
    assert_decodes("++++", S("\xfb\xef\xbe"));
    /* A PLAIN message, NULs and all. */
    assert_decodes("AGFsaWNlAHMzY3JldA==", S("\0alice\0s3cret"));
}

/* "=" is the empty response (RFC 4954 section 4): OK, a buffer holding
 * only the terminator, length 0. */
static void
test_decode_empty_response(void **state)
{
    (void)state;
    char *out = NULL;
    size_t len = 99;

    assert_int_equal(sasl_base64_decode("=", 1, &out, &len), SASL_OK);
    assert_non_null(out);
    assert_int_equal(len, 0);
    assert_int_equal(out[0], '\0');
    free(out);

    /* Only the lone "=" is special: an empty line is not a response. */
    assert_bad_base64_n("", 0);
    assert_bad_base64("==");
    assert_bad_base64("===");
    assert_bad_base64("====");
}

static void
test_decode_bad_chars(void **state)
{
    (void)state;
    assert_bad_base64("QUJD RA==");
    assert_bad_base64("QUJ\tRA==");
    assert_bad_base64("QUJDRA==\r");
    assert_bad_base64("QUJDRA=\n");
    assert_bad_base64("QUJD-A=="); /* base64url is not base64 */
    assert_bad_base64("QUJD_A==");
    assert_bad_base64("QUJD.A==");
    assert_bad_base64("*QUJ");
    assert_bad_base64("QUJ\x80");
    assert_bad_base64("\xc3\xa9QU");
    assert_bad_base64_n("QU\0D", 4); /* a NUL inside the line */
}

static void
test_decode_bad_length(void **state)
{
    (void)state;
    assert_bad_base64("Q");
    assert_bad_base64("QQ");
    assert_bad_base64("QQ=");
    assert_bad_base64("QUJ");
    assert_bad_base64("QUJDR");
    assert_bad_base64("QUJDRA");
    assert_bad_base64("QUJDRA=");
    assert_bad_base64("QUJDRA===");
}

static void
test_decode_bad_padding(void **state)
{
    (void)state;
    assert_bad_base64("Q===");     /* three pad characters */
    assert_bad_base64("=QUJ");     /* pad first */
    assert_bad_base64("Q=UJ");     /* pad in the middle */
    assert_bad_base64("QQ=A");     /* data after a pad */
    assert_bad_base64("QQ==QQ=="); /* "=" in the middle of the line */
    assert_bad_base64("QUI=QUJD");
    assert_bad_base64("Q=Q=");
    /* Bits left over after the last byte must be zero (RFC 4648 3.5):
     * "AB==" and "AAB=" are not the canonical "AA==" and "AAA=". */
    assert_bad_base64("AB==");
    assert_bad_base64("AAB=");
}

/* Every length from 0 to 300 bytes of every byte value round-trips. */
static void
test_decode_round_trip(void **state)
{
    (void)state;
    unsigned char data[300];

    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (unsigned char)(i * 37 + 11);
    for (size_t n = 1; n <= sizeof data; n++) {
        char *b64 = encode(data, n);
        char *out = NULL;
        size_t len = 0;
        assert_int_equal(sasl_base64_decode(b64, strlen(b64), &out, &len),
                         SASL_OK);
        assert_int_equal(len, n);
        assert_memory_equal(out, data, n);
        assert_int_equal(out[n], '\0');
        free(out);
        free(b64);
    }
}

/* Arbitrary lines never crash, and whatever decodes re-encodes to the
 * same line (the decoder accepts canonical base64 only). */
static void
test_decode_arbitrary(void **state)
{
    (void)state;
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \0";
    uint32_t seed = 12345;
    char line[24];

    for (int round = 0; round < 20000; round++) {
        size_t n = 0;
        seed = seed * 1103515245u + 12345u;
        size_t len = (seed >> 16) % sizeof line;
        for (; n < len; n++) {
            seed = seed * 1103515245u + 12345u;
            line[n] = alphabet[(seed >> 16) % (sizeof alphabet - 1)];
        }
        char *out = NULL;
        size_t out_len = 0;
        if (sasl_base64_decode(line, len, &out, &out_len) != SASL_OK) {
            assert_null(out);
            continue;
        }
        assert_non_null(out);
        assert_int_equal(out[out_len], '\0');
        if (len == 1) {
            assert_int_equal(line[0], '=');
            assert_int_equal(out_len, 0);
        } else {
            char *again = encode(out, out_len);
            assert_int_equal(strlen(again), len);
            assert_memory_equal(again, line, len);
            free(again);
        }
        free(out);
    }
}

/* --- PLAIN ---------------------------------------------------------------- */

static void
test_plain_valid(void **state)
{
    (void)state;
    assert_split(S("\0alice\0s3cret"), SASL_OK, "", "alice", "s3cret");
    assert_split(S("admin\0alice\0s3cret"), SASL_OK, "admin", "alice",
                 "s3cret");
    assert_split(S("\0a\0b"), SASL_OK, "", "a", "b");
    assert_split(S("\0alice@example.com\0pass word with spaces"), SASL_OK, "",
                 "alice@example.com", "pass word with spaces");
    assert_split(S("\0\xc3\xa9lo\xc3\xafse\0m\xc3\xb4t"), SASL_OK, "",
                 "\xc3\xa9lo\xc3\xafse", "m\xc3\xb4t");
}

static void
test_plain_missing_nul(void **state)
{
    (void)state;
    assert_split(S("alice"), SASL_BAD_MESSAGE, NULL, NULL, NULL);
    assert_split(S("alice\0s3cret"), SASL_BAD_MESSAGE, NULL, NULL, NULL);
    assert_split(S("\0alice"), SASL_BAD_MESSAGE, NULL, NULL, NULL);
    assert_split(S("\0"), SASL_BAD_MESSAGE, NULL, NULL, NULL);
    assert_split("", 0, SASL_BAD_MESSAGE, NULL, NULL, NULL);
}

static void
test_plain_too_many_nuls(void **state)
{
    (void)state;
    /* A NUL inside the password, or a trailing one, is a third NUL. */
    assert_split(S("\0alice\0s3\0cret"), SASL_BAD_MESSAGE, NULL, NULL, NULL);
    assert_split(S("\0alice\0s3cret\0"), SASL_BAD_MESSAGE, NULL, NULL, NULL);
    assert_split(S("z\0alice\0s3cret\0x"), SASL_BAD_MESSAGE, NULL, NULL, NULL);
    assert_split(S("\0\0\0"), SASL_BAD_MESSAGE, NULL, NULL, NULL);
    assert_split(S("\0a\0\0"), SASL_BAD_MESSAGE, NULL, NULL, NULL);
}

static void
test_plain_empty_parts(void **state)
{
    (void)state;
    assert_split(S("\0\0s3cret"), SASL_BAD_MESSAGE, NULL, NULL, NULL);
    assert_split(S("admin\0\0s3cret"), SASL_BAD_MESSAGE, NULL, NULL, NULL);
    assert_split(S("\0alice\0"), SASL_BAD_MESSAGE, NULL, NULL, NULL);
    assert_split(S("admin\0alice\0"), SASL_BAD_MESSAGE, NULL, NULL, NULL);
    assert_split(S("\0\0"), SASL_BAD_MESSAGE, NULL, NULL, NULL);
}

/* The two steps as the AUTH command runs them, on responses as clients
 * send them. */
static void
test_plain_decoded(void **state)
{
    (void)state;
    static const struct {
        const char *b64;
        sasl_status want;
        const char *authzid, *authcid, *passwd;
    } cases[] = {
        {"AGFsaWNlAHMzY3JldA==", SASL_OK, "", "alice", "s3cret"},
        {"YWRtaW4AYWxpY2UAczNjcmV0", SASL_OK, "admin", "alice", "s3cret"},
        {"=", SASL_BAD_MESSAGE, NULL, NULL, NULL},            /* empty */
        {"YWxpY2U=", SASL_BAD_MESSAGE, NULL, NULL, NULL},     /* "alice" */
        {"AGFsaWNlAA==", SASL_BAD_MESSAGE, NULL, NULL, NULL}, /* no pw */
        {"AAB4", SASL_BAD_MESSAGE, NULL, NULL, NULL},         /* "\0\0x" */
        {"AGEAYgBj", SASL_BAD_MESSAGE, NULL, NULL, NULL},     /* "\0a\0b\0c" */
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *msg = NULL;
        size_t len = 0;
        const char *z = NULL, *c = NULL, *p = NULL;
        assert_int_equal(
            sasl_base64_decode(cases[i].b64, strlen(cases[i].b64), &msg, &len),
            SASL_OK);
        sasl_status st = sasl_plain_split(msg, len, &z, &c, &p);
        if (st != cases[i].want)
            fail_msg("%s: status %d, want %d", cases[i].b64, st, cases[i].want);
        if (st == SASL_OK) {
            assert_string_equal(z, cases[i].authzid);
            assert_string_equal(c, cases[i].authcid);
            assert_string_equal(p, cases[i].passwd);
        }
        free(msg);
    }
}

/* Every message of up to 6 bytes over {NUL, 'a'}: OK exactly when it is
 * "authzid NUL authcid NUL passwd" with exactly two NULs and non-empty
 * authcid and passwd. */
static void
test_plain_exhaustive(void **state)
{
    (void)state;
    char msg[8];

    for (size_t len = 0; len <= 6; len++) {
        for (unsigned bits = 0; bits < (1u << len); bits++) {
            size_t nuls = 0, first = 0, second = 0;
            for (size_t i = 0; i < len; i++) {
                msg[i] = (bits >> i) & 1 ? 'a' : '\0';
                if (msg[i] == '\0') {
                    if (nuls == 0)
                        first = i;
                    else if (nuls == 1)
                        second = i;
                    nuls++;
                }
            }
            msg[len] = '\0';
            bool valid = nuls == 2 && second > first + 1 && second + 1 < len;
            const char *z = NULL, *c = NULL, *p = NULL;
            sasl_status st = sasl_plain_split(msg, len, &z, &c, &p);
            if ((st == SASL_OK) != valid)
                fail_msg("len %zu bits %#x: status %d", len, bits, st);
            if (valid) {
                assert_ptr_equal(z, msg);
                assert_ptr_equal(c, msg + first + 1);
                assert_ptr_equal(p, msg + second + 1);
            }
        }
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_valid),
        cmocka_unit_test(test_decode_empty_response),
        cmocka_unit_test(test_decode_bad_chars),
        cmocka_unit_test(test_decode_bad_length),
        cmocka_unit_test(test_decode_bad_padding),
        cmocka_unit_test(test_decode_round_trip),
        cmocka_unit_test(test_decode_arbitrary),
        cmocka_unit_test(test_plain_valid),
        cmocka_unit_test(test_plain_missing_nul),
        cmocka_unit_test(test_plain_too_many_nuls),
        cmocka_unit_test(test_plain_empty_parts),
        cmocka_unit_test(test_plain_decoded),
        cmocka_unit_test(test_plain_exhaustive),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
