/* store.c - the store interface: what every backend shares.
 *
 * Design:
 *  1. store_open picks a backend from the target: a postgres:// or
 *     postgresql:// URL is PostgreSQL (store_pg.c), anything else a file
 *     path, the embedded SQLite store (store_sqlite.c). Backends fill an
 *     operations table (store_int.h), as SQLite's VFS does, and keep only
 *     their storage; everything that must behave the same on every backend
 *     is here, once: argument checks, metadata validation (jansson), query
 *     checks, offset / min_score trimming, near-duplicate grouping and the
 *     local index's catch-up.
 *  2. Index labels are the backend's item seqs (never reused). Each backend
 *     keeps a changes log filled by triggers (the seq of every embedding
 *     change); the local index records the last change it covers, and
 *     catching up is replaying the seqs changed since against the current
 *     rows. A change made behind the store's back (the sqlite3 shell, psql)
 *     is seen the same way.
 *  3. The index file (file stores only) is trusted only when its checksums
 *     pass (hnsw_load), its tag is this database's random id, its
 *     dimension matches, and its covered change lies between the trimmed
 *     part of the log and the log's end; after catching up, the index's
 *     item count must equal the database's. Anything else rebuilds. The log
 *     is trimmed up to what the written file covers.
 *  4. A backend with an ANN search of its own (pgvector) serves searches
 *     with it; the local index then serves only store_duplicates.
 *  5. Filters are evaluated by the backend (SQL) and become a bitmap of
 *     accepted seqs that the index's filter callback tests: exact, and the
 *     index widens or falls back to an exact scan for selective filters.
 *  6. Locks: index rwlock, then a backend connection lock (never the other
 *     way round). Searches hold the index read lock; catch-up holds it for
 *     writing.
 */
#include "store/store.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "store/store_int.h"
#include "store/vec.h"
#include "util/jsonscan.h"
#include "util/utf8.h"

/* ---- helpers ----------------------------------------------------------- */

int store__in_batch(const struct store *st)
{
    return atomic_load(&st->tx_open) && pthread_equal(st->tx_owner, pthread_self());
}

/* A smaller norm than STORE_VEC_MIN_NORM (64 x 1e-45 has 1.1e-44) makes
 * 1/norm overflow float32, and the scores NaN. */
int store__valid_vec(const float *v, int dim)
{
    double s = 0;
    for (int i = 0; i < dim; i++)
        s += (double)v[i] * v[i];
    return isfinite(s) && s >= STORE_VEC_MIN_NORM * STORE_VEC_MIN_NORM;
}

uint64_t store__new_db_id(void)
{
    uint64_t id = 0;
    if (getrandom(&id, sizeof id, 0) != (ssize_t)sizeof id)
        id = (uint64_t)time(NULL) * 6364136223846793005ull ^ (uint64_t)getpid();
    return id & 0x7fffffffffffffffull;
}

const char *store_model(const struct store *st) { return st->model; }
int store_dim(const struct store *st) { return st->dim; }
const char *store_kind(const struct store *st) { return st->ops->kind; }
const char *store_name(const struct store *st) { return st->name; }

const char *store_index_kind(struct store *st)
{
    return st->ops->index_kind(st);
}

int store_is_url(const char *target)
{
    return target && (!strncmp(target, "postgres://", 11) || !strncmp(target, "postgresql://", 13));
}

/* The URL without its password, for messages. */
static char *display_name(const char *target)
{
    if (!store_is_url(target))
        return strdup(target);
    const char *scheme_end = strstr(target, "://") + 3;
    const char *at = strchr(scheme_end, '@');
    const char *slash = strchr(scheme_end, '/');
    const char *colon = strchr(scheme_end, ':');
    if (!at || (slash && slash < at) || !colon || colon > at)
        return strdup(target);
    size_t n = strlen(target) + 8;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%.*s:***%s", (int)(colon - target), target, at);
    return s;
}

int store_open(struct store **out, const char *target, const struct store_options *o,
               struct err *err)
{
    *out = NULL;
    if (!target || !*target)
        return err_set(err, ERR_INVALID_ARGUMENT, "a store path or URL is required");
    if (o && o->model && strlen(o->model) > STORE_MODEL_MAX)
        return err_set(err, ERR_INVALID_ARGUMENT, "model id longer than %d bytes",
                       STORE_MODEL_MAX);
    if (o && (o->dim < 0 || o->dim > STORE_DIM_MAX))
        return err_set(err, ERR_INVALID_ARGUMENT, "dimension %d is outside [1, %d]", o->dim,
                       STORE_DIM_MAX);
    struct store *st = calloc(1, sizeof *st);
    if (!st)
        return err_set(err, ERR_NOMEM, "no memory");
    pthread_rwlock_init(&st->idx_lock, NULL);
    st->saved_covered = -1;
    atomic_init(&st->n_items, -1);
    atomic_init(&st->n_waiting, -1);
    atomic_init(&st->n_failed, -1);
    st->name = display_name(target);
    if (!st->name) {
        store_close(st, NULL);
        return err_set(err, ERR_NOMEM, "no memory");
    }
    hnsw_params_default(&st->hp);
    if (o && o->hnsw_m)
        st->hp.m = o->hnsw_m;
    if (o && o->ef_construction)
        st->hp.ef_construction = o->ef_construction;
    st->hp.ef_search = o && o->ef_search ? o->ef_search : 100;
    int rc = store_is_url(target) ? store__pg_open(st, target, o, err)
                                  : store__sqlite_open(st, target, o, err);
    if (rc) {
        store_close(st, NULL);
        return rc;
    }
    *out = st;
    return 0;
}

