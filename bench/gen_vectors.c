/* gen_vectors.c - clustered, normalised test vectors with exact truth.
 *
 * usage: gen_vectors --n N --queries Q --dim D --out PREFIX
 *                    [--clusters C] [--rank R] [--spread A] [--noise B] [--seed S]
 *
 * Writes PREFIX.base.f32 (N x D float32), PREFIX.query.f32 (Q x D float32)
 * and PREFIX.truth.i32 (Q x 100 int32: the 100 base rows of highest cosine
 * for each query, best first), all little-endian, row-major.
 *
 * The model imitates image embeddings, whose neighbourhoods have a low
 * intrinsic dimension: C cluster centres uniform on the sphere; a point of
 * cluster j is normalize(c_j + A * B_j z + B * e) where z ~ N(0, I_R) moves it
 * on the cluster's own random R-dimensional subspace B_j (columns ~ N(0, 1/D))
 * and e ~ N(0, I_D / D) is isotropic noise. Queries come from the same
 * distribution (they are not base rows). The truth is computed exactly:
 * base rows are scanned in L2-sized chunks, every query keeps a bounded heap,
 * and queries are spread over OpenMP threads.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "store/vec.h"

#define TRUTH_K 100
#define CHUNK 256

static uint64_t rng_state;

static uint64_t next_u64(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double gauss(void)
{
    double u = ((double)(next_u64() >> 11) + 0.5) / 9007199254740992.0;
    double v = ((double)(next_u64() >> 11) + 0.5) / 9007199254740992.0;
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

struct model {
    int d, c, r;        /* dimension, clusters, subspace rank */
    double a, b;        /* subspace spread, isotropic noise */
    float *centers;     /* (c, d) unit vectors */
    float *bases;       /* (c, r, d) */
};

static void sample(const struct model *m, float *x)
{
    int j = (int)(next_u64() % (uint64_t)m->c);
    const float *c = m->centers + (size_t)j * m->d;
    double sd = 1.0 / sqrt((double)m->d);
    for (int i = 0; i < m->d; i++)
        x[i] = c[i] + (float)(m->b * sd * gauss());
    for (int k = 0; k < m->r; k++) {
        float z = (float)(m->a * gauss());
        const float *bk = m->bases + ((size_t)j * m->r + k) * m->d;
        for (int i = 0; i < m->d; i++)
            x[i] += z * bk[i];
    }
    vec_normalize(x, (size_t)m->d);
}

static int write_file(const char *prefix, const char *ext, const void *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s.%s", prefix, ext);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f)) {
        fprintf(stderr, "gen_vectors: cannot write %s\n", path);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    long n = 0, nq = 0, d = 0, c = 1000, r = 24, seed = 1;
    double a = 0.35, b = 0.15;
    const char *out = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *o = argv[i], *v = argv[i + 1];
        if (!strcmp(o, "--n")) n = atol(v);
        else if (!strcmp(o, "--queries")) nq = atol(v);
        else if (!strcmp(o, "--dim")) d = atol(v);
        else if (!strcmp(o, "--clusters")) c = atol(v);
        else if (!strcmp(o, "--rank")) r = atol(v);
        else if (!strcmp(o, "--spread")) a = atof(v);
        else if (!strcmp(o, "--noise")) b = atof(v);
        else if (!strcmp(o, "--seed")) seed = atol(v);
        else if (!strcmp(o, "--out")) out = v;
        else {
            fprintf(stderr, "gen_vectors: unknown option %s\n", o);
            return 2;
        }
    }
    if (n < TRUTH_K || nq < 1 || d < 1 || d > 65536 || c < 1 || r < 0 || !out) {
        fprintf(stderr, "usage: gen_vectors --n N(>=100) --queries Q --dim D --out PREFIX "
                        "[--clusters C] [--rank R] [--spread A] [--noise B] [--seed S]\n");
        return 2;
    }
    rng_state = (uint64_t)seed * 0x2545F4914F6CDD1Dull;
    struct model m = {(int)d, (int)c, (int)r, a, b, NULL, NULL};
    m.centers = malloc((size_t)c * d * sizeof(float));
    m.bases = malloc((size_t)c * (r ? r : 1) * d * sizeof(float));
    float *base = malloc((size_t)n * d * sizeof(float));
    float *qs = malloc((size_t)nq * d * sizeof(float));
    int32_t *truth = malloc((size_t)nq * TRUTH_K * sizeof(int32_t));
    struct vec_hit *heaps = malloc((size_t)nq * TRUTH_K * sizeof *heaps);
    size_t *hn = calloc((size_t)nq, sizeof *hn);
    if (!m.centers || !m.bases || !base || !qs || !truth || !heaps || !hn) {
        fprintf(stderr, "gen_vectors: out of memory\n");
        return 1;
    }
    double sd = 1.0 / sqrt((double)d);
    for (long j = 0; j < c; j++) {
        float *cj = m.centers + j * d;
        for (long i = 0; i < d; i++)
            cj[i] = (float)gauss();
        vec_normalize(cj, (size_t)d);
    }
    for (size_t i = 0; i < (size_t)c * r * d; i++)
        m.bases[i] = (float)(sd * gauss());
    for (long i = 0; i < n; i++)
        sample(&m, base + i * d);
    for (long i = 0; i < nq; i++)
        sample(&m, qs + i * d);
    fprintf(stderr, "gen_vectors: %ld x %ld base, %ld queries, %ld clusters; truth...\n", n, d,
            nq, c);
    for (long c0 = 0; c0 < n; c0 += CHUNK) {
        size_t len = (size_t)(n - c0 < CHUNK ? n - c0 : CHUNK);
        const float *chunk = base + c0 * d;
#pragma omp parallel for schedule(static)
        for (long q = 0; q < nq; q++) {
            float s[CHUNK];
            vec_dot_rows(qs + q * d, chunk, len, (size_t)d, s);
            struct vec_heap h = {heaps + q * TRUTH_K, hn[q], TRUTH_K};
            for (size_t i = 0; i < len; i++)
                vec_heap_push(&h, c0 + (long)i, s[i]);
            hn[q] = h.n;
        }
    }
    for (long q = 0; q < nq; q++) {
        struct vec_heap h = {heaps + q * TRUTH_K, hn[q], TRUTH_K};
        vec_heap_sort(&h);
        for (int k = 0; k < TRUTH_K; k++)
            truth[q * TRUTH_K + k] = (int32_t)h.items[k].row;
    }
    int rc = write_file(out, "base.f32", base, (size_t)n * d * sizeof(float)) |
             write_file(out, "query.f32", qs, (size_t)nq * d * sizeof(float)) |
             write_file(out, "truth.i32", truth, (size_t)nq * TRUTH_K * sizeof(int32_t));
    free(m.centers);
    free(m.bases);
    free(base);
    free(qs);
    free(truth);
    free(heaps);
    free(hn);
    return rc ? 1 : 0;
}
