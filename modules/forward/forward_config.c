/*
 * forward_config.c - the forward module's configuration and its routes.
 *
 * Every route URL is checked with libcurl's own URL parser (the one that
 * will use it), must be smtp:// or smtps:// with a host and nothing but an
 * optional port, and is rewritten once, here, into the URL libcurl gets:
 * its path carries the name the module gives in EHLO. Route keys are kept
 * lowercase in a sorted array, so a recipient's route costs a few binary
 * searches: its domain, each parent as ".parent", then "*".
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "forward.h"

#define FW_DEFAULT_TIMEOUT 60.0
/* Below the 10 minutes a session waits for a pending hook (and a client
 * for the reply to its data), so the client hears our answer. */
#define FW_MAX_TIMEOUT 540.0
#define FW_DEFAULT_CONCURRENCY 16
#define FW_MAX_CONCURRENCY 256
#define FW_MAX_DOMAIN 253
#define FW_MAX_SECRET 4096

static char *
fw_lowercase(const char *s)
{
    char *copy = strdup(s);

    for (char *p = copy; p != NULL && *p != '\0'; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return copy;
}

/* A domain name: labels of letters, digits, '-', '_' or UTF-8 bytes, 1 to
 * 63 bytes each, at most FW_MAX_DOMAIN bytes. */
static bool
fw_domain_valid(const char *s)
{
    size_t len = strlen(s), label = 0;

    if (len == 0 || len > FW_MAX_DOMAIN)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '_' || c >= 0x80) ||
            ++label > 63)
            return false;
    }
    return label > 0;
}

/* "*", "example.org", ".example.org" (its subdomains) or an address
 * literal "[192.0.2.1]". */
static bool
fw_route_key_valid(const char *key)
{
    size_t len = strlen(key);

    if (strcmp(key, "*") == 0)
        return true;
    if (len > 2 && key[0] == '[' && key[len - 1] == ']')
        return strcspn(key + 1, "[]@ \t\r\n") == len - 2;
    return fw_domain_valid(key[0] == '.' ? key + 1 : key);
}

/* The EHLO name: a domain name or an address literal. */
static bool
fw_helo_valid(const char *s)
{
    size_t len = strlen(s);

    if (len > 2 && s[0] == '[' && s[len - 1] == ']')
        return strcspn(s + 1, "[]@ \t\r\n") == len - 2;
    return fw_domain_valid(s);
}

/* Build route->curl_url and route->peer from the configured URL. 0, or -1
 * with *why set. */
static int
fw_route_url(struct fw_route *route, const char *helo, const char **why)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
    char *user = NULL, *query = NULL, *fragment = NULL, *options = NULL;
    int rc = -1;

    *why = "out of memory";
    if (u == NULL)
        return -1;
    *why = "expected a URL such as \"smtp://192.0.2.25:25\" or "
           "\"smtps://mx.example.org\"";
    if (curl_url_set(u, CURLUPART_URL, route->url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) !=
            CURLUE_OK ||
        host[0] == '\0')
        goto out;
    if (strcmp(scheme, "smtp") != 0 && strcmp(scheme, "smtps") != 0) {
        *why = "expected an smtp:// or smtps:// URL";
        goto out;
    }
    curl_url_get(u, CURLUPART_USER, &user, 0);
    curl_url_get(u, CURLUPART_OPTIONS, &options, 0);
    curl_url_get(u, CURLUPART_QUERY, &query, 0);
    curl_url_get(u, CURLUPART_FRAGMENT, &fragment, 0);
    curl_url_get(u, CURLUPART_PATH, &path, 0);
    if (user != NULL || options != NULL) {
        *why = "expected no user name in the URL (credentials go in "
               "\"auth\")";
        goto out;
    }
    if (query != NULL || fragment != NULL ||
        (path != NULL && strcmp(path, "/") != 0 && path[0] != '\0')) {
        *why = "expected no path, query or fragment in the URL (the EHLO "
               "name is \"helo\")";
        goto out;
    }
    /* libcurl takes the EHLO name from the URL's path. */
    char *helo_path = NULL;
    if (asprintf(&helo_path, "/%s", helo) < 0) {
        *why = "out of memory";
        goto out;
    }
    CURLUcode set = curl_url_set(u, CURLUPART_PATH, helo_path, 0);
    free(helo_path);
    if (set != CURLUE_OK ||
        curl_url_get(u, CURLUPART_URL, &route->curl_url, 0) != CURLUE_OK ||
        asprintf(&route->peer, "%s:%s", host, port) < 0) {
        route->peer = NULL;
        *why = "out of memory";
        goto out;
    }
    route->implicit_tls = strcmp(scheme, "smtps") == 0;
    rc = 0;
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_free(user);
    curl_free(options);
    curl_free(query);
    curl_free(fragment);
    curl_url_cleanup(u);
    return rc;
}

