/*
 * message_receipt.c - DATA and BDAT (see message_receipt.h).
 *
 * DATA: data hook, spool file, 354, then the dot-stuffed stream until
 * <CRLF>.<CRLF>. BDAT: data hook at the first chunk, spool file, then each
 * chunk's bytes, counted exactly. Both feed one smtp_data receiver (raw
 * mode for BDAT), so every content check applies to both, and both end in
 * receipt_complete(): spool written out, checks, message hook, store hook.
 *
 * Spool I/O runs on the pool: while the spool has no room, or the file is
 * being created, or the last bytes are being written, the session waits
 * (SESSION_WAIT_SPOOL) and reads the socket no further than its input
 * buffer: back-pressure per session, and the loop never waits on a disk.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "message.h"
#include "message_receipt.h"
#include "smtp_reply.h"
#include "smtp_session.h"
#include "spool.h"
#include "transaction.h"

/* --- the end of a message: message hook, then store hook --- */

/* One line for the message's outcome, which is also the transaction's. */
static void
log_message(struct session *s, const char *event, int code)
{
    struct transaction *tx = s->tx;
    transaction_outcome(tx, code);
    log_event(LOG_LEVEL_INFO, s->id, event,
              "id=%s from=%s rcpts=%zu size=%" PRIu64 " code=%d", tx->id,
              postern_log_value(tx->mail_from), tx->n_rcpts, message_size(tx),
              code);
}

/* The reply for the message is queued: end the transaction. */
static void
message_finished(struct session *s)
{
    transaction_end(s);
    session_set_state(s, SESSION_HELO);
    if (session_draining()) {
        /* Shutting down: goodbye right after the message's reply, in the
         * same write (RFC 5321 3.8). */
        smtp_reply(&s->conn, 421, "4.3.2",
                   "%s Service shutting down, closing channel",
                   session_hostname(s));
        session_quit(s);
    }
}

/* The message is dropped (POSTERN_DISCARD, or every recipient deleted):
 * the client is told it was accepted, nothing is stored, one log line
 * says who dropped it. reply: the discarding handler's (a 2xx counts). */
static void
message_discarded(struct session *s, const struct hook_reply *reply)
{
    struct transaction *tx = s->tx;
    char text[64];

    snprintf(text, sizeof(text), "Ok: accepted as %s", tx->id);
    smtp_reply_hook(&s->conn, reply, 250, "2.0.0", text);
    transaction_outcome(tx, smtp_reply_hook_code(reply, 250));
    log_event(LOG_LEVEL_INFO, s->id, "discarded",
              "id=%s from=%s rcpts=%zu size=%" PRIu64
              " code=250 module=%s hook=%s reason=%s",
              tx->id, postern_log_value(tx->mail_from), tx->n_rcpts,
              message_size(tx), postern_log_value(tx->discard_by),
              tx->discarded ? postern_hook_name(tx->discard_hook) : "-",
              tx->discarded ? "discard" : "recipients_deleted");
    message_finished(s);
}

/* Who stored the message, and its id there: the "queued as ID" of the
 * store's reply (what store modules answer), else the transaction id the
 * core's default reply names. */
static void
store_id_note(struct session *s, const struct hook_reply *reply)
{
    static const char mark[] = "queued as ";
    const char *id = s->tx->id;
    size_t len = strlen(id);
    const char *at = reply && reply->text[0] ? strstr(reply->text, mark) : NULL;

    if (reply && reply->text[0] && !at) {
        id = NULL; /* the store said no id */
        len = 0;
    } else if (at) {
        id = at + sizeof(mark) - 1;
        len = strcspn(id, " ,;");
    }
    transaction_stored(s->tx, hook_ctx_decider(s->ctx), id, len);
}

