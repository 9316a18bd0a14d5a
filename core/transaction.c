/*
 * transaction.c - transactions and their recipient set.
 *
 * Recipients are de-duplicated through a small open-addressing hash set
 * (linear probing) of the recipient strings, so a transaction with
 * limits.recipients raised to 100k still adds each recipient in constant
 * time. A module may delete recipients (postern_rcpt_delete()): the set
 * drops the entry by backward shifting (no tombstones), the array closes
 * the gap, and the string is retired, not freed, so a pointer a module
 * read before stays valid until the transaction ends.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "id.h"
#include "log.h"
#include "message.h"
#include "message_content.h"
#include "notes.h"
#include "smtp_session.h"
#include "spool.h"
#include "transaction.h"

struct rcpt_set {
    char **slots; /* a recipient string of tx->rcpts; NULL is empty */
    size_t cap;   /* a power of two */
};

double
transaction_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

struct transaction *
transaction_new(void)
{
    struct transaction *tx = calloc(1, sizeof(*tx));
    if (tx) {
        id_generate(tx->id);
        tx->last_stage = POSTERN_HOOK_MAIL;
        tx->started_ms = transaction_clock_ms();
    }
    return tx;
}

void
transaction_free(struct transaction *tx)
{
    if (!tx)
        return;
    free(tx->mail_from);
    free(tx->mail_params);
    for (size_t i = 0; i < tx->n_rcpts; i++)
        free(tx->rcpts[i]);
    free(tx->rcpts);
    if (tx->rcpt_set)
        free(tx->rcpt_set->slots);
    free(tx->rcpt_set);
    notes_free(&tx->notes);
    spool_free(tx->spool);
    free(tx->headers);
    free(tx->received);
    for (size_t i = 0; i < tx->n_retired; i++)
        free(tx->retired[i]);
    free(tx->retired);
    free(tx->discard_by);
    free(tx->quarantine);
    free(tx->stored_id);
    free(tx->stored_by);
    message_content_free(tx->content);
    free(tx);
}

void
transaction_outcome(struct transaction *tx, int code)
{
    if (tx)
        tx->end_code = code;
}

void
transaction_stored(struct transaction *tx, const char *by, const char *id,
                   size_t id_len)
{
    free(tx->stored_by);
    free(tx->stored_id);
    tx->stored_by = by ? strdup(by) : NULL;
    tx->stored_id = id ? strndup(id, id_len) : NULL;
}

static const char *
transaction_result(const struct transaction *tx)
{
    if (tx->end_code == 0)
        return "aborted";
    if (tx->end_code / 100 == 5)
        return "rejected";
    if (tx->end_code / 100 == 4)
        return "tempfailed";
    return transaction_dropped(tx) ? "discarded" : "accepted";
}

/*
 * The last line of every transaction, whatever became of it: one grep by
 * the session or transaction id follows a message. Times in milliseconds:
 * each hook's chain (ms_data: from DATA or the first BDAT to the last
 * byte spooled, its hook included), and MAIL to now.
 */
void
transaction_log_end(const struct session *s)
{
    const struct transaction *tx = s->tx;
    double now = transaction_clock_ms();
    uint64_t size = message_size(tx);
    double data_ms = tx->data_ms;

    if (tx->body_size == 0 && tx->spool)
        size = tx->rx.size; /* ended while the body came */
    if (data_ms == 0 && tx->data_started_ms > 0)
        data_ms = now - tx->data_started_ms;
    if (data_ms == 0)
        data_ms = tx->hook_ms[POSTERN_HOOK_DATA];
    char code[8] = "-";
    if (tx->end_code)
        snprintf(code, sizeof(code), "%d", tx->end_code);
    log_event(LOG_LEVEL_INFO, s->id, "transaction",
              "id=%s from=%s rcpts=%zu rcpts_refused=%u size=%" PRIu64
              " result=%s code=%s stage=%s reason=%s store=%s stored_id=%s"
              " ms_mail=%.1f ms_rcpt=%.1f ms_data=%.1f ms_message=%.1f"
              " ms_store=%.1f ms_total=%.1f",
              tx->id, postern_log_value(tx->mail_from), tx->n_rcpts,
              tx->rcpts_refused, size, transaction_result(tx), code,
              postern_hook_name(tx->last_stage),
              tx->end_code ? "-" : (tx->end_reason ? tx->end_reason : "-"),
              postern_log_value(tx->stored_by),
              postern_log_value(tx->stored_id), tx->hook_ms[POSTERN_HOOK_MAIL],
              tx->hook_ms[POSTERN_HOOK_RCPT], data_ms,
              tx->hook_ms[POSTERN_HOOK_MESSAGE],
              tx->hook_ms[POSTERN_HOOK_STORE], now - tx->started_ms);
}

void
transaction_abort(struct session *s, const char *why)
{
    if (s->tx && s->tx->end_code == 0)
        s->tx->end_reason = why;
    transaction_end(s);
}

void
transaction_end(struct session *s)
{
    if (!s->tx)
        return;
    transaction_log_end(s);
    session_notify(s, POSTERN_HOOK_RESET);
    transaction_free(s->tx);
    s->tx = NULL;
    if (s->state == SESSION_MAIL || s->state == SESSION_RCPT ||
        s->state == SESSION_DATA || s->state == SESSION_BDAT)
        session_set_state(s, SESSION_HELO);
}

/* --- the recipient set --- */

/* Where the case-insensitive part starts: after the last '@' (the whole
 * address for <Postmaster>, which has none). */
