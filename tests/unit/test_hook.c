/*
 * test_hook.c - hook chains and the hook contract (core/hook.c), the reply
 * a hook result turns into (core/smtp_reply.c) and module notes
 * (core/notes.c, core/session_api.c).
 *
 * The engine is driven directly with a stand-in session: chains are built
 * from module instances defined here whose behaviour is data (result,
 * reply, pending, early resume), and the done callback records what the
 * session would learn. Notes and orphaned contexts are also checked on a
 * real session served over a socketpair, so valgrind sees the whole life
 * cycle: a handler resuming after its client left must free the context
 * without touching the freed session.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdbool.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "postern/postern.h"

#include "config.h"
#include "conn.h"
#include "hook.h"
#include "log.h"
#include "module.h"
#include "notes.h"
#include "pool.h"
#include "services.h"
#include "smtp_reply.h"
#include "smtp_session.h"

/* --- handlers whose behaviour is their instance data --- */

struct behaviour {
    const char *name;      /* appended to the trace when called */
    postern_result result; /* what the handler returns */
    int code;              /* postern_reply() when code or text is set */
    const char *enhanced;
    const char *text;
    bool early;                  /* postern_resume() before returning */
    postern_result early_result; /* ... with this */
};

static char trace[256];
static postern_ctx *last_ctx;    /* the handle the last handler saw */
static postern_ctx *pending_ctx; /* ... and the last that went PENDING */

static postern_result
behave(postern_ctx *ctx, void *instance)
{
    const struct behaviour *b = instance;

    if (trace[0])
        strncat(trace, ",", sizeof(trace) - strlen(trace) - 1);
    strncat(trace, b->name, sizeof(trace) - strlen(trace) - 1);
    last_ctx = ctx;
    if (b->code || b->text)
        postern_reply(ctx, b->code, b->enhanced, "%s", b->text ? b->text : "");
    if (b->early)
        postern_resume(ctx, b->early_result);
    if (b->result == POSTERN_PENDING && !b->early)
        pending_ctx = ctx;
    return b->result;
}

static const postern_module behave_module = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "behave",
    .handlers =
        {
            [POSTERN_HOOK_CONNECT] = behave,
            [POSTERN_HOOK_HELO] = behave,
            [POSTERN_HOOK_MAIL] = behave,
            [POSTERN_HOOK_RCPT] = behave,
            [POSTERN_HOOK_RESET] = behave,
            [POSTERN_HOOK_DISCONNECT] = behave,
        },
};

#define MAX_INSTANCES 4
static struct module_instance instances[MAX_INSTANCES];
static struct module_set set;
static char instance_names[MAX_INSTANCES][48];

/* Chains of behaviours: one instance per behaviour, on the given hooks. */
static void
build_chain(unsigned hooks_mask, struct behaviour *b, size_t n)
{
    assert_true(n <= MAX_INSTANCES);
    for (size_t i = 0; i < n; i++) {
        snprintf(instance_names[i], sizeof(instance_names[i]), "%zu0-%s", i + 1,
                 b[i].name);
        instances[i] = (struct module_instance){.instance = instance_names[i],
                                                .file = instance_names[i],
                                                .desc = &behave_module,
                                                .state = &b[i],
                                                .hooks_mask = hooks_mask};
    }
    set.items = instances;
    set.n = n;
    assert_int_equal(hook_chains_build(&set), 0);
}

/* --- what the stand-in session learns --- */

static struct {
    unsigned calls;
    struct session *session;
    postern_result result;
    struct hook_reply reply;
} done;

static void
on_done(struct session *s, postern_result r, const struct hook_reply *reply)
{
    done.calls++;
    done.session = s;
    done.result = r;
    done.reply = *reply;
}

static struct session fake;

static int
setup_engine(void **state)
{
    (void)state;
    memset(&done, 0, sizeof(done));
    memset(&fake, 0, sizeof(fake));
    snprintf(fake.id, sizeof(fake.id), "00000000deadbeef");
    trace[0] = '\0';
    last_ctx = NULL;
    pending_ctx = NULL;
    return 0;
}

static int
teardown_engine(void **state)
{
    (void)state;
    hook_chains_free();
    return 0;
}

#define HELO_ONLY POSTERN_HOOK_BIT(POSTERN_HOOK_HELO)

/* --- chain order and flow --- */

static void
test_chain_order_all_continue(void **state)
{
    (void)state;
    struct behaviour b[] = {{.name = "a"}, {.name = "b"}, {.name = "c"}};
    build_chain(HELO_ONLY, b, 3);
    assert_int_equal(hook_chain_length(POSTERN_HOOK_HELO), 3);
    assert_int_equal(hook_chain_length(POSTERN_HOOK_MAIL), 0);

    struct hook_ctx *ctx = hook_ctx_new(&fake, fake.id, NULL);
    assert_non_null(ctx);
    hook_run(ctx, POSTERN_HOOK_HELO, on_done);
    assert_string_equal(trace, "a,b,c");
    assert_int_equal(done.calls, 1);
    assert_ptr_equal(done.session, &fake);
    assert_int_equal(done.result, POSTERN_CONTINUE);
    assert_int_equal(done.reply.code, 0);
    assert_string_equal(done.reply.enhanced, "");
    assert_string_equal(done.reply.text, "");
    assert_false(hook_ctx_pending(ctx));
    assert_int_equal(postern_ctx_hook(hook_ctx_handle(ctx)), POSTERN_HOOK_HELO);

    /* A hook with no handler at all answers CONTINUE at once. */
    trace[0] = '\0';
    hook_run(ctx, POSTERN_HOOK_MAIL, on_done);
    assert_string_equal(trace, "");
    assert_int_equal(done.calls, 2);
    assert_int_equal(done.result, POSTERN_CONTINUE);
    hook_ctx_release(ctx);
}

/* Instances run in set order, only on the hooks they are attached to. */
static void
test_chain_respects_hooks_mask(void **state)
{
    (void)state;
    struct behaviour b[] = {{.name = "a"}, {.name = "b"}, {.name = "c"}};
    build_chain(HELO_ONLY | POSTERN_HOOK_BIT(POSTERN_HOOK_MAIL), b, 3);
    instances[1].hooks_mask = POSTERN_HOOK_BIT(POSTERN_HOOK_MAIL);
    assert_int_equal(hook_chains_build(&set), 0);
    assert_int_equal(hook_chain_length(POSTERN_HOOK_HELO), 2);
    assert_int_equal(hook_chain_length(POSTERN_HOOK_MAIL), 3);

    struct hook_ctx *ctx = hook_ctx_new(&fake, fake.id, NULL);
    hook_run(ctx, POSTERN_HOOK_HELO, on_done);
    assert_string_equal(trace, "a,c");
    trace[0] = '\0';
    hook_run(ctx, POSTERN_HOOK_MAIL, on_done);
    assert_string_equal(trace, "a,b,c");
    assert_int_equal(done.calls, 2);
    hook_ctx_release(ctx);
}