/* ---- the local index --------------------------------------------------- */
/* All of these run with idx_lock held for writing, inside a snapshot
 * (ops->snap_begin) unless said otherwise. */

static int insert_cb(int64_t seq, const float *v, void *ctx)
{
    struct err e;
    return hnsw_insert(ctx, seq, v, &e) ? -ERR_NOMEM : 0;
}

static void set_reason(struct store *st, const char *why)
{
    size_t wl = strlen(why);
    if (wl >= sizeof st->info.reason)
        wl = sizeof st->info.reason - 1;
    memcpy(st->info.reason, why, wl);
    st->info.reason[wl] = 0;
}

/* Builds the index from every stored embedding. */
static int rebuild(struct store *st, const char *why, struct err *err)
{
    struct hnsw *h = NULL;
    int rc = hnsw_new(&h, st->dim, &st->hp, err);
    if (rc)
        return rc;
    int64_t covered = 0;
    rc = st->ops->log_state(st, &covered, NULL, err);
    if (!rc && (rc = st->ops->emb_all(st, insert_cb, h, err)) == -ERR_NOMEM && !err->code)
        rc = err_set(err, ERR_NOMEM, "%s: no memory for the index", st->name);
    if (rc) {
        hnsw_free(h);
        return rc;
    }
    hnsw_set_covered(h, covered);
    hnsw_set_tag(h, st->db_id);
    hnsw_free(st->idx);
    st->idx = h;
    st->saved_covered = -1; /* not on disk yet */
    st->info.origin = STORE_INDEX_REBUILT;
    set_reason(st, why);
    st->info.caught_up = 0;
    return 0;
}

/* Applies the changes after h's covered change. Returns 1 when the index
 * cannot be caught up (log trimmed past it, or it claims changes the log
 * does not have). */
static int apply_changes(struct store *st, struct hnsw *h, int64_t *applied, struct err *err)
{
    int64_t top = 0, trimmed = 0;
    int rc = st->ops->log_state(st, &top, &trimmed, err);
    if (rc)
        return rc;
    int64_t cov = hnsw_covered(h);
    if (cov < trimmed || cov > top)
        return 1;
    *applied = 0;
    if (cov == top)
        return 0;
    int64_t *seqs = NULL;
    size_t n = 0;
    if ((rc = st->ops->log_since(st, cov, &seqs, &n, err)))
        return rc;
    /* in slices, so a long log never needs one huge buffer */
    size_t slice = 1024;
    float *v = malloc(slice * (size_t)st->dim * sizeof *v);
    unsigned char *ok = malloc(slice);
    rc = v && ok ? 0 : err_set(err, ERR_NOMEM, "no memory");
    for (size_t i = 0; i < n && !rc; i += slice) {
        size_t m = n - i < slice ? n - i : slice;
        if ((rc = st->ops->emb_by_seqs(st, seqs + i, m, v, ok, err)))
            break;
        for (size_t j = 0; j < m && !rc; j++)
            if (ok[j])
                rc = hnsw_insert(h, seqs[i + j], v + j * (size_t)st->dim, err);
            else
                hnsw_delete(h, seqs[i + j]); /* absent, NULL or unusable: not indexed */
    }
    free(v);
    free(ok);
    free(seqs);
    if (!rc) {
        hnsw_set_covered(h, top);
        *applied = (int64_t)n;
    }
    return rc;
}

