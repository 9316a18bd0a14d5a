/*
 * test_message_headers.c - the header section as a list of fields
 * (core/message_headers.c): where the section ends (empty line, a line that
 * is no field, the end of the message, bare LF), folded and obsolete
 * fields, parsing in pieces, byte-exact rendering, and the edits.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdbool.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "message_headers.h"

struct parsed {
    struct header_list list;
    header_parse_status status;
    size_t fields_len, sep_len;
};

static void
parse(struct parsed *p, const char *text, bool complete)
{
    memset(p, 0, sizeof(*p));
    p->status = header_list_parse(&p->list, text, strlen(text), complete,
                                  &p->fields_len, &p->sep_len);
}

/* The list rendered is exactly the first len bytes of text. */
static void
assert_renders(const struct header_list *l, bool more, const char *text,
               size_t len)
{
    size_t size = header_list_render_size(l, more);
    char *out = malloc(size + 1);
    assert_non_null(out);
    header_list_render(l, more, out);
    out[size] = '\0';
    assert_int_equal(size, len);
    assert_memory_equal(out, text, len);
    free(out);
}

static void
assert_rendered_text(const struct header_list *l, bool more, const char *want)
{
    assert_renders(l, more, want, strlen(want));
}

static void
test_folded(void **state)
{
    (void)state;
    const char *msg = "Subject: Hello\r\n  world\r\n"
                      "X-Empty:\r\n"
                      "X-Fold-First:\r\n\tvalue\r\n"
                      "To: a@example.com\r\n"
                      "\r\n"
                      "body: not a header\r\n";
    struct parsed p;
    parse(&p, msg, true);
    assert_int_equal(p.status, HEADER_PARSE_END);
    assert_int_equal(p.list.n, 4);
    assert_int_equal(p.sep_len, 2);
    assert_int_equal(p.fields_len, strstr(msg, "\r\n\r\n") + 2 - msg);
    struct header_field **f = p.list.fields;
    assert_string_equal(f[0]->name, "Subject");
    assert_string_equal(f[0]->raw_value, " Hello\r\n  world");
    assert_string_equal(f[0]->value, "Hello  world");
    assert_int_equal(f[0]->eol_len, 2);
    assert_string_equal(f[1]->name, "X-Empty");
    assert_string_equal(f[1]->raw_value, "");
    assert_string_equal(f[1]->value, "");
    assert_string_equal(f[2]->raw_value, "\r\n\tvalue");
    assert_string_equal(f[2]->value, "value");
    assert_string_equal(f[3]->value, "a@example.com");
    assert_renders(&p.list, true, msg, p.fields_len);
    header_list_free(&p.list);
}

/* No empty line: the section ends at the first line that is no field. */
static void
test_no_empty_line(void **state)
{
    (void)state;
    struct parsed p;
    parse(&p, "A: 1\r\nB: 2\r\nthis is body\r\nC: 3\r\n\r\n", true);
    assert_int_equal(p.status, HEADER_PARSE_END);
    assert_int_equal(p.list.n, 2);
    assert_int_equal(p.fields_len, 12);
    assert_int_equal(p.sep_len, 0);
    header_list_free(&p.list);

    /* A first line with a blank is no continuation of anything. */
    parse(&p, " A: 1\r\n\r\n", true);
    assert_int_equal(p.list.n, 0);
    assert_int_equal(p.fields_len, 0);
    assert_int_equal(p.sep_len, 0);
    header_list_free(&p.list);

    /* An mbox From_ line: no colon after the name. */
    parse(&p, "From a@example.com Mon Jan 1\r\nA: 1\r\n\r\n", true);
    assert_int_equal(p.list.n, 0);
    assert_int_equal(p.sep_len, 0);
    header_list_free(&p.list);

    /* The message starts with the empty line: no fields, all body. */
    parse(&p, "\r\nA: 1\r\n", true);
    assert_int_equal(p.list.n, 0);
    assert_int_equal(p.sep_len, 2);
    header_list_free(&p.list);

    /* Nothing at all. */
    parse(&p, "", true);
    assert_int_equal(p.status, HEADER_PARSE_END);
    assert_int_equal(p.list.n, 0);
    assert_int_equal(p.sep_len, 0);
    header_list_free(&p.list);
}

