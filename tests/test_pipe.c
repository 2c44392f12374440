/* test_pipe.c - end to end: image files -> embeddings against OpenAI's, and
 * texts -> embeddings through the real tokenizer. */
#include "test.h"
#include "pipe/pipe.h"

#include <jansson.h>

/* Margins, below what each path reaches (the worst cosine is printed):
 * - full decode, fp32: 1.0000000 (pixels are Pillow's exactly): >= 0.999999
 * - DCT-scaled decode, fp32: 0.9999991 (8-bit differences from decoding
 *   large JPEGs at a reduced scale): >= 0.999998
 * - texts, fp32: 1.0000000: >= 0.9999995
 * - bf16 images and texts: 0.99994: >= 0.9999 */
#define FULL_FP32_MIN_COS 0.999999
#define DCT_FP32_MIN_COS 0.999998
#define TEXT_FP32_MIN_COS 0.9999995
#define BF16_MIN_COS 0.9999

static void end_to_end(enum pipe_precision prec, int full_decode, double min_cos)
{
    char *dir = test_path("tiny-clip");
    char *ep = test_path("tiny-clip/expected.json");
    json_t *ex = json_load_file(ep, 0, NULL);
    struct pipe_opts o = {.prec = prec, .full_decode = full_decode};
    struct pipe *p = NULL;
    struct err e;
    int rc = pipe_open(&p, dir, &o, &e);
    CHECKF(rc == 0, "%s", e.msg);
    if (rc || !ex)
        goto out;
    json_t *imgs = json_object_get(ex, "images");
    float *px = malloc(sizeof(float) * 3 * 224 * 224);
    double worst = 1;
    const char *worst_file = "";
    for (size_t i = 0; i < json_array_size(imgs); i++) {
        json_t *it = json_array_get(imgs, i);
        char rel[256];
        snprintf(rel, sizeof rel, "tiny-clip/%s", json_string_value(json_object_get(it, "file")));
        char *fp = test_path(rel);
        float v[64], want[64];
        rc = pipe_prepare_file(p, fp, px, &e);
        CHECKF(rc == 0, "%s", e.msg);
        if (!rc)
            rc = pipe_embed_pixels(p, px, 1, v, 1, &e);
        json_t *a = json_object_get(it, "embedding");
        for (int k = 0; k < 64; k++)
            want[k] = (float)json_number_value(json_array_get(a, (size_t)k));
        double cs = rc ? 0 : test_cosine(v, want, 64);
        CHECKF(cs >= min_cos, "%s: cosine %.6f", rel, cs);
        if (cs < worst) {
            worst = cs;
            worst_file = json_string_value(json_object_get(it, "file"));
        }
        free(fp);
    }
    printf("  end to end %s%s: worst cosine %.9f (%s)\n", pipe_precision_name(p),
           full_decode ? " full decode" : " dct scaling", worst, worst_file);
    json_t *tx = json_object_get(ex, "texts");
    double tworst = 1;
    for (size_t i = 0; i < json_array_size(tx); i++) {
        json_t *it = json_array_get(tx, i);
        float v[64], want[64];
        rc = pipe_embed_text(p, json_string_value(json_object_get(it, "text")), v, 1, &e);
        CHECKF(rc == 0, "%s", e.msg);
        json_t *a = json_object_get(it, "embedding");
        for (int k = 0; k < 64; k++)
            want[k] = (float)json_number_value(json_array_get(a, (size_t)k));
        double cs = rc ? 0 : test_cosine(v, want, 64);
        CHECKF(cs >= (prec == PIPE_PREC_BF16 ? BF16_MIN_COS : TEXT_FP32_MIN_COS),
               "text %zu: cosine %.9f", i, cs);
        tworst = cs < tworst ? cs : tworst;
    }
    printf("  texts %s: worst cosine %.9f\n", pipe_precision_name(p), tworst);
    free(px);
out:
    pipe_free(p);
    json_decref(ex);
    free(dir);
    free(ep);
}

