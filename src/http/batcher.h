/* batcher.h - dynamic batching of image embeddings.
 *
 * Request threads prepare pixels (decode, resize: parallel, per request)
 * and hand them to one batcher thread, which owns inference: it groups
 * what is queued into one forward pass of up to max_batch images, waiting
 * at most max_wait for more to arrive, and routes each vector back to its
 * caller. Callers of high priority (HTTP requests) are served before low
 * priority ones (the start-up precompute), which only fill spare room.
 */
#ifndef IMGSEARCH_HTTP_BATCHER_H
#define IMGSEARCH_HTTP_BATCHER_H

#include <stdint.h>

#include "http/metrics.h"
#include "pipe/pipe.h"
#include "util/err.h"

struct http_batcher;

struct http_batcher_opts {
    int max_batch;   /* images per forward pass (1..256) */
    int max_wait_us; /* longest wait for a batch to fill, from its first image */
};

struct http_batcher_stats {
    uint64_t images;      /* images embedded */
    uint64_t batches;     /* forward passes */
    uint64_t failed;      /* forward passes that failed */
    uint64_t hist[HTTP_METRICS_BATCH_BUCKETS + 1]; /* batches by size */
    double forward_s;     /* seconds in forward passes */
    int queued;           /* images waiting now */
};

/* Starts the batcher thread. p must outlive the batcher. */
int http_batcher_new(struct http_batcher **out, struct pipe *p,
                     const struct http_batcher_opts *o, struct err *err);

/* Embeds what is queued, stops the thread and frees b (NULL: no-op). Calls
 * made after this began fail with ERR_UNAVAILABLE. */
void http_batcher_free(struct http_batcher *b);

/* Announces that n images are being prepared (delta -n when one fails to
 * decode): while any are announced the batcher waits for them, up to
 * max_wait, instead of starting a smaller batch. */
void http_batcher_expect(struct http_batcher *b, int delta);

/* Embeds n preprocessed images (pixels: n * 3 * S * S floats) into out
 * (n * dim floats, L2-normalized), blocking until done. Each image counts
 * against `announced` earlier expect() calls: pass the number of images of
 * this call that were announced. low: 1 for background work. */
int http_batcher_embed(struct http_batcher *b, const float *pixels, int n, float *out,
                       int announced, int low, struct err *err);

void http_batcher_stats(struct http_batcher *b, struct http_batcher_stats *out);

#endif
