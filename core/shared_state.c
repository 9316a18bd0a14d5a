/*
 * shared_state.c - the connection and rate-limit tables every worker sees
 * (shared_state.h): one MAP_SHARED|MAP_ANONYMOUS mapping made before the
 * workers are forked, so each inherits it at the same address.
 *
 * The lock is a robust process-shared mutex (robust_mutex.h). A worker
 * killed while holding it does not wedge the others: the next locker is
 * told its owner died, and rebuilds the table from what is in it (the dead
 * process may have stopped half-way through an insert or a backward shift,
 * leaving a duplicate or a broken probe chain; an entry is marked used only
 * once it is whole, so none is ever torn) and recomputes every derived
 * count.
 *
 * What each worker holds is booked under its slot (a holding entry per
 * slot and client, and a per-slot total); a client's open connections and
 * the total are sums of those, kept in step on the fast path and
 * recomputed from them when the supervisor gives back a dead worker's
 * slot (shared_state_release_slot), which is a rebuild without that
 * slot's holdings.
 *
 * The table is open addressing with linear probing and backward-shift
 * deletion (no tombstones), sized from limits.connections: room for a
 * client and a holding entry per connection plus rate-only clients, at
 * most three quarters full. Clients without connections whose tokens have
 * refilled say nothing and are swept a few at a time on each insert; when
 * the table is crowded, rate state of clients without connections goes
 * (a client forgotten that way starts again with a full bucket).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "robust_mutex.h"
#include "shared_state.h"

#define MIN_CAPACITY 256u
#define MAX_CAPACITY (1u << 22) /* 256 MB of address space at most */
#define RATE_CLIENTS_MIN 4096u  /* rate-only clients remembered, at least */
#define RATE_CLIENTS_MAX (1u << 18)
#define SWEEP_PER_INSERT 2 /* entries looked at for expiry per insert */

struct shared_header {
    pthread_mutex_t lock;
    size_t capacity; /* entries, a power of two */
    size_t used;
    size_t hand; /* where the expiry sweep goes on */
    struct shared_counts counts;
    unsigned slot_total[SHARED_STATE_MAX_SLOTS];
    struct shared_entry entries[];
};

static struct {
    struct shared_header *h;
    size_t map_len;
    unsigned slot;
} state;

static size_t
entry_home(const unsigned char key[16], unsigned owner)
{
    uint64_t lo, hi;
    memcpy(&lo, key, 8);
    memcpy(&hi, key + 8, 8);
    /* multiply-xorshift: two loads and a few multiplies, on the accept
     * path; the keys are addresses, not attacker-chosen bytes past what a
     * client can pick from its own /64 */
    uint64_t h = (lo ^ 0x9e3779b97f4a7c15ULL) * 0xbf58476d1ce4e5b9ULL;
    h ^= (hi + owner) * 0x94d049bb133111ebULL;
    h ^= h >> 31;
    h *= 0xd6e8feb86659fd93ULL;
    h ^= h >> 32;
    return (size_t)h & (state.h->capacity - 1);
}

/* The entry of (key, owner), or NULL with *hole at the empty entry where
 * it would go (NULL if the table is full). */
static struct shared_entry *
entry_find(const unsigned char key[16], unsigned owner,
           struct shared_entry **hole)
{
    struct shared_header *h = state.h;
    size_t mask = h->capacity - 1;

    *hole = NULL;
    for (size_t i = entry_home(key, owner), n = 0; n < h->capacity;
         i = (i + 1) & mask, n++) {
        struct shared_entry *e = &h->entries[i];
        if (!e->used) {
            *hole = e;
            return NULL;
        }
        if (e->owner == owner && memcmp(e->key, key, 16) == 0)
            return e;
    }
    return NULL;
}

/* An entry becomes used only once it is whole (a release store after the
 * fields), so a process killed half-way leaves it unused, never a mix of
 * two entries. */
static void
entry_publish(struct shared_entry *e)
{
    __atomic_store_n(&e->used, (uint16_t)1, __ATOMIC_RELEASE);
}

static struct shared_entry *
entry_insert(struct shared_entry *hole, const unsigned char key[16],
             unsigned owner)
{
    struct shared_entry e = {.owner = (uint16_t)owner};
    memcpy(e.key, key, 16);
    for (int r = 0; r < SHARED_RATES; r++)
        e.tokens[r] = -1; /* unset: client_limit.c fills the bucket */
    *hole = e;            /* used still 0 */
    entry_publish(hole);
    state.h->used++;
    return hole;
}

/* Backward-shift deletion: pull later entries of the probe chain into the
 * hole so no lookup ever stops early. The hole is unused while it is
 * written, so a process killed mid-way leaves at worst an entry twice
 * (which a rebuild drops), never a torn one. */
