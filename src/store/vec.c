/* vec.c - float32 dot products, normalisation and exact top-k scans.
 *
 * Design:
 *  1. The file is compiled without -march flags; each SIMD kernel carries its
 *     own __attribute__((target(...))) and is only called after
 *     __builtin_cpu_supports says the CPU has the feature, so one binary runs
 *     everywhere and uses AVX-512 where it exists.
 *  2. The path is chosen once (pthread_once) and kept in a function pointer;
 *     hot loops fetch the pointer once (vec_dot_kernel) instead of
 *     dispatching per call.
 *  3. Dot kernels keep several independent accumulators so the FMA latency
 *     (4 cycles) does not serialise the loop; tails use masked loads
 *     (AVX-512) or a scalar loop (AVX2), so any d works.
 *  4. The exact scan (vec_topk) scores rows with the path's one dot kernel
 *     into a small buffer and only then offers them to a bounded min-heap:
 *     most rows lose to the heap's worst score, so the heap costs one
 *     compare per row. Every score of a path comes from that one kernel, so
 *     copies of a vector score bit-identically wherever they are scored (a
 *     4-row kernel that shared query loads rounded differently from the
 *     single-row one, so copies in a 4-row block and in the tail scored
 *     apart; it was no faster, the scan being bound by memory).
 *  5. The reference (vec_dot_ref) accumulates in double: it is what the
 *     tests compare every path against.
 */
#include "store/vec.h"

#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---- scalar ---------------------------------------------------------- */

float vec_dot_ref(const float *a, const float *b, size_t d)
{
    double s = 0;
    for (size_t i = 0; i < d; i++)
        s += (double)a[i] * (double)b[i];
    return (float)s;
}

/* The run-time scalar path: four float accumulators (what a careful C loop
 * does without SIMD); its rounding differs slightly from the reference. */
static float dot_scalar(const float *a, const float *b, size_t d)
{
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= d; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < d; i++)
        s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

/* ---- AVX2 + FMA ------------------------------------------------------ */

__attribute__((target("avx2,fma"))) static float hsum256(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
    return _mm_cvtss_f32(lo);
}

__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a,
                                                          const float *b,
                                                          size_t d)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= d; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < d; i++)
        s += a[i] * b[i];
    return s;
}

/* ---- AVX-512F -------------------------------------------------------- */

__attribute__((target("avx512f"))) static float dot_avx512(const float *a,
                                                           const float *b,
                                                           size_t d)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    __m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= d; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= d; i += 16)
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < d) {
        __mmask16 k = (__mmask16)((1u << (d - i)) - 1);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, a + i),
                             _mm512_maskz_loadu_ps(k, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1),
                                              _mm512_add_ps(s2, s3)));
}

/* ---- int8 ----------------------------------------------------------- */

int32_t vec_dot_i8_ref(const int8_t *a, const int8_t *b, size_t d)
{
    int32_t s = 0;
    for (size_t i = 0; i < d; i++)
        s += (int32_t)a[i] * (int32_t)b[i];
    return s;
}

__attribute__((target("avx2,fma"))) static int32_t dot_i8_avx2(const int8_t *a,
                                                               const int8_t *b,
                                                               size_t d)
{
    /* Sign-extend to 16 bits and use madd (pairs of products summed into
     * 32 bits): exact, no saturation. */
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        __m256i a0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(a + i)));
        __m256i b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + i)));
        __m256i a1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(a + i + 16)));
        __m256i b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + i + 16)));
        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(a0, b0));
        s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(a1, b1));
    }
    s0 = _mm256_add_epi32(s0, s1);
    __m128i x = _mm_add_epi32(_mm256_castsi256_si128(s0), _mm256_extracti128_si256(s0, 1));
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0x4e));
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0xb1));
    int32_t s = _mm_cvtsi128_si32(x);
    for (; i < d; i++)
        s += (int32_t)a[i] * (int32_t)b[i];
    return s;
}

