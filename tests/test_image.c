/* test_image.c - decoding (sniffing, EXIF, errors) and CLIP preprocessing
 * against the reference tensors made with Pillow 9.4 + torchvision 0.14.
 * The format variants (PNG, GIF, WebP, CMYK JPEG) are in
 * test_image_formats.c. */
#include "test.h"

#include <jpeglib.h>
#include <png.h>
#include <stdint.h>
#include <unistd.h>
#include <webp/encode.h>
#include <zlib.h>

#include "image/image.h"
#include "image/preprocess.h"
#include "test_image.h"

#define SIDE 224
#define NT (3 * SIDE * SIDE)

/* ------------------------------------------------------------------ */
/* helpers                                                              */

static uint8_t *read_fixture(const char *rel, size_t *n)
{
    char *p = test_path(rel);
    uint8_t *b = (uint8_t *)test_read_file(p, n);
    free(p);
    return b;
}

static int load_tensor(const char *name, float *t)
{
    char rel[256];
    snprintf(rel, sizeof rel, "tiny-clip/tensors/%s.f32", name);
    size_t n = 0;
    uint8_t *b = read_fixture(rel, &n);
    if (!b || n != sizeof(float) * NT) {
        free(b);
        return -1;
    }
    memcpy(t, b, n);
    free(b);
    return 0;
}

static void diff_stats(const float *a, const float *b, size_t n, double *mean, double *max)
{
    double s = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        s += d;
        if (d > m)
            m = d;
    }
    *mean = s / (double)n;
    *max = m;
}

/* Preprocesses tiny-clip/images/name (decode opts o) and compares it with
 * the reference tensor. Returns 0 and the stats, -1 when anything failed. */
static int compare_fixture(const char *name, const struct img_decode_opts *o, double *mean,
                           double *max, int *w, int *h)
{
    char rel[256];
    snprintf(rel, sizeof rel, "tiny-clip/images/%s", name);
    char *path = test_path(rel);
    float *ref = malloc(sizeof(float) * NT), *got = malloc(sizeof(float) * NT);
    struct img im = {0};
    struct err e = {0};
    struct img_prep_cfg cfg;
    img_prep_cfg_clip_default(&cfg);
    int rc = -1;
    if (ref && got && load_tensor(name, ref) == 0 && img_load_file(&im, path, o, &e) == 0 &&
        img_preprocess(&im, &cfg, got, &e) == 0) {
        diff_stats(got, ref, NT, mean, max);
        *w = im.w;
        *h = im.h;
        rc = 0;
    } else {
        fprintf(stderr, "  %s: %s\n", name, e.msg);
    }
    img_free(&im);
    free(path);
    free(ref);
    free(got);
    return rc;
}

/* A w x h image whose pixel (x, y) is (x*37 + y*11 + c*5) & 255 in channel c. */
static void make_pattern(struct img *im, int w, int h)
{
    im->w = im->full_w = w;
    im->h = im->full_h = h;
    im->rgb = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                im->rgb[((size_t)y * w + x) * 3 + c] = (uint8_t)((x * 37 + y * 11 + c * 5) & 255);
}

static char *tmp_dir(void)
{
    char *d = strdup("/tmp/imgsearch-test-image.XXXXXX");
    if (d && !mkdtemp(d)) {
        free(d);
        d = NULL;
    }
    return d;
}

static int write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t k = n ? fwrite(data, 1, n, f) : 0;
    return fclose(f) == 0 && k == n ? 0 : -1;
}




/* ------------------------------------------------------------------ */
/* sniffing                                                             */

TEST(sniff_formats)
{
    const uint8_t jpg[] = {0xFF, 0xD8, 0xFF, 0xE0};
    const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    const uint8_t webp[] = "RIFF\x10\0\0\0WEBPVP8 ";
    const uint8_t gif7[] = "GIF87a..";
    const uint8_t gif9[] = "GIF89a..";
    const uint8_t text[] = "hello, this is text";
    CHECK_INT_EQ(img_sniff(jpg, sizeof jpg), IMG_FMT_JPEG);
    CHECK_INT_EQ(img_sniff(jpg, 2), IMG_FMT_UNKNOWN);
    CHECK_INT_EQ(img_sniff(png, sizeof png), IMG_FMT_PNG);
    CHECK_INT_EQ(img_sniff(png, 7), IMG_FMT_UNKNOWN);
    CHECK_INT_EQ(img_sniff(webp, 16), IMG_FMT_WEBP);
    CHECK_INT_EQ(img_sniff((const uint8_t *)"RIFF\x10\0\0\0WAVEfmt ", 16), IMG_FMT_UNKNOWN);
    CHECK_INT_EQ(img_sniff(gif7, 6), IMG_FMT_GIF);
    CHECK_INT_EQ(img_sniff(gif9, 6), IMG_FMT_GIF);
    CHECK_INT_EQ(img_sniff((const uint8_t *)"GIF88a", 6), IMG_FMT_UNKNOWN);
    CHECK_INT_EQ(img_sniff(text, sizeof text - 1), IMG_FMT_UNKNOWN);
    CHECK_INT_EQ(img_sniff(NULL, 0), IMG_FMT_UNKNOWN);
    CHECK(strcmp(img_format_name(IMG_FMT_JPEG), "jpeg") == 0);
    CHECK(strcmp(img_format_name(IMG_FMT_PNG), "png") == 0);
    CHECK(strcmp(img_format_name(IMG_FMT_WEBP), "webp") == 0);
    CHECK(strcmp(img_format_name(IMG_FMT_GIF), "gif") == 0);
    CHECK(strcmp(img_format_name(IMG_FMT_UNKNOWN), "unknown") == 0);
    CHECK(strcmp(img_format_mime(IMG_FMT_JPEG), "image/jpeg") == 0);
    CHECK(strcmp(img_format_mime(IMG_FMT_PNG), "image/png") == 0);
    CHECK(strcmp(img_format_mime(IMG_FMT_WEBP), "image/webp") == 0);
    CHECK(strcmp(img_format_mime(IMG_FMT_GIF), "image/gif") == 0);

    /* every fixture sniffs as its real format */
    static const struct { const char *name; enum img_format f; } fx[] = {
        {"aloeL.jpg", IMG_FMT_JPEG}, {"chelsea.png", IMG_FMT_PNG},
        {"chelsea.webp", IMG_FMT_WEBP}, {"coffee.gif", IMG_FMT_GIF}};
    for (size_t i = 0; i < sizeof fx / sizeof fx[0]; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "tiny-clip/images/%s", fx[i].name);
        size_t n = 0;
        uint8_t *b = read_fixture(rel, &n);
        REQUIRE(b);
        CHECKF(img_sniff(b, n) == fx[i].f, "%s", fx[i].name);
        free(b);
    }
}

