/* test_http_parse.c - request parsing helpers, the router and the metrics
 * text of the HTTP service: content types, percent-encoding, option values,
 * API keys, the multipart part collector fed the way MHD's post processor
 * feeds it, route matching (404/405/ids with slashes) and the Prometheus
 * exposition format. */
#include "test.h"
#include "http/metrics.h"
#include "http/parse.h"
#include "http/router.h"

#include <time.h>
#include <unistd.h>

TEST(body_kinds)
{
    CHECK_INT_EQ(http_body_kind_of(NULL), HTTP_BODY_NONE);
    CHECK_INT_EQ(http_body_kind_of(""), HTTP_BODY_NONE);
    CHECK_INT_EQ(http_body_kind_of("application/json"), HTTP_BODY_JSON);
    CHECK_INT_EQ(http_body_kind_of("Application/JSON; charset=utf-8"), HTTP_BODY_JSON);
    CHECK_INT_EQ(http_body_kind_of("application/vnd.api+json"), HTTP_BODY_JSON);
    CHECK_INT_EQ(http_body_kind_of("multipart/form-data; boundary=x"), HTTP_BODY_MULTIPART);
    CHECK_INT_EQ(http_body_kind_of("image/jpeg"), HTTP_BODY_IMAGE);
    CHECK_INT_EQ(http_body_kind_of(" image/webp"), HTTP_BODY_IMAGE);
    CHECK_INT_EQ(http_body_kind_of("application/octet-stream"), HTTP_BODY_IMAGE);
    CHECK_INT_EQ(http_body_kind_of("image/"), HTTP_BODY_OTHER);
    CHECK_INT_EQ(http_body_kind_of("text/plain"), HTTP_BODY_OTHER);
    CHECK_INT_EQ(http_body_kind_of("application/jsonx"), HTTP_BODY_OTHER);
    CHECK_INT_EQ(http_body_kind_of("application/x-www-form-urlencoded"), HTTP_BODY_OTHER);
}

