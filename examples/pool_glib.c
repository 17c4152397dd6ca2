/*
 * pool_glib — deadlines and cancellation for jobs of GLib's GThreadPool.
 *
 * GThreadPool knows nothing about tether: each job carries a token (a child
 * of one global token, with the job's own deadline), and the pool's
 * function skips a job whose token is already cancelled or expired, and
 * otherwise enters the token for the span of the job:
 *
 *   if (tether_token_check(job->token)) skip;
 *   tether_token_enter(job->token); run the job; tether_token_leave(job->token);
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
    tether_token *token;
    int64_t work_ns;
    enum result result;
};

/* pthread (not GMutex) so that ThreadSanitizer sees the hand-offs: the
 * results are read once every job has reported in under this mutex. */
static pthread_mutex_t stats_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stats_cv = PTHREAD_COND_INITIALIZER;
static int running, finished;

static void report_finished(void)
{
    pthread_mutex_lock(&stats_mu);
    finished++;
    pthread_cond_broadcast(&stats_cv);
    pthread_mutex_unlock(&stats_mu);
}

/* GThreadPool's function: skip, enter, run, leave. */
static void run_tjob(gpointer data, gpointer user_data)
{
    (void)user_data;
    struct tjob *t = data;
    /* GLib hands the job over through its own futex-based queue, which
     * ThreadSanitizer cannot see: take the stats lock once (the submitter
     * released it after filling the jobs in) to make the hand-off visible. */
    pthread_mutex_lock(&stats_mu);
    pthread_mutex_unlock(&stats_mu);
    if (tether_token_check(t->token)) {
        t->result = SKIPPED;
        report_finished();
        return;
    }
    tether_token_enter(t->token);
    pthread_mutex_lock(&stats_mu);
    running++;
    pthread_cond_broadcast(&stats_cv);
    pthread_mutex_unlock(&stats_mu);
    int r = tether_sleep_for(t->work_ns); /* the job: any cancellation point */
    t->result = r == 0 ? DONE : errno == ETIMEDOUT ? STOPPED_DEADLINE : STOPPED_CANCELED;
    tether_token_leave(t->token);
    report_finished();
}

static int failures;
static void expect(bool ok, const char *what)
{
    if (!ok) {
        printf("UNEXPECTED: %s\n", what);
        failures++;
    }
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
        tether_token_new(&jobs[i].token, root,
                         tether_deadline_after(slow ? tether_ms(300) : tether_sec(30)));
    }
    double ms = run_round(root, jobs, N1, WORKERS, false);
    count(jobs, N1, c);
    printf("round 1: %d jobs in %.0f ms: %d done, %d stopped by their deadline, "
           "%d skipped (it passed while queued)\n", N1, ms,
           c[DONE], c[STOPPED_DEADLINE], c[SKIPPED]);
    expect(c[DONE] == N1 - SLOW && c[STOPPED_DEADLINE] + c[SKIPPED] == SLOW &&
               c[STOPPED_DEADLINE] > 0,
           "round 1: every quick job done, every slow one stopped or skipped by its deadline");
    for (int i = 0; i < N1; i++)
        tether_token_free(jobs[i].token);
    free(jobs);

    jobs = calloc(N2, sizeof *jobs);
    for (int i = 0; i < N2; i++) {
        jobs[i].work_ns = tether_sec(30);
        tether_token_new(&jobs[i].token, root, tether_deadline_after(tether_sec(60)));
    }
    ms = run_round(root, jobs, N2, WORKERS, true);
    count(jobs, N2, c);
    printf("round 2: global cancel: %d running jobs stopped, %d queued jobs skipped, in %.1f ms\n",
           c[STOPPED_CANCELED], c[SKIPPED], ms);
    expect(c[STOPPED_CANCELED] == WORKERS && c[SKIPPED] == N2 - WORKERS,
           "round 2: the global cancel stops the running jobs and skips the rest");
    expect(ms < 5000, "round 2: the pool drained promptly after the cancel");
    for (int i = 0; i < N2; i++)
        tether_token_free(jobs[i].token);
    free(jobs);

    tether_token_free(root);
    printf("%s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
