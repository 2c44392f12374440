/* hnsw.c - hierarchical navigable small world graph for cosine search.
 *
 * Implements the algorithm of Malkov & Yashunin, "Efficient and robust
 * approximate nearest neighbor search using Hierarchical Navigable Small
 * World graphs" (2016/2018): greedy descent through sparse upper layers,
 * a beam search of width ef on layer 0, neighbours chosen with the paper's
 * heuristic (keep a candidate only if it is closer to the new node than to
 * every neighbour kept so far). Design decisions of this implementation:
 *
 *  1. Storage is a handful of flat arrays indexed by a dense u32 node id:
 *     vectors (n, dim) f32 contiguous (so the exact scan runs over them
 *     directly), int8 codes (n, cstride), labels, levels, flags. Layer-0
 *     neighbour lists are one flat array of fixed slots [count, ids...];
 *     only the ~1/m nodes with upper layers get a separate small block.
 *  2. With quantize=1 (default) the graph is built and searched with int8
 *     codes (one scale per vector, exact integer dot via AVX-512 VNNI): a
 *     512-d vector is 512 bytes instead of 2048, which matters because
 *     traversal is bound by memory traffic, not arithmetic. The scale is
 *     1 / |codes|, so a code score is the cosine of two code vectors and a
 *     vector scores highest against its own copies (see encode). The final
 *     candidate list (ef entries) is re-scored in float32, so reported
 *     scores are exact cosines and order errors of the codes are repaired.
 *  3. The visited set is an array of u32 epoch stamps per search scratch:
 *     a new query bumps the epoch instead of clearing. Scratches live in a
 *     small mutex-protected pool so concurrent searches each get their own.
 *  4. A node's unvisited neighbours are gathered first and their codes
 *     prefetched as a batch before scoring, so the cache misses overlap.
 *  5. Deletes are tombstones: the node keeps routing; results, and the
 *     neighbours chosen for new nodes, skip it. Past max_deleted_fraction,
 *     hnsw_compact repairs every list that points at a tombstone (the
 *     candidates are the list's live members plus the tombstones' live
 *     neighbours, re-selected with the heuristic) and renumbers densely,
 *     which costs far less than a rebuild.
 *  6. A filtered search keeps tombstoned and rejected nodes as routes and
 *     only admits accepted ones to the results; if it visits more than a
 *     budget of nodes or ends with fewer than k results it falls back to
 *     an exact scan over the accepted items, so a selective filter still
 *     gets its k results.
 *  7. The file (format in hnsw.h) holds only float32 vectors and the graph;
 *     codes are recomputed on load. Loading checks every size against the
 *     file before allocating and every id before use, then runs the graph
 *     validator, so a damaged file is ERR_CORRUPT, never a crash.
 *  8. Exact duplicates (the same photo indexed many times) break the
 *     paper's assumptions: copies are exactly as similar to each other as
 *     to anything they are compared from, so the heuristic never prunes
 *     them and lists fill with copies (a group nobody leaves), and the
 *     newest copy loses every re-selection (ties go to the oldest), so
 *     nobody links to it and no search finds it. Hence: a list keeps at
 *     most half its slots for copies of its own node (dup_cap); every new
 *     node ends its insert with an incoming link on each level, from a
 *     copy of itself if it has any (keep_reachable), made without cutting
 *     anyone else off (the entry it replaces stays reachable through the
 *     new node); a search explores up to ef candidates that tie its worst
 *     result; compaction walks through chains of tombstones; and after
 *     compaction and on load, any node a layer-0 walk from the entry
 *     cannot reach is linked from its best reachable node
 *     (repair_reachability). hnsw_unreachable counts such nodes.
 *  9. Reachability holds after every operation, not only after compaction
 *     and load (issue 9: re-selections after catch-ups cut nodes off, and
 *     an overwrite whose only neighbour was its own tombstone left the new
 *     node unlinked). Layer 0 carries a spanning tree rooted at the entry
 *     point: parent[x] is the node whose list keeps x reachable, and that
 *     entry is pinned: re-selection (add_link) keeps it, tombstone or not,
 *     and force_link, when it must give it up, hands x to the new node
 *     (which links to x). A new node's parent is the neighbour that links
 *     to it (keep_reachable), or the entry point when the search met only
 *     tombstones; a new entry point links to the old one and becomes the
 *     root. Deletes change no list. So every live node stays on a path of
 *     pinned links from the entry, at the cost of a u32 per node and one
 *     compare per re-selected entry; compaction and load rebuild the tree.
 * 10. A search's beam counts distinct scores, not nodes (search_layer): a
 *     group of 250 copies scores alike and took 250 of ef places, so a
 *     search stopped at the group before reaching a node linked only from
 *     beyond it. Results keep every copy of a kept score.
 * 11. Final ranking: float32 cannot order an exact copy of the query and a
 *     near duplicate closer than its rounding, and each SIMD path rounds
 *     its own way (issue 15: with the scalar path, copies lost to near
 *     duplicates by node id). Among scores within TIE_EPS, the vectors
 *     bit-identical to the query come first (rank_final), in the graph
 *     search and the exact scan alike.
 *
 * Size: one file (about 2,400 lines) because the graph's invariants (the
 * layer-0 parent tree, tombstones, the duplicate cap) are kept by insert,
 * delete, compaction and load together, and they share the node layout.
 * The next split is along the index file's sections (header, nodes, links,
 * checksum) into hnsw_file.c, which issue 10 asks for; until then this
 * file is the whole index.
 */
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

/* ---- small helpers ---------------------------------------------------- */

void hnsw_params_default(struct hnsw_params *p)
{
    p->m = 16;
    p->ef_construction = 128; /* 64 loses recall on clustered data: see bench */
    p->ef_search = 64;
    p->max_deleted_fraction = 0.2;
    p->quantize = 1;
    p->seed = 0;
}

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

/* What a search compares against: a float vector and its codes. */
struct query {
    const float *v;  /* normalised vector */
    const int8_t *c; /* codes (cstride bytes) */
    float s;         /* code scale */
};

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

/* Codes of the normalised vector x into c (cstride bytes) and their scale.
 * The scale is 1 / |c|, not max|x| / 127: a code score is then the cosine
 * of two code vectors, which no vector can beat against itself. With the
 * max-based scale the rounding error of |c| (about 1e-3) let a near
 * duplicate (cosine 0.99997) outscore an exact copy, so a copy's neighbour
 * selection kept the near duplicates and pruned its own copies. */
static float encode(const struct hnsw *h, const float *x, int8_t *c)
{
    memset(c, 0, h->cstride);
    vec_quantize_i8(x, (size_t)h->dim, c);
    int32_t ss = h->doti8(c, c, h->cstride);
    return ss > 0 ? (float)(1.0 / sqrt((double)ss)) : 0.0f;
}

/* Fills the scale, codes and self score of node i from its vector. */
static void set_codes(struct hnsw *h, uint32_t i)
{
    h->scales[i] = encode(h, vec_of(h, i), h->codes + (size_t)i * h->cstride);
    h->selfs[i] = nscore(h, i, i);
}

/* Is x an exact (or near-exact) duplicate of node b, given their score s?
 * Copies score exactly selfs[b] with each other (same bytes, same
 * arithmetic); anything else scores lower unless it is closer to b than
 * float rounding can tell. */
static inline int is_dup(const struct hnsw *h, uint32_t b, float s) { return s >= h->selfs[b]; }

static inline void prefetch_node(const struct hnsw *h, uint32_t i)
{
    const char *p = h->quant ? (const char *)code_of(h, i) : (const char *)vec_of(h, i);
    size_t bytes = h->quant ? h->cstride : (size_t)h->dim * 4;
    if (bytes > 1024)
        bytes = 1024;
    for (size_t o = 0; o < bytes; o += 64)
        _mm_prefetch(p + o, _MM_HINT_T0);
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int random_level(struct hnsw *h)
{
    double u = ((double)(splitmix(&h->rng) >> 11) + 1.0) / 9007199254740993.0; /* (0, 1] */
    double l = -log(u) * h->ml;
    return l >= HNSW_MAX_LEVEL ? HNSW_MAX_LEVEL : (int)l;
}

static void *xalloc_aligned(size_t bytes)
{
    void *p = NULL;
    if (bytes == 0)
        bytes = 64;
    if (posix_memalign(&p, 64, (bytes + 63) & ~(size_t)63))
        return NULL;
    return p;
}

/* ---- label map --------------------------------------------------------- */

static inline size_t hash64(int64_t k)
{
    uint64_t x = (uint64_t)k;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return (size_t)x;
}

static uint32_t map_get(const struct hnsw *h, int64_t label)
{
    if (!h->map_cap)
        return NONE;
    size_t mask = h->map_cap - 1;
    for (size_t i = hash64(label) & mask;; i = (i + 1) & mask) {
        if (h->map[i].node == NONE)
            return NONE;
        if (h->map[i].label == label)
            return h->map[i].node;
    }
}

static int map_grow(struct hnsw *h)
{
    size_t ncap = h->map_cap ? h->map_cap * 2 : 64;
    struct slot *nm = malloc(ncap * sizeof *nm);
    if (!nm)
        return -1;
    for (size_t i = 0; i < ncap; i++)
        nm[i].node = NONE;
    for (size_t i = 0; i < h->map_cap; i++) {
        if (h->map[i].node == NONE)
            continue;
        size_t j = hash64(h->map[i].label) & (ncap - 1);
        while (nm[j].node != NONE)
            j = (j + 1) & (ncap - 1);
        nm[j] = h->map[i];
    }
    free(h->map);
    h->map = nm;
    h->map_cap = ncap;
    return 0;
}

/* Sets label -> node; returns 1 if the label was already present (and
 * updates it), 0 if added, -1 on allocation failure. */
static int map_put(struct hnsw *h, int64_t label, uint32_t node)
{
    if ((h->map_n + 1) * 4 > h->map_cap * 3 && map_grow(h))
        return -1;
    size_t mask = h->map_cap - 1;
    for (size_t i = hash64(label) & mask;; i = (i + 1) & mask) {
        if (h->map[i].node == NONE) {
            h->map[i].label = label;
            h->map[i].node = node;
            h->map_n++;
            return 0;
        }
        if (h->map[i].label == label) {
            h->map[i].node = node;
            return 1;
        }
    }
}

/* Linear probing deletion by backward shift: no tombstones in the map. */
static void map_del(struct hnsw *h, int64_t label)
{
    if (!h->map_cap)
        return;
    size_t mask = h->map_cap - 1, i = hash64(label) & mask;
    for (;; i = (i + 1) & mask) {
        if (h->map[i].node == NONE)
            return;
        if (h->map[i].label == label)
            break;
    }
    h->map_n--;
    for (size_t j = (i + 1) & mask;; j = (j + 1) & mask) {
        if (h->map[j].node == NONE)
            break;
        size_t home = hash64(h->map[j].label) & mask;
        /* Move j into the hole i unless its home lies cyclically in (i, j]. */
        int stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            h->map[i] = h->map[j];
            i = j;
        }
    }
    h->map[i].node = NONE;
}

