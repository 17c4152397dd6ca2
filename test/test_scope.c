/*
 * Scopes: policies (fail-fast, supervisor, first-success), deadlines,
 * strict background teardown, task handles, limits, the body helpers, misuse,
 * and the races between children finishing, failing and being cancelled.
 *
 * Children that must be "blocked" announce themselves on a semaphore and the
 * test then waits (th_wait_blocked) until the kernel shows them asleep, so
 * "cancelled while blocked" is what is tested; cancellation is sticky, so a
 * slow machine only turns it into "cancelled before blocking", never a hang.
 * Iteration counts are modest and multiplied by TETHER_STRESS.
 */
#define _GNU_SOURCE
#include "support.h"

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <tether.h>

/* Long enough to be "forever" for a test. */
#define DAY tether_sec(86400)

/* What a blocking call returns when it was not cancelled: never expected. */
#define NOT_CANCELLED EPROTO

/* ---------------------------------------------------------------------- */
/* Small helpers                                                          */


/* ---------------------------------------------------------------------- */
/* Children that block in tether primitives until cancelled               */

enum block_kind { BLOCK_SLEEP, BLOCK_READ };

typedef struct blocker {
    enum block_kind kind;
    sem_t *ready;            /* posted just before blocking (may be NULL) */
    pid_t tid;               /* written before `ready` is posted */
    int err;                 /* errno of the blocking call */
    tether_time_t woke_at;
    tether_token *token;     /* its current token */
    tether_cause cause, root_cause;
    int token_error;
    atomic_bool cleaned;     /* ran its cleanup after the call returned */
} blocker;

/* Block in tether_sleep_for(DAY) or tether_read on an empty pipe of its own;
 * afterwards record what the token says, close what it holds, set a flag. */
static int blocker_main(void *arg)
{
    blocker *b = arg;
    int fds[2] = { -1, -1 };
    if (b->kind == BLOCK_READ && pipe(fds) != 0)
        return errno;
    b->tid = th_gettid();
    b->token = tether_current();
    if (b->ready)
        sem_post(b->ready);
    if (b->kind == BLOCK_READ) {
        char c;
        b->err = tether_read(fds[0], &c, 1) < 0 ? errno : NOT_CANCELLED;
    } else {
        b->err = tether_sleep_for(DAY) < 0 ? errno : NOT_CANCELLED;
    }
    b->woke_at = tether_now();
    b->cause = tether_token_cause(tether_current());
    b->root_cause = tether_token_root_cause(tether_current());
    b->token_error = tether_token_error(tether_current());
    if (fds[0] >= 0) {
        close(fds[0]);
        close(fds[1]);
    }
    atomic_store(&b->cleaned, true);
    return b->err;
}

static void blockers_init(blocker *b, int n, sem_t *ready)
{
    memset(b, 0, sizeof *b * (size_t)n);
    for (int i = 0; i < n; i++) {
        b[i].kind = i % 2 ? BLOCK_READ : BLOCK_SLEEP;
        b[i].ready = ready;
    }
}

/* Wait until n blockers have announced themselves and are asleep. */
static void wait_blocked(sem_t *ready, blocker *b, int n)
{
    for (int i = 0; i < n; i++)
        sem_wait_ok(ready);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(th_wait_blocked(b[i].tid), 0);
}

/* Children released by a plain (non-tether) semaphore; then they report
 * whether their token was touched: 0 if not. */
typedef struct gated {
    sem_t *gate;
    sem_t *ready;            /* optional */
    int check;               /* tether_check() after release */
} gated;

static int gated_main(void *arg)
{
    gated *g = arg;
    if (g->ready)
        sem_post(g->ready);
    sem_wait_ok(g->gate);
    g->check = tether_check();
    return g->check;
}

static int return_int(void *arg)
{
    return *(const int *)arg;
}

/* ---------------------------------------------------------------------- */
/* Fail-fast                                                              */

typedef struct failer {
    sem_t *ready;
    blocker *siblings;
    int nsiblings;
    int err;
    tether_time_t failed_at;
} failer;

static int failer_main(void *arg)
{
    failer *f = arg;
    wait_blocked(f->ready, f->siblings, f->nsiblings);
    f->failed_at = tether_now();
    return f->err;
}

START_TEST(test_fail_fast_cancels_blocked_siblings)
{
    th_baseline base = th_baseline_take();
    enum { NB = 4 };
    sem_t ready;
    sem_init(&ready, 0, 0);
    blocker b[NB];
    blockers_init(b, NB, &ready);
    failer f = { .ready = &ready, .siblings = b, .nsiblings = NB, .err = EIO };

    tether_scope *s = open_scope(NULL);
    spawn_ok(s, blocker_main, &b[0], "sleeper-0", NULL);
    spawn_ok(s, blocker_main, &b[1], "reader-1", NULL);
    spawn_ok(s, failer_main, &f, "failer", NULL); /* index 2 */
    spawn_ok(s, blocker_main, &b[2], "sleeper-3", NULL);
    spawn_ok(s, blocker_main, &b[3], "reader-4", NULL);
    tether_result r = join_and_free(s);
    tether_time_t joined = tether_now();

    ck_assert_int_le(joined - f.failed_at, th_bound_ns(1000));
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_FAILED);
    ck_assert_int_eq(r.error, EIO);
    ck_assert_int_eq(r.error_task, 2);
    ck_assert_str_eq(r.error_task_name, "failer");
    ck_assert_int_eq(r.cause, TETHER_CAUSE_SIBLING_FAILED);
    ck_assert_int_eq(r.cause_task, 2);
    ck_assert_int_eq(r.winner, -1);
    ck_assert_uint_eq(r.spawned, 5);
    ck_assert_uint_eq(r.succeeded, 0);
    ck_assert_uint_eq(r.failed, 1);
    ck_assert_uint_eq(r.canceled, NB);
    ck_assert_int_gt(r.convergence_ns, 0);
    ck_assert_int_le(r.convergence_ns, th_bound_ns(1000));
    for (int i = 0; i < NB; i++) {
        ck_assert_int_eq(b[i].err, ECANCELED);
        ck_assert_int_eq(b[i].cause, TETHER_CAUSE_PARENT);
        ck_assert_int_eq(b[i].root_cause, TETHER_CAUSE_SIBLING_FAILED);
        ck_assert_int_eq(b[i].token_error, EIO);
        ck_assert(atomic_load(&b[i].cleaned));
    }
    sem_destroy(&ready);
    th_baseline_check(base);
}
END_TEST

typedef struct pair_child {
    pthread_barrier_t *bar;
    unsigned spin;
    int err;
} pair_child;

static int fail_after_barrier(void *arg)
{
    pair_child *c = arg;
    pthread_barrier_wait(c->bar);
    busy_spin(c->spin);
    return c->err;
}

START_TEST(test_first_error_wins_when_two_fail_together)
{
    th_baseline base = th_baseline_take();
    uint64_t rng = th_seed("first_error_wins_when_two_fail_together");
    int iters = stress(2000), eio = 0, epipe = 0;
    for (int i = 0; i < iters; i++) {
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, 2);
        pair_child a = { .bar = &bar, .spin = (unsigned)(th_rand(&rng) % 2000), .err = EIO };
        pair_child b = { .bar = &bar, .spin = (unsigned)(th_rand(&rng) % 2000), .err = EPIPE };
        tether_scope *s = open_scope(NULL);
        spawn_ok(s, fail_after_barrier, &a, "eio", NULL);
        spawn_ok(s, fail_after_barrier, &b, "epipe", NULL);
        tether_result r = join_and_free(s);
        pthread_barrier_destroy(&bar);

        ck_assert_int_eq(r.outcome, TETHER_OUTCOME_FAILED);
        ck_assert_msg(r.error == EIO || r.error == EPIPE, "iteration %d: error %d", i, r.error);
        ck_assert_int_eq(r.error_task, r.error == EIO ? 0 : 1);
        ck_assert_str_eq(r.error_task_name, r.error == EIO ? "eio" : "epipe");
        ck_assert_int_eq(r.cause, TETHER_CAUSE_SIBLING_FAILED);
        ck_assert_int_eq(r.cause_task, r.error_task);
        ck_assert_uint_eq(r.failed, 2);
        ck_assert_uint_eq(r.canceled, 0);
        if (r.error == EIO)
            eio++;
        else
            epipe++;
    }
    printf("first_error_wins: %d iterations, EIO won %d, EPIPE won %d\n", iters, eio, epipe);
    fflush(stdout);
    th_baseline_check(base);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Deadlines                                                              */