/* ------------------------------------------------------------------ */
/* reference tensors                                                    */

static const char *const fixture_names[] = {
    "Blender_Suzanne1.jpg", "HappyFish.jpg", "aloeL.jpg", "butterfly.jpg",
    "butterfly_exif6.jpg", "chelsea.png", "chelsea.webp", "coffee.gif",
    "coffee.png", "fruits.jpg", "fruits_alpha.png", "left01.jpg"};

TEST(fixtures_match_reference)
{
    for (size_t i = 0; i < sizeof fixture_names / sizeof fixture_names[0]; i++) {
        const char *name = fixture_names[i];
        double mean = 1, max = 1;
        int w = 0, h = 0;
        int rc = compare_fixture(name, NULL, &mean, &max, &w, &h);
        CHECKF(rc == 0, "%s did not decode", name);
        if (rc)
            continue;
        printf("  full  %-22s %4dx%-4d mean |diff| %.3g  max %.3g\n", name, w, h, mean, max);
        CHECKF(mean <= 0.01 && max <= 0.15, "%s: mean %g max %g", name, mean, max);
        /* What this implementation reaches: every fixture is bit-exact
         * except for float rounding (a test that cannot fail is a bug). */
        CHECKF(max <= 1e-5, "%s: max %g, expected bit-exact pixels", name, max);
    }
}

TEST(fixture_dims_and_format)
{
    static const struct { const char *name; int w, h; enum img_format f; } fx[] = {
        {"Blender_Suzanne1.jpg", 640, 480, IMG_FMT_JPEG},
        {"HappyFish.jpg", 259, 194, IMG_FMT_JPEG},
        {"aloeL.jpg", 1282, 1110, IMG_FMT_JPEG},
        {"butterfly_exif6.jpg", 493, 356, IMG_FMT_JPEG}, /* stored 356x493 */
        {"chelsea.png", 451, 300, IMG_FMT_PNG},
        {"chelsea.webp", 451, 300, IMG_FMT_WEBP},
        {"coffee.gif", 600, 400, IMG_FMT_GIF},
        {"left01.jpg", 640, 480, IMG_FMT_JPEG}};
    for (size_t i = 0; i < sizeof fx / sizeof fx[0]; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "tiny-clip/images/%s", fx[i].name);
        char *p = test_path(rel);
        struct img im = {0};
        struct err e = {0};
        int rc = img_load_file(&im, p, NULL, &e);
        CHECKF(rc == 0, "%s: %s", fx[i].name, e.msg);
        CHECKF(im.w == fx[i].w && im.h == fx[i].h, "%s: %dx%d", fx[i].name, im.w, im.h);
        CHECKF(im.full_w == fx[i].w && im.full_h == fx[i].h, "%s", fx[i].name);
        CHECK_INT_EQ(im.fmt, fx[i].f);
        img_free(&im);
        img_free(&im); /* twice is fine */
        free(p);
    }
}

