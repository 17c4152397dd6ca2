/*
 * Retry with backoff: delay sequences for every jitter strategy, the limits
 * (attempts, budget, deadline, cancellation), per-attempt timeouts,
 * retry-after hints, classification, and retry inside a fail-fast scope.
 *
 * Most tests run on a fake clock (opts.clock), so they never wait and their
 * sleeps are exact. The ones about real waking (a cancelled backoff, a
 * hanging attempt, a signal during a sleep) use the real clock and hand off
 * between threads with semaphores; the only sleeps are the ones under test.
 */
#define _GNU_SOURCE
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
#define MIN_(x) tether_sec((int64_t)(x) * 60)

/* ------------------------------------------------------------ small tools */

static void enter(tether_token *t)
{
    ck_assert_int_eq(tether_token_enter(t), 0);
}

static void leave_free(tether_token *t)
{
    ck_assert_int_eq(tether_token_leave(t), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
}

static pthread_t spawn(void *(*fn)(void *), void *arg)
{
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, fn, arg), 0);
    return th;
}

static void join(pthread_t th)
{
    ck_assert_int_eq(pthread_join(th, NULL), 0);
}

/* A fake clock: time moves only when the retry sleeps (or a test moves it). */
#define MAXREC 128
struct fake {
    tether_time_t now;
    int64_t oversleep;         /* added after each sleep: a late wakeup */
    int sleep_rc;              /* what sleep_until returns (0: reached) */
    int nsleeps;
    int64_t sleeps[MAXREC];    /* each requested sleep, when - now */
};

static tether_time_t fake_now(void *ctx)
{
    return ((struct fake *)ctx)->now;
}

static int fake_sleep_until(void *ctx, tether_time_t when)
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
static void fake_init(struct fake *f)
{
    memset(f, 0, sizeof *f);
    f->now = tether_now();
}

static tether_retry_clock fake_clock(struct fake *f)
{
    return (tether_retry_clock){ .now = fake_now, .sleep_until = fake_sleep_until, .ctx = f };
}

/* A scripted attempt: returns results[i] on call i (the last one after the
 * script ends), optionally hinting, advancing the fake clock, cancelling. */
struct script {
    int results[MAXREC];
    int nresults;
    int64_t hints[MAXREC];     /* tether_retry_after per call; 0: none */
    int64_t takes;             /* fake time each attempt takes */
    struct fake *fake;
    int cancel_on;             /* call number (from 1) that cancels, 0: none */
    tether_token *cancel_tok;
    int calls;
    tether_time_t starts[MAXREC];
    tether_token *current[MAXREC];
};

static int scripted(void *arg)
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

static void script_fail(struct script *s, int err)
{
    s->results[0] = err;
    s->nresults = 1;
}

/* Records every on_retry event. */
struct events {
    int n;
    tether_retry_event ev[MAXREC];
};

static void record_event(const tether_retry_event *ev, void *ctx)
{
    struct events *e = ctx;
    ck_assert_int_lt(e->n, MAXREC);
    e->ev[e->n++] = *ev;
}

static int succeed(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
    return 0;
}

/* ------------------------------------------- an independent reference model
 * of the documented sequence (splitmix64, random_between = lo + x mod span),
 * written from the header's formulas. */

static uint64_t ref_splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int64_t ref_between(uint64_t *s, int64_t lo, int64_t hi)
{
    return lo + (int64_t)(ref_splitmix(s) % ((uint64_t)(hi - lo) + 1));
}

static void ref_sleeps(tether_retry_jitter j, uint64_t seed, int64_t base, int64_t cap,
                       double mult, int n, int64_t *out)
{
    uint64_t rng = seed;
    double d = (double)base;
    int64_t prev = base;
    for (int i = 0; i < n; i++) {
        int64_t di = d >= (double)cap ? cap : (int64_t)d;
        switch (j) {
        case TETHER_RETRY_JITTER_NONE: out[i] = di; break;
        case TETHER_RETRY_JITTER_FULL: out[i] = ref_between(&rng, 0, di); break;
        case TETHER_RETRY_JITTER_EQUAL: out[i] = di / 2 + ref_between(&rng, 0, di - di / 2); break;
        case TETHER_RETRY_JITTER_DECORRELATED:
            out[i] = ref_between(&rng, base, prev * 3);
            if (out[i] > cap)
                out[i] = cap;
            prev = out[i];
            break;
        }
        if (d < (double)cap)
            d *= mult;
    }
}

/* Runs `attempts` failing attempts on a fake clock; returns the sleeps. */
static void run_sequence(tether_retry_jitter j, uint64_t seed, int64_t base, int64_t cap,
                         double mult, unsigned attempts, struct fake *f, struct events *ev,
                         tether_retry_result *res)
{
    fake_init(f);
    struct script s = { .fake = f };
    script_fail(&s, EAGAIN);
    tether_retry_opts o = {
        .initial_delay_ns = base, .max_delay_ns = cap, .multiplier = mult, .jitter = j,
        .max_attempts = attempts, .seed = seed, .clock = fake_clock(f),
        .on_retry = record_event, .ctx = ev,
    };
    ck_assert_int_eq(tether_retry(scripted, &s, &o, res), EAGAIN);
    ck_assert_int_eq(res->stop, TETHER_RETRY_STOP_EXHAUSTED);
    ck_assert_uint_eq(res->attempts, attempts);
    ck_assert_int_eq(s.calls, (int)attempts);
    ck_assert_int_eq(f->nsleeps, (int)attempts - 1);
    ck_assert_int_eq(ev->n, (int)attempts - 1);
    int64_t total = 0;
    for (int i = 0; i < f->nsleeps; i++) {
        ck_assert_int_eq(ev->ev[i].delay_ns, f->sleeps[i]);
        ck_assert_uint_eq(ev->ev[i].attempt, (unsigned)i + 1);
        ck_assert_int_eq(ev->ev[i].error, EAGAIN);
        ck_assert(!ev->ev[i].attempt_timed_out);
        ck_assert_int_eq(ev->ev[i].retry_after_ns, 0);
        /* Attempt i+1 starts exactly when sleep i ends. */
        ck_assert_int_eq(s.starts[i + 1] - s.starts[i], f->sleeps[i]);
        total += f->sleeps[i];
    }
    ck_assert_int_eq(res->slept_ns, total);
    ck_assert_int_eq(res->elapsed_ns, total);
}

/* =========================================================== basics */

START_TEST(first_success_null_opts)
{
    th_baseline b = th_baseline_take();
    atomic_int calls = 0;
    tether_retry_result r;
    memset(&r, 0x5a, sizeof r);
    ck_assert_int_eq(tether_retry(succeed, &calls, NULL, &r), 0);
    ck_assert_int_eq(calls, 1);
    ck_assert_int_eq(r.error, 0);
    ck_assert_int_eq(r.last_error, 0);
    ck_assert_uint_eq(r.attempts, 1);
    ck_assert_int_eq(r.slept_ns, 0);
    ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_SUCCEEDED);
    /* result may be NULL. */
    ck_assert_int_eq(tether_retry(succeed, &calls, NULL, NULL), 0);
    ck_assert_int_eq(calls, 2);
    th_baseline_check(b);
}
END_TEST

