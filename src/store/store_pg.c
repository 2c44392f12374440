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
 *     backoff period that doubles from 100 ms to 5 s, and the next call
 *     after it tries again: the store recovers by itself.
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
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/store_int.h"

#define PG_SCHEMA_VERSION 1
#define PG_LOCK_MIGRATE 7316000  /* advisory lock: one migration at a time */
#define PG_POOL_MAX 256
#define PG_PAGE 4096             /* embeddings read per round trip */
#define FLOAT4OID 700

enum pstmt {
    P_META_GET,
    P_META_PUT,
    P_LOOKUP,
    P_INSERT,
    P_UPDATE_KEEP,
    P_UPDATE_EMB,
    P_SET_EMB,
    P_GET,
    P_DELETE,
    P_LIST,
    P_WAITING,
    P_COUNTS,
    P_FIND_SOURCE,
    P_BY_SEQ,
    P_EXISTS,
    P_LOG_TOP,
    P_LOG_SINCE,
    P_EMB_BY_SEQS,
    P_EMB_PAGE,
    P_COUNT_EMB,
    P_ROWS,
    P_MAX_SEQ,
    P_COUNT_
};

#define ITEM_COLS "seq, id, source, sha256, size, mtime, metadata::text, model, created_at, " \
                  "updated_at"

