/*
 * tether_job_run: a pool job under its own token (parent + own deadline),
 * skipped when that token is dead at the start, stopped at its deadline or
 * by its parent's cancel, classified into a tether_job_result; the
 * worker's own current token is untouched; misuse aborts loudly. Plain
 * pthreads stand in for a pool's workers.
 */
#define _GNU_SOURCE
#include "support.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

/* What a job saw while it ran. */
typedef struct probe {
    atomic_int calls;
    tether_token *current;  /* its current token while it ran */
    tether_time_t deadline; /* that token's effective deadline */
    sem_t *ready;           /* posted before it blocks (may be NULL) */
    pid_t tid;
    int ret;     /* what it returns when not blocking */
    bool block;  /* block until canceled, then ... */
    bool commit; /* ... return 0 anyway (a late success) */
} probe;

static int probe_main(void *arg)
{
    probe *p = arg;
    atomic_fetch_add(&p->calls, 1);
    p->current = tether_current();
    p->deadline = tether_token_deadline(p->current);
    p->tid = th_gettid();
    if (p->ready)
        sem_post(p->ready);
    if (!p->block)
        return p->ret;
    int rc = tether_sleep_for(DAY) < 0 ? errno : EPROTO;
    return p->commit ? 0 : rc;
}

static tether_job_result run_ok(tether_token *parent, tether_time_t deadline, probe *p)
{
    tether_job_result r;
    memset(&r, 0x5a, sizeof r); /* every field must be written */
    ck_assert_int_eq(tether_job_run(parent, deadline, probe_main, p, &r), 0);
    return r;
}

START_TEST(test_job_ok_under_fresh_token)
{
    th_baseline base = th_baseline_take();
    tether_token *parent = new_token(NULL, TETHER_NEVER);
    tether_time_t dl = tether_deadline_after(tether_sec(60));
    probe p = { .ret = 0 };
    tether_job_result r = run_ok(parent, dl, &p);

    ck_assert_int_eq(atomic_load(&p.calls), 1);
    ck_assert_ptr_nonnull(p.current);
    ck_assert_ptr_ne(p.current, parent); /* a fresh child, not the parent */
    ck_assert_int_eq(p.deadline, dl);
    ck_assert_ptr_null(tether_current()); /* left again */
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert(r.ran);
    ck_assert(!r.late);
    ck_assert_int_eq(r.result, 0);
    ck_assert_int_eq(r.error, 0);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_NONE);
    ck_assert_int_eq(tether_token_check(parent), 0); /* the parent is not touched */
    ck_assert_int_eq(tether_token_free(parent), 0);  /* nothing left under it */

    /* No parent, no deadline: a root token of its own. */
    r = run_ok(NULL, TETHER_NEVER, &p);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_int_eq(p.deadline, TETHER_NEVER);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_job_failed)
{
    th_baseline base = th_baseline_take();
    probe p = { .ret = EIO };
    tether_job_result r = run_ok(NULL, TETHER_NEVER, &p);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_FAILED);
    ck_assert(r.ran);
    ck_assert_int_eq(r.result, EIO);
    ck_assert_int_eq(r.error, EIO);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_NONE);
    ck_assert(!r.late);
    th_baseline_check(base);
}
END_TEST

/* The job's own deadline stops it at its next cancellation point, not
 * before the deadline and within a generous bound after it. */
START_TEST(test_job_stopped_at_its_deadline)
{
    th_baseline base = th_baseline_take();
    tether_token *parent = new_token(NULL, TETHER_NEVER);
    for (int commit = 0; commit < 2; commit++) {
        probe p = { .block = true, .commit = commit };
        tether_time_t dl = tether_deadline_after(tether_ms(40));
        tether_job_result r = run_ok(parent, dl, &p);
        tether_time_t end = tether_now();
        ck_assert_int_ge(end, dl);
        ck_assert_int_le(end - dl, th_bound_ns(1000));
        ck_assert_int_eq(r.outcome, TETHER_OUTCOME_DEADLINE_EXCEEDED);
        ck_assert_int_eq(r.cause, TETHER_CAUSE_DEADLINE);
        ck_assert_int_eq(r.error, ETIMEDOUT);
        ck_assert(r.ran);
        ck_assert_int_eq(r.result, commit ? 0 : ETIMEDOUT);
        ck_assert(r.late == (commit == 1)); /* a 0 after its deadline is late */
    }
    ck_assert_int_eq(tether_token_check(parent), 0); /* the job's deadline is its own */
    ck_assert_int_eq(tether_token_free(parent), 0);
    th_baseline_check(base);
}
END_TEST