static void
on_store_done(struct session *s, postern_result r,
              const struct hook_reply *reply)
{
    switch (r) {
    case POSTERN_ACCEPT: {
        char text[64];
        snprintf(text, sizeof(text), "Ok: queued as %s", s->tx->id);
        smtp_reply_hook(&s->conn, reply, 250, "2.0.0", text);
        store_id_note(s, reply);
        log_message(s, s->tx->quarantine ? "quarantined" : "accepted",
                    smtp_reply_hook_code(reply, 250));
        break;
    }
    case POSTERN_DISCARD:
        transaction_discard(s, POSTERN_HOOK_STORE);
        message_discarded(s, reply);
        return;
    case POSTERN_CONTINUE: /* nobody stored it: the sender must retry */
        smtp_reply(&s->conn, 451, "4.3.0", "Error: message not stored");
        log_message(s, "not_stored", 451);
        break;
    case POSTERN_REJECT:
        smtp_reply_hook(&s->conn, reply, 554, "5.3.0",
                        "Error: message refused by storage");
        log_message(s, "rejected", smtp_reply_hook_code(reply, 554));
        break;
    case POSTERN_TEMPFAIL:
        smtp_reply_hook(&s->conn, reply, 451, "4.3.0",
                        "Error: storage temporarily unavailable");
        log_message(s, "tempfail", smtp_reply_hook_code(reply, 451));
        break;
    default: {
        int code = session_reply_disconnect(s, reply);
        log_message(s, code / 100 == 5 ? "rejected" : "tempfail", code);
        break;
    }
    }
    message_finished(s);
}

static void
on_message_done(struct session *s, postern_result r,
                const struct hook_reply *reply)
{
    if (r == POSTERN_DISCARD)
        transaction_discard(s, POSTERN_HOOK_MESSAGE);
    if (r == POSTERN_DISCARD ||
        ((r == POSTERN_CONTINUE || r == POSTERN_ACCEPT) &&
         transaction_dropped(s->tx))) {
        message_discarded(s, r == POSTERN_DISCARD ? reply : NULL);
        return;
    }
    if (r == POSTERN_CONTINUE || r == POSTERN_ACCEPT) {
        /* From here on the envelope and the message are final. */
        s->tx->store_started = true;
        session_hook_run(s, POSTERN_HOOK_STORE, on_store_done);
        return;
    }
    if (r == POSTERN_REJECT) {
        smtp_reply_hook(&s->conn, reply, 550, "5.7.1",
                        "Error: message content rejected");
        log_message(s, "rejected", smtp_reply_hook_code(reply, 550));
    } else if (r == POSTERN_TEMPFAIL) {
        smtp_reply_hook(&s->conn, reply, 451, "4.7.1",
                        "Error: message temporarily rejected");
        log_message(s, "tempfail", smtp_reply_hook_code(reply, 451));
    } else {
        int code = session_reply_disconnect(s, reply);
        log_message(s, code / 100 == 5 ? "rejected" : "tempfail", code);
    }
    message_finished(s);
}

/* All body bytes are in the spool: check what the receiver flagged, then
 * run the hooks. */
static void
receipt_check(struct session *s)
{
    struct transaction *tx = s->tx;
    const struct smtp_data_rx *rx = &tx->rx;

    tx->body_size = spool_size(tx->spool);
    if (tx->data_started_ms > 0)
        tx->data_ms = transaction_clock_ms() - tx->data_started_ms;
    if (rx->too_big) {
        smtp_reply(&s->conn, 552, "5.3.4",
                   "Error: message size exceeds fixed limit");
        log_message(s, "too_big", 552);
    } else if (rx->header_too_big) {
        smtp_reply(&s->conn, 552, "5.3.4",
                   "Error: message header size exceeds limit");
        log_message(s, "header_too_big", 552);
    } else if (rx->bare_line_end) {
        smtp_reply(&s->conn, 550, "5.6.0",
                   "Error: bare CR or LF in message; lines must end "
                   "with CRLF");
        log_message(s, "bare_line_end", 550);
    } else if (spool_error(tx->spool)) {
        smtp_reply(&s->conn, 451, "4.3.0", "Error: local spool failure");
        transaction_outcome(tx, 451);
        log_event(LOG_LEVEL_ERROR, s->id, "spool_error", "dir=%s errno=%s",
                  postern_log_value(s->cfg->spool_dir),
                  postern_log_value(strerror(spool_error(tx->spool))));
    } else if (message_add_received(s) < 0) {
        smtp_reply(&s->conn, 451, "4.3.0", "Error: out of memory");
        transaction_outcome(tx, 451);
    } else if (transaction_dropped(tx)) {
        /* Dropped before the end of data: no content check, no store. */
        message_discarded(s, NULL);
        return;
    } else {
        session_hook_run(s, POSTERN_HOOK_MESSAGE, on_message_done);
        return;
    }
    message_finished(s);
}

