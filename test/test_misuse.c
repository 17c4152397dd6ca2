/*
 * The misuse catalogue (docs/misuse.md), one test per row: every misuse that
 * tether detects returns the error the header documents, changes nothing it
 * promises not to change, and leaves no thread or fd behind. Misuses that
 * tether cannot report by returning (a child returning with a token still
 * entered, ...) must fail loudly: those tests expect SIGABRT.
 *
 * Threads hand off through semaphores; a thread is cancelled or raced only
 * after th_wait_blocked says it is asleep in the kernel.
 */
#define _GNU_SOURCE
#include "support.h"

#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ small tools */

/* Sleeps until its token is cancelled; reports the sleep's errno. */
static int sleep_until_cancelled(void *arg)
{
    (void)arg;
    return tether_sleep_until(TETHER_NEVER) == 0 ? 0 : errno;
}

static void noop_cb(void *arg)
{
    (void)arg;
}

/* ------------------------------------------------------ tokens: bad input */

START_TEST(token_null_arguments)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_callback *cb = NULL;

    ck_assert_int_eq(tether_token_new(NULL, NULL, TETHER_NEVER), EINVAL);
    ck_assert_int_eq(tether_token_new(NULL, t, TETHER_NEVER), EINVAL);
    ck_assert_int_eq(tether_token_free(NULL), EINVAL);
    ck_assert_int_eq(tether_token_cancel(NULL, 0), EINVAL);
    ck_assert_int_eq(tether_token_check(NULL), EINVAL);
    ck_assert_int_eq(tether_token_on_cancel(NULL, noop_cb, NULL, &cb), EINVAL);
    ck_assert_int_eq(tether_token_on_cancel(t, NULL, NULL, &cb), EINVAL);
    ck_assert_int_eq(tether_token_on_cancel(t, noop_cb, NULL, NULL), EINVAL);
    ck_assert_ptr_null(cb);
    ck_assert_int_eq(tether_token_off_cancel(NULL, NULL), EINVAL);
    ck_assert_int_eq(tether_token_enter(NULL), EINVAL);
    ck_assert_int_eq(tether_token_leave(NULL), EINVAL);
    ck_assert_ptr_null(tether_current());

    /* Queries on NULL are defined, not errors. */
    ck_assert_int_eq(tether_token_cause(NULL), TETHER_CAUSE_NONE);
    ck_assert_int_eq(tether_token_root_cause(NULL), TETHER_CAUSE_NONE);
    ck_assert_int_eq(tether_token_error(NULL), 0);
    ck_assert(tether_token_deadline(NULL) == TETHER_NEVER);

    /* None of it touched t. */
    ck_assert_int_eq(tether_token_check(t), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

/* --------------------------------------------------- tokens: free misuse */

START_TEST(token_free_with_live_children)
{
    th_baseline b = th_baseline_take();
    tether_token *p = new_token(NULL, TETHER_NEVER);
    tether_token *c = new_token(p, TETHER_NEVER);
    tether_token *g = new_token(c, TETHER_NEVER);

    ck_assert_int_eq(tether_token_free(p), EBUSY);
    ck_assert_int_eq(tether_token_free(c), EBUSY);
    /* Nothing changed: the tree still propagates. */
    ck_assert_int_eq(tether_token_cancel(p, 0), 0);
    ck_assert_int_eq(tether_token_check(g), ECANCELED);
    ck_assert_int_eq(tether_token_cause(g), TETHER_CAUSE_PARENT);

    ck_assert_int_eq(tether_token_free(g), 0);
    ck_assert_int_eq(tether_token_free(p), EBUSY);
    ck_assert_int_eq(tether_token_free(c), 0);
    ck_assert_int_eq(tether_token_free(p), 0);
    th_baseline_check(b);
}
END_TEST

START_TEST(token_free_while_entered_here)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_enter(t), 0);
    ck_assert_int_eq(tether_token_free(t), EBUSY);
    ck_assert_ptr_eq(tether_current(), t); /* nothing changed */
    ck_assert_int_eq(tether_token_enter(t), 0); /* entered twice */
    ck_assert_int_eq(tether_token_leave(t), 0);
    ck_assert_int_eq(tether_token_free(t), EBUSY); /* still entered once */
    ck_assert_int_eq(tether_token_leave(t), 0);
    ck_assert_ptr_null(tether_current());
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

struct enterer {
    tether_token *t;
    sem_t entered, release, left;
    int leave_rc;
};

static void *enterer_main(void *arg)
{
    struct enterer *e = arg;
    int rc = tether_token_enter(e->t);
    sem_post(&e->entered);
    sem_wait_ok(&e->release);
    e->leave_rc = rc == 0 ? tether_token_leave(e->t) : rc;
    sem_post(&e->left);
    return NULL;
}

START_TEST(token_free_while_entered_elsewhere)
{
    th_baseline b = th_baseline_take();
    struct enterer e = { .t = new_token(NULL, TETHER_NEVER) };
    sem_init(&e.entered, 0, 0);
    sem_init(&e.release, 0, 0);
    sem_init(&e.left, 0, 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, enterer_main, &e), 0);
    sem_wait_ok(&e.entered);

    ck_assert_int_eq(tether_token_free(e.t), EBUSY);
    /* Leaving it from a thread that never entered it is refused too. */
    ck_assert_int_eq(tether_token_leave(e.t), EPERM);

    sem_post(&e.release);
    sem_wait_ok(&e.left);
    ck_assert_int_eq(e.leave_rc, 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(tether_token_free(e.t), 0);
    sem_destroy(&e.entered);
    sem_destroy(&e.release);
    sem_destroy(&e.left);
    th_baseline_check(b);
}
END_TEST

