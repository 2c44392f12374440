/* test_sched.c - the inference scheduler, in-process with the tiny model:
 * concurrent image and text callers get their own vectors back (the same as
 * one-at-a-time forward passes) in fewer passes; a request larger than a
 * batch is split; a bad text fails only its own call; images and texts
 * both make progress when both wait.
 *
 * The images are chosen far apart (no pair over cosine 0.99 with the tiny
 * model; chelsea.png and chelsea.webp, at 0.99997, are not both used), and
 * each vector must match its own reference at >= 0.999999 (the scheduler
 * runs the same forward pass; batching changes only rounding, 1e-7) AND
 * beat every other image's reference: a scheduler that swapped two slots
 * fails. */
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "pipe/sched.h"
#include "test.h"

#define NIMG 5
static const char *const img_names[NIMG] = {"fruits.jpg", "chelsea.png", "coffee.gif",
                                            "HappyFish.jpg", "left01.jpg"};
#define NTXT 6
static const char *const txt[NTXT] = {"a photo of a cat", "a red fish", "coffee",
                                      "fruit on a table", "a chessboard", "a dog"};
static struct pipe *P;
static float *PX;   /* NIMG preprocessed images */
static float *REF;  /* their one-at-a-time embeddings */
static float *TREF; /* the texts' one-at-a-time embeddings */
static size_t PXN;

#define SAME 0.999999 /* cosine of the same input through another batch */

static int setup(void)
{
    if (P)
        return 0;
    struct err e = {0};
    char *dir = test_path("tiny-clip");
    struct pipe_opts po = {.prec = PIPE_PREC_FP32};
    int rc = pipe_open(&P, dir, &po, &e);
    free(dir);
    if (rc) {
        fprintf(stderr, "pipe_open: %s\n", e.msg);
        return rc;
    }
    PXN = 3 * (size_t)P->size * (size_t)P->size;
    PX = malloc(sizeof(float) * PXN * NIMG);
    REF = malloc(sizeof(float) * (size_t)P->dim * NIMG);
    TREF = malloc(sizeof(float) * (size_t)P->dim * NTXT);
    for (int i = 0; i < NIMG && !rc; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "tiny-clip/images/%s", img_names[i]);
        char *path = test_path(rel);
        rc = pipe_prepare_file(P, path, PX + (size_t)i * PXN, &e);
        free(path);
        if (!rc)
            rc = pipe_embed_pixels(P, PX + (size_t)i * PXN, 1, REF + (size_t)i * P->dim, 0, &e);
    }
    for (int i = 0; i < NTXT && !rc; i++)
        rc = pipe_embed_text(P, txt[i], TREF + (size_t)i * P->dim, 0, &e);
    if (rc)
        fprintf(stderr, "setup: %s\n", e.msg);
    return rc;
}

/* Whether v is reference `want` of refs (n of them): close to it, and
 * closer to it than to any other. */
static int is_ref(const float *v, const float *refs, int n, int want)
{
    double own = test_cosine(v, refs + (size_t)want * P->dim, P->dim);
    if (own < SAME)
        return 0;
    for (int i = 0; i < n; i++)
        if (i != want && test_cosine(v, refs + (size_t)i * P->dim, P->dim) >= own)
            return 0;
    return 1;
}

TEST(references_are_far_apart)
{
    REQUIRE(setup() == 0);
    for (int i = 0; i < NIMG; i++)
        for (int j = i + 1; j < NIMG; j++)
            CHECKF(test_cosine(REF + (size_t)i * P->dim, REF + (size_t)j * P->dim, P->dim) < 0.99,
                   "%s and %s are near-duplicates", img_names[i], img_names[j]);
}

struct caller {
    struct pipe_sched *s;
    int id;
    atomic_int *bad;
};

static void *call_images(void *arg)
{
    struct caller *c = arg;
    float *v = malloc(sizeof(float) * (size_t)P->dim);
    for (int round = 0; round < 5 && v; round++) {
        int img = (c->id + round) % NIMG;
        struct err e = {0};
        pipe_sched_expect(c->s, 1);
        usleep(1000 * (unsigned)(c->id % 3)); /* "decoding" */
        if (pipe_sched_images(c->s, PX + (size_t)img * PXN, 1, v, 1, 0, &e) ||
            !is_ref(v, REF, NIMG, img))
            atomic_fetch_add(c->bad, 1);
    }
    free(v);
    return NULL;
}

static void *call_texts(void *arg)
{
    struct caller *c = arg;
    float *v = malloc(sizeof(float) * (size_t)P->dim * 2);
    for (int round = 0; round < 5 && v; round++) {
        int a = (c->id + round) % NTXT, b = (c->id + round + 1) % NTXT;
        const char *two[2] = {txt[a], txt[b]};
        struct err e = {0};
        if (pipe_sched_texts(c->s, two, 2, v, &e) || !is_ref(v, TREF, NTXT, a) ||
            !is_ref(v + P->dim, TREF, NTXT, b))
            atomic_fetch_add(c->bad, 1);
    }
    free(v);
    return NULL;
}

