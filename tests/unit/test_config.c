/*
 * test_config.c - unit tests for core/config.c: the built-in defaults, a
 * file that sets every key, the exact one-line message of each class of
 * error, networks (cidr_parse, cidr_match), local domains and the
 * plugins.d files.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <sys/stat.h>

#include <cmocka.h>

#include <postern/hook.h>

#include "config.h"
#include "postern_build.h"

/*
 * config.c asks core/hook.c for the hook names. This stand-in keeps the
 * test linkable on its own; any real definition linked in takes over.
 */
__attribute__((weak)) const char *
postern_hook_name(postern_hook hook)
{
    static const char *const names[] = {
        "connect", "helo",    "auth",  "mail",  "rcpt",
        "data",    "message", "store", "reset", "disconnect"};

    return (unsigned)hook < POSTERN_HOOK_COUNT ? names[hook] : NULL;
}

static char tmpdir[64];
static char err[1024];

/* --- temp files --------------------------------------------------------- */

static int
remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int
group_setup(void **state)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/postern-test-config-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int
group_teardown(void **state)
{
    return nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Write text to tmpdir/name; returns the path (static, overwritten). */
static const char *
write_file(const char *name, const char *text)
{
    static char path[512];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    return path;
}

static const char *
make_dir(const char *name)
{
    static char path[512];

    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    assert_int_equal(mkdir(path, 0700), 0);
    return path;
}

/* config_load() must fail with exactly "FILE: <expected>", on one line. */
static void
expect_error(const char *json, const char *expected)
{
    const char *path = write_file("bad.json", json);
    char want[1024];
    struct config *cfg;

    snprintf(want, sizeof want, "%s: %s", path, expected);
    cfg = config_load(path, err, sizeof err);
    if (cfg)
        fail_msg("accepted: %s", json);
    assert_string_equal(err, want);
}

/* --- defaults and a full file ------------------------------------------- */

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

static bool
match(const struct cidr *nets, size_t n, const char *ip)
{
    struct sockaddr_storage ss = sa(ip);

    return cidr_match(nets, n, (const struct sockaddr *)&ss);
}

static void
test_defaults(void **state)
{
    struct config *cfg = config_load(NULL, err, sizeof err);
    char host[256] = "";

    assert_non_null(cfg);
    assert_string_equal(cfg->source, "(built-in defaults)");
    assert_int_equal(gethostname(host, sizeof host - 1), 0);
    assert_string_equal(cfg->hostname, host);
    assert_int_equal(cfg->n_listeners, 1);
    assert_string_equal(cfg->listeners[0].address, "127.0.0.1");
    assert_int_equal(cfg->listeners[0].port, 2525);
    assert_int_equal(cfg->listeners[0].tls, TLS_MODE_NONE);
    assert_false(cfg->listeners[0].tls_required);
    assert_false(cfg->listeners[0].auth_plaintext);
    assert_false(cfg->listeners[0].auth_required);
    assert_int_equal(cfg->tls.n_certs, 0);
    assert_string_equal(cfg->tls.priorities, "NORMAL:-VERS-ALL:+VERS-TLS1.3:"
                                             "+VERS-TLS1.2:%SERVER_PRECEDENCE");
    assert_null(cfg->tls.client_ca_file);
    assert_true(cfg->tls.handshake_timeout == 30);
    assert_true(cfg->tls.session_tickets);
    assert_true(cfg->tls.session_lifetime == 21600);
    assert_int_equal(cfg->limits.message_size, 10485760);
    assert_int_equal(cfg->limits.header_size, 102400);
    assert_int_equal(cfg->limits.recipients, 1000);
    assert_int_equal(cfg->limits.command_line, 2048);
    assert_int_equal(cfg->limits.connections, 1000);
    assert_int_equal(cfg->limits.connections_per_ip, 100);
    assert_int_equal(cfg->limits.n_exempt_networks, 2);
    assert_true(match(cfg->limits.exempt_networks, 2, "127.1.2.3"));
    assert_true(match(cfg->limits.exempt_networks, 2, "::1"));
    assert_false(match(cfg->limits.exempt_networks, 2, "128.0.0.1"));
    assert_true(cfg->limits.command_timeout == 300);
    assert_true(cfg->limits.data_timeout == 180);
    assert_int_equal(cfg->limits.errors, 20);
    assert_true(cfg->limits.greet_pause == 0);
    assert_int_equal(cfg->limits.auth_failures, 3);
    assert_int_equal(cfg->limits.transactions, 0);
    assert_int_equal(cfg->limits.connections_per_ip_ipv6_prefix, 64);
    assert_int_equal(cfg->n_local_domains, 2);
    assert_string_equal(cfg->local_domains[0], "localhost");
    assert_string_equal(cfg->local_domains[1], "example.com");
    assert_int_equal(cfg->n_relay_networks, 0);
    assert_int_equal(cfg->line_endings, SMTP_DATA_STRICT);
    assert_string_equal(cfg->spool_dir, "var/spool");
    assert_string_equal(cfg->plugins_dir, "plugins.d");
    /* This test is not the build tree's postern: only the installed
     * directory (integration_plugin_sdk checks both binaries). */
    assert_int_equal(cfg->n_module_path, 1);
    assert_string_equal(cfg->module_path[0], POSTERN_MODULE_DIR);
    assert_int_equal(cfg->log_level, LOG_LEVEL_INFO);
    assert_null(cfg->user);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(cfg->workers, cpus < 1 ? 1 : cpus > 64 ? 64 : cpus);
    assert_true(cfg->drain_timeout == 30);
    assert_true(cfg->reload_drain_timeout == 300);
    assert_int_equal(cfg->pool_threads, 8);
    config_free(cfg);
    config_free(NULL);
}

static const char full_file[] =
    "{\n"
    "  \"hostname\": \"mx1.example.net.\",\n"
    "  \"listen\": [\n"
    "    {\"address\": \"0.0.0.0\", \"port\": 25, \"tls\": \"starttls\",\n"
    "     \"tls_required\": true},\n"
    "    {\"address\": \"::\", \"port\": 465, \"tls\": \"implicit\",\n"
    "     \"auth_plaintext\": true, \"auth_required\": true}\n"
    "  ],\n"
    "  \"tls\": {\n"
    "    \"certificates\": [{\"cert\": \"a.pem\", \"key\": \"a.key\"},\n"
    "                     {\"cert\": \"b.pem\", \"key\": \"b.key\"}],\n"
    "    \"priorities\": \"SECURE256\",\n"
    "    \"client_ca\": \"ca.pem\",\n"
    "    \"handshake_timeout\": 2.5,\n"
    "    \"session_tickets\": false, \"session_lifetime\": 600\n"
    "  },\n"
    "  \"limits\": {\n"
    "    \"message_size\": 1099511627776, \"header_size\": 1024,\n"
    "    \"recipients\": 7, \"command_line\": 512, \"connections\": 9,\n"
    "    \"connections_per_ip\": 3, \"exempt_networks\": [\"10.0.0.0/8\"],\n"
    "    \"connections_per_ip_ipv6_prefix\": 56,\n"
    "    \"command_timeout\": 60, \"data_timeout\": 1.5, \"errors\": 4,\n"
    "    \"greet_pause\": 0.25, \"auth_failures\": 2, \"transactions\": 5\n"
    "  },\n"
    "  \"local_domains\": [\"Example.ORG\"],\n"
    "  \"relay_networks\": [\"192.0.2.0/24\", \"2001:db8::/32\"],\n"
    "  \"line_endings\": \"normalise\",\n"
    "  \"spool_dir\": \"/var/spool/postern\",\n"
    "  \"plugins_dir\": \"/etc/postern/plugins.d\",\n"
    "  \"module_path\": [\"/opt/a\", \"/opt/b\", \"/opt/c\"],\n"
    "  \"log_level\": \"debug\",\n"
    "  \"user\": \"postern\",\n"
    "  \"workers\": 64,\n"
    "  \"pool_threads\": 1\n"
    "}\n";

static void
test_full_file(void **state)
{
    const char *path = write_file("full.json", full_file);
    struct config *cfg = config_load(path, err, sizeof err);

    if (!cfg)
        fail_msg("%s", err);
    assert_string_equal(cfg->source, path);
    assert_string_equal(cfg->hostname, "mx1.example.net.");
    assert_int_equal(cfg->n_listeners, 2);
    assert_string_equal(cfg->listeners[0].address, "0.0.0.0");
    assert_int_equal(cfg->listeners[0].port, 25);
    assert_int_equal(cfg->listeners[0].tls, TLS_MODE_STARTTLS);
    assert_true(cfg->listeners[0].tls_required);
    assert_false(cfg->listeners[0].auth_plaintext);
    assert_string_equal(cfg->listeners[1].address, "::");
    assert_int_equal(cfg->listeners[1].port, 465);
    assert_int_equal(cfg->listeners[1].tls, TLS_MODE_IMPLICIT);
    assert_false(cfg->listeners[1].tls_required);
    assert_true(cfg->listeners[1].auth_plaintext);
    assert_true(cfg->listeners[1].auth_required);
    assert_int_equal(cfg->tls.n_certs, 2);
    assert_string_equal(cfg->tls.certs[0].cert_file, "a.pem");
    assert_string_equal(cfg->tls.certs[0].key_file, "a.key");
    assert_string_equal(cfg->tls.certs[1].cert_file, "b.pem");
    assert_string_equal(cfg->tls.certs[1].key_file, "b.key");
    assert_string_equal(cfg->tls.priorities, "SECURE256");
    assert_string_equal(cfg->tls.client_ca_file, "ca.pem");
    assert_true(cfg->tls.handshake_timeout == 2.5);
    assert_false(cfg->tls.session_tickets);
    assert_true(cfg->tls.session_lifetime == 600);
    assert_true(cfg->limits.message_size == 1ull << 40);
    assert_int_equal(cfg->limits.header_size, 1024);
    assert_int_equal(cfg->limits.recipients, 7);
    assert_int_equal(cfg->limits.command_line, 512);
    assert_int_equal(cfg->limits.connections, 9);
    assert_int_equal(cfg->limits.connections_per_ip, 3);
    assert_int_equal(cfg->limits.connections_per_ip_ipv6_prefix, 56);
    assert_int_equal(cfg->limits.n_exempt_networks, 1);
    assert_true(match(cfg->limits.exempt_networks, 1, "10.9.8.7"));
    assert_false(match(cfg->limits.exempt_networks, 1, "127.0.0.1"));
    assert_true(cfg->limits.command_timeout == 60);
    assert_true(cfg->limits.data_timeout == 1.5);
    assert_int_equal(cfg->limits.errors, 4);
    assert_true(cfg->limits.greet_pause == 0.25);
    assert_int_equal(cfg->limits.auth_failures, 2);
    assert_int_equal(cfg->limits.transactions, 5);
    assert_int_equal(cfg->n_local_domains, 1);
    assert_string_equal(cfg->local_domains[0], "Example.ORG");
    assert_int_equal(cfg->n_relay_networks, 2);
    assert_true(match(cfg->relay_networks, 2, "192.0.2.77"));
    assert_true(match(cfg->relay_networks, 2, "2001:db8:1::5"));
    assert_false(match(cfg->relay_networks, 2, "192.0.3.1"));
    assert_int_equal(cfg->line_endings, SMTP_DATA_NORMALISE);
    assert_string_equal(cfg->spool_dir, "/var/spool/postern");
    assert_string_equal(cfg->plugins_dir, "/etc/postern/plugins.d");
    /* The configured directories, then the default (issue 10). */
    assert_int_equal(cfg->n_module_path, 4);
    assert_string_equal(cfg->module_path[0], "/opt/a");
    assert_string_equal(cfg->module_path[2], "/opt/c");
    assert_string_equal(cfg->module_path[3], POSTERN_MODULE_DIR);
    assert_int_equal(cfg->log_level, LOG_LEVEL_DEBUG);
    assert_string_equal(cfg->user, "postern");
    assert_int_equal(cfg->workers, 64);
    assert_int_equal(cfg->pool_threads, 1);
    config_free(cfg);
}

/* Keys a file leaves out keep their defaults; null unsets "user". */
static void
test_partial_file(void **state)
{
    const char *path = write_file(
        "partial.json", "{\"limits\": {\"recipients\": 5}, \"user\": null,"
                        " \"local_domains\": [], \"module_path\": []}");
    struct config *cfg = config_load(path, err, sizeof err);

    if (!cfg)
        fail_msg("%s", err);
    assert_int_equal(cfg->limits.recipients, 5);
    assert_int_equal(cfg->limits.message_size, 10485760);
    assert_int_equal(cfg->limits.n_exempt_networks, 2);
    assert_int_equal(cfg->n_listeners, 1);
    assert_int_equal(cfg->listeners[0].port, 2525);
    assert_null(cfg->user);
    assert_int_equal(cfg->n_local_domains, 0);
    /* An empty module_path adds nothing to the default. */
    assert_int_equal(cfg->n_module_path, 1);
    assert_string_equal(cfg->module_path[0], POSTERN_MODULE_DIR);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(cfg->workers, cpus < 1 ? 1 : cpus > 64 ? 64 : cpus);
    config_free(cfg);
}

/* Issue 10: module_path extends the default module directory, which comes
 * last and only once, whatever the file lists. */
static void
test_module_path_extends_default(void **state)
{
    const char *path =
        write_file("module_path.json",
                   "{\"module_path\": [\"/opt/local\", \"" POSTERN_MODULE_DIR
                   "/\", \"/opt/later\"]}");
    struct config *cfg = config_load(path, err, sizeof err);

    if (!cfg)
        fail_msg("%s", err);
    assert_int_equal(cfg->n_module_path, 3);
    assert_string_equal(cfg->module_path[0], "/opt/local");
    assert_string_equal(cfg->module_path[1], POSTERN_MODULE_DIR "/");
    assert_string_equal(cfg->module_path[2], "/opt/later");
    config_free(cfg);

    path =
        write_file("module_path2.json", "{\"module_path\": [\"/opt/local\"]}");
    cfg = config_load(path, err, sizeof err);
    if (!cfg)
        fail_msg("%s", err);
    assert_int_equal(cfg->n_module_path, 2);
    assert_string_equal(cfg->module_path[0], "/opt/local");
    assert_string_equal(cfg->module_path[1], POSTERN_MODULE_DIR);
    config_free(cfg);
}

/* The dns object: defaults, servers with and without ports, errors. */
static void
test_dns_section(void **state)
{
    struct config *cfg = config_defaults();
    assert_non_null(cfg);
    assert_int_equal(cfg->dns.n_servers, 0); /* resolv.conf */
    assert_true(cfg->dns.timeout == 5);
    assert_int_equal(cfg->dns.cache_entries, 10000);
    assert_true(cfg->dns.reverse);
    assert_true(cfg->dns.reverse_timeout == 2);
    config_free(cfg);

    const char *path = write_file(
        "dns.json", "{\"dns\": {\"servers\": [\"127.0.0.1:5353\", "
                    "\"[::1]:53\", \"192.0.2.53\", \"2001:db8::53\"], "
                    "\"timeout\": 1.5, \"cache_entries\": 0, "
                    "\"reverse\": false, \"reverse_timeout\": 0.25}}");
    cfg = config_load(path, err, sizeof err);
    if (!cfg)
        fail_msg("%s", err);
    assert_int_equal(cfg->dns.n_servers, 4);
    assert_string_equal(cfg->dns.servers[1], "[::1]:53");
    assert_true(cfg->dns.timeout == 1.5);
    assert_int_equal(cfg->dns.cache_entries, 0);
    assert_false(cfg->dns.reverse);
    assert_true(cfg->dns.reverse_timeout == 0.25);
    config_free(cfg);

    struct sockaddr_storage ss;
    assert_int_equal(config_server_parse("127.0.0.1:5353", &ss), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 5353);
    assert_int_equal(config_server_parse("[::1]:53", &ss), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(config_server_parse("::1", &ss), 0);
    assert_int_equal(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), 53);
    static const char *const bad[] = {
        "",
        "localhost",
        "127.0.0.1:",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:53x",
        "[::1]53",
        "[::1",
        "1.2.3.4:+53",
        "::1:53:",
        "[127.0.0.1:53]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (config_server_parse(bad[i], &ss) == 0)
            fail_msg("accepted server %s", bad[i]);

    expect_error("{\"dns\": {\"servers\": [\"ns.example.com\"]}}",
                 "$.dns.servers[0]: expected a numeric address with an "
                 "optional port, such as \"127.0.0.1:5353\" or \"[::1]:53\", "
                 "got \"ns.example.com\"");
    expect_error("{\"dns\": {\"timeout\": 0}}",
                 "$.dns.timeout: expected a number of seconds above 0, at "
                 "most 300, got 0");
    expect_error("{\"dns\": {\"cache_entries\": -1}}",
                 "$.dns.cache_entries: expected an integer between 0 and "
                 "1000000, got -1");
    expect_error("{\"dns\": {\"reverse\": 1}}",
                 "$.dns.reverse: expected true or false, got 1");
    expect_error("{\"dns\": {\"port\": 53}}", "$.dns.port: unknown key");
    expect_error("{\"limits\": {\"command_timeout\": 10}, "
                 "\"dns\": {\"reverse_timeout\": 10}}",
                 "$.dns.reverse_timeout: expected a number of seconds below "
                 "limits.command_timeout (10), got 10");
}

/* The http object: defaults, values, errors (ca_file must be readable). */
static void
test_http_section(void **state)
{
    struct config *cfg = config_defaults();
    assert_non_null(cfg);
    assert_int_equal(cfg->http.max_in_flight, 64);
    assert_true(cfg->http.timeout == 30);
    assert_null(cfg->http.ca_file);
    config_free(cfg);

    char ca[512];
    snprintf(ca, sizeof ca, "%s", write_file("ca.pem", "not checked here\n"));
    char json[1024];
    snprintf(json, sizeof json,
             "{\"http\": {\"max_in_flight\": 3, \"timeout\": 2.5, "
             "\"ca_file\": \"%s\"}}",
             ca);
    const char *path = write_file("http.json", json);
    cfg = config_load(path, err, sizeof err);
    if (!cfg)
        fail_msg("%s", err);
    assert_int_equal(cfg->http.max_in_flight, 3);
    assert_true(cfg->http.timeout == 2.5);
    assert_string_equal(cfg->http.ca_file, ca);
    config_free(cfg);

    expect_error("{\"http\": {\"max_in_flight\": 0}}",
                 "$.http.max_in_flight: expected an integer between 1 and "
                 "10000, got 0");
    expect_error("{\"http\": {\"timeout\": 0}}",
                 "$.http.timeout: expected a number of seconds above 0, at "
                 "most 3600, got 0");
    expect_error("{\"http\": {\"ca_file\": \"/nonexistent/ca.pem\"}}",
                 "$.http.ca_file: expected a readable PEM CA file "
                 "(/nonexistent/ca.pem: No such file or directory), got "
                 "\"/nonexistent/ca.pem\"");
    expect_error("{\"http\": {\"proxy\": \"x\"}}", "$.http.proxy: unknown key");
}

/* --- errors ------------------------------------------------------------- */

static void
test_error_types(void **state)
{
    expect_error("[]", "$: expected an object, got []");
    expect_error("{\"workers\": \"2\"}",
                 "$.workers: expected an integer between 1 and 64, got \"2\"");
    expect_error("{\"limits\": {\"recipients\": 1.5}}",
                 "$.limits.recipients: expected an integer between 1 and "
                 "100000, got 1.5");
    expect_error("{\"limits\": []}", "$.limits: expected an object, got []");
    expect_error("{\"listen\": [{\"address\": \"::1\", \"port\": 25,"
                 " \"auth_required\": \"yes\"}]}",
                 "$.listen[0].auth_required: expected true or false, got "
                 "\"yes\"");
    expect_error("{\"user\": 5}",
                 "$.user: expected a non-empty string or null, got 5");
    expect_error("{\"spool_dir\": \"\"}",
                 "$.spool_dir: expected a non-empty string, got \"\"");
    expect_error("{\"spool_dir\": null}",
                 "$.spool_dir: expected a non-empty string, got null");
    expect_error("{\"local_domains\": \"example.com\"}",
                 "$.local_domains: expected an array, got \"example.com\"");
    expect_error("{\"module_path\": [\"/a\", 3]}",
                 "$.module_path[1]: expected a non-empty string, got 3");
    expect_error("{\"hostname\": \"bad host\"}",
                 "$.hostname: expected a domain name, got \"bad host\"");
    expect_error("{\"local_domains\": [\"a..b\"]}",
                 "$.local_domains[0]: expected a domain name, got \"a..b\"");
    expect_error("{\"local_domains\": [\"-a.b\"]}",
                 "$.local_domains[0]: expected a domain name, got \"-a.b\"");
    expect_error("{\"listen\": [{\"address\": \"localhost\", \"port\": 25}]}",
                 "$.listen[0].address: expected a numeric IPv4 or IPv6 "
                 "address, got \"localhost\"");
}

static void
test_error_ranges(void **state)
{
    expect_error("{\"limits\": {\"connections_per_ip_ipv6_prefix\": 0}}",
                 "$.limits.connections_per_ip_ipv6_prefix: expected an "
                 "integer between 1 and 128, got 0");
    expect_error("{\"limits\": {\"connections_per_ip_ipv6_prefix\": 129}}",
                 "$.limits.connections_per_ip_ipv6_prefix: expected an "
                 "integer between 1 and 128, got 129");
    expect_error("{\"limits\": {\"connections_per_ip_ipv6_prefix\": \"/64\"}}",
                 "$.limits.connections_per_ip_ipv6_prefix: expected an "
                 "integer between 1 and 128, got \"/64\"");
    expect_error("{\"listen\": [{\"address\": \"127.0.0.1\", \"port\": 25},"
                 " {\"address\": \"::1\", \"port\": 70000}]}",
                 "$.listen[1].port: expected an integer between 1 and 65535, "
                 "got 70000");
    expect_error("{\"listen\": [{\"address\": \"::1\", \"port\": 0}]}",
                 "$.listen[0].port: expected an integer between 1 and 65535, "
                 "got 0");
    expect_error("{\"limits\": {\"message_size\": 1099511627777}}",
                 "$.limits.message_size: expected an integer between 1024 and "
                 "1099511627776, got 1099511627777");
    expect_error("{\"limits\": {\"command_line\": 511}}",
                 "$.limits.command_line: expected an integer between 512 and "
                 "65536, got 511");
    expect_error("{\"limits\": {\"transactions\": -1}}",
                 "$.limits.transactions: expected an integer between 0 and "
                 "1000000, got -1");
    expect_error("{\"limits\": {\"command_timeout\": 0}}",
                 "$.limits.command_timeout: expected a number of seconds "
                 "between 1 and 3600, got 0");
    expect_error("{\"limits\": {\"greet_pause\": 60.5}}",
                 "$.limits.greet_pause: expected a number of seconds between 0 "
                 "and 60, got 60.5");
    expect_error("{\"tls\": {\"handshake_timeout\": 0}}",
                 "$.tls.handshake_timeout: expected a number of seconds above "
                 "0, at most 3600, got 0");
    expect_error("{\"tls\": {\"session_lifetime\": 604801}}",
                 "$.tls.session_lifetime: expected a number of seconds between "
                 "1 and 604800, got 604801");
    expect_error("{\"workers\": 9223372036854775807}",
                 "$.workers: expected an integer between 1 and 64, got "
                 "9223372036854775807");
}

static void
test_error_keys(void **state)
{
    expect_error("{\"limits\": {\"foo\": 1}}", "$.limits.foo: unknown key");
    expect_error("{\"workers\": 2, \"a b\\n\": 1}",
                 "$[\"a b\\n\"]: unknown key");
    expect_error("{\"listen\": [{\"address\": \"::1\", \"port\": 25,"
                 " \"proxy\": true}]}",
                 "$.listen[0].proxy: unknown key");
    expect_error("{\"listen\": [{\"port\": 25}]}",
                 "$.listen[0].address: expected a numeric IPv4 or IPv6 "
                 "address, got nothing");
    expect_error("{\"tls\": {\"certificates\": [{\"cert\": \"a.pem\"}]}}",
                 "$.tls.certificates[0].key: expected a non-empty string, got "
                 "nothing");
}

/* PROXY protocol listeners: a header is believed only from the networks
 * named, so naming none is an error. */
static void
test_proxy_listener(void **state)
{
    const char *path = write_file(
        "proxy.json",
        "{\"listen\": [{\"address\": \"127.0.0.1\", \"port\": 25,"
        " \"proxy_protocol\": true, \"proxy_networks\": [\"10.0.0.0/8\","
        " \"::1\"], \"proxy_timeout\": 2.5},"
        " {\"address\": \"127.0.0.1\", \"port\": 26}]}");
    struct config *cfg = config_load(path, err, sizeof err);

    assert_non_null(cfg);
    assert_true(cfg->listeners[0].proxy_protocol);
    assert_int_equal(cfg->listeners[0].n_proxy_networks, 2);
    assert_true(match(cfg->listeners[0].proxy_networks, 2, "10.1.2.3"));
    assert_false(match(cfg->listeners[0].proxy_networks, 2, "192.0.2.1"));
    assert_true(cfg->listeners[0].proxy_timeout == 2.5);
    assert_false(cfg->listeners[1].proxy_protocol);
    assert_int_equal(cfg->listeners[1].n_proxy_networks, 0);
    config_free(cfg);

    expect_error("{\"listen\": [{\"address\": \"::1\", \"port\": 25,"
                 " \"proxy_protocol\": true}]}",
                 "$.listen[0].proxy_networks: expected a non-empty array of "
                 "the networks allowed to send the PROXY header, as "
                 "proxy_protocol is true, got nothing");
    expect_error("{\"listen\": [{\"address\": \"::1\", \"port\": 25,"
                 " \"proxy_protocol\": true, \"proxy_networks\": []}]}",
                 "$.listen[0].proxy_networks: expected a non-empty array of "
                 "the networks allowed to send the PROXY header, as "
                 "proxy_protocol is true, got []");
    expect_error("{\"listen\": [{\"address\": \"::1\", \"port\": 25,"
                 " \"proxy_networks\": [\"10.0.0.0/33\"]}]}",
                 "$.listen[0].proxy_networks[0]: expected a network such as "
                 "\"192.0.2.0/24\" or \"2001:db8::/32\", got "
                 "\"10.0.0.0/33\"");
    expect_error("{\"listen\": [{\"address\": \"::1\", \"port\": 25,"
                 " \"proxy_timeout\": 0}]}",
                 "$.listen[0].proxy_timeout: expected a number of seconds "
                 "above 0, at most 300, got 0");
}

static void
test_error_enums_and_networks(void **state)
{
    expect_error("{\"log_level\": \"verbose\"}",
                 "$.log_level: expected one of \"error\", \"warning\", "
                 "\"info\", \"debug\", got \"verbose\"");
    expect_error("{\"line_endings\": 1}",
                 "$.line_endings: expected one of \"strict\", \"normalise\", "
                 "got 1");
    expect_error("{\"listen\": [{\"address\": \"::1\", \"port\": 25,"
                 " \"tls\": \"STARTTLS\"}]}",
                 "$.listen[0].tls: expected one of \"none\", \"starttls\", "
                 "\"implicit\", got \"STARTTLS\"");
    expect_error("{\"relay_networks\": [\"10.0.0.0/8\", \"10.0.0.0/33\"]}",
                 "$.relay_networks[1]: expected a network such as "
                 "\"192.0.2.0/24\" or \"2001:db8::/32\", got \"10.0.0.0/33\"");
    expect_error("{\"limits\": {\"exempt_networks\": [7]}}",
                 "$.limits.exempt_networks[0]: expected a network such as "
                 "\"192.0.2.0/24\" or \"2001:db8::/32\", got 7");
}

static void
test_error_rules(void **state)
{
    expect_error("{\"listen\": []}",
                 "$.listen: expected a non-empty array, got []");
    expect_error("{\"listen\": [{\"address\": \"127.0.0.1\", \"port\": 25},"
                 " {\"address\": \"127.0.0.1\", \"port\": 465,"
                 " \"tls\": \"implicit\"}]}",
                 "$.tls.certificates: expected a non-empty array of "
                 "certificates, as $.listen[1] uses TLS, got nothing");
    expect_error("{\"listen\": [{\"address\": \"::1\", \"port\": 25,"
                 " \"tls\": \"starttls\"}], \"tls\": {\"certificates\": []}}",
                 "$.tls.certificates: expected a non-empty array of "
                 "certificates, as $.listen[0] uses TLS, got []");
    expect_error("{\"listen\": [{\"address\": \"::1\", \"port\": 25,"
                 " \"tls_required\": true}]}",
                 "$.listen[0].tls_required: expected false when the "
                 "listener's tls is \"none\", got true");
}

/* A long offending value is cut, and the message stays on one line. */
static void
test_error_long_value(void **state)
{
    char json[600], want[600];

    snprintf(json, sizeof json, "{\"user\": [\"%0300d\"]}", 0);
    snprintf(want, sizeof want,
             "$.user: expected a non-empty string or null, got "
             "[\"%0*d...",
             64 - 4 - 2, 0);
    expect_error(json, want);
    assert_null(strchr(err, '\n'));
}

static void
test_error_parse(void **state)
{
    const char *path;
    char want[600];

    path = write_file("dup.json", "{\"workers\": 1,\n \"workers\": 2}");
    assert_null(config_load(path, err, sizeof err));
    snprintf(want, sizeof want, "%s:2:10: ", path);
    assert_memory_equal(err, want, strlen(want));
    assert_non_null(strstr(err, "duplicate"));

    path = write_file("syntax.json", "{\n  \"workers\": 1,\n}\n");
    assert_null(config_load(path, err, sizeof err));
    snprintf(want, sizeof want, "%s:3:1: ", path);
    assert_memory_equal(err, want, strlen(want));

    path = write_file("empty.json", "");
    assert_null(config_load(path, err, sizeof err));
    snprintf(want, sizeof want, "%s:1:0: ", path);
    assert_memory_equal(err, want, strlen(want));

    snprintf(want, sizeof want, "%s/missing.json", tmpdir);
    assert_null(config_load(want, err, sizeof err));
    strcat(want, ": cannot read: No such file or directory");
    assert_string_equal(err, want);

    assert_null(config_load(tmpdir, err, sizeof err));
    snprintf(want, sizeof want, "%s: cannot read: is a directory", tmpdir);
    assert_string_equal(err, want);

    /* a tiny buffer is cut, not overrun */
    path = write_file("bad.json", "{\"workers\": 0}");
    assert_null(config_load(path, err, 8));
    assert_int_equal(strlen(err), 7);
    assert_null(config_load(path, NULL, 0));
}

/* --- networks ----------------------------------------------------------- */

static void
test_cidr_parse(void **state)
{
    static const char *const bad[] = {
        "",
        "10.0.0.0/",
        "10.0.0.0/33",
        "::/129",
        "10.0.0.0/+8",
        "10.0.0.0/ 8",
        "10.0.0.0/-0",
        "10.0.0/8",
        "1.2.3.4.5",
        "fe80::1%eth0",
        "10.0.0.0/8/8",
        "example.com",
        "10.0.0.0/8x",
        "10.0.0.0/0008",
        " 10.0.0.0",
        "1::2::3",
        "0x0a.0.0.1",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    };
    struct cidr c;
    unsigned char want[16];

    assert_int_equal(cidr_parse("192.0.2.0/24", &c), 0);
    assert_int_equal(c.family, AF_INET);
    assert_int_equal(c.prefix, 24);
    inet_pton(AF_INET, "192.0.2.0", want);
    assert_memory_equal(c.addr, want, 4);

    /* host bits are cleared: 10.1.2.3/8 is 10.0.0.0/8 */
    assert_int_equal(cidr_parse("10.1.2.3/8", &c), 0);
    inet_pton(AF_INET, "10.0.0.0", want);
    assert_memory_equal(c.addr, want, 4);
    assert_int_equal(cidr_parse("10.255.255.255/9", &c), 0);
    inet_pton(AF_INET, "10.128.0.0", want);
    assert_memory_equal(c.addr, want, 4);

    assert_int_equal(cidr_parse("10.0.0.1", &c), 0);
    assert_int_equal(c.prefix, 32);
    assert_int_equal(cidr_parse("::1", &c), 0);
    assert_int_equal(c.family, AF_INET6);
    assert_int_equal(c.prefix, 128);
    assert_int_equal(cidr_parse("2001:db8::/32", &c), 0);
    assert_int_equal(c.prefix, 32);
    assert_int_equal(cidr_parse("::/0", &c), 0);
    assert_int_equal(c.prefix, 0);
    assert_int_equal(cidr_parse("0.0.0.0/0", &c), 0);

    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (cidr_parse(bad[i], &c) == 0)
            fail_msg("accepted \"%s\"", bad[i]);
    assert_int_equal(cidr_parse(NULL, &c), -1);
}

static void
test_cidr_match(void **state)
{
    struct cidr n[4];
    struct sockaddr_un_like {
        sa_family_t family;
        char path[20];
    } unix_addr = {AF_UNIX, "/tmp/x"};

    assert_int_equal(cidr_parse("192.0.2.128/25", &n[0]), 0);
    assert_true(match(n, 1, "192.0.2.128"));
    assert_true(match(n, 1, "192.0.2.255"));
    assert_false(match(n, 1, "192.0.2.127"));
    assert_false(match(n, 1, "192.0.3.200"));
    /* an IPv4 client on a dual-stack socket */
    assert_true(match(n, 1, "::ffff:192.0.2.200"));
    assert_false(match(n, 1, "::ffff:192.0.2.1"));
    assert_false(match(n, 1, "::192.0.2.200")); /* compatible, not mapped */
    assert_false(match(n, 1, "2001:db8::1"));

    assert_int_equal(cidr_parse("2001:db8:8000::/33", &n[1]), 0);
    assert_true(match(n + 1, 1, "2001:db8:8000::1"));
    assert_true(match(n + 1, 1, "2001:db8:ffff:ffff::"));
    assert_false(match(n + 1, 1, "2001:db8:7fff::1"));
    assert_false(match(n + 1, 1, "192.0.2.200"));

    assert_int_equal(cidr_parse("0.0.0.0/0", &n[2]), 0);
    assert_true(match(n + 2, 1, "1.2.3.4"));
    assert_true(match(n + 2, 1, "::ffff:1.2.3.4"));
    assert_false(match(n + 2, 1, "2001:db8::1"));
    assert_int_equal(cidr_parse("::/0", &n[3]), 0);
    assert_true(match(n + 3, 1, "2001:db8::1"));
    assert_false(match(n + 3, 1, "1.2.3.4"));

    /* any of several; none of none; not a network address at all */
    assert_true(match(n, 2, "2001:db8:9000::"));
    assert_false(match(n, 0, "192.0.2.200"));
    assert_false(cidr_match(n, 4, (const struct sockaddr *)&unix_addr));
    assert_false(cidr_match(n, 4, NULL));
}

static void
test_local_domain(void **state)
{
    const char *path =
        write_file("domains.json", "{\"local_domains\": [\"Example.ORG.\","
                                   " \"localhost\"]}");
    struct config *cfg = config_load(path, err, sizeof err);

#define LOCAL(s) config_is_local_domain(cfg, s, strlen(s))
    if (!cfg)
        fail_msg("%s", err);
    assert_true(LOCAL("example.org"));
    assert_true(LOCAL("EXAMPLE.org."));
    assert_true(LOCAL("localhost"));
    assert_true(LOCAL("LocalHost."));
    assert_false(LOCAL("example.org.."));
    assert_false(LOCAL("mail.example.org"));
    assert_false(LOCAL("xexample.org"));
    assert_false(LOCAL("example.or"));
    assert_false(LOCAL(""));
    assert_false(LOCAL("."));
    assert_false(LOCAL("[127.0.0.1]"));
    /* only len bytes count: the domain need not be NUL-terminated */
    assert_true(config_is_local_domain(cfg, "localhost>", 9));
    assert_false(config_is_local_domain(cfg, "localhost", 5));
#undef LOCAL
    config_free(cfg);
}

/* --- plugins.d ---------------------------------------------------------- */

/* plugin_configs_load() on one file must fail with "FILE: <expected>". */
static void
expect_plugin_error(const char *json, const char *expected)
{
    static int seq;
    char dir[64], file[128], want[1024];
    struct plugin_config *p = (void *)1;
    size_t n = 7;

    snprintf(dir, sizeof dir, "perr%d", seq++);
    snprintf(dir, sizeof dir, "%s", make_dir(dir) + strlen(tmpdir) + 1);
    snprintf(file, sizeof file, "%s/10-ok.json", dir);
    write_file(file, "{\"module\": \"ok\"}");
    snprintf(file, sizeof file, "%s/20-bad.json", dir);
    snprintf(want, sizeof want, "%s: %s", write_file(file, json), expected);
    snprintf(file, sizeof file, "%s/%s", tmpdir, dir);
    assert_int_equal(plugin_configs_load(file, &p, &n, err, sizeof err), -1);
    assert_null(p);
    assert_int_equal(n, 0);
    assert_string_equal(err, want);
}

static void
test_plugins_load(void **state)
{
    char dir[512], path[600];
    struct plugin_config *p;
    size_t n;

    snprintf(dir, sizeof dir, "%s", make_dir("plugins.d"));

    write_file("plugins.d/20-b.json",
               "{\"module\": \"store_file\", \"hooks\": [\"store\"],"
               " \"config\": {\"root\": \"/x\"}}");
    write_file("plugins.d/10-a.json",
               "{\"module\": \"rcpt_list\", \"hooks\": [\"rcpt\", \"mail\"]}");
    write_file("plugins.d/100-c.json", "{\"module\": \"discard\"}");
    write_file("plugins.d/README.md", "not a plugin");
    write_file("plugins.d/.hidden.json", "not json");
    write_file("plugins.d/30-x.json.orig", "not json");
    make_dir("plugins.d/40-dir.json");

    assert_int_equal(plugin_configs_load(dir, &p, &n, err, sizeof err), 0);
    assert_int_equal(n, 3);
    /* strcmp order: "10-" < "100" < "20-" */
    assert_string_equal(p[0].instance, "10-a");
    assert_string_equal(p[1].instance, "100-c");
    assert_string_equal(p[2].instance, "20-b");
    snprintf(path, sizeof path, "%s/10-a.json", dir);
    assert_string_equal(p[0].file, path);
    assert_string_equal(p[0].module, "rcpt_list");
    assert_int_equal(p[0].hooks_mask, POSTERN_HOOK_BIT(POSTERN_HOOK_RCPT) |
                                          POSTERN_HOOK_BIT(POSTERN_HOOK_MAIL));
    assert_true(json_is_object(p[0].config));
    assert_int_equal(json_object_size(p[0].config), 0);
    assert_string_equal(p[1].module, "discard");
    assert_int_equal(p[1].hooks_mask, 0);
    assert_int_equal(p[2].hooks_mask, POSTERN_HOOK_BIT(POSTERN_HOOK_STORE));
    assert_string_equal(json_string_value(json_object_get(p[2].config, "root")),
                        "/x");
    plugin_configs_free(p, n);
    plugin_configs_free(NULL, 0);

    /* an empty directory is no plugins; a missing one is an error */
    snprintf(dir, sizeof dir, "%s", make_dir("empty.d"));
    assert_int_equal(plugin_configs_load(dir, &p, &n, err, sizeof err), 0);
    assert_int_equal(n, 0);
    plugin_configs_free(p, n);
    snprintf(path, sizeof path, "%s/nowhere.d", tmpdir);
    assert_int_equal(plugin_configs_load(path, &p, &n, err, sizeof err), -1);
    strcat(path, ": cannot open directory: No such file or directory");
    assert_string_equal(err, path);
}

static void
test_plugins_errors(void **state)
{
    expect_plugin_error("{\"module\": \"x\", \"foo\": 1}",
                        "$.foo: unknown key");
    expect_plugin_error("{\"hooks\": [\"rcpt\"]}",
                        "$.module: expected a module name of [a-z0-9_]+, got "
                        "nothing");
    expect_plugin_error("{\"module\": \"Store-File\"}",
                        "$.module: expected a module name of [a-z0-9_]+, got "
                        "\"Store-File\"");
    expect_plugin_error("{\"module\": \"\"}",
                        "$.module: expected a module name of [a-z0-9_]+, got "
                        "\"\"");
    expect_plugin_error("{\"module\": \"x\", \"hooks\": \"rcpt\"}",
                        "$.hooks: expected a non-empty array of hook names, "
                        "got \"rcpt\"");
    expect_plugin_error("{\"module\": \"x\", \"hooks\": []}",
                        "$.hooks: expected a non-empty array of hook names, "
                        "got []");
    expect_plugin_error(
        "{\"module\": \"x\", \"hooks\": [\"rcpt\", \"bogus\"]}",
        "$.hooks[1]: expected one of \"connect\", \"helo\", \"auth\", "
        "\"mail\", \"rcpt\", \"data\", \"message\", \"store\", \"reset\", "
        "\"disconnect\", got \"bogus\"");
    expect_plugin_error("{\"module\": \"x\", \"hooks\": [\"rcpt\", \"rcpt\"]}",
                        "$.hooks[1]: hook \"rcpt\" is listed twice");
    expect_plugin_error("{\"module\": \"x\", \"config\": []}",
                        "$.config: expected an object, got []");
    expect_plugin_error("[\"module\"]",
                        "$: expected an object, got [\"module\"]");
}

static void
test_plugins_parse_error(void **state)
{
    const char *dir = make_dir("broken.d");
    struct plugin_config *p;
    char want[600];
    size_t n;

    write_file("broken.d/10-x.json", "{\"module\": \"x\",\n\"module\": \"y\"}");
    assert_int_equal(plugin_configs_load(dir, &p, &n, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s/10-x.json:2:8: ", dir);
    assert_memory_equal(err, want, strlen(want));
    assert_non_null(strstr(err, "duplicate"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_full_file),
        cmocka_unit_test(test_partial_file),
        cmocka_unit_test(test_dns_section),
        cmocka_unit_test(test_http_section),
        cmocka_unit_test(test_error_types),
        cmocka_unit_test(test_error_ranges),
        cmocka_unit_test(test_error_keys),
        cmocka_unit_test(test_proxy_listener),
        cmocka_unit_test(test_error_enums_and_networks),
        cmocka_unit_test(test_error_rules),
        cmocka_unit_test(test_error_long_value),
        cmocka_unit_test(test_error_parse),
        cmocka_unit_test(test_cidr_parse),
        cmocka_unit_test(test_module_path_extends_default),
        cmocka_unit_test(test_cidr_match),
        cmocka_unit_test(test_local_domain),
        cmocka_unit_test(test_plugins_load),
        cmocka_unit_test(test_plugins_errors),
        cmocka_unit_test(test_plugins_parse_error),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
