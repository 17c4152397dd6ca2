/*
 * Contract matrix: version, time, names, tokens, callbacks, the current
 * token, with_deadline/timeout, sigcancel, shields, signals, retry,
 * tether_job_run, the dump, cancel hooks and descriptor spans.
 * One Check test per function (or per small family of accessors), one row
 * per documented error and per edge of the contract. Rows are listed in
 * docs/contract-matrix.md.
 */
#define _GNU_SOURCE
#include "contract.h"

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>

static void noop_cb(void *arg)
{
    int *n = arg;
    if (n)
        (*n)++;
}

static int ret_arg(void *a)
{
    return (int)(intptr_t)a;
}

/* Whether t's cause becomes `c` within a bound, without a check (which
 * would make the cancellation itself). */
static bool wait_cause(tether_token *t, tether_cause c)
{
    tether_time_t end = tether_now() + th_bound_ns(2000);
    while (tether_token_cause(t) != c && tether_now() < end)
        usleep(200);
    return tether_token_cause(t) == c;
}

START_TEST(contract_version_time_names)
{
    ct_rows r = { .test = __func__ };
    ct_row(&r, tether_version() != NULL && tether_version()[0] != '\0',
           "tether_version: expected a non-empty string");
    ct_row(&r, tether_version_number() > 0, "tether_version_number: expected positive");
    tether_time_t a = tether_now(), b = tether_now();
    ct_row(&r, a > 0 && b >= a, "tether_now/two reads: expected monotonic, got %lld then %lld",
           (long long)a, (long long)b);
    ct_row(&r, tether_deadline_after(INT64_MAX) == TETHER_NEVER,
           "tether_deadline_after/INT64_MAX: expected NEVER");
    ct_row(&r, tether_deadline_after(INT64_MAX - 1) == TETHER_NEVER,
           "tether_deadline_after/overflow: expected NEVER");
    ct_row(&r, tether_deadline_after(-tether_sec(1)) < tether_now(),
           "tether_deadline_after/negative: expected past");
    ct_row(&r, tether_deadline_after(INT64_MIN) < tether_now(),
           "tether_deadline_after/INT64_MIN: expected past");
    ct_row(&r, strcmp(tether_cause_name((tether_cause)99), "unknown") == 0,
           "tether_cause_name/out of range: expected \"unknown\"");
    ct_row(&r, strcmp(tether_cause_name((tether_cause)-1), "unknown") == 0,
           "tether_cause_name/negative: expected \"unknown\"");
    ct_row(&r, strcmp(tether_cause_name(TETHER_CAUSE_DEADLINE), "deadline") == 0,
           "tether_cause_name/deadline: expected \"deadline\"");
    ct_row(&r, strcmp(tether_outcome_name((tether_outcome)99), "unknown") == 0,
           "tether_outcome_name/out of range: expected \"unknown\"");
    ct_row(&r, strcmp(tether_outcome_name(TETHER_OUTCOME_CANCELED), "canceled") == 0,
           "tether_outcome_name/canceled: expected \"canceled\"");
    ct_row(&r, strcmp(tether_retry_stop_name((tether_retry_stop)99), "unknown") == 0,
           "tether_retry_stop_name/out of range: expected \"unknown\"");
    ct_row(&r, strcmp(tether_retry_stop_name(TETHER_RETRY_STOP_CANCELED), "canceled") == 0,
           "tether_retry_stop_name/canceled: expected \"canceled\"");
    ct_row(&r, tether_trim() >= 0, "tether_trim: expected a count >= 0");
    ct_done(&r);
}
END_TEST