static void
on_spool_finished(void *arg)
{
    struct session *s = arg;
    s->wait = SESSION_WAIT_NONE;
    receipt_check(s);
    session_continue(s);
}

/* The last byte of the message was received. */
static void
receipt_complete(struct session *s)
{
    s->transactions++; /* a message was sent, whatever becomes of it */
    if (spool_finish(s->tx->spool, on_spool_finished, s) == 0) {
        session_wait_for(s, SESSION_WAIT_SPOOL);
        return;
    }
    receipt_check(s);
}

/* --- the spool and the receiver --- */

static int
spool_sink(void *arg, const char *buf, size_t len)
{
    return spool_write(arg, buf, len);
}

/* A block write finished: go on if we were waiting for room. */
static void
on_spool_room(void *arg)
{
    struct session *s = arg;
    if (s->wait == SESSION_WAIT_SPOOL)
        session_resume(s);
}

/* How many input bytes may be fed now: the receiver's output must fit in
 * the spool's room. The output of one feed is its input, plus what an
 * earlier feed held back, and normalising a bare line end doubles it at
 * most. */
static size_t
receipt_feed_limit(const struct session *s, size_t avail)
{
    size_t room = spool_room(s->tx->spool);
    /* held bytes, doubled at most when normalised */
    room = room > 2 * SMTP_DATA_MAX_HELD ? room - 2 * SMTP_DATA_MAX_HELD : 0;
    if (s->cfg->line_endings == SMTP_DATA_NORMALISE)
        room /= 2;
    return avail < room ? avail : room;
}

static void chunk_begin(struct session *s);
static void chunk_discard(struct session *s, uint64_t size, int code,
                          const char *enhanced, const char *text);

/* Receiving could not start: DATA is answered now, a BDAT chunk once its
 * bytes are read. The transaction stays, as after a refused DATA. */
static void
receipt_refuse(struct session *s, const char *text)
{
    struct transaction *tx = s->tx;

    spool_free(tx->spool);
    tx->spool = NULL;
    if (tx->bdat) {
        tx->bdat = false;
        chunk_discard(s, s->chunk.size, 451, "4.3.0", text);
    } else {
        smtp_reply(&s->conn, 451, "4.3.0", "%s", text);
    }
}

/* Start receiving into the spool. */
static void
receipt_start(struct session *s)
{
    struct transaction *tx = s->tx;
    const struct limits_config *lim = &s->cfg->limits;

    spool_on_wake(tx->spool, on_spool_room, s);
    if (tx->bdat) {
        smtp_data_init_raw(&tx->rx, s->cfg->line_endings, lim->message_size,
                           lim->header_size, spool_sink, tx->spool);
        chunk_begin(s);
        return;
    }
    smtp_data_init(&tx->rx, s->cfg->line_endings, lim->message_size,
                   lim->header_size, spool_sink, tx->spool);
    session_set_state(s, SESSION_DATA);
    smtp_reply(&s->conn, 354, NULL, "End data with <CR><LF>.<CR><LF>");
    session_touch(s);
}

/* The data hook said yes: get a spool (no I/O: the file, if the message
 * needs one, is made by its first block write), then start. */
static void
receipt_open(struct session *s)
{
    struct transaction *tx = s->tx;

    tx->spool = spool_open(s->cfg->spool_dir);
    if (!tx->spool) {
        receipt_refuse(s, "Error: out of memory");
        return;
    }
    receipt_start(s);
}

/* --- DATA --- */

static void
on_data_done(struct session *s, postern_result r,
             const struct hook_reply *reply)
{
    if (r == POSTERN_DISCARD)
        transaction_discard(s, POSTERN_HOOK_DATA); /* received, dropped */
    if (r == POSTERN_CONTINUE || r == POSTERN_ACCEPT || r == POSTERN_DISCARD) {
        receipt_open(s);
    } else if (r == POSTERN_REJECT) {
        smtp_reply_hook(&s->conn, reply, 554, "5.7.1", "Error: data rejected");
        transaction_outcome(s->tx, smtp_reply_hook_code(reply, 554));
        transaction_end(s);
    } else if (r == POSTERN_TEMPFAIL) {
        smtp_reply_hook(&s->conn, reply, 451, "4.7.1",
                        "Error: data temporarily rejected");
        transaction_outcome(s->tx, smtp_reply_hook_code(reply, 451));
        transaction_end(s);
    } else {
        transaction_outcome(s->tx, session_reply_disconnect(s, reply));
    }
}

