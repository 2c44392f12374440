/* bench.c - `imgsearch bench`: speed figures as JSON lines.
 *   embed       the image tower alone on random pixels ("model_only": true:
 *               no decoding, no preprocessing)
 *   text        the text tower on realistic query lengths (5-12 tokens)
 *   gemm        the machine's matrix product speed (fp32, and bf16 where the
 *               CPU has it)
 *   preprocess  decode + preprocess of real files
 *   index       decode + preprocess + embed of real files (no store), in
 *               batches of --batch (default 16; --batch 1 means 1)
 *   ann         the vector index (see bench_ann.c)
 * Benchmarks print figures, never verdicts, and each line says what it
 * timed.
 */
#include "cmd/cmd.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clip/linear.h"
#include "cmd/bench_ann.h"
#include "pipe/pipe.h"
#include "util/clock.h"

/* Calls fn once to warm up, then again until `seconds` have passed and at
 * least min_iters calls were timed; *per gets seconds per call. */
static int timed(int (*fn)(void *ctx, struct err *err), void *ctx, double seconds,
                 int min_iters, double *per, struct err *err)
{
    int rc = fn(ctx, err), iters = 0;
    double t0 = mono_now(), t = t0;
    while (!rc && (t - t0 < seconds || iters < min_iters)) {
        rc = fn(ctx, err);
        iters++;
        t = mono_now();
    }
    *per = iters ? (t - t0) / iters : 0;
    return rc;
}

struct bopts {
    const char *model;
    long batch;            /* 0 = the benchmark's default */
    double seconds;
    enum pipe_precision prec;
    int full_decode;
    int nfiles;
    char **files;
    int syn_w, syn_h;      /* --synthetic WxH: a JPEG made in memory */
};

static int parse(const char *what, int argc, char **argv, struct bopts *o)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},   {"batch", required_argument, 0, 'b'},
        {"seconds", required_argument, 0, 's'}, {"precision", required_argument, 0, 'p'},
        {"full-decode", no_argument, 0, 'f'},   {"help", no_argument, 0, 'h'},
        {"synthetic", required_argument, 0, 'y'},
        {0, 0, 0, 0},
    };
    struct err err;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'f': o->full_decode = 1; break;
        case 'y':
            if (sscanf(optarg, "%dx%d", &o->syn_w, &o->syn_h) != 2 || o->syn_w < 1 ||
                o->syn_h < 1 || (long)o->syn_w * o->syn_h > 50000000L)
                return cmd_usage_error("bench", "--synthetic wants WxH (at most 50 MP), not '%s'",
                                       optarg);
            break;
        case 'b':
            if (cmd_parse_int("bench", "--batch", optarg, 1, 1024, &o->batch))
                return 2;
            break;
        case 's':
            if (cmd_parse_double("bench", "--seconds", optarg, 0.01, 3600, &o->seconds))
                return 2;
            break;
        case 'p':
            if (pipe_parse_precision(optarg, &o->prec, &err))
                return cmd_usage_error("bench", "%s", err.msg);
            break;
        case 'h':
            printf("usage: imgsearch bench %s --model DIR [--batch N] [--precision P] "
                   "[--seconds S] [FILE...]\n", what);
            return -1;
        default: return cmd_usage_error("bench", "unknown option '%s'", argv[optind - 1]);
        }
    }
    o->files = argv + optind;
    o->nfiles = argc - optind;
    return 0;
}

/* Resident set size of this process in MB, from /proc/self/status. */
static double rss_mb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = 0;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':')
            kb = strtod(line + n + 1, NULL);
    if (f)
        fclose(f);
    return kb / 1024.0;
}

struct embed_run {
    struct pipe *p;
    const float *in;
    int b;
    float *out;
};

static int embed_once(void *ctx, struct err *err)
{
    struct embed_run *r = ctx;
    return pipe_embed_pixels(r->p, r->in, r->b, r->out, 1, err);
}