START_TEST(contract_tether_token_new_free)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    tether_token *t, *c;
    CT_RC(&r, "tether_token_new/out NULL", tether_token_new(NULL, NULL, TETHER_NEVER), EINVAL);
    CT_RC(&r, "tether_token_free/NULL", tether_token_free(NULL), EINVAL);
    ck_assert_int_eq(tether_token_new(&t, NULL, TETHER_NEVER), 0);
    ck_assert_int_eq(tether_token_new(&c, t, TETHER_NEVER), 0);
    CT_RC(&r, "tether_token_free/has a child", tether_token_free(t), EBUSY);
    ck_assert_int_eq(tether_token_enter(c), 0);
    CT_RC(&r, "tether_token_free/entered", tether_token_free(c), EBUSY);
    ck_assert_int_eq(tether_token_leave(c), 0);
    ck_assert_int_eq(tether_token_free(c), 0);
    /* Born canceled under a canceled parent; deadline capped by the parent. */
    tether_token_cancel(t, EPIPE);
    ck_assert_int_eq(tether_token_new(&c, t, TETHER_NEVER), 0);
    ct_row(&r, tether_token_cause(c) == TETHER_CAUSE_PARENT && tether_token_error(c) == EPIPE,
           "tether_token_new/under a parent canceled with EPIPE: expected cause parent, error "
           "EPIPE, got %s %d",
           tether_cause_name(tether_token_cause(c)), tether_token_error(c));
    ct_row(&r, tether_token_root_cause(c) == TETHER_CAUSE_EXPLICIT,
           "tether_token_root_cause/child of an explicitly canceled parent: expected explicit");
    ck_assert_int_eq(tether_token_free(c), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    tether_time_t dl = tether_now() + tether_sec(5);
    ck_assert_int_eq(tether_token_new(&t, NULL, dl), 0);
    ck_assert_int_eq(tether_token_new(&c, t, TETHER_NEVER), 0);
    ct_row(&r, tether_token_deadline(c) == dl,
           "tether_token_deadline/child without own deadline: expected the parent's");
    ck_assert_int_eq(tether_token_free(c), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    /* An own deadline cancels the token on its own (the timer thread), and
     * a free that fails with EBUSY leaves it armed. */
    ck_assert_int_eq(tether_token_new(&t, NULL, tether_now() + tether_ms(1)), 0);
    ck_assert_int_eq(tether_token_enter(t), 0);
    CT_RC(&r, "tether_token_free/entered, own deadline armed", tether_token_free(t), EBUSY);
    ct_row(&r, wait_cause(t, TETHER_CAUSE_DEADLINE),
           "tether_token_new/own deadline, nobody checking: expected canceled at it (cause "
           "deadline) by the timer thread");
    ck_assert_int_eq(tether_token_leave(t), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_tether_trim)
{
    th_baseline base = th_baseline_take(); /* under TSan, its runtime's thread first */
    tether_trim();
    int n = th_wait_thread_count(th_thread_count());
    ct_rows r = { .test = __func__ };
    tether_token *t;
    ck_assert_int_eq(tether_token_new(&t, NULL, tether_deadline_after(DAY)), 0);
    ct_row(&r, th_thread_count() == n + 1,
           "tether_token_new/first own deadline: expected the timer thread started");
    tether_trim();
    ct_row(&r, th_thread_count() == n + 1,
           "tether_trim/a deadline armed: expected the timer thread kept");
    ck_assert_int_eq(tether_token_free(t), 0);
    ct_row(&r, th_thread_count() == n + 1,
           "tether_token_free/last deadline: expected the timer thread kept (idle)");
    ct_row(&r, tether_trim() >= 0, "tether_trim/no deadline armed: expected a count >= 0");
    ct_row(&r, th_wait_thread_count(n) == n,
           "tether_trim/no deadline armed: expected the timer thread stopped");
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_tether_token_cancel_check_accessors)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    CT_RC(&r, "tether_token_cancel/NULL", tether_token_cancel(NULL, 0), EINVAL);
    CT_RC(&r, "tether_token_check/NULL", tether_token_check(NULL), EINVAL);
    ct_row(&r, tether_token_cause(NULL) == TETHER_CAUSE_NONE,
           "tether_token_cause/NULL: expected NONE");
    ct_row(&r, tether_token_root_cause(NULL) == TETHER_CAUSE_NONE,
           "tether_token_root_cause/NULL: expected NONE");
    ct_row(&r, tether_token_error(NULL) == 0, "tether_token_error/NULL: expected 0");
    ct_row(&r, tether_token_deadline(NULL) == TETHER_NEVER,
           "tether_token_deadline/NULL: expected NEVER");
    tether_token *t;
    ck_assert_int_eq(tether_token_new(&t, NULL, TETHER_NEVER), 0);
    CT_RC(&r, "tether_token_check/live", tether_token_check(t), 0);
    ct_row(&r, tether_token_error(t) == 0, "tether_token_error/live: expected 0");
    CT_RC(&r, "tether_token_cancel/first", tether_token_cancel(t, EPIPE), 0);
    CT_RC(&r, "tether_token_cancel/again (no-op)", tether_token_cancel(t, EIO), 0);
    CT_RC(&r, "tether_token_check/canceled", tether_token_check(t), ECANCELED);
    ct_row(&r, tether_token_error(t) == EPIPE,
           "tether_token_error/second cancel: expected the first one's EPIPE, got %d",
           tether_token_error(t));
    ck_assert_int_eq(tether_token_free(t), 0);
    ck_assert_int_eq(tether_token_new(&t, NULL, tether_now() - 1), 0);
    tether_cause early = tether_token_cause(t);
    ct_row(&r, early == TETHER_CAUSE_NONE || early == TETHER_CAUSE_DEADLINE,
           "tether_token_cause/past deadline, before a check: expected NONE (not yet seen) or "
           "deadline (the timer thread's)");
    CT_RC(&r, "tether_token_check/expired", tether_token_check(t), ETIMEDOUT);
    ct_row(&r, tether_token_cause(t) == TETHER_CAUSE_DEADLINE && tether_token_error(t) == ETIMEDOUT,
           "tether_token_cause/expired, after check: expected deadline, error ETIMEDOUT");
    ck_assert_int_eq(tether_token_free(t), 0);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

static tether_callback *self_cb;
static int self_off_rc = -1;
static void off_self(void *arg)
{
    (void)arg;
    bool ran;
    self_off_rc = tether_token_off_cancel(self_cb, &ran);
}

START_TEST(contract_tether_token_on_off_cancel)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    tether_token *t;
    tether_callback *cb;
    int n = 0;
    ck_assert_int_eq(tether_token_new(&t, NULL, TETHER_NEVER), 0);
    CT_RC(&r, "tether_token_on_cancel/t NULL", tether_token_on_cancel(NULL, noop_cb, &n, &cb),
          EINVAL);
    CT_RC(&r, "tether_token_on_cancel/fn NULL", tether_token_on_cancel(t, NULL, &n, &cb), EINVAL);
    CT_RC(&r, "tether_token_on_cancel/out NULL", tether_token_on_cancel(t, noop_cb, &n, NULL),
          EINVAL);
    CT_RC(&r, "tether_token_off_cancel/NULL", tether_token_off_cancel(NULL, NULL), EINVAL);
    ck_assert_int_eq(tether_token_on_cancel(t, noop_cb, &n, &cb), 0);
    bool ran = true;
    CT_RC(&r, "tether_token_off_cancel/before cancel", tether_token_off_cancel(cb, &ran), 0);
    ct_row(&r, !ran && n == 0,
           "tether_token_off_cancel/before cancel: expected 0, ran false, got ran %d n %d", ran, n);
    ck_assert_int_eq(tether_token_on_cancel(t, off_self, NULL, &self_cb), 0);
    tether_token_cancel(t, 0);
    CT_RC(&r, "tether_token_off_cancel/from inside the callback", self_off_rc, 0);
    ck_assert_int_eq(tether_token_on_cancel(t, noop_cb, &n, &cb), 0);
    ct_row(&r, n == 1, "tether_token_on_cancel/already canceled: expected fn run at once, got n %d",
           n);
    ck_assert_int_eq(tether_token_off_cancel(cb, &ran), 0);
    ct_row(&r, ran, "tether_token_off_cancel/after it ran: expected ran true");
    /* Token freed first: off_cancel still frees the handle, ran false. */
    tether_token *u;
    ck_assert_int_eq(tether_token_new(&u, NULL, TETHER_NEVER), 0);
    ck_assert_int_eq(tether_token_on_cancel(u, noop_cb, &n, &cb), 0);
    ck_assert_int_eq(tether_token_free(u), 0);
    ran = true;
    CT_RC(&r, "tether_token_off_cancel/token freed first", tether_token_off_cancel(cb, &ran), 0);
    ct_row(&r, !ran, "tether_token_off_cancel/token freed first: expected ran false");
    ck_assert_int_eq(tether_token_free(t), 0);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

static int nested_fn(void *arg)
{
    (void)arg;
    return tether_check();
}

START_TEST(contract_current_enter_leave_with)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    ct_row(&r, tether_current() == NULL, "tether_current/default: expected NULL");
    CT_RC(&r, "tether_check/no token", tether_check(), 0);
    CT_RC(&r, "tether_token_enter/NULL", tether_token_enter(NULL), EINVAL);
    CT_RC(&r, "tether_token_leave/NULL", tether_token_leave(NULL), EINVAL);
    tether_token *a, *b;
    ck_assert_int_eq(tether_token_new(&a, NULL, TETHER_NEVER), 0);
    ck_assert_int_eq(tether_token_new(&b, NULL, TETHER_NEVER), 0);
    CT_RC(&r, "tether_token_leave/nothing entered", tether_token_leave(a), EPERM);
    /* Nesting past 16 levels. */
    for (int i = 0; i < 40; i++)
        ck_assert_int_eq(tether_token_enter(i % 2 ? a : b), 0);
    ct_row(&r, tether_current() == a,
           "tether_token_enter/40 levels: expected the innermost current");
    CT_RC(&r, "tether_token_leave/not innermost", tether_token_leave(b), EPERM);
    for (int i = 39; i >= 0; i--)
        ck_assert_int_eq(tether_token_leave(i % 2 ? a : b), 0);
    ct_row(&r, tether_current() == NULL, "tether_token_leave/all left: expected current NULL");
    /* with_deadline / with_timeout. */
    bool fired = true;
    CT_RC(&r, "tether_with_deadline/fn NULL",
          tether_with_deadline(TETHER_NEVER, NULL, NULL, &fired), EINVAL);
    CT_RC(&r, "tether_with_timeout/fn NULL", tether_with_timeout(tether_sec(1), NULL, NULL, &fired),
          EINVAL);
    fired = true;
    int rc = tether_with_deadline(TETHER_NEVER, ret_arg, (void *)(intptr_t)7, &fired);
    ct_row(&r, rc == 7 && !fired,
           "tether_with_deadline/never: expected fn's value 7, fired false, got %d fired %d", rc,
           fired);
    fired = false;
    rc = tether_with_deadline(tether_now() - 1, nested_fn, NULL, &fired);
    ct_row(&r, rc == ETIMEDOUT && fired,
           "tether_with_deadline/past deadline: expected ETIMEDOUT, fired true, got %d fired %d",
           rc, fired);
    rc = tether_with_timeout(-1, nested_fn, NULL, NULL);
    CT_RC(&r, "tether_with_timeout/negative timeout, fired NULL", rc, ETIMEDOUT);
    /* Under a canceled current token: the outer cancel, fired false. */
    tether_token_cancel(a, 0);
    ck_assert_int_eq(tether_token_enter(a), 0);
    fired = true;
    rc = tether_with_timeout(tether_sec(5), nested_fn, NULL, &fired);
    ct_row(&r, rc == ECANCELED && !fired,
           "tether_with_timeout/outer token canceled: expected ECANCELED, fired false, got %d "
           "fired %d",
           rc, fired);
    CT_RC(&r, "tether_check/canceled current", tether_check(), ECANCELED);
    ck_assert_int_eq(tether_token_leave(a), 0);
    ck_assert_int_eq(tether_token_free(a), 0);
    ck_assert_int_eq(tether_token_free(b), 0);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_tether_sigcancel)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    tether_token *t;
    tether_sigcancel *sc;
    ck_assert_int_eq(tether_token_new(&t, NULL, TETHER_NEVER), 0);
    CT_RC(&r, "tether_sigcancel_new/out NULL", tether_sigcancel_new(NULL, t, 0), EINVAL);
    CT_RC(&r, "tether_sigcancel_new/t NULL", tether_sigcancel_new(&sc, NULL, 0), EINVAL);
    CT_RC(&r, "tether_sigcancel_free/NULL", tether_sigcancel_free(NULL), EINVAL);
    errno = EDOM;
    tether_sigcancel_fire(NULL); /* a documented no-op (decision 18) */
    ct_row(&r, errno == EDOM,
           "tether_sigcancel_fire/NULL: expected a no-op, errno kept, got errno %d", errno);
    ck_assert_int_eq(tether_sigcancel_new(&sc, t, EPIPE), 0);
    errno = EDOM;
    tether_sigcancel_fire(sc);
    tether_sigcancel_fire(sc);
    ct_row(&r, errno == EDOM, "tether_sigcancel_fire/twice: expected errno preserved");
    CT_RC(&r, "tether_sigcancel_free/after fire", tether_sigcancel_free(sc), 0);
    ct_row(&r, tether_token_cause(t) == TETHER_CAUSE_SIGNAL && tether_token_error(t) == EPIPE,
           "tether_sigcancel_free/after a fire: expected the cancel done, cause signal, error "
           "EPIPE, got %s %d",
           tether_cause_name(tether_token_cause(t)), tether_token_error(t));
    ck_assert_int_eq(tether_token_free(t), 0);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_tether_shield)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    tether_shield *s, *s2;
    CT_RC(&r, "tether_shield_enter/out NULL", tether_shield_enter(NULL, TETHER_NEVER), EINVAL);
    CT_RC(&r, "tether_shield_leave/NULL", tether_shield_leave(NULL), EINVAL);
    ct_row(&r, tether_shield_token(NULL) == NULL, "tether_shield_token/NULL: expected NULL");
    tether_token *t = ct_enter(CT_CANCELED, 0);
    ck_assert_int_eq(tether_shield_enter(&s, tether_deadline_after(tether_sec(5))), 0);
    CT_RC(&r, "tether_check/inside shield of a canceled token", tether_check(), 0);
    ck_assert_int_eq(tether_shield_enter(&s2, tether_now() - 1), 0);
    CT_RC(&r, "tether_check/shield with a past deadline", tether_check(), ETIMEDOUT);
    CT_RC(&r, "tether_shield_leave/not innermost", tether_shield_leave(s), EPERM);
    ck_assert_int_eq(tether_shield_leave(s2), 0);
    tether_token *in;
    ck_assert_int_eq(tether_token_new(&in, tether_shield_token(s), TETHER_NEVER), 0);
    CT_RC(&r, "tether_shield_leave/token created inside alive", tether_shield_leave(s), EBUSY);
    ck_assert_int_eq(tether_token_free(in), 0);
    CT_RC(&r, "tether_shield_leave/ok", tether_shield_leave(s), 0);
    CT_RC(&r, "tether_check/after leaving: cancellation is sticky", tether_check(), ECANCELED);
    ct_leave(t);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_tether_signals)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    tether_token *t;
    tether_signals *h, *h2;
    ck_assert_int_eq(tether_token_new(&t, NULL, TETHER_NEVER), 0);
    CT_RC(&r, "tether_signals_install/out NULL", tether_signals_install(NULL, t, NULL), EINVAL);
    CT_RC(&r, "tether_signals_install/t NULL", tether_signals_install(&h, NULL, NULL), EINVAL);
    int sigs[9] = {
        SIGUSR1, SIGUSR2, SIGHUP, SIGQUIT, SIGALRM, SIGPIPE, SIGTERM, SIGINT, SIGWINCH
    };
    tether_signals_opts o = { .signals = sigs, .nsignals = 0 };
    CT_RC(&r, "tether_signals_install/nsignals 0", tether_signals_install(&h, t, &o), EINVAL);
    o.nsignals = 9;
    CT_RC(&r, "tether_signals_install/nsignals 9", tether_signals_install(&h, t, &o), EINVAL);
    int kill9 = SIGKILL;
    o = (tether_signals_opts){ .signals = &kill9, .nsignals = 1 };
    CT_RC(&r, "tether_signals_install/SIGKILL", tether_signals_install(&h, t, &o), EINVAL);
    ct_row(&r, tether_signals_fired(NULL) == 0, "tether_signals_fired/NULL: expected 0");
    CT_RC(&r, "tether_signals_restore/NULL", tether_signals_restore(NULL), EINVAL);
    int u1 = SIGUSR1;
    o = (tether_signals_opts){ .signals = &u1, .nsignals = 1, .error = EPIPE };
    ck_assert_int_eq(tether_signals_install(&h, t, &o), 0);
    CT_RC(&r, "tether_signals_install/second at once", tether_signals_install(&h2, t, &o), EBUSY);
    struct sigaction sa;
    sigaction(SIGUSR1, NULL, &sa);
    ct_row(&r, (sa.sa_flags & SA_RESTART) != 0,
           "tether_signals_install/handler flags: expected SA_RESTART");
    raise(SIGUSR1);
    ct_row(&r, tether_signals_fired(h) == 1, "tether_signals_fired/one signal: expected 1 got %u",
           tether_signals_fired(h));
    CT_RC(&r, "tether_signals_restore/ok", tether_signals_restore(h), 0);
    ct_row(&r, tether_token_cause(t) == TETHER_CAUSE_SIGNAL && tether_token_error(t) == EPIPE,
           "tether_signals_restore/after a signal: expected the cancel done, cause signal, error "
           "EPIPE, got %s %d",
           tether_cause_name(tether_token_cause(t)), tether_token_error(t));
    sigaction(SIGUSR1, NULL, &sa);
    ct_row(&r, sa.sa_handler == SIG_DFL,
           "tether_signals_restore/disposition: expected the previous (SIG_DFL)");
    ck_assert_int_eq(tether_token_free(t), 0);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

