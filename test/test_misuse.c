/*
 * The misuse catalogue (docs/misuse.md) for tokens, the current token, timeout
 * blocks and the components (shield, signals, retry, processes, legacy
 * calls): one test per row. Every misuse tether detects returns the error the
 * header documents, changes nothing it promises not to change, and leaves no
 * thread or fd behind; the ones it cannot report by returning fail loudly and
 * the tests in tcase "loud" expect SIGABRT. Scope misuse: test_scope_misuse.c.
 */
#define _GNU_SOURCE
#include "support.h"

#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void noop_cb(void *arg)
{
    (void)arg;
}

/* ------------------------------------------------------ tokens: bad input */

START_TEST(token_null_arguments)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_callback *cb = NULL;

    ck_assert_int_eq(tether_token_new(NULL, NULL, TETHER_NEVER), EINVAL);
    ck_assert_int_eq(tether_token_new(NULL, t, TETHER_NEVER), EINVAL);
    ck_assert_int_eq(tether_token_free(NULL), EINVAL);
    ck_assert_int_eq(tether_token_cancel(NULL, 0), EINVAL);
    ck_assert_int_eq(tether_token_check(NULL), EINVAL);
    ck_assert_int_eq(tether_token_on_cancel(NULL, noop_cb, NULL, &cb), EINVAL);
    ck_assert_int_eq(tether_token_on_cancel(t, NULL, NULL, &cb), EINVAL);
    ck_assert_int_eq(tether_token_on_cancel(t, noop_cb, NULL, NULL), EINVAL);
    ck_assert_ptr_null(cb);
    ck_assert_int_eq(tether_token_off_cancel(NULL, NULL), EINVAL);
    ck_assert_int_eq(tether_token_enter(NULL), EINVAL);
    ck_assert_int_eq(tether_token_leave(NULL), EINVAL);
    ck_assert_ptr_null(tether_current());

    /* Queries on NULL are defined, not errors. */
    ck_assert_int_eq(tether_token_cause(NULL), TETHER_CAUSE_NONE);
    ck_assert_int_eq(tether_token_root_cause(NULL), TETHER_CAUSE_NONE);
    ck_assert_int_eq(tether_token_error(NULL), 0);
    ck_assert(tether_token_deadline(NULL) == TETHER_NEVER);

    /* None of it touched t. */
    ck_assert_int_eq(tether_token_check(t), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

/* --------------------------------------------------- tokens: free misuse */

START_TEST(token_free_with_live_children)
{
    th_baseline b = th_baseline_take();
    tether_token *p = new_token(NULL, TETHER_NEVER);
    tether_token *c = new_token(p, TETHER_NEVER);
    tether_token *g = new_token(c, TETHER_NEVER);

    ck_assert_int_eq(tether_token_free(p), EBUSY);
    ck_assert_int_eq(tether_token_free(c), EBUSY);
    /* Nothing changed: the tree still propagates. */
    ck_assert_int_eq(tether_token_cancel(p, 0), 0);
    ck_assert_int_eq(tether_token_check(g), ECANCELED);
    ck_assert_int_eq(tether_token_cause(g), TETHER_CAUSE_PARENT);

    ck_assert_int_eq(tether_token_free(g), 0);
    ck_assert_int_eq(tether_token_free(p), EBUSY);
    ck_assert_int_eq(tether_token_free(c), 0);
    ck_assert_int_eq(tether_token_free(p), 0);
    th_baseline_check(b);
}
END_TEST

START_TEST(token_free_while_entered_here)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_enter(t), 0);
    ck_assert_int_eq(tether_token_free(t), EBUSY);
    ck_assert_ptr_eq(tether_current(), t);      /* nothing changed */
    ck_assert_int_eq(tether_token_enter(t), 0); /* entered twice */
    ck_assert_int_eq(tether_token_leave(t), 0);
    ck_assert_int_eq(tether_token_free(t), EBUSY); /* still entered once */
    ck_assert_int_eq(tether_token_leave(t), 0);
    ck_assert_ptr_null(tether_current());
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

struct enterer {
    tether_token *t;
    sem_t entered, release, left;
    int leave_rc;
};

static void *enterer_main(void *arg)
{
    struct enterer *e = arg;
    int rc = tether_token_enter(e->t);
    sem_post(&e->entered);
    sem_wait_ok(&e->release);
    e->leave_rc = rc == 0 ? tether_token_leave(e->t) : rc;
    sem_post(&e->left);
    return NULL;
}

