/* sched.h - inference scheduling: one thread owns the model and turns
 * concurrent image and text requests into batched forward passes.
 *
 * Callers prepare their inputs in parallel (decode and resize images on
 * their own threads; texts need nothing) and hand them to the scheduler,
 * which groups what is queued into one forward pass of up to max_batch
 * images (or texts), waiting at most max_wait for more images to arrive,
 * and routes each vector back to its caller. Image callers of high
 * priority (requests) are served before low priority ones (background
 * indexing), which only fill spare room. When both images and texts wait,
 * image and text passes alternate, so neither starves.
 *
 * Threads: every function may be called from any thread; the embed calls
 * block until their vectors are written. The pipeline p is used only by
 * the scheduler thread while it runs: callers must not run forward passes
 * on p themselves (preprocessing with pipe_prepare_* is fine).
 */
#ifndef IMGSEARCH_PIPE_SCHED_H
#define IMGSEARCH_PIPE_SCHED_H

#include <stdint.h>

#include "pipe/pipe.h"
#include "util/err.h"

#define PIPE_SCHED_MAX_BATCH 256
#define PIPE_SCHED_BUCKETS 10 /* batch size histogram buckets (+Inf after) */

/* Upper bounds of the batch size histogram buckets: 1, 2, 4, ... 256, 512. */
extern const int pipe_sched_bounds[PIPE_SCHED_BUCKETS];

/* Bucket index (0..PIPE_SCHED_BUCKETS) of a pass of n inputs. */
int pipe_sched_bucket(int n);

struct pipe_sched;

struct pipe_sched_opts {
    int max_batch;   /* images or texts per forward pass (1..PIPE_SCHED_MAX_BATCH) */
    int max_wait_us; /* longest wait for an image batch to fill, from its first image */
};

struct pipe_sched_stats {
    uint64_t images;       /* images embedded */
    uint64_t batches;      /* image forward passes */
    uint64_t failed;       /* forward passes (image or text) that failed */
    uint64_t hist[PIPE_SCHED_BUCKETS + 1]; /* image passes by size */
    double forward_s;      /* seconds in image forward passes */
    uint64_t texts;        /* texts embedded */
    uint64_t text_batches; /* text forward passes */
    double text_forward_s; /* seconds in text forward passes */
    int queued;            /* images waiting now */
    int queued_texts;      /* texts waiting now */
};

/* Starts the scheduler thread. p must outlive it. */
int pipe_sched_new(struct pipe_sched **out, struct pipe *p, const struct pipe_sched_opts *o,
                   struct err *err);

/* Finishes what is queued, stops the thread and frees s (NULL: no-op).
 * Calls made after this began fail with ERR_UNAVAILABLE. */
void pipe_sched_free(struct pipe_sched *s);

/* Announces that n images are being prepared (delta -n when one fails to
 * decode): while any are announced the scheduler waits for them, up to
 * max_wait, instead of starting a smaller batch. */
void pipe_sched_expect(struct pipe_sched *s, int delta);

/* Embeds n preprocessed images (pixels: n * 3 * S * S floats) into out
 * (n * dim floats, L2-normalized), blocking until done. Each image counts
 * against `announced` earlier expect() calls: pass the number of images of
 * this call that were announced. low: 1 for background work. A failed
 * forward pass fails every call that had an image in it. */
int pipe_sched_images(struct pipe_sched *s, const float *pixels, int n, float *out,
                      int announced, int low, struct err *err);

/* Embeds n texts into out (n * dim floats, L2-normalized), blocking until
 * done; the texts of several callers share forward passes. A text that
 * cannot be embedded (bad UTF-8, no text tower) fails only its own call,
 * with pipe_embed_texts' error. */
int pipe_sched_texts(struct pipe_sched *s, const char *const *texts, int n, float *out,
                     struct err *err);

void pipe_sched_stats(struct pipe_sched *s, struct pipe_sched_stats *out);

#endif
