/*
 * envelope_change.c - what include/postern/message.h lets a module change
 * about the envelope (sender, recipients) and what becomes of the message
 * (quarantine; discard is a hook result, see message_receipt.c).
 *
 * Changes apply to the session's transaction at once, so every later
 * reader (handlers, the store hook and its modules) sees them. They are
 * possible from the hook where that part of the envelope exists (mail for
 * the sender, rcpt for recipients) until the store hook starts. A string
 * replaced or deleted is retired, not freed: a pointer a module read
 * before the change stays valid until the transaction ends. Every change
 * is logged with the module instance that made it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "postern/message.h"

#include "hook.h"
#include "log.h"
#include "smtp_parse.h"
#include "smtp_session.h"
#include "transaction.h"

/* Sender changes per transaction: each retires two strings. */
#define ENVELOPE_FROM_CHANGES_MAX 64
/* Bytes of a quarantine reason (message.h). */
#define QUARANTINE_REASON_MAX 400

/* The transaction a change through ctx may touch: the context is live and
 * not orphaned, its hook is one where the change is possible, and the
 * store hook has not started. NULL otherwise. */
static struct session *
change_session(const postern_ctx *ctx, postern_hook first)
{
    struct session *s = hook_ctx_session(ctx);
    postern_hook hook = postern_ctx_hook(ctx);

    if (!s || !s->tx || s->tx->store_started)
        return NULL;
    if (hook < first || hook > POSTERN_HOOK_MESSAGE)
        return NULL; /* mail, rcpt, data, message are in this order */
    return s;
}

static void
log_change(const struct session *s, const postern_ctx *ctx, const char *what,
           const char *value)
{
    log_event(LOG_LEVEL_INFO, s->id, "envelope", "id=%s module=%s %s=%s",
              s->tx->id, postern_log_value(hook_ctx_log_instance(ctx)), what,
              postern_log_value(value));
}

/* Parse "<keyword><address> [params]" as the MAIL or RCPT command would:
 * the address must come back whole (no source route, nothing dropped). */
static int
parse_as_command(const char *keyword, const char *address, const char *params,
                 bool mail, struct smtp_path *path, char **arg)
{
    if (!address || (!mail && !*address))
        return -1;
    if (asprintf(arg, "%s<%s>%s%s", keyword, address,
                 params && *params ? " " : "", params ? params : "") < 0) {
        *arg = NULL;
        return -1;
    }
    smtp_path_status st = mail ? smtp_parse_mail_arg(*arg, strlen(*arg), path)
                               : smtp_parse_rcpt_arg(*arg, strlen(*arg), path);
    if (st != SMTP_PATH_OK || path->addr_len != strlen(address) ||
        memcmp(path->addr, address, path->addr_len) != 0)
        return -1;
    return 0;
}

/* Check every parameter's syntax; *smtputf8 says whether SMTPUTF8 is one. */
static int
params_check(const char *params, size_t len, bool *smtputf8)
{
    const char *cursor = params;
    struct smtp_param p;
    int rc;

    *smtputf8 = false;
    while ((rc = smtp_param_next(&cursor, params + len, &p)) == 1)
        if (smtp_param_is(&p, "SMTPUTF8"))
            *smtputf8 = true;
    return rc;
}

