/* kernels.c - the non-GEMM kernels of the towers, each with a plain
 * reference and an AVX-512 version chosen at run time.
 *
 * Design:
 * 1. Attention for one (sequence, head): K is transposed into a (D, Lp)
 *    scratch (Lp = L rounded up to 16) so a row of scores is 16 lanes of
 *    independent FMAs per step instead of L horizontal reductions; the
 *    1/sqrt(D) scale is folded into q. Causal rows only touch j <= i.
 * 2. fp32 -> bf16 conversion rounds to nearest even exactly as
 *    st_f32_to_bf16 (VCVTNEPS2BF16 does the same), so both paths agree bit
 *    for bit.
 * 3. This file is compiled without -march flags; the AVX-512 functions carry
 *    target attributes and run only when the CPU reports the features.
 *    IMGSEARCH_SIMD=scalar|avx2|avx512 caps the path as in store/vec.c:
 *    there are no AVX2 kernels here, so scalar and avx2 both run the
 *    references (tests/run runs the unit tests once per value the CPU has).
 *    The variants are also callable by name (clip_int.h) so the kernel tests
 *    compare each one with the reference whatever the environment says.
 * Shapes: qkv is (R, 3C) with q, k, v at column offsets 0, C, 2C; head h
 * uses columns h*D .. h*D+D-1 of each; out is (R, C).
 */
#include "clip/clip_int.h"

#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "util/safetensors.h"

static int simd_level = -1; /* 0 scalar, 1 avx512f, 2 avx512f + avx512bf16 */

int clip__cpu_simd(void)
{
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f"))
        return 0;
    return __builtin_cpu_supports("avx512bf16") ? 2 : 1;
}

int clip__simd(void)
{
    if (simd_level < 0) {
        const char *e = getenv("IMGSEARCH_SIMD");
        int lvl = clip__cpu_simd();
        if (e && (!strcmp(e, "scalar") || !strcmp(e, "avx2")))
            lvl = 0;
        simd_level = lvl;
    }
    return simd_level;
}

void clip__attend_ref(const float *qkv, float *out, float *sc, int o, int L, int c,
                      int hd, int d, int causal)
{
    const float scale = 1.0f / sqrtf((float)d);
    const size_t stride = 3 * (size_t)c;
    for (int i = 0; i < L; i++) {
        const float *q = qkv + (size_t)(o + i) * stride + hd;
        int jn = causal ? i + 1 : L;
        float mx = -INFINITY;
        for (int j = 0; j < jn; j++) {
            const float *k = qkv + (size_t)(o + j) * stride + c + hd;
            float s = 0;
            for (int t = 0; t < d; t++)
                s += q[t] * k[t];
            s *= scale;
            sc[j] = s;
            if (s > mx)
                mx = s;
        }
        float sum = 0;
        for (int j = 0; j < jn; j++) {
            sc[j] = expf(sc[j] - mx);
            sum += sc[j];
        }
        float inv = 1.0f / sum;
        float *y = out + (size_t)(o + i) * c + hd;
        for (int t = 0; t < d; t++)
            y[t] = 0;
        for (int j = 0; j < jn; j++) {
            const float *v = qkv + (size_t)(o + j) * stride + 2 * c + hd;
            float p = sc[j] * inv;
            for (int t = 0; t < d; t++)
                y[t] += p * v[t];
        }
    }
}

/* e^x for 16 lanes: x = n ln2 + r with |r| <= ln2/2, e^r by a degree-6
 * Taylor polynomial (relative error < 2e-7 on that range), times 2^n by
 * VSCALEFPS. Inputs below -87 flush towards 0, as softmax wants. */
__attribute__((target("avx512f"))) static __m512 exp512(__m512 x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* s[0..n) = exp(s - max); returns the sum. Lanes past n are written 0 (the
 * buffer is padded to 16). */
__attribute__((target("avx512f"))) static float softmax_avx512(float *s, int n)
{
    const int nv = (n + 15) >> 4;
    const __mmask16 last = (__mmask16)(n & 15 ? (1u << (n & 15)) - 1 : 0xffff);
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int b = 0; b < nv; b++) {
        __mmask16 m = b == nv - 1 ? last : 0xffff;
        mx = _mm512_mask_max_ps(mx, m, mx, _mm512_loadu_ps(s + 16 * b));
    }
    const __m512 vmx = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 sum = _mm512_setzero_ps();
    for (int b = 0; b < nv; b++) {
        __mmask16 m = b == nv - 1 ? last : 0xffff;
        __m512 e = _mm512_maskz_mov_ps(m, exp512(_mm512_sub_ps(_mm512_loadu_ps(s + 16 * b), vmx)));
        _mm512_storeu_ps(s + 16 * b, e);
        sum = _mm512_add_ps(sum, e);
    }
    return _mm512_reduce_add_ps(sum);
}

