/* walk.c - roots into candidate files, with the rules of ingest.h: hidden
 * names skipped, links followed only inside the roots, each folder walked
 * once, names escaped into valid UTF-8.
 *
 * Design:
 *  1. Names are sorted (bytewise) before recursing, so files, and the ids
 *     they get, come in a stable order whatever the file system's.
 *  2. A link costs a realpath(3); plain files and folders cost one lstat.
 *     Folders cost one more stat for their (device, inode), kept in a hash
 *     set: that is how loops and second ways into a folder are caught.
 *  3. Image sniffing is not done here (rule 1 of ingest.h): an incremental
 *     run must not open the files it skips.
 *
 * Reference: RFC 3629 (UTF-8) for what a well-formed sequence is.
 */
#include "ingest/ingest_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image/image.h"

/* ---- shared helpers --------------------------------------------------------- */

void ingest__fail(const struct ingest_hooks *h, struct ingest_counts *n, const char *msg)
{
    if (n)
        n->failed++;
    if (h && h->fail)
        h->fail(h->ctx, msg);
}

int ingest__stop(const struct ingest_hooks *h)
{
    return h && h->stop && h->stop(h->ctx);
}

int ingest__is_image(const uint8_t *data, size_t n)
{
    return img_sniff(data, n < INGEST_SNIFF_BYTES ? n : INGEST_SNIFF_BYTES) != IMG_FMT_UNKNOWN;
}

int ingest_sniff_file(const char *path, struct err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(err, ERR_IO, "%s: %s", path, strerror(errno));
    uint8_t head[INGEST_SNIFF_BYTES];
    size_t len = 0;
    while (len < sizeof head) {
        ssize_t r = read(fd, head + len, sizeof head - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            return err_set(err, ERR_IO, "%s: read: %s", path, strerror(e));
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    return ingest__is_image(head, len);
}

char *ingest__path_join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    int slash = la && a[la - 1] != '/';
    char *s = malloc(la + lb + 2);
    if (!s)
        return NULL;
    memcpy(s, a, la);
    if (slash)
        s[la++] = '/';
    memcpy(s + la, b, lb + 1);
    return s;
}

char *ingest_path_normal(const char *base, const char *p)
{
    char *joined = p[0] == '/' ? strdup(p) : ingest__path_join(base, p);
    if (!joined)
        return NULL;
    size_t n = strlen(joined);
    char *out = malloc(n + 2);
    if (!out) {
        free(joined);
        return NULL;
    }
    size_t o = 0;
    for (char *s = joined; *s;) {
        while (*s == '/')
            s++;
        char *e = s;
        while (*e && *e != '/')
            e++;
        size_t len = (size_t)(e - s);
        if (len == 0 || (len == 1 && s[0] == '.')) {
            /* nothing */
        } else if (len == 2 && s[0] == '.' && s[1] == '.') {
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--; /* drop the slash too */
        } else {
            out[o++] = '/';
            memcpy(out + o, s, len);
            o += len;
        }
        s = e;
    }
    if (o == 0)
        out[o++] = '/';
    out[o] = 0;
    free(joined);
    return out;
}

int ingest_path_under(const char *path, const char *root, int is_dir)
{
    if (!is_dir)
        return !strcmp(path, root);
    size_t l = strlen(root);
    if (l == 1) /* "/" */
        return path[0] == '/';
    return !strncmp(path, root, l) && (path[l] == '/' || path[l] == 0);
}

/* ---- names --------------------------------------------------------------------- */

/* Bytes in the well-formed UTF-8 sequence at s (1..4), or 0 when there is
 * none (RFC 3629, table 3-7 of Unicode 15). */
static int utf8_seq(const unsigned char *s)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    int n;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (int i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return n;
}

int ingest_utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int k = utf8_seq(p);
        if (!k)
            return 0;
        p += k;
    }
    return 1;
}

char *ingest_escape_name(const char *raw)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p = (const unsigned char *)raw;
    char *out = malloc(3 * strlen(raw) + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    while (*p) {
        int k = *p == '%' ? 0 : utf8_seq(p);
        if (k) {
            memcpy(out + o, p, (size_t)k);
            o += (size_t)k;
            p += k;
            continue;
        }
        out[o++] = '%';
        out[o++] = hex[*p >> 4];
        out[o++] = hex[*p & 15];
        p++;
    }
    out[o] = 0;
    return out;
}

/* ---- the walk -------------------------------------------------------------------- */

struct ingest_dev_ino {
    dev_t dev;  /* device */
    ino_t ino;  /* inode; 0 with dev 0 marks an empty slot */
    int used;   /* slot taken */
};