static void
test_bare_lf(void **state)
{
    (void)state;
    const char *msg = "A: 1\nB: x\n y\r\nC: z\n\nbody\n";
    struct parsed p;
    parse(&p, msg, true);
    assert_int_equal(p.list.n, 3);
    assert_int_equal(p.sep_len, 1);
    assert_int_equal(p.list.fields[0]->eol_len, 1);
    assert_string_equal(p.list.fields[1]->value, "x y");
    assert_int_equal(p.list.fields[1]->eol_len, 2);
    assert_renders(&p.list, true, msg, p.fields_len);
    header_list_free(&p.list);

    /* A CR that ends no line is part of the value. */
    parse(&p, "A: x\ry\r\n\r\n", true);
    assert_int_equal(p.list.n, 1);
    assert_string_equal(p.list.fields[0]->value, "x\ry");
    header_list_free(&p.list);
}

/* The message ends inside the header section. */
static void
test_headers_only(void **state)
{
    (void)state;
    struct parsed p;
    parse(&p, "A: 1\r\nB: 2\r\n", true);
    assert_int_equal(p.status, HEADER_PARSE_END);
    assert_int_equal(p.list.n, 2);
    assert_int_equal(p.fields_len, 12);
    assert_int_equal(p.sep_len, 0);
    header_list_free(&p.list);

    /* ... even inside a field without its line end */
    parse(&p, "A: 1\r\nB: 2\r\n more", true);
    assert_int_equal(p.list.n, 2);
    assert_int_equal(p.list.fields[1]->eol_len, 0);
    assert_string_equal(p.list.fields[1]->value, "2 more");
    assert_renders(&p.list, false, "A: 1\r\nB: 2\r\n more", 17);
    /* Something after it: the field gets its line end. */
    assert_rendered_text(&p.list, true, "A: 1\r\nB: 2\r\n more\r\n");
    assert_int_equal(header_list_insert(&p.list, 5, "C", "3"), 0);
    assert_rendered_text(&p.list, false, "A: 1\r\nB: 2\r\n more\r\nC: 3\r\n");
    header_list_free(&p.list);
}

static void
test_obsolete_syntax(void **state)
{
    (void)state;
    struct parsed p;
    parse(&p, "Subject : x\r\nX\t:y\r\nBad Name: z\r\n\r\n", true);
    assert_int_equal(p.list.n, 2);
    assert_string_equal(p.list.fields[0]->name, "Subject");
    assert_string_equal(p.list.fields[0]->value, "x");
    assert_string_equal(p.list.fields[1]->name, "X");
    assert_string_equal(p.list.fields[1]->raw_value, "y");
    assert_int_equal(p.sep_len, 0); /* "Bad Name" starts the body */
    assert_int_equal(header_list_find(&p.list, "subject", 0), 0);
    /* A change keeps the name as written, in the standard form. */
    assert_int_equal(header_list_replace(&p.list, 0, "new"), 0);
    assert_rendered_text(&p.list, true, "Subject: new\r\nX\t:y\r\n");
    header_list_free(&p.list);
}

/* Parsed in two pieces (MORE, then the rest), the result is the same as
 * in one, wherever the first piece ends. */
