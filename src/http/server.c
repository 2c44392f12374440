/* server.c - libmicrohttpd glue: listening, request lifecycle, body
 * collection with limits, authentication, the worker pool, replies, and
 * the graceful shutdown.
 *
 * 1. The daemon runs its own poll threads (MHD_USE_INTERNAL_POLLING_THREAD
 *    | MHD_USE_EPOLL, a thread pool) and we bind the socket ourselves, so
 *    port 0 works and the real port is known before anything is printed.
 * 2. Everything that can be refused is refused on the first call, before
 *    the body is read: unknown route (404), method (405), API key (401),
 *    loading (503), declared length over the limit (413), content type
 *    (415). libmicrohttpd then closes the connection without reading the
 *    body. A chunked body over the limit is drained and answered 413.
 * 3. Bodies: multipart/form-data goes through MHD_create_post_processor
 *    into http_parts; raw image/... and JSON bodies are appended to one
 *    buffer (MHD gives no post processor for them).
 * 4. Model and store work runs on worker threads: the connection is
 *    suspended (MHD_ALLOW_SUSPEND_RESUME), the request queued, and the
 *    worker resumes it when the reply is ready; MHD then calls us again
 *    and we queue the reply. A full queue answers 503 at once.
 * 5. URL unescaping is turned off so ids may contain encoded slashes; the
 *    router and http__query decode exactly once.
 * 6. Shutdown: MHD_quiesce_daemon stops accepting, requests already begun
 *    get up to --shutdown-grace-s (5 s) to finish (new ones on kept-alive
 *    connections get 503). Then the requests still queued for a worker are
 *    answered 503, the ones a worker runs are waited for (one forward pass
 *    each), and MHD_stop_daemon closes every connection, half-sent bodies
 *    included; the background threads stop after it.
 * 7. Hostile clients. libmicrohttpd 0.9.75 gives an idle timeout, a total
 *    and a per-address connection cap, and no deadline on a request head;
 *    and it calls us only once the head is complete. So:
 *    - MHD_OPTION_PER_IP_CONNECTION_LIMIT (--max-per-address, 64): one
 *      address cannot take the whole --max-connections (1024) pool, so a
 *      slowloris from one address leaves room for everyone else. Behind a
 *      reverse proxy every client has the proxy's address: raise it there.
 *    - A whole-head deadline (--head-timeout-s, 10 s) and a true request
 *      deadline (--request-timeout-s) that trickled bytes do not reset:
 *      conn.c tracks every connection (MHD_OPTION_NOTIFY_CONNECTION) and a
 *      sweeper shuts down the sockets past their deadline.
 *    - Framing: two different Content-Length headers, Content-Length with
 *      Transfer-Encoding, or a transfer coding other than chunked get 400
 *      and Connection: close on the first call, before any body is read
 *      (request smuggling; MHD would take the first Content-Length, or wait
 *      for a body it cannot delimit until the idle timeout).
 *    - What libmicrohttpd refuses itself gets its own reply, with no hook
 *      for ours: a request line without spaces is closed at once, an
 *      unknown HTTP version gets its HTML 505, a chunk line (size plus
 *      extensions) longer than the 64 KB connection buffer its HTML 500,
 *      a malformed Content-Length its HTML 400. A request line that never
 *      ends (binary junk, a TLS hello) is closed at the head deadline.
 *    - Its log lines (one per abandoned or refused connection) go through
 *      conn.c's throttle: a few per 10 s, then one summary line.
 *    - Inference routes (/extract-features[-batch], /search, /classify)
 *      take a token from the client address's bucket (ratelimit.c;
 *      --rate-limit 10/s, --rate-burst 2 x rate) or get 429 with
 *      Retry-After; a request with the valid API key is not limited.
 *
 * Size: one file (about 1,300 lines): the request lifecycle (begin, body,
 * suspend, resume, reply, completion) is one state machine over MHD's
 * callbacks; connection guarding lives in conn.c, rate limits in
 * ratelimit.c. The reply/parse helpers still to move into a file of their
 * own (issue 10) will bring it under 1,200.
 */
#include "http/http_int.h"
#include "http/thumbs.h"
#include "ingest/watch.h"

#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util/fsutil.h"
#include "util/jsonscan.h"
#include "util/utf8.h"

enum {
    HTTP_TRIM_AFTER = 1 << 20,       /* malloc_trim after a body this large */
    HTTP_MMAP_THRESHOLD = 64 << 10,  /* allocations mmapped from this size */
    HTTP_ARENA_MAX = 8,              /* malloc arenas at most */
};

double http__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void logf_(struct http_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(struct http_server *s, const char *fmt, ...)
{
    if (!s->cfg.log)
        return;
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s->cfg.log(msg);
}

void http_config_defaults(struct http_config *c)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1)
        cores = 1;
    if (!c->listen || !*c->listen)
        c->listen = "127.0.0.1:8001";
    if (!c->max_batch)
        c->max_batch = 16;
    if (c->batch_wait_ms < 0)
        c->batch_wait_ms = 5;
    if (!c->batch_limit)
        c->batch_limit = 64;
    if (!c->max_body)
        c->max_body = (size_t)20 << 20;
    if (!c->threads)
        c->threads = cores * 2 < 4 ? 4 : (int)(cores * 2 > 32 ? 32 : cores * 2);
    if (!c->poll_threads)
        c->poll_threads = cores > 4 ? 4 : (int)cores;
    if (!c->max_connections)
        c->max_connections = 1024;
    if (!c->idle_timeout_s)
        c->idle_timeout_s = 30;
    if (!c->request_timeout_s)
        c->request_timeout_s = 60;
    if (!c->max_queue)
        c->max_queue = 1024;
    if (!c->max_per_address)
        c->max_per_address = 64;
    if (!c->head_timeout_s)
        c->head_timeout_s = 10;
    if (c->rate_limit == 0)
        c->rate_limit = 10;
    if (!c->rate_burst)
        c->rate_burst = c->rate_limit >= 1 ? (int)(2 * c->rate_limit + 0.5) : 1;
    if (!c->shutdown_grace_s)
        c->shutdown_grace_s = 5;
}

/* ---- replies ------------------------------------------------------------ */

