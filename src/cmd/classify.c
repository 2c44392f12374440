/* classify.c - `imgsearch classify`: zero-shot labels for images (catalog
 * auto-tagging). Labels go through a template ("a photo of {}"), are embedded
 * once, and each image gets CLIP's softmax over scaled cosine logits.
 *
 * Design:
 *  1. Files and folders: a folder is walked by the ingest rules (hidden
 *     names skipped, images told by their bytes, links followed inside the
 *     folder only), so `classify` sees what `index` would add; a file the
 *     user names is classified or fails, whatever its bytes.
 *  2. --save KEY writes the best label into the metadata of the store's
 *     item whose source is that file (as `index` recorded it: the absolute
 *     path): {"KEY": "label"}, the other fields and the embedding kept. A
 *     file with no item is an error for that file, never a new item.
 *  3. Label texts and ranking are the query layer's (query.h), shared with
 *     POST /classify; no buffer has a fixed dimension.
 */
#include "cmd/cmd.h"

#include <getopt.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ingest/ingest.h"
#include "pipe/pipe.h"
#include "query/query.h"
#include "store/store.h"

#define MAX_LABELS 1000

static void usage(FILE *f)
{
    fprintf(f,
            "usage: imgsearch classify --model DIR --labels \"a dress,a car,a shoe\" [options] PATH...\n"
            "\n"
            "Prints per image {\"file\": ..., \"labels\": [{\"label\": ..., \"prob\": p, \"logit\": l}, ...]},\n"
            "best first; probabilities are CLIP's softmax over exp(logit_scale) * cosine.\n"
            "A PATH that is a folder is walked (hidden names skipped, images told by their bytes).\n"
            "\n"
            "options:\n"
            "  --labels LIST        comma-separated labels (required, at most %d)\n"
            "  --template T         text around each label, {} marks it (default \"a photo of {}\")\n"
            "  --top N              print only the N best labels\n"
            "  --save KEY           store the best label as metadata field KEY of the item\n"
            "                       indexed from each file (see --store)\n"
            "  --store PATH         the store for --save (default $IMGSEARCH_STORE, else\n"
            "                       ~/.local/share/imgsearch/store.db)\n"
            "  --precision P        auto (default), fp32 or bf16\n"
            "  --model DIR          model folder (default $IMGSEARCH_MODEL)\n"
            "  --help               this text\n",
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

/* What the command line asked for. */
struct cls_opts {
    const char *model, *tpl;  /* model folder, label template */
    char *labels_arg;         /* --labels, cut in place */
    long top;                 /* labels printed per image */
    const char *save, *store; /* --save KEY into this store, or NULL */
    struct pipe_opts po;      /* precision */
    char **paths;             /* files and folders (argv's) */
    int npaths;
};

/* Fills o from argv. Returns -1 to go on, else the exit code (--help: 0,
 * a usage error: 2). */
static int parse_opts(int argc, char **argv, struct cls_opts *o)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},     {"labels", required_argument, 0, 'l'},
        {"template", required_argument, 0, 't'},  {"top", required_argument, 0, 'k'},
        {"precision", required_argument, 0, 'p'}, {"save", required_argument, 0, 'S'},
        {"store", required_argument, 0, 's'},     {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    struct err err = {0};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'l': o->labels_arg = optarg; break;
        case 't': o->tpl = optarg; break;
        case 'S': o->save = optarg; break;
        case 's': o->store = optarg; break;
        case 'k':
            if (cmd_parse_int("classify", "--top", optarg, 1, MAX_LABELS, &o->top))
                return 2;
            break;
        case 'p':
            if (pipe_parse_precision(optarg, &o->po.prec, &err))
                return cmd_usage_error("classify", "%s", err.msg);
            break;
        case 'h': usage(stdout); return 0;
        default: return cmd_usage_error("classify", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (!(o->model = cmd_model_dir(o->model)))
        return cmd_usage_error("classify", "--model DIR is required (or set IMGSEARCH_MODEL)");
    if (!o->labels_arg)
        return cmd_usage_error("classify", "--labels is required");
    if (optind >= argc)
        return cmd_usage_error("classify", "give image files or folders to classify");
    if (o->save && (!*o->save || strlen(o->save) > 256))
        return cmd_usage_error("classify", "--save takes a metadata key (1..256 bytes)");
    if (o->store && !o->save)
        return cmd_usage_error("classify", "--store goes with --save");
    if (o->save && !(o->store = cmd_store_path(o->store)))
        return cmd_usage_error("classify", "--save needs --store PATH (or IMGSEARCH_STORE)");
    o->paths = argv + optind;
    o->npaths = argc - optind;
    return -1;
}

/* Appends a copy of path to the NULL-terminated list *v (n used, cap). */
static int add(char ***v, size_t *n, size_t *cap, const char *path, struct err *err)
{
    if (*n + 1 >= *cap) {
        char **g = realloc(*v, 2 * *cap * sizeof **v);
        if (!g)
            return err_set(err, ERR_NOMEM, "no memory");
        *v = g;
        *cap *= 2;
    }
    if (!((*v)[*n] = strdup(path)))
        return err_set(err, ERR_NOMEM, "no memory");
    (*v)[++*n] = NULL;
    return 0;
}

/* The files to classify: each PATH that is a file as given, each folder
 * walked (its non-images left out, its files as absolute paths). *files is
 * a NULL-terminated malloc'd array of malloc'd paths. */
static int expand(const struct cls_opts *o, char ***files, size_t *nf, struct err *err)
{
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd))
        return err_set(err, ERR_IO, "cannot read the current folder");
    size_t cap = 16, n = 0;
    char **v = calloc(cap, sizeof *v);
    int rc = v ? 0 : err_set(err, ERR_NOMEM, "no memory");
    for (int i = 0; !rc && i < o->npaths; i++) {
        struct stat sb;
        if (stat(o->paths[i], &sb) || !S_ISDIR(sb.st_mode)) {
            /* a file named by the user, as given: classified or failed */
            rc = add(&v, &n, &cap, o->paths[i], err);
            continue;
        }
        char *root = ingest_path_normal(cwd, o->paths[i]);
        struct ingest_walk w;
        struct ingest_counts cnt = {0};
        if (!root) {
            rc = err_set(err, ERR_NOMEM, "no memory");
            break;
        }
        const char *roots[1] = {root};
        if (!(rc = ingest_walk(&w, roots, 1, NULL, &cnt, err))) {
            for (size_t k = 0; !rc && k < w.n; k++) {
                struct err se;
                if (ingest_sniff_file(w.files[k].path, &se) == 1) /* non-images left out */
                    rc = add(&v, &n, &cap, w.files[k].path, err);
            }
            ingest_walk_free(&w);
        }
        free(root);
    }
    *files = v;
    *nf = n;
    return rc;
}

