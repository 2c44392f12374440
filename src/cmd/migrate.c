/* migrate.c - `imgsearch migrate`: creates or upgrades a store's schema.
 *
 * Opening a store migrates it (store_open), so this command is that open
 * made explicit, for an operator who wants the schema ready (or converted
 * to pgvector, or its pgvector index rebuilt with other parameters) before
 * starting servers: migrations are idempotent and versioned, and several
 * processes migrating at once wait for one another (store_pg.c). No model
 * is loaded: a new store needs --model-id and --dim. `index` and `serve`
 * migrate on open too, unless --no-migrate (store_options.no_migrate),
 * which makes them refuse a missing or older schema and name this command.
 */
#include "cmd/cmd.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: imgsearch migrate --store PATH|URL [options]\n"
            "\n"
            "Creates or upgrades the store's schema and prints what serves searches:\n"
            "  {\"store\": ..., \"kind\": \"postgresql\", \"index\": \"pgvector-hnsw\",\n"
            "   \"model\": ..., \"dim\": 512}\n"
            "On PostgreSQL it runs CREATE EXTENSION IF NOT EXISTS vector; when pgvector\n"
            "is there, a store made without it is converted in place (real[] to\n"
            "vector(D), no item lost) and its index built; without it, each server\n"
            "searches an in-memory index (\"local-hnsw\").\n"
            "\n"
            "options:\n"
            "  --store PATH|URL     the store: a file, or postgres[ql]://... ($IMGSEARCH_STORE)\n"
            "  --model-id ID        model id of a new store (with --dim)\n"
            "  --dim N              embedding dimension of a new store\n"
            "  --index hnsw|ivfflat pgvector's index (default hnsw; a change rebuilds it)\n"
            "  --m N                HNSW links per node (default 16)\n"
            "  --ef-construction N  HNSW build width (default 64)\n"
            "  --lists N            IVFFlat lists (default 100)\n"
            "  --no-vector          do not use pgvector (real[] and the in-memory index)\n"
            "  --help               this text\n");
}

static int run(int argc, char **argv)
{
    static const struct option opts[] = {
        {"store", required_argument, 0, 's'},  {"model-id", required_argument, 0, 'M'},
        {"dim", required_argument, 0, 'd'},    {"index", required_argument, 0, 'i'},
        {"m", required_argument, 0, 'm'},      {"ef-construction", required_argument, 0, 'e'},
        {"lists", required_argument, 0, 'l'},  {"no-vector", no_argument, 0, 'V'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0},
    };
    const char *store = getenv("IMGSEARCH_STORE");
    struct store_options so = {0};
    long v;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's': store = optarg; break;
        case 'M': so.model = optarg; break;
        case 'd':
            if (cmd_parse_int("migrate", "--dim", optarg, 1, STORE_DIM_MAX, &v))
                return 2;
            so.dim = (int)v;
            break;
        case 'i':
            if (strcmp(optarg, "hnsw") && strcmp(optarg, "ivfflat"))
                return cmd_usage_error("migrate", "--index must be hnsw or ivfflat, not '%s'",
                                       optarg);
            so.index = optarg;
            break;
        case 'm':
            if (cmd_parse_int("migrate", "--m", optarg, 2, 100, &v))
                return 2;
            so.hnsw_m = (int)v;
            break;
        case 'e':
            if (cmd_parse_int("migrate", "--ef-construction", optarg, 4, 1000, &v))
                return 2;
            so.ef_construction = (int)v;
            break;
        case 'l':
            if (cmd_parse_int("migrate", "--lists", optarg, 1, 32768, &v))
                return 2;
            so.lists = (int)v;
            break;
        case 'V': so.no_vector = 1; break;
        case 'h': usage(stdout); return 0;
        default: return cmd_usage_error("migrate", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cmd_usage_error("migrate", "unexpected argument '%s'", argv[optind]);
    if (!store || !*store)
        return cmd_usage_error("migrate", "--store PATH|URL is required");
    if (!so.model != !so.dim)
        return cmd_usage_error("migrate", "a new store needs both --model-id and --dim");
    so.create = so.model != NULL;
    struct err err = {0};
    struct store *st;
    if (store_open(&st, store, &so, &err))
        return cmd_fail("migrate", &err);
    fputs("{\"store\": ", stdout);
    cmd_json_str(stdout, store_name(st));
    printf(", \"kind\": \"%s\", \"index\": \"%s\", \"model\": ", store_kind(st),
           store_index_kind(st));
    cmd_json_str(stdout, store_model(st));
    printf(", \"dim\": %d}\n", store_dim(st));
    if (store_close(st, &err))
        return cmd_fail("migrate", &err);
    return 0;
}

const struct cmd cmd_migrate = {"migrate", "create or upgrade a store's schema (PostgreSQL too)",
                                run};
