/* api.c - the routes of the HTTP service: what each endpoint reads, does
 * and answers.
 *
 * 1. Every image endpoint takes its image three ways: a multipart part
 *    named "image" (or "images"), a raw body with an image/... Content-Type,
 *    or a JSON body with base64 ({"image": "..."}, {"images": [...]}).
 *    Scalar parameters (k, offset, min_score, labels, ...) come from the
 *    JSON body, a multipart field, or the query string, in that order.
 * 2. Images are decoded and preprocessed on the worker thread that runs
 *    the request (in parallel), then embedded through the scheduler.
 * 3. Uploaded images (PUT /items/{id}) are kept once, under their SHA-256,
 *    in STORE.images/ next to the store: the item's source points there,
 *    so the precompute can embed it later (?async=1) and
 *    /items/{id}/image serves it. upload_mu orders file writes and
 *    removals with the items that use them.
 * 4. /items/{id}/image serves only files whose real path lies inside a
 *    catalog root or the upload folder: an item whose source is elsewhere
 *    (or a path with ../ or a symbolic link out) is 404. The file is then
 *    opened beneath its root without following any link (openat2, or one
 *    O_NOFOLLOW openat per component), so a folder swapped for a link
 *    after the check cannot redirect it.
 * 6. Text from the client is valid UTF-8 (checked at the door, server.c);
 *    text from the store that is not (rows written before the check) is
 *    repaired with U+FFFD on the way out, so one bad row cannot make
 *    every listing that holds it fail.
 * 5. Every error is {"error": {"code", "message"}} with the status of the
 *    one error table (util/err.h).
 *
 * Size: about 1,250 lines for every resource; issue 10 splits it by
 * resource (features, search, items, classify/metrics/health), which is
 * not done yet.
 */
#include "http/http_int.h"
#include "query/query.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http/base64.h"
#include "http/failed.h"
#include "http/thumbs.h"
#include "util/sha256.h"
#include "image/image.h"
#include "util/fsutil.h"
#include "util/jsonscan.h"
#include "util/utf8.h"

#define MAX_LABELS 256       /* labels per /classify */
#define MAX_LABEL_BYTES 300  /* bytes per label */
#define MAX_TEXT_BYTES 65536 /* bytes of a text query */
#define LIST_DEFAULT 100     /* items per page */
#define LIST_MAX 1000

struct http_json_limits http__json_limits(const struct http_server *s, enum http_route r)
{
    /* the body object and its scalars, room for fields we ignore */
    const size_t base = 64;
    switch (r) {
    case HTTP_ROUTE_SEARCH: /* {"vector": [dim], "filter": {...} or [...]} */
        return (struct http_json_limits){
            base + (size_t)(s->pipe ? s->pipe->dim : STORE_DIM_MAX) + 2 * STORE_FILTERS_MAX, 3};
    case HTTP_ROUTE_FEATURES_BATCH: /* {"images": [...]} */
        return (struct http_json_limits){base + (size_t)s->cfg.batch_limit, 2};
    case HTTP_ROUTE_CLASSIFY: /* {"labels": [...]} */
        return (struct http_json_limits){base + MAX_LABELS, 2};
    case HTTP_ROUTE_ITEM: /* {"image", "metadata": {...}}: "1," per value at most */
        return (struct http_json_limits){base + STORE_METADATA_MAX / 2,
                                         1 + STORE_METADATA_DEPTH_MAX};
    default:
        return (struct http_json_limits){base, 2};
    }
}

int http__inline_route(enum http_route r)
{
    return r == HTTP_ROUTE_NONE || r == HTTP_ROUTE_PAGE || r == HTTP_ROUTE_HEALTH ||
           r == HTTP_ROUTE_METRICS;
}

/* ---- request inputs ---------------------------------------------------------- */

struct blob {
    int present;         /* the request has this image */
    const uint8_t *p;    /* bytes */
    size_t n;            /* length */
    uint8_t *owned;      /* decoded base64, freed by blob_free */
    int rc;              /* error getting it (negative), 0 ok */
    struct err err;      /* its message */
};

static void blob_free(struct blob *b)
{
    free(b->owned);
    b->owned = NULL;
}

/* Parses the JSON body when there is one; 0 or an error reply made. */
static int load_json(struct http_req *r)
{
    struct err e = {0};
    if (r->kind == HTTP_BODY_JSON && !http__json(r, &e)) {
        http__reply_err(r, &e);
        return -1;
    }
    return 0;
}

/* A scalar parameter as text from the JSON body, a multipart field or the
 * query string; NULL when absent (JSON null counts as absent). */
static const char *param(struct http_req *r, const char *name, char *buf, size_t n)
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

static void blob_from_b64(struct blob *b, json_t *v, const char *what, size_t max)
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

static void blob_from_part(struct blob *b, const struct http_part *p)
{
    b->present = 1;
    b->p = p->data ? p->data : (const uint8_t *)"";
    b->n = p->len;
}

