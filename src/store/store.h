/* store.h - the store: items, embeddings and metadata, and search.
 *
 * An item has a user id, a source (path or URL), the file's sha256, size
 * and mtime (for incremental indexing), a metadata JSON object, and a
 * float32 embedding of the store's dimension made by the store's model
 * (NULL while the item waits for it). The store knows nothing about how
 * embeddings are made.
 *
 * Backends (store_open's target picks one):
 *  - a file path: the embedded store, one SQLite database (WAL). An HNSW
 *    index kept in PATH.hnsw serves searches; the index is loaded on the
 *    first search (not on open: listing a store does not read it); a
 *    missing, corrupt, foreign or stale index file is rebuilt or caught up
 *    from the database's changes log, which SQLite triggers fill on every
 *    change of an embedding, so even changes made with the sqlite3 shell
 *    are seen. store_close (and store_index_sync) write the index file
 *    back when it changed.
 *  - a postgres:// or postgresql:// URL (libpq's syntax): PostgreSQL.
 *    With the pgvector extension, embeddings are a vector(D) column and
 *    pgvector's HNSW or IVFFlat index serves searches (D <= 2,000, the
 *    largest dimension pgvector indexes; above it the local index serves).
 *    Without it, embeddings are real[] and each process searches an
 *    in-memory HNSW index caught up from a changes table that a trigger
 *    fills: the same mechanism as the embedded store, with no file.
 *    store_index_kind says which serves. While the server is unreachable
 *    calls fail at once with ERR_UNAVAILABLE (HTTP 503) and the store
 *    reconnects by itself, with backoff.
 *
 * The database is the source of truth.
 *
 * Threads: one struct store may be shared by threads. The embedded store
 * holds two SQLite connections, one for writes and one for reads, each
 * behind a mutex; PostgreSQL a pool of connections (store_options.pool);
 * a rwlock guards the in-memory index: searches from many threads run
 * together and see committed data; writes go one at a time. A batch
 * (store_begin .. store_commit) belongs to the thread that began it: its
 * reads see its own uncommitted writes, other threads see none of them,
 * and only one thread may run a batch at a time (others' writes would
 * join it). Searches see a batch's items once it commits. Several
 * processes may open one store (SQLite WAL, or one PostgreSQL database);
 * each catches its index up from the changes log before searching.
 */
#ifndef IMGSEARCH_STORE_H
#define IMGSEARCH_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define STORE_ID_MAX 1024         /* bytes in an item id */
#define STORE_SOURCE_MAX 4096     /* bytes in a source */
#define STORE_METADATA_MAX 65536  /* bytes of metadata JSON */
#define STORE_METADATA_DEPTH_MAX 32 /* nesting of metadata JSON (the object is 1) */
#define STORE_MODEL_MAX 256       /* bytes in a model id */
#define STORE_DIM_MAX 16384       /* embedding dimension (the local HNSW index) */
#define STORE_PGVECTOR_DIM_MAX 2000 /* largest dimension pgvector's indexes take */
#define STORE_K_MAX 10000         /* k + offset of one search */
#define STORE_FILTERS_MAX 16      /* filters of one search */
#define STORE_VEC_MIN_NORM 1e-30  /* smallest L2 norm of a stored or query vector */
#define STORE_SCHEMA_VERSION 1

struct store;

struct store_options {
    const char *model; /* model id; required to create, checked on open (NULL: any) */
    int dim;           /* embedding dimension; required to create, checked (0: any) */
    int create;        /* create the database when it does not exist */
    const char *former_model; /* the id earlier versions gave the same weights
                        * (clip_model_former_id; NULL: none): an embedded
                        * store made under it takes model on open */
    int hnsw_m;        /* index M (0: 16) */
    int ef_construction; /* (0: 64) */
    int ef_search;     /* default search width (0: 100) */
    /* PostgreSQL only */
    const char *index; /* "hnsw" (NULL: default) or "ivfflat": the pgvector index */
    int lists;         /* IVFFlat lists (0: 100) */
    int probes;        /* IVFFlat probes per search (0: 10) */
    int pool;          /* connections (0: 4) */
    int no_migrate;    /* do not create or upgrade the schema, nor convert to
                        * pgvector or rebuild its index: a missing or older
                        * schema is ERR_UNSUPPORTED_FORMAT ("run imgsearch
                        * migrate --store ...") */
    int no_vector;     /* do not use pgvector even when it is there (tests of
                        * the fallback; IMGSEARCH_PG_NO_VECTOR=1 too) */
};

