/* test_image_formats.c - the decoders on the variants of each format,
 * written here with the format's own library: PNG color types, bit depths,
 * interlace and alpha; GIF frames and screen bombs; WebP alpha and EXIF;
 * CMYK and YCCK JPEG. */
#include "test.h"

#include <gif_lib.h>
#include <jpeglib.h>
#include <png.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <webp/encode.h>
#include <webp/mux.h>

#include "image/image.h"
#include "test_image.h"

/* ------------------------------------------------------------------ */
/* format details: PNG variants, GIF frames, WebP alpha and EXIF         */

struct membuf {
    uint8_t *p;
    size_t n, cap;
};

static void membuf_put(struct membuf *m, const void *d, size_t n)
{
    if (m->n + n > m->cap) {
        m->cap = (m->n + n) * 2 + 64;
        m->p = realloc(m->p, m->cap);
    }
    memcpy(m->p + m->n, d, n);
    m->n += n;
}

static void png_write_cb(png_structp png, png_bytep d, size_t n)
{
    membuf_put(png_get_io_ptr(png), d, n);
}

static void png_flush_cb(png_structp png) { (void)png; }

/* Writes a PNG of the given type from packed rows (rowbytes each). */
static int make_png(struct membuf *m, int w, int h, int ctype, int depth, int interlace,
                    const uint8_t *rows, size_t rowbytes, const png_color *pal, int npal,
                    const uint8_t *trns, int ntrns, const png_color_16 *trns_color,
                    const uint8_t *exif, size_t exif_n)
{
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    png_bytep *rp = malloc(sizeof *rp * (size_t)h);
    if (!png || !info || !rp || setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(rp);
        return -1;
    }
    png_set_write_fn(png, m, png_write_cb, png_flush_cb);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, ctype,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (pal)
        png_set_PLTE(png, info, pal, npal);
    if (trns || trns_color)
        png_set_tRNS(png, info, trns, ntrns, trns_color);
    if (exif)
        png_set_eXIf_1(png, info, (png_uint_32)exif_n, (png_bytep)exif);
    for (int y = 0; y < h; y++)
        rp[y] = (png_bytep)rows + (size_t)y * rowbytes;
    png_set_rows(png, info, rp);
    png_write_png(png, info, PNG_TRANSFORM_IDENTITY, NULL);
    png_destroy_write_struct(&png, &info);
    free(rp);
    return 0;
}

static int px_is(const struct img *im, int x, int y, int r, int g, int b)
{
    const uint8_t *p = im->rgb + ((size_t)y * im->w + x) * 3;
    if (p[0] == r && p[1] == g && p[2] == b)
        return 1;
    fprintf(stderr, "  pixel (%d,%d) is %d,%d,%d, want %d,%d,%d\n", x, y, p[0], p[1], p[2], r,
            g, b);
    return 0;
}

