/* tower.c - the pre-LayerNorm transformer shared by both CLIP towers.
 *
 * Design:
 * 1. Sequences of different lengths are packed row after row (no padding),
 *    so every GEMM runs over exactly the real tokens; only attention looks at
 *    sequence boundaries.
 * 2. Residual sums are fused into the out_proj and fc2 products (oneDNN sum
 *    post-op), the activation into fc1.
 * 3. Attention runs per (sequence, head) task in parallel: scores (L, L) for
 *    one task at a time per thread, never the whole (B, H, L, L) tensor.
 *    Shapes: qkv is (R, 3C) with q at columns [0, C), k at [C, 2C), v at
 *    [2C, 3C); head h uses columns h*D .. h*D+D-1 of each, D = C / H.
 * Reference: Radford et al. 2021, "Learning Transferable Visual Models From
 * Natural Language Supervision", and OpenAI's clip/model.py.
 */
#include "clip/clip_int.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    void *n = realloc(*p, need * elem);
    if (!n)
        return -1;
    *p = n;
    *cap = need;
    return 0;
}

int clip__work_reserve(struct clip_work *w, int64_t rows, int c, int mlp, int maxlen)
{
    size_t r = (size_t)rows;
    if (r > w->cap_rows) {
        size_t cap = 0;
        float *ptrs[5] = {w->x, w->h, w->qkv, w->att, w->mlp};
        size_t widths[5] = {(size_t)c, (size_t)c, 3 * (size_t)c, (size_t)c, (size_t)mlp};
        for (int i = 0; i < 5; i++) {
            void *p = ptrs[i];
            cap = 0;
            if (grow(&p, &cap, r * widths[i], sizeof(float)))
                return -1;
            ptrs[i] = p;
        }
        w->x = ptrs[0];
        w->h = ptrs[1];
        w->qkv = ptrs[2];
        w->att = ptrs[3];
        w->mlp = ptrs[4];
        size_t nb = r * (size_t)(mlp > 3 * c ? mlp : 3 * c);
        if (nb > w->cap_xbf) {
            void *b = w->xbf;
            cap = 0;
            if (grow(&b, &cap, nb, sizeof(uint16_t)))
                return -1;
            w->xbf = b;
            w->cap_xbf = nb;
        }
        w->cap_rows = r;
    }
    size_t sc = (size_t)omp_get_max_threads() * clip__attend_scratch(maxlen, c);
    void *s = w->scores;
    if (grow(&s, &w->cap_scores, sc, sizeof(float)))
        return -1;
    w->scores = s;
    return 0;
}

int clip__work_patches(struct clip_work *w, size_t n)
{
    if (n <= w->cap_patches)
        return 0;
    void *p = w->patches;
    size_t cap = w->cap_patches;
    if (grow(&p, &cap, n, sizeof(float)))
        return -1;
    w->patches = p;
    /* the patch product reads its bf16 input from xbf too */
    void *b = w->xbf;
    size_t bcap = 0;
    if (grow(&b, &bcap, n > w->cap_xbf ? n : w->cap_xbf, sizeof(uint16_t)))
        return -1;
    w->xbf = b;
    if (n > w->cap_xbf)
        w->cap_xbf = n;
    w->cap_patches = n;
    return 0;
}

void clip__work_free(struct clip_work *w)
{
    free(w->x);
    free(w->h);
    free(w->qkv);
    free(w->att);
    free(w->mlp);
    free(w->xbf);
    free(w->scores);
    free(w->patches);
    memset(w, 0, sizeof *w);
}

int clip__tower_blocks(struct clip_tower *t, struct clip_work *w, int64_t rows,
                       const int *off, const int *len, int nseq, int causal,
                       struct err *err)
{
    const int c = t->width, h = t->heads, d = c / h;
    int maxlen = 1;
    for (int s = 0; s < nseq; s++)
        if (len[s] > maxlen)
            maxlen = len[s];
    if (clip__work_reserve(w, rows, c, t->mlp, maxlen))
        return err_set(err, ERR_NOMEM, "out of memory for activations (%lld rows)",
                       (long long)rows);
    int rc;
    for (int l = 0; l < t->layers; l++) {
        struct clip_block *b = &t->blocks[l];
        clip__layernorm(w->x, w->h, rows, c, b->ln1_w, b->ln1_b, t->eps);
        if ((rc = clip_linear_forward(&b->qkv, w->h, rows, w->qkv, w->xbf, err)))
            return rc;
        const int tasks = nseq * h;
        float *scores = w->scores;
#pragma omp parallel for schedule(dynamic, 1)
        for (int k = 0; k < tasks; k++) {
            int s = k / h, hh = k % h;
            float *sc = scores + (size_t)omp_get_thread_num() * clip__attend_scratch(maxlen, c);
            clip__attend(w->qkv, w->att, sc, off[s], len[s], c, hh * d, d, causal);
        }
        if ((rc = clip_linear_forward(&b->out, w->att, rows, w->x, w->xbf, err)))
            return rc;
        clip__layernorm(w->x, w->h, rows, c, b->ln2_w, b->ln2_b, t->eps);
        if ((rc = clip_linear_forward(&b->fc1, w->h, rows, w->mlp, w->xbf, err)))
            return rc;
        if ((rc = clip_linear_forward(&b->fc2, w->mlp, rows, w->x, w->xbf, err)))
            return rc;
    }
    return 0;
}

void clip__tower_free(struct clip_tower *t)
{
    if (t->blocks) {
        for (int l = 0; l < t->layers; l++) {
            struct clip_block *b = &t->blocks[l];
            free(b->ln1_w);
            free(b->ln1_b);
            free(b->ln2_w);
            free(b->ln2_b);
            clip_linear_free(&b->qkv);
            clip_linear_free(&b->out);
            clip_linear_free(&b->fc1);
            clip_linear_free(&b->fc2);
        }
        free(t->blocks);
    }
    free(t->ln_post_w);
    free(t->ln_post_b);
    clip_linear_free(&t->proj);
    memset(t, 0, sizeof *t);
}
