/*
 * metrics.c - the shared counter blocks and the registry (metrics.h).
 *
 * Writers are the workers, each on its own slot's block with relaxed
 * atomic adds (a module pool thread may count too). The supervisor folds
 * a reaped worker's block into the retired one, and the reader sums, both
 * under a PTHREAD_PROCESS_SHARED robust mutex; a process killed while it
 * held it leaves at worst one registry entry unpublished (an entry counts
 * only once its `used` flag is stored after its text).
 */
#include <errno.h>
#include <gnutls/gnutls.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "metrics.h"
#include "robust_mutex.h"

const double metrics_bucket_bounds[METRICS_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10};

struct registry_entry {
    uint32_t used;
    struct metrics_name n;
};

struct metrics_map {
    pthread_mutex_t lock;
    uint8_t slot_live[METRICS_SLOTS];  /* a worker runs in it */
    uint8_t slot_inuse[METRICS_SLOTS]; /* its block may hold counts */
    struct registry_entry instances[METRICS_MAX_INSTANCES];
    struct registry_entry module[METRICS_MAX_MODULE_COUNTERS];
    struct metrics_block retired;
    struct metrics_block slots[METRICS_SLOTS];
};

static struct {
    struct metrics_map *m;
    struct metrics_block *mine; /* this worker's block */
} metrics;

int
metrics_create(char *err, size_t errlen)
{
    if (metrics.m)
        return 0;
    void *map = mmap(NULL, sizeof(struct metrics_map), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED) {
        snprintf(err, errlen, "metrics: mmap of %zu bytes: %s",
                 sizeof(struct metrics_map), strerror(errno));
        return -1;
    }
    struct metrics_map *m = map; /* zero-filled */
    int rc = robust_mutex_init(&m->lock);
    if (rc != 0) {
        snprintf(err, errlen, "metrics: process-shared mutex: %s",
                 strerror(rc));
        munmap(map, sizeof(struct metrics_map));
        return -1;
    }
    metrics.m = m;
    metrics.mine = NULL;
    return 0;
}

void
metrics_destroy(void)
{
    if (!metrics.m)
        return;
    munmap(metrics.m, sizeof(struct metrics_map));
    metrics.m = NULL;
    metrics.mine = NULL;
}

static bool
map_lock(void)
{
    return robust_mutex_lock(&metrics.m->lock, NULL) == 0;
}

static void
map_unlock(void)
{
    pthread_mutex_unlock(&metrics.m->lock);
}

/* --- the supervisor --- */

void
metrics_slot_started(unsigned slot)
{
    if (!metrics.m || slot >= METRICS_SLOTS)
        return;
    __atomic_store_n(&metrics.m->slot_inuse[slot], 1, __ATOMIC_RELEASE);
    __atomic_store_n(&metrics.m->slot_live[slot], 1, __ATOMIC_RELEASE);
}

static void
counters_fold(uint64_t *into, uint64_t *from, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        into[i] += from[i];
        from[i] = 0;
    }
}

void
metrics_release_slot(unsigned slot)
{
    if (!metrics.m || slot >= METRICS_SLOTS)
        return;
    struct metrics_map *m = metrics.m;
    __atomic_store_n(&m->slot_live[slot], 0, __ATOMIC_RELEASE);
    if (!map_lock())
        return;
    /* the worker is reaped: nobody writes this block any more */
    counters_fold((uint64_t *)&m->retired.c, (uint64_t *)&m->slots[slot].c,
                  sizeof(struct metrics_counters) / sizeof(uint64_t));
    memset(&m->slots[slot].g, 0, sizeof(m->slots[slot].g));
    map_unlock();
}

/* --- a worker --- */

void
metrics_enter_slot(unsigned slot)
{
    if (metrics.m && slot < METRICS_SLOTS)
        metrics.mine = &metrics.m->slots[slot];
}

