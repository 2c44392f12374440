/* duplicates.c - `imgsearch duplicates`: groups of near-duplicate images in
 * a store.
 *
 * A group is a connected component of the pairs whose cosine similarity is
 * at least the threshold (store_duplicates: each item's nearest neighbours
 * through the index). The threshold depends on the model: with ViT-B/32,
 * re-encodes and resizes of one photo score about 0.95 and up; the tiny test
 * model separates its fixtures' pairs at a different point (see
 * tests/cli/test_index.sh). No model is loaded.
 */
#include "cmd/cmd.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: imgsearch duplicates [--store PATH] [--threshold X] [--json]\n"
            "\n"
            "Lists groups of near-duplicate images: items linked by pairs whose cosine\n"
            "similarity is at least X, largest groups first. A table by default; with\n"
            "--json one line per group:\n"
            "  {\"group\": 1, \"size\": 2, \"max_score\": 0.98,\n"
            "   \"members\": [{\"id\": ..., \"source\": ..., \"score\": 0.98}, ...]}\n"
            "(a member's score is its best similarity to another member).\n"
            "\n"
            "options:\n"
            "  --store PATH         the store (default $IMGSEARCH_STORE, else\n"
            "                       ~/.local/share/imgsearch/store.db)\n"
            "  --threshold X        similarity that makes a pair, in (-1, 1] (default 0.95)\n"
            "  --json               JSON lines instead of a table\n"
            "  --help               this text\n");
}

/* What the command line asked for. */
struct dup_opts {
    const char *store; /* --store, IMGSEARCH_STORE or the default */
    double threshold;  /* similarity that makes a pair */
    int json;          /* JSON lines instead of a table */
};

/* Fills o from argv. Returns -1 to go on, else the exit code (--help: 0,
 * a usage error: 2). */
static int parse_opts(int argc, char **argv, struct dup_opts *o)
{
    static const struct option opts[] = {
        {"store", required_argument, 0, 's'}, {"threshold", required_argument, 0, 't'},
        {"json", no_argument, 0, 'j'},        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's': o->store = optarg; break;
        case 'j': o->json = 1; break;
        case 't':
            if (cmd_parse_double("duplicates", "--threshold", optarg, -1, 1, &o->threshold))
                return 2;
            if (o->threshold <= -1)
                return cmd_usage_error("duplicates", "--threshold must be above -1");
            break;
        case 'h': usage(stdout); return 0;
        default: return cmd_usage_error("duplicates", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cmd_usage_error("duplicates", "unexpected argument '%s'", argv[optind]);
    if (!(o->store = cmd_store_path(o->store)))
        return cmd_usage_error("duplicates", "--store PATH is required (or set IMGSEARCH_STORE)");
    return -1;
}

/* Prints the groups of the store o names; returns the exit code. */
static int work(const struct dup_opts *o)
{
    const int json = o->json;
    const double threshold = o->threshold;
    struct err err = {0};
    struct store *st;
    struct store_options so = {0};
    int rc = cmd_store_open(&st, o->store, &so, &err);
    if (rc)
        return cmd_fail("duplicates", &err);
    struct store_dup_group *g = NULL;
    size_t ng = 0;
    if ((rc = store_duplicates(st, (float)threshold, &g, &ng, &err))) {
        rc = cmd_fail("duplicates", &err);
        goto fail;
    }
    size_t members = 0;
    for (size_t i = 0; i < ng; i++) {
        members += g[i].n;
        if (json) {
            printf("{\"group\": %zu, \"size\": %zu, \"max_score\": %.6f, \"members\": [", i + 1,
                   g[i].n, (double)g[i].max_score);
            for (size_t j = 0; j < g[i].n; j++) {
                fputs(j ? ", {\"id\": " : "{\"id\": ", stdout);
                cmd_json_str(stdout, g[i].members[j].id);
                fputs(", \"source\": ", stdout);
                if (g[i].members[j].source)
                    cmd_json_str(stdout, g[i].members[j].source);
                else
                    fputs("null", stdout);
                printf(", \"score\": %.6f}", (double)g[i].members[j].score);
            }
            fputs("]}\n", stdout);
            continue;
        }
        printf("%sgroup %zu: %zu images, best score %.4f\n", i ? "\n" : "", i + 1, g[i].n,
               (double)g[i].max_score);
        for (size_t j = 0; j < g[i].n; j++)
            printf("  %.4f  %s  %s\n", (double)g[i].members[j].score, g[i].members[j].id,
                   g[i].members[j].source ? g[i].members[j].source : "-");
    }
    if (!json)
        fprintf(stderr, "imgsearch duplicates: %zu group%s, %zu images (threshold %g)\n", ng,
                ng == 1 ? "" : "s", members, threshold);
    store_dup_groups_free(g, ng);
fail:;
    struct err ce;
    if (store_close(st, &ce) && !rc)
        rc = cmd_fail("duplicates", &ce);
    return rc;
}

static int run(int argc, char **argv)
{
    struct dup_opts o = {.threshold = 0.95};
    int rc = parse_opts(argc, argv, &o);
    return rc >= 0 ? rc : work(&o);
}

const struct cmd cmd_duplicates = {"duplicates", "groups of near-duplicate images in a store",
                                   run};
