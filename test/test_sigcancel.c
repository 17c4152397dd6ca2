/*
 * The signal-safe cancel relay: tether_sigcancel_new / _fire / _free.
 *
 * Signals come from real handlers installed with sigaction (no SA_RESTART)
 * and are raised with raise/pthread_kill/kill. Waiting for the relay to act
 * is done by blocking in tether_sleep_for under the token: the cancellation
 * itself is what ends the wait, bounded generously.
 */
#define _GNU_SOURCE
#include "support.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------ the handler */

static tether_sigcancel *volatile g_sc;
static volatile sig_atomic_t g_handled;
static volatile sig_atomic_t g_errno_clobbered;
static volatile pid_t g_handler_tid;

static void on_usr1(int sig)
{
    (void)sig;
    int saved = errno;
    errno = ENOTTY; /* a sentinel fire must leave alone */
    tether_sigcancel_fire(g_sc);
    if (errno != ENOTTY)
        g_errno_clobbered = 1;
    g_handler_tid = th_gettid();
    g_handled = g_handled + 1;
    errno = saved;
}

static struct sigaction g_old_action;

static void install_handler(tether_sigcancel *sc)
{
    g_sc = sc;
    g_handled = 0;
    g_errno_clobbered = 0;
    g_handler_tid = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART */
    ck_assert_int_eq(sigaction(SIGUSR1, &sa, &g_old_action), 0);
}

static void remove_handler(void)
{
    ck_assert_int_eq(sigaction(SIGUSR1, &g_old_action, NULL), 0);
    g_sc = NULL;
}

/* ------------------------------------------------------------ small tools */

static tether_sigcancel *new_sc(tether_token *t, int error)
{
    tether_sigcancel *sc = NULL;
    ck_assert_int_eq(tether_sigcancel_new(&sc, t, error), 0);
    ck_assert_ptr_nonnull(sc);
    return sc;
}

/* Block in a cancellable sleep under t until the relay cancels it. */
static void wait_canceled_by_relay(tether_token *t)
{
    tether_time_t start = tether_now();
    ck_assert_int_eq(tether_token_enter(t), 0);
    int rc = tether_sleep_for(th_bound_ns(5000));
    int err = errno;
    ck_assert_int_eq(tether_token_leave(t), 0);
    ck_assert_int_eq(rc, -1);
    ck_assert_int_eq(err, ECANCELED);
    ck_assert_int_lt(tether_now() - start, th_bound_ns(5000));
}

/* A thread asleep under a token, with SIGUSR1 blocked or not. */
struct sleeper {
    tether_token *t;
    bool block_usr1;
    sem_t ready;
    pid_t tid;
    int rc1, err1, rc2, err2;
    bool second_sleep;
    tether_time_t start, woke;
};

static void *sleeper_main(void *p)
{
    struct sleeper *s = p;
    if (s->block_usr1) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGUSR1);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
    }
    s->tid = th_gettid();
    if (tether_token_enter(s->t) != 0)
        abort();
    s->start = tether_now();
    sem_post(&s->ready);
    s->rc1 = tether_sleep_for(tether_sec(60));
    s->err1 = errno;
    if (s->second_sleep) {
        s->rc2 = tether_sleep_for(tether_sec(60));
        s->err2 = errno;
    }
    s->woke = tether_now();
    if (tether_token_leave(s->t) != 0)
        abort();
    return NULL;
}

static pthread_t start_sleeper(struct sleeper *s)
{
    sem_init(&s->ready, 0, 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, sleeper_main, s), 0);
    while (sem_wait(&s->ready) != 0)
        ;
    return th;
}

/* ================================================================== tests */

