/*
 * Contract matrix: scopes and tasks (tether_scope_open, tether_spawn,
 * tether_try_spawn, tether_task_wait, _halt, _late, _token, tether_scope_token,
 * _cancel, _join, _free, _run, TETHER_SCOPE_GUARD), and the same calls on a
 * scope with reuse_threads (test/test_reuse.c has the rest of reuse).
 *
 * Rows that could hang on a defect (a join that never returns) run in a
 * forked child under alarm(): a hang fails that row as SIGALRM instead of
 * stopping the test. Rows are listed in docs/contract-matrix.md.
 */
#define _GNU_SOURCE
#include "contract.h"

#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>

static int ret0(void *a)
{
    (void)a;
    return 0;
}

static int ret_arg(void *a)
{
    return (int)(intptr_t)a;
}

/* Sleep until canceled; returns ECANCELED/ETIMEDOUT. */
static int until_canceled(void *a)
{
    (void)a;
    if (tether_sleep_for(tether_sec(60)) == 0)
        return 0;
    return errno;
}

/* Row in a child with a hang bound: the child exits with fn's result. */
static unsigned hang_bound_s(void)
{
    return (unsigned)th_timeout_s(1);
}

static void run_bounded(ct_rows *r, const char *name, long long (*fn)(void *), void *ctx,
                        long long want)
{
    int err, sig;
    long long got = ct_in_child(fn, ctx, &err, &sig);
    const char *w = want ? strerrorname_np((int)want) : "0";
    if (sig == SIGALRM)
        ct_row(r, 0, "%s: expected %s, got a hang (no return within %u s)", name, w,
               hang_bound_s());
    else if (sig)
        ct_row(r, 0, "%s: expected %s, got a crash (signal %d; -1: a sanitizer report)", name, w,
               sig);
    else
        ct_row(r, got == want, "%s: expected %s got %s (%lld)", name,
               want ? strerrorname_np((int)want) : "0", got > 0 ? strerrorname_np((int)got) : "0",
               got);
}

/* A handler of someone else's. */
static void ct_foreign_handler(int sig)
{
    (void)sig;
}

START_TEST(contract_tether_scope_open)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    tether_scope *s = NULL;
    CT_RC(&r, "tether_scope_open/out NULL", tether_scope_open(NULL, NULL), EINVAL);
    tether_scope_opts o = { .policy = (tether_policy)99 };
    CT_RC(&r, "tether_scope_open/policy out of range", tether_scope_open(&s, &o), EINVAL);
    o = (tether_scope_opts){ .timeout_ns = -1 };
    CT_RC(&r, "tether_scope_open/negative timeout", tether_scope_open(&s, &o), EINVAL);
    o = (tether_scope_opts){ .deadline = -5 };
    CT_RC(&r, "tether_scope_open/negative deadline", tether_scope_open(&s, &o), EINVAL);
    o = (tether_scope_opts){ .hostage_grace_ns = -1 };
    CT_RC(&r, "tether_scope_open/negative hostage_grace_ns", tether_scope_open(&s, &o), EINVAL);
    o = (tether_scope_opts){ .hostage_escalate = true };
    CT_RC(&r, "tether_scope_open/hostage_escalate without grace", tether_scope_open(&s, &o),
          EINVAL);
    o = (tether_scope_opts){ .hostage_grace_ns = 1,
                             .hostage_escalate = true,
                             .hostage_signal = SIGUSR1 };
    CT_RC(&r, "tether_scope_open/hostage_signal not realtime", tether_scope_open(&s, &o), EINVAL);
    o.hostage_signal = SIGRTMAX + 1;
    CT_RC(&r, "tether_scope_open/hostage_signal above SIGRTMAX", tether_scope_open(&s, &o), EINVAL);
    /* A realtime signal with someone else's handler is not taken over. */
    struct sigaction theirs = { .sa_handler = ct_foreign_handler }, old;
    ck_assert_int_eq(sigaction(SIGRTMIN + 6, &theirs, &old), 0);
    o.hostage_signal = SIGRTMIN + 6;
    CT_RC(&r, "tether_scope_open/hostage_signal with a foreign handler", tether_scope_open(&s, &o),
          EBUSY);
    ck_assert_int_eq(sigaction(SIGRTMIN + 6, &old, NULL), 0);
    o.hostage_signal = 0;
    int hrc = tether_scope_open(&s, &o);
    CT_RC(&r, "tether_scope_open/hostage escalation, default signal", hrc, 0);
    if (hrc == 0) {
        tether_scope_join(s, NULL);
        tether_scope_free(s);
    }
    /* Under an already-canceled / expired current token: opens; spawn refuses. */
    static const ct_state dead[] = { CT_CANCELED, CT_EXPIRED };
    for (size_t i = 0; i < 2; i++) {
        tether_token *t = ct_enter(dead[i], 0);
        int rc = tether_scope_open(&s, NULL);
        char name[96];
        snprintf(name, sizeof name, "tether_scope_open/%s current token", ct_state_name(dead[i]));
        CT_RC(&r, name, rc, 0);
        if (rc == 0) {
            snprintf(name, sizeof name, "tether_spawn/scope under %s token",
                     ct_state_name(dead[i]));
            CT_RC(&r, name, tether_spawn(s, ret0, NULL, NULL, NULL), ct_expected(dead[i]));
            tether_result res;
            tether_scope_join(s, &res);
            tether_scope_free(s);
        }
        ct_leave(t);
    }
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

