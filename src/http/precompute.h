/* precompute.h - the start-up precompute: catalog folders are scanned into
 * the store and every item waiting for an embedding is embedded in the
 * background, through the batcher at low priority, while the server
 * already answers.
 *
 * Items are found by source path: an unchanged file (same size and mtime)
 * keeps its item and its embedding, a changed one is re-queued, a new one
 * is added as waiting. Embeddings are written one by one as soon as their
 * batch is done, so a restart (even after SIGKILL) resumes from the
 * store's waiting items and never embeds a finished item again. The worker
 * then sleeps until http_precompute_wake (an asynchronous PUT).
 */
#ifndef IMGSEARCH_HTTP_PRECOMPUTE_H
#define IMGSEARCH_HTTP_PRECOMPUTE_H

#include <stdint.h>

#include "http/batcher.h"
#include "pipe/pipe.h"
#include "store/store.h"
#include "util/err.h"

struct http_precompute;

struct http_precompute_opts {
    const char *const *roots;    /* catalog folders, absolute and resolved */
    const char *const *prefixes; /* id prefix per root ("" or "name/") */
    int nroots;
    int batch;                   /* images per round (1..256) */
    int pause_ms;                /* sleep between rounds (0: none) */
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
    int64_t files;            /* image files seen by the scan */
    int64_t added;            /* new items */
    int64_t changed;          /* items whose file changed (re-queued) */
    int64_t unchanged;        /* items left as they were */
    int64_t waiting_at_start; /* items waiting when embedding began */
    int64_t embedded;         /* embeddings written by this run */
    int64_t failed;           /* items that could not be embedded */
    char last_error[ERR_MSG_MAX]; /* the latest failure, "" if none */
};

const char *http_precompute_state_name(enum http_precompute_state s);

/* Starts the worker thread. st, p and b must outlive it. */
int http_precompute_start(struct http_precompute **out, struct store *st, struct pipe *p,
                          struct http_batcher *b, const struct http_precompute_opts *o,
                          struct err *err);

/* An item with sequence number seq now waits for an embedding. */
void http_precompute_wake(struct http_precompute *pc, int64_t seq);

void http_precompute_progress(struct http_precompute *pc, struct http_precompute_progress *out);

/* Finishes the round in progress, stops the thread and frees pc (NULL: no-op). */
void http_precompute_stop(struct http_precompute *pc);

/* 1 when name ends in an image extension we index (jpg, jpeg, png, webp, gif). */
int http_is_image_name(const char *name);

#endif
