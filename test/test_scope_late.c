/*
 * Late successes: a foreground child that returns 0 after its token was
 * canceled from above is counted in late_succeeded (and still in succeeded)
 * and named by tether_task_late; it never wins a first-success scope and
 * never changes the outcome. One test per cause, and the cases that are not
 * late: the child's own spawn timeout, background children halted at the
 * end, children that returned before the cancel.
 */
#define _GNU_SOURCE
#include "scope_fixtures.h"

/* A child that "commits anyway": it blocks until canceled (announcing itself
 * first), records what the wait returned, then returns 0 as if the effect it
 * was waiting for had happened. */
typedef struct committer {
    sem_t *ready;
    pid_t tid;
    int err;            /* what the canceled wait returned */
    tether_cause cause; /* its token's cause when it returned */
} committer;

static int committer_main(void *arg)
{
    committer *c = arg;
    c->tid = th_gettid();
    if (c->ready)
        sem_post(c->ready);
    c->err = tether_sleep_for(DAY) < 0 ? errno : NOT_CANCELED;
    c->cause = tether_token_cause(tether_current());
    return 0;
}

/* Wait until n committers are asleep in their wait. */
static void wait_committers(sem_t *ready, committer *c, int n)
{
    for (int i = 0; i < n; i++)
        sem_wait_ok(ready);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(th_wait_blocked(c[i].tid), 0);
}

/* Wait for the child, then ask whether its success was late (before join,
 * which ends the handle). */
static bool waited_late(tether_task *t, int want_rc)
{
    int rc = -1;
    ck_assert_int_eq(tether_task_wait(t, &rc), 0);
    ck_assert_int_eq(rc, want_rc);
    return tether_task_late(t);
}

START_TEST(test_late_after_deadline)
{
    th_baseline base = th_baseline_take();
    committer c = { 0 };
    tether_scope_opts o = { .timeout_ns = tether_ms(50), .name = "late" };
    tether_scope *s = open_scope(&o);
    tether_task *t;
    spawn_ok(s, committer_main, &c, "commit", &t);
    ck_assert(waited_late(t, 0));
    tether_result r = join_and_free(s);

    ck_assert_int_eq(c.err, ETIMEDOUT);
    ck_assert_int_eq(c.cause, TETHER_CAUSE_PARENT);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_DEADLINE_EXCEEDED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(r.error, ETIMEDOUT);
    ck_assert_uint_eq(r.spawned, 1);
    ck_assert_uint_eq(r.succeeded, 1);
    ck_assert_uint_eq(r.late_succeeded, 1);
    ck_assert_uint_eq(r.canceled, 0);
    ck_assert_uint_eq(r.failed, 0);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_late_after_explicit_cancel)
{
    th_baseline base = th_baseline_take();
    sem_t ready;
    sem_init(&ready, 0, 0);
    committer c[2] = { { .ready = &ready }, { .ready = &ready } };
    tether_scope *s = open_scope(NULL);
    tether_task *t[2];
    spawn_ok(s, committer_main, &c[0], "a", &t[0]);
    spawn_ok(s, committer_main, &c[1], "b", &t[1]);
    wait_committers(&ready, c, 2);
    ck_assert(!tether_task_late(t[0])); /* still running: not (yet) late */
    ck_assert_int_eq(tether_scope_cancel(s), 0);
    ck_assert(waited_late(t[0], 0));
    ck_assert(waited_late(t[1], 0));
    tether_result r = join_and_free(s);
    sem_destroy(&ready);

    ck_assert_int_eq(c[0].err, ECANCELED);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_EXPLICIT);
    ck_assert_uint_eq(r.succeeded, 2);
    ck_assert_uint_eq(r.late_succeeded, 2);
    th_baseline_check(base);
}
END_TEST

