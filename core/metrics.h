/*
 * metrics.h - the counters behind the Prometheus endpoint (metrics_server.h).
 *
 * One shared anonymous mapping, made by the supervisor before it forks
 * anything, holds a block of counters per worker slot (the slots of
 * shared_state.h) and a "retired" block. A worker adds to its own block
 * only, with relaxed atomics and no lock: one add per event. The reader
 * (the metrics process) sums the retired block and the blocks of slots in
 * use, under a robust process-shared mutex.
 *
 * When a worker exits for any reason, the supervisor folds its counters
 * into the retired block and zeroes its slot under the same mutex
 * (metrics_release_slot), so a sum never goes backwards and a dead or
 * retired worker's counts are kept; its gauges (open connections, pending
 * hook calls, spool in use) are dropped, as what they counted is gone.
 *
 * Module instances and module counters are named in a registry in the same
 * mapping (append-only, by name), so their indexes mean the same in every
 * worker and every generation across reloads. The registry is bounded:
 * labels have a fixed upper cardinality.
 *
 * Without a mapping (unit tests, --check-config) every call is a no-op.
 */
#ifndef POSTERN_METRICS_H
#define POSTERN_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "postern/hook.h"

#define METRICS_SLOTS 256 /* = SHARED_STATE_MAX_SLOTS */
#define METRICS_MAX_INSTANCES 64
#define METRICS_MAX_MODULE_COUNTERS 64
#define METRICS_NAME_MAX 96
#define METRICS_HELP_MAX 160
#define METRICS_NO_ID 0xffffu

/* The label values of the small fixed sets. */
enum metrics_limit {
    METRICS_LIMIT_CONNECTIONS,
    METRICS_LIMIT_CONNECTIONS_PER_IP,
    METRICS_LIMIT_CONNECTION_RATE,
    METRICS_LIMIT_COUNT
};
enum metrics_tls {
    METRICS_TLS_1_0,
    METRICS_TLS_1_1,
    METRICS_TLS_1_2,
    METRICS_TLS_1_3,
    METRICS_TLS_OTHER,
    METRICS_TLS_COUNT
};
/* Stages a message can be refused at: the decision hooks but auth. */
enum metrics_stage {
    METRICS_STAGE_CONNECT,
    METRICS_STAGE_HELO,
    METRICS_STAGE_MAIL,
    METRICS_STAGE_RCPT,
    METRICS_STAGE_DATA,
    METRICS_STAGE_MESSAGE,
    METRICS_STAGE_STORE,
    METRICS_STAGE_COUNT
};
enum metrics_outcome {
    METRICS_ACCEPTED,
    METRICS_REJECTED,
    METRICS_TEMPFAILED,
    METRICS_OUTCOME_COUNT
};
/* Hook results a handler can end with (PENDING is not an end). */
#define METRICS_RESULTS 7 /* postern_result values, PENDING unused */

/* Latency buckets, seconds (upper bounds; +Inf is the count). */
#define METRICS_BUCKETS 12
extern const double metrics_bucket_bounds[METRICS_BUCKETS];

struct metrics_histogram {
    uint64_t buckets[METRICS_BUCKETS + 1]; /* not cumulative; last: > max */
    uint64_t sum_ns;
};

/* Counters: folded into the retired block when a worker goes. */
struct metrics_counters {
    uint64_t connections;
    uint64_t refused[METRICS_LIMIT_COUNT];
    uint64_t tls_sessions[METRICS_TLS_COUNT];
    uint64_t transactions;
    uint64_t messages[METRICS_STAGE_COUNT][METRICS_OUTCOME_COUNT];
    uint64_t received_bytes;
    uint64_t auth[2]; /* [0] successes, [1] failures */
    uint64_t hook_results[METRICS_MAX_INSTANCES][POSTERN_HOOK_COUNT]
                         [METRICS_RESULTS];
    struct metrics_histogram hook_latency[METRICS_MAX_INSTANCES];
    struct metrics_histogram store_latency;
    uint64_t module[METRICS_MAX_MODULE_COUNTERS];
};

/* Gauges: what a worker holds now; dropped when it goes. */
struct metrics_gauges {
    int64_t connections_open;
    int64_t pending;
    int64_t spool_files;
    int64_t spool_bytes;
};

struct metrics_block {
    struct metrics_counters c;
    struct metrics_gauges g;
};

/* A registry entry: an instance name, or a module counter. */
struct metrics_name {
    char name[METRICS_NAME_MAX];     /* instance, or the metric's full name */
    char instance[METRICS_NAME_MAX]; /* counters: the instance label */
    char help[METRICS_HELP_MAX];
};

/* What the reader gets: the sums and the registry. */
struct metrics_snapshot {
    struct metrics_block total;
    unsigned workers_up;
    unsigned n_instances;
    struct metrics_name instances[METRICS_MAX_INSTANCES];
    unsigned n_module;
    struct metrics_name module[METRICS_MAX_MODULE_COUNTERS];
};

/* --- the supervisor --- */

/* Make the mapping (before any fork); a second call keeps it. 0, or -1
 * with one line in err. */
int metrics_create(char *err, size_t errlen);
void metrics_destroy(void);
/* A worker of slot started / was reaped: workers_up counts it; on exit its
 * counters go into the retired block and its gauges are dropped. */
void metrics_slot_started(unsigned slot);
void metrics_release_slot(unsigned slot);

/* --- a worker --- */

/* Right after fork: count under slot. */
void metrics_enter_slot(unsigned slot);
/* The id of an instance name (found or added), METRICS_NO_ID when the
 * registry is full or there is no mapping. */
unsigned metrics_instance_id(const char *instance);
/* The id of a module counter by full name (found or added). */
unsigned metrics_module_counter_id(const char *name, const char *instance,
                                   const char *help);

/* Monotonic seconds for durations; 0 without a mapping (no clock read). */
double metrics_clock(void);

/* One call per event; each does nothing without a mapping. */
void metrics_connection_opened(void);
void metrics_connection_closed(void);
/* limit_key: the limits key that refused (client_limit_name()). */
void metrics_refused(const char *limit_key);
void metrics_tls_session(int gnutls_protocol);
void metrics_received(uint64_t bytes);
/* AUTH credentials accepted (235), or refused (535). */
void metrics_auth(bool success);
/* The reply a decision hook's stage sent (0: none yet), by hook. */
void metrics_stage_reply(postern_hook hook, int code);
void metrics_hook_result(unsigned instance_id, postern_hook hook,
                         postern_result r, double seconds);
void metrics_store_latency(double seconds);
void metrics_pending(int delta);
void metrics_spool(int files, int64_t bytes);
void metrics_module_add(unsigned id, uint64_t n);

/* --- the reader --- */

/* The sums over the retired block and every slot in use. 0, or -1 when
 * there is no mapping. */
int metrics_snapshot_take(struct metrics_snapshot *out);

/* For unit tests: the mapping's block of slot (NULL without one). */
struct metrics_block *metrics_slot_block(unsigned slot);

#endif
