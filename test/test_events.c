/*
 * Event hooks (tether/events.h): each event fires exactly once with the
 * right scope, index, name, token, result, cause and error, in the right
 * thread, for small trees (fail-fast, supervisor, deadline); replacing the
 * registration while events fire never calls a replaced registration after
 * tether_events_set returned (TSan); hooks that call tether functions; a
 * free waiting for a token_canceled hook; fork.
 */
#define _GNU_SOURCE
#include "sanitizer.h"
#include "support.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---------------------------------------------------------------------- */
/* A log of events                                                        */

enum kind { OPENED, JOINED, STARTED, EXITED, CANCELED };

typedef struct event {
    enum kind kind;
    tether_scope *scope;
    tether_token *token;
    int index, value; /* child index; exit value, cancel error */
    tether_cause cause;
    tether_result result;
    char name[TETHER_NAME_MAX];
    pthread_t thread;
    bool current_is_token; /* tether_current() == token in the hook */
} event;

enum { LOG_MAX = 64 };

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static event log_ev[LOG_MAX];
static int log_n;

static void record(event e)
{
    e.thread = pthread_self();
    pthread_mutex_lock(&log_mu);
    if (log_n < LOG_MAX)
        log_ev[log_n++] = e;
    pthread_mutex_unlock(&log_mu);
}

static void on_opened(void *arg, tether_scope *s, const char *name, tether_token *t)
{
    (void)arg;
    event e = { .kind = OPENED, .scope = s, .token = t, .index = -1 };
    snprintf(e.name, sizeof e.name, "%s", name);
    record(e);
}

static void on_joined(void *arg, tether_scope *s, const char *name, tether_token *t,
                      const tether_result *r)
{
    (void)arg;
    event e = { .kind = JOINED, .scope = s, .token = t, .index = -1, .result = *r };
    snprintf(e.name, sizeof e.name, "%s", name);
    record(e);
}

static void on_started(void *arg, tether_scope *s, int index, const char *name, tether_token *t)
{
    (void)arg;
    event e = { .kind = STARTED, .scope = s, .token = t, .index = index };
    e.current_is_token = tether_current() == t;
    snprintf(e.name, sizeof e.name, "%s", name);
    record(e);
}

static void on_exited(void *arg, tether_scope *s, int index, const char *name, tether_token *t,
                      int rc)
{
    (void)arg;
    event e = { .kind = EXITED, .scope = s, .token = t, .index = index, .value = rc };
    snprintf(e.name, sizeof e.name, "%s", name);
    record(e);
}

static void on_canceled(void *arg, tether_token *t, tether_cause cause, int error)
{
    (void)arg;
    event e = { .kind = CANCELED, .token = t, .index = -1, .cause = cause, .value = error };
    record(e);
}

static const tether_events logging = { .scope_opened = on_opened,
                                       .scope_joined = on_joined,
                                       .child_started = on_started,
                                       .child_exited = on_exited,
                                       .token_canceled = on_canceled };

/* How many logged events are of `kind` (and, if token is set, about it). */
static int count(enum kind kind, const tether_token *token)
{
    int n = 0;
    for (int i = 0; i < log_n; i++)
        n += log_ev[i].kind == kind && (!token || log_ev[i].token == token);
    return n;
}

/* The one logged event of `kind` about `token` (asserted unique). */
static const event *the(enum kind kind, const tether_token *token)
{
    const event *found = NULL;
    for (int i = 0; i < log_n; i++)
        if (log_ev[i].kind == kind && log_ev[i].token == token) {
            ck_assert_msg(!found, "event %d for one token twice", (int)kind);
            found = &log_ev[i];
        }
    ck_assert_msg(found != NULL, "no event %d for the token", (int)kind);
    return found;
}

static int position(const event *e)
{
    return (int)(e - log_ev);
}

/* ---------------------------------------------------------------------- */
/* Children                                                               */

typedef struct sleeper {
    sem_t started;
    _Atomic pid_t tid;
} sleeper;

static int sleep_until_canceled(void *arg)
{
    sleeper *z = arg;
    atomic_store(&z->tid, th_gettid());
    sem_post(&z->started);
    return sleep_forever();
}

