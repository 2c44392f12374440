/* model.c - loading CLIP checkpoints in either naming scheme, and the
 * image and text forward passes built on tower.c.
 *
 * Design:
 * 1. A name table maps each logical weight to its Hugging Face name and its
 *    OpenAI/open_clip name; the scheme is detected from which patch
 *    embedding name exists. HF stores q/k/v separately (stacked here into
 *    one (3C, C) product like in_proj_weight); OpenAI stores the projections
 *    transposed ((C, D) instead of (D, C)), transposed here once.
 * 2. The architecture comes from the shapes: width from the patch embedding,
 *    patch size from its kernel, grid from the position table, layers by
 *    counting blocks, MLP width from fc1, context and vocabulary from the
 *    text tables. config.json may only refine heads, epsilon and activation
 *    (heads default to width / 64 as in OpenAI's build_model).
 * 3. The token table (the largest tensor) is not converted: its rows are
 *    read from the mapped file when used.
 */
#include "clip/clip_int.h"

#include <jansson.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "clip/pytorch.h"
#include "util/fsutil.h"

enum scheme { HF, OAI };

struct loader {
    struct st_file *st;
    enum scheme sc;
    const char *file;
    struct err *err;
};

/* Formats a tensor name for the scheme; vision = 1 for the image tower. */
static void tname(char *buf, size_t n, const struct loader *ld, int vision,
                  int layer, const char *hf, const char *oai)
{
    if (ld->sc == HF) {
        if (layer >= 0)
            snprintf(buf, n, "%s_model.encoder.layers.%d.%s", vision ? "vision" : "text",
                     layer, hf);
        else
            snprintf(buf, n, "%s", hf);
    } else {
        if (layer >= 0)
            snprintf(buf, n, "%stransformer.resblocks.%d.%s", vision ? "visual." : "",
                     layer, oai);
        else
            snprintf(buf, n, "%s", oai);
    }
}

static const struct st_tensor *need(struct loader *ld, const char *name)
{
    const struct st_tensor *t = st_find(ld->st, name);
    if (!t)
        err_set(ld->err, ERR_CORRUPT, "%s: tensor \"%s\" is missing", ld->file, name);
    return t;
}

/* Loads tensor name as fp32, checking it has numel elements. */
static float *load(struct loader *ld, const char *name, int64_t numel)
{
    const struct st_tensor *t = need(ld, name);
    if (!t)
        return NULL;
    if (t->numel != numel) {
        err_set(ld->err, ERR_CORRUPT, "%s: tensor \"%s\" has %lld values, expected %lld",
                ld->file, name, (long long)t->numel, (long long)numel);
        return NULL;
    }
    float *p = malloc(sizeof(float) * (size_t)(numel ? numel : 1));
    if (!p) {
        err_set(ld->err, ERR_NOMEM, "out of memory loading %s", name);
        return NULL;
    }
    if (st_to_f32(t, p, ld->err)) {
        free(p);
        return NULL;
    }
    return p;
}

static float *loadn(struct loader *ld, int vision, int layer, const char *hf,
                    const char *oai, int64_t numel)
{
    char name[256];
    tname(name, sizeof name, ld, vision, layer, hf, oai);
    return load(ld, name, numel);
}

static float *transpose(float *a, int rows, int cols)
{
    float *t = malloc(sizeof(float) * (size_t)rows * cols);
    if (t)
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++)
                t[(size_t)j * rows + i] = a[(size_t)i * cols + j];
    free(a);
    return t;
}

/* Dimension d of tensor name, or -1 (with err set) when absent/short. */
static int64_t dim_of(struct loader *ld, const char *name, int d)
{
    const struct st_tensor *t = need(ld, name);
    if (!t)
        return -1;
    if (d >= t->ndim) {
        err_set(ld->err, ERR_CORRUPT, "%s: tensor \"%s\" has %d dimensions, expected more",
                ld->file, name, t->ndim);
        return -1;
    }
    return t->shape[d];
}

static int count_layers(struct loader *ld, int vision)
{
    int n = 0;
    char name[256];
    for (;; n++) {
        tname(name, sizeof name, ld, vision, n, "layer_norm1.weight", "ln_1.weight");
        if (!st_find(ld->st, name))
            return n;
    }
}

struct tower_cfg {
    int heads;        /* 0 = width / 64 */
    float eps;
    enum clip_act act;
};

static int load_linear(struct loader *ld, struct clip_linear *l, int in, int out,
                       float *w, float *b, enum clip_act act, int acc,
                       enum clip_precision prec)
{
    if (!w) {
        free(b);
        return -ld->err->code;
    }
    return clip_linear_init(l, in, out, w, b, act, acc, prec, ld->err);
}

