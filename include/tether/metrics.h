/*
 * tether/metrics.h — lifecycle metrics of the process's scopes: a snapshot
 * as plain structs, and the Prometheus text exposition format (0.0.4).
 *
 * What is counted, per scope name (tether_scope_opts.name; every unnamed
 * scope shares the series whose name is "") and for the whole process:
 * scopes opened and live, children live and their peak, outcomes by kind,
 * cancellations by cause, the convergence time of canceled scopes as a
 * histogram, hostages reported, late successes and children left running
 * after join; for the process only: retries started after a cancel and
 * blocking calls stopped by cancellation.
 *
 * The registry of names is bounded: the first TETHER_METRICS_NAMES distinct
 * names get a series each, for the life of the process; scopes with any
 * later name share one overflow series (in Prometheus, label scope=
 * TETHER_METRICS_OVERFLOW_NAME, which is longer than any scope name can be,
 * so it never collides with one). A per-request name therefore costs no
 * memory beyond that table.
 *
 * Cost: opening a scope looks its name up without a lock (a lock is taken
 * only the first time a name is seen) and adds one to a counter; spawn and
 * a child's exit move two gauges (relaxed atomics, each on a cache line of
 * its own); everything else a scope counts is kept in the scope and folded
 * into its name's series once, at join. tether_metrics_set_enabled turns
 * counting off for scopes opened afterwards.
 *
 * Fork: the child starts from zero (its scopes, children and calls are its
 * own; what it inherited from the parent is not counted again), keeping the
 * names already registered.
 */
#ifndef TETHER_METRICS_H
#define TETHER_METRICS_H

#include <stddef.h>

#include "base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Distinct scope names with a series of their own. */
#define TETHER_METRICS_NAMES         128
/* The overflow series' name in the Prometheus output (and in
 * tether_metrics_series.scope): longer than TETHER_NAME_MAX - 1 bytes. */
#define TETHER_METRICS_OVERFLOW_NAME "(other names past the first 128)"
/* Finite buckets of the convergence histogram (100 us to 10 s). */
#define TETHER_METRICS_BUCKETS       16
/* Entries of tether_metrics_series.outcomes, indexed by tether_outcome. */
#define TETHER_METRICS_OUTCOMES      5
/* Entries of tether_metrics_series.cancellations, indexed by tether_cause
 * (entry TETHER_CAUSE_NONE stays 0). */
#define TETHER_METRICS_CAUSES        9

/* One series: a scope name's counts, or the whole process's. */
typedef struct tether_metrics_series {
    /* The scope name ("" for unnamed scopes), or TETHER_METRICS_OVERFLOW_NAME
     * for the overflow series (then `overflow` is true). */
    char scope[sizeof TETHER_METRICS_OVERFLOW_NAME];
    bool overflow;
    uint64_t scopes_opened; /* counter: tether_scope_open calls that succeeded */
    uint64_t scopes_live;   /* gauge: opened and not yet joined */
    int64_t children_live;  /* gauge: children spawned (slot reserved) and not yet exited */
    int64_t children_peak;  /* gauge: the highest children_live seen */
    /* Counters, one per joined scope, by tether_result.outcome. */
    uint64_t outcomes[TETHER_METRICS_OUTCOMES];
    /* Counters by cause: a joined scope whose tether_result.cause is not
     * none (the scope's cancellation, or scope_finished when only its
     * background was halted), plus one per tether_task_halt (halted). */
    uint64_t cancellations[TETHER_METRICS_CAUSES];
    /* Histogram of tether_result.convergence_ns over joined scopes that
     * were canceled (cause not none): convergence_le[i] counts those with
     * convergence <= tether_metrics_snapshot.bucket_le_ns[i] (cumulative,
     * as Prometheus buckets are); convergence_count counts all of them (the
     * +Inf bucket) and convergence_sum_ns adds their convergence up. */
    uint64_t convergence_le[TETHER_METRICS_BUCKETS];
    uint64_t convergence_count;
    uint64_t convergence_sum_ns;
    uint64_t hostages;       /* counter: children reported held hostage (hostage watch) */
    uint64_t late_successes; /* counter: tether_result.late_succeeded, summed */
    /* Counter: children join found still running when it returned. Zero by
     * construction (join waits for every child); a nonzero value is a bug. */
    uint64_t children_left_running;
} tether_metrics_series;

