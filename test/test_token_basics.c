/*
 * Tokens: create and free, the tree's shape, and the current token (enter,
 * leave, nesting, per thread).
 */
#define _GNU_SOURCE
#include "token_fixtures.h"

/* ================================================================= basics */

START_TEST(new_free_root)
{
    tether_token *t = new_token(NULL, TETHER_NEVER);
    assert_live(t);
    ck_assert_int_eq(tether_token_deadline(t), TETHER_NEVER);
    free_token(t);

    /* A root with a deadline keeps it. */
    tether_time_t d = tether_deadline_after(tether_sec(100));
    t = new_token(NULL, d);
    ck_assert_int_eq(tether_token_deadline(t), d);
    assert_live(t);
    free_token(t);
}
END_TEST

static void noop_cb(void *arg)
{
    (void)arg;
}

START_TEST(bad_input)
{
    ck_assert_int_eq(tether_token_new(NULL, NULL, TETHER_NEVER), EINVAL);
    ck_assert_int_eq(tether_token_free(NULL), EINVAL);
    ck_assert_int_eq(tether_token_cancel(NULL, 0), EINVAL);
    ck_assert_int_eq(tether_token_cancel(NULL, 42), EINVAL);
    ck_assert_int_eq(tether_token_check(NULL), EINVAL);
    ck_assert_int_eq(tether_token_cause(NULL), TETHER_CAUSE_NONE);
    ck_assert_int_eq(tether_token_root_cause(NULL), TETHER_CAUSE_NONE);
    ck_assert_int_eq(tether_token_error(NULL), 0);
    ck_assert_int_eq(tether_token_deadline(NULL), TETHER_NEVER);

    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_callback *cb = NULL;
    ck_assert_int_eq(tether_token_on_cancel(NULL, noop_cb, NULL, &cb), EINVAL);
    ck_assert_int_eq(tether_token_on_cancel(t, NULL, NULL, &cb), EINVAL);
    ck_assert_int_eq(tether_token_on_cancel(t, noop_cb, NULL, NULL), EINVAL);
    ck_assert_ptr_null(cb);
    bool ran = true;
    ck_assert_int_eq(tether_token_off_cancel(NULL, &ran), EINVAL);
    ck_assert_int_eq(tether_token_off_cancel(NULL, NULL), EINVAL);

    ck_assert_int_eq(tether_token_enter(NULL), EINVAL);
    ck_assert_int_eq(tether_token_leave(NULL), EINVAL);
    ck_assert_ptr_null(tether_current());

    /* None of that touched t. */
    assert_live(t);
    free_token(t);
}
END_TEST

START_TEST(free_with_live_child_is_ebusy)
{
    tether_token *root = new_token(NULL, TETHER_NEVER);
    tether_token *child = new_token(root, TETHER_NEVER);
    tether_token *grand = new_token(child, TETHER_NEVER);

    ck_assert_int_eq(tether_token_free(root), EBUSY);
    ck_assert_int_eq(tether_token_free(child), EBUSY);
    assert_live(root);
    assert_live(child);
    assert_live(grand);

    /* The links are intact: a new sibling joins, and canceling the root
     * still reaches every descendant. */
    tether_token *sib = new_token(root, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(root, 42), 0);
    ck_assert_int_eq(tether_token_cause(child), TETHER_CAUSE_PARENT);
    ck_assert_int_eq(tether_token_cause(grand), TETHER_CAUSE_PARENT);
    ck_assert_int_eq(tether_token_cause(sib), TETHER_CAUSE_PARENT);
    ck_assert_int_eq(tether_token_error(grand), 42);

    /* Still busy while any child remains, canceled or not. */
    free_token(grand);
    ck_assert_int_eq(tether_token_free(root), EBUSY);
    free_token(child);
    ck_assert_int_eq(tether_token_free(root), EBUSY);
    free_token(sib);
    free_token(root);
}
END_TEST

struct enter_arg {
    tether_token *t;
    pthread_barrier_t *bar;
    int enter_rc, leave_rc;
};

static void *enter_and_hold(void *p)
{
    struct enter_arg *a = p;
    a->enter_rc = tether_token_enter(a->t);
    pthread_barrier_wait(a->bar); /* entered */
    pthread_barrier_wait(a->bar); /* main tried to free */
    a->leave_rc = tether_token_leave(a->t);
    return NULL;
}