static void
check_stops_at_b(postern_result r)
{
    struct behaviour b[] = {
        {.name = "a"}, {.name = "b", .result = r}, {.name = "c"}};
    build_chain(HELO_ONLY, b, 3);
    struct hook_ctx *ctx = hook_ctx_new(&fake, fake.id, NULL);
    trace[0] = '\0';
    done.calls = 0;
    hook_run(ctx, POSTERN_HOOK_HELO, on_done);
    assert_string_equal(trace, "a,b");
    assert_int_equal(done.calls, 1);
    assert_int_equal(done.result, r);
    assert_int_equal(done.reply.code, 0); /* no reply: stage defaults */
    assert_string_equal(done.reply.text, "");
    hook_ctx_release(ctx);
}

/* Any decision ends the chain; the next handler never runs. */
static void
test_decision_stops_chain(void **state)
{
    (void)state;
    check_stops_at_b(POSTERN_ACCEPT);
    check_stops_at_b(POSTERN_REJECT);
    check_stops_at_b(POSTERN_TEMPFAIL);
    check_stops_at_b(POSTERN_DISCONNECT);
}

/* A result outside the enum is a module bug: treated as TEMPFAIL, and its
 * reply is not trusted. */
static void
test_bad_result_is_tempfail(void **state)
{
    (void)state;
    struct behaviour b[] = {{.name = "a",
                             .result = (postern_result)42,
                             .code = 250,
                             .text = "fine"},
                            {.name = "b"}};
    build_chain(HELO_ONLY, b, 2);
    struct hook_ctx *ctx = hook_ctx_new(&fake, fake.id, NULL);
    hook_run(ctx, POSTERN_HOOK_HELO, on_done);
    assert_string_equal(trace, "a");
    assert_int_equal(done.calls, 1);
    assert_int_equal(done.result, POSTERN_TEMPFAIL);
    assert_int_equal(done.reply.code, 0);
    assert_string_equal(done.reply.text, "");
    hook_ctx_release(ctx);
}

/* --- replies --- */

static void
test_reply_travels_with_result(void **state)
{
    (void)state;
    struct behaviour b[] = {{.name = "a"},
                            {.name = "b",
                             .result = POSTERN_REJECT,
                             .code = 553,
                             .enhanced = "5.1.8",
                             .text = "bad sender domain"}};
    build_chain(HELO_ONLY, b, 2);
    struct hook_ctx *ctx = hook_ctx_new(&fake, fake.id, NULL);
    hook_run(ctx, POSTERN_HOOK_HELO, on_done);
    assert_int_equal(done.result, POSTERN_REJECT);
    assert_int_equal(done.reply.code, 553);
    assert_string_equal(done.reply.enhanced, "5.1.8");
    assert_string_equal(done.reply.text, "bad sender domain");
    hook_ctx_release(ctx);
}

/* A reply set by a handler that then says CONTINUE belongs to nobody: the
 * next handler's decision must not inherit it. */
static void
test_reply_of_continue_dropped(void **state)
{
    (void)state;
    struct behaviour b[] = {
        {.name = "a", .code = 550, .enhanced = "5.7.1", .text = "stale"},
        {.name = "b", .result = POSTERN_REJECT}};
    build_chain(HELO_ONLY, b, 2);
    struct hook_ctx *ctx = hook_ctx_new(&fake, fake.id, NULL);
    hook_run(ctx, POSTERN_HOOK_HELO, on_done);
    assert_int_equal(done.result, POSTERN_REJECT);
    assert_int_equal(done.reply.code, 0);
    assert_string_equal(done.reply.enhanced, "");
    assert_string_equal(done.reply.text, "");

    /* Same when every handler continues. */
    struct behaviour c[] = {
        {.name = "a", .code = 550, .enhanced = "5.7.1", .text = "stale"}};
    build_chain(HELO_ONLY, c, 1);
    hook_run(ctx, POSTERN_HOOK_HELO, on_done);
    assert_int_equal(done.result, POSTERN_CONTINUE);
    assert_int_equal(done.reply.code, 0);
    assert_string_equal(done.reply.text, "");
    hook_ctx_release(ctx);
}

/* Set a reply through a one-handler chain; return what the session got. */
static struct hook_reply
reply_of(int code, const char *enhanced, const char *text)
{
    struct behaviour b[] = {{.name = "r",
                             .result = POSTERN_REJECT,
                             .code = code,
                             .enhanced = enhanced,
                             .text = text}};
    build_chain(HELO_ONLY, b, 1);
    struct hook_ctx *ctx = hook_ctx_new(&fake, fake.id, NULL);
    hook_run(ctx, POSTERN_HOOK_HELO, on_done);
    hook_ctx_release(ctx);
    return done.reply;
}

static void
test_reply_validation(void **state)
{
    (void)state;
    struct hook_reply r;

    /* Codes outside 200..599 mean "the stage default". */
    assert_int_equal(reply_of(99, NULL, "x").code, 0);
    assert_int_equal(reply_of(199, NULL, "x").code, 0);
    assert_int_equal(reply_of(600, NULL, "x").code, 0);
    assert_int_equal(reply_of(-550, NULL, "x").code, 0);
    assert_int_equal(reply_of(554, NULL, "x").code, 554);

    /* Enhanced codes: class 2, 4 or 5, three numeric parts, nothing else. */
    assert_string_equal(reply_of(550, "5.1.1", "x").enhanced, "5.1.1");
    assert_string_equal(reply_of(550, "4.999.999", "x").enhanced, "4.999.999");
    assert_string_equal(reply_of(550, "5.01.1", "x").enhanced, "5.1.1");
    assert_string_equal(reply_of(550, "5.1", "x").enhanced, "");
    assert_string_equal(reply_of(550, "6.1.1", "x").enhanced, "");
    assert_string_equal(reply_of(550, "3.1.1", "x").enhanced, "");
    assert_string_equal(reply_of(550, "5.1.1x", "x").enhanced, "");
    assert_string_equal(reply_of(550, "5.1.1 ", "x").enhanced, "");
    assert_string_equal(reply_of(550, "5.1000.1", "x").enhanced, "");
    assert_string_equal(reply_of(550, "5.1.1000", "x").enhanced, "");
    assert_string_equal(reply_of(550, "5..1", "x").enhanced, "");
    assert_string_equal(reply_of(550, "", "x").enhanced, "");
    assert_string_equal(reply_of(550, "x.y.z", "x").enhanced, "");

    /* CR, LF and other controls never reach the wire. */
    r = reply_of(550, NULL, "line\r\n250 injected\tand\x01more");
    assert_null(strchr(r.text, '\r'));
    assert_null(strchr(r.text, '\n'));
    assert_null(strchr(r.text, '\x01'));
    assert_string_equal(r.text, "line  250 injected and more");
}

