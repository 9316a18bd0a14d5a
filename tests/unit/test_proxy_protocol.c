/*
 * test_proxy_protocol.c - core/proxy_protocol.c: PROXY protocol headers
 * v1 and v2 from haproxy's proxy-protocol.txt, whole and in pieces (every
 * prefix of a header must ask for more), with the data that follows left
 * alone; LOCAL, UNKNOWN, families without an IP address, TLVs, and what
 * is refused: garbage, overlong lines, bad versions, commands, families,
 * lengths and TLVs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "proxy_protocol.h"

static const unsigned char sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                      0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static proxy_protocol_status
parse(const void *buf, size_t len, struct proxy_protocol_header *h,
      size_t *used)
{
    return proxy_protocol_parse(buf, len, h, used);
}

/* Every proper prefix of a complete header asks for more. */
static void
assert_prefixes_need_more(const void *buf, size_t header_len)
{
    struct proxy_protocol_header h;
    size_t used;

    for (size_t k = 0; k < header_len; k++)
        assert_int_equal(parse(buf, k, &h, &used), PROXY_PROTOCOL_NEED_MORE);
}

static void
assert_v4(const struct sockaddr_storage *ss, const char *ip, int port)
{
    const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
    char text[INET_ADDRSTRLEN];

    assert_int_equal(ss->ss_family, AF_INET);
    assert_non_null(inet_ntop(AF_INET, &in->sin_addr, text, sizeof text));
    assert_string_equal(text, ip);
    assert_int_equal(ntohs(in->sin_port), port);
}

static void
assert_v6(const struct sockaddr_storage *ss, const char *ip, int port)
{
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
    char text[INET6_ADDRSTRLEN];

    assert_int_equal(ss->ss_family, AF_INET6);
    assert_non_null(inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text));
    assert_string_equal(text, ip);
    assert_int_equal(ntohs(in6->sin6_port), port);
}

static void
assert_invalid(const void *buf, size_t len)
{
    struct proxy_protocol_header h;
    size_t used;
    assert_int_equal(parse(buf, len, &h, &used), PROXY_PROTOCOL_INVALID);
}

/* --- version 1 --- */

static void
v1_tcp4(void **state)
{
    const char *in = "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n"
                     "EHLO client.test\r\n";
    size_t header = strlen("PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n");
    struct proxy_protocol_header h;
    size_t used = 0;

    assert_int_equal(parse(in, strlen(in), &h, &used), PROXY_PROTOCOL_DONE);
    assert_int_equal(used, header); /* EHLO is the client's, not ours */
    assert_int_equal(h.version, 1);
    assert_true(h.has_address);
    assert_false(h.local);
    assert_v4(&h.source, "192.0.2.1", 56324);
    assert_v4(&h.destination, "198.51.100.2", 25);
    assert_int_equal(h.source_len, sizeof(struct sockaddr_in));
    assert_prefixes_need_more(in, header);
}

static void
v1_tcp6(void **state)
{
    const char *in = "PROXY TCP6 2001:db8::1 ::1 0 65535\r\n";
    struct proxy_protocol_header h;
    size_t used = 0;

    assert_int_equal(parse(in, strlen(in), &h, &used), PROXY_PROTOCOL_DONE);
    assert_int_equal(used, strlen(in));
    assert_v6(&h.source, "2001:db8::1", 0);
    assert_v6(&h.destination, "::1", 65535);
    assert_int_equal(h.source_len, sizeof(struct sockaddr_in6));
    assert_prefixes_need_more(in, strlen(in));
}

static void
v1_unknown(void **state)
{
    struct proxy_protocol_header h;
    size_t used = 0;
    const char *bare = "PROXY UNKNOWN\r\nQUIT\r\n";
    const char *with = "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";

    assert_int_equal(parse(bare, strlen(bare), &h, &used), PROXY_PROTOCOL_DONE);
    assert_int_equal(used, 15);
    assert_false(h.has_address);
    assert_int_equal(parse(with, strlen(with), &h, &used), PROXY_PROTOCOL_DONE);
    assert_int_equal(used, strlen(with));
    assert_false(h.has_address); /* whatever follows UNKNOWN is ignored */
}

/* The longest line is 107 bytes with its CRLF; one byte more is not a
 * header, and 107 bytes without a line end are not either. */
static void
v1_length_limit(void **state)
{
    char line[200];
    struct proxy_protocol_header h;
    size_t used = 0;

    memset(line, 'x', sizeof line);
    memcpy(line, "PROXY UNKNOWN ", 14);
    memcpy(line + 105, "\r\n", 2);
    assert_int_equal(parse(line, 107, &h, &used), PROXY_PROTOCOL_DONE);
    assert_int_equal(used, 107);

    memset(line, 'x', sizeof line);
    memcpy(line, "PROXY UNKNOWN ", 14);
    memcpy(line + 106, "\r\n", 2);
    assert_invalid(line, 108);
    assert_int_equal(parse(line, 106, &h, &used), PROXY_PROTOCOL_NEED_MORE);
    assert_invalid(line, 107); /* no CRLF within 107 bytes */
    assert_invalid(line, sizeof line);
}

