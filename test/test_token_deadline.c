/*
 * Token deadlines (inherited, effective, never early) and in-thread timeout
 * blocks (tether_with_deadline / tether_with_timeout).
 */
#define _GNU_SOURCE
#include "token_fixtures.h"

/* ============================================================== deadlines */

START_TEST(effective_deadline_is_min_over_ancestors)
{
    tether_time_t now = tether_now();
    tether_time_t d10 = now + tether_sec(10), d20 = now + tether_sec(20), d5 = now + tether_sec(5);

    tether_token *root = new_token(NULL, d10);
    tether_token *later = new_token(root, d20);  /* capped by the root */
    tether_token *earlier = new_token(root, d5); /* its own */
    tether_token *none = new_token(earlier, TETHER_NEVER);
    tether_token *same = new_token(root, d10);
    tether_token *free_root = new_token(NULL, TETHER_NEVER);
    tether_token *under_free = new_token(free_root, d20);
    tether_token *never = new_token(free_root, TETHER_NEVER);

    ck_assert_int_eq(tether_token_deadline(root), d10);
    ck_assert_int_eq(tether_token_deadline(later), d10);
    ck_assert_int_eq(tether_token_deadline(earlier), d5);
    ck_assert_int_eq(tether_token_deadline(none), d5);
    ck_assert_int_eq(tether_token_deadline(same), d10);
    ck_assert_int_eq(tether_token_deadline(under_free), d20);
    ck_assert_int_eq(tether_token_deadline(never), TETHER_NEVER);
    tether_token *all[] = { root, later, earlier, none, same, free_root, under_free, never };
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        assert_live(all[i]);
    free_token(never);
    free_token(under_free);
    free_token(free_root);
    free_token(same);
    free_token(none);
    free_token(earlier);
    free_token(later);
    free_token(root);
}
END_TEST