static size_t
rcpt_local_len(const char *addr, size_t len)
{
    const char *at = memrchr(addr, '@', len);
    return at ? (size_t)(at - addr) : 0;
}

static uint64_t
rcpt_hash(const char *addr, size_t len)
{
    size_t local = rcpt_local_len(addr, len);
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)addr[i];
        h = (h ^ (i < local ? c : (unsigned char)tolower(c))) *
            0x100000001b3ULL;
    }
    return h;
}

static bool
rcpt_same(const char *a, const char *b, size_t len)
{
    size_t local = rcpt_local_len(b, len);
    return strlen(a) == len && memcmp(a, b, local) == 0 &&
           strncasecmp(a + local, b + local, len - local) == 0;
}

/* The slot for addr: where it is, or the empty slot where it would go. */
static char **
rcpt_set_find(const struct transaction *tx, const char *addr, size_t len)
{
    const struct rcpt_set *set = tx->rcpt_set;
    size_t mask = set->cap - 1;
    for (size_t i = rcpt_hash(addr, len) & mask;; i = (i + 1) & mask) {
        char **slot = &set->slots[i];
        if (*slot == NULL || rcpt_same(*slot, addr, len))
            return slot;
    }
}

/* Empty the slot at i, then move later entries of its probe run back so
 * every entry stays reachable from its home slot. */
static void
rcpt_set_remove(struct rcpt_set *set, size_t i)
{
    size_t mask = set->cap - 1;
    for (size_t j = (i + 1) & mask; set->slots[j]; j = (j + 1) & mask) {
        size_t home = rcpt_hash(set->slots[j], strlen(set->slots[j])) & mask;
        /* Entry j may fill the hole at i unless its home lies in (i, j]. */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            set->slots[i] = set->slots[j];
            i = j;
        }
    }
    set->slots[i] = NULL;
}

/* Keep the load under one half. */
static int
rcpt_set_grow(struct transaction *tx)
{
    struct rcpt_set *set = tx->rcpt_set;
    if (!set) {
        if (!(set = tx->rcpt_set = calloc(1, sizeof(*set))))
            return -1;
    }
    if ((tx->n_rcpts + 1) * 2 <= set->cap)
        return 0;
    size_t cap = set->cap ? set->cap * 2 : 16;
    char **slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return -1;
    free(set->slots);
    set->slots = slots;
    set->cap = cap;
    for (size_t i = 0; i < tx->n_rcpts; i++)
        *rcpt_set_find(tx, tx->rcpts[i], strlen(tx->rcpts[i])) = tx->rcpts[i];
    return 0;
}

int
transaction_add_rcpt(struct transaction *tx, const char *addr, size_t len)
{
    if (rcpt_set_grow(tx) < 0)
        return -1;
    char **slot = rcpt_set_find(tx, addr, len);
    if (*slot)
        return 1;
    if (tx->n_rcpts == tx->cap_rcpts) {
        size_t cap = tx->cap_rcpts ? tx->cap_rcpts * 2 : 4;
        char **grown = realloc(tx->rcpts, cap * sizeof(*grown));
        if (!grown)
            return -1;
        tx->rcpts = grown;
        tx->cap_rcpts = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return -1;
    memcpy(copy, addr, len);
    copy[len] = '\0';
    tx->rcpts[tx->n_rcpts++] = copy;
    *slot = copy;
    return 0;
}

void
transaction_discard(struct session *s, postern_hook hook)
{
    struct transaction *tx = s->tx;
    if (!tx || tx->discarded)
        return; /* the first discard is the one logged */
    const char *by = hook_ctx_decider(s->ctx);
    tx->discarded = true;
    tx->discard_hook = hook;
    free(tx->discard_by);
    tx->discard_by = by ? strdup(by) : NULL;
}

bool
transaction_dropped(const struct transaction *tx)
{
    return tx->discarded || (tx->rcpts_deleted && tx->n_rcpts == 0);
}

int
transaction_retire_room(struct transaction *tx, size_t n)
{
    if (tx->cap_retired - tx->n_retired >= n)
        return 0;
    size_t cap = tx->cap_retired ? tx->cap_retired : 8;
    while (cap - tx->n_retired < n)
        cap *= 2;
    char **grown = realloc(tx->retired, cap * sizeof(*grown));
    if (!grown)
        return -1;
    tx->retired = grown;
    tx->cap_retired = cap;
    return 0;
}

void
transaction_retire(struct transaction *tx, char *str)
{
    tx->retired[tx->n_retired++] = str;
}

int
transaction_delete_rcpt(struct transaction *tx, const char *addr)
{
    size_t len = strlen(addr);
    if (!tx->rcpt_set || !tx->rcpt_set->cap)
        return -1;
    char **slot = rcpt_set_find(tx, addr, len);
    char *victim = *slot;
    if (!victim)
        return -1;
    /* Room to retire it first: nothing changes if that fails. */
    if (transaction_retire_room(tx, 1) < 0)
        return -1;
    transaction_retire(tx, victim);
    rcpt_set_remove(tx->rcpt_set, (size_t)(slot - tx->rcpt_set->slots));
    size_t i = 0;
    while (tx->rcpts[i] != victim)
        i++;
    memmove(&tx->rcpts[i], &tx->rcpts[i + 1],
            (tx->n_rcpts - i - 1) * sizeof(*tx->rcpts));
    tx->n_rcpts--;
    return 0;
}
