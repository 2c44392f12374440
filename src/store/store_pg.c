/* store_pg.c - the PostgreSQL backend of the store, over libpq.
 *
 * Design:
 *  1. Prepared statements and parameters only: no user string is ever
 *     part of SQL text. The few statements built at run time (filters,
 *     the pgvector search) vary only in how many filters they have; the
 *     index parameters (m, ef_construction, lists, ef_search, probes) are
 *     integers this file formats itself. Embeddings travel in binary, as
 *     real[] (element OID 700), in both directions; results are binary
 *     (big-endian integers, text columns as their bytes).
 *  2. A pool of connections (store_options.pool), opened on demand. A batch
 *     holds one connection until it commits; the batch owner's reads go
 *     through it. A connection found broken is reset; while the server
 *     does not answer, calls fail at once with ERR_UNAVAILABLE (503) for a
 *     backoff period that doubles from 100 ms to 2 s, and the next call
 *     after it tries again: the store recovers by itself. Once the server
 *     is found gone, every connection of the pool made before is reset on
 *     its next use (after a restart they are all dead, though libpq does
 *     not know it yet).
 *  3. Schema (versioned in schema_version, created or upgraded by the
 *     first open that may, under an advisory lock so that several servers
 *     starting together migrate once): items (seq bigserial: the index
 *     label), metadata as json (the exact text every backend keeps) with a
 *     GIN index on its jsonb form for `@>` filters, changes (the log) and
 *     counts, both kept by one trigger. The trigger takes a transaction
 *     advisory lock before it numbers a change, so changes are numbered in
 *     commit order and a reader never sees change n+1 without change n.
 *  4. Embeddings: real[] until `CREATE EXTENSION vector` succeeds, then the
 *     column is converted in place (ALTER ... TYPE vector(D) USING
 *     embedding::vector(D), one transaction: no item lost) and an HNSW
 *     (m, ef_construction) or IVFFlat (lists) index with vector_cosine_ops
 *     is built. pgvector casts real[] to vector on assignment, so writes
 *     are the same for both column types.
 *  5. Search with pgvector: ORDER BY embedding <=> $1 LIMIT $2 in a
 *     transaction whose SET LOCAL sets hnsw.ef_search / ivfflat.probes and,
 *     from pgvector 0.8, the iterative scans (relaxed order, re-sorted
 *     afterwards) so that a filtered query still returns k rows; older
 *     versions filter after the index scan and may return fewer. The rows
 *     come with the search: one round trip for the page.
 *  6. Without pgvector the shared layer's local HNSW index serves, caught
 *     up from the changes table (store.c); the log is not trimmed (no index
 *     file records what is covered).
 *  7. pglite-socket (the tests' pgvector server) runs every connection in
 *     one session: statement names carry a random prefix per open store,
 *     and "already exists" on prepare is taken as prepared.
 *  8. Leased claims (store.h): UPDATE ... WHERE seq IN (SELECT ... ORDER
 *     BY seq LIMIT n FOR UPDATE SKIP LOCKED) RETURNING: concurrent claims
 *     from several servers skip each other's rows instead of waiting, and
 *     a row leased and committed is excluded until its lease_until (ms of
 *     the database server's clock, the one clock every client shares)
 *     passes. The failed state (schema 2) lives on the item with the
 *     file's size and mtime at failure; store_sqlite.c design 7.
 *
 * Files: this one holds the schema, the writes, the reads and the local
 * index's source; store_pg_conn.c the pool and the wire (1, 2, 7);
 * store_pg_search.c filters and pgvector search (5).
 */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/store_pg_int.h"

#define PG_SCHEMA_VERSION 2
#define PG_LOCK_MIGRATE 7316000  /* advisory lock: one migration at a time */
#define PG_POOL_MAX 256
#define PG_PAGE 4096             /* embeddings read per round trip */

#define ITEM_COLS "seq, id, source, sha256, size, mtime, metadata::text, model, created_at, " \
                  "updated_at"
/* the lease clock: ms of the database server's clock (design 8) */
#define NOW_MS "(extract(epoch FROM now()) * 1000)::bigint"

