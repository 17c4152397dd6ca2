/*
 * The token tree: create/free, cancellation and its propagation, deadlines,
 * cancellation callbacks, the current token and in-thread timeout blocks.
 *
 * Threads hand off through barriers and semaphores; the only sleeps are the
 * ones inside the code under test (tether_sleep_for in timeout blocks).
 */
#define _GNU_SOURCE
#include "support.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>


/* ------------------------------------------------------------ small tools */

static pthread_t spawn(void *(*fn)(void *), void *arg)
{
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, fn, arg), 0);
    return th;
}

static void join(pthread_t th)
{
    ck_assert_int_eq(pthread_join(th, NULL), 0);
}

static void free_token(tether_token *t)
{
    ck_assert_int_eq(tether_token_free(t), 0);
}

static void assert_live(tether_token *t)
{
    ck_assert_int_eq(tether_token_check(t), 0);
    ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_NONE);
    ck_assert_int_eq(tether_token_root_cause(t), TETHER_CAUSE_NONE);
    ck_assert_int_eq(tether_token_error(t), 0);
}

/* A callback that counts its runs and records the thread that ran it. */
struct counter {
    atomic_int runs;
    pthread_t runner;
};

static void count_cb(void *arg)
{
    struct counter *c = arg;
    c->runner = pthread_self();
    atomic_fetch_add(&c->runs, 1);
}

static tether_callback *on_cancel(tether_token *t, void (*fn)(void *), void *arg)
{
    tether_callback *cb = NULL;
    ck_assert_int_eq(tether_token_on_cancel(t, fn, arg, &cb), 0);
    ck_assert_ptr_nonnull(cb);
    return cb;
}

static bool off_cancel(tether_callback *cb)
{
    bool ran = true;
    ck_assert_int_eq(tether_token_off_cancel(cb, &ran), 0);
    return ran;
}

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

    /* The links are intact: a new sibling joins, and cancelling the root
     * still reaches every descendant. */
    tether_token *sib = new_token(root, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(root, 42), 0);
    ck_assert_int_eq(tether_token_cause(child), TETHER_CAUSE_PARENT);
    ck_assert_int_eq(tether_token_cause(grand), TETHER_CAUSE_PARENT);
    ck_assert_int_eq(tether_token_cause(sib), TETHER_CAUSE_PARENT);
    ck_assert_int_eq(tether_token_error(grand), 42);

    /* Still busy while any child remains, cancelled or not. */
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
    pthread_t th = spawn(enter_and_hold, &a);
    pthread_barrier_wait(&bar);
    ck_assert_int_eq(a.enter_rc, 0);
    ck_assert_int_eq(tether_token_free(t), EBUSY);
    assert_live(t);
    pthread_barrier_wait(&bar);
    join(th);
    ck_assert_int_eq(a.leave_rc, 0);
    pthread_barrier_destroy(&bar);

    free_token(t);
    th_baseline_check(b);
}
END_TEST

/* ================================================================= cancel */

START_TEST(cancel_is_sticky)
{
    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(tether_token_check(t), ECANCELED);
        ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_EXPLICIT);
        ck_assert_int_eq(tether_token_root_cause(t), TETHER_CAUSE_EXPLICIT);
        ck_assert_int_eq(tether_token_error(t), ECANCELED);
        /* Later cancels are no-ops that still succeed. */
        ck_assert_int_eq(tether_token_cancel(t, 99 + i), 0);
    }
    ck_assert_int_eq(tether_token_error(t), ECANCELED);
    free_token(t);
}
END_TEST

START_TEST(cancel_user_error)
{
    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(t, 42), 0);
    ck_assert_int_eq(tether_token_error(t), 42);
    ck_assert_int_eq(tether_token_check(t), ECANCELED);
    ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_EXPLICIT);
    free_token(t);

    /* An error number that happens to be ETIMEDOUT is still an explicit
     * cancel: the check reports ECANCELED. */
    t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(t, ETIMEDOUT), 0);
    ck_assert_int_eq(tether_token_error(t), ETIMEDOUT);
    ck_assert_int_eq(tether_token_check(t), ECANCELED);
    free_token(t);

    t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ck_assert_int_eq(tether_token_error(t), ECANCELED);
    ck_assert_int_eq(tether_token_check(t), ECANCELED);
    free_token(t);
}
END_TEST

START_TEST(first_cause_kept_explicit_then_deadline)
{
    /* Explicit first, deadline already passed: the explicit cause stays. */
    tether_token *t = new_token(NULL, tether_now() - 1);
    tether_token *c = new_token(t, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(t, 42), 0);
    ck_assert_int_eq(tether_token_check(t), ECANCELED);
    ck_assert_int_eq(tether_token_check(c), ECANCELED);
    ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_EXPLICIT);
    ck_assert_int_eq(tether_token_error(t), 42);
    ck_assert_int_eq(tether_token_cause(c), TETHER_CAUSE_PARENT);
    ck_assert_int_eq(tether_token_root_cause(c), TETHER_CAUSE_EXPLICIT);
    ck_assert_int_eq(tether_token_error(c), 42);
    free_token(c);
    free_token(t);
}
END_TEST

START_TEST(first_cause_kept_deadline_then_explicit)
{
    tether_token *t = new_token(NULL, tether_now() - 1);
    ck_assert_int_eq(tether_token_check(t), ETIMEDOUT);
    ck_assert_int_eq(tether_token_cancel(t, 42), 0);
    ck_assert_int_eq(tether_token_check(t), ETIMEDOUT);
    ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(tether_token_error(t), ETIMEDOUT);
    free_token(t);
}
END_TEST