/* Common sequence checks of DATA and BDAT; replies on failure. */
static bool
data_sequence_ok(struct session *s)
{
    if (!s->tx || s->state == SESSION_READY) {
        smtp_reply(&s->conn, 503, "5.5.1", "Error: need MAIL command");
        session_error(s);
        return false;
    }
    /* Recipients deleted by modules were accepted: the message goes on
     * (and is discarded at its end). */
    if (s->tx->n_rcpts == 0 && !s->tx->rcpts_deleted) {
        smtp_reply(&s->conn, 554, "5.5.1", "Error: no valid recipients");
        return false;
    }
    return true;
}

void
receipt_data(struct session *s, const struct smtp_command *cmd)
{
    if (cmd->arg_len > 0) {
        smtp_reply(&s->conn, 501, "5.5.4", "Syntax: DATA");
        session_error(s);
        return;
    }
    if (!data_sequence_ok(s))
        return;
    if (s->tx->bdat) {
        smtp_reply(&s->conn, 503, "5.5.1", "Error: DATA after BDAT");
        session_error(s);
        return;
    }
    s->tx->data_started_ms = transaction_clock_ms();
    session_hook_run(s, POSTERN_HOOK_DATA, on_data_done);
}

bool
receipt_data_step(struct session *s)
{
    struct conn *c = &s->conn;
    size_t avail = c->in_end - c->in_start, consumed;

    if (avail == 0)
        return false;
    size_t len = receipt_feed_limit(s, avail);
    if (len == 0) {
        session_wait_for(s, SESSION_WAIT_SPOOL); /* until on_spool_room */
        return false;
    }
    smtp_data_status st =
        smtp_data_feed(&s->tx->rx, c->in + c->in_start, len, &consumed);
    conn_consume(c, consumed);
    if (st == SMTP_DATA_NEED_MORE)
        return len < avail; /* more is buffered: go on (or wait) */
    receipt_complete(s);
    return true;
}

/* --- BDAT (RFC 3030) --- */

static void
chunk_begin(struct session *s)
{
    s->chunk.discard = false;
    s->chunk.remaining = s->chunk.size;
    session_set_state(s, SESSION_BDAT);
    session_touch(s);
}

/* Read a chunk only to stay in step with the client, then reply with
 * this error. */
static void
chunk_discard(struct session *s, uint64_t size, int code, const char *enhanced,
              const char *text)
{
    struct bdat_chunk *ch = &s->chunk;

    ch->size = ch->remaining = size;
    ch->discard = true;
    if (ch->error)
        hook_reply_clear(ch->error);
    else
        ch->error = calloc(1, sizeof(*ch->error)); /* NULL: 451 at the end */
    if (ch->error) {
        ch->error->code = code;
        snprintf(ch->error->enhanced, sizeof(ch->error->enhanced), "%s",
                 enhanced);
        snprintf(ch->error->text, sizeof(ch->error->text), "%s", text);
    }
    if (s->state != SESSION_BDAT)
        s->chunk_return = s->state;
    session_set_state(s, SESSION_BDAT);
    session_touch(s);
}

static void
chunk_done(struct session *s)
{
    struct bdat_chunk *ch = &s->chunk;
    struct transaction *tx = s->tx;

    if (ch->discard) {
        struct hook_reply *e = ch->error;
        if (tx)
            transaction_outcome(tx, e ? e->code : 451);
        if (e) {
            smtp_reply_hook(&s->conn, e, e->code, e->enhanced, e->text);
            hook_reply_clear(e);
            free(e);
            ch->error = NULL;
        } else {
            smtp_reply(&s->conn, 451, "4.3.0", "Error: out of memory");
        }
        if (tx) {
            transaction_end(s);
            session_set_state(s, SESSION_HELO);
        } else {
            /* BDAT outside a transaction changes nothing. */
            session_set_state(s, s->chunk_return);
        }
        session_touch(s);
        return;
    }
    session_set_state(s, SESSION_RCPT);
    session_touch(s);
    if (tx->rx.too_big) {
        /* Refused at once: the client need not send the other chunks. */
        smtp_reply(&s->conn, 552, "5.3.4",
                   "Error: message size exceeds fixed limit");
        transaction_outcome(tx, 552);
        transaction_end(s);
        return;
    }
    if (!ch->last) {
        smtp_reply(&s->conn, 250, "2.0.0", "%" PRIu64 " octets received",
                   ch->size);
        return;
    }
    smtp_data_end_raw(&tx->rx);
    receipt_complete(s);
}