/* The one image of a request (b->present 0 when it has none). */
static void get_image(struct http_req *r, struct blob *b)
{
    memset(b, 0, sizeof *b);
    if (r->kind == HTTP_BODY_IMAGE) {
        b->present = 1;
        b->p = r->body ? r->body : (const uint8_t *)"";
        b->n = r->body_len;
    } else if (r->kind == HTTP_BODY_MULTIPART) {
        static const char *const names[] = {"image", "images", "file"};
        for (size_t i = 0; i < 3 && !b->present; i++) {
            const struct http_part *p = http_parts_get(&r->parts, names[i], 0);
            if (p)
                blob_from_part(b, p);
        }
    } else if (r->json) {
        json_t *v = json_object_get(r->json, "image");
        if (v && !json_is_null(v))
            blob_from_b64(b, v, "\"image\"", r->s->cfg.max_body);
    }
}

static const char no_image_msg[] =
    "no image: send a multipart/form-data part \"image\", a body with an image/* "
    "Content-Type, or JSON {\"image\": \"<base64>\"}";

/* Decodes, preprocesses and embeds the images of b[0..n) (chunks of the
 * worker's capacity) into out (n * dim floats). Images that fail get
 * b[i].rc and b[i].err; the others are embedded anyway. name_each: prefix
 * messages with "image N". Returns the number embedded. */
static int embed_blobs(struct http_req *r, struct blob *b, int n, float *out, int name_each)
{
    struct http_server *s = r->s;
    struct http_worker *w = r->w;
    const size_t px = 3 * (size_t)s->pipe->size * (size_t)s->pipe->size;
    const int dim = s->pipe->dim;
    /* images per round: the worker's buffers hold w->cap, slot[] holds
     * SLOTS; the bound is here, not in whoever set max_batch */
    enum { SLOTS = 256 };
    int slot[SLOTS], done = 0;
    const int step = w->cap < SLOTS ? w->cap : SLOTS;
    for (int at = 0; at < n; at += step) {
        int m = n - at < step ? n - at : step, nok = 0;
        pipe_sched_expect(s->sched, m);
        for (int i = at; i < at + m; i++) {
            char name[32];
            snprintf(name, sizeof name, name_each ? "image %d" : "image", i + 1);
            if (!b[i].rc) /* not already failed (bad base64) */
                b[i].rc = pipe_prepare_bytes(s->pipe, b[i].p, b[i].n, name,
                                             w->px + (size_t)nok * px, &b[i].err);
            if (!b[i].rc) {
                slot[nok++] = i;
                continue;
            }
            pipe_sched_expect(s->sched, -1); /* announced, never coming */
        }
        struct err e = {0};
        if (nok && pipe_sched_images(s->sched, w->px, nok, w->vecs, nok, 0, &e)) {
            for (int k = 0; k < nok; k++) {
                b[slot[k]].rc = -e.code;
                b[slot[k]].err = e;
            }
            continue;
        }
        for (int k = 0; k < nok; k++)
            memcpy(out + (size_t)slot[k] * dim, w->vecs + (size_t)k * dim, sizeof(float) * dim);
        done += nok;
    }
    return done;
}

static json_t *floats_json(const float *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++)
        json_array_append_new(a, json_real(v[i]));
    return a;
}

/* A JSON string of s even when s is not UTF-8 (a row stored before ids
 * were checked, a path from disk): bad bytes become U+FFFD, so the reply
 * still encodes; json_stringn_nocheck would make json_dumps fail. */
static json_t *str_json(const char *s)
{
    if (!s)
        return json_null();
    json_t *j = json_string(s);
    if (j)
        return j;
    char *fixed = utf8_repair(s);
    j = fixed ? json_string(fixed) : NULL;
    free(fixed);
    return j ? j : json_null();
}

static json_t *err_json(const struct http_server *s, const struct err *e)
{
    char clean[ERR_MSG_MAX + 64];
    http__scrub(s, e->msg, clean, sizeof clean, err_http_status(e->code) >= 500);
    return json_pack("{s:{s:s,s:o}}", "error", "code", err_str(e->code), "message",
                     str_json(clean));
}

static json_t *image_url(const char *id)
{
    char *enc = http_pct_encode(id);
    if (!enc)
        return json_null();
    size_t n = strlen(enc) + 16;
    char *u = malloc(n);
    json_t *j = NULL;
    if (u) {
        snprintf(u, n, "/items/%s/image", enc);
        j = json_string(u);
    }
    free(u);
    free(enc);
    return j ? j : json_null();
}

/* Metadata text from the store -> JSON (an empty object when unreadable). */
static json_t *metadata_json(const char *md)
{
    json_t *j = md ? json_loads(md, 0, NULL) : NULL;
    return j ? j : json_object();
}

/* ---- /extract-features ---------------------------------------------------------- */

static void features(struct http_req *r)
{
    if (load_json(r))
        return;
    struct http_server *s = r->s;
    struct blob b;
    get_image(r, &b);
    if (!b.present) {
        http__reply_errf(r, ERR_INVALID_ARGUMENT, "%s", no_image_msg);
        return;
    }
    float *v = malloc(sizeof(float) * (size_t)s->pipe->dim);
    if (!v) {
        blob_free(&b);
        http__reply_errf(r, ERR_NOMEM, "out of memory");
        return;
    }
    if (embed_blobs(r, &b, 1, v, 0) != 1) {
        http__reply_err(r, &b.err);
    } else {
        json_t *j = json_object();
        json_object_set_new(j, "features", floats_json(v, s->pipe->dim));
        json_object_set_new(j, "dimension", json_integer(s->pipe->dim));
        json_object_set_new(j, "model", json_string(s->model_id));
        http__reply_json(r, 200, j);
    }
    free(v);
    blob_free(&b);
}