START_TEST(bad_input)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_sigcancel *sc = NULL;
    ck_assert_int_eq(tether_sigcancel_new(NULL, t, 0), EINVAL);
    ck_assert_int_eq(tether_sigcancel_new(&sc, NULL, 0), EINVAL);
    ck_assert_int_eq(tether_sigcancel_new(NULL, NULL, 0), EINVAL);
    ck_assert_ptr_null(sc);
    ck_assert_int_eq(tether_sigcancel_free(NULL), EINVAL);
    /* Nothing was created by the failed calls. */
    ck_assert_int_eq(th_thread_count(), b.threads);
    ck_assert_int_eq(th_fd_count(), b.fds);
    ck_assert_int_eq(tether_token_check(t), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

START_TEST(free_without_fire_does_not_cancel)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_token *kid = new_token(t, TETHER_NEVER);
    for (int i = 0; i < 20; i++) {
        tether_sigcancel *sc = new_sc(i % 2 ? kid : t, 42);
        ck_assert_int_eq(tether_sigcancel_free(sc), 0);
        ck_assert_int_eq(tether_token_check(t), 0);
        ck_assert_int_eq(tether_token_check(kid), 0);
        ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_NONE);
        ck_assert_int_eq(tether_token_cause(kid), TETHER_CAUSE_NONE);
    }
    /* Several alive at once on one token. */
    tether_sigcancel *many[4];
    for (int i = 0; i < 4; i++)
        many[i] = new_sc(t, i);
    for (int i = 3; i >= 0; i--)
        ck_assert_int_eq(tether_sigcancel_free(many[i]), 0);
    ck_assert_int_eq(tether_token_check(t), 0);
    ck_assert_int_eq(tether_token_free(kid), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

/* The documented guarantee of free: a fire before it has taken effect. */
START_TEST(fire_then_free_has_taken_effect)
{
    th_baseline b = th_baseline_take();
    const int errors[] = { 4242, 0 };
    for (int i = 0; i < 2; i++) {
        tether_token *t = new_token(NULL, TETHER_NEVER);
        tether_token *kid = new_token(t, TETHER_NEVER);
        tether_sigcancel *sc = new_sc(t, errors[i]);
        tether_sigcancel_fire(sc);
        ck_assert_int_eq(tether_sigcancel_free(sc), 0);
        int want = errors[i] ? errors[i] : ECANCELED;
        ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_SIGNAL);
        ck_assert_int_eq(tether_token_root_cause(t), TETHER_CAUSE_SIGNAL);
        ck_assert_int_eq(tether_token_error(t), want);
        ck_assert_int_eq(tether_token_check(t), ECANCELED);
        ck_assert_int_eq(tether_token_cause(kid), TETHER_CAUSE_PARENT);
        ck_assert_int_eq(tether_token_root_cause(kid), TETHER_CAUSE_SIGNAL);
        ck_assert_int_eq(tether_token_error(kid), want);
        ck_assert_int_eq(tether_token_free(kid), 0);
        ck_assert_int_eq(tether_token_free(t), 0);
    }
    th_baseline_check(b);
}
END_TEST

/* A real handler fires while a thread is asleep under a child token; the
 * signal goes to this thread (raise), the sleeper is woken by the relay.
 * _i = 0: the sleeper is blocked first; 1: the signal comes before it sleeps. */
START_TEST(handler_fire_wakes_sleeper)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_token *kid = new_token(t, TETHER_NEVER);
    tether_sigcancel *sc = new_sc(t, 4242);
    install_handler(sc);

    struct sleeper s = { .t = kid, .block_usr1 = true };
    pthread_t th;
    tether_time_t fired_at;
    if (_i == 0) {
        th = start_sleeper(&s);
        ck_assert_int_eq(th_wait_blocked(s.tid), 0);
        fired_at = tether_now();
        ck_assert_int_eq(raise(SIGUSR1), 0);
    } else {
        fired_at = tether_now();
        ck_assert_int_eq(raise(SIGUSR1), 0);
        th = start_sleeper(&s);
    }
    ck_assert_int_eq(g_handled, 1);
    ck_assert_int_eq(g_handler_tid, th_gettid());
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(s.rc1, -1);
    ck_assert_int_eq(s.err1, ECANCELED);
    ck_assert_int_lt(s.woke - fired_at, th_bound_ns(2000));

    ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_SIGNAL);
    ck_assert_int_eq(tether_token_error(t), 4242);
    ck_assert_int_eq(tether_token_cause(kid), TETHER_CAUSE_PARENT);
    ck_assert_int_eq(tether_token_root_cause(kid), TETHER_CAUSE_SIGNAL);
    ck_assert_int_eq(tether_token_error(kid), 4242);
    ck_assert_int_eq(g_errno_clobbered, 0);

    ck_assert_int_eq(tether_sigcancel_free(sc), 0);
    remove_handler();
    ck_assert_int_eq(tether_token_free(kid), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

/* The signal lands on the sleeping thread itself: its wait fails with EINTR
 * (the handler ran) unless the relay already got there; either way the
 * next sleep reports the cancellation. */
START_TEST(handler_on_sleeping_thread)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_sigcancel *sc = new_sc(t, 0);
    install_handler(sc);

    struct sleeper s = { .t = t, .second_sleep = true };
    pthread_t th = start_sleeper(&s);
    ck_assert_int_eq(th_wait_blocked(s.tid), 0);
    tether_time_t fired_at = tether_now();
    ck_assert_int_eq(pthread_kill(th, SIGUSR1), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);

    ck_assert_int_eq(g_handled, 1);
    ck_assert_int_eq(g_handler_tid, s.tid);
    ck_assert_int_eq(s.rc1, -1);
    ck_assert_msg(s.err1 == EINTR || s.err1 == ECANCELED, "first sleep: errno %d", s.err1);
    ck_assert_int_eq(s.rc2, -1);
    ck_assert_int_eq(s.err2, ECANCELED);
    ck_assert_int_lt(s.woke - fired_at, th_bound_ns(2000));
    ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_SIGNAL);
    ck_assert_int_eq(tether_token_error(t), ECANCELED);

    ck_assert_int_eq(tether_sigcancel_free(sc), 0);
    remove_handler();
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

