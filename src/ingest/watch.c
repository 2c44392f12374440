/* watch.c - catalog folders -> "something changed" (see watch.h).
 *
 * 1. One thread polls two descriptors: the inotify instance and an eventfd
 *    that stop writes to. Nothing else wakes it, so stop is immediate.
 * 2. Debounce: the first event of a burst opens it; the burst ends when no
 *    event came for debounce_ms, or INGEST_WATCH_MAX_DELAY_MS after it
 *    opened (a copy that never pauses still gets scanned), and then
 *    `changed` runs once. A rescan of the whole catalog costs a walk and a
 *    stat per file; one per burst keeps a 1,000-file copy to a few scans.
 * 3. New folders: a folder created or moved in (IN_ISDIR) makes the
 *    watcher add every root again; inotify_add_watch on a folder already
 *    watched returns its old descriptor, so only the new ones count. A
 *    queue overflow (IN_Q_OVERFLOW) is a change and a re-add too.
 * 4. The periodic tick restarts after every burst's callback: a catalog
 *    scanned because of an event is not scanned again right after.
 * 5. Watch descriptors are handed out in increasing order by the kernel,
 *    so the highest one seen counts the folders watched (a removed folder
 *    keeps its count until the watcher stops: the bound stays safe).
 */
#include "ingest/watch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MASK (IN_CREATE | IN_CLOSE_WRITE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | \
              IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF)
#define MAX_DEPTH 64 /* folder nesting followed at most */

struct ingest_watch {
    struct ingest_watch_opts o; /* roots point into `roots` below */
    char **roots;               /* copies */
    int ifd;                    /* inotify, -1 without */
    int efd;                    /* eventfd: stop */
    pthread_t th;
    int maxwd;                  /* highest watch descriptor seen */
    atomic_int nwatch;          /* folders watched */
    int full_logged;            /* the "table full" line was logged */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void logf_(struct ingest_watch *w, const char *fmt, const char *a, const char *b)
{
    if (!w->o.log)
        return;
    char msg[PATH_MAX + 200];
    snprintf(msg, sizeof msg, fmt, a, b);
    w->o.log(w->o.ctx, msg);
}

/* Watches path and the folders below it. */
static void add_tree(struct ingest_watch *w, const char *path, int depth)
{
    if (atomic_load(&w->nwatch) >= INGEST_WATCH_MAX || depth > MAX_DEPTH) {
        if (!w->full_logged++)
            logf_(w, "watch: more than %s folders under the catalog%s: the others are seen by "
                     "the periodic rescan only", "65536", "");
        return;
    }
    int wd = inotify_add_watch(w->ifd, path, MASK | IN_ONLYDIR | IN_DONT_FOLLOW);
    if (wd < 0) {
        if ((errno == ENOSPC || errno == ENOMEM) && !w->full_logged++)
            logf_(w, "watch: %s: %s (fs.inotify.max_user_watches): the periodic rescan covers it",
                  path, strerror(errno));
        return;
    }
    if (wd > w->maxwd) {
        w->maxwd = wd;
        atomic_fetch_add(&w->nwatch, 1);
    }
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue; /* ".", "..", and hidden folders, as the walk skips them */
        int dir = de->d_type == DT_DIR;
        if (de->d_type == DT_UNKNOWN) {
            struct stat sb;
            dir = fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
                  S_ISDIR(sb.st_mode);
        }
        if (!dir)
            continue;
        char sub[PATH_MAX];
        if (snprintf(sub, sizeof sub, "%s/%s", path, de->d_name) >= (int)sizeof sub)
            continue;
        add_tree(w, sub, depth + 1);
    }
    closedir(d);
}

static void add_all(struct ingest_watch *w)
{
    for (int i = 0; i < w->o.nroots; i++)
        add_tree(w, w->roots[i], 0);
}

/* Reads the pending events: 1 when one of them is a change, *dirs set when
 * a folder appeared (or events were lost). */
static int drain(struct ingest_watch *w, int *dirs)
{
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    int any = 0;
    for (;;) {
        ssize_t n = read(w->ifd, buf, sizeof buf);
        if (n <= 0)
            return any;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            p += sizeof *ev + ev->len;
            if (ev->mask & IN_Q_OVERFLOW) {
                *dirs = 1;
                any = 1;
                continue;
            }
            if (ev->len && ev->name[0] == '.' && !(ev->mask & (IN_MOVED_FROM | IN_MOVED_TO)))
                continue; /* hidden files do not count (a rename from one does) */
            if ((ev->mask & IN_ISDIR) && (ev->mask & (IN_CREATE | IN_MOVED_TO)))
                *dirs = 1;
            if (ev->mask & (MASK | IN_IGNORED))
                any = 1;
        }
    }
}

