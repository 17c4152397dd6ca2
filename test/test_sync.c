/*
 * Cancellable condition-variable and semaphore waits.
 *
 * Condition variables: woken by the condvar as pthread_cond_wait is, by a
 * cancellation (ECANCELED) or a deadline (ETIMEDOUT), always with the mutex
 * held again on return; the timed variants on either clock. Semaphores: a
 * unit is taken exactly when 0 is returned, so a cancellation never loses,
 * steals or invents one, whoever else waits.
 */
#define _GNU_SOURCE
#include "legacy.h"

#include <semaphore.h>
#include <stdatomic.h>
#include <time.h>

/* ------------------------------------------------------------ condition variables */

static pthread_mutex_t mu;
static pthread_cond_t cv;
static bool flag;

/* An error-checking mutex: locking it again from its owner says EDEADLK,
 * which proves the waiter holds it on return. */
static void init_sync(clockid_t clock)
{
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ERRORCHECK);
    ck_assert_int_eq(pthread_mutex_init(&mu, &ma), 0);
    pthread_mutexattr_destroy(&ma);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, clock);
    ck_assert_int_eq(pthread_cond_init(&cv, &ca), 0);
    pthread_condattr_destroy(&ca);
    flag = false;
}

static void destroy_sync(void)
{
    ck_assert_int_eq(pthread_cond_destroy(&cv), 0);
    ck_assert_int_eq(pthread_mutex_destroy(&mu), 0);
}

static void assert_held(void)
{
    ck_assert_int_eq(pthread_mutex_lock(&mu), EDEADLK);
}

/* Waits until flag (or an error); returns the last result; the mutex is
 * checked held on every return. */
static ssize_t wait_flag(void *a)
{
    (void)a;
    ck_assert_int_eq(pthread_mutex_lock(&mu), 0);
    int rc = 0;
    while (!flag && rc == 0) {
        rc = tether_cond_wait(&cv, &mu);
        assert_held();
    }
    ck_assert_int_eq(pthread_mutex_unlock(&mu), 0);
    return rc;
}

START_TEST(cond_signalled)
{
    th_baseline base = th_baseline_take();
    init_sync(CLOCK_REALTIME);
    for (int tethered = 0; tethered < 2; tethered++) {
        tether_token *tok = tethered ? lu_token(TETHER_NEVER) : NULL;
        flag = false;
        lu_thread th;
        lu_start_blocked(&th, tok, wait_flag, NULL);
        pthread_mutex_lock(&mu);
        flag = true;
        pthread_cond_signal(&cv);
        pthread_mutex_unlock(&mu);
        lu_join(&th);
        ck_assert_int_eq(th.ret, 0);
        if (tok) {
            ck_assert_int_eq(tether_token_check(tok), 0);
            lu_free(tok);
        }
    }
    destroy_sync();
    th_baseline_check(base);
}
END_TEST

START_TEST(cond_cancel_before)
{
    th_baseline base = th_baseline_take();
    init_sync(CLOCK_REALTIME);
    tether_token *tok = lu_token(TETHER_NEVER);
    tether_token_cancel(tok, 0);
    ck_assert_int_eq(tether_token_enter(tok), 0);
    ck_assert_int_eq(pthread_mutex_lock(&mu), 0);
    ck_assert_int_eq(tether_cond_wait(&cv, &mu), ECANCELED);
    assert_held();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    ck_assert_int_eq(tether_cond_timedwait(&cv, &mu, &ts), ECANCELED);
    assert_held();
    ck_assert_int_eq(pthread_mutex_unlock(&mu), 0);
    ck_assert_int_eq(tether_token_leave(tok), 0);
    lu_free(tok);
    destroy_sync();
    th_baseline_check(base);
}
END_TEST

