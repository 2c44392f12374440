/* precompute.h - the start-up precompute: catalog folders are scanned into
 * the store and every item waiting for an embedding is embedded in the
 * background, through the scheduler at low priority, while the server
 * already answers.
 *
 * It runs on the ingest library (src/ingest/ingest.h), with the rules of
 * `imgsearch index`: images are told by their bytes, symbolic links are
 * followed only inside the catalog roots, file names become UTF-8 ids
 * (non-UTF-8 bytes and '%' written %XX), and items are found by source
 * path: an unchanged file (same size and mtime) keeps its item and its
 * embedding; a changed one is hashed, and embedded again only if its
 * bytes changed; a new one is added as waiting. A folder indexed with
 * `imgsearch index` (ids relative to the folder) is unchanged here, and
 * the reverse. Every batch of embeddings is one transaction, so a restart
 * (even after SIGKILL) resumes from the store's waiting items and never
 * embeds a finished item again. The worker then sleeps until
 * http_precompute_wake (an asynchronous PUT).
 *
 * Several servers on one store (PostgreSQL) share the work: waiting items
 * are taken in leased claims (store_claim_waiting), so each is embedded
 * once, and a killed server's claim is taken over when its lease runs
 * out. An item that cannot be embedded is marked failed in the store
 * (store_set_failed): no server tries it again until its file changes.
 */
#ifndef IMGSEARCH_HTTP_PRECOMPUTE_H
#define IMGSEARCH_HTTP_PRECOMPUTE_H

#include <stdint.h>

#include "pipe/sched.h"
#include "pipe/pipe.h"
#include "store/store.h"
#include "util/err.h"

struct http_precompute;

#define HTTP_PC_LEASE_DEFAULT 120 /* seconds a claim of waiting items lasts */

struct http_precompute_opts {
    const char *const *roots;    /* catalog folders, absolute and resolved */
    const char *const *prefixes; /* id prefix per root ("" or "name/") */
    int nroots;
    int batch;                   /* images per round (1..256) */
    int pause_ms;                /* sleep after each batch (0: none) */
    int decoders;                /* decoder threads (0: half the CPUs) */
    int lease_seconds;           /* lease of a claim (0: HTTP_PC_LEASE_DEFAULT) */
    void (*log)(void *ctx, const char *msg); /* progress and failures; may be NULL */
    void *log_ctx;
};

enum http_precompute_state {
    HTTP_PC_SCANNING,  /* walking the catalog folders */
    HTTP_PC_EMBEDDING, /* embedding waiting items */
    HTTP_PC_IDLE,      /* nothing left to do */
    HTTP_PC_FAILED,    /* stopped on a store error (see last_error) */
};

struct http_precompute_progress {
    enum http_precompute_state state;
    int64_t files;            /* image files seen by the scan (new, changed,
                                 unchanged; a file already in the store is
                                 not opened to tell) */
    int64_t added;            /* new items (registered as waiting) */
    int64_t changed;          /* items whose file's size or mtime changed */
    int64_t unchanged;        /* items left as they were */
    int64_t waiting_at_start; /* items waiting when embedding began, plus the
                                 changed files the scan embedded again */
    int64_t embedded;         /* embeddings written by this run */
    int64_t failed;           /* items this run could not embed (the store
                                 counts the failed items: store_count_failed) */
    char last_error[ERR_MSG_MAX]; /* the latest failure, "" if none */
};

const char *http_precompute_state_name(enum http_precompute_state s);

/* Starts the worker thread. st, p and b must outlive it. */
int http_precompute_start(struct http_precompute **out, struct store *st, struct pipe *p,
                          struct pipe_sched *b, const struct http_precompute_opts *o,
                          struct err *err);

/* An item with sequence number seq now waits for an embedding: the worker
 * claims again at once (the oldest waiting items first). */
void http_precompute_wake(struct http_precompute *pc, int64_t seq);

void http_precompute_progress(struct http_precompute *pc, struct http_precompute_progress *out);

/* The catalog changed (the watcher, src/ingest/watch.h): the worker walks
 * the roots again at its next turn, through the same walk, plan and
 * engine as the start-up scan, and also removes the items whose files
 * vanished (ingest_prune). A failed item is claimed again once the scan
 * saw its file with another size or mtime. */
void http_precompute_rescan(struct http_precompute *pc);

/* The owner id of this worker's claims (host:pid:random), owned by pc. */
const char *http_precompute_owner(struct http_precompute *pc);

/* Finishes the round in progress, stops the thread and frees pc (NULL: no-op). */
void http_precompute_stop(struct http_precompute *pc);

#endif