START_TEST(cancel_child_spares_parent_and_siblings)
{
    tether_token *root = new_token(NULL, TETHER_NEVER);
    tether_token *a = new_token(root, TETHER_NEVER);
    tether_token *b = new_token(root, TETHER_NEVER);
    tether_token *a1 = new_token(a, TETHER_NEVER);
    tether_token *a2 = new_token(a, TETHER_NEVER);
    tether_token *b1 = new_token(b, TETHER_NEVER);

    ck_assert_int_eq(tether_token_cancel(a1, 7), 0);
    ck_assert_int_eq(tether_token_cause(a1), TETHER_CAUSE_EXPLICIT);
    assert_live(a);
    assert_live(a2);
    assert_live(root);

    ck_assert_int_eq(tether_token_cancel(a, 8), 0);
    ck_assert_int_eq(tether_token_cause(a), TETHER_CAUSE_EXPLICIT);
    ck_assert_int_eq(tether_token_cause(a2), TETHER_CAUSE_PARENT);
    ck_assert_int_eq(tether_token_error(a2), 8);
    /* a1 was cancelled first and keeps its own cause and error. */
    ck_assert_int_eq(tether_token_cause(a1), TETHER_CAUSE_EXPLICIT);
    ck_assert_int_eq(tether_token_error(a1), 7);
    assert_live(root);
    assert_live(b);
    assert_live(b1);

    free_token(a1);
    free_token(a2);
    free_token(b1);
    free_token(a);
    free_token(b);
    free_token(root);
}
END_TEST

START_TEST(cancel_parent_cancels_all_descendants)
{
    /* root -> 4 children -> 4 grandchildren each -> 2 great-grandchildren. */
    enum { FAN = 4, FAN2 = 4, FAN3 = 2 };
    tether_token *root = new_token(NULL, TETHER_NEVER);
    tether_token *l1[FAN], *l2[FAN][FAN2], *l3[FAN][FAN2][FAN3];
    for (int i = 0; i < FAN; i++) {
        l1[i] = new_token(root, TETHER_NEVER);
        for (int j = 0; j < FAN2; j++) {
            l2[i][j] = new_token(l1[i], TETHER_NEVER);
            for (int k = 0; k < FAN3; k++)
                l3[i][j][k] = new_token(l2[i][j], TETHER_NEVER);
        }
    }
    ck_assert_int_eq(tether_token_cancel(root, 42), 0);
    ck_assert_int_eq(tether_token_cause(root), TETHER_CAUSE_EXPLICIT);
    for (int i = 0; i < FAN; i++) {
        tether_token *all[1 + FAN2 * (1 + FAN3)];
        int n = 0;
        all[n++] = l1[i];
        for (int j = 0; j < FAN2; j++) {
            all[n++] = l2[i][j];
            for (int k = 0; k < FAN3; k++)
                all[n++] = l3[i][j][k];
        }
        for (int m = 0; m < n; m++) {
            ck_assert_int_eq(tether_token_cause(all[m]), TETHER_CAUSE_PARENT);
            ck_assert_int_eq(tether_token_root_cause(all[m]), TETHER_CAUSE_EXPLICIT);
            ck_assert_int_eq(tether_token_error(all[m]), 42);
            ck_assert_int_eq(tether_token_check(all[m]), ECANCELED);
        }
    }
    for (int i = 0; i < FAN; i++) {
        for (int j = 0; j < FAN2; j++) {
            for (int k = 0; k < FAN3; k++)
                free_token(l3[i][j][k]);
            free_token(l2[i][j]);
        }
        free_token(l1[i]);
    }
    free_token(root);
}
END_TEST

/* Propagation must not recurse: a very deep chain cancelled from a thread
 * with a small stack. */
struct chain_arg {
    tether_token *root;
    int rc;
};

static void *cancel_root(void *p)
{
    struct chain_arg *a = p;
    a->rc = tether_token_cancel(a->root, 5);
    return NULL;
}

START_TEST(cancel_deep_chain_small_stack)
{
    th_baseline b = th_baseline_take();
    enum { DEPTH = 30000 }; /* a recursive walk would need megabytes */
    tether_token **chain = malloc(DEPTH * sizeof *chain);
    ck_assert_ptr_nonnull(chain);
    chain[0] = new_token(NULL, TETHER_NEVER);
    for (int i = 1; i < DEPTH; i++)
        chain[i] = new_token(chain[i - 1], TETHER_NEVER);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    ck_assert_int_eq(pthread_attr_setstacksize(&attr, 256 * 1024), 0);
    struct chain_arg a = { .root = chain[0], .rc = -1 };
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, &attr, cancel_root, &a), 0);
    pthread_attr_destroy(&attr);
    join(th);
    ck_assert_int_eq(a.rc, 0);

    for (int i = DEPTH - 1; i >= 1; i--) {
        ck_assert_int_eq(tether_token_cause(chain[i]), TETHER_CAUSE_PARENT);
        ck_assert_int_eq(tether_token_error(chain[i]), 5);
    }
    ck_assert_int_eq(tether_token_cause(chain[0]), TETHER_CAUSE_EXPLICIT);
    for (int i = DEPTH - 1; i >= 0; i--)
        free_token(chain[i]);
    free(chain);
    th_baseline_check(b);
}
END_TEST

START_TEST(child_of_cancelled_is_born_cancelled)
{
    tether_token *p = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(p, 42), 0);
    tether_token *c = new_token(p, TETHER_NEVER);
    tether_token *g = new_token(c, tether_deadline_after(tether_sec(100)));
    tether_token *list[] = { c, g };
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(tether_token_cause(list[i]), TETHER_CAUSE_PARENT);
        ck_assert_int_eq(tether_token_root_cause(list[i]), TETHER_CAUSE_EXPLICIT);
        ck_assert_int_eq(tether_token_error(list[i]), 42);
        ck_assert_int_eq(tether_token_check(list[i]), ECANCELED);
    }
    /* Its callbacks run at once. */
    struct counter cnt = { 0 };
    tether_callback *cb = on_cancel(g, count_cb, &cnt);
    ck_assert_int_eq(atomic_load(&cnt.runs), 1);
    ck_assert(off_cancel(cb));
    free_token(g);
    free_token(c);
    free_token(p);

    /* Born under a deadline-cancelled parent: reports the deadline. */
    p = new_token(NULL, tether_now() - 1);
    ck_assert_int_eq(tether_token_check(p), ETIMEDOUT);
    c = new_token(p, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cause(c), TETHER_CAUSE_PARENT);
    ck_assert_int_eq(tether_token_root_cause(c), TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(tether_token_error(c), ETIMEDOUT);
    ck_assert_int_eq(tether_token_check(c), ETIMEDOUT);
    free_token(c);
    free_token(p);
}
END_TEST

/* ============================================================== deadlines */