/* A name of 40 bytes with no NUL, ending at a PROT_NONE page (decision 10). */
static long long name_at_guard(void *ctx)
{
    int spawn = *(int *)ctx;
    alarm(hang_bound_s());
    char *g = ct_guarded();
    char *name = g - 40;
    memset(name, 'n', 40);
    tether_scope *s;
    tether_scope_opts o = { .name = spawn ? "scope" : name };
    int rc = tether_scope_open(&s, &o);
    if (rc)
        return rc;
    if (spawn) {
        tether_spawn_opts so = { .name = name };
        rc = tether_spawn(s, ret0, NULL, &so, NULL);
    }
    tether_result res;
    tether_scope_join(s, &res);
    tether_scope_free(s);
    return rc;
}

START_TEST(contract_names)
{
    ct_rows r = { .test = __func__ };
    int spawn = 0;
    run_bounded(&r, "tether_scope_open/name without NUL before an unmapped page", name_at_guard,
                &spawn, 0);
    spawn = 1;
    run_bounded(&r, "tether_spawn/name without NUL before an unmapped page", name_at_guard, &spawn,
                0);
    ct_done(&r);
}
END_TEST

START_TEST(contract_tether_spawn)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    tether_scope *s;
    ck_assert_int_eq(tether_scope_open(&s, NULL), 0);
    CT_RC(&r, "tether_spawn/scope NULL", tether_spawn(NULL, ret0, NULL, NULL, NULL), EINVAL);
    CT_RC(&r, "tether_spawn/fn NULL", tether_spawn(s, NULL, NULL, NULL, NULL), EINVAL);
    tether_spawn_opts so = { .stack_size = 1 };
    CT_RC(&r, "tether_spawn/stack_size 1", tether_spawn(s, ret0, NULL, &so, NULL), EINVAL);
    so = (tether_spawn_opts){ .stack_size = SIZE_MAX };
    CT_RC(&r, "tether_spawn/stack_size SIZE_MAX", tether_spawn(s, ret0, NULL, &so, NULL), EINVAL);
    so = (tether_spawn_opts){ .timeout_ns = -1 };
    CT_RC(&r, "tether_spawn/negative timeout", tether_spawn(s, ret0, NULL, &so, NULL), EINVAL);
    CT_RC(&r, "tether_try_spawn/scope NULL", tether_try_spawn(NULL, ret0, NULL, NULL, NULL),
          EINVAL);
    CT_RC(&r, "tether_try_spawn/fn NULL", tether_try_spawn(s, NULL, NULL, NULL, NULL), EINVAL);
    ck_assert_int_eq(tether_scope_cancel(s), 0);
    CT_RC(&r, "tether_spawn/canceled scope", tether_spawn(s, ret0, NULL, NULL, NULL), ECANCELED);
    CT_RC(&r, "tether_try_spawn/canceled scope", tether_try_spawn(s, ret0, NULL, NULL, NULL),
          ECANCELED);
    tether_result res;
    ck_assert_int_eq(tether_scope_join(s, &res), 0);
    CT_RC(&r, "tether_spawn/joined scope", tether_spawn(s, ret0, NULL, NULL, NULL), EINVAL);
    CT_RC(&r, "tether_try_spawn/joined scope", tether_try_spawn(s, ret0, NULL, NULL, NULL), EINVAL);
    ck_assert_int_eq(tether_scope_free(s), 0);
    /* A scope past its deadline: ETIMEDOUT. */
    tether_scope_opts o = { .deadline = tether_now() - 1 };
    ck_assert_int_eq(tether_scope_open(&s, &o), 0);
    CT_RC(&r, "tether_spawn/scope past deadline", tether_spawn(s, ret0, NULL, NULL, NULL),
          ETIMEDOUT);
    tether_scope_join(s, &res);
    ck_assert_int_eq(tether_scope_free(s), 0);
    /* max_children full: try_spawn EAGAIN; spawn under an expired caller token ETIMEDOUT. */
    o = (tether_scope_opts){ .max_children = 1 };
    ck_assert_int_eq(tether_scope_open(&s, &o), 0);
    ck_assert_int_eq(tether_spawn(s, until_canceled, NULL, NULL, NULL), 0);
    CT_RC(&r, "tether_try_spawn/scope full", tether_try_spawn(s, ret0, NULL, NULL, NULL), EAGAIN);
    tether_token *t;
    ck_assert_int_eq(tether_token_new(&t, NULL, tether_deadline_after(tether_ms(20))), 0);
    ck_assert_int_eq(tether_token_enter(t), 0);
    CT_RC(&r, "tether_spawn/scope full, caller deadline", tether_spawn(s, ret0, NULL, NULL, NULL),
          ETIMEDOUT);
    ct_leave(t);
    tether_scope_cancel(s);
    tether_scope_join(s, &res);
    ck_assert_int_eq(tether_scope_free(s), 0);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

