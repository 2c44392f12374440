/* api_search.c - POST /search: by image, text, vector or item id, with
 * metadata filters, paging and a minimum score, on the query layer
 * (query/query.h) that the CLI uses too.
 *
 * 1. Exactly one of image, "text", "vector" or "id"; the item of an id
 *    search is left out of its own results (query.h).
 * 2. Filters come as a JSON object, "KEY=VALUE" strings (JSON, multipart
 *    fields, repeated ?filter=) or a JSON object as text; all must hold.
 */
#include "http/http_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "query/query.h"

#define MAX_TEXT_BYTES 65536 /* bytes of a text query */

/* ---- /search ------------------------------------------------------------------- */

struct filters {
    struct store_filter f[STORE_FILTERS_MAX]; /* key=value pairs */
    int n;                                    /* used */
    char *own[2 * STORE_FILTERS_MAX];         /* strings to free */
    int nown;
    struct err err;                           /* first error */
    int rc;
};

static void filters_free(struct filters *fs)
{
    for (int i = 0; i < fs->nown; i++)
        free(fs->own[i]);
}

static int filter_add(struct filters *fs, const char *key, const char *value)
{
    if (fs->n == STORE_FILTERS_MAX)
        return fs->rc = err_set(&fs->err, ERR_INVALID_ARGUMENT, "more than %d filters",
                                STORE_FILTERS_MAX);
    char *k = strdup(key), *v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return fs->rc = err_set(&fs->err, ERR_NOMEM, "out of memory");
    }
    fs->own[fs->nown++] = k;
    fs->own[fs->nown++] = v;
    fs->f[fs->n++] = (struct store_filter){k, v};
    return 0;
}

/* A JSON scalar as the text the store compares ("3", "true", "shoes"). */
static int scalar_text(json_t *v, char *buf, size_t n, const char **out)
{
    if (json_is_string(v))
        *out = json_string_value(v);
    else if (json_is_integer(v))
        snprintf(buf, n, "%" JSON_INTEGER_FORMAT, json_integer_value(v)), *out = buf;
    else if (json_is_real(v))
        snprintf(buf, n, "%.17g", json_real_value(v)), *out = buf;
    else if (json_is_boolean(v))
        *out = json_is_true(v) ? "true" : "false";
    else if (json_is_null(v))
        *out = "null";
    else
        return -1;
    return 0;
}

static int filter_object(struct filters *fs, json_t *obj)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        char buf[64];
        const char *text;
        if (scalar_text(v, buf, sizeof buf, &text))
            return fs->rc = err_set(&fs->err, ERR_INVALID_ARGUMENT,
                                    "filter \"%.100s\": the value must be a string, number, "
                                    "boolean or null", key);
        if (filter_add(fs, key, text))
            return fs->rc;
    }
    return 0;
}

/* "KEY=VALUE" or a JSON object as text. */
static int filter_text(void *ctx, const char *s)
{
    struct filters *fs = ctx;
    while (*s == ' ')
        s++;
    if (*s == '{') {
        json_error_t je;
        json_t *o = json_loads(s, 0, &je);
        if (!o || !json_is_object(o)) {
            json_decref(o);
            return fs->rc = err_set(&fs->err, ERR_INVALID_ARGUMENT,
                                    "filter is neither KEY=VALUE nor a JSON object: %.80s", s);
        }
        int rc = filter_object(fs, o);
        json_decref(o);
        return rc;
    }
    char *copy = strdup(s), *k, *v;
    if (!copy)
        return fs->rc = err_set(&fs->err, ERR_NOMEM, "out of memory");
    int rc = http_split_filter(copy, &k, &v, &fs->err);
    if (rc)
        fs->rc = rc;
    else
        rc = filter_add(fs, k, v);
    free(copy);
    return rc;
}

static int get_filters(struct http_req *r, struct filters *fs)
{
    json_t *jf = r->json ? json_object_get(r->json, "filter") : NULL;
    if (jf && json_is_object(jf))
        filter_object(fs, jf);
    else if (jf && json_is_string(jf))
        filter_text(fs, json_string_value(jf));
    else if (jf && json_is_array(jf)) {
        size_t i;
        json_t *x;
        json_array_foreach(jf, i, x) {
            if (!json_is_string(x)) {
                fs->rc = err_set(&fs->err, ERR_INVALID_ARGUMENT,
                                 "\"filter\" array items must be \"KEY=VALUE\" strings");
                break;
            }
            if (filter_text(fs, json_string_value(x)))
                break;
        }
    } else if (jf && !json_is_null(jf))
        fs->rc = err_set(&fs->err, ERR_INVALID_ARGUMENT,
                         "\"filter\" must be an object of metadata values");
    for (size_t i = 0; !fs->rc && r->kind == HTTP_BODY_MULTIPART; i++) {
        const struct http_part *p = http_parts_get(&r->parts, "filter", i);
        if (!p)
            break;
        filter_text(fs, (const char *)p->data);
    }
    if (!fs->rc)
        http__query_each(r, "filter", filter_text, fs);
    return fs->rc;
}

