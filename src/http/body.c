/* body.c - request bodies: framing checks, the size limit, Content-Type,
 * and collecting the bytes (multipart parts, or one buffer).
 *
 * 1. Everything that can be refused is refused on the first call, before
 *    the body is read: declared length over the limit (413), content type
 *    (415), ambiguous framing (400 with Connection: close: two different
 *    Content-Length headers, Content-Length with Transfer-Encoding, or a
 *    transfer coding other than chunked - request smuggling; MHD would
 *    take the first Content-Length, or wait for a body it cannot delimit
 *    until the idle timeout). A chunked body over the limit is drained and
 *    answered 413; a flood past 4 x the limit loses its connection.
 * 2. multipart/form-data goes through MHD_create_post_processor into
 *    http_parts; raw image/... and JSON bodies are appended to one buffer
 *    (MHD gives no post processor for them).
 * 3. Multipart fields other than images are text (ids, filters, metadata)
 *    and must be valid UTF-8.
 */
#include "http/http_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/utf8.h"

int http__takes_body(const struct http_req *r)
{
    return r->m.method == HTTP_M_POST || r->m.method == HTTP_M_PUT;
}

static enum MHD_Result on_post_part(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *filename, const char *ctype,
                                    const char *enc, const char *data, uint64_t off,
                                    size_t size)
{
    (void)kind;
    (void)enc;
    struct http_req *r = cls;
    if (r->body_rc)
        return MHD_YES;
    struct err e = {0};
    int rc = http_parts_add(&r->parts, key, filename, ctype, data, off, size, &e);
    if (rc) {
        r->body_rc = rc;
        r->body_err = e;
    }
    return MHD_YES;
}

struct framing {
    int ncl, nte;       /* Content-Length, Transfer-Encoding headers */
    const char *cl;     /* the first Content-Length */
    int cl_differ;      /* another one differs from it */
    const char *te;     /* the last Transfer-Encoding */
};

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    (void)kind;
    struct framing *f = cls;
    if (!key || !value)
        return MHD_YES;
    if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) {
        if (!f->ncl++)
            f->cl = value;
        else if (strcmp(f->cl, value) != 0)
            f->cl_differ = 1;
    } else if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        f->nte++;
        f->te = value;
    }
    return MHD_YES;
}

int http__refuse_framing(struct http_req *r)
{
    struct framing f = {0};
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, count_framing, &f);
    size_t tl = f.te ? strlen(f.te) : 0;
    while (tl && (f.te[tl - 1] == ' ' || f.te[tl - 1] == '\t'))
        tl--;
    if (f.cl_differ)
        http__reply_errf(r, ERR_INVALID_ARGUMENT,
                         "%d Content-Length headers with different values: the body's length "
                         "is ambiguous", f.ncl);
    else if (f.ncl && f.nte)
        http__reply_errf(r, ERR_INVALID_ARGUMENT,
                         "both Content-Length and Transfer-Encoding: the body's length is "
                         "ambiguous");
    else if (f.nte > 1 || (f.nte && (tl != 7 || strncasecmp(f.te, "chunked", 7) != 0)))
        http__reply_errf(r, ERR_INVALID_ARGUMENT,
                         "Transfer-Encoding '%.60s' is not supported: send the body with "
                         "Content-Length or Transfer-Encoding: chunked", f.te);
    else
        return 0;
    r->reply.close = 1;
    return 1;
}
void http__body_begin(struct http_req *r)
{
    struct http_server *s = r->s;
    const char *cl = http__header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (!errno && end != cl && n > s->cfg.max_body) {
            http__reply_errf(r, ERR_TOO_LARGE, "the body of %llu bytes is over the limit of %zu",
                             n, s->cfg.max_body);
            return;
        }
    }
    r->kind = http_body_kind_of(http__header(r, MHD_HTTP_HEADER_CONTENT_TYPE));
    if (r->kind == HTTP_BODY_OTHER) {
        http__reply_errf(r, ERR_UNSUPPORTED_FORMAT,
                         "Content-Type %.100s is not accepted: send multipart/form-data, "
                         "application/json or an image/* body",
                         http__header(r, MHD_HTTP_HEADER_CONTENT_TYPE));
        return;
    }
    if (r->kind == HTTP_BODY_MULTIPART) {
        r->parts.max_bytes = s->cfg.max_body;
        r->parts.max_parts = (size_t)s->cfg.batch_limit + 64;
        r->pp = MHD_create_post_processor(r->conn, 64 * 1024, on_post_part, r);
        if (!r->pp)
            http__reply_errf(r, ERR_INVALID_ARGUMENT,
                             "multipart/form-data without a boundary parameter");
    }
}

