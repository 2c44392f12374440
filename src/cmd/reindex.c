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
 *  4. Clearing a store's embeddings is the one step here that costs a full
 *     re-embed to undo, so on a terminal it is asked first (--yes skips the
 *     question); a script (stdin not a terminal) is not asked.
 */
#include "cmd/cmd.h"

#include <getopt.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/index_int.h"
#include "util/clock.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: imgsearch reindex [--store PATH] --model DIR [options]\n"
            "\n"
            "Re-embeds every item of the store from its source file with this model\n"
            "(a store made with another model is switched to it first: its embeddings\n"
            "are cleared, after a question on a terminal). Resumable: run it again after an interruption and it embeds\n"
            "the items still waiting. With the store's own model it only embeds the\n"
            "waiting items.\n"
            "\n"
            "Prints progress on stderr and a summary line on stdout:\n"
            "  {\"reset\": true, \"updated\": 12, \"failed\": 0, \"waiting\": 0,\n"
            "   \"seconds\": 1.2, \"images_per_s\": 10.0}\n"
            "and the failed items with their reasons on stderr (exit code 2 if any).\n"
            "\n"
            "options:\n"
            "  --store PATH         the store (default $IMGSEARCH_STORE, else\n"
            "                       ~/.local/share/imgsearch/store.db)\n"
            "  --model DIR          model folder (default $IMGSEARCH_MODEL)\n"
            "  --batch N            images per forward pass and transaction (default 16)\n"
            "  --decoders N         decoder threads (default: the CPUs, at most 8)\n"
            "  --precision P        auto (default), fp32 or bf16\n"
            "  --yes                clear the embeddings without asking (on a terminal the\n"
            "                       question comes first; no: nothing changes, exit code 1)\n"
            "  --help               this text\n");
}

/* What the command line asked for. */
struct reindex_opts {
    const char *store, *model; /* flags, environment or defaults */
    struct pipe_opts po;       /* precision; no text tower */
    long batch, decoders;      /* 0 decoders: ingest_default_decoders() */
    int yes;                   /* clear embeddings without asking */
};

/* Fills o from argv. Returns -1 to go on, else the exit code (--help: 0,
 * a usage error: 2). */
static int parse_opts(int argc, char **argv, struct reindex_opts *o)
{
    static const struct option opts[] = {
        {"store", required_argument, 0, 's'},    {"model", required_argument, 0, 'm'},
        {"batch", required_argument, 0, 'b'},    {"precision", required_argument, 0, 'p'},
        {"decoders", required_argument, 0, 'd'}, {"yes", no_argument, 0, 'y'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0},
    };
    struct err err = {0};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's': o->store = optarg; break;
        case 'm': o->model = optarg; break;
        case 'y': o->yes = 1; break;
        case 'b':
            if (cmd_parse_int("reindex", "--batch", optarg, 1, 256, &o->batch))
                return 2;
            break;
        case 'd':
            if (cmd_parse_int("reindex", "--decoders", optarg, 1, 64, &o->decoders))
                return 2;
            break;
        case 'p':
            if (pipe_parse_precision(optarg, &o->po.prec, &err))
                return cmd_usage_error("reindex", "%s", err.msg);
            break;
        case 'h': usage(stdout); return 0;
        default: return cmd_usage_error("reindex", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cmd_usage_error("reindex", "unexpected argument '%s'", argv[optind]);
    if (!(o->store = cmd_store_path(o->store)))
        return cmd_usage_error("reindex", "--store PATH is required (or set IMGSEARCH_STORE)");
    if (!(o->model = cmd_model_dir(o->model)))
        return cmd_usage_error("reindex", "--model DIR is required (or set IMGSEARCH_MODEL)");
    return -1;
}

/* Switches st to p's model when it holds another (asking first on a
 * terminal unless o->yes). *reset says whether it did; 1 when the user
 * said no. */
static int switch_model(const struct reindex_opts *o, struct store *st, struct pipe *p,
                        int *reset, struct err *err)
{
    const char *mid = clip_model_id(p->model);
    *reset = 0;
    if (!strcmp(store_model(st), mid) && store_dim(st) == p->dim)
        return 0;
    if (!o->yes && isatty(STDIN_FILENO)) {
        int64_t n = 0;
        struct err ce;
        store_count(st, &n, &ce);
        char q[1024];
        snprintf(q, sizeof q,
                 "imgsearch reindex: %s holds embeddings of model '%s'; this clears all %lld "
                 "of them and re-embeds every item with '%s'. Go on?",
                 o->store, store_model(st), (long long)n, mid);
        if (!cmd_confirm(q)) {
            fprintf(stderr, "imgsearch reindex: nothing changed\n");
            return 1;
        }
    }
    int rc = store_reset_embeddings(st, mid, p->dim, err);
    *reset = !rc;
    return rc;
}

/* Re-embeds the store o names; returns the exit code. */
static int work(const struct reindex_opts *o)
{
    struct ix_ui ui;
    struct ingest_hooks h;
    struct ingest_counts n = {0};
    struct ingest_run_opts ro = {
        .batch = (int)o->batch,
        .decoders = o->decoders ? (int)o->decoders : ingest_default_decoders(),
    };
    ix_ui_init(&ui, "reindex", "reindexed", &h);
    struct store *st = NULL;
    struct pipe *p = NULL;
    struct ingest_jobs jobs = {0};
    struct err err = {0};
    int rc, reset = 0;
    /* The store first: a missing store should not cost a model load. Any
     * model is accepted here; it is compared below. */
    struct store_options so = {0};
    if ((rc = cmd_store_open(&st, o->store, &so, &err)) ||
        (rc = pipe_open(&p, o->model, &o->po, &err)) ||
        (rc = switch_model(o, st, p, &reset, &err))) {
        rc = rc > 0 ? 1 : cmd_fail("reindex", &err);
        goto fail;
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
        goto fail;
    }
    int64_t waiting = -1;
    struct err we;
    store_count_waiting(st, &waiting, &we);
    double secs = mono_now() - ui.t0;
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
fail:
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

static int run(int argc, char **argv)
{
    struct reindex_opts o = {.po = {.skip_text = 1}, .batch = 16};
    int rc = parse_opts(argc, argv, &o);
    return rc >= 0 ? rc : work(&o);
}

const struct cmd cmd_reindex = {"reindex", "re-embed every item of a store with another model",
                                run};
