/*
 * config.c - the main configuration and the plugins.d instance files.
 *
 * The main file is checked against tables of fields (key, type, offset in
 * the struct, range); one generic walker parses any table and another frees
 * it, so each key costs one table row rather than one block of code. Every
 * error is a single line: "FILE: $.json.path: expected WHAT, got VALUE".
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <unistd.h>

#include <postern/hook.h>

#include "config.h"
#include "postern_build.h"

#define PLUGIN_THREADS_MAX 64
#define PLUGIN_THREADS_MAX_TEXT "64"
#define PATH_LEN 256 /* room for a JSON path in a message */
#define GOT_LEN 64   /* a quoted offending value is cut to this */

/* sizeof sockaddr_un.sun_path on Linux */
#define LOG_SOCKET_PATH_MAX 108

/* Enums are stored through an int pointer by the table walker. */
_Static_assert(sizeof(tls_mode) == sizeof(int), "enum size");
_Static_assert(sizeof(log_level) == sizeof(int), "enum size");
_Static_assert(sizeof(log_format) == sizeof(int), "enum size");
_Static_assert(sizeof(log_target) == sizeof(int), "enum size");
_Static_assert(sizeof(log_facility) == sizeof(int), "enum size");
_Static_assert(sizeof(smtp_data_policy) == sizeof(int), "enum size");

/* --- error reporting -------------------------------------------------- */

struct vctx {
    const char *file;
    char *err;
    size_t errlen;
};

static int vfail(struct vctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Messages are one line each, whatever bytes the input held. */
static void
one_line(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = ' ';
}

static int
vfail(struct vctx *c, const char *fmt, ...)
{
    va_list ap;
    int n = 0;

    if (c->errlen == 0)
        return -1;
    if (c->file)
        n = snprintf(c->err, c->errlen, "%s: ", c->file);
    if (n < 0 || (size_t)n >= c->errlen)
        return -1;
    va_start(ap, fmt);
    vsnprintf(c->err + n, c->errlen - n, fmt, ap);
    va_end(ap);
    one_line(c->err);
    return -1;
}

/* The offending value as compact ASCII JSON (so it stays on one line). */
static void
got_text(const json_t *v, char *buf, size_t len)
{
    char *s;

    if (!v) {
        snprintf(buf, len, "nothing");
        return;
    }
    s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_ENSURE_ASCII);
    if (!s) {
        snprintf(buf, len, "an unprintable value");
        return;
    }
    if (strlen(s) >= len && len > 4)
        snprintf(buf, len, "%.*s...", (int)(len - 4), s);
    else
        snprintf(buf, len, "%s", s);
    free(s);
}

static int
fail_expected(struct vctx *c, const char *path, const char *expected,
              const json_t *got)
{
    char g[GOT_LEN];

    got_text(got, g, sizeof g);
    return vfail(c, "%s: expected %s, got %s", path, expected, g);
}

static int
fail_oom(struct vctx *c)
{
    return vfail(c, "out of memory");
}

/* A jansson load error: "FILE:LINE:COLUMN: TEXT" when it has a position. */
static int
json_error_report(struct vctx *c, const json_error_t *jerr)
{
    if (jerr->line <= 0)
        return vfail(c, "%s", jerr->text);
    if (c->errlen)
        snprintf(c->err, c->errlen, "%s:%d:%d: %s", c->file, jerr->line,
                 jerr->column, jerr->text);
    one_line(c->err);
    return -1;
}

/* "$.parent" + key: ".key" for plain keys, "[\"odd key\"]" otherwise. */
static void
path_key(char *out, size_t len, const char *parent, const char *key)
{
    const char *k = key;
    json_t *s;
    char *quoted;

    while (*k && (isalnum((unsigned char)*k) || *k == '_' || *k == '-'))
        k++;
    if (*key && !*k) {
        snprintf(out, len, "%s.%s", parent, key);
        return;
    }
    s = json_string(key);
    quoted = s ? json_dumps(s, JSON_ENCODE_ANY | JSON_ENSURE_ASCII) : NULL;
    snprintf(out, len, "%s[%s]", parent, quoted ? quoted : "?");
    free(quoted);
    json_decref(s);
}

static void
path_index(char *out, size_t len, const char *parent, size_t i)
{
    snprintf(out, len, "%s[%zu]", parent, i);
}

/* --- small validators ------------------------------------------------- */

/* Dot-separated labels of 1..63 letters, digits and inner hyphens, at most
 * 253 characters; one trailing dot is allowed. */
static bool
is_domain(const char *s)
{
    size_t total = strlen(s);

    if (total > 0 && s[total - 1] == '.')
        total--;
    if (total == 0 || total > 253 || s[total - 1] == '.')
        return false;
    for (size_t i = 0; i < total;) {
        size_t label = 0;

        while (i + label < total && s[i + label] != '.') {
            if (!isalnum((unsigned char)s[i + label]) && s[i + label] != '-')
                return false;
            label++;
        }
        if (label == 0 || label > 63 || s[i] == '-' || s[i + label - 1] == '-')
            return false;
        i += label + 1;
    }
    return true;
}

