/* reqlog.c - request ids and the access log.
 *
 * 1. Every request has an id: the client's X-Request-ID when it is 1..128
 *    printable ASCII characters (no space, no control byte), else one we
 *    make (a random 8-hex-digit prefix per server start, then a counter:
 *    unique within a run, cheap, and never a secret). It is echoed in the
 *    X-Request-ID reply header and in every error body as "request_id", so
 *    a client's report finds its log line.
 * 2. The access log is one JSON object per request, written when
 *    libmicrohttpd is done with it: time (UTC, ms), id, method, route (the
 *    route's stable label, never the raw path: ids may be private), status
 *    (0 when no reply went out), bytes (reply body), duration_ms, client
 *    address. The line goes to cfg.access_log; the library never prints.
 */
#include "http/http_int.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

void http__reqlog_init(struct http_server *s)
{
    uint32_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed)
        seed = (uint32_t)mono_ns() ^ (uint32_t)getpid();
    snprintf(s->rid_prefix, sizeof s->rid_prefix, "%08x", seed);
    atomic_init(&s->rid_next, 1);
}

int http__request_id_valid(const char *v)
{
    size_t n = 0;
    if (!v)
        return 0;
    for (; v[n]; n++)
        if (n >= HTTP_REQUEST_ID_MAX || (unsigned char)v[n] <= 0x20 || (unsigned char)v[n] >= 0x7f)
            return 0;
    return n > 0;
}

void http__request_id(struct http_req *r)
{
    const char *v = http__header(r, "X-Request-ID");
    if (http__request_id_valid(v)) {
        snprintf(r->rid, sizeof r->rid, "%s", v);
        return;
    }
    unsigned long long n = atomic_fetch_add(&r->s->rid_next, 1);
    snprintf(r->rid, sizeof r->rid, "%s-%llx", r->s->rid_prefix, n);
}

/* The client's address as text ("-" when unknown). */
static void client_addr(struct http_req *r, char *out, size_t n)
{
    snprintf(out, n, "-");
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    if (!sa)
        return;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)n);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)n);
}

void http__access_log(struct http_req *r)
{
    struct http_server *s = r->s;
    if (!s->cfg.access_log)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[64], addr[INET6_ADDRSTRLEN + 1];
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    client_addr(r, addr, sizeof addr);
    const struct http_reply *rp = &r->reply;
    uint64_t bytes = rp->status ? (rp->fd_len ? rp->fd_len : rp->len) : 0;
    /* every string is ours or checked: the id is printable ASCII, but may
     * hold a quote or a backslash, so it goes through jansson */
    json_t *j = json_pack("{s:s,s:s,s:s,s:s,s:i,s:I,s:f,s:s}", "time", when, "id", r->rid,
                          "method", r->method, "route", http_route_name(r->m.route), "status",
                          rp->status, "bytes", (json_int_t)bytes, "duration_ms",
                          round((mono_now() - r->t0) * 1e6) / 1e3,
                          "client", addr);
    char *line = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
    json_decref(j);
    if (line)
        s->cfg.access_log(line);
    free(line);
}
