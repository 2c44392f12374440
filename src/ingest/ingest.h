/* ingest.h - files on disk into a store: the walk, the plan, the metadata
 * sidecar and the engine. `imgsearch index`, `imgsearch reindex` and the
 * server's start-up precompute all run on this library; it never prints:
 * failures, progress and the stop request go through struct ingest_hooks.
 *
 * The path of a run:
 *
 *   ingest_walk     roots -> candidate files (path, escaped relative name,
 *                   size, mtime)
 *   ingest_plan     candidate files + the store -> jobs (new, changed,
 *                   moved, waiting); unchanged files are counted, their
 *                   sidecar metadata written; ingest_prune deletes the
 *                   items whose files vanished
 *   ingest_waiting  the store's items that wait for an embedding -> jobs
 *   ingest_claim    the same, leased to one of several processes that
 *                   share the store (store_claim_waiting)
 *   ingest_run      jobs -> decoder threads (read, sniff, hash, decode,
 *                   preprocess) -> a bounded queue -> batched inference ->
 *                   one store transaction per batch
 *   ingest_failures the files that failed, remembered between runs: the
 *                   plan's jobs for them are dropped while they are unchanged
 *
 * The rules, the same for every caller:
 *
 *  1. What is an image: its bytes. img_sniff on the first INGEST_SNIFF_BYTES
 *     bytes decides (JPEG, PNG, WebP, GIF), never the name. The walk lists
 *     candidates only (regular files, not hidden); whoever first reads a
 *     candidate sniffs it: the engine's decoders (they read the file
 *     anyway), or ingest_sniff_file (the precompute registers new files
 *     before embedding them). A file already in the store with the same
 *     size and mtime is not opened again: it was sniffed when it was added.
 *  2. Hidden files and folders (".name") are skipped.
 *  3. Symbolic links are followed when their target (resolved) lies inside
 *     one of the run's folder roots (resolved), to a file or to a folder,
 *     and skipped when it lies outside: a source is always inside a root,
 *     which is what the HTTP image route serves from. The item's source is
 *     the path through the link. Each folder is walked once per run
 *     (folders are told apart by device and inode), so a link loop, or a
 *     second way into a folder, ends there; a root's folder is only ever
 *     walked as that root (roots in the order given, names in byte order).
 *  4. File names become ids escaped, so that every id is valid UTF-8 and
 *     the escape can be undone: a byte that is not part of a well-formed
 *     UTF-8 sequence (a Latin-1 "caf\xe9.jpg") is written %XX (two
 *     upper-case hex digits: "caf%E9.jpg"), and so is a literal '%'
 *     ("100%.jpg" -> "100%25.jpg"); everything else is kept. Replacing each
 *     %XX by the byte XX gives back the name. Sources stay the file's real
 *     path (bytes), which is what must be opened.
 *  5. Incremental (the plan): an item found by its source with the same
 *     size and mtime (whole seconds, the store's unit, as rsync's default
 *     check) is unchanged; otherwise the SHA-256 of the bytes decides:
 *     equal bytes only refresh size and mtime (the embedding is kept),
 *     other bytes are embedded again. A new file whose id is held by an
 *     item whose source vanished is a move: the same bytes keep the
 *     embedding. An item found by its source keeps its id.
 *  6. Crash safe: every batch is one store transaction holding complete
 *     items (embedding, hash, size, mtime, metadata), so a killed run
 *     leaves whole batches and the next run skips them.
 *  7. Shared stores: just before a batch is written, each item is read
 *     again inside the batch's transaction; one that another writer (an
 *     HTTP PUT, another process) changed since the plan -- other seq,
 *     source, digest or embedding state, or created or deleted -- is left
 *     as it is and its result dropped (counted in `dropped`).
 *
 * Threads: a run uses the calling thread (inference, store writes) and its
 * decoder threads (which never touch the store). Hooks are called on the
 * calling thread only.
 */
#ifndef IMGSEARCH_INGEST_H
#define IMGSEARCH_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include "pipe/pipe.h"
#include "store/store.h"
#include "util/err.h"

#define INGEST_SNIFF_BYTES 32 /* bytes read to tell an image from the rest */

/* ---- hooks: how the library reports ------------------------------------ */