START_TEST(effective_deadline_is_min_over_ancestors)
{
    tether_time_t now = tether_now();
    tether_time_t d10 = now + tether_sec(10), d20 = now + tether_sec(20), d5 = now + tether_sec(5);

    tether_token *root = new_token(NULL, d10);
    tether_token *later = new_token(root, d20);   /* capped by the root */
    tether_token *earlier = new_token(root, d5);  /* its own */
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

    /* Not a cause until observed. */
    ck_assert_int_eq(tether_token_cause(inner), TETHER_CAUSE_NONE);
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
            /* Passed but not yet observed: not a cause yet. */
            ck_assert_int_eq(tether_token_cause(later), TETHER_CAUSE_NONE);
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

/* A thread asleep under a descendant wakes at the owner's deadline (never
 * before it), and its wake cancels the owner. */
struct sleeper {
    tether_token *t;
    int rc, err;
    tether_time_t woke;
    sem_t started;
    pid_t tid;
};

static void *sleep_under(void *p)
{
    struct sleeper *s = p;
    s->tid = th_gettid();
    sem_post(&s->started);
    ck_assert_int_eq(tether_token_enter(s->t), 0);
    s->rc = tether_sleep_for(tether_sec(60));
    s->err = errno;
    s->woke = tether_now();
    ck_assert_int_eq(tether_token_leave(s->t), 0);
    return NULL;
}

START_TEST(deadline_wakes_sleeper_under_descendant)
{
    th_baseline b = th_baseline_take();
    tether_time_t d = tether_deadline_after(tether_ms(50));
    tether_token *owner = new_token(NULL, d);
    tether_token *child = new_token(owner, TETHER_NEVER);
    struct sleeper s = { .t = child };
    sem_init(&s.started, 0, 0);
    tether_time_t start = tether_now();
    pthread_t th = spawn(sleep_under, &s);
    join(th);
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

/* An explicit cancel of an ancestor wakes a thread asleep under a
 * descendant. _i = 0: cancelled while it is blocked; 1: before it sleeps. */
START_TEST(cancel_wakes_sleeper_under_descendant)
{
    th_baseline b = th_baseline_take();
    tether_token *root = new_token(NULL, TETHER_NEVER);
    tether_token *mid = new_token(root, TETHER_NEVER);
    tether_token *leaf = new_token(mid, TETHER_NEVER);
    struct sleeper s = { .t = leaf };
    sem_init(&s.started, 0, 0);
    tether_time_t cancelled_at;
    pthread_t th;
    if (_i == 0) {
        th = spawn(sleep_under, &s);
        while (sem_wait(&s.started) != 0)
            ;
        ck_assert_int_eq(th_wait_blocked(s.tid), 0);
        cancelled_at = tether_now();
        ck_assert_int_eq(tether_token_cancel(root, 12), 0);
    } else {
        cancelled_at = tether_now();
        ck_assert_int_eq(tether_token_cancel(root, 12), 0);
        th = spawn(sleep_under, &s);
    }
    join(th);
    ck_assert_int_eq(s.rc, -1);
    ck_assert_int_eq(s.err, ECANCELED);
    ck_assert_int_lt(s.woke - cancelled_at, th_bound_ns(2000));
    ck_assert_int_eq(tether_token_cause(leaf), TETHER_CAUSE_PARENT);
    ck_assert_int_eq(tether_token_error(leaf), 12);
    free_token(leaf);
    free_token(mid);
    free_token(root);
    sem_destroy(&s.started);
    th_baseline_check(b);
}
END_TEST

/* ============================================= concurrent cancel of a tree */

enum { TREE_N = 100, TREE_THREADS = 8 };

struct tree_shared {
    pthread_barrier_t start, done;
    tether_token *node[TREE_N];
    int order[TREE_THREADS][TREE_N];
    int count[TREE_THREADS];
    atomic_bool stop;
};

struct tree_worker {
    struct tree_shared *sh;
    int idx;
};

static void *tree_worker_main(void *p)
{
    struct tree_worker *w = p;
    struct tree_shared *sh = w->sh;
    for (;;) {
        pthread_barrier_wait(&sh->start);
        if (atomic_load(&sh->stop))
            return NULL;
        for (int k = 0; k < sh->count[w->idx]; k++) {
            int n = sh->order[w->idx][k];
            int rc = tether_token_cancel(sh->node[n], 1000 + n);
            if (rc != 0)
                abort();
        }
        pthread_barrier_wait(&sh->done);
    }
}

START_TEST(random_tree_concurrent_cancel)
{
    th_baseline b = th_baseline_take();
    uint64_t rng = th_seed("random_tree_concurrent_cancel");
    static struct tree_shared sh;
    memset(&sh, 0, sizeof sh);
    pthread_barrier_init(&sh.start, NULL, TREE_THREADS + 1);
    pthread_barrier_init(&sh.done, NULL, TREE_THREADS + 1);
    struct tree_worker w[TREE_THREADS];
    pthread_t th[TREE_THREADS];
    for (int i = 0; i < TREE_THREADS; i++) {
        w[i] = (struct tree_worker){ .sh = &sh, .idx = i };
        th[i] = spawn(tree_worker_main, &w[i]);
    }

    const int iters = 300;
    for (int it = 0; it < iters; it++) {
        int parent[TREE_N];
        bool targeted[TREE_N] = { false };
        struct counter cnt[TREE_N];
        tether_callback *cbs[TREE_N];
        parent[0] = -1;
        sh.node[0] = new_token(NULL, TETHER_NEVER);
        for (int i = 1; i < TREE_N; i++) {
            parent[i] = (int)(th_rand(&rng) % (uint64_t)i);
            sh.node[i] = new_token(sh.node[parent[i]], TETHER_NEVER);
        }
        for (int i = 0; i < TREE_N; i++) {
            memset(&cnt[i], 0, sizeof cnt[i]);
            cbs[i] = on_cancel(sh.node[i], count_cb, &cnt[i]);
        }
        /* Each thread: a random order over all nodes, cancelling a random
         * prefix of it; thread 0 cancels them all, so the root is hit. */
        for (int t = 0; t < TREE_THREADS; t++) {
            for (int i = 0; i < TREE_N; i++)
                sh.order[t][i] = i;
            for (int i = TREE_N - 1; i > 0; i--) {
                int j = (int)(th_rand(&rng) % (uint64_t)(i + 1));
                int tmp = sh.order[t][i];
                sh.order[t][i] = sh.order[t][j];
                sh.order[t][j] = tmp;
            }
            sh.count[t] = t == 0 ? TREE_N : 1 + (int)(th_rand(&rng) % TREE_N);
            for (int k = 0; k < sh.count[t]; k++)
                targeted[sh.order[t][k]] = true;
        }

        pthread_barrier_wait(&sh.start);
        pthread_barrier_wait(&sh.done);

        ck_assert_int_eq(tether_token_cause(sh.node[0]), TETHER_CAUSE_EXPLICIT);
        for (int i = 0; i < TREE_N; i++) {
            tether_token *t = sh.node[i];
            tether_cause c = tether_token_cause(t);
            ck_assert_int_eq(tether_token_check(t), ECANCELED);
            ck_assert_int_eq(tether_token_root_cause(t), TETHER_CAUSE_EXPLICIT);
            ck_assert_msg(atomic_load(&cnt[i].runs) == 1, "iter %d node %d: callback ran %d times",
                          it, i, atomic_load(&cnt[i].runs));
            if (c == TETHER_CAUSE_EXPLICIT) {
                ck_assert_msg(targeted[i], "iter %d node %d explicit but never cancelled", it, i);
                ck_assert_int_eq(tether_token_error(t), 1000 + i);
            } else {
                ck_assert_msg(c == TETHER_CAUSE_PARENT, "iter %d node %d: cause %s", it, i,
                              tether_cause_name(c));
                ck_assert_int_ne(i, 0);
                ck_assert_int_ne(tether_token_cause(sh.node[parent[i]]), TETHER_CAUSE_NONE);
                ck_assert_int_eq(tether_token_error(t), tether_token_error(sh.node[parent[i]]));
            }
            ck_assert(off_cancel(cbs[i]));
        }
        for (int i = TREE_N - 1; i >= 0; i--)
            free_token(sh.node[i]);
    }

    atomic_store(&sh.stop, true);
    pthread_barrier_wait(&sh.start);
    for (int i = 0; i < TREE_THREADS; i++)
        join(th[i]);
    pthread_barrier_destroy(&sh.start);
    pthread_barrier_destroy(&sh.done);
    th_baseline_check(b);
}
END_TEST

/* New children (and callbacks on them) racing a cancel of their parent:
 * every child ends cancelled, every callback runs exactly once. */
enum { RACE_MAKERS = 3, RACE_PER_MAKER = 40 };

struct race_shared {
    pthread_barrier_t start;
    tether_token *parent;
    tether_token *kids[RACE_MAKERS][RACE_PER_MAKER];
    tether_callback *cbs[RACE_MAKERS][RACE_PER_MAKER];
    struct counter cnt[RACE_MAKERS][RACE_PER_MAKER];
    unsigned spin;
};

struct race_maker {
    struct race_shared *sh;
    int idx;
};

static void *race_make(void *p)
{
    struct race_maker *m = p;
    struct race_shared *sh = m->sh;
    pthread_barrier_wait(&sh->start);
    for (int i = 0; i < RACE_PER_MAKER; i++) {
        if (tether_token_new(&sh->kids[m->idx][i], sh->parent, TETHER_NEVER) != 0)
            abort();
        if (tether_token_on_cancel(sh->kids[m->idx][i], count_cb, &sh->cnt[m->idx][i],
                                   &sh->cbs[m->idx][i]) != 0)
            abort();
    }
    return NULL;
}

static void *race_cancel(void *p)
{
    struct race_shared *sh = p;
    pthread_barrier_wait(&sh->start);
    for (volatile unsigned i = 0; i < sh->spin; i++)
        ; /* a random head start for the makers, not a handshake */
    if (tether_token_cancel(sh->parent, 77) != 0)
        abort();
    return NULL;
}

START_TEST(new_children_race_cancel)
{
    th_baseline b = th_baseline_take();
    uint64_t rng = th_seed("new_children_race_cancel");
    static struct race_shared sh;
    for (int it = 0; it < 200; it++) {
        memset(&sh, 0, sizeof sh);
        pthread_barrier_init(&sh.start, NULL, RACE_MAKERS + 1);
        sh.parent = new_token(NULL, TETHER_NEVER);
        sh.spin = (unsigned)(th_rand(&rng) % 20000);
        struct race_maker m[RACE_MAKERS];
        pthread_t th[RACE_MAKERS + 1];
        for (int i = 0; i < RACE_MAKERS; i++) {
            m[i] = (struct race_maker){ .sh = &sh, .idx = i };
            th[i] = spawn(race_make, &m[i]);
        }
        th[RACE_MAKERS] = spawn(race_cancel, &sh);
        for (int i = 0; i <= RACE_MAKERS; i++)
            join(th[i]);
        for (int i = 0; i < RACE_MAKERS; i++) {
            for (int j = 0; j < RACE_PER_MAKER; j++) {
                tether_token *k = sh.kids[i][j];
                ck_assert_int_eq(tether_token_cause(k), TETHER_CAUSE_PARENT);
                ck_assert_int_eq(tether_token_root_cause(k), TETHER_CAUSE_EXPLICIT);
                ck_assert_int_eq(tether_token_error(k), 77);
                ck_assert_int_eq(atomic_load(&sh.cnt[i][j].runs), 1);
                ck_assert(off_cancel(sh.cbs[i][j]));
                free_token(k);
            }
        }
        free_token(sh.parent);
        pthread_barrier_destroy(&sh.start);
    }
    th_baseline_check(b);
}
END_TEST

/* ============================================================== callbacks */

struct cancel_arg {
    tether_token *t;
    int error;
    pthread_t self;
};

static void *cancel_thread(void *p)
{
    struct cancel_arg *a = p;
    a->self = pthread_self();
    if (tether_token_cancel(a->t, a->error) != 0)
        abort();
    return NULL;
}

START_TEST(callback_runs_once_in_cancelling_thread)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    struct counter c = { 0 };
    tether_callback *cb = on_cancel(t, count_cb, &c);
    ck_assert_int_eq(atomic_load(&c.runs), 0);

    struct cancel_arg a = { .t = t };
    pthread_t th = spawn(cancel_thread, &a);
    join(th);
    ck_assert_int_eq(atomic_load(&c.runs), 1);
    ck_assert(pthread_equal(c.runner, a.self));
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ck_assert_int_eq(atomic_load(&c.runs), 1);
    ck_assert(off_cancel(cb));
    free_token(t);
    th_baseline_check(b);
}
END_TEST

START_TEST(callback_on_cancelled_token_runs_at_once)
{
    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(t, 3), 0);
    struct counter c = { 0 };
    tether_callback *cb = on_cancel(t, count_cb, &c);
    ck_assert_int_eq(atomic_load(&c.runs), 1);
    ck_assert(pthread_equal(c.runner, pthread_self()));
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ck_assert_int_eq(atomic_load(&c.runs), 1);
    ck_assert(off_cancel(cb));
    free_token(t);
}
END_TEST

