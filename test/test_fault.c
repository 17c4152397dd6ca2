/*
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
#define _GNU_SOURCE
#include "support.h"
#include "internal.h"

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

/* ------------------------------------------------- heap blocks, counted */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);

/* The blocks allocated through the wrappers and not yet freed, in a small
 * open-addressing set: a free of a block that glibc allocated internally
 * (Check's stdio does that) must not count. */
enum { BLOCK_SLOTS = 1 << 16 };
static void *blocks[BLOCK_SLOTS];
static pthread_mutex_t blocks_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_long live_blocks;

static size_t home_slot(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 29;
    x *= 0x9E3779B97F4A7C15ull;
    return (size_t)(x >> 48); /* 16 bits */
}

static void track(void *p)
{
    pthread_mutex_lock(&blocks_mu);
    size_t i = home_slot(p);
    for (size_t n = 0; blocks[i]; n++) {
        if (n == BLOCK_SLOTS)
            abort(); /* more live blocks than the set holds */
        i = (i + 1) % BLOCK_SLOTS;
    }
    blocks[i] = p;
    atomic_fetch_add_explicit(&live_blocks, 1, memory_order_relaxed);
    pthread_mutex_unlock(&blocks_mu);
}

/* Forget p if it is tracked (linear probing, deletion by backward shift). */
static bool untrack(void *p)
{
    pthread_mutex_lock(&blocks_mu);
    size_t i = home_slot(p);
    while (blocks[i] && blocks[i] != p)
        i = (i + 1) % BLOCK_SLOTS;
    bool found = blocks[i] == p;
    if (found) {
        blocks[i] = NULL;
        for (size_t j = (i + 1) % BLOCK_SLOTS; blocks[j]; j = (j + 1) % BLOCK_SLOTS) {
            size_t k = home_slot(blocks[j]);
            /* Move blocks[j] into the hole unless its home lies in (i, j]. */
            bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
            if (!stays) {
                blocks[i] = blocks[j];
                blocks[j] = NULL;
                i = j;
            }
        }
        atomic_fetch_sub_explicit(&live_blocks, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&blocks_mu);
    return found;
}

/* Which acquisitions went through the funnel: its check
 * (tether__fault_hit, wrapped too) leaves a mark on the calling thread that
 * the acquisition right after it consumes. An allocation that finds no mark
 * bypassed the funnel; counted while probing (test code then allocates
 * nothing). eventfd and pthread_create are wrapped only to consume marks. */
bool __real_tether__fault_hit(void);
bool __wrap_tether__fault_hit(void);
int __real_eventfd(unsigned int initval, int flags);
int __wrap_eventfd(unsigned int initval, int flags);
int __real_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                          void *arg);
int __wrap_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                          void *arg);

static _Thread_local bool funnel_mark;
static atomic_bool probing;
static atomic_long probe_unfunnelled;
static void *_Atomic probe_site;

bool __wrap_tether__fault_hit(void)
{
    bool hit = __real_tether__fault_hit();
    funnel_mark = !hit;
    return hit;
}

int __wrap_eventfd(unsigned int initval, int flags)
{
    funnel_mark = false;
    return __real_eventfd(initval, flags);
}

int __wrap_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                          void *arg)
{
    funnel_mark = false;
    return __real_pthread_create(th, attr, fn, arg);
}

static void allocated(void *p, void *site)
{
    track(p);
    bool marked = funnel_mark;
    funnel_mark = false;
    if (!marked && atomic_load_explicit(&probing, memory_order_relaxed) &&
        atomic_fetch_add(&probe_unfunnelled, 1) == 0)
        atomic_store(&probe_site, site);
}

void *__wrap_malloc(size_t n)
{
    void *p = __real_malloc(n);
    if (p)
        allocated(p, __builtin_return_address(0));
    return p;
}

void *__wrap_calloc(size_t n, size_t size)
{
    void *p = __real_calloc(n, size);
    if (p)
        allocated(p, __builtin_return_address(0));
    return p;
}

void *__wrap_realloc(void *p, size_t n)
{
    bool tracked = p && untrack(p);
    void *q = __real_realloc(p, n);
    if (q && (tracked || !p))
        track(q);
    else if (!q && tracked && n != 0)
        track(p); /* failed: p is still live */
    return q;
}

void __wrap_free(void *p)
{
    if (p)
        untrack(p);
    __real_free(p);
}

/* ---------------------------------------------- recording from any thread */

/* Scenario code runs on many threads and must not call Check (a passing
 * ck_assert writes to Check's pipe, a failing one exits the process from a
 * random thread): it records the first broken expectation here, and the
 * sweep asserts on it in the main thread. */
static atomic_int observed; /* an injection-class error surfaced */

/* Whether e (0 or an error number) is one of the listed values. */
static bool in_list(int e, const int *list)
{
    for (; *list >= 0; list++)
        if (e == *list)
            return true;
    return false;
}
#define ONE_OF(e, ...) in_list((e), (const int[]){ __VA_ARGS__, -1 })

/* The errors an injected failure maps to (ENOMEM, EAGAIN, EMFILE). */
static bool injected(int e)
{
    return e == ENOMEM || e == EAGAIN || e == EMFILE;
}

static void saw(int e)
{
    if (injected(e))
        atomic_store(&observed, 1);
}

/* ------------------------------------------------------------ small tools */

/* /proc/self/task/<tid>/syscall, opened (it can be re-read with pread). */
static int open_syscall_file(pid_t tid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
    return open(path, O_RDONLY | O_CLOEXEC);
}

