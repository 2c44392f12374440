/* hub.c - a Hugging Face hub client on libcurl (contract in hub.h).
 *
 * Design:
 * 1. Redirects by hand (CURLOPT_FOLLOWLOCATION off): each hop is a new
 *    request whose Authorization header is decided from that hop's origin
 *    (scheme, host, port) against the endpoint's. libcurl's own
 *    CURLOPT_UNRESTRICTED_AUTH logic is not relied on. X-Linked-Etag and
 *    X-Linked-Size are taken from the hub's 302 (the CDN does not send them).
 * 2. Bodies go to FILE.part opened for append; with bytes already there a
 *    Range request asks for the rest. A 206 appends, a 200 (server ignored
 *    the range) starts the file over, a 416 drops the .part and retries.
 *    A transfer cut short (CURLE_PARTIAL_FILE, a receive error, fewer bytes
 *    than announced) is retried from where it stopped, 3 times per call.
 * 3. Completion is decided by size (X-Linked-Size, else Content-Length)
 *    then by SHA-256 when the hub gave one; only then the rename. A wrong
 *    hash deletes the .part: a bad mirror cannot leave half a model behind.
 * 4. Every input size is bounded: the listing (HUB_MAX_LISTING), URLs and
 *    header values (fixed buffers, longer ones are errors), redirect hops (8).
 */
#include "hub/hub.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clip/pytorch.h"
#include "util/fsutil.h"
#include "util/sha256.h"

#define URL_MAX 4096

static const char *const weight_names[] = {"model.safetensors", "open_clip_model.safetensors",
                                           "pytorch_model.bin", "open_clip_pytorch_model.bin"};
static const char *const side_names[] = {
    "config.json",          "preprocessor_config.json", "vocab.json",
    "merges.txt",           "tokenizer.json",           "tokenizer_config.json",
    "special_tokens_map.json", "open_clip_config.json", "bpe_simple_vocab_16e6.txt.gz"};

struct hub {
    CURL *c;                    /* one handle, reused (keeps connections) */
    char endpoint[URL_MAX];     /* without a trailing slash */
    const char *token;          /* NULL or non-empty */
    const struct hub_opts *o;   /* progress callback */
};

/* What one request (one hop) saw, plus where its body goes. */
struct xfer {
    long status;                /* of the last response */
    char location[URL_MAX];     /* Location of a 3xx */
    char linked_etag[96];       /* X-Linked-Etag seen on any hop */
    uint64_t linked_size;       /* X-Linked-Size seen on any hop, 0 if none */
    uint64_t length;            /* Content-Length of the last response, 0 if none */
    int too_long;               /* a header value did not fit */
    FILE *out;                  /* the .part file, or NULL: body in mem */
    uint64_t base;              /* bytes of the .part before this request */
    uint64_t got;               /* body bytes written by this request */
    int started;                /* first body byte of a 2xx seen */
    char *mem;                  /* in-memory body (the listing) */
    size_t mlen, mcap;          /* used / allocated */
    int io_fail;                /* a write failed (errno kept) */
    int io_errno;               /* errno of that write */
    struct hub *h;              /* for progress */
    const char *file;           /* for progress */
};