/* The relay blocks every signal: a process-directed signal that only this
 * thread accepts is handled here, never on the relay. */
START_TEST(relay_never_takes_the_signal)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    sigset_t usr1, old;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, &usr1, &old), 0);
    tether_sigcancel *sc = new_sc(t, 0);
    install_handler(sc);

    ck_assert_int_eq(kill(getpid(), SIGUSR1), 0);
    /* Only the relay could take it now; it must stay pending. */
    ck_assert_int_eq(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
    /* Unblocking delivers the pending signal before sigprocmask returns. */
    ck_assert_int_eq(g_handled, 1);
    ck_assert_int_eq(g_handler_tid, th_gettid());
    wait_canceled_by_relay(t);
    ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_SIGNAL);

    ck_assert_int_eq(tether_sigcancel_free(sc), 0);
    remove_handler();
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

START_TEST(fire_twice_is_harmless)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_sigcancel *sc = new_sc(t, 31);
    install_handler(sc);
    ck_assert_int_eq(raise(SIGUSR1), 0);
    ck_assert_int_eq(raise(SIGUSR1), 0);
    tether_sigcancel_fire(sc);
    ck_assert_int_eq(g_handled, 2);
    wait_canceled_by_relay(t);
    ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_SIGNAL);
    ck_assert_int_eq(tether_token_error(t), 31);
    /* And after the cancellation took effect. */
    ck_assert_int_eq(raise(SIGUSR1), 0);
    tether_sigcancel_fire(sc);
    ck_assert_int_eq(tether_sigcancel_free(sc), 0);
    ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_SIGNAL);
    ck_assert_int_eq(tether_token_error(t), 31);
    ck_assert_int_eq(g_errno_clobbered, 0);
    remove_handler();
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

START_TEST(fire_after_explicit_cancel_keeps_first_cause)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_sigcancel *sc = new_sc(t, 31);
    ck_assert_int_eq(tether_token_cancel(t, 7), 0);
    tether_sigcancel_fire(sc);
    ck_assert_int_eq(tether_sigcancel_free(sc), 0);
    ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_EXPLICIT);
    ck_assert_int_eq(tether_token_error(t), 7);
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

/* The relay thread is the canceler: callbacks run there, not in the
 * handler's thread. */
struct where {
    atomic_int runs;
    pthread_t runner;
};

static void where_cb(void *p)
{
    struct where *w = p;
    w->runner = pthread_self();
    atomic_fetch_add(&w->runs, 1);
}

