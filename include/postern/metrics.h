/*
 * postern/metrics.h - counters of a module's own, on the Prometheus
 * endpoint (the main config's "metrics"; docs/operations.md). Since ABI
 * 1.4.
 *
 * A module registers its counters in create(), by name:
 *
 *     static postern_counter *listed;
 *     listed = postern_init_counter(init, "listed_total",
 *                                   "Clients found on a list.");
 *     ...
 *     postern_counter_add(listed, 1);   // in a handler, any thread
 *
 * The series is postern_<module>_<name>{module_instance="<instance>"}:
 * the core prefixes "postern_" and the module's name, and labels it with
 * the instance (not "instance", which Prometheus gives the scraped
 * target), so two instances of a module count apart. Counts from every
 * worker are summed and never go backwards (a worker that exits leaves
 * its counts behind).
 */
#ifndef POSTERN_METRICS_API_H
#define POSTERN_METRICS_API_H

#include <stdint.h>

#include "module.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct postern_counter postern_counter;

/*
 * Since ABI 1.4. name: lower-case letters, digits and '_', ending in
 * "_total" (a Prometheus counter), 64 bytes at most; help: one line. A bad
 * name is a config error of the instance (postern_init_error) and gives
 * NULL. The handle lives as long as the process, also when metrics are
 * off or under --check-config (it then counts nothing).
 */
postern_counter *postern_init_counter(postern_module_init *init,
                                      const char *name, const char *help);

/* Since ABI 1.4. Add n; from any thread; NULL does nothing. */
void postern_counter_add(postern_counter *counter, uint64_t n);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif
