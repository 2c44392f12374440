/* model.c - `imgsearch model`: model folder utilities.
 *   fetch        downloads a hub repo into the cache (hub/hub.h), with a
 *                progress bar on a terminal
 *   list         the models in the cache
 *   path         where --model VALUE resolves to (fetching it if needed)
 *   init-random  writes a Hugging Face style folder of random weights with
 *                the real shapes of a known architecture (speed work without
 *                a download)
 *   info         prints what a folder holds
 * Also cmd_model_resolve: every command's --model accepts a folder or a
 * hub repo name (cached: used; not cached: fetched, unless offline).
 */
#include "cmd/cmd.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clip/clip.h"
#include "hub/hub.h"
#include "util/fsutil.h"
#include "util/safetensors.h"

struct arch {
    const char *name;
    int v_width, v_layers, v_mlp, patch, image;
    int t_width, t_layers, t_mlp, ctx, vocab;
    int proj;
};

static const struct arch archs[] = {
    {"vit-b-32", 768, 12, 3072, 32, 224, 512, 12, 2048, 77, 49408, 512},
    {"vit-b-16", 768, 12, 3072, 16, 224, 512, 12, 2048, 77, 49408, 512},
    {"vit-l-14", 1024, 24, 4096, 14, 224, 768, 12, 3072, 77, 49408, 768},
};

/* splitmix64 + Box-Muller: deterministic normal numbers from a seed. */
struct rng {
    uint64_t s;
};

static double uniform(struct rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static double normal(struct rng *r)
{
    return sqrt(-2.0 * log(uniform(r))) * cos(6.283185307179586 * uniform(r));
}

struct writer {
    struct st_write_tensor *t;
    int n, cap;
    struct rng rng;
    int fail;
};

/* Adds a tensor filled with N(0, std) (std > 0), or the constant -std. */
static void add(struct writer *w, const char *name, double std, int ndim, int64_t d0,
                int64_t d1, int64_t d2, int64_t d3)
{
    if (w->fail)
        return;
    if (w->n == w->cap) {
        int nc = w->cap ? 2 * w->cap : 256;
        void *p = realloc(w->t, sizeof *w->t * (size_t)nc);
        if (!p) {
            w->fail = 1;
            return;
        }
        w->t = p;
        w->cap = nc;
    }
    struct st_write_tensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    int64_t dims[4] = {d0, d1, d2, d3}, numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = dims[i];
        numel *= dims[i];
    }
    t->ndim = ndim;
    t->dtype = ST_F16;
    uint16_t *d = malloc(sizeof(uint16_t) * (size_t)(numel ? numel : 1));
    char *nm = strdup(name);
    if (!d || !nm) {
        free(d);
        free(nm);
        w->fail = 1;
        return;
    }
    for (int64_t i = 0; i < numel; i++)
        d[i] = st_f32_to_f16(std > 0 ? (float)(normal(&w->rng) * std) : (float)-std);
    t->data = d;
    t->name = nm;
    w->n++;
}

static void add_tower(struct writer *w, const char *pre, int c, int layers, int mlp)
{
    char n[256];
    double attn_std = pow(c, -0.5), proj_std = pow(c, -0.5) * pow(2.0 * layers, -0.5);
    for (int l = 0; l < layers; l++) {
        static const char *const qkv[] = {"q", "k", "v", "out"};
        for (int k = 0; k < 4; k++) {
            snprintf(n, sizeof n, "%s.encoder.layers.%d.self_attn.%s_proj.weight", pre, l, qkv[k]);
            add(w, n, k == 3 ? proj_std : attn_std, 2, c, c, 0, 0);
            snprintf(n, sizeof n, "%s.encoder.layers.%d.self_attn.%s_proj.bias", pre, l, qkv[k]);
            add(w, n, -0.0, 1, c, 0, 0, 0);
        }
        for (int k = 1; k <= 2; k++) {
            snprintf(n, sizeof n, "%s.encoder.layers.%d.layer_norm%d.weight", pre, l, k);
            add(w, n, -1.0, 1, c, 0, 0, 0);
            snprintf(n, sizeof n, "%s.encoder.layers.%d.layer_norm%d.bias", pre, l, k);
            add(w, n, -0.0, 1, c, 0, 0, 0);
        }
        snprintf(n, sizeof n, "%s.encoder.layers.%d.mlp.fc1.weight", pre, l);
        add(w, n, pow(2.0 * c, -0.5), 2, mlp, c, 0, 0);
        snprintf(n, sizeof n, "%s.encoder.layers.%d.mlp.fc1.bias", pre, l);
        add(w, n, -0.0, 1, mlp, 0, 0, 0);
        snprintf(n, sizeof n, "%s.encoder.layers.%d.mlp.fc2.weight", pre, l);
        add(w, n, proj_std, 2, c, mlp, 0, 0);
        snprintf(n, sizeof n, "%s.encoder.layers.%d.mlp.fc2.bias", pre, l);
        add(w, n, -0.0, 1, c, 0, 0, 0);
    }
}

static int write_json(const char *dir, const char *file, const char *text, struct err *err)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    return fs_write_file(p, text, strlen(text), err);
}

static int copy_file(const char *from_dir, const char *name, const char *to_dir,
                     struct err *err)
{
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s/%s", from_dir, name);
    snprintf(b, sizeof b, "%s/%s", to_dir, name);
    uint8_t *buf;
    size_t n;
    int rc = fs_read_file(a, 64u << 20, &buf, &n, err);
    if (rc)
        return rc;
    rc = fs_write_file(b, buf, n, err);
    free(buf);
    return rc;
}

static int init_random(const struct arch *a, uint64_t seed, const char *dir,
                       const char *tok_from, struct err *err)
{
    int rc = fs_mkdirs(dir, err);
    if (rc)
        return rc;
    struct writer w = {.rng = {seed * 0x9e3779b97f4a7c15ull + 1}};
    int grid = a->image / a->patch, vc = a->v_width, tc = a->t_width;
    add(&w, "vision_model.embeddings.patch_embedding.weight", pow(3.0 * a->patch * a->patch, -0.5),
        4, vc, 3, a->patch, a->patch);
    add(&w, "vision_model.embeddings.class_embedding", pow(vc, -0.5), 1, vc, 0, 0, 0);
    add(&w, "vision_model.embeddings.position_embedding.weight", pow(vc, -0.5), 2,
        grid * grid + 1, vc, 0, 0);
    add(&w, "vision_model.pre_layrnorm.weight", -1.0, 1, vc, 0, 0, 0);
    add(&w, "vision_model.pre_layrnorm.bias", -0.0, 1, vc, 0, 0, 0);
    add_tower(&w, "vision_model", vc, a->v_layers, a->v_mlp);
    add(&w, "vision_model.post_layernorm.weight", -1.0, 1, vc, 0, 0, 0);
    add(&w, "vision_model.post_layernorm.bias", -0.0, 1, vc, 0, 0, 0);
    add(&w, "visual_projection.weight", pow(vc, -0.5), 2, a->proj, vc, 0, 0);
    add(&w, "text_model.embeddings.token_embedding.weight", 0.02, 2, a->vocab, tc, 0, 0);
    add(&w, "text_model.embeddings.position_embedding.weight", 0.01, 2, a->ctx, tc, 0, 0);
    add_tower(&w, "text_model", tc, a->t_layers, a->t_mlp);
    add(&w, "text_model.final_layer_norm.weight", -1.0, 1, tc, 0, 0, 0);
    add(&w, "text_model.final_layer_norm.bias", -0.0, 1, tc, 0, 0, 0);
    add(&w, "text_projection.weight", pow(tc, -0.5), 2, a->proj, tc, 0, 0);
    add(&w, "logit_scale", -log(1 / 0.07), 0, 0, 0, 0, 0);
    char path[4096], cfg[2048];
    if (w.fail) {
        rc = err_set(err, ERR_NOMEM, "out of memory building random weights");
        goto done;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if ((rc = st_write(path, w.t, w.n, err)))
        goto done;
    snprintf(cfg, sizeof cfg,
             "{\n  \"_name_or_path\": \"random-%s-seed%llu\",\n  \"architectures\": [\"CLIPModel\"],\n"
             "  \"model_type\": \"clip\",\n  \"projection_dim\": %d,\n"
             "  \"text_config\": {\"hidden_size\": %d, \"intermediate_size\": %d, "
             "\"num_attention_heads\": %d, \"num_hidden_layers\": %d, "
             "\"max_position_embeddings\": %d, \"vocab_size\": %d, \"hidden_act\": \"quick_gelu\", "
             "\"layer_norm_eps\": 1e-05, \"bos_token_id\": 49406, \"eos_token_id\": 49407, "
             "\"projection_dim\": %d},\n"
             "  \"vision_config\": {\"hidden_size\": %d, \"intermediate_size\": %d, "
             "\"num_attention_heads\": %d, \"num_hidden_layers\": %d, \"image_size\": %d, "
             "\"patch_size\": %d, \"num_channels\": 3, \"hidden_act\": \"quick_gelu\", "
             "\"layer_norm_eps\": 1e-05, \"projection_dim\": %d}\n}\n",
             a->name, (unsigned long long)seed, a->proj, tc, a->t_mlp, tc / 64, a->t_layers,
             a->ctx, a->vocab, a->proj, vc, a->v_mlp, vc / 64, a->v_layers, a->image, a->patch,
             a->proj);
    if ((rc = write_json(dir, "config.json", cfg, err)))
        goto done;
    snprintf(cfg, sizeof cfg,
             "{\n  \"crop_size\": {\"height\": %d, \"width\": %d},\n  \"do_center_crop\": true,\n"
             "  \"do_normalize\": true,\n  \"do_resize\": true,\n  \"do_convert_rgb\": true,\n"
             "  \"image_mean\": [0.48145466, 0.4578275, 0.40821073],\n"
             "  \"image_std\": [0.26862954, 0.26130258, 0.27577711],\n  \"resample\": 3,\n"
             "  \"rescale_factor\": 0.00392156862745098,\n  \"do_rescale\": true,\n"
             "  \"size\": {\"shortest_edge\": %d},\n  \"image_processor_type\": \"CLIPImageProcessor\"\n}\n",
             a->image, a->image, a->image);
    if ((rc = write_json(dir, "preprocessor_config.json", cfg, err)))
        goto done;
    if (tok_from) {
        if ((rc = copy_file(tok_from, "vocab.json", dir, err)) ||
            (rc = copy_file(tok_from, "merges.txt", dir, err)))
            goto done;
    }
done:
    for (int i = 0; i < w.n; i++) {
        free((void *)w.t[i].data);
        free((void *)w.t[i].name);
    }
    free(w.t);
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: imgsearch model fetch [REPO] [--hub URL] [--dir DIR]\n"
            "       imgsearch model list\n"
            "       imgsearch model path [--model DIR|REPO] [--offline]\n"
            "       imgsearch model init-random --like ARCH [--seed S] [--tokenizer-from DIR] DIR\n"
            "       imgsearch model info --model DIR|REPO\n"
            "\n"
            "fetch downloads a Hugging Face hub repo (default " HUB_DEFAULT_REPO ")\n"
            "into $XDG_CACHE_HOME/imgsearch/models/OWNER/NAME (or --dir): the weights\n"
            "(model.safetensors, open_clip_model.safetensors or pytorch_model.bin, the\n"
            "last converted once to model.safetensors), config and tokenizer files.\n"
            "Downloads resume, are checked against the hub's SHA-256 and appear only\n"
            "when complete. --hub (or HF_ENDPOINT) sets the hub URL; HF_TOKEN is sent\n"
            "to the hub only, never to the hosts it redirects to.\n"
            "Every --model accepts such a repo name: a cached one is used, another is\n"
            "fetched first unless --offline (or HF_HUB_OFFLINE=1); without --model and\n"
            "IMGSEARCH_MODEL, " HUB_DEFAULT_REPO " is used.\n"
            "list prints the cached models; path prints the folder --model resolves to.\n"
            "init-random writes a Hugging Face style folder (config.json,\n"
            "preprocessor_config.json, model.safetensors in F16) of random weights with\n"
            "the real shapes of ARCH: vit-b-32, vit-b-16 or vit-l-14. --tokenizer-from\n"
            "copies vocab.json and merges.txt from another folder.\n"
            "info loads a model and prints its architecture and id.\n");
}

/* A bar on stderr when it is a terminal, at most 10 times a second. */
struct bar {
    int tty;            /* stderr is a terminal */
    double last;        /* time of the last draw */
    char file[128];     /* file being drawn */
};

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static void draw(void *ctx, const char *file, uint64_t done, uint64_t total)
{
    struct bar *b = ctx;
    if (!b->tty)
        return;
    double t = now_s();
    int same = !strcmp(b->file, file);
    if (same && t - b->last < 0.1 && done != total)
        return;
    if (!same)
        fputc('\n', stderr);
    snprintf(b->file, sizeof b->file, "%s", file);
    b->last = t;
    int width = 30, fill = total ? (int)((double)done / (double)total * width) : 0;
    if (fill > width)
        fill = width;
    fprintf(stderr, "\r%-28.28s [%.*s%*s] %7.1f / %.1f MB", file, fill,
            "##############################", width - fill, "", (double)done / 1048576.0,
            (double)total / 1048576.0);
    fflush(stderr);
}

static int offline_env(void)
{
    const char *e = getenv("HF_HUB_OFFLINE");
    return e && *e && strcmp(e, "0");
}

/* Fetches repo into dir (NULL: its cache folder); prints the folder. */
static int do_fetch(const char *repo, const char *hub, const char *dir, int quiet)
{
    struct err err = {0};
    char cdir[4096];
    if (!dir) {
        if (hub_cache_dir(repo, cdir, sizeof cdir, &err))
            return cmd_fail("model", &err);
        dir = cdir;
    }
    struct bar b = {.tty = !quiet && isatty(2)};
    struct hub_opts o = {.endpoint = hub, .progress = draw, .progress_ctx = &b};
    const char *w = NULL;
    int rc = hub_fetch(repo, dir, &o, &w, &err);
    if (b.file[0])
        fputc('\n', stderr);
    if (rc) {
        cmd_fail("model", &err);
        return 2; /* 401, 404, offline: what to do is in the message */
    }
    if (!quiet) {
        printf("{\"repo\": ");
        cmd_json_str(stdout, repo);
        printf(", \"dir\": ");
        cmd_json_str(stdout, dir);
        printf(", \"weights\": ");
        cmd_json_str(stdout, w);
        printf("}\n");
    }
    return 0;
}

static int do_list(void)
{
    struct err err = {0};
    char root[4000], p[8192];
    if (hub_cache_root(root, sizeof root, &err))
        return cmd_fail("model", &err);
    DIR *d1 = opendir(root);
    int n = 0;
    struct dirent *e1, *e2;
    while (d1 && (e1 = readdir(d1))) {
        if (e1->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "%s/%s", root, e1->d_name);
        DIR *d2 = opendir(p);
        while (d2 && (e2 = readdir(d2))) {
            char repo[600], dir[4600];
            snprintf(repo, sizeof repo, "%s/%s", e1->d_name, e2->d_name);
            snprintf(dir, sizeof dir, "%s/%s", root, repo);
            if (e2->d_name[0] == '.' || !hub_repo_valid(repo))
                continue;
            int ok = hub_dir_has_weights(dir);
            snprintf(p, sizeof p, "%s/model.safetensors", dir);
            struct stat sb;
            double mb = stat(p, &sb) == 0 ? (double)sb.st_size / 1048576.0 : 0;
            printf("{\"repo\": ");
            cmd_json_str(stdout, repo);
            printf(", \"dir\": ");
            cmd_json_str(stdout, dir);
            printf(", \"complete\": %s, \"mb\": %.1f}\n", ok ? "true" : "false", mb);
            n++;
        }
        if (d2)
            closedir(d2);
    }
    if (d1)
        closedir(d1);
    fprintf(stderr, "%d model%s in %s\n", n, n == 1 ? "" : "s", root);
    return 0;
}

const char *cmd_model_resolve(const char *value, int offline)
{
    static char dir[4096];
    struct stat sb;
    if (value && *value && (stat(value, &sb) == 0 || !hub_repo_valid(value)))
        return value; /* a folder or file (a missing one is the loader's to report) */
    const char *repo = value && *value ? value : HUB_DEFAULT_REPO;
    struct err err = {0};
    if (hub_cache_dir(repo, dir, sizeof dir, &err)) {
        cmd_fail("model", &err);
        return NULL;
    }
    if (hub_dir_has_weights(dir))
        return dir;
    if (offline || offline_env()) {
        fprintf(stderr, "imgsearch: model %s is not in the cache (%s) and the hub is off "
                "(--offline / HF_HUB_OFFLINE); run 'imgsearch model fetch %s' first\n", repo,
                dir, repo);
        return NULL;
    }
    fprintf(stderr, "imgsearch: fetching model %s into %s\n", repo, dir);
    return do_fetch(repo, NULL, dir, 1) ? NULL : dir;
}

static int run(int argc, char **argv)
{
    static const struct option opts[] = {
        {"like", required_argument, 0, 'l'}, {"seed", required_argument, 0, 's'},
        {"tokenizer-from", required_argument, 0, 't'}, {"model", required_argument, 0, 'm'},
        {"hub", required_argument, 0, 'u'},  {"dir", required_argument, 0, 'd'},
        {"offline", no_argument, 0, 'o'},    {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1], *like = NULL, *tok = NULL, *model = NULL, *hub = NULL,
               *dir = NULL;
    long seed = 0;
    int offline = 0;
    int c;
    optind = 1;
    opterr = 0;
    argc--;
    argv++;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'l': like = optarg; break;
        case 't': tok = optarg; break;
        case 'm': model = optarg; break;
        case 'u': hub = optarg; break;
        case 'd': dir = optarg; break;
        case 'o': offline = 1; break;
        case 's':
            if (cmd_parse_int("model", "--seed", optarg, 0, 0x7fffffffL, &seed))
                return 2;
            break;
        case 'h': usage(stdout); return 0;
        default: return cmd_usage_error("model", "unknown option '%s'", argv[optind - 1]);
        }
    }
    struct err err = {0};
    if (!strcmp(sub, "fetch")) {
        if (optind < argc - 1)
            return cmd_usage_error("model", "fetch takes one repo name");
        const char *repo = optind < argc ? argv[optind] : HUB_DEFAULT_REPO;
        if (!hub_repo_valid(repo))
            return cmd_usage_error("model", "'%s' is not a hub repo name (OWNER/NAME, for "
                                   "example %s)", repo, HUB_DEFAULT_REPO);
        return do_fetch(repo, hub, dir, 0);
    }
    if (!strcmp(sub, "list")) {
        if (optind != argc)
            return cmd_usage_error("model", "list takes no arguments");
        return do_list();
    }
    if (!strcmp(sub, "path")) {
        const char *v = model ? model : getenv("IMGSEARCH_MODEL");
        const char *r = cmd_model_resolve(v && *v ? v : NULL, offline);
        if (!r)
            return 2;
        printf("%s\n", r);
        return 0;
    }
    if (!strcmp(sub, "init-random")) {
        if (!like)
            return cmd_usage_error("model", "init-random needs --like vit-b-32|vit-b-16|vit-l-14");
        if (optind != argc - 1)
            return cmd_usage_error("model", "init-random needs exactly one output folder");
        for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
            if (!strcmp(like, archs[i].name)) {
                if (init_random(&archs[i], (uint64_t)seed, argv[optind], tok, &err))
                    return cmd_fail("model", &err);
                printf("{\"model\": ");
                cmd_json_str(stdout, argv[optind]);
                printf(", \"like\": \"%s\", \"seed\": %ld}\n", like, seed);
                return 0;
            }
        return cmd_usage_error("model", "unknown architecture '%s' (vit-b-32, vit-b-16, vit-l-14)",
                               like);
    }
    if (!strcmp(sub, "info")) {
        if (!(model = cmd_model_dir(model)))
            return cmd_usage_error("model", "info needs --model DIR");
        struct clip_model *m;
        if (clip_model_load(&m, model, NULL, &err))
            return cmd_fail("model", &err);
        char d[256];
        clip_model_describe(m, d, sizeof d);
        printf("{\"id\": ");
        cmd_json_str(stdout, clip_model_id(m));
        printf(", \"dim\": %d, \"image_size\": %d, \"text\": %s, \"describe\": ",
               clip_embed_dim(m), clip_image_size(m), clip_has_text(m) ? "true" : "false");
        cmd_json_str(stdout, d);
        printf(", \"weights_mb\": %.1f}\n", (double)clip_model_bytes(m) / 1048576.0);
        clip_model_free(m);
        return 0;
    }
    return cmd_usage_error("model", "unknown subcommand '%s' (fetch, list, path, init-random, "
                           "info)", sub);
}

const struct cmd cmd_model = {"model", "models: fetch, list, path, init-random, info", run};
