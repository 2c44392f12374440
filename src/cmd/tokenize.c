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

static int run(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},
        {"context", required_argument, 0, 'c'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *model = NULL;
    long context = TOK_CONTEXT;
    const char **texts = calloc((size_t)argc + 1, sizeof *texts);
    int32_t *ids = NULL;
    struct tok *t = NULL;
    struct err err = {0};
    int ntext = 0, c, rc = 0;
    if (!texts)
        return 1;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "-:", opts, NULL)) != -1) {
        switch (c) {
        case 1: texts[ntext++] = optarg; break;
        case 'm': model = optarg; break;
        case 'c':
            if ((rc = cmd_parse_int("tokenize", "--context", optarg, 2, CONTEXT_MAX,
                                    &context)))
                goto out;
            break;
        case 'h': usage(stdout); goto out;
        case ':':
            rc = cmd_usage_error("tokenize", "option '%s' needs a value", argv[optind - 1]);
            goto out;
        default:
            rc = cmd_usage_error("tokenize", "unknown option '%s'", argv[optind - 1]);
            goto out;
        }
    }
    while (optind < argc) /* the texts after "--" */
        texts[ntext++] = argv[optind++];
    if (!(model = cmd_model_dir(model))) {
        rc = cmd_usage_error("tokenize", "--model DIR is required (or set IMGSEARCH_MODEL)");
        goto out;
    }
    if (ntext == 0) {
        rc = cmd_usage_error("tokenize", "nothing to tokenize: give one or more texts");
        goto out;
    }
    if (tok_new_from_dir(&t, model, &err)) {
        rc = cmd_fail("tokenize", &err);
        goto out;
    }
    ids = malloc(sizeof *ids * (size_t)context);
    if (!ids) {
        err_set(&err, ERR_NOMEM, "out of memory");
        rc = cmd_fail("tokenize", &err);
        goto out;
    }
    for (int i = 0; i < ntext; i++) {
        int n = 0;
        if (tok_encode(t, texts[i], strlen(texts[i]), ids, (int)context, &n, &err)) {
            print_error(texts[i], &err);
            err_prefix(&err, "text %d", i + 1);
            int code = cmd_fail("tokenize", &err);
            if (code > rc)
                rc = code;
        } else
            print_ids(texts[i], ids, n);
    }
    if (fflush(stdout) != 0 && !rc) {
        err_set(&err, ERR_IO, "stdout: write failed");
        rc = cmd_fail("tokenize", &err);
    }
out:
    free(ids);
    tok_free(t);
    free(texts);
    return rc;
}

const struct cmd cmd_tokenize = {
    .name = "tokenize",
    .summary = "print the CLIP token ids of texts",
    .run = run,
};
