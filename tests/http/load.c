/* load.c - an HTTP client for the service's concurrency test and its
 * loopback benchmark (libcurl easy handles, one per thread, kept alive).
 *
 *   load check --url URL --images DIR --names a.jpg,b.jpg,... [--clients 16]
 *              [--requests 200] [--dim 64] [--api-key KEY]
 *     Warms up one reference vector per image (POST /extract-features),
 *     then every client sends --requests mixed requests (health, search by
 *     vector, image and text, extract-features in JSON and multipart, item
 *     GET/PUT/DELETE, a 404) and checks every answer: status, JSON shape,
 *     the image found first with score >= 0.999, features equal to the
 *     reference (cosine >= 0.9999, so batching routed each vector to its
 *     caller), its own items created and deleted. Prints one line per bad
 *     answer (at most 20) and "N passed, N failed" over requests.
 *
 *   load bench --url URL --query vector|image [--image FILE] [--dim D]
 *              [--concurrency C] [--seconds S]
 *     POST /search for S seconds from C threads and prints one JSON line:
 *     {"what": "http_search", "query", "concurrency", "requests", "errors",
 *      "req_per_s", "p50_ms", "p99_ms"}.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http/base64.h"
#include "util/clock.h"

#define MAX_IMAGES 32

struct image {
    char name[128];   /* file name = item id in the catalog */
    char *bytes;      /* file contents */
    size_t n;
    char *b64;        /* base64 */
    float ref[4096];  /* reference features */
};

static struct {
    const char *url;
    const char *key;
    int dim;
    int clients, requests;
    struct image img[MAX_IMAGES];
    int nimg;
    const char *query;
    double seconds;
    atomic_int bad_lines;
} G = {.dim = 64, .clients = 16, .requests = 200, .seconds = 3};

static char *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = len >= 0 ? malloc((size_t)len + 1) : NULL;
    if (b && fread(b, 1, (size_t)len, f) != (size_t)len) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b)
        *n = (size_t)len;
    return b;
}

/* ---- one HTTP exchange ---- */

struct buf {
    char *p;
    size_t n, cap;
};

static size_t on_data(char *d, size_t sz, size_t nm, void *ud)
{
    struct buf *b = ud;
    size_t n = sz * nm;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 4096;
        while (nc < b->n + n + 1)
            nc *= 2;
        char *q = realloc(b->p, nc);
        if (!q)
            return 0;
        b->p = q;
        b->cap = nc;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
    b->p[b->n] = 0;
    return n;
}

struct client {
    CURL *c;
    struct buf resp;
    int id;
    uint64_t rng;
    int ok, bad;
    double *lat;
    size_t nlat, caplat;
};

/* method, path, content type (NULL: none), body (NULL: none) or a mime
 * form; returns the status (0 on a transport error) with the body in
 * cl->resp. */
static long request(struct client *cl, const char *method, const char *path, const char *ctype,
                    const char *body, size_t blen, curl_mime *mime)
{
    char url[1024];
    snprintf(url, sizeof url, "%s%s", G.url, path);
    CURL *c = cl->c;
    curl_easy_reset(c);
    cl->resp.n = 0;
    if (cl->resp.p)
        cl->resp.p[0] = 0;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &cl->resp);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    struct curl_slist *h = NULL;
    char hdr[300];
    if (ctype) {
        snprintf(hdr, sizeof hdr, "Content-Type: %s", ctype);
        h = curl_slist_append(h, hdr);
    }
    if (G.key) {
        snprintf(hdr, sizeof hdr, "Authorization: Bearer %s", G.key);
        h = curl_slist_append(h, hdr);
    }
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    if (mime) {
        curl_easy_setopt(c, CURLOPT_MIMEPOST, mime);
    } else if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
    }
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    return status;
}

