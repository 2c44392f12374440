/* store.c - the embedded store: SQLite for items, an HNSW file for search.
 *
 * Design:
 *  1. SQLite in WAL mode with synchronous=NORMAL (a crashed process never
 *     loses a commit), busy_timeout for concurrent processes, BEGIN
 *     IMMEDIATE for every write so writers queue instead of failing at
 *     commit. Prepared statements are cached per connection.
 *  2. Two connections: writes (and the reads of the thread running a
 *     batch) use `w`; everything else uses `r`, which only sees committed
 *     data, so a long indexing batch never blocks or leaks into searches.
 *  3. Index labels are items.seq (INTEGER PRIMARY KEY AUTOINCREMENT: never
 *     reused). Triggers on items append the seq of every embedding change
 *     (insert, update of embedding, delete) to `changes`, whose cseq is
 *     monotonic. The index records the last cseq it covers; catching up is
 *     replaying `SELECT DISTINCT seq FROM changes WHERE cseq > covered`
 *     against the current rows. Because triggers live in the schema, even a
 *     sqlite3 shell edit is seen.
 *  4. The index file is trusted only when its checksums pass (hnsw_load),
 *     its tag is this database's random id, its dimension matches, and its
 *     covered cseq lies between the trimmed part of the log and the log's
 *     end; after catching up, the index's item count must equal the
 *     database's. Anything else rebuilds from the database.
 *  5. The changes log is trimmed up to the covered cseq after the index
 *     file is written (meta 'changes_trimmed' records how far). Another
 *     process whose index is older than the trim point reloads the file.
 *  6. Filters run in SQL (json_each over the top-level metadata fields) and
 *     become a bitmap of accepted seqs that the index's filter callback
 *     tests: exact, and the index widens or falls back to an exact scan for
 *     selective filters.
 *  7. Locks: index rwlock, then a connection mutex (never the other way
 *     round). Searches hold the index read lock; catch-up holds it for
 *     writing.
 *  8. The index file is written as PATH.hnsw.tmp.PID and renamed; a process
 *     killed in between leaves that file, so store_open removes the ones
 *     whose PID is no live process (never another process's save).
 *
 * Size: one file (about 1,900 lines): the SQLite schema, its triggers and
 * every statement that reads or writes it are kept together so a schema
 * change is made in one place. The store interface of issue 11 splits it
 * into the shared layer and the SQLite backend.
 */
#include "store/store.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "store/hnsw.h"
#include "store/vec.h"
#include "util/jsonscan.h"
#include "util/utf8.h"

enum stmt_id {
    S_META_GET,
    S_META_PUT,
    S_ITEM_LOOKUP,
    S_ITEM_INSERT,
    S_ITEM_UPDATE_KEEP,
    S_ITEM_UPDATE_EMB,
    S_ITEM_SET_EMB,
    S_ITEM_GET,
    S_ITEM_DELETE,
    S_ITEM_LIST,
    S_ITEM_WAITING,
    S_COUNT,
    S_COUNT_WAITING,
    S_FIND_SOURCE,
    S_JSON_CHECK,
    S_MAX_CSEQ,
    S_CHANGES_SINCE,
    S_EMB_BY_SEQ,
    S_HIT_BY_SEQ,
    S_COUNT_EMB,
    S_ALL_EMB,
    S_MAX_SEQ,
    S_ITEM_EXISTS,
    S_ITEM_BY_SEQ,
    S_COUNTS,
    S_COUNT_
};

