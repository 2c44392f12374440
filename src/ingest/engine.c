/* engine.c - jobs into embeddings in the store (ingest_run, see ingest.h).
 *
 * Design:
 *  1. Pipelined. Decoder threads read, sniff, hash, decode and preprocess
 *     files into a bounded queue of pixel buffers (2 * batch + decoders
 *     buffers, allocated once); the calling thread embeds full batches
 *     while they decode the next ones. Only the calling thread touches the
 *     store.
 *  2. Decoders run at a lower priority (nice +5) than the forward pass, so
 *     with as many decoders as cores the model still gets the CPU first
 *     (measured on 2 cores: tiny model 435 -> ~500 img/s, ViT-B/32 even).
 *     In the server this also keeps the background work behind requests.
 *  3. A batch is collected (up to `batch` images, and up to META_TX_WRITES
 *     results that need no model), embedded, and only then written, in
 *     one transaction: no transaction stays open during inference, so a
 *     server's request threads, whose writes would join an open batch, are
 *     never held up by it or tied to its fate.
 *  4. Before each write the item is read again inside the transaction
 *     (rule 7 of ingest.h): a result for an item someone else changed is
 *     dropped.
 *  5. A stop request (hooks.stop) lets the batch being written commit.
 */
#include "ingest/ingest_int.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "util/sha256.h"

#define META_TX_WRITES 256 /* results without pixels per transaction */
#define DECODER_NICE 5     /* decoder threads run this much nicer */

int ingest_default_decoders(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 8 ? 8 : (int)n;
}

/* ---- the decoder pool --------------------------------------------------- */

enum res_kind { R_PIXELS, R_SAME, R_NOT_IMAGE, R_FAILED };

struct res {
    size_t job;              /* index into the jobs */
    enum res_kind kind;      /* what the decoder found */
    char sha[SHA256_HEX_LEN + 1]; /* digest of the bytes read */
    int64_t size, mtime;     /* of the bytes read */
    float *px;               /* preprocessed pixels (R_PIXELS), a pool buffer */
    struct err err;          /* R_FAILED, R_NOT_IMAGE: why */
};

struct pool {
    pthread_mutex_t mu;      /* guards everything below */
    pthread_cond_t cv_work;  /* a buffer or a queue slot freed, or stop */
    pthread_cond_t cv_res;   /* a result queued, or a worker ended */
    struct res *ring;        /* results, cap slots */
    size_t cap, head, count; /* ring geometry */
    float **free_bufs;       /* free pixel buffers, nfree of them */
    size_t nfree;
    float *buf_block;        /* the one allocation behind every buffer */
    size_t next;             /* next job to take */
    size_t njobs;
    int running;             /* workers not yet finished */
    int stop;                /* 1: workers leave */
    pthread_t *th;           /* nth threads */
    int nth;
    const struct ingest_job *jobs;
    struct pipe *p;          /* shared read-only by decoders */
};

/* Grows *buf to at least want bytes. */
static int grow(uint8_t **buf, size_t *cap, size_t want, const char *path, struct err *err)
{
    if (*cap >= want)
        return 0;
    uint8_t *g = realloc(*buf, want);
    if (!g)
        return err_set(err, ERR_NOMEM, "%s: no memory for %zu bytes", path, want);
    *buf = g;
    *cap = want;
    return 0;
}

/* Reads the file: the first bytes decide whether it is an image at all
 * (rule 1), so a large video is not read. *buf grows as needed (the
 * worker's, reused). */