TEST(dct_scaled_decode_meets_tolerance)
{
    struct img_decode_opts o = {0, SIDE};
    double mean = 1, max = 1;
    int w = 0, h = 0;
    REQUIRE(compare_fixture("aloeL.jpg", &o, &mean, &max, &w, &h) == 0);
    printf("  dct/2 %-22s %4dx%-4d mean |diff| %.3g  max %.3g\n", "aloeL.jpg", w, h, mean, max);
    CHECK_INT_EQ(w, 641); /* 1282x1110 at 1/2: the short side 555 >= 448 */
    CHECK_INT_EQ(h, 555);
    CHECKF(mean <= 0.01 && max <= 0.15, "mean %g max %g", mean, max);

    /* Other fixtures: smaller than 2*224 on the short side, so no scaling. */
    const char *small[] = {"butterfly.jpg", "Blender_Suzanne1.jpg", "left01.jpg"};
    for (size_t i = 0; i < 3; i++) {
        REQUIRE(compare_fixture(small[i], &o, &mean, &max, &w, &h) == 0);
        printf("  dct   %-22s %4dx%-4d mean |diff| %.3g  max %.3g\n", small[i], w, h, mean,
               max);
        CHECKF(max <= 1e-5, "%s: max %g", small[i], max);
    }

    /* The one-call path scales only when opts ask for it. */
    size_t n = 0;
    uint8_t *b = read_fixture("tiny-clip/images/aloeL.jpg", &n);
    REQUIRE(b);
    float *t1 = malloc(sizeof(float) * NT), *t2 = malloc(sizeof(float) * NT),
          *ref = malloc(sizeof(float) * NT);
    REQUIRE(t1 && t2 && ref && load_tensor("aloeL.jpg", ref) == 0);
    struct err e = {0};
    struct img_decode_opts scaled = {0, 1};
    CHECK_INT_EQ(img_decode_preprocess(b, n, NULL, NULL, t1, &e), 0);
    CHECK_INT_EQ(img_decode_preprocess(b, n, &scaled, NULL, t2, &e), 0);
    diff_stats(t1, ref, NT, &mean, &max);
    CHECKF(max <= 1e-5, "full: %g", max);
    diff_stats(t2, ref, NT, &mean, &max);
    CHECKF(max > 1e-5 && mean <= 0.01, "scaled: mean %g max %g", mean, max);
    CHECK_INT_EQ(img_decode_preprocess(b, n / 2, NULL, NULL, t1, &e), -ERR_DECODE);
    free(t1);
    free(t2);
    free(ref);
    free(b);
}

/* 12 MP synthetic JPEG: the DCT-scaled decode picks 1/4 and stays close to
 * the full decode. (Timing it is bench/'s job, not a test's.) */
TEST(dct_scaled_12mp)
{
    struct img src = {0}, full = {0}, small = {0};
    struct err e = {0};
    REQUIRE(img_synthetic(&src, 4032, 3024, 7, &e) == 0);
    uint8_t *jpg = NULL;
    size_t n = 0;
    REQUIRE(img_encode_jpeg(&src, 90, NULL, 0, &jpg, &n, &e) == 0);
    img_free(&src);
    struct img_decode_opts o = {0, SIDE};
    CHECK_INT_EQ(img_decode(&full, jpg, n, NULL, &e), 0);
    CHECK_INT_EQ(img_decode(&small, jpg, n, &o, &e), 0);
    CHECK(full.w == 4032 && full.h == 3024);
    CHECK(small.w == 1008 && small.h == 756); /* 1/8 would give 378 < 448 */
    CHECK(small.full_w == 4032 && small.full_h == 3024);
    float *a = malloc(sizeof(float) * NT), *b = malloc(sizeof(float) * NT);
    REQUIRE(a && b);
    CHECK_INT_EQ(img_preprocess(&full, NULL, a, &e), 0);
    CHECK_INT_EQ(img_preprocess(&small, NULL, b, &e), 0);
    double mean, max;
    diff_stats(a, b, NT, &mean, &max);
    printf("  dct/4 synthetic 4032x3024 vs full decode: mean |diff| %.3g  max %.3g\n", mean,
           max);
    CHECKF(mean <= 0.01 && max <= 0.15, "mean %g max %g", mean, max);
    free(a);
    free(b);
    free(jpg);
    img_free(&full);
    img_free(&small);
}

/* ------------------------------------------------------------------ */
/* EXIF orientation                                                     */

TEST(exif_orientation_parser)
{
    uint8_t b[80];
    for (int le = 0; le < 2; le++)
        for (unsigned o = 1; o <= 8; o++) {
            size_t n = make_tiff(b, le, o, 3);
            CHECKF(img_exif_orientation(b, n) == (int)o, "le %d o %u", le, o);
            n = make_tiff(b, le, o, 4);
            CHECKF(img_exif_orientation(b, n) == (int)o, "LONG le %d o %u", le, o);
            n = make_tiff(b, le, o, 1);
            CHECKF(img_exif_orientation(b, n) == (int)o, "BYTE le %d o %u", le, o);
        }
    /* with the "Exif\0\0" prefix */
    uint8_t x[90];
    memcpy(x, "Exif\0\0", 6);
    size_t n = make_tiff(x + 6, 0, 6, 3);
    CHECK_INT_EQ(img_exif_orientation(x, n + 6), 6);
    /* malformed blocks mean "no orientation", and never read out of bounds */
    n = make_tiff(b, 1, 6, 3);
    for (size_t k = 0; k < n; k++)
        if (k < 34) /* the next-IFD pointer is not needed */
            CHECKF(img_exif_orientation(b, k) == 1, "cut at %zu", k);
    CHECK_INT_EQ(img_exif_orientation(b, 34), 6);
    make_tiff(b, 1, 9, 3);
    CHECK_INT_EQ(img_exif_orientation(b, n), 1); /* out of range */
    make_tiff(b, 1, 0, 3);
    CHECK_INT_EQ(img_exif_orientation(b, n), 1);
    make_tiff(b, 1, 6, 5); /* RATIONAL: not a valid orientation type */
    CHECK_INT_EQ(img_exif_orientation(b, n), 1);
    make_tiff(b, 1, 6, 3);
    b[26] = 2; /* count 2 */
    CHECK_INT_EQ(img_exif_orientation(b, n), 1);
    make_tiff(b, 1, 6, 3);
    b[2] = 43; /* bad magic */
    CHECK_INT_EQ(img_exif_orientation(b, n), 1);
    make_tiff(b, 1, 6, 3);
    put_le32(b + 4, 0xFFFFFFF0u); /* IFD offset far out */
    CHECK_INT_EQ(img_exif_orientation(b, n), 1);
    make_tiff(b, 1, 6, 3);
    b[8] = 0xFF, b[9] = 0xFF; /* 65535 entries claimed: read while in bounds */
    CHECK_INT_EQ(img_exif_orientation(b, n), 6);
    b[22] = 0x13; /* ... and no orientation among them before the end */
    CHECK_INT_EQ(img_exif_orientation(b, n), 1);
    b[0] = 'I', b[1] = 'M';
    CHECK_INT_EQ(img_exif_orientation(b, n), 1);
    CHECK_INT_EQ(img_exif_orientation(NULL, 0), 1);
    CHECK_INT_EQ(img_exif_orientation((const uint8_t *)"Exif\0\0", 6), 1);
}

