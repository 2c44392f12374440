/* index.c - `imgsearch index`: folders of images into a store, through the
 * ingest library (src/ingest/: walk, plan, sidecar, engine), and the
 * terminal side of an ingest run that `imgsearch reindex` shares
 * (index_int.h): the stop flag, the progress bar, the failure list.
 *
 * Design:
 *  1. Roots are checked before anything is loaded: a typo must not prune
 *     or cost a model load.
 *  2. SIGINT/SIGTERM only set a flag that the engine polls: the batch
 *     being written commits, then the command stops with exit code 130. A
 *     second signal kills at once (the store is crash safe, so that loses
 *     at most the batch being written).
 *  3. Progress: on a terminal a bar redrawn in place (5 times a second at
 *     most), otherwise a line every 2 s, on stderr; the summary is one JSON
 *     line on stdout.
 */
#include "cmd/index_int.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "util/clock.h"

/* ---- the terminal side of a run ------------------------------------------ */

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    if (stop_flag) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    stop_flag = 1;
}

static int ui_stop(void *ctx)
{
    (void)ctx;
    return stop_flag != 0;
}

static void ui_fail(void *ctx, const char *msg)
{
    struct ix_ui *ui = ctx;
    if (ui->nfails == ui->capfails) {
        size_t nc = ui->capfails ? 2 * ui->capfails : 16;
        char **g = realloc(ui->fails, nc * sizeof *g);
        if (!g)
            return; /* counted, not listed */
        ui->fails = g;
        ui->capfails = nc;
    }
    char *s = strdup(msg);
    if (s)
        ui->fails[ui->nfails++] = s;
}

static void bar_show(struct ix_ui *ui, int force)
{
    double t = mono_now(), el = t - ui->bar_t0;
    if (!force && t - ui->last < (ui->tty ? 0.2 : 2.0))
        return;
    ui->last = t;
    size_t done = ui->pr.done, total = ui->pr.total;
    double rate = el > 0 ? (double)done / el : 0;
    ui->drawn = 1;
    if (!ui->tty) {
        fprintf(stderr, "%s %zu/%zu (%.1f img/s)\n", ui->verb, done, total, rate);
        return;
    }
    char bar[31];
    int fill = total ? (int)(30.0 * (double)done / (double)total) : 30;
    for (int i = 0; i < 30; i++)
        bar[i] = i < fill ? '#' : '-';
    bar[30] = 0;
    long eta = rate > 0 ? (long)((double)(total - done) / rate + 0.5) : -1;
    if (eta >= 0)
        fprintf(stderr, "\r%s %zu/%zu [%s] %.1f img/s ETA %ld:%02ld\033[K", ui->verb, done,
                total, bar, rate, eta / 60, eta % 60);
    else
        fprintf(stderr, "\r%s %zu/%zu [%s]\033[K", ui->verb, done, total, bar);
}

static void ui_progress(void *ctx, const struct ingest_progress *p)
{
    struct ix_ui *ui = ctx;
    if (!ui->pr.total && p->total)
        ui->bar_t0 = ui->last = mono_now();
    ui->pr = *p;
    bar_show(ui, 0);
}

void ix_ui_init(struct ix_ui *ui, const char *cmd, const char *verb, struct ingest_hooks *h)
{
    memset(ui, 0, sizeof *ui);
    ui->cmd = cmd;
    ui->verb = verb;
    ui->tty = isatty(2);
    ui->t0 = ui->bar_t0 = ui->last = mono_now();
    *h = (struct ingest_hooks){.fail = ui_fail, .progress = ui_progress, .stop = ui_stop,
                               .ctx = ui};
}

void ix_ui_catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART; /* SQLite and the decoders need not see EINTR */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

void ix_ui_end(struct ix_ui *ui)
{
    if (ui->tty && ui->drawn)
        fputs("\r\033[K", stderr);
    else if (ui->drawn)
        bar_show(ui, 1);
    ui->drawn = 0;
}

void ix_ui_print_failures(const struct ix_ui *ui, long failed)
{
    for (size_t i = 0; i < ui->nfails; i++)
        fprintf(stderr, "imgsearch %s: failed: %s\n", ui->cmd, ui->fails[i]);
    if (failed)
        fprintf(stderr, "imgsearch %s: %ld file%s failed\n", ui->cmd, failed,
                failed == 1 ? "" : "s");
}