enum { CC_THREADS = 8, CC_CBS = 5 };

struct cc_shared {
    pthread_barrier_t bar;
    tether_token *t;
};

static void *cc_cancel(void *p)
{
    struct cc_shared *sh = p;
    pthread_barrier_wait(&sh->bar);
    if (tether_token_cancel(sh->t, 0) != 0)
        abort();
    return NULL;
}

START_TEST(callback_exactly_once_under_concurrent_cancels)
{
    th_baseline b = th_baseline_take();
    for (int it = 0; it < 200; it++) {
        struct cc_shared sh;
        pthread_barrier_init(&sh.bar, NULL, CC_THREADS);
        tether_token *root = new_token(NULL, TETHER_NEVER);
        sh.t = new_token(root, TETHER_NEVER);
        tether_token *kid = new_token(sh.t, TETHER_NEVER);
        struct counter c[CC_CBS], kc = { 0 };
        tether_callback *cb[CC_CBS];
        for (int i = 0; i < CC_CBS; i++) {
            memset(&c[i], 0, sizeof c[i]);
            cb[i] = on_cancel(sh.t, count_cb, &c[i]);
        }
        tether_callback *kcb = on_cancel(kid, count_cb, &kc);
        pthread_t th[CC_THREADS];
        for (int i = 0; i < CC_THREADS; i++)
            th[i] = spawn(cc_cancel, &sh);
        for (int i = 0; i < CC_THREADS; i++)
            join(th[i]);
        for (int i = 0; i < CC_CBS; i++) {
            ck_assert_int_eq(atomic_load(&c[i].runs), 1);
            ck_assert(off_cancel(cb[i]));
        }
        ck_assert_int_eq(atomic_load(&kc.runs), 1);
        ck_assert(off_cancel(kcb));
        assert_live(root);
        free_token(kid);
        free_token(sh.t);
        free_token(root);
        pthread_barrier_destroy(&sh.bar);
    }
    th_baseline_check(b);
}
END_TEST