START_TEST(bad_input_is_einval)
{
    th_baseline b = th_baseline_take();
    atomic_int calls = 0;
    struct fake f;
    fake_init(&f);
    const tether_retry_opts bad[] = {
        { .initial_delay_ns = -1 },
        { .max_delay_ns = -1 },
        { .initial_delay_ns = MS(200), .max_delay_ns = MS(100) },
        { .multiplier = 0.5 },
        { .multiplier = -2.0 },
        { .multiplier = NAN },
        { .multiplier = INFINITY },
        { .jitter = (tether_retry_jitter)99 },
        { .max_elapsed_ns = -1 },
        { .attempt_timeout_ns = -1 },
        { .clock = { .now = fake_now, .ctx = &f } },
        { .clock = { .sleep_until = fake_sleep_until, .ctx = &f } },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tether_retry_result r;
        memset(&r, 0x5a, sizeof r);
        ck_assert_msg(tether_retry(succeed, &calls, &bad[i], &r) == EINVAL, "case %zu", i);
        ck_assert_int_eq(r.error, EINVAL);
        ck_assert_int_eq(r.last_error, 0);
        ck_assert_uint_eq(r.attempts, 0);
        ck_assert_int_eq(r.slept_ns, 0);
        ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_PERMANENT);
    }
    ck_assert_int_eq(tether_retry(NULL, NULL, NULL, NULL), EINVAL);
    ck_assert_int_eq(calls, 0);
    ck_assert_int_eq(f.nsleeps, 0);

    /* The edges that are valid: multiplier exactly 1, max == initial, an
     * initial delay above the default cap with no cap given. */
    const tether_retry_opts good[] = {
        { .multiplier = 1.0 },
        { .initial_delay_ns = MS(100), .max_delay_ns = MS(100) },
        { .initial_delay_ns = tether_sec(60) },
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        ck_assert_int_eq(tether_retry(succeed, &calls, &good[i], NULL), 0);
    th_baseline_check(b);
}
END_TEST

START_TEST(names_and_transient_set)
{
    th_baseline b = th_baseline_take();
    ck_assert_str_eq(tether_retry_stop_name(TETHER_RETRY_STOP_SUCCEEDED), "succeeded");
    ck_assert_str_eq(tether_retry_stop_name(TETHER_RETRY_STOP_PERMANENT), "permanent");
    ck_assert_str_eq(tether_retry_stop_name(TETHER_RETRY_STOP_EXHAUSTED), "exhausted");
    ck_assert_str_eq(tether_retry_stop_name(TETHER_RETRY_STOP_BUDGET), "budget");
    ck_assert_str_eq(tether_retry_stop_name(TETHER_RETRY_STOP_CANCELED), "canceled");
    ck_assert_str_eq(tether_retry_stop_name(TETHER_RETRY_STOP_DEADLINE), "deadline");
    ck_assert_str_eq(tether_retry_stop_name((tether_retry_stop)77), "unknown");

    const int transient[] = { EAGAIN, EWOULDBLOCK, EINTR, EBUSY, ETIMEDOUT, ECONNREFUSED,
                              ECONNRESET, ECONNABORTED, EPIPE, ENETDOWN, ENETUNREACH,
                              ENETRESET, EHOSTDOWN, EHOSTUNREACH, EADDRNOTAVAIL, ENOBUFS };
    for (size_t i = 0; i < sizeof transient / sizeof transient[0]; i++)
        ck_assert_msg(tether_retry_transient(transient[i]), "%d", transient[i]);
    const int permanent[] = { 0, -1, ECANCELED, EIO, ENOMEM, EINVAL, ENOENT, EACCES, EPERM,
                              EBADF, ENOTCONN, EPROTO, EEXIST, ENOSPC, 100000 };
    for (size_t i = 0; i < sizeof permanent / sizeof permanent[0]; i++)
        ck_assert_msg(!tether_retry_transient(permanent[i]), "%d", permanent[i]);
    th_baseline_check(b);
}
END_TEST

/* Zeroed options (only the fake clock set): 5 attempts, 100 ms doubling,
 * full jitter. */
START_TEST(zeroed_opts_defaults)
{
    th_baseline b = th_baseline_take();
    struct fake f;
    fake_init(&f);
    struct script s = { .fake = &f };
    script_fail(&s, ECONNREFUSED);
    tether_retry_opts o = { .clock = fake_clock(&f) };
    tether_retry_result r;
    ck_assert_int_eq(tether_retry(scripted, &s, &o, &r), ECONNREFUSED);
    ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_EXHAUSTED);
    ck_assert_uint_eq(r.attempts, 5);
    ck_assert_int_eq(r.last_error, ECONNREFUSED);
    ck_assert_int_eq(f.nsleeps, 4);
    for (int i = 0; i < 4; i++) {
        ck_assert_int_ge(f.sleeps[i], 0);
        ck_assert_int_le(f.sleeps[i], MS(100) << i);
    }
    th_baseline_check(b);
}
END_TEST

/* ================================================= delay sequences */

START_TEST(sequence_none)
{
    th_baseline b = th_baseline_take();
    struct fake f;
    struct events ev = { 0 };
    tether_retry_result r;
    run_sequence(TETHER_RETRY_JITTER_NONE, 7, MS(100), MS(1000), 2.0, 8, &f, &ev, &r);
    const int64_t want[] = { MS(100), MS(200), MS(400), MS(800), MS(1000), MS(1000), MS(1000) };
    for (int i = 0; i < 7; i++)
        ck_assert_int_eq(f.sleeps[i], want[i]);
    ck_assert_int_eq(r.slept_ns, MS(4500));

    /* A multiplier that is not a power of two, truncated to whole ns. */
    ev.n = 0;
    run_sequence(TETHER_RETRY_JITTER_NONE, 7, 1000, 1000000, 1.5, 6, &f, &ev, &r);
    const int64_t want15[] = { 1000, 1500, 2250, 3375, 5062 };
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(f.sleeps[i], want15[i]);

    /* Multiplier 1: a constant delay. */
    ev.n = 0;
    run_sequence(TETHER_RETRY_JITTER_NONE, 7, MS(30), MS(50), 1.0, 4, &f, &ev, &r);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(f.sleeps[i], MS(30));
    th_baseline_check(b);
}
END_TEST

/* Full, equal and decorrelated jitter: the exact documented sequence for a
 * fixed seed (against the reference model and pinned literals), within the
 * strategy's bounds, and the same on every run. */
static void check_jitter(tether_retry_jitter j, const int64_t *pinned, int npinned)
{
    enum { N = 12 };
    /* The reference is standard splitmix64 (its published test vector). */
    uint64_t probe = 1234567;
    ck_assert_uint_eq(ref_splitmix(&probe), 6457827717110365317ull);
    ck_assert_uint_eq(ref_splitmix(&probe), 3203168211198807973ull);

    const int64_t base = MS(100), cap = MS(5000);
    struct fake f;
    struct events ev = { 0 };
    tether_retry_result r;
    run_sequence(j, 42, base, cap, 2.0, N + 1, &f, &ev, &r);

    int64_t want[N];
    ref_sleeps(j, 42, base, cap, 2.0, N, want);
    for (int i = 0; i < N; i++)
        ck_assert_msg(f.sleeps[i] == want[i], "jitter %d sleep %d: %lld != %lld", j, i,
                      (long long)f.sleeps[i], (long long)want[i]);
    for (int i = 0; i < npinned; i++)
        ck_assert_msg(f.sleeps[i] == pinned[i], "jitter %d sleep %d: %lld, pinned %lld", j, i,
                      (long long)f.sleeps[i], (long long)pinned[i]);

    int64_t d = base, prev = base;
    for (int i = 0; i < N; i++) {
        int64_t s = f.sleeps[i];
        switch (j) {
        case TETHER_RETRY_JITTER_FULL:
            ck_assert_int_ge(s, 0);
            ck_assert_int_le(s, d);
            break;
        case TETHER_RETRY_JITTER_EQUAL:
            ck_assert_int_ge(s, d / 2);
            ck_assert_int_le(s, d);
            break;
        case TETHER_RETRY_JITTER_DECORRELATED:
            ck_assert_int_ge(s, base);
            ck_assert_int_le(s, prev * 3 < cap ? prev * 3 : cap);
            prev = s;
            break;
        default:
            ck_abort();
        }
        d = d * 2 < cap ? d * 2 : cap;
    }

    /* The same seed gives the same sleeps; another seed others. */
    struct fake f2;
    struct events ev2 = { 0 };
    run_sequence(j, 42, base, cap, 2.0, N + 1, &f2, &ev2, &r);
    ck_assert_mem_eq(f.sleeps, f2.sleeps, N * sizeof f.sleeps[0]);
    ev2.n = 0;
    run_sequence(j, 43, base, cap, 2.0, N + 1, &f2, &ev2, &r);
    ck_assert(memcmp(f.sleeps, f2.sleeps, N * sizeof f.sleeps[0]) != 0);
}

