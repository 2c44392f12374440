/* store_sqlite.c - the embedded backend of the store: one SQLite file.
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
 *     monotonic; store.c replays it into the index. Because triggers live
 *     in the schema, even a sqlite3 shell edit is seen.
 *  4. The log is trimmed up to the cseq the index file covers (meta
 *     'changes_trimmed' records how far); store.c decides when.
 *  5. Filters run in SQL (json_each over the top-level metadata fields).
 *  6. The index file is PATH.hnsw; store.c writes it as PATH.hnsw.tmp.PID
 *     and renames it, and this file removes the temp files of processes
 *     that died in between (never another live process's save).
 *  7. The failed state (schema 3) lives on the item: the reason and the
 *     file's size and mtime at failure. A put that writes another size or
 *     mtime (a scan saw the file change) ends it; an embedding ends it.
 *  8. Leased claims (store.h) are one UPDATE ... RETURNING inside the
 *     write transaction (BEGIN IMMEDIATE: one writer at a time, so two
 *     processes never claim one item); lease times are ms of the
 *     machine's clock, which every process opening the file shares.
 *
 * The schema, its migrations and every statement are here, so a schema
 * change is made in one file; store_sqlite_index.c holds the reads of the
 * local index and of searches (the changes log, embeddings, filters, hit
 * rows), store_sqlite_int.h what the two share, store.c what every backend
 * shares.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store/store_sqlite_int.h"


static const char *const stmt_sql[S_COUNT_] = {
    [S_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [S_META_PUT] = "INSERT INTO meta(key, value) VALUES (?1, ?2) "
                   "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    [S_ITEM_LOOKUP] = "SELECT seq, sha256, embedding IS NOT NULL, source, size, mtime FROM items "
                      "WHERE id = ?1",
    [S_ITEM_INSERT] = "INSERT INTO items(id, source, sha256, size, mtime, metadata, model, "
                      "created_at, updated_at, embedding) "
                      "VALUES (?1, ?2, ?3, ?4, ?5, json(?6), ?7, ?8, ?8, ?9)",
    /* the failed state ends when the file is seen with another size or
     * mtime (design 7) */
    [S_ITEM_UPDATE_KEEP] = "UPDATE items SET source = ?2, sha256 = ?3, size = ?4, mtime = ?5, "
                           "metadata = json(?6), updated_at = ?8, failed = CASE WHEN "
                           "?4 IS failed_size AND ?5 IS failed_mtime THEN failed END "
                           "WHERE seq = ?1",
    /* with an embedding: the failed state and the lease end */
    [S_ITEM_UPDATE_EMB] = "UPDATE items SET source = ?2, sha256 = ?3, size = ?4, mtime = ?5, "
                          "metadata = json(?6), model = ?7, updated_at = ?8, embedding = ?9, "
                          "failed = CASE WHEN ?9 IS NULL AND ?4 IS failed_size AND "
                          "?5 IS failed_mtime THEN failed END, "
                          "lease_owner = CASE WHEN ?9 IS NULL THEN lease_owner END, "
                          "lease_until = CASE WHEN ?9 IS NULL THEN lease_until END "
                          "WHERE seq = ?1",
    [S_ITEM_SET_EMB] = "UPDATE items SET embedding = ?2, model = ?3, updated_at = ?4, "
                       "failed = NULL, lease_owner = NULL, lease_until = NULL WHERE id = ?1",
    [S_ITEM_GET] = "SELECT seq, id, source, sha256, size, mtime, metadata, model, created_at, "
                   "updated_at, embedding, failed FROM items WHERE id = ?1",
    [S_ITEM_DELETE] = "DELETE FROM items WHERE id = ?1",
    [S_ITEM_LIST] = "SELECT seq, id, source, sha256, size, mtime, metadata, model, created_at, "
                    "updated_at, embedding IS NOT NULL, failed FROM items WHERE seq > ?1 "
                    "ORDER BY seq LIMIT ?2",
    [S_ITEM_WAITING] = "SELECT seq, id, source, sha256, size, mtime, metadata, model, "
                       "created_at, updated_at, 0, failed FROM items "
                       "WHERE seq > ?1 AND embedding IS NULL ORDER BY seq LIMIT ?2",
    [S_COUNT] = "SELECT items FROM counts",
    [S_COUNT_WAITING] = "SELECT waiting FROM counts",
    [S_FIND_SOURCE] = "SELECT seq, id, source, sha256, size, mtime, metadata, model, "
                      "created_at, updated_at, embedding IS NOT NULL, failed FROM items "
                      "WHERE source = ?1 ORDER BY seq LIMIT 1",
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
                      "updated_at, embedding IS NOT NULL, failed FROM items WHERE seq = ?1",
    [S_COUNTS] = "SELECT items, waiting, failed FROM counts",
    [S_COUNT_FAILED] = "SELECT failed FROM counts",
    /* design 8: ?2 is now and ?3 the lease, in ms of the machine's clock */
    [S_CLAIM] = "UPDATE items SET lease_owner = ?1, lease_until = ?2 + ?3 WHERE seq IN "
                "(SELECT seq FROM items WHERE embedding IS NULL AND failed IS NULL AND "
                "(lease_until IS NULL OR lease_until <= ?2) "
                "ORDER BY seq LIMIT ?4) "
                "RETURNING seq, id, source, sha256, size, mtime, metadata, model, created_at, "
                "updated_at, 0, failed",
    [S_CLAIM_NEXT] = "SELECT min(lease_until) - ?1 FROM items "
                     "WHERE embedding IS NULL AND failed IS NULL",
    [S_RENEW] = "UPDATE items SET lease_until = CASE WHEN ?3 > 0 THEN ?2 + ?3 END, "
                "lease_owner = CASE WHEN ?3 > 0 THEN lease_owner END "
                "WHERE embedding IS NULL AND lease_owner = ?1",
    [S_OWNERS] = "SELECT DISTINCT lease_owner FROM items WHERE embedding IS NULL AND "
                 "lease_owner IS NOT NULL LIMIT ?1",
    [S_SET_FAILED] = "UPDATE items SET failed = ?2, failed_size = ?3, failed_mtime = ?4, "
                     "lease_owner = NULL, lease_until = NULL WHERE id = ?1",
    [S_TRIM] = "DELETE FROM changes WHERE cseq <= ?1",
    [S_TRIMMED] = "UPDATE meta SET value = ?1 WHERE key = 'changes_trimmed'",
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