/* sc must hold d*Lp + Lp floats. */
__attribute__((target("avx512f"))) void
clip__attend_avx512(const float *qkv, float *out, float *sc, int o, int L, int c, int hd,
              int d, int causal)
{
    const float scale = 1.0f / sqrtf((float)d);
    const size_t stride = 3 * (size_t)c;
    const int lp = (L + 15) & ~15;
    float *kt = sc, *s = sc + (size_t)d * lp;
    for (int j = 0; j < L; j++) {
        const float *k = qkv + (size_t)(o + j) * stride + c + hd;
        for (int t = 0; t < d; t++)
            kt[(size_t)t * lp + j] = k[t];
    }
    for (int j = L; j < lp; j++)
        for (int t = 0; t < d; t++)
            kt[(size_t)t * lp + j] = 0;
    for (int i = 0; i < L; i++) {
        const float *q = qkv + (size_t)(o + i) * stride + hd;
        const int jn = causal ? i + 1 : L, jv = (jn + 15) >> 4;
        /* scores, 64 keys at a time in four register accumulators */
        for (int b0 = 0; b0 < jv; b0 += 4) {
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            const int nb = jv - b0 < 4 ? jv - b0 : 4;
            const float *base = kt + 16 * (size_t)b0;
            for (int t = 0; t < d; t++) {
                __m512 qt = _mm512_set1_ps(q[t] * scale);
                const float *row = base + (size_t)t * lp;
                a0 = _mm512_fmadd_ps(qt, _mm512_loadu_ps(row), a0);
                if (nb > 1)
                    a1 = _mm512_fmadd_ps(qt, _mm512_loadu_ps(row + 16), a1);
                if (nb > 2)
                    a2 = _mm512_fmadd_ps(qt, _mm512_loadu_ps(row + 32), a2);
                if (nb > 3)
                    a3 = _mm512_fmadd_ps(qt, _mm512_loadu_ps(row + 48), a3);
            }
            _mm512_storeu_ps(s + 16 * b0, a0);
            if (nb > 1)
                _mm512_storeu_ps(s + 16 * b0 + 16, a1);
            if (nb > 2)
                _mm512_storeu_ps(s + 16 * b0 + 32, a2);
            if (nb > 3)
                _mm512_storeu_ps(s + 16 * b0 + 48, a3);
        }
        const float inv = 1.0f / softmax_avx512(s, jn);
        float *y = out + (size_t)(o + i) * c + hd;
        const float *v0 = qkv + (size_t)o * stride + 2 * c + hd;
        if (d == 64) { /* every CLIP head: four independent accumulators */
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int j = 0; j < jn; j++) {
                const float *v = v0 + (size_t)j * stride;
                __m512 p = _mm512_set1_ps(s[j]);
                a0 = _mm512_fmadd_ps(p, _mm512_loadu_ps(v), a0);
                a1 = _mm512_fmadd_ps(p, _mm512_loadu_ps(v + 16), a1);
                a2 = _mm512_fmadd_ps(p, _mm512_loadu_ps(v + 32), a2);
                a3 = _mm512_fmadd_ps(p, _mm512_loadu_ps(v + 48), a3);
            }
            __m512 vi = _mm512_set1_ps(inv);
            _mm512_storeu_ps(y, _mm512_mul_ps(a0, vi));
            _mm512_storeu_ps(y + 16, _mm512_mul_ps(a1, vi));
            _mm512_storeu_ps(y + 32, _mm512_mul_ps(a2, vi));
            _mm512_storeu_ps(y + 48, _mm512_mul_ps(a3, vi));
            continue;
        }
        for (int t = 0; t < d; t++) {
            float acc = 0;
            for (int j = 0; j < jn; j++)
                acc += s[j] * v0[(size_t)j * stride + t];
            y[t] = acc * inv;
        }
    }
}

size_t clip__attend_scratch(int maxlen, int d)
{
    size_t lp = ((size_t)maxlen + 15) & ~(size_t)15;
    return lp * (size_t)d + lp;
}

