/*
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
 * A long run: TETHER_STRESS=25 build/<dir>/test/test_stress (directly: ctest
 * stops any suite after 600 s).
 */
#define _GNU_SOURCE
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
#define REQUIRE(cond, fmt, ...)                                                        \
    do {                                                                               \
        if (!(cond))                                                                   \
            ck_abort_msg("line %d: %s: " fmt, __LINE__, #cond, ##__VA_ARGS__);         \
    } while (0)

static void no_bad(void)
{
    REQUIRE(bad_seen() == 0, "%s", bad_first());
}

/* A uniformly drawn duration in [0, max_us] µs, in ns. */
static int64_t rand_ns(uint64_t *rng, int max_us)
{
    return (int64_t)(th_rand(rng) % ((uint64_t)max_us * 1000 + 1));
}

static void spin_ns(int64_t ns)
{
    tether_time_t end = tether_now() + ns;
    while (tether_now() < end) {
    }
}

static void barrier(pthread_barrier_t *b)
{
    int rc = pthread_barrier_wait(b);
    if (rc != 0 && rc != PTHREAD_BARRIER_SERIAL_THREAD)
        bad("pthread_barrier_wait: %d", rc);
}

static int sleep_forever(void)
{
    return tether_sleep_until(TETHER_NEVER) == 0 ? 0 : errno;
}

static int sleeper_main(void *arg)
{
    (void)arg;
    return sleep_forever();
}

/* ====================================================================== */
/* Cancel at a random moment while a thread enters sleep / read / poll    */
/* ====================================================================== */

enum op { OP_SLEEP, OP_READ, OP_POLL, OP_COUNT };
static const char *const op_name[OP_COUNT] = { "sleep", "read", "poll" };

static struct {
    pthread_barrier_t start, cancelled, done;
    enum op op;
    tether_token *t;
    int pipe[2];
    int64_t sleep_ns;
    bool stop;
    long result, again;
    int err, again_err;
} R;

static long do_op(void)
{
    char c;
    switch (R.op) {
    case OP_SLEEP:
        return tether_sleep_for(R.sleep_ns);
    case OP_READ:
        return tether_read(R.pipe[0], &c, 1);
    case OP_POLL: {
        struct pollfd p = { .fd = R.pipe[0], .events = POLLIN };
        int n = tether_poll(&p, 1, -1);
        if (n == 1 && !(p.revents & POLLIN))
            bad("poll: revents %#x", p.revents);
        return n;
    }
    case OP_COUNT:
        break;
    }
    return -2;
}

static void *blocking_worker(void *arg)
{
    (void)arg;
    for (;;) {
        barrier(&R.start);
        if (R.stop)
            return NULL;
        int rc = tether_token_enter(R.t);
        EXPECT(rc == 0, "enter: %d", rc);
        R.result = do_op();
        R.err = errno;
        barrier(&R.cancelled);
        /* Cancellation is sticky: the same call now fails at once. */
        R.again = do_op();
        R.again_err = errno;
        rc = tether_token_leave(R.t);
        EXPECT(rc == 0, "leave: %d", rc);
        barrier(&R.done);
    }
}

START_TEST(cancel_at_random_moment)
{
    th_baseline b = th_baseline_take();
    uint64_t rng = th_seed("cancel_at_random_moment");
    long n = stress(400);
    long completed = 0, cancelled = 0;
    memset(&R, 0, sizeof R);
    R.op = (enum op)_i;
    pthread_barrier_init(&R.start, NULL, 2);
    pthread_barrier_init(&R.cancelled, NULL, 2);
    pthread_barrier_init(&R.done, NULL, 2);
    REQUIRE(pipe(R.pipe) == 0, "pipe");
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, blocking_worker, NULL) == 0, "pthread_create");

    for (long i = 0; i < n; i++) {
        R.t = new_token(NULL, TETHER_NEVER);
        R.sleep_ns = rand_ns(&rng, 100);
        int64_t cancel_at = rand_ns(&rng, 100);
        int64_t write_at = rand_ns(&rng, 100); /* read/poll: data arrives then */
        barrier(&R.start);
        tether_time_t t0 = tether_now();
        if (R.op != OP_SLEEP && write_at < cancel_at) {
            spin_ns(t0 + write_at - tether_now());
            REQUIRE(write(R.pipe[1], "x", 1) == 1, "write");
        }
        spin_ns(t0 + cancel_at - tether_now());
        REQUIRE(tether_token_cancel(R.t, 0) == 0, "cancel");
        if (R.op != OP_SLEEP && write_at >= cancel_at) {
            spin_ns(t0 + write_at - tether_now());
            REQUIRE(write(R.pipe[1], "x", 1) == 1, "write");
        }
        barrier(&R.cancelled);
        barrier(&R.done);

        long want = R.op == OP_SLEEP ? 0 : 1;
        REQUIRE(R.result == want || (R.result == -1 && R.err == ECANCELED),
                "%s, run %ld: returned %ld, errno %s", op_name[R.op], i, R.result,
                strerror(R.err));
        REQUIRE(R.again == -1 && R.again_err == ECANCELED,
                "%s, run %ld: after the cancel: %ld, errno %s", op_name[R.op], i, R.again,
                strerror(R.again_err));
        if (R.result == want)
            completed++;
        else
            cancelled++;
        REQUIRE(tether_token_free(R.t) == 0, "free");
        /* Empty the pipe for the next run. */
        int avail = 0;
        REQUIRE(ioctl(R.pipe[0], FIONREAD, &avail) == 0, "FIONREAD");
        char buf[8];
        if (avail > 0)
            REQUIRE(read(R.pipe[0], buf, (size_t)avail) == avail, "drain");
        no_bad();
    }
    R.stop = true;
    barrier(&R.start);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    fprintf(stderr, "cancel at a random moment (%s): %ld runs, %ld completed, %ld cancelled\n",
            op_name[R.op], n, completed, cancelled);
    close(R.pipe[0]);
    close(R.pipe[1]);
    pthread_barrier_destroy(&R.start);
    pthread_barrier_destroy(&R.cancelled);
    pthread_barrier_destroy(&R.done);
    th_baseline_check(b);
}
END_TEST

/* ====================================================================== */
/* Cancel racing the children's completion                                */
/* ====================================================================== */

enum { RACE_KIDS = 4 };

struct finisher {
    int64_t work_ns;
    int error; /* returned when the work is done */
};

/* Works (checking for cancellation) for a random while, then returns. */
static int finisher_main(void *arg)
{
    struct finisher *f = arg;
    tether_time_t end = tether_now() + f->work_ns;
    while (tether_now() < end)
        if (tether_check())
            return ECANCELED;
    return f->error;
}