/* ---- /extract-features-batch ------------------------------------------------------ */

/* The images of a batch request into *out (calloc'd). 0 or an error reply. */
static int get_images(struct http_req *r, struct blob **out, int *count)
{
    struct http_server *s = r->s;
    const int limit = s->cfg.batch_limit;
    size_t n = 0;
    json_t *arr = NULL;
    if (r->kind == HTTP_BODY_IMAGE) {
        n = 1;
    } else if (r->kind == HTTP_BODY_MULTIPART) {
        for (size_t i = 0; i < r->parts.n; i++)
            n += !strcmp(r->parts.v[i].name, "images") || !strcmp(r->parts.v[i].name, "image");
    } else if (r->json) {
        arr = json_object_get(r->json, "images");
        if (arr && !json_is_array(arr)) {
            http__reply_errf(r, ERR_INVALID_ARGUMENT, "\"images\" must be an array of base64 strings");
            return -1;
        }
        n = arr ? json_array_size(arr) : json_object_get(r->json, "image") ? 1 : 0;
    }
    if (n == 0) {
        http__reply_errf(r, ERR_INVALID_ARGUMENT,
                         "no images: send multipart parts \"images\", or JSON {\"images\": "
                         "[\"<base64>\", ...]}");
        return -1;
    }
    if (n > (size_t)limit) {
        http__reply_errf(r, ERR_TOO_LARGE, "%zu images in one request; at most %d", n, limit);
        return -1;
    }
    struct blob *b = calloc(n, sizeof *b);
    if (!b) {
        http__reply_errf(r, ERR_NOMEM, "out of memory");
        return -1;
    }
    if (r->kind == HTTP_BODY_IMAGE || (r->json && !arr)) {
        get_image(r, &b[0]);
    } else if (r->kind == HTTP_BODY_MULTIPART) {
        size_t k = 0;
        for (size_t i = 0; i < r->parts.n; i++)
            if (!strcmp(r->parts.v[i].name, "images") || !strcmp(r->parts.v[i].name, "image"))
                blob_from_part(&b[k++], &r->parts.v[i]);
    } else {
        for (size_t i = 0; i < n; i++) {
            char what[32];
            snprintf(what, sizeof what, "image %zu", i + 1);
            blob_from_b64(&b[i], json_array_get(arr, i), what, s->cfg.max_body);
        }
    }
    *out = b;
    *count = (int)n;
    return 0;
}

static void features_batch(struct http_req *r)
{
    if (load_json(r))
        return;
    struct http_server *s = r->s;
    struct blob *b = NULL;
    int n = 0;
    if (get_images(r, &b, &n))
        return;
    const int dim = s->pipe->dim;
    float *v = malloc(sizeof(float) * (size_t)dim * (size_t)n);
    if (!v) {
        http__reply_errf(r, ERR_NOMEM, "out of memory");
    } else {
        embed_blobs(r, b, n, v, 1);
        json_t *feats = json_array();
        for (int i = 0; i < n; i++)
            json_array_append_new(feats, b[i].rc ? err_json(s, &b[i].err)
                                                  : floats_json(v + (size_t)i * dim, dim));
        json_t *j = json_object();
        json_object_set_new(j, "features", feats);
        json_object_set_new(j, "dimension", json_integer(dim));
        json_object_set_new(j, "count", json_integer(n));
        json_object_set_new(j, "model", json_string(s->model_id));
        http__reply_json(r, 200, j);
    }
    free(v);
    for (int i = 0; i < n; i++)
        blob_free(&b[i]);
    free(b);
}

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

