/*
 * Thread reuse (tether_scope_opts.reuse_threads): a reused thread starts
 * clean (no current token, no entries, nothing canceled), with the child's
 * name and the spawner's signal mask; stack size requests are never mixed;
 * idle threads are bounded, released after the idle time and by
 * tether_trim; join returns only after every child's function returned and
 * its cleanup ran; many scopes share the pool at once; a fork child has
 * none of the parent's parked threads.
 *
 * Reuse is observed by kernel thread id: children run one after another, so
 * the second runs on the first one's parked thread.
 */
#define _GNU_SOURCE
#include "support.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const tether_scope_opts reuse_opts = { .reuse_threads = true };

/* What a child saw of its thread. */
struct seen {
    pid_t tid;
    bool had_current;    /* a current token at entry */
    int leave_rc;        /* leaving it */
    int second_leave_rc; /* leaving once more: EPERM when nothing else is entered */
    int check_rc;        /* tether_check at entry */
    char name[16];
    sigset_t mask;
    size_t stack_size;
    /* What the child leaves behind for the next one. */
    bool block_sigusr2;
    bool cancel_own_scope;
};

static int observe(void *arg)
{
    struct seen *v = arg;
    v->tid = th_gettid();
    v->check_rc = tether_check();
    tether_token *cur = tether_current();
    v->had_current = cur != NULL;
    pthread_getname_np(pthread_self(), v->name, sizeof v->name);
    pthread_sigmask(SIG_BLOCK, NULL, &v->mask);
    pthread_attr_t a;
    if (pthread_getattr_np(pthread_self(), &a) == 0) {
        pthread_attr_getstacksize(&a, &v->stack_size);
        pthread_attr_destroy(&a);
    }
    v->leave_rc = tether_token_leave(cur);
    v->second_leave_rc = tether_token_leave(cur);
    /* Leave the thread in a state a new thread would not have. */
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_token_cancel(t, 0);
    enter(t);
    leave(t);
    tether_token_free(t);
    if (v->block_sigusr2) {
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, SIGUSR2);
        pthread_sigmask(SIG_BLOCK, &s, NULL);
    }
    if (v->cancel_own_scope)
        return ECANCELED;
    return 0;
}

/* One scope with one child, joined and freed. */
static void run_one(struct seen *v, const tether_spawn_opts *so)
{
    tether_scope *s = open_scope(&reuse_opts);
    ck_assert_int_eq(tether_spawn(s, observe, v, so, NULL), 0);
    if (v->cancel_own_scope)
        tether_scope_cancel(s);
    join_and_free(s);
}

START_TEST(test_reused_thread_starts_clean)
{
    th_baseline base = th_baseline_take();
    struct seen a = { .cancel_own_scope = true }, b = { 0 };
    run_one(&a, NULL);
    run_one(&b, NULL);
    ck_assert_int_eq(a.tid, b.tid); /* the second ran on the first's thread */
    ck_assert(a.had_current && b.had_current);
    ck_assert_int_eq(b.check_rc, 0);
    ck_assert_int_eq(b.leave_rc, 0);
    ck_assert_int_eq(b.second_leave_rc, EPERM); /* no entries below the child's */
    tether_trim();
    th_baseline_check(base);
}
END_TEST

START_TEST(test_reused_thread_takes_the_childs_name)
{
    th_baseline base = th_baseline_take();
    char mine[16];
    ck_assert_int_eq(pthread_setname_np(pthread_self(), "spawner"), 0);
    ck_assert_int_eq(pthread_getname_np(pthread_self(), mine, sizeof mine), 0);
    struct seen a = { 0 }, b = { 0 }, c = { 0 };
    run_one(&a, &(tether_spawn_opts){ .name = "first-child-with-a-long-name" });
    run_one(&b, NULL);
    run_one(&c, &(tether_spawn_opts){ .name = "third" });
    ck_assert_int_eq(a.tid, b.tid);
    ck_assert_int_eq(b.tid, c.tid);
    ck_assert_str_eq(a.name, "first-child-wit"); /* the kernel keeps 15 bytes */
    ck_assert_str_eq(b.name, mine);              /* unnamed: the spawner's, as a new thread */
    ck_assert_str_eq(c.name, "third");
    tether_trim();
    th_baseline_check(base);
}
END_TEST

