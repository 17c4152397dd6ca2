/*
 * Cancellation callbacks: when and where they run, registering and
 * unregistering them (from themselves and from peers), and ordering.
 */
#define _GNU_SOURCE
#include "token_fixtures.h"

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

START_TEST(callback_runs_once_in_canceling_thread)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    struct counter c = { 0 };
    tether_callback *cb = on_cancel(t, count_cb, &c);
    ck_assert_int_eq(atomic_load(&c.runs), 0);

    struct cancel_arg a = { .t = t };
    pthread_t th = thread_start(cancel_thread, &a);
    thread_join(th);
    ck_assert_int_eq(atomic_load(&c.runs), 1);
    ck_assert(pthread_equal(c.runner, a.self));
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ck_assert_int_eq(atomic_load(&c.runs), 1);
    ck_assert(off_cancel(cb));
    free_token(t);
    th_baseline_check(b);
}
END_TEST

START_TEST(callback_on_canceled_token_runs_at_once)
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

static void *slow_canceler(void *p)
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

    pthread_t canceler = thread_start(slow_canceler, &s);
    while (sem_wait(&s.running) != 0)
        ;
    /* The callback is provably running now, and held. */
    pthread_t unreg = thread_start(slow_unregister, &s);
    while (sem_wait(&s.unreg_started) != 0)
        ;
    ck_assert_int_eq(th_wait_blocked(s.unreg_tid), 0);
    ck_assert_int_eq(atomic_load(&s.off_returned), 0);
    sem_post(&s.release);
    thread_join(unreg);
    thread_join(canceler);
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

    /* Run at once on registration (already canceled). */
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
    /* The child is unlinked: canceling its former parent reaches nothing. */
    ck_assert_int_eq(tether_token_cancel(parent, 0), 0);
    ck_assert_int_eq(atomic_load(&c.runs), 0);
    ck_assert(!off_cancel(cb));
    ck_assert_int_eq(tether_token_off_cancel(cb2, NULL), 0);
    ck_assert_int_eq(atomic_load(&c2.runs), 0);
    free_token(parent);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("token_callbacks");
    TCase *tc;

    tc = tcase_create("callbacks");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, callback_runs_once_in_canceling_thread);
    tcase_add_test(tc, callback_on_canceled_token_runs_at_once);
    tcase_add_test(tc, off_cancel_before_cancel);
    tcase_add_test(tc, off_cancel_after_cancel);
    tcase_add_test(tc, off_cancel_waits_for_running_callback);
    tcase_add_test(tc, callback_unregisters_itself);
    tcase_add_loop_test(tc, callback_unregisters_peer, 0, 2);
    tcase_add_test(tc, callbacks_on_descendants_run_on_parent_cancel);
    tcase_add_test(tc, callback_may_call_tether);
    tcase_add_test(tc, free_with_registered_callback);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
