/*
 * smtp_reply.c - SMTP reply formatting (see smtp_reply.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "smtp_reply.h"

#define REPLY_MAX 512 /* RFC 5321 4.5.3.1.5: reply line incl. CRLF */

static void
reply_put(struct conn *c, char *line, int n)
{
    if (n < 0)
        return;
    if (n > REPLY_MAX - 2)
        n = REPLY_MAX - 2;
    line[n++] = '\r';
    line[n++] = '\n';
    conn_write(c, line, (size_t)n);
}

void
smtp_reply(struct conn *c, int code, const char *enhanced, const char *fmt, ...)
{
    char line[REPLY_MAX + 1];
    va_list ap;
    int n;

    c->last_code = code;
    if (enhanced && *enhanced)
        n = snprintf(line, sizeof(line), "%d %s ", code, enhanced);
    else
        n = snprintf(line, sizeof(line), "%d ", code);
    va_start(ap, fmt);
    int k = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    if (k > 0)
        n += k;
    if (n > (int)sizeof(line) - 1)
        n = (int)sizeof(line) - 1;
    reply_put(c, line, n);
}

void
smtp_reply_lines(struct conn *c, int code, const char *const *lines, size_t n)
{
    char line[REPLY_MAX + 1];

    c->last_code = code;
    for (size_t i = 0; i < n; i++) {
        int k = snprintf(line, sizeof(line), "%d%c%s", code,
                         i + 1 < n ? '-' : ' ', lines[i]);
        if (k > (int)sizeof(line) - 1)
            k = (int)sizeof(line) - 1;
        reply_put(c, line, k);
    }
}

static void
reply_line(struct conn *c, int code, char mark, const char *enhanced,
           const char *sep, const char *text)
{
    char line[REPLY_MAX + 1];
    c->last_code = code;
    int n = snprintf(line, sizeof(line), "%d%c%s%s%s", code, mark, enhanced,
                     sep, text);
    if (n > (int)sizeof(line) - 1)
        n = (int)sizeof(line) - 1;
    reply_put(c, line, n);
}

int
smtp_reply_hook_code(const struct hook_reply *r, int default_code)
{
    /* A module's code counts only within the class the result implies. */
    return r && r->code / 100 == default_code / 100 ? r->code : default_code;
}

void
smtp_reply_hook(struct conn *c, const struct hook_reply *r, int default_code,
                const char *default_enhanced, const char *default_text)
{
    int code = smtp_reply_hook_code(r, default_code);
    const char *enhanced = default_enhanced;
    const char *text = default_text;

    if (r && r->enhanced[0] == '0' + default_code / 100)
        enhanced = r->enhanced;
    if (r && r->text[0])
        text = r->text;
    if (!r || r->n_more == 0) {
        smtp_reply(c, code, enhanced, "%s", text);
        return;
    }
    /* Multi-line (RFC 5321 4.2.1), the enhanced code on every line (RFC
     * 2034 4): "550-5.7.1 first", ..., "550 5.7.1 last". */
    const char *more = r->more;
    const char *sep = enhanced && *enhanced ? " " : "";
    const char *enh = enhanced ? enhanced : "";
    reply_line(c, code, '-', enh, sep, text);
    for (unsigned i = 0; i < r->n_more; i++) {
        reply_line(c, code, i + 1 < r->n_more ? '-' : ' ', enh, sep, more);
        more += strlen(more) + 1;
    }
}