START_TEST(test_scope_timeout_cancels_blocked_children)
{
    th_baseline base = th_baseline_take();
    enum { NB = 4 };
    blocker b[NB];
    blockers_init(b, NB, NULL);
    tether_scope_opts o = { .timeout_ns = tether_ms(100) };
    tether_time_t t0 = tether_now();
    tether_scope *s = open_scope(&o);
    for (int i = 0; i < NB; i++)
        spawn_ok(s, blocker_main, &b[i], NULL, NULL);
    tether_result r = join_and_free(s);
    int64_t elapsed = tether_now() - t0;

    ck_assert_int_ge(elapsed, tether_ms(100));
    ck_assert_int_le(elapsed, tether_ms(100) + th_bound_ns(1000));
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_DEADLINE_EXCEEDED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(r.error_task, -1);
    ck_assert_int_eq(r.cause_task, -1);
    ck_assert_uint_eq(r.spawned, NB);
    ck_assert_uint_eq(r.succeeded, 0);
    ck_assert_uint_eq(r.failed, 0);
    ck_assert_uint_eq(r.canceled, NB);
    for (int i = 0; i < NB; i++) {
        ck_assert_int_eq(b[i].err, ETIMEDOUT);
        ck_assert_int_ge(b[i].woke_at - t0, tether_ms(100));
        ck_assert_int_eq(b[i].root_cause, TETHER_CAUSE_DEADLINE);
        ck_assert(atomic_load(&b[i].cleaned));
    }
    th_baseline_check(base); /* the pipes and the tokens' eventfds are closed */
}
END_TEST

/* Several children and the joiner all see the scope's deadline pass at the
 * same instant. Whoever loses the race to cancel the scope must still see
 * its own token cancelled when its primitive returns ETIMEDOUT, so that the
 * child counts as canceled (the scope's deadline), never as failed. */
START_TEST(test_scope_deadline_children_never_counted_failed)
{
    th_baseline base = th_baseline_take();
    enum { NB = 3 };
    int iters = stress(300);
    for (int i = 0; i < iters; i++) {
        blocker b[NB];
        blockers_init(b, NB, NULL);
        for (int k = 0; k < NB; k++)
            b[k].kind = BLOCK_SLEEP;
        tether_scope_opts o = { .timeout_ns = tether_ms(2) };
        tether_scope *s = open_scope(&o);
        unsigned n = 0;
        for (int k = 0; k < NB; k++) {
            /* On a slow machine the deadline may pass while spawning. */
            int rc = tether_spawn(s, blocker_main, &b[n], NULL, NULL);
            ck_assert(rc == 0 || rc == ETIMEDOUT);
            n += rc == 0;
        }
        tether_result r = join_and_free(s);
        ck_assert_int_eq(r.outcome, TETHER_OUTCOME_DEADLINE_EXCEEDED);
        ck_assert_msg(r.failed == 0 && r.canceled == n,
                      "iteration %d: failed %u canceled %u (scope deadline counted as failure)",
                      i, r.failed, r.canceled);
        for (unsigned k = 0; k < n; k++) {
            ck_assert_int_eq(b[k].err, ETIMEDOUT);
            ck_assert_msg(b[k].cause == TETHER_CAUSE_PARENT,
                          "iteration %d child %u: ETIMEDOUT but its token's cause is %s", i, k,
                          tether_cause_name(b[k].cause));
        }
    }
    th_baseline_check(base);
}
END_TEST

typedef struct slow_child {
    int64_t ignore_for;      /* keeps running this long after seeing the cancel */
    tether_time_t seen_at;   /* when tether_check() first reported it */
    int seen_err;
    tether_time_t returned_at;
    atomic_bool cleaned;
} slow_child;

/* A CPU loop that checks tether_check() about every millisecond and ignores
 * the cancellation for a while. */
static int slow_main(void *arg)
{
    slow_child *c = arg;
    tether_time_t next_check = tether_now();
    for (;;) {
        tether_time_t now = tether_now();
        if (now >= next_check) {
            next_check = now + tether_ms(1);
            int e = tether_check();
            if (e && !c->seen_err) {
                c->seen_err = e;
                c->seen_at = tether_now();
            }
        }
        if (c->seen_err && now - c->seen_at >= c->ignore_for)
            break;
        sched_yield();
    }
    atomic_store(&c->cleaned, true);
    c->returned_at = tether_now();
    return c->seen_err;
}

START_TEST(test_slow_child_delays_join_not_siblings)
{
    th_baseline base = th_baseline_take();
    const int64_t timeout = th_bound_ns(100); /* room to spawn first */
    slow_child slow = { .ignore_for = th_bound_ns(200) };
    blocker b[2];
    blockers_init(b, 2, NULL);
    tether_scope_opts o = { .timeout_ns = timeout };
    tether_time_t t0 = tether_now();
    tether_scope *s = open_scope(&o);
    spawn_ok(s, slow_main, &slow, "slow", NULL);
    spawn_ok(s, blocker_main, &b[0], "sleeper", NULL);
    spawn_ok(s, blocker_main, &b[1], "reader", NULL);
    tether_result r = join_and_free(s);
    tether_time_t joined = tether_now();

    /* The deadline never fires early. */
    ck_assert_int_eq(slow.seen_err, ETIMEDOUT);
    ck_assert_int_ge(slow.seen_at - t0, timeout);
    /* Join waited for the slow child. */
    ck_assert(atomic_load(&slow.cleaned));
    ck_assert_int_ge(joined, slow.returned_at);
    ck_assert_int_ge(joined - slow.seen_at, slow.ignore_for);
    /* The children blocked in tether primitives woke at the deadline, not
     * when the slow child let go. */
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(b[i].err, ETIMEDOUT);
        ck_assert_int_ge(b[i].woke_at - t0, timeout);
        ck_assert_int_lt(b[i].woke_at, slow.returned_at);
        ck_assert(atomic_load(&b[i].cleaned));
    }
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_DEADLINE_EXCEEDED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_DEADLINE);
    ck_assert_uint_eq(r.canceled, 3);
    ck_assert_uint_eq(r.failed, 0);
    ck_assert_int_ge(r.convergence_ns, slow.ignore_for);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_parent_deadline_exceeds_scope)
{
    th_baseline base = th_baseline_take();
    tether_token *parent;
    const int64_t timeout = th_bound_ns(100); /* room to spawn first */
    tether_time_t t0 = tether_now();
    ck_assert_int_eq(tether_token_new(&parent, NULL, tether_deadline_after(timeout)), 0);
    blocker b[2];
    blockers_init(b, 2, NULL);
    tether_scope_opts o = { .parent = parent };
    tether_scope *s = open_scope(&o);
    ck_assert_int_eq(tether_token_deadline(tether_scope_token(s)), tether_token_deadline(parent));
    spawn_ok(s, blocker_main, &b[0], NULL, NULL);
    spawn_ok(s, blocker_main, &b[1], NULL, NULL);
    tether_result r = join_and_free(s);
    int64_t elapsed = tether_now() - t0;

    ck_assert_int_ge(elapsed, timeout);
    ck_assert_int_le(elapsed, timeout + th_bound_ns(1000));
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_DEADLINE_EXCEEDED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_PARENT);
    ck_assert_uint_eq(r.canceled, 2);
    ck_assert_uint_eq(r.failed, 0);
    ck_assert_int_eq(tether_token_cause(parent), TETHER_CAUSE_DEADLINE);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(b[i].err, ETIMEDOUT);
        ck_assert_int_eq(b[i].root_cause, TETHER_CAUSE_DEADLINE);
    }
    ck_assert_int_eq(tether_token_free(parent), 0);
    th_baseline_check(base);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Supervisor                                                             */

