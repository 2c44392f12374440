/* test_store_claim.c - the store conformance suite, continued: leased
 * claims of waiting items (store_claim_waiting, store_claims_renew), the
 * failed state (store_set_failed), idempotent registration
 * (store_register), and the schema upgrade that brought them.
 *
 * Runs against the embedded store, or against the PostgreSQL database of
 * IMGSEARCH_TEST_STORE (tests/cli/test_store_pg.sh), like test_store.c;
 * helpers in test_store.h. */
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

#include "test_store.h"

/* n waiting items w1..wn (source /img/wI.jpg), then e1, e2 embedded */
static void fill(struct store *st, int n)
{
    char id[32], src[64];
    for (int i = 1; i <= n; i++) {
        snprintf(id, sizeof id, "w%d", i);
        snprintf(src, sizeof src, "/img/w%d.jpg", i);
        REQUIRE(put(st, id, src, NULL, NULL, NULL) == 1);
    }
    float v[DIM];
    rvec(v);
    REQUIRE(put(st, "e1", "/img/e1.jpg", "aa", NULL, v) == 1);
    rvec(v);
    REQUIRE(put(st, "e2", "/img/e2.jpg", "bb", NULL, v) == 1);
}

/* claims for owner; returns how many, their ids' numbers in nums */
static int claim(struct store *st, const char *owner, int lease, int limit, int *nums,
                 int64_t *retry)
{
    struct store_item *items = NULL;
    size_t n = 0;
    struct err e;
    int rc = store_claim_waiting(st, owner, lease, limit, &items, &n, retry, &e);
    if (rc) {
        fprintf(stderr, "claim: %s\n", e.msg);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        CHECK(items[i].id[0] == 'w' && !items[i].has_embedding && !items[i].error);
        if (i)
            CHECK(items[i].seq > items[i - 1].seq); /* seq order */
        if (nums)
            nums[i] = atoi(items[i].id + 1);
    }
    store_items_free(items, n);
    return (int)n;
}

/* a column of item id, read behind the store's back: "NULL" when null */
static void raw_col(const char *target, const char *id, const char *col, char *out, size_t n)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT coalesce(%s::text, 'NULL') FROM items WHERE id = '%s'",
             col, id);
    snprintf(out, n, "?");
    if (store_is_url(target)) {
        PGconn *c = PQconnectdb(target);
        PGresult *r = PQexec(c, sql);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            snprintf(out, n, "%s", PQgetvalue(r, 0, 0));
        PQclear(r);
        PQfinish(c);
        return;
    }
    snprintf(sql, sizeof sql, "SELECT coalesce(CAST(%s AS TEXT), 'NULL') FROM items WHERE id = '%s'",
             col, id);
    sqlite3 *db;
    sqlite3_stmt *s;
    if (sqlite3_open(target, &db) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK) {
        if (sqlite3_step(s) == SQLITE_ROW)
            snprintf(out, n, "%s", (const char *)sqlite3_column_text(s, 0));
        sqlite3_finalize(s);
    }
    sqlite3_close(db);
}

