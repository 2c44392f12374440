/* http.h - the imgsearch HTTP service: the seed's feature-extraction API,
 * search, items, zero-shot labels, metrics and a web page, on
 * libmicrohttpd.
 *
 * Life of a server:
 *   http_server_start   binds the listener and answers at once: /health
 *                       says "loading", model routes answer 503 with
 *                       Retry-After;
 *   http_server_load    (any thread) loads the model, opens the store,
 *                       starts the scheduler and the start-up precompute;
 *                       from then on every route answers;
 *   http_server_shutdown stops accepting, lets in-flight requests finish,
 *                       stops the background threads;
 *   http_server_free    closes the store (which writes its index file).
 *
 * Threads: libmicrohttpd's poll threads parse requests and answer the
 * cheap routes (page, health, metrics, errors) themselves; everything that
 * touches the model or the store is suspended and handed to a pool of
 * worker threads, whose images go through one scheduler thread (src/pipe/sched.h).
 */
#ifndef IMGSEARCH_HTTP_H
#define IMGSEARCH_HTTP_H

#include <stddef.h>

#include "pipe/pipe.h"
#include "util/err.h"

struct http_server;

struct http_config {
    const char *listen;           /* "HOST:PORT", [v6]:PORT; port 0 picks a free one */
    const char *store;            /* store path, or a postgres:// URL */
    const char *uploads;          /* folder for uploaded images; NULL: STORE.images
                                   * (required when store is a URL) */
    const char *model;            /* model folder */
    struct pipe_opts pipe;        /* precision, decode limits */
    const char *const *catalogs;  /* catalog folders to precompute */
    int ncatalogs;
    const char *api_key;          /* NULL or "": no key */
    const char *const *cors_origins; /* origins browsers may call from ("*": any, reads
                                      * only); none: CORS off (cors.c) */
    int ncors_origins;
    int api_key_all;              /* 1: reads need the key too */
    int max_batch;                /* images per forward pass (1..256) */
    int batch_wait_ms;            /* longest wait for a batch to fill */
    int batch_limit;              /* images per /extract-features-batch call */
    size_t max_body;              /* request body limit, bytes */
    int threads;                  /* request worker threads */
    int poll_threads;             /* libmicrohttpd threads */
    int max_connections;          /* open connections at most */
    int idle_timeout_s;           /* close connections idle this long */
    int request_timeout_s;        /* cut requests whose body takes longer */
    int max_queue;                /* requests waiting for a worker before 503 */
    int precompute_pause_ms;      /* sleep between precompute batches */
    int lease_seconds;            /* lease of a precompute claim (0: 120 s) */
    int rescan_interval_s;        /* catalog rescan period (60 s); < 0 none (ingest/watch.c) */
    int no_inotify;               /* 1: no inotify on the catalog, rescans only */
    int no_migrate;               /* 1: refuse a store whose schema is missing or older
                                   * (store_options.no_migrate) */
    int load_delay_ms;            /* tests: wait before loading the model */
    const char *version;          /* shown by /health */
    void (*log)(const char *msg); /* one line, no newline; NULL: silent */
    /* one JSON line per request (reqlog.c), no newline; NULL: no access log.
     * Called from libmicrohttpd's threads, several at once. */
    void (*access_log)(const char *line);
    /* hostile clients (server.c, design note 7); 0 picks the default, < 0 turns off */
    int max_per_address;          /* open connections per client address (64) */
    int head_timeout_s;           /* whole request head, first byte to last (10 s) */
    double rate_limit;            /* inference requests/s per address (10) */
    int rate_burst;               /* inference requests at once per address (2 x rate) */
    int shutdown_grace_s;         /* http_server_free's wait for in-flight requests (5 s) */
};

/* Fills defaults for every zero field of cfg (listen 127.0.0.1:8001,
 * batch 16, wait 5 ms, batch limit 64, body 20 MB, ...). */
void http_config_defaults(struct http_config *cfg);

/* Binds and starts answering (state "loading"). cfg's strings must live as
 * long as the server. ERR_IO when the address cannot be bound. */
int http_server_start(struct http_server **out, const struct http_config *cfg,
                      struct err *err);

/* "http://HOST:PORT" with the real port. Owned by s. */
const char *http_server_url(const struct http_server *s);

/* Loads the model and the store and starts the background work. On error
 * the server stays up answering 503 until shut down. A database store that
 * does not answer yet is waited for (503 on /ready meanwhile). */
int http_server_load(struct http_server *s, struct err *err);

/* Makes a http_server_load waiting for the database give up (any thread,
 * e.g. on SIGTERM); it then fails with the database's error. */
void http_server_cancel_load(struct http_server *s);

/* Stops accepting, waits up to grace_s for in-flight requests, then
 * answers the requests still queued for a worker 503, waits for the ones a
 * worker is running (one forward pass each), closes every connection
 * (half-sent bodies included) and stops the daemon, the workers, the
 * precompute and the scheduler. Idempotent. */
void http_server_shutdown(struct http_server *s, int grace_s);

/* Shuts down if needed (grace cfg.shutdown_grace_s), closes the store (writing its index) and frees s.
 * Returns the store's close error, if any. NULL: no-op. */
int http_server_free(struct http_server *s, struct err *err);

#endif
