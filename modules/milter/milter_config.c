/*
 * milter_config.c - one milter instance's configuration: where the milter
 * listens, its timeouts, what a failure costs, the macros of each stage
 * and the events it never gets.
 *
 * The socket is written as Postfix or Sendmail write it, numeric hosts
 * only (a name would need a blocking lookup): "unix:/path" or
 * "local:/path"; "inet:host:port" with host an IPv4 address or an IPv6
 * one in brackets; Sendmail's "inet:port@host" and "inet6:port@host".
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "milter.h"

static const char *const milter_stage_keys[MILTER_STAGE_COUNT] = {
    "connect", "helo", "mail", "rcpt", "data", "eom", "eoh"};

/* Postfix's defaults (postconf -d milter_*_macros), less the macros
 * postern has no value for. */
static const char *const milter_default_macros[MILTER_STAGE_COUNT] = {
    "j {daemon_name} {daemon_addr} v _ {client_addr} {client_port} "
    "{client_name}",
    "{tls_version} {cipher} {cert_subject}",
    "i {auth_authen} {mail_addr}",
    "i {rcpt_addr}",
    "i",
    "i",
    "i"};

/* Events a config may turn off (in addition to what the milter asks). */
static const struct {
    const char *name;
    uint32_t flag;
} milter_events[] = {{"connect", SMFIP_NOCONNECT}, {"helo", SMFIP_NOHELO},
                     {"mail", SMFIP_NOMAIL},       {"rcpt", SMFIP_NORCPT},
                     {"data", SMFIP_NODATA},       {"header", SMFIP_NOHDRS},
                     {"eoh", SMFIP_NOEOH},         {"body", SMFIP_NOBODY}};

const char *
milter_config_default_macros(enum milter_stage stage)
{
    return stage < MILTER_STAGE_COUNT ? milter_default_macros[stage] : "";
}

void
milter_config_free(struct milter_config *cfg)
{
    free(cfg->instance);
    free(cfg->socket);
    free(cfg->hostname);
    free(cfg->daemon_name);
    for (int i = 0; i < MILTER_STAGE_COUNT; i++)
        free(cfg->macros[i]);
    memset(cfg, 0, sizeof *cfg);
}

static int
milter_port(const char *s, size_t len, uint16_t *port)
{
    unsigned long v = 0;

    if (len == 0 || len > 5)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v == 0 || v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

/* host (numeric, IPv6 with or without brackets) and port into cfg. */
static int
milter_inet(struct milter_config *cfg, const char *host, size_t host_len,
            const char *port, size_t port_len, int family)
{
    char buf[INET6_ADDRSTRLEN + 2];
    uint16_t p;

    if (host_len >= 2 && host[0] == '[' && host[host_len - 1] == ']') {
        host++;
        host_len -= 2;
        family = AF_INET6;
    }
    if (host_len == 0 || host_len >= sizeof buf ||
        milter_port(port, port_len, &p) != 0)
        return -1;
    memcpy(buf, host, host_len);
    buf[host_len] = '\0';
    if (family != AF_INET6) {
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(p)};
        if (inet_pton(AF_INET, buf, &sin.sin_addr) == 1) {
            cfg->family = AF_INET;
            memcpy(cfg->addr, &sin, sizeof sin);
            cfg->addr_len = sizeof sin;
            return 0;
        }
    }
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(p)};
    if (inet_pton(AF_INET6, buf, &sin6.sin6_addr) != 1)
        return -1;
    cfg->family = AF_INET6;
    memcpy(cfg->addr, &sin6, sizeof sin6);
    cfg->addr_len = sizeof sin6;
    return 0;
}

static int
milter_socket_parse(struct milter_config *cfg, const char *s)
{
    if (strncmp(s, "unix:", 5) == 0 || strncmp(s, "local:", 6) == 0) {
        const char *path = strchr(s, ':') + 1;
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        if (path[0] != '/' || strlen(path) >= sizeof sun.sun_path)
            return -1;
        strcpy(sun.sun_path, path);
        cfg->family = AF_UNIX;
        memcpy(cfg->addr, &sun, sizeof sun);
        cfg->addr_len = sizeof sun;
        return 0;
    }
    int family = 0;
    const char *rest;
    if (strncmp(s, "inet6:", 6) == 0) {
        family = AF_INET6;
        rest = s + 6;
    } else if (strncmp(s, "inet:", 5) == 0) {
        rest = s + 5;
    } else {
        return -1;
    }
    const char *at = strchr(rest, '@');
    if (at != NULL) /* Sendmail: port@host */
        return milter_inet(cfg, at + 1, strlen(at + 1), rest,
                           (size_t)(at - rest), family);
    const char *colon = strrchr(rest, ':'); /* Postfix: host:port */
    if (colon == NULL)
        return -1;
    size_t host_len = (size_t)(colon - rest);
    if (host_len > 0 && rest[0] != '[' && memchr(rest, ':', host_len))
        return -1; /* an IPv6 host needs brackets here */
    return milter_inet(cfg, rest, host_len, colon + 1, strlen(colon + 1),
                       family);
}

