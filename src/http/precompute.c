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
 *    Registration is store_register: idempotent, so servers scanning one
 *    catalog into one store register each file once and never undo an
 *    embedding another one wrote meanwhile.
 * 2. Waiting items are embedded in rounds by ingest_run, whose inference
 *    goes through the scheduler at low priority; each batch is one
 *    transaction. The engine reads each item again before writing: if its
 *    source or digest changed meanwhile (a PUT replaced it), the vector is
 *    dropped.
 * 3. A round works on a leased claim (store_claim_waiting) of up to
 *    CLAIM_BATCHES batches, so several servers on one store share the
 *    work and embed each item once. The owner id is host:pid:random. The
 *    worker renews its leases while it makes progress (every third of the
 *    lease) and releases them when it stops; a killed server's claim is
 *    taken by the others once its lease runs out, or at once by a server
 *    of the same host that sees the process is gone. When a claim finds
 *    nothing, the worker sleeps until woken (a PUT, a rescan), until the
 *    first lease on a waiting item runs out, or for one lease at most:
 *    other servers' scans register items without waking this one.
 * 4. --precompute-pause-ms sleeps after each batch's forward pass.
 * 5. Catalog sync (http_precompute_rescan, from the watcher): the worker
 *    runs the scan again between rounds, then ingest_prune.
 * 6. Failed items: every failed job is marked failed in the store
 *    (store_set_failed) with its reason and its file's size and mtime, so
 *    no server claims it again, before or after a restart, until a scan
 *    sees the file with another size or mtime.
 */
#include "http/precompute.h"
#include "util/clock.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ingest/ingest.h"

#define SCAN_TX 256        /* registrations per transaction */
#define CLAIM_BATCHES 4    /* batches of waiting items per claim (rule 3) */

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
    int woken;            /* an item waits (http_precompute_wake) */
    struct http_precompute_progress pr;
    struct ingest_counts n; /* the engine's counts (worker thread only) */
    struct ingest_hooks h;  /* the worker's hooks into the engine */
    char owner[STORE_OWNER_MAX]; /* claim owner: host:pid:random (rule 3) */
    int lease_s;            /* claim lease, seconds */
    double renewed;         /* when the leases were last renewed (mono_now) */
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
    /* rule 3: a live worker keeps its claim (called between transactions) */
    double now = mono_now();
    if (now - pc->renewed >= pc->lease_s / 3.0) {
        struct err e;
        if (store_claims_renew(pc->st, pc->owner, pc->lease_s, NULL, &e))
            logf_(pc, "precompute: cannot renew leases: %s", e.msg);
        pc->renewed = now;
    }
}

static int on_stop(void *ctx)
{
    struct http_precompute *pc = ctx;
    pthread_mutex_lock(&pc->mu);
    int s = pc->stop;
    pthread_mutex_unlock(&pc->mu);
    return s;
}

/* Sleeps ms (< 0: no limit) or until stopped, and with until_woken also
 * until woken; returns 1 when stopping. */
