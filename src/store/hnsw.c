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
 * Files: this one holds the label map, the scratch pool, search and the
 * lifecycle; hnsw_build.c the writers (insert, delete, compaction and the
 * reachability repair that design points 8 and 9 describe); hnsw_file.c
 * validation and the file format (save, load by section). hnsw_int.h is
 * the node layout they share, with the hnsw__ functions one file lends
 * another.
 */
#include "store/hnsw_int.h"

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
void hnsw__set_codes(struct hnsw *h, uint32_t i)
{
    h->scales[i] = encode(h, vec_of(h, i), h->codes + (size_t)i * h->cstride);
    h->selfs[i] = nscore(h, i, i);
}


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

int hnsw__random_level(struct hnsw *h)
{
    double u = ((double)(splitmix(&h->rng) >> 11) + 1.0) / 9007199254740993.0; /* (0, 1] */
    double l = -log(u) * h->ml;
    return l >= HNSW_MAX_LEVEL ? HNSW_MAX_LEVEL : (int)l;
}

void *hnsw__xalloc_aligned(size_t bytes)
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

uint32_t hnsw__map_get(const struct hnsw *h, int64_t label)
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
int hnsw__map_put(struct hnsw *h, int64_t label, uint32_t node)
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
void hnsw__map_del(struct hnsw *h, int64_t label)
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

void hnsw__map_clear(struct hnsw *h)
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
struct scratch *hnsw__scratch_get(struct hnsw *h, size_t ef)
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
        s->qv = hnsw__xalloc_aligned((size_t)h->dim * sizeof(float));
        s->qc = hnsw__xalloc_aligned(h->cstride);
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

void hnsw__scratch_put(struct hnsw *h, struct scratch *s)
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

int hnsw__cand_desc(const void *a, const void *b)
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
size_t hnsw__search_layer(const struct hnsw *h, struct scratch *s,
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
uint32_t hnsw__descend(const struct hnsw *h, const struct query *q, int level,
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
    qsort(t, n, sizeof *t, hnsw__cand_desc);
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
    struct scratch *s = hnsw__scratch_get(hm, efz);
    if (!s)
        return err_set(err, ERR_NOMEM, "hnsw: no memory for a search");
    struct query qq = {NULL, NULL, 0};
    int rc = prepare_query(h, s, q, &qq, err);
    if (rc) {
        hnsw__scratch_put(hm, s);
        return rc;
    }
    float eps;
    uint32_t ep = hnsw__descend(h, &qq, 0, &eps);
    struct layer_opts o = {accept, ctx, 0, 0};
    if (accept) /* past this many visits an exact scan is cheaper */
        o.budget = h->n / 8 + 20 * efz;
    struct cand e0 = {eps, ep};
    size_t nr = hnsw__search_layer(h, s, &qq, &e0, 1, efz, 0, &o);
    size_t want = k < live ? k : live;
    if (o.over || nr < want) {
        rc = exact_scan(h, qq.v, k, accept, ctx, out, n_out, err);
        hnsw__scratch_put(hm, s);
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
    hnsw__scratch_put(hm, s);
    return 0;
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

int hnsw_contains(const struct hnsw *h, int64_t label) { return hnsw__map_get(h, label) != NONE; }

int hnsw_get(const struct hnsw *h, int64_t label, float *out)
{
    uint32_t i = hnsw__map_get(h, label);
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
