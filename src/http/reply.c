/* reply.c - replies: the JSON, error and byte bodies a handler leaves in
 * its request, the JSON values they are made of, and the one log line
 * helper.
 *
 * 1. A handler never talks to libmicrohttpd: it fills r->reply (status,
 *    body, headers to add) and server.c sends it.
 * 2. Every error is {"error": {"code", "message"}, "detail": message,
 *    "request_id": id} with the status of the one error table (util/err.h); the message is
 *    scrubbed of the server's folders and repaired to valid UTF-8 first.
 * 3. Text from the store that is not UTF-8 (rows written before the check)
 *    is repaired with U+FFFD on the way out, so one bad row cannot make
 *    every listing that holds it fail.
 */
#include "http/http_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/utf8.h"

void http__logf(struct http_server *s, const char *fmt, ...)
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

void http__reply_reset(struct http_reply *rp)
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
    http__reply_reset(rp);
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
        http__logf(r->s, "%s: cannot encode the reply as JSON", http_route_name(r->m.route));
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
    /* the store's own messages name a database URL without its password
     * ("postgresql://user:***@host/db"): not the text of --store. The
     * store is there once the state is READY (set after it, atomically). */
    if (atomic_load(&s->state) == HTTP__READY && s->store)
        replace_all(out, n, store_name(s->store), "<store>");
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
    /* "detail" repeats the message where clients of other services look */
    json_t *j = json_pack("{s:{s:s,s:O},s:o,s:s}", "error", "code", err_str(code), "message", m,
                          "detail", m, "request_id", r->rid);
    http__reply_json(r, status, j);
    if (status >= 500 && code != ERR_UNAVAILABLE)
        http__logf(r->s, "%s %s: %d %s", http_route_name(r->m.route), r->m.id ? r->m.id : "", status,
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

/* ---- JSON values ---------------------------------------------------------- */

json_t *http__floats_json(const float *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++)
        json_array_append_new(a, json_real(v[i]));
    return a;
}

/* A JSON string of s even when s is not UTF-8 (a row stored before ids
 * were checked, a path from disk): bad bytes become U+FFFD, so the reply
 * still encodes; json_stringn_nocheck would make json_dumps fail. */
json_t *http__str_json(const char *s)
{
    if (!s)
        return json_null();
    json_t *j = json_string(s);
    if (j)
        return j;
    char *fixed = utf8_repair(s);
    j = fixed ? json_string(fixed) : NULL;
    free(fixed);
    return j ? j : json_null();
}

json_t *http__err_json(const struct http_server *s, const struct err *e)
{
    char clean[ERR_MSG_MAX + 64];
    http__scrub(s, e->msg, clean, sizeof clean, err_http_status(e->code) >= 500);
    return json_pack("{s:{s:s,s:o}}", "error", "code", err_str(e->code), "message",
                     http__str_json(clean));
}

json_t *http__image_url(const char *id)
{
    char *enc = http_pct_encode(id);
    if (!enc)
        return json_null();
    size_t n = strlen(enc) + 16;
    char *u = malloc(n);
    json_t *j = NULL;
    if (u) {
        snprintf(u, n, "/items/%s/image", enc);
        j = json_string(u);
    }
    free(u);
    free(enc);
    return j ? j : json_null();
}

/* Metadata text from the store -> JSON (an empty object when unreadable). */
json_t *http__metadata_json(const char *md)
{
    json_t *j = md ? json_loads(md, 0, NULL) : NULL;
    return j ? j : json_object();
}