static uint64_t rnd(struct client *cl)
{
    cl->rng ^= cl->rng << 13;
    cl->rng ^= cl->rng >> 7;
    cl->rng ^= cl->rng << 17;
    return cl->rng;
}

/* {"vector": [...], "k": k} for a random unit vector. */
static char *vector_body(struct client *cl, int k)
{
    size_t cap = (size_t)G.dim * 24 + 64, o = 0;
    char *s = malloc(cap);
    double v[4096], n2 = 0;
    for (int i = 0; i < G.dim; i++) {
        v[i] = (double)(rnd(cl) % 20001) / 10000.0 - 1.0;
        n2 += v[i] * v[i];
    }
    o += (size_t)snprintf(s + o, cap - o, "{\"k\": %d, \"vector\": [", k);
    for (int i = 0; i < G.dim; i++)
        o += (size_t)snprintf(s + o, cap - o, i ? ",%.6f" : "%.6f", v[i] / sqrt(n2 + 1e-12));
    snprintf(s + o, cap - o, "]}");
    return s;
}

static void bad(struct client *cl, const char *what, long status)
{
    cl->bad++;
    if (atomic_fetch_add(&G.bad_lines, 1) < 20)
        fprintf(stderr, "FAIL client %d: %s: status %ld: %.2000s\n", cl->id, what, status,
                cl->resp.p ? cl->resp.p : "");
}

static json_t *parse(struct client *cl)
{
    return cl->resp.p ? json_loads(cl->resp.p, 0, NULL) : NULL;
}

static double cosine(const float *a, json_t *arr, int n)
{
    double ab = 0, aa = 0, bb = 0;
    if (!json_is_array(arr) || json_array_size(arr) != (size_t)n)
        return -2;
    for (int i = 0; i < n; i++) {
        double b = json_number_value(json_array_get(arr, (size_t)i));
        ab += a[i] * b;
        aa += (double)a[i] * a[i];
        bb += b * b;
    }
    return ab / sqrt(aa * bb + 1e-30);
}

/* Checks a /search answer: sorted scores, at most k, optionally the
 * expected id first with a score of ~1. */
static int check_search(json_t *j, int k, const char *first)
{
    json_t *res = json_object_get(j, "results");
    if (!json_is_array(res) || json_array_size(res) > (size_t)k ||
        !json_is_number(json_object_get(j, "took_ms")))
        return 0;
    double prev = 2;
    for (size_t i = 0; i < json_array_size(res); i++) {
        json_t *h = json_array_get(res, i);
        double s = json_number_value(json_object_get(h, "score"));
        if (!json_is_string(json_object_get(h, "id")) || s > prev + 1e-6 ||
            !json_is_object(json_object_get(h, "metadata")))
            return 0;
        prev = s;
    }
    if (first) {
        /* the image's own item is among the first hits, which all score
         * ~1: only exact copies of the image (the catalog's own, e.g.
         * "later", and those other clients PUT meanwhile) may tie with it,
         * in any order, as the store ranks copies within 8e-6 together */
        for (size_t i = 0; i < json_array_size(res); i++) {
            json_t *h = json_array_get(res, i);
            const char *id = json_string_value(json_object_get(h, "id"));
            if (json_number_value(json_object_get(h, "score")) < 0.99999)
                return 0;
            if (!strcmp(id, first))
                return 1;
        }
        return 0;
    }
    return 1;
}

static int check_features(json_t *j, const struct image *im)
{
    return json_integer_value(json_object_get(j, "dimension")) == G.dim &&
           cosine(im->ref, json_object_get(j, "features"), G.dim) >= 0.9999;
}

