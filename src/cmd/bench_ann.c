/* bench_ann.c - `imgsearch bench ann`: builds an HNSW index over a base set
 * and measures recall@10 against exact truth, queries per second and p99
 * latency per ef_search, plus the exact scan's speed and the peak RSS.
 * Queries run one at a time on one thread (the latency a request sees).
 *
 * With --store (repeatable) it measures stores instead, each through the
 * store interface as its callers see it (store_put in batches of 1,000,
 * then store_search): the embedded store (a file path) and PostgreSQL (a
 * URL: pgvector's index, or the local index without pgvector) on the same
 * vectors in the same run, so their figures compare. A store already
 * holding exactly the base's rows is searched without loading again.
 */
#include "cmd/bench_ann.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd/cmd.h"
#include "store/hnsw.h"
#include "store/store.h"
#include "store/vec.h"
#include "util/clock.h"

#define CMD "bench ann"
#define TRUTH_K 100
#define MAX_EFS 32
#define MAX_STORES 8
#define LOAD_BATCH 1000 /* rows per transaction when loading a store */

static int read_all(const char *path, size_t unit, void **out, size_t *count, struct err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(err, err_code_of_errno(errno, 1), "%s: cannot open: %s", path,
                       strerror(errno));
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (sz <= 0 || (size_t)sz % unit) {
        fclose(f);
        return err_set(err, ERR_INVALID_ARGUMENT, "%s: %ld bytes is not a multiple of %zu",
                       path, sz, unit);
    }
    void *p = malloc((size_t)sz);
    if (!p || fread(p, 1, (size_t)sz, f) != (size_t)sz) {
        free(p);
        fclose(f);
        return err_set(err, ERR_IO, "%s: read failed", path);
    }
    fclose(f);
    *out = p;
    *count = (size_t)sz / unit;
    return 0;
}

static long rss_peak_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6))
            kb = atol(line + 6);
    if (f)
        fclose(f);
    return kb;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int usage(void)
{
    printf("usage: imgsearch bench ann --base FILE --queries FILE --truth FILE --dim D\n"
           "         [--m 16] [--ef-construction 64] [--ef-search 40,100,200]\n"
           "         [--quantize 1] [--threads 1] [--k 10] [--store PATH|URL]...\n"
           "--store: measure that store instead of a bare index (repeatable: a\n"
           "file path is the embedded store, a postgres[ql]:// URL PostgreSQL);\n"
           "the base is loaded into it unless it holds exactly those rows\n");
    return 0;
}

struct run {
    double qps, p99_ms, recall, mean_s;
};

/* Runs every query; exact when ef < 0. */
static int run_queries(const struct hnsw *h, const float *qs, size_t nq, int dim,
                       const int32_t *truth, size_t k, int ef, struct run *r, struct err *err)
{
    struct hnsw_hit *hits = malloc(k * sizeof *hits);
    double *lat = malloc(nq * sizeof *lat);
    if (!hits || !lat) {
        free(hits);
        free(lat);
        return err_set(err, ERR_NOMEM, "no memory");
    }
    size_t found = 0;
    double t0 = mono_now();
    for (size_t q = 0; q < nq; q++) {
        size_t n;
        double a = mono_now();
        int rc = ef < 0 ? hnsw_exact(h, qs + q * (size_t)dim, k, NULL, NULL, hits, &n, err)
                        : hnsw_search(h, qs + q * (size_t)dim, k, ef, NULL, NULL, hits, &n, err);
        lat[q] = mono_now() - a;
        if (rc) {
            free(hits);
            free(lat);
            return rc;
        }
        const int32_t *t = truth + q * TRUTH_K;
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < k; j++)
                if (hits[i].label == t[j]) {
                    found++;
                    break;
                }
    }
    double total = mono_now() - t0;
    qsort(lat, nq, sizeof *lat, cmp_double);
    size_t i99 = (size_t)((double)nq * 0.99);
    if (i99 >= nq)
        i99 = nq - 1;
    r->qps = (double)nq / total;
    r->mean_s = total / (double)nq;
    r->p99_ms = lat[i99] * 1e3;
    r->recall = (double)found / (double)(nq * k);
    free(hits);
    free(lat);
    return 0;
}

