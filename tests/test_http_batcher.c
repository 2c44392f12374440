/* test_http_batcher.c - the dynamic batcher of the HTTP service,
 * in-process with the tiny model: concurrent callers get their own vectors
 * back (same as one-at-a-time forwards) in fewer forward passes; a request
 * larger than a batch is split. (The start-up precompute has
 * tests/test_precompute.c.) */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#include "http/batcher.h"
#include "pipe/pipe.h"
#include "store/store.h"
#include "util/fsutil.h"

/* No two of these are near-duplicates (chelsea.png/.webp, coffee.png/.gif
 * and butterfly/butterfly_exif6 are, at 0.9999+): setup() checks that every
 * pair is below DISTINCT_MAX, so a batcher that hands a caller another
 * slot's vector cannot pass SAME_MIN. */
#define NIMG 6
static const char *const img_names[NIMG] = {"fruits.jpg", "chelsea.png", "coffee.gif",
                                        "butterfly.jpg", "HappyFish.jpg", "left01.jpg"};
/* A slot's vector against the same image embedded alone: fp32 batched and
 * single forwards agree to 1.0000000 (summation order only). */
#define SAME_MIN 0.999999
#define DISTINCT_MAX 0.999
static struct pipe *P;
static float *PX;  /* NIMG preprocessed images */
static float *REF; /* their one-at-a-time embeddings */
static size_t PXN;

static void cleanup(void)
{
    pipe_free(P);
    free(PX);
    free(REF);
    P = NULL;
}

static int setup(void)
{
    if (P)
        return 0;
    struct err e = {0};
    char *dir = test_path("tiny-clip");
    struct pipe_opts po = {.prec = PIPE_PREC_FP32, .skip_text = 1};
    int rc = pipe_open(&P, dir, &po, &e);
    free(dir);
    if (rc) {
        fprintf(stderr, "pipe_open: %s\n", e.msg);
        return rc;
    }
    PXN = 3 * (size_t)P->size * (size_t)P->size;
    PX = malloc(sizeof(float) * PXN * NIMG);
    REF = malloc(sizeof(float) * (size_t)P->dim * NIMG);
    for (int i = 0; i < NIMG; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "tiny-clip/images/%s", img_names[i]);
        char *path = test_path(rel);
        rc = pipe_prepare_file(P, path, PX + (size_t)i * PXN, &e);
        free(path);
        if (!rc)
            rc = pipe_embed_pixels(P, PX + (size_t)i * PXN, 1, REF + (size_t)i * P->dim, 0, &e);
        if (rc) {
            fprintf(stderr, "%s: %s\n", img_names[i], e.msg);
            return rc;
        }
    }
    double most = -1;
    for (int i = 0; i < NIMG; i++)
        for (int j = i + 1; j < NIMG; j++) {
            double cs = test_cosine(REF + (size_t)i * P->dim, REF + (size_t)j * P->dim, P->dim);
            most = cs > most ? cs : most;
        }
    printf("  batcher image set: most similar pair at cosine %.6f\n", most);
    if (most >= DISTINCT_MAX) {
        fprintf(stderr, "the batcher's images hold near-duplicates (%.6f)\n", most);
        return -1;
    }
    atexit(cleanup); /* not a test case: a cleanup cannot fail */
    return 0;
}

struct caller {
    struct http_batcher *b;
    int id;
    atomic_int *bad;
};

static void *call(void *arg)
{
    struct caller *c = arg;
    float v[1024];
    for (int round = 0; round < 5; round++) {
        int img = (c->id + round) % NIMG;
        struct err e = {0};
        http_batcher_expect(c->b, 1);
        usleep(1000 * (unsigned)(c->id % 3)); /* "decoding" */
        if (http_batcher_embed(c->b, PX + (size_t)img * PXN, 1, v, 1, 0, &e) ||
            test_cosine(v, REF + (size_t)img * P->dim, P->dim) < SAME_MIN)
            atomic_fetch_add(c->bad, 1);
    }
    return NULL;
}

TEST(concurrent_callers_get_their_vectors)
{
    REQUIRE(setup() == 0);
    struct http_batcher *b;
    struct err e = {0};
    struct http_batcher_opts o = {.max_batch = 4, .max_wait_us = 50000};
    REQUIRE(http_batcher_new(&b, P, &o, &e) == 0);
    enum { T = 12 };
    pthread_t th[T];
    struct caller cs[T];
    atomic_int bad = 0;
    for (int i = 0; i < T; i++) {
        cs[i] = (struct caller){b, i, &bad};
        REQUIRE(pthread_create(&th[i], NULL, call, &cs[i]) == 0);
    }
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    CHECK_INT_EQ(atomic_load(&bad), 0);
    struct http_batcher_stats st;
    http_batcher_stats(b, &st);
    CHECK_INT_EQ(st.images, T * 5);
    CHECKF(st.batches < st.images, "%llu batches for %llu images: nothing was batched",
           (unsigned long long)st.batches, (unsigned long long)st.images);
    CHECK_INT_EQ(st.failed, 0);
    CHECK_INT_EQ(st.queued, 0);
    uint64_t sum = 0;
    for (int i = 0; i <= HTTP_METRICS_BATCH_BUCKETS; i++)
        sum += st.hist[i];
    CHECK_INT_EQ(sum, st.batches);
    CHECK_INT_EQ(st.hist[http_metrics_batch_bucket(5)], 0); /* never over max_batch */
    http_batcher_free(b);
}

TEST(large_requests_are_split)
{
    REQUIRE(setup() == 0);
    struct http_batcher *b;
    struct err e = {0};
    struct http_batcher_opts o = {.max_batch = 2, .max_wait_us = 0};
    REQUIRE(http_batcher_new(&b, P, &o, &e) == 0);
    float *out = calloc((size_t)P->dim * 5, sizeof(float));
    REQUIRE(http_batcher_embed(b, PX, 5, out, 0, 1, &e) == 0);
    for (int i = 0; i < 5; i++)
        CHECKF(test_cosine(out + (size_t)i * P->dim, REF + (size_t)i * P->dim, P->dim) >= SAME_MIN,
               "image %d", i);
    struct http_batcher_stats st;
    http_batcher_stats(b, &st);
    CHECK_INT_EQ(st.batches, 3);
    CHECK_INT_EQ(st.images, 5);
    CHECK_INT_EQ(http_batcher_embed(b, PX, 0, out, 0, 0, &e), 0);
    free(out);
    http_batcher_free(b);
    http_batcher_free(NULL);
}

TEST_MAIN(concurrent_callers_get_their_vectors, large_requests_are_split)