START_TEST(token_free_while_entered_elsewhere)
{
    th_baseline b = th_baseline_take();
    struct enterer e = { .t = new_token(NULL, TETHER_NEVER) };
    sem_init(&e.entered, 0, 0);
    sem_init(&e.release, 0, 0);
    sem_init(&e.left, 0, 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, enterer_main, &e), 0);
    sem_wait_ok(&e.entered);

    ck_assert_int_eq(tether_token_free(e.t), EBUSY);
    /* Leaving it from a thread that never entered it is refused too. */
    ck_assert_int_eq(tether_token_leave(e.t), EPERM);

    sem_post(&e.release);
    sem_wait_ok(&e.left);
    ck_assert_int_eq(e.leave_rc, 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(tether_token_free(e.t), 0);
    sem_destroy(&e.entered);
    sem_destroy(&e.release);
    sem_destroy(&e.left);
    th_baseline_check(b);
}
END_TEST

START_TEST(token_free_with_callbacks_registered)
{
    /* Allowed, not an error: the callbacks are detached unrun, and
     * tether_token_off_cancel still frees their handles. */
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_callback *cb[2];
    ck_assert_int_eq(tether_token_on_cancel(t, noop_cb, NULL, &cb[0]), 0);
    ck_assert_int_eq(tether_token_on_cancel(t, noop_cb, NULL, &cb[1]), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    bool ran = true;
    ck_assert_int_eq(tether_token_off_cancel(cb[1], &ran), 0);
    ck_assert(!ran);
    ran = true;
    ck_assert_int_eq(tether_token_off_cancel(cb[0], &ran), 0);
    ck_assert(!ran);
    th_baseline_check(b);
}
END_TEST

/* -------------------------------------------------- tokens: leave misuse */

START_TEST(token_leave_not_entered)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_leave(t), EPERM);
    ck_assert_ptr_null(tether_current());
    /* Once entered and left, a second leave is refused as well. */
    ck_assert_int_eq(tether_token_enter(t), 0);
    ck_assert_int_eq(tether_token_leave(t), 0);
    ck_assert_int_eq(tether_token_leave(t), EPERM);
    ck_assert_ptr_null(tether_current());
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

START_TEST(token_leave_not_innermost)
{
    th_baseline b = th_baseline_take();
    tether_token *a = new_token(NULL, TETHER_NEVER);
    tether_token *c = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_enter(a), 0);
    ck_assert_int_eq(tether_token_enter(c), 0);

    ck_assert_int_eq(tether_token_leave(a), EPERM);
    /* Nothing changed: c is still current, then a. */
    ck_assert_ptr_eq(tether_current(), c);
    ck_assert_int_eq(tether_token_free(a), EBUSY);
    ck_assert_int_eq(tether_token_leave(c), 0);
    ck_assert_ptr_eq(tether_current(), a);
    ck_assert_int_eq(tether_token_leave(a), 0);
    ck_assert_ptr_null(tether_current());

    ck_assert_int_eq(tether_token_free(c), 0);
    ck_assert_int_eq(tether_token_free(a), 0);
    th_baseline_check(b);
}
END_TEST

/* ---------------------------------------------------- timeout blocks etc. */

START_TEST(with_deadline_null_fn)
{
    th_baseline b = th_baseline_take();
    bool fired = true;
    ck_assert_int_eq(tether_with_deadline(TETHER_NEVER, NULL, NULL, &fired), EINVAL);
    ck_assert(!fired);
    fired = true;
    ck_assert_int_eq(tether_with_timeout(tether_ms(1), NULL, NULL, &fired), EINVAL);
    ck_assert(!fired);
    ck_assert_ptr_null(tether_current());
    th_baseline_check(b);
}
END_TEST

START_TEST(sigcancel_null_arguments)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_sigcancel *sc = (tether_sigcancel *)&sc; /* must be overwritten */
    ck_assert_int_eq(tether_sigcancel_new(NULL, t, 0), EINVAL);
    ck_assert_int_eq(tether_sigcancel_new(&sc, NULL, 0), EINVAL);
    ck_assert_int_eq(tether_sigcancel_free(NULL), EINVAL);
    ck_assert_int_eq(tether_token_check(t), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b); /* no relay thread, no eventfd */
}
END_TEST

