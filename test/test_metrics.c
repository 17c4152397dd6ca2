/*
 * Metrics (tether/metrics.h): counts that match exactly what a test did
 * (scopes of several names, outcomes, causes, the convergence histogram,
 * children live and peak, hostages, late successes, halts, blocking calls
 * stopped), the Prometheus text checked by the real `promtool check
 * metrics`, label escaping, the bounded registry's overflow series, the off
 * switch, fork, and many threads opening and joining while another takes
 * snapshots and writes the text.
 */
#define _GNU_SOURCE
#include "support.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---------------------------------------------------------------------- */
/* Helpers                                                                */

/* The snapshot's series named `name` (asserted present). */
static const tether_metrics_series *series(const tether_metrics_snapshot *snap, const char *name)
{
    for (size_t i = 0; i < snap->count; i++)
        if (!snap->series[i].overflow && strcmp(snap->series[i].scope, name) == 0)
            return &snap->series[i];
    ck_abort_msg("no series named '%s'", name);
    return NULL;
}

/* The snapshot as text, in a buffer the caller frees. */
static char *format_text(const tether_metrics_snapshot *snap)
{
    size_t need = 0;
    ck_assert_int_eq(tether_metrics_format(snap, NULL, 0, &need), ERANGE);
    char *text = malloc(need + 1);
    ck_assert_ptr_nonnull(text);
    size_t len = 0;
    ck_assert_int_eq(tether_metrics_format(snap, text, need + 1, &len), 0);
    ck_assert_uint_eq(len, need);
    ck_assert_uint_eq(strlen(text), len);
    return text;
}

/* Whether `line` (a whole line) is in text. */
static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return true;
    return false;
}

/* Run `promtool check metrics` on text: its exit status. Without promtool
 * the check is skipped with a message, except under CI=true, where it
 * fails the test (CI installs the prometheus package). */
static void promtool_check(const char *text)
{
    if (system("command -v promtool >/dev/null 2>&1") != 0) {
        const char *ci = getenv("CI");
        ck_assert_msg(!(ci && strcmp(ci, "true") == 0),
                      "promtool is missing under CI=true (install the prometheus package)");
        fprintf(stderr, "promtool not found: skipping `promtool check metrics` "
                        "(apt-get install prometheus)\n");
        return;
    }
    char path[] = "/tmp/tether-metrics-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    size_t n = strlen(text);
    ck_assert_int_eq(write(fd, text, n), (ssize_t)n);
    close(fd);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s 1>&2", path);
    int st = system(cmd);
    unlink(path);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "promtool check metrics failed (%d)", st);
}

/* A child that blocks in a cancellable sleep, after saying where it is. */
typedef struct blocker {
    sem_t started;
    _Atomic pid_t tid;
} blocker;

static int block_until_canceled(void *arg)
{
    blocker *b = arg;
    atomic_store(&b->tid, th_gettid());
    sem_post(&b->started);
    return sleep_forever();
}

/* Wait until b's child sits in its sleep. */
static void wait_blocked(blocker *b)
{
    sem_wait_ok(&b->started);
    ck_assert_int_eq(th_wait_blocked(atomic_load(&b->tid)), 0);
}

static int fail_eio(void *arg)
{
    (void)arg;
    return EIO;
}

