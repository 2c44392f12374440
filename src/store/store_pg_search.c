/* store_pg_search.c - the PostgreSQL backend's filters and searches:
 * metadata @> filters with store.h's semantics, the rows of a page in one
 * query, and pgvector's ANN search (store_pg.c, design 5).
 */
#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_pg_int.h"

#define BE(st) PG_BE(st)

/* ---- search ------------------------------------------------------------ */

/* Whether s is exactly one JSON number (no space, nothing after). */
static int json_number_text(const char *s)
{
    json_error_t je;
    json_t *j = json_loads(s, JSON_DECODE_ANY, &je);
    int ok = j && json_is_number(j) && s[0] != ' ' && s[strlen(s) - 1] != ' ';
    json_decref(j);
    return ok;
}

/* {"key": <text>} with the key escaped by jansson and text a JSON value. */
static char *json_pair(const char *key, const char *text)
{
    json_t *o = json_pack("{s:n}", key);
    char *k = o ? json_dumps(o, JSON_COMPACT) : NULL; /* {"key":null} */
    json_decref(o);
    if (!k)
        return NULL;
    size_t kl = strlen(k) - 5, tl = strlen(text); /* drop "null}" */
    char *s = malloc(kl + tl + 2);
    if (s) {
        memcpy(s, k, kl);
        memcpy(s + kl, text, tl);
        memcpy(s + kl + tl, "}", 2);
    }
    free(k);
    return s;
}

/* The two jsonb objects a filter accepts (store.h's filter semantics): the
 * value as a JSON string, and as a number or true/false/null when it reads
 * as one (alt NULL otherwise). */
static int filter_values(const struct store_filter *f, char **str, char **alt)
{
    *alt = NULL;
    json_t *o = json_pack("{s:s}", f->key, f->value);
    *str = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!*str)
        return -1;
    const char *v = f->value;
    char *end, num[40];
    errno = 0;
    double d = strtod(v, &end);
    if (!strcmp(v, "true") || !strcmp(v, "false") || !strcmp(v, "null") || json_number_text(v))
        *alt = json_pair(f->key, v);
    else if (*v && !*end && !errno && isfinite(d)) {
        snprintf(num, sizeof num, "%.17g", d);
        *alt = json_pair(f->key, num);
    } else
        return 0;
    return *alt ? 0 : -1;
}

/* Appends " AND (metadata @> $a OR metadata @> $b)" per filter, the
 * parameters from $first, and fills vals[first-1 ..]. */
static int filter_sql(const struct store_filter *f, int nf, int first, char *sql, size_t n,
                      char **vals)
{
    size_t len = strlen(sql);
    for (int i = 0; i < nf; i++) {
        if (filter_values(&f[i], &vals[first - 1 + 2 * i], &vals[first + 2 * i]))
            return -1;
        int a = first + 2 * i;
        len += (size_t)snprintf(sql + len, n - len,
                                " AND (metadata::jsonb @> $%d::jsonb OR "
                                "metadata::jsonb @> $%d::jsonb)", a, a + 1);
    }
    return len < n ? 0 : -1;
}

#define FILTER_SQL_MAX (512 + STORE_FILTERS_MAX * 96)

int pg__filter_seqs(struct store *st, const struct store_filter *f, int nf,
                          struct store_bitmap *bm, struct err *err)
{
    char sql[FILTER_SQL_MAX] = "SELECT seq FROM items WHERE embedding IS NOT NULL";
    char *vals[2 * STORE_FILTERS_MAX] = {0};
    int rc = filter_sql(f, nf, 1, sql, sizeof sql, vals)
                 ? err_set(err, ERR_NOMEM, "no memory for the filter") : 0;
    struct pconn *c = NULL;
    if (!rc)
        rc = pg__pool_conn(st, &c, err);
    PGresult *r = NULL, *m = NULL;
    if (!rc)
        rc = pg__run(st, c, P_MAX_SEQ, 0, NULL, NULL, &m, err);
    if (!rc) {
        bm->nbits = pg__col_i64(m, 0, 0, 0) + 1;
        bm->w = calloc((size_t)(bm->nbits + 63) / 64, sizeof *bm->w);
        if (!bm->w)
            rc = err_set(err, ERR_NOMEM, "no memory for the filter");
    }
    if (!rc) {
        r = PQexecParams(c->pg, sql, 2 * nf, NULL, (const char *const *)vals, NULL, NULL, 1);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            rc = pg__res_err(st, c, r, "run the filter", err);
            r = NULL;
        }
    }
    for (int i = 0; !rc && i < PQntuples(r); i++) {
        int64_t seq = pg__col_i64(r, i, 0, -1);
        if (seq >= 0 && seq < bm->nbits)
            bm->w[seq >> 6] |= 1ull << (seq & 63);
    }
    PQclear(r);
    PQclear(m);
    pg__put_conn(st, c);
    for (int i = 0; i < 2 * nf; i++)
        free(vals[i]);
    return rc;
}

struct seq_pos {
    int64_t seq; /* a hit's seq */
    size_t j;    /* its position */
};

static int cmp_seq_pos(const void *a, const void *b)
{
    return pg__cmp_i64(&((const struct seq_pos *)a)->seq, &((const struct seq_pos *)b)->seq);
}

