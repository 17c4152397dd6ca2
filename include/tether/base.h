/*
 * tether/base.h — what every tether header builds on: the TETHER_API
 * marker, the version, time (instants and durations), cancellation causes
 * and scope outcomes. <tether/core.h> includes it; <tether.h> includes all.
 *
 * Doc blocks in this and the other tether headers have one fixed layout,
 * from which the man pages are generated (scripts/tether-man.awk):
 *
 *   name — one-line summary.
 *   description paragraphs
 *   Parameters:     one item per parameter: "name  text"
 *   Returns:        the return value
 *   Errors:         one item per error: "ENAME  text" (or "none.")
 *   Blocking:       whether it blocks and whether it is a cancellation point
 *   Thread safety:  which concurrent calls are allowed
 *   Ownership:      who owns the arguments and the results
 */
#ifndef TETHER_BASE_H
#define TETHER_BASE_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include "tether_version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define TETHER_API __attribute__((visibility("default")))
#else
#define TETHER_API
#endif

/* ======================================================================
 * Version
 * ====================================================================== */

/*
 * tether_version — the library's version string, e.g. "0.1.0".
 *
 * Compare it with TETHER_VERSION_STRING (the header's version) to detect a
 * header/library mismatch.
 *
 * Parameters: None.
 * Returns: A static string.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: The string is static; do not free it.
 */
TETHER_API const char *tether_version(void);

/*
 * tether_version_number — the library's version as a number.
 *
 * The number is major * 10000 + minor * 100 + patch, as
 * TETHER_VERSION_NUMBER was when the library was built.
 *
 * Parameters: None.
 * Returns: The version number.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: Nothing is allocated.
 */
TETHER_API int tether_version_number(void);

/* ======================================================================
 * Time
 * ====================================================================== */

/* An absolute CLOCK_MONOTONIC instant in nanoseconds. */
typedef int64_t tether_time_t;

/* The deadline that never comes. */
#define TETHER_NEVER INT64_MAX

/*
 * tether_us — microseconds to a duration in nanoseconds.
 *
 * The conversion saturates: a value that would overflow gives INT64_MAX (or
 * INT64_MIN for a negative one). A static inline function.
 *
 * Parameters:
 *  us  the duration in microseconds.
 * Returns: The duration in nanoseconds.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe (a pure function).
 * Ownership: Nothing is allocated.
 */
static inline int64_t tether_us(int64_t us)
{
    if (us > INT64_MAX / 1000)
        return INT64_MAX;
    if (us < INT64_MIN / 1000)
        return INT64_MIN;
    return us * 1000;
}

/*
 * tether_ms — milliseconds to a duration in nanoseconds.
 *
 * The conversion saturates: a value that would overflow gives INT64_MAX (or
 * INT64_MIN for a negative one). A static inline function.
 *
 * Parameters:
 *  ms  the duration in milliseconds.
 * Returns: The duration in nanoseconds.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe (a pure function).
 * Ownership: Nothing is allocated.
 */
static inline int64_t tether_ms(int64_t ms)
{
    if (ms > INT64_MAX / 1000000)
        return INT64_MAX;
    if (ms < INT64_MIN / 1000000)
        return INT64_MIN;
    return ms * 1000000;
}

/*
 * tether_sec — seconds to a duration in nanoseconds.
 *
 * The conversion saturates: a value that would overflow gives INT64_MAX (or
 * INT64_MIN for a negative one). A static inline function.
 *
 * Parameters:
 *  s  the duration in seconds.
 * Returns: The duration in nanoseconds.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe (a pure function).
 * Ownership: Nothing is allocated.
 */
static inline int64_t tether_sec(int64_t s)
{
    if (s > INT64_MAX / 1000000000)
        return INT64_MAX;
    if (s < INT64_MIN / 1000000000)
        return INT64_MIN;
    return s * 1000000000;
}

/*
 * tether_now — the current CLOCK_MONOTONIC time in nanoseconds.
 *
 * Read through the vDSO (about 25 ns).
 *
 * Parameters: None.
 * Returns: The current instant.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe and async-signal-safe.
 * Ownership: Nothing is allocated.
 */
TETHER_API tether_time_t tether_now(void);

/*
 * tether_deadline_after — the instant a duration from now.
 *
 * The sum saturates: a duration that would overflow gives TETHER_NEVER, and
 * a negative one gives an instant in the past.
 *
 * Parameters:
 *  duration_ns  the duration in nanoseconds.
 * Returns: The absolute instant.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: Nothing is allocated.
 */
TETHER_API tether_time_t tether_deadline_after(int64_t duration_ns);

/* ======================================================================
 * Cancellation causes and scope outcomes
 * ====================================================================== */

/* Why a token was canceled. The first cause is kept; later ones are ignored. */
typedef enum tether_cause {
    TETHER_CAUSE_NONE = 0,          /* not canceled */
    TETHER_CAUSE_EXPLICIT,          /* tether_token_cancel / tether_scope_cancel */
    TETHER_CAUSE_DEADLINE,          /* this token's own deadline passed */
    TETHER_CAUSE_PARENT,            /* an ancestor was canceled (see root cause) */
    TETHER_CAUSE_SIBLING_FAILED,    /* fail-fast: a child of the scope failed */
    TETHER_CAUSE_SIBLING_SUCCEEDED, /* first-success: another child won */
    TETHER_CAUSE_SCOPE_FINISHED,    /* background child halted: foreground done */
    TETHER_CAUSE_HALTED,            /* tether_task_halt on this one child */
    TETHER_CAUSE_SIGNAL             /* tether_sigcancel_fire (signal handler) */
} tether_cause;

/*
 * tether_cause_name — a short name for a cancellation cause.
 *
 * The names are "none", "explicit", "deadline", "parent",
 * "sibling_failed", "sibling_succeeded", "scope_finished", "halted" and
 * "signal".
 *
 * Parameters:
 *  cause  the cause.
 * Returns: A static name, or "unknown" for a value outside the enum.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: The string is static; do not free it.
 */
TETHER_API const char *tether_cause_name(tether_cause cause);

/* How a scope ended. */
typedef enum tether_outcome {
    TETHER_OUTCOME_OK = 0,           /* every foreground child succeeded or was halted by
                                       * tether_task_halt (first-success: one won) */
    TETHER_OUTCOME_PARTIAL,          /* supervisor: some succeeded, some failed */
    TETHER_OUTCOME_FAILED,           /* a child failure decided the scope */
    TETHER_OUTCOME_CANCELED,         /* canceled from outside (explicit, parent's cancel, signal) */
    TETHER_OUTCOME_DEADLINE_EXCEEDED /* the scope's effective deadline passed: cause deadline
                                       * (its own) or parent (an ancestor's capped it) */
} tether_outcome;

/*
 * tether_outcome_name — a short name for a scope outcome.
 *
 * The names are "ok", "partial", "failed", "canceled" and
 * "deadline_exceeded".
 *
 * Parameters:
 *  outcome  the outcome.
 * Returns: A static name, or "unknown" for a value outside the enum.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: The string is static; do not free it.
 */
TETHER_API const char *tether_outcome_name(tether_outcome outcome);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_BASE_H */