START_TEST(sequence_full)
{
    th_baseline b = th_baseline_take();
    const int64_t pinned[] = { 60701454, 177761905, 14554519, 321758199 };
    check_jitter(TETHER_RETRY_JITTER_FULL, pinned, 4);
    th_baseline_check(b);
}
END_TEST

START_TEST(sequence_equal)
{
    th_baseline b = th_baseline_take();
    const int64_t pinned[] = { 66130230, 128631665, 366345245, 785260654 };
    check_jitter(TETHER_RETRY_JITTER_EQUAL, pinned, 4);
    th_baseline_check(b);
}
END_TEST

START_TEST(sequence_decorrelated)
{
    th_baseline b = th_baseline_take();
    const int64_t pinned[] = { 257988092, 277326833, 391006858, 531563089 };
    check_jitter(TETHER_RETRY_JITTER_DECORRELATED, pinned, 4);
    th_baseline_check(b);
}
END_TEST

/* Seed 0: each call draws its seed from a per-thread generator, so two
 * calls differ, and so do two threads. */
static void full_jitter_sleeps(int64_t *out)
{
    struct fake f;
    fake_init(&f);
    struct script s = { .fake = &f };
    script_fail(&s, EAGAIN);
    tether_retry_opts o = { .initial_delay_ns = tether_sec(1000), .max_attempts = 4,
                            .clock = fake_clock(&f) };
    ck_assert_int_eq(tether_retry(scripted, &s, &o, NULL), EAGAIN);
    memcpy(out, f.sleeps, 3 * sizeof *out);
}

static void *seed0_thread(void *p)
{
    full_jitter_sleeps(p);
    return NULL;
}

START_TEST(seed_zero_varies)
{
    th_baseline b = th_baseline_take();
    int64_t a[3], c[3], t[3];
    full_jitter_sleeps(a);
    full_jitter_sleeps(c);
    ck_assert(memcmp(a, c, sizeof a) != 0);
    join(spawn(seed0_thread, t));
    ck_assert(memcmp(a, t, sizeof a) != 0);
    ck_assert(memcmp(c, t, sizeof a) != 0);
    th_baseline_check(b);
}
END_TEST

START_TEST(unlimited_attempts_capped_delay)
{
    th_baseline b = th_baseline_take();
    struct fake f;
    fake_init(&f);
    struct script s = { .fake = &f, .nresults = 100 };
    for (int i = 0; i < 99; i++)
        s.results[i] = EBUSY;
    s.results[99] = 0;
    tether_retry_opts o = { .initial_delay_ns = MS(1), .max_delay_ns = MS(64),
                            .jitter = TETHER_RETRY_JITTER_NONE,
                            .max_attempts = TETHER_RETRY_UNLIMITED, .clock = fake_clock(&f) };
    tether_retry_result r;
    ck_assert_int_eq(tether_retry(scripted, &s, &o, &r), 0);
    ck_assert_uint_eq(r.attempts, 100);
    ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_SUCCEEDED);
    ck_assert_int_eq(r.last_error, 0);
    ck_assert_int_eq(f.nsleeps, 99);
    ck_assert_int_eq(f.sleeps[6], MS(64));
    ck_assert_int_eq(f.sleeps[98], MS(64));
    ck_assert_int_eq(r.slept_ns, MS(1 + 2 + 4 + 8 + 16 + 32) + 93 * MS(64));
    th_baseline_check(b);
}
END_TEST

/* ===================================================== classification */

START_TEST(permanent_error_never_retried)
{
    th_baseline b = th_baseline_take();
    const int errs[] = { EINVAL, ENOENT, EIO, ECANCELED, EACCES, -1 };
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        struct fake f;
        fake_init(&f);
        struct script s = { .fake = &f };
        script_fail(&s, errs[i]);
        tether_retry_opts o = { .max_attempts = TETHER_RETRY_UNLIMITED, .clock = fake_clock(&f) };
        tether_retry_result r;
        ck_assert_int_eq(tether_retry(scripted, &s, &o, &r), errs[i]);
        ck_assert_int_eq(s.calls, 1);
        ck_assert_uint_eq(r.attempts, 1);
        ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_PERMANENT);
        ck_assert_int_eq(r.error, errs[i]);
        ck_assert_int_eq(r.last_error, errs[i]);
        ck_assert_int_eq(f.nsleeps, 0);
        ck_assert_int_eq(r.slept_ns, 0);
    }
    th_baseline_check(b);
}
END_TEST

/* A custom classifier sees the error and ctx; transient errors it refuses
 * are permanent, permanent ones it accepts are retried. */
struct classify {
    int seen[MAXREC];
    int n;
};

static bool only_enoent(int error, void *ctx)
{
    struct classify *c = ctx;
    c->seen[c->n++] = error;
    return error == ENOENT;
}

START_TEST(custom_classifier)
{
    th_baseline b = th_baseline_take();
    struct fake f;
    fake_init(&f);
    struct script s = { .fake = &f, .results = { ENOENT, ENOENT, EAGAIN }, .nresults = 3 };
    struct classify c = { .n = 0 };
    tether_retry_opts o = { .retryable = only_enoent, .ctx = &c, .max_attempts = 10,
                            .clock = fake_clock(&f) };
    tether_retry_result r;
    ck_assert_int_eq(tether_retry(scripted, &s, &o, &r), EAGAIN);
    ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_PERMANENT);
    ck_assert_uint_eq(r.attempts, 3);
    ck_assert_int_eq(c.n, 3);
    ck_assert_int_eq(c.seen[0], ENOENT);
    ck_assert_int_eq(c.seen[2], EAGAIN);

    /* Never consulted for success. */
    c.n = 0;
    s = (struct script){ .fake = &f, .results = { 0 }, .nresults = 1 };
    ck_assert_int_eq(tether_retry(scripted, &s, &o, &r), 0);
    ck_assert_int_eq(c.n, 0);
    th_baseline_check(b);
}
END_TEST

/* ======================================================= cancellation */

START_TEST(cancelled_before_call)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    enter(t);
    atomic_int calls = 0;
    tether_retry_result r;
    ck_assert_int_eq(tether_retry(succeed, &calls, NULL, &r), ECANCELED);
    ck_assert_int_eq(calls, 0);
    ck_assert_uint_eq(r.attempts, 0);
    ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_CANCELED);
    ck_assert_int_eq(r.last_error, 0);
    leave_free(t);

    /* A deadline already passed: ETIMEDOUT, no attempt. */
    t = new_token(NULL, tether_now() - 1);
    enter(t);
    ck_assert_int_eq(tether_retry(succeed, &calls, NULL, &r), ETIMEDOUT);
    ck_assert_int_eq(calls, 0);
    ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_DEADLINE);
    leave_free(t);
    th_baseline_check(b);
}
END_TEST