static int load_blocks(struct loader *ld, struct clip_tower *t, int vision,
                       enum clip_precision prec)
{
    const int c = t->width, m = t->mlp;
    t->blocks = calloc((size_t)t->layers, sizeof *t->blocks);
    if (!t->blocks)
        return err_set(ld->err, ERR_NOMEM, "out of memory");
    for (int l = 0; l < t->layers; l++) {
        struct clip_block *b = &t->blocks[l];
        if (!(b->ln1_w = loadn(ld, vision, l, "layer_norm1.weight", "ln_1.weight", c)) ||
            !(b->ln1_b = loadn(ld, vision, l, "layer_norm1.bias", "ln_1.bias", c)) ||
            !(b->ln2_w = loadn(ld, vision, l, "layer_norm2.weight", "ln_2.weight", c)) ||
            !(b->ln2_b = loadn(ld, vision, l, "layer_norm2.bias", "ln_2.bias", c)))
            return -ld->err->code;
        float *qkv_w, *qkv_b;
        if (ld->sc == OAI) {
            qkv_w = loadn(ld, vision, l, "", "attn.in_proj_weight", 3LL * c * c);
            qkv_b = qkv_w ? loadn(ld, vision, l, "", "attn.in_proj_bias", 3LL * c) : NULL;
            if (!qkv_b) {
                free(qkv_w);
                return -ld->err->code;
            }
        } else {
            qkv_w = malloc(sizeof(float) * 3 * (size_t)c * c);
            qkv_b = malloc(sizeof(float) * 3 * (size_t)c);
            if (!qkv_w || !qkv_b) {
                free(qkv_w);
                free(qkv_b);
                return err_set(ld->err, ERR_NOMEM, "out of memory");
            }
            static const char *const parts[3] = {"q", "k", "v"};
            for (int p = 0; p < 3; p++) {
                char wn[64], bn[64];
                snprintf(wn, sizeof wn, "self_attn.%s_proj.weight", parts[p]);
                snprintf(bn, sizeof bn, "self_attn.%s_proj.bias", parts[p]);
                float *w = loadn(ld, vision, l, wn, "", (int64_t)c * c);
                float *bb = w ? loadn(ld, vision, l, bn, "", c) : NULL;
                if (!bb) {
                    free(w);
                    free(qkv_w);
                    free(qkv_b);
                    return -ld->err->code;
                }
                memcpy(qkv_w + (size_t)p * c * c, w, sizeof(float) * (size_t)c * c);
                memcpy(qkv_b + (size_t)p * c, bb, sizeof(float) * (size_t)c);
                free(w);
                free(bb);
            }
        }
        int rc = load_linear(ld, &b->qkv, c, 3 * c, qkv_w, qkv_b, CLIP_ACT_NONE, 0, prec);
        if (rc)
            return rc;
        float *w = loadn(ld, vision, l, "self_attn.out_proj.weight", "attn.out_proj.weight",
                         (int64_t)c * c);
        float *bb = w ? loadn(ld, vision, l, "self_attn.out_proj.bias", "attn.out_proj.bias", c)
                      : NULL;
        if ((rc = load_linear(ld, &b->out, c, c, bb ? w : NULL, bb, CLIP_ACT_NONE, 1, prec))) {
            if (!bb)
                free(w);
            return rc;
        }
        w = loadn(ld, vision, l, "mlp.fc1.weight", "mlp.c_fc.weight", (int64_t)m * c);
        bb = w ? loadn(ld, vision, l, "mlp.fc1.bias", "mlp.c_fc.bias", m) : NULL;
        if ((rc = load_linear(ld, &b->fc1, c, m, bb ? w : NULL, bb, t->act, 0, prec))) {
            if (!bb)
                free(w);
            return rc;
        }
        w = loadn(ld, vision, l, "mlp.fc2.weight", "mlp.c_proj.weight", (int64_t)c * m);
        bb = w ? loadn(ld, vision, l, "mlp.fc2.bias", "mlp.c_proj.bias", c) : NULL;
        if ((rc = load_linear(ld, &b->fc2, m, c, bb ? w : NULL, bb, CLIP_ACT_NONE, 1, prec))) {
            if (!bb)
                free(w);
            return rc;
        }
    }
    return 0;
}

static int tower_dims(struct loader *ld, struct clip_tower *t, int vision,
                      int width, const struct tower_cfg *cfg)
{
    char name[256];
    t->width = width;
    t->layers = count_layers(ld, vision);
    if (t->layers == 0)
        return err_set(ld->err, ERR_CORRUPT, "%s: the %s tower has no blocks", ld->file,
                       vision ? "image" : "text");
    tname(name, sizeof name, ld, vision, 0, "mlp.fc1.weight", "mlp.c_fc.weight");
    int64_t m = dim_of(ld, name, 0);
    if (m <= 0)
        return -ld->err->code;
    t->mlp = (int)m;
    t->heads = cfg->heads > 0 ? cfg->heads : (width >= 64 ? width / 64 : 1);
    if (width % t->heads)
        return err_set(ld->err, ERR_CORRUPT, "%s: width %d is not divisible by %d heads",
                       ld->file, width, t->heads);
    t->eps = cfg->eps;
    t->act = cfg->act;
    return 0;
}

