/* ratelimit.h - per-client-address token buckets, used by the HTTP service
 * to bound what one address may ask of the inference routes.
 *
 * Each address owns a bucket of `burst` tokens that refills at `rate`
 * tokens per second; a request takes one token, or is refused with the time
 * until the next token. An address seen for the first time starts with a
 * full bucket.
 *
 * Keys: an IPv4 address is one key; an IPv6 address is keyed by its /64
 * (providers hand a whole /64 to one host, so a limit per full IPv6 address
 * would be evaded by changing the low bits). IPv4-mapped IPv6 addresses key
 * as the IPv4 address.
 *
 * Memory is bounded: at most max_addrs buckets. Addresses beyond that share
 * one overflow bucket until http_ratelimit_prune forgets the buckets that
 * have refilled (a full bucket is the same as no bucket).
 *
 * Threads: every function may be called from any thread (one mutex).
 * Time is passed in (monotonic seconds) so the tests control the clock.
 */
#ifndef IMGSEARCH_HTTP_RATELIMIT_H
#define IMGSEARCH_HTTP_RATELIMIT_H

#include <stdint.h>
#include <sys/socket.h>

#include "util/err.h"

#define HTTP_RATELIMIT_KEY 16 /* bytes of a bucket key */

struct http_ratelimit;

/* rate > 0 tokens per second, burst >= 1 tokens, max_addrs >= 1.
 * ERR_INVALID_ARGUMENT for other values, ERR_NOMEM. */
int http_ratelimit_new(struct http_ratelimit **out, double rate, double burst, int max_addrs,
                       struct err *err);
void http_ratelimit_free(struct http_ratelimit *rl);

/* The bucket key of a client address into key. Returns 0, or -1 for a
 * family other than AF_INET/AF_INET6 (key is then all zero: one shared
 * bucket). */
int http_ratelimit_key(const struct sockaddr *sa, uint8_t key[HTTP_RATELIMIT_KEY]);

/* Takes one token from key's bucket at time now. Returns 0 when the request
 * may go on, else the seconds until a token is available (> 0); a refused
 * request takes nothing. */
double http_ratelimit_take(struct http_ratelimit *rl, const uint8_t key[HTTP_RATELIMIT_KEY],
                           double now);

/* Forgets the buckets that are full at time now. Returns how many remain. */
int http_ratelimit_prune(struct http_ratelimit *rl, double now);

#endif
