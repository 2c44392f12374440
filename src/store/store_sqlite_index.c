/* store_sqlite_index.c - the embedded backend's reads for the local index
 * and for searches (store_sqlite.c holds the rest; store_sqlite_int.h what
 * both share): the changes log that store.c replays into the index and
 * trims (design 3-4 of store_sqlite.c), embeddings by seq or all of them
 * in one snapshot, filters as the set of accepted seqs (json_each over the
 * top-level metadata fields), and the rows of a result page in one query.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_sqlite_int.h"

/* ---- the local index's source -------------------------------------------- */

/* Reads the embedding blob of column i into v (dim floats) if it is one. */
static int blob_vec(struct store *st, sqlite3_stmt *s, int i, float *v)
{
    if (sqlite3_column_type(s, i) != SQLITE_BLOB)
        return 0;
    const void *b = sqlite3_column_blob(s, i);
    if (sqlite3_column_bytes(s, i) != st->dim * (int)sizeof(float) || !b)
        return 0;
    memcpy(v, b, (size_t)st->dim * sizeof(float));
    return store__valid_vec(v, st->dim);
}

int lite__snap_begin(struct store *st, struct err *err)
{
    struct lite *l = BE(st);
    pthread_mutex_lock(&l->r.mu);
    int rc = lite__exec(l, &l->r, "BEGIN", err);
    if (rc)
        pthread_mutex_unlock(&l->r.mu);
    return rc;
}

void lite__snap_end(struct store *st)
{
    struct lite *l = BE(st);
    sqlite3_exec(l->r.db, "COMMIT", NULL, NULL, NULL);
    pthread_mutex_unlock(&l->r.mu);
}

int lite__log_state(struct store *st, int64_t *top, int64_t *trimmed, struct err *err)
{
    struct lite *l = BE(st);
    int rc = lite__one_i64(l, &l->r, S_MAX_CSEQ, 0, top, "read the changes log", err);
    if (!rc && trimmed) {
        char *v = NULL;
        rc = lite__meta_get(l, &l->r, "changes_trimmed", &v, err);
        *trimmed = v ? strtoll(v, NULL, 10) : 0;
        free(v);
    }
    return rc;
}

int lite__log_top(struct store *st, int64_t *top, struct err *err)
{
    struct lite *l = BE(st);
    pthread_mutex_lock(&l->r.mu);
    int rc = lite__one_i64(l, &l->r, S_MAX_CSEQ, 0, top, "read the changes log", err);
    pthread_mutex_unlock(&l->r.mu);
    return rc;
}

int lite__log_since(struct store *st, int64_t cov, int64_t **out, size_t *n,
                          struct err *err)
{
    struct lite *l = BE(st);
    *out = NULL;
    *n = 0;
    sqlite3_stmt *s = lite__stmt(l, &l->r, S_CHANGES_SINCE, err);
    if (!s)
        return -err->code;
    sqlite3_bind_int64(s, 1, cov);
    size_t k = 0, cap = 256;
    int64_t *seqs = malloc(cap * sizeof *seqs);
    int r = SQLITE_DONE;
    while (seqs && (r = sqlite3_step(s)) == SQLITE_ROW) {
        if (k == cap) {
            int64_t *g = realloc(seqs, 2 * cap * sizeof *g);
            if (!g) {
                free(seqs);
                seqs = NULL;
                break;
            }
            seqs = g;
            cap *= 2;
        }
        seqs[k++] = sqlite3_column_int64(s, 0);
    }
    sqlite3_reset(s);
    if (!seqs)
        return err_set(err, ERR_NOMEM, "no memory for the changes log");
    if (r != SQLITE_DONE) {
        free(seqs);
        return lite__db_err(err, l->r.db, l->path, "read the changes log");
    }
    *out = seqs;
    *n = k;
    return 0;
}

int lite__emb_by_seqs(struct store *st, const int64_t *seqs, size_t n, float *v,
                            unsigned char *ok, struct err *err)
{
    struct lite *l = BE(st);
    for (size_t i = 0; i < n; i++) {
        sqlite3_stmt *e = lite__stmt(l, &l->r, S_EMB_BY_SEQ, err);
        if (!e)
            return -err->code;
        sqlite3_bind_int64(e, 1, seqs[i]);
        int r = sqlite3_step(e);
        ok[i] = r == SQLITE_ROW && blob_vec(st, e, 0, v + i * (size_t)st->dim);
        sqlite3_reset(e);
        if (r != SQLITE_ROW && r != SQLITE_DONE)
            return lite__db_err(err, l->r.db, l->path, "read an embedding");
    }
    return 0;
}

int lite__emb_all(struct store *st, store__emb_fn fn, void *ctx, struct err *err)
{
    struct lite *l = BE(st);
    sqlite3_stmt *s = lite__stmt(l, &l->r, S_ALL_EMB, err);
    float *v = malloc((size_t)st->dim * sizeof *v);
    int rc = !s ? -err->code : !v ? err_set(err, ERR_NOMEM, "no memory") : 0;
    int r = SQLITE_DONE;
    while (!rc && (r = sqlite3_step(s)) == SQLITE_ROW) {
        if (!blob_vec(st, s, 1, v))
            continue; /* a wrong-sized blob written behind our back: not indexed */
        rc = fn(sqlite3_column_int64(s, 0), v, ctx);
    }
    if (!rc && r != SQLITE_DONE)
        rc = lite__db_err(err, l->r.db, l->path, "read embeddings");
    if (s)
        sqlite3_reset(s);
    free(v);
    return rc;
}

int lite__count_embedded(struct store *st, int64_t *n, struct err *err)
{
    struct lite *l = BE(st);
    return lite__one_i64(l, &l->r, S_COUNT_EMB, st->dim * (int64_t)sizeof(float), n,
                   "count embeddings", err);
}