/* A child that ignores its cancellation and returns 0: a late success. */
static int ignore_cancel(void *arg)
{
    sem_t *started = arg;
    sem_post(started);
    while (tether_check() == 0)
        busy_spin(1000);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Exact counts                                                           */

/* One scope named `name` (NULL: unnamed) with a blocked child, canceled
 * once the child sleeps: canceled, cause explicit, one call stopped. */
static void canceled_scope(const char *name)
{
    tether_scope_opts o = { .name = name };
    tether_scope *s = open_scope(&o);
    blocker b = { 0 };
    sem_init(&b.started, 0, 0);
    spawn_ok(s, block_until_canceled, &b, "blocked", NULL);
    wait_blocked(&b);
    ck_assert_int_eq(tether_scope_cancel(s), 0);
    tether_result r = join_and_free(s);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
    sem_destroy(&b.started);
}

START_TEST(test_metrics_counts_match_what_ran)
{
    th_baseline base = th_baseline_take();
    ck_assert(tether_metrics_enabled());
    /* ep-ok: 5 scopes, 2 children each, all ok. */
    for (int i = 0; i < 5; i++) {
        tether_scope_opts o = { .name = "ep-ok" };
        tether_scope *s = open_scope(&o);
        spawn_ok(s, return_zero, NULL, "a", NULL);
        spawn_ok(s, return_zero, NULL, "b", NULL);
        ck_assert_int_eq(join_and_free(s).outcome, TETHER_OUTCOME_OK);
    }
    /* ep-cancel: 3 canceled while a child sleeps. */
    for (int i = 0; i < 3; i++)
        canceled_scope("ep-cancel");
    /* ep-deadline: 2 whose deadline passes while a child sleeps (long
     * enough, scaled, for the child to be asleep first). */
    for (int i = 0; i < 2; i++) {
        tether_scope_opts o = { .name = "ep-deadline", .timeout_ns = th_bound_ns(300) };
        tether_scope *s = open_scope(&o);
        blocker b = { 0 };
        sem_init(&b.started, 0, 0);
        spawn_ok(s, block_until_canceled, &b, "blocked", NULL);
        wait_blocked(&b);
        ck_assert_int_eq(join_and_free(s).outcome, TETHER_OUTCOME_DEADLINE_EXCEEDED);
        sem_destroy(&b.started);
    }
    /* ep-mixed: a fail-fast scope that fails (its other child sleeps and is
     * canceled by the failure), a supervisor scope with a partial result,
     * and a scope whose only child is halted. */
    tether_scope_opts ff = { .name = "ep-mixed", .policy = TETHER_POLICY_FAIL_FAST };
    tether_scope *s = open_scope(&ff);
    blocker b = { 0 };
    sem_init(&b.started, 0, 0);
    spawn_ok(s, block_until_canceled, &b, "sleeper", NULL);
    wait_blocked(&b);
    spawn_ok(s, fail_eio, NULL, "failer", NULL);
    tether_result r = join_and_free(s);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_FAILED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_SIBLING_FAILED);
    int64_t ff_convergence = r.convergence_ns;
    tether_scope_opts sup = { .name = "ep-mixed", .policy = TETHER_POLICY_SUPERVISOR };
    s = open_scope(&sup);
    spawn_ok(s, return_zero, NULL, "ok", NULL);
    spawn_ok(s, fail_eio, NULL, "bad", NULL);
    ck_assert_int_eq(join_and_free(s).outcome, TETHER_OUTCOME_PARTIAL);
    tether_scope_opts plain = { .name = "ep-mixed" };
    s = open_scope(&plain);
    tether_task *task;
    spawn_ok(s, block_until_canceled, &b, "halted", &task);
    wait_blocked(&b);
    int rc = -1;
    ck_assert_int_eq(tether_task_halt(task, &rc), 0);
    ck_assert_int_eq(rc, ECANCELED);
    ck_assert_int_eq(join_and_free(s).outcome, TETHER_OUTCOME_OK);
    /* ep-late: canceled, its child returns 0 anyway. */
    tether_scope_opts late = { .name = "ep-late" };
    s = open_scope(&late);
    spawn_ok(s, ignore_cancel, &b.started, "late", NULL);
    sem_wait_ok(&b.started);
    ck_assert_int_eq(tether_scope_cancel(s), 0);
    ck_assert_uint_eq(join_and_free(s).late_succeeded, 1);
    sem_destroy(&b.started);
    /* Two unnamed scopes without children. */
    for (int i = 0; i < 2; i++)
        join_and_free(open_scope(NULL));

    tether_metrics_snapshot snap;
    ck_assert_int_eq(tether_metrics_snapshot_take(&snap), 0);
    ck_assert_uint_eq(snap.count, 6);
    const tether_metrics_series *m = series(&snap, "ep-ok");
    ck_assert_uint_eq(m->scopes_opened, 5);
    ck_assert_uint_eq(m->scopes_live, 0);
    ck_assert_uint_eq(m->outcomes[TETHER_OUTCOME_OK], 5);
    ck_assert_int_eq(m->children_live, 0);
    ck_assert_int_ge(m->children_peak, 1);
    ck_assert_int_le(m->children_peak, 2);
    ck_assert_uint_eq(m->convergence_count, 0);
    m = series(&snap, "ep-cancel");
    ck_assert_uint_eq(m->scopes_opened, 3);
    ck_assert_uint_eq(m->outcomes[TETHER_OUTCOME_CANCELED], 3);
    ck_assert_uint_eq(m->cancellations[TETHER_CAUSE_EXPLICIT], 3);
    ck_assert_uint_eq(m->convergence_count, 3);
    ck_assert_int_eq(m->children_peak, 1);
    m = series(&snap, "ep-deadline");
    ck_assert_uint_eq(m->outcomes[TETHER_OUTCOME_DEADLINE_EXCEEDED], 2);
    ck_assert_uint_eq(m->cancellations[TETHER_CAUSE_DEADLINE], 2);
    ck_assert_uint_eq(m->convergence_count, 2);
    m = series(&snap, "ep-mixed");
    ck_assert_uint_eq(m->scopes_opened, 3);
    ck_assert_uint_eq(m->outcomes[TETHER_OUTCOME_FAILED], 1);
    ck_assert_uint_eq(m->outcomes[TETHER_OUTCOME_PARTIAL], 1);
    ck_assert_uint_eq(m->outcomes[TETHER_OUTCOME_OK], 1);
    ck_assert_uint_eq(m->cancellations[TETHER_CAUSE_SIBLING_FAILED], 1);
    ck_assert_uint_eq(m->cancellations[TETHER_CAUSE_HALTED], 1);
    ck_assert_uint_eq(m->convergence_count, 1);
    ck_assert_uint_eq(m->convergence_sum_ns, (uint64_t)ff_convergence);
    for (int i = 0; i < TETHER_METRICS_BUCKETS; i++)
        ck_assert_uint_eq(m->convergence_le[i], ff_convergence <= snap.bucket_le_ns[i] ? 1 : 0);
    m = series(&snap, "ep-late");
    ck_assert_uint_eq(m->late_successes, 1);
    ck_assert_uint_eq(m->outcomes[TETHER_OUTCOME_CANCELED], 1);
    m = series(&snap, "");
    ck_assert_uint_eq(m->scopes_opened, 2);
    ck_assert_uint_eq(m->outcomes[TETHER_OUTCOME_OK], 2);
    ck_assert_int_eq(m->children_peak, 0);
    /* Process-wide: sums, and the calls stopped: 3 explicit cancels, the
     * fail-fast sleeper and the halted child (ECANCELED), 2 deadlines. */
    ck_assert_uint_eq(snap.process.scopes_opened, 5 + 3 + 2 + 3 + 1 + 2);
    ck_assert_uint_eq(snap.process.scopes_live, 0);
    ck_assert_uint_eq(snap.process.convergence_count, 3 + 2 + 1 + 1);
    ck_assert_int_eq(snap.process.children_live, 0);
    ck_assert_int_ge(snap.process.children_peak, 1);
    ck_assert_uint_eq(snap.calls_stopped_canceled, 3 + 1 + 1);
    ck_assert_uint_eq(snap.calls_stopped_deadline, 2);
    ck_assert_uint_eq(snap.retries_after_cancel, 0);
    ck_assert_uint_eq(snap.process.children_left_running, 0);
    ck_assert_uint_eq(snap.process.hostages, 0);

    char *text = format_text(&snap);
    ck_assert(has_line(text, "tether_scopes_opened_total{scope=\"ep-ok\"} 5"));
    ck_assert(
        has_line(text, "tether_scope_outcomes_total{scope=\"ep-mixed\",outcome=\"partial\"} 1"));
    ck_assert(has_line(
        text, "tether_scope_cancellations_total{scope=\"ep-cancel\",cause=\"explicit\"} 3"));
    ck_assert(has_line(text, "tether_scope_convergence_seconds_count{scope=\"ep-deadline\"} 2"));
    ck_assert(has_line(
        text, "tether_scope_convergence_seconds_bucket{scope=\"ep-cancel\",le=\"+Inf\"} 3"));
    ck_assert(has_line(text, "tether_blocking_calls_stopped_total{reason=\"canceled\"} 5"));
    ck_assert(has_line(text, "tether_blocking_calls_stopped_total{reason=\"deadline\"} 2"));
    ck_assert(has_line(text, "tether_late_successes_total{scope=\"ep-late\"} 1"));
    ck_assert(has_line(text, "tether_metrics_enabled 1"));
    promtool_check(text);
    free(text);
    tether_metrics_snapshot_release(&snap);
    ck_assert_ptr_null(snap.series);
    tether_metrics_snapshot_release(&snap); /* twice: harmless */
    th_baseline_check(base);
}
END_TEST