static int read_file(const char *path, uint8_t **buf, size_t *cap, size_t *len, int64_t *mtime,
                     int *is_image, struct err *err)
{
    *is_image = 0;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(err, ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    int rc = 0, sniffed = 0;
    if (fstat(fd, &sb)) {
        rc = err_set(err, ERR_IO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        rc = err_set(err, ERR_IO, "%s: not a regular file", path);
        goto fail;
    }
    *mtime = (int64_t)sb.st_mtim.tv_sec;
    size_t want = sb.st_size > 0 && (uint64_t)sb.st_size < IMG_MAX_FILE_BYTES
                      ? (size_t)sb.st_size + 1 : 4096;
    if ((rc = grow(buf, cap, want < 64 ? 64 : want, path, err)))
        goto fail;
    for (;;) {
        if (sniffed && *len == *cap) {
            if (*cap > IMG_MAX_FILE_BYTES) {
                rc = err_set(err, ERR_TOO_LARGE, "%s: over %u bytes", path, IMG_MAX_FILE_BYTES);
                goto fail;
            }
            size_t nc = *cap * 2 > (size_t)IMG_MAX_FILE_BYTES + 1 ? (size_t)IMG_MAX_FILE_BYTES + 1
                                                                  : *cap * 2;
            if ((rc = grow(buf, cap, nc, path, err)))
                goto fail;
        }
        /* the first read stops at INGEST_SNIFF_BYTES: enough to sniff */
        size_t room = sniffed ? *cap - *len : INGEST_SNIFF_BYTES - *len;
        ssize_t r = read(fd, *buf + *len, room);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            rc = err_set(err, ERR_IO, "%s: read: %s", path, strerror(errno));
            goto fail;
        }
        *len += (size_t)r;
        if (!sniffed && (r == 0 || *len >= INGEST_SNIFF_BYTES)) {
            if (!ingest__is_image(*buf, *len))
                goto fail; /* not an image: *is_image stays 0 */
            sniffed = 1;
            if (r == 0)
                break;
            continue;
        }
        if (r == 0)
            break;
    }
    if (*len > IMG_MAX_FILE_BYTES) {
        rc = err_set(err, ERR_TOO_LARGE, "%s: over %u bytes", path, IMG_MAX_FILE_BYTES);
        goto fail;
    }
    *is_image = 1;
fail:
    close(fd);
    return rc;
}

static void decode_job(struct pool *pl, size_t j, float *px, struct res *r, uint8_t **buf,
                       size_t *cap)
{
    const struct ingest_job *jb = &pl->jobs[j];
    memset(r, 0, sizeof *r);
    r->job = j;
    size_t len = 0;
    int is_image = 0;
    if (read_file(jb->path, buf, cap, &len, &r->mtime, &is_image, &r->err)) {
        r->kind = R_FAILED;
        return;
    }
    if (!is_image) {
        r->kind = R_NOT_IMAGE;
        err_set(&r->err, ERR_UNSUPPORTED_FORMAT, "%s: not a JPEG, PNG, WebP or GIF image",
                jb->path);
        return;
    }
    r->size = (int64_t)len;
    sha256_hex(*buf, len, r->sha);
    if (jb->old_sha && !strcmp(jb->old_sha, r->sha)) {
        r->kind = R_SAME;
        return;
    }
    if (pipe_prepare_bytes(pl->p, *buf, len, jb->path, px, &r->err)) {
        r->kind = R_FAILED;
        return;
    }
    r->kind = R_PIXELS;
    r->px = px;
}

static void *worker(void *arg)
{
    struct pool *pl = arg;
    /* Below the inference threads: when both want the CPU, the forward
     * pass (OpenMP, whose barriers stall if one thread loses its core)
     * goes first and decoders fill the gaps. Linux nice is per thread. */
    errno = 0;
    int nice_now = getpriority(PRIO_PROCESS, 0);
    if (errno == 0)
        setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid),
                    nice_now + DECODER_NICE > 19 ? 19 : nice_now + DECODER_NICE);
    uint8_t *buf = NULL;
    size_t cap = 0;
    pthread_mutex_lock(&pl->mu);
    for (;;) {
        while (!pl->stop && pl->next < pl->njobs && pl->nfree == 0)
            pthread_cond_wait(&pl->cv_work, &pl->mu);
        if (pl->stop || pl->next >= pl->njobs)
            break;
        size_t j = pl->next++;
        float *px = pl->free_bufs[--pl->nfree];
        pthread_mutex_unlock(&pl->mu);
        struct res r;
        decode_job(pl, j, px, &r, &buf, &cap);
        pthread_mutex_lock(&pl->mu);
        if (r.kind != R_PIXELS)
            pl->free_bufs[pl->nfree++] = px;
        while (!pl->stop && pl->count == pl->cap)
            pthread_cond_wait(&pl->cv_work, &pl->mu);
        if (pl->stop) {
            if (r.kind == R_PIXELS)
                pl->free_bufs[pl->nfree++] = px;
            break;
        }
        pl->ring[(pl->head + pl->count++) % pl->cap] = r;
        pthread_cond_signal(&pl->cv_res);
    }
    pl->running--;
    pthread_cond_broadcast(&pl->cv_res);
    pthread_mutex_unlock(&pl->mu);
    free(buf);
    return NULL;
}

