/* hnsw_build.c - the writers of the HNSW graph: insert, delete, compaction.
 *
 * The design points of hnsw.c apply; those kept here:
 *  1. Neighbours are chosen with the paper's heuristic (select_neighbors),
 *     with at most half of a list given to copies of its own node (8).
 *  2. Every insert ends with an incoming link on each level and a parent
 *     in the layer-0 tree, whose pinned links re-selection never drops (9).
 *  3. Deletes are tombstones; compaction re-selects every list that points
 *     at one, from its live members and the live nodes reached through
 *     tombstones (chains of them, for deleted groups of copies), then
 *     renumbers the live nodes densely in place and repairs reachability.
 *
 * Reference: Malkov & Yashunin (2016/2018), algorithms 1 and 4.
 */
#include "store/hnsw_int.h"

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
    qsort(tmp, nc, sizeof *tmp, hnsw__cand_desc);
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
void hnsw__walk0(const struct hnsw *h, uint32_t from, uint8_t *seen, uint32_t *queue,
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
    size_t nr = hnsw__search_layer(h, s, &q, &e0, 1, (size_t)h->efc, 0, &o);
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
long hnsw__repair_reachability(struct hnsw *h)
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
    hnsw__walk0(h, h->entry, seen, queue, h->parent);
    long fixed = 0;
    struct scratch *s = NULL;
    for (uint32_t i = 0; i < n && fixed >= 0; i++) {
        if (seen[i] || is_del(h, i))
            continue;
        if (!s && !(s = hnsw__scratch_get(h, (size_t)h->efc))) {
            fixed = -1;
            break;
        }
        uint32_t b;
        if (best_reachable(h, s, i, &b) == 0) {
            force_link(h, b, i, 0);
            h->parent[i] = b;
            hnsw__walk0(h, i, seen, queue, h->parent);
            fixed++;
        }
    }
    if (s)
        hnsw__scratch_put(h, s);
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
    uint32_t ep = hnsw__descend(h, &q, top, &eps);
    /* As in the paper, all of a level's results seed the next level down. */
    size_t nep = 1;
    s->eps[0] = (struct cand){eps, ep};
    uint32_t sel[HNSW_MAX_M];
    float sel_s[HNSW_MAX_M];
    for (int l = top; l >= 0; l--) {
        struct layer_opts o = {NULL, NULL, 0, 0};
        size_t nr = hnsw__search_layer(h, s, &q, s->eps, nep, (size_t)h->efc, l, &o);
        struct cand *t = s->tmp;
        memcpy(t, s->rq, nr * sizeof *t);
        qsort(t, nr, sizeof *t, hnsw__cand_desc);
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

int hnsw__grow(struct hnsw *h, size_t need)
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
    float *v = hnsw__xalloc_aligned(nc * d * sizeof *v);
    int8_t *c = hnsw__xalloc_aligned(nc * h->cstride);
    uint32_t *l0 = hnsw__xalloc_aligned(nc * (1 + (size_t)h->m0) * sizeof *l0);
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
    if (hnsw__grow(h, (size_t)h->n + 1))
        return -1;
    uint32_t i = h->n;
    h->upper[i] = NULL;
    if (lv > 0) {
        h->upper[i] = calloc((size_t)lv * (1 + (size_t)h->m), sizeof(uint32_t));
        if (!h->upper[i])
            return -1;
    }
    if (hnsw__map_put(h, label, i) < 0) {
        free(h->upper[i]);
        h->upper[i] = NULL;
        return -1;
    }
    memcpy(h->vecs + (size_t)i * h->dim, v, (size_t)h->dim * sizeof *v);
    hnsw__set_codes(h, i);
    h->labels[i] = label;
    h->levels[i] = (uint8_t)lv;
    h->flags[i] = 0;
    h->parent[i] = NONE;
    links(h, i, 0)[0] = 0;
    h->n++;
    return 0;
}

void hnsw__tombstone(struct hnsw *h, uint32_t i)
{
    if (is_del(h, i))
        return;
    h->flags[i] |= FLAG_DELETED;
    h->n_deleted++;
    hnsw__map_del(h, h->labels[i]);
}

static int maybe_compact(struct hnsw *h, struct err *err)
{
    if (h->n_deleted && (double)h->n_deleted > h->max_del * (double)h->n)
        return hnsw_compact(h, err);
    return 0;
}

int hnsw_insert(struct hnsw *h, int64_t label, const float *v, struct err *err)
{
    struct scratch *s = hnsw__scratch_get(h, (size_t)h->efc);
    if (!s)
        return err_set(err, ERR_NOMEM, "hnsw: no memory to insert item %lld", (long long)label);
    float *nv = s->qv;
    memcpy(nv, v, (size_t)h->dim * sizeof *nv);
    if (vec_normalize(nv, (size_t)h->dim)) {
        hnsw__scratch_put(h, s);
        return err_set(err, ERR_INVALID_ARGUMENT,
                       "hnsw: item %lld: the vector is zero or not finite", (long long)label);
    }
    uint32_t old = hnsw__map_get(h, label);
    if (old != NONE)
        hnsw__tombstone(h, old);
    int lv = hnsw__random_level(h);
    if (add_node(h, label, nv, lv)) {
        hnsw__scratch_put(h, s);
        return err_set(err, ERR_NOMEM, "hnsw: no memory to insert item %lld", (long long)label);
    }
    uint32_t i = h->n - 1;
    if (h->entry == NONE) {
        h->entry = i;
        h->max_level = lv;
    } else {
        /* The scratch's stamps must cover the node just added. */
        if (s->mark_cap < h->n) {
            hnsw__scratch_put(h, s);
            s = hnsw__scratch_get(h, (size_t)h->efc);
            if (!s) {
                hnsw__tombstone(h, i);
                return err_set(err, ERR_NOMEM, "hnsw: no memory to insert item %lld",
                               (long long)label);
            }
        }
        connect_node(h, s, i, lv);
    }
    hnsw__scratch_put(h, s);
    return maybe_compact(h, err);
}

int hnsw_insert_batch(struct hnsw *h, const int64_t *labels, const float *v,
                      size_t n, int threads, struct err *err)
{
    (void)threads; /* single-threaded build: see the report in the bench */
    if (hnsw__grow(h, (size_t)h->n + n))
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
    uint32_t i = hnsw__map_get(h, label);
    if (i == NONE)
        return -ERR_NOT_FOUND;
    hnsw__tombstone(h, i);
    return maybe_compact(h, NULL);
}

/* ---- compaction ---------------------------------------------------------- */

/* Working memory of a compaction. */
struct compact_buf {
    uint32_t *stamp; /* (n) visit stamps of the list being repaired */
    uint32_t *newid; /* (n) dense id of each live node, NONE for tombstones */
    struct cand *t;  /* (tcap) live candidates of one list */
    uint32_t *tq;    /* (tcap) tombstones to walk through */
    uint32_t *sel;   /* (m0 + 1) the re-selected list */
    size_t tcap;
    uint32_t ep;     /* current stamp */
};

/* Re-selects list l of node u, which points at tombstones, from its live
 * members and the live nodes reached through tombstones, several in a row
 * where needed (deleting all but one of a group of copies leaves chains of
 * them). */
static void refill_list(struct hnsw *h, uint32_t u, int l, struct compact_buf *b)
{
    uint32_t *lst = links(h, u, l);
    uint32_t cnt = lst[0];
    uint32_t ep = ++b->ep;
    b->stamp[u] = ep;
    size_t nc = 0, nq = 0, tcap = b->tcap;
    for (uint32_t j = 1; j <= cnt; j++) {
        uint32_t x = lst[j];
        if (b->stamp[x] == ep)
            continue;
        b->stamp[x] = ep;
        if (!is_del(h, x))
            b->t[nc++] = (struct cand){nscore(h, u, x), x};
        else
            b->tq[nq++] = x;
    }
    for (size_t qi = 0, direct = nq; qi < nq && nc < tcap; qi++) {
        /* Past the list's own tombstones, walk on while the list cannot be
         * refilled, and through copies of u (deleted copies lead to the
         * live ones): normal deletes stop after the tombstones' own lists. */
        if (qi >= direct && nc >= (size_t)maxdeg(h, l) && !is_dup(h, u, nscore(h, u, b->tq[qi])))
            continue;
        const uint32_t *dl = links(h, b->tq[qi], l);
        for (uint32_t k = 1; k <= dl[0] && nc < tcap; k++) {
            uint32_t y = dl[k];
            if (b->stamp[y] == ep)
                continue;
            b->stamp[y] = ep;
            if (!is_del(h, y))
                b->t[nc++] = (struct cand){nscore(h, u, y), y};
            else if (nq < tcap)
                b->tq[nq++] = y;
        }
    }
    qsort(b->t, nc, sizeof *b->t, hnsw__cand_desc);
    uint32_t k = select_neighbors(h, u, b->t, nc, maxdeg(h, l), b->sel, 0);
    memcpy(lst + 1, b->sel, k * sizeof *b->sel);
    lst[0] = k;
}

/* Step 1: every live list that points at a tombstone is re-selected. */
static void repair_lists(struct hnsw *h, struct compact_buf *b)
{
    for (uint32_t u = 0; u < h->n; u++) {
        if (is_del(h, u))
            continue;
        for (int l = 0; l <= h->levels[u]; l++) {
            const uint32_t *lst = links(h, u, l);
            uint32_t hasdel = 0;
            for (uint32_t j = 1; j <= lst[0]; j++)
                hasdel |= is_del(h, lst[j]);
            if (hasdel)
                refill_list(h, u, l, b);
        }
    }
}

/* Step 2: live nodes renumbered densely (new id <= old id, so rows move
 * forward in place), tombstones' blocks freed, links rewritten; the entry
 * point kept if live, else the live node with the highest level. */
static void renumber(struct hnsw *h, uint32_t *newid)
{
    uint32_t n = h->n, live = 0, best = NONE;
    for (uint32_t u = 0; u < n; u++)
        newid[u] = is_del(h, u) ? NONE : live++;
    for (uint32_t u = 0; u < n; u++) {
        if (newid[u] == NONE) {
            free(h->upper[u]);
            h->upper[u] = NULL;
        } else if (best == NONE || h->levels[u] > h->levels[best]) {
            best = u;
        }
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
}

int hnsw_compact(struct hnsw *h, struct err *err)
{
    if (!h->n_deleted)
        return 0;
    uint32_t n = h->n;
    int rc = 0;
    struct compact_buf b = {0};
    b.tcap = (size_t)(h->m0 + 1) * (h->m0 + 1);
    b.stamp = calloc(n, sizeof *b.stamp);
    b.newid = calloc(n, sizeof *b.newid);
    b.t = malloc(b.tcap * sizeof *b.t);
    b.tq = malloc(b.tcap * sizeof *b.tq);
    b.sel = malloc(((size_t)h->m0 + 1) * sizeof *b.sel);
    if (!b.stamp || !b.newid || !b.t || !b.tq || !b.sel) {
        rc = err_set(err, ERR_NOMEM, "hnsw: no memory to compact %u nodes", n);
        goto fail;
    }
    repair_lists(h, &b);
    renumber(h, b.newid);
    hnsw__map_clear(h);
    for (uint32_t v = 0; v < h->n; v++)
        if (hnsw__map_put(h, h->labels[v], v) < 0) {
            rc = err_set(err, ERR_NOMEM, "hnsw: no memory for the label map");
            goto fail;
        }
    /* 3. The repaired lists may leave a node no list points at. */
    if (hnsw__repair_reachability(h) < 0)
        rc = err_set(err, ERR_NOMEM, "hnsw: no memory to check the graph's reachability");
fail:
    free(b.stamp);
    free(b.newid);
    free(b.t);
    free(b.tq);
    free(b.sel);
    return rc;
}