/* include/postern/hook.h: "the text ... is cut at 400 bytes". */
static void
test_reply_text_cut_at_400(void **state)
{
    (void)state;
    char longtext[1001];
    memset(longtext, 'y', sizeof(longtext) - 1);
    longtext[sizeof(longtext) - 1] = '\0';

    struct hook_reply r = reply_of(550, "5.7.1", longtext);
    assert_true(strspn(r.text, "y") == strlen(r.text));
    if (strlen(r.text) != 400)
        fail_msg("reply text kept %zu bytes; the public header promises a "
                 "cut at 400",
                 strlen(r.text));
}

/* --- the reply written for an outcome (smtp_reply_hook) --- */

static struct conn reply_conn;
static int reply_fds[2];

static int
setup_reply_conn(void **state)
{
    setup_engine(state);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, reply_fds), 0);
    assert_int_equal(conn_init(&reply_conn, services_loop(), reply_fds[0], 4096,
                               NULL, 0, NULL, NULL),
                     0);
    return 0;
}

static int
teardown_reply_conn(void **state)
{
    conn_close(&reply_conn);
    close(reply_fds[1]);
    return teardown_engine(state);
}

/* The bytes smtp_reply_hook queues for r with the stage defaults given. */
static void
expect_hook_reply(const struct hook_reply *r, int code, const char *enh,
                  const char *text, const char *want)
{
    reply_conn.out_start = reply_conn.out_end = 0;
    smtp_reply_hook(&reply_conn, r, code, enh, text);
    size_t len = conn_pending_output(&reply_conn);
    char got[600];
    assert_true(len < sizeof(got));
    memcpy(got, reply_conn.out + reply_conn.out_start, len);
    got[len] = '\0';
    assert_string_equal(got, want);
}

static void
test_reply_hook_rendering(void **state)
{
    (void)state;
    struct hook_reply none = {0};
    struct hook_reply own = {.code = 553, .enhanced = "5.1.8", .text = "no"};
    struct hook_reply wrong_class = {
        .code = 450, .enhanced = "4.2.1", .text = "busy"};
    struct hook_reply only_text = {.text = "just text"};
    struct hook_reply two = {.code = 251, .enhanced = "2.1.5", .text = "fwd"};

    expect_hook_reply(NULL, 550, "5.7.1", "Default", "550 5.7.1 Default\r\n");
    expect_hook_reply(&none, 550, "5.7.1", "Default", "550 5.7.1 Default\r\n");
    expect_hook_reply(&own, 550, "5.7.1", "Default", "553 5.1.8 no\r\n");
    /* A 4xx reply on a REJECT: the class is the result's, the defaults
     * win; the text is still the module's. */
    expect_hook_reply(&wrong_class, 550, "5.7.1", "Default",
                      "550 5.7.1 busy\r\n");
    expect_hook_reply(&own, 451, "4.7.1", "Later", "451 4.7.1 no\r\n");
    expect_hook_reply(&only_text, 451, "4.7.1", "Later",
                      "451 4.7.1 just text\r\n");
    expect_hook_reply(&two, 250, "2.1.5", "Ok", "251 2.1.5 fwd\r\n");
    /* A stage without enhanced code (354) keeps none. */
    expect_hook_reply(&none, 354, NULL, "Go ahead", "354 Go ahead\r\n");
}

/* Replies built from a chain end up as the right line: decision, code,
 * enhanced code and text, defaults where the module gave none. */
static void
test_chain_reply_to_wire(void **state)
{
    (void)state;
    struct hook_reply r = reply_of(0, "5.1.1", "unknown user");
    expect_hook_reply(&r, 550, "5.7.1", "Error: recipient rejected",
                      "550 5.1.1 unknown user\r\n");
    r = reply_of(421, NULL, NULL);
    expect_hook_reply(&r, 550, "5.7.1", "Error: recipient rejected",
                      "550 5.7.1 Error: recipient rejected\r\n");
}

/* --- POSTERN_DISCARD and multi-line replies (ABI 1.3) --- */

/* DISCARD ends the chain where it has a meaning (mail, rcpt, data,
 * message, store); at any other hook it is a TEMPFAIL. */
static void
test_discard_where_allowed(void **state)
{
    (void)state;
    struct behaviour b[] = {{.name = "a", .result = POSTERN_DISCARD},
                            {.name = "b"}};
    build_chain(HELO_ONLY | POSTERN_HOOK_BIT(POSTERN_HOOK_MAIL) |
                    POSTERN_HOOK_BIT(POSTERN_HOOK_RCPT),
                b, 2);
    struct hook_ctx *ctx = hook_ctx_new(&fake, fake.id, NULL);
    hook_run(ctx, POSTERN_HOOK_MAIL, on_done);
    assert_string_equal(trace, "a");
    assert_int_equal(done.result, POSTERN_DISCARD);
    assert_string_equal(hook_ctx_decider(ctx), "10-a");
    hook_run(ctx, POSTERN_HOOK_RCPT, on_done);
    assert_int_equal(done.result, POSTERN_DISCARD);
    hook_run(ctx, POSTERN_HOOK_HELO, on_done);
    assert_int_equal(done.result, POSTERN_TEMPFAIL);
    assert_int_equal(done.calls, 3);
    hook_ctx_release(ctx);
}

static int line_results[20];

/* A reply of one line plus 19 more asked for: 16 lines are the most. */
static postern_result
many_lines(postern_ctx *ctx, void *instance)
{
    (void)instance;
    line_results[0] = postern_reply_line(ctx, "before any reply");
    postern_reply(ctx, 550, "5.7.1", "line %d", 1);
    for (int i = 1; i < 20; i++)
        line_results[i] = postern_reply_line(ctx, "line %d\r\nforged", i + 1);
    return POSTERN_REJECT;
}