/* The 3x2 image  a b c / d e f  (pixel value = letter) in all 8 orientations,
 * written out by hand from the EXIF spec / PIL's transpose table. */
TEST(orientation_transform_all_eight)
{
    static const char *want[9] = {
        NULL,
        "abc" "def",  /* 1 */
        "cba" "fed",  /* 2 mirror left-right */
        "fed" "cba",  /* 3 rotate 180 */
        "def" "abc",  /* 4 mirror top-bottom */
        "ad" "be" "cf", /* 5 transpose */
        "da" "eb" "fc", /* 6 rotate 90 clockwise */
        "fc" "eb" "da", /* 7 transverse */
        "cf" "be" "ad", /* 8 rotate 90 counter-clockwise */
    };
    for (int o = 1; o <= 8; o++) {
        struct img im = {0};
        im.w = im.full_w = 3;
        im.h = im.full_h = 2;
        im.rgb = malloc(18);
        REQUIRE(im.rgb);
        for (int i = 0; i < 6; i++)
            im.rgb[3 * i] = im.rgb[3 * i + 1] = im.rgb[3 * i + 2] = (uint8_t)('a' + i);
        struct err e = {0};
        CHECK_INT_EQ(img_apply_orientation(&im, o, &e), 0);
        int sw = o >= 5;
        CHECKF(im.w == (sw ? 2 : 3) && im.h == (sw ? 3 : 2), "o %d: %dx%d", o, im.w, im.h);
        CHECK(im.full_w == im.w && im.full_h == im.h);
        char got[7] = {0};
        for (int i = 0; i < 6; i++) {
            got[i] = (char)im.rgb[3 * i];
            CHECK(im.rgb[3 * i + 1] == im.rgb[3 * i] && im.rgb[3 * i + 2] == im.rgb[3 * i]);
        }
        CHECKF(strcmp(got, want[o]) == 0, "orientation %d: %s, want %s", o, got, want[o]);
        img_free(&im);
    }
    /* out-of-range values change nothing */
    struct img im = {0};
    make_pattern(&im, 5, 4);
    uint8_t before[60];
    memcpy(before, im.rgb, 60);
    CHECK_INT_EQ(img_apply_orientation(&im, 0, NULL), 0);
    CHECK_INT_EQ(img_apply_orientation(&im, 9, NULL), 0);
    CHECK(im.w == 5 && im.h == 4 && memcmp(before, im.rgb, 60) == 0);
    img_free(&im);
}

/* JPEGs written with an APP1 EXIF block (both byte orders) decode to the
 * plain JPEG's pixels turned by the orientation helper. */
TEST(orientation_through_jpeg_exif)
{
    struct img src = {0}, base = {0};
    make_pattern(&src, 40, 24);
    struct err e = {0};
    uint8_t *jpg = NULL;
    size_t n = 0;
    REQUIRE(img_encode_jpeg(&src, 95, NULL, 0, &jpg, &n, &e) == 0);
    REQUIRE(img_decode(&base, jpg, n, NULL, &e) == 0);
    free(jpg);
    for (int o = 1; o <= 8; o++) {
        uint8_t tiff[80];
        size_t tn = make_tiff(tiff, o & 1, (unsigned)o, 3);
        REQUIRE(img_encode_jpeg(&src, 95, tiff, tn, &jpg, &n, &e) == 0);
        struct img got = {0}, want = {0};
        CHECK_INT_EQ(img_decode(&got, jpg, n, NULL, &e), 0);
        want.w = base.w;
        want.h = base.h;
        want.rgb = malloc((size_t)base.w * base.h * 3);
        REQUIRE(want.rgb);
        memcpy(want.rgb, base.rgb, (size_t)base.w * base.h * 3);
        CHECK_INT_EQ(img_apply_orientation(&want, o, &e), 0);
        CHECKF(got.w == want.w && got.h == want.h, "o %d: %dx%d", o, got.w, got.h);
        CHECKF(got.rgb && memcmp(got.rgb, want.rgb, (size_t)got.w * got.h * 3) == 0,
               "orientation %d pixels", o);
        CHECKF(got.w == (o >= 5 ? 24 : 40), "o %d w %d", o, got.w);
        img_free(&got);
        img_free(&want);
        free(jpg);
    }
    img_free(&src);
    img_free(&base);
}