static void wait_asleep(sleeper *z)
{
    sem_wait_ok(&z->started);
    ck_assert_int_eq(th_wait_blocked(atomic_load(&z->tid)), 0);
}

static int fail_eio(void *arg)
{
    (void)arg;
    return EIO;
}

/* A child's token and index, taken while its handle is valid (join frees
 * the handles). */
typedef struct child {
    tether_token *token;
    int index;
} child;

static child child_of(tether_task *task)
{
    return (child){ tether_task_token(task), tether_task_index(task) };
}

/* Check the child events of c: started once in the child's thread under
 * its token, exited once with `value`, in that order, before `joined`. */
static void check_child(tether_scope *s, child c, const char *name, int value, const event *joined)
{
    tether_token *t = c.token;
    const event *st = the(STARTED, t), *ex = the(EXITED, t);
    ck_assert_ptr_eq(st->scope, s);
    ck_assert_ptr_eq(ex->scope, s);
    ck_assert_int_eq(st->index, c.index);
    ck_assert_int_eq(ex->index, c.index);
    ck_assert_str_eq(st->name, name);
    ck_assert_str_eq(ex->name, name);
    ck_assert(st->current_is_token);
    ck_assert(pthread_equal(st->thread, ex->thread));
    ck_assert(!pthread_equal(st->thread, pthread_self()));
    ck_assert_int_eq(ex->value, value);
    ck_assert_int_lt(position(st), position(ex));
    ck_assert_int_lt(position(ex), position(joined));
}

/* ---------------------------------------------------------------------- */
/* Small trees                                                            */

START_TEST(test_events_fail_fast_tree)
{
    th_baseline base = th_baseline_take();
    ck_assert_int_eq(tether_events_set(&logging), 0);
    tether_scope_opts o = { .name = "ff", .policy = TETHER_POLICY_FAIL_FAST };
    tether_scope *s = open_scope(&o);
    tether_token *st = tether_scope_token(s);
    sleeper z = { 0 };
    sem_init(&z.started, 0, 0);
    tether_task *a, *b;
    spawn_ok(s, sleep_until_canceled, &z, "sleeper", &a);
    wait_asleep(&z);
    spawn_ok(s, fail_eio, NULL, "failer", &b);
    child ca_ = child_of(a), cb_ = child_of(b);
    tether_result r;
    ck_assert_int_eq(tether_scope_join(s, &r), 0);
    const event *op = the(OPENED, st), *jo = the(JOINED, st), *ca = the(CANCELED, st);
    ck_assert_ptr_eq(op->scope, s);
    ck_assert_str_eq(op->name, "ff");
    ck_assert(pthread_equal(op->thread, pthread_self()));
    ck_assert_int_eq(position(op), 0);
    check_child(s, ca_, "sleeper", ECANCELED, jo);
    check_child(s, cb_, "failer", EIO, jo);
    /* The failing child's thread canceled the scope, after its exit. */
    ck_assert_int_eq(ca->cause, TETHER_CAUSE_SIBLING_FAILED);
    ck_assert_int_eq(ca->value, EIO);
    ck_assert(pthread_equal(ca->thread, the(EXITED, cb_.token)->thread));
    ck_assert_int_lt(position(the(EXITED, cb_.token)), position(ca));
    ck_assert_int_eq(jo->result.outcome, TETHER_OUTCOME_FAILED);
    ck_assert_int_eq(jo->result.outcome, r.outcome);
    ck_assert_int_eq(jo->result.error, EIO);
    ck_assert(pthread_equal(jo->thread, pthread_self()));
    ck_assert_int_eq(position(jo), log_n - 1);
    /* Exactly: 1 open, 2 starts, 2 exits, 1 cancel (children canceled
     * with the scope are not reported one by one), 1 join. */
    ck_assert_int_eq(log_n, 7);
    ck_assert_int_eq(count(CANCELED, NULL), 1);
    ck_assert_int_eq(tether_scope_free(s), 0);
    ck_assert_int_eq(log_n, 7); /* free after join reports nothing */
    ck_assert_int_eq(tether_events_set(NULL), 0);
    sem_destroy(&z.started);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_events_supervisor_tree)
{
    ck_assert_int_eq(tether_events_set(&logging), 0);
    tether_scope_opts o = { .name = "sup", .policy = TETHER_POLICY_SUPERVISOR };
    tether_scope *s = open_scope(&o);
    tether_token *st = tether_scope_token(s);
    tether_task *a, *b;
    spawn_ok(s, return_zero, NULL, "ok", &a);
    spawn_ok(s, fail_eio, NULL, "bad", &b);
    child ca_ = child_of(a), cb_ = child_of(b);
    ck_assert_int_eq(tether_scope_join(s, NULL), 0); /* no result asked: the hook still has it */
    const event *jo = the(JOINED, st);
    check_child(s, ca_, "ok", 0, jo);
    check_child(s, cb_, "bad", EIO, jo);
    ck_assert_int_eq(jo->result.outcome, TETHER_OUTCOME_PARTIAL);
    ck_assert_uint_eq(jo->result.spawned, 2);
    ck_assert_int_eq(count(CANCELED, NULL), 0);
    ck_assert_int_eq(log_n, 6);
    ck_assert_int_eq(tether_scope_free(s), 0);
    ck_assert_int_eq(tether_events_set(NULL), 0);
}
END_TEST

