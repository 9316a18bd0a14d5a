/*
 * fuzz_message_headers.c - libFuzzer harness for the header section parser
 * and its edits (core/message_headers.c).
 *
 * The first byte chooses a split point and the edits; the rest is a
 * message as stored. Checked, any failure aborts:
 * - parsed whole, the section ends inside the input, and the fields
 *   rendered give back the input's first bytes exactly;
 * - parsed in two pieces (MORE at the cut, then the rest), the result is
 *   the same;
 * - every name is a valid field name, no unfolded value holds a line end;
 * - after an insert, a change and a delete, the rendered list with an
 *   empty line after it parses again into the same fields.
 *
 *   clang -std=c11 -D_GNU_SOURCE -g -O1 \
 *       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
 *       -Icore core/message_headers.c tests/fuzz/fuzz_message_headers.c \
 *       -o fuzz_message_headers
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "message_headers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(int ok)
{
    if (!ok)
        abort();
}

static void
same_fields(const struct header_list *a, const struct header_list *b)
{
    check(a->n == b->n);
    for (size_t i = 0; i < a->n; i++) {
        check(strcmp(a->fields[i]->name, b->fields[i]->name) == 0);
        check(strcmp(a->fields[i]->value, b->fields[i]->value) == 0);
    }
}

static char *
render(const struct header_list *l, bool more, size_t extra, size_t *len)
{
    *len = header_list_render_size(l, more);
    char *out = malloc(*len + extra + 1);
    check(out != NULL);
    header_list_render(l, more, out);
    return out;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned choice = data[0];
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    struct header_list whole = {0}, pieces = {0}, again = {0};
    size_t fields_len, sep_len, f1, s1, f2, s2;

    if (header_list_parse(&whole, in, len, true, &fields_len, &sep_len) !=
        HEADER_PARSE_END)
        abort();
    check(fields_len + sep_len <= len);
    check(sep_len <= 2);
    for (size_t i = 0; i < whole.n; i++) {
        const struct header_field *f = whole.fields[i];
        /* a name with a NUL byte cannot happen: it would not be a name */
        check(header_name_valid(f->name));
        check(strchr(f->value, '\n') == NULL);
    }
    size_t out_len;
    char *out = render(&whole, fields_len < len, 0, &out_len);
    check(out_len == fields_len);
    check(memcmp(out, in, fields_len) == 0);
    free(out);

    /* In two pieces. */
    size_t cut = len ? (choice * 7919u) % (len + 1) : 0;
    header_parse_status st =
        header_list_parse(&pieces, in, cut, cut == len, &f1, &s1);
    if (st == HEADER_PARSE_MORE) {
        check(f1 <= cut);
        st = header_list_parse(&pieces, in + f1, len - f1, true, &f2, &s2);
        f1 += f2;
        s1 = s2;
    }
    check(st == HEADER_PARSE_END);
    check(f1 == fields_len && s1 == sep_len);
    same_fields(&whole, &pieces);

    /* Edits, then the rendered list parses into the same fields. */
    if (header_list_insert(&whole, choice % (whole.n + 1), "X-Fuzz",
                           "a\r\n\tb") < 0)
        abort();
    if (choice & 1)
        check(header_list_replace(&whole, 0, "changed") == 0);
    if ((choice & 2) && whole.n > 1)
        header_list_delete(&whole, whole.n - 1);
    out = render(&whole, true, 2, &out_len);
    memcpy(out + out_len, "\r\n", 2);
    if (header_list_parse(&again, out, out_len + 2, true, &f2, &s2) !=
        HEADER_PARSE_END)
        abort();
    check(f2 == out_len && s2 == 2);
    same_fields(&whole, &again);
    free(out);

    header_list_free(&whole);
    header_list_free(&pieces);
    header_list_free(&again);
    return 0;
}