struct ingest_progress {
    size_t total; /* jobs of this run */
    size_t done;  /* jobs whose result was handled */
};

struct ingest_hooks {
    /* A file or item failed: msg names it ("path: reason"). May be NULL. */
    void (*fail)(void *ctx, const char *msg);
    /* After each handled job and each written batch. May be NULL. */
    void (*progress)(void *ctx, const struct ingest_progress *p);
    /* Polled between files and while waiting for decoders (about every
     * 100 ms): nonzero stops the run after the batch being written
     * commits (-ERR_INTERRUPTED). May be NULL. */
    int (*stop)(void *ctx);
    /* Embeds n preprocessed images (n * 3 * size * size floats) into n
     * L2-normalised vectors. NULL: pipe_embed_pixels on the run's pipe. */
    int (*embed)(void *ctx, const float *px, int n, float *out, struct err *err);
    void *ctx; /* passed to each hook */
};

struct ingest_counts {
    long added;     /* new items embedded (or registered, by the precompute) */
    long updated;   /* items re-embedded, moved, or given new metadata */
    long unchanged; /* items whose file and metadata did not change */
    long removed;   /* items deleted by ingest_prune */
    long failed;    /* files or items that failed (each reported to hooks.fail) */
    long embedded;  /* images that went through the model */
    long dropped;   /* results not written: the item changed meanwhile (rule 7) */
};

/* ---- names -------------------------------------------------------------- */

/* The escaped form of a file name or path (rule 4), malloc'd; NULL when
 * out of memory. */
char *ingest_escape_name(const char *raw);

/* 1 when s is well-formed UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF). */
int ingest_utf8_valid(const char *s);

/* Rule 1 on a file: 1 an image, 0 not an image (or empty), negative error
 * code when it cannot be read (err names the path). */
int ingest_sniff_file(const char *path, struct err *err);

/* ---- the walk ------------------------------------------------------------ */

struct ingest_file {
    char *path;        /* absolute path as walked: the item's source (owned) */
    char *rel;         /* path under its root, escaped (rule 4); a file root:
                          its escaped name (owned) */
    int64_t size;      /* bytes, from stat */
    int64_t mtime;     /* seconds, from stat */
    int root;          /* index of its root */
    int explicit_file; /* the root itself: a non-image is a failure */
    int not_image;     /* set by the caller when its bytes were no image:
                          then it does not count as present for prune */
};

struct ingest_walk {
    struct ingest_file *files; /* candidates, in walk order (n of them) */
    size_t n;                  /* used */
    size_t cap;                /* allocated */
    char **roots;              /* the roots as given, absolute (owned) */
    char **real;               /* their resolved paths, NULL for file roots */
    int *is_dir;               /* per root: a folder (walked) or one file */
    int nroots;
    char **bad_dirs;           /* folders that could not be read (owned) */
    size_t nbad;
    struct ingest_dev_ino *seen; /* folders walked (hash set) */
    size_t nseen, capseen;
};

/* Walks the roots (absolute, lexically normal paths: folders are walked in
 * byte order of names, a file root is one candidate) into w, which it
 * initialises. A root that does not exist is ERR_NOT_FOUND; a folder that
 * cannot be read is reported to hooks.fail and remembered in bad_dirs (its
 * items are never pruned; counted failed in n). -ERR_INTERRUPTED when
 * hooks.stop asks. */
int ingest_walk(struct ingest_walk *w, const char *const *roots, int nroots,
                const struct ingest_hooks *h, struct ingest_counts *n, struct err *err);
void ingest_walk_free(struct ingest_walk *w);

/* 1 when path is root (a file root) or lies under it (a folder root). */
int ingest_path_under(const char *path, const char *root, int is_dir);

/* An absolute, lexically normal path ("." and ".." folded, no repeated or
 * trailing slashes) for p, a relative p taken from base; links are not
 * resolved. malloc'd, NULL when out of memory. */
char *ingest_path_normal(const char *base, const char *p);

/* ---- the metadata sidecar ------------------------------------------------ */

/* CSV with a header row (RFC 4180 quoting) or JSON lines (told apart by
 * the first character: '{'). The `path` column/field is the key when
 * present, else `id`; the other columns become fields. A relative path
 * may be relative to the sidecar, to the current folder or to the root
 * being walked: all three readings are kept. */
