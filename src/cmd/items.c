/* items.c - `imgsearch items`: list, show, remove and count a store's
 * items; `check` (not in --help: a tool for tests and bug reports)
 * verifies that the index agrees with the database.
 *
 * Design:
 *  1. Never loads a model; only `check` loads the index (list, show, rm
 *     and count read the database alone).
 *  2. The store is --store, IMGSEARCH_STORE or the default store (cmd.h).
 *     Embeddings are printed only when --embedding asks for them, by list
 *     and show alike.
 *  3. list pages by the store's sequence number: the cursor printed in the
 *     last line ({"next_cursor": "N"}) is passed back with --cursor, and
 *     stays valid while items are added or removed.
 */
#include "cmd/cmd.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: imgsearch items [--store PATH] COMMAND [ARGS]\n"
            "\n"
            "commands:\n"
            "  list [--limit N] [--cursor C] [--embedding]\n"
            "                                 items in the order they were added, one JSON\n"
            "                                 line each, then {\"next_cursor\": C} if more\n"
            "                                 remain (--limit default 1000, at most 10000)\n"
            "  show ID [--embedding]          one item as a JSON object\n"
            "  rm ID...                       delete items\n"
            "  count                          {\"items\": N, \"waiting\": W} (W: without an\n"
            "                                 embedding yet)\n"
            "\n"
            "options:\n"
            "  --store PATH         the store (default $IMGSEARCH_STORE, else\n"
            "                       ~/.local/share/imgsearch/store.db)\n"
            "  --embedding          with list and show: add \"dim\" and \"embedding\" (null\n"
            "                       for an item still waiting for one)\n"
            "  --help               this text\n");
}

static void print_item(const struct store_item *it, int full, int dim)
{
    fputs("{\"id\": ", stdout);
    cmd_json_str(stdout, it->id);
    fputs(", \"source\": ", stdout);
    if (it->source)
        cmd_json_str(stdout, it->source);
    else
        fputs("null", stdout);
    printf(", \"size\": %lld, \"mtime\": %lld", (long long)it->size, (long long)it->mtime);
    if (full) {
        printf(", \"seq\": %lld, \"sha256\": ", (long long)it->seq);
        if (it->sha256)
            cmd_json_str(stdout, it->sha256);
        else
            fputs("null", stdout);
        fputs(", \"model\": ", stdout);
        if (it->model)
            cmd_json_str(stdout, it->model);
        else
            fputs("null", stdout);
        printf(", \"created_at\": %lld, \"updated_at\": %lld", (long long)it->created_at,
               (long long)it->updated_at);
    }
    printf(", \"has_embedding\": %s, \"metadata\": %s", it->has_embedding ? "true" : "false",
           it->metadata ? it->metadata : "{}");
    if (dim > 0) { /* only when asked for (--embedding) */
        printf(", \"dim\": %d, \"embedding\": ", dim);
        if (it->embedding)
            cmd_json_floats(stdout, it->embedding, dim);
        else
            fputs("null", stdout);
    }
    if (it->error) { /* the failed state (store_set_failed) */
        fputs(", \"state\": \"failed\", \"error\": ", stdout);
        cmd_json_str(stdout, it->error);
    }
    fputs("}\n", stdout);
}

/* One page of items; with dim > 0 each with its embedding (read one by
 * one: store_list leaves embeddings out). */
static int do_list(struct store *st, long limit, const char *cursor, int dim, struct err *err)
{
    int64_t after = 0;
    if (cursor) {
        char *end;
        errno = 0;
        long long v = strtoll(cursor, &end, 10);
        if (errno || end == cursor || *end || v < 0)
            return err_set(err, ERR_INVALID_ARGUMENT, "--cursor '%s' is not a cursor from "
                           "items list", cursor);
        after = v;
    }
    struct store_item *items;
    size_t n;
    int64_t next;
    int rc = store_list(st, after, (int)limit, &items, &n, &next, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < n && !rc; i++) {
        if (!dim) {
            print_item(&items[i], 0, 0);
            continue;
        }
        struct store_item full;
        if (!(rc = store_get(st, items[i].id, &full, err))) {
            print_item(&full, 0, dim);
            store_item_clear(&full);
        } else if (rc == -ERR_NOT_FOUND) /* removed since the page was read */
            rc = 0;
    }
    store_items_free(items, n);
    if (rc)
        return rc;
    /* a full page may be the last one: look ahead so the cursor means
     * "there is more" */
    if (next) {
        struct store_item *more;
        size_t m;
        int64_t nn;
        if ((rc = store_list(st, next, 1, &more, &m, &nn, err)))
            return rc;
        store_items_free(more, m);
        if (m)
            printf("{\"next_cursor\": \"%lld\"}\n", (long long)next);
    }
    return 0;
}

