/* test_util.c - the small shared pieces: strict UTF-8, the JSON shape scan,
 * opening beneath a folder without following links, and the error code of
 * a full disk. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"
#include "util/fsutil.h"
#include "util/jsonscan.h"
#include "util/utf8.h"

TEST(utf8_strict)
{
    size_t bad = 99;
    CHECK_INT_EQ(utf8_check((const uint8_t *)"caf\xc3\xa9 \xf0\x9f\x90\x9f", 10, &bad), 0);
    CHECK_INT_EQ(utf8_check((const uint8_t *)"ab\xff", 3, &bad), -1);
    CHECK_INT_EQ(bad, 2);
    CHECK(!utf8_valid("\xc0\xaf"));         /* overlong '/' */
    CHECK(!utf8_valid("\xed\xa0\x80"));     /* a surrogate */
    CHECK(!utf8_valid("\xf4\x90\x80\x80")); /* above U+10FFFF */
    CHECK(!utf8_valid("\xe2\x82"));         /* cut short */
    CHECK(utf8_valid("\xf4\x8f\xbf\xbf"));
    CHECK(utf8_valid(NULL));
    char *r = utf8_repair("a\xff" "b\xe2\x82");
    REQUIRE(r);
    CHECK(!strcmp(r, "a\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbd"));
    CHECK(utf8_valid(r));
    free(r);
}

TEST(json_shape)
{
    struct json_shape sh;
    const char *j = "{\"vector\": [1, 2.5e3, -3], \"k\": true, \"t\": \"a,[b]\\\"{\"}";
    json_shape_scan(j, strlen(j), 0, 0, &sh);
    CHECK_INT_EQ(sh.values, 7); /* object, array, 3 numbers, true, string */
    CHECK_INT_EQ(sh.depth, 2);
    const char *d = "[[[[{\"a\": [1]}]]]]";
    json_shape_scan(d, strlen(d), 0, 0, &sh);
    CHECK_INT_EQ(sh.depth, 6);
    /* stops early past a limit */
    char big[2001];
    big[0] = '[';
    for (int i = 1; i < 2000; i += 2)
        big[i] = '1', big[i + 1] = ',';
    big[2000] = 0;
    json_shape_scan(big, strlen(big), 100, 0, &sh);
    CHECK_INT_EQ(sh.values, 101);
    json_shape_scan("", 0, 0, 0, &sh);
    CHECK_INT_EQ(sh.values, 0);
}

static char tmpdir[64];

static void mk(const char *rel, int dir)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", tmpdir, rel);
    if (dir)
        mkdir(p, 0700);
    else {
        FILE *f = fopen(p, "w");
        if (f) {
            fputs("secret", f);
            fclose(f);
        }
    }
}

/* Issue 9: O_NOFOLLOW guards only the last component; a folder that is a
 * link must stop the open too, with openat2 and with its fallback. */
TEST(open_beneath_no_links)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_util.%d", (int)getpid());
    mkdir(tmpdir, 0700);
    mk("root", 1);
    mk("root/sub", 1);
    mk("root/sub/a.jpg", 0);
    mk("outside", 1);
    mk("outside/secret.jpg", 0);
    char root[128], link[192], tgt[128];
    snprintf(root, sizeof root, "%s/root", tmpdir);
    snprintf(link, sizeof link, "%s/root/link", tmpdir);
    snprintf(tgt, sizeof tgt, "%s/outside", tmpdir);
    REQUIRE(symlink(tgt, link) == 0);
    for (int use = 0; use < 2; use++) {
        int fd = fs_open_beneath(root, "sub/a.jpg", use);
        CHECKF(fd >= 0, "openat2=%d: %s", use, strerror(errno));
        if (fd >= 0)
            close(fd);
        /* a plain open with O_NOFOLLOW would open this one */
        errno = 0;
        fd = fs_open_beneath(root, "link/secret.jpg", use);
        CHECKF(fd < 0 && (errno == ELOOP || errno == EXDEV), "openat2=%d: fd %d errno %d", use,
               fd, errno);
        if (fd >= 0)
            close(fd);
        fd = fs_open_beneath(root, "sub/../../outside/secret.jpg", use);
        CHECKF(fd < 0, "openat2=%d: .. escaped", use);
        if (fd >= 0)
            close(fd);
        CHECK(fs_open_beneath(root, "/etc/passwd", use) < 0);
        CHECK(fs_open_beneath(root, "sub/missing.jpg", use) < 0 && errno == ENOENT);
    }
    char p[256];
    unlink(link);
    snprintf(p, sizeof p, "%s/root/sub/a.jpg", tmpdir), unlink(p);
    snprintf(p, sizeof p, "%s/root/sub", tmpdir), rmdir(p);
    rmdir(root);
    snprintf(p, sizeof p, "%s/outside/secret.jpg", tmpdir), unlink(p);
    rmdir(tgt);
    rmdir(tmpdir);
}

/* Issue 9: a full disk is the server's no_space (507), not the client's 400.
 * A file size limit makes write() fail with EFBIG as a full disk would. */
TEST(full_disk_is_no_space)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/test_util.%d.big", (int)getpid());
    struct rlimit old, lim;
    REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = 64 * 1024;
    REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    size_t n = 1 << 20;
    char *buf = calloc(1, n);
    struct err e = {0};
    int rc = buf ? fs_write_file(path, buf, n, &e) : -1;
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    free(buf);
    CHECK_INT_EQ(rc, -ERR_NO_SPACE);
    CHECK_INT_EQ(err_http_status(e.code), 507);
    CHECK(access(path, F_OK) != 0); /* nothing half-written left */
    unlink(path);
    /* a missing file the caller named is its own mistake */
    uint8_t *out;
    size_t len;
    CHECK_INT_EQ(fs_read_file("/nonexistent/x.csv", 100, &out, &len, &e), -ERR_BAD_PATH);
}

TEST_MAIN(utf8_strict, json_shape, open_beneath_no_links, full_disk_is_no_space)