static void pool_stop(struct pool *pl)
{
    pthread_mutex_lock(&pl->mu);
    pl->stop = 1;
    pthread_cond_broadcast(&pl->cv_work);
    pthread_mutex_unlock(&pl->mu);
    for (int i = 0; i < pl->nth; i++)
        pthread_join(pl->th[i], NULL);
    pthread_mutex_destroy(&pl->mu);
    pthread_cond_destroy(&pl->cv_work);
    pthread_cond_destroy(&pl->cv_res);
    free(pl->th);
    free(pl->ring);
    free(pl->free_bufs);
    free(pl->buf_block);
}

static int pool_start(struct pool *pl, struct pipe *p, const struct ingest_jobs *js,
                      const struct ingest_run_opts *o, size_t px, struct err *err)
{
    memset(pl, 0, sizeof *pl);
    pl->jobs = js->v;
    pl->njobs = js->n;
    pl->p = p;
    pl->cap = 2 * (size_t)o->batch + (size_t)o->decoders;
    pl->ring = calloc(pl->cap, sizeof *pl->ring);
    pl->free_bufs = calloc(pl->cap, sizeof *pl->free_bufs);
    pl->buf_block = malloc(pl->cap * px * sizeof(float));
    pl->th = calloc((size_t)o->decoders, sizeof *pl->th);
    pthread_mutex_init(&pl->mu, NULL);
    pthread_cond_init(&pl->cv_work, NULL);
    pthread_cond_init(&pl->cv_res, NULL);
    if (!pl->ring || !pl->free_bufs || !pl->buf_block || !pl->th) {
        pool_stop(pl);
        return err_set(err, ERR_NOMEM, "no memory for %zu image buffers", pl->cap);
    }
    for (size_t i = 0; i < pl->cap; i++)
        pl->free_bufs[pl->nfree++] = pl->buf_block + i * px;
    /* Signals go to the calling thread, which owns the stop request. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int rc = 0;
    pthread_mutex_lock(&pl->mu);
    for (int i = 0; i < o->decoders; i++) {
        if (pthread_create(&pl->th[i], NULL, worker, pl)) {
            rc = err_set(err, ERR_NOMEM, "cannot start decoder thread %d", i + 1);
            break;
        }
        pl->nth++;
        pl->running++;
    }
    pthread_mutex_unlock(&pl->mu);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc)
        pool_stop(pl);
    return rc;
}

/* Next result: 1 got one, 0 every job is done, -1 a stop was requested. */
static int pool_pop(struct pool *pl, const struct ingest_hooks *h, struct res *r)
{
    pthread_mutex_lock(&pl->mu);
    for (;;) {
        if (ingest__stop(h)) {
            pthread_mutex_unlock(&pl->mu);
            return -1;
        }
        if (pl->count)
            break;
        if (pl->running == 0) {
            pthread_mutex_unlock(&pl->mu);
            return 0;
        }
        /* wake now and then to see the stop request (a signal handler's) */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&pl->cv_res, &pl->mu, &ts);
    }
    *r = pl->ring[pl->head];
    pl->head = (pl->head + 1) % pl->cap;
    pl->count--;
    pthread_cond_broadcast(&pl->cv_work);
    pthread_mutex_unlock(&pl->mu);
    return 1;
}

static void pool_release(struct pool *pl, float *px)
{
    pthread_mutex_lock(&pl->mu);
    pl->free_bufs[pl->nfree++] = px;
    pthread_cond_broadcast(&pl->cv_work);
    pthread_mutex_unlock(&pl->mu);
}

/* ---- writing results ------------------------------------------------------ */

struct run {
    struct store *st;
    struct pipe *p;
    struct ingest_jobs *js;
    const struct ingest_hooks *h;
    struct ingest_counts *n;
    struct ingest_progress pr;
};

static int same_str(const char *a, const char *b)
{
    return a == b || (a && b && !strcmp(a, b));
}

/* Rule 7: 1 when the item is as the plan saw it (*now filled when present),
 * 0 when someone changed it, or a negative store error. */
