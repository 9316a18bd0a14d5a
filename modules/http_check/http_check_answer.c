/*
 * http_check_answer.c - what the policy service decided: its JSON answer,
 * checked strictly, as a hook result with its reply and headers.
 *
 * An answer the module does not fully understand is not half applied: an
 * unknown key or action, a reply code or enhanced code whose class does
 * not fit the action, or a header that could not be added as given makes
 * the whole answer a service failure, which the caller handles with
 * on_error.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_check.h"

static const struct {
    const char *name;
    postern_result result;
    int code_class; /* first digit of a code the action may carry; 0: none */
} http_check_actions[] = {
    {"continue", POSTERN_CONTINUE, 0},     {"accept", POSTERN_ACCEPT, 2},
    {"reject", POSTERN_REJECT, 5},         {"tempfail", POSTERN_TEMPFAIL, 4},
    {"disconnect", POSTERN_DISCONNECT, 4},
};

static int http_check_fail(char *error, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
http_check_fail(char *error, size_t size, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(error, size, fmt, ap);
    va_end(ap);
    return -1;
}

/* "4.7.1": a class digit, then subject and detail of 1 to 3 digits
 * (RFC 3463). */
static bool
http_check_enhanced_valid(const char *s, int code_class)
{
    if (s[0] != '0' + code_class || s[1] != '.')
        return false;
    s += 2;
    for (int part = 0; part < 2; part++) {
        size_t n = 0;
        while (s[n] >= '0' && s[n] <= '9')
            n++;
        if (n < 1 || n > 3)
            return false;
        s += n;
        if (part == 0 && *s++ != '.')
            return false;
    }
    return *s == '\0';
}

/* A JSON string without NUL bytes, at most max bytes; NULL otherwise. */
static const char *
http_check_string(const json_t *v, size_t max)
{
    const char *s = json_string_value(v);

    if (s == NULL || strlen(s) != json_string_length(v) || strlen(s) > max)
        return NULL;
    return s;
}

static bool
http_check_header_name_valid(const char *s)
{
    if (s[0] == '\0')
        return false;
    for (; *s; s++)
        if ((unsigned char)*s < 33 || (unsigned char)*s > 126 || *s == ':')
            return false;
    return true;
}

/* A header value: one line, no control bytes but tab (UTF-8 is kept as
 * is: the message may be SMTPUTF8). */
static bool
http_check_header_value_valid(const char *s)
{
    for (; *s; s++)
        if (((unsigned char)*s < 32 && *s != '\t') || *s == 127)
            return false;
    return true;
}

static int
http_check_headers(const json_t *v, postern_hook hook,
                   struct http_check_answer *answer, char *error, size_t size)
{
    if (!json_is_array(v) || json_array_size(v) > HTTP_CHECK_MAX_HEADERS)
        return http_check_fail(error, size,
                               "headers: expected an array of at most %d "
                               "{\"name\", \"value\"} objects",
                               HTTP_CHECK_MAX_HEADERS);
    if (json_array_size(v) > 0 &&
        (hook == POSTERN_HOOK_CONNECT || hook == POSTERN_HOOK_HELO))
        return http_check_fail(error, size,
                               "headers: no message to add them to at the "
                               "%s stage (mail to message only)",
                               postern_hook_name(hook));
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *item = json_array_get(v, i);
        const char *name = http_check_string(json_object_get(item, "name"),
                                             HTTP_CHECK_MAX_HEADER_NAME);
        const char *value = http_check_string(json_object_get(item, "value"),
                                              HTTP_CHECK_MAX_HEADER_VALUE);
        if (!json_is_object(item) || json_object_size(item) != 2 ||
            name == NULL || !http_check_header_name_valid(name) ||
            value == NULL || !http_check_header_value_valid(value))
            return http_check_fail(
                error, size,
                "headers[%zu]: expected {\"name\": a field name of printable "
                "ASCII but ':', at most %d bytes, \"value\": one line of at "
                "most %d bytes}",
                i, HTTP_CHECK_MAX_HEADER_NAME, HTTP_CHECK_MAX_HEADER_VALUE);
        struct http_check_header *h = &answer->headers[answer->n_headers];
        h->name = strdup(name);
        h->value = strdup(value);
        answer->n_headers++; /* what clear frees, also on failure */
        if (h->name == NULL || h->value == NULL)
            return http_check_fail(error, size, "out of memory");
    }
    return 0;
}