START_TEST(callbacks_run_on_relay)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_token *kid = new_token(t, TETHER_NEVER);
    struct where w = { 0 }, wk = { 0 };
    tether_callback *cb, *cbk;
    ck_assert_int_eq(tether_token_on_cancel(t, where_cb, &w, &cb), 0);
    ck_assert_int_eq(tether_token_on_cancel(kid, where_cb, &wk, &cbk), 0);
    tether_sigcancel *sc = new_sc(t, 0);
    install_handler(sc);
    ck_assert_int_eq(raise(SIGUSR1), 0);
    ck_assert_int_eq(tether_sigcancel_free(sc), 0); /* the fire has taken effect */
    ck_assert_int_eq(atomic_load(&w.runs), 1);
    ck_assert_int_eq(atomic_load(&wk.runs), 1);
    ck_assert(!pthread_equal(w.runner, pthread_self()));
    ck_assert(pthread_equal(w.runner, wk.runner));
    bool ran = false;
    ck_assert_int_eq(tether_token_off_cancel(cb, &ran), 0);
    ck_assert(ran);
    ck_assert_int_eq(tether_token_off_cancel(cbk, &ran), 0);
    ck_assert(ran);
    remove_handler();
    ck_assert_int_eq(tether_token_free(kid), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

/* errno across fire, both when its write succeeds and when it fails. To make
 * it fail, the relay's eventfd number is pointed at a read-only descriptor
 * for one fire (the relay keeps waiting on the eventfd itself), then put
 * back. */
static int find_new_eventfd(const unsigned char *before, int n)
{
    int found = -1;
    for (int fd = 0; fd < n; fd++) {
        if (before[fd])
            continue;
        char path[64], link[128];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t len = readlink(path, link, sizeof link - 1);
        if (len < 0)
            continue;
        link[len] = '\0';
        if (strstr(link, "eventfd")) {
            ck_assert_msg(found < 0, "two new eventfds: %d and %d", found, fd);
            found = fd;
        }
    }
    return found;
}

START_TEST(fire_preserves_errno)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);

    enum { NFD = 1024 };
    static unsigned char open_before[NFD];
    for (int fd = 0; fd < NFD; fd++)
        open_before[fd] = fcntl(fd, F_GETFD) != -1;
    tether_sigcancel *sc = new_sc(t, 0);
    int efd = find_new_eventfd(open_before, NFD);
    ck_assert_int_ge(efd, 0);

    /* A failing write inside fire. */
    int saved = dup(efd);
    int ro = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_ge(ro, 0);
    ck_assert_int_eq(dup2(ro, efd), efd);
    errno = EDOM;
    tether_sigcancel_fire(sc);
    ck_assert_int_eq(errno, EDOM);
    ck_assert_int_eq(dup3(saved, efd, O_CLOEXEC), efd);
    close(saved);
    close(ro);

    /* A successful one, directly and from a handler. */
    errno = ERANGE;
    tether_sigcancel_fire(sc);
    ck_assert_int_eq(errno, ERANGE);
    install_handler(sc);
    errno = EILSEQ;
    ck_assert_int_eq(raise(SIGUSR1), 0);
    ck_assert_int_eq(errno, EILSEQ);
    ck_assert_int_eq(g_handled, 1);
    ck_assert_int_eq(g_errno_clobbered, 0);

    wait_canceled_by_relay(t);
    ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_SIGNAL);
    ck_assert_int_eq(tether_sigcancel_free(sc), 0);
    remove_handler();
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

/* Many handles on many tokens, fired in a random order from a handler: each
 * fired token canceled with its own error, the others untouched. */
START_TEST(many_handles_random_fires)
{
    th_baseline b = th_baseline_take();
    uint64_t rng = th_seed("many_handles_random_fires");
    enum { N = 8 };
    tether_token *root = new_token(NULL, TETHER_NEVER);
    tether_token *tok[N];
    tether_sigcancel *sc[N];
    bool fire[N];
    for (int i = 0; i < N; i++) {
        tok[i] = new_token(root, TETHER_NEVER);
        sc[i] = new_sc(tok[i], 100 + i);
        fire[i] = th_rand(&rng) % 2;
    }
    for (int i = 0; i < N; i++) {
        if (!fire[i])
            continue;
        install_handler(sc[i]);
        ck_assert_int_eq(raise(SIGUSR1), 0);
        ck_assert_int_eq(g_handled, 1);
        remove_handler();
    }
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(tether_sigcancel_free(sc[i]), 0);
    for (int i = 0; i < N; i++) {
        if (fire[i]) {
            ck_assert_int_eq(tether_token_cause(tok[i]), TETHER_CAUSE_SIGNAL);
            ck_assert_int_eq(tether_token_error(tok[i]), 100 + i);
        } else {
            ck_assert_int_eq(tether_token_check(tok[i]), 0);
        }
        ck_assert_int_eq(tether_token_free(tok[i]), 0);
    }
    ck_assert_int_eq(tether_token_check(root), 0);
    ck_assert_int_eq(tether_token_free(root), 0);
    th_baseline_check(b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("sigcancel");
    TCase *tc;

    tc = tcase_create("lifecycle");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, bad_input);
    tcase_add_test(tc, free_without_fire_does_not_cancel);
    tcase_add_test(tc, fire_then_free_has_taken_effect);
    tcase_add_test(tc, fire_after_explicit_cancel_keeps_first_cause);
    tcase_add_test(tc, many_handles_random_fires);
    suite_add_tcase(s, tc);

    tc = tcase_create("signal");
    tcase_set_timeout(tc, th_timeout_s(15));
    tcase_add_loop_test(tc, handler_fire_wakes_sleeper, 0, 2);
    tcase_add_test(tc, handler_on_sleeping_thread);
    tcase_add_test(tc, relay_never_takes_the_signal);
    tcase_add_test(tc, fire_twice_is_harmless);
    tcase_add_test(tc, callbacks_run_on_relay);
    tcase_add_test(tc, fire_preserves_errno);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
