/* test_ingest_sidecar.c - the metadata sidecar: CSV (RFC 4180 quoting, a
 * byte order mark, CRLF, blank lines) and JSON lines, keyed by path (the
 * three readings of a relative path) or id; merged over old metadata with
 * the change flag; errors name the file and line. */
#include <unistd.h>

#include "test.h"
#include "ingest/ingest.h"
#include "util/fsutil.h"

static char dir[] = "/tmp/imgsearch-sidecar-XXXXXX";

static int load(struct ingest_sidecar *sc, const char *name, const char *text, struct err *e)
{
    char path[200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (fs_write_file(path, text, strlen(text), e))
        return -1;
    memset(sc, 0, sizeof *sc);
    return ingest_sidecar_load(sc, path, e);
}

/* merge over old, compared with want (compact JSON) */
static void check_merge(const struct ingest_sidecar *sc, const char *old, const char *abs,
                        const char *rel, const char *id, const char *want, int want_changed)
{
    int changed = -1;
    char *md = ingest_sidecar_merge(sc, old, abs, rel, id, &changed);
    CHECKF(md && !strcmp(md, want), "merge %s/%s: got %s, want %s", rel ? rel : "-",
           id ? id : "-", md ? md : "(null)", want);
    CHECK_INT_EQ(changed, want_changed);
    free(md);
}

TEST(csv)
{
    REQUIRE(mkdtemp(dir));
    struct ingest_sidecar sc;
    struct err e;
    char abs[300];
    const char *csv = "\xef\xbb\xbfpath,category,note\r\n"
                      "a.jpg,animal,\"a cat, \"\"Tom\"\"\"\r\n"
                      "\r\n"
                      "sub/b.jpg,food,\"two\nlines\"\n";
    REQUIRE(load(&sc, "m.csv", csv, &e) == 0);
    /* relative to the sidecar's folder */
    snprintf(abs, sizeof abs, "%s/a.jpg", dir);
    check_merge(&sc, NULL, abs, "x/a.jpg", "a.jpg",
                "{\"category\":\"animal\",\"note\":\"a cat, \\\"Tom\\\"\"}", 1);
    /* relative to the root being walked */
    check_merge(&sc, NULL, "/elsewhere/sub/b.jpg", "sub/b.jpg", "b",
                "{\"category\":\"food\",\"note\":\"two\\nlines\"}", 1);
    /* merged over old fields; the same values are no change */
    check_merge(&sc, "{\"x\":1}", "/none", "sub/b.jpg", NULL,
                "{\"x\":1,\"category\":\"food\",\"note\":\"two\\nlines\"}", 1);
    check_merge(&sc, "{\"category\":\"food\",\"note\":\"two\\nlines\"}", "/none", "sub/b.jpg",
                NULL, "{\"category\":\"food\",\"note\":\"two\\nlines\"}", 0);
    /* no match, no sidecar: old kept, "{}" for none */
    check_merge(&sc, "{\"x\":1}", "/none", "none.jpg", "none", "{\"x\":1}", 0);
    check_merge(NULL, NULL, "/none", "none.jpg", "none", "{}", 0);
    ingest_sidecar_free(&sc);

    /* keyed by id */
    REQUIRE(load(&sc, "ids.csv", "id,n\nk1,5\n", &e) == 0);
    check_merge(&sc, NULL, "/p", "r", "k1", "{\"n\":\"5\"}", 1);
    ingest_sidecar_free(&sc);

    /* errors name the file and line */
    CHECK(load(&sc, "bad1.csv", "path,a\nx.jpg,1,2\n", &e) == -ERR_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(e.msg, "bad1.csv:2: 3 fields, the header has 2");
    ingest_sidecar_free(&sc);
    CHECK(load(&sc, "bad2.csv", "name,a\nx.jpg,1\n", &e) == -ERR_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(e.msg, "no 'path' or 'id' column");
    ingest_sidecar_free(&sc);
    CHECK(load(&sc, "bad3.csv", "path,a\n\"x.jpg,1\n", &e) == -ERR_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(e.msg, "bad3.csv:2: a quoted field is never closed");
    ingest_sidecar_free(&sc);
    CHECK(load(&sc, "bad4.csv", "path,a\nx.jpg,caf\xe9\n", &e) == -ERR_INVALID_UTF8);
    ingest_sidecar_free(&sc);
    CHECK(load(&sc, "bad5.csv", "path,a\n,1\n", &e) == -ERR_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(e.msg, "bad5.csv:2: the path is empty");
    ingest_sidecar_free(&sc);
}

TEST(jsonl)
{
    struct ingest_sidecar sc;
    struct err e;
    const char *j = "{\"path\": \"/abs/a.jpg\", \"tag\": \"x\", \"n\": 3}\n"
                    "\n"
                    "  {\"id\": \"k2\", \"tag\": \"y\"}\r\n";
    REQUIRE(load(&sc, "m.jsonl", j, &e) == 0);
    check_merge(&sc, NULL, "/abs/a.jpg", "a.jpg", "a", "{\"tag\":\"x\",\"n\":3}", 1);
    check_merge(&sc, "{\"tag\":\"old\"}", "/p", "r", "k2", "{\"tag\":\"y\"}", 1);
    /* path first, then id: the id's fields win where both set one */
    check_merge(&sc, NULL, "/abs/a.jpg", "a.jpg", "k2", "{\"tag\":\"y\",\"n\":3}", 1);
    ingest_sidecar_free(&sc);
    CHECK(load(&sc, "bad.jsonl", "{\"path\": \"x.jpg\"}\n[1]\n", &e) == -ERR_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(e.msg, "bad.jsonl:2: not a JSON object");
    ingest_sidecar_free(&sc);
    CHECK(load(&sc, "bad2.jsonl", "{\"tag\": 1}\n", &e) == -ERR_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(e.msg, "bad2.jsonl:1: needs a \"path\" or \"id\" string");
    ingest_sidecar_free(&sc);
    char cmd[100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

TEST_MAIN(csv, jsonl)
