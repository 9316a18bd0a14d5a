/*
 * log_value.c - the one escaping function for values in log lines (see
 * postern/log.h). Every value that comes from a client, a file or a module
 * goes through postern_log_value(), so no value can end its field and
 * start another ("bob\" result=accepted" stays one value).
 *
 * It has no other dependency than libc: the module unit tests link this
 * file into their fake core, so modules are tested with the real thing.
 */
#include <stddef.h>
#include <string.h>

#include "postern/log.h"

#define LOG_VALUE_RING 8    /* renderings alive at once, per thread */
#define LOG_VALUE_MAX 512   /* bytes of one rendering, NUL included */
#define LOG_VALUE_CUT "..." /* ends a value that was cut */

static _Thread_local char log_value_ring[LOG_VALUE_RING][LOG_VALUE_MAX];
static _Thread_local unsigned log_value_next;

const char *
postern_log_value_n(const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";

    if (!s)
        return "-";
    char *out = log_value_ring[log_value_next++ % LOG_VALUE_RING];
    /* Room for the cut mark, the closing quote and the NUL. */
    const size_t room = LOG_VALUE_MAX - (sizeof(LOG_VALUE_CUT) - 1) - 2;
    size_t n = 0;

    out[n++] = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[4];
        size_t k = 0;

        if (c == '"' || c == '\\') {
            esc[k++] = '\\';
            esc[k++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            esc[k++] = '\\';
            esc[k++] = 'x';
            esc[k++] = hex[c >> 4];
            esc[k++] = hex[c & 0xf];
        } else {
            esc[k++] = (char)c;
        }
        if (n + k > room) {
            memcpy(out + n, LOG_VALUE_CUT, sizeof(LOG_VALUE_CUT) - 1);
            n += sizeof(LOG_VALUE_CUT) - 1;
            break;
        }
        memcpy(out + n, esc, k);
        n += k;
    }
    out[n++] = '"';
    out[n] = '\0';
    return out;
}

const char *
postern_log_value(const char *s)
{
    return postern_log_value_n(s, s ? strlen(s) : 0);
}
