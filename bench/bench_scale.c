/*
 * bench_scale.c — many small-stack sleepers, each side in a fresh process.
 *   scale   10,000 children with 64 KiB stacks asleep in one scope against
 *           10,000 raw threads in poll on one eventfd: time to start all,
 *           time from cancel until all are joined, resident memory growth
 *           once all sleep, fds opened. Raw and tether runs alternate
 *           (raw, tether, tether, raw, ...) and each figure is the median
 *           of its side's runs.
 *   growth  the same cancel convergence (cancel until join returns) with
 *           10, 100 and 1000 children, in fresh processes, rounds
 *           interleaved over sizes and sides; with the 10,000-child runs
 *           above, the per-child cost at each size and cancel_fanout_growth,
 *           the per-child cost at 10,000 over the one at 100.
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
    *out = (struct scale_result){ .create_ns = (double)(t1 - t0), .cancel_ns = (double)(t3 - t2),
                                  .rss_bytes = (double)(rss1 - rss0), .fds = fds1 - fds0 };
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

    *out = (struct scale_result){ .create_ns = (double)(t1 - t0), .cancel_ns = (double)(t3 - t2),
                                  .rss_bytes = (double)(rss1 - rss0), .fds = fds1 - fds0 };
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

/* What one round measures: every size, both sides. */
struct scale_series {
    int nsizes;
    int sizes[MAX_SIZES];              /* ascending; the last is cfg->scale_children */
    samples cancel[MAX_SIZES][2];      /* [size][side]: cancel until joined, ns */
    samples create[2], rss[2], fds[2]; /* the largest size only */
};

static void series_free(struct scale_series *ss)
{
    for (int i = 0; i < ss->nsizes; i++)
        for (int side = 0; side < 2; side++)
            samples_free(&ss->cancel[i][side]);
    for (int side = 0; side < 2; side++) {
        samples_free(&ss->create[side]);
        samples_free(&ss->rss[side]);
        samples_free(&ss->fds[side]);
    }
}

/* One round: each size once per side, in fresh processes. The first size
 * rotates from round to round, and which side goes first alternates, so a
 * change in the machine's load falls on every figure alike. */
static void scale_round(struct scale_series *ss, int round)
{
    for (int k = 0; k < ss->nsizes; k++) {
        int i = (k + round) % ss->nsizes;
        for (int j = 0; j < 2; j++) {
            int side = (j + round) % 2;    /* 0 raw, 1 tether */
            struct scale_result r;
            scale_run(side == 1, ss->sizes[i], &r);
            samples_add(&ss->cancel[i][side], r.cancel_ns);
            if (i == ss->nsizes - 1) {
                samples_add(&ss->create[side], r.create_ns);
                samples_add(&ss->rss[side], r.rss_bytes);
                samples_add(&ss->fds[side], r.fds);
            }
        }
    }
}

static void report_scale(const struct config *cfg, struct scale_series *ss)
{
    const int top = ss->nsizes - 1;
    report("scale_threads", cfg->scale_children, "threads", 0);
    double c_raw = median(&ss->create[0]) / 1e6, c_t = median(&ss->create[1]) / 1e6;
    report("scale_10k_create_raw_ms", c_raw, "ms", 1);
    report("scale_10k_create_ms", c_t, "ms", 1);
    report("scale_10k_create_ratio", ratio(c_t, c_raw), "x", 3);
    double k_raw = median(&ss->cancel[top][0]) / 1e6, k_t = median(&ss->cancel[top][1]) / 1e6;
    report("scale_10k_cancel_raw_ms", k_raw, "ms", 1);
    report("scale_10k_cancel_ms", k_t, "ms", 1);
    report("scale_10k_cancel_ratio", ratio(k_t, k_raw), "x", 3);
    double m_raw = median(&ss->rss[0]) / 1024, m_t = median(&ss->rss[1]) / 1024;
    report("scale_10k_rss_raw_kib", m_raw, "KiB", 0);
    report("scale_10k_rss_kib", m_t, "KiB", 0);
    report("scale_10k_rss_ratio", ratio(m_t, m_raw), "x", 3);
    report("scale_10k_rss_per_thread_kib", m_t / cfg->scale_children, "KiB", 2);
    report("scale_10k_raw_fds", percentile(&ss->fds[0], 100), "fds", 0);
    report("scale_10k_fds", percentile(&ss->fds[1], 100), "fds", 0);
}

/* Per-child cost at each size; growth is the largest size's over 100's. */
static void report_growth(struct scale_series *ss)
{
    double per_child[MAX_SIZES][2];
    char name[64];
    for (int i = 0; i < ss->nsizes; i++) {
        int n = ss->sizes[i];
        double raw = median(&ss->cancel[i][0]), tether = median(&ss->cancel[i][1]);
        per_child[i][0] = raw / n;
        per_child[i][1] = tether / n;
        snprintf(name, sizeof name, "cancel_converge_%d_raw_us", n);
        report(name, raw / 1e3, "us", 1);
        snprintf(name, sizeof name, "cancel_converge_%d_us", n);
        report(name, tether / 1e3, "us", 1);
        snprintf(name, sizeof name, "cancel_converge_%d_raw_per_child_ns", n);
        report(name, per_child[i][0], "ns", 0);
        snprintf(name, sizeof name, "cancel_converge_%d_per_child_ns", n);
        report(name, per_child[i][1], "ns", 0);
        snprintf(name, sizeof name, "cancel_converge_%d_ratio", n);
        report(name, ratio(tether, raw), "x", 3);
    }
    int at100 = 1, top = ss->nsizes - 1; /* growth_sizes[1] == 100 */
    report("cancel_fanout_growth_children", ss->sizes[top], "children", 0);
    report("cancel_fanout_raw_growth", per_child[top][0] / per_child[at100][0], "x", 3);
    report("cancel_fanout_growth", per_child[top][1] / per_child[at100][1], "x", 3);
}

void bench_scale(const struct config *cfg)
{
    struct scale_series ss = { 0 };
    for (int i = 0; i < NGROWTH && growth_sizes[i] < cfg->scale_children; i++)
        ss.sizes[ss.nsizes++] = growth_sizes[i];
    ss.sizes[ss.nsizes++] = cfg->scale_children;
    if (ss.nsizes < 3)
        die("scale: %d children is too few for the growth series", cfg->scale_children);

    /* A busy machine stops the series early (after MIN_ROUNDS), as
     * interleave() does; this section's budget is twice a series'. */
    tether_time_t budget_end = tether_now() + (int64_t)(2 * cfg->budget_s * 1e9);
    int round = 0;
    while (round < cfg->scale_runs && (round < MIN_ROUNDS || tether_now() <= budget_end))
        scale_round(&ss, round++);
    report("scale_rounds", round, "rounds", 0);
    report_scale(cfg, &ss);
    report_growth(&ss);
    series_free(&ss);
}