void ix_ui_free(struct ix_ui *ui)
{
    for (size_t i = 0; i < ui->nfails; i++)
        free(ui->fails[i]);
    free(ui->fails);
    ui->fails = NULL;
    ui->nfails = ui->capfails = 0;
}

/* ---- the command ---------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: imgsearch index [--store PATH] --model DIR [options] PATH...\n"
            "\n"
            "Adds the images under each PATH (folders are walked recursively; hidden\n"
            "files and folders are skipped; images are recognised by their bytes;\n"
            "symbolic links are followed only to files and folders inside the PATHs) to\n"
            "the store, creating it for this model if needed. File names that are not\n"
            "UTF-8 get ids with those bytes (and '%%') written %%XX. Incremental: files\n"
            "already in the store with the same size and mtime are not read; changed\n"
            "files are hashed (SHA-256) and embedded again only if their bytes changed.\n"
            "Every batch is committed as it is written: an interrupted run (Ctrl-C stops\n"
            "after the current batch, exit code 130; a second Ctrl-C stops at once)\n"
            "resumes where it stopped.\n"
            "\n"
            "Prints progress on stderr and a summary line on stdout:\n"
            "  {\"added\": 3, \"updated\": 0, \"unchanged\": 9, \"removed\": 0, \"failed\": 0,\n"
            "   \"skipped\": 0, \"non_image\": 1, \"seconds\": 1.2, \"images_per_s\": 2.5}\n"
            "and the failed files with their reasons on stderr (exit code 2 if any). A file\n"
            "that failed is remembered (PATH.failed next to the store) and skipped while it\n"
            "does not change: counted as skipped, not failed again.\n"
            "\n"
            "options:\n"
            "  --store PATH|URL     the store (an SQLite file, PATH.hnsw holding its index;\n"
            "                       or a postgres[ql]://... URL), created if missing\n"
            "                       (default $IMGSEARCH_STORE, else\n"
            "                       ~/.local/share/imgsearch/store.db)\n"
            "  --model DIR          model folder (default $IMGSEARCH_MODEL); a store made\n"
            "                       with another model is refused: see imgsearch reindex\n"
            "  --id-from WHAT       item ids: relpath (default: the path relative to the\n"
            "                       PATH given; a file given by itself: its name), path\n"
            "                       (the absolute path) or name (the file name)\n"
            "  --metadata FILE      sidecar of metadata: CSV with a header row, or JSON\n"
            "                       lines; the column/field 'path' (relative paths: to\n"
            "                       the sidecar, the current folder or the PATH given) or\n"
            "                       'id' names the item, the others become its fields,\n"
            "                       merged over its metadata (unchanged files too)\n"
            "  --prune              delete items whose files under the PATHs are gone\n"
            "  --no-migrate         do not create or upgrade the store's schema (nor convert\n"
            "                       it to pgvector): a store whose schema is missing or\n"
            "                       older is refused (exit code 2; run 'imgsearch migrate\n"
            "                       --store URL'). By default the schema is migrated, as\n"
            "                       'imgsearch migrate' does\n"
            "  --batch N            images per forward pass and transaction (default 16)\n"
            "  --decoders N         decoder threads (default: the CPUs, at most 8)\n"
            "  --precision P        auto (default), fp32 or bf16\n"
            "  --help               this text\n");
}

struct idx_opts {
    const char *store;
    const char *model;
    const char *metadata;
    int prune;
    int no_migrate;
    long batch;
    long decoders;
    enum ingest_id_from id_from;
    struct pipe_opts po;
};

static int parse_opts(int argc, char **argv, struct idx_opts *o, char ***paths, int *npaths)
{
    static const struct option opts[] = {
        {"store", required_argument, 0, 's'},     {"model", required_argument, 0, 'm'},
        {"metadata", required_argument, 0, 'M'},  {"prune", no_argument, 0, 'P'},
        {"batch", required_argument, 0, 'b'},     {"precision", required_argument, 0, 'p'},
        {"id-from", required_argument, 0, 'i'},   {"decoders", required_argument, 0, 'd'},
        {"no-migrate", no_argument, 0, 'N'},      {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    struct err err;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "-", opts, NULL)) != -1) {
        switch (c) {
        case 1: (*paths)[(*npaths)++] = optarg; break;
        case 's': o->store = optarg; break;
        case 'm': o->model = optarg; break;
        case 'M': o->metadata = optarg; break;
        case 'P': o->prune = 1; break;
        case 'N': o->no_migrate = 1; break;
        case 'b':
            if (cmd_parse_int("index", "--batch", optarg, 1, 256, &o->batch))
                return 2;
            break;
        case 'd':
            if (cmd_parse_int("index", "--decoders", optarg, 1, 64, &o->decoders))
                return 2;
            break;
        case 'p':
            if (pipe_parse_precision(optarg, &o->po.prec, &err))
                return cmd_usage_error("index", "%s", err.msg);
            break;
        case 'i':
            if (!strcmp(optarg, "relpath"))
                o->id_from = INGEST_ID_RELPATH;
            else if (!strcmp(optarg, "path"))
                o->id_from = INGEST_ID_PATH;
            else if (!strcmp(optarg, "name"))
                o->id_from = INGEST_ID_NAME;
            else
                return cmd_usage_error("index", "--id-from must be relpath, path or name, not '%s'",
                                       optarg);
            break;
        case 'h': usage(stdout); return -1;
        default:
            return cmd_usage_error("index", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (!(o->store = cmd_store_path(o->store)))
        return cmd_usage_error("index", "--store PATH is required (or set IMGSEARCH_STORE)");
    if (!(o->model = cmd_model_dir(o->model)))
        return cmd_usage_error("index", "--model DIR is required (or set IMGSEARCH_MODEL)");
    if (*npaths == 0)
        return cmd_usage_error("index", "give the folders or files to index");
    return 0;
}

/* The roots as absolute, lexically normal paths; every one must exist. */
static int make_roots(char **paths, int n, char **roots, struct err *err)
{
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd))
        return err_set(err, ERR_IO, "cannot read the current folder: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
        struct stat sb;
        if (stat(paths[i], &sb))
            return err_set(err, ERR_NOT_FOUND, "%s: %s", paths[i], strerror(errno));
        if (!(roots[i] = ingest_path_normal(cwd, paths[i])))
            return err_set(err, ERR_NOMEM, "no memory");
    }
    return 0;
}