static void map_clear(struct hnsw *h)
{
    for (size_t i = 0; i < h->map_cap; i++)
        h->map[i].node = NONE;
    h->map_n = 0;
}

/* ---- scratch pool ------------------------------------------------------ */

static void scratch_free(struct scratch *s)
{
    if (!s)
        return;
    free(s->mark);
    free(s->cq);
    free(s->rq);
    free(s->tmp);
    free(s->eps);
    free(s->batch);
    free(s->qv);
    free(s->qc);
    free(s->dk);
    free(s->dn);
    free(s);
}

/* A scratch with room for ef candidates and n nodes' stamps. */
static struct scratch *scratch_get(struct hnsw *h, size_t ef)
{
    pthread_mutex_lock(&h->pool_mu);
    struct scratch *s = h->pool;
    if (s)
        h->pool = s->next;
    pthread_mutex_unlock(&h->pool_mu);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            return NULL;
        s->batch = malloc(((size_t)h->m0 + 1) * sizeof *s->batch);
        s->qv = xalloc_aligned((size_t)h->dim * sizeof(float));
        s->qc = xalloc_aligned(h->cstride);
        if (!s->batch || !s->qv || !s->qc) {
            scratch_free(s);
            return NULL;
        }
    }
    if (s->mark_cap < h->n) {
        size_t nc = (size_t)h->cap > h->n ? h->cap : h->n;
        uint32_t *m = realloc(s->mark, nc * sizeof *m);
        if (!m)
            goto fail;
        memset(m, 0, nc * sizeof *m); /* stamps restart with the epoch */
        s->mark = m;
        s->mark_cap = nc;
        s->epoch = 0;
    }
    /* The candidate heap can hold every pushed node: bound it by the
     * visits a beam of width ef makes, growing on demand in the search. */
    size_t want = ef + (size_t)h->m0 + 1;
    if (s->q_cap < want) {
        struct cand *a = realloc(s->cq, want * sizeof *a);
        if (!a)
            goto fail;
        s->cq = a;
        struct cand *b = realloc(s->rq, want * sizeof *b);
        if (!b)
            goto fail;
        s->rq = b;
        struct cand *c = realloc(s->eps, want * sizeof *c);
        if (!c)
            goto fail;
        s->eps = c;
        s->q_cap = want;
    }
    if (s->tmp_cap < want + (size_t)h->m0 * (h->m0 + 1)) {
        size_t nt = want + (size_t)h->m0 * (h->m0 + 1);
        struct cand *t = realloc(s->tmp, nt * sizeof *t);
        if (!t)
            goto fail;
        s->tmp = t;
        s->tmp_cap = nt;
    }
    return s;
fail:
    scratch_free(s);
    return NULL;
}

static void scratch_put(struct hnsw *h, struct scratch *s)
{
    pthread_mutex_lock(&h->pool_mu);
    s->next = h->pool;
    h->pool = s;
    pthread_mutex_unlock(&h->pool_mu);
}

static void scratch_new_epoch(struct scratch *s)
{
    if (++s->epoch == 0) {
        memset(s->mark, 0, s->mark_cap * sizeof *s->mark);
        s->epoch = 1;
    }
}

/* ---- heaps ------------------------------------------------------------- */

/* Max-heap on s (best candidate on top). */
static inline void maxh_push(struct cand *a, size_t *n, struct cand x)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (a[p].s >= x.s)
            break;
        a[i] = a[p];
        i = p;
    }
    a[i] = x;
}

static inline struct cand maxh_pop(struct cand *a, size_t *n)
{
    struct cand top = a[0], x = a[--(*n)];
    size_t i = 0, len = *n;
    for (;;) {
        size_t l = 2 * i + 1, b = i;
        if (l >= len)
            break;
        b = (l + 1 < len && a[l + 1].s > a[l].s) ? l + 1 : l;
        if (a[b].s <= x.s)
            break;
        a[i] = a[b];
        i = b;
    }
    if (len)
        a[i] = x;
    return top;
}

/* Min-heap on s (worst result on top). */
static inline void minh_push(struct cand *a, size_t *n, struct cand x)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (a[p].s <= x.s)
            break;
        a[i] = a[p];
        i = p;
    }
    a[i] = x;
}

static inline void minh_pop(struct cand *a, size_t *n)
{
    struct cand x = a[--(*n)];
    size_t i = 0, len = *n;
    for (;;) {
        size_t l = 2 * i + 1, b;
        if (l >= len)
            break;
        b = (l + 1 < len && a[l + 1].s < a[l].s) ? l + 1 : l;
        if (a[b].s >= x.s)
            break;
        a[i] = a[b];
        i = b;
    }
    if (len)
        a[i] = x;
}

static int cand_desc(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    if (x->s != y->s)
        return x->s < y->s ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* ---- search ------------------------------------------------------------ */

/* Greedy walk on one upper level: moves to the best neighbour until none
 * improves. */
static uint32_t greedy(const struct hnsw *h, const struct query *q, uint32_t ep,
                       float *eps, int level)
{
    for (int changed = 1; changed;) {
        changed = 0;
        const uint32_t *l = links(h, ep, level);
        uint32_t cnt = l[0];
        for (uint32_t j = 1; j <= cnt; j++)
            prefetch_node(h, l[j]);
        for (uint32_t j = 1; j <= cnt; j++) {
            float s = qscore(h, q, l[j]);
            if (s > *eps) {
                *eps = s;
                ep = l[j];
                changed = 1;
            }
        }
    }
    return ep;
}

struct layer_opts {
    hnsw_accept_fn accept; /* NULL: all */
    void *ctx;             /* for accept */
    size_t budget;         /* max nodes visited, 0: no limit */
    int over;              /* out: budget exceeded */
};

static inline int admit(const struct hnsw *h, const struct layer_opts *o, uint32_t i)
{
    if (is_del(h, i))
        return 0;
    return !o->accept || o->accept(h->labels[i], o->ctx);
}

/* ---- distinct scores of a search's results ---------------------------------
 * Copies of one vector score exactly alike against any query, so a beam of
 * width ef counts scores, not nodes: 300 copies take one place, and cannot
 * fill the beam and stop a search short of a node reachable only past
 * them. A small hash set counts the results holding each score. */

static inline size_t dhash(uint32_t k, size_t mask)
{
    return (size_t)(((uint64_t)k * 0x9E3779B97F4A7C15ull) >> 32) & mask;
}

static inline uint32_t fbits(float f)
{
    uint32_t k;
    memcpy(&k, &f, 4);
    return k;
}

/* Empties the set, with room for ef + 1 distinct scores. -1: no memory. */
static int dset_reset(struct scratch *s, size_t ef)
{
    size_t want = 16;
    while (want < 2 * (ef + 2))
        want *= 2;
    if (s->d_cap < want) {
        uint32_t *k = realloc(s->dk, want * sizeof *k);
        if (!k)
            return -1;
        s->dk = k;
        uint32_t *n = realloc(s->dn, want * sizeof *n);
        if (!n)
            return -1;
        s->dn = n;
        s->d_cap = want;
    }
    memset(s->dn, 0, s->d_cap * sizeof *s->dn);
    return 0;
}

/* Counts one more result with score f; 1 when f is a new score. */
static inline int dset_add(struct scratch *s, float f)
{
    uint32_t k = fbits(f);
    size_t mask = s->d_cap - 1;
    for (size_t i = dhash(k, mask);; i = (i + 1) & mask) {
        if (!s->dn[i]) {
            s->dk[i] = k;
            s->dn[i] = 1;
            return 1;
        }
        if (s->dk[i] == k) {
            s->dn[i]++;
            return 0;
        }
    }
}

/* Counts one result with score f less (f is in the set); 1 when it was
 * the last with that score. Deletes by backward shift, as map_del. */
static inline int dset_del(struct scratch *s, float f)
{
    uint32_t k = fbits(f);
    size_t mask = s->d_cap - 1, i = dhash(k, mask);
    while (s->dn[i] && s->dk[i] != k)
        i = (i + 1) & mask;
    if (!s->dn[i] || --s->dn[i])
        return 0;
    for (size_t j = (i + 1) & mask; s->dn[j]; j = (j + 1) & mask) {
        size_t home = dhash(s->dk[j], mask);
        int stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            s->dk[i] = s->dk[j];
            s->dn[i] = s->dn[j];
            i = j;
        }
    }
    s->dn[i] = 0;
    return 1;
}

/* Grows the scratch's candidate arrays (cq, rq, eps, tmp) to hold `want`
 * candidates; -1 when out of memory. */
static int scratch_grow(struct scratch *s, size_t want, int m0)
{
    if (want <= s->q_cap)
        return 0;
    struct cand *a = realloc(s->cq, want * sizeof *a);
    if (!a)
        return -1;
    s->cq = a;
    struct cand *b = realloc(s->rq, want * sizeof *b);
    if (!b)
        return -1;
    s->rq = b;
    struct cand *c = realloc(s->eps, want * sizeof *c);
    if (!c)
        return -1;
    s->eps = c;
    size_t nt = want + (size_t)m0 * (m0 + 1);
    if (s->tmp_cap < nt) {
        struct cand *t = realloc(s->tmp, nt * sizeof *t);
        if (!t)
            return -1;
        s->tmp = t;
        s->tmp_cap = nt;
    }
    s->q_cap = want;
    return 0;
}

/* Beam search of width ef (distinct scores, see above) on `level` from ep;
 * the results (admitted nodes only, every copy of a kept score) are left
 * in s->rq as a min-heap; returns their count. Out of memory ends the
 * search early with o->over set. */
