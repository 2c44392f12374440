/* test_store.c - the store conformance suite: schema and model checks,
 * items, paging, filters, persistence, index rebuild and catch-up,
 * duplicates, batches.
 *
 * Runs against the embedded store (files in /tmp), or, when
 * IMGSEARCH_TEST_STORE holds a postgresql:// URL, against that database,
 * which each case empties first (DROP SCHEMA public CASCADE): the same
 * cases, with the index-file checks replaced by their PostgreSQL
 * equivalent (tests/cli/test_store_pg.sh starts the servers). More cases
 * in test_store_backends.c; the shared helpers in test_store.h. */
#include <pthread.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store/vec.h"
#include "test_store.h"

TEST(create_open_mismatch)
{
    const char *p = fresh_path("open");
    struct store *st = NULL;
    struct err e;
    struct store_options o = {.model = "clip-a", .dim = DIM};
    CHECK_INT_EQ(store_open(&st, p, &o, &e), -ERR_NOT_FOUND);
    o.create = 1;
    o.model = NULL;
    CHECK_INT_EQ(store_open(&st, p, &o, &e), -ERR_INVALID_ARGUMENT);
    o.model = "clip-a";
    REQUIRE(store_open(&st, p, &o, &e) == 0);
    CHECK(strcmp(store_model(st), "clip-a") == 0);
    CHECK_INT_EQ(store_dim(st), DIM);
    CHECK_INT_EQ(store_close(st, &e), 0);
    o.model = "clip-b";
    CHECK_INT_EQ(store_open(&st, p, &o, &e), -ERR_MODEL_MISMATCH);
    CHECK_STR_CONTAINS(e.msg, "'clip-a'");
    CHECK_STR_CONTAINS(e.msg, "'clip-b'");
    CHECK(st == NULL);
    o.model = "clip-a";
    o.dim = 16;
    CHECK_INT_EQ(store_open(&st, p, &o, &e), -ERR_MODEL_MISMATCH);
    CHECK_STR_CONTAINS(e.msg, "dimension 8");
    /* no model given: take the store's */
    o.model = NULL;
    o.dim = 0;
    o.create = 0;
    REQUIRE(store_open(&st, p, &o, &e) == 0);
    CHECK(strcmp(store_model(st), "clip-a") == 0 && store_dim(st) == DIM);
    store_close(st, NULL);
    remove_db(p);
    /* not a store */
    p = fresh_path("notstore");
    REQUIRE(raw_sql(p, "CREATE TABLE items(x int)") == 0);
    o.model = "m";
    o.dim = 4;
    o.create = 1;
    CHECK_INT_EQ(store_open(&st, p, &o, &e), -ERR_CORRUPT);
    CHECK_STR_CONTAINS(e.msg, "not an imgsearch store");
    if (!pg_url) {
        FILE *f = fopen(p, "wb");
        fputs("this is not a database at all, just text that is long enough........", f);
        fclose(f);
        CHECK_INT_EQ(store_open(&st, p, &o, &e), -ERR_CORRUPT);
    }
    /* a store from the future */
    remove_db(p);
    REQUIRE(store_open(&st, p, &o, &e) == 0);
    store_close(st, NULL);
    REQUIRE(raw_sql(p, "UPDATE schema_version SET version = 99") == 0);
    CHECK_INT_EQ(store_open(&st, p, &o, &e), -ERR_UNSUPPORTED_FORMAT);
    remove_db(p);
}

