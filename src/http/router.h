/* router.h - maps a method and a raw (still percent-encoded) URL path to a
 * route of the API and the item id it names.
 *
 * Item ids may hold any byte but NUL, '/' included (catalog ids are
 * relative paths), so the id is everything after "/items/", decoded once.
 * A raw path ending in "/image" is the item's image (GET, HEAD only); an
 * id that itself ends in "/image" is sent with that slash encoded (%2F).
 */
#ifndef IMGSEARCH_HTTP_ROUTER_H
#define IMGSEARCH_HTTP_ROUTER_H

#include "util/err.h"

enum http_route {
    HTTP_ROUTE_NONE,           /* no route: 404 (or 405) */
    HTTP_ROUTE_PAGE,           /* GET / */
    HTTP_ROUTE_HEALTH,         /* GET /health: liveness */
    HTTP_ROUTE_READY,          /* GET /ready: readiness */
    HTTP_ROUTE_METRICS,        /* GET /metrics */
    HTTP_ROUTE_OPENAPI,        /* GET /openapi.json */
    HTTP_ROUTE_DOCS,           /* GET /docs */
    HTTP_ROUTE_FEATURES,       /* POST /extract-features */
    HTTP_ROUTE_FEATURES_BATCH, /* POST /extract-features-batch */
    HTTP_ROUTE_SEARCH,         /* POST /search */
    HTTP_ROUTE_CLASSIFY,       /* POST /classify */
    HTTP_ROUTE_ITEMS,          /* GET /items */
    HTTP_ROUTE_ITEM,           /* GET, PUT, DELETE /items/{id} */
    HTTP_ROUTE_ITEM_IMAGE,     /* GET /items/{id}/image */
    HTTP_ROUTE_ITEM_THUMB,     /* GET /items/{id}/thumb?size=N (thumbs.c) */
    HTTP_ROUTE_COUNT_
};

enum http_method {
    HTTP_M_GET = 1,
    HTTP_M_HEAD = 2,
    HTTP_M_POST = 4,
    HTTP_M_PUT = 8,
    HTTP_M_DELETE = 16,
    HTTP_M_OTHER = 32,
};

/* Method name -> enum (HTTP_M_OTHER for anything unknown). */
enum http_method http_method_of(const char *method);

struct http_match {
    enum http_route route; /* matched route */
    enum http_method method;
    char *id;              /* decoded item id (malloc'd) for ITEM, ITEM_IMAGE */
    char allow[48];        /* for 405: "GET, HEAD" etc. */
};

/* Fills m (free m->id with http_match_clear). Returns 0, -ERR_NOT_FOUND
 * (no such path), -ERR_METHOD (path known, method not: m->allow says which
 * are), -ERR_INVALID_ARGUMENT (bad escape in the id, empty id), or
 * -ERR_INVALID_UTF8 (the decoded id is not UTF-8). */
int http_route_match(const char *method, const char *path, struct http_match *m,
                     struct err *err);
void http_match_clear(struct http_match *m);

/* Stable label for metrics: "/search", "/items/{id}", "other". */
const char *http_route_name(enum http_route r);

#endif