static void reply_reset(struct http_reply *rp)
{
    if (rp->body && !rp->body_static)
        free(rp->body);
    if (rp->fd >= 0)
        close(rp->fd);
    memset(rp, 0, sizeof *rp);
    rp->fd = -1;
}

void http__reply_bytes(struct http_req *r, int status, const char *ctype, char *buf,
                       size_t len, int is_static)
{
    struct http_reply *rp = &r->reply;
    int retry = rp->retry_after, chal = rp->challenge;
    char allow[sizeof rp->allow];
    memcpy(allow, rp->allow, sizeof allow);
    reply_reset(rp);
    rp->retry_after = retry;
    rp->challenge = chal;
    memcpy(rp->allow, allow, sizeof allow);
    rp->status = status;
    rp->ctype = ctype;
    rp->body = buf;
    rp->len = len;
    rp->body_static = is_static;
}

void http__reply_json(struct http_req *r, int status, json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(j);
    if (!s) {
        /* jansson says NULL both for no memory and for a string that is not
         * UTF-8 or a NaN; every text we put in a reply is checked or
         * repaired first, so this is our bug, not the client's and not
         * necessarily memory */
        static const char bad[] =
            "{\"error\":{\"code\":\"internal\",\"message\":\"cannot encode the reply as JSON\"}}";
        http__reply_bytes(r, 500, "application/json", (char *)bad, sizeof bad - 1, 1);
        logf_(r->s, "%s: cannot encode the reply as JSON", http_route_name(r->m.route));
        return;
    }
    size_t n = strlen(s);
    s[n] = 0;
    http__reply_bytes(r, status, "application/json", s, n, 0);
}

/* Replaces every occurrence of from in buf (NUL-terminated, room n) by to. */
static void replace_all(char *buf, size_t n, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to);
    if (fl < 2)
        return;
    for (char *p = strstr(buf, from); p; p = strstr(p + tl, from)) {
        size_t rest = strlen(p + fl);
        if ((size_t)(p - buf) + tl + rest + 1 > n)
            return;
        memmove(p + tl, p + fl, rest + 1);
        memcpy(p, to, tl);
    }
}

void http__scrub(const struct http_server *s, const char *msg, char *out, size_t n, int server_side)
{
    snprintf(out, n, "%s", msg);
    /* the longest first: the upload folder lies inside the store's folder */
    if (s->upload_dir)
        replace_all(out, n, s->upload_dir, "<uploads>");
    for (int i = 0; i < s->nroots; i++)
        replace_all(out, n, s->roots[i], "<catalog>");
    if (s->store_dir)
        replace_all(out, n, s->store_dir, "<store>");
    if (s->cfg.store)
        replace_all(out, n, s->cfg.store, "<store>");
    if (s->cfg.model)
        replace_all(out, n, s->cfg.model, "<model>");
    for (int i = 0; i < s->cfg.ncatalogs; i++)
        replace_all(out, n, s->cfg.catalogs[i], "<catalog>");
    if (!server_side)
        return;
    /* a server-side failure names no file of ours at all: any absolute
     * path left ("/a/b...") becomes <path> */
    char in[ERR_MSG_MAX + 64];
    snprintf(in, sizeof in, "%s", out);
    size_t w = 0;
    for (size_t i = 0; in[i] && w + 7 < n;) {
        int word_start = i == 0 || strchr(" '\"(=", in[i - 1]);
        size_t len = strcspn(in + i, " '\",:)");
        if (in[i] == '/' && word_start && memchr(in + i + 1, '/', len - 1)) {
            memcpy(out + w, "<path>", 6);
            w += 6;
            i += len;
        } else {
            out[w++] = in[i++];
        }
    }
    out[w] = 0;
}

void http__reply_err(struct http_req *r, const struct err *e)
{
    int code = e && e->code ? e->code : ERR_INTERNAL;
    const char *msg = e && e->msg[0] ? e->msg : "unknown error";
    int status = err_http_status(code);
    if (code == ERR_UNAVAILABLE && !r->reply.retry_after)
        r->reply.retry_after = 1;
    /* what the client sees: no server path, and valid UTF-8 whatever the
     * message quotes (an id or a value as it came) */
    char clean[ERR_MSG_MAX + 64];
    http__scrub(r->s, msg, clean, sizeof clean, status >= 500);
    char *fixed = utf8_repair(clean);
    json_t *m = json_string(fixed ? fixed : "(the message is not valid UTF-8)");
    free(fixed);
    json_t *j = json_pack("{s:{s:s,s:o}}", "error", "code", err_str(code), "message", m);
    http__reply_json(r, status, j);
    if (status >= 500 && code != ERR_UNAVAILABLE)
        logf_(r->s, "%s %s: %d %s", http_route_name(r->m.route), r->m.id ? r->m.id : "", status,
              msg);
}

void http__reply_errf(struct http_req *r, int code, const char *fmt, ...)
{
    struct err e = {code, ""};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.msg, sizeof e.msg, fmt, ap);
    va_end(ap);
    http__reply_err(r, &e);
}

static enum MHD_Result send_reply(struct http_req *r)
{
    struct http_reply *rp = &r->reply;
    struct MHD_Response *resp;
    if (rp->fd >= 0) {
        resp = MHD_create_response_from_fd64(rp->fd_len, rp->fd);
        if (resp)
            rp->fd = -1; /* MHD closes it */
    } else {
        resp = MHD_create_response_from_buffer(rp->len, rp->body,
                                               rp->body_static ? MHD_RESPMEM_PERSISTENT
                                                               : MHD_RESPMEM_MUST_FREE);
        if (resp && !rp->body_static)
            rp->body = NULL; /* MHD frees it */
    }
    if (!resp)
        return MHD_NO;
    if (rp->ctype)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, rp->ctype);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL,
                            rp->cache ? "max-age=300" : "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (rp->allow[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, rp->allow);
    if (rp->etag[0]) /* thumbs.c */
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, rp->etag);
    if (rp->retry_after) {
        char v[16];
        snprintf(v, sizeof v, "%d", rp->retry_after);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, v);
    }
    if (rp->challenge)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                "Bearer realm=\"imgsearch\"");
    if (atomic_load(&r->s->draining) || rp->close)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)rp->status, resp);
    MHD_destroy_response(resp);
    r->phase = HTTP__PH_SENT;
    http__guard_phase(r->conn, HTTP__CONN_BUSY);
    return ret;
}

