/*
 * test_verdict.c - test plugin: a decision about the client made at
 * connect and acted on at MAIL, as a DNS blocklist check would.
 *
 * connect: notes "listed" in a session note; mail: rejects with
 * "550 5.7.1 listed at connect" while that note is there. A STARTTLS in
 * between must not forget it (RFC 3207 resets what the client said, not
 * what the server decided). No config.
 */
#include <stdlib.h>

#include <postern/postern.h>

#define NOTE_VERDICT "test_verdict.listed"

static postern_result
verdict_connect(postern_ctx *ctx, void *instance)
{
    static char listed[] = "listed";
    if (postern_note_set(ctx, POSTERN_NOTE_SESSION, NOTE_VERDICT, listed,
                         NULL) < 0)
        return POSTERN_TEMPFAIL;
    return POSTERN_CONTINUE;
}

static postern_result
verdict_mail(postern_ctx *ctx, void *instance)
{
    if (!postern_note_get(ctx, POSTERN_NOTE_SESSION, NOTE_VERDICT))
        return POSTERN_CONTINUE;
    postern_reply(ctx, 550, "5.7.1", "listed at connect");
    return POSTERN_REJECT;
}

POSTERN_MODULE_DEFINE = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "test_verdict",
    .description = "test plugin: a connect-time verdict enforced at MAIL",
    .handlers =
        {
            [POSTERN_HOOK_CONNECT] = verdict_connect,
            [POSTERN_HOOK_MAIL] = verdict_mail,
        },
};
