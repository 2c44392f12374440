/* test_hnsw.c - the HNSW index: recall against brute force, the graph
 * validator, tombstones and compaction, filters, save/load, corrupt files. */
#include <stdint.h>
#include <unistd.h>

#include "store/hnsw.h"
#include "store/vec.h"
#include "test.h"

#define N 5000
#define D 64
#define NQ 200

static uint64_t rs = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return rs;
}
static double gauss(void)
{
    double u = ((double)(rnd() >> 11) + 0.5) / 9007199254740992.0;
    double v = ((double)(rnd() >> 11) + 0.5) / 9007199254740992.0;
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

/* n clustered vectors: 50 centres, points = centre + 0.5 * gaussian noise. */
static float *clustered(size_t n, size_t d, uint64_t seed)
{
    rs = seed;
    float *c = malloc(50 * d * sizeof *c), *v = malloc(n * d * sizeof *v);
    if (!c || !v) {
        free(c);
        free(v);
        return NULL;
    }
    for (size_t i = 0; i < 50 * d; i++)
        c[i] = (float)gauss();
    for (size_t i = 0; i < n; i++) {
        size_t j = rnd() % 50;
        for (size_t k = 0; k < d; k++)
            v[i * d + k] = c[j * d + k] + (float)(0.5 * gauss());
        vec_normalize(v + i * d, d);
    }
    free(c);
    return v;
}

static struct hnsw *build(const float *v, size_t n, int quant, double maxdel)
{
    struct hnsw_params p;
    hnsw_params_default(&p);
    p.quantize = quant;
    p.max_deleted_fraction = maxdel;
    struct hnsw *h = NULL;
    struct err e;
    if (hnsw_new(&h, D, &p, &e))
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (hnsw_insert(h, (int64_t)i * 3 + 1, v + i * D, &e)) {
            hnsw_free(h);
            return NULL;
        }
    return h;
}

/* label of row i is 3i+1 (not the row: labels are the caller's ids). */
static int64_t lab(size_t i) { return (int64_t)i * 3 + 1; }

struct filt {
    int mod;       /* accept labels with (label / 3) % mod == rem */
    int rem;
    const uint8_t *dead; /* rows deleted, or NULL */
};

static int accept_fn(int64_t label, void *ctx)
{
    const struct filt *f = ctx;
    return ((label - 1) / 3) % f->mod == f->rem;
}

/* Exact top-k (reference scores) over accepted, live rows. */
static size_t brute(const float *v, size_t n, const float *q, size_t k, const uint8_t *dead,
                    const struct filt *f, int64_t *out)
{
    struct vec_hit *items = malloc(k * sizeof *items);
    struct vec_heap hp = {items, 0, k};
    float qn[D];
    memcpy(qn, q, sizeof qn);
    vec_normalize(qn, D);
    for (size_t i = 0; i < n; i++) {
        if ((dead && dead[i]) || (f && !accept_fn(lab(i), (void *)f)))
            continue;
        vec_heap_push(&hp, (int64_t)i, vec_dot_ref(qn, v + i * D, D));
    }
    vec_heap_sort(&hp);
    for (size_t i = 0; i < hp.n; i++)
        out[i] = lab((size_t)items[i].row);
    size_t got = hp.n;
    free(items);
    return got;
}

static double recall(const struct hnsw *h, const float *v, size_t n, const float *qs,
                     const uint8_t *dead, int ef)
{
    size_t found = 0, total = 0;
    for (size_t q = 0; q < NQ; q++) {
        struct hnsw_hit hits[10];
        int64_t truth[10];
        size_t nh = 0, nt = brute(v, n, qs + q * D, 10, dead, NULL, truth);
        struct err e;
        if (hnsw_search(h, qs + q * D, 10, ef, NULL, NULL, hits, &nh, &e))
            return -1;
        for (size_t i = 0; i < nh; i++)
            for (size_t j = 0; j < nt; j++)
                found += hits[i].label == truth[j];
        total += nt;
    }
    return (double)found / (double)total;
}

TEST(recall_float_and_int8)
{
    float *v = clustered(N, D, 1), *qs = clustered(NQ, D, 1);
    REQUIRE(v && qs);
    /* queries: same centres (same seed), fresh noise */
    rs = 77;
    for (size_t i = 0; i < NQ * D; i++)
        qs[i] += (float)(0.05 * gauss());
    for (int quant = 0; quant <= 1; quant++) {
        struct hnsw *h = build(v, N, quant, 0.2);
        REQUIRE(h);
        struct err e;
        CHECKF(hnsw_validate(h, &e) == 0, "%s", e.msg);
        CHECK_INT_EQ(hnsw_unreachable(h), 0);
        CHECK_INT_EQ(hnsw_count(h), N);
        double r = recall(h, v, N, qs, NULL, 64);
        CHECKF(r >= 0.95, "quantize=%d recall@10 %.4f", quant, r);
        double r1 = recall(h, v, N, qs, NULL, 10);
        CHECKF(r1 <= r + 1e-9, "ef=10 recall %.4f above ef=64 %.4f", r1, r);
        /* scores are exact cosines, best first */
        struct hnsw_hit hits[10];
        size_t nh;
        REQUIRE(hnsw_search(h, qs, 10, 64, NULL, NULL, hits, &nh, &e) == 0 && nh == 10);
        float qn[D];
        memcpy(qn, qs, sizeof qn);
        vec_normalize(qn, D);
        for (size_t i = 0; i < nh; i++) {
            size_t row = (size_t)(hits[i].label - 1) / 3;
            CHECK(fabsf(hits[i].score - vec_dot_ref(qn, v + row * D, D)) < 1e-5f);
            if (i)
                CHECK(hits[i].score <= hits[i - 1].score);
        }
        hnsw_free(h);
    }
    free(v);
    free(qs);
}

TEST(deletes_never_returned)
{
    float *v = clustered(N, D, 2);
    REQUIRE(v);
    struct hnsw *h = build(v, N, 1, 0.9); /* no compaction here */
    REQUIRE(h);
    uint8_t *dead = calloc(N, 1);
    for (size_t i = 0; i < N; i += 7) {
        CHECK_INT_EQ(hnsw_delete(h, lab(i)), 0);
        dead[i] = 1;
    }
    CHECK_INT_EQ(hnsw_delete(h, lab(0)), -ERR_NOT_FOUND);
    CHECK_INT_EQ(hnsw_delete(h, 2), -ERR_NOT_FOUND);
    CHECK_INT_EQ(hnsw_count(h), N - (N + 6) / 7);
    CHECK_INT_EQ(hnsw_deleted(h), (N + 6) / 7);
    CHECK(!hnsw_contains(h, lab(7)) && hnsw_contains(h, lab(8)));
    struct err e;
    CHECKF(hnsw_validate(h, &e) == 0, "%s", e.msg);
    size_t bad = 0;
    for (size_t q = 0; q < N; q += 25) { /* query with the deleted vectors themselves */
        struct hnsw_hit hits[10];
        size_t nh;
        REQUIRE(hnsw_search(h, v + q * D, 10, 40, NULL, NULL, hits, &nh, &e) == 0);
        CHECK_INT_EQ(nh, 10);
        for (size_t i = 0; i < nh; i++)
            bad += dead[(hits[i].label - 1) / 3];
    }
    CHECK_INT_EQ(bad, 0);
    double r = recall(h, v, N, v + 13 * D, dead, 64);
    CHECKF(r >= 0.95, "recall with tombstones %.4f", r);
    /* Compaction removes them and keeps the results. */
    CHECK_INT_EQ(hnsw_compact(h, &e), 0);
    CHECK_INT_EQ(hnsw_deleted(h), 0);
    CHECK_INT_EQ(hnsw_nodes(h), N - (N + 6) / 7);
    CHECKF(hnsw_validate(h, &e) == 0, "%s", e.msg);
    CHECK_INT_EQ(hnsw_unreachable(h), 0);
    double r2 = recall(h, v, N, v + 13 * D, dead, 64);
    CHECKF(r2 >= 0.95, "recall after compaction %.4f", r2);
    /* A re-inserted label comes back; replacing keeps one live copy. */
    CHECK_INT_EQ(hnsw_insert(h, lab(7), v + 7 * D, &e), 0);
    CHECK_INT_EQ(hnsw_insert(h, lab(8), v + 9 * D, &e), 0);
    CHECK_INT_EQ(hnsw_count(h), N - (N + 6) / 7 + 1);
    float got[D];
    CHECK_INT_EQ(hnsw_get(h, lab(8), got), 0);
    CHECK(fabsf(got[5] - v[9 * D + 5]) < 1e-6f);
    CHECKF(hnsw_validate(h, &e) == 0, "%s", e.msg);
    free(dead);
    hnsw_free(h);
    free(v);
}

TEST(auto_compaction_and_delete_all)
{
    float *v = clustered(1000, D, 3);
    REQUIRE(v);
    struct hnsw *h = build(v, 1000, 1, 0.1);
    REQUIRE(h);
    struct err e;
    for (size_t i = 0; i < 150; i++)
        REQUIRE(hnsw_delete(h, lab(i)) == 0);
    /* 101 tombstones crossed 10% of 1000: compacted then, 49 since. */
    CHECK_INT_EQ(hnsw_deleted(h), 49);
    CHECK_INT_EQ(hnsw_nodes(h), 899 + 0);
    CHECK_INT_EQ(hnsw_count(h), 850);
    CHECKF(hnsw_validate(h, &e) == 0, "%s", e.msg);
    for (size_t i = 150; i < 1000; i++)
        REQUIRE(hnsw_delete(h, lab(i)) == 0);
    CHECK_INT_EQ(hnsw_count(h), 0);
    CHECKF(hnsw_validate(h, &e) == 0, "%s", e.msg);
    struct hnsw_hit hits[5];
    size_t nh = 9;
    CHECK_INT_EQ(hnsw_search(h, v, 5, 0, NULL, NULL, hits, &nh, &e), 0);
    CHECK_INT_EQ(nh, 0);
    CHECK_INT_EQ(hnsw_insert(h, 42, v + D, &e), 0);
    CHECK_INT_EQ(hnsw_search(h, v, 5, 0, NULL, NULL, hits, &nh, &e), 0);
    CHECK(nh == 1 && hits[0].label == 42);
    CHECKF(hnsw_validate(h, &e) == 0, "%s", e.msg);
    hnsw_free(h);
    free(v);
}

TEST(filter_returns_k)
{
    float *v = clustered(N, D, 4);
    REQUIRE(v);
    struct hnsw *h = build(v, N, 1, 0.2);
    REQUIRE(h);
    struct err e;
    int mods[] = {2, 10, 100, 1250};
    for (size_t t = 0; t < sizeof mods / sizeof mods[0]; t++) {
        struct filt f = {mods[t], 1, NULL};
        size_t accepted = (N - 1 + mods[t] - 1) / mods[t];
        size_t found = 0, total = 0;
        for (size_t q = 0; q < 50; q++) {
            struct hnsw_hit hits[10];
            int64_t truth[10];
            size_t nh;
            REQUIRE(hnsw_search(h, v + q * 97 * D, 10, 40, accept_fn, &f, hits, &nh, &e) == 0);
            size_t want = accepted < 10 ? accepted : 10;
            CHECKF(nh == want, "1/%d accepted: %zu results, want %zu", mods[t], nh, want);
            size_t nt = brute(v, N, v + q * 97 * D, 10, NULL, &f, truth);
            for (size_t i = 0; i < nh; i++) {
                CHECK(accept_fn(hits[i].label, &f));
                for (size_t j = 0; j < nt; j++)
                    found += hits[i].label == truth[j];
            }
            total += nt;
        }
        CHECKF((double)found / (double)total >= 0.95, "1/%d: filtered recall %.3f", mods[t],
               (double)found / (double)total);
    }
    hnsw_free(h);
    free(v);
}

static char *tmp_path(const char *name)
{
    static char buf[256];
    snprintf(buf, sizeof buf, "/tmp/test_hnsw.%d.%s", (int)getpid(), name);
    return buf;
}

static int same_results(const struct hnsw *a, const struct hnsw *b, const float *qs, size_t nq)
{
    struct err e;
    for (size_t q = 0; q < nq; q++) {
        struct hnsw_hit x[10], y[10];
        size_t nx, ny;
        if (hnsw_search(a, qs + q * D, 10, 50, NULL, NULL, x, &nx, &e) ||
            hnsw_search(b, qs + q * D, 10, 50, NULL, NULL, y, &ny, &e) || nx != ny)
            return 0;
        for (size_t i = 0; i < nx; i++)
            if (x[i].label != y[i].label || x[i].score != y[i].score)
                return 0;
    }
    return 1;
}

TEST(save_load_round_trip)
{
    float *v = clustered(2000, D, 5);
    REQUIRE(v);
    struct hnsw *h = build(v, 2000, 1, 0.5);
    REQUIRE(h);
    for (size_t i = 0; i < 2000; i += 11)
        hnsw_delete(h, lab(i));
    hnsw_set_covered(h, 123456789012345ll);
    hnsw_set_tag(h, 0xfeedfacecafebeefull);
    struct err e;
    const char *p = tmp_path("rt");
    REQUIRE(hnsw_save(h, p, &e) == 0);
    struct hnsw *g = NULL;
    REQUIRE(hnsw_load(&g, p, NULL, &e) == 0);
    CHECK_INT_EQ(hnsw_count(g), hnsw_count(h));
    CHECK_INT_EQ(hnsw_nodes(g), hnsw_nodes(h));
    CHECK_INT_EQ(hnsw_deleted(g), hnsw_deleted(h));
    CHECK_INT_EQ(hnsw_covered(g), 123456789012345ll);
    CHECK(hnsw_tag(g) == 0xfeedfacecafebeefull);
    CHECK(same_results(h, g, v, 100));
    CHECKF(hnsw_validate(g, &e) == 0, "%s", e.msg);
    /* a second save of the loaded index is byte-identical */
    const char *p2 = tmp_path("rt2");
    REQUIRE(hnsw_save(g, p2, &e) == 0);
    size_t l1, l2;
    char *b1 = test_read_file(p, &l1), *b2 = test_read_file(p2, &l2);
    CHECK(b1 && b2 && l1 == l2 && memcmp(b1, b2, l1) == 0);
    free(b1);
    free(b2);
    unlink(p);
    unlink(p2);
    struct hnsw *none = (struct hnsw *)1;
    CHECK_INT_EQ(hnsw_load(&none, tmp_path("none"), NULL, &e), -ERR_NOT_FOUND);
    CHECK(none == NULL);
    /* an empty index round-trips too */
    struct hnsw *z = NULL, *z2 = NULL;
    REQUIRE(hnsw_new(&z, 7, NULL, &e) == 0);
    REQUIRE(hnsw_save(z, p, &e) == 0);
    CHECK_INT_EQ(hnsw_load(&z2, p, NULL, &e), 0);
    CHECK(z2 && hnsw_count(z2) == 0 && hnsw_dim(z2) == 7);
    hnsw_free(z);
    hnsw_free(z2);
    unlink(p);
    hnsw_free(g);
    hnsw_free(h);
    free(v);
}

static void put32(uint8_t *p, uint32_t x)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(x >> (8 * i));
}