static tether_task *self_task;
static _Atomic int self_ready;
static int wait_self(void *a)
{
    while (!atomic_load(&self_ready)) {
    }
    int halt = (int)(intptr_t)a;
    int res;
    return halt ? tether_task_halt(self_task, &res) : tether_task_wait(self_task, &res);
}

START_TEST(contract_tether_task_wait_halt)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    int res = -1;
    CT_RC(&r, "tether_task_wait/NULL", tether_task_wait(NULL, &res), EINVAL);
    CT_RC(&r, "tether_task_halt/NULL", tether_task_halt(NULL, &res), EINVAL);
    ct_row(&r, tether_task_token(NULL) == NULL, "tether_task_token/NULL: expected NULL");
    ct_row(&r, tether_scope_token(NULL) == NULL, "tether_scope_token/NULL: expected NULL");
    ct_row(&r, tether_task_index(NULL) == -1, "tether_task_index/NULL: expected -1");
    for (int halt = 0; halt < 2; halt++) {
        tether_scope *s;
        ck_assert_int_eq(
            tether_scope_open(&s, &(tether_scope_opts){ .policy = TETHER_POLICY_SUPERVISOR }), 0);
        atomic_store(&self_ready, 0);
        ck_assert_int_eq(tether_spawn(s, wait_self, (void *)(intptr_t)halt, NULL, &self_task), 0);
        atomic_store(&self_ready, 1);
        ck_assert_int_eq(tether_task_wait(self_task, &res), 0);
        char name[96];
        snprintf(name, sizeof name, "%s/from the child itself",
                 halt ? "tether_task_halt" : "tether_task_wait");
        CT_RC(&r, name, res, EDEADLK);
        tether_result out;
        tether_scope_join(s, &out);
        tether_scope_free(s);
    }
    /* Halt: counted as canceled, outcome ok (decision 19), siblings untouched. */
    tether_scope *s;
    ck_assert_int_eq(tether_scope_open(&s, NULL), 0);
    tether_task *a, *b;
    ck_assert_int_eq(tether_spawn(s, until_canceled, NULL, NULL, &a), 0);
    ck_assert_int_eq(tether_spawn(s, ret_arg, (void *)0, NULL, &b), 0);
    ct_row(&r, tether_task_index(a) == 0 && tether_task_index(b) == 1,
           "tether_task_index/spawn order: expected 0 and 1, got %d and %d", tether_task_index(a),
           tether_task_index(b));
    ck_assert_int_eq(tether_task_halt(a, &res), 0);
    ct_row(&r, res == ECANCELED, "tether_task_halt/result: expected ECANCELED got %d", res);
    ct_row(&r, tether_token_cause(tether_task_token(a)) == TETHER_CAUSE_HALTED,
           "tether_task_halt/halted child's token: expected cause halted");
    tether_result out;
    ck_assert_int_eq(tether_scope_join(s, &out), 0);
    ct_row(&r,
           out.outcome == TETHER_OUTCOME_OK && out.canceled == 1 && out.succeeded == 1 &&
               out.failed == 0,
           "tether_task_halt/scope outcome: expected ok, canceled 1, got %s canceled %u succeeded "
           "%u failed %u",
           tether_outcome_name(out.outcome), out.canceled, out.succeeded, out.failed);
    ck_assert_int_eq(tether_scope_free(s), 0);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

/* Item 15: the owner waits on a background task before join: EDEADLK. In
 * a child under alarm(): today's hang is reported as one. */