/* Adds (dev, ino) to the set: 1 added, 0 already there, -1 no memory. */
static int seen_add(struct ingest_walk *w, dev_t dev, ino_t ino)
{
    if (2 * (w->nseen + 1) > w->capseen) {
        size_t nc = w->capseen ? 2 * w->capseen : 64;
        struct ingest_dev_ino *g = calloc(nc, sizeof *g);
        if (!g)
            return -1;
        for (size_t i = 0; i < w->capseen; i++) {
            if (!w->seen[i].used)
                continue;
            size_t j = ((size_t)w->seen[i].ino * 0x9e3779b97f4a7c15ull ^ (size_t)w->seen[i].dev) &
                       (nc - 1);
            while (g[j].used)
                j = (j + 1) & (nc - 1);
            g[j] = w->seen[i];
        }
        free(w->seen);
        w->seen = g;
        w->capseen = nc;
    }
    size_t j = ((size_t)ino * 0x9e3779b97f4a7c15ull ^ (size_t)dev) & (w->capseen - 1);
    while (w->seen[j].used) {
        if (w->seen[j].dev == dev && w->seen[j].ino == ino)
            return 0;
        j = (j + 1) & (w->capseen - 1);
    }
    w->seen[j] = (struct ingest_dev_ino){dev, ino, 1};
    w->nseen++;
    return 1;
}

