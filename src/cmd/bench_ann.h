/* bench_ann.h - `imgsearch bench ann`: recall and speed of the HNSW index. */
#ifndef IMGSEARCH_BENCH_ANN_H
#define IMGSEARCH_BENCH_ANN_H

/* argv[0] is "ann". Options:
 *   --base FILE --queries FILE --truth FILE --dim D
 *   [--m 16] [--ef-construction 64] [--ef-search 40,100,200]
 *   [--quantize 0|1] [--threads N] [--k 10] [--store PATH|URL]...
 * base/queries: little-endian float32 rows of D columns; truth: int32, 100
 * nearest base rows (cosine) per query. Builds the index on one thread and
 * prints one JSON line per ef_search, one for the exact scan and one with
 * the peak RSS. With --store, each store instead (the embedded store, a
 * PostgreSQL URL; the base loaded with store_put unless the store holds
 * exactly those rows): one "store_ann" line per ef_search, searched with
 * store_search. Returns a process exit code. */
int cmd_bench_ann(int argc, char **argv);

#endif
