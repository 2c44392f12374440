/* store_dup.c - near-duplicate groups of a store (store_duplicates): every
 * item's neighbours within a distance in the local index, joined by
 * union-find into groups, the largest first; rows for the members come from
 * the backend in one round trip. Beside store.c, whose index catch-up it
 * relies on (store__lock_current_index). */
#include "store/store.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "store/hnsw.h"
#include "store/store_int.h"

struct dup_ctx {
    int64_t *labels;  /* live labels in node order */
    size_t n;         /* count */
    size_t cap;       /* room */
};

static int collect_label(int64_t label, const float *v, void *p)
{
    (void)v;
    struct dup_ctx *c = p;
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 1024;
        int64_t *g = realloc(c->labels, nc * sizeof *g);
        if (!g)
            return -1;
        c->labels = g;
        c->cap = nc;
    }
    c->labels[c->n++] = label;
    return 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static size_t uf_find(size_t *p, size_t x)
{
    while (p[x] != x) {
        p[x] = p[p[x]];
        x = p[x];
    }
    return x;
}

static int cmp_member(const void *a, const void *b)
{
    return strcmp(((const struct store_dup_member *)a)->id,
                  ((const struct store_dup_member *)b)->id);
}

static int cmp_group(const void *a, const void *b)
{
    const struct store_dup_group *x = a, *y = b;
    if (x->n != y->n)
        return x->n < y->n ? 1 : -1;
    return strcmp(x->members[0].id, y->members[0].id);
}

static void group_clear(struct store_dup_group *g)
{
    for (size_t j = 0; j < g->n; j++) {
        free(g->members[j].id);
        free(g->members[j].source);
    }
    free(g->members);
    g->members = NULL;
    g->n = 0;
}

void store_dup_groups_free(struct store_dup_group *g, size_t n)
{
    if (!g)
        return;
    for (size_t i = 0; i < n; i++)
        group_clear(&g[i]);
    free(g);
}

#define DUP_K 10

/* Unions every live item with its neighbours at >= threshold (index read
 * locked by the caller): parent[] and best[] are per position in labels. */
static int dup_pairs(struct store *st, float threshold, const struct dup_ctx *dc,
                     size_t *parent, float *best, struct err *err)
{
    float *v = malloc((size_t)st->dim * sizeof *v);
    if (!v)
        return err_set(err, ERR_NOMEM, "no memory");
    int rc = 0;
    for (size_t i = 0; i < dc->n && !rc; i++) {
        struct hnsw_hit hh[DUP_K + 1];
        size_t got = 0;
        hnsw_get(st->idx, dc->labels[i], v);
        rc = hnsw_search(st->idx, v, DUP_K + 1, 48, NULL, NULL, hh, &got, err);
        for (size_t j = 0; j < got && !rc; j++) {
            if (hh[j].label == dc->labels[i] || hh[j].score < threshold)
                continue;
            int64_t *pos = bsearch(&hh[j].label, dc->labels, dc->n, sizeof *dc->labels, cmp_i64);
            if (!pos)
                continue;
            size_t o = (size_t)(pos - dc->labels);
            if (hh[j].score > best[i])
                best[i] = hh[j].score;
            if (hh[j].score > best[o])
                best[o] = hh[j].score;
            size_t a = uf_find(parent, i), b = uf_find(parent, o);
            if (a != b)
                parent[a > b ? a : b] = a < b ? a : b;
        }
    }
    free(v);
    return rc;
}

/* Turns the union-find forest into groups of two or more, reading every
 * member's row in one call. */