START_TEST(cond_cancel_blocked_mutex_held)
{
    th_baseline base = th_baseline_take();
    init_sync(CLOCK_REALTIME);
    tether_token *tok = lu_token(TETHER_NEVER);
    lu_thread th;
    lu_start_blocked(&th, tok, wait_flag, NULL);
    tether_time_t t0 = tether_now();
    tether_token_cancel(tok, 0); /* the canceler does not hold the mutex */
    lu_join(&th);
    ck_assert_int_eq(th.ret, ECANCELED);
    lu_assert_prompt(t0, th.ended, 500);
    lu_free(tok);
    destroy_sync();
    th_baseline_check(base);
}
END_TEST

/* Issue 11 item 1: the canceler may hold the waiters' mutex (as a waiter
 * that woke at the deadline does when it expires the token for the others):
 * it wakes them without locking the mutex again, and they return once it
 * lets go. */
START_TEST(cond_cancel_by_mutex_holder)
{
    th_baseline base = th_baseline_take();
    init_sync(CLOCK_REALTIME);
    tether_token *tok = lu_token(TETHER_NEVER);
    enum { N = 3 };
    lu_thread th[N];
    for (int i = 0; i < N; i++)
        lu_start_blocked(&th[i], tok, wait_flag, NULL);
    tether_time_t t0 = tether_now();
    ck_assert_int_eq(pthread_mutex_lock(&mu), 0);
    ck_assert_int_eq(tether_token_cancel(tok, 0), 0); /* returns: no self-deadlock */
    ck_assert_int_eq(pthread_mutex_unlock(&mu), 0);
    for (int i = 0; i < N; i++) {
        lu_join(&th[i]);
        ck_assert_int_eq(th[i].ret, ECANCELED);
        lu_assert_prompt(t0, th[i].ended, 500);
    }
    lu_free(tok);
    destroy_sync();
    th_baseline_check(base);
}
END_TEST

START_TEST(cond_deadline)
{
    th_baseline base = th_baseline_take();
    init_sync(CLOCK_REALTIME);
    tether_time_t deadline = tether_deadline_after(tether_ms(50));
    tether_token *tok = lu_token(deadline);
    lu_thread th;
    lu_start(&th, tok, wait_flag, NULL);
    lu_join(&th);
    ck_assert_int_eq(th.ret, ETIMEDOUT);
    lu_assert_not_early(th.ended, deadline);
    lu_assert_prompt(deadline, th.ended, 500);
    ck_assert_int_eq(tether_token_cause(tok), TETHER_CAUSE_DEADLINE);
    lu_free(tok);
    destroy_sync();
    th_baseline_check(base);
}
END_TEST

/* Timed waits on either clock, with or without a token: the same
 * ETIMEDOUT, never early; a token deadline before abstime wins. */
static void timed_case(clockid_t cv_clock, int variant, tether_token *tok, int64_t wait_ns,
                       tether_time_t expect_not_before)
{
    ck_assert_int_eq(pthread_mutex_lock(&mu), 0);
    struct timespec ts;
    clockid_t clk = variant == 0 ? CLOCK_REALTIME : cv_clock;
    clock_gettime(clk, &ts);
    int64_t at = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + wait_ns;
    ts.tv_sec = at / 1000000000;
    ts.tv_nsec = at % 1000000000;
    if (tok)
        ck_assert_int_eq(tether_token_enter(tok), 0);
    int rc;
    do {
        rc = variant == 0 ? tether_cond_timedwait(&cv, &mu, &ts)
                          : tether_cond_clockwait(&cv, &mu, cv_clock, &ts);
    } while (rc == 0);
    tether_time_t end = tether_now();
    if (tok)
        ck_assert_int_eq(tether_token_leave(tok), 0);
    ck_assert_int_eq(rc, ETIMEDOUT);
    ck_assert_int_ge(end, expect_not_before);
    assert_held();
    ck_assert_int_eq(pthread_mutex_unlock(&mu), 0);
}

