/* clock.h - the one monotonic clock of imgsearch: durations, deadlines and
 * rates are measured with it (never with the wall clock, which jumps). */
#ifndef IMGSEARCH_CLOCK_H
#define IMGSEARCH_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Nanoseconds since an arbitrary fixed point (CLOCK_MONOTONIC). */
static inline int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The same in seconds. */
static inline double mono_now(void)
{
    return (double)mono_ns() / 1e9;
}

#endif