/* Loads the index file if it can be trusted and caught up; 1 if not. */
static int try_file(struct store *st, char *why, size_t whylen, struct err *err)
{
    if (!st->index_path) {
        snprintf(why, whylen, "built at start (kept in memory)");
        return 1;
    }
    struct hnsw *h = NULL;
    struct err le;
    int rc = hnsw_load(&h, st->index_path, &st->hp, &le);
    if (rc == -ERR_NOT_FOUND) {
        snprintf(why, whylen, "missing");
        return 1;
    }
    if (rc) {
        size_t k = (size_t)snprintf(why, whylen, "unreadable: "), l = strlen(le.msg);
        if (k + l >= whylen)
            l = whylen - k - 1;
        memcpy(why + k, le.msg, l);
        why[k + l] = 0;
        return 1;
    }
    if (hnsw_tag(h) != st->db_id || hnsw_dim(h) != st->dim) {
        hnsw_free(h);
        snprintf(why, whylen, "made for another database or model");
        return 1;
    }
    hnsw_set_ef_search(h, st->hp.ef_search);
    int64_t file_cov = hnsw_covered(h), applied = 0, want = 0;
    rc = apply_changes(st, h, &applied, err);
    if (rc) {
        hnsw_free(h);
        snprintf(why, whylen, "stale (the changes log no longer covers it)");
        return rc < 0 ? rc : 1;
    }
    if ((rc = st->ops->count_embedded(st, &want, err))) {
        hnsw_free(h);
        return rc;
    }
    if ((int64_t)hnsw_count(h) != want) {
        hnsw_free(h);
        snprintf(why, whylen, "inconsistent with the database (item count differs)");
        return 1;
    }
    hnsw_free(st->idx);
    st->idx = h;
    st->saved_covered = file_cov;
    st->info.origin = STORE_INDEX_FILE;
    st->info.reason[0] = 0;
    st->info.caught_up = applied;
    return 0;
}

/* Makes st->idx current with the committed database (idx_lock held for
 * writing, no snapshot). */
static int ensure_index(struct store *st, struct err *err)
{
    int rc = st->ops->snap_begin(st, err);
    if (rc)
        return rc;
    if (st->idx) {
        int64_t applied = 0;
        rc = apply_changes(st, st->idx, &applied, err);
        if (rc == 0) {
            st->info.caught_up += applied;
            /* Deletes leave tombstones; the item count is the cheap check. */
            goto done;
        }
        if (rc < 0)
            goto done;
        /* The log was trimmed past us by another process: reload. */
        hnsw_free(st->idx);
        st->idx = NULL;
    }
    char why[sizeof st->info.reason];
    rc = try_file(st, why, sizeof why, err);
    if (rc > 0)
        rc = rebuild(st, why, err);
done:
    st->ops->snap_end(st);
    return rc;
}

/* Is the index behind the committed database? (a read lock on idx held by
 * the caller) */
static int index_behind(struct store *st, struct err *err, int *rc)
{
    if (!st->idx)
        return 1;
    int64_t top = 0;
    *rc = st->ops->log_top(st, &top, err);
    return !*rc && top != hnsw_covered(st->idx);
}

/* Brings a loaded index up to date after a commit; a store whose index is
 * not loaded leaves the work to its first search. */
static int after_commit(struct store *st, struct err *err)
{
    pthread_rwlock_wrlock(&st->idx_lock);
    int rc = st->idx ? ensure_index(st, err) : 0;
    pthread_rwlock_unlock(&st->idx_lock);
    return rc;
}

/* What a single write does after the backend returns: a write outside a
 * batch has committed, so the loaded index catches up. */
static int after_write(struct store *st, int rc, struct err *err)
{
    if (!rc && !atomic_load(&st->tx_open))
        rc = after_commit(st, err);
    return rc;
}

/* Writes the index file if it changed and trims the changes log it covers
 * (idx_lock held for writing). */
static int save_index(struct store *st, struct err *err)
{
    if (!st->index_path || !st->idx || hnsw_covered(st->idx) == st->saved_covered)
        return 0;
    int rc = hnsw_save(st->idx, st->index_path, err);
    if (rc)
        return rc;
    st->saved_covered = hnsw_covered(st->idx);
    return st->ops->log_trim ? st->ops->log_trim(st, st->saved_covered, err) : 0;
}

int store_index_sync(struct store *st, struct err *err)
{
    pthread_rwlock_wrlock(&st->idx_lock);
    int rc = ensure_index(st, err);
    if (!rc)
        rc = save_index(st, err);
    pthread_rwlock_unlock(&st->idx_lock);
    return rc;
}

int store_close(struct store *st, struct err *err)
{
    if (!st)
        return 0;
    int rc = 0;
    if (st->be && atomic_load(&st->tx_open)) {
        st->ops->finish(st, 0, NULL);
        atomic_store(&st->tx_open, 0);
    }
    if (st->idx && st->be && st->index_path) {
        pthread_rwlock_wrlock(&st->idx_lock);
        rc = ensure_index(st, err);
        if (!rc)
            rc = save_index(st, err);
        pthread_rwlock_unlock(&st->idx_lock);
    }
    hnsw_free(st->idx);
    if (st->be)
        st->ops->close(st);
    pthread_rwlock_destroy(&st->idx_lock);
    free(st->name);
    free(st->index_path);
    free(st->model);
    free(st);
    return rc;
}

void store_index_info(struct store *st, struct store_index_info *out)
{
    pthread_rwlock_rdlock(&st->idx_lock);
    *out = st->info;
    if (st->idx) {
        out->items = hnsw_count(st->idx);
        out->tombstones = hnsw_deleted(st->idx);
        out->covered = hnsw_covered(st->idx);
    }
    pthread_rwlock_unlock(&st->idx_lock);
}

