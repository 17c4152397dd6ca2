/*
 * pool_glib — deadlines and cancellation for jobs of GLib's GThreadPool.
 *
 * GThreadPool knows nothing about tether: each job carries its parent token
 * (one global token here) and its own deadline, and the pool's function
 * runs it with one call:
 *
 *   tether_job_run(job->parent, job->deadline, work, job, &result);
 *
 * which skips a job whose token is already canceled or expired, and
 * otherwise runs it under that token, so its cancellation points stop at
 * the job's deadline or at the parent's cancel.
 *
 * Two rounds: many quick jobs, a few of which would overrun their per-job
 * deadline (they are stopped at it), then one global cancel that stops the running jobs and skips
 * the queued ones. It checks its own run and exits 1 on anything unexpected.
 */
#define _GNU_SOURCE
#include <tether.h>

#include <glib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

enum result { NOT_RUN, DONE, SKIPPED, STOPPED_CANCELED, STOPPED_DEADLINE };

struct tjob {
    tether_token *parent;
    tether_time_t deadline;
    int64_t work_ns;
    enum result result;
    tether_cause cause;
};

/* pthread (not GMutex) so that ThreadSanitizer sees the hand-offs: the
 * results are read once every job has reported in under this mutex. */
static pthread_mutex_t stats_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stats_cv = PTHREAD_COND_INITIALIZER;
static int running, finished, run_errors;

static void count_running(int delta)
{
    pthread_mutex_lock(&stats_mu);
    running += delta;
    pthread_cond_broadcast(&stats_cv);
    pthread_mutex_unlock(&stats_mu);
}

/* The job itself: any tether cancellation point will do. */
static int work(void *arg)
{
    struct tjob *t = arg;
    count_running(1);
    int r = tether_sleep_for(t->work_ns) < 0 ? errno : 0;
    count_running(-1);
    return r;
}

/* GThreadPool's function: one call, then the bookkeeping. */
static void run_tjob(gpointer data, gpointer user_data)
{
    (void)user_data;
    struct tjob *t = data;
    /* GLib hands the job over through its own futex-based queue, which
     * ThreadSanitizer cannot see: take the stats lock once (the submitter
     * released it after filling the jobs in) to make the hand-off visible. */
    pthread_mutex_lock(&stats_mu);
    pthread_mutex_unlock(&stats_mu);
    tether_job_result r;
    int rc = tether_job_run(t->parent, t->deadline, work, t, &r);
    pthread_mutex_lock(&stats_mu);
    if (rc) {
        run_errors++;
    } else {
        t->cause = r.cause;
        t->result = !r.ran                                          ? SKIPPED
                    : r.outcome == TETHER_OUTCOME_OK                ? DONE
                    : r.outcome == TETHER_OUTCOME_DEADLINE_EXCEEDED ? STOPPED_DEADLINE
                                                                    : STOPPED_CANCELED;
    }
    finished++;
    pthread_cond_broadcast(&stats_cv);
    pthread_mutex_unlock(&stats_mu);
}

static int failures;
static void expect(bool ok, const char *what)
{
    if (!ok) {
        printf("UNEXPECTED: %s\n", what);
        failures++;
    }
}

/* How many of the jobs with result `res` have a cause other than `cause`. */
static int wrong_cause(const struct tjob *jobs, int n, enum result res, tether_cause cause)
{
    int wrong = 0;
    for (int i = 0; i < n; i++)
        wrong += jobs[i].result == res && jobs[i].cause != cause;
    return wrong;
}

static void count(const struct tjob *jobs, int n, int out[5])
{
    for (int i = 0; i < 5; i++)
        out[i] = 0;
    for (int i = 0; i < n; i++)
        out[jobs[i].result]++;
}

/* Run n jobs on a fresh pool of `workers` threads; with cancel_when_busy,
 * cancel root once every worker runs a job. Returns when all are through. */