/* ---- request data ------------------------------------------------------- */

const char *http__header(struct http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

static const char *keep(struct http_req *r, char *s)
{
    if (r->nstrs == r->capstrs) {
        int nc = r->capstrs ? r->capstrs * 2 : 8;
        char **v = realloc(r->strs, sizeof *v * (size_t)nc);
        if (!v) {
            free(s);
            return NULL;
        }
        r->strs = v;
        r->capstrs = nc;
    }
    r->strs[r->nstrs++] = s;
    return s;
}

const char *http__query(struct http_req *r, const char *key)
{
    const char *raw = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
    if (!raw)
        return NULL;
    char *d;
    if (http_pct_decode(raw, strlen(raw), 1, &d, NULL))
        return NULL;
    return keep(r, d);
}

struct each_ctx {
    struct http_req *r;
    const char *key;
    int (*fn)(void *, const char *);
    void *ctx;
    int rc;
};

static enum MHD_Result each_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
    (void)kind;
    struct each_ctx *e = cls;
    if (!key || strcmp(key, e->key) != 0)
        return MHD_YES;
    char *d;
    if (http_pct_decode(value ? value : "", value ? strlen(value) : 0, 1, &d, NULL))
        return MHD_YES;
    const char *v = keep(e->r, d);
    if (v && (e->rc = e->fn(e->ctx, v)))
        return MHD_NO;
    return MHD_YES;
}

/* Every query parameter must decode (no bad escape, no %00) to valid UTF-8:
 * a value that cannot be read is refused at the door rather than dropped
 * (a dropped filter returns another tenant's items). */
struct query_check {
    struct err err; /* the first problem */
    int rc;
};

static enum MHD_Result check_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    (void)kind;
    struct query_check *q = cls;
    const char *what[2] = {key ? key : "", value ? value : ""};
    for (int i = 0; i < 2; i++) {
        char *d = NULL;
        struct err e = {0};
        int rc = http_pct_decode(what[i], strlen(what[i]), 1, &d, &e);
        size_t bad = 0;
        if (!rc && utf8_check((const uint8_t *)d, strlen(d), &bad))
            rc = err_set(&e, ERR_INVALID_UTF8, "is not valid UTF-8 once decoded (byte %zu)", bad);
        free(d);
        if (rc) {
            /* the key is named only when it is readable itself */
            if (i == 1 && utf8_valid(key) && strlen(key) <= 64)
                err_prefix(&e, "query parameter '%s'", key);
            else
                err_prefix(&e, "a query parameter %s", i ? "value" : "name");
            q->err = e;
            q->rc = rc;
            return MHD_NO;
        }
    }
    return MHD_YES;
}

int http__query_each(struct http_req *r, const char *key,
                     int (*fn)(void *ctx, const char *value), void *ctx)
{
    struct each_ctx e = {r, key, fn, ctx, 0};
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, each_arg, &e);
    return e.rc;
}

json_t *http__json(struct http_req *r, struct err *err)
{
    if (r->json)
        return r->json;
    if (r->kind != HTTP_BODY_JSON) {
        err_set(err, ERR_INVALID_ARGUMENT, "the body is not JSON");
        return NULL;
    }
    /* the tree jansson would build is bounded by the route, before it is
     * built: about 40 bytes a value, a value can be 2 bytes of body */
    struct http_json_limits lim = http__json_limits(r->s, r->m.route);
    struct json_shape sh;
    json_shape_scan((const char *)r->body, r->body_len, lim.values, lim.depth, &sh);
    if (sh.values > lim.values) {
        err_set(err, ERR_TOO_LARGE, "the JSON body has over %zu values, the most %s reads",
                lim.values, http_route_name(r->m.route));
        return NULL;
    }
    if (sh.depth > lim.depth) {
        err_set(err, ERR_INVALID_ARGUMENT, "the JSON body is nested over %d levels deep",
                lim.depth);
        return NULL;
    }
    json_error_t je;
    json_t *j = json_loadb((const char *)r->body, r->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        err_set(err, ERR_INVALID_ARGUMENT, "the body is not valid JSON: line %d column %d: %s",
                je.line, je.column, je.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        err_set(err, ERR_INVALID_ARGUMENT, "the JSON body must be an object");
        return NULL;
    }
    return r->json = j;
}

/* ---- request lifecycle --------------------------------------------------- */

static void req_free(struct http_req *r)
{
    if (!r)
        return;
    if (r->pp)
        MHD_destroy_post_processor(r->pp);
    http_parts_free(&r->parts);
    http_match_clear(&r->m);
    free(r->body);
    json_decref(r->json);
    for (int i = 0; i < r->nstrs; i++)
        free(r->strs[i]);
    free(r->strs);
    reply_reset(&r->reply);
    free(r);
}

static int needs_model(enum http_route rt)
{
    return rt != HTTP_ROUTE_PAGE && rt != HTTP_ROUTE_HEALTH && rt != HTTP_ROUTE_METRICS;
}

static int takes_body(const struct http_req *r)
{
    return r->m.method == HTTP_M_POST || r->m.method == HTTP_M_PUT;
}

/* 1 when an API key is configured and the request carries it. */
static int presents_key(struct http_req *r)
{
    const struct http_config *c = &r->s->cfg;
    if (!c->api_key || !*c->api_key)
        return 0;
    size_t n = 0;
    const char *k = http_bearer_token(http__header(r, MHD_HTTP_HEADER_AUTHORIZATION), &n);
    if (!k && (k = http__header(r, "X-API-Key")))
        n = strlen(k);
    return k && http_key_equal(k, n, c->api_key);
}

/* 1 when the request carries the API key (or none is needed). */
static int authorized(struct http_req *r)
{
    const struct http_config *c = &r->s->cfg;
    if (!c->api_key || !*c->api_key)
        return 1;
    enum http_route rt = r->m.route;
    int write = r->m.method == HTTP_M_PUT || r->m.method == HTTP_M_DELETE;
    int open = rt == HTTP_ROUTE_PAGE || rt == HTTP_ROUTE_HEALTH;
    if (!write && (open || !c->api_key_all))
        return 1;
    return presents_key(r);
}

static enum MHD_Result on_post_part(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *filename, const char *ctype,
                                    const char *enc, const char *data, uint64_t off,
                                    size_t size)
{
    (void)kind;
    (void)enc;
    struct http_req *r = cls;
    if (r->body_rc)
        return MHD_YES;
    struct err e = {0};
    int rc = http_parts_add(&r->parts, key, filename, ctype, data, off, size, &e);
    if (rc) {
        r->body_rc = rc;
        r->body_err = e;
    }
    return MHD_YES;
}

struct framing {
    int ncl, nte;       /* Content-Length, Transfer-Encoding headers */
    const char *cl;     /* the first Content-Length */
    int cl_differ;      /* another one differs from it */
    const char *te;     /* the last Transfer-Encoding */
};

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    (void)kind;
    struct framing *f = cls;
    if (!key || !value)
        return MHD_YES;
    if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) {
        if (!f->ncl++)
            f->cl = value;
        else if (strcmp(f->cl, value) != 0)
            f->cl_differ = 1;
    } else if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        f->nte++;
        f->te = value;
    }
    return MHD_YES;
}

