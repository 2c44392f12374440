/* clip.h - CLIP models: loading checkpoints and running the two towers.
 *
 * A model is loaded from a Hugging Face style folder (config.json,
 * model.safetensors with CLIPModel names, preprocessor_config.json) or from
 * an OpenAI/open_clip checkpoint (open_clip_model.safetensors, names like
 * visual.transformer.resblocks.N.attn.in_proj_weight), either as safetensors
 * or as a PyTorch pytorch_model.bin (clip/pytorch.h). The architecture is
 * read from the tensor shapes (widths, layers, patch, grid, context,
 * projection); heads = width / 64 unless config.json says otherwise, as in
 * OpenAI's build_model. Nothing about ViT-B/32 is hard-coded.
 *
 * Embeddings returned here are the raw projections; call clip_l2_normalize
 * for unit vectors. Calls on one model are serialized internally (each
 * forward already uses every core), so a model may be shared by threads.
 */
#ifndef IMGSEARCH_CLIP_H
#define IMGSEARCH_CLIP_H

#include <stddef.h>
#include <stdint.h>

#include "clip/linear.h"
#include "util/err.h"

struct clip_model;

struct clip_prep {
    int resize_short;  /* shortest edge after resize (224) */
    int crop;          /* center crop side (224) */
    float mean[3];     /* per channel, on [0,1] pixels */
    float std[3];
};

struct clip_model_opts {
    const char *weights;        /* a .safetensors file to use instead of the
                                   folder's own; NULL = search the folder */
    enum clip_precision prec;   /* CLIP_FP32 or CLIP_BF16 */
    int skip_text;              /* 1: do not load the text tower */
};

/* path is a model folder or a .safetensors file (its folder then supplies
 * config.json and preprocessor_config.json when present).
 * Errors: ERR_BAD_PATH (missing files), ERR_CORRUPT (bad safetensors, missing or
 * misshapen tensors, bad config JSON). */
int clip_model_load(struct clip_model **out, const char *path,
                    const struct clip_model_opts *opts, struct err *err);
void clip_model_free(struct clip_model *m);

/* pixels: (b, 3, S, S) CHW normalized input, S = clip_image_size(m);
 * out: (b, clip_embed_dim(m)) raw projections. */
int clip_embed_images(struct clip_model *m, const float *pixels, int b,
                      float *out, struct err *err);

/* ids[i] holds n[i] token ids (<|startoftext|> ... <|endoftext|>, at most
 * clip_context(m)); features are taken at the first occurrence of the
 * largest id (the end token, as OpenAI's argmax); only tokens up to it are
 * computed. out: (b, clip_embed_dim(m)). ERR_INVALID_ARGUMENT for ids out
 * of range or empty/too long sequences, ERR_NOT_FOUND without a text tower. */
int clip_embed_ids(struct clip_model *m, const int32_t *const *ids, const int *n,
                   int b, float *out, struct err *err);

int clip_image_size(const struct clip_model *m);
int clip_embed_dim(const struct clip_model *m);
int clip_context(const struct clip_model *m);
int clip_vocab_size(const struct clip_model *m);
int clip_has_text(const struct clip_model *m);
float clip_logit_scale(const struct clip_model *m); /* exp(logit_scale) */
enum clip_precision clip_model_precision(const struct clip_model *m);
const struct clip_prep *clip_model_prep(const struct clip_model *m);
/* "name@hash": config.json's _name_or_path ("clip" without one) and a hash
 * of the tensors (names, shapes, dtypes, sampled bytes), so a store can
 * tell models apart; never the folder's name: the same weights copied
 * elsewhere or converted from pytorch_model.bin keep their id. Owned by the
 * model. */
const char *clip_model_id(const struct clip_model *m);
/* The id earlier versions gave the same weights (a safetensors file only):
 * name (config's _name_or_path, else the folder's name) @ a hash of the
 * file's bytes. A store made under it holds this model's embeddings and is
 * renamed on open (store_options.former_model). NULL when there is none. */
const char *clip_model_former_id(const struct clip_model *m);
/* The folder the model was loaded from (tokenizer files live there). */
const char *clip_model_dir(const struct clip_model *m);
/* A human summary: "vision 12x768 p32 224, text 12x512 ctx 77, dim 512". */
void clip_model_describe(const struct clip_model *m, char *buf, size_t n);
/* Bytes held by weights (packed) and activations. */
size_t clip_model_bytes(const struct clip_model *m);

/* v /= |v| (no-op for the zero vector). */
void clip_l2_normalize(float *v, int n);

#endif