/* What a run did besides the ingest counts. */
struct idx_extra {
    long skipped;   /* failed before, unchanged since: not read */
    long non_image; /* files whose bytes are no image */
};

/* Walk, plan, run, prune: the whole of an index run on an open store.
 * failed (or NULL) names the record of the files that failed (failed.c). */
static int ingest_all(struct store *st, struct pipe *p, const struct idx_opts *o,
                      const struct ingest_sidecar *sc, char **roots, int nroots,
                      const char *failed, struct ix_ui *ui, const struct ingest_hooks *h,
                      struct ingest_counts *n, struct idx_extra *x, struct err *err)
{
    struct ingest_failures fl = {0};
    struct ingest_walk w;
    struct ingest_jobs jobs = {0};
    struct ingest_plan_opts po = {.id_from = o->id_from, .sidecar = sc};
    struct ingest_run_opts ro = {
        .batch = (int)o->batch,
        .decoders = o->decoders ? (int)o->decoders : ingest_default_decoders(),
    };
    int rc = ingest_walk(&w, (const char *const *)roots, nroots, h, n, err);
    if (!rc)
        rc = ingest_plan(st, &w, &po, h, n, &jobs, err);
    if (!rc && failed && !(rc = ingest_failures_load(&fl, failed, err)))
        x->skipped = (long)ingest_failures_skip(&fl, &jobs);
    if (!rc) {
        rc = ingest_run(st, p, &jobs, &ro, h, n, err);
        ix_ui_end(ui);
    }
    for (size_t i = 0; i < jobs.n; i++)
        if (jobs.v[i].outcome == INGEST_NOT_IMAGE) {
            w.files[jobs.v[i].tag].not_image = 1;
            x->non_image++;
        }
    if (failed && (!rc || rc == -ERR_INTERRUPTED)) {
        struct err fe;
        if (ingest_failures_update(&fl, &jobs, &fe) || ingest_failures_save(&fl, failed, &fe))
            fprintf(stderr, "imgsearch index: %s (the failed files will be tried again)\n",
                    fe.msg);
    }
    ingest_failures_free(&fl);
    if (!rc && o->prune)
        rc = ingest_prune(st, &w, n, err);
    ingest_jobs_free(&jobs);
    ingest_walk_free(&w);
    return rc;
}

