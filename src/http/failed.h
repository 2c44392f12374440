/* failed.h - the items the background worker could not embed, with the
 * reason, kept in memory by the service (the store's schema has no place
 * for it yet: see failed.c). An item is "failed" for as long as its file
 * keeps the size and mtime it had when it failed; a changed file is tried
 * again, an unchanged one never.
 *
 * Threads: every function takes the registry's mutex.
 */
#ifndef IMGSEARCH_HTTP_FAILED_H
#define IMGSEARCH_HTTP_FAILED_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define HTTP_FAILED_MAX 100000 /* items remembered at most (then the oldest go) */

struct http_failed;

int http_failed_new(struct http_failed **out, struct err *err);
void http_failed_free(struct http_failed *f); /* NULL: no-op */

/* Records that item id (file path) failed with reason; the file's size and
 * mtime are read now (stat), so a later change of the file is seen. */
void http_failed_set(struct http_failed *f, const char *id, const char *path, const char *reason);

/* The item was embedded (or removed): forgets it. */
void http_failed_clear(struct http_failed *f, const char *id);

/* 1 when id failed and its file still has the size and mtime it had then
 * (do not try again), 0 otherwise (never failed, or the file changed). */
int http_failed_unchanged(struct http_failed *f, const char *id);

/* 1 and the reason (truncated to n bytes) when id is failed, else 0. */
int http_failed_get(struct http_failed *f, const char *id, char *reason, size_t n);

/* Forgets the items whose file is gone; returns how many are failed. */
int64_t http_failed_prune(struct http_failed *f);

/* How many items are failed now. */
int64_t http_failed_count(struct http_failed *f);

#endif
