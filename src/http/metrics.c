/* metrics.c - Prometheus text format for the HTTP service (see metrics.h).
 *
 * 1. Routes are a closed enum and statuses a fixed list, so every series
 *    is a slot in a fixed array: no allocation and no lock per request.
 * 2. Histograms keep per-bucket counts and are made cumulative when
 *    rendered, as the format requires (le="..." buckets, _sum, _count).
 * Reference: https://prometheus.io/docs/instrumenting/exposition_formats/
 */
#include "http/metrics.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const int statuses[HTTP_METRICS_STATUSES - 1] = {
    200, 201, 202, 204, 304, 400, 401, 403, 404, 405, 409, 413, 415, 422, 500,
};
static const int n_statuses = sizeof statuses / sizeof statuses[0];

static const double lat_bounds[HTTP_METRICS_LAT_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

void http_metrics_init(struct http_metrics *m)
{
    memset(m, 0, sizeof *m);
}

static int status_index(int status)
{
    for (int i = 0; i < n_statuses; i++)
        if (statuses[i] == status)
            return i;
    return status == 503 ? HTTP_METRICS_STATUSES - 1 : -1;
}

void http_metrics_request(struct http_metrics *m, enum http_route r, int status,
                          double seconds)
{
    if ((unsigned)r >= HTTP_ROUTE_COUNT_)
        r = HTTP_ROUTE_NONE;
    int si = status_index(status);
    /* statuses outside the table are rare (MHD's own 431 and the like):
     * count them as 400 or 500 rather than drop them */
    if (si < 0)
        si = status_index(status >= 500 ? 500 : 400);
    atomic_fetch_add_explicit(&m->requests[r][si], 1, memory_order_relaxed);
    int b = 0;
    while (b < HTTP_METRICS_LAT_BUCKETS && seconds > lat_bounds[b])
        b++;
    atomic_fetch_add_explicit(&m->lat[r][b], 1, memory_order_relaxed);
    double us = seconds > 0 ? seconds * 1e6 : 0;
    atomic_fetch_add_explicit(&m->lat_sum_us[r], (uint_fast64_t)us, memory_order_relaxed);
}


static uint64_t ld(atomic_uint_fast64_t *a)
{
    return atomic_load_explicit(a, memory_order_relaxed);
}

int http_metrics_process(struct http_metrics_process *p)
{
    *p = (struct http_metrics_process){-1, -1, -1, -1};
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "re");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = 0;
    /* the command name, in parentheses, may hold spaces: fields count
     * from the last ')' (proc(5): utime 14, stime 15, starttime 22, rss 24) */
    const char *at = strrchr(buf, ')');
    unsigned long long ut, st, start;
    long long rss;
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    if (!at || tick <= 0 ||
        sscanf(at + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d "
                       "%*d %*d %*d %llu %*u %lld", &ut, &st, &start, &rss) != 4)
        return -1;
    p->cpu_seconds = (double)(ut + st) / (double)tick;
    p->resident_bytes = rss * (page > 0 ? page : 4096);
    f = fopen("/proc/stat", "re");
    unsigned long long btime = 0;
    while (f && fgets(buf, sizeof buf, f))
        if (sscanf(buf, "btime %llu", &btime) == 1)
            break;
    if (f)
        fclose(f);
    if (btime)
        p->start_time_s = (double)btime + (double)start / (double)tick;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        int64_t k = 0;
        for (struct dirent *e; (e = readdir(d));)
            k += e->d_name[0] != '.';
        closedir(d);
        p->open_fds = k - 1; /* not the one reading the folder */
    }
    return 0;
}

/* v as a Prometheus label value: backslash, quote and newline escaped. */
static void label(FILE *f, const char *v)
{
    for (; v && *v; v++) {
        if (*v == '\\' || *v == '"')
            fputc('\\', f);
        if (*v == '\n')
            fputs("\\n", f);
        else
            fputc(*v, f);
    }
}

