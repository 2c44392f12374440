/* thumb.h - small JPEG previews of images, made with imgsearch's own
 * decoder (image.h) and resampler (preprocess.h), encoded by libjpeg-turbo.
 *
 * A thumbnail of size N covers an N x N square: its SHORT side is N (so a
 * square grid cell cropped with CSS object-fit: cover is filled without
 * upscaling), the aspect ratio is kept, and the long side is capped at
 * IMG_THUMB_MAX_ASPECT * N (an extreme panorama is then smaller on both
 * sides). An image already smaller than that is never enlarged. Large
 * JPEGs are decoded with DCT scaling (Pillow's draft rule for min_side N),
 * which is what makes a 5640 x 3172 wallpaper cheap.
 *
 * Thread-safe; no global state.
 */
#ifndef IMGSEARCH_IMAGE_THUMB_H
#define IMGSEARCH_IMAGE_THUMB_H

#include <stddef.h>
#include <stdint.h>

#include "image/image.h"
#include "util/err.h"

#define IMG_THUMB_MIN 16         /* smallest size accepted */
#define IMG_THUMB_MAX 2048       /* largest size accepted */
#define IMG_THUMB_MAX_ASPECT 4   /* long side at most this many times N */
#define IMG_THUMB_QUALITY 80     /* JPEG quality of img_thumb_jpeg */

/* The thumbnail size for a w x h image at size n: *tw x *th (each >= 1).
 * -ERR_INVALID_ARGUMENT for n outside IMG_THUMB_MIN..IMG_THUMB_MAX or a
 * size < 1. */
int img_thumb_geometry(int w, int h, int n, int *tw, int *th, struct err *err);

/* Decodes data (n bytes, any format of image.h; opts may be NULL: default
 * pixel limit) and writes the size-`size` thumbnail as a baseline JPEG
 * into a malloc'd *out of *out_n bytes (the caller frees it); *tw, *th get
 * its size (either may be NULL). Errors are img_decode's, img_thumb_geometry's
 * and the encoder's. */
int img_thumb_jpeg(const uint8_t *data, size_t n, int size, const struct img_decode_opts *opts,
                   uint8_t **out, size_t *out_n, int *tw, int *th, struct err *err);

#endif
