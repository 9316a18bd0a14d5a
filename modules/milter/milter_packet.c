/*
 * milter_packet.c - the milter protocol's packets: building the MTA's
 * commands, cutting the milter's byte stream into packets, and checking
 * each reply's data against its command before anything acts on it. All
 * of it is pure (no I/O), so the unit tests and the fuzz harness drive it
 * directly. A reply that does not fit its command exactly (a missing NUL,
 * bytes left over, a length over the limit) is garbage: the caller fails
 * the milter rather than guess.
 */
#include <stdlib.h>
#include <string.h>

#include "milter.h"

/* --- buffers -------------------------------------------------------------- */

void
milter_buf_free(struct milter_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

void
milter_buf_consume(struct milter_buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len) {
        b->off = b->len = 0;
    } else if (b->off > 65536 && b->off > b->len / 2) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
}

int
milter_buf_append(struct milter_buf *b, const void *data, size_t len)
{
    if (len > SIZE_MAX / 2 - b->len)
        return -1;
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len)
            cap *= 2;
        uint8_t *grown = realloc(b->data, cap);
        if (grown == NULL)
            return -1;
        b->data = grown;
        b->cap = cap;
    }
    if (len > 0)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

/* --- building commands ---------------------------------------------------- */

int
milter_packet_begin(struct milter_buf *b, char cmd, size_t *start)
{
    static const uint8_t zero[4];

    *start = b->len;
    if (milter_buf_append(b, zero, 4) != 0)
        return -1;
    return milter_buf_append(b, &cmd, 1);
}

int
milter_packet_add(struct milter_buf *b, const void *data, size_t len)
{
    return milter_buf_append(b, data, len);
}

int
milter_packet_add_str(struct milter_buf *b, const char *s)
{
    return milter_buf_append(b, s, strlen(s) + 1);
}

int
milter_packet_add_u16(struct milter_buf *b, uint16_t v)
{
    uint8_t be[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    return milter_buf_append(b, be, 2);
}

int
milter_packet_add_u32(struct milter_buf *b, uint32_t v)
{
    uint8_t be[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8),
                     (uint8_t)v};
    return milter_buf_append(b, be, 4);
}

int
milter_packet_end(struct milter_buf *b, size_t start)
{
    size_t n = b->len - start - 4; /* the command byte and the data */

    if (n > UINT32_MAX) {
        b->len = start;
        return -1;
    }
    b->data[start] = (uint8_t)(n >> 24);
    b->data[start + 1] = (uint8_t)(n >> 16);
    b->data[start + 2] = (uint8_t)(n >> 8);
    b->data[start + 3] = (uint8_t)n;
    return 0;
}

/* --- reading replies ------------------------------------------------------ */

static uint32_t
milter_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

milter_decode
milter_packet_decode(const uint8_t *in, size_t len, size_t max,
                     struct milter_packet *out, size_t *used)
{
    if (len < 4)
        return MILTER_DECODE_MORE;
    uint32_t n = milter_u32(in);
    if (n == 0 || n - 1 > max)
        return MILTER_DECODE_BAD;
    if (len - 4 < n)
        return MILTER_DECODE_MORE;
    out->cmd = (char)in[4];
    out->data = in + 5;
    out->len = n - 1;
    *used = 4 + (size_t)n;
    return MILTER_DECODE_OK;
}

/* A NUL-terminated string at *pos within data[0..len): it, with *pos moved
 * past its NUL; NULL when there is no NUL. */
static const char *
milter_take_str(const uint8_t *data, size_t len, size_t *pos)
{
    if (*pos >= len)
        return NULL;
    const uint8_t *nul = memchr(data + *pos, '\0', len - *pos);
    if (nul == NULL)
        return NULL;
    const char *s = (const char *)data + *pos;
    *pos = (size_t)(nul - data) + 1;
    return s;
}

static void
milter_stage_set(struct milter_optneg *o, uint32_t stage, const char *list)
{
    if (stage >= MILTER_STAGE_COUNT)
        return; /* a stage this version does not know: ignored */
    free(o->macros[stage]);
    o->macros[stage] = strdup(list);
}

