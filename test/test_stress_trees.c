/*
 * Race stress, trees: cancels and deadlines cutting deep and wide token and
 * scope trees at random nodes while they grow and shrink.
 */
#define _GNU_SOURCE
#include "stress_fixtures.h"

/* ====================================================================== */
/* Random token trees 30 levels deep, canceled from random nodes by       */
/* several threads                                                         */
/* ====================================================================== */

enum { TREE_NODES = 160, TREE_DEPTH = 30, CANCELERS = 4, CUTS = 3 };

static struct {
    tether_token *t[TREE_NODES];
    int parent[TREE_NODES], depth[TREE_NODES];
    tether_callback *cb[TREE_NODES];
    atomic_int hits[TREE_NODES];
    atomic_bool target[TREE_NODES];
    int error_of[TREE_NODES]; /* the canceler's error, for targets */
    pthread_barrier_t go;
    uint64_t seed;
    long run;
} TR;

static void *tree_canceler(void *arg)
{
    int me = (int)(intptr_t)arg;
    uint64_t rng = th_seed_for(TR.seed, (uint64_t)TR.run * CANCELERS + (uint64_t)me);
    static const int errors[CANCELERS] = { EIO, EPIPE, ENOSPC, EBADMSG };
    int picks[CUTS];
    for (int k = 0; k < CUTS; k++) {
        picks[k] = (int)(th_rand(&rng) % TREE_NODES);
        atomic_store(&TR.target[picks[k]], true);
    }
    int64_t at[CUTS];
    for (int k = 0; k < CUTS; k++)
        at[k] = rand_ns(&rng, 100);
    barrier(&TR.go);
    tether_time_t t0 = tether_now();
    for (int k = 0; k < CUTS; k++) {
        spin_ns(t0 + at[k] - tether_now());
        int x = picks[k];
        int rc = tether_token_cancel(TR.t[x], errors[me]);
        EXPECT(rc == 0, "cancel: %d", rc);
    }
    return NULL;
}

/* Threads blocked under deep nodes: one in a futex sleep, one in a read. */
struct deep_waiter {
    tether_token *t;
    int fd;
    bool read;
    long result;
    int err;
};

static void *deep_waiter_main(void *arg)
{
    struct deep_waiter *w = arg;
    tether_token_enter(w->t);
    char c;
    w->result = w->read ? tether_read(w->fd, &c, 1) : tether_sleep_until(TETHER_NEVER);
    w->err = errno;
    tether_token_leave(w->t);
    return NULL;
}

