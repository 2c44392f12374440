/* test_linear.c - oneDNN products against the plain reference. */
#include "test.h"
#include "clip/clip_int.h"
#include "clip/linear.h"

#include <stdint.h>

static uint64_t rng = 88172645463325252ull;
static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static double rel_err(const float *a, const float *b, size_t n)
{
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        s += (double)b[i] * b[i];
    }
    return s > 0 ? sqrt(d / s) : sqrt(d);
}

/* Same inputs, same starting y, through oneDNN and through the reference. */
static void compare(int m, int k, int n, enum clip_act act, int acc,
                    enum clip_precision prec, double tol)
{
    float *w = malloc(sizeof(float) * (size_t)n * k), *wc = malloc(sizeof(float) * (size_t)n * k);
    float *b = malloc(sizeof(float) * (size_t)n), *bc = malloc(sizeof(float) * (size_t)n);
    float *x = malloc(sizeof(float) * (size_t)m * k);
    float *y = malloc(sizeof(float) * (size_t)m * n), *yr = malloc(sizeof(float) * (size_t)m * n);
    uint16_t *xbf = malloc(sizeof(uint16_t) * (size_t)m * k);
    for (size_t i = 0; i < (size_t)n * k; i++)
        wc[i] = w[i] = frand() * 0.1f;
    for (int i = 0; i < n; i++)
        bc[i] = b[i] = frand();
    for (size_t i = 0; i < (size_t)m * k; i++)
        x[i] = frand();
    for (size_t i = 0; i < (size_t)m * n; i++)
        y[i] = yr[i] = frand();
    clip_linear_ref(x, m, k, wc, bc, n, act, acc, yr);
    struct clip_linear l;
    struct err e;
    int rc = clip_linear_init(&l, k, n, w, b, act, acc, prec, &e);
    CHECKF(rc == 0, "%s", e.msg);
    if (rc == 0) {
        rc = clip_linear_forward(&l, x, m, y, xbf, &e);
        CHECKF(rc == 0, "%s", e.msg);
        double r = rel_err(y, yr, (size_t)m * n);
        CHECKF(r < tol, "m=%d k=%d n=%d act=%d acc=%d prec=%d rel err %g", m, k, n,
               act, acc, prec, r);
        clip_linear_free(&l);
    }
    free(wc);
    free(bc);
    free(x);
    free(y);
    free(yr);
    free(xbf);
}

TEST(fp32_matches_reference)
{
    int ms[] = {1, 7, 50, 256, 300};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
        compare(ms[i], 128, 384, CLIP_ACT_NONE, 0, CLIP_FP32, 1e-5);
        compare(ms[i], 128, 512, CLIP_ACT_QUICK_GELU, 0, CLIP_FP32, 1e-5);
        compare(ms[i], 512, 128, CLIP_ACT_NONE, 1, CLIP_FP32, 1e-5);
        compare(ms[i], 96, 40, CLIP_ACT_GELU, 0, CLIP_FP32, 1e-5);
        compare(ms[i], 64, 48, CLIP_ACT_QUICK_GELU, 1, CLIP_FP32, 1e-5);
    }
}

TEST(bf16_close_to_reference)
{
    if (!clip_cpu_has_bf16())
        SKIP("cpu:avx512_bf16|amx_bf16", "no bf16 matmul on this CPU (the refusal is tested "
             "by bf16_refused_without_cpu_support)");
    int ms[] = {1, 50, 300};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
        compare(ms[i], 128, 384, CLIP_ACT_NONE, 0, CLIP_BF16, 1e-2);
        compare(ms[i], 512, 128, CLIP_ACT_QUICK_GELU, 1, CLIP_BF16, 1e-2);
    }
}

/* bf16 on a CPU without it: a clear error before anything is packed, the
 * weights freed (IMGSEARCH_NO_BF16 plays such a CPU on any machine). */
