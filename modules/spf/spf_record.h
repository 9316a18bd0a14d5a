/*
 * spf_record.h - SPF records (RFC 7208 4.5, 4.6, 5, 6, 12) and macros
 * (RFC 7208 7): pure functions, no DNS, no postern API.
 *
 * spf_record_parse() reads one "v=spf1" record into terms; any syntax
 * error anywhere in it is a permerror (RFC 7208 4.6), so the evaluator
 * never meets a malformed term. spf_macro_expand() expands a domain-spec
 * or an explanation string against the values of one check_host() call.
 */
#ifndef POSTERN_SPF_RECORD_H
#define POSTERN_SPF_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The results of check_host() (RFC 7208 2.6), also the qualifiers. */
typedef enum spf_result {
    SPF_NONE,
    SPF_NEUTRAL,
    SPF_PASS,
    SPF_FAIL,
    SPF_SOFTFAIL,
    SPF_TEMPERROR,
    SPF_PERMERROR
} spf_result;
#define SPF_RESULT_COUNT 7

/* "none", "neutral", ... as RFC 7208 8 and 9.1 spell them. */
const char *spf_result_name(spf_result result);
/* The result named name (case-insensitive); -1 if none is. */
int spf_result_from_name(const char *name);

/* An address: AF_INET uses the first 4 bytes. */
struct spf_ip {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
};

/* Parse "192.0.2.1" or "2001:db8::1"; an IPv4-mapped IPv6 address becomes
 * IPv4. 0 or -1. */
int spf_ip_parse(const char *text, struct spf_ip *out);
/* True when the first prefix bits of a and b are equal (same family). */
bool spf_ip_match(const struct spf_ip *a, const struct spf_ip *b,
                  unsigned prefix);

typedef enum spf_mech {
    SPF_MECH_ALL,
    SPF_MECH_INCLUDE,
    SPF_MECH_A,
    SPF_MECH_MX,
    SPF_MECH_PTR,
    SPF_MECH_IP4,
    SPF_MECH_IP6,
    SPF_MECH_EXISTS
} spf_mech;

struct spf_term {
    spf_mech mech;
    spf_result qualifier; /* PASS, FAIL, SOFTFAIL or NEUTRAL */
    char *domain_spec;    /* include/exists always; a/mx/ptr may be NULL */
    unsigned cidr4;       /* a, mx, ip4: 0..32 (default 32) */
    unsigned cidr6;       /* a, mx, ip6: 0..128 (default 128) */
    struct spf_ip ip;     /* ip4, ip6 */
    char *text;           /* the term as written, for Received-SPF */
};

struct spf_record {
    struct spf_term *terms; /* the directives, in order */
    size_t n_terms;
    char *redirect; /* domain-spec, or NULL */
    char *exp;      /* domain-spec, or NULL */
};

/* True when text (len bytes) is an SPF record: "v=spf1" followed by a
 * space or the end (RFC 7208 4.5). */
bool spf_record_is_spf1(const char *text, size_t len);

typedef enum spf_parse_status {
    SPF_PARSE_OK,
    SPF_PARSE_SYNTAX, /* permerror; err says where */
    SPF_PARSE_NOMEM
} spf_parse_status;

/* Parse a record (spf_record_is_spf1() true). On SPF_PARSE_OK *out owns a
 * new record; otherwise *out is NULL and err (if given) holds a short
 * description. */
spf_parse_status spf_record_parse(const char *text, size_t len,
                                  struct spf_record **out, char *err,
                                  size_t err_size);
void spf_record_free(struct spf_record *record);

/* --- macros ---------------------------------------------------------------
 */

/* The values the macro letters expand to (RFC 7208 7.2). */
struct spf_macro_env {
    const char *sender;     /* s: local-part@domain, local-part filled in */
    const char *local;      /* l */
    const char *sender_dom; /* o */
    const char *domain;     /* d: the current domain */
    const struct spf_ip *ip;
    const char *helo;     /* h */
    const char *ptr;      /* p: the validated name, or NULL for "unknown" */
    const char *receiver; /* r: NULL for "unknown" */
    long long now;        /* t */
};

/* True when s (len bytes) is a valid macro-string; explanation allows the
 * letters c, r and t (RFC 7208 7.1). */
bool spf_macro_valid(const char *s, size_t len, bool explanation);
/* True when s uses the p macro (which needs DNS lookups to expand). */
bool spf_macro_uses_p(const char *s, size_t len);

typedef enum spf_expand_status {
    SPF_EXPAND_OK,
    SPF_EXPAND_SYNTAX,
    SPF_EXPAND_NOMEM
} spf_expand_status;

/* Expand s into a new NUL-terminated string (*out, to free). For a
 * domain-spec (explanation false) the result is shortened from the left,
 * label by label, to at most 253 characters (RFC 7208 7.3) and a trailing
 * dot is dropped. */
spf_expand_status spf_macro_expand(const char *s, size_t len,
                                   const struct spf_macro_env *env,
                                   bool explanation, char **out);

/* True when name is usable as a DNS name: 1..253 characters of printable
 * ASCII (a macro may bring spaces: RFC 7208 7.1 %_), labels of 1..63 (one
 * trailing dot allowed). */
bool spf_domain_valid(const char *name);

#endif