/* Version 3: the failed state (reason, and the file's size and mtime when
 * it failed) and leased claims (owner, and when the lease ends, ms since
 * the epoch) on the item, and the failed count kept like the others. New
 * columns come after the embedding: ALTER TABLE can only append, and the
 * rows that use them (waiting ones) have no blob to skip. */
static const char *const schema_v3 =
    "ALTER TABLE items ADD COLUMN failed TEXT;"
    "ALTER TABLE items ADD COLUMN failed_size INTEGER;"
    "ALTER TABLE items ADD COLUMN failed_mtime INTEGER;"
    "ALTER TABLE items ADD COLUMN lease_owner TEXT;"
    "ALTER TABLE items ADD COLUMN lease_until INTEGER;"
    "CREATE INDEX items_failed ON items(seq) WHERE failed IS NOT NULL;"
    "ALTER TABLE counts ADD COLUMN failed INTEGER NOT NULL DEFAULT 0;"
    "CREATE TRIGGER counts_fi AFTER INSERT ON items WHEN NEW.failed IS NOT NULL"
    "  BEGIN UPDATE counts SET failed = failed + 1; END;"
    "CREATE TRIGGER counts_fd AFTER DELETE ON items WHEN OLD.failed IS NOT NULL"
    "  BEGIN UPDATE counts SET failed = failed - 1; END;"
    "CREATE TRIGGER counts_fu AFTER UPDATE OF failed ON items"
    "  WHEN (OLD.failed IS NULL) <> (NEW.failed IS NULL) BEGIN UPDATE counts SET"
    "  failed = failed + (NEW.failed IS NOT NULL) - (OLD.failed IS NOT NULL); END;";

static const char *const migrations[] = {schema_v1, schema_v2, schema_v3};


/* ---- helpers ----------------------------------------------------------- */

int lite__db_err(struct err *err, sqlite3 *db, const char *path, const char *what)
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

sqlite3_stmt *lite__stmt(struct lite *l, struct conn *c, enum stmt_id id, struct err *err)
{
    if (!c->st[id]) {
        if (sqlite3_prepare_v3(c->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &c->st[id],
                               NULL) != SQLITE_OK) {
            lite__db_err(err, c->db, l->path, "prepare");
            return NULL;
        }
    } else {
        sqlite3_reset(c->st[id]);
        sqlite3_clear_bindings(c->st[id]);
    }
    return c->st[id];
}

int lite__exec(struct lite *l, struct conn *c, const char *sql, struct err *err)
{
    char *msg = NULL;
    if (sqlite3_exec(c->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = lite__db_err(err, c->db, l->path, sql);
        sqlite3_free(msg);
        return rc;
    }
    return 0;
}

/* Runs a one-row, one-column query (schema checks) into *out. */
static int lite__query_int(struct lite *l, struct conn *c, const char *sql, const char *what,
                     int *out, struct err *err)
{
    sqlite3_stmt *s = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(c->db, sql, -1, &s, NULL) != SQLITE_OK ||
        sqlite3_step(s) != SQLITE_ROW)
        rc = lite__db_err(err, c->db, l->path, what);
    else
        *out = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return rc;
}