/* Whether target is a PostgreSQL URL (postgres:// or postgresql://). */
int store_is_url(const char *target);

/* Opens (or creates) the store at path (a file path or a PostgreSQL URL). A store made with another model id
 * or dimension is ERR_MODEL_MISMATCH, naming both (store_reset_embeddings
 * switches models). A database from a newer imgsearch is ERR_UNSUPPORTED_FORMAT;
 * a file that is not a store is ERR_CORRUPT; a missing one without
 * o->create is ERR_NOT_FOUND. Removes the PATH.hnsw.tmp.PID files of index
 * saves whose process died before renaming them (PID not alive). */
int store_open(struct store **out, const char *path, const struct store_options *o,
               struct err *err);

/* Writes the index file if it changed, then frees st (NULL: no-op). Returns
 * the error of that write; st is freed either way. */
int store_close(struct store *st, struct err *err);

/* Loads (or rebuilds) the index, catches it up, and writes the index file
 * if it changed: what an indexer calls when it is done. */
int store_index_sync(struct store *st, struct err *err);

/* Clears every embedding and makes (model, dim) the store's model, for a
 * reindex with another model. Deletes the index file. */
int store_reset_embeddings(struct store *st, const char *model, int dim, struct err *err);

/* The model id and dimension (owned by st). */
const char *store_model(const struct store *st);
int store_dim(const struct store *st);
/* "sqlite" or "postgresql"; the path or URL (its password hidden). */
const char *store_kind(const struct store *st);
const char *store_name(const struct store *st);
/* Which index serves searches: "local-hnsw" (the in-memory HNSW index),
 * "pgvector-hnsw" or "pgvector-ivfflat" (static strings). */
const char *store_index_kind(struct store *st);

struct store_item {
    int64_t seq;         /* store's sequence number (the index label); 0 unknown */
    char *id;            /* user id, required, 1..STORE_ID_MAX bytes */
    char *source;        /* path or URL, or NULL */
    char *sha256;        /* hex digest of the source's bytes, or NULL */
    int64_t size;        /* bytes, -1 unknown */
    int64_t mtime;       /* seconds since the epoch, -1 unknown */
    char *metadata;      /* JSON object; NULL on put means "{}" */
    float *embedding;    /* dim floats, or NULL (waiting) */
    char *model;         /* model of the embedding (read only), or NULL */
    int64_t created_at;  /* seconds since the epoch (read only) */
    int64_t updated_at;  /* seconds since the epoch (read only) */
    int has_embedding;   /* read only: 1 when an embedding is stored */
    char *error;         /* read only: why it could not be embedded (the
                            failed state, store_set_failed), or NULL */
};

/* Frees the strings and embedding of an item filled by the store and zeroes
 * it; the struct itself is the caller's. */
void store_item_clear(struct store_item *it);
/* Clears n items and frees the array (from store_list / store_waiting). */
void store_items_free(struct store_item *items, size_t n);

/* Inserts it, or replaces the item with the same id (keeping its seq and
 * created_at). With it->embedding the embedding is set (made by the store's
 * model); without, a new item waits for one and a replaced item keeps its
 * embedding only if its sha256 is unchanged and not NULL. *is_new (may be
 * NULL) gets 1 for an insert. Bad ids, sizes or metadata (not a JSON
 * object, nested over STORE_METADATA_DEPTH_MAX) are ERR_INVALID_ARGUMENT,
 * an embedding that is not finite or whose norm is under
 * STORE_VEC_MIN_NORM too; an id, source or metadata that is not valid
 * UTF-8 is ERR_INVALID_UTF8. */
int store_put(struct store *st, const struct store_item *it, int *is_new,
              struct err *err);

/* store_put, then fills out (caller-owned, store_item_clear) with the row
 * as written, without the embedding (has_embedding says), read inside the
 * same write transaction: what a caller reports even when another thread
 * deletes the item the moment the write commits. On error out is zeroed. */
int store_put_get(struct store *st, const struct store_item *it, int *is_new,
                  struct store_item *out, struct err *err);

/* store_put for a scan that registers a file as a waiting item (no
 * embedding): when item it->id exists with the same source, size and mtime,
 * it is left as it is (another process's scan registered it, and may have
 * embedded it since); otherwise store_put. Several processes scanning one
 * catalog into one store thus register each file once and never undo each
 * other's embeddings. *is_new as store_put's; ERR_INVALID_ARGUMENT when it
 * has an embedding. */