/* Find or add name (and instance) in a registry table. */
static unsigned
registry_id(struct registry_entry *table, unsigned cap, const char *name,
            const char *instance, const char *help)
{
    if (!metrics.m || !name || strlen(name) >= METRICS_NAME_MAX ||
        (instance && strlen(instance) >= METRICS_NAME_MAX) || !map_lock())
        return METRICS_NO_ID;
    unsigned id = METRICS_NO_ID;
    for (unsigned i = 0; i < cap; i++) {
        struct registry_entry *e = &table[i];
        if (!__atomic_load_n(&e->used, __ATOMIC_ACQUIRE)) {
            memset(&e->n, 0, sizeof(e->n));
            strcpy(e->n.name, name);
            if (instance)
                strcpy(e->n.instance, instance);
            if (help)
                snprintf(e->n.help, sizeof(e->n.help), "%s", help);
            __atomic_store_n(&e->used, 1, __ATOMIC_RELEASE);
            id = i;
            break;
        }
        if (strcmp(e->n.name, name) == 0 &&
            strcmp(e->n.instance, instance ? instance : "") == 0) {
            id = i;
            break;
        }
    }
    map_unlock();
    return id;
}

unsigned
metrics_instance_id(const char *instance)
{
    return metrics.m ? registry_id(metrics.m->instances, METRICS_MAX_INSTANCES,
                                   instance, NULL, NULL)
                     : METRICS_NO_ID;
}

unsigned
metrics_module_counter_id(const char *name, const char *instance,
                          const char *help)
{
    return metrics.m
               ? registry_id(metrics.m->module, METRICS_MAX_MODULE_COUNTERS,
                             name, instance, help)
               : METRICS_NO_ID;
}

#define ADD(field, n)                                                          \
    do {                                                                       \
        if (metrics.mine)                                                      \
            __atomic_fetch_add(&metrics.mine->field, (n), __ATOMIC_RELAXED);   \
    } while (0)

void
metrics_connection_opened(void)
{
    ADD(c.connections, 1);
    ADD(g.connections_open, 1);
}

void
metrics_connection_closed(void)
{
    ADD(g.connections_open, -1);
}

void
metrics_refused(const char *limit_key)
{
    static const char *const keys[METRICS_LIMIT_COUNT] = {
        "connections", "connections_per_ip", "connection_rate"};
    for (unsigned i = 0; i < METRICS_LIMIT_COUNT; i++)
        if (strcmp(limit_key, keys[i]) == 0)
            ADD(c.refused[i], 1);
}

void
metrics_tls_session(int protocol)
{
    enum metrics_tls v = protocol == GNUTLS_TLS1_3   ? METRICS_TLS_1_3
                         : protocol == GNUTLS_TLS1_2 ? METRICS_TLS_1_2
                         : protocol == GNUTLS_TLS1_1 ? METRICS_TLS_1_1
                         : protocol == GNUTLS_TLS1_0 ? METRICS_TLS_1_0
                                                     : METRICS_TLS_OTHER;
    ADD(c.tls_sessions[v], 1);
}

void
metrics_received(uint64_t bytes)
{
    ADD(c.received_bytes, bytes);
}

void
metrics_auth(bool success)
{
    ADD(c.auth[success ? 0 : 1], 1);
}