/* Runs a statement that takes one int64 and returns one int64 row. */
int lite__one_i64(struct lite *l, struct conn *c, enum stmt_id id, int64_t arg, int64_t *out,
                   const char *what, struct err *err)
{
    sqlite3_stmt *s = lite__stmt(l, c, id, err);
    if (!s)
        return -err->code;
    if (sqlite3_bind_parameter_count(s) > 0)
        sqlite3_bind_int64(s, 1, arg);
    int rc = 0;
    if (sqlite3_step(s) == SQLITE_ROW)
        *out = sqlite3_column_int64(s, 0);
    else
        rc = lite__db_err(err, c->db, l->path, what);
    sqlite3_reset(s);
    return rc;
}

char *lite__dup_col(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    return t ? strdup((const char *)t) : NULL;
}

static int64_t lite__col_int_or(sqlite3_stmt *s, int i, int64_t dflt)
{
    return sqlite3_column_type(s, i) == SQLITE_NULL ? dflt : sqlite3_column_int64(s, i);
}

/* The connection a read should use: the batch's own when the caller runs
 * the open batch, else the read connection. */
static struct conn *lite__rconn(struct store *st)
{
    return store__in_batch(st) ? &BE(st)->w : &BE(st)->r;
}

/* Reads the counts row into the cache; c->mu held. */
static void lite__counts_refresh(struct store *st, struct conn *c)
{
    struct err e;
    sqlite3_stmt *s = lite__stmt(BE(st), c, S_COUNTS, &e);
    if (s && sqlite3_step(s) == SQLITE_ROW) {
        atomic_store(&st->n_items, sqlite3_column_int64(s, 0));
        atomic_store(&st->n_waiting, sqlite3_column_int64(s, 1));
        atomic_store(&st->n_failed, sqlite3_column_int64(s, 2));
    }
    if (s)
        sqlite3_reset(s);
}

/* ---- open / schema ----------------------------------------------------- */