static void render_process(FILE *f, const struct http_metrics_extra *x,
                           const struct http_metrics_process *p)
{
    if (p && p->cpu_seconds >= 0)
        fprintf(f,
                "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
                "# TYPE process_cpu_seconds_total counter\n"
                "process_cpu_seconds_total %.2f\n"
                "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                "# TYPE process_resident_memory_bytes gauge\n"
                "process_resident_memory_bytes %lld\n",
                p->cpu_seconds, (long long)p->resident_bytes);
    if (p && p->open_fds >= 0)
        fprintf(f,
                "# HELP process_open_fds Number of open file descriptors.\n"
                "# TYPE process_open_fds gauge\n"
                "process_open_fds %lld\n", (long long)p->open_fds);
    if (p && p->start_time_s >= 0)
        fprintf(f,
                "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
                "# TYPE process_start_time_seconds gauge\n"
                "process_start_time_seconds %.2f\n", p->start_time_s);
    fputs("# HELP imgsearch_build_info The version, and the model and precision served.\n"
          "# TYPE imgsearch_build_info gauge\n"
          "imgsearch_build_info{version=\"", f);
    label(f, x->version);
    fputs("\",model=\"", f);
    label(f, x->model);
    fputs("\",precision=\"", f);
    label(f, x->precision);
    fputs("\"} 1\n", f);
}

