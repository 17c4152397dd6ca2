/*
 * Token cancellation: propagation down the tree, what it wakes, and trees
 * canceled and changed from many threads at once.
 */
#define _GNU_SOURCE
#include "token_fixtures.h"

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
    /* Explicit first, then the deadline passes: the explicit cause stays.
     * (A deadline already passed at creation could be fired by the timer
     * thread before the explicit cancel.) */
    tether_time_t d = tether_deadline_after(th_bound_ns(50));
    tether_token *t = new_token(NULL, d);
    tether_token *c = new_token(t, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(t, 42), 0);
    ck_assert_int_eq(tether_sleep_until(d), 0); /* no current token: a plain sleep */
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
    /* a1 was canceled first and keeps its own cause and error. */
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

/* Propagation must not recurse: a very deep chain canceled from a thread
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
    thread_join(th);
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

START_TEST(child_of_canceled_is_born_canceled)
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

    /* Born under a deadline-canceled parent: reports the deadline. */
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

/* An explicit cancel of an ancestor wakes a thread asleep under a
 * descendant. _i = 0: canceled while it is blocked; 1: before it sleeps. */
START_TEST(cancel_wakes_sleeper_under_descendant)
{
    th_baseline b = th_baseline_take();
    tether_token *root = new_token(NULL, TETHER_NEVER);
    tether_token *mid = new_token(root, TETHER_NEVER);
    tether_token *leaf = new_token(mid, TETHER_NEVER);
    struct sleeper s = { .t = leaf };
    sem_init(&s.started, 0, 0);
    tether_time_t canceled_at;
    pthread_t th;
    if (_i == 0) {
        th = thread_start(sleep_under, &s);
        while (sem_wait(&s.started) != 0)
            ;
        ck_assert_int_eq(th_wait_blocked(s.tid), 0);
        canceled_at = tether_now();
        ck_assert_int_eq(tether_token_cancel(root, 12), 0);
    } else {
        canceled_at = tether_now();
        ck_assert_int_eq(tether_token_cancel(root, 12), 0);
        th = thread_start(sleep_under, &s);
    }
    thread_join(th);
    ck_assert_int_eq(s.rc, -1);
    ck_assert_int_eq(s.err, ECANCELED);
    ck_assert_int_lt(s.woke - canceled_at, th_bound_ns(2000));
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
        th[i] = thread_start(tree_worker_main, &w[i]);
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
        /* Each thread: a random order over all nodes, canceling a random
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
                ck_assert_msg(targeted[i], "iter %d node %d explicit but never canceled", it, i);
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
        thread_join(th[i]);
    pthread_barrier_destroy(&sh.start);
    pthread_barrier_destroy(&sh.done);
    th_baseline_check(b);
}
END_TEST

/* New children (and callbacks on them) racing a cancel of their parent:
 * every child ends canceled, every callback runs exactly once. */
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
            th[i] = thread_start(race_make, &m[i]);
        }
        th[RACE_MAKERS] = thread_start(race_cancel, &sh);
        for (int i = 0; i <= RACE_MAKERS; i++)
            thread_join(th[i]);
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
            th[i] = thread_start(cc_cancel, &sh);
        for (int i = 0; i < CC_THREADS; i++)
            thread_join(th[i]);
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

static Suite *suite(void)
{
    Suite *s = suite_create("token_cancel");
    TCase *tc;

    tc = tcase_create("cancel");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, cancel_is_sticky);
    tcase_add_test(tc, cancel_user_error);
    tcase_add_test(tc, first_cause_kept_explicit_then_deadline);
    tcase_add_test(tc, first_cause_kept_deadline_then_explicit);
    tcase_add_test(tc, cancel_child_spares_parent_and_siblings);
    tcase_add_test(tc, cancel_parent_cancels_all_descendants);
    tcase_add_test(tc, cancel_deep_chain_small_stack);
    tcase_add_test(tc, child_of_canceled_is_born_canceled);
    tcase_add_loop_test(tc, cancel_wakes_sleeper_under_descendant, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("concurrent");
    tcase_set_timeout(tc, th_timeout_s(120));
    tcase_add_test(tc, random_tree_concurrent_cancel);
    tcase_add_test(tc, new_children_race_cancel);
    tcase_add_test(tc, callback_exactly_once_under_concurrent_cancels);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
