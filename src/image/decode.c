/* decode.c - image bytes -> packed RGB8 pixels, as Pillow 9.4 sees them.
 *
 * Design:
 * 1. The format comes from the magic bytes only (img_sniff). Each decoder
 *    reads the header, checks width*height against the pixel limit and only
 *    then allocates pixels. For PNG the IHDR is checked by hand before libpng
 *    runs, so a header claiming 30000x30000 fails without any allocation.
 * 2. JPEG: libjpeg-turbo with its defaults (JDCT_ISLOW, fancy upsampling) is
 *    the library and configuration Pillow uses on Debian, so the pixels are
 *    identical. error_exit longjmps (libjpeg must never exit the process).
 *    Running out of data is an error, so a truncated file fails instead of
 *    coming back gray-filled: JWRN_HIT_MARKER (entropy data missing) always,
 *    JWRN_JPEG_EOF (no EOI) for multi-scan files; a baseline file that only
 *    lacks its final EOI marker keeps its complete pixels.
 *    Progressive files are limited to JPEG_MAX_SCANS scans (a
 *    tiny file with thousands of scans would otherwise burn CPU).
 *    4-component JPEGs are taken as Adobe inverted CMYK (Pillow's "CMYK;I"
 *    assumption) and converted with Pillow's cmyk2rgb arithmetic.
 * 3. DCT scaling (opts->min_side): the smallest 1/2, 1/4, 1/8 scale whose
 *    short side is still >= 2*min_side, as Pillow's draft() is used.
 * 4. Alpha is composited over opaque white with the integer arithmetic of
 *    PIL's Image.alpha_composite (ImagingAlphaComposite, 7 fractional bits),
 *    which for an opaque white destination reduces to over_white() below.
 * 5. PNG: 16-bit samples keep their high byte (png_set_strip_16, what
 *    Pillow's "RGB;16B" unpackers do); sub-8-bit gray is scaled to 0..255;
 *    tRNS becomes alpha. Gamma and colour chunks are ignored, as Pillow does.
 * 6. GIF: first frame, as Pillow 9.4's GifImagePlugin: the frame is drawn on
 *    the logical screen (grown if the frame sticks out); pixels outside the
 *    frame are index 0, or the transparent index when the graphic control
 *    extension names one; palette entries the colour map lacks are the gray
 *    ramp Pillow initialises palettes with. One deviation, against "screen
 *    bombs" (a 35-byte file declaring a 7000x7000 screen around a 1x1
 *    frame): when the screen is over GIF_PAD_MAX_PIXELS and the frame
 *    covers less than a quarter of it, the canvas is the frame alone. The
 *    padding is one flat colour that carries nothing to search by, and
 *    allocating it is the whole cost of the attack. Pixels go straight to
 *    RGB (no index buffer), so a canvas costs 3 bytes per pixel.
 * 7. WebP: still images only (animated ones are refused); RGBA when the
 *    bitstream has alpha.
 * 8. EXIF orientation (JPEG APP1 "Exif", PNG eXIf, WebP EXIF chunk) is
 *    applied to the pixels (exif.c), like ImageOps.exif_transpose.
 * 9. No global mutable state: each call owns its codec objects.
 *
 * References: libjpeg-turbo libjpeg.txt, libpng manual, giflib API docs,
 * libwebp decode.h, GIF89a spec, PNG spec 1.2 + eXIf extension, WebP
 * container spec (RIFF chunks).
 */
#include "image/image.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gif_lib.h>
#include <jerror.h>
#include <jpeglib.h>
#include <png.h>
#include <webp/decode.h>

#define JPEG_MAX_SCANS 1000

/* ------------------------------------------------------------------ */
/* Formats                                                              */

enum img_format img_sniff(const uint8_t *data, size_t n)
{
    if (!data)
        return IMG_FMT_UNKNOWN;
    if (n >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF)
        return IMG_FMT_JPEG;
    if (n >= 8 && memcmp(data, "\x89PNG\r\n\x1a\n", 8) == 0)
        return IMG_FMT_PNG;
    if (n >= 12 && memcmp(data, "RIFF", 4) == 0 && memcmp(data + 8, "WEBP", 4) == 0)
        return IMG_FMT_WEBP;
    if (n >= 6 && (memcmp(data, "GIF87a", 6) == 0 || memcmp(data, "GIF89a", 6) == 0))
        return IMG_FMT_GIF;
    return IMG_FMT_UNKNOWN;
}

const char *img_format_name(enum img_format f)
{
    switch (f) {
    case IMG_FMT_JPEG: return "jpeg";
    case IMG_FMT_PNG:  return "png";
    case IMG_FMT_WEBP: return "webp";
    case IMG_FMT_GIF:  return "gif";
    default:           return "unknown";
    }
}

const char *img_format_mime(enum img_format f)
{
    switch (f) {
    case IMG_FMT_JPEG: return "image/jpeg";
    case IMG_FMT_PNG:  return "image/png";
    case IMG_FMT_WEBP: return "image/webp";
    case IMG_FMT_GIF:  return "image/gif";
    default:           return "application/octet-stream";
    }
}

void img_free(struct img *im)
{
    if (!im)
        return;
    free(im->rgb);
    memset(im, 0, sizeof *im);
}

/* ------------------------------------------------------------------ */
/* Shared helpers                                                       */

