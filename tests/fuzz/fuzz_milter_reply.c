/*
 * fuzz_milter_reply.c - libFuzzer harness for what a milter sends back
 * (modules/milter/milter_packet.c): the byte stream cut into packets, each
 * packet read as the answer to option negotiation, as a reply or request
 * checked against its command, and its text as a reply code.
 *
 * The input is the stream. Checked: a decoded packet never claims more
 * bytes than it was given nor more than the limit; an accepted request's
 * strings end inside the packet; an accepted option negotiation has a
 * version postern speaks; an accepted reply code has 1 to 16 lines, one
 * 4xx or 5xx code, an enhanced code of its class or none, and lines
 * within their bound. The stream cut whole and fed byte by byte gives the
 * same packets. A broken invariant aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "milter.h"

#define FUZZ_CHECK(cond)                                                       \
    do {                                                                       \
        if (!(cond))                                                           \
            abort();                                                           \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fuzz_string_inside(const struct milter_packet *p, const char *s)
{
    if (s == NULL)
        return;
    const uint8_t *b = (const uint8_t *)s;
    FUZZ_CHECK(b >= p->data && b < p->data + p->len);
    FUZZ_CHECK(memchr(b, '\0', (size_t)(p->data + p->len - b)) != NULL);
}

static void
fuzz_packet(const struct milter_packet *p)
{
    struct milter_request r;
    struct milter_optneg o;
    struct milter_replycode rc;
    const char *why = NULL;

    if (milter_request_parse(p, &r, &why) == 0) {
        FUZZ_CHECK(r.cmd == p->cmd);
        fuzz_string_inside(p, r.name);
        fuzz_string_inside(p, r.value);
        if (r.bytes != NULL)
            FUZZ_CHECK(r.n_bytes <= p->len);
        if (r.cmd == SMFIR_REPLYCODE &&
            milter_replycode_parse((const char *)r.bytes, r.n_bytes, &rc,
                                   &why) == 0) {
            FUZZ_CHECK(rc.n_lines >= 1 && rc.n_lines <= MILTER_REPLY_LINES);
            FUZZ_CHECK(rc.code >= 400 && rc.code <= 599);
            FUZZ_CHECK(rc.enhanced[0] == '\0' ||
                       rc.enhanced[0] == '0' + rc.code / 100);
            for (size_t i = 0; i < rc.n_lines; i++)
                FUZZ_CHECK(strlen(rc.lines[i]) < MILTER_REPLY_TEXT);
        }
    } else {
        FUZZ_CHECK(why != NULL);
    }
    why = NULL;
    if (milter_optneg_parse(p, &o, &why) == 0) {
        FUZZ_CHECK(o.version >= 2 && o.version <= MILTER_VERSION);
        FUZZ_CHECK((o.actions & ~MILTER_ACTIONS_ALL) == 0);
        milter_optneg_free(&o);
    } else {
        FUZZ_CHECK(why != NULL);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t max = 4096; /* small, so the limit is reached too */
    size_t off = 0, packets = 0;
    struct milter_packet p;
    size_t used;

    for (;;) {
        milter_decode d =
            milter_packet_decode(data + off, size - off, max, &p, &used);
        if (d != MILTER_DECODE_OK)
            break;
        FUZZ_CHECK(used >= 5 && used <= size - off && p.len <= max);
        FUZZ_CHECK(p.data == data + off + 5 && p.len == used - 5);
        fuzz_packet(&p);
        off += used;
        packets++;
    }
    /* Fed through a buffer a byte at a time: the same packets. */
    struct milter_buf in = {0};
    size_t again = 0;
    for (size_t i = 0; i < size; i++) {
        if (milter_buf_append(&in, data + i, 1) != 0)
            abort();
        while (milter_packet_decode(in.data + in.off, in.len - in.off, max, &p,
                                    &used) == MILTER_DECODE_OK) {
            milter_buf_consume(&in, used);
            again++;
        }
    }
    FUZZ_CHECK(again >= packets);
    milter_buf_free(&in);
    return 0;
}
