/* reindex.c - `imgsearch reindex`: re-embed a store's items with another
 * model, from their sources.
 *
 * Design:
 *  1. When the store's model differs from the one given,
 *     store_reset_embeddings clears every embedding and records the new
 *     model; then every item waiting for an embedding is embedded by the
 *     ingest engine (src/ingest/: decoder threads, batches, one transaction
 *     per batch).
 *  2. Resumable: a second run with the same model finds the store already
 *     switched and embeds only the items still waiting, so an interrupted
 *     reindex (Ctrl-C, a crash) goes on where it stopped.
 *  3. Items keep their ids and metadata; sha256, size and mtime are taken
 *     from the bytes read now. An item whose source cannot be read stays
 *     waiting and is listed as failed.
 */
#include "cmd/cmd.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/index_int.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: imgsearch reindex --store PATH --model DIR [options]\n"
            "\n"
            "Re-embeds every item of the store from its source file with this model\n"
            "(a store made with another model is switched to it first: its embeddings\n"
            "are cleared). Resumable: run it again after an interruption and it embeds\n"
            "the items still waiting. With the store's own model it only embeds the\n"
            "waiting items.\n"
            "\n"
            "Prints progress on stderr and a summary line on stdout:\n"
            "  {\"reset\": true, \"updated\": 12, \"failed\": 0, \"waiting\": 0,\n"
            "   \"seconds\": 1.2, \"images_per_s\": 10.0}\n"
            "and the failed items with their reasons on stderr (exit code 2 if any).\n"
            "\n"
            "options:\n"
            "  --store PATH         the store\n"
            "  --model DIR          model folder (default $IMGSEARCH_MODEL)\n"
            "  --batch N            images per forward pass and transaction (default 16)\n"
            "  --decoders N         decoder threads (default: the CPUs, at most 8)\n"
            "  --precision P        auto (default), fp32 or bf16\n"
            "  --help               this text\n");
}

static int run(int argc, char **argv)
{
    static const struct option opts[] = {
        {"store", required_argument, 0, 's'},    {"model", required_argument, 0, 'm'},
        {"batch", required_argument, 0, 'b'},    {"precision", required_argument, 0, 'p'},
        {"decoders", required_argument, 0, 'd'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *store = NULL, *model = NULL;
    struct pipe_opts po = {.skip_text = 1};
    long batch = 16, decoders = 0;
    struct err err = {0};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's': store = optarg; break;
        case 'm': model = optarg; break;
        case 'b':
            if (cmd_parse_int("reindex", "--batch", optarg, 1, 256, &batch))
                return 2;
            break;
        case 'd':
            if (cmd_parse_int("reindex", "--decoders", optarg, 1, 64, &decoders))
                return 2;
            break;
        case 'p':
            if (pipe_parse_precision(optarg, &po.prec, &err))
                return cmd_usage_error("reindex", "%s", err.msg);
            break;
        case 'h': usage(stdout); return 0;
        default: return cmd_usage_error("reindex", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cmd_usage_error("reindex", "unexpected argument '%s'", argv[optind]);
    if (!store)
        return cmd_usage_error("reindex", "--store PATH is required");
    if (!(model = cmd_model_dir(model)))
        return cmd_usage_error("reindex", "--model DIR is required (or set IMGSEARCH_MODEL)");

    struct ix_ui ui;
    struct ingest_hooks h;
    struct ingest_counts n = {0};
    struct ingest_run_opts ro = {
        .batch = (int)batch,
        .decoders = decoders ? (int)decoders : ingest_default_decoders(),
    };
    ix_ui_init(&ui, "reindex", "reindexed", &h);
    struct store *st = NULL;
    struct pipe *p = NULL;
    struct ingest_jobs jobs = {0};
    int rc, reset = 0;
    /* The store first: a missing store should not cost a model load. Any
     * model is accepted here; it is compared below. */
    struct store_options so = {0};
    if ((rc = store_open(&st, store, &so, &err))) {
        rc = cmd_fail("reindex", &err);
        goto out;
    }
    if ((rc = pipe_open(&p, model, &po, &err))) {
        rc = cmd_fail("reindex", &err);
        goto out;
    }
    const char *mid = clip_model_id(p->model);
    if (strcmp(store_model(st), mid) || store_dim(st) != p->dim) {
        if ((rc = store_reset_embeddings(st, mid, p->dim, &err))) {
            rc = cmd_fail("reindex", &err);
            goto out;
        }
        reset = 1;
    }
    ix_ui_catch_signals();
    int64_t last;
    if (!(rc = ingest_waiting(st, 0, 0, &h, &n, &jobs, &last, &err))) {
        rc = ingest_run(st, p, &jobs, &ro, &h, &n, &err);
        ix_ui_end(&ui);
    }
    if (!rc)
        rc = store_index_sync(st, &err);
    ix_ui_print_failures(&ui, n.failed);
    if (rc && rc != -ERR_INTERRUPTED) {
        rc = cmd_fail("reindex", &err);
        goto out;
    }
    int64_t waiting = -1;
    struct err we;
    store_count_waiting(st, &waiting, &we);
    double secs = ix_now() - ui.t0;
    printf("{\"reset\": %s, \"updated\": %ld, \"failed\": %ld, \"waiting\": %lld, "
           "\"seconds\": %.3f, \"images_per_s\": %.2f%s}\n",
           reset ? "true" : "false", n.updated, n.failed, (long long)waiting, secs,
           secs > 0 ? (double)n.embedded / secs : 0.0,
           rc == -ERR_INTERRUPTED ? ", \"interrupted\": true" : "");
    fflush(stdout);
    if (rc == -ERR_INTERRUPTED) {
        fprintf(stderr, "imgsearch reindex: interrupted; run the same command again to "
                        "resume\n");
        rc = err_exit_code(ERR_INTERRUPTED);
    } else
        rc = n.failed ? 2 : 0;
out:
    if (st) {
        struct err ce;
        if (store_close(st, &ce) && !rc)
            rc = cmd_fail("reindex", &ce);
    }
    pipe_free(p);
    ingest_jobs_free(&jobs);
    ix_ui_free(&ui);
    return rc;
}

const struct cmd cmd_reindex = {"reindex", "re-embed every item of a store with another model",
                                run};
