/* test_ingest_failed.c - the files that failed, remembered between index
 * runs (src/ingest/failed.c): a failure with the same size and mtime drops
 * the job, any change keeps it; a run's outcomes update the record (failed
 * remembered, done forgotten, a vanished file forgotten); the record file
 * round-trips, a damaged line is ignored, an empty record removes it. */
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"
#include "ingest/ingest.h"
#include "util/fsutil.h"

static char dir[] = "/tmp/imgsearch-failed-XXXXXX";

/* a job for path (owned strings, as the plan makes them) */
static void add_job(struct ingest_jobs *js, const char *path, enum ingest_kind kind,
                    int64_t size, int64_t mtime, enum ingest_outcome out)
{
    if (js->n == js->cap) {
        js->cap = js->cap ? 2 * js->cap : 8;
        js->v = realloc(js->v, js->cap * sizeof *js->v);
    }
    js->v[js->n++] = (struct ingest_job){.path = strdup(path), .id = strdup(path),
                                         .kind = kind, .size = size, .mtime = mtime,
                                         .outcome = out};
}

static void touch(const char *path)
{
    struct err e;
    CHECK(fs_write_file(path, "x", 1, &e) == 0);
}

TEST(skip_and_update)
{
    REQUIRE(mkdtemp(dir));
    char a[300], b[300], c[300], rec[300];
    snprintf(a, sizeof a, "%s/a.jpg", dir);
    snprintf(b, sizeof b, "%s/b.jpg", dir);
    snprintf(c, sizeof c, "%s/c.jpg", dir);
    snprintf(rec, sizeof rec, "%s/store.db.failed", dir);
    touch(a);
    touch(b);
    struct err e;
    struct ingest_failures f;
    REQUIRE(ingest_failures_load(&f, rec, &e) == 0); /* no record yet */
    CHECK(f.n == 0);

    /* run 1: a fails, b is embedded */
    struct ingest_jobs js = {0};
    add_job(&js, a, INGEST_NEW, 100, 7, INGEST_FAILED);
    add_job(&js, b, INGEST_NEW, 200, 7, INGEST_EMBEDDED);
    CHECK(ingest_failures_skip(&f, &js) == 0);
    CHECK(js.n == 2);
    REQUIRE(ingest_failures_update(&f, &js, &e) == 0);
    CHECK(f.n == 1 && !strcmp(f.v[0].path, a) && f.v[0].size == 100 && f.v[0].mtime == 7);
    REQUIRE(ingest_failures_save(&f, rec, &e) == 0);
    ingest_failures_free(&f);
    ingest_jobs_free(&js);

    /* a line that does not parse is ignored */
    FILE *fp = fopen(rec, "a");
    REQUIRE(fp);
    fputs("garbage line\n12 x /nowhere\n", fp);
    fclose(fp);

    /* run 2: a unchanged -> dropped; a with another mtime -> kept */
    REQUIRE(ingest_failures_load(&f, rec, &e) == 0);
    CHECK_INT_EQ((int)f.n, 1);
    add_job(&js, a, INGEST_NEW, 100, 7, INGEST_PENDING);
    add_job(&js, c, INGEST_NEW, 5, 7, INGEST_PENDING);
    CHECK(ingest_failures_skip(&f, &js) == 1);
    CHECK(js.n == 1 && !strcmp(js.v[0].path, c));
    ingest_jobs_free(&js);
    add_job(&js, a, INGEST_CHANGED, 100, 8, INGEST_PENDING);
    CHECK(ingest_failures_skip(&f, &js) == 0);
    add_job(&js, a, INGEST_WAITING, 100, 7, INGEST_PENDING); /* only new/changed */
    CHECK(ingest_failures_skip(&f, &js) == 0);
    CHECK(js.n == 2);
    ingest_jobs_free(&js);

    /* run 3: a went through -> forgotten; the empty record is removed */
    add_job(&js, a, INGEST_CHANGED, 100, 9, INGEST_EMBEDDED);
    REQUIRE(ingest_failures_update(&f, &js, &e) == 0);
    CHECK(f.n == 0);
    REQUIRE(ingest_failures_save(&f, rec, &e) == 0);
    CHECK(!fs_exists(rec));
    ingest_jobs_free(&js);

    /* a failure whose file is gone is forgotten at the next update */
    add_job(&js, b, INGEST_NEW, 200, 7, INGEST_FAILED);
    REQUIRE(ingest_failures_update(&f, &js, &e) == 0);
    CHECK(f.n == 1);
    ingest_jobs_free(&js);
    CHECK(unlink(b) == 0);
    REQUIRE(ingest_failures_update(&f, &js, &e) == 0);
    CHECK(f.n == 0);
    ingest_failures_free(&f);

    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

TEST_MAIN(skip_and_update)
