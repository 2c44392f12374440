/* store_int.h - what the shared store layer (store.c) and its backends
 * (store_sqlite.c, store_pg.c) share: the struct store, and the operations
 * table each backend fills, in the manner of SQLite's sqlite3_io_methods.
 *
 * The shared layer validates every argument (ids, sizes, UTF-8, metadata
 * with jansson, vectors, queries) before a backend sees it, trims results
 * (offset, min_score, non-finite scores), keeps the local HNSW index caught
 * up from the backend's changes log, and groups duplicates. A backend keeps
 * only its storage: rows, the changes log its triggers fill, and,
 * optionally, an ANN search of its own (pgvector).
 *
 * Backend functions are called without any lock of the shared layer held,
 * except the log_* / emb_* ones, which run under idx_lock (for writing)
 * between snap_begin and snap_end. Each backend locks its own connections.
 */
#ifndef IMGSEARCH_STORE_INT_H
#define IMGSEARCH_STORE_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "store/hnsw.h"
#include "store/store.h"

struct store_bitmap {
    uint64_t *w;   /* bits */
    int64_t nbits; /* seqs 0 .. nbits-1 */
};

/* Called for each stored embedding (emb_all); nonzero stops with that code. */
typedef int (*store__emb_fn)(int64_t seq, const float *v, void *ctx);

struct store_ops {
    const char *kind; /* "sqlite", "postgresql" */
    void (*close)(struct store *st);
    /* it is validated; md is the metadata text to store ("{}" for none);
     * out (may be NULL) gets the row as written, without the embedding;
     * keep_same: store_register's rule (an existing row with the same
     * source, size and mtime is left alone, *is_new 0). A put with an
     * embedding ends the failed state and the lease; one without ends the
     * failed state when size or mtime differ from those at failure. */
    int (*put)(struct store *st, const struct store_item *it, const char *md, int keep_same,
               int *is_new, struct store_item *out, struct err *err);
    int (*put_embedding)(struct store *st, const char *id, const float *v, struct err *err);
    int (*del)(struct store *st, const char *id, struct err *err);
    /* by id (with the embedding) or by source (without) */
    int (*get)(struct store *st, const char *id, struct store_item *out, struct err *err);
    int (*find_source)(struct store *st, const char *source, struct store_item *out,
                       struct err *err);
    int (*exists)(struct store *st, const char *id, int64_t *seq, struct err *err);
    /* up to max rows with seq > after (waiting: only those without an
     * embedding) into a[], *k of them */
    int (*list)(struct store *st, int waiting, int64_t after, int max, struct store_item *a,
                size_t *k, struct err *err);
    /* which: 0 items, 1 waiting, 2 failed */
    int (*count)(struct store *st, int which, int64_t *n, struct err *err);
    /* store_claim_waiting (arguments checked): up to max rows into a[] (in
     * any order), *k of them; *retry_ms as store.h says */
    int (*claim)(struct store *st, const char *owner, int lease_s, int max, struct store_item *a,
                 size_t *k, int64_t *retry_ms, struct err *err);
    /* store_claims_renew (lease_s 0: release) */
    int (*renew)(struct store *st, const char *owner, int lease_s, int64_t *n, struct err *err);
    /* store_claim_owners: up to max distinct owners into a[], *k of them */
    int (*owners)(struct store *st, int max, char **a, size_t *k, struct err *err);
    /* store_set_failed (reason at most ERR_MSG_MAX bytes; -1: unknown) */
    int (*set_failed)(struct store *st, const char *id, const char *reason, int64_t size,
                      int64_t mtime, struct err *err);
    int (*begin)(struct store *st, struct err *err);
    int (*finish)(struct store *st, int commit, struct err *err);
    int (*reset)(struct store *st, const char *model, int dim, struct err *err);
    /* ---- the local index's source (idx_lock held for writing) ---- */
    int (*snap_begin)(struct store *st, struct err *err); /* a consistent read */
    void (*snap_end)(struct store *st);
    /* the last change in the log, and how far it was trimmed */
    int (*log_state)(struct store *st, int64_t *top, int64_t *trimmed, struct err *err);
    /* the last change, outside a snapshot (any thread, any time) */
    int (*log_top)(struct store *st, int64_t *top, struct err *err);
    /* the distinct seqs changed after cov, ascending (*seqs malloc'd) */
    int (*log_since)(struct store *st, int64_t cov, int64_t **seqs, size_t *n,
                     struct err *err);
    /* the embeddings of seqs[0..n): v is n x dim, ok[i] 1 when seqs[i] has a
     * usable one */
    int (*emb_by_seqs)(struct store *st, const int64_t *seqs, size_t n, float *v,
                       unsigned char *ok, struct err *err);
    int (*emb_all)(struct store *st, store__emb_fn fn, void *ctx, struct err *err);
    int (*count_embedded)(struct store *st, int64_t *n, struct err *err);
    /* drops the log up to covered (after the index file is written); NULL:
     * the backend keeps its log */
    int (*log_trim)(struct store *st, int64_t covered, struct err *err);
    /* ---- search ---- */
    /* the seqs of embedded items that pass every filter, as a bitmap */
    int (*filter_seqs)(struct store *st, const struct store_filter *f, int nf,
                       struct store_bitmap *bm, struct err *err);
    /* id, source and metadata of hits[0..n) by hits[i].seq, in ONE round
     * trip; a hit whose row is gone keeps id NULL */
    int (*rows)(struct store *st, struct store_hit *hits, size_t n, struct err *err);
    /* ANN search in the database: at least the want = k + offset best
     * candidates with their rows and stored vectors (*vecs, n x dim,
     * malloc'd), which store.c scores and ranks by the local index's rule;
     * NULL, or a return of 1, when the local index serves */
    int (*search)(struct store *st, const struct store_query *q, size_t want,
                  struct store_hit **hits, float **vecs, size_t *n, struct err *err);
    /* which index serves searches */
    const char *(*index_kind)(struct store *st);
};

