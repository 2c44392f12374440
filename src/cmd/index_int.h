/* index_int.h - the indexing engine shared by `imgsearch index` and
 * `imgsearch reindex` (both in src/cmd/; the engine lives in index.c).
 *
 * The caller turns its work into jobs (files to read, with what the store
 * already knows about them); ix_run reads, hashes, decodes and preprocesses
 * the files on decoder threads feeding a bounded queue, while the calling
 * thread embeds full batches and writes each batch to the store in one
 * transaction. SIGINT/SIGTERM (ix_signals_install) stop it after the batch
 * being written commits.
 */
#ifndef IMGSEARCH_CMD_INDEX_INT_H
#define IMGSEARCH_CMD_INDEX_INT_H

#include <stddef.h>
#include <stdint.h>

#include "pipe/pipe.h"
#include "store/store.h"
#include "util/err.h"

enum ix_kind {
    IX_NEW,     /* no item has this source or id: added */
    IX_CHANGED, /* the item with this source has another size or mtime */
    IX_MOVED,   /* the item with this id had a source that vanished */
    IX_WAITING, /* the item exists without an embedding (reindex, or a
                   store filled through the HTTP API) */
};

enum ix_outcome {
    IX_PENDING = 0, /* not processed (stopped before it) */
    IX_EMBEDDED,    /* embedded and written */
    IX_SAME,        /* bytes unchanged (sha256 equal): size/mtime written */
    IX_NOT_IMAGE,   /* not an image: skipped (or failed when explicit) */
    IX_FAILED,      /* failed; the reason is in the failure list */
};

struct ix_job {
    char *path;        /* file to read, also the item's source (owned) */
    char *id;          /* item id (owned) */
    char *old_sha;     /* the store's sha256 when the item has an embedding
                          that this file's bytes may still match (owned), or
                          NULL: always embed */
    char *metadata;    /* metadata JSON object to write (owned; NULL: "{}") */
    enum ix_kind kind; /* what the store holds for it */
    int meta_changed;  /* metadata differs from the stored item's */
    int explicit_file; /* named by the user: a non-image is a failure */
    size_t tag;        /* the caller's (index: its file entry) */
    enum ix_outcome outcome; /* set by ix_run */
};

struct ix_counts {
    long added;     /* new items embedded */
    long updated;   /* items re-embedded, moved, or given new metadata */
    long unchanged; /* items whose file and metadata did not change */
    long removed;   /* items deleted (index --prune) */
    long failed;    /* files that failed (listed in ctx fails) */
    long embedded;  /* images that went through the model */
};

struct ix_ctx {
    const char *cmd;     /* "index" or "reindex", for messages */
    const char *verb;    /* "indexed" or "reindexed", for progress lines */
    struct store *st;    /* open store (not owned) */
    struct pipe *p;      /* open model (not owned) */
    int batch;           /* images per forward pass and per transaction */
    int decoders;        /* decoder threads, >= 1 */
    struct ix_counts n;  /* running totals */
    char **fails;        /* "path: reason", nfails of them (owned) */
    size_t nfails;       /* failures recorded */
    size_t capfails;     /* room in fails */
    double t0;           /* start time (ix_now) */
};

/* Monotonic seconds. */
double ix_now(void);

void ix_ctx_init(struct ix_ctx *c, const char *cmd, const char *verb);
void ix_ctx_free(struct ix_ctx *c);

/* Records a failed file: "<msg>" (which names the file) and counts it. */
void ix_fail(struct ix_ctx *c, const char *msg);

/* SIGINT and SIGTERM set a flag instead of killing the process;
 * ix_stop_requested reads it. */
void ix_signals_install(void);
int ix_stop_requested(void);

/* Decoder threads when --decoders is not given: the online CPUs, 1..8. */
int ix_default_decoders(void);

/* Runs the jobs (outcomes are set on them, counts added to c->n). Returns 0
 * when every job was processed (failed files are counted, not errors),
 * -ERR_INTERRUPTED when a signal stopped it (every written batch is
 * committed), or a store error (err), after which the batch in progress is
 * rolled back. */
int ix_run(struct ix_ctx *c, struct ix_job *jobs, size_t n, struct err *err);

/* Frees the strings of n jobs and the array. */
void ix_jobs_free(struct ix_job *jobs, size_t n);

/* Prints each failure on stderr ("imgsearch CMD: failed: ..."). */
void ix_print_failures(const struct ix_ctx *c);

#endif
