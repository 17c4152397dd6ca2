/*
 * bench_job.c — tether_job_run, the one call a pool worker makes per job:
 * its cost per job (an empty job, so only the wiring is timed) against the
 * same wiring written by hand (tether_token_new, tether_token_check, enter,
 * the call, leave, free) and against calling the job directly; with no
 * deadline and with a deadline of its own.
 */
#include "bench_common.h"

#include <stdio.h>

static long g_job_iters;
static tether_token *g_parent;

/* The job: nothing, so the figures are the wiring around it. */
__attribute__((noinline)) static int empty_job(void *arg)
{
    __asm__ volatile("" ::"r"(arg) : "memory");
    return 0;
}

/* The per-job deadline: far away, so no job is ever stopped. */
static tether_time_t job_deadline(bool with_deadline)
{
    return with_deadline ? tether_now() + tether_sec(3600) : TETHER_NEVER;
}

static double round_direct(void *ctx)
{
    (void)ctx;
    long acc = 0;
    tether_time_t t0 = tether_now();
    for (long i = 0; i < g_job_iters; i++)
        acc += empty_job(&acc);
    tether_time_t t1 = tether_now();
    if (acc)
        die("direct job failed");
    return (double)(t1 - t0) / (double)g_job_iters;
}

/* The wiring the pool examples had before tether_job_run. */
static double round_by_hand(void *ctx)
{
    bool with_deadline = ctx != NULL;
    tether_time_t t0 = tether_now();
    for (long i = 0; i < g_job_iters; i++) {
        tether_token *t;
        need_rc(tether_token_new(&t, g_parent, job_deadline(with_deadline)), "tether_token_new");
        if (tether_token_check(t) == 0) {
            need_rc(tether_token_enter(t), "tether_token_enter");
            int rc = empty_job(t);
            need_rc(tether_token_leave(t), "tether_token_leave");
            need_rc(rc, "job by hand");
        }
        need_rc(tether_token_free(t), "tether_token_free");
    }
    return (double)(tether_now() - t0) / (double)g_job_iters;
}

static double round_job_run(void *ctx)
{
    bool with_deadline = ctx != NULL;
    tether_time_t t0 = tether_now();
    for (long i = 0; i < g_job_iters; i++) {
        tether_job_result r;
        need_rc(tether_job_run(g_parent, job_deadline(with_deadline), empty_job, NULL, &r),
                "tether_job_run");
        if (r.outcome != TETHER_OUTCOME_OK)
            die("tether_job_run: outcome %s", tether_outcome_name(r.outcome));
    }
    return (double)(tether_now() - t0) / (double)g_job_iters;
}

void bench_job(const struct config *cfg)
{
    need_rc(tether_token_new(&g_parent, NULL, TETHER_NEVER), "tether_token_new");
    g_job_iters = cfg->job_iters;
    static const char *const names[2] = { "job", "job_deadline" };
    for (int d = 0; d < 2; d++) {
        void *ctx = d ? (void *)1 : NULL;
        struct variant v[3] = {
            { .fn = round_direct },
            { .fn = round_by_hand, .ctx = ctx },
            { .fn = round_job_run, .ctx = ctx },
        };
        interleave(names[d], v, 3, cfg->job_rounds, 1, cfg);
        char name[64];
        double direct = median(&v[0].s), hand = median(&v[1].s), run = median(&v[2].s);
        snprintf(name, sizeof name, "%s_run_ns", names[d]);
        report(name, run, "ns", 1);
        snprintf(name, sizeof name, "%s_by_hand_ns", names[d]);
        report(name, hand, "ns", 1);
        snprintf(name, sizeof name, "%s_direct_ns", names[d]);
        report(name, direct, "ns", 1);
        snprintf(name, sizeof name, "%s_run_vs_by_hand_ratio", names[d]);
        report(name, ratio(run, hand), "x", 3);
        for (int i = 0; i < 3; i++)
            samples_free(&v[i].s);
    }
    need_rc(tether_token_free(g_parent), "tether_token_free");
}