/* Sets metadata field key of the item whose source is path to label. */
static int save_label(struct store *st, const char *path, const char *key, const char *label,
                      struct err *err)
{
    struct store_item found, it;
    char cwd[4096], *abs = getcwd(cwd, sizeof cwd) ? ingest_path_normal(cwd, path) : NULL;
    if (!abs)
        return err_set(err, ERR_NOMEM, "%s: cannot make its absolute path", path);
    int rc = store_find_source(st, abs, &found, err);
    free(abs);
    if (rc == -ERR_NOT_FOUND)
        return err_set(err, ERR_NOT_FOUND, "%s: no item of the store has this source (index "
                                           "it first)", path);
    if (rc)
        return rc;
    rc = store_get(st, found.id, &it, err);
    store_item_clear(&found);
    if (rc)
        return rc;
    json_error_t je;
    json_t *meta = json_loads(it.metadata ? it.metadata : "{}", 0, &je);
    char *text = NULL;
    if (!meta || !json_is_object(meta) || json_object_set_new(meta, key, json_string(label)) ||
        !(text = json_dumps(meta, JSON_COMPACT)))
        rc = err_set(err, ERR_NOMEM, "%s: cannot write the metadata", it.id);
    else {
        free(it.metadata);
        it.metadata = text;
        rc = store_put(st, &it, NULL, err);
    }
    json_decref(meta);
    store_item_clear(&it);
    return rc;
}

