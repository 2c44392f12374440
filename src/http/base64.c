/* base64.c - base64 decoding and encoding (RFC 4648 sections 4 and 5).
 *
 * 1. One table maps both alphabets ('+' '/' and '-' '_') so a client may
 *    send either; whitespace is skipped because MIME encoders wrap lines.
 * 2. Padding is optional, but when present it must end the input and the
 *    unused bits of the last group must be zero (RFC 4648 section 3.5), so
 *    one byte string has one accepted spelling per alphabet.
 * 3. A "data:...;base64," prefix (RFC 2397) is dropped: it is what
 *    FileReader.readAsDataURL gives a web page.
 */
#include "http/base64.h"

#include <stdlib.h>
#include <string.h>

enum { B64_BAD = 0xff, B64_SPACE = 0xfe, B64_PAD = 0xfd };

static uint8_t map(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return (uint8_t)(c - 'A');
    if (c >= 'a' && c <= 'z')
        return (uint8_t)(c - 'a' + 26);
    if (c >= '0' && c <= '9')
        return (uint8_t)(c - '0' + 52);
    switch (c) {
    case '+': case '-': return 62;
    case '/': case '_': return 63;
    case '=': return B64_PAD;
    case ' ': case '\t': case '\r': case '\n': return B64_SPACE;
    default: return B64_BAD;
    }
}

size_t http_base64_decoded_max(size_t n)
{
    return n / 4 * 3 + 3;
}

/* Length of a "data:<type>;base64," prefix, 0 when there is none. */
static size_t data_url_prefix(const char *in, size_t n)
{
    if (n < 5 || strncmp(in, "data:", 5) != 0)
        return 0;
    const char *comma = memchr(in, ',', n < 512 ? n : 512);
    if (!comma)
        return 0;
    size_t p = (size_t)(comma - in);
    return p >= 12 && !strncmp(comma - 7, ";base64", 7) ? p + 1 : 0;
}

int http_base64_decode(const char *in, size_t n, uint8_t *out, size_t *out_n,
                       struct err *err)
{
    size_t i = data_url_prefix(in, n), o = 0;
    uint32_t acc = 0;
    int have = 0, pads = 0;
    for (; i < n; i++) {
        uint8_t v = map((unsigned char)in[i]);
        if (v == B64_SPACE)
            continue;
        if (v == B64_BAD)
            return err_set(err, ERR_INVALID_ARGUMENT,
                           "base64: character %zu (0x%02x) is not in the alphabet", i,
                           (unsigned char)in[i]);
        if (v == B64_PAD) {
            pads++;
            continue;
        }
        if (pads)
            return err_set(err, ERR_INVALID_ARGUMENT,
                           "base64: data after '=' padding at character %zu", i);
        acc = acc << 6 | v;
        if (++have == 4) {
            out[o++] = (uint8_t)(acc >> 16);
            out[o++] = (uint8_t)(acc >> 8);
            out[o++] = (uint8_t)acc;
            acc = 0;
            have = 0;
        }
    }
    /* have: characters of the last, partial group (0, 2 or 3 are valid) */
    if (have == 1)
        return err_set(err, ERR_INVALID_ARGUMENT,
                       "base64: the input ends with a lone character (truncated?)");
    if (pads && (have == 0 || have + pads != 4))
        return err_set(err, ERR_INVALID_ARGUMENT, "base64: wrong '=' padding");
    if (have == 2) {
        if (acc & 0xf)
            return err_set(err, ERR_INVALID_ARGUMENT, "base64: non-zero padding bits");
        out[o++] = (uint8_t)(acc >> 4);
    } else if (have == 3) {
        if (acc & 0x3)
            return err_set(err, ERR_INVALID_ARGUMENT, "base64: non-zero padding bits");
        out[o++] = (uint8_t)(acc >> 10);
        out[o++] = (uint8_t)(acc >> 2);
    }
    *out_n = o;
    return 0;
}

int http_base64_decode_alloc(const char *in, size_t n, size_t max, uint8_t **out,
                             size_t *out_n, struct err *err)
{
    *out = NULL;
    *out_n = 0;
    /* whitespace only shrinks the output, so n * 3 / 4 bounds it */
    if (n / 4 * 3 > max + 3)
        return err_set(err, ERR_TOO_LARGE,
                       "base64 image of %zu characters is over the limit of %zu bytes", n, max);
    uint8_t *buf = malloc(http_base64_decoded_max(n) + 1);
    if (!buf)
        return err_set(err, ERR_NOMEM, "out of memory for a %zu-character base64 image", n);
    int rc = http_base64_decode(in, n, buf, out_n, err);
    if (!rc && *out_n > max)
        rc = err_set(err, ERR_TOO_LARGE, "base64 image of %zu bytes is over the limit of %zu",
                     *out_n, max);
    if (rc) {
        free(buf);
        *out_n = 0;
        return rc;
    }
    *out = buf;
    return 0;
}

size_t http_base64_encode(const uint8_t *in, size_t n, char *out)
{
    static const char abc[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = abc[v >> 18];
        out[o++] = abc[v >> 12 & 63];
        out[o++] = abc[v >> 6 & 63];
        out[o++] = abc[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = abc[v >> 18];
        out[o++] = abc[v >> 12 & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = abc[v >> 18];
        out[o++] = abc[v >> 12 & 63];
        out[o++] = abc[v >> 6 & 63];
        out[o++] = '=';
    }
    out[o] = 0;
    return o;
}
