/* image.h - image bytes -> packed RGB8 pixels (decode, EXIF orientation).
 *
 * Formats: JPEG (libjpeg-turbo), PNG (libpng), WebP (libwebp, still images),
 * GIF (giflib, first frame). The format comes from the magic bytes, never
 * from a file name. Every decoder checks width * height against a pixel
 * limit read from the header before it allocates a pixel buffer. The pixels
 * are what Pillow 9.4 gives for Image.open + ImageOps.exif_transpose + alpha
 * composited over white + convert("RGB") (see decode.c for the details).
 *
 * All functions are thread-safe: no global mutable state.
 */
#ifndef IMGSEARCH_IMAGE_H
#define IMGSEARCH_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

enum img_format {
    IMG_FMT_UNKNOWN, /* none of the formats below */
    IMG_FMT_JPEG,    /* FF D8 FF */
    IMG_FMT_PNG,     /* 89 'PNG' 0D 0A 1A 0A */
    IMG_FMT_WEBP,    /* 'RIFF' size 'WEBP' */
    IMG_FMT_GIF,     /* 'GIF87a' or 'GIF89a' */
};

/* A decoded image. Zero it before first use ({0}); img_free releases it. */
struct img {
    int w, h;             /* size in pixels, after EXIF orientation */
    uint8_t *rgb;         /* packed RGB8, row-major, w*h*3 bytes, owned */
    enum img_format fmt;  /* format it was decoded from (UNKNOWN if built) */
    int full_w, full_h;   /* size at full scale (after orientation); differs
                             from w, h only when a JPEG was DCT-scaled */
};

#define IMG_DEFAULT_MAX_PIXELS 50000000ull
#define IMG_MAX_FILE_BYTES (256u << 20) /* img_load_file refuses larger files */

struct img_decode_opts {
    uint64_t max_pixels; /* width*height limit; 0 = IMG_DEFAULT_MAX_PIXELS */
    int min_side;        /* 0 = full-size decode. Else a JPEG may be decoded
                            with libjpeg-turbo DCT scaling (1/2, 1/4, 1/8):
                            the smallest scale whose decoded short side stays
                            >= 2*min_side (Pillow's draft rule). Other
                            formats always decode at full size. */
};

/* Format from the magic bytes; IMG_FMT_UNKNOWN when none match (also for
 * n too small). */
enum img_format img_sniff(const uint8_t *data, size_t n);

/* "jpeg", "png", "webp", "gif", "unknown". Static strings. */
const char *img_format_name(enum img_format f);

/* "image/jpeg", "image/png", "image/webp", "image/gif",
 * "application/octet-stream" for unknown. Static strings. */
const char *img_format_mime(enum img_format f);

/* Decodes n bytes into *out (which must not hold pixels: zeroed or freed).
 * opts may be NULL (defaults). EXIF orientation (JPEG APP1, PNG eXIf, WebP
 * EXIF) is applied; alpha is composited over white; grayscale is replicated
 * and palettes expanded.
 * Errors (out stays empty):
 *   -ERR_UNSUPPORTED_FORMAT  not an image we know (0 bytes, text, animated
 *                            WebP, JPEG with an odd number of components)
 *   -ERR_DECODE              truncated or corrupt data (a truncated JPEG is
 *                            an error, never a gray-filled image)
 *   -ERR_TOO_LARGE           width*height over opts->max_pixels, found from
 *                            the header before the pixels are allocated
 *   -ERR_NOMEM               allocation failed
 * Messages do not name a file: callers prefix it (err_prefix). */
int img_decode(struct img *out, const uint8_t *data, size_t n,
               const struct img_decode_opts *opts, struct err *err);

/* Reads the file at path (refusing files over IMG_MAX_FILE_BYTES with
 * -ERR_TOO_LARGE; -ERR_BAD_PATH when missing, unreadable or not a regular file,
 * -ERR_IO when reading fails)
 * and decodes it with img_decode. Every message starts with the path. */
int img_load_file(struct img *out, const char *path,
                  const struct img_decode_opts *opts, struct err *err);

/* Frees the pixels and zeroes *im. Safe on a zeroed struct, twice, on NULL. */
void img_free(struct img *im);

/* --- EXIF orientation (exif.c) --- */

/* The orientation tag (0x0112) of IFD0 of an EXIF block: a TIFF structure
 * ("II*\0" or "MM\0*"), optionally preceded by "Exif\0\0". Returns 1..8, or
 * 1 when the block is malformed or has no valid orientation. Every read is
 * bounds-checked against n. */
int img_exif_orientation(const uint8_t *data, size_t n);

/* Turns im upright for EXIF orientation o, as PIL's ImageOps.exif_transpose:
 * 2 mirror left-right, 3 rotate 180, 4 mirror top-bottom, 5 transpose,
 * 6 rotate 90 clockwise, 7 transverse, 8 rotate 90 counter-clockwise.
 * 5..8 swap w and h (and full_w, full_h). Other values change nothing.
 * Replaces im->rgb with a new buffer; -ERR_NOMEM leaves im unchanged. */
int img_apply_orientation(struct img *im, int o, struct err *err);

/* --- Synthetic images (for tests and benchmarks) --- */

/* Fills *out (empty) with a deterministic w x h photo-like pattern:
 * gradients, edges and mild noise from seed. -ERR_INVALID_ARGUMENT for
 * sizes < 1 or over IMG_DEFAULT_MAX_PIXELS, -ERR_NOMEM. */
int img_synthetic(struct img *out, int w, int h, uint32_t seed, struct err *err);

/* Encodes im as a baseline JPEG (4:2:0, quality 1..100) into a malloc'd
 * buffer *out of *out_n bytes (the caller frees it). When exif is not NULL,
 * an APP1 segment "Exif\0\0" + exif[0..exif_n) is written after the JFIF
 * header (exif_n <= 65000). */
int img_encode_jpeg(const struct img *im, int quality, const uint8_t *exif,
                    size_t exif_n, uint8_t **out, size_t *out_n,
                    struct err *err);

#endif