static bool
is_numeric_address(const char *s)
{
    unsigned char buf[16];

    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* --- the field tables ------------------------------------------------- */

enum ftype {
    F_STRING,      /* char *, non-empty */
    F_STRING_NULL, /* char *, non-empty, or JSON null for NULL */
    F_DOMAIN,      /* char *, a domain name */
    F_ADDRESS,     /* char *, a numeric IPv4 or IPv6 address */
    F_BOOL,        /* bool */
    F_INT,         /* int in [min, max] */
    F_UNSIGNED,    /* unsigned in [min, max] */
    F_SIZE,        /* size_t in [min, max] */
    F_U64,         /* uint64_t in [min, max] */
    F_SECONDS,     /* double in [min, max] ((min, max] with F_EXCL_MIN) */
    F_NUMBER,      /* double in [min, max] */
    F_ENUM,        /* int-sized enum: index into names */
    F_CIDR,        /* struct cidr */
    F_SERVER,      /* char *, config_server_parse() accepts it */
    F_OBJECT,      /* a struct described by sub, parsed in place */
    F_ARRAY        /* elem-typed array replacing the old one, n at count */
};

#define F_REQUIRED 1u /* absent is an error */
#define F_NONEMPTY 2u /* F_ARRAY: at least one element */
#define F_EXCL_MIN 4u /* F_SECONDS: min itself is not allowed */
/* F_OBJECT: null turns it off (zeroed, size bytes); printed as null while
 * its first field, a string, is NULL */
#define F_NULL_OFF 8u

struct field {
    const char *key; /* NULL ends a table */
    enum ftype type;
    size_t offset;            /* of the value in its struct */
    double min, max;          /* numbers */
    const char *const *names; /* F_ENUM, NULL-terminated */
    const struct field *sub;  /* F_OBJECT, or F_ARRAY of F_OBJECT */
    enum ftype elem;          /* F_ARRAY: element type */
    size_t size;              /* F_ARRAY of F_OBJECT: element size */
    size_t count;             /* F_ARRAY: offset of the size_t count */
    unsigned flags;
    double unset_as; /* F_SECONDS of an array element: what 0 stands for */
};

#define AT(s, f) .offset = offsetof(struct s, f)
#define RANGE(lo, hi) .min = (lo), .max = (hi)
#define ARRAY_OF(s, f, n, t)                                                   \
    .type = F_ARRAY, AT(s, f), .elem = (t), .count = offsetof(struct s, n)

static const char *const tls_mode_names[] = {"none", "starttls", "implicit",
                                             NULL};
static const char *const log_level_names[] = {"error", "warning", "info",
                                              "debug", NULL};
static const char *const line_ending_names[] = {"strict", "normalise", NULL};
static const char *const log_format_names[] = {"text", "json", NULL};
static const char *const log_target_names[] = {"stderr", "syslog", NULL};
/* log_facility order (log.h) */
static const char *const log_facility_names[] = {
    "mail",   "daemon", "user",   "local0", "local1", "local2",
    "local3", "local4", "local5", "local6", "local7", NULL};

static const struct field listener_fields[] = {
    {"address", F_ADDRESS, AT(listener_config, address), .flags = F_REQUIRED},
    {"port", F_INT, AT(listener_config, port), RANGE(1, 65535),
     .flags = F_REQUIRED},
    {"tls", F_ENUM, AT(listener_config, tls), .names = tls_mode_names},
    {"tls_required", F_BOOL, AT(listener_config, tls_required)},
    {"auth_plaintext", F_BOOL, AT(listener_config, auth_plaintext)},
    {"auth_required", F_BOOL, AT(listener_config, auth_required)},
    {"proxy_protocol", F_BOOL, AT(listener_config, proxy_protocol)},
    {"proxy_networks",
     ARRAY_OF(listener_config, proxy_networks, n_proxy_networks, F_CIDR)},
    {"proxy_timeout", F_SECONDS, AT(listener_config, proxy_timeout),
     RANGE(0, 300), .flags = F_EXCL_MIN,
     .unset_as = LISTENER_PROXY_TIMEOUT_DEFAULT},
    {.key = NULL},
};

static const struct field cert_fields[] = {
    {"cert", F_STRING, AT(tls_cert_config, cert_file), .flags = F_REQUIRED},
    {"key", F_STRING, AT(tls_cert_config, key_file), .flags = F_REQUIRED},
    {.key = NULL},
};

static const struct field tls_fields[] = {
    {"certificates", ARRAY_OF(tls_config, certs, n_certs, F_OBJECT),
     .sub = cert_fields, .size = sizeof(struct tls_cert_config)},
    {"priorities", F_STRING, AT(tls_config, priorities)},
    {"client_ca", F_STRING_NULL, AT(tls_config, client_ca_file)},
    {"handshake_timeout", F_SECONDS, AT(tls_config, handshake_timeout),
     RANGE(0, 3600), .flags = F_EXCL_MIN},
    {"session_tickets", F_BOOL, AT(tls_config, session_tickets)},
    /* gnutls_db_set_cache_expiration() takes whole seconds, at most 7 days */
    {"session_lifetime", F_SECONDS, AT(tls_config, session_lifetime),
     RANGE(1, 604800)},
    {.key = NULL},
};

static const struct field limits_fields[] = {
    {"message_size", F_U64, AT(limits_config, message_size),
     RANGE(1024, 1ull << 40)},
    {"header_size", F_U64, AT(limits_config, header_size),
     RANGE(1024, 1ull << 30)},
    {"recipients", F_UNSIGNED, AT(limits_config, recipients), RANGE(1, 100000)},
    {"command_line", F_SIZE, AT(limits_config, command_line),
     RANGE(512, 65536)},
    {"connections", F_UNSIGNED, AT(limits_config, connections),
     RANGE(1, 1000000)},
    {"connections_per_ip", F_UNSIGNED, AT(limits_config, connections_per_ip),
     RANGE(1, 1000000)},
    {"connections_per_ip_ipv6_prefix", F_UNSIGNED,
     AT(limits_config, connections_per_ip_ipv6_prefix), RANGE(1, 128)},
    {"exempt_networks",
     ARRAY_OF(limits_config, exempt_networks, n_exempt_networks, F_CIDR)},
    {"connection_rate", F_NUMBER, AT(limits_config, connection_rate),
     RANGE(0, 1000000)},
    {"connection_rate_burst", F_UNSIGNED,
     AT(limits_config, connection_rate_burst), RANGE(1, 1000000)},
    {"message_rate", F_UNSIGNED, AT(limits_config, message_rate),
     RANGE(0, 1000000)},
    {"auth_failure_rate", F_UNSIGNED, AT(limits_config, auth_failure_rate),
     RANGE(0, 1000000)},
    {"command_timeout", F_SECONDS, AT(limits_config, command_timeout),
     RANGE(1, 3600)},
    {"data_timeout", F_SECONDS, AT(limits_config, data_timeout),
     RANGE(1, 3600)},
    {"errors", F_UNSIGNED, AT(limits_config, errors), RANGE(1, 1000)},
    {"greet_pause", F_SECONDS, AT(limits_config, greet_pause), RANGE(0, 60)},
    {"auth_failures", F_UNSIGNED, AT(limits_config, auth_failures),
     RANGE(1, 100)},
    {"transactions", F_UNSIGNED, AT(limits_config, transactions),
     RANGE(0, 1000000)},
    {"pending_timeout", F_SECONDS, AT(limits_config, pending_timeout),
     RANGE(1, 86400)},
    {.key = NULL},
};

static const struct field dns_fields[] = {
    {"servers", ARRAY_OF(dns_config, servers, n_servers, F_SERVER)},
    {"timeout", F_SECONDS, AT(dns_config, timeout), RANGE(0, 300),
     .flags = F_EXCL_MIN},
    {"cache_entries", F_UNSIGNED, AT(dns_config, cache_entries),
     RANGE(0, 1000000)},
    {"reverse", F_BOOL, AT(dns_config, reverse)},
    {"reverse_timeout", F_SECONDS, AT(dns_config, reverse_timeout),
     RANGE(0, 60), .flags = F_EXCL_MIN},
    {.key = NULL},
};

static const struct field http_fields[] = {
    {"max_in_flight", F_UNSIGNED, AT(http_config, max_in_flight),
     RANGE(1, 10000)},
    {"timeout", F_SECONDS, AT(http_config, timeout), RANGE(0, 3600),
     .flags = F_EXCL_MIN},
    {"ca_file", F_STRING_NULL, AT(http_config, ca_file)},
    {.key = NULL},
};

static const struct field metrics_fields[] = {
    {"address", F_ADDRESS, AT(metrics_config, address), .flags = F_REQUIRED},
    {"port", F_INT, AT(metrics_config, port), RANGE(1, 65535),
     .flags = F_REQUIRED},
    {.key = NULL},
};

static const struct field main_fields[] = {
    {"hostname", F_DOMAIN, AT(config, hostname)},
    {"listen", ARRAY_OF(config, listeners, n_listeners, F_OBJECT),
     .sub = listener_fields, .size = sizeof(struct listener_config),
     .flags = F_NONEMPTY},
    {"tls", F_OBJECT, AT(config, tls), .sub = tls_fields},
    {"limits", F_OBJECT, AT(config, limits), .sub = limits_fields},
    {"local_domains",
     ARRAY_OF(config, local_domains, n_local_domains, F_DOMAIN)},
    {"relay_networks",
     ARRAY_OF(config, relay_networks, n_relay_networks, F_CIDR)},
    {"line_endings", F_ENUM, AT(config, line_endings),
     .names = line_ending_names},
    {"spool_dir", F_STRING, AT(config, spool_dir)},
    {"plugins_dir", F_STRING, AT(config, plugins_dir)},
    {"module_path", ARRAY_OF(config, module_path, n_module_path, F_STRING)},
    {"log_level", F_ENUM, AT(config, log_level), .names = log_level_names},
    {"log_format", F_ENUM, AT(config, log_format), .names = log_format_names},
    {"log_target", F_ENUM, AT(config, log_target), .names = log_target_names},
    {"log_facility", F_ENUM, AT(config, log_facility),
     .names = log_facility_names},
    {"log_syslog_socket", F_STRING, AT(config, log_syslog_socket)},
    {"user", F_STRING_NULL, AT(config, user)},
    {"workers", F_UNSIGNED, AT(config, workers), RANGE(1, 64)},
    {"drain_timeout", F_SECONDS, AT(config, drain_timeout), RANGE(0, 3600)},
    {"reload_drain_timeout", F_SECONDS, AT(config, reload_drain_timeout),
     RANGE(0, 86400)},
    {"pool_threads", F_UNSIGNED, AT(config, pool_threads), RANGE(1, 64)},
    {"spool_threads", F_UNSIGNED, AT(config, spool_threads), RANGE(1, 64)},
    {"dns", F_OBJECT, AT(config, dns), .sub = dns_fields},
    {"http", F_OBJECT, AT(config, http), .sub = http_fields},
    {"metrics", F_OBJECT, AT(config, metrics), .sub = metrics_fields,
     .size = sizeof(struct metrics_config), .flags = F_NULL_OFF},
    {.key = NULL},
};

/* The whole struct config, as one object field at offset 0. */
static const struct field config_root = {"$", F_OBJECT, .sub = main_fields};

/* --- the table walker ------------------------------------------------- */

static size_t
elem_size(const struct field *f)
{
    switch (f->elem) {
    case F_CIDR:
        return sizeof(struct cidr);
    case F_OBJECT:
        return f->size;
    default:
        return sizeof(char *);
    }
}

/* The field describing element i of an array field. */
static struct field
elem_field(const struct field *f, size_t i)
{
    return (struct field){.type = f->elem,
                          .offset = i * elem_size(f),
                          .sub = f->sub,
                          .size = f->size};
}

/* What a field accepts, for "expected ..." (and "got nothing"). */
static const char *
describe(const struct field *f, char *buf, size_t len)
{
    size_t n;

    switch (f->type) {
    case F_STRING:
        return "a non-empty string";
    case F_STRING_NULL:
        return "a non-empty string or null";
    case F_DOMAIN:
        return "a domain name";
    case F_ADDRESS:
        return "a numeric IPv4 or IPv6 address";
    case F_SERVER:
        return "a numeric address with an optional port, such as "
               "\"127.0.0.1:5353\" or \"[::1]:53\"";
    case F_BOOL:
        return "true or false";
    case F_INT:
    case F_UNSIGNED:
    case F_SIZE:
    case F_U64:
        snprintf(buf, len, "an integer between %.0f and %.0f", f->min, f->max);
        return buf;
    case F_SECONDS:
        if (f->flags & F_EXCL_MIN)
            snprintf(buf, len, "a number of seconds above %g, at most %g",
                     f->min, f->max);
        else
            snprintf(buf, len, "a number of seconds between %g and %g", f->min,
                     f->max);
        return buf;
    case F_NUMBER:
        snprintf(buf, len, "a number between %g and %g", f->min, f->max);
        return buf;
    case F_ENUM:
        n = (size_t)snprintf(buf, len, "one of");
        for (size_t i = 0; f->names[i] && n < len; i++)
            n += (size_t)snprintf(buf + n, len - n, "%s \"%s\"", i ? "," : "",
                                  f->names[i]);
        return buf;
    case F_CIDR:
        return "a network such as \"192.0.2.0/24\" or \"2001:db8::/32\"";
    case F_OBJECT:
        return f->flags & F_NULL_OFF ? "an object or null" : "an object";
    case F_ARRAY:
        return f->flags & F_NONEMPTY ? "a non-empty array" : "an array";
    }
    return "?";
}

static int parse_object(struct vctx *c, const char *path, const json_t *obj,
                        const struct field *fields, void *base);
static int parse_value(struct vctx *c, const char *path, const struct field *f,
                       const json_t *v, void *base);
static void free_value(const struct field *f, void *base);

static void
array_free(const struct field *f, void *arr, size_t n)
{
    for (size_t i = 0; arr && i < n; i++) {
        struct field ef = elem_field(f, i);
        free_value(&ef, arr);
    }
    free(arr);
}

/* Free what a field owns in the struct at base (recursively). */
static void
free_value(const struct field *f, void *base)
{
    void *p = (char *)base + f->offset;
    size_t *count;

    switch (f->type) {
    case F_STRING:
    case F_STRING_NULL:
    case F_DOMAIN:
    case F_ADDRESS:
    case F_SERVER:
        free(*(char **)p);
        *(char **)p = NULL;
        break;
    case F_OBJECT:
        for (const struct field *s = f->sub; s->key; s++)
            free_value(s, p);
        break;
    case F_ARRAY:
        count = (size_t *)((char *)base + f->count);
        array_free(f, *(void **)p, *count);
        *(void **)p = NULL;
        *count = 0;
        break;
    default:
        break;
    }
}

static void
store_int(const struct field *f, void *p, json_int_t v)
{
    switch (f->type) {
    case F_INT:
        *(int *)p = (int)v;
        break;
    case F_UNSIGNED:
        *(unsigned *)p = (unsigned)v;
        break;
    case F_SIZE:
        *(size_t *)p = (size_t)v;
        break;
    default:
        *(uint64_t *)p = (uint64_t)v;
        break;
    }
}

static int
parse_string(struct vctx *c, const char *path, const struct field *f,
             const json_t *v, char **p, const char *what)
{
    const char *s = json_string_value(v);
    char *copy;

    if (f->type == F_STRING_NULL && json_is_null(v)) {
        free(*p);
        *p = NULL;
        return 0;
    }
    struct sockaddr_storage ss;
    if (!s || !*s || (f->type == F_DOMAIN && !is_domain(s)) ||
        (f->type == F_ADDRESS && !is_numeric_address(s)) ||
        (f->type == F_SERVER && config_server_parse(s, &ss) < 0))
        return fail_expected(c, path, what, v);
    if (!(copy = strdup(s)))
        return fail_oom(c);
    free(*p);
    *p = copy;
    return 0;
}

/* Parse an array into a fresh one, then replace the old array with it. */
static int
parse_array(struct vctx *c, const char *path, const struct field *f,
            const json_t *v, void *base, const char *what)
{
    void **p = (void **)((char *)base + f->offset);
    size_t *count = (size_t *)((char *)base + f->count);
    size_t n = json_array_size(v);
    char ipath[PATH_LEN];
    void *arr;

    if (!json_is_array(v) || (n == 0 && (f->flags & F_NONEMPTY)))
        return fail_expected(c, path, what, v);
    if (!(arr = calloc(n ? n : 1, elem_size(f))))
        return fail_oom(c);
    for (size_t i = 0; i < n; i++) {
        struct field ef = elem_field(f, i);

        path_index(ipath, sizeof ipath, path, i);
        if (parse_value(c, ipath, &ef, json_array_get(v, i), arr) < 0) {
            array_free(f, arr, n);
            return -1;
        }
    }
    array_free(f, *p, *count);
    *p = arr;
    *count = n;
    return 0;
}

static int
parse_value(struct vctx *c, const char *path, const struct field *f,
            const json_t *v, void *base)
{
    void *p = (char *)base + f->offset;
    char buf[160];
    const char *what = describe(f, buf, sizeof buf);
    double d;

    switch (f->type) {
    case F_STRING:
    case F_STRING_NULL:
    case F_DOMAIN:
    case F_ADDRESS:
    case F_SERVER:
        return parse_string(c, path, f, v, p, what);
    case F_BOOL:
        if (!json_is_boolean(v))
            return fail_expected(c, path, what, v);
        *(bool *)p = json_is_true(v);
        return 0;
    case F_INT:
    case F_UNSIGNED:
    case F_SIZE:
    case F_U64:
        if (!json_is_integer(v) || json_integer_value(v) < f->min ||
            json_integer_value(v) > f->max)
            return fail_expected(c, path, what, v);
        store_int(f, p, json_integer_value(v));
        return 0;
    case F_SECONDS:
    case F_NUMBER:
        d = json_number_value(v);
        if (!json_is_number(v) || d < f->min || d > f->max ||
            ((f->flags & F_EXCL_MIN) && d == f->min))
            return fail_expected(c, path, what, v);
        *(double *)p = d;
        return 0;
    case F_ENUM:
        for (int i = 0; json_is_string(v) && f->names[i]; i++) {
            if (strcmp(json_string_value(v), f->names[i]) == 0) {
                *(int *)p = i;
                return 0;
            }
        }
        return fail_expected(c, path, what, v);
    case F_CIDR:
        if (cidr_parse(json_string_value(v), p) < 0)
            return fail_expected(c, path, what, v);
        return 0;
    case F_OBJECT:
        if ((f->flags & F_NULL_OFF) && json_is_null(v)) {
            free_value(f, base);
            memset(p, 0, f->size);
            return 0;
        }
        if (!json_is_object(v))
            return fail_expected(c, path, what, v);
        return parse_object(c, path, v, f->sub, p);
    case F_ARRAY:
        return parse_array(c, path, f, v, base, what);
    }
    return -1;
}

static const struct field *
find_field(const struct field *fields, const char *key)
{
    for (; fields->key; fields++)
        if (strcmp(fields->key, key) == 0)
            return fields;
    return NULL;
}

/* Check obj against a table, in file order: the first problem is reported.
 * Fields the object leaves out keep their current (default) values. */
static int
parse_object(struct vctx *c, const char *path, const json_t *obj,
             const struct field *fields, void *base)
{
    char kpath[PATH_LEN], what[160];
    const char *key;
    json_t *v;

    if (!json_is_object(obj))
        return fail_expected(c, path, "an object", obj);
    json_object_foreach((json_t *)obj, key, v)
    {
        const struct field *f = find_field(fields, key);

        path_key(kpath, sizeof kpath, path, key);
        if (!f)
            return vfail(c, "%s: unknown key", kpath);
        if (parse_value(c, kpath, f, v, base) < 0)
            return -1;
    }
    for (const struct field *f = fields; f->key; f++) {
        if ((f->flags & F_REQUIRED) && !json_object_get(obj, f->key)) {
            path_key(kpath, sizeof kpath, path, f->key);
            return fail_expected(c, kpath, describe(f, what, sizeof what),
                                 NULL);
        }
    }
    return 0;
}

/* --- the effective configuration as JSON (--print-config) ------------- */

static json_t *object_to_json(const struct field *fields, const void *base);

/* A whole number as an integer ("30", not "30.0"), as the docs write it. */
static json_t *
number_to_json(double d)
{
    if (d >= -9007199254740992.0 && d <= 9007199254740992.0 &&
        d == (double)(json_int_t)d)
        return json_integer((json_int_t)d);
    return json_real(d);
}

static json_t *
cidr_to_json(const struct cidr *c)
{
    char addr[INET6_ADDRSTRLEN], text[INET6_ADDRSTRLEN + 8];

    if (!inet_ntop(c->family, c->addr, addr, sizeof addr))
        return NULL;
    snprintf(text, sizeof text, "%s/%u", addr, c->prefix);
    return json_string(text);
}

static json_t *
value_to_json(const struct field *f, const void *base)
{
    const void *p = (const char *)base + f->offset;
    double d;

    switch (f->type) {
    case F_STRING:
    case F_STRING_NULL:
    case F_DOMAIN:
    case F_ADDRESS:
    case F_SERVER:
        return *(char *const *)p ? json_string(*(char *const *)p) : json_null();
    case F_BOOL:
        return json_boolean(*(const bool *)p);
    case F_INT:
        return json_integer(*(const int *)p);
    case F_UNSIGNED:
        return json_integer(*(const unsigned *)p);
    case F_SIZE:
        return json_integer((json_int_t) * (const size_t *)p);
    case F_U64:
        return json_integer((json_int_t) * (const uint64_t *)p);
    case F_SECONDS:
    case F_NUMBER:
        d = *(const double *)p;
        return number_to_json(d == 0 && f->unset_as ? f->unset_as : d);
    case F_ENUM: {
        int i = *(const int *)p, n = 0;
        while (f->names[n])
            n++;
        return i >= 0 && i < n ? json_string(f->names[i]) : NULL;
    }
    case F_CIDR:
        return cidr_to_json(p);
    case F_OBJECT:
        if ((f->flags & F_NULL_OFF) &&
            !*(char *const *)((const char *)p + f->sub[0].offset))
            return json_null();
        return object_to_json(f->sub, p);
    case F_ARRAY: {
        const void *arr = *(void *const *)p;
        size_t n = *(const size_t *)((const char *)base + f->count);
        json_t *a = json_array();
        for (size_t i = 0; a && i < n; i++) {
            struct field ef = elem_field(f, i);
            if (json_array_append_new(a, value_to_json(&ef, arr)) < 0) {
                json_decref(a);
                a = NULL;
            }
        }
        return a;
    }
    }
    return NULL;
}

static json_t *
object_to_json(const struct field *fields, const void *base)
{
    json_t *o = json_object();

    for (const struct field *f = fields; o && f->key; f++) {
        if (json_object_set_new(o, f->key, value_to_json(f, base)) < 0) {
            json_decref(o);
            o = NULL;
        }
    }
    return o;
}

json_t *
config_to_json(const struct config *cfg)
{
    return object_to_json(main_fields, cfg);
}

/* --- the main configuration ------------------------------------------- */

static int
strings_dup(const char *const *src, size_t n, char ***out, size_t *n_out)
{
    char **v = calloc(n ? n : 1, sizeof *v);

    if (!v)
        return -1;
    *out = v;
    *n_out = n;
    for (size_t i = 0; i < n; i++)
        if (!(v[i] = strdup(src[i])))
            return -1;
    return 0;
}

static int
cidrs_parse(const char *const *src, size_t n, struct cidr **out, size_t *n_out)
{
    if (!(*out = calloc(n ? n : 1, sizeof **out)))
        return -1;
    *n_out = n;
    for (size_t i = 0; i < n; i++)
        if (cidr_parse(src[i], &(*out)[i]) < 0)
            return -1;
    return 0;
}

/*
 * The default module_path. An installed postern searches only the
 * installed module directory: the build tree it came from may be gone,
 * stale, or writable by whoever built it. The postern that meson built in
 * the build tree (the one `sh .ci/bootstrap run` starts on the built-in
 * configuration) searches the build tree's modules first, then the
 * installed ones. It is recognised as the very file at the build path known
 * at configure time: same device and inode as /proc/self/exe. `meson
 * install` writes a copy, which is never that file; without /proc, or once
 * the build tree is gone, the answer is "installed".
 */
static int
config_default_module_path(char ***out, size_t *n_out)
{
    static const char *const build_tree[] = {POSTERN_BUILD_MODULE_DIR,
                                             POSTERN_MODULE_DIR};
    static const char *const installed[] = {POSTERN_MODULE_DIR};
    const char *execfn = (const char *)getauxval(AT_EXECFN);
    struct stat self, built;

    if (stat(POSTERN_BUILD_EXE, &built) == 0 &&
        ((stat("/proc/self/exe", &self) == 0 && self.st_dev == built.st_dev &&
          self.st_ino == built.st_ino) ||
         /* under valgrind /proc/self/exe is the tool; the path given to
          * execve is still the program's */
         (execfn && stat(execfn, &self) == 0 && self.st_dev == built.st_dev &&
          self.st_ino == built.st_ino && S_ISREG(self.st_mode))))
        return strings_dup(build_tree, 2, out, n_out);
    return strings_dup(installed, 1, out, n_out);
}

/* Equal directory names, ignoring trailing slashes ("/a/" is "/a"). */
static bool
same_dir(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);

    while (la > 1 && a[la - 1] == '/')
        la--;
    while (lb > 1 && b[lb - 1] == '/')
        lb--;
    return la == lb && memcmp(a, b, la) == 0;
}