START_TEST(test_supervisor_partial)
{
    th_baseline base = th_baseline_take();
    sem_t gate;
    sem_init(&gate, 0, 0);
    gated ok[3] = { { .gate = &gate }, { .gate = &gate }, { .gate = &gate } };
    int eio = EIO, enoent = ENOENT;
    tether_scope_opts o = { .policy = TETHER_POLICY_SUPERVISOR };
    tether_scope *s = open_scope(&o);
    tether_task *t[5];
    spawn_ok(s, gated_main, &ok[0], "ok-0", &t[0]);
    spawn_ok(s, return_int, &eio, "eio-1", &t[1]);
    int res = -1;
    ck_assert_int_eq(tether_task_wait(t[1], &res), 0); /* EIO is the first failure */
    ck_assert_int_eq(res, EIO);
    spawn_ok(s, gated_main, &ok[1], "ok-2", &t[2]);
    spawn_ok(s, return_int, &enoent, "enoent-3", &t[3]);
    spawn_ok(s, gated_main, &ok[2], "ok-4", &t[4]);
    ck_assert_int_eq(tether_task_wait(t[3], &res), 0);
    ck_assert_int_eq(res, ENOENT);
    /* The failures cancelled nobody: release the others now. */
    for (int i = 0; i < 3; i++)
        sem_post(&gate);
    const int want[5] = { 0, EIO, 0, ENOENT, 0 };
    for (int i = 0; i < 5; i++) {
        res = -1;
        ck_assert_int_eq(tether_task_wait(t[i], &res), 0);
        ck_assert_int_eq(res, want[i]);
        ck_assert_int_eq(tether_token_cause(tether_task_token(t[i])), TETHER_CAUSE_NONE);
    }
    tether_result r = join_and_free(s);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(ok[i].check, 0);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_PARTIAL);
    ck_assert_int_eq(r.error, EIO);
    ck_assert_int_eq(r.error_task, 1);
    ck_assert_str_eq(r.error_task_name, "eio-1");
    ck_assert_int_eq(r.cause, TETHER_CAUSE_NONE);
    ck_assert_int_eq(r.cause_task, -1);
    ck_assert_uint_eq(r.spawned, 5);
    ck_assert_uint_eq(r.succeeded, 3);
    ck_assert_uint_eq(r.failed, 2);
    ck_assert_uint_eq(r.canceled, 0);
    ck_assert_int_eq(r.convergence_ns, 0);
    sem_destroy(&gate);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_supervisor_all_fail)
{
    th_baseline base = th_baseline_take();
    int errs[3] = { EPIPE, EIO, ENOENT };
    tether_scope_opts o = { .policy = TETHER_POLICY_SUPERVISOR };
    tether_scope *s = open_scope(&o);
    for (int i = 0; i < 3; i++) {
        tether_task *t;
        spawn_ok(s, return_int, &errs[i], i == 0 ? "first" : NULL, &t);
        int res;
        ck_assert_int_eq(tether_task_wait(t, &res), 0); /* one after the other */
        ck_assert_int_eq(res, errs[i]);
    }
    tether_result r = join_and_free(s);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_FAILED);
    ck_assert_int_eq(r.error, EPIPE);
    ck_assert_int_eq(r.error_task, 0);
    ck_assert_str_eq(r.error_task_name, "first");
    ck_assert_int_eq(r.cause, TETHER_CAUSE_NONE);
    ck_assert_uint_eq(r.failed, 3);
    ck_assert_uint_eq(r.succeeded, 0);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_supervisor_all_succeed)
{
    th_baseline base = th_baseline_take();
    tether_scope_opts o = { .policy = TETHER_POLICY_SUPERVISOR };
    tether_scope *s = open_scope(&o);
    for (int i = 0; i < 4; i++)
        spawn_ok(s, return_zero, NULL, NULL, NULL);
    tether_result r = join_and_free(s);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_int_eq(r.error, 0);
    ck_assert_int_eq(r.error_task, -1);
    ck_assert_str_eq(r.error_task_name, "");
    ck_assert_int_eq(r.cause, TETHER_CAUSE_NONE);
    ck_assert_int_eq(r.cause_task, -1);
    ck_assert_int_eq(r.winner, -1);
    ck_assert_uint_eq(r.spawned, 4);
    ck_assert_uint_eq(r.succeeded, 4);
    ck_assert_int_eq(r.convergence_ns, 0);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_supervisor_deadline_keeps_counts)
{
    th_baseline base = th_baseline_take();
    int eio = EIO;
    blocker b[2];
    blockers_init(b, 2, NULL);
    const int64_t timeout = th_bound_ns(100); /* room to run three children first */
    tether_scope_opts o = { .policy = TETHER_POLICY_SUPERVISOR, .timeout_ns = timeout };
    tether_time_t t0 = tether_now();
    tether_scope *s = open_scope(&o);
    tether_task *t;
    for (int i = 0; i < 2; i++) {
        spawn_ok(s, return_zero, NULL, NULL, &t);
        ck_assert_int_eq(tether_task_wait(t, NULL), 0);
    }
    spawn_ok(s, return_int, &eio, NULL, &t);
    ck_assert_int_eq(tether_task_wait(t, NULL), 0);
    spawn_ok(s, blocker_main, &b[0], NULL, NULL);
    spawn_ok(s, blocker_main, &b[1], NULL, NULL);
    tether_result r = join_and_free(s);
    ck_assert_int_ge(tether_now() - t0, timeout);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_DEADLINE_EXCEEDED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_DEADLINE);
    ck_assert_uint_eq(r.spawned, 5);
    ck_assert_uint_eq(r.succeeded, 2);
    ck_assert_uint_eq(r.failed, 1);
    ck_assert_uint_eq(r.canceled, 2);
    th_baseline_check(base);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* First-success                                                          */

typedef struct racer {
    sem_t *ready;
    blocker *others;
    int nothers;
    int ret;
} racer;

static int winner_main(void *arg)
{
    racer *w = arg;
    wait_blocked(w->ready, w->others, w->nothers);
    return w->ret;
}

START_TEST(test_first_success_winner_cancels_rest)
{
    th_baseline base = th_baseline_take();
    sem_t ready;
    sem_init(&ready, 0, 0);
    blocker b[3];
    blockers_init(b, 3, &ready);
    racer w = { .ready = &ready, .others = b, .nothers = 3, .ret = 0 };
    int eio = EIO;
    tether_scope_opts o = { .policy = TETHER_POLICY_FIRST_SUCCESS };
    tether_scope *s = open_scope(&o);
    tether_task *f;
    spawn_ok(s, return_int, &eio, "fails", &f); /* a failure cancels nobody here */
    ck_assert_int_eq(tether_task_wait(f, NULL), 0);
    spawn_ok(s, blocker_main, &b[0], NULL, NULL);
    spawn_ok(s, blocker_main, &b[1], NULL, NULL);
    spawn_ok(s, winner_main, &w, "winner", NULL); /* index 3 */
    spawn_ok(s, blocker_main, &b[2], NULL, NULL);
    tether_result r = join_and_free(s);

    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_int_eq(r.winner, 3);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_SIBLING_SUCCEEDED);
    ck_assert_int_eq(r.cause_task, 3);
    ck_assert_int_eq(r.error, 0);
    ck_assert_int_eq(r.error_task, -1);
    ck_assert_uint_eq(r.spawned, 5);
    ck_assert_uint_eq(r.succeeded, 1);
    ck_assert_uint_eq(r.failed, 1);
    ck_assert_uint_eq(r.canceled, 3);
    ck_assert_int_gt(r.convergence_ns, 0);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(b[i].err, ECANCELED);
        ck_assert_int_eq(b[i].cause, TETHER_CAUSE_PARENT);
        ck_assert_int_eq(b[i].root_cause, TETHER_CAUSE_SIBLING_SUCCEEDED);
    }
    sem_destroy(&ready);
    th_baseline_check(base);
}
END_TEST

/* tether_token_error: non-zero exactly when cancelled; ECANCELED for a
 * first-success loser (no child error triggered it). */
