/*
 * tether/retry.h — retry with backoff, cancellation- and deadline-aware.
 */
#ifndef TETHER_RETRY_H
#define TETHER_RETRY_H

#include <stdbool.h>
#include <stdint.h>

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ======================================================================
 * Retry with backoff
 *
 * tether_retry calls an attempt function until it succeeds, fails with an
 * error that is not worth retrying, runs out of attempts or of its time
 * budget, or the calling thread's current token is canceled or reaches its
 * deadline. Between attempts it sleeps for an exponentially growing delay
 * with jitter (the four strategies of the AWS Architecture Blog's
 * "Exponential Backoff And Jitter"). The backoff sleep is a cancellation
 * point of the current token, exactly like tether_sleep_until: a cancel
 * during it returns at once.
 *
 * The delay before retry n (n = 0 before the second attempt) starts from
 *   d(0) = initial_delay_ns,  d(n) = min(max_delay_ns, d(n-1) * multiplier)
 * (repeated double multiplication, truncated to whole nanoseconds), and the
 * jitter strategy turns it into the sleep s(n):
 *   NONE          s = d(n)
 *   FULL          s = random_between(0, d(n))
 *   EQUAL         s = d(n)/2 + random_between(0, d(n) - d(n)/2)
 *   DECORRELATED  s = min(max_delay_ns, random_between(initial_delay_ns, 3 * s(n-1)))
 *                 with s(-1) = initial_delay_ns (multiplier unused)
 * where random_between(lo, hi) = lo + x mod (hi - lo + 1), inclusive, and x
 * is the next output of a splitmix64 generator owned by the call, its state
 * starting at opts.seed (never rand()); NONE draws nothing. Integer division truncates; 3 * s saturates. With a fixed seed
 * the sleeps are the same on every run. An attempt may raise the next sleep
 * to a minimum of its own with tether_retry_after (a server's retry-after
 * hint); the hint does not feed back into the sequence above.
 *
 * Limits are checked before every attempt and before every sleep:
 *  - no attempt starts once the current token is canceled, or at or past its
 *    effective deadline or (after the first) the end of max_elapsed_ns;
 *  - a sleep that would end at or past the deadline or the end of the budget
 *    is not started: the call returns at once (ETIMEDOUT for the deadline,
 *    the last attempt's error for the budget; when both would be crossed,
 *    the earlier of the two decides).
 * tether_retry never cancels the token itself.
 *
 * Example (examples/retry_flaky.c runs this against a flaky local server):
 *
 *   static int fetch(void *arg)       // 0, or an errno such as ECONNREFUSED
 *   {
 *       ...connect, send, tether_read the reply...
 *       if (server_said_busy) {
 *           tether_retry_after(tether_ms(busy_ms));
 *           return EAGAIN;
 *       }
 *       return 0;
 *   }
 *
 *   // Under the current token, e.g. in a scope child with a 3 s deadline:
 *   tether_retry_opts o = { .initial_delay_ns = tether_ms(100),
 *                           .attempt_timeout_ns = tether_ms(300) };
 *   tether_retry_result r;
 *   int rc = tether_retry(fetch, &ctx, &o, &r);
 *   printf("%s after %u attempts: %s\n", tether_retry_stop_name(r.stop),
 *          r.attempts, rc ? strerror(rc) : "ok");
 * ====================================================================== */

/* Jitter strategies; see the formulas above. */
typedef enum tether_retry_jitter {
    TETHER_RETRY_JITTER_FULL = 0, /* the default */
    TETHER_RETRY_JITTER_NONE,
    TETHER_RETRY_JITTER_EQUAL,
    TETHER_RETRY_JITTER_DECORRELATED
} tether_retry_jitter;

/* Why tether_retry stopped. */
typedef enum tether_retry_stop {
    TETHER_RETRY_STOP_SUCCEEDED = 0, /* an attempt returned 0 */
    TETHER_RETRY_STOP_PERMANENT,     /* the classifier refused the error, or the
                                      * call could not run (EINVAL, ENOMEM) */
    TETHER_RETRY_STOP_EXHAUSTED,     /* max_attempts attempts failed */
    TETHER_RETRY_STOP_BUDGET,        /* max_elapsed_ns would be exceeded */
    TETHER_RETRY_STOP_CANCELED,      /* the current token was canceled */
    TETHER_RETRY_STOP_DEADLINE       /* the current token's deadline came, or
                                      * the next sleep would cross it */
} tether_retry_stop;