/*
 * A module_path from the file extends the default rather than replacing
 * it: the configured directories first (a local module may shadow a
 * bundled one on purpose), then the default ones they do not already
 * name, so the bundled modules stay loadable. 0 or -1 (out of memory).
 */
static int
config_module_path_extend(struct config *cfg)
{
    char **defaults = NULL, **grown = NULL;
    size_t n_defaults = 0;

    if (config_default_module_path(&defaults, &n_defaults) < 0 ||
        !(grown =
              realloc(cfg->module_path,
                      (cfg->n_module_path + n_defaults + 1) * sizeof *grown))) {
        /* strings_dup() left a NULL-filled array on failure */
        for (size_t i = 0; defaults && i < n_defaults; i++)
            free(defaults[i]);
        free(defaults);
        return -1;
    }
    cfg->module_path = grown;
    for (size_t i = 0; i < n_defaults; i++) {
        bool listed = false;

        for (size_t j = 0; j < cfg->n_module_path && !listed; j++)
            listed = same_dir(cfg->module_path[j], defaults[i]);
        if (listed)
            free(defaults[i]);
        else
            cfg->module_path[cfg->n_module_path++] = defaults[i];
    }
    free(defaults);
    return 0;
}

struct config *
config_defaults(void)
{
    static const char *const exempt[] = {"127.0.0.0/8", "::1/128"};
    static const char *const domains[] = {"localhost", "example.com"};
    struct config *cfg = calloc(1, sizeof *cfg);
    char host[256] = "";

    if (!cfg)
        return NULL;
    if (gethostname(host, sizeof host - 1) < 0 || !*host)
        snprintf(host, sizeof host, "localhost");
    cfg->limits = (struct limits_config){
        .message_size = 10485760,
        .header_size = 102400,
        .recipients = 1000,
        .command_line = 2048,
        .connections = 1000,
        .connections_per_ip = 100,
        .connections_per_ip_ipv6_prefix = 64,
        /* per client address; see docs/configuration.md for why */
        .connection_rate = 10,
        .connection_rate_burst = 100,
        .message_rate = 600,
        .auth_failure_rate = 30,
        .command_timeout = 300, /* RFC 5321 4.5.3.2.7 */
        .data_timeout = 180,    /* RFC 5321 4.5.3.2.6, per data block */
        .errors = 20,           /* Postfix smtpd_hard_error_limit */
        .greet_pause = 0,
        .auth_failures = 3,
        .transactions = 0,
        /* RFC 5321 4.5.3.2.6: a client waits 10 minutes for the reply to
         * the end of data */
        .pending_timeout = 600,
    };
    cfg->tls.handshake_timeout = 30;
    cfg->tls.session_tickets = true;
    cfg->tls.session_lifetime = 21600; /* GnuTLS's own default: 6 hours */
    cfg->line_endings = SMTP_DATA_STRICT;
    cfg->log_level = LOG_LEVEL_INFO;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->workers = cpus < 1 ? 1 : cpus > 64 ? 64 : (unsigned)cpus;
    cfg->drain_timeout = 30;
    cfg->reload_drain_timeout = 300;
    cfg->pool_threads = 8;
    cfg->spool_threads = 2;
    cfg->dns = (struct dns_config){
        .timeout = 5,
        .cache_entries = 10000,
        .reverse = true,
        .reverse_timeout = 2,
    };
    cfg->http = (struct http_config){.max_in_flight = 64, .timeout = 30};
    cfg->n_listeners = 1;
    cfg->listeners = calloc(1, sizeof *cfg->listeners);
    if (!cfg->listeners || !(cfg->listeners[0].address = strdup("127.0.0.1")) ||
        !(cfg->source = strdup("(built-in defaults)")) ||
        !(cfg->hostname = strdup(host)) ||
        !(cfg->tls.priorities = strdup("NORMAL:-VERS-ALL:+VERS-TLS1.3:"
                                       "+VERS-TLS1.2:%SERVER_PRECEDENCE")) ||
        !(cfg->spool_dir = strdup("var/spool")) ||
        !(cfg->plugins_dir = strdup("plugins.d")) ||
        !(cfg->log_syslog_socket = strdup(LOG_SYSLOG_SOCKET_DEFAULT)) ||
        cidrs_parse(exempt, 2, &cfg->limits.exempt_networks,
                    &cfg->limits.n_exempt_networks) < 0 ||
        strings_dup(domains, 2, &cfg->local_domains, &cfg->n_local_domains) <
            0 ||
        config_default_module_path(&cfg->module_path, &cfg->n_module_path) <
            0) {
        config_free(cfg);
        return NULL;
    }
    cfg->listeners[0].port = 2525;
    cfg->listeners[0].tls = TLS_MODE_NONE;
    return cfg;
}

