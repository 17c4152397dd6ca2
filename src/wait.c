/*
 * The two ways a thread blocks under a token.
 *
 * Sleeping waits on the token's state word as a futex: no file descriptor,
 * so ten thousand sleepers cost no fds. With futex_waitv (Linux 5.16) it
 * waits on its ancestors' words too (TETHER_WAIT_SET in all), so cancelling
 * a scope wakes all its sleeping children with one FUTEX_WAKE on the scope
 * token's word, as one eventfd write would, instead of one wake per child.
 * A waiter sets TOKEN_WAITERS on every word it waits on, so a canceller
 * issues FUTEX_WAKE only when someone may be asleep; where futex_waitv is
 * missing (older kernels, valgrind) it waits on its own word alone and says
 * so with TOKEN_SOLO_WAITERS, and cancellers wake that word directly.
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
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int tether__futex_wait(_Atomic uint32_t *word, uint32_t expected, tether_time_t until)
{
    struct timespec ts, *tsp = NULL;
    if (until != TETHER_NEVER) {
        ts = tether__timespec(until);
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

/* futex_waitv: 1 works, -1 missing (ENOSYS), 0 not tried yet. */
static _Atomic int waitv_support;

static uint32_t mark_waiting(tether_token *t, uint32_t bits)
{
    uint32_t s = atomic_load_explicit(&t->state, memory_order_acquire);
    if ((s & bits) != bits)
        s = atomic_fetch_or(&t->state, bits) | bits;
    return s;
}

/* Sleep on t's word alone. 0 to re-evaluate, or EINTR. */
static int sleep_solo(tether_token *t, tether_time_t end)
{
    uint32_t s = mark_waiting(t, TOKEN_WAITERS | TOKEN_SOLO_WAITERS);
    if (s & TOKEN_CANCELLED)
        return 0;
    int r = tether__futex_wait(&t->state, s, end);
    return r == EINTR ? EINTR : 0;
}

/* Sleep on t's word and its nearest ancestors'. 0 to re-evaluate, EINTR, or
 * ENOSYS when the kernel has no futex_waitv. */
static int sleep_set(tether_token *t, tether_time_t end)
{
    struct futex_waitv w[TETHER_WAIT_SET];
    unsigned n = 0;
    for (tether_token *a = t; a && n < TETHER_WAIT_SET; a = a->parent) {
        uint32_t s = mark_waiting(a, TOKEN_WAITERS);
        if (s & TOKEN_CANCELLED) {
            /* An ancestor is cancelled, so t is about to be: its canceller
             * is publishing the tree right now. Let it run. */
            sched_yield();
            return 0;
        }
        w[n++] = (struct futex_waitv){ .val = s, .uaddr = (uintptr_t)&a->state,
                                       .flags = FUTEX_32 | FUTEX_PRIVATE_FLAG };
    }
    struct timespec ts, *tsp = NULL;
    if (end != TETHER_NEVER) {
        ts = tether__timespec(end);
        tsp = &ts;
    }
    long r = syscall(SYS_futex_waitv, w, n, 0, tsp, CLOCK_MONOTONIC);
    if (r >= 0)
        return 0;
    if (errno == ENOSYS || errno == EPERM)
        return ENOSYS;
    return errno == EINTR ? EINTR : 0; /* EAGAIN: a word changed; ETIMEDOUT */
}

int tether__wait_token(tether_token *t, tether_time_t until)
{
    for (;;) {
        int c = tether__token_poll(t);
        if (c)
            return c;
        if (tether_now() >= until)
            return 0;
        tether_time_t end = tether__min_time(until, t->deadline);
        int r = ENOSYS;
        if (atomic_load_explicit(&waitv_support, memory_order_relaxed) >= 0) {
            r = sleep_set(t, end);
            if (r == ENOSYS)
                atomic_store_explicit(&waitv_support, -1, memory_order_relaxed);
        }
        if (r == ENOSYS)
            r = sleep_solo(t, end);
        if (r == EINTR)
            return EINTR;
    }
}

int tether__wait_fds(tether_token *t, struct pollfd *fds, nfds_t nfds, tether_time_t until,
                     const sigset_t *sigmask)
{
    int efd = tether__token_efd(t);
    if (efd < 0)
        return -1;
    fds[nfds] = (struct pollfd){ .fd = efd, .events = POLLIN };
    for (bool first = true;; first = false) {
        int c = tether__token_poll(t);
        if (c) {
            errno = c;
            return -1;
        }
        tether_time_t now = tether_now();
        if (now >= until && !first)
            return 0;
        tether_time_t end = tether__min_time(until, t->deadline);
        struct timespec ts, *tsp = NULL;
        if (end != TETHER_NEVER) {
            ts = tether__timespec(end > now ? end - now : 0);
            tsp = &ts;
        }
        int n = ppoll(fds, nfds + 1, tsp, sigmask);
        if (n < 0)
            return -1;
        if (fds[nfds].revents)
            continue; /* cancelled: the check above reports it */
        if (n > 0)
            return n;
        if (now >= until)
            return 0; /* a wait whose time had passed still looks once, as poll(2) */
    }
}
