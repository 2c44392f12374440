/* classify.c - `imgsearch classify`: zero-shot labels for images (catalog
 * auto-tagging). Labels go through a template ("a photo of {}"), are embedded
 * once, and each image gets CLIP's softmax over scaled cosine logits. */
#include "cmd/cmd.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "pipe/pipe.h"
#include "query/query.h"

#define MAX_LABELS 1000

static void usage(FILE *f)
{
    fprintf(f,
            "usage: imgsearch classify --model DIR --labels \"a dress,a car,a shoe\" [options] FILE...\n"
            "\n"
            "Prints per image {\"file\": ..., \"labels\": [{\"label\": ..., \"prob\": p, \"logit\": l}, ...]},\n"
            "best first; probabilities are CLIP's softmax over exp(logit_scale) * cosine.\n"
            "\n"
            "options:\n"
            "  --labels LIST        comma-separated labels (required, at most %d)\n"
            "  --template T         text around each label, {} marks it (default \"a photo of {}\")\n"
            "  --top N              print only the N best labels\n"
            "  --precision P        auto (default), fp32 or bf16\n"
            "  --model DIR          model folder (default $IMGSEARCH_MODEL)\n",
            MAX_LABELS);
}

/* Splits a comma-separated list in place; returns the count. */
static int split_labels(char *s, char **out, int max)
{
    int n = 0;
    for (char *tok = strtok(s, ","); tok && n < max; tok = strtok(NULL, ",")) {
        while (*tok == ' ')
            tok++;
        char *end = tok + strlen(tok);
        while (end > tok && end[-1] == ' ')
            *--end = 0;
        if (*tok)
            out[n++] = tok;
    }
    return n;
}

static int run(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},     {"labels", required_argument, 0, 'l'},
        {"template", required_argument, 0, 't'},  {"top", required_argument, 0, 'k'},
        {"precision", required_argument, 0, 'p'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *model = NULL, *tpl = QUERY_TEMPLATE_DEFAULT;
    char *labels_arg = NULL;
    long top = MAX_LABELS;
    struct pipe_opts po = {0};
    struct err err = {0};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'l': labels_arg = optarg; break;
        case 't': tpl = optarg; break;
        case 'k':
            if (cmd_parse_int("classify", "--top", optarg, 1, MAX_LABELS, &top))
                return 2;
            break;
        case 'p':
            if (pipe_parse_precision(optarg, &po.prec, &err))
                return cmd_usage_error("classify", "%s", err.msg);
            break;
        case 'h': usage(stdout); return 0;
        default: return cmd_usage_error("classify", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (!(model = cmd_model_dir(model)))
        return cmd_usage_error("classify", "--model DIR is required (or set IMGSEARCH_MODEL)");
    if (!labels_arg)
        return cmd_usage_error("classify", "--labels is required");
    if (optind >= argc)
        return cmd_usage_error("classify", "give image files to classify");
    char *copy = strdup(labels_arg);
    char **labels = malloc(sizeof(char *) * MAX_LABELS);
    char **texts = calloc(MAX_LABELS, sizeof(char *));
    struct pipe *p = NULL;
    float *lv = NULL, *px = NULL, *v = NULL;
    struct query_label *rk = NULL;
    int rc = 0, n = 0, failed = 0;
    if (!copy || !labels || !texts) {
        rc = 1;
        goto out;
    }
    n = split_labels(copy, labels, MAX_LABELS);
    if (n < 2) {
        rc = cmd_usage_error("classify", "--labels needs at least two labels, comma-separated");
        goto out;
    }
    for (int i = 0; i < n; i++)
        if (!(texts[i] = query_label_text(tpl, labels[i]))) {
            rc = 1;
            goto out;
        }
    if (pipe_open(&p, model, &po, &err)) {
        rc = cmd_fail("classify", &err);
        goto out;
    }
    lv = malloc(sizeof(float) * (size_t)p->dim * n);
    px = malloc(sizeof(float) * 3 * (size_t)p->size * p->size);
    v = malloc(sizeof(float) * (size_t)p->dim);
    rk = malloc(sizeof *rk * n);
    if (!lv || !px || !v || !rk) {
        rc = 1;
        goto out;
    }
    if (pipe_embed_texts(p, (const char *const *)texts, n, lv, 0, &err)) {
        rc = cmd_fail("classify", &err);
        goto out;
    }
    for (int f = optind; f < argc; f++) {
        fputs("{\"file\": ", stdout);
        cmd_json_str(stdout, argv[f]);
        if (pipe_prepare_file(p, argv[f], px, &err) || pipe_embed_pixels(p, px, 1, v, 0, &err) ||
            query_rank_labels(v, lv, n, p->dim, clip_logit_scale(p->model), rk, &err)) {
            fputs(", \"error\": ", stdout);
            cmd_json_err(stdout, &err);
            fputs("}\n", stdout);
            failed++;
            continue;
        }
        fputs(", \"labels\": [", stdout);
        for (int i = 0; i < n && i < top; i++) {
            fputs(i ? ", {\"label\": " : "{\"label\": ", stdout);
            cmd_json_str(stdout, labels[rk[i].idx]);
            printf(", \"prob\": %.6g, \"logit\": %.6g}", (double)rk[i].prob, (double)rk[i].logit);
        }
        fputs("]}\n", stdout);
    }
    rc = failed ? 2 : 0;
out:
    if (texts)
        for (int i = 0; i < n; i++)
            free(texts[i]);
    free(texts);
    free(labels);
    free(copy);
    free(lv);
    free(px);
    free(v);
    free(rk);
    pipe_free(p);
    return rc;
}

const struct cmd cmd_classify = {"classify", "zero-shot labels for images (auto-tagging)", run};
