/* request.c - what a request carries, for the handlers: headers, query
 * parameters (decoded once), the JSON body (bounded before it is parsed),
 * scalar parameters from any of them, and its images.
 *
 * 1. Every image endpoint takes its image three ways: a multipart part
 *    (see http__image_field), a raw body with an image/... Content-Type, or
 *    a JSON body with base64 ({"image": "..."}, {"images": [...]}).
 * 2. Scalar parameters (k, offset, min_score, labels, ...) come from the
 *    JSON body, a multipart field, or the query string, in that order.
 * 3. Every query parameter must decode to valid UTF-8 before the request
 *    is routed further: a value that cannot be read is refused rather than
 *    dropped (a dropped filter returns another tenant's items).
 * 4. The JSON body's value count and depth are bounded per route before
 *    jansson builds a tree of it (router.c says how much each route reads).
 */
#include "http/http_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/base64.h"
#include "util/jsonscan.h"
#include "util/utf8.h"

const char *http__header(struct http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

static const char *keep(struct http_req *r, char *s)
{
    if (r->nstrs == r->capstrs) {
        int nc = r->capstrs ? r->capstrs * 2 : 8;
        char **v = realloc(r->strs, sizeof *v * (size_t)nc);
        if (!v) {
            free(s);
            return NULL;
        }
        r->strs = v;
        r->capstrs = nc;
    }
    r->strs[r->nstrs++] = s;
    return s;
}

const char *http__query(struct http_req *r, const char *key)
{
    const char *raw = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
    if (!raw)
        return NULL;
    char *d;
    if (http_pct_decode(raw, strlen(raw), 1, &d, NULL))
        return NULL;
    return keep(r, d);
}

struct each_ctx {
    struct http_req *r;
    const char *key;
    int (*fn)(void *, const char *);
    void *ctx;
    int rc;
};

static enum MHD_Result each_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
    (void)kind;
    struct each_ctx *e = cls;
    if (!key || strcmp(key, e->key) != 0)
        return MHD_YES;
    char *d;
    if (http_pct_decode(value ? value : "", value ? strlen(value) : 0, 1, &d, NULL))
        return MHD_YES;
    const char *v = keep(e->r, d);
    if (v && (e->rc = e->fn(e->ctx, v)))
        return MHD_NO;
    return MHD_YES;
}

/* Every query parameter must decode (no bad escape, no %00) to valid UTF-8:
 * a value that cannot be read is refused at the door rather than dropped
 * (a dropped filter returns another tenant's items). */
struct query_check {
    struct err err; /* the first problem */
    int rc;
};

static enum MHD_Result check_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    (void)kind;
    struct query_check *q = cls;
    const char *what[2] = {key ? key : "", value ? value : ""};
    for (int i = 0; i < 2; i++) {
        char *d = NULL;
        struct err e = {0};
        int rc = http_pct_decode(what[i], strlen(what[i]), 1, &d, &e);
        size_t bad = 0;
        if (!rc && utf8_check((const uint8_t *)d, strlen(d), &bad))
            rc = err_set(&e, ERR_INVALID_UTF8, "is not valid UTF-8 once decoded (byte %zu)", bad);
        free(d);
        if (rc) {
            /* the key is named only when it is readable itself */
            if (i == 1 && utf8_valid(key) && strlen(key) <= 64)
                err_prefix(&e, "query parameter '%s'", key);
            else
                err_prefix(&e, "a query parameter %s", i ? "value" : "name");
            q->err = e;
            q->rc = rc;
            return MHD_NO;
        }
    }
    return MHD_YES;
}

int http__query_check(struct http_req *r, struct err *err)
{
    struct query_check qc = {.rc = 0};
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, check_arg, &qc);
    if (qc.rc)
        *err = qc.err;
    return qc.rc;
}

int http__query_each(struct http_req *r, const char *key,
                     int (*fn)(void *ctx, const char *value), void *ctx)
{
    struct each_ctx e = {r, key, fn, ctx, 0};
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, each_arg, &e);
    return e.rc;
}