static int run(int argc, char **argv)
{
    struct idx_opts o = {.batch = 16, .decoders = 0, .id_from = INGEST_ID_RELPATH};
    o.po.skip_text = 1;
    char **paths = calloc((size_t)argc, sizeof *paths);
    char **roots = calloc((size_t)argc, sizeof *roots);
    int npaths = 0, rc;
    if (!paths || !roots) {
        free(paths);
        free(roots);
        return 1;
    }
    rc = parse_opts(argc, argv, &o, &paths, &npaths);
    if (rc) {
        free(paths);
        free(roots);
        return rc < 0 ? 0 : rc;
    }
    struct err err = {0};
    struct ingest_sidecar sc = {0};
    struct ingest_counts n = {0};
    struct ingest_hooks h;
    struct ix_ui ui;
    struct pipe *p = NULL;
    struct store *st = NULL;
    struct idx_extra x = {0};
    char *failed = NULL;
    ix_ui_init(&ui, "index", "indexed", &h);
    /* Roots first: a typo must not prune or start a model load. */
    if ((rc = make_roots(paths, npaths, roots, &err)) ||
        (o.metadata && (rc = ingest_sidecar_load(&sc, o.metadata, &err))) ||
        (rc = pipe_open(&p, o.model, &o.po, &err))) {
        rc = cmd_fail("index", &err);
        goto fail;
    }
    struct store_options so = {.model = clip_model_id(p->model), .dim = p->dim, .create = 1,
                               .former_model = clip_model_former_id(p->model),
                               .no_migrate = o.no_migrate};
    if ((rc = cmd_store_open(&st, o.store, &so, &err))) {
        rc = cmd_fail("index", &err);
        if (err.code == ERR_MODEL_MISMATCH)
            fprintf(stderr, "hint: 'imgsearch reindex --store %s --model %s' re-embeds the store "
                            "with this model\n", o.store, o.model);
        goto fail;
    }
    /* the record of failed files sits next to a store file (not a URL) */
    if (!strstr(o.store, "://") && asprintf(&failed, "%s.failed", o.store) < 0)
        failed = NULL;
    ix_ui_catch_signals();
    rc = ingest_all(st, p, &o, &sc, roots, npaths, failed, &ui, &h, &n, &x, &err);
    if (!rc)
        rc = store_index_sync(st, &err);
    ix_ui_print_failures(&ui, n.failed);
    if (rc && rc != -ERR_INTERRUPTED) {
        rc = cmd_fail("index", &err);
        goto fail;
    }
    double secs = mono_now() - ui.t0;
    if (x.skipped)
        fprintf(stderr, "imgsearch index: %ld file%s that failed before and did not change since "
                        "%s skipped (listed in %s)\n", x.skipped, x.skipped == 1 ? "" : "s",
                x.skipped == 1 ? "was" : "were", failed);
    printf("{\"added\": %ld, \"updated\": %ld, \"unchanged\": %ld, \"removed\": %ld, "
           "\"failed\": %ld, \"skipped\": %ld, \"non_image\": %ld, \"seconds\": %.3f, "
           "\"images_per_s\": %.2f%s}\n",
           n.added, n.updated, n.unchanged, n.removed, n.failed, x.skipped, x.non_image, secs,
           secs > 0 ? (double)n.embedded / secs : 0.0,
           rc == -ERR_INTERRUPTED ? ", \"interrupted\": true" : "");
    fflush(stdout);
    if (rc == -ERR_INTERRUPTED) {
        fprintf(stderr, "imgsearch index: interrupted; committed batches are kept, run the same "
                        "command again to resume\n");
        rc = err_exit_code(ERR_INTERRUPTED);
    } else
        rc = n.failed ? 2 : 0;
fail:
    if (st) {
        struct err ce;
        if (store_close(st, &ce) && !rc)
            rc = cmd_fail("index", &ce);
    }
    pipe_free(p);
    free(failed);
    ingest_sidecar_free(&sc);
    for (int i = 0; i < npaths; i++)
        free(roots[i]);
    free(roots);
    free(paths);
    ix_ui_free(&ui);
    return rc;
}

const struct cmd cmd_index = {"index", "add folders of images to a store (incremental)", run};