static void search(struct http_req *r)
{
    double t0 = http__now();
    if (load_json(r))
        return;
    struct http_server *s = r->s;
    const int dim = s->pipe->dim;
    struct err e = {0};
    struct blob b;
    struct filters fs = {.n = 0};
    struct store_hit *hits = NULL;
    size_t nh = 0;
    float *q = malloc(sizeof(float) * (size_t)dim);
    char nb[4][64];
    get_image(r, &b);
    const char *text = param(r, "text", nb[0], sizeof nb[0]);
    json_t *vj = r->json ? json_object_get(r->json, "vector") : NULL;
    if (vj && json_is_null(vj))
        vj = NULL;
    const char *id = param(r, "id", nb[1], sizeof nb[1]);
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
    if ((v = param(r, "k", nb[2], sizeof nb[2])) && http_parse_long("k", v, 1, QUERY_K_MAX, &k, &e))
        goto fail;
    if ((v = param(r, "offset", nb[2], sizeof nb[2])) &&
        http_parse_long("offset", v, 0, QUERY_OFFSET_MAX, &offset, &e))
        goto fail;
    if ((v = param(r, "min_score", nb[2], sizeof nb[2])) &&
        http_parse_float("min_score", v, -1, 1, &min_score, &e))
        goto fail;
    if ((v = param(r, "ef", nb[2], sizeof nb[2])) && http_parse_long("ef", v, 0, 10000, &ef, &e))
        goto fail;
    if (get_filters(r, &fs)) {
        e = fs.err;
        goto fail;
    }
    if (b.present) {
        if (b.rc || embed_blobs(r, &b, 1, q, 0) != 1) {
            e = b.err;
            goto fail;
        }
    } else if (text) {
        size_t tl = strlen(text);
        if (tl == 0 || tl > MAX_TEXT_BYTES) {
            err_set(&e, ERR_INVALID_ARGUMENT, "\"text\" must have 1..%d bytes, not %zu",
                    MAX_TEXT_BYTES, tl);
            goto fail;
        }
        if (pipe_sched_texts(s->sched, &text, 1, q, &e))
            goto fail;
        atomic_fetch_add_explicit(&s->metrics.text_embeddings, 1, memory_order_relaxed);
    } else if (vj) {
        if (!json_is_array(vj) || json_array_size(vj) != (size_t)dim) {
            err_set(&e, ERR_INVALID_ARGUMENT, "\"vector\" must be an array of %d numbers (the "
                    "model's dimension), not %zu", dim, json_is_array(vj) ? json_array_size(vj) : 0);
            goto fail;
        }
        double norm2 = 0;
        for (int i = 0; i < dim; i++) {
            json_t *x = json_array_get(vj, (size_t)i);
            double d = json_number_value(x);
            if (!json_is_number(x) || !isfinite(d) || fabs(d) > 3.4e38) {
                err_set(&e, ERR_INVALID_ARGUMENT, "\"vector\"[%d] is not a finite number", i);
                goto fail;
            }
            q[i] = (float)d;
            norm2 += (double)q[i] * q[i];
        }
        /* the index scores by cosine: a norm that float32 cannot invert
         * (64 x 1e-45) would give NaN scores */
        if (!(sqrt(norm2) >= STORE_VEC_MIN_NORM)) {
            err_set(&e, ERR_INVALID_ARGUMENT, "\"vector\" has a norm of %g; it must be at least %g",
                    sqrt(norm2), STORE_VEC_MIN_NORM);
            goto fail;
        }
    } else {
        if (query_item_vector(s->store, id, q, &e))
            goto fail;
    }
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
        json_object_set_new(h, "id", str_json(hits[i].id));
        json_t *score = json_real(hits[i].score); /* NULL for a NaN */
        if (!score) {
            json_decref(h);
            json_decref(res);
            err_set(&e, ERR_INTERNAL, "hit '%.200s' has no finite score", hits[i].id);
            goto fail;
        }
        json_object_set_new(h, "score", score);
        json_object_set_new(h, "metadata", metadata_json(hits[i].metadata));
        json_object_set_new(h, "image_url", hits[i].source ? image_url(hits[i].id) : json_null());
        json_array_append_new(res, h);
        shown++;
    }
    json_t *j = json_object();
    json_object_set_new(j, "results", res);
    json_object_set_new(j, "count", json_integer(shown));
    json_object_set_new(j, "took_ms", json_real(round((http__now() - t0) * 1e6) / 1e3));
    http__reply_json(r, 200, j);
    goto out;
fail:
    http__reply_err(r, &e);
out:
    store_hits_free(hits, nh);
    filters_free(&fs);
    blob_free(&b);
    free(q);
}

/* ---- /classify ------------------------------------------------------------------ */

struct labels {
    char *v[MAX_LABELS]; /* owned */
    int n;
};

static void labels_free(struct labels *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->v[i]);
    l->n = 0;
}

