/*
 * Limits and crowds: max_children (blocking spawn and try-spawn), and scopes
 * with many children at once.
 */
#define _GNU_SOURCE
#include "scope_fixtures.h"

/* ---------------------------------------------------------------------- */
/* Trees and crowds                                                       */

enum { NEST_DEPTH = 3, NEST_WIDTH = 4 };

typedef struct nest {
    atomic_int leaves_ready;
    sem_t all_ready;
    atomic_int leaves_canceled;
    atomic_int inner_scopes, inner_as_expected;
    struct nest_level {
        struct nest *n;
        int depth;
    } level[NEST_DEPTH + 1];
} nest;

static int nest_main(void *arg)
{
    struct nest_level *lv = arg;
    nest *n = lv->n;
    if (lv->depth == NEST_DEPTH) {
        if (atomic_fetch_add(&n->leaves_ready, 1) + 1 == 16 * NEST_WIDTH)
            sem_post(&n->all_ready);
        int rc = tether_sleep_for(DAY) < 0 ? errno : NOT_CANCELED;
        if (rc == ECANCELED)
            atomic_fetch_add(&n->leaves_canceled, 1);
        return rc;
    }
    /* The child's current token is the parent of its scope by default. */
    tether_scope *s;
    int rc = tether_scope_open(&s, NULL);
    if (rc)
        return rc;
    for (int i = 0; i < NEST_WIDTH; i++)
        if ((rc = tether_spawn(s, nest_main, &n->level[lv->depth + 1], NULL, NULL)) != 0)
            break;
    tether_result r;
    int jrc = tether_scope_join(s, &r);
    tether_scope_free(s);
    if (rc || jrc)
        return rc ? rc : jrc;
    atomic_fetch_add(&n->inner_scopes, 1);
    if (r.outcome == TETHER_OUTCOME_CANCELED && r.cause == TETHER_CAUSE_PARENT &&
        r.spawned == NEST_WIDTH && r.canceled == NEST_WIDTH && r.failed == 0)
        atomic_fetch_add(&n->inner_as_expected, 1);
    return tether_check();
}

START_TEST(test_nested_scopes_canceled_from_root)
{
    th_baseline base = th_baseline_take();
    nest *n = calloc(1, sizeof *n);
    ck_assert_ptr_nonnull(n);
    sem_init(&n->all_ready, 0, 0);
    for (int d = 0; d <= NEST_DEPTH; d++)
        n->level[d] = (struct nest_level){ .n = n, .depth = d };
    _Static_assert(NEST_DEPTH == 3, "16 * NEST_WIDTH leaves assumes three levels");

    tether_scope *root = open_scope(NULL);
    for (int i = 0; i < NEST_WIDTH; i++)
        spawn_ok(root, nest_main, &n->level[1], NULL, NULL);
    sem_wait_ok(&n->all_ready);
    ck_assert_int_eq(th_thread_count(), base.threads + 4 + 16 + 64);
    tether_time_t t0 = tether_now();
    ck_assert_int_eq(tether_scope_cancel(root), 0);
    tether_result r = join_and_free(root);
    ck_assert_int_le(tether_now() - t0, th_bound_ns(2000));

    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_EXPLICIT);
    ck_assert_int_eq(r.error, ECANCELED);
    ck_assert_uint_eq(r.spawned, NEST_WIDTH);
    ck_assert_uint_eq(r.canceled, NEST_WIDTH);
    ck_assert_int_eq(atomic_load(&n->leaves_canceled), 64);
    ck_assert_int_eq(atomic_load(&n->inner_scopes), 4 + 16);
    ck_assert_int_eq(atomic_load(&n->inner_as_expected), 4 + 16);
    sem_destroy(&n->all_ready);
    free(n);
    th_baseline_check(base);
}
END_TEST

typedef struct herd {
    int n;
    atomic_int ready, canceled;
    sem_t all_ready;
} herd;

static int herd_main(void *arg)
{
    herd *h = arg;
    if (atomic_fetch_add(&h->ready, 1) + 1 == h->n)
        sem_post(&h->all_ready);
    int rc = tether_sleep_for(DAY) < 0 ? errno : NOT_CANCELED;
    if (rc == ECANCELED)
        atomic_fetch_add(&h->canceled, 1);
    return rc;
}