/* Rewrites both checksums so structural checks (not the CRC) must catch
 * the damage. */
static void fix_crcs(uint8_t *b, size_t len)
{
    put32(b + 72, hnsw_crc32c(0, b + 80, len - 80));
    put32(b + 76, hnsw_crc32c(0, b, 76));
}

static int load_bytes(const uint8_t *b, size_t len, struct err *e)
{
    const char *p = tmp_path("bad");
    FILE *f = fopen(p, "wb");
    if (!f)
        return 999;
    fwrite(b, 1, len, f);
    fclose(f);
    struct hnsw *h = NULL;
    int rc = hnsw_load(&h, p, NULL, e);
    hnsw_free(h);
    unlink(p);
    return rc;
}

TEST(corrupt_files_rejected)
{
    float *v = clustered(300, D, 6);
    REQUIRE(v);
    struct hnsw_params pp;
    hnsw_params_default(&pp);
    pp.m = 4; /* small lists: levels > 0 are frequent, all paths get hit */
    struct hnsw *h = NULL;
    struct err e;
    REQUIRE(hnsw_new(&h, D, &pp, &e) == 0);
    for (size_t i = 0; i < 300; i++)
        REQUIRE(hnsw_insert(h, lab(i), v + i * D, &e) == 0);
    hnsw_delete(h, lab(5));
    const char *p = tmp_path("good");
    REQUIRE(hnsw_save(h, p, &e) == 0);
    size_t len;
    uint8_t *good = (uint8_t *)test_read_file(p, &len);
    unlink(p);
    REQUIRE(good && len > 300 * (8 + 2 + D * 4) + 80);
    uint8_t *b = malloc(len);
    REQUIRE(b);
    CHECK_INT_EQ(load_bytes(good, len, &e), 0);
    /* truncations */
    size_t cuts[] = {0, 1, 8, 40, 79, 80, 81, 80 + 300 * 8, len / 2, len - 4, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        int rc = load_bytes(good, cuts[i], &e);
        CHECKF(rc == -ERR_CORRUPT, "cut at %zu: rc %d (%s)", cuts[i], rc, e.msg);
    }
    /* a byte flipped anywhere: header, labels, levels, flags, vectors, links */
    size_t flips[] = {0, 9, 13, 30, 33, 64, 72, 77, 80, 80 + 300 * 8 + 3, 80 + 300 * 9 + 5,
                      80 + 300 * 10 + 100, len - 200, len - 1};
    for (size_t i = 0; i < sizeof flips / sizeof flips[0]; i++) {
        memcpy(b, good, len);
        b[flips[i]] ^= 0x40;
        int rc = load_bytes(b, len, &e);
        CHECKF(rc == -ERR_CORRUPT, "flip at %zu: rc %d (%s)", flips[i], rc, e.msg);
    }
    /* extra bytes at the end */
    uint8_t *longer = malloc(len + 8);
    memcpy(longer, good, len);
    memset(longer + len, 0, 8);
    CHECK_INT_EQ(load_bytes(longer, len + 8, &e), -ERR_CORRUPT);
    free(longer);
    /* structural damage with valid checksums */
    size_t links = 80 + 300 * 10 + 2 + (size_t)300 * D * 4; /* 3000 % 4 == 0: no pad... */
    links = 80 + 300 * 8 + 300 + 300 + ((4 - (300 * 10) % 4) % 4) + (size_t)300 * D * 4;
    struct {
        const char *what;
        size_t off;
        uint32_t val;
    } cases[] = {
        {"neighbour out of range", links + 4, 300},
        {"huge neighbour", links + 4, 0xFFFFFFF0u},
        {"self loop", links + 4, 0},
        {"count above max", links, 9},
        {"entry out of range", 28, 300},
        {"top level too high", 24, 40},
        {"n too large", 32, 0x7fffffff},
        {"deleted count", 40, 7},
        {"dim zero", 12, 0},
        {"m too large", 16, 100000},
        {"payload size", 64, 12},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(b, good, len);
        put32(b + cases[i].off, cases[i].val);
        fix_crcs(b, len);
        int rc = load_bytes(b, len, &e);
        CHECKF(rc == -ERR_CORRUPT, "%s: rc %d (%s)", cases[i].what, rc, e.msg);
    }
    /* the links end early (payload size and checksums made consistent) */
    memcpy(b, good, len);
    for (int i = 0; i < 8; i++)
        b[64 + i] = (uint8_t)((len - 4 - 80) >> (8 * i));
    fix_crcs(b, len - 4);
    CHECK_INT_EQ(load_bytes(b, len - 4, &e), -ERR_CORRUPT);
    CHECK_STR_CONTAINS(e.msg, "links");
    /* the first node's level raised: its upper lists would be read from the
     * following node's bytes; and a level byte above the top */
    memcpy(b, good, len);
    b[80 + 300 * 8] = 31;
    fix_crcs(b, len);
    CHECK_INT_EQ(load_bytes(b, len, &e), -ERR_CORRUPT);
    /* a flag bit that means nothing */
    memcpy(b, good, len);
    b[80 + 300 * 9 + 1] = 2;
    fix_crcs(b, len);
    CHECK_INT_EQ(load_bytes(b, len, &e), -ERR_CORRUPT);
    CHECK_STR_CONTAINS(e.msg, "flags");
    /* two live nodes with one label */
    memcpy(b, good, len);
    memcpy(b + 80 + 8, b + 80, 8);
    fix_crcs(b, len);
    CHECK_INT_EQ(load_bytes(b, len, &e), -ERR_CORRUPT);
    CHECK_STR_CONTAINS(e.msg, "label");
    /* a NaN vector */
    memcpy(b, good, len);
    put32(b + 80 + 300 * 10 + 8, 0x7fc00000u);
    fix_crcs(b, len);
    CHECK_INT_EQ(load_bytes(b, len, &e), -ERR_CORRUPT);
    free(b);
    free(good);
    hnsw_free(h);
    free(v);
}

