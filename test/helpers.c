#define _GNU_SOURCE
#include "helpers.h"

#include <dirent.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

double th_time_factor(void)
{
    const char *s = getenv("TETHER_TEST_TIME_FACTOR");
    double f = s ? strtod(s, NULL) : 1.0;
    return f >= 1.0 ? f : 1.0;
}

int64_t th_bound_ns(int64_t base_ms)
{
    return (int64_t)((double)tether_ms(base_ms) * th_time_factor());
}

int th_timeout_s(int base_s)
{
    return (int)(base_s * th_time_factor());
}

static int count_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

int th_thread_count(void)
{
    return count_dir("/proc/self/task");
}

int th_fd_count(void)
{
    tether_trim(); /* tether's spare eventfds are a cache, not a leak */
    return count_dir("/proc/self/fd") - 1; /* the DIR's own fd */
}

int th_wait_thread_count(int n)
{
    tether_time_t end = tether_now() + th_bound_ns(2000);
    int c;
    while ((c = th_thread_count()) != n && tether_now() < end)
        usleep(1000);
    return c;
}

pid_t th_gettid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

int th_wait_blocked(pid_t tid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
    tether_time_t end = tether_now() + th_bound_ns(5000);
    while (tether_now() < end) {
        FILE *f = fopen(path, "r");
        if (!f)
            return -1;
        char buf[512];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *p = strrchr(buf, ')');
        if (p && p[1] == ' ' && p[2] == 'S')
            return 0;
        usleep(200);
    }
    return -1;
}

uint64_t th_seed(const char *test_name)
{
    const char *s = getenv("TETHER_TEST_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 0) : (uint64_t)tether_now() ^ (uint64_t)getpid();
    if (seed == 0)
        seed = 1;
    fprintf(stderr, "%s: seed %llu (replay with TETHER_TEST_SEED=%llu)\n", test_name,
            (unsigned long long)seed, (unsigned long long)seed);
    return seed;
}

uint64_t th_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

int th_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

#if defined(__SANITIZE_THREAD__)
#define TH_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TH_TSAN 1
#endif
#endif

#ifdef TH_TSAN
static void *th_noop(void *arg)
{
    return arg;
}
#endif

th_baseline th_baseline_take(void)
{
#ifdef TH_TSAN
    /* TSan's runtime starts a thread of its own, for good, at a process's
     * first pthread_create (in every forked test, too): make that happen
     * before counting, or each test would see one thread "left behind". */
    static bool warmed;
    if (!warmed) {
        int n = th_thread_count();
        pthread_t t;
        if (pthread_create(&t, NULL, th_noop, NULL) == 0)
            pthread_join(t, NULL);
        warmed = true;
        /* The joined thread can linger in /proc for a moment: wait for
         * exactly the runtime's one extra thread. */
        th_wait_thread_count(n + 1);
    }
#endif
    return (th_baseline){ .fds = th_fd_count(), .threads = th_thread_count() };
}

void th_baseline_check(th_baseline b)
{
    ck_assert_int_eq(th_wait_thread_count(b.threads), b.threads);
    ck_assert_int_eq(th_fd_count(), b.fds);
}
