/* linear.h - y = act(x W^T + b) [+ y], the matrix products of the towers.
 *
 * x is (M, K) row-major fp32, W is (N, K) as stored in checkpoints, y is
 * (M, N). Products run through oneDNN's matmul primitive: the weights are
 * reordered once into the layout oneDNN prefers, primitives are created once
 * per distinct M and reused. In bf16 mode the weights are kept in bf16 and
 * the activations are converted before each product (fp32 accumulation,
 * fp32 output), which puts the product on AMX where the CPU has it.
 * After the first call for a given M nothing is allocated: primitives,
 * memory objects and the stream are cached and only data handles change.
 * A plain C reference (clip_linear_ref) is kept for tests.
 */
#ifndef IMGSEARCH_CLIP_LINEAR_H
#define IMGSEARCH_CLIP_LINEAR_H

#include <pthread.h>
#include <stdint.h>

#include "util/err.h"

enum clip_act {
    CLIP_ACT_NONE,
    CLIP_ACT_QUICK_GELU, /* x * sigmoid(1.702 x): oneDNN swish, alpha 1.702 */
    CLIP_ACT_GELU,       /* exact erf GELU */
};

enum clip_precision {
    CLIP_FP32,
    CLIP_BF16,
};

#define CLIP_LINEAR_CACHE 16

struct clip_linear_prim {
    int64_t m;          /* rows this primitive was made for; 0 = free slot */
    void *prim;         /* dnnl_primitive_t */
    void *pd;           /* dnnl_primitive_desc_t */
    void *src, *dst, *bias; /* dnnl_memory_t, data handles set per call */
};

struct clip_linear {
    int in, out;            /* K, N */
    enum clip_act act;      /* fused activation */
    int accumulate;         /* 1: y += result (fused residual sum) */
    enum clip_precision prec; /* compute precision of the product */
    float *w;               /* (N, K) fp32 plain copy; freed once packed */
    float *b;               /* (N) bias or NULL, owned */
    void *wmem;             /* dnnl_memory_t of packed weights */
    void *wmd;              /* packed weights memory desc (heap copy) */
    struct clip_linear_prim cache[CLIP_LINEAR_CACHE]; /* primitives by M */
    void *stream;           /* dnnl_stream_t used by every call */
    pthread_mutex_t lock;   /* guards cache, stream and memory objects: one
                               product of a layer runs at a time */
};

/* Takes ownership of w (N*K floats) and b (N floats or NULL), packs the
 * weights for prec. On failure w and b are freed. */
int clip_linear_init(struct clip_linear *l, int in, int out, float *w, float *b,
                     enum clip_act act, int accumulate, enum clip_precision prec,
                     struct err *err);
void clip_linear_free(struct clip_linear *l);

/* y (M, N) = act(x (M, K) W^T + b) (+ y when accumulate). bf16 mode needs
 * xbf scratch of M*K uint16 values (may be NULL in fp32 mode). */
int clip_linear_forward(struct clip_linear *l, const float *x, int64_t m, float *y,
                        uint16_t *xbf, struct err *err);

/* Plain reference, same contract, W given explicitly. */
void clip_linear_ref(const float *x, int64_t m, int k, const float *w, const float *b,
                     int n, enum clip_act act, int accumulate, float *y);

/* Resident bytes held by the packed weights. */
size_t clip_linear_bytes(const struct clip_linear *l);

/* 1 when this CPU runs bf16 products natively (AMX or AVX512-BF16).
 * IMGSEARCH_NO_BF16=1 in the environment makes it answer 0, so the refusal
 * below can be tested on any CPU. */
int clip_cpu_has_bf16(void);

/* 0 when bf16 products can run here; else -ERR_INVALID_ARGUMENT with a
 * message naming what is missing and what to use instead. oneDNN 2.6 has
 * no bf16 matmul below AVX-512, so without this check a bf16 model would
 * fail at its first layer with an opaque "no matmul" message.
 * clip_linear_init and clip_model_load call it for CLIP_BF16. */
int clip_check_bf16(struct err *err);

#endif
