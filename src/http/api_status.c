/* api_status.c - what the service says about itself: GET /health,
 * GET /metrics (Prometheus text, metrics.c) and the search page GET /.
 *
 * 1. These run on libmicrohttpd's poll threads (router.c,
 *    http__inline_route): they read counters and the store's cached
 *    counts, never run a query.
 */
#include "http/http_int.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- /health, /metrics, / ---------------------------------------------------------- */

void http__api_health(struct http_req *r)
{
    struct http_server *s = r->s;
    int state = atomic_load(&s->state);
    json_t *j = json_object();
    const char *status = state == HTTP__LOADING ? "loading" : state == HTTP__FAILED ? "failed" : "ok";
    json_t *pcj = json_null();
    if (state == HTTP__READY) {
        struct http_precompute_progress p;
        http_precompute_progress(s->pc, &p);
        if (p.state == HTTP_PC_FAILED)
            status = "degraded";
        pcj = json_object();
        json_object_set_new(pcj, "state", json_string(http_precompute_state_name(p.state)));
        json_object_set_new(pcj, "catalogs", json_integer(s->nroots));
        json_object_set_new(pcj, "files", json_integer(p.files));
        json_object_set_new(pcj, "added", json_integer(p.added));
        json_object_set_new(pcj, "changed", json_integer(p.changed));
        json_object_set_new(pcj, "unchanged", json_integer(p.unchanged));
        json_object_set_new(pcj, "waiting_at_start", json_integer(p.waiting_at_start));
        json_object_set_new(pcj, "embedded", json_integer(p.embedded));
        json_object_set_new(pcj, "failed", json_integer(p.failed));
        char clean[ERR_MSG_MAX + 64];
        http__scrub(s, p.last_error, clean, sizeof clean, 0);
        json_object_set_new(pcj, "last_error", p.last_error[0] ? http__str_json(clean) : json_null());
    }
    json_object_set_new(j, "status", json_string(status));
    json_object_set_new(j, "version", json_string(s->cfg.version ? s->cfg.version : "?"));
    json_object_set_new(j, "uptime_s", json_real(round((mono_now() - s->t_start) * 1e3) / 1e3));
    if (state == HTTP__READY) {
        /* a poll thread: the counts the store keeps, no query */
        int64_t items = -1, waiting = -1;
        store_counts_cached(s->store, &items, &waiting);
        json_object_set_new(j, "model", json_string(s->model_id));
        json_object_set_new(j, "dim", json_integer(s->pipe->dim));
        json_object_set_new(j, "precision", json_string(pipe_precision_name(s->pipe)));
        json_object_set_new(j, "text", json_boolean(s->pipe->tok && clip_has_text(s->pipe->model)));
        /* the file's name, not where it lies; nothing of a URL (it may hold
         * a password) */
        const char *base = strrchr(s->cfg.store, '/');
        if (strstr(s->cfg.store, "://"))
            json_object_set_new(j, "store", json_pack("{s:s}", "kind", "postgres"));
        else
            json_object_set_new(j, "store",
                                json_pack("{s:s,s:o}", "kind", "embedded", "name",
                                          http__str_json(base ? base + 1 : s->cfg.store)));
        json_object_set_new(j, "items", json_integer(items));
        json_object_set_new(j, "waiting", json_integer(waiting));
        struct pipe_sched_stats bs;
        pipe_sched_stats(s->sched, &bs);
        json_object_set_new(j, "batcher", json_pack("{s:i,s:i,s:i,s:I,s:I}", "max_batch",
                                                    s->cfg.max_batch, "max_wait_ms",
                                                    s->cfg.batch_wait_ms, "queued", bs.queued,
                                                    "batches", (json_int_t)bs.batches, "images",
                                                    (json_int_t)bs.images));
    } else if (state == HTTP__FAILED) {
        char clean[ERR_MSG_MAX + 64];
        http__scrub(s, s->load_error, clean, sizeof clean, 1);
        json_object_set_new(j, "error", http__str_json(clean));
    }
    json_object_set_new(j, "precompute", pcj);
    http__reply_json(r, 200, j);
}

void http__api_metrics(struct http_req *r)
{
    struct http_server *s = r->s;
    struct http_metrics_extra x = {.items = -1, .waiting = -1};
    x.uptime_s = mono_now() - s->t_start;
    x.loading = atomic_load(&s->state) == HTTP__LOADING;
    pthread_mutex_lock(&s->qmu);
    x.work_queue = s->qlen;
    pthread_mutex_unlock(&s->qmu);
    if (atomic_load(&s->state) == HTTP__READY) {
        store_counts_cached(s->store, &x.items, &x.waiting); /* a poll thread: no query */
        struct pipe_sched_stats bs;
        pipe_sched_stats(s->sched, &bs);
        x.image_embeddings = bs.images;
        x.batches = bs.batches;
        memcpy(x.batch_hist, bs.hist, sizeof x.batch_hist);
        x.batch_sum = bs.images;
        x.forward_seconds = bs.forward_s;
        x.queue_depth = bs.queued;
        struct http_precompute_progress p;
        http_precompute_progress(s->pc, &p);
        x.precompute_embedded = p.embedded;
        x.precompute_failed = p.failed;
    }
    size_t n = 0;
    char *text = http_metrics_render(&s->metrics, &x, &n);
    if (!text) {
        http__reply_errf(r, ERR_NOMEM, "out of memory");
        return;
    }
    http__reply_bytes(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, n, 0);
}

void http__api_page(struct http_req *r)
{
    http__reply_bytes(r, 200, "text/html; charset=utf-8", (char *)http__page, http__page_len, 1);
}