/* One mixed request number i of client cl. */
static void mixed(struct client *cl, int i)
{
    const struct image *im = &G.img[(cl->id + i) % G.nimg];
    char path[512], what[64];
    long st;
    json_t *j = NULL;
    int ok = 0;
    switch (i % 10) {
    case 0:
        snprintf(what, sizeof what, "GET /health");
        st = request(cl, "GET", "/health", NULL, NULL, 0, NULL);
        j = parse(cl);
        ok = st == 200 && j && !strcmp(json_string_value(json_object_get(j, "status")), "ok");
        break;
    case 1:
    case 5: {
        snprintf(what, sizeof what, "POST /search vector");
        char *body = vector_body(cl, 5);
        st = request(cl, "POST", "/search", "application/json", body, strlen(body), NULL);
        free(body);
        j = parse(cl);
        ok = st == 200 && j && check_search(j, 5, NULL) &&
             json_array_size(json_object_get(j, "results")) == 5;
        break;
    }
    case 2:
        snprintf(what, sizeof what, "POST /search image/jpeg %s", im->name);
        /* k covers every copy other clients may have PUT meanwhile */
        st = request(cl, "POST", "/search?k=1000", "application/octet-stream", im->bytes, im->n, NULL);
        j = parse(cl);
        ok = st == 200 && j && check_search(j, 1000, im->name);
        break;
    case 3: {
        snprintf(what, sizeof what, "POST /extract-features json %s", im->name);
        size_t n = strlen(im->b64) + 32;
        char *body = malloc(n);
        snprintf(body, n, "{\"image\": \"%s\"}", im->b64);
        st = request(cl, "POST", "/extract-features", "application/json", body, strlen(body), NULL);
        free(body);
        j = parse(cl);
        ok = st == 200 && j && check_features(j, im);
        break;
    }
    case 4: {
        snprintf(what, sizeof what, "POST /extract-features multipart %s", im->name);
        curl_mime *m = curl_mime_init(cl->c);
        curl_mimepart *p = curl_mime_addpart(m);
        curl_mime_name(p, "image");
        curl_mime_filename(p, im->name);
        curl_mime_data(p, im->bytes, im->n);
        st = request(cl, "POST", "/extract-features", NULL, NULL, 0, m);
        curl_mime_free(m);
        j = parse(cl);
        ok = st == 200 && j && check_features(j, im);
        break;
    }
    case 6:
        snprintf(what, sizeof what, "GET /items/%s", im->name);
        snprintf(path, sizeof path, "/items/%s", im->name);
        st = request(cl, "GET", path, NULL, NULL, 0, NULL);
        j = parse(cl);
        ok = st == 200 && j && json_is_true(json_object_get(j, "has_embedding")) &&
             !strcmp(json_string_value(json_object_get(j, "id")), im->name);
        break;
    case 7: {
        snprintf(what, sizeof what, "PUT /items/load-%d-%d", cl->id, i);
        snprintf(path, sizeof path, "/items/load-%d-%d", cl->id, i);
        size_t n = strlen(im->b64) + 64;
        char *body = malloc(n);
        snprintf(body, n, "{\"image\": \"%s\", \"metadata\": {\"client\": %d}}", im->b64, cl->id);
        st = request(cl, "PUT", path, "application/json", body, strlen(body), NULL);
        free(body);
        j = parse(cl);
        ok = st == 201 && j && json_is_true(json_object_get(j, "has_embedding")) &&
             json_integer_value(json_object_get(json_object_get(j, "metadata"), "client")) == cl->id;
        break;
    }
    case 8:
        snprintf(what, sizeof what, "DELETE /items/load-%d-%d", cl->id, i - 1);
        snprintf(path, sizeof path, "/items/load-%d-%d", cl->id, i - 1);
        st = request(cl, "DELETE", path, NULL, NULL, 0, NULL);
        j = parse(cl);
        ok = st == 200 && j && json_is_true(json_object_get(j, "deleted"));
        break;
    default:
        if (i % 20 == 9) {
            snprintf(what, sizeof what, "GET /items/missing");
            snprintf(path, sizeof path, "/items/missing-%d", cl->id);
            st = request(cl, "GET", path, NULL, NULL, 0, NULL);
            j = parse(cl);
            ok = st == 404 && j &&
                 !strcmp(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                         "not_found");
        } else {
            snprintf(what, sizeof what, "POST /search text");
            const char *body = "{\"text\": \"a photo of a fish\", \"k\": 4}";
            st = request(cl, "POST", "/search", "application/json", body, strlen(body), NULL);
            j = parse(cl);
            ok = st == 200 && j && check_search(j, 4, NULL) &&
                 json_array_size(json_object_get(j, "results")) == 4;
        }
        break;
    }
    json_decref(j);
    if (ok)
        cl->ok++;
    else
        bad(cl, what, st);
}