int
config_apply_log(const struct config *cfg, char *err, size_t errlen)
{
    struct log_output o = {
        .format = cfg->log_format,
        .target = cfg->log_target,
        .facility = cfg->log_facility,
        .syslog_socket = cfg->log_syslog_socket,
    };
    if (log_set_output(&o, err, errlen) < 0)
        return -1;
    log_set_level(cfg->log_level);
    return 0;
}

void
config_free(struct config *cfg)
{
    if (!cfg)
        return;
    free_value(&config_root, cfg);
    free(cfg->source);
    free(cfg);
}

/* Rules that involve more than one key. */
static int
config_check(struct vctx *c, const struct config *cfg, const json_t *root)
{
    char path[PATH_LEN];

    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct listener_config *l = &cfg->listeners[i];

        if (l->tls == TLS_MODE_NONE && l->tls_required) {
            path_index(path, sizeof path, "$.listen", i);
            return vfail(c,
                         "%s.tls_required: expected false when the "
                         "listener's tls is \"none\", got true",
                         path);
        }
        if (l->proxy_protocol && l->n_proxy_networks == 0) {
            /* Anyone could claim any client address. */
            char key[PATH_LEN + 20];
            path_index(path, sizeof path, "$.listen", i);
            snprintf(key, sizeof key, "%s.proxy_networks", path);
            return fail_expected(
                c, key,
                "a non-empty array of the networks allowed to send the "
                "PROXY header, as proxy_protocol is true",
                json_object_get(
                    json_array_get(json_object_get(root, "listen"), i),
                    "proxy_networks"));
        }
        if (l->tls != TLS_MODE_NONE && cfg->tls.n_certs == 0) {
            const json_t *certs =
                json_object_get(json_object_get(root, "tls"), "certificates");
            char what[PATH_LEN + 80];

            path_index(path, sizeof path, "$.listen", i);
            snprintf(what, sizeof what,
                     "a non-empty array of certificates, as %s uses TLS", path);
            return fail_expected(c, "$.tls.certificates", what, certs);
        }
    }
    if (cfg->limits.greet_pause >= cfg->limits.command_timeout) {
        /* Every client would time out before it is greeted. */
        char what[80];
        snprintf(what, sizeof what,
                 "a number of seconds below limits.command_timeout (%g)",
                 cfg->limits.command_timeout);
        return fail_expected(
            c, "$.limits.greet_pause", what,
            json_object_get(json_object_get(root, "limits"), "greet_pause"));
    }
    if (cfg->dns.reverse &&
        cfg->dns.reverse_timeout >= cfg->limits.command_timeout) {
        char what[80];
        snprintf(what, sizeof what,
                 "a number of seconds below limits.command_timeout (%g)",
                 cfg->limits.command_timeout);
        return fail_expected(
            c, "$.dns.reverse_timeout", what,
            json_object_get(json_object_get(root, "dns"), "reverse_timeout"));
    }
    if (strlen(cfg->log_syslog_socket) >= LOG_SOCKET_PATH_MAX)
        return fail_expected(c, "$.log_syslog_socket",
                             "a socket path shorter than 108 bytes",
                             json_object_get(root, "log_syslog_socket"));
    if (cfg->http.ca_file && access(cfg->http.ca_file, R_OK) != 0) {
        char what[PATH_LEN + 120];
        snprintf(what, sizeof what, "a readable PEM CA file (%s: %s)",
                 cfg->http.ca_file, strerror(errno));
        return fail_expected(
            c, "$.http.ca_file", what,
            json_object_get(json_object_get(root, "http"), "ca_file"));
    }
    return 0;
}