START_TEST(token_free_with_callbacks_registered)
{
    /* Allowed, not an error: the callbacks are detached unrun, and
     * tether_token_off_cancel still frees their handles. */
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_callback *cb[2];
    ck_assert_int_eq(tether_token_on_cancel(t, noop_cb, NULL, &cb[0]), 0);
    ck_assert_int_eq(tether_token_on_cancel(t, noop_cb, NULL, &cb[1]), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    bool ran = true;
    ck_assert_int_eq(tether_token_off_cancel(cb[1], &ran), 0);
    ck_assert(!ran);
    ran = true;
    ck_assert_int_eq(tether_token_off_cancel(cb[0], &ran), 0);
    ck_assert(!ran);
    th_baseline_check(b);
}
END_TEST

/* -------------------------------------------------- tokens: leave misuse */

START_TEST(token_leave_not_entered)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_leave(t), EPERM);
    ck_assert_ptr_null(tether_current());
    /* Once entered and left, a second leave is refused as well. */
    ck_assert_int_eq(tether_token_enter(t), 0);
    ck_assert_int_eq(tether_token_leave(t), 0);
    ck_assert_int_eq(tether_token_leave(t), EPERM);
    ck_assert_ptr_null(tether_current());
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

START_TEST(token_leave_not_innermost)
{
    th_baseline b = th_baseline_take();
    tether_token *a = new_token(NULL, TETHER_NEVER);
    tether_token *c = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_enter(a), 0);
    ck_assert_int_eq(tether_token_enter(c), 0);

    ck_assert_int_eq(tether_token_leave(a), EPERM);
    /* Nothing changed: c is still current, then a. */
    ck_assert_ptr_eq(tether_current(), c);
    ck_assert_int_eq(tether_token_free(a), EBUSY);
    ck_assert_int_eq(tether_token_leave(c), 0);
    ck_assert_ptr_eq(tether_current(), a);
    ck_assert_int_eq(tether_token_leave(a), 0);
    ck_assert_ptr_null(tether_current());

    ck_assert_int_eq(tether_token_free(c), 0);
    ck_assert_int_eq(tether_token_free(a), 0);
    th_baseline_check(b);
}
END_TEST

/* ---------------------------------------------------- timeout blocks etc. */

START_TEST(with_deadline_null_fn)
{
    th_baseline b = th_baseline_take();
    bool fired = true;
    ck_assert_int_eq(tether_with_deadline(TETHER_NEVER, NULL, NULL, &fired), EINVAL);
    ck_assert(!fired);
    fired = true;
    ck_assert_int_eq(tether_with_timeout(tether_ms(1), NULL, NULL, &fired), EINVAL);
    ck_assert(!fired);
    ck_assert_ptr_null(tether_current());
    th_baseline_check(b);
}
END_TEST

START_TEST(sigcancel_null_arguments)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_sigcancel *sc = (tether_sigcancel *)&sc; /* must be overwritten */
    ck_assert_int_eq(tether_sigcancel_new(NULL, t, 0), EINVAL);
    ck_assert_int_eq(tether_sigcancel_new(&sc, NULL, 0), EINVAL);
    ck_assert_int_eq(tether_sigcancel_free(NULL), EINVAL);
    ck_assert_int_eq(tether_token_check(t), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b); /* no relay thread, no eventfd */
}
END_TEST