static long long owner_waits_background(void *ctx)
{
    (void)ctx;
    alarm(hang_bound_s());
    tether_scope *s;
    tether_scope_open(&s, NULL);
    tether_task *bg;
    tether_spawn_opts so = { .background = true };
    tether_spawn(s, until_canceled, NULL, &so, &bg);
    tether_spawn(s, ret0, NULL, NULL, NULL);
    int res;
    int rc = tether_task_wait(bg, &res);
    tether_result out;
    tether_scope_join(s, &out);
    tether_scope_free(s);
    return rc;
}

/* The owner halts its background task before join: the halt ends it. */
static long long owner_halts_background(void *ctx)
{
    (void)ctx;
    alarm(hang_bound_s());
    tether_scope *s;
    tether_scope_open(&s, NULL);
    tether_task *bg;
    tether_spawn(s, until_canceled, NULL, &(tether_spawn_opts){ .background = true }, &bg);
    int res;
    int rc = tether_task_halt(bg, &res);
    tether_result out;
    tether_scope_join(s, &out);
    tether_scope_free(s);
    return rc;
}

static _Atomic pid_t waiter_tid;
static void *wait_task_thread(void *arg)
{
    atomic_store(&waiter_tid, th_gettid());
    int res;
    return (void *)(intptr_t)tether_task_wait(arg, &res);
}

/* Another thread waits on the background task: the owner's join ends it. */
static long long other_waits_background(void *ctx)
{
    (void)ctx;
    alarm(hang_bound_s());
    tether_scope *s;
    tether_scope_open(&s, NULL);
    tether_task *bg;
    tether_spawn(s, until_canceled, NULL, &(tether_spawn_opts){ .background = true }, &bg);
    pthread_t th;
    if (pthread_create(&th, NULL, wait_task_thread, bg) != 0)
        return -2;
    while (!atomic_load(&waiter_tid)) {
    }
    th_wait_blocked(atomic_load(&waiter_tid));
    tether_result out;
    tether_scope_join(s, &out);
    void *rc;
    pthread_join(th, &rc);
    tether_scope_free(s);
    return (long long)(intptr_t)rc;
}

START_TEST(contract_task_wait_background_by_owner)
{
    ct_rows r = { .test = __func__ };
    run_bounded(&r, "tether_task_wait/background task by the owner before join",
                owner_waits_background, NULL, EDEADLK);
    run_bounded(&r, "tether_task_halt/background task by the owner before join",
                owner_halts_background, NULL, 0);
    run_bounded(&r, "tether_task_wait/background task by another thread, owner joins",
                other_waits_background, NULL, 0);
    ct_done(&r);
}
END_TEST

static tether_scope *own_scope;
static int join_own(void *a)
{
    int what = (int)(intptr_t)a;
    if (what == 1) {
        /* Leave the token tether entered for this child (item 14). */
        int lr = tether_token_leave(tether_current());
        if (lr)
            return 1000 + lr;
    }
    tether_result out;
    return what == 2 ? tether_scope_free(own_scope) : tether_scope_join(own_scope, &out);
}

static long long child_joins_own(void *ctx)
{
    alarm(hang_bound_s());
    int what = *(int *)ctx;
    tether_scope_open(&own_scope, NULL);
    tether_task *t;
    tether_spawn(own_scope, join_own, (void *)(intptr_t)what, NULL, &t);
    int res = -1;
    tether_task_wait(t, &res);
    tether_result out;
    int jr = tether_scope_join(own_scope, &out);
    tether_scope_free(own_scope);
    if (jr)
        return 2000 + jr;
    return res;
}

/* The owner enters its own scope's token (as a scope_run body) and joins / frees. */
static long long owner_entered(void *ctx)
{
    alarm(hang_bound_s());
    int what = *(int *)ctx;
    tether_scope *s;
    tether_scope_open(&s, NULL);
    tether_spawn(s, ret0, NULL, NULL, NULL);
    tether_token_enter(tether_scope_token(s));
    int rc;
    if (what == 0) {
        tether_result out;
        rc = tether_scope_join(s, &out);
        tether_token_leave(tether_scope_token(s));
        tether_scope_free(s);
    } else {
        rc = tether_scope_free(s); /* unjoined, own token entered: EBUSY (decision 19) */
        tether_token_leave(tether_scope_token(s));
        if (rc)
            tether_scope_free(s);
    }
    return rc;
}

static int body_joins(tether_scope *s, void *arg)
{
    int *rc = arg;
    tether_spawn(s, ret0, NULL, NULL, NULL);
    tether_result out;
    *rc = tether_scope_join(s, &out);
    return 0;
}

static long long run_body_joins(void *ctx)
{
    (void)ctx;
    alarm(hang_bound_s());
    int rc = -1;
    tether_result out;
    tether_scope_run(NULL, body_joins, &rc, &out);
    return rc;
}

/* A child opens a detached scope and returns without freeing it: the scope
 * outlives the child (and the child's own scope); its lineage ends there. */
