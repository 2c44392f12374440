/* precompute.c - background catalog scan and embedding (see precompute.h),
 * on the ingest library: the same walk, plan and engine as `imgsearch
 * index`, so a folder indexed by one is unchanged for the other.
 *
 * 1. The scan is ingest_walk + ingest_plan (rules in ingest.h: images by
 *    their bytes, links followed only inside the catalog roots, names
 *    escaped into UTF-8 ids). New files are sniffed and registered as
 *    waiting items at once (SCAN_TX puts per transaction), so they are
 *    listed while they wait and a restart finds them; changed files go
 *    through the engine right after the scan, where their SHA-256 decides
 *    whether they are embedded again (index's rule).
 * 2. Waiting items are embedded in rounds of up to ROUND_BATCHES batches by
 *    ingest_run, whose inference goes through the scheduler at low priority;
 *    each batch is one transaction. The engine reads each item again before
 *    writing: if its source or digest changed meanwhile (a PUT replaced
 *    it), the vector is dropped.
 * 3. The round cursor is an item seq: failed items are passed over until
 *    the next restart instead of being retried forever; a wake with a
 *    lower seq (a replaced item keeps its seq) moves the cursor back.
 * 4. --precompute-pause-ms sleeps after each batch's forward pass.
 * 6. Failed items (failed.h): every failed job is recorded with its
 *    reason and its file's size and mtime; a round skips the waiting items
 *    whose file has not changed since, so nothing is retried forever and
 *    the worker goes idle when only failed items wait.
 * 5. Catalog sync (http_precompute_rescan, from the watcher): the worker
 *    runs the scan again between rounds, then ingest_prune; the round
 *    cursor goes back to 0 only when the rescan added or changed a file,
 *    so a failed item is retried when a file changed, not on every tick.
 */
#include "http/precompute.h"
#include "util/clock.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http/failed.h"
#include "ingest/ingest.h"

#define SCAN_TX 256        /* registrations per transaction */
#define ROUND_BATCHES 32   /* batches of waiting items per engine run */