static void
v1_malformed(void **state)
{
    const char *bad[] = {
        "PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n",       /* LF without CR */
        "PROXY TCP4 192.0.2.1 192.0.2.2 65536 2\r\n", /* port too big */
        "PROXY TCP4 192.0.2.1 192.0.2.2 01 2\r\n",    /* leading zero */
        "PROXY TCP4 192.0.2.1  192.0.2.2 1 2\r\n",    /* two spaces */
        "PROXY TCP4 192.0.2.1 192.0.2.2 1 2 \r\n",    /* trailing space */
        "PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n",       /* a field missing */
        "PROXY TCP4 192.0.2.1 192.0.2.2 1 2 3\r\n",   /* one too many */
        "PROXY TCP4 2001:db8::1 192.0.2.2 1 2\r\n",   /* wrong family */
        "PROXY TCP6 192.0.2.1 ::1 1 2\r\n",           /* wrong family */
        "PROXY TCP4 192.0.2.256 192.0.2.2 1 2\r\n",   /* not an address */
        "PROXY TCP4 192.0.2.1 192.0.2.2 1a 2\r\n",    /* not a number */
        "PROXY UDP4 192.0.2.1 192.0.2.2 1 2\r\n",     /* not TCP */
        "PROXY \r\n",                                 /* nothing */
        "PROXY UNKNOWNX\r\n",                         /* not UNKNOWN */
        "proxy TCP4 192.0.2.1 192.0.2.2 1 2\r\n",     /* case matters */
        "PROXYTCP4 192.0.2.1 192.0.2.2 1 2\r\n",      /* no space */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_invalid(bad[i], strlen(bad[i]));
}

/* A client speaking SMTP (or anything else) is refused at its first
 * byte that cannot start a header: no waiting for more. */
static void
garbage(void **state)
{
    assert_invalid("EHLO client.test\r\n", 18);
    assert_invalid("E", 1);
    assert_invalid("PROXX", 5);
    assert_invalid("\r\n\r\n\x01", 5);
    assert_invalid("\x16\x03\x01\x02\x00", 5); /* a TLS ClientHello */
    struct proxy_protocol_header h;
    size_t used;
    assert_int_equal(parse("PROX", 4, &h, &used), PROXY_PROTOCOL_NEED_MORE);
    assert_int_equal(parse("", 0, &h, &used), PROXY_PROTOCOL_NEED_MORE);
}

/* --- version 2 --- */

/* Build a v2 header: ver/cmd, fam, body (addresses and TLVs). */
static size_t
v2(unsigned char *out, unsigned char ver_cmd, unsigned char fam,
   const unsigned char *body, size_t body_len)
{
    memcpy(out, sig, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (unsigned char)(body_len >> 8);
    out[15] = (unsigned char)body_len;
    if (body_len)
        memcpy(out + 16, body, body_len);
    return 16 + body_len;
}

static const unsigned char inet_body[] = {
    192,  0,    2,    9,             /* source */
    198,  51,   100,  2,             /* destination */
    0xDB, 0xFE,                      /* source port 56318 */
    0x00, 0x19,                      /* destination port 25 */
    0x04, 0x00, 0x03, 'a', 'b', 'c', /* a NOOP TLV */
    0xEA, 0x00, 0x00};               /* an AWS TLV, empty */

static void
v2_inet(void **state)
{
    unsigned char buf[128];
    size_t n = v2(buf, 0x21, 0x11, inet_body, sizeof inet_body);
    struct proxy_protocol_header h;
    size_t used = 0;

    memcpy(buf + n, "EHLO x\r\n", 8);
    assert_int_equal(parse(buf, n + 8, &h, &used), PROXY_PROTOCOL_DONE);
    assert_int_equal(used, n);
    assert_int_equal(h.version, 2);
    assert_true(h.has_address);
    assert_false(h.local);
    assert_v4(&h.source, "192.0.2.9", 56318);
    assert_v4(&h.destination, "198.51.100.2", 25);
    assert_prefixes_need_more(buf, n);
}

static void
v2_inet6(void **state)
{
    unsigned char body[36] = {0};
    unsigned char buf[64];
    struct proxy_protocol_header h;
    size_t used = 0;

    inet_pton(AF_INET6, "2001:db8::7", body);
    inet_pton(AF_INET6, "2001:db8::25", body + 16);
    body[32] = 0x01; /* 256 */
    body[33] = 0x00;
    body[35] = 25;
    size_t n = v2(buf, 0x21, 0x21, body, sizeof body);
    assert_int_equal(parse(buf, n, &h, &used), PROXY_PROTOCOL_DONE);
    assert_int_equal(used, 52);
    assert_v6(&h.source, "2001:db8::7", 256);
    assert_v6(&h.destination, "2001:db8::25", 25);
    assert_prefixes_need_more(buf, n);
}

/* LOCAL: the balancer's own connection (a health check). The block is
 * skipped whatever it holds, and no address is taken from it. */
static void
v2_local(void **state)
{
    unsigned char buf[64];
    const unsigned char junk[5] = {1, 2, 3, 4, 5};
    struct proxy_protocol_header h;
    size_t used = 0;
    size_t n = v2(buf, 0x20, 0x00, NULL, 0);

    assert_int_equal(parse(buf, n, &h, &used), PROXY_PROTOCOL_DONE);
    assert_int_equal(used, 16);
    assert_true(h.local);
    assert_false(h.has_address);
    n = v2(buf, 0x20, 0x11, junk, sizeof junk);
    assert_int_equal(parse(buf, n, &h, &used), PROXY_PROTOCOL_DONE);
    assert_int_equal(used, 21);
    assert_true(h.local);
    assert_false(h.has_address);
}

/* PROXY without an IP address over TCP: the connection's own stands. */
static void
v2_no_ip(void **state)
{
    unsigned char buf[300], unix_body[216] = {0};
    struct proxy_protocol_header h;
    size_t used = 0;
    size_t n = v2(buf, 0x21, 0x00, NULL, 0); /* AF_UNSPEC */

    assert_int_equal(parse(buf, n, &h, &used), PROXY_PROTOCOL_DONE);
    assert_false(h.has_address);
    n = v2(buf, 0x21, 0x31, unix_body, sizeof unix_body); /* AF_UNIX */
    assert_int_equal(parse(buf, n, &h, &used), PROXY_PROTOCOL_DONE);
    assert_int_equal(used, 16 + 216);
    assert_false(h.has_address);
    n = v2(buf, 0x21, 0x12, inet_body, 12); /* UDP over IPv4 */
    assert_int_equal(parse(buf, n, &h, &used), PROXY_PROTOCOL_DONE);
    assert_false(h.has_address);
}

static void
v2_malformed(void **state)
{
    unsigned char buf[PROXY_PROTOCOL_MAX + 64];
    unsigned char tlv_over[15];

    memcpy(tlv_over, inet_body, 12);
    tlv_over[12] = 0x04;
    tlv_over[13] = 0x00;
    tlv_over[14] = 0x05; /* says 5 bytes, none follow */

    assert_invalid(buf, v2(buf, 0x11, 0x11, inet_body, 12)); /* version 1 */
    assert_invalid(buf, v2(buf, 0x31, 0x11, inet_body, 12)); /* version 3 */
    assert_invalid(buf, v2(buf, 0x22, 0x11, inet_body, 12)); /* command 2 */
    assert_invalid(buf, v2(buf, 0x21, 0x41, inet_body, 12)); /* family 4 */
    assert_invalid(buf, v2(buf, 0x21, 0x13, inet_body, 12)); /* transport 3 */
    assert_invalid(buf, v2(buf, 0x21, 0x11, inet_body, 11)); /* short */
    assert_invalid(buf, v2(buf, 0x21, 0x21, inet_body, 12)); /* IPv6 short */
    assert_invalid(buf, v2(buf, 0x21, 0x11, tlv_over, sizeof tlv_over));
    assert_invalid(buf, v2(buf, 0x21, 0x11, inet_body, 13)); /* half a TLV */
    /* The version is refused as soon as its byte is in. */
    v2(buf, 0x11, 0x11, inet_body, 12);
    assert_invalid(buf, 13);
    /* A body longer than the bound is refused from its length alone. */
    v2(buf, 0x21, 0x11, NULL, 0);
    buf[14] = (unsigned char)((PROXY_PROTOCOL_V2_MAX_BODY + 1) >> 8);
    buf[15] = (unsigned char)(PROXY_PROTOCOL_V2_MAX_BODY + 1);
    assert_invalid(buf, 16);
    buf[14] = 0xFF;
    buf[15] = 0xFF;
    assert_invalid(buf, 16);
}

/* The longest body accepted: addresses and one NOOP TLV filling it. */
static void
v2_longest(void **state)
{
    static unsigned char body[PROXY_PROTOCOL_V2_MAX_BODY];
    static unsigned char buf[PROXY_PROTOCOL_MAX];
    size_t fill = PROXY_PROTOCOL_V2_MAX_BODY - 12 - 3;
    struct proxy_protocol_header h;
    size_t used = 0;

    memset(body, 0, sizeof body);
    memcpy(body, inet_body, 12);
    body[12] = 0x04;
    body[13] = (unsigned char)(fill >> 8);
    body[14] = (unsigned char)fill;
    size_t n = v2(buf, 0x21, 0x11, body, sizeof body);
    assert_int_equal(n, PROXY_PROTOCOL_MAX);
    assert_int_equal(parse(buf, n, &h, &used), PROXY_PROTOCOL_DONE);
    assert_int_equal(used, PROXY_PROTOCOL_MAX);
    assert_true(h.has_address);
    assert_prefixes_need_more(buf, n);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(v1_tcp4),      cmocka_unit_test(v1_tcp6),
        cmocka_unit_test(v1_unknown),   cmocka_unit_test(v1_length_limit),
        cmocka_unit_test(v1_malformed), cmocka_unit_test(garbage),
        cmocka_unit_test(v2_inet),      cmocka_unit_test(v2_inet6),
        cmocka_unit_test(v2_local),     cmocka_unit_test(v2_no_ip),
        cmocka_unit_test(v2_malformed), cmocka_unit_test(v2_longest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