/* Labels of one image (and --save); prints its line. 0 or an error. */
static int classify_one(const struct cls_opts *o, struct pipe *p, struct store *st,
                        const char *file, char **labels, int n, const float *lv, float *px,
                        float *v, struct query_label *rk, struct err *err)
{
    fputs("{\"file\": ", stdout);
    cmd_json_str(stdout, file);
    if (pipe_prepare_file(p, file, px, err) || pipe_embed_pixels(p, px, 1, v, 0, err) ||
        query_rank_labels(v, lv, n, p->dim, clip_logit_scale(p->model), rk, err) ||
        (st && save_label(st, file, o->save, labels[rk[0].idx], err))) {
        fputs(", \"error\": ", stdout);
        cmd_json_err(stdout, err);
        fputs("}\n", stdout);
        return -1;
    }
    fputs(", \"labels\": [", stdout);
    for (int i = 0; i < n && i < o->top; i++) {
        fputs(i ? ", {\"label\": " : "{\"label\": ", stdout);
        cmd_json_str(stdout, labels[rk[i].idx]);
        printf(", \"prob\": %.6g, \"logit\": %.6g}", (double)rk[i].prob, (double)rk[i].logit);
    }
    fputs(st ? "], \"saved\": true}\n" : "]}\n", stdout);
    return 0;
}

/* Classifies what o names; returns the exit code. */
static int work(struct cls_opts *o)
{
    char **labels = malloc(sizeof(char *) * MAX_LABELS);
    char **texts = calloc(MAX_LABELS, sizeof(char *));
    char **files = NULL;
    size_t nfiles = 0;
    struct pipe *p = NULL;
    struct store *st = NULL;
    float *lv = NULL, *px = NULL, *v = NULL;
    struct query_label *rk = NULL;
    struct err err = {0};
    int rc = 0, n = 0, failed = 0;
    if (!labels || !texts) {
        rc = 1;
        goto fail;
    }
    n = split_labels(o->labels_arg, labels, MAX_LABELS);
    if (n < 2) {
        rc = cmd_usage_error("classify", "--labels needs at least two labels, comma-separated");
        goto fail;
    }
    for (int i = 0; i < n; i++)
        if (!(texts[i] = query_label_text(o->tpl, labels[i]))) {
            rc = 1;
            goto fail;
        }
    struct store_options so = {0};
    if (expand(o, &files, &nfiles, &err) || pipe_open(&p, o->model, &o->po, &err) ||
        (o->save && cmd_store_open(&st, o->store, &so, &err))) {
        rc = cmd_fail("classify", &err);
        goto fail;
    }
    lv = malloc(sizeof(float) * (size_t)p->dim * n);
    px = malloc(sizeof(float) * 3 * (size_t)p->size * p->size);
    v = malloc(sizeof(float) * (size_t)p->dim);
    rk = malloc(sizeof *rk * n);
    if (!lv || !px || !v || !rk) {
        rc = 1;
        goto fail;
    }
    if (pipe_embed_texts(p, (const char *const *)texts, n, lv, 0, &err)) {
        rc = cmd_fail("classify", &err);
        goto fail;
    }
    for (size_t f = 0; f < nfiles; f++)
        failed += classify_one(o, p, st, files[f], labels, n, lv, px, v, rk, &err) != 0;
    if (!nfiles)
        fprintf(stderr, "imgsearch classify: no images under the paths given\n");
    if (failed)
        fprintf(stderr, "imgsearch classify: %d of %zu images failed\n", failed, nfiles);
    rc = failed || !nfiles ? 2 : 0;
fail:
    if (texts)
        for (int i = 0; i < n; i++)
            free(texts[i]);
    for (size_t i = 0; files && i < nfiles; i++)
        free(files[i]);
    free(files);
    free(texts);
    free(labels);
    free(lv);
    free(px);
    free(v);
    free(rk);
    pipe_free(p);
    if (st) {
        struct err ce;
        if (store_close(st, &ce) && !rc)
            rc = cmd_fail("classify", &ce);
    }
    return rc;
}

static int run(int argc, char **argv)
{
    struct cls_opts o = {.tpl = QUERY_TEMPLATE_DEFAULT, .top = MAX_LABELS};
    int rc = parse_opts(argc, argv, &o);
    return rc >= 0 ? rc : work(&o);
}

const struct cmd cmd_classify = {"classify", "zero-shot labels for images (auto-tagging)", run};
