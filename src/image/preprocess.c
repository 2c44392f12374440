/* preprocess.c - CLIP's image preprocessing, bit-exact with Pillow 9.4 and
 * torchvision 0.14.
 *
 * Design:
 * 1. The resize is Pillow's ImagingResample for 8-bit RGB with the bicubic
 *    filter (a = -0.5, support 2), written from the description in
 *    shared/reference/README.md: per output pixel a run of input pixels and
 *    weights, computed in double, normalised by their sum, turned into
 *    22-bit fixed point; a horizontal pass (only when the width changes)
 *    rounded and clipped to 8 bits, then a vertical pass. The double
 *    arithmetic is written in Pillow's order of operations (center =
 *    (i + 0.5) * scale, argument (j - center + 0.5) * (1 / filterscale)) so
 *    that every fixed-point weight, hence every output byte, is the same.
 * 2. Every output pixel depends only on its own weights, so img_preprocess
 *    computes just the crop window of the resized image: the horizontal
 *    pass for the crop's columns, over the input rows the crop's output rows
 *    read. Bytes are identical to a full resize followed by a crop (a test
 *    checks this against img_resize_bicubic), and an extreme aspect ratio
 *    costs no more memory than the crop.
 * 3. Weights are precomputed once per output column and row (integer
 *    multiply-adds in the loops, no per-pixel allocation). The vertical pass
 *    accumulates whole rows (one int32 per channel value) so it vectorises.
 * 4. Normalisation is a 256-entry float table per channel computed with the
 *    float32 operations torchvision performs ((v / 255 - mean) / std).
 *
 * References: Pillow 9.4 libImaging/Resample.c behaviour (as described in
 * the reference README), torchvision 0.14 transforms (Resize, CenterCrop,
 * ToTensor, Normalize).
 */
#include "image/preprocess.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PREC_BITS 22 /* Pillow: 32 - 8 - 2 */

void img_prep_cfg_clip_default(struct img_prep_cfg *c)
{
    static const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
    static const float std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    c->resize_short = 224;
    c->crop = 224;
    memcpy(c->mean, mean, sizeof mean);
    memcpy(c->std, std, sizeof std);
}

/* Keys' cubic with a = -0.5, as Pillow's bicubic_filter. */
static double bicubic(double x)
{
    const double a = -0.5;
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0)
        return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* Weights of outputs [o0, o0 + on) of a resize of in samples to out. */
struct coeffs {
    int stride;    /* allocated taps per output (>= every count) */
    int *first;    /* first input sample of each output */
    int *count;    /* number of taps of each output */
    int32_t *k;    /* on * stride fixed-point weights */
};

static void coeffs_free(struct coeffs *c)
{
    free(c->first);
    free(c->count);
    free(c->k);
    memset(c, 0, sizeof *c);
}

static int coeffs_make(struct coeffs *c, int in, int out, int o0, int on, struct err *err)
{
    memset(c, 0, sizeof *c);
    double scale = (double)in / out;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * filterscale;
    double ss = 1.0 / filterscale;
    /* Pillow sizes the window ceil(support)*2+1; no output uses more than
     * in taps either, which bounds memory for huge reductions. */
    double ks = ceil(support) * 2 + 1;
    int stride = ks < in ? (int)ks : in;
    c->stride = stride;
    c->first = malloc(sizeof *c->first * (size_t)on);
    c->count = malloc(sizeof *c->count * (size_t)on);
    c->k = malloc(sizeof *c->k * (size_t)on * (size_t)stride);
    double *w = malloc(sizeof *w * (size_t)stride);
    if (!c->first || !c->count || !c->k || !w) {
        free(w);
        coeffs_free(c);
        return err_set(err, ERR_NOMEM, "out of memory for resize weights (%d -> %d)", in, out);
    }
    for (int i = 0; i < on; i++) {
        double center = ((double)(o0 + i) + 0.5) * scale;
        /* Pillow rounds the window ends with (int)(v + 0.5), truncating. */
        double lo = center - support + 0.5, hi = center + support + 0.5;
        int xmin = lo <= 0.0 ? 0 : (int)lo;
        int xmax = hi >= (double)in ? in : (int)hi;
        int n = xmax - xmin;
        if (n < 0)
            n = 0;
        if (n > stride)
            n = stride;
        double sum = 0.0;
        for (int x = 0; x < n; x++) {
            w[x] = bicubic(((double)(x + xmin) - center + 0.5) * ss);
            sum += w[x];
        }
        int32_t *k = c->k + (size_t)i * (size_t)stride;
        for (int x = 0; x < n; x++) {
            double v = sum != 0.0 ? w[x] / sum : w[x];
            k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PREC_BITS))
                         : (int32_t)(0.5 + v * (1 << PREC_BITS));
        }
        c->first[i] = xmin;
        c->count[i] = n;
    }
    free(w);
    return 0;
}