TEST(concurrent_callers_get_their_vectors)
{
    REQUIRE(setup() == 0);
    struct pipe_sched *s;
    struct err e = {0};
    struct pipe_sched_opts o = {.max_batch = 4, .max_wait_us = 50000};
    REQUIRE(pipe_sched_new(&s, P, &o, &e) == 0);
    enum { T = 12 };
    pthread_t th[T];
    struct caller cs[T];
    atomic_int bad = 0;
    for (int i = 0; i < T; i++) {
        cs[i] = (struct caller){s, i, &bad};
        REQUIRE(pthread_create(&th[i], NULL, i % 3 == 2 ? call_texts : call_images, &cs[i]) == 0);
    }
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    CHECK_INT_EQ(atomic_load(&bad), 0);
    struct pipe_sched_stats st;
    pipe_sched_stats(s, &st);
    CHECK_INT_EQ(st.images, 8 * 5);
    CHECK_INT_EQ(st.texts, 4 * 5 * 2);
    CHECKF(st.batches < st.images, "%llu batches for %llu images: nothing was batched",
           (unsigned long long)st.batches, (unsigned long long)st.images);
    CHECK(st.text_batches >= 10 && st.text_batches <= 20);
    CHECK_INT_EQ(st.failed, 0);
    CHECK(st.queued == 0 && st.queued_texts == 0);
    uint64_t sum = 0;
    for (int i = 0; i <= PIPE_SCHED_BUCKETS; i++)
        sum += st.hist[i];
    CHECK_INT_EQ(sum, st.batches);
    CHECK_INT_EQ(st.hist[pipe_sched_bucket(5)], 0); /* never over max_batch */
    pipe_sched_free(s);
}

TEST(large_requests_are_split)
{
    REQUIRE(setup() == 0);
    struct pipe_sched *s;
    struct err e = {0};
    struct pipe_sched_opts o = {.max_batch = 2, .max_wait_us = 0};
    REQUIRE(pipe_sched_new(&s, P, &o, &e) == 0);
    float *out = calloc((size_t)P->dim * NTXT, sizeof(float));
    REQUIRE(pipe_sched_images(s, PX, NIMG, out, 0, 1, &e) == 0);
    for (int i = 0; i < NIMG; i++)
        CHECKF(is_ref(out + (size_t)i * P->dim, REF, NIMG, i), "image %d", i);
    REQUIRE(pipe_sched_texts(s, txt, NTXT, out, &e) == 0);
    for (int i = 0; i < NTXT; i++)
        CHECKF(is_ref(out + (size_t)i * P->dim, TREF, NTXT, i), "text %d", i);
    struct pipe_sched_stats st;
    pipe_sched_stats(s, &st);
    CHECK_INT_EQ(st.batches, 3);
    CHECK_INT_EQ(st.images, NIMG);
    CHECK_INT_EQ(st.text_batches, 3);
    CHECK_INT_EQ(pipe_sched_images(s, PX, 0, out, 0, 0, &e), 0);
    CHECK_INT_EQ(pipe_sched_texts(s, txt, 0, out, &e), 0);
    free(out);
    pipe_sched_free(s);
    pipe_sched_free(NULL);
}

struct text_call {
    struct pipe_sched *s;
    const char *text;
    int rc;
    float *v;
};

static void *one_text(void *arg)
{
    struct text_call *c = arg;
    struct err e = {0};
    c->rc = pipe_sched_texts(c->s, &c->text, 1, c->v, &e);
    return NULL;
}

static void *busy_images(void *arg)
{
    struct text_call *c = arg;
    struct err e = {0};
    float *out = malloc(sizeof(float) * (size_t)P->dim * NIMG);
    for (int i = 0; i < 4 && out; i++)
        c->rc |= pipe_sched_images(c->s, PX, NIMG, out, 0, 0, &e);
    free(out);
    return NULL;
}

/* A bad text (invalid UTF-8) fails its own call only, also when it shares a
 * pass with a good one: the scheduler is kept busy with images so both
 * texts queue up behind them. */
TEST(a_bad_text_fails_only_its_caller)
{
    REQUIRE(setup() == 0);
    struct pipe_sched *s;
    struct err e = {0};
    struct pipe_sched_opts o = {.max_batch = 8, .max_wait_us = 0};
    REQUIRE(pipe_sched_new(&s, P, &o, &e) == 0);
    float good[1024], badv[1024];
    REQUIRE(P->dim <= 1024);
    int shared = 0;
    for (int trial = 0; trial < 30 && !shared; trial++) {
        struct pipe_sched_stats a, b;
        pipe_sched_stats(s, &a);
        struct text_call busy = {s, NULL, 0, NULL};
        struct text_call g = {s, "a photo of a cat", -1, good};
        struct text_call x = {s, "bad \xff\xfe text", -1, badv};
        pthread_t tb, tg, tx;
        REQUIRE(pthread_create(&tb, NULL, busy_images, &busy) == 0);
        usleep(200);
        REQUIRE(pthread_create(&tg, NULL, one_text, &g) == 0);
        REQUIRE(pthread_create(&tx, NULL, one_text, &x) == 0);
        pthread_join(tb, NULL);
        pthread_join(tg, NULL);
        pthread_join(tx, NULL);
        pipe_sched_stats(s, &b);
        CHECK_INT_EQ(busy.rc, 0);
        CHECK_INT_EQ(g.rc, 0);
        CHECK(is_ref(good, TREF, NTXT, 0));
        CHECK_INT_EQ(x.rc, -ERR_INVALID_UTF8);
        shared = b.text_batches - a.text_batches == 1;
    }
    CHECKF(shared, "the two texts never shared a pass in 30 trials");
    pipe_sched_free(s);
}

TEST_MAIN(references_are_far_apart, concurrent_callers_get_their_vectors,
          large_requests_are_split, a_bad_text_fails_only_its_caller)
