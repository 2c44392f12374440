/* zip.h - reading zip archives in memory (PyTorch checkpoints are zips).
 *
 * The archive is a caller's buffer (usually a read-only mapping) that must
 * outlive the struct zip. Names are not NUL-terminated: they point into the
 * central directory. Methods: stored (0) and deflate (8); ZIP64 sizes and
 * offsets; encrypted entries are refused. Nothing is written.
 */
#ifndef IMGSEARCH_ZIP_H
#define IMGSEARCH_ZIP_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define ZIP_MAX_ENTRIES 200000      /* entries in one archive */
#define ZIP_MAX_ENTRY (8ull << 30)  /* bytes of one inflated entry */

struct zent {
    const char *name;   /* points into the central directory (not NUL-ended) */
    size_t nlen;        /* bytes in name */
    int method;         /* 0 stored, 8 deflate */
    uint64_t csize;     /* compressed bytes */
    uint64_t usize;     /* uncompressed bytes */
    uint64_t lho;       /* local header offset */
};

struct zip {
    const uint8_t *buf; /* the archive */
    size_t size;        /* its bytes */
    struct zent *e;     /* entries sorted by name (owned) */
    int n;              /* number of entries */
};

/* Reads the central directory of buf. name is used in messages.
 * ERR_CORRUPT for anything out of place, ERR_UNSUPPORTED_FORMAT for an
 * encrypted entry. Call zip_close even on failure. */
int zip_open(struct zip *z, const uint8_t *buf, size_t size, const char *name,
             struct err *err);
void zip_close(struct zip *z);

/* The entry called name (nlen bytes), or NULL. */
const struct zent *zip_find(const struct zip *z, const char *name, size_t nlen);

/* The usize bytes of e: a pointer into the archive for a stored entry, or
 * an inflated malloc'd copy that is also put in *owned (free it). */
int zip_data(const struct zip *z, const struct zent *e, const uint8_t **data,
             uint8_t **owned, const char *name, struct err *err);

/* Little-endian unsigned integer of n bytes (n <= 8) at p. */
uint64_t zip_rd(const uint8_t *p, int n);

#endif