int http__body_absorb(struct http_req *r, const char *data, size_t n)
{
    struct http_server *s = r->s;
    r->received += n;
    if (s->cfg.request_timeout_s && mono_now() - r->t0 > s->cfg.request_timeout_s) {
        http__logf(s, "cut a request whose body took over %d s", s->cfg.request_timeout_s);
        return -1;
    }
    if (r->received > s->cfg.max_body) {
        if (!r->body_rc) {
            r->body_rc = -ERR_TOO_LARGE;
            err_set(&r->body_err, ERR_TOO_LARGE, "the body is over the limit of %zu bytes",
                    s->cfg.max_body);
        }
        /* drain a modest excess to answer 413; a flood gets the door */
        return r->received > 4 * s->cfg.max_body + (1u << 20) ? -1 : 0;
    }
    if (r->body_rc)
        return 0;
    if (r->pp) {
        if (MHD_post_process(r->pp, data, n) != MHD_YES && !r->body_rc) {
            r->body_rc = -ERR_INVALID_ARGUMENT;
            err_set(&r->body_err, ERR_INVALID_ARGUMENT, "malformed multipart/form-data body");
        }
        return 0;
    }
    if (r->body_len + n + 1 > r->body_cap) {
        size_t nc = r->body_cap ? r->body_cap : 16384;
        while (nc < r->body_len + n + 1)
            nc *= 2;
        if (nc > s->cfg.max_body + 1) /* received <= max_body: never more than that */
            nc = s->cfg.max_body + 1;
        uint8_t *b = realloc(r->body, nc);
        if (!b) {
            r->body_rc = -ERR_NOMEM;
            err_set(&r->body_err, ERR_NOMEM, "out of memory for a %zu-byte body",
                    r->body_len + n);
            return 0;
        }
        r->body = b;
        r->body_cap = nc;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = 0;
    return 0;
}

void http__body_end(struct http_req *r)
{
    if (r->pp) {
        MHD_destroy_post_processor(r->pp);
        r->pp = NULL;
    }
    if (r->body_rc) {
        http__reply_err(r, &r->body_err);
        return;
    }
    if (http__takes_body(r) && r->kind == HTTP_BODY_NONE && r->received > 0) {
        http__reply_errf(r, ERR_UNSUPPORTED_FORMAT,
                         "a body needs a Content-Type: multipart/form-data, application/json "
                         "or image/*");
        return;
    }
    /* multipart fields other than images are text: ids, filters, metadata */
    for (size_t i = 0; i < r->parts.n; i++) {
        const struct http_part *p = &r->parts.v[i];
        if (!utf8_valid(p->name)) {
            http__reply_errf(r, ERR_INVALID_UTF8, "a multipart field name is not valid UTF-8");
            return;
        }
        int image = p->filename || http__image_field(p->name);
        if (!image && utf8_check(p->data ? p->data : (const uint8_t *)"", p->len, NULL)) {
            http__reply_errf(r, ERR_INVALID_UTF8, "multipart field '%.60s' is not valid UTF-8",
                             p->name);
            return;
        }
    }
}