START_TEST(cancel_vs_child_completion)
{
    th_baseline b = th_baseline_take();
    uint64_t rng = th_seed("cancel_vs_child_completion");
    long n = stress(300);
    long tally[5] = { 0 };
    for (long i = 0; i < n; i++) {
        struct finisher f[RACE_KIDS];
        bool may_fail = th_rand(&rng) % 2;
        for (int k = 0; k < RACE_KIDS; k++)
            f[k] = (struct finisher){ .work_ns = rand_ns(&rng, 100),
                                      .error = may_fail && th_rand(&rng) % 4 == 0 ? EIO : 0 };
        tether_scope *s;
        REQUIRE(tether_scope_open(&s, NULL) == 0, "open");
        tether_time_t t0 = tether_now();
        int64_t cancel_at = rand_ns(&rng, 150);
        unsigned spawned = 0;
        for (int k = 0; k < RACE_KIDS; k++) {
            int rc = tether_spawn(s, finisher_main, &f[k], NULL, NULL);
            /* Refused only once a failing sibling cancelled the scope. */
            REQUIRE(rc == 0 || (rc == ECANCELED && may_fail), "spawn: %s", strerror(rc));
            spawned += rc == 0;
        }
        spin_ns(t0 + cancel_at - tether_now());
        REQUIRE(tether_scope_cancel(s) == 0, "cancel");
        tether_result r;
        REQUIRE(tether_scope_join(s, &r) == 0, "join");
        REQUIRE(tether_scope_free(s) == 0, "free");

        REQUIRE(r.spawned == spawned, "spawned %u, not %u", r.spawned, spawned);
        REQUIRE(r.succeeded + r.failed + r.canceled == spawned, "%u+%u+%u", r.succeeded,
                r.failed, r.canceled);
        REQUIRE(spawned == RACE_KIDS || r.outcome == TETHER_OUTCOME_FAILED,
                "spawn refused, outcome %s", tether_outcome_name(r.outcome));
        switch (r.outcome) {
        case TETHER_OUTCOME_OK:
            REQUIRE(r.succeeded == RACE_KIDS && r.error == 0, "ok with %u succeeded",
                    r.succeeded);
            break;
        case TETHER_OUTCOME_CANCELED:
            REQUIRE(r.error == ECANCELED && r.cause == TETHER_CAUSE_EXPLICIT,
                    "canceled: error %d cause %s", r.error, tether_cause_name(r.cause));
            break;
        case TETHER_OUTCOME_FAILED:
            /* A real failure came before the cancel and decided it. */
            REQUIRE(r.error == EIO && r.error_task >= 0 && r.error_task < RACE_KIDS &&
                        f[r.error_task].error == EIO && r.cause == TETHER_CAUSE_SIBLING_FAILED &&
                        r.cause_task == r.error_task,
                    "failed: error %d task %d cause %s", r.error, r.error_task,
                    tether_cause_name(r.cause));
            break;
        default:
            REQUIRE(false, "outcome %s", tether_outcome_name(r.outcome));
        }
        tally[r.outcome]++;
    }
    fprintf(stderr, "cancel vs completion: %ld runs: %ld ok, %ld failed, %ld canceled\n", n,
            tally[TETHER_OUTCOME_OK], tally[TETHER_OUTCOME_FAILED],
            tally[TETHER_OUTCOME_CANCELED]);
    th_baseline_check(b);
}
END_TEST

/* ====================================================================== */
/* Cancel racing spawn (from the owner and from children)                 */
/* ====================================================================== */

static struct {
    pthread_barrier_t go, done;
    tether_scope *s;
    int64_t cancel_at;
    bool stop;
    atomic_int child_spawns, child_refusals;
} SP;

static void *scope_canceller(void *arg)
{
    (void)arg;
    for (;;) {
        barrier(&SP.go);
        if (SP.stop)
            return NULL;
        spin_ns(SP.cancel_at);
        int rc = tether_scope_cancel(SP.s);
        EXPECT(rc == 0, "tether_scope_cancel: %d", rc);
        barrier(&SP.done);
    }
}

/* A child that spawns a sibling, then sleeps until cancelled. */
static int spawning_child(void *arg)
{
    (void)arg;
    int rc = tether_spawn(SP.s, sleeper_main, NULL, NULL, NULL);
    if (rc == 0)
        atomic_fetch_add(&SP.child_spawns, 1);
    else if (rc == ECANCELED)
        atomic_fetch_add(&SP.child_refusals, 1);
    else
        bad("spawn from a child: %s", strerror(rc));
    return sleep_forever();
}

START_TEST(cancel_vs_spawn)
{
    enum { MAX_SPAWNS = 12 };
    th_baseline b = th_baseline_take();
    uint64_t rng = th_seed("cancel_vs_spawn");
    long n = stress(150);
    memset(&SP, 0, sizeof SP);
    pthread_barrier_init(&SP.go, NULL, 2);
    pthread_barrier_init(&SP.done, NULL, 2);
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, scope_canceller, NULL) == 0, "pthread_create");
    long refused_runs = 0;
    for (long i = 0; i < n; i++) {
        REQUIRE(tether_scope_open(&SP.s, NULL) == 0, "open");
        SP.cancel_at = rand_ns(&rng, 600); /* anywhere among the 12 spawns */
        atomic_store(&SP.child_spawns, 0);
        atomic_store(&SP.child_refusals, 0);
        barrier(&SP.go);
        int ok = 0, refused = 0;
        for (int k = 0; k < MAX_SPAWNS; k++) {
            int rc = tether_spawn(SP.s, k % 3 ? sleeper_main : spawning_child, NULL, NULL, NULL);
            if (rc == 0) {
                REQUIRE(refused == 0, "spawn %d succeeded after a refusal", k);
                ok++;
            } else {
                REQUIRE(rc == ECANCELED, "spawn %d: %s", k, strerror(rc));
                refused++;
            }
        }
        barrier(&SP.done); /* the cancel has returned */
        REQUIRE(tether_spawn(SP.s, sleeper_main, NULL, NULL, NULL) == ECANCELED,
                "spawn after the cancel");
        tether_result r;
        REQUIRE(tether_scope_join(SP.s, &r) == 0, "join");
        REQUIRE(tether_scope_free(SP.s) == 0, "free");
        no_bad();
        unsigned expect = (unsigned)(ok + atomic_load(&SP.child_spawns));
        REQUIRE(r.spawned == expect, "spawned %u, counted %u", r.spawned, expect);
        REQUIRE(r.canceled == r.spawned && r.failed == 0 && r.succeeded == 0,
                "%u canceled, %u failed, %u succeeded of %u", r.canceled, r.failed, r.succeeded,
                r.spawned);
        REQUIRE(r.outcome == TETHER_OUTCOME_CANCELED && r.cause == TETHER_CAUSE_EXPLICIT,
                "outcome %s cause %s", tether_outcome_name(r.outcome),
                tether_cause_name(r.cause));
        refused_runs += refused > 0;
    }
    SP.stop = true;
    barrier(&SP.go);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    fprintf(stderr, "cancel vs spawn: %ld runs, %ld with refused spawns\n", n, refused_runs);
    pthread_barrier_destroy(&SP.go);
    pthread_barrier_destroy(&SP.done);
    th_baseline_check(b);
}
END_TEST

