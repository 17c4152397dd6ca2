/*
 * Shielded regions: cancellation from outside is deferred inside, so
 * clean-up can still do blocking I/O; the region's own deadline bounds it;
 * cancellations that start inside still apply; leaving makes a pending
 * cancellation visible at the next cancellation point.
 */
#define _GNU_SOURCE
#include "legacy.h"

#include <fcntl.h>
#include <stdatomic.h>

static int p[2];

/* The clean-up of a canceled thread still moves its bytes, then sees the
 * cancellation once out of the shield. */
START_TEST(shield_pending_cancel_io_then_observed)
{
    th_baseline base = th_baseline_take();
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    tether_token *outer = lu_token(TETHER_NEVER);
    ck_assert_int_eq(tether_token_enter(outer), 0);
    tether_token_cancel(outer, 0);
    errno = 0;
    ck_assert_int_eq(tether_write(p[1], "x", 1), -1);
    ck_assert_int_eq(errno, ECANCELED);

    tether_shield *s;
    ck_assert_int_eq(tether_shield_enter(&s, tether_deadline_after(tether_sec(5))), 0);
    ck_assert_ptr_eq(tether_current(), tether_shield_token(s));
    ck_assert_int_eq(tether_check(), 0);
    ck_assert_int_eq(tether_write(p[1], "bye", 3), 3);
    char buf[4];
    ck_assert_int_eq(tether_read(p[0], buf, sizeof buf), 3);
    ck_assert_int_eq(tether_sleep_for(tether_ms(5)), 0);
    struct iovec iov = { "!", 1 };
    ck_assert_int_eq(tether_writev(p[1], &iov, 1), 1);
    ck_assert_int_eq(tether_shield_leave(s), 0);

    ck_assert_ptr_eq(tether_current(), outer);
    ck_assert_int_eq(tether_check(), ECANCELED);
    errno = 0;
    ck_assert_int_eq(tether_read(p[0], buf, sizeof buf), -1);
    ck_assert_int_eq(errno, ECANCELED);
    ck_assert_int_eq(tether_token_leave(outer), 0);
    lu_free(outer);
    close(p[0]);
    close(p[1]);
    th_baseline_check(base);
}
END_TEST

/* A thread blocked inside a shield is not woken by the outer cancel; it
 * finishes its read, leaves, and then sees the cancellation. */
static _Atomic int shielded_done;
static tether_token *outer_tok;
static ssize_t shielded_read(void *a)
{
    (void)a;
    tether_shield *s;
    ck_assert_int_eq(tether_shield_enter(&s, TETHER_NEVER), 0);
    char buf[8];
    ssize_t n = tether_read(p[0], buf, sizeof buf);
    ck_assert_int_eq(n, 4);
    atomic_store(&shielded_done, 1);
    ck_assert_int_eq(tether_shield_leave(s), 0);
    ck_assert_int_eq(tether_check(), ECANCELED);
    return n;
}

START_TEST(shield_defers_outer_cancel_while_blocked)
{
    th_baseline base = th_baseline_take();
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    outer_tok = lu_token(TETHER_NEVER);
    lu_thread th;
    lu_start_blocked(&th, outer_tok, shielded_read, NULL);
    tether_token_cancel(outer_tok, 0);
    ck_assert_int_eq(th_wait_blocked(th.tid), 0); /* still blocked in its read */
    ck_assert_int_eq(atomic_load(&shielded_done), 0);
    ck_assert_int_eq(write(p[1], "done", 4), 4);
    lu_join(&th);
    ck_assert_int_eq(th.ret, 4);
    lu_free(outer_tok);
    close(p[0]);
    close(p[1]);
    th_baseline_check(base);
}
END_TEST

