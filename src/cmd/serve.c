/* serve.c - `imgsearch serve`: the HTTP service (src/http/).
 *
 * Every option can also come from the environment: --max-batch is
 * IMGSEARCH_MAX_BATCH, --catalog is IMGSEARCH_CATALOG (folders separated by
 * ':'), flags take 1/0. The command line wins over the environment.
 *
 * The listener starts first and the model loads on another thread, so a
 * load balancer sees /health answer "loading" at once. SIGTERM or SIGINT
 * (blocked in every thread, taken with sigtimedwait here) starts a
 * graceful shutdown; a second one ends the process at once.
 */
#include "cmd/cmd.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "http/http.h"
#include "pipe/pipe.h"
#include "store/store.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: imgsearch serve --store PATH --model DIR [options]\n"
            "\n"
            "Serves the HTTP API and the search page. Prints \"listening on http://HOST:PORT\"\n"
            "on stderr as soon as it accepts connections; the model loads after that\n"
            "(/health says \"loading\", model routes answer 503 with Retry-After).\n"
            "\n"
            "options (environment variable in brackets):\n"
            "  --store PATH|URL        the store, created if missing [IMGSEARCH_STORE]; a\n"
            "                          postgres:// or postgresql:// URL needs --uploads.\n"
            "                          Its schema is created or upgraded on start, as\n"
            "                          'imgsearch migrate' does\n"
            "  --no-migrate            do not create or upgrade the store's schema (nor\n"
            "                          convert it to pgvector): a store whose schema is\n"
            "                          missing or older is refused (exit code 2; run\n"
            "                          'imgsearch migrate --store URL') [IMGSEARCH_NO_MIGRATE]\n"
            "  --uploads DIR           where images uploaded with PUT /items/{id} are kept\n"
            "                          (default: PATH.images next to an embedded store)\n"
            "                          [IMGSEARCH_UPLOADS]\n"
            "  --model DIR             model folder [IMGSEARCH_MODEL]\n"
            "  --listen HOST:PORT      address (default 127.0.0.1:8001; port 0: any free port)\n"
            "                          [IMGSEARCH_LISTEN]\n"
            "  --catalog DIR           folder of images to index and embed in the background;\n"
            "                          repeatable [IMGSEARCH_CATALOG, ':'-separated]\n"
            "  --api-key KEY           required for writes (PUT, DELETE), as\n"
            "                          \"Authorization: Bearer KEY\" or \"X-API-Key: KEY\"\n"
            "                          [IMGSEARCH_API_KEY]\n"
            "  --api-key-all           require the key for reads too (not /, /health,\n"
            "                          /ready, /openapi.json, /docs)\n"
            "                          [IMGSEARCH_API_KEY_ALL]\n"
            "  --max-batch N           images per forward pass (default 16) [IMGSEARCH_MAX_BATCH]\n"
            "  --batch-wait-ms N       longest wait for a batch to fill (default 5)\n"
            "  --batch-limit N         images per /extract-features-batch request (default 64)\n"
            "  --max-body-mb N         request body limit in MB (default 20)\n"
            "  --threads N             request worker threads (default 2 x cores, at least 4)\n"
            "  --poll-threads N        connection threads (default: cores, at most 4)\n"
            "  --max-connections N     open connections at most (default 1024)\n"
            "  --timeout-s N           close connections idle for N s (default 30)\n"
            "  --request-timeout-s N   cut requests whose body takes longer (default 60)\n"
            "  --max-queue N           requests waiting for a worker before 503 (default 1024)\n"
            "  --max-per-address N     open connections per client address (default 64; 0: no cap)\n"
            "  --head-timeout-s N      close a connection whose request head (line and headers)\n"
            "                          takes longer, however it trickles (default 10; 0: none)\n"
            "  --rate-limit N[/s|/m]   inference requests (/extract-features, /search,\n"
            "                          /classify) per client address; more get 429 with\n"
            "                          Retry-After; requests with the API key are not limited\n"
            "                          (default 10/s; 0: no limit)\n"
            "  --rate-burst N          inference requests one address may make at once\n"
            "                          (default 2 x the rate)\n"
            "  --shutdown-grace-s N    on SIGTERM, wait up to N s for requests in flight, then\n"
            "                          answer the queued ones 503 and close (default 5)\n"
            "  --precision P           auto (default), fp32 or bf16 [IMGSEARCH_PRECISION]\n"
            "  --max-pixels N          refuse images over N pixels (default 50000000)\n"
            "  --full-decode           decode JPEGs at full size (no DCT scaling)\n"
            "  --precompute-pause-ms N sleep between background batches (default 0)\n"
            "  --lease-seconds N       servers sharing one store take waiting items in claims\n"
            "                          leased for N s; a killed server's claim is taken over\n"
            "                          when its lease runs out (default 120)\n"
            "  --rescan-interval N     walk the catalog again every N s, a backstop for what\n"
            "                          inotify misses (default 60; 0: never)\n"
            "  --no-inotify            do not watch the catalog: only the periodic rescan\n"
            "  --load-delay-ms N       wait before loading the model (for tests)\n"
            "  --cors-origin ORIGIN    let browser pages from ORIGIN (https://shop.example)\n"
            "                          call the API; repeatable; '*' lets any origin read\n"
            "                          (GET, HEAD) only. Default: no CORS, OPTIONS is 405\n"
            "                          [IMGSEARCH_CORS_ORIGIN, ','-separated]\n"
            "  --access-log FILE       one JSON line per request (time, id, method, route,\n"
            "                          status, bytes, duration_ms, client) appended to FILE;\n"
            "                          '-': stderr, 'off': none (default: stderr, none with\n"
            "                          --quiet) [IMGSEARCH_ACCESS_LOG]\n"
            "  --quiet                 log only errors\n"
            "  --help                  this text\n"
            "\n"
            "Each option FOO-BAR is also read from IMGSEARCH_FOO_BAR.\n");
}