struct config *
config_load(const char *path, char *err, size_t errlen)
{
    struct vctx c = {path, err, errlen};
    struct config *cfg = NULL;
    json_t *root = NULL;
    json_error_t jerr;
    struct stat st;
    char *source = NULL;

    if (errlen)
        *err = '\0';
    /* jansson reads a directory as an empty file; say what it is instead */
    if (path && stat(path, &st) < 0) {
        vfail(&c, "cannot read: %s", strerror(errno));
        return NULL;
    }
    if (path && S_ISDIR(st.st_mode)) {
        vfail(&c, "cannot read: is a directory");
        return NULL;
    }
    if (path && !(root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr))) {
        json_error_report(&c, &jerr);
        return NULL;
    }
    if (!(cfg = config_defaults()) || (path && !(source = strdup(path)))) {
        fail_oom(&c);
        goto fail;
    }
    if (!path)
        return cfg;
    free(cfg->source);
    cfg->source = source;
    if (parse_object(&c, "$", root, main_fields, cfg) < 0 ||
        config_check(&c, cfg, root) < 0)
        goto fail;
    if (json_object_get(root, "module_path") &&
        config_module_path_extend(cfg) < 0) {
        fail_oom(&c);
        goto fail;
    }
    json_decref(root);
    return cfg;