static inline uint8_t clip8(int32_t s)
{
    if (s < 0)
        return 0;
    s >>= PREC_BITS;
    return (uint8_t)(s > 255 ? 255 : s);
}

/* One row: in is a packed RGB row, out gets the c outputs' pixels. */
static void hpass_row(const uint8_t *in, const struct coeffs *c, int on, uint8_t *out)
{
    for (int i = 0; i < on; i++, out += 3) {
        const uint8_t *p = in + (size_t)c->first[i] * 3;
        const int32_t *k = c->k + (size_t)i * (size_t)c->stride;
        int32_t s0 = 1 << (PREC_BITS - 1), s1 = s0, s2 = s0;
        for (int t = 0, n = c->count[i]; t < n; t++, p += 3) {
            s0 += p[0] * k[t];
            s1 += p[1] * k[t];
            s2 += p[2] * k[t];
        }
        out[0] = clip8(s0);
        out[1] = clip8(s1);
        out[2] = clip8(s2);
    }
}

/* The window [x0, x0+cw) x [y0, y0+ch) of resizing the w x h image src to
 * nw x nh, written to dst (cw*ch*3 bytes, packed). */
static int resize_window(const uint8_t *src, int w, int h, int nw, int nh, int x0, int y0,
                         int cw, int ch, uint8_t *dst, struct err *err)
{
    const int need_h = nw != w, need_v = nh != h;
    const size_t src_stride = (size_t)w * 3, row_bytes = (size_t)cw * 3;
    struct coeffs hc = {0}, vc = {0};
    uint8_t *tmp = NULL;
    int32_t *acc = NULL;
    int rc = 0;

    if (need_h && (rc = coeffs_make(&hc, w, nw, x0, cw, err)) < 0)
        goto fail;
    if (need_v && (rc = coeffs_make(&vc, h, nh, y0, ch, err)) < 0)
        goto fail;

    /* Input rows the vertical pass reads: [r0, r1). */
    int r0 = y0, r1 = y0 + ch;
    if (need_v) {
        r0 = INT_MAX;
        r1 = 0;
        for (int j = 0; j < ch; j++) {
            if (vc.count[j] == 0)
                continue;
            if (vc.first[j] < r0)
                r0 = vc.first[j];
            if (vc.first[j] + vc.count[j] > r1)
                r1 = vc.first[j] + vc.count[j];
        }
        if (r1 <= r0)
            r0 = r1 = 0;
    }

    if (!need_v) {
        for (int j = 0; j < ch; j++) {
            const uint8_t *in = src + (size_t)(y0 + j) * src_stride;
            uint8_t *out = dst + (size_t)j * row_bytes;
            if (need_h)
                hpass_row(in, &hc, cw, out);
            else
                memcpy(out, in + (size_t)x0 * 3, row_bytes);
        }
        goto fail;
    }

    /* Vertical input: the horizontal pass's rows, or src's columns. */
    const uint8_t *vin;
    size_t vstride;
    if (need_h) {
        tmp = malloc((size_t)(r1 - r0) * row_bytes + 1);
        if (!tmp) {
            rc = err_set(err, ERR_NOMEM, "out of memory resizing %dx%d to %dx%d", w, h, nw, nh);
            goto fail;
        }
        for (int r = r0; r < r1; r++)
            hpass_row(src + (size_t)r * src_stride, &hc, cw, tmp + (size_t)(r - r0) * row_bytes);
        vin = tmp;
        vstride = row_bytes;
    } else {
        vin = src + (size_t)r0 * src_stride + (size_t)x0 * 3;
        vstride = src_stride;
    }
    acc = malloc(sizeof *acc * row_bytes);
    if (!acc) {
        rc = err_set(err, ERR_NOMEM, "out of memory resizing %dx%d to %dx%d", w, h, nw, nh);
        goto fail;
    }
    for (int j = 0; j < ch; j++) {
        for (size_t i = 0; i < row_bytes; i++)
            acc[i] = 1 << (PREC_BITS - 1);
        const int32_t *k = vc.k + (size_t)j * (size_t)vc.stride;
        for (int t = 0; t < vc.count[j]; t++) {
            const uint8_t *row = vin + (size_t)(vc.first[j] + t - r0) * vstride;
            const int32_t kt = k[t];
            for (size_t i = 0; i < row_bytes; i++)
                acc[i] += row[i] * kt;
        }
        uint8_t *out = dst + (size_t)j * row_bytes;
        for (size_t i = 0; i < row_bytes; i++)
            out[i] = clip8(acc[i]);
    }
fail:
    free(acc);
    free(tmp);
    coeffs_free(&hc);
    coeffs_free(&vc);
    return rc;
}

