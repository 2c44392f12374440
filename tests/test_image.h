/* test_image.h - helpers shared by test_image.c and test_image_formats.c:
 * byte writers, a TIFF (EXIF) block maker and a decode that must leave no
 * pixels behind when it fails. Static inline: each test is its own
 * program. */
#ifndef IMGSEARCH_TEST_IMAGE_H
#define IMGSEARCH_TEST_IMAGE_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>

#include "image/image.h"
#include "test.h"

static inline void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8),
    p[3] = (uint8_t)v;
}

static inline void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16),
    p[3] = (uint8_t)(v >> 24);
}

/* A TIFF block (no "Exif\0\0") whose IFD0 holds a decoy tag and then the
 * orientation with the given type; le picks the byte order. Returns size. */
static inline size_t make_tiff(uint8_t *b, int le, unsigned orient, unsigned type)
{
    memset(b, 0, 64);
#define P16(off, v)                                                                       \
    do {                                                                                  \
        unsigned v_ = (v);                                                                \
        b[(off) + (le ? 0 : 1)] = (uint8_t)v_;                                            \
        b[(off) + (le ? 1 : 0)] = (uint8_t)(v_ >> 8);                                     \
    } while (0)
#define P32(off, v)                                                                       \
    do {                                                                                  \
        if (le)                                                                           \
            put_le32(b + (off), (v));                                                     \
        else                                                                              \
            put_be32(b + (off), (v));                                                     \
    } while (0)
    b[0] = b[1] = le ? 'I' : 'M';
    P16(2, 42);
    P32(4, 8);  /* IFD0 at 8 */
    P16(8, 2);  /* two entries */
    P16(10, 0x010F); /* Make, ASCII, 4 bytes inline: decoy */
    P16(12, 2);
    P32(14, 4);
    memcpy(b + 18, "abc", 4);
    P16(22, 0x0112);
    P16(24, type);
    P32(26, 1);
    if (type == 3)
        P16(30, orient);
    else if (type == 4)
        P32(30, orient);
    else
        b[30] = (uint8_t)orient;
    P32(34, 0); /* no next IFD */
#undef P16
#undef P32
    return 38;
}

static inline int decode_err(const uint8_t *b, size_t n, const struct img_decode_opts *o,
                      struct err *e)
{
    struct img im = {0};
    err_clear(e);
    int rc = img_decode(&im, b, n, o, e);
    CHECK(rc == 0 || im.rgb == NULL);
    img_free(&im);
    return rc;
}

#endif
