/*
 * test_client_limit.c - core/client_limit.c: connections counted in total
 * and per client address, where an IPv6 client counts per network of
 * limits.connections_per_ip_ipv6_prefix bits (/64 by default: one
 * customer, one LAN, gets a /64 and can use its 2^64 addresses to slip
 * past a per-/128 limit), IPv4 and IPv4-mapped IPv6 per address; and the
 * rate limits (token buckets) on an injected clock. Across processes:
 * test_shared_state.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "client_limit.h"
#include "config.h"

static struct sockaddr_storage
sa(const char *ip)
{
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof ss);
    if (inet_pton(AF_INET, ip, &((struct sockaddr_in *)&ss)->sin_addr) == 1)
        ss.ss_family = AF_INET;
    else if (inet_pton(AF_INET6, ip,
                       &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1)
        ss.ss_family = AF_INET6;
    else
        fail_msg("bad test address %s", ip);
    return ss;
}

/* Acquire for ip; on success remember it for release_all(). */
static struct sockaddr_storage held[64];
static bool held_per_ip[64];
static size_t n_held;

static client_limit_verdict
acquire(const struct config *cfg, const char *ip)
{
    struct sockaddr_storage ss = sa(ip);
    bool per_ip;
    client_limit_verdict v =
        client_limit_acquire(cfg, (const struct sockaddr *)&ss, &per_ip);
    if (v == CLIENT_LIMIT_OK) {
        assert_true(n_held < 64);
        held[n_held] = ss;
        held_per_ip[n_held++] = per_ip;
    } else {
        assert_false(per_ip);
    }
    return v;
}

static void
release_all(void)
{
    while (n_held > 0) {
        n_held--;
        client_limit_release((const struct sockaddr *)&held[n_held],
                             held_per_ip[n_held]);
    }
    assert_int_equal(client_limit_total(), 0);
}

static struct config *
config_with(unsigned per_ip)
{
    struct config *cfg = config_defaults();
    assert_non_null(cfg);
    cfg->limits.connections_per_ip = per_ip;
    cfg->limits.n_exempt_networks = 0; /* count loopback too */
    return cfg;
}

static void
test_ipv6_counts_per_64_by_default(void **state)
{
    struct config *cfg = config_with(2);

    assert_int_equal(cfg->limits.connections_per_ip_ipv6_prefix, 64);
    assert_int_equal(acquire(cfg, "2001:db8:1:2::1"), CLIENT_LIMIT_OK);
    assert_int_equal(acquire(cfg, "2001:db8:1:2:aaaa:bbbb:cccc:dddd"),
                     CLIENT_LIMIT_OK);
    /* A third address of the same /64 is the same client. */
    assert_int_equal(acquire(cfg, "2001:db8:1:2:ffff::7"), CLIENT_LIMIT_PER_IP);
    /* The next /64 is another one. */
    assert_int_equal(acquire(cfg, "2001:db8:1:3::1"), CLIENT_LIMIT_OK);
    assert_int_equal(client_limit_total(), 3);
    /* A release frees the slot of its /64. */
    n_held--;
    client_limit_release((const struct sockaddr *)&held[n_held],
                         held_per_ip[n_held]); /* 2001:db8:1:3::1 */
    n_held--;
    client_limit_release((const struct sockaddr *)&held[n_held],
                         held_per_ip[n_held]); /* ...:2:aaaa:... */
    assert_int_equal(acquire(cfg, "2001:db8:1:2:ffff::7"), CLIENT_LIMIT_OK);
    release_all();
    config_free(cfg);
}

static void
test_ipv4_counts_per_address(void **state)
{
    struct config *cfg = config_with(1);

    assert_int_equal(acquire(cfg, "192.0.2.1"), CLIENT_LIMIT_OK);
    assert_int_equal(acquire(cfg, "192.0.2.2"), CLIENT_LIMIT_OK);
    assert_int_equal(acquire(cfg, "192.0.2.1"), CLIENT_LIMIT_PER_IP);
    /* IPv4-mapped IPv6 is that IPv4 address, not a /64 of all of IPv4. */
    assert_int_equal(acquire(cfg, "::ffff:192.0.2.1"), CLIENT_LIMIT_PER_IP);
    assert_int_equal(acquire(cfg, "::ffff:192.0.2.3"), CLIENT_LIMIT_OK);
    release_all();
    config_free(cfg);
}

