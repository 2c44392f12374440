/* test_pytorch.c - the PyTorch checkpoint reader against the fixtures made
 * by torch.save (tests/fixtures/pytorch/README.md): exact tensors, the tiny
 * model's embeddings from its .bin, malicious pickles refused without
 * running anything, and damaged files refused cleanly. */
#include "test.h"
#include "clip/clip.h"
#include "clip/pytorch.h"
#include "util/safetensors.h"

#include <jansson.h>
#include <limits.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static struct st_file *open_fixture(const char *rel, struct err *e)
{
    char *p = test_path(rel);
    struct st_file *f = NULL;
    int rc = pt_open(&f, p, e);
    free(p);
    return rc ? NULL : f;
}

/* Each tensor of each variant: dtype, shape and values (row-major). */
TEST(variants_match_expected)
{
    char *ep = test_path("pytorch/variants/expected.json");
    json_t *ex = json_load_file(ep, 0, NULL);
    free(ep);
    REQUIRE(ex);
    const char *file;
    json_t *tensors;
    int files = 0, checked = 0;
    json_object_foreach(ex, file, tensors) {
        char rel[256];
        snprintf(rel, sizeof rel, "pytorch/variants/%s", file);
        struct err e;
        struct st_file *f = open_fixture(rel, &e);
        CHECKF(f != NULL, "%s: %s", file, e.msg);
        if (!f)
            continue;
        files++;
        CHECKF(f->n == (int)json_object_size(tensors), "%s: %d tensors, expected %zu", file,
               f->n, json_object_size(tensors));
        const char *name;
        json_t *want;
        json_object_foreach(tensors, name, want) {
            const struct st_tensor *t = st_find(f, name);
            CHECKF(t != NULL, "%s: no tensor %s", file, name);
            if (!t)
                continue;
            static const char *dn[] = {"float32", "float16", "bfloat16", "int64"};
            CHECKF(!strcmp(dn[t->dtype], json_string_value(json_object_get(want, "dtype"))),
                   "%s %s: dtype %s", file, name, dn[t->dtype]);
            json_t *shape = json_object_get(want, "shape");
            CHECK_INT_EQ(t->ndim, json_array_size(shape));
            for (int d = 0; d < t->ndim && d < (int)json_array_size(shape); d++)
                CHECK_INT_EQ(t->shape[d], json_integer_value(json_array_get(shape, (size_t)d)));
            json_t *vals = json_object_get(want, "values");
            REQUIRE(t->numel == (int64_t)json_array_size(vals));
            float *got = malloc(sizeof(float) * (size_t)(t->numel + 1));
            if (t->dtype == ST_I64)
                for (int64_t i = 0; i < t->numel; i++) { /* data may be unaligned */
                    int64_t v;
                    memcpy(&v, (const uint8_t *)t->data + 8 * i, 8);
                    got[i] = (float)v;
                }
            else
                CHECK(st_to_f32(t, got, &e) == 0);
            for (int64_t i = 0; i < t->numel; i++) {
                double w = json_number_value(json_array_get(vals, (size_t)i));
                CHECKF(got[i] == (float)w, "%s %s[%lld]: %.9g != %.9g", file, name,
                       (long long)i, got[i], w);
            }
            free(got);
            checked++;
        }
        st_close(f);
    }
    CHECK_INT_EQ(files, 4);
    CHECK(checked >= 12);
    json_decref(ex);
}

/* The tiny model's .bin holds exactly the tensors of its safetensors. */
TEST(tiny_bin_equals_safetensors)
{
    struct err e;
    struct st_file *pt = open_fixture("pytorch/tiny-clip/pytorch_model.bin", &e);
    CHECKF(pt != NULL, "%s", e.msg);
    char *sp = test_path("tiny-clip/model.safetensors");
    struct st_file *st = NULL;
    CHECK(st_open(&st, sp, &e) == 0);
    free(sp);
    if (pt && st) {
        CHECK_INT_EQ(pt->n, st->n);
        for (int i = 0; i < st->n && i < pt->n; i++) {
            const struct st_tensor *a = &st->tensors[i], *b = st_find(pt, a->name);
            CHECKF(b != NULL, "no %s in the .bin", a->name);
            if (!b)
                continue;
            CHECK_INT_EQ(a->dtype, b->dtype);
            CHECK_INT_EQ(a->ndim, b->ndim);
            CHECK(!memcmp(a->shape, b->shape, sizeof a->shape[0] * (size_t)a->ndim));
            CHECKF(a->end - a->begin == b->end - b->begin &&
                       !memcmp(a->data, b->data, (size_t)(a->end - a->begin)),
                   "%s: bytes differ", a->name);
        }
    }
    st_close(pt);
    st_close(st);
}

static char *tmpdir(void)
{
    char *d = strdup("/tmp/imgsearch-test-pt-XXXXXX");
    return mkdtemp(d) ? d : NULL;
}

