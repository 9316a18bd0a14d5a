/*
 * test_envelope.c - test plugin: envelope changes, discard, quarantine,
 * 5xx-and-close and multi-line replies (postern/message.h, ABI 1.3),
 * driven by the addresses a test sends. No config.
 *
 * helo    "discard.test": DISCARD (not possible there: a TEMPFAIL).
 * mail    rewrite@example.org: an invalid sender change (refused), then
 *         the sender becomes new-sender@example.net with BODY=8BITMIME;
 *         discard@example.org: DISCARD.
 * rcpt    discard@example.com: DISCARD; multi@example.com: 550, three
 *         lines; close@example.com: 554 5.7.1 + DISCONNECT;
 *         tempclose@example.com: DISCONNECT; add-bcc@example.com: adds
 *         bcc@elsewhere.org (not a local domain); drop-first@example.com:
 *         deletes the first recipient.
 * message by recipient: quarantine@example.com: quarantined (twice; the
 *         first reason stays); swap@example.com: deleted, swapped@
 *         example.com added (then SWAPPED@EXAMPLE.COM, a no-op);
 *         delete-all@example.com: every recipient deleted;
 *         discard-msg@example.com: DISCARD. Every message gets a header
 *         X-Envelope-Test with the return values seen.
 * store   tries every change (all refused there) and logs the results,
 *         with the quarantine reason and the discard flag.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <postern/postern.h>

#define NOTE_RESULTS "test_envelope.results"

/* Append "key=value " to the transaction's results note. */
static void
note_result(postern_ctx *ctx, const char *key, int value)
{
    const char *old =
        postern_note_get(ctx, POSTERN_NOTE_TRANSACTION, NOTE_RESULTS);
    char *text = NULL;
    if (asprintf(&text, "%s%s%s=%d", old ? old : "", old ? " " : "", key,
                 value) < 0)
        return;
    if (postern_note_set(ctx, POSTERN_NOTE_TRANSACTION, NOTE_RESULTS, text,
                         free) < 0)
        free(text);
}

static int
has_rcpt(postern_ctx *ctx, const char *addr)
{
    for (size_t i = 0; i < postern_rcpt_count(ctx); i++)
        if (strcasecmp(postern_rcpt_address(ctx, i), addr) == 0)
            return 1;
    return 0;
}

static postern_result
env_helo(postern_ctx *ctx, void *instance)
{
    const char *helo = postern_helo_name(ctx);
    return helo && strcmp(helo, "discard.test") == 0 ? POSTERN_DISCARD
                                                     : POSTERN_CONTINUE;
}

static postern_result
env_mail(postern_ctx *ctx, void *instance)
{
    const char *from = postern_mail_from(ctx);

    if (strcmp(from, "discard@example.org") == 0)
        return POSTERN_DISCARD;
    if (strcmp(from, "rewrite@example.org") == 0) {
        int bad = postern_mail_from_set(ctx, "not an address", NULL);
        int bad_params = postern_mail_from_set(ctx, "x@example.net", "=bad");
        int ok = postern_mail_from_set(ctx, "new-sender@example.net",
                                       "BODY=8BITMIME");
        note_result(ctx, "from_bad", bad);
        /* from is retired, not freed: still readable after the change */
        note_result(ctx, "old_from_kept",
                    strcmp(from, "rewrite@example.org") == 0);
        note_result(ctx, "from_bad_params", bad_params);
        note_result(ctx, "from_ok", ok);
    }
    return POSTERN_CONTINUE;
}