fail:
    json_decref(root);
    config_free(cfg);
    return NULL;
}

/* --- networks and domains --------------------------------------------- */

int
config_server_parse(const char *s, struct sockaddr_storage *out)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *port = NULL;
    size_t hlen;

    if (!s)
        return -1;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || (end[1] != '\0' && end[1] != ':'))
            return -1;
        hlen = (size_t)(end - s - 1);
        s++;
        port = end[1] == ':' ? end + 2 : NULL;
    } else {
        const char *colon = strchr(s, ':');
        /* One colon: IPv4 with a port; more: a bare IPv6 address. */
        if (colon && !strchr(colon + 1, ':')) {
            hlen = (size_t)(colon - s);
            port = colon + 1;
        } else {
            hlen = strlen(s);
        }
    }
    if (hlen == 0 || hlen >= sizeof host)
        return -1;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    long p = 53;
    if (port) {
        char *end;
        if (!isdigit((unsigned char)*port))
            return -1;
        errno = 0;
        p = strtol(port, &end, 10);
        if (*end || errno || p < 1 || p > 65535)
            return -1;
    }
    memset(out, 0, sizeof *out);
    struct sockaddr_in *in = (struct sockaddr_in *)out;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)p);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)p);
        return 0;
    }
    return -1;
}