TEST(png_variants)
{
    struct err e = {0};
    struct img im = {0};
    struct membuf m = {0};

    /* 16-bit RGB: the high byte of each sample */
    uint8_t rgb16[2 * 6] = {0x12, 0x34, 0xAB, 0xFF, 0x00, 0x80, 0xFF, 0xFF, 0x80, 0x7F, 0x01, 0x00};
    REQUIRE(make_png(&m, 2, 1, PNG_COLOR_TYPE_RGB, 16, 0, rgb16, 12, NULL, 0, NULL, 0, NULL,
                     NULL, 0) == 0);
    REQUIRE(img_decode(&im, m.p, m.n, NULL, &e) == 0);
    CHECK(px_is(&im, 0, 0, 0x12, 0xAB, 0x00) && px_is(&im, 1, 0, 0xFF, 0x80, 0x01));
    img_free(&im);
    m.n = 0;

    /* 1-bit gray, interlaced: 0 -> 0, 1 -> 255 */
    uint8_t g1[4] = {0xA0, 0x50, 0xF0, 0x00}; /* rows of 4 pixels: 1010 0101 1111 0000 */
    REQUIRE(make_png(&m, 4, 4, PNG_COLOR_TYPE_GRAY, 1, 1, g1, 1, NULL, 0, NULL, 0, NULL, NULL,
                     0) == 0);
    REQUIRE(img_decode(&im, m.p, m.n, NULL, &e) == 0);
    CHECK(px_is(&im, 0, 0, 255, 255, 255) && px_is(&im, 1, 0, 0, 0, 0));
    CHECK(px_is(&im, 1, 1, 255, 255, 255) && px_is(&im, 3, 2, 255, 255, 255));
    CHECK(px_is(&im, 2, 3, 0, 0, 0));
    img_free(&im);
    m.n = 0;

    /* 4-bit gray: v * 17 */
    uint8_t g4[1] = {0x3C};
    REQUIRE(make_png(&m, 2, 1, PNG_COLOR_TYPE_GRAY, 4, 0, g4, 1, NULL, 0, NULL, 0, NULL, NULL,
                     0) == 0);
    REQUIRE(img_decode(&im, m.p, m.n, NULL, &e) == 0);
    CHECK(px_is(&im, 0, 0, 51, 51, 51) && px_is(&im, 1, 0, 204, 204, 204));
    img_free(&im);
    m.n = 0;

    /* palette with tRNS: index 1 half transparent, index 2 fully */
    png_color pal[3] = {{10, 20, 30}, {200, 100, 0}, {1, 2, 3}};
    uint8_t trns[3] = {255, 128, 0};
    uint8_t idx[3] = {0, 1, 2};
    REQUIRE(make_png(&m, 3, 1, PNG_COLOR_TYPE_PALETTE, 8, 0, idx, 3, pal, 3, trns, 3, NULL,
                     NULL, 0) == 0);
    REQUIRE(img_decode(&im, m.p, m.n, NULL, &e) == 0);
    /* over white with PIL's arithmetic: 200*128+255*127 = 57985 -> 227 */
    CHECK(px_is(&im, 0, 0, 10, 20, 30) && px_is(&im, 1, 0, 227, 177, 127) &&
          px_is(&im, 2, 0, 255, 255, 255));
    img_free(&im);
    m.n = 0;

    /* gray + alpha, 16-bit */
    uint8_t ga[8] = {0x40, 0x00, 0xFF, 0xFF, 0xC8, 0x11, 0x80, 0x22};
    REQUIRE(make_png(&m, 2, 1, PNG_COLOR_TYPE_GRAY_ALPHA, 16, 0, ga, 8, NULL, 0, NULL, 0, NULL,
                     NULL, 0) == 0);
    REQUIRE(img_decode(&im, m.p, m.n, NULL, &e) == 0);
    CHECK(px_is(&im, 0, 0, 64, 64, 64) && px_is(&im, 1, 0, 227, 227, 227));
    img_free(&im);
    m.n = 0;

    /* RGB with a tRNS colour: that colour becomes white */
    uint8_t rgb[6] = {5, 6, 7, 8, 9, 10};
    png_color_16 key = {0, 8, 9, 10, 0};
    REQUIRE(make_png(&m, 2, 1, PNG_COLOR_TYPE_RGB, 8, 0, rgb, 6, NULL, 0, NULL, 0, &key, NULL,
                     0) == 0);
    REQUIRE(img_decode(&im, m.p, m.n, NULL, &e) == 0);
    CHECK(px_is(&im, 0, 0, 5, 6, 7) && px_is(&im, 1, 0, 255, 255, 255));
    img_free(&im);
    m.n = 0;

    /* eXIf orientation 8 on a 2x1 RGB image -> 1x2 */
    uint8_t tiff[80];
    size_t tn = make_tiff(tiff, 0, 8, 3);
    uint8_t rgb2[6] = {1, 1, 1, 2, 2, 2};
    REQUIRE(make_png(&m, 2, 1, PNG_COLOR_TYPE_RGB, 8, 0, rgb2, 6, NULL, 0, NULL, 0, NULL, tiff,
                     tn) == 0);
    REQUIRE(img_decode(&im, m.p, m.n, NULL, &e) == 0);
    CHECK(im.w == 1 && im.h == 2);
    CHECK(px_is(&im, 0, 0, 2, 2, 2) && px_is(&im, 0, 1, 1, 1, 1));
    img_free(&im);
    /* a PNG missing IEND still decodes */
    CHECK_INT_EQ(decode_err(m.p, m.n - 12, NULL, &e), 0);
    free(m.p);
}

/* The alpha arithmetic: every (c, a) against PIL's integer formula written
 * out independently, and its distance from exact rounding. */