enum {
    O_STORE = 1, O_MODEL, O_LISTEN, O_CATALOG, O_KEY, O_KEY_ALL, O_MAX_BATCH, O_WAIT,
    O_BATCH_LIMIT, O_BODY, O_THREADS, O_POLL, O_MAXCONN, O_TIMEOUT, O_REQ_TIMEOUT, O_QUEUE,
    O_PRECISION, O_MAXPX, O_FULL, O_PAUSE, O_DELAY, O_QUIET, O_HELP,
    O_PER_ADDR, O_HEAD_TIMEOUT, O_RATE, O_BURST, O_GRACE, O_UPLOADS, O_ACCESS_LOG, O_CORS,
    O_RESCAN, O_NO_INOTIFY, /* catalog sync (ingest/watch.c) */
    O_LEASE,
    O_NO_MIGRATE,
};

static const struct option opts[] = {
    {"store", required_argument, 0, O_STORE},
    {"model", required_argument, 0, O_MODEL},
    {"listen", required_argument, 0, O_LISTEN},
    {"catalog", required_argument, 0, O_CATALOG},
    {"api-key", required_argument, 0, O_KEY},
    {"api-key-all", no_argument, 0, O_KEY_ALL},
    {"max-batch", required_argument, 0, O_MAX_BATCH},
    {"batch-wait-ms", required_argument, 0, O_WAIT},
    {"batch-limit", required_argument, 0, O_BATCH_LIMIT},
    {"max-body-mb", required_argument, 0, O_BODY},
    {"threads", required_argument, 0, O_THREADS},
    {"poll-threads", required_argument, 0, O_POLL},
    {"max-connections", required_argument, 0, O_MAXCONN},
    {"timeout-s", required_argument, 0, O_TIMEOUT},
    {"request-timeout-s", required_argument, 0, O_REQ_TIMEOUT},
    {"max-queue", required_argument, 0, O_QUEUE},
    {"precision", required_argument, 0, O_PRECISION},
    {"max-pixels", required_argument, 0, O_MAXPX},
    {"full-decode", no_argument, 0, O_FULL},
    {"precompute-pause-ms", required_argument, 0, O_PAUSE},
    {"load-delay-ms", required_argument, 0, O_DELAY},
    {"quiet", no_argument, 0, O_QUIET},
    {"help", no_argument, 0, O_HELP},
    {"max-per-address", required_argument, 0, O_PER_ADDR},
    {"head-timeout-s", required_argument, 0, O_HEAD_TIMEOUT},
    {"rate-limit", required_argument, 0, O_RATE},
    {"rate-burst", required_argument, 0, O_BURST},
    {"shutdown-grace-s", required_argument, 0, O_GRACE},
    {"uploads", required_argument, 0, O_UPLOADS},
    {"access-log", required_argument, 0, O_ACCESS_LOG},
    {"cors-origin", required_argument, 0, O_CORS},
    {"rescan-interval", required_argument, 0, O_RESCAN},
    {"lease-seconds", required_argument, 0, O_LEASE},
    {"no-inotify", no_argument, 0, O_NO_INOTIFY},
    {"no-migrate", no_argument, 0, O_NO_MIGRATE},
    {0, 0, 0, 0},
};

