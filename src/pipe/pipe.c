/* pipe.c - decode -> preprocess -> embed, for images and texts. */
#include "pipe/pipe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/fsutil.h"

int pipe_parse_precision(const char *s, enum pipe_precision *out, struct err *err)
{
    if (!strcmp(s, "auto"))
        *out = PIPE_PREC_AUTO;
    else if (!strcmp(s, "fp32"))
        *out = PIPE_PREC_FP32;
    else if (!strcmp(s, "bf16"))
        *out = PIPE_PREC_BF16;
    else
        return err_set(err, ERR_INVALID_ARGUMENT,
                       "precision must be auto, fp32 or bf16, not '%s'", s);
    return 0;
}

int pipe_open(struct pipe **out, const char *model, const struct pipe_opts *o,
              struct err *err)
{
    static const struct pipe_opts defaults = {0};
    if (!o)
        o = &defaults;
    *out = NULL;
    struct pipe *p = calloc(1, sizeof *p);
    if (!p)
        return err_set(err, ERR_NOMEM, "out of memory");
    struct clip_model_opts mo = {.weights = o->weights, .skip_text = o->skip_text};
    mo.prec = o->prec == PIPE_PREC_BF16 ? CLIP_BF16
            : o->prec == PIPE_PREC_FP32 ? CLIP_FP32
            : clip_cpu_has_bf16()       ? CLIP_BF16
                                        : CLIP_FP32;
    int rc = clip_model_load(&p->model, model, &mo, err);
    if (rc)
        goto fail;
    if (clip_has_text(p->model)) {
        struct err te;
        /* a folder without tokenizer files can still embed images */
        if (tok_new_from_dir(&p->tok, clip_model_dir(p->model), &te) != 0)
            p->tok = NULL;
    }
    const struct clip_prep *cp = clip_model_prep(p->model);
    p->prep.resize_short = cp->resize_short;
    p->prep.crop = cp->crop;
    memcpy(p->prep.mean, cp->mean, sizeof p->prep.mean);
    memcpy(p->prep.std, cp->std, sizeof p->prep.std);
    p->dopts.max_pixels = o->max_pixels;
    p->dopts.min_side = o->full_decode ? 0 : cp->resize_short;
    p->dim = clip_embed_dim(p->model);
    p->size = clip_image_size(p->model);
    *out = p;
    return 0;
fail:
    pipe_free(p);
    return rc;
}

void pipe_free(struct pipe *p)
{
    if (!p)
        return;
    clip_model_free(p->model);
    tok_free(p->tok);
    free(p);
}

int pipe_prepare_bytes(struct pipe *p, const uint8_t *data, size_t n,
                       const char *name, float *pixels, struct err *err)
{
    struct img im = {0};
    int rc = img_decode(&im, data, n, &p->dopts, err);
    if (!rc)
        rc = img_preprocess(&im, &p->prep, pixels, err);
    if (rc && name)
        err_prefix(err, "%s", name);
    img_free(&im);
    return rc;
}

int pipe_prepare_file(struct pipe *p, const char *path, float *pixels,
                      struct err *err)
{
    uint8_t *buf;
    size_t n;
    int rc = fs_read_file(path, IMG_MAX_FILE_BYTES, &buf, &n, err);
    if (rc)
        return rc;
    rc = pipe_prepare_bytes(p, buf, n, path, pixels, err);
    free(buf);
    return rc;
}

int pipe_embed_pixels(struct pipe *p, const float *pixels, int b, float *out,
                      int raw, struct err *err)
{
    int rc = clip_embed_images(p->model, pixels, b, out, err);
    if (!rc && !raw)
        for (int i = 0; i < b; i++)
            clip_l2_normalize(out + (size_t)i * p->dim, p->dim);
    return rc;
}

int pipe_embed_texts(struct pipe *p, const char *const *texts, int n, float *out,
                     int raw, struct err *err)
{
    if (!clip_has_text(p->model))
        return err_set(err, ERR_NOT_FOUND, "this model has no text tower");
    if (!p->tok)
        return err_set(err, ERR_NOT_FOUND, "%s: no tokenizer files (vocab.json + merges.txt "
                       "or bpe_simple_vocab_16e6.txt.gz)", clip_model_dir(p->model));
    if (n <= 0)
        return 0;
    const int ctx = clip_context(p->model);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)ctx * (size_t)n);
    int32_t **rows = malloc(sizeof(int32_t *) * (size_t)n);
    int *lens = malloc(sizeof(int) * (size_t)n);
    int rc = 0;
    if (!ids || !rows || !lens) {
        rc = err_set(err, ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        rows[i] = ids + (size_t)i * ctx;
        rc = tok_encode(p->tok, texts[i], strlen(texts[i]), rows[i], ctx, &lens[i], err);
        if (rc) {
            if (n > 1)
                err_prefix(err, "text %d", i + 1);
            goto fail;
        }
    }
    rc = clip_embed_ids(p->model, (const int32_t *const *)rows, lens, n, out, err);
    if (!rc && !raw)
        for (int i = 0; i < n; i++)
            clip_l2_normalize(out + (size_t)i * p->dim, p->dim);
fail:
    free(ids);
    free(rows);
    free(lens);
    return rc;
}

int pipe_embed_text(struct pipe *p, const char *text, float *out, int raw,
                    struct err *err)
{
    return pipe_embed_texts(p, &text, 1, out, raw, err);
}

const char *pipe_precision_name(const struct pipe *p)
{
    return clip_model_precision(p->model) == CLIP_BF16 ? "bf16" : "fp32";
}

void pipe_zero_shot(const float *img, const float *labels, int n, int dim, float scale,
                    float *probs, float *logits)
{
    double ii = 0, mx = -INFINITY, sum = 0;
    for (int k = 0; k < dim; k++)
        ii += (double)img[k] * img[k];
    for (int i = 0; i < n; i++) {
        const float *l = labels + (size_t)i * dim;
        double ll = 0, il = 0;
        for (int k = 0; k < dim; k++) {
            ll += (double)l[k] * l[k];
            il += (double)img[k] * l[k];
        }
        double lg = ii > 0 && ll > 0 ? scale * il / sqrt(ii * ll) : 0.0;
        probs[i] = (float)lg;
        if (lg > mx)
            mx = lg;
    }
    for (int i = 0; i < n; i++) {
        if (logits)
            logits[i] = probs[i];
        double e = exp(probs[i] - mx);
        probs[i] = (float)e;
        sum += e;
    }
    for (int i = 0; i < n; i++)
        probs[i] = (float)(probs[i] / sum);
}