static int conn_open(struct lite *l, struct conn *c, int flags, struct err *err)
{
    pthread_mutex_init(&c->mu, NULL);
    if (sqlite3_open_v2(l->path, &c->db, flags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        int rc = c->db ? lite__db_err(err, c->db, l->path, "open")
                       : err_set(err, ERR_NOMEM, "%s: no memory to open", l->path);
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

int lite__meta_get(struct lite *l, struct conn *c, const char *key, char **out,
                    struct err *err)
{
    *out = NULL;
    sqlite3_stmt *s = lite__stmt(l, c, S_META_GET, err);
    if (!s)
        return -err->code;
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    int r = sqlite3_step(s);
    if (r == SQLITE_ROW)
        *out = lite__dup_col(s, 0);
    else if (r != SQLITE_DONE)
        return lite__db_err(err, c->db, l->path, "read meta");
    sqlite3_reset(s);
    return 0;
}

static int meta_put(struct lite *l, struct conn *c, const char *key, const char *val,
                    struct err *err)
{
    sqlite3_stmt *s = lite__stmt(l, c, S_META_PUT, err);
    if (!s)
        return -err->code;
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, val, -1, SQLITE_STATIC);
    int r = sqlite3_step(s);
    sqlite3_reset(s);
    return r == SQLITE_DONE ? 0 : lite__db_err(err, c->db, l->path, "write meta");
}

/* The same weights under the id an earlier version gave them
 * (clip_model_former_id): the store and its items take the current id, in
 * the caller's write transaction; embeddings stay as they are. */
static int rename_model(struct lite *l, struct conn *c, const char *from, const char *to,
                        struct err *err)
{
    int rc = meta_put(l, c, "model", to, err);
    if (rc)
        return rc;
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(c->db, "UPDATE items SET model = ?1 WHERE model = ?2", -1, &s,
                           NULL) != SQLITE_OK)
        return lite__db_err(err, c->db, l->path, "rename the model");
    sqlite3_bind_text(s, 1, to, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, from, -1, SQLITE_STATIC);
    int r = sqlite3_step(s);
    rc = r == SQLITE_DONE ? 0 : lite__db_err(err, c->db, l->path, "rename the model");
    sqlite3_finalize(s);
    return rc;
}

/* Brings the schema to the last version (inside the caller's write
 * transaction); refuses a database that is not an empty one or a store. */
static int migrate(struct lite *l, struct conn *c, int no_migrate, struct err *err)
{
    int version = 0, have = 0, rc;
    if ((rc = lite__query_int(l, c, "SELECT count(*) FROM sqlite_master WHERE name = 'schema_version'",
                        "read schema", &have, err)))
        return rc;
    if (have) {
        if ((rc = lite__query_int(l, c, "SELECT max(version) FROM schema_version",
                            "read schema version", &version, err)))
            return rc;
    } else {
        /* Not ours unless empty: refuse to add tables to another database. */
        int tables = 0;
        if ((rc = lite__query_int(l, c, "SELECT count(*) FROM sqlite_master", "read schema", &tables,
                            err)))
            return rc;
        if (tables)
            return err_set(err, ERR_CORRUPT, "%s: an SQLite database but not an imgsearch store",
                           l->path);
        if (no_migrate)
            return err_set(err, ERR_UNSUPPORTED_FORMAT, "%s: no store schema yet and migrations "
                           "are off: run 'imgsearch migrate --store %s' (with --model-id and "
                           "--dim for a new store)", l->path, l->path);
        if ((rc = lite__exec(l, c, "CREATE TABLE schema_version(version INTEGER NOT NULL);"
                             "INSERT INTO schema_version VALUES (0);", err)))
            return rc;
    }
    int nmig = (int)(sizeof migrations / sizeof migrations[0]);
    if (version > nmig)
        return err_set(err, ERR_UNSUPPORTED_FORMAT,
                       "%s: store schema version %d is newer than this imgsearch (%d)", l->path,
                       version, nmig);
    if (version < nmig && no_migrate)
        return err_set(err, ERR_UNSUPPORTED_FORMAT, "%s: store schema version %d is older than "
                       "this imgsearch's (%d) and migrations are off: run 'imgsearch migrate "
                       "--store %s'", l->path, version, nmig, l->path);
    for (int v = version; v < nmig; v++) {
        if ((rc = lite__exec(l, c, migrations[v], err)))
            return rc;
        char sql[64];
        snprintf(sql, sizeof sql, "UPDATE schema_version SET version = %d", v + 1);
        if ((rc = lite__exec(l, c, sql, err)))
            return rc;
    }
    return 0;
}

/* Creates or upgrades the schema inside one write transaction, and records
 * or checks the model. */
static int setup(struct store *st, const struct store_options *o, struct err *err)
{
    struct lite *l = BE(st);
    struct conn *c = &l->w;
    int rc = lite__exec(l, c, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", err);
    if (rc)
        return rc;
    if ((rc = lite__exec(l, c, "BEGIN IMMEDIATE", err)))
        return rc;
    char *model = NULL, *dims = NULL, *dbid = NULL;
    if ((rc = migrate(l, c, o && o->no_migrate, err)))
        goto done;
    if ((rc = lite__meta_get(l, c, "model", &model, err)) || (rc = lite__meta_get(l, c, "dim", &dims, err)) ||
        (rc = lite__meta_get(l, c, "db_id", &dbid, err)))
        goto done;
    if (!model || !dims) {
        if (!o || !o->model || !*o->model || o->dim < 1) {
            rc = err_set(err, ERR_INVALID_ARGUMENT,
                         "%s: a new store needs a model id and a dimension", l->path);
            goto done;
        }
        char buf[32], idb[32];
        snprintf(buf, sizeof buf, "%d", o->dim);
        uint64_t id = store__new_db_id();
        snprintf(idb, sizeof idb, "%llu", (unsigned long long)id);
        if ((rc = meta_put(l, c, "model", o->model, err)) ||
            (rc = meta_put(l, c, "dim", buf, err)) || (rc = meta_put(l, c, "db_id", idb, err)) ||
            (rc = meta_put(l, c, "changes_trimmed", "0", err)))
            goto done;
        st->model = strdup(o->model);
        st->dim = o->dim;
        st->db_id = id;
    } else {
        long d = strtol(dims, NULL, 10);
        if (d < 1 || d > STORE_DIM_MAX || !dbid) {
            rc = err_set(err, ERR_CORRUPT, "%s: meta holds dimension '%s'", l->path, dims);
            goto done;
        }
        if (o && o->model && o->former_model && strcmp(o->model, model) &&
            !strcmp(o->former_model, model) && (!o->dim || o->dim == d)) {
            if ((rc = rename_model(l, c, model, o->model, err)))
                goto done;
            free(model);
            if (!(model = strdup(o->model))) {
                rc = err_set(err, ERR_NOMEM, "out of memory");
                goto done;
            }
        }
        if ((o && o->model && strcmp(o->model, model)) || (o && o->dim && o->dim != d)) {
            rc = err_set(err, ERR_MODEL_MISMATCH,
                         "%s: the store holds embeddings of model '%s' (dimension %ld), not "
                         "'%s' (dimension %d); reindex it to switch models",
                         l->path, model, d, o->model ? o->model : model, o->dim ? o->dim : (int)d);
            goto done;
        }
        st->model = model;
        model = NULL;
        st->dim = (int)d;
        st->db_id = strtoull(dbid, NULL, 10);
    }
    rc = lite__exec(l, c, "COMMIT", err);
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

static void lite_close(struct store *st)
{
    struct lite *l = BE(st);
    if (!l)
        return;
    if (atomic_load(&st->tx_open) && l->w.db) {
        sqlite3_exec(l->w.db, "ROLLBACK", NULL, NULL, NULL);
        atomic_store(&st->tx_open, 0);
    }
    conn_close(&l->r);
    conn_close(&l->w);
    free(l->path);
    free(l);
    st->be = NULL;
}

static const struct store_ops lite_ops;

int store__sqlite_open(struct store *st, const char *path, const struct store_options *o,
                       struct err *err)
{
    if (!(o && o->create) && access(path, F_OK))
        return err_set(err, ERR_NOT_FOUND, "%s: no such store", path);
    struct lite *l = calloc(1, sizeof *l);
    if (!l)
        return err_set(err, ERR_NOMEM, "no memory");
    st->be = l;
    st->ops = &lite_ops;
    l->path = strdup(path);
    size_t n = strlen(path) + 6;
    st->index_path = malloc(n);
    if (!l->path || !st->index_path)
        return err_set(err, ERR_NOMEM, "no memory");
    snprintf(st->index_path, n, "%s.hnsw", path);
    int flags = SQLITE_OPEN_READWRITE | (o && o->create ? SQLITE_OPEN_CREATE : 0);
    int rc = conn_open(l, &l->w, flags, err);
    if (!rc)
        rc = setup(st, o, err);
    if (!rc)
        rc = conn_open(l, &l->r, SQLITE_OPEN_READWRITE, err);
    if (rc)
        return rc;
    remove_stale_tmp(st->index_path);
    pthread_mutex_lock(&l->w.mu);
    lite__counts_refresh(st, &l->w);
    pthread_mutex_unlock(&l->w.mu);
    return 0;
}

/* ---- writes ------------------------------------------------------------ */

/* Starts a write: BEGIN IMMEDIATE unless the caller's batch is open.
 * Locks w.mu; end_write unlocks it. */
static int begin_write(struct store *st, int *own, struct err *err)
{
    struct lite *l = BE(st);
    pthread_mutex_lock(&l->w.mu);
    *own = !atomic_load(&st->tx_open);
    if (*own) {
        int rc = lite__exec(l, &l->w, "BEGIN IMMEDIATE", err);
        if (rc) {
            pthread_mutex_unlock(&l->w.mu);
            return rc;
        }
    }
    return 0;
}

static int end_write(struct store *st, int own, int rc, struct err *err)
{
    struct lite *l = BE(st);
    if (own) {
        if (!rc)
            rc = lite__exec(l, &l->w, "COMMIT", err);
        if (rc)
            sqlite3_exec(l->w.db, "ROLLBACK", NULL, NULL, NULL);
        else
            lite__counts_refresh(st, &l->w);
    }
    pthread_mutex_unlock(&l->w.mu);
    return rc;
}

static int fill_item(struct store *st, sqlite3_stmt *s, int with_blob, struct store_item *it);

/* Looks the id up, then inserts or updates (w.mu held, in a transaction). */
static int put_row(struct store *st, const struct store_item *it, const char *md, int keep_same,
                   int *is_new, int64_t *seqp, struct err *err)
{
    struct lite *l = BE(st);
    sqlite3_stmt *s = lite__stmt(l, &l->w, S_ITEM_LOOKUP, err);
    if (!s)
        return -err->code;
    sqlite3_bind_text(s, 1, it->id, -1, SQLITE_STATIC);
    int r = sqlite3_step(s);
    int64_t seq = 0;
    int same_sha = 0, exists = r == SQLITE_ROW, same_file = 0;
    if (exists) {
        seq = sqlite3_column_int64(s, 0);
        const char *old = (const char *)sqlite3_column_text(s, 1);
        same_sha = old && it->sha256 && !strcmp(old, it->sha256) && sqlite3_column_int(s, 2);
        const char *src = (const char *)sqlite3_column_text(s, 3);
        same_file = src && it->source && !strcmp(src, it->source) &&
                    lite__col_int_or(s, 4, -1) == it->size && lite__col_int_or(s, 5, -1) == it->mtime;
    } else if (r != SQLITE_DONE) {
        sqlite3_reset(s);
        return lite__db_err(err, l->w.db, l->path, "look up an item");
    }
    sqlite3_reset(s);
    if (keep_same && same_file) { /* store_register: registered already */
        *seqp = seq;
        if (is_new)
            *is_new = 0;
        return 0;
    }
    enum stmt_id which = !exists ? S_ITEM_INSERT
                       : it->embedding || !same_sha ? S_ITEM_UPDATE_EMB
                                                    : S_ITEM_UPDATE_KEEP;
    if (!(s = lite__stmt(l, &l->w, which, err)))
        return -err->code;
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
        return lite__db_err(err, l->w.db, l->path, "write an item");
    *seqp = exists ? seq : sqlite3_last_insert_rowid(l->w.db);
    if (is_new)
        *is_new = !exists;
    return 0;
}

static int lite_put(struct store *st, const struct store_item *it, const char *md, int keep_same,
                    int *is_new, struct store_item *out, struct err *err)
{
    struct lite *l = BE(st);
    int own, rc;
    if ((rc = begin_write(st, &own, err)))
        return rc;
    int64_t seq = 0;
    if ((rc = put_row(st, it, md, keep_same, is_new, &seq, err)))
        return end_write(st, own, rc, err);
    if (out) { /* the row as written, inside the write transaction */
        sqlite3_stmt *s = lite__stmt(l, &l->w, S_ITEM_BY_SEQ, err);
        if (!s)
            return end_write(st, own, -err->code, err);
        sqlite3_bind_int64(s, 1, seq);
        int r = sqlite3_step(s);
        rc = r != SQLITE_ROW ? lite__db_err(err, l->w.db, l->path, "read the item back")
           : fill_item(st, s, 0, out) ? err_set(err, ERR_NOMEM, "no memory")
                                      : 0;
        sqlite3_reset(s);
    }
    return end_write(st, own, rc, err);
}

static int lite_put_embedding(struct store *st, const char *id, const float *v,
                              struct err *err)
{
    struct lite *l = BE(st);
    int own, rc;
    if ((rc = begin_write(st, &own, err)))
        return rc;
    sqlite3_stmt *s = lite__stmt(l, &l->w, S_ITEM_SET_EMB, err);
    if (!s)
        return end_write(st, own, -err->code, err);
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 2, v, st->dim * (int)sizeof(float), SQLITE_STATIC);
    sqlite3_bind_text(s, 3, st->model, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, (int64_t)time(NULL));
    int r = sqlite3_step(s);
    sqlite3_reset(s);
    if (r != SQLITE_DONE)
        rc = lite__db_err(err, l->w.db, l->path, "write an embedding");
    else if (sqlite3_changes(l->w.db) == 0)
        rc = err_set(err, ERR_NOT_FOUND, "no item '%s'", id);
    return end_write(st, own, rc, err);
}

static int lite_del(struct store *st, const char *id, struct err *err)
{
    struct lite *l = BE(st);
    int own, rc;
    if ((rc = begin_write(st, &own, err)))
        return rc;
    sqlite3_stmt *s = lite__stmt(l, &l->w, S_ITEM_DELETE, err);
    if (!s)
        return end_write(st, own, -err->code, err);
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    int r = sqlite3_step(s);
    sqlite3_reset(s);
    if (r != SQLITE_DONE)
        rc = lite__db_err(err, l->w.db, l->path, "delete an item");
    else if (sqlite3_changes(l->w.db) == 0)
        rc = err_set(err, ERR_NOT_FOUND, "no item '%s'", id);
    return end_write(st, own, rc, err);
}

/* ---- leased claims and the failed state (design 7, 8) -------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int lite_claim(struct store *st, const char *owner, int lease_s, int max,
                      struct store_item *a, size_t *k, int64_t *retry_ms, struct err *err)
{
    struct lite *l = BE(st);
    int own, rc;
    if ((rc = begin_write(st, &own, err)))
        return rc;
    int64_t now = now_ms();
    sqlite3_stmt *s = lite__stmt(l, &l->w, S_CLAIM, err);
    if (!s)
        return end_write(st, own, -err->code, err);
    sqlite3_bind_text(s, 1, owner, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, now);
    sqlite3_bind_int64(s, 3, (int64_t)lease_s * 1000);
    sqlite3_bind_int(s, 4, max);
    int r;
    while ((r = sqlite3_step(s)) == SQLITE_ROW && *k < (size_t)max) {
        if (fill_item(st, s, 0, &a[*k])) {
            rc = err_set(err, ERR_NOMEM, "no memory");
            break;
        }
        ++*k;
    }
    if (!rc && r != SQLITE_DONE && r != SQLITE_ROW)
        rc = lite__db_err(err, l->w.db, l->path, "claim waiting items");
    sqlite3_reset(s);
    if (!rc && !*k) { /* when does the first lease run out? */
        if (!(s = lite__stmt(l, &l->w, S_CLAIM_NEXT, err)))
            return end_write(st, own, -err->code, err);
        sqlite3_bind_int64(s, 1, now);
        if (sqlite3_step(s) == SQLITE_ROW) {
            int64_t left = lite__col_int_or(s, 0, -1);
            *retry_ms = sqlite3_column_type(s, 0) == SQLITE_NULL ? -1 : left < 1 ? 1 : left;
        } else
            rc = lite__db_err(err, l->w.db, l->path, "read the leases");
        sqlite3_reset(s);
    }
    return end_write(st, own, rc, err);
}

