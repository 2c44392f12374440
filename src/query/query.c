/* query.c - query vectors -> store searches, and zero-shot label ranking,
 * shared by `imgsearch search` / `classify` and the HTTP service.
 *
 * 1. Excluding an item ("more like this") with paging: the store is asked
 *    for offset + k + 1 (+ slack) hits from the top, the item is removed,
 *    and the page is cut afterwards. Asking the store for the page alone
 *    would shift every page after the one that held the item.
 * 2. The slack covers rows deleted between the store's index search and
 *    its row reads (the store skips them), so a page stays full under
 *    concurrent deletes.
 * 3. Query vectors are checked and normalised here, once: a vector of
 *    denormals has a norm that underflows and would give NaN scores.
 */
#include "query/query.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipe/pipe.h"

int query_vector_check(const float *v, int dim, float *out, struct err *err)
{
    if (dim < 1)
        return err_set(err, ERR_INVALID_ARGUMENT, "query vector has no values");
    double ss = 0;
    for (int i = 0; i < dim; i++) {
        if (!isfinite(v[i]))
            return err_set(err, ERR_INVALID_ARGUMENT, "query vector[%d] is not a finite number",
                           i);
        ss += (double)v[i] * v[i];
    }
    double norm = sqrt(ss);
    if (!(norm >= QUERY_MIN_NORM))
        return err_set(err, ERR_INVALID_ARGUMENT,
                       "query vector has length %.3g; it must be at least %g to have a "
                       "direction to search by", norm, (double)QUERY_MIN_NORM);
    for (int i = 0; i < dim; i++)
        out[i] = (float)(v[i] / norm);
    return 0;
}

int query_item_vector(struct store *st, const char *id, float *out, struct err *err)
{
    struct store_item it = {0};
    int rc = store_get(st, id, &it, err);
    if (rc)
        return rc;
    if (!it.embedding)
        rc = err_set(err, ERR_CONFLICT, "item '%.200s' has no embedding yet (it waits to be "
                     "embedded)", id);
    else
        memcpy(out, it.embedding, sizeof(float) * (size_t)store_dim(st));
    store_item_clear(&it);
    return rc;
}

int query_search(struct store *st, const float *vec, const char *exclude_id,
                 const struct query_opts *o, struct store_hit **hits, size_t *n,
                 struct err *err)
{
    *hits = NULL;
    *n = 0;
    if (o->k < 1 || o->k > QUERY_K_MAX)
        return err_set(err, ERR_INVALID_ARGUMENT, "k must be 1..%d, not %d", QUERY_K_MAX, o->k);
    if (o->offset < 0 || o->offset > QUERY_OFFSET_MAX)
        return err_set(err, ERR_INVALID_ARGUMENT, "offset must be 0..%d, not %d",
                       QUERY_OFFSET_MAX, o->offset);
    if (!(o->min_score >= -1 && o->min_score <= 1))
        return err_set(err, ERR_INVALID_ARGUMENT, "min_score must be -1..1");
    int dim = store_dim(st);
    float *q = malloc(sizeof(float) * (size_t)dim);
    if (!q)
        return err_set(err, ERR_NOMEM, "out of memory for a query vector");
    int rc = query_vector_check(vec, dim, q, err);
    if (rc) {
        free(q);
        return rc;
    }
    /* see 1. and 2. above */
    struct store_query sq = {
        .vec = q,
        .k = o->offset + o->k + (exclude_id ? 1 : 0) + QUERY_SLACK,
        .offset = 0,
        .min_score = o->min_score,
        .filters = o->n_filters ? o->filters : NULL,
        .n_filters = o->n_filters,
        .ef = o->ef,
    };
    struct store_hit *h = NULL;
    size_t nh = 0;
    rc = store_search(st, &sq, &h, &nh, err);
    free(q);
    if (rc)
        return rc;
    /* keep hits [offset, offset + k) of those that are not exclude_id */
    size_t kept = 0, seen = 0;
    for (size_t i = 0; i < nh; i++) {
        int drop = (exclude_id && strcmp(h[i].id, exclude_id) == 0) || !isfinite(h[i].score);
        if (!drop && seen++ >= (size_t)o->offset && kept < (size_t)o->k) {
            h[kept++] = h[i];
            continue;
        }
        free(h[i].id);
        free(h[i].source);
        free(h[i].metadata);
    }
    *hits = h;
    *n = kept;
    if (!kept) {
        free(h);
        *hits = NULL;
    }
    return 0;
}

char *query_label_text(const char *tpl, const char *label)
{
    const char *at = strstr(tpl, "{}");
    size_t n = strlen(tpl) + strlen(label) + 2;
    char *s = malloc(n);
    if (!s)
        return NULL;
    if (at)
        snprintf(s, n, "%.*s%s%s", (int)(at - tpl), tpl, label, at + 2);
    else
        snprintf(s, n, "%s %s", tpl, label);
    return s;
}

static int by_prob(const void *a, const void *b)
{
    const struct query_label *x = a, *y = b;
    return x->prob < y->prob ? 1 : x->prob > y->prob ? -1 : x->idx - y->idx;
}

int query_rank_labels(const float *img, const float *labels, int n, int dim, float scale,
                      struct query_label *out, struct err *err)
{
    float *probs = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    float *logits = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!probs || !logits) {
        free(probs);
        free(logits);
        return err_set(err, ERR_NOMEM, "out of memory ranking %d labels", n);
    }
    pipe_zero_shot(img, labels, n, dim, scale, probs, logits);
    for (int i = 0; i < n; i++)
        out[i] = (struct query_label){i, probs[i], logits[i]};
    qsort(out, (size_t)n, sizeof *out, by_prob);
    free(probs);
    free(logits);
    return 0;
}
