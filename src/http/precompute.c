/* precompute.c - background catalog scan and embedding (see precompute.h).
 *
 * 1. The scan walks folders with lstat: symbolic links are skipped, so
 *    every source stays inside its catalog root (the image route serves
 *    only from there) and a link loop cannot trap the walk.
 * 2. Scan writes go in store batches of SCAN_TX puts; embeddings are
 *    written one per item (each its own commit) the moment they exist.
 * 3. The round cursor is an item seq: failed items are passed over until
 *    the next restart instead of being retried forever; a wake with a
 *    lower seq (a replaced item keeps its seq) moves the cursor back.
 * 4. Before writing an embedding the item is read again: if its source or
 *    digest changed meanwhile (a PUT replaced it), the vector is dropped.
 */
#include "http/precompute.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#define SCAN_TX 256
#define MAX_DEPTH 64

struct http_precompute {
    struct store *st;
    struct pipe *p;
    struct http_batcher *b;
    struct http_precompute_opts o;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    int64_t wake_seq;     /* lowest seq woken for, INT64_MAX: none */
    struct http_precompute_progress pr;
    int scan_puts;        /* puts in the open scan batch */
    int in_batch;         /* a store batch is open */
};

const char *http_precompute_state_name(enum http_precompute_state s)
{
    switch (s) {
    case HTTP_PC_SCANNING: return "scanning";
    case HTTP_PC_EMBEDDING: return "embedding";
    case HTTP_PC_IDLE: return "idle";
    default: return "failed";
    }
}

int http_is_image_name(const char *name)
{
    static const char *const ext[] = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif"};
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) {
        size_t e = strlen(ext[i]);
        if (n > e && !strcasecmp(name + n - e, ext[i]))
            return 1;
    }
    return 0;
}