struct ingest_sidecar {
    void *map; /* jansson object: "p:"abs / "r:"rel / "i:"id -> fields */
};

#define INGEST_SIDECAR_MAX_BYTES (256u << 20)

/* Loads file (at most INGEST_SIDECAR_MAX_BYTES). Errors name the file and
 * the line: ERR_INVALID_ARGUMENT, ERR_INVALID_UTF8, ERR_IO, ERR_NOMEM. */
int ingest_sidecar_load(struct ingest_sidecar *sc, const char *file, struct err *err);
void ingest_sidecar_free(struct ingest_sidecar *sc);

/* The metadata to write for a file: old (a JSON object's text, or NULL)
 * with the sidecar's fields for it merged over it (an absolute path match
 * first, else the relative one, then the id match). sc may be NULL or
 * empty. *changed tells whether the result differs from old. malloc'd;
 * NULL when out of memory. */
char *ingest_sidecar_merge(const struct ingest_sidecar *sc, const char *old,
                           const char *abs, const char *rel, const char *id, int *changed);

/* ---- jobs ------------------------------------------------------------------ */

enum ingest_kind {
    INGEST_NEW,     /* no item has this source: added under a new id */
    INGEST_CHANGED, /* the item with this source has another size or mtime */
    INGEST_MOVED,   /* the item with this id had a source that vanished */
    INGEST_WAITING, /* the item exists without an embedding (reindex, an
                       asynchronous PUT, a precompute that was stopped) */
};

enum ingest_outcome {
    INGEST_PENDING = 0, /* not processed (stopped before it) */
    INGEST_EMBEDDED,    /* embedded and written */
    INGEST_SAME,        /* bytes unchanged (sha256 equal): size/mtime written */
    INGEST_NOT_IMAGE,   /* not an image: skipped (a failure when explicit) */
    INGEST_FAILED,      /* failed; reported to hooks.fail */
    INGEST_DROPPED,     /* the item changed meanwhile: nothing written */
};

struct ingest_job {
    char *path;        /* file to read, also the item's source (owned) */
    char *id;          /* item id (owned) */
    char *old_sha;     /* the store's sha256 when the item's embedding may
                          still match these bytes (owned), or NULL: embed */
    char *metadata;    /* metadata to write (owned); NULL: keep the item's */
    enum ingest_kind kind;
    int meta_changed;  /* metadata differs from the stored item's */
    int explicit_file; /* named by the user: a non-image is a failure */
    int same_stat;     /* WAITING from the plan: size and mtime unchanged */
    int64_t size;      /* from the walk (-1 unknown) */
    int64_t mtime;     /* from the walk (-1 unknown) */
    size_t tag;        /* the caller's (the plan: index into the walk) */
    /* what the plan saw, for rule 7 */
    int64_t plan_seq;  /* the item's seq, 0: no item had this id */
    char *plan_source; /* its source (owned), or NULL */
    char *plan_sha;    /* its sha256 (owned), or NULL */
    int plan_embedded; /* it had an embedding */
    enum ingest_outcome outcome; /* set by ingest_run */
};

struct ingest_jobs {
    struct ingest_job *v; /* n jobs */
    size_t n;             /* used */
    size_t cap;           /* allocated */
};

/* Frees one job's strings. */
void ingest_job_clear(struct ingest_job *j);

/* Frees every job's strings and the array; leaves js empty (reusable). */
void ingest_jobs_free(struct ingest_jobs *js);

/* ---- the plan -------------------------------------------------------------- */

enum ingest_id_from {
    INGEST_ID_RELPATH, /* the prefix of its root + its escaped relative path */
    INGEST_ID_PATH,    /* the escaped absolute path */
    INGEST_ID_NAME,    /* the escaped file name */
};

struct ingest_plan_opts {
    enum ingest_id_from id_from;
    const char *const *prefixes;         /* id prefix per root, or NULL: none */
    const struct ingest_sidecar *sidecar; /* or NULL */
    int own_ids;  /* 1: the roots own their ids: an id held by an item
                     whose source lies outside every root is taken over
                     (a move); 0: that file fails (index) */
};