static int lite_renew(struct store *st, const char *owner, int lease_s, int64_t *n,
                      struct err *err)
{
    struct lite *l = BE(st);
    int own, rc;
    if ((rc = begin_write(st, &own, err)))
        return rc;
    sqlite3_stmt *s = lite__stmt(l, &l->w, S_RENEW, err);
    if (!s)
        return end_write(st, own, -err->code, err);
    sqlite3_bind_text(s, 1, owner, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, now_ms());
    sqlite3_bind_int64(s, 3, (int64_t)lease_s * 1000);
    int r = sqlite3_step(s);
    sqlite3_reset(s);
    if (r != SQLITE_DONE)
        rc = lite__db_err(err, l->w.db, l->path, "renew leases");
    else
        *n = sqlite3_changes(l->w.db);
    return end_write(st, own, rc, err);
}

static int lite_owners(struct store *st, int max, char **a, size_t *k, struct err *err)
{
    struct lite *l = BE(st);
    struct conn *c = lite__rconn(st);
    pthread_mutex_lock(&c->mu);
    int rc = 0, r = SQLITE_DONE;
    sqlite3_stmt *s = lite__stmt(l, c, S_OWNERS, err);
    if (!s)
        rc = -err->code;
    else
        sqlite3_bind_int(s, 1, max);
    while (!rc && (r = sqlite3_step(s)) == SQLITE_ROW && *k < (size_t)max)
        if (!(a[(*k)++] = lite__dup_col(s, 0)))
            rc = err_set(err, ERR_NOMEM, "no memory");
    if (!rc && r != SQLITE_DONE && r != SQLITE_ROW)
        rc = lite__db_err(err, c->db, l->path, "list lease owners");
    if (s)
        sqlite3_reset(s);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static int lite_set_failed(struct store *st, const char *id, const char *reason, int64_t size,
                           int64_t mtime, struct err *err)
{
    struct lite *l = BE(st);
    int own, rc;
    if ((rc = begin_write(st, &own, err)))
        return rc;
    sqlite3_stmt *s = lite__stmt(l, &l->w, S_SET_FAILED, err);
    if (!s)
        return end_write(st, own, -err->code, err);
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, reason, -1, SQLITE_STATIC);
    if (size >= 0)
        sqlite3_bind_int64(s, 3, size);
    if (mtime >= 0)
        sqlite3_bind_int64(s, 4, mtime);
    int r = sqlite3_step(s);
    sqlite3_reset(s);
    if (r != SQLITE_DONE)
        rc = lite__db_err(err, l->w.db, l->path, "mark an item failed");
    else if (sqlite3_changes(l->w.db) == 0)
        rc = err_set(err, ERR_NOT_FOUND, "no item '%s'", id);
    return end_write(st, own, rc, err);
}

