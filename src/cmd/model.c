/* model.c - `imgsearch model`: model folder utilities.
 *   init-random  writes a Hugging Face style folder of random weights with
 *                the real shapes of a known architecture (speed work without
 *                a download)
 *   info         prints what a folder holds
 */
#include "cmd/cmd.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "clip/clip.h"
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
            "usage: imgsearch model init-random --like ARCH [--seed S] [--tokenizer-from DIR] DIR\n"
            "       imgsearch model info --model DIR\n"
            "\n"
            "init-random writes a Hugging Face style folder (config.json,\n"
            "preprocessor_config.json, model.safetensors in F16) of random weights with\n"
            "the real shapes of ARCH: vit-b-32, vit-b-16 or vit-l-14. --tokenizer-from\n"
            "copies vocab.json and merges.txt from another folder.\n"
            "info loads a model and prints its architecture and id.\n");
}

static int run(int argc, char **argv)
{
    static const struct option opts[] = {
        {"like", required_argument, 0, 'l'}, {"seed", required_argument, 0, 's'},
        {"tokenizer-from", required_argument, 0, 't'}, {"model", required_argument, 0, 'm'},
        {"help", no_argument, 0, 'h'},       {0, 0, 0, 0},
    };
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1], *like = NULL, *tok = NULL, *model = NULL;
    long seed = 0;
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
        case 's':
            if (cmd_parse_int("model", "--seed", optarg, 0, 0x7fffffffL, &seed))
                return 2;
            break;
        case 'h': usage(stdout); return 0;
        default: return cmd_usage_error("model", "unknown option '%s'", argv[optind - 1]);
        }
    }
    struct err err = {0};
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
    return cmd_usage_error("model", "unknown subcommand '%s' (init-random, info)", sub);
}

const struct cmd cmd_model = {"model", "model folders: init-random, info", run};