/* VNNI multiplies unsigned by signed bytes: with a' = a ^ 0x80 = a + 128
 * (as unsigned), sum(a'*b) - 128*sum(b) = sum(a*b). Both sums run through
 * vpdpbusd; zero bytes (masked tails) add nothing to either. */
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static int32_t
dot_i8_avx512(const int8_t *a, const int8_t *b, size_t d)
{
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
    __m512i c0 = _mm512_setzero_si512(), c1 = _mm512_setzero_si512();
    size_t i = 0;
    for (; i + 128 <= d; i += 128) {
        __m512i b0 = _mm512_loadu_si512(b + i), b1 = _mm512_loadu_si512(b + i + 64);
        __m512i a0 = _mm512_xor_si512(_mm512_loadu_si512(a + i), flip);
        __m512i a1 = _mm512_xor_si512(_mm512_loadu_si512(a + i + 64), flip);
        s0 = _mm512_dpbusd_epi32(s0, a0, b0);
        s1 = _mm512_dpbusd_epi32(s1, a1, b1);
        c0 = _mm512_dpbusd_epi32(c0, flip, b0);
        c1 = _mm512_dpbusd_epi32(c1, flip, b1);
    }
    for (; i < d; i += 64) {
        __mmask64 k = d - i >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (d - i)) - 1);
        __m512i b0 = _mm512_maskz_loadu_epi8(k, b + i);
        __m512i a0 = _mm512_maskz_mov_epi8(k, _mm512_xor_si512(_mm512_maskz_loadu_epi8(k, a + i), flip));
        s0 = _mm512_dpbusd_epi32(s0, a0, b0);
        c0 = _mm512_dpbusd_epi32(c0, flip, b0);
    }
    __m512i s = _mm512_sub_epi32(_mm512_add_epi32(s0, s1), _mm512_add_epi32(c0, c1));
    return _mm512_reduce_add_epi32(s);
}

static int i8_avx512_ok(void)
{
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vnni");
}

