/* parse.c - request parsing helpers (see parse.h).
 *
 * 1. Nothing here touches libmicrohttpd: the server hands over header
 *    values and post-processor chunks, so every parser is unit-tested
 *    directly (tests/test_http_parse.c).
 * 2. Every size comes with a limit checked before the allocation grows.
 * References: RFC 9110 (media types, Authorization), RFC 3986 section 2
 * (percent-encoding), RFC 7578 (multipart/form-data).
 */
#include "http/parse.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Compares the media type of ct (up to ';' or space) with t. */
static int media_is(const char *ct, size_t n, const char *t)
{
    return strlen(t) == n && !strncasecmp(ct, t, n);
}

enum http_body_kind http_body_kind_of(const char *ct)
{
    if (!ct)
        return HTTP_BODY_NONE;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, "; \t");
    if (n == 0)
        return HTTP_BODY_NONE;
    if (media_is(ct, n, "application/json") ||
        (n > 5 && !strncasecmp(ct + n - 5, "+json", 5) && !strncasecmp(ct, "application/", 12)))
        return HTTP_BODY_JSON;
    if (media_is(ct, n, "multipart/form-data"))
        return HTTP_BODY_MULTIPART;
    if ((n > 6 && !strncasecmp(ct, "image/", 6)) || media_is(ct, n, "application/octet-stream"))
        return HTTP_BODY_IMAGE;
    return HTTP_BODY_OTHER;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int http_pct_decode(const char *in, size_t n, int plus_space, char **out,
                    struct err *err)
{
    *out = NULL;
    char *s = malloc(n + 1);
    if (!s)
        return err_set(err, ERR_NOMEM, "out of memory");
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (c == '%') {
            if (i + 2 >= n) {
                free(s);
                return err_set(err, ERR_INVALID_ARGUMENT, "bad %%-escape at offset %zu", i);
            }
            int a = hexval(in[i + 1]), b = a < 0 ? -1 : hexval(in[i + 2]);
            if (a < 0 || b < 0) {
                free(s);
                return err_set(err, ERR_INVALID_ARGUMENT, "bad %%-escape at offset %zu", i);
            }
            c = (char)(a << 4 | b);
            if (!c) {
                free(s);
                return err_set(err, ERR_INVALID_ARGUMENT, "%%00 (NUL) at offset %zu", i);
            }
            i += 2;
        } else if (c == '+' && plus_space) {
            c = ' ';
        }
        s[o++] = c;
    }
    s[o] = 0;
    *out = s;
    return 0;
}

char *http_pct_encode(const char *s)
{
    static const char hx[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *o = malloc(3 * n + 1), *p = o;
    if (!o)
        return NULL;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            *p++ = (char)c;
        } else {
            *p++ = '%';
            *p++ = hx[c >> 4];
            *p++ = hx[c & 15];
        }
    }
    *p = 0;
    return o;
}

int http_parse_long(const char *what, const char *s, long lo, long hi, long *out,
                    struct err *err)
{
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (s)
        while (*end == ' ')
            end++;
    if (!s || errno || end == s || *end || v < lo || v > hi)
        return err_set(err, ERR_INVALID_ARGUMENT, "%s must be an integer in [%ld, %ld], not '%.40s'",
                       what, lo, hi, s ? s : "");
    *out = v;
    return 0;
}

int http_parse_float(const char *what, const char *s, double lo, double hi, float *out,
                     struct err *err)
{
    char *end;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    if (s)
        while (*end == ' ')
            end++;
    if (!s || errno || end == s || *end || !(v >= lo && v <= hi))
        return err_set(err, ERR_INVALID_ARGUMENT, "%s must be a number in [%g, %g], not '%.40s'",
                       what, lo, hi, s ? s : "");
    *out = (float)v;
    return 0;
}

int http_parse_bool(const char *s)
{
    if (!s || !*s || !strcasecmp(s, "0") || !strcasecmp(s, "false") || !strcasecmp(s, "no") ||
        !strcasecmp(s, "off"))
        return 0;
    if (!strcasecmp(s, "1") || !strcasecmp(s, "true") || !strcasecmp(s, "yes") ||
        !strcasecmp(s, "on"))
        return 1;
    return -1;
}

