/* http_int.h - what the files of src/http/ share: the server and request
 * structs, reply helpers (server.c) and the route handlers (api.c). */
#ifndef IMGSEARCH_HTTP_INT_H
#define IMGSEARCH_HTTP_INT_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

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
    atomic_int inflight;            /* requests begun and not completed */
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
    char allow[48];         /* Allow header for 405, "" none */
    int retry_after;        /* Retry-After seconds, 0 none */
    int challenge;          /* send WWW-Authenticate: Bearer */
    int cache;              /* 1: Cache-Control: max-age=300, else no-store */
    int close;              /* send Connection: close (set after the body) */
    char etag[72];          /* ETag header, "" none (thumbs.c) */
};

enum http__phase {
    HTTP__PH_BODY,    /* receiving the body */
    HTTP__PH_WORKER,  /* suspended, queued for or run by a worker */
    HTTP__PH_DONE,    /* worker finished, reply to send */
    HTTP__PH_SENT,    /* reply queued with libmicrohttpd */
};

struct http_req {
    struct http_server *s;
    struct MHD_Connection *conn;
    struct http_match m;            /* route, method, item id */
    double t0;                      /* monotonic seconds at the first call */
    enum http__phase phase;
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

/* ---- server.c: replies and request data ---- */

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

/* Decoded query parameter key (first occurrence), or NULL. Owned by r.
 * Every parameter was checked at the door (decodes, valid UTF-8). */
const char *http__query(struct http_req *r, const char *key);
/* Calls fn for every value of key, decoded; stops at a non-zero return. */
int http__query_each(struct http_req *r, const char *key,
                     int (*fn)(void *ctx, const char *value), void *ctx);
/* The JSON body as an object (parsed once), or NULL with err set. */
json_t *http__json(struct http_req *r, struct err *err);
/* A header value, or NULL. */
const char *http__header(struct http_req *r, const char *name);

/* ---- api.c: the routes ---- */

/* The most JSON values (scalars, arrays, objects) and the deepest nesting a
 * JSON body of route r may have: what the route reads, and no more (a
 * 20 MB array of numbers would be a 440 MB jansson tree). */
struct http_json_limits {
    size_t values; /* values at most */
    int depth;     /* nesting at most (the body object is 1) */
};
struct http_json_limits http__json_limits(const struct http_server *s, enum http_route r);

/* 1 when route r is answered on the poll thread (cheap, no store writes). */
int http__inline_route(enum http_route r);
/* Runs the handler of r->m.route; always leaves a reply in r->reply. */
void http__dispatch(struct http_req *r);

/* ---- failed.c ---- */
/* Adds "state": "failed" and "error" to an item's JSON when it failed. */
void http__failed_annotate(struct http_server *s, json_t *item);

/* ---- page.c ---- */
extern const char http__page[];
extern const size_t http__page_len;

double http__now(void);

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
