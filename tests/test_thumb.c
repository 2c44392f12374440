/* test_thumb.c - thumbnails (image/thumb.h) and their disk cache
 * (http/thumbs.h): the short side becomes N and the ratio is kept (portrait,
 * panorama, square), nothing is enlarged, an extreme panorama is capped;
 * the JPEG decodes to the size it claims; the cache names files by key,
 * serves them back, and evicts the least recently served first once over
 * its bound. */
#include "test.h"

#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "http/thumbs.h"
#include "image/image.h"
#include "image/thumb.h"

static void geom(int w, int h, int n, int ew, int eh)
{
    int tw = 0, th = 0;
    struct err e = {0};
    CHECKF(img_thumb_geometry(w, h, n, &tw, &th, &e) == 0, "%dx%d at %d: %s", w, h, n, e.msg);
    CHECKF(tw == ew && th == eh, "%dx%d at %d gave %dx%d, wanted %dx%d", w, h, n, tw, th, ew, eh);
}

TEST(thumb_geometry)
{
    geom(1000, 1000, 256, 256, 256);   /* square */
    geom(1000, 500, 256, 512, 256);    /* landscape: short side N */
    geom(500, 1000, 256, 256, 512);    /* portrait */
    geom(5640, 3172, 256, 455, 256);   /* wallpaper: 5640 * 256 / 3172 = 455.2 */
    geom(5640, 3172, 128, 228, 128);   /* 227.6 rounds up */
    geom(100, 80, 256, 100, 80);       /* never enlarged */
    geom(4000, 500, 128, 512, 64);     /* 8:1 capped at 4N on the long side */
    geom(300, 3000, 256, 102, 1024);   /* thin portrait: 10:1 capped at 4N */
    geom(200, 700, 256, 200, 700);     /* short side under N: kept */
    geom(10000, 1, 128, 512, 1);       /* one pixel high stays >= 1 */
    struct err e = {0};
    int tw, th;
    CHECK(img_thumb_geometry(100, 100, 8, &tw, &th, &e) == -ERR_INVALID_ARGUMENT);
    CHECK(img_thumb_geometry(0, 100, 128, &tw, &th, &e) == -ERR_INVALID_ARGUMENT);
}

/* A w x h synthetic JPEG, thumbnailed at n: decodes to the claimed size. */
static void jpeg_case(int w, int h, int n, int ew, int eh)
{
    struct img src = {0}, back = {0};
    struct err e = {0};
    uint8_t *jpg = NULL, *th = NULL;
    size_t njpg = 0, nth = 0;
    int tw = 0, tht = 0;
    REQUIRE(img_synthetic(&src, w, h, 3, &e) == 0);
    REQUIRE(img_encode_jpeg(&src, 92, NULL, 0, &jpg, &njpg, &e) == 0);
    CHECKF(img_thumb_jpeg(jpg, njpg, n, NULL, &th, &nth, &tw, &tht, &e) == 0, "%s", e.msg);
    CHECK_INT_EQ(tw, ew);
    CHECK_INT_EQ(tht, eh);
    if (th) {
        CHECK(img_decode(&back, th, nth, NULL, &e) == 0);
        CHECK_INT_EQ(back.w, ew);
        CHECK_INT_EQ(back.h, eh);
        CHECK(back.fmt == IMG_FMT_JPEG);
        CHECKF(nth < njpg, "thumbnail %zu bytes, source %zu", nth, njpg);
    }
    img_free(&back);
    img_free(&src);
    free(jpg);
    free(th);
}

TEST(thumb_jpeg)
{
    jpeg_case(1600, 900, 256, 455, 256);
    jpeg_case(600, 1200, 128, 128, 256);
    jpeg_case(2000, 2000, 512, 512, 512);
    /* not an image: the decoder's error */
    uint8_t *th = NULL;
    size_t nth = 0;
    struct err e = {0};
    CHECK(img_thumb_jpeg((const uint8_t *)"hello", 5, 128, NULL, &th, &nth, NULL, NULL, &e) ==
          -ERR_UNSUPPORTED_FORMAT);
    CHECK(th == NULL);
}

static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    if (!d)
        return -1;
    struct dirent *de;
    while ((de = readdir(d)))
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

TEST(thumb_cache)
{
    char dir[] = "/tmp/test_thumbXXXXXX";
    REQUIRE(mkdtemp(dir));
    char sub[64];
    snprintf(sub, sizeof sub, "%s/c.thumbs", dir);
    struct http_thumbs *t = NULL;
    struct err e = {0};
    REQUIRE(http_thumbs_open(&t, sub, 10000, &e) == 0);
    char k1[65], k2[65], k3[65], k1b[65];
    http_thumbs_key("a.jpg", "/x/a.jpg", "ab12", 10, 20, 256, k1);
    http_thumbs_key("a.jpg", "/x/a.jpg", "ab12", 10, 20, 128, k2);
    http_thumbs_key("a.jpg", "/x/a.jpg", NULL, 10, 20, 256, k3);
    http_thumbs_key("a.jpg", "/x/a.jpg", "ab12", 99, 99, 256, k1b);
    CHECK(strlen(k1) == 64);
    CHECK(strcmp(k1, k2) != 0); /* the size is in the key */
    CHECK(strcmp(k1, k3) != 0); /* and the content */
    CHECK(strcmp(k1, k1b) == 0); /* a digest makes size and mtime irrelevant */
    uint64_t len = 0;
    CHECK(http_thumbs_get(t, k1, &len) == -1);
    static uint8_t buf[4000];
    memset(buf, 7, sizeof buf);
    CHECK(http_thumbs_put(t, k1, buf, 4000, &e) == 0);
    usleep(20000);
    CHECK(http_thumbs_put(t, k2, buf, 4000, &e) == 0);
    int fd = http_thumbs_get(t, k1, &len);
    CHECK(fd >= 0);
    CHECK_INT_EQ(len, 4000);
    if (fd >= 0)
        close(fd);
    uint64_t bytes = 0, files = 0;
    http_thumbs_stats(t, &bytes, &files);
    CHECK_INT_EQ(bytes, 8000);
    CHECK_INT_EQ(files, 2);
    usleep(20000);
    /* k1 was served after k2 was written: k2 is the oldest and goes */
    CHECK(http_thumbs_put(t, k3, buf, 4000, &e) == 0);
    http_thumbs_stats(t, &bytes, &files);
    CHECK_INT_EQ(bytes, 4000 * files);
    CHECKF(bytes <= 7500, "%llu bytes after eviction", (unsigned long long)bytes);
    CHECK(http_thumbs_get(t, k2, &len) == -1);
    fd = http_thumbs_get(t, k3, &len);
    CHECK(fd >= 0);
    if (fd >= 0)
        close(fd);
    CHECK_INT_EQ(count_files(sub), (int)files);
    http_thumbs_free(t);
    /* reopening counts what is there */
    REQUIRE(http_thumbs_open(&t, sub, 10000, &e) == 0);
    uint64_t b2 = 0, f2 = 0;
    http_thumbs_stats(t, &b2, &f2);
    CHECK_INT_EQ(b2, bytes);
    CHECK_INT_EQ(f2, files);
    http_thumbs_free(t);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

TEST_MAIN(thumb_geometry, thumb_jpeg, thumb_cache)