START_TEST(cond_timed_variants)
{
    th_baseline base = th_baseline_take();
    for (int c = 0; c < 2; c++) {
        clockid_t clock = c ? CLOCK_MONOTONIC : CLOCK_REALTIME;
        init_sync(clock);
        for (int variant = 0; variant < 2; variant++) {
            if (variant == 0 && clock == CLOCK_MONOTONIC)
                continue; /* timedwait's abstime is on the condvar's clock: realtime only */
            /* no token, then a token without deadline, then one whose deadline comes first */
            timed_case(clock, variant, NULL, tether_ms(30), tether_now() + tether_ms(30));
            tether_token *tok = lu_token(TETHER_NEVER);
            timed_case(clock, variant, tok, tether_ms(30), tether_now() + tether_ms(30));
            ck_assert_int_eq(tether_token_check(tok), 0);
            lu_free(tok);
            tether_time_t deadline = tether_deadline_after(tether_ms(30));
            tok = lu_token(deadline);
            timed_case(clock, variant, tok, tether_sec(10), deadline);
            ck_assert_int_eq(tether_token_cause(tok), TETHER_CAUSE_DEADLINE);
            lu_free(tok);
        }
        destroy_sync();
    }
    /* Bad abstime: EINVAL, as the raw call. */
    init_sync(CLOCK_REALTIME);
    tether_token *tok = lu_token(TETHER_NEVER);
    ck_assert_int_eq(tether_token_enter(tok), 0);
    pthread_mutex_lock(&mu);
    struct timespec bad = { .tv_nsec = 2000000000 };
    ck_assert_int_eq(tether_cond_timedwait(&cv, &mu, &bad), EINVAL);
    ck_assert_int_eq(tether_cond_clockwait(&cv, &mu, CLOCK_MONOTONIC, &bad), EINVAL);
    assert_held();
    pthread_mutex_unlock(&mu);
    ck_assert_int_eq(tether_token_leave(tok), 0);
    lu_free(tok);
    destroy_sync();
    th_baseline_check(base);
}
END_TEST

/* A signal handler does not end a condvar wait, with or without tether
 * (pthread_cond_wait never fails with EINTR). */
START_TEST(cond_signal_handler_no_eintr)
{
    th_baseline base = th_baseline_take();
    lu_eintr_handler();
    init_sync(CLOCK_REALTIME);
    tether_token *tok = lu_token(TETHER_NEVER);
    lu_thread th;
    lu_start_blocked(&th, tok, wait_flag, NULL);
    ck_assert_int_eq(pthread_kill(th.th, SIGUSR1), 0);
    ck_assert_int_eq(th_wait_blocked(th.tid), 0);
    tether_token_cancel(tok, 0);
    lu_join(&th);
    ck_assert_int_eq(th.ret, ECANCELED);
    lu_free(tok);
    destroy_sync();
    th_baseline_check(base);
}
END_TEST

/* Canceling one token wakes its waiters only; the others keep waiting for
 * their predicate (they may see spurious wakeups, as pthreads allows). */
enum { WAITERS = 6 };
START_TEST(cond_cancel_one_group)
{
    th_baseline base = th_baseline_take();
    init_sync(CLOCK_REALTIME);
    tether_token *a = lu_token(TETHER_NEVER), *b = lu_token(TETHER_NEVER);
    lu_thread th[WAITERS];
    for (int i = 0; i < WAITERS; i++)
        lu_start_blocked(&th[i], i % 3 == 0 ? a : i % 3 == 1 ? b : NULL, wait_flag, NULL);
    tether_token_cancel(a, 0);
    for (int i = 0; i < WAITERS; i += 3) {
        lu_join(&th[i]);
        ck_assert_int_eq(th[i].ret, ECANCELED);
    }
    for (int i = 0; i < WAITERS; i++)
        if (i % 3)
            ck_assert_int_eq(th_wait_blocked(th[i].tid), 0);
    pthread_mutex_lock(&mu);
    flag = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < WAITERS; i++)
        if (i % 3) {
            lu_join(&th[i]);
            ck_assert_int_eq(th[i].ret, 0);
        }
    lu_free(a);
    lu_free(b);
    destroy_sync();
    th_baseline_check(base);
}
END_TEST