static void
entry_erase(size_t i)
{
    struct shared_header *h = state.h;
    size_t mask = h->capacity - 1;

    __atomic_store_n(&h->entries[i].used, (uint16_t)0, __ATOMIC_RELEASE);
    for (size_t j = i, n = 0; n < h->capacity; n++) {
        j = (j + 1) & mask;
        struct shared_entry *e = &h->entries[j];
        if (!e->used)
            break;
        size_t k = entry_home(e->key, e->owner);
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            struct shared_entry moved = *e;
            moved.used = 0;
            h->entries[i] = moved;
            entry_publish(&h->entries[i]);
            __atomic_store_n(&e->used, (uint16_t)0, __ATOMIC_RELEASE);
            i = j;
        }
    }
    h->used--;
}

static bool
entry_expendable(const struct shared_entry *e, double now, bool any)
{
    return e->used && e->owner == SHARED_CLIENT && e->conns == 0 &&
           (any || e->expires <= now);
}

/* Look at up to `steps` entries from the hand and erase the expendable
 * ones, until the table is below `target` entries. */
static void
table_sweep(size_t steps, size_t target, double now, bool any)
{
    struct shared_header *h = state.h;

    for (size_t n = 0; n < steps && h->used > target; n++) {
        if (entry_expendable(&h->entries[h->hand], now, any))
            entry_erase(h->hand); /* look at what moved in next time */
        else
            h->hand = (h->hand + 1) & (h->capacity - 1);
    }
}

static size_t
table_high_water(void)
{
    return state.h->capacity / 4 * 3;
}

/* Make room before an insert: expired clients first, then any client
 * without connections. */
static void
table_make_room(double now)
{
    struct shared_header *h = state.h;
    size_t high = table_high_water();

    table_sweep(SWEEP_PER_INSERT, 0, now, false);
    if (h->used + 2 <= high)
        return;
    size_t low = h->capacity / 8 * 5;
    table_sweep(2 * h->capacity, low, now, false);
    if (h->used + 2 > high)
        table_sweep(2 * h->capacity, low, now, true);
}

/* Re-insert every entry (dropping duplicates and, unless skip is
 * SHARED_CLIENT, the holdings of slot skip), then recompute the counts
 * from the holdings and per-slot totals. */
static void
table_rebuild(unsigned skip)
{
    struct shared_header *h = state.h;
    size_t n = 0, live = 0;

    /* count afresh: a process killed mid-insert may have left h->used
     * behind the entries marked used */
    for (size_t i = 0; i < h->capacity; i++)
        live += h->entries[i].used != 0;
    struct shared_entry *copy = malloc(live * sizeof(*copy) + 1);
    if (copy) {
        for (size_t i = 0; i < h->capacity; i++) {
            struct shared_entry *e = &h->entries[i];
            if (e->used && !(skip != SHARED_CLIENT && e->owner == skip))
                copy[n++] = *e;
            e->used = 0;
        }
        h->used = 0;
        for (size_t i = 0; i < n; i++) {
            struct shared_entry *hole;
            if (!entry_find(copy[i].key, copy[i].owner, &hole) && hole) {
                *hole = copy[i];
                h->used++;
            }
        }
        free(copy);
    } else if (skip != SHARED_CLIENT) {
        /* No memory for a rebuild: erase the slot's holdings in place,
         * over and over until a pass finds none (erasing moves entries). */
        bool again = true;
        for (int pass = 0; again && pass < 64; pass++) {
            again = false;
            for (size_t i = 0; i < h->capacity; i++)
                while (h->entries[i].used && h->entries[i].owner == skip) {
                    entry_erase(i);
                    again = true;
                }
        }
    }

    h->counts.counted = 0;
    h->used = 0;
    for (size_t i = 0; i < h->capacity; i++) {
        h->used += h->entries[i].used != 0;
        if (h->entries[i].used && h->entries[i].owner == SHARED_CLIENT)
            h->entries[i].conns = 0;
    }
    for (size_t i = 0; i < h->capacity; i++) {
        struct shared_entry *e = &h->entries[i], *hole;
        if (!e->used || e->owner == SHARED_CLIENT)
            continue;
        struct shared_entry *c = entry_find(e->key, SHARED_CLIENT, &hole);
        if (!c && hole)
            c = entry_insert(hole, e->key, SHARED_CLIENT);
        if (c)
            c->conns += e->conns;
        h->counts.counted += e->conns;
    }
    h->counts.total = 0;
    for (unsigned s = 0; s < SHARED_STATE_MAX_SLOTS; s++)
        h->counts.total += h->slot_total[s];
}