const char *http_bearer_token(const char *h, size_t *n)
{
    if (!h)
        return NULL;
    while (*h == ' ')
        h++;
    if (strncasecmp(h, "Bearer", 6) || (h[6] != ' ' && h[6] != '\t'))
        return NULL;
    h += 6;
    while (*h == ' ' || *h == '\t')
        h++;
    size_t len = strlen(h);
    while (len && (h[len - 1] == ' ' || h[len - 1] == '\t'))
        len--;
    if (!len)
        return NULL;
    *n = len;
    return h;
}

int http_key_equal(const char *a, size_t an, const char *key)
{
    size_t kn = strlen(key);
    unsigned diff = (unsigned)(an ^ kn);
    /* walk the key's length whatever a holds, so the time says nothing
     * about the first differing byte */
    for (size_t i = 0; i < kn; i++)
        diff |= (unsigned char)key[i] ^ (unsigned char)(i < an ? a[i] : 0);
    return diff == 0;
}

int http_split_filter(char *s, char **key, char **value, struct err *err)
{
    char *eq = strchr(s, '=');
    if (!eq || eq == s)
        return err_set(err, ERR_INVALID_ARGUMENT, "filter '%.80s' is not KEY=VALUE", s);
    *eq = 0;
    *key = s;
    *value = eq + 1;
    return 0;
}

/* ---- multipart parts ------------------------------------------------------ */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

int http_parts_add(struct http_parts *ps, const char *name, const char *filename,
                   const char *ctype, const char *data, uint64_t off, size_t size,
                   struct err *err)
{
    if (!name)
        name = "";
    struct http_part *p = ps->n ? &ps->v[ps->n - 1] : NULL;
    int fresh = off == 0 && !(p && p->len == 0 && !strcmp(p->name, name));
    if (fresh || !p) {
        if (ps->max_parts && ps->n >= ps->max_parts)
            return err_set(err, ERR_TOO_LARGE, "more than %zu multipart parts", ps->max_parts);
        if (ps->n == ps->cap) {
            size_t nc = ps->cap ? ps->cap * 2 : 8;
            struct http_part *v = realloc(ps->v, nc * sizeof *v);
            if (!v)
                return err_set(err, ERR_NOMEM, "out of memory");
            ps->v = v;
            ps->cap = nc;
        }
        p = &ps->v[ps->n];
        memset(p, 0, sizeof *p);
        p->name = strdup(name);
        p->filename = dup_or_null(filename);
        p->ctype = dup_or_null(ctype);
        if (!p->name || (filename && !p->filename) || (ctype && !p->ctype)) {
            free(p->name);
            free(p->filename);
            free(p->ctype);
            return err_set(err, ERR_NOMEM, "out of memory");
        }
        ps->n++;
    } else if (off != p->len) {
        return err_set(err, ERR_INVALID_ARGUMENT,
                       "multipart part '%.60s': data at offset %llu after %zu bytes", name,
                       (unsigned long long)off, p->len);
    }
    if (ps->max_bytes && size > ps->max_bytes - ps->bytes)
        return err_set(err, ERR_TOO_LARGE, "multipart data over the limit of %zu bytes",
                       ps->max_bytes);
    if (p->len + size + 1 > p->cap) {
        size_t nc = p->cap ? p->cap : 4096;
        while (nc < p->len + size + 1)
            nc *= 2;
        uint8_t *d = realloc(p->data, nc);
        if (!d)
            return err_set(err, ERR_NOMEM, "out of memory for a %zu-byte part", p->len + size);
        p->data = d;
        p->cap = nc;
    }
    if (size)
        memcpy(p->data + p->len, data, size);
    p->len += size;
    p->data[p->len] = 0;
    ps->bytes += size;
    return 0;
}

const struct http_part *http_parts_get(const struct http_parts *ps, const char *name,
                                       size_t i)
{
    for (size_t k = 0; k < ps->n; k++)
        if (!strcmp(ps->v[k].name, name) && i-- == 0)
            return &ps->v[k];
    return NULL;
}

size_t http_parts_count(const struct http_parts *ps, const char *name)
{
    size_t c = 0;
    for (size_t k = 0; k < ps->n; k++)
        c += !strcmp(ps->v[k].name, name);
    return c;
}

void http_parts_free(struct http_parts *ps)
{
    for (size_t k = 0; k < ps->n; k++) {
        free(ps->v[k].name);
        free(ps->v[k].filename);
        free(ps->v[k].ctype);
        free(ps->v[k].data);
    }
    free(ps->v);
    ps->v = NULL;
    ps->n = ps->cap = ps->bytes = 0;
}
