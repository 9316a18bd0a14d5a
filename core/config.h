/*
 * config.h - the main configuration: its defaults, the JSON file that
 * overrides them, and the plugins.d instance files.
 *
 * Every error names the file, the JSON path and what was expected, e.g.
 *   /etc/postern/postern.json: $.limits.message_size: expected an integer
 *   between 1024 and 4294967296, got "big"
 * Unknown keys, duplicate keys and wrong types are errors.
 */
#ifndef POSTERN_CONFIG_H
#define POSTERN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <jansson.h>

#include "log.h"
#include "smtp_data.h"

typedef enum tls_mode {
    TLS_MODE_NONE,     /* plaintext only, no STARTTLS offered */
    TLS_MODE_STARTTLS, /* STARTTLS offered (RFC 3207) */
    TLS_MODE_IMPLICIT  /* TLS from the first byte (RFC 8314) */
} tls_mode;

/* proxy_timeout when a listener sets none (its 0). */
#define LISTENER_PROXY_TIMEOUT_DEFAULT 5.0

struct listener_config {
    char *address; /* numeric IPv4 or IPv6 address, "127.0.0.1" */
    int port;
    tls_mode tls;
    bool tls_required;   /* starttls: MAIL/AUTH before STARTTLS -> 530 */
    bool auth_plaintext; /* offer AUTH without TLS (default false) */
    bool auth_required;  /* MAIL needs AUTH first (submission) */
    /* PROXY protocol (session_proxy.c): a v1 or v2 header comes first,
     * only from proxy_networks, within proxy_timeout seconds (0: the
     * default, LISTENER_PROXY_TIMEOUT_DEFAULT). */
    bool proxy_protocol;
    struct cidr *proxy_networks;
    size_t n_proxy_networks;
    double proxy_timeout;
};

struct tls_cert_config {
    char *cert_file; /* PEM chain */
    char *key_file;  /* PEM key */
};

struct tls_config {
    struct tls_cert_config *certs; /* the first is the default; others by
                                      SNI from their subject names */
    size_t n_certs;
    char *priorities;     /* GnuTLS priority string */
    char *client_ca_file; /* verify client certificates when set */
    double handshake_timeout;
    bool session_tickets;    /* resumption with tickets (TLS 1.2 and 1.3) */
    double session_lifetime; /* seconds a ticket resumes; the ticket key
                                period is three times this (GnuTLS) */
};

/* An IPv4 or IPv6 network, for relay_networks and limit exceptions. */
struct cidr {
    int family; /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    unsigned prefix;
};

struct limits_config {
    uint64_t message_size;       /* bytes, SIZE advertised; 552 beyond */
    uint64_t header_size;        /* bytes of the header section */
    unsigned recipients;         /* per message; 452 beyond */
    size_t command_line;         /* bytes without CRLF; 500 beyond */
    unsigned connections;        /* total; 421 beyond */
    unsigned connections_per_ip; /* 421 beyond */
    /* IPv6 clients count per network of this many bits (a /64 is one
     * site); IPv4 per address. */
    unsigned connections_per_ip_ipv6_prefix;
    struct cidr *exempt_networks; /* not counted per IP (loopback) */
    size_t n_exempt_networks;
    /* Per client address (as connections_per_ip), token buckets; 0 off. */
    double connection_rate;         /* new connections per second; 421 */
    unsigned connection_rate_burst; /* ... of which at once */
    unsigned message_rate;          /* MAIL per minute; 450 */
    unsigned auth_failure_rate;     /* failed AUTH per hour; 421 */
    double command_timeout;         /* seconds waiting for a command */
    double data_timeout;            /* seconds between DATA reads */
    unsigned errors;                /* bad commands before 421 */
    double greet_pause;             /* seconds; talk before greeting -> 554 */
    unsigned auth_failures;         /* per session before 421 */
    unsigned transactions;          /* per session; 0 = unlimited */
    /* seconds a client waits on the server side: a hook handler
     * (PENDING included) or the spool; 421 beyond */
    double pending_timeout;
};

/* The resolver (core/dns.c) and the reverse lookup of clients. */
struct dns_config {
    char **servers; /* "127.0.0.1:5353", "[::1]:53"; none: resolv.conf */
    size_t n_servers;
    double timeout;         /* default per-lookup timeout, seconds */
    unsigned cache_entries; /* answers kept; 0 turns the cache off */
    bool reverse;           /* look up and forward-confirm client names */
    double reverse_timeout; /* bound on that, before the greeting */
};

