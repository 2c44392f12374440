/* test_ingest_walk.c - the walk's rules (src/ingest/ingest.h): hidden names
 * skipped, names sorted, links followed only inside the roots, a link loop
 * and a second way into a folder walked once, a file root is one explicit
 * candidate, an unreadable folder is reported and remembered; the name
 * escape (non-UTF-8 bytes and '%' as %XX) and the byte sniff. */
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"
#include "ingest/ingest.h"
#include "util/fsutil.h"

static char *fails[16];
static int nfails;

static void on_fail(void *ctx, const char *msg)
{
    (void)ctx;
    if (nfails < 16)
        fails[nfails++] = strdup(msg);
}

static void clear_fails(void)
{
    for (int i = 0; i < nfails; i++)
        free(fails[i]);
    nfails = 0;
}

static void put(const char *dir, const char *name, const char *fixture)
{
    char path[800];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct err e;
    if (!fixture) {
        REQUIRE(fs_write_file(path, "hello", 5, &e) == 0);
        return;
    }
    char *from = test_path(fixture);
    uint8_t *buf;
    size_t n;
    REQUIRE(fs_read_file(from, 1u << 24, &buf, &n, &e) == 0);
    REQUIRE(fs_write_file(path, buf, n, &e) == 0);
    free(buf);
    free(from);
}

/* The walk's relative names, joined by spaces. */
static void rels(const struct ingest_walk *w, char *out, size_t cap)
{
    out[0] = 0;
    for (size_t i = 0; i < w->n; i++) {
        size_t l = strlen(out);
        snprintf(out + l, cap - l, "%s%s", i ? " " : "", w->files[i].rel);
    }
}

TEST(escape_names)
{
    struct {
        const char *in, *want;
    } v[] = {
        {"plain.jpg", "plain.jpg"},
        {"caf\xe9.jpg", "caf%E9.jpg"},                 /* Latin-1 */
        {"caf\xc3\xa9.jpg", "caf\xc3\xa9.jpg"},        /* UTF-8 kept */
        {"100%.jpg", "100%25.jpg"},                    /* a literal % */
        {"%E9", "%25E9"},                              /* cannot be read as an escape */
        {"\xc0\xaf", "%C0%AF"},                        /* overlong '/' */
        {"\xed\xa0\x80", "%ED%A0%80"},                 /* a surrogate */
        {"\xf4\x90\x80\x80", "%F4%90%80%80"},          /* above U+10FFFF */
        {"\xf0\x9f\x98\x80 ok", "\xf0\x9f\x98\x80 ok"}, /* 4-byte UTF-8 */
        {"a\xe2\x82", "a%E2%82"},                      /* cut short */
        {"", ""},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char *got = ingest_escape_name(v[i].in);
        REQUIRE(got);
        CHECKF(!strcmp(got, v[i].want), "escape #%zu: got '%s', want '%s'", i, got, v[i].want);
        CHECKF(ingest_utf8_valid(got), "escape #%zu is valid UTF-8", i);
        free(got);
    }
    CHECK(!ingest_utf8_valid("caf\xe9"));
    CHECK(ingest_utf8_valid("caf\xc3\xa9"));
}

TEST(path_helpers)
{
    char *p = ingest_path_normal("/a/b", "../c/./d//e/");
    CHECK(p && !strcmp(p, "/a/c/d/e"));
    free(p);
    p = ingest_path_normal("/x", "/../..");
    CHECK(p && !strcmp(p, "/"));
    free(p);
    CHECK(ingest_path_under("/a/b/c", "/a/b", 1));
    CHECK(!ingest_path_under("/a/bc", "/a/b", 1));
    CHECK(ingest_path_under("/a/b", "/a/b", 0));
    CHECK(!ingest_path_under("/a/b/c", "/a/b", 0));
    CHECK(ingest_path_under("/anything", "/", 1));
}

