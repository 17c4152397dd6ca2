/*
 * Fixtures shared by the retry suites (test/test_retry_*.c).
 *
 * Retry with backoff: delay sequences for every jitter strategy, the limits
 * (attempts, budget, deadline, cancellation), per-attempt timeouts,
 * retry-after hints, classification, and retry inside a fail-fast scope.
 *
 * Most tests run on a fake clock (opts.clock), so they never wait and their
 * sleeps are exact. The ones about real waking (a canceled backoff, a
 * hanging attempt, a signal during a sleep) use the real clock and hand off
 * between threads with semaphores; the only sleeps are the ones under test.
 */
#ifndef TETHER_TEST_RETRY_FIXTURES_H
#define TETHER_TEST_RETRY_FIXTURES_H

#include "support.h"

#include <math.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MS(x) tether_ms(x)

/* ------------------------------------------------------------ small tools */

static inline void leave_free(tether_token *t)
{
    ck_assert_int_eq(tether_token_leave(t), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
}

/* A fake clock: time moves only when the retry sleeps (or a test moves it). */
#define MAXREC 128

struct fake {
    tether_time_t now;
    int64_t oversleep; /* added after each sleep: a late wakeup */
    int sleep_rc;      /* what sleep_until returns (0: reached) */
    int nsleeps;
    int64_t sleeps[MAXREC]; /* each requested sleep, when - now */
};

static inline tether_time_t fake_now(void *ctx)
{
    return ((struct fake *)ctx)->now;
}

static inline int fake_sleep_until(void *ctx, tether_time_t when)
{
    struct fake *f = ctx;
    ck_assert_int_lt(f->nsleeps, MAXREC);
    f->sleeps[f->nsleeps++] = when - f->now;
    if (f->sleep_rc)
        return f->sleep_rc;
    if (when > f->now)
        f->now = when;
    f->now += f->oversleep;
    return 0;
}

/* Starts at the real time, so the real tokens' deadlines compare sensibly
 * but are never reached in real time by a fast test. */
static inline void fake_init(struct fake *f)
{
    memset(f, 0, sizeof *f);
    f->now = tether_now();
}

static inline tether_retry_clock fake_clock(struct fake *f)
{
    return (tether_retry_clock){ .now = fake_now, .sleep_until = fake_sleep_until, .ctx = f };
}

/* A scripted attempt: returns results[i] on call i (the last one after the
 * script ends), optionally hinting, advancing the fake clock, canceling. */
struct script {
    int results[MAXREC];
    int nresults;
    int64_t hints[MAXREC]; /* tether_retry_after per call; 0: none */
    int64_t takes;         /* fake time each attempt takes */
    struct fake *fake;
    int cancel_on; /* call number (from 1) that cancels, 0: none */
    tether_token *cancel_tok;
    int calls;
    tether_time_t starts[MAXREC];
    tether_token *current[MAXREC];
};

static inline int scripted(void *arg)
{
    struct script *s = arg;
    int i = s->calls++;
    ck_assert_int_lt(i, MAXREC);
    s->current[i] = tether_current();
    if (s->fake) {
        s->starts[i] = s->fake->now;
        s->fake->now += s->takes;
    } else {
        s->starts[i] = tether_now();
    }
    if (s->hints[i])
        ck_assert_int_eq(tether_retry_after(s->hints[i]), 0);
    if (s->cancel_on == i + 1)
        ck_assert_int_eq(tether_token_cancel(s->cancel_tok, 0), 0);
    return s->results[i < s->nresults ? i : s->nresults - 1];
}

static inline void script_fail(struct script *s, int err)
{
    s->results[0] = err;
    s->nresults = 1;
}

/* Records every on_retry event. */
struct events {
    int n;
    tether_retry_event ev[MAXREC];
};

static inline void record_event(const tether_retry_event *ev, void *ctx)
{
    struct events *e = ctx;
    ck_assert_int_lt(e->n, MAXREC);
    e->ev[e->n++] = *ev;
}

static inline int succeed(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
    return 0;
}

#endif
