/* conn.c - the connection guard of the HTTP service: deadlines that
 * libmicrohttpd 0.9.75 does not have, and a throttle on the log lines that
 * hostile connections cause.
 *
 * 1. libmicrohttpd only has an idle timeout (MHD_OPTION_CONNECTION_TIMEOUT),
 *    which every received byte resets, so a client that sends one header
 *    byte every few seconds holds a connection forever (slowloris). And it
 *    calls the application only once the whole head has arrived, so the
 *    access handler cannot see a slow head either.
 * 2. So every connection is registered through MHD_OPTION_NOTIFY_CONNECTION
 *    with its socket and its phase (head, body, busy) and the time the phase
 *    began. server.c moves it to BODY when the head is complete (first call
 *    of the access handler), to BUSY when the request goes to a worker or
 *    its reply is queued, and back to HEAD when the reply has been sent
 *    (a kept-alive connection waits for its next head: that wait counts
 *    toward the head deadline, so the keep-alive idle time is at most
 *    min(--timeout-s, --head-timeout-s)).
 * 3. A sweeper thread wakes four times a second and shuts down (shutdown(2),
 *    SHUT_RDWR) the socket of every connection past its deadline: head
 *    deadline in HEAD, request deadline in BODY. libmicrohttpd then reads
 *    end-of-file on its next poll and closes the connection the ordinary
 *    way, on its own thread; we never close a socket libmicrohttpd owns.
 *    shutdown(2) leaves the descriptor open, and libmicrohttpd calls the
 *    CLOSED notification (which unlinks the record under the same mutex)
 *    before it closes the descriptor, so the sweeper never touches a
 *    descriptor number that has been reused.
 * 4. Nothing is sent on a cut connection: in HEAD no request is known yet
 *    (as nginx's client_header_timeout), in BODY the reply would not be
 *    read by a client that is still sending.
 * 5. Log throttle: libmicrohttpd logs one line per abandoned or refused
 *    connection (a slowloris run made 1,059). Connection-level lines go
 *    through http__guard_log: the first LOG_BURST of each LOG_WINDOW_S
 *    window are shown, the rest are counted and summarised in one line
 *    when the window ends (or at shutdown).
 */
#include "http/http_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define LOG_WINDOW_S 10.0 /* throttle window */
#define LOG_BURST 5       /* lines shown per window */
#define TICK_MS 250       /* sweeper period */

struct http__conn {
    int fd;                  /* the socket, owned by libmicrohttpd */
    atomic_int phase;        /* enum http__conn_phase */
    atomic_llong since_us;   /* when the phase began, monotonic microseconds */
    int cut;                 /* shut down by the sweeper (guard.mu) */
    struct http__conn *prev, *next; /* guard.conns (guard.mu) */
};

void http__guard_init(struct http_server *s)
{
    struct http__guard *g = &s->guard;
    pthread_mutex_init(&g->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->cv, &ca);
    pthread_condattr_destroy(&ca);
    g->log_t0 = mono_now();
    g->inited = 1;
}

void http__guard_free(struct http_server *s)
{
    struct http__guard *g = &s->guard;
    if (!g->inited)
        return;
    http__guard_stop(s);
    /* the daemon has stopped: every connection was unregistered */
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    g->inited = 0;
}

void http__guard_notify(void *cls, struct MHD_Connection *c, void **socket_ctx,
                        enum MHD_ConnectionNotificationCode code)
{
    struct http_server *s = cls;
    struct http__guard *g = &s->guard;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct http__conn *k = ci ? calloc(1, sizeof *k) : NULL;
        *socket_ctx = k;
        if (!k)
            return; /* unguarded: the idle timeout still applies */
        k->fd = ci->connect_fd;
        atomic_init(&k->phase, HTTP__CONN_HEAD);
        atomic_init(&k->since_us, (long long)(mono_ns() / 1000));
        pthread_mutex_lock(&g->mu);
        k->next = g->conns;
        if (g->conns)
            g->conns->prev = k;
        g->conns = k;
        g->nconns++;
        pthread_mutex_unlock(&g->mu);
        return;
    }
    struct http__conn *k = *socket_ctx;
    if (!k)
        return;
    *socket_ctx = NULL;
    pthread_mutex_lock(&g->mu);
    if (k->prev)
        k->prev->next = k->next;
    else
        g->conns = k->next;
    if (k->next)
        k->next->prev = k->prev;
    g->nconns--;
    pthread_mutex_unlock(&g->mu);
    free(k);
}

void http__guard_phase(struct MHD_Connection *c, enum http__conn_phase ph)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct http__conn *k = ci ? ci->socket_context : NULL;
    if (!k)
        return;
    /* since first: the sweeper reads phase, then since */
    atomic_store(&k->since_us, (long long)(mono_ns() / 1000));
    atomic_store(&k->phase, (int)ph);
}