START_TEST(random_token_trees)
{
    th_baseline b = th_baseline_take();
    TR.seed = th_seed("random_token_trees");
    uint64_t rng = TR.seed;
    long n = stress(40);
    int p[2];
    REQUIRE(pipe(p) == 0, "pipe");
    for (TR.run = 0; TR.run < n; TR.run++) {
        /* A spine of 30 levels, the rest hung off random nodes above it. */
        for (int k = 0; k < TREE_NODES; k++) {
            int parent = k == 0 ? -1 : k < TREE_DEPTH ? k - 1 : (int)(th_rand(&rng) % (unsigned)k);
            if (parent >= 0 && TR.depth[parent] >= TREE_DEPTH - 1)
                parent = TR.parent[parent];
            TR.parent[k] = parent;
            TR.depth[k] = parent < 0 ? 0 : TR.depth[parent] + 1;
            TR.t[k] = new_token(parent < 0 ? NULL : TR.t[parent], TETHER_NEVER);
            atomic_store(&TR.hits[k], 0);
            atomic_store(&TR.target[k], false);
            REQUIRE(tether_token_on_cancel(TR.t[k], count_cb, &TR.hits[k], &TR.cb[k]) == 0,
                    "on_cancel");
        }
        struct deep_waiter w[2] = { { .t = TR.t[TREE_DEPTH - 1], .fd = p[0], .read = false },
                                    { .t = TR.t[TREE_NODES - 1], .fd = p[0], .read = true } };
        pthread_t wt[2];
        for (int k = 0; k < 2; k++)
            REQUIRE(pthread_create(&wt[k], NULL, deep_waiter_main, &w[k]) == 0, "create");

        pthread_barrier_init(&TR.go, NULL, CANCELERS);
        pthread_t ct[CANCELERS];
        for (int k = 0; k < CANCELERS; k++)
            REQUIRE(pthread_create(&ct[k], NULL, tree_canceler, (void *)(intptr_t)k) == 0,
                    "create");
        for (int k = 0; k < CANCELERS; k++)
            ck_assert_int_eq(pthread_join(ct[k], NULL), 0);
        pthread_barrier_destroy(&TR.go);
        no_bad();

        /* Every node is canceled iff it or an ancestor was a target; the
         * cause and error say where the cancellation came from. */
        for (int k = 0; k < TREE_NODES; k++) {
            bool want = false;
            for (int a = k; a >= 0 && !want; a = TR.parent[a])
                want = atomic_load(&TR.target[a]);
            tether_cause c = tether_token_cause(TR.t[k]);
            REQUIRE((c != TETHER_CAUSE_NONE) == want, "run %ld node %d: cause %s, want %d", TR.run,
                    k, tether_cause_name(c), want);
            REQUIRE(atomic_load(&TR.hits[k]) == (want ? 1 : 0), "node %d: callback ran %d times", k,
                    atomic_load(&TR.hits[k]));
            if (c == TETHER_CAUSE_EXPLICIT)
                REQUIRE(atomic_load(&TR.target[k]), "node %d: explicit but no target", k);
            if (c == TETHER_CAUSE_PARENT) {
                int pa = TR.parent[k];
                REQUIRE(pa >= 0 && tether_token_cause(TR.t[pa]) != TETHER_CAUSE_NONE,
                        "node %d: parent cause, parent live", k);
                REQUIRE(tether_token_error(TR.t[k]) == tether_token_error(TR.t[pa]),
                        "node %d: error %d, parent's %d", k, tether_token_error(TR.t[k]),
                        tether_token_error(TR.t[pa]));
                REQUIRE(tether_token_root_cause(TR.t[k]) == TETHER_CAUSE_EXPLICIT,
                        "node %d: root cause %s", k,
                        tether_cause_name(tether_token_root_cause(TR.t[k])));
            }
        }
        /* Whatever is left, the root ends; the blocked threads wake. */
        REQUIRE(tether_token_cancel(TR.t[0], 0) == 0, "cancel root");
        for (int k = 0; k < 2; k++) {
            ck_assert_int_eq(pthread_join(wt[k], NULL), 0);
            REQUIRE(w[k].result == -1 && w[k].err == ECANCELED, "waiter %d: %ld %s", k, w[k].result,
                    strerror(w[k].err));
        }
        for (int k = TREE_NODES - 1; k >= 0; k--) {
            bool ran = false;
            REQUIRE(tether_token_off_cancel(TR.cb[k], &ran) == 0 && ran, "off_cancel %d", k);
            REQUIRE(atomic_load(&TR.hits[k]) == 1, "node %d: callback ran %d times", k,
                    atomic_load(&TR.hits[k]));
            REQUIRE(tether_token_free(TR.t[k]) == 0, "free %d", k);
        }
    }
    close(p[0]);
    close(p[1]);
    th_baseline_check(b);
}
END_TEST

/* When tether_token_cancel(a) returns, a and its whole subtree report
 * canceled, even while another thread is canceling a node inside that
 * subtree at the same moment ("cancel a token and all its descendants"). */
enum { CHAIN = 30 };

static struct {
    pthread_barrier_t go, done, sleep;
    tether_token *t[CHAIN];
    int inner, outer;
    int64_t skew_ns[2];
    bool stop;
    atomic_int sleeper_tid;
} LN;

