/*
 * Cancellation that reaches a scope from outside: its deadline, and the
 * parent token it was opened under.
 */
#define _GNU_SOURCE
#include "scope_fixtures.h"

/* ---------------------------------------------------------------------- */
/* Deadlines                                                              */

START_TEST(test_scope_timeout_cancels_blocked_children)
{
    th_baseline base = th_baseline_take();
    enum { NB = 4 };
    blocker b[NB];
    blockers_init(b, NB, NULL);
    tether_scope_opts o = { .timeout_ns = tether_ms(100) };
    tether_time_t t0 = tether_now();
    tether_scope *s = open_scope(&o);
    for (int i = 0; i < NB; i++)
        spawn_ok(s, blocker_main, &b[i], NULL, NULL);
    tether_result r = join_and_free(s);
    int64_t elapsed = tether_now() - t0;

    ck_assert_int_ge(elapsed, tether_ms(100));
    ck_assert_int_le(elapsed, tether_ms(100) + th_bound_ns(1000));
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_DEADLINE_EXCEEDED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(r.error_task, -1);
    ck_assert_int_eq(r.cause_task, -1);
    ck_assert_uint_eq(r.spawned, NB);
    ck_assert_uint_eq(r.succeeded, 0);
    ck_assert_uint_eq(r.failed, 0);
    ck_assert_uint_eq(r.canceled, NB);
    for (int i = 0; i < NB; i++) {
        ck_assert_int_eq(b[i].err, ETIMEDOUT);
        ck_assert_int_ge(b[i].woke_at - t0, tether_ms(100));
        ck_assert_int_eq(b[i].root_cause, TETHER_CAUSE_DEADLINE);
        ck_assert(atomic_load(&b[i].cleaned));
    }
    th_baseline_check(base); /* the pipes and the tokens' eventfds are closed */
}
END_TEST

/* Several children and the joiner all see the scope's deadline pass at the
 * same instant. Whoever loses the race to cancel the scope must still see
 * its own token canceled when its primitive returns ETIMEDOUT, so that the
 * child counts as canceled (the scope's deadline), never as failed. */
START_TEST(test_scope_deadline_children_never_counted_failed)
{
    th_baseline base = th_baseline_take();
    enum { NB = 3 };
    int iters = stress(300);
    for (int i = 0; i < iters; i++) {
        blocker b[NB];
        blockers_init(b, NB, NULL);
        for (int k = 0; k < NB; k++)
            b[k].kind = BLOCK_SLEEP;
        tether_scope_opts o = { .timeout_ns = tether_ms(2) };
        tether_scope *s = open_scope(&o);
        unsigned n = 0;
        for (int k = 0; k < NB; k++) {
            /* On a slow machine the deadline may pass while spawning. */
            int rc = tether_spawn(s, blocker_main, &b[n], NULL, NULL);
            ck_assert(rc == 0 || rc == ETIMEDOUT);
            n += rc == 0;
        }
        tether_result r = join_and_free(s);
        ck_assert_int_eq(r.outcome, TETHER_OUTCOME_DEADLINE_EXCEEDED);
        ck_assert_msg(r.failed == 0 && r.canceled == n,
                      "iteration %d: failed %u canceled %u (scope deadline counted as failure)", i,
                      r.failed, r.canceled);
        for (unsigned k = 0; k < n; k++) {
            ck_assert_int_eq(b[k].err, ETIMEDOUT);
            ck_assert_msg(b[k].cause == TETHER_CAUSE_PARENT,
                          "iteration %d child %u: ETIMEDOUT but its token's cause is %s", i, k,
                          tether_cause_name(b[k].cause));
        }
    }
    th_baseline_check(base);
}
END_TEST

typedef struct slow_child {
    int64_t ignore_for;    /* keeps running this long after seeing the cancel */
    tether_time_t seen_at; /* when tether_check() first reported it */
    int seen_err;
    tether_time_t returned_at;
    atomic_bool cleaned;
} slow_child;

/* A CPU loop that checks tether_check() about every millisecond and ignores
 * the cancellation for a while. */
