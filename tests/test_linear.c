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
    int ms[] = {1, 50, 300};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
        compare(ms[i], 128, 384, CLIP_ACT_NONE, 0, CLIP_BF16, 1e-2);
        compare(ms[i], 512, 128, CLIP_ACT_QUICK_GELU, 1, CLIP_BF16, 1e-2);
    }
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

/* The AVX-512 attention against the plain reference, causal or not, for
 * lengths around the 16-lane blocks. */
TEST(attention_kernel_matches_reference)
{
    const int c = 128, d = 64;
    int lens[] = {1, 7, 16, 17, 50, 77};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
        for (int causal = 0; causal < 2; causal++) {
            int L = lens[li];
            float *qkv = malloc(sizeof(float) * (size_t)(L + 3) * 3 * c);
            float *a = calloc((size_t)(L + 3) * c, sizeof(float)), *b = calloc((size_t)(L + 3) * c, sizeof(float));
            float *sc = malloc(sizeof(float) * clip__attend_scratch(L, d));
            for (int i = 0; i < (L + 3) * 3 * c; i++)
                qkv[i] = frand() * 2.0f;
            for (int h = 0; h < c / d; h++) {
                clip__attend(qkv, a, sc, 3, L, c, h * d, d, causal);
                clip__attend_ref(qkv, b, sc, 3, L, c, h * d, d, causal);
            }
            CHECKF(rel_err(a, b, (size_t)(L + 3) * c) < 1e-5, "L=%d causal=%d err %g", L, causal,
                   rel_err(a, b, (size_t)(L + 3) * c));
            free(qkv);
            free(a);
            free(b);
            free(sc);
        }
}

TEST(bf16_conversion_matches_reference)
{
    const size_t n = 1000;
    float *x = malloc(sizeof(float) * n);
    uint16_t *a = malloc(2 * n), *b = malloc(2 * n);
    for (size_t i = 0; i < n; i++)
        x[i] = frand() * 1000.0f;
    x[0] = 1.00390625f; /* a tie: rounds to even */
    x[1] = INFINITY;
    x[2] = -0.0f;
    clip__to_bf16(x, a, n);
    clip__to_bf16_ref(x, b, n);
    CHECK(memcmp(a, b, 2 * n) == 0);
    CHECK(a[0] == 0x3f80);
    free(x);
    free(a);
    free(b);
}

TEST(layernorm_kernel_matches_reference)
{
    int widths[] = {1, 15, 16, 17, 128, 768, 1000};
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
        clip__layernorm(x, y1, r, c, g, b, 1e-5f);
        clip__layernorm_ref(x, y2, r, c, g, b, 1e-5f);
        CHECKF(rel_err(y1, y2, (size_t)r * c) < 1e-5, "c=%d err %g", c, rel_err(y1, y2, (size_t)r * c));
        free(x);
        free(g);
        free(b);
        free(y1);
        free(y2);
    }
}

TEST_MAIN(layernorm_kernel_matches_reference, fp32_matches_reference, bf16_close_to_reference, many_shapes_reuse_cache,
          attention_kernel_matches_reference, bf16_conversion_matches_reference)