/* Whether the thread whose syscall file is fd is blocked in system call nr. */
static bool fd_in_syscall(int fd, long nr)
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
static bool in_syscall(pid_t tid, long nr)
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
static bool wait_until(bool (*pred)(void *), void *arg)
{
    tether_time_t end = tether_now() + th_bound_ns(20000);
    while (!pred(arg)) {
        if (tether_now() > end)
            return false;
        usleep(50);
    }
    return true;
}

static int sleep_forever(void)
{
    return tether_sleep_until(TETHER_NEVER) == 0 ? 0 : errno;
}

static void make_pipe(int p[2])
{
    if (pipe2(p, O_CLOEXEC) != 0)
        bad("pipe2: %s", strerror(errno));
}

static void close_pipe(int p[2])
{
    close(p[0]);
    close(p[1]);
}

/* No child process left unreaped. */
static bool no_zombies(void)
{
    return waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD;
}

/* ---------------------------------------------------------------- sweep */

struct scenario {
    const char *name;
    void (*run)(void);
    /* Injected failures it may absorb by design (a fallback), so one need
     * not surface as an error. */
    bool may_absorb;
};

/* Run sc once per injection point; returns how many points were swept. */
static long sweep(const struct scenario *sc)
{
    /* A first clean run: one-time lazy state is not a leak. */
    tether_fault_arm(0);
    sc->run();
    ck_assert_msg(bad_seen() == 0, "%s, clean run: %s", sc->name, bad_first());

    th_baseline b = th_baseline_take();
    long blocks = atomic_load(&live_blocks);

    long nth;
    for (nth = 1;; nth++) {
        atomic_store(&observed, 0);
        tether_fault_arm(nth);
        sc->run();
        long seen = tether_fault_seen();
        tether_fault_arm(0);

        ck_assert_msg(bad_seen() == 0, "%s, failing acquisition %ld: %s", sc->name,
                      nth, bad_first());
        ck_assert_msg(seen < nth || sc->may_absorb || atomic_load(&observed),
                      "%s: acquisition %ld failed but no call reported it", sc->name, nth);
        int threads = th_wait_thread_count(b.threads);
        ck_assert_msg(threads == b.threads, "%s, failing acquisition %ld: %d threads, not %d",
                      sc->name, nth, threads, b.threads);
        int fds = th_fd_count();
        ck_assert_msg(fds == b.fds, "%s, failing acquisition %ld: %d fds open, not %d", sc->name,
                      nth, fds, b.fds);
        long now_blocks = atomic_load(&live_blocks);
        ck_assert_msg(now_blocks == blocks,
                      "%s, failing acquisition %ld: %ld heap blocks live, not %ld", sc->name,
                      nth, now_blocks, blocks);
        ck_assert_msg(no_zombies(), "%s, failing acquisition %ld: a child process was left",
                      sc->name, nth);
        if (seen < nth)
            break;
        ck_assert_msg(nth < 100000, "%s: the sweep does not end", sc->name);
    }
    fprintf(stderr, "fault sweep %s: %ld injection points\n", sc->name, nth - 1);
    th_baseline_check(b);
    return nth - 1;
}

/* ====================================================================== */
/* Scenario: a scope of 8 children with nested scopes and timeouts        */
/* ====================================================================== */

enum { TREE_KIDS = 8, TREE_GC = 3 };
enum gc_kind { GC_NONE, GC_READ, GC_SLEEP, GC_DEADLINE };

struct gc {
    enum gc_kind kind;
    atomic_bool used;  /* spawned (set before the spawn, cleared if it failed) */
    atomic_int state;  /* 1: about to block, 2: done */
    atomic_int tid;
};

static struct {
    int pipe[2];       /* nobody writes: readers block until cancelled */
    atomic_int started, finished, settled;
    struct gc gc[TREE_KIDS][TREE_GC];
} T;

static int gc_sleeper(void *arg)
{
    struct gc *g = arg;
    atomic_store(&g->state, 1);
    return sleep_forever();
}

static int gc_main(void *arg)
{
    struct gc *g = arg;
    atomic_fetch_add(&T.started, 1);
    atomic_store(&g->tid, th_gettid());
    int rc = 0;
    switch (g->kind) {
    case GC_READ: {
        atomic_store(&g->state, 1);
        char c;
        ssize_t n = tether_read(T.pipe[0], &c, 1);
        rc = errno;
        EXPECT(n == -1, "tether_read returned %zd", n);
        EXPECT(ONE_OF(rc, ECANCELED, ENOMEM, EMFILE), "tether_read: %s", strerror(rc));
        break;
    }
    case GC_SLEEP: {
        bool fired = true;
        rc = tether_with_timeout(tether_sec(60), gc_sleeper, g, &fired);
        EXPECT(ONE_OF(rc, ECANCELED, ENOMEM), "tether_with_timeout: %s", strerror(rc));
        EXPECT(!fired, "a 60 s timeout block fired");
        break;
    }
    case GC_DEADLINE:
        atomic_store(&g->state, 1);
        rc = sleep_forever();
        EXPECT(ONE_OF(rc, ETIMEDOUT, ECANCELED), "sleep under a 1 ms child: %s", strerror(rc));
        break;
    case GC_NONE:
        break;
    }
    saw(rc);
    atomic_store(&g->state, 2);
    atomic_fetch_add(&T.finished, 1);
    return rc;
}