/* Primitives keep the raw call's errors for bad descriptors or buffers. */
START_TEST(io_bad_descriptor)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_enter(t), 0);
    char c = 0;
    errno = 0;
    ck_assert_int_eq(tether_read(-1, &c, 1), -1);
    ck_assert_int_eq(errno, EBADF);
    errno = 0;
    ck_assert_int_eq(tether_write(-1, &c, 1), -1);
    ck_assert_int_eq(errno, EBADF);
    errno = 0;
    ck_assert_int_eq(tether_poll(NULL, 1, 10), -1);
    ck_assert_int_eq(errno, EFAULT);
    ck_assert_int_eq(tether_token_leave(t), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

/* ------------------------------------------------------- scopes: options */

START_TEST(scope_open_bad_options)
{
    th_baseline b = th_baseline_take();
    tether_scope *s = (tether_scope *)&s;
    ck_assert_int_eq(tether_scope_open(NULL, NULL), EINVAL);

    tether_scope_opts o = { .policy = (tether_policy)(TETHER_POLICY_FIRST_SUCCESS + 1) };
    ck_assert_int_eq(tether_scope_open(&s, &o), EINVAL);
    ck_assert_ptr_null(s);
    o = (tether_scope_opts){ .policy = (tether_policy)-1 };
    ck_assert_int_eq(tether_scope_open(&s, &o), EINVAL);
    o = (tether_scope_opts){ .timeout_ns = -1 };
    ck_assert_int_eq(tether_scope_open(&s, &o), EINVAL);
    ck_assert_ptr_null(s);
    th_baseline_check(b);
}
END_TEST

START_TEST(scope_run_bad_arguments)
{
    th_baseline b = th_baseline_take();
    tether_result r;
    ck_assert_int_eq(tether_scope_run(NULL, NULL, NULL, &r), EINVAL);
    tether_scope_opts o = { .timeout_ns = -5 };
    ck_assert_int_eq(tether_scope_run(&o, NULL, NULL, &r), EINVAL);
    th_baseline_check(b);
}
END_TEST

static int body_counts(tether_scope *s, void *arg)
{
    (void)s;
    ++*(int *)arg;
    return 0;
}

START_TEST(scope_run_bad_options)
{
    th_baseline b = th_baseline_take();
    int called = 0;
    tether_result r;
    tether_scope_opts o = { .timeout_ns = -5 };
    ck_assert_int_eq(tether_scope_run(&o, body_counts, &called, &r), EINVAL);
    o = (tether_scope_opts){ .policy = (tether_policy)42 };
    ck_assert_int_eq(tether_scope_run(&o, body_counts, &called, &r), EINVAL);
    ck_assert_int_eq(called, 0); /* body not called */
    ck_assert_int_eq(tether_scope_run(NULL, body_counts, &called, &r), 0);
    ck_assert_int_eq(called, 1);
    th_baseline_check(b);
}
END_TEST

START_TEST(scope_guard_bad_options)
{
    th_baseline b = th_baseline_take();
    tether_scope_opts o = { .timeout_ns = -1 };
    {
        TETHER_SCOPE_GUARD(g, &o);
        ck_assert_ptr_null(g);
        ck_assert_int_eq(tether_spawn(g, return_zero, NULL, NULL, NULL), EINVAL);
    }
    th_baseline_check(b);
}
END_TEST

START_TEST(spawn_bad_arguments)
{
    th_baseline b = th_baseline_take();
    tether_scope *s = open_scope(NULL);
    tether_task *task = (tether_task *)&task;

    ck_assert_int_eq(tether_spawn(NULL, return_zero, NULL, NULL, &task), EINVAL);
    ck_assert_ptr_null(task);
    ck_assert_int_eq(tether_spawn(s, NULL, NULL, NULL, NULL), EINVAL);
    tether_spawn_opts o = { .stack_size = 1024 };
    ck_assert_int_eq(tether_spawn(s, return_zero, NULL, &o, NULL), EINVAL);
    o = (tether_spawn_opts){ .stack_size = (size_t)PTHREAD_STACK_MIN - 1 };
    ck_assert_int_eq(tether_spawn(s, return_zero, NULL, &o, NULL), EINVAL);
    o = (tether_spawn_opts){ .timeout_ns = -1 };
    ck_assert_int_eq(tether_spawn(s, return_zero, NULL, &o, NULL), EINVAL);
    ck_assert_int_eq(tether_try_spawn(NULL, return_zero, NULL, NULL, NULL), EINVAL);
    ck_assert_int_eq(tether_try_spawn(s, NULL, NULL, NULL, NULL), EINVAL);
    ck_assert_int_eq(tether_try_spawn(s, return_zero, NULL, &o, NULL), EINVAL);

    /* Nothing was started and the scope is intact. */
    tether_result r;
    ck_assert_int_eq(tether_scope_join(s, &r), 0);
    ck_assert_uint_eq(r.spawned, 0);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_int_eq(tether_scope_free(s), 0);
    th_baseline_check(b);
}
END_TEST

/* ----------------------------------------------- scopes: lifecycle misuse */

START_TEST(spawn_after_join)
{
    th_baseline b = th_baseline_take();
    tether_scope *s = open_scope(NULL);
    ck_assert_int_eq(tether_spawn(s, return_zero, NULL, NULL, NULL), 0);
    ck_assert_int_eq(tether_scope_join(s, NULL), 0);
    tether_task *task = (tether_task *)&task;
    ck_assert_int_eq(tether_spawn(s, return_zero, NULL, NULL, &task), EINVAL);
    ck_assert_ptr_null(task);
    ck_assert_int_eq(tether_try_spawn(s, return_zero, NULL, NULL, NULL), EINVAL);
    ck_assert_int_eq(tether_scope_free(s), 0);
    th_baseline_check(b);
}
END_TEST

START_TEST(spawn_into_cancelled_scope)
{
    th_baseline b = th_baseline_take();
    tether_scope *s = open_scope(NULL);
    ck_assert_int_eq(tether_scope_cancel(s), 0);
    ck_assert_int_eq(tether_spawn(s, return_zero, NULL, NULL, NULL), ECANCELED);
    ck_assert_int_eq(tether_try_spawn(s, return_zero, NULL, NULL, NULL), ECANCELED);
    tether_result r;
    ck_assert_int_eq(tether_scope_join(s, &r), 0);
    ck_assert_uint_eq(r.spawned, 0);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
    ck_assert_int_eq(tether_scope_free(s), 0);

    /* Cancelled through its parent token: the same. */
    tether_token *p = new_token(NULL, TETHER_NEVER);
    tether_scope_opts o = { .parent = p };
    s = open_scope(&o);
    ck_assert_int_eq(tether_token_cancel(p, EPIPE), 0);
    ck_assert_int_eq(tether_spawn(s, return_zero, NULL, NULL, NULL), ECANCELED);
    ck_assert_int_eq(tether_scope_free(s), 0);
    ck_assert_int_eq(tether_token_free(p), 0);
    th_baseline_check(b);
}
END_TEST

START_TEST(spawn_into_expired_scope)
{
    th_baseline b = th_baseline_take();
    tether_scope_opts o = { .deadline = tether_now() - 1 };
    ck_assert(o.deadline > 0);
    tether_scope *s = open_scope(&o);
    ck_assert_int_eq(tether_spawn(s, return_zero, NULL, NULL, NULL), ETIMEDOUT);
    tether_result r;
    ck_assert_int_eq(tether_scope_join(s, &r), 0);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_DEADLINE_EXCEEDED);
    ck_assert_uint_eq(r.spawned, 0);
    ck_assert_int_eq(tether_scope_free(s), 0);
    th_baseline_check(b);
}
END_TEST

