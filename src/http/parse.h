/* parse.h - small parsers for HTTP requests, kept free of libmicrohttpd so
 * they can be unit-tested: content types, percent-encoding, option values,
 * API keys, and the multipart part collector fed by MHD's post processor.
 */
#ifndef IMGSEARCH_HTTP_PARSE_H
#define IMGSEARCH_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

enum http_body_kind {
    HTTP_BODY_NONE,      /* no Content-Type */
    HTTP_BODY_JSON,      /* application/json (or +json) */
    HTTP_BODY_MULTIPART, /* multipart/form-data */
    HTTP_BODY_IMAGE,     /* image/... or application/octet-stream: raw bytes */
    HTTP_BODY_OTHER,     /* anything else: 415 */
};

/* Kind of a Content-Type header value (NULL: HTTP_BODY_NONE). The media
 * type is compared case-insensitively and parameters are ignored. */
enum http_body_kind http_body_kind_of(const char *content_type);

/* Decodes %XX escapes of in[0..n) (and '+' as a space when plus_space) into
 * a malloc'd NUL-terminated string. A bad escape or an encoded NUL is
 * ERR_INVALID_ARGUMENT naming the offset. */
int http_pct_decode(const char *in, size_t n, int plus_space, char **out,
                    struct err *err);

/* Percent-encodes s for one path segment (everything but unreserved
 * characters A-Z a-z 0-9 - . _ ~), malloc'd; NULL when out of memory. */
char *http_pct_encode(const char *s);

/* Strict decimal parsing of a whole string (surrounding spaces allowed):
 * 0, or ERR_INVALID_ARGUMENT with a message naming what. */
int http_parse_long(const char *what, const char *s, long lo, long hi, long *out,
                    struct err *err);
int http_parse_float(const char *what, const char *s, double lo, double hi, float *out,
                     struct err *err);
/* "1", "true", "yes", "on" -> 1; "0", "false", "no", "off", "" -> 0; else -1. */
int http_parse_bool(const char *s);

/* The key from "Bearer KEY" (Authorization header) or an X-API-Key value:
 * returns a pointer into the header and its length in *n, or NULL when the
 * header is absent or not a bearer token. */
const char *http_bearer_token(const char *authorization, size_t *n);

/* Compares a[0..an) with the NUL-terminated key in time that depends only
 * on the lengths, not on where they differ. 1 when equal. */
int http_key_equal(const char *a, size_t an, const char *key);

/* Splits "key=value" at the first '='; 0, or ERR_INVALID_ARGUMENT when there
 * is no '=' or the key is empty. Pointers go into s, which is modified. */
int http_split_filter(char *s, char **key, char **value, struct err *err);

/* ---- multipart/form-data parts ------------------------------------------ */

struct http_part {
    char *name;      /* form field name ("" when absent) */
    char *filename;  /* or NULL */
    char *ctype;     /* Content-Type of the part, or NULL */
    uint8_t *data;   /* bytes, NUL-terminated (not counted in len) */
    size_t len;      /* bytes */
    size_t cap;      /* room in data */
};

struct http_parts {
    struct http_part *v; /* parts in arrival order */
    size_t n;            /* parts */
    size_t cap;          /* room in v */
    size_t bytes;        /* data bytes over all parts */
    size_t max_bytes;    /* limit on bytes (0: none) */
    size_t max_parts;    /* limit on parts (0: none) */
};

/* Adds one chunk as libmicrohttpd's post processor hands it over: off is
 * the offset of data within the current value, so off == 0 starts a new
 * part (unless the last part has the same name and is still empty, as MHD
 * may first report a part with no data). Over max_bytes or max_parts is
 * ERR_TOO_LARGE; out of memory ERR_NOMEM. */
int http_parts_add(struct http_parts *ps, const char *name, const char *filename,
                   const char *ctype, const char *data, uint64_t off, size_t size,
                   struct err *err);

/* The i-th part (0-based) named name, or NULL. */
const struct http_part *http_parts_get(const struct http_parts *ps, const char *name,
                                       size_t i);
size_t http_parts_count(const struct http_parts *ps, const char *name);

/* Frees every part and zeroes the arrays (the limits stay). */
void http_parts_free(struct http_parts *ps);

#endif