static tether_scope *outlived;
static int open_detached(void *a)
{
    (void)a;
    return tether_scope_open(&outlived, &(tether_scope_opts){ .detached = true });
}

static int join_outlived(void *a)
{
    (void)a;
    return tether_scope_join(outlived, NULL);
}

static long long scope_outlives_opener(void *ctx)
{
    (void)ctx;
    alarm(hang_bound_s());
    tether_scope *s;
    tether_scope_open(&s, NULL);
    tether_spawn(s, open_detached, NULL, NULL, NULL);
    tether_result out;
    tether_scope_join(s, &out);
    tether_scope_free(s);
    if (out.failed)
        return 1000 + out.error;
    tether_task *t;
    tether_spawn(outlived, join_outlived, NULL, NULL, &t);
    int res = -1;
    tether_task_wait(t, &res);
    if (res != EDEADLK)
        return 2000 + res;
    tether_scope_join(outlived, &out);
    return tether_scope_free(outlived);
}

/* Item 4, scope side: a watchdog's tether_scope_cancel is still running
 * (a slow callback) when the owner's join returns and it frees the scope:
 * free waits for the cancel to leave. Returns 0 if it did. */
static sem_t wd_in_cb, wd_release;
static _Atomic int wd_cb_done;
static void slow_callback(void *arg)
{
    (void)arg;
    sem_post(&wd_in_cb);
    while (sem_wait(&wd_release) != 0) {
    }
    atomic_store(&wd_cb_done, 1);
}

static void *watchdog_cancel(void *arg)
{
    tether_scope_cancel(arg);
    return NULL;
}

static void *release_later(void *arg)
{
    (void)arg;
    tether_sleep_for(tether_ms(50));
    sem_post(&wd_release);
    return NULL;
}

static long long free_while_cancel_runs(void *ctx)
{
    (void)ctx;
    alarm(hang_bound_s());
    sem_init(&wd_in_cb, 0, 0);
    sem_init(&wd_release, 0, 0);
    tether_scope *s;
    tether_scope_open(&s, NULL);
    tether_callback *cb;
    /* Registered on the scope's token after the child's, so it runs last. */
    tether_spawn(s, until_canceled, NULL, NULL, NULL);
    tether_token_on_cancel(tether_scope_token(s), slow_callback, NULL, &cb);
    pthread_t wd, rel;
    pthread_create(&wd, NULL, watchdog_cancel, s);
    while (sem_wait(&wd_in_cb) != 0) {
    }
    tether_result out;
    tether_scope_join(s, &out);
    pthread_create(&rel, NULL, release_later, NULL);
    int rc = tether_scope_free(s);
    int done = atomic_load(&wd_cb_done);
    pthread_join(wd, NULL);
    pthread_join(rel, NULL);
    tether_token_off_cancel(cb, NULL); /* it ran: the handle outlives its token */
    return rc ? rc : done ? 0 : 3000;
}