TEST(images_end_to_end_fp32_full_decode) { end_to_end(PIPE_PREC_FP32, 1, FULL_FP32_MIN_COS); }
TEST(images_end_to_end_fp32_dct) { end_to_end(PIPE_PREC_FP32, 0, DCT_FP32_MIN_COS); }
TEST(images_end_to_end_bf16)
{
    if (!clip_cpu_has_bf16())
        SKIP("cpu:avx512_bf16|amx_bf16", "no bf16 matmul on this CPU "
             "(auto_is_fp32_without_bf16 checks the refusal and the fallback)");
    end_to_end(PIPE_PREC_BF16, 0, BF16_MIN_COS);
}

/* auto takes bf16 only where the CPU has it; an explicit bf16 is refused
 * with a message where it has not (IMGSEARCH_NO_BF16 plays such a CPU). */
static void auto_and_refusal(void)
{
    char *dir = test_path("tiny-clip");
    struct pipe *p = NULL;
    struct err e = {0};
    struct pipe_opts o = {.prec = PIPE_PREC_AUTO, .skip_text = 1};
    CHECK(pipe_open(&p, dir, &o, &e) == 0);
    if (p)
        CHECK(!strcmp(pipe_precision_name(p), clip_cpu_has_bf16() ? "bf16" : "fp32"));
    pipe_free(p);
    p = NULL;
    o.prec = PIPE_PREC_BF16;
    int rc = pipe_open(&p, dir, &o, &e);
    if (clip_cpu_has_bf16()) {
        CHECKF(rc == 0, "%s", e.msg);
    } else {
        CHECK_INT_EQ(rc, -ERR_INVALID_ARGUMENT);
        CHECK_STR_CONTAINS(e.msg, "bf16 needs a CPU with AVX512-BF16 or AMX; this CPU has "
                                  "neither - use --precision fp32 or auto");
        CHECK(p == NULL);
    }
    pipe_free(p);
    free(dir);
}

TEST(auto_is_fp32_without_bf16)
{
    auto_and_refusal();
    setenv("IMGSEARCH_NO_BF16", "1", 1);
    auto_and_refusal();
    unsetenv("IMGSEARCH_NO_BF16");
}

TEST(batch_equals_single)
{
    char *dir = test_path("tiny-clip");
    struct pipe_opts o = {.prec = PIPE_PREC_FP32};
    struct pipe *p = NULL;
    struct err e;
    REQUIRE(pipe_open(&p, dir, &o, &e) == 0);
    const char *names[3] = {"tiny-clip/images/fruits.jpg", "tiny-clip/images/coffee.gif",
                            "tiny-clip/images/chelsea.webp"};
    float *px = malloc(sizeof(float) * 3 * 3 * 224 * 224), all[3 * 64], one[64];
    for (int i = 0; i < 3; i++) {
        char *fp = test_path(names[i]);
        CHECK(pipe_prepare_file(p, fp, px + (size_t)i * 3 * 224 * 224, &e) == 0);
        free(fp);
    }
    CHECK(pipe_embed_pixels(p, px, 3, all, 0, &e) == 0);
    for (int i = 0; i < 3; i++) {
        CHECK(pipe_embed_pixels(p, px + (size_t)i * 3 * 224 * 224, 1, one, 0, &e) == 0);
        CHECK(test_cosine(one, all + i * 64, 64) > 0.999999);
    }
    /* normalized output has unit norm */
    CHECK(pipe_embed_pixels(p, px, 1, one, 0, &e) == 0);
    double n2 = 0;
    for (int k = 0; k < 64; k++)
        n2 += (double)one[k] * one[k];
    CHECK(fabs(n2 - 1.0) < 1e-5);
    /* bad bytes are errors with the name in front */
    CHECK(pipe_prepare_bytes(p, (const uint8_t *)"hello", 5, "upload", px, &e) ==
          -ERR_UNSUPPORTED_FORMAT);
    CHECK(strncmp(e.msg, "upload: ", 8) == 0);
    CHECK(pipe_embed_text(p, "\xff\xfe bad", one, 0, &e) == -ERR_INVALID_UTF8);
    free(px);
    pipe_free(p);
    free(dir);
}