static size_t search_layer(const struct hnsw *h, struct scratch *s,
                           const struct query *q, const struct cand *ep, size_t nep,
                           size_t ef, int level, struct layer_opts *o)
{
    size_t nc = 0, nr = 0, nd = 0, visited = nep, ties = 0;
    scratch_new_epoch(s);
    if (dset_reset(s, ef)) {
        o->over = 1;
        return 0;
    }
    uint32_t *mark = s->mark, epoch = s->epoch;
    struct cand *cq = s->cq, *rq = s->rq;
    for (size_t i = 0; i < nep; i++) {
        mark[ep[i].id] = epoch;
        maxh_push(cq, &nc, ep[i]);
        if (admit(h, o, ep[i].id)) {
            minh_push(rq, &nr, ep[i]);
            nd += dset_add(s, ep[i].s);
            while (nd > ef) {
                nd -= dset_del(s, rq[0].s);
                minh_pop(rq, &nr);
            }
        }
    }
    while (nc) {
        if (nd >= ef && cq[0].s < rq[0].s)
            break;
        /* Keep room for this node's neighbours in every array. */
        size_t top = nc > nr ? nc : nr;
        if (top + (size_t)h->m0 + 1 > s->q_cap) {
            if (scratch_grow(s, 2 * (top + (size_t)h->m0 + 1), h->m0)) {
                o->over = 1;
                break;
            }
            cq = s->cq;
            rq = s->rq;
        }
        struct cand c = maxh_pop(cq, &nc);
        const uint32_t *l = links(h, c.id, level);
        uint32_t cnt = l[0], nb = 0;
        for (uint32_t j = 1; j <= cnt; j++) {
            uint32_t id = l[j];
            if (mark[id] != epoch) {
                mark[id] = epoch;
                s->batch[nb++] = id;
            }
        }
        for (uint32_t j = 0; j < nb && j < 4; j++)
            prefetch_node(h, s->batch[j]);
        for (uint32_t j = 0; j < nb; j++) {
            if (j + 4 < nb)
                prefetch_node(h, s->batch[j + 4]);
            uint32_t id = s->batch[j];
            float sc = qscore(h, q, id);
            if (nd < ef || sc > rq[0].s) {
                maxh_push(cq, &nc, (struct cand){sc, id});
                if (admit(h, o, id)) {
                    minh_push(rq, &nr, (struct cand){sc, id});
                    nd += dset_add(s, sc);
                    while (nd > ef) {
                        nd -= dset_del(s, rq[0].s);
                        minh_pop(rq, &nr);
                    }
                }
            } else if (sc == rq[0].s && ties < ef) {
                /* A tie with the worst result (a copy of it, or a tombstone
                 * of one): a better node may be linked only from it. At
                 * most ef of them, so a group of thousands of copies at the
                 * bottom of the results costs one more beam. */
                maxh_push(cq, &nc, (struct cand){sc, id});
                if (admit(h, o, id)) {
                    minh_push(rq, &nr, (struct cand){sc, id});
                    dset_add(s, sc);
                }
                ties++;
            }
        }
        visited += nb;
        if (o->budget && visited > o->budget) {
            o->over = 1;
            break;
        }
    }
    return nr;
}

/* Entry point for level `level`: greedy descent from the top. */
static uint32_t descend(const struct hnsw *h, const struct query *q, int level,
                        float *eps)
{
    uint32_t ep = h->entry;
    *eps = qscore(h, q, ep);
    for (int l = h->max_level; l > level; l--)
        ep = greedy(h, q, ep, eps, l);
    return ep;
}

struct exact_ctx {
    const struct hnsw *h;  /* index */
    hnsw_accept_fn accept; /* user filter or NULL */
    void *ctx;             /* its context */
};

static int exact_accept(size_t row, void *p)
{
    const struct exact_ctx *e = p;
    if (is_del(e->h, (uint32_t)row))
        return 0;
    return !e->accept || e->accept(e->h->labels[row], e->ctx);
}

/* Float32 scores closer than this are one tie for rank_final: more than
 * the rounding error of any float kernel on unit vectors of the
 * dimensions we meet (a few 1e-7), far less than the gap between two
 * different photos. */
#define TIE_EPS 8e-6f

/* Sorts t[0 .. n) (scores from a float kernel against the normalised
 * query qv) best first. Float32 cannot tell an exact copy of the query
 * from a near duplicate closer than its rounding (cosine 1 - 1e-7 rounds
 * like 1), and each SIMD path rounds its own way, so ties went to the
 * lower node id and whether the copies beat their near duplicates
 * depended on the path (issue 15). Within a run of scores no more than
 * TIE_EPS apart, the stored vectors bit-identical to the query (its exact
 * copies: the same input normalises to the same bits) come first; the
 * rest keep the float order, ties to the older node, as before (the same
 * photo embedded in another batch differs in the last bits, and the
 * oldest item of it stays first). Scores are then made non-increasing
 * (a copy may have rounded a little below a near duplicate). */
static void rank_final(const struct hnsw *h, const float *qv, struct cand *t, size_t n)
{
    qsort(t, n, sizeof *t, cand_desc);
    size_t vb = (size_t)h->dim * sizeof(float);
    for (size_t a = 0; a < n;) {
        size_t b = a + 1;
        while (b < n && t[b - 1].s - t[b].s <= TIE_EPS)
            b++;
        /* Stable partition of the run: exact copies to the front. */
        for (size_t i = a, w = a; b - a > 1 && i < b; i++)
            if (!memcmp(vec_of(h, t[i].id), qv, vb)) {
                struct cand c = t[i];
                memmove(t + w + 1, t + w, (i - w) * sizeof *t);
                t[w++] = c;
            }
        a = b;
    }
    for (size_t i = 1; i < n; i++)
        if (t[i].s > t[i - 1].s)
            t[i].s = t[i - 1].s;
}

/* The exact top k: the float scan (vec_topk), widened until the k-th
 * score's ties (within TIE_EPS) are all in, then ranked by rank_final. */
static int exact_scan(const struct hnsw *h, const float *qv, size_t k,
                      hnsw_accept_fn accept, void *ctx, struct hnsw_hit *out,
                      size_t *n_out, struct err *err)
{
    *n_out = 0;
    if (k == 0 || h->n == 0)
        return 0;
    struct exact_ctx e = {h, accept, ctx};
    int anyfilter = accept || h->n_deleted;
    /* One more than k: the (k+1)-th score tells whether ties may go on. */
    size_t kk = k + 1 < h->n ? k + 1 : h->n;
    struct vec_hit *hits = NULL;
    long got;
    for (;;) {
        hits = malloc(kk * sizeof *hits);
        if (!hits)
            return err_set(err, ERR_NOMEM, "hnsw: no memory for %zu hits", kk);
        got = vec_topk(qv, h->vecs, h->n, (size_t)h->dim, kk,
                       anyfilter ? exact_accept : NULL, &e, hits);
        if (got < 0) {
            free(hits);
            return err_set(err, ERR_NOMEM, "hnsw: no memory for the exact scan");
        }
        if ((size_t)got < kk || kk == h->n || hits[kk - 1].score < hits[k - 1].score - TIE_EPS)
            break;
        free(hits);
        kk = kk * 2 < h->n ? kk * 2 : h->n;
    }
    struct cand *t = malloc((size_t)got * sizeof *t + 1);
    if (!t) {
        free(hits);
        return err_set(err, ERR_NOMEM, "hnsw: no memory for %ld hits", got);
    }
    for (long i = 0; i < got; i++)
        t[i] = (struct cand){hits[i].score, (uint32_t)hits[i].row};
    free(hits);
    rank_final(h, qv, t, (size_t)got);
    size_t n = (size_t)got < k ? (size_t)got : k;
    for (size_t i = 0; i < n; i++) {
        out[i].label = h->labels[t[i].id];
        out[i].score = t[i].s;
    }
    *n_out = n;
    free(t);
    return 0;
}

static int prepare_query(const struct hnsw *h, struct scratch *s, const float *q,
                         struct query *out, struct err *err)
{
    memcpy(s->qv, q, (size_t)h->dim * sizeof(float));
    if (vec_normalize(s->qv, (size_t)h->dim))
        return err_set(err, ERR_INVALID_ARGUMENT,
                       "hnsw: the query vector is zero or not finite");
    out->v = s->qv;
    out->c = s->qc;
    out->s = 0;
    if (h->quant)
        out->s = encode(h, s->qv, s->qc);
    return 0;
}

int hnsw_exact(const struct hnsw *h, const float *q, size_t k,
               hnsw_accept_fn accept, void *ctx, struct hnsw_hit *out,
               size_t *n_out, struct err *err)
{
    *n_out = 0;
    float *qv = malloc((size_t)h->dim * sizeof *qv);
    if (!qv)
        return err_set(err, ERR_NOMEM, "hnsw: no memory for the query");
    memcpy(qv, q, (size_t)h->dim * sizeof *qv);
    int rc;
    if (vec_normalize(qv, (size_t)h->dim))
        rc = err_set(err, ERR_INVALID_ARGUMENT, "hnsw: the query vector is zero or not finite");
    else
        rc = exact_scan(h, qv, k, accept, ctx, out, n_out, err);
    free(qv);
    return rc;
}

int hnsw_search(const struct hnsw *h, const float *q, size_t k, int ef,
                hnsw_accept_fn accept, void *ctx, struct hnsw_hit *out,
                size_t *n_out, struct err *err)
{
    *n_out = 0;
    size_t live = (size_t)h->n - h->n_deleted;
    if (k == 0 || live == 0)
        return 0;
    size_t efz = ef > 0 ? (size_t)ef : (size_t)h->efs;
    if (efz < k)
        efz = k;
    /* The pool is logically const: it only hands out scratch memory. */
    struct hnsw *hm = (struct hnsw *)h;
    struct scratch *s = scratch_get(hm, efz);
    if (!s)
        return err_set(err, ERR_NOMEM, "hnsw: no memory for a search");
    struct query qq = {NULL, NULL, 0};
    int rc = prepare_query(h, s, q, &qq, err);
    if (rc) {
        scratch_put(hm, s);
        return rc;
    }
    float eps;
    uint32_t ep = descend(h, &qq, 0, &eps);
    struct layer_opts o = {accept, ctx, 0, 0};
    if (accept) /* past this many visits an exact scan is cheaper */
        o.budget = h->n / 8 + 20 * efz;
    struct cand e0 = {eps, ep};
    size_t nr = search_layer(h, s, &qq, &e0, 1, efz, 0, &o);
    size_t want = k < live ? k : live;
    if (o.over || nr < want) {
        rc = exact_scan(h, qq.v, k, accept, ctx, out, n_out, err);
        scratch_put(hm, s);
        return rc;
    }
    /* Re-score in float32 (exact cosine) and keep the best k. */
    struct cand *t = s->tmp;
    for (size_t i = 0; i < nr; i++) {
        t[i] = s->rq[i];
        if (h->quant)
            t[i].s = h->dotf(qq.v, vec_of(h, t[i].id), (size_t)h->dim);
    }
    rank_final(h, qq.v, t, nr);
    size_t n = nr < k ? nr : k;
    for (size_t i = 0; i < n; i++) {
        out[i].label = h->labels[t[i].id];
        out[i].score = t[i].s;
    }
    *n_out = n;
    scratch_put(hm, s);
    return 0;
}