START_TEST(test_events_deadline_tree)
{
    ck_assert_int_eq(tether_events_set(&logging), 0);
    tether_scope_opts o = { .name = "dl", .timeout_ns = th_bound_ns(300) };
    tether_scope *s = open_scope(&o);
    tether_token *st = tether_scope_token(s);
    sleeper z = { 0 };
    sem_init(&z.started, 0, 0);
    tether_task *a;
    spawn_ok(s, sleep_until_canceled, &z, "waiter", &a);
    wait_asleep(&z);
    child ca_ = child_of(a);
    ck_assert_int_eq(tether_scope_join(s, NULL), 0);
    const event *ca = the(CANCELED, st), *jo = the(JOINED, st);
    ck_assert_int_eq(ca->cause, TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(ca->value, ETIMEDOUT);
    check_child(s, ca_, "waiter", ETIMEDOUT, jo);
    ck_assert_int_eq(jo->result.outcome, TETHER_OUTCOME_DEADLINE_EXCEEDED);
    ck_assert_int_eq(count(CANCELED, NULL), 1);
    ck_assert_int_eq(log_n, 5);
    ck_assert_int_eq(tether_scope_free(s), 0);
    ck_assert_int_eq(tether_events_set(NULL), 0);
    sem_destroy(&z.started);
}
END_TEST

/* Nothing is reported without a registration, or after it is cleared. */
START_TEST(test_events_cleared_reports_nothing)
{
    ck_assert_int_eq(tether_events_set(&logging), 0);
    ck_assert_int_eq(tether_events_set(NULL), 0);
    tether_scope *s = open_scope(NULL);
    spawn_ok(s, return_zero, NULL, NULL, NULL);
    ck_assert_int_eq(tether_scope_cancel(s), 0);
    join_and_free(s);
    ck_assert_int_eq(log_n, 0);
    /* Hooks left NULL are not called. */
    tether_events only = { .scope_joined = on_joined };
    ck_assert_int_eq(tether_events_set(&only), 0);
    s = open_scope(NULL);
    spawn_ok(s, return_zero, NULL, NULL, NULL);
    join_and_free(s);
    ck_assert_int_eq(log_n, 1);
    ck_assert_int_eq(log_ev[0].kind, JOINED);
    ck_assert_int_eq(tether_events_set(NULL), 0);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Hooks that call tether                                                 */

typedef struct reentry {
    tether_token *other;     /* canceled from the first token_canceled hook */
    _Atomic int set_rc;      /* tether_events_set from a hook */
    _Atomic int free_rc;     /* tether_token_free of its own token from the hook */
    _Atomic int checks;      /* tether_token_cause/error agreed with the hook */
    _Atomic int nested;      /* token_canceled calls */
    _Atomic int snapshot_rc; /* tether_metrics_snapshot_take from scope_joined */
} reentry;

static reentry re;

static void re_canceled(void *arg, tether_token *t, tether_cause cause, int error)
{
    (void)arg;
    atomic_fetch_add(&re.nested, 1);
    if (tether_token_cause(t) == cause && tether_token_error(t) == error)
        atomic_fetch_add(&re.checks, 1);
    atomic_store(&re.set_rc, tether_events_set(NULL));
    atomic_store(&re.free_rc, tether_token_free(t));
    if (t != re.other)
        tether_token_cancel(re.other, EPIPE); /* reported too, from inside this hook */
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    tether_dump(devnull, TETHER_DUMP_TEXT);
    close(devnull);
}

static void re_joined(void *arg, tether_scope *s, const char *name, tether_token *t,
                      const tether_result *r)
{
    (void)arg, (void)s, (void)name, (void)t, (void)r;
    tether_metrics_snapshot snap;
    atomic_store(&re.snapshot_rc, tether_metrics_snapshot_take(&snap));
    tether_metrics_snapshot_release(&snap);
}

static void re_started(void *arg, tether_scope *s, int index, const char *name, tether_token *t)
{
    (void)arg, (void)s, (void)index, (void)name;
    tether_token_check(t);
    tether_check();
}

START_TEST(test_events_hooks_call_tether)
{
    th_baseline base = th_baseline_take();
    tether_events ev = { .token_canceled = re_canceled,
                         .scope_joined = re_joined,
                         .child_started = re_started };
    ck_assert_int_eq(tether_events_set(&ev), 0);
    tether_token *t = new_token(NULL, TETHER_NEVER);
    re.other = new_token(NULL, TETHER_NEVER);
    atomic_store(&re.free_rc, -1);
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ck_assert_int_eq(atomic_load(&re.nested), 2);
    ck_assert_int_eq(atomic_load(&re.checks), 2);
    ck_assert_int_eq(atomic_load(&re.set_rc), EDEADLK);
    ck_assert_int_eq(atomic_load(&re.free_rc), EBUSY);
    ck_assert_int_eq(tether_token_cause(re.other), TETHER_CAUSE_EXPLICIT);
    ck_assert_int_eq(tether_token_error(re.other), EPIPE);
    ck_assert_int_eq(tether_token_free(t), 0); /* the hook has returned */
    ck_assert_int_eq(tether_token_free(re.other), 0);
    tether_scope *s = open_scope(NULL);
    spawn_ok(s, return_zero, NULL, NULL, NULL);
    join_and_free(s);
    ck_assert_int_eq(atomic_load(&re.snapshot_rc), 0);
    ck_assert_int_eq(tether_events_set(NULL), 0);
    th_baseline_check(base);
}
END_TEST

/* Hooks print the request id a parent set on its token: a child's token
 * and a canceled scope's token both see it. */
static _Atomic int ctx_seen;

static void ctx_check(const tether_token *t)
{
    char buf[TETHER_CONTEXT_MAX];
    if (tether_token_context(t, buf, sizeof buf) == 0 && strcmp(buf, "req-42") == 0)
        atomic_fetch_add(&ctx_seen, 1);
}

static void ctx_started(void *arg, tether_scope *s, int index, const char *name, tether_token *t)
{
    (void)arg, (void)s, (void)index, (void)name;
    ctx_check(t);
}

static void ctx_canceled(void *arg, tether_token *t, tether_cause cause, int error)
{
    (void)arg, (void)cause, (void)error;
    ctx_check(t);
}

static void ctx_joined(void *arg, tether_scope *s, const char *name, tether_token *t,
                       const tether_result *r)
{
    (void)arg, (void)s, (void)name, (void)r;
    ctx_check(t);
}

START_TEST(test_events_hooks_see_request_context)
{
    th_baseline base = th_baseline_take();
    tether_events ev = { .child_started = ctx_started,
                         .token_canceled = ctx_canceled,
                         .scope_joined = ctx_joined };
    ck_assert_int_eq(tether_events_set(&ev), 0);
    tether_token *request = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_set_context(request, "req-42"), 0);
    tether_scope_opts o = { .name = "ctx", .parent = request };
    tether_scope *s = open_scope(&o);
    sleeper z = { 0 };
    sem_init(&z.started, 0, 0);
    spawn_ok(s, sleep_until_canceled, &z, "c", NULL);
    wait_asleep(&z);
    ck_assert_int_eq(tether_scope_cancel(s), 0);
    join_and_free(s);
    /* child_started, token_canceled (the scope's token), scope_joined. */
    ck_assert_int_eq(atomic_load(&ctx_seen), 3);
    ck_assert_int_eq(tether_events_set(NULL), 0);
    ck_assert_int_eq(tether_token_free(request), 0);
    sem_destroy(&z.started);
    th_baseline_check(base);
}
END_TEST

/* A token_canceled hook that takes a while keeps its token alive: a free
 * from another thread returns only after the hook. */
static sem_t slow_entered;
static _Atomic bool slow_done;

static void slow_canceled(void *arg, tether_token *t, tether_cause cause, int error)
{
    (void)arg, (void)t, (void)cause, (void)error;
    sem_post(&slow_entered);
    tether_time_t end = tether_now() + tether_ms(100);
    while (tether_now() < end)
        busy_spin(1000);
    atomic_store(&slow_done, true);
}

static void *cancel_thread(void *arg)
{
    tether_token_cancel(arg, 0);
    return NULL;
}

START_TEST(test_events_free_waits_for_canceled_hook)
{
    sem_init(&slow_entered, 0, 0);
    tether_events ev = { .token_canceled = slow_canceled };
    ck_assert_int_eq(tether_events_set(&ev), 0);
    tether_token *t = new_token(NULL, TETHER_NEVER);
    pthread_t th = thread_start(cancel_thread, t);
    sem_wait_ok(&slow_entered);
    ck_assert_int_eq(tether_token_free(t), 0);
    ck_assert(atomic_load(&slow_done));
    thread_join(th);
    ck_assert_int_eq(tether_events_set(NULL), 0);
    sem_destroy(&slow_entered);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Replacement while events fire                                          */

enum { CHURN_THREADS = 3, GENERATIONS = 4 };

typedef struct gen_arg {
    _Atomic bool retired; /* set once tether_events_set replaced it */
    _Atomic long calls;
} gen_arg;

static void gen_hook(gen_arg *g)
{
    EXPECT(!atomic_load(&g->retired), "a replaced registration was called");
    atomic_fetch_add(&g->calls, 1);
}

static void g_opened(void *arg, tether_scope *s, const char *name, tether_token *t)
{
    (void)s, (void)name, (void)t;
    gen_hook(arg);
}

static void g_joined(void *arg, tether_scope *s, const char *name, tether_token *t,
                     const tether_result *r)
{
    (void)s, (void)name, (void)t, (void)r;
    gen_hook(arg);
}

static void g_started(void *arg, tether_scope *s, int index, const char *name, tether_token *t)
{
    (void)s, (void)index, (void)name, (void)t;
    gen_hook(arg);
}

static void g_exited(void *arg, tether_scope *s, int index, const char *name, tether_token *t,
                     int rc)
{
    (void)s, (void)index, (void)name, (void)t, (void)rc;
    gen_hook(arg);
}

static void g_canceled(void *arg, tether_token *t, tether_cause cause, int error)
{
    (void)t, (void)cause, (void)error;
    gen_hook(arg);
}

static _Atomic bool churn_stop;

static void *churn(void *arg)
{
    (void)arg;
    while (!atomic_load(&churn_stop)) {
        tether_scope *s;
        if (tether_scope_open(&s, NULL) != 0) {
            bad("open");
            break;
        }
        EXPECT(tether_spawn(s, return_zero, NULL, NULL, NULL) == 0, "spawn");
        tether_scope_cancel(s);
        EXPECT(tether_scope_join(s, NULL) == 0, "join");
        EXPECT(tether_scope_free(s) == 0, "free");
    }
    return NULL;
}

START_TEST(test_events_replaced_while_firing)
{
    static gen_arg gens[GENERATIONS];
    pthread_t th[CHURN_THREADS];
    for (int i = 0; i < CHURN_THREADS; i++)
        th[i] = thread_start(churn, NULL);
    int rounds = stress(200);
    for (int i = 0; i < rounds; i++) {
        gen_arg *g = &gens[i % GENERATIONS];
        atomic_store(&g->retired, false);
        tether_events ev = { .arg = g,
                             .scope_opened = g_opened,
                             .scope_joined = g_joined,
                             .child_started = g_started,
                             .child_exited = g_exited,
                             .token_canceled = g_canceled };
        long before = atomic_load(&g->calls);
        ck_assert_int_eq(tether_events_set(i % 5 == 4 ? NULL : &ev), 0);
        /* Every earlier registration is replaced now: none may run again. */
        for (int k = 0; k < GENERATIONS; k++)
            if (&gens[k] != g || i % 5 == 4)
                atomic_store(&gens[k].retired, true);
        /* Let the new one fire before it is replaced in turn. */
        tether_time_t end = tether_now() + th_bound_ns(5000);
        while (i % 5 != 4 && atomic_load(&g->calls) == before && tether_now() < end)
            busy_spin(1000);
        ck_assert_msg(i % 5 == 4 || atomic_load(&g->calls) > before, "round %d: no event fired", i);
    }
    atomic_store(&churn_stop, true);
    for (int i = 0; i < CHURN_THREADS; i++)
        thread_join(th[i]);
    ck_assert_int_eq(tether_events_set(NULL), 0);
    ck_assert_msg(bad_seen() == 0, "%s", bad_first());
    long calls = 0;
    for (int k = 0; k < GENERATIONS; k++)
        calls += atomic_load(&gens[k].calls);
    ck_assert_int_gt(calls, 0);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Fork                                                                   */

static _Atomic int fork_opened;

static void count_opened(void *arg, tether_scope *s, const char *name, tether_token *t)
{
    (void)arg, (void)s, (void)name, (void)t;
    atomic_fetch_add(&fork_opened, 1);
}

START_TEST(test_events_fork_keeps_registration)
{
    tether_events ev = { .scope_opened = count_opened };
    ck_assert_int_eq(tether_events_set(&ev), 0);
    /* Threads inside hooks at the fork must not hold up the child's
     * tether_events_set: churn while forking. Not under a sanitizer, whose
     * runtime can hang a child forked among running threads (test_fork). */
#if defined(TS_SANITIZED)
    enum { CHURNERS = 0 };
#else
    enum { CHURNERS = 2 };
#endif
    pthread_t th[2];
    for (int i = 0; i < CHURNERS; i++)
        th[i] = thread_start(churn, NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int before = atomic_load(&fork_opened);
        tether_scope *s;
        if (tether_scope_open(&s, NULL) != 0 || tether_scope_free(s) != 0)
            _exit(2);
        if (atomic_load(&fork_opened) != before + 1)
            _exit(3);
        if (tether_events_set(NULL) != 0) /* returns: no reader of the parent counts */
            _exit(4);
        if (tether_scope_open(&s, NULL) != 0 || tether_scope_free(s) != 0)
            _exit(5);
        _exit(atomic_load(&fork_opened) == before + 1 ? 0 : 6);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    atomic_store(&churn_stop, true);
    for (int i = 0; i < CHURNERS; i++)
        thread_join(th[i]);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: %d", st);
    ck_assert_int_eq(tether_events_set(NULL), 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("events");
    TCase *tc = tcase_create("events");
    tcase_set_timeout(tc, th_timeout_s(30));
    tcase_add_test(tc, test_events_fail_fast_tree);
    tcase_add_test(tc, test_events_supervisor_tree);
    tcase_add_test(tc, test_events_deadline_tree);
    tcase_add_test(tc, test_events_cleared_reports_nothing);
    tcase_add_test(tc, test_events_hooks_call_tether);
    tcase_add_test(tc, test_events_hooks_see_request_context);
    tcase_add_test(tc, test_events_free_waits_for_canceled_hook);
    tcase_add_test(tc, test_events_replaced_while_firing);
    tcase_add_test(tc, test_events_fork_keeps_registration);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
