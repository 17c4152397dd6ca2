/*
 * Background children: strict teardown once the scope's foreground
 * children are done, and a failing background child.
 */
#define _GNU_SOURCE
#include "scope_fixtures.h"

/* ---------------------------------------------------------------------- */
/* Strict background teardown                                             */

typedef struct bg_child {
    int err;
    tether_cause cause, root_cause;
    atomic_bool cleaned;
} bg_child;

/* Blocks until halted, then spends 100 ms cleaning up (a plain nanosleep:
 * the cleanup is not cancellable) before setting its flag. */
static int bg_slow_cleanup(void *arg)
{
    bg_child *c = arg;
    c->err = tether_sleep_for(DAY) < 0 ? errno : NOT_CANCELED;
    c->cause = tether_token_cause(tether_current());
    c->root_cause = tether_token_root_cause(tether_current());
    struct timespec ts = { .tv_sec = 0, .tv_nsec = 100 * 1000 * 1000 };
    while (nanosleep(&ts, &ts) != 0)
        ;
    atomic_store(&c->cleaned, true);
    return c->err;
}

START_TEST(test_background_halted_after_foreground)
{
    th_baseline base = th_baseline_take();
    bg_child bg = { .err = 0 };
    tether_scope *s = open_scope(NULL);
    tether_spawn_opts bo = { .name = "bg", .background = true };
    ck_assert_int_eq(tether_spawn(s, bg_slow_cleanup, &bg, &bo, NULL), 0);
    spawn_ok(s, return_zero, NULL, "fg", NULL);
    tether_time_t t0 = tether_now();
    tether_result r;
    ck_assert_int_eq(tether_scope_join(s, &r), 0);
    int64_t took = tether_now() - t0;
    ck_assert(atomic_load(&bg.cleaned)); /* cleanup finished before join returned */
    ck_assert_int_eq(tether_scope_free(s), 0);

    ck_assert_int_ge(took, tether_ms(100));
    ck_assert_int_le(took, tether_ms(100) + th_bound_ns(1000));
    ck_assert_int_eq(bg.err, ECANCELED);
    ck_assert_int_eq(bg.root_cause, TETHER_CAUSE_SCOPE_FINISHED);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_SCOPE_FINISHED);
    ck_assert_int_eq(r.error, 0);
    ck_assert_int_eq(r.error_task, -1);
    ck_assert_uint_eq(r.spawned, 2);
    ck_assert_uint_eq(r.succeeded, 1);
    ck_assert_uint_eq(r.canceled, 1);
    ck_assert_uint_eq(r.failed, 0);
    ck_assert_int_ge(r.convergence_ns, tether_ms(100));
    th_baseline_check(base);
}
END_TEST

static int sleep_day(void *arg)
{
    (void)arg;
    return tether_sleep_for(DAY) < 0 ? errno : NOT_CANCELED;
}

/* A background watchdog whose own tether_with_timeout fires: ETIMEDOUT. */
static int bg_watchdog(void *arg)
{
    bool *fired = arg;
    return tether_with_timeout(tether_ms(30), sleep_day, NULL, fired);
}

START_TEST(test_background_failure_fails_scope)
{
    th_baseline base = th_baseline_take();
    bool fired = false;
    blocker fg;
    blockers_init(&fg, 1, NULL);
    tether_scope *s = open_scope(NULL);
    spawn_ok(s, blocker_main, &fg, "fg", NULL);
    tether_spawn_opts bo = { .name = "watchdog", .background = true };
    ck_assert_int_eq(tether_spawn(s, bg_watchdog, &fired, &bo, NULL), 0); /* index 1 */
    tether_result r = join_and_free(s);
    ck_assert(fired);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_FAILED);
    ck_assert_int_eq(r.error, ETIMEDOUT);
    ck_assert_int_eq(r.error_task, 1);
    ck_assert_str_eq(r.error_task_name, "watchdog");
    ck_assert_int_eq(r.cause, TETHER_CAUSE_SIBLING_FAILED);
    ck_assert_int_eq(r.cause_task, 1);
    ck_assert_uint_eq(r.failed, 1);
    ck_assert_uint_eq(r.canceled, 1);
    ck_assert_int_eq(fg.err, ECANCELED);
    ck_assert_int_eq(fg.root_cause, TETHER_CAUSE_SIBLING_FAILED);
    th_baseline_check(base);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("scope_background");
    TCase *tc;

    tc = tcase_create("background");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, test_background_halted_after_foreground);
    tcase_add_test(tc, test_background_failure_fails_scope);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
