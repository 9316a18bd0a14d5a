/*
 * store_http_answer.c - what the endpoint's HTTP response means for the
 * message. A JSON object with an "action" decides whatever the status:
 * "reject" (5xx, permanent) or "defer"/"tempfail" (4xx). Otherwise a 2xx
 * status means stored, with the object's "id" (if any) for the 250 text,
 * and any other status is a failure worth trying again. Everything taken
 * from the answer into a reply is reduced to printable ASCII and bounded.
 */
#include <stdio.h>
#include <string.h>

#include "store_http.h"

/* Copy s into out (size bytes), keeping printable ASCII (spaces too when
 * allow_space), anything else as '?'. */
static void
sh_printable(const char *s, char *out, size_t size, int allow_space)
{
    size_t n = 0;

    for (; *s != '\0' && n + 1 < size; s++) {
        unsigned char c = (unsigned char)*s;
        int ok = (c > 0x20 && c < 0x7f) || (allow_space && c == ' ');
        out[n++] = ok ? (char)c : '?';
    }
    out[n] = '\0';
}

/* "x.y.z" with x the class digit, each part at most 3 digits. */
static int
sh_enhanced_ok(const char *s, char class_digit)
{
    unsigned a, b, c;
    int end = 0;

    if (s == NULL || s[0] != class_digit || strlen(s) > 11)
        return 0;
    return sscanf(s, "%u.%3u.%3u%n", &a, &b, &c, &end) == 3 && s[end] == '\0' &&
           s[1] == '.';
}

/* The code, enhanced code and text of a reject or defer answer. */
static void
sh_answer_reply(json_t *obj, char class_digit, struct sh_answer *a)
{
    json_t *code = json_object_get(obj, "code");
    json_t *enhanced = json_object_get(obj, "enhanced");
    json_t *text = json_object_get(obj, "text");
    int low = class_digit == '5' ? 500 : 400;

    a->code = class_digit == '5' ? 550 : 451;
    snprintf(a->enhanced, sizeof a->enhanced, "%c.7.1", class_digit);
    if (json_is_integer(code) && json_integer_value(code) >= low &&
        json_integer_value(code) < low + 100)
        a->code = (int)json_integer_value(code);
    if (json_is_string(enhanced) &&
        sh_enhanced_ok(json_string_value(enhanced), class_digit))
        snprintf(a->enhanced, sizeof a->enhanced, "%s",
                 json_string_value(enhanced));
    if (json_is_string(text) && json_string_length(text) > 0)
        sh_printable(json_string_value(text), a->text, sizeof a->text, 1);
    else
        snprintf(a->text, sizeof a->text, "%s",
                 class_digit == '5' ? "Message refused"
                                    : "Message deferred, try again later");
}

void
sh_answer_read(int status, const char *body, size_t len, struct sh_answer *a)
{
    json_t *obj = body != NULL && len > 0
                      ? json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL)
                      : NULL;
    json_t *action = json_object_get(obj, "action");
    const char *verb = json_is_string(action) ? json_string_value(action) : "";

    memset(a, 0, sizeof *a);
    if (strcmp(verb, "reject") == 0) {
        a->verdict = SH_REJECTED;
        sh_answer_reply(obj, '5', a);
    } else if (strcmp(verb, "defer") == 0 || strcmp(verb, "tempfail") == 0) {
        a->verdict = SH_DEFERRED;
        sh_answer_reply(obj, '4', a);
    } else if (status >= 200 && status < 300) {
        a->verdict = SH_STORED;
        json_t *id = json_object_get(obj, "id");
        if (json_is_string(id))
            sh_printable(json_string_value(id), a->id, sizeof a->id, 0);
        else if (json_is_integer(id))
            snprintf(a->id, sizeof a->id, "%lld",
                     (long long)json_integer_value(id));
    } else {
        a->verdict = SH_FAILED;
    }
    json_decref(obj);
}
