/*
 * Scope policies: how fail-fast, supervisor and first-success decide what a
 * child's result does to its siblings and to the scope's outcome.
 */
#define _GNU_SOURCE
#include "scope_fixtures.h"

/* ---------------------------------------------------------------------- */
/* Fail-fast                                                              */

typedef struct failer {
    sem_t *ready;
    blocker *siblings;
    int nsiblings;
    int err;
    tether_time_t failed_at;
} failer;

static int failer_main(void *arg)
{
    failer *f = arg;
    wait_blocked(f->ready, f->siblings, f->nsiblings);
    f->failed_at = tether_now();
    return f->err;
}

START_TEST(test_fail_fast_cancels_blocked_siblings)
{
    th_baseline base = th_baseline_take();
    enum { NB = 4 };
    sem_t ready;
    sem_init(&ready, 0, 0);
    blocker b[NB];
    blockers_init(b, NB, &ready);
    failer f = { .ready = &ready, .siblings = b, .nsiblings = NB, .err = EIO };

    tether_scope *s = open_scope(NULL);
    spawn_ok(s, blocker_main, &b[0], "sleeper-0", NULL);
    spawn_ok(s, blocker_main, &b[1], "reader-1", NULL);
    spawn_ok(s, failer_main, &f, "failer", NULL); /* index 2 */
    spawn_ok(s, blocker_main, &b[2], "sleeper-3", NULL);
    spawn_ok(s, blocker_main, &b[3], "reader-4", NULL);
    tether_result r = join_and_free(s);
    tether_time_t joined = tether_now();

    ck_assert_int_le(joined - f.failed_at, th_bound_ns(1000));
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_FAILED);
    ck_assert_int_eq(r.error, EIO);
    ck_assert_int_eq(r.error_task, 2);
    ck_assert_str_eq(r.error_task_name, "failer");
    ck_assert_int_eq(r.cause, TETHER_CAUSE_SIBLING_FAILED);
    ck_assert_int_eq(r.cause_task, 2);
    ck_assert_int_eq(r.winner, -1);
    ck_assert_uint_eq(r.spawned, 5);
    ck_assert_uint_eq(r.succeeded, 0);
    ck_assert_uint_eq(r.failed, 1);
    ck_assert_uint_eq(r.canceled, NB);
    ck_assert_int_gt(r.convergence_ns, 0);
    ck_assert_int_le(r.convergence_ns, th_bound_ns(1000));
    for (int i = 0; i < NB; i++) {
        ck_assert_int_eq(b[i].err, ECANCELED);
        ck_assert_int_eq(b[i].cause, TETHER_CAUSE_PARENT);
        ck_assert_int_eq(b[i].root_cause, TETHER_CAUSE_SIBLING_FAILED);
        ck_assert_int_eq(b[i].token_error, EIO);
        ck_assert(atomic_load(&b[i].cleaned));
    }
    sem_destroy(&ready);
    th_baseline_check(base);
}
END_TEST

typedef struct pair_child {
    pthread_barrier_t *bar;
    unsigned spin;
    int err;
} pair_child;

static int fail_after_barrier(void *arg)
{
    pair_child *c = arg;
    pthread_barrier_wait(c->bar);
    busy_spin(c->spin);
    return c->err;
}

