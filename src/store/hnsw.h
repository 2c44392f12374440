/* hnsw.h - an HNSW graph index for cosine similarity over float32 vectors.
 *
 * Vectors are normalised at insert; the score of a hit is the dot product
 * of the normalised query and item (cosine, in [-1, 1]). Labels are int64
 * item ids chosen by the caller; inserting a label that is present replaces
 * its vector. Deletes leave a tombstone: the node still routes searches but
 * is never returned; tombstones are compacted away (the graph is repaired
 * around them) when they exceed params.max_deleted_fraction of the nodes.
 *
 * Threads: searches (hnsw_search, hnsw_exact, hnsw_get, the getters) may run
 * concurrently with each other; anything that changes the index (insert,
 * delete, compact, set_*) needs exclusive access. The store wraps the index
 * in a rwlock.
 *
 * ## Index file format (version 1), all integers little-endian
 *
 *   offset  size  field
 *   0       8     magic "IMGHNSW\0"
 *   8       4     u32 version = 1
 *   12      4     u32 dim             1 .. HNSW_MAX_DIM
 *   16      4     u32 m               2 .. HNSW_MAX_M (layer 0 keeps 2*m)
 *   20      4     u32 ef_construction 1 .. HNSW_MAX_EF
 *   24      4     u32 max_level       0 .. HNSW_MAX_LEVEL
 *   28      4     u32 entry           entry node, 0xFFFFFFFF when n = 0
 *   32      8     u64 n               nodes, tombstones included
 *   40      8     u64 n_deleted       tombstoned nodes
 *   48      8     i64 covered         caller's "last change covered" number
 *   56      8     u64 tag             caller's tag (the store: its db id)
 *   64      8     u64 payload_bytes   bytes after the header
 *   72      4     u32 payload_crc     CRC-32C of the payload bytes
 *   76      4     u32 header_crc      CRC-32C of bytes 0..75
 *   80            payload:
 *     n x i64       labels
 *     n x u8        levels (0 .. max_level)
 *     n x u8        flags (bit 0: tombstone; other bits zero)
 *     pad to a multiple of 4 bytes with zeros
 *     n x dim x f32 vectors (normalised), node order
 *     links, node order: for each node, for each level 0 .. levels[i]:
 *       u32 count (<= 2*m on level 0, <= m above), then count x u32 node ids
 *
 * hnsw_load rejects (ERR_CORRUPT) a file whose sizes, checksums, counts,
 * levels, neighbour ids (< n, not the node itself, present on that level,
 * no repeats), entry point or labels (no two live nodes share one) are
 * wrong; payload_bytes must equal the file size minus 80.
 */
#ifndef IMGSEARCH_HNSW_H
#define IMGSEARCH_HNSW_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define HNSW_MAX_DIM 65536
#define HNSW_MAX_M 128
#define HNSW_MAX_EF 65536
#define HNSW_MAX_LEVEL 31
#define HNSW_MAX_NODES 0xFFFFFFF0u

struct hnsw;

struct hnsw_params {
    int m;               /* neighbours per node above layer 0 (2*m on it); 16 */
    int ef_construction; /* candidate list size while inserting; 128 */
    int ef_search;       /* default candidate list size of searches; 64 */
    double max_deleted_fraction; /* compact when tombstones exceed it; 0.2 */
    int quantize;        /* 1: traverse with int8 codes, re-rank in f32 (default);
                            0: float32 everywhere */
    uint64_t seed;       /* level generator seed; 0 = fixed default */
};

/* Fills p with the defaults above. */
void hnsw_params_default(struct hnsw_params *p);

struct hnsw_hit {
    int64_t label; /* item id */
    float score;   /* cosine similarity with the query */
};

/* Filter: nonzero keeps the item. Called from the searching thread. */
typedef int (*hnsw_accept_fn)(int64_t label, void *ctx);

/* Creates an empty index of dimension dim (p NULL: defaults). */
int hnsw_new(struct hnsw **out, int dim, const struct hnsw_params *p,
             struct err *err);
void hnsw_free(struct hnsw *h);

/* Inserts (or replaces) label with vector v (dim floats, copied and
 * normalised). A zero or non-finite vector is ERR_INVALID_ARGUMENT. May
 * compact tombstones first. */
int hnsw_insert(struct hnsw *h, int64_t label, const float *v, struct err *err);

/* Inserts n vectors (rows of the (n, dim) matrix v) with labels[i]: n calls
 * of hnsw_insert after reserving room once. `threads` is reserved for a
 * parallel build and ignored today (the build runs on the calling thread). */
int hnsw_insert_batch(struct hnsw *h, const int64_t *labels, const float *v,
                      size_t n, int threads, struct err *err);

