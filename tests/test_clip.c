/* test_clip.c - the towers against OpenAI's outputs for the tiny fixture
 * model, both naming schemes, and the safetensors validation. */
#include "test.h"
#include "clip/clip.h"
#include "util/safetensors.h"

#include <jansson.h>
#include <stdint.h>

static json_t *expected(void)
{
    char *p = test_path("tiny-clip/expected.json");
    json_t *j = json_load_file(p, 0, NULL);
    free(p);
    return j;
}

static struct clip_model *load_model(const char *weights, enum clip_precision prec)
{
    char *dir = test_path("tiny-clip");
    char *w = weights ? test_path(weights) : NULL;
    struct clip_model_opts o = {.weights = w, .prec = prec};
    struct clip_model *m = NULL;
    struct err e;
    int rc = clip_model_load(&m, dir, &o, &e);
    CHECKF(rc == 0, "%s", e.msg);
    free(dir);
    free(w);
    return m;
}

static void json_floats(json_t *a, float *out, int n)
{
    for (int i = 0; i < n; i++)
        out[i] = (float)json_number_value(json_array_get(a, (size_t)i));
}

/* Image tower from the reference's own preprocessed tensors. */
static void images_from_tensors(const char *weights, enum clip_precision prec, double min_cos)
{
    json_t *ex = expected();
    REQUIRE(ex);
    struct clip_model *m = load_model(weights, prec);
    if (!m) {
        json_decref(ex);
        return;
    }
    CHECK_INT_EQ(clip_embed_dim(m), 64);
    CHECK_INT_EQ(clip_image_size(m), 224);
    json_t *imgs = json_object_get(ex, "images");
    size_t n = json_array_size(imgs);
    CHECK(n == 12);
    /* all images in one batch, then one by one: same results */
    float *px = malloc(sizeof(float) * 3 * 224 * 224 * n), *out = malloc(sizeof(float) * 64 * n);
    float one[64];
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_array_get(imgs, i);
        char rel[256];
        snprintf(rel, sizeof rel, "tiny-clip/%s", json_string_value(json_object_get(it, "tensor")));
        char *tp = test_path(rel);
        size_t len = 0;
        char *raw = test_read_file(tp, &len);
        CHECK(raw && len == sizeof(float) * 3 * 224 * 224);
        if (raw && len == sizeof(float) * 3 * 224 * 224)
            memcpy(px + i * 3 * 224 * 224, raw, len);
        free(raw);
        free(tp);
    }
    struct err e;
    CHECK(clip_embed_images(m, px, (int)n, out, &e) == 0);
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_array_get(imgs, i);
        float want[64];
        json_floats(json_object_get(it, "embedding"), want, 64);
        double cs = test_cosine(out + i * 64, want, 64);
        CHECKF(cs >= min_cos, "%s: cosine %.7f", json_string_value(json_object_get(it, "file")), cs);
        CHECK(clip_embed_images(m, px + i * 3 * 224 * 224, 1, one, &e) == 0);
        /* fp32: batch and single agree to summation order (1.0000000).
         * bf16: oneDNN picks its kernel by M (588/600 rows against 49/50,
         * AMX or AVX512-BF16 micro-kernels), so fp32 sums differ in the
         * last bit, and every layer re-rounds its input to 8 bits: a 1-ulp
         * difference can become a 2^-9 one, layer after layer. The bound
         * is still 6x tighter than bf16's own error (0.99994). */
        double bmin = prec == CLIP_BF16 ? 0.99999 : 0.9999995;
        double bc = test_cosine(one, out + i * 64, 64);
        CHECKF(bc >= bmin, "batch of 1 differs for %zu: cosine %.9f", i, bc);
    }
    printf("  %s %s: %zu images, worst cosine ", weights ? weights : "hf",
           prec == CLIP_BF16 ? "bf16" : "fp32", n);
    double worst = 1;
    for (size_t i = 0; i < n; i++) {
        float want[64];
        json_floats(json_object_get(json_array_get(imgs, i), "embedding"), want, 64);
        double cs = test_cosine(out + i * 64, want, 64);
        worst = cs < worst ? cs : worst;
    }
    printf("%.9f\n", worst);
    free(px);
    free(out);
    clip_model_free(m);
    json_decref(ex);
}

/* Margins (worst cosine printed by each run): fp32 reaches 1.0000000 on every
 * image, so 0.9999995 leaves 5e-7 for summation order; replacing QuickGELU
 * by GELU in one tower costs far more than that. bf16 reaches 0.99994
 * (weights and activations rounded to 8 bits), so 0.9999 leaves 4e-5. */
#define FP32_MIN_COS 0.9999995
#define BF16_MIN_COS 0.9999
#define NEEDS_BF16 "cpu:avx512_bf16|amx_bf16"

TEST(image_tower_hf_names) { images_from_tensors(NULL, CLIP_FP32, FP32_MIN_COS); }
TEST(image_tower_openai_names)
{
    images_from_tensors("tiny-clip/open_clip_model.safetensors", CLIP_FP32, FP32_MIN_COS);
}
TEST(image_tower_bf16)
{
    if (!clip_cpu_has_bf16())
        SKIP(NEEDS_BF16, "no bf16 matmul on this CPU (bf16_refused_without_cpu_support "
             "checks the error instead)");
    images_from_tensors(NULL, CLIP_BF16, BF16_MIN_COS);
}