/* A background child that, once halted by join (the foreground is done),
 * tries to spawn into its own scope. */
struct late {
    tether_scope *s;
    int spawn_rc;
};

static int late_spawner(void *arg)
{
    struct late *l = arg;
    int rc = tether_sleep_until(TETHER_NEVER) == 0 ? 0 : errno;
    l->spawn_rc = tether_spawn(l->s, return_zero, NULL, NULL, NULL);
    return rc;
}

START_TEST(spawn_while_scope_finishing)
{
    th_baseline b = th_baseline_take();
    struct late l = { .s = open_scope(NULL), .spawn_rc = -1 };
    tether_spawn_opts o = { .background = true };
    ck_assert_int_eq(tether_spawn(l.s, late_spawner, &l, &o, NULL), 0);
    tether_result r;
    ck_assert_int_eq(tether_scope_join(l.s, &r), 0);
    ck_assert_int_eq(l.spawn_rc, ECANCELED);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_SCOPE_FINISHED);
    ck_assert_uint_eq(r.spawned, 1);
    ck_assert_int_eq(tether_scope_free(l.s), 0);
    th_baseline_check(b);
}
END_TEST

START_TEST(try_spawn_into_full_scope)
{
    th_baseline b = th_baseline_take();
    tether_scope_opts so = { .max_children = 1 };
    tether_scope *s = open_scope(&so);
    tether_task *t;
    ck_assert_int_eq(tether_spawn(s, sleep_until_cancelled, NULL, NULL, &t), 0);
    tether_task *t2 = (tether_task *)&t2;
    ck_assert_int_eq(tether_try_spawn(s, return_zero, NULL, NULL, &t2), EAGAIN);
    ck_assert_ptr_null(t2);
    int res = 0;
    ck_assert_int_eq(tether_task_halt(t, &res), 0);
    ck_assert_int_eq(res, ECANCELED);
    tether_result r;
    ck_assert_int_eq(tether_scope_join(s, &r), 0);
    ck_assert_uint_eq(r.spawned, 1);
    ck_assert_int_eq(tether_scope_free(s), 0);
    th_baseline_check(b);
}
END_TEST

START_TEST(join_twice)
{
    th_baseline b = th_baseline_take();
    tether_scope *s = open_scope(NULL);
    ck_assert_int_eq(tether_spawn(s, return_zero, NULL, NULL, NULL), 0);
    tether_result r;
    ck_assert_int_eq(tether_scope_join(s, &r), 0);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    tether_result r2;
    memset(&r2, 0x5a, sizeof r2);
    ck_assert_int_eq(tether_scope_join(s, &r2), EINVAL);
    ck_assert_int_eq(tether_scope_join(NULL, NULL), EINVAL);
    ck_assert_int_eq(tether_scope_free(s), 0);
    th_baseline_check(b);
}
END_TEST

struct joiner {
    tether_scope *s;
    pid_t tid;
    sem_t ready;
    int rc;
};

static void *joiner_main(void *arg)
{
    struct joiner *j = arg;
    j->tid = th_gettid();
    sem_post(&j->ready);
    j->rc = tether_scope_join(j->s, NULL);
    return NULL;
}

START_TEST(join_while_being_joined)
{
    th_baseline b = th_baseline_take();
    tether_scope *s = open_scope(NULL);
    tether_task *t;
    ck_assert_int_eq(tether_spawn(s, sleep_until_cancelled, NULL, NULL, &t), 0);
    struct joiner j = { .s = s, .rc = -1 };
    sem_init(&j.ready, 0, 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, joiner_main, &j), 0);
    sem_wait_ok(&j.ready);
    ck_assert_int_eq(th_wait_blocked(j.tid), 0); /* inside join, waiting */

    ck_assert_int_eq(tether_scope_join(s, NULL), EINVAL);

    ck_assert_int_eq(tether_scope_cancel(s), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(j.rc, 0);
    ck_assert_int_eq(tether_scope_free(s), 0);
    sem_destroy(&j.ready);
    th_baseline_check(b);
}
END_TEST

/* A child (or grandchild) that calls join/free/task_wait on its own scope. */
struct inside {
    tether_scope *s;
    tether_task *self;       /* its own handle (set before it is released) */
    sem_t go;
    int join_rc, free_rc, wait_rc, halt_rc, spawn_after_rc;
};

static int inside_main(void *arg)
{
    struct inside *in = arg;
    sem_wait_ok(&in->go);
    in->join_rc = tether_scope_join(in->s, NULL);
    in->free_rc = tether_scope_free(in->s);
    if (in->self) {
        int res = -1;
        in->wait_rc = tether_task_wait(in->self, &res);
        in->halt_rc = tether_task_halt(in->self, &res);
    }
    /* The scope is untouched: it still accepts a sibling. */
    in->spawn_after_rc = tether_spawn(in->s, return_zero, NULL, NULL, NULL);
    return 0;
}