static int bench_embed(struct bopts *o)
{
    struct pipe_opts po = {.prec = o->prec, .skip_text = 1};
    struct pipe *p;
    struct err err;
    if (!(o->model = cmd_model_dir(o->model)))
        return cmd_usage_error("bench", "--model DIR is required");
    if (pipe_open(&p, o->model, &po, &err))
        return cmd_fail("bench", &err);
    /* the model's share: resident size after loading, before activations */
    const double model_rss = rss_mb("VmRSS");
    size_t px = 3 * (size_t)p->size * p->size * (size_t)o->batch;
    float *in = malloc(sizeof(float) * px), *out = malloc(sizeof(float) * p->dim * (size_t)o->batch);
    uint64_t s = 12345;
    for (size_t i = 0; i < px; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        in[i] = (float)((s >> 40) & 0xffff) / 32768.0f - 1.0f;
    }
    struct embed_run r = {p, in, (int)o->batch, out};
    double per;
    int rc = timed(embed_once, &r, o->seconds, 2, &per, &err);
    if (rc) {
        rc = cmd_fail("bench", &err);
    } else {
        printf("{\"what\": \"image\", \"model_only\": true, \"input\": \"random pixels\", "
               "\"batch\": %ld, \"precision\": \"%s\", \"images_per_s\": %.2f, "
               "\"ms_per_batch\": %.3f, \"rss_mb\": %.0f, \"model_mb\": %.0f}\n",
               o->batch, pipe_precision_name(p), o->batch / per, per * 1e3, rss_mb("VmRSS"),
               model_rss);
    }
    free(in);
    free(out);
    pipe_free(p);
    return rc;
}

struct text_run {
    struct clip_model *m;
    const int32_t *const *rows;
    const int *lens;
    int b;
    float *out;
};

static int text_once(void *ctx, struct err *err)
{
    struct text_run *r = ctx;
    return clip_embed_ids(r->m, r->rows, r->lens, r->b, r->out, err);
}

static int bench_text(struct bopts *o)
{
    struct pipe_opts po = {.prec = o->prec};
    struct pipe *p;
    struct err err;
    if (!(o->model = cmd_model_dir(o->model)))
        return cmd_usage_error("bench", "--model DIR is required");
    if (pipe_open(&p, o->model, &po, &err))
        return cmd_fail("bench", &err);
    if (!clip_has_text(p->model)) {
        pipe_free(p);
        err_set(&err, ERR_NOT_FOUND, "%s has no text tower", o->model);
        return cmd_fail("bench", &err);
    }
    int b = (int)o->batch, vocab = clip_vocab_size(p->model);
    int32_t *ids = malloc(sizeof(int32_t) * 14 * (size_t)b);
    const int32_t **rows = malloc(sizeof *rows * (size_t)b);
    int *lens = malloc(sizeof(int) * (size_t)b);
    float *out = malloc(sizeof(float) * p->dim * (size_t)b);
    uint64_t s = 777;
    for (int i = 0; i < b; i++) { /* 5..12 tokens: sot, 3..10 words, eot */
        int32_t *r = ids + (size_t)i * 14;
        int n = 5 + i % 8;
        r[0] = vocab - 2;
        for (int k = 1; k < n - 1; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            r[k] = (int32_t)(256 + (s >> 33) % (uint64_t)(vocab - 2 - 256));
        }
        r[n - 1] = vocab - 1;
        rows[i] = r;
        lens[i] = n;
    }
    struct text_run r = {p->model, rows, lens, b, out};
    double per;
    int rc = timed(text_once, &r, o->seconds, 2, &per, &err);
    if (rc) {
        rc = cmd_fail("bench", &err);
    } else {
        printf("{\"what\": \"text\", \"batch\": %d, \"precision\": \"%s\", \"texts_per_s\": %.2f, "
               "\"ms_per_batch\": %.3f}\n",
               b, pipe_precision_name(p), b / per, per * 1e3);
    }
    free(ids);
    free(rows);
    free(lens);
    free(out);
    pipe_free(p);
    return rc;
}

struct gemm_run {
    struct clip_linear *l;
    const float *x;
    int m;
    float *y;
    uint16_t *xbf;
};

static int gemm_once(void *ctx, struct err *err)
{
    struct gemm_run *r = ctx;
    return clip_linear_forward(r->l, r->x, r->m, r->y, r->xbf, err);
}

