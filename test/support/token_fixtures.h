/*
 * Fixtures shared by the token suites (test/test_token_*.c).
 *
 * The token tree: create/free, cancellation and its propagation, deadlines,
 * cancellation callbacks, the current token and in-thread timeout blocks.
 *
 * Threads hand off through barriers and semaphores; the only sleeps are the
 * ones inside the code under test (tether_sleep_for in timeout blocks).
 */
#ifndef TETHER_TEST_TOKEN_FIXTURES_H
#define TETHER_TEST_TOKEN_FIXTURES_H

#include "support.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ small tools */

static inline void free_token(tether_token *t)
{
    ck_assert_int_eq(tether_token_free(t), 0);
}

static inline void assert_live(tether_token *t)
{
    ck_assert_int_eq(tether_token_check(t), 0);
    ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_NONE);
    ck_assert_int_eq(tether_token_root_cause(t), TETHER_CAUSE_NONE);
    ck_assert_int_eq(tether_token_error(t), 0);
}

/* A callback that counts its runs and records the thread that ran it. */
struct counter {
    atomic_int runs;
    pthread_t runner;
};

static inline void count_cb(void *arg)
{
    struct counter *c = arg;
    c->runner = pthread_self();
    atomic_fetch_add(&c->runs, 1);
}

static inline tether_callback *on_cancel(tether_token *t, void (*fn)(void *), void *arg)
{
    tether_callback *cb = NULL;
    ck_assert_int_eq(tether_token_on_cancel(t, fn, arg, &cb), 0);
    ck_assert_ptr_nonnull(cb);
    return cb;
}

static inline bool off_cancel(tether_callback *cb)
{
    bool ran = true;
    ck_assert_int_eq(tether_token_off_cancel(cb, &ran), 0);
    return ran;
}

/* A thread asleep under a descendant wakes at the owner's deadline (never
 * before it), and its wake cancels the owner. */
struct sleeper {
    tether_token *t;
    int rc, err;
    tether_time_t woke;
    sem_t started;
    pid_t tid;
};

static inline void *sleep_under(void *p)
{
    struct sleeper *s = p;
    s->tid = th_gettid();
    sem_post(&s->started);
    ck_assert_int_eq(tether_token_enter(s->t), 0);
    s->rc = tether_sleep_for(tether_sec(60));
    s->err = errno;
    s->woke = tether_now();
    ck_assert_int_eq(tether_token_leave(s->t), 0);
    return NULL;
}

#endif
