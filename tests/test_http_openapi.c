/* test_http_openapi.c - the OpenAPI document (src/http/openapi.c) and the
 * router agree: every route is documented with every method it takes, every
 * documented operation is routed, and every $ref resolves. */
#include "test.h"
#include "http/http_int.h"

#include <jansson.h>
#include <string.h>

static json_t *load(void)
{
    json_error_t je;
    json_t *d = json_loadb(http__openapi, http__openapi_len, JSON_REJECT_DUPLICATES, &je);
    CHECKF(d != NULL, "openapi.c is not JSON: line %d: %s", je.line, je.text);
    return d;
}

/* A path the router takes for a documented template: {id} -> "a%2Fb". */
static void concrete(const char *tpl, char *out, size_t n)
{
    const char *at = strstr(tpl, "{id}");
    if (!at)
        snprintf(out, n, "%s", tpl);
    else
        snprintf(out, n, "%.*sa%%2Fb%s", (int)(at - tpl), tpl, at + 4);
}

TEST(document_shape)
{
    json_t *d = load();
    REQUIRE(d);
    CHECK(!strcmp(json_string_value(json_object_get(d, "openapi")), "3.1.0"));
    CHECK(strstr(http__openapi, "\"@VERSION@\"") != NULL);
    CHECK(json_object_size(json_object_get(d, "paths")) >= 12);
    json_decref(d);
}

TEST(every_route_documented)
{
    json_t *d = load();
    REQUIRE(d);
    json_t *paths = json_object_get(d, "paths");
    static const char *const methods[] = {"GET", "POST", "PUT", "DELETE"};
    for (int r = 1; r < HTTP_ROUTE_COUNT_; r++) {
        const char *name = http_route_name((enum http_route)r);
        json_t *item = json_object_get(paths, name);
        CHECKF(item != NULL, "route %s is not in the document", name);
        if (!item)
            continue;
        /* the methods it takes: what a 405 lists for a method none takes */
        char path[200];
        concrete(name, path, sizeof path);
        struct http_match m;
        struct err e = {0};
        CHECK_INT_EQ(http_route_match("PATCH", path, &m, &e), -ERR_METHOD);
        for (size_t i = 0; i < 4; i++) {
            char lower[8];
            for (size_t k = 0; k <= strlen(methods[i]); k++)
                lower[k] = (char)(methods[i][k] ? methods[i][k] + 32 : 0);
            int takes = strstr(m.allow, methods[i]) != NULL;
            int documented = json_object_get(item, lower) != NULL;
            CHECKF(takes == documented, "%s %s: routed %d, documented %d", methods[i], name,
                   takes, documented);
        }
        http_match_clear(&m);
    }
    json_decref(d);
}

TEST(every_operation_routed)
{
    json_t *d = load();
    REQUIRE(d);
    const char *tpl;
    json_t *item;
    int ops = 0;
    json_object_foreach(json_object_get(d, "paths"), tpl, item) {
        const char *key;
        json_t *op;
        json_object_foreach(item, key, op) {
            if (!strcmp(key, "parameters"))
                continue;
            char method[8], path[200];
            size_t k = 0;
            for (; key[k] && k < sizeof method - 1; k++)
                method[k] = (char)(key[k] - 32);
            method[k] = 0;
            concrete(tpl, path, sizeof path);
            struct http_match m;
            struct err e = {0};
            int rc = http_route_match(method, path, &m, &e);
            CHECKF(rc == 0, "%s %s is documented but not routed: %s", method, tpl, e.msg);
            /* every operation names its errors with the one error shape */
            json_t *resp = json_object_get(op, "responses");
            CHECKF(json_object_get(resp, "405") != NULL, "%s %s: no 405", method, tpl);
            CHECKF(json_is_string(json_object_get(op, "operationId")), "%s %s: no operationId",
                   method, tpl);
            http_match_clear(&m);
            ops++;
        }
    }
    CHECKF(ops >= 16, "%d operations", ops);
    json_decref(d);
}

static char last_bad[200]; /* the last $ref that did not resolve */

/* Counts the "$ref"s under v that do not resolve in d. */
static int bad_refs(json_t *d, json_t *v)
{
    int bad = 0;
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) {
            if (!strcmp(k, "$ref")) {
                const char *ref = json_string_value(x);
                json_t *at = d;
                char buf[200];
                snprintf(buf, sizeof buf, "%s", ref ? ref : "");
                char *sv, *p = strncmp(buf, "#/", 2) ? NULL : strtok_r(buf + 2, "/", &sv);
                for (at = p ? d : NULL; p && at; p = strtok_r(NULL, "/", &sv))
                    at = json_object_get(at, p);
                if (!at) {
                    snprintf(last_bad, sizeof last_bad, "%s", ref ? ref : "(not a string)");
                    bad++;
                }
            } else {
                bad += bad_refs(d, x);
            }
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) bad += bad_refs(d, x);
    }
    return bad;
}

TEST(refs_resolve)
{
    json_t *d = load();
    REQUIRE(d);
    int bad = bad_refs(d, d);
    CHECKF(bad == 0, "%d $refs do not resolve, e.g. %s", bad, last_bad);
    /* and the check can fail */
    json_t *broken = json_pack("{s:s}", "$ref", "#/components/schemas/Nope");
    CHECK_INT_EQ(bad_refs(d, broken), 1);
    json_decref(broken);
    json_decref(d);
}

TEST_MAIN(document_shape, every_route_documented, every_operation_routed, refs_resolve)
