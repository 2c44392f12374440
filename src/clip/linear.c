/* linear.c - fully connected layers on oneDNN matmul.
 *
 * Design:
 * 1. One engine per process; one stream per layer, used under the layer's
 *    lock (a dnnl_stream_t must not be used by two threads at once).
 *    Primitives and memory objects are cached per M, so a warm forward pass
 *    allocates nothing here.
 * 2. The packed weight layout is chosen once, by a primitive descriptor made
 *    for a typical M (PACK_M) with dnnl_format_tag_any; every other M reuses
 *    that exact layout (the brgemm kernels of oneDNN 2.6 accept it for any
 *    M; were one refused, the product fails with a clear error).
 * 3. Weights are described to oneDNN as (K, N) with strides (1, K): that is
 *    the checkpoint's (N, K) row-major array, so no transpose is done by us.
 * 4. The activation is a post-op, and the residual sum too (sum post-op),
 *    so y = x + mlp(x) costs no extra pass over y.
 */
#include "clip/linear.h"

#include <cpuid.h>
#include <math.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdlib.h>
#include <string.h>

#include "clip/clip_int.h"
#include "util/safetensors.h"

#define PACK_M 256

static pthread_once_t engine_once = PTHREAD_ONCE_INIT;
static dnnl_engine_t engine;

static void engine_init(void)
{
    if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success)
        engine = NULL;
}

static dnnl_data_type_t dt_of(enum clip_precision p)
{
    return p == CLIP_BF16 ? dnnl_bf16 : dnnl_f32;
}

/* Builds a matmul primitive descriptor for M rows; wmd NULL = format any. */
static dnnl_status_t make_pd(const struct clip_linear *l, int64_t m,
                             const dnnl_memory_desc_t *wmd,
                             dnnl_primitive_desc_t *pd)
{
    dnnl_memory_desc_t src, wei, bias, dst;
    dnnl_dims_t sd = {m, l->in}, wd = {l->in, l->out}, bd = {1, l->out},
                dd = {m, l->out};
    dnnl_memory_desc_init_by_tag(&src, 2, sd, dt_of(l->prec), dnnl_ab);
    if (wmd)
        wei = *wmd;
    else
        dnnl_memory_desc_init_by_tag(&wei, 2, wd, dt_of(l->prec), dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&bias, 2, bd, dnnl_f32, dnnl_ab);
    dnnl_memory_desc_init_by_tag(&dst, 2, dd, dnnl_f32, dnnl_ab);
    dnnl_matmul_desc_t md;
    dnnl_status_t st = dnnl_matmul_desc_init(&md, &src, &wei, l->b ? &bias : NULL, &dst);
    if (st != dnnl_success)
        return st;
    dnnl_primitive_attr_t attr;
    dnnl_post_ops_t po;
    dnnl_primitive_attr_create(&attr);
    dnnl_post_ops_create(&po);
    /* order matters: y = act(xW^T + b) + y_old */
    if (l->act == CLIP_ACT_QUICK_GELU)
        dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_swish, 1.702f, 0.0f);
    else if (l->act == CLIP_ACT_GELU)
        dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_gelu_erf, 0.0f, 0.0f);
    if (l->accumulate)
        dnnl_post_ops_append_sum(po, 1.0f);
    dnnl_primitive_attr_set_post_ops(attr, po);
    st = dnnl_primitive_desc_create(pd, &md, attr, engine, NULL);
    dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    return st;
}