/* The parent's cancel, from another thread while the job is blocked. */
typedef struct cancel_later {
    sem_t ready;
    probe p;
    tether_token *parent;
    tether_job_result r;
    int rc;
} cancel_later;

static void *job_worker(void *arg)
{
    cancel_later *c = arg;
    c->rc = tether_job_run(c->parent, TETHER_NEVER, probe_main, &c->p, &c->r);
    return NULL;
}

START_TEST(test_job_stopped_by_parent_cancel)
{
    th_baseline base = th_baseline_take();
    cancel_later c = { .p = { .block = true } };
    sem_init(&c.ready, 0, 0);
    c.p.ready = &c.ready;
    c.parent = new_token(NULL, TETHER_NEVER);
    pthread_t th = thread_start(job_worker, &c);
    sem_wait_ok(&c.ready);
    ck_assert_int_eq(th_wait_blocked(c.p.tid), 0);
    ck_assert_int_eq(tether_token_cancel(c.parent, EPIPE), 0);
    thread_join(th);
    sem_destroy(&c.ready);

    ck_assert_int_eq(c.rc, 0);
    ck_assert_int_eq(c.r.outcome, TETHER_OUTCOME_CANCELED);
    ck_assert_int_eq(c.r.cause, TETHER_CAUSE_PARENT);
    ck_assert_int_eq(c.r.error, EPIPE); /* the parent's error */
    ck_assert_int_eq(c.r.result, ECANCELED);
    ck_assert(c.r.ran);
    ck_assert(!c.r.late);
    ck_assert_int_eq(tether_token_free(c.parent), 0);
    th_baseline_check(base);
}
END_TEST

/* Dead at the start: skipped, fn never called. */
START_TEST(test_job_skipped_when_dead)
{
    th_baseline base = th_baseline_take();
    probe p = { 0 };
    tether_token *canceled = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(canceled, 0), 0);
    tether_job_result r = run_ok(canceled, TETHER_NEVER, &p);
    ck_assert(!r.ran);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_PARENT);
    ck_assert_int_eq(r.error, ECANCELED);
    ck_assert_int_eq(r.result, 0);
    ck_assert(!r.late);

    /* Its own deadline passed while it was queued. */
    tether_token *live = new_token(NULL, TETHER_NEVER);
    r = run_ok(live, tether_now() - 1, &p);
    ck_assert(!r.ran);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_DEADLINE_EXCEEDED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(r.error, ETIMEDOUT);
    ck_assert_int_eq(tether_token_check(live), 0);

    /* The parent's deadline passed: the parent is canceled by it. */
    tether_token *expired = new_token(NULL, tether_now() - 1);
    r = run_ok(expired, tether_deadline_after(tether_sec(60)), &p);
    ck_assert(!r.ran);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_DEADLINE_EXCEEDED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_PARENT);
    ck_assert_int_eq(tether_token_cause(expired), TETHER_CAUSE_DEADLINE);

    ck_assert_int_eq(atomic_load(&p.calls), 0);
    ck_assert_int_eq(tether_token_free(canceled), 0);
    ck_assert_int_eq(tether_token_free(live), 0);
    ck_assert_int_eq(tether_token_free(expired), 0);
    th_baseline_check(base);
}
END_TEST

/* A worker that itself runs under a token: the job is not under it, its
 * cancel does not reach the job, and it is current again afterwards. */
static int job_checks_isolation(void *arg)
{
    tether_token *worker = arg;
    tether_token_cancel(worker, 0);
    return tether_check(); /* the job's token: still live */
}

START_TEST(test_job_independent_of_worker_token)
{
    th_baseline base = th_baseline_take();
    tether_token *worker = new_token(NULL, TETHER_NEVER);
    enter(worker);
    tether_job_result r;
    ck_assert_int_eq(tether_job_run(NULL, TETHER_NEVER, job_checks_isolation, worker, &r), 0);
    ck_assert_ptr_eq(tether_current(), worker);
    leave(worker);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_int_eq(r.result, 0);
    ck_assert_int_eq(tether_token_free(worker), 0);
    th_baseline_check(base);
}
END_TEST