static int
fw_route_compare(const void *a, const void *b)
{
    return strcmp(((const struct fw_route *)a)->key,
                  ((const struct fw_route *)b)->key);
}

static const struct fw_route *
fw_route_find(const struct fw_config *cfg, const char *key)
{
    struct fw_route needle = {.key = (char *)key};

    return bsearch(&needle, cfg->routes, cfg->n_routes, sizeof needle,
                   fw_route_compare);
}

const struct fw_route *
fw_route_for(const struct fw_config *cfg, const char *address)
{
    const char *at = address ? strrchr(address, '@') : NULL;
    char domain[FW_MAX_DOMAIN + 2];
    const struct fw_route *route;

    if (at != NULL && at[1] != '\0' && strlen(at + 1) <= FW_MAX_DOMAIN) {
        size_t len = strlen(at + 1);
        for (size_t i = 0; i < len; i++) {
            char c = at[1 + i];
            domain[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
        }
        if (len > 1 && domain[len - 1] == '.')
            len--;
        domain[len] = '\0';
        if ((route = fw_route_find(cfg, domain)) != NULL)
            return route;
        /* Parents, nearest first: "a.b.example.org" tries ".b.example.org",
         * ".example.org", ".org". An address literal has none. */
        for (const char *dot = strchr(domain, '.');
             domain[0] != '[' && dot != NULL; dot = strchr(dot + 1, '.'))
            if ((route = fw_route_find(cfg, dot)) != NULL)
                return route;
    }
    return fw_route_find(cfg, "*");
}

static int
fw_config_routes(postern_module_init *init, struct fw_config *cfg,
                 const json_t *value, const char *helo)
{
    const char *key;
    json_t *url;
    size_t n = json_object_size(value);

    if (!json_is_object(value) || n == 0) {
        postern_init_error(init, "routes",
                           "expected a non-empty object of domain: URL, e.g. "
                           "{\"example.org\": \"smtp://192.0.2.25\", \"*\": "
                           "\"smtp://127.0.0.1:10025\"}");
        return -1;
    }
    if ((cfg->routes = calloc(n, sizeof *cfg->routes)) == NULL) {
        postern_init_error(init, "routes", "out of memory");
        return -1;
    }
    json_object_foreach((json_t *)value, key, url)
    {
        char where[320];
        const char *why;
        struct fw_route *route = &cfg->routes[cfg->n_routes];

        snprintf(where, sizeof where, "routes.%.300s", key);
        if (!fw_route_key_valid(key)) {
            postern_init_error(init, where,
                               "expected a domain (\"example.org\"), its "
                               "subdomains (\".example.org\"), an address "
                               "literal (\"[192.0.2.1]\") or \"*\"");
            return -1;
        }
        if (!json_is_string(url) ||
            strlen(json_string_value(url)) != json_string_length(url)) {
            postern_init_error(init, where,
                               "expected a URL string such as "
                               "\"smtp://192.0.2.25:25\"");
            return -1;
        }
        cfg->n_routes++; /* what fw_config_free() frees */
        if ((route->key = fw_lowercase(key)) == NULL ||
            (route->url = strdup(json_string_value(url))) == NULL) {
            postern_init_error(init, where, "out of memory");
            return -1;
        }
        for (size_t i = 0; i + 1 < cfg->n_routes; i++)
            if (strcmp(cfg->routes[i].key, route->key) == 0) {
                postern_init_error(init, where,
                                   "the same domain as \"%s\" (keys compare "
                                   "without regard to case)",
                                   cfg->routes[i].key);
                return -1;
            }
        if (fw_route_url(route, helo, &why) != 0) {
            postern_init_error(init, where, "%s", why);
            return -1;
        }
    }
    qsort(cfg->routes, cfg->n_routes, sizeof *cfg->routes, fw_route_compare);
    return 0;
}

/* The first line of a file, without its line end. NULL with errno. */
static char *
fw_read_secret(const char *path)
{
    FILE *f = fopen(path, "re");
    char *buf = NULL;

    if (f == NULL)
        return NULL;
    buf = calloc(1, FW_MAX_SECRET + 2);
    if (buf == NULL || fgets(buf, FW_MAX_SECRET + 2, f) == NULL) {
        int err = buf == NULL ? ENOMEM : (ferror(f) ? EIO : ENODATA);
        free(buf);
        fclose(f);
        errno = err;
        return NULL;
    }
    fclose(f);
    size_t len = strcspn(buf, "\r\n");
    if (len > FW_MAX_SECRET || len == 0) {
        free(buf);
        errno = len == 0 ? ENODATA : EFBIG;
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

static bool
fw_is_text(const json_t *v)
{
    return json_is_string(v) && json_string_length(v) > 0 &&
           strlen(json_string_value(v)) == json_string_length(v);
}

static int
fw_config_auth(postern_module_init *init, struct fw_config *cfg,
               const json_t *value)
{
    const char *key;
    json_t *v;
    bool have_file = false;

    if (!json_is_object(value)) {
        postern_init_error(init, "auth",
                           "expected an object {\"user\": ..., \"password\" "
                           "or \"password_file\": ...}");
        return -1;
    }
    json_object_foreach((json_t *)value, key, v)
    {
        char where[96];
        snprintf(where, sizeof where, "auth.%.80s", key);
        if (strcmp(key, "user") == 0) {
            if (!fw_is_text(v) || strpbrk(json_string_value(v), "\r\n")) {
                postern_init_error(init, where,
                                   "expected a non-empty string on one line");
                return -1;
            }
            free(cfg->user);
            if ((cfg->user = strdup(json_string_value(v))) == NULL) {
                postern_init_error(init, where, "out of memory");
                return -1;
            }
        } else if (strcmp(key, "password") == 0) {
            if (!fw_is_text(v) || strpbrk(json_string_value(v), "\r\n")) {
                postern_init_error(init, where,
                                   "expected a non-empty string on one line");
                return -1;
            }
            free(cfg->password);
            if ((cfg->password = strdup(json_string_value(v))) == NULL) {
                postern_init_error(init, where, "out of memory");
                return -1;
            }
        } else if (strcmp(key, "password_file") == 0) {
            if (!fw_is_text(v)) {
                postern_init_error(init, where,
                                   "expected a file name (its first line is "
                                   "the password)");
                return -1;
            }
            free(cfg->password);
            have_file = true;
            cfg->password = fw_read_secret(json_string_value(v));
            if (cfg->password == NULL) {
                postern_init_error(
                    init, where, "cannot read a password from %s: %s",
                    json_string_value(v),
                    errno == ENODATA ? "its first line is empty"
                    : errno == EFBIG ? "its first line is over 4096 bytes"
                                     : strerror(errno));
                return -1;
            }
        } else {
            postern_init_error(init, where,
                               "unknown key (expected user, password or "
                               "password_file)");
            return -1;
        }
    }
    if (have_file && json_object_get(value, "password") != NULL) {
        postern_init_error(init, "auth",
                           "expected \"password\" or \"password_file\", not "
                           "both");
        return -1;
    }
    if (cfg->user == NULL || cfg->password == NULL) {
        postern_init_error(init, "auth",
                           "expected \"user\" and \"password\" (or "
                           "\"password_file\")");
        return -1;
    }
    return 0;
}

static int
fw_config_keys(postern_module_init *init, struct fw_config *cfg,
               const json_t *config, bool *plaintext_auth)
{
    const char *key;
    json_t *value;

    json_object_foreach((json_t *)config, key, value)
    {
        if (strcmp(key, "routes") == 0 || strcmp(key, "helo") == 0) {
            continue; /* read first, by fw_config_parse() */
        } else if (strcmp(key, "starttls") == 0) {
            const char *s = json_string_value(value);
            if (s != NULL && strcmp(s, "opportunistic") == 0) {
                cfg->use_ssl = CURLUSESSL_TRY;
                cfg->verify = false;
            } else if (s != NULL && strcmp(s, "required") == 0) {
                cfg->use_ssl = CURLUSESSL_ALL;
                cfg->verify = true;
            } else if (s != NULL && strcmp(s, "off") == 0) {
                cfg->use_ssl = CURLUSESSL_NONE;
                cfg->verify = false;
            } else {
                postern_init_error(init, key,
                                   "expected \"opportunistic\", \"required\" "
                                   "or \"off\"");
                return -1;
            }
        } else if (strcmp(key, "auth") == 0) {
            if (fw_config_auth(init, cfg, value) != 0)
                return -1;
        } else if (strcmp(key, "allow_plaintext_auth") == 0) {
            if (!json_is_boolean(value)) {
                postern_init_error(init, key, "expected true or false");
                return -1;
            }
            *plaintext_auth = json_is_true(value);
        } else if (strcmp(key, "timeout") == 0) {
            double v = json_number_value(value);
            if (!json_is_number(value) || !isfinite(v) || !(v > 0) ||
                v > FW_MAX_TIMEOUT) {
                postern_init_error(init, key,
                                   "expected a number of seconds above 0, at "
                                   "most %g",
                                   FW_MAX_TIMEOUT);
                return -1;
            }
            cfg->timeout_ms = (long)(v * 1000.0 + 0.999);
        } else if (strcmp(key, "concurrency") == 0) {
            json_int_t n = json_integer_value(value);
            if (!json_is_integer(value) || n < 1 || n > FW_MAX_CONCURRENCY) {
                postern_init_error(init, key,
                                   "expected an integer from 1 to %d (worker "
                                   "threads)",
                                   FW_MAX_CONCURRENCY);
                return -1;
            }
            cfg->concurrency = (long)n;
        } else if (strcmp(key, "quarantine") == 0) {
            const char *s = json_string_value(value);
            if (s != NULL && strcmp(s, "header") == 0) {
                cfg->quarantine_refuse = false;
            } else if (s != NULL && strcmp(s, "refuse") == 0) {
                cfg->quarantine_refuse = true;
            } else {
                postern_init_error(init, key,
                                   "expected \"header\" or \"refuse\"");
                return -1;
            }
        } else if (strcmp(key, "ca_file") == 0) {
            if (!fw_is_text(value)) {
                postern_init_error(init, key, "expected a file name");
                return -1;
            }
            if (access(json_string_value(value), R_OK) != 0) {
                postern_init_error(init, key, "cannot read %s: %s",
                                   json_string_value(value), strerror(errno));
                return -1;
            }
            cfg->ca_file = strdup(json_string_value(value));
        } else {
            postern_init_error(init, key,
                               "unknown key (expected routes, starttls, auth, "
                               "allow_plaintext_auth, timeout, helo, "
                               "concurrency, ca_file or quarantine)");
            return -1;
        }
    }
    return 0;
}

int
fw_config_parse(postern_module_init *init, struct fw_config *cfg)
{
    const json_t *config = postern_init_config(init);
    const json_t *helo, *routes;
    bool plaintext_auth = false;

    cfg->use_ssl = CURLUSESSL_TRY;
    cfg->verify = false;
    cfg->timeout_ms = (long)(FW_DEFAULT_TIMEOUT * 1000.0);
    cfg->concurrency = FW_DEFAULT_CONCURRENCY;
    if (!json_is_object(config)) {
        postern_init_error(init, "", "expected an object");
        return -1;
    }
    helo = json_object_get(config, "helo");
    if (helo != NULL) {
        if (!fw_is_text(helo) || !fw_helo_valid(json_string_value(helo))) {
            postern_init_error(init, "helo",
                               "expected a domain name or an address literal "
                               "(\"[192.0.2.1]\")");
            return -1;
        }
        cfg->helo = strdup(json_string_value(helo));
    } else {
        const char *name = postern_init_hostname(init);
        cfg->helo =
            strdup(name != NULL && fw_helo_valid(name) ? name : "localhost");
    }
    if (cfg->helo == NULL) {
        postern_init_error(init, "helo", "out of memory");
        return -1;
    }
    routes = json_object_get(config, "routes");
    if (routes == NULL) {
        postern_init_error(init, "routes",
                           "required: where to forward, e.g. {\"*\": "
                           "\"smtp://127.0.0.1:10025\"}");
        return -1;
    }
    if (fw_config_routes(init, cfg, routes, cfg->helo) != 0 ||
        fw_config_keys(init, cfg, config, &plaintext_auth) != 0)
        return -1;
    if (json_object_get(config, "ca_file") && cfg->ca_file == NULL) {
        postern_init_error(init, "", "out of memory");
        return -1;
    }
    /* The password never crosses the network in clear unless the
     * operator said so: every route must be smtps:// or insist on
     * STARTTLS (libcurl would otherwise send AUTH without TLS to a next
     * hop that does not offer it). */
    for (size_t i = 0;
         cfg->user != NULL && !plaintext_auth && i < cfg->n_routes; i++) {
        const struct fw_route *r = &cfg->routes[i];
        if (!r->implicit_tls && cfg->use_ssl != CURLUSESSL_ALL) {
            postern_init_error(init, "auth",
                               "the password would cross the network in "
                               "clear to %s: set \"starttls\": \"required\", "
                               "use an smtps:// route, or set "
                               "\"allow_plaintext_auth\": true",
                               r->url);
            return -1;
        }
    }
    return 0;
}

void
fw_config_free(struct fw_config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->n_routes; i++) {
        free(cfg->routes[i].key);
        free(cfg->routes[i].url);
        curl_free(cfg->routes[i].curl_url);
        free(cfg->routes[i].peer);
    }
    free(cfg->routes);
    free(cfg->ca_file);
    free(cfg->user);
    if (cfg->password != NULL) {
        explicit_bzero(cfg->password, strlen(cfg->password));
        free(cfg->password);
    }
    free(cfg->helo);
    memset(cfg, 0, sizeof *cfg);
}