TEST(butterfly_exif6_is_butterfly_rotated)
{
    size_t n = 0;
    uint8_t *b = read_fixture("tiny-clip/images/butterfly_exif6.jpg", &n);
    REQUIRE(b);
    /* the fixture's own APP1 says 6 */
    const uint8_t *p = NULL;
    for (size_t i = 0; i + 6 < n; i++)
        if (memcmp(b + i, "Exif\0\0", 6) == 0) {
            p = b + i;
            break;
        }
    REQUIRE(p);
    CHECK_INT_EQ(img_exif_orientation(p, n - (size_t)(p - b)), 6);
    struct img r = {0}, u = {0};
    struct err e = {0};
    REQUIRE(img_decode(&r, b, n, NULL, &e) == 0);
    free(b);
    char *path = test_path("tiny-clip/images/butterfly.jpg");
    REQUIRE(img_load_file(&u, path, NULL, &e) == 0);
    free(path);
    /* stored as 356x493; upright it is butterfly.jpg's 493x356 */
    CHECK(r.w == 493 && r.h == 356);
    REQUIRE(r.w == u.w && r.h == u.h);
    double d = 0;
    size_t np = (size_t)r.w * r.h * 3;
    for (size_t i = 0; i < np; i++)
        d += abs((int)r.rgb[i] - (int)u.rgb[i]);
    d /= (double)np;
    printf("  butterfly_exif6 vs butterfly: mean |diff| %.3f levels (re-encoded JPEG)\n", d);
    CHECKF(d < 3.0, "mean diff %g", d);
    /* and the other way round it is far off */
    CHECK_INT_EQ(img_apply_orientation(&r, 3, &e), 0);
    double d2 = 0;
    for (size_t i = 0; i < np; i++)
        d2 += abs((int)r.rgb[i] - (int)u.rgb[i]);
    CHECK(d2 / (double)np > 10 * d);
    img_free(&r);
    img_free(&u);
}

/* ------------------------------------------------------------------ */
/* errors                                                               */


/* A PNG signature + IHDR (correct CRC) claiming w x h, then IEND. */
static size_t make_png_header(uint8_t *b, uint32_t w, uint32_t h)
{
    memcpy(b, "\x89PNG\r\n\x1a\n", 8);
    put_be32(b + 8, 13);
    memcpy(b + 12, "IHDR", 4);
    put_be32(b + 16, w);
    put_be32(b + 20, h);
    b[24] = 8; /* depth */
    b[25] = 2; /* RGB */
    b[26] = b[27] = b[28] = 0;
    put_be32(b + 29, (uint32_t)crc32(0, b + 12, 17));
    put_be32(b + 33, 0);
    memcpy(b + 37, "IEND", 4);
    put_be32(b + 41, (uint32_t)crc32(0, b + 37, 4));
    return 45;
}

TEST(errors_truncated_and_corrupt)
{
    struct err e;
    static const struct { const char *name; const char *what; } fx[] = {
        {"butterfly.jpg", "JPEG data ends early (truncated file?)"},
        {"Blender_Suzanne1.jpg", "JPEG data ends early (truncated file?)"}, /* progressive */
        {"left01.jpg", "JPEG data ends early"},
        {"chelsea.png", "PNG data ends early"},
        {"chelsea.webp", "WebP"},
        {"coffee.gif", "GIF data ends early"}};
    for (size_t i = 0; i < sizeof fx / sizeof fx[0]; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "tiny-clip/images/%s", fx[i].name);
        size_t n = 0;
        uint8_t *b = read_fixture(rel, &n);
        REQUIRE(b);
        CHECKF(decode_err(b, n / 2, NULL, &e) == -ERR_DECODE, "%s half: %s", fx[i].name,
               e.msg);
        CHECK_STR_CONTAINS(e.msg, fx[i].what);
        CHECKF(decode_err(b, 40, NULL, &e) == -ERR_DECODE, "%s 40 bytes: %s", fx[i].name,
               e.msg);
        /* scribble over the middle: must fail or decode, never crash */
        uint8_t *c = malloc(n);
        REQUIRE(c);
        memcpy(c, b, n);
        for (size_t k = n / 3; k < n / 3 + 64 && k < n; k++)
            c[k] = (uint8_t)(k * 131);
        int rc = decode_err(c, n, NULL, &e);
        CHECK(rc == 0 || rc == -ERR_DECODE);
        free(c);
        free(b);
    }

    /* JPEG: a truncated file is an error even after the header and the
     * cut at every tenth of the file */
    size_t n = 0;
    uint8_t *b = read_fixture("tiny-clip/images/fruits.jpg", &n);
    REQUIRE(b);
    for (int k = 0; k < 10; k++) {
        CHECKF(decode_err(b, 3 + n * k / 10, NULL, &e) == -ERR_DECODE, "cut %d/10", k);
        CHECK_STR_CONTAINS(e.msg, "JPEG data ends early (truncated file?)");
    }
    /* a baseline JPEG without its EOI marker still has all its pixels */
    struct img whole = {0}, noeoi = {0};
    CHECK_INT_EQ(img_decode(&whole, b, n, NULL, &e), 0);
    CHECK_INT_EQ(img_decode(&noeoi, b, n - 2, NULL, &e), 0);
    CHECK(whole.rgb && noeoi.rgb &&
          memcmp(whole.rgb, noeoi.rgb, (size_t)whole.w * whole.h * 3) == 0);
    img_free(&whole);
    img_free(&noeoi);
    /* a progressive one might be missing whole scans: an error */
    free(b);
    b = read_fixture("tiny-clip/images/Blender_Suzanne1.jpg", &n);
    REQUIRE(b);
    CHECK_INT_EQ(decode_err(b, n, NULL, &e), 0);
    CHECK_INT_EQ(decode_err(b, n - 2, NULL, &e), -ERR_DECODE);
    /* garbage after the signature */
    uint8_t junk[64] = {0xFF, 0xD8, 0xFF, 0x00, 0x01, 0x02};
    CHECK_INT_EQ(decode_err(junk, sizeof junk, NULL, &e), -ERR_DECODE);
    CHECK_STR_CONTAINS(e.msg, "JPEG");
    free(b);

    /* PNG: a broken CRC in IDAT */
    b = read_fixture("tiny-clip/images/chelsea.png", &n);
    REQUIRE(b);
    uint8_t *idat = NULL;
    for (size_t k = 8; k + 8 < n; k++)
        if (memcmp(b + k, "IDAT", 4) == 0) {
            idat = b + k;
            break;
        }
    REQUIRE(idat);
    idat[20] ^= 0x55;
    CHECK_INT_EQ(decode_err(b, n, NULL, &e), -ERR_DECODE);
    CHECK_STR_CONTAINS(e.msg, "PNG data is corrupt");
    free(b);

    /* WebP: a broken VP8 frame header */
    b = read_fixture("tiny-clip/images/chelsea.webp", &n);
    REQUIRE(b);
    REQUIRE(memcmp(b + 12, "VP8 ", 4) == 0);
    b[23] ^= 0xFF; /* the 9d 01 2a start code */
    CHECK_INT_EQ(decode_err(b, n, NULL, &e), -ERR_DECODE);
    free(b);

    /* GIF: the LZW minimum code size of the first image set to 0x0f */
    b = read_fixture("tiny-clip/images/coffee.gif", &n);
    REQUIRE(b);
    size_t at = 13 + ((b[10] & 0x80) ? 3u << ((b[10] & 7) + 1) : 0);
    REQUIRE(b[at] == 0x2C);
    b[at + 10] = 0x0F;
    CHECK_INT_EQ(decode_err(b, n, NULL, &e), -ERR_DECODE);
    CHECK_STR_CONTAINS(e.msg, "GIF");
    /* a GIF with a header only */
    CHECK_INT_EQ(decode_err(b, 13, NULL, &e), -ERR_DECODE);
    free(b);
}

