/* test_http_ratelimit.c - the per-address token buckets of the HTTP
 * service: burst then refusal with the exact wait, refill at the rate,
 * addresses independent, IPv6 keyed by /64, the address cap (overflow
 * bucket) and pruning of refilled buckets. The clock is passed in. */
#include <arpa/inet.h>
#include <netinet/in.h>

#include "test.h"
#include "http/ratelimit.h"

static void key4(const char *ip, uint8_t k[HTTP_RATELIMIT_KEY])
{
    struct sockaddr_in in = {.sin_family = AF_INET};
    inet_pton(AF_INET, ip, &in.sin_addr);
    http_ratelimit_key((const struct sockaddr *)&in, k);
}

static void key6(const char *ip, uint8_t k[HTTP_RATELIMIT_KEY])
{
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, ip, &in6.sin6_addr);
    http_ratelimit_key((const struct sockaddr *)&in6, k);
}

TEST(burst_then_wait)
{
    struct http_ratelimit *rl;
    struct err e = {0};
    REQUIRE(http_ratelimit_new(&rl, 2, 3, 100, &e) == 0);
    uint8_t a[HTTP_RATELIMIT_KEY];
    key4("192.0.2.1", a);
    double t = 1000;
    for (int i = 0; i < 3; i++)
        CHECK(http_ratelimit_take(rl, a, t) == 0);
    /* empty: one token takes 1/rate = 0.5 s */
    CHECKF(fabs(http_ratelimit_take(rl, a, t) - 0.5) < 1e-9, "wait");
    /* refused requests take nothing: 0.2 s later the wait is 0.3 s */
    CHECKF(fabs(http_ratelimit_take(rl, a, t + 0.2) - 0.3) < 1e-9, "wait after 0.2 s");
    CHECK(http_ratelimit_take(rl, a, t + 0.5) == 0);
    CHECK(http_ratelimit_take(rl, a, t + 0.5) > 0);
    /* after a long pause the bucket is full again, never fuller */
    for (int i = 0; i < 3; i++)
        CHECK(http_ratelimit_take(rl, a, t + 100) == 0);
    CHECK(http_ratelimit_take(rl, a, t + 100) > 0);
    http_ratelimit_free(rl);
}

TEST(addresses_are_independent)
{
    struct http_ratelimit *rl;
    struct err e = {0};
    REQUIRE(http_ratelimit_new(&rl, 1, 1, 100, &e) == 0);
    uint8_t a[HTTP_RATELIMIT_KEY], b[HTTP_RATELIMIT_KEY], c[HTTP_RATELIMIT_KEY],
        d[HTTP_RATELIMIT_KEY], m[HTTP_RATELIMIT_KEY];
    key4("192.0.2.1", a);
    key4("192.0.2.2", b);
    key6("2001:db8:1:2::1", c);
    key6("2001:db8:1:2:ffff::7", d); /* same /64 as c */
    key6("::ffff:192.0.2.1", m);     /* a mapped, as from a dual-stack socket */
    CHECK(http_ratelimit_take(rl, a, 5) == 0);
    CHECK(http_ratelimit_take(rl, a, 5) > 0);
    CHECK(http_ratelimit_take(rl, m, 5) > 0);
    CHECK(http_ratelimit_take(rl, b, 5) == 0);
    CHECK(http_ratelimit_take(rl, c, 5) == 0);
    CHECK(http_ratelimit_take(rl, d, 5) > 0);
    CHECK(memcmp(c, d, HTTP_RATELIMIT_KEY) == 0);
    CHECK(memcmp(a, b, HTTP_RATELIMIT_KEY) != 0);
    struct sockaddr un = {.sa_family = AF_UNIX};
    CHECK_INT_EQ(http_ratelimit_key(&un, a), -1);
    http_ratelimit_free(rl);
}

TEST(cap_overflow_and_prune)
{
    struct http_ratelimit *rl;
    struct err e = {0};
    REQUIRE(http_ratelimit_new(&rl, 1, 2, 4, &e) == 0);
    uint8_t k[HTTP_RATELIMIT_KEY];
    char ip[32];
    for (int i = 0; i < 4; i++) {
        snprintf(ip, sizeof ip, "198.51.100.%d", i + 1);
        key4(ip, k);
        CHECK(http_ratelimit_take(rl, k, 10) == 0);
    }
    /* the table is full: two new addresses share the overflow bucket */
    key4("203.0.113.1", k);
    CHECK(http_ratelimit_take(rl, k, 10) == 0);
    key4("203.0.113.2", k);
    CHECK(http_ratelimit_take(rl, k, 10) == 0);
    CHECK(http_ratelimit_take(rl, k, 10) > 0);
    /* nothing has refilled yet; 1 s later every bucket is full again */
    CHECK_INT_EQ(http_ratelimit_prune(rl, 10), 4);
    CHECK_INT_EQ(http_ratelimit_prune(rl, 11), 0);
    /* and a new address gets its own bucket */
    CHECK(http_ratelimit_take(rl, k, 11) == 0);
    CHECK(http_ratelimit_take(rl, k, 11) == 0);
    CHECK_INT_EQ(http_ratelimit_prune(rl, 11), 1);
    http_ratelimit_free(rl);
    CHECK_INT_EQ(http_ratelimit_new(&rl, 0, 2, 4, &e), -ERR_INVALID_ARGUMENT);
    CHECK(rl == NULL);
    CHECK_INT_EQ(http_ratelimit_new(&rl, 1, 0.5, 4, &e), -ERR_INVALID_ARGUMENT);
    http_ratelimit_free(NULL);
}

TEST_MAIN(burst_then_wait, addresses_are_independent, cap_overflow_and_prune)