static const postern_module lines_module = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "lines",
    .handlers = {[POSTERN_HOOK_HELO] = many_lines},
};

static char wire[8192];

/* The reply's extra lines live only during the done callback: render. */
static void
on_done_render(struct session *s, postern_result r,
               const struct hook_reply *reply)
{
    (void)s;
    done.calls++;
    done.result = r;
    reply_conn.out_start = reply_conn.out_end = 0;
    smtp_reply_hook(&reply_conn, reply, 550, "5.7.1", "Default");
    size_t len = conn_pending_output(&reply_conn);
    assert_true(len < sizeof(wire));
    memcpy(wire, reply_conn.out + reply_conn.out_start, len);
    wire[len] = '\0';
}

static void
test_reply_lines(void **state)
{
    (void)state;
    instances[0] = (struct module_instance){.instance = "10-lines",
                                            .file = "10-lines",
                                            .desc = &lines_module,
                                            .hooks_mask = HELO_ONLY};
    set.items = instances;
    set.n = 1;
    assert_int_equal(hook_chains_build(&set), 0);
    struct hook_ctx *ctx = hook_ctx_new(&fake, fake.id, NULL);
    hook_run(ctx, POSTERN_HOOK_HELO, on_done_render);
    assert_int_equal(done.result, POSTERN_REJECT);
    assert_int_equal(line_results[0], -1); /* no reply attached yet */
    for (int i = 1; i < 16; i++)
        assert_int_equal(line_results[i], 0);
    for (int i = 16; i < 20; i++)
        assert_int_equal(line_results[i], -1);
    char want[8192];
    size_t n = 0;
    n += (size_t)snprintf(want + n, sizeof(want) - n, "550-5.7.1 line 1\r\n");
    for (int i = 2; i <= 16; i++)
        n += (size_t)snprintf(want + n, sizeof(want) - n,
                              "550%c5.7.1 line %d  forged\r\n",
                              i < 16 ? '-' : ' ', i);
    assert_string_equal(wire, want);
    hook_ctx_release(ctx);
}

/* --- pending, resume, early resume, orphans --- */

static void
test_pending_then_resume_continue(void **state)
{
    (void)state;
    struct behaviour b[] = {{.name = "a"},
                            {.name = "b", .result = POSTERN_PENDING},
                            {.name = "c", .result = POSTERN_ACCEPT}};
    build_chain(HELO_ONLY, b, 3);
    struct hook_ctx *ctx = hook_ctx_new(&fake, fake.id, NULL);
    hook_run(ctx, POSTERN_HOOK_HELO, on_done);
    assert_string_equal(trace, "a,b");
    assert_int_equal(done.calls, 0);
    assert_true(hook_ctx_pending(ctx));
    assert_false(postern_ctx_orphaned(pending_ctx));
    assert_ptr_equal(last_ctx, pending_ctx);

    postern_resume(pending_ctx, POSTERN_CONTINUE); /* the chain goes on */
    assert_string_equal(trace, "a,b,c");
    assert_int_equal(done.calls, 1);
    assert_int_equal(done.result, POSTERN_ACCEPT);
    assert_false(hook_ctx_pending(ctx));

    /* A second resume is a module bug: logged and ignored. */
    postern_resume(pending_ctx, POSTERN_REJECT);
    assert_int_equal(done.calls, 1);
    hook_ctx_release(ctx);
}

static void
test_pending_then_resume_with_reply(void **state)
{
    (void)state;
    struct behaviour b[] = {{.name = "a", .result = POSTERN_PENDING},
                            {.name = "b"}};
    build_chain(HELO_ONLY, b, 2);
    struct hook_ctx *ctx = hook_ctx_new(&fake, fake.id, NULL);
    hook_run(ctx, POSTERN_HOOK_HELO, on_done);
    assert_int_equal(done.calls, 0);
    postern_reply(pending_ctx, 451, "4.4.3", "DNS timeout for %s",
                  "example.org");
    postern_resume(pending_ctx, POSTERN_TEMPFAIL);
    assert_string_equal(trace, "a");
    assert_int_equal(done.calls, 1);
    assert_int_equal(done.result, POSTERN_TEMPFAIL);
    assert_int_equal(done.reply.code, 451);
    assert_string_equal(done.reply.enhanced, "4.4.3");
    assert_string_equal(done.reply.text, "DNS timeout for example.org");
    hook_ctx_release(ctx);
}

/* postern_resume(PENDING) cannot suspend again: it is a TEMPFAIL. */
static void
test_resume_with_pending_is_tempfail(void **state)
{
    (void)state;
    struct behaviour b[] = {{.name = "a", .result = POSTERN_PENDING}};
    build_chain(HELO_ONLY, b, 1);
    struct hook_ctx *ctx = hook_ctx_new(&fake, fake.id, NULL);
    hook_run(ctx, POSTERN_HOOK_HELO, on_done);
    postern_resume(pending_ctx, POSTERN_PENDING);
    assert_int_equal(done.calls, 1);
    assert_int_equal(done.result, POSTERN_TEMPFAIL);
    hook_ctx_release(ctx);
}

/* A result outside the enum through postern_resume() must be treated like
 * the same result returned directly: TEMPFAIL (not passed on to the
 * session, whose stage code has no reply for it). */
static void
test_resume_with_bad_result_is_tempfail(void **state)
{
    (void)state;
    struct behaviour b[] = {{.name = "a", .result = POSTERN_PENDING}};
    build_chain(HELO_ONLY, b, 1);
    struct hook_ctx *ctx = hook_ctx_new(&fake, fake.id, NULL);
    hook_run(ctx, POSTERN_HOOK_HELO, on_done);
    postern_resume(pending_ctx, (postern_result)42);
    hook_ctx_release(ctx);
    assert_int_equal(done.calls, 1);
    if (done.result != POSTERN_TEMPFAIL)
        fail_msg(
            "postern_resume(pending_ctx, 42) reached the session as result %d, "
            "expected TEMPFAIL (%d) as for a returned bad result",
            (int)done.result, (int)POSTERN_TEMPFAIL);
}

/* Calling postern_resume() inside the handler (before it returned) is
 * against the contract but must be handled: the result counts once, done
 * is not called from inside the handler, and the chain stays consistent. */