/*
 * tether_retry_stop_name — a short name for a retry stop reason.
 *
 * The names are "succeeded", "permanent", "exhausted", "budget",
 * "canceled" and "deadline".
 *
 * Parameters:
 *  stop  the stop reason.
 * Returns: A static name, or "unknown" for a value outside the enum.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: The string is static; do not free it.
 */
TETHER_API const char *tether_retry_stop_name(tether_retry_stop stop);

/*
 * The clock tether_retry uses for its own time keeping: the start of the
 * budget, deadline comparisons, and the backoff sleeps. Leave both pointers
 * NULL for the real one (tether_now, and a sleep that is a cancellation
 * point of the current token). A test sets both to run without real waiting:
 * the retry loop then never sleeps by itself.
 *  now:         the current instant, comparable with the current token's
 *               deadline (a fake usually starts at tether_now()).
 *  sleep_until: return 0 once `when` has been reached (a fake advances its
 *               time to `when`), or an error number to stop the retry:
 *               ETIMEDOUT stops it as a deadline, anything else as a cancel.
 *  ctx:         passed to both.
 * Per-attempt timeouts (attempt_timeout_ns) are token deadlines and always
 * run on the real clock.
 */
typedef struct tether_retry_clock {
    tether_time_t (*now)(void *ctx);
    int (*sleep_until)(void *ctx, tether_time_t when);
    void *ctx;
} tether_retry_clock;

/* What on_retry is told before each backoff sleep. */
typedef struct tether_retry_event {
    unsigned attempt;       /* the attempt that just failed, from 1 */
    int error;              /* its error */
    bool attempt_timed_out; /* its own attempt_timeout_ns fired */
    int64_t retry_after_ns; /* its tether_retry_after hint, 0 if none */
    int64_t delay_ns;       /* the sleep about to start (hint applied) */
    int64_t elapsed_ns;     /* since tether_retry was called */
} tether_retry_event;

/* Options for tether_retry. Zero-initialise, then set what you need. */
typedef struct tether_retry_opts {
    int64_t initial_delay_ns;   /* d(0); 0 = 100 ms (use 1 for "almost none") */
    int64_t max_delay_ns;       /* cap on d(n) and s(n); 0 = max(10 s, initial) */
    double multiplier;          /* growth of d(n), >= 1.0; 0 = 2.0 */
    tether_retry_jitter jitter; /* default TETHER_RETRY_JITTER_FULL */
    unsigned max_attempts;      /* attempts in all, first included; 0 = 5;
                                * TETHER_RETRY_UNLIMITED = no limit */
    int64_t max_elapsed_ns;     /* budget from the call's start; 0 = none */
    int64_t attempt_timeout_ns; /* each attempt runs under a child token of
                                 * the current one with this deadline; 0 = none */
    /* Whether an attempt's error is worth another attempt; NULL =
     * tether_retry_transient. Not consulted for 0, nor once the current
     * token is canceled or past its deadline (never retried). */
    bool (*retryable)(int error, void *ctx);
    /* Called before each backoff sleep (logging, metrics); may be NULL. It
     * may cancel the current token to stop: the sleep then returns at once.
     * Both hooks run in the calling thread, between attempts. */
    void (*on_retry)(const tether_retry_event *ev, void *ctx);
    void *ctx;                /* passed to retryable and on_retry */
    uint64_t seed;            /* the generator's seed; 0 = from a per-thread
                                * generator seeded by time and thread */
    tether_retry_clock clock; /* zero = the real clock */
} tether_retry_opts;

/* max_attempts: retry until success, a permanent error, the budget or the
 * token stops it. */
#define TETHER_RETRY_UNLIMITED (~0u)

/* What tether_retry reports. */
typedef struct tether_retry_result {
    int error;          /* tether_retry's return value */
    int last_error;     /* the last attempt's own return value; 0 if
                                * none ran. Differs from error when a cancel or
                                * deadline stopped the call after an attempt. */
    unsigned attempts;  /* attempts started */
    int64_t slept_ns;   /* total time in backoff sleeps (retry clock) */
    int64_t elapsed_ns; /* the whole call (retry clock) */
    tether_retry_stop stop;
} tether_retry_result;