/* Refuses a request whose body length is ambiguous or cannot be found
 * (design note 7): 400 and Connection: close. Returns 1 when refused. */
static int refuse_framing(struct http_req *r)
{
    struct framing f = {0};
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, count_framing, &f);
    size_t tl = f.te ? strlen(f.te) : 0;
    while (tl && (f.te[tl - 1] == ' ' || f.te[tl - 1] == '\t'))
        tl--;
    if (f.cl_differ)
        http__reply_errf(r, ERR_INVALID_ARGUMENT,
                         "%d Content-Length headers with different values: the body's length "
                         "is ambiguous", f.ncl);
    else if (f.ncl && f.nte)
        http__reply_errf(r, ERR_INVALID_ARGUMENT,
                         "both Content-Length and Transfer-Encoding: the body's length is "
                         "ambiguous");
    else if (f.nte > 1 || (f.nte && (tl != 7 || strncasecmp(f.te, "chunked", 7) != 0)))
        http__reply_errf(r, ERR_INVALID_ARGUMENT,
                         "Transfer-Encoding '%.60s' is not supported: send the body with "
                         "Content-Length or Transfer-Encoding: chunked", f.te);
    else
        return 0;
    r->reply.close = 1;
    return 1;
}

static int inference_route(enum http_route rt)
{
    return rt == HTTP_ROUTE_FEATURES || rt == HTTP_ROUTE_FEATURES_BATCH ||
           rt == HTTP_ROUTE_SEARCH || rt == HTTP_ROUTE_CLASSIFY;
}

/* Takes a token from the client address's bucket for an inference route;
 * answers 429 with Retry-After when there is none. A request with the API
 * key is not limited. */
static void limit_rate(struct http_req *r)
{
    struct http_server *s = r->s;
    if (!s->rl || !inference_route(r->m.route) || presents_key(r))
        return;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    uint8_t key[HTTP_RATELIMIT_KEY];
    http_ratelimit_key(ci ? ci->client_addr : NULL, key);
    double wait = http_ratelimit_take(s->rl, key, http__now());
    if (wait <= 0)
        return;
    atomic_fetch_add(&s->metrics.rejected_rate, 1);
    int secs = (int)wait;
    r->reply.retry_after = secs < wait ? secs + 1 : secs < 1 ? 1 : secs;
    http__reply_errf(r, ERR_TOO_MANY_REQUESTS,
                     "over the limit of %g requests per second from one address (burst %d): "
                     "retry in %d s", s->cfg.rate_limit, s->cfg.rate_burst,
                     r->reply.retry_after);
}

/* First call: route, refuse early, prepare the body. Leaves a reply in r
 * when refused. */
static void begin(struct http_req *r, const char *url, const char *method)
{
    struct http_server *s = r->s;
    struct err e = {0};
    size_t bad = 0;
    if (utf8_check((const uint8_t *)url, strlen(url), &bad)) {
        http__reply_errf(r, ERR_INVALID_UTF8, "the request path is not valid UTF-8 (byte %zu)", bad);
        return;
    }
    int rc = http_route_match(method, url, &r->m, &e);
    if (rc) {
        if (rc == -ERR_METHOD)
            memcpy(r->reply.allow, r->m.allow, sizeof r->reply.allow);
        if (rc == -ERR_NOT_FOUND && r->m.route == HTTP_ROUTE_NONE)
            snprintf(e.msg, sizeof e.msg, "no such endpoint: %s %.300s", method, url);
        http__reply_err(r, &e);
        return;
    }
    struct query_check qc = {.rc = 0};
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, check_arg, &qc);
    if (qc.rc) {
        http__reply_err(r, &qc.err);
        return;
    }
    if (atomic_load(&s->draining)) {
        r->reply.retry_after = 1;
        http__reply_errf(r, ERR_UNAVAILABLE, "the server is shutting down");
        return;
    }
    if (!authorized(r)) {
        r->reply.challenge = 1;
        http__reply_errf(r, ERR_UNAUTHORIZED,
                         "a valid API key is required (Authorization: Bearer KEY or X-API-Key)");
        return;
    }
    if (needs_model(r->m.route) && atomic_load(&s->state) != HTTP__READY) {
        r->reply.retry_after = atomic_load(&s->state) == HTTP__LOADING ? 1 : 30;
        if (atomic_load(&s->state) == HTTP__LOADING)
            http__reply_errf(r, ERR_UNAVAILABLE, "the model is loading; retry shortly");
        else
            http__reply_errf(r, ERR_UNAVAILABLE, "the model failed to load: %s", s->load_error);
        return;
    }
    if (!takes_body(r))
        return;
    const char *cl = http__header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (!errno && end != cl && n > s->cfg.max_body) {
            http__reply_errf(r, ERR_TOO_LARGE, "the body of %llu bytes is over the limit of %zu",
                             n, s->cfg.max_body);
            return;
        }
    }
    r->kind = http_body_kind_of(http__header(r, MHD_HTTP_HEADER_CONTENT_TYPE));
    if (r->kind == HTTP_BODY_OTHER) {
        http__reply_errf(r, ERR_UNSUPPORTED_FORMAT,
                         "Content-Type %.100s is not accepted: send multipart/form-data, "
                         "application/json or an image/* body",
                         http__header(r, MHD_HTTP_HEADER_CONTENT_TYPE));
        return;
    }
    if (r->kind == HTTP_BODY_MULTIPART) {
        r->parts.max_bytes = s->cfg.max_body;
        r->parts.max_parts = (size_t)s->cfg.batch_limit + 64;
        r->pp = MHD_create_post_processor(r->conn, 64 * 1024, on_post_part, r);
        if (!r->pp)
            http__reply_errf(r, ERR_INVALID_ARGUMENT,
                             "multipart/form-data without a boundary parameter");
    }
}