TEST(errors_unsupported_too_large_io)
{
    struct err e;
    const char *text = "this is not an image, just some text\n";
    CHECK_INT_EQ(decode_err((const uint8_t *)text, strlen(text), NULL, &e),
                 -ERR_UNSUPPORTED_FORMAT);
    CHECK_STR_CONTAINS(e.msg, "not a JPEG, PNG, WebP or GIF image (starts with 74 68 69 73)");
    CHECK_INT_EQ(decode_err((const uint8_t *)"", 0, NULL, &e), -ERR_UNSUPPORTED_FORMAT);
    CHECK_STR_CONTAINS(e.msg, "empty");
    CHECK_INT_EQ(decode_err(NULL, 0, NULL, &e), -ERR_UNSUPPORTED_FORMAT);

    /* 30000x30000 from a hand-made IHDR: refused before any pixel buffer */
    uint8_t png[64];
    size_t pn = make_png_header(png, 30000, 30000);
    CHECK_INT_EQ(decode_err(png, pn, NULL, &e), -ERR_TOO_LARGE);
    CHECK_STR_CONTAINS(e.msg, "30000x30000");
    CHECK_INT_EQ(decode_err(png, 33, NULL, &e), -ERR_TOO_LARGE); /* IHDR alone */
    pn = make_png_header(png, 0x7fffffff, 1);
    CHECK_INT_EQ(decode_err(png, pn, NULL, &e), -ERR_TOO_LARGE);
    pn = make_png_header(png, 0, 10);
    CHECK_INT_EQ(decode_err(png, pn, NULL, &e), -ERR_DECODE);
    pn = make_png_header(png, 4, 4); /* fine size, but no IDAT */
    CHECK_INT_EQ(decode_err(png, pn, NULL, &e), -ERR_DECODE);

    /* the limit applies to every format, from the header */
    struct img_decode_opts small = {1000, 0};
    for (size_t i = 0; i < sizeof fixture_names / sizeof fixture_names[0]; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "tiny-clip/images/%s", fixture_names[i]);
        size_t n = 0;
        uint8_t *b = read_fixture(rel, &n);
        REQUIRE(b);
        CHECKF(decode_err(b, n, &small, &e) == -ERR_TOO_LARGE, "%s: %s", fixture_names[i],
               e.msg);
        CHECK_STR_CONTAINS(e.msg, "over the limit of 1000 pixels");
        free(b);
    }

    /* files */
    char *dir = tmp_dir();
    REQUIRE(dir);
    char path[512];
    struct img im = {0};
    snprintf(path, sizeof path, "%s/x.jpg", dir);
    REQUIRE(write_file(path, text, strlen(text)) == 0);
    CHECK_INT_EQ(img_load_file(&im, path, NULL, &e), -ERR_UNSUPPORTED_FORMAT);
    CHECK_STR_CONTAINS(e.msg, path);
    CHECK(im.rgb == NULL);
    snprintf(path, sizeof path, "%s/empty.png", dir);
    REQUIRE(write_file(path, "", 0) == 0);
    CHECK_INT_EQ(img_load_file(&im, path, NULL, &e), -ERR_UNSUPPORTED_FORMAT);
    CHECK_STR_CONTAINS(e.msg, "empty.png: empty file");
    snprintf(path, sizeof path, "%s/photo.jpg", dir);
    size_t n = 0;
    uint8_t *b = read_fixture("tiny-clip/images/HappyFish.jpg", &n);
    REQUIRE(b);
    REQUIRE(write_file(path, b, n / 2) == 0);
    free(b);
    CHECK_INT_EQ(img_load_file(&im, path, NULL, &e), -ERR_DECODE);
    CHECK_STR_CONTAINS(e.msg, "photo.jpg: JPEG data ends early (truncated file?)");
    unlink(path);
    snprintf(path, sizeof path, "%s/missing.jpg", dir);
    CHECK_INT_EQ(img_load_file(&im, path, NULL, &e), -ERR_BAD_PATH);
    CHECK_STR_CONTAINS(e.msg, "missing.jpg");
    CHECK_STR_CONTAINS(e.msg, "No such file");
    snprintf(path, sizeof path, "%s/huge.jpg", dir); /* sparse: no disk used */
    FILE *f = fopen(path, "wb");
    REQUIRE(f);
    CHECK(ftruncate(fileno(f), (off_t)IMG_MAX_FILE_BYTES + 1) == 0);
    fclose(f);
    CHECK_INT_EQ(img_load_file(&im, path, NULL, &e), -ERR_TOO_LARGE);
    CHECK_STR_CONTAINS(e.msg, "huge.jpg: file is 268435457 bytes, over the 256 MB limit");
    unlink(path);
    CHECK_INT_EQ(img_load_file(&im, dir, NULL, &e), -ERR_BAD_PATH); /* a directory */
    CHECK_STR_CONTAINS(e.msg, "not a regular file");
    snprintf(path, sizeof path, "%s/x.jpg", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/empty.png", dir);
    unlink(path);
    rmdir(dir);
    free(dir);
    CHECK(im.rgb == NULL);
    img_free(NULL);
}