static const char *const psql[P_COUNT_] = {
    [P_META_GET] = "SELECT value FROM meta WHERE key = $1",
    [P_META_PUT] = "INSERT INTO meta(key, value) VALUES ($1, $2) "
                   "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    [P_LOOKUP] = "SELECT seq, sha256, embedding IS NOT NULL FROM items WHERE id = $1 FOR UPDATE",
    [P_INSERT] = "INSERT INTO items(id, source, sha256, size, mtime, metadata, model, "
                 "created_at, updated_at, embedding) "
                 "VALUES ($1, $2::bytea, $3, $4, $5, $6::json, $7, $8, $8, $9::real[]) "
                 "RETURNING seq",
    [P_UPDATE_KEEP] = "UPDATE items SET source = $2::bytea, sha256 = $3, size = $4, mtime = $5, "
                      "metadata = $6::json, updated_at = $7 WHERE seq = $1",
    [P_UPDATE_EMB] = "UPDATE items SET source = $2::bytea, sha256 = $3, size = $4, mtime = $5, "
                     "metadata = $6::json, model = $7, updated_at = $8, embedding = $9::real[] "
                     "WHERE seq = $1",
    [P_SET_EMB] = "UPDATE items SET embedding = $2::real[], model = $3, updated_at = $4 "
                  "WHERE id = $1",
    [P_GET] = "SELECT " ITEM_COLS ", embedding::real[] FROM items WHERE id = $1",
    [P_DELETE] = "DELETE FROM items WHERE id = $1",
    [P_LIST] = "SELECT " ITEM_COLS ", embedding IS NOT NULL FROM items WHERE seq > $1 "
               "ORDER BY seq LIMIT $2",
    [P_WAITING] = "SELECT " ITEM_COLS ", false FROM items WHERE seq > $1 AND embedding IS NULL "
                  "ORDER BY seq LIMIT $2",
    [P_COUNTS] = "SELECT items, waiting FROM counts",
    [P_FIND_SOURCE] = "SELECT " ITEM_COLS ", embedding IS NOT NULL FROM items "
                      "WHERE source = $1::bytea ORDER BY seq LIMIT 1",
    [P_BY_SEQ] = "SELECT " ITEM_COLS ", embedding IS NOT NULL FROM items WHERE seq = $1",
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

struct pconn {
    PGconn *pg;        /* NULL until first used */
    uint64_t prepared; /* bit i: statement i prepared on this connection */
    int busy;          /* handed out (pool mutex) */
};

struct pgbe {
    char *conninfo;        /* the URL as given */
    char prefix[24];       /* statement name prefix (design 7) */
    struct pconn *c;       /* pool */
    int n;                 /* pool size */
    pthread_mutex_t mu;    /* guards busy flags and the backoff */
    pthread_cond_t cv;     /* a connection came back */
    int64_t down_until_ms; /* fail fast until then */
    int backoff_ms;        /* next backoff */
    struct pconn *batch;   /* held by the open batch */
    struct pconn *snap;    /* held between snap_begin and snap_end */
    int vector;            /* the column is vector(D) */
    int ivfflat;           /* the pgvector index is IVFFlat (else HNSW) */
    int iterative;         /* pgvector >= 0.8: iterative index scans */
    int probes;            /* IVFFlat probes per search */
};

#define BE(st) ((struct pgbe *)(st)->be)

/* ---- connections ------------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The server did not answer: fail fast for a while (mu not held). */
static int mark_down(struct store *st, PGconn *pg, struct err *err)
{
    struct pgbe *b = BE(st);
    pthread_mutex_lock(&b->mu);
    int wait = b->backoff_ms;
    b->down_until_ms = now_ms() + wait;
    b->backoff_ms = wait * 2 > 5000 ? 5000 : wait * 2;
    pthread_mutex_unlock(&b->mu);
    const char *m = pg ? PQerrorMessage(pg) : "";
    size_t ml = strcspn(m, "\n");
    return err_set(err, ERR_UNAVAILABLE, "%s: the database is unavailable (%.*s); retry in %d ms",
                   st->name, (int)(ml > 200 ? 200 : ml), m, wait);
}

static void quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Connects or repairs c (not locked by anyone else). */
static int conn_ready(struct store *st, struct pconn *c, struct err *err)
{
    if (c->pg && PQstatus(c->pg) == CONNECTION_OK)
        return 0;
    if (c->pg)
        PQreset(c->pg);
    else
        c->pg = PQconnectdb(BE(st)->conninfo);
    c->prepared = 0;
    if (!c->pg)
        return err_set(err, ERR_NOMEM, "no memory for a connection");
    if (PQstatus(c->pg) != CONNECTION_OK)
        return mark_down(st, c->pg, err);
    PQsetNoticeProcessor(c->pg, quiet, NULL); /* library code never prints */
    pthread_mutex_lock(&BE(st)->mu);
    BE(st)->backoff_ms = 100;
    pthread_mutex_unlock(&BE(st)->mu);
    return 0;
}

/* A connection for the calling thread: the batch's own when it runs the
 * batch, else one from the pool (release it with put_conn). */
static int get_conn_(struct store *st, struct pconn **out, int batch, struct err *err)
{
    struct pgbe *b = BE(st);
    *out = NULL;
    if (batch && store__in_batch(st)) {
        *out = b->batch;
        return 0;
    }
    pthread_mutex_lock(&b->mu);
    int64_t left = b->down_until_ms - now_ms();
    if (left > 0) {
        pthread_mutex_unlock(&b->mu);
        return err_set(err, ERR_UNAVAILABLE, "%s: the database is unavailable; retry in %lld ms",
                       st->name, (long long)left);
    }
    struct pconn *c = NULL;
    while (!c) {
        for (int i = 0; i < b->n && !c; i++)
            if (!b->c[i].busy && b->c[i].pg) /* an open one first */
                c = &b->c[i];
        for (int i = 0; i < b->n && !c; i++)
            if (!b->c[i].busy)
                c = &b->c[i];
        if (!c)
            pthread_cond_wait(&b->cv, &b->mu);
    }
    c->busy = 1;
    pthread_mutex_unlock(&b->mu);
    int rc = conn_ready(st, c, err);
    if (rc) {
        pthread_mutex_lock(&b->mu);
        c->busy = 0;
        pthread_cond_signal(&b->cv);
        pthread_mutex_unlock(&b->mu);
        return rc;
    }
    *out = c;
    return 0;
}

static int get_conn(struct store *st, struct pconn **out, struct err *err)
{
    return get_conn_(st, out, 1, err);
}

/* A connection of the pool even for the batch's thread: committed data
 * (the index, searches). */
static int pool_conn(struct store *st, struct pconn **out, struct err *err)
{
    return get_conn_(st, out, 0, err);
}

static void put_conn(struct store *st, struct pconn *c)
{
    struct pgbe *b = BE(st);
    if (!c || c == b->batch)
        return;
    pthread_mutex_lock(&b->mu);
    c->busy = 0;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* The error of a failed result (cleared); a lost connection is
 * ERR_UNAVAILABLE and starts the backoff. */
static int res_err(struct store *st, struct pconn *c, PGresult *r, const char *what,
                   struct err *err)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *m = r ? PQresultErrorMessage(r) : PQerrorMessage(c->pg);
    char msg[300];
    snprintf(msg, sizeof msg, "%.*s", (int)strcspn(m, "\n"), m);
    PQclear(r);
    if (PQstatus(c->pg) != CONNECTION_OK)
        return mark_down(st, c->pg, err);
    int code = !state ? ERR_STORE
             : !strcmp(state, "23505") ? ERR_CONFLICT
             : !strcmp(state, "53100") ? ERR_NO_SPACE
             : !strcmp(state, "53200") ? ERR_NOMEM
             : !strncmp(state, "57P", 3) || !strcmp(state, "40001") || !strcmp(state, "40P01") ||
                       !strcmp(state, "53300")
                 ? ERR_UNAVAILABLE
                 : ERR_STORE;
    return err_set(err, code, "%s: %s: %s", st->name, what, msg);
}

/* Runs a statement without parameters or results (BEGIN, COMMIT, DDL). */
static int run_sql(struct store *st, struct pconn *c, const char *sql, struct err *err)
{
    PGresult *r = PQexec(c->pg, sql);
    if (PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK) {
        PQclear(r);
        return 0;
    }
    return res_err(st, c, r, "run", err);
}

/* Runs prepared statement id with n text parameters (vals[i] may be NULL);
 * a parameter whose lens[i] > 0 is binary. Results are binary. *out gets
 * the result (PGRES_TUPLES_OK or COMMAND_OK), the caller clears it. */
static int run(struct store *st, struct pconn *c, enum pstmt id, int n, const char *const *vals,
               const int *lens, PGresult **out, struct err *err)
{
    char name[48];
    snprintf(name, sizeof name, "%s_%d", BE(st)->prefix, (int)id);
    *out = NULL;
    if (!(c->prepared >> id & 1)) {
        PGresult *p = PQprepare(c->pg, name, psql[id], 0, NULL);
        const char *state = PQresultErrorField(p, PG_DIAG_SQLSTATE);
        if (PQresultStatus(p) != PGRES_COMMAND_OK && !(state && !strcmp(state, "42P05")))
            return res_err(st, c, p, "prepare", err);
        PQclear(p);
        c->prepared |= 1ull << id;
    }
    int fmts[16];
    for (int i = 0; i < n; i++)
        fmts[i] = lens && lens[i] > 0;
    PGresult *r = PQexecPrepared(c->pg, name, n, vals, lens, fmts, 1);
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK)
        return res_err(st, c, r, "query", err);
    *out = r;
    return 0;
}