/* The HTTP service for modules (core/http.c on core/curl_loop.c). */
struct http_config {
    unsigned max_in_flight; /* transfers running at once; more wait */
    double timeout;         /* default whole-call limit, seconds */
    char *ca_file;          /* PEM CA bundle; NULL: the system store */
};

/* The Prometheus endpoint (metrics_server.h); address NULL: off. */
struct metrics_config {
    char *address; /* numeric IPv4 or IPv6 address */
    int port;
};

struct config {
    char *source; /* file name, or "(built-in defaults)" */
    char *hostname;
    struct listener_config *listeners;
    size_t n_listeners;
    struct tls_config tls;
    struct limits_config limits;
    char **local_domains; /* accepted as final destination */
    size_t n_local_domains;
    struct cidr *relay_networks; /* clients allowed to relay */
    size_t n_relay_networks;
    smtp_data_policy line_endings; /* "strict" or "normalise" */
    char *spool_dir;
    char *plugins_dir;
    char **module_path; /* directories searched for <module>.so */
    size_t n_module_path;
    log_level log_level;
    /* log_format "text" or "json", log_target "stderr" or "syslog",
     * with its facility and the syslog daemon's socket (log.h) */
    log_format log_format;
    log_target log_target;
    log_facility log_facility;
    char *log_syslog_socket;

    char *user;           /* drop privileges to this user after binding */
    unsigned workers;     /* worker processes (supervisor.h) */
    double drain_timeout; /* SIGTERM: transactions finish within this */
    double reload_drain_timeout; /* SIGHUP: old workers' sessions */
    unsigned pool_threads;       /* the shared module pool (pool.h) */
    unsigned spool_threads;      /* the core pool: spool writes */
    struct dns_config dns;
    struct http_config http;
    struct metrics_config metrics;
};

/*
 * Load the main configuration. path NULL means the built-in defaults (the
 * quick start). On error returns NULL and writes one line into err.
 */
struct config *config_load(const char *path, char *err, size_t errlen);

/* The built-in defaults, also used as the base a file overrides. */
struct config *config_defaults(void);

void config_free(struct config *cfg);

/* The log level, format and target of cfg from now on (log.h). 0, or -1
 * with err (the syslog socket could not be made). */
int config_apply_log(const struct config *cfg, char *err, size_t errlen);

/* The effective main configuration as JSON, every key with its value
 * (defaults included), in the shape config_load() reads: fed back as the
 * file it gives the same configuration. NULL when out of memory. */
json_t *config_to_json(const struct config *cfg);

/* Does addr (AF_INET/AF_INET6 sockaddr) fall in one of the networks? */
bool cidr_match(const struct cidr *nets, size_t n, const struct sockaddr *addr);

/* Parse "192.0.2.0/24", "::1", "10.0.0.1"; 0 or -1. */
int cidr_parse(const char *s, struct cidr *out);

/* Parse a DNS server: a numeric address with an optional port,
 * "192.0.2.1", "127.0.0.1:5353", "::1", "[::1]:5353" (port 53 when
 * absent). out gets a sockaddr_in / sockaddr_in6. 0 or -1. */
int config_server_parse(const char *s, struct sockaddr_storage *out);

/* Is the domain (case-insensitive, trailing dot ignored) local? */
bool config_is_local_domain(const struct config *cfg, const char *domain,
                            size_t len);

/*
 * One plugins.d file: {"module": "name", "hooks": [...], "config": {...},
 * "threads": N}.
 * hooks_mask is 0 when "hooks" is absent (meaning: every hook offered).
 */
struct plugin_config {
    char *file;     /* path of the JSON file */
    char *instance; /* file name without .json */
    char *module;
    unsigned hooks_mask;
    unsigned threads; /* "threads": the instance's own pool; 0: shared */
    json_t *config;   /* owned; {} when absent */
};

/*
 * Read every *.json in dir, sorted by file name (so "10-a.json" runs before
 * "20-b.json"). Other files are ignored; a missing dir is an error. Returns
 * 0 and an array (caller frees with plugin_configs_free), or -1 with err.
 */
int plugin_configs_load(const char *dir, struct plugin_config **out,
                        size_t *n_out, char *err, size_t errlen);
void plugin_configs_free(struct plugin_config *p, size_t n);

#endif