/* ---- insert ------------------------------------------------------------ */

/* The most copies of its own vector a list of mmax neighbours keeps: the
 * rest of the list goes to distinct neighbours, so searches that reach a
 * group of copies can leave it. */
static inline uint32_t dup_cap(int mmax) { return mmax > 1 ? (uint32_t)mmax / 2 : 1; }

/* The paper's heuristic: walk the candidates best first and keep one only
 * if it is not more similar to a neighbour kept so far than to the base.
 * Copies of the base itself (is_dup) are exactly as similar to each other
 * as to the base, so the heuristic never prunes them and they would fill
 * the list (leaving a group of copies without a way out); they are kept
 * first, up to dup_cap(mmax). Copies of another vector prune each other
 * (one of them is kept). c is sorted best first, ties by node id, so the
 * oldest copies are the ones kept. out[0 .. k0) are kept already (the
 * list's pinned entries, see pinned) and count as kept neighbours. Writes
 * at most mmax ids to out; returns the count. */
static uint32_t select_neighbors(const struct hnsw *h, uint32_t base, const struct cand *c,
                                 size_t nc, int mmax, uint32_t *out, uint32_t k0)
{
    uint32_t k = k0, ndup = 0, cap = dup_cap(mmax);
    for (uint32_t j = 0; j < k0; j++)
        ndup += is_dup(h, base, nscore(h, base, out[j]));
    for (size_t i = 0; i < nc && k < (uint32_t)mmax; i++) {
        if (is_dup(h, base, c[i].s)) {
            if (ndup < cap) {
                out[k++] = c[i].id;
                ndup++;
            }
            continue;
        }
        int good = 1;
        for (uint32_t j = 0; j < k; j++) {
            if (nscore(h, c[i].id, out[j]) > c[i].s) {
                good = 0;
                break;
            }
        }
        if (good)
            out[k++] = c[i].id;
    }
    return k;
}

/* Is x's link from b on level l the one that keeps x reachable (its tree
 * edge, see design note 9)? Such an entry is never dropped from b's list
 * unless x gets another parent. */
static inline int pinned(const struct hnsw *h, uint32_t b, int l, uint32_t x)
{
    return l == 0 && h->parent[x] == b;
}

/* Copies of node b in its list on level l. */
static uint32_t count_dups(const struct hnsw *h, uint32_t b, int l)
{
    const uint32_t *lst = links(h, b, l);
    uint32_t d = 0;
    for (uint32_t j = 1; j <= lst[0]; j++)
        d += is_dup(h, b, nscore(h, b, lst[j]));
    return d;
}

/* Adds `add` (score s with b) to the list of node b on level l, re-selecting
 * the list with the heuristic when it is full or already holds its share
 * of copies of b. The re-selection keeps b's pinned entries (tombstones
 * included: they route to their children) and drops the other tombstones.
 * tmp has room for maxdeg + 1 candidates. Returns 1 when `add` is in the
 * list afterwards. */
static int add_link(const struct hnsw *h, uint32_t b, uint32_t add, float s, int l,
                    struct cand *tmp)
{
    uint32_t *lst = links(h, b, l);
    int mmax = maxdeg(h, l);
    uint32_t cnt = lst[0];
    for (uint32_t j = 1; j <= cnt; j++)
        if (lst[j] == add)
            return 1;
    if (cnt < (uint32_t)mmax &&
        (!is_dup(h, b, s) || count_dups(h, b, l) < dup_cap(mmax))) {
        lst[1 + cnt] = add;
        lst[0] = cnt + 1;
        return 1;
    }
    size_t nc = 0;
    uint32_t npin = 0;
    for (uint32_t j = 1; j <= cnt; j++) {
        uint32_t x = lst[j];
        if (pinned(h, b, l, x))
            lst[1 + npin++] = x; /* npin < j: compacts in place */
        else if (!is_del(h, x))
            tmp[nc++] = (struct cand){nscore(h, b, x), x};
    }
    tmp[nc++] = (struct cand){s, add};
    qsort(tmp, nc, sizeof *tmp, cand_desc);
    lst[0] = select_neighbors(h, b, tmp, nc, mmax, lst + 1, npin);
    for (uint32_t j = 1; j <= lst[0]; j++)
        if (lst[j] == add)
            return 1;
    return 0;
}

static int in_list(const uint32_t *lst, uint32_t x)
{
    for (uint32_t j = 1; j <= lst[0]; j++)
        if (lst[j] == x)
            return 1;
    return 0;
}

/* Puts x into node i's list on level l, i's links being new (no node's
 * reachability depends on them yet but its pinned entries', which stay):
 * in place of i's newest unpinned copy when x is a copy of i and i holds
 * its share of them, else appended, else in place of i's worst unpinned
 * entry. A new node pins at most two entries (one from force_link, one as
 * the new entry point) and a list holds at least 4, so there is always an
 * unpinned one. */
static void give_link(struct hnsw *h, uint32_t i, int l, uint32_t x)
{
    uint32_t *il = links(h, i, l);
    int mmax = maxdeg(h, l);
    if (is_dup(h, i, nscore(h, i, x)) && count_dups(h, i, l) >= dup_cap(mmax)) {
        uint32_t w = 0;
        for (uint32_t j = 1; j <= il[0]; j++)
            if (!pinned(h, i, l, il[j]) && is_dup(h, i, nscore(h, i, il[j])) &&
                (!w || il[j] > il[w]))
                w = j;
        if (w) {
            il[w] = x;
            return;
        }
    }
    if (il[0] < (uint32_t)mmax) {
        il[++il[0]] = x;
        return;
    }
    uint32_t w = 0;
    float ws = 0;
    for (uint32_t j = 1; j <= il[0]; j++) {
        if (pinned(h, i, l, il[j]))
            continue;
        float sj = nscore(h, i, il[j]);
        if (!w || sj < ws) {
            ws = sj;
            w = j;
        }
    }
    if (w)
        il[w] = x;
}

/* Puts i into the list of b on level l, making room if the list is full or
 * holds its share of copies of b (i being one): in place of an entry x that
 * i links to, so whatever reached x through b still does, through i
 * (b -> i -> x); without such an entry, b gives up its worst entry (its
 * newest copy when i is a copy: b keeps its links out of the group), which
 * i takes over. An x pinned in b's list (b its parent) gets i as its
 * parent: i is not below x in the tree (i is new, or unreachable), so the
 * tree stays a tree. Only for an i whose own links nothing depends on yet
 * (a new node, or one no search can reach). */
static void force_link(struct hnsw *h, uint32_t b, uint32_t i, int l)
{
    uint32_t *bl = links(h, b, l);
    int mmax = maxdeg(h, l);
    if (in_list(bl, i))
        return;
    int dup = is_dup(h, b, nscore(h, b, i));
    if (bl[0] < (uint32_t)mmax && (!dup || count_dups(h, b, l) < dup_cap(mmax))) {
        bl[++bl[0]] = i;
        return;
    }
    /* The entry to give up: one i links to if any, else the worst; among
     * equals the newest (highest id). */
    uint32_t pick = 0, pick_in = 0;
    float pick_s = 0;
    for (int only_dups = dup; !pick && only_dups >= 0; only_dups--)
        for (uint32_t j = 1; j <= bl[0]; j++) {
            float sx = nscore(h, b, bl[j]);
            if (only_dups && !is_dup(h, b, sx))
                continue;
            uint32_t inm = in_list(links(h, i, l), bl[j]);
            if (!pick || inm > pick_in ||
                (inm == pick_in && (sx < pick_s || (sx == pick_s && bl[j] > bl[pick])))) {
                pick = j;
                pick_in = inm;
                pick_s = sx;
            }
        }
    uint32_t x = bl[pick]; /* pick > 0: a full list is not empty */
    bl[pick] = i;
    if (!pick_in)
        give_link(h, i, l, x);
    if (pinned(h, b, l, x))
        h->parent[x] = i;
}

/* Makes sure the new node i has an incoming link on level l that lasts (a
 * node nobody links to is never found). mine[0 .. nm) are i's neighbours,
 * best first, mine_s their scores. When i has copies among them the link
 * must come from a copy: a copy's list never drops copies of itself (they
 * sort first and stay within dup_cap), while any other list keeps only the
 * oldest of a group of copies, so a link from there goes at its next
 * re-selection; and a search for the vector then walks from copy to copy.
 * The link is missing for the newest copy of a vector once the copies'
 * lists hold their share of copies, and for the outliers that every
 * neighbour prunes; it then comes from the best neighbour (the best copy,
 * when i has copies), by force_link. On layer 0 the link becomes i's tree
 * edge (pinned). Without neighbours (every node the search met was a
 * tombstone) the entry point links to i. */
static void keep_reachable(struct hnsw *h, uint32_t i, int l, const uint32_t *mine,
                           uint32_t nm, const float *mine_s)
{
    if (nm == 0) {
        if (l == 0) {
            force_link(h, h->entry, i, 0);
            h->parent[i] = h->entry;
        }
        return;
    }
    int any_dup = is_dup(h, i, mine_s[0]); /* copies come first */
    for (uint32_t j = 0; j < nm; j++)
        if ((!any_dup || is_dup(h, i, mine_s[j])) && in_list(links(h, mine[j], l), i)) {
            if (l == 0)
                h->parent[i] = mine[j];
            return;
        }
    force_link(h, mine[0], i, l);
    if (l == 0)
        h->parent[i] = mine[0];
}

/* Marks seen what a layer-0 walk from `from` reaches (through tombstones);
 * queue has room for n ids. With tree set, the walk also makes each node it
 * discovers a child of the node it came from. */
static void walk0(const struct hnsw *h, uint32_t from, uint8_t *seen, uint32_t *queue,
                  uint32_t *tree)
{
    size_t head = 0, tail = 0;
    if (seen[from])
        return;
    seen[from] = 1;
    queue[tail++] = from;
    while (head < tail) {
        uint32_t x = queue[head++];
        const uint32_t *l = links(h, x, 0);
        for (uint32_t j = 1; j <= l[0]; j++)
            if (!seen[l[j]]) {
                seen[l[j]] = 1;
                if (tree)
                    tree[l[j]] = x;
                queue[tail++] = l[j];
            }
    }
}

