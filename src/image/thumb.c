/* thumb.c - JPEG thumbnails (see thumb.h).
 *
 * 1. Geometry: the short side becomes N, the long side keeps the ratio
 *    (rounded to nearest, at least 1); then, if the long side passes
 *    IMG_THUMB_MAX_ASPECT * N, both shrink so that it is exactly that. An
 *    image whose short side is N or less is kept at its size (capped the
 *    same way): a thumbnail never enlarges.
 * 2. Decode: img_decode with min_side N, so a JPEG is DCT-scaled while its
 *    short side stays >= 2N (Pillow's draft rule); the bicubic resampler
 *    then does the rest (antialiased, Pillow's filter).
 * 3. Encode: baseline 4:2:0 JPEG at IMG_THUMB_QUALITY, no metadata (the
 *    orientation is already applied to the pixels).
 */
#include "image/thumb.h"

#include <stdlib.h>

#include "image/preprocess.h"

int img_thumb_geometry(int w, int h, int n, int *tw, int *th, struct err *err)
{
    if (n < IMG_THUMB_MIN || n > IMG_THUMB_MAX)
        return err_set(err, ERR_INVALID_ARGUMENT, "thumbnail size %d (%d..%d)", n, IMG_THUMB_MIN,
                       IMG_THUMB_MAX);
    if (w < 1 || h < 1)
        return err_set(err, ERR_INVALID_ARGUMENT, "image size %dx%d", w, h);
    int64_t s = w < h ? w : h, l = w < h ? h : w;
    int64_t ns = s > n ? n : s;
    int64_t nl = (l * ns * 2 + s) / (2 * s); /* l * ns / s, rounded */
    int64_t cap = (int64_t)IMG_THUMB_MAX_ASPECT * n;
    if (nl > cap) {
        ns = (s * cap * 2 + l) / (2 * l);
        nl = cap;
    }
    if (ns < 1)
        ns = 1;
    if (nl < 1)
        nl = 1;
    *tw = (int)(w < h ? ns : nl);
    *th = (int)(w < h ? nl : ns);
    return 0;
}

int img_thumb_jpeg(const uint8_t *data, size_t n, int size, const struct img_decode_opts *opts,
                   uint8_t **out, size_t *out_n, int *tw, int *th, struct err *err)
{
    struct img im = {0}, small = {0};
    *out = NULL;
    *out_n = 0;
    int w = 0, h = 0, rc;
    if ((rc = img_thumb_geometry(1, 1, size, &w, &h, err)))
        return rc;
    struct img_decode_opts o = {.max_pixels = opts ? opts->max_pixels : 0, .min_side = size};
    if ((rc = img_decode(&im, data, n, &o, err)))
        goto fail;
    if ((rc = img_thumb_geometry(im.w, im.h, size, &w, &h, err)))
        goto fail;
    const struct img *src = &im;
    if (w != im.w || h != im.h) {
        small.w = w;
        small.h = h;
        small.fmt = im.fmt;
        if (!(small.rgb = malloc((size_t)w * (size_t)h * 3))) {
            rc = err_set(err, ERR_NOMEM, "out of memory for a %dx%d thumbnail", w, h);
            goto fail;
        }
        if ((rc = img_resize_bicubic(im.rgb, im.w, im.h, small.rgb, w, h, err)))
            goto fail;
        src = &small;
    }
    if ((rc = img_encode_jpeg(src, IMG_THUMB_QUALITY, NULL, 0, out, out_n, err)))
        goto fail;
    if (tw)
        *tw = w;
    if (th)
        *th = h;
fail:
    img_free(&small);
    img_free(&im);
    return rc;
}