static void *inner_canceler(void *arg)
{
    (void)arg;
    for (;;) {
        barrier(&LN.go);
        if (LN.stop)
            return NULL;
        spin_ns(LN.skew_ns[1]);
        tether_token_cancel(LN.t[LN.inner], EPIPE);
        barrier(&LN.done);
    }
}

/* Sleeps under the inner token, so that canceling it wakes a futex. */
static void *inner_sleeper(void *arg)
{
    (void)arg;
    atomic_store(&LN.sleeper_tid, th_gettid());
    for (;;) {
        barrier(&LN.sleep);
        if (LN.stop)
            return NULL;
        tether_token_enter(LN.t[LN.inner]);
        int rc = tether_sleep_until(TETHER_NEVER);
        EXPECT(rc == -1 && errno == ECANCELED, "sleep: %d", errno);
        tether_token_leave(LN.t[LN.inner]);
        barrier(&LN.done);
    }
}

START_TEST(cancel_returns_with_subtree_canceled)
{
    th_baseline b = th_baseline_take();
    uint64_t rng = th_seed("cancel_returns_with_subtree_canceled");
    long n = stress(1000);
    memset(&LN, 0, sizeof LN);
    pthread_barrier_init(&LN.go, NULL, 2);
    pthread_barrier_init(&LN.sleep, NULL, 2);
    pthread_barrier_init(&LN.done, NULL, 3);
    pthread_t th, sl;
    REQUIRE(pthread_create(&th, NULL, inner_canceler, NULL) == 0, "pthread_create");
    REQUIRE(pthread_create(&sl, NULL, inner_sleeper, NULL) == 0, "pthread_create");
    long i, stale = 0;
    int stale_at = -1;
    for (i = 0; i < n && !stale; i++) {
        for (int k = 0; k < CHAIN; k++)
            LN.t[k] = new_token(k ? LN.t[k - 1] : NULL, TETHER_NEVER);
        LN.inner = 1 + (int)(th_rand(&rng) % (CHAIN - 2));
        LN.outer = (int)(th_rand(&rng) % (unsigned)LN.inner);
        LN.skew_ns[0] = rand_ns(&rng, 3);
        LN.skew_ns[1] = rand_ns(&rng, 2);
        barrier(&LN.sleep);
        int tid;
        while ((tid = atomic_load(&LN.sleeper_tid)) == 0)
            ;
        REQUIRE(th_wait_blocked(tid) == 0, "the sleeper never slept");
        barrier(&LN.go);
        spin_ns(LN.skew_ns[0]);
        REQUIRE(tether_token_cancel(LN.t[LN.outer], EIO) == 0, "cancel");
        for (int k = LN.outer; k < CHAIN; k++)
            if (tether_token_check(LN.t[k]) == 0) {
                stale++;
                stale_at = k;
                break;
            }
        barrier(&LN.done);
        for (int k = CHAIN - 1; k >= 0; k--)
            REQUIRE(tether_token_free(LN.t[k]) == 0, "free");
    }
    LN.stop = true;
    barrier(&LN.go);
    barrier(&LN.sleep);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(pthread_join(sl, NULL), 0);
    no_bad();
    pthread_barrier_destroy(&LN.go);
    pthread_barrier_destroy(&LN.sleep);
    pthread_barrier_destroy(&LN.done);
    fprintf(stderr, "cancel returns with subtree canceled: %ld runs, %ld stale\n", i, stale);
    ck_assert_msg(stale == 0,
                  "run %ld: tether_token_cancel(depth %d) returned while depth %d below it still "
                  "checked 0 (another thread was canceling depth %d)",
                  i, LN.outer, stale_at, LN.inner);
    th_baseline_check(b);
}
END_TEST

/* ------------------------------------------- random scope trees, 30 deep */

enum { SCOPE_NODES_MAX = 96 };