static postern_result
env_rcpt(postern_ctx *ctx, void *instance)
{
    const char *rcpt = postern_rcpt_current(ctx);

    if (strcmp(rcpt, "discard@example.com") == 0)
        return POSTERN_DISCARD;
    if (strcmp(rcpt, "multi@example.com") == 0) {
        postern_reply(ctx, 550, "5.7.1", "first line");
        postern_reply_line(ctx, "second line");
        postern_reply_line(ctx, "last line");
        return POSTERN_REJECT;
    }
    if (strcmp(rcpt, "close@example.com") == 0) {
        postern_reply(ctx, 554, "5.7.1", "go away");
        return POSTERN_DISCONNECT;
    }
    if (strcmp(rcpt, "tempclose@example.com") == 0)
        return POSTERN_DISCONNECT;
    if (strcmp(rcpt, "add-bcc@example.com") == 0)
        note_result(ctx, "add_bcc", postern_rcpt_add(ctx, "bcc@elsewhere.org"));
    if (strcmp(rcpt, "drop-first@example.com") == 0 &&
        postern_rcpt_count(ctx) > 0) {
        const char *first = postern_rcpt_address(ctx, 0);
        note_result(ctx, "drop_first", postern_rcpt_delete(ctx, first));
        /* deleted, not freed: the pointer is still good */
        postern_log(ctx, POSTERN_LOG_INFO, "dropped rcpt=%s",
                    postern_log_value(first));
    }
    return POSTERN_CONTINUE;
}

static postern_result
env_message(postern_ctx *ctx, void *instance)
{
    if (has_rcpt(ctx, "quarantine@example.com")) {
        note_result(ctx, "quarantine",
                    postern_message_quarantine(ctx, "test: suspicious\r\n"));
        note_result(ctx, "quarantine_again",
                    postern_message_quarantine(ctx, "second reason"));
    }
    if (has_rcpt(ctx, "swap@example.com")) {
        note_result(ctx, "swap_del",
                    postern_rcpt_delete(ctx, "swap@EXAMPLE.com"));
        note_result(ctx, "swap_del_again",
                    postern_rcpt_delete(ctx, "swap@example.com"));
        note_result(ctx, "swap_add",
                    postern_rcpt_add(ctx, "swapped@example.com"));
        note_result(ctx, "swap_dup",
                    postern_rcpt_add(ctx, "swapped@EXAMPLE.COM"));
        note_result(ctx, "swap_bad", postern_rcpt_add(ctx, "bad address"));
        note_result(ctx, "rcpts", (int)postern_rcpt_count(ctx));
    }
    if (has_rcpt(ctx, "delete-all@example.com")) {
        for (size_t n = postern_rcpt_count(ctx); n > 0; n--) {
            const char *addr = postern_rcpt_address(ctx, n - 1);
            int rc = postern_rcpt_delete(ctx, addr);
            postern_log(ctx, POSTERN_LOG_INFO, "deleted rc=%d rcpt=%s", rc,
                        postern_log_value(addr));
        }
    }
    if (has_rcpt(ctx, "discard-msg@example.com"))
        return POSTERN_DISCARD;
    const char *results =
        postern_note_get(ctx, POSTERN_NOTE_TRANSACTION, NOTE_RESULTS);
    postern_header_add(ctx, "X-Envelope-Test", results ? results : "none");
    return POSTERN_CONTINUE;
}

static postern_result
env_store(postern_ctx *ctx, void *instance)
{
    const char *q = postern_message_quarantined(ctx);
    postern_log(ctx, POSTERN_LOG_INFO,
                "store_changes=%d,%d,%d,%d quarantined=%s discarded=%d",
                postern_mail_from_set(ctx, "late@example.net", NULL),
                postern_rcpt_add(ctx, "late@example.com"),
                postern_rcpt_delete(ctx, postern_rcpt_address(ctx, 0)),
                postern_message_quarantine(ctx, "late"),
                postern_log_value(q ? q : "-"), postern_message_discarded(ctx));
    return POSTERN_CONTINUE;
}

POSTERN_MODULE_DEFINE = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "test_envelope",
    .description = "test plugin: envelope changes, discard, quarantine",
    .handlers =
        {
            [POSTERN_HOOK_HELO] = env_helo,
            [POSTERN_HOOK_MAIL] = env_mail,
            [POSTERN_HOOK_RCPT] = env_rcpt,
            [POSTERN_HOOK_MESSAGE] = env_message,
            [POSTERN_HOOK_STORE] = env_store,
        },
};