int store_register(struct store *st, const struct store_item *it, int *is_new,
                   struct err *err);

/* Sets the embedding (dim floats) of item id; ERR_NOT_FOUND if absent. */
int store_put_embedding(struct store *st, const char *id, const float *v,
                        struct err *err);

/* Fills out (with the embedding) for item id; ERR_NOT_FOUND if absent. */
int store_get(struct store *st, const char *id, struct store_item *out,
              struct err *err);

/* Whether item id exists, without reading its embedding or metadata: 1
 * when present (*seq, may be NULL, gets its seq), 0 when absent (*seq and
 * err untouched), a negative error code otherwise (ERR_INVALID_ARGUMENT for
 * a bad id). Sees the caller's own open batch, like store_get. */
int store_exists(struct store *st, const char *id, int64_t *seq, struct err *err);

/* Deletes item id; ERR_NOT_FOUND if absent. */
int store_delete(struct store *st, const char *id, struct err *err);

/* Items with seq > after, in seq order, at most limit (1..10000), without
 * embeddings (has_embedding says). *items is malloc'd (store_items_free);
 * *next gets the seq to pass as `after` for the next page, or 0 when no
 * item follows this page (a full page that ends the list included). */
int store_list(struct store *st, int64_t after, int limit, struct store_item **items,
               size_t *n, int64_t *next, struct err *err);

/* Same as store_list, for the items that wait for an embedding. */
int store_waiting(struct store *st, int64_t after, int limit, struct store_item **items,
                  size_t *n, int64_t *next, struct err *err);

/* Items, items without an embedding, and failed items (store_set_failed):
 * one row kept by triggers (the embedded store's schema 2, the failed count
 * from 3; PostgreSQL's 1 and 2), so counting costs the same for any number
 * of items. */
int store_count(struct store *st, int64_t *n, struct err *err);
int store_count_waiting(struct store *st, int64_t *n, struct err *err);
int store_count_failed(struct store *st, int64_t *n, struct err *err);

/* The counts as of this process's last commit or count, without touching
 * the database or taking a lock: for a thread that must not wait (a poll
 * thread answering /health). Another process's writes show up at this
 * process's next commit or count. -1 when never read. */
void store_counts_cached(struct store *st, int64_t *items, int64_t *waiting);
int64_t store_failed_cached(struct store *st);

/* ---- leased claims: several processes share the waiting items ----------
 *
 * A process that embeds waiting items claims a few at a time for an owner
 * (a string unique to it: host, pid and a random part) with a lease that
 * expires. A claimed item is not claimed again (by anyone) until its lease
 * expires, so processes sharing a store embed each item once; the items
 * of a process that dies are claimed again by the others once its lease
 * runs out. Writing an embedding (store_put with one, store_put_embedding)
 * ends the lease. Lease times are the database's clock (PostgreSQL) or
 * the machine's (the embedded store). */

#define STORE_OWNER_MAX 256   /* bytes in a claim owner */
#define STORE_LEASE_MAX 86400 /* seconds of a lease */

/* Claims up to limit (1..10000) waiting items, oldest first: items without
 * an embedding, not failed (store_set_failed), and not leased (no lease, or
 * one that expired; an owner's own lease counts too: an owner claims an
 * item once per lease). Each gets a lease of lease_seconds
 * (1..STORE_LEASE_MAX) for owner. *items (seq order, without embeddings;
 * store_items_free) and *n get them. When none is claimed, *retry_ms (may
 * be NULL) gets the milliseconds until the first lease on a waiting item
 * runs out (a claim may then find it), or -1 when no item waits but failed
 * ones; otherwise 0. One statement: concurrent claims never share an item
 * (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: the write transaction). */
int store_claim_waiting(struct store *st, const char *owner, int lease_seconds, int limit,
                        struct store_item **items, size_t *n, int64_t *retry_ms,
                        struct err *err);

/* Renews the leases owner holds on waiting items to lease_seconds from now
 * (a live owner keeps its claims while it works through them), or, with
 * lease_seconds 0, releases them (a stopping owner gives its claims back at
 * once). *n (may be NULL) gets how many. */
int store_claims_renew(struct store *st, const char *owner, int lease_seconds, int64_t *n,
                       struct err *err);

