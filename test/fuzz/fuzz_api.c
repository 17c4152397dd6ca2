/*
 * fuzz_api — a libFuzzer harness over tether's public API (issue 11).
 *
 * The input is a program: byte triples (opcode, argument, argument), dealt round-robin to
 * FUZZ_THREADS worker threads that run in lock step (a barrier after every
 * step), so one input replays the same interleaving of API calls, give or
 * take the scheduling inside a step. Each worker owns scopes, tokens and
 * callbacks in small tables; ops name them by slot, so every call refers to a
 * live object and uses it the way include/tether.h allows:
 *  - a scope is joined and freed by the thread that opened it; other workers
 *    may cancel it until it is freed (EINVAL once joined is allowed) and wait
 *    on or halt its tasks until its join starts (the handles are valid until
 *    the scope is joined);
 *  - a token is freed by its owner, never while another worker uses it (a
 *    per-slot rwlock: users read, free writes); only the owner enters it;
 *  - nothing blocks without a bound: every child has a spawn timeout of a
 *    few ms and every wait a worker makes runs under tether_with_timeout.
 * After each input every object is released and these invariants hold, or
 * the harness aborts with a message: documented return values, each
 * callback ran at most once and off_cancel says so, threads
 * (/proc/self/task) and descriptors (/proc/self/fd after tether_trim) back to
 * what they were before the input, and no input longer than
 * FUZZ_INPUT_LIMIT_S (a watchdog thread).
 */
#define _GNU_SOURCE
#include <tether.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_ops.h"

/* Scope and token slots shared between workers: global index w * N + i. */
struct scope_slot {
    pthread_rwlock_t life;     /* readers: other workers' cancel; writer: free */
    pthread_rwlock_t tasks_lk; /* readers: task wait/halt; writer: join start */
    tether_scope *s;           /* NULL when the slot is empty */
    atomic_bool joining;       /* join started: no new task wait or halt */
    bool joined;
    int ntasks;
    tether_task *tasks[FUZZ_TASKS];
    bool task_bg[FUZZ_TASKS]; /* spawned as a background child */
    struct ref parent;        /* what it was opened under (owner's objects) */
    unsigned anc;             /* the owner's scopes it descends from */
};

struct token_slot {
    pthread_rwlock_t life; /* readers: other workers' cancel; writer: free */
    tether_token *t;
    struct ref parent;
    unsigned anc;
};

struct cb_slot {
    tether_callback *h;
    atomic_int runs;
};

struct worker {
    int id;
    pthread_t thread;
    const uint8_t *data;
    size_t nops;
    struct cb_slot cbs[FUZZ_CBS];
    struct ref entered[FUZZ_ENTER];
    int nentered;
    struct ref order[FUZZ_ORDER]; /* creation order, for the final clean-up */
    int norder;
};

static struct scope_slot g_scopes[FUZZ_THREADS * FUZZ_SCOPES];
static struct token_slot g_tokens[FUZZ_THREADS * FUZZ_TOKENS];
static struct worker g_workers[FUZZ_THREADS];
static pthread_barrier_t g_step;
struct shared g_shared;

static struct scope_slot *sslot(int w, int i)
{
    return &g_scopes[w * FUZZ_SCOPES + i];
}
static struct token_slot *tslot(int w, int i)
{
    return &g_tokens[w * FUZZ_TOKENS + i];
}

/* --- children ------------------------------------------------------------ */

static int child_fn(void *arg);

/* One argument per (scope slot, behaviour): a child needs its scope to spawn. */
static struct child_arg g_child_args[FUZZ_THREADS * FUZZ_SCOPES][CHILD_NBEHAVIOURS];

static int child_fn(void *arg)
{
    struct child_arg *a = arg;
    struct scope_slot *slot = &g_scopes[a->slot];
    if (a->behaviour == CHILD_SPAWN) {
        /* A child may spawn into its own scope; the grandchild sleeps. */
        tether_spawn_opts o = { .timeout_ns = tether_ms(2) };
        int rc = tether_spawn(a->scope, child_fn, &g_child_args[a->slot][CHILD_SLEEP], &o, NULL);
        FUZZ_CHECK(rc == 0 || rc == ECANCELED || rc == ETIMEDOUT || rc == EAGAIN,
                   "child tether_spawn: %d", rc);
        (void)slot;
        return 0;
    }
    return fuzz_blocking(a->behaviour);
}