static int kid_main(void *arg)
{
    int i = (int)(intptr_t)arg;
    atomic_fetch_add(&T.started, 1);
    tether_scope_opts o = { .policy = i % 2 ? TETHER_POLICY_FAIL_FAST : TETHER_POLICY_SUPERVISOR,
                            .timeout_ns = tether_sec(60),
                            .name = "nested" };
    tether_scope *s;
    int rc = tether_scope_open(&s, &o);
    if (rc) {
        EXPECT(rc == ENOMEM, "nested tether_scope_open: %s", strerror(rc));
        saw(rc);
        atomic_fetch_add(&T.settled, 1);
        atomic_fetch_add(&T.finished, 1);
        return rc;
    }
    /* Odd kids: fail-fast, a reader and a background sleeper. Even kids:
     * supervisor (a child's own deadline fails it alone), a reader, a
     * sleeper with a small stack and a child whose 1 ms timeout fires. */
    static const enum gc_kind kinds[2][TREE_GC] = { { GC_READ, GC_SLEEP, GC_DEADLINE },
                                                    { GC_READ, GC_SLEEP, GC_NONE } };
    int first = 0;
    for (int k = 0; k < TREE_GC; k++) {
        struct gc *g = &T.gc[i][k];
        g->kind = kinds[i % 2][k];
        if (g->kind == GC_NONE)
            continue;
        tether_spawn_opts so = { .name = "gc",
                                 .timeout_ns = g->kind == GC_DEADLINE ? tether_ms(1) : 0,
                                 .background = i % 2 && g->kind == GC_SLEEP,
                                 .stack_size = k == 1 ? 64 * 1024 : 0 };
        atomic_store(&g->used, true);
        int r = tether_spawn(s, gc_main, g, &so, NULL);
        if (r) {
            atomic_store(&g->used, false);
            EXPECT(ONE_OF(r, ENOMEM, EAGAIN, ECANCELED), "nested tether_spawn: %s", strerror(r));
            saw(r);
            if (!first && injected(r))
                first = r;
        }
    }
    atomic_fetch_add(&T.settled, 1);

    tether_result res;
    rc = tether_scope_join(s, &res);
    EXPECT(rc == 0, "nested join: %s", strerror(rc));
    rc = tether_scope_free(s);
    EXPECT(rc == 0, "nested free: %s", strerror(rc));
    if (res.outcome == TETHER_OUTCOME_FAILED || res.outcome == TETHER_OUTCOME_PARTIAL)
        EXPECT(ONE_OF(res.error, ENOMEM, EAGAIN, EMFILE, ETIMEDOUT), "nested scope failed: %s",
               strerror(res.error));
    int ret = first;
    if (!ret && res.outcome == TETHER_OUTCOME_FAILED && injected(res.error))
        ret = res.error;
    if (!ret)
        ret = tether_check();
    atomic_fetch_add(&T.finished, 1);
    return ret;
}

static bool tree_settled(void *arg)
{
    return atomic_load(&T.settled) == *(int *)arg;
}

static bool gc_ready(void *arg)
{
    struct gc *g = arg;
    int st = atomic_load(&g->state);
    if (st == 2 || (st == 1 && g->kind != GC_READ))
        return true;
    /* A reader has its eventfd once it is blocked in ppoll. */
    return st == 1 && atomic_load(&g->tid) && in_syscall(atomic_load(&g->tid), SYS_ppoll);
}