START_TEST(test_first_success_losers_token_error_is_ecanceled)
{
    th_baseline base = th_baseline_take();
    sem_t ready;
    sem_init(&ready, 0, 0);
    blocker b;
    blockers_init(&b, 1, &ready);
    racer w = { .ready = &ready, .others = &b, .nothers = 1, .ret = 0 };
    tether_scope_opts o = { .policy = TETHER_POLICY_FIRST_SUCCESS };
    tether_scope *s = open_scope(&o);
    spawn_ok(s, blocker_main, &b, NULL, NULL);
    spawn_ok(s, winner_main, &w, NULL, NULL);
    tether_result r = join_and_free(s);
    ck_assert_int_eq(r.winner, 1);
    ck_assert_int_eq(b.err, ECANCELED);
    ck_assert_int_eq(b.root_cause, TETHER_CAUSE_SIBLING_SUCCEEDED);
    ck_assert_int_eq(b.token_error, ECANCELED);
    sem_destroy(&ready);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_first_success_all_fail)
{
    th_baseline base = th_baseline_take();
    int errs[3] = { ENOENT, EIO, EPIPE };
    tether_scope_opts o = { .policy = TETHER_POLICY_FIRST_SUCCESS };
    tether_scope *s = open_scope(&o);
    for (int i = 0; i < 3; i++) {
        tether_task *t;
        spawn_ok(s, return_int, &errs[i], i == 0 ? "first" : NULL, &t);
        ck_assert_int_eq(tether_task_wait(t, NULL), 0);
    }
    tether_result r = join_and_free(s);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_FAILED);
    ck_assert_int_eq(r.error, ENOENT);
    ck_assert_int_eq(r.error_task, 0);
    ck_assert_str_eq(r.error_task_name, "first");
    ck_assert_int_eq(r.winner, -1);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_NONE);
    ck_assert_uint_eq(r.failed, 3);
    th_baseline_check(base);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Strict background teardown                                             */

typedef struct bg_child {
    int err;
    tether_cause cause, root_cause;
    atomic_bool cleaned;
} bg_child;

/* Blocks until halted, then spends 100 ms cleaning up (a plain nanosleep:
 * the cleanup is not cancellable) before setting its flag. */
static int bg_slow_cleanup(void *arg)
{
    bg_child *c = arg;
    c->err = tether_sleep_for(DAY) < 0 ? errno : NOT_CANCELLED;
    c->cause = tether_token_cause(tether_current());
    c->root_cause = tether_token_root_cause(tether_current());
    struct timespec ts = { .tv_sec = 0, .tv_nsec = 100 * 1000 * 1000 };
    while (nanosleep(&ts, &ts) != 0)
        ;
    atomic_store(&c->cleaned, true);
    return c->err;
}

START_TEST(test_background_halted_after_foreground)
{
    th_baseline base = th_baseline_take();
    bg_child bg = { .err = 0 };
    tether_scope *s = open_scope(NULL);
    tether_spawn_opts bo = { .name = "bg", .background = true };
    ck_assert_int_eq(tether_spawn(s, bg_slow_cleanup, &bg, &bo, NULL), 0);
    spawn_ok(s, return_zero, NULL, "fg", NULL);
    tether_time_t t0 = tether_now();
    tether_result r;
    ck_assert_int_eq(tether_scope_join(s, &r), 0);
    int64_t took = tether_now() - t0;
    ck_assert(atomic_load(&bg.cleaned)); /* cleanup finished before join returned */
    ck_assert_int_eq(tether_scope_free(s), 0);

    ck_assert_int_ge(took, tether_ms(100));
    ck_assert_int_le(took, tether_ms(100) + th_bound_ns(1000));
    ck_assert_int_eq(bg.err, ECANCELED);
    ck_assert_int_eq(bg.root_cause, TETHER_CAUSE_SCOPE_FINISHED);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_SCOPE_FINISHED);
    ck_assert_int_eq(r.error, 0);
    ck_assert_int_eq(r.error_task, -1);
    ck_assert_uint_eq(r.spawned, 2);
    ck_assert_uint_eq(r.succeeded, 1);
    ck_assert_uint_eq(r.canceled, 1);
    ck_assert_uint_eq(r.failed, 0);
    ck_assert_int_ge(r.convergence_ns, tether_ms(100));
    th_baseline_check(base);
}
END_TEST

static int sleep_day(void *arg)
{
    (void)arg;
    return tether_sleep_for(DAY) < 0 ? errno : NOT_CANCELLED;
}

/* A background watchdog whose own tether_with_timeout fires: ETIMEDOUT. */
static int bg_watchdog(void *arg)
{
    bool *fired = arg;
    return tether_with_timeout(tether_ms(30), sleep_day, NULL, fired);
}

START_TEST(test_background_failure_fails_scope)
{
    th_baseline base = th_baseline_take();
    bool fired = false;
    blocker fg;
    blockers_init(&fg, 1, NULL);
    tether_scope *s = open_scope(NULL);
    spawn_ok(s, blocker_main, &fg, "fg", NULL);
    tether_spawn_opts bo = { .name = "watchdog", .background = true };
    ck_assert_int_eq(tether_spawn(s, bg_watchdog, &fired, &bo, NULL), 0); /* index 1 */
    tether_result r = join_and_free(s);
    ck_assert(fired);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_FAILED);
    ck_assert_int_eq(r.error, ETIMEDOUT);
    ck_assert_int_eq(r.error_task, 1);
    ck_assert_str_eq(r.error_task_name, "watchdog");
    ck_assert_int_eq(r.cause, TETHER_CAUSE_SIBLING_FAILED);
    ck_assert_int_eq(r.cause_task, 1);
    ck_assert_uint_eq(r.failed, 1);
    ck_assert_uint_eq(r.canceled, 1);
    ck_assert_int_eq(fg.err, ECANCELED);
    ck_assert_int_eq(fg.root_cause, TETHER_CAUSE_SIBLING_FAILED);
    th_baseline_check(base);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Races                                                                  */

typedef struct completion_race {
    pthread_barrier_t bar;
    unsigned child_spin, cancel_spin;
    tether_scope *s;
    int cancel_rc;
    atomic_int cleanups;
} completion_race;

/* Returns 0 unless it sees the cancellation at its last check. */
static int finish_racing_cancel(void *arg)
{
    completion_race *c = arg;
    pthread_barrier_wait(&c->bar);
    busy_spin(c->child_spin);
    int rc = tether_check();
    atomic_fetch_add(&c->cleanups, 1);
    return rc;
}

static void *cancel_thread(void *arg)
{
    completion_race *c = arg;
    pthread_barrier_wait(&c->bar);
    busy_spin(c->cancel_spin);
    c->cancel_rc = tether_scope_cancel(c->s);
    return NULL;
}

START_TEST(test_cancel_races_child_completion)
{
    th_baseline base = th_baseline_take();
    uint64_t rng = th_seed("cancel_races_child_completion");
    int iters = stress(600);
    int outcomes[2][2] = { { 0 } }; /* [cancelled by owner?][outcome canceled?] */
    for (int i = 0; i < iters; i++) {
        /* Even iterations: the owner cancels, then joins. Odd: another thread
         * cancels while the owner joins. */
        bool by_owner = i % 2 == 0;
        completion_race c = { .child_spin = (unsigned)(th_rand(&rng) % 4000),
                              .cancel_spin = (unsigned)(th_rand(&rng) % 4000) };
        pthread_barrier_init(&c.bar, NULL, by_owner ? 2 : 3);
        c.s = open_scope(NULL);
        spawn_ok(c.s, finish_racing_cancel, &c, NULL, NULL);
        pthread_t canceller;
        if (by_owner) {
            pthread_barrier_wait(&c.bar);
            busy_spin(c.cancel_spin);
            c.cancel_rc = tether_scope_cancel(c.s);
        } else {
            ck_assert_int_eq(pthread_create(&canceller, NULL, cancel_thread, &c), 0);
            pthread_barrier_wait(&c.bar);
        }
        tether_result r;
        ck_assert_int_eq(tether_scope_join(c.s, &r), 0);
        if (!by_owner)
            ck_assert_int_eq(pthread_join(canceller, NULL), 0);
        ck_assert_int_eq(tether_scope_free(c.s), 0);
        pthread_barrier_destroy(&c.bar);

        ck_assert_int_eq(atomic_load(&c.cleanups), 1);
        ck_assert_uint_eq(r.spawned, 1);
        ck_assert_uint_eq(r.failed, 0);
        ck_assert_uint_eq(r.succeeded + r.canceled, 1);
        ck_assert_msg(r.outcome == TETHER_OUTCOME_OK || r.outcome == TETHER_OUTCOME_CANCELED,
                      "iteration %d: outcome %s", i, tether_outcome_name(r.outcome));
        ck_assert(c.cancel_rc == 0 || c.cancel_rc == EINVAL);
        if (by_owner)
            ck_assert_int_eq(c.cancel_rc, 0);
        if (r.outcome == TETHER_OUTCOME_OK) {
            ck_assert_uint_eq(r.succeeded, 1);
            ck_assert_int_eq(r.cause, TETHER_CAUSE_NONE);
            ck_assert_int_eq(r.error, 0);
        } else {
            ck_assert_int_eq(c.cancel_rc, 0);
            ck_assert_int_eq(r.cause, TETHER_CAUSE_EXPLICIT);
        }
        if (r.canceled)
            ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
        outcomes[by_owner][r.outcome == TETHER_OUTCOME_CANCELED]++;
    }
    printf("cancel_races_child_completion: owner cancels: ok %d canceled %d; "
           "other thread cancels: ok %d canceled %d\n",
           outcomes[1][0], outcomes[1][1], outcomes[0][0], outcomes[0][1]);
    fflush(stdout);
    th_baseline_check(base);
}
END_TEST