struct store {
    const struct store_ops *ops; /* the backend */
    void *be;                 /* the backend's state */
    char *name;               /* path, or the URL without its password (messages) */
    char *index_path;         /* PATH.hnsw, or NULL: the index lives in memory only */
    char *model;              /* model id */
    int dim;                  /* embedding dimension */
    uint64_t db_id;           /* random id of this database (index tag) */
    struct hnsw_params hp;    /* index parameters */
    atomic_int tx_open;       /* a batch is open */
    pthread_t tx_owner;       /* thread that opened it */
    pthread_rwlock_t idx_lock; /* guards idx and the fields below */
    struct hnsw *idx;         /* in-memory index, NULL until needed */
    int64_t saved_covered;    /* covered value of the file on disk (-1: none) */
    struct store_index_info info; /* origin, reason, counters */
    _Atomic int64_t n_items;  /* items at the last commit or count seen (-1: unknown) */
    _Atomic int64_t n_waiting; /* of those, without an embedding */
    _Atomic int64_t n_failed; /* of those, failed (store_set_failed) */
};

/* Whether the calling thread runs the open batch. */
int store__in_batch(const struct store *st);

/* A vector the index can normalise in float32 (finite, norm >=
 * STORE_VEC_MIN_NORM). */
int store__valid_vec(const float *v, int dim);

/* Catches the local index up and returns with idx_lock held for reading
 * and st->idx set (store.c); the caller unlocks. */
int store__lock_current_index(struct store *st, struct err *err);

/* A fresh random database id (63 bits). */
uint64_t store__new_db_id(void);

/* The backends' open functions: fill st->be, model, dim, db_id (and
 * index_path for a file store); st->name and st->hp are set. */
int store__sqlite_open(struct store *st, const char *path, const struct store_options *o,
                       struct err *err);
int store__pg_open(struct store *st, const char *url, const struct store_options *o,
                   struct err *err);

#endif
