/* sched.c - one thread that turns concurrent image and text requests into
 * batched forward passes (see sched.h).
 *
 * 1. A caller's inputs form a ticket on the caller's stack; the scheduler
 *    takes inputs from tickets in order (for images, the high priority
 *    list first), so a ticket may be split over several passes. The
 *    ticket is done when all its inputs are, and the scheduler never
 *    touches it after that.
 * 2. An image pass waits to fill only while callers announced images still
 *    being decoded (pipe_sched_expect), and only until max_wait after the
 *    oldest queued image: a lone request pays no wait. Text passes never
 *    wait: a text costs nothing to prepare, so whatever is queued goes.
 * 3. Image pixels are copied into one contiguous buffer, outside the lock,
 *    while callers keep theirs alive by waiting.
 * 4. A text pass that fails (pipe_embed_texts fails the whole call when one
 *    text is bad) is redone ticket by ticket, so one caller's bad text
 *    fails only that caller.
 * 5. One thread owning the model keeps the order fair and the batches
 *    large; when images and texts both wait, passes alternate.
 */
#include "pipe/sched.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/clock.h"

const int pipe_sched_bounds[PIPE_SCHED_BUCKETS] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};

int pipe_sched_bucket(int n)
{
    int b = 0;
    while (b < PIPE_SCHED_BUCKETS && n > pipe_sched_bounds[b])
        b++;
    return b;
}

struct ticket {
    const float *px;          /* n images (image tickets) */
    const char *const *texts; /* n texts (text tickets) */
    float *out;               /* n vectors */
    int n;                    /* inputs */
    int next;                 /* first input not yet taken by a pass */
    int done;                 /* inputs finished (ok or failed) */
    int rc;                   /* first error, 0 ok */
    struct err err;           /* its message */
    int64_t t_enq;            /* enqueue time, ns */
    struct ticket *link;      /* next in its queue */
};

struct queue {
    struct ticket *head, *tail;
};

struct seg {
    struct ticket *t; /* ticket */
    int first, n;     /* inputs [first, first+n) of it */
};

enum { Q_HIGH, Q_LOW, Q_TEXT, NQ };

struct pipe_sched {
    struct pipe *p;
    int max_batch, max_wait_us;
    size_t px;                 /* floats per image */
    float *buf;                /* max_batch images */
    float *vecs;               /* max_batch vectors */
    const char **texts;        /* max_batch text pointers */
    struct seg *segs;          /* up to max_batch */
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t work;       /* tickets queued, expect() changed, stop */
    pthread_cond_t done;       /* a pass finished */
    struct queue q[NQ];        /* images high, images low, texts */
    int queued;                /* images not yet taken */
    int queued_texts;          /* texts not yet taken */
    int expecting;             /* images announced, not yet queued */
    int last_text;             /* the last pass was a text pass */
    int stop;
    struct pipe_sched_stats st;
};

static void push(struct queue *q, struct ticket *t)
{
    if (q->tail)
        q->tail->link = t;
    else
        q->head = t;
    q->tail = t;
}

/* Takes up to max_batch inputs from queues [q0, q1) into s->segs; returns
 * the number of segments and the inputs in *nin. Called locked. */
static int take(struct pipe_sched *s, int q0, int q1, int *nin)
{
    int ns = 0, room = s->max_batch;
    for (int qi = q0; qi < q1 && room; qi++) {
        struct queue *q = &s->q[qi];
        while (q->head && room) {
            struct ticket *t = q->head;
            int k = t->n - t->next < room ? t->n - t->next : room;
            s->segs[ns++] = (struct seg){t, t->next, k};
            t->next += k;
            room -= k;
            if (t->next == t->n) {
                q->head = t->link;
                if (!q->head)
                    q->tail = NULL;
            }
        }
    }
    *nin = s->max_batch - room;
    return ns;
}

static int64_t oldest_image(struct pipe_sched *s)
{
    int64_t t = INT64_MAX;
    for (int qi = Q_HIGH; qi <= Q_LOW; qi++)
        if (s->q[qi].head && s->q[qi].head->t_enq < t)
            t = s->q[qi].head->t_enq;
    return t;
}