/* The shield's own deadline bounds the clean-up, whatever the outer one. */
START_TEST(shield_deadline_bounds_cleanup)
{
    th_baseline base = th_baseline_take();
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    tether_token *outer = lu_token(tether_deadline_after(tether_ms(1)));
    ck_assert_int_eq(tether_token_enter(outer), 0);
    ck_assert_int_eq(tether_sleep_for(tether_ms(5)), -1); /* the outer deadline passed */
    tether_time_t deadline = tether_deadline_after(tether_ms(40));
    tether_shield *s;
    ck_assert_int_eq(tether_shield_enter(&s, deadline), 0);
    ck_assert_int_eq(tether_token_deadline(tether_current()), deadline);
    char buf[4];
    errno = 0;
    ck_assert_int_eq(tether_read(p[0], buf, sizeof buf), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_ge(tether_now(), deadline);
    ck_assert_int_eq(tether_shield_leave(s), 0);
    ck_assert_int_eq(tether_check(), ETIMEDOUT);
    ck_assert_int_eq(tether_token_leave(outer), 0);
    lu_free(outer);
    close(p[0]);
    close(p[1]);
    th_baseline_check(base);
}
END_TEST

/* Cancellations that start inside the shield apply there: its own token,
 * and tokens and scopes made inside, which descend from it. */
static int child_fn(void *arg)
{
    (void)arg;
    return tether_sleep_for(tether_sec(30)) < 0 ? errno : 0;
}

START_TEST(shield_inner_cancel_applies)
{
    th_baseline base = th_baseline_take();
    tether_shield *s;
    ck_assert_int_eq(tether_shield_enter(&s, TETHER_NEVER), 0);
    tether_token *inner = lu_token(TETHER_NEVER);
    lu_free(inner);
    ck_assert_int_eq(tether_token_new(&inner, tether_current(), TETHER_NEVER), 0);
    tether_scope *sc;
    ck_assert_int_eq(tether_scope_open(&sc, NULL), 0);
    ck_assert_int_eq(tether_spawn(sc, child_fn, NULL, NULL, NULL), 0);
    ck_assert_int_eq(tether_token_cancel(tether_shield_token(s), 0), 0);
    tether_result r;
    ck_assert_int_eq(tether_scope_join(sc, &r), 0);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
    ck_assert_int_eq(tether_scope_free(sc), 0);
    ck_assert_int_eq(tether_token_check(inner), ECANCELED);
    ck_assert_int_eq(tether_check(), ECANCELED);
    ck_assert_int_eq(tether_shield_leave(s), EBUSY); /* inner still lives */
    lu_free(inner);
    ck_assert_int_eq(tether_shield_leave(s), 0);
    ck_assert_ptr_null(tether_current());
    th_baseline_check(base);
}
END_TEST

START_TEST(shield_misuse)
{
    th_baseline base = th_baseline_take();
    ck_assert_int_eq(tether_shield_enter(NULL, TETHER_NEVER), EINVAL);
    ck_assert_int_eq(tether_shield_leave(NULL), EINVAL);
    ck_assert_ptr_null(tether_shield_token(NULL));
    tether_shield *a, *b;
    ck_assert_int_eq(tether_shield_enter(&a, TETHER_NEVER), 0);
    ck_assert_int_eq(tether_shield_enter(&b, TETHER_NEVER), 0);
    ck_assert_int_eq(tether_shield_leave(a), EPERM); /* not the innermost */
    ck_assert_ptr_eq(tether_current(), tether_shield_token(b));
    tether_token *t = lu_token(TETHER_NEVER);
    ck_assert_int_eq(tether_token_enter(t), 0);
    ck_assert_int_eq(tether_shield_leave(b), EPERM);
    ck_assert_int_eq(tether_token_leave(t), 0);
    lu_free(t);
    ck_assert_int_eq(tether_shield_leave(b), 0);
    ck_assert_int_eq(tether_shield_leave(a), 0);
    ck_assert_ptr_null(tether_current());
    th_baseline_check(base);
}
END_TEST

static Suite *shield_suite(void)
{
    Suite *s = suite_create("shield");
    TCase *tc = tcase_create("shield");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, shield_pending_cancel_io_then_observed);
    tcase_add_test(tc, shield_defers_outer_cancel_while_blocked);
    tcase_add_test(tc, shield_deadline_bounds_cleanup);
    tcase_add_test(tc, shield_inner_cancel_applies);
    tcase_add_test(tc, shield_misuse);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(shield_suite());
}