/* Live gauges while a scope is open, and the peak of one name across two
 * scopes at once. */
START_TEST(test_metrics_live_gauges_and_peak)
{
    th_baseline base = th_baseline_take();
    tether_scope_opts o = { .name = "gauges" };
    tether_scope *s1 = open_scope(&o), *s2 = open_scope(&o);
    blocker b[4];
    for (int i = 0; i < 4; i++) {
        sem_init(&b[i].started, 0, 0);
        spawn_ok(i < 3 ? s1 : s2, block_until_canceled, &b[i], "g", NULL);
        wait_blocked(&b[i]);
    }
    tether_metrics_snapshot snap;
    ck_assert_int_eq(tether_metrics_snapshot_take(&snap), 0);
    const tether_metrics_series *m = series(&snap, "gauges");
    ck_assert_uint_eq(m->scopes_opened, 2);
    ck_assert_uint_eq(m->scopes_live, 2);
    ck_assert_int_eq(m->children_live, 4);
    ck_assert_int_eq(m->children_peak, 4);
    ck_assert_int_eq(snap.process.children_live, 4);
    char *text = format_text(&snap);
    ck_assert(has_line(text, "tether_scopes_live{scope=\"gauges\"} 2"));
    ck_assert(has_line(text, "tether_children_live{scope=\"gauges\"} 4"));
    ck_assert(has_line(text, "tether_process_children_peak 4"));
    free(text);
    tether_metrics_snapshot_release(&snap);
    ck_assert_int_eq(tether_scope_cancel(s1), 0);
    join_and_free(s1);
    ck_assert_int_eq(tether_metrics_snapshot_take(&snap), 0);
    m = series(&snap, "gauges");
    ck_assert_uint_eq(m->scopes_live, 1);
    ck_assert_int_eq(m->children_live, 1);
    ck_assert_int_eq(m->children_peak, 4);
    tether_metrics_snapshot_release(&snap);
    ck_assert_int_eq(tether_scope_cancel(s2), 0);
    join_and_free(s2);
    for (int i = 0; i < 4; i++)
        sem_destroy(&b[i].started);
    th_baseline_check(base);
}
END_TEST