static struct {
    tether_scope *_Atomic scope[SCOPE_NODES_MAX];
    atomic_int nodes;   /* handed out */
    atomic_int pending; /* spawned, not yet settled */
    atomic_int canceled_ok;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool release; /* owners may join now */
    int pipe[2];
    uint64_t seed;
    bool racing; /* cancel while the tree is being built */
    pthread_barrier_t go;
} ST;

static void settle(void)
{
    pthread_mutex_lock(&ST.mu);
    if (atomic_fetch_sub(&ST.pending, 1) == 1)
        pthread_cond_broadcast(&ST.cv);
    pthread_mutex_unlock(&ST.mu);
}

static int scope_node(void *arg);

/* Spawn a node at depth+1 into s; counts it pending if it started. */
static void spawn_node(tether_scope *s, int depth, bool spine)
{
    intptr_t code = (intptr_t)depth << 1 | spine;
    atomic_fetch_add(&ST.pending, 1);
    tether_spawn_opts o = { .stack_size = 128 * 1024 };
    int rc = tether_spawn(s, scope_node, (void *)code, &o, NULL);
    if (rc) {
        EXPECT(rc == ECANCELED, "spawn: %s", strerror(rc));
        settle();
    }
}

static int scope_node(void *arg)
{
    intptr_t code = (intptr_t)arg;
    int depth = (int)(code >> 1) + 1;
    bool spine = code & 1;
    int id = atomic_fetch_add(&ST.nodes, 1);
    uint64_t rng = th_seed_for(ST.seed, (uint64_t)id + 1000);
    if (depth >= TREE_DEPTH || id >= SCOPE_NODES_MAX) {
        /* A leaf: block until canceled. */
        settle();
        if (th_rand(&rng) % 2) {
            char c;
            return tether_read(ST.pipe[0], &c, 1) < 0 ? errno : 0;
        }
        return sleep_forever();
    }
    tether_scope *s;
    int rc = tether_scope_open(&s, NULL);
    EXPECT(rc == 0, "open: %d", rc);
    if (rc) {
        settle();
        return rc;
    }
    atomic_store(&ST.scope[id], s);
    if (spine)
        spawn_node(s, depth, true);
    if (th_rand(&rng) % 3 == 0)
        spawn_node(s, depth, th_rand(&rng) % 4 == 0);
    settle();

    pthread_mutex_lock(&ST.mu);
    while (!ST.release)
        pthread_cond_wait(&ST.cv, &ST.mu);
    pthread_mutex_unlock(&ST.mu);
    tether_result r;
    rc = tether_scope_join(s, &r);
    EXPECT(rc == 0, "join: %d", rc);
    if (r.outcome == TETHER_OUTCOME_CANCELED && r.failed == 0 && r.canceled == r.spawned &&
        (r.cause == TETHER_CAUSE_EXPLICIT || r.cause == TETHER_CAUSE_PARENT))
        atomic_fetch_add(&ST.canceled_ok, 1);
    else
        bad("scope %d: outcome %s, %u failed, %u canceled of %u, cause %s", id,
            tether_outcome_name(r.outcome), r.failed, r.canceled, r.spawned,
            tether_cause_name(r.cause));
    rc = tether_scope_free(s);
    EXPECT(rc == 0, "free: %d", rc);
    return tether_check();
}

static void *scope_tree_canceler(void *arg)
{
    uint64_t rng = th_seed_for(ST.seed, (uint64_t)(intptr_t)arg);
    barrier(&ST.go);
    for (int k = 0; k < 6; k++) {
        /* While the tree is built, spread the cuts over its construction. */
        spin_ns(rand_ns(&rng, ST.racing ? 1500 : 100));
        int made = atomic_load(&ST.nodes);
        if (made > SCOPE_NODES_MAX)
            made = SCOPE_NODES_MAX;
        if (made == 0)
            continue;
        /* Scopes stay valid until released; a leaf, or a node that has not
         * opened its scope yet, is skipped. */
        tether_scope *s = atomic_load(&ST.scope[th_rand(&rng) % (unsigned)made]);
        if (s) {
            int rc = tether_scope_cancel(s);
            EXPECT(rc == 0, "cancel: %d", rc);
        }
    }
    return NULL;
}