/* Reads heads/eps/act of one tower from config.json's sub-object. */
static int tower_cfg_from_json(json_t *sub, struct tower_cfg *c, const char *file,
                               struct err *err)
{
    c->heads = 0;
    c->eps = 1e-5f;
    c->act = CLIP_ACT_QUICK_GELU;
    if (!sub)
        return 0;
    json_t *h = json_object_get(sub, "num_attention_heads");
    if (json_is_integer(h) && json_integer_value(h) > 0 && json_integer_value(h) <= 1024)
        c->heads = (int)json_integer_value(h);
    json_t *e = json_object_get(sub, "layer_norm_eps");
    if (json_is_number(e) && json_number_value(e) > 0 && json_number_value(e) < 1)
        c->eps = (float)json_number_value(e);
    json_t *a = json_object_get(sub, "hidden_act");
    if (json_is_string(a)) {
        const char *s = json_string_value(a);
        if (!strcmp(s, "quick_gelu"))
            c->act = CLIP_ACT_QUICK_GELU;
        else if (!strcmp(s, "gelu"))
            c->act = CLIP_ACT_GELU;
        else
            return err_set(err, ERR_CORRUPT, "%s: hidden_act \"%s\" is not supported "
                           "(quick_gelu or gelu)", file, s);
    }
    return 0;
}

static int load_vision(struct loader *ld, struct clip_model *m, const struct tower_cfg *cfg)
{
    struct clip_vision *v = &m->vision;
    const char *pe = ld->sc == HF ? "vision_model.embeddings.patch_embedding.weight"
                                  : "visual.conv1.weight";
    const char *pos = ld->sc == HF ? "vision_model.embeddings.position_embedding.weight"
                                   : "visual.positional_embedding";
    const struct st_tensor *tp = need(ld, pe), *tpos = tp ? need(ld, pos) : NULL;
    if (!tpos)
        return -ld->err->code;
    if (tp->ndim != 4 || tp->shape[1] != 3 || tp->shape[2] != tp->shape[3] ||
        tp->shape[0] <= 0 || tp->shape[0] > 8192 || tp->shape[2] <= 0 || tp->shape[2] > 1024)
        return err_set(ld->err, ERR_CORRUPT, "%s: \"%s\" must be (width, 3, P, P)", ld->file, pe);
    int c = (int)tp->shape[0], p = (int)tp->shape[2];
    if (tpos->ndim != 2 || tpos->shape[1] != c || tpos->shape[0] < 2)
        return err_set(ld->err, ERR_CORRUPT, "%s: \"%s\" must be (tokens, %d)", ld->file, pos, c);
    int tokens = (int)tpos->shape[0];
    int grid = (int)lround(sqrt((double)(tokens - 1)));
    if (grid * grid != tokens - 1 || grid > 1024)
        return err_set(ld->err, ERR_CORRUPT, "%s: %d position embeddings is not a square grid + 1",
                       ld->file, tokens);
    v->patch = p;
    v->grid = grid;
    v->tokens = tokens;
    v->image_size = p * grid;
    int rc = tower_dims(ld, &v->t, 1, c, cfg);
    if (rc)
        return rc;
    float *w = load(ld, pe, (int64_t)c * 3 * p * p);
    if ((rc = load_linear(ld, &v->patch_embed, 3 * p * p, c, w, NULL, CLIP_ACT_NONE, 0, m->prec)))
        return rc;
    if (!(v->class_emb = load(ld, ld->sc == HF ? "vision_model.embeddings.class_embedding"
                                               : "visual.class_embedding", c)) ||
        !(v->pos_emb = load(ld, pos, (int64_t)tokens * c)) ||
        !(v->ln_pre_w = load(ld, ld->sc == HF ? "vision_model.pre_layrnorm.weight"
                                              : "visual.ln_pre.weight", c)) ||
        !(v->ln_pre_b = load(ld, ld->sc == HF ? "vision_model.pre_layrnorm.bias"
                                              : "visual.ln_pre.bias", c)) ||
        !(v->t.ln_post_w = load(ld, ld->sc == HF ? "vision_model.post_layernorm.weight"
                                                 : "visual.ln_post.weight", c)) ||
        !(v->t.ln_post_b = load(ld, ld->sc == HF ? "vision_model.post_layernorm.bias"
                                                 : "visual.ln_post.bias", c)))
        return -ld->err->code;
    const char *proj = ld->sc == HF ? "visual_projection.weight" : "visual.proj";
    int64_t d = dim_of(ld, proj, ld->sc == HF ? 0 : 1);
    if (d <= 0 || d > 65536)
        return d < 0 ? -ld->err->code
                     : err_set(ld->err, ERR_CORRUPT, "%s: bad projection size", ld->file);
    m->dim = (int)d;
    w = load(ld, proj, d * c);
    if (w && ld->sc == OAI)
        w = transpose(w, c, (int)d);
    if ((rc = load_linear(ld, &v->t.proj, c, (int)d, w, NULL, CLIP_ACT_NONE, 0, m->prec)))
        return rc;
    return load_blocks(ld, &v->t, 1, m->prec);
}