/* A cancel inside attempt k means exactly k attempts, whatever attempt k
 * returned (unless it succeeded: its effect stands). */
START_TEST(cancel_inside_attempt_k)
{
    th_baseline b = th_baseline_take();
    for (int k = 1; k <= 5; k++) {
        for (int succeed_anyway = 0; succeed_anyway <= 1; succeed_anyway++) {
            tether_token *t = new_token(NULL, TETHER_NEVER);
            enter(t);
            struct fake f;
            fake_init(&f);
            struct script s = { .fake = &f, .cancel_on = k, .cancel_tok = t, .nresults = k };
            for (int i = 0; i < k - 1; i++)
                s.results[i] = ECONNRESET;
            /* ETIMEDOUT and ECANCELED would be retried if the token had not
             * caused them; so would ECONNREFUSED. */
            s.results[k - 1] = succeed_anyway ? 0 : (k % 3 == 0 ? ETIMEDOUT : ECONNREFUSED);
            tether_retry_opts o = { .max_attempts = TETHER_RETRY_UNLIMITED,
                                    .clock = fake_clock(&f) };
            tether_retry_result r;
            int rc = tether_retry(scripted, &s, &o, &r);
            ck_assert_int_eq(s.calls, k);
            ck_assert_uint_eq(r.attempts, (unsigned)k);
            ck_assert_int_eq(f.nsleeps, k - 1);
            if (succeed_anyway) {
                ck_assert_int_eq(rc, 0);
                ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_SUCCEEDED);
            } else {
                ck_assert_int_eq(rc, ECANCELED);
                ck_assert_int_eq(r.error, ECANCELED);
                ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_CANCELED);
                ck_assert_int_eq(r.last_error, s.results[k - 1]);
            }
            leave_free(t);
        }
    }
    th_baseline_check(b);
}
END_TEST

/* A classifier that would retry anything is still not consulted for the
 * token's own ECANCELED/ETIMEDOUT. */
static bool retry_everything(int error, void *ctx)
{
    (void)error;
    atomic_fetch_add((atomic_int *)ctx, 1);
    return true;
}

static int sleep_an_hour(void *arg)
{
    (void)arg;
    return tether_sleep_for(tether_sec(3600)) == 0 ? 0 : errno;
}

START_TEST(token_deadline_during_attempt_not_retried)
{
    th_baseline b = th_baseline_take();
    tether_time_t t0 = tether_now();
    tether_token *t = new_token(NULL, tether_deadline_after(MS(50)));
    enter(t);
    atomic_int consulted = 0;
    tether_retry_opts o = { .retryable = retry_everything, .ctx = &consulted,
                            .initial_delay_ns = 1, .max_attempts = TETHER_RETRY_UNLIMITED };
    tether_retry_result r;
    ck_assert_int_eq(tether_retry(sleep_an_hour, NULL, &o, &r), ETIMEDOUT);
    tether_time_t took = tether_now() - t0;
    ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_DEADLINE);
    ck_assert_uint_eq(r.attempts, 1);
    ck_assert_int_eq(r.last_error, ETIMEDOUT);
    ck_assert_int_eq(consulted, 0);
    ck_assert_int_ge(took, MS(50));
    ck_assert_int_lt(took, MS(50) + th_bound_ns(1000));
    leave_free(t);
    th_baseline_check(b);
}
END_TEST

/* The on_retry callback cancels: the sleep that follows returns at once. */
static void cancel_from_callback(const tether_retry_event *ev, void *ctx)
{
    (void)ev;
    ck_assert_int_eq(tether_token_cancel(ctx, 0), 0);
}

START_TEST(cancel_from_on_retry_skips_sleep)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    enter(t);
    struct script s = { .nresults = 1, .results = { EAGAIN } };
    tether_retry_opts o = { .initial_delay_ns = tether_sec(3600),
                            .jitter = TETHER_RETRY_JITTER_NONE,
                            .on_retry = cancel_from_callback, .ctx = t };
    tether_retry_result r;
    tether_time_t t0 = tether_now();
    ck_assert_int_eq(tether_retry(scripted, &s, &o, &r), ECANCELED);
    ck_assert_int_lt(tether_now() - t0, th_bound_ns(1000));
    ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_CANCELED);
    ck_assert_uint_eq(r.attempts, 1);
    ck_assert_int_lt(r.slept_ns, th_bound_ns(1000));
    leave_free(t);
    th_baseline_check(b);
}
END_TEST

/* A cancel from another thread during a one-hour backoff returns within the
 * bound, as a cancelled tether_sleep_for does. */
struct canceller {
    sem_t ready;
    pid_t tid;
    tether_token *tok;
    tether_time_t cancelled_at;
};

static void post_ready(const tether_retry_event *ev, void *ctx)
{
    (void)ev;
    ck_assert_int_eq(sem_post(&((struct canceller *)ctx)->ready), 0);
}

static void *canceller_main(void *p)
{
    struct canceller *c = p;
    while (sem_wait(&c->ready) != 0)
        ;
    th_wait_blocked(c->tid);
    c->cancelled_at = tether_now();
    tether_token_cancel(c->tok, 0);
    return NULL;
}

START_TEST(cancel_during_hour_backoff)
{
    th_baseline b = th_baseline_take();
    struct canceller c = { .tid = th_gettid() };
    ck_assert_int_eq(sem_init(&c.ready, 0, 0), 0);

    /* The reference: a cancelled one-hour sleep. */
    c.tok = new_token(NULL, TETHER_NEVER);
    enter(c.tok);
    pthread_t th = spawn(canceller_main, &c);
    ck_assert_int_eq(sem_post(&c.ready), 0);
    ck_assert_int_eq(tether_sleep_for(tether_sec(3600)), -1);
    ck_assert_int_eq(errno, ECANCELED);
    int64_t sleep_latency = tether_now() - c.cancelled_at;
    join(th);
    leave_free(c.tok);

    /* The same cancel during a one-hour backoff. */
    c.tok = new_token(NULL, TETHER_NEVER);
    enter(c.tok);
    th = spawn(canceller_main, &c);
    struct script s = { .nresults = 1, .results = { ECONNREFUSED } };
    tether_retry_opts o = { .initial_delay_ns = tether_sec(3600),
                            .jitter = TETHER_RETRY_JITTER_NONE,
                            .on_retry = post_ready, .ctx = &c };
    tether_retry_result r;
    ck_assert_int_eq(tether_retry(scripted, &s, &o, &r), ECANCELED);
    int64_t retry_latency = tether_now() - c.cancelled_at;
    join(th);
    leave_free(c.tok);

    ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_CANCELED);
    ck_assert_uint_eq(r.attempts, 1);
    ck_assert_int_eq(r.last_error, ECONNREFUSED);
    ck_assert_int_gt(r.slept_ns, 0);
    ck_assert_int_lt(r.slept_ns, th_bound_ns(10000));
    ck_assert_int_lt(sleep_latency, th_bound_ns(200));
    ck_assert_int_lt(retry_latency, th_bound_ns(200));
    fprintf(stderr, "cancel latency: sleep %lld ns, retry backoff %lld ns\n",
            (long long)sleep_latency, (long long)retry_latency);
    sem_destroy(&c.ready);
    th_baseline_check(b);
}
END_TEST