/* The live node most similar to node i among those a layer-0 search from
 * the entry point finds (all reachable); -1 when none. */
static int best_reachable(struct hnsw *h, struct scratch *s, uint32_t i, uint32_t *best)
{
    struct query q = {vec_of(h, i), code_of(h, i), h->scales[i]};
    struct cand e0 = {qscore(h, &q, h->entry), h->entry};
    struct layer_opts o = {NULL, NULL, 0, 0};
    size_t nr = search_layer(h, s, &q, &e0, 1, (size_t)h->efc, 0, &o);
    if (nr == 0)
        return -1;
    struct cand top = s->rq[0];
    for (size_t j = 1; j < nr; j++)
        if (s->rq[j].s > top.s || (s->rq[j].s == top.s && s->rq[j].id < top.id))
            top = s->rq[j];
    *best = top.id;
    return 0;
}

/* Rebuilds the layer-0 tree (parent) from a walk from the entry point, and
 * links every live node the walk cannot reach from its best reachable node
 * (found by a layer-0 search from the entry), with force_link: nothing
 * reachable depends on an unreachable node's links. Run after compaction
 * (which re-selects lists wholesale and can orphan a node) and on load
 * (the file does not keep the tree; older builds orphaned copies of
 * duplicated vectors). Returns the count relinked, or -1 when out of
 * memory. */
static long repair_reachability(struct hnsw *h)
{
    uint32_t n = h->n;
    for (uint32_t i = 0; i < n; i++)
        h->parent[i] = NONE;
    if (n == 0 || h->entry == NONE)
        return 0;
    uint8_t *seen = calloc(n, 1);
    uint32_t *queue = malloc((size_t)n * sizeof *queue);
    if (!seen || !queue) {
        free(seen);
        free(queue);
        return -1;
    }
    walk0(h, h->entry, seen, queue, h->parent);
    long fixed = 0;
    struct scratch *s = NULL;
    for (uint32_t i = 0; i < n && fixed >= 0; i++) {
        if (seen[i] || is_del(h, i))
            continue;
        if (!s && !(s = scratch_get(h, (size_t)h->efc))) {
            fixed = -1;
            break;
        }
        uint32_t b;
        if (best_reachable(h, s, i, &b) == 0) {
            force_link(h, b, i, 0);
            h->parent[i] = b;
            walk0(h, i, seen, queue, h->parent);
            fixed++;
        }
    }
    if (s)
        scratch_put(h, s);
    free(seen);
    free(queue);
    return fixed;
}

/* Links the new node i (already stored, level lv) into the graph. */
static void connect_node(struct hnsw *h, struct scratch *s, uint32_t i, int lv)
{
    struct query q = {vec_of(h, i), code_of(h, i), h->scales[i]};
    int top = lv < h->max_level ? lv : h->max_level;
    float eps;
    uint32_t ep = descend(h, &q, top, &eps);
    /* As in the paper, all of a level's results seed the next level down. */
    size_t nep = 1;
    s->eps[0] = (struct cand){eps, ep};
    uint32_t sel[HNSW_MAX_M];
    float sel_s[HNSW_MAX_M];
    for (int l = top; l >= 0; l--) {
        struct layer_opts o = {NULL, NULL, 0, 0};
        size_t nr = search_layer(h, s, &q, s->eps, nep, (size_t)h->efc, l, &o);
        struct cand *t = s->tmp;
        memcpy(t, s->rq, nr * sizeof *t);
        qsort(t, nr, sizeof *t, cand_desc);
        if (nr) { /* t is reused by add_link: keep the entries first */
            memcpy(s->eps, t, nr * sizeof *t);
            nep = nr;
        }
        uint32_t *mine = links(h, i, l);
        uint32_t nm = select_neighbors(h, i, t, nr, h->m, mine + 1, 0);
        mine[0] = nm;
        /* mine may change below (keep_reachable): work on a copy. */
        memcpy(sel, mine + 1, nm * sizeof *sel);
        for (uint32_t j = 0, k = 0; j < nm; j++) {
            while (s->eps[k].id != sel[j]) /* eps holds the sorted results */
                k++;
            sel_s[j] = s->eps[k].s;
        }
        for (uint32_t j = 0; j < nm; j++)
            add_link(h, sel[j], i, sel_s[j], l, t);
        keep_reachable(h, i, l, sel, nm, sel_s);
    }
    if (lv > h->max_level) {
        /* i becomes the entry point and the root of the tree: it links to
         * the old root, whose parent it becomes. */
        uint32_t r = h->entry;
        if (!in_list(links(h, i, 0), r))
            give_link(h, i, 0, r);
        h->parent[r] = i;
        h->parent[i] = NONE;
        h->max_level = lv;
        h->entry = i;
    }
}

static int grow(struct hnsw *h, size_t need)
{
    if (need <= h->cap)
        return 0;
    if (need > HNSW_MAX_NODES)
        return -1;
    size_t nc = h->cap ? (size_t)h->cap * 2 : 64;
    while (nc < need)
        nc *= 2;
    if (nc > HNSW_MAX_NODES)
        nc = HNSW_MAX_NODES;
    size_t d = (size_t)h->dim;
    float *v = xalloc_aligned(nc * d * sizeof *v);
    int8_t *c = xalloc_aligned(nc * h->cstride);
    uint32_t *l0 = xalloc_aligned(nc * (1 + (size_t)h->m0) * sizeof *l0);
    float *sc = realloc(h->scales, nc * sizeof *sc);
    if (sc)
        h->scales = sc;
    float *sf = realloc(h->selfs, nc * sizeof *sf);
    if (sf)
        h->selfs = sf;
    uint32_t *pa = realloc(h->parent, nc * sizeof *pa);
    if (pa)
        h->parent = pa;
    int64_t *lb = realloc(h->labels, nc * sizeof *lb);
    if (lb)
        h->labels = lb;
    uint8_t *lv = realloc(h->levels, nc);
    if (lv)
        h->levels = lv;
    uint8_t *fl = realloc(h->flags, nc);
    if (fl)
        h->flags = fl;
    uint32_t **up = realloc(h->upper, nc * sizeof *up);
    if (up)
        h->upper = up;
    if (!v || !c || !l0 || !sc || !sf || !pa || !lb || !lv || !fl || !up) {
        free(v);
        free(c);
        free(l0);
        return -1;
    }
    if (h->n) {
        memcpy(v, h->vecs, (size_t)h->n * d * sizeof *v);
        memcpy(c, h->codes, (size_t)h->n * h->cstride);
        memcpy(l0, h->links0, (size_t)h->n * (1 + (size_t)h->m0) * sizeof *l0);
    }
    free(h->vecs);
    free(h->codes);
    free(h->links0);
    h->vecs = v;
    h->codes = c;
    h->links0 = l0;
    h->cap = (uint32_t)nc;
    return 0;
}

/* Stores a normalised vector as node n with level lv (no linking). */
static int add_node(struct hnsw *h, int64_t label, const float *v, int lv)
{
    if (grow(h, (size_t)h->n + 1))
        return -1;
    uint32_t i = h->n;
    h->upper[i] = NULL;
    if (lv > 0) {
        h->upper[i] = calloc((size_t)lv * (1 + (size_t)h->m), sizeof(uint32_t));
        if (!h->upper[i])
            return -1;
    }
    if (map_put(h, label, i) < 0) {
        free(h->upper[i]);
        h->upper[i] = NULL;
        return -1;
    }
    memcpy(h->vecs + (size_t)i * h->dim, v, (size_t)h->dim * sizeof *v);
    set_codes(h, i);
    h->labels[i] = label;
    h->levels[i] = (uint8_t)lv;
    h->flags[i] = 0;
    h->parent[i] = NONE;
    links(h, i, 0)[0] = 0;
    h->n++;
    return 0;
}

static void tombstone(struct hnsw *h, uint32_t i)
{
    if (is_del(h, i))
        return;
    h->flags[i] |= FLAG_DELETED;
    h->n_deleted++;
    map_del(h, h->labels[i]);
}

static int maybe_compact(struct hnsw *h, struct err *err)
{
    if (h->n_deleted && (double)h->n_deleted > h->max_del * (double)h->n)
        return hnsw_compact(h, err);
    return 0;
}

int hnsw_insert(struct hnsw *h, int64_t label, const float *v, struct err *err)
{
    struct scratch *s = scratch_get(h, (size_t)h->efc);
    if (!s)
        return err_set(err, ERR_NOMEM, "hnsw: no memory to insert item %lld", (long long)label);
    float *nv = s->qv;
    memcpy(nv, v, (size_t)h->dim * sizeof *nv);
    if (vec_normalize(nv, (size_t)h->dim)) {
        scratch_put(h, s);
        return err_set(err, ERR_INVALID_ARGUMENT,
                       "hnsw: item %lld: the vector is zero or not finite", (long long)label);
    }
    uint32_t old = map_get(h, label);
    if (old != NONE)
        tombstone(h, old);
    int lv = random_level(h);
    if (add_node(h, label, nv, lv)) {
        scratch_put(h, s);
        return err_set(err, ERR_NOMEM, "hnsw: no memory to insert item %lld", (long long)label);
    }
    uint32_t i = h->n - 1;
    if (h->entry == NONE) {
        h->entry = i;
        h->max_level = lv;
    } else {
        /* The scratch's stamps must cover the node just added. */
        if (s->mark_cap < h->n) {
            scratch_put(h, s);
            s = scratch_get(h, (size_t)h->efc);
            if (!s) {
                tombstone(h, i);
                return err_set(err, ERR_NOMEM, "hnsw: no memory to insert item %lld",
                               (long long)label);
            }
        }
        connect_node(h, s, i, lv);
    }
    scratch_put(h, s);
    return maybe_compact(h, err);
}

int hnsw_insert_batch(struct hnsw *h, const int64_t *labels, const float *v,
                      size_t n, int threads, struct err *err)
{
    (void)threads; /* single-threaded build: see the report in the bench */
    if (grow(h, (size_t)h->n + n))
        return err_set(err, ERR_NOMEM, "hnsw: no memory for %zu more items", n);
    for (size_t i = 0; i < n; i++) {
        int rc = hnsw_insert(h, labels[i], v + i * (size_t)h->dim, err);
        if (rc)
            return rc;
    }
    return 0;
}