static size_t
capacity_for(const struct config *cfg)
{
    size_t conns = cfg->limits.connections;
    size_t rate = conns * 4;
    if (rate < RATE_CLIENTS_MIN)
        rate = RATE_CLIENTS_MIN;
    if (rate > RATE_CLIENTS_MAX)
        rate = RATE_CLIENTS_MAX;
    /* a client and a holding per connection, plus rate-only clients, at
     * most half full when all are there */
    size_t want = 2 * (2 * conns + rate), cap = MIN_CAPACITY;
    while (cap < want && cap < MAX_CAPACITY)
        cap *= 2;
    return cap;
}

int
shared_state_create(const struct config *cfg, char *err, size_t errlen)
{
    if (state.h)
        return 0;
    size_t cap = capacity_for(cfg);
    size_t len =
        sizeof(struct shared_header) + cap * sizeof(struct shared_entry);
    void *map = mmap(NULL, len, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED) {
        snprintf(err, errlen, "shared state: mmap of %zu bytes: %s", len,
                 strerror(errno));
        return -1;
    }
    struct shared_header *h = map; /* zero-filled */
    int rc = robust_mutex_init(&h->lock);
    if (rc != 0) {
        snprintf(err, errlen, "shared state: process-shared mutex: %s",
                 strerror(rc));
        munmap(map, len);
        return -1;
    }
    h->capacity = cap;
    unsigned p = cfg->limits.connections_per_ip_ipv6_prefix;
    h->counts.v6_prefix = p >= 1 && p <= 128 ? p : 64;
    state.h = h;
    state.map_len = len;
    state.slot = 0;
    return 0;
}

void
shared_state_enter_slot(unsigned slot)
{
    state.slot = slot < SHARED_STATE_MAX_SLOTS ? slot : 0;
}

/* The lock, repairing the table if its last holder died holding it. */
static bool
state_lock(void)
{
    bool owner_died;
    int rc = robust_mutex_lock(&state.h->lock, &owner_died);
    if (owner_died)
        table_rebuild(SHARED_CLIENT);
    return rc == 0;
}

bool
shared_state_lock(const struct config *cfg)
{
    char err[256];
    if (!state.h && (!cfg || shared_state_create(cfg, err, sizeof(err)) < 0))
        return false;
    return state_lock();
}

void
shared_state_unlock(void)
{
    pthread_mutex_unlock(&state.h->lock);
}

void
shared_state_release_slot(unsigned slot)
{
    if (!state.h || slot >= SHARED_STATE_MAX_SLOTS || !state_lock())
        return;
    state.h->slot_total[slot] = 0;
    table_rebuild(slot);
    shared_state_unlock();
}

void
shared_state_destroy(void)
{
    if (!state.h)
        return;
    munmap(state.h, state.map_len);
    state.h = NULL;
    state.map_len = 0;
}

struct shared_counts *
shared_state_counts(void)
{
    return &state.h->counts;
}

size_t
shared_state_capacity(void)
{
    return state.h ? state.h->capacity : 0;
}

struct shared_entry *
shared_state_client(const unsigned char key[16], bool create, double now)
{
    struct shared_entry *hole;
    struct shared_entry *c = entry_find(key, SHARED_CLIENT, &hole);
    if (c || !create)
        return c;
    table_make_room(now);
    c = entry_find(key, SHARED_CLIENT, &hole); /* the sweep moved things */
    if (c || !hole || state.h->used >= table_high_water() + 8)
        return c;
    return entry_insert(hole, key, SHARED_CLIENT);
}

int
shared_state_hold(struct shared_entry *c, const unsigned char key[16])
{
    struct shared_header *h = state.h;

    if (key && c) {
        struct shared_entry *hole;
        struct shared_entry *held = entry_find(key, state.slot, &hole);
        if (!held) {
            if (!hole || h->used + 1 >= h->capacity)
                return -1;
            held = entry_insert(hole, key, state.slot);
        }
        held->conns++;
        c->conns++;
        h->counts.counted++;
    }
    h->counts.total++;
    h->slot_total[state.slot]++;
    return 0;
}

void
shared_state_unhold(const unsigned char key[16])
{
    struct shared_header *h = state.h;

    if (h->counts.total > 0)
        h->counts.total--;
    if (h->slot_total[state.slot] > 0)
        h->slot_total[state.slot]--;
    if (!key)
        return;
    struct shared_entry *hole;
    struct shared_entry *held = entry_find(key, state.slot, &hole);
    if (held && --held->conns == 0)
        entry_erase((size_t)(held - h->entries));
    struct shared_entry *c = entry_find(key, SHARED_CLIENT, &hole);
    if (c && c->conns > 0) {
        c->conns--;
        if (h->counts.counted > 0)
            h->counts.counted--;
    }
}