static int label_add(struct labels *l, const char *s, size_t n, struct err *err)
{
    while (n && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (!n)
        return 0;
    if (n > MAX_LABEL_BYTES)
        return err_set(err, ERR_INVALID_ARGUMENT, "label %d has %zu bytes (max %d)", l->n + 1, n,
                       MAX_LABEL_BYTES);
    if (l->n == MAX_LABELS)
        return err_set(err, ERR_INVALID_ARGUMENT, "more than %d labels", MAX_LABELS);
    if (!(l->v[l->n] = strndup(s, n)))
        return err_set(err, ERR_NOMEM, "out of memory");
    l->n++;
    return 0;
}

static int labels_from_json(struct labels *l, json_t *a, struct err *err)
{
    size_t i;
    json_t *x;
    json_array_foreach(a, i, x) {
        if (!json_is_string(x))
            return err_set(err, ERR_INVALID_ARGUMENT, "\"labels\"[%zu] is not a string", i);
        int rc = label_add(l, json_string_value(x), json_string_length(x), err);
        if (rc)
            return rc;
    }
    return 0;
}

static int get_labels(struct http_req *r, struct labels *l, struct err *err)
{
    json_t *a = r->json ? json_object_get(r->json, "labels") : NULL;
    int rc = 0;
    if (a && json_is_array(a)) {
        rc = labels_from_json(l, a, err);
    } else {
        char nb[64];
        const char *s = param(r, "labels", nb, sizeof nb);
        if (s && *s == '[') {
            json_t *j = json_loads(s, 0, NULL);
            rc = j && json_is_array(j)
                     ? labels_from_json(l, j, err)
                     : err_set(err, ERR_INVALID_ARGUMENT, "\"labels\" is not a JSON array of strings");
            json_decref(j);
        } else if (s) {
            for (const char *p = s; !rc;) {
                size_t n = strcspn(p, ",");
                rc = label_add(l, p, n, err);
                if (!p[n])
                    break;
                p += n + 1;
            }
        }
    }
    if (!rc && l->n < 2)
        rc = err_set(err, ERR_INVALID_ARGUMENT,
                     "\"labels\" needs at least two labels (a JSON array or a comma-separated list)");
    return rc;
}

static void classify(struct http_req *r)
{
    if (load_json(r))
        return;
    struct http_server *s = r->s;
    const int dim = s->pipe->dim;
    struct err e = {0};
    struct labels l = {.n = 0};
    struct blob b;
    char *texts[MAX_LABELS] = {0};
    float *lv = NULL, *iv = NULL;
    struct query_label *rk = NULL;
    char nb[2][64];
    get_image(r, &b);
    if (!b.present) {
        err_set(&e, ERR_INVALID_ARGUMENT, "%s", no_image_msg);
        goto fail;
    }
    if (get_labels(r, &l, &e))
        goto fail;
    const char *tpl = param(r, "template", nb[0], sizeof nb[0]);
    if (!tpl || !*tpl)
        tpl = QUERY_TEMPLATE_DEFAULT;
    if (strlen(tpl) > 1000) {
        err_set(&e, ERR_INVALID_ARGUMENT, "\"template\" is over 1000 bytes");
        goto fail;
    }
    long top = l.n;
    const char *v = param(r, "top", nb[1], sizeof nb[1]);
    if (v && http_parse_long("top", v, 1, l.n, &top, &e))
        goto fail;
    lv = malloc(sizeof(float) * (size_t)dim * (size_t)l.n);
    iv = malloc(sizeof(float) * (size_t)dim);
    rk = malloc(sizeof *rk * (size_t)l.n);
    if (!lv || !iv || !rk) {
        err_set(&e, ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < l.n; i++)
        if (!(texts[i] = query_label_text(tpl, l.v[i]))) {
            err_set(&e, ERR_NOMEM, "out of memory");
            goto fail;
        }
    if (b.rc || embed_blobs(r, &b, 1, iv, 0) != 1) {
        e = b.err;
        goto fail;
    }
    if (pipe_sched_texts(s->sched, (const char *const *)texts, l.n, lv, &e))
        goto fail;
    atomic_fetch_add_explicit(&s->metrics.text_embeddings, (uint_fast64_t)l.n,
                              memory_order_relaxed);
    if (query_rank_labels(iv, lv, l.n, dim, clip_logit_scale(s->pipe->model), rk, &e))
        goto fail;
    json_t *arr = json_array();
    for (int i = 0; i < l.n && i < top; i++)
        json_array_append_new(arr, json_pack("{s:o,s:f,s:f}", "label", str_json(l.v[rk[i].idx]),
                                             "prob", (double)rk[i].prob, "logit",
                                             (double)rk[i].logit));
    json_t *j = json_object();
    json_object_set_new(j, "labels", arr);
    json_object_set_new(j, "template", json_string(tpl));
    json_object_set_new(j, "model", json_string(s->model_id));
    http__reply_json(r, 200, j);
    goto out;
fail:
    http__reply_err(r, &e);
out:
    for (int i = 0; i < l.n; i++)
        free(texts[i]);
    labels_free(&l);
    blob_free(&b);
    free(lv);
    free(iv);
    free(rk);
}

/* ---- /items ---------------------------------------------------------------------- */

static json_t *item_json(const struct store_item *it, int with_embedding, int dim)
{
    json_t *j = json_object();
    json_object_set_new(j, "id", str_json(it->id));
    json_object_set_new(j, "source", str_json(it->source));
    json_object_set_new(j, "sha256", str_json(it->sha256));
    json_object_set_new(j, "size", it->size >= 0 ? json_integer(it->size) : json_null());
    json_object_set_new(j, "mtime", it->mtime >= 0 ? json_integer(it->mtime) : json_null());
    json_object_set_new(j, "metadata", metadata_json(it->metadata));
    json_object_set_new(j, "has_embedding", json_boolean(it->has_embedding));
    json_object_set_new(j, "model", str_json(it->model));
    json_object_set_new(j, "created_at", json_integer(it->created_at));
    json_object_set_new(j, "updated_at", json_integer(it->updated_at));
    json_object_set_new(j, "image_url", it->source ? image_url(it->id) : json_null());
    if (with_embedding && it->embedding)
        json_object_set_new(j, "embedding", floats_json(it->embedding, dim));
    return j;
}

static void items_list(struct http_req *r)
{
    struct http_server *s = r->s;
    struct err e = {0};
    long cursor = 0, limit = LIST_DEFAULT;
    const char *v;
    if ((v = http__query(r, "cursor")) && *v &&
        http_parse_long("cursor", v, 0, LONG_MAX, &cursor, &e)) {
        http__reply_err(r, &e);
        return;
    }
    if ((v = http__query(r, "limit")) && http_parse_long("limit", v, 1, LIST_MAX, &limit, &e)) {
        http__reply_err(r, &e);
        return;
    }
    struct store_item *items = NULL;
    size_t n = 0;
    int64_t next = 0, total = 0;
    if (store_list(s->store, cursor, (int)limit, &items, &n, &next, &e) ||
        store_count(s->store, &total, &e)) {
        store_items_free(items, n);
        http__reply_err(r, &e);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *ij = item_json(&items[i], 0, s->pipe->dim);
        http__failed_annotate(s, ij); /* failed.c */
        json_array_append_new(arr, ij);
    }
    store_items_free(items, n);
    json_t *j = json_object();
    json_object_set_new(j, "items", arr);
    json_object_set_new(j, "count", json_integer((json_int_t)n));
    json_object_set_new(j, "total", json_integer(total));
    if (next) {
        char c[32];
        snprintf(c, sizeof c, "%" PRId64, next);
        json_object_set_new(j, "next_cursor", json_string(c));
    } else {
        json_object_set_new(j, "next_cursor", json_null());
    }
    http__reply_json(r, 200, j);
}

static void item_get(struct http_req *r)
{
    struct http_server *s = r->s;
    struct err e = {0};
    struct store_item it = {0};
    if (store_get(s->store, r->m.id, &it, &e)) {
        http__reply_err(r, &e);
        return;
    }
    int emb = http_parse_bool(http__query(r, "embedding")) == 1;
    json_t *ij = item_json(&it, emb, s->pipe->dim);
    http__failed_annotate(s, ij); /* failed.c */
    http__reply_json(r, 200, ij);
    store_item_clear(&it);
}

/* 1 when path is inside dir (both resolved). */
static int inside(const char *path, const char *dir)
{
    if (!dir)
        return 0;
    size_t n = strlen(dir);
    return !strncmp(path, dir, n) && (path[n] == '/' || (n == 1 && dir[0] == '/'));
}

/* Removes an upload file no item uses any more. Called under upload_mu. */
static void drop_upload(struct http_server *s, const char *source)
{
    if (!source || !inside(source, s->upload_dir))
        return;
    struct store_item other = {0};
    struct err e;
    int rc = store_find_source(s->store, source, &other, &e);
    store_item_clear(&other);
    if (rc == -ERR_NOT_FOUND)
        unlink(source);
}

/* The metadata of a PUT as JSON text (malloc'd) or NULL for none. */
static int put_metadata(struct http_req *r, char **out, struct err *err)
{
    *out = NULL;
    json_t *md = r->json ? json_object_get(r->json, "metadata") : NULL;
    json_t *parsed = NULL;
    if (!md || json_is_null(md)) {
        const char *t = NULL;
        if (r->kind == HTTP_BODY_MULTIPART) {
            const struct http_part *p = http_parts_get(&r->parts, "metadata", 0);
            t = p ? (const char *)p->data : NULL;
        }
        if (!t && !r->json)
            t = http__query(r, "metadata");
        if (!t)
            return 0;
        json_error_t je;
        if (!(md = parsed = json_loads(t, 0, &je)))
            return err_set(err, ERR_INVALID_ARGUMENT, "metadata is not JSON: %s", je.text);
    }
    int rc = 0;
    struct json_shape sh = {0, 0};
    if (!json_is_object(md))
        rc = err_set(err, ERR_INVALID_ARGUMENT, "metadata must be a JSON object");
    else if (!(*out = json_dumps(md, JSON_COMPACT)))
        rc = err_set(err, ERR_NOMEM, "out of memory");
    else if (json_shape_scan(*out, strlen(*out), 0, STORE_METADATA_DEPTH_MAX, &sh),
             sh.depth > STORE_METADATA_DEPTH_MAX)
        rc = err_set(err, ERR_INVALID_ARGUMENT, "metadata is nested over %d levels deep",
                     STORE_METADATA_DEPTH_MAX);
    json_decref(parsed);
    return rc;
}

static void item_put(struct http_req *r)
{
    if (load_json(r))
        return;
    struct http_server *s = r->s;
    struct err e = {0};
    struct blob b;
    struct store_item old = {0}, now = {0};
    char *md = NULL, *path = NULL;
    float *vec = NULL;
    int status = 0, is_new = 0, locked = 0;
    int async = http_parse_bool(http__query(r, "async"));
    get_image(r, &b);
    if (async < 0) {
        err_set(&e, ERR_INVALID_ARGUMENT, "async must be 0 or 1");
        goto fail;
    }
    if (!b.present) {
        err_set(&e, ERR_INVALID_ARGUMENT, "%s", no_image_msg);
        goto fail;
    }
    if (b.rc) {
        e = b.err;
        goto fail;
    }
    if (strlen(r->m.id) > STORE_ID_MAX) {
        err_set(&e, ERR_INVALID_ARGUMENT, "item id of %zu bytes (max %d)", strlen(r->m.id),
                STORE_ID_MAX);
        goto fail;
    }
    if (put_metadata(r, &md, &e))
        goto fail;
    enum img_format fmt = img_sniff(b.p, b.n);
    if (fmt == IMG_FMT_UNKNOWN) {
        err_set(&e, ERR_UNSUPPORTED_FORMAT,
                "image: not an image we can read (JPEG, PNG, WebP or GIF)");
        goto fail;
    }
    if (!async) {
        if (!(vec = malloc(sizeof(float) * (size_t)s->pipe->dim))) {
            err_set(&e, ERR_NOMEM, "out of memory");
            goto fail;
        }
        if (embed_blobs(r, &b, 1, vec, 0) != 1) {
            e = b.err;
            goto fail;
        }
    }
    char sha[SHA256_HEX_LEN + 1];
    sha256_hex(b.p, b.n, sha);
    size_t pl = strlen(s->upload_dir) + 80;
    if (!(path = malloc(pl))) {
        err_set(&e, ERR_NOMEM, "out of memory");
        goto fail;
    }
    snprintf(path, pl, "%s/%s.%s", s->upload_dir, sha, img_format_name(fmt));
    pthread_mutex_lock(&s->upload_mu);
    locked = 1;
    struct err ge;
    int had = store_get(s->store, r->m.id, &old, &ge) == 0;
    if (!fs_exists(path) && fs_write_file(path, b.p, b.n, &e))
        goto fail;
    struct store_item it = {
        .id = r->m.id,
        .source = path,
        .sha256 = sha,
        .size = (int64_t)b.n,
        .mtime = -1,
        .metadata = md,
        .embedding = vec,
    };
    /* the reply is the row as written: reading it again after the lock
     * could find it deleted by a DELETE that was waiting for the lock */
    if (store_put_get(s->store, &it, &is_new, &now, &e)) {
        if (!had)
            drop_upload(s, path);
        goto fail;
    }
    if (had && old.source && strcmp(old.source, path) != 0)
        drop_upload(s, old.source);
    pthread_mutex_unlock(&s->upload_mu);
    locked = 0;
    if (async && !now.has_embedding) {
        http_precompute_wake(s->pc, now.seq);
        status = 202;
    } else {
        status = is_new ? 201 : 200;
    }
    http__reply_json(r, status, item_json(&now, 0, s->pipe->dim));
    goto out;
fail:
    http__reply_err(r, &e);
out:
    if (locked)
        pthread_mutex_unlock(&s->upload_mu);
    store_item_clear(&old);
    store_item_clear(&now);
    blob_free(&b);
    free(md);
    free(path);
    free(vec);
}

static void item_delete(struct http_req *r)
{
    struct http_server *s = r->s;
    struct err e = {0};
    struct store_item it = {0};
    pthread_mutex_lock(&s->upload_mu);
    int rc = store_get(s->store, r->m.id, &it, &e);
    if (!rc)
        rc = store_delete(s->store, r->m.id, &e);
    if (!rc)
        drop_upload(s, it.source);
    pthread_mutex_unlock(&s->upload_mu);
    store_item_clear(&it);
    if (rc) {
        http__reply_err(r, &e);
        return;
    }
    json_t *j = json_object();
    json_object_set_new(j, "id", str_json(r->m.id));
    json_object_set_new(j, "deleted", json_true());
    http__reply_json(r, 200, j);
}

static void item_image(struct http_req *r)
{
    struct http_server *s = r->s;
    struct err e = {0};
    struct store_item it = {0};
    char *real = NULL;
    int fd = -1;
    if (store_get(s->store, r->m.id, &it, &e))
        goto fail;
    /* every refusal below is the same 404: nothing says whether a file
     * outside the roots exists */
    err_set(&e, ERR_NOT_FOUND, "item '%.200s' has no image to serve", r->m.id);
    if (!it.source || !(real = realpath(it.source, NULL)))
        goto fail;
    const char *root = inside(real, s->upload_dir) ? s->upload_dir : NULL;
    for (int i = 0; i < s->nroots && !root; i++)
        if (inside(real, s->roots[i]))
            root = s->roots[i];
    if (!root)
        goto fail;
    /* realpath said where the file is; the open must land there even if a
     * folder of the path becomes a link meanwhile: no component followed */
    fd = fs_open_beneath(root, real + strlen(root) + (strcmp(root, "/") != 0), 1);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        goto fail;
    uint8_t head[16];
    ssize_t got = pread(fd, head, sizeof head, 0);
    enum img_format fmt = got > 0 ? img_sniff(head, (size_t)got) : IMG_FMT_UNKNOWN;
    http__reply_bytes(r, 200, img_format_mime(fmt), NULL, 0, 1);
    r->reply.fd = fd;
    r->reply.fd_len = (uint64_t)sb.st_size;
    r->reply.cache = 1;
    fd = -1;
    goto out;
fail:
    http__reply_err(r, &e);
out:
    if (fd >= 0)
        close(fd);
    free(real);
    store_item_clear(&it);
}

/* ---- /health, /metrics, / ---------------------------------------------------------- */

static void health(struct http_req *r)
{
    struct http_server *s = r->s;
    int state = atomic_load(&s->state);
    json_t *j = json_object();
    const char *status = state == HTTP__LOADING ? "loading" : state == HTTP__FAILED ? "failed" : "ok";
    json_t *pcj = json_null();
    if (state == HTTP__READY) {
        struct http_precompute_progress p;
        http_precompute_progress(s->pc, &p);
        if (p.state == HTTP_PC_FAILED)
            status = "degraded";
        pcj = json_object();
        json_object_set_new(pcj, "state", json_string(http_precompute_state_name(p.state)));
        json_object_set_new(pcj, "catalogs", json_integer(s->nroots));
        json_object_set_new(pcj, "files", json_integer(p.files));
        json_object_set_new(pcj, "added", json_integer(p.added));
        json_object_set_new(pcj, "changed", json_integer(p.changed));
        json_object_set_new(pcj, "unchanged", json_integer(p.unchanged));
        json_object_set_new(pcj, "waiting_at_start", json_integer(p.waiting_at_start));
        json_object_set_new(pcj, "embedded", json_integer(p.embedded));
        json_object_set_new(pcj, "failed", json_integer(p.failed));
        char clean[ERR_MSG_MAX + 64];
        http__scrub(s, p.last_error, clean, sizeof clean, 0);
        json_object_set_new(pcj, "last_error", p.last_error[0] ? str_json(clean) : json_null());
    }
    json_object_set_new(j, "status", json_string(status));
    json_object_set_new(j, "version", json_string(s->cfg.version ? s->cfg.version : "?"));
    json_object_set_new(j, "uptime_s", json_real(round((http__now() - s->t_start) * 1e3) / 1e3));
    if (state == HTTP__READY) {
        /* a poll thread: the counts the store keeps, no query */
        int64_t items = -1, waiting = -1;
        store_counts_cached(s->store, &items, &waiting);
        json_object_set_new(j, "model", json_string(s->model_id));
        json_object_set_new(j, "dim", json_integer(s->pipe->dim));
        json_object_set_new(j, "precision", json_string(pipe_precision_name(s->pipe)));
        json_object_set_new(j, "text", json_boolean(s->pipe->tok && clip_has_text(s->pipe->model)));
        const char *base = strrchr(s->cfg.store, '/'); /* the name, not where it lies */
        json_object_set_new(j, "store", json_pack("{s:s,s:o}", "kind", "embedded", "name",
                                                  str_json(base ? base + 1 : s->cfg.store)));
        json_object_set_new(j, "items", json_integer(items));
        json_object_set_new(j, "waiting", json_integer(waiting));
        json_object_set_new(j, "failed", /* failed.c: of the waiting items */
                            json_integer(http_failed_count(http_precompute_failed(s->pc))));
        struct pipe_sched_stats bs;
        pipe_sched_stats(s->sched, &bs);
        json_object_set_new(j, "batcher", json_pack("{s:i,s:i,s:i,s:I,s:I}", "max_batch",
                                                    s->cfg.max_batch, "max_wait_ms",
                                                    s->cfg.batch_wait_ms, "queued", bs.queued,
                                                    "batches", (json_int_t)bs.batches, "images",
                                                    (json_int_t)bs.images));
    } else if (state == HTTP__FAILED) {
        char clean[ERR_MSG_MAX + 64];
        http__scrub(s, s->load_error, clean, sizeof clean, 1);
        json_object_set_new(j, "error", str_json(clean));
    }
    json_object_set_new(j, "precompute", pcj);
    http__reply_json(r, 200, j);
}

static void metrics(struct http_req *r)
{
    struct http_server *s = r->s;
    struct http_metrics_extra x = {.items = -1, .waiting = -1};
    x.uptime_s = http__now() - s->t_start;
    x.loading = atomic_load(&s->state) == HTTP__LOADING;
    pthread_mutex_lock(&s->qmu);
    x.work_queue = s->qlen;
    pthread_mutex_unlock(&s->qmu);
    if (atomic_load(&s->state) == HTTP__READY) {
        store_counts_cached(s->store, &x.items, &x.waiting); /* a poll thread: no query */
        struct pipe_sched_stats bs;
        pipe_sched_stats(s->sched, &bs);
        x.image_embeddings = bs.images;
        x.batches = bs.batches;
        memcpy(x.batch_hist, bs.hist, sizeof x.batch_hist);
        x.batch_sum = bs.images;
        x.forward_seconds = bs.forward_s;
        x.queue_depth = bs.queued;
        struct http_precompute_progress p;
        http_precompute_progress(s->pc, &p);
        x.precompute_embedded = p.embedded;
        x.precompute_failed = p.failed;
        x.items_failed = http_failed_count(http_precompute_failed(s->pc)); /* failed.c */
    }
    size_t n = 0;
    char *text = http_metrics_render(&s->metrics, &x, &n);
    if (!text) {
        http__reply_errf(r, ERR_NOMEM, "out of memory");
        return;
    }
    http__reply_bytes(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, n, 0);
}

static void page(struct http_req *r)
{
    http__reply_bytes(r, 200, "text/html; charset=utf-8", (char *)http__page, http__page_len, 1);
}

void http__dispatch(struct http_req *r)
{
    switch (r->m.route) {
    case HTTP_ROUTE_PAGE: page(r); break;
    case HTTP_ROUTE_HEALTH: health(r); break;
    case HTTP_ROUTE_METRICS: metrics(r); break;
    case HTTP_ROUTE_FEATURES: features(r); break;
    case HTTP_ROUTE_FEATURES_BATCH: features_batch(r); break;
    case HTTP_ROUTE_SEARCH: search(r); break;
    case HTTP_ROUTE_CLASSIFY: classify(r); break;
    case HTTP_ROUTE_ITEMS: items_list(r); break;
    case HTTP_ROUTE_ITEM:
        if (r->m.method == HTTP_M_PUT)
            item_put(r);
        else if (r->m.method == HTTP_M_DELETE)
            item_delete(r);
        else
            item_get(r);
        break;
    case HTTP_ROUTE_ITEM_IMAGE: item_image(r); break;
    case HTTP_ROUTE_ITEM_THUMB: http__item_thumb(r); break; /* thumbs.c */
    default: http__reply_errf(r, ERR_NOT_FOUND, "no such endpoint"); break;
    }
    if (!r->reply.status)
        http__reply_errf(r, ERR_INTERNAL, "the handler gave no reply");
}
