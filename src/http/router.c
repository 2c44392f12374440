/* router.c - the route table of the API (see router.h).
 *
 * 1. Paths arrive raw: the server turns off libmicrohttpd's unescaping so
 *    that "/items/a%2Fb/image" keeps its structure; ids are decoded here,
 *    exactly once.
 * 2. A known path with the wrong method is 405 with an Allow list (RFC
 *    9110 section 15.5.6); HEAD is served wherever GET is.
 * 3. Once matched, http__dispatch hands the request to its resource's
 *    handler (api_*.c); what each route's JSON body may hold and which
 *    routes are cheap enough for the poll threads are decided here too.
 */
#include "http/router.h"
#include "http/http_int.h"
#include "http/thumbs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/parse.h"
#include "util/utf8.h"

enum http_method http_method_of(const char *m)
{
    if (!m)
        return HTTP_M_OTHER;
    if (!strcmp(m, "GET"))
        return HTTP_M_GET;
    if (!strcmp(m, "HEAD"))
        return HTTP_M_HEAD;
    if (!strcmp(m, "POST"))
        return HTTP_M_POST;
    if (!strcmp(m, "PUT"))
        return HTTP_M_PUT;
    if (!strcmp(m, "DELETE"))
        return HTTP_M_DELETE;
    return HTTP_M_OTHER;
}

static const struct {
    const char *path;
    enum http_route route;
    unsigned methods;
} fixed[] = {
    {"/", HTTP_ROUTE_PAGE, HTTP_M_GET | HTTP_M_HEAD},
    {"/index.html", HTTP_ROUTE_PAGE, HTTP_M_GET | HTTP_M_HEAD},
    {"/health", HTTP_ROUTE_HEALTH, HTTP_M_GET | HTTP_M_HEAD},
    {"/ready", HTTP_ROUTE_READY, HTTP_M_GET | HTTP_M_HEAD},
    {"/metrics", HTTP_ROUTE_METRICS, HTTP_M_GET | HTTP_M_HEAD},
    {"/openapi.json", HTTP_ROUTE_OPENAPI, HTTP_M_GET | HTTP_M_HEAD},
    {"/docs", HTTP_ROUTE_DOCS, HTTP_M_GET | HTTP_M_HEAD},
    {"/extract-features", HTTP_ROUTE_FEATURES, HTTP_M_POST},
    {"/extract-features-batch", HTTP_ROUTE_FEATURES_BATCH, HTTP_M_POST},
    {"/search", HTTP_ROUTE_SEARCH, HTTP_M_POST},
    {"/classify", HTTP_ROUTE_CLASSIFY, HTTP_M_POST},
    {"/items", HTTP_ROUTE_ITEMS, HTTP_M_GET | HTTP_M_HEAD},
    {"/items/", HTTP_ROUTE_ITEMS, HTTP_M_GET | HTTP_M_HEAD},
};

static void allow_list(unsigned methods, char *out, size_t n)
{
    static const struct {
        unsigned m;
        const char *name;
    } names[] = {{HTTP_M_GET, "GET"}, {HTTP_M_HEAD, "HEAD"}, {HTTP_M_POST, "POST"},
                 {HTTP_M_PUT, "PUT"}, {HTTP_M_DELETE, "DELETE"}};
    size_t o = 0;
    out[0] = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (methods & names[i].m)
            o += (size_t)snprintf(out + o, n - o, "%s%s", o ? ", " : "", names[i].name);
}

static int method_check(struct http_match *m, unsigned allowed, struct err *err)
{
    if (m->method & allowed)
        return 0;
    allow_list(allowed, m->allow, sizeof m->allow);
    return err_set(err, ERR_METHOD, "method not allowed here; allowed: %s", m->allow);
}

int http_route_match(const char *method, const char *path, struct http_match *m,
                     struct err *err)
{
    memset(m, 0, sizeof *m);
    m->method = http_method_of(method);
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (!strcmp(path, fixed[i].path)) {
            m->route = fixed[i].route;
            return method_check(m, fixed[i].methods, err);
        }
    static const char items[] = "/items/", image[] = "/image";
    const size_t ni = sizeof items - 1, nm = sizeof image - 1;
    if (strncmp(path, items, ni) != 0)
        return err_set(err, ERR_NOT_FOUND, "no route for %.200s", path);
    const char *rest = path + ni;
    size_t n = strlen(rest);
    unsigned allowed = HTTP_M_GET | HTTP_M_HEAD | HTTP_M_PUT | HTTP_M_DELETE;
    m->route = HTTP_ROUTE_ITEM;
    if (n > nm && !strcmp(rest + n - nm, image)) {
        m->route = HTTP_ROUTE_ITEM_IMAGE;
        n -= nm;
        allowed = HTTP_M_GET | HTTP_M_HEAD;
    } else if (n > 6 && !strcmp(rest + n - 6, "/thumb")) { /* thumbs.c */
        m->route = HTTP_ROUTE_ITEM_THUMB;
        n -= 6;
        allowed = HTTP_M_GET | HTTP_M_HEAD;
    }
    int rc = method_check(m, allowed, err);
    if (rc)
        return rc;
    if ((rc = http_pct_decode(rest, n, 0, &m->id, err))) {
        err_prefix(err, "item id");
        return rc;
    }
    size_t bad = 0;
    if (utf8_check((const uint8_t *)m->id, strlen(m->id), &bad)) {
        http_match_clear(m);
        return err_set(err, ERR_INVALID_UTF8, "item id is not valid UTF-8 once decoded (byte %zu)",
                       bad);
    }
    return 0;
}

