/*
 * bench_scale.c — many small-stack sleepers, each side in a fresh process.
 *   scale   10,000 children with 64 KiB stacks asleep in one scope against
 *           10,000 raw threads in poll on one eventfd: time to start all,
 *           time from cancel until all are joined, resident memory growth
 *           once all sleep, fds opened. Raw and tether runs alternate
 *           (raw, tether, tether, raw, ...) and each figure is the median
 *           of its side's runs.
 *   growth  the same cancel convergence (cancel until join returns) with
 *           10, 100 and 1000 children, in fresh processes, in the same
 *           rounds as the 10,000-child runs, interleaved over sizes and
 *           sides; with the 10,000-child runs, the per-child cost at each
 *           size (median convergence time / children) and
 *           cancel_fanout_growth, the per-child cost at 10,000 over the one
 *           at 100 (target <= 1.20). The raw side (threads in poll on one
 *           eventfd) gives cancel_fanout_raw_growth, what the kernel and
 *           glibc alone cost as the count grows, and
 *           cancel_fanout_growth_vs_raw tether's growth over the raw one.
 */
#include "bench_common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct scale_result {
    double create_ns, cancel_ns, rss_bytes;
    int fds;
};

static long rss_bytes(void)
{
    char buf[256];
    long size, resident;
    if (read_small_file("/proc/self/statm", buf, sizeof buf) < 0 ||
        sscanf(buf, "%ld %ld", &size, &resident) != 2)
        die("/proc/self/statm: unreadable");
    return resident * sysconf(_SC_PAGESIZE);
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        die("/proc/self/fd: %s", strerror(errno));
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static void scale_raw(int n, struct slot *slots, struct scale_result *out)
{
    pthread_t *threads = calloc((size_t)n, sizeof *threads);
    if (!threads)
        die("out of memory");
    pthread_attr_t attr;
    need_rc(pthread_attr_init(&attr), "pthread_attr_init");
    need_rc(pthread_attr_setstacksize(&attr, SMALL_STACK), "pthread_attr_setstacksize");
    long rss0 = rss_bytes();
    int fds0 = count_fds();
    atomic_store(&g_ready, 0);

    tether_time_t t0 = tether_now();
    for (int i = 0; i < n; i++)
        need_rc(pthread_create(&threads[i], &attr, raw_poll_efd, &slots[i]), "pthread_create");
    tether_time_t t1 = tether_now();

    wait_all_blocked(slots, n, IN_POLL);
    long rss1 = rss_bytes();
    int fds1 = count_fds();

    tether_time_t t2 = tether_now();
    fire_efd();
    for (int i = 0; i < n; i++)
        need_rc(pthread_join(threads[i], NULL), "pthread_join");
    tether_time_t t3 = tether_now();
    reset_efd();

    pthread_attr_destroy(&attr);
    free(threads);
    *out = (struct scale_result){ .create_ns = (double)(t1 - t0),
                                  .cancel_ns = (double)(t3 - t2),
                                  .rss_bytes = (double)(rss1 - rss0),
                                  .fds = fds1 - fds0 };
}

static void scale_tether(int n, struct slot *slots, struct scale_result *out)
{
    const tether_spawn_opts opts = { .stack_size = SMALL_STACK };
    tether_scope *s;
    tether_result r;
    long rss0 = rss_bytes();
    int fds0 = count_fds();
    atomic_store(&g_ready, 0);

    tether_time_t t0 = tether_now();
    need_rc(tether_scope_open(&s, NULL), "tether_scope_open");
    for (int i = 0; i < n; i++)
        need_rc(tether_spawn(s, child_sleep_until_canceled, &slots[i], &opts, NULL),
                "tether_spawn");
    tether_time_t t1 = tether_now();

    wait_all_blocked(slots, n, IN_FUTEX);
    long rss1 = rss_bytes();
    int fds1 = count_fds();

    tether_time_t t2 = tether_now();
    need_rc(tether_scope_cancel(s), "tether_scope_cancel");
    need_rc(tether_scope_join(s, &r), "tether_scope_join");
    tether_time_t t3 = tether_now();
    need_rc(tether_scope_free(s), "tether_scope_free");
    need_all_canceled(&r, (unsigned)n, "scale");

    *out = (struct scale_result){ .create_ns = (double)(t1 - t0),
                                  .cancel_ns = (double)(t3 - t2),
                                  .rss_bytes = (double)(rss1 - rss0),
                                  .fds = fds1 - fds0 };
}

/* One side of the scale figure in a child process, so that each side starts
 * from the same memory state (no stacks cached by glibc from the other
 * side's threads) and its fd count is its own. Called while this process is
 * single-threaded. */
static void scale_run(bool tether, int n, struct scale_result *out)
{
    int p[2];
    need_ok(pipe2(p, O_CLOEXEC) == 0, "pipe2");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    need_ok(pid >= 0, "fork");
    if (pid == 0) {
        close(p[0]);
        struct slot *slots = calloc((size_t)n, sizeof *slots);
        if (!slots)
            die("out of memory");
        struct scale_result r;
        if (tether)
            scale_tether(n, slots, &r);
        else
            scale_raw(n, slots, &r);
        _exit(write(p[1], &r, sizeof r) == (ssize_t)sizeof r ? 0 : 1);
    }
    close(p[1]);
    ssize_t got = read(p[0], out, sizeof *out);
    close(p[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        need_ok(errno == EINTR, "waitpid");
    if (got != (ssize_t)sizeof *out || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("scale run (%s, %d threads) failed", tether ? "tether" : "raw", n);
}

/* The sizes of the growth series below the scale section's own count. */
static const int growth_sizes[] = { 10, 100, 1000 };
enum { NGROWTH = sizeof growth_sizes / sizeof growth_sizes[0], MAX_SIZES = NGROWTH + 1 };

/* The sizes below 1000 take a few milliseconds a run and vary most: each
 * round runs them this many times per side. */
enum { GROWTH_SMALL_REPS = 8 };

enum { RAW = 0, TETHER = 1 };

/* Everything the section measures. Absolute figures are medians over all
 * runs of a side; ratios are medians over rounds of the ratio within a round
 * (tether's median over the raw side's in that round), so that a change in
 * the machine's load between rounds moves both sides of a ratio alike. */
struct scale_series {
    int nsizes, at100;
    int sizes[MAX_SIZES];              /* ascending; the last is cfg->scale_children */
    samples cancel[MAX_SIZES][2];      /* [size][side]: cancel until joined, ns */
    samples create[2], rss[2], fds[2]; /* the largest size only */
    samples cancel_ratio[MAX_SIZES];   /* per round */
    samples create_ratio;              /* per round, the largest size */
    samples growth[2];                 /* per round, per side */
    samples growth_vs_raw;             /* per round: tether's growth over raw's */
};

static void series_free(struct scale_series *ss)
{
    for (int i = 0; i < ss->nsizes; i++) {
        for (int side = 0; side < 2; side++)
            samples_free(&ss->cancel[i][side]);
        samples_free(&ss->cancel_ratio[i]);
    }
    for (int side = 0; side < 2; side++) {
        samples_free(&ss->create[side]);
        samples_free(&ss->rss[side]);
        samples_free(&ss->fds[side]);
        samples_free(&ss->growth[side]);
    }
    samples_free(&ss->create_ratio);
    samples_free(&ss->growth_vs_raw);
}

/* One round: every size on both sides, each run in a fresh process. The
 * first size rotates from round to round and the side that goes first
 * alternates, so that no figure always runs just after the same other. */
static void scale_round(struct scale_series *ss, int round)
{
    samples cancel[MAX_SIZES][2] = { { { 0 } } };
    samples create[2] = { { 0 } };
    const int top = ss->nsizes - 1;
    for (int k = 0; k < ss->nsizes; k++) {
        int i = (k + round) % ss->nsizes;
        int reps = i == top || ss->sizes[i] >= 1000 ? 1 : GROWTH_SMALL_REPS;
        for (int rep = 0; rep < reps; rep++) {
            for (int j = 0; j < 2; j++) {
                int side = (j + round + rep) % 2;
                struct scale_result r;
                scale_run(side == TETHER, ss->sizes[i], &r);
                samples_add(&cancel[i][side], r.cancel_ns);
                samples_add(&ss->cancel[i][side], r.cancel_ns);
                if (i == top) {
                    samples_add(&create[side], r.create_ns);
                    samples_add(&ss->create[side], r.create_ns);
                    samples_add(&ss->rss[side], r.rss_bytes);
                    samples_add(&ss->fds[side], r.fds);
                }
            }
        }
    }
    double per_child[MAX_SIZES][2];
    for (int i = 0; i < ss->nsizes; i++) {
        for (int side = 0; side < 2; side++)
            per_child[i][side] = median(&cancel[i][side]) / ss->sizes[i];
        samples_add(&ss->cancel_ratio[i], ratio(per_child[i][TETHER], per_child[i][RAW]));
    }
    samples_add(&ss->create_ratio, ratio(median(&create[TETHER]), median(&create[RAW])));
    double growth[2];
    for (int side = 0; side < 2; side++) {
        growth[side] = per_child[top][side] / per_child[ss->at100][side];
        samples_add(&ss->growth[side], growth[side]);
    }
    samples_add(&ss->growth_vs_raw, ratio(growth[TETHER], growth[RAW]));
    for (int i = 0; i < ss->nsizes; i++)
        for (int side = 0; side < 2; side++)
            samples_free(&cancel[i][side]);
    for (int side = 0; side < 2; side++)
        samples_free(&create[side]);
}

static void report_scale(const struct config *cfg, struct scale_series *ss)
{
    const int top = ss->nsizes - 1;
    report("scale_threads", cfg->scale_children, "threads", 0);
    report("scale_10k_create_raw_ms", median(&ss->create[RAW]) / 1e6, "ms", 1);
    report("scale_10k_create_ms", median(&ss->create[TETHER]) / 1e6, "ms", 1);
    report("scale_10k_create_ratio", median(&ss->create_ratio), "x", 3);
    report("scale_10k_cancel_raw_ms", median(&ss->cancel[top][RAW]) / 1e6, "ms", 1);
    report("scale_10k_cancel_ms", median(&ss->cancel[top][TETHER]) / 1e6, "ms", 1);
    report("scale_10k_cancel_ratio", median(&ss->cancel_ratio[top]), "x", 3);
    double m_raw = median(&ss->rss[RAW]) / 1024, m_t = median(&ss->rss[TETHER]) / 1024;
    report("scale_10k_rss_raw_kib", m_raw, "KiB", 0);
    report("scale_10k_rss_kib", m_t, "KiB", 0);
    report("scale_10k_rss_ratio", ratio(m_t, m_raw), "x", 3);
    report("scale_10k_rss_per_thread_kib", m_t / cfg->scale_children, "KiB", 2);
    report("scale_10k_raw_fds", percentile(&ss->fds[RAW], 100), "fds", 0);
    report("scale_10k_fds", percentile(&ss->fds[TETHER], 100), "fds", 0);
}

/* Convergence and per-child cost at each size, then the growth. */
static void report_growth(struct scale_series *ss)
{
    char name[64];
    for (int i = 0; i < ss->nsizes; i++) {
        int n = ss->sizes[i];
        double raw = median(&ss->cancel[i][RAW]), tether = median(&ss->cancel[i][TETHER]);
        snprintf(name, sizeof name, "cancel_converge_%d_raw_us", n);
        report(name, raw / 1e3, "us", 1);
        snprintf(name, sizeof name, "cancel_converge_%d_us", n);
        report(name, tether / 1e3, "us", 1);
        snprintf(name, sizeof name, "cancel_converge_%d_raw_per_child_ns", n);
        report(name, raw / n, "ns", 0);
        snprintf(name, sizeof name, "cancel_converge_%d_per_child_ns", n);
        report(name, tether / n, "ns", 0);
        snprintf(name, sizeof name, "cancel_converge_%d_ratio", n);
        report(name, median(&ss->cancel_ratio[i]), "x", 3);
    }
    report("cancel_fanout_growth_children", ss->sizes[ss->nsizes - 1], "children", 0);
    report("cancel_fanout_raw_growth", median(&ss->growth[RAW]), "x", 3);
    report("cancel_fanout_growth", median(&ss->growth[TETHER]), "x", 3);
    /* How much of the growth is tether's own: the raw side grows too (the
     * kernel and glibc: waking, exiting and unmapping many threads). */
    report("cancel_fanout_growth_vs_raw", median(&ss->growth_vs_raw), "x", 3);
}

void bench_scale(const struct config *cfg)
{
    struct scale_series ss = { 0 };
    for (int i = 0; i < NGROWTH && growth_sizes[i] < cfg->scale_children; i++) {
        if (growth_sizes[i] == 100)
            ss.at100 = ss.nsizes;
        ss.sizes[ss.nsizes++] = growth_sizes[i];
    }
    ss.sizes[ss.nsizes++] = cfg->scale_children;
    if (ss.nsizes < 3)
        die("scale: %d children is too few for the growth series", cfg->scale_children);

    /* A busy machine stops the series early (after MIN_ROUNDS), as
     * interleave() does; this section's budget is three times a series'
     * (a round takes about two seconds on a quiet 2-core machine). */
    tether_time_t budget_end = tether_now() + (int64_t)(3 * cfg->budget_s * 1e9);
    int round = 0;
    while (round < cfg->scale_runs && (round < MIN_ROUNDS || tether_now() <= budget_end))
        scale_round(&ss, round++);
    report("scale_rounds", round, "rounds", 0);
    report_scale(cfg, &ss);
    report_growth(&ss);
    series_free(&ss);
}