/* The clock hook's sleep may report a stop of its own. */
START_TEST(sleep_hook_error_stops)
{
    th_baseline b = th_baseline_take();
    const int rcs[] = { ECANCELED, ETIMEDOUT, EIO };
    const tether_retry_stop stops[] = { TETHER_RETRY_STOP_CANCELED, TETHER_RETRY_STOP_DEADLINE,
                                        TETHER_RETRY_STOP_CANCELED };
    for (int i = 0; i < 3; i++) {
        struct fake f;
        fake_init(&f);
        f.sleep_rc = rcs[i];
        struct script s = { .fake = &f };
        script_fail(&s, EAGAIN);
        tether_retry_opts o = { .clock = fake_clock(&f) };
        tether_retry_result r;
        ck_assert_int_eq(tether_retry(scripted, &s, &o, &r), rcs[i]);
        ck_assert_int_eq(r.stop, stops[i]);
        ck_assert_uint_eq(r.attempts, 1);
        ck_assert_int_eq(r.last_error, EAGAIN);
    }
    th_baseline_check(b);
}
END_TEST

/* ============================================================ limits */

/* Late wakeups (oversleep) carry the clock to the deadline: the attempt
 * that would start there never starts. */
START_TEST(no_attempt_at_or_after_deadline)
{
    th_baseline b = th_baseline_take();
    struct fake f;
    fake_init(&f);
    f.oversleep = MIN_(5);
    tether_time_t deadline = f.now + MIN_(60);
    tether_token *t = new_token(NULL, deadline);
    enter(t);
    struct script s = { .fake = &f };
    script_fail(&s, EAGAIN);
    tether_retry_opts o = { .initial_delay_ns = MIN_(10), .multiplier = 1.0,
                            .jitter = TETHER_RETRY_JITTER_NONE,
                            .max_attempts = TETHER_RETRY_UNLIMITED, .clock = fake_clock(&f) };
    tether_retry_result r;
    ck_assert_int_eq(tether_retry(scripted, &s, &o, &r), ETIMEDOUT);
    ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_DEADLINE);
    ck_assert_int_eq(r.last_error, EAGAIN);
    /* Starts at 0, 15, 30, 45 min; the sleep from 45 ends (late) at 60. */
    ck_assert_int_eq(s.calls, 4);
    ck_assert_uint_eq(r.attempts, 4);
    for (int i = 0; i < s.calls; i++)
        ck_assert_int_lt(s.starts[i], deadline);
    ck_assert_int_eq(f.now, deadline);
    leave_free(t);

    /* An attempt that itself runs past the deadline: no sleep, no more. */
    fake_init(&f);
    deadline = f.now + MIN_(60);
    t = new_token(NULL, deadline);
    enter(t);
    s = (struct script){ .fake = &f, .takes = MIN_(25), .nresults = 1, .results = { EAGAIN } };
    o.initial_delay_ns = 1;
    ck_assert_int_eq(tether_retry(scripted, &s, &o, &r), ETIMEDOUT);
    ck_assert_int_eq(s.calls, 3);
    ck_assert_int_eq(f.nsleeps, 2);
    for (int i = 0; i < s.calls; i++)
        ck_assert_int_lt(s.starts[i], deadline);
    leave_free(t);
    th_baseline_check(b);
}
END_TEST

START_TEST(delay_crossing_deadline_returns_without_sleeping)
{
    th_baseline b = th_baseline_take();
    struct fake f;
    fake_init(&f);
    tether_time_t deadline = f.now + MIN_(60);
    tether_token *t = new_token(NULL, deadline);
    enter(t);
    struct script s = { .fake = &f };
    script_fail(&s, EAGAIN);
    struct events ev = { 0 };
    tether_retry_opts o = { .initial_delay_ns = MIN_(40), .max_delay_ns = MIN_(500),
                            .jitter = TETHER_RETRY_JITTER_NONE,
                            .max_attempts = TETHER_RETRY_UNLIMITED, .clock = fake_clock(&f),
                            .on_retry = record_event, .ctx = &ev };
    tether_retry_result r;
    ck_assert_int_eq(tether_retry(scripted, &s, &o, &r), ETIMEDOUT);
    ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_DEADLINE);
    ck_assert_uint_eq(r.attempts, 2);          /* at 0 and 40 min */
    ck_assert_int_eq(f.nsleeps, 1);            /* the 80 min one never started */
    ck_assert_int_eq(ev.n, 1);                 /* nor was it announced */
    ck_assert_int_eq(r.slept_ns, MIN_(40));
    ck_assert_int_eq(r.last_error, EAGAIN);
    ck_assert_int_eq(tether_token_check(t), 0); /* retry never cancels the token */
    leave_free(t);

    /* A sleep ending exactly at the deadline is refused too: no attempt
     * could start then. */
    fake_init(&f);
    t = new_token(NULL, f.now + MIN_(40));
    enter(t);
    s = (struct script){ .fake = &f, .nresults = 1, .results = { EAGAIN } };
    o.on_retry = NULL;
    ck_assert_int_eq(tether_retry(scripted, &s, &o, &r), ETIMEDOUT);
    ck_assert_int_eq(f.nsleeps, 0);
    ck_assert_uint_eq(r.attempts, 1);
    leave_free(t);

    /* The real clock: a one-hour backoff under a 10 s deadline returns at
     * once instead of sleeping. */
    t = new_token(NULL, tether_deadline_after(tether_sec(10)));
    enter(t);
    s = (struct script){ .nresults = 1, .results = { EAGAIN } };
    tether_retry_opts real = { .initial_delay_ns = tether_sec(3600),
                               .jitter = TETHER_RETRY_JITTER_NONE };
    tether_time_t t0 = tether_now();
    ck_assert_int_eq(tether_retry(scripted, &s, &real, &r), ETIMEDOUT);
    ck_assert_int_lt(tether_now() - t0, th_bound_ns(1000));
    ck_assert_int_eq(r.slept_ns, 0);
    ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_DEADLINE);
    leave_free(t);
    th_baseline_check(b);
}
END_TEST

START_TEST(elapsed_budget)
{
    th_baseline b = th_baseline_take();
    struct fake f;
    fake_init(&f);
    struct script s = { .fake = &f };
    script_fail(&s, ECONNRESET);
    tether_retry_opts o = { .initial_delay_ns = MS(300), .jitter = TETHER_RETRY_JITTER_NONE,
                            .max_attempts = TETHER_RETRY_UNLIMITED,
                            .max_elapsed_ns = MS(1000), .clock = fake_clock(&f) };
    tether_retry_result r;
    /* Attempts at 0, 300, 900 ms; the next sleep (1200 ms) would end past
     * the budget: the last error comes back, without sleeping. */
    ck_assert_int_eq(tether_retry(scripted, &s, &o, &r), ECONNRESET);
    ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_BUDGET);
    ck_assert_uint_eq(r.attempts, 3);
    ck_assert_int_eq(f.nsleeps, 2);
    ck_assert_int_eq(r.slept_ns, MS(900));
    ck_assert_int_eq(r.elapsed_ns, MS(900));

    /* Budget and deadline both crossed: the earlier decides. */
    for (int deadline_first = 0; deadline_first <= 1; deadline_first++) {
        fake_init(&f);
        tether_token *t = new_token(NULL, f.now + (deadline_first ? MS(500) : MS(1500)));
        enter(t);
        s = (struct script){ .fake = &f, .nresults = 1, .results = { ECONNRESET } };
        o.initial_delay_ns = MS(3000);
        ck_assert_int_eq(tether_retry(scripted, &s, &o, &r),
                         deadline_first ? ETIMEDOUT : ECONNRESET);
        ck_assert_int_eq(r.stop,
                         deadline_first ? TETHER_RETRY_STOP_DEADLINE : TETHER_RETRY_STOP_BUDGET);
        ck_assert_int_eq(f.nsleeps, 0);
        leave_free(t);
    }

    /* Late wakeups reach the end of the budget: no attempt starts there. */
    fake_init(&f);
    f.oversleep = MS(250);
    s = (struct script){ .fake = &f, .nresults = 1, .results = { ECONNRESET } };
    o.initial_delay_ns = MS(250);
    o.multiplier = 1.0;
    ck_assert_int_eq(tether_retry(scripted, &s, &o, &r), ECONNRESET);
    ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_BUDGET);
    ck_assert_int_eq(s.calls, 2); /* at 0 and 500 ms; the next would start at 1000 */
    th_baseline_check(b);
}
END_TEST

