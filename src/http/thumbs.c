/* thumbs.c - the thumbnail cache and GET /items/{id}/thumb (see thumbs.h).
 *
 * 1. Names: a cache file is KEY.jpg, KEY the hex SHA-256 of what makes the
 *    picture (id, source, digest or size+mtime, size). The ETag is the
 *    quoted key, so a client's copy is valid exactly as long as the file.
 * 2. The byte count is kept in memory (summed from the folder at open) and
 *    updated on each put and eviction; only an eviction lists the folder.
 *    Two workers making the same thumbnail at once both write it: the
 *    renames are atomic, the count may then be a file too high until the
 *    next eviction recounts.
 * 3. Least recently served goes first: a hit sets the file's mtime to now
 *    (futimens), the eviction sorts by mtime.
 * 4. The route opens the item's file as /items/{id}/image does (its real
 *    path inside a catalog root or the upload folder, opened beneath the
 *    root without following links), so a thumbnail never reveals a file
 *    the image route would not serve.
 */
#include "http/thumbs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http/http_int.h"
#include "image/thumb.h"
#include "util/fsutil.h"
#include "util/sha256.h"

struct http_thumbs {
    char *dir;          /* the cache folder */
    uint64_t max;       /* bound in bytes */
    pthread_mutex_t mu; /* guards what follows */
    uint64_t bytes;     /* bytes held */
    uint64_t files;     /* files held */
    unsigned tmpseq;    /* temp file names */
};

struct entry {
    char name[HTTP_THUMBS_KEY_LEN + 8];
    int64_t mtime_ns;
    uint64_t size;
};

static int is_key_file(const char *name)
{
    size_t n = strlen(name);
    if (n != HTTP_THUMBS_KEY_LEN + 4 || strcmp(name + HTTP_THUMBS_KEY_LEN, ".jpg") != 0)
        return 0;
    for (size_t i = 0; i < HTTP_THUMBS_KEY_LEN; i++)
        if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
            return 0;
    return 1;
}

/* Lists the cache files into *out (malloc'd); removes stray temp files. */
static int list(struct http_thumbs *t, struct entry **out, size_t *n, struct err *err)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(t->dir);
    if (!d)
        return err_set(err, err_code_of_errno(errno, 0), "%s: %s", t->dir, strerror(errno));
    size_t cap = 0;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d))) {
        struct stat sb;
        if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode))
            continue;
        if (!is_key_file(de->d_name)) {
            if (strstr(de->d_name, ".tmp."))
                unlinkat(dirfd(d), de->d_name, 0); /* a write that never finished */
            continue;
        }
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            struct entry *v = realloc(*out, cap * sizeof *v);
            if (!v) {
                rc = err_set(err, ERR_NOMEM, "out of memory listing the thumbnail cache");
                break;
            }
            *out = v;
        }
        struct entry *e = &(*out)[(*n)++];
        memcpy(e->name, de->d_name, HTTP_THUMBS_KEY_LEN + 5); /* is_key_file: 68 + NUL */
        e->mtime_ns = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
        e->size = (uint64_t)sb.st_size;
    }
    closedir(d);
    if (rc) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return rc;
}

