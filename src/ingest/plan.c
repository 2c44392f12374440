/* plan.c - what each walked file needs (rule 5 of ingest.h), what vanished
 * (prune), and the store's waiting items as jobs.
 *
 * Design:
 *  1. One store lookup per file (by source); a new source costs a second
 *     (by id) to tell a move from a clash. Files are never opened here.
 *  2. Metadata-only changes of unchanged files (a new sidecar) are written
 *     here, META_TX_WRITES per transaction: they need no engine.
 *  3. A job carries what the plan saw of its item (seq, source, digest,
 *     embedding state), so the engine can leave alone an item that another
 *     writer changed meanwhile (rule 7).
 *  4. Prune lists the store first and deletes afterwards, in one
 *     transaction: reads and writes stay apart.
 */
#include "ingest/ingest_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/fsutil.h"

#define META_TX_WRITES 256 /* metadata-only writes per transaction */

/* ---- a string map -------------------------------------------------------- */

static uint64_t str_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

void ingest__map_free(struct ingest__map *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static size_t map_slot(const struct ingest__map *m, const char *k)
{
    size_t i = (size_t)str_hash(k) & (m->cap - 1);
    while (m->keys[i] && strcmp(m->keys[i], k))
        i = (i + 1) & (m->cap - 1);
    return i;
}

void *ingest__map_get(const struct ingest__map *m, const char *k)
{
    if (!m->cap)
        return NULL;
    size_t i = map_slot(m, k);
    return m->keys[i] ? m->vals[i] : NULL;
}

int ingest__map_put(struct ingest__map *m, const char *k, void *v)
{
    if (2 * (m->n + 1) > m->cap) {
        struct ingest__map g = {0};
        g.cap = m->cap ? 2 * m->cap : 64;
        g.keys = calloc(g.cap, sizeof *g.keys);
        g.vals = calloc(g.cap, sizeof *g.vals);
        if (!g.keys || !g.vals) {
            ingest__map_free(&g);
            return -1;
        }
        for (size_t i = 0; i < m->cap; i++)
            if (m->keys[i]) {
                size_t j = map_slot(&g, m->keys[i]);
                g.keys[j] = m->keys[i];
                g.vals[j] = m->vals[i];
                g.n++;
            }
        ingest__map_free(m);
        *m = g;
    }
    size_t i = map_slot(m, k);
    if (!m->keys[i]) {
        m->keys[i] = k;
        m->n++;
    }
    m->vals[i] = v;
    return 0;
}

/* ---- jobs ------------------------------------------------------------------ */

void ingest_job_clear(struct ingest_job *j)
{
    free(j->path);
    free(j->id);
    free(j->old_sha);
    free(j->metadata);
    free(j->plan_source);
    free(j->plan_sha);
}

void ingest_jobs_free(struct ingest_jobs *js)
{
    for (size_t i = 0; i < js->n; i++)
        ingest_job_clear(&js->v[i]);
    free(js->v);
    memset(js, 0, sizeof *js);
}

/* Appends *j (taking its strings); on failure frees them. */
static int jobs_push(struct ingest_jobs *js, struct ingest_job *j, struct err *err)
{
    if (js->n == js->cap) {
        size_t nc = js->cap ? 2 * js->cap : 256;
        struct ingest_job *g = realloc(js->v, nc * sizeof *g);
        if (!g) {
            ingest_job_clear(j);
            return err_set(err, ERR_NOMEM, "no memory");
        }
        js->v = g;
        js->cap = nc;
    }
    js->v[js->n++] = *j;
    return 0;
}

/* Takes the item's fields into the job's plan_* (rule 7); it is cleared. */
static void job_saw(struct ingest_job *j, struct store_item *it)
{
    j->plan_seq = it->seq;
    j->plan_source = it->source;
    j->plan_sha = it->sha256;
    j->plan_embedded = it->has_embedding;
    it->source = it->sha256 = NULL;
    if (j->plan_sha && it->has_embedding && !(j->old_sha = strdup(j->plan_sha)))
        j->plan_seq = -1; /* out of memory: caught by the caller */
    store_item_clear(it);
}

/* ---- the plan -------------------------------------------------------------- */

struct plan {
    struct store *st;
    const struct ingest_walk *w;
    const struct ingest_plan_opts *o;
    const struct ingest_hooks *h;
    struct ingest_counts *n;
    struct ingest_jobs *js;
    struct ingest__map ids; /* id -> file, for this run */
    int in_tx;              /* a metadata transaction is open */
    int writes;             /* writes in it */
};

static char *make_id(const struct plan *pl, const struct ingest_file *f)
{
    if (pl->o->id_from == INGEST_ID_PATH)
        return ingest_escape_name(f->path);
    if (pl->o->id_from == INGEST_ID_NAME) {
        const char *s = strrchr(f->rel, '/');
        return strdup(s ? s + 1 : f->rel);
    }
    const char *pfx = pl->o->prefixes ? pl->o->prefixes[f->root] : "";
    size_t lp = strlen(pfx), lr = strlen(f->rel);
    char *id = malloc(lp + lr + 1);
    if (id) {
        memcpy(id, pfx, lp);
        memcpy(id + lp, f->rel, lr + 1);
    }
    return id;
}

/* A known file whose size and mtime match: writes new metadata if any. */
static int plan_unchanged(struct plan *pl, const struct ingest_file *f, struct store_item *it,
                          char *md, int changed, struct err *err)
{
    if (!changed) {
        pl->n->unchanged++;
        return 0;
    }
    int rc = 0;
    if (!pl->in_tx && !(rc = store_begin(pl->st, err)))
        pl->in_tx = 1;
    if (rc)
        return rc;
    struct store_item up = *it;
    up.metadata = md;
    up.embedding = NULL;
    struct err pe;
    rc = store_put(pl->st, &up, NULL, &pe);
    if (rc == -ERR_INVALID_ARGUMENT || rc == -ERR_INVALID_UTF8) {
        char msg[ERR_MSG_MAX + 64];
        snprintf(msg, sizeof msg, "%s: %s", f->path, pe.msg);
        ingest__fail(pl->h, pl->n, msg);
        return 0;
    }
    if (rc) {
        *err = pe;
        return rc;
    }
    pl->n->updated++;
    if (++pl->writes >= META_TX_WRITES) {
        pl->in_tx = pl->writes = 0;
        return store_commit(pl->st, err);
    }
    return 0;
}

/* A file whose source the store knows (it). */
static int plan_known(struct plan *pl, size_t i, struct store_item *it, struct err *err)
{
    const struct ingest_file *f = &pl->w->files[i];
    int changed = 0;
    char *md = ingest_sidecar_merge(pl->o->sidecar, it->metadata, f->path, f->rel, it->id,
                                    &changed);
    if (!md) {
        store_item_clear(it);
        return err_set(err, ERR_NOMEM, "no memory");
    }
    int same = it->size == f->size && it->mtime == f->mtime;
    if (it->has_embedding && same) {
        int rc = plan_unchanged(pl, f, it, md, changed, err);
        free(md);
        store_item_clear(it);
        return rc;
    }
    struct ingest_job j = {
        .path = strdup(f->path),
        .id = it->id,
        .metadata = md,
        .kind = it->has_embedding ? INGEST_CHANGED : INGEST_WAITING,
        .meta_changed = changed,
        .explicit_file = f->explicit_file,
        .same_stat = same,
        .size = f->size,
        .mtime = f->mtime,
        .tag = i,
    };
    it->id = NULL;
    job_saw(&j, it);
    if (!j.path || j.plan_seq < 0) {
        ingest_job_clear(&j);
        return err_set(err, ERR_NOMEM, "no memory");
    }
    return jobs_push(pl->js, &j, err);
}

static int under_roots(const struct ingest_walk *w, const char *path)
{
    for (int r = 0; r < w->nroots; r++)
        if (ingest_path_under(path, w->roots[r], w->is_dir[r]))
            return 1;
    return 0;
}

/* A file whose source the store does not know. */
static int plan_new(struct plan *pl, size_t i, struct err *err)
{
    const struct ingest_file *f = &pl->w->files[i];
    char msg[ERR_MSG_MAX + 2 * STORE_ID_MAX];
    char *id = make_id(pl, f);
    if (!id)
        return err_set(err, ERR_NOMEM, "no memory");
    const struct ingest_file *other = ingest__map_get(&pl->ids, id);
    if (other) {
        snprintf(msg, sizeof msg, "%s: its id '%s' is also the id of %s (try --id-from path)",
                 f->path, id, other->path);
        ingest__fail(pl->h, pl->n, msg);
        free(id);
        return 0;
    }
    struct store_item old;
    struct err fe;
    int gr = store_get(pl->st, id, &old, &fe);
    if (gr && gr != -ERR_NOT_FOUND && gr != -ERR_INVALID_ARGUMENT) {
        free(id);
        *err = fe;
        return gr;
    }
    struct ingest_job j = {.kind = INGEST_NEW, .explicit_file = f->explicit_file, .tag = i,
                           .size = f->size, .mtime = f->mtime};
    int changed = 0;
    if (gr == 0) {
        /* a source that is not a local path (a URL from the HTTP API)
         * never "moves" here, unless the roots own their ids */
        if (old.source && strcmp(old.source, f->path) &&
            (old.source[0] != '/' || fs_exists(old.source)) &&
            !(pl->o->own_ids && !under_roots(pl->w, old.source))) {
            snprintf(msg, sizeof msg,
                     "%s: its id '%s' belongs to %s in the store (try --id-from path)", f->path,
                     id, old.source);
            ingest__fail(pl->h, pl->n, msg);
            store_item_clear(&old);
            free(id);
            return 0;
        }
        /* the item's file moved here (or the store had no source) */
        j.kind = old.has_embedding ? INGEST_MOVED : INGEST_WAITING;
        j.metadata = ingest_sidecar_merge(pl->o->sidecar, old.metadata, f->path, f->rel, id,
                                          &changed);
        job_saw(&j, &old);
    } else
        j.metadata = ingest_sidecar_merge(pl->o->sidecar, NULL, f->path, f->rel, id, &changed);
    j.meta_changed = changed;
    j.id = id;
    j.path = strdup(f->path);
    if (!j.path || !j.metadata || j.plan_seq < 0) {
        ingest_job_clear(&j);
        return err_set(err, ERR_NOMEM, "no memory");
    }
    int rc = jobs_push(pl->js, &j, err);
    if (!rc && ingest__map_put(&pl->ids, pl->js->v[pl->js->n - 1].id, (void *)f))
        rc = err_set(err, ERR_NOMEM, "no memory");
    return rc;
}

int ingest_plan(struct store *st, const struct ingest_walk *w, const struct ingest_plan_opts *o,
                const struct ingest_hooks *h, struct ingest_counts *n, struct ingest_jobs *js,
                struct err *err)
{
    struct plan pl = {.st = st, .w = w, .o = o, .h = h, .n = n, .js = js};
    struct ingest__map paths = {0}; /* path -> file: files seen */
    int rc = 0;
    for (size_t i = 0; i < w->n && !rc; i++) {
        if (ingest__stop(h)) {
            rc = err_set(err, ERR_INTERRUPTED, "interrupted");
            break;
        }
        const struct ingest_file *f = &w->files[i];
        /* a file reached through two roots is one file */
        if (ingest__map_get(&paths, f->path))
            continue;
        if (ingest__map_put(&paths, f->path, (void *)f)) {
            rc = err_set(err, ERR_NOMEM, "no memory");
            break;
        }
        struct store_item it;
        struct err fe;
        int fr = store_find_source(st, f->path, &it, &fe);
        if (fr == 0)
            rc = plan_known(&pl, i, &it, err);
        else if (fr == -ERR_NOT_FOUND)
            rc = plan_new(&pl, i, err);
        else {
            *err = fe;
            rc = fr;
        }
    }
    if (pl.in_tx) {
        if (rc && rc != -ERR_INTERRUPTED)
            store_rollback(st, NULL);
        else {
            struct err ce;
            int cr = store_commit(st, &ce);
            if (cr && !rc) {
                *err = ce;
                rc = cr;
            }
        }
    }
    ingest__map_free(&pl.ids);
    ingest__map_free(&paths);
    return rc;
}

/* ---- prune ------------------------------------------------------------------ */

static int vanished(const struct ingest_walk *w, const struct ingest__map *present,
                    const char *src)
{
    if (!src || ingest__map_get(present, src))
        return 0;
    for (size_t i = 0; i < w->nbad; i++)
        if (ingest_path_under(src, w->bad_dirs[i], 1))
            return 0;
    for (int r = 0; r < w->nroots; r++)
        if (ingest_path_under(src, w->roots[r], w->is_dir[r]))
            return 1;
    return 0;
}

static int delete_all(struct store *st, char **ids, size_t n, struct ingest_counts *cn,
                      struct err *err)
{
    if (!n)
        return 0;
    int rc = store_begin(st, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < n && !rc; i++) {
        int d = store_delete(st, ids[i], err);
        if (d == 0)
            cn->removed++;
        else if (d != -ERR_NOT_FOUND)
            rc = d;
    }
    if (rc)
        store_rollback(st, NULL);
    else
        rc = store_commit(st, err);
    return rc;
}

int ingest_prune(struct store *st, const struct ingest_walk *w, struct ingest_counts *cn,
                 struct err *err)
{
    struct ingest__map present = {0};
    for (size_t i = 0; i < w->n; i++)
        if (!w->files[i].not_image && ingest__map_put(&present, w->files[i].path, &w->files[i]))
            return err_set(err, ERR_NOMEM, "no memory");
    char **doomed = NULL;
    size_t nd = 0, capd = 0;
    int64_t after = 0;
    int rc = 0;
    for (;;) {
        struct store_item *items;
        size_t k;
        int64_t next;
        if ((rc = store_list(st, after, 1000, &items, &k, &next, err)))
            break;
        for (size_t i = 0; i < k && !rc; i++) {
            if (!vanished(w, &present, items[i].source))
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
        store_items_free(items, k);
        if (rc || !next)
            break;
        after = next;
    }
    if (!rc)
        rc = delete_all(st, doomed, nd, cn, err);
    for (size_t i = 0; i < nd; i++)
        free(doomed[i]);
    free(doomed);
    ingest__map_free(&present);
    return rc;
}

/* ---- waiting items ------------------------------------------------------------ */

/* Appends the job for waiting item it (taking its strings); an item with
 * no source fails (reported; *no_source gets 1). */
static int waiting_job(struct store_item *it, const struct ingest_hooks *h,
                       struct ingest_counts *n, struct ingest_jobs *js, int *no_source,
                       struct err *err)
{
    *no_source = 0;
    if (!it->source || !*it->source) {
        char msg[STORE_ID_MAX + 64];
        snprintf(msg, sizeof msg, "item '%s': no source to embed it from", it->id);
        ingest__fail(h, n, msg);
        *no_source = 1;
        return 0;
    }
    struct ingest_job j = {
        .path = strdup(it->source),
        .id = it->id,
        .kind = INGEST_WAITING,
        .explicit_file = 1,
        .size = -1,
        .mtime = -1,
    };
    it->id = NULL;
    job_saw(&j, it);
    if (!j.path) {
        ingest_job_clear(&j);
        return err_set(err, ERR_NOMEM, "no memory");
    }
    return jobs_push(js, &j, err);
}

int ingest_waiting(struct store *st, int64_t after, size_t limit, const struct ingest_hooks *h,
                   struct ingest_counts *n, struct ingest_jobs *js, int64_t *last,
                   struct err *err)
{
    int rc = 0, none;
    size_t taken = 0;
    *last = after;
    for (;;) {
        struct store_item *items;
        size_t k;
        int64_t next;
        int page = limit && limit - taken < 1000 ? (int)(limit - taken) : 1000;
        if ((rc = store_waiting(st, after, page, &items, &k, &next, err)))
            break;
        for (size_t i = 0; i < k && !rc; i++) {
            *last = items[i].seq;
            taken++;
            rc = waiting_job(&items[i], h, n, js, &none, err);
        }
        store_items_free(items, k);
        if (rc || !next || (limit && taken >= limit))
            break;
        after = next;
    }
    return rc;
}

int ingest_claim(struct store *st, const char *owner, int lease_seconds, int limit,
                 const struct ingest_hooks *h, struct ingest_counts *n, struct ingest_jobs *js,
                 size_t *claimed, int64_t *retry_ms, struct err *err)
{
    struct store_item *items = NULL;
    size_t k = 0;
    *claimed = 0;
    int rc = store_claim_waiting(st, owner, lease_seconds, limit, &items, &k, retry_ms, err);
    for (size_t i = 0; i < k && !rc; i++) {
        int none = 0;
        char *id = strdup(items[i].id);
        rc = id ? waiting_job(&items[i], h, n, js, &none, err)
                : err_set(err, ERR_NOMEM, "no memory");
        if (!rc && none) { /* failed for good: not claimed again */
            struct err fe;
            store_set_failed(st, id, "no source to embed it from", -1, -1, &fe);
        }
        free(id);
    }
    store_items_free(items, k);
    *claimed = k;
    return rc;
}
