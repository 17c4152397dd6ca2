/*
 * The hostage watchdog (tether_scope_opts.hostage_*): a child blocked where
 * tether cannot reach it — a plain read() of a pipe — after its scope was
 * canceled is reported once, with the system call it is blocked in, then
 * again when it is released; with escalation its read is interrupted
 * (EINTR), with every attempt reported.
 *
 * The children block in the plain read(2), never in tether_read. The test
 * waits until the kernel shows each one asleep before canceling, and the
 * hooks run on the joining thread (the test's main thread).
 */
#define _GNU_SOURCE
#include "support.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { MAX_REPORTS = 64 };

/* Reports as the hook saw them (the hook runs on the joining thread). */
typedef struct recorded {
    tether_hostage_event event;
    char scope[TETHER_NAME_MAX], child[TETHER_NAME_MAX], blocked[32];
    int index, tid, signal;
    unsigned attempt;
    int64_t since_cancel_ns;
    tether_time_t at;
} recorded;

typedef struct watch {
    recorded r[MAX_REPORTS];
    int n;
    int release_fd; /* >= 0: the HELD hook writes a byte here */
} watch;

static void record_hook(const tether_hostage_report *rep, void *arg)
{
    watch *w = arg;
    if (w->n < MAX_REPORTS) {
        recorded *r = &w->r[w->n++];
        r->event = rep->event;
        snprintf(r->scope, sizeof r->scope, "%s", rep->scope_name);
        snprintf(r->child, sizeof r->child, "%s", rep->child_name);
        snprintf(r->blocked, sizeof r->blocked, "%s", rep->blocked_in);
        r->index = rep->child_index;
        r->tid = rep->tid;
        r->signal = rep->signal;
        r->attempt = rep->attempt;
        r->since_cancel_ns = rep->since_cancel_ns;
        r->at = tether_now();
    }
    if (rep->event == TETHER_HOSTAGE_HELD && w->release_fd >= 0)
        ck_assert_int_eq(write(w->release_fd, "x", 1), 1);
}

static int count_events(const watch *w, tether_hostage_event ev)
{
    int n = 0;
    for (int i = 0; i < w->n; i++)
        n += w->r[i].event == ev;
    return n;
}

/* A child blocked in a plain read() of its pipe; retries EINTR `retries`
 * times (the code that "simply retries"). */
typedef struct plain_reader {
    int fd;
    int retries;
    sem_t ready;
    atomic_int tid;
    ssize_t got;
    int err;
    int eintr_seen;
} plain_reader;

static int plain_reader_main(void *arg)
{
    plain_reader *p = arg;
    atomic_store(&p->tid, (int)th_gettid());
    sem_post(&p->ready);
    char c;
    for (;;) {
        p->got = read(p->fd, &c, 1);
        p->err = p->got < 0 ? errno : 0;
        if (p->got < 0 && p->err == EINTR && p->eintr_seen++ < p->retries)
            continue;
        return 0;
    }
}

/* Spawn the reader and wait until the kernel shows it asleep in read. */
static void spawn_reader(tether_scope *s, plain_reader *p, int fd, int retries)
{
    memset(p, 0, sizeof *p);
    p->fd = fd;
    p->retries = retries;
    ck_assert_int_eq(sem_init(&p->ready, 0, 0), 0);
    spawn_ok(s, plain_reader_main, p, "reader", NULL);
    sem_wait_ok(&p->ready);
    ck_assert_int_eq(th_wait_blocked((pid_t)atomic_load(&p->tid)), 0);
}

START_TEST(test_hostage_reported_once_with_syscall_then_released)
{
    th_baseline base = th_baseline_take();
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    watch w = { .release_fd = fds[1] };
    const int64_t grace = tether_ms(100);
    tether_scope_opts o = {
        .name = "outer", .hostage_grace_ns = grace, .hostage_hook = record_hook, .hostage_arg = &w
    };
    tether_scope *s = open_scope(&o);
    plain_reader p;
    spawn_reader(s, &p, fds[0], 0);
    tether_time_t canceled = tether_now();
    ck_assert_int_eq(tether_scope_cancel(s), 0);
    tether_result r = join_and_free(s);

    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
    ck_assert_int_eq(p.got, 1); /* released by the hook's byte */
    ck_assert_int_eq(w.n, 2);
    recorded *held = &w.r[0], *rel = &w.r[1];
    ck_assert_int_eq(held->event, TETHER_HOSTAGE_HELD);
    ck_assert_str_eq(held->scope, "outer");
    ck_assert_str_eq(held->child, "reader");
    ck_assert_int_eq(held->index, 0);
    ck_assert_int_eq(held->tid, atomic_load(&p.tid));
    ck_assert_str_eq(held->blocked, "read");
    ck_assert_int_ge(held->since_cancel_ns, grace); /* never early */
    ck_assert_int_ge(held->at - canceled, grace);
    ck_assert_int_le(held->at - canceled, grace + th_bound_ns(500));
    ck_assert_int_eq(rel->event, TETHER_HOSTAGE_RELEASED);
    ck_assert_str_eq(rel->child, "reader");
    ck_assert_int_eq(rel->tid, held->tid);
    ck_assert_int_ge(rel->since_cancel_ns, held->since_cancel_ns);
    close(fds[0]);
    close(fds[1]);
    th_baseline_check(base);
}
END_TEST

