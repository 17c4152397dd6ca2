/*
 * Retry with backoff: the basics, the delay sequence of every jitter
 * strategy, and the limits (attempts, budget, deadline).
 */
#define _GNU_SOURCE
#include "retry_fixtures.h"

#define MIN_(x) tether_sec((int64_t)(x)*60)

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

static void ref_sleeps(tether_retry_jitter j, uint64_t seed, int64_t base, int64_t cap, double mult,
                       int n, int64_t *out)
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
        .initial_delay_ns = base,
        .max_delay_ns = cap,
        .multiplier = mult,
        .jitter = j,
        .max_attempts = attempts,
        .seed = seed,
        .clock = fake_clock(f),
        .on_retry = record_event,
        .ctx = ev,
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

    const int transient[] = { EAGAIN,    EWOULDBLOCK,  EINTR,         EBUSY,
                              ETIMEDOUT, ECONNREFUSED, ECONNRESET,    ECONNABORTED,
                              EPIPE,     ENETDOWN,     ENETUNREACH,   ENETRESET,
                              EHOSTDOWN, EHOSTUNREACH, EADDRNOTAVAIL, ENOBUFS };
    for (size_t i = 0; i < sizeof transient / sizeof transient[0]; i++)
        ck_assert_msg(tether_retry_transient(transient[i]), "%d", transient[i]);
    const int permanent[] = { 0,     -1,    ECANCELED, EIO,    ENOMEM, EINVAL, ENOENT, EACCES,
                              EPERM, EBADF, ENOTCONN,  EPROTO, EEXIST, ENOSPC, 100000 };
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
        default: ck_abort();
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
    tether_retry_opts o = { .initial_delay_ns = tether_sec(1000),
                            .max_attempts = 4,
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
    thread_join(thread_start(seed0_thread, t));
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
    tether_retry_opts o = { .initial_delay_ns = MS(1),
                            .max_delay_ns = MS(64),
                            .jitter = TETHER_RETRY_JITTER_NONE,
                            .max_attempts = TETHER_RETRY_UNLIMITED,
                            .clock = fake_clock(&f) };
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
    tether_retry_opts o = { .initial_delay_ns = MIN_(10),
                            .multiplier = 1.0,
                            .jitter = TETHER_RETRY_JITTER_NONE,
                            .max_attempts = TETHER_RETRY_UNLIMITED,
                            .clock = fake_clock(&f) };
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
    tether_retry_opts o = { .initial_delay_ns = MIN_(40),
                            .max_delay_ns = MIN_(500),
                            .jitter = TETHER_RETRY_JITTER_NONE,
                            .max_attempts = TETHER_RETRY_UNLIMITED,
                            .clock = fake_clock(&f),
                            .on_retry = record_event,
                            .ctx = &ev };
    tether_retry_result r;
    ck_assert_int_eq(tether_retry(scripted, &s, &o, &r), ETIMEDOUT);
    ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_DEADLINE);
    ck_assert_uint_eq(r.attempts, 2); /* at 0 and 40 min */
    ck_assert_int_eq(f.nsleeps, 1);   /* the 80 min one never started */
    ck_assert_int_eq(ev.n, 1);        /* nor was it announced */
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
    tether_retry_opts o = { .initial_delay_ns = MS(300),
                            .jitter = TETHER_RETRY_JITTER_NONE,
                            .max_attempts = TETHER_RETRY_UNLIMITED,
                            .max_elapsed_ns = MS(1000),
                            .clock = fake_clock(&f) };
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

static Suite *suite(void)
{
    Suite *s = suite_create("retry_backoff");
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

    tc = tcase_create("limits");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, no_attempt_at_or_after_deadline);
    tcase_add_test(tc, delay_crossing_deadline_returns_without_sleeping);
    tcase_add_test(tc, elapsed_budget);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