START_TEST(contract_tether_scope_join)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    tether_result out;
    CT_RC(&r, "tether_scope_join/NULL", tether_scope_join(NULL, &out), EINVAL);
    tether_scope *s;
    ck_assert_int_eq(tether_scope_open(&s, NULL), 0);
    ck_assert_int_eq(tether_scope_join(s, NULL), 0);
    CT_RC(&r, "tether_scope_join/twice", tether_scope_join(s, &out), EINVAL);
    CT_RC(&r, "tether_scope_cancel/joined", tether_scope_cancel(s), EINVAL);
    ck_assert_int_eq(tether_scope_free(s), 0);
    CT_RC(&r, "tether_scope_cancel/NULL", tether_scope_cancel(NULL), EINVAL);
    int what = 0;
    run_bounded(&r, "tether_scope_join/from own child", child_joins_own, &what, EDEADLK);
    what = 1;
    run_bounded(&r, "tether_scope_join/from own child that left its token", child_joins_own, &what,
                EDEADLK);
    what = 2;
    run_bounded(&r, "tether_scope_free/from own child", child_joins_own, &what, EDEADLK);
    what = 0;
    run_bounded(&r, "tether_scope_join/owner entered the scope's token", owner_entered, &what, 0);
    what = 1;
    run_bounded(&r, "tether_scope_free/unjoined, owner entered the scope's token", owner_entered,
                &what, EBUSY);
    run_bounded(&r, "tether_scope_join/from a tether_scope_run body", run_body_joins, NULL, 0);
    run_bounded(&r, "tether_scope_free/scope that outlived the child that opened it",
                scope_outlives_opener, NULL, 0);
    run_bounded(&r, "tether_scope_free/while another thread's tether_scope_cancel runs a callback",
                free_while_cancel_runs, NULL, 0);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_scope_results)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    tether_scope *s;
    tether_result out;
    /* Item 16: canceled from outside with a user error: result.error is it. */
    ck_assert_int_eq(tether_scope_open(&s, NULL), 0);
    ck_assert_int_eq(tether_spawn(s, until_canceled, NULL, NULL, NULL), 0);
    ck_assert_int_eq(tether_token_cancel(tether_scope_token(s), EPIPE), 0);
    ck_assert_int_eq(tether_scope_join(s, &out), 0);
    ct_row(&r, out.outcome == TETHER_OUTCOME_CANCELED && out.error == EPIPE,
           "tether_scope_join/canceled from outside with EPIPE: expected canceled, error EPIPE, "
           "got %s error %s",
           tether_outcome_name(out.outcome), out.error ? strerrorname_np(out.error) : "0");
    ck_assert_int_eq(tether_scope_free(s), 0);
    /* ...and through its parent token. */
    tether_token *p;
    ck_assert_int_eq(tether_token_new(&p, NULL, TETHER_NEVER), 0);
    ck_assert_int_eq(tether_scope_open(&s, &(tether_scope_opts){ .parent = p }), 0);
    ck_assert_int_eq(tether_spawn(s, until_canceled, NULL, NULL, NULL), 0);
    ck_assert_int_eq(tether_token_cancel(p, EPIPE), 0);
    ck_assert_int_eq(tether_scope_join(s, &out), 0);
    ct_row(&r,
           out.outcome == TETHER_OUTCOME_CANCELED && out.error == EPIPE &&
               out.cause == TETHER_CAUSE_PARENT,
           "tether_scope_join/parent canceled with EPIPE: expected canceled, error EPIPE, cause "
           "parent, got %s error %s cause %s",
           tether_outcome_name(out.outcome), out.error ? strerrorname_np(out.error) : "0",
           tether_cause_name(out.cause));
    ck_assert_int_eq(tether_scope_free(s), 0);
    /* Item 19: capped by the parent's deadline: deadline_exceeded, cause parent. */
    ck_assert_int_eq(tether_token_free(p), 0);
    ck_assert_int_eq(tether_token_new(&p, NULL, tether_deadline_after(tether_ms(20))), 0);
    ck_assert_int_eq(tether_scope_open(&s, &(tether_scope_opts){ .parent = p }), 0);
    ck_assert_int_eq(tether_spawn(s, until_canceled, NULL, NULL, NULL), 0);
    ck_assert_int_eq(tether_scope_join(s, &out), 0);
    ct_row(&r, out.outcome == TETHER_OUTCOME_DEADLINE_EXCEEDED && out.cause == TETHER_CAUSE_PARENT,
           "tether_scope_join/parent deadline: expected deadline_exceeded cause parent, got %s "
           "cause %s",
           tether_outcome_name(out.outcome), tether_cause_name(out.cause));
    ck_assert_int_eq(tether_scope_free(s), 0);
    ck_assert_int_eq(tether_token_free(p), 0);
    /* Item 19: error_task is the 0-based spawn order. */
    ck_assert_int_eq(
        tether_scope_open(&s, &(tether_scope_opts){ .policy = TETHER_POLICY_SUPERVISOR }), 0);
    ck_assert_int_eq(tether_spawn(s, ret0, NULL, NULL, NULL), 0);
    ck_assert_int_eq(tether_spawn(s, ret0, NULL, NULL, NULL), 0);
    tether_task *third;
    ck_assert_int_eq(tether_spawn(s, ret_arg, (void *)(intptr_t)EIO,
                                  &(tether_spawn_opts){ .name = "third" }, &third),
                     0);
    int third_index = tether_task_index(third);
    ck_assert_int_eq(tether_scope_join(s, &out), 0);
    ct_row(&r, third_index == 2 && out.error_task == third_index,
           "tether_task_index/after handle-less spawns, as error_task: expected 2 = error_task, "
           "got %d (error_task %d)",
           third_index, out.error_task);
    ct_row(&r, out.error == EIO && out.error_task == 2 && strcmp(out.error_task_name, "third") == 0,
           "tether_scope_join/error_task spawn order: expected EIO task 2 'third', got %d task %d "
           "'%s'",
           out.error, out.error_task, out.error_task_name);
    ck_assert_int_eq(tether_scope_free(s), 0);
    /* Item 19: a child whose own spawn timeout fires counts as failed. */
    ck_assert_int_eq(
        tether_scope_open(&s, &(tether_scope_opts){ .policy = TETHER_POLICY_SUPERVISOR }), 0);
    ck_assert_int_eq(tether_spawn(s, until_canceled, NULL,
                                  &(tether_spawn_opts){ .timeout_ns = tether_ms(10) }, NULL),
                     0);
    ck_assert_int_eq(tether_scope_join(s, &out), 0);
    ct_row(&r, out.failed == 1 && out.error == ETIMEDOUT,
           "tether_scope_join/child's own spawn timeout fires: expected failed 1, error ETIMEDOUT, "
           "got failed %u error %d",
           out.failed, out.error);
    ck_assert_int_eq(tether_scope_free(s), 0);
    /* Item 19: tether_scope_token stays valid until free (used after join). */
    ck_assert_int_eq(tether_scope_open(&s, NULL), 0);
    ck_assert_int_eq(tether_scope_join(s, &out), 0);
    tether_token *st = tether_scope_token(s);
    ct_row(&r, st != NULL, "tether_scope_token/after join: expected the token, got NULL");
    tether_token *c;
    if (st && tether_token_new(&c, st, TETHER_NEVER) == 0) {
        CT_RC(&r, "tether_scope_free/token child alive", tether_scope_free(s), EBUSY);
        tether_token_free(c);
    }
    CT_RC(&r, "tether_scope_free/after the child token is freed", tether_scope_free(s), 0);
    CT_RC(&r, "tether_scope_free/NULL", tether_scope_free(NULL), EINVAL);
    /* scope_run: body error -> failed with error_task -1; bad opts -> EINVAL, body not called. */
    CT_RC(&r, "tether_scope_run/policy out of range",
          tether_scope_run(&(tether_scope_opts){ .policy = (tether_policy)9 }, NULL, NULL, &out),
          EINVAL);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