/* ---- checks ------------------------------------------------------------ */

static int check_id(const char *id, struct err *err)
{
    if (!id || !*id)
        return err_set(err, ERR_INVALID_ARGUMENT, "an item id is required");
    if (strlen(id) > STORE_ID_MAX)
        return err_set(err, ERR_INVALID_ARGUMENT, "item id of %zu bytes (max %d)", strlen(id),
                       STORE_ID_MAX);
    return 0;
}

/* What a new id or source must be beyond its length: valid UTF-8 (they go
 * out in JSON; one bad id used to break every listing that held it). */
static int check_text(const char *what, const char *s, struct err *err)
{
    size_t bad = 0;
    if (s && utf8_check((const uint8_t *)s, strlen(s), &bad))
        return err_set(err, ERR_INVALID_UTF8, "%s is not valid UTF-8 (byte %zu)", what, bad);
    return 0;
}

/* Validates md with jansson (a JSON object, no NUL characters, which
 * PostgreSQL's jsonb refuses) and writes it without the whitespace between
 * tokens into *out (malloc'd): every backend stores the same text, the
 * tokens exactly as given (no number is reformatted). */
static int check_metadata(const char *md, char **out, struct err *err)
{
    *out = NULL;
    size_t len = strlen(md);
    if (len > STORE_METADATA_MAX)
        return err_set(err, ERR_INVALID_ARGUMENT, "metadata of %zu bytes (max %d)", len,
                       STORE_METADATA_MAX);
    int rc = check_text("metadata", md, err);
    if (rc)
        return rc;
    struct json_shape sh;
    json_shape_scan(md, len, 0, STORE_METADATA_DEPTH_MAX, &sh);
    if (sh.depth > STORE_METADATA_DEPTH_MAX)
        return err_set(err, ERR_INVALID_ARGUMENT, "metadata nested over %d levels deep",
                       STORE_METADATA_DEPTH_MAX);
    json_error_t je;
    json_t *j = json_loadb(md, len, 0, &je);
    int obj = j && json_is_object(j);
    json_decref(j);
    if (!obj)
        return err_set(err, ERR_INVALID_ARGUMENT, "metadata is not a JSON object: %.80s", md);
    char *m = malloc(len + 1);
    if (!m)
        return err_set(err, ERR_NOMEM, "no memory");
    size_t k = 0;
    int in_str = 0;
    for (size_t i = 0; i < len; i++) {
        char c = md[i];
        if (in_str) {
            if (c == '\\' && i + 1 < len) {
                m[k++] = c;
                c = md[++i];
            } else if (c == '"')
                in_str = 0;
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
            continue;
        else if (c == '"')
            in_str = 1;
        m[k++] = c;
    }
    m[k] = 0;
    *out = m;
    return 0;
}

/* ---- writes ------------------------------------------------------------ */

static int put(struct store *st, const struct store_item *it, int keep_same, int *is_new,
               struct store_item *out, struct err *err)
{
    int rc = check_id(it->id, err);
    if (!rc)
        rc = check_text("item id", it->id, err);
    /* a source is a file path, which may hold any bytes (a Latin-1 name):
     * it is kept as it is and readers show bad bytes as U+FFFD */
    if (rc)
        return rc;
    if (it->source && strlen(it->source) > STORE_SOURCE_MAX)
        return err_set(err, ERR_INVALID_ARGUMENT, "%s: source of %zu bytes (max %d)", it->id,
                       strlen(it->source), STORE_SOURCE_MAX);
    if (it->sha256 && strlen(it->sha256) > 128)
        return err_set(err, ERR_INVALID_ARGUMENT, "%s: sha256 of %zu characters", it->id,
                       strlen(it->sha256));
    if (it->embedding && !store__valid_vec(it->embedding, st->dim))
        return err_set(err, ERR_INVALID_ARGUMENT,
                       "%s: the embedding is not finite or too close to zero", it->id);
    char *md = NULL;
    if ((rc = check_metadata(it->metadata ? it->metadata : "{}", &md, err)))
        return rc;
    rc = st->ops->put(st, it, md, keep_same, is_new, out, err);
    free(md);
    rc = after_write(st, rc, err);
    if (rc && out)
        store_item_clear(out);
    return rc;
}

int store_put(struct store *st, const struct store_item *it, int *is_new, struct err *err)
{
    return put(st, it, 0, is_new, NULL, err);
}

int store_register(struct store *st, const struct store_item *it, int *is_new,
                   struct err *err)
{
    if (it->embedding)
        return err_set(err, ERR_INVALID_ARGUMENT, "%s: a registered item has no embedding",
                       it->id ? it->id : "?");
    return put(st, it, 1, is_new, NULL, err);
}

int store_put_get(struct store *st, const struct store_item *it, int *is_new,
                  struct store_item *out, struct err *err)
{
    memset(out, 0, sizeof *out);
    return put(st, it, 0, is_new, out, err);
}

int store_put_embedding(struct store *st, const char *id, const float *v, struct err *err)
{
    int rc = check_id(id, err);
    if (rc)
        return rc;
    if (!store__valid_vec(v, st->dim))
        return err_set(err, ERR_INVALID_ARGUMENT,
                       "%s: the embedding is not finite or too close to zero", id);
    return after_write(st, st->ops->put_embedding(st, id, v, err), err);
}

/* ---- leased claims and the failed state --------------------------------- */

static int check_owner(const char *owner, int lease_s, int lease_min, struct err *err)
{
    if (!owner || !*owner || strlen(owner) > STORE_OWNER_MAX || !utf8_valid(owner))
        return err_set(err, ERR_INVALID_ARGUMENT, "a claim owner is 1..%d bytes of UTF-8",
                       STORE_OWNER_MAX);
    if (lease_s < lease_min || lease_s > STORE_LEASE_MAX)
        return err_set(err, ERR_INVALID_ARGUMENT, "lease of %d s is outside [%d, %d]", lease_s,
                       lease_min, STORE_LEASE_MAX);
    return 0;
}

static int cmp_item_seq(const void *a, const void *b)
{
    int64_t x = ((const struct store_item *)a)->seq, y = ((const struct store_item *)b)->seq;
    return x < y ? -1 : x > y;
}

int store_claim_waiting(struct store *st, const char *owner, int lease_seconds, int limit,
                        struct store_item **items, size_t *n, int64_t *retry_ms,
                        struct err *err)
{
    *items = NULL;
    *n = 0;
    if (retry_ms)
        *retry_ms = 0;
    int rc = check_owner(owner, lease_seconds, 1, err);
    if (rc)
        return rc;
    if (limit < 1 || limit > 10000)
        return err_set(err, ERR_INVALID_ARGUMENT, "limit %d is outside [1, 10000]", limit);
    struct store_item *a = calloc((size_t)limit, sizeof *a);
    if (!a)
        return err_set(err, ERR_NOMEM, "no memory");
    size_t k = 0;
    int64_t retry = 0;
    rc = st->ops->claim(st, owner, lease_seconds, limit, a, &k, &retry, err);
    if (rc) {
        store_items_free(a, k);
        return rc;
    }
    /* RETURNING gives rows in no promised order */
    qsort(a, k, sizeof *a, cmp_item_seq);
    if (!k) {
        free(a);
        a = NULL;
    }
    *items = a;
    *n = k;
    if (retry_ms)
        *retry_ms = k ? 0 : retry;
    return 0;
}

int store_claims_renew(struct store *st, const char *owner, int lease_seconds, int64_t *n,
                       struct err *err)
{
    int64_t dummy;
    int rc = check_owner(owner, lease_seconds, 0, err);
    return rc ? rc : st->ops->renew(st, owner, lease_seconds, n ? n : &dummy, err);
}

#define OWNERS_MAX 10000 /* owners listed at most */

int store_claim_owners(struct store *st, char ***owners, size_t *n, struct err *err)
{
    *owners = NULL;
    *n = 0;
    char **a = calloc(OWNERS_MAX, sizeof *a);
    if (!a)
        return err_set(err, ERR_NOMEM, "no memory");
    size_t k = 0;
    int rc = st->ops->owners(st, OWNERS_MAX, a, &k, err);
    if (rc || !k) {
        store_owners_free(a, k);
        return rc;
    }
    *owners = a;
    *n = k;
    return 0;
}

void store_owners_free(char **owners, size_t n)
{
    for (size_t i = 0; owners && i < n; i++)
        free(owners[i]);
    free(owners);
}

int store_set_failed(struct store *st, const char *id, const char *reason, int64_t size,
                     int64_t mtime, struct err *err)
{
    int rc = check_id(id, err);
    if (rc)
        return rc;
    /* the reason names a file, whose name may hold any bytes: kept as
     * UTF-8 (bad bytes as U+FFFD), cut to ERR_MSG_MAX bytes on a
     * character boundary */
    char *r = utf8_repair(reason && *reason ? reason : "could not be embedded");
    if (!r)
        return err_set(err, ERR_NOMEM, "no memory");
    size_t l = strlen(r);
    if (l >= ERR_MSG_MAX) {
        l = ERR_MSG_MAX - 1;
        while (l && ((unsigned char)r[l] & 0xc0) == 0x80)
            l--;
        r[l] = 0;
    }
    rc = st->ops->set_failed(st, id, r, size < 0 ? -1 : size, mtime < 0 ? -1 : mtime, err);
    free(r);
    return after_write(st, rc, err);
}

int store_delete(struct store *st, const char *id, struct err *err)
{
    int rc = check_id(id, err);
    return rc ? rc : after_write(st, st->ops->del(st, id, err), err);
}

int store_begin(struct store *st, struct err *err) { return st->ops->begin(st, err); }

int store_commit(struct store *st, struct err *err)
{
    int rc = st->ops->finish(st, 1, err);
    return rc ? rc : after_commit(st, err);
}

int store_rollback(struct store *st, struct err *err)
{
    int rc = st->ops->finish(st, 0, err);
    return rc ? rc : after_commit(st, err);
}

int store_reset_embeddings(struct store *st, const char *model, int dim, struct err *err)
{
    if (!model || !*model || strlen(model) > STORE_MODEL_MAX || dim < 1 || dim > STORE_DIM_MAX)
        return err_set(err, ERR_INVALID_ARGUMENT, "reset needs a model id and a dimension in "
                                                  "[1, %d]", STORE_DIM_MAX);
    char *m = strdup(model);
    if (!m)
        return err_set(err, ERR_NOMEM, "no memory");
    pthread_rwlock_wrlock(&st->idx_lock);
    int rc = st->ops->reset(st, model, dim, err);
    if (!rc) {
        free(st->model);
        st->model = m;
        m = NULL;
        st->dim = dim;
        hnsw_free(st->idx);
        st->idx = NULL;
        st->saved_covered = -1;
        memset(&st->info, 0, sizeof st->info);
        if (st->index_path && unlink(st->index_path) && errno != ENOENT)
            rc = err_set(err, ERR_IO, "%s: cannot delete: %s", st->index_path, strerror(errno));
    }
    pthread_rwlock_unlock(&st->idx_lock);
    free(m);
    return rc;
}

/* ---- reads ------------------------------------------------------------- */

void store_item_clear(struct store_item *it)
{
    if (!it)
        return;
    free(it->id);
    free(it->source);
    free(it->sha256);
    free(it->metadata);
    free(it->embedding);
    free(it->model);
    free(it->error);
    memset(it, 0, sizeof *it);
}

void store_items_free(struct store_item *items, size_t n)
{
    if (!items)
        return;
    for (size_t i = 0; i < n; i++)
        store_item_clear(&items[i]);
    free(items);
}

int store_get(struct store *st, const char *id, struct store_item *out, struct err *err)
{
    memset(out, 0, sizeof *out);
    int rc = check_id(id, err);
    return rc ? rc : st->ops->get(st, id, out, err);
}

int store_exists(struct store *st, const char *id, int64_t *seq, struct err *err)
{
    int rc = check_id(id, err);
    return rc ? rc : st->ops->exists(st, id, seq, err);
}

int store_find_source(struct store *st, const char *source, struct store_item *out,
                      struct err *err)
{
    memset(out, 0, sizeof *out);
    if (!source)
        return err_set(err, ERR_INVALID_ARGUMENT, "a source is required");
    if (strlen(source) > STORE_SOURCE_MAX)
        return err_set(err, ERR_NOT_FOUND, "no item with source '%.64s...'", source);
    return st->ops->find_source(st, source, out, err);
}

static int list_items(struct store *st, int waiting, int64_t after, int limit,
                      struct store_item **items, size_t *n, int64_t *next, struct err *err)
{
    *items = NULL;
    *n = 0;
    *next = 0;
    if (limit < 1 || limit > 10000)
        return err_set(err, ERR_INVALID_ARGUMENT, "limit %d is outside [1, 10000]", limit);
    /* one row ahead: is there a next page? */
    struct store_item *a = calloc((size_t)limit + 1, sizeof *a);
    if (!a)
        return err_set(err, ERR_NOMEM, "no memory");
    size_t k = 0;
    int rc = st->ops->list(st, waiting, after, limit + 1, a, &k, err);
    if (rc) {
        store_items_free(a, k);
        return rc;
    }
    int more = k > (size_t)limit;
    if (more)
        store_item_clear(&a[--k]);
    *items = a;
    *n = k;
    *next = more ? a[k - 1].seq : 0;
    return 0;
}

int store_list(struct store *st, int64_t after, int limit, struct store_item **items,
               size_t *n, int64_t *next, struct err *err)
{
    return list_items(st, 0, after, limit, items, n, next, err);
}

int store_waiting(struct store *st, int64_t after, int limit, struct store_item **items,
                  size_t *n, int64_t *next, struct err *err)
{
    return list_items(st, 1, after, limit, items, n, next, err);
}

int store_count(struct store *st, int64_t *n, struct err *err)
{
    int rc = st->ops->count(st, 0, n, err);
    if (!rc && !store__in_batch(st))
        atomic_store(&st->n_items, *n);
    return rc;
}

int store_count_waiting(struct store *st, int64_t *n, struct err *err)
{
    int rc = st->ops->count(st, 1, n, err);
    if (!rc && !store__in_batch(st))
        atomic_store(&st->n_waiting, *n);
    return rc;
}

int store_count_failed(struct store *st, int64_t *n, struct err *err)
{
    int rc = st->ops->count(st, 2, n, err);
    if (!rc && !store__in_batch(st))
        atomic_store(&st->n_failed, *n);
    return rc;
}

int64_t store_failed_cached(struct store *st)
{
    return atomic_load(&st->n_failed);
}

void store_counts_cached(struct store *st, int64_t *items, int64_t *waiting)
{
    *items = atomic_load(&st->n_items);
    *waiting = atomic_load(&st->n_waiting);
}

/* ---- search ------------------------------------------------------------ */

static int bitmap_accept(int64_t label, void *ctx)
{
    const struct store_bitmap *b = ctx;
    return label >= 0 && label < b->nbits && (b->w[label >> 6] >> (label & 63) & 1);
}

void store_hits_free(struct store_hit *hits, size_t n)
{
    if (!hits)
        return;
    for (size_t i = 0; i < n; i++) {
        free(hits[i].id);
        free(hits[i].source);
        free(hits[i].metadata);
    }
    free(hits);
}

/* Read-locks an index that is current with the committed database. */
int store__lock_current_index(struct store *st, struct err *err)
{
    pthread_rwlock_rdlock(&st->idx_lock);
    int rc = 0;
    if (!index_behind(st, err, &rc))
        return rc ? (pthread_rwlock_unlock(&st->idx_lock), rc) : 0;
    pthread_rwlock_unlock(&st->idx_lock);
    if (rc)
        return rc;
    pthread_rwlock_wrlock(&st->idx_lock);
    rc = ensure_index(st, err);
    pthread_rwlock_unlock(&st->idx_lock);
    if (rc)
        return rc;
    /* Another writer may slip in between: searching a moment-old index is
     * fine, so no second check. */
    pthread_rwlock_rdlock(&st->idx_lock);
    if (!st->idx) {
        pthread_rwlock_unlock(&st->idx_lock);
        return err_set(err, ERR_INTERNAL, "%s: the index went away", st->name);
    }
    return 0;
}

static int check_query(struct store *st, const struct store_query *q, struct err *err)
{
    if (!q->vec || q->k < 1 || q->offset < 0 || q->k > STORE_K_MAX ||
        q->offset > STORE_K_MAX - q->k)
        return err_set(err, ERR_INVALID_ARGUMENT, "k=%d offset=%d: need k >= 1, offset >= 0, "
                       "k + offset <= %d", q->k, q->offset, STORE_K_MAX);
    if (q->n_filters < 0 || q->n_filters > STORE_FILTERS_MAX || (q->n_filters && !q->filters))
        return err_set(err, ERR_INVALID_ARGUMENT, "%d filters (max %d)", q->n_filters,
                       STORE_FILTERS_MAX);
    for (int i = 0; i < q->n_filters; i++)
        if (!q->filters[i].key || !*q->filters[i].key || !q->filters[i].value ||
            strlen(q->filters[i].key) > 256 || strlen(q->filters[i].value) > 4096)
            return err_set(err, ERR_INVALID_ARGUMENT, "filter %d needs a key (1..256 bytes) "
                           "and a value", i + 1);
        else if (!utf8_valid(q->filters[i].key) || !utf8_valid(q->filters[i].value))
            return err_set(err, ERR_INVALID_UTF8, "filter %d is not valid UTF-8", i + 1);
    if (!store__valid_vec(q->vec, st->dim))
        return err_set(err, ERR_INVALID_ARGUMENT, "the query vector is not finite or its norm "
                       "is under %g", STORE_VEC_MIN_NORM);
    return 0;
}

/* The local index's best want hits (seq and score only). */
static int search_local(struct store *st, const struct store_query *q, size_t want,
                        struct store_hit **hits, size_t *n, struct err *err)
{
    struct store_bitmap bm = {NULL, 0};
    int rc = 0;
    if (q->n_filters && (rc = st->ops->filter_seqs(st, q->filters, q->n_filters, &bm, err))) {
        free(bm.w);
        return rc;
    }
    struct hnsw_hit *hh = malloc(want * sizeof *hh);
    if (!hh) {
        free(bm.w);
        return err_set(err, ERR_NOMEM, "no memory for %zu hits", want);
    }
    size_t got = 0;
    if (!(rc = store__lock_current_index(st, err))) {
        rc = hnsw_search(st->idx, q->vec, want, q->ef, q->n_filters ? bitmap_accept : NULL,
                         &bm, hh, &got, err);
        pthread_rwlock_unlock(&st->idx_lock);
    }
    free(bm.w);
    struct store_hit *out = !rc && got ? calloc(got, sizeof *out) : NULL;
    if (!rc && got && !out)
        rc = err_set(err, ERR_NOMEM, "no memory");
    for (size_t i = 0; !rc && i < got; i++) {
        out[i].seq = hh[i].label;
        out[i].score = hh[i].score;
    }
    free(hh);
    *hits = out;
    *n = rc ? 0 : got;
    return rc;
}

#define TIE_EPS 1e-5f /* scores this close are a tie (hnsw.c's rank_final) */

struct ranked {
    float s;     /* score */
    int64_t seq; /* item seq (ties: the older first) */
    size_t i;    /* position in the backend's arrays */
};

static int cmp_ranked(const void *a, const void *b)
{
    const struct ranked *x = a, *y = b;
    if (x->s != y->s)
        return x->s > y->s ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Scores and orders a database's candidates h[0 .. *n) (their stored
 * vectors in vecs) by the local index's rule (hnsw.c, design 11), so every
 * backend ranks alike: the float dot of the normalised vectors; within a
 * run of scores TIE_EPS apart, the vectors bit-identical to the query
 * first; ties to the older item; scores made non-increasing. Keeps the
 * best want. */
static int rank_native(struct store *st, const float *q, struct store_hit *h, float *vecs,
                       size_t *n, size_t want, struct err *err)
{
    size_t d = (size_t)st->dim, m = *n;
    float *qn = malloc(d * sizeof *qn);
    struct ranked *r = malloc((m ? m : 1) * sizeof *r);
    struct store_hit *o = malloc((m ? m : 1) * sizeof *o);
    if (!qn || !r || !o) {
        free(qn), free(r), free(o);
        return err_set(err, ERR_NOMEM, "no memory");
    }
    memcpy(qn, q, d * sizeof *qn);
    vec_normalize(qn, d);
    for (size_t i = 0; i < m; i++) {
        vec_normalize(vecs + i * d, d);
        r[i] = (struct ranked){vec_dot(qn, vecs + i * d, d), h[i].seq, i};
    }
    qsort(r, m, sizeof *r, cmp_ranked);
    for (size_t a = 0; a < m;) {
        size_t b = a + 1;
        while (b < m && r[b - 1].s - r[b].s <= TIE_EPS)
            b++;
        for (size_t i = a, w = a; b - a > 1 && i < b; i++) /* stable: exact copies first */
            if (!memcmp(vecs + r[i].i * d, qn, d * sizeof *qn)) {
                struct ranked c = r[i];
                memmove(r + w + 1, r + w, (i - w) * sizeof *r);
                r[w++] = c;
            }
        a = b;
    }
    for (size_t i = 0; i < m; i++) {
        o[i] = h[r[i].i];
        o[i].score = i && r[i].s > o[i - 1].score ? o[i - 1].score : r[i].s;
    }
    for (size_t i = want; i < m; i++)
        free(o[i].id), free(o[i].source), free(o[i].metadata);
    size_t keep = m < want ? m : want;
    if (keep) /* h is NULL when nothing matched */
        memcpy(h, o, keep * sizeof *h);
    *n = keep;
    free(qn), free(r), free(o);
    return 0;
}

int store_search(struct store *st, const struct store_query *q, struct store_hit **hits,
                 size_t *n, struct err *err)
{
    *hits = NULL;
    *n = 0;
    int rc = check_query(st, q, err);
    if (rc)
        return rc;
    size_t want = (size_t)q->k + (size_t)q->offset, got = 0;
    struct store_hit *h = NULL;
    float *vecs = NULL;
    rc = st->ops->search ? st->ops->search(st, q, want, &h, &vecs, &got, err) : 1;
    int native = rc != 1;
    if (!native)
        rc = search_local(st, q, want, &h, &got, err);
    else if (!rc)
        rc = rank_native(st, q->vec, h, vecs, &got, want, err);
    free(vecs);
    if (rc) {
        store_hits_free(h, got);
        return rc;
    }
    /* keep [offset, got), drop what is under min_score or not a number (a
     * stored vector that cannot be scored is never a NaN hit) */
    size_t first = (size_t)q->offset, k = 0;
    while (got > first && !(h[got - 1].score >= q->min_score && isfinite(h[got - 1].score))) {
        got--;
        free(h[got].id), free(h[got].source), free(h[got].metadata);
    }
    for (size_t i = 0; i < got; i++) {
        if (i < first || !isfinite(h[i].score)) {
            free(h[i].id), free(h[i].source), free(h[i].metadata);
            continue;
        }
        h[k++] = h[i];
    }
    if (!native && k && (rc = st->ops->rows(st, h, k, err))) {
        store_hits_free(h, k);
        return rc;
    }
    /* rows deleted since the index was searched are skipped */
    size_t kept = 0;
    for (size_t i = 0; i < k; i++)
        if (h[i].id)
            h[kept++] = h[i];
        else
            free(h[i].source), free(h[i].metadata);
    if (!kept) {
        free(h);
        h = NULL;
    }
    *hits = h;
    *n = kept;
    return 0;
}
