/* utf8.c - strict UTF-8 checking and repair (see utf8.h).
 * Reference: RFC 3629 section 4 (the syntax of UTF-8 byte sequences). */
#include "util/utf8.h"

#include <stdlib.h>
#include <string.h>

int utf8_seq_len(const uint8_t *s, size_t n)
{
    if (n == 0)
        return 0;
    uint8_t c = s[0];
    if (c < 0x80)
        return 1;
    size_t k;
    uint8_t lo = 0x80, hi = 0xBF; /* range of the second byte (RFC 3629) */
    if (c >= 0xC2 && c <= 0xDF) {
        k = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        k = 2;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        k = 3;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (n <= k)
        return 0;
    for (size_t j = 1; j <= k; j++) {
        uint8_t d = s[j];
        if (j == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF))
            return 0;
    }
    return (int)k + 1;
}

int utf8_check(const uint8_t *s, size_t n, size_t *bad)
{
    for (size_t i = 0; i < n;) {
        int k = utf8_seq_len(s + i, n - i);
        if (!k) {
            if (bad)
                *bad = i;
            return -1;
        }
        i += (size_t)k;
    }
    return 0;
}

int utf8_valid(const char *s)
{
    return !s || utf8_check((const uint8_t *)s, strlen(s), NULL) == 0;
}

char *utf8_repair(const char *s)
{
    size_t n = strlen(s);
    char *o = malloc(3 * n + 1); /* each bad byte grows to 3 */
    if (!o)
        return NULL;
    const uint8_t *p = (const uint8_t *)s;
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        int k = utf8_seq_len(p + i, n - i);
        if (k) {
            memcpy(o + w, p + i, (size_t)k);
            w += (size_t)k;
            i += (size_t)k;
        } else {
            memcpy(o + w, "\xEF\xBF\xBD", 3);
            w += 3;
            i++;
        }
    }
    o[w] = 0;
    return o;
}