static int load_text(struct loader *ld, struct clip_model *m, const struct tower_cfg *cfg)
{
    struct clip_text *t = &m->text;
    const char *te = ld->sc == HF ? "text_model.embeddings.token_embedding.weight"
                                  : "token_embedding.weight";
    const char *pos = ld->sc == HF ? "text_model.embeddings.position_embedding.weight"
                                   : "positional_embedding";
    const struct st_tensor *tt = need(ld, te), *tpos = tt ? need(ld, pos) : NULL;
    if (!tpos)
        return -ld->err->code;
    if (tt->ndim != 2 || tt->shape[0] <= 0 || tt->shape[1] <= 0 || tt->shape[1] > 8192 ||
        tt->shape[0] > (1 << 24) || tt->dtype == ST_I64)
        return err_set(ld->err, ERR_CORRUPT, "%s: \"%s\" must be a (vocab, width) float table",
                       ld->file, te);
    int c = (int)tt->shape[1];
    if (tpos->ndim != 2 || tpos->shape[1] != c || tpos->shape[0] < 2 || tpos->shape[0] > 4096)
        return err_set(ld->err, ERR_CORRUPT, "%s: \"%s\" must be (context, %d)", ld->file, pos, c);
    t->vocab = (int)tt->shape[0];
    t->ctx = (int)tpos->shape[0];
    t->tok_emb = tt;
    int rc = tower_dims(ld, &t->t, 0, c, cfg);
    if (rc)
        return rc;
    if (!(t->pos_emb = load(ld, pos, (int64_t)t->ctx * c)) ||
        !(t->t.ln_post_w = load(ld, ld->sc == HF ? "text_model.final_layer_norm.weight"
                                                 : "ln_final.weight", c)) ||
        !(t->t.ln_post_b = load(ld, ld->sc == HF ? "text_model.final_layer_norm.bias"
                                                 : "ln_final.bias", c)))
        return -ld->err->code;
    const char *proj = ld->sc == HF ? "text_projection.weight" : "text_projection";
    int64_t d = dim_of(ld, proj, ld->sc == HF ? 0 : 1);
    if (d < 0)
        return -ld->err->code;
    if (d != m->dim)
        return err_set(ld->err, ERR_CORRUPT, "%s: text projection gives %lld dimensions, "
                       "the image projection %d", ld->file, (long long)d, m->dim);
    float *w = load(ld, proj, d * c);
    if (w && ld->sc == OAI)
        w = transpose(w, c, (int)d);
    if ((rc = load_linear(ld, &t->t.proj, c, (int)d, w, NULL, CLIP_ACT_NONE, 0, m->prec)))
        return rc;
    return load_blocks(ld, &t->t, 0, m->prec);
}

static void prep_default(struct clip_prep *p, int size)
{
    static const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
    static const float stdv[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    p->resize_short = size;
    p->crop = size;
    memcpy(p->mean, mean, sizeof mean);
    memcpy(p->std, stdv, sizeof stdv);
}

static json_t *load_json(const char *dir, const char *file, struct err *err, int *rc)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    *rc = 0;
    if (!fs_exists(path))
        return NULL;
    json_error_t je;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!j || !json_is_object(j)) {
        *rc = err_set(err, ERR_CORRUPT, "%s: not a JSON object (%s, line %d)", path,
                      j ? "wrong type" : je.text, je.line);
        json_decref(j);
        return NULL;
    }
    return j;
}

/* preprocessor_config.json: size.shortest_edge (or an int size),
 * crop_size.height (or an int), image_mean, image_std. */
