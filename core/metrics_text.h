/*
 * metrics_text.h - the Prometheus text exposition format (version 0.0.4)
 * of a metrics snapshot: # HELP and # TYPE lines, label values escaped,
 * histograms with cumulative buckets ending in le="+Inf", _sum and _count.
 */
#ifndef POSTERN_METRICS_TEXT_H
#define POSTERN_METRICS_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics.h"

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* A growing text buffer; failed is set once memory ran out. */
struct metrics_text {
    char *buf;
    size_t len, cap;
    bool failed;
};

void metrics_text_printf(struct metrics_text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A label value with \, " and newline escaped. */
void metrics_text_label_value(struct metrics_text *t, const char *v);
/* "# HELP name help\n# TYPE name type\n" (help escaped: \ and newline). */
void metrics_text_header(struct metrics_text *t, const char *name,
                         const char *help, const char *type);
/* The series of one histogram: name_bucket{labels,le=...} cumulative,
 * name_sum in seconds, name_count. labels is "" or `k="v",...` (already
 * escaped) without braces. */
void metrics_text_histogram(struct metrics_text *t, const char *name,
                            const char *labels,
                            const struct metrics_histogram *h);
void metrics_text_free(struct metrics_text *t);

/* What the reader adds that no worker counts. */
struct metrics_extra {
    bool have_spool_free;
    uint64_t spool_free_bytes; /* statvfs of spool_dir, for the sender */
};

/* The whole page for a snapshot. 0, or -1 when out of memory. */
int metrics_text_render(struct metrics_text *t,
                        const struct metrics_snapshot *s,
                        const struct metrics_extra *x);

#endif
