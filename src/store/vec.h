/* vec.h - float32 vector kernels: dot products, normalisation, exact top-k.
 *
 * Every kernel has a plain scalar reference (vec_dot_ref) and SIMD paths
 * (AVX2+FMA, AVX-512F) chosen once at run time from the CPU's features. The
 * environment variable IMGSEARCH_SIMD=scalar|avx2|avx512 forces a path (a
 * path the CPU lacks falls back to the best one it has); vec_simd_set does
 * the same from code (tests). Vectors are float32, row-major; d is the
 * number of columns and may be any value >= 1 (no padding needed).
 */
#ifndef IMGSEARCH_VEC_H
#define IMGSEARCH_VEC_H

#include <stddef.h>
#include <stdint.h>

enum vec_simd {
    VEC_SIMD_SCALAR = 0, /* plain C, always available */
    VEC_SIMD_AVX2 = 1,   /* AVX2 + FMA */
    VEC_SIMD_AVX512 = 2, /* AVX-512F */
};

/* The path in use (decided on first use of any kernel). */
enum vec_simd vec_simd_active(void);
/* "scalar", "avx2", "avx512". */
const char *vec_simd_name(enum vec_simd s);
/* 1 when the CPU (and OS) can run path s. */
int vec_simd_supported(enum vec_simd s);
/* Selects a path; returns the path actually selected (s, or the best
 * supported one below s when the CPU lacks s). Not thread-safe with
 * concurrent kernel calls: call it before starting threads. */
enum vec_simd vec_simd_set(enum vec_simd s);

typedef float (*vec_dot_fn)(const float *a, const float *b, size_t d);

/* Sum a[i]*b[i] over i < d, through the active path. */
float vec_dot(const float *a, const float *b, size_t d);
/* The active path's dot kernel, for loops that call it many times. */
vec_dot_fn vec_dot_kernel(void);
/* The scalar reference: accumulates in double, the value tests trust. */
float vec_dot_ref(const float *a, const float *b, size_t d);
/* One specific path's kernel (NULL when the CPU lacks it). */
vec_dot_fn vec_dot_kernel_for(enum vec_simd s);

/* Cosine similarity in [-1, 1]; 0 when either vector is zero. */
float vec_cosine(const float *a, const float *b, size_t d);

/* Scales v to unit L2 norm in place. Returns 0, or -1 (v unchanged) when
 * the norm is zero or not finite. */
int vec_normalize(float *v, size_t d);

/* out[i] = dot(q, m + i*d) for i < n; m is (n, d). Each row is scored by
 * the active path's vec_dot kernel: the same bits as vec_dot gives. */
void vec_dot_rows(const float *q, const float *m, size_t n, size_t d,
                  float *out);

/* ---- int8 codes ----
 * A vector x is coded as c[i] = round(x[i] / s) with s = max|x[i]| / 127,
 * so x ~= s * c and dot(x, y) ~= s_x * s_y * dot_i8(c_x, c_y). The integer
 * dot is exact on every path (AVX-512 VNNI, AVX2, scalar). */
typedef int32_t (*vec_dot_i8_fn)(const int8_t *a, const int8_t *b, size_t d);
/* Codes x (d floats) into c (d bytes); returns the scale s (0 for a zero
 * vector, which codes as zeros). */
float vec_quantize_i8(const float *x, size_t d, int8_t *c);
int32_t vec_dot_i8_ref(const int8_t *a, const int8_t *b, size_t d);
int32_t vec_dot_i8(const int8_t *a, const int8_t *b, size_t d);
vec_dot_i8_fn vec_dot_i8_kernel(void);
/* NULL when the CPU lacks s (the AVX-512 int8 kernel needs AVX512BW and
 * AVX512-VNNI). */
vec_dot_i8_fn vec_dot_i8_kernel_for(enum vec_simd s);

struct vec_hit {
    int64_t row;  /* row index in the matrix (or a label, see callers) */
    float score;  /* dot product with the query */
};

/* Optional row filter: nonzero keeps the row. */
typedef int (*vec_accept_fn)(size_t row, void *ctx);

/* Exact top-k by dot product: scans the (n, d) matrix m with query q and
 * writes the best min(k, kept rows) hits to out, best first (ties: lower
 * row first). accept may be NULL (all rows kept). Returns the number of
 * hits written. Uses a bounded heap: O(n log k) time, no allocation when
 * k <= 256 (else one malloc; returns -1 if it fails). */
long vec_topk(const float *q, const float *m, size_t n, size_t d, size_t k,
              vec_accept_fn accept, void *ctx, struct vec_hit *out);

/* A bounded min-heap of the k best hits seen so far, for callers that
 * produce scores themselves. h->items has room for cap hits. */
struct vec_heap {
    struct vec_hit *items; /* heap array, worst hit at items[0] */
    size_t n;              /* hits held */
    size_t cap;            /* k */
};
/* Offers a hit; keeps it if the heap has room or it beats the worst. */
void vec_heap_push(struct vec_heap *h, int64_t row, float score);
/* Sorts the held hits best first (destroys the heap order). */
void vec_heap_sort(struct vec_heap *h);

#endif