bool
receipt_chunk_step(struct session *s)
{
    struct conn *c = &s->conn;
    struct bdat_chunk *ch = &s->chunk;
    size_t avail = c->in_end - c->in_start, consumed;

    if (ch->remaining > 0 && avail == 0)
        return false;
    size_t take = avail < ch->remaining ? avail : (size_t)ch->remaining;
    if (!ch->discard && take > 0) {
        take = receipt_feed_limit(s, take);
        if (take == 0) {
            session_wait_for(s, SESSION_WAIT_SPOOL); /* until on_spool_room */
            return false;
        }
        smtp_data_feed(&s->tx->rx, c->in + c->in_start, take, &consumed);
    }
    conn_consume(c, take);
    ch->remaining -= take;
    if (ch->remaining > 0)
        return take < avail; /* more is buffered: go on (or wait) */
    chunk_done(s);
    return true;
}

static void
on_bdat_data_done(struct session *s, postern_result r,
                  const struct hook_reply *reply)
{
    uint64_t size = s->chunk.size;

    if (r == POSTERN_DISCARD)
        transaction_discard(s, POSTERN_HOOK_DATA); /* received, dropped */
    if (r == POSTERN_CONTINUE || r == POSTERN_ACCEPT || r == POSTERN_DISCARD) {
        s->tx->bdat = true;
        receipt_open(s);
    } else if (r == POSTERN_REJECT) {
        chunk_discard(s, size, reply->code / 100 == 5 ? reply->code : 554,
                      reply->enhanced[0] == '5' ? reply->enhanced : "5.7.1",
                      reply->text[0] ? reply->text : "Error: data rejected");
    } else if (r == POSTERN_TEMPFAIL) {
        chunk_discard(s, size, reply->code / 100 == 4 ? reply->code : 451,
                      reply->enhanced[0] == '4' ? reply->enhanced : "4.7.1",
                      reply->text[0] ? reply->text
                                     : "Error: data temporarily rejected");
    }
    if (r == POSTERN_REJECT || r == POSTERN_TEMPFAIL) {
        /* The module's further lines, owed with the reply. */
        struct hook_reply lines;
        if (s->chunk.error && reply->n_more &&
            hook_reply_copy(&lines, reply) == 0) {
            s->chunk.error->more = lines.more;
            s->chunk.error->more_len = lines.more_len;
            s->chunk.error->n_more = lines.n_more;
        }
    } else if (r != POSTERN_CONTINUE && r != POSTERN_ACCEPT &&
               r != POSTERN_DISCARD) {
        session_reply_disconnect(s, reply);
    }
}

void
receipt_bdat(struct session *s, const struct smtp_command *cmd)
{
    unsigned long long size;
    bool last;

    if (!smtp_parse_bdat_arg(cmd->arg, cmd->arg_len, &size, &last)) {
        /* Without a size the chunk cannot be skipped: its bytes would be
         * read as commands. The stream cannot be resynchronised. */
        smtp_reply(&s->conn, 501, "5.5.4", "Syntax: BDAT size [LAST]");
        smtp_reply(&s->conn, 421, "4.7.0",
                   "%s Error: lost synchronisation, closing",
                   session_hostname(s));
        session_quit(s);
        return;
    }
    if (!s->tx || s->state == SESSION_READY) {
        chunk_discard(s, size, 503, "5.5.1", "Error: need MAIL command");
        return;
    }
    if (s->tx->n_rcpts == 0 && !s->tx->rcpts_deleted) {
        chunk_discard(s, size, 554, "5.5.1", "Error: no valid recipients");
        return;
    }
    s->chunk.size = size;
    s->chunk.last = last;
    if (s->tx->bdat) {
        chunk_begin(s);
        return;
    }
    s->tx->data_started_ms = transaction_clock_ms();
    session_hook_run(s, POSTERN_HOOK_DATA, on_bdat_data_done);
}