#define MAX_CATALOGS 64
#define MAX_ORIGINS 32

struct serve_opts {
    struct http_config cfg;
    const char *catalogs[MAX_CATALOGS];
    int ncat;              /* from the command line */
    char *env_catalogs;    /* copy of IMGSEARCH_CATALOG, split in place */
    const char *env_cat[MAX_CATALOGS];
    int nenv;
    long body_mb;
    int quiet;
    int grace_s;           /* --shutdown-grace-s; -1: the default */
    const char *access_log; /* --access-log: FILE, "-" (stderr) or "off"; NULL: default */
    const char *origins[MAX_ORIGINS]; /* --cors-origin, repeated */
    int norigins;
    char *env_origins;     /* copy of IMGSEARCH_CORS_ORIGIN, split in place */
    int from_argv_cors;    /* --cors-origin seen on the command line */
};

/* "N", "N/s", "N/m" or "N/min": requests per second into *rate. */
static int parse_rate(const char *v, double *rate)
{
    char *end;
    errno = 0;
    double n = strtod(v, &end);
    if (errno || end == v || !(n >= 0) || n > 1e6)
        return -1;
    if (!*end || !strcmp(end, "/s"))
        *rate = n;
    else if (!strcmp(end, "/m") || !strcmp(end, "/min"))
        *rate = n / 60;
    else
        return -1;
    return 0;
}

static atomic_int quiet_log;

static void log_line(const char *msg)
{
    if (atomic_load(&quiet_log) && !strstr(msg, "error") && !strstr(msg, "fail") &&
        !strstr(msg, "warning"))
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ imgsearch serve: %s\n",
            tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
            ts.tv_nsec / 1000000, msg);
}

static FILE *access_fp; /* where access-log lines go; NULL: nowhere */

static void access_line(const char *line)
{
    /* one fwrite per line: stdio locks the stream, so lines from several
     * threads never interleave */
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "%s\n", line);
    if (n > 0 && (size_t)n < sizeof buf)
        fwrite(buf, 1, (size_t)n, access_fp);
}

