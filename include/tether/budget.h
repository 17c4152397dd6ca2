/*
 * tether/budget.h — a deadline as a network budget and back: the time left
 * before a token's (or any) deadline written as a gRPC `grpc-timeout`
 * header value, and such a value read back into an absolute deadline, so a
 * service passes its deadline on to the next service and adopts the one it
 * received. <tether.h> includes it; the doc-block layout is described in
 * <tether/base.h>.
 *
 * The format (gRPC's, for any protocol that wants one): 1 to 8 ASCII
 * digits, then one unit: H hours, M minutes, S seconds, m milliseconds,
 * u microseconds, n nanoseconds; nothing else (no sign, no space). A
 * budget never loosens a deadline: written values are rounded down to what
 * the unit expresses, and the finest unit that fits in 8 digits is used.
 * The time the message spends on the network is not counted: the receiver's
 * deadline is later than the sender's by that much, so a sender that wants
 * a margin subtracts it first (tether_budget_format_ns).
 */
#ifndef TETHER_BUDGET_H
#define TETHER_BUDGET_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Room for the longest budget: 8 digits, the unit and the terminating NUL. */
#define TETHER_BUDGET_SIZE 10

/*
 * tether_budget_format_ns — a duration as a grpc-timeout value.
 *
 * Writes the duration in the finest unit whose value fits in 8 digits
 * (n, then u, m, S, M, H), rounded down, so the receiver never gets more
 * time than was left: 1500 ns is "1500n", 123456789 ns is "123456u". A
 * duration of zero or less writes "0n" (no time left) and returns
 * ETIMEDOUT, so a caller that sends it anyway still never loosens the
 * deadline.
 *
 * Parameters:
 *  duration_ns  the time left, in nanoseconds.
 *  buf          receives the NUL-terminated value.
 *  size         the size of buf; TETHER_BUDGET_SIZE is always enough.
 * Returns: 0, or an error number.
 * Errors:
 *  ETIMEDOUT  duration_ns <= 0: buf holds "0n".
 *  EINVAL     buf is NULL.
 *  ERANGE     size is too small for the value: buf holds "" if size > 0.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe (a pure function).
 * Ownership: buf is the caller's.
 */
TETHER_API int tether_budget_format_ns(int64_t duration_ns, char *buf, size_t size);

/*
 * tether_budget_format — the time left before a deadline as a grpc-timeout
 * value.
 *
 * tether_budget_format_ns of deadline - tether_now(). TETHER_NEVER has no
 * budget (gRPC has no value for "no deadline": send no header at all).
 *
 * Parameters:
 *  deadline  an absolute CLOCK_MONOTONIC deadline, or TETHER_NEVER.
 *  buf       receives the NUL-terminated value.
 *  size      the size of buf; TETHER_BUDGET_SIZE is always enough.
 * Returns: 0, or an error number.
 * Errors:
 *  ENOENT     deadline is TETHER_NEVER: buf holds "" if size > 0.
 *  ETIMEDOUT  the deadline has passed: buf holds "0n".
 *  EINVAL     buf is NULL.
 *  ERANGE     size is too small for the value: buf holds "" if size > 0.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: buf is the caller's.
 */
TETHER_API int tether_budget_format(tether_time_t deadline, char *buf, size_t size);

/*
 * tether_budget_format_token — the time left to a token as a grpc-timeout
 * value.
 *
 * tether_budget_format of t's effective deadline, after tether_token_check:
 * a canceled token has no time left (and a passed deadline is observed,
 * which cancels its owner as tether_token_check does).
 *
 * Parameters:
 *  t     the token, e.g. tether_current().
 *  buf   receives the NUL-terminated value.
 *  size  the size of buf; TETHER_BUDGET_SIZE is always enough.
 * Returns: 0, or an error number.
 * Errors:
 *  ECANCELED  t is canceled: buf holds "0n".
 *  ETIMEDOUT  t's deadline has passed: buf holds "0n".
 *  ENOENT     t has no deadline: buf holds "" if size > 0.
 *  EINVAL     t or buf is NULL.
 *  ERANGE     size is too small for the value: buf holds "" if size > 0.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe; t may be used concurrently by other threads.
 * Ownership: t stays the caller's; buf is the caller's.
 */
TETHER_API int tether_budget_format_token(tether_token *t, char *buf, size_t size);

/*
 * tether_budget_parse_ns — a grpc-timeout value as a duration.
 *
 * Strict: exactly len bytes, 1 to 8 ASCII digits followed by one of
 * H M S m u n; leading zeros are allowed, nothing else is (no sign, no
 * space, no second unit, no NUL inside). A value too large for int64_t
 * nanoseconds (more than about 292 years: only hours can get there)
 * saturates at INT64_MAX.
 *
 * Parameters:
 *  s    the value; need not be NUL-terminated.
 *  len  its length in bytes.
 *  out  receives the duration in nanoseconds (>= 0); untouched on error.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  s or out is NULL, or s[0..len) is not a valid value.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe (a pure function).
 * Ownership: s and out are the caller's.
 */
TETHER_API int tether_budget_parse_ns(const char *s, size_t len, int64_t *out);

/*
 * tether_budget_parse — a grpc-timeout value as an absolute deadline.
 *
 * tether_deadline_after of tether_budget_parse_ns's duration: give it to
 * tether_token_new, a scope's deadline or tether_with_deadline to adopt
 * the budget a caller sent. The deadline saturates at TETHER_NEVER.
 *
 * Parameters:
 *  s         the value; need not be NUL-terminated.
 *  len       its length in bytes.
 *  deadline  receives the absolute CLOCK_MONOTONIC deadline; untouched on
 *            error.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  s or deadline is NULL, or s[0..len) is not a valid value.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: s and deadline are the caller's.
 */
TETHER_API int tether_budget_parse(const char *s, size_t len, tether_time_t *deadline);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_BUDGET_H */
