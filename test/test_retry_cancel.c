/*
 * Retry under cancellation: a canceled backoff or attempt, per-attempt
 * timeouts, and retry inside a fail-fast scope.
 */
#define _GNU_SOURCE
#include "retry_fixtures.h"

/* ======================================================= cancellation */

START_TEST(canceled_before_call)
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
    tether_retry_opts o = { .retryable = retry_everything,
                            .ctx = &consulted,
                            .initial_delay_ns = 1,
                            .max_attempts = TETHER_RETRY_UNLIMITED };
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
                            .on_retry = cancel_from_callback,
                            .ctx = t };
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
 * bound, as a canceled tether_sleep_for does. */
struct canceler {
    sem_t ready;
    pid_t tid;
    tether_token *tok;
    tether_time_t canceled_at;
};

static void post_ready(const tether_retry_event *ev, void *ctx)
{
    (void)ev;
    ck_assert_int_eq(sem_post(&((struct canceler *)ctx)->ready), 0);
}

static void *canceler_main(void *p)
{
    struct canceler *c = p;
    while (sem_wait(&c->ready) != 0)
        ;
    th_wait_blocked(c->tid);
    c->canceled_at = tether_now();
    tether_token_cancel(c->tok, 0);
    return NULL;
}

START_TEST(cancel_during_hour_backoff)
{
    th_baseline b = th_baseline_take();
    struct canceler c = { .tid = th_gettid() };
    ck_assert_int_eq(sem_init(&c.ready, 0, 0), 0);

    /* The reference: a canceled one-hour sleep. */
    c.tok = new_token(NULL, TETHER_NEVER);
    enter(c.tok);
    pthread_t th = thread_start(canceler_main, &c);
    ck_assert_int_eq(sem_post(&c.ready), 0);
    ck_assert_int_eq(tether_sleep_for(tether_sec(3600)), -1);
    ck_assert_int_eq(errno, ECANCELED);
    int64_t sleep_latency = tether_now() - c.canceled_at;
    thread_join(th);
    leave_free(c.tok);

    /* The same cancel during a one-hour backoff. */
    c.tok = new_token(NULL, TETHER_NEVER);
    enter(c.tok);
    th = thread_start(canceler_main, &c);
    struct script s = { .nresults = 1, .results = { ECONNREFUSED } };
    tether_retry_opts o = { .initial_delay_ns = tether_sec(3600),
                            .jitter = TETHER_RETRY_JITTER_NONE,
                            .on_retry = post_ready,
                            .ctx = &c };
    tether_retry_result r;
    ck_assert_int_eq(tether_retry(scripted, &s, &o, &r), ECANCELED);
    int64_t retry_latency = tether_now() - c.canceled_at;
    thread_join(th);
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
    tether_retry_opts o = { .attempt_timeout_ns = MS(50),
                            .initial_delay_ns = MS(1),
                            .on_retry = record_event,
                            .ctx = &ev };
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
    tether_retry_opts o = { .attempt_timeout_ns = tether_sec(3600),
                            .initial_delay_ns = 1,
                            .retryable = retry_everything,
                            .ctx = &consulted,
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
                            .jitter = TETHER_RETRY_JITTER_NONE,
                            .on_retry = ff_post,
                            .ctx = x };
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

static Suite *suite(void)
{
    Suite *s = suite_create("retry_cancel");
    TCase *tc;

    tc = tcase_create("cancel");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, canceled_before_call);
    tcase_add_test(tc, cancel_inside_attempt_k);
    tcase_add_test(tc, token_deadline_during_attempt_not_retried);
    tcase_add_test(tc, cancel_from_on_retry_skips_sleep);
    tcase_add_test(tc, cancel_during_hour_backoff);
    tcase_add_test(tc, sleep_hook_error_stops);
    suite_add_tcase(s, tc);

    tc = tcase_create("attempt_timeout");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, attempt_timeout_stops_hanging_attempt);
    tcase_add_test(tc, outer_deadline_inside_attempt_timeout);
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