/* Applies one option value (from argv or the environment, named by src). */
static int apply(struct serve_opts *o, int id, const char *v, const char *src, int from_env)
{
    struct http_config *c = &o->cfg;
    long n = 0;
    struct err err = {0};
#define INT(lo, hi) if (cmd_parse_int("serve", src, v, lo, hi, &n)) return 2
    switch (id) {
    case O_STORE: c->store = v; break;
    case O_MODEL: c->model = v; break;
    case O_LISTEN: c->listen = v; break;
    case O_UPLOADS: c->uploads = v; break;
    case O_ACCESS_LOG: o->access_log = v; break;
    case O_CORS:
        if (from_env) { /* several, separated by ',' or spaces */
            free(o->env_origins);
            o->env_origins = strdup(v);
            o->norigins = 0;
            for (char *sv, *t = o->env_origins ? strtok_r(o->env_origins, ", ", &sv) : NULL;
                 t && o->norigins < MAX_ORIGINS; t = strtok_r(NULL, ", ", &sv))
                o->origins[o->norigins++] = t;
            break;
        }
        if (o->from_argv_cors++ == 0)
            o->norigins = 0; /* the command line replaces the environment */
        if (o->norigins == MAX_ORIGINS)
            return cmd_usage_error("serve", "at most %d --cors-origin", MAX_ORIGINS);
        if (!*v || strchr(v, ' ') || strchr(v, ','))
            return cmd_usage_error("serve", "%s '%s' is not one origin (scheme://host[:port] "
                                   "or *)", src, v);
        o->origins[o->norigins++] = v;
        break;
    case O_CATALOG:
        if (from_env) {
            free(o->env_catalogs);
            o->env_catalogs = strdup(v);
            o->nenv = 0;
            for (char *sv, *t = o->env_catalogs ? strtok_r(o->env_catalogs, ":", &sv) : NULL; t;
                 t = strtok_r(NULL, ":", &sv))
                if (o->nenv < MAX_CATALOGS)
                    o->env_cat[o->nenv++] = t;
        } else {
            if (o->ncat == MAX_CATALOGS)
                return cmd_usage_error("serve", "at most %d --catalog folders", MAX_CATALOGS);
            o->catalogs[o->ncat++] = v;
        }
        break;
    case O_KEY: c->api_key = v; break;
    case O_KEY_ALL:
    case O_FULL:
    case O_NO_INOTIFY:
    case O_NO_MIGRATE:
    case O_QUIET: {
        int b = 1;
        if (from_env) {
            b = !strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes") ? 1
                : !strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no") || !*v ? 0 : -1;
            if (b < 0)
                return cmd_usage_error("serve", "%s must be 1 or 0, not '%s'", src, v);
        }
        if (id == O_KEY_ALL)
            c->api_key_all = b;
        else if (id == O_FULL)
            c->pipe.full_decode = b;
        else if (id == O_NO_INOTIFY)
            c->no_inotify = b;
        else if (id == O_NO_MIGRATE)
            c->no_migrate = b;
        else
            o->quiet = b;
        break;
    }
    case O_MAX_BATCH: INT(1, 256); c->max_batch = (int)n; break;
    case O_WAIT: INT(0, 1000); c->batch_wait_ms = (int)n; break;
    case O_BATCH_LIMIT: INT(1, 1024); c->batch_limit = (int)n; break;
    case O_BODY: INT(1, 4096); o->body_mb = n; break;
    case O_THREADS: INT(1, 256); c->threads = (int)n; break;
    case O_POLL: INT(1, 64); c->poll_threads = (int)n; break;
    case O_MAXCONN: INT(1, 100000); c->max_connections = (int)n; break;
    case O_TIMEOUT: INT(1, 86400); c->idle_timeout_s = (int)n; break;
    case O_REQ_TIMEOUT: INT(1, 86400); c->request_timeout_s = (int)n; break;
    case O_QUEUE: INT(1, 1000000); c->max_queue = (int)n; break;
    /* 0 turns these off: the config says so with -1 (its 0 is "default") */
    case O_PER_ADDR: INT(0, 100000); c->max_per_address = n ? (int)n : -1; break;
    case O_HEAD_TIMEOUT: INT(0, 86400); c->head_timeout_s = n ? (int)n : -1; break;
    case O_RATE: {
        double r;
        if (parse_rate(v, &r))
            return cmd_usage_error("serve", "%s '%s' is not N, N/s or N/m (requests per "
                                   "second or minute; 0: no limit)", src, v);
        c->rate_limit = r > 0 ? r : -1;
        break;
    }
    case O_BURST: INT(1, 1000000); c->rate_burst = (int)n; break;
    case O_GRACE: INT(0, 3600); o->grace_s = (int)n; break;
    case O_PRECISION:
        if (pipe_parse_precision(v, &c->pipe.prec, &err))
            return cmd_usage_error("serve", "%s: %s", src, err.msg);
        break;
    case O_MAXPX: INT(1, 1000000000L); c->pipe.max_pixels = (uint64_t)n; break;
    case O_PAUSE: INT(0, 600000); c->precompute_pause_ms = (int)n; break;
    case O_RESCAN: INT(0, 86400); c->rescan_interval_s = n ? (int)n : -1; break;
    case O_LEASE: INT(1, 86400); c->lease_seconds = (int)n; break; /* STORE_LEASE_MAX */
    case O_DELAY: INT(0, 600000); c->load_delay_ms = (int)n; break;
    default: return 2;
    }
#undef INT
    return 0;
}

