/*
 * fuzz_ops.c — the blocking behaviours and the shared-object ops of the
 * fuzz_api harness. Everything here waits under a deadline: a child's spawn
 * timeout, or tether_with_timeout around a worker's op.
 */
#define _GNU_SOURCE
#include "fuzz_ops.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <unistd.h>

void fuzz_shared_init(struct shared *sh)
{
    pthread_mutex_init(&sh->mu, NULL);
    pthread_cond_init(&sh->cv, NULL);
    sh->cond_waiters = 0;
    FUZZ_CHECK(sem_init(&sh->sem, 0, 0) == 0, "sem_init");
    FUZZ_CHECK(pipe2(sh->pipe, O_CLOEXEC) == 0, "pipe2");
    FUZZ_CHECK(fcntl(sh->pipe[1], F_SETFL, O_NONBLOCK) == 0, "fcntl");
}

void fuzz_shared_reset(struct shared *sh)
{
    int avail = 0;
    char buf[256];
    while (ioctl(sh->pipe[0], FIONREAD, &avail) == 0 && avail > 0)
        if (read(sh->pipe[0], buf, avail < (int)sizeof buf ? (size_t)avail : sizeof buf) <= 0)
            break;
    while (sem_trywait(&sh->sem) == 0)
        continue;
    FUZZ_CHECK(sh->cond_waiters == 0, "%d condvar waiters left", sh->cond_waiters);
}

/* -1/errno style to an error number, for a child's return value. */
static int err_of(int rc)
{
    return rc < 0 ? errno : 0;
}

static int cond_wait_once(void)
{
    struct shared *sh = &g_shared;
    int rc = pthread_mutex_lock(&sh->mu);
    FUZZ_CHECK(rc == 0, "pthread_mutex_lock: %d", rc);
    sh->cond_waiters++;
    rc = tether_cond_wait(&sh->cv, &sh->mu);
    sh->cond_waiters--;
    pthread_mutex_unlock(&sh->mu);
    FUZZ_CHECK(rc == 0 || rc == ECANCELED || rc == ETIMEDOUT || rc == ENOMEM,
               "tether_cond_wait: %d", rc);
    return rc;
}

static int sleep_fn(void *arg)
{
    (void)arg;
    return err_of(tether_sleep_for(tether_ms(3)));
}

static int busy_until_canceled(void)
{
    tether_time_t stop = tether_deadline_after(tether_ms(20));
    int rc;
    while ((rc = tether_check()) == 0 && tether_now() < stop)
        sched_yield();
    return rc;
}

static int nested_scope(void)
{
    tether_scope *s;
    tether_scope_opts o = { .timeout_ns = tether_ms(2), .policy = TETHER_POLICY_SUPERVISOR };
    int rc = tether_scope_open(&s, &o);
    FUZZ_CHECK(rc == 0 || rc == ENOMEM, "nested tether_scope_open: %d", rc);
    if (rc)
        return rc;
    tether_spawn_opts so = { .timeout_ns = tether_ms(1) };
    rc = tether_spawn(s, sleep_fn, NULL, &so, NULL);
    FUZZ_CHECK(rc == 0 || rc == ECANCELED || rc == ETIMEDOUT || rc == EAGAIN,
               "nested tether_spawn: %d", rc);
    tether_result r;
    rc = tether_scope_join(s, &r);
    FUZZ_CHECK(rc == 0, "nested tether_scope_join: %d", rc);
    rc = tether_scope_free(s);
    FUZZ_CHECK(rc == 0, "nested tether_scope_free: %d", rc);
    return r.error;
}

int fuzz_blocking(int behaviour)
{
    char c;
    bool fired;
    switch (behaviour) {
    case CHILD_RETURN0: return 0;
    case CHILD_FAIL: return EIO;
    case CHILD_SLEEP: return err_of(tether_sleep_for(tether_ms(2)));
    case CHILD_COND: return cond_wait_once();
    case CHILD_SEM: return err_of(tether_sem_wait(&g_shared.sem));
    case CHILD_PIPE: return err_of((int)tether_read(g_shared.pipe[0], &c, 1));
    case CHILD_NESTED: return nested_scope();
    case CHILD_BUSY: return busy_until_canceled();
    case CHILD_WITH_TIMEOUT: return tether_with_timeout(tether_ms(1), sleep_fn, NULL, &fired);
    default: return 0;
    }
}

static int blocking_fn(void *arg)
{
    return fuzz_blocking(*(const int *)arg);
}

static void bounded(int behaviour, unsigned char a)
{
    bool fired = false;
    int rc = tether_with_timeout(tether_us(500 * (1 + (a & 3))), blocking_fn, &behaviour, &fired);
    (void)rc;
}

static int retry_attempt(void *arg)
{
    unsigned char a = *(const unsigned char *)arg;
    if (a & 0x40)
        tether_retry_after(tether_us(200));
    return (a & 0x80) ? EIO : EAGAIN;
}

static void op_retry(unsigned char a)
{
    tether_retry_opts o = { .initial_delay_ns = tether_us(100),
                            .max_attempts = 1 + (a & 3),
                            .attempt_timeout_ns = (a & 4) ? tether_ms(1) : 0,
                            .jitter = (tether_retry_jitter)((a >> 3) & 3),
                            .seed = a };
    tether_retry_result r;
    int rc = tether_retry(retry_attempt, &a, &o, &r);
    FUZZ_CHECK(rc == r.error, "tether_retry returned %d, result says %d", rc, r.error);
    FUZZ_CHECK(r.attempts <= o.max_attempts, "%u attempts of %u", r.attempts, o.max_attempts);
}

