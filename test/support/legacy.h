/*
 * Tools shared by the suites of the cancellable calls for legacy code
 * (the legacy I/O, net, sync, process, shield and signals suites): a thread
 * that runs one call under a token
 * and records what it returned, and a SIGUSR1 handler installed without
 * SA_RESTART for the EINTR tests.
 */
#ifndef TETHER_TEST_LEGACY_H
#define TETHER_TEST_LEGACY_H

#include "support.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

/* One call on its own thread: fn(arg) under tok (NULL: no token). */
typedef ssize_t (*lu_fn)(void *arg);

typedef struct lu_thread {
    tether_token *tok;
    lu_fn fn;
    void *arg;
    ssize_t ret;
    int err;
    pid_t tid;
    tether_time_t ended;
    sem_t started;
    pthread_t th;
} lu_thread;

/* Thread body: enter t->tok, run t->fn, record ret, errno and end time. */
static void *lu_main(void *p)
{
    lu_thread *t = p;
    t->tid = th_gettid();
    if (t->tok)
        ck_assert_int_eq(tether_token_enter(t->tok), 0);
    sem_post(&t->started);
    errno = 0;
    t->ret = t->fn(t->arg);
    t->err = errno;
    t->ended = tether_now();
    if (t->tok)
        ck_assert_int_eq(tether_token_leave(t->tok), 0);
    return NULL;
}

/* Start the call and return once the thread is about to make it. */
static inline void lu_start(lu_thread *t, tether_token *tok, lu_fn fn, void *arg)
{
    memset(t, 0, sizeof *t);
    t->tok = tok;
    t->fn = fn;
    t->arg = arg;
    ck_assert_int_eq(sem_init(&t->started, 0, 0), 0);
    ck_assert_int_eq(pthread_create(&t->th, NULL, lu_main, t), 0);
    while (sem_wait(&t->started) < 0)
        ck_assert_int_eq(errno, EINTR);
}

/* Start the call and return once it is blocked in the kernel. */
static inline void lu_start_blocked(lu_thread *t, tether_token *tok, lu_fn fn, void *arg)
{
    lu_start(t, tok, fn, arg);
    ck_assert_int_eq(th_wait_blocked(t->tid), 0);
}

/* Join the call's thread (asserted) and release what lu_start made. */
static inline void lu_join(lu_thread *t)
{
    ck_assert_int_eq(pthread_join(t->th, NULL), 0);
    sem_destroy(&t->started);
}

/* A new root token with `deadline` (asserted). */
static inline tether_token *lu_token(tether_time_t deadline)
{
    tether_token *t = NULL;
    ck_assert_int_eq(tether_token_new(&t, NULL, deadline), 0);
    return t;
}

/* Free a token made by lu_token (asserted). */
static inline void lu_free(tether_token *t)
{
    ck_assert_int_eq(tether_token_free(t), 0);
}

/* The SIGUSR1 handler of lu_eintr_handler: does nothing. */
static void lu_on_sigusr1(int sig)
{
    (void)sig;
}

/* SIGUSR1 runs a handler that does nothing, without SA_RESTART. */
static inline void lu_eintr_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = lu_on_sigusr1;
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
}

/* A thread blocked in its call; interrupt it with SIGUSR1 until it returns
 * (one signal can land just before the call blocks). */
static inline void lu_interrupt(lu_thread *t)
{
    ck_assert_int_eq(th_wait_blocked(t->tid), 0);
    ck_assert_int_eq(pthread_kill(t->th, SIGUSR1), 0);
    lu_join(t);
}

/* Elapsed checks: never early, generously bounded late. */
/* Assert the call ended no earlier than `deadline`. */
static inline void lu_assert_not_early(tether_time_t ended, tether_time_t deadline)
{
    ck_assert_int_ge(ended, deadline);
}

/* Assert `to` is at most bound_ms (scaled) after `from`. */
static inline void lu_assert_prompt(tether_time_t from, tether_time_t to, int64_t bound_ms)
{
    ck_assert_int_le(to - from, th_bound_ns(bound_ms));
}

/* A blocking call under test and the fixture it blocks on, for the
 * table-driven checks below (test_legacy_io.c, test_net_io.c, test_net_connect.c). */
typedef struct lu_blocker {
    const char *name;
    void (*setup)(void);
    lu_fn call; /* the tether call; blocks on the fixture */
    lu_fn raw;  /* the raw call on the same fixture, or NULL if not comparable */
    void (*teardown)(void);
} lu_blocker;

/* Canceled before the call: it fails at once with ECANCELED. */
static inline void lu_check_cancel_before(const lu_blocker *b)
{
    th_baseline base = th_baseline_take();
    b->setup();
    tether_token *tok = lu_token(TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(tok, 0), 0);
    ck_assert_int_eq(tether_token_enter(tok), 0);
    tether_time_t t0 = tether_now();
    errno = 0;
    ck_assert_msg(b->call(NULL) == -1 && errno == ECANCELED, "%s: %s", b->name, strerror(errno));
    lu_assert_prompt(t0, tether_now(), 100);
    ck_assert_int_eq(tether_token_leave(tok), 0);
    b->teardown();
    lu_free(tok);
    th_baseline_check(base);
}

/* Canceled while blocked: it wakes promptly with ECANCELED. */
static inline void lu_check_cancel_blocked(const lu_blocker *b)
{
    th_baseline base = th_baseline_take();
    b->setup();
    tether_token *tok = lu_token(TETHER_NEVER);
    lu_thread th;
    lu_start_blocked(&th, tok, b->call, NULL);
    tether_time_t t0 = tether_now();
    ck_assert_int_eq(tether_token_cancel(tok, 0), 0);
    lu_join(&th);
    ck_assert_msg(th.ret == -1 && th.err == ECANCELED, "%s: %zd %s", b->name, th.ret,
                  strerror(th.err));
    lu_assert_prompt(t0, th.ended, 500);
    b->teardown();
    lu_free(tok);
    th_baseline_check(base);
}

/* The token's deadline passes while blocked: ETIMEDOUT, never early,
 * promptly after, and the deadline is the recorded cause. */
static inline void lu_check_deadline(const lu_blocker *b, int64_t after_ms)
{
    th_baseline base = th_baseline_take();
    b->setup();
    tether_time_t deadline = tether_deadline_after(tether_ms(after_ms));
    tether_token *tok = lu_token(deadline);
    lu_thread th;
    lu_start(&th, tok, b->call, NULL);
    lu_join(&th);
    ck_assert_msg(th.ret == -1 && th.err == ETIMEDOUT, "%s: %zd %s", b->name, th.ret,
                  strerror(th.err));
    lu_assert_not_early(th.ended, deadline);
    lu_assert_prompt(deadline, th.ended, 500);
    ck_assert_int_eq(tether_token_cause(tok), TETHER_CAUSE_DEADLINE);
    b->teardown();
    lu_free(tok);
    th_baseline_check(base);
}

#endif