/* The owners that hold leases on waiting items (expired ones included),
 * each once: *owners is malloc'd, n strings (store_owners_free). What a
 * process that knows the owners' naming does to give back the claims of
 * owners it knows are dead (store_claims_renew with 0). */
int store_claim_owners(struct store *st, char ***owners, size_t *n, struct err *err);
void store_owners_free(char **owners, size_t n);

/* The failed state: item id could not be embedded, for reason (a message,
 * at most ERR_MSG_MAX bytes kept), when its file had size and mtime (-1:
 * unknown). A failed item is not claimed again; it shows its reason in
 * store_item.error, and counts in store_count_failed. The state ends when
 * an embedding is written, or when a put (a scan that saw the file change)
 * writes another size or mtime than those at failure. ERR_NOT_FOUND if
 * absent. Ends the item's lease. */
int store_set_failed(struct store *st, const char *id, const char *reason, int64_t size,
                     int64_t mtime, struct err *err);

/* The item whose source is `source` (the oldest if several), without its
 * embedding: an indexer compares size, mtime and sha256 to skip unchanged
 * files. ERR_NOT_FOUND if none. */
int store_find_source(struct store *st, const char *source, struct store_item *out,
                      struct err *err);

/* key=value equality on a top-level metadata field: a JSON string equal to
 * value, a number equal to value read as a number ("3" matches 3 and 3.0),
 * or true/false/null spelled as value. Several filters are ANDed. */
struct store_filter {
    const char *key;   /* top-level field name */
    const char *value; /* as text */
};

struct store_query {
    const float *vec;  /* dim floats; need not be normalised */
    int k;             /* hits wanted, 1.. */
    int offset;        /* hits to skip (paging); k + offset <= STORE_K_MAX */
    float min_score;   /* drop hits below this cosine (-1: none) */
    const struct store_filter *filters; /* n_filters filters, or NULL */
    int n_filters;     /* 0..STORE_FILTERS_MAX */
    int ef;            /* search width, 0: the store's default */
};

struct store_hit {
    int64_t seq;    /* item seq */
    char *id;       /* user id */
    float score;    /* cosine similarity */
    char *source;   /* or NULL */
    char *metadata; /* JSON object text */
};

/* Best matches first. With filters the result still has k hits whenever k
 * matching items exist (the index falls back to an exact scan over the
 * matching items when the filter is selective). *hits is malloc'd
 * (store_hits_free). */
int store_search(struct store *st, const struct store_query *q, struct store_hit **hits,
                 size_t *n, struct err *err);
void store_hits_free(struct store_hit *hits, size_t n);

struct store_dup_member {
    char *id;     /* user id */
    char *source; /* or NULL */
    float score;  /* best cosine to another member of the group */
};

struct store_dup_group {
    size_t n;                         /* members, >= 2 */
    struct store_dup_member *members; /* sorted by id */
    float max_score;                  /* best pair score in the group */
};

/* Groups of near-duplicates: the connected components of the pairs with
 * cosine >= threshold, the pairs found through the index (each item's
 * nearest neighbours). Groups come largest first. Costs one index search
 * per item. */
int store_duplicates(struct store *st, float threshold, struct store_dup_group **groups,
                     size_t *n, struct err *err);
void store_dup_groups_free(struct store_dup_group *g, size_t n);

/* A write transaction (BEGIN IMMEDIATE) for a batch of puts; commit makes
 * them visible to searches. Nested begin is ERR_CONFLICT. */
int store_begin(struct store *st, struct err *err);
int store_commit(struct store *st, struct err *err);
int store_rollback(struct store *st, struct err *err);

enum store_index_origin {
    STORE_INDEX_NOT_LOADED = 0, /* no search yet */
    STORE_INDEX_FILE = 1,       /* loaded from PATH.hnsw (then caught up) */
    STORE_INDEX_REBUILT = 2,    /* built from the database */
};

struct store_index_info {
    enum store_index_origin origin; /* where the in-memory index came from */
    char reason[256];   /* why it was rebuilt ("" otherwise) */
    int64_t caught_up;  /* changes applied after loading the file */
    size_t items;       /* live items in the index */
    size_t tombstones;  /* deleted nodes not yet compacted */
    int64_t covered;    /* last change (changes log seq) the index covers */
};

/* What the index is doing, for tests and `imgsearch info`. */
void store_index_info(struct store *st, struct store_index_info *out);

#endif
