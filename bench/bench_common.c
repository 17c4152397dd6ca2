/*
 * bench_common.c — the helpers every tether-bench section uses (see
 * bench_common.h): failure, samples, report lines, threads under test,
 * interleaved rounds, the feeder thread.
 */
#include "bench_common.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ====================================================================== */
/* Failure                                                                */

_Noreturn void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("tether-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* A pthreads-style call (0 or an error number) that must succeed. */
void need_rc(int rc, const char *what)
{
    if (rc)
        die("%s: %s", what, strerror(rc));
}

/* A POSIX-style call (-1 and errno) that must succeed. */
void need_ok(bool ok, const char *what)
{
    if (!ok)
        die("%s: %s", what, strerror(errno));
}

/* ====================================================================== */
/* Samples and statistics                                                 */

void samples_add(samples *s, double x)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        double *v = realloc(s->v, cap * sizeof *v);
        if (!v)
            die("out of memory");
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
}

void samples_free(samples *s)
{
    free(s->v);
    *s = (samples){ 0 };
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median (mean of the middle two for an even count). */
double median(samples *s)
{
    if (s->n == 0)
        return NAN;
    qsort(s->v, s->n, sizeof *s->v, cmp_double);
    size_t m = s->n / 2;
    return s->n % 2 ? s->v[m] : (s->v[m - 1] + s->v[m]) / 2;
}

/* The nearest-rank percentile, 0 < pct <= 100. */
double percentile(samples *s, unsigned pct)
{
    if (s->n == 0)
        return NAN;
    qsort(s->v, s->n, sizeof *s->v, cmp_double);
    size_t rank = (s->n * pct + 99) / 100; /* ceil(n * pct / 100) */
    if (rank < 1)
        rank = 1;
    return s->v[rank - 1];
}

/* ====================================================================== */
/* Output                                                                 */

enum { MAX_FIGURES = 512 };

static struct figure {
    char name[64];
    double value;
} figures[MAX_FIGURES];
static int nfigures;

void report(const char *name, double value, const char *unit, int decimals)
{
    printf("%s %.*f %s\n", name, decimals, value, unit);
    fflush(stdout);
    if (nfigures == MAX_FIGURES)
        die("too many figures");
    snprintf(figures[nfigures].name, sizeof figures[nfigures].name, "%s", name);
    figures[nfigures++].value = value;
}

void report_note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("note ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    fflush(stdout);
    va_end(ap);
}

const double *find_figure(const char *name)
{
    for (int i = 0; i < nfigures; i++)
        if (strcmp(figures[i].name, name) == 0)
            return &figures[i].value;
    return NULL;
}

/* tether over raw, for "smaller is better" or "larger is better" alike. */
double ratio(double tether, double raw)
{
    return raw > 0 ? tether / raw : NAN;
}

/* Report `<base>_ns`, `<base>_p99_ns` from latency samples in nanoseconds. */
double report_latency(const char *base, samples *s)
{
    char name[64];
    double p50 = median(s);
    snprintf(name, sizeof name, "%s_ns", base);
    report(name, p50, "ns", 0);
    snprintf(name, sizeof name, "%s_p99_ns", base);
    report(name, percentile(s, 99), "ns", 0);
    return p50;
}

/* ====================================================================== */
/* Threads under test: ready counter and /proc checks                     */

int g_pipe[2];      /* never written: readers block on it for good */
int g_efd = -1;     /* the raw baselines' cancellation eventfd */
atomic_int g_ready; /* threads that are about to block */

static pid_t current_tid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

/* Called by a thread under test just before it blocks. */
void about_to_block(struct slot *s)
{
    s->tid = current_tid();
    atomic_fetch_add_explicit(&g_ready, 1, memory_order_release);
}

/* How long to wait for a thread to start or block before declaring the
 * measurement impossible: 60 s, times TETHER_TEST_TIME_FACTOR if set (the
 * tests' factor for slow sanitizer builds). */
static tether_time_t give_up_time(void)
{
    const char *env = getenv("TETHER_TEST_TIME_FACTOR");
    double factor = env ? atof(env) : 1;
    if (!(factor >= 1))
        factor = 1;
    return tether_now() + (int64_t)(60e9 * factor);
}

/* Wait until n threads have called about_to_block. */
static void wait_ready(int n)
{
    tether_time_t give_up = give_up_time();
    unsigned spins = 0;
    while (atomic_load_explicit(&g_ready, memory_order_acquire) < n) {
        if (++spins < 1000) {
            sched_yield();
            continue;
        }
        if (tether_now() > give_up)
            die("only %d of %d threads started in time", atomic_load(&g_ready), n);
        struct timespec ts = { 0, 50000 };
        nanosleep(&ts, NULL);
    }
}

/* The system calls a blocked thread may be sitting in. */

static const struct {
    long nr;
    unsigned kind;
} wait_syscalls[] = {
    { SYS_read, IN_READ },         { SYS_ppoll, IN_POLL },
#ifdef SYS_poll
    { SYS_poll, IN_POLL },
#endif
    { SYS_futex, IN_FUTEX },
#ifdef SYS_futex_waitv
    { SYS_futex_waitv, IN_FUTEX }, /* tether's sleepers, on Linux >= 5.16 */
#endif
};

/* /proc/self/task/<tid>/syscall is readable on this kernel; cleared (and
 * the check falls back to the state letter alone) if it is not. */
static bool g_syscall_file = true;

ssize_t read_small_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, size - 1);
    int e = errno;
    close(fd);
    errno = e;
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return n;
}