/* Labels of rows: row r is label r + 1. */
static void shuffle(int *a, int n)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(rnd() % (uint64_t)(i + 1)), t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* Rows of `groups` distinct vectors copied `copies` times each (byte-identical
 * copies) followed by `others` clustered vectors. Group 2g+1 is a near
 * duplicate of group 2g for g < near_pairs (cosine about 0.99997, as two
 * encodings of one photo): int8 codes can rank such a pair above an exact
 * copy unless the code score is a true cosine. group_of[r] is the group of
 * row r, -1 for the others. */
static float *dup_rows(int groups, int copies, int others, int near_pairs, uint64_t seed,
                       int *group_of)
{
    size_t n = (size_t)groups * copies + (size_t)others;
    float *v = malloc(n * D * sizeof *v), *g = malloc((size_t)groups * D * sizeof *g);
    float *o = others ? clustered((size_t)others, D, seed + 1) : NULL;
    if (!v || !g || (others && !o)) {
        free(v);
        free(g);
        free(o);
        return NULL;
    }
    rs = seed;
    for (int k = 0; k < groups; k++) {
        float *x = g + (size_t)k * D;
        if (k % 2 == 1 && k / 2 < near_pairs)
            for (size_t j = 0; j < D; j++)
                x[j] = (x - D)[j] + (float)(0.001 * gauss());
        else
            for (size_t j = 0; j < D; j++)
                x[j] = (float)gauss();
        vec_normalize(x, D);
    }
    size_t r = 0;
    for (int k = 0; k < groups; k++)
        for (int c = 0; c < copies; c++, r++) {
            memcpy(v + r * D, g + (size_t)k * D, D * sizeof *v);
            group_of[r] = k;
        }
    if (others)
        memcpy(v + r * D, o, (size_t)others * D * sizeof *v);
    for (int i = 0; i < others; i++)
        group_of[r + (size_t)i] = -1;
    free(g);
    free(o);
    return v;
}