/* ---- check ------------------------------------------------------------- */

static int cmp_strp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Is item `id` among the hits for its own embedding with score >= 0.999?
 * Identical images (copies) tie at score 1, so k grows until the hits stop
 * scoring 1 or the item shows up. */
static int finds_itself(struct store *st, const struct store_item *it, int64_t nemb,
                        int *found, float *top, struct err *err)
{
    *found = 0;
    for (int64_t k = 16;; k *= 4) {
        if (k > nemb)
            k = nemb;
        if (k > STORE_K_MAX)
            k = STORE_K_MAX;
        struct store_query q = {.vec = it->embedding, .k = (int)k, .min_score = -1,
                                .ef = k > 200 ? (int)k : 200};
        struct store_hit *h;
        size_t n;
        int rc = store_search(st, &q, &h, &n, err);
        if (rc)
            return rc;
        *top = n ? h[0].score : -2;
        int all_tied = n > 0 && h[n - 1].score >= 0.999f;
        for (size_t i = 0; i < n && !*found; i++)
            *found = !strcmp(h[i].id, it->id) && h[i].score >= 0.999f;
        store_hits_free(h, n);
        if (*found || !all_tied || k >= nemb || k >= STORE_K_MAX)
            return 0;
    }
}

/* Searches with a sample of ns items with embeddings, spread evenly over
 * ids (nemb of them), counting those that do not find themselves; the
 * first search loads (or rebuilds) the index, also when ns is 0. */
static int check_sample(struct store *st, char **ids, int64_t nemb, long sample,
                        int64_t *checked, int64_t *lost, float *worst, struct err *err)
{
    int rc = 0;
    long ns = nemb < sample ? (long)nemb : sample;
    for (long s = 0; s < ns; s++) {
        const char *id = ids[(size_t)((double)s * (double)nemb / (double)ns)];
        struct store_item it;
        if ((rc = store_get(st, id, &it, err)))
            return rc;
        int found = 0;
        float top = -2;
        if (it.embedding)
            rc = finds_itself(st, &it, nemb, &found, &top, err);
        store_item_clear(&it);
        if (rc)
            return rc;
        (*checked)++;
        if (!found) {
            (*lost)++;
            fprintf(stderr, "imgsearch items check: item '%s' is not its own top hit (top "
                            "score %.4f)\n", id, (double)top);
        }
        if (top < *worst)
            *worst = top;
    }
    if (nemb && !ns) {
        struct store_item it;
        if ((rc = store_get(st, ids[0], &it, err)))
            return rc;
        struct store_query q = {.vec = it.embedding, .k = 1, .min_score = -1};
        struct store_hit *h = NULL;
        size_t n = 0;
        rc = it.embedding ? store_search(st, &q, &h, &n, err) : 0;
        store_hits_free(h, n);
        store_item_clear(&it);
    }
    return rc;
}