static int bench_gemm(struct bopts *o)
{
    const int m = 800, k = 768, n = 3072;
    float *x = malloc(sizeof(float) * m * k), *y = malloc(sizeof(float) * m * n);
    uint16_t *xbf = malloc(sizeof(uint16_t) * m * k);
    for (int i = 0; i < m * k; i++)
        x[i] = (float)(((size_t)i * 7919u) % 1000u) / 1000.0f - 0.5f;
    int rc = 0;
    for (int pi = 0; pi < 2 && !rc; pi++) {
        struct err err;
        if (pi == 1 && clip_check_bf16(&err)) {
            printf("{\"what\": \"gemm\", \"m\": %d, \"k\": %d, \"n\": %d, \"precision\": \"bf16\", "
                   "\"skipped\": \"%s\"}\n", m, k, n, err.msg);
            break;
        }
        float *w = malloc(sizeof(float) * (size_t)n * k);
        for (int i = 0; i < n * k; i++)
            w[i] = (float)(((size_t)i * 104729u) % 1000u) / 1000.0f - 0.5f;
        struct clip_linear l;
        enum clip_precision prec = pi ? CLIP_BF16 : CLIP_FP32;
        if (clip_linear_init(&l, k, n, w, NULL, CLIP_ACT_NONE, 0, prec, &err)) {
            rc = cmd_fail("bench", &err);
            break;
        }
        struct gemm_run r = {&l, x, m, y, xbf};
        double per;
        if (timed(gemm_once, &r, o->seconds / 2, 3, &per, &err)) {
            rc = cmd_fail("bench", &err);
            clip_linear_free(&l);
            break;
        }
        printf("{\"what\": \"gemm\", \"m\": %d, \"k\": %d, \"n\": %d, \"precision\": \"%s\", "
               "\"ms\": %.3f, \"gflops\": %.1f}\n",
               m, k, n, pi ? "bf16" : "fp32", per * 1e3, 2.0 * m * k * n / per * 1e-9);
        clip_linear_free(&l);
    }
    free(x);
    free(y);
    free(xbf);
    return rc;
}

struct prep_run {
    struct pipe *p;
    const uint8_t *jpg;
    size_t n;
    float *px;
};

static int prep_once(void *ctx, struct err *err)
{
    struct prep_run *r = ctx;
    return pipe_prepare_bytes(r->p, r->jpg, r->n, "synthetic", r->px, err);
}

/* decode + preprocess of one synthetic JPEG of syn_w x syn_h made in
 * memory (a 12 MP phone photo: 4032x3024), to show DCT scaling. */
static int bench_synthetic(struct bopts *o)
{
    struct pipe_opts po = {.prec = o->prec, .skip_text = 1, .full_decode = o->full_decode};
    struct pipe *p;
    struct err err;
    struct img im = {0};
    uint8_t *jpg = NULL;
    size_t n = 0;
    if (!(o->model = cmd_model_dir(o->model)))
        return cmd_usage_error("bench", "--model DIR is required");
    if (pipe_open(&p, o->model, &po, &err))
        return cmd_fail("bench", &err);
    float *px = malloc(sizeof(float) * 3 * (size_t)p->size * p->size);
    int rc = img_synthetic(&im, o->syn_w, o->syn_h, 7, &err);
    if (!rc)
        rc = img_encode_jpeg(&im, 90, NULL, 0, &jpg, &n, &err);
    img_free(&im);
    struct prep_run r = {p, jpg, n, px};
    double per = 0;
    if (!rc)
        rc = timed(prep_once, &r, o->seconds, 3, &per, &err);
    if (rc)
        rc = cmd_fail("bench", &err);
    else
        printf("{\"what\": \"preprocess\", \"image\": \"synthetic %dx%d jpeg\", \"dct_scaling\": %s, "
               "\"ms_per_image\": %.2f, \"images_per_s\": %.2f}\n",
               o->syn_w, o->syn_h, o->full_decode ? "false" : "true", per * 1e3, 1.0 / per);
    free(jpg);
    free(px);
    pipe_free(p);
    return rc;
}