/* id, source, metadata of every hit in one query. */
int pg__rows(struct store *st, struct store_hit *hits, size_t n, struct err *err)
{
    struct seq_pos *sp = malloc(n * sizeof *sp);
    int64_t *seqs = malloc(n * sizeof *seqs);
    char *arr = NULL;
    if (sp && seqs) {
        for (size_t i = 0; i < n; i++) {
            seqs[i] = sp[i].seq = hits[i].seq;
            sp[i].j = i;
        }
        arr = pg__seq_array(seqs, n);
        qsort(sp, n, sizeof *sp, cmp_seq_pos);
    }
    struct pconn *c = NULL;
    int rc = arr ? pg__pool_conn(st, &c, err) : err_set(err, ERR_NOMEM, "no memory");
    PGresult *r = NULL;
    if (!rc)
        rc = pg__run(st, c, P_ROWS, 1, (const char *[]){arr}, NULL, &r, err);
    pg__put_conn(st, c);
    for (int i = 0; !rc && i < PQntuples(r); i++) {
        struct seq_pos key = {pg__col_i64(r, i, 0, 0), 0};
        const struct seq_pos *at = bsearch(&key, sp, n, sizeof *sp, cmp_seq_pos);
        if (!at)
            continue;
        struct store_hit *h = &hits[at->j]; /* a seq appears once in hits */
        h->id = pg__col_str(r, i, 1);
        h->source = pg__col_str(r, i, 2);
        h->metadata = pg__col_str(r, i, 3);
        if (!h->id || !h->metadata)
            rc = err_set(err, ERR_NOMEM, "no memory");
    }
    PQclear(r);
    free(arr);
    free(seqs);
    free(sp);
    return rc;
}

/* The SET LOCALs of one search (integers only). */
static void search_settings(struct store *st, const struct store_query *q, size_t want,
                            char *sql, size_t n)
{
    struct pgbe *b = BE(st);
    int ef = q->ef > 0 ? q->ef : st->hp.ef_search;
    if ((size_t)ef < want)
        ef = want > 1000 ? 1000 : (int)want;
    if (ef > 1000)
        ef = 1000; /* pgvector's limit */
    if (b->ivfflat)
        snprintf(sql, n, "BEGIN READ ONLY; SET LOCAL ivfflat.probes = %d%s", b->probes,
                 b->iterative ? "; SET LOCAL ivfflat.iterative_scan = relaxed_order" : "");
    else
        snprintf(sql, n, "BEGIN READ ONLY; SET LOCAL hnsw.ef_search = %d%s", ef,
                 b->iterative ? "; SET LOCAL hnsw.iterative_scan = relaxed_order" : "");
}

/* pgvector: the best want hits with their rows, in one query. */
int pg__search(struct store *st, const struct store_query *q, size_t want,
                     struct store_hit **hits, float **vecs, size_t *n, struct err *err)
{
    if (!BE(st)->vector)
        return 1; /* the local index serves */
    char sql[FILTER_SQL_MAX + 512] =
        "WITH r AS MATERIALIZED (SELECT seq, id, source, metadata::text AS md, "
        "embedding <=> $1::real[]::vector AS d, embedding::real[] AS v FROM items WHERE embedding IS NOT NULL";
    char *vals[2 + 2 * STORE_FILTERS_MAX] = {0}, lim[24], set[200];
    int lens[2 + 2 * STORE_FILTERS_MAX] = {0}, fmts[2 + 2 * STORE_FILTERS_MAX] = {1};
    int rc = 0;
    vals[0] = pg__vec_param(q->vec, st->dim, &lens[0]);
    /* a few more than wanted: store.c re-ranks what float rounding in
     * pgvector may have swapped at the edge */
    pg__i64s(lim, (int64_t)want + 16);
    vals[1] = lim;
    if (!vals[0] || filter_sql(q->filters, q->n_filters, 3, sql, sizeof sql, vals))
        rc = err_set(err, ERR_NOMEM, "no memory for the query");
    size_t len = strlen(sql);
    snprintf(sql + len, sizeof sql - len, " ORDER BY d LIMIT $2) "
             "SELECT seq, id, source, md, v FROM r ORDER BY d, seq");
    search_settings(st, q, want, set, sizeof set);
    struct pconn *c = NULL;
    if (!rc)
        rc = pg__pool_conn(st, &c, err);
    PGresult *r = NULL;
    if (!rc)
        rc = pg__run_sql(st, c, set, err);
    if (!rc) {
        r = PQexecParams(c->pg, sql, 2 + 2 * q->n_filters, NULL, (const char *const *)vals,
                         lens, fmts, 1);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            rc = pg__res_err(st, c, r, "search", err);
            r = NULL;
        }
    }
    if (c && PQstatus(c->pg) == CONNECTION_OK)
        PQclear(PQexec(c->pg, rc && !r ? "ROLLBACK" : "COMMIT"));
    pg__put_conn(st, c);
    int k = rc ? 0 : PQntuples(r);
    struct store_hit *h = k ? calloc((size_t)k, sizeof *h) : NULL;
    float *v = k ? malloc((size_t)k * (size_t)st->dim * sizeof *v) : NULL;
    if (k && (!h || !v))
        rc = err_set(err, ERR_NOMEM, "no memory");
    for (int i = 0; !rc && i < k; i++) {
        h[i].seq = pg__col_i64(r, i, 0, 0);
        if (!pg__vec_col(r, i, 4, st->dim, v + (size_t)i * (size_t)st->dim))
            rc = err_set(err, ERR_CORRUPT, "%s: item %lld has an unusable embedding", st->name,
                         (long long)h[i].seq);
        h[i].id = pg__col_str(r, i, 1);
        h[i].source = pg__col_str(r, i, 2);
        h[i].metadata = pg__col_str(r, i, 3);
        if (!h[i].id || !h[i].metadata)
            rc = err_set(err, ERR_NOMEM, "no memory");
    }
    PQclear(r);
    free(vals[0]);
    for (int i = 2; i < 2 + 2 * q->n_filters; i++)
        free(vals[i]);
    *hits = h;
    *vecs = v;
    *n = h ? (size_t)k : 0;
    return rc;
}

