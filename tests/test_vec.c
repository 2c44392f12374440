/* test_vec.c - vector kernels: every SIMD path against the reference, odd
 * dimensions, int8 codes, the exact top-k against a full sort. */
#include <stdint.h>

#include "store/vec.h"
#include "test.h"

static uint64_t rs = 88172645463325252ull;
static uint64_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return rs;
}
static float frand(void) { return (float)((double)(rnd() >> 11) / 9007199254740992.0 * 2 - 1); }

static const size_t dims[] = {1, 3, 15, 16, 17, 31, 33, 63, 64, 65, 127, 128, 129, 511, 512, 513, 1000};
#define NDIMS (sizeof dims / sizeof dims[0])

/* Runs first: IMGSEARCH_SIMD is read once, on the first kernel call. */
TEST(env_forces_scalar)
{
    setenv("IMGSEARCH_SIMD", "scalar", 1);
    CHECK_INT_EQ(vec_simd_active(), VEC_SIMD_SCALAR);
    float a[3] = {1, 2, 3}, b[3] = {4, 5, 6};
    CHECK(vec_dot(a, b, 3) == 32.0f);
    CHECK(vec_dot_kernel() == vec_dot_kernel_for(VEC_SIMD_SCALAR));
    enum vec_simd best = vec_simd_supported(VEC_SIMD_AVX512) ? VEC_SIMD_AVX512
                       : vec_simd_supported(VEC_SIMD_AVX2)  ? VEC_SIMD_AVX2
                                                            : VEC_SIMD_SCALAR;
    CHECK_INT_EQ(vec_simd_set(VEC_SIMD_AVX512), best);
    CHECK_INT_EQ(vec_simd_active(), best);
    CHECK(strcmp(vec_simd_name(VEC_SIMD_AVX2), "avx2") == 0);
    unsetenv("IMGSEARCH_SIMD");
}

TEST(dot_paths_match_reference)
{
    float *a = malloc(1000 * sizeof *a), *b = malloc(1000 * sizeof *b);
    REQUIRE(a && b);
    int paths = 0;
    for (int s = VEC_SIMD_SCALAR; s <= VEC_SIMD_AVX512; s++) {
        vec_dot_fn f = vec_dot_kernel_for((enum vec_simd)s);
        if (!f)
            continue;
        paths++;
        for (size_t di = 0; di < NDIMS; di++) {
            size_t d = dims[di];
            for (int rep = 0; rep < 5; rep++) {
                double mag = 0;
                for (size_t i = 0; i < d; i++) {
                    a[i] = frand();
                    b[i] = frand();
                    mag += fabs((double)a[i] * b[i]);
                }
                double ref = vec_dot_ref(a, b, d), got = f(a, b, d);
                CHECKF(fabs(got - ref) <= 1e-6 * mag + 1e-30, "%s d=%zu: %.9g vs %.9g",
                       vec_simd_name((enum vec_simd)s), d, got, ref);
            }
            /* An odd tail must not read or count the bytes past d. */
            for (size_t i = 0; i < d; i++)
                a[i] = b[i] = 1;
            CHECKF(f(a, b, d) == (float)d, "%s d=%zu ones", vec_simd_name((enum vec_simd)s), d);
        }
    }
    CHECK(paths >= 1);
    free(a);
    free(b);
}

TEST(dot_rows_matches_single)
{
    size_t d = 37, n = 11;
    float q[37], m[11 * 37], out[11];
    for (size_t i = 0; i < d; i++)
        q[i] = frand();
    for (size_t i = 0; i < n * d; i++)
        m[i] = frand();
    for (int s = VEC_SIMD_SCALAR; s <= VEC_SIMD_AVX512; s++) {
        if (!vec_simd_supported((enum vec_simd)s))
            continue;
        vec_simd_set((enum vec_simd)s);
        vec_dot_rows(q, m, n, d, out);
        for (size_t r = 0; r < n; r++)
            CHECKF(fabsf(out[r] - vec_dot_ref(q, m + r * d, d)) < 1e-5f, "%s row %zu",
                   vec_simd_name((enum vec_simd)s), r);
    }
    vec_simd_set(VEC_SIMD_AVX512);
}

TEST(int8_paths_exact)
{
    int8_t a[1000], b[1000];
    for (int s = VEC_SIMD_SCALAR; s <= VEC_SIMD_AVX512; s++) {
        vec_dot_i8_fn f = vec_dot_i8_kernel_for((enum vec_simd)s);
        if (!f)
            continue;
        for (size_t di = 0; di < NDIMS; di++) {
            size_t d = dims[di];
            for (size_t i = 0; i < d; i++) {
                a[i] = (int8_t)((int)(rnd() % 255) - 127);
                b[i] = (int8_t)((int)(rnd() % 255) - 127);
            }
            CHECKF(f(a, b, d) == vec_dot_i8_ref(a, b, d), "%s d=%zu: %d vs %d",
                   vec_simd_name((enum vec_simd)s), d, f(a, b, d), vec_dot_i8_ref(a, b, d));
            /* Extremes: -127 * -127 summed over every lane. */
            memset(a, 0x81, d);
            memset(b, 0x81, d);
            CHECK_INT_EQ(f(a, b, d), (int32_t)d * 127 * 127);
        }
    }
    int8_t c[5];
    float x[5] = {0.5f, -1.0f, 0.25f, 0, 1.0f};
    float s = vec_quantize_i8(x, 5, c);
    CHECK(fabsf(s - 1.0f / 127) < 1e-9f);
    CHECK(c[0] == 64 && c[1] == -127 && c[2] == 32 && c[3] == 0 && c[4] == 127);
    float z[3] = {0, 0, 0};
    CHECK(vec_quantize_i8(z, 3, c) == 0 && c[0] == 0 && c[2] == 0);
}

