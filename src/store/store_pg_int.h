/* store_pg_int.h - what the files of the PostgreSQL backend share
 * (store_pg.c: schema, writes, reads, the index's source; store_pg_conn.c:
 * the pool, statements, binary values; store_pg_search.c: filters and
 * pgvector search). Design notes are at the top of store_pg.c. */
#ifndef IMGSEARCH_STORE_PG_INT_H
#define IMGSEARCH_STORE_PG_INT_H

#include <libpq-fe.h>

#include "store/store_int.h"

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
    P_CLAIM,
    P_CLAIM_NEXT,
    P_RENEW,
    P_SET_FAILED,
    P_OWNERS,
    P_COUNT_
};

/* The SQL of each prepared statement (store_pg.c). */
extern const char *const pg__sql[P_COUNT_];

struct pconn {
    PGconn *pg;        /* NULL until first used */
    uint64_t prepared; /* bit i: statement i prepared on this connection */
    int busy;          /* handed out (pool mutex) */
    uint64_t gen;      /* pgbe.gen when it was (re)connected */
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
    uint64_t gen;          /* bumped each time the server is found gone: a
                            * connection older than that is reset before use */
    struct pconn *batch;   /* held by the open batch */
    struct pconn *snap;    /* held between snap_begin and snap_end */
    int vector;            /* the column is vector(D) */
    int ivfflat;           /* the pgvector index is IVFFlat (else HNSW) */
    int iterative;         /* pgvector >= 0.8: iterative index scans */
    int probes;            /* IVFFlat probes per search */
};

#define PG_BE(st) ((struct pgbe *)(st)->be)

/* A connection for the calling thread: the batch's own when it runs the
 * batch, else one of the pool; pool_conn: one of the pool even for the
 * batch's thread (committed data). Give it back with put_conn. While the
 * server is down: ERR_UNAVAILABLE at once. */
int pg__get_conn(struct store *st, struct pconn **out, struct err *err);
int pg__pool_conn(struct store *st, struct pconn **out, struct err *err);
void pg__put_conn(struct store *st, struct pconn *c);
/* The error of failed result r (cleared); a lost connection starts the
 * backoff and is ERR_UNAVAILABLE. */
int pg__res_err(struct store *st, struct pconn *c, PGresult *r, const char *what,
                struct err *err);
/* A statement without parameters (BEGIN, COMMIT, DDL). */
int pg__run_sql(struct store *st, struct pconn *c, const char *sql, struct err *err);
/* Prepared statement id, n parameters (lens[i] > 0: binary), binary
 * results into *out (the caller clears it). */
int pg__run(struct store *st, struct pconn *c, enum pstmt id, int n, const char *const *vals,
            const int *lens, PGresult **out, struct err *err);

/* Binary values: big-endian integers, real[] (20 + 8 * dim bytes). */
uint32_t pg__be32(const char *p);
int64_t pg__col_i64(PGresult *r, int row, int col, int64_t dflt);
char *pg__col_str(PGresult *r, int row, int col);
char *pg__vec_param(const float *v, int dim, int *len);
int pg__vec_col(PGresult *r, int row, int col, int dim, float *v);
char *pg__seq_array(const int64_t *seqs, size_t n);
void pg__i64s(char *buf, int64_t v);
int pg__cmp_i64(const void *a, const void *b);

/* store_pg_search.c: the ops of the same names (store_int.h). */
int pg__filter_seqs(struct store *st, const struct store_filter *f, int nf,
                    struct store_bitmap *bm, struct err *err);
int pg__rows(struct store *st, struct store_hit *hits, size_t n, struct err *err);
int pg__search(struct store *st, const struct store_query *q, size_t want,
               struct store_hit **hits, float **vecs, size_t *n, struct err *err);

#endif
