/*
 * tether/job.h — jobs of a thread pool you already have: one call runs a
 * job in the calling worker under a fresh token with the job's own parent
 * and deadline, and reports how it ended.
 */
#ifndef TETHER_JOB_H
#define TETHER_JOB_H

#include <stdbool.h>

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What tether_job_run reports. */
typedef struct tether_job_result {
    /* ok: fn returned 0 and the token was not canceled; failed: fn returned
     * an error and the token was not canceled; canceled / deadline_exceeded:
     * the token was canceled before fn ran (fn skipped) or by the time it
     * returned, whatever fn returned (deadline_exceeded when the token's
     * error is ETIMEDOUT: its own deadline or an ancestor's). */
    tether_outcome outcome;
    int result;         /* fn's return value; 0 if fn did not run */
    int error;          /* failed: fn's error; canceled / deadline_exceeded:
                           * the token's error (tether_token_error); ok: 0 */
    tether_cause cause; /* the job token's cause (deadline: its own; parent:
                           * an ancestor's cancel or deadline); none if not canceled */
    bool ran;           /* fn was called (false: skipped, its token was dead) */
    bool late;          /* fn returned 0 after its token was canceled: its
                           * effect happened after the submitter gave up on it */
} tether_job_result;

/*
 * tether_job_run — run one job of a thread pool under its own token.
 *
 * The wiring a pool worker needs around each job, in one call: it creates a
 * token, a child of parent with the job's own deadline; skips the job if
 * that token is already canceled or past its deadline (the parent was
 * canceled, or the deadline passed while the job sat in the queue); else
 * enters the token, so fn's cancellation points (tether_read,
 * tether_sleep_for, ...) see it as their current token, calls fn(arg),
 * leaves the token again; classifies how the job ended into *out; frees the
 * token. Canceling parent (or any ancestor) stops every job running under
 * it at its next cancellation point and skips every job not started yet.
 * Inside fn, tether_current() is the job's token (to register a cancel
 * callback on it, or to open scopes under it). The calling thread's current
 * token, if any, is neither the job's parent nor affected, and is current
 * again when the call returns. fn must leave its token entries balanced and
 * free any token or scope it derived from the job's token, else the process
 * aborts with a message saying so (docs/misuse.md).
 *
 * Parameters:
 *  parent    the job's parent token (the submitter's, e.g. one token per
 *            pool or per request), or NULL for none (the process root
 *            when there is one: see <tether/core.h>).
 *  deadline  the job's own absolute deadline, or TETHER_NEVER; the job's
 *            effective deadline is the earlier of it and parent's.
 *  fn        the job: returns 0 for success or an error number.
 *  arg       passed to fn.
 *  out       if not NULL, receives how the job ended (see
 *            tether_job_result); written only when 0 is returned.
 * Returns: 0 when the job was run or skipped (see out), or an error number
 * (fn not called).
 * Errors:
 *  EINVAL  fn is NULL, or deadline is 0 or negative (0 is not "none" here:
 *          TETHER_NEVER is).
 *  ENOMEM  the token could not be created or entered.
 * Blocking: Blocks as long as fn does; not itself a cancellation point (a
 * dead token skips the job and is reported in out, not as an error).
 * Thread safety: Thread-safe: any number of workers at once, under one
 * parent or many; it affects only the calling thread's current token.
 * Ownership: The job's token lives only for the call; parent must outlive
 * it; arg stays the caller's.
 */
TETHER_API int tether_job_run(tether_token *parent, tether_time_t deadline, int (*fn)(void *arg),
                              void *arg, tether_job_result *out);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_JOB_H */