TEST(normalize_and_cosine)
{
    float v[3] = {3, 0, 4};
    CHECK_INT_EQ(vec_normalize(v, 3), 0);
    CHECK(fabsf(v[0] - 0.6f) < 1e-7f && v[1] == 0 && fabsf(v[2] - 0.8f) < 1e-7f);
    float z[2] = {0, 0};
    CHECK_INT_EQ(vec_normalize(z, 2), -1);
    float nan[2] = {NAN, 1};
    CHECK_INT_EQ(vec_normalize(nan, 2), -1);
    float a[2] = {1, 0}, b[2] = {0, 2}, c[2] = {-3, 0};
    CHECK(vec_cosine(a, b, 2) == 0);
    CHECK(vec_cosine(a, c, 2) == -1);
    CHECK(vec_cosine(a, z, 2) == 0);
}

static int even_rows(size_t row, void *ctx)
{
    (void)ctx;
    return row % 2 == 0;
}

/* Integer-valued entries make every dot exact in float whatever the
 * summation order, so the expected order (ties: lower row) is exact. */
TEST(topk_matches_sort)
{
    size_t n = 1003, d = 29;
    float *m = malloc(n * d * sizeof *m), q[29];
    struct vec_hit *all = malloc(n * sizeof *all), *got = malloc((n + 5) * sizeof *got);
    REQUIRE(m && all && got);
    for (size_t i = 0; i < n * d; i++)
        m[i] = (float)((int)(rnd() % 7) - 3);
    for (size_t i = 0; i < d; i++)
        q[i] = (float)((int)(rnd() % 7) - 3);
    for (int filt = 0; filt < 2; filt++) {
        size_t na = 0;
        for (size_t r = 0; r < n; r++)
            if (!filt || r % 2 == 0)
                all[na++] = (struct vec_hit){(int64_t)r, vec_dot_ref(q, m + r * d, d)};
        /* insertion sort: best score first, then lower row */
        for (size_t i = 1; i < na; i++) {
            struct vec_hit x = all[i];
            size_t j = i;
            while (j > 0 && (all[j - 1].score < x.score ||
                             (all[j - 1].score == x.score && all[j - 1].row > x.row))) {
                all[j] = all[j - 1];
                j--;
            }
            all[j] = x;
        }
        size_t ks[] = {1, 10, 100, 257, 600, 1003, 1500};
        for (size_t t = 0; t < sizeof ks / sizeof ks[0]; t++) {
            long k = vec_topk(q, m, n, d, ks[t], filt ? even_rows : NULL, NULL, got);
            size_t want = ks[t] < na ? ks[t] : na;
            CHECKF(k == (long)want, "filt=%d k=%zu: got %ld", filt, ks[t], k);
            int bad = 0;
            for (long i = 0; i < k && !bad; i++)
                bad = got[i].row != all[i].row || got[i].score != all[i].score;
            CHECKF(!bad, "filt=%d k=%zu differs from the sort", filt, ks[t]);
        }
    }
    CHECK_INT_EQ(vec_topk(q, m, 0, d, 5, NULL, NULL, got), 0);
    CHECK_INT_EQ(vec_topk(q, m, n, d, 0, NULL, NULL, got), 0);
    free(m);
    free(all);
    free(got);
}

TEST(heap_keeps_best)
{
    struct vec_hit items[3];
    struct vec_heap h = {items, 0, 3};
    float s[] = {0.1f, 0.9f, 0.5f, 0.7f, 0.2f, 0.9f};
    for (int i = 0; i < 6; i++)
        vec_heap_push(&h, i, s[i]);
    vec_heap_sort(&h);
    CHECK_INT_EQ(h.n, 3);
    CHECK(items[0].row == 1 && items[1].row == 5 && items[2].row == 3);
}

/* ---- each SIMD path, called by name ---------------------------------------
 * One case per path, so a path this CPU cannot run is reported as skipped
 * ("SKIP kernels_avx512: ...", by main below), never counted as passed. */

/* The path's float dot, its int8 dot and its 4-row kernel (through
 * vec_dot_rows) against the references: float by error norm, int8
 * exactly; and the property search relies on: every path scores exact
 * copies of a vector bit-identically (same bytes, same arithmetic). */