static void refused(void)
{
    float *w = calloc(64 * 64, sizeof(float)), *b = calloc(64, sizeof(float));
    struct clip_linear l;
    struct err e = {0};
    /* CHECK_INT_EQ evaluates its arguments twice: call once */
    int rc = clip_linear_init(&l, 64, 64, w, b, CLIP_ACT_NONE, 0, CLIP_BF16, &e);
    CHECK_INT_EQ(rc, -ERR_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(e.msg, "bf16 needs a CPU with AVX512-BF16 or AMX");
    CHECK_STR_CONTAINS(e.msg, "--precision fp32 or auto");
    CHECK(l.wmem == NULL && l.w == NULL && l.b == NULL);
}

TEST(bf16_refused_without_cpu_support)
{
    const int native = clip_cpu_has_bf16();
    if (!native)
        refused();
    setenv("IMGSEARCH_NO_BF16", "1", 1);
    CHECK(!clip_cpu_has_bf16());
    refused();
    unsetenv("IMGSEARCH_NO_BF16");
    CHECK_INT_EQ(clip_cpu_has_bf16(), native);
}

TEST(many_shapes_reuse_cache)
{
    /* a linear layer sees more distinct M than it has cache slots */
    float *w = malloc(sizeof(float) * 64 * 64), *wc = malloc(sizeof(float) * 64 * 64);
    for (int i = 0; i < 64 * 64; i++)
        wc[i] = w[i] = frand() * 0.1f;
    struct clip_linear l;
    struct err e;
    REQUIRE(clip_linear_init(&l, 64, 64, w, NULL, CLIP_ACT_NONE, 0, CLIP_FP32, &e) == 0);
    float x[41 * 64], y[41 * 64], yr[41 * 64];
    for (int rep = 0; rep < 2; rep++)
        for (int m = 1; m <= 41; m += 2) {
            for (int i = 0; i < m * 64; i++)
                x[i] = frand();
            clip_linear_ref(x, m, 64, wc, NULL, 64, CLIP_ACT_NONE, 0, yr);
            CHECK(clip_linear_forward(&l, x, m, y, NULL, &e) == 0);
            CHECKF(rel_err(y, yr, (size_t)m * 64) < 1e-5, "m=%d", m);
        }
    clip_linear_free(&l);
    free(wc);
}

/* ---- the non-GEMM kernels, one case per variant ----
 * The reference (scalar) variants are checked against double-precision
 * computations written out here, the AVX-512 variants against the
 * reference; each variant is called by name, whatever IMGSEARCH_SIMD says,
 * and a variant this CPU cannot run is reported as skipped. */

/* attention of one head in double: rows o..o+L-1, columns hd..hd+d-1 */
static void attend_double(const float *qkv, float *out, int o, int L, int c, int hd, int d,
                          int causal)
{
    const size_t stride = 3 * (size_t)c;
    double *s = malloc(sizeof(double) * (size_t)L);
    for (int i = 0; i < L; i++) {
        const float *q = qkv + (size_t)(o + i) * stride + hd;
        int jn = causal ? i + 1 : L;
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j < jn; j++) {
            const float *k = qkv + (size_t)(o + j) * stride + c + hd;
            double v = 0;
            for (int t = 0; t < d; t++)
                v += (double)q[t] * k[t];
            s[j] = v / sqrt((double)d);
            mx = s[j] > mx ? s[j] : mx;
        }
        for (int j = 0; j < jn; j++)
            sum += s[j] = exp(s[j] - mx);
        for (int t = 0; t < d; t++) {
            double y = 0;
            for (int j = 0; j < jn; j++)
                y += s[j] * qkv[(size_t)(o + j) * stride + 2 * c + hd + t];
            out[(size_t)(o + i) * c + hd + t] = (float)(y / sum);
        }
    }
    free(s);
}

typedef void (*attend_fn)(const float *, float *, float *, int, int, int, int, int, int);

/* variant against truth (both written for every head of rows 3..3+L-1) */
static void attention_variant(attend_fn variant, attend_fn truth_f, int truth_double)
{
    const int c = 128, d = 64;
    int lens[] = {1, 7, 16, 17, 50, 77};
    double worst = 0;
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
        for (int causal = 0; causal < 2; causal++) {
            int L = lens[li];
            float *qkv = malloc(sizeof(float) * (size_t)(L + 3) * 3 * c);
            float *a = calloc((size_t)(L + 3) * c, sizeof(float)), *b = calloc((size_t)(L + 3) * c, sizeof(float));
            float *sc = malloc(sizeof(float) * clip__attend_scratch(L, d));
            for (int i = 0; i < (L + 3) * 3 * c; i++)
                qkv[i] = frand() * 2.0f;
            for (int h = 0; h < c / d; h++) {
                variant(qkv, a, sc, 3, L, c, h * d, d, causal);
                if (truth_double)
                    attend_double(qkv, b, 3, L, c, h * d, d, causal);
                else
                    truth_f(qkv, b, sc, 3, L, c, h * d, d, causal);
            }
            double r = rel_err(a, b, (size_t)(L + 3) * c);
            worst = r > worst ? r : worst;
            CHECKF(r < 2e-6, "L=%d causal=%d err %g", L, causal, r);
            free(qkv);
            free(a);
            free(b);
            free(sc);
        }
    /* the bound (2e-6) is about 10x what the variants reach: printed here */
    printf("  %s: worst relative error %.2g\n", test_current_, worst);
}

TEST(attention_scalar_matches_double) { attention_variant(clip__attend_ref, NULL, 1); }

TEST(attention_avx512_matches_scalar)
{
    if (clip__cpu_simd() < 1)
        SKIP("cpu:avx512f", "no AVX-512F: the AVX-512 attention cannot run here");
    attention_variant(clip__attend_avx512, clip__attend_ref, 0);
}

/* IMGSEARCH_SIMD picks the path the dispatchers use: scalar and avx2 (no
 * AVX2 kernels here) the references, otherwise the best the CPU has. */
TEST(dispatch_follows_imgsearch_simd)
{
    const char *e = getenv("IMGSEARCH_SIMD");
    int want = e && (!strcmp(e, "scalar") || !strcmp(e, "avx2")) ? 0 : clip__cpu_simd();
    CHECK_INT_EQ(clip__simd(), want);
}