static void scenario_scope_tree(void)
{
    memset(&T, 0, sizeof T);
    make_pipe(T.pipe);
    tether_scope_opts o = { .name = "outer" };
    tether_scope *s;
    int rc = tether_scope_open(&s, &o);
    if (rc) {
        EXPECT(rc == ENOMEM, "tether_scope_open: %s", strerror(rc));
        saw(rc);
        close_pipe(T.pipe);
        return;
    }
    tether_task *task[TREE_KIDS] = { 0 };
    int spawned = 0;
    for (int i = 0; i < TREE_KIDS; i++) {
        tether_spawn_opts so = { .name = "kid",
                                 .timeout_ns = i % 3 == 0 ? tether_sec(60) : 0,
                                 .stack_size = i % 4 == 1 ? 256 * 1024 : 0 };
        rc = tether_spawn(s, kid_main, (void *)(intptr_t)i, &so, i % 2 ? &task[i] : NULL);
        if (rc) {
            EXPECT(ONE_OF(rc, ENOMEM, EAGAIN, ECANCELED), "tether_spawn: %s", strerror(rc));
            EXPECT(!task[i], "a failed spawn gave a task handle");
            saw(rc);
        } else {
            spawned++;
        }
    }
    /* Cancel only once every acquisition is made, so a clean run always
     * makes the same number and the sweep covers them all. */
    EXPECT(wait_until(tree_settled, &spawned), "children did not settle");
    for (int i = 0; i < TREE_KIDS; i++)
        for (int k = 0; k < TREE_GC; k++)
            if (atomic_load(&T.gc[i][k].used))
                EXPECT(wait_until(gc_ready, &T.gc[i][k]), "grandchild %d.%d never blocked", i, k);
    rc = tether_scope_cancel(s);
    EXPECT(rc == 0, "tether_scope_cancel: %s", strerror(rc));

    for (int i = 0; i < TREE_KIDS; i++) {
        if (!task[i])
            continue;
        int res = -1;
        rc = tether_task_wait(task[i], &res);
        EXPECT(rc == 0, "tether_task_wait: %s", strerror(rc));
        EXPECT(ONE_OF(res, ECANCELED, ENOMEM, EAGAIN, EMFILE), "kid %d returned %d", i, res);
    }
    tether_result r;
    rc = tether_scope_join(s, &r);
    EXPECT(rc == 0, "tether_scope_join: %s", strerror(rc));
    EXPECT(r.spawned == (unsigned)spawned, "spawned %u, not %d", r.spawned, spawned);
    EXPECT(r.succeeded + r.failed + r.canceled == r.spawned, "counts %u+%u+%u != %u",
           r.succeeded, r.failed, r.canceled, r.spawned);
    EXPECT(atomic_load(&T.started) == atomic_load(&T.finished),
           "%d threads started, %d finished when join returned", atomic_load(&T.started),
           atomic_load(&T.finished));
    if (!atomic_load(&observed)) {
        EXPECT(r.outcome == TETHER_OUTCOME_CANCELED && r.error == ECANCELED && r.failed == 0 &&
                   r.canceled == r.spawned,
               "clean run: outcome %s error %d failed %u", tether_outcome_name(r.outcome),
               r.error, r.failed);
    } else {
        EXPECT(r.outcome == TETHER_OUTCOME_CANCELED || r.outcome == TETHER_OUTCOME_FAILED,
               "outcome %s", tether_outcome_name(r.outcome));
        if (r.outcome == TETHER_OUTCOME_FAILED)
            EXPECT(injected(r.error) && r.error_task >= 0, "failed with %s (task %d)",
                   strerror(r.error), r.error_task);
    }
    rc = tether_scope_free(s);
    EXPECT(rc == 0, "tether_scope_free: %s", strerror(rc));
    close_pipe(T.pipe);
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

static void *reader_main(void *arg)
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

static bool reader_ready(void *arg)
{
    struct reader *r = arg;
    int st = atomic_load(&r->state);
    return st == 2 || (st == 1 && in_syscall(atomic_load(&r->tid), SYS_ppoll));
}

static void count_hit(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

static int add_one(void *arg)
{
    ++*(int *)arg;
    return 0;
}

static bool cause_set(void *arg)
{
    return tether_token_cause(arg) != TETHER_CAUSE_NONE;
}

static void scenario_token_tree(void)
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
            EXPECT(wait_until(cause_set, node[2]), "the relay never cancelled");
            EXPECT(tether_token_cause(node[2]) == TETHER_CAUSE_SIGNAL, "cause %s",
                   tether_cause_name(tether_token_cause(node[2])));
            EXPECT(tether_token_error(node[2]) == EPIPE, "error %d", tether_token_error(node[2]));
        }
    }
    rc = tether_token_cancel(node[0], 0);
    EXPECT(rc == 0, "tether_token_cancel: %s", strerror(rc));

    /* Born cancelled; a callback on it runs at once. */
    tether_token *late;
    rc = tether_token_new(&late, node[1] ? node[1] : node[0], TETHER_NEVER);
    if (rc) {
        EXPECT(rc == ENOMEM, "tether_token_new: %s", strerror(rc));
        saw(rc);
    } else {
        EXPECT(tether_token_check(late) == ECANCELED, "not born cancelled");
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
    /* The relay cancelled node 2's subtree and runs its callbacks on its own
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
/* Scenario: slots (max_children), try_spawn, scope_run, the scope guard  */
/* ====================================================================== */

static struct {
    atomic_int owner_tid;
    atomic_bool second_done;
    int first_rc, second_rc, third_rc;
} D;

static bool owner_waits_for_slot(void *arg)
{
    (void)arg;
    return atomic_load(&D.second_done) || in_syscall(atomic_load(&D.owner_tid), SYS_futex);
}

/* Frees its slot only once the owner waits for it (or gave up). */
static int slot_holder(void *arg)
{
    (void)arg;
    EXPECT(wait_until(owner_waits_for_slot, NULL), "the owner never waited for a slot");
    return 0;
}

static int slot_blocker(void *arg)
{
    (void)arg;
    return sleep_forever();
}

static int slots_body(tether_scope *s, void *arg)
{
    (void)arg;
    atomic_store(&D.owner_tid, th_gettid());
    int rc = tether_spawn(s, slot_holder, NULL, NULL, NULL);
    D.first_rc = rc;
    if (rc) {
        EXPECT(ONE_OF(rc, ENOMEM, EAGAIN), "first spawn: %s", strerror(rc));
        saw(rc);
        return rc;
    }
    /* Full: waits for the slot, under the body's current token (the scope's). */
    rc = tether_spawn(s, slot_blocker, NULL, NULL, NULL);
    atomic_store(&D.second_done, true);
    D.second_rc = rc;
    if (rc) {
        EXPECT(ONE_OF(rc, ENOMEM, EAGAIN), "second spawn: %s", strerror(rc));
        saw(rc);
    }
    rc = tether_try_spawn(s, return_zero, NULL, NULL, NULL);
    D.third_rc = rc;
    /* Full again if the second one runs; EAGAIN then means "full". */
    EXPECT(ONE_OF(rc, 0, ENOMEM, EAGAIN), "try_spawn: %s", strerror(rc));
    saw(rc == EAGAIN && D.second_rc == 0 ? 0 : rc);
    rc = tether_scope_cancel(s);
    EXPECT(rc == 0, "tether_scope_cancel: %s", strerror(rc));
    return 0;
}

static void scenario_slots(void)
{
    memset(&D, 0, sizeof D);
    tether_scope_opts o = { .max_children = 1, .name = "slots" };
    tether_result r;
    int rc = tether_scope_run(&o, slots_body, NULL, &r);
    EXPECT(ONE_OF(rc, 0, ENOMEM), "tether_scope_run: %s", strerror(rc));
    saw(rc);
    if (rc == 0) {
        if (D.first_rc)
            EXPECT(r.outcome == TETHER_OUTCOME_FAILED && r.error == D.first_rc, "outcome %s %d",
                   tether_outcome_name(r.outcome), r.error);
        else
            EXPECT(r.outcome == TETHER_OUTCOME_CANCELED, "outcome %s",
                   tether_outcome_name(r.outcome));
    }

    {
        TETHER_SCOPE_GUARD(g, NULL);
        if (!g) {
            atomic_store(&observed, 1); /* the guard's open failed */
        } else {
            rc = tether_spawn(g, return_zero, NULL, NULL, NULL);
            EXPECT(ONE_OF(rc, 0, ENOMEM, EAGAIN), "spawn in guard: %s", strerror(rc));
            saw(rc);
        }
    }
}

/* ====================================================================== */
/* Scenario: tether_retry with per-attempt timeouts and scopes inside      */
/* ====================================================================== */

static tether_time_t fake_time;

static tether_time_t fake_now(void *ctx)
{
    (void)ctx;
    return fake_time;
}

static int fake_sleep_until(void *ctx, tether_time_t when)
{
    (void)ctx;
    if (when > fake_time)
        fake_time = when;
    return 0;
}

static int retry_attempt(void *arg)
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

static void scenario_retry(void)
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
    EXPECT(res.stop == (rc ? TETHER_RETRY_STOP_PERMANENT : TETHER_RETRY_STOP_SUCCEEDED),
           "stop %s", tether_retry_stop_name(res.stop));
}