/* The query vector q (dim floats) from the one search mode given. */
static int query_vector(struct http_req *r, struct http__blob *b, const char *text, json_t *vj,
                        const char *id, float *q, struct err *e)
{
    struct http_server *s = r->s;
    const int dim = s->pipe->dim;
    if (b->present) {
        if (b->rc || http__embed_blobs(r, b, 1, q, 0) != 1) {
            *e = b->err;
            return b->rc ? b->rc : -ERR_INTERNAL;
        }
        return 0;
    }
    if (text) {
        size_t tl = strlen(text);
        if (tl == 0 || tl > MAX_TEXT_BYTES)
            return err_set(e, ERR_INVALID_ARGUMENT, "\"text\" must have 1..%d bytes, not %zu",
                           MAX_TEXT_BYTES, tl);
        int rc = pipe_sched_texts(s->sched, &text, 1, q, e);
        if (!rc)
            atomic_fetch_add_explicit(&s->metrics.text_embeddings, 1, memory_order_relaxed);
        return rc;
    }
    if (!vj)
        return query_item_vector(s->store, id, q, e);
    if (!json_is_array(vj) || json_array_size(vj) != (size_t)dim)
        return err_set(e, ERR_INVALID_ARGUMENT, "\"vector\" must be an array of %d numbers (the "
                       "model's dimension), not %zu", dim,
                       json_is_array(vj) ? json_array_size(vj) : 0);
    double norm2 = 0;
    for (int i = 0; i < dim; i++) {
        json_t *x = json_array_get(vj, (size_t)i);
        double d = json_number_value(x);
        if (!json_is_number(x) || !isfinite(d) || fabs(d) > 3.4e38)
            return err_set(e, ERR_INVALID_ARGUMENT, "\"vector\"[%d] is not a finite number", i);
        q[i] = (float)d;
        norm2 += (double)q[i] * q[i];
    }
    /* the index scores by cosine: a norm that float32 cannot invert
     * (64 x 1e-45) would give NaN scores */
    if (!(sqrt(norm2) >= STORE_VEC_MIN_NORM))
        return err_set(e, ERR_INVALID_ARGUMENT, "\"vector\" has a norm of %g; it must be at least %g",
                       sqrt(norm2), STORE_VEC_MIN_NORM);
    return 0;
}

void http__api_search(struct http_req *r)
{
    double t0 = mono_now();
    if (http__load_json(r))
        return;
    struct http_server *s = r->s;
    const int dim = s->pipe->dim;
    struct err e = {0};
    struct http__blob b;
    struct filters fs = {.n = 0};
    struct store_hit *hits = NULL;
    size_t nh = 0;
    float *q = malloc(sizeof(float) * (size_t)dim);
    char nb[4][64];
    http__get_image(r, &b);
    const char *text = http__param(r, "text", nb[0], sizeof nb[0]);
    json_t *vj = r->json ? json_object_get(r->json, "vector") : NULL;
    if (vj && json_is_null(vj))
        vj = NULL;
    const char *id = http__param(r, "id", nb[1], sizeof nb[1]);
    int modes = b.present + !!text + !!vj + !!id;
    long k = 10, offset = 0, ef = 0;
    float min_score = -1;
    const char *v;
    if (!q) {
        err_set(&e, ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (modes != 1) {
        err_set(&e, ERR_INVALID_ARGUMENT,
                modes ? "give only one of image, text, vector or id"
                      : "nothing to search with: give an image, \"text\", \"vector\" or \"id\"");
        goto fail;
    }
    if ((v = http__param(r, "k", nb[2], sizeof nb[2])) && http_parse_long("k", v, 1, QUERY_K_MAX, &k, &e))
        goto fail;
    if ((v = http__param(r, "offset", nb[2], sizeof nb[2])) &&
        http_parse_long("offset", v, 0, QUERY_OFFSET_MAX, &offset, &e))
        goto fail;
    if ((v = http__param(r, "min_score", nb[2], sizeof nb[2])) &&
        http_parse_float("min_score", v, -1, 1, &min_score, &e))
        goto fail;
    if ((v = http__param(r, "ef", nb[2], sizeof nb[2])) && http_parse_long("ef", v, 0, 10000, &ef, &e))
        goto fail;
    if (get_filters(r, &fs)) {
        e = fs.err;
        goto fail;
    }
    if (query_vector(r, &b, text, vj, id, q, &e))
        goto fail;
    /* the query layer leaves the item of an id search out (query.h) */
    struct query_opts qo = {
        .k = (int)k,
        .offset = (int)offset,
        .min_score = min_score,
        .filters = fs.n ? fs.f : NULL,
        .n_filters = fs.n,
        .ef = (int)ef,
    };
    if (query_search(s->store, q, id, &qo, &hits, &nh, &e))
        goto fail;
    json_t *res = json_array();
    long shown = 0;
    for (size_t i = 0; i < nh; i++) {
        json_t *h = json_object();
        json_object_set_new(h, "id", http__str_json(hits[i].id));
        json_t *score = json_real(hits[i].score); /* NULL for a NaN */
        if (!score) {
            json_decref(h);
            json_decref(res);
            err_set(&e, ERR_INTERNAL, "hit '%.200s' has no finite score", hits[i].id);
            goto fail;
        }
        json_object_set_new(h, "score", score);
        json_object_set_new(h, "metadata", http__metadata_json(hits[i].metadata));
        json_object_set_new(h, "image_url", hits[i].source ? http__image_url(hits[i].id) : json_null());
        json_array_append_new(res, h);
        shown++;
    }
    json_t *j = json_object();
    json_object_set_new(j, "results", res);
    json_object_set_new(j, "count", json_integer(shown));
    json_object_set_new(j, "took_ms", json_real(round((mono_now() - t0) * 1e6) / 1e3));
    http__reply_json(r, 200, j);
fail: /* the one way out; success has replied already */
    if (!r->reply.status)
        http__reply_err(r, &e);
    store_hits_free(hits, nh);
    filters_free(&fs);
    http__blob_free(&b);
    free(q);
}

