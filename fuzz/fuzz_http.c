/* fuzz_http.c - libFuzzer target for the request parsers of the HTTP
 * service: base64 (decode, and encode/decode round trip), percent-decoding,
 * the router on arbitrary method/path pairs, Content-Type classification,
 * filters and bearer tokens. The first byte picks the method; the rest is
 * split at the first NUL into a path and a header value. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/base64.h"
#include "http/parse.h"
#include "http/router.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", ""};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 1 << 16)
        return 0;
    struct err e;
    const char *in = (const char *)data + 1;
    size_t n = size - 1;

    /* base64: decode never overruns its bound; encoding then decoding any
     * bytes gives them back */
    uint8_t *out = malloc(http_base64_decoded_max(n) + 1);
    size_t on = 0;
    if (out && http_base64_decode(in, n, out, &on, &e) == 0 &&
        on > http_base64_decoded_max(n))
        abort();
    char *enc = malloc(4 * ((n + 2) / 3) + 1);
    if (enc) {
        size_t en = http_base64_encode(data + 1, n, enc);
        uint8_t *back = NULL;
        size_t bn = 0;
        if (http_base64_decode_alloc(enc, en, n + 1, &back, &bn, &e) != 0 || bn != n ||
            (n && memcmp(back, data + 1, n) != 0))
            abort();
        free(back);
    }
    free(enc);
    free(out);

    /* NUL-terminated pieces: path, then a header value */
    char *buf = malloc(n + 1);
    if (!buf)
        return 0;
    memcpy(buf, in, n);
    buf[n] = 0;
    const char *path = buf;
    size_t plen = strlen(buf);
    const char *hdr = plen < n ? buf + plen + 1 : "";

    char *dec = NULL;
    if (http_pct_decode(path, plen, data[0] & 1, &dec, &e) == 0) {
        char *re = http_pct_encode(dec);
        char *dec2 = NULL;
        /* a segment encoded then decoded is itself */
        if (re && (http_pct_decode(re, strlen(re), 0, &dec2, &e) != 0 || strcmp(dec2, dec) != 0))
            abort();
        free(dec2);
        free(re);
        free(dec);
    }
    struct http_match m;
    memset(&m, 0, sizeof m);
    const char *meth = methods[data[0] % (sizeof methods / sizeof methods[0])];
    if (http_route_match(meth, path, &m, &e) == 0)
        (void)http_route_name(m.route);
    http_match_clear(&m);
    (void)http_body_kind_of(hdr);
    size_t tn = 0;
    const char *tok = http_bearer_token(hdr, &tn);
    if (tok && (tok < hdr || tok + tn > hdr + strlen(hdr)))
        abort();
    (void)http_key_equal(hdr, strlen(hdr), "secret");
    char *f = strdup(hdr), *k = NULL, *v = NULL;
    if (f && http_split_filter(f, &k, &v, &e) == 0 && (!k || !v || !*k))
        abort();
    free(f);
    free(buf);
    return 0;
}