/* Cancels racing signals and wakeups: no deadlock, no leak, the mutex
 * always held on return. */
static atomic_int race_go;
static ssize_t race_waiter(void *a)
{
    (void)a;
    while (!atomic_load(&race_go)) {
    }
    return wait_flag(NULL);
}

START_TEST(cond_cancel_race)
{
    th_baseline base = th_baseline_take();
    uint64_t rng = th_seed("cond_cancel_race");
    init_sync(CLOCK_MONOTONIC);
    int ok = 0, canceled = 0;
    for (int i = 0; i < 1000; i++) {
        tether_token *tok = lu_token(TETHER_NEVER);
        flag = false;
        atomic_store(&race_go, 0);
        lu_thread th;
        lu_start(&th, tok, race_waiter, NULL);
        uint64_t r = th_rand(&rng);
        atomic_store(&race_go, 1);
        for (volatile unsigned k = 0; k < (unsigned)(r >> 16) % 5000; k++) {
        }
        if (r & 1) {
            pthread_mutex_lock(&mu);
            flag = true;
            pthread_cond_signal(&cv);
            pthread_mutex_unlock(&mu);
            tether_token_cancel(tok, 0);
        } else {
            tether_token_cancel(tok, 0);
            pthread_mutex_lock(&mu);
            flag = true;
            pthread_cond_signal(&cv);
            pthread_mutex_unlock(&mu);
        }
        lu_join(&th);
        ck_assert(th.ret == 0 || th.ret == ECANCELED);
        th.ret == 0 ? ok++ : canceled++;
        lu_free(tok);
    }
    fprintf(stderr, "cond race: %d woken, %d canceled\n", ok, canceled);
    destroy_sync();
    th_baseline_check(base);
}
END_TEST

START_TEST(cond_no_token_passthrough)
{
    th_baseline base = th_baseline_take();
    init_sync(CLOCK_REALTIME);
    pthread_mutex_lock(&mu);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ck_assert_int_eq(tether_cond_timedwait(&cv, &mu, &ts), ETIMEDOUT);
    struct timespec mono;
    clock_gettime(CLOCK_MONOTONIC, &mono);
    ck_assert_int_eq(tether_cond_clockwait(&cv, &mu, CLOCK_MONOTONIC, &mono), ETIMEDOUT);
    assert_held();
    pthread_mutex_unlock(&mu);
    destroy_sync();
    th_baseline_check(base);
}
END_TEST

/* ------------------------------------------------------------ semaphores */

static sem_t sem;

static int sem_value(void)
{
    int v;
    ck_assert_int_eq(sem_getvalue(&sem, &v), 0);
    return v;
}

static ssize_t t_sem_wait(void *a)
{
    (void)a;
    return tether_sem_wait(&sem);
}
static ssize_t r_sem_wait(void *a)
{
    (void)a;
    return sem_wait(&sem);
}