static int as_planned(struct run *ru, const struct ingest_job *j, struct store_item *now,
                      struct err *err)
{
    struct err ge;
    int rc = store_get(ru->st, j->id, now, &ge);
    if (rc == -ERR_NOT_FOUND || rc == -ERR_INVALID_ARGUMENT || rc == -ERR_INVALID_UTF8)
        return j->plan_seq == 0; /* a bad id fails in store_put */
    if (rc) {
        *err = ge;
        return rc;
    }
    return j->plan_seq != 0 && now->seq == j->plan_seq && now->has_embedding == j->plan_embedded &&
           same_str(now->source, j->plan_source) && same_str(now->sha256, j->plan_sha);
}

/* Writes one result (vec NULL: bytes unchanged, no new embedding). Returns
 * 1 written, 0 not (failed or dropped: outcome set), or a store error. */
static int put_result(struct run *ru, struct ingest_job *j, const struct res *r, const float *vec,
                      struct err *err)
{
    struct store_item now = {0};
    int ok = as_planned(ru, j, &now, err);
    if (ok <= 0) {
        store_item_clear(&now);
        if (ok == 0) {
            j->outcome = INGEST_DROPPED;
            ru->n->dropped++;
        }
        return ok;
    }
    struct store_item it = {
        .id = j->id,
        .source = j->path,
        .sha256 = (char *)r->sha,
        .size = r->size,
        .mtime = r->mtime,
        .metadata = j->metadata ? j->metadata : now.metadata,
        .embedding = (float *)vec,
    };
    struct err pe;
    int rc = store_put(ru->st, &it, NULL, &pe);
    store_item_clear(&now);
    if (rc == -ERR_INVALID_ARGUMENT || rc == -ERR_INVALID_UTF8) {
        /* a put that fails on the item itself (a bad id, metadata) fails
         * the file; anything else (the database) stops the run */
        j->outcome = INGEST_FAILED;
        char msg[ERR_MSG_MAX + 64];
        snprintf(msg, sizeof msg, "%s: %s", j->path, pe.msg);
        ingest__fail(ru->h, ru->n, msg);
        return 0;
    }
    if (rc) {
        *err = pe;
        return rc;
    }
    return 1;
}

/* A result without pixels: 1 when it must be written (R_SAME). */
static int settle(struct run *ru, const struct res *r)
{
    struct ingest_job *j = &ru->js->v[r->job];
    if (r->kind == R_SAME)
        return 1;
    if (r->kind == R_NOT_IMAGE) {
        j->outcome = INGEST_NOT_IMAGE;
        if (j->explicit_file)
            ingest__fail(ru->h, ru->n, r->err.msg);
        return 0;
    }
    j->outcome = INGEST_FAILED;
    ingest__fail(ru->h, ru->n, r->err.msg);
    return 0;
}

/* Embeds the nb images of a batch; on failure every one of them fails. */
static int embed(struct run *ru, const float *px, const struct res *res, int nb, float *vecs)
{
    struct err ee;
    int rc = ru->h && ru->h->embed ? ru->h->embed(ru->h->ctx, px, nb, vecs, &ee)
                                   : pipe_embed_pixels(ru->p, px, nb, vecs, 0, &ee);
    if (!rc)
        return 0;
    for (int i = 0; i < nb; i++) {
        char msg[ERR_MSG_MAX + 64];
        struct ingest_job *j = &ru->js->v[res[i].job];
        snprintf(msg, sizeof msg, "%s: %s", j->path, ee.msg);
        j->outcome = INGEST_FAILED;
        ingest__fail(ru->h, ru->n, msg);
    }
    return -1;
}