/* classify's numbers: our embeddings through pipe_zero_shot against the
 * same formula computed here from the reference embeddings. */
TEST(zero_shot_matches_reference_logits)
{
    char *dir = test_path("tiny-clip"), *ep = test_path("tiny-clip/expected.json");
    json_t *ex = json_load_file(ep, 0, NULL);
    struct pipe_opts o = {.prec = PIPE_PREC_FP32};
    struct pipe *p = NULL;
    struct err e;
    REQUIRE(ex && pipe_open(&p, dir, &o, &e) == 0);
    json_t *tx = json_object_get(ex, "texts"), *im = json_array_get(json_object_get(ex, "images"), 0);
    int n = (int)json_array_size(tx);
    float *ours = malloc(sizeof(float) * 64 * (size_t)n), *ref = malloc(sizeof(float) * 64 * (size_t)n);
    const char **texts = malloc(sizeof(char *) * (size_t)n);
    for (int i = 0; i < n; i++) {
        json_t *it = json_array_get(tx, (size_t)i);
        texts[i] = json_string_value(json_object_get(it, "text"));
        for (int k = 0; k < 64; k++)
            ref[i * 64 + k] = (float)json_number_value(json_array_get(json_object_get(it, "embedding"), (size_t)k));
    }
    CHECK(pipe_embed_texts(p, texts, n, ours, 0, &e) == 0);
    float img_ref[64], img[64], px[3 * 224 * 224];
    for (int k = 0; k < 64; k++)
        img_ref[k] = (float)json_number_value(json_array_get(json_object_get(im, "embedding"), (size_t)k));
    char rel[256];
    snprintf(rel, sizeof rel, "tiny-clip/%s", json_string_value(json_object_get(im, "file")));
    char *fp = test_path(rel);
    CHECK(pipe_prepare_file(p, fp, px, &e) == 0);
    CHECK(pipe_embed_pixels(p, px, 1, img, 0, &e) == 0);
    free(fp);
    float *pr = malloc(sizeof(float) * (size_t)n), *po = malloc(sizeof(float) * (size_t)n);
    float *lr = malloc(sizeof(float) * (size_t)n), *lo = malloc(sizeof(float) * (size_t)n);
    float scale = clip_logit_scale(p->model);
    pipe_zero_shot(img_ref, ref, n, 64, scale, pr, lr);
    pipe_zero_shot(img, ours, n, 64, scale, po, lo);
    double sum = 0;
    for (int i = 0; i < n; i++) {
        /* the reference logit written out: scale * cosine, from the fixture */
        double dot = 0, a = 0, b = 0;
        for (int k = 0; k < 64; k++) {
            dot += (double)img_ref[k] * ref[i * 64 + k];
            a += (double)img_ref[k] * img_ref[k];
            b += (double)ref[i * 64 + k] * ref[i * 64 + k];
        }
        double want = expf(2.6592f) * dot / sqrt(a * b);
        CHECKF(fabs(lr[i] - want) < 0.02, "ref logit %d: %f vs %f", i, lr[i], want);
        CHECKF(fabs(lo[i] - want) < 0.02, "our logit %d: %f vs %f", i, lo[i], want);
        CHECKF(fabs(po[i] - pr[i]) < 1e-3, "prob %d: %f vs %f", i, po[i], pr[i]);
        sum += po[i];
    }
    CHECKF(fabs(sum - 1.0) < 1e-5, "probabilities sum to %f", sum);
    free(pr);
    free(po);
    free(lr);
    free(lo);
    free(ours);
    free(ref);
    free(texts);
    pipe_free(p);
    json_decref(ex);
    free(dir);
    free(ep);
}

TEST_MAIN(zero_shot_matches_reference_logits, images_end_to_end_fp32_full_decode, images_end_to_end_fp32_dct,
          images_end_to_end_bf16, auto_is_fp32_without_bf16, batch_equals_single)
