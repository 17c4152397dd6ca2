/*
 * tether_job_run: the wiring around one job of a thread pool (token,
 * skip-if-dead, enter, run, leave, classify, free) in one call.
 */
#define _GNU_SOURCE
#include "current.h"

static const char JOB[] = "tether_job_run job";

/* How the job ended, from its token's state once fn returned (or was
 * skipped). A canceled token decides, whatever fn returned: the submitter
 * gave up on the job, and a 0 from fn then is a late success. */
static void classify(tether_token *t, tether_job_result *r)
{
    r->cause = tether_token_cause(t);
    if (r->cause != TETHER_CAUSE_NONE) {
        r->error = tether_token_error(t);
        r->outcome =
            r->error == ETIMEDOUT ? TETHER_OUTCOME_DEADLINE_EXCEEDED : TETHER_OUTCOME_CANCELED;
        r->late = r->ran && r->result == 0;
    } else if (r->result != 0) {
        r->outcome = TETHER_OUTCOME_FAILED;
        r->error = r->result;
    }
}

int tether_job_run(tether_token *parent, tether_time_t deadline, int (*fn)(void *arg), void *arg,
                   tether_job_result *out)
{
    if (!fn || deadline <= 0)
        return EINVAL;
    tether_token *t;
    int rc = tether_token_new(&t, parent, deadline);
    if (rc)
        return rc;
    tether_job_result r = { .outcome = TETHER_OUTCOME_OK, .cause = TETHER_CAUSE_NONE };
    /* Observing a passed deadline here cancels its owner: a job whose
     * deadline passed in the queue is skipped with cause deadline. */
    if (tether_token_check(t) == 0) {
        rc = tether_token_enter(t);
        if (rc) {
            tether_token_free(t);
            return rc;
        }
        r.ran = true;
        r.result = fn(arg);
        tether__leave_or_die(t, JOB, NULL);
    }
    classify(t, &r);
    tether__free_or_die(t, JOB, NULL);
    if (out)
        *out = r;
    return 0;
}