/* A snapshot of the process's metrics (tether_metrics_snapshot_take). */
typedef struct tether_metrics_snapshot {
    size_t count;                  /* entries in `series` */
    tether_metrics_series *series; /* registered names in order of first use, then the
                                     * overflow series if any scope used it */
    tether_metrics_series process; /* the whole process: every counter and scopes_live
                                     * summed over the series; children_live and
                                     * children_peak are the process's own gauges;
                                     * scope is "" */
    uint64_t retries_after_cancel; /* tether_retry attempts started under a token already
                                     * canceled: zero by construction (retry checks the
                                     * token first) but for a cancel landing between
                                     * that check and the attempt's start */
    /* Blocking calls stopped by cancellation: a drop-in (tether_read,
     * tether_sleep_for, tether_cond_wait, tether_sem_wait, tether_poll, the
     * process waits, tether_getaddrinfo, ...) that blocked and then returned
     * ECANCELED, or ETIMEDOUT at its token's deadline. Counted where the
     * wait ends (a call refused at its entry because the token was already
     * canceled is not counted: it never blocked). Calls intercepted by
     * libtether_interpose.so go through the same drop-ins, so they are
     * counted too. */
    uint64_t calls_stopped_canceled;
    uint64_t calls_stopped_deadline;
    int64_t bucket_le_ns[TETHER_METRICS_BUCKETS]; /* the histogram's bounds, ascending */
    bool enabled;                                 /* tether_metrics_enabled() when taken */
} tether_metrics_snapshot;

/*
 * tether_metrics_set_enabled — turn the counting of new scopes on or off.
 *
 * Counting is on when the process starts. The switch applies to scopes
 * opened after the call: a scope counted at its open is counted to its join
 * (its children, its outcome), so the gauges stay exact whichever way the
 * switch moves. Off, opening a scope does no lookup, and spawn, exit and
 * join touch no shared counter. The process-wide counters (retries after a
 * cancel, blocking calls stopped) follow the switch at each event.
 *
 * Parameters:
 *  on  true to count, false to stop counting.
 * Returns: Whether counting was on before the call.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe and async-signal-safe.
 * Ownership: Nothing is allocated.
 */
TETHER_API bool tether_metrics_set_enabled(bool on);

/*
 * tether_metrics_enabled — whether new scopes are counted.
 *
 * Parameters: None.
 * Returns: true if counting is on (the default), false after
 * tether_metrics_set_enabled(false).
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe and async-signal-safe.
 * Ownership: Nothing is allocated.
 */
TETHER_API bool tether_metrics_enabled(void);

/*
 * tether_metrics_snapshot_take — copy the process's metrics now.
 *
 * Fills *snap with one series per registered name and the process-wide
 * values. Each series is consistent in itself: the counts folded at join
 * (outcomes, cancellations, the histogram, hostages, late successes,
 * children left running) are read together, so a scope's join is in all of
 * them or in none, and scopes_opened - scopes_live equals the sum of the
 * outcomes. The gauges children_live and children_peak are read on their
 * own (each atomically). Across series nothing is atomic: a scope joined
 * while the snapshot is taken may be in a later series and not an earlier
 * one, and the process-wide values are the sums of what was read.
 *
 * Parameters:
 *  snap  receives the snapshot; release it with
 *        tether_metrics_snapshot_release.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  snap is NULL.
 *  ENOMEM  out of memory (*snap is then empty: count 0, series NULL).
 * Blocking: Never blocks (it takes each series' lock briefly); not a
 * cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: snap is the caller's; the series array it receives is released
 * by tether_metrics_snapshot_release.
 */