/* A chunk of body. Returns 0, or -1 to drop the connection. */
static int absorb(struct http_req *r, const char *data, size_t n)
{
    struct http_server *s = r->s;
    r->received += n;
    if (s->cfg.request_timeout_s && http__now() - r->t0 > s->cfg.request_timeout_s) {
        logf_(s, "cut a request whose body took over %d s", s->cfg.request_timeout_s);
        return -1;
    }
    if (r->received > s->cfg.max_body) {
        if (!r->body_rc) {
            r->body_rc = -ERR_TOO_LARGE;
            err_set(&r->body_err, ERR_TOO_LARGE, "the body is over the limit of %zu bytes",
                    s->cfg.max_body);
        }
        /* drain a modest excess to answer 413; a flood gets the door */
        return r->received > 4 * s->cfg.max_body + (1u << 20) ? -1 : 0;
    }
    if (r->body_rc)
        return 0;
    if (r->pp) {
        if (MHD_post_process(r->pp, data, n) != MHD_YES && !r->body_rc) {
            r->body_rc = -ERR_INVALID_ARGUMENT;
            err_set(&r->body_err, ERR_INVALID_ARGUMENT, "malformed multipart/form-data body");
        }
        return 0;
    }
    if (r->body_len + n + 1 > r->body_cap) {
        size_t nc = r->body_cap ? r->body_cap : 16384;
        while (nc < r->body_len + n + 1)
            nc *= 2;
        if (nc > s->cfg.max_body + 1) /* received <= max_body: never more than that */
            nc = s->cfg.max_body + 1;
        uint8_t *b = realloc(r->body, nc);
        if (!b) {
            r->body_rc = -ERR_NOMEM;
            err_set(&r->body_err, ERR_NOMEM, "out of memory for a %zu-byte body",
                    r->body_len + n);
            return 0;
        }
        r->body = b;
        r->body_cap = nc;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = 0;
    return 0;
}

static void end_body(struct http_req *r)
{
    if (r->pp) {
        MHD_destroy_post_processor(r->pp);
        r->pp = NULL;
    }
    if (r->body_rc) {
        http__reply_err(r, &r->body_err);
        return;
    }
    if (takes_body(r) && r->kind == HTTP_BODY_NONE && r->received > 0) {
        http__reply_errf(r, ERR_UNSUPPORTED_FORMAT,
                         "a body needs a Content-Type: multipart/form-data, application/json "
                         "or image/*");
        return;
    }
    /* multipart fields other than images are text: ids, filters, metadata */
    for (size_t i = 0; i < r->parts.n; i++) {
        const struct http_part *p = &r->parts.v[i];
        if (!utf8_valid(p->name)) {
            http__reply_errf(r, ERR_INVALID_UTF8, "a multipart field name is not valid UTF-8");
            return;
        }
        int image = p->filename || !strcmp(p->name, "image") || !strcmp(p->name, "images") ||
                    !strcmp(p->name, "file");
        if (!image && utf8_check(p->data ? p->data : (const uint8_t *)"", p->len, NULL)) {
            http__reply_errf(r, ERR_INVALID_UTF8, "multipart field '%.60s' is not valid UTF-8",
                             p->name);
            return;
        }
    }
}

/* Queues r for a worker, or answers 503 when the queue is full. */
static enum MHD_Result submit(struct http_req *r)
{
    struct http_server *s = r->s;
    pthread_mutex_lock(&s->qmu);
    int cancel = s->qcancel;
    int full = s->qlen >= s->cfg.max_queue || s->qstop;
    if (!full && !cancel)
        s->qlen++; /* reserve */
    pthread_mutex_unlock(&s->qmu);
    if (cancel) {
        r->reply.retry_after = 1;
        http__reply_errf(r, ERR_UNAVAILABLE, "the server is shutting down");
        return send_reply(r);
    }
    if (full) {
        atomic_fetch_add(&s->metrics.rejected_busy, 1);
        r->reply.retry_after = 1;
        http__reply_errf(r, ERR_UNAVAILABLE, "the server is busy (%d requests queued)",
                         s->cfg.max_queue);
        return send_reply(r);
    }
    r->phase = HTTP__PH_WORKER;
    http__guard_phase(r->conn, HTTP__CONN_BUSY);
    MHD_suspend_connection(r->conn);
    pthread_mutex_lock(&s->qmu);
    r->next = NULL;
    if (s->qtail)
        s->qtail->next = r;
    else
        s->qhead = r;
    s->qtail = r;
    pthread_cond_signal(&s->qcv);
    pthread_mutex_unlock(&s->qmu);
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *data, size_t *size, void **ptr)
{
    (void)version;
    struct http_server *s = cls;
    struct http_req *r = *ptr;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        r->s = s;
        r->conn = c;
        r->t0 = http__now();
        r->reply.fd = -1;
        r->phase = HTTP__PH_BODY;
        *ptr = r;
        atomic_fetch_add(&s->inflight, 1);
        http__guard_phase(c, HTTP__CONN_BODY); /* the head is complete */
        if (!refuse_framing(r)) {
            begin(r, url, method);
            if (!r->reply.status)
                limit_rate(r);
        }
        return r->reply.status ? send_reply(r) : MHD_YES;
    }
    switch (r->phase) {
    case HTTP__PH_DONE:
        return send_reply(r);
    case HTTP__PH_SENT:
    case HTTP__PH_WORKER:
        *size = 0; /* an early reply is out; ignore what still arrives */
        return MHD_YES;
    case HTTP__PH_BODY:
        break;
    }
    if (*size) {
        size_t n = *size;
        *size = 0;
        return absorb(r, data, n) ? MHD_NO : MHD_YES;
    }
    end_body(r);
    if (r->reply.status)
        return send_reply(r);
    if (http__inline_route(r->m.route)) {
        http__dispatch(r);
        return send_reply(r);
    }
    return submit(r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **ptr,
                         enum MHD_RequestTerminationCode toe)
{
    (void)toe;
    struct http_server *s = cls;
    http__guard_phase(c, HTTP__CONN_HEAD); /* a kept-alive connection waits for a head */
    struct http_req *r = *ptr;
    if (!r)
        return;
    *ptr = NULL;
    if (r->reply.status)
        http_metrics_request(&s->metrics, r->m.route, r->reply.status, http__now() - r->t0);
    size_t received = r->received;
    req_free(r);
    atomic_fetch_sub(&s->inflight, 1);
    /* A large body leaves the arenas of the threads that parsed it full of
     * free chunks glibc keeps; give them back (about a millisecond) so
     * memory after a burst returns to what the service holds at rest. */
    if (received >= HTTP_TRIM_AFTER)
        malloc_trim(0);
}

static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct http_server *s = cls;
    if (!s->cfg.log)
        return;
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = 0;
    char line[1100];
    snprintf(line, sizeof line, "libmicrohttpd: %s", msg);
    http__guard_log(s, line);
}