static int nap(struct http_precompute *pc, int64_t ms, int until_woken)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ns = (int64_t)ts.tv_nsec + (ms > 0 ? ms : 0) * 1000000;
    ts.tv_sec += ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    pthread_mutex_lock(&pc->mu);
    while (!pc->stop && !(until_woken && (pc->woken || pc->rescan))) {
        if (ms >= 0) {
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

/* Rule 6: failed jobs marked failed in the store, with their reasons and
 * their files' size and mtime now (an embedding ends the state). */
static void note_outcomes(struct http_precompute *pc, const struct ingest_jobs *js)
{
    for (size_t i = 0; i < js->n; i++) {
        const struct ingest_job *j = &js->v[i];
        if (j->outcome != INGEST_FAILED && j->outcome != INGEST_NOT_IMAGE)
            continue;
        const char *reason = "could not be embedded";
        size_t pl = j->path ? strlen(j->path) : 0;
        for (size_t k = 0; k < pc->ncaught; k++)
            if (pl && !strncmp(pc->caught[k], j->path, pl) && pc->caught[k][pl] == ':') {
                reason = pc->caught[k] + pl + 1 + (pc->caught[k][pl + 1] == ' ');
                break;
            }
        struct stat sb;
        int known = j->path && stat(j->path, &sb) == 0;
        struct err fe;
        if (store_set_failed(pc->st, j->id, reason, known ? (int64_t)sb.st_size : -1,
                             known ? (int64_t)sb.st_mtim.tv_sec : -1, &fe) &&
            fe.code != ERR_NOT_FOUND)
            logf_(pc, "precompute: cannot mark %s failed: %s", j->path, fe.msg);
    }
    for (size_t k = 0; k < pc->ncaught; k++)
        free(pc->caught[k]);
    pc->ncaught = 0;
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
    int rc = store_register(pc->st, &it, NULL, &pe); /* rule 1 */
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

/* Rule 3: gives back the claims of processes of this host that are gone
 * (killed: they released nothing), so a server restarted after kill -9
 * does not wait for its old lease. An owner is host:pid:random; this
 * process's pid with another random part is a previous life of it (a
 * container's pid 1). Returns how many owners were released. */
static int release_dead(struct http_precompute *pc)
{
    char **owners = NULL;
    size_t n = 0;
    struct err e;
    if (store_claim_owners(pc->st, &owners, &n, &e))
        return 0;
    const char *mine = strrchr(pc->owner, ':');
    size_t hl = (size_t)(strchr(pc->owner, ':') - pc->owner); /* host length */
    int released = 0;
    for (size_t i = 0; i < n; i++) {
        const char *o = owners[i], *last = strrchr(o, ':');
        if (!last || strcmp(o, pc->owner) == 0 || strncmp(o, pc->owner, hl + 1))
            continue; /* not of this host, or this worker */
        char *end;
        long pid = strtol(o + hl + 1, &end, 10);
        if (end != last || pid < 1)
            continue;
        int gone = pid == (long)getpid() ? strcmp(last, mine) != 0
                                          : kill((pid_t)pid, 0) != 0 && errno == ESRCH;
        if (gone && !store_claims_renew(pc->st, o, 0, NULL, &e)) {
            logf_(pc, "precompute: gave back the claim of %s (the process is gone)", o);
            released++;
        }
    }
    store_owners_free(owners, n);
    return released;
}

/* One round: claims up to CLAIM_BATCHES batches of waiting items (rule 3)
 * and embeds them. Returns the number of items claimed (0: none; then
 * *retry_ms says when a lease runs out, -1 none), or a negative store
 * error (-ERR_INTERRUPTED when stopping). */
static int round_(struct http_precompute *pc, int64_t *retry_ms, struct err *err)
{
    struct ingest_jobs js = {0};
    struct ingest_run_opts ro = run_opts(pc);
    size_t claimed = 0;
    int rc = ingest_claim(pc->st, pc->owner, pc->lease_s, pc->o.batch * CLAIM_BATCHES, &pc->h,
                          &pc->n, &js, &claimed, retry_ms, err);
    pc->renewed = mono_now();
    if (!rc && !claimed && *retry_ms > 0 && release_dead(pc))
        *retry_ms = 1; /* claim again at once */
    if (!rc)
        rc = ingest_run(pc->st, pc->p, &js, &ro, &pc->h, &pc->n, err);
    note_outcomes(pc, &js);
    on_progress(pc, NULL);
    ingest_jobs_free(&js);
    return rc ? rc : (int)claimed;
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

/* Rule 5: the catalog again, pruned. */
static int rescan_(struct http_precompute *pc, struct err *err)
{
    set_state(pc, HTTP_PC_SCANNING);
    pthread_mutex_lock(&pc->mu);
    pc->pr.unchanged = 0; /* counted again by this scan */
    pthread_mutex_unlock(&pc->mu);
    int rc = scan(pc, 1, err);
    set_state(pc, HTTP_PC_EMBEDDING);
    return rc;
}

/* Embeds waiting items until stopped, sleeping when none are left. */
static int embed_loop(struct http_precompute *pc, struct err *err)
{
    int reported = 0, rc_ = 0;
    for (;;) {
        pthread_mutex_lock(&pc->mu);
        pc->woken = 0;
        int stop = pc->stop, rescan = pc->rescan;
        pc->rescan = 0;
        pthread_mutex_unlock(&pc->mu);
        if (stop)
            return 0;
        if (rescan && (rc_ = rescan_(pc, err)))
            return rc_ == -ERR_INTERRUPTED ? 0 : rc_;
        int64_t retry = -1;
        int r = round_(pc, &retry, err);
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
        /* rule 3: until woken, a lease runs out, or one lease at most */
        int64_t most = (int64_t)pc->lease_s * 1000;
        if (nap(pc, retry > 0 && retry + 50 < most ? retry + 50 : most, 1))
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
    if (o->lease_seconds < 0 || o->lease_seconds > STORE_LEASE_MAX)
        return err_set(err, ERR_INVALID_ARGUMENT, "lease of %d s (1..%d)", o->lease_seconds,
                       STORE_LEASE_MAX);
    struct http_precompute *pc = calloc(1, sizeof *pc);
    if (!pc)
        return err_set(err, ERR_NOMEM, "out of memory");
    pc->st = st;
    pc->p = p;
    pc->sched = b;
    pc->o = *o;
    pc->pr.state = o->nroots ? HTTP_PC_SCANNING : HTTP_PC_EMBEDDING;
    pc->lease_s = o->lease_seconds ? o->lease_seconds : HTTP_PC_LEASE_DEFAULT;
    char host[64] = "localhost";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    uint64_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        rnd = (uint64_t)ts.tv_nsec * 6364136223846793005ull ^ (uint64_t)(uintptr_t)pc;
    }
    snprintf(pc->owner, sizeof pc->owner, "%s:%ld:%08llx", host, (long)getpid(),
             (unsigned long long)(rnd & 0xffffffffull));
    pc->h = (struct ingest_hooks){.fail = on_fail, .progress = on_progress, .stop = on_stop,
                                  .embed = on_embed, .ctx = pc};
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
    (void)seq; /* a claim takes the oldest waiting items (rule 3) */
    if (!pc)
        return;
    pthread_mutex_lock(&pc->mu);
    pc->woken = 1;
    pthread_cond_broadcast(&pc->cv);
    pthread_mutex_unlock(&pc->mu);
}

const char *http_precompute_owner(struct http_precompute *pc)
{
    return pc ? pc->owner : NULL;
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
    /* rule 3: what this worker claimed and did not finish goes back now */
    struct err e;
    store_claims_renew(pc->st, pc->owner, 0, NULL, &e);
    for (size_t k = 0; k < pc->ncaught; k++)
        free(pc->caught[k]);
    free(pc->caught);
    pthread_mutex_destroy(&pc->mu);
    pthread_cond_destroy(&pc->cv);
    free(pc);
}