static double run_round(tether_token *root, struct tjob *jobs, int n, int workers,
                        bool cancel_when_busy)
{
    GError *err = NULL;
    GThreadPool *pool = g_thread_pool_new(run_tjob, NULL, workers, TRUE, &err);
    if (!pool) {
        printf("UNEXPECTED: g_thread_pool_new: %s\n", err ? err->message : "?");
        exit(1);
    }
    pthread_mutex_lock(&stats_mu);
    running = finished = 0;
    pthread_mutex_unlock(&stats_mu);
    for (int i = 0; i < n; i++)
        g_thread_pool_push(pool, &jobs[i], NULL);
    tether_time_t cancel_at = tether_now();
    if (cancel_when_busy) {
        pthread_mutex_lock(&stats_mu);
        while (running < workers)
            pthread_cond_wait(&stats_cv, &stats_mu);
        pthread_mutex_unlock(&stats_mu);
        cancel_at = tether_now();
        tether_token_cancel(root, 0);
    }
    pthread_mutex_lock(&stats_mu);
    while (finished < n)
        pthread_cond_wait(&stats_cv, &stats_mu);
    pthread_mutex_unlock(&stats_mu);
    g_thread_pool_free(pool, FALSE, TRUE);
    return (double)(tether_now() - cancel_at) / 1e6;
}

int main(void)
{
    enum { WORKERS = 4, SLOW = 4, N1 = 200, N2 = 100 };
    tether_token *root;
    if (tether_token_new(&root, NULL, TETHER_NEVER)) {
        perror("tether_token_new");
        return 1;
    }
    int c[5];

    struct tjob *jobs = calloc(N1, sizeof *jobs);
    for (int i = 0; i < N1; i++) {
        bool slow = i < SLOW; /* first in the queue: picked at once */
        jobs[i].work_ns = slow ? tether_sec(10) : tether_us(200);
        jobs[i].parent = root;
        jobs[i].deadline = tether_deadline_after(slow ? tether_ms(300) : tether_sec(30));
    }
    double ms = run_round(root, jobs, N1, WORKERS, false);
    count(jobs, N1, c);
    printf("round 1: %d jobs in %.0f ms: %d done, %d stopped by their deadline, "
           "%d skipped (it passed while queued)\n",
           N1, ms, c[DONE], c[STOPPED_DEADLINE], c[SKIPPED]);
    expect(c[DONE] == N1 - SLOW && c[STOPPED_DEADLINE] + c[SKIPPED] == SLOW &&
               c[STOPPED_DEADLINE] > 0,
           "round 1: every quick job done, every slow one stopped or skipped by its deadline");
    expect(wrong_cause(jobs, N1, STOPPED_DEADLINE, TETHER_CAUSE_DEADLINE) == 0,
           "round 1: the slow jobs' tokens were canceled by their own deadline");
    free(jobs);

    jobs = calloc(N2, sizeof *jobs);
    for (int i = 0; i < N2; i++) {
        jobs[i].work_ns = tether_sec(30);
        jobs[i].parent = root;
        jobs[i].deadline = tether_deadline_after(tether_sec(60));
    }
    ms = run_round(root, jobs, N2, WORKERS, true);
    count(jobs, N2, c);
    printf("round 2: global cancel: %d running jobs stopped, %d queued jobs skipped, in %.1f ms\n",
           c[STOPPED_CANCELED], c[SKIPPED], ms);
    expect(c[STOPPED_CANCELED] == WORKERS && c[SKIPPED] == N2 - WORKERS,
           "round 2: the global cancel stops the running jobs and skips the rest");
    expect(ms < 5000, "round 2: the pool drained promptly after the cancel");
    expect(wrong_cause(jobs, N2, STOPPED_CANCELED, TETHER_CAUSE_PARENT) == 0 &&
               wrong_cause(jobs, N2, SKIPPED, TETHER_CAUSE_PARENT) == 0,
           "round 2: the jobs' tokens were canceled through their parent");
    expect(run_errors == 0, "tether_job_run refused a job");
    free(jobs);

    tether_token_free(root);
    printf("%s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
