/*
 * Race stress, flat: cancellation racing each blocking call, spawn, join,
 * completion and timeouts at random moments.
 */
#define _GNU_SOURCE
#include "stress_fixtures.h"

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
    pthread_barrier_t start, canceled, done;
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
    case OP_SLEEP: return tether_sleep_for(R.sleep_ns);
    case OP_READ: return tether_read(R.pipe[0], &c, 1);
    case OP_POLL: {
        struct pollfd p = { .fd = R.pipe[0], .events = POLLIN };
        int n = tether_poll(&p, 1, -1);
        if (n == 1 && !(p.revents & POLLIN))
            bad("poll: revents %#x", p.revents);
        return n;
    }
    case OP_COUNT: break;
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
        barrier(&R.canceled);
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
    long completed = 0, canceled = 0;
    memset(&R, 0, sizeof R);
    R.op = (enum op)_i;
    pthread_barrier_init(&R.start, NULL, 2);
    pthread_barrier_init(&R.canceled, NULL, 2);
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
        barrier(&R.canceled);
        barrier(&R.done);

        long want = R.op == OP_SLEEP ? 0 : 1;
        REQUIRE(R.result == want || (R.result == -1 && R.err == ECANCELED),
                "%s, run %ld: returned %ld, errno %s", op_name[R.op], i, R.result, strerror(R.err));
        REQUIRE(R.again == -1 && R.again_err == ECANCELED,
                "%s, run %ld: after the cancel: %ld, errno %s", op_name[R.op], i, R.again,
                strerror(R.again_err));
        if (R.result == want)
            completed++;
        else
            canceled++;
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
    fprintf(stderr, "cancel at a random moment (%s): %ld runs, %ld completed, %ld canceled\n",
            op_name[R.op], n, completed, canceled);
    close(R.pipe[0]);
    close(R.pipe[1]);
    pthread_barrier_destroy(&R.start);
    pthread_barrier_destroy(&R.canceled);
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
            /* Refused only once a failing sibling canceled the scope. */
            REQUIRE(rc == 0 || (rc == ECANCELED && may_fail), "spawn: %s", strerror(rc));
            spawned += rc == 0;
        }
        spin_ns(t0 + cancel_at - tether_now());
        REQUIRE(tether_scope_cancel(s) == 0, "cancel");
        tether_result r;
        REQUIRE(tether_scope_join(s, &r) == 0, "join");
        REQUIRE(tether_scope_free(s) == 0, "free");

        REQUIRE(r.spawned == spawned, "spawned %u, not %u", r.spawned, spawned);
        REQUIRE(r.succeeded + r.failed + r.canceled == spawned, "%u+%u+%u", r.succeeded, r.failed,
                r.canceled);
        REQUIRE(spawned == RACE_KIDS || r.outcome == TETHER_OUTCOME_FAILED,
                "spawn refused, outcome %s", tether_outcome_name(r.outcome));
        switch (r.outcome) {
        case TETHER_OUTCOME_OK:
            REQUIRE(r.succeeded == RACE_KIDS && r.error == 0, "ok with %u succeeded", r.succeeded);
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
        default: REQUIRE(false, "outcome %s", tether_outcome_name(r.outcome));
        }
        tally[r.outcome]++;
    }
    fprintf(stderr, "cancel vs completion: %ld runs: %ld ok, %ld failed, %ld canceled\n", n,
            tally[TETHER_OUTCOME_OK], tally[TETHER_OUTCOME_FAILED], tally[TETHER_OUTCOME_CANCELED]);
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

static void *scope_canceler(void *arg)
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

/* A child that spawns a sibling, then sleeps until canceled. */
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
    REQUIRE(pthread_create(&th, NULL, scope_canceler, NULL) == 0, "pthread_create");
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
                "outcome %s cause %s", tether_outcome_name(r.outcome), tether_cause_name(r.cause));
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
 * because the scope is canceled, not because the child happened to exit:
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

static void *slot_canceler(void *arg)
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
        REQUIRE(pthread_create(&th, NULL, slot_canceler, (void *)(intptr_t)mode) == 0,
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

        REQUIRE(r.succeeded + r.canceled == KIDS && r.failed == 0, "%u+%u, %u failed", r.succeeded,
                r.canceled, r.failed);
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

static void *parent_canceler(void *arg)
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
    REQUIRE(pthread_create(&th[1], NULL, parent_canceler, NULL) == 0, "pthread_create");
    for (long i = 0; i < n; i++) {
        TF.parent = new_token(NULL, TETHER_NEVER);
        TF.op = (int)(th_rand(&rng) % 3);
        TF.op_ns = rand_ns(&rng, 50);
        TF.cancel_at = rand_ns(&rng, 100);
        barrier(&TF.go);
        barrier(&TF.done);
        no_bad();
        REQUIRE(tether_token_check(TF.parent) == ECANCELED, "parent not canceled");
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
        REQUIRE(r.error == fail_errors[r.error_task], "reported %d for task %d, which returned %d",
                r.error, r.error_task, fail_errors[r.error_task]);
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

static Suite *suite(void)
{
    int scale = (int)stress(1);
    Suite *s = suite_create("stress_races");
    TCase *tc;

    tc = tcase_create("races");
    tcase_set_timeout(tc, th_timeout_s(60) * scale);
    tcase_add_loop_test(tc, cancel_at_random_moment, OP_SLEEP, OP_COUNT);
    tcase_add_test(tc, cancel_vs_child_completion);
    tcase_add_test(tc, cancel_vs_spawn);
    tcase_add_test(tc, cancel_vs_slot_wait);
    tcase_add_test(tc, cancel_vs_join);
    tcase_add_test(tc, cancel_vs_token_free);
    tcase_add_test(tc, simultaneous_failures);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
