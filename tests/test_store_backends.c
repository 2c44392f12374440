/* test_store_backends.c - store cases that matter most where SQL and a
 * server are involved, run on every backend like test_store.c: SQL
 * injection attempts through ids, sources, metadata and filters; a
 * PostgreSQL store made without pgvector converted by a later open; a
 * PostgreSQL restart under an open store. */
#include <jansson.h>
#include <stdint.h>
#include <unistd.h>

#include "test_store.h"

/* Ids, sources, metadata and filters that would break SQL built from
 * strings are stored and matched as data (every backend binds them). */
TEST(sql_injection_attempts_are_data)
{
    const char *p = fresh_path("inject");
    struct store *st = open_store(p, "m", DIM, 1);
    REQUIRE(st);
    static const char *const evil[] = {
        "'); DROP TABLE items; --", "x' OR '1'='1", "\"; DELETE FROM items; --",
        "a\\'b", "$1", "'||(SELECT version())||'", "%s%n", "-- comment", "}{\"",
    };
    const int ne = (int)(sizeof evil / sizeof evil[0]);
    float v[DIM];
    char md[256];
    for (int i = 0; i < ne; i++) {
        rvec(v);
        json_t *j = json_pack("{s:s,s:s}", "k", evil[i], evil[i], "v");
        char *t = json_dumps(j, JSON_COMPACT);
        snprintf(md, sizeof md, "%s", t);
        free(t);
        json_decref(j);
        CHECKF(put(st, evil[i], evil[i], NULL, md, v) == 1, "put %s", evil[i]);
    }
    int64_t n = 0;
    struct err e;
    CHECK(store_count(st, &n, &e) == 0 && n == ne);
    for (int i = 0; i < ne; i++) {
        struct store_item it;
        REQUIRE(store_get(st, evil[i], &it, &e) == 0);
        CHECK(strcmp(it.id, evil[i]) == 0 && strcmp(it.source, evil[i]) == 0);
        store_item_clear(&it);
        CHECK(store_find_source(st, evil[i], &it, &e) == 0 && it.id && !strcmp(it.id, evil[i]));
        store_item_clear(&it);
        /* each evil value matches its own item only, as a key and as a value */
        struct store_filter f[2] = {{"k", evil[i]}, {evil[i], "v"}};
        for (int w = 0; w < 2; w++) {
            struct store_query q = {v, 20, 0, -1, &f[w], 1, 0};
            struct store_hit *hits;
            size_t nh = 0;
            REQUIRE(store_search(st, &q, &hits, &nh, &e) == 0);
            CHECKF(nh == 1 && !strcmp(hits[0].id, evil[i]), "filter %d on %s: %zu hits", w,
                   evil[i], nh);
            store_hits_free(hits, nh);
        }
    }
    CHECK_INT_EQ(store_delete(st, "x' OR '1'='1", &e), 0);
    CHECK(store_count(st, &n, &e) == 0 && n == ne - 1);
    CHECK_INT_EQ(store_delete(st, "' OR ''='", &e), -ERR_NOT_FOUND);
    store_close(st, NULL);
    remove_db(p);
}

/* PostgreSQL: a store made without pgvector (real[] and the local index)
 * is converted by the next open on a server that has it, in place: every
 * item and embedding is still there and pgvector serves. Without pgvector
 * (postgresql-15) the store stays as it is. File stores: no such thing. */