static uint16_t bf16_of(float f) /* written out again: round to nearest even */
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40u);
    uint32_t lsb = (x >> 16) & 1u;
    return (uint16_t)((x + 0x7fffu + lsb) >> 16);
}

static float *bf16_inputs(size_t n)
{
    float *x = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++)
        x[i] = frand() * 1000.0f;
    x[0] = 1.00390625f; /* a tie: rounds to even (down) */
    x[1] = INFINITY;
    x[2] = -0.0f;
    x[3] = 1.01171875f; /* a tie: rounds to even (up) */
    x[4] = -3.0e38f;
    return x;
}

TEST(bf16_conversion_scalar)
{
    const size_t n = 1000;
    float *x = bf16_inputs(n);
    uint16_t *a = malloc(2 * n);
    clip__to_bf16_ref(x, a, n);
    int bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += a[i] != bf16_of(x[i]);
    CHECK_INT_EQ(bad, 0);
    CHECK(a[0] == 0x3f80);
    CHECK(a[1] == 0x7f80);
    CHECK(a[2] == 0x8000);
    CHECK(a[3] == 0x3f82);
    free(x);
    free(a);
}

TEST(bf16_conversion_avx512_matches_scalar)
{
    if (clip__cpu_simd() < 2)
        SKIP("cpu:avx512_bf16", "no AVX512-BF16: the VCVTNE2PS2BF16 conversion cannot run here");
    const size_t n = 1000;
    float *x = bf16_inputs(n);
    uint16_t *a = malloc(2 * n), *b = malloc(2 * n);
    clip__to_bf16_avx512(x, a, n);
    clip__to_bf16_ref(x, b, n);
    CHECK(memcmp(a, b, 2 * n) == 0);
    free(x);
    free(a);
    free(b);
}

static void layernorm_double(const float *x, float *y, int r, int c, const float *g,
                             const float *b, double eps)
{
    for (int i = 0; i < r; i++) {
        double m = 0, v = 0;
        for (int j = 0; j < c; j++)
            m += x[(size_t)i * c + j];
        m /= c;
        for (int j = 0; j < c; j++)
            v += (x[(size_t)i * c + j] - m) * (x[(size_t)i * c + j] - m);
        v /= c;
        for (int j = 0; j < c; j++)
            y[(size_t)i * c + j] = (float)((x[(size_t)i * c + j] - m) / sqrt(v + eps) * g[j] + b[j]);
    }
}

typedef void (*layernorm_fn)(const float *, float *, int64_t, int, const float *, const float *, float);

/* variant against the double computation; r = 37 rows also goes through
 * the threaded dispatcher (r > 16) */
static void layernorm_variant(layernorm_fn variant)
{
    int widths[] = {1, 15, 16, 17, 128, 768, 1000};
    double worst = 0;
    for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++) {
        int c = widths[wi], r = 37;
        float *x = malloc(sizeof(float) * (size_t)r * c), *g = malloc(sizeof(float) * (size_t)c);
        float *b = malloc(sizeof(float) * (size_t)c), *y1 = malloc(sizeof(float) * (size_t)r * c);
        float *y2 = malloc(sizeof(float) * (size_t)r * c);
        for (int i = 0; i < r * c; i++)
            x[i] = frand() * 3.0f + 1.0f;
        for (int i = 0; i < c; i++) {
            g[i] = frand() + 1.0f;
            b[i] = frand();
        }
        variant(x, y1, r, c, g, b, 1e-5f);
        layernorm_double(x, y2, r, c, g, b, 1e-5);
        double err = rel_err(y1, y2, (size_t)r * c);
        worst = err > worst ? err : worst;
        CHECKF(err < 2e-6, "c=%d err %g", c, err);
        free(x);
        free(g);
        free(b);
        free(y1);
        free(y2);
    }
    /* the bound (2e-6) is about 10x what the variants reach: printed here */
    printf("  %s: worst relative error %.2g\n", test_current_, worst);
}

TEST(layernorm_scalar_matches_double) { layernorm_variant(clip__layernorm_ref); }

TEST(layernorm_avx512_matches_double)
{
    if (clip__cpu_simd() < 1)
        SKIP("cpu:avx512f", "no AVX-512F: the AVX-512 LayerNorm cannot run here");
    layernorm_variant(clip__layernorm_avx512);
}

/* the dispatcher (threaded over rows) with whatever path is active */
TEST(layernorm_dispatch_matches_double) { layernorm_variant(clip__layernorm); }

TEST_MAIN(layernorm_scalar_matches_double, layernorm_avx512_matches_double,
          layernorm_dispatch_matches_double, fp32_matches_reference, bf16_close_to_reference,
          bf16_refused_without_cpu_support, many_shapes_reuse_cache,
          attention_scalar_matches_double, attention_avx512_matches_scalar,
          dispatch_follows_imgsearch_simd, bf16_conversion_scalar,
          bf16_conversion_avx512_matches_scalar)