static int do_check(struct store *st, long sample, struct err *err)
{
    int64_t count = 0, waiting = 0, nemb = 0, seen = 0, dup_src = 0;
    int rc;
    if ((rc = store_count(st, &count, err)) || (rc = store_count_waiting(st, &waiting, err)))
        return rc;
    /* every item, to count embeddings and spot repeated sources */
    char **emb_ids = NULL, **srcs = NULL;
    size_t nsrc = 0, cap_e = 0, cap_s = 0;
    int64_t after = 0;
    for (;;) {
        struct store_item *items;
        size_t n;
        int64_t next;
        if ((rc = store_list(st, after, 10000, &items, &n, &next, err)))
            goto fail;
        for (size_t i = 0; i < n; i++) {
            seen++;
            if (items[i].has_embedding) {
                if ((size_t)nemb == cap_e) {
                    cap_e = cap_e ? 2 * cap_e : 256;
                    char **g = realloc(emb_ids, cap_e * sizeof *g);
                    if (!g) {
                        store_items_free(items, n);
                        rc = err_set(err, ERR_NOMEM, "no memory");
                        goto fail;
                    }
                    emb_ids = g;
                }
                emb_ids[nemb++] = items[i].id;
                items[i].id = NULL;
            }
            if (items[i].source) {
                if (nsrc == cap_s) {
                    cap_s = cap_s ? 2 * cap_s : 256;
                    char **g = realloc(srcs, cap_s * sizeof *g);
                    if (!g) {
                        store_items_free(items, n);
                        rc = err_set(err, ERR_NOMEM, "no memory");
                        goto fail;
                    }
                    srcs = g;
                }
                srcs[nsrc++] = items[i].source;
                items[i].source = NULL;
            }
        }
        store_items_free(items, n);
        if (!next)
            break;
        after = next;
    }
    if (nsrc > 1) {
        qsort(srcs, nsrc, sizeof *srcs, cmp_strp);
        for (size_t i = 1; i < nsrc; i++)
            dup_src += !strcmp(srcs[i - 1], srcs[i]);
    }
    int64_t checked = 0, lost = 0;
    float worst = 2;
    if ((rc = check_sample(st, emb_ids, nemb, sample, &checked, &lost, &worst, err)))
        goto fail;
    struct store_index_info info;
    store_index_info(st, &info);
    int ok = seen == count && count - waiting == nemb && lost == 0 &&
             (nemb == 0 || (int64_t)info.items == nemb);
    if ((int64_t)info.items != nemb && nemb)
        fprintf(stderr, "imgsearch items check: the index holds %zu items, the database %lld "
                        "embeddings\n", info.items, (long long)nemb);
    if (seen != count || count - waiting != nemb)
        fprintf(stderr, "imgsearch items check: counts disagree: %lld listed, %lld counted, "
                        "%lld waiting, %lld with embeddings\n", (long long)seen,
                (long long)count, (long long)waiting, (long long)nemb);
    const char *origin = info.origin == STORE_INDEX_FILE      ? "file"
                       : info.origin == STORE_INDEX_REBUILT ? "rebuilt"
                                                            : "not_loaded";
    printf("{\"ok\": %s, \"items\": %lld, \"waiting\": %lld, \"embedded\": %lld, "
           "\"index_items\": %zu, \"tombstones\": %zu, \"index_origin\": \"%s\", \"reason\": ",
           ok ? "true" : "false", (long long)count, (long long)waiting, (long long)nemb,
           info.items, info.tombstones, origin);
    cmd_json_str(stdout, info.reason);
    printf(", \"caught_up\": %lld, \"checked\": %lld, \"not_found\": %lld, "
           "\"duplicate_sources\": %lld, \"min_self_score\": %.6f}\n",
           (long long)info.caught_up, (long long)checked, (long long)lost, (long long)dup_src,
           checked ? (double)worst : 1.0);
    rc = ok ? 0 : err_set(err, ERR_INTERNAL, "the store is inconsistent");
fail:
    for (int64_t i = 0; i < nemb; i++)
        free(emb_ids[i]);
    free(emb_ids);
    for (size_t i = 0; i < nsrc; i++)
        free(srcs[i]);
    free(srcs);
    return rc;
}

/* What the command line asked for. */
struct items_opts {
    const char *store;  /* --store, IMGSEARCH_STORE or the default */
    const char *cursor; /* list --cursor */
    long limit;         /* list --limit */
    long sample;        /* check --sample */
    int with_emb;       /* --embedding */
    const char *sub;    /* list, show, rm, count or check */
    char **args;        /* the command's arguments (args[0] is sub) */
    int nargs;
};

/* Fills o from argv (o->args is the caller's, argc entries). Returns -1
 * to go on, else the exit code (--help: 0, a usage error: 2). */