/* Primitives keep the raw call's errors for bad descriptors or buffers. */
START_TEST(io_bad_descriptor)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_enter(t), 0);
    char c = 0;
    errno = 0;
    ck_assert_int_eq(tether_read(-1, &c, 1), -1);
    ck_assert_int_eq(errno, EBADF);
    errno = 0;
    ck_assert_int_eq(tether_write(-1, &c, 1), -1);
    ck_assert_int_eq(errno, EBADF);
    errno = 0;
    ck_assert_int_eq(tether_poll(NULL, 1, 10), -1);
    ck_assert_int_eq(errno, EFAULT);
    ck_assert_int_eq(tether_token_leave(t), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

static int fn_leaves_entered(void *arg)
{
    return tether_token_enter((tether_token *)arg);
}

START_TEST(abort_with_deadline_unbalanced)
{
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_with_timeout(tether_sec(60), fn_leaves_entered, t, NULL);
    ck_abort_msg("a timeout block left unbalanced did not abort");
}
END_TEST

static int fn_leaks_derived_token(void *arg)
{
    tether_token *t;
    (void)arg;
    return tether_token_new(&t, tether_current(), TETHER_NEVER);
}

START_TEST(abort_with_deadline_derived_token)
{
    tether_with_timeout(tether_sec(60), fn_leaks_derived_token, NULL, NULL);
    ck_abort_msg("a timeout block that left a derived token alive did not abort");
}
END_TEST

/* ----------------------------------------------- shields, signals, retry */

START_TEST(shield_null_arguments)
{
    th_baseline b = th_baseline_take();
    ck_assert_int_eq(tether_shield_enter(NULL, TETHER_NEVER), EINVAL);
    ck_assert_int_eq(tether_shield_leave(NULL), EINVAL);
    ck_assert_ptr_null(tether_shield_token(NULL));
    ck_assert_ptr_null(tether_current());
    th_baseline_check(b);
}
END_TEST

START_TEST(shield_leave_not_innermost)
{
    th_baseline b = th_baseline_take();
    tether_shield *sh;
    ck_assert_int_eq(tether_shield_enter(&sh, TETHER_NEVER), 0);
    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_enter(t), 0);
    ck_assert_int_eq(tether_shield_leave(sh), EPERM);
    ck_assert_ptr_eq(tether_current(), t); /* nothing changed */
    ck_assert_int_eq(tether_token_leave(t), 0);
    ck_assert_ptr_eq(tether_current(), tether_shield_token(sh));
    ck_assert_int_eq(tether_shield_leave(sh), 0);
    ck_assert_ptr_null(tether_current());
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

START_TEST(shield_leave_with_live_token)
{
    th_baseline b = th_baseline_take();
    tether_shield *sh;
    ck_assert_int_eq(tether_shield_enter(&sh, TETHER_NEVER), 0);
    tether_token *inner = new_token(tether_shield_token(sh), TETHER_NEVER);
    ck_assert_int_eq(tether_shield_leave(sh), EBUSY);
    ck_assert_ptr_eq(tether_current(), tether_shield_token(sh)); /* nothing changed */
    ck_assert_int_eq(tether_token_free(inner), 0);
    ck_assert_int_eq(tether_shield_leave(sh), 0);
    ck_assert_ptr_null(tether_current());
    th_baseline_check(b);
}
END_TEST

START_TEST(signals_bad_arguments)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_signals *h = (tether_signals *)&h;
    ck_assert_int_eq(tether_signals_install(NULL, t, NULL), EINVAL);
    ck_assert_int_eq(tether_signals_install(&h, NULL, NULL), EINVAL);
    int kill_sig[] = { SIGKILL };
    tether_signals_opts o = { .signals = kill_sig, .nsignals = 1 };
    ck_assert_int_eq(tether_signals_install(&h, t, &o), EINVAL);
    int stop_sig[] = { SIGUSR1, SIGSTOP };
    o = (tether_signals_opts){ .signals = stop_sig, .nsignals = 2 };
    ck_assert_int_eq(tether_signals_install(&h, t, &o), EINVAL);
    int usr[9] = {
        SIGUSR1, SIGUSR2, SIGUSR1, SIGUSR2, SIGUSR1, SIGUSR2, SIGUSR1, SIGUSR2, SIGUSR1
    };
    o = (tether_signals_opts){ .signals = usr, .nsignals = 0 };
    ck_assert_int_eq(tether_signals_install(&h, t, &o), EINVAL);
    o = (tether_signals_opts){ .signals = usr, .nsignals = 9 };
    ck_assert_int_eq(tether_signals_install(&h, t, &o), EINVAL);
    int bad_numbers[] = { 0, -3 };
    o = (tether_signals_opts){ .signals = bad_numbers, .nsignals = 2 };
    ck_assert_int_eq(tether_signals_install(&h, t, &o), EINVAL);
    ck_assert_int_eq(tether_signals_restore(NULL), EINVAL);
    ck_assert_uint_eq(tether_signals_fired(NULL), 0);
    /* No handler was left behind. */
    struct sigaction sa;
    ck_assert_int_eq(sigaction(SIGUSR1, NULL, &sa), 0);
    ck_assert(sa.sa_handler == SIG_DFL);
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b); /* no relay thread, no eventfd */
}
END_TEST