char *http_metrics_render(struct http_metrics *m, const struct http_metrics_extra *x,
                          const struct http_metrics_process *p, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f)
        return NULL;
    fputs("# HELP imgsearch_http_requests_total HTTP requests by route and status.\n"
          "# TYPE imgsearch_http_requests_total counter\n", f);
    for (int r = 0; r < HTTP_ROUTE_COUNT_; r++)
        for (int s = 0; s < HTTP_METRICS_STATUSES; s++) {
            uint64_t v = ld(&m->requests[r][s]);
            if (v)
                fprintf(f, "imgsearch_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                        http_route_name((enum http_route)r),
                        s < n_statuses ? statuses[s] : 503, (unsigned long long)v);
        }
    fputs("# HELP imgsearch_http_request_duration_seconds Time from the request's first "
          "byte to the end of the reply.\n"
          "# TYPE imgsearch_http_request_duration_seconds histogram\n", f);
    for (int r = 0; r < HTTP_ROUTE_COUNT_; r++) {
        uint64_t cum = 0, counts[HTTP_METRICS_LAT_BUCKETS + 1];
        for (int b = 0; b <= HTTP_METRICS_LAT_BUCKETS; b++)
            cum += counts[b] = ld(&m->lat[r][b]);
        if (!cum)
            continue;
        const char *name = http_route_name((enum http_route)r);
        cum = 0;
        for (int b = 0; b < HTTP_METRICS_LAT_BUCKETS; b++) {
            cum += counts[b];
            fprintf(f, "imgsearch_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
                    name, lat_bounds[b], (unsigned long long)cum);
        }
        cum += counts[HTTP_METRICS_LAT_BUCKETS];
        fprintf(f, "imgsearch_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n"
                   "imgsearch_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n"
                   "imgsearch_http_request_duration_seconds_count{route=\"%s\"} %llu\n",
                name, (unsigned long long)cum, name, (double)ld(&m->lat_sum_us[r]) / 1e6, name,
                (unsigned long long)cum);
    }
    fprintf(f,
            "# HELP imgsearch_embeddings_computed_total Embeddings computed, by input kind.\n"
            "# TYPE imgsearch_embeddings_computed_total counter\n"
            "imgsearch_embeddings_computed_total{kind=\"image\"} %llu\n"
            "imgsearch_embeddings_computed_total{kind=\"text\"} %llu\n",
            (unsigned long long)x->image_embeddings,
            (unsigned long long)ld(&m->text_embeddings));
    fputs("# HELP imgsearch_batch_size Images per forward pass of the inference scheduler.\n"
          "# TYPE imgsearch_batch_size histogram\n", f);
    uint64_t cum = 0;
    for (int b = 0; b < HTTP_METRICS_BATCH_BUCKETS; b++) {
        cum += x->batch_hist[b];
        fprintf(f, "imgsearch_batch_size_bucket{le=\"%d\"} %llu\n", pipe_sched_bounds[b],
                (unsigned long long)cum);
    }
    cum += x->batch_hist[HTTP_METRICS_BATCH_BUCKETS];
    fprintf(f,
            "imgsearch_batch_size_bucket{le=\"+Inf\"} %llu\n"
            "imgsearch_batch_size_sum %llu\n"
            "imgsearch_batch_size_count %llu\n",
            (unsigned long long)cum, (unsigned long long)x->batch_sum,
            (unsigned long long)x->batches);
    fprintf(f,
            "# HELP imgsearch_forward_seconds_total Time spent in image forward passes.\n"
            "# TYPE imgsearch_forward_seconds_total counter\n"
            "imgsearch_forward_seconds_total %.6f\n"
            "# HELP imgsearch_batch_queue_depth Images waiting for the scheduler.\n"
            "# TYPE imgsearch_batch_queue_depth gauge\n"
            "imgsearch_batch_queue_depth %d\n"
            "# HELP imgsearch_work_queue_depth Requests waiting for a worker thread.\n"
            "# TYPE imgsearch_work_queue_depth gauge\n"
            "imgsearch_work_queue_depth %d\n"
            "# HELP imgsearch_rejected_busy_total Requests refused with 503 because the work queue was full.\n"
            "# TYPE imgsearch_rejected_busy_total counter\n"
            "imgsearch_rejected_busy_total %llu\n",
            x->forward_seconds, x->queue_depth, x->work_queue,
            (unsigned long long)ld(&m->rejected_busy));
    fprintf(f,
            "# HELP imgsearch_rejected_rate_total Requests refused with 429: over the per-address rate limit.\n"
            "# TYPE imgsearch_rejected_rate_total counter\n"
            "imgsearch_rejected_rate_total %llu\n"
            "# HELP imgsearch_connections_cut_total Connections closed for missing a deadline.\n"
            "# TYPE imgsearch_connections_cut_total counter\n"
            "imgsearch_connections_cut_total{deadline=\"head\"} %llu\n"
            "imgsearch_connections_cut_total{deadline=\"body\"} %llu\n",
            (unsigned long long)ld(&m->rejected_rate), (unsigned long long)ld(&m->cut_head),
            (unsigned long long)ld(&m->cut_body));
    if (x->items >= 0)
        fprintf(f,
                "# HELP imgsearch_items Items in the store.\n"
                "# TYPE imgsearch_items gauge\n"
                "imgsearch_items %lld\n"
                "# HELP imgsearch_items_waiting Items waiting for an embedding.\n"
                "# TYPE imgsearch_items_waiting gauge\n"
                "imgsearch_items_waiting %lld\n"
                "# HELP imgsearch_items_failed Waiting items that failed, until their file changes.\n"
                "# TYPE imgsearch_items_failed gauge\n"
                "imgsearch_items_failed %lld\n",
                (long long)x->items, (long long)x->waiting, (long long)x->items_failed);
    fprintf(f,
            "# HELP imgsearch_precompute_embedded_total Items embedded by the background precompute.\n"
            "# TYPE imgsearch_precompute_embedded_total counter\n"
            "imgsearch_precompute_embedded_total %lld\n"
            "# HELP imgsearch_precompute_failed_total Items the precompute could not embed.\n"
            "# TYPE imgsearch_precompute_failed_total counter\n"
            "imgsearch_precompute_failed_total %lld\n"
            "# HELP imgsearch_loading 1 while the model loads.\n"
            "# TYPE imgsearch_loading gauge\n"
            "imgsearch_loading %d\n"
            "# HELP imgsearch_uptime_seconds Seconds since the server started.\n"
            "# TYPE imgsearch_uptime_seconds gauge\n"
            "imgsearch_uptime_seconds %.3f\n",
            (long long)x->precompute_embedded, (long long)x->precompute_failed, x->loading,
            x->uptime_s);
    render_process(f, x, p);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}