static void *check_thread(void *arg)
{
    struct client *cl = arg;
    for (int i = 0; i < G.requests; i++)
        mixed(cl, i);
    return NULL;
}

static void add_lat(struct client *cl, double ms)
{
    if (cl->nlat == cl->caplat) {
        cl->caplat = cl->caplat ? cl->caplat * 2 : 1024;
        cl->lat = realloc(cl->lat, sizeof(double) * cl->caplat);
    }
    cl->lat[cl->nlat++] = ms;
}

static void *bench_thread(void *arg)
{
    struct client *cl = arg;
    double until = mono_now() + G.seconds;
    int image = !strcmp(G.query, "image");
    while (mono_now() < until) {
        double t0 = mono_now();
        long st;
        if (image) {
            st = request(cl, "POST", "/search?k=10", "image/jpeg", G.img[0].bytes, G.img[0].n, NULL);
        } else {
            char *body = vector_body(cl, 10);
            st = request(cl, "POST", "/search", "application/json", body, strlen(body), NULL);
            free(body);
        }
        if (st == 200) {
            cl->ok++;
            add_lat(cl, (mono_now() - t0) * 1e3);
        } else {
            cl->bad++;
        }
    }
    return NULL;
}

static int by_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int load_images(const char *dir, const char *names)
{
    char *copy = strdup(names), *sv = NULL;
    for (char *t = strtok_r(copy, ",", &sv); t && G.nimg < MAX_IMAGES; t = strtok_r(NULL, ",", &sv)) {
        struct image *im = &G.img[G.nimg];
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, t);
        snprintf(im->name, sizeof im->name, "%s", t);
        if (!(im->bytes = read_file(path, &im->n))) {
            fprintf(stderr, "load: cannot read %s\n", path);
            free(copy);
            return -1;
        }
        im->b64 = malloc(4 * ((im->n + 2) / 3) + 1);
        http_base64_encode((const uint8_t *)im->bytes, im->n, im->b64);
        G.nimg++;
    }
    free(copy);
    return G.nimg ? 0 : -1;
}