static tether_time_t fake_now(void *ctx)
{
    (void)ctx;
    return tether_now();
}

static int fails_eagain(void *arg)
{
    int *n = arg;
    (*n)++;
    return EAGAIN;
}

static int neg_after(void *arg)
{
    int *rc = arg;
    rc[0] = tether_retry_after(-1);
    rc[1] = tether_retry_after(0);
    return 0;
}

START_TEST(contract_tether_retry)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    tether_retry_result res;
    int n = 0;
    CT_RC(&r, "tether_retry/attempt NULL", tether_retry(NULL, NULL, NULL, &res), EINVAL);
    struct {
        const char *what;
        tether_retry_opts o;
    } bad[] = {
        { "negative initial delay", { .initial_delay_ns = -1 } },
        { "negative max delay", { .max_delay_ns = -1 } },
        { "negative budget", { .max_elapsed_ns = -1 } },
        { "negative attempt timeout", { .attempt_timeout_ns = -1 } },
        { "max_delay below initial", { .initial_delay_ns = 100, .max_delay_ns = 10 } },
        { "multiplier 0.5", { .multiplier = 0.5 } },
        { "multiplier NaN", { .multiplier = NAN } },
        { "multiplier infinite", { .multiplier = INFINITY } },
        { "jitter out of range", { .jitter = (tether_retry_jitter)9 } },
        { "only clock.now", { .clock = { .now = fake_now } } },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        n = 0;
        char name[96];
        snprintf(name, sizeof name, "tether_retry/%s", bad[i].what);
        int rc = tether_retry(fails_eagain, &n, &bad[i].o, &res);
        CT_RC(&r, name, rc, EINVAL);
        ct_row(&r, n == 0 && res.stop == TETHER_RETRY_STOP_PERMANENT,
               "%s: expected no attempt, stop permanent, got %d attempts, stop %s", name, n,
               tether_retry_stop_name(res.stop));
    }
    static const ct_state dead[] = { CT_CANCELED, CT_EXPIRED };
    for (size_t i = 0; i < 2; i++) {
        tether_token *t = ct_enter(dead[i], 0);
        n = 0;
        int rc = tether_retry(fails_eagain, &n, NULL, &res);
        char name[96];
        snprintf(name, sizeof name, "tether_retry/%s", ct_state_name(dead[i]));
        CT_RC(&r, name, rc, ct_expected(dead[i]));
        ct_row(&r, n == 0, "%s: expected no attempt, got %d", name, n);
        ct_leave(t);
    }
    CT_RC(&r, "tether_retry_after/outside an attempt", tether_retry_after(0), EPERM);
    int ar[2] = { -1, -1 };
    tether_retry(neg_after, ar, NULL, NULL);
    CT_RC(&r, "tether_retry_after/negative", ar[0], EINVAL);
    CT_RC(&r, "tether_retry_after/inside an attempt", ar[1], 0);
    int transient[] = { EAGAIN,     EINTR,        EBUSY,        ETIMEDOUT,     ECONNREFUSED,
                        ECONNRESET, ECONNABORTED, EPIPE,        ENETDOWN,      ENETUNREACH,
                        ENETRESET,  EHOSTDOWN,    EHOSTUNREACH, EADDRNOTAVAIL, ENOBUFS };
    for (size_t i = 0; i < sizeof transient / sizeof transient[0]; i++)
        ct_row(&r, tether_retry_transient(transient[i]),
               "tether_retry_transient/%s: expected transient", strerrorname_np(transient[i]));
    int permanent[] = { 0, ECANCELED, EIO, ENOMEM, EINVAL, -1 };
    for (size_t i = 0; i < sizeof permanent / sizeof permanent[0]; i++)
        ct_row(&r, !tether_retry_transient(permanent[i]),
               "tether_retry_transient/%d: expected permanent", permanent[i]);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

