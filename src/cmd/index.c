/* index.c - `imgsearch index`: folders of images into a store, and the
 * indexing engine that `imgsearch reindex` shares (index_int.h).
 *
 * Design:
 *  1. Incremental. A file whose source (absolute path) is in the store with
 *     the same size and mtime is not opened. Otherwise its SHA-256 decides:
 *     equal bytes only refresh size/mtime (the embedding is kept), other
 *     bytes are embedded again. A new file whose id is held by an item whose
 *     source vanished is a move: same bytes keep the embedding. mtime is
 *     compared in whole seconds (the store's unit), so a rewrite of the same
 *     size within the same second as the last run goes unseen, as with
 *     rsync's default check.
 *  2. Pipelined. Decoder threads read, hash, sniff, decode and preprocess
 *     files into a bounded queue of pixel buffers (2 * batch + threads
 *     buffers, allocated once); the main thread embeds full batches while
 *     they decode the next ones. Only the main thread touches the store.
 *     Decoders run at a lower priority (nice +5) than the forward pass, so
 *     with as many decoders as cores the model still gets the CPU first
 *     (measured on 2 cores: tiny model 435 -> ~500 img/s, ViT-B/32 even).
 *  3. Crash safe. Every batch is one store transaction holding complete
 *     items (embedding, hash, size, mtime, metadata together), so a killed
 *     run leaves whole batches; a rerun skips them by (source, size, mtime).
 *     SIGINT/SIGTERM only set a flag: the batch being written commits, then
 *     the command stops with exit code 130.
 *  4. Images are recognised by their first bytes (img_sniff), never by name;
 *     hidden files and folders (".name") are skipped, and symbolic links to
 *     folders are not followed (no cycles).
 *  5. Ids: the path relative to the root given (default), the absolute path,
 *     or the file name. An item found by its source keeps its id.
 *  6. Metadata sidecar: CSV with a header (RFC 4180 quoting) or JSON lines;
 *     the `path` column/field is the key when present, else `id`; the other
 *     columns become fields, merged over the item's existing metadata.
 */
#include "cmd/index_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "util/fsutil.h"
#include "util/sha256.h"

#define SIDECAR_MAX_BYTES (256u << 20)
#define META_TX_WRITES 256 /* metadata-only writes per transaction */
#define DECODER_NICE 5     /* decoder threads run this much nicer */

/* ---- small helpers ------------------------------------------------------ */

double ix_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static volatile sig_atomic_t stop_flag;

/* The first signal asks for a clean stop; a second one kills at once (the
 * store is crash safe, so that loses at most the batch being written). */
static void on_signal(int sig)
{
    if (stop_flag) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    stop_flag = 1;
}

void ix_signals_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART; /* SQLite and the decoders need not see EINTR */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int ix_stop_requested(void) { return stop_flag != 0; }

int ix_default_decoders(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 8 ? 8 : (int)n;
}

void ix_ctx_init(struct ix_ctx *c, const char *cmd, const char *verb)
{
    memset(c, 0, sizeof *c);
    c->cmd = cmd;
    c->verb = verb;
    c->batch = 16;
    c->decoders = 1;
    c->t0 = ix_now();
}

void ix_ctx_free(struct ix_ctx *c)
{
    for (size_t i = 0; i < c->nfails; i++)
        free(c->fails[i]);
    free(c->fails);
    c->fails = NULL;
    c->nfails = c->capfails = 0;
}

void ix_fail(struct ix_ctx *c, const char *msg)
{
    c->n.failed++;
    if (c->nfails == c->capfails) {
        size_t nc = c->capfails ? 2 * c->capfails : 16;
        char **g = realloc(c->fails, nc * sizeof *g);
        if (!g)
            return; /* counted, not listed */
        c->fails = g;
        c->capfails = nc;
    }
    char *s = strdup(msg);
    if (s)
        c->fails[c->nfails++] = s;
}

void ix_print_failures(const struct ix_ctx *c)
{
    for (size_t i = 0; i < c->nfails; i++)
        fprintf(stderr, "imgsearch %s: failed: %s\n", c->cmd, c->fails[i]);
    if (c->n.failed)
        fprintf(stderr, "imgsearch %s: %ld file%s failed\n", c->cmd, c->n.failed,
                c->n.failed == 1 ? "" : "s");
}

void ix_jobs_free(struct ix_job *jobs, size_t n)
{
    if (!jobs)
        return;
    for (size_t i = 0; i < n; i++) {
        free(jobs[i].path);
        free(jobs[i].id);
        free(jobs[i].old_sha);
        free(jobs[i].metadata);
    }
    free(jobs);
}

/* "a" + "/" + "b" without doubling a slash; malloc'd. */
static char *path_join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    int slash = la && a[la - 1] != '/';
    char *s = malloc(la + lb + 2);
    if (!s)
        return NULL;
    memcpy(s, a, la);
    if (slash)
        s[la++] = '/';
    memcpy(s + la, b, lb + 1);
    return s;
}

/* An absolute, lexically normal path ("." and ".." folded, no repeated or
 * trailing slashes) for p, relative ones taken from base. Symbolic links
 * are not resolved. malloc'd. */
static char *path_normal(const char *base, const char *p)
{
    char *joined = p[0] == '/' ? strdup(p) : path_join(base, p);
    if (!joined)
        return NULL;
    size_t n = strlen(joined);
    char *out = malloc(n + 2);
    if (!out) {
        free(joined);
        return NULL;
    }
    size_t o = 0;
    for (char *s = joined; *s;) {
        while (*s == '/')
            s++;
        char *e = s;
        while (*e && *e != '/')
            e++;
        size_t len = (size_t)(e - s);
        if (len == 0 || (len == 1 && s[0] == '.')) {
            /* nothing */
        } else if (len == 2 && s[0] == '.' && s[1] == '.') {
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--; /* drop the slash too */
        } else {
            out[o++] = '/';
            memcpy(out + o, s, len);
            o += len;
        }
        s = e;
    }
    if (o == 0)
        out[o++] = '/';
    out[o] = 0;
    free(joined);
    return out;
}

/* ---- a string map (open addressing, keys not owned) --------------------- */

struct strmap {
    const char **keys; /* cap slots, NULL = empty */
    void **vals;       /* value of each slot */
    size_t cap;        /* power of two */
    size_t n;          /* keys held */
};