TETHER_API int tether_metrics_snapshot_take(tether_metrics_snapshot *snap);

/*
 * tether_metrics_snapshot_release — free what a snapshot holds.
 *
 * Frees the series array and leaves *snap empty (count 0, series NULL), so
 * releasing twice is harmless. A NULL snap is ignored.
 *
 * Parameters:
 *  snap  a snapshot filled by tether_metrics_snapshot_take, or NULL.
 * Returns: Nothing.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Not for one snapshot from two threads at once.
 * Ownership: The struct itself stays the caller's.
 */
TETHER_API void tether_metrics_snapshot_release(tether_metrics_snapshot *snap);

/*
 * tether_metrics_format — a snapshot in the Prometheus text format.
 *
 * Writes snap as the Prometheus text exposition format 0.0.4 into buf, with
 * a terminating NUL, as snprintf does: if size is too small (but not 0),
 * buf receives the text's first size - 1 bytes and a NUL, and *length
 * tells the size needed. Metric names start with
 * tether_, counters end in _total, every family has its HELP and TYPE
 * lines, and the scope label escapes backslash, double quote and newline
 * (as \\, \" and \n). The families:
 *   tether_scopes_opened_total, tether_scopes_live,
 *   tether_children_live, tether_children_peak,
 *   tether_scope_outcomes_total{outcome}, tether_scope_cancellations_total{cause},
 *   tether_scope_convergence_seconds (histogram), tether_hostages_total,
 *   tether_late_successes_total, tether_children_left_running_total
 *     — each with label scope, one series per name;
 *   tether_process_children_live, tether_process_children_peak,
 *   tether_retries_after_cancel_total,
 *   tether_blocking_calls_stopped_total{reason="canceled"|"deadline"},
 *   tether_metrics_enabled — the process's own.
 * The process-wide value of a per-scope counter is the sum over its scope
 * label.
 *
 * Parameters:
 *  snap    a snapshot from tether_metrics_snapshot_take.
 *  buf     where the text goes; may be NULL when size is 0.
 *  size    the size of buf in bytes.
 *  length  receives the text's length without the NUL; may be NULL.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  snap is NULL, or buf is NULL and size is not 0.
 *  ERANGE  size is not more than the length: call again with *length + 1.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe (it reads snap only).
 * Ownership: snap and buf stay the caller's.
 */
TETHER_API int tether_metrics_format(const tether_metrics_snapshot *snap, char *buf, size_t size,
                                     size_t *length);

/*
 * tether_metrics_write_prometheus — write the process's metrics to a descriptor.
 *
 * Takes a snapshot now and writes it in the format of tether_metrics_format
 * to fd with tether_write_all, so the write is a cancellation point under
 * the calling thread's current token (a scrape handler inside a request's
 * scope stops at the request's deadline). Without a current token it is a
 * plain write that retries interrupted and partial writes.
 *
 * Parameters:
 *  fd  an open descriptor, open for writing; it is not closed.
 * Returns: 0, or an error number.
 * Errors:
 *  EBADF      fd is not an open descriptor, or not open for writing.
 *  ENOMEM     out of memory.
 *  ECANCELED  the current token was canceled (part of the text may have
 *             been written).
 *  ETIMEDOUT  the current token's deadline passed (likewise).
 *  otherwise  the error write(2) reported (EPIPE, EAGAIN on a full
 *             non-blocking descriptor, ...); part of the text may have been
 *             written.
 * Blocking: Blocks while writing to fd; a cancellation point.
 * Thread safety: Thread-safe; two writes to one descriptor may interleave.
 * Ownership: fd stays the caller's.
 */
TETHER_API int tether_metrics_write_prometheus(int fd);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_METRICS_H */
