/* test_query.c - the query layer: "more like this" leaves the item out and
 * pages exactly, query vectors are checked, zero-shot labels are ranked. */
#include <unistd.h>

#include "query/query.h"
#include "test.h"

#define DIM 8

static char path[256];

static void remove_db(void)
{
    static const char *sfx[] = {"", "-wal", "-shm", ".hnsw"};
    char p[300];
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s%s", path, sfx[i]);
        unlink(p);
    }
}

static struct store *fresh_store(const char *name)
{
    snprintf(path, sizeof path, "/tmp/test_query.%d.%s.db", (int)getpid(), name);
    remove_db();
    struct store_options o = {.model = "m", .dim = DIM, .create = 1};
    struct store *st = NULL;
    struct err e;
    if (store_open(&st, path, &o, &e)) {
        fprintf(stderr, "open: %s\n", e.msg);
        return NULL;
    }
    return st;
}

static int put(struct store *st, const char *id, const float *v, const char *md)
{
    struct store_item it = {0};
    it.id = (char *)id;
    it.size = it.mtime = -1;
    it.metadata = (char *)md;
    it.embedding = (float *)v;
    struct err e;
    int rc = store_put(st, &it, NULL, &e);
    if (rc)
        fprintf(stderr, "put %s: %s\n", id, e.msg);
    return rc;
}

/* Unit vector along axis a, tilted toward axis b by t. */
static void vec(float *v, int a, int b, float t)
{
    memset(v, 0, sizeof(float) * DIM);
    v[a] = 1;
    v[b] += t;
}

/* 12 items around axis 0 at falling similarity, "x" and its exact copy
 * "x-copy" on top, and one item on another axis. */
static struct store *catalog(void)
{
    struct store *st = fresh_store("cat");
    if (!st)
        return NULL;
    float v[DIM];
    char id[16];
    vec(v, 0, 1, 0);
    if (put(st, "x", v, NULL) || put(st, "x-copy", v, NULL))
        return st;
    for (int i = 0; i < 12; i++) {
        vec(v, 0, 1 + i % 6, 0.1f * (float)(i + 1));
        snprintf(id, sizeof id, "n%02d", i);
        if (put(st, id, v, NULL))
            return st;
    }
    vec(v, 7, 6, 0);
    put(st, "far", v, NULL);
    return st;
}

TEST(more_like_this_leaves_the_item_out)
{
    struct store *st = catalog();
    REQUIRE(st);
    struct err e;
    float q[DIM];
    REQUIRE(query_item_vector(st, "x", q, &e) == 0);
    struct query_opts o = {.k = 3, .min_score = -1};
    struct store_hit *h = NULL;
    size_t n = 0;
    REQUIRE(query_search(st, q, "x", &o, &h, &n, &e) == 0);
    REQUIRE(n == 3);
    /* the exact copy is another item: it stays, first, score 1 */
    CHECKF(strcmp(h[0].id, "x-copy") == 0, "first hit %s", h[0].id);
    CHECK(fabsf(h[0].score - 1) < 1e-6f);
    for (size_t i = 0; i < n; i++)
        CHECKF(strcmp(h[i].id, "x") != 0, "hit %zu is the item itself", i);
    store_hits_free(h, n);
    /* without exclusion the item is there (a search by its vector) */
    REQUIRE(query_search(st, q, NULL, &o, &h, &n, &e) == 0);
    int found = 0;
    for (size_t i = 0; i < n; i++)
        found += strcmp(h[i].id, "x") == 0;
    CHECK(found == 1);
    store_hits_free(h, n);
    store_close(st, NULL);
    remove_db();
}

TEST(pages_are_exact_with_exclusion)
{
    struct store *st = catalog();
    REQUIRE(st);
    struct err e;
    float q[DIM];
    REQUIRE(query_item_vector(st, "x", q, &e) == 0);
    struct query_opts all = {.k = 20, .min_score = -1};
    struct store_hit *h = NULL;
    size_t n = 0;
    REQUIRE(query_search(st, q, "x", &all, &h, &n, &e) == 0);
    CHECK_INT_EQ(n, 14); /* 15 items less the excluded one */
    char ids[20][16];
    for (size_t i = 0; i < n && i < 20; i++)
        snprintf(ids[i], sizeof ids[i], "%s", h[i].id);
    size_t total = n;
    store_hits_free(h, n);
    /* pages of 4 concatenate to the same list: nothing skipped or repeated */
    size_t at = 0;
    for (int off = 0; off < 16; off += 4) {
        struct query_opts o = {.k = 4, .offset = off, .min_score = -1};
        REQUIRE(query_search(st, q, "x", &o, &h, &n, &e) == 0);
        for (size_t i = 0; i < n; i++, at++)
            CHECKF(at < total && strcmp(h[i].id, ids[at]) == 0, "offset %d hit %zu: %s", off, i,
                   h[i].id);
        store_hits_free(h, n);
    }
    CHECK_INT_EQ(at, total);
    store_close(st, NULL);
    remove_db();
}