static int slow_main(void *arg)
{
    slow_child *c = arg;
    tether_time_t next_check = tether_now();
    for (;;) {
        tether_time_t now = tether_now();
        if (now >= next_check) {
            next_check = now + tether_ms(1);
            int e = tether_check();
            if (e && !c->seen_err) {
                c->seen_err = e;
                c->seen_at = tether_now();
            }
        }
        if (c->seen_err && now - c->seen_at >= c->ignore_for)
            break;
        sched_yield();
    }
    atomic_store(&c->cleaned, true);
    c->returned_at = tether_now();
    return c->seen_err;
}

START_TEST(test_slow_child_delays_join_not_siblings)
{
    th_baseline base = th_baseline_take();
    const int64_t timeout = th_bound_ns(100); /* room to spawn first */
    slow_child slow = { .ignore_for = th_bound_ns(200) };
    blocker b[2];
    blockers_init(b, 2, NULL);
    tether_scope_opts o = { .timeout_ns = timeout };
    tether_time_t t0 = tether_now();
    tether_scope *s = open_scope(&o);
    spawn_ok(s, slow_main, &slow, "slow", NULL);
    spawn_ok(s, blocker_main, &b[0], "sleeper", NULL);
    spawn_ok(s, blocker_main, &b[1], "reader", NULL);
    tether_result r = join_and_free(s);
    tether_time_t joined = tether_now();

    /* The deadline never fires early. */
    ck_assert_int_eq(slow.seen_err, ETIMEDOUT);
    ck_assert_int_ge(slow.seen_at - t0, timeout);
    /* Join waited for the slow child. */
    ck_assert(atomic_load(&slow.cleaned));
    ck_assert_int_ge(joined, slow.returned_at);
    ck_assert_int_ge(joined - slow.seen_at, slow.ignore_for);
    /* The children blocked in tether primitives woke at the deadline, not
     * when the slow child let go. */
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(b[i].err, ETIMEDOUT);
        ck_assert_int_ge(b[i].woke_at - t0, timeout);
        ck_assert_int_lt(b[i].woke_at, slow.returned_at);
        ck_assert(atomic_load(&b[i].cleaned));
    }
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_DEADLINE_EXCEEDED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_DEADLINE);
    ck_assert_uint_eq(r.canceled, 3);
    ck_assert_uint_eq(r.failed, 0);
    ck_assert_int_ge(r.convergence_ns, slow.ignore_for);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_parent_deadline_exceeds_scope)
{
    th_baseline base = th_baseline_take();
    tether_token *parent;
    const int64_t timeout = th_bound_ns(100); /* room to spawn first */
    tether_time_t t0 = tether_now();
    ck_assert_int_eq(tether_token_new(&parent, NULL, tether_deadline_after(timeout)), 0);
    blocker b[2];
    blockers_init(b, 2, NULL);
    tether_scope_opts o = { .parent = parent };
    tether_scope *s = open_scope(&o);
    ck_assert_int_eq(tether_token_deadline(tether_scope_token(s)), tether_token_deadline(parent));
    spawn_ok(s, blocker_main, &b[0], NULL, NULL);
    spawn_ok(s, blocker_main, &b[1], NULL, NULL);
    tether_result r = join_and_free(s);
    int64_t elapsed = tether_now() - t0;

    ck_assert_int_ge(elapsed, timeout);
    ck_assert_int_le(elapsed, timeout + th_bound_ns(1000));
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_DEADLINE_EXCEEDED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_PARENT);
    ck_assert_uint_eq(r.canceled, 2);
    ck_assert_uint_eq(r.failed, 0);
    ck_assert_int_eq(tether_token_cause(parent), TETHER_CAUSE_DEADLINE);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(b[i].err, ETIMEDOUT);
        ck_assert_int_eq(b[i].root_cause, TETHER_CAUSE_DEADLINE);
    }
    ck_assert_int_eq(tether_token_free(parent), 0);
    th_baseline_check(base);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Parent tokens                                                          */