/* ---- binary values ------------------------------------------------------ */

static int64_t be64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | (unsigned char)p[i];
    return (int64_t)v;
}

static uint32_t be32(const char *p)
{
    return (uint32_t)(unsigned char)p[0] << 24 | (uint32_t)(unsigned char)p[1] << 16 |
           (uint32_t)(unsigned char)p[2] << 8 | (uint32_t)(unsigned char)p[3];
}

static void put32(char *p, uint32_t v)
{
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
}

static int64_t col_i64(PGresult *r, int row, int col, int64_t dflt)
{
    if (PQgetisnull(r, row, col))
        return dflt;
    return PQgetlength(r, row, col) == 8 ? be64(PQgetvalue(r, row, col)) : dflt;
}

static char *col_str(PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return NULL;
    return strndup(PQgetvalue(r, row, col), (size_t)PQgetlength(r, row, col));
}

/* A binary real[] of dim floats (the buffer is 20 + 8 * dim bytes). */
static char *vec_param(const float *v, int dim, int *len)
{
    *len = 20 + 8 * dim;
    char *b = malloc((size_t)*len);
    if (!b)
        return NULL;
    put32(b, 1);          /* dimensions */
    put32(b + 4, 0);      /* no NULLs */
    put32(b + 8, FLOAT4OID);
    put32(b + 12, (uint32_t)dim);
    put32(b + 16, 1);     /* lower bound */
    for (int i = 0; i < dim; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        put32(b + 20 + 8 * i, 4);
        put32(b + 24 + 8 * i, u);
    }
    return b;
}

/* Reads a binary real[] of exactly dim non-NULL floats into v. */
static int vec_col(PGresult *r, int row, int col, int dim, float *v)
{
    if (PQgetisnull(r, row, col))
        return 0;
    const char *p = PQgetvalue(r, row, col);
    int len = PQgetlength(r, row, col);
    if (len != 20 + 8 * dim || be32(p) != 1 || be32(p + 12) != (uint32_t)dim)
        return 0;
    for (int i = 0; i < dim; i++) {
        if (be32(p + 20 + 8 * i) != 4)
            return 0;
        uint32_t u = be32(p + 24 + 8 * i);
        memcpy(&v[i], &u, 4);
    }
    return store__valid_vec(v, dim);
}

/* "{1,2,3}": a bigint[] parameter (digits only). */
static char *seq_array(const int64_t *seqs, size_t n)
{
    char *s = malloc(n * 21 + 3), *p = s;
    if (!s)
        return NULL;
    *p++ = '{';
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, i ? ",%lld" : "%lld", (long long)seqs[i]);
    *p++ = '}';
    *p = 0;
    return s;
}

/* ---- schema -------------------------------------------------------------- */

static int meta_get(struct store *st, struct pconn *c, const char *key, char **out,
                    struct err *err)
{
    PGresult *r;
    *out = NULL;
    int rc = run(st, c, P_META_GET, 1, (const char *[]){key}, NULL, &r, err);
    if (!rc && PQntuples(r) == 1 && !(*out = col_str(r, 0, 0)))
        rc = err_set(err, ERR_NOMEM, "no memory");
    PQclear(r);
    return rc;
}

