/* api_status.c - what the service says about itself: GET /health
 * (liveness), GET /ready (readiness), GET /metrics (Prometheus text,
 * metrics.c) and the search page GET /.
 *
 * 1. /health, /metrics and / run on libmicrohttpd's poll threads
 *    (router.c, http__inline_route): they read counters and the store's
 *    cached counts, never run a query. /health answers 200 while the
 *    process runs, whatever the model's state ("status" says it).
 * 2. /ready answers 503 (with Retry-After) while the model loads, after a
 *    failed load, while shutting down, and when the store does not answer
 *    a count; 200 otherwise. It runs on a worker, since the count is a
 *    real query (a database store may be unreachable).
 */
#include "http/http_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
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
        /* which index serves: fixed at open, no query (a static string) */
        const char *index = store_index_kind(s->store);
        if (strstr(s->cfg.store, "://"))
            json_object_set_new(j, "store",
                                json_pack("{s:s,s:s}", "kind", "postgres", "index", index));
        else
            json_object_set_new(j, "store",
                                json_pack("{s:s,s:o,s:s}", "kind", "embedded", "name",
                                          http__str_json(base ? base + 1 : s->cfg.store),
                                          "index", index));
        json_object_set_new(j, "items", json_integer(items));
        json_object_set_new(j, "waiting", json_integer(waiting));
        /* items marked failed in the store (by any server), as of this
         * process's last commit or count: a poll thread runs no query */
        json_object_set_new(j, "failed", json_integer(store_failed_cached(s->store)));
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

/* Readiness: the model is loaded (else server.c answered 503 already) and
 * the store answers a query now. Runs on a worker: the query may wait. */
void http__api_ready(struct http_req *r)
{
    struct http_server *s = r->s;
    struct err e = {0};
    int64_t items = 0;
    if (store_count(s->store, &items, &e)) {
        char clean[ERR_MSG_MAX + 64];
        http__scrub(s, e.msg, clean, sizeof clean, 1);
        r->reply.retry_after = 5;
        http__reply_errf(r, ERR_UNAVAILABLE, "the store does not answer: %s", clean);
        return;
    }
    json_t *j = json_pack("{s:s,s:s,s:I}", "status", "ready", "model", s->model_id, "items",
                          (json_int_t)items);
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
        x.items_failed = store_failed_cached(s->store); /* the store's, cached */
    }
    x.version = s->cfg.version ? s->cfg.version : "";
    x.model = "";
    x.precision = "";
    if (atomic_load(&s->state) == HTTP__READY) {
        x.model = s->model_id;
        x.precision = pipe_precision_name(s->pipe);
    }
    struct http_metrics_process p;
    http_metrics_process(&p); /* fields it cannot read stay < 0: not shown */
    size_t n = 0;
    char *text = http_metrics_render(&s->metrics, &x, &p, &n);
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

void http__api_openapi(struct http_req *r)
{
    /* the document with the version in place of its "@VERSION@" */
    static const char mark[] = "@VERSION@";
    const char *v = r->s->cfg.version ? r->s->cfg.version : "0";
    const char *at = strstr(http__openapi, mark);
    size_t head = at ? (size_t)(at - http__openapi) : http__openapi_len;
    size_t tail = at ? http__openapi_len - head - (sizeof mark - 1) : 0;
    size_t vl = at ? strlen(v) : 0, n = head + vl + tail;
    char *b = malloc(n + 1);
    if (!b) {
        http__reply_errf(r, ERR_NOMEM, "out of memory");
        return;
    }
    memcpy(b, http__openapi, head);
    memcpy(b + head, v, vl);
    memcpy(b + head + vl, at ? at + sizeof mark - 1 : "", tail);
    b[n] = 0;
    http__reply_bytes(r, 200, "application/json", b, n, 0);
}

void http__api_docs(struct http_req *r)
{
    http__reply_bytes(r, 200, "text/html; charset=utf-8", (char *)http__docs, http__docs_len, 1);
}