START_TEST(off_cancel_before_cancel)
{
    tether_token *t = new_token(NULL, TETHER_NEVER);
    struct counter c = { 0 }, other = { 0 };
    tether_callback *cb = on_cancel(t, count_cb, &c);
    tether_callback *keep = on_cancel(t, count_cb, &other);
    ck_assert(!off_cancel(cb));
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ck_assert_int_eq(atomic_load(&c.runs), 0);
    ck_assert_int_eq(atomic_load(&other.runs), 1); /* the list survived the unlink */
    ck_assert(off_cancel(keep));
    free_token(t);

    /* ran may be NULL. */
    t = new_token(NULL, TETHER_NEVER);
    cb = on_cancel(t, count_cb, &c);
    ck_assert_int_eq(tether_token_off_cancel(cb, NULL), 0);
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ck_assert_int_eq(atomic_load(&c.runs), 0);
    free_token(t);
}
END_TEST

START_TEST(off_cancel_after_cancel)
{
    tether_token *t = new_token(NULL, TETHER_NEVER);
    struct counter c = { 0 };
    tether_callback *cb = on_cancel(t, count_cb, &c);
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ck_assert(off_cancel(cb));
    ck_assert_int_eq(atomic_load(&c.runs), 1);
    free_token(t);

    t = new_token(NULL, TETHER_NEVER);
    cb = on_cancel(t, count_cb, &c);
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ck_assert_int_eq(tether_token_off_cancel(cb, NULL), 0);
    ck_assert_int_eq(atomic_load(&c.runs), 2);
    free_token(t);
}
END_TEST

/* off_cancel from another thread while the callback runs waits for it. */
struct slow_cb {
    sem_t running, release, unreg_started;
    atomic_int finished;
    atomic_int off_returned;
    int finished_when_off_returned;
    tether_callback *cb;
    bool ran;
    int off_rc;
    pid_t unreg_tid;
    tether_token *t;
};

static void slow_cb_fn(void *p)
{
    struct slow_cb *s = p;
    sem_post(&s->running);
    while (sem_wait(&s->release) != 0)
        ;
    atomic_store(&s->finished, 1);
}

static void *slow_canceller(void *p)
{
    struct slow_cb *s = p;
    if (tether_token_cancel(s->t, 0) != 0)
        abort();
    return NULL;
}

static void *slow_unregister(void *p)
{
    struct slow_cb *s = p;
    s->unreg_tid = th_gettid();
    sem_post(&s->unreg_started);
    s->off_rc = tether_token_off_cancel(s->cb, &s->ran);
    s->finished_when_off_returned = atomic_load(&s->finished);
    atomic_store(&s->off_returned, 1);
    return NULL;
}