static int dup_groups(struct store *st, const struct dup_ctx *dc, size_t *parent,
                      const float *best, struct store_dup_group **groups, size_t *ngroups,
                      struct err *err)
{
    size_t n1 = dc->n ? dc->n : 1, ng = 0, nm = 0;
    size_t *size = calloc(n1, sizeof *size), *slot = malloc(n1 * sizeof *slot);
    struct store_hit *rows = calloc(n1, sizeof *rows);
    size_t *of = malloc(n1 * sizeof *of); /* rows[j] is labels[of[j]] */
    int rc = size && slot && rows && of ? 0 : err_set(err, ERR_NOMEM, "no memory");
    for (size_t i = 0; !rc && i < dc->n; i++)
        size[uf_find(parent, i)]++;
    for (size_t i = 0; !rc && i < dc->n; i++)
        slot[i] = size[i] >= 2 ? ng++ : (size_t)-1;
    for (size_t i = 0; !rc && i < dc->n; i++)
        if (slot[uf_find(parent, i)] != (size_t)-1) {
            rows[nm].seq = dc->labels[i];
            of[nm++] = i;
        }
    if (!rc && nm)
        rc = st->ops->rows(st, rows, nm, err);
    struct store_dup_group *g = !rc && ng ? calloc(ng, sizeof *g) : NULL;
    if (!rc && ng && !g)
        rc = err_set(err, ERR_NOMEM, "no memory");
    for (size_t i = 0; !rc && i < dc->n; i++)
        if (slot[i] != (size_t)-1) {
            g[slot[i]].members = calloc(size[i], sizeof *g[slot[i]].members);
            g[slot[i]].max_score = -2;
            if (!g[slot[i]].members)
                rc = err_set(err, ERR_NOMEM, "no memory");
        }
    for (size_t j = 0; !rc && j < nm; j++) {
        if (!rows[j].id)
            continue; /* deleted meanwhile */
        size_t i = of[j];
        struct store_dup_group *gr = &g[slot[uf_find(parent, i)]];
        struct store_dup_member *m = &gr->members[gr->n++];
        m->id = rows[j].id;
        m->source = rows[j].source;
        rows[j].id = rows[j].source = NULL;
        m->score = best[i];
        if (best[i] > gr->max_score)
            gr->max_score = best[i];
    }
    store_hits_free(rows, nm);
    free(size);
    free(slot);
    free(of);
    /* A member deleted meanwhile may leave a group of one: drop those. */
    size_t kept = 0;
    for (size_t i = 0; g && i < ng; i++) {
        if (!rc && g[i].n >= 2) {
            qsort(g[i].members, g[i].n, sizeof *g[i].members, cmp_member);
            g[kept++] = g[i];
        } else
            group_clear(&g[i]);
    }
    if (rc || !kept) {
        free(g);
        return rc;
    }
    qsort(g, kept, sizeof *g, cmp_group);
    *groups = g;
    *ngroups = kept;
    return 0;
}

int store_duplicates(struct store *st, float threshold, struct store_dup_group **groups,
                     size_t *ngroups, struct err *err)
{
    *groups = NULL;
    *ngroups = 0;
    if (!(threshold > -1 && threshold <= 1))
        return err_set(err, ERR_INVALID_ARGUMENT, "threshold %g is outside (-1, 1]", threshold);
    int rc = store__lock_current_index(st, err);
    if (rc)
        return rc;
    struct dup_ctx dc = {NULL, 0, 0};
    size_t *parent = NULL;
    float *best = NULL;
    if (hnsw_foreach(st->idx, collect_label, &dc)) {
        rc = err_set(err, ERR_NOMEM, "no memory");
        goto unlock;
    }
    qsort(dc.labels, dc.n, sizeof *dc.labels, cmp_i64);
    parent = malloc((dc.n ? dc.n : 1) * sizeof *parent);
    best = malloc((dc.n ? dc.n : 1) * sizeof *best);
    if (!parent || !best) {
        rc = err_set(err, ERR_NOMEM, "no memory");
        goto unlock;
    }
    for (size_t i = 0; i < dc.n; i++) {
        parent[i] = i;
        best[i] = -2;
    }
    rc = dup_pairs(st, threshold, &dc, parent, best, err);
unlock:
    pthread_rwlock_unlock(&st->idx_lock);
    if (!rc)
        rc = dup_groups(st, &dc, parent, best, groups, ngroups, err);
    free(dc.labels);
    free(parent);
    free(best);
    return rc;
}
