/*
 * store_http_config.c - the store_http instance config: endpoints, secrets
 * (read from their files at start), TLS files, time limits and retries.
 * Every problem names its JSON path and what was expected.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store_http.h"

#define SH_SECRET_MAX 4096
#define SH_PENDING_LIMIT 600.0 /* the core's wait for a pending hook */

void
sh_config_free(struct store_http *mod)
{
    for (size_t i = 0; i < mod->n_urls; i++)
        free(mod->urls[i]);
    free(mod->urls);
    free(mod->token);
    if (mod->hmac_key != NULL)
        memset(mod->hmac_key, 0, mod->hmac_key_len);
    free(mod->hmac_key);
    free(mod->ca_file);
    free(mod->cert_file);
    free(mod->key_file);
    free(mod->gateway);
}

/* A non-empty string without NUL bytes, copied into *out. */
static int
sh_string(postern_module_init *init, const char *path, const json_t *value,
          const char *what, char **out)
{
    if (!json_is_string(value) || json_string_length(value) == 0 ||
        strlen(json_string_value(value)) != json_string_length(value)) {
        postern_init_error(init, path, "expected a non-empty string (%s)",
                           what);
        return -1;
    }
    free(*out);
    if ((*out = strdup(json_string_value(value))) == NULL) {
        postern_init_error(init, path, "out of memory");
        return -1;
    }
    return 0;
}

static int
sh_number(postern_module_init *init, const char *path, const json_t *value,
          double min, double max, double *out)
{
    double d = json_is_number(value) ? json_number_value(value) : -1.0;

    if (!json_is_number(value) || !(d > min) || d > max) {
        postern_init_error(init, path,
                           "expected a number of seconds over %g, at most %g",
                           min, max);
        return -1;
    }
    *out = d;
    return 0;
}

/* An endpoint: an http:// or https:// URL the HTTP service takes. */
static int
sh_url(postern_module_init *init, const char *path, const json_t *value,
       char **out)
{
    if (sh_string(init, path, value, "an http:// or https:// URL", out) != 0)
        return -1;
    postern_http_request *req = NULL;
    if ((strncmp(*out, "http://", 7) == 0 ||
         strncmp(*out, "https://", 8) == 0) &&
        strpbrk(*out, " \t\r\n") == NULL)
        req = postern_http_request_new("POST", *out);
    if (req == NULL) {
        postern_init_error(init, path, "expected an http:// or https:// URL");
        return -1;
    }
    postern_http_request_free(req);
    return 0;
}

static int
sh_urls(postern_module_init *init, const char *key, const json_t *value,
        struct store_http *mod)
{
    if (mod->n_urls > 0) {
        postern_init_error(init, key, "give either url or urls, not both");
        return -1;
    }
    if (strcmp(key, "url") == 0) {
        if ((mod->urls = calloc(1, sizeof *mod->urls)) == NULL) {
            postern_init_error(init, key, "out of memory");
            return -1;
        }
        mod->n_urls = 1;
        return sh_url(init, key, value, &mod->urls[0]);
    }
    if (!json_is_array(value) || json_array_size(value) == 0) {
        postern_init_error(init, key, "expected a non-empty array of URLs");
        return -1;
    }
    size_t n = json_array_size(value);
    if ((mod->urls = calloc(n, sizeof *mod->urls)) == NULL) {
        postern_init_error(init, key, "out of memory");
        return -1;
    }
    mod->n_urls = n;
    for (size_t i = 0; i < n; i++) {
        char path[64];
        snprintf(path, sizeof path, "urls[%zu]", i);
        if (sh_url(init, path, json_array_get(value, i), &mod->urls[i]) != 0)
            return -1;
    }
    return 0;
}