/* Waits (locked) while an image batch may still fill: see 2. above. */
static void wait_to_fill(struct pipe_sched *s)
{
    int64_t deadline = oldest_image(s) + (int64_t)s->max_wait_us * 1000;
    while (!s->stop && s->queued < s->max_batch && s->expecting > 0 && !s->queued_texts) {
        int64_t now = mono_ns();
        if (now >= deadline)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t abs = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + (deadline - now);
        ts.tv_sec = abs / 1000000000;
        ts.tv_nsec = abs % 1000000000;
        pthread_cond_timedwait(&s->work, &s->mu, &ts);
    }
}

/* Hands the vectors of a pass (rc: its result) back to its segments.
 * Called locked. */
static void deliver(struct pipe_sched *s, int ns, int rc, const struct err *e)
{
    const int dim = s->p->dim;
    int o = 0;
    for (int i = 0; i < ns; i++) {
        struct seg *g = &s->segs[i];
        if (rc) {
            if (!g->t->rc) {
                g->t->rc = rc;
                g->t->err = *e;
            }
        } else {
            memcpy(g->t->out + (size_t)g->first * dim, s->vecs + (size_t)o * dim,
                   sizeof(float) * (size_t)dim * (size_t)g->n);
        }
        o += g->n;
        g->t->done += g->n;
    }
}

/* One image pass over ns segments of nimg images (unlocked). */
static int image_pass(struct pipe_sched *s, int ns, int nimg, struct err *e)
{
    int o = 0;
    for (int i = 0; i < ns; i++) {
        memcpy(s->buf + (size_t)o * s->px, s->segs[i].t->px + (size_t)s->segs[i].first * s->px,
               sizeof(float) * s->px * (size_t)s->segs[i].n);
        o += s->segs[i].n;
    }
    return pipe_embed_pixels(s->p, s->buf, nimg, s->vecs, 0, e);
}

/* One text pass (unlocked); on failure each segment is redone alone, and
 * its own result recorded in the ticket (see 4.). Returns 0 when every
 * segment ended (well or not) this way, else the pass's error. */
static int text_pass(struct pipe_sched *s, int ns, int ntext, struct err *e)
{
    int o = 0;
    for (int i = 0; i < ns; i++)
        for (int k = 0; k < s->segs[i].n; k++)
            s->texts[o++] = s->segs[i].t->texts[s->segs[i].first + k];
    int rc = pipe_embed_texts(s->p, s->texts, ntext, s->vecs, 0, e);
    if (rc == 0 || ns == 1)
        return rc;
    /* see 4.: each segment alone, its vectors straight into its ticket */
    for (int i = 0; i < ns; i++) {
        struct seg *g = &s->segs[i];
        struct err ge = {0};
        const int dim = s->p->dim;
        int grc = pipe_embed_texts(s->p, g->t->texts + g->first, g->n,
                                   g->t->out + (size_t)g->first * dim, 0, &ge);
        if (grc && !g->t->rc) {
            g->t->rc = grc;
            g->t->err = ge;
        }
    }
    return 1; /* delivered by hand: the caller only counts */
}

static void *run(void *arg)
{
    struct pipe_sched *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->stop && s->queued == 0 && s->queued_texts == 0)
            pthread_cond_wait(&s->work, &s->mu);
        if (s->queued == 0 && s->queued_texts == 0)
            break; /* stopping and drained */
        int texts = s->queued_texts && (!s->queued || !s->last_text);
        if (!texts)
            wait_to_fill(s);
        int n, ns = texts ? take(s, Q_TEXT, NQ, &n) : take(s, Q_HIGH, Q_TEXT, &n);
        if (texts)
            s->queued_texts -= n;
        else
            s->queued -= n;
        s->last_text = texts;
        pthread_mutex_unlock(&s->mu);

        struct err e = {0};
        int64_t t0 = mono_ns();
        int rc = texts ? text_pass(s, ns, n, &e) : image_pass(s, ns, n, &e);
        double secs = (double)(mono_ns() - t0) / 1e9;

        pthread_mutex_lock(&s->mu);
        if (texts && rc == 1) { /* redone segment by segment */
            for (int i = 0; i < ns; i++)
                s->segs[i].t->done += s->segs[i].n;
            rc = 0;
        } else {
            deliver(s, ns, rc, &e);
        }
        s->st.failed += rc != 0;
        if (texts) {
            s->st.text_batches++;
            s->st.texts += rc ? 0 : (uint64_t)n;
            s->st.text_forward_s += secs;
        } else {
            s->st.batches++;
            s->st.images += rc ? 0 : (uint64_t)n;
            s->st.hist[pipe_sched_bucket(n)]++;
            s->st.forward_s += secs;
        }
        pthread_cond_broadcast(&s->done);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void sched_free_bufs(struct pipe_sched *s)
{
    free(s->buf);
    free(s->vecs);
    free(s->texts);
    free(s->segs);
    free(s);
}

