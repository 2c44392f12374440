/* store_sqlite_int.h - what the two files of the embedded backend share:
 * store_sqlite.c (open, schema, writes, claims, reads, the ops table) and
 * store_sqlite_index.c (what the local index and searches read: the
 * changes log, embeddings by seq, filters, hit rows). */
#ifndef IMGSEARCH_STORE_SQLITE_INT_H
#define IMGSEARCH_STORE_SQLITE_INT_H

#include <sqlite3.h>

#include "store/store_int.h"

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
    S_MAX_CSEQ,
    S_CHANGES_SINCE,
    S_EMB_BY_SEQ,
    S_HIT_BY_SEQ,
    S_TRIM,
    S_TRIMMED,
    S_COUNT_EMB,
    S_ALL_EMB,
    S_MAX_SEQ,
    S_ITEM_EXISTS,
    S_ITEM_BY_SEQ,
    S_COUNTS,
    S_COUNT_FAILED,
    S_CLAIM,
    S_CLAIM_NEXT,
    S_RENEW,
    S_SET_FAILED,
    S_OWNERS,
    S_COUNT_
};

struct conn {
    sqlite3 *db;                   /* connection */
    pthread_mutex_t mu;            /* guards db and st */
    sqlite3_stmt *st[S_COUNT_];    /* prepared lazily */
};

struct lite {
    char *path;  /* database path */
    struct conn w; /* write connection */
    struct conn r; /* read connection */
};

#define BE(st) ((struct lite *)(st)->be)

/* ---- helpers (store_sqlite.c) ---- */
/* err from SQLite's last error on db: "PATH: WHAT: message". */
int lite__db_err(struct err *err, sqlite3 *db, const char *path, const char *what);
/* The cached prepared statement id of connection c (reset, unbound). */
sqlite3_stmt *lite__stmt(struct lite *l, struct conn *c, enum stmt_id id, struct err *err);
int lite__exec(struct lite *l, struct conn *c, const char *sql, struct err *err);
/* Statement id with one int64 argument whose one row is an int64. */
int lite__one_i64(struct lite *l, struct conn *c, enum stmt_id id, int64_t arg, int64_t *out,
                  const char *what, struct err *err);
/* A text column, malloc'd (NULL for NULL). */
char *lite__dup_col(sqlite3_stmt *s, int i);
int lite__meta_get(struct lite *l, struct conn *c, const char *key, char **out,
                   struct err *err);

/* ---- the local index's source and search (store_sqlite_index.c): the
 * ops of the same names in store_int.h ---- */
int lite__snap_begin(struct store *st, struct err *err);
void lite__snap_end(struct store *st);
int lite__log_state(struct store *st, int64_t *top, int64_t *trimmed, struct err *err);
int lite__log_top(struct store *st, int64_t *top, struct err *err);
int lite__log_since(struct store *st, int64_t cov, int64_t **out, size_t *n, struct err *err);
int lite__emb_by_seqs(struct store *st, const int64_t *seqs, size_t n, float *v,
                      unsigned char *ok, struct err *err);
int lite__emb_all(struct store *st, store__emb_fn fn, void *ctx, struct err *err);
int lite__count_embedded(struct store *st, int64_t *n, struct err *err);
int lite__log_trim(struct store *st, int64_t covered, struct err *err);
int lite__filter_seqs(struct store *st, const struct store_filter *f, int nf,
                      struct store_bitmap *bm, struct err *err);
int lite__rows(struct store *st, struct store_hit *hits, size_t n, struct err *err);
const char *lite__index_kind(struct store *st);

#endif