TEST(min_score_and_filters_pass_through)
{
    struct store *st = fresh_store("flt");
    REQUIRE(st);
    float v[DIM];
    vec(v, 0, 1, 0);
    REQUIRE(put(st, "a", v, "{\"c\":\"red\",\"s\":\"m\"}") == 0);
    vec(v, 0, 1, 0.2f);
    REQUIRE(put(st, "b", v, "{\"c\":\"red\",\"s\":\"l\"}") == 0);
    vec(v, 0, 1, 0.4f);
    REQUIRE(put(st, "c", v, "{\"c\":\"blue\",\"s\":\"m\"}") == 0);
    vec(v, 3, 2, 0);
    REQUIRE(put(st, "d", v, "{\"c\":\"red\",\"s\":\"m\"}") == 0);
    struct err e;
    vec(v, 0, 1, 0);
    struct store_filter f[2] = {{"c", "red"}, {"s", "m"}};
    struct query_opts o = {.k = 10, .min_score = -1, .filters = f, .n_filters = 2};
    struct store_hit *h = NULL;
    size_t n = 0;
    REQUIRE(query_search(st, v, NULL, &o, &h, &n, &e) == 0);
    CHECK(n == 2 && !strcmp(h[0].id, "a") && !strcmp(h[1].id, "d"));
    store_hits_free(h, n);
    o.min_score = 0.5f;
    REQUIRE(query_search(st, v, NULL, &o, &h, &n, &e) == 0);
    CHECK(n == 1 && !strcmp(h[0].id, "a"));
    store_hits_free(h, n);
    store_close(st, NULL);
    remove_db();
}

TEST(query_vectors_are_checked)
{
    struct err e;
    float v[DIM], out[DIM];
    for (int i = 0; i < DIM; i++)
        v[i] = 1e-45f; /* denormals: the norm underflows in float */
    CHECK_INT_EQ(query_vector_check(v, DIM, out, &e), -ERR_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(e.msg, "direction");
    memset(v, 0, sizeof v);
    CHECK_INT_EQ(query_vector_check(v, DIM, out, &e), -ERR_INVALID_ARGUMENT);
    v[3] = NAN;
    CHECK_INT_EQ(query_vector_check(v, DIM, out, &e), -ERR_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(e.msg, "vector[3]");
    v[3] = INFINITY;
    CHECK_INT_EQ(query_vector_check(v, DIM, out, &e), -ERR_INVALID_ARGUMENT);
    v[3] = 3;
    v[5] = -4;
    REQUIRE(query_vector_check(v, DIM, out, &e) == 0);
    CHECK(fabsf(out[3] - 0.6f) < 1e-7f && fabsf(out[5] + 0.8f) < 1e-7f && out[0] == 0);
    /* a search refuses such a vector too, with no hits */
    struct store *st = fresh_store("vec");
    REQUIRE(st);
    for (int i = 0; i < DIM; i++)
        v[i] = 1e-45f;
    struct query_opts o = {.k = 1, .min_score = -1};
    struct store_hit *h = (struct store_hit *)1;
    size_t n = 7;
    CHECK_INT_EQ(query_search(st, v, NULL, &o, &h, &n, &e), -ERR_INVALID_ARGUMENT);
    CHECK(h == NULL && n == 0);
    o.k = QUERY_K_MAX + 1;
    v[0] = 1;
    CHECK_INT_EQ(query_search(st, v, NULL, &o, &h, &n, &e), -ERR_INVALID_ARGUMENT);
    o.k = 1;
    o.offset = QUERY_OFFSET_MAX + 1;
    CHECK_INT_EQ(query_search(st, v, NULL, &o, &h, &n, &e), -ERR_INVALID_ARGUMENT);
    store_close(st, NULL);
    remove_db();
}

TEST(item_vector_errors)
{
    struct store *st = fresh_store("item");
    REQUIRE(st);
    struct err e;
    float v[DIM];
    CHECK_INT_EQ(query_item_vector(st, "nope", v, &e), -ERR_NOT_FOUND);
    REQUIRE(put(st, "waiting", NULL, NULL) == 0);
    CHECK_INT_EQ(query_item_vector(st, "waiting", v, &e), -ERR_CONFLICT);
    CHECK_STR_CONTAINS(e.msg, "no embedding yet");
    store_close(st, NULL);
    remove_db();
}

TEST(label_texts_and_ranking)
{
    char *t = query_label_text("a photo of {}, a type of food", "pizza");
    CHECK(t && strcmp(t, "a photo of pizza, a type of food") == 0);
    free(t);
    t = query_label_text("{} {}", "x"); /* the first {} only */
    CHECK(t && strcmp(t, "x {}") == 0);
    free(t);
    t = query_label_text("itap of a", "dog"); /* no {}: appended */
    CHECK(t && strcmp(t, "itap of a dog") == 0);
    free(t);
    /* labels: 0 orthogonal, 1 and 3 equal (a tie keeps list order), 2 best */
    float img[4] = {1, 0, 0, 0};
    float lab[4 * 4] = {0, 1, 0, 0, 1, 1, 0, 0, 1, 0.1f, 0, 0, 1, 1, 0, 0};
    struct query_label r[4];
    struct err e;
    REQUIRE(query_rank_labels(img, lab, 4, 4, 100.0f, r, &e) == 0);
    CHECK(r[0].idx == 2 && r[1].idx == 1 && r[2].idx == 3 && r[3].idx == 0);
    double sum = 0;
    for (int i = 0; i < 4; i++)
        sum += r[i].prob;
    CHECK(fabs(sum - 1) < 1e-6);
    /* logit = scale * cosine */
    CHECK(fabsf(r[1].logit - 100.0f / sqrtf(2)) < 1e-3f);
    CHECK(fabsf(r[3].logit) < 1e-6f && r[0].prob > r[1].prob);
}

TEST_MAIN(more_like_this_leaves_the_item_out, pages_are_exact_with_exclusion,
          min_score_and_filters_pass_through, query_vectors_are_checked, item_vector_errors,
          label_texts_and_ranking)