/* --- ops on the worker's own objects -------------------------------------- */

static bool ref_eq(struct ref a, struct ref b)
{
    return a.kind == b.kind && a.idx == b.idx;
}

static unsigned ref_anc(struct worker *w, struct ref r)
{
    if (r.kind == REF_SCOPE)
        return sslot(w->id, r.idx)->anc | (1u << r.idx);
    if (r.kind == REF_TOKEN)
        return tslot(w->id, r.idx)->anc;
    return 0;
}

static tether_token *ref_token(struct worker *w, struct ref r)
{
    if (r.kind == REF_SCOPE)
        return tether_scope_token(sslot(w->id, r.idx)->s);
    if (r.kind == REF_TOKEN)
        return tslot(w->id, r.idx)->t;
    return NULL;
}

/* A token the worker may use as a parent or enter: a live token of its own or
 * the token of one of its scopes whose join has not started. */
static bool pick_token(struct worker *w, uint8_t a, struct ref *out)
{
    if (a & 1) {
        int i = (a >> 1) % FUZZ_SCOPES;
        struct scope_slot *s = sslot(w->id, i);
        if (!s->s || s->joining)
            return false;
        *out = (struct ref){ REF_SCOPE, i };
    } else {
        int i = (a >> 1) % FUZZ_TOKENS;
        if (!tslot(w->id, i)->t)
            return false;
        *out = (struct ref){ REF_TOKEN, i };
    }
    return true;
}

static struct ref current_ref(struct worker *w)
{
    return w->nentered ? w->entered[w->nentered - 1] : (struct ref){ REF_NONE, 0 };
}

static void remember(struct worker *w, struct ref r)
{
    FUZZ_CHECK(w->norder < FUZZ_ORDER, "creation log full");
    w->order[w->norder++] = r;
}

static void op_token_new(struct worker *w, uint8_t a)
{
    int i = a % FUZZ_TOKENS;
    struct token_slot *t = tslot(w->id, i);
    if (t->t)
        return;
    struct ref parent = { REF_NONE, 0 };
    if ((a >> 2) & 1 && !pick_token(w, a >> 3, &parent))
        return;
    tether_time_t deadline =
        (a & 0x80) ? tether_deadline_after(tether_us(300 * ((a >> 3) & 7))) : TETHER_NEVER;
    tether_token *tok = NULL;
    int rc = tether_token_new(&tok, ref_token(w, parent), deadline);
    FUZZ_CHECK(rc == 0 || rc == ENOMEM, "tether_token_new: %d", rc);
    if (rc)
        return;
    pthread_rwlock_wrlock(&t->life);
    t->t = tok;
    pthread_rwlock_unlock(&t->life);
    t->parent = parent;
    t->anc = ref_anc(w, parent);
    remember(w, (struct ref){ REF_TOKEN, i });
}

static int entered_count(struct worker *w, struct ref r)
{
    int n = 0;
    for (int k = 0; k < w->nentered; k++)
        n += ref_eq(w->entered[k], r);
    return n;
}

static void op_token_free(struct worker *w, uint8_t a)
{
    int i = a % FUZZ_TOKENS;
    struct token_slot *t = tslot(w->id, i);
    struct ref me = { REF_TOKEN, i };
    if (!t->t)
        return;
    for (int k = 0; k < FUZZ_SCOPES; k++)
        if (sslot(w->id, k)->s && ref_eq(sslot(w->id, k)->parent, me))
            return; /* the parent must outlive the scope */
    bool busy = entered_count(w, me) > 0;
    for (int k = 0; k < FUZZ_TOKENS; k++)
        busy |= tslot(w->id, k)->t && ref_eq(tslot(w->id, k)->parent, me);
    pthread_rwlock_wrlock(&t->life);
    int rc = tether_token_free(t->t);
    FUZZ_CHECK(rc == (busy ? EBUSY : 0), "tether_token_free: %d, expected %d", rc,
               busy ? EBUSY : 0);
    if (!rc)
        t->t = NULL;
    pthread_rwlock_unlock(&t->life);
}