static int push(struct ingest_walk *w, char *path, char *rel, const struct stat *sb, int root,
                int expl)
{
    if (w->n == w->cap) {
        size_t nc = w->cap ? 2 * w->cap : 256;
        struct ingest_file *g = realloc(w->files, nc * sizeof *g);
        if (!g)
            return -1;
        w->files = g;
        w->cap = nc;
    }
    w->files[w->n++] = (struct ingest_file){path, rel, (int64_t)sb->st_size,
                                            (int64_t)sb->st_mtim.tv_sec, root, expl, 0};
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void bad_dir(struct ingest_walk *w, const struct ingest_hooks *h, struct ingest_counts *n,
                    const char *dir, const char *why)
{
    char msg[ERR_MSG_MAX];
    snprintf(msg, sizeof msg, "%s: cannot read the folder: %s", dir, why);
    ingest__fail(h, n, msg);
    char **g = realloc(w->bad_dirs, (w->nbad + 1) * sizeof *g);
    if (g) {
        w->bad_dirs = g;
        if ((g[w->nbad] = strdup(dir)))
            w->nbad++;
    }
}

/* Rule 3: a link is followed when its target lies inside a folder root. */
static int link_inside(const struct ingest_walk *w, const char *path)
{
    char *real = realpath(path, NULL);
    int in = 0;
    for (int r = 0; real && r < w->nroots && !in; r++)
        in = w->real[r] && ingest_path_under(real, w->real[r], 1);
    free(real);
    return in;
}

/* The non-hidden names in dir, sorted; *names malloc'd. */
static int list_dir(DIR *d, char ***names, size_t *n)
{
    size_t cap = 0;
    *names = NULL;
    *n = 0;
    for (struct dirent *de; (de = readdir(d));) {
        if (de->d_name[0] == '.')
            continue; /* hidden, and . and .. */
        if (*n == cap) {
            cap = cap ? 2 * cap : 64;
            char **g = realloc(*names, cap * sizeof *g);
            if (!g)
                return -1;
            *names = g;
        }
        if (!((*names)[*n] = strdup(de->d_name)))
            return -1;
        (*n)++;
    }
    if (*n)
        qsort(*names, *n, sizeof **names, by_name);
    return 0;
}

struct walk_at {
    struct ingest_walk *w;
    const struct ingest_hooks *h;
    struct ingest_counts *n;
    int root; /* index of the root being walked */
};

/* Files under dir (rel: its escaped path under the root, "" at the root;
 * a root's folder is in the seen set already). */
static int walk_dir(struct walk_at *a, const char *dir, const char *rel, struct err *err)
{
    if (ingest__stop(a->h))
        return err_set(err, ERR_INTERRUPTED, "interrupted");
    struct stat ds;
    if (*rel && stat(dir, &ds)) {
        bad_dir(a->w, a->h, a->n, dir, strerror(errno));
        return 0;
    }
    int fresh = *rel ? seen_add(a->w, ds.st_dev, ds.st_ino) : 1;
    if (fresh < 0)
        return err_set(err, ERR_NOMEM, "no memory");
    if (!fresh)
        return 0; /* a loop, a root, or a folder already walked */
    DIR *d = opendir(dir);
    if (!d) {
        bad_dir(a->w, a->h, a->n, dir, strerror(errno));
        return 0;
    }
    char **names;
    size_t n;
    int rc = list_dir(d, &names, &n) ? err_set(err, ERR_NOMEM, "no memory") : 0;
    closedir(d);
    for (size_t i = 0; i < n && !rc; i++) {
        char *path = ingest__path_join(dir, names[i]);
        char *esc = ingest_escape_name(names[i]);
        char *r = esc && *rel ? ingest__path_join(rel, esc) : esc ? strdup(esc) : NULL;
        free(esc);
        if (!path || !r) {
            free(path);
            free(r);
            rc = err_set(err, ERR_NOMEM, "no memory");
            break;
        }
        struct stat sb;
        int keep = 0;
        if (lstat(path, &sb) == 0) {
            int is_link = S_ISLNK(sb.st_mode);
            if (is_link && (!link_inside(a->w, path) || stat(path, &sb)))
                sb.st_mode = 0; /* outside the roots, or dangling */
            if (S_ISDIR(sb.st_mode))
                rc = walk_dir(a, path, r, err);
            else
                keep = S_ISREG(sb.st_mode);
        }
        if (keep && push(a->w, path, r, &sb, a->root, 0) == 0)
            continue;
        if (keep)
            rc = err_set(err, ERR_NOMEM, "no memory");
        free(path);
        free(r);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

/* A root that is one file: its escaped name is its relative path. */
static int walk_file(struct walk_at *a, const char *path, const struct stat *sb, struct err *err)
{
    const char *name = strrchr(path, '/');
    char *p = strdup(path), *rel = ingest_escape_name(name ? name + 1 : path);
    if (!p || !rel || push(a->w, p, rel, sb, a->root, 1)) {
        free(p);
        free(rel);
        return err_set(err, ERR_NOMEM, "no memory");
    }
    return 0;
}

int ingest_walk(struct ingest_walk *w, const char *const *roots, int nroots,
                const struct ingest_hooks *h, struct ingest_counts *n, struct err *err)
{
    memset(w, 0, sizeof *w);
    w->roots = calloc((size_t)nroots + 1, sizeof *w->roots);
    w->real = calloc((size_t)nroots + 1, sizeof *w->real);
    w->is_dir = calloc((size_t)nroots + 1, sizeof *w->is_dir);
    if (!w->roots || !w->real || !w->is_dir)
        return err_set(err, ERR_NOMEM, "no memory");
    /* every root first: links are judged against all of them, and a root
     * is walked as itself, never through a link or another root (its
     * folder joins the seen set before any walk) */
    int *again = calloc((size_t)nroots + 1, sizeof *again);
    if (!again)
        return err_set(err, ERR_NOMEM, "no memory");
    int rc = 0;
    for (int i = 0; i < nroots && !rc; i++) {
        struct stat sb;
        if (stat(roots[i], &sb)) {
            rc = err_set(err, ERR_NOT_FOUND, "%s: %s", roots[i], strerror(errno));
            break;
        }
        if (!(w->roots[i] = strdup(roots[i]))) {
            rc = err_set(err, ERR_NOMEM, "no memory");
            break;
        }
        w->nroots = i + 1;
        w->is_dir[i] = S_ISDIR(sb.st_mode);
        if (w->is_dir[i] && !(w->real[i] = realpath(roots[i], NULL)))
            rc = err_set(err, ERR_IO, "%s: %s", roots[i], strerror(errno));
        else if (w->is_dir[i] && (again[i] = seen_add(w, sb.st_dev, sb.st_ino)) < 0)
            rc = err_set(err, ERR_NOMEM, "no memory");
        else if (w->is_dir[i])
            again[i] = !again[i]; /* the same folder named twice */
    }
    for (int i = 0; i < nroots && !rc; i++) {
        struct walk_at a = {w, h, n, i};
        struct stat sb;
        if (again[i])
            continue;
        if (w->is_dir[i])
            rc = walk_dir(&a, roots[i], "", err);
        else if (stat(roots[i], &sb))
            rc = err_set(err, ERR_NOT_FOUND, "%s: %s", roots[i], strerror(errno));
        else
            rc = walk_file(&a, roots[i], &sb, err);
    }
    free(again);
    return rc;
}

void ingest_walk_free(struct ingest_walk *w)
{
    for (size_t i = 0; i < w->n; i++) {
        free(w->files[i].path);
        free(w->files[i].rel);
    }
    free(w->files);
    for (int i = 0; i < w->nroots; i++) {
        free(w->roots[i]);
        free(w->real[i]);
    }
    free(w->roots);
    free(w->real);
    free(w->is_dir);
    for (size_t i = 0; i < w->nbad; i++)
        free(w->bad_dirs[i]);
    free(w->bad_dirs);
    free(w->seen);
    memset(w, 0, sizeof *w);
}