START_TEST(test_parent_token_cancel)
{
    th_baseline base = th_baseline_take();
    sem_t ready;
    sem_init(&ready, 0, 0);
    blocker b[2];
    blockers_init(b, 2, &ready);
    tether_token *parent;
    ck_assert_int_eq(tether_token_new(&parent, NULL, TETHER_NEVER), 0);
    tether_scope_opts o = { .parent = parent };
    tether_scope *s = open_scope(&o);
    spawn_ok(s, blocker_main, &b[0], NULL, NULL);
    spawn_ok(s, blocker_main, &b[1], NULL, NULL);
    wait_blocked(&ready, b, 2);
    ck_assert_int_eq(tether_token_cancel(parent, ECONNRESET), 0);
    tether_result r = join_and_free(s);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_PARENT);
    ck_assert_int_eq(r.error_task, -1);
    ck_assert_uint_eq(r.canceled, 2);
    ck_assert_uint_eq(r.failed, 0);
    ck_assert_int_gt(r.convergence_ns, 0);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(b[i].err, ECANCELED);
        ck_assert_int_eq(b[i].root_cause, TETHER_CAUSE_EXPLICIT);
        ck_assert_int_eq(b[i].token_error, ECONNRESET);
    }
    ck_assert_int_eq(tether_token_free(parent), 0);

    /* Opened under an already-canceled parent: born canceled. */
    ck_assert_int_eq(tether_token_new(&parent, NULL, TETHER_NEVER), 0);
    ck_assert_int_eq(tether_token_cancel(parent, 0), 0);
    o.parent = parent;
    s = open_scope(&o);
    ck_assert_int_eq(tether_spawn(s, return_zero, NULL, NULL, NULL), ECANCELED);
    r = join_and_free(s);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_PARENT);
    ck_assert_int_eq(tether_token_free(parent), 0);
    sem_destroy(&ready);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_current_token_is_default_parent_unless_detached)
{
    th_baseline base = th_baseline_take();
    sem_t gate;
    sem_init(&gate, 0, 0);
    tether_token *cur;
    ck_assert_int_eq(tether_token_new(&cur, NULL, TETHER_NEVER), 0);
    ck_assert_int_eq(tether_token_enter(cur), 0);
    tether_scope *under = open_scope(NULL);
    tether_scope_opts det = { .detached = true };
    tether_scope *detached = open_scope(&det);
    tether_token *other;
    ck_assert_int_eq(tether_token_new(&other, NULL, TETHER_NEVER), 0);
    tether_scope_opts both = { .detached = true, .parent = other };
    tether_scope *detached_too = open_scope(&both); /* detached wins over parent */
    ck_assert_int_eq(tether_token_leave(cur), 0);

    blocker b;
    blockers_init(&b, 1, NULL);
    gated g = { .gate = &gate };
    spawn_ok(under, blocker_main, &b, NULL, NULL);
    spawn_ok(detached, gated_main, &g, NULL, NULL);
    ck_assert_int_eq(tether_token_cancel(cur, 0), 0);
    ck_assert_int_eq(tether_token_cancel(other, 0), 0);
    ck_assert_int_eq(tether_token_cause(tether_scope_token(under)), TETHER_CAUSE_PARENT);
    ck_assert_int_eq(tether_token_cause(tether_scope_token(detached)), TETHER_CAUSE_NONE);
    ck_assert_int_eq(tether_token_cause(tether_scope_token(detached_too)), TETHER_CAUSE_NONE);
    sem_post(&gate);

    tether_result r = join_and_free(under);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_PARENT);
    ck_assert_int_eq(b.err, ECANCELED);
    r = join_and_free(detached);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_int_eq(g.check, 0);
    r = join_and_free(detached_too);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_int_eq(tether_token_free(cur), 0);
    ck_assert_int_eq(tether_token_free(other), 0);
    sem_destroy(&gate);
    th_baseline_check(base);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("scope_cancel");
    TCase *tc;

    tc = tcase_create("deadline");
    tcase_set_timeout(tc, th_timeout_s(20) * stress(1)); /* iteration counts scale too */
    tcase_add_test(tc, test_scope_timeout_cancels_blocked_children);
    tcase_add_test(tc, test_scope_deadline_children_never_counted_failed);
    tcase_add_test(tc, test_slow_child_delays_join_not_siblings);
    tcase_add_test(tc, test_parent_deadline_exceeds_scope);
    suite_add_tcase(s, tc);

    tc = tcase_create("parent");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, test_parent_token_cancel);
    tcase_add_test(tc, test_current_token_is_default_parent_unless_detached);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