/* Decides what each candidate of w needs (rule 5) and appends a job for
 * every file that must be read to js. Counts unchanged files; writes the
 * new metadata of unchanged files whose sidecar fields changed (counted as
 * updated). A file reached twice (two roots) is planned once. Two files
 * wanting one id fail the later file; so does an id held by another
 * existing file (or a URL), unless o->own_ids lets the file take it over.
 * Returns 0, -ERR_INTERRUPTED, or a store error. */
int ingest_plan(struct store *st, const struct ingest_walk *w, const struct ingest_plan_opts *o,
                const struct ingest_hooks *h, struct ingest_counts *n, struct ingest_jobs *js,
                struct err *err);

/* Deletes the items whose source lies under a root of w and was not found
 * as an image (files with not_image set do not count), except under the
 * folders that could not be read. Counts them removed. */
int ingest_prune(struct store *st, const struct ingest_walk *w, struct ingest_counts *n,
                 struct err *err);

/* Appends a job (INGEST_WAITING, explicit) for each item waiting for an
 * embedding with seq > after, at most limit of them (0: all); items with
 * no source fail. *last gets the seq of the last item looked at (after
 * when none). */
int ingest_waiting(struct store *st, int64_t after, size_t limit, const struct ingest_hooks *h,
                   struct ingest_counts *n, struct ingest_jobs *js, int64_t *last,
                   struct err *err);

/* Like ingest_waiting, for one of several processes sharing the store:
 * claims up to limit waiting items for owner with a lease of
 * lease_seconds (store_claim_waiting) and appends their jobs. An item with
 * no source fails and is marked failed in the store (never claimed
 * again). *claimed gets the items claimed; *retry_ms (may be NULL)
 * store_claim_waiting's. */
int ingest_claim(struct store *st, const char *owner, int lease_seconds, int limit,
                 const struct ingest_hooks *h, struct ingest_counts *n, struct ingest_jobs *js,
                 size_t *claimed, int64_t *retry_ms, struct err *err);

/* ---- the engine -------------------------------------------------------------- */

struct ingest_run_opts {
    int batch;    /* images per forward pass and per transaction (1..256) */
    int decoders; /* decoder threads (>= 1); they run at nice +5 */
};

/* Decoder threads when none are asked for: the online CPUs, 1..8. */
int ingest_default_decoders(void);

/* Runs the jobs: outcomes are set on them and counts added to n. Returns
 * 0 when every job was processed (failed files are counted, not errors),
 * -ERR_INTERRUPTED when hooks.stop asked (every written batch is
 * committed), or a store error, after which the batch in progress is
 * rolled back. Decoder threads block SIGINT and SIGTERM. */
int ingest_run(struct store *st, struct pipe *p, struct ingest_jobs *js,
               const struct ingest_run_opts *o, const struct ingest_hooks *h,
               struct ingest_counts *n, struct err *err);

/* ---- failures remembered between runs (failed.c) -------------------------- */

/* A file that failed, with the size and mtime it had then. */
struct ingest_failure {
    char *path;    /* the job's path (owned) */
    int64_t size;  /* bytes when it failed */
    int64_t mtime; /* seconds when it failed */
};

struct ingest_failures {
    struct ingest_failure *v; /* n entries, sorted by path */
    size_t n;                 /* used */
    size_t cap;               /* allocated */
};

/* Reads the record file (a missing or oversized one is an empty list). */
int ingest_failures_load(struct ingest_failures *f, const char *file, struct err *err);

/* Removes from js (clearing them) the new and changed files that failed
 * before with the same size and mtime; returns how many. */
size_t ingest_failures_skip(const struct ingest_failures *f, struct ingest_jobs *js);

/* After ingest_run: files of js that failed are remembered (with their
 * size and mtime now), files that went through are forgotten, and so are
 * remembered files that no longer exist. */
int ingest_failures_update(struct ingest_failures *f, const struct ingest_jobs *js,
                           struct err *err);

/* Writes the record file atomically; an empty list removes it. */
int ingest_failures_save(const struct ingest_failures *f, const char *file, struct err *err);

void ingest_failures_free(struct ingest_failures *f);

#endif