TEST(percent_encoding)
{
    char *s = NULL;
    struct err e = {0};
    CHECK_INT_EQ(http_pct_decode("a%2Fb%20c+d", 11, 0, &s, &e), 0);
    CHECK(s && strcmp(s, "a/b c+d") == 0);
    free(s);
    CHECK_INT_EQ(http_pct_decode("a%2fb+c", 7, 1, &s, &e), 0);
    CHECK(s && strcmp(s, "a/b c") == 0);
    free(s);
    CHECK_INT_EQ(http_pct_decode("%C3%A9", 6, 0, &s, &e), 0);
    CHECK(s && strcmp(s, "\xc3\xa9") == 0);
    free(s);
    CHECK_INT_EQ(http_pct_decode("ab%2", 4, 0, &s, &e), -ERR_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(e.msg, "offset 2");
    CHECK(s == NULL);
    CHECK_INT_EQ(http_pct_decode("%zz", 3, 0, &s, &e), -ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(http_pct_decode("x%00y", 5, 0, &s, &e), -ERR_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(e.msg, "NUL");
    char *enc = http_pct_encode("a/b c~_.-\xc3\xa9%");
    CHECK(enc && strcmp(enc, "a%2Fb%20c~_.-%C3%A9%25") == 0);
    CHECK_INT_EQ(http_pct_decode(enc, strlen(enc), 0, &s, &e), 0);
    CHECK(s && strcmp(s, "a/b c~_.-\xc3\xa9%") == 0);
    free(s);
    free(enc);
}

TEST(values)
{
    long v = 0;
    float f = 0;
    struct err e = {0};
    CHECK_INT_EQ(http_parse_long("k", "12", 1, 1000, &v, &e), 0);
    CHECK_INT_EQ(v, 12);
    CHECK_INT_EQ(http_parse_long("k", " 7 ", 1, 1000, &v, &e), 0);
    CHECK_INT_EQ(http_parse_long("k", "0", 1, 1000, &v, &e), -ERR_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(e.msg, "k must be an integer in [1, 1000], not '0'");
    CHECK_INT_EQ(http_parse_long("k", "5x", 1, 1000, &v, &e), -ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(http_parse_long("k", "", 1, 1000, &v, &e), -ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(http_parse_long("k", "99999999999999999999", 1, 1000, &v, &e), -ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(http_parse_float("min_score", "0.25", -1, 1, &f, &e), 0);
    CHECK(f == 0.25f);
    CHECK_INT_EQ(http_parse_float("min_score", "nan", -1, 1, &f, &e), -ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(http_parse_float("min_score", "2", -1, 1, &f, &e), -ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(http_parse_bool("1"), 1);
    CHECK_INT_EQ(http_parse_bool("true"), 1);
    CHECK_INT_EQ(http_parse_bool(NULL), 0);
    CHECK_INT_EQ(http_parse_bool("off"), 0);
    CHECK_INT_EQ(http_parse_bool("maybe"), -1);
    char f1[] = "category=shoes=red", *k, *val;
    CHECK_INT_EQ(http_split_filter(f1, &k, &val, &e), 0);
    CHECK(!strcmp(k, "category") && !strcmp(val, "shoes=red"));
    char f2[] = "=x", f3[] = "novalue";
    CHECK_INT_EQ(http_split_filter(f2, &k, &val, &e), -ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(http_split_filter(f3, &k, &val, &e), -ERR_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(e.msg, "KEY=VALUE");
}

TEST(api_keys)
{
    size_t n = 0;
    const char *t = http_bearer_token("Bearer s3cret ", &n);
    CHECK(t && n == 6 && !strncmp(t, "s3cret", 6));
    t = http_bearer_token("bearer\tk", &n);
    CHECK(t && n == 1 && *t == 'k');
    CHECK(http_bearer_token("Basic dXNlcjpw", &n) == NULL);
    CHECK(http_bearer_token("Bearer", &n) == NULL);
    CHECK(http_bearer_token("Bearer   ", &n) == NULL);
    CHECK(http_bearer_token("Bearerx k", &n) == NULL);
    CHECK(http_bearer_token(NULL, &n) == NULL);
    CHECK(http_key_equal("s3cret", 6, "s3cret"));
    CHECK(!http_key_equal("s3cre", 5, "s3cret"));
    CHECK(!http_key_equal("s3cret!", 7, "s3cret"));
    CHECK(!http_key_equal("s3cres", 6, "s3cret"));
    CHECK(!http_key_equal("", 0, "s3cret"));
}

/* Feeds parts the way MHD_post_process calls its iterator. */
TEST(multipart_parts)
{
    struct http_parts ps = {.max_bytes = 100, .max_parts = 4};
    struct err e = {0};
    CHECK_INT_EQ(http_parts_add(&ps, "image", "a.jpg", "image/jpeg", "", 0, 0, &e), 0);
    CHECK_INT_EQ(http_parts_add(&ps, "image", "a.jpg", "image/jpeg", "abc", 0, 3, &e), 0);
    CHECK_INT_EQ(http_parts_add(&ps, "image", "a.jpg", "image/jpeg", "de", 3, 2, &e), 0);
    CHECK_INT_EQ(http_parts_add(&ps, "k", NULL, NULL, "5", 0, 1, &e), 0);
    CHECK_INT_EQ(http_parts_add(&ps, "image", "b.png", NULL, "xy", 0, 2, &e), 0);
    CHECK_INT_EQ(ps.n, 3);
    CHECK_INT_EQ(ps.bytes, 8);
    const struct http_part *p = http_parts_get(&ps, "image", 0);
    REQUIRE(p);
    CHECK(p->len == 5 && !memcmp(p->data, "abcde", 5) && p->data[5] == 0);
    CHECK(!strcmp(p->filename, "a.jpg") && !strcmp(p->ctype, "image/jpeg"));
    p = http_parts_get(&ps, "image", 1);
    REQUIRE(p);
    CHECK(p->len == 2 && !strcmp(p->filename, "b.png") && p->ctype == NULL);
    CHECK(http_parts_get(&ps, "image", 2) == NULL);
    CHECK_INT_EQ(http_parts_count(&ps, "image"), 2);
    p = http_parts_get(&ps, "k", 0);
    CHECK(p && !strcmp((const char *)p->data, "5"));
    /* a gap in the offsets is a malformed stream */
    CHECK_INT_EQ(http_parts_add(&ps, "image", "b.png", NULL, "z", 7, 1, &e), -ERR_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(e.msg, "offset 7 after 2 bytes");
    /* the byte limit counts every part */
    char big[100];
    memset(big, 'x', sizeof big);
    CHECK_INT_EQ(http_parts_add(&ps, "image", "b.png", NULL, big, 2, 93, &e), -ERR_TOO_LARGE);
    CHECK_STR_CONTAINS(e.msg, "limit of 100 bytes");
    CHECK_INT_EQ(http_parts_add(&ps, "x", NULL, NULL, "1", 0, 1, &e), 0);
    CHECK_INT_EQ(http_parts_add(&ps, "y", NULL, NULL, "1", 0, 1, &e), -ERR_TOO_LARGE);
    CHECK_STR_CONTAINS(e.msg, "more than 4 multipart parts");
    http_parts_free(&ps);
    CHECK(ps.n == 0 && ps.v == NULL && ps.bytes == 0);
    /* a part may be large: grows past its first allocation */
    struct http_parts big_ps = {0};
    static char chunk[5000];
    memset(chunk, 'q', sizeof chunk);
    for (int i = 0; i < 10; i++)
        CHECK_INT_EQ(http_parts_add(&big_ps, "image", NULL, NULL, chunk, (uint64_t)i * 5000, 5000, &e), 0);
    CHECK(big_ps.n == 1 && big_ps.v[0].len == 50000);
    http_parts_free(&big_ps);
}

static int route(const char *m, const char *path, struct http_match *hm)
{
    struct err e = {0};
    return http_route_match(m, path, hm, &e);
}

TEST(router)
{
    struct http_match m;
    CHECK_INT_EQ(route("GET", "/", &m), 0);
    CHECK_INT_EQ(m.route, HTTP_ROUTE_PAGE);
    CHECK_INT_EQ(route("HEAD", "/health", &m), 0);
    CHECK_INT_EQ(m.route, HTTP_ROUTE_HEALTH);
    CHECK_INT_EQ(route("GET", "/metrics", &m), 0);
    CHECK_INT_EQ(route("POST", "/extract-features", &m), 0);
    CHECK_INT_EQ(m.route, HTTP_ROUTE_FEATURES);
    CHECK_INT_EQ(route("POST", "/extract-features-batch", &m), 0);
    CHECK_INT_EQ(m.route, HTTP_ROUTE_FEATURES_BATCH);
    CHECK_INT_EQ(route("POST", "/search", &m), 0);
    CHECK_INT_EQ(route("POST", "/classify", &m), 0);
    CHECK_INT_EQ(route("GET", "/items", &m), 0);
    CHECK_INT_EQ(m.route, HTTP_ROUTE_ITEMS);
    CHECK(m.id == NULL);
    /* wrong method: 405 with the allowed ones */
    CHECK_INT_EQ(route("GET", "/search", &m), -ERR_METHOD);
    CHECK_INT_EQ(m.route, HTTP_ROUTE_SEARCH);
    CHECK(!strcmp(m.allow, "POST"));
    CHECK_INT_EQ(route("DELETE", "/health", &m), -ERR_METHOD);
    CHECK(!strcmp(m.allow, "GET, HEAD"));
    CHECK_INT_EQ(route("PATCH", "/items/a", &m), -ERR_METHOD);
    CHECK(!strcmp(m.allow, "GET, HEAD, PUT, DELETE"));
    /* unknown paths */
    CHECK_INT_EQ(route("GET", "/nope", &m), -ERR_NOT_FOUND);
    CHECK_INT_EQ(m.route, HTTP_ROUTE_NONE);
    CHECK_INT_EQ(route("GET", "/search/", &m), -ERR_NOT_FOUND);
    CHECK_INT_EQ(route("GET", "/itemsx", &m), -ERR_NOT_FOUND);
    /* ids: decoded once, slashes allowed */
    CHECK_INT_EQ(route("PUT", "/items/shoe%2F42", &m), 0);
    CHECK_INT_EQ(m.route, HTTP_ROUTE_ITEM);
    CHECK(m.id && !strcmp(m.id, "shoe/42"));
    http_match_clear(&m);
    CHECK_INT_EQ(route("GET", "/items/sub/dir/a.jpg", &m), 0);
    CHECK(m.route == HTTP_ROUTE_ITEM && !strcmp(m.id, "sub/dir/a.jpg"));
    http_match_clear(&m);
    CHECK_INT_EQ(route("GET", "/items/a%2Fb/image", &m), 0);
    CHECK(m.route == HTTP_ROUTE_ITEM_IMAGE && !strcmp(m.id, "a/b"));
    http_match_clear(&m);
    CHECK_INT_EQ(route("HEAD", "/items/x/image", &m), 0);
    CHECK(m.route == HTTP_ROUTE_ITEM_IMAGE && !strcmp(m.id, "x"));
    http_match_clear(&m);
    CHECK_INT_EQ(route("GET", "/items/a%2Fimage", &m), 0); /* an id ending in /image */
    CHECK(m.route == HTTP_ROUTE_ITEM && !strcmp(m.id, "a/image"));
    http_match_clear(&m);
    CHECK_INT_EQ(route("PUT", "/items/x/image", &m), -ERR_METHOD);
    CHECK(!strcmp(m.allow, "GET, HEAD"));
    CHECK_INT_EQ(route("GET", "/items/../../etc/passwd/image", &m), 0);
    CHECK(m.route == HTTP_ROUTE_ITEM_IMAGE && !strcmp(m.id, "../../etc/passwd"));
    http_match_clear(&m);
    struct err e = {0};
    CHECK_INT_EQ(http_route_match("GET", "/items/bad%zz", &m, &e), -ERR_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(e.msg, "item id");
    CHECK(m.id == NULL);
    CHECK_INT_EQ(http_route_match("GET", "/items/nul%00", &m, &e), -ERR_INVALID_ARGUMENT);
    /* issue 9: an id that is not UTF-8 is refused before it reaches the store */
    CHECK_INT_EQ(http_route_match("PUT", "/items/bad%FF%FEid", &m, &e), -ERR_INVALID_UTF8);
    CHECK(m.id == NULL);
    CHECK_INT_EQ(http_route_match("GET", "/items/%C3%A9t%C3%A9/image", &m, &e), 0);
    CHECK(m.route == HTTP_ROUTE_ITEM_IMAGE && !strcmp(m.id, "\xC3\xA9t\xC3\xA9"));
    http_match_clear(&m);
    CHECK(!strcmp(http_route_name(HTTP_ROUTE_ITEM_IMAGE), "/items/{id}/image"));
    CHECK(!strcmp(http_route_name(HTTP_ROUTE_NONE), "other"));
    CHECK_INT_EQ(http_method_of("BREW"), HTTP_M_OTHER);
}

TEST(metrics_text)
{
    static struct http_metrics m;
    http_metrics_init(&m);
    http_metrics_request(&m, HTTP_ROUTE_SEARCH, 200, 0.003);
    http_metrics_request(&m, HTTP_ROUTE_SEARCH, 200, 0.2);
    http_metrics_request(&m, HTTP_ROUTE_SEARCH, 400, 0.0001);
    http_metrics_request(&m, HTTP_ROUTE_HEALTH, 503, 20);
    http_metrics_request(&m, HTTP_ROUTE_NONE, 404, 0.001);
    http_metrics_request(&m, HTTP_ROUTE_ITEM, 431, 0.001); /* not in the table: as 400 */
    struct http_metrics_extra x = {.items = 12, .waiting = 3, .image_embeddings = 40,
                                   .batches = 3, .batch_sum = 40, .queue_depth = 2};
    x.batch_hist[pipe_sched_bucket(1)] = 1;
    x.batch_hist[pipe_sched_bucket(16)] = 2;
    x.batch_hist[pipe_sched_bucket(1000)] = 0;
    CHECK_INT_EQ(pipe_sched_bucket(1), 0);
    CHECK_INT_EQ(pipe_sched_bucket(3), 2);
    CHECK_INT_EQ(pipe_sched_bucket(16), 4);
    CHECK_INT_EQ(pipe_sched_bucket(100000), HTTP_METRICS_BATCH_BUCKETS);
    x.version = "1.2";
    x.model = "m\"odel\\x";
    x.precision = "fp32";
    struct http_metrics_process p = {.cpu_seconds = 1.5, .start_time_s = 1700000000.25,
                                     .resident_bytes = 4096, .open_fds = 7};
    size_t n = 0;
    char *t = http_metrics_render(&m, &x, &p, &n);
    REQUIRE(t);
    CHECK_INT_EQ(n, strlen(t));
    CHECK_STR_CONTAINS(t, "# TYPE imgsearch_http_requests_total counter\n");
    CHECK_STR_CONTAINS(t, "imgsearch_http_requests_total{route=\"/search\",status=\"200\"} 2\n");
    CHECK_STR_CONTAINS(t, "imgsearch_http_requests_total{route=\"/search\",status=\"400\"} 1\n");
    CHECK_STR_CONTAINS(t, "imgsearch_http_requests_total{route=\"/health\",status=\"503\"} 1\n");
    CHECK_STR_CONTAINS(t, "imgsearch_http_requests_total{route=\"other\",status=\"404\"} 1\n");
    CHECK_STR_CONTAINS(t, "imgsearch_http_requests_total{route=\"/items/{id}\",status=\"400\"} 1\n");
    /* cumulative buckets: 0.0001 <= 0.0005, 0.003 <= 0.005, 0.2 <= 0.25 */
    CHECK_STR_CONTAINS(t, "imgsearch_http_request_duration_seconds_bucket{route=\"/search\",le=\"0.0005\"} 1\n");
    CHECK_STR_CONTAINS(t, "imgsearch_http_request_duration_seconds_bucket{route=\"/search\",le=\"0.005\"} 2\n");
    CHECK_STR_CONTAINS(t, "imgsearch_http_request_duration_seconds_bucket{route=\"/search\",le=\"0.1\"} 2\n");
    CHECK_STR_CONTAINS(t, "imgsearch_http_request_duration_seconds_bucket{route=\"/search\",le=\"0.25\"} 3\n");
    CHECK_STR_CONTAINS(t, "imgsearch_http_request_duration_seconds_bucket{route=\"/search\",le=\"+Inf\"} 3\n");
    CHECK_STR_CONTAINS(t, "imgsearch_http_request_duration_seconds_count{route=\"/search\"} 3\n");
    CHECK_STR_CONTAINS(t, "imgsearch_http_request_duration_seconds_bucket{route=\"/health\",le=\"10\"} 0\n");
    CHECK_STR_CONTAINS(t, "imgsearch_http_request_duration_seconds_bucket{route=\"/health\",le=\"+Inf\"} 1\n");
    CHECK_STR_CONTAINS(t, "imgsearch_embeddings_computed_total{kind=\"image\"} 40\n");
    CHECK_STR_CONTAINS(t, "imgsearch_batch_size_bucket{le=\"1\"} 1\n");
    CHECK_STR_CONTAINS(t, "imgsearch_batch_size_bucket{le=\"8\"} 1\n");
    CHECK_STR_CONTAINS(t, "imgsearch_batch_size_bucket{le=\"16\"} 3\n");
    CHECK_STR_CONTAINS(t, "imgsearch_batch_size_bucket{le=\"+Inf\"} 3\n");
    CHECK_STR_CONTAINS(t, "imgsearch_batch_size_count 3\n");
    CHECK_STR_CONTAINS(t, "imgsearch_batch_queue_depth 2\n");
    CHECK_STR_CONTAINS(t, "imgsearch_items_waiting 3\n");
    CHECK_STR_CONTAINS(t, "imgsearch_items 12\n");
    CHECK_STR_CONTAINS(t, "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.50\n");
    CHECK_STR_CONTAINS(t, "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 4096\n");
    CHECK_STR_CONTAINS(t, "# TYPE process_open_fds gauge\nprocess_open_fds 7\n");
    CHECK_STR_CONTAINS(t, "process_start_time_seconds 1700000000.25\n");
    /* label values escaped: the quote and the backslash */
    CHECK_STR_CONTAINS(t, "imgsearch_build_info{version=\"1.2\",model=\"m\\\"odel\\\\x\","
                          "precision=\"fp32\"} 1\n");
    /* every line is a comment or "name{labels} value" */
    for (char *line = strtok(t, "\n"); line; line = strtok(NULL, "\n"))
        CHECKF(line[0] == '#' || (strchr(line, ' ') && (strncmp(line, "imgsearch_", 10) == 0 ||
                                                        strncmp(line, "process_", 8) == 0)),
               "bad line: %s", line);
    free(t);
    /* what /proc cannot say is left out, not shown as -1 */
    p = (struct http_metrics_process){-1, -1, -1, -1};
    t = http_metrics_render(&m, &x, &p, &n);
    REQUIRE(t);
    CHECK(!strstr(t, "process_"));
    CHECK_STR_CONTAINS(t, "imgsearch_build_info{");
    free(t);
}

TEST(metrics_process)
{
    struct http_metrics_process p;
    REQUIRE(http_metrics_process(&p) == 0);
    CHECK(p.cpu_seconds >= 0);
    CHECK(p.resident_bytes > 4096);
    /* stdin, stdout, stderr, and one we open now */
    int fd = dup(2);
    REQUIRE(fd >= 0);
    struct http_metrics_process q;
    http_metrics_process(&q);
    CHECK(q.open_fds >= 4);
    CHECK_INT_EQ(q.open_fds, p.open_fds + 1);
    close(fd);
    /* started before now, and after the year 2020 */
    double now = (double)time(NULL);
    CHECKF(p.start_time_s <= now + 1 && p.start_time_s > 1577836800, "start %f now %f",
           p.start_time_s, now);
}

TEST_MAIN(body_kinds, percent_encoding, values, api_keys, multipart_parts, router, metrics_text,
          metrics_process)
