/*
 * Task handles: waiting for, canceling and reading the result of one
 * child.
 */
#define _GNU_SOURCE
#include "scope_fixtures.h"

/* ---------------------------------------------------------------------- */
/* Task handles                                                           */

START_TEST(test_task_wait_returns_result)
{
    th_baseline base = th_baseline_take();
    int vals[3] = { 0, EIO, ENOSPC };
    tether_scope_opts o = { .policy = TETHER_POLICY_SUPERVISOR };
    tether_scope *s = open_scope(&o);
    tether_task *t[3];
    for (int i = 0; i < 3; i++)
        spawn_ok(s, return_int, &vals[i], NULL, &t[i]);
    for (int i = 2; i >= 0; i--) {
        int res = -1;
        ck_assert_int_eq(tether_task_wait(t[i], &res), 0);
        ck_assert_int_eq(res, vals[i]);
        ck_assert_int_eq(tether_task_wait(t[i], NULL), 0); /* again: still valid */
    }
    tether_result r = join_and_free(s);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_PARTIAL);
    ck_assert_uint_eq(r.succeeded, 1);
    ck_assert_uint_eq(r.failed, 2);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_task_halt_cancels_one_child)
{
    th_baseline base = th_baseline_take();
    sem_t ready, gate;
    sem_init(&ready, 0, 0);
    sem_init(&gate, 0, 0);
    blocker b;
    blockers_init(&b, 1, &ready);
    gated g[2] = { { .gate = &gate }, { .gate = &gate } };
    tether_scope *s = open_scope(NULL);
    tether_task *t[3];
    spawn_ok(s, gated_main, &g[0], NULL, &t[0]);
    spawn_ok(s, blocker_main, &b, "halted", &t[1]);
    spawn_ok(s, gated_main, &g[1], NULL, &t[2]);
    wait_blocked(&ready, &b, 1);
    int res = -1;
    ck_assert_int_eq(tether_task_halt(t[1], &res), 0);
    ck_assert_int_eq(res, ECANCELED);
    ck_assert(atomic_load(&b.cleaned)); /* halt waited for it */
    ck_assert_int_eq(b.cause, TETHER_CAUSE_HALTED);
    ck_assert_int_eq(tether_token_cause(tether_task_token(t[1])), TETHER_CAUSE_HALTED);
    /* Siblings and the scope untouched. */
    ck_assert_int_eq(tether_token_cause(tether_task_token(t[0])), TETHER_CAUSE_NONE);
    ck_assert_int_eq(tether_token_cause(tether_task_token(t[2])), TETHER_CAUSE_NONE);
    ck_assert_int_eq(tether_token_cause(tether_scope_token(s)), TETHER_CAUSE_NONE);
    sem_post(&gate);
    sem_post(&gate);
    tether_result r = join_and_free(s);
    ck_assert_int_eq(g[0].check, 0);
    ck_assert_int_eq(g[1].check, 0);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_int_eq(r.error, 0);
    ck_assert_uint_eq(r.succeeded, 2);
    ck_assert_uint_eq(r.canceled, 1);
    ck_assert_uint_eq(r.failed, 0);
    sem_destroy(&ready);
    sem_destroy(&gate);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_per_child_timeout_fails_that_child)
{
    th_baseline base = th_baseline_take();
    sem_t gate;
    sem_init(&gate, 0, 0);
    blocker b;
    blockers_init(&b, 1, NULL);
    gated g = { .gate = &gate };
    tether_scope_opts o = { .policy = TETHER_POLICY_SUPERVISOR };
    tether_scope *s = open_scope(&o);
    tether_task *t[2];
    tether_spawn_opts so = { .name = "timed", .timeout_ns = tether_ms(50) };
    tether_time_t t0 = tether_now();
    ck_assert_int_eq(tether_spawn(s, blocker_main, &b, &so, &t[0]), 0);
    spawn_ok(s, gated_main, &g, NULL, &t[1]);
    int res = -1;
    ck_assert_int_eq(tether_task_wait(t[0], &res), 0);
    ck_assert_int_eq(res, ETIMEDOUT);
    ck_assert_int_ge(b.woke_at - t0, tether_ms(50));
    ck_assert_int_le(b.woke_at - t0, tether_ms(50) + th_bound_ns(1000));
    ck_assert_int_eq(b.cause, TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(tether_token_cause(tether_scope_token(s)), TETHER_CAUSE_NONE);
    ck_assert_int_eq(tether_token_deadline(tether_scope_token(s)), TETHER_NEVER);
    sem_post(&gate);
    tether_result r = join_and_free(s);
    ck_assert_int_eq(g.check, 0);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_PARTIAL);
    ck_assert_int_eq(r.error, ETIMEDOUT);
    ck_assert_int_eq(r.error_task, 0);
    ck_assert_str_eq(r.error_task_name, "timed");
    ck_assert_uint_eq(r.failed, 1);
    ck_assert_uint_eq(r.succeeded, 1);
    ck_assert_uint_eq(r.canceled, 0);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_NONE);
    sem_destroy(&gate);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_child_token_is_task_token)
{
    th_baseline base = th_baseline_take();
    sem_t ready;
    sem_init(&ready, 0, 0);
    blocker b;
    blockers_init(&b, 1, &ready);
    tether_scope_opts o = { .timeout_ns = tether_sec(3600) };
    tether_scope *s = open_scope(&o);
    tether_task *t;
    spawn_ok(s, blocker_main, &b, NULL, &t);
    wait_blocked(&ready, &b, 1);
    ck_assert_ptr_nonnull(tether_task_token(t));
    ck_assert_ptr_eq(b.token, tether_task_token(t));
    ck_assert_ptr_ne(b.token, tether_scope_token(s));
    /* It descends from the scope's token: same inherited deadline, and the
     * scope's cancellation reaches it through its parent. */
    ck_assert_int_eq(tether_token_deadline(b.token), tether_token_deadline(tether_scope_token(s)));
    ck_assert_int_eq(tether_scope_cancel(s), 0);
    ck_assert_int_eq(tether_task_wait(t, NULL), 0);
    ck_assert_int_eq(b.cause, TETHER_CAUSE_PARENT);
    ck_assert_int_eq(b.root_cause, TETHER_CAUSE_EXPLICIT);
    tether_result r = join_and_free(s);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
    sem_destroy(&ready);
    th_baseline_check(base);
}
END_TEST

