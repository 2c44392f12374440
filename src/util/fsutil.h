/* fsutil.h - small file helpers: whole-file reads and durable replacement.
 *
 * A durable replace writes PATH.tmp.PID, fsyncs it, renames it over PATH
 * and fsyncs the directory, so a crash leaves either the old or the new
 * file, never a torn one.
 *
 * Errors: writes are the program's own files (ERR_IO, ERR_NO_SPACE for a
 * full disk or quota); fs_read_file reads a path the caller named, so a
 * missing or unreadable one is ERR_BAD_PATH (see util/err.h).
 */
#ifndef IMGSEARCH_FSUTIL_H
#define IMGSEARCH_FSUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "util/err.h"

struct fs_atomic {
    FILE *f;            /* the temp file being written */
    char *path;         /* final path */
    char *tmp;          /* temp path */
};

int fs_atomic_open(struct fs_atomic *w, const char *path, struct err *err);
int fs_atomic_write(struct fs_atomic *w, const void *p, size_t n, struct err *err);
/* fsync + rename + fsync(dir); frees w. */
int fs_atomic_commit(struct fs_atomic *w, struct err *err);
/* Removes the temp file; frees w. */
void fs_atomic_abort(struct fs_atomic *w);

/* Reads a whole file into a malloc'd buffer (NUL-terminated, *len without
 * the NUL). Files over max bytes are ERR_TOO_LARGE. */
int fs_read_file(const char *path, size_t max, uint8_t **out, size_t *len,
                 struct err *err);

/* Maps a regular file read-only: *map (NULL for an empty file) and *size;
 * munmap(*map, *size) when done. Files over max bytes are ERR_TOO_LARGE,
 * anything but a regular file ERR_BAD_PATH. */
int fs_map_file(const char *path, uint64_t max, void **map, size_t *size, struct err *err);

/* Writes a whole file durably (fs_atomic). */
int fs_write_file(const char *path, const void *p, size_t n, struct err *err);

/* 1 when path exists (any type). */
int fs_exists(const char *path);

/* mkdir -p */
int fs_mkdirs(const char *path, struct err *err);

/* Opens root/rel read-only without following a symbolic link in any
 * component of rel and without leaving root (no "..", no absolute rel):
 * openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, or, where the kernel
 * has no openat2 (before 5.6) or use_openat2 is 0, one openat with
 * O_NOFOLLOW per component. Unlike a realpath check followed by open, a
 * folder swapped for a link in between cannot redirect the open. Returns
 * the fd, or -1 with errno (ELOOP or EXDEV for a link or an escape). */
int fs_open_beneath(const char *root, const char *rel, int use_openat2);

#endif
