/* server.c - libmicrohttpd glue: listening, the request lifecycle,
 * authentication, the worker pool, sending replies, loading and the
 * graceful shutdown.
 *
 * 1. The daemon runs its own poll threads (MHD_USE_INTERNAL_POLLING_THREAD
 *    | MHD_USE_EPOLL, a thread pool) and we bind the socket ourselves, so
 *    port 0 works and the real port is known before anything is printed.
 * 2. Everything that can be refused is refused on the first call, before
 *    the body is read: unknown route (404), method (405), API key (401),
 *    loading (503), and what body.c refuses (413, 415, framing).
 *    libmicrohttpd then closes the connection without reading the body.
 * 3. Bodies are read by body.c; handlers (api_*.c, run through router.c)
 *    see the request only through request.c and answer through reply.c.
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
 *    each), every reply made is sent (2 s at most for clients that do not
 *    read), and MHD_stop_daemon closes every connection, half-sent bodies
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
#include "util/utf8.h"

enum {
    HTTP_TRIM_AFTER = 1 << 20,       /* malloc_trim after a body this large */
    HTTP_MMAP_THRESHOLD = 64 << 10,  /* allocations mmapped from this size */
    HTTP_ARENA_MAX = 8,              /* malloc arenas at most */
};


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

/* r is past its body: it will get a reply, which shutdown waits to send
 * (counted once, until on_completed) */
static void count_answering(struct http_req *r)
{
    if (!r->answering) {
        r->answering = 1;
        atomic_fetch_add(&r->s->answering, 1);
    }
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
    MHD_add_response_header(resp, "X-Request-ID", r->rid);
    http__cors_headers(r, resp);
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
    count_answering(r);
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)rp->status, resp);
    MHD_destroy_response(resp);
    r->phase = HTTP__PH_SENT;
    http__guard_phase(r->conn, HTTP__CONN_BUSY);
    return ret;
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
    http__reply_reset(&r->reply);
    free(r);
}

/* 1 for routes that open to everyone whatever --api-key-all says. */
static int open_route(enum http_route rt)
{
    return rt == HTTP_ROUTE_PAGE || rt == HTTP_ROUTE_HEALTH || rt == HTTP_ROUTE_READY ||
           rt == HTTP_ROUTE_OPENAPI || rt == HTTP_ROUTE_DOCS;
}

