/* Time arithmetic on CLOCK_MONOTONIC nanoseconds. */
#ifndef TETHER__CLOCK_H
#define TETHER__CLOCK_H

#include "internal.h"

#include <time.h>

#define TETHER_NS_PER_SEC ((int64_t)1000000000)

/* The longest nap of a backoff that waits for a condition it cannot poll. */
#define TETHER_BACKOFF_CAP_NS ((int64_t)20000000)

/* The earlier of two instants. */
static inline tether_time_t tether__min_time(tether_time_t a, tether_time_t b)
{
    return a < b ? a : b;
}

/* Nanoseconds (an instant or a duration) as a timespec; negative gives 0. */
static inline struct timespec tether__timespec(int64_t ns)
{
    if (ns < 0)
        ns = 0;
    return (struct timespec){ .tv_sec = ns / TETHER_NS_PER_SEC, .tv_nsec = ns % TETHER_NS_PER_SEC };
}

/* Whether ts is a valid timespec (both fields non-negative, tv_nsec < 1 s). */
static inline bool tether__timespec_valid(const struct timespec *ts)
{
    return ts->tv_sec >= 0 && ts->tv_nsec >= 0 && ts->tv_nsec < TETHER_NS_PER_SEC;
}

/* A timespec (tv_sec >= 0) to nanoseconds, saturating at INT64_MAX. */
static inline int64_t tether__timespec_ns(const struct timespec *ts)
{
    if (ts->tv_sec > (INT64_MAX - ts->tv_nsec) / TETHER_NS_PER_SEC)
        return INT64_MAX;
    return (int64_t)ts->tv_sec * TETHER_NS_PER_SEC + ts->tv_nsec;
}

/* The time left from now until `until`: 0 once passed. */
static inline int64_t tether__time_left(tether_time_t until, tether_time_t now)
{
    return until > now ? until - now : 0;
}

#endif /* TETHER__CLOCK_H */
