/*
 * Retry on the real clock: sleeps really wait, signals during a sleep, and an
 * unbalanced attempt aborts loudly.
 */
#define _GNU_SOURCE
#include "retry_fixtures.h"

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
        pthread_t th = thread_start(signaller_main, &sg);
        struct script s = { .results = { EAGAIN, 0 }, .nresults = 2 };
        tether_retry_opts o = { .initial_delay_ns = MS(300),
                                .jitter = TETHER_RETRY_JITTER_NONE,
                                .on_retry = post_signaller,
                                .ctx = &sg };
        tether_retry_result r;
        ck_assert_int_eq(tether_retry(scripted, &s, &o, &r), 0);
        thread_join(th);
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
        th[i] = thread_start(worker_main, &w[i]);
    }
    for (int i = 0; i < N; i++) {
        thread_join(th[i]);
        ck_assert_int_eq(w[i].rc, 0);
        ck_assert_uint_eq(w[i].r.attempts, 4);
    }
    th_baseline_check(b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("retry_clock");
    TCase *tc;

    tc = tcase_create("real_clock");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, real_sleep_without_token);
    tcase_add_test(tc, signal_does_not_end_backoff);
    tcase_add_test_raise_signal(tc, unbalanced_attempt_aborts, SIGABRT);
    tcase_add_test_raise_signal(tc, unbalanced_attempt_with_timeout_aborts, SIGABRT);
    tcase_add_test(tc, concurrent_retries_share_opts);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