START_TEST(join_and_free_from_child)
{
    th_baseline b = th_baseline_take();
    struct inside in = { .s = open_scope(NULL) };
    sem_init(&in.go, 0, 0);
    ck_assert_int_eq(tether_spawn(in.s, inside_main, &in, NULL, &in.self), 0);
    sem_post(&in.go);
    tether_result r;
    ck_assert_int_eq(tether_scope_join(in.s, &r), 0);
    ck_assert_int_eq(in.join_rc, EDEADLK);
    ck_assert_int_eq(in.free_rc, EDEADLK);
    ck_assert_int_eq(in.wait_rc, EDEADLK);
    ck_assert_int_eq(in.halt_rc, EDEADLK);
    ck_assert_int_eq(in.spawn_after_rc, 0);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_uint_eq(r.spawned, 2);
    ck_assert_int_eq(tether_scope_free(in.s), 0);
    sem_destroy(&in.go);
    th_baseline_check(b);
}
END_TEST

/* Join/free of the outer scope from a grandchild (a child of a nested scope,
 * and a background child) is just as deadlocked. */
struct deep {
    tether_scope *outer;
    int join_rc[2], free_rc[2];
};

static int deep_grandchild(void *arg)
{
    struct deep *d = arg;
    d->join_rc[0] = tether_scope_join(d->outer, NULL);
    d->free_rc[0] = tether_scope_free(d->outer);
    return 0;
}

static int deep_background(void *arg)
{
    struct deep *d = arg;
    d->join_rc[1] = tether_scope_join(d->outer, NULL);
    d->free_rc[1] = tether_scope_free(d->outer);
    return 0;
}

static int deep_child(void *arg)
{
    struct deep *d = arg;
    tether_scope *inner;
    int rc = tether_scope_open(&inner, NULL);
    if (rc)
        return rc;
    rc = tether_spawn(inner, deep_grandchild, d, NULL, NULL);
    if (!rc)
        rc = tether_spawn(inner, return_zero, NULL, NULL, NULL);
    tether_scope_join(inner, NULL);
    tether_scope_free(inner);
    return rc;
}

START_TEST(join_and_free_from_descendant)
{
    th_baseline b = th_baseline_take();
    struct deep d = { .outer = open_scope(NULL), .join_rc = { -1, -1 }, .free_rc = { -1, -1 } };
    ck_assert_int_eq(tether_spawn(d.outer, deep_child, &d, NULL, NULL), 0);
    tether_spawn_opts bo = { .background = true };
    ck_assert_int_eq(tether_spawn(d.outer, deep_background, &d, &bo, NULL), 0);
    tether_result r;
    ck_assert_int_eq(tether_scope_join(d.outer, &r), 0);
    ck_assert_int_eq(d.join_rc[0], EDEADLK);
    ck_assert_int_eq(d.free_rc[0], EDEADLK);
    ck_assert_int_eq(d.join_rc[1], EDEADLK);
    ck_assert_int_eq(d.free_rc[1], EDEADLK);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_int_eq(tether_scope_free(d.outer), 0);
    th_baseline_check(b);
}
END_TEST

START_TEST(task_null_and_scope_null)
{
    th_baseline b = th_baseline_take();
    int res = 77;
    ck_assert_int_eq(tether_task_wait(NULL, &res), EINVAL);
    ck_assert_int_eq(tether_task_halt(NULL, &res), EINVAL);
    ck_assert_int_eq(res, 77);
    ck_assert_ptr_null(tether_task_token(NULL));
    ck_assert_ptr_null(tether_scope_token(NULL));
    ck_assert_int_eq(tether_scope_cancel(NULL), EINVAL);
    ck_assert_int_eq(tether_scope_free(NULL), EINVAL);
    th_baseline_check(b);
}
END_TEST

START_TEST(cancel_after_join)
{
    th_baseline b = th_baseline_take();
    tether_scope *s = open_scope(NULL);
    ck_assert_int_eq(tether_scope_join(s, NULL), 0);
    ck_assert_int_eq(tether_scope_cancel(s), EINVAL);
    ck_assert_int_eq(tether_scope_free(s), 0);
    th_baseline_check(b);
}
END_TEST

START_TEST(scope_free_with_derived_token)
{
    th_baseline b = th_baseline_take();
    tether_scope *s = open_scope(NULL);
    tether_token *t = new_token(tether_scope_token(s), TETHER_NEVER);
    ck_assert_int_eq(tether_scope_free(s), EBUSY);
    /* Joined (free cancels and joins first) and still valid. */
    ck_assert_int_eq(tether_scope_join(s, NULL), EINVAL);
    ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_PARENT);
    ck_assert_int_eq(tether_scope_free(s), EBUSY);
    ck_assert_int_eq(tether_token_free(t), 0);
    ck_assert_int_eq(tether_scope_free(s), 0);
    th_baseline_check(b);
}
END_TEST