int
cidr_parse(const char *s, struct cidr *out)
{
    char buf[INET6_ADDRSTRLEN + 8];
    unsigned long prefix = 0;
    char *slash, *end;
    unsigned max;

    if (!s || strlen(s) >= sizeof buf)
        return -1;
    memcpy(buf, s, strlen(s) + 1);
    memset(out, 0, sizeof *out);
    if ((slash = strchr(buf, '/')))
        *slash = '\0';
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        out->family = AF_INET6;
        max = 128;
    } else {
        return -1;
    }
    prefix = max;
    if (slash) {
        /* digits only: strtoul alone would take " 8", "+8" and "-0" */
        if (!isdigit((unsigned char)slash[1]) || strlen(slash + 1) > 3)
            return -1;
        errno = 0;
        prefix = strtoul(slash + 1, &end, 10);
        if (*end || prefix > max)
            return -1;
    }
    out->prefix = (unsigned)prefix;
    /* Keep only the network part, so "10.1.2.3/8" means 10.0.0.0/8. */
    for (unsigned bit = out->prefix; bit < max; bit++)
        out->addr[bit / 8] &= (unsigned char)~(0x80u >> (bit % 8));
    return 0;
}

static bool
prefix_equal(const unsigned char *a, const unsigned char *net, unsigned bits)
{
    unsigned full = bits / 8, rest = bits % 8;

    if (memcmp(a, net, full) != 0)
        return false;
    return rest == 0 ||
           ((a[full] ^ net[full]) & (unsigned char)(0xffu << (8 - rest))) == 0;
}

bool
cidr_match(const struct cidr *nets, size_t n, const struct sockaddr *addr)
{
    const unsigned char *v4 = NULL, *v6 = NULL;

    if (!addr)
        return false;
    if (addr->sa_family == AF_INET) {
        v4 = (const unsigned char *)&((const struct sockaddr_in *)addr)
                 ->sin_addr;
    } else if (addr->sa_family == AF_INET6) {
        const struct in6_addr *a6 =
            &((const struct sockaddr_in6 *)addr)->sin6_addr;

        v6 = a6->s6_addr;
        /* ::ffff:192.0.2.1 (a dual-stack socket) is the IPv4 client */
        if (IN6_IS_ADDR_V4MAPPED(a6))
            v4 = a6->s6_addr + 12;
    }
    for (size_t i = 0; i < n; i++) {
        if (nets[i].family == AF_INET && v4 &&
            prefix_equal(v4, nets[i].addr, nets[i].prefix))
            return true;
        if (nets[i].family == AF_INET6 && v6 &&
            prefix_equal(v6, nets[i].addr, nets[i].prefix))
            return true;
    }
    return false;
}

/* Length without one trailing dot ("example.com." is "example.com"). */
static size_t
domain_len(const char *s, size_t len)
{
    return len > 0 && s[len - 1] == '.' ? len - 1 : len;
}

bool
config_is_local_domain(const struct config *cfg, const char *domain, size_t len)
{
    len = domain_len(domain, len);
    if (len == 0)
        return false;
    for (size_t i = 0; i < cfg->n_local_domains; i++) {
        const char *d = cfg->local_domains[i];

        if (domain_len(d, strlen(d)) == len && strncasecmp(d, domain, len) == 0)
            return true;
    }
    return false;
}