static void op_token_cancel(struct worker *w, uint8_t a)
{
    /* Any worker's token: other workers' tokens under their read lock. */
    int owner = (w->id + (a >> 6)) % FUZZ_THREADS;
    struct token_slot *t = tslot(owner, a % FUZZ_TOKENS);
    pthread_rwlock_rdlock(&t->life);
    if (t->t) {
        int rc = tether_token_cancel(t->t, (a & 0x20) ? EPIPE : 0);
        FUZZ_CHECK(rc == 0, "tether_token_cancel: %d", rc);
        rc = tether_token_check(t->t);
        FUZZ_CHECK(rc == ECANCELED || rc == ETIMEDOUT, "check after cancel: %d", rc);
        FUZZ_CHECK(tether_token_error(t->t) != 0, "canceled token without error");
    }
    pthread_rwlock_unlock(&t->life);
}

static void cb_fn(void *arg)
{
    struct cb_slot *cb = arg;
    int runs = atomic_fetch_add(&cb->runs, 1);
    FUZZ_CHECK(runs == 0, "a cancellation callback ran twice");
}

static void op_callback(struct worker *w, uint8_t a)
{
    struct cb_slot *cb = &w->cbs[a % FUZZ_CBS];
    if (cb->h) {
        bool ran = false;
        int rc = tether_token_off_cancel(cb->h, &ran);
        FUZZ_CHECK(rc == 0, "tether_token_off_cancel: %d", rc);
        FUZZ_CHECK(ran == (atomic_load(&cb->runs) == 1), "off_cancel ran=%d, runs=%d", ran,
                   atomic_load(&cb->runs));
        cb->h = NULL;
        return;
    }
    struct ref r;
    if (!pick_token(w, a >> 2, &r))
        return;
    atomic_store(&cb->runs, 0);
    int rc = tether_token_on_cancel(ref_token(w, r), cb_fn, cb, &cb->h);
    FUZZ_CHECK(rc == 0 || rc == ENOMEM, "tether_token_on_cancel: %d", rc);
    if (rc)
        cb->h = NULL;
}

static void op_enter_leave(struct worker *w, uint8_t a)
{
    if ((a & 1) && w->nentered > 0) {
        struct ref top = w->entered[w->nentered - 1];
        struct ref r;
        if ((a & 2) && pick_token(w, a >> 2, &r) && !ref_eq(r, top)) {
            int rc = tether_token_leave(ref_token(w, r));
            FUZZ_CHECK(rc == EPERM, "leave of a non-innermost token: %d", rc);
            return;
        }
        int rc = tether_token_leave(ref_token(w, top));
        FUZZ_CHECK(rc == 0, "tether_token_leave: %d", rc);
        w->nentered--;
        return;
    }
    struct ref r;
    if (w->nentered == FUZZ_ENTER || !pick_token(w, a >> 1, &r))
        return;
    int rc = tether_token_enter(ref_token(w, r));
    FUZZ_CHECK(rc == 0 || rc == ENOMEM, "tether_token_enter: %d", rc);
    if (!rc) {
        w->entered[w->nentered++] = r;
        FUZZ_CHECK(tether_current() == ref_token(w, r), "tether_current is not the entered token");
    }
}

static void op_scope_open(struct worker *w, uint8_t a, uint8_t b)
{
    int i = a % FUZZ_SCOPES;
    struct scope_slot *s = sslot(w->id, i);
    if (s->s)
        return;
    struct ref parent = current_ref(w);
    tether_scope_opts o = { .policy = (tether_policy)((a >> 2) % 3) };
    if (b & 1)
        o.timeout_ns = tether_us(500 * (1 + ((b >> 1) & 7)));
    if (b & 0x10)
        o.max_children = 1 + ((b >> 5) & 1);
    if ((a & 0x60) == 0x60) {
        o.detached = true;
        parent = (struct ref){ REF_NONE, 0 };
    }
    tether_scope *sc = NULL;
    int rc = tether_scope_open(&sc, &o);
    FUZZ_CHECK(rc == 0 || rc == ENOMEM, "tether_scope_open: %d", rc);
    if (rc)
        return;
    for (int k = 0; k < CHILD_NBEHAVIOURS; k++)
        g_child_args[w->id * FUZZ_SCOPES + i][k].scope = sc;
    pthread_rwlock_wrlock(&s->life);
    s->s = sc;
    pthread_rwlock_unlock(&s->life);
    atomic_store(&s->joining, false);
    s->joined = false;
    s->ntasks = 0;
    s->parent = parent;
    s->anc = ref_anc(w, parent);
    remember(w, (struct ref){ REF_SCOPE, i });
}