static void texts(const char *weights, enum clip_precision prec, double min_cos)
{
    json_t *ex = expected();
    REQUIRE(ex);
    struct clip_model *m = load_model(weights, prec);
    if (!m) {
        json_decref(ex);
        return;
    }
    REQUIRE(clip_has_text(m));
    CHECK_INT_EQ(clip_context(m), 77);
    CHECK_INT_EQ(clip_vocab_size(m), 49408);
    json_t *tx = json_object_get(ex, "texts");
    size_t n = json_array_size(tx);
    CHECK(n >= 5);
    int32_t **ids = calloc(n, sizeof *ids);
    int *lens = calloc(n, sizeof *lens);
    float *out = malloc(sizeof(float) * 64 * n);
    for (size_t i = 0; i < n; i++) {
        json_t *a = json_object_get(json_array_get(tx, i), "ids");
        lens[i] = (int)json_array_size(a);
        ids[i] = malloc(sizeof(int32_t) * (size_t)lens[i]);
        for (int k = 0; k < lens[i]; k++)
            ids[i][k] = (int32_t)json_integer_value(json_array_get(a, (size_t)k));
    }
    struct err e;
    int rc = clip_embed_ids(m, (const int32_t *const *)ids, lens, (int)n, out, &e);
    CHECKF(rc == 0, "%s", e.msg);
    double worst = 1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        float want[64];
        json_floats(json_object_get(json_array_get(tx, i), "embedding"), want, 64);
        double cs = test_cosine(out + i * 64, want, 64);
        worst = cs < worst ? cs : worst;
        CHECKF(cs >= min_cos, "text %zu: cosine %.7f", i, cs);
    }
    printf("  texts %s %s: %zu texts, worst cosine %.9f\n", weights ? weights : "hf",
           prec == CLIP_BF16 ? "bf16" : "fp32", n, worst);
    /* padding after the end token changes nothing (only real tokens run) */
    int32_t padded[77] = {0};
    memcpy(padded, ids[0], sizeof(int32_t) * (size_t)lens[0]);
    const int32_t *pp = padded;
    int pl = 77;
    float p1[64];
    CHECK(clip_embed_ids(m, &pp, &pl, 1, p1, &e) == 0);
    /* a batch of one against the batch: see images_from_tensors */
    CHECK(test_cosine(p1, out, 64) >= (prec == CLIP_BF16 ? 0.99999 : 0.9999995));
    /* bad ids are errors */
    int32_t bad[3] = {49406, 99999, 49407};
    const int32_t *bp = bad;
    int bl = 3;
    CHECK(clip_embed_ids(m, &bp, &bl, 1, p1, &e) == -ERR_INVALID_ARGUMENT);
    bl = 0;
    CHECK(clip_embed_ids(m, &bp, &bl, 1, p1, &e) == -ERR_INVALID_ARGUMENT);
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
    free(lens);
    free(out);
    clip_model_free(m);
    json_decref(ex);
}

TEST(text_tower_hf_names) { texts(NULL, CLIP_FP32, FP32_MIN_COS); }
TEST(text_tower_openai_names)
{
    texts("tiny-clip/open_clip_model.safetensors", CLIP_FP32, FP32_MIN_COS);
}
TEST(text_tower_bf16)
{
    if (!clip_cpu_has_bf16())
        SKIP(NEEDS_BF16, "no bf16 matmul on this CPU (bf16_refused_without_cpu_support "
             "checks the error instead)");
    texts(NULL, CLIP_BF16, BF16_MIN_COS);
}

/* A bf16 model on a CPU without bf16 products is refused up front with a
 * message that says what to do (IMGSEARCH_NO_BF16 plays such a CPU). */
static void bf16_refused(void)
{
    char *dir = test_path("tiny-clip");
    struct clip_model_opts o = {.prec = CLIP_BF16};
    struct clip_model *m = (struct clip_model *)&o; /* must be reset to NULL */
    struct err e = {0};
    int rc = clip_model_load(&m, dir, &o, &e); /* CHECK_INT_EQ evaluates twice */
    CHECK_INT_EQ(rc, -ERR_INVALID_ARGUMENT);
    CHECK(m == NULL);
    clip_model_free(m == (struct clip_model *)&o ? NULL : m);
    CHECK_STR_CONTAINS(e.msg, "bf16 needs a CPU with AVX512-BF16 or AMX; this CPU has neither");
    free(dir);
}

TEST(bf16_refused_without_cpu_support)
{
    if (!clip_cpu_has_bf16())
        bf16_refused();
    setenv("IMGSEARCH_NO_BF16", "1", 1);
    bf16_refused();
    unsetenv("IMGSEARCH_NO_BF16");
}