static void
test_early_resume(void **state)
{
    (void)state;
    struct behaviour accept[] = {{.name = "a",
                                  .result = POSTERN_PENDING,
                                  .early = true,
                                  .early_result = POSTERN_ACCEPT},
                                 {.name = "b"}};
    build_chain(HELO_ONLY, accept, 2);
    struct hook_ctx *ctx = hook_ctx_new(&fake, fake.id, NULL);
    hook_run(ctx, POSTERN_HOOK_HELO, on_done);
    assert_string_equal(trace, "a");
    assert_int_equal(done.calls, 1);
    assert_int_equal(done.result, POSTERN_ACCEPT);
    assert_false(hook_ctx_pending(ctx));

    /* An early CONTINUE moves on to the next handler. */
    struct behaviour cont[] = {{.name = "a",
                                .result = POSTERN_PENDING,
                                .early = true,
                                .early_result = POSTERN_CONTINUE},
                               {.name = "b", .result = POSTERN_REJECT}};
    build_chain(HELO_ONLY, cont, 2);
    trace[0] = '\0';
    hook_run(ctx, POSTERN_HOOK_HELO, on_done);
    assert_string_equal(trace, "a,b");
    assert_int_equal(done.calls, 2);
    assert_int_equal(done.result, POSTERN_REJECT);

    /* An early resume with a reply keeps the reply. */
    struct behaviour rep[] = {{.name = "a",
                               .result = POSTERN_PENDING,
                               .code = 554,
                               .enhanced = "5.7.1",
                               .text = "go away",
                               .early = true,
                               .early_result = POSTERN_REJECT}};
    build_chain(HELO_ONLY, rep, 1);
    hook_run(ctx, POSTERN_HOOK_HELO, on_done);
    assert_int_equal(done.calls, 3);
    assert_int_equal(done.result, POSTERN_REJECT);
    assert_int_equal(done.reply.code, 554);
    assert_string_equal(done.reply.text, "go away");

    /* A handler that resumes early and then returns a decision anyway:
     * the returned value counts, once. */
    struct behaviour both[] = {{.name = "a",
                                .result = POSTERN_TEMPFAIL,
                                .early = true,
                                .early_result = POSTERN_ACCEPT}};
    build_chain(HELO_ONLY, both, 1);
    hook_run(ctx, POSTERN_HOOK_HELO, on_done);
    assert_int_equal(done.calls, 4);
    assert_int_equal(done.result, POSTERN_TEMPFAIL);
    assert_false(hook_ctx_pending(ctx));
    hook_ctx_release(ctx);
}

/* The session goes away while a handler is pending: the context is
 * orphaned, every accessor answers empty, and the late resume frees it
 * without calling back into the (gone) session. valgrind: no leak, no
 * invalid access. */
static void
test_orphaned_context(void **state)
{
    (void)state;
    struct behaviour b[] = {{.name = "a", .result = POSTERN_PENDING}};
    build_chain(HELO_ONLY, b, 1);
    struct session *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    snprintf(s->id, sizeof(s->id), "0123456789abcdef");
    s->helo = strdup("client.example");
    struct hook_ctx *ctx = hook_ctx_new(s, s->id, NULL);
    hook_run(ctx, POSTERN_HOOK_HELO, on_done);
    assert_true(hook_ctx_pending(ctx));
    assert_string_equal(postern_session_id(pending_ctx), "0123456789abcdef");
    assert_string_equal(postern_helo_name(pending_ctx), "client.example");

    hook_ctx_release(ctx); /* the session is closing */
    free(s->helo);
    free(s);

    assert_true(postern_ctx_orphaned(pending_ctx));
    assert_null(hook_ctx_session(pending_ctx));
    assert_int_equal(postern_ctx_hook(pending_ctx), POSTERN_HOOK_HELO);
    assert_null(postern_session_id(pending_ctx));
    assert_null(postern_client_ip(pending_ctx));
    assert_int_equal(postern_client_port(pending_ctx), 0);
    assert_null(postern_client_addr(pending_ctx, NULL));
    assert_int_equal(postern_client_relay(pending_ctx), 0);
    assert_null(postern_helo_name(pending_ctx));
    assert_int_equal(postern_is_esmtp(pending_ctx), 0);
    assert_int_equal(postern_tls_active(pending_ctx), 0);
    assert_null(postern_auth_user(pending_ctx));
    assert_null(postern_transaction_id(pending_ctx));
    assert_null(postern_mail_from(pending_ctx));
    assert_null(postern_mail_param(pending_ctx, "SIZE"));
    assert_int_equal(postern_rcpt_count(pending_ctx), 0);
    assert_null(postern_rcpt_address(pending_ctx, 0));
    assert_null(postern_rcpt_current(pending_ctx));
    assert_int_equal(postern_message_size(pending_ctx), 0);
    assert_null(postern_message_open(pending_ctx));
    assert_int_equal(postern_header_add(pending_ctx, "X-Test", "1"), -1);
    assert_int_equal(
        postern_note_set(pending_ctx, POSTERN_NOTE_SESSION, "k", NULL, NULL),
        -1);
    assert_null(postern_note_get(pending_ctx, POSTERN_NOTE_SESSION, "k"));
    postern_reply(pending_ctx, 550, "5.7.1", "nobody hears this");
    postern_log(pending_ctx, POSTERN_LOG_DEBUG, "orphaned context logs fine");

    postern_resume(pending_ctx, POSTERN_ACCEPT); /* frees ctx */
    assert_int_equal(done.calls, 0);
}

/* Releasing a context that is not pending frees it at once (valgrind). */
static void
test_release_idle_context(void **state)
{
    (void)state;
    hook_ctx_release(NULL);
    struct hook_ctx *ctx = hook_ctx_new(&fake, fake.id, NULL);
    assert_non_null(ctx);
    assert_false(hook_ctx_pending(ctx));
    assert_false(postern_ctx_orphaned(hook_ctx_handle(ctx)));
    hook_ctx_release(ctx);
    postern_resume(NULL, POSTERN_ACCEPT); /* tolerated */
}

/* The client as the session saw it: peer is an address literal. */
static int
relay_of(struct config *cfg, const char *peer)
{
    struct session s;
    memset(&s, 0, sizeof(s));
    snprintf(s.id, sizeof(s.id), "00000000cafef00d");
    s.cfg = cfg;
    if (strchr(peer, ':')) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&s.conn.peer;
        a6->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, peer, &a6->sin6_addr), 1);
        s.conn.peer_len = sizeof(*a6);
    } else {
        struct sockaddr_in *a4 = (struct sockaddr_in *)&s.conn.peer;
        a4->sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, peer, &a4->sin_addr), 1);
        s.conn.peer_len = sizeof(*a4);
    }
    struct hook_ctx *ctx = hook_ctx_new(&s, s.id, NULL);
    assert_non_null(ctx);
    int relay = postern_client_relay(hook_ctx_handle(ctx));
    hook_ctx_release(ctx);
    return relay;
}

