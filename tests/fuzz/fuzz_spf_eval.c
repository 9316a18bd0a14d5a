/*
 * fuzz_spf_eval.c - libFuzzer harness for modules/spf/spf_eval.c: the
 * check_host() state machine under any DNS answers.
 *
 * The input is the DNS: each lookup the evaluator starts is queued, and
 * answered later, oldest first, from the next bytes of the input (a
 * status, a record count, then each record: TXT text, an MX or PTR name
 * picked from a few or read from the input, or an address). The first two
 * bytes pick the client address family and a lookup after which the check
 * is freed while that lookup is in flight (0: never).
 *
 * Checked: the callback runs exactly once unless the check finished at
 * once or was freed first, never after a lookup it did not wait for; no
 * lookup is started after the end; at most one lookup is in flight; the
 * number of lookups stays within what the limits allow; an explanation
 * comes only with fail. ASan sees the rest (leaks, use after free).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "spf_eval.h"

#define FUZZ_CHECK(cond)                                                       \
    do {                                                                       \
        if (!(cond))                                                           \
            abort();                                                           \
    } while (0)

/* 10 terms, each up to 1 + 10 names, %{p} up to 11, records, exp. */
#define FUZZ_MAX_LOOKUPS 400

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fuzz_in {
    const uint8_t *data;
    size_t size, pos;
};

static uint8_t
fuzz_byte(struct fuzz_in *in)
{
    return in->pos < in->size ? in->data[in->pos++] : 0;
}

struct fuzz_lookup {
    bool active;
    spf_dns_type type;
    spf_dns_cb cb;
    void *arg;
};

static struct fuzz_lookup fuzz_q; /* the one lookup in flight */
static unsigned fuzz_started, fuzz_done_calls;
static bool fuzz_finished;

static void *
fuzz_lookup(void *ctx, const char *name, spf_dns_type type, spf_dns_cb cb,
            void *arg)
{
    (void)ctx;
    FUZZ_CHECK(!fuzz_finished);
    FUZZ_CHECK(!fuzz_q.active);
    FUZZ_CHECK(name != NULL && name[0] != '\0' && strlen(name) <= 253);
    fuzz_q = (struct fuzz_lookup){true, type, cb, arg};
    fuzz_started++;
    FUZZ_CHECK(fuzz_started <= FUZZ_MAX_LOOKUPS);
    return &fuzz_q;
}

static void
fuzz_cancel(void *ctx, void *handle)
{
    (void)ctx;
    FUZZ_CHECK(handle == &fuzz_q && fuzz_q.active);
    fuzz_q.active = false;
}

static void
fuzz_check_outcome(const struct spf_outcome *out)
{
    FUZZ_CHECK((unsigned)out->result < SPF_RESULT_COUNT);
    if (out->explanation != NULL)
        FUZZ_CHECK(out->result == SPF_FAIL);
}

static void
fuzz_done(void *arg, const struct spf_outcome *out)
{
    (void)arg;
    FUZZ_CHECK(!fuzz_finished);
    fuzz_finished = true;
    fuzz_done_calls++;
    fuzz_check_outcome(out);
}

static const char *const fuzz_names[] = {
    "example.com",     "mx.example.com", "a.example.com",
    "sub.example.com", "example.com.",   "mail.example.org",
};

/* Answer the lookup in flight from the input. */
static void
fuzz_answer(struct fuzz_in *in)
{
    struct fuzz_lookup q = fuzz_q;
    struct spf_rr rrs[16];
    char text[16][256];
    struct spf_answer a = {0};
    uint8_t st = fuzz_byte(in);

    fuzz_q.active = false;
    a.status = (spf_dns_status)(st % 6 == 5 && (st & 0x80) == 0 ? 0 : st % 6);
    if (a.status == SPF_DNS_OK) {
        a.count = fuzz_byte(in) % 17;
        if (a.count > 16)
            a.count = 16;
        for (size_t i = 0; i < a.count; i++) {
            struct spf_rr *rr = &rrs[i];
            memset(rr, 0, sizeof *rr);
            if (q.type == SPF_DNS_A || q.type == SPF_DNS_AAAA) {
                bool v6 = q.type == SPF_DNS_AAAA;
                rr->ip.family = v6 ? AF_INET6 : AF_INET;
                for (int k = 0; k < (v6 ? 16 : 4); k++)
                    rr->ip.addr[k] = fuzz_byte(in);
                continue;
            }
            uint8_t pick = fuzz_byte(in);
            if ((q.type == SPF_DNS_MX || q.type == SPF_DNS_PTR) &&
                pick < 0xc0) {
                rr->data = fuzz_names[pick % 6];
                rr->len = strlen(rr->data);
                continue;
            }
            size_t len = fuzz_byte(in);
            for (size_t k = 0; k < len; k++)
                text[i][k] = (char)fuzz_byte(in);
            rr->data = text[i];
            rr->len = len;
        }
    }
    a.rrs = rrs;
    q.cb(q.arg, &a);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = {data, size, 0};
    uint8_t flags = fuzz_byte(&in);
    unsigned free_after = fuzz_byte(&in);
    struct spf_request req = {.domain = "example.com",
                              .sender = "user@example.com",
                              .helo = "mail.example.org",
                              .receiver = "mx.example.net",
                              .now = 1700000000};

    fuzz_q.active = false;
    fuzz_started = fuzz_done_calls = 0;
    fuzz_finished = false;
    req.ip.family = (flags & 1) ? AF_INET6 : AF_INET;
    if (flags & 1) {
        req.ip.addr[0] = 0x20;
        req.ip.addr[1] = 0x01;
        req.ip.addr[15] = flags;
    } else {
        req.ip.addr[0] = 192;
        req.ip.addr[3] = flags;
    }
    struct spf_resolver res = {.lookup = fuzz_lookup, .cancel = fuzz_cancel};
    spf_eval *e = spf_eval_new(&res, &req, fuzz_done, NULL);
    FUZZ_CHECK(e != NULL);
    if (spf_eval_start(e)) {
        FUZZ_CHECK(!fuzz_q.active && fuzz_done_calls == 0);
        fuzz_check_outcome(spf_eval_outcome(e));
        spf_eval_free(e);
        return 0;
    }
    FUZZ_CHECK(fuzz_q.active);
    while (fuzz_q.active) {
        if (free_after != 0 && fuzz_started >= free_after) {
            spf_eval_free(e); /* cancels the lookup in flight */
            FUZZ_CHECK(!fuzz_q.active && fuzz_done_calls == 0);
            return 0;
        }
        fuzz_answer(&in);
    }
    FUZZ_CHECK(fuzz_done_calls == 1);
    fuzz_check_outcome(spf_eval_outcome(e));
    spf_eval_free(e);
    return 0;
}
