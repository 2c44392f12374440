/* cors.c - cross-origin requests from browsers (the Fetch standard's CORS
 * protocol), off unless serve is given --cors-origin.
 *
 * 1. Off (no origin configured): no Access-Control-* header is ever sent
 *    and OPTIONS is 405 with the route's Allow list, as for any method a
 *    route does not take.
 * 2. On: a request whose Origin is one of the configured origins (exact,
 *    case-sensitive, as browsers send it) gets Access-Control-Allow-Origin
 *    naming it, and Access-Control-Expose-Headers for the headers a client
 *    may want (X-Request-ID, Retry-After). "*" allows every origin for the
 *    reads (GET, HEAD) only: writes and inference need a named origin.
 *    Every reply says Vary: Origin, since it depends on it.
 * 3. Preflight: OPTIONS with Access-Control-Request-Method on a known path
 *    is answered 204 before authentication (browsers send no credentials
 *    with it): Allow-Origin, Allow-Methods (what the route takes and the
 *    origin may use), Allow-Headers (the request headers we read),
 *    Max-Age. An origin or method that is not allowed gets the 204 without
 *    any Access-Control-* header, which the browser reads as a refusal.
 *    OPTIONS without that header is 204 with Allow.
 */
#include "http/http_int.h"

#include <stdio.h>
#include <string.h>

#define CORS_MAX_AGE "600" /* seconds a browser may cache a preflight */
#define CORS_HEADERS "Authorization, Content-Type, X-API-Key, X-Request-ID"

/* 1 when an origin named exactly, 2 when only through "*", 0 when not allowed. */
static int origin_allowed(const struct http_server *s, const char *origin)
{
    int star = 0;
    for (int i = 0; origin && i < s->cfg.ncors_origins; i++) {
        if (!strcmp(s->cfg.cors_origins[i], origin))
            return 1;
        star |= !strcmp(s->cfg.cors_origins[i], "*");
    }
    return origin && star ? 2 : 0;
}

/* 1 when token tok is in list ("A, B, C"; case-sensitive, as methods are). */
static int in_list(const char *list, const char *tok)
{
    size_t n = strlen(tok);
    if (!n)
        return 0;
    for (const char *p = list; (p = strstr(p, tok)); p += n)
        if ((p == list || (p - list >= 2 && p[-2] == ',' && p[-1] == ' ')) &&
            (p[n] == 0 || p[n] == ','))
            return 1;
    return 0;
}

int http__cors_on(const struct http_server *s)
{
    return s->cfg.ncors_origins > 0;
}

void http__cors_preflight(struct http_req *r)
{
    struct http_server *s = r->s;
    http__reply_bytes(r, 204, NULL, (char *)"", 0, 1);
    snprintf(r->reply.allow, sizeof r->reply.allow, "%s, OPTIONS", r->m.allow);
    const char *origin = http__header(r, "Origin");
    const char *want = http__header(r, "Access-Control-Request-Method");
    int who = origin_allowed(s, origin);
    if (!want || !who)
        return;
    /* what the origin may use: the route's methods, reads only for "*" */
    char methods[64] = "";
    size_t n = 0;
    static const char *const all[] = {"GET", "HEAD", "POST", "PUT", "DELETE"};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (in_list(r->m.allow, all[i]) && (who == 1 || i < 2))
            n += (size_t)snprintf(methods + n, sizeof methods - n, "%s%s", n ? ", " : "", all[i]);
    if (!n || !in_list(methods, want))
        return;
    snprintf(r->reply.cors_origin, sizeof r->reply.cors_origin, "%s", who == 1 ? origin : "*");
    snprintf(r->reply.cors_methods, sizeof r->reply.cors_methods, "%s", methods);
}

void http__cors_headers(struct http_req *r, struct MHD_Response *resp)
{
    struct http_server *s = r->s;
    if (!http__cors_on(s))
        return;
    MHD_add_response_header(resp, "Vary", "Origin");
    const struct http_reply *rp = &r->reply;
    if (rp->cors_methods[0]) { /* an allowed preflight */
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", rp->cors_origin);
        MHD_add_response_header(resp, "Access-Control-Allow-Methods", rp->cors_methods);
        MHD_add_response_header(resp, "Access-Control-Allow-Headers", CORS_HEADERS);
        MHD_add_response_header(resp, "Access-Control-Max-Age", CORS_MAX_AGE);
        return;
    }
    if (r->m.method == HTTP_M_OTHER)
        return; /* a preflight refused, or a method nobody takes */
    const char *origin = http__header(r, "Origin");
    int who = origin_allowed(s, origin);
    int read = r->m.method == HTTP_M_GET || r->m.method == HTTP_M_HEAD;
    if (!who || (who == 2 && !read))
        return;
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", who == 1 ? origin : "*");
    MHD_add_response_header(resp, "Access-Control-Expose-Headers", "X-Request-ID, Retry-After");
}