const char *const pg__sql[P_COUNT_] = {
    [P_META_GET] = "SELECT value FROM meta WHERE key = $1",
    [P_META_PUT] = "INSERT INTO meta(key, value) VALUES ($1, $2) "
                   "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    [P_LOOKUP] = "SELECT seq, sha256, embedding IS NOT NULL, source, size, mtime FROM items "
                 "WHERE id = $1 FOR UPDATE",
    [P_INSERT] = "INSERT INTO items(id, source, sha256, size, mtime, metadata, model, "
                 "created_at, updated_at, embedding) "
                 "VALUES ($1, $2::bytea, $3, $4, $5, $6::json, $7, $8, $8, $9::real[]) "
                 "ON CONFLICT (id) DO NOTHING RETURNING seq",
    /* the failed state ends when the file is seen with another size or
     * mtime, or an embedding is written; an embedding ends the lease
     * (design 8) */
    [P_UPDATE_KEEP] = "UPDATE items SET source = $2::bytea, sha256 = $3, size = $4::bigint, "
                      "mtime = $5::bigint, metadata = $6::json, updated_at = $7, failed = CASE "
                      "WHEN $4::bigint IS NOT DISTINCT FROM failed_size AND $5::bigint IS NOT "
                      "DISTINCT FROM failed_mtime THEN failed END WHERE seq = $1",
    [P_UPDATE_EMB] = "UPDATE items SET source = $2::bytea, sha256 = $3, size = $4::bigint, "
                     "mtime = $5::bigint, metadata = $6::json, model = $7, updated_at = $8, "
                     "embedding = $9::real[], failed = CASE WHEN $9::real[] IS NULL AND "
                     "$4::bigint IS NOT DISTINCT FROM failed_size AND $5::bigint IS NOT "
                     "DISTINCT FROM failed_mtime THEN failed END, lease_owner = CASE WHEN "
                     "$9::real[] IS NULL THEN lease_owner END, lease_until = CASE WHEN "
                     "$9::real[] IS NULL THEN lease_until END WHERE seq = $1",
    [P_SET_EMB] = "UPDATE items SET embedding = $2::real[], model = $3, updated_at = $4, "
                  "failed = NULL, lease_owner = NULL, lease_until = NULL WHERE id = $1",
    [P_GET] = "SELECT " ITEM_COLS ", embedding::real[], failed FROM items WHERE id = $1",
    [P_DELETE] = "DELETE FROM items WHERE id = $1",
    [P_LIST] = "SELECT " ITEM_COLS ", embedding IS NOT NULL, failed FROM items WHERE seq > $1 "
               "ORDER BY seq LIMIT $2",
    [P_WAITING] = "SELECT " ITEM_COLS ", false, failed FROM items WHERE seq > $1 AND "
                  "embedding IS NULL ORDER BY seq LIMIT $2",
    [P_COUNTS] = "SELECT items, waiting, failed FROM counts",
    [P_FIND_SOURCE] = "SELECT " ITEM_COLS ", embedding IS NOT NULL, failed FROM items "
                      "WHERE source = $1::bytea ORDER BY seq LIMIT 1",
    [P_BY_SEQ] = "SELECT " ITEM_COLS ", embedding IS NOT NULL, failed FROM items WHERE seq = $1",
    [P_EXISTS] = "SELECT seq FROM items WHERE id = $1",
    [P_LOG_TOP] = "SELECT coalesce(max(cseq), 0)::bigint FROM changes",
    [P_LOG_SINCE] = "SELECT DISTINCT seq FROM changes WHERE cseq > $1 ORDER BY seq",
    [P_EMB_BY_SEQS] = "SELECT seq, embedding::real[] FROM items WHERE seq = ANY($1::bigint[]) "
                      "AND embedding IS NOT NULL",
    [P_EMB_PAGE] = "SELECT seq, embedding::real[] FROM items WHERE seq > $1 "
                   "AND embedding IS NOT NULL ORDER BY seq LIMIT $2",
    [P_COUNT_EMB] = "SELECT count(*)::bigint FROM items WHERE embedding IS NOT NULL",
    [P_ROWS] = "SELECT seq, id, source, metadata::text FROM items WHERE seq = ANY($1::bigint[])",
    [P_MAX_SEQ] = "SELECT coalesce(max(seq), 0)::bigint FROM items",
    /* design 8: rows another claim has locked are skipped, not waited for */
    [P_CLAIM] = "UPDATE items SET lease_owner = $1, lease_until = " NOW_MS " + $2::bigint * 1000 "
                "WHERE seq IN (SELECT seq FROM items WHERE embedding IS NULL AND failed IS NULL "
                "AND (lease_until IS NULL OR lease_until <= " NOW_MS ") "
                "ORDER BY seq LIMIT $3::int FOR UPDATE SKIP LOCKED) "
                "RETURNING " ITEM_COLS ", false, failed",
    [P_CLAIM_NEXT] = "SELECT (min(lease_until) - " NOW_MS ")::bigint FROM items "
                     "WHERE embedding IS NULL AND failed IS NULL",
    [P_RENEW] = "UPDATE items SET lease_until = CASE WHEN $2::int > 0 THEN " NOW_MS
                " + $2::bigint * 1000 END, lease_owner = CASE WHEN $2::int > 0 THEN lease_owner "
                "END WHERE embedding IS NULL AND lease_owner = $1",
    [P_OWNERS] = "SELECT DISTINCT lease_owner FROM items WHERE embedding IS NULL AND "
                 "lease_owner IS NOT NULL LIMIT $1::int",
    [P_SET_FAILED] = "UPDATE items SET failed = $2, failed_size = $3::bigint, "
                     "failed_mtime = $4::bigint, lease_owner = NULL, lease_until = NULL "
                     "WHERE id = $1",
};

#define TRIGGER_AU "CREATE TRIGGER items_au AFTER UPDATE OF embedding ON items FOR EACH ROW" \
                   "  EXECUTE FUNCTION imgsearch_items_changed();"

/* Version 1. The trigger numbers a change only under the advisory lock
 * (design 3); counts is one row, updated by the same trigger. */
static const char *const pg_schema_v1 =
    "CREATE TABLE meta(key text PRIMARY KEY, value text NOT NULL);"
    "CREATE TABLE items("
    "  seq bigserial PRIMARY KEY,"
    "  id text UNIQUE NOT NULL,"
    "  source bytea," /* a file path: any bytes */
    "  sha256 text,"
    "  size bigint,"
    "  mtime bigint,"
    "  metadata json NOT NULL DEFAULT '{}',"
    "  model text,"
    "  created_at bigint NOT NULL,"
    "  updated_at bigint NOT NULL,"
    "  embedding real[]);"
    "CREATE INDEX items_source ON items USING hash(source);" /* any length, unlike a btree */
    "CREATE INDEX items_waiting ON items(seq) WHERE embedding IS NULL;"
    "CREATE INDEX items_metadata ON items USING gin((metadata::jsonb) jsonb_path_ops);"
    "CREATE TABLE changes(cseq bigserial PRIMARY KEY, seq bigint NOT NULL);"
    "CREATE TABLE counts(items bigint NOT NULL, waiting bigint NOT NULL);"
    "INSERT INTO counts VALUES (0, 0);"
    "CREATE FUNCTION imgsearch_items_changed() RETURNS trigger LANGUAGE plpgsql AS $f$\n"
    "BEGIN\n"
    "  PERFORM pg_advisory_xact_lock(7316001);\n"
    "  IF TG_OP = 'INSERT' THEN\n"
    "    UPDATE counts SET items = items + 1, waiting = waiting + (NEW.embedding IS NULL)::int;\n"
    "    IF NEW.embedding IS NOT NULL THEN INSERT INTO changes(seq) VALUES (NEW.seq); END IF;\n"
    "    RETURN NEW;\n"
    "  ELSIF TG_OP = 'DELETE' THEN\n"
    "    UPDATE counts SET items = items - 1, waiting = waiting - (OLD.embedding IS NULL)::int;\n"
    "    INSERT INTO changes(seq) VALUES (OLD.seq);\n"
    "    RETURN OLD;\n"
    "  END IF;\n"
    "  UPDATE counts SET waiting = waiting + (NEW.embedding IS NULL)::int"
    "    - (OLD.embedding IS NULL)::int;\n"
    "  INSERT INTO changes(seq) VALUES (NEW.seq);\n"
    "  RETURN NEW;\n"
    "END $f$;"
    "CREATE TRIGGER items_ai AFTER INSERT ON items FOR EACH ROW"
    "  EXECUTE FUNCTION imgsearch_items_changed();"
    "CREATE TRIGGER items_ad AFTER DELETE ON items FOR EACH ROW"
    "  EXECUTE FUNCTION imgsearch_items_changed();"
    TRIGGER_AU
    "CREATE TABLE schema_version(version int NOT NULL);"
    "INSERT INTO schema_version VALUES (1);";