/* --- plugins.d -------------------------------------------------------- */

static bool
is_module_name(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++)
        if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) ||
              *s == '_'))
            return false;
    return true;
}

static int
hook_by_name(const char *name)
{
    for (int h = 0; name && h < POSTERN_HOOK_COUNT; h++)
        if (strcmp(postern_hook_name((postern_hook)h), name) == 0)
            return h;
    return -1;
}

static int
plugin_hooks_parse(struct vctx *c, const json_t *hooks, unsigned *mask)
{
    char path[PATH_LEN], what[200];
    size_t n = 0;

    n = (size_t)snprintf(what, sizeof what, "one of");
    for (int h = 0; h < POSTERN_HOOK_COUNT && n < sizeof what; h++)
        n += (size_t)snprintf(what + n, sizeof what - n, "%s \"%s\"",
                              h ? "," : "", postern_hook_name((postern_hook)h));
    if (!json_is_array(hooks) || json_array_size(hooks) == 0)
        return fail_expected(c, "$.hooks", "a non-empty array of hook names",
                             hooks);
    *mask = 0;
    for (size_t i = 0; i < json_array_size(hooks); i++) {
        int h = hook_by_name(json_string_value(json_array_get(hooks, i)));

        path_index(path, sizeof path, "$.hooks", i);
        if (h < 0)
            return fail_expected(c, path, what, json_array_get(hooks, i));
        if (*mask & POSTERN_HOOK_BIT(h))
            return vfail(c, "%s: hook \"%s\" is listed twice", path,
                         postern_hook_name((postern_hook)h));
        *mask |= POSTERN_HOOK_BIT(h);
    }
    return 0;
}

static int
plugin_config_parse(struct vctx *c, const json_t *root, struct plugin_config *p)
{
    static const char *const keys[] = {"module", "hooks", "config", "threads",
                                       NULL};
    const json_t *module = json_object_get(root, "module");
    const json_t *hooks = json_object_get(root, "hooks");
    const json_t *threads = json_object_get(root, "threads");
    const json_t *config = json_object_get(root, "config");
    char path[PATH_LEN];
    const char *key;
    json_t *v;

    if (!json_is_object(root))
        return fail_expected(c, "$", "an object", root);
    json_object_foreach((json_t *)root, key, v)
    {
        size_t i = 0;

        while (keys[i] && strcmp(keys[i], key) != 0)
            i++;
        if (!keys[i]) {
            path_key(path, sizeof path, "$", key);
            return vfail(c, "%s: unknown key", path);
        }
    }
    if (!is_module_name(json_string_value(module)))
        return fail_expected(c, "$.module", "a module name of [a-z0-9_]+",
                             module);
    if (!(p->module = strdup(json_string_value(module))))
        return fail_oom(c);
    if (hooks && plugin_hooks_parse(c, hooks, &p->hooks_mask) < 0)
        return -1;
    if (config && !json_is_object(config))
        return fail_expected(c, "$.config", "an object", config);
    if (threads) {
        /* The instance's own pool (pool.h), apart from the shared one. */
        if (!json_is_integer(threads) || json_integer_value(threads) < 1 ||
            json_integer_value(threads) > PLUGIN_THREADS_MAX)
            return fail_expected(
                c, "$.threads",
                "an integer between 1 and " PLUGIN_THREADS_MAX_TEXT, threads);
        p->threads = (unsigned)json_integer_value(threads);
    }
    p->config = config ? json_incref((json_t *)config) : json_object();
    return p->config ? 0 : fail_oom(c);
}

static int
plugin_config_load(const char *dir, const char *name, struct plugin_config *p,
                   char *err, size_t errlen)
{
    size_t dlen = strlen(dir);
    struct vctx c = {NULL, err, errlen};
    json_error_t jerr;
    json_t *root;
    int rc;

    if (asprintf(&p->file, "%s%s%s", dir,
                 dlen && dir[dlen - 1] == '/' ? "" : "/", name) < 0) {
        p->file = NULL;
        return fail_oom(&c);
    }
    c.file = p->file;
    if (!(p->instance = strndup(name, strlen(name) - strlen(".json"))))
        return fail_oom(&c);
    if (!(root = json_load_file(p->file, JSON_REJECT_DUPLICATES, &jerr)))
        return json_error_report(&c, &jerr);
    rc = plugin_config_parse(&c, root, p);
    json_decref(root);
    return rc;
}

/* *.json names of regular files (or links to them); dot files are not. */
static bool
is_plugin_file(const char *dir, const char *name)
{
    size_t len = strlen(name);
    char path[4096];
    struct stat st;

    if (name[0] == '.' || len <= 5 || strcmp(name + len - 5, ".json") != 0)
        return false;
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
        return false;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int
name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int
plugin_configs_load(const char *dir, struct plugin_config **out, size_t *n_out,
                    char *err, size_t errlen)
{
    struct vctx c = {dir, err, errlen};
    struct plugin_config *p = NULL;
    char **names = NULL, **grown;
    size_t n = 0, cap = 0;
    struct dirent *de;
    int rc = 0;
    DIR *d;

    *out = NULL;
    *n_out = 0;
    if (errlen)
        *err = '\0';
    if (!(d = opendir(dir)))
        return vfail(&c, "cannot open directory: %s", strerror(errno));
    while ((de = readdir(d))) {
        if (!is_plugin_file(dir, de->d_name))
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            if (!(grown = realloc(names, cap * sizeof *names))) {
                rc = fail_oom(&c);
                break;
            }
            names = grown;
        }
        if (!(names[n] = strdup(de->d_name))) {
            rc = fail_oom(&c);
            break;
        }
        n++;
    }
    closedir(d);
    if (rc == 0 && n > 0) {
        qsort(names, n, sizeof *names, name_cmp);
        if (!(p = calloc(n, sizeof *p)))
            rc = fail_oom(&c);
    }
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = plugin_config_load(dir, names[i], &p[i], err, errlen);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (rc < 0) {
        plugin_configs_free(p, n);
        return -1;
    }
    *out = p;
    *n_out = n;
    return 0;
}

void
plugin_configs_free(struct plugin_config *p, size_t n)
{
    for (size_t i = 0; p && i < n; i++) {
        free(p[i].file);
        free(p[i].instance);
        free(p[i].module);
        json_decref(p[i].config);
    }
    free(p);
}
