/* hnsw_int.h - what the files of the HNSW index share: the node layout
 * (struct hnsw), the per-search scratch, the scoring helpers, and the
 * functions one file defines for another (hnsw__ prefix).
 *
 * The index is three files: hnsw.c (label map, scratch pool, search,
 * lifecycle), hnsw_build.c (insert, delete, compaction, reachability) and
 * hnsw_file.c (validation, CRC-32C, the file format of hnsw.h: save, load).
 * Only they include this header.
 */
#ifndef IMGSEARCH_HNSW_INT_H
#define IMGSEARCH_HNSW_INT_H

#include "store/hnsw.h"

#include <errno.h>
#include <fcntl.h>
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/vec.h"

#define NONE 0xFFFFFFFFu
#define HEADER_BYTES 80
#define MAGIC "IMGHNSW\0"
#define VERSION 1

struct cand {
    float s;     /* score against the current query */
    uint32_t id; /* node */
};

/* Per-search working memory (one per concurrent search or insert). */
struct scratch {
    uint32_t *mark;       /* visited stamps, one per node */
    size_t mark_cap;      /* nodes covered by mark */
    uint32_t epoch;       /* stamp of the current search */
    struct cand *cq;      /* candidate max-heap */
    struct cand *rq;      /* result min-heap (worst on top) */
    size_t q_cap;         /* room in cq and rq */
    struct cand *eps;     /* entry points for the next level (insert) */
    struct cand *tmp;     /* sorting / heuristic buffer */
    size_t tmp_cap;       /* room in tmp */
    uint32_t *batch;      /* unvisited neighbours of one node */
    float *qv;            /* normalised query */
    int8_t *qc;           /* query codes */
    uint32_t *dk;         /* distinct result scores (float bits), open addressing */
    uint32_t *dn;         /* results holding each score; 0: empty slot */
    size_t d_cap;         /* slots in dk, dn (power of two) */
    struct scratch *next; /* pool link */
};

struct slot {
    int64_t label; /* key */
    uint32_t node; /* NONE: empty slot */
};

struct hnsw {
    int dim;                /* vector length */
    int m;                  /* max degree above layer 0 */
    int m0;                 /* max degree on layer 0 (2*m) */
    int efc;                /* ef_construction */
    int efs;                /* default ef_search */
    int quant;              /* traverse with int8 codes */
    double max_del;         /* compaction threshold (fraction of nodes) */
    double ml;              /* level multiplier 1/ln(m) */
    uint64_t rng;           /* level generator state */
    size_t cstride;         /* bytes per code row (dim rounded up to 64) */
    uint32_t n;             /* nodes */
    uint32_t cap;           /* allocated nodes */
    uint32_t n_deleted;     /* tombstones */
    float *vecs;            /* (cap, dim) normalised vectors */
    int8_t *codes;          /* (cap, cstride) int8 codes, zero padded */
    float *scales;          /* code scale per node: 1 / |codes| */
    float *selfs;           /* score of each node with itself (what a copy scores) */
    uint32_t *parent;       /* layer-0 tree: the node whose list keeps this one reachable
                               (that link is never dropped); NONE for the entry */
    int64_t *labels;        /* label per node */
    uint8_t *levels;        /* top level per node */
    uint8_t *flags;         /* bit 0: tombstone */
    uint32_t *links0;       /* (cap, 1 + m0): count then ids */
    uint32_t **upper;       /* per node: levels[i] blocks of (1 + m), or NULL */
    int max_level;          /* level of the entry point */
    uint32_t entry;         /* entry node, NONE when empty */
    struct slot *map;       /* label -> live node, open addressing */
    size_t map_cap;         /* slots (power of two) */
    size_t map_n;           /* used slots */
    int64_t covered;        /* caller's number */
    uint64_t tag;           /* caller's tag */
    vec_dot_fn dotf;        /* float kernel */
    vec_dot_i8_fn doti8;    /* int8 kernel */
    pthread_mutex_t pool_mu; /* guards pool */
    struct scratch *pool;   /* idle scratches */
};

#define FLAG_DELETED 1u

/* What a search compares against: a float vector and its codes. */
struct query {
    const float *v;  /* normalised vector */
    const int8_t *c; /* codes (cstride bytes) */
    float s;         /* code scale */
};

/* How a layer search admits results (filter) and bounds its work. */
struct layer_opts {
    hnsw_accept_fn accept; /* NULL: all */
    void *ctx;             /* for accept */
    size_t budget;         /* max nodes visited, 0: no limit */
    int over;              /* out: budget exceeded */
};

static inline uint32_t *links(const struct hnsw *h, uint32_t i, int l)
{
    return l == 0 ? h->links0 + (size_t)i * (1 + (size_t)h->m0)
                  : h->upper[i] + (size_t)(l - 1) * (1 + (size_t)h->m);
}

static inline int maxdeg(const struct hnsw *h, int l) { return l == 0 ? h->m0 : h->m; }

static inline int is_del(const struct hnsw *h, uint32_t i) { return h->flags[i] & FLAG_DELETED; }

static inline const float *vec_of(const struct hnsw *h, uint32_t i)
{
    return h->vecs + (size_t)i * h->dim;
}

static inline const int8_t *code_of(const struct hnsw *h, uint32_t i)
{
    return h->codes + (size_t)i * h->cstride;
}

static inline float qscore(const struct hnsw *h, const struct query *q, uint32_t i)
{
    if (h->quant)
        return q->s * h->scales[i] * (float)h->doti8(q->c, code_of(h, i), h->cstride);
    return h->dotf(q->v, vec_of(h, i), (size_t)h->dim);
}

static inline float nscore(const struct hnsw *h, uint32_t a, uint32_t b)
{
    struct query q = {vec_of(h, a), code_of(h, a), h->scales[a]};
    return qscore(h, &q, b);
}

/* Is x an exact (or near-exact) duplicate of node b, given their score s?
 * Copies score exactly selfs[b] with each other (same bytes, same
 * arithmetic); anything else scores lower unless it is closer to b than
 * float rounding can tell. */
static inline int is_dup(const struct hnsw *h, uint32_t b, float s) { return s >= h->selfs[b]; }

int hnsw__cand_desc(const void *a, const void *b);
uint32_t hnsw__descend(const struct hnsw *h, const struct query *q, int level, float *eps);
int hnsw__grow(struct hnsw *h, size_t need);
void hnsw__map_clear(struct hnsw *h);
void hnsw__map_del(struct hnsw *h, int64_t label);
uint32_t hnsw__map_get(const struct hnsw *h, int64_t label);
int hnsw__map_put(struct hnsw *h, int64_t label, uint32_t node);
int hnsw__random_level(struct hnsw *h);
long hnsw__repair_reachability(struct hnsw *h);
struct scratch *hnsw__scratch_get(struct hnsw *h, size_t ef);
void hnsw__scratch_put(struct hnsw *h, struct scratch *s);
size_t hnsw__search_layer(const struct hnsw *h, struct scratch *s, const struct query *q, const struct cand *ep, size_t nep, size_t ef, int level, struct layer_opts *o);
void hnsw__set_codes(struct hnsw *h, uint32_t i);
void hnsw__tombstone(struct hnsw *h, uint32_t i);
void hnsw__walk0(const struct hnsw *h, uint32_t from, uint8_t *seen, uint32_t *queue, uint32_t *tree);
void *hnsw__xalloc_aligned(size_t bytes);

#endif
