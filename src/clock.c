/* The monotonic clock and deadlines. */
#include "clock.h"

tether_time_t tether_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (tether_time_t)ts.tv_sec * TETHER_NS_PER_SEC + ts.tv_nsec;
}

tether_time_t tether_deadline_after(int64_t duration_ns)
{
    tether_time_t now = tether_now();
    if (duration_ns > 0 && now > TETHER_NEVER - duration_ns)
        return TETHER_NEVER;
    return now + duration_ns;
}