/* ---- worker pool ---------------------------------------------------------- */

static void *worker(void *arg)
{
    struct http_server *s = arg;
    struct http_worker w = {0};
    for (;;) {
        pthread_mutex_lock(&s->qmu);
        while (!s->qhead && !s->qstop)
            pthread_cond_wait(&s->qcv, &s->qmu);
        struct http_req *r = s->qhead;
        if (!r) {
            pthread_mutex_unlock(&s->qmu);
            break;
        }
        s->qhead = r->next;
        if (!s->qhead)
            s->qtail = NULL;
        pthread_mutex_unlock(&s->qmu);
        if (!w.px && atomic_load(&s->state) == HTTP__READY) {
            size_t px = 3 * (size_t)s->pipe->size * (size_t)s->pipe->size;
            w.cap = s->cfg.max_batch;
            w.px = malloc(sizeof(float) * px * (size_t)w.cap);
            w.vecs = malloc(sizeof(float) * (size_t)s->pipe->dim * (size_t)w.cap);
        }
        r->w = &w;
        if (!w.px || !w.vecs)
            http__reply_errf(r, ERR_NOMEM, "out of memory for the worker's buffers");
        else
            http__dispatch(r);
        r->w = NULL;
        r->phase = HTTP__PH_DONE;
        /* r may be completed and freed by a poll thread from here on */
        MHD_resume_connection(r->conn);
        pthread_mutex_lock(&s->qmu);
        s->qlen--; /* counts queued and running requests */
        pthread_mutex_unlock(&s->qmu);
    }
    free(w.px);
    free(w.vecs);
    return NULL;
}

/* ---- listening ------------------------------------------------------------ */

static int bind_listen(struct http_server *s, const char *listen_on, struct err *err)
{
    char host[256];
    const char *colon = strrchr(listen_on, ':');
    if (!colon || colon == listen_on || !colon[1])
        return err_set(err, ERR_INVALID_ARGUMENT, "--listen '%s' is not HOST:PORT", listen_on);
    size_t hl = (size_t)(colon - listen_on);
    if (hl >= sizeof host)
        return err_set(err, ERR_INVALID_ARGUMENT, "--listen host too long");
    memcpy(host, listen_on, hl);
    host[hl] = 0;
    char *h = host;
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
        h[hl - 1] = 0;
        h++;
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535)
        return err_set(err, ERR_INVALID_ARGUMENT, "--listen port '%s' is not 0..65535", colon + 1);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int g = getaddrinfo(*h ? h : NULL, colon + 1, &hints, &ai);
    if (g)
        return err_set(err, ERR_INVALID_ARGUMENT, "--listen %s: %s", listen_on, gai_strerror(g));
    int fd = -1, last = 0;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 511) == 0)
            break;
        last = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd < 0)
        return err_set(err, ERR_IO, "cannot listen on %s: %s", listen_on, strerror(last));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int real_port = (int)port;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        real_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                   : ((struct sockaddr_in *)&ss)->sin_port);
    int v6 = strchr(h, ':') != NULL;
    snprintf(s->url, sizeof s->url, "http://%s%.200s%s:%d", v6 ? "[" : "", *h ? h : "0.0.0.0",
             v6 ? "]" : "", real_port);
    s->listen_fd = fd;
    return 0;
}

