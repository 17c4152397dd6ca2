/*
 * Fixtures shared by the fault-injection suites (test/test_fault_*.c): the
 * link-time wrappers, the scenarios and the sweep driver.
 *
 * Failure sweep: every resource acquisition inside tether (memory, threads,
 * eventfds — the funnel in src/internal.h) is made to fail in turn, and each
 * representative scenario is run once per injection point: the first
 * acquisition fails, then the second, ... until a run makes fewer
 * acquisitions than the point armed (tether_fault_seen() < nth). Every run
 * checks that
 *  - each call returns 0 or an error from its list in include/tether.h;
 *  - the injected failure surfaced as an error somewhere (not swallowed);
 *  - every thread that started was joined and every fd closed (the counts
 *    return to the baseline);
 *  - tether's live heap blocks return to the baseline: malloc/calloc/
 *    realloc/free are wrapped at link time (-Wl,--wrap, see
 *    test/CMakeLists.txt), so a leak is pinned to its injection point in any
 *    build, and LeakSanitizer checks the whole run again under ASan.
 * Also wrapped: the funnel's check itself, so that an allocation made
 * without it (which no sweep can ever fail) is found and named.
 * Also here: real fd exhaustion (RLIMIT_NOFILE is enforced for root), and a
 * check that tether's own allocations all go through the funnel.
 *
 * Only built with -DTETHER_FAULT_INJECTION=ON (the test controls
 * tether_fault_arm/tether_fault_seen are declared in internal.h).
 */
#ifndef TETHER_TEST_FAULT_FIXTURES_H
#define TETHER_TEST_FAULT_FIXTURES_H

#include "support.h"
#include "internal.h"
#include "fault_wrap.h"
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------- recording from any thread */

/* Scenario code runs on many threads and must not call Check (a passing
 * ck_assert writes to Check's pipe, a failing one exits the process from a
 * random thread): it records the first broken expectation here, and the
 * sweep asserts on it in the main thread. */
static atomic_int observed; /* an injection-class error surfaced */

/* Whether e (0 or an error number) is one of the listed values. */
static inline bool in_list(int e, const int *list)
{
    for (; *list >= 0; list++)
        if (e == *list)
            return true;
    return false;
}

#define ONE_OF(e, ...) in_list((e), (const int[]){ __VA_ARGS__, -1 })

/* The errors an injected failure maps to (ENOMEM, EAGAIN, EMFILE). */
static inline bool injected(int e)
{
    return e == ENOMEM || e == EAGAIN || e == EMFILE;
}

static inline void saw(int e)
{
    if (injected(e))
        atomic_store(&observed, 1);
}

/* ------------------------------------------------------------ small tools */

/* /proc/self/task/<tid>/syscall, opened (it can be re-read with pread). */
static inline int open_syscall_file(pid_t tid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
    return open(path, O_RDONLY | O_CLOEXEC);
}

/* Whether the thread whose syscall file is fd is blocked in system call nr. */
static inline bool fd_in_syscall(int fd, long nr)
{
    char buf[128];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    if (buf[0] < '0' || buf[0] > '9')
        return false; /* "running" */
    return strtol(buf, NULL, 10) == nr;
}

/* Whether thread `tid` of this process is blocked in system call `nr`. */
static inline bool in_syscall(pid_t tid, long nr)
{
    int fd = open_syscall_file(tid);
    if (fd < 0)
        return false;
    bool in = fd_in_syscall(fd, nr);
    close(fd);
    return in;
}

/* Poll pred(arg) until true or a generous bound passes (then false). This
 * waits for a state, it is not a sleep used as a handshake. */
static inline bool wait_until(bool (*pred)(void *), void *arg)
{
    tether_time_t end = tether_now() + th_bound_ns(20000);
    while (!pred(arg)) {
        if (tether_now() > end)
            return false;
        usleep(50);
    }
    return true;
}

static inline void make_pipe(int p[2])
{
    if (pipe2(p, O_CLOEXEC) != 0)
        bad("pipe2: %s", strerror(errno));
}

static inline void close_pipe(int p[2])
{
    close(p[0]);
    close(p[1]);
}

/* No child process left unreaped. */
static inline bool no_zombies(void)
{
    return waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD;
}

/* ====================================================================== */
/* Scenario: a token tree with callbacks, entries, a blocked reader, a     */
/* signal relay                                                            */
/* ====================================================================== */

enum { NODES = 15 };

struct reader {
    tether_token *t;
    int fd;
    atomic_int state, tid;
    ssize_t n;
    int err;
};

static inline void *reader_main(void *arg)
{
    struct reader *r = arg;
    atomic_store(&r->tid, th_gettid());
    int rc = tether_token_enter(r->t); /* depth 1: no allocation */
    EXPECT(rc == 0, "enter: %s", strerror(rc));
    atomic_store(&r->state, 1);
    char c;
    r->n = tether_read(r->fd, &c, 1);
    r->err = errno;
    rc = tether_token_leave(r->t);
    EXPECT(rc == 0, "leave: %s", strerror(rc));
    atomic_store(&r->state, 2);
    return NULL;
}

