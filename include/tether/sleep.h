/*
 * tether/sleep.h — cancellable sleeps, the simplest cancellation points.
 *
 * Like every cancellable call in tether they use the calling thread's
 * current token. With no current token they behave exactly like the call
 * they stand for. With one:
 *  - they fail at once with ECANCELED/ETIMEDOUT if the token is already
 *    canceled or past its deadline, without blocking;
 *  - a thread blocked in one wakes on cancellation (ECANCELED) or at the
 *    effective deadline (ETIMEDOUT);
 *  - a signal handler interrupting the wait makes it fail with EINTR, with
 *    or without SA_RESTART, as nanosleep(2) does (tether sleeps in a futex
 *    wait with a timeout, which the kernel does not restart after a handler).
 * Sleeping threads wait on a futex and hold no file descriptor.
 */
#ifndef TETHER_SLEEP_H
#define TETHER_SLEEP_H

#include <stdint.h>
#include <time.h>

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * tether_sleep_until — sleep until an absolute instant.
 *
 * Parameters:
 *  when  the CLOCK_MONOTONIC instant to sleep until.
 * Returns: 0 when `when` is reached, or -1 with errno set.
 * Errors:
 *  ECANCELED  the current token was canceled.
 *  ETIMEDOUT  the current token's effective deadline came before `when`.
 *  EINTR      a signal handler ran.
 * Blocking: Blocks; a cancellation point. Holds no file descriptor while
 * sleeping.
 * Thread safety: Thread-safe; uses the calling thread's current token.
 * Ownership: Nothing is allocated.
 */
TETHER_API int tether_sleep_until(tether_time_t when);

/*
 * tether_sleep_for — sleep for a duration.
 *
 * A duration <= 0 returns at once after the cancellation check.
 *
 * Parameters:
 *  duration_ns  the duration in nanoseconds.
 * Returns: 0 when the duration has passed, or -1 with errno set.
 * Errors:
 *  ECANCELED  the current token was canceled.
 *  ETIMEDOUT  the current token's effective deadline came first.
 *  EINTR      a signal handler ran.
 * Blocking: Blocks; a cancellation point. Holds no file descriptor while
 * sleeping.
 * Thread safety: Thread-safe; uses the calling thread's current token.
 * Ownership: Nothing is allocated.
 */
TETHER_API int tether_sleep_for(int64_t duration_ns);

/*
 * tether_nanosleep — nanosleep(2) that can be canceled.
 *
 * Parameters:
 *  req  the duration, as for nanosleep(2).
 *  rem  if not NULL, receives the time that was left when the sleep was
 *       cut short (EINTR, ECANCELED or ETIMEDOUT); untouched on success.
 * Returns: 0 after sleeping the whole duration, or -1 with errno set.
 * Errors:
 *  EINVAL     tv_nsec is outside 0..999999999 or tv_sec is negative.
 *  EFAULT     req points outside the address space, or rem does and the
 *             sleep was cut short (the kernel reads and writes them, as
 *             for nanosleep(2): never a crash).
 *  EINTR      a signal handler ran.
 *  ECANCELED  the current token was canceled.
 *  ETIMEDOUT  the current token's deadline came first.
 * Blocking: Blocks; a cancellation point. Holds no file descriptor while
 * sleeping.
 * Thread safety: Thread-safe; uses the calling thread's current token.
 * Ownership: req and rem are the caller's and used only during the call.
 */
TETHER_API int tether_nanosleep(const struct timespec *req, struct timespec *rem);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_SLEEP_H */