/* Starts a new window when the current one has ended (or when forced)
 * and writes the summary of the lines it held back to out ("": none).
 * Called with g->mu held. */
static void log_roll(struct http__guard *g, double now, int force, char *out, size_t n)
{
    out[0] = 0;
    if (!force && now - g->log_t0 < LOG_WINDOW_S)
        return;
    if (g->log_held)
        snprintf(out, n, "%d more connection messages in the last %.0f s (the last: %s)",
                 g->log_held, now - g->log_t0, g->log_last);
    g->log_t0 = now;
    g->log_shown = 0;
    g->log_held = 0;
}

void http__guard_log(struct http_server *s, const char *line)
{
    struct http__guard *g = &s->guard;
    if (!s->cfg.log)
        return;
    char roll[400];
    pthread_mutex_lock(&g->mu);
    log_roll(g, mono_now(), 0, roll, sizeof roll);
    int show = g->log_shown < LOG_BURST;
    if (show) {
        g->log_shown++;
    } else {
        g->log_held++;
        snprintf(g->log_last, sizeof g->log_last, "%s", line);
    }
    pthread_mutex_unlock(&g->mu);
    if (roll[0])
        s->cfg.log(roll);
    if (show)
        s->cfg.log(line);
}

static void *sweeper(void *arg)
{
    struct http_server *s = arg;
    struct http__guard *g = &s->guard;
    const struct http_config *c = &s->cfg;
    double head_s = c->head_timeout_s > 0 ? c->head_timeout_s : 0;
    double body_s = c->request_timeout_s > 0 ? c->request_timeout_s : 0;
    double last_prune = mono_now();
    pthread_mutex_lock(&g->mu);
    while (!g->stop) {
        /* the condition variable waits on CLOCK_MONOTONIC, mono_ns's clock */
        int64_t wake = mono_ns() + (int64_t)TICK_MS * 1000000;
        struct timespec ts = {.tv_sec = wake / 1000000000, .tv_nsec = wake % 1000000000};
        pthread_cond_timedwait(&g->cv, &g->mu, &ts);
        if (g->stop)
            break;
        long long now = (long long)(mono_ns() / 1000);
        int heads = 0, bodies = 0;
        for (struct http__conn *k = g->conns; k; k = k->next) {
            if (k->cut)
                continue;
            int ph = atomic_load(&k->phase);
            double limit = ph == HTTP__CONN_HEAD ? head_s : ph == HTTP__CONN_BODY ? body_s : 0;
            if (!limit || (double)(now - atomic_load(&k->since_us)) < limit * 1e6)
                continue;
            if (shutdown(k->fd, SHUT_RDWR) != 0 && errno != ENOTCONN)
                continue;
            k->cut = 1;
            if (ph == HTTP__CONN_HEAD)
                heads++;
            else
                bodies++;
        }
        char roll[400];
        log_roll(g, (double)now / 1e6, 0, roll, sizeof roll);
        pthread_mutex_unlock(&g->mu);
        if (heads) {
            atomic_fetch_add(&s->metrics.cut_head, (unsigned)heads);
            char m[200];
            snprintf(m, sizeof m, "closed %d connection%s whose request head took over %g s",
                     heads, heads > 1 ? "s" : "", head_s);
            http__guard_log(s, m);
        }
        if (bodies) {
            atomic_fetch_add(&s->metrics.cut_body, (unsigned)bodies);
            char m[200];
            if (bodies == 1)
                snprintf(m, sizeof m, "cut a request whose body took over %g s", body_s);
            else
                snprintf(m, sizeof m, "cut %d requests whose body took over %g s", bodies, body_s);
            http__guard_log(s, m);
        }
        if (roll[0] && s->cfg.log)
            s->cfg.log(roll);
        if (s->rl && (double)now / 1e6 - last_prune > 10) {
            http_ratelimit_prune(s->rl, (double)now / 1e6);
            last_prune = (double)now / 1e6;
        }
        pthread_mutex_lock(&g->mu);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

int http__guard_start(struct http_server *s, struct err *err)
{
    struct http__guard *g = &s->guard;
    if (pthread_create(&g->sweeper, NULL, sweeper, s) != 0)
        return err_set(err, ERR_INTERNAL, "cannot start the connection sweeper thread");
    g->running = 1;
    return 0;
}

void http__guard_stop(struct http_server *s)
{
    struct http__guard *g = &s->guard;
    if (!g->inited)
        return;
    if (g->running) {
        pthread_mutex_lock(&g->mu);
        g->stop = 1;
        pthread_cond_broadcast(&g->cv);
        pthread_mutex_unlock(&g->mu);
        pthread_join(g->sweeper, NULL);
        g->running = 0;
    }
    char roll[400];
    pthread_mutex_lock(&g->mu);
    log_roll(g, mono_now(), 1, roll, sizeof roll);
    pthread_mutex_unlock(&g->mu);
    if (roll[0] && s->cfg.log)
        s->cfg.log(roll);
}