static bool all_settled(void)
{
    pthread_mutex_lock(&ST.mu);
    tether_time_t end = tether_now() + th_bound_ns(20000);
    while (atomic_load(&ST.pending) > 0 && tether_now() < end) {
        struct timespec ts = { .tv_sec = end / 1000000000, .tv_nsec = end % 1000000000 };
        pthread_cond_timedwait(&ST.cv, &ST.mu, &ts);
    }
    bool ok = atomic_load(&ST.pending) == 0;
    pthread_mutex_unlock(&ST.mu);
    return ok;
}

START_TEST(random_scope_trees)
{
    th_baseline b = th_baseline_take();
    ST.seed = th_seed("random_scope_trees");
    long n = stress(4);
    REQUIRE(pipe(ST.pipe) == 0, "pipe");
    pthread_mutex_init(&ST.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ST.cv, &ca);
    pthread_condattr_destroy(&ca);
    long scopes = 0;
    for (long i = 0; i < n; i++) {
        ST.seed = th_seed_for(ST.seed, (uint64_t)i);
        for (int k = 0; k < SCOPE_NODES_MAX; k++)
            atomic_store(&ST.scope[k], NULL);
        atomic_store(&ST.nodes, 0);
        atomic_store(&ST.pending, 0);
        atomic_store(&ST.canceled_ok, 0);
        ST.release = false;
        pthread_barrier_init(&ST.go, NULL, CANCELERS + 1);
        pthread_t ct[CANCELERS];
        for (int k = 0; k < CANCELERS; k++)
            REQUIRE(pthread_create(&ct[k], NULL, scope_tree_canceler, (void *)(intptr_t)k) == 0,
                    "create");
        tether_scope *root;
        REQUIRE(tether_scope_open(&root, NULL) == 0, "open");
        /* Odd runs: the cancelers start while the tree is being built.
         * Even runs: once it is complete. */
        ST.racing = i % 2;
        if (ST.racing)
            barrier(&ST.go);
        spawn_node(root, 0, true);
        if (!ST.racing) {
            REQUIRE(all_settled(), "the tree never settled");
            barrier(&ST.go);
        }
        for (int k = 0; k < CANCELERS; k++)
            ck_assert_int_eq(pthread_join(ct[k], NULL), 0);
        REQUIRE(all_settled(), "the tree never settled");
        REQUIRE(tether_scope_cancel(root) == 0, "cancel root");
        pthread_mutex_lock(&ST.mu);
        ST.release = true;
        pthread_cond_broadcast(&ST.cv);
        pthread_mutex_unlock(&ST.mu);
        tether_result r;
        REQUIRE(tether_scope_join(root, &r) == 0, "join");
        REQUIRE(tether_scope_free(root) == 0, "free");
        pthread_barrier_destroy(&ST.go);
        no_bad();
        REQUIRE(r.outcome == TETHER_OUTCOME_CANCELED && r.failed == 0, "root: %s, %u failed",
                tether_outcome_name(r.outcome), r.failed);
        int made = atomic_load(&ST.nodes);
        for (int k = 0; k < made && k < SCOPE_NODES_MAX; k++)
            if (atomic_load(&ST.scope[k]))
                scopes++;
        REQUIRE(atomic_load(&ST.canceled_ok) > 0, "no scope reported");
    }
    fprintf(stderr, "random scope trees: %ld runs, %ld scopes\n", n, scopes);
    pthread_cond_destroy(&ST.cv);
    pthread_mutex_destroy(&ST.mu);
    close(ST.pipe[0]);
    close(ST.pipe[1]);
    th_baseline_check(b);
}
END_TEST

/* ====================================================================== */
/* 5000 nested scopes, each level a child with a 64 KiB stack, canceled   */
/* from the root                                                           */
/* ====================================================================== */

