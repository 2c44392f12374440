/* test_ingest_plan.c - the plan's decisions (rule 5 of ingest.h) on a real
 * store: new, unchanged (size + mtime), changed (with the digest to
 * compare), waiting, moved, id clashes (failed, or taken over when the
 * roots own their ids), metadata-only writes, escaped ids; prune of
 * vanished files; the waiting items as jobs. No model is needed. */
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"
#include "ingest/ingest.h"
#include "util/fsutil.h"

static char fail_buf[1024];
static const char *last_fail = fail_buf;
static int nfails;

static void on_fail(void *ctx, const char *msg)
{
    (void)ctx;
    nfails++;
    snprintf(fail_buf, sizeof fail_buf, "%s", msg);
}

static const float V[4] = {1, 0, 0, 0};

struct fx {
    char tmp[64];
    char root[100];
    char other[100];
    struct store *st;
};

static void put_file(const char *dir, const char *name, const char *text)
{
    char path[300];
    struct err e;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    REQUIRE(fs_write_file(path, text, strlen(text), &e) == 0);
}

static void stat_of(const char *dir, const char *name, char *path, size_t cap, int64_t *size,
                    int64_t *mtime)
{
    struct stat sb;
    snprintf(path, cap, "%s/%s", dir, name);
    REQUIRE(stat(path, &sb) == 0);
    *size = (int64_t)sb.st_size;
    *mtime = (int64_t)sb.st_mtim.tv_sec;
}

/* An item for file name under dir; delta_mtime shifts the stored mtime. */
static void put_item(struct fx *f, const char *id, const char *dir, const char *name,
                     int embedded, int delta_mtime, const char *md)
{
    char path[300];
    int64_t size = 0, mtime = 0;
    stat_of(dir, name, path, sizeof path, &size, &mtime);
    struct store_item it = {.id = (char *)id, .source = path, .sha256 = "ab12", .size = size,
                            .mtime = mtime + delta_mtime, .metadata = (char *)md,
                            .embedding = embedded ? (float *)V : NULL};
    struct err e;
    REQUIRE(store_put(f->st, &it, NULL, &e) == 0);
}

static const struct ingest_job *find_job(const struct ingest_jobs *js, const char *id)
{
    for (size_t i = 0; i < js->n; i++)
        if (!strcmp(js->v[i].id, id))
            return &js->v[i];
    return NULL;
}

static void setup(struct fx *f)
{
    snprintf(f->tmp, sizeof f->tmp, "/tmp/imgsearch-plan-XXXXXX");
    REQUIRE(mkdtemp(f->tmp));
    snprintf(f->root, sizeof f->root, "%s/root", f->tmp);
    snprintf(f->other, sizeof f->other, "%s/other", f->tmp);
    struct err e;
    REQUIRE(fs_mkdirs(f->root, &e) == 0 && fs_mkdirs(f->other, &e) == 0);
    char db[120];
    snprintf(db, sizeof db, "%s/s.db", f->tmp);
    struct store_options so = {.model = "m", .dim = 4, .create = 1};
    REQUIRE(store_open(&f->st, db, &so, &e) == 0);
}

static void teardown(struct fx *f)
{
    struct err e;
    CHECK(store_close(f->st, &e) == 0);
    char cmd[120];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->tmp);
    CHECK(system(cmd) == 0);
}