static void
test_pieces(void **state)
{
    (void)state;
    const char *msgs[] = {
        "Subject: Hello\r\n  world\r\nX: y\r\n\r\nbody\r\n",
        "A: 1\nB: x\n y\nC: z\n\nbody\n",
        "A: 1\r\nB: 2\r\nnot a field\r\n",
        "A: 1\r\nB: 2\r\n folded at the end",
        "A: 1\r\n\r",
    };
    for (size_t m = 0; m < sizeof(msgs) / sizeof(*msgs); m++) {
        const char *msg = msgs[m];
        size_t len = strlen(msg);
        struct parsed whole;
        parse(&whole, msg, true);
        for (size_t cut = 0; cut <= len; cut++) {
            struct header_list l = {0};
            size_t f1, s1, f2, s2;
            header_parse_status st =
                header_list_parse(&l, msg, cut, cut == len, &f1, &s1);
            if (st == HEADER_PARSE_MORE) {
                assert_true(f1 <= cut);
                st = header_list_parse(&l, msg + f1, len - f1, true, &f2, &s2);
                f1 += f2;
                s1 = s2;
            }
            assert_int_equal(st, HEADER_PARSE_END);
            assert_int_equal(f1, whole.fields_len);
            assert_int_equal(s1, whole.sep_len);
            assert_int_equal(l.n, whole.list.n);
            for (size_t i = 0; i < l.n; i++)
                assert_string_equal(l.fields[i]->value,
                                    whole.list.fields[i]->value);
            assert_renders(&l, f1 < len, msg, f1);
            header_list_free(&l);
        }
        header_list_free(&whole.list);
    }
}

static void
test_edits(void **state)
{
    (void)state;
    struct parsed p;
    parse(&p, "Received: one\r\nSubject: s\r\nreceived: two\r\nTo: t\r\n\r\n",
          true);
    struct header_list *l = &p.list;
    assert_int_equal(l->n, 4);

    /* nth, any case */
    assert_int_equal(header_list_find(l, "RECEIVED", 0), 0);
    assert_int_equal(header_list_find(l, "Received", 1), 2);
    assert_int_equal(header_list_find(l, "received", 2), SIZE_MAX);
    assert_int_equal(header_list_find(l, "Receive", 0), SIZE_MAX);

    assert_int_equal(header_list_insert(l, 0, "X-Top", "1"), 0);
    assert_int_equal(header_list_insert(l, 2, "X-Mid", "a\r\n\tb"), 0);
    assert_int_equal(header_list_insert(l, 100, "X-End", ""), 0);
    assert_int_equal(
        header_list_replace(l, header_list_find(l, "received", 1), "changed"),
        0);
    header_list_delete(l, header_list_find(l, "to", 0));
    assert_rendered_text(l, true,
                         "X-Top: 1\r\n"
                         "Received: one\r\n"
                         "X-Mid: a\r\n\tb\r\n"
                         "Subject: s\r\n"
                         "received: changed\r\n"
                         "X-End: \r\n");
    size_t mid = header_list_find(l, "x-mid", 0);
    assert_string_equal(l->fields[mid]->value, "a\tb");
    assert_string_equal(l->fields[mid]->raw_value, " a\r\n\tb");
    while (l->n > 0)
        header_list_delete(l, 0);
    assert_int_equal(header_list_render_size(l, true), 0);
    header_list_free(l);
}

static void
test_validation(void **state)
{
    (void)state;
    assert_true(header_name_valid("X-Ok_1"));
    assert_false(header_name_valid(""));
    assert_false(header_name_valid("X Bad"));
    assert_false(header_name_valid("X:Bad"));
    assert_false(header_name_valid("X\x7f"));
    assert_false(header_name_valid("X\xc3\xa9"));
    assert_true(header_value_valid(""));
    assert_true(header_value_valid("a\r\n b\r\n\tc"));
    assert_false(header_value_valid("a\nb"));
    assert_false(header_value_valid("a\r\nb"));
    assert_false(header_value_valid("a\rb"));
    assert_false(header_value_valid("a\r\n"));
    assert_int_equal(header_field_size("Ab", "cd"), 8);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_folded),
        cmocka_unit_test(test_no_empty_line),
        cmocka_unit_test(test_bare_lf),
        cmocka_unit_test(test_headers_only),
        cmocka_unit_test(test_obsolete_syntax),
        cmocka_unit_test(test_pieces),
        cmocka_unit_test(test_edits),
        cmocka_unit_test(test_validation),
    };
    return cmocka_run_group_tests_name("message_headers", tests, NULL, NULL);
}