/* ====================================================================== */
/* Scenario: child processes under a token                                 */
/* ====================================================================== */

static struct {
    atomic_int waiter_tid;
    tether_token *t;
} P;

static bool waiter_blocked(void *arg)
{
    (void)arg;
    return in_syscall(atomic_load(&P.waiter_tid), SYS_ppoll);
}

static void *proc_canceller(void *arg)
{
    (void)arg;
    EXPECT(wait_until(waiter_blocked, NULL), "tether_proc_wait never blocked");
    tether_token_cancel(P.t, 0);
    return NULL;
}

static void scenario_process(void)
{
    int rc = tether_token_new(&P.t, NULL, TETHER_NEVER);
    if (rc) {
        EXPECT(rc == ENOMEM, "tether_token_new: %s", strerror(rc));
        saw(rc);
        return;
    }
    rc = tether_token_enter(P.t);
    EXPECT(rc == 0, "enter");
    atomic_store(&P.waiter_tid, th_gettid());

    char *true_argv[] = { "true", NULL };
    int ws = -1;
    rc = tether_proc_run("/bin/true", true_argv, NULL, &ws);
    EXPECT(ONE_OF(rc, 0, ENOMEM, EMFILE, EAGAIN), "tether_proc_run: %s", strerror(rc));
    saw(rc);
    if (rc == 0)
        EXPECT(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "status %#x", ws);

    char *sleep_argv[] = { "sleep", "60", NULL };
    tether_proc_opts po = { .grace_ns = -1 };
    tether_proc *p = NULL;
    rc = tether_proc_spawn(&p, "/bin/sleep", sleep_argv, &po);
    EXPECT(ONE_OF(rc, 0, ENOMEM, EMFILE, EAGAIN), "tether_proc_spawn: %s", strerror(rc));
    saw(rc);
    if (rc == 0) {
        pthread_t th;
        if (pthread_create(&th, NULL, proc_canceller, NULL) != 0) {
            bad("pthread_create");
        } else {
            rc = tether_proc_wait(p, &ws);
            EXPECT(rc == ECANCELED, "tether_proc_wait: %s", strerror(rc));
            EXPECT(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL, "status %#x", ws);
            pthread_join(th, NULL);
        }
    }
    rc = tether_token_leave(P.t);
    EXPECT(rc == 0, "leave");
    rc = tether_token_free(P.t);
    EXPECT(rc == 0, "free: %s", strerror(rc));
}

/* ====================================================================== */
/* Scenario: legacy waits under a token (ppoll, condvar, semaphore,        */
/* whole-buffer read), each ending by its own timeout or data             */
/* ====================================================================== */

static struct timespec realtime_after(int64_t ns)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t t = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + ns;
    return (struct timespec){ .tv_sec = t / 1000000000, .tv_nsec = t % 1000000000 };
}

static void scenario_legacy(void)
{
    tether_token *t;
    int rc = tether_token_new(&t, NULL, TETHER_NEVER);
    if (rc) {
        EXPECT(rc == ENOMEM, "tether_token_new: %s", strerror(rc));
        saw(rc);
        return;
    }
    EXPECT(tether_token_enter(t) == 0, "enter");
    int p[2];
    make_pipe(p);

    /* Waits with the token's eventfd. */
    struct pollfd pf = { .fd = p[0], .events = POLLIN };
    struct timespec ms = { 0, 1000000 };
    int n = tether_ppoll(&pf, 1, &ms, NULL);
    if (n < 0) {
        EXPECT(ONE_OF(errno, ENOMEM, EMFILE), "tether_ppoll: %s", strerror(errno));
        saw(errno);
    } else {
        EXPECT(n == 0, "tether_ppoll: %d", n);
    }

    /* Registers a callback on the token for each wait. */
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    pthread_mutex_lock(&m);
    struct timespec soon = realtime_after(tether_ms(1));
    do
        rc = tether_cond_timedwait(&c, &m, &soon);
    while (rc == 0); /* spurious wake-ups */
    EXPECT(ONE_OF(rc, ETIMEDOUT, ENOMEM), "tether_cond_timedwait: %s", strerror(rc));
    saw(rc);
    pthread_mutex_unlock(&m);

    sem_t sem;
    sem_init(&sem, 0, 0);
    soon = realtime_after(tether_ms(1));
    rc = tether_sem_timedwait(&sem, &soon);
    EXPECT(rc == -1 && errno == ETIMEDOUT, "tether_sem_timedwait: %d %s", rc, strerror(errno));
    sem_destroy(&sem);

    /* Data already there: one transfer, no wait. */
    char buf[4];
    EXPECT(write(p[1], "abcd", 4) == 4, "write");
    size_t moved = 0;
    ssize_t got = tether_read_all(p[0], buf, sizeof buf, &moved);
    EXPECT(got == 4 && moved == 4, "tether_read_all: %zd (%zu moved), %s", got, moved,
           strerror(errno));

    close_pipe(p);
    EXPECT(tether_token_leave(t) == 0, "leave");

    /* Graceful shutdown on a signal: a relay (memory, eventfd, thread). */
    int sig[] = { SIGUSR1 };
    tether_signals_opts so = { .signals = sig, .nsignals = 1 };
    tether_signals *h = NULL;
    rc = tether_signals_install(&h, t, &so);
    if (rc) {
        EXPECT(ONE_OF(rc, ENOMEM, EMFILE, EAGAIN), "tether_signals_install: %s", strerror(rc));
        saw(rc);
    } else {
        EXPECT(kill(getpid(), SIGUSR1) == 0, "kill");
        EXPECT(wait_until(cause_set, t), "the signal never cancelled the token");
        EXPECT(tether_token_cause(t) == TETHER_CAUSE_SIGNAL, "cause %s",
               tether_cause_name(tether_token_cause(t)));
        EXPECT(tether_signals_restore(h) == 0, "restore");
    }
    EXPECT(tether_token_free(t) == 0, "free");
}