START_TEST(test_first_error_wins_when_two_fail_together)
{
    th_baseline base = th_baseline_take();
    uint64_t rng = th_seed("first_error_wins_when_two_fail_together");
    int iters = stress(2000), eio = 0, epipe = 0;
    for (int i = 0; i < iters; i++) {
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, 2);
        pair_child a = { .bar = &bar, .spin = (unsigned)(th_rand(&rng) % 2000), .err = EIO };
        pair_child b = { .bar = &bar, .spin = (unsigned)(th_rand(&rng) % 2000), .err = EPIPE };
        tether_scope *s = open_scope(NULL);
        spawn_ok(s, fail_after_barrier, &a, "eio", NULL);
        spawn_ok(s, fail_after_barrier, &b, "epipe", NULL);
        tether_result r = join_and_free(s);
        pthread_barrier_destroy(&bar);

        ck_assert_int_eq(r.outcome, TETHER_OUTCOME_FAILED);
        ck_assert_msg(r.error == EIO || r.error == EPIPE, "iteration %d: error %d", i, r.error);
        ck_assert_int_eq(r.error_task, r.error == EIO ? 0 : 1);
        ck_assert_str_eq(r.error_task_name, r.error == EIO ? "eio" : "epipe");
        ck_assert_int_eq(r.cause, TETHER_CAUSE_SIBLING_FAILED);
        ck_assert_int_eq(r.cause_task, r.error_task);
        ck_assert_uint_eq(r.failed, 2);
        ck_assert_uint_eq(r.canceled, 0);
        if (r.error == EIO)
            eio++;
        else
            epipe++;
    }
    printf("first_error_wins: %d iterations, EIO won %d, EPIPE won %d\n", iters, eio, epipe);
    fflush(stdout);
    th_baseline_check(base);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Supervisor                                                             */

START_TEST(test_supervisor_partial)
{
    th_baseline base = th_baseline_take();
    sem_t gate;
    sem_init(&gate, 0, 0);
    gated ok[3] = { { .gate = &gate }, { .gate = &gate }, { .gate = &gate } };
    int eio = EIO, enoent = ENOENT;
    tether_scope_opts o = { .policy = TETHER_POLICY_SUPERVISOR };
    tether_scope *s = open_scope(&o);
    tether_task *t[5];
    spawn_ok(s, gated_main, &ok[0], "ok-0", &t[0]);
    spawn_ok(s, return_int, &eio, "eio-1", &t[1]);
    int res = -1;
    ck_assert_int_eq(tether_task_wait(t[1], &res), 0); /* EIO is the first failure */
    ck_assert_int_eq(res, EIO);
    spawn_ok(s, gated_main, &ok[1], "ok-2", &t[2]);
    spawn_ok(s, return_int, &enoent, "enoent-3", &t[3]);
    spawn_ok(s, gated_main, &ok[2], "ok-4", &t[4]);
    ck_assert_int_eq(tether_task_wait(t[3], &res), 0);
    ck_assert_int_eq(res, ENOENT);
    /* The failures canceled nobody: release the others now. */
    for (int i = 0; i < 3; i++)
        sem_post(&gate);
    const int want[5] = { 0, EIO, 0, ENOENT, 0 };
    for (int i = 0; i < 5; i++) {
        res = -1;
        ck_assert_int_eq(tether_task_wait(t[i], &res), 0);
        ck_assert_int_eq(res, want[i]);
        ck_assert_int_eq(tether_token_cause(tether_task_token(t[i])), TETHER_CAUSE_NONE);
    }
    tether_result r = join_and_free(s);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(ok[i].check, 0);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_PARTIAL);
    ck_assert_int_eq(r.error, EIO);
    ck_assert_int_eq(r.error_task, 1);
    ck_assert_str_eq(r.error_task_name, "eio-1");
    ck_assert_int_eq(r.cause, TETHER_CAUSE_NONE);
    ck_assert_int_eq(r.cause_task, -1);
    ck_assert_uint_eq(r.spawned, 5);
    ck_assert_uint_eq(r.succeeded, 3);
    ck_assert_uint_eq(r.failed, 2);
    ck_assert_uint_eq(r.canceled, 0);
    ck_assert_int_eq(r.convergence_ns, 0);
    sem_destroy(&gate);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_supervisor_all_fail)
{
    th_baseline base = th_baseline_take();
    int errs[3] = { EPIPE, EIO, ENOENT };
    tether_scope_opts o = { .policy = TETHER_POLICY_SUPERVISOR };
    tether_scope *s = open_scope(&o);
    for (int i = 0; i < 3; i++) {
        tether_task *t;
        spawn_ok(s, return_int, &errs[i], i == 0 ? "first" : NULL, &t);
        int res;
        ck_assert_int_eq(tether_task_wait(t, &res), 0); /* one after the other */
        ck_assert_int_eq(res, errs[i]);
    }
    tether_result r = join_and_free(s);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_FAILED);
    ck_assert_int_eq(r.error, EPIPE);
    ck_assert_int_eq(r.error_task, 0);
    ck_assert_str_eq(r.error_task_name, "first");
    ck_assert_int_eq(r.cause, TETHER_CAUSE_NONE);
    ck_assert_uint_eq(r.failed, 3);
    ck_assert_uint_eq(r.succeeded, 0);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_supervisor_all_succeed)
{
    th_baseline base = th_baseline_take();
    tether_scope_opts o = { .policy = TETHER_POLICY_SUPERVISOR };
    tether_scope *s = open_scope(&o);
    for (int i = 0; i < 4; i++)
        spawn_ok(s, return_zero, NULL, NULL, NULL);
    tether_result r = join_and_free(s);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_int_eq(r.error, 0);
    ck_assert_int_eq(r.error_task, -1);
    ck_assert_str_eq(r.error_task_name, "");
    ck_assert_int_eq(r.cause, TETHER_CAUSE_NONE);
    ck_assert_int_eq(r.cause_task, -1);
    ck_assert_int_eq(r.winner, -1);
    ck_assert_uint_eq(r.spawned, 4);
    ck_assert_uint_eq(r.succeeded, 4);
    ck_assert_int_eq(r.convergence_ns, 0);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_supervisor_deadline_keeps_counts)
{
    th_baseline base = th_baseline_take();
    int eio = EIO;
    blocker b[2];
    blockers_init(b, 2, NULL);
    const int64_t timeout = th_bound_ns(100); /* room to run three children first */
    tether_scope_opts o = { .policy = TETHER_POLICY_SUPERVISOR, .timeout_ns = timeout };
    tether_time_t t0 = tether_now();
    tether_scope *s = open_scope(&o);
    tether_task *t;
    for (int i = 0; i < 2; i++) {
        spawn_ok(s, return_zero, NULL, NULL, &t);
        ck_assert_int_eq(tether_task_wait(t, NULL), 0);
    }
    spawn_ok(s, return_int, &eio, NULL, &t);
    ck_assert_int_eq(tether_task_wait(t, NULL), 0);
    spawn_ok(s, blocker_main, &b[0], NULL, NULL);
    spawn_ok(s, blocker_main, &b[1], NULL, NULL);
    tether_result r = join_and_free(s);
    ck_assert_int_ge(tether_now() - t0, timeout);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_DEADLINE_EXCEEDED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_DEADLINE);
    ck_assert_uint_eq(r.spawned, 5);
    ck_assert_uint_eq(r.succeeded, 2);
    ck_assert_uint_eq(r.failed, 1);
    ck_assert_uint_eq(r.canceled, 2);
    th_baseline_check(base);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* First-success                                                          */