START_TEST(signals_installed_twice)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    int one[] = { SIGUSR1 }, two[] = { SIGUSR2 };
    tether_signals_opts o1 = { .signals = one, .nsignals = 1 };
    tether_signals_opts o2 = { .signals = two, .nsignals = 1 };
    tether_signals *h1, *h2 = (tether_signals *)&h2;
    ck_assert_int_eq(tether_signals_install(&h1, t, &o1), 0);
    ck_assert_int_eq(tether_signals_install(&h2, t, &o2), EBUSY);
    struct sigaction sa;
    ck_assert_int_eq(sigaction(SIGUSR2, NULL, &sa), 0);
    ck_assert(sa.sa_handler == SIG_DFL); /* the refused one installed nothing */
    ck_assert_int_eq(tether_signals_restore(h1), 0);
    ck_assert_int_eq(tether_token_check(t), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

static int attempt_counts(void *arg)
{
    ++*(int *)arg;
    return 0;
}

static tether_time_t fake_now(void *ctx)
{
    (void)ctx;
    return tether_now();
}

START_TEST(retry_bad_options)
{
    th_baseline b = th_baseline_take();
    int calls = 0;
    tether_retry_result r;
    ck_assert_int_eq(tether_retry(NULL, &calls, NULL, &r), EINVAL);
    ck_assert_int_eq(r.error, EINVAL);
    ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_PERMANENT);
    ck_assert_uint_eq(r.attempts, 0);

    const tether_retry_opts bad[] = {
        { .initial_delay_ns = -1 },
        { .max_delay_ns = -1 },
        { .max_elapsed_ns = -1 },
        { .attempt_timeout_ns = -1 },
        { .initial_delay_ns = tether_ms(10), .max_delay_ns = tether_ms(5) },
        { .multiplier = 0.5 },
        { .multiplier = 1.0 / 0.0 },
        { .multiplier = 0.0 / 0.0 },
        { .jitter = (tether_retry_jitter)(TETHER_RETRY_JITTER_DECORRELATED + 1) },
        { .clock = { .now = fake_now } },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(tether_retry(attempt_counts, &calls, &bad[i], &r) == EINVAL,
                      "bad options #%zu accepted", i);
        ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_PERMANENT);
    }
    ck_assert_int_eq(calls, 0); /* nothing was attempted */
    th_baseline_check(b);
}
END_TEST

struct after {
    int in_attempt, negative, from_child;
};

static int child_sets_hint(void *arg)
{
    ((struct after *)arg)->from_child = tether_retry_after(tether_ms(1));
    return 0;
}

static int attempt_with_hints(void *arg)
{
    struct after *a = arg;
    a->in_attempt = tether_retry_after(tether_us(1));
    a->negative = tether_retry_after(-1);
    tether_scope *s;
    int rc = tether_scope_open(&s, NULL);
    if (rc)
        return rc;
    rc = tether_spawn(s, child_sets_hint, a, NULL, NULL);
    tether_scope_join(s, NULL);
    tether_scope_free(s);
    return rc;
}

START_TEST(retry_after_outside_attempt)
{
    th_baseline b = th_baseline_take();
    ck_assert_int_eq(tether_retry_after(tether_ms(1)), EPERM);
    struct after a = { -1, -1, -1 };
    tether_retry_result r;
    ck_assert_int_eq(tether_retry(attempt_with_hints, &a, NULL, &r), 0);
    ck_assert_int_eq(a.in_attempt, 0);
    ck_assert_int_eq(a.negative, EINVAL);
    ck_assert_int_eq(a.from_child, EPERM);                     /* another thread of the attempt */
    ck_assert_int_eq(tether_retry_after(tether_ms(1)), EPERM); /* over again */
    th_baseline_check(b);
}
END_TEST