/* Version 2: the failed state (reason, and the file's size and mtime when
 * it failed) and leased claims (owner, and when the lease ends in ms of the
 * server's clock) on the item; the failed count kept in counts by a
 * trigger that, like the first, takes the advisory lock before counts'
 * row (one lock order: no deadlock between the two). */
static const char *const pg_schema_v2 =
    "ALTER TABLE items ADD COLUMN failed text, ADD COLUMN failed_size bigint,"
    "  ADD COLUMN failed_mtime bigint, ADD COLUMN lease_owner text,"
    "  ADD COLUMN lease_until bigint;"
    "CREATE INDEX items_failed ON items(seq) WHERE failed IS NOT NULL;"
    "ALTER TABLE counts ADD COLUMN failed bigint NOT NULL DEFAULT 0;"
    "CREATE FUNCTION imgsearch_items_failed() RETURNS trigger LANGUAGE plpgsql AS $f$\n"
    "BEGIN\n"
    "  PERFORM pg_advisory_xact_lock(7316001);\n"
    "  IF TG_OP = 'DELETE' THEN\n"
    "    UPDATE counts SET failed = failed - 1;\n"
    "    RETURN OLD;\n"
    "  ELSIF TG_OP = 'INSERT' THEN\n"
    "    UPDATE counts SET failed = failed + 1;\n"
    "    RETURN NEW;\n"
    "  END IF;\n"
    "  UPDATE counts SET failed = failed + (NEW.failed IS NOT NULL)::int"
    "    - (OLD.failed IS NOT NULL)::int;\n"
    "  RETURN NEW;\n"
    "END $f$;"
    "CREATE TRIGGER items_fi AFTER INSERT ON items FOR EACH ROW WHEN (NEW.failed IS NOT NULL)"
    "  EXECUTE FUNCTION imgsearch_items_failed();"
    "CREATE TRIGGER items_fd AFTER DELETE ON items FOR EACH ROW WHEN (OLD.failed IS NOT NULL)"
    "  EXECUTE FUNCTION imgsearch_items_failed();"
    "CREATE TRIGGER items_fu AFTER UPDATE OF failed ON items FOR EACH ROW"
    "  WHEN ((OLD.failed IS NULL) <> (NEW.failed IS NULL))"
    "  EXECUTE FUNCTION imgsearch_items_failed();"
    "UPDATE schema_version SET version = 2;";

#define BE(st) PG_BE(st)


/* ---- schema -------------------------------------------------------------- */

static int meta_get(struct store *st, struct pconn *c, const char *key, char **out,
                    struct err *err)
{
    PGresult *r;
    *out = NULL;
    int rc = pg__run(st, c, P_META_GET, 1, (const char *[]){key}, NULL, &r, err);
    if (!rc && PQntuples(r) == 1 && !(*out = pg__col_str(r, 0, 0)))
        rc = err_set(err, ERR_NOMEM, "no memory");
    PQclear(r);
    return rc;
}

static int meta_put(struct store *st, struct pconn *c, const char *key, const char *val,
                    struct err *err)
{
    PGresult *r;
    int rc = pg__run(st, c, P_META_PUT, 2, (const char *[]){key, val}, NULL, &r, err);
    PQclear(r);
    return rc;
}