/* Canceled through an ancestor token (the scope's parent): late too. */
START_TEST(test_late_after_parent_cancel)
{
    th_baseline base = th_baseline_take();
    sem_t ready;
    sem_init(&ready, 0, 0);
    committer c = { .ready = &ready };
    tether_token *parent = new_token(NULL, TETHER_NEVER);
    tether_scope_opts o = { .parent = parent };
    tether_scope *s = open_scope(&o);
    spawn_ok(s, committer_main, &c, NULL, NULL);
    wait_committers(&ready, &c, 1);
    ck_assert_int_eq(tether_token_cancel(parent, EPIPE), 0);
    tether_result r = join_and_free(s);
    ck_assert_int_eq(tether_token_free(parent), 0);
    sem_destroy(&ready);

    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_PARENT);
    ck_assert_int_eq(r.error, EPIPE); /* the ancestor's cancel error */
    ck_assert_uint_eq(r.succeeded, 1);
    ck_assert_uint_eq(r.late_succeeded, 1);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_late_after_sibling_failure)
{
    th_baseline base = th_baseline_take();
    sem_t ready;
    sem_init(&ready, 0, 0);
    committer c = { .ready = &ready };
    int eio = EIO;
    tether_scope *s = open_scope(NULL); /* fail-fast */
    tether_task *t;
    spawn_ok(s, committer_main, &c, "commit", &t);
    wait_committers(&ready, &c, 1);
    spawn_ok(s, return_int, &eio, "fails", NULL);
    ck_assert(waited_late(t, 0));
    tether_result r = join_and_free(s);
    sem_destroy(&ready);

    ck_assert_int_eq(c.err, ECANCELED);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_FAILED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_SIBLING_FAILED);
    ck_assert_int_eq(r.error, EIO);
    ck_assert_int_eq(r.error_task, 1);
    ck_assert_uint_eq(r.succeeded, 1);
    ck_assert_uint_eq(r.late_succeeded, 1);
    ck_assert_uint_eq(r.failed, 1);
    th_baseline_check(base);
}
END_TEST

/* First-success: the winner is on time; one loser commits anyway (late),
 * one stops as asked (canceled). */
START_TEST(test_late_first_success_losers)
{
    th_baseline base = th_baseline_take();
    sem_t ready;
    sem_init(&ready, 0, 0);
    committer c = { .ready = &ready };
    blocker b[1];
    blockers_init(b, 1, &ready);
    tether_scope_opts o = { .policy = TETHER_POLICY_FIRST_SUCCESS };
    tether_scope *s = open_scope(&o);
    tether_task *late, *stopped, *winner;
    spawn_ok(s, committer_main, &c, "loser_commits", &late);
    spawn_ok(s, blocker_main, &b[0], "loser_stops", &stopped);
    for (int i = 0; i < 2; i++)
        sem_wait_ok(&ready);
    ck_assert_int_eq(th_wait_blocked(c.tid), 0);
    ck_assert_int_eq(th_wait_blocked(b[0].tid), 0);
    spawn_ok(s, return_zero, NULL, "winner", &winner);
    ck_assert(!waited_late(winner, 0));
    ck_assert(waited_late(late, 0));
    ck_assert(!waited_late(stopped, ECANCELED));
    tether_result r = join_and_free(s);
    sem_destroy(&ready);

    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_int_eq(r.winner, 2);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_SIBLING_SUCCEEDED);
    ck_assert_uint_eq(r.succeeded, 2);
    ck_assert_uint_eq(r.late_succeeded, 1);
    ck_assert_uint_eq(r.canceled, 1);
    th_baseline_check(base);
}
END_TEST

/* First-success whose deadline passed before anyone won: a success after
 * that is late, does not win, and the scope stays deadline_exceeded. */
START_TEST(test_late_first_success_never_wins)
{
    th_baseline base = th_baseline_take();
    committer c = { 0 };
    tether_scope_opts o = { .policy = TETHER_POLICY_FIRST_SUCCESS, .timeout_ns = tether_ms(30) };
    tether_scope *s = open_scope(&o);
    spawn_ok(s, committer_main, &c, NULL, NULL);
    tether_result r = join_and_free(s);

    ck_assert_int_eq(c.err, ETIMEDOUT);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_DEADLINE_EXCEEDED);
    ck_assert_int_eq(r.winner, -1);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_DEADLINE);
    ck_assert_uint_eq(r.succeeded, 1);
    ck_assert_uint_eq(r.late_succeeded, 1);
    th_baseline_check(base);
}
END_TEST

/* tether_task_halt: the halter gets 0 back and the child is late. */
START_TEST(test_late_after_halt)
{
    th_baseline base = th_baseline_take();
    sem_t ready;
    sem_init(&ready, 0, 0);
    committer c = { .ready = &ready };
    tether_scope *s = open_scope(NULL);
    tether_task *t;
    spawn_ok(s, committer_main, &c, NULL, &t);
    wait_committers(&ready, &c, 1);
    int rc = -1;
    ck_assert_int_eq(tether_task_halt(t, &rc), 0);
    ck_assert_int_eq(rc, 0);
    ck_assert(tether_task_late(t));
    tether_result r = join_and_free(s);
    sem_destroy(&ready);

    ck_assert_int_eq(c.cause, TETHER_CAUSE_HALTED);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_uint_eq(r.succeeded, 1);
    ck_assert_uint_eq(r.late_succeeded, 1);
    th_baseline_check(base);
}
END_TEST

