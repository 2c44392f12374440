/* batcher.c - one thread that turns concurrent image requests into batched
 * forward passes (see batcher.h).
 *
 * 1. A caller's images form a ticket on the caller's stack; the batcher
 *    takes images from tickets in order (high priority list first), so a
 *    ticket may be split over several batches. The ticket is done when all
 *    its images are, and the batcher never touches it after that.
 * 2. The batcher waits for a batch to fill only while callers announced
 *    images still being decoded (http_batcher_expect) and only until
 *    max_wait after the oldest queued image: a lone request pays no wait.
 * 3. Pixels are copied into one contiguous buffer, outside the lock, while
 *    callers keep theirs alive by waiting.
 * 4. Model calls are serialized inside clip anyway; one thread owning them
 *    keeps the order fair and the batches large.
 */
#include "http/batcher.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct ticket {
    const float *px;     /* n images */
    float *out;          /* n vectors */
    int n;               /* images */
    int next;            /* first image not yet taken by a batch */
    int done;            /* images finished (ok or failed) */
    int rc;              /* first error, 0 ok */
    struct err err;      /* its message */
    int64_t t_enq;       /* enqueue time, ns */
    struct ticket *link; /* next in its queue */
};

struct queue {
    struct ticket *head, *tail;
};

struct seg {
    struct ticket *t; /* ticket */
    int first, n;     /* images [first, first+n) of it */
};

struct http_batcher {
    struct pipe *p;
    int max_batch, max_wait_us;
    size_t px;                 /* floats per image */
    float *buf;                /* max_batch images */
    float *vecs;               /* max_batch vectors */
    struct seg *segs;          /* up to max_batch */
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t work;       /* tickets queued, expect() changed, stop */
    pthread_cond_t done;       /* a batch finished */
    struct queue q[2];         /* [0] high, [1] low priority */
    int queued;                /* images not yet taken */
    int expecting;             /* images announced, not yet queued */
    int stop;
    struct http_batcher_stats st;
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Takes up to max_batch images from the queues into b->segs; returns the
 * number of segments and the images in *nimg. Called locked. */
static int take(struct http_batcher *b, int *nimg)
{
    int ns = 0, room = b->max_batch;
    for (int qi = 0; qi < 2 && room; qi++) {
        struct queue *q = &b->q[qi];
        while (q->head && room) {
            struct ticket *t = q->head;
            int k = t->n - t->next < room ? t->n - t->next : room;
            b->segs[ns++] = (struct seg){t, t->next, k};
            t->next += k;
            room -= k;
            if (t->next == t->n) {
                q->head = t->link;
                if (!q->head)
                    q->tail = NULL;
            }
        }
    }
    *nimg = b->max_batch - room;
    b->queued -= *nimg;
    return ns;
}

static int64_t oldest(struct http_batcher *b)
{
    int64_t t = INT64_MAX;
    for (int qi = 0; qi < 2; qi++)
        if (b->q[qi].head && b->q[qi].head->t_enq < t)
            t = b->q[qi].head->t_enq;
    return t;
}

static void *run(void *arg)
{
    struct http_batcher *b = arg;
    const int dim = b->p->dim;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->stop && b->queued == 0)
            pthread_cond_wait(&b->work, &b->mu);
        if (b->queued == 0)
            break; /* stopping and drained */
        int64_t deadline = oldest(b) + (int64_t)b->max_wait_us * 1000;
        while (!b->stop && b->queued < b->max_batch && b->expecting > 0) {
            int64_t now = now_ns();
            if (now >= deadline)
                break;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t abs = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + (deadline - now);
            ts.tv_sec = abs / 1000000000;
            ts.tv_nsec = abs % 1000000000;
            pthread_cond_timedwait(&b->work, &b->mu, &ts);
        }
        int nimg, ns = take(b, &nimg);
        pthread_mutex_unlock(&b->mu);

        int o = 0;
        for (int i = 0; i < ns; i++) {
            memcpy(b->buf + (size_t)o * b->px, b->segs[i].t->px + (size_t)b->segs[i].first * b->px,
                   sizeof(float) * b->px * (size_t)b->segs[i].n);
            o += b->segs[i].n;
        }
        struct err e = {0};
        int64_t t0 = now_ns();
        int rc = pipe_embed_pixels(b->p, b->buf, nimg, b->vecs, 0, &e);
        double secs = (double)(now_ns() - t0) / 1e9;

