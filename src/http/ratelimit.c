/* ratelimit.c - per-address token buckets (see ratelimit.h).
 *
 * 1. A chained hash table of buckets under one mutex: a take is a hash,
 *    a short chain walk and a few flops, far below the cost of the
 *    requests it guards, so finer locking would buy nothing.
 * 2. A bucket is refilled lazily, when it is touched: tokens += elapsed *
 *    rate, capped at burst. No timer per bucket.
 * 3. The table holds at most max_addrs buckets; past that, new addresses
 *    share one overflow bucket (fail closed, but only for them) until a
 *    prune drops the buckets that have refilled.
 */
#include "http/ratelimit.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct bucket {
    uint8_t key[HTTP_RATELIMIT_KEY];
    double tokens;       /* tokens at time t */
    double t;            /* last refill, monotonic seconds */
    struct bucket *next; /* hash chain */
};

struct http_ratelimit {
    pthread_mutex_t mu;      /* guards everything below */
    double rate;             /* tokens per second */
    double burst;            /* bucket size */
    int max;                 /* buckets at most */
    int n;                   /* buckets in the table */
    struct bucket **heads;   /* nheads chains */
    size_t nheads;           /* a power of two */
    struct bucket overflow;  /* shared by addresses past max */
};

int http_ratelimit_new(struct http_ratelimit **out, double rate, double burst, int max_addrs,
                       struct err *err)
{
    *out = NULL;
    if (!(rate > 0) || !(burst >= 1) || max_addrs < 1)
        return err_set(err, ERR_INVALID_ARGUMENT,
                       "rate limit: rate %g/s, burst %g, %d addresses: each must be positive "
                       "(burst at least 1)", rate, burst, max_addrs);
    struct http_ratelimit *rl = calloc(1, sizeof *rl);
    size_t nh = 64;
    while (nh < (size_t)max_addrs / 4 && nh < ((size_t)1 << 16))
        nh *= 2;
    if (rl)
        rl->heads = calloc(nh, sizeof *rl->heads);
    if (!rl || !rl->heads) {
        free(rl);
        return err_set(err, ERR_NOMEM, "out of memory for the rate limiter");
    }
    pthread_mutex_init(&rl->mu, NULL);
    rl->rate = rate;
    rl->burst = burst;
    rl->max = max_addrs;
    rl->nheads = nh;
    rl->overflow.tokens = burst;
    *out = rl;
    return 0;
}

void http_ratelimit_free(struct http_ratelimit *rl)
{
    if (!rl)
        return;
    for (size_t i = 0; i < rl->nheads; i++)
        for (struct bucket *b = rl->heads[i], *nx; b; b = nx) {
            nx = b->next;
            free(b);
        }
    free(rl->heads);
    pthread_mutex_destroy(&rl->mu);
    free(rl);
}

int http_ratelimit_key(const struct sockaddr *sa, uint8_t key[HTTP_RATELIMIT_KEY])
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    memset(key, 0, HTTP_RATELIMIT_KEY);
    if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        memcpy(key, v4mapped, sizeof v4mapped);
        memcpy(key + 12, &in->sin_addr, 4);
        return 0;
    }
    if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        const uint8_t *a = in6->sin6_addr.s6_addr;
        if (!memcmp(a, v4mapped, sizeof v4mapped))
            memcpy(key, a, 16); /* the IPv4 client of a dual-stack socket */
        else
            memcpy(key, a, 8);  /* its /64 */
        return 0;
    }
    return -1;
}

static size_t hash(const uint8_t *k, size_t nheads)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (int i = 0; i < HTTP_RATELIMIT_KEY; i++)
        h = (h ^ k[i]) * 1099511628211ull;
    return (size_t)(h ^ (h >> 29)) & (nheads - 1);
}

static void refill(const struct http_ratelimit *rl, struct bucket *b, double now)
{
    if (now > b->t) {
        b->tokens += (now - b->t) * rl->rate;
        if (b->tokens > rl->burst)
            b->tokens = rl->burst;
        b->t = now;
    }
}

double http_ratelimit_take(struct http_ratelimit *rl, const uint8_t key[HTTP_RATELIMIT_KEY],
                           double now)
{
    pthread_mutex_lock(&rl->mu);
    size_t h = hash(key, rl->nheads);
    struct bucket *b = rl->heads[h];
    while (b && memcmp(b->key, key, HTTP_RATELIMIT_KEY))
        b = b->next;
    if (!b && rl->n < rl->max && (b = malloc(sizeof *b))) {
        memcpy(b->key, key, HTTP_RATELIMIT_KEY);
        b->tokens = rl->burst;
        b->t = now;
        b->next = rl->heads[h];
        rl->heads[h] = b;
        rl->n++;
    }
    if (!b)
        b = &rl->overflow;
    refill(rl, b, now);
    double wait = 0;
    if (b->tokens >= 1)
        b->tokens -= 1;
    else
        wait = (1 - b->tokens) / rl->rate;
    pthread_mutex_unlock(&rl->mu);
    return wait;
}

int http_ratelimit_prune(struct http_ratelimit *rl, double now)
{
    pthread_mutex_lock(&rl->mu);
    for (size_t i = 0; i < rl->nheads; i++)
        for (struct bucket **pb = &rl->heads[i]; *pb;) {
            struct bucket *b = *pb;
            refill(rl, b, now);
            if (b->tokens >= rl->burst) {
                *pb = b->next;
                free(b);
                rl->n--;
            } else {
                pb = &b->next;
            }
        }
    int n = rl->n;
    pthread_mutex_unlock(&rl->mu);
    return n;
}