typedef struct racer {
    sem_t *ready;
    blocker *others;
    int nothers;
    int ret;
} racer;

static int winner_main(void *arg)
{
    racer *w = arg;
    wait_blocked(w->ready, w->others, w->nothers);
    return w->ret;
}

START_TEST(test_first_success_winner_cancels_rest)
{
    th_baseline base = th_baseline_take();
    sem_t ready;
    sem_init(&ready, 0, 0);
    blocker b[3];
    blockers_init(b, 3, &ready);
    racer w = { .ready = &ready, .others = b, .nothers = 3, .ret = 0 };
    int eio = EIO;
    tether_scope_opts o = { .policy = TETHER_POLICY_FIRST_SUCCESS };
    tether_scope *s = open_scope(&o);
    tether_task *f;
    spawn_ok(s, return_int, &eio, "fails", &f); /* a failure cancels nobody here */
    ck_assert_int_eq(tether_task_wait(f, NULL), 0);
    spawn_ok(s, blocker_main, &b[0], NULL, NULL);
    spawn_ok(s, blocker_main, &b[1], NULL, NULL);
    spawn_ok(s, winner_main, &w, "winner", NULL); /* index 3 */
    spawn_ok(s, blocker_main, &b[2], NULL, NULL);
    tether_result r = join_and_free(s);

    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_int_eq(r.winner, 3);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_SIBLING_SUCCEEDED);
    ck_assert_int_eq(r.cause_task, 3);
    ck_assert_int_eq(r.error, 0);
    ck_assert_int_eq(r.error_task, -1);
    ck_assert_uint_eq(r.spawned, 5);
    ck_assert_uint_eq(r.succeeded, 1);
    ck_assert_uint_eq(r.failed, 1);
    ck_assert_uint_eq(r.canceled, 3);
    ck_assert_int_gt(r.convergence_ns, 0);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(b[i].err, ECANCELED);
        ck_assert_int_eq(b[i].cause, TETHER_CAUSE_PARENT);
        ck_assert_int_eq(b[i].root_cause, TETHER_CAUSE_SIBLING_SUCCEEDED);
    }
    sem_destroy(&ready);
    th_baseline_check(base);
}
END_TEST