/* What the command line asked for. */
struct ann_opts {
    const char *base_p, *query_p, *truth_p; /* fvecs-like files (read_all) */
    long dim, m, efc, quant, threads, k;    /* index and query parameters */
    long efs[MAX_EFS];                      /* ef_search values to measure */
    int nefs;
    const char *stores[MAX_STORES];         /* --store targets, in order */
    int nstores;
};

/* Fills o from argv. Returns -1 to go on, else the exit code (--help: 0,
 * a usage error: 2). */
static int parse_opts(int argc, char **argv, struct ann_opts *o)
{
    const char *efs_s = "40,100,200";
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h"))
            return usage();
        if (i + 1 >= argc)
            return cmd_usage_error(CMD, "option %s needs a value", opt);
        const char *v = argv[++i];
        int rc = 0;
        if (!strcmp(opt, "--base"))
            o->base_p = v;
        else if (!strcmp(opt, "--queries"))
            o->query_p = v;
        else if (!strcmp(opt, "--truth"))
            o->truth_p = v;
        else if (!strcmp(opt, "--ef-search"))
            efs_s = v;
        else if (!strcmp(opt, "--store")) {
            if (o->nstores == MAX_STORES)
                return cmd_usage_error(CMD, "at most %d --store", MAX_STORES);
            o->stores[o->nstores++] = v;
        }
        else if (!strcmp(opt, "--dim"))
            rc = cmd_parse_int(CMD, opt, v, 1, HNSW_MAX_DIM, &o->dim);
        else if (!strcmp(opt, "--m"))
            rc = cmd_parse_int(CMD, opt, v, 2, HNSW_MAX_M, &o->m);
        else if (!strcmp(opt, "--ef-construction"))
            rc = cmd_parse_int(CMD, opt, v, 1, HNSW_MAX_EF, &o->efc);
        else if (!strcmp(opt, "--quantize"))
            rc = cmd_parse_int(CMD, opt, v, 0, 1, &o->quant);
        else if (!strcmp(opt, "--threads"))
            rc = cmd_parse_int(CMD, opt, v, 0, 256, &o->threads);
        else if (!strcmp(opt, "--k"))
            rc = cmd_parse_int(CMD, opt, v, 1, TRUTH_K, &o->k);
        else
            return cmd_usage_error(CMD, "unknown option %s", opt);
        if (rc)
            return rc;
    }
    if (!o->base_p || !o->query_p || !o->truth_p || !o->dim)
        return cmd_usage_error(CMD, "--base, --queries, --truth and --dim are required");
    int nefs = 0;
    char *copy = strdup(efs_s);
    for (char *t = strtok(copy, ","); t; t = strtok(NULL, ",")) {
        if (nefs == MAX_EFS || cmd_parse_int(CMD, "--ef-search", t, 1, HNSW_MAX_EF, &o->efs[nefs])) {
            free(copy);
            return nefs == MAX_EFS ? cmd_usage_error(CMD, "at most %d ef values", MAX_EFS) : 2;
        }
        nefs++;
    }
    free(copy);
    o->nefs = nefs;
    return -1;
}

/* Loads base (n rows, ids "0".."n-1") into st, LOAD_BATCH rows per batch. */
static int store_load(struct store *st, const float *base, size_t n, int dim, struct err *err)
{
    char id[32];
    for (size_t i = 0; i < n; i++) {
        int rc = 0;
        if (i % LOAD_BATCH == 0 && (rc = store_begin(st, err)))
            return rc;
        snprintf(id, sizeof id, "%zu", i);
        struct store_item it = {.id = id, .size = -1, .mtime = -1,
                                .embedding = (float *)base + i * (size_t)dim};
        if ((rc = store_put(st, &it, NULL, err))) {
            struct err re;
            store_rollback(st, &re);
            return rc;
        }
        if ((i % LOAD_BATCH == LOAD_BATCH - 1 || i == n - 1) && (rc = store_commit(st, err)))
            return rc;
    }
    return 0;
}