/* A folder with only pytorch_model.bin (+ config) loads, gives the same
 * embeddings as the safetensors model (bit for bit) and OpenAI's expected
 * ones, and has the same model id. */
TEST(folder_with_only_bin_embeds_like_safetensors)
{
    char *d = tmpdir();
    REQUIRE(d);
    char dst[4096];
    static const char *files[] = {"config.json", "preprocessor_config.json", "vocab.json",
                                  "merges.txt"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "tiny-clip/%s", files[i]);
        char *p = test_path(rel), *abs = realpath(p, NULL);
        free(p);
        REQUIRE(abs);
        snprintf(dst, sizeof dst, "%s/%s", d, files[i]);
        CHECK(symlink(abs, dst) == 0);
        free(abs);
    }
    char *bin = test_path("pytorch/tiny-clip/pytorch_model.bin"), *abs = realpath(bin, NULL);
    free(bin);
    REQUIRE(abs);
    snprintf(dst, sizeof dst, "%s/pytorch_model.bin", d);
    CHECK(symlink(abs, dst) == 0);
    free(abs);

    struct err e;
    struct clip_model *a = NULL, *b = NULL;
    char *ref = test_path("tiny-clip");
    CHECKF(clip_model_load(&a, d, NULL, &e) == 0, "%s", e.msg);
    CHECKF(clip_model_load(&b, ref, NULL, &e) == 0, "%s", e.msg);
    free(ref);
    char *ep = test_path("tiny-clip/expected.json");
    json_t *ex = json_load_file(ep, 0, NULL);
    free(ep);
    if (a && b && ex) {
        CHECKF(!strcmp(clip_model_id(a), clip_model_id(b)), "%s != %s", clip_model_id(a),
               clip_model_id(b));
        CHECK(!strncmp(clip_model_id(a), "tiny-clip@", 10));
        json_t *imgs = json_object_get(ex, "images");
        size_t n = json_array_size(imgs);
        CHECK(n == 12);
        for (size_t i = 0; i < n; i++) {
            json_t *it = json_array_get(imgs, i);
            char rel[256];
            snprintf(rel, sizeof rel, "tiny-clip/%s",
                     json_string_value(json_object_get(it, "tensor")));
            char *tp = test_path(rel);
            size_t len = 0;
            char *raw = test_read_file(tp, &len);
            free(tp);
            REQUIRE(raw && len == sizeof(float) * 3 * 224 * 224);
            float oa[64], ob[64], want[64];
            CHECK(clip_embed_images(a, (const float *)raw, 1, oa, &e) == 0);
            CHECK(clip_embed_images(b, (const float *)raw, 1, ob, &e) == 0);
            free(raw);
            CHECK(!memcmp(oa, ob, sizeof oa));
            json_t *emb = json_object_get(it, "embedding");
            for (int k = 0; k < 64; k++)
                want[k] = (float)json_number_value(json_array_get(emb, (size_t)k));
            CHECKF(test_cosine(oa, want, 64) >= 0.99999, "image %zu: cosine %.7f", i,
                   test_cosine(oa, want, 64));
        }
        json_t *tx = json_object_get(ex, "texts");
        for (size_t i = 0; i < json_array_size(tx); i++) {
            json_t *ids = json_object_get(json_array_get(tx, i), "ids");
            int nl = (int)json_array_size(ids);
            int32_t tok[77];
            REQUIRE(nl > 0 && nl <= 77);
            for (int k = 0; k < nl; k++)
                tok[k] = (int32_t)json_integer_value(json_array_get(ids, (size_t)k));
            const int32_t *tp = tok;
            float oa[64], want[64];
            CHECK(clip_embed_ids(a, &tp, &nl, 1, oa, &e) == 0);
            json_t *emb = json_object_get(json_array_get(tx, i), "embedding");
            for (int k = 0; k < 64; k++)
                want[k] = (float)json_number_value(json_array_get(emb, (size_t)k));
            CHECKF(test_cosine(oa, want, 64) >= 0.99999, "text %zu: cosine %.7f", i,
                   test_cosine(oa, want, 64));
        }
    }
    /* converted once to safetensors: same id again */
    char conv[4096];
    snprintf(conv, sizeof conv, "%s/model.safetensors", d);
    CHECKF(pt_convert(dst, conv, &e) == 0, "%s", e.msg);
    unlink(dst);
    struct clip_model *c = NULL;
    CHECKF(clip_model_load(&c, d, NULL, &e) == 0, "%s", e.msg);
    if (c && b)
        CHECK(!strcmp(clip_model_id(c), clip_model_id(b)));
    clip_model_free(a);
    clip_model_free(b);
    clip_model_free(c);
    json_decref(ex);
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(dst, sizeof dst, "%s/%s", d, files[i]);
        unlink(dst);
    }
    unlink(conv);
    CHECK(rmdir(d) == 0);
    free(d);
}

