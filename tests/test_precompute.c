/* test_precompute.c - the HTTP service's start-up precompute, in-process
 * with the tiny model and a real batcher: it scans a catalog with the
 * ingest rules (images by their bytes, links only inside the root, a loop
 * ends, a Latin-1 name gets an escaped id), embeds it, writes each item's
 * sha256, skips what is done on a restart, wakes for new waiting items,
 * and on a changed file re-embeds only when the bytes changed; a broken
 * file is failed in the store and not retried after a restart. */
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"
#include "pipe/sched.h"
#include "http/precompute.h"
#include "pipe/pipe.h"
#include "store/store.h"
#include "util/fsutil.h"

enum { FRUITS, CHELSEA, COFFEE, HAPPY, LEFT, NIMG };
static const char *const img_names[NIMG] = {"fruits.jpg", "chelsea.png", "coffee.gif",
                                            "HappyFish.jpg", "left01.jpg"};
static struct pipe *P;
static float *REF; /* the images' one-at-a-time embeddings */

static int setup(void)
{
    if (P)
        return 0;
    struct err e = {0};
    char *dir = test_path("tiny-clip");
    struct pipe_opts po = {.prec = PIPE_PREC_FP32, .skip_text = 1};
    int rc = pipe_open(&P, dir, &po, &e);
    free(dir);
    if (rc)
        return rc;
    size_t pxn = 3 * (size_t)P->size * (size_t)P->size;
    float *px = malloc(sizeof(float) * pxn);
    REF = malloc(sizeof(float) * (size_t)P->dim * NIMG);
    for (int i = 0; i < NIMG && !rc; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "tiny-clip/images/%s", img_names[i]);
        char *path = test_path(rel);
        rc = pipe_prepare_file(P, path, px, &e);
        free(path);
        if (!rc)
            rc = pipe_embed_pixels(P, px, 1, REF + (size_t)i * P->dim, 0, &e);
    }
    free(px);
    return rc;
}

static char *copy_fixture(const char *dir, const char *rel_from, const char *to)
{
    char from[512], dst[512];
    snprintf(from, sizeof from, "%s/%s", test_fixtures(), rel_from);
    snprintf(dst, sizeof dst, "%s/%s", dir, to);
    uint8_t *buf;
    size_t n;
    struct err e;
    if (fs_read_file(from, 1u << 24, &buf, &n, &e))
        return NULL;
    int rc = fs_write_file(dst, buf, n, &e);
    free(buf);
    return rc ? NULL : strdup(dst);
}

static int wait_idle(struct http_precompute *pc, struct http_precompute_progress *p,
                     int64_t min_embedded)
{
    for (int i = 0; i < 3000; i++) {
        http_precompute_progress(pc, p);
        if (p->state == HTTP_PC_FAILED)
            return -1;
        if (p->state == HTTP_PC_IDLE && p->embedded >= min_embedded)
            return 0;
        usleep(10000);
    }
    return -1;
}

static void log_quiet(void *ctx, const char *msg)
{
    (void)ctx;
    (void)msg;
}

/* The embedding of item id, checked against image ref. */
static void check_item(struct store *st, const char *id, int ref, const char *source)
{
    struct err e;
    struct store_item it = {0};
    int rc = store_get(st, id, &it, &e);
    CHECKF(rc == 0, "item %s: %s", id, e.msg);
    if (rc)
        return;
    CHECKF(it.has_embedding && it.embedding &&
               test_cosine(it.embedding, REF + (size_t)ref * P->dim, P->dim) >= 0.9999,
           "item %s: embedding", id);
    CHECKF(it.sha256 && strlen(it.sha256) == 64, "item %s: sha256 written", id);
    if (source)
        CHECKF(it.source && !strcmp(it.source, source), "item %s: source %s", id,
               it.source ? it.source : "(null)");
    store_item_clear(&it);
}

struct cat {
    char tmp[64];
    char dir[600];
    char db[600];
    char *files[8];
};

/* The catalog: 7 image files (one broken, one without an image name, one
 * a link inside the root, one with a Latin-1 name), and what is skipped:
 * a text file, a hidden image, a link outside the root, a link loop. */