/* ================================================ per-attempt timeout */

struct hang_once {
    tether_token *outer;
    tether_time_t started[4];
    tether_time_t ended[4];
    tether_time_t attempt_deadline[4];
    int calls;
};

static int hang_then_succeed(void *arg)
{
    struct hang_once *h = arg;
    int i = h->calls++;
    h->started[i] = tether_now();
    tether_token *cur = tether_current();
    ck_assert_ptr_nonnull(cur);
    ck_assert_ptr_ne(cur, h->outer);
    h->attempt_deadline[i] = tether_token_deadline(cur);
    int rc = 0;
    if (i == 0) /* hangs until its own timeout stops it */
        rc = tether_sleep_for(tether_sec(3600)) == 0 ? 0 : errno;
    h->ended[i] = tether_now();
    return rc;
}

START_TEST(attempt_timeout_stops_hanging_attempt)
{
    th_baseline b = th_baseline_take();
    tether_token *outer = new_token(NULL, TETHER_NEVER);
    enter(outer);
    struct hang_once h = { .outer = outer };
    struct events ev = { 0 };
    tether_retry_opts o = { .attempt_timeout_ns = MS(50), .initial_delay_ns = MS(1),
                            .on_retry = record_event, .ctx = &ev };
    tether_retry_result r;
    ck_assert_int_eq(tether_retry(hang_then_succeed, &h, &o, &r), 0);
    ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_SUCCEEDED);
    ck_assert_uint_eq(r.attempts, 2);
    ck_assert_int_eq(h.calls, 2);
    ck_assert_int_eq(ev.n, 1);
    ck_assert_int_eq(ev.ev[0].error, ETIMEDOUT);
    ck_assert(ev.ev[0].attempt_timed_out);
    /* Its own deadline: never early, promptly enforced. */
    ck_assert_int_le(h.attempt_deadline[0], h.started[0] + MS(50));
    ck_assert_int_ge(h.ended[0], h.attempt_deadline[0]);
    ck_assert_int_lt(h.ended[0] - h.started[0], MS(50) + th_bound_ns(1000));
    /* The next attempt got a fresh timeout. */
    ck_assert_int_gt(h.attempt_deadline[1], h.attempt_deadline[0]);
    /* The outer token is untouched and current again. */
    ck_assert_ptr_eq(tether_current(), outer);
    ck_assert_int_eq(tether_token_check(outer), 0);
    leave_free(outer);

    /* No current token: the attempt's token is a root. */
    h = (struct hang_once){ .outer = NULL };
    ck_assert_int_eq(tether_retry(hang_then_succeed, &h, &o, &r), 0);
    ck_assert_uint_eq(r.attempts, 2);
    th_baseline_check(b);
}
END_TEST

/* An outer deadline earlier than the per-attempt timeout is the token's
 * own ETIMEDOUT: not retried. */
START_TEST(outer_deadline_inside_attempt_timeout)
{
    th_baseline b = th_baseline_take();
    tether_token *outer = new_token(NULL, tether_deadline_after(MS(40)));
    enter(outer);
    atomic_int consulted = 0;
    tether_retry_opts o = { .attempt_timeout_ns = tether_sec(3600), .initial_delay_ns = 1,
                            .retryable = retry_everything, .ctx = &consulted,
                            .max_attempts = TETHER_RETRY_UNLIMITED };
    tether_retry_result r;
    ck_assert_int_eq(tether_retry(sleep_an_hour, NULL, &o, &r), ETIMEDOUT);
    ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_DEADLINE);
    ck_assert_uint_eq(r.attempts, 1);
    ck_assert_int_eq(consulted, 0);
    ck_assert_int_eq(tether_token_cause(outer), TETHER_CAUSE_DEADLINE);
    leave_free(outer);
    th_baseline_check(b);
}
END_TEST

/* ========================================================= retry-after */

START_TEST(retry_after_honoured)
{
    th_baseline b = th_baseline_take();
    struct fake f;
    fake_init(&f);
    struct script s = { .fake = &f,
                        .results = { EAGAIN, EAGAIN, EAGAIN, 0 }, .nresults = 4,
                        .hints = { tether_sec(5), MS(10), 0, tether_sec(9) } };
    struct events ev = { 0 };
    tether_retry_opts o = { .initial_delay_ns = MS(100), .max_delay_ns = MS(1000),
                            .jitter = TETHER_RETRY_JITTER_NONE, .max_attempts = 10,
                            .clock = fake_clock(&f), .on_retry = record_event, .ctx = &ev };
    tether_retry_result r;
    ck_assert_int_eq(tether_retry(scripted, &s, &o, &r), 0);
    ck_assert_uint_eq(r.attempts, 4);
    ck_assert_int_eq(f.nsleeps, 3);
    ck_assert_int_eq(f.sleeps[0], tether_sec(5)); /* above max_delay: honoured */
    ck_assert_int_eq(f.sleeps[1], MS(200));       /* below the backoff: backoff */
    ck_assert_int_eq(f.sleeps[2], MS(400));       /* no feedback into the sequence */
    ck_assert_int_eq(ev.ev[0].retry_after_ns, tether_sec(5));
    ck_assert_int_eq(ev.ev[1].retry_after_ns, MS(10));
    ck_assert_int_eq(ev.ev[2].retry_after_ns, 0);
    ck_assert_int_eq(ev.ev[0].delay_ns, tether_sec(5));
    th_baseline_check(b);
}
END_TEST

static int hint_twice(void *arg)
{
    (void)arg;
    ck_assert_int_eq(tether_retry_after(MS(700)), 0);
    ck_assert_int_eq(tether_retry_after(MS(300)), 0);
    ck_assert_int_eq(tether_retry_after(-1), EINVAL);
    return EBUSY;
}

START_TEST(retry_after_keeps_largest)
{
    th_baseline b = th_baseline_take();
    struct fake f;
    fake_init(&f);
    tether_retry_opts o = { .initial_delay_ns = MS(1), .jitter = TETHER_RETRY_JITTER_NONE,
                            .max_attempts = 2, .clock = fake_clock(&f) };
    ck_assert_int_eq(tether_retry(hint_twice, NULL, &o, NULL), EBUSY);
    ck_assert_int_eq(f.nsleeps, 1);
    ck_assert_int_eq(f.sleeps[0], MS(700));
    th_baseline_check(b);
}
END_TEST