START_TEST(scope_free_while_token_entered)
{
    th_baseline b = th_baseline_take();
    tether_scope *s = open_scope(NULL);
    ck_assert_int_eq(tether_scope_join(s, NULL), 0);
    tether_token *st = tether_scope_token(s);
    ck_assert_int_eq(tether_token_enter(st), 0);
    ck_assert_int_eq(tether_scope_free(s), EBUSY);
    ck_assert_int_eq(tether_token_leave(st), 0);
    ck_assert_int_eq(tether_scope_free(s), 0);
    th_baseline_check(b);
}
END_TEST

/* ------------------------------------------------ misuse that must abort */

static int child_leaves_token_entered(void *arg)
{
    return tether_token_enter((tether_token *)arg);
}

START_TEST(abort_child_returns_entered)
{
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_scope *s = open_scope(NULL);
    ck_assert_int_eq(tether_spawn(s, child_leaves_token_entered, t, NULL, NULL), 0);
    tether_scope_join(s, NULL); /* the child aborts the process first */
    ck_abort_msg("a child that returned with a token entered did not abort");
}
END_TEST

static int child_leaks_derived_token(void *arg)
{
    tether_token *t;
    (void)arg;
    return tether_token_new(&t, tether_current(), TETHER_NEVER);
}

START_TEST(abort_child_leaves_derived_token)
{
    tether_scope *s = open_scope(NULL);
    ck_assert_int_eq(tether_spawn(s, child_leaks_derived_token, NULL, NULL, NULL), 0);
    tether_scope_join(s, NULL);
    ck_abort_msg("a child that left a token derived from its own did not abort");
}
END_TEST

static int fn_leaves_entered(void *arg)
{
    return tether_token_enter((tether_token *)arg);
}

START_TEST(abort_with_deadline_unbalanced)
{
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_with_timeout(tether_sec(60), fn_leaves_entered, t, NULL);
    ck_abort_msg("a timeout block left unbalanced did not abort");
}
END_TEST

static int fn_leaks_derived_token(void *arg)
{
    tether_token *t;
    (void)arg;
    return tether_token_new(&t, tether_current(), TETHER_NEVER);
}

START_TEST(abort_with_deadline_derived_token)
{
    tether_with_timeout(tether_sec(60), fn_leaks_derived_token, NULL, NULL);
    ck_abort_msg("a timeout block that left a derived token alive did not abort");
}
END_TEST

static int body_leaves_entered(tether_scope *s, void *arg)
{
    (void)s;
    return tether_token_enter((tether_token *)arg);
}

START_TEST(abort_scope_run_body_entered)
{
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_scope_run(NULL, body_leaves_entered, t, NULL);
    ck_abort_msg("a scope body left unbalanced did not abort");
}
END_TEST

/* ----------------------------------------------- shields, signals, retry */

START_TEST(shield_null_arguments)
{
    th_baseline b = th_baseline_take();
    ck_assert_int_eq(tether_shield_enter(NULL, TETHER_NEVER), EINVAL);
    ck_assert_int_eq(tether_shield_leave(NULL), EINVAL);
    ck_assert_ptr_null(tether_shield_token(NULL));
    ck_assert_ptr_null(tether_current());
    th_baseline_check(b);
}
END_TEST

START_TEST(shield_leave_not_innermost)
{
    th_baseline b = th_baseline_take();
    tether_shield *sh;
    ck_assert_int_eq(tether_shield_enter(&sh, TETHER_NEVER), 0);
    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_enter(t), 0);
    ck_assert_int_eq(tether_shield_leave(sh), EPERM);
    ck_assert_ptr_eq(tether_current(), t); /* nothing changed */
    ck_assert_int_eq(tether_token_leave(t), 0);
    ck_assert_ptr_eq(tether_current(), tether_shield_token(sh));
    ck_assert_int_eq(tether_shield_leave(sh), 0);
    ck_assert_ptr_null(tether_current());
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

START_TEST(shield_leave_with_live_token)
{
    th_baseline b = th_baseline_take();
    tether_shield *sh;
    ck_assert_int_eq(tether_shield_enter(&sh, TETHER_NEVER), 0);
    tether_token *inner = new_token(tether_shield_token(sh), TETHER_NEVER);
    ck_assert_int_eq(tether_shield_leave(sh), EBUSY);
    ck_assert_ptr_eq(tether_current(), tether_shield_token(sh)); /* nothing changed */
    ck_assert_int_eq(tether_token_free(inner), 0);
    ck_assert_int_eq(tether_shield_leave(sh), 0);
    ck_assert_ptr_null(tether_current());
    th_baseline_check(b);
}
END_TEST

START_TEST(signals_bad_arguments)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_signals *h = (tether_signals *)&h;
    ck_assert_int_eq(tether_signals_install(NULL, t, NULL), EINVAL);
    ck_assert_int_eq(tether_signals_install(&h, NULL, NULL), EINVAL);
    int kill_sig[] = { SIGKILL };
    tether_signals_opts o = { .signals = kill_sig, .nsignals = 1 };
    ck_assert_int_eq(tether_signals_install(&h, t, &o), EINVAL);
    int stop_sig[] = { SIGUSR1, SIGSTOP };
    o = (tether_signals_opts){ .signals = stop_sig, .nsignals = 2 };
    ck_assert_int_eq(tether_signals_install(&h, t, &o), EINVAL);
    int usr[9] = { SIGUSR1, SIGUSR2, SIGUSR1, SIGUSR2, SIGUSR1, SIGUSR2, SIGUSR1, SIGUSR2, SIGUSR1 };
    o = (tether_signals_opts){ .signals = usr, .nsignals = 0 };
    ck_assert_int_eq(tether_signals_install(&h, t, &o), EINVAL);
    o = (tether_signals_opts){ .signals = usr, .nsignals = 9 };
    ck_assert_int_eq(tether_signals_install(&h, t, &o), EINVAL);
    int bad_numbers[] = { 0, -3 };
    o = (tether_signals_opts){ .signals = bad_numbers, .nsignals = 2 };
    ck_assert_int_eq(tether_signals_install(&h, t, &o), EINVAL);
    ck_assert_int_eq(tether_signals_restore(NULL), EINVAL);
    ck_assert_uint_eq(tether_signals_fired(NULL), 0);
    /* No handler was left behind. */
    struct sigaction sa;
    ck_assert_int_eq(sigaction(SIGUSR1, NULL, &sa), 0);
    ck_assert(sa.sa_handler == SIG_DFL);
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b); /* no relay thread, no eventfd */
}
END_TEST