/* Inserts rows in the order `order` (labels row + 1). */
static struct hnsw *build_order(const float *v, const int *order, int n, int quant)
{
    struct hnsw_params p;
    hnsw_params_default(&p);
    p.quantize = quant;
    struct hnsw *h = NULL;
    struct err e;
    if (hnsw_new(&h, D, &p, &e))
        return NULL;
    for (int i = 0; i < n; i++)
        if (hnsw_insert(h, order[i] + 1, v + (size_t)order[i] * D, &e)) {
            hnsw_free(h);
            return NULL;
        }
    return h;
}

/* Searches row r's own vector: is label r + 1 among the k best? */
static int finds_itself(const struct hnsw *h, const float *v, int r, size_t k, int ef)
{
    struct hnsw_hit hits[256];
    size_t nh = 0;
    struct err e;
    if (k > 256 || hnsw_search(h, v + (size_t)r * D, k, ef, NULL, NULL, hits, &nh, &e))
        return 0;
    for (size_t i = 0; i < nh; i++)
        if (hits[i].label == r + 1)
            return 1;
    return 0;
}

TEST(exact_duplicates_all_found)
{
    /* The indexer's report: 7 images each copied ~30 times, two of them
     * near duplicates of two others; before the fix 24 of 200 items never
     * came back (no incoming links). Every copy must stay reachable. */
    enum { G = 7, C = 30, O = 60, NR = G * C + O };
    int group_of[NR], order[NR];
    for (int cfg = 0; cfg < 6; cfg++) {
        int quant = cfg & 1, how = cfg >> 1; /* 0: random order, 1: blocks, 2: others first */
        float *v = dup_rows(G, C, O, 2, 100 + (uint64_t)cfg, group_of);
        REQUIRE(v);
        for (int i = 0; i < NR; i++)
            order[i] = how == 2 ? (i + G * C) % NR : i;
        if (how == 0)
            shuffle(order, NR);
        struct hnsw *h = build_order(v, order, NR, quant);
        REQUIRE(h);
        struct err e;
        CHECKF(hnsw_validate(h, &e) == 0, "%s", e.msg);
        CHECKF(hnsw_unreachable(h) == 0, "quantize %d order %d: %zu nodes unreachable", quant,
               how, hnsw_unreachable(h));
        int missing = 0;
        for (int r = 0; r < NR; r++)
            missing += !finds_itself(h, v, r, 40, 100);
        CHECKF(missing == 0, "quantize %d order %d: %d of %d items never found", quant, how,
               missing, NR);
        /* k = 1 for each distinct vector: one of its own copies, score 1 */
        for (int g = 0; g < G; g++) {
            struct hnsw_hit hit = {0, 0};
            size_t nh = 0;
            REQUIRE(hnsw_search(h, v + (size_t)g * C * D, 1, 0, NULL, NULL, &hit, &nh, &e) == 0);
            CHECKF(nh == 1 && group_of[hit.label - 1] == g && fabsf(hit.score - 1) < 1e-5f,
                   "quantize %d order %d group %d: label %lld (group %d) score %.7f", quant, how,
                   g, (long long)hit.label, hit.label ? group_of[hit.label - 1] : -9, hit.score);
        }
        hnsw_free(h);
        free(v);
    }
}