static void *run(void *arg)
{
    struct ingest_watch *w = arg;
    const int64_t tick = (int64_t)w->o.rescan_s * 1000;
    int64_t next_tick = tick ? now_ms() + tick : INT64_MAX;
    int64_t first = 0, last = 0;
    int pending = 0;
    for (;;) {
        int64_t now = now_ms(), until = next_tick;
        if (pending) {
            int64_t end = last + w->o.debounce_ms;
            if (first + INGEST_WATCH_MAX_DELAY_MS < end)
                end = first + INGEST_WATCH_MAX_DELAY_MS;
            if (end < until)
                until = end;
        }
        int timeout = until == INT64_MAX ? -1 : until <= now ? 0 : (int)(until - now > 86400000 ? 86400000 : until - now);
        struct pollfd fds[2] = {{.fd = w->efd, .events = POLLIN}, {.fd = w->ifd, .events = POLLIN}};
        int r = poll(fds, w->ifd >= 0 ? 2 : 1, timeout);
        if (r < 0 && errno != EINTR)
            break;
        if (r > 0 && (fds[0].revents & POLLIN))
            break;
        now = now_ms();
        if (r > 0 && w->ifd >= 0 && (fds[1].revents & POLLIN)) {
            int dirs = 0;
            if (drain(w, &dirs)) {
                if (!pending)
                    first = now;
                pending = 1;
                last = now;
            }
            if (dirs)
                add_all(w);
        }
        if (pending && (now - last >= w->o.debounce_ms || now - first >= INGEST_WATCH_MAX_DELAY_MS)) {
            pending = 0;
            w->o.changed(w->o.ctx);
            next_tick = tick ? now_ms() + tick : INT64_MAX;
        } else if (now >= next_tick) {
            w->o.changed(w->o.ctx);
            next_tick = now_ms() + tick;
        }
    }
    return NULL;
}

static void destroy(struct ingest_watch *w)
{
    if (w->ifd >= 0)
        close(w->ifd);
    if (w->efd >= 0)
        close(w->efd);
    for (int i = 0; w->roots && i < w->o.nroots; i++)
        free(w->roots[i]);
    free(w->roots);
    free(w);
}

int ingest_watch_start(struct ingest_watch **out, const struct ingest_watch_opts *o,
                       struct err *err)
{
    *out = NULL;
    if (!o->changed || o->nroots < 0 || o->debounce_ms < 1 || o->debounce_ms > 10000 ||
        o->rescan_s < 0)
        return err_set(err, ERR_INVALID_ARGUMENT, "watch: bad options");
    struct ingest_watch *w = calloc(1, sizeof *w);
    if (!w)
        return err_set(err, ERR_NOMEM, "out of memory");
    w->o = *o;
    w->ifd = w->efd = -1;
    if (!(w->roots = calloc((size_t)o->nroots + 1, sizeof *w->roots))) {
        destroy(w);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < o->nroots; i++)
        if (!(w->roots[i] = strdup(o->roots[i]))) {
            destroy(w);
            return err_set(err, ERR_NOMEM, "out of memory");
        }
    w->o.roots = (const char *const *)w->roots;
    if ((w->efd = eventfd(0, EFD_CLOEXEC)) < 0) {
        int e = errno;
        destroy(w);
        return err_set(err, ERR_IO, "watch: eventfd: %s", strerror(e));
    }
    if (o->inotify) {
        if ((w->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) < 0) {
            int e = errno;
            destroy(w);
            return err_set(err, ERR_IO, "watch: inotify: %s", strerror(e));
        }
        add_all(w);
    }
    if (pthread_create(&w->th, NULL, run, w) != 0) {
        destroy(w);
        return err_set(err, ERR_INTERNAL, "watch: cannot start the thread");
    }
    *out = w;
    return 0;
}

int ingest_watch_count(struct ingest_watch *w)
{
    return w ? atomic_load(&w->nwatch) : 0;
}

void ingest_watch_stop(struct ingest_watch *w)
{
    if (!w)
        return;
    uint64_t one = 1;
    ssize_t n = write(w->efd, &one, sizeof one);
    (void)n;
    pthread_join(w->th, NULL);
    destroy(w);
}
