/* watch.h - tells when catalog folders change, so that whoever serves them
 * can rescan them through the ingest library (the same walk, plan and
 * engine as `imgsearch index`): inotify on every folder under the roots,
 * debounced, plus a periodic tick as a backstop for what inotify misses
 * (network file systems, a full watch table, links to folders, events lost
 * on a queue overflow).
 *
 * The watcher never reads the store and never decides what changed: it
 * only calls `changed` (on its own thread) after a burst of events has been
 * quiet for debounce_ms (or has lasted INGEST_WATCH_MAX_DELAY_MS), and
 * every rescan_s seconds. The callback must be quick (set a flag, signal).
 *
 * Folders: each root and every folder below it (hidden ones skipped, as
 * the walk skips them; symbolic links not followed: the periodic rescan
 * covers folders reached through links). A folder created later is added
 * when its creation event arrives; at most INGEST_WATCH_MAX folders are
 * watched, beyond that only the periodic rescan sees changes.
 */
#ifndef IMGSEARCH_INGEST_WATCH_H
#define IMGSEARCH_INGEST_WATCH_H

#include "util/err.h"

#define INGEST_WATCH_MAX 65536          /* folders watched at most */
#define INGEST_WATCH_MAX_DELAY_MS 2000  /* a burst of events is cut after this */

struct ingest_watch;

struct ingest_watch_opts {
    const char *const *roots; /* folders, absolute (copied) */
    int nroots;
    int inotify;              /* 1: watch with inotify; 0: periodic rescan only */
    int debounce_ms;          /* quiet time that ends a burst (1..10000) */
    int rescan_s;             /* periodic rescan every N s (0: none) */
    void (*changed)(void *ctx);             /* called on the watcher's thread */
    void (*log)(void *ctx, const char *msg); /* problems (a full watch table); may be NULL */
    void *ctx;
};

/* Starts the watcher thread. Fails (ERR_IO) when inotify cannot be set up
 * although asked for; a root that cannot be watched is logged, not fatal. */
int ingest_watch_start(struct ingest_watch **out, const struct ingest_watch_opts *o,
                       struct err *err);

/* Folders watched now (0 without inotify). */
int ingest_watch_count(struct ingest_watch *w);

/* Stops the thread and frees w (NULL: no-op). No callback runs after it
 * returns. */
void ingest_watch_stop(struct ingest_watch *w);

#endif