static int attempt_leaves_entered(void *arg)
{
    return tether_token_enter((tether_token *)arg);
}

START_TEST(abort_retry_attempt_unbalanced)
{
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_retry(attempt_leaves_entered, t, NULL, NULL);
    ck_abort_msg("a retry attempt left unbalanced did not abort");
}
END_TEST

/* ------------------------------------------- processes and legacy calls */

START_TEST(proc_bad_arguments)
{
    th_baseline b = th_baseline_take();
    char *argv[] = { "true", NULL };
    tether_proc *p = (tether_proc *)&p;
    ck_assert_int_eq(tether_proc_spawn(NULL, "/bin/true", argv, NULL), EINVAL);
    ck_assert_int_eq(tether_proc_spawn(&p, NULL, argv, NULL), EINVAL);
    ck_assert_int_eq(tether_proc_spawn(&p, "/bin/true", NULL, NULL), EINVAL);
    ck_assert_int_eq(tether_proc_wait(NULL, NULL), EINVAL);
    ck_assert_int_eq(tether_proc_pid(NULL), -1);
    ck_assert(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD); /* nothing started */
    th_baseline_check(b);
}
END_TEST

START_TEST(proc_spawn_when_canceled)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ck_assert_int_eq(tether_token_enter(t), 0);
    char *argv[] = { "true", NULL };
    tether_proc *p = (tether_proc *)&p;
    ck_assert_int_eq(tether_proc_spawn(&p, "/bin/true", argv, NULL), ECANCELED);
    ck_assert_ptr_null(p);
    ck_assert_int_eq(tether_proc_run("/bin/true", argv, NULL, NULL), ECANCELED);
    ck_assert_int_eq(tether_token_leave(t), 0);
    ck_assert(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD); /* nothing started */
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

START_TEST(legacy_bad_times)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_enter(t), 0);
    struct timespec bad_ns = { 0, 1000000000 }, neg = { -1, 0 };
    errno = 0;
    ck_assert_int_eq(tether_nanosleep(&bad_ns, NULL), -1);
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_int_eq(tether_nanosleep(&neg, NULL), -1);
    ck_assert_int_eq(errno, EINVAL);

    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    struct timespec soon;
    clock_gettime(CLOCK_MONOTONIC, &soon);
    pthread_mutex_lock(&m);
    ck_assert_int_eq(tether_cond_clockwait(&c, &m, CLOCK_PROCESS_CPUTIME_ID, &soon), EINVAL);
    ck_assert_int_eq(tether_cond_timedwait(&c, &m, &bad_ns), EINVAL);
    ck_assert_int_eq(pthread_mutex_unlock(&m), 0); /* held again on return */
    ck_assert_int_eq(tether_token_check(t), 0);
    ck_assert_int_eq(tether_token_leave(t), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("misuse");
    TCase *tc;

    tc = tcase_create("tokens");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, token_null_arguments);
    tcase_add_test(tc, token_free_with_live_children);
    tcase_add_test(tc, token_free_while_entered_here);
    tcase_add_test(tc, token_free_while_entered_elsewhere);
    tcase_add_test(tc, token_free_with_callbacks_registered);
    tcase_add_test(tc, token_leave_not_entered);
    tcase_add_test(tc, token_leave_not_innermost);
    tcase_add_test(tc, with_deadline_null_fn);
    tcase_add_test(tc, sigcancel_null_arguments);
    tcase_add_test(tc, io_bad_descriptor);
    suite_add_tcase(s, tc);

    tc = tcase_create("components");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, shield_null_arguments);
    tcase_add_test(tc, shield_leave_not_innermost);
    tcase_add_test(tc, shield_leave_with_live_token);
    tcase_add_test(tc, signals_bad_arguments);
    tcase_add_test(tc, signals_installed_twice);
    tcase_add_test(tc, retry_bad_options);
    tcase_add_test(tc, retry_after_outside_attempt);
    tcase_add_test(tc, proc_bad_arguments);
    tcase_add_test(tc, proc_spawn_when_canceled);
    tcase_add_test(tc, legacy_bad_times);
    suite_add_tcase(s, tc);

    tc = tcase_create("loud");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test_raise_signal(tc, abort_with_deadline_unbalanced, SIGABRT);
    tcase_add_test_raise_signal(tc, abort_with_deadline_derived_token, SIGABRT);
    tcase_add_test_raise_signal(tc, abort_retry_attempt_unbalanced, SIGABRT);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