static int make_catalog(struct cat *c)
{
    snprintf(c->tmp, sizeof c->tmp, "/tmp/imgsearch-pc-XXXXXX");
    if (!mkdtemp(c->tmp))
        return -1;
    snprintf(c->dir, sizeof c->dir, "%s/cat", c->tmp);
    snprintf(c->db, sizeof c->db, "%s/s.db", c->tmp);
    char sub[700], link[700], outside[700], loop[720];
    snprintf(sub, sizeof sub, "%s/sub", c->dir);
    struct err e = {0};
    if (fs_mkdirs(sub, &e))
        return -1;
    c->files[0] = copy_fixture(c->dir, "tiny-clip/images/fruits.jpg", "fruits.jpg");
    c->files[1] = copy_fixture(c->dir, "tiny-clip/images/chelsea.png", "chelsea.PNG");
    c->files[2] = copy_fixture(c->dir, "tiny-clip/images/coffee.gif", "sub/coffee.gif");
    c->files[3] = copy_fixture(c->dir, "bad/truncated.jpg", "broken.jpg");
    c->files[4] = copy_fixture(c->dir, "bad/text.jpg", "notes.txt");
    c->files[5] = copy_fixture(c->dir, "tiny-clip/images/left01.jpg", ".hidden.jpg");
    c->files[6] = copy_fixture(c->dir, "tiny-clip/images/left01.jpg", "photo.dat");
    c->files[7] = copy_fixture(c->dir, "tiny-clip/images/HappyFish.jpg", "caf\xe9.jpg");
    for (int i = 0; i < 8; i++)
        if (!c->files[i])
            return -1;
    snprintf(link, sizeof link, "%s/link.jpg", c->dir);
    snprintf(outside, sizeof outside, "%s/outside.jpg", c->dir);
    snprintf(loop, sizeof loop, "%s/loop", sub);
    char *fx = test_path("tiny-clip/images/left01.jpg");
    int rc = symlink(c->files[0], link) || symlink(fx, outside) || symlink(c->dir, loop);
    free(fx);
    return rc ? -1 : 0;
}

static void remove_catalog(struct cat *c)
{
    for (int i = 0; i < 8; i++)
        free(c->files[i]);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", c->tmp);
    CHECK(system(cmd) == 0);
}