double
metrics_clock(void)
{
    if (!metrics.mine)
        return 0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
stage_of(postern_hook hook)
{
    switch (hook) {
    case POSTERN_HOOK_CONNECT:
        return METRICS_STAGE_CONNECT;
    case POSTERN_HOOK_HELO:
        return METRICS_STAGE_HELO;
    case POSTERN_HOOK_MAIL:
        return METRICS_STAGE_MAIL;
    case POSTERN_HOOK_RCPT:
        return METRICS_STAGE_RCPT;
    case POSTERN_HOOK_DATA:
        return METRICS_STAGE_DATA;
    case POSTERN_HOOK_MESSAGE:
        return METRICS_STAGE_MESSAGE;
    case POSTERN_HOOK_STORE:
        return METRICS_STAGE_STORE;
    default:
        return -1;
    }
}

void
metrics_stage_reply(postern_hook hook, int code)
{
    int cls = code / 100;
    int stage = stage_of(hook);
    if (stage < 0)
        return;
    if (cls == 2 && hook == POSTERN_HOOK_MAIL)
        ADD(c.transactions, 1);
    /* a message is accepted once: when it is stored */
    if (cls == 2 && hook == POSTERN_HOOK_STORE)
        ADD(c.messages[stage][METRICS_ACCEPTED], 1);
    else if (cls == 4)
        ADD(c.messages[stage][METRICS_TEMPFAILED], 1);
    else if (cls == 5)
        ADD(c.messages[stage][METRICS_REJECTED], 1);
}

static void
histogram_observe(struct metrics_histogram *h, double seconds)
{
    if (!metrics.mine)
        return;
    if (seconds < 0)
        seconds = 0;
    unsigned b = 0;
    while (b < METRICS_BUCKETS && seconds > metrics_bucket_bounds[b])
        b++;
    __atomic_fetch_add(&h->buckets[b], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->sum_ns, (uint64_t)(seconds * 1e9), __ATOMIC_RELAXED);
}

void
metrics_hook_result(unsigned id, postern_hook hook, postern_result r,
                    double seconds)
{
    if (!metrics.mine || id >= METRICS_MAX_INSTANCES ||
        (unsigned)hook >= POSTERN_HOOK_COUNT || (unsigned)r >= METRICS_RESULTS)
        return;
    ADD(c.hook_results[id][hook][r], 1);
    histogram_observe(&metrics.mine->c.hook_latency[id], seconds);
}

void
metrics_store_latency(double seconds)
{
    if (metrics.mine)
        histogram_observe(&metrics.mine->c.store_latency, seconds);
}

void
metrics_pending(int delta)
{
    ADD(g.pending, delta);
}

void
metrics_spool(int files, int64_t bytes)
{
    ADD(g.spool_files, files);
    ADD(g.spool_bytes, bytes);
}

void
metrics_module_add(unsigned id, uint64_t n)
{
    if (id < METRICS_MAX_MODULE_COUNTERS)
        ADD(c.module[id], n);
}

/* --- the reader --- */

static void
block_add(struct metrics_block *into, const struct metrics_block *from)
{
    uint64_t *a = (uint64_t *)&into->c;
    const uint64_t *b = (const uint64_t *)&from->c;
    for (size_t i = 0; i < sizeof(into->c) / sizeof(uint64_t); i++)
        a[i] += __atomic_load_n(&b[i], __ATOMIC_RELAXED);
    int64_t *x = (int64_t *)&into->g;
    const int64_t *y = (const int64_t *)&from->g;
    for (size_t i = 0; i < sizeof(into->g) / sizeof(int64_t); i++)
        x[i] += __atomic_load_n(&y[i], __ATOMIC_RELAXED);
}

static unsigned
registry_copy(const struct registry_entry *table, unsigned cap,
              struct metrics_name *out)
{
    unsigned n = 0;
    while (n < cap && __atomic_load_n(&table[n].used, __ATOMIC_ACQUIRE)) {
        out[n] = table[n].n;
        n++;
    }
    return n;
}

int
metrics_snapshot_take(struct metrics_snapshot *out)
{
    struct metrics_map *m = metrics.m;
    memset(out, 0, sizeof(*out));
    if (!m || !map_lock())
        return -1;
    block_add(&out->total, &m->retired);
    for (unsigned s = 0; s < METRICS_SLOTS; s++) {
        if (__atomic_load_n(&m->slot_inuse[s], __ATOMIC_ACQUIRE))
            block_add(&out->total, &m->slots[s]);
        out->workers_up += __atomic_load_n(&m->slot_live[s], __ATOMIC_ACQUIRE);
    }
    out->n_instances =
        registry_copy(m->instances, METRICS_MAX_INSTANCES, out->instances);
    out->n_module =
        registry_copy(m->module, METRICS_MAX_MODULE_COUNTERS, out->module);
    map_unlock();
    /* a gauge read while its worker moves can dip below zero for a moment */
    int64_t *g = (int64_t *)&out->total.g;
    for (size_t i = 0; i < sizeof(out->total.g) / sizeof(int64_t); i++)
        if (g[i] < 0)
            g[i] = 0;
    return 0;
}

struct metrics_block *
metrics_slot_block(unsigned slot)
{
    return metrics.m && slot < METRICS_SLOTS ? &metrics.m->slots[slot] : NULL;
}
