/*
 * The two ways a thread blocks under a token.
 *
 * Sleeping waits on the token's state word as a futex: no file descriptor,
 * so ten thousand sleepers cost no fds. A waiter sets TOKEN_WAITERS first, so
 * a canceller issues FUTEX_WAKE only when someone may be asleep.
 *
 * Waiting for a descriptor polls it together with the token's eventfd, which
 * a cancellation makes readable for good (it is never read), so every waiter
 * wakes and every later poll returns at once: cancellation is level-triggered.
 *
 * Deadlines are absolute CLOCK_MONOTONIC instants; a wait that returns before
 * its instant loops, so a deadline never fires early.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static struct timespec to_timespec(tether_time_t t)
{
    if (t < 0)
        t = 0;
    return (struct timespec){ .tv_sec = t / 1000000000, .tv_nsec = t % 1000000000 };
}

int tether__futex_wait(_Atomic uint32_t *word, uint32_t expected, tether_time_t until)
{
    struct timespec ts, *tsp = NULL;
    if (until != TETHER_NEVER) {
        ts = to_timespec(until);
        tsp = &ts;
    }
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC timeout. */
    long r = syscall(SYS_futex, word, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, expected, tsp,
                     NULL, FUTEX_BITSET_MATCH_ANY);
    return r == -1 ? errno : 0;
}

void tether__futex_wake_all(_Atomic uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, INT32_MAX, NULL, NULL, 0);
}

int tether__wait_token(tether_token *t, tether_time_t until)
{
    for (;;) {
        int c = tether__token_poll(t);
        if (c)
            return c;
        if (tether_now() >= until)
            return 0;
        uint32_t s = atomic_load_explicit(&t->state, memory_order_acquire);
        if (!(s & TOKEN_WAITERS))
            s = atomic_fetch_or(&t->state, TOKEN_WAITERS) | TOKEN_WAITERS;
        if (s & TOKEN_CANCELLED)
            continue;
        int r = tether__futex_wait(&t->state, s, tether__min_time(until, t->deadline));
        if (r == EINTR)
            return EINTR;
        /* 0 (woken), EAGAIN (state changed), ETIMEDOUT: re-evaluate. */
    }
}

int tether__wait_fds(tether_token *t, struct pollfd *fds, nfds_t nfds, tether_time_t until)
{
    int efd = tether__token_efd(t);
    if (efd < 0)
        return -1;
    fds[nfds] = (struct pollfd){ .fd = efd, .events = POLLIN };
    for (;;) {
        int c = tether__token_poll(t);
        if (c) {
            errno = c;
            return -1;
        }
        tether_time_t now = tether_now();
        if (now >= until)
            return 0;
        tether_time_t end = tether__min_time(until, t->deadline);
        struct timespec ts, *tsp = NULL;
        if (end != TETHER_NEVER) {
            ts = to_timespec(end > now ? end - now : 0);
            tsp = &ts;
        }
        int n = ppoll(fds, nfds + 1, tsp, NULL);
        if (n < 0)
            return -1;
        if (fds[nfds].revents)
            continue; /* cancelled: the check above reports it */
        if (n > 0)
            return n;
    }
}
