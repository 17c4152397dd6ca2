/*
 * Fixtures shared by the race stress suites (test/test_stress_*.c).
 *
 * Race stress: cancellation racing everything it can race. Each test draws
 * its random choices from one seed, printed at its start (replay with
 * TETHER_TEST_SEED=<seed>; thread timing still varies), runs a short default
 * here and scales its iteration count (and its timeout) by TETHER_STRESS,
 * e.g. TETHER_STRESS=25 for a long local run. The suite also runs under
 * ASan and TSan in CI.
 *
 * Random moments are busy-waits on tether_now (0-100 µs): a sleep would
 * round them up to the timer slack. Threads that must line up use barriers;
 * nothing sleeps as a handshake.
 *
 * A long run: TETHER_STRESS=25 build/<dir>/test/test_stress_races and
 * test_stress_trees (directly: ctest stops any suite after 600 s).
 */
#ifndef TETHER_TEST_STRESS_FIXTURES_H
#define TETHER_TEST_STRESS_FIXTURES_H

#include "support.h"

#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* ------------------------------------------------------------ small tools */

/* Worker threads record the first broken expectation here (Check's asserts
 * are for the main thread); the main thread asserts on it. */

/* In the main thread: no Check call unless it fails (a passing ck_assert
 * writes to Check's pipe, which would slow the races down). */
#define REQUIRE(cond, fmt, ...)                                                \
    do {                                                                       \
        if (!(cond))                                                           \
            ck_abort_msg("line %d: %s: " fmt, __LINE__, #cond, ##__VA_ARGS__); \
    } while (0)

static inline void no_bad(void)
{
    REQUIRE(bad_seen() == 0, "%s", bad_first());
}

/* A uniformly drawn duration in [0, max_us] µs, in ns. */
static inline int64_t rand_ns(uint64_t *rng, int max_us)
{
    return (int64_t)(th_rand(rng) % ((uint64_t)max_us * 1000 + 1));
}

static inline void spin_ns(int64_t ns)
{
    tether_time_t end = tether_now() + ns;
    while (tether_now() < end) {
    }
}

static inline void barrier(pthread_barrier_t *b)
{
    int rc = pthread_barrier_wait(b);
    if (rc != 0 && rc != PTHREAD_BARRIER_SERIAL_THREAD)
        bad("pthread_barrier_wait: %d", rc);
}

static inline void count_cb(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

#endif