int
http_check_answer_parse(const char *body, size_t len, postern_hook hook,
                        struct http_check_answer *answer, char *error,
                        size_t size)
{
    json_error_t jerr;
    const char *key;
    json_t *v;
    int rc = -1;
    int code_class = 0;

    memset(answer, 0, sizeof *answer);
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return http_check_fail(error, size, "not JSON: %s (line %d, column %d)",
                               jerr.text, jerr.line, jerr.column);
    if (!json_is_object(root)) {
        http_check_fail(error, size, "expected a JSON object");
        goto out;
    }
    /* The action first: the class of the code depends on it. */
    const char *action = json_string_value(json_object_get(root, "action"));
    size_t i = 0;
    while (action != NULL &&
           i < sizeof http_check_actions / sizeof http_check_actions[0] &&
           strcmp(action, http_check_actions[i].name) != 0)
        i++;
    if (action == NULL ||
        i == sizeof http_check_actions / sizeof http_check_actions[0]) {
        http_check_fail(error, size,
                        "action: expected \"continue\", \"accept\", "
                        "\"reject\", \"tempfail\" or \"disconnect\"");
        goto out;
    }
    answer->result = http_check_actions[i].result;
    answer->action = http_check_actions[i].name;
    code_class = http_check_actions[i].code_class;

    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "action") == 0)
            continue;
        if (strcmp(key, "code") == 0) {
            json_int_t code = json_integer_value(v);
            bool ok = json_is_integer(v) && code_class != 0 &&
                      code / 100 == code_class && code >= 200 && code <= 599;
            if (answer->result == POSTERN_DISCONNECT)
                ok = ok && code == 421;
            if (!ok) {
                if (code_class == 0)
                    http_check_fail(error, size,
                                    "code: not allowed with \"%s\"", action);
                else if (answer->result == POSTERN_DISCONNECT)
                    http_check_fail(error, size,
                                    "code: expected 421 with \"disconnect\"");
                else
                    http_check_fail(error, size,
                                    "code: expected a %dxx reply code with "
                                    "\"%s\"",
                                    code_class, action);
                goto out;
            }
            answer->code = (int)code;
        } else if (strcmp(key, "enhanced") == 0) {
            const char *s = http_check_string(v, sizeof answer->enhanced - 1);
            if (code_class == 0 || s == NULL ||
                !http_check_enhanced_valid(s, code_class)) {
                if (code_class == 0)
                    http_check_fail(error, size,
                                    "enhanced: not allowed with \"%s\"",
                                    action);
                else
                    http_check_fail(error, size,
                                    "enhanced: expected an enhanced status "
                                    "code of class %d (\"%d.7.1\") with "
                                    "\"%s\"",
                                    code_class, code_class, action);
                goto out;
            }
            snprintf(answer->enhanced, sizeof answer->enhanced, "%s", s);
        } else if (strcmp(key, "text") == 0) {
            const char *s = http_check_string(v, HTTP_CHECK_MAX_TEXT);
            if (s == NULL || !http_check_header_value_valid(s)) {
                http_check_fail(error, size,
                                "text: expected one line of at most %d bytes",
                                HTTP_CHECK_MAX_TEXT);
                goto out;
            }
            snprintf(answer->text, sizeof answer->text, "%s", s);
        } else if (strcmp(key, "headers") == 0) {
            if (http_check_headers(v, hook, answer, error, size) != 0)
                goto out;
        } else {
            http_check_fail(error, size,
                            "%.40s: unknown key (expected action, code, "
                            "enhanced, text or headers)",
                            key);
            goto out;
        }
    }
    rc = 0;
out:
    json_decref(root);
    if (rc != 0)
        http_check_answer_clear(answer);
    return rc;
}

void
http_check_answer_clear(struct http_check_answer *answer)
{
    for (size_t i = 0; i < answer->n_headers; i++) {
        free(answer->headers[i].name);
        free(answer->headers[i].value);
    }
    answer->n_headers = 0;
}