static int parse_opts(int argc, char **argv, struct items_opts *o)
{
    static const struct option opts[] = {
        {"store", required_argument, 0, 's'},  {"limit", required_argument, 0, 'l'},
        {"cursor", required_argument, 0, 'c'}, {"embedding", no_argument, 0, 'e'},
        {"sample", required_argument, 0, 'n'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "-", opts, NULL)) != -1) {
        switch (c) {
        case 1: o->args[o->nargs++] = optarg; break;
        case 's': o->store = optarg; break;
        case 'c': o->cursor = optarg; break;
        case 'e': o->with_emb = 1; break;
        case 'l':
            if (cmd_parse_int("items", "--limit", optarg, 1, 10000, &o->limit))
                return 2;
            break;
        case 'n':
            if (cmd_parse_int("items", "--sample", optarg, 0, 100000, &o->sample))
                return 2;
            break;
        case 'h': usage(stdout); return 0;
        default: return cmd_usage_error("items", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (!(o->store = cmd_store_path(o->store)))
        return cmd_usage_error("items", "--store PATH is required (or set IMGSEARCH_STORE)");
    const char *sub = o->sub = o->nargs ? o->args[0] : NULL;
    int want = !sub                     ? -1
             : !strcmp(sub, "list")     ? 0
             : !strcmp(sub, "count")    ? 0
             : !strcmp(sub, "check")    ? 0
             : !strcmp(sub, "show")     ? 1
             : !strcmp(sub, "rm")       ? -2
                                        : -3;
    if (want == -1 || want == -3)
        return sub ? cmd_usage_error("items", "unknown command '%s'", sub)
                   : cmd_usage_error("items", "give a command: list, show, rm or count");
    if ((want >= 0 && o->nargs - 1 != want) || (want == -2 && o->nargs < 2))
        return cmd_usage_error("items", "%s takes %s", sub,
                               want == 0 ? "no arguments" : want == 1 ? "one id" : "ids");
    if ((o->cursor || o->limit != 1000) && strcmp(sub, "list"))
        return cmd_usage_error("items", "--limit and --cursor go with list");
    if (o->with_emb && strcmp(sub, "list") && strcmp(sub, "show"))
        return cmd_usage_error("items", "--embedding goes with list and show");
    return -1;
}

/* items rm: removes each id; a missing one is reported and counted */
static int do_rm(struct store *st, char **ids, int n, struct err *err)
{
    int removed = 0, missing = 0, rc = 0;
    for (int i = 0; i < n; i++) {
        struct err de;
        int d = store_delete(st, ids[i], &de);
        if (d == 0)
            removed++;
        else if (d == -ERR_NOT_FOUND) {
            missing++;
            fprintf(stderr, "imgsearch items: %s\n", de.msg);
        } else {
            *err = de;
            return d;
        }
    }
    printf("{\"removed\": %d}\n", removed);
    if (missing)
        rc = err_set(err, ERR_NOT_FOUND, "%d of %d ids not found", missing, n);
    return rc;
}

/* Runs the command o asked for on its store; returns the exit code. */
static int work(const struct items_opts *o)
{
    struct err err = {0};
    struct store *st;
    struct store_options so = {0};
    int rc = cmd_store_open(&st, o->store, &so, &err);
    if (rc)
        return cmd_fail("items", &err);
    int dim = o->with_emb ? store_dim(st) : 0;
    if (!strcmp(o->sub, "list"))
        rc = do_list(st, o->limit, o->cursor, dim, &err);
    else if (!strcmp(o->sub, "count")) {
        int64_t n, w;
        if (!(rc = store_count(st, &n, &err)) && !(rc = store_count_waiting(st, &w, &err)))
            printf("{\"items\": %lld, \"waiting\": %lld}\n", (long long)n, (long long)w);
    } else if (!strcmp(o->sub, "show")) {
        struct store_item it;
        if (!(rc = store_get(st, o->args[1], &it, &err))) {
            print_item(&it, 1, dim);
            store_item_clear(&it);
        }
    } else if (!strcmp(o->sub, "rm"))
        rc = do_rm(st, o->args + 1, o->nargs - 1, &err);
    else
        rc = do_check(st, o->sample, &err);
    if (rc)
        rc = cmd_fail("items", &err);
    struct err ce;
    if (store_close(st, &ce) && !rc)
        rc = cmd_fail("items", &ce);
    return rc;
}

static int run(int argc, char **argv)
{
    struct items_opts o = {.limit = 1000, .sample = 50};
    if (!(o.args = calloc((size_t)argc, sizeof *o.args)))
        return 1;
    int rc = parse_opts(argc, argv, &o);
    if (rc < 0)
        rc = work(&o);
    free(o.args);
    return rc;
}

const struct cmd cmd_items = {"items", "list, show, remove and count the items of a store", run};