int hnsw_delete(struct hnsw *h, int64_t label)
{
    uint32_t i = map_get(h, label);
    if (i == NONE)
        return -ERR_NOT_FOUND;
    tombstone(h, i);
    return maybe_compact(h, NULL);
}

/* ---- compaction ---------------------------------------------------------- */

int hnsw_compact(struct hnsw *h, struct err *err)
{
    if (!h->n_deleted)
        return 0;
    uint32_t n = h->n;
    uint32_t *stamp = calloc(n, sizeof *stamp);
    uint32_t *newid = calloc(n, sizeof *newid);
    size_t tcap = (size_t)(h->m0 + 1) * (h->m0 + 1);
    struct cand *t = malloc(tcap * sizeof *t);
    uint32_t *tq = malloc(tcap * sizeof *tq); /* tombstones to walk through */
    uint32_t *sel = malloc(((size_t)h->m0 + 1) * sizeof *sel);
    if (!stamp || !newid || !t || !tq || !sel) {
        free(stamp);
        free(newid);
        free(t);
        free(tq);
        free(sel);
        return err_set(err, ERR_NOMEM, "hnsw: no memory to compact %u nodes", n);
    }
    /* 1. Repair lists that point at tombstones. */
    uint32_t ep = 0;
    for (uint32_t u = 0; u < n; u++) {
        if (is_del(h, u))
            continue;
        for (int l = 0; l <= h->levels[u]; l++) {
            uint32_t *lst = links(h, u, l);
            uint32_t cnt = lst[0], hasdel = 0;
            for (uint32_t j = 1; j <= cnt; j++)
                hasdel |= is_del(h, lst[j]);
            if (!hasdel)
                continue;
            /* Candidates: the live members, and the live nodes reached
             * through tombstones, several in a row where needed (deleting
             * all but one of a group of copies leaves chains of them). */
            ep++;
            stamp[u] = ep;
            size_t nc = 0, nq = 0;
            for (uint32_t j = 1; j <= cnt; j++) {
                uint32_t x = lst[j];
                if (stamp[x] == ep)
                    continue;
                stamp[x] = ep;
                if (!is_del(h, x))
                    t[nc++] = (struct cand){nscore(h, u, x), x};
                else
                    tq[nq++] = x;
            }
            for (size_t qi = 0, direct = nq; qi < nq && nc < tcap; qi++) {
                /* Past the list's own tombstones, walk on while the list
                 * cannot be refilled, and through copies of u (deleted
                 * copies lead to the live ones): normal deletes stop after
                 * the tombstones' own lists. */
                if (qi >= direct && nc >= (size_t)maxdeg(h, l) &&
                    !is_dup(h, u, nscore(h, u, tq[qi])))
                    continue;
                const uint32_t *dl = links(h, tq[qi], l);
                for (uint32_t k = 1; k <= dl[0] && nc < tcap; k++) {
                    uint32_t y = dl[k];
                    if (stamp[y] == ep)
                        continue;
                    stamp[y] = ep;
                    if (!is_del(h, y))
                        t[nc++] = (struct cand){nscore(h, u, y), y};
                    else if (nq < tcap)
                        tq[nq++] = y;
                }
            }
            qsort(t, nc, sizeof *t, cand_desc);
            uint32_t k = select_neighbors(h, u, t, nc, maxdeg(h, l), sel, 0);
            memcpy(lst + 1, sel, k * sizeof *sel);
            lst[0] = k;
        }
    }
    /* 2. Renumber live nodes densely (new id <= old id: move forward). */
    uint32_t live = 0;
    for (uint32_t u = 0; u < n; u++)
        newid[u] = is_del(h, u) ? NONE : live++;
    uint32_t best = NONE;
    for (uint32_t u = 0; u < n; u++) {
        if (newid[u] == NONE) {
            free(h->upper[u]);
            h->upper[u] = NULL;
            continue;
        }
        if (best == NONE || h->levels[u] > h->levels[best])
            best = u;
    }
    uint32_t new_entry = NONE;
    int new_top = 0;
    if (h->entry != NONE && newid[h->entry] != NONE) {
        new_entry = newid[h->entry];
        new_top = h->max_level;
    } else if (best != NONE) {
        new_entry = newid[best];
        new_top = h->levels[best];
    }
    size_t d = (size_t)h->dim, l0w = 1 + (size_t)h->m0;
    for (uint32_t u = 0; u < n; u++) {
        uint32_t v = newid[u];
        if (v == NONE)
            continue;
        if (v != u) {
            memcpy(h->vecs + v * d, h->vecs + u * d, d * sizeof(float));
            memcpy(h->codes + v * h->cstride, h->codes + u * h->cstride, h->cstride);
            memcpy(h->links0 + v * l0w, h->links0 + u * l0w, l0w * sizeof(uint32_t));
            h->scales[v] = h->scales[u];
            h->selfs[v] = h->selfs[u];
            h->labels[v] = h->labels[u];
            h->levels[v] = h->levels[u];
            h->upper[v] = h->upper[u];
            h->upper[u] = NULL;
        }
        h->flags[v] = 0;
    }
    h->n = live;
    h->n_deleted = 0;
    for (uint32_t v = 0; v < live; v++)
        for (int l = 0; l <= h->levels[v]; l++) {
            uint32_t *lst = links(h, v, l);
            for (uint32_t j = 1; j <= lst[0]; j++)
                lst[j] = newid[lst[j]];
        }
    h->entry = new_entry;
    h->max_level = new_top;
    map_clear(h);
    int rc = 0;
    for (uint32_t v = 0; v < live; v++)
        if (map_put(h, h->labels[v], v) < 0) {
            rc = err_set(err, ERR_NOMEM, "hnsw: no memory for the label map");
            break;
        }
    free(stamp);
    free(newid);
    free(t);
    free(tq);
    free(sel);
    /* 3. The repaired lists may leave a node no list points at. */
    if (!rc && repair_reachability(h) < 0)
        rc = err_set(err, ERR_NOMEM, "hnsw: no memory to check the graph's reachability");
    return rc;
}

/* ---- lifecycle and getters ------------------------------------------------ */

static int check_params(int dim, const struct hnsw_params *p, struct err *err)
{
    if (dim < 1 || dim > HNSW_MAX_DIM)
        return err_set(err, ERR_INVALID_ARGUMENT, "hnsw: dimension %d is outside [1, %d]",
                       dim, HNSW_MAX_DIM);
    if (p->m < 2 || p->m > HNSW_MAX_M)
        return err_set(err, ERR_INVALID_ARGUMENT, "hnsw: m=%d is outside [2, %d]", p->m,
                       HNSW_MAX_M);
    if (p->ef_construction < 1 || p->ef_construction > HNSW_MAX_EF ||
        p->ef_search < 1 || p->ef_search > HNSW_MAX_EF)
        return err_set(err, ERR_INVALID_ARGUMENT,
                       "hnsw: ef_construction=%d / ef_search=%d outside [1, %d]",
                       p->ef_construction, p->ef_search, HNSW_MAX_EF);
    if (!(p->max_deleted_fraction > 0 && p->max_deleted_fraction <= 1))
        return err_set(err, ERR_INVALID_ARGUMENT,
                       "hnsw: max_deleted_fraction=%g is outside (0, 1]",
                       p->max_deleted_fraction);
    return 0;
}

int hnsw_new(struct hnsw **out, int dim, const struct hnsw_params *pp, struct err *err)
{
    *out = NULL;
    struct hnsw_params p;
    if (pp)
        p = *pp;
    else
        hnsw_params_default(&p);
    int rc = check_params(dim, &p, err);
    if (rc)
        return rc;
    struct hnsw *h = calloc(1, sizeof *h);
    if (!h)
        return err_set(err, ERR_NOMEM, "hnsw: no memory");
    h->dim = dim;
    h->m = p.m;
    h->m0 = 2 * p.m;
    h->efc = p.ef_construction;
    h->efs = p.ef_search;
    h->quant = p.quantize ? 1 : 0;
    h->max_del = p.max_deleted_fraction;
    h->ml = 1.0 / log((double)p.m);
    h->rng = p.seed ? p.seed : 0x1234567887654321ull;
    h->cstride = ((size_t)dim + 63) & ~(size_t)63;
    h->entry = NONE;
    h->dotf = vec_dot_kernel();
    h->doti8 = vec_dot_i8_kernel();
    pthread_mutex_init(&h->pool_mu, NULL);
    *out = h;
    return 0;
}

void hnsw_free(struct hnsw *h)
{
    if (!h)
        return;
    for (uint32_t i = 0; i < h->n; i++)
        free(h->upper[i]);
    free(h->upper);
    free(h->vecs);
    free(h->codes);
    free(h->scales);
    free(h->selfs);
    free(h->parent);
    free(h->labels);
    free(h->levels);
    free(h->flags);
    free(h->links0);
    free(h->map);
    while (h->pool) {
        struct scratch *s = h->pool;
        h->pool = s->next;
        scratch_free(s);
    }
    pthread_mutex_destroy(&h->pool_mu);
    free(h);
}

int hnsw_contains(const struct hnsw *h, int64_t label) { return map_get(h, label) != NONE; }

int hnsw_get(const struct hnsw *h, int64_t label, float *out)
{
    uint32_t i = map_get(h, label);
    if (i == NONE)
        return -ERR_NOT_FOUND;
    memcpy(out, vec_of(h, i), (size_t)h->dim * sizeof *out);
    return 0;
}

int hnsw_dim(const struct hnsw *h) { return h->dim; }
size_t hnsw_count(const struct hnsw *h) { return (size_t)h->n - h->n_deleted; }
size_t hnsw_nodes(const struct hnsw *h) { return h->n; }
size_t hnsw_deleted(const struct hnsw *h) { return h->n_deleted; }
void hnsw_set_ef_search(struct hnsw *h, int ef)
{
    h->efs = ef < 1 ? 1 : ef > HNSW_MAX_EF ? HNSW_MAX_EF : ef;
}
int hnsw_ef_search(const struct hnsw *h) { return h->efs; }
void hnsw_set_covered(struct hnsw *h, int64_t covered) { h->covered = covered; }
int64_t hnsw_covered(const struct hnsw *h) { return h->covered; }
void hnsw_set_tag(struct hnsw *h, uint64_t tag) { h->tag = tag; }
uint64_t hnsw_tag(const struct hnsw *h) { return h->tag; }