int lite__log_trim(struct store *st, int64_t covered, struct err *err)
{
    struct lite *l = BE(st);
    if (atomic_load(&st->tx_open))
        return 0; /* trim later: w is busy with a batch */
    pthread_mutex_lock(&l->w.mu);
    int rc = lite__exec(l, &l->w, "BEGIN IMMEDIATE", err);
    sqlite3_stmt *s = rc ? NULL : lite__stmt(l, &l->w, S_TRIM, err);
    if (!rc && !s)
        rc = -err->code;
    if (!rc) {
        sqlite3_bind_int64(s, 1, covered);
        if (sqlite3_step(s) != SQLITE_DONE)
            rc = lite__db_err(err, l->w.db, l->path, "trim the changes log");
        sqlite3_reset(s);
    }
    if (!rc) {
        char buf[32];
        snprintf(buf, sizeof buf, "%lld", (long long)covered);
        if (!(s = lite__stmt(l, &l->w, S_TRIMMED, err)))
            rc = -err->code;
        else {
            sqlite3_bind_text(s, 1, buf, -1, SQLITE_TRANSIENT);
            if (sqlite3_step(s) != SQLITE_DONE)
                rc = lite__db_err(err, l->w.db, l->path, "trim the changes log");
            sqlite3_reset(s);
        }
    }
    if (!rc)
        rc = lite__exec(l, &l->w, "COMMIT", err);
    if (rc)
        sqlite3_exec(l->w.db, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&l->w.mu);
    return rc;
}


/* ---- search ------------------------------------------------------------ */

/* Runs the filters in SQL and sets the bit of every matching seq. */
int lite__filter_seqs(struct store *st, const struct store_filter *f, int nf,
                            struct store_bitmap *bm, struct err *err)
{
    struct lite *l = BE(st);
    /* one EXISTS per filter, ~250 bytes each: SQLite's growing string, the
     * count bounded by the caller's check against STORE_FILTERS_MAX */
    sqlite3_str *q = sqlite3_str_new(NULL);
    sqlite3_str_appendall(q, "SELECT seq FROM items WHERE embedding IS NOT NULL "
                             "AND json_valid(metadata)");
    for (int i = 0; i < nf; i++)
        sqlite3_str_appendf(
            q,
            " AND EXISTS (SELECT 1 FROM json_each(items.metadata) j WHERE j.key = ?%d AND ("
            "(j.type = 'text' AND j.atom = ?%d) OR "
            "(j.type IN ('integer', 'real') AND j.atom = ?%d) OR "
            "(j.type IN ('true', 'false', 'null') AND j.type = ?%d)))",
            3 * i + 1, 3 * i + 2, 3 * i + 3, 3 * i + 2);
    char *sql = sqlite3_str_finish(q);
    if (!sql)
        return err_set(err, ERR_NOMEM, "no memory for the filter");
    struct conn *c = &l->r;
    pthread_mutex_lock(&c->mu);
    sqlite3_stmt *s = NULL;
    int64_t maxseq = 0;
    int rc = lite__one_i64(l, c, S_MAX_SEQ, 0, &maxseq, "read the last seq", err);
    if (!rc) {
        bm->nbits = maxseq + 1;
        bm->w = calloc((size_t)(bm->nbits + 63) / 64, sizeof *bm->w);
        if (!bm->w)
            rc = err_set(err, ERR_NOMEM, "no memory for the filter");
    }
    if (!rc && sqlite3_prepare_v2(c->db, sql, -1, &s, NULL) != SQLITE_OK)
        rc = lite__db_err(err, c->db, l->path, "prepare the filter");
    for (int i = 0; !rc && i < nf; i++) {
        sqlite3_bind_text(s, 3 * i + 1, f[i].key, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3 * i + 2, f[i].value, -1, SQLITE_STATIC);
        char *end;
        errno = 0;
        double num = strtod(f[i].value, &end);
        if (*f[i].value && !*end && !errno && isfinite(num))
            sqlite3_bind_double(s, 3 * i + 3, num);
    }
    int r = SQLITE_DONE;
    while (!rc && (r = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(s, 0);
        if (seq >= 0 && seq < bm->nbits)
            bm->w[seq >> 6] |= 1ull << (seq & 63);
    }
    if (!rc && r != SQLITE_DONE)
        rc = lite__db_err(err, c->db, l->path, "run the filter");
    sqlite3_finalize(s);
    pthread_mutex_unlock(&c->mu);
    sqlite3_free(sql);
    return rc;
}

/* An embedded database has no round trips: one cached statement per hit. */
int lite__rows(struct store *st, struct store_hit *hits, size_t n, struct err *err)
{
    struct lite *l = BE(st);
    struct conn *c = &l->r;
    int rc = 0;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < n && !rc; i++) {
        sqlite3_stmt *s = lite__stmt(l, c, S_HIT_BY_SEQ, err);
        if (!s) {
            rc = -err->code;
            break;
        }
        sqlite3_bind_int64(s, 1, hits[i].seq);
        int r = sqlite3_step(s);
        if (r == SQLITE_ROW) { /* DONE: deleted since the search */
            hits[i].id = lite__dup_col(s, 0);
            hits[i].source = lite__dup_col(s, 1);
            hits[i].metadata = lite__dup_col(s, 2);
            if (!hits[i].id || !hits[i].metadata)
                rc = err_set(err, ERR_NOMEM, "no memory");
        } else if (r != SQLITE_DONE)
            rc = lite__db_err(err, c->db, l->path, "read a hit");
        sqlite3_reset(s);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

const char *lite__index_kind(struct store *st)
{
    (void)st;
    return "local-hnsw";
}