/* postern_client_relay(): the client against relay_networks. */
static void
test_client_relay(void **state)
{
    (void)state;
    struct config *cfg = config_defaults();
    assert_non_null(cfg);
    assert_int_equal(relay_of(cfg, "127.0.0.1"), 0); /* none configured */

    struct cidr nets[2];
    assert_int_equal(cidr_parse("192.0.2.0/24", &nets[0]), 0);
    assert_int_equal(cidr_parse("2001:db8::/32", &nets[1]), 0);
    struct cidr *saved = cfg->relay_networks;
    size_t n_saved = cfg->n_relay_networks;
    cfg->relay_networks = nets;
    cfg->n_relay_networks = 2;
    assert_int_equal(relay_of(cfg, "192.0.2.77"), 1);
    assert_int_equal(relay_of(cfg, "192.0.3.1"), 0);
    assert_int_equal(relay_of(cfg, "2001:db8:1::5"), 1);
    assert_int_equal(relay_of(cfg, "2001:db9::5"), 0);
    /* a dual-stack listener sees an IPv4 client as ::ffff:a.b.c.d */
    assert_int_equal(relay_of(cfg, "::ffff:192.0.2.9"), 1);
    assert_int_equal(relay_of(cfg, "::ffff:198.51.100.9"), 0);
    cfg->relay_networks = saved;
    cfg->n_relay_networks = n_saved;
    config_free(cfg);
}

/* Notification hooks run every handler whatever it answers. */
static void
test_notify_runs_all(void **state)
{
    (void)state;
    struct behaviour b[] = {{.name = "a", .result = POSTERN_REJECT},
                            {.name = "b",
                             .result = POSTERN_PENDING,
                             .early = true,
                             .early_result = POSTERN_ACCEPT},
                            {.name = "c", .result = POSTERN_ACCEPT}};
    build_chain(POSTERN_HOOK_BIT(POSTERN_HOOK_RESET), b, 3);
    struct hook_ctx *ctx = hook_ctx_new(&fake, fake.id, NULL);
    struct hook_ctx *after = hook_notify(ctx, POSTERN_HOOK_RESET);
    assert_string_equal(trace, "a,b,c");
    assert_int_equal(done.calls, 0);
    assert_ptr_equal(after, ctx); /* nobody kept it */
    assert_false(hook_ctx_pending(ctx));
    hook_ctx_release(ctx);
}

/* A notification handler that goes PENDING keeps the context it was
 * given, detached from the session; the session goes on with a fresh one
 * and the late resume frees the detached one (valgrind). */
static void
test_notify_pending_detaches(void **state)
{
    (void)state;
    struct behaviour b[] = {
        {.name = "a"}, {.name = "b", .result = POSTERN_PENDING}, {.name = "c"}};
    build_chain(POSTERN_HOOK_BIT(POSTERN_HOOK_DISCONNECT), b, 3);
    struct hook_ctx *ctx = hook_ctx_new(&fake, fake.id, NULL);
    struct hook_ctx *after = hook_notify(ctx, POSTERN_HOOK_DISCONNECT);
    assert_string_equal(trace, "a,b,c");
    assert_non_null(after);
    assert_ptr_not_equal(after, ctx);
    assert_ptr_not_equal(last_ctx, pending_ctx); /* c ran with a fresh one */
    assert_ptr_equal(hook_ctx_session(hook_ctx_handle(after)), &fake);
    assert_false(hook_ctx_pending(after));
    assert_true(postern_ctx_orphaned(pending_ctx));
    assert_null(postern_session_id(pending_ctx));
    postern_resume(pending_ctx, POSTERN_CONTINUE); /* frees ctx */
    assert_int_equal(done.calls, 0);
    hook_ctx_release(after);
}

static void
test_hook_names(void **state)
{
    (void)state;
    static const char *const names[POSTERN_HOOK_COUNT] = {
        "connect", "helo",    "auth",  "mail",  "rcpt",
        "data",    "message", "store", "reset", "disconnect"};
    for (int h = 0; h < POSTERN_HOOK_COUNT; h++)
        assert_string_equal(postern_hook_name((postern_hook)h), names[h]);
    assert_null(postern_hook_name(POSTERN_HOOK_COUNT));
    assert_null(postern_hook_name((postern_hook)-1));
}

/* --- notes.c directly --- */

static unsigned frees;
static void *last_freed;

static void
count_free(void *p)
{
    frees++;
    last_freed = p;
    free(p);
}

static void
test_notes_list(void **state)
{
    (void)state;
    struct note *list = NULL;
    char *v1 = strdup("one"), *v2 = strdup("two"), *v3 = strdup("three");
    frees = 0;

    assert_int_equal(notes_set(&list, "", v1, count_free), -1);
    assert_int_equal(notes_set(&list, NULL, v1, count_free), -1);
    assert_null(notes_get(&list, "a"));
    assert_int_equal(notes_set(&list, "a", v1, count_free), 0);
    assert_int_equal(notes_set(&list, "b", v2, count_free), 0);
    assert_ptr_equal(notes_get(&list, "a"), v1);
    assert_ptr_equal(notes_get(&list, "b"), v2);
    assert_null(notes_get(&list, "A")); /* keys are exact */
    assert_null(notes_get(&list, NULL));

    /* Setting the same value again frees nothing. */
    assert_int_equal(notes_set(&list, "a", v1, count_free), 0);
    assert_int_equal(frees, 0);
    /* Replacing frees the old value with its own free_fn. */
    assert_int_equal(notes_set(&list, "a", v3, count_free), 0);
    assert_int_equal(frees, 1);
    assert_ptr_equal(last_freed, v1);
    assert_ptr_equal(notes_get(&list, "a"), v3);

    /* A value with no free_fn is left alone, at replace and at the end. */
    static int borrowed = 7;
    assert_int_equal(notes_set(&list, "c", &borrowed, NULL), 0);
    assert_int_equal(notes_set(&list, "c", NULL, NULL), 0);
    assert_null(notes_get(&list, "c"));

    notes_free(&list);
    assert_null(list);
    assert_int_equal(frees, 3); /* v2, v3 */
    notes_free(&list);          /* empty: nothing */
    assert_int_equal(frees, 3);
}

