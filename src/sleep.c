/*
 * Cancellable sleeps: tether_sleep_until/for and tether_nanosleep. With a
 * current token they sleep on its futex (the waiting layer), so a cancel or
 * deadline ends them at once; without one they are the raw sleeps.
 */
#define _GNU_SOURCE
#include "current.h"

#include "clock.h"
#include "sys.h"

int tether_sleep_until(tether_time_t when)
{
    tether_token *t = tether__current_or_root();
    if (!t) {
        struct timespec ts = tether__timespec(when);
        return tether__sys_clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
    }
    int r = tether__token_sleep(t, when);
    return r ? tether__fail(r) : 0;
}

int tether_sleep_for(int64_t duration_ns)
{
    if (duration_ns <= 0) {
        int c = tether_check();
        return c ? tether__fail(c) : 0;
    }
    return tether_sleep_until(tether_deadline_after(duration_ns));
}

int tether_nanosleep(const struct timespec *req, struct timespec *rem)
{
    tether_token *t = tether__current_or_root();
    if (!t) /* nanosleep(2) measures CLOCK_REALTIME, as libc's does */
        return tether__sys_clock_nanosleep(CLOCK_REALTIME, 0, req, rem);
    /* The kernel looks at req first (EFAULT, EINVAL), as for nanosleep(2). */
    if (!req) /* NULL to the futex means no timeout */
        return tether__fail(EFAULT);
    if (tether__sys_timespec_check(req) < 0)
        return -1;
    tether_time_t until = tether_deadline_after(tether__timespec_ns(req));
    int r = tether__token_poll(t);
    if (!r)
        r = tether__token_sleep(t, until);
    if (!r)
        return 0;
    if (rem) {
        /* As nanosleep(2): an unwritable rem turns the error into EFAULT. */
        if (tether__sys_timespec_probe(rem) < 0)
            return -1;
        *rem = tether__timespec(until == TETHER_NEVER ? tether__timespec_ns(req)
                                                      : tether__time_left(until, tether_now()));
    }
    return tether__fail(r);
}