START_TEST(sem_posted)
{
    th_baseline base = th_baseline_take();
    ck_assert_int_eq(sem_init(&sem, 0, 2), 0);
    tether_token *tok = lu_token(TETHER_NEVER);
    ck_assert_int_eq(tether_token_enter(tok), 0);
    ck_assert_int_eq(tether_sem_wait(&sem), 0);
    struct timespec ts = { 0, 0 }; /* long past: not looked at while a unit is there */
    ck_assert_int_eq(tether_sem_timedwait(&sem, &ts), 0);
    ck_assert_int_eq(sem_value(), 0);
    errno = 0;
    ck_assert_int_eq(tether_sem_timedwait(&sem, &ts), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    struct timespec bad = { .tv_nsec = -5 };
    errno = 0;
    ck_assert_int_eq(tether_sem_timedwait(&sem, &bad), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(tether_token_leave(tok), 0);
    errno = 0;
    ck_assert_int_eq(sem_timedwait(&sem, &bad), -1);
    ck_assert_int_eq(errno, EINVAL);
    /* Blocked, then posted. */
    lu_thread th;
    lu_start_blocked(&th, tok, t_sem_wait, NULL);
    ck_assert_int_eq(sem_post(&sem), 0);
    lu_join(&th);
    ck_assert_int_eq(th.ret, 0);
    ck_assert_int_eq(sem_value(), 0);
    lu_free(tok);
    sem_destroy(&sem);
    th_baseline_check(base);
}
END_TEST

START_TEST(sem_cancel_before_and_blocked)
{
    th_baseline base = th_baseline_take();
    ck_assert_int_eq(sem_init(&sem, 0, 1), 0);
    tether_token *tok = lu_token(TETHER_NEVER);
    tether_token_cancel(tok, 0);
    ck_assert_int_eq(tether_token_enter(tok), 0);
    errno = 0;
    ck_assert_int_eq(tether_sem_wait(&sem), -1);
    ck_assert_int_eq(errno, ECANCELED);
    ck_assert_int_eq(sem_value(), 1); /* not taken */
    ck_assert_int_eq(tether_token_leave(tok), 0);
    lu_free(tok);
    ck_assert_int_eq(sem_wait(&sem), 0);

    tok = lu_token(TETHER_NEVER);
    lu_thread th;
    lu_start_blocked(&th, tok, t_sem_wait, NULL);
    tether_time_t t0 = tether_now();
    tether_token_cancel(tok, 0);
    lu_join(&th);
    ck_assert_int_eq(th.ret, -1);
    ck_assert_int_eq(th.err, ECANCELED);
    lu_assert_prompt(t0, th.ended, 500);
    ck_assert_int_eq(sem_value(), 0);
    lu_free(tok);
    sem_destroy(&sem);
    th_baseline_check(base);
}
END_TEST

START_TEST(sem_deadline)
{
    th_baseline base = th_baseline_take();
    ck_assert_int_eq(sem_init(&sem, 0, 0), 0);
    tether_time_t deadline = tether_deadline_after(tether_ms(45));
    tether_token *tok = lu_token(deadline);
    lu_thread th;
    lu_start(&th, tok, t_sem_wait, NULL);
    lu_join(&th);
    ck_assert_int_eq(th.ret, -1);
    ck_assert_int_eq(th.err, ETIMEDOUT);
    lu_assert_not_early(th.ended, deadline);
    lu_assert_prompt(deadline, th.ended, 500);
    lu_free(tok);
    /* sem_timedwait: its own abstime, not early either. */
    tok = lu_token(TETHER_NEVER);
    ck_assert_int_eq(tether_token_enter(tok), 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 30000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    errno = 0;
    ck_assert_int_eq(tether_sem_timedwait(&sem, &ts), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    ck_assert(now.tv_sec > ts.tv_sec || (now.tv_sec == ts.tv_sec && now.tv_nsec >= ts.tv_nsec));
    ck_assert_int_eq(tether_check(), 0);
    ck_assert_int_eq(tether_token_leave(tok), 0);
    lu_free(tok);
    sem_destroy(&sem);
    th_baseline_check(base);
}
END_TEST

START_TEST(sem_eintr)
{
    th_baseline base = th_baseline_take();
    lu_eintr_handler();
    ck_assert_int_eq(sem_init(&sem, 0, 0), 0);
    tether_token *tok = lu_token(TETHER_NEVER);
    for (int tethered = 0; tethered < 2; tethered++) {
        lu_thread th;
        lu_start(&th, tethered ? tok : NULL, tethered ? t_sem_wait : r_sem_wait, NULL);
        lu_interrupt(&th);
        ck_assert_int_eq(th.ret, -1);
        ck_assert_int_eq(th.err, EINTR);
    }
    ck_assert_int_eq(sem_value(), 0);
    lu_free(tok);
    sem_destroy(&sem);
    th_baseline_check(base);
}
END_TEST

/* Raw and tether waiters on one semaphore; the tether ones are canceled,
 * then exactly as many units are posted as there are raw waiters: each raw
 * waiter gets one, none is left over, none invented. */
START_TEST(sem_no_unit_lost_or_stolen)
{
    th_baseline base = th_baseline_take();
    ck_assert_int_eq(sem_init(&sem, 0, 0), 0);
    tether_token *tok = lu_token(TETHER_NEVER);
    enum { N = 4 };
    lu_thread raw[N], teth[N];
    for (int i = 0; i < N; i++) {
        lu_start_blocked(&raw[i], NULL, r_sem_wait, NULL);
        lu_start_blocked(&teth[i], tok, t_sem_wait, NULL);
    }
    tether_token_cancel(tok, 0);
    for (int i = 0; i < N; i++) {
        lu_join(&teth[i]);
        ck_assert_int_eq(teth[i].ret, -1);
        ck_assert_int_eq(teth[i].err, ECANCELED);
    }
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(sem_post(&sem), 0);
    for (int i = 0; i < N; i++) {
        lu_join(&raw[i]);
        ck_assert_int_eq(raw[i].ret, 0);
    }
    ck_assert_int_eq(sem_value(), 0);
    lu_free(tok);
    sem_destroy(&sem);
    th_baseline_check(base);
}
END_TEST

/* Posts racing cancels: every post is taken exactly once. */
START_TEST(sem_post_cancel_race)
{
    th_baseline base = th_baseline_take();
    uint64_t rng = th_seed("sem_post_cancel_race");
    ck_assert_int_eq(sem_init(&sem, 0, 0), 0);
    int taken = 0;
    for (int i = 0; i < 300; i++) {
        tether_token *tok = lu_token(TETHER_NEVER);
        lu_thread th;
        lu_start(&th, tok, t_sem_wait, NULL);
        uint64_t r = th_rand(&rng);
        for (volatile unsigned k = 0; k < (unsigned)(r >> 16) % 20000; k++) {
        }
        if (r & 1) {
            sem_post(&sem);
            tether_token_cancel(tok, 0);
        } else {
            tether_token_cancel(tok, 0);
            sem_post(&sem);
        }
        lu_join(&th);
        if (th.ret == 0) {
            taken++;
        } else {
            ck_assert_int_eq(th.err, ECANCELED);
            ck_assert_int_eq(sem_trywait(&sem), 0); /* the post is still there */
        }
        ck_assert_int_eq(sem_value(), 0);
        lu_free(tok);
    }
    fprintf(stderr, "sem race: %d taken by the waiter\n", taken);
    sem_destroy(&sem);
    th_baseline_check(base);
}
END_TEST

static Suite *sync_suite(void)
{
    Suite *s = suite_create("sync");
    TCase *tc = tcase_create("cond");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, cond_signalled);
    tcase_add_test(tc, cond_cancel_before);
    tcase_add_test(tc, cond_cancel_blocked_mutex_held);
    tcase_add_test(tc, cond_cancel_by_mutex_holder);
    tcase_add_test(tc, cond_deadline);
    tcase_add_test(tc, cond_timed_variants);
    tcase_add_test(tc, cond_signal_handler_no_eintr);
    tcase_add_test(tc, cond_cancel_one_group);
    tcase_add_test(tc, cond_cancel_race);
    tcase_add_test(tc, cond_no_token_passthrough);
    suite_add_tcase(s, tc);

    tc = tcase_create("sem");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, sem_posted);
    tcase_add_test(tc, sem_cancel_before_and_blocked);
    tcase_add_test(tc, sem_deadline);
    tcase_add_test(tc, sem_eintr);
    tcase_add_test(tc, sem_no_unit_lost_or_stolen);
    tcase_add_test(tc, sem_post_cancel_race);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(sync_suite());
}