static void logf_(struct http_precompute *pc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void logf_(struct http_precompute *pc, const char *fmt, ...)
{
    if (!pc->o.log)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pc->o.log(pc->o.log_ctx, msg);
}

static void note_failure(struct http_precompute *pc, const char *id, const struct err *e)
{
    pthread_mutex_lock(&pc->mu);
    pc->pr.failed++;
    snprintf(pc->pr.last_error, sizeof pc->pr.last_error, "%.100s: %.380s", id, e->msg);
    pthread_mutex_unlock(&pc->mu);
    logf_(pc, "precompute: %s: %s", id, e->msg);
}

static int stopping(struct http_precompute *pc)
{
    pthread_mutex_lock(&pc->mu);
    int s = pc->stop;
    pthread_mutex_unlock(&pc->mu);
    return s;
}

static void count(struct http_precompute *pc, int64_t *field)
{
    pthread_mutex_lock(&pc->mu);
    (*field)++;
    pthread_mutex_unlock(&pc->mu);
}

static int scan_commit(struct http_precompute *pc, struct err *err)
{
    if (!pc->in_batch)
        return 0;
    pc->in_batch = 0;
    pc->scan_puts = 0;
    return store_commit(pc->st, err);
}

/* One file of the catalog: add it, re-queue it, or leave it. */
static int scan_file(struct http_precompute *pc, const char *path, const char *id,
                     const struct stat *sb, struct err *err)
{
    struct store_item old = {0};
    struct err fe;
    int rc = store_find_source(pc->st, path, &old, &fe);
    if (rc && rc != -ERR_NOT_FOUND) {
        *err = fe;
        return rc;
    }
    const int found = rc == 0;
    count(pc, &pc->pr.files);
    if (found && old.size == (int64_t)sb->st_size && old.mtime == (int64_t)sb->st_mtime) {
        store_item_clear(&old);
        count(pc, &pc->pr.unchanged);
        return 0;
    }
    if (!pc->in_batch) {
        if ((rc = store_begin(pc->st, err)))
            return rc;
        pc->in_batch = 1;
    }
    struct store_item it = {
        .id = found ? old.id : (char *)id,
        .source = (char *)path,
        .size = (int64_t)sb->st_size,
        .mtime = (int64_t)sb->st_mtime,
        .metadata = found ? old.metadata : NULL,
    };
    rc = store_put(pc->st, &it, NULL, err);
    store_item_clear(&old);
    if (rc)
        return rc;
    count(pc, found ? &pc->pr.changed : &pc->pr.added);
    if (++pc->scan_puts >= SCAN_TX)
        return scan_commit(pc, err);
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Walks dir (path) whose ids start with idpfx. */
static int scan_dir(struct http_precompute *pc, const char *path, const char *idpfx, int depth,
                    struct err *err)
{
    if (depth > MAX_DEPTH)
        return 0;
    DIR *d = opendir(path);
    if (!d) {
        struct err e;
        err_set(&e, ERR_IO, "cannot read the folder: %s", strerror(errno));
        note_failure(pc, path, &e);
        return 0;
    }
    /* sorted, so items are added (and progress reported) in a stable order */
    char **list = NULL;
    int n = 0, cap = 0, rc = 0;
    for (struct dirent *de; (de = readdir(d));) {
        if (de->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nl = realloc(list, sizeof *nl * (size_t)cap);
            if (!nl) {
                rc = err_set(err, ERR_NOMEM, "out of memory");
                break;
            }
            list = nl;
        }
        if (!(list[n] = strdup(de->d_name))) {
            rc = err_set(err, ERR_NOMEM, "out of memory");
            break;
        }
        n++;
    }
    closedir(d);
    if (n)
        qsort(list, (size_t)n, sizeof *list, by_name);
    for (int i = 0; i < n && !rc && !stopping(pc); i++) {
        const char *name = list[i];
        size_t pl = strlen(path) + strlen(name) + 2, il = strlen(idpfx) + strlen(name) + 2;
        char *child = malloc(pl), *cid = malloc(il);
        if (!child || !cid) {
            free(child);
            free(cid);
            rc = err_set(err, ERR_NOMEM, "out of memory");
            break;
        }
        snprintf(child, pl, "%s/%s", path, name);
        snprintf(cid, il, "%s%s", idpfx, name);
        struct stat sb;
        if (lstat(child, &sb) == 0) {
            if (S_ISDIR(sb.st_mode)) {
                snprintf(cid, il, "%s%s/", idpfx, name);
                rc = scan_dir(pc, child, cid, depth + 1, err);
            } else if (S_ISREG(sb.st_mode) && http_is_image_name(name)) {
                if (strlen(cid) > STORE_ID_MAX || strlen(child) > STORE_SOURCE_MAX) {
                    struct err e;
                    err_set(&e, ERR_INVALID_ARGUMENT, "path too long for an item id");
                    note_failure(pc, child, &e);
                } else {
                    rc = scan_file(pc, child, cid, &sb, err);
                }
            }
        }
        free(child);
        free(cid);
    }
    for (int i = 0; i < n; i++)
        free(list[i]);
    free(list);
    return rc;
}

static void set_state(struct http_precompute *pc, enum http_precompute_state s)
{
    pthread_mutex_lock(&pc->mu);
    pc->pr.state = s;
    pthread_mutex_unlock(&pc->mu);
}

/* Sleeps ms or until stopped/woken; returns 1 when stopping. */
static int nap(struct http_precompute *pc, int ms, int until_woken)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ns = (int64_t)ts.tv_nsec + (int64_t)ms * 1000000;
    ts.tv_sec += ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    pthread_mutex_lock(&pc->mu);
    while (!pc->stop && !(until_woken && pc->wake_seq != INT64_MAX)) {
        if (!until_woken) {
            if (pthread_cond_timedwait(&pc->cv, &pc->mu, &ts) == ETIMEDOUT)
                break;
        } else {
            pthread_cond_wait(&pc->cv, &pc->mu);
        }
    }
    int s = pc->stop;
    pthread_mutex_unlock(&pc->mu);
    return s;
}

/* 1 when the item still is what was embedded (same source and digest, no
 * embedding yet). */
static int still_waiting(struct http_precompute *pc, const struct store_item *was)
{
    struct store_item now = {0};
    struct err e;
    if (store_get(pc->st, was->id, &now, &e))
        return 0;
    int same = !now.has_embedding && now.seq == was->seq &&
               !!now.source == !!was->source && (!now.source || !strcmp(now.source, was->source)) &&
               !!now.sha256 == !!was->sha256 && (!now.sha256 || !strcmp(now.sha256, was->sha256));
    store_item_clear(&now);
    return same;
}

/* One round: embeds up to batch waiting items after *cursor. Returns the
 * number of items looked at (0: none left), or a negative store error. */
static int round_(struct http_precompute *pc, int64_t *cursor, float *px, float *vecs,
                  int *slot, struct err *err)
{
    struct store_item *items = NULL;
    size_t n = 0;
    int64_t next = 0;
    int rc = store_waiting(pc->st, *cursor, pc->o.batch, &items, &n, &next, err);
    if (rc)
        return rc;
    if (n == 0) {
        store_items_free(items, n);
        return 0;
    }
    const size_t pxn = 3 * (size_t)pc->p->size * (size_t)pc->p->size;
    int nok = 0;
    for (size_t i = 0; i < n; i++) {
        struct err e = {0};
        if (!items[i].source) {
            err_set(&e, ERR_NOT_FOUND, "the item has no source file to embed");
            note_failure(pc, items[i].id, &e);
            continue;
        }
        if (pipe_prepare_file(pc->p, items[i].source, px + (size_t)nok * pxn, &e)) {
            note_failure(pc, items[i].id, &e);
            continue;
        }
        slot[nok++] = (int)i;
    }
    struct err be = {0};
    if (nok && http_batcher_embed(pc->b, px, nok, vecs, 0, 1, &be)) {
        for (int k = 0; k < nok; k++)
            note_failure(pc, items[slot[k]].id, &be);
        nok = 0;
    }
    for (int k = 0; k < nok && !rc; k++) {
        struct store_item *it = &items[slot[k]];
        if (!still_waiting(pc, it))
            continue;
        struct err pe;
        int r = store_put_embedding(pc->st, it->id, vecs + (size_t)k * pc->p->dim, &pe);
        if (r == 0)
            count(pc, &pc->pr.embedded);
        else if (r == -ERR_NOT_FOUND)
            continue; /* deleted meanwhile */
        else {
            *err = pe;
            rc = r;
        }
    }
    *cursor = items[n - 1].seq;
    int looked = (int)n;
    store_items_free(items, n);
    return rc ? rc : looked;
}

static void *run(void *arg)
{
    struct http_precompute *pc = arg;
    struct err err = {0};
    int rc = 0;
    const size_t pxn = 3 * (size_t)pc->p->size * (size_t)pc->p->size;
    float *px = malloc(sizeof(float) * pxn * (size_t)pc->o.batch);
    float *vecs = malloc(sizeof(float) * (size_t)pc->p->dim * (size_t)pc->o.batch);
    int *slot = malloc(sizeof(int) * (size_t)pc->o.batch);
    if (!px || !vecs || !slot) {
        rc = err_set(&err, ERR_NOMEM, "out of memory for a batch of %d images", pc->o.batch);
        goto out;
    }
    if (pc->o.nroots) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < pc->o.nroots && !rc && !stopping(pc); i++)
            rc = scan_dir(pc, pc->o.roots[i], pc->o.prefixes[i], 0, &err);
        if (rc) {
            struct err re;
            if (pc->in_batch)
                store_rollback(pc->st, &re);
            pc->in_batch = 0;
            goto out;
        }
        if ((rc = scan_commit(pc, &err)))
            goto out;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        struct http_precompute_progress p;
        http_precompute_progress(pc, &p);
        logf_(pc, "precompute: scanned %lld image files in %.2f s: %lld new, %lld changed, "
                  "%lld unchanged",
              (long long)p.files,
              (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
              (long long)p.added, (long long)p.changed, (long long)p.unchanged);
    }
    int64_t waiting = 0;
    if ((rc = store_count_waiting(pc->st, &waiting, &err)))
        goto out;
    pthread_mutex_lock(&pc->mu);
    pc->pr.waiting_at_start = waiting;
    pc->pr.state = HTTP_PC_EMBEDDING;
    pthread_mutex_unlock(&pc->mu);
    if (waiting)
        logf_(pc, "precompute: %lld items wait for embeddings", (long long)waiting);
    int64_t cursor = 0;
    int reported = 0;
    for (;;) {
        pthread_mutex_lock(&pc->mu);
        if (pc->wake_seq != INT64_MAX) {
            if (pc->wake_seq - 1 < cursor)
                cursor = pc->wake_seq - 1;
            pc->wake_seq = INT64_MAX;
        }
        int stop = pc->stop;
        pthread_mutex_unlock(&pc->mu);
        if (stop)
            break;
        int r = round_(pc, &cursor, px, vecs, slot, &err);
        if (r < 0) {
            rc = r;
            goto out;
        }
        if (r > 0) {
            set_state(pc, HTTP_PC_EMBEDDING);
            reported = 0;
            if (pc->o.pause_ms && nap(pc, pc->o.pause_ms, 0))
                break;
            continue;
        }
        if (!reported) {
            struct http_precompute_progress p;
            http_precompute_progress(pc, &p);
            if (p.embedded || p.failed)
                logf_(pc, "precompute: done: %lld embedded, %lld failed", (long long)p.embedded,
                      (long long)p.failed);
            reported = 1;
        }
        set_state(pc, HTTP_PC_IDLE);
        if (nap(pc, 0, 1))
            break;
    }
out:
    if (rc) {
        pthread_mutex_lock(&pc->mu);
        pc->pr.state = HTTP_PC_FAILED;
        snprintf(pc->pr.last_error, sizeof pc->pr.last_error, "%.500s", err.msg);
        pthread_mutex_unlock(&pc->mu);
        logf_(pc, "precompute: stopped: %s", err.msg);
    }
    free(px);
    free(vecs);
    free(slot);
    return NULL;
}

