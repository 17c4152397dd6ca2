/*
 * Fault sweep: every resource acquisition inside tether fails in turn, for
 * each representative scenario (scope tree, token tree, slots, retry, pool
 * job, legacy calls, processes, cancel hooks and descriptor spans, metrics
 * and event hooks); each run returns documented errors, surfaces the
 * failure, and leaves no thread, fd or heap block behind.
 */
#define _GNU_SOURCE
#include "fault_fixtures.h"

#include <sys/socket.h>

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
        long absorbed = tether_fault_absorbed_count();
        tether_fault_arm(nth);
        sc->run();
        long seen = tether_fault_seen();
        tether_fault_arm(0);
        /* A failure tether absorbs by design (the timer thread not started:
         * waiters enforce the deadlines) surfaces through no call. */
        if (tether_fault_absorbed_count() != absorbed)
            atomic_store(&observed, 1);

        ck_assert_msg(bad_seen() == 0, "%s, failing acquisition %ld: %s", sc->name, nth,
                      bad_first());
        ck_assert_msg(seen < nth || sc->may_absorb || atomic_load(&observed),
                      "%s: acquisition %ld failed but no call reported it", sc->name, nth);
        tether_trim(); /* the timer thread, idle now, is not a leak */
        int threads = th_wait_thread_count(b.threads);
        ck_assert_msg(threads == b.threads, "%s, failing acquisition %ld: %d threads, not %d",
                      sc->name, nth, threads, b.threads);
        int fds = th_fd_count();
        ck_assert_msg(fds == b.fds, "%s, failing acquisition %ld: %d fds open, not %d", sc->name,
                      nth, fds, b.fds);
        long now_blocks = atomic_load(&live_blocks);
        ck_assert_msg(now_blocks == blocks,
                      "%s, failing acquisition %ld: %ld heap blocks live, not %ld", sc->name, nth,
                      now_blocks, blocks);
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
    atomic_bool used; /* spawned (set before the spawn, cleared if it failed) */
    atomic_int state; /* 1: about to block, 2: done */
    atomic_int tid;
};

