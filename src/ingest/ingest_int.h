/* ingest_int.h - helpers shared by the files of src/ingest/ (not part of
 * the library's interface). */
#ifndef IMGSEARCH_INGEST_INT_H
#define IMGSEARCH_INGEST_INT_H

#include <stddef.h>
#include <stdint.h>

#include "ingest/ingest.h"

/* Reports msg to hooks.fail and counts it failed. */
void ingest__fail(const struct ingest_hooks *h, struct ingest_counts *n, const char *msg);

/* hooks.stop, or 0. */
int ingest__stop(const struct ingest_hooks *h);

/* Rule 1 on bytes already read: 1 when the first n bytes are an image's. */
int ingest__is_image(const uint8_t *data, size_t n);

/* "a" + "/" + "b" without doubling a slash; malloc'd. */
char *ingest__path_join(const char *a, const char *b);

/* A string map (open addressing, keys not owned). */
struct ingest__map {
    const char **keys; /* cap slots, NULL = empty */
    void **vals;       /* value of each slot */
    size_t cap;        /* power of two */
    size_t n;          /* keys held */
};

void ingest__map_free(struct ingest__map *m);
void *ingest__map_get(const struct ingest__map *m, const char *k);
/* Sets k -> v (replacing). 0, or -1 when out of memory. */
int ingest__map_put(struct ingest__map *m, const char *k, void *v);

#endif
