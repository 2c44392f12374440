/* reindex.c - `imgsearch reindex`: re-embed a store's items with another
 * model, from their sources.
 *
 * Design:
 *  1. When the store's model differs from the one given,
 *     store_reset_embeddings clears every embedding and records the new
 *     model; then every item waiting for an embedding is embedded by the
 *     indexing engine of index.c (decoder threads, batches, one transaction
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

/* Every waiting item with a source becomes a job; the others fail. */
static int collect(struct ix_ctx *c, struct ix_job **out, size_t *nout, struct err *err)
{
    struct ix_job *jobs = NULL;
    size_t n = 0, cap = 0;
    int64_t after = 0;
    int rc = 0;
    *out = NULL;
    *nout = 0;
    for (;;) {
        struct store_item *items;
        size_t k;
        int64_t next;
        if ((rc = store_waiting(c->st, after, 1000, &items, &k, &next, err)))
            break;
        for (size_t i = 0; i < k && !rc; i++) {
            struct store_item *it = &items[i];
            if (!it->source || !*it->source) {
                char msg[STORE_ID_MAX + 64];
                snprintf(msg, sizeof msg, "item '%s': no source to embed it from", it->id);
                ix_fail(c, msg);
                continue;
            }
            if (n == cap) {
                cap = cap ? 2 * cap : 256;
                struct ix_job *g = realloc(jobs, cap * sizeof *g);
                if (!g) {
                    rc = err_set(err, ERR_NOMEM, "no memory");
                    break;
                }
                jobs = g;
            }
            jobs[n++] = (struct ix_job){
                .path = it->source,
                .id = it->id,
                .metadata = it->metadata,
                .kind = IX_WAITING,
                .explicit_file = 1,
            };
            it->source = it->id = it->metadata = NULL;
        }
        store_items_free(items, k);
        if (rc || !next)
            break;
        after = next;
    }
    if (rc) {
        ix_jobs_free(jobs, n);
        return rc;
    }
    *out = jobs;
    *nout = n;
    return 0;
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

    struct ix_ctx ctx;
    ix_ctx_init(&ctx, "reindex", "reindexed");
    ctx.batch = (int)batch;
    ctx.decoders = decoders ? (int)decoders : ix_default_decoders();
    struct store *st = NULL;
    struct pipe *p = NULL;
    struct ix_job *jobs = NULL;
    size_t njobs = 0;
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
    ctx.st = st;
    ctx.p = p;
    const char *mid = clip_model_id(p->model);
    if (strcmp(store_model(st), mid) || store_dim(st) != p->dim) {
        if ((rc = store_reset_embeddings(st, mid, p->dim, &err))) {
            rc = cmd_fail("reindex", &err);
            goto out;
        }
        reset = 1;
    }
    ix_signals_install();
    if (!(rc = collect(&ctx, &jobs, &njobs, &err)))
        rc = ix_run(&ctx, jobs, njobs, &err);
    if (!rc)
        rc = store_index_sync(st, &err);
    ix_print_failures(&ctx);
    if (rc && rc != -ERR_INTERRUPTED) {
        rc = cmd_fail("reindex", &err);
        goto out;
    }
    int64_t waiting = -1;
    struct err we;
    store_count_waiting(st, &waiting, &we);
    double secs = ix_now() - ctx.t0;
    printf("{\"reset\": %s, \"updated\": %ld, \"failed\": %ld, \"waiting\": %lld, "
           "\"seconds\": %.3f, \"images_per_s\": %.2f%s}\n",
           reset ? "true" : "false", ctx.n.updated, ctx.n.failed, (long long)waiting, secs,
           secs > 0 ? (double)ctx.n.embedded / secs : 0.0,
           rc == -ERR_INTERRUPTED ? ", \"interrupted\": true" : "");
    fflush(stdout);
    if (rc == -ERR_INTERRUPTED) {
        fprintf(stderr, "imgsearch reindex: interrupted; run the same command again to "
                        "resume\n");
        rc = err_exit_code(ERR_INTERRUPTED);
    } else
        rc = ctx.n.failed ? 2 : 0;
out:
    if (st) {
        struct err ce;
        if (store_close(st, &ce) && !rc)
            rc = cmd_fail("reindex", &ce);
    }
    pipe_free(p);
    ix_jobs_free(jobs, njobs);
    ix_ctx_free(&ctx);
    return rc;
}

const struct cmd cmd_reindex = {"reindex", "re-embed every item of a store with another model",
                                run};