TEST(fallback_store_converted_to_pgvector)
{
    const char *p = fresh_path("convert");
    if (!pg_url)
        return;
    struct store_options o = {.model = "m", .dim = DIM, .create = 1, .no_vector = 1};
    struct store *st = NULL;
    struct err e;
    REQUIRE(store_open(&st, p, &o, &e) == 0);
    CHECK(strcmp(store_index_kind(st), "local-hnsw") == 0);
    float vv[40][DIM];
    char id[16];
    for (int i = 0; i < 40; i++) {
        rvec(vv[i]);
        snprintf(id, sizeof id, "c%02d", i);
        REQUIRE(put(st, id, NULL, NULL, "{\"n\":1}", i % 5 ? vv[i] : NULL) == 1);
    }
    store_close(st, NULL);
    o.no_vector = 0;
    o.create = 0;
    REQUIRE(store_open(&st, p, &o, &e) == 0);
    const char *kind = store_index_kind(st);
    fprintf(stderr, "fallback_store_converted_to_pgvector: now %s\n", kind);
    int64_t n = 0, w = 0;
    CHECK(store_count(st, &n, &e) == 0 && n == 40);
    CHECK(store_count_waiting(st, &w, &e) == 0 && w == 8);
    for (int i = 0; i < 40; i++) {
        struct store_item it;
        snprintf(id, sizeof id, "c%02d", i);
        REQUIRE(store_get(st, id, &it, &e) == 0);
        CHECK(it.has_embedding == (i % 5 != 0));
        if (it.embedding)
            CHECK(memcmp(it.embedding, vv[i], sizeof vv[i]) == 0);
        store_item_clear(&it);
        if (i % 5) {
            struct store_query q = {vv[i], 1, 0, -1, NULL, 0, 0};
            struct store_hit *hits;
            size_t nh = 0;
            REQUIRE(store_search(st, &q, &hits, &nh, &e) == 0);
            CHECK(nh == 1 && !strcmp(hits[0].id, id));
            store_hits_free(hits, nh);
        }
    }
    store_close(st, NULL);
    remove_db(p);
}

/* PostgreSQL restarted under an open store (IMGSEARCH_TEST_PG_STOP and
 * _START are the shell commands, set by tests/cli/test_store_pg.sh): while
 * it is down calls fail at once with ERR_UNAVAILABLE (HTTP 503), and the
 * store recovers by itself once it is back; no committed write is lost. */
TEST(reconnects_after_restart)
{
    const char *p = fresh_path("restart");
    const char *stop = getenv("IMGSEARCH_TEST_PG_STOP"), *start = getenv("IMGSEARCH_TEST_PG_START");
    if (!pg_url || !stop || !start)
        return; /* needs a server this test may restart */
    struct store *st = open_store(p, "m", DIM, 1);
    REQUIRE(st);
    float v[DIM];
    rvec(v);
    CHECK_INT_EQ(put(st, "before", NULL, NULL, NULL, v), 1);
    REQUIRE(system(stop) == 0);
    int64_t n = -1;
    struct err e;
    CHECK_INT_EQ(store_count(st, &n, &e), -ERR_UNAVAILABLE);
    CHECK_INT_EQ(put(st, "down", NULL, NULL, NULL, v), -ERR_UNAVAILABLE);
    CHECK_STR_CONTAINS(e.msg, "unavailable");
    /* every read fails the same way, and cleanly: a read that got no
     * connection once freed a result it never had (serve crashed on a PUT
     * while the database was away) */
    struct store_item it = {0};
    struct store_item *items = NULL;
    size_t ni = 0;
    int64_t next = 0;
    CHECK_INT_EQ(store_get(st, "before", &it, &e), -ERR_UNAVAILABLE);
    CHECK_INT_EQ(store_exists(st, "before", NULL, &e), -ERR_UNAVAILABLE);
    CHECK_INT_EQ(store_find_source(st, "/x", &it, &e), -ERR_UNAVAILABLE);
    CHECK_INT_EQ(store_list(st, 0, 10, &items, &ni, &next, &e), -ERR_UNAVAILABLE);
    CHECK_INT_EQ(store_waiting(st, 0, 10, &items, &ni, &next, &e), -ERR_UNAVAILABLE);
    REQUIRE(system(start) == 0);
    int rc = -1;
    for (int i = 0; i < 100 && rc; i++) { /* the backoff is at most 2 s */
        rc = store_count(st, &n, &e);
        if (rc)
            usleep(100000);
    }
    CHECKF(rc == 0, "%s", e.msg);
    CHECK_INT_EQ(n, 1);
    /* recovered: no call fails any more */
    for (int i = 0; i < 20; i++) {
        CHECK_INT_EQ(store_get(st, "before", &it, &e), 0);
        store_item_clear(&it);
    }
    CHECK_INT_EQ(put(st, "after", NULL, NULL, NULL, v), 1);
    int got[4];
    CHECK_INT_EQ(search_ids(st, v, 3, 0, -1, NULL, 0, got), 2);
    store_close(st, NULL);
    remove_db(p);
}

TEST_MAIN(sql_injection_attempts_are_data, fallback_store_converted_to_pgvector,
          reconnects_after_restart)