int http_thumbs_open(struct http_thumbs **out, const char *dir, uint64_t max_bytes,
                     struct err *err)
{
    *out = NULL;
    if (max_bytes < 1)
        return err_set(err, ERR_INVALID_ARGUMENT, "thumbnail cache bound must be positive");
    int rc = fs_mkdirs(dir, err);
    if (rc)
        return rc;
    struct http_thumbs *t = calloc(1, sizeof *t);
    if (!t || !(t->dir = strdup(dir))) {
        free(t);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    t->max = max_bytes;
    pthread_mutex_init(&t->mu, NULL);
    struct entry *v = NULL;
    size_t n = 0;
    if ((rc = list(t, &v, &n, err))) {
        http_thumbs_free(t);
        return rc;
    }
    for (size_t i = 0; i < n; i++)
        t->bytes += v[i].size;
    t->files = n;
    free(v);
    *out = t;
    return 0;
}

void http_thumbs_free(struct http_thumbs *t)
{
    if (!t)
        return;
    pthread_mutex_destroy(&t->mu);
    free(t->dir);
    free(t);
}

void http_thumbs_key(const char *id, const char *source, const char *sha256, int64_t size,
                     int64_t mtime, int thumb_size, char key[HTTP_THUMBS_KEY_LEN + 1])
{
    struct sha256 c;
    char num[96];
    sha256_init(&c);
    sha256_update(&c, "thumb-v1", 9); /* bump when the pictures change */
    sha256_update(&c, id, strlen(id) + 1);
    sha256_update(&c, source ? source : "", strlen(source ? source : "") + 1);
    if (sha256)
        sha256_update(&c, sha256, strlen(sha256) + 1);
    else {
        int k = snprintf(num, sizeof num, "%lld/%lld", (long long)size, (long long)mtime);
        sha256_update(&c, num, (size_t)k + 1);
    }
    int k = snprintf(num, sizeof num, "%d", thumb_size);
    sha256_update(&c, num, (size_t)k);
    sha256_final_hex(&c, key);
}

static void path_of(const struct http_thumbs *t, const char *key, char *out, size_t n)
{
    snprintf(out, n, "%s/%.*s.jpg", t->dir, HTTP_THUMBS_KEY_LEN, key);
}

int http_thumbs_get(struct http_thumbs *t, const char *key, uint64_t *len)
{
    char path[PATH_MAX];
    path_of(t, key, path, sizeof path);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat sb;
    if (fd < 0)
        return -1;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size < 1) {
        close(fd);
        return -1;
    }
    futimens(fd, NULL); /* served now: evicted last */
    *len = (uint64_t)sb.st_size;
    return fd;
}

static int by_mtime(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    return x->mtime_ns < y->mtime_ns ? -1 : x->mtime_ns > y->mtime_ns;
}

/* Removes the least recently served files until 3/4 of the bound. Called
 * with mu held. */
static int evict(struct http_thumbs *t, struct err *err)
{
    struct entry *v = NULL;
    size_t n = 0;
    int rc = list(t, &v, &n, err);
    if (rc)
        return rc;
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += v[i].size;
    qsort(v, n, sizeof *v, by_mtime);
    uint64_t target = t->max - t->max / 4;
    size_t i = 0, left = n;
    for (; i < n && total > target; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", t->dir, v[i].name);
        if (unlink(path) == 0 || errno == ENOENT) {
            total -= v[i].size;
            left--;
        }
    }
    t->bytes = total;
    t->files = left;
    free(v);
    return 0;
}

int http_thumbs_put(struct http_thumbs *t, const char *key, const void *p, size_t n,
                    struct err *err)
{
    char path[PATH_MAX], tmp[PATH_MAX + 32];
    path_of(t, key, path, sizeof path);
    pthread_mutex_lock(&t->mu);
    unsigned seq = ++t->tmpseq;
    pthread_mutex_unlock(&t->mu);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%u", path, (long)getpid(), seq);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return err_set(err, err_code_of_errno(errno, 0), "thumbnail cache: %s", strerror(errno));
    const uint8_t *b = p;
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, b + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            close(fd);
            unlink(tmp);
            return err_set(err, err_code_of_errno(e, 0), "thumbnail cache: %s", strerror(e));
        }
        off += (size_t)w;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return err_set(err, err_code_of_errno(e, 0), "thumbnail cache: %s", strerror(e));
    }
    int rc = 0;
    pthread_mutex_lock(&t->mu);
    t->bytes += n;
    t->files++;
    if (t->bytes > t->max)
        rc = evict(t, err);
    pthread_mutex_unlock(&t->mu);
    return rc;
}

void http_thumbs_stats(struct http_thumbs *t, uint64_t *bytes, uint64_t *files)
{
    pthread_mutex_lock(&t->mu);
    *bytes = t->bytes;
    *files = t->files;
    pthread_mutex_unlock(&t->mu);
}

/* ---- the route ------------------------------------------------------------ */

static int inside(const char *path, const char *dir)
{
    if (!dir)
        return 0;
    size_t n = strlen(dir);
    return !strncmp(path, dir, n) && (path[n] == '/' || (n == 1 && dir[0] == '/'));
}

/* The item's file, opened as the image route opens it; -1 when it may not
 * be served (or does not exist). */
static int open_source(struct http_server *s, const char *source)
{
    char *real = source ? realpath(source, NULL) : NULL;
    if (!real)
        return -1;
    const char *root = inside(real, s->upload_dir) ? s->upload_dir : NULL;
    for (int i = 0; i < s->nroots && !root; i++)
        if (inside(real, s->roots[i]))
            root = s->roots[i];
    int fd = root ? fs_open_beneath(root, real + strlen(root) + (strcmp(root, "/") != 0), 1) : -1;
    free(real);
    return fd;
}