/* Tombstones label. Returns 0, or -ERR_NOT_FOUND (err untouched) when the
 * label is absent. May compact. */
int hnsw_delete(struct hnsw *h, int64_t label);

/* 1 when label is live in the index. */
int hnsw_contains(const struct hnsw *h, int64_t label);
/* Copies label's normalised vector to out (dim floats); -ERR_NOT_FOUND. */
int hnsw_get(const struct hnsw *h, int64_t label, float *out);

/* The k best live items for query q (dim floats, need not be normalised),
 * best first, into out (room for k). ef: candidate list size (0: the
 * index's ef_search; raised to k), counted in distinct scores: exact
 * copies of one vector share a place. Among scores within about 1e-5 of
 * each other, the items whose vector is exactly the query's come first
 * (on every SIMD path, before near duplicates that float32 cannot tell
 * apart), the others by score, ties to the older item.
 * accept may be NULL. When fewer than k
 * results come out of the graph (a selective filter, a split graph) the
 * search falls back to an exact scan over the accepted live items, so it
 * returns min(k, accepted live items) hits. *n_out gets the count. Errors:
 * ERR_INVALID_ARGUMENT (zero query), ERR_NOMEM. */
int hnsw_search(const struct hnsw *h, const float *q, size_t k, int ef,
                hnsw_accept_fn accept, void *ctx, struct hnsw_hit *out,
                size_t *n_out, struct err *err);

/* The exact top k over all live accepted items (brute force), same
 * contract as hnsw_search. */
int hnsw_exact(const struct hnsw *h, const float *q, size_t k,
               hnsw_accept_fn accept, void *ctx, struct hnsw_hit *out,
               size_t *n_out, struct err *err);

/* Removes tombstones, repairing the neighbour lists that pointed at them
 * and linking any node left unreachable, and renumbers nodes densely. */
int hnsw_compact(struct hnsw *h, struct err *err);

/* Checks the graph's invariants: degrees within bounds, neighbour ids in
 * range and present on the level, no self loops or repeats, entry point on
 * the top level, counts and the label map consistent. 0 or ERR_CORRUPT with
 * the first problem found. */
int hnsw_validate(const struct hnsw *h, struct err *err);

/* Live items that a walk of layer 0 from the entry point (through
 * tombstones) never visits: no search could return them. Always 0: every
 * node keeps a pinned path from the entry point through every insert,
 * overwrite and delete, and compaction and hnsw_load rebuild it (linking
 * any node of a file that lacks one). For tests and diagnostics.
 * (size_t)-1 when out of memory. */
size_t hnsw_unreachable(const struct hnsw *h);

/* Writes the index to path durably: path.tmp.PID, fsync, rename, fsync of
 * the directory. */
int hnsw_save(const struct hnsw *h, const char *path, struct err *err);

/* Reads an index written by hnsw_save. ERR_NOT_FOUND when path does not
 * exist, ERR_CORRUPT for any inconsistency (see the format above), ERR_IO
 * for read errors. quantize and max_deleted_fraction come from p (NULL:
 * defaults); m, ef_construction and dim come from the file. Nodes of the
 * file that no search could reach (older builds left copies of duplicated
 * vectors so) are linked in memory; the file changes at the next save. */
int hnsw_load(struct hnsw **out, const char *path, const struct hnsw_params *p,
              struct err *err);

int hnsw_dim(const struct hnsw *h);
size_t hnsw_count(const struct hnsw *h);   /* live items */
size_t hnsw_nodes(const struct hnsw *h);   /* nodes, tombstones included */
size_t hnsw_deleted(const struct hnsw *h); /* tombstones */
/* Approximate bytes held by the index. */
size_t hnsw_memory(const struct hnsw *h);

void hnsw_set_ef_search(struct hnsw *h, int ef);
int hnsw_ef_search(const struct hnsw *h);

/* Two numbers kept for the caller and saved in the file: the last change
 * the index covers (the store's changes log sequence) and a tag (the
 * store's database id). Both start at 0. */
void hnsw_set_covered(struct hnsw *h, int64_t covered);
int64_t hnsw_covered(const struct hnsw *h);
void hnsw_set_tag(struct hnsw *h, uint64_t tag);
uint64_t hnsw_tag(const struct hnsw *h);

/* Calls fn for every live item, in node order, with its normalised vector
 * (owned by the index). Stops and returns fn's value when it is nonzero. */
int hnsw_foreach(const struct hnsw *h,
                 int (*fn)(int64_t label, const float *v, void *ctx), void *ctx);

/* CRC-32C (Castagnoli) of n bytes, continuing from crc (start with 0). */
uint32_t hnsw_crc32c(uint32_t crc, const void *p, size_t n);

#endif