/* --- notes and orphans on a real session --- */

static struct {
    struct ev_loop *loop;
    ev_check reaper;
    char spool[64];
    struct config *cfg;
    struct listener_config listener;
} h;

static void
on_reap(struct ev_loop *loop, ev_check *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    session_reap();
}

static double
wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* What the note module saw; checked after the loop ran. */
static struct {
    char error[256];
    unsigned session_frees, tx_frees;
    unsigned disconnects, resets;
    unsigned rcpts_seen;
    bool pending;
    bool orphan_seen;
    postern_ctx *pending_ctx;
} nm;

static void
nm_fail(const char *what)
{
    if (!nm.error[0])
        snprintf(nm.error, sizeof(nm.error), "%s", what);
}

static void
free_session_note(void *p)
{
    nm.session_frees++;
    free(p);
}

static void
free_tx_note(void *p)
{
    nm.tx_frees++;
    free(p);
}

static postern_result
nm_helo(postern_ctx *ctx, void *instance)
{
    (void)instance;
    /* No transaction yet: transaction notes are refused. */
    if (postern_note_set(ctx, POSTERN_NOTE_TRANSACTION, "t.k", NULL, NULL) !=
        -1)
        nm_fail("transaction note accepted outside a transaction");
    if (postern_note_set(ctx, POSTERN_NOTE_SESSION, "", NULL, NULL) != -1)
        nm_fail("empty note key accepted");
    /* EHLO twice replaces the note: the first value is freed. */
    char *v = strdup(postern_helo_name(ctx));
    if (postern_note_set(ctx, POSTERN_NOTE_SESSION, "t.helo", v,
                         free_session_note) != 0)
        nm_fail("session note_set failed");
    return POSTERN_CONTINUE;
}

static postern_result
nm_mail(postern_ctx *ctx, void *instance)
{
    (void)instance;
    char *v = strdup(postern_mail_from(ctx));
    if (postern_note_set(ctx, POSTERN_NOTE_TRANSACTION, "t.from", v,
                         free_tx_note) != 0)
        nm_fail("transaction note_set failed");
    return POSTERN_CONTINUE;
}

static void
nm_resume(void *arg)
{
    postern_ctx *ctx = arg;
    if (postern_ctx_orphaned(ctx)) {
        nm.orphan_seen = true;
        if (postern_rcpt_current(ctx) || postern_session_id(ctx) ||
            postern_note_get(ctx, POSTERN_NOTE_SESSION, "t.helo"))
            nm_fail("an orphaned context still answers");
    }
    nm.pending = false;
    postern_resume(ctx, POSTERN_CONTINUE);
}

static postern_result
nm_rcpt(postern_ctx *ctx, void *instance)
{
    (void)instance;
    const char *helo = postern_note_get(ctx, POSTERN_NOTE_SESSION, "t.helo");
    const char *from =
        postern_note_get(ctx, POSTERN_NOTE_TRANSACTION, "t.from");
    const char *rcpt = postern_rcpt_current(ctx);

    nm.rcpts_seen++;
    if (!helo || strcmp(helo, "second.example") != 0)
        nm_fail("session note lost or not replaced by the second EHLO");
    if (!from || strcmp(from, postern_mail_from(ctx)) != 0)
        nm_fail("transaction note lost between MAIL and RCPT");
    if (postern_note_get(ctx, POSTERN_NOTE_SESSION, "t.from"))
        nm_fail("scopes are mixed up");
    if (rcpt && strncmp(rcpt, "slow", 4) == 0) {
        if (!postern_timer_start(0.05, nm_resume, ctx)) {
            nm_fail("timer");
            return POSTERN_TEMPFAIL;
        }
        nm.pending = true;
        nm.pending_ctx = ctx;
        return POSTERN_PENDING;
    }
    return POSTERN_CONTINUE;
}

static postern_result
nm_reset(postern_ctx *ctx, void *instance)
{
    (void)instance;
    nm.resets++;
    /* Still readable here: freed only after the reset hook. */
    if (!postern_note_get(ctx, POSTERN_NOTE_TRANSACTION, "t.from"))
        nm_fail("transaction note gone before the reset hook");
    return POSTERN_CONTINUE;
}

static postern_result
nm_disconnect(postern_ctx *ctx, void *instance)
{
    (void)instance;
    nm.disconnects++;
    if (!postern_note_get(ctx, POSTERN_NOTE_SESSION, "t.helo"))
        nm_fail("session note gone before the disconnect hook");
    return POSTERN_CONTINUE;
}

static const postern_module note_module = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "notes",
    .handlers =
        {
            [POSTERN_HOOK_HELO] = nm_helo,
            [POSTERN_HOOK_MAIL] = nm_mail,
            [POSTERN_HOOK_RCPT] = nm_rcpt,
            [POSTERN_HOOK_RESET] = nm_reset,
            [POSTERN_HOOK_DISCONNECT] = nm_disconnect,
        },
};

static int
setup_real(void **state)
{
    (void)state;
    static char name[] = "10-notes";
    static struct module_instance inst;
    static struct module_set one;

    memset(&nm, 0, sizeof(nm));
    h.cfg = config_defaults();
    if (!h.cfg)
        return -1;
    free(h.cfg->hostname);
    h.cfg->hostname = strdup("test.example");
    free(h.cfg->spool_dir);
    h.cfg->spool_dir = strdup(h.spool);
    inst = (struct module_instance){
        .instance = name,
        .file = name,
        .desc = &note_module,
        .hooks_mask = POSTERN_HOOK_BIT(POSTERN_HOOK_HELO) |
                      POSTERN_HOOK_BIT(POSTERN_HOOK_MAIL) |
                      POSTERN_HOOK_BIT(POSTERN_HOOK_RCPT) |
                      POSTERN_HOOK_BIT(POSTERN_HOOK_RESET) |
                      POSTERN_HOOK_BIT(POSTERN_HOOK_DISCONNECT)};
    one.items = &inst;
    one.n = 1;
    return hook_chains_build(&one);
}

static int
teardown_real(void **state)
{
    (void)state;
    config_free(h.cfg);
    h.cfg = NULL;
    hook_chains_free();
    return 0;
}

/* Serve one session: write in, then either wait for the server to close
 * or close the client first; returns the server's bytes. */
