/* tokenize.c - `imgsearch tokenize`: texts to CLIP token ids, one JSON line
 * per text in command-line order, {"text": ..., "ids": [...]}. A text that
 * cannot be tokenized (invalid UTF-8) gets {"text": ..., "error": {...}}
 * instead, its message on stderr, and the exit code is then 2; the other
 * texts still print. Only the tokenizer files of the model folder are read.
 */
#include "cmd/cmd.h"

#include <getopt.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clip/tokenizer.h"

#define CONTEXT_MAX 65536 /* largest --context */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: imgsearch tokenize [--model DIR] [--context N] TEXT...\n"
            "\n"
            "Prints the CLIP token ids of each TEXT as one JSON line:\n"
            "  {\"text\": \"a photo\", \"ids\": [49406, 320, 1125, 49407]}\n"
            "Ids start with <|startoftext|> and end with <|endoftext|>; a text\n"
            "longer than the context is cut (no padding is printed). Put '--'\n"
            "before a text that starts with '-'.\n"
            "\n"
            "options:\n"
            "  --model DIR    model folder with vocab.json + merges.txt or\n"
            "                 bpe_simple_vocab_16e6.txt.gz (default $IMGSEARCH_MODEL)\n"
            "  --context N    context length, 2 to %d (default %d)\n"
            "  --help         this text\n",
            CONTEXT_MAX, TOK_CONTEXT);
}

static void print_ids(const char *text, const int32_t *ids, int n)
{
    fputs("{\"text\": ", stdout);
    cmd_json_str(stdout, text);
    fputs(", \"ids\": [", stdout);
    for (int i = 0; i < n; i++)
        printf(i ? ", %d" : "%d", (int)ids[i]);
    fputs("]}\n", stdout);
}

static void print_error(const char *text, const struct err *err)
{
    fputs("{\"text\": ", stdout);
    cmd_json_str(stdout, text);
    fputs(", \"error\": ", stdout);
    cmd_json_err(stdout, err);
    fputs("}\n", stdout);
}

/* What the command line asked for. */
struct tok_opts {
    const char *model;  /* --model or IMGSEARCH_MODEL */
    long context;       /* ids per text */
    const char **texts; /* ntext texts (argv's), in an array of argc + 1 */
    int ntext;
};

/* Fills o from argv. Returns -1 to go on, else the exit code (--help: 0,
 * a usage error: 2). */
static int parse_opts(int argc, char **argv, struct tok_opts *o)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},
        {"context", required_argument, 0, 'c'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "-:", opts, NULL)) != -1) {
        switch (c) {
        case 1: o->texts[o->ntext++] = optarg; break;
        case 'm': o->model = optarg; break;
        case 'c':
            if (cmd_parse_int("tokenize", "--context", optarg, 2, CONTEXT_MAX, &o->context))
                return 2;
            break;
        case 'h': usage(stdout); return 0;
        case ':':
            return cmd_usage_error("tokenize", "option '%s' needs a value", argv[optind - 1]);
        default: return cmd_usage_error("tokenize", "unknown option '%s'", argv[optind - 1]);
        }
    }
    while (optind < argc) /* the texts after "--" */
        o->texts[o->ntext++] = argv[optind++];
    if (!(o->model = cmd_model_dir(o->model)))
        return cmd_usage_error("tokenize", "--model DIR is required (or set IMGSEARCH_MODEL)");
    if (o->ntext == 0)
        return cmd_usage_error("tokenize", "nothing to tokenize: give one or more texts");
    return -1;
}

/* Tokenizes o's texts; returns the exit code. */
static int work(const struct tok_opts *o)
{
    int32_t *ids = NULL;
    struct tok *t = NULL;
    struct err err = {0};
    int rc = 0;
    if (tok_new_from_dir(&t, o->model, &err)) {
        rc = cmd_fail("tokenize", &err);
        goto fail;
    }
    ids = malloc(sizeof *ids * (size_t)o->context);
    if (!ids) {
        err_set(&err, ERR_NOMEM, "out of memory");
        rc = cmd_fail("tokenize", &err);
        goto fail;
    }
    for (int i = 0; i < o->ntext; i++) {
        const char *text = o->texts[i];
        int n = 0;
        if (tok_encode(t, text, strlen(text), ids, (int)o->context, &n, &err)) {
            print_error(text, &err);
            err_prefix(&err, "text %d", i + 1);
            int code = cmd_fail("tokenize", &err);
            if (code > rc)
                rc = code;
        } else
            print_ids(text, ids, n);
    }
    if (fflush(stdout) != 0 && !rc) {
        err_set(&err, ERR_IO, "stdout: write failed");
        rc = cmd_fail("tokenize", &err);
    }
fail:
    free(ids);
    tok_free(t);
    return rc;
}

static int run(int argc, char **argv)
{
    struct tok_opts o = {.context = TOK_CONTEXT};
    if (!(o.texts = calloc((size_t)argc + 1, sizeof *o.texts)))
        return 1;
    int rc = parse_opts(argc, argv, &o);
    if (rc < 0)
        rc = work(&o);
    free(o.texts);
    return rc;
}

const struct cmd cmd_tokenize = {
    .name = "tokenize",
    .summary = "print the CLIP token ids of texts",
    .run = run,
};