static void op_spawn(struct worker *w, uint8_t a, uint8_t b)
{
    struct scope_slot *s = sslot(w->id, a % FUZZ_SCOPES);
    if (!s->s || s->joining)
        return;
    tether_spawn_opts o = { .timeout_ns = tether_us(500 * (1 + (b & 7))),
                            .background = (a >> 2) & 1,
                            .name = (a & 8) ? "fuzz-child" : NULL };
    int beh = (b >> 3) % CHILD_NBEHAVIOURS;
    bool want_task = ((a >> 4) & 1) && s->ntasks < FUZZ_TASKS;
    tether_task *task = NULL;
    int rc = (a & 0x20 ? tether_try_spawn : tether_spawn)(
        s->s, child_fn, &g_child_args[w->id * FUZZ_SCOPES + a % FUZZ_SCOPES][beh], &o,
        want_task ? &task : NULL);
    FUZZ_CHECK(rc == 0 || rc == ECANCELED || rc == ETIMEDOUT || rc == EAGAIN || rc == ENOMEM,
               "tether_spawn: %d", rc);
    if (!rc && want_task) {
        pthread_rwlock_wrlock(&s->tasks_lk);
        s->task_bg[s->ntasks] = o.background;
        s->tasks[s->ntasks++] = task;
        pthread_rwlock_unlock(&s->tasks_lk);
    }
}

/* Wait on or halt a task of any worker's scope, until that scope's join starts. */
static void op_task(struct worker *w, uint8_t a)
{
    int owner = (w->id + (a >> 6)) % FUZZ_THREADS;
    struct scope_slot *s = sslot(owner, a % FUZZ_SCOPES);
    pthread_rwlock_rdlock(&s->tasks_lk);
    if (s->ntasks > 0 && !s->joining) { /* ntasks first: it guards s->s */
        int k = (a >> 2) % s->ntasks;
        bool halt = a & 0x20;
        /* The opener's wait on a background task before join: EDEADLK. */
        int want = !halt && s->task_bg[k] && owner == w->id ? EDEADLK : 0;
        int result = -1;
        int rc =
            halt ? tether_task_halt(s->tasks[k], &result) : tether_task_wait(s->tasks[k], &result);
        FUZZ_CHECK(rc == want, "tether_task_%s: %d", halt ? "halt" : "wait", rc);
        FUZZ_CHECK(rc || result >= 0, "task result %d", result);
        FUZZ_CHECK(rc || result == 0 || !tether_task_late(s->tasks[k]), "late with result %d",
                   result);
    }
    pthread_rwlock_unlock(&s->tasks_lk);
}

static void op_scope_cancel(struct worker *w, uint8_t a)
{
    int owner = (w->id + (a >> 6)) % FUZZ_THREADS;
    struct scope_slot *s = sslot(owner, a % FUZZ_SCOPES);
    pthread_rwlock_rdlock(&s->life);
    if (s->s) {
        int rc = tether_scope_cancel(s->s);
        FUZZ_CHECK(rc == 0 || rc == EINVAL, "tether_scope_cancel: %d", rc);
    }
    pthread_rwlock_unlock(&s->life);
}

/* Whether the owner may join (or free) scope i now: nothing it entered and no
 * scope of its own descends from it (their tokens would outlive their parent). */
static bool may_join(struct worker *w, int i)
{
    for (int k = 0; k < w->nentered; k++)
        if (ref_anc(w, w->entered[k]) & (1u << i))
            return false;
    for (int k = 0; k < FUZZ_SCOPES; k++)
        if (sslot(w->id, k)->s && (sslot(w->id, k)->anc & (1u << i)))
            return false;
    return true;
}