/* A child blocked in a plain read(2) the cancel cannot reach: reported once
 * as a hostage, released by the hook. */
static void release_hostage(const tether_hostage_report *r, void *arg)
{
    int *pipe_w = arg;
    if (r->event == TETHER_HOSTAGE_HELD)
        ck_assert_int_eq(write(*pipe_w, "x", 1), 1);
}

static int plain_read(void *arg)
{
    int *p = arg;
    char c;
    return read(p[0], &c, 1) == 1 ? 0 : EIO;
}

START_TEST(test_metrics_hostages_counted)
{
    th_baseline base = th_baseline_take();
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    tether_scope_opts o = { .name = "hostage",
                            .hostage_grace_ns = tether_ms(20),
                            .hostage_hook = release_hostage,
                            .hostage_arg = &p[1] };
    tether_scope *s = open_scope(&o);
    spawn_ok(s, plain_read, p, "reader", NULL);
    ck_assert_int_eq(tether_scope_cancel(s), 0);
    tether_result r = join_and_free(s);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
    tether_metrics_snapshot snap;
    ck_assert_int_eq(tether_metrics_snapshot_take(&snap), 0);
    const tether_metrics_series *m = series(&snap, "hostage");
    ck_assert_uint_eq(m->hostages, 1);
    ck_assert_uint_eq(m->late_successes, 1); /* it read its byte and returned 0 */
    tether_metrics_snapshot_release(&snap);
    close(p[0]);
    close(p[1]);
    th_baseline_check(base);
}
END_TEST