START_TEST(earlier_inner_deadline_fires_alone)
{
    tether_token *root = new_token(NULL, tether_deadline_after(tether_sec(100)));
    tether_token *inner = new_token(root, tether_now() - 1);
    tether_token *below = new_token(inner, TETHER_NEVER);
    tether_token *sib = new_token(root, TETHER_NEVER);

    /* Not a cause until observed, by a check or by the timer thread. */
    tether_cause early = tether_token_cause(inner);
    ck_assert(early == TETHER_CAUSE_NONE || early == TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(tether_token_check(below), ETIMEDOUT); /* observed from below */
    ck_assert_int_eq(tether_token_cause(inner), TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(tether_token_root_cause(inner), TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(tether_token_error(inner), ETIMEDOUT);
    ck_assert_int_eq(tether_token_check(inner), ETIMEDOUT);
    ck_assert_int_eq(tether_token_cause(below), TETHER_CAUSE_PARENT);
    ck_assert_int_eq(tether_token_root_cause(below), TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(tether_token_error(below), ETIMEDOUT);
    assert_live(root);
    assert_live(sib);

    free_token(below);
    free_token(inner);
    free_token(sib);
    free_token(root);
}
END_TEST

START_TEST(later_inner_deadline_capped_by_outer)
{
    struct counter root_cb = { 0 }, inner_cb = { 0 };
    tether_token *root = new_token(NULL, tether_now() - 1);
    tether_token *inner = new_token(root, tether_deadline_after(tether_sec(100)));
    tether_token *below = new_token(inner, TETHER_NEVER);
    tether_token *sib = new_token(root, TETHER_NEVER);
    tether_callback *c1 = on_cancel(root, count_cb, &root_cb);
    tether_callback *c2 = on_cancel(inner, count_cb, &inner_cb);

    /* Observing it deep down cancels the owner (the root), with DEADLINE,
     * and everything below it with PARENT. */
    ck_assert_int_eq(tether_token_check(below), ETIMEDOUT);
    ck_assert_int_eq(tether_token_cause(root), TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(tether_token_error(root), ETIMEDOUT);
    tether_token *desc[] = { inner, below, sib };
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(tether_token_cause(desc[i]), TETHER_CAUSE_PARENT);
        ck_assert_int_eq(tether_token_root_cause(desc[i]), TETHER_CAUSE_DEADLINE);
        ck_assert_int_eq(tether_token_error(desc[i]), ETIMEDOUT);
        ck_assert_int_eq(tether_token_check(desc[i]), ETIMEDOUT);
    }
    ck_assert_int_eq(atomic_load(&root_cb.runs), 1);
    ck_assert_int_eq(atomic_load(&inner_cb.runs), 1);
    ck_assert(off_cancel(c1));
    ck_assert(off_cancel(c2));
    free_token(below);
    free_token(inner);
    free_token(sib);
    free_token(root);
}
END_TEST

START_TEST(deadline_past_now_later)
{
    /* Past and exactly now have passed by the time we check. */
    tether_time_t now = tether_now();
    tether_token *past = new_token(NULL, now - tether_sec(1));
    tether_token *at = new_token(NULL, now);
    ck_assert_int_eq(tether_token_check(past), ETIMEDOUT);
    ck_assert_int_eq(tether_token_check(at), ETIMEDOUT);
    ck_assert_int_eq(tether_token_cause(at), TETHER_CAUSE_DEADLINE);
    free_token(past);
    free_token(at);

    /* Later: not yet, and never early. */
    tether_time_t d = tether_deadline_after(tether_ms(30));
    tether_token *later = new_token(NULL, d);
    int rc;
    do {
        tether_time_t before = tether_now();
        rc = tether_token_check(later);
        tether_time_t after = tether_now();
        if (rc == 0) {
            ck_assert_int_lt(before, d);
            ck_assert_int_eq(tether_token_cause(later), TETHER_CAUSE_NONE);
            /* Let the deadline pass inside the code under test. */
            ck_assert_int_eq(tether_sleep_until(d), 0);
            /* Passed: a cause once the timer thread (or a check) saw it. */
            tether_cause c = tether_token_cause(later);
            ck_assert(c == TETHER_CAUSE_NONE || c == TETHER_CAUSE_DEADLINE);
        } else {
            ck_assert_int_eq(rc, ETIMEDOUT);
            ck_assert_int_ge(after, d);
        }
    } while (rc == 0);
    ck_assert_int_ge(tether_now(), d);
    ck_assert_int_eq(tether_token_cause(later), TETHER_CAUSE_DEADLINE);
    free_token(later);
}
END_TEST

START_TEST(explicit_and_deadline_report_different_causes)
{
    tether_token *e = new_token(NULL, TETHER_NEVER);
    tether_token *ec = new_token(e, TETHER_NEVER);
    tether_token *d = new_token(NULL, tether_now() - 1);
    tether_token *dc = new_token(d, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(e, 0), 0);
    ck_assert_int_eq(tether_token_check(dc), ETIMEDOUT);

    ck_assert_int_eq(tether_token_check(e), ECANCELED);
    ck_assert_int_eq(tether_token_check(ec), ECANCELED);
    ck_assert_int_eq(tether_token_check(d), ETIMEDOUT);
    ck_assert_int_eq(tether_token_cause(e), TETHER_CAUSE_EXPLICIT);
    ck_assert_int_eq(tether_token_cause(d), TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(tether_token_root_cause(ec), TETHER_CAUSE_EXPLICIT);
    ck_assert_int_eq(tether_token_root_cause(dc), TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(tether_token_error(ec), ECANCELED);
    ck_assert_int_eq(tether_token_error(dc), ETIMEDOUT);
    free_token(ec);
    free_token(e);
    free_token(dc);
    free_token(d);
}
END_TEST

START_TEST(deadline_wakes_sleeper_under_descendant)
{
    th_baseline b = th_baseline_take();
    tether_time_t d = tether_deadline_after(tether_ms(50));
    tether_token *owner = new_token(NULL, d);
    tether_token *child = new_token(owner, TETHER_NEVER);
    struct sleeper s = { .t = child };
    sem_init(&s.started, 0, 0);
    tether_time_t start = tether_now();
    pthread_t th = thread_start(sleep_under, &s);
    thread_join(th);
    sem_destroy(&s.started);
    ck_assert_int_eq(s.rc, -1);
    ck_assert_int_eq(s.err, ETIMEDOUT);
    ck_assert_int_ge(s.woke, d);
    ck_assert_int_lt(s.woke - start, th_bound_ns(2000));
    ck_assert_int_eq(tether_token_cause(owner), TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(tether_token_cause(child), TETHER_CAUSE_PARENT);
    free_token(child);
    free_token(owner);
    th_baseline_check(b);
}
END_TEST

/* ========================================================== timeout blocks */

struct block_probe {
    tether_token *outer;
    pthread_t thread;
    tether_token *current;
    tether_time_t deadline;
    int check_rc;
    int ret;
    bool cancel_outer;
    tether_cause cause_after_outer_cancel;
};

static int probe_fn(void *p)
{
    struct block_probe *b = p;
    b->thread = pthread_self();
    b->current = tether_current();
    b->deadline = tether_token_deadline(b->current);
    b->check_rc = tether_check();
    if (b->cancel_outer) {
        tether_token_cancel(b->outer, 0);
        b->cause_after_outer_cancel = tether_token_cause(b->current);
        b->check_rc = tether_check();
    }
    return b->ret;
}

START_TEST(with_deadline_runs_fn_in_caller_under_child)
{
    th_baseline b = th_baseline_take();
    tether_token *outer = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_enter(outer), 0);

    tether_time_t d = tether_deadline_after(tether_sec(100));
    struct block_probe p = { .outer = outer, .ret = 1234 };
    bool fired = true;
    ck_assert_int_eq(tether_with_deadline(d, probe_fn, &p, &fired), 1234);
    ck_assert(!fired);
    ck_assert(pthread_equal(p.thread, pthread_self()));
    ck_assert_ptr_nonnull(p.current);
    ck_assert_ptr_ne(p.current, outer);
    ck_assert_int_eq(p.deadline, d);
    ck_assert_int_eq(p.check_rc, 0);
    ck_assert_ptr_eq(tether_current(), outer);

    /* The block's token is a child of the current one: canceling the outer
     * token reaches it (and is not "fired"). */
    struct block_probe q = { .outer = outer, .ret = -5, .cancel_outer = true };
    ck_assert_int_eq(tether_with_timeout(tether_sec(100), probe_fn, &q, &fired), -5);
    ck_assert(!fired);
    ck_assert_int_eq(q.cause_after_outer_cancel, TETHER_CAUSE_PARENT);
    ck_assert_int_eq(q.check_rc, ECANCELED);
    ck_assert_ptr_eq(tether_current(), outer);

    /* Under an already canceled outer token the block is born canceled. */
    struct block_probe r = { .outer = outer };
    ck_assert_int_eq(tether_with_timeout(tether_sec(100), probe_fn, &r, &fired), 0);
    ck_assert(!fired);
    ck_assert_int_eq(r.check_rc, ECANCELED);

    ck_assert_int_eq(tether_token_leave(outer), 0);
    /* The block tokens are gone: the outer has no child left. */
    free_token(outer);

    /* With no current token the block's token is a root. */
    struct block_probe s = { .ret = 3 };
    ck_assert_int_eq(tether_with_timeout(tether_sec(100), probe_fn, &s, NULL), 3);
    ck_assert_ptr_nonnull(s.current);
    ck_assert_ptr_null(tether_current());
    th_baseline_check(b);
}
END_TEST

struct sleep_probe {
    int64_t sleep_ns;
    int rc, err;
    tether_time_t deadline, woke;
};

static int sleep_fn(void *p)
{
    struct sleep_probe *s = p;
    s->deadline = tether_token_deadline(tether_current());
    s->rc = tether_sleep_for(s->sleep_ns);
    s->err = s->rc ? errno : 0;
    s->woke = tether_now();
    return s->rc ? s->err : 0;
}

START_TEST(with_timeout_fires_during_sleep)
{
    th_baseline b = th_baseline_take();
    tether_token *outer = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_enter(outer), 0);

    struct sleep_probe s = { .sleep_ns = tether_sec(60) };
    bool fired = false;
    tether_time_t start = tether_now();
    ck_assert_int_eq(tether_with_timeout(tether_ms(50), sleep_fn, &s, &fired), ETIMEDOUT);
    tether_time_t end = tether_now();
    ck_assert(fired);
    ck_assert_int_eq(s.rc, -1);
    ck_assert_int_eq(s.err, ETIMEDOUT);
    ck_assert_int_ge(s.deadline, start + tether_ms(50));
    ck_assert_int_ge(s.woke, s.deadline);
    ck_assert_int_ge(end - start, tether_ms(50));
    ck_assert_int_lt(end - start, th_bound_ns(2000));
    /* The outer token is untouched. */
    assert_live(outer);
    ck_assert_int_eq(tether_check(), 0);

    ck_assert_int_eq(tether_token_leave(outer), 0);
    free_token(outer);

    /* Also with no current token at all. */
    fired = false;
    s = (struct sleep_probe){ .sleep_ns = tether_sec(60) };
    start = tether_now();
    ck_assert_int_eq(tether_with_timeout(tether_ms(20), sleep_fn, &s, &fired), ETIMEDOUT);
    ck_assert(fired);
    ck_assert_int_ge(s.woke, s.deadline);
    ck_assert_int_ge(tether_now() - start, tether_ms(20));
    th_baseline_check(b);
}
END_TEST

static int quick_fn(void *p)
{
    int *calls = p;
    ++*calls;
    return tether_check();
}

static int no_check_fn(void *p)
{
    tether_time_t *d = p;
    /* Wait out the deadline without any cancellation point, until the timer
     * thread has canceled the block's token (tether_token_cause is no
     * check: it never cancels), or a generous bound. */
    tether_time_t end = *d + th_bound_ns(2000);
    while (tether_now() <= *d ||
           (tether_token_cause(tether_current()) == TETHER_CAUSE_NONE && tether_now() < end))
        ;
    return 17;
}

START_TEST(with_timeout_fn_finishes_first)
{
    int calls = 0;
    bool fired = true;
    ck_assert_int_eq(tether_with_timeout(tether_sec(100), quick_fn, &calls, &fired), 0);
    ck_assert_int_eq(calls, 1);
    ck_assert(!fired);

    /* A deadline that passes while fn never looks still fires (the timer
     * thread cancels the block's token), and fn's result is kept. */
    tether_time_t d = tether_deadline_after(tether_ms(5));
    fired = false;
    ck_assert_int_eq(tether_with_deadline(d, no_check_fn, &d, &fired), 17);
    ck_assert(fired);

    /* A deadline already passed fires at fn's first check. */
    fired = false;
    ck_assert_int_eq(tether_with_deadline(tether_now() - 1, quick_fn, &calls, &fired), ETIMEDOUT);
    ck_assert_int_eq(calls, 2);
    ck_assert(fired);
}
END_TEST

START_TEST(with_timeout_outer_deadline_first)
{
    tether_time_t od = tether_deadline_after(tether_ms(40));
    tether_token *outer = new_token(NULL, od);
    ck_assert_int_eq(tether_token_enter(outer), 0);
    struct sleep_probe s = { .sleep_ns = tether_sec(60) };
    bool fired = true;
    ck_assert_int_eq(tether_with_timeout(tether_sec(100), sleep_fn, &s, &fired), ETIMEDOUT);
    ck_assert(!fired);
    ck_assert_int_eq(s.deadline, od);
    ck_assert_int_ge(s.woke, od);
    ck_assert_int_lt(s.woke - od, th_bound_ns(2000));
    ck_assert_int_eq(tether_token_cause(outer), TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(tether_check(), ETIMEDOUT);
    ck_assert_int_eq(tether_token_leave(outer), 0);
    free_token(outer);
}
END_TEST

struct nest {
    int64_t inner_ns;
    struct sleep_probe inner;
    bool inner_fired;
    int inner_ret;
    int check_after_inner;
};

static int nest_outer_fn(void *p)
{
    struct nest *n = p;
    n->inner_fired = true;
    n->inner_ret = tether_with_timeout(n->inner_ns, sleep_fn, &n->inner, &n->inner_fired);
    n->check_after_inner = tether_check();
    return n->check_after_inner;
}

START_TEST(with_timeout_nested)
{
    /* Inner block shorter: it fires, the outer block carries on. */
    struct nest n = { .inner_ns = tether_ms(30), .inner = { .sleep_ns = tether_sec(60) } };
    bool fired = true;
    tether_time_t start = tether_now();
    ck_assert_int_eq(tether_with_timeout(tether_sec(100), nest_outer_fn, &n, &fired), 0);
    ck_assert(!fired);
    ck_assert(n.inner_fired);
    ck_assert_int_eq(n.inner_ret, ETIMEDOUT);
    ck_assert_int_ge(n.inner.woke, n.inner.deadline);
    ck_assert_int_ge(n.inner.woke - start, tether_ms(30));
    ck_assert_int_eq(n.check_after_inner, 0);

    /* Outer block shorter: the inner one is capped by it and does not fire;
     * the outer fires. */
    struct nest m = { .inner_ns = tether_sec(100), .inner = { .sleep_ns = tether_sec(60) } };
    fired = false;
    start = tether_now();
    ck_assert_int_eq(tether_with_timeout(tether_ms(30), nest_outer_fn, &m, &fired), ETIMEDOUT);
    ck_assert(fired);
    ck_assert(!m.inner_fired);
    ck_assert_int_eq(m.inner_ret, ETIMEDOUT);
    ck_assert_int_ge(m.inner.woke, m.inner.deadline);
    ck_assert_int_ge(m.inner.woke - start, tether_ms(30));
    ck_assert_int_lt(m.inner.woke - start, th_bound_ns(2000));
    ck_assert_ptr_null(tether_current());
}
END_TEST

START_TEST(with_deadline_bad_input)
{
    bool fired = true;
    ck_assert_int_eq(tether_with_deadline(TETHER_NEVER, NULL, NULL, &fired), EINVAL);
    ck_assert(!fired);
    fired = true;
    ck_assert_int_eq(tether_with_timeout(tether_sec(1), NULL, NULL, &fired), EINVAL);
    ck_assert(!fired);
    ck_assert_int_eq(tether_with_timeout(tether_sec(1), NULL, NULL, NULL), EINVAL);
    ck_assert_ptr_null(tether_current());
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("token_deadline");
    TCase *tc;

    tc = tcase_create("deadline");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, effective_deadline_is_min_over_ancestors);
    tcase_add_test(tc, earlier_inner_deadline_fires_alone);
    tcase_add_test(tc, later_inner_deadline_capped_by_outer);
    tcase_add_test(tc, deadline_past_now_later);
    tcase_add_test(tc, explicit_and_deadline_report_different_causes);
    tcase_add_test(tc, deadline_wakes_sleeper_under_descendant);
    suite_add_tcase(s, tc);

    tc = tcase_create("timeout_block");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, with_deadline_runs_fn_in_caller_under_child);
    tcase_add_test(tc, with_timeout_fires_during_sleep);
    tcase_add_test(tc, with_timeout_fn_finishes_first);
    tcase_add_test(tc, with_timeout_outer_deadline_first);
    tcase_add_test(tc, with_timeout_nested);
    tcase_add_test(tc, with_deadline_bad_input);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
