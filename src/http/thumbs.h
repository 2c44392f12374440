/* thumbs.h - the thumbnail cache of the HTTP service and its route,
 * GET /items/{id}/thumb?size=N (N one of 128, 256, 512).
 *
 * The cache is a folder next to the store (STORE.thumbs/) holding one JPEG
 * per (item version, size), named by its ETag: the SHA-256 of the item's id,
 * source, content digest (or size and mtime while the item has none) and
 * the size. A changed file gets a new name; the stale one ages out. The
 * folder is bounded by total bytes: after a write that passes the bound,
 * the files least recently served go first (each hit touches the file's
 * mtime), until the total is 3/4 of the bound. Cache files are written to a
 * temp name and renamed (no fsync: a thumbnail lost in a crash is made
 * again), so a reader never sees half a file.
 *
 * Threads: every function is safe from any thread (one mutex for the byte
 * count; files are written and renamed atomically).
 */
#ifndef IMGSEARCH_HTTP_THUMBS_H
#define IMGSEARCH_HTTP_THUMBS_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define HTTP_THUMBS_DEFAULT_BYTES (256ull << 20) /* the cache bound */
#define HTTP_THUMBS_KEY_LEN 64                  /* hex characters of a key */

struct http_thumbs;

/* Opens (creating) the cache folder dir, bounded by max_bytes (>= 1 MiB
 * in the service; any >= 1 in tests), and sums the bytes already there. */
int http_thumbs_open(struct http_thumbs **out, const char *dir, uint64_t max_bytes,
                     struct err *err);
void http_thumbs_free(struct http_thumbs *t); /* NULL: no-op */

/* The key of one thumbnail (HTTP_THUMBS_KEY_LEN hex + NUL). sha256 may be
 * NULL (then size and mtime stand for the content). */
void http_thumbs_key(const char *id, const char *source, const char *sha256, int64_t size,
                     int64_t mtime, int thumb_size, char key[HTTP_THUMBS_KEY_LEN + 1]);

/* The cached file for key opened read-only (its length in *len), its mtime
 * touched; -1 when not cached. */
int http_thumbs_get(struct http_thumbs *t, const char *key, uint64_t *len);

/* Stores n bytes under key, then evicts while over the bound. */
int http_thumbs_put(struct http_thumbs *t, const char *key, const void *p, size_t n,
                    struct err *err);

/* Bytes held now, files held now (counted by the cache, not scanned). */
void http_thumbs_stats(struct http_thumbs *t, uint64_t *bytes, uint64_t *files);

struct http_req;
/* The route (a worker thread): decodes the item's file (only inside a
 * catalog root or the upload folder, as /items/{id}/image), answers the
 * JPEG with ETag and Cache-Control, 304 when If-None-Match names it. */
void http__item_thumb(struct http_req *r);

#endif