int http_server_start(struct http_server **out, const struct http_config *cfg,
                      struct err *err)
{
    *out = NULL;
    struct http_server *s = calloc(1, sizeof *s);
    if (!s)
        return err_set(err, ERR_NOMEM, "out of memory");
    s->cfg = *cfg;
    http_config_defaults(&s->cfg);
    s->listen_fd = -1;
    s->t_start = http__now();
    http_metrics_init(&s->metrics);
    pthread_mutex_init(&s->qmu, NULL);
    pthread_cond_init(&s->qcv, NULL);
    pthread_mutex_init(&s->upload_mu, NULL);
    atomic_init(&s->state, HTTP__LOADING);
    http__guard_init(s);
    json_object_seed(0); /* once, before threads race to do it */
    /* Request bodies and decoded images (64 KB and more) are mmapped, so
     * freeing one returns it to the system at once; a fixed threshold,
     * since glibc's sliding one climbs to 32 MB after the first big free.
     * Fewer arenas than threads bound what free lists can strand. */
    mallopt(M_MMAP_THRESHOLD, HTTP_MMAP_THRESHOLD);
    mallopt(M_ARENA_MAX, HTTP_ARENA_MAX);
    int rc = bind_listen(s, s->cfg.listen, err);
    if (rc)
        goto fail;
    if (s->cfg.rate_limit > 0 &&
        (rc = http_ratelimit_new(&s->rl, s->cfg.rate_limit,
                                 s->cfg.rate_burst > 0 ? s->cfg.rate_burst : 1, 65536, err)))
        goto fail;
    if ((rc = http__guard_start(s, err)))
        goto fail;
    s->workers = calloc((size_t)s->cfg.threads, sizeof *s->workers);
    if (!s->workers) {
        rc = err_set(err, ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (; s->nworkers < s->cfg.threads; s->nworkers++)
        if (pthread_create(&s->workers[s->nworkers], NULL, worker, s) != 0) {
            rc = err_set(err, ERR_INTERNAL, "cannot start worker thread %d", s->nworkers + 1);
            goto fail;
        }
    s->d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
            MHD_USE_ERROR_LOG,
        0, NULL, NULL, on_request, s,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
        MHD_OPTION_LISTEN_SOCKET, s->listen_fd,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)s->cfg.poll_threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->cfg.max_connections,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT,
            (unsigned)(s->cfg.max_per_address > 0 ? s->cfg.max_per_address : 0),
        MHD_OPTION_NOTIFY_CONNECTION, http__guard_notify, s,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->cfg.idle_timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 * 1024,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, s,
        MHD_OPTION_END);
    if (!s->d) {
        rc = err_set(err, ERR_INTERNAL, "libmicrohttpd did not start on %s", s->url);
        goto fail;
    }
    const struct http_config *c = &s->cfg;
    int keyed = c->api_key && *c->api_key;
    if (!keyed)
        logf_(s, "warning: no API key: anyone who can reach %s can add and delete items "
                 "(PUT, DELETE /items; --api-key sets one)", s->url);
    if (!keyed || !c->api_key_all) {
        char lim[120] = "not rate limited";
        if (s->rl)
            snprintf(lim, sizeof lim, "limited to %g requests/s per address, burst %d",
                     c->rate_limit, c->rate_burst);
        logf_(s, "warning: inference (/extract-features, /search, /classify) and /metrics "
                 "answer without a key%s; inference is %s",
              keyed ? " (--api-key-all closes them)" : "", lim);
    }
    *out = s;
    return 0;
fail:
    http_server_free(s, NULL);
    return rc;
}

const char *http_server_url(const struct http_server *s)
{
    return s->url;
}

/* ---- loading ----------------------------------------------------------------- */