TEST(duplicate_group_larger_than_lists)
{
    /* 150 copies of one vector (more than a layer-0 list holds) among 400
     * clustered vectors: every copy comes back for k = 160, the copies do
     * not trap searches for other vectors, and the last copy inserted is
     * still found by the graph once the 149 others are deleted. */
    enum { C = 150, O = 400, NR = C + O };
    int group_of[NR], order[NR];
    for (int quant = 0; quant <= 1; quant++) {
        float *v = dup_rows(1, C, O, 0, 7 + (uint64_t)quant, group_of);
        REQUIRE(v);
        for (int i = 0; i < NR; i++)
            order[i] = i;
        shuffle(order, NR);
        struct hnsw_params p;
        hnsw_params_default(&p);
        p.quantize = quant;
        p.max_deleted_fraction = 0.9; /* keep the tombstones: the graph must route */
        struct hnsw *h = NULL;
        struct err e;
        REQUIRE(hnsw_new(&h, D, &p, &e) == 0);
        for (int i = 0; i < NR; i++)
            REQUIRE(hnsw_insert(h, order[i] + 1, v + (size_t)order[i] * D, &e) == 0);
        CHECKF(hnsw_validate(h, &e) == 0, "%s", e.msg);
        CHECKF(hnsw_unreachable(h) == 0, "quantize %d: %zu nodes unreachable", quant,
               hnsw_unreachable(h));
        int missing = 0;
        for (int r = 0; r < C; r++)
            missing += !finds_itself(h, v, r, 160, 200);
        for (int r = C; r < NR; r++)
            missing += !finds_itself(h, v, r, 10, 64);
        CHECKF(missing == 0, "quantize %d: %d of %d items never found", quant, missing, NR);
        /* recall of the other vectors against brute force, ef 64 */
        size_t found = 0, total = 0;
        for (int r = C; r < NR; r += 4) {
            struct hnsw_hit hits[10];
            size_t nh = 0;
            float qn[D];
            for (size_t j = 0; j < D; j++)
                qn[j] = v[(size_t)r * D + j] + (float)(0.1 * gauss());
            REQUIRE(hnsw_search(h, qn, 10, 64, NULL, NULL, hits, &nh, &e) == 0);
            vec_normalize(qn, D);
            float sc[NR];
            for (int i = 0; i < NR; i++)
                sc[i] = vec_dot_ref(qn, v + (size_t)i * D, D);
            for (size_t i = 0; i < nh; i++) {
                int better = 0; /* rows strictly better than this hit */
                for (int j = 0; j < NR; j++)
                    better += sc[j] > hits[i].score + 1e-6f;
                found += better < 10;
            }
            total += 10;
        }
        CHECKF((double)found / (double)total >= 0.95, "quantize %d: recall %.3f", quant,
               (double)found / (double)total);
        /* delete every copy but two: the last one inserted and one from the
         * middle; the graph (not the exact fallback: other items fill k)
         * finds both, before and after compaction */
        int keep[2] = {-1, -1};
        for (int i = 0, seen = 0; i < NR; i++)
            if (group_of[order[i]] == 0) {
                if (++seen == C / 2)
                    keep[0] = order[i];
                keep[1] = order[i];
            }
        for (int r = 0; r < C; r++)
            if (r != keep[0] && r != keep[1])
                REQUIRE(hnsw_delete(h, r + 1) == 0);
        CHECK_INT_EQ(hnsw_deleted(h), C - 2);
        for (int pass = 0; pass < 2; pass++) {
            struct hnsw_hit hits[2];
            size_t nh = 0;
            REQUIRE(hnsw_search(h, v + (size_t)keep[1] * D, 2, 0, NULL, NULL, hits, &nh, &e) == 0);
            CHECKF(nh == 2 && ((hits[0].label == keep[0] + 1 && hits[1].label == keep[1] + 1) ||
                               (hits[0].label == keep[1] + 1 && hits[1].label == keep[0] + 1)),
                   "quantize %d pass %d: got %lld %lld, want %d %d", quant, pass,
                   (long long)hits[0].label, (long long)hits[1].label, keep[0] + 1, keep[1] + 1);
            CHECKF(hnsw_unreachable(h) == 0, "quantize %d pass %d: %zu nodes unreachable", quant,
                   pass, hnsw_unreachable(h));
            REQUIRE(hnsw_compact(h, &e) == 0);
            CHECKF(hnsw_validate(h, &e) == 0, "%s", e.msg);
        }
        hnsw_free(h);
        free(v);
    }
}

/* Rewrites an index file's bytes with every link to node x removed (counts,
 * payload size and checksums fixed): a graph in which x is an orphan, as
 * older builds could leave a copy of a duplicated vector. Returns the new
 * length. */