typedef struct spawner {
    tether_scope *s;
    atomic_bool owner_joining;
    pid_t owner_tid;
    atomic_int ran;
    int spawn_rc[3];
} spawner;

static int count_run(void *arg)
{
    spawner *sp = arg;
    atomic_fetch_add(&sp->ran, 1);
    return 0;
}

static int spawn_during_join(void *arg)
{
    spawner *sp = arg;
    while (!atomic_load(&sp->owner_joining))
        sched_yield();
    if (th_wait_blocked(sp->owner_tid) != 0)
        return EPROTO;
    for (int i = 0; i < 3; i++)
        sp->spawn_rc[i] = tether_spawn(sp->s, count_run, sp, NULL, NULL);
    return 0;
}

START_TEST(test_child_spawns_siblings_during_join)
{
    th_baseline base = th_baseline_take();
    spawner sp = { .owner_tid = th_gettid() };
    sp.s = open_scope(NULL);
    spawn_ok(sp.s, spawn_during_join, &sp, NULL, NULL);
    atomic_store(&sp.owner_joining, true);
    tether_result r = join_and_free(sp.s);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(sp.spawn_rc[i], 0);
    ck_assert_int_eq(atomic_load(&sp.ran), 3);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_uint_eq(r.spawned, 4);
    ck_assert_uint_eq(r.succeeded, 4);
    th_baseline_check(base);
}
END_TEST

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
        int rc = tether_sleep_for(DAY) < 0 ? errno : NOT_CANCELLED;
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

START_TEST(test_nested_scopes_cancelled_from_root)
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
    int rc = tether_sleep_for(DAY) < 0 ? errno : NOT_CANCELLED;
    if (rc == ECANCELED)
        atomic_fetch_add(&h->canceled, 1);
    return rc;
}

START_TEST(test_thousand_children_cancelled_at_once)
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

START_TEST(test_spawn_slot_wait_cancelled_by_callers_token)
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
    /* Cancelled now: refused at once. */
    ck_assert_int_eq(tether_try_spawn(s, return_zero, NULL, NULL, NULL), ETIMEDOUT);
    tether_result r = release_full(s, &f);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_DEADLINE_EXCEEDED);
    ck_assert_uint_eq(r.spawned, 3);
    th_baseline_check(base);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Task handles                                                           */

START_TEST(test_task_wait_returns_result)
{
    th_baseline base = th_baseline_take();
    int vals[3] = { 0, EIO, ENOSPC };
    tether_scope_opts o = { .policy = TETHER_POLICY_SUPERVISOR };
    tether_scope *s = open_scope(&o);
    tether_task *t[3];
    for (int i = 0; i < 3; i++)
        spawn_ok(s, return_int, &vals[i], NULL, &t[i]);
    for (int i = 2; i >= 0; i--) {
        int res = -1;
        ck_assert_int_eq(tether_task_wait(t[i], &res), 0);
        ck_assert_int_eq(res, vals[i]);
        ck_assert_int_eq(tether_task_wait(t[i], NULL), 0); /* again: still valid */
    }
    tether_result r = join_and_free(s);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_PARTIAL);
    ck_assert_uint_eq(r.succeeded, 1);
    ck_assert_uint_eq(r.failed, 2);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_task_halt_cancels_one_child)
{
    th_baseline base = th_baseline_take();
    sem_t ready, gate;
    sem_init(&ready, 0, 0);
    sem_init(&gate, 0, 0);
    blocker b;
    blockers_init(&b, 1, &ready);
    gated g[2] = { { .gate = &gate }, { .gate = &gate } };
    tether_scope *s = open_scope(NULL);
    tether_task *t[3];
    spawn_ok(s, gated_main, &g[0], NULL, &t[0]);
    spawn_ok(s, blocker_main, &b, "halted", &t[1]);
    spawn_ok(s, gated_main, &g[1], NULL, &t[2]);
    wait_blocked(&ready, &b, 1);
    int res = -1;
    ck_assert_int_eq(tether_task_halt(t[1], &res), 0);
    ck_assert_int_eq(res, ECANCELED);
    ck_assert(atomic_load(&b.cleaned)); /* halt waited for it */
    ck_assert_int_eq(b.cause, TETHER_CAUSE_HALTED);
    ck_assert_int_eq(tether_token_cause(tether_task_token(t[1])), TETHER_CAUSE_HALTED);
    /* Siblings and the scope untouched. */
    ck_assert_int_eq(tether_token_cause(tether_task_token(t[0])), TETHER_CAUSE_NONE);
    ck_assert_int_eq(tether_token_cause(tether_task_token(t[2])), TETHER_CAUSE_NONE);
    ck_assert_int_eq(tether_token_cause(tether_scope_token(s)), TETHER_CAUSE_NONE);
    sem_post(&gate);
    sem_post(&gate);
    tether_result r = join_and_free(s);
    ck_assert_int_eq(g[0].check, 0);
    ck_assert_int_eq(g[1].check, 0);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_int_eq(r.error, 0);
    ck_assert_uint_eq(r.succeeded, 2);
    ck_assert_uint_eq(r.canceled, 1);
    ck_assert_uint_eq(r.failed, 0);
    sem_destroy(&ready);
    sem_destroy(&gate);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_per_child_timeout_fails_that_child)
{
    th_baseline base = th_baseline_take();
    sem_t gate;
    sem_init(&gate, 0, 0);
    blocker b;
    blockers_init(&b, 1, NULL);
    gated g = { .gate = &gate };
    tether_scope_opts o = { .policy = TETHER_POLICY_SUPERVISOR };
    tether_scope *s = open_scope(&o);
    tether_task *t[2];
    tether_spawn_opts so = { .name = "timed", .timeout_ns = tether_ms(50) };
    tether_time_t t0 = tether_now();
    ck_assert_int_eq(tether_spawn(s, blocker_main, &b, &so, &t[0]), 0);
    spawn_ok(s, gated_main, &g, NULL, &t[1]);
    int res = -1;
    ck_assert_int_eq(tether_task_wait(t[0], &res), 0);
    ck_assert_int_eq(res, ETIMEDOUT);
    ck_assert_int_ge(b.woke_at - t0, tether_ms(50));
    ck_assert_int_le(b.woke_at - t0, tether_ms(50) + th_bound_ns(1000));
    ck_assert_int_eq(b.cause, TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(tether_token_cause(tether_scope_token(s)), TETHER_CAUSE_NONE);
    ck_assert_int_eq(tether_token_deadline(tether_scope_token(s)), TETHER_NEVER);
    sem_post(&gate);
    tether_result r = join_and_free(s);
    ck_assert_int_eq(g.check, 0);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_PARTIAL);
    ck_assert_int_eq(r.error, ETIMEDOUT);
    ck_assert_int_eq(r.error_task, 0);
    ck_assert_str_eq(r.error_task_name, "timed");
    ck_assert_uint_eq(r.failed, 1);
    ck_assert_uint_eq(r.succeeded, 1);
    ck_assert_uint_eq(r.canceled, 0);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_NONE);
    sem_destroy(&gate);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_child_token_is_task_token)
{
    th_baseline base = th_baseline_take();
    sem_t ready;
    sem_init(&ready, 0, 0);
    blocker b;
    blockers_init(&b, 1, &ready);
    tether_scope_opts o = { .timeout_ns = tether_sec(3600) };
    tether_scope *s = open_scope(&o);
    tether_task *t;
    spawn_ok(s, blocker_main, &b, NULL, &t);
    wait_blocked(&ready, &b, 1);
    ck_assert_ptr_nonnull(tether_task_token(t));
    ck_assert_ptr_eq(b.token, tether_task_token(t));
    ck_assert_ptr_ne(b.token, tether_scope_token(s));
    /* It descends from the scope's token: same inherited deadline, and the
     * scope's cancellation reaches it through its parent. */
    ck_assert_int_eq(tether_token_deadline(b.token), tether_token_deadline(tether_scope_token(s)));
    ck_assert_int_eq(tether_scope_cancel(s), 0);
    ck_assert_int_eq(tether_task_wait(t, NULL), 0);
    ck_assert_int_eq(b.cause, TETHER_CAUSE_PARENT);
    ck_assert_int_eq(b.root_cause, TETHER_CAUSE_EXPLICIT);
    tether_result r = join_and_free(s);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
    sem_destroy(&ready);
    th_baseline_check(base);
}
END_TEST