/* The contents of a secret file, without its trailing CR and LF. */
static int
sh_read_secret(postern_module_init *init, const char *key, const char *path,
               unsigned char **out, size_t *out_len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = malloc(SH_SECRET_MAX + 1);
    size_t n = 0;
    int err = 0;

    if (f == NULL || buf == NULL) {
        err = f == NULL ? errno : ENOMEM;
        goto fail;
    }
    n = fread(buf, 1, SH_SECRET_MAX + 1, f);
    if (ferror(f))
        err = errno ? errno : EIO;
    fclose(f);
    f = NULL;
    if (err != 0)
        goto fail;
    if (n > SH_SECRET_MAX) {
        postern_init_error(init, key, "%s: longer than %d bytes", path,
                           SH_SECRET_MAX);
        free(buf);
        return -1;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if (n == 0) {
        postern_init_error(init, key, "%s: empty", path);
        free(buf);
        return -1;
    }
    buf[n] = '\0';
    free(*out);
    *out = buf;
    *out_len = n;
    return 0;
fail:
    if (f != NULL)
        fclose(f);
    free(buf);
    postern_init_error(init, key, "cannot read %s: %s", path, strerror(err));
    return -1;
}

/* A bearer token goes into a header: visible ASCII only. */
static int
sh_check_token(postern_module_init *init, const char *key, const char *token)
{
    for (const unsigned char *p = (const unsigned char *)token; *p; p++)
        if (*p < 0x21 || *p > 0x7e) {
            postern_init_error(init, key,
                               "expected a token of visible ASCII characters "
                               "(no spaces, no line breaks)");
            return -1;
        }
    return 0;
}

static int
sh_readable(postern_module_init *init, const char *key, const char *path)
{
    if (access(path, R_OK) != 0) {
        postern_init_error(init, key, "cannot read %s: %s", path,
                           strerror(errno));
        return -1;
    }
    return 0;
}

static int
sh_key(postern_module_init *init, struct store_http *mod, const char *key,
       const json_t *value, int *seen_token, int *seen_hmac)
{
    if (strcmp(key, "url") == 0 || strcmp(key, "urls") == 0)
        return sh_urls(init, key, value, mod);
    if (strcmp(key, "token") == 0 || strcmp(key, "token_file") == 0) {
        if ((*seen_token)++) {
            postern_init_error(init, key,
                               "give either token or token_file, not both");
            return -1;
        }
        if (strcmp(key, "token") == 0)
            return sh_string(init, key, value, "a bearer token", &mod->token) ||
                   sh_check_token(init, key, mod->token);
        char *path = NULL;
        unsigned char *secret = NULL;
        size_t len;
        int rc = sh_string(init, key, value, "a file name", &path) ||
                 sh_read_secret(init, key, path, &secret, &len);
        free(path);
        mod->token = (char *)secret;
        return rc || sh_check_token(init, key, mod->token) ? -1 : 0;
    }
    if (strcmp(key, "hmac_key") == 0 || strcmp(key, "hmac_key_file") == 0) {
        if ((*seen_hmac)++) {
            postern_init_error(
                init, key, "give either hmac_key or hmac_key_file, not both");
            return -1;
        }
        char *text = NULL;
        int rc = sh_string(
            init, key, value,
            strcmp(key, "hmac_key") == 0 ? "a key" : "a file name", &text);
        if (rc == 0 && strcmp(key, "hmac_key") == 0) {
            mod->hmac_key = (unsigned char *)text;
            mod->hmac_key_len = strlen(text);
            return 0;
        }
        if (rc == 0)
            rc = sh_read_secret(init, key, text, &mod->hmac_key,
                                &mod->hmac_key_len);
        free(text);
        return rc;
    }
    if (strcmp(key, "ca_file") == 0)
        return sh_string(init, key, value, "a PEM file", &mod->ca_file) ||
               sh_readable(init, key, mod->ca_file);
    if (strcmp(key, "cert_file") == 0)
        return sh_string(init, key, value, "a PEM file", &mod->cert_file) ||
               sh_readable(init, key, mod->cert_file);
    if (strcmp(key, "key_file") == 0)
        return sh_string(init, key, value, "a PEM file", &mod->key_file) ||
               sh_readable(init, key, mod->key_file);
    if (strcmp(key, "timeout") == 0)
        return sh_number(init, key, value, 0.0, SH_PENDING_LIMIT,
                         &mod->timeout);
    if (strcmp(key, "deadline") == 0)
        return sh_number(init, key, value, 0.0, SH_PENDING_LIMIT - 30.0,
                         &mod->deadline);
    if (strcmp(key, "retry_delay") == 0) {
        if (json_is_number(value) && json_number_value(value) == 0.0) {
            mod->retry_delay = 0.0;
            return 0;
        }
        return sh_number(init, key, value, 0.0, 60.0, &mod->retry_delay);
    }
    if (strcmp(key, "retries") == 0) {
        if (!json_is_integer(value) || json_integer_value(value) < 0 ||
            json_integer_value(value) > 10) {
            postern_init_error(init, key, "expected an integer from 0 to 10");
            return -1;
        }
        mod->retries = (unsigned)json_integer_value(value);
        return 0;
    }
    postern_init_error(init, key,
                       "unknown key (expected url, urls, token, token_file, "
                       "hmac_key, hmac_key_file, ca_file, cert_file, "
                       "key_file, timeout, deadline, retries or "
                       "retry_delay)");
    return -1;
}

int
sh_config(postern_module_init *init, struct store_http *mod)
{
    const json_t *config = postern_init_config(init);
    int seen_token = 0, seen_hmac = 0;
    const char *key;
    json_t *value;

    mod->timeout = 30.0;
    mod->deadline = 60.0;
    mod->retries = 2;
    mod->retry_delay = 1.0;
    if (!json_is_object(config)) {
        postern_init_error(init, "", "expected an object");
        return -1;
    }
    json_object_foreach((json_t *)config, key, value)
    {
        if (sh_key(init, mod, key, value, &seen_token, &seen_hmac) != 0)
            return -1;
    }
    if (mod->n_urls == 0) {
        postern_init_error(init, "url",
                           "required: the endpoint (url, or urls for "
                           "several tried in order)");
        return -1;
    }
    if ((mod->cert_file == NULL) != (mod->key_file == NULL)) {
        postern_init_error(init, mod->cert_file ? "key_file" : "cert_file",
                           "required with %s: a client certificate needs "
                           "both",
                           mod->cert_file ? "cert_file" : "key_file");
        return -1;
    }
    const char *host = postern_init_hostname(init);
    if ((mod->gateway = strdup(host ? host : "")) == NULL) {
        postern_init_error(init, "", "out of memory");
        return -1;
    }
    return 0;
}
