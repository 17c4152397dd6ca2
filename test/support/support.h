/*
 * What every suite shares (test/support/support.c): time bounds scaled by
 * TETHER_TEST_TIME_FACTOR, iteration counts scaled by TETHER_STRESS, counts
 * of live threads and open fds (to prove nothing is left behind), seeds that
 * replay, fixtures for tokens and scopes, recording of broken expectations
 * from any thread, and the runner that gives every suite the same shape.
 * Each helper has a one-line contract above it.
 */
#ifndef TETHER_TEST_SUPPORT_H
#define TETHER_TEST_SUPPORT_H

#include <check.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <tether.h>

#include "sanitizer.h"

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
 * last count seen. Exited threads can linger for a moment after join.
 * tether's timer thread counts until tether_trim stops it (th_fd_count,
 * th_baseline_take and th_baseline_check call it). */
int th_wait_thread_count(int n);

/* sem_wait bounded by base_ms (scaled); whether it was posted. Polls
 * sem_trywait (which TSan sees, unlike sem_clockwait), so the waiter's own
 * delay is up to 100 us: measure lateness where the post happens. */
bool th_sem_wait_bounded(sem_t *s, int64_t base_ms);

/* Wait (up to a bound) until `tid` is blocked in the kernel (state S). */
int th_wait_blocked(pid_t tid);

/* The calling thread's kernel id. */
pid_t th_gettid(void);

/* A seed from TETHER_TEST_SEED, or the time; printed so failures replay. */
uint64_t th_seed(const char *test_name);

/* xorshift64* */
uint64_t th_rand(uint64_t *state);

/* A seed derived from `seed` for stream `k` (never 0, for th_rand). */
uint64_t th_seed_for(uint64_t seed, uint64_t k);

/* Run a suite with CK_FORK (each test in its own process); returns the
 * process exit code. */
int th_run_suite(Suite *s);

/* Standard leak bracket for a test: record fds and threads at the start,
 * assert they are back at the end. */
typedef struct th_baseline {
    int fds, threads;
} th_baseline;

/* Record this process's thread and fd counts (under TSan, after its runtime
 * thread has started). */
th_baseline th_baseline_take(void);

/* Assert the thread count returns to b's (waiting a bound) and the fd count
 * is b's. */
void th_baseline_check(th_baseline b);

/* A duration that only cancellation, a deadline or a signal ends, for a test. */
#define DAY tether_sec(86400)

/* ---------------------------------------------------------- scaling */

/* base * TETHER_STRESS (default 1, at least 1): iteration counts of the
 * randomised and stress tests. stress(1) is the factor itself. */
int stress(int base);

/* ---------------------------------------------------------- fixtures */

/* A new token under `parent` (NULL: a root) with `deadline`; aborts the test
 * on failure, writes nothing to Check's pipe on success (safe in races). */
tether_token *new_token(tether_token *parent, tether_time_t deadline);

/* A new scope with options `o` (NULL: defaults); asserts it opened. */
tether_scope *open_scope(const tether_scope_opts *o);

/* Spawn fn(arg) named `name` in `s` (task: NULL or where the handle goes);
 * asserts it started. */
void spawn_ok(tether_scope *s, int (*fn)(void *), void *arg, const char *name, tether_task **task);

/* Join and free `s`, assert every field of the result was written and the
 * counts add up (succeeded + failed + canceled == spawned, late_succeeded <=
 * succeeded); returns it. */
tether_result join_and_free(tether_scope *s);

/* A child that does nothing and succeeds (returns 0). */
int return_zero(void *arg);

/* Start a plain thread running fn(arg); asserts it started. */
pthread_t thread_start(void *(*fn)(void *), void *arg);

/* Join a thread from thread_start; asserts it joined. */
void thread_join(pthread_t th);

/* Enter / leave `t` on the calling thread; asserts success. */
void enter(tether_token *t);
void leave(tether_token *t);

/* Spawn this test program (/proc/self/exe, argv) under a token whose
 * deadline is d, then wait for it under d plus a scaled 3 s, so a child
 * that does not stop by itself at d ends the wait rather than hanging the
 * test; asserts the spawn and the wait and returns the wait status. */
int th_spawn_self_by(tether_time_t d, char *const argv[]);

/* Sleep until the current token is canceled or expires; returns that errno
 * (0 if the sleep somehow returned success). */
int sleep_forever(void);

/* sem_wait that retries on EINTR and asserts any other error away. */
void sem_wait_ok(sem_t *s);

/* Burn about n loop iterations of CPU without a system call. */
void busy_spin(unsigned n);

/* Resident set size of this process in bytes (/proc/self/statm). */
long rss_bytes(void);

/* ------------------------------------------- expectations off the main thread */

/* Code on many threads must not call Check (a passing ck_assert writes to
 * Check's pipe, a failing one exits from a random thread): bad() records the
 * first broken expectation, the main thread asserts on bad_seen(). */
__attribute__((format(printf, 1, 2))) void bad(const char *fmt, ...);

/* How many expectations broke since the start (or bad_reset()). */
int bad_seen(void);

/* The message of the first one ("" if none). */
const char *bad_first(void);

/* Forget what was recorded (between rounds of one test). */
void bad_reset(void);

/* Record (not assert) that `cond` holds, with a printf-style message. */
#define EXPECT(cond, fmt, ...)                                        \
    do {                                                              \
        if (!(cond))                                                  \
            bad("line %d: %s: " fmt, __LINE__, #cond, ##__VA_ARGS__); \
    } while (0)

/* A const pointer as the plain pointer a POSIX struct (iovec, argv) wants;
 * the callee only reads through it. */
static inline void *th_unconst(const void *p)
{
    return (void *)(uintptr_t)p;
}

#endif