START_TEST(off_cancel_waits_for_running_callback)
{
    th_baseline b = th_baseline_take();
    static struct slow_cb s;
    memset(&s, 0, sizeof s);
    sem_init(&s.running, 0, 0);
    sem_init(&s.release, 0, 0);
    sem_init(&s.unreg_started, 0, 0);
    s.t = new_token(NULL, TETHER_NEVER);
    s.cb = on_cancel(s.t, slow_cb_fn, &s);

    pthread_t canceller = spawn(slow_canceller, &s);
    while (sem_wait(&s.running) != 0)
        ;
    /* The callback is provably running now, and held. */
    pthread_t unreg = spawn(slow_unregister, &s);
    while (sem_wait(&s.unreg_started) != 0)
        ;
    ck_assert_int_eq(th_wait_blocked(s.unreg_tid), 0);
    ck_assert_int_eq(atomic_load(&s.off_returned), 0);
    sem_post(&s.release);
    join(unreg);
    join(canceller);
    ck_assert_int_eq(s.off_rc, 0);
    ck_assert(s.ran);
    ck_assert_int_eq(s.finished_when_off_returned, 1);
    free_token(s.t);
    sem_destroy(&s.running);
    sem_destroy(&s.release);
    sem_destroy(&s.unreg_started);
    th_baseline_check(b);
}
END_TEST

/* A callback that unregisters itself. */
struct self_unreg {
    tether_callback *cb;
    int rc;
    bool ran;
    int runs;
};

static void self_unreg_fn(void *p)
{
    struct self_unreg *s = p;
    s->runs++;
    s->ran = false;
    s->rc = tether_token_off_cancel(s->cb, &s->ran);
}

START_TEST(callback_unregisters_itself)
{
    /* Run by a cancel. */
    tether_token *t = new_token(NULL, TETHER_NEVER);
    struct self_unreg s = { .rc = -1 };
    ck_assert_int_eq(tether_token_on_cancel(t, self_unreg_fn, &s, &s.cb), 0);
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ck_assert_int_eq(s.runs, 1);
    ck_assert_int_eq(s.rc, 0);
    ck_assert(s.ran);
    free_token(t);

    /* Run at once on registration (already cancelled). */
    t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    struct self_unreg s2 = { .rc = -1 };
    ck_assert_int_eq(tether_token_on_cancel(t, self_unreg_fn, &s2, &s2.cb), 0);
    ck_assert_int_eq(s2.runs, 1);
    ck_assert_int_eq(s2.rc, 0);
    ck_assert(s2.ran);
    free_token(t);
    /* No second off_cancel: the handle is gone (ASan would see a leak or a
     * double free otherwise). */
}
END_TEST

/* A callback that unregisters another callback of the same token. Once
 * off_cancel returns, that other callback has either finished running
 * (ran = true) or will never run (ran = false): its argument may be freed
 * right after. */
struct peer {
    atomic_int runs;
};

struct unreg_peer {
    tether_callback *peer_cb;
    struct peer *peer;
    bool ran;
    int rc;
    int peer_runs_at_return;
};

static void peer_fn(void *p)
{
    struct peer *pe = p;
    atomic_fetch_add(&pe->runs, 1);
}

static void unreg_peer_fn(void *p)
{
    struct unreg_peer *u = p;
    u->rc = tether_token_off_cancel(u->peer_cb, &u->ran);
    u->peer_runs_at_return = atomic_load(&u->peer->runs);
}

START_TEST(callback_unregisters_peer)
{
    /* _i = 0: the unregistering callback was registered first; 1: second. */
    tether_token *t = new_token(NULL, TETHER_NEVER);
    struct peer pe = { 0 };
    struct unreg_peer u = { .peer = &pe, .rc = -1 };
    tether_callback *ucb = NULL;
    if (_i == 0) {
        ucb = on_cancel(t, unreg_peer_fn, &u);
        u.peer_cb = on_cancel(t, peer_fn, &pe);
    } else {
        u.peer_cb = on_cancel(t, peer_fn, &pe);
        ucb = on_cancel(t, unreg_peer_fn, &u);
    }
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ck_assert_int_eq(u.rc, 0);
    int final_runs = atomic_load(&pe.runs);
    ck_assert_int_le(final_runs, 1);
    if (u.ran) {
        ck_assert_msg(u.peer_runs_at_return == 1,
                      "off_cancel reported ran=true but the peer had not run yet "
                      "(it ran %d time(s) after off_cancel returned)",
                      final_runs - u.peer_runs_at_return);
    } else {
        ck_assert_int_eq(final_runs, 0);
    }
    ck_assert(off_cancel(ucb));
    free_token(t);
}
END_TEST

START_TEST(callbacks_on_descendants_run_on_parent_cancel)
{
    tether_token *root = new_token(NULL, TETHER_NEVER);
    tether_token *a = new_token(root, TETHER_NEVER);
    tether_token *a1 = new_token(a, TETHER_NEVER);
    tether_token *b = new_token(root, TETHER_NEVER);
    struct counter cr = { 0 }, ca = { 0 }, ca1 = { 0 }, cb_ = { 0 };
    tether_callback *hr = on_cancel(root, count_cb, &cr);
    tether_callback *ha = on_cancel(a, count_cb, &ca);
    tether_callback *ha1 = on_cancel(a1, count_cb, &ca1);
    tether_callback *hb = on_cancel(b, count_cb, &cb_);

    ck_assert_int_eq(tether_token_cancel(a, 0), 0);
    ck_assert_int_eq(atomic_load(&ca.runs), 1);
    ck_assert_int_eq(atomic_load(&ca1.runs), 1);
    ck_assert(pthread_equal(ca1.runner, pthread_self()));
    ck_assert_int_eq(atomic_load(&cr.runs), 0);
    ck_assert_int_eq(atomic_load(&cb_.runs), 0);

    ck_assert_int_eq(tether_token_cancel(root, 0), 0);
    ck_assert_int_eq(atomic_load(&cr.runs), 1);
    ck_assert_int_eq(atomic_load(&cb_.runs), 1);
    ck_assert_int_eq(atomic_load(&ca.runs), 1);
    ck_assert_int_eq(atomic_load(&ca1.runs), 1);

    ck_assert(off_cancel(hr));
    ck_assert(off_cancel(ha));
    ck_assert(off_cancel(ha1));
    ck_assert(off_cancel(hb));
    free_token(a1);
    free_token(a);
    free_token(b);
    free_token(root);
}
END_TEST

/* Callbacks may call tether: cancel another tree, register on it. */
struct chain_cb {
    tether_token *next;
    struct counter *late;
    tether_callback *late_cb;
};

static void chain_cb_fn(void *p)
{
    struct chain_cb *c = p;
    if (tether_token_cancel(c->next, 9) != 0)
        abort();
    if (tether_token_on_cancel(c->next, count_cb, c->late, &c->late_cb) != 0)
        abort();
}