/* tether_token_error: non-zero exactly when canceled; ECANCELED for a
 * first-success loser (no child error triggered it). */
START_TEST(test_first_success_losers_token_error_is_ecanceled)
{
    th_baseline base = th_baseline_take();
    sem_t ready;
    sem_init(&ready, 0, 0);
    blocker b;
    blockers_init(&b, 1, &ready);
    racer w = { .ready = &ready, .others = &b, .nothers = 1, .ret = 0 };
    tether_scope_opts o = { .policy = TETHER_POLICY_FIRST_SUCCESS };
    tether_scope *s = open_scope(&o);
    spawn_ok(s, blocker_main, &b, NULL, NULL);
    spawn_ok(s, winner_main, &w, NULL, NULL);
    tether_result r = join_and_free(s);
    ck_assert_int_eq(r.winner, 1);
    ck_assert_int_eq(b.err, ECANCELED);
    ck_assert_int_eq(b.root_cause, TETHER_CAUSE_SIBLING_SUCCEEDED);
    ck_assert_int_eq(b.token_error, ECANCELED);
    sem_destroy(&ready);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_first_success_all_fail)
{
    th_baseline base = th_baseline_take();
    int errs[3] = { ENOENT, EIO, EPIPE };
    tether_scope_opts o = { .policy = TETHER_POLICY_FIRST_SUCCESS };
    tether_scope *s = open_scope(&o);
    for (int i = 0; i < 3; i++) {
        tether_task *t;
        spawn_ok(s, return_int, &errs[i], i == 0 ? "first" : NULL, &t);
        ck_assert_int_eq(tether_task_wait(t, NULL), 0);
    }
    tether_result r = join_and_free(s);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_FAILED);
    ck_assert_int_eq(r.error, ENOENT);
    ck_assert_int_eq(r.error_task, 0);
    ck_assert_str_eq(r.error_task_name, "first");
    ck_assert_int_eq(r.winner, -1);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_NONE);
    ck_assert_uint_eq(r.failed, 3);
    th_baseline_check(base);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("scope_policy");
    TCase *tc;

    tc = tcase_create("fail_fast");
    tcase_set_timeout(tc, th_timeout_s(30) * stress(1)); /* iteration counts scale too */
    tcase_add_test(tc, test_fail_fast_cancels_blocked_siblings);
    tcase_add_test(tc, test_first_error_wins_when_two_fail_together);
    suite_add_tcase(s, tc);

    tc = tcase_create("policies");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, test_supervisor_partial);
    tcase_add_test(tc, test_supervisor_all_fail);
    tcase_add_test(tc, test_supervisor_all_succeed);
    tcase_add_test(tc, test_supervisor_deadline_keeps_counts);
    tcase_add_test(tc, test_first_success_winner_cancels_rest);
    tcase_add_test(tc, test_first_success_losers_token_error_is_ecanceled);
    tcase_add_test(tc, test_first_success_all_fail);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
