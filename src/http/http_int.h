/* http_int.h - what the files of src/http/ share: the server and request
 * structs, and the contract of each file:
 *   server.c   libmicrohttpd glue: request lifecycle, workers, start/stop
 *   body.c     request bodies: framing, limits, multipart
 *   request.c  what a request carries: query, headers, JSON body, images
 *   reply.c    replies and the JSON values they are made of
 *   router.c   path -> route, route -> handler
 *   api_*.c    one file per resource; they call request.c and reply.c only
 *   conn.c     the connection guard */
#ifndef IMGSEARCH_HTTP_INT_H
#define IMGSEARCH_HTTP_INT_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "util/clock.h"

#include "pipe/sched.h"
#include "http/http.h"
#include "http/metrics.h"
#include "http/parse.h"
#include "http/precompute.h"
#include "http/ratelimit.h"
#include "http/router.h"
#include "pipe/pipe.h"
#include "store/store.h"

enum http__state {
    HTTP__LOADING, /* listening, model not loaded yet */
    HTTP__READY,   /* every route answers */
    HTTP__FAILED,  /* the load failed: model routes answer 503 */
};

struct http__conn; /* one open connection (conn.c) */

/* The connection guard (conn.c): every open connection with its phase, a
 * sweeper thread that closes those past their deadline, and the throttle
 * of connection-level log lines. */
struct http__guard {
    pthread_mutex_t mu;           /* guards what follows */
    pthread_cond_t cv;            /* wakes the sweeper to stop */
    struct http__conn *conns;     /* open connections (a list) */
    int nconns;                   /* their count */
    pthread_t sweeper;            /* the sweeper thread */
    int inited;                   /* mu and cv exist */
    int running;                  /* the sweeper runs */
    int stop;                     /* the sweeper is to exit */
    double log_t0;                /* start of the current log window */
    int log_shown;                /* lines shown in it */
    int log_held;                 /* lines held back in it */
    char log_last[200];           /* the last line held back */
};

struct http_server {
    struct http_config cfg;         /* copy; strings belong to the caller */
    struct MHD_Daemon *d;           /* libmicrohttpd daemon */
    int listen_fd;                  /* our listening socket (-1 once closed) */
    char url[300];                  /* http://host:port */
    atomic_int state;               /* enum http__state */
    atomic_int draining;            /* shutting down: new requests get 503 */
    atomic_int load_cancel;         /* http_server_cancel_load was called */
    atomic_int inflight;            /* requests begun and not completed */
    atomic_int answering;           /* of those, past their body: queued, run
                                     * or with a reply on its way */
    int stopped;                    /* http_server_shutdown ran */
    double t_start;                 /* monotonic seconds at start */
    char load_error[ERR_MSG_MAX];   /* why the load failed */

    /* set by http_server_load before state becomes READY */
    struct pipe *pipe;              /* model + tokenizer */
    struct store *store;            /* the embedded store */
    struct pipe_sched *sched;      /* owns inference: images and texts */
    struct http_precompute *pc;     /* catalog scan + background embedding */
    struct http_thumbs *thumbs;     /* thumbnail cache, STORE.thumbs (thumbs.c) */
    struct ingest_watch *watch;     /* catalog sync: rescans the precompute (ingest/watch.c) */
    const char *model_id;           /* owned by pipe */
    char **roots;                   /* resolved folders /items/{id}/image may serve */
    char **prefixes;                /* id prefix per catalog root */
    int nroots;                     /* catalogs, then the upload folder */
    char *upload_dir;               /* resolved STORE.images */
    char *store_dir;                /* resolved folder of the store (messages hide it) */
    pthread_mutex_t upload_mu;      /* upload files vs. the items that use them */

    /* worker pool */
    pthread_t *workers;             /* cfg.threads threads */
    int nworkers;                   /* started */
    pthread_mutex_t qmu;            /* guards the queue */
    pthread_cond_t qcv;             /* work queued or stopping */
    struct http_req *qhead, *qtail; /* requests waiting for a worker */
    int qlen;                       /* queued, reserved or running */
    int qstop;                      /* workers exit when the queue is empty */

    struct http_metrics metrics;