START_TEST(callback_may_call_tether)
{
    tether_token *t1 = new_token(NULL, TETHER_NEVER);
    tether_token *t2 = new_token(NULL, TETHER_NEVER);
    struct counter c2 = { 0 }, late = { 0 };
    struct chain_cb cc = { .next = t2, .late = &late };
    tether_callback *h1 = on_cancel(t1, chain_cb_fn, &cc);
    tether_callback *h2 = on_cancel(t2, count_cb, &c2);
    ck_assert_int_eq(tether_token_cancel(t1, 0), 0);
    ck_assert_int_eq(tether_token_cause(t2), TETHER_CAUSE_EXPLICIT);
    ck_assert_int_eq(tether_token_error(t2), 9);
    ck_assert_int_eq(atomic_load(&c2.runs), 1);
    ck_assert_int_eq(atomic_load(&late.runs), 1);
    ck_assert(off_cancel(h1));
    ck_assert(off_cancel(h2));
    ck_assert(off_cancel(cc.late_cb));
    free_token(t1);
    free_token(t2);
}
END_TEST

START_TEST(free_with_registered_callback)
{
    tether_token *parent = new_token(NULL, TETHER_NEVER);
    tether_token *t = new_token(parent, TETHER_NEVER);
    struct counter c = { 0 }, c2 = { 0 };
    tether_callback *cb = on_cancel(t, count_cb, &c);
    tether_callback *cb2 = on_cancel(t, count_cb, &c2);
    free_token(t);
    /* The child is unlinked: cancelling its former parent reaches nothing. */
    ck_assert_int_eq(tether_token_cancel(parent, 0), 0);
    ck_assert_int_eq(atomic_load(&c.runs), 0);
    ck_assert(!off_cancel(cb));
    ck_assert_int_eq(tether_token_off_cancel(cb2, NULL), 0);
    ck_assert_int_eq(atomic_load(&c2.runs), 0);
    free_token(parent);
}
END_TEST

/* ================================================================= memory */


static void churn(tether_token *parent, long n)
{
    struct counter c = { 0 };
    for (long i = 0; i < n; i++) {
        tether_token *k;
        if (tether_token_new(&k, parent, TETHER_NEVER) != 0)
            ck_abort_msg("tether_token_new failed at %ld", i);
        if (i % 8 == 0) {
            /* Some with a grandchild and a callback left registered. */
            tether_token *g;
            tether_callback *cb;
            if (tether_token_new(&g, k, tether_now() + tether_sec(100)) != 0 ||
                tether_token_on_cancel(g, count_cb, &c, &cb) != 0)
                ck_abort_msg("setup failed at %ld", i);
            if (tether_token_free(g) != 0)
                ck_abort_msg("free grandchild failed at %ld", i);
            bool ran = true;
            if (tether_token_off_cancel(cb, &ran) != 0 || ran)
                ck_abort_msg("off_cancel after free at %ld", i);
        }
        if (tether_token_free(k) != 0)
            ck_abort_msg("tether_token_free failed at %ld", i);
    }
    ck_assert_int_eq(atomic_load(&c.runs), 0);
}