/* A child that leaves within the grace (tether_read wakes at the cancel)
 * is no hostage: nothing is reported. */
static int tether_reader_main(void *arg)
{
    char c;
    return tether_read(*(int *)arg, &c, 1) < 0 ? errno : 0;
}

START_TEST(test_no_report_when_child_leaves_within_grace)
{
    th_baseline base = th_baseline_take();
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    watch w = { .release_fd = -1 };
    tether_scope_opts o = { .hostage_grace_ns = tether_ms(50),
                            .hostage_hook = record_hook,
                            .hostage_arg = &w,
                            .hostage_escalate = true };
    tether_scope *s = open_scope(&o);
    spawn_ok(s, tether_reader_main, &fds[0], "polite", NULL);
    ck_assert_int_eq(tether_scope_cancel(s), 0);
    tether_result r = join_and_free(s);
    ck_assert_int_eq(r.canceled, 1);
    ck_assert_int_eq(w.n, 0);
    close(fds[0]);
    close(fds[1]);
    th_baseline_check(base);
}
END_TEST

/* Without a hook: one line on stderr when held, one when released. The
 * line is read by a helper thread, which then releases the child. */
typedef struct line_reader {
    int err_fd, release_fd;
    char text[1024];
    size_t n;
} line_reader;

static void *release_after_line(void *arg)
{
    line_reader *l = arg;
    while (l->n < sizeof l->text - 1 && !strchr(l->text, '\n')) {
        ssize_t got = read(l->err_fd, l->text + l->n, sizeof l->text - 1 - l->n);
        if (got <= 0)
            break;
        l->n += (size_t)got;
        l->text[l->n] = '\0';
    }
    if (write(l->release_fd, "x", 1) != 1)
        bad("release write failed");
    return NULL;
}

START_TEST(test_default_report_is_one_line_on_stderr)
{
    th_baseline base = th_baseline_take();
    int child_pipe[2], err_pipe[2];
    ck_assert_int_eq(pipe(child_pipe), 0);
    ck_assert_int_eq(pipe(err_pipe), 0);
    int saved_err = dup(2);
    ck_assert_int_ge(saved_err, 0);
    ck_assert_int_eq(dup2(err_pipe[1], 2), 2);
    line_reader l = { .err_fd = err_pipe[0], .release_fd = child_pipe[1] };
    pthread_t helper = thread_start(release_after_line, &l);

    tether_scope_opts o = { .name = "stuck", .hostage_grace_ns = tether_ms(20) };
    tether_scope *s = open_scope(&o);
    plain_reader p;
    spawn_reader(s, &p, child_pipe[0], 0);
    ck_assert_int_eq(tether_scope_cancel(s), 0);
    join_and_free(s);
    thread_join(helper);

    ck_assert_int_eq(dup2(saved_err, 2), 2);
    close(saved_err);
    close(err_pipe[1]);
    /* The released line followed the held one. */
    while (l.n < sizeof l.text - 1) {
        ssize_t got = read(err_pipe[0], l.text + l.n, sizeof l.text - 1 - l.n);
        if (got <= 0)
            break;
        l.n += (size_t)got;
    }
    l.text[l.n] = '\0';
    char expect[128];
    snprintf(expect, sizeof expect,
             "tether: hostage: scope 'stuck' child 'reader' (#0, tid %d) still running ",
             atomic_load(&p.tid));
    ck_assert_msg(strstr(l.text, expect) != NULL, "stderr was: %s", l.text);
    ck_assert_msg(strstr(l.text, ", blocked in read\n") != NULL, "stderr was: %s", l.text);
    ck_assert_msg(strstr(l.text, "child 'reader' (#0, tid ") && strstr(l.text, ") released after "),
                  "stderr was: %s", l.text);
    /* Exactly two lines. */
    int lines = 0;
    for (size_t i = 0; i < l.n; i++)
        lines += l.text[i] == '\n';
    ck_assert_int_eq(lines, 2);
    ck_assert_int_eq(bad_seen(), 0);
    close(err_pipe[0]);
    close(child_pipe[0]);
    close(child_pipe[1]);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_escalation_interrupts_plain_read)
{
    th_baseline base = th_baseline_take();
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    watch w = { .release_fd = -1 };
    tether_scope_opts o = { .name = "esc",
                            .hostage_grace_ns = tether_ms(50),
                            .hostage_hook = record_hook,
                            .hostage_arg = &w,
                            .hostage_escalate = true };
    tether_scope *s = open_scope(&o);
    plain_reader p;
    spawn_reader(s, &p, fds[0], 0);
    tether_time_t canceled = tether_now();
    ck_assert_int_eq(tether_scope_cancel(s), 0);
    join_and_free(s);
    tether_time_t joined = tether_now();

    ck_assert_int_eq(p.got, -1);
    ck_assert_int_eq(p.err, EINTR);
    ck_assert_int_le(joined - canceled, tether_ms(50) + th_bound_ns(1000));
    ck_assert_int_eq(count_events(&w, TETHER_HOSTAGE_HELD), 1);
    ck_assert_int_ge(count_events(&w, TETHER_HOSTAGE_INTERRUPTED), 1);
    ck_assert_int_eq(count_events(&w, TETHER_HOSTAGE_RELEASED), 1);
    ck_assert_int_eq(w.r[0].event, TETHER_HOSTAGE_HELD);
    ck_assert_int_eq(w.r[1].event, TETHER_HOSTAGE_INTERRUPTED);
    ck_assert_int_eq(w.r[1].attempt, 1);
    ck_assert_int_eq(w.r[1].signal, SIGRTMIN + 3);
    ck_assert_str_eq(w.r[1].blocked, "read");
    ck_assert_int_eq(w.r[w.n - 1].event, TETHER_HOSTAGE_RELEASED);
    close(fds[0]);
    close(fds[1]);
    th_baseline_check(base);
}
END_TEST