static int read_fd(int fd, uint8_t **out, size_t *len, struct err *err)
{
    struct stat sb;
    *out = NULL;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        return err_set(err, ERR_NOT_FOUND, "the item has no image to serve");
    if ((uint64_t)sb.st_size > IMG_MAX_FILE_BYTES)
        return err_set(err, ERR_TOO_LARGE, "the item's image has %lld bytes (at most %u)",
                       (long long)sb.st_size, IMG_MAX_FILE_BYTES);
    size_t n = (size_t)sb.st_size, got = 0;
    uint8_t *b = malloc(n ? n : 1);
    if (!b)
        return err_set(err, ERR_NOMEM, "out of memory");
    while (got < n) {
        ssize_t r = pread(fd, b + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    *out = b;
    *len = got;
    return 0;
}

/* 1 when an If-None-Match value lists etag (or is "*"). */
static int etag_matches(const char *inm, const char *etag)
{
    if (!inm)
        return 0;
    size_t n = strlen(etag);
    for (const char *p = inm; *p;) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        if (!strncmp(p, "W/", 2))
            p += 2;
        if (*p == '*' || !strncmp(p, etag, n))
            return 1;
        while (*p && *p != ',')
            p++;
    }
    return 0;
}

static void reply_thumb(struct http_req *r, int status, const char *etag, char *buf, size_t n,
                        int fd, uint64_t fd_len)
{
    http__reply_bytes(r, status, status == 304 ? NULL : "image/jpeg", buf, n, buf == NULL);
    r->reply.cache = 1;
    snprintf(r->reply.etag, sizeof r->reply.etag, "%s", etag);
    if (fd >= 0) {
        r->reply.fd = fd;
        r->reply.fd_len = fd_len;
    }
}

void http__item_thumb(struct http_req *r)
{
    struct http_server *s = r->s;
    struct err e = {0};
    struct store_item it = {0};
    uint8_t *bytes = NULL, *jpg = NULL;
    size_t nbytes = 0, njpg = 0;
    int fd = -1;
    const char *sz = http__query(r, "size");
    int size = 256;
    if (sz && strcmp(sz, "128") && strcmp(sz, "256") && strcmp(sz, "512")) {
        err_set(&e, ERR_INVALID_ARGUMENT, "size must be 128, 256 or 512, not '%.40s'", sz);
        goto fail;
    }
    if (sz)
        size = atoi(sz);
    if (!s->thumbs) {
        err_set(&e, ERR_UNAVAILABLE, "the thumbnail cache is not open");
        goto fail;
    }
    if (store_get(s->store, r->m.id, &it, &e))
        goto fail;
    char key[HTTP_THUMBS_KEY_LEN + 1], etag[HTTP_THUMBS_KEY_LEN + 3];
    http_thumbs_key(it.id, it.source, it.sha256, it.size, it.mtime, size, key);
    snprintf(etag, sizeof etag, "\"%s\"", key);
    if (etag_matches(http__header(r, "If-None-Match"), etag)) {
        reply_thumb(r, 304, etag, NULL, 0, -1, 0);
        goto out;
    }
    uint64_t clen = 0;
    if ((fd = http_thumbs_get(s->thumbs, key, &clen)) >= 0) {
        reply_thumb(r, 200, etag, NULL, 0, fd, clen);
        fd = -1;
        goto out;
    }
    if ((fd = open_source(s, it.source)) < 0) {
        err_set(&e, ERR_NOT_FOUND, "item '%.200s' has no image to serve", r->m.id);
        goto fail;
    }
    if (read_fd(fd, &bytes, &nbytes, &e))
        goto fail;
    struct img_decode_opts o = {.max_pixels = s->cfg.pipe.max_pixels};
    if (img_thumb_jpeg(bytes, nbytes, size, &o, &jpg, &njpg, NULL, NULL, &e)) {
        err_prefix(&e, "item '%.200s'", r->m.id);
        goto fail;
    }
    struct err ce;
    if (http_thumbs_put(s->thumbs, key, jpg, njpg, &ce)) /* served anyway */
        http__guard_log(s, ce.msg);
    reply_thumb(r, 200, etag, (char *)jpg, njpg, -1, 0);
    jpg = NULL;
    goto out;
fail:
    http__reply_err(r, &e);
out:
    if (fd >= 0)
        close(fd);
    free(bytes);
    free(jpg);
    store_item_clear(&it);
}
