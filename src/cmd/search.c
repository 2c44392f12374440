/* search.c - `imgsearch search`: the items nearest to an image, a text, or
 * a stored item, best first.
 *
 * Design:
 *  1. The store is opened before the model: a missing store costs no model
 *     load, and --like never loads one (it searches with the item's stored
 *     embedding). As over HTTP, --like never returns the item itself
 *     (query.h says why); its exact duplicates come first.
 *  2. The query vector comes from the same pipeline as `embed` and `index`,
 *     so a query image that is in the store scores 1 against itself; the
 *     search itself is the query layer's, shared with the service.
 *  3. Output: a table for people (scores to 4 decimals) that fits the
 *     terminal (long ids, sources and metadata are cut with "..."), one
 *     JSON line per hit with --json, or only the source paths with --paths
 *     (for xargs and friends).
 *  4. The query may be positional: an argument that names an existing file
 *     is an image, anything else a text (`imgsearch search "red shoes"`).
 *     --image and --text say it explicitly when a text looks like a path.
 *  5. The store is --store, IMGSEARCH_STORE or the default store (cmd.h).
 */
#include "cmd/cmd.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pipe/pipe.h"
#include "query/query.h"
#include "store/store.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: imgsearch search [options] QUERY\n"
            "       imgsearch search [options] (--image FILE | --text TEXT | --like ID)\n"
            "\n"
            "QUERY is an image when it names an existing file, else a text.\n"
            "Prints the items most similar to the query, best first: a table (rank, score,\n"
            "id, source, metadata), or with --json one line per hit:\n"
            "  {\"rank\": 1, \"id\": ..., \"score\": 0.91, \"source\": ..., \"metadata\": {...}}\n"
            "Scores are cosine similarities. --like searches with a stored item's\n"
            "embedding (\"more like this\": the item itself is left out) and needs no model.\n"
            "\n"
            "options:\n"
            "  --store PATH         the store (default $IMGSEARCH_STORE, else\n"
            "                       ~/.local/share/imgsearch/store.db)\n"
            "  --model DIR          model folder (default $IMGSEARCH_MODEL); must be the\n"
            "                       store's model\n"
            "  --image FILE         query with an image\n"
            "  --text TEXT          query with a text\n"
            "  --like ID            query with the embedding of item ID\n"
            "  -k N, --k N          hits to return (default 10)\n"
            "  --offset N           skip the first N hits (paging)\n"
            "  --filter KEY=VALUE   only items whose metadata field KEY equals VALUE\n"
            "                       (repeatable, ANDed; numbers match numerically)\n"
            "  --min-score X        drop hits scoring below X (-1..1)\n"
            "  --ef N               search width of the index (default: the store's)\n"
            "  --precision P        auto (default), fp32 or bf16\n"
            "  --json               JSON lines instead of a table\n"
            "  --paths              only the source path of each hit, one a line\n"
            "  --help               this text\n");
}

/* Writes s in w columns (code points), padded with spaces when pad; with
 * cut, a longer s is cut with "...", keeping its end when tail (the file
 * name of a path) and its start otherwise. w <= 0: as it is. */
static void put_fit(const char *s, int w, int tail, int pad, int cut)
{
    int n = 0;
    for (const char *q = s; *q; q++)
        n += ((unsigned char)*q & 0xC0) != 0x80;
    if (w <= 0 || n <= w || !cut) {
        fputs(s, stdout);
        for (int i = n; pad && i < w; i++)
            putchar(' ');
        return;
    }
    int keep = w > 3 ? w - 3 : 0, skip = tail ? n - keep : 0, i = 0;
    if (tail)
        fputs(w >= 3 ? "..." : "", stdout);
    for (const char *q = s; *q; q++) {
        int start = ((unsigned char)*q & 0xC0) != 0x80;
        i += start;
        if (i > skip && i <= skip + keep)
            putchar(*q);
    }
    if (!tail)
        fputs(w >= 3 ? "..." : "", stdout);
}

