/*
 * Retry decisions: classifying an attempt's error as retryable or final, and
 * retry-after hints from an attempt.
 */
#define _GNU_SOURCE
#include "retry_fixtures.h"

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
    tether_retry_opts o = {
        .retryable = only_enoent, .ctx = &c, .max_attempts = 10, .clock = fake_clock(&f)
    };
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

/* ========================================================= retry-after */

START_TEST(retry_after_honoured)
{
    th_baseline b = th_baseline_take();
    struct fake f;
    fake_init(&f);
    struct script s = { .fake = &f,
                        .results = { EAGAIN, EAGAIN, EAGAIN, 0 },
                        .nresults = 4,
                        .hints = { tether_sec(5), MS(10), 0, tether_sec(9) } };
    struct events ev = { 0 };
    tether_retry_opts o = { .initial_delay_ns = MS(100),
                            .max_delay_ns = MS(1000),
                            .jitter = TETHER_RETRY_JITTER_NONE,
                            .max_attempts = 10,
                            .clock = fake_clock(&f),
                            .on_retry = record_event,
                            .ctx = &ev };
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
    tether_retry_opts o = { .initial_delay_ns = MS(1),
                            .jitter = TETHER_RETRY_JITTER_NONE,
                            .max_attempts = 2,
                            .clock = fake_clock(&f) };
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
    struct script s = {
        .fake = &f, .results = { EAGAIN }, .nresults = 1, .hints = { tether_sec(3600) }
    };
    tether_retry_opts o = { .initial_delay_ns = MS(1),
                            .max_attempts = 10,
                            .clock = fake_clock(&f) };
    tether_retry_result r;
    ck_assert_int_eq(tether_retry(scripted, &s, &o, &r), ETIMEDOUT);
    ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_DEADLINE);
    ck_assert_int_eq(f.nsleeps, 0);
    ck_assert_uint_eq(r.attempts, 1);
    leave_free(t);

    fake_init(&f);
    s = (struct script){
        .fake = &f, .results = { EAGAIN }, .nresults = 1, .hints = { tether_sec(3600) }
    };
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
    thread_join(thread_start(hint_in_thread, arg));
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
    tether_retry_opts o = { .initial_delay_ns = MS(1),
                            .jitter = TETHER_RETRY_JITTER_NONE,
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
    tether_retry_opts o = {
        .on_retry = hint_from_callback, .ctx = &rc, .max_attempts = 2, .clock = fake_clock(&f)
    };
    ck_assert_int_eq(tether_retry(hint_and_fail_permanently, NULL, &o, NULL), ENOENT);
    ck_assert_int_eq(f.nsleeps, 0);
    ck_assert_int_eq(rc, -1); /* permanent: no retry, no callback */

    struct script s = { .fake = &f, .results = { EAGAIN }, .nresults = 1 };
    ck_assert_int_eq(tether_retry(scripted, &s, &o, NULL), EAGAIN);
    ck_assert_int_eq(rc, EPERM); /* between attempts */

    rc = -1;
    ck_assert_int_eq(tether_retry(hint_from_other_thread, &rc, &o, NULL), 0);
    ck_assert_int_eq(rc, EPERM);                        /* another thread */
    ck_assert_int_eq(tether_retry_after(MS(1)), EPERM); /* after the call */

    struct fake inner;
    fake_init(&inner);
    fake_init(&f);
    struct nested n = { .inner_fake = &inner };
    tether_retry_opts oo = { .initial_delay_ns = MS(1),
                             .jitter = TETHER_RETRY_JITTER_NONE,
                             .clock = fake_clock(&f) };
    ck_assert_int_eq(tether_retry(outer_attempt, &n, &oo, NULL), 0);
    ck_assert_int_eq(inner.nsleeps, 1);
    ck_assert_int_eq(inner.sleeps[0], MS(77));
    ck_assert_int_eq(f.nsleeps, 1);
    ck_assert_int_eq(f.sleeps[0], MS(900));
    th_baseline_check(b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("retry_classify");
    TCase *tc;

    tc = tcase_create("classify");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, permanent_error_never_retried);
    tcase_add_test(tc, custom_classifier);
    suite_add_tcase(s, tc);

    tc = tcase_create("retry_after");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, retry_after_honoured);
    tcase_add_test(tc, retry_after_keeps_largest);
    tcase_add_test(tc, retry_after_capped_by_deadline_and_budget);
    tcase_add_test(tc, retry_after_scope_of_effect);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