void clip__attend(const float *qkv, float *out, float *sc, int o, int L, int c, int hd,
                  int d, int causal)
{
    if (clip__simd() >= 1)
        clip__attend_avx512(qkv, out, sc, o, L, c, hd, d, causal);
    else
        clip__attend_ref(qkv, out, sc, o, L, c, hd, d, causal);
}

void clip__to_bf16_ref(const float *x, uint16_t *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = st_f32_to_bf16(x[i]);
}

__attribute__((target("avx512f,avx512bf16"))) void
clip__to_bf16_avx512(const float *x, uint16_t *y, size_t n)
{
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
        _mm512_storeu_si512((void *)(y + i), (__m512i)v);
    }
    for (; i < n; i++)
        y[i] = st_f32_to_bf16(x[i]);
}

void clip__to_bf16(const float *x, uint16_t *y, size_t n)
{
    if (clip__simd() >= 2)
        clip__to_bf16_avx512(x, y, n);
    else
        clip__to_bf16_ref(x, y, n);
}

void clip__layernorm_ref(const float *x, float *y, int64_t r, int c, const float *g,
                         const float *b, float eps)
{
    for (int64_t i = 0; i < r; i++) {
        const float *xi = x + i * c;
        float *yi = y + i * c;
        float mean = 0;
        for (int j = 0; j < c; j++)
            mean += xi[j];
        mean /= (float)c;
        float var = 0;
        for (int j = 0; j < c; j++) {
            float dd = xi[j] - mean;
            var += dd * dd;
        }
        var /= (float)c;
        float inv = 1.0f / sqrtf(var + eps);
        for (int j = 0; j < c; j++)
            yi[j] = (xi[j] - mean) * inv * g[j] + b[j];
    }
}

/* Two passes over the row (mean, then centred variance: no cancellation),
 * 16 lanes at a time, masked tail. */
__attribute__((target("avx512f"))) void
clip__layernorm_avx512(const float *x, float *y, int64_t r, int c, const float *g,
                 const float *b, float eps)
{
    const int full = c & ~15;
    const __mmask16 tail = (__mmask16)((1u << (c - full)) - 1);
    for (int64_t i = 0; i < r; i++) {
        const float *xi = x + i * c;
        float *yi = y + i * c;
        __m512 acc = _mm512_setzero_ps();
        for (int j = 0; j < full; j += 16)
            acc = _mm512_add_ps(acc, _mm512_loadu_ps(xi + j));
        acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(tail, xi + full));
        const float mean = _mm512_reduce_add_ps(acc) / (float)c;
        const __m512 vm = _mm512_set1_ps(mean);
        acc = _mm512_setzero_ps();
        for (int j = 0; j < full; j += 16) {
            __m512 dd = _mm512_sub_ps(_mm512_loadu_ps(xi + j), vm);
            acc = _mm512_fmadd_ps(dd, dd, acc);
        }
        __m512 dt = _mm512_maskz_sub_ps(tail, _mm512_maskz_loadu_ps(tail, xi + full), vm);
        acc = _mm512_fmadd_ps(dt, dt, acc);
        const float inv = 1.0f / sqrtf(_mm512_reduce_add_ps(acc) / (float)c + eps);
        const __m512 vi = _mm512_set1_ps(inv);
        for (int j = 0; j < full; j += 16) {
            __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(xi + j), vm), vi);
            _mm512_storeu_ps(yi + j, _mm512_fmadd_ps(v, _mm512_loadu_ps(g + j), _mm512_loadu_ps(b + j)));
        }
        if (tail) {
            __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, xi + full), vm), vi);
            _mm512_mask_storeu_ps(yi + full, tail,
                                  _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(tail, g + full),
                                                  _mm512_maskz_loadu_ps(tail, b + full)));
        }
    }
}

void clip__layernorm(const float *x, float *y, int64_t r, int c, const float *g,
                     const float *b, float eps)
{
    const int simd = clip__simd();
#pragma omp parallel if (r > 16)
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        int64_t lo = r * t / nt, hi = r * (t + 1) / nt;
        if (simd >= 1)
            clip__layernorm_avx512(x + lo * c, y + lo * c, hi - lo, c, g, b, eps);
        else
            clip__layernorm_ref(x + lo * c, y + lo * c, hi - lo, c, g, b, eps);
    }
}
