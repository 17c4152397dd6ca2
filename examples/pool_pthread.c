/*
 * pool_pthread — deadlines and cancellation for jobs of a thread pool you
 * already have.
 *
 * The pool below is a plain pthread work queue that knows nothing about
 * tether. Each job carries its parent token (one global token here) and its
 * own deadline; the worker runs it with one call:
 *
 *   tether_job_run(job->parent, job->deadline, job->fn, job->arg, &result);
 *
 * which creates the job's token (a child of the parent with the job's
 * deadline), skips the job if that token is already canceled or expired,
 * otherwise enters it around the job (so the job's cancellation points stop
 * at its deadline or at the parent's cancel), and reports how it ended.
 *
 * Three rounds: many quick jobs, a few of which would overrun their per-job
 * deadline (they are stopped at it), jobs whose deadline passed while queued (skipped without
 * running), then one global cancel that stops the running jobs and skips
 * the queued ones. It checks its own run and exits 1 on anything unexpected.
 */
#define _GNU_SOURCE
#include <tether.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

/* ------------------------------------------------------------ the pool (tether-free) */

struct job {
    void (*run)(struct job *job); /* the pool's only view of a job */
    struct job *next;
};

struct pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *head, **tail;
    bool stopping;
    int nworkers;
    pthread_t *workers;
};