int http_precompute_start(struct http_precompute **out, struct store *st, struct pipe *p,
                          struct http_batcher *b, const struct http_precompute_opts *o,
                          struct err *err)
{
    *out = NULL;
    if (o->batch < 1 || o->batch > 256)
        return err_set(err, ERR_INVALID_ARGUMENT, "precompute batch %d (1..256)", o->batch);
    struct http_precompute *pc = calloc(1, sizeof *pc);
    if (!pc)
        return err_set(err, ERR_NOMEM, "out of memory");
    pc->st = st;
    pc->p = p;
    pc->b = b;
    pc->o = *o;
    pc->wake_seq = INT64_MAX;
    pc->pr.state = o->nroots ? HTTP_PC_SCANNING : HTTP_PC_EMBEDDING;
    pthread_mutex_init(&pc->mu, NULL);
    pthread_cond_init(&pc->cv, NULL);
    if (pthread_create(&pc->th, NULL, run, pc) != 0) {
        pthread_mutex_destroy(&pc->mu);
        pthread_cond_destroy(&pc->cv);
        free(pc);
        return err_set(err, ERR_INTERNAL, "cannot start the precompute thread");
    }
    *out = pc;
    return 0;
}

void http_precompute_wake(struct http_precompute *pc, int64_t seq)
{
    if (!pc)
        return;
    pthread_mutex_lock(&pc->mu);
    if (seq < 1)
        seq = 1;
    if (seq < pc->wake_seq)
        pc->wake_seq = seq;
    pthread_cond_broadcast(&pc->cv);
    pthread_mutex_unlock(&pc->mu);
}

void http_precompute_progress(struct http_precompute *pc, struct http_precompute_progress *out)
{
    pthread_mutex_lock(&pc->mu);
    *out = pc->pr;
    pthread_mutex_unlock(&pc->mu);
}

void http_precompute_stop(struct http_precompute *pc)
{
    if (!pc)
        return;
    pthread_mutex_lock(&pc->mu);
    pc->stop = 1;
    pthread_cond_broadcast(&pc->cv);
    pthread_mutex_unlock(&pc->mu);
    pthread_join(pc->th, NULL);
    pthread_mutex_destroy(&pc->mu);
    pthread_cond_destroy(&pc->cv);
    free(pc);
}