/* Whether thread tid sleeps ('S') inside one of the `kinds` of calls. */
static bool task_blocked(pid_t tid, unsigned kinds)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
    if (read_small_file(path, buf, sizeof buf) < 0)
        die("%s: %s", path, strerror(errno));
    const char *p = strrchr(buf, ')'); /* the name may contain anything */
    if (!p || p[1] != ' ')
        die("%s: unexpected format", path);
    if (p[2] != 'S')
        return false;
    if (!g_syscall_file)
        return true;
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
    if (read_small_file(path, buf, sizeof buf) < 0) {
        g_syscall_file = false;
        return true;
    }
    if (buf[0] < '0' || buf[0] > '9')
        return false; /* "running", or -1: not in a call */
    long nr = strtol(buf, NULL, 10);
    for (size_t i = 0; i < sizeof wait_syscalls / sizeof wait_syscalls[0]; i++)
        if (wait_syscalls[i].nr == nr && (wait_syscalls[i].kind & kinds))
            return true;
    return false;
}

/* Wait until thread tid is asleep in one of the `kinds` of calls. */
static void wait_blocked(pid_t tid, unsigned kinds)
{
    tether_time_t give_up = give_up_time();
    unsigned spins = 0;
    while (!task_blocked(tid, kinds)) {
        if (++spins < 200) {
            sched_yield();
            continue;
        }
        if (tether_now() > give_up)
            die("thread %d did not block in the expected call in time", (int)tid);
        struct timespec ts = { 0, 20000 };
        nanosleep(&ts, NULL);
    }
}

void wait_all_blocked(struct slot *slots, int n, unsigned kinds)
{
    wait_ready(n);
    for (int i = 0; i < n; i++)
        wait_blocked(slots[i].tid, kinds);
}

/* Reset the raw baselines' eventfd after a round that fired it. */
void reset_efd(void)
{
    uint64_t v;
    need_ok(read(g_efd, &v, sizeof v) == (ssize_t)sizeof v, "read(eventfd)");
}

void fire_efd(void)
{
    uint64_t one = 1;
    need_ok(write(g_efd, &one, sizeof one) == (ssize_t)sizeof one, "write(eventfd)");
}

/* Raw: wait for the one cancellation eventfd. */
void *raw_poll_efd(void *arg)
{
    about_to_block(arg);
    struct pollfd p = { .fd = g_efd, .events = POLLIN };
    while (poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
    return NULL;
}

/* tether child: sleep a day, i.e. until canceled. */
int child_sleep_until_canceled(void *arg)
{
    about_to_block(arg);
    return tether_sleep_for(tether_sec(86400)) < 0 ? errno : EIO;
}

/* After joining a canceled scope: every child must have been canceled
 * (none failed, none finished on its own), or the figure measured
 * something else. */
void need_all_canceled(const tether_result *r, unsigned n, const char *what)
{
    if (r->spawned != n || r->canceled != n || r->outcome != TETHER_OUTCOME_CANCELED)
        die("%s: %u spawned, %u canceled, %u failed, outcome %s (expected %u canceled)", what,
            r->spawned, r->canceled, r->failed, tether_outcome_name(r->outcome), n);
}

/* ====================================================================== */
/* Interleaved rounds                                                     */

/* Run `rounds` rounds (after `warmup` discarded ones) of every variant, one
 * of each per round, rotating which variant goes first; stop early once the
 * budget is spent and MIN_ROUNDS were measured. Reports `<name>_rounds`. */
void interleave(const char *name, struct variant *v, int nv, int rounds, int warmup,
                const struct config *cfg)
{
    tether_time_t budget_end = tether_now() + (int64_t)(cfg->budget_s * 1e9);
    int r;
    for (r = 0; r < warmup + rounds; r++) {
        if (r >= warmup + MIN_ROUNDS && tether_now() > budget_end)
            break;
        for (int k = 0; k < nv; k++) {
            struct variant *x = &v[(r + k) % nv];
            double value = x->fn(x->ctx);
            if (r >= warmup)
                samples_add(&x->s, value);
        }
    }
    char line[64];
    snprintf(line, sizeof line, "%s_rounds", name);
    report(line, r - warmup, "rounds", 0);
}

/* ====================================================================== */
/* A writer thread that keeps a pipe or a stream socket full              */

/* Keep wfd full until the read end is closed (EPIPE; SIGPIPE is blocked in
 * this thread, so it only stays pending until the thread ends). */
static void *feed(void *arg)
{
    struct feeder *f = arg;
    char *buf = malloc(MAX_CHUNK);
    if (!buf)
        die("out of memory");
    memset(buf, 'x', MAX_CHUNK);
    while (write(f->wfd, buf, MAX_CHUNK) > 0 || errno == EINTR) {
    }
    free(buf);
    return NULL;
}

void feeder_start_pipe(struct feeder *f)
{
    int p[2];
    need_ok(pipe2(p, O_CLOEXEC) == 0, "pipe2");
    /* A large pipe stays full between the reader's 64 KiB reads; ignore a
     * refusal (the default 64 KiB then). */
    (void)fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
    feeder_start(f, p[0], p[1]);
}

void feeder_start(struct feeder *f, int rfd, int wfd)
{
    f->rfd = rfd;
    f->wfd = wfd;
    sigset_t pipe_only, old;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    need_rc(pthread_sigmask(SIG_BLOCK, &pipe_only, &old), "pthread_sigmask");
    need_rc(pthread_create(&f->thread, NULL, feed, f), "pthread_create");
    need_rc(pthread_sigmask(SIG_SETMASK, &old, NULL), "pthread_sigmask");
}

void feeder_stop(struct feeder *f)
{
    close(f->rfd);
    need_rc(pthread_join(f->thread, NULL), "pthread_join");
    close(f->wfd);
}