static int meta_put(struct store *st, struct pconn *c, const char *key, const char *val,
                    struct err *err)
{
    PGresult *r;
    int rc = run(st, c, P_META_PUT, 2, (const char *[]){key, val}, NULL, &r, err);
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
        return res_err(st, c, r, "read the schema", err);
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
            return err_set(err, ERR_NOT_FOUND, "%s: no store in this database (index into it, "
                           "or run imgsearch migrate)", st->name);
        if (o->no_migrate)
            return err_set(err, ERR_UNSUPPORTED_FORMAT, "%s: no schema, and migrations are off "
                           "(run imgsearch migrate)", st->name);
        return run_sql(st, c, pg_schema_v1, err);
    }
    char *v = NULL;
    if ((rc = query_text(st, c, "SELECT max(version)::text FROM schema_version", &v, err)))
        return rc;
    long version = v ? strtol(v, NULL, 10) : 0;
    free(v);
    if (version > PG_SCHEMA_VERSION)
        return err_set(err, ERR_UNSUPPORTED_FORMAT, "%s: store schema version %ld is newer than "
                       "this imgsearch (%d)", st->name, version, PG_SCHEMA_VERSION);
    return 0;
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
        rc = run_sql(st, c, "SAVEPOINT ext", err);
        if (!rc && run_sql(st, c, "CREATE EXTENSION IF NOT EXISTS vector", NULL))
            rc = run_sql(st, c, "ROLLBACK TO SAVEPOINT ext", err);
        else if (!rc) {
            /* the UPDATE OF trigger names the column: off while it changes */
            snprintf(sql, sizeof sql, "DROP TRIGGER items_au ON items; ALTER TABLE items ALTER "
                     "COLUMN embedding TYPE vector(%d) USING embedding::vector(%d); %s",
                     st->dim, st->dim, TRIGGER_AU);
            if (!(rc = run_sql(st, c, sql, err)))
                rc = meta_put(st, c, "embedding", "vector", err);
            vec = !rc;
            free(idx);
            idx = NULL; /* build it below */
        }
    }
    if (!rc && vec && !(o && o->no_migrate) &&
        (!idx || (o && o->index && strcmp(idx, want_ivf ? "ivfflat" : "hnsw")))) {
        index_sql(sql, sizeof sql, st, o, want_ivf);
        rc = run_sql(st, c, "DROP INDEX IF EXISTS items_embedding", err);
        if (!rc)
            rc = run_sql(st, c, sql, err);
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
    int rc = get_conn(st, &c, err);
    if (rc)
        return rc;
    char lock[96];
    snprintf(lock, sizeof lock, "BEGIN; SELECT pg_advisory_xact_lock(%d)", PG_LOCK_MIGRATE);
    rc = run_sql(st, c, lock, err);
    if (!rc)
        rc = schema(st, c, o, err);
    if (!rc)
        rc = model_meta(st, c, o, err);
    if (!rc)
        rc = use_vector(st, c, o, err);
    if (!rc)
        rc = run_sql(st, c, "COMMIT", err);
    if (rc && PQstatus(c->pg) == CONNECTION_OK)
        PQclear(PQexec(c->pg, "ROLLBACK"));
    put_conn(st, c);
    return rc;
}