int
milter_optneg_parse(const struct milter_packet *p, struct milter_optneg *o,
                    const char **why)
{
    memset(o, 0, sizeof *o);
    if (p->cmd != SMFIC_OPTNEG) {
        *why = "expected the answer to option negotiation";
        return -1;
    }
    if (p->len < 12) {
        *why = "option negotiation answer too short";
        return -1;
    }
    o->version = milter_u32(p->data);
    o->actions = milter_u32(p->data + 4);
    o->protocol = milter_u32(p->data + 8);
    size_t pos = 12;
    while (pos < p->len) {
        if (p->len - pos < 4) {
            *why = "truncated macro list in option negotiation";
            milter_optneg_free(o);
            return -1;
        }
        uint32_t stage = milter_u32(p->data + pos);
        pos += 4;
        const char *list = milter_take_str(p->data, p->len, &pos);
        if (list == NULL) {
            *why = "macro list without NUL in option negotiation";
            milter_optneg_free(o);
            return -1;
        }
        milter_stage_set(o, stage, list);
    }
    if (o->version < 2 || o->version > MILTER_VERSION) {
        *why = "unsupported protocol version";
        milter_optneg_free(o);
        return -1;
    }
    if ((o->actions & ~MILTER_ACTIONS_ALL) != 0) {
        *why = "asks for actions postern does not offer";
        milter_optneg_free(o);
        return -1;
    }
    return 0;
}

void
milter_optneg_free(struct milter_optneg *o)
{
    for (int i = 0; i < MILTER_STAGE_COUNT; i++) {
        free(o->macros[i]);
        o->macros[i] = NULL;
    }
}

int
milter_request_parse(const struct milter_packet *p, struct milter_request *r,
                     const char **why)
{
    size_t pos = 0;

    memset(r, 0, sizeof *r);
    r->cmd = p->cmd;
    switch (p->cmd) {
    case SMFIR_ACCEPT:
    case SMFIR_CONTINUE:
    case SMFIR_DISCARD:
    case SMFIR_REJECT:
    case SMFIR_TEMPFAIL:
    case SMFIR_PROGRESS:
    case SMFIR_SKIP:
    case SMFIR_SHUTDOWN:
    case SMFIR_CONN_FAIL:
        if (p->len != 0) {
            *why = "data after a reply that takes none";
            return -1;
        }
        return 0;
    case SMFIR_REPLYCODE:
        /* Text, NUL-terminated (libmilter sends the NUL). */
        if (p->len < 2 || p->data[p->len - 1] != '\0' ||
            memchr(p->data, '\0', p->len - 1) != NULL) {
            *why = "reply code text not one NUL-terminated string";
            return -1;
        }
        r->bytes = p->data;
        r->n_bytes = p->len - 1;
        return 0;
    case SMFIR_REPLBODY:
        r->bytes = p->data;
        r->n_bytes = p->len;
        return 0;
    case SMFIR_INSHEADER:
    case SMFIR_CHGHEADER:
        if (p->len < 4) {
            *why = "header request without an index";
            return -1;
        }
        r->index = milter_u32(p->data);
        pos = 4;
        /* fall through */
    case SMFIR_ADDHEADER:
        r->name = milter_take_str(p->data, p->len, &pos);
        r->value = milter_take_str(p->data, p->len, &pos);
        if (r->name == NULL || r->value == NULL || pos != p->len) {
            *why = "header request not name NUL value NUL";
            return -1;
        }
        if (r->name[0] == '\0') {
            *why = "header request with an empty name";
            return -1;
        }
        return 0;
    case SMFIR_ADDRCPT:
    case SMFIR_DELRCPT:
    case SMFIR_QUARANTINE:
        r->name = milter_take_str(p->data, p->len, &pos);
        if (r->name == NULL || pos != p->len) {
            *why = "request not one NUL-terminated string";
            return -1;
        }
        return 0;
    case SMFIR_ADDRCPT_PAR:
    case SMFIR_CHGFROM:
        r->name = milter_take_str(p->data, p->len, &pos);
        if (r->name != NULL && pos < p->len)
            r->value = milter_take_str(p->data, p->len, &pos);
        if (r->name == NULL || pos != p->len) {
            *why = "request not address NUL [arguments NUL]";
            return -1;
        }
        return 0;
    default:
        *why = "unknown reply";
        return -1;
    }
}