TEST(precompute_scans_resumes_and_wakes)
{
    REQUIRE(setup() == 0);
    struct cat c = {0};
    REQUIRE(make_catalog(&c) == 0);
    struct err e = {0};
    struct store *st;
    struct store_options so = {.model = "tiny", .dim = P->dim, .create = 1};
    REQUIRE(store_open(&st, c.db, &so, &e) == 0);
    struct pipe_sched *b;
    struct pipe_sched_opts bo = {.max_batch = 2, .max_wait_us = 1000};
    REQUIRE(pipe_sched_new(&b, P, &bo, &e) == 0);
    const char *roots[1] = {c.dir}, *prefixes[1] = {""};
    struct http_precompute_opts po = {.roots = roots, .prefixes = prefixes, .nroots = 1,
                                      .batch = 2, .log = log_quiet};
    struct http_precompute *pc;
    struct http_precompute_progress p;
    REQUIRE(http_precompute_start(&pc, st, P, b, &po, &e) == 0);
    REQUIRE(wait_idle(pc, &p, 6) == 0);
    CHECK_INT_EQ(p.files, 7);
    CHECK_INT_EQ(p.added, 7);
    CHECK_INT_EQ(p.waiting_at_start, 7);
    CHECK_INT_EQ(p.embedded, 6);
    CHECK_INT_EQ(p.failed, 1);
    CHECK_STR_CONTAINS(p.last_error, "broken.jpg");
    int64_t n = 0, w = 0;
    CHECK(store_count(st, &n, &e) == 0 && n == 7);
    CHECK(store_count_waiting(st, &w, &e) == 0 && w == 1);
    check_item(st, "sub/coffee.gif", COFFEE, c.files[2]);
    check_item(st, "chelsea.PNG", CHELSEA, NULL);
    check_item(st, "photo.dat", LEFT, NULL); /* an image by its bytes */
    char link[700];
    snprintf(link, sizeof link, "%s/link.jpg", c.dir);
    check_item(st, "link.jpg", FRUITS, link); /* the source is the link's path */
    check_item(st, "caf%E9.jpg", HAPPY, c.files[7]);
    struct store_item it = {0};
    CHECK(store_get(st, "outside.jpg", &it, &e) == -ERR_NOT_FOUND);
    CHECK(store_get(st, ".hidden.jpg", &it, &e) == -ERR_NOT_FOUND);
    CHECK(store_get(st, "notes.txt", &it, &e) == -ERR_NOT_FOUND);
    http_precompute_stop(pc);

    /* the broken file is failed in the store, with its reason */
    CHECK(store_count_failed(st, &n, &e) == 0 && n == 1);
    REQUIRE(store_get(st, "broken.jpg", &it, &e) == 0);
    CHECK_STR_CONTAINS(it.error, "ends early");
    store_item_clear(&it);

    /* a restart embeds nothing again, and does not retry the broken file:
     * its failure is the store's (unchanged file) */
    REQUIRE(http_precompute_start(&pc, st, P, b, &po, &e) == 0);
    REQUIRE(wait_idle(pc, &p, 0) == 0);
    CHECK_INT_EQ(p.files, 7);
    CHECK_INT_EQ(p.added, 0);
    CHECK_INT_EQ(p.unchanged, 7);
    CHECK_INT_EQ(p.waiting_at_start, 1);
    CHECK_INT_EQ(p.embedded, 0);
    CHECK_INT_EQ(p.failed, 0);
    CHECK(store_count_failed(st, &n, &e) == 0 && n == 1);

    /* an item put without an embedding is embedded after a wake */
    char src[600];
    snprintf(src, sizeof src, "%s/tiny-clip/images/left01.jpg", test_fixtures());
    char *real = realpath(src, NULL);
    REQUIRE(real);
    struct store_item ni = {.id = "late", .source = real, .size = -1, .mtime = -1};
    REQUIRE(store_put(st, &ni, NULL, &e) == 0);
    REQUIRE(store_get(st, "late", &it, &e) == 0);
    http_precompute_wake(pc, it.seq);
    store_item_clear(&it);
    REQUIRE(wait_idle(pc, &p, 1) == 0);
    CHECK_INT_EQ(p.embedded, 1);
    check_item(st, "late", LEFT, real);
    free(real);
    http_precompute_stop(pc);

    /* a new mtime, the same bytes: hashed, the embedding kept, the mtime
     * written (index's rule); link.jpg is the same file */
    struct timespec ts[2] = {{0, UTIME_OMIT}, {1000000, 0}};
    REQUIRE(utimensat(AT_FDCWD, c.files[0], ts, 0) == 0);
    REQUIRE(http_precompute_start(&pc, st, P, b, &po, &e) == 0);
    REQUIRE(wait_idle(pc, &p, 0) == 0);
    CHECK_INT_EQ(p.changed, 2);
    CHECK_INT_EQ(p.unchanged, 5);
    CHECK_INT_EQ(p.embedded, 0);
    REQUIRE(store_get(st, "fruits.jpg", &it, &e) == 0);
    CHECK(it.has_embedding && it.mtime == 1000000);
    store_item_clear(&it);
    http_precompute_stop(pc);

    /* new bytes: embedded again, under the same id */
    char *again = copy_fixture(c.dir, "tiny-clip/images/chelsea.png", "fruits.jpg");
    REQUIRE(again);
    free(again);
    REQUIRE(http_precompute_start(&pc, st, P, b, &po, &e) == 0);
    REQUIRE(wait_idle(pc, &p, 2) == 0);
    CHECK_INT_EQ(p.changed, 2);
    CHECK_INT_EQ(p.embedded, 2);
    check_item(st, "fruits.jpg", CHELSEA, c.files[0]);
    check_item(st, "link.jpg", CHELSEA, link);
    http_precompute_stop(pc);
    http_precompute_stop(NULL);

    pipe_sched_free(b);
    CHECK_INT_EQ(store_close(st, &e), 0);
    remove_catalog(&c);
}

TEST(zz_cleanup)
{
    pipe_free(P);
    free(REF);
    P = NULL;
}

TEST_MAIN(precompute_scans_resumes_and_wakes, zz_cleanup)