static int lite_begin(struct store *st, struct err *err)
{
    struct lite *l = BE(st);
    pthread_mutex_lock(&l->w.mu);
    int rc = 0;
    if (atomic_load(&st->tx_open))
        rc = err_set(err, ERR_CONFLICT, "%s: a batch is already open", l->path);
    else if (!(rc = lite__exec(l, &l->w, "BEGIN IMMEDIATE", err))) {
        st->tx_owner = pthread_self();
        atomic_store(&st->tx_open, 1);
    }
    pthread_mutex_unlock(&l->w.mu);
    return rc;
}

static int lite_finish(struct store *st, int commit, struct err *err)
{
    struct lite *l = BE(st);
    pthread_mutex_lock(&l->w.mu);
    int rc = 0;
    if (!atomic_load(&st->tx_open))
        rc = err_set(err, ERR_CONFLICT, "%s: no batch is open", l->path);
    else {
        rc = lite__exec(l, &l->w, commit ? "COMMIT" : "ROLLBACK", err);
        if (rc)
            sqlite3_exec(l->w.db, "ROLLBACK", NULL, NULL, NULL);
        atomic_store(&st->tx_open, 0);
        lite__counts_refresh(st, &l->w);
    }
    pthread_mutex_unlock(&l->w.mu);
    return rc;
}

