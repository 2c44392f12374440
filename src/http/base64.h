/* base64.h - base64 (RFC 4648) for images sent inside JSON bodies.
 *
 * The decoder takes what browsers and HTTP clients produce: the standard
 * alphabet or the URL-safe one (- and _), with or without '=' padding,
 * line breaks and spaces anywhere (MIME-style wrapping), and an optional
 * data URL prefix ("data:image/png;base64,"). Anything else is an error
 * that says at which character the input went wrong.
 */
#ifndef IMGSEARCH_HTTP_BASE64_H
#define IMGSEARCH_HTTP_BASE64_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* Bytes needed to decode n characters (an upper bound). */
size_t http_base64_decoded_max(size_t n);

/* Decodes in[0..n) into out (room for http_base64_decoded_max(n) bytes);
 * *out_n gets the decoded length. Errors (-ERR_INVALID_ARGUMENT): a
 * character outside the alphabet, '=' before the end, a final group of one
 * character, padding bits that are not zero. */
int http_base64_decode(const char *in, size_t n, uint8_t *out, size_t *out_n,
                       struct err *err);

/* Same, into a malloc'd buffer (*out, freed by the caller). Inputs that
 * would decode to more than max bytes are ERR_TOO_LARGE before allocating. */
int http_base64_decode_alloc(const char *in, size_t n, size_t max, uint8_t **out,
                             size_t *out_n, struct err *err);

/* Standard alphabet with padding; out needs 4 * ((n + 2) / 3) + 1 bytes and
 * is NUL-terminated. Returns the length written (without the NUL). */
size_t http_base64_encode(const uint8_t *in, size_t n, char *out);

#endif