static void *worker_main(void *arg)
{
    struct pool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        if (!p->head)
            break;
        struct job *j = p->head;
        p->head = j->next;
        if (!p->head)
            p->tail = &p->head;
        pthread_mutex_unlock(&p->mu);
        j->run(j);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static int pool_start(struct pool *p, int nworkers)
{
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->head = NULL;
    p->tail = &p->head;
    p->stopping = false;
    p->nworkers = nworkers;
    p->workers = calloc((size_t)nworkers, sizeof *p->workers);
    if (!p->workers)
        return -1;
    for (int i = 0; i < nworkers; i++)
        if (pthread_create(&p->workers[i], NULL, worker_main, p))
            return -1;
    return 0;
}

static void pool_submit(struct pool *p, struct job *j)
{
    j->next = NULL;
    pthread_mutex_lock(&p->mu);
    *p->tail = j;
    p->tail = &j->next;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* Drain the queue, then join the workers. */
static void pool_stop(struct pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nworkers; i++)
        pthread_join(p->workers[i], NULL);
    free(p->workers);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
}

/* ------------------------------------------------------------ jobs with deadlines */

enum result { NOT_RUN, DONE, SKIPPED, STOPPED_CANCELED, STOPPED_DEADLINE };

struct tjob {
    struct job job; /* first: the pool hands it back */
    tether_token *parent;
    tether_time_t deadline;
    int64_t work_ns; /* how long the job's work takes (a cancellable sleep) */
    enum result result;
    tether_cause cause; /* why its token was canceled, if it was */
};

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

/* The wrapper a pool worker runs: one call, then the bookkeeping. */
static void run_tjob(struct job *j)
{
    struct tjob *t = (struct tjob *)j;
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

static struct tjob *make_jobs(int n)
{
    struct tjob *jobs = calloc((size_t)n, sizeof *jobs);
    if (!jobs) {
        perror("calloc");
        exit(1);
    }
    for (int i = 0; i < n; i++)
        jobs[i].job.run = run_tjob;
    return jobs;
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

int main(void)
{
    enum { WORKERS = 4, SLOW = 4, N1 = 200, N2 = 20, N3 = 100 };
    tether_token *root; /* canceling it stops every job */
    if (tether_token_new(&root, NULL, TETHER_NEVER)) {
        perror("tether_token_new");
        return 1;
    }
    struct pool pool;
    if (pool_start(&pool, WORKERS)) {
        perror("pool_start");
        return 1;
    }
    int c[5];

    /* 1. Per-job deadlines: the first SLOW jobs would take 10 s but have 300 ms. */
    tether_time_t t0 = tether_now();
    struct tjob *jobs = make_jobs(N1);
    for (int i = 0; i < N1; i++) {
        bool slow = i < SLOW; /* first in the queue: picked at once */
        jobs[i].work_ns = slow ? tether_sec(10) : tether_us(200);
        jobs[i].parent = root;
        jobs[i].deadline = tether_deadline_after(slow ? tether_ms(300) : tether_sec(30));
    }
    for (int i = 0; i < N1; i++)
        pool_submit(&pool, &jobs[i].job);
    pthread_mutex_lock(&stats_mu);
    while (finished < N1)
        pthread_cond_wait(&stats_cv, &stats_mu);
    finished = 0;
    pthread_mutex_unlock(&stats_mu);
    count(jobs, N1, c);
    printf("round 1: %d jobs in %.0f ms: %d done, %d stopped by their deadline, "
           "%d skipped (it passed while queued)\n",
           N1, (double)(tether_now() - t0) / 1e6, c[DONE], c[STOPPED_DEADLINE], c[SKIPPED]);
    expect(c[DONE] == N1 - SLOW && c[STOPPED_DEADLINE] + c[SKIPPED] == SLOW &&
               c[STOPPED_DEADLINE] > 0,
           "round 1: every quick job done, every slow one stopped or skipped by its deadline");
    expect(wrong_cause(jobs, N1, STOPPED_DEADLINE, TETHER_CAUSE_DEADLINE) == 0 &&
               wrong_cause(jobs, N1, SKIPPED, TETHER_CAUSE_DEADLINE) == 0,
           "round 1: the slow jobs' tokens were canceled by their own deadline");
    free(jobs);

    /* 2. Deadlines that pass while the job waits in the queue: skipped. The
     *    workers are kept busy first by jobs that take 50 ms. */
    jobs = make_jobs(N2);
    for (int i = 0; i < N2; i++) {
        bool blocker = i < WORKERS;
        jobs[i].work_ns = blocker ? tether_ms(50) : tether_sec(10);
        jobs[i].parent = root;
        jobs[i].deadline = tether_deadline_after(blocker ? tether_sec(30) : tether_ms(10));
    }
    for (int i = 0; i < N2; i++)
        pool_submit(&pool, &jobs[i].job);
    pthread_mutex_lock(&stats_mu);
    while (finished < N2)
        pthread_cond_wait(&stats_cv, &stats_mu);
    finished = 0;
    pthread_mutex_unlock(&stats_mu);
    count(jobs, N2, c);
    printf("round 2: %d done, %d skipped (deadline passed in the queue)\n", c[DONE], c[SKIPPED]);
    expect(c[DONE] == WORKERS && c[SKIPPED] == N2 - WORKERS,
           "round 2: jobs expired in the queue are skipped");
    free(jobs);

    /* 3. A global cancel: N3 long jobs, canceled once the workers are busy. */
    jobs = make_jobs(N3);
    for (int i = 0; i < N3; i++) {
        jobs[i].work_ns = tether_sec(30);
        jobs[i].parent = root;
        jobs[i].deadline = tether_deadline_after(tether_sec(60));
    }
    for (int i = 0; i < N3; i++)
        pool_submit(&pool, &jobs[i].job);
    pthread_mutex_lock(&stats_mu);
    while (running < WORKERS)
        pthread_cond_wait(&stats_cv, &stats_mu);
    pthread_mutex_unlock(&stats_mu);
    tether_time_t cancel_at = tether_now();
    tether_token_cancel(root, 0);
    pthread_mutex_lock(&stats_mu);
    while (finished < N3)
        pthread_cond_wait(&stats_cv, &stats_mu);
    pthread_mutex_unlock(&stats_mu);
    double ms = (double)(tether_now() - cancel_at) / 1e6;
    count(jobs, N3, c);
    printf("round 3: global cancel: %d running jobs stopped, %d queued jobs skipped, in %.1f ms\n",
           c[STOPPED_CANCELED], c[SKIPPED], ms);
    expect(c[STOPPED_CANCELED] == WORKERS && c[SKIPPED] == N3 - WORKERS,
           "round 3: the global cancel stops the running jobs and skips the rest");
    expect(ms < 5000, "round 3: the pool drained promptly after the cancel");
    expect(wrong_cause(jobs, N3, STOPPED_CANCELED, TETHER_CAUSE_PARENT) == 0 &&
               wrong_cause(jobs, N3, SKIPPED, TETHER_CAUSE_PARENT) == 0,
           "round 3: the jobs' tokens were canceled through their parent");
    free(jobs);

    pool_stop(&pool);
    expect(run_errors == 0, "tether_job_run refused a job");
    tether_token_free(root);
    printf("%s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