/* Pickles that call os.system are refused when they name it. */
TEST(malicious_pickles_refused_and_run_nothing)
{
    const char *flag = "/tmp/imgsearch-pwned";
    unlink(flag);
    static const char *evil[] = {"pytorch/variants/evil-system.bin",
                                 "pytorch/variants/evil-legacy.bin"};
    for (int i = 0; i < 2; i++) {
        struct err e = {0};
        struct st_file *f = open_fixture(evil[i], &e);
        CHECK(f == NULL);
        st_close(f);
        CHECK_INT_EQ(e.code, ERR_UNSUPPORTED_FORMAT);
        CHECK_STR_CONTAINS(e.msg, "system");
        CHECK_STR_CONTAINS(e.msg, "nothing was executed");
    }
    struct stat sb;
    CHECK(stat(flag, &sb) != 0);
}

/* Every truncation and a byte flipped anywhere: an error or a valid file,
 * never a crash (ASan runs this too). */
TEST(damaged_files_refused_cleanly)
{
    static const char *files[] = {"pytorch/variants/views.bin", "pytorch/variants/legacy.bin",
                                  "pytorch/variants/wrapped.bin"};
    for (int i = 0; i < 3; i++) {
        char *p = test_path(files[i]);
        size_t len = 0;
        uint8_t *buf = (uint8_t *)test_read_file(p, &len);
        free(p);
        REQUIRE(buf);
        int refused = 0;
        for (size_t n = 0; n < len; n++) {
            struct st_file *f = NULL;
            struct err e;
            if (pt_parse(&f, buf, n, "cut", &e) != 0) {
                refused++;
                CHECK(f == NULL && e.msg[0]);
            }
            st_close(f);
        }
        CHECK_INT_EQ(refused, len);
        for (size_t k = 0; k < len; k++) {
            uint8_t save = buf[k];
            buf[k] ^= 0x5a;
            struct st_file *f = NULL;
            struct err e;
            if (pt_parse(&f, buf, len, "flip", &e) == 0)
                CHECK(f && f->n > 0);
            st_close(f);
            buf[k] = save;
        }
        free(buf);
    }
    struct st_file *f = NULL;
    struct err e;
    CHECK(pt_parse(&f, (const uint8_t *)"hello", 5, "x", &e) == -ERR_CORRUPT);
    CHECK_STR_CONTAINS(e.msg, "not a PyTorch checkpoint");
}

/* Protocol 4 pickles (FRAME, MEMOIZE, STACK_GLOBAL), nested dicts, a
 * transposed view; deflated and ZIP64 archives (tests/fixtures/pytorch/extra/make.py). */
TEST(protocol4_deflate_zip64)
{
    struct err e;
    struct st_file *f = open_fixture("pytorch/extra/proto4.bin", &e);
    CHECKF(f != NULL, "%s", e.msg);
    if (f) {
        CHECK_INT_EQ(f->n, 2);
        const struct st_tensor *a = st_find(f, "m.a"), *b = st_find(f, "m.b");
        REQUIRE(a && b && a->numel == 6 && b->numel == 6);
        static const float wa[6] = {1, 2, 3, 4, 5, 6}, wb[6] = {1, 4, 2, 5, 3, 6};
        CHECK(!memcmp(a->data, wa, sizeof wa));
        CHECK(!memcmp(b->data, wb, sizeof wb));
        CHECK(b->ndim == 2 && b->shape[0] == 3 && b->shape[1] == 2);
        st_close(f);
    }
    struct st_file *ref = open_fixture("pytorch/variants/views.bin", &e);
    REQUIRE(ref);
    static const char *same[] = {"pytorch/extra/deflate.bin", "pytorch/extra/zip64.bin"};
    for (int i = 0; i < 2; i++) {
        struct st_file *g = open_fixture(same[i], &e);
        CHECKF(g != NULL, "%s: %s", same[i], e.msg);
        if (!g)
            continue;
        CHECK_INT_EQ(g->n, ref->n);
        for (int k = 0; k < g->n && k < ref->n; k++)
            CHECK(!strcmp(g->tensors[k].name, ref->tensors[k].name) &&
                  g->tensors[k].numel == ref->tensors[k].numel &&
                  !memcmp(g->tensors[k].data, ref->tensors[k].data,
                          (size_t)(g->tensors[k].end - g->tensors[k].begin)));
        st_close(g);
    }
    st_close(ref);
}

TEST_MAIN(variants_match_expected, tiny_bin_equals_safetensors,
          folder_with_only_bin_embeds_like_safetensors, malicious_pickles_refused_and_run_nothing,
          damaged_files_refused_cleanly, protocol4_deflate_zip64)