/* ------------------------------------------------------------ the sweeps */

START_TEST(injection_controls)
{
    th_baseline b = th_baseline_take();
    tether_token *t;
    tether_fault_arm(1);
    ck_assert_int_eq(tether_token_new(&t, NULL, TETHER_NEVER), ENOMEM);
    ck_assert_int_eq(tether_fault_seen(), 1);
    ck_assert_int_eq(tether_token_new(&t, NULL, TETHER_NEVER), 0); /* one-shot */
    ck_assert_int_eq(tether_fault_seen(), 2);
    tether_fault_arm(0);
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(b);
}
END_TEST

START_TEST(sweep_scope_tree)
{
    static const struct scenario sc = { "scope tree", scenario_scope_tree, false };
    ck_assert_int_gt(sweep(&sc), 60);
}
END_TEST

START_TEST(sweep_token_tree)
{
    static const struct scenario sc = { "token tree", scenario_token_tree, false };
    ck_assert_int_gt(sweep(&sc), 20);
}
END_TEST

START_TEST(sweep_slots)
{
    static const struct scenario sc = { "slots, run and guard", scenario_slots, false };
    ck_assert_int_gt(sweep(&sc), 8);
}
END_TEST

START_TEST(sweep_retry)
{
    static const struct scenario sc = { "retry", scenario_retry, false };
    ck_assert_int_gt(sweep(&sc), 6);
}
END_TEST

START_TEST(sweep_legacy)
{
    static const struct scenario sc = { "legacy waits", scenario_legacy, false };
    ck_assert_int_gt(sweep(&sc), 1);
}
END_TEST

START_TEST(sweep_process)
{
    /* tether_proc_wait falls back to short polls when its token has no
     * eventfd: that injected failure is absorbed by design. */
    static const struct scenario sc = { "process", scenario_process, true };
    ck_assert_int_gt(sweep(&sc), 0);
}
END_TEST

/* ------------------------------------------- every allocation injectable */

/* Run fn, counting heap allocations that no funnel check preceded; fails
 * naming the first call site (addr2line -e test_fault). */
static void expect_funnelled(const char *what, void (*fn)(void))
{
    tether_fault_arm(LONG_MAX); /* count, never fail */
    atomic_store(&probe_unfunnelled, 0);
    atomic_store(&probe_site, NULL);
    atomic_store(&probing, true);
    fn();
    atomic_store(&probing, false);
    tether_fault_arm(0);
    ck_assert_msg(bad_seen() == 0, "%s: %s", what, bad_first());
    void *site = atomic_load(&probe_site);
    Dl_info di = { 0 };
    uintptr_t off = dladdr(site, &di) && di.dli_fbase ? (uintptr_t)site - (uintptr_t)di.dli_fbase
                                                      : (uintptr_t)site;
    ck_assert_msg(atomic_load(&probe_unfunnelled) == 0,
                  "%s: %ld allocation(s) bypass the fault-injection funnel; the first returns to "
                  "%s+%#lx (addr2line -f -e it)",
                  what, atomic_load(&probe_unfunnelled), di.dli_fname ? di.dli_fname : "?",
                  (unsigned long)off);
}

static void probe_poll_many(void)
{
    tether_token *t;
    int p[2];
    make_pipe(p);
    EXPECT(tether_token_new(&t, NULL, TETHER_NEVER) == 0, "token");
    EXPECT(tether_token_enter(t) == 0, "enter");
    struct pollfd fds[20];
    for (int i = 0; i < 20; i++)
        fds[i] = (struct pollfd){ .fd = p[0], .events = POLLIN };
    int n = tether_poll(fds, 20, 1);
    EXPECT(n == 0, "tether_poll: %d", n);
    struct timespec ms = { 0, 1000000 };
    n = tether_ppoll(fds, 20, &ms, NULL);
    EXPECT(n == 0, "tether_ppoll: %d", n);
    EXPECT(tether_token_leave(t) == 0, "leave");
    EXPECT(tether_token_free(t) == 0, "free");
    close_pipe(p);
}

static void probe_shield(void)
{
    tether_shield *sh;
    int rc = tether_shield_enter(&sh, TETHER_NEVER);
    EXPECT(rc == 0, "tether_shield_enter: %s", strerror(rc));
    if (!rc)
        EXPECT(tether_shield_leave(sh) == 0, "leave");
}

static void probe_signals(void)
{
    tether_token *t;
    EXPECT(tether_token_new(&t, NULL, TETHER_NEVER) == 0, "token");
    int sig[] = { SIGUSR1 };
    tether_signals_opts so = { .signals = sig, .nsignals = 1 };
    tether_signals *h;
    int rc = tether_signals_install(&h, t, &so);
    EXPECT(rc == 0, "tether_signals_install: %s", strerror(rc));
    if (!rc)
        EXPECT(tether_signals_restore(h) == 0, "restore");
    EXPECT(tether_token_free(t) == 0, "free");
}

