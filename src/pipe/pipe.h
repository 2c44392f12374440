/* pipe.h - the embedding pipeline: bytes or files -> pixels -> CLIP vectors,
 * and texts -> token ids -> CLIP vectors.
 *
 * This is the one place that joins image/, clip/ and the tokenizer, so the
 * commands and the HTTP service embed exactly the same way. Vectors returned
 * are L2-normalized unless raw is asked for.
 */
#ifndef IMGSEARCH_PIPE_H
#define IMGSEARCH_PIPE_H

#include <stddef.h>
#include <stdint.h>

#include "clip/clip.h"
#include "clip/tokenizer.h"
#include "image/image.h"
#include "image/preprocess.h"
#include "util/err.h"

enum pipe_precision {
    PIPE_PREC_AUTO, /* bf16 when the CPU has AMX or AVX512-BF16, else fp32 */
    PIPE_PREC_FP32,
    PIPE_PREC_BF16,
};

struct pipe_opts {
    enum pipe_precision prec;  /* GEMM precision */
    const char *weights;       /* optional .safetensors overriding the folder's */
    uint64_t max_pixels;       /* decode limit; 0 = 50 MP */
    int full_decode;           /* 1: never DCT-scale JPEGs (exact to Pillow) */
    int skip_text;             /* 1: no text tower or tokenizer */
};

struct pipe {
    struct clip_model *model;      /* owned */
    struct tok *tok;               /* owned; NULL when the folder has none */
    struct img_prep_cfg prep;      /* from the model's preprocessor config */
    struct img_decode_opts dopts;  /* pixel limit, DCT scaling */
    int dim, size;                 /* embedding dim, input side */
};

/* Parses "auto", "fp32", "bf16". Returns 0 or -ERR_INVALID_ARGUMENT. */
int pipe_parse_precision(const char *s, enum pipe_precision *out, struct err *err);

int pipe_open(struct pipe **out, const char *model, const struct pipe_opts *o,
              struct err *err);
void pipe_free(struct pipe *p);

/* Decodes and preprocesses into pixels (3*size*size floats). Messages are
 * prefixed with name (a path, or "image"). */
int pipe_prepare_bytes(struct pipe *p, const uint8_t *data, size_t n,
                       const char *name, float *pixels, struct err *err);
int pipe_prepare_file(struct pipe *p, const char *path, float *pixels,
                      struct err *err);

/* b preprocessed images -> b vectors of dim floats. */
int pipe_embed_pixels(struct pipe *p, const float *pixels, int b, float *out,
                      int raw, struct err *err);

/* One text -> one vector. ERR_INVALID_UTF8, ERR_NOT_FOUND (no text tower or
 * tokenizer). */
int pipe_embed_text(struct pipe *p, const char *text, float *out, int raw,
                    struct err *err);

/* n texts in one forward pass; a text that fails to tokenize fails the call
 * (errors name its index). */
int pipe_embed_texts(struct pipe *p, const char *const *texts, int n, float *out,
                     int raw, struct err *err);

/* Zero-shot label probabilities as CLIP computes them: logits are
 * scale * cos(image, label_i) (scale = exp(logit_scale) of the checkpoint),
 * probs = softmax(logits). img is one vector, labels n vectors of dim floats
 * (normalized or not). logits may be NULL. */
void pipe_zero_shot(const float *img, const float *labels, int n, int dim, float scale,
                    float *probs, float *logits);

/* Human precision name of the loaded model: "fp32" or "bf16". */
const char *pipe_precision_name(const struct pipe *p);

#endif