typedef struct named {
    char thread_name[32];
} named;

static int record_thread_name(void *arg)
{
    named *n = arg;
    pthread_getname_np(pthread_self(), n->thread_name, sizeof n->thread_name);
    return EIO;
}

START_TEST(test_long_names_truncated)
{
    th_baseline base = th_baseline_take();
    static const char name[] = "a-child-name-that-is-much-longer-than-31-bytes";
    named n = { { 0 } };
    char name_buf[sizeof name];
    memcpy(name_buf, name, sizeof name);
    tether_scope_opts so = { .name = name };
    tether_scope *s = open_scope(&so);
    tether_spawn_opts o = { .name = name_buf };
    ck_assert_int_eq(tether_spawn(s, record_thread_name, &n, &o, NULL), 0);
    memset(name_buf, 'x', sizeof name_buf - 1); /* the name was copied */
    tether_result r = join_and_free(s);
    ck_assert_int_eq(r.error, EIO);
    ck_assert_int_eq(strlen(r.error_task_name), TETHER_NAME_MAX - 1);
    ck_assert_int_eq(strncmp(r.error_task_name, name, TETHER_NAME_MAX - 1), 0);
    ck_assert_int_eq(strlen(n.thread_name), 15);
    ck_assert_int_eq(strncmp(n.thread_name, name, 15), 0);
    th_baseline_check(base);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* tether_scope_run and TETHER_SCOPE_GUARD                                */

typedef struct worker {
    int rc;                  /* what its 20 ms tether sleep returned */
    atomic_bool done;
} worker;

static int worker_20ms(void *arg)
{
    worker *w = arg;
    w->rc = tether_sleep_for(tether_ms(20)) < 0 ? errno : 0;
    atomic_store(&w->done, true);
    return w->rc;
}

typedef struct body_ctx {
    worker w[3];
    blocker b;
    tether_token *current, *scope_token;
    int ret;
} body_ctx;

static int body_spawn_workers(tether_scope *s, void *arg)
{
    body_ctx *c = arg;
    c->current = tether_current();
    c->scope_token = tether_scope_token(s);
    for (int i = 0; i < 3; i++)
        if (tether_spawn(s, worker_20ms, &c->w[i], NULL, NULL) != 0)
            return ENOTRECOVERABLE;
    if (c->ret && tether_spawn(s, blocker_main, &c->b, NULL, NULL) != 0)
        return ENOTRECOVERABLE;
    return c->ret;
}

START_TEST(test_scope_run_joins_children)
{
    th_baseline base = th_baseline_take();
    body_ctx c;
    memset(&c, 0, sizeof c);
    tether_result r;
    ck_assert_int_eq(tether_scope_run(NULL, body_spawn_workers, &c, &r), 0);
    for (int i = 0; i < 3; i++) {
        ck_assert(atomic_load(&c.w[i].done));
        ck_assert_int_eq(c.w[i].rc, 0);
    }
    ck_assert_ptr_nonnull(c.current);
    ck_assert_ptr_eq(c.current, c.scope_token); /* the body runs inside the scope */
    ck_assert_ptr_null(tether_current());
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_uint_eq(r.spawned, 3);
    ck_assert_uint_eq(r.succeeded, 3);
    ck_assert_int_eq(tether_scope_run(NULL, body_spawn_workers, &c, NULL), 0); /* NULL result */
    th_baseline_check(base);
}
END_TEST

START_TEST(test_scope_run_body_error_fails_scope)
{
    th_baseline base = th_baseline_take();
    body_ctx c;
    memset(&c, 0, sizeof c);
    c.ret = EPROTO;
    blockers_init(&c.b, 1, NULL);
    tether_result r;
    ck_assert_int_eq(tether_scope_run(NULL, body_spawn_workers, &c, &r), 0);
    ck_assert(atomic_load(&c.b.cleaned));
    ck_assert_int_eq(c.b.err, ECANCELED);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_FAILED);
    ck_assert_int_eq(r.error, EPROTO);
    ck_assert_int_eq(r.error_task, -1);
    ck_assert_uint_eq(r.spawned, 4);
    ck_assert_uint_ge(r.canceled, 1);
    ck_assert_uint_eq(r.failed, 0);
    th_baseline_check(base);
}
END_TEST

static int guard_return(worker w[2])
{
    TETHER_SCOPE_GUARD(s, NULL);
    ck_assert_ptr_nonnull(s);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(tether_spawn(s, worker_20ms, &w[i], NULL, NULL), 0);
    return 7; /* leaves the block: the guard joins */
}

static int guard_goto(worker w[2], int *done_at_exit)
{
    {
        TETHER_SCOPE_GUARD(s, NULL);
        ck_assert_ptr_nonnull(s);
        for (int i = 0; i < 2; i++)
            ck_assert_int_eq(tether_spawn(s, worker_20ms, &w[i], NULL, NULL), 0);
        goto out;
    }
out:
    *done_at_exit = atomic_load(&w[0].done) + atomic_load(&w[1].done);
    return 0;
}

