/* api_classify.c - POST /classify: zero-shot labels for an image, ranked
 * by the query layer (query/query.h) from the label texts put in a
 * template, as the CLI's `classify` does.
 *
 * 1. Labels come as a JSON array, a JSON array as text, or a
 *    comma-separated list; at least two, at most HTTP_MAX_LABELS.
 */
#include "http/http_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "query/query.h"

#define MAX_LABEL_BYTES 300 /* bytes per label */

/* ---- /classify ------------------------------------------------------------------ */

struct labels {
    char *v[HTTP_MAX_LABELS]; /* owned */
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
    if (l->n == HTTP_MAX_LABELS)
        return err_set(err, ERR_INVALID_ARGUMENT, "more than %d labels", HTTP_MAX_LABELS);
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
        const char *s = http__param(r, "labels", nb, sizeof nb);
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

void http__api_classify(struct http_req *r)
{
    if (http__load_json(r))
        return;
    struct http_server *s = r->s;
    const int dim = s->pipe->dim;
    struct err e = {0};
    struct labels l = {.n = 0};
    struct http__blob b;
    char *texts[HTTP_MAX_LABELS] = {0};
    float *lv = NULL, *iv = NULL;
    struct query_label *rk = NULL;
    char nb[2][64];
    http__get_image(r, &b);
    if (!b.present) {
        err_set(&e, ERR_INVALID_ARGUMENT, "%s", http__no_image_msg);
        goto fail;
    }
    if (get_labels(r, &l, &e))
        goto fail;
    const char *tpl = http__param(r, "template", nb[0], sizeof nb[0]);
    if (!tpl || !*tpl)
        tpl = QUERY_TEMPLATE_DEFAULT;
    if (strlen(tpl) > 1000) {
        err_set(&e, ERR_INVALID_ARGUMENT, "\"template\" is over 1000 bytes");
        goto fail;
    }
    long top = l.n;
    const char *v = http__param(r, "top", nb[1], sizeof nb[1]);
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
    if (b.rc || http__embed_blobs(r, &b, 1, iv, 0) != 1) {
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
        json_array_append_new(arr, json_pack("{s:o,s:f,s:f}", "label", http__str_json(l.v[rk[i].idx]),
                                             "prob", (double)rk[i].prob, "logit",
                                             (double)rk[i].logit));
    json_t *j = json_object();
    json_object_set_new(j, "labels", arr);
    json_object_set_new(j, "template", json_string(tpl));
    json_object_set_new(j, "model", json_string(s->model_id));
    http__reply_json(r, 200, j);
fail: /* the one way out; success has replied already */
    if (!r->reply.status)
        http__reply_err(r, &e);
    for (int i = 0; i < l.n; i++)
        free(texts[i]);
    labels_free(&l);
    http__blob_free(&b);
    free(lv);
    free(iv);
    free(rk);
}