static uint64_t str_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void strmap_free(struct strmap *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static size_t strmap_slot(const struct strmap *m, const char *k)
{
    size_t i = (size_t)str_hash(k) & (m->cap - 1);
    while (m->keys[i] && strcmp(m->keys[i], k))
        i = (i + 1) & (m->cap - 1);
    return i;
}

static void *strmap_get(const struct strmap *m, const char *k)
{
    if (!m->cap)
        return NULL;
    size_t i = strmap_slot(m, k);
    return m->keys[i] ? m->vals[i] : NULL;
}

/* Sets k -> v (replacing). 0 or -1 when out of memory. */
static int strmap_put(struct strmap *m, const char *k, void *v)
{
    if (2 * (m->n + 1) > m->cap) {
        struct strmap g = {0};
        g.cap = m->cap ? 2 * m->cap : 64;
        g.keys = calloc(g.cap, sizeof *g.keys);
        g.vals = calloc(g.cap, sizeof *g.vals);
        if (!g.keys || !g.vals) {
            strmap_free(&g);
            return -1;
        }
        for (size_t i = 0; i < m->cap; i++)
            if (m->keys[i]) {
                size_t j = strmap_slot(&g, m->keys[i]);
                g.keys[j] = m->keys[i];
                g.vals[j] = m->vals[i];
                g.n++;
            }
        strmap_free(m);
        *m = g;
    }
    size_t i = strmap_slot(m, k);
    if (!m->keys[i]) {
        m->keys[i] = k;
        m->n++;
    }
    m->vals[i] = v;
    return 0;
}

/* ---- the decoder pool --------------------------------------------------- */

enum res_kind { R_PIXELS, R_SAME, R_NOT_IMAGE, R_FAILED };

struct ix_res {
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
    struct ix_res *ring;     /* results, cap slots */
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
    const struct ix_job *jobs;
    struct pipe *p;          /* shared read-only by decoders */
};

/* Reads the file: the first bytes decide whether it is an image at all, so
 * a large video is not read. *buf grows as needed (the worker's, reused). */
static int read_job_file(const char *path, uint8_t **buf, size_t *cap, size_t *len,
                         int64_t *mtime, int *is_image, struct err *err)
{
    *is_image = 0;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(err, ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    int rc = 0;
    if (fstat(fd, &sb)) {
        rc = err_set(err, ERR_IO, "%s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(sb.st_mode)) {
        rc = err_set(err, ERR_IO, "%s: not a regular file", path);
        goto out;
    }
    *mtime = (int64_t)sb.st_mtim.tv_sec;
    size_t want = sb.st_size > 0 && (uint64_t)sb.st_size < IMG_MAX_FILE_BYTES
                      ? (size_t)sb.st_size + 1 : 4096;
    if (want < 64)
        want = 64;
    if (*cap < want) {
        uint8_t *g = realloc(*buf, want);
        if (!g) {
            rc = err_set(err, ERR_NOMEM, "%s: no memory for %zu bytes", path, want);
            goto out;
        }
        *buf = g;
        *cap = want;
    }
    int sniffed = 0;
    for (;;) {
        if (sniffed && *len == *cap) {
            if (*cap > IMG_MAX_FILE_BYTES) {
                rc = err_set(err, ERR_TOO_LARGE, "%s: over %u bytes", path, IMG_MAX_FILE_BYTES);
                goto out;
            }
            size_t nc = *cap * 2 > (size_t)IMG_MAX_FILE_BYTES + 1 ? (size_t)IMG_MAX_FILE_BYTES + 1
                                                                  : *cap * 2;
            uint8_t *g = realloc(*buf, nc);
            if (!g) {
                rc = err_set(err, ERR_NOMEM, "%s: no memory for %zu bytes", path, nc);
                goto out;
            }
            *buf = g;
            *cap = nc;
        }
        /* the first read stops at 32 bytes: enough to sniff */
        size_t room = sniffed ? *cap - *len : 32 - *len;
        ssize_t r = read(fd, *buf + *len, room);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            rc = err_set(err, ERR_IO, "%s: read: %s", path, strerror(errno));
            goto out;
        }
        *len += (size_t)r;
        if (!sniffed && (r == 0 || *len >= 32)) {
            if (img_sniff(*buf, *len) == IMG_FMT_UNKNOWN)
                goto out; /* not an image: *is_image stays 0 */
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
        goto out;
    }
    *is_image = 1;
out:
    close(fd);
    return rc;
}

static void decode_job(struct pool *pl, size_t j, float *px, struct ix_res *r, uint8_t **buf,
                       size_t *cap)
{
    const struct ix_job *jb = &pl->jobs[j];
    memset(r, 0, sizeof *r);
    r->job = j;
    size_t len = 0;
    int is_image = 0;
    if (read_job_file(jb->path, buf, cap, &len, &r->mtime, &is_image, &r->err)) {
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
        struct ix_res r;
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

static int pool_start(struct pool *pl, struct ix_ctx *c, const struct ix_job *jobs, size_t n,
                      size_t px, struct err *err)
{
    memset(pl, 0, sizeof *pl);
    pl->jobs = jobs;
    pl->njobs = n;
    pl->p = c->p;
    pl->cap = 2 * (size_t)c->batch + (size_t)c->decoders;
    pl->ring = calloc(pl->cap, sizeof *pl->ring);
    pl->free_bufs = calloc(pl->cap, sizeof *pl->free_bufs);
    pl->buf_block = malloc(pl->cap * px * sizeof(float));
    pl->th = calloc((size_t)c->decoders, sizeof *pl->th);
    pthread_mutex_init(&pl->mu, NULL);
    pthread_cond_init(&pl->cv_work, NULL);
    pthread_cond_init(&pl->cv_res, NULL);
    if (!pl->ring || !pl->free_bufs || !pl->buf_block || !pl->th) {
        pool_stop(pl);
        return err_set(err, ERR_NOMEM, "no memory for %zu image buffers", pl->cap);
    }
    for (size_t i = 0; i < pl->cap; i++)
        pl->free_bufs[pl->nfree++] = pl->buf_block + i * px;
    /* Signals go to the main thread, which owns the stop flag's meaning. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int rc = 0;
    pthread_mutex_lock(&pl->mu);
    for (int i = 0; i < c->decoders; i++) {
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
static int pool_pop(struct pool *pl, struct ix_res *r)
{
    pthread_mutex_lock(&pl->mu);
    for (;;) {
        if (ix_stop_requested()) {
            pthread_mutex_unlock(&pl->mu);
            return -1;
        }
        if (pl->count)
            break;
        if (pl->running == 0) {
            pthread_mutex_unlock(&pl->mu);
            return 0;
        }
        /* wake now and then to see the stop flag (set by a signal handler) */
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

/* ---- progress ------------------------------------------------------------ */

struct progress {
    int tty;          /* stderr is a terminal: a bar redrawn in place */
    size_t total;     /* jobs */
    size_t done;      /* results handled */
    double t0;        /* start */
    double last;      /* last print */
    int drawn;        /* a bar is on screen */
    const char *verb; /* "indexed" */
};

static void progress_show(struct progress *pr, int force)
{
    double t = ix_now(), el = t - pr->t0;
    if (!force && t - pr->last < (pr->tty ? 0.2 : 2.0))
        return;
    pr->last = t;
    double rate = el > 0 ? (double)pr->done / el : 0;
    pr->drawn = 1;
    if (!pr->tty) {
        fprintf(stderr, "%s %zu/%zu (%.1f img/s)\n", pr->verb, pr->done, pr->total, rate);
        return;
    }
    char bar[31];
    int fill = pr->total ? (int)(30.0 * (double)pr->done / (double)pr->total) : 30;
    for (int i = 0; i < 30; i++)
        bar[i] = i < fill ? '#' : '-';
    bar[30] = 0;
    long eta = rate > 0 ? (long)((double)(pr->total - pr->done) / rate + 0.5) : -1;
    if (eta >= 0)
        fprintf(stderr, "\r%s %zu/%zu [%s] %.1f img/s ETA %ld:%02ld\033[K", pr->verb, pr->done,
                pr->total, bar, rate, eta / 60, eta % 60);
    else
        fprintf(stderr, "\r%s %zu/%zu [%s]\033[K", pr->verb, pr->done, pr->total, bar);
}

/* Clears the bar; a log that got periodic lines gets a last one. */
static void progress_end(struct progress *pr)
{
    if (pr->tty && pr->drawn)
        fputs("\r\033[K", stderr);
    else if (pr->drawn)
        progress_show(pr, 1);
}

/* ---- the engine --------------------------------------------------------- */

static int tx_begin(struct ix_ctx *c, int *in_tx, struct err *err)
{
    if (*in_tx)
        return 0;
    int rc = store_begin(c->st, err);
    if (!rc)
        *in_tx = 1;
    return rc;
}

/* A put that fails on the item itself (a bad id, metadata) fails the file;
 * anything else (the database) stops the run. */
static int put_item(struct ix_ctx *c, struct ix_job *jb, const struct ix_res *r,
                    const float *vec, int *in_tx, struct err *err)
{
    int rc = tx_begin(c, in_tx, err);
    if (rc)
        return rc;
    struct store_item it = {
        .id = jb->id,
        .source = jb->path,
        .sha256 = (char *)r->sha,
        .size = r->size,
        .mtime = r->mtime,
        .metadata = jb->metadata,
        .embedding = (float *)vec,
    };
    struct err pe;
    rc = store_put(c->st, &it, NULL, &pe);
    if (rc == -ERR_INVALID_ARGUMENT) {
        jb->outcome = IX_FAILED;
        char msg[ERR_MSG_MAX + 64];
        snprintf(msg, sizeof msg, "%s: %s", jb->path, pe.msg);
        ix_fail(c, msg);
        return 0;
    }
    if (rc) {
        *err = pe;
        return rc;
    }
    return 1;
}

static int handle_other(struct ix_ctx *c, struct ix_job *jobs, const struct ix_res *r,
                        int *in_tx, struct err *err)
{
    struct ix_job *jb = &jobs[r->job];
    switch (r->kind) {
    case R_SAME: {
        int rc = put_item(c, jb, r, NULL, in_tx, err);
        if (rc <= 0)
            return rc;
        jb->outcome = IX_SAME;
        if (jb->kind == IX_CHANGED && !jb->meta_changed)
            c->n.unchanged++;
        else
            c->n.updated++;
        return 0;
    }
    case R_NOT_IMAGE:
        jb->outcome = IX_NOT_IMAGE;
        if (jb->explicit_file)
            ix_fail(c, r->err.msg);
        return 0;
    case R_FAILED:
    default:
        jb->outcome = IX_FAILED;
        ix_fail(c, r->err.msg);
        return 0;
    }
}

static int embed_batch(struct ix_ctx *c, struct ix_job *jobs, const float *px,
                       const struct ix_res *res, int nb, float *vecs, int *in_tx,
                       struct err *err)
{
    struct err ee;
    if (pipe_embed_pixels(c->p, px, nb, vecs, 0, &ee)) {
        for (int i = 0; i < nb; i++) {
            char msg[ERR_MSG_MAX + 64];
            snprintf(msg, sizeof msg, "%s: %s", jobs[res[i].job].path, ee.msg);
            jobs[res[i].job].outcome = IX_FAILED;
            ix_fail(c, msg);
        }
        return 0;
    }
    for (int i = 0; i < nb; i++) {
        struct ix_job *jb = &jobs[res[i].job];
        int rc = put_item(c, jb, &res[i], vecs + (size_t)i * c->p->dim, in_tx, err);
        if (rc < 0)
            return rc;
        if (rc == 0)
            continue;
        jb->outcome = IX_EMBEDDED;
        c->n.embedded++;
        if (jb->kind == IX_NEW)
            c->n.added++;
        else
            c->n.updated++;
    }
    return 0;
}

int ix_run(struct ix_ctx *c, struct ix_job *jobs, size_t n, struct err *err)
{
    if (n == 0)
        return ix_stop_requested() ? err_set(err, ERR_INTERRUPTED, "interrupted") : 0;
    const size_t px = 3 * (size_t)c->p->size * (size_t)c->p->size;
    const int B = c->batch;
    float *bpx = malloc((size_t)B * px * sizeof *bpx);
    float *vecs = malloc((size_t)B * (size_t)c->p->dim * sizeof *vecs);
    struct ix_res *bres = malloc((size_t)B * sizeof *bres);
    struct pool pl;
    struct progress pr = {.tty = isatty(2), .total = n, .t0 = ix_now(), .verb = c->verb};
    pr.last = pr.t0;
    int rc = 0, pool_on = 0, in_tx = 0;
    if (!bpx || !vecs || !bres) {
        rc = err_set(err, ERR_NOMEM, "no memory for a batch of %d images", B);
        goto out;
    }
    if ((rc = pool_start(&pl, c, jobs, n, px, err)))
        goto out;
    pool_on = 1;
    for (;;) {
        int nb = 0, finished = 0, stopping = 0, writes = 0;
        while (nb < B) {
            struct ix_res r;
            int got = pool_pop(&pl, &r);
            if (got == 0) {
                finished = 1;
                break;
            }
            if (got < 0) {
                stopping = 1;
                break;
            }
            pr.done++;
            if (r.kind == R_PIXELS) {
                memcpy(bpx + (size_t)nb * px, r.px, px * sizeof *bpx);
                pool_release(&pl, r.px);
                r.px = NULL;
                bres[nb++] = r;
                continue;
            }
            if ((rc = handle_other(c, jobs, &r, &in_tx, err)))
                goto out;
            /* many unchanged files in a row: commit them now and then */
            if (++writes >= META_TX_WRITES && nb == 0)
                break;
            if (pr.tty)
                progress_show(&pr, 0);
        }
        if (nb && (rc = embed_batch(c, jobs, bpx, bres, nb, vecs, &in_tx, err)))
            goto out;
        if (in_tx) {
            in_tx = 0;
            if ((rc = store_commit(c->st, err)))
                goto out;
        }
        progress_show(&pr, 0);
        if (finished)
            break;
        if (stopping || ix_stop_requested()) {
            rc = err_set(err, ERR_INTERRUPTED, "interrupted");
            break;
        }
    }
out:
    progress_end(&pr);
    if (in_tx)
        store_rollback(c->st, NULL);
    if (pool_on)
        pool_stop(&pl);
    free(bpx);
    free(vecs);
    free(bres);
    return rc;
}

/* ---- metadata sidecar --------------------------------------------------- */

/* Keys: "p:" + normalized absolute path, "r:" + a relative path as
 * written, "i:" + an item id; each maps to an object of fields. */
struct sidecar {
    json_t *map; /* key -> fields object */
};

struct dbuf {
    char *s;    /* bytes, not NUL-terminated */
    size_t n;   /* used */
    size_t cap; /* allocated */
};

static int dbuf_push(struct dbuf *b, char c)
{
    if (b->n == b->cap) {
        size_t nc = b->cap ? 2 * b->cap : 64;
        char *g = realloc(b->s, nc);
        if (!g)
            return -1;
        b->s = g;
        b->cap = nc;
    }
    b->s[b->n++] = c;
    return 0;
}

/* One CSV record (RFC 4180: comma separated, CRLF or LF, "quoted" fields
 * may hold commas, line breaks and "" for a quote) from s[*pos..n) into
 * row, a JSON array of strings. *line counts lines for messages. */
static int csv_record(const char *file, const char *s, size_t n, size_t *pos, int *line,
                      json_t *row, struct err *err)
{
    struct dbuf b = {0};
    size_t i = *pos;
    int first_line = *line, rc = 0;
    for (;;) {
        b.n = 0;
        if (i < n && s[i] == '"') {
            i++;
            for (;;) {
                if (i >= n) {
                    rc = err_set(err, ERR_INVALID_ARGUMENT,
                                 "%s:%d: a quoted field is never closed", file, first_line);
                    goto out;
                }
                if (s[i] == '"') {
                    if (i + 1 < n && s[i + 1] == '"') {
                        if (dbuf_push(&b, '"'))
                            goto nomem;
                        i += 2;
                        continue;
                    }
                    i++;
                    break;
                }
                if (s[i] == '\n')
                    (*line)++;
                if (dbuf_push(&b, s[i++]))
                    goto nomem;
            }
            if (i < n && s[i] != ',' && s[i] != '\n' && s[i] != '\r') {
                rc = err_set(err, ERR_INVALID_ARGUMENT,
                             "%s:%d: text after the closing quote of a field", file, *line);
                goto out;
            }
        } else {
            while (i < n && s[i] != ',' && s[i] != '\n' && s[i] != '\r')
                if (dbuf_push(&b, s[i++]))
                    goto nomem;
        }
        json_t *f = json_stringn(b.s ? b.s : "", b.n);
        if (!f) {
            rc = err_set(err, ERR_INVALID_UTF8, "%s:%d: a field is not valid UTF-8", file, *line);
            goto out;
        }
        json_array_append_new(row, f);
        if (i < n && s[i] == ',') {
            i++;
            continue;
        }
        if (i < n && s[i] == '\r')
            i++;
        if (i < n && s[i] == '\n')
            i++;
        (*line)++;
        break;
    }
    *pos = i;
    goto out;
nomem:
    rc = err_set(err, ERR_NOMEM, "%s: no memory", file);
out:
    free(b.s);
    return rc;
}

/* Adds fields under the keys for `key` (a path or an id). */
static int sidecar_add(struct sidecar *sc, const char *dir, const char *cwd, int is_path,
                       const char *key, json_t *fields)
{
    char *k[3] = {NULL, NULL, NULL};
    size_t nk = 0;
    if (!is_path) {
        k[nk] = malloc(strlen(key) + 3);
        if (k[nk])
            sprintf(k[nk], "i:%s", key);
        nk++;
    } else {
        /* a relative path may be relative to the sidecar, to the current
         * folder, or to the root being indexed: keep all three readings */
        char *a = path_normal(dir, key), *b = key[0] == '/' ? NULL : path_normal(cwd, key);
        if (a) {
            k[nk] = malloc(strlen(a) + 3);
            if (k[nk])
                sprintf(k[nk], "p:%s", a);
        }
        nk++;
        if (b) {
            k[nk] = malloc(strlen(b) + 3);
            if (k[nk])
                sprintf(k[nk], "p:%s", b);
            nk++;
        }
        if (key[0] != '/') {
            k[nk] = malloc(strlen(key) + 3);
            if (k[nk])
                sprintf(k[nk], "r:%s", key);
            nk++;
        }
        free(a);
        free(b);
    }
    int rc = 0;
    for (size_t i = 0; i < nk; i++) {
        if (!k[i] || json_object_set(sc->map, k[i], fields))
            rc = -1;
        free(k[i]);
    }
    return rc;
}

static int load_csv(struct sidecar *sc, const char *file, const char *dir, const char *cwd,
                    const char *s, size_t n, struct err *err)
{
    size_t pos = 0;
    int line = 1, rc;
    if (n >= 3 && !memcmp(s, "\xef\xbb\xbf", 3))
        pos = 3; /* UTF-8 byte order mark */
    json_t *head = json_array();
    if (!head)
        return err_set(err, ERR_NOMEM, "no memory");
    if ((rc = csv_record(file, s, n, &pos, &line, head, err)))
        goto out;
    size_t ncol = json_array_size(head), key = (size_t)-1;
    for (size_t i = 0; i < ncol; i++)
        if (!strcmp(json_string_value(json_array_get(head, i)), "path"))
            key = i;
    int is_path = key != (size_t)-1;
    for (size_t i = 0; !is_path && i < ncol; i++)
        if (!strcmp(json_string_value(json_array_get(head, i)), "id"))
            key = i;
    if (key == (size_t)-1) {
        rc = err_set(err, ERR_INVALID_ARGUMENT,
                     "%s: the header row has no 'path' or 'id' column", file);
        goto out;
    }
    while (pos < n) {
        int at = line;
        json_t *row = json_array();
        if (!row) {
            rc = err_set(err, ERR_NOMEM, "no memory");
            goto out;
        }
        if ((rc = csv_record(file, s, n, &pos, &line, row, err))) {
            json_decref(row);
            goto out;
        }
        size_t nf = json_array_size(row);
        if (nf == 1 && !*json_string_value(json_array_get(row, 0))) {
            json_decref(row); /* a blank line */
            continue;
        }
        if (nf != ncol) {
            json_decref(row);
            rc = err_set(err, ERR_INVALID_ARGUMENT, "%s:%d: %zu fields, the header has %zu",
                         file, at, nf, ncol);
            goto out;
        }
        const char *k = json_string_value(json_array_get(row, key));
        if (!*k) {
            json_decref(row);
            rc = err_set(err, ERR_INVALID_ARGUMENT, "%s:%d: the %s is empty", file, at,
                         is_path ? "path" : "id");
            goto out;
        }
        json_t *fields = json_object();
        for (size_t i = 0; fields && i < ncol; i++) {
            const char *name = json_string_value(json_array_get(head, i));
            if (i != key && *name)
                json_object_set(fields, name, json_array_get(row, i));
        }
        rc = fields ? sidecar_add(sc, dir, cwd, is_path, k, fields) : -1;
        json_decref(fields);
        json_decref(row);
        if (rc) {
            rc = err_set(err, ERR_NOMEM, "no memory");
            goto out;
        }
    }
out:
    json_decref(head);
    return rc;
}

static int load_jsonl(struct sidecar *sc, const char *file, const char *dir, const char *cwd,
                      const char *s, size_t n, struct err *err)
{
    int line = 0;
    for (size_t pos = 0; pos < n;) {
        const char *nl = memchr(s + pos, '\n', n - pos);
        size_t end = nl ? (size_t)(nl - s) : n;
        line++;
        size_t a = pos, b = end;
        pos = nl ? end + 1 : n;
        while (a < b && (s[a] == ' ' || s[a] == '\t' || s[a] == '\r'))
            a++;
        if (a == b)
            continue;
        json_error_t je;
        json_t *o = json_loadb(s + a, b - a, 0, &je);
        if (!o || !json_is_object(o)) {
            json_decref(o);
            return err_set(err, ERR_INVALID_ARGUMENT, "%s:%d: %s", file, line,
                           o ? "not a JSON object" : je.text);
        }
        json_t *kp = json_object_get(o, "path"), *ki = json_object_get(o, "id");
        int is_path = kp != NULL;
        json_t *kv = is_path ? kp : ki;
        if (!kv || !json_is_string(kv) || !*json_string_value(kv)) {
            json_decref(o);
            return err_set(err, ERR_INVALID_ARGUMENT,
                           "%s:%d: needs a \"path\" or \"id\" string", file, line);
        }
        char *k = strdup(json_string_value(kv));
        json_object_del(o, is_path ? "path" : "id");
        int rc = k ? sidecar_add(sc, dir, cwd, is_path, k, o) : -1;
        free(k);
        json_decref(o);
        if (rc)
            return err_set(err, ERR_NOMEM, "no memory");
    }
    return 0;
}

/* Reads a CSV or JSON lines sidecar (told apart by the first character:
 * '{' starts JSON lines). */
static int sidecar_load(struct sidecar *sc, const char *file, struct err *err)
{
    sc->map = json_object();
    if (!sc->map)
        return err_set(err, ERR_NOMEM, "no memory");
    uint8_t *data;
    size_t n;
    int rc = fs_read_file(file, SIDECAR_MAX_BYTES, &data, &n, err);
    if (rc)
        return rc;
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd)) {
        free(data);
        return err_set(err, ERR_IO, "cannot read the current folder: %s", strerror(errno));
    }
    char *abs = path_normal(cwd, file);
    char *dir = abs ? abs : NULL;
    if (dir) {
        char *slash = strrchr(dir, '/');
        if (slash == dir)
            slash[1] = 0;
        else if (slash)
            *slash = 0;
    }
    const char *s = (const char *)data;
    size_t i = 0;
    if (n >= 3 && !memcmp(s, "\xef\xbb\xbf", 3))
        i = 3;
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
        i++;
    if (!dir)
        rc = err_set(err, ERR_NOMEM, "no memory");
    else if (i < n && s[i] == '{')
        rc = load_jsonl(sc, file, dir, cwd, s, n, err);
    else
        rc = load_csv(sc, file, dir, cwd, s, n, err);
    free(abs);
    free(data);
    return rc;
}

/* The sidecar's fields for a file (merged: path first, then id), or NULL. */
static json_t *sidecar_fields(const struct sidecar *sc, const char *abs, const char *rel,
                              const char *id)
{
    if (!sc->map)
        return NULL;
    json_t *out = NULL;
    const char *pre[3] = {"p:", "r:", "i:"}, *val[3] = {abs, rel, id};
    for (int i = 0; i < 3; i++) {
        if (!val[i])
            continue;
        size_t l = strlen(val[i]);
        char *k = malloc(l + 3);
        if (!k)
            continue;
        memcpy(k, pre[i], 2);
        memcpy(k + 2, val[i], l + 1);
        json_t *f = json_object_get(sc->map, k);
        free(k);
        if (!f)
            continue;
        if (!out)
            out = json_object();
        if (out)
            json_object_update(out, f);
        if (i == 0)
            i++; /* an absolute match wins over the relative reading */
    }
    return out;
}

/* The metadata to write: old (JSON text or NULL) with fields merged over
 * it. *changed tells whether it differs from old. malloc'd. */
static char *merge_metadata(const char *old, json_t *fields, int *changed)
{
    json_t *o = old ? json_loads(old, 0, NULL) : NULL;
    if (!o || !json_is_object(o)) {
        json_decref(o);
        o = json_object();
    }
    json_t *before = json_deep_copy(o);
    if (fields)
        json_object_update(o, fields);
    *changed = !before || !json_equal(before, o);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(before);
    json_decref(o);
    return s;
}

/* ---- walking the roots -------------------------------------------------- */

enum id_from { ID_RELPATH, ID_PATH, ID_NAME };

struct root {
    char *abs;  /* normalized absolute path */
    int is_dir; /* folder (walked) or one file */
};

struct entry {
    char *path;        /* absolute path: the item's source */
    char *rel;         /* path relative to its root (a file root: its name) */
    int64_t size;      /* from stat */
    int64_t mtime;     /* seconds */
    int explicit_file; /* named on the command line */
    int gone;          /* not an image after all: does not count as present */
};

struct walk {
    struct ix_ctx *c;  /* failures go here */
    struct entry *v;   /* files found, n of them */
    size_t n;          /* used */
    size_t cap;        /* allocated */
    char **bad_dirs;   /* folders that could not be read: never pruned */
    size_t nbad;       /* entries in bad_dirs */
};

static int walk_push(struct walk *w, char *path, char *rel, const struct stat *sb, int expl)
{
    if (w->n == w->cap) {
        size_t nc = w->cap ? 2 * w->cap : 256;
        struct entry *g = realloc(w->v, nc * sizeof *g);
        if (!g)
            return -1;
        w->v = g;
        w->cap = nc;
    }
    w->v[w->n++] = (struct entry){path, rel, (int64_t)sb->st_size, (int64_t)sb->st_mtim.tv_sec,
                                  expl, 0};
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void walk_bad_dir(struct walk *w, const char *dir, const char *why)
{
    char msg[ERR_MSG_MAX];
    snprintf(msg, sizeof msg, "%s: cannot read the folder: %s", dir, why);
    ix_fail(w->c, msg);
    char **g = realloc(w->bad_dirs, (w->nbad + 1) * sizeof *g);
    if (g) {
        w->bad_dirs = g;
        if ((g[w->nbad] = strdup(dir)))
            w->nbad++;
    }
}

/* Files under dir (rel: dir relative to the root, "" at the root), sorted
 * by name so ids are assigned in a stable order. */
static int walk_dir(struct walk *w, const char *dir, const char *rel, struct err *err)
{
    if (ix_stop_requested())
        return err_set(err, ERR_INTERRUPTED, "interrupted");
    DIR *d = opendir(dir);
    if (!d) {
        walk_bad_dir(w, dir, strerror(errno));
        return 0;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue; /* hidden, and . and .. */
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **g = realloc(names, cap * sizeof *g);
            if (!g) {
                rc = -1;
                break;
            }
            names = g;
        }
        if (!(names[n] = strdup(de->d_name))) {
            rc = -1;
            break;
        }
        n++;
    }
    closedir(d);
    if (rc) {
        rc = err_set(err, ERR_NOMEM, "no memory");
        goto out;
    }
    if (n)
        qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n && !rc; i++) {
        char *path = path_join(dir, names[i]);
        char *r = *rel ? path_join(rel, names[i]) : strdup(names[i]);
        if (!path || !r) {
            free(path);
            free(r);
            rc = err_set(err, ERR_NOMEM, "no memory");
            break;
        }
        struct stat sb;
        int keep = 0;
        if (lstat(path, &sb) == 0) {
            if (S_ISLNK(sb.st_mode)) /* follow links to files only */
                keep = stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
            else if (S_ISDIR(sb.st_mode))
                rc = walk_dir(w, path, r, err);
            else
                keep = S_ISREG(sb.st_mode);
        }
        if (keep && walk_push(w, path, r, &sb, 0) == 0)
            continue;
        if (keep)
            rc = err_set(err, ERR_NOMEM, "no memory");
        free(path);
        free(r);
    }
out:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

static void walk_free(struct walk *w)
{
    for (size_t i = 0; i < w->n; i++) {
        free(w->v[i].path);
        free(w->v[i].rel);
    }
    free(w->v);
    for (size_t i = 0; i < w->nbad; i++)
        free(w->bad_dirs[i]);
    free(w->bad_dirs);
}

/* ---- the command -------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: imgsearch index --store PATH --model DIR [options] PATH...\n"
            "\n"
            "Adds the images under each PATH (folders are walked recursively; hidden\n"
            "files and folders are skipped; images are recognised by their bytes) to the\n"
            "store, creating it for this model if needed. Incremental: files already in\n"
            "the store with the same size and mtime are not read; changed files are\n"
            "hashed (SHA-256) and embedded again only if their bytes changed. Every\n"
            "batch is committed as it is written: an interrupted run (Ctrl-C stops after\n"
            "the current batch, exit code 130; a second Ctrl-C stops at once) resumes\n"
            "where it stopped.\n"
            "\n"
            "Prints progress on stderr and a summary line on stdout:\n"
            "  {\"added\": 3, \"updated\": 0, \"unchanged\": 9, \"removed\": 0, \"failed\": 0,\n"
            "   \"seconds\": 1.2, \"images_per_s\": 2.5}\n"
            "and the failed files with their reasons on stderr (exit code 2 if any).\n"
            "\n"
            "options:\n"
            "  --store PATH         the store (an SQLite file; PATH.hnsw holds its index)\n"
            "  --model DIR          model folder (default $IMGSEARCH_MODEL); a store made\n"
            "                       with another model is refused: see imgsearch reindex\n"
            "  --id-from WHAT       item ids: relpath (default: the path relative to the\n"
            "                       PATH given; a file given by itself: its name), path\n"
            "                       (the absolute path) or name (the file name)\n"
            "  --metadata FILE      sidecar of metadata: CSV with a header row, or JSON\n"
            "                       lines; the column/field 'path' (relative paths: to\n"
            "                       the sidecar, the current folder or the PATH given) or\n"
            "                       'id' names the item, the others become its fields,\n"
            "                       merged over its metadata (unchanged files too)\n"
            "  --prune              delete items whose files under the PATHs are gone\n"
            "  --batch N            images per forward pass and transaction (default 16)\n"
            "  --decoders N         decoder threads (default: the CPUs, at most 8)\n"
            "  --precision P        auto (default), fp32 or bf16\n"
            "  --help               this text\n");
}

struct idx_opts {
    const char *store;
    const char *model;
    const char *metadata;
    int prune;
    long batch;
    long decoders;
    enum id_from id_from;
    struct pipe_opts po;
};

static char *make_id(enum id_from how, const struct entry *e)
{
    if (how == ID_PATH)
        return strdup(e->path);
    if (how == ID_NAME) {
        const char *s = strrchr(e->path, '/');
        return strdup(s ? s + 1 : e->path);
    }
    return strdup(e->rel);
}

static int is_under(const char *path, const struct root *r)
{
    if (!r->is_dir)
        return !strcmp(path, r->abs);
    size_t l = strlen(r->abs);
    if (l == 1) /* "/" */
        return path[0] == '/';
    return !strncmp(path, r->abs, l) && path[l] == '/';
}

static int under_bad_dir(const struct walk *w, const char *path)
{
    for (size_t i = 0; i < w->nbad; i++) {
        struct root r = {w->bad_dirs[i], 1};
        if (is_under(path, &r))
            return 1;
    }
    return 0;
}

struct jobs {
    struct ix_job *v; /* n jobs */
    size_t n;         /* used */
    size_t cap;       /* allocated */
};

static int jobs_push(struct jobs *j, const struct ix_job *jb)
{
    if (j->n == j->cap) {
        size_t nc = j->cap ? 2 * j->cap : 256;
        struct ix_job *g = realloc(j->v, nc * sizeof *g);
        if (!g)
            return -1;
        j->v = g;
        j->cap = nc;
    }
    j->v[j->n++] = *jb;
    return 0;
}

/* Decides what each file needs (see the design notes at the top): skips
 * unchanged ones, writes metadata-only changes, and makes jobs for the
 * rest. */
static int classify(struct ix_ctx *c, const struct idx_opts *o, struct walk *w,
                    const struct sidecar *sc, struct jobs *jobs, struct err *err)
{
    struct strmap ids = {0};   /* id -> entry, for this run */
    struct strmap paths = {0}; /* path -> entry: files seen */
    int rc = 0, in_tx = 0, writes = 0;
    for (size_t i = 0; i < w->n && !rc; i++) {
        if (ix_stop_requested()) {
            rc = err_set(err, ERR_INTERRUPTED, "interrupted");
            break;
        }
        struct entry *e = &w->v[i];
        /* a file reached through two roots is one file */
        if (strmap_get(&paths, e->path))
            continue;
        if (strmap_put(&paths, e->path, e)) {
            rc = err_set(err, ERR_NOMEM, "no memory");
            break;
        }
        struct store_item it, old;
        struct err fe;
        int fr = store_find_source(c->st, e->path, &it, &fe);
        if (fr && fr != -ERR_NOT_FOUND) {
            *err = fe;
            rc = fr;
            break;
        }
        char msg[ERR_MSG_MAX + 2 * STORE_ID_MAX];
        if (fr == 0) { /* known source */
            json_t *f = sidecar_fields(sc, e->path, e->rel, it.id);
            int changed = 0;
            char *md = merge_metadata(it.metadata, f, &changed);
            json_decref(f);
            if (!md) {
                store_item_clear(&it);
                rc = err_set(err, ERR_NOMEM, "no memory");
                break;
            }
            if (it.has_embedding && it.size == e->size && it.mtime == e->mtime) {
                if (changed) {
                    struct store_item up = it;
                    up.metadata = md;
                    up.embedding = NULL;
                    if (!(rc = tx_begin(c, &in_tx, err)) &&
                        (rc = store_put(c->st, &up, NULL, err)) == -ERR_INVALID_ARGUMENT) {
                        snprintf(msg, sizeof msg, "%s: %s", e->path, err->msg);
                        ix_fail(c, msg);
                        rc = 0;
                    } else if (!rc) {
                        c->n.updated++;
                        if (++writes >= META_TX_WRITES) {
                            in_tx = writes = 0;
                            rc = store_commit(c->st, err);
                        }
                    }
                } else
                    c->n.unchanged++;
                free(md);
                store_item_clear(&it);
                continue;
            }
            struct ix_job jb = {
                .path = strdup(e->path),
                .id = it.id,
                .old_sha = it.has_embedding ? it.sha256 : NULL,
                .metadata = md,
                .kind = it.has_embedding ? IX_CHANGED : IX_WAITING,
                .meta_changed = changed,
                .explicit_file = e->explicit_file,
                .tag = i,
            };
            it.id = NULL;
            if (it.has_embedding)
                it.sha256 = NULL;
            store_item_clear(&it);
            if (!jb.path || jobs_push(jobs, &jb)) {
                free(jb.path);
                free(jb.id);
                free(jb.old_sha);
                free(jb.metadata);
                rc = err_set(err, ERR_NOMEM, "no memory");
            }
            continue;
        }
        /* a new source */
        char *id = make_id(o->id_from, e);
        if (!id) {
            rc = err_set(err, ERR_NOMEM, "no memory");
            break;
        }
        struct entry *other = strmap_get(&ids, id);
        if (other) {
            snprintf(msg, sizeof msg, "%s: its id '%s' is also the id of %s (try --id-from path)",
                     e->path, id, other->path);
            ix_fail(c, msg);
            free(id);
            continue;
        }
        struct ix_job jb = {.kind = IX_NEW, .explicit_file = e->explicit_file, .tag = i};
        int gr = store_get(c->st, id, &old, &fe);
        if (gr && gr != -ERR_NOT_FOUND) {
            free(id);
            *err = fe;
            rc = gr;
            break;
        }
        json_t *f = sidecar_fields(sc, e->path, e->rel, id);
        int changed = 0;
        if (gr == 0) {
            /* a source that is not a local path (a URL from the HTTP API)
             * never "moves" here */
            if (old.source && strcmp(old.source, e->path) &&
                (old.source[0] != '/' || fs_exists(old.source))) {
                snprintf(msg, sizeof msg,
                         "%s: its id '%s' belongs to %s in the store (try --id-from path)",
                         e->path, id, old.source);
                ix_fail(c, msg);
                store_item_clear(&old);
                json_decref(f);
                free(id);
                continue;
            }
            /* the item's file moved here (or the store had no source) */
            jb.kind = old.has_embedding ? IX_MOVED : IX_WAITING;
            jb.old_sha = old.has_embedding ? old.sha256 : NULL;
            if (old.has_embedding)
                old.sha256 = NULL;
            jb.metadata = merge_metadata(old.metadata, f, &changed);
            store_item_clear(&old);
        } else
            jb.metadata = merge_metadata(NULL, f, &changed);
        json_decref(f);
        jb.meta_changed = changed;
        jb.id = id;
        jb.path = strdup(e->path);
        if (!jb.path || !jb.metadata || jobs_push(jobs, &jb)) {
            free(jb.path);
            free(jb.id);
            free(jb.old_sha);
            free(jb.metadata);
            rc = err_set(err, ERR_NOMEM, "no memory");
        } else if (strmap_put(&ids, id, e))
            rc = err_set(err, ERR_NOMEM, "no memory");
    }
    if (in_tx) {
        if (rc && rc != -ERR_INTERRUPTED)
            store_rollback(c->st, NULL);
        else {
            struct err ce;
            int cr = store_commit(c->st, &ce);
            if (cr && !rc) {
                *err = ce;
                rc = cr;
            }
        }
    }
    strmap_free(&ids);
    strmap_free(&paths);
    return rc;
}

/* Deletes the items whose source lies under a root and was not found as an
 * image this run. */
static int prune(struct ix_ctx *c, const struct root *roots, int nroots, struct walk *w,
                 struct err *err)
{
    struct strmap present = {0};
    for (size_t i = 0; i < w->n; i++)
        if (!w->v[i].gone && strmap_put(&present, w->v[i].path, &w->v[i]))
            return err_set(err, ERR_NOMEM, "no memory");
    /* list everything first: deleting while paging would shift nothing (the
     * cursor is a seq), but keeping reads and writes apart is simpler */
    char **doomed = NULL;
    size_t nd = 0, capd = 0;
    int64_t after = 0;
    int rc = 0;
    for (;;) {
        struct store_item *items;
        size_t n;
        int64_t next;
        if ((rc = store_list(c->st, after, 1000, &items, &n, &next, err)))
            break;
        for (size_t i = 0; i < n && !rc; i++) {
            const char *src = items[i].source;
            if (!src || strmap_get(&present, src) || under_bad_dir(w, src))
                continue;
            int under = 0;
            for (int r = 0; r < nroots && !under; r++)
                under = is_under(src, &roots[r]);
            if (!under)
                continue;
            if (nd == capd) {
                capd = capd ? 2 * capd : 64;
                char **g = realloc(doomed, capd * sizeof *g);
                if (!g) {
                    rc = err_set(err, ERR_NOMEM, "no memory");
                    break;
                }
                doomed = g;
            }
            doomed[nd++] = items[i].id;
            items[i].id = NULL;
        }
        store_items_free(items, n);
        if (rc || !next)
            break;
        after = next;
    }
    if (!rc && nd) {
        if (!(rc = store_begin(c->st, err))) {
            for (size_t i = 0; i < nd && !rc; i++) {
                int d = store_delete(c->st, doomed[i], err);
                if (d == 0)
                    c->n.removed++;
                else if (d != -ERR_NOT_FOUND)
                    rc = d;
            }
            if (rc)
                store_rollback(c->st, NULL);
            else
                rc = store_commit(c->st, err);
        }
    }
    for (size_t i = 0; i < nd; i++)
        free(doomed[i]);
    free(doomed);
    strmap_free(&present);
    return rc;
}

static int parse_opts(int argc, char **argv, struct idx_opts *o, char ***paths, int *npaths)
{
    static const struct option opts[] = {
        {"store", required_argument, 0, 's'},     {"model", required_argument, 0, 'm'},
        {"metadata", required_argument, 0, 'M'},  {"prune", no_argument, 0, 'P'},
        {"batch", required_argument, 0, 'b'},     {"precision", required_argument, 0, 'p'},
        {"id-from", required_argument, 0, 'i'},   {"decoders", required_argument, 0, 'd'},
        {"help", no_argument, 0, 'h'},            {0, 0, 0, 0},
    };
    int c;
    struct err err;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "-", opts, NULL)) != -1) {
        switch (c) {
        case 1: (*paths)[(*npaths)++] = optarg; break;
        case 's': o->store = optarg; break;
        case 'm': o->model = optarg; break;
        case 'M': o->metadata = optarg; break;
        case 'P': o->prune = 1; break;
        case 'b':
            if (cmd_parse_int("index", "--batch", optarg, 1, 256, &o->batch))
                return 2;
            break;
        case 'd':
            if (cmd_parse_int("index", "--decoders", optarg, 1, 64, &o->decoders))
                return 2;
            break;
        case 'p':
            if (pipe_parse_precision(optarg, &o->po.prec, &err))
                return cmd_usage_error("index", "%s", err.msg);
            break;
        case 'i':
            if (!strcmp(optarg, "relpath"))
                o->id_from = ID_RELPATH;
            else if (!strcmp(optarg, "path"))
                o->id_from = ID_PATH;
            else if (!strcmp(optarg, "name"))
                o->id_from = ID_NAME;
            else
                return cmd_usage_error("index", "--id-from must be relpath, path or name, not '%s'",
                                       optarg);
            break;
        case 'h': usage(stdout); return -1;
        default:
            return cmd_usage_error("index", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (!o->store)
        return cmd_usage_error("index", "--store PATH is required");
    if (!(o->model = cmd_model_dir(o->model)))
        return cmd_usage_error("index", "--model DIR is required (or set IMGSEARCH_MODEL)");
    if (*npaths == 0)
        return cmd_usage_error("index", "give the folders or files to index");
    return 0;
}

static int run(int argc, char **argv)
{
    struct idx_opts o = {.batch = 16, .decoders = 0, .id_from = ID_RELPATH};
    o.po.skip_text = 1;
    char **paths = calloc((size_t)argc, sizeof *paths);
    int npaths = 0, rc;
    if (!paths)
        return 1;
    rc = parse_opts(argc, argv, &o, &paths, &npaths);
    if (rc) {
        free(paths);
        return rc < 0 ? 0 : rc;
    }
    struct ix_ctx c;
    ix_ctx_init(&c, "index", "indexed");
    c.batch = (int)o.batch;
    c.decoders = o.decoders ? (int)o.decoders : ix_default_decoders();
    struct err err = {0};
    struct root *roots = calloc((size_t)npaths, sizeof *roots);
    struct sidecar sc = {0};
    struct walk w = {.c = &c};
    struct jobs jobs = {0};
    struct pipe *p = NULL;
    struct store *st = NULL;
    char cwd[4096];
    if (!roots) {
        rc = 1;
        goto out;
    }
    if (!getcwd(cwd, sizeof cwd)) {
        err_set(&err, ERR_IO, "cannot read the current folder: %s", strerror(errno));
        rc = cmd_fail("index", &err);
        goto out;
    }
    /* Roots first: a typo must not prune or start a model load. */
    for (int i = 0; i < npaths; i++) {
        struct stat sb;
        if (stat(paths[i], &sb)) {
            err_set(&err, ERR_NOT_FOUND, "%s: %s", paths[i], strerror(errno));
            rc = cmd_fail("index", &err);
            goto out;
        }
        if (!(roots[i].abs = path_normal(cwd, paths[i]))) {
            rc = 1;
            goto out;
        }
        roots[i].is_dir = S_ISDIR(sb.st_mode);
    }
    if (o.metadata && (rc = sidecar_load(&sc, o.metadata, &err))) {
        rc = cmd_fail("index", &err);
        goto out;
    }
    if ((rc = pipe_open(&p, o.model, &o.po, &err))) {
        rc = cmd_fail("index", &err);
        goto out;
    }
    c.p = p;
    struct store_options so = {.model = clip_model_id(p->model), .dim = p->dim, .create = 1};
    if ((rc = store_open(&st, o.store, &so, &err))) {
        rc = cmd_fail("index", &err);
        if (err.code == ERR_MODEL_MISMATCH)
            fprintf(stderr, "hint: 'imgsearch reindex --store %s --model %s' re-embeds the store "
                            "with this model\n", o.store, o.model);
        goto out;
    }
    c.st = st;
    ix_signals_install();
    for (int i = 0; i < npaths && !rc; i++) {
        if (roots[i].is_dir) {
            rc = walk_dir(&w, roots[i].abs, "", &err);
            continue;
        }
        struct stat sb;
        const char *name = strrchr(roots[i].abs, '/');
        char *path = strdup(roots[i].abs), *rel = strdup(name ? name + 1 : roots[i].abs);
        if (!path || !rel || stat(path, &sb) || walk_push(&w, path, rel, &sb, 1)) {
            free(path);
            free(rel);
            rc = err_set(&err, ERR_NOMEM, "no memory");
        }
    }
    if (!rc)
        rc = classify(&c, &o, &w, &sc, &jobs, &err);
    if (!rc)
        rc = ix_run(&c, jobs.v, jobs.n, &err);
    for (size_t i = 0; i < jobs.n; i++)
        if (jobs.v[i].outcome == IX_NOT_IMAGE)
            w.v[jobs.v[i].tag].gone = 1;
    if (!rc && o.prune)
        rc = prune(&c, roots, npaths, &w, &err);
    if (!rc)
        rc = store_index_sync(st, &err);
    ix_print_failures(&c);
    if (rc && rc != -ERR_INTERRUPTED) {
        rc = cmd_fail("index", &err);
        goto out;
    }
    double secs = ix_now() - c.t0;
    printf("{\"added\": %ld, \"updated\": %ld, \"unchanged\": %ld, \"removed\": %ld, "
           "\"failed\": %ld, \"seconds\": %.3f, \"images_per_s\": %.2f%s}\n",
           c.n.added, c.n.updated, c.n.unchanged, c.n.removed, c.n.failed, secs,
           secs > 0 ? (double)c.n.embedded / secs : 0.0,
           rc == -ERR_INTERRUPTED ? ", \"interrupted\": true" : "");
    fflush(stdout);
    if (rc == -ERR_INTERRUPTED) {
        fprintf(stderr, "imgsearch index: interrupted; committed batches are kept, run the same "
                        "command again to resume\n");
        rc = err_exit_code(ERR_INTERRUPTED);
    } else
        rc = c.n.failed ? 2 : 0;
out:
    if (st) {
        struct err ce;
        if (store_close(st, &ce) && !rc)
            rc = cmd_fail("index", &ce);
    }
    pipe_free(p);
    ix_jobs_free(jobs.v, jobs.n);
    walk_free(&w);
    json_decref(sc.map);
    for (int i = 0; roots && i < npaths; i++)
        free(roots[i].abs);
    free(roots);
    free(paths);
    ix_ctx_free(&c);
    return rc;
}

const struct cmd cmd_index = {"index", "add folders of images to a store (incremental)", run};