/* Blocking calls of each kind, each canceled once it blocked: counted once
 * each; a call refused at its entry (token already canceled) is not. */
typedef struct waiters {
    blocker b;
    int pipe[2];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    sem_t sem;
} waiters;

static int wait_read(void *arg)
{
    waiters *w = arg;
    atomic_store(&w->b.tid, th_gettid());
    sem_post(&w->b.started);
    char c;
    return tether_read(w->pipe[0], &c, 1) < 0 ? errno : 0;
}

static int wait_cond(void *arg)
{
    waiters *w = arg;
    pthread_mutex_lock(&w->mu);
    atomic_store(&w->b.tid, th_gettid());
    sem_post(&w->b.started);
    int rc = tether_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    return rc;
}

static int wait_sem(void *arg)
{
    waiters *w = arg;
    atomic_store(&w->b.tid, th_gettid());
    sem_post(&w->b.started);
    return tether_sem_wait(&w->sem) < 0 ? errno : 0;
}

static int wait_sleep(void *arg)
{
    return block_until_canceled(&((waiters *)arg)->b);
}

START_TEST(test_metrics_blocking_calls_stopped)
{
    th_baseline base = th_baseline_take();
    waiters w = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
    ck_assert_int_eq(pipe(w.pipe), 0);
    sem_init(&w.sem, 0, 0);
    sem_init(&w.b.started, 0, 0);
    int (*const kinds[])(void *) = { wait_read, wait_cond, wait_sem, wait_sleep };
    for (size_t i = 0; i < 4; i++) {
        tether_scope *s = open_scope(NULL);
        spawn_ok(s, kinds[i], &w, "waiter", NULL);
        wait_blocked(&w.b);
        ck_assert_int_eq(tether_scope_cancel(s), 0);
        tether_result r = join_and_free(s);
        ck_assert_uint_eq(r.canceled, 1);
    }
    /* Refused at the entry: it never blocked. */
    tether_token *dead = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(dead, 0), 0);
    enter(dead);
    ck_assert_int_eq(tether_sleep_for(DAY), -1);
    leave(dead);
    ck_assert_int_eq(tether_token_free(dead), 0);
    tether_metrics_snapshot snap;
    ck_assert_int_eq(tether_metrics_snapshot_take(&snap), 0);
    ck_assert_uint_eq(snap.calls_stopped_canceled, 4);
    ck_assert_uint_eq(snap.calls_stopped_deadline, 0);
    tether_metrics_snapshot_release(&snap);
    close(w.pipe[0]);
    close(w.pipe[1]);
    sem_destroy(&w.sem);
    sem_destroy(&w.b.started);
    th_baseline_check(base);
}
END_TEST

/* A retry whose third attempt cancels its token: the retry stops without a
 * fourth attempt, so no attempt started after a cancel. */
static int attempt_then_cancel(void *arg)
{
    int *n = arg;
    if (++*n == 3)
        tether_token_cancel(tether_current(), 0);
    return EAGAIN;
}