/* Runs every query through store_search at width ef; like run_queries. */
static int store_queries(struct store *st, const float *qs, size_t nq, int dim,
                         const int32_t *truth, size_t k, int ef, struct run *r, struct err *err)
{
    double *lat = malloc(nq * sizeof *lat);
    if (!lat)
        return err_set(err, ERR_NOMEM, "no memory");
    size_t found = 0;
    struct store_query q = {.k = (int)k, .min_score = -1, .ef = ef};
    double t0 = mono_now();
    for (size_t i = 0; i < nq; i++) {
        struct store_hit *hits;
        size_t n;
        q.vec = qs + i * (size_t)dim;
        double a = mono_now();
        int rc = store_search(st, &q, &hits, &n, err);
        lat[i] = mono_now() - a;
        if (rc) {
            free(lat);
            return rc;
        }
        const int32_t *t = truth + i * TRUTH_K;
        for (size_t h = 0; h < n; h++) {
            long label = strtol(hits[h].id, NULL, 10);
            for (size_t j = 0; j < k; j++)
                if (label == t[j]) {
                    found++;
                    break;
                }
        }
        store_hits_free(hits, n);
    }
    double total = mono_now() - t0;
    qsort(lat, nq, sizeof *lat, cmp_double);
    size_t i99 = (size_t)((double)nq * 0.99);
    r->qps = (double)nq / total;
    r->mean_s = total / (double)nq;
    r->p99_ms = lat[i99 < nq ? i99 : nq - 1] * 1e3;
    r->recall = (double)found / (double)(nq * k);
    free(lat);
    return 0;
}

/* Measures store target: load (unless it holds the base already), the
 * first search (which builds a local index), then each ef_search. */
static int store_bench(const struct ann_opts *o, const char *target, const float *base, size_t n,
                       const float *qs, size_t nq, const int32_t *truth, struct err *err)
{
    struct store_options so = {.model = "bench-ann", .dim = (int)o->dim, .create = 1,
                               .hnsw_m = (int)o->m, .ef_construction = (int)o->efc};
    struct store *st = NULL;
    int rc = store_open(&st, target, &so, err);
    if (rc)
        return rc;
    int64_t have = 0;
    double load_s = 0, index_s = 0;
    if ((rc = store_count(st, &have, err)))
        goto done;
    if (have != 0 && have != (int64_t)n) {
        rc = err_set(err, ERR_CONFLICT, "%s holds %lld items, not 0 nor the base's %zu: give a "
                     "new store", store_name(st), (long long)have, n);
        goto done;
    }
    double t0 = mono_now();
    if (!have && (rc = store_load(st, base, n, (int)o->dim, err)))
        goto done;
    load_s = mono_now() - t0;
    /* the first search builds (or loads) a local index: timed apart */
    struct run r;
    t0 = mono_now();
    if ((rc = store_queries(st, qs, 1, (int)o->dim, truth, (size_t)o->k, 0, &r, err)))
        goto done;
    index_s = mono_now() - t0;
    for (int e = 0; e < o->nefs; e++) {
        if ((rc = store_queries(st, qs, nq, (int)o->dim, truth, (size_t)o->k, (int)o->efs[e], &r,
                                err)))
            goto done;
        printf("{\"what\": \"store_ann\", \"store\": \"%s\", \"index\": \"%s\", \"n\": %zu, "
               "\"dim\": %ld, \"m\": %ld, \"ef_construction\": %ld, \"load_s\": %.1f, "
               "\"loaded\": %s, \"first_search_s\": %.2f, \"ef_search\": %ld, "
               "\"recall_at_%ld\": %.4f, \"queries_per_s\": %.1f, \"p99_ms\": %.3f}\n",
               store_kind(st), store_index_kind(st), n, o->dim, o->m, o->efc, load_s,
               have ? "false" : "true", index_s, o->efs[e], o->k, r.recall, r.qps, r.p99_ms);
        fflush(stdout);
    }
done:;
    struct err ce;
    if (store_close(st, &ce) && !rc) {
        *err = ce;
        rc = -ce.code;
    }
    return rc;
}

/* Builds the index and measures it as o asks; returns the exit code. */