START_TEST(free_while_entered_is_ebusy)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);

    /* Entered by this thread. */
    ck_assert_int_eq(tether_token_enter(t), 0);
    ck_assert_int_eq(tether_token_free(t), EBUSY);
    ck_assert_ptr_eq(tether_current(), t);
    ck_assert_int_eq(tether_token_enter(t), 0); /* twice */
    ck_assert_int_eq(tether_token_leave(t), 0);
    ck_assert_int_eq(tether_token_free(t), EBUSY);
    ck_assert_int_eq(tether_token_leave(t), 0);
    ck_assert_ptr_null(tether_current());

    /* Entered by another thread. */
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, 2);
    struct enter_arg a = { .t = t, .bar = &bar };
    pthread_t th = thread_start(enter_and_hold, &a);
    pthread_barrier_wait(&bar);
    ck_assert_int_eq(a.enter_rc, 0);
    ck_assert_int_eq(tether_token_free(t), EBUSY);
    assert_live(t);
    pthread_barrier_wait(&bar);
    thread_join(th);
    ck_assert_int_eq(a.leave_rc, 0);
    pthread_barrier_destroy(&bar);

    free_token(t);
    th_baseline_check(b);
}
END_TEST

/* ========================================================= current token */

START_TEST(current_is_null_by_default)
{
    ck_assert_ptr_null(tether_current());
    ck_assert_int_eq(tether_check(), 0);
    /* Nothing entered: leave is EPERM. */
    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_leave(t), EPERM);
    ck_assert_ptr_null(tether_current());
    free_token(t); /* the EPERM did not unbalance its entry count */
}
END_TEST

START_TEST(enter_leave_nesting_deep)
{
    enum { DEPTH = 40 };
    tether_token *t[DEPTH];
    t[0] = new_token(NULL, TETHER_NEVER);
    for (int i = 1; i < DEPTH; i++)
        t[i] = new_token(i % 3 ? t[i - 1] : NULL, TETHER_NEVER);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < DEPTH; i++) {
            ck_assert_int_eq(tether_token_enter(t[i]), 0);
            ck_assert_ptr_eq(tether_current(), t[i]);
        }
        for (int i = DEPTH - 1; i >= 0; i--) {
            ck_assert_ptr_eq(tether_current(), t[i]);
            ck_assert_int_eq(tether_token_free(t[i]), EBUSY);
            ck_assert_int_eq(tether_token_leave(t[i]), 0);
            ck_assert_ptr_eq(tether_current(), i ? t[i - 1] : NULL);
        }
        ck_assert_ptr_null(tether_current());
    }
    /* The same token entered many times over. */
    for (int i = 0; i < DEPTH; i++)
        ck_assert_int_eq(tether_token_enter(t[0]), 0);
    for (int i = 0; i < DEPTH; i++) {
        ck_assert_ptr_eq(tether_current(), t[0]);
        ck_assert_int_eq(tether_token_free(t[0]), EBUSY);
        ck_assert_int_eq(tether_token_leave(t[0]), 0);
    }
    ck_assert_ptr_null(tether_current());
    for (int i = DEPTH - 1; i >= 0; i--)
        free_token(t[i]);
}
END_TEST

START_TEST(leave_wrong_token_is_eperm)
{
    tether_token *a = new_token(NULL, TETHER_NEVER);
    tether_token *b = new_token(NULL, TETHER_NEVER);
    tether_token *c = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_enter(a), 0);
    ck_assert_int_eq(tether_token_enter(b), 0);

    ck_assert_int_eq(tether_token_leave(a), EPERM); /* entered, not innermost */
    ck_assert_int_eq(tether_token_leave(c), EPERM); /* never entered */
    ck_assert_int_eq(tether_token_leave(NULL), EINVAL);
    ck_assert_ptr_eq(tether_current(), b);

    ck_assert_int_eq(tether_token_leave(b), 0);
    ck_assert_ptr_eq(tether_current(), a);
    /* a's entry is still counted: the EPERM changed nothing. */
    ck_assert_int_eq(tether_token_free(a), EBUSY);
    ck_assert_int_eq(tether_token_leave(b), EPERM);
    ck_assert_int_eq(tether_token_leave(a), 0);
    ck_assert_ptr_null(tether_current());
    ck_assert_int_eq(tether_token_leave(a), EPERM);
    free_token(a);
    free_token(b);
    free_token(c);
}
END_TEST