START_TEST(test_stack_sizes_are_not_mixed)
{
    th_baseline base = th_baseline_take();
    enum { SMALL = 256 * 1024 };
    struct seen a = { 0 }, b = { 0 }, c = { 0 }, d = { 0 };
    tether_spawn_opts small = { .stack_size = SMALL };
    run_one(&a, &small);
    run_one(&b, NULL);   /* default: a new thread, a is parked */
    run_one(&c, &small); /* a's thread again */
    run_one(&d, NULL);   /* b's thread again */
    ck_assert_int_ne(a.tid, b.tid);
    ck_assert_int_eq(c.tid, a.tid);
    ck_assert_int_eq(d.tid, b.tid);
    ck_assert_uint_ge(a.stack_size, SMALL);
    ck_assert_uint_eq(c.stack_size, a.stack_size);
    ck_assert_uint_eq(d.stack_size, b.stack_size);
    ck_assert_uint_ne(a.stack_size, b.stack_size);
    tether_trim();
    th_baseline_check(base);
}
END_TEST

START_TEST(test_reused_thread_has_the_spawners_mask)
{
    th_baseline base = th_baseline_take();
    sigset_t usr1, old;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, &usr1, &old), 0);
    struct seen a = { .block_sigusr2 = true }, b = { 0 };
    run_one(&a, NULL);
    ck_assert_int_eq(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
    run_one(&b, NULL);
    ck_assert_int_eq(a.tid, b.tid);
    ck_assert(sigismember(&a.mask, SIGUSR1));
    ck_assert(!sigismember(&b.mask, SIGUSR1)); /* the spawner's mask now */
    ck_assert(!sigismember(&b.mask, SIGUSR2)); /* a's change is gone */
    tether_trim();
    th_baseline_check(base);
}
END_TEST

/* Children that hold their threads until all have started. */
struct crowd {
    int n;
    atomic_int started;
    sem_t all;
};

static int crowd_member(void *arg)
{
    struct crowd *c = arg;
    if (atomic_fetch_add(&c->started, 1) + 1 == c->n)
        for (int i = 0; i < c->n; i++)
            sem_post(&c->all);
    sem_wait_ok(&c->all);
    return 0;
}

/* n children live at once in one reuse scope, joined. */
static void run_crowd(int n)
{
    struct crowd c = { .n = n };
    sem_init(&c.all, 0, 0);
    tether_scope *s = open_scope(&reuse_opts);
    for (int i = 0; i < n; i++)
        spawn_ok(s, crowd_member, &c, NULL, NULL);
    join_and_free(s);
    sem_destroy(&c.all);
}

START_TEST(test_idle_threads_are_bounded)
{
    th_baseline base = th_baseline_take();
    run_crowd(24);
    /* 16 park; the other 8 exit on their own. */
    ck_assert_int_eq(th_wait_thread_count(base.threads + 16), base.threads + 16);
    tether_trim();
    th_baseline_check(base);
}
END_TEST

START_TEST(test_idle_threads_leave_after_the_idle_time)
{
    th_baseline base = th_baseline_take();
    struct seen a = { 0 };
    tether_time_t t0 = tether_now();
    run_one(&a, NULL);
    /* Parked for 1 s: still there well before that, unless the machine
     * stalled for that long (then the check is skipped, never failed). */
    int parked = th_thread_count();
    if (tether_now() - t0 < tether_ms(500))
        ck_assert_int_eq(parked, base.threads + 1);
    /* Gone after it, without tether_trim (the wait's bound is 2 s, scaled). */
    ck_assert_int_eq(th_wait_thread_count(base.threads), base.threads);
    ck_assert_int_ge(tether_now() - t0, tether_ms(1000));
    th_baseline_check(base);
}
END_TEST

START_TEST(test_trim_releases_idle_threads)
{
    th_baseline base = th_baseline_take();
    run_crowd(3);
    ck_assert_int_eq(th_wait_thread_count(base.threads + 3), base.threads + 3);
    struct seen a = { 0 }, b = { 0 };
    run_one(&a, NULL);
    tether_trim();
    run_one(&b, NULL);
    ck_assert_int_ne(a.tid, b.tid); /* a's thread was released: a new one ran b */
    tether_trim();
    th_baseline_check(base);
}
END_TEST

/* A child whose last act is slow: join must wait for it, and for the
 * cleanup after it (a scope the child opened and left, its token). */
static atomic_int finished;

static int slow_finish(void *arg)
{
    (void)arg;
    tether_sleep_for(tether_ms(20));
    busy_spin(1000000);
    atomic_fetch_add(&finished, 1);
    return 0;
}