static int warm_up(void)
{
    struct client cl = {.c = curl_easy_init(), .id = -1};
    int rc = 0;
    for (int i = 0; i < G.nimg && !rc; i++) {
        long st = request(&cl, "POST", "/extract-features", "image/jpeg", G.img[i].bytes,
                          G.img[i].n, NULL);
        json_t *j = parse(&cl), *f = j ? json_object_get(j, "features") : NULL;
        if (st != 200 || !json_is_array(f) || json_array_size(f) != (size_t)G.dim) {
            fprintf(stderr, "load: warm-up %s: status %ld: %.200s\n", G.img[i].name, st,
                    cl.resp.p ? cl.resp.p : "");
            rc = -1;
        } else {
            for (int k = 0; k < G.dim; k++)
                G.img[i].ref[k] = (float)json_number_value(json_array_get(f, (size_t)k));
        }
        json_decref(j);
    }
    curl_easy_cleanup(cl.c);
    free(cl.resp.p);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "check") && strcmp(argv[1], "bench"))) {
        fprintf(stderr, "usage: load check|bench --url URL [options] (see tests/http/load.c)\n");
        return 2;
    }
    int check = !strcmp(argv[1], "check");
    const char *dir = NULL, *names = NULL, *image = NULL;
    G.query = "vector";
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--url")) G.url = v;
        else if (!strcmp(k, "--images")) dir = v;
        else if (!strcmp(k, "--names")) names = v;
        else if (!strcmp(k, "--image")) image = v;
        else if (!strcmp(k, "--clients") || !strcmp(k, "--concurrency")) G.clients = atoi(v);
        else if (!strcmp(k, "--requests")) G.requests = atoi(v);
        else if (!strcmp(k, "--dim")) G.dim = atoi(v);
        else if (!strcmp(k, "--api-key")) G.key = v;
        else if (!strcmp(k, "--query")) G.query = v;
        else if (!strcmp(k, "--seconds")) G.seconds = atof(v);
        else {
            fprintf(stderr, "load: unknown option %s\n", k);
            return 2;
        }
    }
    if (!G.url || G.clients < 1 || G.clients > 256 || G.dim < 1 || G.dim > 4096) {
        fprintf(stderr, "load: need --url, 1..256 clients, dim 1..4096\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (check && (!dir || !names || load_images(dir, names) || warm_up()))
        return 1;
    if (!check && image) {
        struct image *im = &G.img[0];
        if (!(im->bytes = read_file(image, &im->n))) {
            fprintf(stderr, "load: cannot read %s\n", image);
            return 1;
        }
        G.nimg = 1;
    }
    if (!check && !strcmp(G.query, "image") && !G.nimg) {
        fprintf(stderr, "load: --query image needs --image FILE\n");
        return 2;
    }
    struct client *cl = calloc((size_t)G.clients, sizeof *cl);
    pthread_t *th = calloc((size_t)G.clients, sizeof *th);
    double t0 = mono_now();
    for (int i = 0; i < G.clients; i++) {
        cl[i].c = curl_easy_init();
        cl[i].id = i;
        cl[i].rng = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
        pthread_create(&th[i], NULL, check ? check_thread : bench_thread, &cl[i]);
    }
    int ok = 0, nbad = 0;
    size_t nlat = 0;
    for (int i = 0; i < G.clients; i++) {
        pthread_join(th[i], NULL);
        ok += cl[i].ok;
        nbad += cl[i].bad;
        nlat += cl[i].nlat;
    }
    double secs = mono_now() - t0;
    if (check) {
        printf("load: %d clients x %d requests in %.2f s (%.0f req/s)\n", G.clients, G.requests,
               secs, (ok + nbad) / secs);
        printf("load: %d passed, %d failed\n", ok, nbad);
    } else {
        double *all = malloc(sizeof(double) * (nlat ? nlat : 1));
        size_t k = 0;
        for (int i = 0; i < G.clients; i++)
            for (size_t j = 0; j < cl[i].nlat; j++)
                all[k++] = cl[i].lat[j];
        qsort(all, nlat, sizeof(double), by_double);
        double p50 = nlat ? all[nlat / 2] : 0, p99 = nlat ? all[(size_t)(nlat * 0.99)] : 0;
        printf("{\"what\": \"http_search\", \"query\": \"%s\", \"concurrency\": %d, "
               "\"requests\": %d, \"errors\": %d, \"seconds\": %.2f, \"req_per_s\": %.1f, "
               "\"p50_ms\": %.3f, \"p99_ms\": %.3f}\n",
               G.query, G.clients, ok, nbad, secs, ok / secs, p50, p99);
        free(all);
    }
    for (int i = 0; i < G.clients; i++) {
        curl_easy_cleanup(cl[i].c);
        free(cl[i].resp.p);
        free(cl[i].lat);
    }
    for (int i = 0; i < G.nimg; i++) {
        free(G.img[i].bytes);
        free(G.img[i].b64);
    }
    free(cl);
    free(th);
    curl_global_cleanup();
    return nbad || (check && ok != G.clients * G.requests) ? 1 : 0;
}