/* ====================================================================== */
/* Cancel racing a spawn that waits for a slot                            */
/* ====================================================================== */

/* The scope is full (max_children 1) with a child that does not check for
 * cancellation; the owner waits in tether_spawn for a slot; another thread
 * cancels the scope at a random moment. The wait must end with ECANCELED
 * because the scope is cancelled, not because the child happened to exit:
 * the child is released only after the spawn returned (or, if it never
 * does, after a generous bound, and the test fails). Owners wait with no
 * current token, under an ancestor of the scope, and inside the scope's own
 * token (as a tether_scope_run body does). */
static struct {
    tether_scope *s;
    sem_t release, owner_ready;
    atomic_bool spawn_returned;
    atomic_int owner_tid;
    int64_t cancel_at;
} SL;

static int stubborn_child(void *arg)
{
    (void)arg;
    while (sem_wait(&SL.release) != 0)
        ;
    return 0;
}

static void *slot_canceller(void *arg)
{
    (void)arg;
    while (sem_wait(&SL.owner_ready) != 0)
        ;
    th_wait_blocked(atomic_load(&SL.owner_tid)); /* waiting for the slot */
    spin_ns(SL.cancel_at);
    EXPECT(tether_scope_cancel(SL.s) == 0, "cancel");
    /* Give the owner a generous while, then free the slot regardless. */
    tether_time_t end = tether_now() + th_bound_ns(2000);
    while (!atomic_load(&SL.spawn_returned) && tether_now() < end)
        usleep(100);
    if (!atomic_load(&SL.spawn_returned))
        bad("tether_spawn kept waiting for a slot after tether_scope_cancel returned "
            "(owner mode %d)",
            (int)(intptr_t)arg);
    sem_post(&SL.release);
    return NULL;
}

START_TEST(cancel_vs_slot_wait)
{
    th_baseline b = th_baseline_take();
    uint64_t rng = th_seed("cancel_vs_slot_wait");
    long n = stress(30);
    long late = 0;
    for (long i = 0; i < n && !late; i++) {
        int mode = (int)(i % 3); /* 0: no current token, 1: an ancestor, 2: the scope's */
        tether_token *anc = mode == 1 ? new_token(NULL, TETHER_NEVER) : NULL;
        if (anc)
            REQUIRE(tether_token_enter(anc) == 0, "enter");
        sem_init(&SL.release, 0, 0);
        sem_init(&SL.owner_ready, 0, 0);
        atomic_store(&SL.spawn_returned, false);
        atomic_store(&SL.owner_tid, th_gettid());
        SL.cancel_at = rand_ns(&rng, 100);
        tether_scope_opts o = { .max_children = 1 };
        REQUIRE(tether_scope_open(&SL.s, &o) == 0, "open");
        REQUIRE(tether_spawn(SL.s, stubborn_child, NULL, NULL, NULL) == 0, "spawn");
        if (mode == 2)
            REQUIRE(tether_token_enter(tether_scope_token(SL.s)) == 0, "enter");
        pthread_t th;
        REQUIRE(pthread_create(&th, NULL, slot_canceller, (void *)(intptr_t)mode) == 0,
                "pthread_create");
        sem_post(&SL.owner_ready);
        int rc = tether_spawn(SL.s, stubborn_child, NULL, NULL, NULL);
        atomic_store(&SL.spawn_returned, true);
        ck_assert_int_eq(pthread_join(th, NULL), 0);
        if (mode == 2)
            REQUIRE(tether_token_leave(tether_scope_token(SL.s)) == 0, "leave");
        if (rc == 0)
            sem_post(&SL.release); /* (a bug) the second child got in: let it out */
        tether_result r;
        REQUIRE(tether_scope_join(SL.s, &r) == 0, "join");
        REQUIRE(tether_scope_free(SL.s) == 0, "free");
        if (anc) {
            REQUIRE(tether_token_leave(anc) == 0, "leave");
            REQUIRE(tether_token_free(anc) == 0, "free");
        }
        sem_destroy(&SL.release);
        sem_destroy(&SL.owner_ready);
        REQUIRE(rc == ECANCELED, "mode %d: spawn returned %s", mode, strerror(rc));
        late += bad_seen() > 0;
        no_bad();
    }
    th_baseline_check(b);
}
END_TEST

/* ====================================================================== */
/* Cancel racing join                                                     */
/* ====================================================================== */

static struct {
    pthread_barrier_t go, done;
    tether_scope *s;
    int64_t cancel_at;
    int rc;
    bool stop;
} JN;

static void *join_racer(void *arg)
{
    (void)arg;
    for (;;) {
        barrier(&JN.go);
        if (JN.stop)
            return NULL;
        spin_ns(JN.cancel_at);
        JN.rc = tether_scope_cancel(JN.s);
        barrier(&JN.done);
    }
}

