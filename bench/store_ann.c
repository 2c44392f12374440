/* store_ann.c - recall@10 and queries/s of a store (any backend) on the
 * vectors of gen_vectors, next to the same figures for another store.
 *
 * usage: store_ann STORE PREFIX DIM [EF [QUERIES]]
 *
 * Loads PREFIX.base.f32 into STORE (a new store: a file path or a
 * postgresql:// URL; ids are the row numbers) in batches of 1,000, then
 * runs the queries of PREFIX.query.f32 with k = 10 one after another and
 * compares with PREFIX.truth.i32. Prints one JSON line: the backend, the
 * index that served, load time, recall@10, queries/s. The figures depend
 * on the machine and, for PostgreSQL, on the server (a WebAssembly server
 * such as pglite is far slower than a native one).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/store.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *slurp(const char *prefix, const char *ext, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s.%s", prefix, ext);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    void *b = malloc(*len ? *len : 1);
    if (b && fread(b, 1, *len, f) != *len) {
        free(b);
        b = NULL;
    }
    fclose(f);
    return b;
}

static int load(struct store *st, const float *base, size_t n, int dim, struct err *e)
{
    char id[32];
    for (size_t i = 0; i < n; i++) {
        if (i % 1000 == 0 && store_begin(st, e))
            return -1;
        snprintf(id, sizeof id, "%zu", i);
        struct store_item it = {.id = id, .size = -1, .mtime = -1,
                                .embedding = (float *)base + i * (size_t)dim};
        if (store_put(st, &it, NULL, e))
            return -1;
        if ((i % 1000 == 999 || i == n - 1) && store_commit(st, e))
            return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: store_ann STORE PREFIX DIM [EF [QUERIES]]\n");
        return 2;
    }
    int dim = atoi(argv[3]), ef = argc > 4 ? atoi(argv[4]) : 0;
    size_t bl, ql, tl;
    float *base = slurp(argv[2], "base.f32", &bl), *qs = slurp(argv[2], "query.f32", &ql);
    int32_t *truth = slurp(argv[2], "truth.i32", &tl);
    if (!base || !qs || !truth || dim < 1) {
        fprintf(stderr, "store_ann: cannot read %s.{base.f32,query.f32,truth.i32}\n", argv[2]);
        return 2;
    }
    size_t n = bl / sizeof(float) / (size_t)dim, nq = ql / sizeof(float) / (size_t)dim;
    if (argc > 5 && (size_t)atoi(argv[5]) < nq)
        nq = (size_t)atoi(argv[5]);
    struct store_options o = {.model = "bench", .dim = dim, .create = 1};
    struct store *st;
    struct err e = {0};
    if (store_open(&st, argv[1], &o, &e)) {
        fprintf(stderr, "store_ann: %s\n", e.msg);
        return 1;
    }
    double t0 = now_s();
    if (load(st, base, n, dim, &e)) {
        fprintf(stderr, "store_ann: %s\n", e.msg);
        return 1;
    }
    double t1 = now_s();
    struct store_query q = {.k = 10, .min_score = -1, .ef = ef};
    struct store_hit *h;
    size_t got, hit = 0;
    /* one query first: a local index is built then, not timed */
    q.vec = qs;
    if (store_search(st, &q, &h, &got, &e)) {
        fprintf(stderr, "store_ann: %s\n", e.msg);
        return 1;
    }
    store_hits_free(h, got);
    double t2 = now_s();
    for (size_t i = 0; i < nq; i++) {
        q.vec = qs + i * (size_t)dim;
        if (store_search(st, &q, &h, &got, &e)) {
            fprintf(stderr, "store_ann: %s\n", e.msg);
            return 1;
        }
        for (size_t j = 0; j < got; j++)
            for (int t = 0; t < 10; t++)
                hit += atoi(h[j].id) == truth[i * 100 + (size_t)t];
        store_hits_free(h, got);
    }
    double t3 = now_s();
    printf("{\"store\": \"%s\", \"index\": \"%s\", \"n\": %zu, \"dim\": %d, \"ef\": %d, "
           "\"load_s\": %.1f, \"first_search_s\": %.2f, \"queries\": %zu, \"recall_at_10\": %.3f, "
           "\"queries_per_s\": %.1f}\n",
           store_kind(st), store_index_kind(st), n, dim, ef, t1 - t0, t2 - t1, nq,
           (double)hit / (double)(nq * 10), (double)nq / (t3 - t2));
    store_close(st, NULL);
    free(base);
    free(qs);
    free(truth);
    return 0;
}