/* The owner's side of the task handles' lifetime: by default no task wait or
 * halt is in flight when join starts; with FUZZ_WAIT_ACROSS_JOIN they may
 * still run during the join (see fuzz_ops.h). */
static void tasks_close(struct scope_slot *s)
{
#if FUZZ_WAIT_ACROSS_JOIN
    atomic_store(&s->joining, true);
#else
    pthread_rwlock_wrlock(&s->tasks_lk);
    atomic_store(&s->joining, true);
    pthread_rwlock_unlock(&s->tasks_lk);
#endif
}

/* After join (or before a free): no task wait or halt is in flight. */
static void tasks_drain(struct scope_slot *s)
{
    pthread_rwlock_wrlock(&s->tasks_lk);
    s->ntasks = 0;
    pthread_rwlock_unlock(&s->tasks_lk);
}

static void scope_join(struct worker *w, int i)
{
    struct scope_slot *s = sslot(w->id, i);
    tasks_close(s);
    tether_result r;
    int rc = tether_scope_join(s->s, &r);
    FUZZ_CHECK(rc == 0, "tether_scope_join: %d", rc);
    FUZZ_CHECK((unsigned)r.outcome <= TETHER_OUTCOME_DEADLINE_EXCEEDED, "outcome %d", r.outcome);
    FUZZ_CHECK(r.error_task >= -1 && r.error_task < (int)r.spawned, "error_task %d of %u",
               r.error_task, r.spawned);
    FUZZ_CHECK(r.succeeded + r.failed + r.canceled == r.spawned && r.late_succeeded <= r.succeeded,
               "counts %u+%u+%u of %u, %u late", r.succeeded, r.failed, r.canceled, r.spawned,
               r.late_succeeded);
    s->joined = true;
    tasks_drain(s);
}

static void scope_free(struct worker *w, int i)
{
    struct scope_slot *s = sslot(w->id, i);
    bool busy = false;
    for (int k = 0; k < FUZZ_TOKENS; k++)
        busy |= tslot(w->id, k)->t && (tslot(w->id, k)->anc & (1u << i));
    if (!s->joined)
        tasks_close(s);
    pthread_rwlock_wrlock(&s->life);
    int rc = tether_scope_free(s->s);
    FUZZ_CHECK(rc == (busy ? EBUSY : 0), "tether_scope_free: %d, expected %d", rc,
               busy ? EBUSY : 0);
    s->joined = true;
    if (!rc) {
        tasks_drain(s); /* a wait across the join may still be leaving */
        s->s = NULL;
    }
    pthread_rwlock_unlock(&s->life);
}

static void op_scope_end(struct worker *w, uint8_t a)
{
    int i = a % FUZZ_SCOPES;
    struct scope_slot *s = sslot(w->id, i);
    if (!s->s || !may_join(w, i))
        return;
    if ((a & 4) && !s->joined)
        scope_join(w, i);
    else
        scope_free(w, i);
}

/* --- the program ------------------------------------------------------------ */

static const char *const op_names[OP_COUNT] = {
    "scope_open", "spawn",       "spawn2",       "scope_cancel", "scope_end", "task",
    "token_new",  "token_free",  "token_cancel", "enter_leave",  "callback",  "sleep",
    "cond_wait",  "cond_signal", "sem_wait",     "sem_post",     "pipe_read", "pipe_write",
    "check",      "sigcancel",   "shield",       "retry",        "scope_run",
};

/* FUZZ_API_TRACE=1 prints every op, to read what a reproducer does. */
static bool g_trace;