static int load_prep(struct clip_model *m, struct err *err)
{
    int rc;
    prep_default(&m->prep, m->vision.image_size);
    json_t *j = load_json(m->dir, "preprocessor_config.json", err, &rc);
    if (!j)
        return rc;
    json_t *size = json_object_get(j, "size"), *crop = json_object_get(j, "crop_size");
    json_t *se = json_is_object(size) ? json_object_get(size, "shortest_edge") : size;
    json_t *ch = json_is_object(crop) ? json_object_get(crop, "height") : crop;
    if (json_is_integer(se) && json_integer_value(se) > 0 && json_integer_value(se) <= 4096)
        m->prep.resize_short = (int)json_integer_value(se);
    if (json_is_integer(ch) && json_integer_value(ch) > 0 && json_integer_value(ch) <= 4096)
        m->prep.crop = (int)json_integer_value(ch);
    json_t *mean = json_object_get(j, "image_mean"), *sd = json_object_get(j, "image_std");
    for (int i = 0; i < 3; i++) {
        if (json_is_array(mean) && json_is_number(json_array_get(mean, (size_t)i)))
            m->prep.mean[i] = (float)json_number_value(json_array_get(mean, (size_t)i));
        if (json_is_array(sd) && json_is_number(json_array_get(sd, (size_t)i)))
            m->prep.std[i] = (float)json_number_value(json_array_get(sd, (size_t)i));
        if (!(m->prep.std[i] > 0))
            rc = err_set(err, ERR_CORRUPT, "%s/preprocessor_config.json: image_std must be > 0",
                         m->dir);
    }
    if (!rc && m->prep.crop != m->vision.image_size)
        rc = err_set(err, ERR_CORRUPT, "%s/preprocessor_config.json: crop %d but the model "
                     "takes %d x %d images", m->dir, m->prep.crop, m->vision.image_size,
                     m->vision.image_size);
    if (!rc && m->prep.resize_short < m->prep.crop)
        rc = err_set(err, ERR_CORRUPT, "%s/preprocessor_config.json: resize %d is smaller "
                     "than the crop %d", m->dir, m->prep.resize_short, m->prep.crop);
    json_decref(j);
    return rc;
}

/* FNV-1a 64 over what the weights are, not how the file lays them out: each
 * tensor's name, dtype, shape and up to four 4 KiB samples of its bytes, in
 * name order. The same weights in another folder, or converted from a
 * pytorch_model.bin, hash the same; two checkpoints of the same shapes
 * differ in their samples. Cheap (at most 16 KiB per tensor is read). */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t weights_hash(const struct st_file *st)
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < st->n; i++) {
        const struct st_tensor *t = &st->tensors[i];
        const uint8_t *d = t->data;
        size_t bytes = (size_t)(t->end - t->begin), chunk = 4096;
        int32_t dt = (int32_t)t->dtype, nd = t->ndim;
        h = fnv(h, t->name, strlen(t->name) + 1);
        h = fnv(h, &dt, sizeof dt);
        h = fnv(h, &nd, sizeof nd);
        h = fnv(h, t->shape, sizeof t->shape[0] * (size_t)t->ndim);
        if (bytes <= 4 * chunk) {
            h = fnv(h, d, bytes);
            continue;
        }
        for (int k = 0; k < 4; k++)
            h = fnv(h, d + (bytes - chunk) / 3 * (size_t)k, chunk);
    }
    return h;
}

/* The hash of clip_model_former_id: FNV-1a 64 over five 64 KiB windows of
 * the file (start, quarters, end), xor its size - the rule of the versions
 * that named models by it. */
static uint64_t former_hash(const struct st_file *st)
{
    const size_t chunk = 1 << 16;
    size_t starts[5] = {0, st->size / 4, st->size / 2, 3 * (st->size / 4),
                        st->size > chunk ? st->size - chunk : 0};
    uint64_t h = 1469598103934665603ull;
    for (int s = 0; s < 5; s++) {
        size_t end = starts[s] + chunk < st->size ? starts[s] + chunk : st->size;
        h = fnv(h, st->map + starts[s], end - starts[s]);
    }
    return h ^ st->size;
}

/* m->id from config's _name_or_path and the tensors (never the folder's
 * name: a copy or a conversion is the same model for a store), and
 * m->former_id, the id earlier versions gave a safetensors file. */
static int make_ids(struct clip_model *m, json_t *cfg, struct err *err)
{
    const char *name = NULL;
    json_t *np = cfg ? json_object_get(cfg, "_name_or_path") : NULL;
    if (json_is_string(np) && json_string_length(np) > 0)
        name = json_string_value(np);
    char idbuf[600];
    snprintf(idbuf, sizeof idbuf, "%s@%016llx", name ? name : "clip",
             (unsigned long long)weights_hash(m->st));
    if (!(m->id = strdup(idbuf)))
        return err_set(err, ERR_NOMEM, "out of memory");
    if (!m->st->mapped) /* a PyTorch checkpoint: earlier versions could not read it */
        return 0;
    char *dcopy = name ? NULL : strdup(m->dir);
    snprintf(idbuf, sizeof idbuf, "%s@%016llx", name ? name : dcopy ? basename(dcopy) : "clip",
             (unsigned long long)former_hash(m->st));
    free(dcopy);
    if (!(m->former_id = strdup(idbuf)))
        return err_set(err, ERR_NOMEM, "out of memory");
    return 0;
}