int hub_repo_valid(const char *s)
{
    const char *slash = s ? strchr(s, '/') : NULL;
    if (!slash || strchr(slash + 1, '/'))
        return 0;
    size_t a = (size_t)(slash - s), b = strlen(slash + 1);
    if (a == 0 || b == 0 || a > 96 || b > 96)
        return 0;
    if ((a == 1 && s[0] == '.') || (a == 2 && !strncmp(s, "..", 2)) ||
        !strcmp(slash + 1, ".") || !strcmp(slash + 1, ".."))
        return 0;
    for (const char *p = s; *p; p++)
        if (p != slash && !((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                            (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-'))
            return 0;
    return 1;
}

int hub_cache_root(char *buf, size_t n, struct err *err)
{
    const char *x = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int k;
    if (x && x[0] == '/')
        k = snprintf(buf, n, "%s/imgsearch/models", x);
    else if (home && *home)
        k = snprintf(buf, n, "%s/.cache/imgsearch/models", home);
    else
        return err_set(err, ERR_BAD_PATH, "no cache folder: set XDG_CACHE_HOME or HOME, or "
                       "give --dir");
    if (k < 0 || (size_t)k >= n)
        return err_set(err, ERR_BAD_PATH, "cache folder path too long");
    return 0;
}

int hub_cache_dir(const char *repo, char *buf, size_t n, struct err *err)
{
    if (!hub_repo_valid(repo))
        return err_set(err, ERR_INVALID_ARGUMENT, "'%s' is not a hub repo name (OWNER/NAME)",
                       repo ? repo : "");
    char root[URL_MAX];
    int rc = hub_cache_root(root, sizeof root, err);
    if (rc)
        return rc;
    int k = snprintf(buf, n, "%s/%s", root, repo);
    if (k < 0 || (size_t)k >= n)
        return err_set(err, ERR_BAD_PATH, "cache folder path too long");
    return 0;
}

int hub_dir_has_weights(const char *dir)
{
    char p[URL_MAX];
    for (size_t i = 0; i < sizeof weight_names / sizeof *weight_names; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, weight_names[i]);
        if (fs_exists(p))
            return 1;
    }
    return 0;
}

/* ---- one request ------------------------------------------------------- */

static void hval(char *dst, size_t n, const char *v, size_t len, int *too_long)
{
    while (len && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' '))
        len--;
    while (len && *v == ' ')
        v++, len--;
    if (len >= n) {
        *too_long = 1;
        len = 0;
    }
    memcpy(dst, v, len);
    dst[len] = 0;
}

static size_t on_header(char *b, size_t sz, size_t nm, void *ud)
{
    struct xfer *x = ud;
    size_t len = sz * nm;
    char num[32];
    if (len >= 5 && !strncmp(b, "HTTP/", 5)) { /* a new response */
        x->location[0] = 0;
        x->length = 0;
    } else if (len > 9 && !strncasecmp(b, "location:", 9)) {
        hval(x->location, sizeof x->location, b + 9, len - 9, &x->too_long);
    } else if (len > 14 && !strncasecmp(b, "x-linked-etag:", 14)) {
        hval(x->linked_etag, sizeof x->linked_etag, b + 14, len - 14, &x->too_long);
    } else if (len > 14 && !strncasecmp(b, "x-linked-size:", 14)) {
        hval(num, sizeof num, b + 14, len - 14, &x->too_long);
        x->linked_size = strtoull(num, NULL, 10);
    } else if (len > 15 && !strncasecmp(b, "content-length:", 15)) {
        hval(num, sizeof num, b + 15, len - 15, &x->too_long);
        x->length = strtoull(num, NULL, 10);
    }
    return len;
}

static size_t on_body(char *b, size_t sz, size_t nm, void *ud)
{
    struct xfer *x = ud;
    size_t len = sz * nm;
    curl_easy_getinfo(x->h->c, CURLINFO_RESPONSE_CODE, &x->status);
    if (x->status != 200 && x->status != 206)
        return len; /* an error page or a redirect's body: dropped */
    if (!x->started) {
        x->started = 1;
        if (x->status == 200 && x->out && x->base) { /* the range was ignored */
            if (ftruncate(fileno(x->out), 0) != 0 || fseek(x->out, 0, SEEK_SET) != 0)
                return 0;
            x->base = 0;
        }
    }
    if (x->out) {
        if (fwrite(b, 1, len, x->out) != len) {
            x->io_fail = 1;
            x->io_errno = errno;
            return 0;
        }
    } else {
        if (x->mlen + len > HUB_MAX_LISTING)
            return 0;
        if (x->mlen + len + 1 > x->mcap) {
            size_t nc = (x->mlen + len + 1) * 2;
            char *p = realloc(x->mem, nc);
            if (!p)
                return 0;
            x->mem = p;
            x->mcap = nc;
        }
        memcpy(x->mem + x->mlen, b, len);
        x->mlen += len;
        x->mem[x->mlen] = 0;
    }
    x->got += len;
    return len;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)ut, (void)un;
    struct xfer *x = ud;
    if (x->out && x->h->o && x->h->o->progress && x->started) {
        uint64_t total = x->linked_size ? x->linked_size : (dt > 0 ? x->base + (uint64_t)dt : 0);
        x->h->o->progress(x->h->o->progress_ctx, x->file, x->base + (uint64_t)dn, total);
    }
    return 0;
}

/* 1 when url has the endpoint's scheme, host and port. */
static int same_origin(const char *url, const char *endpoint)
{
    CURLU *a = curl_url(), *b = curl_url();
    int same = 0;
    if (a && b && !curl_url_set(a, CURLUPART_URL, url, 0) &&
        !curl_url_set(b, CURLUPART_URL, endpoint, 0)) {
        static const CURLUPart parts[] = {CURLUPART_SCHEME, CURLUPART_HOST, CURLUPART_PORT};
        same = 1;
        for (int i = 0; i < 3 && same; i++) {
            char *pa = NULL, *pb = NULL;
            curl_url_get(a, parts[i], &pa, CURLU_DEFAULT_PORT);
            curl_url_get(b, parts[i], &pb, CURLU_DEFAULT_PORT);
            same = pa && pb && !strcasecmp(pa, pb);
            curl_free(pa);
            curl_free(pb);
        }
    }
    curl_url_cleanup(a);
    curl_url_cleanup(b);
    return same;
}

/* Resolves a Location (absolute or relative) against base into out. */
static int resolve_location(const char *base, const char *loc, char *out, size_t n)
{
    CURLU *u = curl_url();
    char *s = NULL;
    int rc = -1;
    if (u && !curl_url_set(u, CURLUPART_URL, base, 0) &&
        !curl_url_set(u, CURLUPART_URL, loc, 0) && !curl_url_get(u, CURLUPART_URL, &s, 0) &&
        strlen(s) < n && (!strncmp(s, "http://", 7) || !strncmp(s, "https://", 8))) {
        strcpy(out, s);
        rc = 0;
    }
    curl_free(s);
    curl_url_cleanup(u);
    return rc;
}

/* GET url, following up to 8 redirects by hand. On return x->status is the
 * final status; a transport failure is ERR_UNAVAILABLE with curl's words
 * (x->got tells whether bytes arrived). */
static int get(struct hub *h, const char *url0, struct xfer *x, struct err *err)
{
    char url[URL_MAX], ebuf[CURL_ERROR_SIZE];
    snprintf(url, sizeof url, "%s", url0);
    for (int hop = 0; hop < 8; hop++) {
        struct curl_slist *hd = NULL;
        char auth[1200];
        if (h->token && same_origin(url, h->endpoint)) {
            snprintf(auth, sizeof auth, "Authorization: Bearer %s", h->token);
            hd = curl_slist_append(hd, auth);
        }
        char range[64];
        if (x->out && x->base) {
            snprintf(range, sizeof range, "%llu-", (unsigned long long)x->base);
            curl_easy_setopt(h->c, CURLOPT_RANGE, range);
        } else {
            curl_easy_setopt(h->c, CURLOPT_RANGE, NULL);
        }
        ebuf[0] = 0;
        curl_easy_setopt(h->c, CURLOPT_URL, url);
        curl_easy_setopt(h->c, CURLOPT_HTTPHEADER, hd);
        curl_easy_setopt(h->c, CURLOPT_ERRORBUFFER, ebuf);
        curl_easy_setopt(h->c, CURLOPT_HEADERDATA, x);
        curl_easy_setopt(h->c, CURLOPT_WRITEDATA, x);
        curl_easy_setopt(h->c, CURLOPT_XFERINFODATA, x);
        x->status = 0;
        x->started = 0;
        CURLcode cc = curl_easy_perform(h->c);
        curl_easy_getinfo(h->c, CURLINFO_RESPONSE_CODE, &x->status);
        curl_easy_setopt(h->c, CURLOPT_HTTPHEADER, NULL);
        curl_slist_free_all(hd);
        if (x->io_fail)
            return err_set(err, err_code_of_errno(x->io_errno, 0), "writing %s: %s", x->file,
                           strerror(x->io_errno));
        if (x->too_long)
            return err_set(err, ERR_UNAVAILABLE, "%s: a response header is too long", url);
        if (cc != CURLE_OK)
            return err_set(err, ERR_UNAVAILABLE, "cannot get %s: %s", url,
                           ebuf[0] ? ebuf : curl_easy_strerror(cc));
        if (x->status >= 300 && x->status < 400 && x->location[0]) {
            char next[URL_MAX];
            if (resolve_location(url, x->location, next, sizeof next))
                return err_set(err, ERR_UNAVAILABLE, "%s: redirect to an unusable URL", url);
            snprintf(url, sizeof url, "%s", next);
            continue;
        }
        return 0;
    }
    return err_set(err, ERR_UNAVAILABLE, "%s: more than 8 redirects", url0);
}

static int status_error(int status, const char *url, const char *repo, struct err *err)
{
    if (status == 401 || status == 403)
        return err_set(err, ERR_UNAUTHORIZED, "%s answered %d: the repo %s is private or gated; "
                       "set HF_TOKEN to an access token that can read it", url, status, repo);
    if (status == 404)
        return err_set(err, ERR_NOT_FOUND, "%s answered 404: no such repo or file on the hub; "
                       "check the name (for example %s)", url, HUB_DEFAULT_REPO);
    return err_set(err, ERR_UNAVAILABLE, "%s answered %d; try again later, or set HF_ENDPOINT "
                   "(--hub) to a mirror", url, status);
}

static void offline_hint(struct err *err)
{
    size_t l = strlen(err->msg);
    snprintf(err->msg + l, sizeof err->msg - l, "; check the network, or set HF_ENDPOINT (--hub) "
             "to a mirror; a model already in the cache works offline");
}

/* ---- files ------------------------------------------------------------- */

static int file_sha256(const char *path, char hex[SHA256_HEX_LEN + 1], struct err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(err, ERR_IO, "%s: %s", path, strerror(errno));
    struct sha256 c;
    sha256_init(&c);
    static __thread uint8_t buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        sha256_update(&c, buf, n);
    int bad = ferror(f);
    fclose(f);
    sha256_final_hex(&c, hex);
    return bad ? err_set(err, ERR_IO, "%s: read error", path) : 0;
}

static uint64_t file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

/* The expected SHA-256 from an X-Linked-Etag ("hex", W/"hex" or hex), or
 * NULL when it is not one. */
static const char *etag_sha(char *etag)
{
    char *p = etag;
    if (!strncmp(p, "W/", 2))
        p += 2;
    if (*p == '"')
        p++;
    size_t n = 0;
    while ((p[n] >= '0' && p[n] <= '9') || (p[n] >= 'a' && p[n] <= 'f'))
        n++;
    if (n != SHA256_HEX_LEN)
        return NULL;
    p[n] = 0;
    return p;
}

/* Downloads one file of repo to dir/file through dir/file.part. */
static int fetch_file(struct hub *h, const char *repo, const char *rev, const char *file,
                      const char *dir, struct err *err)
{
    char url[URL_MAX], fin[URL_MAX], part[URL_MAX + 8];
    snprintf(fin, sizeof fin, "%s/%s", dir, file);
    if (fs_exists(fin))
        return 0;
    snprintf(part, sizeof part, "%s.part", fin);
    int k = snprintf(url, sizeof url, "%s/%s/resolve/%s/%s", h->endpoint, repo, rev, file);
    if (k < 0 || (size_t)k >= sizeof url)
        return err_set(err, ERR_INVALID_ARGUMENT, "URL too long");
    struct xfer x;
    int rc = 0;
    for (int attempt = 0;; attempt++) {
        memset(&x, 0, sizeof x);
        x.h = h;
        x.file = file;
        x.base = file_size(part);
        x.out = fopen(part, "ab");
        if (!x.out)
            return err_set(err, err_code_of_errno(errno, 0), "%s: %s", part, strerror(errno));
        rc = get(h, url, &x, err);
        if (fclose(x.out) != 0 && !rc)
            rc = err_set(err, ERR_IO, "%s: %s", part, strerror(errno));
        if (rc && x.io_fail)
            return rc;
        uint64_t have = file_size(part);
        if (!rc && x.status == 416) { /* our .part does not fit the file: start over */
            unlink(part);
            if (attempt < 3)
                continue;
        }
        if (!rc && x.status != 200 && x.status != 206)
            return status_error((int)x.status, url, repo, err);
        uint64_t want = x.linked_size ? x.linked_size : x.length ? x.base + x.length : 0;
        if (!rc && want && have < want)
            rc = err_set(err, ERR_UNAVAILABLE, "%s: the connection ended at byte %llu of %llu",
                         url, (unsigned long long)have, (unsigned long long)want);
        if (!rc && want && have > want) {
            unlink(part);
            return err_set(err, ERR_CORRUPT, "%s: got %llu bytes, the hub announced %llu; the "
                           "download was removed, run the fetch again", url,
                           (unsigned long long)have, (unsigned long long)want);
        }
        if (!rc)
            break;
        if (attempt >= 3) {
            offline_hint(err);
            return rc; /* the .part stays: the next fetch resumes it */
        }
    }
    const char *sha = etag_sha(x.linked_etag);
    if (sha) {
        char hex[SHA256_HEX_LEN + 1];
        if ((rc = file_sha256(part, hex, err)))
            return rc;
        if (strcmp(hex, sha)) {
            unlink(part);
            return err_set(err, ERR_CORRUPT, "%s: SHA-256 %s, but the hub says %s; the download "
                           "was removed (nothing was kept), run the fetch again", url, hex, sha);
        }
    }
    if (rename(part, fin) != 0)
        return err_set(err, ERR_IO, "%s: %s", fin, strerror(errno));
    return 0;
}

/* The listing: the repo's file names (a JSON array owned by *root) and its
 * commit. */
static int list_repo(struct hub *h, const char *repo, json_t **root, char rev[64],
                     struct err *err)
{
    char url[URL_MAX];
    int k = snprintf(url, sizeof url, "%s/api/models/%s", h->endpoint, repo);
    if (k < 0 || (size_t)k >= sizeof url)
        return err_set(err, ERR_INVALID_ARGUMENT, "URL too long");
    struct xfer x;
    memset(&x, 0, sizeof x);
    x.h = h;
    x.file = "listing";
    int rc = get(h, url, &x, err);
    if (rc) {
        offline_hint(err);
        goto done;
    }
    if (x.status != 200) {
        rc = status_error((int)x.status, url, repo, err);
        goto done;
    }
    json_error_t je;
    *root = x.mem ? json_loadb(x.mem, x.mlen, 0, &je) : NULL;
    if (!*root || !json_is_array(json_object_get(*root, "siblings"))) {
        rc = err_set(err, ERR_UNAVAILABLE, "%s: not a hub model listing (no siblings)", url);
        goto done;
    }
    const char *sha = json_string_value(json_object_get(*root, "sha"));
    size_t n = 0;
    while (sha && ((sha[n] >= '0' && sha[n] <= '9') || (sha[n] >= 'a' && sha[n] <= 'f')))
        n++;
    snprintf(rev, 64, "%s", sha && n == 40 && !sha[n] ? sha : "main");
done:
    free(x.mem);
    return rc;
}

static int listed(json_t *root, const char *name)
{
    json_t *s;
    size_t i;
    json_array_foreach(json_object_get(root, "siblings"), i, s) {
        const char *f = json_string_value(json_object_get(s, "rfilename"));
        if (f && !strcmp(f, name))
            return 1;
    }
    return 0;
}

int hub_fetch(const char *repo, const char *dir, const struct hub_opts *o,
              const char **weights, struct err *err)
{
    static const struct hub_opts none = {0};
    if (!o)
        o = &none;
    if (weights)
        *weights = NULL;
    if (!hub_repo_valid(repo))
        return err_set(err, ERR_INVALID_ARGUMENT, "'%s' is not a hub repo name (OWNER/NAME, "
                       "for example %s)", repo, HUB_DEFAULT_REPO);
    struct hub h = {.o = o};
    const char *ep = o->endpoint ? o->endpoint : getenv("HF_ENDPOINT");
    if (!ep || !*ep)
        ep = HUB_DEFAULT_ENDPOINT;
    size_t el = strlen(ep);
    while (el && ep[el - 1] == '/')
        el--;
    if (el == 0 || el >= sizeof h.endpoint - 512 ||
        (strncmp(ep, "http://", 7) && strncmp(ep, "https://", 8)))
        return err_set(err, ERR_INVALID_ARGUMENT, "hub endpoint '%s' is not an http(s) URL", ep);
    memcpy(h.endpoint, ep, el);
    h.endpoint[el] = 0;
    h.token = o->token ? o->token : getenv("HF_TOKEN");
    if (h.token && (!*h.token || strlen(h.token) > 1000 || strpbrk(h.token, "\r\n")))
        h.token = NULL;
    json_t *root = NULL;
    char rev[64];
    int rc = 0;
    if (!(h.c = curl_easy_init()))
        return err_set(err, ERR_NOMEM, "cannot start libcurl");
    curl_easy_setopt(h.c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h.c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h.c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h.c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h.c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h.c, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(h.c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h.c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(h.c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h.c, CURLOPT_USERAGENT, "imgsearch");
    curl_easy_setopt(h.c, CURLOPT_NOSIGNAL, 1L);
    if ((rc = list_repo(&h, repo, &root, rev, err)) || (rc = fs_mkdirs(dir, err)))
        goto done;
    const char *w = NULL;
    for (size_t i = 0; !w && i < sizeof weight_names / sizeof *weight_names; i++)
        if (listed(root, weight_names[i]))
            w = weight_names[i];
    if (!w) {
        rc = err_set(err, ERR_CORRUPT, "%s/api/models/%s lists no model.safetensors, "
                     "open_clip_model.safetensors or pytorch_model.bin: not a CLIP repo this "
                     "program can load", h.endpoint, repo);
        goto done;
    }
    for (size_t i = 0; i < sizeof side_names / sizeof *side_names; i++)
        if (listed(root, side_names[i]) && (rc = fetch_file(&h, repo, rev, side_names[i], dir, err)))
            goto done;
    char conv[URL_MAX], bin[URL_MAX];
    snprintf(conv, sizeof conv, "%s/model.safetensors", dir);
    int is_bin = strstr(w, ".bin") != NULL;
    if (is_bin && fs_exists(conv)) { /* converted by an earlier fetch */
        w = "model.safetensors";
        goto done;
    }
    if ((rc = fetch_file(&h, repo, rev, w, dir, err)))
        goto done;
    if (is_bin) {
        snprintf(bin, sizeof bin, "%s/%s", dir, w);
        if ((rc = pt_convert(bin, conv, err)))
            goto done;
        unlink(bin);
        w = "model.safetensors";
    }
done:
    if (weights && !rc)
        *weights = w;
    json_decref(root);
    curl_easy_cleanup(h.c);
    return rc;
}