/* One value of a query without parameters (text results: catalog reads). */
static int query_text(struct store *st, struct pconn *c, const char *sql, char **out,
                      struct err *err)
{
    *out = NULL;
    PGresult *r = PQexec(c->pg, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return pg__res_err(st, c, r, "read the schema", err);
    if (PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
        *out = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return 0;
}

/* Creates the schema, or checks the version of the one there. */
static int schema(struct store *st, struct pconn *c, const struct store_options *o,
                  struct err *err)
{
    char *have = NULL, *items = NULL;
    int rc = query_text(st, c, "SELECT to_regclass('schema_version')::text", &have, err);
    if (!rc)
        rc = query_text(st, c, "SELECT to_regclass('items')::text", &items, err);
    int exists = have != NULL, foreign = !have && items;
    free(have);
    free(items);
    if (rc)
        return rc;
    if (foreign)
        return err_set(err, ERR_CORRUPT, "%s: the database has an items table but is not an "
                       "imgsearch store", st->name);
    if (!exists) {
        if (!(o && o->create))
            return err_set(err, ERR_NOT_FOUND, "%s: no store in this database (create one with "
                           "imgsearch index, or migrate --model-id ID --dim N)", st->name);
        if (o->no_migrate)
            return err_set(err, ERR_UNSUPPORTED_FORMAT, "%s: the database has no store schema "
                           "and migrations are off: run 'imgsearch migrate --store %s' (with "
                           "--model-id and --dim for a new store)", st->name, st->name);
        if ((rc = pg__run_sql(st, c, pg_schema_v1, err)))
            return rc;
    }
    char *v = NULL;
    if ((rc = query_text(st, c, "SELECT max(version)::text FROM schema_version", &v, err)))
        return rc;
    long version = v ? strtol(v, NULL, 10) : 0;
    free(v);
    if (version > PG_SCHEMA_VERSION)
        return err_set(err, ERR_UNSUPPORTED_FORMAT, "%s: store schema version %ld is newer than "
                       "this imgsearch (%d)", st->name, version, PG_SCHEMA_VERSION);
    if (version < 2 && o && o->no_migrate)
        return err_set(err, ERR_UNSUPPORTED_FORMAT, "%s: store schema version %ld is older than "
                       "this imgsearch's (%d) and migrations are off: run 'imgsearch migrate "
                       "--store %s'", st->name, version, PG_SCHEMA_VERSION, st->name);
    if (version < 2) /* under the migration lock (setup): once, whoever comes first */
        rc = pg__run_sql(st, c, pg_schema_v2, err);
    return rc;
}

/* Records the model of a new store or checks the one recorded. */
static int model_meta(struct store *st, struct pconn *c, const struct store_options *o,
                      struct err *err)
{
    char *model = NULL, *dims = NULL, *dbid = NULL;
    int rc = meta_get(st, c, "model", &model, err);
    if (!rc)
        rc = meta_get(st, c, "dim", &dims, err);
    if (!rc)
        rc = meta_get(st, c, "db_id", &dbid, err);
    if (rc)
        goto done;
    if (!model || !dims) {
        if (!o || !o->model || !*o->model || o->dim < 1) {
            rc = err_set(err, ERR_INVALID_ARGUMENT,
                         "%s: a new store needs a model id and a dimension", st->name);
            goto done;
        }
        char buf[32], idb[32];
        snprintf(buf, sizeof buf, "%d", o->dim);
        st->db_id = store__new_db_id();
        snprintf(idb, sizeof idb, "%llu", (unsigned long long)st->db_id);
        if ((rc = meta_put(st, c, "model", o->model, err)) ||
            (rc = meta_put(st, c, "dim", buf, err)) || (rc = meta_put(st, c, "db_id", idb, err)) ||
            (rc = meta_put(st, c, "embedding", "real[]", err)))
            goto done;
        st->model = strdup(o->model);
        st->dim = o->dim;
        goto done;
    }
    long d = strtol(dims, NULL, 10);
    if (d < 1 || d > STORE_DIM_MAX || !dbid) {
        rc = err_set(err, ERR_CORRUPT, "%s: meta holds dimension '%s'", st->name, dims);
        goto done;
    }
    if ((o && o->model && strcmp(o->model, model)) || (o && o->dim && o->dim != d)) {
        rc = err_set(err, ERR_MODEL_MISMATCH,
                     "%s: the store holds embeddings of model '%s' (dimension %ld), not "
                     "'%s' (dimension %d); reindex it to switch models",
                     st->name, model, d, o->model ? o->model : model, o->dim ? o->dim : (int)d);
        goto done;
    }
    st->model = model;
    model = NULL;
    st->dim = (int)d;
    st->db_id = strtoull(dbid, NULL, 10);
done:
    free(model);
    free(dims);
    free(dbid);
    if (!rc && !st->model)
        rc = err_set(err, ERR_NOMEM, "no memory");
    return rc;
}

/* The pgvector index statement for the options (integers only). */
static void index_sql(char *sql, size_t n, const struct store *st, const struct store_options *o,
                      int ivf)
{
    if (ivf)
        snprintf(sql, n, "CREATE INDEX items_embedding ON items USING ivfflat "
                         "(embedding vector_cosine_ops) WITH (lists = %d)",
                 o && o->lists > 0 ? o->lists : 100);
    else
        snprintf(sql, n, "CREATE INDEX items_embedding ON items USING hnsw "
                         "(embedding vector_cosine_ops) WITH (m = %d, ef_construction = %d)",
                 st->hp.m, st->hp.ef_construction);
}

/* Converts real[] to vector(D) when pgvector can be had (design 4), and
 * (re)builds its index when another kind is asked for. */
static int use_vector(struct store *st, struct pconn *c, const struct store_options *o,
                      struct err *err)
{
    struct pgbe *b = BE(st);
    char *kind = NULL, *idx = NULL;
    int rc = meta_get(st, c, "embedding", &kind, err);
    if (!rc)
        rc = meta_get(st, c, "index", &idx, err);
    int want_ivf = o && o->index && !strcmp(o->index, "ivfflat");
    int vec = kind && !strcmp(kind, "vector");
    char sql[320];
    if (!rc && !vec && !(o && (o->no_vector || o->no_migrate)) && st->dim <= STORE_PGVECTOR_DIM_MAX) {
        /* a savepoint: without the extension the transaction goes on */
        rc = pg__run_sql(st, c, "SAVEPOINT ext", err);
        if (!rc && pg__run_sql(st, c, "CREATE EXTENSION IF NOT EXISTS vector", NULL))
            rc = pg__run_sql(st, c, "ROLLBACK TO SAVEPOINT ext", err);
        else if (!rc) {
            /* the UPDATE OF trigger names the column: off while it changes */
            snprintf(sql, sizeof sql, "DROP TRIGGER items_au ON items; ALTER TABLE items ALTER "
                     "COLUMN embedding TYPE vector(%d) USING embedding::vector(%d); %s",
                     st->dim, st->dim, TRIGGER_AU);
            if (!(rc = pg__run_sql(st, c, sql, err)))
                rc = meta_put(st, c, "embedding", "vector", err);
            vec = !rc;
            free(idx);
            idx = NULL; /* build it below */
        }
    }
    if (!rc && vec && !(o && o->no_migrate) &&
        (!idx || (o && o->index && strcmp(idx, want_ivf ? "ivfflat" : "hnsw")))) {
        index_sql(sql, sizeof sql, st, o, want_ivf);
        rc = pg__run_sql(st, c, "DROP INDEX IF EXISTS items_embedding", err);
        if (!rc)
            rc = pg__run_sql(st, c, sql, err);
        if (!rc)
            rc = meta_put(st, c, "index", want_ivf ? "ivfflat" : "hnsw", err);
        if (!rc) {
            free(idx);
            idx = strdup(want_ivf ? "ivfflat" : "hnsw");
        }
    }
    if (!rc && vec && !(o && o->no_vector)) {
        b->vector = 1;
        b->ivfflat = idx && !strcmp(idx, "ivfflat");
        char *ver = NULL;
        rc = query_text(st, c, "SELECT extversion FROM pg_extension WHERE extname = 'vector'",
                        &ver, err);
        int maj = 0, min = 0;
        if (ver)
            sscanf(ver, "%d.%d", &maj, &min);
        b->iterative = maj > 0 || min >= 8;
        free(ver);
    }
    free(kind);
    free(idx);
    return rc;
}

/* Migrates (under the advisory lock) and reads the store's model. */
static int setup(struct store *st, const struct store_options *o, struct err *err)
{
    struct pconn *c;
    int rc = pg__get_conn(st, &c, err);
    if (rc)
        return rc;
    char lock[96];
    snprintf(lock, sizeof lock, "BEGIN; SELECT pg_advisory_xact_lock(%d)", PG_LOCK_MIGRATE);
    rc = pg__run_sql(st, c, lock, err);
    if (!rc)
        rc = schema(st, c, o, err);
    if (!rc)
        rc = model_meta(st, c, o, err);
    if (!rc)
        rc = use_vector(st, c, o, err);
    if (!rc)
        rc = pg__run_sql(st, c, "COMMIT", err);
    if (rc && PQstatus(c->pg) == CONNECTION_OK)
        PQclear(PQexec(c->pg, "ROLLBACK"));
    pg__put_conn(st, c);
    return rc;
}

static void counts_refresh(struct store *st, struct pconn *c)
{
    PGresult *r;
    struct err e;
    if (!pg__run(st, c, P_COUNTS, 0, NULL, NULL, &r, &e) && PQntuples(r) == 1) {
        atomic_store(&st->n_items, pg__col_i64(r, 0, 0, -1));
        atomic_store(&st->n_waiting, pg__col_i64(r, 0, 1, -1));
        atomic_store(&st->n_failed, pg__col_i64(r, 0, 2, -1));
    }
    PQclear(r);
}

static void pg_close(struct store *st)
{
    struct pgbe *b = BE(st);
    if (!b)
        return;
    for (int i = 0; b->c && i < b->n; i++)
        if (b->c[i].pg)
            PQfinish(b->c[i].pg);
    free(b->c);
    free(b->conninfo);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    free(b);
    st->be = NULL;
}

static const struct store_ops pg_ops;

int store__pg_open(struct store *st, const char *url, const struct store_options *o,
                   struct err *err)
{
    struct pgbe *b = calloc(1, sizeof *b);
    if (!b)
        return err_set(err, ERR_NOMEM, "no memory");
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    st->be = b;
    st->ops = &pg_ops;
    b->n = o && o->pool > 0 ? (o->pool > PG_POOL_MAX ? PG_POOL_MAX : o->pool) : 4;
    b->c = calloc((size_t)b->n, sizeof *b->c);
    b->conninfo = strdup(url);
    b->backoff_ms = 100;
    b->probes = o && o->probes > 0 ? o->probes : 10;
    snprintf(b->prefix, sizeof b->prefix, "i%llx",
             (unsigned long long)(store__new_db_id() & 0xffffffffffull));
    if (!b->c || !b->conninfo)
        return err_set(err, ERR_NOMEM, "no memory");
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &errmsg);
    if (!opts) {
        int rc = err_set(err, ERR_INVALID_ARGUMENT, "%s: not a PostgreSQL URL: %s", st->name,
                         errmsg ? errmsg : "no memory");
        PQfreemem(errmsg);
        return rc;
    }
    PQconninfoFree(opts);
    const char *nv = getenv("IMGSEARCH_PG_NO_VECTOR");
    struct store_options oo = o ? *o : (struct store_options){0};
    if (nv && !strcmp(nv, "1"))
        oo.no_vector = 1;
    int rc = setup(st, &oo, err);
    if (rc)
        return rc;
    struct pconn *c;
    if (!pg__get_conn(st, &c, err)) {
        counts_refresh(st, c);
        pg__put_conn(st, c);
    }
    return 0;
}

/* ---- writes ------------------------------------------------------------ */

/* Starts a write: a transaction of its own unless the caller's batch is
 * open; end_write commits it (or rolls back on rc) and gives c back. */
static int begin_write(struct store *st, struct pconn **c, int *own, struct err *err)
{
    int rc = pg__get_conn(st, c, err);
    if (rc)
        return rc;
    *own = *c != BE(st)->batch;
    if (*own && (rc = pg__run_sql(st, *c, "BEGIN", err))) {
        pg__put_conn(st, *c);
        return rc;
    }
    return 0;
}

static int end_write(struct store *st, struct pconn *c, int own, int rc, struct err *err)
{
    if (own) {
        if (!rc)
            rc = pg__run_sql(st, c, "COMMIT", err);
        else if (PQstatus(c->pg) == CONNECTION_OK)
            PQclear(PQexec(c->pg, "ROLLBACK"));
        if (!rc)
            counts_refresh(st, c);
        pg__put_conn(st, c);
    }
    return rc;
}

static int fill_item(struct store *st, PGresult *r, int row, int with_vec, struct store_item *it);

/* Looks the id up (locking its row), then inserts or updates. */
static int put_row(struct store *st, struct pconn *c, const struct store_item *it,
                   const char *md, int keep_same, int *is_new, int64_t *seqp, int retried,
                   struct err *err)
{
    PGresult *r;
    int rc = pg__run(st, c, P_LOOKUP, 1, (const char *[]){it->id}, NULL, &r, err);
    if (rc)
        return rc;
    int exists = PQntuples(r) == 1;
    int64_t seq = exists ? pg__col_i64(r, 0, 0, 0) : 0;
    int same_sha = exists && !PQgetisnull(r, 0, 1) && it->sha256 &&
                   !strcmp(PQgetvalue(r, 0, 1), it->sha256) && *PQgetvalue(r, 0, 2);
    int same_file = exists && it->source && !PQgetisnull(r, 0, 3) &&
                    (size_t)PQgetlength(r, 0, 3) == strlen(it->source) &&
                    !memcmp(PQgetvalue(r, 0, 3), it->source, strlen(it->source)) &&
                    pg__col_i64(r, 0, 4, -1) == it->size && pg__col_i64(r, 0, 5, -1) == it->mtime;
    PQclear(r);
    if (keep_same && same_file) { /* store_register: registered already */
        *seqp = seq;
        if (is_new)
            *is_new = 0;
        return 0;
    }
    char seqs[24], size[24], mtime[24], now[24];
    pg__i64s(seqs, seq);
    pg__i64s(size, it->size);
    pg__i64s(mtime, it->mtime);
    pg__i64s(now, (int64_t)time(NULL));
    int vlen = 0;
    char *vec = it->embedding ? pg__vec_param(it->embedding, st->dim, &vlen) : NULL;
    if (it->embedding && !vec)
        return err_set(err, ERR_NOMEM, "no memory");
    const char *model = it->embedding ? st->model : NULL;
    const char *szp = it->size >= 0 ? size : NULL, *mtp = it->mtime >= 0 ? mtime : NULL;
    /* the source in binary: its bytes as they are (design 1) */
    int sl = it->source ? (int)strlen(it->source) : 0;
    const int lens[9] = {0, sl, 0, 0, 0, 0, 0, 0, vlen};
    if (!exists) {
        const char *v[9] = {it->id, it->source, it->sha256, szp, mtp, md, model, now, vec};
        rc = pg__run(st, c, P_INSERT, 9, v, lens, &r, err);
        if (!rc && PQntuples(r) == 0 && !retried) {
            /* another process inserted the id since the lookup (and has
             * committed: the insert waited for it): update that row */
            PQclear(r);
            free(vec);
            return put_row(st, c, it, md, keep_same, is_new, seqp, 1, err);
        }
        if (!rc && PQntuples(r) == 0)
            rc = err_set(err, ERR_CONFLICT, "%s: item '%s' is being written by another process",
                         st->name, it->id);
        if (!rc)
            seq = pg__col_i64(r, 0, 0, 0);
    } else if (it->embedding || !same_sha) {
        const char *v[9] = {seqs, it->source, it->sha256, szp, mtp, md, model, now, vec};
        rc = pg__run(st, c, P_UPDATE_EMB, 9, v, lens, &r, err);
    } else {
        const char *v[7] = {seqs, it->source, it->sha256, szp, mtp, md, now};
        rc = pg__run(st, c, P_UPDATE_KEEP, 7, v, lens, &r, err);
    }
    PQclear(r);
    free(vec);
    *seqp = seq;
    if (!rc && is_new)
        *is_new = !exists;
    return rc;
}

static int pg_put(struct store *st, const struct store_item *it, const char *md, int keep_same,
                  int *is_new, struct store_item *out, struct err *err)
{
    struct pconn *c;
    int own, rc = begin_write(st, &c, &own, err);
    if (rc)
        return rc;
    int64_t seq = 0;
    rc = put_row(st, c, it, md, keep_same, is_new, &seq, 0, err);
    if (!rc && out) { /* the row as written, inside the write transaction */
        PGresult *r;
        char s[24];
        pg__i64s(s, seq);
        rc = pg__run(st, c, P_BY_SEQ, 1, (const char *[]){s}, NULL, &r, err);
        if (!rc)
            rc = PQntuples(r) != 1 ? err_set(err, ERR_STORE, "%s: the item went away", st->name)
               : fill_item(st, r, 0, 0, out) ? err_set(err, ERR_NOMEM, "no memory")
                                             : 0;
        PQclear(r);
    }
    return end_write(st, c, own, rc, err);
}

/* A statement that changes one row by id; none changed is ERR_NOT_FOUND. */
static int change_one(struct store *st, enum pstmt id, int n, const char *const *v,
                      const int *lens, struct err *err)
{
    struct pconn *c;
    int own, rc = begin_write(st, &c, &own, err);
    if (rc)
        return rc;
    PGresult *r;
    rc = pg__run(st, c, id, n, v, lens, &r, err);
    if (!rc && !strcmp(PQcmdTuples(r), "0"))
        rc = err_set(err, ERR_NOT_FOUND, "no item '%s'", v[0]);
    PQclear(r);
    return end_write(st, c, own, rc, err);
}

static int pg_put_embedding(struct store *st, const char *id, const float *v, struct err *err)
{
    int vlen;
    char *vec = pg__vec_param(v, st->dim, &vlen), now[24];
    if (!vec)
        return err_set(err, ERR_NOMEM, "no memory");
    pg__i64s(now, (int64_t)time(NULL));
    int rc = change_one(st, P_SET_EMB, 4, (const char *[]){id, vec, st->model, now},
                        (const int[]){0, vlen, 0, 0}, err);
    free(vec);
    return rc;
}

static int pg_del(struct store *st, const char *id, struct err *err)
{
    return change_one(st, P_DELETE, 1, (const char *[]){id}, NULL, err);
}

static int pg_begin(struct store *st, struct err *err)
{
    struct pgbe *b = BE(st);
    if (atomic_load(&st->tx_open))
        return err_set(err, ERR_CONFLICT, "%s: a batch is already open", st->name);
    struct pconn *c;
    int rc = pg__get_conn(st, &c, err);
    if (rc)
        return rc;
    if ((rc = pg__run_sql(st, c, "BEGIN", err))) {
        pg__put_conn(st, c);
        return rc;
    }
    b->batch = c;
    st->tx_owner = pthread_self();
    atomic_store(&st->tx_open, 1);
    return 0;
}

static int pg_finish(struct store *st, int commit, struct err *err)
{
    struct pgbe *b = BE(st);
    if (!atomic_load(&st->tx_open) || !b->batch)
        return err_set(err, ERR_CONFLICT, "%s: no batch is open", st->name);
    struct pconn *c = b->batch;
    int rc = pg__run_sql(st, c, commit ? "COMMIT" : "ROLLBACK", err);
    if (rc && PQstatus(c->pg) == CONNECTION_OK)
        PQclear(PQexec(c->pg, "ROLLBACK"));
    atomic_store(&st->tx_open, 0);
    b->batch = NULL;
    if (PQstatus(c->pg) == CONNECTION_OK)
        counts_refresh(st, c);
    pg__put_conn(st, c);
    return rc;
}

static int pg_reset(struct store *st, const char *model, int dim, struct err *err)
{
    struct pconn *c;
    int own, rc = begin_write(st, &c, &own, err);
    if (rc)
        return rc;
    char buf[32], sql[320];
    snprintf(buf, sizeof buf, "%d", dim);
    rc = pg__run_sql(st, c, "UPDATE items SET embedding = NULL, model = NULL "
                        "WHERE embedding IS NOT NULL", err);
    if (!rc && BE(st)->vector && dim != st->dim) {
        /* the index is rebuilt with the column (empty now) */
        snprintf(sql, sizeof sql, "DROP TRIGGER items_au ON items; ALTER TABLE items ALTER "
                 "COLUMN embedding TYPE vector(%d) USING NULL; %s", dim, TRIGGER_AU);
        rc = pg__run_sql(st, c, sql, err);
    }
    if (!rc)
        rc = meta_put(st, c, "model", model, err);
    if (!rc)
        rc = meta_put(st, c, "dim", buf, err);
    return end_write(st, c, own, rc, err);
}

/* ---- reads ------------------------------------------------------------- */

/* Columns: ITEM_COLS, then embedding (real[]) or has_embedding (bool). */
static int fill_item(struct store *st, PGresult *r, int row, int with_vec, struct store_item *it)
{
    memset(it, 0, sizeof *it);
    it->seq = pg__col_i64(r, row, 0, 0);
    it->id = pg__col_str(r, row, 1);
    it->source = pg__col_str(r, row, 2);
    it->sha256 = pg__col_str(r, row, 3);
    it->size = pg__col_i64(r, row, 4, -1);
    it->mtime = pg__col_i64(r, row, 5, -1);
    it->metadata = pg__col_str(r, row, 6);
    it->model = pg__col_str(r, row, 7);
    it->created_at = pg__col_i64(r, row, 8, 0);
    it->updated_at = pg__col_i64(r, row, 9, 0);
    if (with_vec) {
        float *v = malloc((size_t)st->dim * sizeof *v);
        if (!v)
            return -1;
        if (pg__vec_col(r, row, 10, st->dim, v)) {
            it->embedding = v;
            it->has_embedding = 1;
        } else
            free(v);
    } else
        it->has_embedding = !PQgetisnull(r, row, 10) && *PQgetvalue(r, row, 10);
    if (PQnfields(r) > 11 && !PQgetisnull(r, row, 11) && !(it->error = pg__col_str(r, row, 11))) {
        store_item_clear(it);
        return -1;
    }
    if (!it->id || !it->metadata || (!PQgetisnull(r, row, 2) && !it->source)) {
        store_item_clear(it);
        return -1;
    }
    return 0;
}

/* Runs a read statement on the caller's connection (its batch's, or one
 * of the pool); *r is the result, NULL on error (the callers PQclear it
 * either way: it must not be left unset when no connection was had). */
static int read_q(struct store *st, enum pstmt id, int n, const char *const *v, PGresult **r,
                  struct err *err)
{
    struct pconn *c;
    *r = NULL;
    int rc = pg__get_conn(st, &c, err);
    if (rc)
        return rc;
    int lens[4] = {0}; /* a source goes in binary (its bytes) */
    if (id == P_FIND_SOURCE)
        lens[0] = (int)strlen(v[0]);
    rc = pg__run(st, c, id, n, v, lens, r, err);
    pg__put_conn(st, c);
    return rc;
}

static int get_one(struct store *st, enum pstmt id, const char *key, int with_vec,
                   struct store_item *out, const char *what, struct err *err)
{
    PGresult *r;
    int rc = read_q(st, id, 1, (const char *[]){key}, &r, err);
    if (!rc && PQntuples(r) == 0)
        rc = err_set(err, ERR_NOT_FOUND, "no item with %s '%s'", what, key);
    else if (!rc && fill_item(st, r, 0, with_vec, out))
        rc = err_set(err, ERR_NOMEM, "no memory");
    PQclear(r);
    return rc;
}

static int pg_get(struct store *st, const char *id, struct store_item *out, struct err *err)
{
    return get_one(st, P_GET, id, 1, out, "id", err);
}

static int pg_find_source(struct store *st, const char *source, struct store_item *out,
                          struct err *err)
{
    return get_one(st, P_FIND_SOURCE, source, 0, out, "source", err);
}

static int pg_exists(struct store *st, const char *id, int64_t *seq, struct err *err)
{
    PGresult *r;
    int rc = read_q(st, P_EXISTS, 1, (const char *[]){id}, &r, err);
    if (!rc && PQntuples(r) == 1) {
        if (seq)
            *seq = pg__col_i64(r, 0, 0, 0);
        rc = 1;
    }
    PQclear(r);
    return rc;
}

static int pg_list(struct store *st, int waiting, int64_t after, int max, struct store_item *a,
                   size_t *k, struct err *err)
{
    char s[24], m[24];
    pg__i64s(s, after);
    pg__i64s(m, max);
    PGresult *r;
    int rc = read_q(st, waiting ? P_WAITING : P_LIST, 2, (const char *[]){s, m}, &r, err);
    for (int i = 0; !rc && i < PQntuples(r) && i < max; i++) {
        if (fill_item(st, r, i, 0, &a[*k]))
            rc = err_set(err, ERR_NOMEM, "no memory");
        else
            ++*k;
    }
    PQclear(r);
    return rc;
}

/* ---- leased claims and the failed state (design 8) ------------------------ */

static int pg_claim(struct store *st, const char *owner, int lease_s, int max,
                    struct store_item *a, size_t *k, int64_t *retry_ms, struct err *err)
{
    struct pconn *c;
    int own, rc = begin_write(st, &c, &own, err);
    if (rc)
        return rc;
    char ls[24], ms[24];
    pg__i64s(ls, lease_s);
    pg__i64s(ms, max);
    PGresult *r;
    rc = pg__run(st, c, P_CLAIM, 3, (const char *[]){owner, ls, ms}, NULL, &r, err);
    for (int i = 0; !rc && i < PQntuples(r) && i < max; i++) {
        if (fill_item(st, r, i, 0, &a[*k]))
            rc = err_set(err, ERR_NOMEM, "no memory");
        else
            ++*k;
    }
    PQclear(r);
    if (!rc && !*k) { /* when does the first lease run out? */
        rc = pg__run(st, c, P_CLAIM_NEXT, 0, NULL, NULL, &r, err);
        if (!rc) {
            int64_t left = pg__col_i64(r, 0, 0, -1);
            *retry_ms = PQgetisnull(r, 0, 0) ? -1 : left < 1 ? 1 : left;
        }
        PQclear(r);
    }
    return end_write(st, c, own, rc, err);
}

static int pg_renew(struct store *st, const char *owner, int lease_s, int64_t *n,
                    struct err *err)
{
    struct pconn *c;
    int own, rc = begin_write(st, &c, &own, err);
    if (rc)
        return rc;
    char ls[24];
    pg__i64s(ls, lease_s);
    PGresult *r;
    rc = pg__run(st, c, P_RENEW, 2, (const char *[]){owner, ls}, NULL, &r, err);
    if (!rc)
        *n = strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return end_write(st, c, own, rc, err);
}

static int pg_owners(struct store *st, int max, char **a, size_t *k, struct err *err)
{
    char m[24];
    pg__i64s(m, max);
    PGresult *r;
    int rc = read_q(st, P_OWNERS, 1, (const char *[]){m}, &r, err);
    for (int i = 0; !rc && i < PQntuples(r) && i < max; i++)
        if (!(a[(*k)++] = pg__col_str(r, i, 0)))
            rc = err_set(err, ERR_NOMEM, "no memory");
    PQclear(r);
    return rc;
}

static int pg_set_failed(struct store *st, const char *id, const char *reason, int64_t size,
                         int64_t mtime, struct err *err)
{
    char sz[24], mt[24];
    pg__i64s(sz, size);
    pg__i64s(mt, mtime);
    return change_one(st, P_SET_FAILED, 4,
                      (const char *[]){id, reason, size >= 0 ? sz : NULL, mtime >= 0 ? mt : NULL},
                      NULL, err);
}

static int pg_count(struct store *st, int which, int64_t *n, struct err *err)
{
    PGresult *r;
    int rc = read_q(st, P_COUNTS, 0, NULL, &r, err);
    if (!rc)
        *n = PQntuples(r) == 1 ? pg__col_i64(r, 0, which, 0) : 0;
    PQclear(r);
    return rc;
}

/* ---- the local index's source -------------------------------------------- */

static int pg_snap_begin(struct store *st, struct err *err)
{
    struct pconn *c;
    int rc = pg__pool_conn(st, &c, err);
    if (rc)
        return rc;
    if ((rc = pg__run_sql(st, c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err))) {
        pg__put_conn(st, c);
        return rc;
    }
    BE(st)->snap = c;
    return 0;
}

static void pg_snap_end(struct store *st)
{
    struct pconn *c = BE(st)->snap;
    BE(st)->snap = NULL;
    if (c && PQstatus(c->pg) == CONNECTION_OK)
        PQclear(PQexec(c->pg, "COMMIT"));
    pg__put_conn(st, c);
}

static int snap_q(struct store *st, enum pstmt id, int n, const char *const *v, PGresult **r,
                  struct err *err)
{
    return pg__run(st, BE(st)->snap, id, n, v, NULL, r, err);
}

static int pg_log_state(struct store *st, int64_t *top, int64_t *trimmed, struct err *err)
{
    PGresult *r;
    int rc = snap_q(st, P_LOG_TOP, 0, NULL, &r, err);
    if (!rc)
        *top = pg__col_i64(r, 0, 0, 0);
    if (trimmed)
        *trimmed = 0; /* never trimmed (design 6) */
    PQclear(r);
    return rc;
}

static int pg_log_top(struct store *st, int64_t *top, struct err *err)
{
    PGresult *r;
    struct pconn *c;
    int rc = pg__pool_conn(st, &c, err);
    if (rc)
        return rc;
    rc = pg__run(st, c, P_LOG_TOP, 0, NULL, NULL, &r, err);
    pg__put_conn(st, c);
    if (!rc)
        *top = pg__col_i64(r, 0, 0, 0);
    PQclear(r);
    return rc;
}

static int pg_log_since(struct store *st, int64_t cov, int64_t **out, size_t *n,
                        struct err *err)
{
    char s[24];
    pg__i64s(s, cov);
    PGresult *r;
    *out = NULL;
    *n = 0;
    int rc = snap_q(st, P_LOG_SINCE, 1, (const char *[]){s}, &r, err);
    if (rc)
        return rc;
    size_t k = (size_t)PQntuples(r);
    int64_t *seqs = malloc((k ? k : 1) * sizeof *seqs);
    if (!seqs)
        rc = err_set(err, ERR_NOMEM, "no memory for the changes log");
    for (size_t i = 0; seqs && i < k; i++)
        seqs[i] = pg__col_i64(r, (int)i, 0, 0);
    PQclear(r);
    *out = seqs;
    *n = seqs ? k : 0;
    return rc;
}

static int pg_emb_by_seqs(struct store *st, const int64_t *seqs, size_t n, float *v,
                          unsigned char *ok, struct err *err)
{
    char *arr = pg__seq_array(seqs, n);
    if (!arr)
        return err_set(err, ERR_NOMEM, "no memory");
    PGresult *r;
    int rc = snap_q(st, P_EMB_BY_SEQS, 1, (const char *[]){arr}, &r, err);
    free(arr);
    if (rc)
        return rc;
    memset(ok, 0, n);
    for (int i = 0; i < PQntuples(r); i++) {
        int64_t seq = pg__col_i64(r, i, 0, 0);
        const int64_t *at = bsearch(&seq, seqs, n, sizeof *seqs, pg__cmp_i64); /* seqs ascend */
        if (at) {
            size_t j = (size_t)(at - seqs);
            ok[j] = (unsigned char)pg__vec_col(r, i, 1, st->dim, v + j * (size_t)st->dim);
        }
    }
    PQclear(r);
    return 0;
}

static int pg_emb_all(struct store *st, store__emb_fn fn, void *ctx, struct err *err)
{
    float *v = malloc((size_t)st->dim * sizeof *v);
    if (!v)
        return err_set(err, ERR_NOMEM, "no memory");
    int64_t after = 0;
    int rc = 0, got = PG_PAGE;
    char s[24], lim[24];
    pg__i64s(lim, PG_PAGE);
    while (!rc && got == PG_PAGE) {
        PGresult *r;
        pg__i64s(s, after);
        if ((rc = snap_q(st, P_EMB_PAGE, 2, (const char *[]){s, lim}, &r, err)))
            break;
        got = PQntuples(r);
        for (int i = 0; i < got && !rc; i++) {
            after = pg__col_i64(r, i, 0, 0);
            if (pg__vec_col(r, i, 1, st->dim, v))
                rc = fn(after, v, ctx);
        }
        PQclear(r);
    }
    free(v);
    return rc;
}

static int pg_count_embedded(struct store *st, int64_t *n, struct err *err)
{
    PGresult *r;
    int rc = snap_q(st, P_COUNT_EMB, 0, NULL, &r, err);
    if (!rc)
        *n = pg__col_i64(r, 0, 0, 0);
    PQclear(r);
    return rc;
}

static const char *pg_index_kind(struct store *st)
{
    struct pgbe *b = BE(st);
    return !b->vector ? "local-hnsw" : b->ivfflat ? "pgvector-ivfflat" : "pgvector-hnsw";
}

static const struct store_ops pg_ops = {
    .kind = "postgresql",
    .close = pg_close,
    .put = pg_put,
    .put_embedding = pg_put_embedding,
    .del = pg_del,
    .get = pg_get,
    .find_source = pg_find_source,
    .exists = pg_exists,
    .list = pg_list,
    .count = pg_count,
    .claim = pg_claim,
    .renew = pg_renew,
    .set_failed = pg_set_failed,
    .owners = pg_owners,
    .begin = pg_begin,
    .finish = pg_finish,
    .reset = pg_reset,
    .snap_begin = pg_snap_begin,
    .snap_end = pg_snap_end,
    .log_state = pg_log_state,
    .log_top = pg_log_top,
    .log_since = pg_log_since,
    .emb_by_seqs = pg_emb_by_seqs,
    .emb_all = pg_emb_all,
    .count_embedded = pg_count_embedded,
    .log_trim = NULL,
    .filter_seqs = pg__filter_seqs,
    .rows = pg__rows,
    .search = pg__search,
    .index_kind = pg_index_kind,
};
