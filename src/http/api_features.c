/* api_features.c - the seed's feature-extraction API: POST
 * /extract-features (one image) and /extract-features-batch (up to
 * --batch-limit images, each answered with its vector or its error).
 *
 * 1. Images are decoded and preprocessed on the worker thread that runs
 *    the request (in parallel), then embedded through the scheduler
 *    (pipe/sched.h), which batches them with other requests' images.
 * 2. One bad image of a batch fails alone: its entry is an error object,
 *    the others are embedded.
 */
#include "http/http_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int http__embed_blobs(struct http_req *r, struct http__blob *b, int n, float *out, int name_each)
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

/* ---- /extract-features ---------------------------------------------------------- */

void http__api_features(struct http_req *r)
{
    if (http__load_json(r))
        return;
    struct http_server *s = r->s;
    struct http__blob b;
    http__get_image(r, &b);
    if (!b.present) {
        http__reply_errf(r, ERR_INVALID_ARGUMENT, "%s", http__no_image_msg);
        return;
    }
    float *v = malloc(sizeof(float) * (size_t)s->pipe->dim);
    if (!v) {
        http__blob_free(&b);
        http__reply_errf(r, ERR_NOMEM, "out of memory");
        return;
    }
    if (http__embed_blobs(r, &b, 1, v, 0) != 1) {
        http__reply_err(r, &b.err);
    } else {
        json_t *j = json_object();
        json_object_set_new(j, "features", http__floats_json(v, s->pipe->dim));
        json_object_set_new(j, "dimension", json_integer(s->pipe->dim));
        json_object_set_new(j, "model", json_string(s->model_id));
        http__reply_json(r, 200, j);
    }
    free(v);
    http__blob_free(&b);
}

/* ---- /extract-features-batch ------------------------------------------------------ */

/* The images of a batch request into *out (calloc'd). 0 or an error reply. */
static int get_images(struct http_req *r, struct http__blob **out, int *count)
{
    struct http_server *s = r->s;
    const int limit = s->cfg.batch_limit;
    size_t n = 0;
    json_t *arr = NULL;
    if (r->kind == HTTP_BODY_IMAGE) {
        n = 1;
    } else if (r->kind == HTTP_BODY_MULTIPART) {
        for (size_t i = 0; i < r->parts.n; i++)
            n += http__image_field(r->parts.v[i].name);
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
    struct http__blob *b = calloc(n, sizeof *b);
    if (!b) {
        http__reply_errf(r, ERR_NOMEM, "out of memory");
        return -1;
    }
    if (r->kind == HTTP_BODY_IMAGE || (r->json && !arr)) {
        http__get_image(r, &b[0]);
    } else if (r->kind == HTTP_BODY_MULTIPART) {
        size_t k = 0;
        for (size_t i = 0; i < r->parts.n; i++)
            if (http__image_field(r->parts.v[i].name))
                http__blob_from_part(&b[k++], &r->parts.v[i]);
    } else {
        for (size_t i = 0; i < n; i++) {
            char what[32];
            snprintf(what, sizeof what, "image %zu", i + 1);
            http__blob_from_b64(&b[i], json_array_get(arr, i), what, s->cfg.max_body);
        }
    }
    *out = b;
    *count = (int)n;
    return 0;
}

void http__api_features_batch(struct http_req *r)
{
    if (http__load_json(r))
        return;
    struct http_server *s = r->s;
    struct http__blob *b = NULL;
    int n = 0;
    if (get_images(r, &b, &n))
        return;
    const int dim = s->pipe->dim;
    float *v = malloc(sizeof(float) * (size_t)dim * (size_t)n);
    if (!v) {
        http__reply_errf(r, ERR_NOMEM, "out of memory");
    } else {
        http__embed_blobs(r, b, n, v, 1);
        json_t *feats = json_array();
        for (int i = 0; i < n; i++)
            json_array_append_new(feats, b[i].rc ? http__err_json(s, &b[i].err)
                                                  : http__floats_json(v + (size_t)i * dim, dim));
        json_t *j = json_object();
        json_object_set_new(j, "features", feats);
        json_object_set_new(j, "dimension", json_integer(dim));
        json_object_set_new(j, "count", json_integer(n));
        json_object_set_new(j, "model", json_string(s->model_id));
        http__reply_json(r, 200, j);
    }
    free(v);
    for (int i = 0; i < n; i++)
        http__blob_free(&b[i]);
    free(b);
}

