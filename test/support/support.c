#define _GNU_SOURCE
#include "support.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
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
    tether_trim();                         /* tether's spare eventfds are a cache, not a leak */
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

bool th_sem_wait_bounded(sem_t *s, int64_t base_ms)
{
    tether_time_t end = tether_now() + th_bound_ns(base_ms);
    while (sem_trywait(s) != 0) {
        if (tether_now() >= end)
            return false;
        usleep(100);
    }
    return true;
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

uint64_t th_seed_for(uint64_t seed, uint64_t k)
{
    uint64_t x = seed ^ (k + 1) * 0x9E3779B97F4A7C15ull;
    return x ? x : 1;
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

#ifdef TS_TSAN
static void *th_noop(void *arg)
{
    return arg;
}
#endif

th_baseline th_baseline_take(void)
{
#ifdef TS_TSAN
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
    tether_trim(); /* stops tether's timer thread, now that nothing is armed */
    ck_assert_int_eq(th_wait_thread_count(b.threads), b.threads);
    ck_assert_int_eq(th_fd_count(), b.fds);
}

int stress(int base)
{
    const char *s = getenv("TETHER_STRESS");
    long f = s ? strtol(s, NULL, 10) : 1;
    if (f < 1)
        f = 1;
    return (int)(base * f);
}

tether_token *new_token(tether_token *parent, tether_time_t deadline)
{
    tether_token *t = NULL;
    int rc = tether_token_new(&t, parent, deadline);
    if (rc != 0 || t == NULL)
        ck_abort_msg("tether_token_new: %s", strerror(rc));
    return t;
}

tether_scope *open_scope(const tether_scope_opts *o)
{
    tether_scope *s = NULL;
    ck_assert_int_eq(tether_scope_open(&s, o), 0);
    ck_assert_ptr_nonnull(s);
    return s;
}

void spawn_ok(tether_scope *s, int (*fn)(void *), void *arg, const char *name, tether_task **task)
{
    tether_spawn_opts o = { .name = name };
    ck_assert_int_eq(tether_spawn(s, fn, arg, &o, task), 0);
}

tether_result join_and_free(tether_scope *s)
{
    tether_result r;
    memset(&r, 0x5a, sizeof r); /* every field must be written */
    ck_assert_int_eq(tether_scope_join(s, &r), 0);
    ck_assert_int_eq(tether_scope_free(s), 0);
    ck_assert_uint_eq(r.succeeded + r.failed + r.canceled, r.spawned);
    ck_assert_uint_le(r.late_succeeded, r.succeeded);
    return r;
}

int return_zero(void *arg)
{
    (void)arg;
    return 0;
}

pthread_t thread_start(void *(*fn)(void *), void *arg)
{
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, fn, arg), 0);
    return th;
}

void thread_join(pthread_t th)
{
    ck_assert_int_eq(pthread_join(th, NULL), 0);
}

void enter(tether_token *t)
{
    ck_assert_int_eq(tether_token_enter(t), 0);
}

void leave(tether_token *t)
{
    ck_assert_int_eq(tether_token_leave(t), 0);
}

int th_spawn_self_by(tether_time_t d, char *const argv[])
{
    tether_token *t = new_token(NULL, d);
    enter(t);
    tether_proc *p;
    ck_assert_int_eq(tether_proc_spawn(&p, "/proc/self/exe", argv, NULL), 0);
    leave(t);
    tether_token *bound = new_token(NULL, d + th_bound_ns(3000));
    enter(bound);
    int ws;
    ck_assert_int_eq(tether_proc_wait(p, &ws), 0);
    leave(bound);
    ck_assert_int_eq(tether_token_free(bound), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    return ws;
}

int sleep_forever(void)
{
    return tether_sleep_until(TETHER_NEVER) == 0 ? 0 : errno;
}

void sem_wait_ok(sem_t *s)
{
    while (sem_wait(s) != 0)
        ck_assert_int_eq(errno, EINTR);
}

void busy_spin(unsigned n)
{
    for (volatile unsigned i = 0; i < n; i++)
        ;
}

long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    ck_assert_ptr_nonnull(f);
    long size = 0, resident = 0;
    ck_assert_int_eq(fscanf(f, "%ld %ld", &size, &resident), 2);
    fclose(f);
    return resident * sysconf(_SC_PAGESIZE);
}

static pthread_mutex_t bad_mu = PTHREAD_MUTEX_INITIALIZER;
static char bad_msg[512];
static atomic_int bad_count;

void bad(const char *fmt, ...)
{
    pthread_mutex_lock(&bad_mu);
    if (atomic_fetch_add(&bad_count, 1) == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(bad_msg, sizeof bad_msg, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&bad_mu);
}

int bad_seen(void)
{
    return atomic_load(&bad_count);
}

const char *bad_first(void)
{
    pthread_mutex_lock(&bad_mu);
    const char *m = bad_msg;
    pthread_mutex_unlock(&bad_mu);
    return m;
}

void bad_reset(void)
{
    pthread_mutex_lock(&bad_mu);
    bad_msg[0] = '\0';
    atomic_store(&bad_count, 0);
    pthread_mutex_unlock(&bad_mu);
}