int pipe_sched_new(struct pipe_sched **out, struct pipe *p, const struct pipe_sched_opts *o,
                   struct err *err)
{
    *out = NULL;
    if (o->max_batch < 1 || o->max_batch > PIPE_SCHED_MAX_BATCH || o->max_wait_us < 0)
        return err_set(err, ERR_INVALID_ARGUMENT,
                       "scheduler: max batch %d (1..%d), wait %d us", o->max_batch,
                       PIPE_SCHED_MAX_BATCH, o->max_wait_us);
    struct pipe_sched *s = calloc(1, sizeof *s);
    if (!s)
        return err_set(err, ERR_NOMEM, "out of memory");
    s->p = p;
    s->max_batch = o->max_batch;
    s->max_wait_us = o->max_wait_us;
    s->px = 3 * (size_t)p->size * (size_t)p->size;
    s->buf = malloc(sizeof(float) * s->px * (size_t)s->max_batch);
    s->vecs = malloc(sizeof(float) * (size_t)p->dim * (size_t)s->max_batch);
    s->texts = malloc(sizeof *s->texts * (size_t)s->max_batch);
    s->segs = malloc(sizeof *s->segs * (size_t)s->max_batch);
    if (!s->buf || !s->vecs || !s->texts || !s->segs) {
        sched_free_bufs(s);
        return err_set(err, ERR_NOMEM, "out of memory for a batch of %d images", o->max_batch);
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->work, NULL);
    pthread_cond_init(&s->done, NULL);
    if (pthread_create(&s->th, NULL, run, s) != 0) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->work);
        pthread_cond_destroy(&s->done);
        sched_free_bufs(s);
        return err_set(err, ERR_INTERNAL, "cannot start the inference thread");
    }
    *out = s;
    return 0;
}

void pipe_sched_free(struct pipe_sched *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_broadcast(&s->work);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->th, NULL);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->work);
    pthread_cond_destroy(&s->done);
    sched_free_bufs(s);
}

void pipe_sched_expect(struct pipe_sched *s, int delta)
{
    pthread_mutex_lock(&s->mu);
    s->expecting += delta;
    if (s->expecting < 0)
        s->expecting = 0;
    if (delta < 0)
        pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->mu);
}

/* Queues t on queue qi and waits until it is done. Called unlocked. */
static int submit(struct pipe_sched *s, struct ticket *t, int qi, int announced,
                  struct err *err)
{
    t->t_enq = mono_ns();
    pthread_mutex_lock(&s->mu);
    s->expecting -= announced;
    if (s->expecting < 0)
        s->expecting = 0;
    if (s->stop) {
        pthread_mutex_unlock(&s->mu);
        return err_set(err, ERR_UNAVAILABLE, "the server is shutting down");
    }
    push(&s->q[qi], t);
    if (qi == Q_TEXT)
        s->queued_texts += t->n;
    else
        s->queued += t->n;
    pthread_cond_signal(&s->work);
    while (t->done < t->n)
        pthread_cond_wait(&s->done, &s->mu);
    pthread_mutex_unlock(&s->mu);
    if (t->rc) {
        if (err)
            *err = t->err;
        return t->rc;
    }
    return 0;
}

int pipe_sched_images(struct pipe_sched *s, const float *pixels, int n, float *out,
                      int announced, int low, struct err *err)
{
    if (n <= 0) {
        if (announced)
            pipe_sched_expect(s, -announced);
        return 0;
    }
    struct ticket t = {.px = pixels, .out = out, .n = n};
    return submit(s, &t, low ? Q_LOW : Q_HIGH, announced, err);
}

int pipe_sched_texts(struct pipe_sched *s, const char *const *texts, int n, float *out,
                     struct err *err)
{
    if (n <= 0)
        return 0;
    struct ticket t = {.texts = texts, .out = out, .n = n};
    return submit(s, &t, Q_TEXT, 0, err);
}

void pipe_sched_stats(struct pipe_sched *s, struct pipe_sched_stats *out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->st;
    out->queued = s->queued;
    out->queued_texts = s->queued_texts;
    pthread_mutex_unlock(&s->mu);
}
