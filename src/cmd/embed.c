/* embed.c - `imgsearch embed`: images and texts to CLIP vectors, one JSON
 * line each, in command-line order. A failing input prints an error line and
 * the others still print; the exit code is then 2. */
#include "cmd/cmd.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "pipe/pipe.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: imgsearch embed --model DIR [options] [FILE...] [--text TEXT...]\n"
            "\n"
            "Prints one JSON line per image file or text, in the order given:\n"
            "  {\"file\": ..., \"dim\": 512, \"embedding\": [...]}\n"
            "  {\"text\": ..., \"dim\": 512, \"embedding\": [...]}\n"
            "Embeddings are L2-normalized unless --raw is given.\n"
            "\n"
            "options:\n"
            "  --model DIR          model folder (default $IMGSEARCH_MODEL)\n"
            "  --text TEXT          embed a text (repeatable)\n"
            "  --raw                print the raw projection, not normalized\n"
            "  --precision P        auto (default), fp32 or bf16\n"
            "  --batch N            images per forward pass (default 16)\n"
            "  --full-decode        decode JPEGs at full size (no DCT scaling)\n"
            "  --max-pixels N       refuse images over N pixels (default 50000000)\n"
            "  --weights FILE       use this .safetensors instead of the folder's\n"
            "  --help               this text\n");
}

struct input {
    int is_text;      /* 1: text, 0: file */
    const char *s;    /* path or text */
    int ok;           /* prepared (files) */
    struct err err;   /* failure */
    float *vec;       /* dim floats when ok */
};

static void print_input(const struct input *in, int dim)
{
    fputs(in->is_text ? "{\"text\": " : "{\"file\": ", stdout);
    cmd_json_str(stdout, in->s);
    if (in->ok) {
        printf(", \"dim\": %d, \"embedding\": ", dim);
        cmd_json_floats(stdout, in->vec, dim);
    } else {
        fputs(", \"error\": ", stdout);
        cmd_json_err(stdout, &in->err);
    }
    fputs("}\n", stdout);
}

/* Embeds the nin inputs in order, images in batches of up to batch, and
 * prints a line for each. Returns the number that failed, or -1 when out of
 * memory. */
static int embed_all(struct pipe *p, struct input *in, int nin, int batch, int raw)
{
    const size_t px = 3 * (size_t)p->size * p->size;
    float *pixels = malloc(sizeof(float) * px * (size_t)batch);
    float *vecs = malloc(sizeof(float) * (size_t)p->dim * (size_t)nin);
    int *slot = malloc(sizeof(int) * (size_t)batch);
    int failed = 0, printed = 0;
    if (!pixels || !vecs || !slot) {
        failed = -1;
        goto fail;
    }
    for (int i = 0; i < nin;) {
        /* gather up to batch files (texts go one by one, in place) */
        int nb = 0, j = i;
        for (; j < nin && nb < batch; j++) {
            struct input *x = &in[j];
            x->vec = vecs + (size_t)j * p->dim;
            if (x->is_text) {
                if (nb) /* keep order: a text ends the batch */
                    break;
                x->ok = pipe_embed_text(p, x->s, x->vec, raw, &x->err) == 0;
                j++;
                break;
            }
            if (pipe_prepare_file(p, x->s, pixels + (size_t)nb * px, &x->err) == 0)
                slot[nb++] = j;
        }
        if (nb) {
            float *tmp = vecs + (size_t)i * p->dim; /* reuse: write then move */
            struct err be;
            if (pipe_embed_pixels(p, pixels, nb, tmp, raw, &be) == 0) {
                for (int k = nb - 1; k >= 0; k--) {
                    memmove(in[slot[k]].vec, tmp + (size_t)k * p->dim, sizeof(float) * p->dim);
                    in[slot[k]].ok = 1;
                }
            } else {
                for (int k = 0; k < nb; k++)
                    in[slot[k]].err = be;
            }
        }
        for (; printed < j; printed++) {
            print_input(&in[printed], p->dim);
            failed += !in[printed].ok;
        }
        fflush(stdout);
        i = j;
    }
fail:
    free(pixels);
    free(vecs);
    free(slot);
    return failed;
}