static int retry_fn(void *arg)
{
    op_retry(*(const unsigned char *)arg);
    return 0;
}

static void op_sigcancel(unsigned char a)
{
    tether_token *own = NULL, *t = tether_current();
    if (!t) {
        int rc = tether_token_new(&own, NULL, TETHER_NEVER);
        FUZZ_CHECK(rc == 0 || rc == ENOMEM, "tether_token_new: %d", rc);
        if (rc)
            return;
        t = own;
    }
    tether_sigcancel *sc;
    int rc = tether_sigcancel_new(&sc, t, (a & 2) ? ECONNRESET : 0);
    FUZZ_CHECK(rc == 0 || rc == ENOMEM || rc == EMFILE || rc == EAGAIN, "tether_sigcancel_new: %d",
               rc);
    if (!rc) {
        if (a & 1)
            tether_sigcancel_fire(sc);
        rc = tether_sigcancel_free(sc);
        FUZZ_CHECK(rc == 0, "tether_sigcancel_free: %d", rc);
        if (a & 1)
            FUZZ_CHECK(tether_token_error(t) != 0, "fired, freed, and the token is not canceled");
    }
    if (own)
        FUZZ_CHECK(tether_token_free(own) == 0, "tether_token_free of a fresh token");
}

static void op_shield(unsigned char a)
{
    tether_shield *sh;
    int rc = tether_shield_enter(&sh, tether_deadline_after(tether_us(300 * (1 + (a & 3)))));
    FUZZ_CHECK(rc == 0 || rc == ENOMEM, "tether_shield_enter: %d", rc);
    if (rc)
        return;
    if (a & 4)
        tether_token_cancel(tether_shield_token(sh), 0);
    if (a & 8)
        nested_scope();
    else
        tether_sleep_for(tether_ms(2));
    rc = tether_shield_leave(sh);
    FUZZ_CHECK(rc == 0, "tether_shield_leave: %d", rc);
}

static int run_body(tether_scope *s, void *arg)
{
    unsigned char a = *(const unsigned char *)arg;
    static int kinds[] = { CHILD_SLEEP, CHILD_FAIL, CHILD_RETURN0, CHILD_BUSY };
    for (int k = 0; k <= (a & 1); k++) {
        tether_spawn_opts o = { .timeout_ns = tether_ms(1 + k) };
        int rc = tether_spawn(s, blocking_fn, &kinds[(a >> (1 + 2 * k)) & 3], &o, NULL);
        FUZZ_CHECK(rc == 0 || rc == ECANCELED || rc == ETIMEDOUT || rc == EAGAIN,
                   "tether_spawn in scope_run: %d", rc);
    }
    return (a & 0x80) ? EPROTO : 0;
}

static void op_scope_run(unsigned char a)
{
    tether_scope_opts o = { .policy = (tether_policy)((a >> 5) % 3), .timeout_ns = tether_ms(2) };
    tether_result r;
    int rc = tether_scope_run(&o, run_body, &a, &r);
    FUZZ_CHECK(rc == 0 || rc == ENOMEM, "tether_scope_run: %d", rc);
    FUZZ_CHECK(rc || r.late_succeeded <= r.succeeded, "%u late of %u succeeded", r.late_succeeded,
               r.succeeded);
}

void fuzz_misc_op(int op, unsigned char a)
{
    struct shared *sh = &g_shared;
    int value;
    switch (op) {
    case OP_SLEEP: bounded(CHILD_SLEEP, a); break;
    case OP_COND_WAIT: bounded(CHILD_COND, a); break;
    case OP_COND_SIGNAL:
        pthread_mutex_lock(&sh->mu);
        if (a & 1)
            pthread_cond_broadcast(&sh->cv);
        else
            pthread_cond_signal(&sh->cv);
        pthread_mutex_unlock(&sh->mu);
        break;
    case OP_SEM_WAIT: bounded(CHILD_SEM, a); break;
    case OP_SEM_POST:
        if (sem_getvalue(&sh->sem, &value) == 0 && value < 4)
            sem_post(&sh->sem);
        break;
    case OP_PIPE_READ: bounded(CHILD_PIPE, a); break;
    case OP_PIPE_WRITE: {
        char c = (char)a;
        ssize_t n = write(sh->pipe[1], &c, 1);
        (void)n;
        break;
    }
    case OP_CHECK: {
        int rc = tether_check();
        FUZZ_CHECK(rc == 0 || rc == ECANCELED || rc == ETIMEDOUT, "tether_check: %d", rc);
        tether_token *t = tether_current();
        if (t && rc) {
            FUZZ_CHECK(tether_token_cause(t) != TETHER_CAUSE_NONE, "canceled without a cause");
            FUZZ_CHECK(tether_token_error(t) != 0, "canceled without an error");
        }
        break;
    }
    case OP_SIGCANCEL: op_sigcancel(a); break;
    case OP_SHIELD: op_shield(a); break;
    case OP_RETRY: {
        bool fired;
        tether_with_timeout(tether_ms(3), retry_fn, &a, &fired);
        break;
    }
    case OP_SCOPE_RUN: op_scope_run(a); break;
    default: break;
    }
}