/* A job that leaves the token it entered behind (misuse: the process aborts). */
static int job_leaves_entered(void *arg)
{
    tether_token_enter(arg);
    return 0;
}

static long long job_unbalanced_in_child(void *ctx)
{
    (void)ctx;
    alarm((unsigned)th_timeout_s(1));
    tether_token *t;
    if (tether_token_new(&t, NULL, TETHER_NEVER) != 0)
        return -1;
    return tether_job_run(NULL, TETHER_NEVER, job_leaves_entered, t, NULL);
}

static int job_counts(void *arg)
{
    (*(int *)arg)++;
    return tether_check();
}

START_TEST(contract_tether_job_run)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    int calls = 0;
    tether_job_result out = { .result = 77 };
    CT_RC(&r, "tether_job_run/fn NULL", tether_job_run(NULL, TETHER_NEVER, NULL, NULL, &out),
          EINVAL);
    CT_RC(&r, "tether_job_run/deadline 0", tether_job_run(NULL, 0, job_counts, &calls, &out),
          EINVAL);
    CT_RC(&r, "tether_job_run/negative deadline",
          tether_job_run(NULL, -1, job_counts, &calls, &out), EINVAL);
    ct_row(&r, calls == 0 && out.result == 77,
           "tether_job_run/refused: expected fn not called, out untouched, got %d calls", calls);
    /* A canceled parent / an expired parent / its own deadline passed: skipped. */
    static const ct_state dead[] = { CT_CANCELED, CT_EXPIRED };
    for (size_t i = 0; i < 2; i++) {
        tether_token *p = ct_enter(dead[i], 0);
        ck_assert_int_eq(tether_token_leave(p), 0);
        int rc = tether_job_run(p, TETHER_NEVER, job_counts, &calls, &out);
        tether_outcome want =
            dead[i] == CT_CANCELED ? TETHER_OUTCOME_CANCELED : TETHER_OUTCOME_DEADLINE_EXCEEDED;
        ct_row(&r,
               rc == 0 && !out.ran && calls == 0 && out.outcome == want &&
                   out.cause == TETHER_CAUSE_PARENT && out.error == ct_expected(dead[i]),
               "tether_job_run/%s parent: expected 0, skipped, outcome %s, cause parent, got %d "
               "ran %d outcome %s cause %s",
               ct_state_name(dead[i]), tether_outcome_name(want), rc, out.ran,
               tether_outcome_name(out.outcome), tether_cause_name(out.cause));
        ck_assert_int_eq(tether_token_free(p), 0);
    }
    int rc = tether_job_run(NULL, tether_now() - 1, job_counts, &calls, &out);
    ct_row(&r,
           rc == 0 && !out.ran && calls == 0 && out.outcome == TETHER_OUTCOME_DEADLINE_EXCEEDED &&
               out.cause == TETHER_CAUSE_DEADLINE && out.error == ETIMEDOUT,
           "tether_job_run/expired deadline: expected 0, skipped, deadline_exceeded, cause "
           "deadline, got %d ran %d outcome %s",
           rc, out.ran, tether_outcome_name(out.outcome));
    rc = tether_job_run(NULL, TETHER_NEVER, job_counts, &calls, &out);
    ct_row(&r,
           rc == 0 && out.ran && calls == 1 && out.outcome == TETHER_OUTCOME_OK &&
               out.result == 0 && !out.late,
           "tether_job_run/live: expected 0, ran, ok, got %d ran %d outcome %s", rc, out.ran,
           tether_outcome_name(out.outcome));
    CT_RC(&r, "tether_job_run/out NULL",
          tether_job_run(NULL, TETHER_NEVER, job_counts, &calls, NULL), 0);
    int err, sig;
    ct_in_child(job_unbalanced_in_child, NULL, &err, &sig);
    ct_row(&r, sig == SIGABRT,
           "tether_job_run/fn leaves a token entered: expected the misuse abort (SIGABRT), got "
           "signal %d",
           sig);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_tether_dump)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    CT_RC(&r, "tether_dump/fd -1", tether_dump(-1, TETHER_DUMP_TEXT), EBADF);
    int closed = dup(p[1]);
    close(closed);
    CT_RC(&r, "tether_dump/closed fd", tether_dump(closed, TETHER_DUMP_TEXT), EBADF);
    CT_RC(&r, "tether_dump/read-only fd", tether_dump(p[0], TETHER_DUMP_TEXT), EBADF);
    CT_RC(&r, "tether_dump/format out of range", tether_dump(p[1], (tether_dump_format)7), EINVAL);
    CT_RC(&r, "tether_dump/text", tether_dump(p[1], TETHER_DUMP_TEXT), 0);
    CT_RC(&r, "tether_dump/json", tether_dump(p[1], TETHER_DUMP_JSON), 0);
    /* Not a cancellation point: a dead current token changes nothing. */
    static const ct_state dead[] = { CT_CANCELED, CT_EXPIRED };
    for (size_t i = 0; i < 2; i++) {
        tether_token *t = ct_enter(dead[i], 0);
        char name[96];
        snprintf(name, sizeof name, "tether_dump/%s current token", ct_state_name(dead[i]));
        CT_RC(&r, name, tether_dump(p[1], TETHER_DUMP_TEXT), 0);
        ct_leave(t);
    }
    /* A full non-blocking descriptor: write(2)'s EAGAIN; no reader: EPIPE
     * (SIGPIPE ignored for the row). */
    int q[2];
    ck_assert_int_eq(pipe2(q, O_NONBLOCK), 0);
    char fill[4096] = { 0 };
    while (write(q[1], fill, sizeof fill) > 0) {
    }
    CT_RC(&r, "tether_dump/full non-blocking pipe", tether_dump(q[1], TETHER_DUMP_TEXT), EAGAIN);
    close(q[0]);
    struct sigaction ign = { .sa_handler = SIG_IGN }, old_pipe;
    ck_assert_int_eq(sigaction(SIGPIPE, &ign, &old_pipe), 0);
    CT_RC(&r, "tether_dump/pipe without reader", tether_dump(q[1], TETHER_DUMP_TEXT), EPIPE);
    ck_assert_int_eq(sigaction(SIGPIPE, &old_pipe, NULL), 0);
    close(q[1]);

    tether_dump_signal *h = NULL;
    CT_RC(&r, "tether_dump_on_signal/out NULL", tether_dump_on_signal(NULL, SIGUSR2, p[1], 0),
          EINVAL);
    CT_RC(&r, "tether_dump_on_signal/signal 0", tether_dump_on_signal(&h, 0, p[1], 0), EINVAL);
    CT_RC(&r, "tether_dump_on_signal/SIGKILL", tether_dump_on_signal(&h, SIGKILL, p[1], 0), EINVAL);
    CT_RC(&r, "tether_dump_on_signal/SIGSTOP", tether_dump_on_signal(&h, SIGSTOP, p[1], 0), EINVAL);
    CT_RC(&r, "tether_dump_on_signal/signal NSIG", tether_dump_on_signal(&h, NSIG, p[1], 0),
          EINVAL);
    CT_RC(&r, "tether_dump_on_signal/format out of range",
          tether_dump_on_signal(&h, SIGUSR2, p[1], (tether_dump_format)2), EINVAL);
    CT_RC(&r, "tether_dump_on_signal/fd -1", tether_dump_on_signal(&h, SIGUSR2, -1, 0), EBADF);
    CT_RC(&r, "tether_dump_on_signal/read-only fd", tether_dump_on_signal(&h, SIGUSR2, p[0], 0),
          EBADF);
    int rc = tether_dump_on_signal(&h, SIGUSR2, p[1], TETHER_DUMP_JSON);
    CT_RC(&r, "tether_dump_on_signal/SIGUSR2", rc, 0);
    tether_dump_signal *h2 = NULL;
    CT_RC(&r, "tether_dump_on_signal/second installation",
          tether_dump_on_signal(&h2, SIGUSR1, p[1], 0), EBUSY);
    if (rc == 0)
        CT_RC(&r, "tether_dump_signal_free/installed", tether_dump_signal_free(h), 0);
    CT_RC(&r, "tether_dump_signal_free/NULL", tether_dump_signal_free(NULL), EINVAL);
    close(p[0]);
    close(p[1]);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