START_TEST(cancel_vs_join)
{
    enum { KIDS = 3 };
    th_baseline b = th_baseline_take();
    uint64_t rng = th_seed("cancel_vs_join");
    long n = stress(300);
    memset(&JN, 0, sizeof JN);
    pthread_barrier_init(&JN.go, NULL, 2);
    pthread_barrier_init(&JN.done, NULL, 2);
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, join_racer, NULL) == 0, "pthread_create");
    long late = 0;
    for (long i = 0; i < n; i++) {
        struct finisher f[KIDS];
        for (int k = 0; k < KIDS; k++)
            f[k] = (struct finisher){ .work_ns = rand_ns(&rng, 60) };
        REQUIRE(tether_scope_open(&JN.s, NULL) == 0, "open");
        tether_task *t0 = NULL;
        for (int k = 0; k < KIDS; k++)
            REQUIRE(tether_spawn(JN.s, finisher_main, &f[k], NULL, k ? NULL : &t0) == 0, "spawn");
        JN.cancel_at = rand_ns(&rng, 100);
        barrier(&JN.go);
        tether_result r;
        REQUIRE(tether_scope_join(JN.s, &r) == 0, "join");
        barrier(&JN.done); /* the racer is done with the scope */
        REQUIRE(JN.rc == 0 || JN.rc == EINVAL, "tether_scope_cancel: %s", strerror(JN.rc));
        REQUIRE(tether_scope_free(JN.s) == 0, "free");

        REQUIRE(r.succeeded + r.canceled == KIDS && r.failed == 0, "%u+%u, %u failed",
                r.succeeded, r.canceled, r.failed);
        if (JN.rc == EINVAL) {
            /* Refused because join had finished: it cannot have counted. */
            REQUIRE(r.outcome == TETHER_OUTCOME_OK, "late cancel, outcome %s",
                    tether_outcome_name(r.outcome));
            late++;
        }
        if (r.outcome == TETHER_OUTCOME_OK)
            REQUIRE(r.succeeded == KIDS, "ok with %u succeeded", r.succeeded);
        else
            REQUIRE(r.outcome == TETHER_OUTCOME_CANCELED && r.error == ECANCELED,
                    "outcome %s error %d", tether_outcome_name(r.outcome), r.error);
    }
    JN.stop = true;
    barrier(&JN.go);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    fprintf(stderr, "cancel vs join: %ld runs, %ld cancels after join\n", n, late);
    pthread_barrier_destroy(&JN.go);
    pthread_barrier_destroy(&JN.done);
    th_baseline_check(b);
}
END_TEST

/* ====================================================================== */
/* Cancel of a parent racing the free of a child token right after use    */
/* ====================================================================== */

static struct {
    pthread_barrier_t go, done;
    tether_token *parent;
    int pipe[2];
    int op;
    int64_t op_ns, cancel_at;
    bool stop;
} TF;

