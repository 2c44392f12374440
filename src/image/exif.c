/* exif.c - the EXIF orientation tag and the pixel transform it asks for.
 *
 * Design:
 * 1. Only IFD0's Orientation (0x0112) is read: it is all Pillow's
 *    ImageOps.exif_transpose looks at. The TIFF structure is parsed by hand
 *    in both byte orders; every offset is checked against the block length
 *    before it is read, and anything odd means "no orientation" (1), never
 *    an error: a broken EXIF block must not make a good image fail.
 * 2. Like Pillow, the value counts only when it is a single BYTE, SHORT or
 *    LONG in 1..8.
 * 3. The transform is one copy through an affine index map (source offset
 *    = base + x*step_x + y*step_y), the same loop for all eight cases.
 *
 * Reference: TIFF 6.0 (header, IFD entries), EXIF 2.32 section 4.6.4
 * (Orientation), Pillow's ImageOps.exif_transpose (which transpose per value).
 */
#include "image/image.h"

#include <stdlib.h>
#include <string.h>

static unsigned rd16(const uint8_t *p, int le)
{
    return le ? (unsigned)p[0] | (unsigned)p[1] << 8
              : (unsigned)p[0] << 8 | (unsigned)p[1];
}

static uint32_t rd32(const uint8_t *p, int le)
{
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                    (uint32_t)p[3] << 24
              : (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
                    (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

int img_exif_orientation(const uint8_t *data, size_t n)
{
    if (!data)
        return 1;
    if (n >= 6 && memcmp(data, "Exif\0\0", 6) == 0) {
        data += 6;
        n -= 6;
    }
    if (n < 8)
        return 1;
    int le;
    if (data[0] == 'I' && data[1] == 'I')
        le = 1;
    else if (data[0] == 'M' && data[1] == 'M')
        le = 0;
    else
        return 1;
    if (rd16(data + 2, le) != 42)
        return 1;
    uint32_t ifd = rd32(data + 4, le);
    if (ifd > n || n - ifd < 2)
        return 1;
    unsigned count = rd16(data + ifd, le);
    for (unsigned i = 0; i < count; i++) {
        size_t off = (size_t)ifd + 2 + (size_t)12 * i; /* no overflow: < 2^33 */
        if (off + 12 > n)
            return 1;
        if (rd16(data + off, le) != 0x0112)
            continue;
        unsigned type = rd16(data + off + 2, le);
        uint32_t cnt = rd32(data + off + 4, le), v;
        if (cnt != 1)
            return 1;
        if (type == 1) /* BYTE */
            v = data[off + 8];
        else if (type == 3) /* SHORT */
            v = rd16(data + off + 8, le);
        else if (type == 4) /* LONG */
            v = rd32(data + off + 8, le);
        else
            return 1;
        return v >= 1 && v <= 8 ? (int)v : 1;
    }
    return 1;
}

int img_apply_orientation(struct img *im, int o, struct err *err)
{
    if (o < 2 || o > 8 || !im || !im->rgb)
        return 0;
    const ptrdiff_t W = im->w, H = im->h;
    const int swap = o >= 5;
    const ptrdiff_t ow = swap ? H : W, oh = swap ? W : H;
    /* Source pixel index for output (x, y) is base + x*sx + y*sy. */
    ptrdiff_t base, sx, sy;
    switch (o) {
    case 2: base = W - 1;             sx = -1;  sy = W;  break; /* (W-1-x, y) */
    case 3: base = (H - 1) * W + W - 1; sx = -1; sy = -W; break; /* (W-1-x, H-1-y) */
    case 4: base = (H - 1) * W;       sx = 1;   sy = -W; break; /* (x, H-1-y) */
    case 5: base = 0;                 sx = W;   sy = 1;  break; /* (y, x) */
    case 6: base = (H - 1) * W;       sx = -W;  sy = 1;  break; /* (y, H-1-x) */
    case 7: base = (H - 1) * W + W - 1; sx = -W; sy = -1; break; /* (W-1-y, H-1-x) */
    default: base = W - 1;            sx = W;   sy = -1; break; /* 8: (W-1-y, x) */
    }
    uint8_t *dst = malloc((size_t)W * (size_t)H * 3);
    if (!dst)
        return err_set(err, ERR_NOMEM, "out of memory rotating a %dx%d image",
                       im->w, im->h);
    const uint8_t *src = im->rgb;
    uint8_t *d = dst;
    for (ptrdiff_t y = 0; y < oh; y++) {
        ptrdiff_t s = base + y * sy;
        for (ptrdiff_t x = 0; x < ow; x++, s += sx, d += 3) {
            const uint8_t *p = src + s * 3;
            d[0] = p[0];
            d[1] = p[1];
            d[2] = p[2];
        }
    }
    free(im->rgb);
    im->rgb = dst;
    im->w = (int)ow;
    im->h = (int)oh;
    if (swap) {
        int t = im->full_w;
        im->full_w = im->full_h;
        im->full_h = t;
    }
    return 0;
}