/* IMGSEARCH_FOO_BAR for --foo-bar. */
static void env_name(const char *opt, char *out, size_t n)
{
    size_t o = (size_t)snprintf(out, n, "IMGSEARCH_");
    for (; *opt && o + 1 < n; opt++)
        out[o++] = *opt == '-' ? '_' : (char)(*opt >= 'a' && *opt <= 'z' ? *opt - 32 : *opt);
    out[o] = 0;
}

struct loader {
    struct http_server *s;
    atomic_int done;  /* 1 ok, -1 failed */
    struct err err;
};

/* --max-connections sockets need as many descriptors, plus the store's,
 * the model's and the workers': raise the soft limit toward the hard one
 * (Debian's default soft limit, 1024, is the default connection limit, so
 * the server would run out of descriptors before it reached it). */
static void raise_nofile(int max_connections)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)max_connections + 128;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
        return;
    rlim_t cur = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        rl.rlim_cur = cur;
    if (rl.rlim_cur < want) {
        char m[200];
        snprintf(m, sizeof m, "warning: %llu file descriptors at most (ulimit -n): fewer than "
                 "--max-connections %d needs", (unsigned long long)rl.rlim_cur, max_connections);
        log_line(m);
    }
}

static void *load_main(void *arg)
{
    struct loader *l = arg;
    int rc = http_server_load(l->s, &l->err);
    atomic_store(&l->done, rc ? -1 : 1);
    return NULL;
}

/* Fills o from the environment, then argv (which wins). Returns 0 to go
 * on, 2 for a usage error (printed), or -1 when --help was printed. */
static int parse_opts(struct serve_opts *o, int argc, char **argv)
{
    int rc = 0, c;
    o->body_mb = 20;
    o->grace_s = -1;
    o->cfg.batch_wait_ms = -1; /* -1: default; 0 is a valid choice */
    for (const struct option *op = opts; op->name; op++) {
        if (op->val == O_HELP)
            continue;
        char name[64];
        env_name(op->name, name, sizeof name);
        const char *v = getenv(name);
        if (v && (*v || op->has_arg == no_argument) && (rc = apply(o, op->val, v, name, 1)))
            return rc;
    }
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == O_HELP) {
            usage(stdout);
            return -1;
        }
        if (c == '?' || c == ':')
            return cmd_usage_error("serve", "unknown option or missing value: '%s'",
                                   argv[optind - 1]);
        char src[64];
        snprintf(src, sizeof src, "--%s", opts[0].name);
        for (const struct option *op = opts; op->name; op++)
            if (op->val == c)
                snprintf(src, sizeof src, "--%s", op->name);
        if ((rc = apply(o, c, optarg ? optarg : "1", src, 0)))
            return rc;
    }
    if (optind < argc)
        return cmd_usage_error("serve", "unexpected argument '%s'", argv[optind]);
    struct http_config *cfg = &o->cfg;
    if (!cfg->store || !*cfg->store)
        return cmd_usage_error("serve", "--store PATH is required (or set IMGSEARCH_STORE)");
    if (store_is_url(cfg->store)) {
        if (!cfg->uploads || !*cfg->uploads)
            return cmd_usage_error("serve", "--store is a database URL: --uploads DIR is "
                                   "required (the folder where uploaded images are kept)");
    } else if (strstr(cfg->store, "://")) {
        return cmd_usage_error("serve", "--store %s: not a file path nor a postgres:// URL",
                               cfg->store);
    }
    if (cfg->uploads && !*cfg->uploads)
        return cmd_usage_error("serve", "--uploads needs a folder");
    if (!(cfg->model = cmd_model_dir(cfg->model)))
        return cmd_usage_error("serve", "--model DIR is required (or set IMGSEARCH_MODEL)");
    if (o->ncat) {
        cfg->catalogs = o->catalogs;
        cfg->ncatalogs = o->ncat;
    } else {
        cfg->catalogs = o->env_cat;
        cfg->ncatalogs = o->nenv;
    }
    cfg->max_body = (size_t)o->body_mb << 20;
    cfg->version = IMGSEARCH_VERSION;
    cfg->log = log_line;
    cfg->shutdown_grace_s = o->grace_s < 0 ? 0 : o->grace_s ? o->grace_s : -1;
    const char *al = o->access_log;
    if (al && !*al)
        return cmd_usage_error("serve", "--access-log needs a file, '-' or 'off'");
    if (al && strcmp(al, "-") != 0 && strcmp(al, "off") != 0) {
        if (!(access_fp = fopen(al, "ae")))
            return cmd_usage_error("serve", "--access-log %s: %s", al, strerror(errno));
        setvbuf(access_fp, NULL, _IOLBF, 0);
    } else if ((al && !strcmp(al, "-")) || (!al && !o->quiet)) {
        access_fp = stderr;
    }
    cfg->access_log = access_fp ? access_line : NULL;
    cfg->cors_origins = o->origins;
    cfg->ncors_origins = o->norigins;
    return 0;
}