START_TEST(check_uses_current_token)
{
    ck_assert_int_eq(tether_check(), 0);

    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_enter(t), 0);
    ck_assert_int_eq(tether_check(), 0);
    ck_assert_int_eq(tether_token_cancel(t, 42), 0);
    ck_assert_int_eq(tether_check(), ECANCELED);
    ck_assert_int_eq(tether_token_leave(t), 0);
    ck_assert_int_eq(tether_check(), 0);
    free_token(t);

    /* A passed deadline: ETIMEDOUT, and the owner is canceled — by the
     * check, or already by the timer thread (it races the check). */
    tether_token *owner = new_token(NULL, tether_now() - 1);
    tether_token *kid = new_token(owner, TETHER_NEVER);
    ck_assert_int_eq(tether_token_enter(kid), 0);
    ck_assert_int_eq(tether_check(), ETIMEDOUT);
    ck_assert_int_eq(tether_token_cause(owner), TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(tether_token_cause(kid), TETHER_CAUSE_PARENT);
    ck_assert_int_eq(tether_check(), ETIMEDOUT);
    ck_assert_int_eq(tether_token_leave(kid), 0);
    free_token(kid);
    free_token(owner);

    /* A deadline in the future: 0. */
    t = new_token(NULL, tether_deadline_after(tether_sec(100)));
    ck_assert_int_eq(tether_token_enter(t), 0);
    ck_assert_int_eq(tether_check(), 0);
    ck_assert_int_eq(tether_token_leave(t), 0);
    free_token(t);
}
END_TEST

struct per_thread {
    tether_token *mine;
    pthread_barrier_t bar;
    tether_token *seen_first, *seen_after_enter;
    int check_first;
};

static void *per_thread_main(void *p)
{
    struct per_thread *pt = p;
    pthread_barrier_wait(&pt->bar); /* main has entered its canceled token */
    pt->seen_first = tether_current();
    pt->check_first = tether_check();
    if (tether_token_enter(pt->mine) != 0)
        abort();
    pt->seen_after_enter = tether_current();
    pthread_barrier_wait(&pt->bar); /* main looks at its own current */
    pthread_barrier_wait(&pt->bar);
    if (tether_token_leave(pt->mine) != 0)
        abort();
    return NULL;
}

START_TEST(current_is_per_thread)
{
    th_baseline b = th_baseline_take();
    static struct per_thread pt;
    memset(&pt, 0, sizeof pt);
    pthread_barrier_init(&pt.bar, NULL, 2);
    pt.mine = new_token(NULL, TETHER_NEVER);
    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ck_assert_int_eq(tether_token_enter(t), 0);

    pthread_t th = thread_start(per_thread_main, &pt);
    pthread_barrier_wait(&pt.bar);
    pthread_barrier_wait(&pt.bar);
    ck_assert_ptr_null(pt.seen_first);
    ck_assert_int_eq(pt.check_first, 0);
    ck_assert_ptr_eq(pt.seen_after_enter, pt.mine);
    ck_assert_ptr_eq(tether_current(), t);
    ck_assert_int_eq(tether_check(), ECANCELED);
    pthread_barrier_wait(&pt.bar);
    thread_join(th);

    ck_assert_int_eq(tether_token_leave(t), 0);
    free_token(t);
    free_token(pt.mine);
    pthread_barrier_destroy(&pt.bar);
    th_baseline_check(b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("token_basics");
    TCase *tc;

    tc = tcase_create("basics");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, new_free_root);
    tcase_add_test(tc, bad_input);
    tcase_add_test(tc, free_with_live_child_is_ebusy);
    tcase_add_test(tc, free_while_entered_is_ebusy);
    suite_add_tcase(s, tc);

    tc = tcase_create("current");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, current_is_null_by_default);
    tcase_add_test(tc, enter_leave_nesting_deep);
    tcase_add_test(tc, leave_wrong_token_is_eperm);
    tcase_add_test(tc, check_uses_current_token);
    tcase_add_test(tc, current_is_per_thread);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
