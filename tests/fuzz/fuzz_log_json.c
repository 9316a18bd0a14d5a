/*
 * fuzz_log_json.c - libFuzzer harness for core/log_json.c.
 *
 * Input: the fields text of a log line (the key=value part, with values a
 * client or a module chose), the first byte picking the buffer size and
 * whether the line has a session and a worker. Invariants: the output is
 * NUL-terminated at the returned length, has no newline, and jansson
 * parses it as one object (valid UTF-8, valid escapes, no duplicate
 * member names). A broken invariant aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "log_json.h"

#define FUZZ_CHECK(cond)                                                       \
    do {                                                                       \
        if (!(cond))                                                           \
            abort();                                                           \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char out[8192];

    if (size == 0)
        return 0;
    size_t cap = 256 + (size_t)(data[0] & 0x3f) * 124; /* 256 .. 8068 */
    struct log_json_line l = {
        .time = (data[0] & 0x40) ? "2026-11-22T10:00:00.123Z" : NULL,
        .level = "info",
        .sid = (data[0] & 0x80) ? "0123456789abcdef" : NULL,
        .event = "fuzz",
        .fields = (const char *)data + 1,
        .fields_len = size - 1,
        .worker = (data[0] & 0x40) ? 7 : -1,
    };
    size_t n = log_json_format(out, cap, &l);
    FUZZ_CHECK(n < cap && out[n] == '\0' && strlen(out) == n);
    FUZZ_CHECK(!memchr(out, '\n', n));
    json_error_t err;
    json_t *j =
        json_loadb(out, n, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    FUZZ_CHECK(j && json_is_object(j));
    json_decref(j);
    return 0;
}
