/* store_pg_conn.c - the PostgreSQL backend's connections: the pool, the
 * reconnect backoff, prepared statements, binary values (store_pg.c,
 * design 1, 2 and 7).
 */
#include <errno.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/store_pg_int.h"

#define BE(st) PG_BE(st)
#define FLOAT4OID 700 /* real, the element type of a binary real[] */

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
    /* at most 2 s: clients are told to retry after 1 s (Retry-After), and
     * a longer wait would fail their retries after the server is back */
    b->backoff_ms = wait * 2 > 2000 ? 2000 : wait * 2;
    b->gen++; /* the pool's other connections may be as dead as this one */
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

/* Connects or repairs c (not locked by anyone else). gen is pgbe.gen when
 * c was taken: a connection made before the server was last found gone is
 * reset even if libpq still calls it OK. After a restart of the server
 * every connection of the pool is dead, but libpq learns it only when a
 * query fails: without this, each one would fail a request (503) and start
 * a new backoff, one after another, long after the server is back. */
static int conn_ready(struct store *st, struct pconn *c, uint64_t gen, struct err *err)
{
    if (c->pg && c->gen == gen && PQstatus(c->pg) == CONNECTION_OK)
        return 0;
    c->gen = gen;
    if (c->pg) {
        PQreset(c->pg);
    } else {
        /* A server that does not answer (a host gone, packets dropped)
         * fails a connection in 10 s and a dead peer is noticed in about a
         * minute, where the system's TCP defaults wait minutes to hours.
         * They come before the URL, so the URL's own values win. */
        static const char *const keys[] = {"connect_timeout", "keepalives", "keepalives_idle",
                                           "keepalives_interval", "keepalives_count",
                                           "dbname", NULL};
        const char *vals[] = {"10", "1", "30", "10", "3", BE(st)->conninfo, NULL};
        c->pg = PQconnectdbParams(keys, vals, 1);
    }
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
    uint64_t gen = b->gen;
    pthread_mutex_unlock(&b->mu);
    int rc = conn_ready(st, c, gen, err);
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

int pg__get_conn(struct store *st, struct pconn **out, struct err *err)
{
    return get_conn_(st, out, 1, err);
}

/* A connection of the pool even for the batch's thread: committed data
 * (the index, searches). */
int pg__pool_conn(struct store *st, struct pconn **out, struct err *err)
{
    return get_conn_(st, out, 0, err);
}

void pg__put_conn(struct store *st, struct pconn *c)
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
int pg__res_err(struct store *st, struct pconn *c, PGresult *r, const char *what,
                   struct err *err)
{
    const char *sp = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *m = r ? PQresultErrorMessage(r) : PQerrorMessage(c->pg);
    char msg[300], st5[8] = "";
    snprintf(msg, sizeof msg, "%.*s", (int)strcspn(m, "\n"), m);
    if (sp)
        snprintf(st5, sizeof st5, "%s", sp);
    const char *state = sp ? st5 : NULL; /* copied: r is cleared next */
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
int pg__run_sql(struct store *st, struct pconn *c, const char *sql, struct err *err)
{
    PGresult *r = PQexec(c->pg, sql);
    if (PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK) {
        PQclear(r);
        return 0;
    }
    return pg__res_err(st, c, r, "run", err);
}

/* Runs prepared statement id with n text parameters (vals[i] may be NULL);
 * a parameter whose lens[i] > 0 is binary. Results are binary. *out gets
 * the result (PGRES_TUPLES_OK or COMMAND_OK), the caller clears it. */
int pg__run(struct store *st, struct pconn *c, enum pstmt id, int n, const char *const *vals,
               const int *lens, PGresult **out, struct err *err)
{
    char name[48];
    snprintf(name, sizeof name, "%s_%d", BE(st)->prefix, (int)id);
    *out = NULL;
    if (!(c->prepared >> id & 1)) {
        PGresult *p = PQprepare(c->pg, name, pg__sql[id], 0, NULL);
        const char *state = PQresultErrorField(p, PG_DIAG_SQLSTATE);
        if (PQresultStatus(p) != PGRES_COMMAND_OK && !(state && !strcmp(state, "42P05")))
            return pg__res_err(st, c, p, "prepare", err);
        PQclear(p);
        c->prepared |= 1ull << id;
    }
    int fmts[16];
    for (int i = 0; i < n; i++)
        fmts[i] = lens && lens[i] > 0;
    PGresult *r = PQexecPrepared(c->pg, name, n, vals, lens, fmts, 1);
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK)
        return pg__res_err(st, c, r, "query", err);
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

uint32_t pg__be32(const char *p)
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

int64_t pg__col_i64(PGresult *r, int row, int col, int64_t dflt)
{
    if (PQgetisnull(r, row, col))
        return dflt;
    return PQgetlength(r, row, col) == 8 ? be64(PQgetvalue(r, row, col)) : dflt;
}

char *pg__col_str(PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return NULL;
    return strndup(PQgetvalue(r, row, col), (size_t)PQgetlength(r, row, col));
}

/* A binary real[] of dim floats (the buffer is 20 + 8 * dim bytes). */
char *pg__vec_param(const float *v, int dim, int *len)
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
int pg__vec_col(PGresult *r, int row, int col, int dim, float *v)
{
    if (PQgetisnull(r, row, col))
        return 0;
    const char *p = PQgetvalue(r, row, col);
    int len = PQgetlength(r, row, col);
    if (len != 20 + 8 * dim || pg__be32(p) != 1 || pg__be32(p + 12) != (uint32_t)dim)
        return 0;
    for (int i = 0; i < dim; i++) {
        if (pg__be32(p + 20 + 8 * i) != 4)
            return 0;
        uint32_t u = pg__be32(p + 24 + 8 * i);
        memcpy(&v[i], &u, 4);
    }
    return store__valid_vec(v, dim);
}

/* "{1,2,3}": a bigint[] parameter (digits only). */
char *pg__seq_array(const int64_t *seqs, size_t n)
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

int pg__cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

void pg__i64s(char *buf, int64_t v) { snprintf(buf, 24, "%lld", (long long)v); }