static void run_op(struct worker *w, uint8_t op, uint8_t a, uint8_t b)
{
    if (g_trace)
        fprintf(stderr, "fuzz_api: worker %d: %s 0x%02x 0x%02x\n", w->id, op_names[op % OP_COUNT],
                a, b);
    switch (op % OP_COUNT) {
    case OP_SCOPE_OPEN: op_scope_open(w, a, b); break;
    case OP_SPAWN: op_spawn(w, a, b); break;
    case OP_SPAWN2: op_spawn(w, a, (uint8_t)~b); break;
    case OP_SCOPE_CANCEL: op_scope_cancel(w, a); break;
    case OP_SCOPE_END: op_scope_end(w, a); break;
    case OP_TASK: op_task(w, a); break;
    case OP_TOKEN_NEW: op_token_new(w, a); break;
    case OP_TOKEN_FREE: op_token_free(w, a); break;
    case OP_TOKEN_CANCEL: op_token_cancel(w, a); break;
    case OP_ENTER_LEAVE: op_enter_leave(w, a); break;
    case OP_CALLBACK: op_callback(w, a); break;
    default: fuzz_misc_op(op % OP_COUNT, a); break;
    }
}

/* Release everything the worker still holds, newest first. */
static void cleanup(struct worker *w)
{
    while (w->nentered > 0) {
        int rc = tether_token_leave(ref_token(w, w->entered[w->nentered - 1]));
        FUZZ_CHECK(rc == 0, "tether_token_leave at clean-up: %d", rc);
        w->nentered--;
    }
    for (int k = 0; k < FUZZ_CBS; k++)
        if (w->cbs[k].h)
            op_callback(w, (uint8_t)k);
    for (int k = w->norder - 1; k >= 0; k--) {
        struct ref r = w->order[k];
        if (r.kind == REF_SCOPE && sslot(w->id, r.idx)->s)
            scope_free(w, r.idx);
        else if (r.kind == REF_TOKEN && tslot(w->id, r.idx)->t)
            op_token_free(w, (uint8_t)r.idx);
    }
    for (int k = 0; k < FUZZ_SCOPES; k++)
        FUZZ_CHECK(!sslot(w->id, k)->s, "scope %d left after clean-up", k);
    for (int k = 0; k < FUZZ_TOKENS; k++)
        FUZZ_CHECK(!tslot(w->id, k)->t, "token %d left after clean-up", k);
    FUZZ_CHECK(tether_current() == NULL, "a current token left after clean-up");
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (size_t step = 0; step < w->nops; step++) {
        const uint8_t *p = w->data + FUZZ_OP_BYTES * (step * FUZZ_THREADS + (size_t)w->id);
        run_op(w, p[0], p[1], p[2]);
        pthread_barrier_wait(&g_step);
    }
    pthread_barrier_wait(&g_step); /* every op done before anyone cleans up */
    cleanup(w);
    return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    g_trace = getenv("FUZZ_API_TRACE") != NULL;
    for (size_t k = 0; k < sizeof g_scopes / sizeof g_scopes[0]; k++) {
        pthread_rwlock_init(&g_scopes[k].life, NULL);
        pthread_rwlock_init(&g_scopes[k].tasks_lk, NULL);
        for (int b = 0; b < CHILD_NBEHAVIOURS; b++)
            g_child_args[k][b] = (struct child_arg){ .slot = (int)k, .behaviour = b };
    }
    for (size_t k = 0; k < sizeof g_tokens / sizeof g_tokens[0]; k++)
        pthread_rwlock_init(&g_tokens[k].life, NULL);
    fuzz_shared_init(&g_shared);
    fuzz_guard_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t nops = size / FUZZ_OP_BYTES / FUZZ_THREADS;
    if (nops > FUZZ_MAX_STEPS)
        nops = FUZZ_MAX_STEPS;
    if (nops == 0)
        return -1; /* too short to be a program: not worth keeping */
    struct fuzz_baseline base;
    fuzz_guard_begin(&base);

    pthread_barrier_init(&g_step, NULL, FUZZ_THREADS);
    for (int k = 0; k < FUZZ_THREADS; k++) {
        struct worker *w = &g_workers[k];
        memset(w, 0, sizeof *w);
        w->id = k;
        w->data = data;
        w->nops = nops;
        FUZZ_CHECK(pthread_create(&w->thread, NULL, worker_main, w) == 0, "no worker thread");
    }
    for (int k = 0; k < FUZZ_THREADS; k++)
        pthread_join(g_workers[k].thread, NULL);
    pthread_barrier_destroy(&g_step);
    fuzz_shared_reset(&g_shared);

    fuzz_guard_end(&base);
    return 0;
}
