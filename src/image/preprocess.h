/* preprocess.h - RGB8 pixels -> CLIP model input.
 *
 * Matches torchvision 0.14 + Pillow 9.4 as OpenAI's CLIP uses them:
 * Resize(224, BICUBIC) on 8-bit pixels, CenterCrop(224), ToTensor,
 * Normalize(mean, std). See shared/reference/README.md for the facts.
 * Thread-safe; no global state.
 */
#ifndef IMGSEARCH_PREPROCESS_H
#define IMGSEARCH_PREPROCESS_H

#include <stdint.h>

#include "image/image.h"
#include "util/err.h"

struct img_prep_cfg {
    int resize_short; /* the shortest edge becomes this (224) */
    int crop;         /* square center crop side (224), <= resize_short */
    float mean[3];    /* per-channel mean, in [0,1] units (RGB order) */
    float std[3];     /* per-channel standard deviation (RGB order) */
};

/* 224 / 224 with CLIP's mean (0.48145466, 0.4578275, 0.40821073) and std
 * (0.26862954, 0.26130258, 0.27577711). */
void img_prep_cfg_clip_default(struct img_prep_cfg *c);

/* Geometry of img_preprocess for a w x h image: the resized size *nw x *nh
 * (shortest side -> resize_short, the other int(resize_short*long/short),
 * truncated; a square stays square) and the crop origin *left, *top
 * (Python round() of (size - crop) / 2, halves to even). Any output pointer
 * may be NULL. -ERR_INVALID_ARGUMENT for a bad cfg or size,
 * -ERR_TOO_LARGE when the long side would not fit an int (aspect ratio over
 * about 9.5 million to 1). */
int img_prep_geometry(int w, int h, const struct img_prep_cfg *cfg, int *nw, int *nh,
                      int *left, int *top, struct err *err);

/* Pillow-exact antialiased bicubic resize (Image.resize(..., BICUBIC) on an
 * RGB image): src is w x h packed RGB8, dst nw x nh packed RGB8 (caller's
 * buffer). Separable: the horizontal pass runs only when the width changes,
 * its result rounded and clipped to 8 bits, then the vertical pass when the
 * height changes; weights in 22-bit fixed point. Same size copies.
 * -ERR_INVALID_ARGUMENT for sizes < 1 or NULL buffers, -ERR_NOMEM. */
int img_resize_bicubic(const uint8_t *src, int w, int h, uint8_t *dst, int nw, int nh,
                       struct err *err);

/* The CLIP input for im: resize (img_prep_geometry), center crop, /255,
 * (x - mean) / std in float32 as torchvision computes it. out is
 * float[3 * crop * crop], CHW (all R, then G, then B). Only the crop window
 * of the resize is computed; the values equal resizing the whole image and
 * cropping. cfg NULL means img_prep_cfg_clip_default. Errors as
 * img_prep_geometry, -ERR_INVALID_ARGUMENT for a zero std, -ERR_NOMEM. */
int img_preprocess(const struct img *im, const struct img_prep_cfg *cfg, float *out,
                   struct err *err);

/* Bytes -> img_decode -> img_preprocess. When opts->min_side is not 0 the
 * decode may use JPEG DCT scaling with min_side = cfg->resize_short (faster,
 * not bit-exact); opts may be NULL (full-size decode, default pixel limit),
 * cfg NULL means img_prep_cfg_clip_default.
 * Errors are img_decode's and img_preprocess's. */
int img_decode_preprocess(const uint8_t *data, size_t n, const struct img_decode_opts *opts,
                          const struct img_prep_cfg *cfg, float *out, struct err *err);

#endif