START_TEST(test_guard_joins_on_return_and_goto)
{
    th_baseline base = th_baseline_take();
    worker w[2];
    memset(w, 0, sizeof w);
    ck_assert_int_eq(guard_return(w), 7);
    for (int i = 0; i < 2; i++) {
        ck_assert(atomic_load(&w[i].done));
        ck_assert_int_eq(w[i].rc, 0); /* joined, not cancelled */
    }
    ck_assert_int_eq(th_wait_thread_count(base.threads), base.threads);

    memset(w, 0, sizeof w);
    int done = -1;
    ck_assert_int_eq(guard_goto(w, &done), 0);
    ck_assert_int_eq(done, 2);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(w[i].rc, 0);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_guard_with_join_inside)
{
    th_baseline base = th_baseline_take();
    int eio = EIO;
    {
        TETHER_SCOPE_GUARD(s, NULL);
        ck_assert_ptr_nonnull(s);
        spawn_ok(s, return_int, &eio, "bad", NULL);
        tether_result r;
        ck_assert_int_eq(tether_scope_join(s, &r), 0);
        ck_assert_int_eq(r.outcome, TETHER_OUTCOME_FAILED);
        ck_assert_int_eq(r.error, EIO);
    } /* frees the joined scope */
    {
        tether_scope_opts bad = { .policy = (tether_policy)99 };
        TETHER_SCOPE_GUARD(s, &bad);
        ck_assert_ptr_null(s);
        ck_assert_int_eq(tether_spawn(s, return_zero, NULL, NULL, NULL), EINVAL);
    }
    th_baseline_check(base);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Misuse                                                                 */

START_TEST(test_misuse_after_join)
{
    th_baseline base = th_baseline_take();
    tether_scope *s = open_scope(NULL);
    spawn_ok(s, return_zero, NULL, NULL, NULL);
    tether_result r;
    ck_assert_int_eq(tether_scope_join(s, &r), 0);
    ck_assert_int_eq(tether_scope_join(s, &r), EINVAL);
    ck_assert_int_eq(tether_spawn(s, return_zero, NULL, NULL, NULL), EINVAL);
    ck_assert_int_eq(tether_try_spawn(s, return_zero, NULL, NULL, NULL), EINVAL);
    ck_assert_int_eq(tether_scope_cancel(s), EINVAL);
    ck_assert_int_eq(th_wait_thread_count(base.threads), base.threads);
    ck_assert_int_eq(tether_scope_free(s), 0);
    th_baseline_check(base);
}
END_TEST

typedef struct misuse_inside {
    tether_scope *outer;
    tether_task *self;
    sem_t *published;        /* `self` is set */
    int join_rc, free_rc, wait_rc, halt_rc, check_after;
    int grand_join_rc, grand_free_rc;
} misuse_inside;

static int grandchild_misuse(void *arg)
{
    misuse_inside *in = arg;
    tether_result r;
    in->grand_join_rc = tether_scope_join(in->outer, &r);
    in->grand_free_rc = tether_scope_free(in->outer);
    return 0;
}

static int child_misuse(void *arg)
{
    misuse_inside *in = arg;
    tether_result r;
    in->join_rc = tether_scope_join(in->outer, &r);
    in->free_rc = tether_scope_free(in->outer);
    sem_wait_ok(in->published);
    in->wait_rc = tether_task_wait(in->self, NULL);
    in->halt_rc = tether_task_halt(in->self, NULL);
    in->check_after = tether_check();
    tether_scope *inner;
    int rc = tether_scope_open(&inner, NULL);
    if (rc)
        return rc;
    rc = tether_spawn(inner, grandchild_misuse, in, NULL, NULL);
    tether_scope_join(inner, NULL);
    tether_scope_free(inner);
    return rc;
}

START_TEST(test_join_and_free_from_inside_edeadlk)
{
    th_baseline base = th_baseline_take();
    sem_t published;
    sem_init(&published, 0, 0);
    misuse_inside in = { .published = &published };
    in.outer = open_scope(NULL);
    spawn_ok(in.outer, child_misuse, &in, NULL, &in.self);
    sem_post(&published);
    tether_result r = join_and_free(in.outer);
    ck_assert_int_eq(in.join_rc, EDEADLK);
    ck_assert_int_eq(in.free_rc, EDEADLK);
    ck_assert_int_eq(in.wait_rc, EDEADLK);
    ck_assert_int_eq(in.halt_rc, EDEADLK);
    ck_assert_int_eq(in.check_after, 0); /* the refused halt cancelled nothing */
    ck_assert_int_eq(in.grand_join_rc, EDEADLK);
    ck_assert_int_eq(in.grand_free_rc, EDEADLK);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    sem_destroy(&published);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_null_and_bad_arguments)
{
    th_baseline base = th_baseline_take();
    tether_task *t = (tether_task *)&t;
    ck_assert_int_eq(tether_scope_open(NULL, NULL), EINVAL);
    ck_assert_int_eq(tether_spawn(NULL, return_zero, NULL, NULL, &t), EINVAL);
    ck_assert_ptr_null(t);
    ck_assert_int_eq(tether_try_spawn(NULL, return_zero, NULL, NULL, NULL), EINVAL);
    ck_assert_int_eq(tether_scope_join(NULL, NULL), EINVAL);
    ck_assert_int_eq(tether_scope_free(NULL), EINVAL);
    ck_assert_int_eq(tether_scope_cancel(NULL), EINVAL);
    ck_assert_int_eq(tether_task_wait(NULL, NULL), EINVAL);
    ck_assert_int_eq(tether_task_halt(NULL, NULL), EINVAL);
    ck_assert_ptr_null(tether_task_token(NULL));
    ck_assert_ptr_null(tether_scope_token(NULL));
    ck_assert_int_eq(tether_scope_run(NULL, NULL, NULL, NULL), EINVAL);

    tether_scope *s = (tether_scope *)&s;
    tether_scope_opts bad_policy = { .policy = (tether_policy)99 };
    ck_assert_int_eq(tether_scope_open(&s, &bad_policy), EINVAL);
    ck_assert_ptr_null(s);
    tether_scope_opts bad_timeout = { .timeout_ns = -1 };
    ck_assert_int_eq(tether_scope_open(&s, &bad_timeout), EINVAL);
    ck_assert_int_eq(tether_scope_run(&bad_policy, NULL, NULL, NULL), EINVAL);
    body_ctx never_called;
    memset(&never_called, 0, sizeof never_called);
    ck_assert_int_eq(tether_scope_run(&bad_timeout, body_spawn_workers, &never_called, NULL),
                     EINVAL);
    ck_assert_ptr_null(never_called.current);

    s = open_scope(NULL);
    int threads = th_thread_count();
    t = (tether_task *)&t;
    ck_assert_int_eq(tether_spawn(s, NULL, NULL, NULL, &t), EINVAL);
    ck_assert_ptr_null(t);
    ck_assert_int_eq(tether_try_spawn(s, NULL, NULL, NULL, NULL), EINVAL);
    tether_spawn_opts small_stack = { .stack_size = 1 };
    ck_assert_int_eq(tether_spawn(s, return_zero, NULL, &small_stack, NULL), EINVAL);
    tether_spawn_opts neg_timeout = { .timeout_ns = -1 };
    ck_assert_int_eq(tether_spawn(s, return_zero, NULL, &neg_timeout, NULL), EINVAL);
    ck_assert_int_eq(th_thread_count(), threads);
    tether_result r = join_and_free(s);
    ck_assert_uint_eq(r.spawned, 0);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_spawn_into_cancelled_scope)
{
    th_baseline base = th_baseline_take();
    tether_scope *s = open_scope(NULL);
    ck_assert_int_eq(tether_scope_cancel(s), 0);
    ck_assert_int_eq(tether_scope_cancel(s), 0); /* any number of times */
    int threads = th_thread_count();
    tether_task *t = (tether_task *)&t;
    ck_assert_int_eq(tether_spawn(s, return_zero, NULL, NULL, &t), ECANCELED);
    ck_assert_ptr_null(t);
    ck_assert_int_eq(tether_try_spawn(s, return_zero, NULL, NULL, NULL), ECANCELED);
    tether_spawn_opts bg = { .background = true };
    ck_assert_int_eq(tether_spawn(s, return_zero, NULL, &bg, NULL), ECANCELED);
    ck_assert_int_eq(th_thread_count(), threads);
    tether_result r = join_and_free(s);
    ck_assert_uint_eq(r.spawned, 0);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_EXPLICIT);
    th_baseline_check(base);
}
END_TEST

/* The other order: the scope is cancelled before its children block. */
typedef struct late_blocker {
    enum block_kind kind;
    sem_t *gate;
    int err;
    int64_t blocked_for;
} late_blocker;

static int late_blocker_main(void *arg)
{
    late_blocker *l = arg;
    int fds[2];
    if (pipe(fds) != 0)
        return errno;
    sem_wait_ok(l->gate);
    tether_time_t t0 = tether_now();
    char c;
    if (l->kind == BLOCK_READ)
        l->err = tether_read(fds[0], &c, 1) < 0 ? errno : NOT_CANCELLED;
    else
        l->err = tether_sleep_for(DAY) < 0 ? errno : NOT_CANCELLED;
    l->blocked_for = tether_now() - t0;
    close(fds[0]);
    close(fds[1]);
    return l->err;
}