/* What the command line asked for. */
struct embed_opts {
    const char *model;   /* --model or IMGSEARCH_MODEL */
    struct pipe_opts po; /* precision, decode, weights; text tower if needed */
    int raw;             /* vectors before L2 normalisation */
    long batch;          /* images per forward pass */
    struct input *in;    /* nin inputs, in an array of argc */
    int nin;
};

/* Fills o from argv. Returns -1 to go on, else the exit code (--help: 0,
 * a usage error: 2). */
static int parse_opts(int argc, char **argv, struct embed_opts *o)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},   {"text", required_argument, 0, 't'},
        {"raw", no_argument, 0, 'r'},           {"precision", required_argument, 0, 'p'},
        {"batch", required_argument, 0, 'b'},   {"full-decode", no_argument, 0, 'f'},
        {"max-pixels", required_argument, 0, 'x'}, {"weights", required_argument, 0, 'w'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0},
    };
    long maxpx = 0;
    struct err err = {0};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "-", opts, NULL)) != -1) {
        switch (c) {
        case 1: o->in[o->nin++] = (struct input){.s = optarg}; break;
        case 't': o->in[o->nin++] = (struct input){.is_text = 1, .s = optarg}; break;
        case 'm': o->model = optarg; break;
        case 'r': o->raw = 1; break;
        case 'f': o->po.full_decode = 1; break;
        case 'w': o->po.weights = optarg; break;
        case 'p':
            if (pipe_parse_precision(optarg, &o->po.prec, &err))
                return cmd_usage_error("embed", "%s", err.msg);
            break;
        case 'b':
            if (cmd_parse_int("embed", "--batch", optarg, 1, 256, &o->batch))
                return 2;
            break;
        case 'x':
            if (cmd_parse_int("embed", "--max-pixels", optarg, 1, 1000000000L, &maxpx))
                return 2;
            break;
        case 'h': usage(stdout); return 0;
        default: return cmd_usage_error("embed", "unknown option '%s'", argv[optind - 1]);
        }
    }
    o->po.max_pixels = (uint64_t)maxpx;
    if (!(o->model = cmd_model_dir(o->model)))
        return cmd_usage_error("embed", "--model DIR is required (or set IMGSEARCH_MODEL)");
    if (o->nin == 0)
        return cmd_usage_error("embed", "nothing to embed: give image files or --text");
    int any_text = 0;
    for (int i = 0; i < o->nin; i++)
        any_text |= o->in[i].is_text;
    o->po.skip_text = !any_text;
    return -1;
}

/* Embeds o's inputs; returns the exit code. */
static int work(struct embed_opts *o)
{
    struct err err = {0};
    struct pipe *p = NULL;
    int rc = pipe_open(&p, o->model, &o->po, &err);
    if (rc)
        return cmd_fail("embed", &err);
    int failed = embed_all(p, o->in, o->nin, (int)o->batch, o->raw);
    if (failed < 0) {
        err_set(&err, ERR_NOMEM, "out of memory");
        rc = cmd_fail("embed", &err);
    } else {
        rc = failed ? 2 : 0;
        if (failed)
            fprintf(stderr, "imgsearch embed: %d of %d inputs failed\n", failed, o->nin);
    }
    pipe_free(p);
    return rc;
}

static int run(int argc, char **argv)
{
    struct embed_opts o = {.batch = 16};
    if (!(o.in = calloc((size_t)argc, sizeof *o.in)))
        return 1;
    int rc = parse_opts(argc, argv, &o);
    if (rc < 0)
        rc = work(&o);
    free(o.in);
    return rc;
}

const struct cmd cmd_embed = {"embed", "images and texts to CLIP embeddings (JSON lines)", run};