START_TEST(test_metrics_no_retry_after_cancel)
{
    tether_token *t = new_token(NULL, TETHER_NEVER);
    enter(t);
    int n = 0;
    tether_retry_opts o = { .initial_delay_ns = 1, .max_attempts = 10 };
    tether_retry_result res;
    ck_assert_int_eq(tether_retry(attempt_then_cancel, &n, &o, &res), ECANCELED);
    leave(t);
    ck_assert_int_eq(n, 3);
    ck_assert_int_eq(res.stop, TETHER_RETRY_STOP_CANCELED);
    tether_metrics_snapshot snap;
    ck_assert_int_eq(tether_metrics_snapshot_take(&snap), 0);
    ck_assert_uint_eq(snap.retries_after_cancel, 0);
    char *text = format_text(&snap);
    ck_assert(has_line(text, "tether_retries_after_cancel_total 0"));
    free(text);
    tether_metrics_snapshot_release(&snap);
    ck_assert_int_eq(tether_token_free(t), 0);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Text format: escaping, overflow                                        */

START_TEST(test_metrics_label_escaping)
{
    static const char *const names[] = { "say \"hi\"", "back\\slash", "two\nlines", "all \"\\\n" };
    static const char *const escaped[] = { "say \\\"hi\\\"", "back\\\\slash", "two\\nlines",
                                           "all \\\"\\\\\\n" };
    for (size_t i = 0; i < 4; i++) {
        tether_scope_opts o = { .name = names[i] };
        join_and_free(open_scope(&o));
    }
    tether_metrics_snapshot snap;
    ck_assert_int_eq(tether_metrics_snapshot_take(&snap), 0);
    char *text = format_text(&snap);
    for (size_t i = 0; i < 4; i++) {
        char line[128];
        snprintf(line, sizeof line, "tether_scopes_opened_total{scope=\"%s\"} 1", escaped[i]);
        ck_assert_msg(has_line(text, line), "missing: %s", line);
        ck_assert_uint_eq(series(&snap, names[i])->scopes_opened, 1);
    }
    promtool_check(text);
    free(text);
    tether_metrics_snapshot_release(&snap);
}
END_TEST

START_TEST(test_metrics_registry_overflow)
{
    int extra = 7;
    for (int i = 0; i < TETHER_METRICS_NAMES + extra; i++) {
        char name[32];
        snprintf(name, sizeof name, "request-%d", i);
        tether_scope_opts o = { .name = name };
        join_and_free(open_scope(&o));
    }
    /* A registered name still gets its own series once the table is full. */
    tether_scope_opts again = { .name = "request-0" };
    join_and_free(open_scope(&again));
    tether_metrics_snapshot snap;
    ck_assert_int_eq(tether_metrics_snapshot_take(&snap), 0);
    ck_assert_uint_eq(snap.count, TETHER_METRICS_NAMES + 1);
    const tether_metrics_series *over = &snap.series[snap.count - 1];
    ck_assert(over->overflow);
    ck_assert_str_eq(over->scope, TETHER_METRICS_OVERFLOW_NAME);
    ck_assert_uint_eq(over->scopes_opened, (uint64_t)extra);
    ck_assert_uint_eq(over->outcomes[TETHER_OUTCOME_OK], (uint64_t)extra);
    ck_assert_uint_eq(series(&snap, "request-0")->scopes_opened, 2);
    ck_assert_uint_eq(snap.process.scopes_opened, TETHER_METRICS_NAMES + extra + 1);
    char *text = format_text(&snap);
    ck_assert(
        has_line(text, "tether_scopes_opened_total{scope=\"" TETHER_METRICS_OVERFLOW_NAME "\"} 7"));
    promtool_check(text);
    free(text);
    tether_metrics_snapshot_release(&snap);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* The off switch                                                         */

START_TEST(test_metrics_off_switch)
{
    th_baseline base = th_baseline_take();
    ck_assert(tether_metrics_set_enabled(false));
    ck_assert(!tether_metrics_enabled());
    tether_scope_opts o = { .name = "off" };
    tether_scope *s = open_scope(&o);
    spawn_ok(s, return_zero, NULL, "c", NULL);
    join_and_free(s);
    /* Opened while off: never counted, even if the switch comes back. */
    s = open_scope(&o);
    ck_assert(!tether_metrics_set_enabled(true));
    spawn_ok(s, return_zero, NULL, "c", NULL);
    join_and_free(s);
    /* Opened while on: counted to its join though the switch goes off. */
    tether_scope_opts on = { .name = "on" };
    s = open_scope(&on);
    ck_assert(tether_metrics_set_enabled(false));
    blocker b = { 0 };
    sem_init(&b.started, 0, 0);
    spawn_ok(s, block_until_canceled, &b, "c", NULL);
    wait_blocked(&b);
    tether_metrics_snapshot snap;
    ck_assert_int_eq(tether_metrics_snapshot_take(&snap), 0);
    ck_assert(!snap.enabled);
    ck_assert_uint_eq(snap.count, 1);
    ck_assert_int_eq(series(&snap, "on")->children_live, 1);
    char *text = format_text(&snap);
    ck_assert(has_line(text, "tether_metrics_enabled 0"));
    free(text);
    tether_metrics_snapshot_release(&snap);
    ck_assert_int_eq(tether_scope_cancel(s), 0);
    join_and_free(s);
    ck_assert_int_eq(tether_metrics_snapshot_take(&snap), 0);
    const tether_metrics_series *m = series(&snap, "on");
    ck_assert_uint_eq(m->outcomes[TETHER_OUTCOME_CANCELED], 1);
    ck_assert_int_eq(m->children_live, 0);
    ck_assert_uint_eq(snap.calls_stopped_canceled, 0); /* the call stopped while off */
    tether_metrics_snapshot_release(&snap);
    sem_destroy(&b.started);
    ck_assert(!tether_metrics_set_enabled(true));
    th_baseline_check(base);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Fork: the child starts from zero                                       */

static int fork_child_side(void)
{
    tether_metrics_snapshot snap;
    if (tether_metrics_snapshot_take(&snap) != 0)
        return 10;
    /* The name is still registered; every count is zero. */
    if (snap.count != 1 || strcmp(snap.series[0].scope, "before-fork") != 0)
        return 11;
    const tether_metrics_series *m = &snap.series[0];
    if (m->scopes_opened || m->scopes_live || m->children_live || m->children_peak ||
        m->outcomes[TETHER_OUTCOME_OK] || snap.process.children_peak || snap.calls_stopped_canceled)
        return 12;
    tether_metrics_snapshot_release(&snap);
    tether_scope_opts o = { .name = "before-fork" };
    tether_scope *s;
    if (tether_scope_open(&s, &o) != 0 || tether_spawn(s, return_zero, NULL, NULL, NULL) != 0 ||
        tether_scope_join(s, NULL) != 0 || tether_scope_free(s) != 0)
        return 13;
    if (tether_metrics_snapshot_take(&snap) != 0)
        return 14;
    m = &snap.series[0];
    int rc = m->scopes_opened == 1 && m->outcomes[TETHER_OUTCOME_OK] == 1 && m->children_peak == 1
                 ? 0
                 : 15;
    tether_metrics_snapshot_release(&snap);
    return rc;
}

START_TEST(test_metrics_fork_child_starts_from_zero)
{
    tether_scope_opts o = { .name = "before-fork" };
    canceled_scope("before-fork");
    /* A scope open across the fork, with a child blocked in the parent. */
    tether_scope *s = open_scope(&o);
    blocker b = { 0 };
    sem_init(&b.started, 0, 0);
    spawn_ok(s, block_until_canceled, &b, "c", NULL);
    wait_blocked(&b);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(fork_child_side());
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: %d", st);
    /* The parent's counts went on untouched. */
    tether_metrics_snapshot snap;
    ck_assert_int_eq(tether_metrics_snapshot_take(&snap), 0);
    const tether_metrics_series *m = series(&snap, "before-fork");
    ck_assert_uint_eq(m->scopes_opened, 2);
    ck_assert_uint_eq(m->scopes_live, 1);
    ck_assert_int_eq(m->children_live, 1);
    tether_metrics_snapshot_release(&snap);
    ck_assert_int_eq(tether_scope_cancel(s), 0);
    join_and_free(s);
    sem_destroy(&b.started);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Races                                                                  */

enum { RACE_THREADS = 4, RACE_NAMES = 40 };

typedef struct race {
    _Atomic bool stop;
    int rounds;
    uint64_t seed;
    _Atomic unsigned snapshots;
} race;

static void *race_opener(void *arg)
{
    race *r = arg;
    static _Atomic unsigned next_stream;
    uint64_t st = th_seed_for(r->seed, atomic_fetch_add(&next_stream, 1));
    for (int i = 0; i < r->rounds; i++) {
        char name[32];
        snprintf(name, sizeof name, "race-%u", (unsigned)(th_rand(&st) % RACE_NAMES));
        tether_scope_opts o = { .name = name };
        tether_scope *s;
        if (tether_scope_open(&s, &o) != 0) {
            bad("open failed");
            continue;
        }
        unsigned kids = (unsigned)(th_rand(&st) % 3);
        for (unsigned k = 0; k < kids; k++)
            EXPECT(tether_spawn(s, return_zero, NULL, NULL, NULL) == 0, "spawn");
        if (th_rand(&st) % 4 == 0)
            tether_scope_cancel(s);
        EXPECT(tether_scope_join(s, NULL) == 0, "join");
        EXPECT(tether_scope_free(s) == 0, "free");
    }
    return NULL;
}

static void *race_reader(void *arg)
{
    race *r = arg;
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    while (!atomic_load(&r->stop)) {
        tether_metrics_snapshot snap;
        if (tether_metrics_snapshot_take(&snap) != 0) {
            bad("snapshot failed");
            break;
        }
        for (size_t i = 0; i < snap.count; i++) {
            const tether_metrics_series *m = &snap.series[i];
            uint64_t joined = 0;
            for (int k = 0; k < TETHER_METRICS_OUTCOMES; k++)
                joined += m->outcomes[k];
            /* Per series: opened - live == joined, and live >= 0. */
            EXPECT(m->scopes_opened - m->scopes_live == joined &&
                       m->scopes_live <= m->scopes_opened,
                   "series %s: opened %llu live %llu joined %llu", m->scope,
                   (unsigned long long)m->scopes_opened, (unsigned long long)m->scopes_live,
                   (unsigned long long)joined);
            EXPECT(m->convergence_count <= joined, "histogram");
        }
        tether_metrics_snapshot_release(&snap);
        EXPECT(tether_metrics_write_prometheus(devnull) == 0, "write");
        atomic_fetch_add(&r->snapshots, 1);
    }
    close(devnull);
    return NULL;
}

START_TEST(test_metrics_races_snapshot_while_scopes_churn)
{
    race r = { .rounds = stress(300), .seed = th_seed(__func__) };
    pthread_t reader = thread_start(race_reader, &r);
    pthread_t th[RACE_THREADS];
    for (int i = 0; i < RACE_THREADS; i++)
        th[i] = thread_start(race_opener, &r);
    for (int i = 0; i < RACE_THREADS; i++)
        thread_join(th[i]);
    atomic_store(&r.stop, true);
    thread_join(reader);
    ck_assert_msg(bad_seen() == 0, "%s", bad_first());
    ck_assert_uint_gt(atomic_load(&r.snapshots), 0);
    tether_metrics_snapshot snap;
    ck_assert_int_eq(tether_metrics_snapshot_take(&snap), 0);
    uint64_t total = (uint64_t)RACE_THREADS * (uint64_t)r.rounds, joined = 0;
    for (int k = 0; k < TETHER_METRICS_OUTCOMES; k++)
        joined += snap.process.outcomes[k];
    ck_assert_uint_eq(snap.process.scopes_opened, total);
    ck_assert_uint_eq(joined, total);
    ck_assert_uint_eq(snap.process.scopes_live, 0);
    ck_assert_int_eq(snap.process.children_live, 0);
    ck_assert_uint_le(snap.count, RACE_NAMES);
    tether_metrics_snapshot_release(&snap);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("metrics");
    tcase_set_timeout(tc, th_timeout_s(30));
    tcase_add_test(tc, test_metrics_counts_match_what_ran);
    tcase_add_test(tc, test_metrics_live_gauges_and_peak);
    tcase_add_test(tc, test_metrics_hostages_counted);
    tcase_add_test(tc, test_metrics_blocking_calls_stopped);
    tcase_add_test(tc, test_metrics_no_retry_after_cancel);
    tcase_add_test(tc, test_metrics_label_escaping);
    tcase_add_test(tc, test_metrics_registry_overflow);
    tcase_add_test(tc, test_metrics_off_switch);
    tcase_add_test(tc, test_metrics_fork_child_starts_from_zero);
    tcase_add_test(tc, test_metrics_races_snapshot_while_scopes_churn);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