void http_match_clear(struct http_match *m)
{
    free(m->id);
    m->id = NULL;
}

const char *http_route_name(enum http_route r)
{
    switch (r) {
    case HTTP_ROUTE_PAGE: return "/";
    case HTTP_ROUTE_HEALTH: return "/health";
    case HTTP_ROUTE_READY: return "/ready";
    case HTTP_ROUTE_METRICS: return "/metrics";
    case HTTP_ROUTE_OPENAPI: return "/openapi.json";
    case HTTP_ROUTE_DOCS: return "/docs";
    case HTTP_ROUTE_FEATURES: return "/extract-features";
    case HTTP_ROUTE_FEATURES_BATCH: return "/extract-features-batch";
    case HTTP_ROUTE_SEARCH: return "/search";
    case HTTP_ROUTE_CLASSIFY: return "/classify";
    case HTTP_ROUTE_ITEMS: return "/items";
    case HTTP_ROUTE_ITEM: return "/items/{id}";
    case HTTP_ROUTE_ITEM_IMAGE: return "/items/{id}/image";
    case HTTP_ROUTE_ITEM_THUMB: return "/items/{id}/thumb";
    default: return "other";
    }
}

/* ---- dispatch ------------------------------------------------------------ */

struct http_json_limits http__json_limits(const struct http_server *s, enum http_route r)
{
    /* the body object and its scalars, room for fields we ignore */
    const size_t base = 64;
    switch (r) {
    case HTTP_ROUTE_SEARCH: /* {"vector": [dim], "filter": {...} or [...]} */
        return (struct http_json_limits){
            base + (size_t)(s->pipe ? s->pipe->dim : STORE_DIM_MAX) + 2 * STORE_FILTERS_MAX, 3};
    case HTTP_ROUTE_FEATURES_BATCH: /* {"images": [...]} */
        return (struct http_json_limits){base + (size_t)s->cfg.batch_limit, 2};
    case HTTP_ROUTE_CLASSIFY: /* {"labels": [...]} */
        return (struct http_json_limits){base + HTTP_MAX_LABELS, 2};
    case HTTP_ROUTE_ITEM: /* {"image", "metadata": {...}}: "1," per value at most */
        return (struct http_json_limits){base + STORE_METADATA_MAX / 2,
                                         1 + STORE_METADATA_DEPTH_MAX};
    default:
        return (struct http_json_limits){base, 2};
    }
}

const char *const *http__json_fields(enum http_route r, enum http_method m)
{
    static const char *const features[] = {"image", NULL};
    static const char *const batch[] = {"images", "image", NULL};
    static const char *const search[] = {"image", "text", "vector", "id", "k", "offset",
                                         "min_score", "ef", "filter", NULL};
    static const char *const classify[] = {"image", "labels", "template", "top", NULL};
    static const char *const item_put[] = {"image", "metadata", NULL};
    static const char *const none[] = {NULL};
    switch (r) {
    case HTTP_ROUTE_FEATURES: return features;
    case HTTP_ROUTE_FEATURES_BATCH: return batch;
    case HTTP_ROUTE_SEARCH: return search;
    case HTTP_ROUTE_CLASSIFY: return classify;
    case HTTP_ROUTE_ITEM: return m == HTTP_M_PUT ? item_put : none;
    default: return none;
    }
}

int http__inline_route(enum http_route r)
{
    return r == HTTP_ROUTE_NONE || r == HTTP_ROUTE_PAGE || r == HTTP_ROUTE_HEALTH ||
           r == HTTP_ROUTE_METRICS || r == HTTP_ROUTE_OPENAPI || r == HTTP_ROUTE_DOCS;
}

void http__dispatch(struct http_req *r)
{
    switch (r->m.route) {
    case HTTP_ROUTE_PAGE: http__api_page(r); break;
    case HTTP_ROUTE_HEALTH: http__api_health(r); break;
    case HTTP_ROUTE_READY: http__api_ready(r); break;
    case HTTP_ROUTE_METRICS: http__api_metrics(r); break;
    case HTTP_ROUTE_OPENAPI: http__api_openapi(r); break;
    case HTTP_ROUTE_DOCS: http__api_docs(r); break;
    case HTTP_ROUTE_FEATURES: http__api_features(r); break;
    case HTTP_ROUTE_FEATURES_BATCH: http__api_features_batch(r); break;
    case HTTP_ROUTE_SEARCH: http__api_search(r); break;
    case HTTP_ROUTE_CLASSIFY: http__api_classify(r); break;
    case HTTP_ROUTE_ITEMS: http__api_items_list(r); break;
    case HTTP_ROUTE_ITEM:
        if (r->m.method == HTTP_M_PUT)
            http__api_item_put(r);
        else if (r->m.method == HTTP_M_DELETE)
            http__api_item_delete(r);
        else
            http__api_item_get(r);
        break;
    case HTTP_ROUTE_ITEM_IMAGE: http__api_item_image(r); break;
    case HTTP_ROUTE_ITEM_THUMB: http__item_thumb(r); break; /* thumbs.c */
    default: http__reply_errf(r, ERR_NOT_FOUND, "no such endpoint"); break;
    }
    if (!r->reply.status)
        http__reply_errf(r, ERR_INTERNAL, "the handler gave no reply");
}