START_TEST(retry_after_capped_by_deadline_and_budget)
{
    th_baseline b = th_baseline_take();
    struct fake f;
    fake_init(&f);
    tether_token *t = new_token(NULL, f.now + tether_sec(10));
    enter(t);
    struct script s = { .fake = &f, .results = { EAGAIN }, .nresults = 1,
                        .hints = { tether_sec(3600) } };
    tether_retry_opts o = { .initial_delay_ns = MS(1), .max_attempts = 10,
                            .clock = fake_clock(&f) };
    tether_retry_result r;
    ck_assert_int_eq(tether_retry(scripted, &s, &o, &r), ETIMEDOUT);
    ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_DEADLINE);
    ck_assert_int_eq(f.nsleeps, 0);
    ck_assert_uint_eq(r.attempts, 1);
    leave_free(t);

    fake_init(&f);
    s = (struct script){ .fake = &f, .results = { EAGAIN }, .nresults = 1,
                         .hints = { tether_sec(3600) } };
    o.max_elapsed_ns = tether_sec(10);
    ck_assert_int_eq(tether_retry(scripted, &s, &o, &r), EAGAIN);
    ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_BUDGET);
    ck_assert_int_eq(f.nsleeps, 0);
    th_baseline_check(b);
}
END_TEST

/* Hints are ignored after success or a permanent error. */
static int hint_and_fail_permanently(void *arg)
{
    (void)arg;
    ck_assert_int_eq(tether_retry_after(MS(5)), 0);
    return ENOENT;
}

static void hint_from_callback(const tether_retry_event *ev, void *ctx)
{
    (void)ev;
    *(int *)ctx = tether_retry_after(MS(1));
}

static void *hint_in_thread(void *p)
{
    *(int *)p = tether_retry_after(MS(1));
    return NULL;
}

static int hint_from_other_thread(void *arg)
{
    join(spawn(hint_in_thread, arg));
    return 0;
}

/* Nested: the inner retry's hints are its own; after it returns, the
 * outer attempt hints for the outer retry. */
struct nested {
    struct fake *inner_fake;
    int inner_calls;
};

static int inner_attempt(void *arg)
{
    struct nested *n = arg;
    ck_assert_int_eq(tether_retry_after(MS(77)), 0);
    return n->inner_calls++ == 0 ? EAGAIN : 0;
}

static int outer_attempt(void *arg)
{
    struct nested *n = arg;
    tether_retry_opts o = { .initial_delay_ns = MS(1), .jitter = TETHER_RETRY_JITTER_NONE,
                            .clock = fake_clock(n->inner_fake) };
    ck_assert_int_eq(tether_retry(inner_attempt, n, &o, NULL), 0);
    ck_assert_int_eq(tether_retry_after(MS(900)), 0);
    return n->inner_calls > 2 ? 0 : ECONNRESET;
}

START_TEST(retry_after_scope_of_effect)
{
    th_baseline b = th_baseline_take();
    ck_assert_int_eq(tether_retry_after(MS(1)), EPERM);
    ck_assert_int_eq(tether_retry_after(-1), EINVAL);

    struct fake f;
    fake_init(&f);
    int rc = -1;
    tether_retry_opts o = { .on_retry = hint_from_callback, .ctx = &rc, .max_attempts = 2,
                            .clock = fake_clock(&f) };
    ck_assert_int_eq(tether_retry(hint_and_fail_permanently, NULL, &o, NULL), ENOENT);
    ck_assert_int_eq(f.nsleeps, 0);
    ck_assert_int_eq(rc, -1); /* permanent: no retry, no callback */

    struct script s = { .fake = &f, .results = { EAGAIN }, .nresults = 1 };
    ck_assert_int_eq(tether_retry(scripted, &s, &o, NULL), EAGAIN);
    ck_assert_int_eq(rc, EPERM); /* between attempts */

    rc = -1;
    ck_assert_int_eq(tether_retry(hint_from_other_thread, &rc, &o, NULL), 0);
    ck_assert_int_eq(rc, EPERM); /* another thread */
    ck_assert_int_eq(tether_retry_after(MS(1)), EPERM); /* after the call */

    struct fake inner;
    fake_init(&inner);
    fake_init(&f);
    struct nested n = { .inner_fake = &inner };
    tether_retry_opts oo = { .initial_delay_ns = MS(1), .jitter = TETHER_RETRY_JITTER_NONE,
                             .clock = fake_clock(&f) };
    ck_assert_int_eq(tether_retry(outer_attempt, &n, &oo, NULL), 0);
    ck_assert_int_eq(inner.nsleeps, 1);
    ck_assert_int_eq(inner.sleeps[0], MS(77));
    ck_assert_int_eq(f.nsleeps, 1);
    ck_assert_int_eq(f.sleeps[0], MS(900));
    th_baseline_check(b);
}
END_TEST

/* ================================================== real clock, misc */

/* No current token: the real sleep, never early. */
START_TEST(real_sleep_without_token)
{
    th_baseline b = th_baseline_take();
    struct script s = { .results = { EAGAIN, EAGAIN, 0 }, .nresults = 3 };
    tether_retry_opts o = { .initial_delay_ns = MS(5), .jitter = TETHER_RETRY_JITTER_NONE };
    tether_retry_result r;
    ck_assert_int_eq(tether_retry(scripted, &s, &o, &r), 0);
    ck_assert_uint_eq(r.attempts, 3);
    ck_assert_int_ge(s.starts[1] - s.starts[0], MS(5));
    ck_assert_int_ge(s.starts[2] - s.starts[1], MS(10));
    ck_assert_int_ge(r.slept_ns, MS(15));
    ck_assert_int_ge(r.elapsed_ns, r.slept_ns);
    ck_assert_int_lt(r.slept_ns, MS(15) + th_bound_ns(1000));
    th_baseline_check(b);
}
END_TEST

/* A signal handler running during the backoff does not end it. */
static atomic_int signals_seen;

static void on_usr1(int sig)
{
    (void)sig;
    atomic_fetch_add(&signals_seen, 1);
}

struct signaller {
    sem_t ready;
    pthread_t target;
    pid_t tid;
};

static void post_signaller(const tether_retry_event *ev, void *ctx)
{
    (void)ev;
    ck_assert_int_eq(sem_post(&((struct signaller *)ctx)->ready), 0);
}

static void *signaller_main(void *p)
{
    struct signaller *sg = p;
    while (sem_wait(&sg->ready) != 0)
        ;
    th_wait_blocked(sg->tid);
    pthread_kill(sg->target, SIGUSR1);
    return NULL;
}

START_TEST(signal_does_not_end_backoff)
{
    th_baseline b = th_baseline_take();
    struct sigaction sa = { .sa_handler = on_usr1 }; /* no SA_RESTART */
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
    for (int with_token = 0; with_token <= 1; with_token++) {
        atomic_store(&signals_seen, 0);
        tether_token *t = with_token ? new_token(NULL, TETHER_NEVER) : NULL;
        if (t)
            enter(t);
        struct signaller sg = { .target = pthread_self(), .tid = th_gettid() };
        ck_assert_int_eq(sem_init(&sg.ready, 0, 0), 0);
        pthread_t th = spawn(signaller_main, &sg);
        struct script s = { .results = { EAGAIN, 0 }, .nresults = 2 };
        tether_retry_opts o = { .initial_delay_ns = MS(300), .jitter = TETHER_RETRY_JITTER_NONE,
                                .on_retry = post_signaller, .ctx = &sg };
        tether_retry_result r;
        ck_assert_int_eq(tether_retry(scripted, &s, &o, &r), 0);
        join(th);
        ck_assert_uint_eq(r.attempts, 2);
        ck_assert_int_ge(s.starts[1] - s.starts[0], MS(300));
        ck_assert_int_eq(atomic_load(&signals_seen), 1);
        sem_destroy(&sg.ready);
        if (t)
            leave_free(t);
    }
    th_baseline_check(b);
}
END_TEST