TEST(items_put_get_delete_list)
{
    const char *p = fresh_path("items");
    struct store *st = open_store(p, "m", DIM, 1);
    REQUIRE(st);
    struct err e;
    float v[DIM];
    rvec(v);
    CHECK_INT_EQ(put(st, "a", "/img/a.jpg", "aa11", "{\"k\": \"x\", \"n\": 1}", v), 1);
    CHECK_INT_EQ(put(st, "b", "/img/b.jpg", "bb22", NULL, NULL), 1);
    struct store_item it;
    REQUIRE(store_get(st, "a", &it, &e) == 0);
    CHECK(strcmp(it.id, "a") == 0 && strcmp(it.source, "/img/a.jpg") == 0);
    CHECK(strcmp(it.sha256, "aa11") == 0 && it.size == 100 && it.mtime == 1700000000);
    CHECK(strcmp(it.metadata, "{\"k\":\"x\",\"n\":1}") == 0);
    CHECK(it.has_embedding && it.embedding && memcmp(it.embedding, v, sizeof v) == 0);
    CHECK(strcmp(it.model, "m") == 0);
    int64_t seq_a = it.seq, created = it.created_at;
    CHECK(seq_a > 0 && created > 1600000000);
    store_item_clear(&it);
    REQUIRE(store_get(st, "b", &it, &e) == 0);
    CHECK(!it.has_embedding && !it.embedding && !it.model && strcmp(it.metadata, "{}") == 0);
    store_item_clear(&it);
    /* replace: same sha keeps the embedding, another sha clears it */
    CHECK_INT_EQ(put(st, "a", "/img/a2.jpg", "aa11", "{\"k\":\"y\"}", NULL), 0);
    REQUIRE(store_get(st, "a", &it, &e) == 0);
    CHECK(it.seq == seq_a && it.created_at == created && it.has_embedding);
    CHECK(strcmp(it.source, "/img/a2.jpg") == 0 && strcmp(it.metadata, "{\"k\":\"y\"}") == 0);
    store_item_clear(&it);
    int64_t w;
    REQUIRE(store_count_waiting(st, &w, &e) == 0);
    CHECK_INT_EQ(w, 1);
    CHECK_INT_EQ(put(st, "a", "/img/a2.jpg", "cc33", NULL, NULL), 0);
    REQUIRE(store_get(st, "a", &it, &e) == 0);
    CHECK(!it.has_embedding);
    store_item_clear(&it);
    REQUIRE(store_count_waiting(st, &w, &e) == 0);
    CHECK_INT_EQ(w, 2);
    CHECK_INT_EQ(store_put_embedding(st, "a", v, &e), 0);
    CHECK_INT_EQ(store_put_embedding(st, "zz", v, &e), -ERR_NOT_FOUND);
    float zero[DIM] = {0};
    CHECK_INT_EQ(store_put_embedding(st, "a", zero, &e), -ERR_INVALID_ARGUMENT);
    REQUIRE(store_count_waiting(st, &w, &e) == 0);
    CHECK_INT_EQ(w, 1);
    /* bad input */
    CHECK_INT_EQ(put(st, "c", NULL, NULL, "[1,2]", NULL), -ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(put(st, "c", NULL, NULL, "{nope", NULL), -ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(put(st, "", NULL, NULL, NULL, NULL), -ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(store_get(st, "c", &it, &e), -ERR_NOT_FOUND);
    CHECK_STR_CONTAINS(e.msg, "'c'");
    /* find by source */
    REQUIRE(store_find_source(st, "/img/b.jpg", &it, &e) == 0);
    CHECK(strcmp(it.id, "b") == 0 && strcmp(it.sha256, "bb22") == 0 && it.size == 100);
    store_item_clear(&it);
    CHECK_INT_EQ(store_find_source(st, "/img/none.jpg", &it, &e), -ERR_NOT_FOUND);
    /* paging over 25 items */
    char id[16];
    for (int i = 0; i < 23; i++) {
        snprintf(id, sizeof id, "p%02d", i);
        rvec(v);
        CHECK_INT_EQ(put(st, id, NULL, NULL, NULL, i % 3 ? v : NULL), 1);
    }
    int64_t n;
    REQUIRE(store_count(st, &n, &e) == 0);
    CHECK_INT_EQ(n, 25);
    int64_t cur = 0;
    size_t total = 0, pages = 0;
    char prev[16] = "";
    do {
        struct store_item *items;
        size_t got;
        REQUIRE(store_list(st, cur, 10, &items, &got, &cur, &e) == 0);
        total += got;
        pages++;
        for (size_t i = 0; i < got; i++) {
            if (i == 0 && pages == 1)
                CHECK(strcmp(items[i].id, "a") == 0 && items[i].has_embedding);
            if (pages == 3 && i == got - 1)
                snprintf(prev, sizeof prev, "%s", items[i].id);
        }
        store_items_free(items, got);
    } while (cur);
    CHECK_INT_EQ(total, 25);
    CHECK_INT_EQ(pages, 3);
    CHECK(strcmp(prev, "p22") == 0);
    /* waiting items: b and p00, p03, ..., p21 */
    struct store_item *items;
    size_t got;
    REQUIRE(store_waiting(st, 0, 100, &items, &got, &cur, &e) == 0);
    CHECK_INT_EQ(got, 1 + 8);
    CHECK(got >= 2 && strcmp(items[0].id, "b") == 0 && strcmp(items[1].id, "p00") == 0);
    CHECK_INT_EQ(cur, 0);
    store_items_free(items, got);
    REQUIRE(store_waiting(st, 0, 4, &items, &got, &cur, &e) == 0);
    CHECK(got == 4 && cur == items[3].seq);
    store_items_free(items, got);
    /* a page exactly as long as what is left is the last: next 0 */
    REQUIRE(store_waiting(st, 0, 9, &items, &got, &cur, &e) == 0);
    CHECK_INT_EQ(got, 9);
    CHECK_INT_EQ(cur, 0);
    store_items_free(items, got);
    for (int limit = 1; limit <= 26; limit++) {
        int64_t after = 0;
        size_t seen = 0, npages = 0, want_pages = (25 + (size_t)limit - 1) / (size_t)limit;
        do {
            REQUIRE(store_list(st, after, limit, &items, &got, &after, &e) == 0);
            CHECKF(got > 0, "limit %d: empty page %zu", limit, npages + 1);
            seen += got;
            npages++;
            if (after)
                CHECK(got == (size_t)limit && after == items[got - 1].seq);
            store_items_free(items, got);
        } while (after && npages <= 30);
        CHECK_INT_EQ(seen, 25);
        CHECKF(npages == want_pages, "limit %d: %zu pages, want %zu", limit, npages, want_pages);
    }
    CHECK_INT_EQ(store_list(st, 0, 0, &items, &got, &cur, &e), -ERR_INVALID_ARGUMENT);
    /* exists: no embedding read, seq as store_get's */
    int64_t seq = -1;
    CHECK_INT_EQ(store_exists(st, "a", &seq, &e), 1);
    CHECK_INT_EQ(seq, seq_a);
    CHECK_INT_EQ(store_exists(st, "a", NULL, &e), 1);
    seq = -1;
    CHECK_INT_EQ(store_exists(st, "nope", &seq, &e), 0);
    CHECK_INT_EQ(seq, -1);
    CHECK_INT_EQ(store_exists(st, "", &seq, &e), -ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(store_exists(st, NULL, &seq, &e), -ERR_INVALID_ARGUMENT);
    /* delete */
    CHECK_INT_EQ(store_delete(st, "b", &e), 0);
    CHECK_INT_EQ(store_exists(st, "b", &seq, &e), 0);
    CHECK_INT_EQ(store_delete(st, "b", &e), -ERR_NOT_FOUND);
    CHECK_INT_EQ(store_get(st, "b", &it, &e), -ERR_NOT_FOUND);
    REQUIRE(store_count(st, &n, &e) == 0);
    CHECK_INT_EQ(n, 24);
    CHECK_INT_EQ(store_close(st, &e), 0);
    /* persistence */
    st = open_store(p, "m", DIM, 0);
    REQUIRE(st);
    REQUIRE(store_count(st, &n, &e) == 0);
    CHECK_INT_EQ(n, 24);
    REQUIRE(store_get(st, "p05", &it, &e) == 0);
    CHECK(it.has_embedding);
    store_item_clear(&it);
    store_close(st, NULL);
    remove_db(p);
}

/* Brute force: ids of the items (ids "i%03d", vectors vs[i]) best first. */
static void expect_order(float vs[][DIM], int n, const float *q, const uint8_t *skip,
                         int *order, int *m)
{
    float qn[DIM];
    memcpy(qn, q, sizeof qn);
    vec_normalize(qn, DIM);
    *m = 0;
    float sc[600];
    for (int i = 0; i < n; i++) {
        if (skip && skip[i])
            continue;
        float x[DIM];
        memcpy(x, vs[i], sizeof x);
        vec_normalize(x, DIM);
        sc[i] = vec_dot_ref(qn, x, DIM);
        int j = (*m)++;
        while (j > 0 && sc[order[j - 1]] < sc[i]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
}

#define NS 300
static float vs[NS][DIM];

static void fill_search_store(struct store *st)
{
    char id[16], md[128];
    rs = 999;
    for (int i = 0; i < NS; i++) {
        rvec(vs[i]);
        snprintf(id, sizeof id, "i%03d", i);
        snprintf(md, sizeof md, "{\"color\": \"%s\", \"n\": %d%s, \"even\": %s, \"tag\": \"t%d\"}",
                 i % 3 == 0 ? "red" : i % 3 == 1 ? "green" : "blue", i % 5, i % 10 == 7 ? ".0" : "",
                 i % 2 ? "false" : "true", i);
        put(st, id, NULL, NULL, md, vs[i]);
    }
}

TEST(search_filters_paging)
{
    const char *p = fresh_path("search");
    struct store *st = open_store(p, "m", DIM, 1);
    REQUIRE(st);
    fill_search_store(st);
    float q[DIM];
    rs = 4242;
    rvec(q);
    int order[NS], m, got[NS];
    expect_order(vs, NS, q, NULL, order, &m);
    int n = search_ids(st, q, 10, 0, -1, NULL, 0, got);
    CHECK_INT_EQ(n, 10);
    for (int i = 0; i < n; i++)
        CHECKF(got[i] == order[i], "rank %d: %d vs %d", i, got[i], order[i]);
    /* offset pages continue the ranking */
    n = search_ids(st, q, 5, 10, -1, NULL, 0, got);
    CHECK_INT_EQ(n, 5);
    for (int i = 0; i < n; i++)
        CHECK(got[i] == order[10 + i]);
    /* scores, min_score */
    struct store_query sq = {q, 20, 0, -1, NULL, 0, 0};
    struct store_hit *hits;
    size_t nh;
    struct err e;
    REQUIRE(store_search(st, &sq, &hits, &nh, &e) == 0 && nh == 20);
    float cut = hits[6].score;
    CHECK(hits[0].score >= hits[1].score && hits[0].score <= 1.0001f);
    CHECK(strncmp(hits[0].metadata, "{\"color\":", 9) == 0 && hits[0].source == NULL);
    store_hits_free(hits, nh);
    n = search_ids(st, q, 20, 0, cut, NULL, 0, got);
    CHECK_INT_EQ(n, 7);
    n = search_ids(st, q, 20, 3, cut, NULL, 0, got);
    CHECK_INT_EQ(n, 4);
    CHECK(n == 4 && got[0] == order[3]);
    n = search_ids(st, q, 20, 0, 1.5f, NULL, 0, got);
    CHECK_INT_EQ(n, 0);
    /* filters: exact match against the brute force over matching items */
    struct {
        struct store_filter f[2];
        int nf;
        int (*match)(int);
    } cases[] = {
        {{{"color", "red"}}, 1, NULL},
        {{{"n", "2"}}, 1, NULL},
        {{{"n", "3"}}, 1, NULL}, /* 3 and 3.0 (i % 10 == 7 stores 2.0 / 7 % 5 = 2) */
        {{{"even", "true"}, {"color", "green"}}, 2, NULL},
        {{{"tag", "t77"}}, 1, NULL},
        {{{"missing", "x"}}, 1, NULL},
        {{{"color", "RED"}}, 1, NULL},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        uint8_t skip[NS];
        for (int i = 0; i < NS; i++) {
            int ok = 1;
            for (int f = 0; f < cases[c].nf; f++) {
                const struct store_filter *fl = &cases[c].f[f];
                if (!strcmp(fl->key, "color"))
                    ok &= !strcmp(fl->value, i % 3 == 0 ? "red" : i % 3 == 1 ? "green" : "blue");
                else if (!strcmp(fl->key, "n"))
                    ok &= atoi(fl->value) == i % 5;
                else if (!strcmp(fl->key, "even"))
                    ok &= (i % 2 == 0) == !strcmp(fl->value, "true");
                else if (!strcmp(fl->key, "tag"))
                    ok &= atoi(fl->value + 1) == i;
                else
                    ok = 0;
            }
            skip[i] = !ok;
        }
        expect_order(vs, NS, q, skip, order, &m);
        n = search_ids(st, q, 10, 0, -1, cases[c].f, cases[c].nf, got);
        int want = m < 10 ? m : 10;
        CHECKF(n == want, "case %zu: %d hits, want %d", c, n, want);
        for (int i = 0; i < n && i < want; i++)
            CHECKF(got[i] == order[i], "case %zu rank %d: %d vs %d", c, i, got[i], order[i]);
    }
    /* bad queries */
    struct store_filter bad = {"", "x"};
    CHECK_INT_EQ(search_ids(st, q, 10, 0, -1, &bad, 1, got), -1);
    sq.k = 0;
    CHECK_INT_EQ(store_search(st, &sq, &hits, &nh, &e), -ERR_INVALID_ARGUMENT);
    float zero[DIM] = {0};
    sq.k = 3;
    sq.vec = zero;
    CHECK_INT_EQ(store_search(st, &sq, &hits, &nh, &e), -ERR_INVALID_ARGUMENT);
    store_close(st, NULL);
    remove_db(p);
}

/* Several filters are ANDed, whatever their order: each of these three
 * filters alone matches a different (larger) set than all three together
 * (checked below, so the test keeps its power), and every order of the
 * three must give exactly the brute force over the items matching all of
 * them. A store that kept only the first or only the last filter, or
 * ORed them, fails here. */
TEST(filters_all_apply_in_any_order)
{
    const char *p = fresh_path("filters");
    struct store *st = open_store(p, "m", DIM, 1);
    REQUIRE(st);
    fill_search_store(st);
    const struct store_filter fs[3] = {{"color", "red"}, {"even", "true"}, {"n", "3"}};
    float q[DIM];
    rs = 777;
    rvec(q);
    int order[NS], m, got[NS];
    uint8_t skip_all[NS];
    int n_all = 0;
    for (int i = 0; i < NS; i++) {
        int ok = i % 3 == 0 && i % 2 == 0 && i % 5 == 3;
        skip_all[i] = !ok;
        n_all += ok;
    }
    REQUIRE(n_all == 10);
    /* each filter alone: a different answer than all three */
    for (int f = 0; f < 3; f++) {
        int n = search_ids(st, q, 20, 0, -1, &fs[f], 1, got);
        int alone = 0;
        for (int i = 0; i < NS; i++)
            alone += f == 0 ? i % 3 == 0 : f == 1 ? i % 2 == 0 : i % 5 == 3;
        CHECKF(n == 20 && alone > n_all, "filter %s=%s alone: %d hits of %d matches",
               fs[f].key, fs[f].value, n, alone);
    }
    expect_order(vs, NS, q, skip_all, order, &m);
    REQUIRE(m == n_all);
    static const int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    for (int pi = 0; pi < 6; pi++) {
        struct store_filter f[3];
        for (int j = 0; j < 3; j++)
            f[j] = fs[perms[pi][j]];
        for (int k = 20; k >= 5; k -= 15) { /* every match; only the best few */
            int n = search_ids(st, q, k, 0, -1, f, 3, got);
            int want = m < k ? m : k;
            CHECKF(n == want, "order %d%d%d k=%d: %d hits, want %d", perms[pi][0], perms[pi][1],
                   perms[pi][2], k, n, want);
            for (int i = 0; i < n && i < want; i++)
                CHECKF(got[i] == order[i], "order %d%d%d k=%d rank %d: i%03d, want i%03d",
                       perms[pi][0], perms[pi][1], perms[pi][2], k, i, got[i], order[i]);
        }
    }
    store_close(st, NULL);
    remove_db(p);
}

TEST(selective_filter_returns_k)
{
    const char *p = fresh_path("selective");
    struct store *st = open_store(p, "m", 32, 1);
    REQUIRE(st);
    struct err e;
    REQUIRE(store_begin(st, &e) == 0);
    float v[32];
    char id[16], md[64];
    for (int i = 0; i < 2000; i++) {
        for (int j = 0; j < 32; j++)
            v[j] = frand();
        snprintf(id, sizeof id, "x%d", i);
        snprintf(md, sizeof md, "{\"rare\": %s}", i % 100 == 0 ? "\"yes\"" : "\"no\"");
        struct store_item it = {0};
        it.id = id;
        it.metadata = md;
        it.embedding = v;
        REQUIRE(store_put(st, &it, NULL, &e) == 0);
    }
    REQUIRE(store_commit(st, &e) == 0);
    struct store_filter f = {"rare", "yes"};
    struct store_query sq = {v, 10, 0, -1, &f, 1, 0};
    struct store_hit *hits;
    size_t n;
    REQUIRE(store_search(st, &sq, &hits, &n, &e) == 0);
    CHECK_INT_EQ(n, 10);
    for (size_t i = 0; i < n; i++)
        CHECK(strstr(hits[i].metadata, "\"yes\"") != NULL);
    store_hits_free(hits, n);
    sq.k = 50;
    REQUIRE(store_search(st, &sq, &hits, &n, &e) == 0);
    CHECK_INT_EQ(n, 20); /* only 20 exist */
    store_hits_free(hits, n);
    store_close(st, NULL);
    remove_db(p);
}

static int snapshot(struct store *st, const float *q, int *out)
{
    return search_ids(st, q, 15, 0, -1, NULL, 0, out);
}

static void index_origin(struct store *st, enum store_index_origin *o, char *reason, int64_t *cu)
{
    struct store_index_info info;
    store_index_info(st, &info);
    *o = info.origin;
    snprintf(reason, 256, "%s", info.reason);
    *cu = info.caught_up;
}

/* PostgreSQL: no index file; changes made with psql behind a store that
 * has searched are seen by its next search (the local index catches up
 * from the changes table, or pgvector reads the table), and by a store
 * opened afterwards. */
static void pg_index_caught_up(const char *p)
{
    struct store *st = open_store(p, "m", DIM, 1);
    REQUIRE(st);
    fill_search_store(st);
    float q[DIM];
    rs = 777;
    rvec(q);
    int before[15], after[15], order[NS], m;
    REQUIRE(snapshot(st, q, before) == 15);
    char sql[512];
    int k = snprintf(sql, sizeof sql, "UPDATE items SET embedding = ARRAY[");
    for (int i = 0; i < DIM; i++) /* i005 becomes the query itself: rank 1 */
        k += snprintf(sql + k, sizeof sql - (size_t)k, "%s%.9g", i ? "," : "", (double)q[i]);
    snprintf(sql + k, sizeof sql - (size_t)k, "]::real[] WHERE id = 'i005'");
    REQUIRE(raw_sql(p, sql) == 0);
    snprintf(sql, sizeof sql, "DELETE FROM items WHERE id = 'i%03d'", before[0]);
    REQUIRE(raw_sql(p, sql) == 0);
    memcpy(vs[5], q, sizeof q);
    uint8_t skip[NS] = {0};
    skip[before[0]] = 1;
    expect_order(vs, NS, q, skip, order, &m);
    for (int round = 0; round < 2; round++) {
        REQUIRE(snapshot(st, q, after) == 15);
        CHECK(after[0] == 5);
        for (int i = 0; i < 15; i++)
            CHECKF(after[i] == order[i], "round %d rank %d: %d, wanted %d", round, i, after[i],
                   order[i]);
        store_close(st, NULL);
        st = open_store(p, "m", DIM, 0); /* a store opened after the change */
        REQUIRE(st);
    }
    store_close(st, NULL);
    remove_db(p);
}

TEST(index_file_rebuilt_or_caught_up)
{
    const char *p = fresh_path("persist");
    if (pg_url) {
        pg_index_caught_up(p);
        return;
    }
    char ipath[300];
    snprintf(ipath, sizeof ipath, "%s.hnsw", p);
    struct store *st = open_store(p, "m", DIM, 1);
    REQUIRE(st);
    fill_search_store(st);
    float q[DIM];
    rs = 777;
    rvec(q);
    int before[15], after[15], order[NS], m;
    REQUIRE(snapshot(st, q, before) == 15);
    enum store_index_origin o;
    char why[256];
    const char *whyp = why;
    int64_t cu;
    index_origin(st, &o, why, &cu);
    CHECK_INT_EQ(o, STORE_INDEX_REBUILT);
    CHECK(strcmp(why, "missing") == 0);
    struct err e;
    CHECK_INT_EQ(store_close(st, &e), 0);
    CHECK(access(ipath, F_OK) == 0);
    /* 1. reopened: the file is used as is */
    st = open_store(p, "m", DIM, 0);
    REQUIRE(st);
    index_origin(st, &o, why, &cu);
    CHECK_INT_EQ(o, STORE_INDEX_NOT_LOADED); /* lazy */
    REQUIRE(snapshot(st, q, after) == 15);
    CHECK(memcmp(before, after, sizeof before) == 0);
    index_origin(st, &o, why, &cu);
    CHECKF(o == STORE_INDEX_FILE, "origin %d: %s", o, why);
    CHECK_INT_EQ(cu, 0);
    store_close(st, NULL);
    /* 2. deleted: rebuilt, same results */
    unlink(ipath);
    st = open_store(p, "m", DIM, 0);
    REQUIRE(snapshot(st, q, after) == 15);
    CHECK(memcmp(before, after, sizeof before) == 0);
    index_origin(st, &o, why, &cu);
    CHECK(o == STORE_INDEX_REBUILT && strcmp(why, "missing") == 0);
    store_close(st, NULL);
    /* 3. corrupted (a flipped byte, then a truncation): rebuilt */
    for (int t = 0; t < 2; t++) {
        size_t len;
        char *b = test_read_file(ipath, &len);
        REQUIRE(b && len > 1000);
        FILE *f = fopen(ipath, "wb");
        if (t == 0) {
            b[len / 2] ^= 1;
            fwrite(b, 1, len, f);
        } else
            fwrite(b, 1, len - 100, f);
        fclose(f);
        free(b);
        st = open_store(p, "m", DIM, 0);
        REQUIRE(snapshot(st, q, after) == 15);
        CHECK(memcmp(before, after, sizeof before) == 0);
        index_origin(st, &o, why, &cu);
        CHECK(o == STORE_INDEX_REBUILT);
        CHECK_STR_CONTAINS((const char *)whyp, "unreadable");
        CHECK_STR_CONTAINS((const char *)whyp, t == 0 ? "checksum" : "payload");
        store_close(st, NULL);
    }
    /* 4. changed behind the store's back with sqlite3: caught up */
    sqlite3 *db;
    REQUIRE(sqlite3_open(p, &db) == SQLITE_OK);
    float nv[DIM];
    memcpy(nv, q, sizeof nv); /* i005 becomes the query itself: rank 1 */
    sqlite3_stmt *s;
    REQUIRE(sqlite3_prepare_v2(db, "UPDATE items SET embedding = ?1 WHERE id = 'i005'", -1, &s,
                               NULL) == SQLITE_OK);
    sqlite3_bind_blob(s, 1, nv, sizeof nv, SQLITE_STATIC);
    CHECK(sqlite3_step(s) == SQLITE_DONE);
    sqlite3_finalize(s);
    char sql[128];
    snprintf(sql, sizeof sql, "DELETE FROM items WHERE id = 'i%03d'", before[0]);
    CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    st = open_store(p, "m", DIM, 0);
    REQUIRE(snapshot(st, q, after) == 15);
    index_origin(st, &o, why, &cu);
    CHECKF(o == STORE_INDEX_FILE, "origin %d: %s", o, why);
    CHECK_INT_EQ(cu, 2);
    memcpy(vs[5], nv, sizeof nv);
    uint8_t skip[NS] = {0};
    skip[before[0]] = 1;
    expect_order(vs, NS, q, skip, order, &m);
    CHECK(after[0] == 5);
    for (int i = 0; i < 15; i++)
        CHECK(after[i] == order[i]);
    store_close(st, NULL);
    /* 5. a store that wrote without searching leaves the file behind;
     * the next one catches up from the changes log */
    st = open_store(p, "m", DIM, 0);
    float w[DIM];
    for (int i = 0; i < DIM; i++)
        w[i] = -q[i];
    CHECK_INT_EQ(put(st, "neg", NULL, NULL, NULL, w), 1);
    store_close(st, NULL);
    st = open_store(p, "m", DIM, 0);
    int n = search_ids(st, w, 1, 0, -1, NULL, 0, after);
    index_origin(st, &o, why, &cu);
    CHECK(n == 1 && o == STORE_INDEX_FILE && cu == 1);
    store_close(st, NULL);
    /* 6. an old index file (older than the trimmed changes log): rebuilt */
    size_t olen;
    char *old = test_read_file(ipath, &olen);
    REQUIRE(old);
    st = open_store(p, "m", DIM, 0);
    CHECK_INT_EQ(store_delete(st, "neg", &e), 0);
    CHECK_INT_EQ(store_index_sync(st, &e), 0); /* writes the file, trims the log */
    store_close(st, NULL);
    FILE *f = fopen(ipath, "wb");
    fwrite(old, 1, olen, f);
    fclose(f);
    free(old);
    st = open_store(p, "m", DIM, 0);
    n = search_ids(st, w, 1, 0, -1, NULL, 0, after);
    index_origin(st, &o, why, &cu);
    CHECK(n == 1 && after[0] != 0);
    CHECK_INT_EQ(o, STORE_INDEX_REBUILT);
    CHECK_STR_CONTAINS((const char *)whyp, "stale");
    store_close(st, NULL);
    /* 7. an index of another store with the same path: rebuilt */
    char other[300];
    snprintf(other, sizeof other, "%s.other.db", p);
    remove_db(other);
    struct store *st2 = open_store(other, "m", DIM, 1);
    put(st2, "z", NULL, NULL, NULL, q);
    store_index_sync(st2, &e);
    store_close(st2, NULL);
    char oi[320];
    snprintf(oi, sizeof oi, "%s.hnsw", other);
    REQUIRE(rename(oi, ipath) == 0);
    st = open_store(p, "m", DIM, 0);
    REQUIRE(snapshot(st, q, after) == 15);
    index_origin(st, &o, why, &cu);
    CHECK(o == STORE_INDEX_REBUILT);
    CHECK_STR_CONTAINS((const char *)whyp, "another database");
    store_close(st, NULL);
    remove_db(other);
    remove_db(p);
}

TEST(batches)
{
    const char *p = fresh_path("batch");
    struct store *st = open_store(p, "m", DIM, 1);
    REQUIRE(st);
    struct err e;
    float v[DIM];
    rvec(v);
    CHECK_INT_EQ(put(st, "first", NULL, NULL, NULL, v), 1);
    int got[4];
    CHECK_INT_EQ(search_ids(st, v, 3, 0, -1, NULL, 0, got), 1);
    REQUIRE(store_begin(st, &e) == 0);
    CHECK_INT_EQ(store_begin(st, &e), -ERR_CONFLICT);
    CHECK_INT_EQ(put(st, "i001", NULL, NULL, NULL, v), 1);
    CHECK_INT_EQ(put(st, "i002", NULL, NULL, NULL, v), 1);
    /* the batch's own thread sees its rows, searches see committed data */
    struct store_item it;
    CHECK_INT_EQ(store_get(st, "i001", &it, &e), 0);
    int64_t seq = 0;
    CHECK_INT_EQ(store_exists(st, "i001", &seq, &e), 1);
    CHECK(seq == it.seq && seq > 0);
    store_item_clear(&it);
    /* on a one-session server (test_store.h) a read of committed data
     * during a batch would wait for the batch */
    if (!one_session())
        CHECK_INT_EQ(search_ids(st, v, 3, 0, -1, NULL, 0, got), 1);
    REQUIRE(store_commit(st, &e) == 0);
    CHECK_INT_EQ(search_ids(st, v, 3, 0, -1, NULL, 0, got), 3);
    REQUIRE(store_begin(st, &e) == 0);
    CHECK_INT_EQ(put(st, "i003", NULL, NULL, NULL, v), 1);
    CHECK_INT_EQ(store_delete(st, "first", &e), 0);
    REQUIRE(store_rollback(st, &e) == 0);
    CHECK_INT_EQ(store_commit(st, &e), -ERR_CONFLICT);
    CHECK_INT_EQ(search_ids(st, v, 5, 0, -1, NULL, 0, got), 3);
    CHECK_INT_EQ(store_get(st, "i003", &it, &e), -ERR_NOT_FOUND);
    CHECK_INT_EQ(store_exists(st, "i003", &seq, &e), 0);
    int64_t n;
    store_count(st, &n, &e);
    CHECK_INT_EQ(n, 3);
    store_close(st, NULL);
    remove_db(p);
}

TEST(duplicates_grouped)
{
    const char *p = fresh_path("dups");
    struct store *st = open_store(p, "m", DIM, 1);
    REQUIRE(st);
    float base[6][DIM], v[DIM];
    for (int g = 0; g < 6; g++)
        rvec(base[g]);
    const char *names[] = {"a1", "a2", "a3", "b1", "b2", "c", "d", "e", "f"};
    int grp[] = {0, 0, 0, 1, 1, 2, 3, 4, 5};
    for (int i = 0; i < 9; i++) {
        memcpy(v, base[grp[i]], sizeof v);
        if (i == 1 || i == 4)
            v[0] += 0.01f;
        if (i == 2)
            v[1] -= 0.01f;
        put(st, names[i], names[i], NULL, NULL, v);
    }
    struct store_dup_group *g;
    size_t n;
    struct err e;
    REQUIRE(store_duplicates(st, 0.99f, &g, &n, &e) == 0);
    CHECK_INT_EQ(n, 2);
    if (n == 2) {
        CHECK_INT_EQ(g[0].n, 3);
        CHECK(strcmp(g[0].members[0].id, "a1") == 0 && strcmp(g[0].members[2].id, "a3") == 0);
        CHECK(strcmp(g[0].members[1].source, "a2") == 0);
        CHECK(g[0].max_score >= 0.99f && g[0].max_score <= 1.0001f);
        CHECK_INT_EQ(g[1].n, 2);
        CHECK(strcmp(g[1].members[0].id, "b1") == 0 && strcmp(g[1].members[1].id, "b2") == 0);
        CHECK(g[1].members[0].score >= 0.99f);
    }
    store_dup_groups_free(g, n);
    REQUIRE(store_duplicates(st, 1.0f, &g, &n, &e) == 0);
    CHECK_INT_EQ(n, 0);
    store_dup_groups_free(g, n);
    CHECK_INT_EQ(store_duplicates(st, 2.0f, &g, &n, &e), -ERR_INVALID_ARGUMENT);
    store_close(st, NULL);
    remove_db(p);
}

TEST(reset_embeddings_switches_model)
{
    const char *p = fresh_path("reset");
    struct store *st = open_store(p, "old", DIM, 1);
    REQUIRE(st);
    float v[DIM];
    rvec(v);
    put(st, "a", NULL, NULL, NULL, v);
    put(st, "b", NULL, NULL, NULL, v);
    int got[2];
    CHECK_INT_EQ(search_ids(st, v, 2, 0, -1, NULL, 0, got), 2);
    struct err e;
    REQUIRE(store_reset_embeddings(st, "new", 4, &e) == 0);
    CHECK(strcmp(store_model(st), "new") == 0 && store_dim(st) == 4);
    int64_t w;
    store_count_waiting(st, &w, &e);
    CHECK_INT_EQ(w, 2);
    CHECK_INT_EQ(search_ids(st, v, 2, 0, -1, NULL, 0, got), 0);
    float v4[4] = {1, 2, 3, 4};
    CHECK_INT_EQ(store_put_embedding(st, "b", v4, &e), 0);
    CHECK_INT_EQ(search_ids(st, v4, 2, 0, -1, NULL, 0, got), 1);
    store_close(st, NULL);
    struct store *s2 = NULL;
    struct store_options o = {.model = "old", .dim = DIM};
    CHECK_INT_EQ(store_open(&s2, p, &o, &e), -ERR_MODEL_MISMATCH);
    st = open_store(p, "new", 4, 0);
    REQUIRE(st);
    CHECK_INT_EQ(search_ids(st, v4, 2, 0, -1, NULL, 0, got), 1);
    store_close(st, NULL);
    remove_db(p);
}

struct reader {
    struct store *st;
    int errors;
    int runs;
};

static void *reader_main(void *p)
{
    struct reader *r = p;
    float q[DIM];
    for (int i = 0; i < DIM; i++)
        q[i] = (float)(i + 1);
    for (int i = 0; i < 200; i++) {
        struct store_query sq = {q, 5, 0, -1, NULL, 0, 0};
        struct store_hit *hits;
        size_t n;
        struct err e;
        if (store_search(r->st, &sq, &hits, &n, &e))
            r->errors++;
        else
            store_hits_free(hits, n);
        r->runs++;
    }
    return NULL;
}

TEST(concurrent_search_and_writes)
{
    const char *p = fresh_path("threads");
    struct store *st = open_store(p, "m", DIM, 1);
    REQUIRE(st);
    float v[DIM];
    rvec(v);
    put(st, "seed", NULL, NULL, NULL, v);
    struct reader r = {st, 0, 0};
    pthread_t t;
    /* one session (test_store.h): the reader runs after the writes */
    int together = !one_session();
    if (together)
        REQUIRE(pthread_create(&t, NULL, reader_main, &r) == 0);
    struct err e;
    char id[16];
    for (int i = 0; i < 150; i++) {
        rvec(v);
        snprintf(id, sizeof id, "w%d", i);
        if (i % 50 == 0)
            store_begin(st, &e);
        put(st, id, NULL, NULL, NULL, v);
        if (i % 7 == 3)
            store_delete(st, id, &e);
        if (i % 50 == 49)
            store_commit(st, &e);
    }
    if (together)
        pthread_join(t, NULL);
    else
        reader_main(&r);
    CHECK_INT_EQ(r.errors, 0);
    CHECK_INT_EQ(r.runs, 200);
    struct store_index_info info;
    int got[1];
    search_ids(st, v, 1, 0, -1, NULL, 0, got);
    store_index_info(st, &info);
    int64_t n;
    store_count(st, &n, &e);
    if (!strcmp(store_index_kind(st), "local-hnsw")) /* pgvector: no local index */
        CHECK_INT_EQ((int64_t)info.items, n);
    store_close(st, NULL);
    remove_db(p);
}

/* Creates path (empty file). */
static int touch(const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    fputs("partial index", f);
    return fclose(f);
}

TEST(stale_index_tmp_removed_on_open)
{
    const char *p = fresh_path("tmpfiles");
    if (pg_url) {
        /* nothing of a PostgreSQL store is a file: the case is the open */
        struct store *st = open_store(p, "m", DIM, 1);
        CHECK(st != NULL);
        store_close(st, NULL);
        return;
    }
    struct store *st = open_store(p, "m", DIM, 1);
    REQUIRE(st);
    store_close(st, NULL);
    /* A save killed with -9 leaves PATH.hnsw.tmp.PID behind: make a PID
     * that is surely dead (a child that exited and was reaped). */
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0)
        _exit(0);
    REQUIRE(waitpid(child, NULL, 0) == child);
    char dead[320], alive[320], mine[320], odd[320], other[320], plain[320];
    snprintf(dead, sizeof dead, "%s.hnsw.tmp.%d", p, (int)child);
    snprintf(alive, sizeof alive, "%s.hnsw.tmp.1", p);     /* init: alive */
    snprintf(mine, sizeof mine, "%s.hnsw.tmp.%d", p, (int)getpid()); /* a save in progress */
    snprintf(odd, sizeof odd, "%s.hnsw.tmp.12x", p);       /* not a name we write */
    snprintf(other, sizeof other, "%s.x.hnsw.tmp.%d", p, (int)child); /* another store's */
    snprintf(plain, sizeof plain, "%s.hnsw.tmp.", p);
    const char *all[] = {dead, alive, mine, odd, other, plain};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        REQUIRE(touch(all[i]) == 0);
    st = open_store(p, "m", DIM, 0);
    REQUIRE(st);
    CHECK(access(dead, F_OK) != 0);
    CHECK(access(alive, F_OK) == 0);
    CHECK(access(mine, F_OK) == 0);
    CHECK(access(odd, F_OK) == 0);
    CHECK(access(other, F_OK) == 0);
    CHECK(access(plain, F_OK) == 0);
    /* the store works and its own save still goes through tmp + rename */
    float v[DIM];
    rvec(v);
    struct err e;
    CHECK_INT_EQ(put(st, "a", NULL, NULL, NULL, v), 1);
    CHECK_INT_EQ(store_index_sync(st, &e), 0);
    char ipath[300];
    snprintf(ipath, sizeof ipath, "%s.hnsw", p);
    CHECK(access(ipath, F_OK) == 0);
    store_close(st, NULL);
    for (size_t i = 1; i < sizeof all / sizeof all[0]; i++)
        unlink(all[i]);
    remove_db(p);
}

TEST(duplicate_items_all_found)
{
    /* The indexer's report, end to end: 7 images copied 30 times each
     * (byte-identical embeddings, two of the images near duplicates of two
     * others), interleaved. Every item comes back for its own embedding,
     * from the rebuilt index and from the index file. */
    enum { G = 7, C = 30 };
    const char *p = fresh_path("dupitems");
    struct store *st = open_store(p, "m", DIM, 1);
    REQUIRE(st);
    float g[G][DIM];
    rs = 4242;
    for (int k = 0; k < G; k++) {
        rvec(g[k]);
        if (k == 1 || k == 3)
            for (int j = 0; j < DIM; j++)
                g[k][j] = g[k - 1][j] + 0.0005f * frand();
    }
    char id[32];
    REQUIRE(store_begin(st, NULL) == 0);
    for (int i = 0; i < G * C; i++) {
        snprintf(id, sizeof id, "img%d-copy%d", i % G, i / G);
        REQUIRE(put(st, id, NULL, NULL, NULL, g[i % G]) == 1);
    }
    REQUIRE(store_commit(st, NULL) == 0);
    for (int round = 0; round < 2; round++) {
        int missing = 0;
        for (int i = 0; i < G * C; i++) {
            snprintf(id, sizeof id, "img%d-copy%d", i % G, i / G);
            struct store_query q = {g[i % G], 40, 0, -1, NULL, 0, 100};
            struct store_hit *hits;
            size_t n;
            struct err e;
            REQUIRE(store_search(st, &q, &hits, &n, &e) == 0);
            int found = 0;
            for (size_t j = 0; j < n; j++)
                found |= strcmp(hits[j].id, id) == 0;
            missing += !found;
            store_hits_free(hits, n);
        }
        struct store_index_info info;
        store_index_info(st, &info);
        CHECKF(missing == 0, "round %d (index origin %d): %d of %d items never found", round,
               info.origin, missing, G * C);
        /* PostgreSQL: no index file; pgvector: no local index at all */
        enum store_index_origin want = !pg_url ? (round == 0 ? STORE_INDEX_REBUILT
                                                             : STORE_INDEX_FILE)
                                     : strcmp(store_index_kind(st), "local-hnsw")
                                         ? STORE_INDEX_NOT_LOADED
                                         : STORE_INDEX_REBUILT;
        CHECK_INT_EQ(info.origin, want);
        store_close(st, NULL);
        st = open_store(p, "m", DIM, 0);
        REQUIRE(st);
    }
    store_close(st, NULL);
    remove_db(p);
}

/* Issue 9: after the index caught up with overwrites, deletes and many
 * copies, items were never found again until a reload. Random batches of
 * puts (new items, copies of a "hot" vector, near duplicates),
 * overwrites and deletes, each committed (the index catches up from the
 * changes log) and now and then a close and reopen (the index file is
 * loaded, then caught up); after every commit every item is found by its
 * own embedding: a search with k = copies + 1 returns all its copies
 * first, and nothing deleted. IMGSEARCH_TEST_SEED repeats a run. */
#define RS_ITEMS 400
#define RS_CLASSES 400

static uint64_t store_test_seed(uint64_t dflt)
{
    const char *e = getenv("IMGSEARCH_TEST_SEED");
    return e && *e ? strtoull(e, NULL, 0) : dflt;
}

TEST(random_batches_keep_every_item_findable)
{
    uint64_t seed = store_test_seed(1);
    const char *p = fresh_path("randombatch");
    struct store *st = open_store(p, "m", DIM, 1);
    REQUIRE(st);
    static float cv[RS_CLASSES][DIM];
    static int cls[RS_ITEMS], copies[RS_CLASSES];
    int ncls = 1, live = 0, ops = 0, max_hot = 0, failed = 0;
    rs = seed * 0x9E3779B97F4A7C15ull + 7;
    rvec(cv[0]);
    for (int i = 0; i < RS_ITEMS; i++)
        cls[i] = -1;
    char id[32], msg[300] = "";
    struct err e;
    for (int batch = 0; batch < 220 && !failed; batch++) {
        int nops = 1 + (int)((rs >> 20) % 8), in_tx = frand() < 0.7f;
        if (in_tx)
            REQUIRE(store_begin(st, &e) == 0);
        for (int o = 0; o < nops; o++, ops++) {
            int item = (int)((uint64_t)((frand() + 1) * 0.5f * RS_ITEMS) % RS_ITEMS);
            snprintf(id, sizeof id, "it%d", item);
            if (cls[item] >= 0 && frand() < -0.4f) { /* delete: 30% */
                REQUIRE(store_delete(st, id, &e) == 0);
                copies[cls[item]]--;
                cls[item] = -1;
                live--;
                continue;
            }
            float u = frand();
            int c;
            if (u < 0.1f && copies[0] < 150)
                c = 0; /* the hot vector */
            else if (u < 0.4f && ncls > 1)
                c = (int)((rs >> 17) % (uint64_t)ncls); /* a copy of a known vector */
            else if (ncls < RS_CLASSES) {
                c = ncls++;
                rvec(cv[c]);
                if (u < 0.6f) /* near duplicate: cosine about 1 - 1e-7 */
                    for (int j = 0; j < DIM; j++)
                        cv[c][j] = cv[c - 1][j] + 0.0005f * frand();
            } else
                c = 0;
            REQUIRE(put(st, id, NULL, NULL, NULL, cv[c]) >= 0);
            if (cls[item] >= 0)
                copies[cls[item]]--;
            else
                live++;
            cls[item] = c;
            copies[c]++;
        }
        if (in_tx)
            REQUIRE(store_commit(st, &e) == 0);
        if (copies[0] > max_hot)
            max_hot = copies[0];
        if (batch % 40 == 39) { /* reload: the file, then the log */
            REQUIRE(store_close(st, &e) == 0);
            st = open_store(p, "m", DIM, 0);
            REQUIRE(st);
        }
        for (int c = 0; c < ncls && !failed; c++) {
            if (!copies[c])
                continue;
            struct store_query sq = {cv[c], copies[c] + 1, 0, -1, NULL, 0, 0};
            struct store_hit *hits;
            size_t n;
            REQUIRE(store_search(st, &sq, &hits, &n, &e) == 0);
            int first = 0, dead = 0;
            for (size_t j = 0; j < n; j++) {
                int it = atoi(hits[j].id + 2);
                if (cls[it] < 0)
                    dead++;
                else if (cls[it] == c && (int)j < copies[c])
                    first++;
            }
            if (first != copies[c] || dead) {
                failed = 1;
                snprintf(msg, sizeof msg, "seed %llu batch %d: vector %d: %d of its %d copies "
                         "first, %d deleted items returned (%d live)", (unsigned long long)seed,
                         batch, c, first, copies[c], dead, live);
            }
            store_hits_free(hits, n);
        }
    }
    CHECKF(!failed, "%s", msg);
    int64_t cnt = -1;
    CHECK(store_count(st, &cnt, &e) == 0 && cnt == live);
    printf("random_batches_keep_every_item_findable: seed %llu (IMGSEARCH_TEST_SEED repeats "
           "it), %d operations, up to %d copies of one vector\n", (unsigned long long)seed, ops,
           max_hot);
    store_close(st, NULL);
    remove_db(p);
}

/* Issue 9: what a store accepts is what every reader can hand out. */
TEST(hostile_inputs_refused)
{
    const char *p = fresh_path("hostile");
    struct store *st = open_store(p, "m", DIM, 1);
    REQUIRE(st);
    float v[DIM];
    rvec(v);
    /* ids and metadata that are not UTF-8 never reach the table; a source
     * is a file path and may hold any bytes (readers show U+FFFD) */
    CHECK_INT_EQ(put(st, "bad\xff\xfeid", NULL, NULL, NULL, v), -ERR_INVALID_UTF8);
    CHECK_INT_EQ(put(st, "latin1-src", "/photos/caf\xe9.jpg", NULL, NULL, v), 1);
    CHECK_INT_EQ(put(st, "ok", NULL, NULL, "{\"k\": \"\xed\xa0\x80\"}", v), -ERR_INVALID_UTF8);
    CHECK_INT_EQ(put(st, "caf\xc3\xa9", "/photos/caf\xc3\xa9.jpg", NULL, NULL, v), 1);
    /* metadata nested deeper than STORE_METADATA_DEPTH_MAX */
    char deep[2 * 40 + 16];
    /* {"a": [[[...]]]} with 40 levels */
    size_t n = (size_t)snprintf(deep, sizeof deep, "{\"a\":");
    for (int i = 0; i < 39; i++)
        deep[n++] = '[';
    for (int i = 0; i < 39; i++)
        deep[n++] = ']';
    deep[n++] = '}';
    deep[n] = 0;
    CHECK_INT_EQ(put(st, "deep", NULL, NULL, deep, v), -ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(put(st, "flat", NULL, NULL, "{\"a\": [[1]], \"b\": {\"c\": 2}}", v), 1);
    /* vectors whose norm float32 cannot invert: no NaN score can come out */
    float tiny[DIM];
    for (int i = 0; i < DIM; i++)
        tiny[i] = 1e-45f;
    CHECK_INT_EQ(put(st, "tiny", NULL, NULL, NULL, tiny), -ERR_INVALID_ARGUMENT);
    struct store_query q = {.vec = tiny, .k = 5, .min_score = -1};
    struct store_hit *hits = NULL;
    size_t nh = 0;
    struct err e;
    CHECK_INT_EQ(store_search(st, &q, &hits, &nh, &e), -ERR_INVALID_ARGUMENT);
    /* sixteen filters with long keys and values: the SQL outgrew 4 KB */
    struct store_filter f[STORE_FILTERS_MAX];
    char keys[STORE_FILTERS_MAX][257];
    for (int i = 0; i < STORE_FILTERS_MAX; i++) {
        memset(keys[i], 'a' + i, 256);
        keys[i][256] = 0;
        f[i] = (struct store_filter){keys[i], "x"};
    }
    q = (struct store_query){.vec = v, .k = 5, .min_score = -1, .filters = f,
                             .n_filters = STORE_FILTERS_MAX};
    CHECK_INT_EQ(store_search(st, &q, &hits, &nh, &e), 0);
    CHECK_INT_EQ(nh, 0);
    store_hits_free(hits, nh);
    struct store_filter badf = {"k", "\xff"};
    q.filters = &badf;
    q.n_filters = 1;
    CHECK_INT_EQ(store_search(st, &q, &hits, &nh, &e), -ERR_INVALID_UTF8);
    q.n_filters = STORE_FILTERS_MAX + 1;
    CHECK_INT_EQ(store_search(st, &q, &hits, &nh, &e), -ERR_INVALID_ARGUMENT);
    store_close(st, NULL);
    remove_db(p);
}

/* store_put_get answers with the row it wrote; the counts are one row. */
TEST(put_get_and_counts)
{
    const char *p = fresh_path("putget");
    struct store *st = open_store(p, "m", DIM, 1);
    REQUIRE(st);
    int64_t items = -2, waiting = -2;
    store_counts_cached(st, &items, &waiting);
    CHECK_INT_EQ(items, 0);
    CHECK_INT_EQ(waiting, 0);
    float v[DIM];
    rvec(v);
    struct store_item it = {.id = "a", .source = "/x/a.jpg", .sha256 = "ab", .size = 5,
                            .mtime = -1, .metadata = "{\"c\": 1}"};
    struct store_item out;
    struct err e;
    int is_new = -1;
    REQUIRE(store_put_get(st, &it, &is_new, &out, &e) == 0);
    CHECK_INT_EQ(is_new, 1);
    CHECK(out.seq > 0 && !strcmp(out.id, "a") && !strcmp(out.source, "/x/a.jpg"));
    CHECK(!out.has_embedding && out.embedding == NULL && out.created_at > 0);
    CHECK_STR_CONTAINS(out.metadata, "\"c\"");
    int64_t seq = out.seq, created = out.created_at;
    store_item_clear(&out);
    store_counts_cached(st, &items, &waiting);
    CHECK_INT_EQ(items, 1);
    CHECK_INT_EQ(waiting, 1);
    it.embedding = v;
    REQUIRE(store_put_get(st, &it, &is_new, &out, &e) == 0);
    CHECK_INT_EQ(is_new, 0);
    CHECK(out.seq == seq && out.created_at == created && out.has_embedding);
    store_item_clear(&out);
    CHECK_INT_EQ(put(st, "b", NULL, NULL, NULL, NULL), 1);
    store_counts_cached(st, &items, &waiting);
    CHECK_INT_EQ(items, 2);
    CHECK_INT_EQ(waiting, 1);
    /* a bad put fills nothing */
    it.id = "bad\xff";
    CHECK_INT_EQ(store_put_get(st, &it, NULL, &out, &e), -ERR_INVALID_UTF8);
    CHECK(out.id == NULL);
    REQUIRE(store_delete(st, "a", &e) == 0);
    store_counts_cached(st, &items, &waiting);
    CHECK_INT_EQ(items, 1);
    CHECK_INT_EQ(waiting, 1);
    /* a change made with the sqlite3 shell (psql) is counted by the triggers */
    CHECK(raw_sql(p, "DELETE FROM items") == 0);
    int64_t n = -1;
    CHECK(store_count(st, &n, &e) == 0 && n == 0);
    CHECK(store_count_waiting(st, &n, &e) == 0 && n == 0);
    store_counts_cached(st, &items, &waiting);
    CHECK_INT_EQ(items, 0);
    store_close(st, NULL);
    remove_db(p);
}

TEST_MAIN(create_open_mismatch, items_put_get_delete_list, search_filters_paging,
          filters_all_apply_in_any_order,
          selective_filter_returns_k, index_file_rebuilt_or_caught_up, batches,
          duplicates_grouped, reset_embeddings_switches_model, concurrent_search_and_writes,
          stale_index_tmp_removed_on_open, duplicate_items_all_found,
          random_batches_keep_every_item_findable, hostile_inputs_refused, put_get_and_counts)
