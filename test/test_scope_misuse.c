/*
 * Scope misuse, all of it in one place (docs/misuse.md, "Scopes and tasks"):
 * every misuse of a scope or task handle that tether detects returns the
 * documented error and changes nothing it promises not to change; the ones it
 * cannot report by returning (a child returning with a token still entered,
 * ...) fail loudly and the tests in tcase "loud" expect SIGABRT.
 */
#define _GNU_SOURCE
#include "scope_fixtures.h"

#include <limits.h>
#include <signal.h>
#include <sys/wait.h>

/* ------------------------------------------------------------ small tools */

/* Sleeps until its token is canceled; reports the sleep's errno. */
static int sleep_until_canceled(void *arg)
{
    (void)arg;
    return tether_sleep_until(TETHER_NEVER) == 0 ? 0 : errno;
}

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

START_TEST(spawn_into_canceled_scope)
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

    /* Canceled through its parent token: the same. */
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
    ck_assert_int_eq(tether_spawn(s, sleep_until_canceled, NULL, NULL, &t), 0);
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
    ck_assert_int_eq(tether_spawn(s, sleep_until_canceled, NULL, NULL, &t), 0);
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
    tether_task *self; /* its own handle (set before it is released) */
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

    /* Not joined yet, entered by the owner: EBUSY and nothing changes (not
     * canceled, not joined), not EDEADLK: the owner is no child of it. */
    s = open_scope(NULL);
    st = tether_scope_token(s);
    ck_assert_int_eq(tether_token_enter(st), 0);
    ck_assert_int_eq(tether_scope_free(s), EBUSY);
    ck_assert_int_eq(tether_token_check(st), 0);
    ck_assert_int_eq(tether_token_leave(st), 0);
    ck_assert_int_eq(tether_spawn(s, return_zero, NULL, NULL, NULL), 0);
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
    sem_t *published; /* `self` is set */
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
    ck_assert_int_eq(in.check_after, 0); /* the refused halt canceled nothing */
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

START_TEST(test_spawn_into_canceled_scope)
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

static Suite *suite(void)
{
    Suite *s = suite_create("scope_misuse");
    TCase *tc;

    tc = tcase_create("scopes");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, scope_open_bad_options);
    tcase_add_test(tc, scope_run_bad_arguments);
    tcase_add_test(tc, scope_run_bad_options);
    tcase_add_test(tc, scope_guard_bad_options);
    tcase_add_test(tc, spawn_bad_arguments);
    tcase_add_test(tc, spawn_after_join);
    tcase_add_test(tc, spawn_into_canceled_scope);
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

    tc = tcase_create("loud");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test_raise_signal(tc, abort_child_returns_entered, SIGABRT);
    tcase_add_test_raise_signal(tc, abort_child_leaves_derived_token, SIGABRT);
    tcase_add_test_raise_signal(tc, abort_scope_run_body_entered, SIGABRT);
    suite_add_tcase(s, tc);

    tc = tcase_create("misuse");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, test_misuse_after_join);
    tcase_add_test(tc, test_join_and_free_from_inside_edeadlk);
    tcase_add_test(tc, test_null_and_bad_arguments);
    tcase_add_test(tc, test_spawn_into_canceled_scope);
    tcase_add_test(tc, test_free_without_join_cancels_children);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