size_t hnsw_memory(const struct hnsw *h)
{
    size_t per = (size_t)h->dim * 4 + h->cstride + 4 + 4 + 4 + 8 + 1 + 1 + sizeof(void *) +
                 (1 + (size_t)h->m0) * 4;
    size_t b = (size_t)h->cap * per + h->map_cap * sizeof(struct slot);
    for (uint32_t i = 0; i < h->n; i++)
        b += (size_t)h->levels[i] * (1 + (size_t)h->m) * 4;
    return b;
}

int hnsw_foreach(const struct hnsw *h,
                 int (*fn)(int64_t label, const float *v, void *ctx), void *ctx)
{
    for (uint32_t i = 0; i < h->n; i++) {
        if (is_del(h, i))
            continue;
        int rc = fn(h->labels[i], vec_of(h, i), ctx);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- validation ------------------------------------------------------------ */

int hnsw_validate(const struct hnsw *h, struct err *err)
{
    uint32_t n = h->n;
    if (n == 0) {
        if (h->entry != NONE || h->n_deleted || h->map_n)
            return err_set(err, ERR_CORRUPT, "hnsw: empty index with entry %u, %u tombstones",
                           h->entry, h->n_deleted);
        return 0;
    }
    if (h->entry >= n)
        return err_set(err, ERR_CORRUPT, "hnsw: entry point %u is not below %u nodes",
                       h->entry, n);
    if (h->levels[h->entry] != h->max_level)
        return err_set(err, ERR_CORRUPT, "hnsw: entry point %u has level %d, top level is %d",
                       h->entry, h->levels[h->entry], h->max_level);
    uint32_t *seen = calloc(n, sizeof *seen);
    if (!seen)
        return err_set(err, ERR_NOMEM, "hnsw: no memory to validate");
    uint32_t dels = 0, stamp = 0;
    int rc = 0;
    for (uint32_t i = 0; i < n && !rc; i++) {
        if (h->levels[i] > h->max_level) {
            rc = err_set(err, ERR_CORRUPT, "hnsw: node %u has level %d above the top %d", i,
                         h->levels[i], h->max_level);
            break;
        }
        if (h->flags[i] & ~FLAG_DELETED) {
            rc = err_set(err, ERR_CORRUPT, "hnsw: node %u has unknown flags 0x%x", i,
                         h->flags[i]);
            break;
        }
        if (is_del(h, i))
            dels++;
        else if (map_get(h, h->labels[i]) != i) {
            rc = err_set(err, ERR_CORRUPT, "hnsw: node %u: label %lld maps elsewhere", i,
                         (long long)h->labels[i]);
            break;
        }
        if (h->levels[i] > 0 && !h->upper[i]) {
            rc = err_set(err, ERR_CORRUPT, "hnsw: node %u lacks its upper lists", i);
            break;
        }
        for (int l = 0; l <= h->levels[i] && !rc; l++) {
            const uint32_t *lst = links(h, i, l);
            if (lst[0] > (uint32_t)maxdeg(h, l)) {
                rc = err_set(err, ERR_CORRUPT, "hnsw: node %u level %d has %u neighbours, max %d",
                             i, l, lst[0], maxdeg(h, l));
                break;
            }
            stamp++;
            for (uint32_t j = 1; j <= lst[0]; j++) {
                uint32_t x = lst[j];
                if (x >= n)
                    rc = err_set(err, ERR_CORRUPT, "hnsw: node %u level %d: neighbour %u >= %u",
                                 i, l, x, n);
                else if (x == i)
                    rc = err_set(err, ERR_CORRUPT, "hnsw: node %u level %d links to itself", i, l);
                else if (h->levels[x] < l)
                    rc = err_set(err, ERR_CORRUPT,
                                 "hnsw: node %u level %d: neighbour %u only reaches level %d",
                                 i, l, x, h->levels[x]);
                else if (seen[x] == stamp)
                    rc = err_set(err, ERR_CORRUPT, "hnsw: node %u level %d lists %u twice", i,
                                 l, x);
                if (rc)
                    break;
                seen[x] = stamp;
            }
        }
    }
    free(seen);
    if (rc)
        return rc;
    if (dels != h->n_deleted)
        return err_set(err, ERR_CORRUPT, "hnsw: %u tombstones flagged, header says %u", dels,
                       h->n_deleted);
    if (h->map_n != (size_t)n - dels)
        return err_set(err, ERR_CORRUPT, "hnsw: %zu labels mapped for %u live nodes", h->map_n,
                       n - dels);
    return 0;
}

size_t hnsw_unreachable(const struct hnsw *h)
{
    if (h->n == 0)
        return 0;
    uint8_t *seen = calloc(h->n, 1);
    uint32_t *queue = malloc((size_t)h->n * sizeof *queue);
    size_t lost = 0;
    if (!seen || !queue)
        lost = (size_t)-1;
    else {
        walk0(h, h->entry, seen, queue, NULL);
        for (uint32_t i = 0; i < h->n; i++)
            lost += !seen[i] && !is_del(h, i);
    }
    free(seen);
    free(queue);
    return lost;
}

/* ---- CRC-32C ---------------------------------------------------------------- */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

/* Slicing-by-8 software CRC. */
static uint32_t crc_soft(uint32_t c, const uint8_t *p, size_t n)
{
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= c;
        c = crc_table[7][w & 0xff] ^ crc_table[6][(w >> 8) & 0xff] ^
            crc_table[5][(w >> 16) & 0xff] ^ crc_table[4][(w >> 24) & 0xff] ^
            crc_table[3][(w >> 32) & 0xff] ^ crc_table[2][(w >> 40) & 0xff] ^
            crc_table[1][(w >> 48) & 0xff] ^ crc_table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
    return c;
}

/* The SSE4.2 crc32 instruction computes the same CRC-32C. */
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t c, const uint8_t *p,
                                                         size_t n)
{
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c64 = _mm_crc32_u64(c64, w);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
    while (n--)
        c = _mm_crc32_u8(c, *p++);
    return c;
}

uint32_t hnsw_crc32c(uint32_t crc, const void *p, size_t n)
{
    static int hw = -1;
    if (hw < 0) {
        __builtin_cpu_init();
        hw = __builtin_cpu_supports("sse4.2") && !getenv("IMGSEARCH_SOFT_CRC");
    }
    uint32_t c = ~crc;
    if (hw)
        c = crc_hw(c, p, n);
    else {
        pthread_once(&crc_once, crc_init);
        c = crc_soft(c, p, n);
    }
    return ~c;
}

/* ---- save ------------------------------------------------------------------ */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p) { return get32(p) | (uint64_t)get32(p + 4) << 32; }

struct writer {
    int fd;          /* output */
    uint8_t *buf;    /* pending bytes */
    size_t len;      /* pending count */
    size_t cap;      /* buffer size */
    uint32_t crc;    /* running CRC of the payload */
    int failed;      /* errno of the first failure, 0 */
};