/* ------------------------------------------------------------------ */
/* resize and preprocess                                                */

TEST(resize_identity_and_hand_values)
{
    struct img im = {0};
    make_pattern(&im, 37, 23);
    uint8_t *out = malloc(37 * 23 * 3);
    REQUIRE(out);
    CHECK_INT_EQ(img_resize_bicubic(im.rgb, 37, 23, out, 37, 23, NULL), 0);
    CHECK(memcmp(out, im.rgb, 37 * 23 * 3) == 0);
    free(out);
    img_free(&im);

    /* 4x1 -> 2x1 worked by hand from the kernel: scale 2, support 4, taps at
     * (j - c + 0.5) / 2 give weights -0.0703125, 0.2265625, 0.8671875 ...,
     * sum 1.890625: 114.1015625 / 1.890625 = 60.35, 417.2265625 / 1.890625
     * = 220.68 */
    uint8_t src[12] = {0, 0, 0, 100, 100, 100, 200, 200, 200, 255, 255, 255};
    uint8_t dst[6];
    CHECK_INT_EQ(img_resize_bicubic(src, 4, 1, dst, 2, 1, NULL), 0);
    CHECK(dst[0] == 60 && dst[1] == 60 && dst[3] == 221 && dst[5] == 221);
    /* the same vertically (a 1x4 column) */
    CHECK_INT_EQ(img_resize_bicubic(src, 1, 4, dst, 1, 2, NULL), 0);
    CHECK(dst[0] == 60 && dst[3] == 221);

    /* a constant image stays constant, up or down */
    uint8_t flat[5 * 7 * 3], big[13 * 3 * 3];
    memset(flat, 77, sizeof flat);
    CHECK_INT_EQ(img_resize_bicubic(flat, 5, 7, big, 13, 3, NULL), 0);
    int same = 1;
    for (size_t i = 0; i < sizeof big; i++)
        same &= big[i] == 77;
    CHECK(same);

    struct err e = {0};
    CHECK_INT_EQ(img_resize_bicubic(src, 0, 1, dst, 1, 1, &e), -ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(img_resize_bicubic(src, 4, 1, dst, 0, 1, &e), -ERR_INVALID_ARGUMENT);
}

/* The windowed path of img_preprocess equals a full img_resize_bicubic
 * followed by the crop (the plain reference). */
TEST(preprocess_window_equals_full_resize)
{
    static const int sizes[][2] = {{1282, 1110}, {259, 194}, {224, 224}, {225, 300},
                                   {300, 225},   {1, 50},    {50, 1},    {3, 2},
                                   {640, 480},   {227, 1000}, {448, 449}};
    struct img_prep_cfg cfg;
    img_prep_cfg_clip_default(&cfg);
    float *a = malloc(sizeof(float) * NT);
    REQUIRE(a);
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        struct img im = {0};
        struct err e = {0};
        REQUIRE(img_synthetic(&im, sizes[s][0], sizes[s][1], (uint32_t)s, &e) == 0);
        int nw, nh, left, top;
        REQUIRE(img_prep_geometry(im.w, im.h, &cfg, &nw, &nh, &left, &top, &e) == 0);
        uint8_t *full = malloc((size_t)nw * nh * 3);
        REQUIRE(full);
        CHECK_INT_EQ(img_resize_bicubic(im.rgb, im.w, im.h, full, nw, nh, &e), 0);
        CHECK_INT_EQ(img_preprocess(&im, &cfg, a, &e), 0);
        int bad = 0;
        for (int y = 0; y < SIDE && !bad; y++)
            for (int x = 0; x < SIDE && !bad; x++)
                for (int c = 0; c < 3; c++) {
                    uint8_t v = full[((size_t)(y + top) * nw + x + left) * 3 + c];
                    float want = ((float)v / 255.0f - cfg.mean[c]) / cfg.std[c];
                    if (a[(size_t)c * SIDE * SIDE + (size_t)y * SIDE + x] != want) {
                        bad = 1;
                        break;
                    }
                }
        CHECKF(!bad, "%dx%d", sizes[s][0], sizes[s][1]);
        if (sizes[s][0] == 1) { /* 1 pixel wide: every column is the same */
            for (int y = 0; y < SIDE; y++)
                for (int x = 1; x < SIDE; x++)
                    if (a[(size_t)y * SIDE + x] != a[(size_t)y * SIDE]) {
                        CHECKF(0, "row %d col %d", y, x);
                        y = SIDE;
                        break;
                    }
        }
        free(full);
        img_free(&im);
    }
    free(a);
}

