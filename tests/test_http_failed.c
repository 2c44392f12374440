/* test_http_failed.c - the registry of items that could not be embedded
 * (http/failed.h): a failed item stays failed while its file keeps its size
 * and mtime, is tried again once the file changes, is forgotten when it is
 * embedded or its file is gone, and the registry stays bounded. */
#include "test.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "http/failed.h"

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

TEST(failed_until_the_file_changes)
{
    char dir[] = "/tmp/test_failedXXXXXX";
    REQUIRE(mkdtemp(dir));
    char a[64], b[64];
    snprintf(a, sizeof a, "%s/a.jpg", dir);
    snprintf(b, sizeof b, "%s/b.jpg", dir);
    write_file(a, "not a jpeg");
    write_file(b, "neither");
    struct http_failed *f = NULL;
    struct err e = {0};
    REQUIRE(http_failed_new(&f, &e) == 0);
    CHECK(http_failed_unchanged(f, "a.jpg") == 0); /* never failed */
    http_failed_set(f, "a.jpg", a, "decode_failed: not a JPEG");
    http_failed_set(f, "b.jpg", b, "truncated");
    CHECK_INT_EQ(http_failed_count(f), 2);
    char reason[64] = "";
    CHECK(http_failed_get(f, "a.jpg", reason, sizeof reason) == 1);
    CHECK(strcmp(reason, "decode_failed: not a JPEG") == 0);
    CHECK(http_failed_get(f, "c.jpg", reason, sizeof reason) == 0);
    CHECK(http_failed_unchanged(f, "a.jpg") == 1); /* same file: not again */
    write_file(a, "not a jpeg, longer now"); /* another size */
    CHECK(http_failed_unchanged(f, "a.jpg") == 0); /* changed: try again */
    CHECK(http_failed_get(f, "a.jpg", reason, sizeof reason) == 1); /* still failed until then */
    http_failed_clear(f, "a.jpg"); /* embedded */
    CHECK(http_failed_get(f, "a.jpg", reason, sizeof reason) == 0);
    CHECK_INT_EQ(http_failed_count(f), 1);
    /* the same size, another mtime */
    struct timespec ts[2] = {{.tv_sec = 1000000000}, {.tv_sec = 1000000000}};
    http_failed_set(f, "a.jpg", a, "again");
    CHECK(http_failed_unchanged(f, "a.jpg") == 1);
    CHECK(utimensat(AT_FDCWD, a, ts, 0) == 0);
    CHECK(http_failed_unchanged(f, "a.jpg") == 0);
    /* a file gone: forgotten by prune */
    CHECK(unlink(b) == 0);
    CHECK_INT_EQ(http_failed_prune(f), 1);
    CHECK(http_failed_get(f, "b.jpg", reason, sizeof reason) == 0);
    http_failed_free(f);
    http_failed_free(NULL);
    unlink(a);
    rmdir(dir);
}

TEST(failed_is_bounded)
{
    struct http_failed *f = NULL;
    struct err e = {0};
    REQUIRE(http_failed_new(&f, &e) == 0);
    char id[32];
    for (int i = 0; i < HTTP_FAILED_MAX + 5; i++) {
        snprintf(id, sizeof id, "x%d", i);
        http_failed_set(f, id, NULL, "r");
    }
    CHECK_INT_EQ(http_failed_count(f), HTTP_FAILED_MAX);
    CHECK(http_failed_get(f, "x0", NULL, 0) == 0); /* the oldest went first */
    snprintf(id, sizeof id, "x%d", HTTP_FAILED_MAX + 4);
    CHECK(http_failed_get(f, id, NULL, 0) == 1);
    http_failed_free(f);
}

TEST_MAIN(failed_until_the_file_changes, failed_is_bounded)