static void check_path(enum vec_simd s)
{
    vec_dot_fn f = vec_dot_kernel_for(s);
    vec_dot_i8_fn fi = vec_dot_i8_kernel_for(s);
    REQUIRE(f && fi);
    enum vec_simd before = vec_simd_active();
    REQUIRE(vec_simd_set(s) == s);
    float *a = malloc(1000 * sizeof *a), *m = malloc(7 * 1000 * sizeof *m), out[7];
    int8_t *ca = malloc(1000), *cb = malloc(1000);
    REQUIRE(a && m && ca && cb);
    for (size_t di = 0; di < NDIMS; di++) {
        size_t d = dims[di];
        double err2 = 0, ref2 = 0;
        for (int rep = 0; rep < 4; rep++) {
            for (size_t i = 0; i < d; i++)
                a[i] = frand();
            for (size_t i = 0; i < 7 * d; i++)
                m[i] = frand();
            for (int r = 0; r < 7; r++) {
                double ref = vec_dot_ref(a, m + r * d, d), got = f(a, m + r * d, d);
                err2 += (got - ref) * (got - ref);
                ref2 += ref * ref + (double)d * 1e-6;
            }
            vec_dot_rows(a, m, 7, d, out);
            for (int r = 0; r < 7; r++) {
                double ref = vec_dot_ref(a, m + r * d, d);
                err2 += (out[r] - ref) * (out[r] - ref);
            }
            for (size_t i = 0; i < d; i++) {
                ca[i] = (int8_t)((int)(rnd() % 255) - 127);
                cb[i] = (int8_t)((int)(rnd() % 255) - 127);
            }
            CHECKF(fi(ca, cb, d) == vec_dot_i8_ref(ca, cb, d), "%s d=%zu int8: %d vs %d",
                   vec_simd_name(s), d, fi(ca, cb, d), vec_dot_i8_ref(ca, cb, d));
        }
        /* relative error norm over the float results */
        CHECKF(sqrt(err2 / ref2) < 1e-6, "%s d=%zu: relative error %.3g", vec_simd_name(s), d,
               sqrt(err2 / ref2));
        /* copies: rows 0..6 all equal to a; every score the same bits */
        for (int r = 0; r < 7; r++)
            memcpy(m + r * d, a, d * sizeof *a);
        vec_dot_rows(a, m, 7, d, out);
        float first = f(a, m, d);
        int same = 1;
        for (int r = 0; r < 7; r++)
            same &= out[r] == first && f(a, m + r * d, d) == first;
        CHECKF(same, "%s d=%zu: copies score differently", vec_simd_name(s), d);
    }
    vec_simd_set(before);
    free(a);
    free(m);
    free(ca);
    free(cb);
}

TEST(kernels_scalar) { check_path(VEC_SIMD_SCALAR); }
TEST(kernels_avx2) { check_path(VEC_SIMD_AVX2); }
TEST(kernels_avx512) { check_path(VEC_SIMD_AVX512); }

/* Why a case cannot run on this CPU, or NULL. */
static const char *skip_reason(const char *name)
{
    if (!strcmp(name, "kernels_avx2") && !vec_simd_supported(VEC_SIMD_AVX2))
        return "the CPU lacks AVX2+FMA";
    if (!strcmp(name, "kernels_avx512") && !vec_simd_supported(VEC_SIMD_AVX512))
        return "the CPU lacks AVX-512F";
    if (!strcmp(name, "kernels_avx512") && !vec_dot_i8_kernel_for(VEC_SIMD_AVX512))
        return "the CPU lacks AVX512BW/AVX512-VNNI (int8 kernel)";
    return NULL;
}

/* TEST_MAIN, less the cases this CPU cannot run: each is printed as
 * "SKIP <case>: <reason>" and counted neither passed nor failed. */
int main(int argc, char **argv)
{
    static const char *const names[] = {
        "env_forces_scalar", "dot_paths_match_reference", "dot_rows_matches_single",
        "int8_paths_exact", "normalize_and_cosine", "topk_matches_sort", "heap_keeps_best",
        "kernels_scalar", "kernels_avx2", "kernels_avx512"};
    static const test_fn fns[] = {
        env_forces_scalar, dot_paths_match_reference, dot_rows_matches_single,
        int8_paths_exact, normalize_and_cosine, topk_matches_sort, heap_keeps_best,
        kernels_scalar, kernels_avx2, kernels_avx512};
    const char *run_names[sizeof fns / sizeof fns[0]];
    test_fn run_fns[sizeof fns / sizeof fns[0]];
    int n = 0;
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        int wanted = argc < 2;
        for (int a = 1; a < argc; a++)
            wanted |= !strcmp(argv[a], names[i]);
        const char *why = skip_reason(names[i]);
        if (why) {
            if (wanted)
                printf("SKIP %s: %s\n", names[i], why);
            continue;
        }
        run_names[n] = names[i];
        run_fns[n++] = fns[i];
    }
    return test_run_all_(__FILE__, run_names, run_fns, n, argc, argv);
}