static inline bool reader_ready(void *arg)
{
    struct reader *r = arg;
    int st = atomic_load(&r->state);
    return st == 2 || (st == 1 && in_syscall(atomic_load(&r->tid), SYS_ppoll));
}

static inline void count_hit(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

static inline int add_one(void *arg)
{
    ++*(int *)arg;
    return 0;
}

static inline bool cause_set(void *arg)
{
    return tether_token_cause(arg) != TETHER_CAUSE_NONE;
}

static inline void scenario_token_tree(void)
{
    tether_token *node[NODES] = { 0 };
    tether_callback *cb[NODES] = { 0 };
    atomic_int hits[NODES];
    for (int k = 0; k < NODES; k++)
        atomic_init(&hits[k], 0);
    int p[2];
    make_pipe(p);

    int rc = tether_token_new(&node[0], NULL, TETHER_NEVER);
    if (rc) {
        EXPECT(rc == ENOMEM, "tether_token_new: %s", strerror(rc));
        saw(rc);
        close_pipe(p);
        return;
    }
    for (int k = 1; k < NODES; k++) {
        tether_token *parent = node[(k - 1) / 2];
        if (!parent)
            continue;
        rc = tether_token_new(&node[k], parent,
                              k % 3 == 0 ? tether_deadline_after(tether_sec(60)) : TETHER_NEVER);
        if (rc) {
            EXPECT(rc == ENOMEM, "tether_token_new: %s", strerror(rc));
            saw(rc);
            node[k] = NULL;
        }
    }
    for (int k = 0; k < NODES; k++) {
        if (!node[k])
            continue;
        rc = tether_token_on_cancel(node[k], count_hit, &hits[k], &cb[k]);
        if (rc) {
            EXPECT(rc == ENOMEM, "tether_token_on_cancel: %s", strerror(rc));
            saw(rc);
            cb[k] = NULL;
        }
    }

    /* A request context on every other node: the copy needs memory; a
     * refused one leaves the old value (none), and every copy goes with its
     * token at the end. */
    for (int k = 0; k < NODES; k += 2) {
        if (!node[k])
            continue;
        rc = tether_token_set_context(node[k], k % 4 ? "req-id" : "");
        char buf[TETHER_CONTEXT_MAX];
        int got = tether_token_context(node[k], buf, sizeof buf);
        if (rc) {
            EXPECT(rc == ENOMEM, "tether_token_set_context: %s", strerror(rc));
            EXPECT(got == ENOENT || (got == 0 && k > 0), "after a refused set: %d", got);
            saw(rc);
        } else {
            EXPECT(got == 0 && strcmp(buf, k % 4 ? "req-id" : "") == 0, "lookup: %d", got);
        }
    }

    /* Entries beyond the 16 kept inline need memory. */
    tether_token *leaf = node[0];
    for (int k = NODES - 1; k > 0; k--)
        if (node[k]) {
            leaf = node[k];
            break;
        }
    int depth = 0;
    for (; depth < 20; depth++) {
        rc = tether_token_enter(leaf);
        if (rc) {
            EXPECT(rc == ENOMEM, "tether_token_enter: %s", strerror(rc));
            saw(rc);
            break;
        }
    }
    int x = 0;
    bool fired = true;
    rc = tether_with_timeout(tether_sec(60), add_one, &x, &fired);
    EXPECT(ONE_OF(rc, 0, ENOMEM), "tether_with_timeout: %s", strerror(rc));
    EXPECT(!fired, "fired");
    EXPECT(x == (rc == 0), "fn ran %d times, rc %d", x, rc);
    saw(rc);
    while (depth-- > 0) {
        rc = tether_token_leave(leaf);
        EXPECT(rc == 0, "tether_token_leave: %s", strerror(rc));
    }
    EXPECT(tether_current() == NULL, "entries left");

    /* A thread blocked in tether_read under a deep node. */
    struct reader rd = { .t = node[13] ? node[13] : node[0], .fd = p[0] };
    pthread_t th;
    if (pthread_create(&th, NULL, reader_main, &rd) != 0) {
        bad("pthread_create");
        return;
    }
    EXPECT(wait_until(reader_ready, &rd), "reader never blocked");

    /* The signal-safe relay on node 2. */
    tether_sigcancel *sc = NULL;
    if (node[2]) {
        rc = tether_sigcancel_new(&sc, node[2], EPIPE);
        if (rc) {
            EXPECT(ONE_OF(rc, ENOMEM, EMFILE, EAGAIN), "tether_sigcancel_new: %s", strerror(rc));
            EXPECT(sc == NULL, "handle on failure");
            saw(rc);
        } else {
            tether_sigcancel_fire(sc);
            EXPECT(wait_until(cause_set, node[2]), "the relay never canceled");
            EXPECT(tether_token_cause(node[2]) == TETHER_CAUSE_SIGNAL, "cause %s",
                   tether_cause_name(tether_token_cause(node[2])));
            EXPECT(tether_token_error(node[2]) == EPIPE, "error %d", tether_token_error(node[2]));
        }
    }
    rc = tether_token_cancel(node[0], 0);
    EXPECT(rc == 0, "tether_token_cancel: %s", strerror(rc));

    /* Born canceled; a callback on it runs at once. */
    tether_token *late;
    rc = tether_token_new(&late, node[1] ? node[1] : node[0], TETHER_NEVER);
    if (rc) {
        EXPECT(rc == ENOMEM, "tether_token_new: %s", strerror(rc));
        saw(rc);
    } else {
        EXPECT(tether_token_check(late) == ECANCELED, "not born canceled");
        atomic_int late_hits = 0;
        tether_callback *lcb;
        rc = tether_token_on_cancel(late, count_hit, &late_hits, &lcb);
        if (rc) {
            EXPECT(rc == ENOMEM, "tether_token_on_cancel: %s", strerror(rc));
            saw(rc);
        } else {
            EXPECT(atomic_load(&late_hits) == 1, "callback ran %d times", atomic_load(&late_hits));
            bool ran = false;
            EXPECT(tether_token_off_cancel(lcb, &ran) == 0 && ran, "off_cancel");
        }
        EXPECT(tether_token_free(late) == 0, "free late");
    }

    pthread_join(th, NULL);
    EXPECT(rd.n == -1 && ONE_OF(rd.err, ECANCELED, ENOMEM, EMFILE), "reader: %zd, %s", rd.n,
           strerror(rd.err));
    saw(rd.err);
    /* The relay canceled node 2's subtree and runs its callbacks on its own
     * thread; once freed, that cancellation has fully taken effect. */
    if (sc)
        EXPECT(tether_sigcancel_free(sc) == 0, "sigcancel_free");
    for (int k = 0; k < NODES; k++) {
        if (!cb[k])
            continue;
        EXPECT(atomic_load(&hits[k]) == 1, "callback %d ran %d times", k, atomic_load(&hits[k]));
        bool ran = false;
        rc = tether_token_off_cancel(cb[k], &ran);
        EXPECT(rc == 0 && ran, "off_cancel %d: %d ran %d", k, rc, ran);
    }
    for (int k = NODES - 1; k >= 0; k--)
        if (node[k]) {
            rc = tether_token_free(node[k]);
            EXPECT(rc == 0, "free node %d: %s", k, strerror(rc));
        }
    close_pipe(p);
}

/* ====================================================================== */
/* Scenario: tether_retry with per-attempt timeouts and scopes inside      */
/* ====================================================================== */

static tether_time_t fake_time;

static inline tether_time_t fake_now(void *ctx)
{
    (void)ctx;
    return fake_time;
}

static inline int fake_sleep_until(void *ctx, tether_time_t when)
{
    (void)ctx;
    if (when > fake_time)
        fake_time = when;
    return 0;
}

static inline int retry_attempt(void *arg)
{
    int *calls = arg;
    if (++*calls <= 2)
        return EAGAIN; /* transient: retried */
    tether_scope *s;
    int rc = tether_scope_open(&s, NULL);
    if (rc) {
        EXPECT(rc == ENOMEM, "tether_scope_open: %s", strerror(rc));
        saw(rc);
        return rc;
    }
    int first = 0;
    for (int i = 0; i < 2; i++) {
        int r = tether_spawn(s, return_zero, NULL, NULL, NULL);
        if (r) {
            EXPECT(ONE_OF(r, ENOMEM, EAGAIN), "tether_spawn: %s", strerror(r));
            saw(r);
            if (!first)
                first = r;
        }
    }
    tether_result res;
    EXPECT(tether_scope_join(s, &res) == 0, "join");
    EXPECT(tether_scope_free(s) == 0, "free");
    return first;
}

static inline void scenario_retry(void)
{
    fake_time = tether_now();
    int calls = 0;
    tether_retry_opts o = { .initial_delay_ns = tether_ms(1),
                            .jitter = TETHER_RETRY_JITTER_NONE,
                            .max_attempts = 8,
                            .attempt_timeout_ns = tether_sec(60),
                            .seed = 1,
                            .clock = { .now = fake_now, .sleep_until = fake_sleep_until } };
    tether_retry_result res;
    int rc = tether_retry(retry_attempt, &calls, &o, &res);
    /* ENOMEM: the per-attempt token, or an attempt's (permanent) error; an
     * injected EAGAIN is transient and the next attempt succeeds. */
    EXPECT(ONE_OF(rc, 0, ENOMEM), "tether_retry: %s", strerror(rc));
    saw(rc);
    EXPECT(res.error == rc, "result error %d, returned %d", res.error, rc);
    EXPECT(res.stop == (rc ? TETHER_RETRY_STOP_PERMANENT : TETHER_RETRY_STOP_SUCCEEDED), "stop %s",
           tether_retry_stop_name(res.stop));
}

#endif