static const char *const stmt_sql[S_COUNT_] = {
    [S_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [S_META_PUT] = "INSERT INTO meta(key, value) VALUES (?1, ?2) "
                   "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    [S_ITEM_LOOKUP] = "SELECT seq, sha256, embedding IS NOT NULL FROM items WHERE id = ?1",
    [S_ITEM_INSERT] = "INSERT INTO items(id, source, sha256, size, mtime, metadata, model, "
                      "created_at, updated_at, embedding) "
                      "VALUES (?1, ?2, ?3, ?4, ?5, json(?6), ?7, ?8, ?8, ?9)",
    [S_ITEM_UPDATE_KEEP] = "UPDATE items SET source = ?2, sha256 = ?3, size = ?4, mtime = ?5, "
                           "metadata = json(?6), updated_at = ?8 WHERE seq = ?1",
    [S_ITEM_UPDATE_EMB] = "UPDATE items SET source = ?2, sha256 = ?3, size = ?4, mtime = ?5, "
                          "metadata = json(?6), model = ?7, updated_at = ?8, embedding = ?9 "
                          "WHERE seq = ?1",
    [S_ITEM_SET_EMB] = "UPDATE items SET embedding = ?2, model = ?3, updated_at = ?4 "
                       "WHERE id = ?1",
    [S_ITEM_GET] = "SELECT seq, id, source, sha256, size, mtime, metadata, model, created_at, "
                   "updated_at, embedding FROM items WHERE id = ?1",
    [S_ITEM_DELETE] = "DELETE FROM items WHERE id = ?1",
    [S_ITEM_LIST] = "SELECT seq, id, source, sha256, size, mtime, metadata, model, created_at, "
                    "updated_at, embedding IS NOT NULL FROM items WHERE seq > ?1 "
                    "ORDER BY seq LIMIT ?2",
    [S_ITEM_WAITING] = "SELECT seq, id, source, sha256, size, mtime, metadata, model, "
                       "created_at, updated_at, 0 FROM items "
                       "WHERE seq > ?1 AND embedding IS NULL ORDER BY seq LIMIT ?2",
    [S_COUNT] = "SELECT items FROM counts",
    [S_COUNT_WAITING] = "SELECT waiting FROM counts",
    [S_FIND_SOURCE] = "SELECT seq, id, source, sha256, size, mtime, metadata, model, "
                      "created_at, updated_at, embedding IS NOT NULL FROM items "
                      "WHERE source = ?1 ORDER BY seq LIMIT 1",
    [S_JSON_CHECK] = "SELECT CASE WHEN json_valid(?1) THEN json_type(?1) END",
    /* The log may be trimmed empty: AUTOINCREMENT's record keeps the top. */
    [S_MAX_CSEQ] = "SELECT max(coalesce((SELECT max(cseq) FROM changes), 0), "
                   "coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0))",
    [S_CHANGES_SINCE] = "SELECT DISTINCT seq FROM changes WHERE cseq > ?1 ORDER BY seq",
    [S_EMB_BY_SEQ] = "SELECT embedding FROM items WHERE seq = ?1",
    [S_HIT_BY_SEQ] = "SELECT id, source, metadata FROM items WHERE seq = ?1",
    [S_COUNT_EMB] = "SELECT count(*) FROM items WHERE length(embedding) = ?1",
    [S_ALL_EMB] = "SELECT seq, embedding FROM items WHERE embedding IS NOT NULL ORDER BY seq",
    [S_MAX_SEQ] = "SELECT coalesce(max(seq), 0) FROM items",
    [S_ITEM_EXISTS] = "SELECT seq FROM items WHERE id = ?1",
    [S_ITEM_BY_SEQ] = "SELECT seq, id, source, sha256, size, mtime, metadata, model, created_at, "
                      "updated_at, embedding IS NOT NULL FROM items WHERE seq = ?1",
    [S_COUNTS] = "SELECT items, waiting FROM counts",
};

/* Version 1 of the schema. Migrations append steps; a database records the
 * version it reached in schema_version. */
static const char *const schema_v1 =
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE items("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  id TEXT UNIQUE NOT NULL,"
    "  source TEXT,"
    "  sha256 TEXT,"
    "  size INTEGER,"
    "  mtime INTEGER,"
    "  metadata TEXT NOT NULL DEFAULT '{}',"
    "  model TEXT,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL,"
    "  embedding BLOB);" /* last: reading metadata skips the blob's pages */
    "CREATE INDEX items_source ON items(source);"
    "CREATE INDEX items_waiting ON items(seq) WHERE embedding IS NULL;"
    "CREATE TABLE changes(cseq INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER NOT NULL);"
    "CREATE TRIGGER items_ai AFTER INSERT ON items WHEN NEW.embedding IS NOT NULL"
    "  BEGIN INSERT INTO changes(seq) VALUES (NEW.seq); END;"
    "CREATE TRIGGER items_au AFTER UPDATE OF embedding ON items"
    "  BEGIN INSERT INTO changes(seq) VALUES (NEW.seq); END;"
    "CREATE TRIGGER items_ad AFTER DELETE ON items"
    "  BEGIN INSERT INTO changes(seq) VALUES (OLD.seq); END;";

/* Version 2: item counts kept by triggers, so counting is one row read, not
 * a scan of the table (/health and /metrics count on every call), and, like
 * the changes log, right after any writer, the sqlite3 shell included. */
static const char *const schema_v2 =
    "CREATE TABLE counts(items INTEGER NOT NULL, waiting INTEGER NOT NULL);"
    "INSERT INTO counts SELECT count(*), count(*) - count(embedding) FROM items;"
    "CREATE TRIGGER counts_ai AFTER INSERT ON items BEGIN UPDATE counts SET"
    "  items = items + 1, waiting = waiting + (NEW.embedding IS NULL); END;"
    "CREATE TRIGGER counts_ad AFTER DELETE ON items BEGIN UPDATE counts SET"
    "  items = items - 1, waiting = waiting - (OLD.embedding IS NULL); END;"
    "CREATE TRIGGER counts_au AFTER UPDATE OF embedding ON items BEGIN UPDATE counts SET"
    "  waiting = waiting + (NEW.embedding IS NULL) - (OLD.embedding IS NULL); END;";

static const char *const migrations[] = {schema_v1, schema_v2};

struct conn {
    sqlite3 *db;                   /* connection */
    pthread_mutex_t mu;            /* guards db and st */
    sqlite3_stmt *st[S_COUNT_];    /* prepared lazily */
};

struct store {
    char *path;               /* database path */
    char *index_path;         /* path + ".hnsw" */
    char *model;              /* model id */
    int dim;                  /* embedding dimension */
    uint64_t db_id;           /* random id of this database (index tag) */
    struct hnsw_params hp;    /* index parameters */
    struct conn w;            /* write connection */
    struct conn r;            /* read connection */
    int tx_open;              /* a batch is open on w */
    pthread_t tx_owner;       /* thread that opened it */
    pthread_rwlock_t idx_lock; /* guards idx and the fields below */
    struct hnsw *idx;         /* in-memory index, NULL until needed */
    int64_t saved_covered;    /* covered value of the file on disk (-1: none) */
    struct store_index_info info; /* origin, reason, counters */
    _Atomic int64_t n_items;  /* items at the last commit or count seen (-1: unknown) */
    _Atomic int64_t n_waiting; /* of those, without an embedding */
};

/* ---- helpers ----------------------------------------------------------- */

static int db_err(struct err *err, sqlite3 *db, const char *path, const char *what)
{
    int code = sqlite3_errcode(db);
    int ours = code == SQLITE_BUSY || code == SQLITE_LOCKED ? ERR_UNAVAILABLE
             : code == SQLITE_NOTADB || code == SQLITE_CORRUPT ? ERR_CORRUPT
             : code == SQLITE_NOMEM ? ERR_NOMEM
             : code == SQLITE_FULL ? ERR_NO_SPACE
             : code == SQLITE_IOERR || code == SQLITE_CANTOPEN ? ERR_IO
             : ERR_STORE;
    return err_set(err, ours, "%s: %s: %s", path, what, sqlite3_errmsg(db));
}

static sqlite3_stmt *stmt(struct store *st, struct conn *c, enum stmt_id id, struct err *err)
{
    if (!c->st[id]) {
        if (sqlite3_prepare_v3(c->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &c->st[id],
                               NULL) != SQLITE_OK) {
            db_err(err, c->db, st->path, "prepare");
            return NULL;
        }
    } else {
        sqlite3_reset(c->st[id]);
        sqlite3_clear_bindings(c->st[id]);
    }
    return c->st[id];
}

static int exec(struct store *st, struct conn *c, const char *sql, struct err *err)
{
    char *msg = NULL;
    if (sqlite3_exec(c->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = db_err(err, c->db, st->path, sql);
        sqlite3_free(msg);
        return rc;
    }
    return 0;
}

/* Runs a one-row, one-column query (schema checks) into *out. */
static int query_int(struct store *st, struct conn *c, const char *sql, const char *what,
                     int *out, struct err *err)
{
    sqlite3_stmt *s = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(c->db, sql, -1, &s, NULL) != SQLITE_OK ||
        sqlite3_step(s) != SQLITE_ROW)
        rc = db_err(err, c->db, st->path, what);
    else
        *out = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return rc;
}

static char *dup_col(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    return t ? strdup((const char *)t) : NULL;
}

static int64_t col_int_or(sqlite3_stmt *s, int i, int64_t dflt)
{
    return sqlite3_column_type(s, i) == SQLITE_NULL ? dflt : sqlite3_column_int64(s, i);
}

/* The connection a read should use: the batch's own when the caller runs
 * the open batch, else the read connection. */
static struct conn *rconn(struct store *st)
{
    if (st->tx_open && pthread_equal(st->tx_owner, pthread_self()))
        return &st->w;
    return &st->r;
}

/* A vector the index can normalise in float32: finite, with a norm of at
 * least STORE_VEC_MIN_NORM. A smaller norm (64 x 1e-45 has 1.1e-44) makes
 * 1/norm overflow float32, and the scores NaN. */
static int valid_vec(const float *v, int dim)
{
    double s = 0;
    for (int i = 0; i < dim; i++)
        s += (double)v[i] * v[i];
    return isfinite(s) && s >= STORE_VEC_MIN_NORM * STORE_VEC_MIN_NORM;
}

/* Reads the counts row into the cache; c->mu held. */
static void counts_refresh(struct store *st, struct conn *c)
{
    struct err e;
    sqlite3_stmt *s = stmt(st, c, S_COUNTS, &e);
    if (s && sqlite3_step(s) == SQLITE_ROW) {
        atomic_store(&st->n_items, sqlite3_column_int64(s, 0));
        atomic_store(&st->n_waiting, sqlite3_column_int64(s, 1));
    }
    if (s)
        sqlite3_reset(s);
}

const char *store_model(const struct store *st) { return st->model; }
int store_dim(const struct store *st) { return st->dim; }

/* ---- open / schema ----------------------------------------------------- */

static int conn_open(struct store *st, struct conn *c, int flags, struct err *err)
{
    pthread_mutex_init(&c->mu, NULL);
    if (sqlite3_open_v2(st->path, &c->db, flags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        int rc = c->db ? db_err(err, c->db, st->path, "open")
                       : err_set(err, ERR_NOMEM, "%s: no memory to open", st->path);
        return rc;
    }
    sqlite3_busy_timeout(c->db, 10000);
    sqlite3_extended_result_codes(c->db, 0);
    return 0;
}

static void conn_close(struct conn *c)
{
    for (int i = 0; i < S_COUNT_; i++)
        sqlite3_finalize(c->st[i]);
    if (c->db)
        sqlite3_close(c->db);
    c->db = NULL;
    pthread_mutex_destroy(&c->mu);
}

static int meta_get(struct store *st, struct conn *c, const char *key, char **out,
                    struct err *err)
{
    *out = NULL;
    sqlite3_stmt *s = stmt(st, c, S_META_GET, err);
    if (!s)
        return -err->code;
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    int r = sqlite3_step(s);
    if (r == SQLITE_ROW)
        *out = dup_col(s, 0);
    else if (r != SQLITE_DONE)
        return db_err(err, c->db, st->path, "read meta");
    sqlite3_reset(s);
    return 0;
}

static int meta_put(struct store *st, struct conn *c, const char *key, const char *val,
                    struct err *err)
{
    sqlite3_stmt *s = stmt(st, c, S_META_PUT, err);
    if (!s)
        return -err->code;
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, val, -1, SQLITE_STATIC);
    int r = sqlite3_step(s);
    sqlite3_reset(s);
    return r == SQLITE_DONE ? 0 : db_err(err, c->db, st->path, "write meta");
}

static int64_t meta_int(struct store *st, struct conn *c, const char *key, int64_t dflt,
                        struct err *err, int *rc)
{
    char *v = NULL;
    *rc = meta_get(st, c, key, &v, err);
    int64_t x = v ? strtoll(v, NULL, 10) : dflt;
    free(v);
    return x;
}

/* Creates or upgrades the schema inside one write transaction, and records
 * or checks the model. */
static int setup(struct store *st, const struct store_options *o, struct err *err)
{
    struct conn *c = &st->w;
    int rc = exec(st, c, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", err);
    if (rc)
        return rc;
    if ((rc = exec(st, c, "BEGIN IMMEDIATE", err)))
        return rc;
    char *model = NULL, *dims = NULL, *dbid = NULL;
    int version = 0;
    int have = 0;
    if ((rc = query_int(st, c, "SELECT count(*) FROM sqlite_master WHERE name = 'schema_version'",
                        "read schema", &have, err)))
        goto done;
    if (have) {
        if ((rc = query_int(st, c, "SELECT max(version) FROM schema_version",
                            "read schema version", &version, err)))
            goto done;
    } else {
        /* Not ours unless empty: refuse to add tables to another database. */
        int tables = 0;
        if ((rc = query_int(st, c, "SELECT count(*) FROM sqlite_master", "read schema",
                            &tables, err)))
            goto done;
        if (tables) {
            rc = err_set(err, ERR_CORRUPT, "%s: an SQLite database but not an imgsearch store",
                         st->path);
            goto done;
        }
        if ((rc = exec(st, c, "CREATE TABLE schema_version(version INTEGER NOT NULL);"
                              "INSERT INTO schema_version VALUES (0);", err)))
            goto done;
    }
    int nmig = (int)(sizeof migrations / sizeof migrations[0]);
    if (version > nmig) {
        rc = err_set(err, ERR_UNSUPPORTED_FORMAT,
                     "%s: store schema version %d is newer than this imgsearch (%d)", st->path,
                     version, nmig);
        goto done;
    }
    for (int v = version; v < nmig; v++) {
        if ((rc = exec(st, c, migrations[v], err)))
            goto done;
        char sql[64];
        snprintf(sql, sizeof sql, "UPDATE schema_version SET version = %d", v + 1);
        if ((rc = exec(st, c, sql, err)))
            goto done;
    }
    if ((rc = meta_get(st, c, "model", &model, err)) || (rc = meta_get(st, c, "dim", &dims, err)) ||
        (rc = meta_get(st, c, "db_id", &dbid, err)))
        goto done;
    if (!model || !dims) {
        if (!o || !o->model || !*o->model || o->dim < 1) {
            rc = err_set(err, ERR_INVALID_ARGUMENT,
                         "%s: a new store needs a model id and a dimension", st->path);
            goto done;
        }
        char buf[32];
        snprintf(buf, sizeof buf, "%d", o->dim);
        uint64_t id = 0;
        if (getrandom(&id, sizeof id, 0) != (ssize_t)sizeof id)
            id = (uint64_t)time(NULL) * 6364136223846793005ull ^ (uint64_t)getpid();
        id &= 0x7fffffffffffffffull;
        char idb[32];
        snprintf(idb, sizeof idb, "%llu", (unsigned long long)id);
        if ((rc = meta_put(st, c, "model", o->model, err)) ||
            (rc = meta_put(st, c, "dim", buf, err)) || (rc = meta_put(st, c, "db_id", idb, err)) ||
            (rc = meta_put(st, c, "changes_trimmed", "0", err)))
            goto done;
        st->model = strdup(o->model);
        st->dim = o->dim;
        st->db_id = id;
    } else {
        long d = strtol(dims, NULL, 10);
        if (d < 1 || d > STORE_DIM_MAX || !dbid) {
            rc = err_set(err, ERR_CORRUPT, "%s: meta holds dimension '%s'", st->path, dims);
            goto done;
        }
        if ((o && o->model && strcmp(o->model, model)) || (o && o->dim && o->dim != d)) {
            rc = err_set(err, ERR_MODEL_MISMATCH,
                         "%s: the store holds embeddings of model '%s' (dimension %ld), not "
                         "'%s' (dimension %d); reindex it to switch models",
                         st->path, model, d, o->model ? o->model : model, o->dim ? o->dim : (int)d);
            goto done;
        }
        st->model = model;
        model = NULL;
        st->dim = (int)d;
        st->db_id = strtoull(dbid, NULL, 10);
    }
    rc = exec(st, c, "COMMIT", err);
done:
    if (rc)
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    free(model);
    free(dims);
    free(dbid);
    if (!rc && !st->model)
        rc = err_set(err, ERR_NOMEM, "no memory");
    return rc;
}

/* Removes PATH.hnsw.tmp.PID files that hnsw_save left behind when its
 * process died (kill -9, power loss) between creating and renaming them.
 * Only files whose PID names no live process go: another process's save in
 * progress keeps its file (a PID reused by an unrelated process keeps a
 * stale file until a later open, which is harmless). Best effort: failures
 * are ignored, a leftover file only wastes space. */
static void remove_stale_tmp(const char *index_path)
{
    const char *slash = strrchr(index_path, '/');
    const char *base = slash ? slash + 1 : index_path;
    char *dir = slash ? strndup(index_path, slash == index_path ? 1 : (size_t)(slash - index_path))
                      : strdup(".");
    DIR *d = dir ? opendir(dir) : NULL;
    free(dir);
    if (!d)
        return;
    size_t bl = strlen(base);
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *name = de->d_name;
        if (strncmp(name, base, bl) || strncmp(name + bl, ".tmp.", 5))
            continue;
        const char *p = name + bl + 5;
        char *end;
        errno = 0;
        long pid = strtol(p, &end, 10);
        if (*p < '1' || *p > '9' || *end || errno || pid > INT_MAX)
            continue; /* not one of ours: leave it */
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue; /* alive (EPERM: alive, someone else's) */
        unlinkat(dirfd(d), name, 0);
    }
    closedir(d);
}

int store_open(struct store **out, const char *path, const struct store_options *o,
               struct err *err)
{
    *out = NULL;
    if (o && o->model && strlen(o->model) > STORE_MODEL_MAX)
        return err_set(err, ERR_INVALID_ARGUMENT, "model id longer than %d bytes",
                       STORE_MODEL_MAX);
    if (o && (o->dim < 0 || o->dim > STORE_DIM_MAX))
        return err_set(err, ERR_INVALID_ARGUMENT, "dimension %d is outside [1, %d]", o->dim,
                       STORE_DIM_MAX);
    if (!(o && o->create) && access(path, F_OK))
        return err_set(err, ERR_NOT_FOUND, "%s: no such store", path);
    struct store *st = calloc(1, sizeof *st);
    if (!st)
        return err_set(err, ERR_NOMEM, "no memory");
    pthread_rwlock_init(&st->idx_lock, NULL);
    st->saved_covered = -1;
    st->path = strdup(path);
    size_t n = strlen(path) + 6;
    st->index_path = malloc(n);
    if (!st->path || !st->index_path) {
        store_close(st, NULL);
        return err_set(err, ERR_NOMEM, "no memory");
    }
    snprintf(st->index_path, n, "%s.hnsw", path);
    hnsw_params_default(&st->hp);
    if (o && o->hnsw_m)
        st->hp.m = o->hnsw_m;
    if (o && o->ef_construction)
        st->hp.ef_construction = o->ef_construction;
    st->hp.ef_search = o && o->ef_search ? o->ef_search : 100;
    int flags = SQLITE_OPEN_READWRITE | (o && o->create ? SQLITE_OPEN_CREATE : 0);
    int rc = conn_open(st, &st->w, flags, err);
    if (!rc)
        rc = setup(st, o, err);
    if (!rc)
        rc = conn_open(st, &st->r, SQLITE_OPEN_READWRITE, err);
    if (rc) {
        store_close(st, NULL);
        return rc;
    }
    remove_stale_tmp(st->index_path);
    atomic_init(&st->n_items, -1);
    atomic_init(&st->n_waiting, -1);
    pthread_mutex_lock(&st->w.mu);
    counts_refresh(st, &st->w);
    pthread_mutex_unlock(&st->w.mu);
    *out = st;
    return 0;
}

/* ---- index maintenance --------------------------------------------------- */
/* All of these run with idx_lock held for writing. */

/* Reads the embedding blob of column i into v (dim floats) if it is one. */
static int blob_vec(struct store *st, sqlite3_stmt *s, int i, float *v)
{
    if (sqlite3_column_type(s, i) != SQLITE_BLOB)
        return 0;
    const void *b = sqlite3_column_blob(s, i);
    if (sqlite3_column_bytes(s, i) != st->dim * (int)sizeof(float) || !b)
        return 0;
    memcpy(v, b, (size_t)st->dim * sizeof(float));
    return valid_vec(v, st->dim);
}

static int64_t count_embedded(struct store *st, struct err *err, int *rc)
{
    sqlite3_stmt *s = stmt(st, &st->r, S_COUNT_EMB, err);
    *rc = 0;
    if (!s) {
        *rc = -err->code;
        return -1;
    }
    sqlite3_bind_int(s, 1, st->dim * (int)sizeof(float));
    int64_t n = -1;
    if (sqlite3_step(s) == SQLITE_ROW)
        n = sqlite3_column_int64(s, 0);
    else
        *rc = db_err(err, st->r.db, st->path, "count embeddings");
    sqlite3_reset(s);
    return n;
}

static int64_t max_cseq(struct store *st, struct conn *c, struct err *err, int *rc)
{
    sqlite3_stmt *s = stmt(st, c, S_MAX_CSEQ, err);
    *rc = 0;
    if (!s) {
        *rc = -err->code;
        return -1;
    }
    int64_t v = -1;
    if (sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    else
        *rc = db_err(err, c->db, st->path, "read the changes log");
    sqlite3_reset(s);
    return v;
}

/* Builds the index from every stored embedding (inside a read transaction
 * on r, held by the caller). */
static int rebuild(struct store *st, const char *why, struct err *err)
{
    struct hnsw *h = NULL;
    int rc = hnsw_new(&h, st->dim, &st->hp, err);
    if (rc)
        return rc;
    int64_t covered = max_cseq(st, &st->r, err, &rc);
    sqlite3_stmt *s = rc ? NULL : stmt(st, &st->r, S_ALL_EMB, err);
    float *v = malloc((size_t)st->dim * sizeof *v);
    if (!rc && !s)
        rc = -err->code;
    if (!rc && !v)
        rc = err_set(err, ERR_NOMEM, "no memory");
    int r = SQLITE_DONE;
    while (!rc && (r = sqlite3_step(s)) == SQLITE_ROW) {
        if (!blob_vec(st, s, 1, v))
            continue; /* a wrong-sized blob written behind our back: not indexed */
        rc = hnsw_insert(h, sqlite3_column_int64(s, 0), v, err);
    }
    if (!rc && r != SQLITE_DONE)
        rc = db_err(err, st->r.db, st->path, "read embeddings");
    if (s)
        sqlite3_reset(s);
    free(v);
    if (rc) {
        hnsw_free(h);
        return rc;
    }
    hnsw_set_covered(h, covered);
    hnsw_set_tag(h, st->db_id);
    hnsw_free(st->idx);
    st->idx = h;
    st->saved_covered = -1; /* not on disk yet */
    st->info.origin = STORE_INDEX_REBUILT;
    size_t wl = strlen(why);
    if (wl >= sizeof st->info.reason)
        wl = sizeof st->info.reason - 1;
    memcpy(st->info.reason, why, wl);
    st->info.reason[wl] = 0;
    st->info.caught_up = 0;
    return 0;
}

/* Applies the changes after idx's covered cseq (inside a read transaction
 * on r). Returns 1 when the index cannot be caught up (log trimmed past
 * it, or it claims changes the log does not have). */
static int apply_changes(struct store *st, struct hnsw *h, int64_t *applied, struct err *err)
{
    int rc;
    int64_t trimmed = meta_int(st, &st->r, "changes_trimmed", 0, err, &rc);
    if (rc)
        return rc;
    int64_t top = max_cseq(st, &st->r, err, &rc);
    if (rc)
        return rc;
    int64_t cov = hnsw_covered(h);
    if (cov < trimmed || cov > top)
        return 1;
    *applied = 0;
    if (cov == top)
        return 0;
    sqlite3_stmt *s = stmt(st, &st->r, S_CHANGES_SINCE, err);
    if (!s)
        return -err->code;
    sqlite3_bind_int64(s, 1, cov);
    /* Collect first: S_EMB_BY_SEQ runs on the same connection. */
    size_t n = 0, cap = 256;
    int64_t *seqs = malloc(cap * sizeof *seqs);
    int r = SQLITE_DONE;
    while (seqs && (r = sqlite3_step(s)) == SQLITE_ROW) {
        if (n == cap) {
            int64_t *g = realloc(seqs, 2 * cap * sizeof *g);
            if (!g) {
                free(seqs);
                seqs = NULL;
                break;
            }
            seqs = g;
            cap *= 2;
        }
        seqs[n++] = sqlite3_column_int64(s, 0);
    }
    sqlite3_reset(s);
    if (!seqs)
        return err_set(err, ERR_NOMEM, "no memory for the changes log");
    if (r != SQLITE_DONE) {
        free(seqs);
        return db_err(err, st->r.db, st->path, "read the changes log");
    }
    float *v = malloc((size_t)st->dim * sizeof *v);
    rc = v ? 0 : err_set(err, ERR_NOMEM, "no memory");
    for (size_t i = 0; i < n && !rc; i++) {
        sqlite3_stmt *e = stmt(st, &st->r, S_EMB_BY_SEQ, err);
        if (!e) {
            rc = -err->code;
            break;
        }
        sqlite3_bind_int64(e, 1, seqs[i]);
        r = sqlite3_step(e);
        if (r == SQLITE_ROW && blob_vec(st, e, 0, v))
            rc = hnsw_insert(h, seqs[i], v, err);
        else if (r == SQLITE_ROW || r == SQLITE_DONE)
            hnsw_delete(h, seqs[i]); /* absent, NULL or unusable: not indexed */
        else
            rc = db_err(err, st->r.db, st->path, "read an embedding");
        sqlite3_reset(e);
    }
    free(v);
    free(seqs);
    if (!rc) {
        hnsw_set_covered(h, top);
        *applied = (int64_t)n;
    }
    return rc;
}

static int read_begin(struct store *st, struct err *err) { return exec(st, &st->r, "BEGIN", err); }
static void read_end(struct store *st) { sqlite3_exec(st->r.db, "COMMIT", NULL, NULL, NULL); }

/* Loads the index file if it can be trusted and caught up; 1 if not. */
static int try_file(struct store *st, char *why, size_t whylen, struct err *err)
{
    struct hnsw *h = NULL;
    struct err le;
    int rc = hnsw_load(&h, st->index_path, &st->hp, &le);
    if (rc == -ERR_NOT_FOUND) {
        snprintf(why, whylen, "missing");
        return 1;
    }
    if (rc) {
        size_t k = (size_t)snprintf(why, whylen, "unreadable: "), l = strlen(le.msg);
        if (k + l >= whylen)
            l = whylen - k - 1;
        memcpy(why + k, le.msg, l);
        why[k + l] = 0;
        return 1;
    }
    if (hnsw_tag(h) != st->db_id || hnsw_dim(h) != st->dim) {
        hnsw_free(h);
        snprintf(why, whylen, "made for another database or model");
        return 1;
    }
    hnsw_set_ef_search(h, st->hp.ef_search);
    int64_t file_cov = hnsw_covered(h), applied = 0;
    rc = apply_changes(st, h, &applied, err);
    if (rc) {
        hnsw_free(h);
        snprintf(why, whylen, "stale (the changes log no longer covers it)");
        return rc < 0 ? rc : 1;
    }
    int64_t want = count_embedded(st, err, &rc);
    if (rc) {
        hnsw_free(h);
        return rc;
    }
    if ((int64_t)hnsw_count(h) != want) {
        hnsw_free(h);
        snprintf(why, whylen, "inconsistent with the database (item count differs)");
        return 1;
    }
    hnsw_free(st->idx);
    st->idx = h;
    st->saved_covered = file_cov;
    st->info.origin = STORE_INDEX_FILE;
    st->info.reason[0] = 0;
    st->info.caught_up = applied;
    return 0;
}

/* Makes st->idx current with the committed database (idx_lock held for
 * writing). */
static int ensure_index(struct store *st, struct err *err)
{
    pthread_mutex_lock(&st->r.mu);
    int rc = read_begin(st, err);
    if (rc) {
        pthread_mutex_unlock(&st->r.mu);
        return rc;
    }
    if (st->idx) {
        int64_t applied = 0;
        rc = apply_changes(st, st->idx, &applied, err);
        if (rc == 0) {
            st->info.caught_up += applied;
            /* Deletes leave tombstones; the item count is the cheap check. */
            goto done;
        }
        if (rc < 0)
            goto done;
        /* The log was trimmed past us by another process: reload. */
        hnsw_free(st->idx);
        st->idx = NULL;
    }
    char why[sizeof st->info.reason];
    rc = try_file(st, why, sizeof why, err);
    if (rc > 0)
        rc = rebuild(st, why, err);
done:
    read_end(st);
    pthread_mutex_unlock(&st->r.mu);
    return rc;
}

/* Is the index behind the committed database? (no locks needed on idx
 * beyond a read lock held by the caller) */
static int index_behind(struct store *st, struct err *err, int *rc)
{
    if (!st->idx)
        return 1;
    pthread_mutex_lock(&st->r.mu);
    int64_t top = max_cseq(st, &st->r, err, rc);
    pthread_mutex_unlock(&st->r.mu);
    return !*rc && top != hnsw_covered(st->idx);
}

/* Brings a loaded index up to date after a commit; a store whose index is
 * not loaded leaves the work to its first search. */
static int after_commit(struct store *st, struct err *err)
{
    pthread_rwlock_wrlock(&st->idx_lock);
    int rc = st->idx ? ensure_index(st, err) : 0;
    pthread_rwlock_unlock(&st->idx_lock);
    return rc;
}

/* Writes the index file if it changed and trims the changes log it covers
 * (idx_lock held for writing). */
static int save_index(struct store *st, struct err *err)
{
    if (!st->idx || hnsw_covered(st->idx) == st->saved_covered)
        return 0;
    int rc = hnsw_save(st->idx, st->index_path, err);
    if (rc)
        return rc;
    st->saved_covered = hnsw_covered(st->idx);
    if (st->tx_open)
        return 0; /* trim later: w is busy with a batch */
    pthread_mutex_lock(&st->w.mu);
    char sql[160];
    snprintf(sql, sizeof sql,
             "BEGIN IMMEDIATE; DELETE FROM changes WHERE cseq <= %lld;"
             "UPDATE meta SET value = '%lld' WHERE key = 'changes_trimmed'; COMMIT;",
             (long long)st->saved_covered, (long long)st->saved_covered);
    rc = exec(st, &st->w, sql, err);
    if (rc)
        sqlite3_exec(st->w.db, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&st->w.mu);
    return rc;
}

int store_index_sync(struct store *st, struct err *err)
{
    pthread_rwlock_wrlock(&st->idx_lock);
    int rc = ensure_index(st, err);
    if (!rc)
        rc = save_index(st, err);
    pthread_rwlock_unlock(&st->idx_lock);
    return rc;
}

int store_close(struct store *st, struct err *err)
{
    if (!st)
        return 0;
    int rc = 0;
    if (st->tx_open) {
        sqlite3_exec(st->w.db, "ROLLBACK", NULL, NULL, NULL);
        st->tx_open = 0;
    }
    if (st->idx) {
        pthread_rwlock_wrlock(&st->idx_lock);
        rc = ensure_index(st, err);
        if (!rc)
            rc = save_index(st, err);
        pthread_rwlock_unlock(&st->idx_lock);
    }
    hnsw_free(st->idx);
    conn_close(&st->r);
    conn_close(&st->w);
    pthread_rwlock_destroy(&st->idx_lock);
    free(st->path);
    free(st->index_path);
    free(st->model);
    free(st);
    return rc;
}

void store_index_info(struct store *st, struct store_index_info *out)
{
    pthread_rwlock_rdlock(&st->idx_lock);
    *out = st->info;
    if (st->idx) {
        out->items = hnsw_count(st->idx);
        out->tombstones = hnsw_deleted(st->idx);
        out->covered = hnsw_covered(st->idx);
    }
    pthread_rwlock_unlock(&st->idx_lock);
}

/* ---- writes ------------------------------------------------------------ */

/* Starts a write: BEGIN IMMEDIATE unless the caller's batch is open.
 * Locks w.mu; end_write unlocks it. */
static int begin_write(struct store *st, int *own, struct err *err)
{
    pthread_mutex_lock(&st->w.mu);
    *own = !st->tx_open;
    if (*own) {
        int rc = exec(st, &st->w, "BEGIN IMMEDIATE", err);
        if (rc) {
            pthread_mutex_unlock(&st->w.mu);
            return rc;
        }
    }
    return 0;
}

static int end_write(struct store *st, int own, int rc, struct err *err)
{
    if (own) {
        if (rc)
            sqlite3_exec(st->w.db, "ROLLBACK", NULL, NULL, NULL);
        else
            rc = exec(st, &st->w, "COMMIT", err);
        if (rc && own)
            sqlite3_exec(st->w.db, "ROLLBACK", NULL, NULL, NULL);
        if (!rc)
            counts_refresh(st, &st->w);
    }
    pthread_mutex_unlock(&st->w.mu);
    if (!rc && own)
        rc = after_commit(st, err);
    return rc;
}

static int check_id(const char *id, struct err *err)
{
    if (!id || !*id)
        return err_set(err, ERR_INVALID_ARGUMENT, "an item id is required");
    if (strlen(id) > STORE_ID_MAX)
        return err_set(err, ERR_INVALID_ARGUMENT, "item id of %zu bytes (max %d)", strlen(id),
                       STORE_ID_MAX);
    return 0;
}

/* What a new id or source must be beyond its length: valid UTF-8 (they go
 * out in JSON; one bad id used to break every listing that held it). */
static int check_text(const char *what, const char *s, struct err *err)
{
    size_t bad = 0;
    if (s && utf8_check((const uint8_t *)s, strlen(s), &bad))
        return err_set(err, ERR_INVALID_UTF8, "%s is not valid UTF-8 (byte %zu)", what, bad);
    return 0;
}

static int check_metadata(struct store *st, const char *md, struct err *err)
{
    if (strlen(md) > STORE_METADATA_MAX)
        return err_set(err, ERR_INVALID_ARGUMENT, "metadata of %zu bytes (max %d)", strlen(md),
                       STORE_METADATA_MAX);
    int rc = check_text("metadata", md, err);
    if (rc)
        return rc;
    struct json_shape sh;
    json_shape_scan(md, strlen(md), 0, STORE_METADATA_DEPTH_MAX, &sh);
    if (sh.depth > STORE_METADATA_DEPTH_MAX)
        return err_set(err, ERR_INVALID_ARGUMENT, "metadata nested over %d levels deep",
                       STORE_METADATA_DEPTH_MAX);
    sqlite3_stmt *s = stmt(st, &st->w, S_JSON_CHECK, err);
    if (!s)
        return -err->code;
    sqlite3_bind_text(s, 1, md, -1, SQLITE_STATIC);
    int ok = sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0) &&
             !strcmp((const char *)sqlite3_column_text(s, 0), "object");
    sqlite3_reset(s);
    return ok ? 0 : err_set(err, ERR_INVALID_ARGUMENT, "metadata is not a JSON object: %.80s", md);
}

static int fill_item(struct store *st, sqlite3_stmt *s, int with_blob, struct store_item *it);

static int put(struct store *st, const struct store_item *it, int *is_new,
               struct store_item *out, struct err *err)
{
    int rc = check_id(it->id, err);
    if (!rc)
        rc = check_text("item id", it->id, err);
    /* a source is a file path, which may hold any bytes (a Latin-1 name):
     * it is kept as it is and readers show bad bytes as U+FFFD */
    if (rc)
        return rc;
    if (it->source && strlen(it->source) > STORE_SOURCE_MAX)
        return err_set(err, ERR_INVALID_ARGUMENT, "%s: source of %zu bytes (max %d)", it->id,
                       strlen(it->source), STORE_SOURCE_MAX);
    if (it->sha256 && strlen(it->sha256) > 128)
        return err_set(err, ERR_INVALID_ARGUMENT, "%s: sha256 of %zu characters", it->id,
                       strlen(it->sha256));
    if (it->embedding && !valid_vec(it->embedding, st->dim))
        return err_set(err, ERR_INVALID_ARGUMENT, "%s: the embedding is not finite or too close to zero",
                       it->id);
    const char *md = it->metadata ? it->metadata : "{}";
    int own;
    if ((rc = begin_write(st, &own, err)))
        return rc;
    if ((rc = check_metadata(st, md, err)))
        return end_write(st, own, rc, err);
    sqlite3_stmt *s = stmt(st, &st->w, S_ITEM_LOOKUP, err);
    if (!s)
        return end_write(st, own, -err->code, err);
    sqlite3_bind_text(s, 1, it->id, -1, SQLITE_STATIC);
    int r = sqlite3_step(s);
    int64_t seq = 0;
    int same_sha = 0, exists = r == SQLITE_ROW;
    if (exists) {
        seq = sqlite3_column_int64(s, 0);
        const char *old = (const char *)sqlite3_column_text(s, 1);
        same_sha = old && it->sha256 && !strcmp(old, it->sha256) && sqlite3_column_int(s, 2);
    } else if (r != SQLITE_DONE) {
        sqlite3_reset(s);
        return end_write(st, own, db_err(err, st->w.db, st->path, "look up an item"), err);
    }
    sqlite3_reset(s);
    enum stmt_id which = !exists ? S_ITEM_INSERT
                       : it->embedding || !same_sha ? S_ITEM_UPDATE_EMB
                                                    : S_ITEM_UPDATE_KEEP;
    s = stmt(st, &st->w, which, err);
    if (!s)
        return end_write(st, own, -err->code, err);
    if (exists)
        sqlite3_bind_int64(s, 1, seq);
    else
        sqlite3_bind_text(s, 1, it->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, it->source, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, it->sha256, -1, SQLITE_STATIC);
    if (it->size >= 0)
        sqlite3_bind_int64(s, 4, it->size);
    if (it->mtime >= 0)
        sqlite3_bind_int64(s, 5, it->mtime);
    sqlite3_bind_text(s, 6, md, -1, SQLITE_STATIC);
    if (which != S_ITEM_UPDATE_KEEP && it->embedding)
        sqlite3_bind_text(s, 7, st->model, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 8, (int64_t)time(NULL));
    if (which != S_ITEM_UPDATE_KEEP && it->embedding)
        sqlite3_bind_blob(s, 9, it->embedding, st->dim * (int)sizeof(float), SQLITE_STATIC);
    r = sqlite3_step(s);
    sqlite3_reset(s);
    if (r != SQLITE_DONE)
        return end_write(st, own, db_err(err, st->w.db, st->path, "write an item"), err);
    if (!exists)
        seq = sqlite3_last_insert_rowid(st->w.db);
    if (out) { /* the row as written, inside the write transaction */
        if (!(s = stmt(st, &st->w, S_ITEM_BY_SEQ, err)))
            return end_write(st, own, -err->code, err);
        sqlite3_bind_int64(s, 1, seq);
        r = sqlite3_step(s);
        rc = r != SQLITE_ROW ? db_err(err, st->w.db, st->path, "read the item back")
           : fill_item(st, s, 0, out) ? err_set(err, ERR_NOMEM, "no memory")
                                      : 0;
        sqlite3_reset(s);
        if (rc)
            return end_write(st, own, rc, err);
    }
    if (is_new)
        *is_new = !exists;
    rc = end_write(st, own, 0, err);
    if (rc && out)
        store_item_clear(out);
    return rc;
}

int store_put(struct store *st, const struct store_item *it, int *is_new, struct err *err)
{
    return put(st, it, is_new, NULL, err);
}

int store_put_get(struct store *st, const struct store_item *it, int *is_new,
                  struct store_item *out, struct err *err)
{
    memset(out, 0, sizeof *out);
    return put(st, it, is_new, out, err);
}

int store_put_embedding(struct store *st, const char *id, const float *v, struct err *err)
{
    int rc = check_id(id, err);
    if (rc)
        return rc;
    if (!valid_vec(v, st->dim))
        return err_set(err, ERR_INVALID_ARGUMENT, "%s: the embedding is not finite or too close to zero", id);
    int own;
    if ((rc = begin_write(st, &own, err)))
        return rc;
    sqlite3_stmt *s = stmt(st, &st->w, S_ITEM_SET_EMB, err);
    if (!s)
        return end_write(st, own, -err->code, err);
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 2, v, st->dim * (int)sizeof(float), SQLITE_STATIC);
    sqlite3_bind_text(s, 3, st->model, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, (int64_t)time(NULL));
    int r = sqlite3_step(s);
    sqlite3_reset(s);
    if (r != SQLITE_DONE)
        rc = db_err(err, st->w.db, st->path, "write an embedding");
    else if (sqlite3_changes(st->w.db) == 0)
        rc = err_set(err, ERR_NOT_FOUND, "no item '%s'", id);
    return end_write(st, own, rc, err);
}

int store_delete(struct store *st, const char *id, struct err *err)
{
    int rc = check_id(id, err);
    if (rc)
        return rc;
    int own;
    if ((rc = begin_write(st, &own, err)))
        return rc;
    sqlite3_stmt *s = stmt(st, &st->w, S_ITEM_DELETE, err);
    if (!s)
        return end_write(st, own, -err->code, err);
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    int r = sqlite3_step(s);
    sqlite3_reset(s);
    if (r != SQLITE_DONE)
        rc = db_err(err, st->w.db, st->path, "delete an item");
    else if (sqlite3_changes(st->w.db) == 0)
        rc = err_set(err, ERR_NOT_FOUND, "no item '%s'", id);
    return end_write(st, own, rc, err);
}

int store_begin(struct store *st, struct err *err)
{
    pthread_mutex_lock(&st->w.mu);
    int rc = 0;
    if (st->tx_open)
        rc = err_set(err, ERR_CONFLICT, "%s: a batch is already open", st->path);
    else if (!(rc = exec(st, &st->w, "BEGIN IMMEDIATE", err))) {
        st->tx_open = 1;
        st->tx_owner = pthread_self();
    }
    pthread_mutex_unlock(&st->w.mu);
    return rc;
}

static int finish_batch(struct store *st, const char *sql, struct err *err)
{
    pthread_mutex_lock(&st->w.mu);
    int rc = 0;
    if (!st->tx_open)
        rc = err_set(err, ERR_CONFLICT, "%s: no batch is open", st->path);
    else {
        rc = exec(st, &st->w, sql, err);
        if (rc)
            sqlite3_exec(st->w.db, "ROLLBACK", NULL, NULL, NULL);
        st->tx_open = 0;
        counts_refresh(st, &st->w);
    }
    pthread_mutex_unlock(&st->w.mu);
    if (!rc)
        rc = after_commit(st, err);
    return rc;
}

int store_commit(struct store *st, struct err *err) { return finish_batch(st, "COMMIT", err); }
int store_rollback(struct store *st, struct err *err) { return finish_batch(st, "ROLLBACK", err); }

int store_reset_embeddings(struct store *st, const char *model, int dim, struct err *err)
{
    if (!model || !*model || strlen(model) > STORE_MODEL_MAX || dim < 1 || dim > STORE_DIM_MAX)
        return err_set(err, ERR_INVALID_ARGUMENT, "reset needs a model id and a dimension in "
                                                  "[1, %d]", STORE_DIM_MAX);
    char *m = strdup(model);
    if (!m)
        return err_set(err, ERR_NOMEM, "no memory");
    pthread_rwlock_wrlock(&st->idx_lock);
    int own, rc = begin_write(st, &own, err);
    if (rc) {
        pthread_rwlock_unlock(&st->idx_lock);
        free(m);
        return rc;
    }
    char buf[32];
    snprintf(buf, sizeof buf, "%d", dim);
    rc = exec(st, &st->w, "UPDATE items SET embedding = NULL, model = NULL "
                          "WHERE embedding IS NOT NULL", err);
    if (!rc)
        rc = meta_put(st, &st->w, "model", model, err);
    if (!rc)
        rc = meta_put(st, &st->w, "dim", buf, err);
    if (own) {
        if (!rc)
            rc = exec(st, &st->w, "COMMIT", err);
        if (rc)
            sqlite3_exec(st->w.db, "ROLLBACK", NULL, NULL, NULL);
    }
    pthread_mutex_unlock(&st->w.mu);
    if (!rc) {
        free(st->model);
        st->model = m;
        m = NULL;
        st->dim = dim;
        hnsw_free(st->idx);
        st->idx = NULL;
        st->saved_covered = -1;
        memset(&st->info, 0, sizeof st->info);
        if (unlink(st->index_path) && errno != ENOENT)
            rc = err_set(err, ERR_IO, "%s: cannot delete: %s", st->index_path, strerror(errno));
    }
    pthread_rwlock_unlock(&st->idx_lock);
    free(m);
    return rc;
}

/* ---- reads ------------------------------------------------------------- */

void store_item_clear(struct store_item *it)
{
    if (!it)
        return;
    free(it->id);
    free(it->source);
    free(it->sha256);
    free(it->metadata);
    free(it->embedding);
    free(it->model);
    memset(it, 0, sizeof *it);
}

void store_items_free(struct store_item *items, size_t n)
{
    if (!items)
        return;
    for (size_t i = 0; i < n; i++)
        store_item_clear(&items[i]);
    free(items);
}

/* Columns: seq, id, source, sha256, size, mtime, metadata, model,
 * created_at, updated_at, then embedding (blob) or has_embedding (int). */
static int fill_item(struct store *st, sqlite3_stmt *s, int with_blob, struct store_item *it)
{
    memset(it, 0, sizeof *it);
    it->seq = sqlite3_column_int64(s, 0);
    it->id = dup_col(s, 1);
    it->source = dup_col(s, 2);
    it->sha256 = dup_col(s, 3);
    it->size = col_int_or(s, 4, -1);
    it->mtime = col_int_or(s, 5, -1);
    it->metadata = dup_col(s, 6);
    it->model = dup_col(s, 7);
    it->created_at = sqlite3_column_int64(s, 8);
    it->updated_at = sqlite3_column_int64(s, 9);
    if (with_blob) {
        if (sqlite3_column_type(s, 10) == SQLITE_BLOB &&
            sqlite3_column_bytes(s, 10) == st->dim * (int)sizeof(float)) {
            it->embedding = malloc((size_t)st->dim * sizeof(float));
            if (!it->embedding)
                return -1;
            memcpy(it->embedding, sqlite3_column_blob(s, 10), (size_t)st->dim * sizeof(float));
            it->has_embedding = 1;
        }
    } else
        it->has_embedding = sqlite3_column_int(s, 10) != 0;
    if (!it->id || !it->metadata || (sqlite3_column_type(s, 2) != SQLITE_NULL && !it->source)) {
        store_item_clear(it);
        return -1;
    }
    return 0;
}

static int get_one(struct store *st, enum stmt_id id, const char *key, int with_blob,
                   struct store_item *out, const char *what, struct err *err)
{
    memset(out, 0, sizeof *out);
    struct conn *c = rconn(st);
    pthread_mutex_lock(&c->mu);
    int rc = 0;
    sqlite3_stmt *s = stmt(st, c, id, err);
    if (!s)
        rc = -err->code;
    else {
        sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
        int r = sqlite3_step(s);
        if (r == SQLITE_ROW)
            rc = fill_item(st, s, with_blob, out) ? err_set(err, ERR_NOMEM, "no memory") : 0;
        else if (r == SQLITE_DONE)
            rc = err_set(err, ERR_NOT_FOUND, "no item with %s '%s'", what, key);
        else
            rc = db_err(err, c->db, st->path, "read an item");
        sqlite3_reset(s);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int store_get(struct store *st, const char *id, struct store_item *out, struct err *err)
{
    memset(out, 0, sizeof *out);
    int rc = check_id(id, err);
    return rc ? rc : get_one(st, S_ITEM_GET, id, 1, out, "id", err);
}

int store_exists(struct store *st, const char *id, int64_t *seq, struct err *err)
{
    int rc = check_id(id, err);
    if (rc)
        return rc;
    struct conn *c = rconn(st);
    pthread_mutex_lock(&c->mu);
    sqlite3_stmt *s = stmt(st, c, S_ITEM_EXISTS, err);
    if (!s)
        rc = -err->code;
    else {
        sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
        int r = sqlite3_step(s);
        if (r == SQLITE_ROW) {
            if (seq)
                *seq = sqlite3_column_int64(s, 0);
            rc = 1;
        } else if (r != SQLITE_DONE)
            rc = db_err(err, c->db, st->path, "look up an item");
        sqlite3_reset(s);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int store_find_source(struct store *st, const char *source, struct store_item *out,
                      struct err *err)
{
    memset(out, 0, sizeof *out);
    if (!source)
        return err_set(err, ERR_INVALID_ARGUMENT, "a source is required");
    return get_one(st, S_FIND_SOURCE, source, 0, out, "source", err);
}

static int list_items(struct store *st, enum stmt_id id, int64_t after, int limit,
                      struct store_item **items, size_t *n, int64_t *next, struct err *err)
{
    *items = NULL;
    *n = 0;
    *next = 0;
    if (limit < 1 || limit > 10000)
        return err_set(err, ERR_INVALID_ARGUMENT, "limit %d is outside [1, 10000]", limit);
    struct store_item *a = calloc((size_t)limit, sizeof *a);
    if (!a)
        return err_set(err, ERR_NOMEM, "no memory");
    struct conn *c = rconn(st);
    pthread_mutex_lock(&c->mu);
    int rc = 0, more = 0;
    size_t k = 0;
    sqlite3_stmt *s = stmt(st, c, id, err);
    if (!s)
        rc = -err->code;
    else {
        sqlite3_bind_int64(s, 1, after);
        sqlite3_bind_int(s, 2, limit + 1); /* one row ahead: is there a next page? */
        int r;
        while ((r = sqlite3_step(s)) == SQLITE_ROW) {
            if (k == (size_t)limit) {
                more = 1;
                r = SQLITE_DONE;
                break;
            }
            if (fill_item(st, s, 0, &a[k])) {
                rc = err_set(err, ERR_NOMEM, "no memory");
                break;
            }
            k++;
        }
        if (!rc && r != SQLITE_DONE)
            rc = db_err(err, c->db, st->path, "list items");
        sqlite3_reset(s);
    }
    pthread_mutex_unlock(&c->mu);
    if (rc) {
        store_items_free(a, k);
        return rc;
    }
    *items = a;
    *n = k;
    *next = more ? a[k - 1].seq : 0;
    return 0;
}

int store_list(struct store *st, int64_t after, int limit, struct store_item **items,
               size_t *n, int64_t *next, struct err *err)
{
    return list_items(st, S_ITEM_LIST, after, limit, items, n, next, err);
}

int store_waiting(struct store *st, int64_t after, int limit, struct store_item **items,
                  size_t *n, int64_t *next, struct err *err)
{
    return list_items(st, S_ITEM_WAITING, after, limit, items, n, next, err);
}

static int count_q(struct store *st, enum stmt_id id, int64_t *n, struct err *err)
{
    struct conn *c = rconn(st);
    pthread_mutex_lock(&c->mu);
    int rc = 0;
    sqlite3_stmt *s = stmt(st, c, id, err);
    if (!s)
        rc = -err->code;
    else if (sqlite3_step(s) == SQLITE_ROW)
        *n = sqlite3_column_int64(s, 0);
    else
        rc = db_err(err, c->db, st->path, "count items");
    if (s)
        sqlite3_reset(s);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int store_count(struct store *st, int64_t *n, struct err *err)
{
    int rc = count_q(st, S_COUNT, n, err);
    if (!rc && rconn(st) == &st->r)
        atomic_store(&st->n_items, *n);
    return rc;
}

int store_count_waiting(struct store *st, int64_t *n, struct err *err)
{
    int rc = count_q(st, S_COUNT_WAITING, n, err);
    if (!rc && rconn(st) == &st->r)
        atomic_store(&st->n_waiting, *n);
    return rc;
}

void store_counts_cached(struct store *st, int64_t *items, int64_t *waiting)
{
    *items = atomic_load(&st->n_items);
    *waiting = atomic_load(&st->n_waiting);
}

/* ---- search ------------------------------------------------------------ */

struct bitmap {
    uint64_t *w;   /* bits */
    int64_t nbits; /* seqs 0 .. nbits-1 */
};

static int bitmap_accept(int64_t label, void *ctx)
{
    const struct bitmap *b = ctx;
    return label >= 0 && label < b->nbits && (b->w[label >> 6] >> (label & 63) & 1);
}

/* Runs the filters in SQL and sets the bit of every matching seq. */
static int filter_bitmap(struct store *st, const struct store_filter *f, int nf,
                         struct bitmap *bm, struct err *err)
{
    bm->w = NULL;
    bm->nbits = 0;
    /* one EXISTS per filter, ~250 bytes each: SQLite's growing string, the
     * count bounded by the caller's check against STORE_FILTERS_MAX */
    sqlite3_str *q = sqlite3_str_new(NULL);
    sqlite3_str_appendall(q, "SELECT seq FROM items WHERE embedding IS NOT NULL "
                             "AND json_valid(metadata)");
    for (int i = 0; i < nf; i++)
        sqlite3_str_appendf(
            q,
            " AND EXISTS (SELECT 1 FROM json_each(items.metadata) j WHERE j.key = ?%d AND ("
            "(j.type = 'text' AND j.atom = ?%d) OR "
            "(j.type IN ('integer', 'real') AND j.atom = ?%d) OR "
            "(j.type IN ('true', 'false', 'null') AND j.type = ?%d)))",
            3 * i + 1, 3 * i + 2, 3 * i + 3, 3 * i + 2);
    char *sql = sqlite3_str_finish(q);
    if (!sql)
        return err_set(err, ERR_NOMEM, "no memory for the filter");
    struct conn *c = &st->r;
    pthread_mutex_lock(&c->mu);
    int rc = 0;
    sqlite3_stmt *s = NULL, *m = stmt(st, c, S_MAX_SEQ, err);
    int64_t maxseq = 0;
    if (!m)
        rc = -err->code;
    else if (sqlite3_step(m) == SQLITE_ROW)
        maxseq = sqlite3_column_int64(m, 0);
    else
        rc = db_err(err, c->db, st->path, "read the last seq");
    if (m)
        sqlite3_reset(m);
    if (!rc) {
        bm->nbits = maxseq + 1;
        bm->w = calloc((size_t)(bm->nbits + 63) / 64, sizeof *bm->w);
        if (!bm->w)
            rc = err_set(err, ERR_NOMEM, "no memory for the filter");
    }
    if (!rc && sqlite3_prepare_v2(c->db, sql, -1, &s, NULL) != SQLITE_OK)
        rc = db_err(err, c->db, st->path, "prepare the filter");
    for (int i = 0; !rc && i < nf; i++) {
        sqlite3_bind_text(s, 3 * i + 1, f[i].key, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3 * i + 2, f[i].value, -1, SQLITE_STATIC);
        char *end;
        errno = 0;
        double num = strtod(f[i].value, &end);
        if (*f[i].value && !*end && !errno && isfinite(num))
            sqlite3_bind_double(s, 3 * i + 3, num);
    }
    int r = SQLITE_DONE;
    while (!rc && (r = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(s, 0);
        if (seq >= 0 && seq < bm->nbits)
            bm->w[seq >> 6] |= 1ull << (seq & 63);
    }
    if (!rc && r != SQLITE_DONE)
        rc = db_err(err, c->db, st->path, "run the filter");
    sqlite3_finalize(s);
    pthread_mutex_unlock(&c->mu);
    sqlite3_free(sql);
    if (rc) {
        free(bm->w);
        bm->w = NULL;
    }
    return rc;
}

void store_hits_free(struct store_hit *hits, size_t n)
{
    if (!hits)
        return;
    for (size_t i = 0; i < n; i++) {
        free(hits[i].id);
        free(hits[i].source);
        free(hits[i].metadata);
    }
    free(hits);
}

/* Read-locks an index that is current with the committed database. */
static int lock_current_index(struct store *st, struct err *err)
{
    pthread_rwlock_rdlock(&st->idx_lock);
    int rc = 0;
    if (!index_behind(st, err, &rc))
        return 0;
    pthread_rwlock_unlock(&st->idx_lock);
    if (rc)
        return rc;
    pthread_rwlock_wrlock(&st->idx_lock);
    rc = ensure_index(st, err);
    pthread_rwlock_unlock(&st->idx_lock);
    if (rc)
        return rc;
    /* Another writer may slip in between: searching a moment-old index is
     * fine, so no second check. */
    pthread_rwlock_rdlock(&st->idx_lock);
    if (!st->idx) {
        pthread_rwlock_unlock(&st->idx_lock);
        return err_set(err, ERR_INTERNAL, "%s: the index went away", st->path);
    }
    return 0;
}

int store_search(struct store *st, const struct store_query *q, struct store_hit **hits,
                 size_t *n, struct err *err)
{
    *hits = NULL;
    *n = 0;
    if (!q->vec || q->k < 1 || q->offset < 0 || q->k > STORE_K_MAX ||
        q->offset > STORE_K_MAX - q->k)
        return err_set(err, ERR_INVALID_ARGUMENT, "k=%d offset=%d: need k >= 1, offset >= 0, "
                       "k + offset <= %d", q->k, q->offset, STORE_K_MAX);
    if (q->n_filters < 0 || q->n_filters > STORE_FILTERS_MAX || (q->n_filters && !q->filters))
        return err_set(err, ERR_INVALID_ARGUMENT, "%d filters (max %d)", q->n_filters,
                       STORE_FILTERS_MAX);
    for (int i = 0; i < q->n_filters; i++)
        if (!q->filters[i].key || !*q->filters[i].key || !q->filters[i].value ||
            strlen(q->filters[i].key) > 256 || strlen(q->filters[i].value) > 4096)
            return err_set(err, ERR_INVALID_ARGUMENT, "filter %d needs a key (1..256 bytes) "
                           "and a value", i + 1);
        else if (!utf8_valid(q->filters[i].key) || !utf8_valid(q->filters[i].value))
            return err_set(err, ERR_INVALID_UTF8, "filter %d is not valid UTF-8", i + 1);
    if (!valid_vec(q->vec, st->dim))
        return err_set(err, ERR_INVALID_ARGUMENT, "the query vector is not finite or its norm "
                       "is under %g", STORE_VEC_MIN_NORM);
    struct bitmap bm = {NULL, 0};
    int rc = 0;
    if (q->n_filters && (rc = filter_bitmap(st, q->filters, q->n_filters, &bm, err)))
        return rc;
    size_t want = (size_t)q->k + (size_t)q->offset;
    struct hnsw_hit *hh = malloc(want * sizeof *hh);
    if (!hh) {
        free(bm.w);
        return err_set(err, ERR_NOMEM, "no memory for %zu hits", want);
    }
    size_t got = 0;
    if (!(rc = lock_current_index(st, err))) {
        rc = hnsw_search(st->idx, q->vec, want, q->ef, q->n_filters ? bitmap_accept : NULL,
                         &bm, hh, &got, err);
        pthread_rwlock_unlock(&st->idx_lock);
    }
    free(bm.w);
    if (rc) {
        free(hh);
        return rc;
    }
    size_t first = (size_t)q->offset;
    while (got > first && hh[got - 1].score < q->min_score)
        got--;
    struct store_hit *out = got > first ? calloc(got - first, sizeof *out) : NULL;
    if (got > first && !out) {
        free(hh);
        return err_set(err, ERR_NOMEM, "no memory");
    }
    size_t k = 0;
    struct conn *c = &st->r;
    pthread_mutex_lock(&c->mu);
    for (size_t i = first; i < got && !rc; i++) {
        if (!isfinite(hh[i].score))
            continue; /* a stored vector the index cannot score: never a NaN hit */
        sqlite3_stmt *s = stmt(st, c, S_HIT_BY_SEQ, err);
        if (!s) {
            rc = -err->code;
            break;
        }
        sqlite3_bind_int64(s, 1, hh[i].label);
        int r = sqlite3_step(s);
        if (r == SQLITE_ROW) { /* DONE: deleted since the search, skip */
            struct store_hit *o = &out[k++];
            o->seq = hh[i].label;
            o->score = hh[i].score;
            o->id = dup_col(s, 0);
            o->source = dup_col(s, 1);
            o->metadata = dup_col(s, 2);
            if (!o->id || !o->metadata)
                rc = err_set(err, ERR_NOMEM, "no memory");
        } else if (r != SQLITE_DONE)
            rc = db_err(err, c->db, st->path, "read a hit");
        sqlite3_reset(s);
    }
    pthread_mutex_unlock(&c->mu);
    free(hh);
    if (rc) {
        store_hits_free(out, k);
        return rc;
    }
    *hits = out;
    *n = k;
    return 0;
}

/* ---- near duplicates ------------------------------------------------------ */

struct dup_ctx {
    int64_t *labels;  /* live labels in node order */
    size_t n;         /* count */
    size_t cap;       /* room */
};

static int collect_label(int64_t label, const float *v, void *p)
{
    (void)v;
    struct dup_ctx *c = p;
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 1024;
        int64_t *g = realloc(c->labels, nc * sizeof *g);
        if (!g)
            return -1;
        c->labels = g;
        c->cap = nc;
    }
    c->labels[c->n++] = label;
    return 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static size_t uf_find(size_t *p, size_t x)
{
    while (p[x] != x) {
        p[x] = p[p[x]];
        x = p[x];
    }
    return x;
}

static int cmp_member(const void *a, const void *b)
{
    return strcmp(((const struct store_dup_member *)a)->id,
                  ((const struct store_dup_member *)b)->id);
}

static int cmp_group(const void *a, const void *b)
{
    const struct store_dup_group *x = a, *y = b;
    if (x->n != y->n)
        return x->n < y->n ? 1 : -1;
    return strcmp(x->members[0].id, y->members[0].id);
}

static void group_clear(struct store_dup_group *g)
{
    for (size_t j = 0; j < g->n; j++) {
        free(g->members[j].id);
        free(g->members[j].source);
    }
    free(g->members);
    g->members = NULL;
    g->n = 0;
}

void store_dup_groups_free(struct store_dup_group *g, size_t n)
{
    if (!g)
        return;
    for (size_t i = 0; i < n; i++)
        group_clear(&g[i]);
    free(g);
}

#define DUP_K 10

int store_duplicates(struct store *st, float threshold, struct store_dup_group **groups,
                     size_t *ngroups, struct err *err)
{
    *groups = NULL;
    *ngroups = 0;
    if (!(threshold > -1 && threshold <= 1))
        return err_set(err, ERR_INVALID_ARGUMENT, "threshold %g is outside (-1, 1]", threshold);
    int rc = lock_current_index(st, err);
    if (rc)
        return rc;
    struct dup_ctx dc = {NULL, 0, 0};
    size_t *parent = NULL;
    float *best = NULL;
    float *v = malloc((size_t)st->dim * sizeof *v);
    if (!v || hnsw_foreach(st->idx, collect_label, &dc)) {
        rc = err_set(err, ERR_NOMEM, "no memory");
        goto unlock;
    }
    qsort(dc.labels, dc.n, sizeof *dc.labels, cmp_i64);
    parent = malloc((dc.n ? dc.n : 1) * sizeof *parent);
    best = malloc((dc.n ? dc.n : 1) * sizeof *best);
    if (!parent || !best) {
        rc = err_set(err, ERR_NOMEM, "no memory");
        goto unlock;
    }
    for (size_t i = 0; i < dc.n; i++) {
        parent[i] = i;
        best[i] = -2;
    }
    for (size_t i = 0; i < dc.n && !rc; i++) {
        struct hnsw_hit hh[DUP_K + 1];
        size_t got = 0;
        hnsw_get(st->idx, dc.labels[i], v);
        rc = hnsw_search(st->idx, v, DUP_K + 1, 48, NULL, NULL, hh, &got, err);
        for (size_t j = 0; j < got && !rc; j++) {
            if (hh[j].label == dc.labels[i] || hh[j].score < threshold)
                continue;
            int64_t *pos = bsearch(&hh[j].label, dc.labels, dc.n, sizeof *dc.labels, cmp_i64);
            if (!pos)
                continue;
            size_t o = (size_t)(pos - dc.labels);
            if (hh[j].score > best[i])
                best[i] = hh[j].score;
            if (hh[j].score > best[o])
                best[o] = hh[j].score;
            size_t a = uf_find(parent, i), b = uf_find(parent, o);
            if (a != b)
                parent[a > b ? a : b] = a < b ? a : b;
        }
    }
unlock:
    pthread_rwlock_unlock(&st->idx_lock);
    free(v);
    if (rc)
        goto out;
    /* Count members per root, then fill groups of two or more. */
    size_t *size = calloc(dc.n ? dc.n : 1, sizeof *size), *slot = malloc((dc.n ? dc.n : 1) * sizeof *slot);
    if (!size || !slot) {
        free(size);
        free(slot);
        rc = err_set(err, ERR_NOMEM, "no memory");
        goto out;
    }
    size_t ng = 0;
    for (size_t i = 0; i < dc.n; i++)
        size[uf_find(parent, i)]++;
    for (size_t i = 0; i < dc.n; i++)
        slot[i] = size[i] >= 2 ? ng++ : (size_t)-1;
    struct store_dup_group *g = ng ? calloc(ng, sizeof *g) : NULL;
    for (size_t i = 0; g && i < dc.n; i++)
        if (slot[i] != (size_t)-1) {
            g[slot[i]].members = calloc(size[i], sizeof *g[slot[i]].members);
            g[slot[i]].max_score = -2;
            if (!g[slot[i]].members)
                rc = -1;
        }
    if ((ng && !g) || rc) {
        store_dup_groups_free(g, ng);
        free(size);
        free(slot);
        rc = err_set(err, ERR_NOMEM, "no memory");
        goto out;
    }
    struct conn *c = &st->r;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < dc.n && !rc; i++) {
        size_t root = uf_find(parent, i);
        if (slot[root] == (size_t)-1)
            continue;
        struct store_dup_group *gr = &g[slot[root]];
        sqlite3_stmt *s = stmt(st, c, S_HIT_BY_SEQ, err);
        if (!s) {
            rc = -err->code;
            break;
        }
        sqlite3_bind_int64(s, 1, dc.labels[i]);
        if (sqlite3_step(s) == SQLITE_ROW) {
            struct store_dup_member *m = &gr->members[gr->n++];
            m->id = dup_col(s, 0);
            m->source = dup_col(s, 1);
            m->score = best[i];
            if (best[i] > gr->max_score)
                gr->max_score = best[i];
            if (!m->id)
                rc = err_set(err, ERR_NOMEM, "no memory");
        }
        sqlite3_reset(s);
    }
    pthread_mutex_unlock(&c->mu);
    free(size);
    free(slot);
    /* A member deleted meanwhile may leave a group of one: drop those. */
    size_t kept = 0;
    for (size_t i = 0; i < ng; i++) {
        if (!rc && g[i].n >= 2) {
            qsort(g[i].members, g[i].n, sizeof *g[i].members, cmp_member);
            g[kept++] = g[i];
        } else
            group_clear(&g[i]);
    }
    if (rc) {
        free(g);
        goto out;
    }
    if (kept)
        qsort(g, kept, sizeof *g, cmp_group);
    *groups = kept ? g : NULL;
    if (!kept)
        free(g);
    *ngroups = kept;
out:
    free(dc.labels);
    free(parent);
    free(best);
    return rc;
}