TEST(plan_decisions)
{
    struct fx f;
    setup(&f);
    const char *names[] = {"new.jpg", "same.jpg", "touched.jpg", "waits.jpg", "moved.jpg",
                           "clash.jpg", "caf\xe9.jpg"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        put_file(f.root, names[i], names[i]);
    put_file(f.other, "clash.jpg", "elsewhere");
    put_file(f.other, "moved.jpg", "was here");
    put_item(&f, "same.jpg", f.root, "same.jpg", 1, 0, NULL);
    put_item(&f, "touched.jpg", f.root, "touched.jpg", 1, -10, "{\"k\": 1}");
    put_item(&f, "waits.jpg", f.root, "waits.jpg", 0, 0, NULL);
    put_item(&f, "moved.jpg", f.other, "moved.jpg", 1, 0, NULL);
    put_item(&f, "clash.jpg", f.other, "clash.jpg", 1, 0, NULL);
    char gone[300];
    snprintf(gone, sizeof gone, "%s/moved.jpg", f.other);
    REQUIRE(unlink(gone) == 0); /* moved.jpg's old source vanished */

    struct ingest_hooks h = {.fail = on_fail};
    struct ingest_counts n = {0};
    struct ingest_walk w;
    struct ingest_jobs js = {0};
    struct err e;
    const char *roots[1] = {f.root};
    REQUIRE(ingest_walk(&w, roots, 1, &h, &n, &e) == 0);
    struct ingest_plan_opts po = {.id_from = INGEST_ID_RELPATH};
    REQUIRE(ingest_plan(f.st, &w, &po, &h, &n, &js, &e) == 0);
    CHECK_INT_EQ(n.unchanged, 1);
    CHECK_INT_EQ(n.failed, 1);
    CHECK_STR_CONTAINS(last_fail, "its id 'clash.jpg' belongs to");
    CHECK_INT_EQ(js.n, 5);
    const struct ingest_job *j = find_job(&js, "new.jpg");
    CHECK(j && j->kind == INGEST_NEW && !j->old_sha && j->plan_seq == 0 && j->metadata &&
          !strcmp(j->metadata, "{}"));
    j = find_job(&js, "touched.jpg");
    CHECK(j && j->kind == INGEST_CHANGED && j->old_sha && !strcmp(j->old_sha, "ab12") &&
          !j->same_stat && j->plan_seq > 0 && j->plan_embedded);
    CHECK(j && j->metadata && strstr(j->metadata, "\"k\"") && !j->meta_changed);
    j = find_job(&js, "waits.jpg");
    CHECK(j && j->kind == INGEST_WAITING && j->same_stat && !j->old_sha);
    j = find_job(&js, "moved.jpg");
    CHECK(j && j->kind == INGEST_MOVED && j->old_sha && j->plan_source &&
          !strcmp(j->plan_source, gone));
    j = find_job(&js, "caf%E9.jpg");
    CHECK(j && j->kind == INGEST_NEW && strstr(j->path, "caf\xe9.jpg"));
    ingest_jobs_free(&js);

    /* the roots own their ids (the server's catalog): the clash is a move */
    memset(&n, 0, sizeof n);
    po.own_ids = 1;
    REQUIRE(ingest_plan(f.st, &w, &po, &h, &n, &js, &e) == 0);
    CHECK_INT_EQ(n.failed, 0);
    j = find_job(&js, "clash.jpg");
    CHECK(j && j->kind == INGEST_MOVED && j->old_sha);
    ingest_jobs_free(&js);

    /* --id-from path and name: escaped too */
    po = (struct ingest_plan_opts){.id_from = INGEST_ID_NAME};
    REQUIRE(ingest_plan(f.st, &w, &po, &h, &n, &js, &e) == 0);
    CHECK(find_job(&js, "caf%E9.jpg") != NULL);
    ingest_jobs_free(&js);
    po.id_from = INGEST_ID_PATH;
    REQUIRE(ingest_plan(f.st, &w, &po, &h, &n, &js, &e) == 0);
    char want[300];
    snprintf(want, sizeof want, "%s/caf%%E9.jpg", f.root);
    CHECK(find_job(&js, want) != NULL);
    ingest_jobs_free(&js);
    ingest_walk_free(&w);
    teardown(&f);
}

TEST(plan_two_files_one_id_and_sidecar)
{
    struct fx f;
    setup(&f);
    put_file(f.root, "x.jpg", "one");
    put_file(f.other, "x.jpg", "two");
    put_file(f.root, "keep.jpg", "keep");
    put_item(&f, "keep.jpg", f.root, "keep.jpg", 1, 0, "{\"a\": \"1\"}");
    char side[200];
    snprintf(side, sizeof side, "%s/meta.csv", f.tmp);
    struct err e;
    const char *csv = "path,b\nroot/keep.jpg,2\n";
    REQUIRE(fs_write_file(side, csv, strlen(csv), &e) == 0);
    struct ingest_sidecar sc = {0};
    REQUIRE(ingest_sidecar_load(&sc, side, &e) == 0);

    struct ingest_hooks h = {.fail = on_fail};
    struct ingest_counts n = {0};
    struct ingest_walk w;
    struct ingest_jobs js = {0};
    const char *roots[2] = {f.root, f.other};
    REQUIRE(ingest_walk(&w, roots, 2, &h, &n, &e) == 0);
    struct ingest_plan_opts po = {.id_from = INGEST_ID_RELPATH, .sidecar = &sc};
    REQUIRE(ingest_plan(f.st, &w, &po, &h, &n, &js, &e) == 0);
    CHECK_INT_EQ(n.failed, 1);
    CHECK_STR_CONTAINS(last_fail, "its id 'x.jpg' is also the id of");
    CHECK_INT_EQ(js.n, 1);
    /* the unchanged file got its sidecar fields written by the plan */
    CHECK_INT_EQ(n.updated, 1);
    CHECK_INT_EQ(n.unchanged, 0);
    struct store_item it = {0};
    REQUIRE(store_get(f.st, "keep.jpg", &it, &e) == 0);
    CHECK(it.metadata && strstr(it.metadata, "\"a\"") && strstr(it.metadata, "\"b\""));
    CHECK(it.has_embedding);
    store_item_clear(&it);
    ingest_jobs_free(&js);
    /* the same sidecar again changes nothing */
    memset(&n, 0, sizeof n);
    REQUIRE(ingest_plan(f.st, &w, &po, &h, &n, &js, &e) == 0);
    CHECK_INT_EQ(n.updated, 0);
    CHECK_INT_EQ(n.unchanged, 1);
    ingest_jobs_free(&js);
    ingest_walk_free(&w);
    ingest_sidecar_free(&sc);
    teardown(&f);
}

TEST(prune_and_waiting)
{
    struct fx f;
    setup(&f);
    put_file(f.root, "here.jpg", "here");
    put_file(f.root, "gone.jpg", "gone");
    put_file(f.root, "text.jpg", "text");
    put_file(f.other, "outside.jpg", "outside");
    put_item(&f, "here.jpg", f.root, "here.jpg", 1, 0, NULL);
    put_item(&f, "gone.jpg", f.root, "gone.jpg", 1, 0, NULL);
    put_item(&f, "text.jpg", f.root, "text.jpg", 1, 0, NULL);
    put_item(&f, "outside.jpg", f.other, "outside.jpg", 0, 0, NULL);
    struct err e;
    struct store_item url = {.id = "url", .source = "https://example.com/x.jpg", .size = -1,
                             .mtime = -1};
    REQUIRE(store_put(f.st, &url, NULL, &e) == 0);
    struct store_item nosrc = {.id = "nosrc", .size = -1, .mtime = -1};
    REQUIRE(store_put(f.st, &nosrc, NULL, &e) == 0);
    char path[300];
    snprintf(path, sizeof path, "%s/gone.jpg", f.root);
    REQUIRE(unlink(path) == 0);

    struct ingest_hooks h = {.fail = on_fail};
    struct ingest_counts n = {0};
    struct ingest_walk w;
    const char *roots[1] = {f.root};
    REQUIRE(ingest_walk(&w, roots, 1, &h, &n, &e) == 0);
    for (size_t i = 0; i < w.n; i++)
        if (strstr(w.files[i].path, "text.jpg"))
            w.files[i].not_image = 1; /* what the engine found */
    REQUIRE(ingest_prune(f.st, &w, &n, &e) == 0);
    CHECK_INT_EQ(n.removed, 2);
    struct store_item it = {0};
    CHECK(store_get(f.st, "gone.jpg", &it, &e) == -ERR_NOT_FOUND);
    CHECK(store_get(f.st, "text.jpg", &it, &e) == -ERR_NOT_FOUND);
    CHECK(store_get(f.st, "here.jpg", &it, &e) == 0);
    store_item_clear(&it);
    CHECK(store_get(f.st, "outside.jpg", &it, &e) == 0); /* not under a root */
    store_item_clear(&it);
    ingest_walk_free(&w);

    /* the waiting items as jobs: paged by seq, one without a source fails */
    struct ingest_jobs js = {0};
    int64_t last = 0;
    nfails = 0;
    REQUIRE(ingest_waiting(f.st, 0, 1, &h, &n, &js, &last, &e) == 0);
    CHECK(js.n == 1 && !strcmp(js.v[0].id, "outside.jpg") && js.v[0].kind == INGEST_WAITING &&
          js.v[0].explicit_file && !js.v[0].metadata && !js.v[0].plan_embedded);
    REQUIRE(ingest_waiting(f.st, last, 0, &h, &n, &js, &last, &e) == 0);
    CHECK(js.n == 2 && !strcmp(js.v[1].id, "url"));
    CHECK_INT_EQ(nfails, 1);
    CHECK_STR_CONTAINS(last_fail, "item 'nosrc': no source");
    ingest_jobs_free(&js);
    teardown(&f);
}

TEST_MAIN(plan_decisions, plan_two_files_one_id_and_sidecar, prune_and_waiting)