static void w_flush(struct writer *w)
{
    size_t off = 0;
    while (off < w->len && !w->failed) {
        ssize_t k = write(w->fd, w->buf + off, w->len - off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            w->failed = k < 0 ? errno : EIO;
        else
            off += (size_t)k;
    }
    w->len = 0;
}

static void w_put(struct writer *w, const void *p, size_t n)
{
    w->crc = hnsw_crc32c(w->crc, p, n);
    const uint8_t *b = p;
    while (n && !w->failed) {
        size_t room = w->cap - w->len, k = n < room ? n : room;
        memcpy(w->buf + w->len, b, k);
        w->len += k;
        b += k;
        n -= k;
        if (w->len == w->cap)
            w_flush(w);
    }
}

static void w_u32(struct writer *w, uint32_t v)
{
    uint8_t b[4];
    put32(b, v);
    w_put(w, b, 4);
}

static int fsync_dir(const char *path)
{
    char *dir = strdup(path);
    if (!dir)
        return -1;
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = 0;
    else if (slash)
        *slash = 0;
    else
        strcpy(dir, ".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    free(dir);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int hnsw_save(const struct hnsw *h, const char *path, struct err *err)
{
    size_t plen = strlen(path) + 32;
    char *tmp = malloc(plen);
    if (!tmp)
        return err_set(err, ERR_NOMEM, "%s: no memory", path);
    snprintf(tmp, plen, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int rc = err_set(err, ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return rc;
    }
    struct writer w = {fd, malloc(1 << 20), 0, 1 << 20, 0, 0};
    if (!w.buf) {
        close(fd);
        unlink(tmp);
        free(tmp);
        return err_set(err, ERR_NOMEM, "%s: no memory", path);
    }
    uint64_t n = h->n;
    uint8_t hdr[HEADER_BYTES] = {0};
    w_put(&w, hdr, sizeof hdr); /* placeholder, rewritten at the end */
    w.crc = 0;
    size_t start = sizeof hdr;
    uint64_t payload = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint8_t b[8];
        put64(b, (uint64_t)h->labels[i]);
        w_put(&w, b, 8);
    }
    w_put(&w, h->levels, n);
    w_put(&w, h->flags, n);
    static const uint8_t zeros[4] = {0};
    size_t pad = (size_t)((4 - (n * 10) % 4) % 4);
    w_put(&w, zeros, pad);
    /* Vectors: little-endian f32 is the in-memory layout on x86-64. */
    w_put(&w, h->vecs, (size_t)n * h->dim * sizeof(float));
    for (uint64_t i = 0; i < n; i++)
        for (int l = 0; l <= h->levels[i]; l++) {
            const uint32_t *lst = links(h, (uint32_t)i, l);
            for (uint32_t j = 0; j <= lst[0]; j++)
                w_u32(&w, lst[j]);
        }
    w_flush(&w);
    off_t end = lseek(fd, 0, SEEK_CUR);
    payload = (uint64_t)end - start;
    memcpy(hdr, MAGIC, 8);
    put32(hdr + 8, VERSION);
    put32(hdr + 12, (uint32_t)h->dim);
    put32(hdr + 16, (uint32_t)h->m);
    put32(hdr + 20, (uint32_t)h->efc);
    put32(hdr + 24, (uint32_t)h->max_level);
    put32(hdr + 28, h->entry);
    put64(hdr + 32, n);
    put64(hdr + 40, h->n_deleted);
    put64(hdr + 48, (uint64_t)h->covered);
    put64(hdr + 56, h->tag);
    put64(hdr + 64, payload);
    put32(hdr + 72, w.crc);
    put32(hdr + 76, hnsw_crc32c(0, hdr, 76));
    int rc = 0;
    if (w.failed)
        rc = err_set(err, ERR_IO, "%s: write failed: %s", tmp, strerror(w.failed));
    else if (pwrite(fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr)
        rc = err_set(err, ERR_IO, "%s: header write failed: %s", tmp, strerror(errno));
    else if (fsync(fd))
        rc = err_set(err, ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    free(w.buf);
    if (close(fd) && !rc)
        rc = err_set(err, ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (!rc && rename(tmp, path))
        rc = err_set(err, ERR_IO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
    if (!rc && fsync_dir(path))
        rc = err_set(err, ERR_IO, "%s: cannot fsync its directory: %s", path, strerror(errno));
    if (rc)
        unlink(tmp);
    free(tmp);
    return rc;
}

/* ---- load ------------------------------------------------------------------ */

static int read_full(int fd, void *p, size_t n)
{
    uint8_t *b = p;
    while (n) {
        ssize_t k = read(fd, b, n > (1u << 30) ? (1u << 30) : n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return k < 0 ? -1 : -2;
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

#define CORRUPT(...) do { rc = err_set(err, ERR_CORRUPT, __VA_ARGS__); goto fail; } while (0)

int hnsw_load(struct hnsw **out, const char *path, const struct hnsw_params *pp,
              struct err *err)
{
    *out = NULL;
    struct hnsw *h = NULL;
    uint8_t *lbuf = NULL;
    int rc = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(err, errno == ENOENT ? ERR_NOT_FOUND : ERR_IO, "%s: cannot open: %s",
                       path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st)) {
        rc = err_set(err, ERR_IO, "%s: stat failed: %s", path, strerror(errno));
        goto fail;
    }
    uint64_t fsize = (uint64_t)st.st_size;
    uint8_t hdr[HEADER_BYTES];
    if (fsize < HEADER_BYTES)
        CORRUPT("%s: %llu bytes, shorter than the %d byte header", path,
                (unsigned long long)fsize, HEADER_BYTES);
    if (read_full(fd, hdr, sizeof hdr)) {
        rc = err_set(err, ERR_IO, "%s: cannot read the header", path);
        goto fail;
    }
    if (memcmp(hdr, MAGIC, 8))
        CORRUPT("%s: not an imgsearch HNSW file (bad magic)", path);
    if (get32(hdr + 76) != hnsw_crc32c(0, hdr, 76))
        CORRUPT("%s: header checksum mismatch", path);
    if (get32(hdr + 8) != VERSION)
        CORRUPT("%s: version %u, this build reads %d", path, get32(hdr + 8), VERSION);
    uint32_t dim = get32(hdr + 12), m = get32(hdr + 16), efc = get32(hdr + 20);
    uint32_t top = get32(hdr + 24), entry = get32(hdr + 28);
    uint64_t n = get64(hdr + 32), ndel = get64(hdr + 40), payload = get64(hdr + 64);
    if (dim < 1 || dim > HNSW_MAX_DIM || m < 2 || m > HNSW_MAX_M || efc < 1 ||
        efc > HNSW_MAX_EF || top > HNSW_MAX_LEVEL)
        CORRUPT("%s: header out of range (dim %u, m %u, ef_construction %u, top level %u)",
                path, dim, m, efc, top);
    if (payload != fsize - HEADER_BYTES)
        CORRUPT("%s: header says %llu payload bytes, file has %llu", path,
                (unsigned long long)payload, (unsigned long long)(fsize - HEADER_BYTES));
    if (n > HNSW_MAX_NODES || ndel > n)
        CORRUPT("%s: %llu nodes, %llu deleted: out of range", path, (unsigned long long)n,
                (unsigned long long)ndel);
    /* Every node needs at least: label, level, flags, vector, one count. */
    uint64_t pad = (4 - (n * 10) % 4) % 4;
    uint64_t fixed = n * 10 + pad + n * dim * 4;
    if (fixed + n * 4 > payload)
        CORRUPT("%s: %llu nodes of dimension %u need more than the %llu payload bytes", path,
                (unsigned long long)n, dim, (unsigned long long)payload);
    if ((n == 0) != (entry == NONE) || (n && entry >= n))
        CORRUPT("%s: entry point %u invalid for %llu nodes", path, entry,
                (unsigned long long)n);
    struct hnsw_params p;
    if (pp)
        p = *pp;
    else
        hnsw_params_default(&p);
    p.m = (int)m;
    p.ef_construction = (int)efc;
    rc = hnsw_new(&h, (int)dim, &p, err);
    if (rc)
        goto fail;
    if (n && grow(h, n)) {
        rc = err_set(err, ERR_NOMEM, "%s: no memory for %llu nodes", path, (unsigned long long)n);
        goto fail;
    }
    for (uint64_t i = 0; i < n; i++)
        h->upper[i] = NULL;
    uint32_t crc = 0;
    int r = 0;
    /* Labels arrive little-endian, which is the host order on x86-64. */
    r |= read_full(fd, h->labels, n * 8);
    crc = hnsw_crc32c(crc, h->labels, n * 8);
    r |= read_full(fd, h->levels, n);
    crc = hnsw_crc32c(crc, h->levels, n);
    r |= read_full(fd, h->flags, n);
    crc = hnsw_crc32c(crc, h->flags, n);
    uint8_t padb[4] = {0};
    r |= read_full(fd, padb, pad);
    crc = hnsw_crc32c(crc, padb, pad);
    r |= read_full(fd, h->vecs, n * dim * 4);
    crc = hnsw_crc32c(crc, h->vecs, n * dim * 4);
    size_t lbytes = payload - fixed;
    lbuf = malloc(lbytes ? lbytes : 1);
    if (!lbuf) {
        rc = err_set(err, ERR_NOMEM, "%s: no memory for %zu link bytes", path, lbytes);
        goto fail;
    }
    r |= read_full(fd, lbuf, lbytes);
    crc = hnsw_crc32c(crc, lbuf, lbytes);
    if (r) {
        rc = err_set(err, ERR_IO, "%s: read failed", path);
        goto fail;
    }
    if (crc != get32(hdr + 72))
        CORRUPT("%s: payload checksum mismatch", path);
    /* Structure: levels, flags, vectors, then parse the links. */
    uint32_t dels = 0, maxlv = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (h->levels[i] > top)
            CORRUPT("%s: node %llu has level %u above the top %u", path, (unsigned long long)i,
                    h->levels[i], top);
        if (h->levels[i] > maxlv)
            maxlv = h->levels[i];
        if (h->flags[i] & ~FLAG_DELETED)
            CORRUPT("%s: node %llu has unknown flags 0x%x", path, (unsigned long long)i,
                    h->flags[i]);
        dels += h->flags[i] & FLAG_DELETED;
    }
    if (n && maxlv != top)
        CORRUPT("%s: top level %u but the highest node level is %u", path, top, maxlv);
    if (dels != ndel)
        CORRUPT("%s: %u tombstones flagged, header says %llu", path, dels,
                (unsigned long long)ndel);
    size_t off = 0;
    for (uint64_t i = 0; i < n; i++) {
        int lv = h->levels[i];
        if (lv > 0) {
            h->upper[i] = calloc((size_t)lv * (1 + (size_t)m), sizeof(uint32_t));
            if (!h->upper[i]) {
                h->n = (uint32_t)i; /* so hnsw_free frees what exists */
                rc = err_set(err, ERR_NOMEM, "%s: no memory for links", path);
                goto fail;
            }
        }
        for (int l = 0; l <= lv; l++) {
            if (lbytes - off < 4) {
                h->n = (uint32_t)i + 1;
                rc = err_set(err, ERR_CORRUPT, "%s: links end early at node %llu", path,
                             (unsigned long long)i);
                goto fail;
            }
            uint32_t cnt = get32(lbuf + off);
            off += 4;
            if (cnt > (uint32_t)maxdeg(h, l)) {
                h->n = (uint32_t)i + 1;
                rc = err_set(err, ERR_CORRUPT, "%s: node %llu level %d: %u neighbours (max %d)",
                             path, (unsigned long long)i, l, cnt, maxdeg(h, l));
                goto fail;
            }
            if ((lbytes - off) / 4 < cnt) {
                h->n = (uint32_t)i + 1;
                rc = err_set(err, ERR_CORRUPT, "%s: links end early in node %llu level %d", path,
                             (unsigned long long)i, l);
                goto fail;
            }
            uint32_t *lst = links(h, (uint32_t)i, l);
            lst[0] = cnt;
            for (uint32_t j = 1; j <= cnt; j++, off += 4) {
                lst[j] = get32(lbuf + off);
                if (lst[j] >= n) {
                    h->n = (uint32_t)i + 1;
                    rc = err_set(err, ERR_CORRUPT, "%s: node %llu: neighbour %u out of range",
                                 path, (unsigned long long)i, lst[j]);
                    goto fail;
                }
            }
        }
    }
    h->n = (uint32_t)n;
    if (off != lbytes)
        CORRUPT("%s: %zu stray bytes after the links", path, lbytes - off);
    h->n_deleted = dels;
    h->entry = n ? entry : NONE;
    h->max_level = (int)top;
    h->covered = (int64_t)get64(hdr + 48);
    h->tag = get64(hdr + 56);
    for (uint64_t i = 0; i < n; i++) {
        const float *x = vec_of(h, (uint32_t)i);
        double ss = 0;
        for (uint32_t k = 0; k < dim; k++)
            ss += (double)x[k] * x[k];
        if (!(fabs(ss - 1) < 1e-3)) /* also catches NaN and infinities */
            CORRUPT("%s: node %llu: vector norm^2 is %g, not 1", path, (unsigned long long)i, ss);
        set_codes(h, (uint32_t)i);
        if (is_del(h, (uint32_t)i))
            continue;
        int put = map_put(h, h->labels[i], (uint32_t)i);
        if (put < 0) {
            rc = err_set(err, ERR_NOMEM, "%s: no memory for the label map", path);
            goto fail;
        }
        if (put > 0)
            CORRUPT("%s: label %lld is live on two nodes", path, (long long)h->labels[i]);
    }
    rc = hnsw_validate(h, err);
    if (rc) {
        err_prefix(err, "%s", path);
        goto fail;
    }
    /* Older builds could leave nodes without incoming links (copies of one
     * vector): link them now, the file stays as it is until the next save. */
    if (repair_reachability(h) < 0) {
        rc = err_set(err, ERR_NOMEM, "%s: no memory to check the graph's reachability", path);
        goto fail;
    }
    free(lbuf);
    close(fd);
    *out = h;
    return 0;
fail:
    free(lbuf);
    hnsw_free(h);
    close(fd);
    return rc;
}
