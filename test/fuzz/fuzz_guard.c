/*
 * fuzz_guard.c — the fuzz_api harness's checks around each input: a watchdog
 * thread that aborts an input running longer than FUZZ_INPUT_LIMIT_S (after
 * every thread printed its stack), and the thread and descriptor counts
 * before and after.
 */
#define _GNU_SOURCE
#include "fuzz_ops.h"

#include <dirent.h>
#include <sanitizer/common_interface_defs.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <unistd.h>

#define FUZZ_INPUT_LIMIT_S 5

/* Watchdog: aborts an input that runs longer than FUZZ_INPUT_LIMIT_S. */
static pthread_mutex_t wd_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wd_cv;
static tether_time_t wd_started; /* 0 when no input runs */

static int count_dir(const char *path)
{
    DIR *d = opendir(path);
    FUZZ_CHECK(d != NULL, "opendir %s failed", path);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* On a hang, every thread prints its stack (SIGUSR2), one after the other,
 * before the watchdog aborts: the report shows where each one is stuck. */
static atomic_int dump_turn, dumped;

static void dump_stack(int sig)
{
    (void)sig;
    int expected = 0;
    while (!atomic_compare_exchange_weak(&dump_turn, &expected, 1))
        expected = 0;
    fprintf(stderr, "fuzz_api: thread %ld:\n", (long)syscall(SYS_gettid));
    __sanitizer_print_stack_trace();
    atomic_store(&dump_turn, 0);
    atomic_fetch_add(&dumped, 1);
}

static void dump_all_stacks(void)
{
    signal(SIGUSR2, dump_stack);
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    long self = (long)syscall(SYS_gettid);
    int sent = 0;
    while (d && (e = readdir(d)) != NULL) {
        long tid = atol(e->d_name);
        if (tid > 0 && tid != self && syscall(SYS_tgkill, (long)getpid(), tid, SIGUSR2) == 0)
            sent++;
    }
    if (d)
        closedir(d);
    /* Symbolizing is slow on a busy machine: wait for every stack, up to 20 s. */
    for (int waited = 0; atomic_load(&dumped) < sent && waited < 2000; waited++)
        usleep(10000);
}

static void *watchdog_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&wd_mu);
    for (;;) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 100000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&wd_cv, &wd_mu, &ts);
        if (wd_started && tether_now() - wd_started > tether_sec(FUZZ_INPUT_LIMIT_S)) {
            fprintf(stderr, "fuzz_api: an input ran longer than %d s (a hang)\n",
                    FUZZ_INPUT_LIMIT_S);
            dump_all_stacks();
            abort();
        }
    }
    return NULL;
}

void fuzz_guard_init(void)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&wd_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_t wd;
    FUZZ_CHECK(pthread_create(&wd, NULL, watchdog_main, NULL) == 0, "no watchdog thread");
    pthread_detach(wd);
}

void fuzz_guard_begin(struct fuzz_baseline *b)
{
    tether_trim();
    b->threads = count_dir("/proc/self/task");
    b->fds = count_dir("/proc/self/fd");
    pthread_mutex_lock(&wd_mu);
    wd_started = tether_now();
    pthread_mutex_unlock(&wd_mu);
}

/* Thread and descriptor counts, waiting briefly for exiting threads to leave
 * /proc (pthread_join returns before the kernel drops the task entry). */
void fuzz_guard_end(const struct fuzz_baseline *b)
{
    int threads = b->threads, fds = b->fds;
    pthread_mutex_lock(&wd_mu);
    wd_started = 0;
    pthread_mutex_unlock(&wd_mu);

    int now_threads = 0, now_fds = 0;
    for (int tries = 0; tries < 200; tries++) {
        tether_trim();
        now_threads = count_dir("/proc/self/task");
        now_fds = count_dir("/proc/self/fd");
        if (now_threads == threads && now_fds == fds)
            return;
        usleep(5000);
    }
    FUZZ_CHECK(now_threads == threads, "threads: %d before the input, %d after", threads,
               now_threads);
    FUZZ_CHECK(now_fds == fds, "descriptors: %d before the input, %d after", fds, now_fds);
}
