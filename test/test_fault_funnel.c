/*
 * Fault funnel coverage: every allocation tether makes goes through the
 * injection funnel (a wrapped allocation made without it is named); the
 * timer thread and a hook runner that could not be started; the process
 * root and a child's environment when their allocations fail.
 */
#define _GNU_SOURCE
#include "fault_fixtures.h"

/* ------------------------------------------- every allocation injectable */

/* Run fn, counting heap allocations that no funnel check preceded; fails
 * naming the first call site (addr2line -e test_fault_funnel). */
static void expect_funnelled(const char *what, void (*fn)(void))
{
    tether_fault_arm(LONG_MAX); /* count, never fail */
    atomic_store(&probe_unfunnelled, 0);
    atomic_store(&probe_site, NULL);
    atomic_store(&probing, true);
    fn();
    atomic_store(&probing, false);
    tether_fault_arm(0);
    ck_assert_msg(bad_seen() == 0, "%s: %s", what, bad_first());
    void *site = atomic_load(&probe_site);
    Dl_info di = { 0 };
    uintptr_t off = dladdr(site, &di) && di.dli_fbase ? (uintptr_t)site - (uintptr_t)di.dli_fbase
                                                      : (uintptr_t)site;
    ck_assert_msg(atomic_load(&probe_unfunnelled) == 0,
                  "%s: %ld allocation(s) bypass the fault-injection funnel; the first returns to "
                  "%s+%#lx (addr2line -f -e it)",
                  what, atomic_load(&probe_unfunnelled), di.dli_fname ? di.dli_fname : "?",
                  (unsigned long)off);
}

static void probe_poll_many(void)
{
    tether_token *t;
    int p[2];
    make_pipe(p);
    EXPECT(tether_token_new(&t, NULL, TETHER_NEVER) == 0, "token");
    EXPECT(tether_token_enter(t) == 0, "enter");
    struct pollfd fds[20];
    for (int i = 0; i < 20; i++)
        fds[i] = (struct pollfd){ .fd = p[0], .events = POLLIN };
    int n = tether_poll(fds, 20, 1);
    EXPECT(n == 0, "tether_poll: %d", n);
    struct timespec ms = { 0, 1000000 };
    n = tether_ppoll(fds, 20, &ms, NULL);
    EXPECT(n == 0, "tether_ppoll: %d", n);
    EXPECT(tether_token_leave(t) == 0, "leave");
    EXPECT(tether_token_free(t) == 0, "free");
    close_pipe(p);
}

static void probe_shield(void)
{
    tether_shield *sh;
    int rc = tether_shield_enter(&sh, TETHER_NEVER);
    EXPECT(rc == 0, "tether_shield_enter: %s", strerror(rc));
    if (!rc)
        EXPECT(tether_shield_leave(sh) == 0, "leave");
}

static void probe_signals(void)
{
    tether_token *t;
    EXPECT(tether_token_new(&t, NULL, TETHER_NEVER) == 0, "token");
    int sig[] = { SIGUSR1 };
    tether_signals_opts so = { .signals = sig, .nsignals = 1 };
    tether_signals *h;
    int rc = tether_signals_install(&h, t, &so);
    EXPECT(rc == 0, "tether_signals_install: %s", strerror(rc));
    if (!rc)
        EXPECT(tether_signals_restore(h) == 0, "restore");
    EXPECT(tether_token_free(t) == 0, "free");
}

static void probe_process(void)
{
    char *argv[] = { "true", NULL };
    int rc = tether_proc_run("/bin/true", argv, NULL, NULL);
    EXPECT(rc == 0, "tether_proc_run: %s", strerror(rc));
}

/* tether_proc_run under a deadline: the child's environment is built. */
static void probe_process_deadline(void)
{
    tether_token *t;
    EXPECT(tether_token_new(&t, NULL, tether_deadline_after(DAY)) == 0, "token");
    EXPECT(tether_token_enter(t) == 0, "enter");
    probe_process();
    EXPECT(tether_token_leave(t) == 0, "leave");
    EXPECT(tether_token_free(t) == 0, "free");
}

START_TEST(funnel_covers_scopes_and_tokens)
{
    th_baseline b = th_baseline_take();
    expect_funnelled("token tree", scenario_token_tree);
    expect_funnelled("retry", scenario_retry);
    th_baseline_check(b);
}
END_TEST

START_TEST(funnel_covers_poll)
{
    th_baseline b = th_baseline_take();
    expect_funnelled("tether_poll/tether_ppoll with 20 descriptors", probe_poll_many);
    th_baseline_check(b);
}
END_TEST

START_TEST(funnel_covers_shield)
{
    th_baseline b = th_baseline_take();
    expect_funnelled("tether_shield_enter", probe_shield);
    th_baseline_check(b);
}
END_TEST

START_TEST(funnel_covers_signals)
{
    th_baseline b = th_baseline_take();
    expect_funnelled("tether_signals_install", probe_signals);
    th_baseline_check(b);
}
END_TEST

START_TEST(funnel_covers_process)
{
    th_baseline b = th_baseline_take();
    expect_funnelled("tether_proc_run", probe_process);
    expect_funnelled("tether_proc_run under a deadline", probe_process_deadline);
    ck_assert(no_zombies());
    th_baseline_check(b);
}
END_TEST

/* The timer thread could not be created (the injected failure is the one
 * that makes tether_fault_absorbed_count move): the token is made all the
 * same, a waiter under it still ends at its deadline (ETIMEDOUT), no thread
 * appears, and the next token with a deadline starts the thread. */