    /* hostile clients (conn.c, ratelimit.c) */
    struct http__guard guard;       /* open connections, deadlines, log throttle */
    struct http_ratelimit *rl;      /* inference buckets per address; NULL: no limit */
    int qcancel;                    /* shutting down: the queue takes no more (qmu) */

    /* request ids (reqlog.c) */
    char rid_prefix[12];            /* random per start */
    atomic_ullong rid_next;         /* counter after it */
};

/* A worker thread's scratch, reused by every request it runs. */
struct http_worker {
    float *px;    /* max_batch preprocessed images */
    float *vecs;  /* max_batch vectors */
    int cap;      /* images that fit */
};

struct http_reply {
    int status;             /* 0: none yet */
    char *body;             /* malloc'd, or static when body_static */
    size_t len;             /* bytes of body */
    int body_static;        /* body is not to be freed */
    const char *ctype;      /* Content-Type (static string) */
    int fd;                 /* file to send instead of body, -1 none */
    uint64_t fd_len;        /* its size */
    char allow[64];         /* Allow header for 405, "" none */
    int retry_after;        /* Retry-After seconds, 0 none */
    int challenge;          /* send WWW-Authenticate: Bearer */
    int cache;              /* 1: Cache-Control: max-age=300, else no-store */
    int close;              /* send Connection: close (set after the body) */
    char cors_origin[256];  /* an allowed preflight: its Allow-Origin */
    char cors_methods[64];  /* and Allow-Methods; "" otherwise */
    char etag[72];          /* ETag header, "" none (thumbs.c) */
};

enum http__phase {
    HTTP__PH_BODY,    /* receiving the body */
    HTTP__PH_WORKER,  /* suspended, queued for or run by a worker */
    HTTP__PH_DONE,    /* worker finished, reply to send */
    HTTP__PH_SENT,    /* reply queued with libmicrohttpd */
};

#define HTTP_REQUEST_ID_MAX 128 /* X-Request-ID characters at most */

struct http_req {
    struct http_server *s;
    struct MHD_Connection *conn;
    char rid[HTTP_REQUEST_ID_MAX + 1]; /* request id (reqlog.c) */
    char method[16];                /* request method as sent (truncated) */
    struct http_match m;            /* route, method, item id */
    double t0;                      /* monotonic seconds at the first call */
    enum http__phase phase;
    int answering;                  /* counted in s->answering */
    enum http_body_kind kind;       /* from Content-Type */
    uint8_t *body;                  /* raw or JSON body (NUL-terminated) */
    size_t body_len, body_cap;
    size_t received;                /* body bytes seen, kept or not */
    struct MHD_PostProcessor *pp;   /* multipart parser */
    struct http_parts parts;        /* multipart parts */
    int body_rc;                    /* body error (negative code), 0 ok */
    struct err body_err;            /* its message */
    json_t *json;                   /* parsed JSON body, lazily */
    char **strs;                    /* decoded query values to free */
    int nstrs, capstrs;
    struct http_worker *w;          /* scratch while on a worker */
    struct http_reply reply;
    struct http_req *next;          /* worker queue link */
};

/* ---- reply.c: replies and the JSON values they are made of ---- */