static char *
serve(const char *in, bool client_closes)
{
    int sv[2];
    char *out = calloc(1, 8192);
    size_t len = 0;
    double deadline = wall_now() + 5.0;

    assert_non_null(out);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
    assert_int_equal(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
    session_start(sv[0], NULL, 0, &h.listener, h.cfg, false);
    assert_int_equal(session_count(), 1);
    assert_int_equal(send(sv[1], in, strlen(in), MSG_NOSIGNAL),
                     (ssize_t)strlen(in));
    if (client_closes) {
        for (int i = 0; i < 5; i++)
            ev_run(h.loop, EVRUN_NOWAIT);
        close(sv[1]);
        sv[1] = -1;
    }
    while (session_count() > 0 && wall_now() < deadline) {
        ev_run(h.loop, EVRUN_NOWAIT);
        if (sv[1] >= 0) {
            ssize_t n = recv(sv[1], out + len, 8191 - len, 0);
            if (n > 0)
                len += (size_t)n;
        }
        usleep(100);
    }
    if (sv[1] >= 0) {
        ssize_t n;
        while ((n = recv(sv[1], out + len, 8191 - len, 0)) > 0)
            len += (size_t)n;
        close(sv[1]);
    }
    session_reap();
    assert_int_equal(session_count(), 0);
    return out;
}

static void
test_notes_on_session(void **state)
{
    (void)state;
    char *out = serve("EHLO first.example\r\n"
                      "EHLO second.example\r\n"
                      "MAIL FROM:<a@example.org>\r\n"
                      "RCPT TO:<b@example.com>\r\n"
                      "RSET\r\n"
                      "MAIL FROM:<c@example.org>\r\n"
                      "RCPT TO:<d@example.com>\r\n"
                      "QUIT\r\n",
                      false);
    if (nm.error[0])
        fail_msg("%s", nm.error);
    assert_non_null(strstr(out, "221 2.0.0 Bye\r\n"));
    assert_int_equal(nm.rcpts_seen, 2);
    /* first EHLO's note replaced by the second's, which went at close */
    assert_int_equal(nm.session_frees, 2);
    /* one per transaction: at RSET, and at close */
    assert_int_equal(nm.tx_frees, 2);
    assert_int_equal(nm.resets, 2);
    assert_int_equal(nm.disconnects, 1);
    free(out);
}

/* The client leaves while the RCPT hook is pending. The session closes at
 * once (reset and disconnect hooks); the handler's late resume lands on an
 * orphaned context, which frees it and then the session it held.
 * valgrind: no leak, no use after free. */
static void
test_orphan_on_session(void **state)
{
    (void)state;
    char *out = serve("EHLO second.example\r\n"
                      "MAIL FROM:<a@example.org>\r\n"
                      "RCPT TO:<slow@example.com>\r\n",
                      true);
    assert_true(nm.pending); /* the session went first */
    assert_int_equal(nm.disconnects, 1);
    /* The transaction ended (reset hook) but what the pending handler may
     * have borrowed from it lives until its resume. */
    assert_int_equal(nm.resets, 1);
    assert_int_equal(nm.tx_frees, 0);
    for (int i = 0; i < 500 && nm.pending; i++) {
        usleep(1000);
        ev_run(h.loop, EVRUN_NOWAIT);
    }
    assert_false(nm.pending);
    assert_int_equal(nm.tx_frees, 1);
    assert_int_equal(nm.session_frees, 1);
    assert_true(nm.orphan_seen);
    if (nm.error[0])
        fail_msg("%s", nm.error);
    free(out);
}

/* --- main --- */

static int
group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    log_set_level(LOG_LEVEL_ERROR);
    snprintf(h.spool, sizeof(h.spool), "/tmp/postern-hook-XXXXXX");
    if (!mkdtemp(h.spool))
        return -1;
    h.loop = ev_loop_new(EVFLAG_AUTO);
    if (!h.loop)
        return -1;
    services_init(h.loop);
    if (pool_start(h.loop, 1) < 0)
        return -1;
    ev_check_init(&h.reaper, on_reap);
    ev_check_start(h.loop, &h.reaper);
    ev_unref(h.loop);
    h.listener = (struct listener_config){.port = 2525, .tls = TLS_MODE_NONE};
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    session_close_all("test_end");
    session_reap();
    pool_stop();
    ev_ref(h.loop);
    ev_check_stop(h.loop, &h.reaper);
    ev_loop_destroy(h.loop);
    hook_chains_free();
    rmdir(h.spool);
    return 0;
}

#define ENGINE_TEST(f)                                                         \
    cmocka_unit_test_setup_teardown(f, setup_engine, teardown_engine)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        ENGINE_TEST(test_chain_order_all_continue),
        ENGINE_TEST(test_chain_respects_hooks_mask),
        ENGINE_TEST(test_decision_stops_chain),
        ENGINE_TEST(test_bad_result_is_tempfail),
        ENGINE_TEST(test_reply_travels_with_result),
        ENGINE_TEST(test_reply_of_continue_dropped),
        ENGINE_TEST(test_reply_validation),
        ENGINE_TEST(test_reply_text_cut_at_400),
        cmocka_unit_test_setup_teardown(test_reply_hook_rendering,
                                        setup_reply_conn, teardown_reply_conn),
        cmocka_unit_test_setup_teardown(test_reply_lines, setup_reply_conn,
                                        teardown_reply_conn),
        cmocka_unit_test_setup_teardown(test_discard_where_allowed,
                                        setup_engine, teardown_engine),
        cmocka_unit_test_setup_teardown(test_chain_reply_to_wire,
                                        setup_reply_conn, teardown_reply_conn),
        ENGINE_TEST(test_pending_then_resume_continue),
        ENGINE_TEST(test_pending_then_resume_with_reply),
        ENGINE_TEST(test_resume_with_pending_is_tempfail),
        ENGINE_TEST(test_resume_with_bad_result_is_tempfail),
        ENGINE_TEST(test_early_resume),
        ENGINE_TEST(test_orphaned_context),
        ENGINE_TEST(test_release_idle_context),
        ENGINE_TEST(test_client_relay),
        ENGINE_TEST(test_notify_runs_all),
        ENGINE_TEST(test_notify_pending_detaches),
        ENGINE_TEST(test_hook_names),
        ENGINE_TEST(test_notes_list),
        cmocka_unit_test_setup_teardown(test_notes_on_session, setup_real,
                                        teardown_real),
        cmocka_unit_test_setup_teardown(test_orphan_on_session, setup_real,
                                        teardown_real),
    };
    return cmocka_run_group_tests_name("hook", tests, group_setup,
                                       group_teardown);
}