static int
milter_seconds(postern_module_init *init, const char *path, json_t *v,
               double *out)
{
    double d = json_number_value(v);

    if (!json_is_number(v) || !isfinite(d) || d <= 0 || d > 3600) {
        postern_init_error(init, path,
                           "expected a number of seconds above 0, at most "
                           "3600");
        return -1;
    }
    *out = d;
    return 0;
}

static int
milter_timeouts(postern_module_init *init, struct milter_config *cfg,
                json_t *value)
{
    const char *key;
    json_t *v;

    if (!json_is_object(value)) {
        postern_init_error(init, "timeouts",
                           "expected an object with \"connect\", "
                           "\"command\" and/or \"content\" (seconds)");
        return -1;
    }
    json_object_foreach(value, key, v)
    {
        char path[96];
        snprintf(path, sizeof path, "timeouts.%.40s", key);
        double *slot = strcmp(key, "connect") == 0   ? &cfg->connect_timeout
                       : strcmp(key, "command") == 0 ? &cfg->command_timeout
                       : strcmp(key, "content") == 0 ? &cfg->content_timeout
                                                     : NULL;
        if (slot == NULL) {
            postern_init_error(init, path,
                               "unknown key (expected connect, command or "
                               "content)");
            return -1;
        }
        if (milter_seconds(init, path, v, slot) != 0)
            return -1;
    }
    return 0;
}

/* A macro list: an array of names ("j", "{daemon_name}", "auth_authen"),
 * kept as one space-separated string of braced or one-letter names. */