START_TEST(signals_installed_twice)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    int one[] = { SIGUSR1 }, two[] = { SIGUSR2 };
    tether_signals_opts o1 = { .signals = one, .nsignals = 1 };
    tether_signals_opts o2 = { .signals = two, .nsignals = 1 };
    tether_signals *h1, *h2 = (tether_signals *)&h2;
    ck_assert_int_eq(tether_signals_install(&h1, t, &o1), 0);
    ck_assert_int_eq(tether_signals_install(&h2, t, &o2), EBUSY);
    struct sigaction sa;
    ck_assert_int_eq(sigaction(SIGUSR2, NULL, &sa), 0);
    ck_assert(sa.sa_handler == SIG_DFL); /* the refused one installed nothing */
    ck_assert_int_eq(tether_signals_restore(h1), 0);
    ck_assert_int_eq(tether_token_check(t), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

static int attempt_counts(void *arg)
{
    ++*(int *)arg;
    return 0;
}

static tether_time_t fake_now(void *ctx)
{
    (void)ctx;
    return tether_now();
}

START_TEST(retry_bad_options)
{
    th_baseline b = th_baseline_take();
    int calls = 0;
    tether_retry_result r;
    ck_assert_int_eq(tether_retry(NULL, &calls, NULL, &r), EINVAL);
    ck_assert_int_eq(r.error, EINVAL);
    ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_PERMANENT);
    ck_assert_uint_eq(r.attempts, 0);

    const tether_retry_opts bad[] = {
        { .initial_delay_ns = -1 },
        { .max_delay_ns = -1 },
        { .max_elapsed_ns = -1 },
        { .attempt_timeout_ns = -1 },
        { .initial_delay_ns = tether_ms(10), .max_delay_ns = tether_ms(5) },
        { .multiplier = 0.5 },
        { .multiplier = 1.0 / 0.0 },
        { .multiplier = 0.0 / 0.0 },
        { .jitter = (tether_retry_jitter)(TETHER_RETRY_JITTER_DECORRELATED + 1) },
        { .clock = { .now = fake_now } },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(tether_retry(attempt_counts, &calls, &bad[i], &r) == EINVAL,
                      "bad options #%zu accepted", i);
        ck_assert_int_eq(r.stop, TETHER_RETRY_STOP_PERMANENT);
    }
    ck_assert_int_eq(calls, 0); /* nothing was attempted */
    th_baseline_check(b);
}
END_TEST

struct after {
    int in_attempt, negative, from_child;
};

static int child_sets_hint(void *arg)
{
    ((struct after *)arg)->from_child = tether_retry_after(tether_ms(1));
    return 0;
}

static int attempt_with_hints(void *arg)
{
    struct after *a = arg;
    a->in_attempt = tether_retry_after(tether_us(1));
    a->negative = tether_retry_after(-1);
    tether_scope *s;
    int rc = tether_scope_open(&s, NULL);
    if (rc)
        return rc;
    rc = tether_spawn(s, child_sets_hint, a, NULL, NULL);
    tether_scope_join(s, NULL);
    tether_scope_free(s);
    return rc;
}

START_TEST(retry_after_outside_attempt)
{
    th_baseline b = th_baseline_take();
    ck_assert_int_eq(tether_retry_after(tether_ms(1)), EPERM);
    struct after a = { -1, -1, -1 };
    tether_retry_result r;
    ck_assert_int_eq(tether_retry(attempt_with_hints, &a, NULL, &r), 0);
    ck_assert_int_eq(a.in_attempt, 0);
    ck_assert_int_eq(a.negative, EINVAL);
    ck_assert_int_eq(a.from_child, EPERM); /* another thread of the attempt */
    ck_assert_int_eq(tether_retry_after(tether_ms(1)), EPERM); /* over again */
    th_baseline_check(b);
}
END_TEST

static int attempt_leaves_entered(void *arg)
{
    return tether_token_enter((tether_token *)arg);
}

START_TEST(abort_retry_attempt_unbalanced)
{
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_retry(attempt_leaves_entered, t, NULL, NULL);
    ck_abort_msg("a retry attempt left unbalanced did not abort");
}
END_TEST

/* ------------------------------------------- processes and legacy calls */