START_TEST(test_join_waits_for_every_child)
{
    th_baseline base = th_baseline_take();
    /* Handle-less children of a long-lived scope are reaped early, so the
     * scope's later spawns hand work to the early children's threads. */
    enum { N = 64 };
    tether_scope *s = open_scope(&reuse_opts);
    for (int i = 0; i < N; i++)
        spawn_ok(s, slow_finish, NULL, NULL, NULL);
    tether_result r = join_and_free(s);
    ck_assert_int_eq(atomic_load(&finished), N);
    ck_assert_uint_eq(r.succeeded, N);
    /* With handles, and with a deadline (join then waits on its timeout). */
    atomic_store(&finished, 0);
    s = open_scope(&(tether_scope_opts){ .reuse_threads = true, .timeout_ns = tether_sec(600) });
    tether_task *t[4];
    for (int i = 0; i < 4; i++)
        spawn_ok(s, slow_finish, NULL, NULL, &t[i]);
    int res = -1;
    ck_assert_int_eq(tether_task_wait(t[0], &res), 0);
    ck_assert_int_eq(res, 0);
    ck_assert_int_ge(atomic_load(&finished), 1);
    r = join_and_free(s);
    ck_assert_int_eq(atomic_load(&finished), 4);
    tether_trim();
    th_baseline_check(base);
}
END_TEST

/* Owners on several threads, each opening scope after scope. */
enum { OWNERS = 4, SCOPES_EACH = 40, CHILDREN_EACH = 3 };

static int check_child(void *arg)
{
    (void)arg;
    EXPECT(tether_current() != NULL, "a child without its token");
    EXPECT(tether_check() == 0, "a child starts canceled");
    return 0;
}

static void *owner(void *arg)
{
    (void)arg;
    for (int i = 0; i < stress(SCOPES_EACH); i++) {
        tether_scope *s;
        if (tether_scope_open(&s, &reuse_opts) != 0) {
            bad("open");
            return NULL;
        }
        for (int k = 0; k < CHILDREN_EACH; k++)
            EXPECT(tether_spawn(s, check_child, NULL, NULL, NULL) == 0, "spawn");
        tether_result r;
        EXPECT(tether_scope_join(s, &r) == 0, "join");
        EXPECT(r.succeeded == CHILDREN_EACH, "succeeded %u", r.succeeded);
        EXPECT(tether_scope_free(s) == 0, "free");
    }
    return NULL;
}

START_TEST(test_many_scopes_at_once)
{
    th_baseline base = th_baseline_take();
    pthread_t th[OWNERS];
    for (int i = 0; i < OWNERS; i++)
        th[i] = thread_start(owner, NULL);
    for (int i = 0; i < OWNERS; i++)
        thread_join(th[i]);
    ck_assert_msg(bad_seen() == 0, "%s", bad_first());
    tether_trim();
    th_baseline_check(base);
}
END_TEST

/* TSan refuses new threads in the fork child of a multithreaded process,
 * and ASan's allocator is not fork-safe (test_fork.c): there the child
 * checks only that trim finds no parent thread to wait for. */
#if defined(TS_TSAN) || defined(TS_ASAN)
enum { THREADS_AFTER_FORK = 0 };
#else
enum { THREADS_AFTER_FORK = 1 };
#endif

START_TEST(test_fork_child_has_no_parked_threads)
{
    th_baseline base = th_baseline_take();
    struct seen a = { 0 };
    run_one(&a, NULL);
    ck_assert_int_eq(th_thread_count(), base.threads + 1);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* A hand-off to the parent's parked thread would never run, and
         * trim would wait for it for good: the child must have an empty
         * pool, and a thread of its own for a child. */
        alarm(10);
        if (THREADS_AFTER_FORK) {
            struct seen b = { 0 };
            tether_scope *s;
            if (tether_scope_open(&s, &reuse_opts) != 0)
                _exit(2);
            if (tether_spawn(s, observe, &b, NULL, NULL) != 0)
                _exit(3);
            tether_scope_join(s, NULL);
            tether_scope_free(s);
            if (b.tid == a.tid || b.check_rc != 0)
                _exit(4);
        }
        tether_trim();
        _exit(0);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fork child status %#x", st);
    run_one(&a, NULL); /* the parent's pool still works */
    tether_trim();
    th_baseline_check(base);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("reuse");
    TCase *tc = tcase_create("reuse");
    tcase_set_timeout(tc, th_timeout_s(20) * stress(1));
    tcase_add_test(tc, test_reused_thread_starts_clean);
    tcase_add_test(tc, test_reused_thread_takes_the_childs_name);
    tcase_add_test(tc, test_stack_sizes_are_not_mixed);
    tcase_add_test(tc, test_reused_thread_has_the_spawners_mask);
    tcase_add_test(tc, test_idle_threads_are_bounded);
    tcase_add_test(tc, test_idle_threads_leave_after_the_idle_time);
    tcase_add_test(tc, test_trim_releases_idle_threads);
    tcase_add_test(tc, test_join_waits_for_every_child);
    tcase_add_test(tc, test_many_scopes_at_once);
    tcase_add_test(tc, test_fork_child_has_no_parked_threads);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