/*
 * tether_retry — call an attempt function until it succeeds or a stop
 * condition is met, sleeping with backoff between attempts.
 *
 * The delays, the limits and the stop conditions are described at the top
 * of tether/retry.h (and in tether(7)); result->stop tells which condition
 * stopped the call. Calls nest (an attempt may itself retry).
 *
 * Parameters:
 *  attempt  returns 0 for success or a positive error number (a negative
 *           one is passed to the classifier as is). It runs in the calling
 *           thread with the current token, or a child of it when
 *           attempt_timeout_ns is set, as its current token, so tether's
 *           cancellable calls inside it stop with the retry. It must leave
 *           its token entries balanced and free any token or scope it
 *           derived from the child token (else the process aborts with a
 *           message saying so).
 *  arg      passed to attempt.
 *  opts     NULL for defaults (100 ms doubling to 10 s, full jitter, 5
 *           attempts, no budget, no per-attempt timeout, transient errors).
 *  result   if not NULL, receives what happened (always filled, on every
 *           return).
 * Returns: 0 when an attempt succeeded (even if a cancel arrived while it
 * ran: its effect stands), or an error number.
 * Errors:
 *  ECANCELED  the current token was canceled: before the first attempt,
 *             during an attempt (not retried, whatever the attempt
 *             returned) or during a sleep (returns at once).
 *  ETIMEDOUT  the current token's effective deadline passed, or the next
 *             sleep would end at or past it (returned without sleeping).
 *             An ETIMEDOUT from an attempt's own attempt_timeout_ns is an
 *             attempt error like any other (retryable by default).
 *  EINVAL     attempt is NULL; a negative delay, budget or timeout;
 *             max_delay_ns below initial_delay_ns; multiplier below 1.0 or
 *             not finite; jitter out of range; only one of clock.now and
 *             clock.sleep_until set. Nothing was attempted.
 *  ENOMEM     the per-attempt child token could not be created.
 *  otherwise  the last attempt's error: permanent (the classifier refused
 *             it), or retryable when max_attempts or max_elapsed_ns ran out.
 * Blocking: Blocks across attempts and sleeps. The backoff sleep is a
 * cancellation point of the current token (a signal handler interrupting it
 * does not end it; cancel from a handler with tether_sigcancel_fire).
 * Thread safety: Any number of threads may retry at once, sharing opts;
 * shared hooks must then be thread-safe.
 * Ownership: opts and result are the caller's and used only during the
 * call; arg stays the caller's.
 */
TETHER_API int tether_retry(int (*attempt)(void *arg), void *arg, const tether_retry_opts *opts,
                            tether_retry_result *result);

/*
 * tether_retry_after — from inside an attempt, set a minimum delay before
 * the next attempt.
 *
 * The next attempt starts no sooner than min_delay_ns after this one fails
 * (a server's retry-after hint). The next sleep becomes max(s(n), hint): a
 * hint above max_delay_ns is honoured; one that would cross the deadline or
 * the budget stops the retry at once, as any sleep would. Several calls in
 * one attempt keep the largest. Ignored if the attempt succeeds or fails
 * permanently. Applies to the innermost tether_retry running on the calling
 * thread.
 *
 * Parameters:
 *  min_delay_ns  the minimum delay in nanoseconds.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  min_delay_ns is negative.
 *  EPERM   the calling thread is not inside an attempt of tether_retry
 *          (another thread of the attempt, e.g. a scope child, cannot set
 *          it).
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe (thread-local).
 * Ownership: Nothing is allocated.
 */
TETHER_API int tether_retry_after(int64_t min_delay_ns);

/*
 * tether_retry_transient — the default retry classifier.
 *
 * True for the errors a later attempt may not see again: EAGAIN
 * (EWOULDBLOCK), EINTR, EBUSY, ETIMEDOUT, ECONNREFUSED, ECONNRESET,
 * ECONNABORTED, EPIPE, ENETDOWN, ENETUNREACH, ENETRESET, EHOSTDOWN,
 * EHOSTUNREACH, EADDRNOTAVAIL, ENOBUFS. Everything else is permanent,
 * notably ECANCELED, EIO (usually a failing device, not a passing
 * condition), ENOMEM, EINVAL and 0. ETIMEDOUT counts as transient here
 * because tether_retry never consults the classifier for a timeout of its
 * own token.
 *
 * Parameters:
 *  error  the attempt's error number.
 * Returns: Whether the error is worth another attempt.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: Nothing is allocated.
 */
TETHER_API bool tether_retry_transient(int error);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_RETRY_H */