START_TEST(million_children_memory_flat)
{
    tether_token *parent = new_token(NULL, TETHER_NEVER);
    churn(parent, 10000); /* warm up the allocator */
#ifdef TS_SANITIZED
    /* RSS is meaningless under ASan's quarantine: count live heap bytes. */
    size_t before = __sanitizer_get_current_allocated_bytes();
    churn(parent, 1000000);
    size_t after = __sanitizer_get_current_allocated_bytes();
    ck_assert_msg(after <= before + 64 * 1024, "live heap grew from %zu to %zu", before, after);
#else
    long before = rss_bytes();
    churn(parent, 1000000);
    long after = rss_bytes();
    /* A leak of even 8 bytes per child would be 8 MB. */
    ck_assert_msg(after - before < 4 * 1024 * 1024, "RSS grew from %ld to %ld", before, after);
#endif
    /* The parent has no children left. */
    free_token(parent);
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

    /* A passed deadline: ETIMEDOUT, and the check cancels the owner. */
    tether_token *owner = new_token(NULL, tether_now() - 1);
    tether_token *kid = new_token(owner, TETHER_NEVER);
    ck_assert_int_eq(tether_token_enter(kid), 0);
    ck_assert_int_eq(tether_token_cause(owner), TETHER_CAUSE_NONE);
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
    pthread_barrier_wait(&pt->bar); /* main has entered its cancelled token */
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

    pthread_t th = spawn(per_thread_main, &pt);
    pthread_barrier_wait(&pt.bar);
    pthread_barrier_wait(&pt.bar);
    ck_assert_ptr_null(pt.seen_first);
    ck_assert_int_eq(pt.check_first, 0);
    ck_assert_ptr_eq(pt.seen_after_enter, pt.mine);
    ck_assert_ptr_eq(tether_current(), t);
    ck_assert_int_eq(tether_check(), ECANCELED);
    pthread_barrier_wait(&pt.bar);
    join(th);

    ck_assert_int_eq(tether_token_leave(t), 0);
    free_token(t);
    free_token(pt.mine);
    pthread_barrier_destroy(&pt.bar);
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

    /* The block's token is a child of the current one: cancelling the outer
     * token reaches it (and is not "fired"). */
    struct block_probe q = { .outer = outer, .ret = -5, .cancel_outer = true };
    ck_assert_int_eq(tether_with_timeout(tether_sec(100), probe_fn, &q, &fired), -5);
    ck_assert(!fired);
    ck_assert_int_eq(q.cause_after_outer_cancel, TETHER_CAUSE_PARENT);
    ck_assert_int_eq(q.check_rc, ECANCELED);
    ck_assert_ptr_eq(tether_current(), outer);

    /* Under an already cancelled outer token the block is born cancelled. */
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
    /* Wait out the deadline without any cancellation point. */
    while (tether_now() <= *d)
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

    /* A deadline that passes while fn never looks does not fire. */
    tether_time_t d = tether_deadline_after(tether_ms(5));
    fired = true;
    ck_assert_int_eq(tether_with_deadline(d, no_check_fn, &d, &fired), 17);
    ck_assert(!fired);

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

/* ================================================================== suite */

/* ======================================================================
 * Spare eventfds (tether_trim)
 * ====================================================================== */

/* Open fds without tether_trim (th_fd_count trims). */
static int raw_fd_count(void)
{
    int n = 0;
    for (int fd = 0; fd < 4096; fd++)
        if (fcntl(fd, F_GETFD) >= 0)
            n++;
    return n;
}

/* Give the current token an eventfd: a tether_poll that must wait. */
static void wait_once(int fd, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    ck_assert_int_eq(tether_poll(&p, 1, timeout_ms), 0);
}

static int64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

START_TEST(spare_eventfds_reused_drained_and_trimmed)
{
    th_baseline b = th_baseline_take();
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    int base = raw_fd_count();

    /* A cancelled token's eventfd (its count is non-zero) is kept... */
    tether_token *a;
    ck_assert_int_eq(tether_token_new(&a, NULL, TETHER_NEVER), 0);
    ck_assert_int_eq(tether_token_enter(a), 0);
    wait_once(p[0], 1);
    ck_assert_int_eq(tether_token_leave(a), 0);
    ck_assert_int_eq(tether_token_cancel(a, 0), 0);
    ck_assert_int_eq(tether_token_free(a), 0);
    ck_assert_int_eq(raw_fd_count(), base + 1);

    /* ...and reused, reset, by the next token: a 100 ms wait on it sleeps
     * (a stale count would make it spin) and opens no new fd. */
    tether_token *c;
    ck_assert_int_eq(tether_token_new(&c, NULL, TETHER_NEVER), 0);
    ck_assert_int_eq(tether_token_enter(c), 0);
    int64_t cpu0 = thread_cpu_ns();
    tether_time_t t0 = tether_now();
    wait_once(p[0], 100);
    ck_assert_int_ge(tether_now() - t0, tether_ms(100));
    ck_assert_int_lt(thread_cpu_ns() - cpu0, tether_ms(50));
    ck_assert_int_eq(raw_fd_count(), base + 1);
    ck_assert_int_eq(tether_token_leave(c), 0);
    ck_assert_int_eq(tether_token_free(c), 0);

    /* At most four are kept; trim closes them. */
    enum { N = 6 };
    tether_token *t[N];
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(tether_token_new(&t[i], NULL, TETHER_NEVER), 0);
        ck_assert_int_eq(tether_token_enter(t[i]), 0);
        wait_once(p[0], 1);
    }
    ck_assert_int_eq(raw_fd_count(), base + N);
    for (int i = N - 1; i >= 0; i--) {
        ck_assert_int_eq(tether_token_leave(t[i]), 0);
        ck_assert_int_eq(tether_token_free(t[i]), 0);
    }
    ck_assert_int_eq(raw_fd_count(), base + 4);
    ck_assert_int_eq(tether_trim(), 4);
    ck_assert_int_eq(raw_fd_count(), base);
    ck_assert_int_eq(tether_trim(), 0);
    close(p[0]);
    close(p[1]);
    th_baseline_check(b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("token");
    TCase *tc;

    tc = tcase_create("basics");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, new_free_root);
    tcase_add_test(tc, bad_input);
    tcase_add_test(tc, free_with_live_child_is_ebusy);
    tcase_add_test(tc, free_while_entered_is_ebusy);
    suite_add_tcase(s, tc);

    tc = tcase_create("cancel");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, cancel_is_sticky);
    tcase_add_test(tc, cancel_user_error);
    tcase_add_test(tc, first_cause_kept_explicit_then_deadline);
    tcase_add_test(tc, first_cause_kept_deadline_then_explicit);
    tcase_add_test(tc, cancel_child_spares_parent_and_siblings);
    tcase_add_test(tc, cancel_parent_cancels_all_descendants);
    tcase_add_test(tc, cancel_deep_chain_small_stack);
    tcase_add_test(tc, child_of_cancelled_is_born_cancelled);
    tcase_add_loop_test(tc, cancel_wakes_sleeper_under_descendant, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("deadline");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, effective_deadline_is_min_over_ancestors);
    tcase_add_test(tc, earlier_inner_deadline_fires_alone);
    tcase_add_test(tc, later_inner_deadline_capped_by_outer);
    tcase_add_test(tc, deadline_past_now_later);
    tcase_add_test(tc, explicit_and_deadline_report_different_causes);
    tcase_add_test(tc, deadline_wakes_sleeper_under_descendant);
    suite_add_tcase(s, tc);

    tc = tcase_create("concurrent");
    tcase_set_timeout(tc, th_timeout_s(120));
    tcase_add_test(tc, random_tree_concurrent_cancel);
    tcase_add_test(tc, new_children_race_cancel);
    tcase_add_test(tc, callback_exactly_once_under_concurrent_cancels);
    suite_add_tcase(s, tc);

    tc = tcase_create("callbacks");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, callback_runs_once_in_cancelling_thread);
    tcase_add_test(tc, callback_on_cancelled_token_runs_at_once);
    tcase_add_test(tc, off_cancel_before_cancel);
    tcase_add_test(tc, off_cancel_after_cancel);
    tcase_add_test(tc, off_cancel_waits_for_running_callback);
    tcase_add_test(tc, callback_unregisters_itself);
    tcase_add_loop_test(tc, callback_unregisters_peer, 0, 2);
    tcase_add_test(tc, callbacks_on_descendants_run_on_parent_cancel);
    tcase_add_test(tc, callback_may_call_tether);
    tcase_add_test(tc, free_with_registered_callback);
    suite_add_tcase(s, tc);

    tc = tcase_create("memory");
    tcase_set_timeout(tc, th_timeout_s(60));
    tcase_add_test(tc, million_children_memory_flat);
    suite_add_tcase(s, tc);

    tc = tcase_create("current");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, current_is_null_by_default);
    tcase_add_test(tc, enter_leave_nesting_deep);
    tcase_add_test(tc, leave_wrong_token_is_eperm);
    tcase_add_test(tc, check_uses_current_token);
    tcase_add_test(tc, current_is_per_thread);
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

    tc = tcase_create("spare_eventfds");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, spare_eventfds_reused_drained_and_trimmed);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