/* What one decoder hands back to img_decode. */
struct raw {
    int w, h;           /* decoded size (before orientation) */
    int full_w, full_h; /* size at full scale (JPEG DCT scaling) */
    uint8_t *rgb;       /* w*h*3, malloc'd */
    int orient;         /* EXIF orientation 1..8 */
};

static int check_size(const char *fmt, uint64_t w, uint64_t h, uint64_t maxpix,
                      struct err *err)
{
    if (w == 0 || h == 0)
        return err_set(err, ERR_DECODE, "%s header says the image is %llux%llu pixels",
                       fmt, (unsigned long long)w, (unsigned long long)h);
    if (w > 0x7fffffff || h > 0x7fffffff || w * h > maxpix)
        return err_set(err, ERR_TOO_LARGE,
                       "%s image is %llux%llu pixels, over the limit of %llu pixels",
                       fmt, (unsigned long long)w, (unsigned long long)h,
                       (unsigned long long)maxpix);
    return 0;
}

/* PIL's Image.alpha_composite(white, im), channel c with alpha a. With an
 * opaque destination ImagingAlphaComposite's coefficients are exactly
 * a*128 and (255-a)*128, so the result is
 * SHIFTFORDIV255(128*(c*a + 255*(255-a)) + (0x80 << 7)) >> 7. */
static inline uint8_t over_white(unsigned c, unsigned a)
{
    uint32_t t = (c * a + 255u * (255u - a)) * 128u + (0x80u << 7);
    return (uint8_t)((((t >> 8) + t) >> 8) >> 7);
}

/* RGBA -> RGB over white, npix pixels; dst may equal src (in place). */
static void rgba_to_rgb(uint8_t *dst, const uint8_t *src, size_t npix)
{
    for (size_t i = 0; i < npix; i++, src += 4, dst += 3) {
        unsigned a = src[3];
        if (a == 255) {
            uint8_t r = src[0], g = src[1], b = src[2];
            dst[0] = r, dst[1] = g, dst[2] = b;
        } else {
            uint8_t r = over_white(src[0], a), g = over_white(src[1], a),
                    b = over_white(src[2], a);
            dst[0] = r, dst[1] = g, dst[2] = b;
        }
    }
}

static uint8_t *alloc_pixels(uint64_t w, uint64_t h, unsigned ch, const char *fmt,
                             struct err *err)
{
    uint8_t *p = malloc((size_t)(w * h * ch));
    if (!p)
        err_set(err, ERR_NOMEM, "out of memory for a %llux%llu %s image",
                (unsigned long long)w, (unsigned long long)h, fmt);
    return p;
}

/* ------------------------------------------------------------------ */
/* JPEG                                                                 */

struct jerr {
    struct jpeg_error_mgr pub; /* first: libjpeg hands back this pointer */
    jmp_buf jb;                /* where error_exit jumps */
    int code;                  /* ERR_* for the failure */
    int eof;                   /* JWRN_JPEG_EOF seen: a fake EOI was inserted */
    char msg[JMSG_LENGTH_MAX + 64]; /* message for the failure */
};

static void jpeg_fail(j_common_ptr c)
{
    struct jerr *e = (struct jerr *)c->err;
    char buf[JMSG_LENGTH_MAX];
    (*c->err->format_message)(c, buf);
    switch (c->err->msg_code) {
    case JERR_OUT_OF_MEMORY:
        e->code = ERR_NOMEM;
        snprintf(e->msg, sizeof e->msg, "out of memory decoding JPEG");
        break;
    case JERR_NO_BACKING_STORE:
        e->code = ERR_TOO_LARGE;
        snprintf(e->msg, sizeof e->msg, "JPEG needs too much memory to decode");
        break;
    case JERR_BAD_PRECISION:
        e->code = ERR_UNSUPPORTED_FORMAT;
        snprintf(e->msg, sizeof e->msg, "unsupported JPEG: %s", buf);
        break;
    default:
        e->code = ERR_DECODE;
        if (e->eof) /* e.g. "missing SOS marker" after the fake EOI */
            snprintf(e->msg, sizeof e->msg, "JPEG data ends early (truncated file?)");
        else
            snprintf(e->msg, sizeof e->msg, "JPEG data is corrupt: %s", buf);
    }
    longjmp(e->jb, 1);
}

static void jpeg_emit(j_common_ptr c, int level)
{
    if (level >= 0)
        return; /* trace messages */
    struct jerr *e = (struct jerr *)c->err;
    switch (c->err->msg_code) {
    case JWRN_HIT_MARKER: /* entropy data needed but gone: would be gray */
        e->code = ERR_DECODE;
        snprintf(e->msg, sizeof e->msg, "JPEG data ends early (truncated file?)");
        longjmp(e->jb, 1);
    case JWRN_JPEG_EOF: /* input used up; fatal unless the pixels are all in */
        e->eof = 1;
        break;
    default: /* other warnings: decode as Pillow does */
        break;
    }
    c->err->num_warnings++;
}

static void jpeg_silent(j_common_ptr c) { (void)c; } /* library code never prints */

static void jpeg_progress(j_common_ptr c)
{
    j_decompress_ptr d = (j_decompress_ptr)c;
    if (d->input_scan_number > JPEG_MAX_SCANS) {
        struct jerr *e = (struct jerr *)c->err;
        e->code = ERR_DECODE;
        snprintf(e->msg, sizeof e->msg, "JPEG has over %d scans (corrupt or hostile file)",
                 JPEG_MAX_SCANS);
        longjmp(e->jb, 1);
    }
}