/* Runs the server of o until SIGTERM/SIGINT or a failed load. */
static int serve(struct serve_opts *o)
{
    int rc = 0;
    atomic_store(&quiet_log, o->quiet);
    /* SIGTERM/SIGINT go to sigtimedwait below: block them before any
     * thread exists so every thread inherits the mask */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    signal(SIGPIPE, SIG_IGN);
    raise_nofile(o->cfg.max_connections ? o->cfg.max_connections : 1024);

    struct err err = {0};
    struct http_server *s = NULL;
    if (http_server_start(&s, &o->cfg, &err)) {
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return cmd_fail("serve", &err);
    }
    fprintf(stderr, "listening on %s\n", http_server_url(s));
    fflush(stderr);
    struct loader l = {.s = s};
    pthread_t lt;
    int loading = pthread_create(&lt, NULL, load_main, &l) == 0;
    if (!loading) {
        err_set(&l.err, ERR_INTERNAL, "cannot start the loader thread");
        atomic_store(&l.done, -1);
    }
    int sig = 0;
    for (;;) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        siginfo_t si;
        sig = sigtimedwait(&set, &si, &ts);
        if (sig > 0 || atomic_load(&l.done) < 0)
            break;
    }
    /* a second signal ends the process the default way */
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (sig > 0)
        log_line(sig == SIGTERM ? "SIGTERM: shutting down" : "SIGINT: shutting down");
    http_server_cancel_load(s);
    if (loading)
        pthread_join(lt, NULL);
    if (atomic_load(&l.done) < 0) {
        rc = cmd_fail("serve", &l.err);
        http_server_free(s, NULL);
        return rc;
    }
    http_server_shutdown(s, o->grace_s < 0 ? 5 : o->grace_s);
    if (http_server_free(s, &err))
        return cmd_fail("serve", &err);
    log_line("stopped; the store is closed");
    return 0;
}

static int run(int argc, char **argv)
{
    struct serve_opts o = {0};
    int rc = parse_opts(&o, argc, argv);
    if (!rc)
        rc = serve(&o);
    if (access_fp && access_fp != stderr)
        fclose(access_fp);
    access_fp = NULL;
    free(o.env_catalogs);
    free(o.env_origins);
    return rc < 0 ? 0 : rc;
}

const struct cmd cmd_serve = {"serve", "the HTTP API and search page", run};
