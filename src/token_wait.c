/*
 * Waiting under a token: the waiting layer (wait.c), with the token looked
 * at (and its deadline enforced) between the waits. A wait that returns
 * before its instant loops, so a deadline never fires early. A wait that
 * ends in a cancellation after it blocked counts as a blocking call
 * stopped (metrics.h).
 */
#define _GNU_SOURCE
#include "token.h"

#include "clock.h"
#include "metrics.h"

int tether__token_sleep(tether_token *t, tether_time_t until)
{
    for (bool first = true;; first = false) {
        int c = tether__token_poll(t);
        if (c) {
            if (!first) /* it waited: a blocking call stopped (metrics) */
                tether__metrics_call_stopped(c);
            return c;
        }
        if (tether_now() >= until)
            return 0;
        if (tether__wake_sleep(&t->wake, tether__min_time(until, t->deadline)) == EINTR)
            return EINTR;
    }
}

int tether__token_wait_fds(tether_token *t, struct pollfd *fds, nfds_t nfds, tether_time_t until,
                           const sigset_t *sigmask)
{
    for (bool first = true;; first = false) {
        int c = tether__token_poll(t);
        if (c) {
            if (!first) /* it waited: a blocking call stopped (metrics) */
                tether__metrics_call_stopped(c);
            return tether__fail(c);
        }
        tether_time_t now = tether_now();
        if (now >= until && !first)
            return 0;
        tether_time_t end = tether__min_time(until, t->deadline);
        struct timespec ts = tether__timespec(tether__time_left(end, now));
        int n = tether__wake_poll(&t->wake, fds, nfds, end == TETHER_NEVER ? NULL : &ts, sigmask);
        if (n < 0)
            return -1;
        if (fds[nfds].revents)
            continue; /* canceled: the check above reports it */
        if (n > 0)
            return n;
        if (now >= until)
            return 0; /* a wait whose time had passed still looks once, as poll(2) */
    }
}

int tether__token_wait_fd(tether_token *t, int fd, short events, tether_time_t until)
{
    struct pollfd p[2] = { { .fd = fd, .events = events } };
    int n = tether__token_wait_fds(t, p, 1, until, NULL);
    return n < 0 ? -1 : n > 0;
}

int tether__token_backoff(tether_token *t, int64_t *step_ns)
{
    *step_ns = *step_ns ? *step_ns * 2 : tether_ms(1);
    if (*step_ns > TETHER_BACKOFF_CAP_NS)
        *step_ns = TETHER_BACKOFF_CAP_NS;
    int r = tether__token_sleep(t, tether_deadline_after(*step_ns));
    return r ? tether__fail(r) : 0;
}