typedef struct named {
    char thread_name[32];
} named;

static int record_thread_name(void *arg)
{
    named *n = arg;
    pthread_getname_np(pthread_self(), n->thread_name, sizeof n->thread_name);
    return EIO;
}

START_TEST(test_long_names_truncated)
{
    th_baseline base = th_baseline_take();
    static const char name[] = "a-child-name-that-is-much-longer-than-31-bytes";
    named n = { { 0 } };
    char name_buf[sizeof name];
    memcpy(name_buf, name, sizeof name);
    tether_scope_opts so = { .name = name };
    tether_scope *s = open_scope(&so);
    tether_spawn_opts o = { .name = name_buf };
    ck_assert_int_eq(tether_spawn(s, record_thread_name, &n, &o, NULL), 0);
    memset(name_buf, 'x', sizeof name_buf - 1); /* the name was copied */
    tether_result r = join_and_free(s);
    ck_assert_int_eq(r.error, EIO);
    ck_assert_int_eq(strlen(r.error_task_name), TETHER_NAME_MAX - 1);
    ck_assert_int_eq(strncmp(r.error_task_name, name, TETHER_NAME_MAX - 1), 0);
    ck_assert_int_eq(strlen(n.thread_name), 15);
    ck_assert_int_eq(strncmp(n.thread_name, name, 15), 0);
    th_baseline_check(base);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("scope_tasks");
    TCase *tc;

    tc = tcase_create("tasks");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, test_task_wait_returns_result);
    tcase_add_test(tc, test_task_halt_cancels_one_child);
    tcase_add_test(tc, test_per_child_timeout_fails_that_child);
    tcase_add_test(tc, test_child_token_is_task_token);
    tcase_add_test(tc, test_long_names_truncated);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
