/* test_store.h - what the store's test files share (test_store.c,
 * test_store_backends.c): the target of a case (a fresh file, or the
 * database of IMGSEARCH_TEST_STORE emptied), SQL behind the store's back,
 * and small helpers. Functions are static inline: a file uses some. */
#ifndef IMGSEARCH_TEST_STORE_H
#define IMGSEARCH_TEST_STORE_H

#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdint.h>
#include <unistd.h>

#include "store/store.h"
#include "test.h"

#define DIM 8

static char db_path[256];
static const char *pg_url; /* IMGSEARCH_TEST_STORE, or NULL: files */

/* Runs sql on the store's database behind the store's back (the sqlite3
 * shell, or psql); 0 when it ran. */
static inline int raw_sql(const char *target, const char *sql)
{
    if (store_is_url(target)) {
        PGconn *c = PQconnectdb(target);
        int ok = PQstatus(c) == CONNECTION_OK;
        if (ok) {
            PQclear(PQexec(c, "SET client_min_messages = warning"));
            PGresult *r = PQexec(c, sql);
            ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
            if (!ok)
                fprintf(stderr, "raw_sql: %s", PQresultErrorMessage(r));
            PQclear(r);
        }
        PQfinish(c);
        return ok ? 0 : -1;
    }
    sqlite3 *db;
    int rc = sqlite3_open(target, &db) == SQLITE_OK &&
             sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
    sqlite3_close(db);
    return rc;
}

static inline void remove_db(const char *path)
{
    if (store_is_url(path)) {
        if (raw_sql(path, "DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
            fprintf(stderr, "cannot empty %s\n", path);
        return;
    }
    char p[300];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
    snprintf(p, sizeof p, "%s.hnsw", path);
    unlink(p);
}

static inline const char *fresh_path(const char *name)
{
    const char *u = getenv("IMGSEARCH_TEST_STORE");
    pg_url = u && store_is_url(u) ? u : NULL;
    if (pg_url)
        snprintf(db_path, sizeof db_path, "%s", pg_url);
    else
        snprintf(db_path, sizeof db_path, "/tmp/test_store.%d.%s.db", (int)getpid(), name);
    remove_db(db_path);
    return db_path;
}

/* The server runs every connection in one session (pglite-socket, told by
 * IMGSEARCH_TEST_ONE_SESSION=1): its multiplexer queues the others'
 * statements behind an open transaction, and it can interleave the
 * messages of two connections' extended-protocol statements, which leaves
 * a client waiting for an answer for ever. Tests that use a store from
 * several threads at once run their threads one after another there; the
 * concurrency itself is tested on a real server (postgresql-15). */
static inline int one_session(void)
{
    const char *one = getenv("IMGSEARCH_TEST_ONE_SESSION");
    return pg_url && one && !strcmp(one, "1");
}

static inline struct store *open_store(const char *path, const char *model, int dim, int create)
{
    struct store_options o = {.model = model, .dim = dim, .create = create};
    struct store *st = NULL;
    struct err e;
    if (store_open(&st, path, &o, &e)) {
        fprintf(stderr, "open: %s\n", e.msg);
        return NULL;
    }
    return st;
}

static uint64_t rs = 12345;
static inline float frand(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (float)((double)(rs >> 11) / 9007199254740992.0 * 2 - 1);
}

static inline void rvec(float *v)
{
    for (int i = 0; i < DIM; i++)
        v[i] = frand();
}

static inline int put(struct store *st, const char *id, const char *source, const char *sha,
               const char *md, const float *emb)
{
    struct store_item it = {0};
    it.id = (char *)id;
    it.source = (char *)source;
    it.sha256 = (char *)sha;
    it.size = 100;
    it.mtime = 1700000000;
    it.metadata = (char *)md;
    it.embedding = (float *)emb;
    int is_new = -1;
    struct err e;
    int rc = store_put(st, &it, &is_new, &e);
    return rc ? rc : is_new;
}

static inline int search_ids(struct store *st, const float *q, int k, int offset, float min_score,
                      const struct store_filter *f, int nf, int *out)
{
    struct store_query sq = {q, k, offset, min_score, f, nf, 0};
    struct store_hit *hits;
    size_t n;
    struct err e;
    if (store_search(st, &sq, &hits, &n, &e))
        return -1;
    for (size_t i = 0; i < n; i++)
        out[i] = atoi(hits[i].id + 1);
    store_hits_free(hits, n);
    return (int)n;
}

#endif
