/*
 * Fixtures shared by the scope suites (test/test_scope_*.c).
 *
 * Scopes: policies (fail-fast, supervisor, first-success), deadlines,
 * strict background teardown, task handles, limits, the body helpers, misuse,
 * and the races between children finishing, failing and being canceled.
 *
 * Children that must be "blocked" announce themselves on a semaphore and the
 * test then waits (th_wait_blocked) until the kernel shows them asleep, so
 * "canceled while blocked" is what is tested; cancellation is sticky, so a
 * slow machine only turns it into "canceled before blocking", never a hang.
 * Iteration counts are modest and multiplied by TETHER_STRESS.
 */
#ifndef TETHER_TEST_SCOPE_FIXTURES_H
#define TETHER_TEST_SCOPE_FIXTURES_H

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

/* What a blocking call returns when it was not canceled: never expected. */
#define NOT_CANCELED EPROTO

/* ---------------------------------------------------------------------- */
/* Children that block in tether primitives until canceled                */

enum block_kind { BLOCK_SLEEP, BLOCK_READ };

typedef struct blocker {
    enum block_kind kind;
    sem_t *ready; /* posted just before blocking (may be NULL) */
    pid_t tid;    /* written before `ready` is posted */
    int err;      /* errno of the blocking call */
    tether_time_t woke_at;
    tether_token *token; /* its current token */
    tether_cause cause, root_cause;
    int token_error;
    atomic_bool cleaned; /* ran its cleanup after the call returned */
} blocker;

/* Block in tether_sleep_for(DAY) or tether_read on an empty pipe of its own;
 * afterwards record what the token says, close what it holds, set a flag. */
static inline int blocker_main(void *arg)
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
        b->err = tether_read(fds[0], &c, 1) < 0 ? errno : NOT_CANCELED;
    } else {
        b->err = tether_sleep_for(DAY) < 0 ? errno : NOT_CANCELED;
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

static inline void blockers_init(blocker *b, int n, sem_t *ready)
{
    memset(b, 0, sizeof *b * (size_t)n);
    for (int i = 0; i < n; i++) {
        b[i].kind = i % 2 ? BLOCK_READ : BLOCK_SLEEP;
        b[i].ready = ready;
    }
}

/* Wait until n blockers have announced themselves and are asleep. */
static inline void wait_blocked(sem_t *ready, blocker *b, int n)
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
    sem_t *ready; /* optional */
    int check;    /* tether_check() after release */
} gated;

static inline int gated_main(void *arg)
{
    gated *g = arg;
    if (g->ready)
        sem_post(g->ready);
    sem_wait_ok(g->gate);
    g->check = tether_check();
    return g->check;
}

static inline int return_int(void *arg)
{
    return *(const int *)arg;
}

/* ---------------------------------------------------------------------- */
/* tether_scope_run and TETHER_SCOPE_GUARD                                */

typedef struct worker {
    int rc; /* what its 20 ms tether sleep returned */
    atomic_bool done;
} worker;

static inline int worker_20ms(void *arg)
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

static inline int body_spawn_workers(tether_scope *s, void *arg)
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

#endif