/* One line through cfg.log (nothing when it is NULL). */
void http__logf(struct http_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Frees what a reply holds and empties it (fd -1). */
void http__reply_reset(struct http_reply *rp);
/* Replies with j (a reference is stolen), serialized compactly. */
void http__reply_json(struct http_req *r, int status, json_t *j);
/* {"error": {"code", "message"}} with the status of e's code. */
void http__reply_err(struct http_req *r, const struct err *e);
void http__reply_errf(struct http_req *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A reply body the request owns (malloc'd buf, or static). */
void http__reply_bytes(struct http_req *r, int status, const char *ctype, char *buf,
                       size_t len, int is_static);

/* msg for a client: the server's folders (store, uploads, catalogs, model)
 * replaced by <store>, <uploads>, ...; with server_side, any other absolute
 * path too. out gets at most n bytes. */
void http__scrub(const struct http_server *s, const char *msg, char *out, size_t n,
                 int server_side);

/* JSON values of replies; each returns a new reference (json null when s
 * is NULL or out of memory). str_json repairs text that is not UTF-8. */
json_t *http__str_json(const char *s);
json_t *http__floats_json(const float *v, int n);
/* {"error": {...}} for one failed entry of a batch reply, scrubbed. */
json_t *http__err_json(const struct http_server *s, const struct err *e);
/* "/items/{id}/image" with id percent-encoded. */
json_t *http__image_url(const char *id);
/* Metadata text from the store -> JSON (an empty object when unreadable). */
json_t *http__metadata_json(const char *md);

/* ---- request.c: what a request carries ---- */

/* Decoded query parameter key (first occurrence), or NULL. Owned by r.
 * Every parameter was checked at the door (decodes, valid UTF-8). */
const char *http__query(struct http_req *r, const char *key);
/* Calls fn for every value of key, decoded; stops at a non-zero return. */
int http__query_each(struct http_req *r, const char *key,
                     int (*fn)(void *ctx, const char *value), void *ctx);
/* 0 when every query parameter decodes to valid UTF-8, else the first
 * problem in err. */
int http__query_check(struct http_req *r, struct err *err);
/* The JSON body as an object (parsed once), or NULL with err set. */
json_t *http__json(struct http_req *r, struct err *err);
/* Parses the JSON body when there is one; 0, or -1 with an error reply made. */
int http__load_json(struct http_req *r);
/* A header value, or NULL. */
const char *http__header(struct http_req *r, const char *name);
/* A scalar parameter as text from the JSON body, a multipart field or the
 * query string; NULL when absent (JSON null counts as absent). buf: room
 * for a number's text. */
const char *http__param(struct http_req *r, const char *name, char *buf, size_t n);

/* One image of a request, as bytes. */
struct http__blob {
    int present;         /* the request has this image */
    const uint8_t *p;    /* bytes */
    size_t n;            /* length */
    uint8_t *owned;      /* decoded base64, freed by http__blob_free */
    int rc;              /* error getting it (negative), 0 ok */
    struct err err;      /* its message */
};
void http__blob_free(struct http__blob *b);
/* b from a JSON base64 string v (what names it in messages). */
void http__blob_from_b64(struct http__blob *b, json_t *v, const char *what, size_t max);
/* b from a multipart part (borrowed, not copied). */
void http__blob_from_part(struct http__blob *b, const struct http_part *p);
/* The one image of a request (b->present 0 when it has none). */
void http__get_image(struct http_req *r, struct http__blob *b);
/* 1 when a multipart field of this name holds an image. */
int http__image_field(const char *name);
/* The message for a request without an image. */
extern const char http__no_image_msg[];

/* ---- body.c: reading request bodies ---- */

/* 1 for methods that carry a body (POST, PUT). */
int http__takes_body(const struct http_req *r);
/* Refuses a request whose body length is ambiguous or cannot be found:
 * 400 and Connection: close. Returns 1 when refused. */
int http__refuse_framing(struct http_req *r);
/* Checks the declared length and Content-Type and prepares the multipart
 * parser; leaves an error reply in r when refused. */
void http__body_begin(struct http_req *r);
/* A chunk of body. Returns 0, or -1 to drop the connection. */
int http__body_absorb(struct http_req *r, const char *data, size_t n);
/* The body is complete: leaves an error reply in r when it is unusable. */
void http__body_end(struct http_req *r);

/* ---- router.c: which handler answers ---- */

#define HTTP_MAX_LABELS 256 /* labels per /classify */

/* The most JSON values (scalars, arrays, objects) and the deepest nesting a
 * JSON body of route r may have: what the route reads, and no more (a
 * 20 MB array of numbers would be a 440 MB jansson tree). */
struct http_json_limits {
    size_t values; /* values at most */
    int depth;     /* nesting at most (the body object is 1) */
};
struct http_json_limits http__json_limits(const struct http_server *s, enum http_route r);

/* The fields a JSON body of route r (method m) may have, NULL-terminated:
 * any other is 400 naming it (a misspelt "min_scor" would be ignored). */
const char *const *http__json_fields(enum http_route r, enum http_method m);
/* 1 when route r is answered on the poll thread (cheap, no store writes). */
int http__inline_route(enum http_route r);
/* Runs the handler of r->m.route; always leaves a reply in r->reply. */
void http__dispatch(struct http_req *r);

/* ---- the resources: one file each ---- */

/* api_features.c: decodes, preprocesses and embeds the images of b[0..n)
 * (chunks of the worker's capacity) into out (n * dim floats). Images
 * that fail get b[i].rc and b[i].err; the others are embedded anyway.
 * name_each: prefix messages with "image N". Returns the number embedded. */
int http__embed_blobs(struct http_req *r, struct http__blob *b, int n, float *out,
                      int name_each);
void http__api_features(struct http_req *r);       /* POST /extract-features */
void http__api_features_batch(struct http_req *r); /* POST /extract-features-batch */
void http__api_search(struct http_req *r);         /* POST /search (api_search.c) */
void http__api_classify(struct http_req *r);       /* POST /classify (api_classify.c) */
/* api_items.c */
void http__api_items_list(struct http_req *r);     /* GET /items */
void http__api_item_get(struct http_req *r);       /* GET /items/{id} */
void http__api_item_put(struct http_req *r);       /* PUT /items/{id} */
void http__api_item_delete(struct http_req *r);    /* DELETE /items/{id} */
void http__api_item_image(struct http_req *r);     /* GET /items/{id}/image */
/* api_status.c */
void http__api_health(struct http_req *r);         /* GET /health */
void http__api_ready(struct http_req *r);          /* GET /ready */
void http__api_metrics(struct http_req *r);        /* GET /metrics */
void http__api_page(struct http_req *r);           /* GET / */
void http__api_openapi(struct http_req *r);        /* GET /openapi.json */
void http__api_docs(struct http_req *r);           /* GET /docs */


/* ---- page.c ---- */
extern const char http__page[];
extern const size_t http__page_len;
/* ---- openapi.c, docs.c ---- */
extern const char http__openapi[]; /* "@VERSION@" stands for cfg.version */
extern const size_t http__openapi_len;
extern const char http__docs[];
extern const size_t http__docs_len;

/* ---- reqlog.c: request ids and the access log ---- */

/* Seeds the request id generator (once, at start). */
void http__reqlog_init(struct http_server *s);
/* 1 when v may be used as a request id as it is: 1..128 characters of
 * printable ASCII without space. */
int http__request_id_valid(const char *v);
/* Sets r->rid from X-Request-ID when valid, else a new id. */
void http__request_id(struct http_req *r);
/* Hands the access-log line of r to cfg.access_log (when set). */
void http__access_log(struct http_req *r);

/* ---- cors.c: cross-origin requests ---- */

/* 1 when --cors-origin named any origin. */
int http__cors_on(const struct http_server *s);
/* Answers an OPTIONS request on a known path (r->m matched, r->m.allow
 * set): 204 with Allow, and the preflight headers when the origin and the
 * requested method are allowed. */
void http__cors_preflight(struct http_req *r);
/* Adds the CORS headers of r's reply to resp (none when CORS is off). */
void http__cors_headers(struct http_req *r, struct MHD_Response *resp);

/* ---- conn.c: the connection guard ---- */

enum http__conn_phase {
    HTTP__CONN_HEAD, /* waiting for or receiving a request head: head deadline */
    HTTP__CONN_BODY, /* head done, receiving the body: request deadline */
    HTTP__CONN_BUSY, /* at a worker or sending the reply: no deadline of ours */
};

/* Initialises s->guard (before the daemon starts; cannot fail). */
void http__guard_init(struct http_server *s);
/* Starts the sweeper thread. */
int http__guard_start(struct http_server *s, struct err *err);
/* Stops the sweeper and logs what the throttle still holds. Idempotent. */
void http__guard_stop(struct http_server *s);
/* Frees what http__guard_init made (after the daemon stopped). */
void http__guard_free(struct http_server *s);
/* MHD_OPTION_NOTIFY_CONNECTION: registers and forgets connections (cls: s). */
void http__guard_notify(void *cls, struct MHD_Connection *c, void **socket_ctx,
                        enum MHD_ConnectionNotificationCode code);
/* Moves c to phase ph; its deadline, if any, counts from now. */
void http__guard_phase(struct MHD_Connection *c, enum http__conn_phase ph);
/* A connection-level log line: shown, or held back and summarised when
 * more than a few come in a window. */
void http__guard_log(struct http_server *s, const char *line);

#endif