START_TEST(test_thousand_children_canceled_at_once)
{
    th_baseline base = th_baseline_take();
    herd h = { .n = 1000 };
    sem_init(&h.all_ready, 0, 0);
    tether_scope *s = open_scope(NULL);
    tether_spawn_opts o = { .stack_size = 256 * 1024 };
    for (int i = 0; i < h.n; i++)
        ck_assert_int_eq(tether_spawn(s, herd_main, &h, &o, NULL), 0);
    sem_wait_ok(&h.all_ready);
    tether_time_t t0 = tether_now();
    ck_assert_int_eq(tether_scope_cancel(s), 0);
    tether_result r = join_and_free(s);
    int64_t took = tether_now() - t0;

    printf("thousand_children: convergence_ns %lld (%.2f ms), cancel to join returned %.2f ms\n",
           (long long)r.convergence_ns, r.convergence_ns / 1e6, took / 1e6);
    fflush(stdout);
    ck_assert_int_eq(atomic_load(&h.canceled), h.n);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
    ck_assert_uint_eq(r.spawned, (unsigned)h.n);
    ck_assert_uint_eq(r.canceled, (unsigned)h.n);
    ck_assert_int_gt(r.convergence_ns, 0);
    ck_assert_int_le(r.convergence_ns, took);
    ck_assert_int_le(took, th_bound_ns(5000));
    sem_destroy(&h.all_ready);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_leak_ten_thousand_scopes)
{
    th_baseline base = th_baseline_take();
    int iters = stress(10000);
    long rss_early = 0;
    for (int i = 0; i < iters; i++) {
        tether_scope *s = open_scope(NULL);
        spawn_ok(s, return_zero, NULL, NULL, NULL);
        spawn_ok(s, return_zero, NULL, NULL, NULL);
        tether_result r = join_and_free(s);
        ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
        ck_assert_uint_eq(r.succeeded, 2);
        if (i + 1 == 1000) {
            ck_assert_int_eq(th_wait_thread_count(base.threads), base.threads);
            ck_assert_int_eq(th_fd_count(), base.fds);
            rss_early = rss_bytes();
        }
    }
    long rss_late = rss_bytes();
    printf("leak: %d scopes x 2 children; RSS after 1000: %ld KiB, after %d: %ld KiB\n", iters,
           rss_early / 1024, iters, rss_late / 1024);
    fflush(stdout);
#if !defined(TS_ASAN) && !defined(TS_TSAN)
    /* Sanitizers keep freed memory in quarantine (ASan, 256 MiB by default)
     * and shadow state per thread and address (TSan): RSS says nothing about
     * leaks there (LeakSanitizer checks them under ASan). */
    ck_assert_int_le(rss_late - rss_early, 4L << 20);
#endif
    th_baseline_check(base);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* max_children                                                           */

typedef struct crowd {
    atomic_int live, max_live, done;
} crowd;

static int crowd_main(void *arg)
{
    crowd *c = arg;
    int now = atomic_fetch_add(&c->live, 1) + 1;
    int m = atomic_load(&c->max_live);
    while (now > m && !atomic_compare_exchange_weak(&c->max_live, &m, now))
        ;
    tether_sleep_for(tether_ms(1));
    atomic_fetch_sub(&c->live, 1);
    atomic_fetch_add(&c->done, 1);
    return 0;
}

START_TEST(test_max_children_never_exceeded)
{
    th_baseline base = th_baseline_take();
    crowd c = { 0 };
    tether_scope_opts o = { .max_children = 3 };
    tether_scope *s = open_scope(&o);
    for (int i = 0; i < 30; i++)
        ck_assert_int_eq(tether_spawn(s, crowd_main, &c, NULL, NULL), 0);
    tether_result r = join_and_free(s);
    ck_assert_int_le(atomic_load(&c.max_live), 3);
    ck_assert_int_ge(atomic_load(&c.max_live), 1);
    ck_assert_int_eq(atomic_load(&c.done), 30);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_uint_eq(r.spawned, 30);
    ck_assert_uint_eq(r.succeeded, 30);
    th_baseline_check(base);
}
END_TEST

/* Fill a max-3 scope with children held on a gate. */
typedef struct full {
    sem_t gate, ready;
    gated g[3];
} full;

static tether_scope *full_scope(const tether_scope_opts *o, full *f)
{
    sem_init(&f->gate, 0, 0);
    sem_init(&f->ready, 0, 0);
    tether_scope *s = open_scope(o);
    for (int i = 0; i < 3; i++) {
        f->g[i] = (gated){ .gate = &f->gate, .ready = &f->ready };
        ck_assert_int_eq(tether_try_spawn(s, gated_main, &f->g[i], NULL, NULL), 0);
    }
    for (int i = 0; i < 3; i++)
        sem_wait_ok(&f->ready);
    return s;
}

/* Release the children of full_scope; join and free the scope. */
static tether_result release_full(tether_scope *s, full *f)
{
    for (int i = 0; i < 3; i++)
        sem_post(&f->gate);
    tether_result r = join_and_free(s);
    sem_destroy(&f->gate);
    sem_destroy(&f->ready);
    return r;
}

START_TEST(test_try_spawn_eagain_when_full)
{
    th_baseline base = th_baseline_take();
    full f;
    tether_scope_opts o = { .max_children = 3 };
    tether_scope *s = full_scope(&o, &f);
    int threads = th_thread_count();
    tether_task *t = (tether_task *)&t; /* must be reset to NULL */
    ck_assert_int_eq(tether_try_spawn(s, return_zero, NULL, NULL, &t), EAGAIN);
    ck_assert_ptr_null(t);
    ck_assert_int_eq(th_thread_count(), threads);
    sem_post(&f.gate); /* one leaves: a slot frees up */
    int zero = 0;
    ck_assert_int_eq(tether_spawn(s, return_int, &zero, NULL, &t), 0); /* waits for it */
    ck_assert_ptr_nonnull(t);
    tether_result r = release_full(s, &f); /* one post more than needed: harmless */
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_uint_eq(r.spawned, 4);
    ck_assert_uint_eq(r.succeeded, 4);
    th_baseline_check(base);
}
END_TEST

typedef struct cancel_when_blocked {
    pid_t tid;
    tether_token *t;
} cancel_when_blocked;

static void *cancel_when_blocked_main(void *arg)
{
    cancel_when_blocked *c = arg;
    th_wait_blocked(c->tid); /* cancels anyway after the bound: both orders pass */
    tether_token_cancel(c->t, 0);
    return NULL;
}

START_TEST(test_spawn_slot_wait_canceled_by_callers_token)
{
    th_baseline base = th_baseline_take();
    full f;
    tether_scope_opts o = { .max_children = 3 };
    tether_scope *s = full_scope(&o, &f); /* no current token: no parent */
    tether_token *mine;
    ck_assert_int_eq(tether_token_new(&mine, NULL, TETHER_NEVER), 0);
    ck_assert_int_eq(tether_token_enter(mine), 0);
    cancel_when_blocked c = { .tid = th_gettid(), .t = mine };
    int threads = th_thread_count();
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, cancel_when_blocked_main, &c), 0);
    tether_task *t;
    ck_assert_int_eq(tether_spawn(s, return_zero, NULL, NULL, &t), ECANCELED);
    ck_assert_ptr_null(t);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(th_wait_thread_count(threads), threads); /* no child was created */
    ck_assert_int_eq(tether_token_leave(mine), 0);
    /* The scope itself was not touched. */
    ck_assert_int_eq(tether_token_cause(tether_scope_token(s)), TETHER_CAUSE_NONE);
    tether_result r = release_full(s, &f);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_uint_eq(r.spawned, 3);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(f.g[i].check, 0);
    ck_assert_int_eq(tether_token_free(mine), 0);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_spawn_slot_wait_callers_deadline)
{
    th_baseline base = th_baseline_take();
    full f;
    tether_scope_opts o = { .max_children = 3 };
    tether_scope *s = full_scope(&o, &f);
    tether_token *mine;
    tether_time_t t0 = tether_now();
    ck_assert_int_eq(tether_token_new(&mine, NULL, tether_deadline_after(tether_ms(50))), 0);
    ck_assert_int_eq(tether_token_enter(mine), 0);
    ck_assert_int_eq(tether_spawn(s, return_zero, NULL, NULL, NULL), ETIMEDOUT);
    int64_t elapsed = tether_now() - t0;
    ck_assert_int_eq(tether_token_leave(mine), 0);
    ck_assert_int_ge(elapsed, tether_ms(50));
    ck_assert_int_le(elapsed, tether_ms(50) + th_bound_ns(1000));
    ck_assert_int_eq(tether_token_cause(mine), TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(tether_token_cause(tether_scope_token(s)), TETHER_CAUSE_NONE);
    tether_result r = release_full(s, &f);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_uint_eq(r.spawned, 3);
    ck_assert_int_eq(tether_token_free(mine), 0);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_spawn_slot_wait_scope_deadline)
{
    th_baseline base = th_baseline_take();
    full f;
    tether_time_t t0 = tether_now();
    const int64_t timeout = th_bound_ns(100); /* room to fill the scope first */
    tether_scope_opts o = { .max_children = 3, .timeout_ns = timeout };
    tether_scope *s = full_scope(&o, &f);
    ck_assert_int_eq(tether_spawn(s, return_zero, NULL, NULL, NULL), ETIMEDOUT);
    ck_assert_int_ge(tether_now() - t0, timeout);
    ck_assert_int_eq(tether_token_cause(tether_scope_token(s)), TETHER_CAUSE_DEADLINE);
    /* Canceled now: refused at once. */
    ck_assert_int_eq(tether_try_spawn(s, return_zero, NULL, NULL, NULL), ETIMEDOUT);
    tether_result r = release_full(s, &f);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_DEADLINE_EXCEEDED);
    ck_assert_uint_eq(r.spawned, 3);
    th_baseline_check(base);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("scope_limits");
    TCase *tc;

    tc = tcase_create("max_children");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, test_max_children_never_exceeded);
    tcase_add_test(tc, test_try_spawn_eagain_when_full);
    tcase_add_test(tc, test_spawn_slot_wait_canceled_by_callers_token);
    tcase_add_test(tc, test_spawn_slot_wait_callers_deadline);
    tcase_add_test(tc, test_spawn_slot_wait_scope_deadline);
    suite_add_tcase(s, tc);

    tc = tcase_create("crowds");
    tcase_set_timeout(tc, th_timeout_s(60) * stress(1)); /* iteration counts scale too */
    tcase_add_test(tc, test_nested_scopes_canceled_from_root);
    tcase_add_test(tc, test_thousand_children_canceled_at_once);
    tcase_add_test(tc, test_leak_ten_thousand_scopes);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