TEST(alpha_over_white_all_values)
{
    int off = 0;
    for (int a = 0; a < 256; a++) {
        uint8_t row[256 * 4];
        for (int c = 0; c < 256; c++) {
            row[4 * c] = row[4 * c + 1] = row[4 * c + 2] = (uint8_t)c;
            row[4 * c + 3] = (uint8_t)a;
        }
        struct membuf m = {0};
        REQUIRE(make_png(&m, 256, 1, PNG_COLOR_TYPE_RGB_ALPHA, 8, 0, row, sizeof row, NULL, 0,
                         NULL, 0, NULL, NULL, 0) == 0);
        struct img im = {0};
        struct err e = {0};
        REQUIRE(img_decode(&im, m.p, m.n, NULL, &e) == 0);
        for (int c = 0; c < 256; c++) {
            /* Image.alpha_composite onto opaque white: coef1 = a*128,
             * coef2 = (255-a)*128, SHIFTFORDIV255, >> 7 */
            unsigned t = (unsigned)(c * a * 128 + 255 * (255 - a) * 128 + (0x80 << 7));
            unsigned want = (((t >> 8) + t) >> 8) >> 7;
            if (im.rgb[3 * c] != want) {
                CHECKF(0, "c %d a %d: %d want %u", c, a, im.rgb[3 * c], want);
                a = 256;
                break;
            }
            double exact = (c * a + 255.0 * (255 - a)) / 255.0;
            off += fabs(exact - want) > 0.5 + 1e-9;
        }
        img_free(&im);
        free(m.p);
    }
    printf("  alpha over white: %d of 65536 values differ from round((c*a + 255*(255-a))/255)\n",
           off);
}

static int gif_write_cb(GifFileType *g, const GifByteType *d, int n)
{
    membuf_put(g->UserData, d, (size_t)n);
    return n;
}

/* A GIF with a 4-colour global palette: screen sw x sh, one frame at
 * (fx, fy) of fw x fh filled from pix, transparency index tr (-1: none). */
static int make_gif(struct membuf *m, int sw, int sh, int fx, int fy, int fw, int fh,
                    const uint8_t *pix, int tr, int interlace)
{
    int err = 0;
    GifFileType *g = EGifOpen(m, gif_write_cb, &err);
    if (!g)
        return -1;
    GifColorType cols[4] = {{0, 0, 0}, {255, 0, 0}, {0, 255, 0}, {0, 0, 255}};
    ColorMapObject *cm = GifMakeMapObject(4, cols);
    int rc = EGifPutScreenDesc(g, sw, sh, 2, 0, cm);
    if (rc != GIF_ERROR && tr >= 0) {
        GraphicsControlBlock gcb = {0, false, 0, tr};
        GifByteType ext[4];
        size_t len = EGifGCBToExtension(&gcb, ext);
        rc = EGifPutExtension(g, GRAPHICS_EXT_FUNC_CODE, (int)len, ext);
    }
    if (rc != GIF_ERROR)
        rc = EGifPutImageDesc(g, fx, fy, fw, fh, interlace, NULL);
    /* giflib writes rows in the order given; for interlace, pass order */
    static const int start[4] = {0, 4, 2, 1}, step[4] = {8, 8, 4, 2};
    for (int p = 0; p < (interlace ? 4 : 1) && rc != GIF_ERROR; p++)
        for (int y = interlace ? start[p] : 0; y < fh && rc != GIF_ERROR;
             y += interlace ? step[p] : 1)
            rc = EGifPutLine(g, (GifPixelType *)pix + (size_t)y * fw, fw);
    GifFreeMapObject(cm);
    if (EGifCloseFile(g, &err) == GIF_ERROR)
        rc = GIF_ERROR;
    return rc == GIF_ERROR ? -1 : 0;
}