/* A hook that records where it ran. */
struct hook_seen {
    sem_t done;
    pthread_t thread;
    tether_token *own; /* if set, the hook tries to free it */
    int free_rc;
};

static void hook_record(void *arg)
{
    struct hook_seen *h = arg;
    h->thread = pthread_self();
    if (h->own)
        h->free_rc = tether_token_free(h->own);
    sem_post(&h->done);
}

START_TEST(contract_tether_hook)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    struct hook_seen seen = { .own = NULL };
    sem_init(&seen.done, 0, 0);
    tether_token *t;
    tether_hook *h;
    ck_assert_int_eq(tether_token_new(&t, NULL, TETHER_NEVER), 0);
    CT_RC(&r, "tether_hook_on_cancel/t NULL", tether_hook_on_cancel(NULL, hook_record, &seen, &h),
          EINVAL);
    CT_RC(&r, "tether_hook_on_cancel/fn NULL", tether_hook_on_cancel(t, NULL, &seen, &h), EINVAL);
    CT_RC(&r, "tether_hook_on_cancel/out NULL", tether_hook_on_cancel(t, hook_record, &seen, NULL),
          EINVAL);
    CT_RC(&r, "tether_hook_off/NULL", tether_hook_off(NULL, NULL), EINVAL);
    ck_assert_int_eq(tether_hook_on_cancel(t, hook_record, &seen, &h), 0);
    bool ran = true;
    CT_RC(&r, "tether_hook_off/before cancel", tether_hook_off(h, &ran), 0);
    ct_row(&r, !ran, "tether_hook_off/before cancel (effect): expected ran false");
    tether_token_cancel(t, 0);
    ck_assert_int_eq(tether_hook_on_cancel(t, hook_record, &seen, &h), 0);
    bool posted = th_sem_wait_bounded(&seen.done, 2000);
    ct_row(&r, posted && !pthread_equal(seen.thread, pthread_self()),
           "tether_hook_on_cancel/already canceled: expected run on a runner thread, got "
           "posted %d",
           posted);
    CT_RC(&r, "tether_hook_off/after it ran", tether_hook_off(h, &ran), 0);
    ct_row(&r, ran, "tether_hook_off/after it ran (effect): expected ran true");
    ck_assert_int_eq(tether_token_free(t), 0);
    ck_assert_int_eq(tether_token_new(&t, NULL, TETHER_NEVER), 0);
    ck_assert_int_eq(tether_hook_on_cancel(t, hook_record, &seen, &h), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    ran = true;
    CT_RC(&r, "tether_hook_off/token freed first", tether_hook_off(h, &ran), 0);
    ct_row(&r, !ran, "tether_hook_off/token freed first (effect): expected ran false");
    ck_assert_int_eq(tether_token_new(&t, NULL, TETHER_NEVER), 0);
    seen.own = t;
    seen.free_rc = -1;
    ck_assert_int_eq(tether_hook_on_cancel(t, hook_record, &seen, &h), 0);
    tether_token_cancel(t, 0);
    ck_assert(th_sem_wait_bounded(&seen.done, 2000));
    CT_RC(&r, "tether_token_free/from its own cancel hook", seen.free_rc, EBUSY);
    ck_assert_int_eq(tether_hook_off(h, &ran), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    sem_destroy(&seen.done);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

/* Whether the socket pair carries a byte from a to b. */
static bool carries(int a, int b)
{
    char c = 0;
    return send(a, "x", 1, MSG_NOSIGNAL) == 1 && recv(b, &c, 1, MSG_DONTWAIT) == 1 && c == 'x';
}

START_TEST(contract_tether_fd_span)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    int sv[2], p[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    tether_fd_span *s;
    CT_RC(&r, "tether_fd_span_begin/out NULL", tether_fd_span_begin(sv[0], SHUT_RDWR, NULL),
          EINVAL);
    CT_RC(&r, "tether_fd_span_begin/how out of range", tether_fd_span_begin(sv[0], 7, &s), EINVAL);
    CT_RC(&r, "tether_fd_span_begin/fd -1", tether_fd_span_begin(-1, SHUT_RDWR, &s), EBADF);
    int closed = dup(sv[0]);
    close(closed);
    CT_RC(&r, "tether_fd_span_begin/closed fd", tether_fd_span_begin(closed, SHUT_RDWR, &s), EBADF);
    CT_RC(&r, "tether_fd_span_begin/pipe", tether_fd_span_begin(p[0], SHUT_RDWR, &s), ENOTSOCK);
    CT_RC(&r, "tether_fd_span_end/NULL", tether_fd_span_end(NULL, NULL), EINVAL);
    /* No current token: a span that never fires. */
    CT_RC(&r, "tether_fd_span_begin/no-token", tether_fd_span_begin(sv[0], SHUT_RDWR, &s), 0);
    bool fired = true;
    CT_RC(&r, "tether_fd_span_end/no-token", tether_fd_span_end(s, &fired), 0);
    ct_row(&r, !fired && carries(sv[1], sv[0]),
           "tether_fd_span_end/no-token (effect): expected not fired, socket untouched");
    /* Live token, ended before any cancel: never fires. */
    tether_token *t = ct_enter(CT_LIVE, 0);
    CT_RC(&r, "tether_fd_span_begin/live", tether_fd_span_begin(sv[0], SHUT_WR, &s), 0);
    CT_RC(&r, "tether_fd_span_end/live", tether_fd_span_end(s, &fired), 0);
    tether_token_cancel(t, 0);
    ct_row(&r, !fired && carries(sv[0], sv[1]),
           "tether_fd_span_end/live (effect): expected not fired, socket untouched after a later "
           "cancel");
    ct_leave(t);
    /* Already canceled: the shutdown runs before begin returns. */
    t = ct_enter(CT_CANCELED, 0);
    CT_RC(&r, "tether_fd_span_begin/canceled", tether_fd_span_begin(sv[0], SHUT_WR, &s), 0);
    ct_row(&r, send(sv[0], "x", 1, MSG_NOSIGNAL) == -1 && errno == EPIPE,
           "tether_fd_span_begin/canceled (effect): expected shut down at once (EPIPE)");
    CT_RC(&r, "tether_fd_span_end/canceled", tether_fd_span_end(s, &fired), 0);
    ct_row(&r, fired, "tether_fd_span_end/canceled (effect): expected fired true");
    ct_leave(t);
    close(sv[0]);
    close(sv[1]);
    close(p[0]);
    close(p[1]);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_tether_context)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_token *c = new_token(t, TETHER_NEVER);
    char buf[TETHER_CONTEXT_MAX];
    CT_RC(&r, "tether_token_set_context/t NULL", tether_token_set_context(NULL, "x"), EINVAL);
    char v[TETHER_CONTEXT_MAX + 1];
    memset(v, 'v', sizeof v - 1);
    v[TETHER_CONTEXT_MAX] = '\0';
    CT_RC(&r, "tether_token_set_context/128 bytes", tether_token_set_context(t, v), ERANGE);
    v[TETHER_CONTEXT_MAX - 1] = '\0';
    CT_RC(&r, "tether_token_set_context/127 bytes", tether_token_set_context(t, v), 0);
    v[TETHER_CONTEXT_MAX - 1] = 'v';
    (void)tether_token_set_context(t, v);
    ct_row(&r, tether_token_context(c, buf, sizeof buf) == 0 && strlen(buf) == 127,
           "tether_token_set_context/refused: expected the old value kept");
    CT_RC(&r, "tether_token_set_context/canceled token",
          (tether_token_cancel(c, 0), tether_token_set_context(c, "dead")), 0);
    CT_RC(&r, "tether_token_set_context/NULL removes", tether_token_set_context(c, NULL), 0);

    CT_RC(&r, "tether_token_context/t NULL", tether_token_context(NULL, buf, sizeof buf), EINVAL);
    CT_RC(&r, "tether_token_context/buf NULL", tether_token_context(c, NULL, sizeof buf), EINVAL);
    CT_RC(&r, "tether_token_context/buffer one byte short", tether_token_context(c, buf, 127),
          ERANGE);
    CT_RC(&r, "tether_token_context/an ancestor's value", tether_token_context(c, buf, 128), 0);
    (void)tether_token_set_context(t, NULL);
    memset(buf, '#', sizeof buf);
    CT_RC(&r, "tether_token_context/no value up the tree", tether_token_context(c, buf, 128),
          ENOENT);
    ct_row(&r, buf[0] == '#', "tether_token_context/ENOENT: expected buf untouched");

    CT_RC(&r, "tether_context/buf NULL", tether_context(NULL, 16), EINVAL);
    CT_RC(&r, "tether_context/no current token", tether_context(buf, sizeof buf), ENOENT);
    enter(c);
    CT_RC(&r, "tether_context/no value up the tree", tether_context(buf, sizeof buf), ENOENT);
    (void)tether_token_set_context(t, "req-1");
    CT_RC(&r, "tether_context/buffer one byte short", tether_context(buf, 5), ERANGE);
    CT_RC(&r, "tether_context/canceled current token", tether_context(buf, sizeof buf), 0);
    leave(c);
    ck_assert_int_eq(tether_token_free(c), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

static Suite *contract_core_suite(void)
{
    Suite *s = suite_create("contract_core");
    TCase *tc = tcase_create("contract_core");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, contract_version_time_names);
    tcase_add_test(tc, contract_tether_trim);
    tcase_add_test(tc, contract_tether_token_new_free);
    tcase_add_test(tc, contract_tether_token_cancel_check_accessors);
    tcase_add_test(tc, contract_tether_token_on_off_cancel);
    tcase_add_test(tc, contract_current_enter_leave_with);
    tcase_add_test(tc, contract_tether_sigcancel);
    tcase_add_test(tc, contract_tether_shield);
    tcase_add_test(tc, contract_tether_signals);
    tcase_add_test(tc, contract_tether_retry);
    tcase_add_test(tc, contract_tether_job_run);
    tcase_add_test(tc, contract_tether_dump);
    tcase_add_test(tc, contract_tether_hook);
    tcase_add_test(tc, contract_tether_fd_span);
    tcase_add_test(tc, contract_tether_context);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(contract_core_suite());
}