static int body_fails(tether_scope *s, void *arg)
{
    (void)s;
    (void)arg;
    return EIO;
}

START_TEST(contract_tether_scope_run_guard)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    tether_result out;
    int rc = tether_scope_run(NULL, body_fails, NULL, &out);
    ct_row(&r,
           rc == 0 && out.outcome == TETHER_OUTCOME_FAILED && out.error == EIO &&
               out.error_task == -1,
           "tether_scope_run/body returns EIO: expected 0, failed, error EIO, error_task -1, got "
           "rc %d %s error %d task %d",
           rc, tether_outcome_name(out.outcome), out.error, out.error_task);
    rc = tether_scope_run(NULL, body_fails, NULL, NULL);
    CT_RC(&r, "tether_scope_run/result NULL", rc, 0);
    {
        TETHER_SCOPE_GUARD(g, &(tether_scope_opts){ .policy = (tether_policy)9 });
        ct_row(&r, g == NULL, "TETHER_SCOPE_GUARD/open fails: expected var NULL");
        CT_RC(&r, "TETHER_SCOPE_GUARD/spawn on failed guard",
              tether_spawn(g, ret0, NULL, NULL, NULL), EINVAL);
    }
    {
        TETHER_SCOPE_GUARD(g, NULL);
        ct_row(&r, g != NULL,
               "TETHER_SCOPE_GUARD/open: expected var set, joined and freed at block end");
        tether_spawn(g, until_canceled, NULL, NULL, NULL);
        tether_scope_cancel(g);
    }
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

/* Sleep until canceled, then return 0 anyway (a late success). */
static int commit_anyway(void *a)
{
    (void)a;
    tether_sleep_for(tether_sec(60));
    return 0;
}

START_TEST(contract_tether_task_late)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    ct_row(&r, !tether_task_late(NULL), "tether_task_late/NULL: expected false");
    tether_scope *s;
    ck_assert_int_eq(tether_scope_open(&s, NULL), 0);
    tether_task *on_time, *late, *stopped, *own;
    ck_assert_int_eq(tether_spawn(s, ret0, NULL, NULL, &on_time), 0);
    ck_assert_int_eq(tether_spawn(s, commit_anyway, NULL, NULL, &late), 0);
    ck_assert_int_eq(tether_spawn(s, until_canceled, NULL, NULL, &stopped), 0);
    ck_assert_int_eq(tether_spawn(s, commit_anyway, NULL,
                                  &(tether_spawn_opts){ .timeout_ns = tether_ms(20) }, &own),
                     0);
    ck_assert_int_eq(tether_task_wait(on_time, NULL), 0);
    ck_assert_int_eq(tether_task_wait(own, NULL), 0);
    ct_row(&r, !tether_task_late(late), "tether_task_late/still running: expected false");
    ct_row(&r, !tether_task_late(on_time),
           "tether_task_late/returned 0 before any cancel: expected false");
    ct_row(&r, !tether_task_late(own),
           "tether_task_late/returned 0 after its own spawn timeout: expected false");
    ck_assert_int_eq(tether_scope_cancel(s), 0);
    ck_assert_int_eq(tether_task_wait(late, NULL), 0);
    ck_assert_int_eq(tether_task_wait(stopped, NULL), 0);
    ct_row(&r, tether_task_late(late),
           "tether_task_late/returned 0 after the scope's cancel: expected true");
    ct_row(&r, !tether_task_late(stopped),
           "tether_task_late/returned ECANCELED after the cancel: expected false");
    tether_result out;
    ck_assert_int_eq(tether_scope_join(s, &out), 0);
    ct_row(&r,
           out.outcome == TETHER_OUTCOME_CANCELED && out.succeeded == 3 &&
               out.late_succeeded == 1 && out.canceled == 1,
           "tether_scope_join/one late success: expected canceled, succeeded 3, late_succeeded 1, "
           "canceled 1, got %s %u %u %u",
           tether_outcome_name(out.outcome), out.succeeded, out.late_succeeded, out.canceled);
    ck_assert_int_eq(tether_scope_free(s), 0);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

