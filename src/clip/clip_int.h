/* clip_int.h - internals shared by the files of the clip module. */
#ifndef IMGSEARCH_CLIP_INT_H
#define IMGSEARCH_CLIP_INT_H

#include <pthread.h>

#include "clip/clip.h"
#include "util/safetensors.h"

struct clip_block {
    float *ln1_w, *ln1_b;     /* (C) */
    float *ln2_w, *ln2_b;     /* (C) */
    struct clip_linear qkv;   /* (3C, C): q, k, v stacked as in_proj_weight */
    struct clip_linear out;   /* (C, C), accumulates into the residual */
    struct clip_linear fc1;   /* (M, C) with the activation fused */
    struct clip_linear fc2;   /* (C, M), accumulates into the residual */
};

struct clip_tower {
    int width, layers, heads, mlp; /* C, blocks, heads, MLP width */
    float eps;                 /* LayerNorm epsilon */
    enum clip_act act;         /* MLP activation */
    struct clip_block *blocks; /* layers entries */
    float *ln_post_w, *ln_post_b; /* final LayerNorm (ln_post / ln_final) */
    struct clip_linear proj;   /* (D, C), no bias */
};

struct clip_vision {
    struct clip_tower t;
    int image_size, patch, grid, tokens; /* S, P, S/P, grid^2 + 1 */
    struct clip_linear patch_embed;      /* (C, 3*P*P), no bias */
    float *class_emb;                    /* (C) */
    float *pos_emb;                      /* (tokens, C) */
    float *ln_pre_w, *ln_pre_b;          /* (C) */
};

struct clip_text {
    struct clip_tower t;
    int ctx, vocab;                      /* positions, token ids */
    const struct st_tensor *tok_emb;     /* (vocab, C), read in place from the
                                            mapping: rows converted on use */
    float *pos_emb;                      /* (ctx, C) */
};

/* Activation workspace, grown on demand and reused between calls. */
struct clip_work {
    float *x, *h, *qkv, *att, *mlp; /* (R,C) (R,C) (R,3C) (R,C) (R,M) */
    uint16_t *xbf;                   /* bf16 copy of a GEMM input */
    float *scores;                   /* per thread L*L */
    float *patches;                  /* im2col (B*G^2, 3*P*P) */
    size_t cap_rows, cap_scores, cap_patches, cap_xbf; /* capacities */
};

struct clip_model {
    struct clip_vision vision;
    struct clip_text text;
    int has_text;             /* text tower loaded */
    int dim;                  /* projection dimension */
    float logit_scale;        /* exp of the checkpoint's logit_scale */
    enum clip_precision prec; /* GEMM precision */
    struct clip_prep prep;    /* preprocessing from preprocessor_config.json */
    char *id;                 /* "name@hash" */
    char *former_id;          /* the id of imgsearch before 0.9, or NULL */
    char *dir;                /* folder of the model */
    struct st_file *st;       /* weights file (kept for the token table) */
    struct clip_work work;    /* activations */
    pthread_mutex_t lock;     /* serializes forwards (work is shared) */
};

/* Runs the blocks of t over x (R, C), R = sum of len[], sequence s taking
 * rows off[s] .. off[s] + len[s] - 1; causal masks attention for text. */
int clip__tower_blocks(struct clip_tower *t, struct clip_work *w, int64_t rows,
                       const int *off, const int *len, int nseq, int causal,
                       struct err *err);

/* Grows w for rows of width c, MLP width mlp, sequences up to maxlen. */
int clip__work_reserve(struct clip_work *w, int64_t rows, int c, int mlp, int maxlen);
/* Grows the im2col buffer (and xbf) to n floats. */
int clip__work_patches(struct clip_work *w, size_t n);
void clip__work_free(struct clip_work *w);

/* y (r, c) = LayerNorm(x) with weight g, bias b. */
void clip__layernorm(const float *x, float *y, int64_t r, int c, const float *g,
                     const float *b, float eps);

void clip__tower_free(struct clip_tower *t);

/* kernels.c: the path in use, 0 scalar, 1 AVX-512F, 2 AVX-512F + BF16
 * (IMGSEARCH_SIMD=scalar or avx2 forces 0: no AVX2 kernels here). */
int clip__simd(void);
/* What the CPU can run, whatever IMGSEARCH_SIMD says (same scale). */
int clip__cpu_simd(void);
/* Attention of one (sequence, head): rows o .. o+L-1 of qkv (R, 3C), head
 * columns hd .. hd+d-1; writes the same rows/columns of out (R, C). sc is
 * clip__attend_scratch(L, d) floats. */
void clip__attend(const float *qkv, float *out, float *sc, int o, int L, int c, int hd,
                  int d, int causal);
void clip__attend_ref(const float *qkv, float *out, float *sc, int o, int L, int c,
                      int hd, int d, int causal);
size_t clip__attend_scratch(int maxlen, int d);
/* fp32 -> bf16, round to nearest even. */
void clip__to_bf16(const float *x, uint16_t *y, size_t n);
void clip__to_bf16_ref(const float *x, uint16_t *y, size_t n);
void clip__layernorm_ref(const float *x, float *y, int64_t r, int c, const float *g,
                         const float *b, float eps);
/* The AVX-512 variants by name, for the kernel tests: call them only when
 * clip__cpu_simd() >= 1 (>= 2 for the bf16 conversion). */
void clip__attend_avx512(const float *qkv, float *out, float *sc, int o, int L, int c,
                         int hd, int d, int causal);
void clip__to_bf16_avx512(const float *x, uint16_t *y, size_t n);
void clip__layernorm_avx512(const float *x, float *y, int64_t r, int c, const float *g,
                            const float *b, float eps);

#endif