TEST(preprocess_geometry)
{
    struct img_prep_cfg cfg;
    img_prep_cfg_clip_default(&cfg);
    int nw, nh, l, t;
    struct err e = {0};
    CHECK_INT_EQ(img_prep_geometry(1282, 1110, &cfg, &nw, &nh, &l, &t, &e), 0);
    CHECK(nw == 258 && nh == 224 && l == 17 && t == 0); /* int(258.69) */
    CHECK_INT_EQ(img_prep_geometry(259, 194, &cfg, &nw, &nh, &l, &t, &e), 0);
    CHECK(nw == 299 && nh == 224 && l == 38 && t == 0); /* round(37.5) = 38 */
    CHECK_INT_EQ(img_prep_geometry(356, 493, &cfg, &nw, &nh, &l, &t, &e), 0);
    CHECK(nw == 224 && nh == 310 && l == 0 && t == 43);
    CHECK_INT_EQ(img_prep_geometry(225, 300, &cfg, &nw, &nh, &l, &t, &e), 0);
    CHECK(nw == 224 && nh == 298 && t == 37);
    CHECK_INT_EQ(img_prep_geometry(2, 3, &cfg, &nw, &nh, &l, &t, &e), 0);
    CHECK(nw == 224 && nh == 336 && t == 56);
    /* halves: 225 -> round(0.5) = 0, 227 -> round(1.5) = 2, 229 -> round(2.5) = 2 */
    struct img_prep_cfg c2 = cfg;
    c2.resize_short = 300;
    c2.crop = 299;
    CHECK_INT_EQ(img_prep_geometry(300, 300, &c2, NULL, NULL, &l, NULL, &e), 0);
    CHECK_INT_EQ(l, 0);
    c2.crop = 297;
    CHECK_INT_EQ(img_prep_geometry(300, 300, &c2, NULL, NULL, &l, NULL, &e), 0);
    CHECK_INT_EQ(l, 2);
    c2.crop = 295;
    CHECK_INT_EQ(img_prep_geometry(300, 300, &c2, NULL, NULL, &l, NULL, &e), 0);
    CHECK_INT_EQ(l, 2);
    c2.crop = 301;
    CHECK_INT_EQ(img_prep_geometry(300, 300, &c2, NULL, NULL, &l, NULL, &e),
                 -ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(img_prep_geometry(0, 3, &cfg, NULL, NULL, NULL, NULL, &e),
                 -ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(img_prep_geometry(1, 20000000, &cfg, NULL, NULL, NULL, NULL, &e),
                 -ERR_TOO_LARGE);
    CHECK_INT_EQ(img_prep_geometry(1, 9000000, &cfg, &nw, &nh, NULL, NULL, &e), 0);
    CHECK(nh == 2016000000);
}

TEST(preprocess_extreme_aspect)
{
    /* 1 x 4,000,000: the resize is 224 x 896,000,000, yet only the crop
     * is computed */
    struct img im = {0};
    im.w = 1;
    im.h = 4000000;
    im.rgb = malloc((size_t)im.h * 3);
    REQUIRE(im.rgb);
    for (int y = 0; y < im.h; y++)
        im.rgb[3 * y] = im.rgb[3 * y + 1] = im.rgb[3 * y + 2] = (uint8_t)(y * 7);
    float *a = malloc(sizeof(float) * NT);
    REQUIRE(a);
    struct err e = {0};
    CHECK_INT_EQ(img_preprocess(&im, NULL, a, &e), 0);
    free(a);
    img_free(&im);
}

TEST(synthetic_and_encode_args)
{
    struct img im = {0};
    struct err e = {0};
    CHECK_INT_EQ(img_synthetic(&im, 0, 5, 1, &e), -ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(img_synthetic(&im, 16, 8, 1, &e), 0);
    uint8_t *b = NULL;
    size_t n = 0;
    CHECK_INT_EQ(img_encode_jpeg(&im, 0, NULL, 0, &b, &n, &e), -ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(img_encode_jpeg(&im, 80, NULL, 0, &b, &n, &e), 0);
    CHECK(n > 100 && img_sniff(b, n) == IMG_FMT_JPEG);
    free(b);
    img_free(&im);
}

TEST_MAIN(sniff_formats, fixtures_match_reference, fixture_dims_and_format,
          dct_scaled_decode_meets_tolerance, dct_scaled_12mp, exif_orientation_parser,
          orientation_transform_all_eight, orientation_through_jpeg_exif,
          butterfly_exif6_is_butterfly_rotated, errors_truncated_and_corrupt,
          errors_unsupported_too_large_io, resize_identity_and_hand_values,
          preprocess_window_equals_full_resize, preprocess_geometry,
          preprocess_extreme_aspect, synthetic_and_encode_args)