/* out NULL: the job still runs. */
START_TEST(test_job_out_null)
{
    th_baseline base = th_baseline_take();
    probe p = { .ret = EIO };
    ck_assert_int_eq(tether_job_run(NULL, TETHER_NEVER, probe_main, &p, NULL), 0);
    ck_assert_int_eq(atomic_load(&p.calls), 1);
    th_baseline_check(base);
}
END_TEST

/* Many workers, one parent: a cancel stops the running jobs and skips the
 * ones that start afterwards. */
enum { WORKERS = 4, JOBS_EACH = 8 };

typedef struct crew {
    tether_token *parent;
    sem_t started;
    atomic_int ran, skipped, canceled;
} crew;

static int crew_job(void *arg)
{
    crew *c = arg;
    sem_post(&c->started);
    return tether_sleep_for(DAY) < 0 ? errno : EPROTO;
}

static void *crew_worker(void *arg)
{
    crew *c = arg;
    for (int i = 0; i < JOBS_EACH; i++) {
        tether_job_result r;
        if (tether_job_run(c->parent, TETHER_NEVER, crew_job, c, &r) != 0) {
            bad("tether_job_run failed");
            continue;
        }
        EXPECT(r.outcome == TETHER_OUTCOME_CANCELED, "outcome %d", (int)r.outcome);
        atomic_fetch_add(r.ran ? &c->ran : &c->skipped, 1);
        if (r.ran && r.result == ECANCELED)
            atomic_fetch_add(&c->canceled, 1);
    }
    return NULL;
}

START_TEST(test_job_many_workers_one_cancel)
{
    th_baseline base = th_baseline_take();
    crew c = { .parent = new_token(NULL, TETHER_NEVER) };
    sem_init(&c.started, 0, 0);
    pthread_t th[WORKERS];
    for (int i = 0; i < WORKERS; i++)
        th[i] = thread_start(crew_worker, &c);
    for (int i = 0; i < WORKERS; i++)
        sem_wait_ok(&c.started);
    ck_assert_int_eq(tether_token_cancel(c.parent, 0), 0);
    for (int i = 0; i < WORKERS; i++)
        thread_join(th[i]);
    sem_destroy(&c.started);
    ck_assert_msg(bad_seen() == 0, "%s", bad_first());
    ck_assert_int_eq(atomic_load(&c.ran), WORKERS);
    ck_assert_int_eq(atomic_load(&c.canceled), WORKERS);
    ck_assert_int_eq(atomic_load(&c.skipped), WORKERS * (JOBS_EACH - 1));
    ck_assert_int_eq(tether_token_free(c.parent), 0);
    th_baseline_check(base);
}
END_TEST

/* Misuse: loud. */
static int job_leaves_entered(void *arg)
{
    tether_token_enter(arg);
    return 0;
}

START_TEST(abort_job_unbalanced)
{
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_job_run(NULL, TETHER_NEVER, job_leaves_entered, t, NULL);
}
END_TEST

static int job_leaves_derived(void *arg)
{
    (void)arg;
    tether_token *t;
    return tether_token_new(&t, tether_current(), TETHER_NEVER);
}

START_TEST(abort_job_derived_token)
{
    tether_job_run(NULL, TETHER_NEVER, job_leaves_derived, NULL, NULL);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("job");
    TCase *tc = tcase_create("job");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, test_job_ok_under_fresh_token);
    tcase_add_test(tc, test_job_failed);
    tcase_add_test(tc, test_job_stopped_at_its_deadline);
    tcase_add_test(tc, test_job_stopped_by_parent_cancel);
    tcase_add_test(tc, test_job_skipped_when_dead);
    tcase_add_test(tc, test_job_independent_of_worker_token);
    tcase_add_test(tc, test_job_out_null);
    tcase_add_test(tc, test_job_many_workers_one_cancel);
    suite_add_tcase(s, tc);

    tc = tcase_create("loud");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test_raise_signal(tc, abort_job_unbalanced, SIGABRT);
    tcase_add_test_raise_signal(tc, abort_job_derived_token, SIGABRT);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