static void counts_refresh(struct store *st, struct pconn *c)
{
    PGresult *r;
    struct err e;
    if (!run(st, c, P_COUNTS, 0, NULL, NULL, &r, &e) && PQntuples(r) == 1) {
        atomic_store(&st->n_items, col_i64(r, 0, 0, -1));
        atomic_store(&st->n_waiting, col_i64(r, 0, 1, -1));
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
    if (!get_conn(st, &c, err)) {
        counts_refresh(st, c);
        put_conn(st, c);
    }
    return 0;
}

/* ---- writes ------------------------------------------------------------ */

/* Starts a write: a transaction of its own unless the caller's batch is
 * open; end_write commits it (or rolls back on rc) and gives c back. */
static int begin_write(struct store *st, struct pconn **c, int *own, struct err *err)
{
    int rc = get_conn(st, c, err);
    if (rc)
        return rc;
    *own = *c != BE(st)->batch;
    if (*own && (rc = run_sql(st, *c, "BEGIN", err))) {
        put_conn(st, *c);
        return rc;
    }
    return 0;
}

static int end_write(struct store *st, struct pconn *c, int own, int rc, struct err *err)
{
    if (own) {
        if (!rc)
            rc = run_sql(st, c, "COMMIT", err);
        else if (PQstatus(c->pg) == CONNECTION_OK)
            PQclear(PQexec(c->pg, "ROLLBACK"));
        if (!rc)
            counts_refresh(st, c);
        put_conn(st, c);
    }
    return rc;
}

static int fill_item(struct store *st, PGresult *r, int row, int with_vec, struct store_item *it);

static void i64s(char *buf, int64_t v) { snprintf(buf, 24, "%lld", (long long)v); }

/* Looks the id up (locking its row), then inserts or updates. */
static int put_row(struct store *st, struct pconn *c, const struct store_item *it,
                   const char *md, int *is_new, int64_t *seqp, struct err *err)
{
    PGresult *r;
    int rc = run(st, c, P_LOOKUP, 1, (const char *[]){it->id}, NULL, &r, err);
    if (rc)
        return rc;
    int exists = PQntuples(r) == 1;
    int64_t seq = exists ? col_i64(r, 0, 0, 0) : 0;
    int same_sha = exists && !PQgetisnull(r, 0, 1) && it->sha256 &&
                   !strcmp(PQgetvalue(r, 0, 1), it->sha256) && *PQgetvalue(r, 0, 2);
    PQclear(r);
    char seqs[24], size[24], mtime[24], now[24];
    i64s(seqs, seq);
    i64s(size, it->size);
    i64s(mtime, it->mtime);
    i64s(now, (int64_t)time(NULL));
    int vlen = 0;
    char *vec = it->embedding ? vec_param(it->embedding, st->dim, &vlen) : NULL;
    if (it->embedding && !vec)
        return err_set(err, ERR_NOMEM, "no memory");
    const char *model = it->embedding ? st->model : NULL;
    const char *szp = it->size >= 0 ? size : NULL, *mtp = it->mtime >= 0 ? mtime : NULL;
    /* the source in binary: its bytes as they are (design 1) */
    int sl = it->source ? (int)strlen(it->source) : 0;
    const int lens[9] = {0, sl, 0, 0, 0, 0, 0, 0, vlen};
    if (!exists) {
        const char *v[9] = {it->id, it->source, it->sha256, szp, mtp, md, model, now, vec};
        rc = run(st, c, P_INSERT, 9, v, lens, &r, err);
        if (!rc)
            seq = col_i64(r, 0, 0, 0);
    } else if (it->embedding || !same_sha) {
        const char *v[9] = {seqs, it->source, it->sha256, szp, mtp, md, model, now, vec};
        rc = run(st, c, P_UPDATE_EMB, 9, v, lens, &r, err);
    } else {
        const char *v[7] = {seqs, it->source, it->sha256, szp, mtp, md, now};
        rc = run(st, c, P_UPDATE_KEEP, 7, v, lens, &r, err);
    }
    PQclear(r);
    free(vec);
    *seqp = seq;
    if (!rc && is_new)
        *is_new = !exists;
    return rc;
}

static int pg_put(struct store *st, const struct store_item *it, const char *md, int *is_new,
                  struct store_item *out, struct err *err)
{
    struct pconn *c;
    int own, rc = begin_write(st, &c, &own, err);
    if (rc)
        return rc;
    int64_t seq = 0;
    rc = put_row(st, c, it, md, is_new, &seq, err);
    if (!rc && out) { /* the row as written, inside the write transaction */
        PGresult *r;
        char s[24];
        i64s(s, seq);
        rc = run(st, c, P_BY_SEQ, 1, (const char *[]){s}, NULL, &r, err);
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
    rc = run(st, c, id, n, v, lens, &r, err);
    if (!rc && !strcmp(PQcmdTuples(r), "0"))
        rc = err_set(err, ERR_NOT_FOUND, "no item '%s'", v[0]);
    PQclear(r);
    return end_write(st, c, own, rc, err);
}

static int pg_put_embedding(struct store *st, const char *id, const float *v, struct err *err)
{
    int vlen;
    char *vec = vec_param(v, st->dim, &vlen), now[24];
    if (!vec)
        return err_set(err, ERR_NOMEM, "no memory");
    i64s(now, (int64_t)time(NULL));
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
    int rc = get_conn(st, &c, err);
    if (rc)
        return rc;
    if ((rc = run_sql(st, c, "BEGIN", err))) {
        put_conn(st, c);
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
    int rc = run_sql(st, c, commit ? "COMMIT" : "ROLLBACK", err);
    if (rc && PQstatus(c->pg) == CONNECTION_OK)
        PQclear(PQexec(c->pg, "ROLLBACK"));
    atomic_store(&st->tx_open, 0);
    b->batch = NULL;
    if (PQstatus(c->pg) == CONNECTION_OK)
        counts_refresh(st, c);
    put_conn(st, c);
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
    rc = run_sql(st, c, "UPDATE items SET embedding = NULL, model = NULL "
                        "WHERE embedding IS NOT NULL", err);
    if (!rc && BE(st)->vector && dim != st->dim) {
        /* the index is rebuilt with the column (empty now) */
        snprintf(sql, sizeof sql, "DROP TRIGGER items_au ON items; ALTER TABLE items ALTER "
                 "COLUMN embedding TYPE vector(%d) USING NULL; %s", dim, TRIGGER_AU);
        rc = run_sql(st, c, sql, err);
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
    it->seq = col_i64(r, row, 0, 0);
    it->id = col_str(r, row, 1);
    it->source = col_str(r, row, 2);
    it->sha256 = col_str(r, row, 3);
    it->size = col_i64(r, row, 4, -1);
    it->mtime = col_i64(r, row, 5, -1);
    it->metadata = col_str(r, row, 6);
    it->model = col_str(r, row, 7);
    it->created_at = col_i64(r, row, 8, 0);
    it->updated_at = col_i64(r, row, 9, 0);
    if (with_vec) {
        float *v = malloc((size_t)st->dim * sizeof *v);
        if (!v)
            return -1;
        if (vec_col(r, row, 10, st->dim, v)) {
            it->embedding = v;
            it->has_embedding = 1;
        } else
            free(v);
    } else
        it->has_embedding = !PQgetisnull(r, row, 10) && *PQgetvalue(r, row, 10);
    if (!it->id || !it->metadata || (!PQgetisnull(r, row, 2) && !it->source)) {
        store_item_clear(it);
        return -1;
    }
    return 0;
}

/* Runs a read statement on the caller's connection (its batch's, or one
 * of the pool); *r is the result. */
static int read_q(struct store *st, enum pstmt id, int n, const char *const *v, PGresult **r,
                  struct err *err)
{
    struct pconn *c;
    int rc = get_conn(st, &c, err);
    if (rc)
        return rc;
    int lens[4] = {0}; /* a source goes in binary (its bytes) */
    if (id == P_FIND_SOURCE)
        lens[0] = (int)strlen(v[0]);
    rc = run(st, c, id, n, v, lens, r, err);
    put_conn(st, c);
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
            *seq = col_i64(r, 0, 0, 0);
        rc = 1;
    }
    PQclear(r);
    return rc;
}

static int pg_list(struct store *st, int waiting, int64_t after, int max, struct store_item *a,
                   size_t *k, struct err *err)
{
    char s[24], m[24];
    i64s(s, after);
    i64s(m, max);
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

static int pg_count(struct store *st, int which, int64_t *n, struct err *err)
{
    PGresult *r;
    int rc = read_q(st, P_COUNTS, 0, NULL, &r, err);
    if (!rc)
        *n = PQntuples(r) == 1 ? col_i64(r, 0, which, 0) : 0;
    PQclear(r);
    return rc;
}

/* ---- the local index's source -------------------------------------------- */

static int pg_snap_begin(struct store *st, struct err *err)
{
    struct pconn *c;
    int rc = pool_conn(st, &c, err);
    if (rc)
        return rc;
    if ((rc = run_sql(st, c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err))) {
        put_conn(st, c);
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
    put_conn(st, c);
}

static int snap_q(struct store *st, enum pstmt id, int n, const char *const *v, PGresult **r,
                  struct err *err)
{
    return run(st, BE(st)->snap, id, n, v, NULL, r, err);
}

static int pg_log_state(struct store *st, int64_t *top, int64_t *trimmed, struct err *err)
{
    PGresult *r;
    int rc = snap_q(st, P_LOG_TOP, 0, NULL, &r, err);
    if (!rc)
        *top = col_i64(r, 0, 0, 0);
    if (trimmed)
        *trimmed = 0; /* never trimmed (design 6) */
    PQclear(r);
    return rc;
}

static int pg_log_top(struct store *st, int64_t *top, struct err *err)
{
    PGresult *r;
    struct pconn *c;
    int rc = pool_conn(st, &c, err);
    if (rc)
        return rc;
    rc = run(st, c, P_LOG_TOP, 0, NULL, NULL, &r, err);
    put_conn(st, c);
    if (!rc)
        *top = col_i64(r, 0, 0, 0);
    PQclear(r);
    return rc;
}

static int pg_log_since(struct store *st, int64_t cov, int64_t **out, size_t *n,
                        struct err *err)
{
    char s[24];
    i64s(s, cov);
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
        seqs[i] = col_i64(r, (int)i, 0, 0);
    PQclear(r);
    *out = seqs;
    *n = seqs ? k : 0;
    return rc;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int pg_emb_by_seqs(struct store *st, const int64_t *seqs, size_t n, float *v,
                          unsigned char *ok, struct err *err)
{
    char *arr = seq_array(seqs, n);
    if (!arr)
        return err_set(err, ERR_NOMEM, "no memory");
    PGresult *r;
    int rc = snap_q(st, P_EMB_BY_SEQS, 1, (const char *[]){arr}, &r, err);
    free(arr);
    if (rc)
        return rc;
    memset(ok, 0, n);
    for (int i = 0; i < PQntuples(r); i++) {
        int64_t seq = col_i64(r, i, 0, 0);
        const int64_t *at = bsearch(&seq, seqs, n, sizeof *seqs, cmp_i64); /* seqs ascend */
        if (at) {
            size_t j = (size_t)(at - seqs);
            ok[j] = (unsigned char)vec_col(r, i, 1, st->dim, v + j * (size_t)st->dim);
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
    i64s(lim, PG_PAGE);
    while (!rc && got == PG_PAGE) {
        PGresult *r;
        i64s(s, after);
        if ((rc = snap_q(st, P_EMB_PAGE, 2, (const char *[]){s, lim}, &r, err)))
            break;
        got = PQntuples(r);
        for (int i = 0; i < got && !rc; i++) {
            after = col_i64(r, i, 0, 0);
            if (vec_col(r, i, 1, st->dim, v))
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
        *n = col_i64(r, 0, 0, 0);
    PQclear(r);
    return rc;
}

/* ---- search ------------------------------------------------------------ */

/* Whether s is exactly one JSON number (no space, nothing after). */
static int json_number_text(const char *s)
{
    json_error_t je;
    json_t *j = json_loads(s, JSON_DECODE_ANY, &je);
    int ok = j && json_is_number(j) && s[0] != ' ' && s[strlen(s) - 1] != ' ';
    json_decref(j);
    return ok;
}

/* {"key": <text>} with the key escaped by jansson and text a JSON value. */
static char *json_pair(const char *key, const char *text)
{
    json_t *o = json_pack("{s:n}", key);
    char *k = o ? json_dumps(o, JSON_COMPACT) : NULL; /* {"key":null} */
    json_decref(o);
    if (!k)
        return NULL;
    size_t kl = strlen(k) - 5, tl = strlen(text); /* drop "null}" */
    char *s = malloc(kl + tl + 2);
    if (s) {
        memcpy(s, k, kl);
        memcpy(s + kl, text, tl);
        memcpy(s + kl + tl, "}", 2);
    }
    free(k);
    return s;
}

/* The two jsonb objects a filter accepts (store.h's filter semantics): the
 * value as a JSON string, and as a number or true/false/null when it reads
 * as one (alt NULL otherwise). */
static int filter_values(const struct store_filter *f, char **str, char **alt)
{
    *alt = NULL;
    json_t *o = json_pack("{s:s}", f->key, f->value);
    *str = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!*str)
        return -1;
    const char *v = f->value;
    char *end, num[40];
    errno = 0;
    double d = strtod(v, &end);
    if (!strcmp(v, "true") || !strcmp(v, "false") || !strcmp(v, "null") || json_number_text(v))
        *alt = json_pair(f->key, v);
    else if (*v && !*end && !errno && isfinite(d)) {
        snprintf(num, sizeof num, "%.17g", d);
        *alt = json_pair(f->key, num);
    } else
        return 0;
    return *alt ? 0 : -1;
}

/* Appends " AND (metadata @> $a OR metadata @> $b)" per filter, the
 * parameters from $first, and fills vals[first-1 ..]. */
static int filter_sql(const struct store_filter *f, int nf, int first, char *sql, size_t n,
                      char **vals)
{
    size_t len = strlen(sql);
    for (int i = 0; i < nf; i++) {
        if (filter_values(&f[i], &vals[first - 1 + 2 * i], &vals[first + 2 * i]))
            return -1;
        int a = first + 2 * i;
        len += (size_t)snprintf(sql + len, n - len,
                                " AND (metadata::jsonb @> $%d::jsonb OR "
                                "metadata::jsonb @> $%d::jsonb)", a, a + 1);
    }
    return len < n ? 0 : -1;
}

#define FILTER_SQL_MAX (512 + STORE_FILTERS_MAX * 96)

static int pg_filter_seqs(struct store *st, const struct store_filter *f, int nf,
                          struct store_bitmap *bm, struct err *err)
{
    char sql[FILTER_SQL_MAX] = "SELECT seq FROM items WHERE embedding IS NOT NULL";
    char *vals[2 * STORE_FILTERS_MAX] = {0};
    int rc = filter_sql(f, nf, 1, sql, sizeof sql, vals)
                 ? err_set(err, ERR_NOMEM, "no memory for the filter") : 0;
    struct pconn *c = NULL;
    if (!rc)
        rc = pool_conn(st, &c, err);
    PGresult *r = NULL, *m = NULL;
    if (!rc)
        rc = run(st, c, P_MAX_SEQ, 0, NULL, NULL, &m, err);
    if (!rc) {
        bm->nbits = col_i64(m, 0, 0, 0) + 1;
        bm->w = calloc((size_t)(bm->nbits + 63) / 64, sizeof *bm->w);
        if (!bm->w)
            rc = err_set(err, ERR_NOMEM, "no memory for the filter");
    }
    if (!rc) {
        r = PQexecParams(c->pg, sql, 2 * nf, NULL, (const char *const *)vals, NULL, NULL, 1);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            rc = res_err(st, c, r, "run the filter", err);
            r = NULL;
        }
    }
    for (int i = 0; !rc && i < PQntuples(r); i++) {
        int64_t seq = col_i64(r, i, 0, -1);
        if (seq >= 0 && seq < bm->nbits)
            bm->w[seq >> 6] |= 1ull << (seq & 63);
    }
    PQclear(r);
    PQclear(m);
    put_conn(st, c);
    for (int i = 0; i < 2 * nf; i++)
        free(vals[i]);
    return rc;
}

struct seq_pos {
    int64_t seq; /* a hit's seq */
    size_t j;    /* its position */
};

static int cmp_seq_pos(const void *a, const void *b)
{
    return cmp_i64(&((const struct seq_pos *)a)->seq, &((const struct seq_pos *)b)->seq);
}

/* id, source, metadata of every hit in one query. */
static int pg_rows(struct store *st, struct store_hit *hits, size_t n, struct err *err)
{
    struct seq_pos *sp = malloc(n * sizeof *sp);
    int64_t *seqs = malloc(n * sizeof *seqs);
    char *arr = NULL;
    if (sp && seqs) {
        for (size_t i = 0; i < n; i++) {
            seqs[i] = sp[i].seq = hits[i].seq;
            sp[i].j = i;
        }
        arr = seq_array(seqs, n);
        qsort(sp, n, sizeof *sp, cmp_seq_pos);
    }
    struct pconn *c = NULL;
    int rc = arr ? pool_conn(st, &c, err) : err_set(err, ERR_NOMEM, "no memory");
    PGresult *r = NULL;
    if (!rc)
        rc = run(st, c, P_ROWS, 1, (const char *[]){arr}, NULL, &r, err);
    put_conn(st, c);
    for (int i = 0; !rc && i < PQntuples(r); i++) {
        struct seq_pos key = {col_i64(r, i, 0, 0), 0};
        const struct seq_pos *at = bsearch(&key, sp, n, sizeof *sp, cmp_seq_pos);
        if (!at)
            continue;
        struct store_hit *h = &hits[at->j]; /* a seq appears once in hits */
        h->id = col_str(r, i, 1);
        h->source = col_str(r, i, 2);
        h->metadata = col_str(r, i, 3);
        if (!h->id || !h->metadata)
            rc = err_set(err, ERR_NOMEM, "no memory");
    }
    PQclear(r);
    free(arr);
    free(seqs);
    free(sp);
    return rc;
}

/* The SET LOCALs of one search (integers only). */
static void search_settings(struct store *st, const struct store_query *q, size_t want,
                            char *sql, size_t n)
{
    struct pgbe *b = BE(st);
    int ef = q->ef > 0 ? q->ef : st->hp.ef_search;
    if ((size_t)ef < want)
        ef = want > 1000 ? 1000 : (int)want;
    if (ef > 1000)
        ef = 1000; /* pgvector's limit */
    if (b->ivfflat)
        snprintf(sql, n, "BEGIN READ ONLY; SET LOCAL ivfflat.probes = %d%s", b->probes,
                 b->iterative ? "; SET LOCAL ivfflat.iterative_scan = relaxed_order" : "");
    else
        snprintf(sql, n, "BEGIN READ ONLY; SET LOCAL hnsw.ef_search = %d%s", ef,
                 b->iterative ? "; SET LOCAL hnsw.iterative_scan = relaxed_order" : "");
}

/* pgvector: the best want hits with their rows, in one query. */
static int pg_search(struct store *st, const struct store_query *q, size_t want,
                     struct store_hit **hits, float **vecs, size_t *n, struct err *err)
{
    if (!BE(st)->vector)
        return 1; /* the local index serves */
    char sql[FILTER_SQL_MAX + 512] =
        "WITH r AS MATERIALIZED (SELECT seq, id, source, metadata::text AS md, "
        "embedding <=> $1::real[]::vector AS d, embedding::real[] AS v FROM items WHERE embedding IS NOT NULL";
    char *vals[2 + 2 * STORE_FILTERS_MAX] = {0}, lim[24], set[200];
    int lens[2 + 2 * STORE_FILTERS_MAX] = {0}, fmts[2 + 2 * STORE_FILTERS_MAX] = {1};
    int rc = 0;
    vals[0] = vec_param(q->vec, st->dim, &lens[0]);
    /* a few more than wanted: store.c re-ranks what float rounding in
     * pgvector may have swapped at the edge */
    i64s(lim, (int64_t)want + 16);
    vals[1] = lim;
    if (!vals[0] || filter_sql(q->filters, q->n_filters, 3, sql, sizeof sql, vals))
        rc = err_set(err, ERR_NOMEM, "no memory for the query");
    size_t len = strlen(sql);
    snprintf(sql + len, sizeof sql - len, " ORDER BY d LIMIT $2) "
             "SELECT seq, id, source, md, v FROM r ORDER BY d, seq");
    search_settings(st, q, want, set, sizeof set);
    struct pconn *c = NULL;
    if (!rc)
        rc = pool_conn(st, &c, err);
    PGresult *r = NULL;
    if (!rc)
        rc = run_sql(st, c, set, err);
    if (!rc) {
        r = PQexecParams(c->pg, sql, 2 + 2 * q->n_filters, NULL, (const char *const *)vals,
                         lens, fmts, 1);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            rc = res_err(st, c, r, "search", err);
            r = NULL;
        }
    }
    if (c && PQstatus(c->pg) == CONNECTION_OK)
        PQclear(PQexec(c->pg, rc && !r ? "ROLLBACK" : "COMMIT"));
    put_conn(st, c);
    int k = rc ? 0 : PQntuples(r);
    struct store_hit *h = k ? calloc((size_t)k, sizeof *h) : NULL;
    float *v = k ? malloc((size_t)k * (size_t)st->dim * sizeof *v) : NULL;
    if (k && (!h || !v))
        rc = err_set(err, ERR_NOMEM, "no memory");
    for (int i = 0; !rc && i < k; i++) {
        h[i].seq = col_i64(r, i, 0, 0);
        if (!vec_col(r, i, 4, st->dim, v + (size_t)i * (size_t)st->dim))
            rc = err_set(err, ERR_CORRUPT, "%s: item %lld has an unusable embedding", st->name,
                         (long long)h[i].seq);
        h[i].id = col_str(r, i, 1);
        h[i].source = col_str(r, i, 2);
        h[i].metadata = col_str(r, i, 3);
        if (!h[i].id || !h[i].metadata)
            rc = err_set(err, ERR_NOMEM, "no memory");
    }
    PQclear(r);
    free(vals[0]);
    for (int i = 2; i < 2 + 2 * q->n_filters; i++)
        free(vals[i]);
    *hits = h;
    *vecs = v;
    *n = h ? (size_t)k : 0;
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
    .filter_seqs = pg_filter_seqs,
    .rows = pg_rows,
    .search = pg_search,
    .index_kind = pg_index_kind,
};