static void
test_ipv6_prefix_configurable(void **state)
{
    struct config *cfg = config_with(1);

    /* Per address, as before /64 became the default. */
    cfg->limits.connections_per_ip_ipv6_prefix = 128;
    assert_int_equal(acquire(cfg, "2001:db8::1"), CLIENT_LIMIT_OK);
    assert_int_equal(acquire(cfg, "2001:db8::2"), CLIENT_LIMIT_OK);
    assert_int_equal(acquire(cfg, "2001:db8::1"), CLIENT_LIMIT_PER_IP);
    release_all();

    /* A /48, and a prefix that does not end on a byte. */
    cfg->limits.connections_per_ip_ipv6_prefix = 48;
    assert_int_equal(acquire(cfg, "2001:db8:1:1::1"), CLIENT_LIMIT_OK);
    assert_int_equal(acquire(cfg, "2001:db8:1:ffff::1"), CLIENT_LIMIT_PER_IP);
    assert_int_equal(acquire(cfg, "2001:db8:2::1"), CLIENT_LIMIT_OK);
    release_all();
    cfg->limits.connections_per_ip_ipv6_prefix = 60;
    assert_int_equal(acquire(cfg, "2001:db8:0:10::1"), CLIENT_LIMIT_OK);
    assert_int_equal(acquire(cfg, "2001:db8:0:1f::1"), CLIENT_LIMIT_PER_IP);
    assert_int_equal(acquire(cfg, "2001:db8:0:20::1"), CLIENT_LIMIT_OK);
    release_all();

    /* While connections are counted, a changed prefix waits: releases
     * must find the slots they took. */
    cfg->limits.connections_per_ip_ipv6_prefix = 64;
    assert_int_equal(acquire(cfg, "2001:db8::1"), CLIENT_LIMIT_OK);
    cfg->limits.connections_per_ip_ipv6_prefix = 128;
    assert_int_equal(acquire(cfg, "2001:db8::2"), CLIENT_LIMIT_PER_IP);
    release_all();
    assert_int_equal(acquire(cfg, "2001:db8::1"), CLIENT_LIMIT_OK);
    assert_int_equal(acquire(cfg, "2001:db8::2"), CLIENT_LIMIT_OK);
    release_all();
    config_free(cfg);
}

/* --- rate limits: token buckets on an injected clock --- */

static double fake_now = 1000.0;

static double
fake_clock(void)
{
    return fake_now;
}

static struct config *
rates_config(void)
{
    struct config *cfg = config_with(100);
    cfg->limits.connection_rate = 0;
    cfg->limits.message_rate = 0;
    cfg->limits.auth_failure_rate = 0;
    client_limit_set_clock(fake_clock);
    fake_now += 100000; /* what earlier tests left has refilled */
    return cfg;
}

/* A connection that is let in is given back at once: only the rate. */
static client_limit_verdict
connect_once(const struct config *cfg, const char *ip)
{
    client_limit_verdict v = acquire(cfg, ip);
    if (v == CLIENT_LIMIT_OK)
        release_all();
    return v;
}

static void
test_connection_rate_bucket(void **state)
{
    struct config *cfg = rates_config();
    cfg->limits.connection_rate = 2; /* per second */
    cfg->limits.connection_rate_burst = 3;

    for (int i = 0; i < 3; i++)
        assert_int_equal(connect_once(cfg, "192.0.2.9"), CLIENT_LIMIT_OK);
    assert_int_equal(connect_once(cfg, "192.0.2.9"), CLIENT_LIMIT_RATE);
    /* a refused attempt takes nothing: 0.4 s later 0.8 tokens, not -0.2 */
    fake_now += 0.4;
    assert_int_equal(connect_once(cfg, "192.0.2.9"), CLIENT_LIMIT_RATE);
    fake_now += 0.1;
    assert_int_equal(connect_once(cfg, "192.0.2.9"), CLIENT_LIMIT_OK);
    assert_int_equal(connect_once(cfg, "192.0.2.9"), CLIENT_LIMIT_RATE);
    /* another address has its own bucket */
    assert_int_equal(connect_once(cfg, "192.0.2.10"), CLIENT_LIMIT_OK);
    /* a long pause refills up to the burst, not beyond */
    fake_now += 3600;
    for (int i = 0; i < 3; i++)
        assert_int_equal(connect_once(cfg, "192.0.2.9"), CLIENT_LIMIT_OK);
    assert_int_equal(connect_once(cfg, "192.0.2.9"), CLIENT_LIMIT_RATE);
    /* one /64 is one client for the rate too */
    assert_int_equal(connect_once(cfg, "2001:db8:7::1"), CLIENT_LIMIT_OK);
    assert_int_equal(connect_once(cfg, "2001:db8:7::2"), CLIENT_LIMIT_OK);
    assert_int_equal(connect_once(cfg, "2001:db8:7::3"), CLIENT_LIMIT_OK);
    assert_int_equal(connect_once(cfg, "2001:db8:7::4"), CLIENT_LIMIT_RATE);
    /* 0 turns it off */
    cfg->limits.connection_rate = 0;
    for (int i = 0; i < 10; i++)
        assert_int_equal(connect_once(cfg, "192.0.2.9"), CLIENT_LIMIT_OK);
    client_limit_set_clock(NULL);
    config_free(cfg);
}

static client_limit_verdict
message(const struct config *cfg, const char *ip)
{
    struct sockaddr_storage ss = sa(ip);
    return client_limit_message(cfg, (const struct sockaddr *)&ss);
}

