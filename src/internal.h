/*
 * Internal interface shared by every tether source file. Nothing under src/
 * is API. One line of contract per internal function.
 *
 * Map of the sources (what each holds), lowest layer first:
 *   assert.c    the always-on invariant check and the misuse aborts
 *   fault.c     the one fault-injection funnel (test builds only)
 *   sys.c       every system call tether makes, entered with syscall(2)
 *   clock.c     the monotonic clock and deadlines
 *   names.c     the names of causes and outcomes
 *   version.c   the runtime version query
 *   wait.c      futex sleeps, eventfd pool, wake-ups: the waiting layer
 *   token.c     the token tree: create/free, cancel, propagation, callbacks
 *   token_wait.c the waits under a token (sleep, poll, backoff)
 *   context.c   request context: a value on a token, seen by descendants
 *   timer.c     the timer thread: cancels tokens at their own deadlines
 *   hook.c      cancel hooks that may block, on lazily started runners
 *   current.c   the calling thread's current token, tether_check,
 *               tether_with_deadline
 *   span.c      descriptor spans: shutdown of a socket on cancel
 *   job.c       tether_job_run: one pool job under its own token
 *   shield.c    shielded regions
 *   sleep.c     cancellable sleeps (tether_sleep_*, tether_nanosleep)
 *   io.c        descriptor I/O: read/write families, poll/ppoll
 *   net.c       sockets: recv/send families, accept, connect
 *   sync.c      condition variables and semaphores
 *   process.c   waitpid/waitid and child processes
 *   signals.c   the signal-safe cancel relay and SIGINT/SIGTERM handling
 *   reuse.c     parked threads that run scope children (thread reuse);
 *               tether_trim
 *   scope.c     scopes: open, children, spawn
 *   join.c      scopes: waiting for tasks, join, free, tether_scope_run
 *   hostage.c   the hostage watchdog kept by join; what a thread is blocked in
 *   dump.c      tether_dump: the token tree as text or JSON; its signal relay
 *   fork.c      the atfork handlers; freeing a scope a fork child inherited
 *   retry.c     retry with backoff and jitter
 *   resolve.c   tether_getaddrinfo: the lookup on a helper thread
 *   metrics.c   metrics: the name registry, gauges, the fold at join,
 *               snapshots
 *   prometheus.c the metrics in the Prometheus text format
 *   events.c    event hooks: the registration, its read sections, reports
 *   budget.c    a deadline as a grpc-timeout value and back
 *   root.c      the process root: TETHER_DEADLINE adopted, and written for
 *               children; tether_token_new's NULL parent
 *   pgroup.c    whether a process group has live members (/proc)
 *
 * Internal headers (each includes only headers above it in this list):
 *   internal.h  this file: visibility, errors, assertions, the funnel
 *   clock.h     time arithmetic        sys.h    raw system calls
 *   wait.h      the waiting layer      token.h  the token structure
 *   current.h   the current token      dropin.h the drop-in skeleton
 *   reuse.h     thread reuse (the pool)
 *   scope.h     scope and task structures (scope.c, join.c, hostage.c,
 *               dump.c)
 *   timer.h     the timer thread (token.c, timer.c)
 *   hook.h      cancel hooks (token.c, reuse.c, fork.c)
 *   metrics.h   the metrics' series and gauges (scope files, token_wait.c,
 *               sync.c, retry.c)
 *   events.h    the event reports (scope files, token.c)
 *   resolve.h   the resolver's fork handlers (resolve.c, fork.c)
 */
#ifndef TETHER__INTERNAL_H
#define TETHER__INTERNAL_H

#include "tether.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define TETHER_HIDDEN __attribute__((visibility("hidden")))

/* Fail the POSIX way: errno = e, -1. */
static inline int tether__fail(int e)
{
    errno = e;
    return -1;
}

/* Internal invariant broken: always on, never compiled out. */
#define TETHER_ASSERT(cond) ((cond) ? (void)0 : tether__assert_fail(#cond, __FILE__, __LINE__))
/* Print "internal invariant broken" with what/where, then abort. */
TETHER_HIDDEN _Noreturn void tether__assert_fail(const char *what, const char *file, int line);
/* Print "tether: <who> ['<name>'] <what>" for a misuse no caller could
 * handle (name may be NULL), then abort. */
TETHER_HIDDEN _Noreturn void tether__misuse(const char *who, const char *name, const char *what);

/* pthread_mutex_lock that cannot fail on a valid mutex: asserted. */
static inline void tether__lock(pthread_mutex_t *mu)
{
    int rc = pthread_mutex_lock(mu);
    TETHER_ASSERT(rc == 0);
}

/* pthread_mutex_unlock, asserted likewise. */
static inline void tether__unlock(pthread_mutex_t *mu)
{
    int rc = pthread_mutex_unlock(mu);
    TETHER_ASSERT(rc == 0);
}

/* The fault-injection funnel: every resource acquisition (memory, threads,
 * descriptors) asks it first, so a TETHER_FAULT_INJECTION build can fail the
 * Nth one on demand. Without it, tether__fault_hit is a constant false. */
#ifdef TETHER_FAULT_INJECTION
/* Whether this acquisition is the armed one (counts it). */
TETHER_HIDDEN bool tether__fault_hit(void);
/* Test-only controls, exported only from a fault-injection build: the nth
 * acquisition from now fails (0 disarms); how many were seen since arming. */
TETHER_API void tether_fault_arm(long nth);
TETHER_API long tether_fault_seen(void);
/* A failed acquisition tether absorbed by design (a fallback, not an error
 * any call reports): counted for the fault sweep. */
TETHER_HIDDEN void tether__fault_absorbed(void);
/* Test-only: how many failures were absorbed since the process started. */
TETHER_API long tether_fault_absorbed_count(void);
#else
static inline bool tether__fault_hit(void)
{
    return false;
}

static inline void tether__fault_absorbed(void)
{
}
#endif

/* pthread_cond_init(3) for a condition variable whose timed waits use
 * CLOCK_MONOTONIC (tether's one clock). */
static inline int tether__cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
    return rc;
}

/* An injected allocation failure: NULL with errno ENOMEM, as glibc's. */
static inline void *tether__no_memory(void)
{
    errno = ENOMEM;
    return NULL;
}

/* calloc(3) through the funnel: NULL when injected. */
static inline void *tether__calloc(size_t n, size_t size)
{
    return tether__fault_hit() ? tether__no_memory() : calloc(n, size);
}

/* malloc(3) through the funnel: NULL when injected. */
static inline void *tether__malloc(size_t size)
{
    return tether__fault_hit() ? tether__no_memory() : malloc(size);
}

/* realloc(3) through the funnel: NULL (p untouched) when injected. */
static inline void *tether__realloc(void *p, size_t size)
{
    return tether__fault_hit() ? tether__no_memory() : realloc(p, size);
}

/* pthread_create(3) through the funnel: EAGAIN when injected. */
static inline int tether__thread_create(pthread_t *thread, const pthread_attr_t *attr,
                                        void *(*fn)(void *), void *arg)
{
    return tether__fault_hit() ? EAGAIN : pthread_create(thread, attr, fn, arg);
}

#endif /* TETHER__INTERNAL_H */