int clip_linear_init(struct clip_linear *l, int in, int out, float *w, float *b,
                     enum clip_act act, int accumulate, enum clip_precision prec,
                     struct err *err)
{
    memset(l, 0, sizeof *l);
    l->in = in;
    l->out = out;
    l->act = act;
    l->accumulate = accumulate;
    l->prec = prec;
    l->w = w;
    l->b = b;
    pthread_mutex_init(&l->lock, NULL);
    pthread_once(&engine_once, engine_init);
    int rc = 0;
    dnnl_primitive_desc_t pd = NULL, rpd = NULL;
    dnnl_primitive_t reorder = NULL;
    dnnl_memory_t plain = NULL;
    uint16_t *wbf = NULL;
    if (prec == CLIP_BF16 && (rc = clip_check_bf16(err)))
        goto fail;
    if (!engine) {
        rc = err_set(err, ERR_INTERNAL, "oneDNN: cannot create a CPU engine");
        goto fail;
    }
    if (make_pd(l, PACK_M, NULL, &pd) != dnnl_success) {
        rc = err_set(err, ERR_INTERNAL, "oneDNN: no matmul for %dx%d (%s)", in, out,
                     prec == CLIP_BF16 ? "bf16" : "fp32");
        goto fail;
    }
    const dnnl_memory_desc_t *packed = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    l->wmd = malloc(sizeof(dnnl_memory_desc_t));
    if (!l->wmd) {
        rc = err_set(err, ERR_NOMEM, "out of memory");
        goto fail;
    }
    memcpy(l->wmd, packed, sizeof *packed);
    /* the checkpoint's (N, K) array seen as (K, N) with strides (1, K) */
    dnnl_memory_desc_t plain_md;
    dnnl_dims_t wd = {in, out}, ws = {1, in};
    dnnl_memory_desc_init_by_strides(&plain_md, 2, wd, dt_of(prec), ws);
    void *src = w;
    if (prec == CLIP_BF16) {
        wbf = malloc((size_t)in * out * sizeof *wbf);
        if (!wbf) {
            rc = err_set(err, ERR_NOMEM, "out of memory");
            goto fail;
        }
        for (size_t i = 0; i < (size_t)in * out; i++)
            wbf[i] = st_f32_to_bf16(w[i]);
        src = wbf;
    }
    dnnl_stream_t stream = NULL;
    if (dnnl_memory_create(&plain, &plain_md, engine, src) != dnnl_success ||
        dnnl_memory_create((dnnl_memory_t *)&l->wmem, l->wmd, engine, DNNL_MEMORY_ALLOCATE) != dnnl_success ||
        dnnl_reorder_primitive_desc_create(&rpd, &plain_md, engine, l->wmd, engine, NULL) != dnnl_success ||
        dnnl_primitive_create(&reorder, rpd) != dnnl_success ||
        dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) != dnnl_success) {
        rc = err_set(err, ERR_INTERNAL, "oneDNN: cannot pack %dx%d weights", out, in);
        goto fail;
    }
    l->stream = stream;
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, plain}, {DNNL_ARG_TO, l->wmem}};
    dnnl_status_t st = dnnl_primitive_execute(reorder, stream, 2, args);
    dnnl_stream_wait(stream);
    if (st != dnnl_success) {
        rc = err_set(err, ERR_INTERNAL, "oneDNN: weight reorder failed");
        goto fail;
    }
    /* keep the PACK_M primitive as the first cache entry */
    dnnl_primitive_t prim;
    if (dnnl_primitive_create(&prim, pd) == dnnl_success) {
        l->cache[0].m = PACK_M;
        l->cache[0].prim = prim;
        l->cache[0].pd = pd;
        pd = NULL;
    }
    free(l->w);
    l->w = NULL;
    rc = 0;
fail:
    free(wbf);
    if (reorder)
        dnnl_primitive_destroy(reorder);
    if (rpd)
        dnnl_primitive_desc_destroy(rpd);
    if (plain)
        dnnl_memory_destroy(plain);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (rc)
        clip_linear_free(l);
    return rc;
}

static void slot_clear(struct clip_linear_prim *c)
{
    if (c->prim)
        dnnl_primitive_destroy(c->prim);
    if (c->pd)
        dnnl_primitive_desc_destroy(c->pd);
    if (c->src)
        dnnl_memory_destroy(c->src);
    if (c->dst)
        dnnl_memory_destroy(c->dst);
    if (c->bias)
        dnnl_memory_destroy(c->bias);
    memset(c, 0, sizeof *c);
}

void clip_linear_free(struct clip_linear *l)
{
    if (!l)
        return;
    for (int i = 0; i < CLIP_LINEAR_CACHE; i++)
        slot_clear(&l->cache[i]);
    if (l->stream)
        dnnl_stream_destroy(l->stream);
    if (l->wmem)
        dnnl_memory_destroy(l->wmem);
    free(l->wmd);
    free(l->w);
    free(l->b);
    pthread_mutex_destroy(&l->lock);
    memset(l, 0, sizeof *l);
}

/* Finds or makes the primitive and memory objects for m rows; called with
 * l->lock held. Slots are few and the batch shapes of a process are few;
 * when full, slot 1 + m % (N-1) is replaced (slot 0 keeps PACK_M). */
