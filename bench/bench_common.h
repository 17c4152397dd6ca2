/*
 * bench_common.h — what tether-bench's sections share: the run's
 * configuration, failure helpers, samples and medians, the report lines,
 * threads under test (the ready counter and /proc checks), interleaved
 * rounds and the pipe/socket feeder. Each section lives in its own file
 * (bench_<section>.c) and is entered through its bench_<section> function.
 */
#ifndef TETHER_BENCH_COMMON_H
#define TETHER_BENCH_COMMON_H

#include "tether.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* ====================================================================== */
/* Configuration                                                          */

/* Each series of interleaved rounds also has a time budget: once it is
 * spent (and at least MIN_ROUNDS were measured) the series stops early and
 * says so in its `_rounds` line, so that a busy machine cannot stretch a
 * full run far past its usual length. */
struct config {
    bool quick;
    double budget_s; /* per series of rounds */
    int spawn_rounds, spawn_warmup;
    int cancel_rounds, cancel_warmup;
    int fanout_children, fanout_rounds, fanout_warmup;
    int growth_rounds; /* cancel convergence at 10, 100, 1000 children */
    int read_rounds;
    size_t read_bytes[3]; /* per round, for 64 B, 4 KiB, 64 KiB chunks */
    int check_rounds;
    long check_iters; /* per round */
    int job_rounds;
    long job_iters;                 /* jobs per round */
    int scale_children, scale_runs; /* runs (fresh processes) per side */
    int gio_cancel_rounds, gio_read_rounds;
    size_t gio_read_bytes[2];       /* per round, for 64 B and 4 KiB chunks */
    int timer_rounds, timer_warmup; /* deadline callback lateness */
    int token_rounds;               /* token new + free, with and without a deadline */
    long token_iters;               /* per round */
};

enum { MIN_ROUNDS = 3 };

/* The thread stacks of the scale section and of the cancel growth series:
 * small enough for 10,000 threads, the same at every size. */
enum { SMALL_STACK = 64 * 1024 };

/* ====================================================================== */
/* Failure                                                                */

/* Print "tether-bench: <message>" and exit with status 1. */
_Noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A pthreads-style call (0 or an error number) that must succeed. */
void need_rc(int rc, const char *what);
/* A POSIX-style call (-1 and errno) that must succeed. */
void need_ok(bool ok, const char *what);

/* ====================================================================== */
/* Samples, statistics, output                                            */

typedef struct samples {
    double *v;
    size_t n, cap;
} samples;

void samples_add(samples *s, double x);
void samples_free(samples *s);
/* The median (mean of the middle two for an even count); NaN when empty. */
double median(samples *s);
/* The nearest-rank percentile, 0 < pct <= 100; NaN when empty. */
double percentile(samples *s, unsigned pct);

/* Print `name value unit` and remember the figure for the target lines. */
void report(const char *name, double value, const char *unit, int decimals);
/* Print a `note <text>` line: something the reader must know about the run
 * that is not a figure (a section left out, and why). */
void report_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A figure reported earlier in this run, or NULL. */
const double *find_figure(const char *name);
/* tether over the baseline, for "smaller is better" or "larger is better" alike. */
double ratio(double tether, double raw);
/* Report `<base>_ns`, `<base>_p99_ns` from latency samples in nanoseconds;
 * returns the median. */
double report_latency(const char *base, samples *s);

/* ====================================================================== */
/* Threads under test                                                     */

extern int g_pipe[2];      /* never written: readers block on it for good */
extern int g_efd;          /* the raw baselines' cancellation eventfd */
extern atomic_int g_ready; /* threads that are about to block */

struct slot {
    pid_t tid; /* written before g_ready is bumped */
};

/* Called by a thread under test just before it blocks. */
void about_to_block(struct slot *s);

/* The system calls a blocked thread may be sitting in. */
enum { IN_READ = 1u << 0, IN_POLL = 1u << 1, IN_FUTEX = 1u << 2 };

/* Wait until n threads have called about_to_block, then until each sleeps
 * in one of the `kinds` of calls (per /proc/self/task/<tid>). */
void wait_all_blocked(struct slot *slots, int n, unsigned kinds);

/* Read a small /proc file into buf, NUL-terminated; -1 and errno on failure. */
ssize_t read_small_file(const char *path, char *buf, size_t size);

/* The raw baselines' eventfd: fire it, and reset it after a round fired it. */
void fire_efd(void);
void reset_efd(void);

/* Raw: wait for the one cancellation eventfd. */
void *raw_poll_efd(void *arg);
/* tether child: sleep a day, i.e. until canceled. */
int child_sleep_until_canceled(void *arg);
/* After joining a canceled scope: every one of n children must have been
 * canceled, or the figure measured something else. */
void need_all_canceled(const tether_result *r, unsigned n, const char *what);

/* ====================================================================== */
/* Interleaved rounds                                                     */

typedef double round_fn(void *ctx);

struct variant {
    round_fn *fn;
    void *ctx;
    samples s;
};

/* Run `rounds` rounds (after `warmup` discarded ones) of every variant, one
 * of each per round, rotating which variant goes first; stop early once the
 * budget is spent and MIN_ROUNDS were measured. Reports `<name>_rounds`. */
void interleave(const char *name, struct variant *v, int nv, int rounds, int warmup,
                const struct config *cfg);

/* ====================================================================== */
/* A writer thread that keeps a pipe or a stream socket full              */

enum { MAX_CHUNK = 65536 };

struct feeder {
    int rfd, wfd;
    pthread_t thread;
};

/* Start a thread writing MAX_CHUNK blocks into wfd until rfd is closed;
 * feeder_stop closes rfd, joins the thread and closes wfd. */
void feeder_start(struct feeder *f, int rfd, int wfd);
void feeder_stop(struct feeder *f);
/* A pipe with a 1 MiB buffer (when the system allows it), fed. */
void feeder_start_pipe(struct feeder *f);

/* ====================================================================== */
/* Sections                                                               */

void bench_spawn(const struct config *cfg);   /* bench_spawn.c */
void bench_cancel(const struct config *cfg);  /* bench_cancel.c */
void bench_fanout(const struct config *cfg);  /* bench_cancel.c */
void bench_read(const struct config *cfg);    /* bench_read.c */
void bench_check(const struct config *cfg);   /* bench_check.c */
void bench_job(const struct config *cfg);     /* bench_job.c */
void bench_scale(const struct config *cfg);   /* bench_scale.c */
void bench_gio(const struct config *cfg);     /* bench_gio.c, or a note without GIO */
void bench_hostage(const struct config *cfg); /* bench_hostage.c */
void bench_timer(const struct config *cfg);   /* bench_timer.c */
void bench_metrics(const struct config *cfg); /* bench_metrics.c */

#endif /* TETHER_BENCH_COMMON_H */
