/*
 * tether/sync.h — cancellable waits on pthread condition variables and POSIX
 * semaphores.
 *
 * The condition-variable calls follow pthreads (they return an error number
 * and leave errno alone); the semaphore calls follow sem_wait(3) (-1 and
 * errno). Each uses the calling thread's current token; with none it is the
 * raw call.
 */
#ifndef TETHER_SYNC_H
#define TETHER_SYNC_H

#include <pthread.h>
#include <semaphore.h>
#include <time.h>

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * tether_cond_wait — pthread_cond_wait that can be canceled.
 *
 * With no current token it is pthread_cond_wait. Under a token, a
 * cancellation callback on the current token broadcasts `cond`, so every
 * waiter on cond wakes (they re-check their predicates). The canceling
 * thread may hold `mutex` (as a waiter that noticed the deadline does); the
 * callback locks `mutex` only while this waiter holds it on its way into the
 * wait (with glibc's lock elision enabled, always: then the canceler must
 * not hold mutex). A wait that consumed a wake-up and then reports
 * ECANCELED/ETIMEDOUT passes it on with pthread_cond_signal, so a signal is
 * never lost to another waiter. The deadline is waited for with
 * pthread_cond_clockwait(CLOCK_MONOTONIC), which works whatever clock the
 * condvar was initialised with. Each wait under a token registers one
 * callback (a small allocation).
 *
 * Parameters:
 *  cond   the condition variable.
 *  mutex  the mutex, locked by the caller, as for pthread_cond_wait.
 * Returns: 0 when woken (spurious wakeups included, as with
 * pthread_cond_wait: re-check the predicate), or an error number. In every
 * case the mutex is held again on return.
 * Errors:
 *  ECANCELED  the current token was canceled.
 *  ETIMEDOUT  the current token's deadline passed.
 *  ENOMEM     the cancellation callback could not be registered.
 *  otherwise  pthread_cond_clockwait's errors.
 * Blocking: Blocks; a cancellation point.
 * Thread safety: Thread-safe as pthread_cond_wait.
 * Ownership: cond and mutex are the caller's.
 */
TETHER_API int tether_cond_wait(pthread_cond_t *cond, pthread_mutex_t *mutex);

/*
 * tether_cond_timedwait — pthread_cond_timedwait that can be canceled.
 *
 * Otherwise as tether_cond_wait.
 *
 * Parameters:
 *  cond     the condition variable.
 *  mutex    the mutex, locked by the caller.
 *  abstime  an absolute CLOCK_REALTIME time, as for pthread_cond_timedwait
 *           on a condvar with default attributes. (For a condvar set to
 *           CLOCK_MONOTONIC, pass that clock to tether_cond_clockwait.)
 *           Must point to readable memory: glibc's pthread_cond_timedwait
 *           reads it in user space and crashes on a bad pointer, as this
 *           does (no EFAULT).
 * Returns: 0, or an error number; the mutex is held again on return.
 * Errors:
 *  ETIMEDOUT  abstime passed, or the token's deadline did.
 *  ECANCELED  the current token was canceled.
 *  EINVAL     abstime's tv_nsec is out of range.
 *  ENOMEM     the cancellation callback could not be registered.
 *  otherwise  pthread_cond_clockwait's errors.
 * Blocking: Blocks; a cancellation point.
 * Thread safety: Thread-safe as pthread_cond_timedwait.
 * Ownership: cond, mutex and abstime are the caller's.
 */
TETHER_API int tether_cond_timedwait(pthread_cond_t *cond, pthread_mutex_t *mutex,
                                     const struct timespec *abstime);

/*
 * tether_cond_clockwait — pthread_cond_clockwait that can be canceled.
 *
 * Otherwise as tether_cond_timedwait.
 *
 * Parameters:
 *  cond     the condition variable.
 *  mutex    the mutex, locked by the caller.
 *  clock    CLOCK_MONOTONIC or CLOCK_REALTIME.
 *  abstime  an absolute time on clock; readable memory, as for
 *           tether_cond_timedwait (a bad pointer crashes, as in glibc).
 * Returns: 0, or an error number; the mutex is held again on return.
 * Errors:
 *  ETIMEDOUT  abstime passed, or the token's deadline did.
 *  ECANCELED  the current token was canceled.
 *  EINVAL     clock is another clock, or abstime's tv_nsec is out of range.
 *  ENOMEM     the cancellation callback could not be registered.
 *  otherwise  pthread_cond_clockwait's errors.
 * Blocking: Blocks; a cancellation point.
 * Thread safety: Thread-safe as pthread_cond_clockwait.
 * Ownership: cond, mutex and abstime are the caller's.
 */
TETHER_API int tether_cond_clockwait(pthread_cond_t *cond, pthread_mutex_t *mutex, clockid_t clock,
                                     const struct timespec *abstime);

/*
 * tether_sem_wait — sem_wait(3) that can be canceled.
 *
 * A unit is taken only when 0 is returned: a cancellation never consumes,
 * invents or loses a unit, and other waiters (tether's or raw sem_wait
 * callers) are unaffected. A semaphore cannot be woken from outside without
 * posting to it, so the wait under a token sleeps in slices of
 * sem_clockwait(CLOCK_MONOTONIC) of at most 10 ms: a post wakes it at once,
 * a cancellation within about 10 ms, a deadline exactly.
 *
 * Parameters:
 *  sem  the semaphore.
 * Returns: 0 with one unit taken, or -1 with errno set.
 * Errors:
 *  EINTR      a signal handler ran.
 *  EINVAL     sem is not a valid semaphore.
 *  ECANCELED  the current token was canceled.
 *  ETIMEDOUT  the current token's deadline passed.
 * Blocking: Blocks; a cancellation point.
 * Thread safety: Thread-safe as sem_wait(3).
 * Ownership: sem is the caller's.
 */
TETHER_API int tether_sem_wait(sem_t *sem);

/*
 * tether_sem_timedwait — sem_timedwait(3) that can be canceled.
 *
 * Otherwise as tether_sem_wait.
 *
 * Parameters:
 *  sem      the semaphore.
 *  abstime  an absolute CLOCK_REALTIME time, as for sem_timedwait(3);
 *           readable memory (glibc's sem_timedwait reads it in user space
 *           and crashes on a bad pointer; this does too when it has to wait).
 * Returns: 0 with one unit taken, or -1 with errno set.
 * Errors:
 *  ETIMEDOUT  abstime or the token's deadline passed.
 *  EINVAL     sem is not a valid semaphore, or abstime's tv_nsec is out of
 *             range.
 *  EINTR      a signal handler ran.
 *  ECANCELED  the current token was canceled.
 * Blocking: Blocks; a cancellation point.
 * Thread safety: Thread-safe as sem_timedwait(3).
 * Ownership: sem and abstime are the caller's.
 */
TETHER_API int tether_sem_timedwait(sem_t *sem, const struct timespec *abstime);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_SYNC_H */