/* reuse_threads: the same contract as a thread per child. */
static atomic_int reuse_last_tid, reuse_done;

static int reuse_child(void *a)
{
    (void)a;
    atomic_store(&reuse_last_tid, th_gettid());
    tether_sleep_for(tether_ms(5));
    atomic_store(&reuse_done, 1);
    return tether_current() != NULL && tether_check() == 0 ? 0 : EPROTO;
}

START_TEST(contract_reuse_threads)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    tether_scope_opts o = { .reuse_threads = true };
    tether_scope *s = NULL;
    CT_RC(&r, "tether_scope_open/reuse_threads", tether_scope_open(&s, &o), 0);
    if (s) {
        tether_spawn_opts small = { .stack_size = 1 };
        CT_RC(&r, "tether_spawn/reuse_threads, stack_size too small",
              tether_spawn(s, ret0, NULL, &small, NULL), EINVAL);
        CT_RC(&r, "tether_spawn/reuse_threads", tether_spawn(s, reuse_child, NULL, NULL, NULL), 0);
        tether_result res;
        CT_RC(&r, "tether_scope_join/reuse_threads", tether_scope_join(s, &res), 0);
        ct_row(&r, atomic_load(&reuse_done) == 1 && res.succeeded == 1,
               "tether_scope_join/reuse_threads, after: expected the child's function returned got "
               "done %d, succeeded %u",
               atomic_load(&reuse_done), res.succeeded);
        CT_RC(&r, "tether_scope_free/reuse_threads", tether_scope_free(s), 0);
    }
    /* The next child runs on the parked thread, clean. */
    int first = atomic_load(&reuse_last_tid);
    s = NULL;
    if (tether_scope_open(&s, &o) == 0) {
        tether_task *t = NULL;
        CT_RC(&r, "tether_spawn/reuse_threads, a thread is parked",
              tether_spawn(s, reuse_child, NULL, NULL, &t), 0);
        int res = -1;
        if (t)
            tether_task_wait(t, &res);
        ct_row(&r, res == 0 && atomic_load(&reuse_last_tid) == first,
               "tether_spawn/reuse_threads, a thread is parked, child: expected on that thread, "
               "with its own current token got result %d, tid %d vs %d",
               res, atomic_load(&reuse_last_tid), first);
        tether_scope_cancel(s);
        CT_RC(&r, "tether_spawn/reuse_threads, scope canceled",
              tether_spawn(s, ret0, NULL, NULL, NULL), ECANCELED);
        tether_scope_join(s, NULL);
        tether_scope_free(s);
    }
    ct_row(&r, th_thread_count() == base.threads + 1,
           "tether_trim/reuse_threads, one thread parked: expected that thread alive got %d",
           th_thread_count() - base.threads);
    tether_trim();
    ct_row(&r, th_wait_thread_count(base.threads) == base.threads,
           "tether_trim/reuse_threads: expected the parked thread gone");
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

static Suite *contract_scope_suite(void)
{
    Suite *s = suite_create("contract_scope");
    TCase *tc = tcase_create("contract_scope");
    tcase_set_timeout(tc, th_timeout_s(30));
    tcase_add_test(tc, contract_tether_scope_open);
    tcase_add_test(tc, contract_names);
    tcase_add_test(tc, contract_tether_spawn);
    tcase_add_test(tc, contract_tether_task_wait_halt);
    tcase_add_test(tc, contract_tether_task_late);
    tcase_add_test(tc, contract_task_wait_background_by_owner);
    tcase_add_test(tc, contract_tether_scope_join);
    tcase_add_test(tc, contract_scope_results);
    tcase_add_test(tc, contract_tether_scope_run_guard);
    tcase_add_test(tc, contract_reuse_threads);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(contract_scope_suite());
}
