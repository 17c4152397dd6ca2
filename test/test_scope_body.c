/*
 * The body helpers (tether_scope_run and friends): a scope opened, used and
 * joined around one function.
 */
#define _GNU_SOURCE
#include "scope_fixtures.h"

START_TEST(test_scope_run_joins_children)
{
    th_baseline base = th_baseline_take();
    body_ctx c;
    memset(&c, 0, sizeof c);
    tether_result r;
    ck_assert_int_eq(tether_scope_run(NULL, body_spawn_workers, &c, &r), 0);
    for (int i = 0; i < 3; i++) {
        ck_assert(atomic_load(&c.w[i].done));
        ck_assert_int_eq(c.w[i].rc, 0);
    }
    ck_assert_ptr_nonnull(c.current);
    ck_assert_ptr_eq(c.current, c.scope_token); /* the body runs inside the scope */
    ck_assert_ptr_null(tether_current());
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_uint_eq(r.spawned, 3);
    ck_assert_uint_eq(r.succeeded, 3);
    ck_assert_int_eq(tether_scope_run(NULL, body_spawn_workers, &c, NULL), 0); /* NULL result */
    th_baseline_check(base);
}
END_TEST

START_TEST(test_scope_run_body_error_fails_scope)
{
    th_baseline base = th_baseline_take();
    body_ctx c;
    memset(&c, 0, sizeof c);
    c.ret = EPROTO;
    blockers_init(&c.b, 1, NULL);
    tether_result r;
    ck_assert_int_eq(tether_scope_run(NULL, body_spawn_workers, &c, &r), 0);
    ck_assert(atomic_load(&c.b.cleaned));
    ck_assert_int_eq(c.b.err, ECANCELED);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_FAILED);
    ck_assert_int_eq(r.error, EPROTO);
    ck_assert_int_eq(r.error_task, -1);
    ck_assert_uint_eq(r.spawned, 4);
    ck_assert_uint_ge(r.canceled, 1);
    ck_assert_uint_eq(r.failed, 0);
    th_baseline_check(base);
}
END_TEST

static int guard_return(worker w[2])
{
    TETHER_SCOPE_GUARD(s, NULL);
    ck_assert_ptr_nonnull(s);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(tether_spawn(s, worker_20ms, &w[i], NULL, NULL), 0);
    return 7; /* leaves the block: the guard joins */
}

static int guard_goto(worker w[2], int *done_at_exit)
{
    {
        TETHER_SCOPE_GUARD(s, NULL);
        ck_assert_ptr_nonnull(s);
        for (int i = 0; i < 2; i++)
            ck_assert_int_eq(tether_spawn(s, worker_20ms, &w[i], NULL, NULL), 0);
        goto out;
    }
out:
    *done_at_exit = atomic_load(&w[0].done) + atomic_load(&w[1].done);
    return 0;
}

START_TEST(test_guard_joins_on_return_and_goto)
{
    th_baseline base = th_baseline_take();
    worker w[2];
    memset(w, 0, sizeof w);
    ck_assert_int_eq(guard_return(w), 7);
    for (int i = 0; i < 2; i++) {
        ck_assert(atomic_load(&w[i].done));
        ck_assert_int_eq(w[i].rc, 0); /* joined, not canceled */
    }
    ck_assert_int_eq(th_wait_thread_count(base.threads), base.threads);

    memset(w, 0, sizeof w);
    int done = -1;
    ck_assert_int_eq(guard_goto(w, &done), 0);
    ck_assert_int_eq(done, 2);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(w[i].rc, 0);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_guard_with_join_inside)
{
    th_baseline base = th_baseline_take();
    int eio = EIO;
    {
        TETHER_SCOPE_GUARD(s, NULL);
        ck_assert_ptr_nonnull(s);
        spawn_ok(s, return_int, &eio, "bad", NULL);
        tether_result r;
        ck_assert_int_eq(tether_scope_join(s, &r), 0);
        ck_assert_int_eq(r.outcome, TETHER_OUTCOME_FAILED);
        ck_assert_int_eq(r.error, EIO);
    } /* frees the joined scope */
    {
        tether_scope_opts bad = { .policy = (tether_policy)99 };
        TETHER_SCOPE_GUARD(s, &bad);
        ck_assert_ptr_null(s);
        ck_assert_int_eq(tether_spawn(s, return_zero, NULL, NULL, NULL), EINVAL);
    }
    th_baseline_check(base);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("scope_body");
    TCase *tc;

    tc = tcase_create("body");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, test_scope_run_joins_children);
    tcase_add_test(tc, test_scope_run_body_error_fails_scope);
    tcase_add_test(tc, test_guard_joins_on_return_and_goto);
    tcase_add_test(tc, test_guard_with_join_inside);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