/* Opens a weights file by its first bytes: a PyTorch checkpoint (zip or
 * legacy pickle) is read into memory, anything else is safetensors. */
static int open_weights(struct st_file **out, const char *path, struct err *err)
{
    uint8_t head[16] = {0};
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(head, 1, sizeof head, f) : 0;
    if (f)
        fclose(f);
    return pt_sniff(head, n) ? pt_open(out, path, err) : st_open(out, path, err);
}

int clip_model_load(struct clip_model **out, const char *path,
                    const struct clip_model_opts *opts, struct err *err)
{
    static const struct clip_model_opts defaults = {0};
    if (!opts)
        opts = &defaults;
    *out = NULL;
    /* before any weight is read: a CPU without bf16 products gets a clear
     * answer, not a failure in the first layer */
    if (opts->prec == CLIP_BF16) {
        int brc = clip_check_bf16(err);
        if (brc)
            return brc;
    }
    struct clip_model *m = calloc(1, sizeof *m);
    if (!m)
        return err_set(err, ERR_NOMEM, "out of memory");
    pthread_mutex_init(&m->lock, NULL);
    m->prec = opts->prec;
    int rc = 0;
    json_t *cfg = NULL;
    char wpath[4096];
    struct stat sb;
    if (stat(path, &sb) != 0) {
        rc = err_set(err, ERR_BAD_PATH, "%s: no such model folder or file", path);
        goto fail;
    }
    if (S_ISDIR(sb.st_mode)) {
        m->dir = strdup(path);
        if (opts->weights) {
            snprintf(wpath, sizeof wpath, "%s", opts->weights);
        } else {
            static const char *const names[] = {
                "model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin",
                "open_clip_pytorch_model.bin"};
            size_t k = 0;
            for (; k < sizeof names / sizeof *names; k++) {
                snprintf(wpath, sizeof wpath, "%s/%s", path, names[k]);
                if (fs_exists(wpath))
                    break;
            }
            if (k == sizeof names / sizeof *names) {
                rc = err_set(err, ERR_BAD_PATH, "%s: no model.safetensors, "
                             "open_clip_model.safetensors or pytorch_model.bin in this folder",
                             path);
                goto fail;
            }
        }
    } else {
        char *tmp = strdup(path);
        m->dir = tmp ? strdup(dirname(tmp)) : NULL;
        free(tmp);
        snprintf(wpath, sizeof wpath, "%s", opts->weights ? opts->weights : path);
    }
    if (!m->dir) {
        rc = err_set(err, ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((rc = open_weights(&m->st, wpath, err)))
        goto fail;
    struct loader ld = {m->st, HF, wpath, err};
    if (st_find(m->st, "visual.conv1.weight"))
        ld.sc = OAI;
    else if (!st_find(m->st, "vision_model.embeddings.patch_embedding.weight")) {
        rc = err_set(err, ERR_CORRUPT, "%s: not a CLIP checkpoint (neither "
                     "vision_model.embeddings.patch_embedding.weight nor visual.conv1.weight)",
                     wpath);
        goto fail;
    }
    cfg = load_json(m->dir, "config.json", err, &rc);
    if (rc)
        goto fail;
    struct tower_cfg vc, tc;
    if ((rc = tower_cfg_from_json(cfg ? json_object_get(cfg, "vision_config") : NULL, &vc,
                                  "config.json", err)) ||
        (rc = tower_cfg_from_json(cfg ? json_object_get(cfg, "text_config") : NULL, &tc,
                                  "config.json", err)))
        goto fail;
    if ((rc = load_vision(&ld, m, &vc)))
        goto fail;
    const char *te = ld.sc == HF ? "text_model.embeddings.token_embedding.weight"
                                 : "token_embedding.weight";
    if (!opts->skip_text && st_find(m->st, te)) {
        if ((rc = load_text(&ld, m, &tc)))
            goto fail;
        m->has_text = 1;
    }
    m->logit_scale = 100.0f;
    const struct st_tensor *ls = st_find(m->st, "logit_scale");
    if (ls && ls->numel == 1 && ls->dtype != ST_I64) {
        float v;
        st_to_f32(ls, &v, NULL);
        m->logit_scale = expf(v);
    }
    if ((rc = load_prep(m, err)))
        goto fail;
    if ((rc = make_ids(m, cfg, err)))
        goto fail;
    if (!m->has_text) { /* the token table pointer would dangle otherwise */
        st_close(m->st);
        m->st = NULL;
    } else if (m->st->mapped) {
        /* every weight now lives converted and packed; drop the file pages
         * we touched so they do not count twice (token rows fault back in
         * from the page cache when used) */
        madvise((void *)m->st->map, m->st->size, MADV_DONTNEED);
    }
    json_decref(cfg);
    *out = m;
    return 0;
fail:
    json_decref(cfg);
    clip_model_free(m);
    return rc;
}

void clip_model_free(struct clip_model *m)
{
    if (!m)
        return;
    struct clip_vision *v = &m->vision;
    clip__tower_free(&v->t);
    clip_linear_free(&v->patch_embed);
    free(v->class_emb);
    free(v->pos_emb);
    free(v->ln_pre_w);
    free(v->ln_pre_b);
    clip__tower_free(&m->text.t);
    free(m->text.pos_emb);
    clip__work_free(&m->work);
    st_close(m->st);
    free(m->id);
    free(m->former_id);
    free(m->dir);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* im2col for the stride-P convolution: patches (B*G*G, 3*P*P), column
 * index ch*P*P + py*P + px to match conv1.weight (C, 3, P, P). */
static void im2col(const float *px, int b, int s, int p, int g, float *out)
{
    const int k = 3 * p * p;
#pragma omp parallel for schedule(static)
    for (int idx = 0; idx < b * g * g; idx++) {
        int img = idx / (g * g), gy = (idx / g) % g, gx = idx % g;
        float *row = out + (size_t)idx * k;
        for (int ch = 0; ch < 3; ch++)
            for (int py = 0; py < p; py++)
                memcpy(row + ch * p * p + py * p,
                       px + (((size_t)img * 3 + ch) * s + (size_t)gy * p + py) * s + (size_t)gx * p,
                       sizeof(float) * (size_t)p);
    }
}

int clip_embed_images(struct clip_model *m, const float *pixels, int b,
                      float *out, struct err *err)
{
    if (b <= 0 || b > 4096)
        return err_set(err, ERR_INVALID_ARGUMENT, "batch of %d images (1..4096)", b);
    struct clip_vision *v = &m->vision;
    struct clip_tower *t = &v->t;
    const int c = t->width, T = v->tokens, g = v->grid, p = v->patch;
    const int64_t rows = (int64_t)b * T, np = (int64_t)b * g * g;
    int rc = 0;
    int *off = malloc(sizeof(int) * 2 * (size_t)b);
    if (!off)
        return err_set(err, ERR_NOMEM, "out of memory");
    int *len = off + b;
    for (int i = 0; i < b; i++) {
        off[i] = i * T;
        len[i] = T;
    }
    pthread_mutex_lock(&m->lock);
    struct clip_work *w = &m->work;
    const size_t pk = (size_t)np * 3 * p * p;
    if (clip__work_reserve(w, rows, c, t->mlp, T) || clip__work_patches(w, pk)) {
        rc = err_set(err, ERR_NOMEM, "out of memory for a batch of %d images", b);
        goto fail;
    }
    im2col(pixels, b, v->image_size, p, g, w->patches);
    /* patch embeddings land in h (np rows), then x = [cls; patches] + pos */
    if ((rc = clip_linear_forward(&v->patch_embed, w->patches, np, w->h, w->xbf, err)))
        goto fail;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int img = (int)(r / T), tok = (int)(r % T);
        const float *src = tok ? w->h + ((size_t)img * g * g + tok - 1) * c : v->class_emb;
        const float *pe = v->pos_emb + (size_t)tok * c;
        float *dst = w->x + (size_t)r * c;
        for (int j = 0; j < c; j++)
            dst[j] = src[j] + pe[j];
    }
    clip__layernorm(w->x, w->x, rows, c, v->ln_pre_w, v->ln_pre_b, t->eps);
    if ((rc = clip__tower_blocks(t, w, rows, off, len, b, 0, err)))
        goto fail;
    /* post LayerNorm of the class tokens only, gathered into att */
    for (int i = 0; i < b; i++)
        clip__layernorm(w->x + (size_t)i * T * c, w->att + (size_t)i * c, 1, c,
                        t->ln_post_w, t->ln_post_b, t->eps);
    rc = clip_linear_forward(&t->proj, w->att, b, out, w->xbf, err);
fail:
    pthread_mutex_unlock(&m->lock);
    free(off);
    return rc;
}

int clip_embed_ids(struct clip_model *m, const int32_t *const *ids, const int *n,
                   int b, float *out, struct err *err)
{
    if (!m->has_text)
        return err_set(err, ERR_NOT_FOUND, "this model has no text tower");
    if (b <= 0 || b > 4096)
        return err_set(err, ERR_INVALID_ARGUMENT, "batch of %d texts (1..4096)", b);
    struct clip_text *tx = &m->text;
    struct clip_tower *t = &tx->t;
    const int c = t->width;
    int *off = malloc(sizeof(int) * 2 * (size_t)b);
    if (!off)
        return err_set(err, ERR_NOMEM, "out of memory");
    int *len = off + b;
    int64_t rows = 0;
    int rc = 0, locked = 0;
    for (int i = 0; i < b; i++) {
        if (n[i] <= 0 || n[i] > tx->ctx) {
            rc = err_set(err, ERR_INVALID_ARGUMENT, "text %d has %d tokens (1..%d)", i, n[i],
                         tx->ctx);
            goto fail;
        }
        int best = 0; /* first position of the largest id: OpenAI's argmax */
        for (int j = 0; j < n[i]; j++) {
            if (ids[i][j] < 0 || ids[i][j] >= tx->vocab) {
                rc = err_set(err, ERR_INVALID_ARGUMENT, "token id %d out of range (vocab %d)",
                             ids[i][j], tx->vocab);
                goto fail;
            }
            if (ids[i][j] > ids[i][best])
                best = j;
        }
        off[i] = (int)rows;
        len[i] = best + 1; /* causal: tokens after it cannot change it */
        rows += len[i];
    }
    pthread_mutex_lock(&m->lock);
    locked = 1;
    struct clip_work *w = &m->work;
    if (clip__work_reserve(w, rows, c, t->mlp, tx->ctx)) {
        rc = err_set(err, ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < b; i++)
        for (int j = 0; j < len[i]; j++) {
            float *dst = w->x + (size_t)(off[i] + j) * c;
            const struct st_tensor *te = tx->tok_emb;
            const uint8_t *row = (const uint8_t *)te->data +
                                 (size_t)ids[i][j] * c * st_dtype_size(te->dtype);
            struct st_tensor one = *te;
            one.data = row;
            one.numel = c;
            st_to_f32(&one, dst, NULL);
            const float *pe = tx->pos_emb + (size_t)j * c;
            for (int k = 0; k < c; k++)
                dst[k] += pe[k];
        }
    if ((rc = clip__tower_blocks(t, w, rows, off, len, b, 1, err)))
        goto fail;
    for (int i = 0; i < b; i++)
        clip__layernorm(w->x + (size_t)(off[i] + len[i] - 1) * c, w->att + (size_t)i * c, 1, c,
                        t->ln_post_w, t->ln_post_b, t->eps);
    rc = clip_linear_forward(&t->proj, w->att, b, out, w->xbf, err);
fail:
    if (locked)
        pthread_mutex_unlock(&m->lock);
    free(off);
    return rc;
}

int clip_image_size(const struct clip_model *m) { return m->vision.image_size; }
int clip_embed_dim(const struct clip_model *m) { return m->dim; }
int clip_context(const struct clip_model *m) { return m->has_text ? m->text.ctx : 0; }
int clip_vocab_size(const struct clip_model *m) { return m->has_text ? m->text.vocab : 0; }
int clip_has_text(const struct clip_model *m) { return m->has_text; }
float clip_logit_scale(const struct clip_model *m) { return m->logit_scale; }
enum clip_precision clip_model_precision(const struct clip_model *m) { return m->prec; }
const struct clip_prep *clip_model_prep(const struct clip_model *m) { return &m->prep; }
const char *clip_model_id(const struct clip_model *m) { return m->id; }
const char *clip_model_former_id(const struct clip_model *m) { return m->former_id; }
const char *clip_model_dir(const struct clip_model *m) { return m->dir; }

void clip_model_describe(const struct clip_model *m, char *buf, size_t n)
{
    const struct clip_vision *v = &m->vision;
    int k = snprintf(buf, n, "vision %dx%d p%d %d, ", v->t.layers, v->t.width, v->patch,
                     v->image_size);
    if (k < 0 || (size_t)k >= n)
        return;
    if (m->has_text)
        k += snprintf(buf + k, n - (size_t)k, "text %dx%d ctx %d, ", m->text.t.layers,
                      m->text.t.width, m->text.ctx);
    if (k >= 0 && (size_t)k < n)
        snprintf(buf + k, n - (size_t)k, "dim %d, %s", m->dim,
                 m->prec == CLIP_BF16 ? "bf16" : "fp32");
}

static size_t tower_bytes(const struct clip_tower *t)
{
    size_t s = clip_linear_bytes(&t->proj);
    for (int l = 0; t->blocks && l < t->layers; l++) {
        const struct clip_block *b = &t->blocks[l];
        s += clip_linear_bytes(&b->qkv) + clip_linear_bytes(&b->out) +
             clip_linear_bytes(&b->fc1) + clip_linear_bytes(&b->fc2);
    }
    return s;
}

size_t clip_model_bytes(const struct clip_model *m)
{
    return tower_bytes(&m->vision.t) + clip_linear_bytes(&m->vision.patch_embed) +
           tower_bytes(&m->text.t);
}

void clip_l2_normalize(float *v, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += (double)v[i] * v[i];
    if (s > 0) {
        float inv = (float)(1.0 / sqrt(s));
        for (int i = 0; i < n; i++)
            v[i] *= inv;
    }
}