static struct clip_linear_prim *slot_for(struct clip_linear *l, int64_t m)
{
    int slot = -1;
    for (int i = 0; i < CLIP_LINEAR_CACHE; i++) {
        if (l->cache[i].m == m && l->cache[i].src)
            return &l->cache[i];
        if (slot < 0 && !l->cache[i].m)
            slot = i;
    }
    if (slot < 0)
        slot = 1 + (int)(m % (CLIP_LINEAR_CACHE - 1));
    struct clip_linear_prim *c = &l->cache[slot];
    /* slot 0 may hold the packing primitive without memory objects */
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    if (c->m == m && c->prim) {
        pd = c->pd;
        prim = c->prim;
        c->pd = NULL;
        c->prim = NULL;
    }
    slot_clear(c);
    if (!prim) {
        if (make_pd(l, m, l->wmd, &pd) != dnnl_success)
            return NULL;
        if (dnnl_primitive_create(&prim, pd) != dnnl_success) {
            dnnl_primitive_desc_destroy(pd);
            return NULL;
        }
    }
    c->m = m;
    c->pd = pd;
    c->prim = prim;
    dnnl_memory_desc_t smd, dmd, bmd;
    dnnl_dims_t sd = {m, l->in}, dd = {m, l->out}, bd = {1, l->out};
    dnnl_memory_desc_init_by_tag(&smd, 2, sd, dt_of(l->prec), dnnl_ab);
    dnnl_memory_desc_init_by_tag(&dmd, 2, dd, dnnl_f32, dnnl_ab);
    dnnl_memory_desc_init_by_tag(&bmd, 2, bd, dnnl_f32, dnnl_ab);
    if (dnnl_memory_create((dnnl_memory_t *)&c->src, &smd, engine, DNNL_MEMORY_NONE) != dnnl_success ||
        dnnl_memory_create((dnnl_memory_t *)&c->dst, &dmd, engine, DNNL_MEMORY_NONE) != dnnl_success ||
        (l->b && dnnl_memory_create((dnnl_memory_t *)&c->bias, &bmd, engine, l->b) != dnnl_success)) {
        slot_clear(c);
        return NULL;
    }
    return c;
}

int clip_linear_forward(struct clip_linear *l, const float *x, int64_t m, float *y,
                        uint16_t *xbf, struct err *err)
{
    if (m <= 0)
        return 0;
    const void *src = x;
    if (l->prec == CLIP_BF16) {
        clip__to_bf16(x, xbf, (size_t)m * l->in);
        src = xbf;
    }
    int rc = 0;
    pthread_mutex_lock(&l->lock);
    struct clip_linear_prim *c = slot_for(l, m);
    if (!c) {
        rc = err_set(err, ERR_INTERNAL, "oneDNN: no matmul primitive for M=%lld, %dx%d",
                     (long long)m, l->in, l->out);
        goto fail;
    }
    dnnl_memory_set_data_handle(c->src, (void *)src);
    dnnl_memory_set_data_handle(c->dst, y);
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, c->src}, {DNNL_ARG_WEIGHTS, l->wmem},
                               {DNNL_ARG_DST, c->dst}, {DNNL_ARG_BIAS, c->bias}};
    if (dnnl_primitive_execute(c->prim, l->stream, l->b ? 4 : 3, args) != dnnl_success ||
        dnnl_stream_wait(l->stream) != dnnl_success)
        rc = err_set(err, ERR_INTERNAL, "oneDNN: matmul failed");
fail:
    pthread_mutex_unlock(&l->lock);
    return rc;
}

void clip_linear_ref(const float *x, int64_t m, int k, const float *w, const float *b,
                     int n, enum clip_act act, int accumulate, float *y)
{
    for (int64_t i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = b ? b[j] : 0.0;
            for (int t = 0; t < k; t++)
                s += (double)x[i * k + t] * w[(size_t)j * k + t];
            float v = (float)s;
            if (act == CLIP_ACT_QUICK_GELU)
                v = v / (1.0f + expf(-1.702f * v));
            else if (act == CLIP_ACT_GELU)
                v = 0.5f * v * (1.0f + erff(v / sqrtf(2.0f)));
            y[i * n + j] = accumulate ? y[i * n + j] + v : v;
        }
}

size_t clip_linear_bytes(const struct clip_linear *l)
{
    return l->wmd ? dnnl_memory_desc_get_size(l->wmd) : 0;
}

int clip_cpu_has_bf16(void)
{
    const char *no = getenv("IMGSEARCH_NO_BF16");
    if (no && *no && strcmp(no, "0"))
        return 0;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512bf16"))
        return 1;
    /* AMX-BF16 is CPUID.(EAX=7,ECX=0):EDX bit 22 (not every compiler's
     * __builtin_cpu_supports knows it) */
    unsigned a, b, c, d;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 22 & 1u);
}

int clip_check_bf16(struct err *err)
{
    if (clip_cpu_has_bf16())
        return 0;
    return err_set(err, ERR_INVALID_ARGUMENT,
                   "bf16 needs a CPU with AVX512-BF16 or AMX; this CPU has neither "
                   "- use --precision fp32 or auto");
}