int
postern_mail_from_set(postern_ctx *ctx, const char *address, const char *params)
{
    struct session *s = change_session(ctx, POSTERN_HOOK_MAIL);
    struct smtp_path path;
    char *arg = NULL, *from = NULL, *raw = NULL;
    int rc = -1;

    if (!s || s->tx->from_changes >= ENVELOPE_FROM_CHANGES_MAX)
        return -1;
    struct transaction *tx = s->tx;
    bool smtputf8 = tx->smtputf8;
    if (parse_as_command("FROM:", address, params, true, &path, &arg) < 0)
        goto out;
    if (params && params_check(path.params, path.params_len, &smtputf8) < 0)
        goto out;
    if (path.non_ascii && !smtputf8)
        goto out; /* a UTF-8 address needs SMTPUTF8 (RFC 6531) */
    if (!(from = strdup(address)))
        goto out;
    if (params && !(raw = strndup(path.params, path.params_len)))
        goto out;
    /* Room for the strings replaced, before anything changes. */
    if (transaction_retire_room(tx, 2) < 0)
        goto out;
    transaction_retire(tx, tx->mail_from);
    tx->mail_from = from;
    from = NULL;
    if (raw) {
        transaction_retire(tx, tx->mail_params);
        tx->mail_params = raw;
        tx->mail_params_packed = false; /* session_api.c splits it anew */
        tx->smtputf8 = smtputf8;
        raw = NULL;
    }
    tx->from_changes++;
    log_change(s, ctx, "mail_from", address);
    rc = 0;
out:
    free(arg);
    free(from);
    free(raw);
    return rc;
}

int
postern_rcpt_add(postern_ctx *ctx, const char *address)
{
    struct session *s = change_session(ctx, POSTERN_HOOK_RCPT);
    struct smtp_path path;
    char *arg = NULL;
    int rc = -1;

    /* Bounded like the client's recipients: limits.recipients more. */
    if (!s || s->tx->rcpts_added >= s->cfg->limits.recipients)
        return -1;
    if (parse_as_command("TO:", address, NULL, false, &path, &arg) < 0 ||
        (path.non_ascii && !s->tx->smtputf8))
        goto out;
    rc = transaction_add_rcpt(s->tx, address, strlen(address));
    if (rc == 0) {
        s->tx->rcpts_added++;
        log_change(s, ctx, "rcpt_added", address);
    }
    rc = rc < 0 ? -1 : 0; /* 1: already there, a no-op */
out:
    free(arg);
    return rc;
}

int
postern_rcpt_delete(postern_ctx *ctx, const char *address)
{
    struct session *s = change_session(ctx, POSTERN_HOOK_RCPT);

    if (!s || !address)
        return -1;
    struct transaction *tx = s->tx;
    /* Logged before: address may be the very string deleted. */
    char *copy = strdup(address);
    if (!copy || transaction_delete_rcpt(tx, copy) < 0) {
        free(copy);
        return -1;
    }
    tx->rcpts_deleted = true;
    log_change(s, ctx, "rcpt_deleted", copy);
    free(copy);
    if (tx->n_rcpts == 0 && !tx->discarded) {
        /* Nobody is left to deliver to: the message will be discarded. */
        const char *by = hook_ctx_log_instance(ctx);
        free(tx->discard_by);
        tx->discard_by = by ? strdup(by) : NULL;
    }
    return 0;
}

int
postern_message_quarantine(postern_ctx *ctx, const char *reason)
{
    struct session *s = change_session(ctx, POSTERN_HOOK_MAIL);

    if (!s || !reason)
        return -1;
    struct transaction *tx = s->tx;
    if (tx->quarantine)
        return 0; /* the first reason stays */
    size_t len = strlen(reason);
    if (len > QUARANTINE_REASON_MAX) {
        len = QUARANTINE_REASON_MAX;
        /* Never cut a UTF-8 sequence in two. */
        while (len > 0 && ((unsigned char)reason[len] & 0xc0) == 0x80)
            len--;
    }
    if (!(tx->quarantine = strndup(reason, len)))
        return -1;
    for (char *p = tx->quarantine; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    log_change(s, ctx, "quarantine", tx->quarantine);
    return 0;
}

const char *
postern_message_quarantined(const postern_ctx *ctx)
{
    const struct session *s = hook_ctx_session(ctx);
    return s && s->tx ? s->tx->quarantine : NULL;
}

int
postern_message_discarded(const postern_ctx *ctx)
{
    const struct session *s = hook_ctx_session(ctx);
    return s && s->tx && s->tx->discarded;
}