static size_t drop_links_to(const uint8_t *in, size_t len, uint32_t x, uint8_t *out)
{
    uint32_t dim = (uint32_t)in[12] | (uint32_t)in[13] << 8;
    uint64_t n = 0;
    for (int i = 0; i < 8; i++)
        n |= (uint64_t)in[32 + i] << (8 * i);
    const uint8_t *levels = in + 80 + n * 8;
    size_t links = 80 + n * 10 + (4 - (n * 10) % 4) % 4 + n * dim * 4;
    memcpy(out, in, links);
    size_t ri = links, wi = links;
    for (uint64_t i = 0; i < n; i++)
        for (int l = 0; l <= levels[i]; l++) {
            uint32_t cnt;
            memcpy(&cnt, in + ri, 4);
            size_t cpos = wi;
            uint32_t kept = 0;
            ri += 4;
            wi += 4;
            for (uint32_t j = 0; j < cnt; j++, ri += 4) {
                uint32_t y;
                memcpy(&y, in + ri, 4);
                if (y != x) {
                    memcpy(out + wi, &y, 4);
                    wi += 4;
                    kept++;
                }
            }
            memcpy(out + cpos, &kept, 4);
        }
    (void)len;
    for (int i = 0; i < 8; i++)
        out[64 + i] = (uint8_t)((wi - 80) >> (8 * i));
    fix_crcs(out, wi);
    return wi;
}

TEST(orphan_relinked_on_load)
{
    float *v = clustered(500, D, 9);
    REQUIRE(v);
    struct hnsw *h = build(v, 500, 1, 0.5);
    REQUIRE(h);
    struct err e;
    const char *p = tmp_path("orphan");
    REQUIRE(hnsw_save(h, p, &e) == 0);
    size_t len;
    uint8_t *good = (uint8_t *)test_read_file(p, &len);
    uint8_t *b = malloc(len);
    REQUIRE(good && b);
    /* orphan node 123 (label lab(123)): nothing links to it */
    size_t blen = drop_links_to(good, len, 123, b);
    CHECK(blen < len);
    FILE *f = fopen(p, "wb");
    REQUIRE(f);
    fwrite(b, 1, blen, f);
    fclose(f);
    struct hnsw *g = NULL;
    REQUIRE(hnsw_load(&g, p, NULL, &e) == 0);
    CHECKF(hnsw_validate(g, &e) == 0, "%s", e.msg);
    CHECK_INT_EQ(hnsw_unreachable(g), 0);
    struct hnsw_hit hit = {0, 0};
    size_t nh = 0;
    REQUIRE(hnsw_search(g, v + 123 * D, 1, 0, NULL, NULL, &hit, &nh, &e) == 0);
    CHECK(nh == 1 && hit.label == lab(123));
    hnsw_free(g);
    unlink(p);
    free(good);
    free(b);
    hnsw_free(h);
    free(v);
}

