/*
 * fuzz_http_check.c - libFuzzer harness for the http_check module's
 * parsers of untrusted bytes: a message's header section (from the SMTP
 * client, http_check_headers.c) and the policy service's answer
 * (http_check_answer.c).
 *
 * The input is parsed as a header section (cut there, and as the whole
 * message), made into a JSON string, and read as an answer at every
 * stage. Checked: every field has a valid name and a UTF-8 value that
 * serialises; no field is longer than the input; an accepted answer has
 * an action, a code and enhanced code of its class, a text and headers
 * within their limits, and headers only where a message will be. A broken
 * invariant aborts.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_check.h"

#define FUZZ_CHECK(cond)                                                       \
    do {                                                                       \
        if (!(cond))                                                           \
            abort();                                                           \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The one postern_ function the parsers call (for error texts). */
const char *
postern_hook_name(postern_hook hook)
{
    static const char *const names[] = {
        "connect", "helo",    "auth",  "mail",  "rcpt",
        "data",    "message", "store", "reset", "disconnect"};
    return (unsigned)hook < sizeof names / sizeof names[0] ? names[hook] : NULL;
}

static void
fuzz_headers(const char *s, size_t len, bool eof)
{
    bool complete = true;
    json_t *fields = http_check_parse_headers(s, len, eof, &complete);

    FUZZ_CHECK(fields != NULL && json_is_array(fields));
    if (eof)
        FUZZ_CHECK(complete);
    for (size_t i = 0; i < json_array_size(fields); i++) {
        json_t *f = json_array_get(fields, i);
        const char *name = json_string_value(json_object_get(f, "name"));
        json_t *value = json_object_get(f, "value");
        FUZZ_CHECK(name != NULL && name[0] != '\0' && strlen(name) <= len);
        for (const char *p = name; *p; p++)
            FUZZ_CHECK(*p > 32 && *p < 127 && *p != ':');
        FUZZ_CHECK(json_is_string(value));
        /* Each bad byte grows to 3 (U+FFFD). */
        FUZZ_CHECK(json_string_length(value) <= 3 * len);
    }
    char *text = json_dumps(fields, JSON_COMPACT);
    FUZZ_CHECK(text != NULL);
    free(text);
    json_decref(fields);
}

static void
fuzz_answer(const char *s, size_t len, postern_hook hook)
{
    struct http_check_answer a;
    char error[256];

    if (http_check_answer_parse(s, len, hook, &a, error, sizeof error) != 0) {
        FUZZ_CHECK(strlen(error) < sizeof error && a.n_headers == 0);
        return;
    }
    FUZZ_CHECK(a.action != NULL);
    int cls = 0;
    switch (a.result) {
    case POSTERN_CONTINUE:
        FUZZ_CHECK(a.code == 0 && a.enhanced[0] == '\0');
        break;
    case POSTERN_ACCEPT:
        cls = 2;
        break;
    case POSTERN_REJECT:
        cls = 5;
        break;
    case POSTERN_TEMPFAIL:
    case POSTERN_DISCONNECT:
        cls = 4;
        break;
    default:
        abort();
    }
    if (a.result == POSTERN_DISCONNECT)
        FUZZ_CHECK(a.code == 0 || a.code == 421);
    FUZZ_CHECK(a.code == 0 || a.code / 100 == cls);
    FUZZ_CHECK(a.enhanced[0] == '\0' || a.enhanced[0] == '0' + cls);
    FUZZ_CHECK(strlen(a.text) <= HTTP_CHECK_MAX_TEXT);
    FUZZ_CHECK(a.n_headers <= HTTP_CHECK_MAX_HEADERS);
    if (hook == POSTERN_HOOK_CONNECT || hook == POSTERN_HOOK_HELO)
        FUZZ_CHECK(a.n_headers == 0);
    for (size_t i = 0; i < a.n_headers; i++) {
        FUZZ_CHECK(a.headers[i].name[0] != '\0');
        FUZZ_CHECK(strpbrk(a.headers[i].value, "\r\n") == NULL);
    }
    http_check_answer_clear(&a);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const postern_hook hooks[] = {
        POSTERN_HOOK_CONNECT, POSTERN_HOOK_HELO, POSTERN_HOOK_MAIL,
        POSTERN_HOOK_RCPT,    POSTERN_HOOK_DATA, POSTERN_HOOK_MESSAGE};
    const char *s = (const char *)data;

    if (size > 65536)
        return 0;
    fuzz_headers(s, size, false);
    fuzz_headers(s, size, true);

    json_t *text = http_check_text(s, size);
    FUZZ_CHECK(text != NULL && json_is_string(text));
    json_decref(text);

    fuzz_answer(s, size, hooks[size % 6]);
    return 0;
}