float vec_quantize_i8(const float *x, size_t d, int8_t *c)
{
    float mx = 0;
    for (size_t i = 0; i < d; i++) {
        float a = fabsf(x[i]);
        if (a > mx)
            mx = a;
    }
    if (!(mx > 0) || !isfinite(mx)) {
        memset(c, 0, d);
        return 0;
    }
    float inv = 127.0f / mx;
    for (size_t i = 0; i < d; i++) {
        float v = nearbyintf(x[i] * inv);
        c[i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
    }
    return mx / 127.0f;
}

/* ---- dispatch -------------------------------------------------------- */

static pthread_once_t once = PTHREAD_ONCE_INIT;
static enum vec_simd active;
static vec_dot_fn dot_fn = dot_scalar;
static vec_dot_i8_fn dot_i8_fn = vec_dot_i8_ref;

int vec_simd_supported(enum vec_simd s)
{
    __builtin_cpu_init();
    switch (s) {
    case VEC_SIMD_SCALAR:
        return 1;
    case VEC_SIMD_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case VEC_SIMD_AVX512:
        return __builtin_cpu_supports("avx512f");
    }
    return 0;
}

static enum vec_simd select_path(enum vec_simd s)
{
    while (s > VEC_SIMD_SCALAR && !vec_simd_supported(s))
        s = (enum vec_simd)(s - 1);
    active = s;
    dot_fn = s == VEC_SIMD_AVX512 ? dot_avx512 : s == VEC_SIMD_AVX2 ? dot_avx2 : dot_scalar;
    dot_i8_fn = s == VEC_SIMD_AVX512 && i8_avx512_ok() ? dot_i8_avx512
              : s >= VEC_SIMD_AVX2 ? dot_i8_avx2 : vec_dot_i8_ref;
    return s;
}

static void init_once(void)
{
    enum vec_simd want = VEC_SIMD_AVX512;
    const char *e = getenv("IMGSEARCH_SIMD");
    if (e && !strcmp(e, "scalar"))
        want = VEC_SIMD_SCALAR;
    else if (e && !strcmp(e, "avx2"))
        want = VEC_SIMD_AVX2;
    select_path(want);
}

static inline void init(void) { pthread_once(&once, init_once); }

enum vec_simd vec_simd_active(void)
{
    init();
    return active;
}

const char *vec_simd_name(enum vec_simd s)
{
    return s == VEC_SIMD_AVX512 ? "avx512" : s == VEC_SIMD_AVX2 ? "avx2" : "scalar";
}

enum vec_simd vec_simd_set(enum vec_simd s)
{
    init();
    return select_path(s);
}

vec_dot_fn vec_dot_kernel(void)
{
    init();
    return dot_fn;
}

vec_dot_fn vec_dot_kernel_for(enum vec_simd s)
{
    if (!vec_simd_supported(s))
        return NULL;
    return s == VEC_SIMD_AVX512 ? dot_avx512 : s == VEC_SIMD_AVX2 ? dot_avx2 : dot_scalar;
}

vec_dot_i8_fn vec_dot_i8_kernel(void)
{
    init();
    return dot_i8_fn;
}

vec_dot_i8_fn vec_dot_i8_kernel_for(enum vec_simd s)
{
    if (!vec_simd_supported(s))
        return NULL;
    if (s == VEC_SIMD_AVX512)
        return i8_avx512_ok() ? dot_i8_avx512 : NULL;
    return s == VEC_SIMD_AVX2 ? dot_i8_avx2 : vec_dot_i8_ref;
}

int32_t vec_dot_i8(const int8_t *a, const int8_t *b, size_t d)
{
    init();
    return dot_i8_fn(a, b, d);
}

float vec_dot(const float *a, const float *b, size_t d)
{
    init();
    return dot_fn(a, b, d);
}

float vec_cosine(const float *a, const float *b, size_t d)
{
    init();
    float ab = dot_fn(a, b, d), aa = dot_fn(a, a, d), bb = dot_fn(b, b, d);
    if (!(aa > 0) || !(bb > 0))
        return 0;
    float c = ab / sqrtf(aa * bb);
    return c > 1 ? 1 : c < -1 ? -1 : c;
}

int vec_normalize(float *v, size_t d)
{
    double s = 0;
    for (size_t i = 0; i < d; i++)
        s += (double)v[i] * v[i];
    if (!(s > 0) || !isfinite(s))
        return -1;
    float inv = (float)(1.0 / sqrt(s));
    for (size_t i = 0; i < d; i++)
        v[i] *= inv;
    return 0;
}

void vec_dot_rows(const float *q, const float *m, size_t n, size_t d, float *out)
{
    init();
    for (size_t i = 0; i < n; i++)
        out[i] = dot_fn(q, m + i * d, d);
}

/* ---- bounded heap and exact top-k ------------------------------------ */

/* "a is worse than b": lower score, or equal score and higher row (so the
 * final order is deterministic: best score first, then lower row). */
static inline int worse(const struct vec_hit *a, const struct vec_hit *b)
{
    return a->score < b->score || (a->score == b->score && a->row > b->row);
}

static void sift_down(struct vec_hit *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && worse(&h[l], &h[m]))
            m = l;
        if (r < n && worse(&h[r], &h[m]))
            m = r;
        if (m == i)
            return;
        struct vec_hit t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

void vec_heap_push(struct vec_heap *h, int64_t row, float score)
{
    struct vec_hit x = {row, score};
    if (h->cap == 0)
        return;
    if (h->n < h->cap) {
        size_t i = h->n++;
        while (i > 0) {
            size_t p = (i - 1) / 2;
            if (!worse(&x, &h->items[p]))
                break;
            h->items[i] = h->items[p];
            i = p;
        }
        h->items[i] = x;
        return;
    }
    if (!worse(&h->items[0], &x))
        return;
    h->items[0] = x;
    sift_down(h->items, h->n, 0);
}

void vec_heap_sort(struct vec_heap *h)
{
    /* Pop the worst to the end repeatedly: the array ends best first. */
    for (size_t n = h->n; n > 1; n--) {
        struct vec_hit t = h->items[0];
        h->items[0] = h->items[n - 1];
        h->items[n - 1] = t;
        sift_down(h->items, n - 1, 0);
    }
}

#define SCAN_BLOCK 256

long vec_topk(const float *q, const float *m, size_t n, size_t d, size_t k,
              vec_accept_fn accept, void *ctx, struct vec_hit *out)
{
    init();
    if (k == 0 || n == 0)
        return 0;
    if (k > n)
        k = n;
    struct vec_hit stack[256];
    struct vec_heap h = {k <= 256 ? stack : malloc(k * sizeof *h.items), 0, k};
    if (!h.items)
        return -1;
    float scores[SCAN_BLOCK];
    if (!accept) {
        for (size_t b = 0; b < n; b += SCAN_BLOCK) {
            size_t len = n - b < SCAN_BLOCK ? n - b : SCAN_BLOCK;
            vec_dot_rows(q, m + b * d, len, d, scores);
            for (size_t i = 0; i < len; i++)
                if (h.n < k || scores[i] >= h.items[0].score)
                    vec_heap_push(&h, (int64_t)(b + i), scores[i]);
        }
    } else {
        for (size_t i = 0; i < n; i++)
            if (accept(i, ctx))
                vec_heap_push(&h, (int64_t)i, dot_fn(q, m + i * d, d));
    }
    vec_heap_sort(&h);
    memcpy(out, h.items, h.n * sizeof *out);
    long got = (long)h.n;
    if (h.items != stack)
        free(h.items);
    return got;
}