TEST(claims_are_leased_and_exclusive)
{
    const char *p = fresh_path("claim");
    struct store *st = open_store(p, "m", DIM, 1);
    REQUIRE(st);
    fill(st, 10);
    int a[16], b[16];
    int64_t retry = 77;
    CHECK_INT_EQ(claim(st, "host:1:a", 60, 4, a, &retry), 4);
    CHECK_INT_EQ((int)retry, 0);
    for (int i = 0; i < 4; i++)
        CHECK_INT_EQ(a[i], i + 1); /* oldest first */
    CHECK_INT_EQ(claim(st, "host:2:b", 60, 100, b, NULL), 6);
    CHECK_INT_EQ(b[0], 5);
    CHECK_INT_EQ(b[5], 10);
    /* everything is leased: a third owner gets none, and when to retry */
    CHECK_INT_EQ(claim(st, "host:3:c", 60, 100, NULL, &retry), 0);
    CHECKF(retry > 50000 && retry <= 60000, "retry %lld", (long long)retry);
    /* the owners holding leases, each once */
    char **owners = NULL;
    size_t no = 0;
    struct err oe;
    REQUIRE(store_claim_owners(st, &owners, &no, &oe) == 0);
    CHECK_INT_EQ((int)no, 2);
    int seen_a = 0, seen_b = 0;
    for (size_t i = 0; i < no; i++) {
        seen_a += !strcmp(owners[i], "host:1:a");
        seen_b += !strcmp(owners[i], "host:2:b");
    }
    CHECK(seen_a == 1 && seen_b == 1);
    store_owners_free(owners, no);
    /* nor the owner itself, while its lease runs */
    CHECK_INT_EQ(claim(st, "host:1:a", 60, 100, a, NULL), 0);
    /* writing an embedding ends the lease: the item no longer waits */
    char col[64];
    raw_col(p, "w1", "lease_owner", col, sizeof col);
    CHECK(strcmp(col, "host:1:a") == 0);
    float v[DIM];
    rvec(v);
    struct err e;
    CHECK_INT_EQ(store_put_embedding(st, "w1", v, &e), 0);
    raw_col(p, "w1", "lease_owner", col, sizeof col);
    CHECK(strcmp(col, "NULL") == 0);
    raw_col(p, "w1", "lease_until", col, sizeof col);
    CHECK(strcmp(col, "NULL") == 0);
    /* so does a put with an embedding (the ingest engine's write) */
    rvec(v);
    CHECK_INT_EQ(put(st, "w2", "/img/w2.jpg", "cc", NULL, v), 0);
    raw_col(p, "w2", "lease_owner", col, sizeof col);
    CHECK(strcmp(col, "NULL") == 0);
    /* a put without one (a scan saw the file change) keeps it */
    CHECK_INT_EQ(put(st, "w3", "/img/w3.jpg", NULL, "{\"k\":1}", NULL), 0);
    raw_col(p, "w3", "lease_owner", col, sizeof col);
    CHECK(strcmp(col, "host:1:a") == 0);
    /* a lease that expired is claimed by another owner */
    REQUIRE(raw_sql(p, "UPDATE items SET lease_until = 1000 WHERE id IN ('w3', 'w4')") == 0);
    CHECK_INT_EQ(claim(st, "host:3:c", 60, 100, b, NULL), 2);
    CHECK(b[0] == 3 && b[1] == 4);
    /* renew keeps the leases, release gives them back */
    int64_t k = 0;
    CHECK_INT_EQ(store_claims_renew(st, "host:2:b", 120, &k, &e), 0);
    CHECK_INT_EQ((int)k, 6);
    CHECK_INT_EQ(store_claims_renew(st, "host:2:b", 0, &k, &e), 0);
    CHECK_INT_EQ((int)k, 6);
    raw_col(p, "w5", "lease_owner", col, sizeof col);
    CHECK(strcmp(col, "NULL") == 0);
    CHECK_INT_EQ(claim(st, "host:3:c", 60, 100, b, NULL), 6); /* w5..w10 */
    /* bad arguments */
    struct store_item *items;
    size_t n;
    CHECK_INT_EQ(store_claim_waiting(st, "", 60, 1, &items, &n, NULL, &e), -ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(store_claim_waiting(st, "o", 0, 1, &items, &n, NULL, &e), -ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(store_claim_waiting(st, "o", 60, 0, &items, &n, NULL, &e), -ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(store_claims_renew(st, "o", -1, NULL, &e), -ERR_INVALID_ARGUMENT);
    /* nothing waits at all: retry -1 */
    for (int i = 3; i <= 10; i++) {
        char id[16];
        snprintf(id, sizeof id, "w%d", i);
        rvec(v);
        CHECK_INT_EQ(store_put_embedding(st, id, v, &e), 0);
    }
    CHECK_INT_EQ(claim(st, "host:3:c", 60, 100, NULL, &retry), 0);
    CHECK_INT_EQ((int)retry, -1);
    store_close(st, NULL);
    remove_db(p);
}

TEST(a_lease_runs_out)
{
    const char *p = fresh_path("lease");
    struct store *st = open_store(p, "m", DIM, 1);
    REQUIRE(st);
    fill(st, 3);
    int64_t retry = 0;
    CHECK_INT_EQ(claim(st, "a", 1, 10, NULL, NULL), 3);
    CHECK_INT_EQ(claim(st, "b", 1, 10, NULL, &retry), 0);
    CHECKF(retry > 0 && retry <= 1000, "retry %lld", (long long)retry);
    usleep((useconds_t)(retry + 150) * 1000);
    CHECK_INT_EQ(claim(st, "b", 60, 10, NULL, NULL), 3);
    store_close(st, NULL);
    remove_db(p);
}

TEST(failed_items_are_not_claimed_until_their_file_changes)
{
    const char *p = fresh_path("failed");
    struct store *st = open_store(p, "m", DIM, 1);
    REQUIRE(st);
    fill(st, 3);
    struct err e;
    CHECK_INT_EQ(claim(st, "a", 60, 1, NULL, NULL), 1); /* w1 leased */
    CHECK_INT_EQ(store_set_failed(st, "w1", "/img/w1.jpg: not a JPEG", 100, 1700000000, &e), 0);
    CHECK_INT_EQ(store_set_failed(st, "nope", "x", 1, 1, &e), -ERR_NOT_FOUND);
    int64_t n = -1;
    CHECK_INT_EQ(store_count_failed(st, &n, &e), 0);
    CHECK_INT_EQ((int)n, 1);
    CHECK_INT_EQ((int)store_failed_cached(st), 1);
    struct store_item it;
    REQUIRE(store_get(st, "w1", &it, &e) == 0);
    CHECK(it.error && strcmp(it.error, "/img/w1.jpg: not a JPEG") == 0);
    store_item_clear(&it);
    REQUIRE(store_find_source(st, "/img/w1.jpg", &it, &e) == 0);
    CHECK(it.error != NULL);
    store_item_clear(&it);
    struct store_item *items;
    size_t k;
    int64_t next;
    REQUIRE(store_list(st, 0, 10, &items, &k, &next, &e) == 0);
    CHECK(k == 5 && items[0].error && !items[1].error);
    store_items_free(items, k);
    /* the failure ended w1's lease; it is not claimed, w2 and w3 are */
    int nums[8];
    CHECK_INT_EQ(claim(st, "b", 60, 10, nums, NULL), 2);
    CHECK(nums[0] == 2 && nums[1] == 3);
    /* a scan that sees the same size and mtime keeps the failure */
    CHECK_INT_EQ(put(st, "w1", "/img/w1.jpg", NULL, NULL, NULL), 0);
    CHECK_INT_EQ(store_count_failed(st, &n, &e), 0);
    CHECK_INT_EQ((int)n, 1);
    CHECK_INT_EQ(claim(st, "c", 60, 10, NULL, NULL), 0);
    /* another mtime: the failure ends, the item is claimed again */
    struct store_item up = {.id = "w1", .source = "/img/w1.jpg", .size = 100, .mtime = 1700000100};
    CHECK_INT_EQ(store_put(st, &up, NULL, &e), 0);
    CHECK_INT_EQ(store_count_failed(st, &n, &e), 0);
    CHECK_INT_EQ((int)n, 0);
    REQUIRE(store_get(st, "w1", &it, &e) == 0);
    CHECK(it.error == NULL);
    store_item_clear(&it);
    CHECK_INT_EQ(claim(st, "c", 60, 10, nums, NULL), 1);
    CHECK_INT_EQ(nums[0], 1);
    /* an embedding ends a failure too; a deleted failed item leaves the count */
    CHECK_INT_EQ(store_set_failed(st, "w2", "bad", -1, -1, &e), 0);
    CHECK_INT_EQ(store_set_failed(st, "w3", NULL, 100, 1700000000, &e), 0);
    REQUIRE(store_get(st, "w3", &it, &e) == 0);
    CHECK(it.error && strcmp(it.error, "could not be embedded") == 0);
    store_item_clear(&it);
    CHECK_INT_EQ(store_count_failed(st, &n, &e), 0);
    CHECK_INT_EQ((int)n, 2);
    float v[DIM];
    rvec(v);
    CHECK_INT_EQ(store_put_embedding(st, "w2", v, &e), 0);
    CHECK_INT_EQ(store_delete(st, "w3", &e), 0);
    CHECK_INT_EQ(store_count_failed(st, &n, &e), 0);
    CHECK_INT_EQ((int)n, 0);
    /* a reason that is not UTF-8 (a Latin-1 file name) is kept repaired */
    CHECK_INT_EQ(store_set_failed(st, "w1", "/img/caf\xe9.jpg: bad", 1, 1, &e), 0);
    REQUIRE(store_get(st, "w1", &it, &e) == 0);
    CHECK(it.error && strcmp(it.error, "/img/caf\xef\xbf\xbd.jpg: bad") == 0);
    store_item_clear(&it);
    store_close(st, NULL);
    /* the failure outlives the process */
    st = open_store(p, "m", DIM, 0);
    REQUIRE(st);
    CHECK_INT_EQ((int)store_failed_cached(st), 1);
    CHECK_INT_EQ(claim(st, "d", 60, 10, NULL, NULL), 0);
    store_close(st, NULL);
    remove_db(p);
}

TEST(register_is_idempotent)
{
    const char *p = fresh_path("register");
    struct store *st = open_store(p, "m", DIM, 1);
    REQUIRE(st);
    struct err e;
    struct store_item it = {.id = "a.jpg", .source = "/c/a.jpg", .size = 10, .mtime = 20};
    int is_new = -1;
    CHECK_INT_EQ(store_register(st, &it, &is_new, &e), 0);
    CHECK_INT_EQ(is_new, 1);
    CHECK_INT_EQ(store_register(st, &it, &is_new, &e), 0);
    CHECK_INT_EQ(is_new, 0);
    int64_t n = 0;
    CHECK_INT_EQ(store_count(st, &n, &e), 0);
    CHECK_INT_EQ((int)n, 1);
    /* another process embedded it meanwhile: a late registration keeps it */
    float v[DIM];
    rvec(v);
    CHECK_INT_EQ(store_put_embedding(st, "a.jpg", v, &e), 0);
    CHECK_INT_EQ(store_register(st, &it, &is_new, &e), 0);
    struct store_item got;
    REQUIRE(store_get(st, "a.jpg", &got, &e) == 0);
    CHECK(got.has_embedding);
    store_item_clear(&got);
    CHECK_INT_EQ(store_count_waiting(st, &n, &e), 0);
    CHECK_INT_EQ((int)n, 0);
    /* the file changed: registered again, waiting */
    it.mtime = 21;
    CHECK_INT_EQ(store_register(st, &it, &is_new, &e), 0);
    CHECK_INT_EQ(is_new, 0);
    REQUIRE(store_get(st, "a.jpg", &got, &e) == 0);
    CHECK(!got.has_embedding && got.mtime == 21);
    store_item_clear(&got);
    it.embedding = v;
    CHECK_INT_EQ(store_register(st, &it, &is_new, &e), -ERR_INVALID_ARGUMENT);
    store_close(st, NULL);
    remove_db(p);
}

#define RACE_ITEMS 120
#define RACE_THREADS 4

struct racer {
    const char *path;            /* the store */
    char owner[32];              /* its claim owner */
    int got[RACE_ITEMS + 1];     /* claims of each item number */
    int err;                     /* a call failed */
};

/* One claim of up to 3 items by r through st, counted in r; returns how
 * many it got (0: none left, or an error, which r->err records). */
static int race_step(struct racer *r, struct store *st)
{
    int nums[3];
    int k = claim(st, r->owner, 60, 3, nums, NULL);
    if (k < 0)
        r->err = 1;
    for (int i = 0; i < k; i++)
        if (nums[i] >= 1 && nums[i] <= RACE_ITEMS)
            r->got[nums[i]]++;
    return k > 0 ? k : 0;
}

static void *race_main(void *p)
{
    struct racer *r = p;
    struct store *st = open_store(r->path, "m", DIM, 0);
    if (!st) {
        r->err = 1;
        return NULL;
    }
    while (race_step(r, st))
        ;
    store_close(st, NULL);
    return NULL;
}

/* On a one-session server (test_store.h): the owners take turns, each
 * through its own store handle, from this thread. */
static void race_in_turns(struct racer *r, int n)
{
    struct store *st[RACE_THREADS] = {0};
    for (int i = 0; i < n; i++)
        if (!(st[i] = open_store(r[i].path, "m", DIM, 0)))
            r[i].err = 1;
    for (int more = 1; more;) {
        more = 0;
        for (int i = 0; i < n; i++)
            if (st[i])
                more |= race_step(&r[i], st[i]) > 0;
    }
    for (int i = 0; i < n; i++)
        store_close(st[i], NULL);
}

/* Owners claiming at once, each through its own store handle (as servers
 * do): every item claimed exactly once. */
TEST(concurrent_claims_never_share_an_item)
{
    const char *p = fresh_path("race");
    struct store *st = open_store(p, "m", DIM, 1);
    REQUIRE(st);
    struct err e;
    REQUIRE(store_begin(st, &e) == 0);
    fill(st, RACE_ITEMS);
    REQUIRE(store_commit(st, &e) == 0);
    static struct racer r[RACE_THREADS];
    pthread_t th[RACE_THREADS];
    for (int i = 0; i < RACE_THREADS; i++) {
        memset(&r[i], 0, sizeof r[i]);
        r[i].path = p;
        snprintf(r[i].owner, sizeof r[i].owner, "racer%d", i);
    }
    if (one_session()) {
        race_in_turns(r, RACE_THREADS);
    } else {
        for (int i = 0; i < RACE_THREADS; i++)
            pthread_create(&th[i], NULL, race_main, &r[i]);
        for (int i = 0; i < RACE_THREADS; i++)
            pthread_join(th[i], NULL);
    }
    int once = 0, twice = 0, busy = 0;
    for (int n = 1; n <= RACE_ITEMS; n++) {
        int c = 0;
        for (int i = 0; i < RACE_THREADS; i++)
            c += r[i].got[n];
        once += c == 1;
        twice += c > 1;
    }
    for (int i = 0; i < RACE_THREADS; i++) {
        CHECK(!r[i].err);
        int mine = 0;
        for (int n = 1; n <= RACE_ITEMS; n++)
            mine += r[i].got[n];
        busy += mine > 0;
    }
    CHECK_INT_EQ(once, RACE_ITEMS);
    CHECK_INT_EQ(twice, 0);
    CHECKF(busy >= 1, "%d racers got items", busy);
    store_close(st, NULL);
    remove_db(p);
}

/* A store made before claims and failures (SQLite schema 2, PostgreSQL
 * schema 1) is upgraded by the next open without losing an item. */
TEST(older_schema_upgraded)
{
    const char *p = fresh_path("upgrade");
    struct store *st = open_store(p, "m", DIM, 1);
    REQUIRE(st);
    fill(st, 5);
    store_close(st, NULL);
    const char *down =
        pg_url ? "DROP FUNCTION imgsearch_items_failed() CASCADE; DROP INDEX items_failed;"
                 "ALTER TABLE items DROP COLUMN failed, DROP COLUMN failed_size,"
                 "  DROP COLUMN failed_mtime, DROP COLUMN lease_owner, DROP COLUMN lease_until;"
                 "ALTER TABLE counts DROP COLUMN failed; UPDATE schema_version SET version = 1"
               : "DROP TRIGGER counts_fi; DROP TRIGGER counts_fd; DROP TRIGGER counts_fu;"
                 "DROP INDEX items_failed; ALTER TABLE items DROP COLUMN failed;"
                 "ALTER TABLE items DROP COLUMN failed_size;"
                 "ALTER TABLE items DROP COLUMN failed_mtime;"
                 "ALTER TABLE items DROP COLUMN lease_owner;"
                 "ALTER TABLE items DROP COLUMN lease_until;"
                 "ALTER TABLE counts DROP COLUMN failed; UPDATE schema_version SET version = 2";
    REQUIRE(raw_sql(p, down) == 0);
    if (pg_url) { /* with migrations off, an older schema is refused */
        struct store_options o = {.no_migrate = 1};
        struct err e;
        CHECK_INT_EQ(store_open(&st, p, &o, &e), -ERR_UNSUPPORTED_FORMAT);
        CHECK_STR_CONTAINS(e.msg, "imgsearch migrate");
    }
    st = open_store(p, "m", DIM, 0);
    REQUIRE(st);
    struct err e;
    int64_t n = 0;
    CHECK_INT_EQ(store_count(st, &n, &e), 0);
    CHECK_INT_EQ((int)n, 7);
    CHECK_INT_EQ(store_count_waiting(st, &n, &e), 0);
    CHECK_INT_EQ((int)n, 5);
    CHECK_INT_EQ(store_count_failed(st, &n, &e), 0);
    CHECK_INT_EQ((int)n, 0);
    CHECK_INT_EQ(claim(st, "a", 60, 10, NULL, NULL), 5);
    CHECK_INT_EQ(store_set_failed(st, "w5", "bad", 1, 2, &e), 0);
    CHECK_INT_EQ(store_count_failed(st, &n, &e), 0);
    CHECK_INT_EQ((int)n, 1);
    float q[DIM];
    rvec(q);
    int ids[4];
    CHECK_INT_EQ(search_ids(st, q, 2, 0, -1, NULL, 0, ids), 2);
    store_close(st, NULL);
    remove_db(p);
}

TEST_MAIN(claims_are_leased_and_exclusive, a_lease_runs_out,
          failed_items_are_not_claimed_until_their_file_changes, register_is_idempotent,
          concurrent_claims_never_share_an_item, older_schema_upgraded)