TEST(bad_arguments)
{
    struct hnsw *h = NULL;
    struct err e;
    struct hnsw_params p;
    hnsw_params_default(&p);
    CHECK_INT_EQ(hnsw_new(&h, 0, NULL, &e), -ERR_INVALID_ARGUMENT);
    p.m = 1;
    CHECK_INT_EQ(hnsw_new(&h, 8, &p, &e), -ERR_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(e.msg, "m=1");
    REQUIRE(hnsw_new(&h, 4, NULL, &e) == 0);
    float z[4] = {0, 0, 0, 0}, nan[4] = {NAN, 1, 1, 1}, ok[4] = {1, 2, 3, 4};
    CHECK_INT_EQ(hnsw_insert(h, 1, z, &e), -ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(hnsw_insert(h, 1, nan, &e), -ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(hnsw_count(h), 0);
    CHECK_INT_EQ(hnsw_insert(h, 1, ok, &e), 0);
    struct hnsw_hit hit;
    size_t n;
    CHECK_INT_EQ(hnsw_search(h, z, 1, 0, NULL, NULL, &hit, &n, &e), -ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(hnsw_search(h, ok, 1, 0, NULL, NULL, &hit, &n, &e), 0);
    CHECK(n == 1 && hit.label == 1 && fabsf(hit.score - 1) < 1e-6f);
    hnsw_free(h);
    hnsw_free(NULL);
}

/* Issue 15: with IMGSEARCH_SIMD=scalar, 10 of 210 copies were never found.
 * Near duplicates closer than float32 can tell (cosine 1 - 1e-8) tied with
 * the exact copies of the query and the tie went by node id, so which won
 * depended on how the path's kernel rounded. On every path, the graph
 * search and the exact scan put every exact copy first. */
TEST(copies_rank_first_every_path)
{
    enum { G = 7, C = 30, DD = 8 };
    enum vec_simd before = vec_simd_active();
    for (int path = VEC_SIMD_SCALAR; path <= VEC_SIMD_AVX512; path++) {
        if (!vec_simd_supported((enum vec_simd)path))
            continue; /* test_vec reports the path as skipped */
        vec_simd_set((enum vec_simd)path);
        float g[G][DD];
        rs = 4242;
        for (int k = 0; k < G; k++) {
            for (int j = 0; j < DD; j++)
                g[k][j] = (float)gauss();
            if (k == 1 || k == 3)
                for (int j = 0; j < DD; j++)
                    g[k][j] = g[k - 1][j] + (float)(0.0005 * gauss());
        }
        for (int quant = 0; quant <= 1; quant++) {
            struct hnsw_params p;
            hnsw_params_default(&p);
            p.quantize = quant;
            struct hnsw *h = NULL;
            struct err e;
            REQUIRE(hnsw_new(&h, DD, &p, &e) == 0);
            for (int i = 0; i < G * C; i++) /* interleaved: labels i + 1, group i % G */
                REQUIRE(hnsw_insert(h, i + 1, g[i % G], &e) == 0);
            for (int k = 0; k < G; k++)
                for (int exact = 0; exact <= 1; exact++) {
                    struct hnsw_hit hits[C];
                    size_t nh = 0;
                    int rc = exact ? hnsw_exact(h, g[k], C, NULL, NULL, hits, &nh, &e)
                                   : hnsw_search(h, g[k], C, 100, NULL, NULL, hits, &nh, &e);
                    REQUIRE(rc == 0);
                    int wrong = 0;
                    for (size_t i = 0; i < nh; i++)
                        wrong += (hits[i].label - 1) % G != k;
                    CHECKF(nh == C && wrong == 0,
                           "%s quantize %d %s: group %d: %d of %zu hits are not its copies",
                           vec_simd_name((enum vec_simd)path), quant,
                           exact ? "exact" : "graph", k, wrong, nh);
                }
            hnsw_free(h);
        }
    }
    vec_simd_set(before);
}

/* ---- randomized operation sequences ---------------------------------------
 *
 * The invariant: after every insert, overwrite, delete, compaction and
 * reload, every live item is found by a search for its own vector. With
 * exact copies "found" means: a search for the vector with k = copies + 1
 * (ef 0: the index's default, raised to k) returns every live copy, ahead
 * of every other item (copies score exactly as high as the query against
 * itself; near duplicates lower). Deleted or overwritten labels never come
 * back with their old vector: every hit is a live label, and its score is
 * its current vector's cosine with the query. */

#define RD 24          /* dimension of the randomized test */
#define R_CLASSES 4096 /* distinct vectors ever made */
#define R_LABELS 8192  /* labels ever used */
#define R_HOT 250      /* copies of the "hot" vector wanted */

/* IMGSEARCH_TEST_SEED when set (to repeat a failing run), else dflt. */
static uint64_t test_seed(uint64_t dflt)
{
    const char *e = getenv("IMGSEARCH_TEST_SEED");
    return e && *e ? strtoull(e, NULL, 0) : dflt;
}

struct rmodel {
    float cv[R_CLASSES][RD]; /* class vectors, normalised */
    int ncls;                /* classes made */
    int cls[R_LABELS + 1];   /* label -> class, -1 absent */
    int nlab;                /* labels 1..nlab used */
    int live;                /* live labels */
    int copies[R_CLASSES];   /* live labels per class */
};

static uint64_t rr;
static uint64_t rnext(void)
{
    rr ^= rr << 13;
    rr ^= rr >> 7;
    rr ^= rr << 17;
    return rr;
}
static double runit(void) { return (double)(rnext() >> 11) / 9007199254740992.0; }
static double rgauss(void)
{
    double u = runit() + 1e-300, v = runit();
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

/* A class for an insert or an overwrite: the hot vector (while it has fewer
 * than R_HOT copies), a copy of a live class, a near duplicate of one, or a
 * fresh vector. */
static int pick_class(struct rmodel *m)
{
    double u = runit();
    if (u < 0.6 && m->copies[0] < R_HOT)
        return 0;
    if (u < 0.75 && m->live > 0) {
        for (int tries = 0; tries < 20; tries++) {
            int l = 1 + (int)(rnext() % (uint64_t)m->nlab);
            if (m->cls[l] >= 0)
                return m->cls[l];
        }
    }
    if (m->ncls == R_CLASSES)
        return (int)(rnext() % R_CLASSES);
    int c = m->ncls++;
    if (u < 0.88 && c > 1) {
        /* near duplicate: cosine about 1 - 1e-7 .. 1 - 1e-5 */
        int b = (int)(rnext() % (uint64_t)c);
        double eps = u < 0.81 ? 3e-4 : 3e-3;
        for (int j = 0; j < RD; j++)
            m->cv[c][j] = m->cv[b][j] + (float)(eps * rgauss() / sqrt(RD));
    } else
        for (int j = 0; j < RD; j++)
            m->cv[c][j] = (float)rgauss();
    vec_normalize(m->cv[c], RD);
    return c;
}

static int r_insert(struct hnsw *h, struct rmodel *m, int label, int c, struct err *e)
{
    int rc = hnsw_insert(h, label, m->cv[c], e);
    if (rc)
        return rc;
    if (m->cls[label] >= 0)
        m->copies[m->cls[label]]--;
    else
        m->live++;
    m->cls[label] = c;
    m->copies[c]++;
    return 0;
}

/* Checks the invariant for every live class; returns the number of
 * problems, describing the first in msg. */
static int r_check(const struct hnsw *h, const struct rmodel *m, int *by_cls_start,
                   int *by_cls, char *msg, size_t msglen)
{
    struct err e;
    if (hnsw_validate(h, &e)) {
        snprintf(msg, msglen, "validate: %s", e.msg);
        return 1;
    }
    if ((int)hnsw_count(h) != m->live) {
        snprintf(msg, msglen, "count %zu, want %d", hnsw_count(h), m->live);
        return 1;
    }
    size_t lost = hnsw_unreachable(h);
    if (lost) {
        snprintf(msg, msglen, "%zu live nodes unreachable from the entry point", lost);
        return 1;
    }
    /* live labels grouped by class (counting sort) */
    for (int c = 0; c <= m->ncls; c++)
        by_cls_start[c] = 0;
    for (int l = 1; l <= m->nlab; l++)
        if (m->cls[l] >= 0)
            by_cls_start[m->cls[l] + 1]++;
    for (int c = 0; c < m->ncls; c++)
        by_cls_start[c + 1] += by_cls_start[c];
    int fill[R_CLASSES];
    for (int c = 0; c < m->ncls; c++)
        fill[c] = by_cls_start[c];
    for (int l = 1; l <= m->nlab; l++)
        if (m->cls[l] >= 0)
            by_cls[fill[m->cls[l]]++] = l;
    static struct hnsw_hit hits[R_HOT + 64];
    int bad = 0;
    for (int c = 0; c < m->ncls; c++) {
        int nc = m->copies[c];
        if (nc == 0)
            continue;
        size_t k = (size_t)nc + 1, nh = 0;
        if (k > sizeof hits / sizeof hits[0])
            k = sizeof hits / sizeof hits[0];
        if (hnsw_search(h, m->cv[c], k, 0, NULL, NULL, hits, &nh, &e)) {
            snprintf(msg, msglen, "search failed: %s", e.msg);
            return 1;
        }
        /* every hit live, scored against its current vector */
        for (size_t i = 0; i < nh; i++) {
            int64_t l = hits[i].label;
            if (l < 1 || l > m->nlab || m->cls[l] < 0) {
                if (!bad++)
                    snprintf(msg, msglen, "class %d: hit %zu is label %lld, not live", c, i,
                             (long long)l);
                continue;
            }
            float want = vec_dot_ref(m->cv[c], m->cv[m->cls[l]], RD);
            if (fabsf(hits[i].score - want) > 1e-5f && !bad++)
                snprintf(msg, msglen, "class %d: label %lld scores %.7f, its vector %.7f", c,
                         (long long)l, hits[i].score, want);
        }
        /* the copies: all of them, first */
        int missing = 0, first_missing = 0;
        for (int j = by_cls_start[c]; j < by_cls_start[c + 1]; j++) {
            int l = by_cls[j], at = -1;
            for (size_t i = 0; i < nh && at < 0; i++)
                if (hits[i].label == l)
                    at = (int)i;
            if (at < 0 || at >= nc) {
                if (!missing++)
                    first_missing = l;
            }
        }
        if (missing && !bad++) {
            int fm = first_missing;
            size_t at = 0;
            while (at < nh && hits[at].label != fm)
                at++;
            int64_t l0 = nh ? hits[0].label : 0;
            snprintf(msg, msglen,
                     "class %d (%d copies): %d not among the first %d hits (label %d, at %zu "
                     "of %zu); hit 0: label %lld (class %d) score %.9g", c, nc, missing, nc,
                     fm, at, nh, (long long)l0, nh ? m->cls[l0] : -1, nh ? hits[0].score : 0);
        }
    }
    return bad;
}

/* One randomized run: `steps` operations on an index with params p,
 * checking the invariant after each. Returns 0 or the failing step + 1. */
static int r_run(uint64_t seed, int steps, const struct hnsw_params *p, int *n_ops,
                 int *max_hot)
{
    struct rmodel *m = calloc(1, sizeof *m);
    int *starts = malloc((R_CLASSES + 1) * sizeof *starts);
    int *by = malloc((R_LABELS + 1) * sizeof *by);
    struct hnsw *h = NULL;
    struct err e;
    int failed_at = 0;
    if (!m || !starts || !by || hnsw_new(&h, RD, p, &e)) {
        failed_at = -1;
        goto done;
    }
    rr = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int l = 0; l <= R_LABELS; l++)
        m->cls[l] = -1;
    m->ncls = 1; /* class 0: the hot vector */
    for (int j = 0; j < RD; j++)
        m->cv[0][j] = (float)rgauss();
    vec_normalize(m->cv[0], RD);
    const char *path = tmp_path("random");
    char msg[1024];
    for (int step = 0; step < steps; step++) {
        double u = runit();
        const char *op;
        int rc = 0;
        int target = 380; /* live items the sequence hovers around */
        if (u < 0.01) {
            op = "reload";
            struct hnsw *g = NULL;
            rc = hnsw_save(h, path, &e);
            if (!rc)
                rc = hnsw_load(&g, path, p, &e);
            if (!rc) {
                hnsw_free(h);
                h = g;
            }
        } else if (u < 0.03) {
            op = "compact";
            rc = hnsw_compact(h, &e);
        } else if (u < 0.62 && m->nlab < R_LABELS && (m->live < target || u < 0.35)) {
            op = "insert";
            int c = pick_class(m);
            rc = r_insert(h, m, ++m->nlab, c, &e);
        } else if (u < 0.80 && m->live > 0) {
            op = "overwrite";
            int l;
            do
                l = 1 + (int)(rnext() % (uint64_t)m->nlab);
            while (m->cls[l] < 0);
            /* a third of overwrites rewrite the same vector (re-embedding) */
            int c = runit() < 0.33 ? m->cls[l] : pick_class(m);
            rc = r_insert(h, m, l, c, &e);
        } else if (m->live > 0) {
            op = "delete";
            int l;
            do
                l = 1 + (int)(rnext() % (uint64_t)m->nlab);
            while (m->cls[l] < 0);
            rc = hnsw_delete(h, l);
            m->copies[m->cls[l]]--;
            m->cls[l] = -1;
            m->live--;
        } else {
            op = "insert";
            rc = r_insert(h, m, ++m->nlab, pick_class(m), &e);
        }
        (*n_ops)++;
        if (m->copies[0] > *max_hot)
            *max_hot = m->copies[0];
        if (rc) {
            fprintf(stderr, "seed %llu step %d %s: rc %d (%s)\n", (unsigned long long)seed,
                    step, op, rc, e.msg);
            failed_at = step + 1;
            break;
        }
        if (r_check(h, m, starts, by, msg, sizeof msg)) {
            fprintf(stderr,
                    "seed %llu step %d after %s (m %d, quantize %d, %d live, %zu tombstones, "
                    "hot copies %d): %s\n",
                    (unsigned long long)seed, step, op, p->m, p->quantize, m->live,
                    hnsw_deleted(h), m->copies[0], msg);
            failed_at = step + 1;
            break;
        }
    }
    unlink(path);
done:
    hnsw_free(h);
    free(m);
    free(starts);
    free(by);
    return failed_at;
}

TEST(random_ops_keep_every_item_findable)
{
    uint64_t seed = test_seed(1);
    /* Small lists prune hardest; both traversal modes; compaction early
     * (tombstones rarely route for long) and late (they pile up). */
    static const struct {
        int m, quant;
        double maxdel;
        int steps;
    } cfg[] = {{4, 1, 0.5, 800}, {8, 1, 0.9, 800}, {16, 0, 0.2, 400}, {6, 0, 0.9, 400}};
    int ops = 0, max_hot = 0;
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        struct hnsw_params p;
        hnsw_params_default(&p);
        p.m = cfg[i].m;
        p.ef_construction = 64;
        p.quantize = cfg[i].quant;
        p.max_deleted_fraction = cfg[i].maxdel;
        p.seed = seed + i;
        int at = r_run(seed + i, cfg[i].steps, &p, &ops, &max_hot);
        CHECKF(at == 0, "seed %llu config %zu (m %d, quantize %d, max_deleted %.1f): "
               "invariant broken at step %d", (unsigned long long)(seed + i), i, cfg[i].m,
               cfg[i].quant, cfg[i].maxdel, at - 1);
    }
    printf("random_ops_keep_every_item_findable: seed %llu (IMGSEARCH_TEST_SEED repeats it), "
           "%d operations checked, up to %d copies of one vector\n",
           (unsigned long long)seed, ops, max_hot);
}

TEST_MAIN(recall_float_and_int8, deletes_never_returned, auto_compaction_and_delete_all,
          filter_returns_k, save_load_round_trip, corrupt_files_rejected, bad_arguments,
          exact_duplicates_all_found, duplicate_group_larger_than_lists,
          orphan_relinked_on_load, copies_rank_first_every_path,
          random_ops_keep_every_item_findable)
