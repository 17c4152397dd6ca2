/*
 * The cancellable primitives against deadlines: past, now, later, inherited
 * from an ancestor, and reached while another thread blocks: ETIMEDOUT,
 * never early.
 */
#define _GNU_SOURCE
#include "io_fixtures.h"

START_TEST(test_deadline_past)
{
    /* A deadline already past: -1/ETIMEDOUT at once, nothing moves, and
     * the token is now canceled with cause deadline. */
    th_baseline b = th_baseline_take();
    struct op o;
    op_setup(&o, _i, true);
    tether_token *t = new_token(NULL, tether_now() - tether_sec(1));
    enter(t);
    int err;
    tether_time_t t0 = tether_now();
    ssize_t r = op_call(&o, &err);
    ck_assert_int_le(tether_now() - t0, th_bound_ns(500));
    leave(t);
    ck_assert_msg(r == -1 && err == ETIMEDOUT, "%s: %zd errno %s", op_name[_i], r, strerror(err));
    op_check_untouched(&o);
    ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_DEADLINE);
    token_free(t);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_deadline_now)
{
    th_baseline b = th_baseline_take();
    struct op o;
    op_setup(&o, _i, true);
    tether_token *t = new_token(NULL, tether_now());
    enter(t);
    int err;
    ssize_t r = op_call(&o, &err);
    leave(t);
    ck_assert_msg(r == -1 && err == ETIMEDOUT, "%s: %zd errno %s", op_name[_i], r, strerror(err));
    op_check_untouched(&o);
    token_free(t);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_deadline_later)
{
    /* A blocked call returns ETIMEDOUT at its deadline: never before, and
     * within a bound after. */
    th_baseline b = th_baseline_take();
    struct op o;
    op_setup(&o, _i, false);
    tether_time_t dl = tether_deadline_after(tether_ms(50));
    tether_token *t = new_token(NULL, dl);
    enter(t);
    int err;
    ssize_t r = op_call(&o, &err);
    tether_time_t now = tether_now();
    leave(t);
    ck_assert_msg(r == -1 && err == ETIMEDOUT, "%s: %zd errno %s", op_name[_i], r, strerror(err));
    ck_assert_msg(now >= dl, "%s: deadline fired %lld ns early", op_name[_i],
                  (long long)(dl - now));
    ck_assert_int_le(now - dl, th_bound_ns(1000));
    op_check_untouched(&o);
    ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_DEADLINE);
    token_free(t);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_deadline_inherited)
{
    /* The waiter's own token has no deadline; its grandparent's applies. */
    th_baseline b = th_baseline_take();
    struct op o;
    op_setup(&o, _i, false);
    tether_time_t dl = tether_deadline_after(tether_ms(40));
    tether_token *g = new_token(NULL, dl), *p = new_token(g, TETHER_NEVER),
                 *c = new_token(p, TETHER_NEVER);
    ck_assert_int_eq(tether_token_deadline(c), dl);
    enter(c);
    int err;
    ssize_t r = op_call(&o, &err);
    tether_time_t now = tether_now();
    leave(c);
    ck_assert_msg(r == -1 && err == ETIMEDOUT, "%s: %zd errno %s", op_name[_i], r, strerror(err));
    ck_assert_int_ge(now, dl);
    ck_assert_int_le(now - dl, th_bound_ns(1000));
    ck_assert_int_eq(tether_token_cause(g), TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(tether_token_cause(c), TETHER_CAUSE_PARENT);
    op_check_untouched(&o);
    token_free(c);
    token_free(p);
    token_free(g);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_deadline_while_blocked_other_thread)
{
    /* A deadline on a token that another thread entered: that thread, left
     * alone, turns the passed deadline into ETIMEDOUT itself. (Whether it
     * was asleep when the deadline passed depends on the machine's speed.) */
    th_baseline b = th_baseline_take();
    struct op o;
    op_setup(&o, _i, false);
    tether_time_t dl = tether_deadline_after(tether_ms(60));
    tether_token *t = new_token(NULL, dl);
    struct runner r;
    runner_start(&r, &o, t);
    ck_assert(sem_wait_bounded(&r.done, th_bound_ns(5000)));
    runner_join(&r);
    ck_assert_msg(r.ret == -1 && r.err == ETIMEDOUT, "%s: %zd errno %s", op_name[_i], r.ret,
                  strerror(r.err));
    ck_assert_int_ge(r.returned_at, dl);
    ck_assert_int_le(r.returned_at - dl, th_bound_ns(1000));
    op_check_untouched(&o);
    token_free(t);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

/* ======================================================================
 * Sleep, read, write, poll: specific promises
 * ====================================================================== */

START_TEST(test_sleep_before_deadline)
{
    /* Waking before the deadline is success; the token stays live. */
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, tether_deadline_after(tether_sec(10)));
    enter(t);
    tether_time_t when = tether_now() + tether_ms(20);
    ck_assert_int_eq(tether_sleep_until(when), 0);
    ck_assert_int_ge(tether_now(), when);
    tether_time_t t0 = tether_now();
    ck_assert_int_eq(tether_sleep_for(tether_ms(20)), 0);
    ck_assert_int_ge(tether_now() - t0, tether_ms(20));
    leave(t);
    ck_assert_int_eq(tether_token_check(t), 0);
    token_free(t);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_sleep_until_after_deadline)
{
    /* `when` after the deadline: ETIMEDOUT at the deadline, not at `when`. */
    th_baseline b = th_baseline_take();
    tether_time_t dl = tether_deadline_after(tether_ms(30));
    tether_token *t = new_token(NULL, dl);
    enter(t);
    ASSERT_FAILS(tether_sleep_until(dl + tether_sec(60)), ETIMEDOUT);
    tether_time_t now = tether_now();
    leave(t);
    ck_assert_int_ge(now, dl);
    ck_assert_int_le(now - dl, th_bound_ns(1000));
    token_free(t);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_poll_timeout_before_deadline)
{
    /* poll's own timeout comes first: 0, revents cleared, token live. */
    th_baseline b = th_baseline_take();
    int p[2];
    xpipe(p);
    tether_token *t = new_token(NULL, tether_deadline_after(tether_sec(10)));
    enter(t);
    struct pollfd pfd = { .fd = p[0], .events = POLLIN, .revents = 0x7fff };
    tether_time_t t0 = tether_now();
    ck_assert_int_eq(tether_poll(&pfd, 1, 30), 0);
    tether_time_t el = tether_now() - t0;
    leave(t);
    ck_assert_int_eq(pfd.revents, 0);
    ck_assert_int_ge(el, tether_ms(30));
    ck_assert_int_le(el, tether_ms(30) + th_bound_ns(1000));
    ck_assert_int_eq(tether_token_check(t), 0);
    token_free(t);
    close_pair(p);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_poll_deadline_before_timeout)
{
    /* The deadline comes first: ETIMEDOUT at the deadline, not 0. */
    th_baseline b = th_baseline_take();
    int p[2];
    xpipe(p);
    tether_time_t dl = tether_deadline_after(tether_ms(30));
    tether_token *t = new_token(NULL, dl);
    enter(t);
    struct pollfd pfd = { .fd = p[0], .events = POLLIN };
    ASSERT_FAILS(tether_poll(&pfd, 1, 10000), ETIMEDOUT);
    tether_time_t now = tether_now();
    leave(t);
    ck_assert_int_ge(now, dl);
    ck_assert_int_le(now - dl, th_bound_ns(1000));
    token_free(t);
    close_pair(p);
    th_baseline_check(b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("io_deadline");
    TCase *tc;

    tc = tcase_create("deadlines");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_loop_test(tc, test_deadline_past, 0, OP_COUNT);
    tcase_add_loop_test(tc, test_deadline_now, 0, OP_COUNT);
    tcase_add_loop_test(tc, test_deadline_later, 0, OP_COUNT);
    tcase_add_loop_test(tc, test_deadline_inherited, 0, OP_COUNT);
    tcase_add_loop_test(tc, test_deadline_while_blocked_other_thread, 0, OP_COUNT);
    tcase_add_test(tc, test_sleep_before_deadline);
    tcase_add_test(tc, test_sleep_until_after_deadline);
    tcase_add_test(tc, test_poll_timeout_before_deadline);
    tcase_add_test(tc, test_poll_deadline_before_timeout);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