/* An attempt that leaves a token entered is misuse named on stderr. */
static int leave_entered(void *arg)
{
    tether_token_enter(arg);
    return 0;
}

START_TEST(unbalanced_attempt_aborts)
{
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_retry(leave_entered, t, NULL, NULL);
}
END_TEST

START_TEST(unbalanced_attempt_with_timeout_aborts)
{
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_retry_opts o = { .attempt_timeout_ns = tether_sec(10) };
    tether_retry(leave_entered, t, &o, NULL);
}
END_TEST

/* Many threads retrying at once, sharing one options struct. */
struct worker {
    const tether_retry_opts *o;
    int calls;
    int rc;
    tether_retry_result r;
};

static int fail_three_times(void *arg)
{
    struct worker *w = arg;
    return ++w->calls > 3 ? 0 : EAGAIN;
}

static void *worker_main(void *p)
{
    struct worker *w = p;
    tether_token *t = new_token(NULL, TETHER_NEVER);
    enter(t);
    w->rc = tether_retry(fail_three_times, w, w->o, &w->r);
    leave_free(t);
    return NULL;
}

START_TEST(concurrent_retries_share_opts)
{
    th_baseline b = th_baseline_take();
    enum { N = 8 };
    tether_retry_opts o = { .initial_delay_ns = tether_us(50), .max_attempts = 10 };
    struct worker w[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        w[i] = (struct worker){ .o = &o };
        th[i] = spawn(worker_main, &w[i]);
    }
    for (int i = 0; i < N; i++) {
        join(th[i]);
        ck_assert_int_eq(w[i].rc, 0);
        ck_assert_uint_eq(w[i].r.attempts, 4);
    }
    th_baseline_check(b);
}
END_TEST

/* ======================================================= fail-fast scope */

struct ff {
    sem_t retrying;
    pid_t retry_tid;
    int retry_rc;
    tether_retry_result r;
    tether_time_t failed_at, retry_returned_at;
};

static void ff_post(const tether_retry_event *ev, void *ctx)
{
    (void)ev;
    ck_assert_int_eq(sem_post(&((struct ff *)ctx)->retrying), 0);
}

static int always_refused(void *arg)
{
    (void)arg;
    return ECONNREFUSED;
}

static int ff_retrier(void *arg)
{
    struct ff *x = arg;
    x->retry_tid = th_gettid();
    tether_retry_opts o = { .initial_delay_ns = tether_sec(3600),
                            .max_attempts = TETHER_RETRY_UNLIMITED,
                            .jitter = TETHER_RETRY_JITTER_NONE, .on_retry = ff_post, .ctx = x };
    x->retry_rc = tether_retry(always_refused, NULL, &o, &x->r);
    x->retry_returned_at = tether_now();
    return x->retry_rc;
}

static int ff_failer(void *arg)
{
    struct ff *x = arg;
    while (sem_wait(&x->retrying) != 0)
        ;
    th_wait_blocked(x->retry_tid);
    x->failed_at = tether_now();
    return EIO;
}

START_TEST(fail_fast_sibling_stops_retry)
{
    th_baseline b = th_baseline_take();
    struct ff x = { .retry_rc = -1 };
    ck_assert_int_eq(sem_init(&x.retrying, 0, 0), 0);
    tether_scope *s;
    ck_assert_int_eq(tether_scope_open(&s, NULL), 0);
    ck_assert_int_eq(tether_spawn(s, ff_retrier, &x, NULL, NULL), 0);
    ck_assert_int_eq(tether_spawn(s, ff_failer, &x, NULL, NULL), 0);
    tether_result res;
    ck_assert_int_eq(tether_scope_join(s, &res), 0);
    ck_assert_int_eq(tether_scope_free(s), 0);

    ck_assert_int_eq(res.outcome, TETHER_OUTCOME_FAILED);
    ck_assert_int_eq(res.error, EIO);
    ck_assert_int_eq(res.cause, TETHER_CAUSE_SIBLING_FAILED);
    ck_assert_uint_eq(res.canceled, 1);
    ck_assert_uint_eq(res.failed, 1);
    ck_assert_int_eq(x.retry_rc, ECANCELED);
    ck_assert_int_eq(x.r.stop, TETHER_RETRY_STOP_CANCELED);
    ck_assert_uint_eq(x.r.attempts, 1);
    ck_assert_int_eq(x.r.last_error, ECONNREFUSED);
    ck_assert_int_lt(x.retry_returned_at - x.failed_at, th_bound_ns(500));
    sem_destroy(&x.retrying);
    th_baseline_check(b);
}
END_TEST

/* ============================================================== suite */

static Suite *suite(void)
{
    Suite *s = suite_create("retry");
    TCase *tc;

    tc = tcase_create("basics");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, first_success_null_opts);
    tcase_add_test(tc, bad_input_is_einval);
    tcase_add_test(tc, names_and_transient_set);
    tcase_add_test(tc, zeroed_opts_defaults);
    suite_add_tcase(s, tc);

    tc = tcase_create("sequence");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, sequence_none);
    tcase_add_test(tc, sequence_full);
    tcase_add_test(tc, sequence_equal);
    tcase_add_test(tc, sequence_decorrelated);
    tcase_add_test(tc, seed_zero_varies);
    tcase_add_test(tc, unlimited_attempts_capped_delay);
    suite_add_tcase(s, tc);

    tc = tcase_create("classify");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, permanent_error_never_retried);
    tcase_add_test(tc, custom_classifier);
    suite_add_tcase(s, tc);

    tc = tcase_create("cancel");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, cancelled_before_call);
    tcase_add_test(tc, cancel_inside_attempt_k);
    tcase_add_test(tc, token_deadline_during_attempt_not_retried);
    tcase_add_test(tc, cancel_from_on_retry_skips_sleep);
    tcase_add_test(tc, cancel_during_hour_backoff);
    tcase_add_test(tc, sleep_hook_error_stops);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, no_attempt_at_or_after_deadline);
    tcase_add_test(tc, delay_crossing_deadline_returns_without_sleeping);
    tcase_add_test(tc, elapsed_budget);
    suite_add_tcase(s, tc);

    tc = tcase_create("attempt_timeout");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, attempt_timeout_stops_hanging_attempt);
    tcase_add_test(tc, outer_deadline_inside_attempt_timeout);
    suite_add_tcase(s, tc);

    tc = tcase_create("retry_after");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, retry_after_honoured);
    tcase_add_test(tc, retry_after_keeps_largest);
    tcase_add_test(tc, retry_after_capped_by_deadline_and_budget);
    tcase_add_test(tc, retry_after_scope_of_effect);
    suite_add_tcase(s, tc);

    tc = tcase_create("real_clock");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, real_sleep_without_token);
    tcase_add_test(tc, signal_does_not_end_backoff);
    tcase_add_test_raise_signal(tc, unbalanced_attempt_aborts, SIGABRT);
    tcase_add_test_raise_signal(tc, unbalanced_attempt_with_timeout_aborts, SIGABRT);
    tcase_add_test(tc, concurrent_retries_share_opts);
    suite_add_tcase(s, tc);

    tc = tcase_create("scope");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, fail_fast_sibling_stops_retry);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