TEST(walk_rules)
{
    char tmp[] = "/tmp/imgsearch-walk-XXXXXX";
    REQUIRE(mkdtemp(tmp));
    char root[100], sub[120], hidden[120], outside[100], path[300], target[300];
    snprintf(root, sizeof root, "%s/root", tmp);
    snprintf(sub, sizeof sub, "%s/sub", root);
    snprintf(hidden, sizeof hidden, "%s/.cache", root);
    snprintf(outside, sizeof outside, "%s/outside", tmp);
    struct err e = {0};
    REQUIRE(fs_mkdirs(sub, &e) == 0 && fs_mkdirs(hidden, &e) == 0 && fs_mkdirs(outside, &e) == 0);
    put(root, "b.jpg", "tiny-clip/images/fruits.jpg");
    put(root, "a.txt", NULL); /* a candidate: the bytes decide later */
    put(root, ".h.jpg", "tiny-clip/images/fruits.jpg");
    put(root, "caf\xe9.jpg", "tiny-clip/images/fruits.jpg");
    put(root, "100%.jpg", "tiny-clip/images/fruits.jpg");
    put(hidden, "x.jpg", "tiny-clip/images/fruits.jpg");
    put(sub, "c.png", "tiny-clip/images/chelsea.png");
    put(outside, "o.jpg", "tiny-clip/images/fruits.jpg");
    /* links: to a file inside (followed), to a file and a folder outside
     * (skipped), to a folder inside (its files once: it was walked), a
     * loop, and a dangling one */
    snprintf(path, sizeof path, "%s/in.jpg", root);
    snprintf(target, sizeof target, "%s/c.png", sub);
    REQUIRE(symlink(target, path) == 0);
    snprintf(path, sizeof path, "%s/out.jpg", root);
    snprintf(target, sizeof target, "%s/o.jpg", outside);
    REQUIRE(symlink(target, path) == 0);
    snprintf(path, sizeof path, "%s/outdir", root);
    REQUIRE(symlink(outside, path) == 0);
    snprintf(path, sizeof path, "%s/zsub", root);
    REQUIRE(symlink(sub, path) == 0);
    snprintf(path, sizeof path, "%s/loop", sub);
    REQUIRE(symlink(root, path) == 0);
    snprintf(path, sizeof path, "%s/dangling.jpg", root);
    REQUIRE(symlink("/nonexistent/x.jpg", path) == 0);

    struct ingest_hooks h = {.fail = on_fail};
    struct ingest_counts n = {0};
    struct ingest_walk w;
    const char *roots[1] = {root};
    REQUIRE(ingest_walk(&w, roots, 1, &h, &n, &e) == 0);
    char got[1000];
    rels(&w, got, sizeof got);
    CHECKF(!strcmp(got, "100%25.jpg a.txt b.jpg caf%E9.jpg in.jpg sub/c.png"), "walk: %s", got);
    CHECK_INT_EQ(n.failed, 0);
    CHECK_INT_EQ(nfails, 0);
    /* the source is the path as walked (through the link); the raw name */
    snprintf(path, sizeof path, "%s/in.jpg", root);
    CHECK(w.n == 6 && !strcmp(w.files[4].path, path));
    snprintf(path, sizeof path, "%s/caf\xe9.jpg", root);
    CHECK(w.n == 6 && !strcmp(w.files[3].path, path));
    CHECK(w.n == 6 && w.files[1].size == 5 && w.files[1].mtime > 0 && !w.files[1].explicit_file);
    ingest_walk_free(&w);

    /* two roots: a folder reached again is walked once; a file root is
     * one explicit candidate named by its escaped name */
    snprintf(path, sizeof path, "%s/caf\xe9.jpg", root);
    const char *roots2[3] = {sub, root, path};
    REQUIRE(ingest_walk(&w, roots2, 3, &h, &n, &e) == 0);
    rels(&w, got, sizeof got);
    CHECKF(!strcmp(got, "c.png 100%25.jpg a.txt b.jpg caf%E9.jpg in.jpg caf%E9.jpg"), "walk: %s",
           got);
    CHECK(w.n == 7 && w.files[6].explicit_file && w.files[6].root == 2 && w.files[0].root == 0);
    ingest_walk_free(&w);

    /* an unreadable folder is reported and remembered (not as root: root
     * may read anything) */
    if (geteuid() != 0) {
        REQUIRE(chmod(sub, 0) == 0);
        REQUIRE(ingest_walk(&w, roots, 1, &h, &n, &e) == 0);
        CHECK_INT_EQ(n.failed, 1);
        CHECK(nfails == 1 && strstr(fails[0], "cannot read the folder"));
        CHECK(w.nbad == 1 && !strcmp(w.bad_dirs[0], sub));
        ingest_walk_free(&w);
        chmod(sub, 0755);
    }
    /* a missing root */
    const char *missing[1] = {"/nonexistent/folder"};
    CHECK(ingest_walk(&w, missing, 1, &h, &n, &e) == -ERR_NOT_FOUND);
    CHECK_STR_CONTAINS(e.msg, "/nonexistent/folder");
    ingest_walk_free(&w);

    /* the sniff: bytes, not names */
    snprintf(path, sizeof path, "%s/a.txt", root);
    CHECK_INT_EQ(ingest_sniff_file(path, &e), 0);
    snprintf(path, sizeof path, "%s/b.jpg", root);
    CHECK_INT_EQ(ingest_sniff_file(path, &e), 1);
    CHECK(ingest_sniff_file("/nonexistent/x.jpg", &e) == -ERR_IO);
    clear_fails();
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    CHECK(system(cmd) == 0);
}

TEST_MAIN(escape_names, path_helpers, walk_rules)