START_TEST(timer_thread_not_started)
{
    th_baseline b = th_baseline_take(); /* trims: no timer thread, no heap */
    tether_token *t = NULL;
    long before = tether_fault_absorbed_count();
    for (long nth = 1; nth < 10 && tether_fault_absorbed_count() == before; nth++) {
        if (t)
            ck_assert_int_eq(tether_token_free(t), 0);
        t = NULL;
        tether_trim();
        tether_fault_arm(nth);
        int rc = tether_token_new(&t, NULL, tether_deadline_after(tether_ms(20)));
        tether_fault_arm(0);
        ck_assert(rc == 0 || rc == ENOMEM);
        if (rc)
            t = NULL;
    }
    ck_assert_msg(tether_fault_absorbed_count() == before + 1, "no acquisition started the timer");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(th_thread_count(), b.threads);
    ck_assert_int_eq(tether_token_enter(t), 0);
    ck_assert_int_eq(tether_sleep_for(DAY), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_eq(tether_token_leave(t), 0);
    ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_DEADLINE);

    tether_token *u;
    ck_assert_int_eq(tether_token_new(&u, NULL, tether_deadline_after(DAY)), 0);
    ck_assert_int_eq(th_thread_count(), b.threads + 1);
    ck_assert_int_eq(tether_token_free(u), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

static void hook_post(void *arg)
{
    sem_post(arg);
}

/* No runner could be created for a canceled token's hook (the failure the
 * absorbed count shows): the hook stays queued, no thread appears, and the
 * next tether_hook_on_cancel, on another token, starts the runner that runs
 * it (it used to wait for another cancel that queued a hook). */
START_TEST(hook_runner_not_started)
{
    th_baseline b = th_baseline_take(); /* trims: no runner */
    sem_t ran;
    sem_init(&ran, 0, 0);
    tether_token *t = NULL;
    tether_hook *h = NULL;
    long before = tether_fault_absorbed_count();
    for (long nth = 1; nth < 10 && tether_fault_absorbed_count() == before; nth++) {
        if (t) { /* the runner started: the hook ran */
            ck_assert(th_sem_wait_bounded(&ran, 2000));
            ck_assert_int_eq(tether_hook_off(h, NULL), 0);
            ck_assert_int_eq(tether_token_free(t), 0);
            tether_trim();
        }
        t = new_token(NULL, TETHER_NEVER);
        ck_assert_int_eq(tether_hook_on_cancel(t, hook_post, &ran, &h), 0);
        tether_fault_arm(nth);
        ck_assert_int_eq(tether_token_cancel(t, 0), 0);
        tether_fault_arm(0);
    }
    ck_assert_msg(tether_fault_absorbed_count() == before + 1, "no acquisition started a runner");
    ck_assert(!th_sem_wait_bounded(&ran, 50)); /* queued, not run */
    ck_assert_int_eq(th_thread_count(), b.threads);

    tether_token *u = new_token(NULL, TETHER_NEVER);
    tether_hook *hu;
    ck_assert_int_eq(tether_hook_on_cancel(u, hook_post, &ran, &hu), 0);
    ck_assert_msg(th_sem_wait_bounded(&ran, 2000), "the queued hook never ran");
    bool did = false;
    ck_assert_int_eq(tether_hook_off(h, &did), 0);
    ck_assert(did);
    ck_assert_int_eq(tether_hook_off(hu, &did), 0);
    ck_assert(!did);
    ck_assert_int_eq(tether_token_free(u), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    sem_destroy(&ran);
    th_baseline_check(b);
}
END_TEST

/* The process root's first resolution fails at each acquisition in turn:
 * nothing is adopted then (TETHER_NEVER), a later call adopts. A spawn whose
 * environment cannot be built starts nothing. */
START_TEST(process_root_and_child_env_under_faults)
{
    tether_time_t d = tether_deadline_after(DAY);
    char v[32];
    snprintf(v, sizeof v, "%lld", (long long)d);
    ck_assert_int_eq(setenv(TETHER_DEADLINE_ENV, v, 1), 0);
    tether_fault_arm(1);
    ck_assert_int_eq(tether_process_deadline(), TETHER_NEVER); /* its token's allocation */
    tether_fault_arm(0);
    ck_assert_int_eq(tether_process_deadline(), d);

    char *argv[] = { "true", NULL };
    bool refused = false;
    for (long nth = 1; nth < 20; nth++) {
        tether_fault_arm(nth);
        int rc = tether_proc_run("/bin/true", argv, NULL, NULL); /* under the root */
        tether_fault_arm(0);
        ck_assert_msg(rc == 0 || rc == ENOMEM || rc == EMFILE, "nth %ld: %s", nth, strerror(rc));
        refused = refused || rc == ENOMEM;
        if (rc == 0 && tether_fault_seen() < nth)
            break; /* every acquisition was passed */
    }
    ck_assert(refused);
    ck_assert(no_zombies());
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("fault_funnel");
    TCase *tc;

    tc = tcase_create("funnel");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, funnel_covers_scopes_and_tokens);
    tcase_add_test(tc, funnel_covers_poll);
    tcase_add_test(tc, funnel_covers_shield);
    tcase_add_test(tc, funnel_covers_signals);
    tcase_add_test(tc, funnel_covers_process);
    tcase_add_test(tc, timer_thread_not_started);
    tcase_add_test(tc, hook_runner_not_started);
    tcase_add_test(tc, process_root_and_child_env_under_faults);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