static int lite_reset(struct store *st, const char *model, int dim, struct err *err)
{
    struct lite *l = BE(st);
    int own, rc = begin_write(st, &own, err);
    if (rc)
        return rc;
    char buf[32];
    snprintf(buf, sizeof buf, "%d", dim);
    rc = lite__exec(l, &l->w, "UPDATE items SET embedding = NULL, model = NULL "
                        "WHERE embedding IS NOT NULL", err);
    if (!rc)
        rc = meta_put(l, &l->w, "model", model, err);
    if (!rc)
        rc = meta_put(l, &l->w, "dim", buf, err);
    return end_write(st, own, rc, err);
}

/* ---- reads ------------------------------------------------------------- */

/* Columns: seq, id, source, sha256, size, mtime, metadata, model,
 * created_at, updated_at, then embedding (blob) or has_embedding (int),
 * then (optionally) failed. */
static int fill_item(struct store *st, sqlite3_stmt *s, int with_blob, struct store_item *it)
{
    memset(it, 0, sizeof *it);
    it->seq = sqlite3_column_int64(s, 0);
    it->id = lite__dup_col(s, 1);
    it->source = lite__dup_col(s, 2);
    it->sha256 = lite__dup_col(s, 3);
    it->size = lite__col_int_or(s, 4, -1);
    it->mtime = lite__col_int_or(s, 5, -1);
    it->metadata = lite__dup_col(s, 6);
    it->model = lite__dup_col(s, 7);
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
    if (sqlite3_column_count(s) > 11 && sqlite3_column_type(s, 11) != SQLITE_NULL &&
        !(it->error = lite__dup_col(s, 11))) {
        store_item_clear(it);
        return -1;
    }
    if (!it->id || !it->metadata || (sqlite3_column_type(s, 2) != SQLITE_NULL && !it->source)) {
        store_item_clear(it);
        return -1;
    }
    return 0;
}