static int text_width(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* rank, score, id, source, metadata; within cmd_term_width() columns when
 * that is known: id and source get their widest value up to a share of
 * what is left, metadata the rest. Otherwise nothing is cut (columns are
 * padded to at most 40 and 60). */
static void print_table(const struct store_hit *h, size_t n, int offset)
{
    int idw = 2, srcw = 6, metaw;
    for (size_t i = 0; i < n; i++) {
        int l = text_width(h[i].id);
        if (l > idw)
            idw = l;
        l = h[i].source ? text_width(h[i].source) : 1;
        if (l > srcw)
            srcw = l;
    }
    if (idw > 40)
        idw = 40;
    if (srcw > 60)
        srcw = 60;
    int width = cmd_term_width();
    metaw = 0; /* no limit */
    if (width > 0) {
        int fixed = 4 + 2 + 6 + 2 + 2 + 2; /* rank, score and the gaps */
        int room = width - fixed - 8;       /* for id and source; metadata keeps 8 */
        if (room < 16)
            room = 16;
        if (idw + srcw > room) {
            int share = room * 2 / 5; /* the id's share when both are long */
            if (idw > share)
                idw = srcw < room - share ? room - srcw : share;
            srcw = room - idw;
        }
        metaw = width - fixed - idw - srcw;
        if (metaw < 8)
            metaw = 8;
    }
    int cut = width > 0; /* no terminal, no COLUMNS: values whole, for grep */
    printf("rank  score   ");
    put_fit("id", idw, 0, 1, cut);
    fputs("  ", stdout);
    put_fit("source", srcw, 0, 1, cut);
    fputs("  metadata\n", stdout);
    for (size_t i = 0; i < n; i++) {
        printf("%4d  %6.4f  ", offset + (int)i + 1, (double)h[i].score);
        put_fit(h[i].id, idw, 0, 1, cut);
        fputs("  ", stdout);
        put_fit(h[i].source ? h[i].source : "-", srcw, 1, 1, cut);
        fputs("  ", stdout);
        put_fit(strcmp(h[i].metadata, "{}") ? h[i].metadata : "", metaw, 0, 0, cut);
        putchar('\n');
    }
}

/* The source path of every hit that has one, one a line. */
static void print_paths(const struct store_hit *h, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (h[i].source)
            printf("%s\n", h[i].source);
}

static void print_json(const struct store_hit *h, size_t n, int offset)
{
    for (size_t i = 0; i < n; i++) {
        printf("{\"rank\": %d, \"id\": ", offset + (int)i + 1);
        cmd_json_str(stdout, h[i].id);
        printf(", \"score\": %.6f, \"source\": ", (double)h[i].score);
        if (h[i].source)
            cmd_json_str(stdout, h[i].source);
        else
            fputs("null", stdout);
        /* the store keeps metadata as compact JSON text (a JSON object) */
        printf(", \"metadata\": %s}\n", h[i].metadata);
    }
}

/* What the command line asked for. */
struct args {
    const char *store, *model, *image, *text, *like; /* one of image, text, like */
    struct query_opts q;                              /* k, offset, min score, filters, ef */
    struct store_filter filters[STORE_FILTERS_MAX];   /* q.filters points here */
    struct pipe_opts po;                              /* precision */
    int json;                                         /* JSON lines output */
    int paths;                                        /* source paths only */
};

/* Fills a from argv. Returns -1 to go on, else the exit code (--help: 0,
 * a usage error: 2). */
static int parse_opts(int argc, char **argv, struct args *a)
{
    static const struct option opts[] = {
        {"store", required_argument, 0, 's'},     {"model", required_argument, 0, 'm'},
        {"image", required_argument, 0, 'i'},     {"text", required_argument, 0, 't'},
        {"like", required_argument, 0, 'l'},      {"k", required_argument, 0, 'k'},
        {"offset", required_argument, 0, 'o'},    {"filter", required_argument, 0, 'f'},
        {"min-score", required_argument, 0, 'S'}, {"ef", required_argument, 0, 'e'},
        {"precision", required_argument, 0, 'p'}, {"json", no_argument, 0, 'j'},
        {"paths", no_argument, 0, 'P'},           {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    long k = 10, offset = 0, ef = 0;
    double min_score = -1;
    int c, nq = 0, nf = 0;
    struct err err = {0};
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "k:", opts, NULL)) != -1) {
        switch (c) {
        case 's': a->store = optarg; break;
        case 'm': a->model = optarg; break;
        case 'i': a->image = optarg; nq++; break;
        case 't': a->text = optarg; nq++; break;
        case 'l': a->like = optarg; nq++; break;
        case 'j': a->json = 1; break;
        case 'P': a->paths = 1; break;
        case 'k':
            if (cmd_parse_int("search", "-k", optarg, 1, QUERY_K_MAX, &k))
                return 2;
            break;
        case 'o':
            if (cmd_parse_int("search", "--offset", optarg, 0, QUERY_OFFSET_MAX, &offset))
                return 2;
            break;
        case 'e':
            if (cmd_parse_int("search", "--ef", optarg, 1, 100000, &ef))
                return 2;
            break;
        case 'S':
            if (cmd_parse_double("search", "--min-score", optarg, -1, 1, &min_score))
                return 2;
            break;
        case 'p':
            if (pipe_parse_precision(optarg, &a->po.prec, &err))
                return cmd_usage_error("search", "%s", err.msg);
            break;
        case 'f': {
            char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg)
                return cmd_usage_error("search", "--filter takes KEY=VALUE, not '%s'", optarg);
            if (nf == STORE_FILTERS_MAX)
                return cmd_usage_error("search", "at most %d filters", STORE_FILTERS_MAX);
            *eq = 0; /* argv is ours to cut */
            a->filters[nf++] = (struct store_filter){optarg, eq + 1};
            break;
        }
        case 'h': usage(stdout); return 0;
        default:
            return cmd_usage_error("search", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) {
        struct stat sb;
        if (optind + 1 < argc)
            return cmd_usage_error("search", "one query, not '%s' and '%s' (quote a text with "
                                   "spaces)", argv[optind], argv[optind + 1]);
        if (stat(argv[optind], &sb) == 0 && S_ISREG(sb.st_mode))
            a->image = argv[optind];
        else
            a->text = argv[optind];
        nq++;
    }
    if (a->json && a->paths)
        return cmd_usage_error("search", "--json or --paths, not both");
    if (!(a->store = cmd_store_path(a->store)))
        return cmd_usage_error("search", "--store PATH is required (or set IMGSEARCH_STORE)");
    if (nq != 1)
        return cmd_usage_error("search", "give one query: QUERY, --image FILE, --text TEXT or "
                               "--like ID");
    if (!a->like && !(a->model = cmd_model_dir(a->model)))
        return cmd_usage_error("search", "--model DIR is required (or set IMGSEARCH_MODEL)");
    a->q = (struct query_opts){
        .k = (int)k,
        .offset = (int)offset,
        .min_score = (float)min_score,
        .filters = nf ? a->filters : NULL,
        .n_filters = nf,
        .ef = (int)ef,
    };
    return -1;
}

/* The query vector of a (store_dim floats) into vec. *p gets the pipeline
 * when one was opened (the caller frees it). */
static int query_vector(const struct args *a, struct store *st, struct pipe **p, float *vec,
                        struct err *err)
{
    if (a->like)
        return query_item_vector(st, a->like, vec, err);
    struct pipe_opts po = a->po;
    po.skip_text = a->text == NULL;
    int rc = pipe_open(p, a->model, &po, err);
    if (rc)
        return rc;
    const char *mid = clip_model_id((*p)->model), *former = clip_model_former_id((*p)->model);
    /* a store an earlier version made with these weights holds their
     * embeddings under the former id (index and serve rename it) */
    int same = !strcmp(mid, store_model(st)) || (former && !strcmp(former, store_model(st)));
    if (!same || (*p)->dim != store_dim(st))
        return err_set(err, ERR_MODEL_MISMATCH,
                       "%s: the store holds embeddings of model '%s' (dimension %d), not "
                       "'%s' (dimension %d); search with the store's model, or run "
                       "'imgsearch reindex --store %s --model %s'",
                       a->store, store_model(st), store_dim(st), mid, (*p)->dim, a->store,
                       a->model);
    if (a->text)
        return pipe_embed_text(*p, a->text, vec, 0, err);
    float *pixels = malloc(sizeof(float) * 3 * (size_t)(*p)->size * (size_t)(*p)->size);
    if (!pixels)
        return err_set(err, ERR_NOMEM, "no memory");
    if (!(rc = pipe_prepare_file(*p, a->image, pixels, err)))
        rc = pipe_embed_pixels(*p, pixels, 1, vec, 0, err);
    free(pixels);
    return rc;
}

static int run(int argc, char **argv)
{
    struct args a = {0};
    int rc = parse_opts(argc, argv, &a);
    if (rc >= 0)
        return rc;
    struct store *st = NULL;
    struct pipe *p = NULL;
    struct store_hit *hits = NULL;
    size_t nh = 0;
    float *vec = NULL;
    struct err err = {0};
    struct store_options so = {0};
    if ((rc = cmd_store_open(&st, a.store, &so, &err)))
        goto fail;
    if (!(vec = malloc(sizeof(float) * (size_t)store_dim(st)))) {
        rc = err_set(&err, ERR_NOMEM, "no memory");
        goto fail;
    }
    if ((rc = query_vector(&a, st, &p, vec, &err)))
        goto fail;
    if ((rc = query_search(st, vec, a.like, &a.q, &hits, &nh, &err)))
        goto fail;
    if (a.json)
        print_json(hits, nh, a.q.offset);
    else if (a.paths)
        print_paths(hits, nh);
    else if (nh)
        print_table(hits, nh, a.q.offset);
    else
        fprintf(stderr, "imgsearch search: no results\n");
fail:
    if (rc)
        rc = cmd_fail("search", &err);
    store_hits_free(hits, nh);
    free(vec);
    pipe_free(p);
    if (st) {
        struct err ce;
        if (store_close(st, &ce) && !rc)
            rc = cmd_fail("search", &ce);
    }
    return rc;
}

const struct cmd cmd_search = {"search", "search a store by image, text or item", run};