/* tether_scope_run: a failing body cancels the scope; a child that then
 * commits is late. */
static int body_fails_after_commit_blocks(tether_scope *s, void *arg)
{
    committer *c = arg;
    if (tether_spawn(s, committer_main, c, NULL, NULL) != 0)
        return ENOTRECOVERABLE;
    sem_wait_ok(c->ready);
    return EIO;
}

START_TEST(test_late_after_body_failure)
{
    th_baseline base = th_baseline_take();
    sem_t ready;
    sem_init(&ready, 0, 0);
    committer c = { .ready = &ready };
    tether_result r;
    ck_assert_int_eq(tether_scope_run(NULL, body_fails_after_commit_blocks, &c, &r), 0);
    sem_destroy(&ready);

    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_FAILED);
    ck_assert_int_eq(r.error, EIO);
    ck_assert_int_eq(c.cause, TETHER_CAUSE_PARENT);
    ck_assert_uint_eq(r.succeeded, 1);
    ck_assert_uint_eq(r.late_succeeded, 1);
    th_baseline_check(base);
}
END_TEST

/* Not late: the child's own spawn timeout. Nothing above gave up on it. */
START_TEST(test_own_timeout_is_not_late)
{
    th_baseline base = th_baseline_take();
    committer c = { 0 };
    tether_scope *s = open_scope(NULL);
    tether_spawn_opts so = { .timeout_ns = tether_ms(30) };
    tether_task *t;
    ck_assert_int_eq(tether_spawn(s, committer_main, &c, &so, &t), 0);
    ck_assert(!waited_late(t, 0));
    tether_result r = join_and_free(s);

    ck_assert_int_eq(c.err, ETIMEDOUT);
    ck_assert_int_eq(c.cause, TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_uint_eq(r.succeeded, 1);
    ck_assert_uint_eq(r.late_succeeded, 0);
    th_baseline_check(base);
}
END_TEST

/* Not late: background children halted at the end (their normal end), and
 * background children halted with the canceled scope. */
START_TEST(test_background_is_never_late)
{
    th_baseline base = th_baseline_take();
    for (int canceled = 0; canceled < 2; canceled++) {
        sem_t ready;
        sem_init(&ready, 0, 0);
        committer c[2] = { { .ready = &ready }, { .ready = &ready } };
        tether_scope *s = open_scope(NULL);
        tether_spawn_opts bo = { .name = "bg", .background = true };
        ck_assert_int_eq(tether_spawn(s, committer_main, &c[0], &bo, NULL), 0);
        if (canceled) {
            /* Both block; the scope is canceled: only the foreground
             * child's 0 is late. */
            spawn_ok(s, committer_main, &c[1], "fg", NULL);
            wait_committers(&ready, c, 2);
            ck_assert_int_eq(tether_scope_cancel(s), 0);
        } else {
            /* The foreground finishes; join halts the background. */
            wait_committers(&ready, c, 1);
            spawn_ok(s, return_zero, NULL, "fg", NULL);
        }
        tether_result r = join_and_free(s);
        sem_destroy(&ready);
        ck_assert_uint_eq(r.succeeded, 2);
        if (canceled) {
            ck_assert_int_eq(c[0].cause, TETHER_CAUSE_PARENT);
            ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
            ck_assert_uint_eq(r.late_succeeded, 1);
        } else {
            ck_assert_int_eq(c[0].err, ECANCELED);
            ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
            ck_assert_int_eq(r.cause, TETHER_CAUSE_SCOPE_FINISHED);
            ck_assert_uint_eq(r.late_succeeded, 0);
        }
    }
    th_baseline_check(base);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("scope_late");
    TCase *tc;

    tc = tcase_create("late");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, test_late_after_deadline);
    tcase_add_test(tc, test_late_after_explicit_cancel);
    tcase_add_test(tc, test_late_after_parent_cancel);
    tcase_add_test(tc, test_late_after_sibling_failure);
    tcase_add_test(tc, test_late_first_success_losers);
    tcase_add_test(tc, test_late_first_success_never_wins);
    tcase_add_test(tc, test_late_after_halt);
    tcase_add_test(tc, test_late_after_body_failure);
    tcase_add_test(tc, test_own_timeout_is_not_late);
    tcase_add_test(tc, test_background_is_never_late);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