/* Under a sanitizer each thread start costs milliseconds once thousands
 * are alive (measured: 5000 nested starts take 20 s under ASan and 47 s
 * under TSan on this 2-core machine, 2 s without): there the chain is 1000
 * deep times TETHER_STRESS, up to 5000. The depth that matters for stack use
 * (the cancel walks 10,000 tokens) is covered by the plain builds. */

static int nest_levels(void)
{
#ifdef TS_SANITIZED
    long n = 1000 * stress(1);
    return n < 5000 ? (int)n : 5000;
#else
    return 5000;
#endif
}

static struct {
    sem_t bottom;
    atomic_int levels_ok;
    int levels;
} NS;

static int nest_level(void *arg)
{
    intptr_t level = (intptr_t)arg;
    if (level == NS.levels) {
        sem_post(&NS.bottom);
        return sleep_forever();
    }
    tether_scope *s;
    int rc = tether_scope_open(&s, NULL);
    if (rc) {
        bad("level %ld: open: %s", (long)level, strerror(rc));
        sem_post(&NS.bottom);
        return rc;
    }
    tether_spawn_opts o = { .stack_size = 64 * 1024 };
    rc = tether_spawn(s, nest_level, (void *)(level + 1), &o, NULL);
    if (rc) {
        bad("level %ld: spawn: %s", (long)level, strerror(rc));
        sem_post(&NS.bottom);
    }
    tether_result r;
    rc = tether_scope_join(s, &r);
    EXPECT(rc == 0, "join: %d", rc);
    if (r.outcome == TETHER_OUTCOME_CANCELED && r.canceled == 1 && r.cause == TETHER_CAUSE_PARENT)
        atomic_fetch_add(&NS.levels_ok, 1);
    rc = tether_scope_free(s);
    EXPECT(rc == 0, "free: %d", rc);
    return tether_check();
}

START_TEST(nested_scopes)
{
    th_baseline b = th_baseline_take();
    sem_init(&NS.bottom, 0, 0);
    atomic_store(&NS.levels_ok, 0);
    NS.levels = nest_levels();
    tether_time_t t0 = tether_now();
    tether_scope *root;
    ck_assert_int_eq(tether_scope_open(&root, NULL), 0);
    tether_spawn_opts o = { .stack_size = 64 * 1024 };
    ck_assert_int_eq(tether_spawn(root, nest_level, (void *)(intptr_t)1, &o, NULL), 0);
    while (sem_wait(&NS.bottom) != 0)
        ;
    no_bad();
    tether_time_t t1 = tether_now();
    ck_assert_int_ge(th_thread_count(), NS.levels + 1);
    ck_assert_int_eq(tether_scope_cancel(root), 0);
    tether_result r;
    ck_assert_int_eq(tether_scope_join(root, &r), 0);
    tether_time_t t2 = tether_now();
    ck_assert_int_eq(tether_scope_free(root), 0);
    no_bad();
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
    ck_assert_uint_eq(r.canceled, 1);
    ck_assert_int_eq(atomic_load(&NS.levels_ok), NS.levels - 1);
    fprintf(stderr, "%d nested scopes: built in %.0f ms, canceled and joined in %.0f ms\n",
            NS.levels, (double)(t1 - t0) / 1e6, (double)(t2 - t1) / 1e6);
    sem_destroy(&NS.bottom);
    th_baseline_check(b);
}
END_TEST

static Suite *suite(void)
{
    int scale = (int)stress(1);
    Suite *s = suite_create("stress_trees");
    TCase *tc;

    tc = tcase_create("trees");
    tcase_set_timeout(tc, th_timeout_s(90) * scale);
    tcase_add_test(tc, random_token_trees);
    tcase_add_test(tc, cancel_returns_with_subtree_canceled);
    tcase_add_test(tc, random_scope_trees);
    tcase_add_test(tc, nested_scopes);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