static struct {
    int pipe[2]; /* nobody writes: readers block until canceled */
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
    case GC_NONE: break;
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
    EXPECT(r.succeeded + r.failed + r.canceled == r.spawned, "counts %u+%u+%u != %u", r.succeeded,
           r.failed, r.canceled, r.spawned);
    EXPECT(atomic_load(&T.started) == atomic_load(&T.finished),
           "%d threads started, %d finished when join returned", atomic_load(&T.started),
           atomic_load(&T.finished));
    if (!atomic_load(&observed)) {
        EXPECT(r.outcome == TETHER_OUTCOME_CANCELED && r.error == ECANCELED && r.failed == 0 &&
                   r.canceled == r.spawned,
               "clean run: outcome %s error %d failed %u", tether_outcome_name(r.outcome), r.error,
               r.failed);
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

static void *proc_canceler(void *arg)
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
        if (pthread_create(&th, NULL, proc_canceler, NULL) != 0) {
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

/* A pool job: its token, and a scope with one child inside the job. */
static int job_with_scope(void *arg)
{
    (void)arg;
    tether_scope *s;
    int rc = tether_scope_open(&s, NULL);
    if (rc)
        return rc;
    rc = tether_spawn(s, return_zero, NULL, NULL, NULL);
    tether_result r;
    tether_scope_join(s, &r);
    tether_scope_free(s);
    return rc;
}

static void scenario_job(void)
{
    tether_token *parent;
    int rc = tether_token_new(&parent, NULL, TETHER_NEVER);
    saw(rc);
    if (rc) {
        EXPECT(rc == ENOMEM, "tether_token_new: %s", strerror(rc));
        return;
    }
    tether_job_result r;
    rc = tether_job_run(parent, tether_deadline_after(tether_sec(60)), job_with_scope, NULL, &r);
    saw(rc);
    EXPECT(ONE_OF(rc, 0, ENOMEM), "tether_job_run: %s", strerror(rc));
    if (rc == 0) {
        saw(r.result);
        EXPECT(r.ran && (r.outcome == TETHER_OUTCOME_OK ||
                         (r.outcome == TETHER_OUTCOME_FAILED && injected(r.result))),
               "tether_job_run: ran %d outcome %s result %d", r.ran, tether_outcome_name(r.outcome),
               r.result);
    }
    EXPECT(tether_token_free(parent) == 0, "parent token still busy");
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
        EXPECT(wait_until(cause_set, t), "the signal never canceled the token");
        EXPECT(tether_token_cause(t) == TETHER_CAUSE_SIGNAL, "cause %s",
               tether_cause_name(tether_token_cause(t)));
        EXPECT(tether_signals_restore(h) == 0, "restore");
    }
    EXPECT(tether_token_free(t) == 0, "free");
}

static void hook_post(void *arg)
{
    sem_post(arg);
}

static bool sem_posted(void *arg)
{
    return sem_trywait(arg) == 0;
}

/* A hook on a canceled token (the hook, its callback, a runner thread) and
 * a span that fires at once (the span, its callback). */
static void scenario_hooks(void)
{
    tether_token *t;
    int rc = tether_token_new(&t, NULL, TETHER_NEVER);
    saw(rc);
    if (rc) {
        EXPECT(rc == ENOMEM, "tether_token_new: %s", strerror(rc));
        return;
    }
    sem_t done;
    sem_init(&done, 0, 0);
    tether_hook *h;
    long absorbed = tether_fault_absorbed_count();
    rc = tether_hook_on_cancel(t, hook_post, &done, &h);
    saw(rc);
    EXPECT(ONE_OF(rc, 0, ENOMEM), "tether_hook_on_cancel: %s", strerror(rc));
    EXPECT(tether_token_cancel(t, 0) == 0, "cancel");
    if (rc == 0) {
        /* No runner could be made (absorbed): the hook waits for one. */
        bool no_runner = tether_fault_absorbed_count() != absorbed;
        bool ran_seen = !no_runner && wait_until(sem_posted, &done);
        EXPECT(no_runner || ran_seen, "the hook never ran");
        bool ran = false;
        EXPECT(tether_hook_off(h, &ran) == 0 && ran == ran_seen, "off: ran %d", ran);
    }
    sem_destroy(&done);

    int sv[2];
    EXPECT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
    EXPECT(tether_token_enter(t) == 0, "enter");
    tether_fd_span *s;
    rc = tether_fd_span_begin(sv[0], SHUT_RDWR, &s);
    saw(rc);
    EXPECT(ONE_OF(rc, 0, ENOMEM), "tether_fd_span_begin: %s", strerror(rc));
    bool fired = false;
    if (rc == 0)
        EXPECT(tether_fd_span_end(s, &fired) == 0 && fired, "span: fired %d", fired);
    EXPECT(tether_token_leave(t) == 0, "leave");
    close(sv[0]);
    close(sv[1]);
    EXPECT(tether_token_free(t) == 0, "free");
}

/* Metrics and event hooks: the snapshot's series array, the text buffer,
 * the hooks' copy. */
static void observe_opened(void *arg, tether_scope *s, const char *name, tether_token *t)
{
    (void)arg, (void)s, (void)name, (void)t;
}

static void scenario_observe(void)
{
    tether_scope_opts o = { .name = "sweep" };
    tether_scope *s;
    int rc = tether_scope_open(&s, &o);
    saw(rc);
    EXPECT(ONE_OF(rc, 0, ENOMEM), "tether_scope_open: %s", strerror(rc));
    if (rc == 0)
        EXPECT(tether_scope_free(s) == 0, "free");
    tether_metrics_snapshot snap;
    rc = tether_metrics_snapshot_take(&snap);
    saw(rc);
    EXPECT(ONE_OF(rc, 0, ENOMEM), "tether_metrics_snapshot_take: %s", strerror(rc));
    EXPECT(rc == 0 || (snap.count == 0 && snap.series == NULL), "snapshot not empty on failure");
    tether_metrics_snapshot_release(&snap);
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    EXPECT(fd >= 0, "open /dev/null");
    errno = EXDEV; /* an error number is returned: errno stays as it was */
    rc = tether_metrics_write_prometheus(fd);
    saw(rc);
    EXPECT(ONE_OF(rc, 0, ENOMEM), "tether_metrics_write_prometheus: %s", strerror(rc));
    EXPECT(errno == EXDEV, "tether_metrics_write_prometheus: errno %s", strerrorname_np(errno));
    close(fd);
    tether_events ev = { .scope_opened = observe_opened };
    rc = tether_events_set(&ev);
    saw(rc);
    EXPECT(ONE_OF(rc, 0, ENOMEM), "tether_events_set: %s", strerror(rc));
    EXPECT(tether_events_set(NULL) == 0, "tether_events_set(NULL)");
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

START_TEST(sweep_job)
{
    static const struct scenario sc = { "pool job", scenario_job, false };
    ck_assert_int_gt(sweep(&sc), 2);
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

START_TEST(sweep_hooks)
{
    /* A runner thread that cannot be created is absorbed by design. */
    static const struct scenario sc = { "cancel hooks and spans", scenario_hooks, true };
    ck_assert_int_gt(sweep(&sc), 3);
}
END_TEST

START_TEST(sweep_observe)
{
    static const struct scenario sc = { "metrics and events", scenario_observe, false };
    ck_assert_int_gt(sweep(&sc), 3);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("fault_sweep");
    TCase *tc;

    tc = tcase_create("sweep");
    tcase_set_timeout(tc, th_timeout_s(120));
    tcase_add_test(tc, injection_controls);
    tcase_add_test(tc, sweep_scope_tree);
    tcase_add_test(tc, sweep_token_tree);
    tcase_add_test(tc, sweep_slots);
    tcase_add_test(tc, sweep_retry);
    tcase_add_test(tc, sweep_job);
    tcase_add_test(tc, sweep_legacy);
    tcase_add_test(tc, sweep_process);
    tcase_add_test(tc, sweep_hooks);
    tcase_add_test(tc, sweep_observe);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