TEST(gif_frames)
{
    struct err e = {0};
    struct img im = {0};
    struct membuf m = {0};
    /* frame 2x2 at (1,1) on a 4x3 screen, no transparency: outside is
     * palette index 0 (black), as Pillow's first frame */
    uint8_t pix[4] = {1, 2, 3, 1};
    REQUIRE(make_gif(&m, 4, 3, 1, 1, 2, 2, pix, -1, 0) == 0);
    REQUIRE(img_decode(&im, m.p, m.n, NULL, &e) == 0);
    CHECK(im.w == 4 && im.h == 3);
    CHECK(px_is(&im, 0, 0, 0, 0, 0) && px_is(&im, 3, 2, 0, 0, 0));
    CHECK(px_is(&im, 1, 1, 255, 0, 0) && px_is(&im, 2, 1, 0, 255, 0));
    CHECK(px_is(&im, 1, 2, 0, 0, 255) && px_is(&im, 2, 2, 255, 0, 0));
    img_free(&im);
    m.n = 0;
    /* same with index 3 transparent: outside and index 3 are white */
    REQUIRE(make_gif(&m, 4, 3, 1, 1, 2, 2, pix, 3, 0) == 0);
    REQUIRE(img_decode(&im, m.p, m.n, NULL, &e) == 0);
    CHECK(px_is(&im, 0, 0, 255, 255, 255) && px_is(&im, 3, 2, 255, 255, 255));
    CHECK(px_is(&im, 1, 1, 255, 0, 0) && px_is(&im, 1, 2, 255, 255, 255));
    img_free(&im);
    m.n = 0;
    /* a frame sticking out of the screen grows it */
    REQUIRE(make_gif(&m, 2, 2, 1, 1, 2, 2, pix, -1, 0) == 0);
    REQUIRE(img_decode(&im, m.p, m.n, NULL, &e) == 0);
    CHECK(im.w == 3 && im.h == 3);
    CHECK(px_is(&im, 2, 2, 255, 0, 0));
    img_free(&im);
    m.n = 0;
    /* interlaced 3x11 frame: rows come back in place */
    uint8_t tall[33];
    for (int i = 0; i < 33; i++)
        tall[i] = (uint8_t)((i / 3) % 4);
    REQUIRE(make_gif(&m, 3, 11, 0, 0, 3, 11, tall, -1, 1) == 0);
    REQUIRE(img_decode(&im, m.p, m.n, NULL, &e) == 0);
    static const int col[4][3] = {{0, 0, 0}, {255, 0, 0}, {0, 255, 0}, {0, 0, 255}};
    for (int y = 0; y < 11; y++) {
        const int *c = col[y % 4];
        CHECKF(px_is(&im, 1, y, c[0], c[1], c[2]), "row %d", y);
    }
    img_free(&im);
    free(m.p);
}

/* Issue 9: a tiny GIF declaring a huge logical screen around a tiny frame
 * used to allocate the whole screen (7000x7000: 196 MB for 35 bytes). Above
 * 4 MP, a frame covering under a quarter of the screen is decoded alone;
 * below, and at a quarter or more, the screen is drawn as Pillow does. */
TEST(gif_screen_bomb)
{
    struct err e = {0};
    struct img im = {0};
    struct membuf m = {0};
    uint8_t pix[1] = {1};
    REQUIRE(make_gif(&m, 7000, 7000, 3000, 3000, 1, 1, pix, -1, 0) == 0);
    CHECKF(m.n < 64, "bomb is %zu bytes", m.n);
    REQUIRE(img_decode(&im, m.p, m.n, NULL, &e) == 0);
    CHECKF(im.w == 1 && im.h == 1, "canvas %dx%d, want the 1x1 frame", im.w, im.h);
    CHECK(px_is(&im, 0, 0, 255, 0, 0));
    img_free(&im);
    m.n = 0;
    /* a 2000x2000 screen (under 4 MP) keeps Pillow's canvas exactly */
    REQUIRE(make_gif(&m, 2000, 2000, 10, 20, 1, 1, pix, -1, 0) == 0);
    REQUIRE(img_decode(&im, m.p, m.n, NULL, &e) == 0);
    CHECK(im.w == 2000 && im.h == 2000);
    CHECK(px_is(&im, 10, 20, 255, 0, 0) && px_is(&im, 0, 0, 0, 0, 0));
    CHECK(px_is(&im, 1999, 1999, 0, 0, 0));
    img_free(&im);
    m.n = 0;
    /* over 4 MP, a frame covering exactly a quarter keeps the screen */
    size_t qn = (size_t)1100 * 1100;
    uint8_t *q = malloc(qn);
    REQUIRE(q);
    memset(q, 2, qn);
    REQUIRE(make_gif(&m, 2200, 2200, 1100, 1100, 1100, 1100, q, -1, 0) == 0);
    REQUIRE(img_decode(&im, m.p, m.n, NULL, &e) == 0);
    CHECK(im.w == 2200 && im.h == 2200);
    CHECK(px_is(&im, 1100, 1100, 0, 255, 0) && px_is(&im, 1099, 1099, 0, 0, 0));
    img_free(&im);
    m.n = 0;
    /* the pixel limit applies to the canvas that is allocated */
    struct img_decode_opts o = {.max_pixels = 1000};
    REQUIRE(make_gif(&m, 40, 40, 0, 0, 1, 1, pix, -1, 0) == 0);
    CHECK(img_decode(&im, m.p, m.n, &o, &e) == -ERR_TOO_LARGE);
    free(q);
    free(m.p);
}