START_TEST(test_children_block_after_scope_cancelled)
{
    th_baseline base = th_baseline_take();
    sem_t gate;
    sem_init(&gate, 0, 0);
    late_blocker l[2] = { { .kind = BLOCK_SLEEP, .gate = &gate },
                          { .kind = BLOCK_READ, .gate = &gate } };
    tether_scope *s = open_scope(NULL);
    spawn_ok(s, late_blocker_main, &l[0], NULL, NULL);
    spawn_ok(s, late_blocker_main, &l[1], NULL, NULL);
    ck_assert_int_eq(tether_scope_cancel(s), 0);
    sem_post(&gate);
    sem_post(&gate);
    tether_result r = join_and_free(s);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(l[i].err, ECANCELED);
        ck_assert_int_le(l[i].blocked_for, th_bound_ns(500)); /* failed without blocking */
    }
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_EXPLICIT);
    ck_assert_uint_eq(r.canceled, 2);
    sem_destroy(&gate);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_free_without_join_cancels_children)
{
    th_baseline base = th_baseline_take();
    sem_t ready;
    sem_init(&ready, 0, 0);
    blocker b[2];
    blockers_init(b, 2, &ready);
    tether_scope *s = open_scope(NULL);
    tether_task *t;
    spawn_ok(s, blocker_main, &b[0], NULL, &t);
    spawn_ok(s, blocker_main, &b[1], NULL, NULL);
    wait_blocked(&ready, b, 2);
    ck_assert_int_eq(tether_scope_free(s), 0);
    for (int i = 0; i < 2; i++) {
        ck_assert(atomic_load(&b[i].cleaned));
        ck_assert_int_eq(b[i].err, ECANCELED);
        ck_assert_int_eq(b[i].root_cause, TETHER_CAUSE_EXPLICIT);
    }
    sem_destroy(&ready);
    th_baseline_check(base);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Parent tokens                                                          */

START_TEST(test_parent_token_cancel)
{
    th_baseline base = th_baseline_take();
    sem_t ready;
    sem_init(&ready, 0, 0);
    blocker b[2];
    blockers_init(b, 2, &ready);
    tether_token *parent;
    ck_assert_int_eq(tether_token_new(&parent, NULL, TETHER_NEVER), 0);
    tether_scope_opts o = { .parent = parent };
    tether_scope *s = open_scope(&o);
    spawn_ok(s, blocker_main, &b[0], NULL, NULL);
    spawn_ok(s, blocker_main, &b[1], NULL, NULL);
    wait_blocked(&ready, b, 2);
    ck_assert_int_eq(tether_token_cancel(parent, ECONNRESET), 0);
    tether_result r = join_and_free(s);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_PARENT);
    ck_assert_int_eq(r.error_task, -1);
    ck_assert_uint_eq(r.canceled, 2);
    ck_assert_uint_eq(r.failed, 0);
    ck_assert_int_gt(r.convergence_ns, 0);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(b[i].err, ECANCELED);
        ck_assert_int_eq(b[i].root_cause, TETHER_CAUSE_EXPLICIT);
        ck_assert_int_eq(b[i].token_error, ECONNRESET);
    }
    ck_assert_int_eq(tether_token_free(parent), 0);

    /* Opened under an already-cancelled parent: born cancelled. */
    ck_assert_int_eq(tether_token_new(&parent, NULL, TETHER_NEVER), 0);
    ck_assert_int_eq(tether_token_cancel(parent, 0), 0);
    o.parent = parent;
    s = open_scope(&o);
    ck_assert_int_eq(tether_spawn(s, return_zero, NULL, NULL, NULL), ECANCELED);
    r = join_and_free(s);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_PARENT);
    ck_assert_int_eq(tether_token_free(parent), 0);
    sem_destroy(&ready);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_current_token_is_default_parent_unless_detached)
{
    th_baseline base = th_baseline_take();
    sem_t gate;
    sem_init(&gate, 0, 0);
    tether_token *cur;
    ck_assert_int_eq(tether_token_new(&cur, NULL, TETHER_NEVER), 0);
    ck_assert_int_eq(tether_token_enter(cur), 0);
    tether_scope *under = open_scope(NULL);
    tether_scope_opts det = { .detached = true };
    tether_scope *detached = open_scope(&det);
    tether_token *other;
    ck_assert_int_eq(tether_token_new(&other, NULL, TETHER_NEVER), 0);
    tether_scope_opts both = { .detached = true, .parent = other };
    tether_scope *detached_too = open_scope(&both); /* detached wins over parent */
    ck_assert_int_eq(tether_token_leave(cur), 0);

    blocker b;
    blockers_init(&b, 1, NULL);
    gated g = { .gate = &gate };
    spawn_ok(under, blocker_main, &b, NULL, NULL);
    spawn_ok(detached, gated_main, &g, NULL, NULL);
    ck_assert_int_eq(tether_token_cancel(cur, 0), 0);
    ck_assert_int_eq(tether_token_cancel(other, 0), 0);
    ck_assert_int_eq(tether_token_cause(tether_scope_token(under)), TETHER_CAUSE_PARENT);
    ck_assert_int_eq(tether_token_cause(tether_scope_token(detached)), TETHER_CAUSE_NONE);
    ck_assert_int_eq(tether_token_cause(tether_scope_token(detached_too)), TETHER_CAUSE_NONE);
    sem_post(&gate);

    tether_result r = join_and_free(under);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_PARENT);
    ck_assert_int_eq(b.err, ECANCELED);
    r = join_and_free(detached);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_int_eq(g.check, 0);
    r = join_and_free(detached_too);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_int_eq(tether_token_free(cur), 0);
    ck_assert_int_eq(tether_token_free(other), 0);
    sem_destroy(&gate);
    th_baseline_check(base);
}
END_TEST

/* ---------------------------------------------------------------------- */

static Suite *suite(void)
{
    Suite *s = suite_create("scope");
    TCase *tc;

    tc = tcase_create("fail_fast");
    tcase_set_timeout(tc, th_timeout_s(30) * stress(1)); /* iteration counts scale too */
    tcase_add_test(tc, test_fail_fast_cancels_blocked_siblings);
    tcase_add_test(tc, test_first_error_wins_when_two_fail_together);
    suite_add_tcase(s, tc);

    tc = tcase_create("deadline");
    tcase_set_timeout(tc, th_timeout_s(20) * stress(1)); /* iteration counts scale too */
    tcase_add_test(tc, test_scope_timeout_cancels_blocked_children);
    tcase_add_test(tc, test_scope_deadline_children_never_counted_failed);
    tcase_add_test(tc, test_slow_child_delays_join_not_siblings);
    tcase_add_test(tc, test_parent_deadline_exceeds_scope);
    suite_add_tcase(s, tc);

    tc = tcase_create("policies");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, test_supervisor_partial);
    tcase_add_test(tc, test_supervisor_all_fail);
    tcase_add_test(tc, test_supervisor_all_succeed);
    tcase_add_test(tc, test_supervisor_deadline_keeps_counts);
    tcase_add_test(tc, test_first_success_winner_cancels_rest);
    tcase_add_test(tc, test_first_success_losers_token_error_is_ecanceled);
    tcase_add_test(tc, test_first_success_all_fail);
    suite_add_tcase(s, tc);

    tc = tcase_create("background");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, test_background_halted_after_foreground);
    tcase_add_test(tc, test_background_failure_fails_scope);
    suite_add_tcase(s, tc);

    tc = tcase_create("races");
    tcase_set_timeout(tc, th_timeout_s(30) * stress(1)); /* iteration counts scale too */
    tcase_add_test(tc, test_cancel_races_child_completion);
    tcase_add_test(tc, test_child_spawns_siblings_during_join);
    tcase_add_test(tc, test_children_block_after_scope_cancelled);
    suite_add_tcase(s, tc);

    tc = tcase_create("crowds");
    tcase_set_timeout(tc, th_timeout_s(60) * stress(1)); /* iteration counts scale too */
    tcase_add_test(tc, test_nested_scopes_cancelled_from_root);
    tcase_add_test(tc, test_thousand_children_cancelled_at_once);
    tcase_add_test(tc, test_leak_ten_thousand_scopes);
    suite_add_tcase(s, tc);

    tc = tcase_create("max_children");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, test_max_children_never_exceeded);
    tcase_add_test(tc, test_try_spawn_eagain_when_full);
    tcase_add_test(tc, test_spawn_slot_wait_cancelled_by_callers_token);
    tcase_add_test(tc, test_spawn_slot_wait_callers_deadline);
    tcase_add_test(tc, test_spawn_slot_wait_scope_deadline);
    suite_add_tcase(s, tc);

    tc = tcase_create("tasks");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, test_task_wait_returns_result);
    tcase_add_test(tc, test_task_halt_cancels_one_child);
    tcase_add_test(tc, test_per_child_timeout_fails_that_child);
    tcase_add_test(tc, test_child_token_is_task_token);
    tcase_add_test(tc, test_long_names_truncated);
    suite_add_tcase(s, tc);

    tc = tcase_create("body");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, test_scope_run_joins_children);
    tcase_add_test(tc, test_scope_run_body_error_fails_scope);
    tcase_add_test(tc, test_guard_joins_on_return_and_goto);
    tcase_add_test(tc, test_guard_with_join_inside);
    suite_add_tcase(s, tc);

    tc = tcase_create("misuse");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, test_misuse_after_join);
    tcase_add_test(tc, test_join_and_free_from_inside_edeadlk);
    tcase_add_test(tc, test_null_and_bad_arguments);
    tcase_add_test(tc, test_spawn_into_cancelled_scope);
    tcase_add_test(tc, test_free_without_join_cancels_children);
    suite_add_tcase(s, tc);

    tc = tcase_create("parent");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, test_parent_token_cancel);
    tcase_add_test(tc, test_current_token_is_default_parent_unless_detached);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