static void probe_process(void)
{
    char *argv[] = { "true", NULL };
    int rc = tether_proc_run("/bin/true", argv, NULL, NULL);
    EXPECT(rc == 0, "tether_proc_run: %s", strerror(rc));
}

START_TEST(funnel_covers_scopes_and_tokens)
{
    th_baseline b = th_baseline_take();
    expect_funnelled("token tree", scenario_token_tree);
    expect_funnelled("retry", scenario_retry);
    th_baseline_check(b);
}
END_TEST

START_TEST(funnel_covers_poll)
{
    th_baseline b = th_baseline_take();
    expect_funnelled("tether_poll/tether_ppoll with 20 descriptors", probe_poll_many);
    th_baseline_check(b);
}
END_TEST

START_TEST(funnel_covers_shield)
{
    th_baseline b = th_baseline_take();
    expect_funnelled("tether_shield_enter", probe_shield);
    th_baseline_check(b);
}
END_TEST

START_TEST(funnel_covers_signals)
{
    th_baseline b = th_baseline_take();
    expect_funnelled("tether_signals_install", probe_signals);
    th_baseline_check(b);
}
END_TEST

START_TEST(funnel_covers_process)
{
    th_baseline b = th_baseline_take();
    expect_funnelled("tether_proc_run", probe_process);
    ck_assert(no_zombies());
    th_baseline_check(b);
}
END_TEST

/* ====================================================================== */
/* Real fd exhaustion: RLIMIT_NOFILE is enforced for root                  */
/* ====================================================================== */

enum { FD_LIMIT = 128 };

static struct {
    struct rlimit old;
    int fds[FD_LIMIT];
    int n;
} F;

/* Lower the soft limit and fill the table up to it, leaving `spare` free. */
static void fill_fds(int spare)
{
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &F.old), 0);
    ck_assert_int_lt(th_fd_count() + 16, FD_LIMIT);
    struct rlimit lim = F.old;
    lim.rlim_cur = FD_LIMIT;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &lim), 0);
    int base = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(base, 0);
    F.n = 0;
    F.fds[F.n++] = base;
    for (;;) {
        int fd = fcntl(base, F_DUPFD_CLOEXEC, 0);
        if (fd < 0) {
            ck_assert_int_eq(errno, EMFILE);
            break;
        }
        ck_assert_int_lt(F.n, FD_LIMIT);
        F.fds[F.n++] = fd;
    }
    while (spare-- > 0)
        close(F.fds[--F.n]);
}

static void unfill_fds(void)
{
    while (F.n > 0)
        close(F.fds[--F.n]);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &F.old), 0);
}

static int exhausted_reader(void *arg)
{
    char c;
    ssize_t n = tether_read(*(int *)arg, &c, 1);
    return n < 0 ? errno : 0;
}

START_TEST(rlimit_nofile_eventfd)
{
    th_baseline b = th_baseline_take();
    int p[2];
    make_pipe(p);
    fill_fds(0);

    /* A cancellation point that needs the token's eventfd: EMFILE at once. */
    tether_token *t;
    ck_assert_int_eq(tether_token_new(&t, NULL, TETHER_NEVER), 0);
    ck_assert_int_eq(tether_token_enter(t), 0);
    char c;
    errno = 0;
    ck_assert_int_eq(tether_read(p[0], &c, 1), -1);
    ck_assert_int_eq(errno, EMFILE);
    ck_assert_int_eq(tether_token_leave(t), 0);

    /* A relay needs one too. */
    tether_sigcancel *sc = NULL;
    ck_assert_int_eq(tether_sigcancel_new(&sc, t, 0), EMFILE);
    ck_assert_ptr_null(sc);

    /* Children that read: each fails with EMFILE; no hang. */
    tether_scope *s;
    tether_scope_opts so = { .policy = TETHER_POLICY_SUPERVISOR };
    ck_assert_int_eq(tether_scope_open(&s, &so), 0);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(tether_spawn(s, exhausted_reader, &p[0], NULL, NULL), 0);
    tether_result r;
    ck_assert_int_eq(tether_scope_join(s, &r), 0);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_FAILED);
    ck_assert_int_eq(r.error, EMFILE);
    ck_assert_uint_eq(r.failed, 4);
    ck_assert_int_eq(tether_scope_free(s), 0);
    ck_assert_int_eq(tether_token_free(t), 0);

    unfill_fds();
    close_pipe(p);
    th_baseline_check(b);
}
END_TEST

/* A reader whose syscall file is opened before the fd table is filled (no
 * fd to spare for /proc afterwards); it starts reading once released. */
struct fd_reader {
    tether_token *t;
    int fd, sysfd;
    sem_t tid_known, go;
    atomic_int tid, done;
    ssize_t n;
    int err;
};

static void *fd_reader_main(void *arg)
{
    struct fd_reader *r = arg;
    atomic_store(&r->tid, th_gettid());
    sem_post(&r->tid_known);
    while (sem_wait(&r->go) != 0)
        ;
    tether_token_enter(r->t);
    char c;
    r->n = tether_read(r->fd, &c, 1);
    r->err = errno;
    tether_token_leave(r->t);
    atomic_store(&r->done, 1);
    return NULL;
}

static bool fd_reader_blocked(void *arg)
{
    struct fd_reader *r = arg;
    return atomic_load(&r->done) || fd_in_syscall(r->sysfd, SYS_ppoll);
}

