/* query.h - the one query layer of the CLI and the HTTP service: a query
 * vector (from an image, a text, a caller's vector or a stored item) ->
 * a store search, and zero-shot labels.
 *
 * Making the vector is the caller's (the CLI calls the pipeline, the
 * service its inference scheduler); everything after it is here, so
 * `imgsearch search` and `POST /search` give the same hits for the same
 * question.
 *
 * "More like this item" (a search by stored item id) never returns the item
 * itself. Users ask it from an item they are already looking at (a product
 * page, a result card) and want k OTHER items; returning the item first
 * wastes a slot that every caller would have to filter out. Other items
 * with the same embedding (exact duplicates) are returned, score 1.
 *
 * Threads: every function is safe to call from several threads on one
 * store (the store's own rules apply). Nothing here prints.
 */
#ifndef IMGSEARCH_QUERY_H
#define IMGSEARCH_QUERY_H

#include <stddef.h>

#include "store/store.h"
#include "util/err.h"

/* Hits of one search (k). k + offset + 1 + QUERY_SLACK must stay within
 * STORE_K_MAX: QUERY_OFFSET_MAX is the largest offset allowed with k =
 * QUERY_K_MAX. */
#define QUERY_K_MAX 1000
#define QUERY_SLACK 4 /* extra hits asked of the store: rows deleted between
                         its index search and its row reads are skipped */
#define QUERY_OFFSET_MAX (STORE_K_MAX - QUERY_K_MAX - 1 - QUERY_SLACK)
/* A query vector shorter than this (L2) has no direction to search by:
 * the store's own limit. */
#define QUERY_MIN_NORM ((float)STORE_VEC_MIN_NORM)

struct query_opts {
    int k;                               /* hits wanted, 1..QUERY_K_MAX */
    int offset;                          /* hits skipped, 0..QUERY_OFFSET_MAX */
    float min_score;                     /* drop hits below this cosine; -1: none */
    const struct store_filter *filters;  /* n_filters, ANDed, or NULL */
    int n_filters;                       /* 0..STORE_FILTERS_MAX */
    int ef;                              /* search width; 0: the store's */
};

/* Checks a caller's vector (dim floats): every value finite, the L2 norm at
 * least QUERY_MIN_NORM (a vector of denormals is refused, not searched
 * with NaN scores). Writes the normalised vector to out (may be v).
 * ERR_INVALID_ARGUMENT naming the first bad value. */
int query_vector_check(const float *v, int dim, float *out, struct err *err);

/* The stored embedding of item id into out (store_dim floats).
 * ERR_NOT_FOUND when there is no such item, ERR_CONFLICT when it waits for
 * its embedding. */
int query_item_vector(struct store *st, const char *id, float *out, struct err *err);

/* Searches st with vec (store_dim floats, need not be normalised). Hits
 * whose id is exclude_id (NULL: none) are left out and do not count
 * toward k or offset, so paging through "more like this" is exact. *hits
 * is malloc'd (store_hits_free), *n <= o->k; every hit has a finite score.
 * ERR_INVALID_ARGUMENT for bad options. */
int query_search(struct store *st, const float *vec, const char *exclude_id,
                 const struct query_opts *o, struct store_hit **hits, size_t *n,
                 struct err *err);

/* ---- zero-shot labels (auto-tagging) ----------------------------------- */

#define QUERY_TEMPLATE_DEFAULT "a photo of {}"

/* The text embedded for a label: tpl with its first "{}" replaced by label,
 * or "tpl label" when tpl has no "{}". malloc'd; NULL when out of memory. */
char *query_label_text(const char *tpl, const char *label);

struct query_label {
    int idx;     /* index of the label in the caller's list */
    float prob;  /* softmax over the logits of all labels */
    float logit; /* exp(logit_scale) * cosine */
};

/* Ranks n labels (n vectors of dim floats) for one image vector as CLIP
 * does (pipe_zero_shot), best first; ties keep the caller's order. out has
 * n entries. ERR_NOMEM. */
int query_rank_labels(const float *img, const float *labels, int n, int dim, float scale,
                      struct query_label *out, struct err *err);

#endif
