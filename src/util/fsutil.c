/* fsutil.c - whole-file reads and durable file replacement. */
#include "util/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int fs_atomic_open(struct fs_atomic *w, const char *path, struct err *err)
{
    memset(w, 0, sizeof *w);
    size_t n = strlen(path) + 32;
    w->path = strdup(path);
    w->tmp = malloc(n);
    if (!w->path || !w->tmp) {
        free(w->path);
        free(w->tmp);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    snprintf(w->tmp, n, "%s.tmp.%ld", path, (long)getpid());
    w->f = fopen(w->tmp, "wb");
    if (!w->f) {
        int rc = err_set(err, err_code_of_errno(errno, 0), "%s: %s", w->tmp, strerror(errno));
        free(w->path);
        free(w->tmp);
        return rc;
    }
    return 0;
}

int fs_atomic_write(struct fs_atomic *w, const void *p, size_t n, struct err *err)
{
    if (n && fwrite(p, 1, n, w->f) != n)
        return err_set(err, err_code_of_errno(errno, 0), "%s: write: %s", w->tmp,
                       strerror(errno));
    return 0;
}

static void release(struct fs_atomic *w)
{
    free(w->path);
    free(w->tmp);
    memset(w, 0, sizeof *w);
}

int fs_atomic_commit(struct fs_atomic *w, struct err *err)
{
    int rc = 0;
    if (fflush(w->f) != 0 || fsync(fileno(w->f)) != 0) {
        rc = err_set(err, err_code_of_errno(errno, 0), "%s: %s", w->tmp, strerror(errno));
        fclose(w->f);
        unlink(w->tmp);
        release(w);
        return rc;
    }
    fclose(w->f);
    if (rename(w->tmp, w->path) != 0) {
        rc = err_set(err, err_code_of_errno(errno, 0), "rename %s: %s", w->path,
                     strerror(errno));
        unlink(w->tmp);
        release(w);
        return rc;
    }
    char *d = strdup(w->path);
    if (d) {
        int fd = open(dirname(d), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) {
            fsync(fd);
            close(fd);
        }
        free(d);
    }
    release(w);
    return 0;
}

void fs_atomic_abort(struct fs_atomic *w)
{
    if (w->f)
        fclose(w->f);
    if (w->tmp)
        unlink(w->tmp);
    release(w);
}

int fs_map_file(const char *path, uint64_t max, void **map, size_t *size, struct err *err)
{
    *map = NULL;
    *size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(err, err_code_of_errno(errno, 1), "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return err_set(err, ERR_BAD_PATH, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > max) {
        close(fd);
        return err_set(err, ERR_TOO_LARGE, "%s: %lld bytes is over the %llu-byte limit", path,
                       (long long)sb.st_size, (unsigned long long)max);
    }
    size_t n = (size_t)sb.st_size;
    void *m = n ? mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    close(fd);
    if (n && m == MAP_FAILED)
        return err_set(err, ERR_IO, "%s: mmap: %s", path, strerror(errno));
    *map = m;
    *size = n;
    return 0;
}

int fs_read_file(const char *path, size_t max, uint8_t **out, size_t *len,
                 struct err *err)
{
    *out = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(err, err_code_of_errno(errno, 1), "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || S_ISDIR(sb.st_mode)) {
        close(fd);
        return err_set(err, ERR_BAD_PATH, "%s: is a directory or unreadable", path);
    }
    if ((uint64_t)sb.st_size > max) {
        close(fd);
        return err_set(err, ERR_TOO_LARGE, "%s: %lld bytes is over the limit of %zu",
                       path, (long long)sb.st_size, max);
    }
    size_t cap = (size_t)sb.st_size, n = 0;
    uint8_t *b = malloc(cap + 1);
    if (!b) {
        close(fd);
        return err_set(err, ERR_NOMEM, "out of memory reading %s", path);
    }
    for (;;) {
        if (n == cap) { /* file grew or size unknown (pipes) */
            if (cap >= max)
                break;
            size_t nc = cap ? cap * 2 : 4096;
            if (nc > max)
                nc = max;
            uint8_t *nb = realloc(b, nc + 1);
            if (!nb) {
                free(b);
                close(fd);
                return err_set(err, ERR_NOMEM, "out of memory reading %s", path);
            }
            b = nb;
            cap = nc;
        }
        ssize_t r = read(fd, b + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(b);
            close(fd);
            return err_set(err, ERR_IO, "%s: read: %s", path, strerror(e));
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    b[n] = 0;
    *out = b;
    *len = n;
    return 0;
}

int fs_write_file(const char *path, const void *p, size_t n, struct err *err)
{
    struct fs_atomic w;
    int rc = fs_atomic_open(&w, path, err);
    if (rc)
        return rc;
    rc = fs_atomic_write(&w, p, n, err);
    if (rc) {
        fs_atomic_abort(&w);
        return rc;
    }
    return fs_atomic_commit(&w, err);
}

int fs_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

int fs_mkdirs(const char *path, struct err *err)
{
    char *p = strdup(path);
    if (!p)
        return err_set(err, ERR_NOMEM, "out of memory");
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s;
            *s = 0;
            if (mkdir(p, 0777) != 0 && errno != EEXIST) {
                int rc = err_set(err, err_code_of_errno(errno, 0), "mkdir %s: %s", p,
                                 strerror(errno));
                free(p);
                return rc;
            }
            *s = c;
            if (!c)
                break;
        }
    }
    free(p);
    return 0;
}

/* The fallback of fs_open_beneath: one component at a time from dirfd. */
static int open_walk(int dirfd, const char *rel)
{
    char *copy = strdup(rel);
    if (!copy) {
        errno = ENOMEM;
        return -1;
    }
    int fd = dup(dirfd), e = 0;
    char *save = NULL;
    char *part = strtok_r(copy, "/", &save);
    while (fd >= 0 && part) {
        char *next = strtok_r(NULL, "/", &save);
        if (!strcmp(part, "..") || !strcmp(part, ".")) {
            e = EXDEV;
            close(fd);
            fd = -1;
            break;
        }
        int nfd = openat(fd, part, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | (next ? O_DIRECTORY : 0));
        e = errno;
        struct stat sb; /* a link as a folder is ENOTDIR: say ELOOP, as openat2 does */
        if (nfd < 0 && e == ENOTDIR && fstatat(fd, part, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISLNK(sb.st_mode))
            e = ELOOP;
        close(fd);
        fd = nfd;
        part = next;
    }
    free(copy);
    if (fd < 0)
        errno = e ? e : ENOENT;
    return fd;
}

int fs_open_beneath(const char *root, const char *rel, int use_openat2)
{
    if (!*rel || rel[0] == '/') {
        errno = EXDEV;
        return -1;
    }
    int dfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -1;
    int fd = -1;
#ifdef SYS_openat2
    if (use_openat2) {
        struct open_how how = {.flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW,
                               .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS};
        fd = (int)syscall(SYS_openat2, dfd, rel, &how, sizeof how);
        if (fd >= 0 || (errno != ENOSYS && errno != EPERM)) { /* EPERM: seccomp */
            int e = errno;
            close(dfd);
            errno = e;
            return fd;
        }
    }
#else
    (void)use_openat2;
#endif
    fd = open_walk(dfd, rel);
    int e = errno;
    close(dfd);
    errno = e;
    return fd;
}
