/*
 * Shared test helpers: time bounds scaled by TETHER_TEST_TIME_FACTOR, counts
 * of live threads and open fds (to prove nothing is left behind), and a
 * runner that gives every suite the same shape.
 */
#ifndef TETHER_TEST_HELPERS_H
#define TETHER_TEST_HELPERS_H

#include <check.h>
#include <stdint.h>
#include <tether.h>

/* The environment factor (default 1, >= 1) that stretches upper bounds. */
double th_time_factor(void);

/* A generous upper bound: base_ms * factor, in nanoseconds. */
int64_t th_bound_ns(int64_t base_ms);

/* Check's per-test timeout in seconds, scaled by the factor. */
int th_timeout_s(int base_s);

/* Threads in this process (/proc/self/task) and open fds (/proc/self/fd),
 * the latter after tether_trim (tether's spare eventfds are not a leak). */
int th_thread_count(void);
int th_fd_count(void);

/* Wait (up to a bound) until the thread count drops to `n`; returns the
 * last count seen. Exited threads can linger for a moment after join. */
int th_wait_thread_count(int n);

/* Wait (up to a bound) until `tid` is blocked in the kernel (state S). */
int th_wait_blocked(pid_t tid);

/* The calling thread's kernel id. */
pid_t th_gettid(void);

/* A seed from TETHER_TEST_SEED, or the time; printed so failures replay. */
uint64_t th_seed(const char *test_name);

/* xorshift64* */
uint64_t th_rand(uint64_t *state);

/* Run a suite with CK_FORK; returns the process exit code. */
int th_run_suite(Suite *s);

/* Standard leak bracket for a test: record fds and threads at the start,
 * assert they are back at the end. */
typedef struct th_baseline {
    int fds, threads;
} th_baseline;
th_baseline th_baseline_take(void);
void th_baseline_check(th_baseline b);

#endif