static int needs_model(enum http_route rt)
{
    return rt != HTTP_ROUTE_PAGE && rt != HTTP_ROUTE_HEALTH && rt != HTTP_ROUTE_METRICS &&
           rt != HTTP_ROUTE_OPENAPI && rt != HTTP_ROUTE_DOCS;
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
    int open = open_route(rt);
    if (!write && (open || !c->api_key_all))
        return 1;
    return presents_key(r);
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
    double wait = http_ratelimit_take(s->rl, key, mono_now());
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
    if (rc == -ERR_METHOD && http__cors_on(s) && !strcmp(method, "OPTIONS")) {
        http__cors_preflight(r); /* before the key: browsers send none with it */
        return;
    }
    if (rc) {
        if (rc == -ERR_METHOD)
            snprintf(r->reply.allow, sizeof r->reply.allow, "%s", r->m.allow);
        if (rc == -ERR_NOT_FOUND && r->m.route == HTTP_ROUTE_NONE)
            snprintf(e.msg, sizeof e.msg, "no such endpoint: %s %.300s", method, url);
        http__reply_err(r, &e);
        return;
    }
    if (http__query_check(r, &e)) {
        http__reply_err(r, &e);
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
    if (http__takes_body(r))
        http__body_begin(r);
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
    count_answering(r);
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
        r->t0 = mono_now();
        snprintf(r->method, sizeof r->method, "%s", method);
        http__request_id(r);
        r->reply.fd = -1;
        r->phase = HTTP__PH_BODY;
        *ptr = r;
        atomic_fetch_add(&s->inflight, 1);
        http__guard_phase(c, HTTP__CONN_BODY); /* the head is complete */
        if (!http__refuse_framing(r)) {
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
        return http__body_absorb(r, data, n) ? MHD_NO : MHD_YES;
    }
    http__body_end(r);
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
        http_metrics_request(&s->metrics, r->m.route, r->reply.status, mono_now() - r->t0);
    http__access_log(r);
    size_t received = r->received;
    if (r->answering)
        atomic_fetch_sub(&s->answering, 1);
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
    s->t_start = mono_now();
    http_metrics_init(&s->metrics);
    pthread_mutex_init(&s->qmu, NULL);
    pthread_cond_init(&s->qcv, NULL);
    pthread_mutex_init(&s->upload_mu, NULL);
    atomic_init(&s->state, HTTP__LOADING);
    http__guard_init(s);
    http__reqlog_init(s);
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
        http__logf(s, "warning: no API key: anyone who can reach %s can add and delete items "
                 "(PUT, DELETE /items; --api-key sets one)", s->url);
    if (!keyed || !c->api_key_all) {
        char lim[120] = "not rate limited";
        if (s->rl)
            snprintf(lim, sizeof lim, "limited to %g requests/s per address, burst %d",
                     c->rate_limit, c->rate_burst);
        http__logf(s, "warning: inference (/extract-features, /search, /classify) and /metrics "
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
    http__logf(ctx, "%s", msg);
}

/* The upload folder (--uploads, or STORE.images next to an embedded store:
 * where uploads always were, so existing stores keep their images), made
 * if missing and resolved; and the store's folder, which messages hide. */
static int open_uploads(struct http_server *s, struct err *err)
{
    const struct http_config *c = &s->cfg;
    int rc = 0;
    char *up = NULL;
    if (c->uploads && *c->uploads) {
        up = strdup(c->uploads);
    } else if (store_is_url(c->store)) {
        return err_set(err, ERR_INVALID_ARGUMENT,
                       "a database store needs an upload folder (--uploads DIR)");
    } else {
        size_t ul = strlen(c->store) + 8;
        if ((up = malloc(ul)))
            snprintf(up, ul, "%s.images", c->store);
    }
    if (!up)
        return err_set(err, ERR_NOMEM, "out of memory");
    if (!store_is_url(c->store)) {
        char *sd = strdup(c->store), *slash = sd ? strrchr(sd, '/') : NULL;
        if (slash)
            *slash = 0;
        s->store_dir = sd ? realpath(slash ? (*sd ? sd : "/") : ".", NULL) : NULL;
        free(sd);
    }
    rc = fs_mkdirs(up, err);
    if (!rc) {
        s->upload_dir = realpath(up, NULL);
        if (!s->upload_dir)
            rc = err_set(err, err_code_of_errno(errno, 0), "%s: %s", up, strerror(errno));
    }
    free(up);
    return rc;
}

/* Catalog sync: the watcher asks the precompute for a rescan. */
static void watch_changed(void *ctx)
{
    struct http_server *s = ctx;
    http_precompute_rescan(s->pc);
}

static void watch_log(void *ctx, const char *msg)
{
    http__logf(ctx, "%s", msg);
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
        http__logf(s, "catalog sync: %d folders watched with inotify, rescan every %d s",
              ingest_watch_count(s->watch), wo.rescan_s);
    return rc;
}

/* The thumbnail cache (thumbs.c): STORE.thumbs next to an embedded store;
 * a database store has no folder of its own, so UPLOADS/.thumbs. */
static int thumbs_open(struct http_server *s, struct err *err)
{
    int url = store_is_url(s->cfg.store);
    const char *base = url ? s->upload_dir : s->cfg.store;
    size_t n = strlen(base) + 9;
    char *dir = malloc(n);
    if (!dir)
        return err_set(err, ERR_NOMEM, "out of memory");
    snprintf(dir, n, url ? "%s/.thumbs" : "%s.thumbs", base);
    int rc = http_thumbs_open(&s->thumbs, dir, HTTP_THUMBS_DEFAULT_BYTES, err);
    free(dir);
    return rc;
}

/* Opens the store. A database that does not answer yet (started after the
 * service, or restarting) is tried again, 100 ms doubling to 2 s, until it
 * answers or http_server_cancel_load; /ready says 503 meanwhile. */
static int open_store(struct http_server *s, const struct store_options *so, struct err *err)
{
    int wait_ms = 100, said = 0;
    for (;;) {
        int rc = store_open(&s->store, s->cfg.store, so, err);
        if (rc != -ERR_UNAVAILABLE || !store_is_url(s->cfg.store))
            return rc;
        if (!said++)
            http__logf(s, "%s: waiting for the database", err->msg);
        for (int t = 0; t < wait_ms; t += 50) {
            if (atomic_load(&s->load_cancel))
                return rc;
            usleep(50 * 1000);
        }
        wait_ms = wait_ms < 1000 ? wait_ms * 2 : 2000;
    }
}

void http_server_cancel_load(struct http_server *s)
{
    atomic_store(&s->load_cancel, 1);
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
    /* PostgreSQL: a connection per worker, plus the precompute worker's */
    struct store_options so = {.model = s->model_id, .dim = s->pipe->dim, .create = 1,
                               .former_model = clip_model_former_id(s->pipe->model),
                               .pool = c->threads + 2, .no_migrate = c->no_migrate};
    if ((rc = open_store(s, &so, err)))
        goto fail;
    if ((rc = open_uploads(s, err)))
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
        .lease_seconds = c->lease_seconds,
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
    http__logf(s, "model %s (%s) loaded in %.2f s", s->model_id, desc, mono_now() - s->t_start);
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
        http__logf(s, "shutdown: answered %d queued request%s 503", n, n > 1 ? "s" : "");
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
        double until = mono_now() + grace_s;
        while (atomic_load(&s->inflight) > 0 && mono_now() < until)
            usleep(10000);
        if (atomic_load(&s->inflight) > 0)
            http__logf(s, "shutdown: %d requests still running after %d s: closing them",
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
        /* every reply made (200s of the workers, 503s of the queue) goes
         * out before the daemon closes the connections; a client that does
         * not read its reply gets 2 s */
        until = mono_now() + 2;
        while (atomic_load(&s->answering) > 0 && mono_now() < until)
            usleep(2000);
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
