/* failed.c - the files that failed to index, remembered between runs (see
 * ingest.h, "failures"), so that a file that failed and has not changed
 * since is skipped instead of failing again on every run.
 *
 * Design:
 *  1. A failure is the file's path with the size and mtime it had when it
 *     failed; any change to the file (size or mtime) makes it a candidate
 *     again, as rule 5 does for items.
 *  2. The record is a text file, one failure a line: "SIZE MTIME PATH".
 *     Paths are bytes (not always UTF-8), so not JSON; a path holding a
 *     newline is not remembered (it simply fails again). A line that does
 *     not parse is ignored: the record is a cache, never the truth.
 *  3. The list is kept sorted by path, so lookups are a binary search, and
 *     it is written whole, atomically (fs_write_file), after each run.
 *  4. Limits: the record is read only up to INGEST_FAILED_FILE_MAX bytes;
 *     entries beyond that are forgotten (those files fail once more).
 */
#include "ingest/ingest_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fsutil.h"

#define INGEST_FAILED_FILE_MAX (16u << 20) /* bytes of the record read */

static int cmp_path(const void *a, const void *b)
{
    return strcmp(((const struct ingest_failure *)a)->path,
                  ((const struct ingest_failure *)b)->path);
}

static struct ingest_failure *find(const struct ingest_failures *f, const char *path)
{
    struct ingest_failure key = {.path = (char *)path};
    return f->n ? bsearch(&key, f->v, f->n, sizeof *f->v, cmp_path) : NULL;
}

static int push(struct ingest_failures *f, const char *path, int64_t size, int64_t mtime)
{
    if (f->n == f->cap) {
        size_t nc = f->cap ? f->cap * 2 : 64;
        struct ingest_failure *g = realloc(f->v, nc * sizeof *g);
        if (!g)
            return -1;
        f->v = g;
        f->cap = nc;
    }
    char *p = strdup(path);
    if (!p)
        return -1;
    f->v[f->n++] = (struct ingest_failure){.path = p, .size = size, .mtime = mtime};
    return 0;
}

void ingest_failures_free(struct ingest_failures *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->v[i].path);
    free(f->v);
    *f = (struct ingest_failures){0};
}

int ingest_failures_load(struct ingest_failures *f, const char *file, struct err *err)
{
    *f = (struct ingest_failures){0};
    uint8_t *buf;
    size_t len;
    struct err re;
    int rc = fs_read_file(file, INGEST_FAILED_FILE_MAX, &buf, &len, &re);
    if (rc == -ERR_NOT_FOUND || (rc && !fs_exists(file)))
        return 0;
    if (rc == -ERR_TOO_LARGE)
        return 0; /* rule 4: forget them */
    if (rc) {
        *err = re;
        return rc;
    }
    char *s = (char *)buf, *save = NULL;
    for (char *line = strtok_r(s, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        long long size, mtime;
        int off = 0;
        if (line[0] == '#' || sscanf(line, "%lld %lld %n", &size, &mtime, &off) != 2 || !off ||
            line[off] != '/')
            continue;
        if (push(f, line + off, size, mtime)) {
            free(buf);
            ingest_failures_free(f);
            return err_set(err, ERR_NOMEM, "no memory");
        }
    }
    free(buf);
    qsort(f->v, f->n, sizeof *f->v, cmp_path);
    /* a path twice (a hand edit): keep one */
    size_t w = 0;
    for (size_t i = 0; i < f->n; i++) {
        if (w && !strcmp(f->v[w - 1].path, f->v[i].path)) {
            free(f->v[i].path);
            continue;
        }
        f->v[w++] = f->v[i];
    }
    f->n = w;
    return 0;
}

size_t ingest_failures_skip(const struct ingest_failures *f, struct ingest_jobs *js)
{
    size_t w = 0, skipped = 0;
    for (size_t i = 0; i < js->n; i++) {
        struct ingest_job *j = &js->v[i];
        const struct ingest_failure *e = NULL;
        if ((j->kind == INGEST_NEW || j->kind == INGEST_CHANGED) && j->size >= 0)
            e = find(f, j->path);
        if (e && e->size == j->size && e->mtime == j->mtime) {
            ingest_job_clear(j);
            skipped++;
            continue;
        }
        js->v[w++] = *j;
    }
    js->n = w;
    return skipped;
}

int ingest_failures_update(struct ingest_failures *f, const struct ingest_jobs *js,
                           struct err *err)
{
    for (size_t i = 0; i < js->n; i++) {
        const struct ingest_job *j = &js->v[i];
        if (j->outcome == INGEST_PENDING)
            continue; /* not looked at: what was known stays */
        struct ingest_failure *e = find(f, j->path);
        int failed = j->outcome == INGEST_FAILED && j->size >= 0 && !strchr(j->path, '\n');
        if (e && failed) {
            e->size = j->size;
            e->mtime = j->mtime;
        } else if (e) {
            e->size = -1; /* no longer a failure: dropped below */
        } else if (failed) {
            if (push(f, j->path, j->size, j->mtime))
                return err_set(err, ERR_NOMEM, "no memory");
            qsort(f->v, f->n, sizeof *f->v, cmp_path);
        }
    }
    size_t w = 0;
    for (size_t i = 0; i < f->n; i++) {
        struct stat sb;
        if (f->v[i].size < 0 || lstat(f->v[i].path, &sb)) { /* fixed, or gone */
            free(f->v[i].path);
            continue;
        }
        f->v[w++] = f->v[i];
    }
    f->n = w;
    return 0;
}

int ingest_failures_save(const struct ingest_failures *f, const char *file, struct err *err)
{
    if (!f->n) {
        if (unlink(file) && errno != ENOENT)
            return err_set(err, ERR_IO, "%s: %s", file, strerror(errno));
        return 0;
    }
    size_t cap = 128;
    for (size_t i = 0; i < f->n; i++)
        cap += strlen(f->v[i].path) + 48;
    char *buf = malloc(cap);
    if (!buf)
        return err_set(err, ERR_NOMEM, "no memory");
    size_t n = (size_t)snprintf(buf, cap, "# imgsearch index: files that failed, with the size "
                                          "and mtime they had (SIZE MTIME PATH)\n");
    for (size_t i = 0; i < f->n; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%lld %lld %s\n", (long long)f->v[i].size,
                              (long long)f->v[i].mtime, f->v[i].path);
    int rc = fs_write_file(file, buf, n, err);
    free(buf);
    return rc;
}
