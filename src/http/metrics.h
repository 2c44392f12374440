/* metrics.h - request counters and latency histograms of the HTTP service,
 * rendered in the Prometheus text exposition format (version 0.0.4).
 *
 * Counters are relaxed atomics bumped by the poll threads; rendering reads
 * them without a lock (a scrape may see one request in the counter and not
 * yet in the histogram, which Prometheus tolerates).
 */
#ifndef IMGSEARCH_HTTP_METRICS_H
#define IMGSEARCH_HTTP_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "http/router.h"
#include "pipe/sched.h"

#define HTTP_METRICS_STATUSES 16  /* tracked statuses + "other" */
#define HTTP_METRICS_LAT_BUCKETS 14
#define HTTP_METRICS_BATCH_BUCKETS PIPE_SCHED_BUCKETS

struct http_metrics {
    /* requests by route and status (index from the status table) */
    atomic_uint_fast64_t requests[HTTP_ROUTE_COUNT_][HTTP_METRICS_STATUSES];
    /* latency histogram by route: non-cumulative bucket counts (+Inf last) */
    atomic_uint_fast64_t lat[HTTP_ROUTE_COUNT_][HTTP_METRICS_LAT_BUCKETS + 1];
    atomic_uint_fast64_t lat_sum_us[HTTP_ROUTE_COUNT_]; /* microseconds */
    atomic_uint_fast64_t text_embeddings;  /* texts embedded (search, classify) */
    atomic_uint_fast64_t rejected_busy;    /* 503 because the work queue was full */
    atomic_uint_fast64_t rejected_rate;    /* 429: over the per-address rate limit */
    atomic_uint_fast64_t cut_head;         /* connections closed: head past its deadline */
    atomic_uint_fast64_t cut_body;         /* connections closed: body past its deadline */
};

/* Gauges and counters owned by other parts, gathered at render time. */
struct http_metrics_extra {
    int64_t items, waiting;           /* store counts (-1: unknown) */
    uint64_t image_embeddings;        /* images through the scheduler */
    uint64_t batches;                 /* forward passes */
    uint64_t batch_hist[HTTP_METRICS_BATCH_BUCKETS + 1]; /* by size, +Inf last */
    uint64_t batch_sum;               /* images over all batches */
    double forward_seconds;           /* time in forward passes */
    int queue_depth;                  /* images waiting for the scheduler */
    int work_queue;                   /* requests waiting for a worker */
    int64_t precompute_embedded, precompute_failed; /* start-up precompute */
    int64_t items_failed;                           /* failed now, until their file changes (failed.c) */
    int loading;                      /* 1 while the model loads */
    double uptime_s;
    const char *version, *model, *precision; /* build info labels ("" unknown) */
};

/* What the kernel says about this process (Prometheus' process_* names). */
struct http_metrics_process {
    double cpu_seconds;     /* user + system CPU time */
    double start_time_s;    /* start, seconds since the Unix epoch */
    int64_t resident_bytes; /* resident set size */
    int64_t open_fds;       /* open file descriptors */
};

/* Reads /proc/self; 0, or -1 when /proc cannot be read (fields < 0). */
int http_metrics_process(struct http_metrics_process *p);


void http_metrics_init(struct http_metrics *m);

/* Counts one finished request. */
void http_metrics_request(struct http_metrics *m, enum http_route r, int status,
                          double seconds);


/* The exposition text (malloc'd, *len bytes), or NULL when out of memory. */
char *http_metrics_render(struct http_metrics *m, const struct http_metrics_extra *x,
                          const struct http_metrics_process *p, size_t *len);

#endif