static int work(const struct ann_opts *o)
{
    const long dim = o->dim, m = o->m, efc = o->efc, quant = o->quant, threads = o->threads,
               k = o->k;
    const char *base_p = o->base_p, *query_p = o->query_p, *truth_p = o->truth_p;
    const long *efs = o->efs;
    const int nefs = o->nefs;
    struct err err = {0};
    float *base = NULL, *qs = NULL;
    int32_t *truth = NULL;
    size_t n, nq, nt;
    struct hnsw *h = NULL;
    int64_t *labels = NULL;
    int rc;
    size_t row = (size_t)dim * sizeof(float);
    if ((rc = read_all(base_p, row, (void **)&base, &n, &err)) ||
        (rc = read_all(query_p, row, (void **)&qs, &nq, &err)) ||
        (rc = read_all(truth_p, TRUTH_K * sizeof(int32_t), (void **)&truth, &nt, &err)))
        goto fail;
    if (nt < nq) {
        rc = err_set(&err, ERR_INVALID_ARGUMENT, "%s: truth for %zu queries, %zu queries given",
                     truth_p, nt, nq);
        goto fail;
    }
    for (int i = 0; i < o->nstores; i++)
        if ((rc = store_bench(o, o->stores[i], base, n, qs, nq, truth, &err)))
            goto fail;
    if (o->nstores)
        goto fail; /* rc 0: done */
    struct hnsw_params p;
    hnsw_params_default(&p);
    p.m = (int)m;
    p.ef_construction = (int)efc;
    p.quantize = (int)quant;
    if ((rc = hnsw_new(&h, (int)dim, &p, &err)))
        goto fail;
    labels = malloc(n * sizeof *labels);
    if (!labels) {
        rc = err_set(&err, ERR_NOMEM, "no memory");
        goto fail;
    }
    for (size_t i = 0; i < n; i++)
        labels[i] = (int64_t)i;
    double t0 = mono_now();
    if ((rc = hnsw_insert_batch(h, labels, base, n, (int)threads, &err)))
        goto fail;
    double build_s = mono_now() - t0;
    /* The index holds its own copy of the base: free ours before measuring RSS
     * would be meaningless (VmHWM is a peak), but it helps the cache. */
    free(base);
    base = NULL;
    for (int e = 0; e < nefs; e++) {
        struct run r;
        if ((rc = run_queries(h, qs, nq, (int)dim, truth, (size_t)k, (int)efs[e], &r, &err)))
            goto fail;
        printf("{\"what\": \"ann\", \"n\": %zu, \"dim\": %ld, \"m\": %ld, \"ef_construction\": %ld, "
               "\"quantize\": %ld, \"build_s\": %.2f, \"ef_search\": %ld, \"recall_at_%ld\": %.4f, "
               "\"queries_per_s\": %.0f, \"p99_ms\": %.3f, \"simd\": \"%s\"}\n",
               n, dim, m, efc, quant, build_s, efs[e], k, r.recall, r.qps, r.p99_ms,
               vec_simd_name(vec_simd_active()));
        fflush(stdout);
    }
    struct run r;
    size_t nqe = nq < 200 ? nq : 200; /* the exact scan is slow: a sample */
    if ((rc = run_queries(h, qs, nqe, (int)dim, truth, (size_t)k, -1, &r, &err)))
        goto fail;
    double gbs = (double)n * (double)row / r.mean_s / 1e9;
    printf("{\"what\": \"exact\", \"n\": %zu, \"dim\": %ld, \"build_s\": 0, \"ef_search\": 0, "
           "\"recall_at_%ld\": %.4f, \"queries_per_s\": %.1f, \"p99_ms\": %.3f, "
           "\"gb_per_s\": %.2f, \"simd\": \"%s\"}\n",
           n, dim, k, r.recall, r.qps, r.p99_ms, gbs, vec_simd_name(vec_simd_active()));
    printf("{\"what\": \"ann_memory\", \"rss_mb\": %.1f, \"index_mb\": %.1f}\n",
           (double)rss_peak_kb() / 1024.0, (double)hnsw_memory(h) / (1024.0 * 1024.0));
    rc = 0;
fail:
    free(base);
    free(qs);
    free(truth);
    free(labels);
    hnsw_free(h);
    return rc ? cmd_fail(CMD, &err) : 0;
}

int cmd_bench_ann(int argc, char **argv)
{
    struct ann_opts o = {.m = 16, .efc = 64, .quant = 1, .threads = 1, .k = 10};
    int rc = parse_opts(argc, argv, &o);
    return rc >= 0 ? rc : work(&o);
}