/* --- reply codes ---------------------------------------------------------- */

static bool
milter_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* An enhanced status code "c.sss.ddd" at s, of class cls: its length (up
 * to the space or end that follows), or 0. */
static size_t
milter_enhanced_len(const char *s, size_t len, char cls)
{
    size_t i = 0;

    if (len < 5 || s[0] != cls || s[1] != '.')
        return 0;
    i = 2;
    for (int part = 0; part < 2; part++) {
        size_t digits = 0;
        while (i < len && milter_digit(s[i]) && digits < 4) {
            i++;
            digits++;
        }
        if (digits < 1 || digits > 3)
            return 0;
        if (part == 0) {
            if (i >= len || s[i] != '.')
                return 0;
            i++;
        }
    }
    return i == len || s[i] == ' ' ? i : 0;
}

int
milter_replycode_parse(const char *text, size_t len,
                       struct milter_replycode *rc, const char **why)
{
    memset(rc, 0, sizeof *rc);
    size_t pos = 0;
    bool last = false;

    while (!last) {
        size_t end = pos;
        while (end < len && text[end] != '\n')
            end++;
        size_t next = end < len ? end + 1 : end;
        size_t line_len = end - pos;
        if (line_len > 0 && text[pos + line_len - 1] == '\r')
            line_len--;
        const char *line = text + pos;
        if (line_len < 3 || (line[0] != '4' && line[0] != '5') ||
            !milter_digit(line[1]) || !milter_digit(line[2])) {
            *why = "reply line without a 4xx or 5xx code";
            return -1;
        }
        int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + line[2] - '0';
        if (rc->n_lines == 0)
            rc->code = code;
        else if (code != rc->code) {
            *why = "reply lines with different codes";
            return -1;
        }
        char sep = line_len > 3 ? line[3] : ' ';
        if (sep != ' ' && sep != '-') {
            *why = "reply code not followed by a space or '-'";
            return -1;
        }
        last = sep == ' ';
        if (last != (next >= len)) {
            *why = last ? "reply text after its last line"
                        : "multi-line reply without a last line";
            return -1;
        }
        size_t t = line_len > 3 ? 4 : 3;
        size_t elen = milter_enhanced_len(line + t, line_len - t, line[0]);
        if (elen > 0 && rc->n_lines == 0 && elen < sizeof rc->enhanced) {
            memcpy(rc->enhanced, line + t, elen);
            rc->enhanced[elen] = '\0';
        }
        if (elen > 0) {
            t += elen;
            if (t < line_len)
                t++; /* the space after it */
        }
        if (rc->n_lines < MILTER_REPLY_LINES) {
            /* "%%" is Sendmail's escaped '%'; a lone '%' is dropped. */
            char *out = rc->lines[rc->n_lines];
            size_t k = 0;
            for (size_t i = t; i < line_len && k < MILTER_REPLY_TEXT - 1; i++) {
                if (line[i] == '%') {
                    if (i + 1 < line_len && line[i + 1] == '%')
                        i++;
                    else
                        continue;
                }
                out[k++] = line[i] == '\0' ? ' ' : line[i];
            }
            out[k] = '\0';
            rc->n_lines++;
        }
        pos = next;
    }
    return 0;
}

/* --- macro lists ---------------------------------------------------------- */

const char *
milter_macro_next(const char *list, char *out, size_t size, bool *bad)
{
    *bad = false;
    while (*list == ' ' || *list == ',' || *list == '\t')
        list++;
    if (*list == '\0')
        return NULL;
    size_t n = strcspn(list, " ,\t");
    const char *name = list;
    size_t name_len = n;
    if (name[0] == '{') {
        if (n < 3 || name[n - 1] != '}') {
            *bad = true;
            return NULL;
        }
        name++;
        name_len -= 2;
    }
    if (name_len == 0 || name_len >= size ||
        memchr(name, '{', name_len) != NULL ||
        memchr(name, '}', name_len) != NULL) {
        *bad = true;
        return NULL;
    }
    memcpy(out, name, name_len);
    out[name_len] = '\0';
    return list + n;
}
