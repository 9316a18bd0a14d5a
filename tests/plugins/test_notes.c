/*
 * test_notes.c - test plugin: carries data between hooks in notes and
 * writes it into a header.
 *
 * At helo it keeps the HELO name in a session note, at mail the sender in
 * a transaction note; at message it adds
 *   X-Test-Notes: helo=<helo> mail=<sender> rcpts=<n>
 * built from those notes. A transaction note still present at the next
 * MAIL means the core did not free it at the end of the transaction: that
 * is logged as "test_notes stale transaction note", which the integration
 * tests look for. No config.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <postern/postern.h>

#define NOTE_HELO "test_notes.helo"
#define NOTE_MAIL "test_notes.mail"

static int
set_string_note(postern_ctx *ctx, postern_note_scope scope, const char *key,
                const char *value)
{
    char *copy = strdup(value ? value : "(null)");

    if (!copy)
        return -1;
    if (postern_note_set(ctx, scope, key, copy, free) < 0) {
        free(copy);
        return -1;
    }
    return 0;
}

static postern_result
notes_helo(postern_ctx *ctx, void *instance)
{
    if (set_string_note(ctx, POSTERN_NOTE_SESSION, NOTE_HELO,
                        postern_helo_name(ctx)) < 0)
        postern_log(ctx, POSTERN_LOG_ERROR, "test_notes: note_set failed");
    return POSTERN_CONTINUE;
}

static postern_result
notes_mail(postern_ctx *ctx, void *instance)
{
    if (postern_note_get(ctx, POSTERN_NOTE_TRANSACTION, NOTE_MAIL))
        postern_log(ctx, POSTERN_LOG_ERROR,
                    "test_notes stale transaction note");
    if (set_string_note(ctx, POSTERN_NOTE_TRANSACTION, NOTE_MAIL,
                        postern_mail_from(ctx)) < 0)
        postern_log(ctx, POSTERN_LOG_ERROR, "test_notes: note_set failed");
    return POSTERN_CONTINUE;
}

static postern_result
notes_message(postern_ctx *ctx, void *instance)
{
    const char *helo = postern_note_get(ctx, POSTERN_NOTE_SESSION, NOTE_HELO);
    const char *mail =
        postern_note_get(ctx, POSTERN_NOTE_TRANSACTION, NOTE_MAIL);
    char value[600];

    snprintf(value, sizeof value, "helo=%s mail=%s rcpts=%zu",
             helo ? helo : "(none)", mail ? mail : "(none)",
             postern_rcpt_count(ctx));
    if (postern_header_add(ctx, "X-Test-Notes", value) < 0) {
        postern_log(ctx, POSTERN_LOG_ERROR, "test_notes: header_add failed");
        return POSTERN_TEMPFAIL;
    }
    return POSTERN_CONTINUE;
}

POSTERN_MODULE_DEFINE = {
    .abi_version = POSTERN_ABI_VERSION,
    .name = "test_notes",
    .description = "test plugin: notes across hooks, header_add",
    .handlers =
        {
            [POSTERN_HOOK_HELO] = notes_helo,
            [POSTERN_HOOK_MAIL] = notes_mail,
            [POSTERN_HOOK_MESSAGE] = notes_message,
        },
};