/* decode + preprocess (and embed when embed = 1) of the files, repeated
 * until seconds have passed. */
static int bench_files(struct bopts *o, int embed)
{
    if (!embed && o->syn_w)
        return bench_synthetic(o);
    if (o->nfiles == 0)
        return cmd_usage_error("bench", "give image files to read");
    struct pipe_opts po = {.prec = o->prec, .skip_text = 1, .full_decode = o->full_decode};
    struct pipe *p;
    struct err err;
    if (!(o->model = cmd_model_dir(o->model)))
        return cmd_usage_error("bench", "--model DIR is required");
    if (pipe_open(&p, o->model, &po, &err))
        return cmd_fail("bench", &err);
    const size_t px = 3 * (size_t)p->size * p->size;
    int b = (int)o->batch;
    float *pixels = malloc(sizeof(float) * px * (size_t)b), *out = malloc(sizeof(float) * p->dim * (size_t)b);
    long done = 0;
    int rc = 0, nb = 0;
    double t0 = mono_now(), t = t0;
    for (long i = 0; !rc && (t - t0 < o->seconds || i < o->nfiles); i++) {
        if ((rc = pipe_prepare_file(p, o->files[i % o->nfiles], pixels + (size_t)nb * px, &err)))
            break;
        nb++;
        if (nb == b || !embed) {
            if (embed && (rc = pipe_embed_pixels(p, pixels, nb, out, 0, &err)))
                break;
            done += nb;
            nb = 0;
        }
        t = mono_now();
    }
    if (!rc && nb && embed)
        rc = pipe_embed_pixels(p, pixels, nb, out, 0, &err);
    done += nb;
    t = mono_now();
    if (rc)
        rc = cmd_fail("bench", &err);
    else if (embed)
        printf("{\"what\": \"index\", \"model_only\": false, \"input\": \"decode + preprocess + embed\", "
               "\"batch\": %d, \"images\": %ld, \"precision\": \"%s\", \"images_per_s\": %.2f}\n",
               b, done, pipe_precision_name(p), done / (t - t0));
    else
        printf("{\"what\": \"preprocess\", \"images\": %ld, \"dct_scaling\": %s, \"images_per_s\": %.2f}\n",
               done, o->full_decode ? "false" : "true", done / (t - t0));
    free(pixels);
    free(out);
    pipe_free(p);
    return rc;
}

static int run(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fprintf(argc < 2 ? stderr : stdout,
                "usage: imgsearch bench embed|text|gemm|preprocess|index|ann [options]\n"
                "  embed --model DIR [--batch N] [--precision P] [--seconds S]\n"
                "  text  --model DIR [--batch N] [--precision P] [--seconds S]\n"
                "  gemm  [--seconds S]\n"
                "  preprocess --model DIR [--full-decode] (FILE... | --synthetic WxH)\n"
                "  index --model DIR [--batch N (default 16)] [--precision P] FILE...\n"
                "  ann --base F --queries F --truth F --dim D [...] (see bench ann --help)\n");
        return argc < 2 ? 2 : 0;
    }
    const char *what = argv[1];
    if (!strcmp(what, "ann")) {
        return cmd_bench_ann(argc - 1, argv + 1);
    }
    struct bopts o = {.batch = 0, .seconds = 3.0};
    int rc = parse(what, argc - 1, argv + 1, &o);
    if (rc)
        return rc < 0 ? 0 : rc;
    if (o.batch == 0 && strcmp(what, "index"))
        o.batch = 1;
    if (!strcmp(what, "embed"))
        return bench_embed(&o);
    if (!strcmp(what, "text"))
        return bench_text(&o);
    if (!strcmp(what, "gemm"))
        return bench_gemm(&o);
    if (!strcmp(what, "preprocess"))
        return bench_files(&o, 0);
    if (!strcmp(what, "index")) {
        if (o.batch == 0) /* only when --batch was not given */
            o.batch = 16;
        return bench_files(&o, 1);
    }
    return cmd_usage_error("bench", "unknown benchmark '%s'", what);
}

const struct cmd cmd_bench = {"bench", "benchmarks: embed, text, gemm, preprocess, index, ann", run};