START_TEST(rlimit_nofile_last_slots)
{
    enum { K = 2 };
    th_baseline b = th_baseline_take();
    int p[2];
    make_pipe(p);
    struct fd_reader rd[K];
    pthread_t th[K];
    for (int i = 0; i < K; i++) {
        rd[i] = (struct fd_reader){ .fd = p[0] };
        sem_init(&rd[i].tid_known, 0, 0);
        sem_init(&rd[i].go, 0, 0);
        ck_assert_int_eq(tether_token_new(&rd[i].t, NULL, TETHER_NEVER), 0);
        ck_assert_int_eq(pthread_create(&th[i], NULL, fd_reader_main, &rd[i]), 0);
        while (sem_wait(&rd[i].tid_known) != 0)
            ;
        rd[i].sysfd = open_syscall_file(atomic_load(&rd[i].tid));
        ck_assert_int_ge(rd[i].sysfd, 0);
    }
    fill_fds(K);

    /* K tokens get the K free slots, the next one EMFILE... */
    for (int i = 0; i < K; i++) {
        sem_post(&rd[i].go);
        ck_assert(wait_until(fd_reader_blocked, &rd[i]));
        ck_assert_int_eq(atomic_load(&rd[i].done), 0);
    }
    tether_token *extra;
    ck_assert_int_eq(tether_token_new(&extra, NULL, TETHER_NEVER), 0);
    ck_assert_int_eq(tether_token_enter(extra), 0);
    char c;
    errno = 0;
    ck_assert_int_eq(tether_read(p[0], &c, 1), -1);
    ck_assert_int_eq(errno, EMFILE);
    ck_assert_int_eq(tether_token_leave(extra), 0);

    /* ... and the blocked ones still wake on cancel. */
    for (int i = 0; i < K; i++) {
        ck_assert_int_eq(tether_token_cancel(rd[i].t, 0), 0);
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
        ck_assert_int_eq(rd[i].n, -1);
        ck_assert_int_eq(rd[i].err, ECANCELED);
        ck_assert_int_eq(tether_token_free(rd[i].t), 0); /* closes its eventfd */
    }
    unfill_fds();
    for (int i = 0; i < K; i++) {
        close(rd[i].sysfd);
        sem_destroy(&rd[i].tid_known);
        sem_destroy(&rd[i].go);
    }

    /* The freed slots are usable again: a relay can be made now. */
    tether_sigcancel *sc;
    ck_assert_int_eq(tether_sigcancel_new(&sc, extra, 0), 0);
    tether_sigcancel_fire(sc);
    ck_assert(wait_until(cause_set, extra));
    ck_assert_int_eq(tether_sigcancel_free(sc), 0);
    ck_assert_int_eq(tether_token_free(extra), 0);
    close_pipe(p);
    th_baseline_check(b);
}
END_TEST

START_TEST(rlimit_nofile_process)
{
    th_baseline b = th_baseline_take();
    fill_fds(0);
    char *argv[] = { "true", NULL };
    tether_proc *p = NULL;
    int rc = tether_proc_spawn(&p, "/bin/true", argv, NULL);
    ck_assert_msg(rc == EMFILE, "tether_proc_spawn: %s", strerror(rc));
    ck_assert_ptr_null(p);
    unfill_fds();
    ck_assert(no_zombies());
    th_baseline_check(b);
}
END_TEST

/* tether_poll needs the token's eventfd like tether_read: with none to be
 * had, its errno must be one its header entry lists. */
START_TEST(rlimit_nofile_poll_error_documented)
{
    th_baseline b = th_baseline_take();
    int p[2];
    make_pipe(p);
    fill_fds(0);
    tether_token *t;
    ck_assert_int_eq(tether_token_new(&t, NULL, TETHER_NEVER), 0);
    ck_assert_int_eq(tether_token_enter(t), 0);
    struct pollfd pf = { .fd = p[0], .events = POLLIN };
    errno = 0;
    int n = tether_poll(&pf, 1, 1000);
    int e = errno;
    ck_assert_int_eq(tether_token_leave(t), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    unfill_fds();
    close_pipe(p);
    ck_assert_int_eq(n, -1);
    /* poll(2)'s errors, ECANCELED, ETIMEDOUT, EINTR, ENOMEM, EMFILE/ENFILE. */
    ck_assert_msg(ONE_OF(e, EFAULT, EINTR, EINVAL, ENOMEM, ECANCELED, ETIMEDOUT, EMFILE, ENFILE),
                  "tether_poll failed with %s, which include/tether.h does not list for it",
                  strerror(e));
    th_baseline_check(b);
}
END_TEST

/* ------------------------------------------------------------------ suite */

static Suite *fault_suite(void)
{
    Suite *s = suite_create("fault");
    TCase *tc = tcase_create("sweep");
    tcase_set_timeout(tc, th_timeout_s(120));
    tcase_add_test(tc, injection_controls);
    tcase_add_test(tc, sweep_scope_tree);
    tcase_add_test(tc, sweep_token_tree);
    tcase_add_test(tc, sweep_slots);
    tcase_add_test(tc, sweep_retry);
    tcase_add_test(tc, sweep_legacy);
    tcase_add_test(tc, sweep_process);
    suite_add_tcase(s, tc);

    tc = tcase_create("funnel");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, funnel_covers_scopes_and_tokens);
    tcase_add_test(tc, funnel_covers_poll);
    tcase_add_test(tc, funnel_covers_shield);
    tcase_add_test(tc, funnel_covers_signals);
    tcase_add_test(tc, funnel_covers_process);
    suite_add_tcase(s, tc);

    tc = tcase_create("rlimit");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, rlimit_nofile_eventfd);
    tcase_add_test(tc, rlimit_nofile_last_slots);
    tcase_add_test(tc, rlimit_nofile_process);
    tcase_add_test(tc, rlimit_nofile_poll_error_documented);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(fault_suite());
}