json_t *http__json(struct http_req *r, struct err *err)
{
    if (r->json)
        return r->json;
    if (r->kind != HTTP_BODY_JSON) {
        err_set(err, ERR_INVALID_ARGUMENT, "the body is not JSON");
        return NULL;
    }
    /* the tree jansson would build is bounded by the route, before it is
     * built: about 40 bytes a value, a value can be 2 bytes of body */
    struct http_json_limits lim = http__json_limits(r->s, r->m.route);
    struct json_shape sh;
    json_shape_scan((const char *)r->body, r->body_len, lim.values, lim.depth, &sh);
    if (sh.values > lim.values) {
        err_set(err, ERR_TOO_LARGE, "the JSON body has over %zu values, the most %s reads",
                lim.values, http_route_name(r->m.route));
        return NULL;
    }
    if (sh.depth > lim.depth) {
        err_set(err, ERR_INVALID_ARGUMENT, "the JSON body is nested over %d levels deep",
                lim.depth);
        return NULL;
    }
    json_error_t je;
    json_t *j = json_loadb((const char *)r->body, r->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        err_set(err, ERR_INVALID_ARGUMENT, "the body is not valid JSON: line %d column %d: %s",
                je.line, je.column, je.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        err_set(err, ERR_INVALID_ARGUMENT, "the JSON body must be an object");
        return NULL;
    }
    return r->json = j;
}

/* ---- request inputs ---------------------------------------------------------- */

void http__blob_free(struct http__blob *b)
{
    free(b->owned);
    b->owned = NULL;
}

/* Parses the JSON body when there is one; 0 or an error reply made. */
/* 0 when every field of the JSON body is one route r reads; else err
 * names the others (the first few) and the ones it reads. */
static int check_fields(struct http_req *r, json_t *body, struct err *err)
{
    const char *const *known = http__json_fields(r->m.route, r->m.method);
    char unknown[300] = "", reads[300] = "";
    size_t nu = 0, nk = 0;
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v) {
        size_t i = 0;
        while (known[i] && strcmp(known[i], key) != 0)
            i++;
        if (known[i])
            continue;
        if (nu < sizeof unknown)
            nu += (size_t)snprintf(unknown + nu, sizeof unknown - nu, "%s\"%.60s\"",
                                   nu ? ", " : "", key);
    }
    if (!nu)
        return 0;
    for (size_t i = 0; known[i] && nk < sizeof reads; i++)
        nk += (size_t)snprintf(reads + nk, sizeof reads - nk, "%s%s", i ? ", " : "", known[i]);
    return err_set(err, ERR_INVALID_ARGUMENT, "unknown field%s in the JSON body: %s (%s reads %s)",
                   strchr(unknown, ',') ? "s" : "", unknown, http_route_name(r->m.route),
                   nk ? reads : "no JSON fields");
}

int http__load_json(struct http_req *r)
{
    struct err e = {0};
    if (r->kind != HTTP_BODY_JSON)
        return 0;
    json_t *body = http__json(r, &e);
    if (!body || check_fields(r, body, &e)) {
        http__reply_err(r, &e);
        return -1;
    }
    return 0;
}

/* A scalar parameter as text from the JSON body, a multipart field or the
 * query string; NULL when absent (JSON null counts as absent). */
const char *http__param(struct http_req *r, const char *name, char *buf, size_t n)
{
    if (r->json) {
        json_t *v = json_object_get(r->json, name);
        if (v && !json_is_null(v)) {
            if (json_is_string(v))
                return json_string_value(v);
            if (json_is_integer(v)) {
                snprintf(buf, n, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
                return buf;
            }
            if (json_is_real(v)) {
                snprintf(buf, n, "%.17g", json_real_value(v));
                return buf;
            }
            if (json_is_boolean(v))
                return json_is_true(v) ? "true" : "false";
            return "(a JSON array or object)";
        }
    }
    if (r->kind == HTTP_BODY_MULTIPART) {
        const struct http_part *p = http_parts_get(&r->parts, name, 0);
        if (p)
            return p->data ? (const char *)p->data : "";
    }
    return http__query(r, name);
}

void http__blob_from_b64(struct http__blob *b, json_t *v, const char *what, size_t max)
{
    b->present = 1;
    if (!json_is_string(v)) {
        b->rc = err_set(&b->err, ERR_INVALID_ARGUMENT, "%s must be a base64 string", what);
        return;
    }
    size_t on;
    b->rc = http_base64_decode_alloc(json_string_value(v), json_string_length(v), max,
                                     &b->owned, &on, &b->err);
    if (b->rc) {
        err_prefix(&b->err, "%s", what);
        return;
    }
    b->p = b->owned;
    b->n = on;
}

void http__blob_from_part(struct http__blob *b, const struct http_part *p)
{
    b->present = 1;
    b->p = p->data ? p->data : (const uint8_t *)"";
    b->n = p->len;
}

/* The one image of a request (b->present 0 when it has none). */
void http__get_image(struct http_req *r, struct http__blob *b)
{
    memset(b, 0, sizeof *b);
    if (r->kind == HTTP_BODY_IMAGE) {
        b->present = 1;
        b->p = r->body ? r->body : (const uint8_t *)"";
        b->n = r->body_len;
    } else if (r->kind == HTTP_BODY_MULTIPART) {
        static const char *const names[] = {"image", "images", "file", "files"};
        for (size_t i = 0; i < 4 && !b->present; i++) {
            const struct http_part *p = http_parts_get(&r->parts, names[i], 0);
            if (p)
                http__blob_from_part(b, p);
        }
    } else if (r->json) {
        json_t *v = json_object_get(r->json, "image");
        if (v && !json_is_null(v))
            http__blob_from_b64(b, v, "\"image\"", r->s->cfg.max_body);
    }
}

int http__image_field(const char *name)
{
    return !strcmp(name, "image") || !strcmp(name, "images") || !strcmp(name, "file") ||
           !strcmp(name, "files");
}

const char http__no_image_msg[] =
    "no image: send a multipart/form-data part \"image\", a body with an image/* "
    "Content-Type, or JSON {\"image\": \"<base64>\"}";