/* Code that retries EINTR simply retries: each retry is interrupted again at
 * the next attempt, reported with its number, the attempts backing off. */
START_TEST(test_escalation_repeats_with_backoff)
{
    th_baseline base = th_baseline_take();
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    watch w = { .release_fd = -1 };
    int sig = SIGRTMIN + 5;
    tether_scope_opts o = { .hostage_grace_ns = tether_ms(10),
                            .hostage_hook = record_hook,
                            .hostage_arg = &w,
                            .hostage_escalate = true,
                            .hostage_signal = sig };
    tether_scope *s = open_scope(&o);
    plain_reader p;
    spawn_reader(s, &p, fds[0], 2); /* gives up at the third EINTR */
    ck_assert_int_eq(tether_scope_cancel(s), 0);
    join_and_free(s);

    ck_assert_int_eq(p.err, EINTR);
    ck_assert_int_eq(p.eintr_seen, 3);
    int n = 0;
    tether_time_t prev = 0;
    for (int i = 0; i < w.n; i++) {
        if (w.r[i].event != TETHER_HOSTAGE_INTERRUPTED)
            continue;
        n++;
        ck_assert_int_eq(w.r[i].attempt, (unsigned)n);
        ck_assert_int_eq(w.r[i].signal, sig);
        if (n > 1) /* the first retry waits 10 ms, then 20, 40 ... */
            ck_assert_int_ge(w.r[i].at - prev, tether_ms(10));
        prev = w.r[i].at;
    }
    /* A signal can land while the child is between reads, so three EINTRs
     * may take more than three attempts. */
    ck_assert_int_ge(n, 3);
    ck_assert_int_eq(count_events(&w, TETHER_HOSTAGE_RELEASED), 1);
    close(fds[0]);
    close(fds[1]);
    th_baseline_check(base);
}
END_TEST

/* A background child blocked in a plain read() holds the join after the
 * background halt: it is reported with the halt as its cancellation. */
START_TEST(test_background_hostage_after_halt)
{
    th_baseline base = th_baseline_take();
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    watch w = { .release_fd = fds[1] };
    tether_scope_opts o = { .name = "bg",
                            .hostage_grace_ns = tether_ms(30),
                            .hostage_hook = record_hook,
                            .hostage_arg = &w };
    tether_scope *s = open_scope(&o);
    plain_reader p;
    memset(&p, 0, sizeof p);
    p.fd = fds[0];
    ck_assert_int_eq(sem_init(&p.ready, 0, 0), 0);
    tether_spawn_opts so = { .name = "daemon", .background = true };
    ck_assert_int_eq(tether_spawn(s, plain_reader_main, &p, &so, NULL), 0);
    sem_wait_ok(&p.ready);
    ck_assert_int_eq(th_wait_blocked((pid_t)atomic_load(&p.tid)), 0);
    tether_result r = join_and_free(s); /* no foreground: halts the daemon at once */
    ck_assert_int_eq(r.cause, TETHER_CAUSE_SCOPE_FINISHED);
    ck_assert_int_eq(w.n, 2);
    ck_assert_int_eq(w.r[0].event, TETHER_HOSTAGE_HELD);
    ck_assert_str_eq(w.r[0].child, "daemon");
    ck_assert_str_eq(w.r[0].blocked, "read");
    ck_assert_int_eq(w.r[1].event, TETHER_HOSTAGE_RELEASED);
    close(fds[0]);
    close(fds[1]);
    th_baseline_check(base);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("hostage");
    TCase *tc = tcase_create("watchdog");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, test_hostage_reported_once_with_syscall_then_released);
    tcase_add_test(tc, test_no_report_when_child_leaves_within_grace);
    tcase_add_test(tc, test_default_report_is_one_line_on_stderr);
    suite_add_tcase(s, tc);
    tc = tcase_create("escalation");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, test_escalation_interrupts_plain_read);
    tcase_add_test(tc, test_escalation_repeats_with_backoff);
    tcase_add_test(tc, test_background_hostage_after_halt);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