static int add_root(struct http_server *s, const char *dir, const char *prefix, struct err *err)
{
    char *real = realpath(dir, NULL);
    if (!real)
        return err_set(err, err_code_of_errno(errno, 1), "--catalog %s: %s", dir, strerror(errno));
    struct stat sb;
    if (stat(real, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        free(real);
        return err_set(err, ERR_BAD_PATH, "--catalog %s: not a folder", dir);
    }
    char **r = realloc(s->roots, sizeof *r * (size_t)(s->nroots + 1));
    char **p = realloc(s->prefixes, sizeof *p * (size_t)(s->nroots + 1));
    if (r)
        s->roots = r;
    if (p)
        s->prefixes = p;
    char *pf = strdup(prefix);
    if (!r || !p || !pf) {
        free(real);
        free(pf);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    s->roots[s->nroots] = real;
    s->prefixes[s->nroots] = pf;
    s->nroots++;
    return 0;
}

static void precompute_log(void *ctx, const char *msg)
{
    logf_(ctx, "%s", msg);
}

/* Catalog sync: the watcher asks the precompute for a rescan. */
static void watch_changed(void *ctx)
{
    struct http_server *s = ctx;
    http_precompute_rescan(s->pc);
}

static void watch_log(void *ctx, const char *msg)
{
    logf_(ctx, "%s", msg);
}

static int watch_start(struct http_server *s, struct err *err)
{
    const struct http_config *c = &s->cfg;
    if (!s->nroots)
        return 0;
    struct ingest_watch_opts wo = {
        .roots = (const char *const *)s->roots,
        .nroots = s->nroots,
        .inotify = !c->no_inotify,
        .debounce_ms = 300,
        .rescan_s = c->rescan_interval_s < 0 ? 0 : c->rescan_interval_s ? c->rescan_interval_s : 60,
        .changed = watch_changed,
        .log = watch_log,
        .ctx = s,
    };
    int rc = ingest_watch_start(&s->watch, &wo, err);
    if (!rc)
        logf_(s, "catalog sync: %d folders watched with inotify, rescan every %d s",
              ingest_watch_count(s->watch), wo.rescan_s);
    return rc;
}

/* The thumbnail cache next to the store (thumbs.c). */
static int thumbs_open(struct http_server *s, struct err *err)
{
    size_t n = strlen(s->cfg.store) + 8;
    char *dir = malloc(n);
    if (!dir)
        return err_set(err, ERR_NOMEM, "out of memory");
    snprintf(dir, n, "%s.thumbs", s->cfg.store);
    int rc = http_thumbs_open(&s->thumbs, dir, HTTP_THUMBS_DEFAULT_BYTES, err);
    free(dir);
    return rc;
}

int http_server_load(struct http_server *s, struct err *err)
{
    const struct http_config *c = &s->cfg;
    int rc = 0;
    if (c->load_delay_ms > 0)
        usleep((useconds_t)c->load_delay_ms * 1000);
    struct pipe_opts po = c->pipe;
    if ((rc = pipe_open(&s->pipe, c->model, &po, err)))
        goto fail;
    s->model_id = clip_model_id(s->pipe->model);
    /* catalog roots; several roots prefix ids with their folder names */
    for (int i = 0; i < c->ncatalogs; i++) {
        char prefix[300] = "";
        if (c->ncatalogs > 1) {
            char *real = realpath(c->catalogs[i], NULL);
            const char *base = real ? strrchr(real, '/') : NULL;
            snprintf(prefix, sizeof prefix, "%s/", base && base[1] ? base + 1 : "catalog");
            free(real);
            for (int j = 0; j < s->nroots; j++)
                if (!strcmp(s->prefixes[j], prefix)) {
                    rc = err_set(err, ERR_INVALID_ARGUMENT,
                                 "--catalog %s and %s have the same folder name: ids would clash",
                                 c->catalogs[j], c->catalogs[i]);
                    goto fail;
                }
        }
        if ((rc = add_root(s, c->catalogs[i], prefix, err)))
            goto fail;
    }
    struct store_options so = {.model = s->model_id, .dim = s->pipe->dim, .create = 1};
    if ((rc = store_open(&s->store, c->store, &so, err)))
        goto fail;
    /* uploaded images live next to the store and are served like a catalog */
    size_t ul = strlen(c->store) + 8;
    char *up = malloc(ul);
    if (!up) {
        rc = err_set(err, ERR_NOMEM, "out of memory");
        goto fail;
    }
    snprintf(up, ul, "%s.images", c->store);
    char *sd = strdup(c->store), *slash = sd ? strrchr(sd, '/') : NULL;
    if (slash)
        *slash = 0;
    s->store_dir = sd ? realpath(slash ? (*sd ? sd : "/") : ".", NULL) : NULL;
    free(sd);
    rc = fs_mkdirs(up, err);
    if (!rc) {
        s->upload_dir = realpath(up, NULL);
        if (!s->upload_dir)
            rc = err_set(err, err_code_of_errno(errno, 0), "%s: %s", up, strerror(errno));
    }
    free(up);
    if (rc)
        goto fail;
    if ((rc = thumbs_open(s, err))) /* thumbs.c: STORE.thumbs */
        goto fail;
    struct pipe_sched_opts bo = {.max_batch = c->max_batch,
                                   .max_wait_us = c->batch_wait_ms * 1000};
    if ((rc = pipe_sched_new(&s->sched, s->pipe, &bo, err)))
        goto fail;
    struct http_precompute_opts pco = {
        .roots = (const char *const *)s->roots,
        .prefixes = (const char *const *)s->prefixes,
        .nroots = s->nroots,
        .batch = c->max_batch,
        .pause_ms = c->precompute_pause_ms,
        .log = precompute_log,
        .log_ctx = s,
    };
    if ((rc = http_precompute_start(&s->pc, s->store, s->pipe, s->sched, &pco, err)))
        goto fail;
    if ((rc = watch_start(s, err))) /* catalog sync (ingest/watch.c) */
        goto fail;
    atomic_store(&s->state, HTTP__READY);
    char desc[256];
    clip_model_describe(s->pipe->model, desc, sizeof desc);
    logf_(s, "model %s (%s) loaded in %.2f s", s->model_id, desc, http__now() - s->t_start);
    return 0;
fail:
    snprintf(s->load_error, sizeof s->load_error, "%s", err->msg);
    atomic_store(&s->state, HTTP__FAILED);
    return rc;
}

/* ---- shutdown ------------------------------------------------------------------ */

/* Answers 503 to every request still waiting for a worker; from now on the
 * queue takes no more. */
static void cancel_queued(struct http_server *s)
{
    pthread_mutex_lock(&s->qmu);
    s->qcancel = 1;
    struct http_req *list = s->qhead;
    s->qhead = s->qtail = NULL;
    pthread_mutex_unlock(&s->qmu);
    int n = 0;
    for (struct http_req *r = list, *next; r; r = next, n++) {
        next = r->next;
        r->reply.retry_after = 1;
        http__reply_errf(r, ERR_UNAVAILABLE, "the server is shutting down");
        r->phase = HTTP__PH_DONE;
        MHD_resume_connection(r->conn); /* r may be freed from here on */
        pthread_mutex_lock(&s->qmu);
        s->qlen--;
        pthread_mutex_unlock(&s->qmu);
    }
    if (n)
        logf_(s, "shutdown: answered %d queued request%s 503", n, n > 1 ? "s" : "");
}

void http_server_shutdown(struct http_server *s, int grace_s)
{
    if (!s || s->stopped)
        return;
    s->stopped = 1;
    atomic_store(&s->draining, 1);
    if (s->d) {
        MHD_socket fd = MHD_quiesce_daemon(s->d);
        if (fd != MHD_INVALID_SOCKET)
            close(fd);
        s->listen_fd = -1;
        double until = http__now() + grace_s;
        while (atomic_load(&s->inflight) > 0 && http__now() < until)
            usleep(10000);
        if (atomic_load(&s->inflight) > 0)
            logf_(s, "shutdown: %d requests still running after %d s: closing them",
                  atomic_load(&s->inflight), grace_s);
        cancel_queued(s);
        /* suspended requests must come back before the daemon stops: the
         * ones a worker runs take one forward pass at most */
        for (;;) {
            pthread_mutex_lock(&s->qmu);
            int busy = s->qlen;
            pthread_mutex_unlock(&s->qmu);
            if (!busy)
                break;
            usleep(10000);
        }
        MHD_stop_daemon(s->d);
        s->d = NULL;
    }
    http__guard_stop(s);
    pthread_mutex_lock(&s->qmu);
    s->qstop = 1;
    pthread_cond_broadcast(&s->qcv);
    pthread_mutex_unlock(&s->qmu);
    for (int i = 0; i < s->nworkers; i++)
        pthread_join(s->workers[i], NULL);
    s->nworkers = 0;
    ingest_watch_stop(s->watch); /* before the precompute it calls */
    s->watch = NULL;
    http_precompute_stop(s->pc);
    s->pc = NULL;
    pipe_sched_free(s->sched);
    s->sched = NULL;
}

int http_server_free(struct http_server *s, struct err *err)
{
    if (!s)
        return 0;
    http_server_shutdown(s, s->cfg.shutdown_grace_s > 0 ? s->cfg.shutdown_grace_s : 0);
    http__guard_free(s);
    http_ratelimit_free(s->rl);
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    struct err local;
    int rc = store_close(s->store, err ? err : &local);
    pipe_free(s->pipe);
    for (int i = 0; i < s->nroots; i++) {
        free(s->roots[i]);
        free(s->prefixes[i]);
    }
    free(s->roots);
    free(s->prefixes);
    http_thumbs_free(s->thumbs); /* thumbs.c */
    free(s->upload_dir);
    free(s->store_dir);
    free(s->workers);
    pthread_mutex_destroy(&s->qmu);
    pthread_cond_destroy(&s->qcv);
    pthread_mutex_destroy(&s->upload_mu);
    free(s);
    return rc;
}