static void
test_message_rate_bucket(void **state)
{
    struct config *cfg = rates_config();
    cfg->limits.message_rate = 6; /* per minute: one per 10 s */

    for (int i = 0; i < 6; i++)
        assert_int_equal(message(cfg, "192.0.2.20"), CLIENT_LIMIT_OK);
    assert_int_equal(message(cfg, "192.0.2.20"), CLIENT_LIMIT_MESSAGE_RATE);
    fake_now += 9.9;
    assert_int_equal(message(cfg, "192.0.2.20"), CLIENT_LIMIT_MESSAGE_RATE);
    fake_now += 0.1;
    assert_int_equal(message(cfg, "192.0.2.20"), CLIENT_LIMIT_OK);
    assert_int_equal(message(cfg, "192.0.2.20"), CLIENT_LIMIT_MESSAGE_RATE);
    fake_now += 60;
    for (int i = 0; i < 6; i++)
        assert_int_equal(message(cfg, "192.0.2.20"), CLIENT_LIMIT_OK);
    assert_int_equal(message(cfg, "192.0.2.20"), CLIENT_LIMIT_MESSAGE_RATE);
    client_limit_set_clock(NULL);
    config_free(cfg);
}

static client_limit_verdict
auth_check(const struct config *cfg, const char *ip)
{
    struct sockaddr_storage ss = sa(ip);
    return client_limit_auth_check(cfg, (const struct sockaddr *)&ss);
}

static void
auth_failed(const struct config *cfg, const char *ip)
{
    struct sockaddr_storage ss = sa(ip);
    client_limit_auth_failed(cfg, (const struct sockaddr *)&ss);
}

static void
test_auth_failure_rate_bucket(void **state)
{
    struct config *cfg = rates_config();
    cfg->limits.auth_failure_rate = 2; /* per hour: one per 30 minutes */

    assert_int_equal(auth_check(cfg, "192.0.2.30"), CLIENT_LIMIT_OK);
    auth_failed(cfg, "192.0.2.30");
    assert_int_equal(auth_check(cfg, "192.0.2.30"), CLIENT_LIMIT_OK);
    auth_failed(cfg, "192.0.2.30");
    /* a check takes nothing; only failures do */
    assert_int_equal(auth_check(cfg, "192.0.2.30"), CLIENT_LIMIT_AUTH_RATE);
    assert_int_equal(auth_check(cfg, "192.0.2.31"), CLIENT_LIMIT_OK);
    fake_now += 1799;
    assert_int_equal(auth_check(cfg, "192.0.2.30"), CLIENT_LIMIT_AUTH_RATE);
    fake_now += 1;
    assert_int_equal(auth_check(cfg, "192.0.2.30"), CLIENT_LIMIT_OK);
    client_limit_set_clock(NULL);
    config_free(cfg);
}

static void
test_exempt_networks_not_rate_limited(void **state)
{
    struct config *cfg = rates_config();
    cfg->limits.connection_rate = 1;
    cfg->limits.connection_rate_burst = 1;
    cfg->limits.message_rate = 1;
    cfg->limits.auth_failure_rate = 1;
    cfg->limits.n_exempt_networks = 2; /* loopback, the defaults */

    for (int i = 0; i < 5; i++) {
        assert_int_equal(connect_once(cfg, "127.0.0.1"), CLIENT_LIMIT_OK);
        assert_int_equal(message(cfg, "127.0.0.1"), CLIENT_LIMIT_OK);
        auth_failed(cfg, "::1");
        assert_int_equal(auth_check(cfg, "::1"), CLIENT_LIMIT_OK);
    }
    assert_int_equal(connect_once(cfg, "192.0.2.40"), CLIENT_LIMIT_OK);
    assert_int_equal(connect_once(cfg, "192.0.2.40"), CLIENT_LIMIT_RATE);
    client_limit_set_clock(NULL);
    config_free(cfg);
}

static void
test_names_are_config_keys(void **state)
{
    assert_string_equal(client_limit_name(CLIENT_LIMIT_TOTAL), "connections");
    assert_string_equal(client_limit_name(CLIENT_LIMIT_PER_IP),
                        "connections_per_ip");
    assert_string_equal(client_limit_name(CLIENT_LIMIT_RATE),
                        "connection_rate");
    assert_string_equal(client_limit_name(CLIENT_LIMIT_MESSAGE_RATE),
                        "message_rate");
    assert_string_equal(client_limit_name(CLIENT_LIMIT_AUTH_RATE),
                        "auth_failure_rate");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv6_counts_per_64_by_default),
        cmocka_unit_test(test_ipv4_counts_per_address),
        cmocka_unit_test(test_ipv6_prefix_configurable),
        cmocka_unit_test(test_connection_rate_bucket),
        cmocka_unit_test(test_message_rate_bucket),
        cmocka_unit_test(test_auth_failure_rate_bucket),
        cmocka_unit_test(test_exempt_networks_not_rate_limited),
        cmocka_unit_test(test_names_are_config_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