struct http_precompute {
    struct store *st;
    struct pipe *p;
    struct pipe_sched *sched; /* inference, at low priority */
    struct http_precompute_opts o;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    int rescan;           /* the catalog changed: scan again (rule 5) */
    int64_t wake_seq;     /* lowest seq woken for, INT64_MAX: none */
    struct http_precompute_progress pr;
    struct ingest_counts n; /* the engine's counts (worker thread only) */
    struct ingest_hooks h;  /* the worker's hooks into the engine */
    struct http_failed *failed; /* items that failed, with reasons (rule 6) */
    char **caught;          /* this run's failure messages (worker thread) */
    size_t ncaught, capcaught;
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

static void count(struct http_precompute *pc, int64_t *field, int64_t by)
{
    pthread_mutex_lock(&pc->mu);
    *field += by;
    pthread_mutex_unlock(&pc->mu);
}

/* ---- hooks into the ingest library --------------------------------------- */

static void on_fail(void *ctx, const char *msg)
{
    struct http_precompute *pc = ctx;
    pthread_mutex_lock(&pc->mu);
    pc->pr.failed++;
    snprintf(pc->pr.last_error, sizeof pc->pr.last_error, "%.500s", msg);
    pthread_mutex_unlock(&pc->mu);
    if (pc->ncaught == pc->capcaught) { /* rule 6: matched to jobs after the run */
        size_t nc = pc->capcaught ? 2 * pc->capcaught : 16;
        char **v = realloc(pc->caught, nc * sizeof *v);
        if (v) {
            pc->caught = v;
            pc->capcaught = nc;
        }
    }
    if (pc->ncaught < pc->capcaught && (pc->caught[pc->ncaught] = strdup(msg)))
        pc->ncaught++;
    logf_(pc, "precompute: %s", msg);
}

static void on_progress(void *ctx, const struct ingest_progress *p)
{
    struct http_precompute *pc = ctx;
    (void)p;
    pthread_mutex_lock(&pc->mu);
    pc->pr.embedded = pc->n.embedded;
    pthread_mutex_unlock(&pc->mu);
}

static int on_stop(void *ctx)
{
    struct http_precompute *pc = ctx;
    pthread_mutex_lock(&pc->mu);
    int s = pc->stop;
    pthread_mutex_unlock(&pc->mu);
    return s;
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
    while (!pc->stop && !(until_woken && (pc->wake_seq != INT64_MAX || pc->rescan))) {
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

/* Inference through the scheduler, behind the HTTP requests. */
static int on_embed(void *ctx, const float *px, int n, float *out, struct err *err)
{
    struct http_precompute *pc = ctx;
    int rc = pipe_sched_images(pc->sched, px, n, out, 0, 1, err);
    if (pc->o.pause_ms)
        nap(pc, pc->o.pause_ms, 0);
    return rc;
}

static void set_state(struct http_precompute *pc, enum http_precompute_state s)
{
    pthread_mutex_lock(&pc->mu);
    pc->pr.state = s;
    pthread_mutex_unlock(&pc->mu);
}

static struct ingest_run_opts run_opts(const struct http_precompute *pc)
{
    int d = pc->o.decoders ? pc->o.decoders : (ingest_default_decoders() + 1) / 2;
    return (struct ingest_run_opts){.batch = pc->o.batch, .decoders = d};
}

/* Rule 6: failed jobs recorded with their reasons, embedded ones forgotten. */
static void note_outcomes(struct http_precompute *pc, const struct ingest_jobs *js)
{
    for (size_t i = 0; i < js->n; i++) {
        const struct ingest_job *j = &js->v[i];
        if (j->outcome == INGEST_EMBEDDED || j->outcome == INGEST_SAME) {
            http_failed_clear(pc->failed, j->id);
            continue;
        }
        if (j->outcome != INGEST_FAILED && j->outcome != INGEST_NOT_IMAGE)
            continue;
        const char *reason = "could not be embedded";
        size_t pl = j->path ? strlen(j->path) : 0;
        for (size_t k = 0; k < pc->ncaught; k++)
            if (pl && !strncmp(pc->caught[k], j->path, pl) && pc->caught[k][pl] == ':') {
                reason = pc->caught[k] + pl + 1 + (pc->caught[k][pl + 1] == ' ');
                break;
            }
        http_failed_set(pc->failed, j->id, j->path, reason);
    }
    for (size_t k = 0; k < pc->ncaught; k++)
        free(pc->caught[k]);
    pc->ncaught = 0;
}

/* Rule 6: leaves out the waiting items that failed on the same file. */
static void skip_failed(struct http_precompute *pc, struct ingest_jobs *js)
{
    size_t keep = 0;
    for (size_t i = 0; i < js->n; i++) {
        if (http_failed_unchanged(pc->failed, js->v[i].id))
            ingest_job_clear(&js->v[i]);
        else
            js->v[keep++] = js->v[i];
    }
    js->n = keep;
}

/* ---- the scan ------------------------------------------------------------ */

/* Registers a file of the plan that needs no hashing as a waiting item
 * (new files only if their bytes are an image's). Returns 1 registered, 0
 * not, or a store error. */
static int register_file(struct http_precompute *pc, const struct ingest_job *j, struct err *err)
{
    struct err se;
    int img = ingest_sniff_file(j->path, &se);
    if (img < 0) {
        on_fail(pc, se.msg);
        return 0;
    }
    if (!img)
        return 0;
    struct store_item it = {
        .id = j->id,
        .source = j->path,
        .size = j->size,
        .mtime = j->mtime,
        .metadata = j->metadata,
    };
    struct err pe;
    int rc = store_put(pc->st, &it, NULL, &pe);
    if (rc == -ERR_INVALID_ARGUMENT || rc == -ERR_INVALID_UTF8) {
        char msg[ERR_MSG_MAX + 64];
        snprintf(msg, sizeof msg, "%s: %s", j->path, pe.msg);
        on_fail(pc, msg);
        return 0;
    }
    if (rc)
        *err = pe;
    return rc ? rc : 1;
}

/* One job of the plan that needs no hashing: new files are registered,
 * waiting items with new size or mtime get them. */
static int register_one(struct http_precompute *pc, const struct ingest_job *j, int *in_tx,
                        int *puts, struct err *err)
{
    if (j->kind == INGEST_WAITING && j->same_stat) {
        count(pc, &pc->pr.unchanged, 1); /* waits already */
        return 0;
    }
    int rc = 0;
    if (!*in_tx && !(rc = store_begin(pc->st, err)))
        *in_tx = 1;
    if (rc)
        return rc;
    int r = register_file(pc, j, err);
    if (r < 0)
        return r;
    if (r)
        count(pc, j->kind == INGEST_NEW ? &pc->pr.added : &pc->pr.changed, 1);
    if (++*puts >= SCAN_TX) {
        *in_tx = *puts = 0;
        return store_commit(pc->st, err);
    }
    return 0;
}

/* Acts on the plan: registers new files; keeps in js only the jobs that
 * need hashing (changed or moved files with an embedding), for the engine. */
static int register_all(struct http_precompute *pc, struct ingest_jobs *js, struct err *err)
{
    int rc = 0, in_tx = 0, puts = 0;
    size_t keep = 0;
    for (size_t i = 0; i < js->n; i++) {
        struct ingest_job *j = &js->v[i];
        if (!rc && j->old_sha) {
            count(pc, &pc->pr.changed, 1);
            js->v[keep++] = *j;
            continue;
        }
        if (!rc && !on_stop(pc))
            rc = register_one(pc, j, &in_tx, &puts, err);
        ingest_job_clear(j);
    }
    js->n = keep;
    if (in_tx) {
        struct err ce;
        if (rc)
            store_rollback(pc->st, &ce);
        else
            rc = store_commit(pc->st, err);
    }
    return rc;
}

/* Walk, plan, register, then hash (and maybe embed) the changed files. */
static int scan(struct http_precompute *pc, int prune, struct err *err)
{
    struct ingest_walk w;
    struct ingest_jobs js = {0};
    /* the catalog owns its ids: an item of the same id from elsewhere (a
     * folder no longer served, an upload) is taken over, as a move */
    struct ingest_plan_opts po = {.id_from = INGEST_ID_RELPATH, .prefixes = pc->o.prefixes,
                                  .own_ids = 1};
    struct ingest_counts pn = {0};
    struct ingest_run_opts ro = run_opts(pc);
    int rc = ingest_walk(&w, pc->o.roots, pc->o.nroots, &pc->h, &pn, err);
    if (!rc)
        rc = ingest_plan(pc->st, &w, &po, &pc->h, &pn, &js, err);
    count(pc, &pc->pr.unchanged, pn.unchanged);
    if (!rc)
        rc = register_all(pc, &js, err);
    if (!rc)
        rc = ingest_run(pc->st, pc->p, &js, &ro, &pc->h, &pc->n, err);
    note_outcomes(pc, &js);
    if (!rc && prune) { /* rule 5: vanished files leave the store */
        rc = ingest_prune(pc->st, &w, &pn, err);
        if (pn.removed)
            logf_(pc, "precompute: %ld items whose files vanished removed", pn.removed);
    }
    ingest_jobs_free(&js);
    ingest_walk_free(&w);
    pthread_mutex_lock(&pc->mu);
    pc->pr.files = pc->pr.added + pc->pr.changed + pc->pr.unchanged;
    pthread_mutex_unlock(&pc->mu);
    return rc;
}

/* ---- embedding --------------------------------------------------------------- */

/* One round: embeds up to ROUND_BATCHES batches of waiting items after
 * *cursor. Returns the number of items looked at (0: none left), or a
 * negative store error (-ERR_INTERRUPTED when stopping). */
static int round_(struct http_precompute *pc, int64_t *cursor, struct err *err)
{
    struct ingest_jobs js = {0};
    struct ingest_run_opts ro = run_opts(pc);
    int64_t last = *cursor;
    long failed0 = pc->n.failed;
    size_t limit = (size_t)pc->o.batch * ROUND_BATCHES;
    int rc = ingest_waiting(pc->st, *cursor, limit, &pc->h, &pc->n, &js, &last, err);
    int looked = (int)js.n + (int)(pc->n.failed - failed0);
    skip_failed(pc, &js);
    if (!rc)
        rc = ingest_run(pc->st, pc->p, &js, &ro, &pc->h, &pc->n, err);
    note_outcomes(pc, &js);
    on_progress(pc, NULL);
    ingest_jobs_free(&js);
    *cursor = last;
    return rc ? rc : looked;
}

static void report_scan(struct http_precompute *pc, double secs)
{
    struct http_precompute_progress p;
    http_precompute_progress(pc, &p);
    logf_(pc, "precompute: scanned %lld image files in %.2f s: %lld new, %lld changed, "
              "%lld unchanged",
          (long long)p.files, secs, (long long)p.added, (long long)p.changed,
          (long long)p.unchanged);
}

/* Rule 5: the catalog again, pruned; the cursor back to 0 when a file was
 * new or changed. */
static int rescan_(struct http_precompute *pc, int64_t *cursor, struct err *err)
{
    struct http_precompute_progress before;
    http_precompute_progress(pc, &before);
    set_state(pc, HTTP_PC_SCANNING);
    pthread_mutex_lock(&pc->mu);
    pc->pr.unchanged = 0; /* counted again by this scan */
    pthread_mutex_unlock(&pc->mu);
    int rc = scan(pc, 1, err);
    http_failed_prune(pc->failed); /* files gone: no longer failed */
    struct http_precompute_progress after;
    http_precompute_progress(pc, &after);
    if (after.added != before.added || after.changed != before.changed)
        *cursor = 0;
    set_state(pc, HTTP_PC_EMBEDDING);
    return rc;
}

/* Embeds waiting items until stopped, sleeping when none are left. */
static int embed_loop(struct http_precompute *pc, struct err *err)
{
    int64_t cursor = 0;
    int reported = 0, rc_ = 0;
    for (;;) {
        pthread_mutex_lock(&pc->mu);
        if (pc->wake_seq != INT64_MAX) {
            if (pc->wake_seq - 1 < cursor)
                cursor = pc->wake_seq - 1;
            pc->wake_seq = INT64_MAX;
        }
        int stop = pc->stop, rescan = pc->rescan;
        pc->rescan = 0;
        pthread_mutex_unlock(&pc->mu);
        if (stop)
            return 0;
        if (rescan && (rc_ = rescan_(pc, &cursor, err)))
            return rc_ == -ERR_INTERRUPTED ? 0 : rc_;
        int r = round_(pc, &cursor, err);
        if (r == -ERR_INTERRUPTED)
            return 0;
        if (r < 0)
            return r;
        if (r > 0) {
            set_state(pc, HTTP_PC_EMBEDDING);
            reported = 0;
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
            return 0;
    }
}

static void *run(void *arg)
{
    struct http_precompute *pc = arg;
    struct err err = {0};
    int rc = 0;
    if (pc->o.nroots) {
        double t0 = mono_now();
        rc = scan(pc, 0, &err);
        if (rc == -ERR_INTERRUPTED)
            return NULL;
        if (rc)
            goto fail;
        report_scan(pc, mono_now() - t0);
    }
    int64_t waiting = 0;
    if ((rc = store_count_waiting(pc->st, &waiting, &err)))
        goto fail;
    pthread_mutex_lock(&pc->mu);
    pc->pr.waiting_at_start = waiting + pc->n.embedded;
    pc->pr.state = HTTP_PC_EMBEDDING;
    pthread_mutex_unlock(&pc->mu);
    if (waiting)
        logf_(pc, "precompute: %lld items wait for embeddings", (long long)waiting);
    rc = embed_loop(pc, &err);
fail: /* the one way out: rc says whether it failed */
    if (rc) {
        pthread_mutex_lock(&pc->mu);
        pc->pr.state = HTTP_PC_FAILED;
        snprintf(pc->pr.last_error, sizeof pc->pr.last_error, "%.500s", err.msg);
        pthread_mutex_unlock(&pc->mu);
        logf_(pc, "precompute: stopped: %s", err.msg);
    }
    return NULL;
}

int http_precompute_start(struct http_precompute **out, struct store *st, struct pipe *p,
                          struct pipe_sched *b, const struct http_precompute_opts *o,
                          struct err *err)
{
    *out = NULL;
    if (o->batch < 1 || o->batch > 256)
        return err_set(err, ERR_INVALID_ARGUMENT, "precompute batch %d (1..256)", o->batch);
    if (o->decoders < 0 || o->decoders > 64)
        return err_set(err, ERR_INVALID_ARGUMENT, "precompute decoders %d (0..64)", o->decoders);
    struct http_precompute *pc = calloc(1, sizeof *pc);
    if (!pc)
        return err_set(err, ERR_NOMEM, "out of memory");
    pc->st = st;
    pc->p = p;
    pc->sched = b;
    pc->o = *o;
    pc->wake_seq = INT64_MAX;
    pc->pr.state = o->nroots ? HTTP_PC_SCANNING : HTTP_PC_EMBEDDING;
    int frc = http_failed_new(&pc->failed, err);
    if (frc) {
        free(pc);
        return frc;
    }
    pc->h = (struct ingest_hooks){.fail = on_fail, .progress = on_progress, .stop = on_stop,
                                  .embed = on_embed, .ctx = pc};
    pthread_mutex_init(&pc->mu, NULL);
    pthread_cond_init(&pc->cv, NULL);
    if (pthread_create(&pc->th, NULL, run, pc) != 0) {
        http_failed_free(pc->failed);
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

struct http_failed *http_precompute_failed(struct http_precompute *pc)
{
    return pc ? pc->failed : NULL;
}

void http_precompute_rescan(struct http_precompute *pc)
{
    if (!pc)
        return;
    pthread_mutex_lock(&pc->mu);
    pc->rescan = 1;
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
    for (size_t k = 0; k < pc->ncaught; k++)
        free(pc->caught[k]);
    free(pc->caught);
    http_failed_free(pc->failed);
    pthread_mutex_destroy(&pc->mu);
    pthread_cond_destroy(&pc->cv);
    free(pc);
}