static void count_cb(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

static void *token_user(void *arg)
{
    (void)arg;
    for (;;) {
        barrier(&TF.go);
        if (TF.stop)
            return NULL;
        tether_token *c = NULL, *g = NULL;
        int rc = tether_token_new(&c, TF.parent, TETHER_NEVER);
        EXPECT(rc == 0, "new: %d", rc);
        rc = tether_token_new(&g, c, TETHER_NEVER);
        EXPECT(rc == 0, "new: %d", rc);
        atomic_int hits = 0;
        tether_callback *cb;
        rc = tether_token_on_cancel(g, count_cb, &hits, &cb);
        EXPECT(rc == 0, "on_cancel: %d", rc);
        rc = tether_token_enter(g);
        EXPECT(rc == 0, "enter: %d", rc);
        switch (TF.op) {
        case 0: /* last use: a check */
            rc = tether_check();
            EXPECT(rc == 0 || rc == ECANCELED, "check: %d", rc);
            break;
        case 1: /* a short sleep (futex) */
            rc = tether_sleep_for(TF.op_ns);
            EXPECT(rc == 0 || errno == ECANCELED, "sleep: %d", errno);
            break;
        default: { /* a short poll: the token gets an eventfd to signal */
            struct pollfd p = { .fd = TF.pipe[0], .events = POLLIN };
            rc = tether_poll(&p, 1, 1);
            EXPECT(rc == 0 || errno == ECANCELED, "poll: %d", errno);
            break;
        }
        }
        rc = tether_token_leave(g);
        EXPECT(rc == 0, "leave: %d", rc);
        bool ran = false;
        rc = tether_token_off_cancel(cb, &ran);
        EXPECT(rc == 0, "off_cancel: %d", rc);
        EXPECT(atomic_load(&hits) == (ran ? 1 : 0), "callback ran %d times, ran=%d",
               atomic_load(&hits), ran);
        /* Freed right after its last use, while the cancel may be walking. */
        rc = tether_token_free(g);
        EXPECT(rc == 0, "free g: %d", rc);
        rc = tether_token_free(c);
        EXPECT(rc == 0, "free c: %d", rc);
        barrier(&TF.done);
    }
}

static void *parent_canceller(void *arg)
{
    (void)arg;
    for (;;) {
        barrier(&TF.go);
        if (TF.stop)
            return NULL;
        spin_ns(TF.cancel_at);
        int rc = tether_token_cancel(TF.parent, EPIPE);
        EXPECT(rc == 0, "cancel: %d", rc);
        barrier(&TF.done);
    }
}

START_TEST(cancel_vs_token_free)
{
    th_baseline b = th_baseline_take();
    uint64_t rng = th_seed("cancel_vs_token_free");
    long n = stress(400);
    memset(&TF, 0, sizeof TF);
    pthread_barrier_init(&TF.go, NULL, 3);
    pthread_barrier_init(&TF.done, NULL, 3);
    REQUIRE(pipe(TF.pipe) == 0, "pipe");
    pthread_t th[2];
    REQUIRE(pthread_create(&th[0], NULL, token_user, NULL) == 0, "pthread_create");
    REQUIRE(pthread_create(&th[1], NULL, parent_canceller, NULL) == 0, "pthread_create");
    for (long i = 0; i < n; i++) {
        TF.parent = new_token(NULL, TETHER_NEVER);
        TF.op = (int)(th_rand(&rng) % 3);
        TF.op_ns = rand_ns(&rng, 50);
        TF.cancel_at = rand_ns(&rng, 100);
        barrier(&TF.go);
        barrier(&TF.done);
        no_bad();
        REQUIRE(tether_token_check(TF.parent) == ECANCELED, "parent not cancelled");
        REQUIRE(tether_token_free(TF.parent) == 0, "parent has children left");
    }
    TF.stop = true;
    barrier(&TF.go);
    ck_assert_int_eq(pthread_join(th[0], NULL), 0);
    ck_assert_int_eq(pthread_join(th[1], NULL), 0);
    close(TF.pipe[0]);
    close(TF.pipe[1]);
    pthread_barrier_destroy(&TF.go);
    pthread_barrier_destroy(&TF.done);
    th_baseline_check(b);
}
END_TEST

/* ====================================================================== */
/* Random token trees 30 levels deep, cancelled from random nodes by      */
/* several threads                                                         */
/* ====================================================================== */

enum { TREE_NODES = 160, TREE_DEPTH = 30, CANCELLERS = 4, CUTS = 3 };

static struct {
    tether_token *t[TREE_NODES];
    int parent[TREE_NODES], depth[TREE_NODES];
    tether_callback *cb[TREE_NODES];
    atomic_int hits[TREE_NODES];
    atomic_bool target[TREE_NODES];
    int error_of[TREE_NODES]; /* the canceller's error, for targets */
    pthread_barrier_t go;
    uint64_t seed;
    long run;
} TR;

static void *tree_canceller(void *arg)
{
    int me = (int)(intptr_t)arg;
    uint64_t rng = th_seed_for(TR.seed, (uint64_t)TR.run * CANCELLERS + (uint64_t)me);
    static const int errors[CANCELLERS] = { EIO, EPIPE, ENOSPC, EBADMSG };
    int picks[CUTS];
    for (int k = 0; k < CUTS; k++) {
        picks[k] = (int)(th_rand(&rng) % TREE_NODES);
        atomic_store(&TR.target[picks[k]], true);
    }
    int64_t at[CUTS];
    for (int k = 0; k < CUTS; k++)
        at[k] = rand_ns(&rng, 100);
    barrier(&TR.go);
    tether_time_t t0 = tether_now();
    for (int k = 0; k < CUTS; k++) {
        spin_ns(t0 + at[k] - tether_now());
        int x = picks[k];
        int rc = tether_token_cancel(TR.t[x], errors[me]);
        EXPECT(rc == 0, "cancel: %d", rc);
    }
    return NULL;
}

/* Threads blocked under deep nodes: one in a futex sleep, one in a read. */
struct deep_waiter {
    tether_token *t;
    int fd;
    bool read;
    long result;
    int err;
};

static void *deep_waiter_main(void *arg)
{
    struct deep_waiter *w = arg;
    tether_token_enter(w->t);
    char c;
    w->result = w->read ? tether_read(w->fd, &c, 1) : tether_sleep_until(TETHER_NEVER);
    w->err = errno;
    tether_token_leave(w->t);
    return NULL;
}

START_TEST(random_token_trees)
{
    th_baseline b = th_baseline_take();
    TR.seed = th_seed("random_token_trees");
    uint64_t rng = TR.seed;
    long n = stress(40);
    int p[2];
    REQUIRE(pipe(p) == 0, "pipe");
    for (TR.run = 0; TR.run < n; TR.run++) {
        /* A spine of 30 levels, the rest hung off random nodes above it. */
        for (int k = 0; k < TREE_NODES; k++) {
            int parent = k == 0 ? -1 : k < TREE_DEPTH ? k - 1 : (int)(th_rand(&rng) % (unsigned)k);
            if (parent >= 0 && TR.depth[parent] >= TREE_DEPTH - 1)
                parent = TR.parent[parent];
            TR.parent[k] = parent;
            TR.depth[k] = parent < 0 ? 0 : TR.depth[parent] + 1;
            TR.t[k] = new_token(parent < 0 ? NULL : TR.t[parent], TETHER_NEVER);
            atomic_store(&TR.hits[k], 0);
            atomic_store(&TR.target[k], false);
            REQUIRE(tether_token_on_cancel(TR.t[k], count_cb, &TR.hits[k], &TR.cb[k]) == 0,
                    "on_cancel");
        }
        struct deep_waiter w[2] = { { .t = TR.t[TREE_DEPTH - 1], .fd = p[0], .read = false },
                                    { .t = TR.t[TREE_NODES - 1], .fd = p[0], .read = true } };
        pthread_t wt[2];
        for (int k = 0; k < 2; k++)
            REQUIRE(pthread_create(&wt[k], NULL, deep_waiter_main, &w[k]) == 0, "create");

        pthread_barrier_init(&TR.go, NULL, CANCELLERS);
        pthread_t ct[CANCELLERS];
        for (int k = 0; k < CANCELLERS; k++)
            REQUIRE(pthread_create(&ct[k], NULL, tree_canceller, (void *)(intptr_t)k) == 0,
                    "create");
        for (int k = 0; k < CANCELLERS; k++)
            ck_assert_int_eq(pthread_join(ct[k], NULL), 0);
        pthread_barrier_destroy(&TR.go);
        no_bad();

        /* Every node is cancelled iff it or an ancestor was a target; the
         * cause and error say where the cancellation came from. */
        for (int k = 0; k < TREE_NODES; k++) {
            bool want = false;
            for (int a = k; a >= 0 && !want; a = TR.parent[a])
                want = atomic_load(&TR.target[a]);
            tether_cause c = tether_token_cause(TR.t[k]);
            REQUIRE((c != TETHER_CAUSE_NONE) == want, "run %ld node %d: cause %s, want %d",
                    TR.run, k, tether_cause_name(c), want);
            REQUIRE(atomic_load(&TR.hits[k]) == (want ? 1 : 0), "node %d: callback ran %d times",
                    k, atomic_load(&TR.hits[k]));
            if (c == TETHER_CAUSE_EXPLICIT)
                REQUIRE(atomic_load(&TR.target[k]), "node %d: explicit but no target", k);
            if (c == TETHER_CAUSE_PARENT) {
                int pa = TR.parent[k];
                REQUIRE(pa >= 0 && tether_token_cause(TR.t[pa]) != TETHER_CAUSE_NONE,
                        "node %d: parent cause, parent live", k);
                REQUIRE(tether_token_error(TR.t[k]) == tether_token_error(TR.t[pa]),
                        "node %d: error %d, parent's %d", k, tether_token_error(TR.t[k]),
                        tether_token_error(TR.t[pa]));
                REQUIRE(tether_token_root_cause(TR.t[k]) == TETHER_CAUSE_EXPLICIT,
                        "node %d: root cause %s", k,
                        tether_cause_name(tether_token_root_cause(TR.t[k])));
            }
        }
        /* Whatever is left, the root ends; the blocked threads wake. */
        REQUIRE(tether_token_cancel(TR.t[0], 0) == 0, "cancel root");
        for (int k = 0; k < 2; k++) {
            ck_assert_int_eq(pthread_join(wt[k], NULL), 0);
            REQUIRE(w[k].result == -1 && w[k].err == ECANCELED, "waiter %d: %ld %s", k,
                    w[k].result, strerror(w[k].err));
        }
        for (int k = TREE_NODES - 1; k >= 0; k--) {
            bool ran = false;
            REQUIRE(tether_token_off_cancel(TR.cb[k], &ran) == 0 && ran, "off_cancel %d", k);
            REQUIRE(atomic_load(&TR.hits[k]) == 1, "node %d: callback ran %d times", k,
                    atomic_load(&TR.hits[k]));
            REQUIRE(tether_token_free(TR.t[k]) == 0, "free %d", k);
        }
    }
    close(p[0]);
    close(p[1]);
    th_baseline_check(b);
}
END_TEST

/* When tether_token_cancel(a) returns, a and its whole subtree report
 * cancelled, even while another thread is cancelling a node inside that
 * subtree at the same moment ("cancel a token and all its descendants"). */
enum { CHAIN = 30 };

static struct {
    pthread_barrier_t go, done, sleep;
    tether_token *t[CHAIN];
    int inner, outer;
    int64_t skew_ns[2];
    bool stop;
    atomic_int sleeper_tid;
} LN;

static void *inner_canceller(void *arg)
{
    (void)arg;
    for (;;) {
        barrier(&LN.go);
        if (LN.stop)
            return NULL;
        spin_ns(LN.skew_ns[1]);
        tether_token_cancel(LN.t[LN.inner], EPIPE);
        barrier(&LN.done);
    }
}

/* Sleeps under the inner token, so that cancelling it wakes a futex. */
static void *inner_sleeper(void *arg)
{
    (void)arg;
    atomic_store(&LN.sleeper_tid, th_gettid());
    for (;;) {
        barrier(&LN.sleep);
        if (LN.stop)
            return NULL;
        tether_token_enter(LN.t[LN.inner]);
        int rc = tether_sleep_until(TETHER_NEVER);
        EXPECT(rc == -1 && errno == ECANCELED, "sleep: %d", errno);
        tether_token_leave(LN.t[LN.inner]);
        barrier(&LN.done);
    }
}

START_TEST(cancel_returns_with_subtree_cancelled)
{
    th_baseline b = th_baseline_take();
    uint64_t rng = th_seed("cancel_returns_with_subtree_cancelled");
    long n = stress(1000);
    memset(&LN, 0, sizeof LN);
    pthread_barrier_init(&LN.go, NULL, 2);
    pthread_barrier_init(&LN.sleep, NULL, 2);
    pthread_barrier_init(&LN.done, NULL, 3);
    pthread_t th, sl;
    REQUIRE(pthread_create(&th, NULL, inner_canceller, NULL) == 0, "pthread_create");
    REQUIRE(pthread_create(&sl, NULL, inner_sleeper, NULL) == 0, "pthread_create");
    long i, stale = 0;
    int stale_at = -1;
    for (i = 0; i < n && !stale; i++) {
        for (int k = 0; k < CHAIN; k++)
            LN.t[k] = new_token(k ? LN.t[k - 1] : NULL, TETHER_NEVER);
        LN.inner = 1 + (int)(th_rand(&rng) % (CHAIN - 2));
        LN.outer = (int)(th_rand(&rng) % (unsigned)LN.inner);
        LN.skew_ns[0] = rand_ns(&rng, 3);
        LN.skew_ns[1] = rand_ns(&rng, 2);
        barrier(&LN.sleep);
        int tid;
        while ((tid = atomic_load(&LN.sleeper_tid)) == 0)
            ;
        REQUIRE(th_wait_blocked(tid) == 0, "the sleeper never slept");
        barrier(&LN.go);
        spin_ns(LN.skew_ns[0]);
        REQUIRE(tether_token_cancel(LN.t[LN.outer], EIO) == 0, "cancel");
        for (int k = LN.outer; k < CHAIN; k++)
            if (tether_token_check(LN.t[k]) == 0) {
                stale++;
                stale_at = k;
                break;
            }
        barrier(&LN.done);
        for (int k = CHAIN - 1; k >= 0; k--)
            REQUIRE(tether_token_free(LN.t[k]) == 0, "free");
    }
    LN.stop = true;
    barrier(&LN.go);
    barrier(&LN.sleep);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(pthread_join(sl, NULL), 0);
    no_bad();
    pthread_barrier_destroy(&LN.go);
    pthread_barrier_destroy(&LN.sleep);
    pthread_barrier_destroy(&LN.done);
    fprintf(stderr, "cancel returns with subtree cancelled: %ld runs, %ld stale\n", i, stale);
    ck_assert_msg(stale == 0,
                  "run %ld: tether_token_cancel(depth %d) returned while depth %d below it still "
                  "checked 0 (another thread was cancelling depth %d)",
                  i, LN.outer, stale_at, LN.inner);
    th_baseline_check(b);
}
END_TEST

/* ------------------------------------------- random scope trees, 30 deep */

enum { SCOPE_NODES_MAX = 96 };

static struct {
    tether_scope *_Atomic scope[SCOPE_NODES_MAX];
    atomic_int nodes;      /* handed out */
    atomic_int pending;    /* spawned, not yet settled */
    atomic_int canceled_ok;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool release;          /* owners may join now */
    int pipe[2];
    uint64_t seed;
    bool racing;           /* cancel while the tree is being built */
    pthread_barrier_t go;
} ST;

static void settle(void)
{
    pthread_mutex_lock(&ST.mu);
    if (atomic_fetch_sub(&ST.pending, 1) == 1)
        pthread_cond_broadcast(&ST.cv);
    pthread_mutex_unlock(&ST.mu);
}

static int scope_node(void *arg);

/* Spawn a node at depth+1 into s; counts it pending if it started. */
static void spawn_node(tether_scope *s, int depth, bool spine)
{
    intptr_t code = (intptr_t)depth << 1 | spine;
    atomic_fetch_add(&ST.pending, 1);
    tether_spawn_opts o = { .stack_size = 128 * 1024 };
    int rc = tether_spawn(s, scope_node, (void *)code, &o, NULL);
    if (rc) {
        EXPECT(rc == ECANCELED, "spawn: %s", strerror(rc));
        settle();
    }
}

static int scope_node(void *arg)
{
    intptr_t code = (intptr_t)arg;
    int depth = (int)(code >> 1) + 1;
    bool spine = code & 1;
    int id = atomic_fetch_add(&ST.nodes, 1);
    uint64_t rng = th_seed_for(ST.seed, (uint64_t)id + 1000);
    if (depth >= TREE_DEPTH || id >= SCOPE_NODES_MAX) {
        /* A leaf: block until cancelled. */
        settle();
        if (th_rand(&rng) % 2) {
            char c;
            return tether_read(ST.pipe[0], &c, 1) < 0 ? errno : 0;
        }
        return sleep_forever();
    }
    tether_scope *s;
    int rc = tether_scope_open(&s, NULL);
    EXPECT(rc == 0, "open: %d", rc);
    if (rc) {
        settle();
        return rc;
    }
    atomic_store(&ST.scope[id], s);
    if (spine)
        spawn_node(s, depth, true);
    if (th_rand(&rng) % 3 == 0)
        spawn_node(s, depth, th_rand(&rng) % 4 == 0);
    settle();

    pthread_mutex_lock(&ST.mu);
    while (!ST.release)
        pthread_cond_wait(&ST.cv, &ST.mu);
    pthread_mutex_unlock(&ST.mu);
    tether_result r;
    rc = tether_scope_join(s, &r);
    EXPECT(rc == 0, "join: %d", rc);
    if (r.outcome == TETHER_OUTCOME_CANCELED && r.failed == 0 && r.canceled == r.spawned &&
        (r.cause == TETHER_CAUSE_EXPLICIT || r.cause == TETHER_CAUSE_PARENT))
        atomic_fetch_add(&ST.canceled_ok, 1);
    else
        bad("scope %d: outcome %s, %u failed, %u canceled of %u, cause %s", id,
            tether_outcome_name(r.outcome), r.failed, r.canceled, r.spawned,
            tether_cause_name(r.cause));
    rc = tether_scope_free(s);
    EXPECT(rc == 0, "free: %d", rc);
    return tether_check();
}

static void *scope_tree_canceller(void *arg)
{
    uint64_t rng = th_seed_for(ST.seed, (uint64_t)(intptr_t)arg);
    barrier(&ST.go);
    for (int k = 0; k < 6; k++) {
        /* While the tree is built, spread the cuts over its construction. */
        spin_ns(rand_ns(&rng, ST.racing ? 1500 : 100));
        int made = atomic_load(&ST.nodes);
        if (made > SCOPE_NODES_MAX)
            made = SCOPE_NODES_MAX;
        if (made == 0)
            continue;
        /* Scopes stay valid until released; a leaf, or a node that has not
         * opened its scope yet, is skipped. */
        tether_scope *s = atomic_load(&ST.scope[th_rand(&rng) % (unsigned)made]);
        if (s) {
            int rc = tether_scope_cancel(s);
            EXPECT(rc == 0, "cancel: %d", rc);
        }
    }
    return NULL;
}

static bool all_settled(void)
{
    pthread_mutex_lock(&ST.mu);
    tether_time_t end = tether_now() + th_bound_ns(20000);
    while (atomic_load(&ST.pending) > 0 && tether_now() < end) {
        struct timespec ts = { .tv_sec = end / 1000000000, .tv_nsec = end % 1000000000 };
        pthread_cond_timedwait(&ST.cv, &ST.mu, &ts);
    }
    bool ok = atomic_load(&ST.pending) == 0;
    pthread_mutex_unlock(&ST.mu);
    return ok;
}

START_TEST(random_scope_trees)
{
    th_baseline b = th_baseline_take();
    ST.seed = th_seed("random_scope_trees");
    long n = stress(4);
    REQUIRE(pipe(ST.pipe) == 0, "pipe");
    pthread_mutex_init(&ST.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ST.cv, &ca);
    pthread_condattr_destroy(&ca);
    long scopes = 0;
    for (long i = 0; i < n; i++) {
        ST.seed = th_seed_for(ST.seed, (uint64_t)i);
        for (int k = 0; k < SCOPE_NODES_MAX; k++)
            atomic_store(&ST.scope[k], NULL);
        atomic_store(&ST.nodes, 0);
        atomic_store(&ST.pending, 0);
        atomic_store(&ST.canceled_ok, 0);
        ST.release = false;
        pthread_barrier_init(&ST.go, NULL, CANCELLERS + 1);
        pthread_t ct[CANCELLERS];
        for (int k = 0; k < CANCELLERS; k++)
            REQUIRE(pthread_create(&ct[k], NULL, scope_tree_canceller, (void *)(intptr_t)k) == 0,
                    "create");
        tether_scope *root;
        REQUIRE(tether_scope_open(&root, NULL) == 0, "open");
        /* Odd runs: the cancellers start while the tree is being built.
         * Even runs: once it is complete. */
        ST.racing = i % 2;
        if (ST.racing)
            barrier(&ST.go);
        spawn_node(root, 0, true);
        if (!ST.racing) {
            REQUIRE(all_settled(), "the tree never settled");
            barrier(&ST.go);
        }
        for (int k = 0; k < CANCELLERS; k++)
            ck_assert_int_eq(pthread_join(ct[k], NULL), 0);
        REQUIRE(all_settled(), "the tree never settled");
        REQUIRE(tether_scope_cancel(root) == 0, "cancel root");
        pthread_mutex_lock(&ST.mu);
        ST.release = true;
        pthread_cond_broadcast(&ST.cv);
        pthread_mutex_unlock(&ST.mu);
        tether_result r;
        REQUIRE(tether_scope_join(root, &r) == 0, "join");
        REQUIRE(tether_scope_free(root) == 0, "free");
        pthread_barrier_destroy(&ST.go);
        no_bad();
        REQUIRE(r.outcome == TETHER_OUTCOME_CANCELED && r.failed == 0, "root: %s, %u failed",
                tether_outcome_name(r.outcome), r.failed);
        int made = atomic_load(&ST.nodes);
        for (int k = 0; k < made && k < SCOPE_NODES_MAX; k++)
            if (atomic_load(&ST.scope[k]))
                scopes++;
        REQUIRE(atomic_load(&ST.canceled_ok) > 0, "no scope reported");
    }
    fprintf(stderr, "random scope trees: %ld runs, %ld scopes\n", n, scopes);
    pthread_cond_destroy(&ST.cv);
    pthread_mutex_destroy(&ST.mu);
    close(ST.pipe[0]);
    close(ST.pipe[1]);
    th_baseline_check(b);
}
END_TEST

/* ====================================================================== */
/* 5000 nested scopes, each level a child with a 64 KiB stack, cancelled  */
/* from the root                                                           */
/* ====================================================================== */

/* Under a sanitizer each thread start costs milliseconds once thousands
 * are alive (measured: 5000 nested starts take 20 s under ASan and 47 s
 * under TSan on this 2-core machine, 2 s without): there the chain is 1000
 * deep times TETHER_STRESS, up to 5000. The depth that matters for stack use
 * (the cancel walks 10,000 tokens) is covered by the plain builds. */

static int nest_levels(void)
{
#ifdef TS_SANITIZED
    long n = 1000 * stress(1);
    return n < 5000 ? (int)n : 5000;
#else
    return 5000;
#endif
}

static struct {
    sem_t bottom;
    atomic_int levels_ok;
    int levels;
} NS;

static int nest_level(void *arg)
{
    intptr_t level = (intptr_t)arg;
    if (level == NS.levels) {
        sem_post(&NS.bottom);
        return sleep_forever();
    }
    tether_scope *s;
    int rc = tether_scope_open(&s, NULL);
    if (rc) {
        bad("level %ld: open: %s", (long)level, strerror(rc));
        sem_post(&NS.bottom);
        return rc;
    }
    tether_spawn_opts o = { .stack_size = 64 * 1024 };
    rc = tether_spawn(s, nest_level, (void *)(level + 1), &o, NULL);
    if (rc) {
        bad("level %ld: spawn: %s", (long)level, strerror(rc));
        sem_post(&NS.bottom);
    }
    tether_result r;
    rc = tether_scope_join(s, &r);
    EXPECT(rc == 0, "join: %d", rc);
    if (r.outcome == TETHER_OUTCOME_CANCELED && r.canceled == 1 && r.cause == TETHER_CAUSE_PARENT)
        atomic_fetch_add(&NS.levels_ok, 1);
    rc = tether_scope_free(s);
    EXPECT(rc == 0, "free: %d", rc);
    return tether_check();
}

START_TEST(nested_scopes)
{
    th_baseline b = th_baseline_take();
    sem_init(&NS.bottom, 0, 0);
    atomic_store(&NS.levels_ok, 0);
    NS.levels = nest_levels();
    tether_time_t t0 = tether_now();
    tether_scope *root;
    ck_assert_int_eq(tether_scope_open(&root, NULL), 0);
    tether_spawn_opts o = { .stack_size = 64 * 1024 };
    ck_assert_int_eq(tether_spawn(root, nest_level, (void *)(intptr_t)1, &o, NULL), 0);
    while (sem_wait(&NS.bottom) != 0)
        ;
    no_bad();
    tether_time_t t1 = tether_now();
    ck_assert_int_ge(th_thread_count(), NS.levels + 1);
    ck_assert_int_eq(tether_scope_cancel(root), 0);
    tether_result r;
    ck_assert_int_eq(tether_scope_join(root, &r), 0);
    tether_time_t t2 = tether_now();
    ck_assert_int_eq(tether_scope_free(root), 0);
    no_bad();
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
    ck_assert_uint_eq(r.canceled, 1);
    ck_assert_int_eq(atomic_load(&NS.levels_ok), NS.levels - 1);
    fprintf(stderr, "%d nested scopes: built in %.0f ms, cancelled and joined in %.0f ms\n",
            NS.levels, (double)(t1 - t0) / 1e6, (double)(t2 - t1) / 1e6);
    sem_destroy(&NS.bottom);
    th_baseline_check(b);
}
END_TEST

/* ====================================================================== */
/* Children failing at the same instant under fail-fast                   */
/* ====================================================================== */

static struct {
    pthread_barrier_t line_up;
    int64_t skew_ns[4];
} SF;

static const int fail_errors[4] = { EIO, EPROTO, ENOSPC, EBADMSG };

static int simultaneous_failer(void *arg)
{
    int k = (int)(intptr_t)arg;
    barrier(&SF.line_up);
    spin_ns(SF.skew_ns[k]);
    return fail_errors[k];
}

START_TEST(simultaneous_failures)
{
    th_baseline b = th_baseline_take();
    uint64_t rng = th_seed("simultaneous_failures");
    long n = stress(300);
    long first_won[4] = { 0 };
    for (long i = 0; i < n; i++) {
        int kids = 2 + (int)(th_rand(&rng) % 3);
        for (int k = 0; k < kids; k++)
            SF.skew_ns[k] = rand_ns(&rng, 2);
        pthread_barrier_init(&SF.line_up, NULL, (unsigned)kids);
        tether_scope *s;
        REQUIRE(tether_scope_open(&s, NULL) == 0, "open");
        tether_task *t[4];
        for (int k = 0; k < kids; k++)
            REQUIRE(tether_spawn(s, simultaneous_failer, (void *)(intptr_t)k, NULL, &t[k]) == 0,
                    "spawn");
        for (int k = 0; k < kids; k++) {
            int res = 0;
            REQUIRE(tether_task_wait(t[k], &res) == 0, "wait");
            REQUIRE(res == fail_errors[k], "child %d returned %d", k, res);
        }
        int token_error = tether_token_error(tether_scope_token(s));
        tether_result r;
        REQUIRE(tether_scope_join(s, &r) == 0, "join");
        REQUIRE(tether_scope_free(s) == 0, "free");
        pthread_barrier_destroy(&SF.line_up);

        REQUIRE(r.outcome == TETHER_OUTCOME_FAILED, "outcome %s", tether_outcome_name(r.outcome));
        REQUIRE(r.error_task >= 0 && r.error_task < kids, "error_task %d", r.error_task);
        REQUIRE(r.error == fail_errors[r.error_task],
                "reported %d for task %d, which returned %d", r.error, r.error_task,
                fail_errors[r.error_task]);
        REQUIRE(r.cause == TETHER_CAUSE_SIBLING_FAILED && r.cause_task == r.error_task,
                "cause %s from task %d, error from task %d", tether_cause_name(r.cause),
                r.cause_task, r.error_task);
        REQUIRE(token_error == r.error, "scope token error %d, result %d", token_error, r.error);
        REQUIRE(r.failed + r.canceled == (unsigned)kids && r.failed >= 1, "%u failed %u canceled",
                r.failed, r.canceled);
        first_won[r.error_task]++;
    }
    fprintf(stderr, "simultaneous failures: %ld runs; reported task 0..3: %ld %ld %ld %ld\n", n,
            first_won[0], first_won[1], first_won[2], first_won[3]);
    th_baseline_check(b);
}
END_TEST

/* ------------------------------------------------------------------ suite */

static Suite *stress_suite(void)
{
    int scale = (int)stress(1);
    Suite *s = suite_create("stress");
    TCase *tc = tcase_create("races");
    tcase_set_timeout(tc, th_timeout_s(60) * scale);
    tcase_add_loop_test(tc, cancel_at_random_moment, OP_SLEEP, OP_COUNT);
    tcase_add_test(tc, cancel_vs_child_completion);
    tcase_add_test(tc, cancel_vs_spawn);
    tcase_add_test(tc, cancel_vs_slot_wait);
    tcase_add_test(tc, cancel_vs_join);
    tcase_add_test(tc, cancel_vs_token_free);
    tcase_add_test(tc, simultaneous_failures);
    suite_add_tcase(s, tc);

    tc = tcase_create("trees");
    tcase_set_timeout(tc, th_timeout_s(90) * scale);
    tcase_add_test(tc, random_token_trees);
    tcase_add_test(tc, cancel_returns_with_subtree_cancelled);
    tcase_add_test(tc, random_scope_trees);
    tcase_add_test(tc, nested_scopes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(stress_suite());
}