static int
milter_macro_list(postern_module_init *init, const char *path, json_t *value,
                  char **out)
{
    size_t n = json_array_size(value);
    size_t cap = 1;
    char *list;

    if (!json_is_array(value) || n > 64) {
        postern_init_error(init, path,
                           "expected an array of at most 64 macro names "
                           "(\"j\", \"{daemon_name}\")");
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        cap += json_string_length(json_array_get(value, i)) + 3;
    if ((list = calloc(1, cap)) == NULL) {
        postern_init_error(init, path, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_array_get(value, i);
        const char *s = json_string_value(item);
        char name[64], where[128];
        bool bad = true;
        const char *rest = NULL;
        if (s != NULL && strlen(s) == json_string_length(item))
            rest = milter_macro_next(s, name, sizeof name, &bad);
        if (rest == NULL || bad || *rest != '\0') {
            snprintf(where, sizeof where, "%s[%zu]", path, i);
            postern_init_error(init, where,
                               "expected one macro name (\"j\", "
                               "\"{daemon_name}\" or \"daemon_name\")");
            free(list);
            return -1;
        }
        if (i > 0)
            strcat(list, " ");
        if (strlen(name) == 1) {
            strcat(list, name);
        } else {
            strcat(list, "{");
            strcat(list, name);
            strcat(list, "}");
        }
    }
    *out = list;
    return 0;
}

static int
milter_macros(postern_module_init *init, struct milter_config *cfg,
              json_t *value)
{
    const char *key;
    json_t *v;

    if (!json_is_object(value)) {
        postern_init_error(init, "macros",
                           "expected an object of stage: [names] (stages "
                           "connect, helo, mail, rcpt, data, eoh, eom)");
        return -1;
    }
    json_object_foreach(value, key, v)
    {
        char path[96];
        int stage = 0;
        snprintf(path, sizeof path, "macros.%.40s", key);
        while (stage < MILTER_STAGE_COUNT &&
               strcmp(key, milter_stage_keys[stage]) != 0)
            stage++;
        if (stage == MILTER_STAGE_COUNT) {
            postern_init_error(init, path,
                               "unknown stage (expected connect, helo, "
                               "mail, rcpt, data, eoh or eom)");
            return -1;
        }
        free(cfg->macros[stage]);
        cfg->macros[stage] = NULL;
        if (milter_macro_list(init, path, v, &cfg->macros[stage]) != 0)
            return -1;
    }
    return 0;
}

static int
milter_skip_events(postern_module_init *init, struct milter_config *cfg,
                   json_t *value)
{
    size_t n_events = sizeof milter_events / sizeof milter_events[0];

    if (!json_is_array(value)) {
        postern_init_error(init, "skip",
                           "expected an array of events (connect, helo, "
                           "mail, rcpt, data, header, eoh, body)");
        return -1;
    }
    for (size_t i = 0; i < json_array_size(value); i++) {
        const char *s = json_string_value(json_array_get(value, i));
        size_t k = 0;
        while (s != NULL && k < n_events && strcmp(s, milter_events[k].name))
            k++;
        if (s == NULL || k == n_events) {
            char where[64];
            snprintf(where, sizeof where, "skip[%zu]", i);
            postern_init_error(init, where,
                               "expected one of connect, helo, mail, rcpt, "
                               "data, header, eoh, body");
            return -1;
        }
        cfg->protocol_mask |= milter_events[k].flag;
    }
    return 0;
}

int
milter_config_parse(postern_module_init *init, struct milter_config *cfg)
{
    const json_t *config = postern_init_config(init);
    const char *key;
    json_t *value;
    const char *instance = postern_init_instance(init);
    const char *hostname = postern_init_hostname(init);

    cfg->connect_timeout = 30;
    cfg->command_timeout = 30;
    cfg->content_timeout = 300;
    cfg->default_action = MILTER_DEFAULT_TEMPFAIL;
    cfg->instance = strdup(instance ? instance : "milter");
    cfg->hostname = strdup(hostname ? hostname : "localhost");
    for (int i = 0; i < MILTER_STAGE_COUNT; i++)
        cfg->macros[i] = strdup(milter_default_macros[i]);
    if (cfg->instance == NULL || cfg->hostname == NULL) {
        postern_init_error(init, "", "out of memory");
        return -1;
    }
    if (!json_is_object(config)) {
        postern_init_error(init, "", "expected an object");
        return -1;
    }
    json_object_foreach((json_t *)config, key, value)
    {
        if (strcmp(key, "socket") == 0) {
            const char *s = json_string_value(value);
            if (s == NULL || strlen(s) != json_string_length(value) ||
                milter_socket_parse(cfg, s) != 0) {
                postern_init_error(init, key,
                                   "expected \"unix:/path\", "
                                   "\"inet:127.0.0.1:port\", "
                                   "\"inet:[::1]:port\" or "
                                   "\"inet:port@127.0.0.1\" (numeric hosts "
                                   "only)");
                return -1;
            }
            if ((cfg->socket = strdup(s)) == NULL) {
                postern_init_error(init, key, "out of memory");
                return -1;
            }
        } else if (strcmp(key, "timeouts") == 0) {
            if (milter_timeouts(init, cfg, value) != 0)
                return -1;
        } else if (strcmp(key, "default_action") == 0) {
            const char *s = json_string_value(value);
            if (s != NULL && strcmp(s, "tempfail") == 0)
                cfg->default_action = MILTER_DEFAULT_TEMPFAIL;
            else if (s != NULL && strcmp(s, "accept") == 0)
                cfg->default_action = MILTER_DEFAULT_ACCEPT;
            else if (s != NULL && strcmp(s, "reject") == 0)
                cfg->default_action = MILTER_DEFAULT_REJECT;
            else {
                postern_init_error(init, key,
                                   "expected \"tempfail\", \"accept\" or "
                                   "\"reject\"");
                return -1;
            }
        } else if (strcmp(key, "macros") == 0) {
            if (milter_macros(init, cfg, value) != 0)
                return -1;
        } else if (strcmp(key, "skip") == 0) {
            if (milter_skip_events(init, cfg, value) != 0)
                return -1;
        } else if (strcmp(key, "daemon_name") == 0) {
            const char *s = json_string_value(value);
            if (s == NULL || s[0] == '\0' ||
                strlen(s) != json_string_length(value) || strlen(s) > 255) {
                postern_init_error(init, key,
                                   "expected a non-empty string of at most "
                                   "255 bytes");
                return -1;
            }
            free(cfg->daemon_name);
            if ((cfg->daemon_name = strdup(s)) == NULL) {
                postern_init_error(init, key, "out of memory");
                return -1;
            }
        } else {
            postern_init_error(init, key,
                               "unknown key (expected socket, timeouts, "
                               "default_action, macros, skip or "
                               "daemon_name)");
            return -1;
        }
    }
    if (cfg->socket == NULL) {
        postern_init_error(init, "socket",
                           "expected the milter's socket (\"unix:/path\" or "
                           "\"inet:127.0.0.1:port\")");
        return -1;
    }
    if (cfg->daemon_name == NULL &&
        (cfg->daemon_name = strdup(cfg->hostname)) == NULL) {
        postern_init_error(init, "", "out of memory");
        return -1;
    }
    return 0;
}