static int get_one(struct store *st, enum stmt_id id, const char *key, int with_blob,
                   struct store_item *out, const char *what, struct err *err)
{
    struct lite *l = BE(st);
    struct conn *c = lite__rconn(st);
    pthread_mutex_lock(&c->mu);
    int rc = 0;
    sqlite3_stmt *s = lite__stmt(l, c, id, err);
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
            rc = lite__db_err(err, c->db, l->path, "read an item");
        sqlite3_reset(s);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static int lite_get(struct store *st, const char *id, struct store_item *out, struct err *err)
{
    return get_one(st, S_ITEM_GET, id, 1, out, "id", err);
}

static int lite_find_source(struct store *st, const char *source, struct store_item *out,
                            struct err *err)
{
    return get_one(st, S_FIND_SOURCE, source, 0, out, "source", err);
}

static int lite_exists(struct store *st, const char *id, int64_t *seq, struct err *err)
{
    struct lite *l = BE(st);
    struct conn *c = lite__rconn(st);
    pthread_mutex_lock(&c->mu);
    int rc = 0;
    sqlite3_stmt *s = lite__stmt(l, c, S_ITEM_EXISTS, err);
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
            rc = lite__db_err(err, c->db, l->path, "look up an item");
        sqlite3_reset(s);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static int lite_list(struct store *st, int waiting, int64_t after, int max,
                     struct store_item *a, size_t *k, struct err *err)
{
    struct lite *l = BE(st);
    struct conn *c = lite__rconn(st);
    pthread_mutex_lock(&c->mu);
    int rc = 0;
    sqlite3_stmt *s = lite__stmt(l, c, waiting ? S_ITEM_WAITING : S_ITEM_LIST, err);
    if (!s)
        rc = -err->code;
    else {
        sqlite3_bind_int64(s, 1, after);
        sqlite3_bind_int(s, 2, max);
        int r;
        while ((r = sqlite3_step(s)) == SQLITE_ROW) {
            if (fill_item(st, s, 0, &a[*k])) {
                rc = err_set(err, ERR_NOMEM, "no memory");
                break;
            }
            ++*k;
        }
        if (!rc && r != SQLITE_DONE)
            rc = lite__db_err(err, c->db, l->path, "list items");
        sqlite3_reset(s);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static int lite_count(struct store *st, int which, int64_t *n, struct err *err)
{
    struct conn *c = lite__rconn(st);
    pthread_mutex_lock(&c->mu);
    enum stmt_id id = which == 2 ? S_COUNT_FAILED : which ? S_COUNT_WAITING : S_COUNT;
    int rc = lite__one_i64(BE(st), c, id, 0, n, "count items", err);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static const struct store_ops lite_ops = {
    .kind = "sqlite",
    .close = lite_close,
    .put = lite_put,
    .put_embedding = lite_put_embedding,
    .del = lite_del,
    .get = lite_get,
    .find_source = lite_find_source,
    .exists = lite_exists,
    .list = lite_list,
    .count = lite_count,
    .claim = lite_claim,
    .renew = lite_renew,
    .set_failed = lite_set_failed,
    .owners = lite_owners,
    .begin = lite_begin,
    .finish = lite_finish,
    .reset = lite_reset,
    .snap_begin = lite__snap_begin,
    .snap_end = lite__snap_end,
    .log_state = lite__log_state,
    .log_top = lite__log_top,
    .log_since = lite__log_since,
    .emb_by_seqs = lite__emb_by_seqs,
    .emb_all = lite__emb_all,
    .count_embedded = lite__count_embedded,
    .log_trim = lite__log_trim,
    .filter_seqs = lite__filter_seqs,
    .rows = lite__rows,
    .search = NULL,
    .index_kind = lite__index_kind,
};
