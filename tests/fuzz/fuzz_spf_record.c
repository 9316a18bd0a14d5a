/*
 * fuzz_spf_record.c - libFuzzer harness for modules/spf/spf_record.c: the
 * SPF record parser and the macro expander.
 *
 * The input is parsed as a record (as is, and behind "v=spf1 "), and
 * expanded as a domain-spec and as an explanation string against an IPv4
 * and an IPv6 client. Checked: the parser accepts only records whose
 * terms keep their grammar's promises (valid domain-specs that expand,
 * CIDR lengths in range); the expander fails exactly on the strings
 * spf_macro_valid() refuses, and a domain it returns is at most 253
 * characters unless it has no label left to drop. A broken invariant
 * aborts.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "spf_record.h"

#define FUZZ_CHECK(cond)                                                       \
    do {                                                                       \
        if (!(cond))                                                           \
            abort();                                                           \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fuzz_expand(const char *s, size_t len, const struct spf_macro_env *env)
{
    for (int explanation = 0; explanation < 2; explanation++) {
        char *out = NULL;
        spf_expand_status st = spf_macro_expand(s, len, env, explanation, &out);
        bool valid = spf_macro_valid(s, len, explanation);
        FUZZ_CHECK(st != SPF_EXPAND_NOMEM);
        FUZZ_CHECK((st == SPF_EXPAND_OK) == valid);
        FUZZ_CHECK((out != NULL) == valid);
        if (out == NULL)
            continue;
        size_t n = strlen(out);
        if (!explanation && n > 253)
            FUZZ_CHECK(memchr(out, '.', n - 253) == NULL);
        (void)spf_domain_valid(out);
        free(out);
    }
    (void)spf_macro_uses_p(s, len);
}

static void
fuzz_record(const char *s, size_t len, const struct spf_macro_env *env)
{
    struct spf_record *rec = NULL;
    char err[128];
    spf_parse_status st = spf_record_parse(s, len, &rec, err, sizeof err);

    FUZZ_CHECK(st != SPF_PARSE_NOMEM);
    FUZZ_CHECK((st == SPF_PARSE_OK) == (rec != NULL));
    if (rec == NULL) {
        FUZZ_CHECK(strlen(err) < sizeof err);
        return;
    }
    FUZZ_CHECK(spf_record_is_spf1(s, len));
    FUZZ_CHECK(rec->n_terms <= len);
    for (size_t i = 0; i < rec->n_terms; i++) {
        const struct spf_term *t = &rec->terms[i];
        FUZZ_CHECK(t->text != NULL && strlen(t->text) <= len);
        FUZZ_CHECK(t->cidr4 <= 32 && t->cidr6 <= 128);
        FUZZ_CHECK(t->qualifier == SPF_PASS || t->qualifier == SPF_FAIL ||
                   t->qualifier == SPF_SOFTFAIL || t->qualifier == SPF_NEUTRAL);
        if (t->mech == SPF_MECH_INCLUDE || t->mech == SPF_MECH_EXISTS)
            FUZZ_CHECK(t->domain_spec != NULL);
        if (t->mech == SPF_MECH_IP4)
            FUZZ_CHECK(t->ip.family == AF_INET);
        if (t->mech == SPF_MECH_IP6)
            FUZZ_CHECK(t->ip.family == AF_INET6);
        if (t->domain_spec != NULL) {
            size_t n = strlen(t->domain_spec);
            FUZZ_CHECK(n > 0 && spf_macro_valid(t->domain_spec, n, false));
            char *out = NULL;
            FUZZ_CHECK(spf_macro_expand(t->domain_spec, n, env, false, &out) ==
                       SPF_EXPAND_OK);
            free(out);
        }
    }
    if (rec->redirect != NULL)
        FUZZ_CHECK(
            spf_macro_valid(rec->redirect, strlen(rec->redirect), false));
    if (rec->exp != NULL)
        FUZZ_CHECK(spf_macro_valid(rec->exp, strlen(rec->exp), false));
    spf_record_free(rec);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct spf_ip ip4, ip6;
    const char *s = (const char *)data;

    if (size > 4096)
        return 0;
    FUZZ_CHECK(spf_ip_parse("192.0.2.1", &ip4) == 0);
    FUZZ_CHECK(spf_ip_parse("2001:db8::cb01", &ip6) == 0);
    struct spf_macro_env env = {.sender = "strong-bad@email.example.com",
                                .local = "strong-bad",
                                .sender_dom = "email.example.com",
                                .domain = "email.example.com",
                                .ip = (size & 1) ? &ip6 : &ip4,
                                .helo = "mx.example.org",
                                .ptr = (size & 2) ? "mx.example.org" : NULL,
                                .receiver =
                                    (size & 4) ? "mx.example.net" : NULL,
                                .now = 1700000000};

    fuzz_expand(s, size, &env);
    fuzz_record(s, size, &env);

    char *prefixed = malloc(size + 7);
    if (prefixed == NULL)
        return 0;
    memcpy(prefixed, "v=spf1 ", 7);
    memcpy(prefixed + 7, data, size);
    fuzz_record(prefixed, size + 7, &env);
    free(prefixed);

    /* A text form of an address, as spf_ip_parse() reads client IPs. */
    if (size < 64) {
        char buf[64];
        struct spf_ip ip;
        memcpy(buf, data, size);
        buf[size] = '\0';
        if (spf_ip_parse(buf, &ip) == 0)
            FUZZ_CHECK(ip.family == AF_INET || ip.family == AF_INET6);
    }
    return 0;
}