        pthread_mutex_lock(&b->mu);
        o = 0;
        for (int i = 0; i < ns; i++) {
            struct seg *s = &b->segs[i];
            if (rc) {
                if (!s->t->rc) {
                    s->t->rc = rc;
                    s->t->err = e;
                }
            } else {
                memcpy(s->t->out + (size_t)s->first * dim, b->vecs + (size_t)o * dim,
                       sizeof(float) * (size_t)dim * (size_t)s->n);
            }
            o += s->n;
            s->t->done += s->n;
        }
        b->st.batches++;
        b->st.failed += rc != 0;
        b->st.images += rc ? 0 : (uint64_t)nimg;
        b->st.hist[http_metrics_batch_bucket(nimg)]++;
        b->st.forward_s += secs;
        pthread_cond_broadcast(&b->done);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

int http_batcher_new(struct http_batcher **out, struct pipe *p,
                     const struct http_batcher_opts *o, struct err *err)
{
    *out = NULL;
    if (o->max_batch < 1 || o->max_batch > 256 || o->max_wait_us < 0)
        return err_set(err, ERR_INVALID_ARGUMENT, "batcher: max batch %d (1..256), wait %d us",
                       o->max_batch, o->max_wait_us);
    struct http_batcher *b = calloc(1, sizeof *b);
    if (!b)
        return err_set(err, ERR_NOMEM, "out of memory");
    b->p = p;
    b->max_batch = o->max_batch;
    b->max_wait_us = o->max_wait_us;
    b->px = 3 * (size_t)p->size * (size_t)p->size;
    b->buf = malloc(sizeof(float) * b->px * (size_t)b->max_batch);
    b->vecs = malloc(sizeof(float) * (size_t)p->dim * (size_t)b->max_batch);
    b->segs = malloc(sizeof *b->segs * (size_t)b->max_batch);
    if (!b->buf || !b->vecs || !b->segs) {
        free(b->buf);
        free(b->vecs);
        free(b->segs);
        free(b);
        return err_set(err, ERR_NOMEM, "out of memory for a batch of %d images", o->max_batch);
    }
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->work, NULL);
    pthread_cond_init(&b->done, NULL);
    if (pthread_create(&b->th, NULL, run, b) != 0) {
        pthread_mutex_destroy(&b->mu);
        pthread_cond_destroy(&b->work);
        pthread_cond_destroy(&b->done);
        free(b->buf);
        free(b->vecs);
        free(b->segs);
        free(b);
        return err_set(err, ERR_INTERNAL, "cannot start the batcher thread");
    }
    *out = b;
    return 0;
}

void http_batcher_free(struct http_batcher *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    b->stop = 1;
    pthread_cond_broadcast(&b->work);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->th, NULL);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->work);
    pthread_cond_destroy(&b->done);
    free(b->buf);
    free(b->vecs);
    free(b->segs);
    free(b);
}

void http_batcher_expect(struct http_batcher *b, int delta)
{
    pthread_mutex_lock(&b->mu);
    b->expecting += delta;
    if (b->expecting < 0)
        b->expecting = 0;
    if (delta < 0)
        pthread_cond_signal(&b->work);
    pthread_mutex_unlock(&b->mu);
}

int http_batcher_embed(struct http_batcher *b, const float *pixels, int n, float *out,
                       int announced, int low, struct err *err)
{
    if (n <= 0) {
        if (announced)
            http_batcher_expect(b, -announced);
        return 0;
    }
    struct ticket t = {.px = pixels, .out = out, .n = n, .t_enq = now_ns()};
    pthread_mutex_lock(&b->mu);
    b->expecting -= announced;
    if (b->expecting < 0)
        b->expecting = 0;
    if (b->stop) {
        pthread_mutex_unlock(&b->mu);
        return err_set(err, ERR_UNAVAILABLE, "the server is shutting down");
    }
    struct queue *q = &b->q[low ? 1 : 0];
    if (q->tail)
        q->tail->link = &t;
    else
        q->head = &t;
    q->tail = &t;
    b->queued += n;
    pthread_cond_signal(&b->work);
    while (t.done < t.n)
        pthread_cond_wait(&b->done, &b->mu);
    pthread_mutex_unlock(&b->mu);
    if (t.rc) {
        if (err)
            *err = t.err;
        return t.rc;
    }
    return 0;
}

void http_batcher_stats(struct http_batcher *b, struct http_batcher_stats *out)
{
    pthread_mutex_lock(&b->mu);
    *out = b->st;
    out->queued = b->queued;
    pthread_mutex_unlock(&b->mu);
}