/* One transaction: the unchanged-bytes results, then the embedded ones. */
static int write_batch(struct run *ru, const struct res *same, int ns, const struct res *res,
                       int nb, const float *vecs, struct err *err)
{
    if (!ns && !nb)
        return 0;
    int rc = store_begin(ru->st, err);
    for (int i = 0; i < ns && !rc; i++) {
        struct ingest_job *j = &ru->js->v[same[i].job];
        int w = put_result(ru, j, &same[i], NULL, err);
        if (w < 0)
            rc = w;
        else if (w) {
            j->outcome = INGEST_SAME;
            if (j->kind == INGEST_CHANGED && !j->meta_changed)
                ru->n->unchanged++;
            else
                ru->n->updated++;
        }
    }
    for (int i = 0; i < nb && !rc; i++) {
        struct ingest_job *j = &ru->js->v[res[i].job];
        int w = put_result(ru, j, &res[i], vecs + (size_t)i * ru->p->dim, err);
        if (w < 0)
            rc = w;
        else if (w) {
            j->outcome = INGEST_EMBEDDED;
            ru->n->embedded++;
            if (j->kind == INGEST_NEW)
                ru->n->added++;
            else
                ru->n->updated++;
        }
    }
    if (rc) {
        store_rollback(ru->st, NULL);
        return rc;
    }
    return store_commit(ru->st, err);
}

static void progress(struct run *ru)
{
    if (ru->h && ru->h->progress)
        ru->h->progress(ru->h->ctx, &ru->pr);
}

/* ---- the loop ---------------------------------------------------------------- */

struct bufs {
    float *px;       /* batch * px floats: the batch's pixels */
    float *vecs;     /* batch * dim floats */
    struct res *res; /* batch results with pixels */
    struct res *same; /* META_TX_WRITES results with unchanged bytes */
};

/* Collects one batch from the pool: *nb images, *ns unchanged files.
 * Returns 1 more may follow, 0 every job is done, -1 a stop was asked. */
static int collect(struct run *ru, struct pool *pl, int batch, size_t px, struct bufs *b,
                   int *nb, int *ns)
{
    *nb = *ns = 0;
    while (*nb < batch && *ns < META_TX_WRITES) {
        struct res r;
        int got = pool_pop(pl, ru->h, &r);
        if (got <= 0)
            return got;
        ru->pr.done++;
        if (r.kind == R_PIXELS) {
            memcpy(b->px + (size_t)*nb * px, r.px, px * sizeof *b->px);
            pool_release(pl, r.px);
            r.px = NULL;
            b->res[(*nb)++] = r;
            continue;
        }
        if (settle(ru, &r))
            b->same[(*ns)++] = r;
        progress(ru);
    }
    return 1;
}

int ingest_run(struct store *st, struct pipe *p, struct ingest_jobs *js,
               const struct ingest_run_opts *o, const struct ingest_hooks *h,
               struct ingest_counts *n, struct err *err)
{
    if (js->n == 0)
        return ingest__stop(h) ? err_set(err, ERR_INTERRUPTED, "interrupted") : 0;
    if (o->batch < 1 || o->batch > 256 || o->decoders < 1)
        return err_set(err, ERR_INVALID_ARGUMENT, "batch %d (1..256), decoders %d (1..)",
                       o->batch, o->decoders);
    struct run ru = {.st = st, .p = p, .js = js, .h = h, .n = n, .pr = {.total = js->n}};
    const size_t px = 3 * (size_t)p->size * (size_t)p->size;
    const int B = o->batch;
    struct bufs b = {
        .px = malloc((size_t)B * px * sizeof *b.px),
        .vecs = malloc((size_t)B * (size_t)p->dim * sizeof *b.vecs),
        .res = malloc((size_t)B * sizeof *b.res),
        .same = malloc(META_TX_WRITES * sizeof *b.same),
    };
    struct pool pl;
    int rc = 0, pool_on = 0;
    if (!b.px || !b.vecs || !b.res || !b.same) {
        rc = err_set(err, ERR_NOMEM, "no memory for a batch of %d images", B);
        goto fail;
    }
    if ((rc = pool_start(&pl, p, js, o, px, err)))
        goto fail;
    pool_on = 1;
    for (;;) {
        int nb, ns;
        int more = collect(&ru, &pl, B, px, &b, &nb, &ns);
        if (nb && embed(&ru, b.px, b.res, nb, b.vecs))
            nb = 0;
        if ((rc = write_batch(&ru, b.same, ns, b.res, nb, b.vecs, err)))
            goto fail;
        progress(&ru);
        if (more == 0)
            break;
        if (more < 0 || ingest__stop(h)) {
            rc = err_set(err, ERR_INTERRUPTED, "interrupted");
            break;
        }
    }
fail:
    if (pool_on)
        pool_stop(&pl);
    free(b.px);
    free(b.vecs);
    free(b.res);
    free(b.same);
    return rc;
}