int img_resize_bicubic(const uint8_t *src, int w, int h, uint8_t *dst, int nw, int nh,
                       struct err *err)
{
    if (!src || !dst || w < 1 || h < 1 || nw < 1 || nh < 1)
        return err_set(err, ERR_INVALID_ARGUMENT, "resize: bad size %dx%d -> %dx%d", w, h,
                       nw, nh);
    return resize_window(src, w, h, nw, nh, 0, 0, nw, nh, dst, err);
}

/* Python's round(d / 2) for d >= 0: halves go to the even neighbour. */
static int half_round_even(int d)
{
    int q = d / 2;
    if ((d & 1) && (q & 1))
        q++;
    return q;
}

int img_prep_geometry(int w, int h, const struct img_prep_cfg *cfg, int *nw, int *nh,
                      int *left, int *top, struct err *err)
{
    if (!cfg || cfg->resize_short < 1 || cfg->crop < 1 || cfg->crop > cfg->resize_short)
        return err_set(err, ERR_INVALID_ARGUMENT,
                       "preprocess: resize %d / crop %d: need 1 <= crop <= resize",
                       cfg ? cfg->resize_short : 0, cfg ? cfg->crop : 0);
    if (w < 1 || h < 1)
        return err_set(err, ERR_INVALID_ARGUMENT, "preprocess: bad image size %dx%d", w, h);
    /* torchvision: new_long = int(size * long / short). Integer division
     * gives the same value: the product stays far below 2^53. */
    const int64_t s = cfg->resize_short;
    int64_t rw, rh;
    if (w <= h) {
        rw = s;
        rh = s * h / w;
    } else {
        rh = s;
        rw = s * w / h;
    }
    if (rw > INT_MAX || rh > INT_MAX)
        return err_set(err, ERR_TOO_LARGE,
                       "image %dx%d has too extreme an aspect ratio to resize", w, h);
    if (nw)
        *nw = (int)rw;
    if (nh)
        *nh = (int)rh;
    if (left)
        *left = half_round_even((int)rw - cfg->crop);
    if (top)
        *top = half_round_even((int)rh - cfg->crop);
    return 0;
}

int img_preprocess(const struct img *im, const struct img_prep_cfg *cfg, float *out,
                   struct err *err)
{
    struct img_prep_cfg def;
    if (!cfg) {
        img_prep_cfg_clip_default(&def);
        cfg = &def;
    }
    if (!im || !im->rgb || !out)
        return err_set(err, ERR_INVALID_ARGUMENT, "preprocess: no image or no output");
    int nw, nh, left, top;
    int rc = img_prep_geometry(im->w, im->h, cfg, &nw, &nh, &left, &top, err);
    if (rc < 0)
        return rc;
    for (int c = 0; c < 3; c++)
        if (!(cfg->std[c] != 0.0f))
            return err_set(err, ERR_INVALID_ARGUMENT, "preprocess: std[%d] is 0", c);
    const int cs = cfg->crop;
    const size_t plane = (size_t)cs * (size_t)cs;
    uint8_t *px = malloc(plane * 3);
    if (!px)
        return err_set(err, ERR_NOMEM, "out of memory for a %dx%d crop", cs, cs);
    rc = resize_window(im->rgb, im->w, im->h, nw, nh, left, top, cs, cs, px, err);
    if (rc == 0) {
        /* torchvision: ToTensor's float32 v / 255, then (x - mean) / std */
        float lut[3][256];
        for (int c = 0; c < 3; c++)
            for (int v = 0; v < 256; v++) {
                float x = (float)v / 255.0f;
                x = x - cfg->mean[c];
                lut[c][v] = x / cfg->std[c];
            }
        float *r = out, *g = out + plane, *b = out + 2 * plane;
        const uint8_t *p = px;
        for (size_t i = 0; i < plane; i++, p += 3) {
            r[i] = lut[0][p[0]];
            g[i] = lut[1][p[1]];
            b[i] = lut[2][p[2]];
        }
    }
    free(px);
    return rc;
}

int img_decode_preprocess(const uint8_t *data, size_t n, const struct img_decode_opts *opts,
                          const struct img_prep_cfg *cfg, float *out, struct err *err)
{
    struct img_prep_cfg def;
    if (!cfg) {
        img_prep_cfg_clip_default(&def);
        cfg = &def;
    }
    struct img_decode_opts o = {0};
    if (opts)
        o = *opts;
    if (o.min_side)
        o.min_side = cfg->resize_short;
    struct img im = {0};
    int rc = img_decode(&im, data, n, &o, err);
    if (rc < 0)
        return rc;
    rc = img_preprocess(&im, cfg, out, err);
    img_free(&im);
    return rc;
}
