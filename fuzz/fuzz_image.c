/* fuzz_image.c - libFuzzer target for the image decoders and preprocessing.
 *
 * Arbitrary bytes go through img_decode with a 4 MP limit (so no input can
 * ask for more than a few tens of MB); when decoding succeeds the image is
 * preprocessed to 224x224 and the output checked to be finite. A JPEG big
 * enough for DCT scaling (short side >= 448) is decoded a second time with
 * min_side 224, so the scaled path is fuzzed too. Failures must leave no
 * pixels and carry a code and a message. Seeds: fuzz/corpus/image/.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "image/image.h"
#include "image/preprocess.h"

#define MAX_PIXELS 4000000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_preprocess(const struct img *im)
{
    const size_t n = 3 * 224 * 224;
    float *out = malloc(sizeof *out * n);
    struct err e = {0};
    if (out && img_preprocess(im, NULL, out, &e) == 0) {
        for (size_t i = 0; i < n; i++)
            if (!isfinite(out[i]))
                abort();
    }
    free(out);
}

/* Decodes with min_side; returns 1 when an image came back. */
static int decode_once(const uint8_t *data, size_t size, int min_side, struct img *im)
{
    struct img_decode_opts o = {MAX_PIXELS, min_side};
    struct err e = {0};
    if (img_decode(im, data, size, &o, &e) != 0) {
        if (im->rgb || e.code == 0 || !e.msg[0])
            abort(); /* failures leave no pixels and always say why */
        return 0;
    }
    if (!im->rgb || im->w < 1 || im->h < 1 ||
        (uint64_t)im->w * (uint64_t)im->h > MAX_PIXELS)
        abort();
    check_preprocess(im);
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct img im = {0};
    if (!decode_once(data, size, 0, &im))
        return 0;
    int short_side = im.w < im.h ? im.w : im.h;
    enum img_format fmt = im.fmt;
    img_free(&im);
    if (fmt == IMG_FMT_JPEG && short_side >= 448) {
        decode_once(data, size, 224, &im);
        img_free(&im);
    }
    return 0;
}