START_TEST(proc_bad_arguments)
{
    th_baseline b = th_baseline_take();
    char *argv[] = { "true", NULL };
    tether_proc *p = (tether_proc *)&p;
    ck_assert_int_eq(tether_proc_spawn(NULL, "/bin/true", argv, NULL), EINVAL);
    ck_assert_int_eq(tether_proc_spawn(&p, NULL, argv, NULL), EINVAL);
    ck_assert_int_eq(tether_proc_spawn(&p, "/bin/true", NULL, NULL), EINVAL);
    ck_assert_int_eq(tether_proc_wait(NULL, NULL), EINVAL);
    ck_assert_int_eq(tether_proc_pid(NULL), -1);
    ck_assert(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD); /* nothing started */
    th_baseline_check(b);
}
END_TEST

START_TEST(proc_spawn_when_cancelled)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ck_assert_int_eq(tether_token_enter(t), 0);
    char *argv[] = { "true", NULL };
    tether_proc *p = (tether_proc *)&p;
    ck_assert_int_eq(tether_proc_spawn(&p, "/bin/true", argv, NULL), ECANCELED);
    ck_assert_ptr_null(p);
    ck_assert_int_eq(tether_proc_run("/bin/true", argv, NULL, NULL), ECANCELED);
    ck_assert_int_eq(tether_token_leave(t), 0);
    ck_assert(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD); /* nothing started */
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

START_TEST(legacy_bad_times)
{
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_enter(t), 0);
    struct timespec bad_ns = { 0, 1000000000 }, neg = { -1, 0 };
    errno = 0;
    ck_assert_int_eq(tether_nanosleep(&bad_ns, NULL), -1);
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_int_eq(tether_nanosleep(&neg, NULL), -1);
    ck_assert_int_eq(errno, EINVAL);

    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    struct timespec soon;
    clock_gettime(CLOCK_MONOTONIC, &soon);
    pthread_mutex_lock(&m);
    ck_assert_int_eq(tether_cond_clockwait(&c, &m, CLOCK_PROCESS_CPUTIME_ID, &soon), EINVAL);
    ck_assert_int_eq(tether_cond_timedwait(&c, &m, &bad_ns), EINVAL);
    ck_assert_int_eq(pthread_mutex_unlock(&m), 0); /* held again on return */
    ck_assert_int_eq(tether_token_check(t), 0);
    ck_assert_int_eq(tether_token_leave(t), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

/* ------------------------------------------------------------------ suite */

static Suite *misuse_suite(void)
{
    Suite *s = suite_create("misuse");

    TCase *tc = tcase_create("tokens");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, token_null_arguments);
    tcase_add_test(tc, token_free_with_live_children);
    tcase_add_test(tc, token_free_while_entered_here);
    tcase_add_test(tc, token_free_while_entered_elsewhere);
    tcase_add_test(tc, token_free_with_callbacks_registered);
    tcase_add_test(tc, token_leave_not_entered);
    tcase_add_test(tc, token_leave_not_innermost);
    tcase_add_test(tc, with_deadline_null_fn);
    tcase_add_test(tc, sigcancel_null_arguments);
    tcase_add_test(tc, io_bad_descriptor);
    suite_add_tcase(s, tc);

    tc = tcase_create("scopes");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, scope_open_bad_options);
    tcase_add_test(tc, scope_run_bad_arguments);
    tcase_add_test(tc, scope_run_bad_options);
    tcase_add_test(tc, scope_guard_bad_options);
    tcase_add_test(tc, spawn_bad_arguments);
    tcase_add_test(tc, spawn_after_join);
    tcase_add_test(tc, spawn_into_cancelled_scope);
    tcase_add_test(tc, spawn_into_expired_scope);
    tcase_add_test(tc, spawn_while_scope_finishing);
    tcase_add_test(tc, try_spawn_into_full_scope);
    tcase_add_test(tc, join_twice);
    tcase_add_test(tc, join_while_being_joined);
    tcase_add_test(tc, join_and_free_from_child);
    tcase_add_test(tc, join_and_free_from_descendant);
    tcase_add_test(tc, task_null_and_scope_null);
    tcase_add_test(tc, cancel_after_join);
    tcase_add_test(tc, scope_free_with_derived_token);
    tcase_add_test(tc, scope_free_while_token_entered);
    suite_add_tcase(s, tc);

    tc = tcase_create("components");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, shield_null_arguments);
    tcase_add_test(tc, shield_leave_not_innermost);
    tcase_add_test(tc, shield_leave_with_live_token);
    tcase_add_test(tc, signals_bad_arguments);
    tcase_add_test(tc, signals_installed_twice);
    tcase_add_test(tc, retry_bad_options);
    tcase_add_test(tc, retry_after_outside_attempt);
    tcase_add_test(tc, proc_bad_arguments);
    tcase_add_test(tc, proc_spawn_when_cancelled);
    tcase_add_test(tc, legacy_bad_times);
    suite_add_tcase(s, tc);

    tc = tcase_create("loud");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test_raise_signal(tc, abort_child_returns_entered, SIGABRT);
    tcase_add_test_raise_signal(tc, abort_child_leaves_derived_token, SIGABRT);
    tcase_add_test_raise_signal(tc, abort_with_deadline_unbalanced, SIGABRT);
    tcase_add_test_raise_signal(tc, abort_with_deadline_derived_token, SIGABRT);
    tcase_add_test_raise_signal(tc, abort_scope_run_body_entered, SIGABRT);
    tcase_add_test_raise_signal(tc, abort_retry_attempt_unbalanced, SIGABRT);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(misuse_suite());
}