static void jerr_init(struct jerr *e)
{
    jpeg_std_error(&e->pub);
    e->pub.error_exit = jpeg_fail;
    e->pub.emit_message = jpeg_emit;
    e->pub.output_message = jpeg_silent;
}

struct jdec {
    struct jpeg_decompress_struct cinfo; /* libjpeg state */
    struct jerr jerr;                    /* error manager */
    struct jpeg_progress_mgr prog;       /* scan counter */
    int created;                         /* cinfo needs destroying */
    uint8_t *row;                        /* one gray/CMYK scanline */
    struct raw r;                        /* result being built */
};

/* Pillow's CMYK;I unpacking (invert) then cmyk2rgb:
 * out = nk - MULDIV255(c, nk) with nk = 255 - k. */
static inline uint8_t cmyk_chan(unsigned stored_c, unsigned nk)
{
    unsigned c = 255u - stored_c;
    unsigned t = c * nk + 128u;
    unsigned m = ((t >> 8) + t) >> 8;
    return (uint8_t)(nk - m);
}

static int jpeg_run(struct jdec *s, const uint8_t *data, size_t n, uint64_t maxpix,
                    int min_side, struct err *err)
{
    j_decompress_ptr ci = &s->cinfo;
    jpeg_create_decompress(ci);
    s->created = 1;
    /* Bound libjpeg's own allocations (progressive coefficient buffers):
     * generous for any image under the pixel limit. */
    uint64_t cap = maxpix < (1ull << 40) ? maxpix * 12 + (64ull << 20) : (1ull << 44);
    ci->mem->max_memory_to_use = (long)cap;
    s->prog.progress_monitor = jpeg_progress;
    ci->progress = &s->prog;
    jpeg_mem_src(ci, data, (unsigned long)n);
    jpeg_save_markers(ci, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(ci, TRUE);

    int rc = check_size("JPEG", ci->image_width, ci->image_height, maxpix, err);
    if (rc < 0)
        return rc;
    int nc = ci->num_components;
    if (nc != 1 && nc != 3 && nc != 4)
        return err_set(err, ERR_UNSUPPORTED_FORMAT,
                       "unsupported JPEG with %d colour components", nc);
    s->r.full_w = (int)ci->image_width;
    s->r.full_h = (int)ci->image_height;

    /* Pillow keeps the first APP1 that starts with "Exif\0\0". */
    s->r.orient = 1;
    for (jpeg_saved_marker_ptr m = ci->marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 &&
            memcmp(m->data, "Exif\0\0", 6) == 0) {
            s->r.orient = img_exif_orientation(m->data, m->data_length);
            break;
        }

    if (min_side > 0) {
        for (unsigned denom = 8; denom >= 2; denom /= 2) {
            ci->scale_num = 1;
            ci->scale_denom = denom;
            jpeg_calc_output_dimensions(ci);
            JDIMENSION sh = ci->output_width < ci->output_height ? ci->output_width
                                                                  : ci->output_height;
            if ((uint64_t)sh >= 2 * (uint64_t)min_side)
                break;
            ci->scale_denom = 1;
        }
    }

    jpeg_start_decompress(ci);
    int w = (int)ci->output_width, h = (int)ci->output_height;
    int oc = ci->output_components;
    if ((nc == 3 && (ci->out_color_space != JCS_RGB || oc != 3)) ||
        (nc == 1 && oc != 1) || (nc == 4 && oc != 4))
        return err_set(err, ERR_UNSUPPORTED_FORMAT,
                       "unsupported JPEG colour space (%d components)", nc);
    s->r.rgb = alloc_pixels((uint64_t)w, (uint64_t)h, 3, "JPEG", err);
    if (!s->r.rgb)
        return -ERR_NOMEM;
    s->r.w = w;
    s->r.h = h;
    if (oc != 3) {
        s->row = malloc((size_t)w * (size_t)oc);
        if (!s->row)
            return err_set(err, ERR_NOMEM, "out of memory decoding JPEG");
    }
    while (ci->output_scanline < (JDIMENSION)h) {
        uint8_t *dst = s->r.rgb + (size_t)ci->output_scanline * (size_t)w * 3;
        JSAMPROW row = oc == 3 ? dst : s->row;
        if (jpeg_read_scanlines(ci, &row, 1) != 1)
            return err_set(err, ERR_DECODE, "JPEG data ends early (truncated file?)");
        if (oc == 1) {
            for (int x = 0; x < w; x++)
                dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = s->row[x];
        } else if (oc == 4) {
            const uint8_t *p = s->row;
            for (int x = 0; x < w; x++, p += 4, dst += 3) {
                unsigned nk = p[3]; /* inverted K: 255 - (255 - stored) */
                dst[0] = cmyk_chan(p[0], nk);
                dst[1] = cmyk_chan(p[1], nk);
                dst[2] = cmyk_chan(p[2], nk);
            }
        }
    }
    /* The input ran out before EOI. In a single-scan file every missing
     * bit would have raised JWRN_HIT_MARKER, so the pixels are complete (the
     * file just lacks its EOI, as many do); a multi-scan (progressive) file
     * may instead be missing whole scans, which nothing else reveals, and
     * the arithmetic decoder pads missing data with zeros without a word. */
    if (s->jerr.eof && (jpeg_has_multiple_scans(ci) || ci->arith_code))
        return err_set(err, ERR_DECODE, "JPEG data ends early (truncated file?)");
    /* jpeg_finish_decompress is skipped: it would only look for EOI. */
    return 0;
}

static int decode_jpeg(struct raw *out, const uint8_t *data, size_t n, uint64_t maxpix,
                       int min_side, struct err *err)
{
    struct jdec *s = calloc(1, sizeof *s);
    if (!s)
        return err_set(err, ERR_NOMEM, "out of memory decoding JPEG");
    jerr_init(&s->jerr);
    s->cinfo.err = &s->jerr.pub;
    int rc;
    if (setjmp(s->jerr.jb))
        rc = err_set(err, s->jerr.code, "%s", s->jerr.msg);
    else
        rc = jpeg_run(s, data, n, maxpix, min_side, err);
    if (s->created)
        jpeg_destroy_decompress(&s->cinfo);
    free(s->row);
    if (rc == 0)
        *out = s->r;
    else
        free(s->r.rgb);
    free(s);
    return rc;
}

/* ------------------------------------------------------------------ */
/* PNG                                                                  */

struct pdec {
    png_structp png;      /* libpng read state */
    png_infop info;       /* libpng info */
    const uint8_t *data;  /* input */
    size_t n, pos;        /* input size, read position */
    int truncated;        /* the input ran out */
    int pixels_done;      /* all rows read: later errors do not matter */
    char msg[256];        /* libpng's error message */
    uint8_t *buf;         /* h rows of rowbytes */
    png_bytep *rows;      /* row pointers into buf */
    struct raw r;         /* result being built */
};

static void png_fail(png_structp png, png_const_charp msg)
{
    struct pdec *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_warn(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg; /* ancillary-chunk trouble: decode anyway, as Pillow does */
}

static void png_read_mem(png_structp png, png_bytep out, size_t len)
{
    struct pdec *s = png_get_io_ptr(png);
    if (len > s->n - s->pos) {
        s->truncated = 1;
        png_error(png, "read past the end");
    }
    memcpy(out, s->data + s->pos, len);
    s->pos += len;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int png_orientation(struct pdec *s)
{
    png_uint_32 len = 0;
    png_bytep exif = NULL;
    if (png_get_eXIf_1(s->png, s->info, &len, &exif) && exif && len > 0)
        return img_exif_orientation(exif, len);
    return 1;
}

static int png_run(struct pdec *s, uint64_t maxpix, struct err *err)
{
    png_structp png = s->png;
    png_infop info = s->info;
    png_set_read_fn(png, s, png_read_mem);
    png_set_chunk_malloc_max(png, 8u << 20);
    png_set_chunk_cache_max(png, 1000);
    png_read_info(png, info);

    png_uint_32 w, h;
    int depth, ctype, interlace;
    png_get_IHDR(png, info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
    int rc = check_size("PNG", w, h, maxpix, err);
    if (rc < 0)
        return rc;
    s->r.orient = png_orientation(s);

    if (depth == 16)
        png_set_strip_16(png);
    if (ctype == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS))
        png_set_tRNS_to_alpha(png);
    if (ctype == PNG_COLOR_TYPE_GRAY || ctype == PNG_COLOR_TYPE_GRAY_ALPHA)
        png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);

    int ch = png_get_channels(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if ((ch != 3 && ch != 4) || rowbytes != (size_t)w * (size_t)ch)
        return err_set(err, ERR_DECODE, "PNG: unexpected layout after conversion "
                                        "(%d channels, %zu bytes per row)", ch, rowbytes);
    s->buf = alloc_pixels(w, h, (unsigned)ch, "PNG", err);
    s->rows = malloc(sizeof *s->rows * h);
    if (!s->buf || !s->rows)
        return err_set(err, ERR_NOMEM, "out of memory for a %ux%u PNG image", w, h);
    for (png_uint_32 y = 0; y < h; y++)
        s->rows[y] = s->buf + (size_t)y * rowbytes;
    png_read_image(png, s->rows);
    s->pixels_done = 1;
    if (ch == 4)
        rgba_to_rgb(s->buf, s->buf, (size_t)w * h);
    s->r.rgb = s->buf;
    s->r.w = s->r.full_w = (int)w;
    s->r.h = s->r.full_h = (int)h;
    /* An eXIf chunk after the image data still counts (Pillow reads to the
     * end for getexif); damage after the pixels is ignored (see decode_png). */
    if (s->r.orient == 1) {
        png_read_end(png, info);
        s->r.orient = png_orientation(s);
    }
    return 0;
}

static int decode_png(struct raw *out, const uint8_t *data, size_t n, uint64_t maxpix,
                      struct err *err)
{
    /* Check IHDR's size by hand first: libpng reads every chunk up to IDAT
     * before it reports the header, and a bogus file may have none. */
    if (n >= 24 && memcmp(data + 12, "IHDR", 4) == 0) {
        int rc = check_size("PNG", be32(data + 16), be32(data + 20), maxpix, err);
        if (rc < 0)
            return rc;
    }
    struct pdec *s = calloc(1, sizeof *s);
    if (!s)
        return err_set(err, ERR_NOMEM, "out of memory decoding PNG");
    s->data = data;
    s->n = n;
    int rc;
    s->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, s, png_fail, png_warn);
    if (s->png)
        s->info = png_create_info_struct(s->png);
    if (!s->png || !s->info) {
        rc = err_set(err, ERR_NOMEM, "out of memory decoding PNG");
    } else if (setjmp(png_jmpbuf(s->png))) {
        if (s->pixels_done)
            rc = 0; /* trouble after the last row (e.g. no IEND) */
        else if (s->truncated)
            rc = err_set(err, ERR_DECODE, "PNG data ends early (truncated file?)");
        else
            rc = err_set(err, ERR_DECODE, "PNG data is corrupt: %s", s->msg);
    } else {
        rc = png_run(s, maxpix, err);
    }
    png_destroy_read_struct(s->png ? &s->png : NULL, s->info ? &s->info : NULL, NULL);
    free(s->rows);
    if (rc == 0) {
        *out = s->r;
        /* shrink an RGBA buffer that now holds RGB */
        uint8_t *p = realloc(out->rgb, (size_t)out->w * (size_t)out->h * 3);
        if (p)
            out->rgb = p;
    } else {
        free(s->buf);
    }
    free(s);
    return rc;
}

/* ------------------------------------------------------------------ */
/* WebP                                                                 */

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* EXIF chunk of an extended (VP8X) WebP file, walked chunk by chunk. */
static int webp_orientation(const uint8_t *d, size_t n)
{
    if (n < 20 || memcmp(d + 12, "VP8X", 4) != 0)
        return 1;
    size_t end = (size_t)le32(d + 4);
    end = end > n - 8 ? n : end + 8;
    size_t p = 12;
    while (p + 8 <= end) {
        size_t sz = le32(d + p + 4);
        if (sz > end - p - 8)
            break;
        if (memcmp(d + p, "EXIF", 4) == 0)
            return img_exif_orientation(d + p + 8, sz);
        p += 8 + sz + (sz & 1);
    }
    return 1;
}

static int decode_webp(struct raw *out, const uint8_t *data, size_t n, uint64_t maxpix,
                       struct err *err)
{
    WebPBitstreamFeatures f;
    VP8StatusCode st = WebPGetFeatures(data, n, &f);
    if (st == VP8_STATUS_NOT_ENOUGH_DATA)
        return err_set(err, ERR_DECODE, "WebP data ends early (truncated file?)");
    if (st != VP8_STATUS_OK)
        return err_set(err, ERR_DECODE, "WebP header is corrupt (libwebp status %d)", (int)st);
    if (f.has_animation)
        return err_set(err, ERR_UNSUPPORTED_FORMAT, "animated WebP is not supported");
    int rc = check_size("WebP", (uint64_t)(f.width < 0 ? 0 : f.width),
                        (uint64_t)(f.height < 0 ? 0 : f.height), maxpix, err);
    if (rc < 0)
        return rc;
    size_t w = (size_t)f.width, h = (size_t)f.height, ch = f.has_alpha ? 4 : 3;
    uint8_t *buf = alloc_pixels(w, h, (unsigned)ch, "WebP", err);
    if (!buf)
        return -ERR_NOMEM;
    uint8_t *ok = f.has_alpha ? WebPDecodeRGBAInto(data, n, buf, w * h * 4, (int)(w * 4))
                              : WebPDecodeRGBInto(data, n, buf, w * h * 3, (int)(w * 3));
    if (!ok) {
        free(buf);
        return err_set(err, ERR_DECODE, "WebP data is corrupt or ends early");
    }
    if (f.has_alpha) {
        rgba_to_rgb(buf, buf, w * h);
        uint8_t *p = realloc(buf, w * h * 3);
        if (p)
            buf = p;
    }
    out->rgb = buf;
    out->w = out->full_w = (int)w;
    out->h = out->full_h = (int)h;
    out->orient = webp_orientation(data, n);
    return 0;
}

/* ------------------------------------------------------------------ */
/* GIF                                                                  */

struct gsrc {
    const uint8_t *data; /* input */
    size_t n, pos;       /* size, read position */
};

static int gif_read(GifFileType *g, GifByteType *buf, int len)
{
    struct gsrc *s = g->UserData;
    size_t k = len > 0 ? (size_t)len : 0;
    if (k > s->n - s->pos)
        k = s->n - s->pos;
    memcpy(buf, s->data + s->pos, k);
    s->pos += k;
    return (int)k;
}

/* giflib reports a short read and some bad headers with the same code:
 * call it truncation only when the input is used up. */
static int gif_error(int code, const struct gsrc *s, struct err *err)
{
    if ((code == D_GIF_ERR_READ_FAILED || code == D_GIF_ERR_EOF_TOO_SOON) && s->pos >= s->n)
        return err_set(err, ERR_DECODE, "GIF data ends early (truncated file?)");
    if (code == D_GIF_ERR_NOT_ENOUGH_MEM)
        return err_set(err, ERR_NOMEM, "out of memory decoding GIF");
    const char *m = GifErrorString(code);
    return err_set(err, ERR_DECODE, "GIF data is corrupt: %s", m ? m : "unknown error");
}

/* Screens up to this size are drawn exactly as Pillow does; above it a
 * frame covering under a quarter of the screen is decoded alone (see 6.). */
#define GIF_PAD_MAX_PIXELS ((uint64_t)4 << 20)

/* Reads the first image of g (its descriptor just read) onto a canvas. */
static int gif_frame(GifFileType *g, int transparent, uint64_t maxpix, struct raw *out,
                     struct err *err)
{
    const GifImageDesc *d = &g->Image;
    if (d->Left < 0 || d->Top < 0 || d->Width < 0 || d->Height < 0)
        return err_set(err, ERR_DECODE, "GIF frame has a negative size or offset");
    uint64_t fx0 = (uint64_t)d->Left, fy0 = (uint64_t)d->Top;
    uint64_t fw = (uint64_t)d->Width, fh = (uint64_t)d->Height;
    uint64_t W = (uint64_t)(g->SWidth > 0 ? g->SWidth : 0);
    uint64_t H = (uint64_t)(g->SHeight > 0 ? g->SHeight : 0);
    if (fx0 + fw > W)
        W = fx0 + fw; /* Pillow grows the screen to hold the frame */
    if (fy0 + fh > H)
        H = fy0 + fh;
    if (W * H > GIF_PAD_MAX_PIXELS && fw * fh * 4 < W * H) {
        W = fw; /* the frame alone: see 6. in the file comment */
        H = fh;
        fx0 = fy0 = 0;
    }
    int rc = check_size("GIF", W, H, maxpix, err);
    if (rc < 0)
        return rc;

    uint8_t pal[256][3];
    for (int i = 0; i < 256; i++) /* Pillow's palettes start as a gray ramp */
        pal[i][0] = pal[i][1] = pal[i][2] = (uint8_t)i;
    const ColorMapObject *cm = d->ColorMap ? d->ColorMap : g->SColorMap;
    if (cm && cm->Colors) {
        int nc = cm->ColorCount < 256 ? cm->ColorCount : 256;
        for (int i = 0; i < nc; i++) {
            pal[i][0] = cm->Colors[i].Red;
            pal[i][1] = cm->Colors[i].Green;
            pal[i][2] = cm->Colors[i].Blue;
        }
    }
    /* index -> RGB, the transparent index as alpha 0 over white */
    uint8_t rgbpal[256][3];
    memcpy(rgbpal, pal, sizeof pal);
    if (transparent >= 0)
        memset(rgbpal[transparent], 255, 3);

    uint8_t *line = malloc(fw ? (size_t)fw : 1);
    uint8_t *rgb = alloc_pixels(W, H, 3, "GIF", err);
    if (!line || !rgb) {
        free(line);
        free(rgb);
        return err_set(err, ERR_NOMEM, "out of memory for a %llux%llu GIF image",
                       (unsigned long long)W, (unsigned long long)H);
    }
    /* Outside the frame: index 0, or the transparent index. */
    const uint8_t *bg = rgbpal[transparent >= 0 ? transparent : 0];
    size_t npix = (size_t)(W * H);
    for (size_t i = 0; i < npix; i++)
        memcpy(rgb + 3 * i, bg, 3);
    /* Rows in file order; interlaced images come in four passes. */
    static const int start[4] = {0, 4, 2, 1}, step[4] = {8, 8, 4, 2};
    int passes = d->Interlace ? 4 : 1;
    for (int p = 0; p < passes && rc == 0; p++) {
        int y0 = d->Interlace ? start[p] : 0, dy = d->Interlace ? step[p] : 1;
        for (int y = y0; y < d->Height; y += dy) {
            if (DGifGetLine(g, line, d->Width) == GIF_ERROR) {
                rc = gif_error(g->Error, g->UserData, err);
                break;
            }
            uint8_t *o = rgb + (((size_t)fy0 + (size_t)y) * (size_t)W + (size_t)fx0) * 3;
            for (size_t x = 0; x < (size_t)fw; x++)
                memcpy(o + 3 * x, rgbpal[line[x]], 3);
        }
    }
    free(line);
    if (rc == 0) {
        out->rgb = rgb;
        out->w = out->full_w = (int)W;
        out->h = out->full_h = (int)H;
        out->orient = 1;
    } else {
        free(rgb);
    }
    return rc;
}

static int decode_gif(struct raw *out, const uint8_t *data, size_t n, uint64_t maxpix,
                      struct err *err)
{
    struct gsrc src = {data, n, 0};
    int code = 0;
    GifFileType *g = DGifOpen(&src, gif_read, &code);
    if (!g)
        return gif_error(code, &src, err);
    int rc = 1, transparent = -1;
    while (rc > 0) {
        GifRecordType t;
        if (DGifGetRecordType(g, &t) == GIF_ERROR) {
            rc = gif_error(g->Error, g->UserData, err);
            break;
        }
        if (t == EXTENSION_RECORD_TYPE) {
            int ext_code;
            GifByteType *ext = NULL;
            if (DGifGetExtension(g, &ext_code, &ext) == GIF_ERROR) {
                rc = gif_error(g->Error, g->UserData, err);
                break;
            }
            /* Graphic control: [0] size, [1] flags (bit 0: transparency),
             * [2..3] delay, [4] transparent index. */
            if (ext_code == GRAPHICS_EXT_FUNC_CODE && ext && ext[0] >= 4)
                transparent = (ext[1] & 1) ? ext[4] : -1;
            while (ext) {
                if (DGifGetExtensionNext(g, &ext) == GIF_ERROR) {
                    rc = gif_error(g->Error, g->UserData, err);
                    break;
                }
            }
        } else if (t == IMAGE_DESC_RECORD_TYPE) {
            if (DGifGetImageDesc(g) == GIF_ERROR)
                rc = gif_error(g->Error, g->UserData, err);
            else
                rc = gif_frame(g, transparent, maxpix, out, err);
        } else if (t == TERMINATE_RECORD_TYPE) {
            rc = err_set(err, ERR_DECODE, "GIF has no image");
        } else {
            rc = err_set(err, ERR_DECODE, "GIF data is corrupt: unknown record");
        }
    }
    DGifCloseFile(g, &code);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Entry points                                                         */

int img_decode(struct img *out, const uint8_t *data, size_t n,
               const struct img_decode_opts *opts, struct err *err)
{
    if (!out || (!data && n))
        return err_set(err, ERR_INVALID_ARGUMENT, "img_decode: no output or no data");
    memset(out, 0, sizeof *out);
    if (n == 0)
        return err_set(err, ERR_UNSUPPORTED_FORMAT, "empty file (0 bytes), not an image");
    enum img_format fmt = img_sniff(data, n);
    uint64_t maxpix = opts && opts->max_pixels ? opts->max_pixels : IMG_DEFAULT_MAX_PIXELS;
    int min_side = opts && opts->min_side > 0 ? opts->min_side : 0;
    struct raw r = {0};
    int rc;
    switch (fmt) {
    case IMG_FMT_JPEG: rc = decode_jpeg(&r, data, n, maxpix, min_side, err); break;
    case IMG_FMT_PNG:  rc = decode_png(&r, data, n, maxpix, err); break;
    case IMG_FMT_WEBP: rc = decode_webp(&r, data, n, maxpix, err); break;
    case IMG_FMT_GIF:  rc = decode_gif(&r, data, n, maxpix, err); break;
    default: {
        char hex[3 * 4 + 1] = "";
        size_t used = 0;
        for (size_t i = 0; i < n && i < 4; i++)
            used += (size_t)snprintf(hex + used, sizeof hex - used, "%s%02x", i ? " " : "",
                                     data[i]);
        return err_set(err, ERR_UNSUPPORTED_FORMAT,
                       "not a JPEG, PNG, WebP or GIF image (starts with %s)", hex);
    }
    }
    if (rc < 0)
        return rc;
    out->w = r.w;
    out->h = r.h;
    out->rgb = r.rgb;
    out->fmt = fmt;
    out->full_w = r.full_w;
    out->full_h = r.full_h;
    rc = img_apply_orientation(out, r.orient, err);
    if (rc < 0)
        img_free(out);
    return rc;
}

int img_load_file(struct img *out, const char *path, const struct img_decode_opts *opts,
                  struct err *err)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!out || !path)
        return err_set(err, ERR_INVALID_ARGUMENT, "img_load_file: no output or no path");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(err, err_code_of_errno(errno, 1), "%s: %s", path, strerror(errno));
    struct stat st;
    int rc = 0;
    uint8_t *buf = NULL;
    size_t got = 0;
    if (fstat(fd, &st) != 0) {
        rc = err_set(err, ERR_IO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = err_set(err, ERR_BAD_PATH, "%s: not a regular file", path);
        goto fail;
    }
    if ((uint64_t)st.st_size > IMG_MAX_FILE_BYTES) {
        rc = err_set(err, ERR_TOO_LARGE, "%s: file is %lld bytes, over the %u MB limit",
                     path, (long long)st.st_size, IMG_MAX_FILE_BYTES >> 20);
        goto fail;
    }
    size_t size = (size_t)st.st_size;
    buf = malloc(size ? size : 1);
    if (!buf) {
        rc = err_set(err, ERR_NOMEM, "%s: out of memory reading %zu bytes", path, size);
        goto fail;
    }
    while (got < size) {
        ssize_t k = read(fd, buf + got, size - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            rc = err_set(err, ERR_IO, "%s: %s", path, strerror(errno));
            goto fail;
        }
        if (k == 0)
            break; /* the file shrank: decode what is there */
        got += (size_t)k;
    }
    close(fd);
    fd = -1;
    rc = img_decode(out, buf, got, opts, err);
    if (rc < 0)
        err_prefix(err, "%s", path);
fail:
    if (fd >= 0)
        close(fd);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Synthetic images and JPEG encoding (tests, benchmarks)               */

int img_synthetic(struct img *out, int w, int h, uint32_t seed, struct err *err)
{
    if (!out)
        return err_set(err, ERR_INVALID_ARGUMENT, "img_synthetic: no output");
    memset(out, 0, sizeof *out);
    if (w < 1 || h < 1 || (uint64_t)w * (uint64_t)h > IMG_DEFAULT_MAX_PIXELS)
        return err_set(err, ERR_INVALID_ARGUMENT, "img_synthetic: bad size %dx%d", w, h);
    out->rgb = malloc((size_t)w * (size_t)h * 3);
    if (!out->rgb)
        return err_set(err, ERR_NOMEM, "out of memory for a %dx%d image", w, h);
    out->w = out->full_w = w;
    out->h = out->full_h = h;
    uint32_t s = seed * 2654435761u + 0x9e3779b9u;
    int cx = w / 3, cy = h / 2, r2 = (w < h ? w : h) / 4;
    r2 *= r2;
    uint8_t *p = out->rgb;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++, p += 3) {
            s ^= s << 13; /* xorshift32 noise */
            s ^= s >> 17;
            s ^= s << 5;
            int noise = (int)(s & 15) - 8;
            int check = ((x >> 6) + (y >> 6)) & 1 ? 24 : -24;
            int disc = (x - cx) * (x - cx) + (y - cy) * (y - cy) < r2 ? 60 : 0;
            int v[3] = {30 + (int)(180LL * x / w) + check + noise,
                        30 + (int)(180LL * y / h) - check + noise + disc,
                        200 - (int)(150LL * (x + y) / (w + h)) + noise - disc};
            for (int c = 0; c < 3; c++)
                p[c] = (uint8_t)(v[c] < 0 ? 0 : v[c] > 255 ? 255 : v[c]);
        }
    return 0;
}

struct jdst {
    struct jpeg_destination_mgr pub; /* first: libjpeg hands back this pointer */
    uint8_t *buf;                    /* output, grown by doubling */
    size_t cap, len;                 /* allocated, used once finished */
};

static void jdst_init(j_compress_ptr c)
{
    struct jdst *d = (struct jdst *)c->dest;
    d->cap = 1 << 16;
    d->buf = malloc(d->cap);
    if (!d->buf)
        ERREXIT(c, JERR_OUT_OF_MEMORY);
    d->pub.next_output_byte = d->buf;
    d->pub.free_in_buffer = d->cap;
}

static boolean jdst_grow(j_compress_ptr c)
{
    struct jdst *d = (struct jdst *)c->dest;
    uint8_t *p = realloc(d->buf, d->cap * 2);
    if (!p)
        ERREXIT(c, JERR_OUT_OF_MEMORY);
    d->buf = p;
    d->pub.next_output_byte = p + d->cap; /* libjpeg filled the whole buffer */
    d->pub.free_in_buffer = d->cap;
    d->cap *= 2;
    return TRUE;
}

static void jdst_term(j_compress_ptr c)
{
    struct jdst *d = (struct jdst *)c->dest;
    d->len = d->cap - d->pub.free_in_buffer;
}

struct jenc {
    struct jpeg_compress_struct cinfo; /* libjpeg state */
    struct jerr jerr;                  /* error manager */
    struct jdst dst;                   /* memory destination */
    int created;                       /* cinfo needs destroying */
    uint8_t *app1;                     /* "Exif\0\0" + payload */
};

static int jpeg_encode_run(struct jenc *s, const struct img *im, int quality,
                           const uint8_t *exif, size_t exif_n)
{
    j_compress_ptr c = &s->cinfo;
    jpeg_create_compress(c);
    s->created = 1;
    s->dst.pub.init_destination = jdst_init;
    s->dst.pub.empty_output_buffer = jdst_grow;
    s->dst.pub.term_destination = jdst_term;
    c->dest = &s->dst.pub;
    c->image_width = (JDIMENSION)im->w;
    c->image_height = (JDIMENSION)im->h;
    c->input_components = 3;
    c->in_color_space = JCS_RGB;
    jpeg_set_defaults(c);
    jpeg_set_quality(c, quality, TRUE);
    jpeg_start_compress(c, TRUE);
    if (exif) {
        memcpy(s->app1, "Exif\0\0", 6);
        memcpy(s->app1 + 6, exif, exif_n);
        jpeg_write_marker(c, JPEG_APP0 + 1, s->app1, (unsigned)(exif_n + 6));
    }
    while (c->next_scanline < c->image_height) {
        JSAMPROW row = im->rgb + (size_t)c->next_scanline * (size_t)im->w * 3;
        jpeg_write_scanlines(c, &row, 1);
    }
    jpeg_finish_compress(c);
    return 0;
}

int img_encode_jpeg(const struct img *im, int quality, const uint8_t *exif, size_t exif_n,
                    uint8_t **out, size_t *out_n, struct err *err)
{
    if (!out || !out_n || !im || !im->rgb || im->w < 1 || im->h < 1 ||
        im->w > JPEG_MAX_DIMENSION || im->h > JPEG_MAX_DIMENSION || quality < 1 ||
        quality > 100 || exif_n > 65000)
        return err_set(err, ERR_INVALID_ARGUMENT, "img_encode_jpeg: bad arguments");
    *out = NULL;
    *out_n = 0;
    struct jenc *s = calloc(1, sizeof *s);
    if (!s)
        return err_set(err, ERR_NOMEM, "out of memory encoding JPEG");
    if (exif && !(s->app1 = malloc(exif_n + 6))) {
        free(s);
        return err_set(err, ERR_NOMEM, "out of memory encoding JPEG");
    }
    jerr_init(&s->jerr);
    s->cinfo.err = &s->jerr.pub;
    int rc;
    if (setjmp(s->jerr.jb))
        rc = err_set(err, s->jerr.code, "%s", s->jerr.msg);
    else
        rc = jpeg_encode_run(s, im, quality, exif, exif_n);
    if (s->created)
        jpeg_destroy_compress(&s->cinfo);
    if (rc == 0) {
        *out = s->dst.buf;
        *out_n = s->dst.len;
    } else {
        free(s->dst.buf);
    }
    free(s->app1);
    free(s);
    return rc;
}