TEST(logit_scale_and_prep)
{
    struct clip_model *m = load_model(NULL, CLIP_FP32);
    REQUIRE(m);
    CHECKF(fabsf(clip_logit_scale(m) - expf(2.6592f)) < 0.02f, "%f", clip_logit_scale(m));
    const struct clip_prep *p = clip_model_prep(m);
    CHECK_INT_EQ(p->resize_short, 224);
    CHECK_INT_EQ(p->crop, 224);
    CHECK(fabsf(p->mean[0] - 0.48145466f) < 1e-7f && fabsf(p->std[2] - 0.27577711f) < 1e-7f);
    CHECK(strchr(clip_model_id(m), '@') != NULL);
    clip_model_free(m);
}

/* Builds a small valid file, then damages it in many ways. */
static uint8_t *make_file(const char *hdr, size_t data, size_t *n)
{
    size_t h = strlen(hdr);
    *n = 8 + h + data;
    uint8_t *b = calloc(1, *n);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(b + 8, hdr, h);
    return b;
}

static int parse(const char *hdr, size_t data, struct err *e)
{
    size_t n;
    uint8_t *b = make_file(hdr, data, &n);
    struct st_file *f = NULL;
    int rc = st_parse(&f, b, n, "t.safetensors", e);
    st_close(f);
    free(b);
    return rc;
}

TEST(safetensors_validation)
{
    struct err e;
    CHECK(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16, &e) == 0);
    CHECK(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 8, &e) == -ERR_CORRUPT);
    CHECK_STR_CONTAINS(e.msg, "truncated");
    CHECK(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,16]}}", 16, &e) == -ERR_CORRUPT);
    CHECK(parse("{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,1]}}", 16, &e) == -ERR_CORRUPT);
    CHECK_STR_CONTAINS(e.msg, "Q4");
    CHECK(parse("{\"a\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[4,12]}}", 16, &e) == -ERR_CORRUPT);
    CHECK_STR_CONTAINS(e.msg, "overlap");
    CHECK(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,16]}}", 16, &e) == -ERR_CORRUPT);
    CHECK(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 16, &e) == -ERR_CORRUPT);
    CHECK(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 16, &e) == -ERR_CORRUPT);
    CHECK(parse("{\"a\": 3}", 16, &e) == -ERR_CORRUPT);
    CHECK(parse("[1,2]", 16, &e) == -ERR_CORRUPT);
    CHECK(parse("{\"a\":{\"dtype\":\"F32\",", 16, &e) == -ERR_CORRUPT);
    CHECK_STR_CONTAINS(e.msg, "JSON");
    CHECK(parse("{\"__metadata__\":{\"format\":\"pt\"}}", 0, &e) == 0);
    /* header length beyond the file */
    uint8_t small[12] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}', 0, 0};
    struct st_file *f = NULL;
    CHECK(st_parse(&f, small, sizeof small, "x", &e) == -ERR_CORRUPT);
    CHECK(st_parse(&f, small, 3, "x", &e) == -ERR_CORRUPT);
    CHECK(st_open(&f, "/nonexistent/model.safetensors", &e) == -ERR_BAD_PATH);
}

TEST(truncated_checkpoint_is_an_error)
{
    char *p = test_path("tiny-clip/model.safetensors");
    size_t n = 0;
    char *b = test_read_file(p, &n);
    free(p);
    REQUIRE(b);
    size_t cuts[] = {0, 5, 100, n / 2, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        struct st_file *f = NULL;
        struct err e;
        CHECKF(st_parse(&f, (uint8_t *)b, cuts[i], "cut", &e) == -ERR_CORRUPT, "cut at %zu", cuts[i]);
        st_close(f);
    }
    /* a model folder whose checkpoint lacks a tensor names it */
    free(b);
}

TEST(half_conversions)
{
    CHECK(st_f16_to_f32(0x3c00) == 1.0f);
    CHECK(st_f16_to_f32(0xc000) == -2.0f);
    CHECK(st_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    CHECK(st_f32_to_f16(1.0f) == 0x3c00);
    CHECK(st_f32_to_f16(65504.0f) == 0x7bff);
    CHECK(st_f32_to_f16(1e6f) == 0x7c00);
    CHECK(st_f32_to_f16(ldexpf(1.0f, -24)) == 0x0001);
    for (uint32_t h = 0; h < 0x7c00; h++)
        CHECKF(st_f32_to_f16(st_f16_to_f32((uint16_t)h)) == h, "%x", h);
    CHECK(st_bf16_to_f32(0x3f80) == 1.0f);
    CHECK(st_f32_to_bf16(1.0f) == 0x3f80);
    CHECK(st_f32_to_bf16(1.00390625f) == 0x3f80); /* tie to even */
}

TEST(missing_model_is_io_error)
{
    struct clip_model *m = NULL;
    struct err e;
    CHECK(clip_model_load(&m, "/nonexistent/model", NULL, &e) == -ERR_BAD_PATH);
    CHECK(m == NULL);
}

TEST_MAIN(image_tower_hf_names, image_tower_openai_names, image_tower_bf16,
          text_tower_hf_names, text_tower_openai_names, text_tower_bf16,
          bf16_refused_without_cpu_support,
          logit_scale_and_prep, safetensors_validation, truncated_checkpoint_is_an_error,
          half_conversions, missing_model_is_io_error)