TEST(webp_alpha_and_exif)
{
    /* lossless RGBA 2x2: exact values, alpha over white */
    uint8_t rgba[16] = {200, 100, 0, 128, 10, 20, 30, 255, 0, 0, 0, 0, 50, 60, 70, 255};
    uint8_t *wp = NULL;
    size_t wn = WebPEncodeLosslessRGBA(rgba, 2, 2, 8, &wp);
    REQUIRE(wn > 0);
    struct err e = {0};
    struct img im = {0};
    REQUIRE(img_decode(&im, wp, wn, NULL, &e) == 0);
    CHECK(px_is(&im, 0, 0, 227, 177, 127) && px_is(&im, 1, 0, 10, 20, 30));
    CHECK(px_is(&im, 0, 1, 255, 255, 255) && px_is(&im, 1, 1, 50, 60, 70));
    img_free(&im);

    /* the same bitstream in an extended (VP8X) file with an EXIF chunk
     * saying 6: rotated 90 degrees clockwise */
    REQUIRE(wn > 20 && memcmp(wp + 12, "VP8L", 4) == 0);
    uint8_t tiff[80];
    size_t tn = make_tiff(tiff, 1, 6, 3);
    struct membuf m = {0};
    uint8_t hdr[12 + 18] = "RIFF\0\0\0\0WEBPVP8X";
    put_le32(hdr + 16, 10);
    hdr[20] = 0x10 | 0x08; /* alpha, EXIF */
    hdr[24] = 1;           /* canvas width - 1 (24-bit) */
    hdr[27] = 1;           /* canvas height - 1 */
    membuf_put(&m, hdr, sizeof hdr);
    membuf_put(&m, wp + 12, wn - 12); /* the VP8L chunk */
    uint8_t ch[8] = "EXIF";
    put_le32(ch + 4, (uint32_t)tn);
    membuf_put(&m, ch, 8);
    membuf_put(&m, tiff, tn);
    if (tn & 1)
        membuf_put(&m, "", 1);
    put_le32(m.p + 4, (uint32_t)(m.n - 8));
    REQUIRE(img_decode(&im, m.p, m.n, NULL, &e) == 0);
    /* a b / c d  ->  c a / d b */
    CHECK(px_is(&im, 0, 0, 255, 255, 255) && px_is(&im, 1, 0, 227, 177, 127));
    CHECK(px_is(&im, 0, 1, 50, 60, 70) && px_is(&im, 1, 1, 10, 20, 30));
    img_free(&im);
    free(m.p);
    WebPFree(wp);
}

/* A flat 16x16 4-component JPEG holding the given stored bytes (libjpeg
 * writes the Adobe marker for CMYK/YCCK). */
static int make_cmyk_jpeg(const uint8_t v[4], int ycck, uint8_t **out, unsigned long *n)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    c.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&c);
    *out = NULL;
    *n = 0;
    jpeg_mem_dest(&c, out, n);
    c.image_width = c.image_height = 16;
    c.input_components = 4;
    c.in_color_space = JCS_CMYK;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 100, TRUE);
    if (ycck)
        jpeg_set_colorspace(&c, JCS_YCCK);
    jpeg_start_compress(&c, TRUE);
    uint8_t row[16 * 4];
    for (int x = 0; x < 16; x++)
        memcpy(row + 4 * x, v, 4);
    while (c.next_scanline < 16) {
        JSAMPROW r = row;
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    return 0;
}

TEST(cmyk_jpeg)
{
    /* Adobe files store inverted CMYK: stored (255, 127, 0, 200) is
     * C=0, M=128, Y=255, K=55. Pillow: R = nk - C*nk/255 with nk = 255-K = 200:
     * R = 200, G = 200 - 100 = 100, B = 0. */
    const uint8_t v[4] = {255, 127, 0, 200};
    for (int ycck = 0; ycck < 2; ycck++) {
        uint8_t *b;
        unsigned long n;
        make_cmyk_jpeg(v, ycck, &b, &n);
        struct img im = {0};
        struct err e = {0};
        CHECKF(img_decode(&im, b, n, NULL, &e) == 0, "%s", e.msg);
        if (im.rgb) {
            const uint8_t *p = im.rgb + (8 * 16 + 8) * 3;
            CHECKF(abs(p[0] - 200) <= 1 && abs(p[1] - 100) <= 1 && p[2] <= 1,
                   "ycck %d: %d %d %d", ycck, p[0], p[1], p[2]);
        }
        img_free(&im);
        free(b);
    }
}


TEST_MAIN(png_variants, alpha_over_white_all_values, gif_frames, gif_screen_bomb,
          webp_alpha_and_exif, cmyk_jpeg)
