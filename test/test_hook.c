/*
 * Cancel hooks and descriptor spans (tether/hook.h).
 *
 * Hooks: a hook that blocks delays its token's owner (free, a scope's join)
 * and nothing else — the canceler returns at once, the timer thread keeps
 * firing other deadlines on time, another scope's join is not delayed; it
 * runs exactly once, on a runner thread, for every cause (explicit,
 * deadline, already canceled); tether_hook_off before, during and from
 * inside the run; a token freed before its hook started (never runs) and
 * while it runs (free waits); more hooks than runners (all run, at most 64
 * at once); fork; tether_trim releases idle runners.
 *
 * Spans: a cancel shuts the socket down and frees a thread blocked in a
 * plain read(2), at an explicit cancel and at a deadline; a span never
 * fires after its end, even with the descriptor closed and its number
 * reused at once (a race run many times).
 */
#define _GNU_SOURCE
#include "support.h"

#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

enum { RUNNER_BOUND = 64 };

/* What a hook saw; a blocking hook waits on `go` after posting `started`. */
struct probe {
    sem_t started, go, done;
    atomic_int runs;
    tether_time_t at;
    pthread_t thread;
    char name[16];
    bool block;
};

static void probe_init(struct probe *p, bool block)
{
    memset(p, 0, sizeof *p);
    sem_init(&p->started, 0, 0);
    sem_init(&p->go, 0, 0);
    sem_init(&p->done, 0, 0);
    p->block = block;
}

static void probe_destroy(struct probe *p)
{
    sem_destroy(&p->started);
    sem_destroy(&p->go);
    sem_destroy(&p->done);
}

static void probe_hook(void *arg)
{
    struct probe *p = arg;
    p->at = tether_now();
    p->thread = pthread_self();
    pthread_getname_np(pthread_self(), p->name, sizeof p->name);
    atomic_fetch_add(&p->runs, 1);
    sem_post(&p->started);
    if (p->block)
        sem_wait_ok(&p->go);
    sem_post(&p->done);
}

static tether_hook *hook_on(tether_token *t, void (*fn)(void *), void *arg)
{
    tether_hook *h = NULL;
    ck_assert_int_eq(tether_hook_on_cancel(t, fn, arg, &h), 0);
    ck_assert_ptr_nonnull(h);
    return h;
}

static bool hook_off(tether_hook *h)
{
    bool ran = false;
    ck_assert_int_eq(tether_hook_off(h, &ran), 0);
    return ran;
}

/* A thread that frees a token (or joins a scope) and records when. */
struct freer {
    tether_token *t;
    atomic_bool returned;
    tether_time_t at;
};

static void *free_in_thread(void *arg)
{
    struct freer *f = arg;
    EXPECT(tether_token_free(f->t) == 0, "free");
    f->at = tether_now();
    atomic_store(&f->returned, true);
    return NULL;
}

static void on_time(void *arg)
{
    struct probe *p = arg;
    p->at = tether_now();
    sem_post(&p->done);
}

/* ===================================================== blocking hooks */

START_TEST(blocking_hook_delays_its_owner_and_nothing_else)
{
    th_baseline b = th_baseline_take();
    struct probe p;
    probe_init(&p, true);
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_hook *h = hook_on(t, probe_hook, &p);

    tether_time_t t0 = tether_now();
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    int64_t cancel_ns = tether_now() - t0;
    ck_assert_msg(cancel_ns < th_bound_ns(50), "cancel took %lld ns", (long long)cancel_ns);
    ck_assert(th_sem_wait_bounded(&p.started, 2000));
    ck_assert(!pthread_equal(p.thread, pthread_self()));
    ck_assert_str_eq(p.name, "tether-hook");

    /* The timer thread fires another deadline on time meanwhile. */
    struct probe d;
    probe_init(&d, false);
    tether_time_t when = tether_deadline_after(tether_ms(20));
    tether_token *u = new_token(NULL, when);
    tether_callback *cb;
    ck_assert_int_eq(tether_token_on_cancel(u, on_time, &d, &cb), 0);
    ck_assert(th_sem_wait_bounded(&d.done, 2000));
    ck_assert_int_ge(d.at, when);
    ck_assert_msg(d.at - when < th_bound_ns(100), "late by %lld ns", (long long)(d.at - when));
    ck_assert_int_eq(tether_token_off_cancel(cb, NULL), 0);
    ck_assert_int_eq(tether_token_free(u), 0);

    /* Another scope's join is not delayed. */
    tether_scope_opts o = { .timeout_ns = tether_ms(10), .name = "other" };
    tether_scope *s = open_scope(&o);
    spawn_ok(s, return_zero, NULL, "quick", NULL);
    t0 = tether_now();
    (void)join_and_free(s);
    ck_assert_msg(tether_now() - t0 < th_bound_ns(200), "other join took %lld ns",
                  (long long)(tether_now() - t0));

    /* The owner's free waits until the hook returns. */
    struct freer f = { .t = t };
    pthread_t th = thread_start(free_in_thread, &f);
    usleep(100 * 1000);
    ck_assert(!atomic_load(&f.returned));
    tether_time_t released = tether_now();
    sem_post(&p.go);
    thread_join(th);
    ck_assert(atomic_load(&f.returned));
    ck_assert_int_ge(f.at, released);
    ck_assert(hook_off(h));
    ck_assert_int_eq(atomic_load(&p.runs), 1);
    probe_destroy(&p);
    probe_destroy(&d);
    ck_assert_int_eq(bad_seen(), 0);
    th_baseline_check(b);
}
END_TEST

/* A child blocked in a plain read(2) of a pipe registers a hook on its own
 * token that, at the scope's deadline, frees it (writes the pipe) and then
 * goes on blocking; join returns only after the hook did. */
static tether_hook *child_hook;
static atomic_bool hook_finished;
static int child_pipe[2];

static void slow_hook(void *arg)
{
    (void)arg;
    EXPECT(write(child_pipe[1], "x", 1) == 1, "write");
    usleep(200 * 1000);
    atomic_store(&hook_finished, true);
}

static int child_with_hook(void *arg)
{
    (void)arg;
    if (tether_hook_on_cancel(tether_current(), slow_hook, NULL, &child_hook) != 0)
        return ENOMEM;
    char c;
    return read(child_pipe[0], &c, 1) == 1 ? 0 : EPROTO; /* only the hook ends it */
}

START_TEST(join_waits_for_hooks_of_its_children)
{
    th_baseline b = th_baseline_take();
    atomic_store(&hook_finished, false);
    ck_assert_int_eq(pipe2(child_pipe, O_CLOEXEC), 0);
    tether_scope_opts o = { .timeout_ns = tether_ms(30), .name = "hooked" };
    tether_scope *s = open_scope(&o);
    spawn_ok(s, child_with_hook, NULL, "child", NULL);
    tether_time_t t0 = tether_now();
    tether_result r = join_and_free(s);
    int64_t took = tether_now() - t0;
    ck_assert(atomic_load(&hook_finished));
    ck_assert_int_ge(took, tether_ms(200));
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_DEADLINE_EXCEEDED);
    ck_assert(hook_off(child_hook)); /* the token is gone, the handle is not */
    close(child_pipe[0]);
    close(child_pipe[1]);
    ck_assert_int_eq(bad_seen(), 0);
    th_baseline_check(b);
}
END_TEST

/* Many cancelers and the deadline at once: the hook runs once. */
struct racer {
    tether_token *t;
    pthread_barrier_t *bar;
};

static void *cancel_at_barrier(void *arg)
{
    struct racer *r = arg;
    pthread_barrier_wait(r->bar);
    EXPECT(tether_token_cancel(r->t, 0) == 0, "cancel");
    return NULL;
}

START_TEST(hook_runs_once_under_concurrent_cancels)
{
    th_baseline b = th_baseline_take();
    enum { CANCELERS = 4 };
    int rounds = stress(200);
    struct probe p;
    probe_init(&p, false);
    for (int i = 0; i < rounds; i++) {
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, CANCELERS + 1);
        tether_token *t = new_token(NULL, tether_deadline_after(tether_us(200)));
        tether_hook *h = hook_on(t, probe_hook, &p);
        struct racer r = { t, &bar };
        pthread_t th[CANCELERS];
        for (int k = 0; k < CANCELERS; k++)
            th[k] = thread_start(cancel_at_barrier, &r);
        pthread_barrier_wait(&bar);
        for (int k = 0; k < CANCELERS; k++)
            thread_join(th[k]);
        ck_assert(th_sem_wait_bounded(&p.done, 2000));
        ck_assert(hook_off(h));
        ck_assert_int_eq(tether_token_free(t), 0);
        pthread_barrier_destroy(&bar);
    }
    ck_assert_int_ne(sem_trywait(&p.done), 0);
    ck_assert_int_eq(atomic_load(&p.runs), rounds);
    probe_destroy(&p);
    ck_assert_int_eq(bad_seen(), 0);
    th_baseline_check(b);
}
END_TEST

START_TEST(already_canceled_runs_on_a_runner)
{
    th_baseline b = th_baseline_take();
    struct probe p;
    probe_init(&p, false);
    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    tether_hook *h = hook_on(t, probe_hook, &p);
    ck_assert(th_sem_wait_bounded(&p.done, 2000));
    ck_assert(!pthread_equal(p.thread, pthread_self()));
    ck_assert(hook_off(h));
    ck_assert_int_eq(tether_token_free(t), 0);
    ck_assert_int_eq(atomic_load(&p.runs), 1);
    probe_destroy(&p);
    th_baseline_check(b);
}
END_TEST

START_TEST(deadline_fires_the_hook_off_the_timer_thread)
{
    th_baseline b = th_baseline_take();
    struct probe p;
    probe_init(&p, false);
    tether_time_t when = tether_deadline_after(tether_ms(20));
    tether_token *t = new_token(NULL, when);
    tether_token *child = new_token(t, TETHER_NEVER); /* inherits it */
    tether_hook *h = hook_on(child, probe_hook, &p);
    ck_assert(th_sem_wait_bounded(&p.done, 2000)); /* nobody waits under t */
    ck_assert_int_ge(p.at, when);
    ck_assert_msg(p.at - when < th_bound_ns(100), "late by %lld ns", (long long)(p.at - when));
    ck_assert_str_eq(p.name, "tether-hook");
    ck_assert_int_eq(tether_token_cause(child), TETHER_CAUSE_PARENT);
    ck_assert(hook_off(h));
    ck_assert_int_eq(tether_token_free(child), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    probe_destroy(&p);
    th_baseline_check(b);
}
END_TEST

/* ===================================================== tether_hook_off */

START_TEST(off_before_cancel_never_runs)
{
    th_baseline b = th_baseline_take();
    struct probe p;
    probe_init(&p, false);
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_hook *h = hook_on(t, probe_hook, &p);
    ck_assert(!hook_off(h));
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ck_assert(!th_sem_wait_bounded(&p.done, 50));
    ck_assert_int_eq(atomic_load(&p.runs), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    probe_destroy(&p);
    th_baseline_check(b);
}
END_TEST

struct offer {
    tether_hook *h;
    atomic_bool returned;
    bool ran;
};

static void *off_in_thread(void *arg)
{
    struct offer *o = arg;
    EXPECT(tether_hook_off(o->h, &o->ran) == 0, "off");
    atomic_store(&o->returned, true);
    return NULL;
}

START_TEST(off_during_run_waits_for_it)
{
    th_baseline b = th_baseline_take();
    struct probe p;
    probe_init(&p, true);
    tether_token *t = new_token(NULL, TETHER_NEVER);
    struct offer o = { .h = hook_on(t, probe_hook, &p) };
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ck_assert(th_sem_wait_bounded(&p.started, 2000));
    pthread_t th = thread_start(off_in_thread, &o);
    usleep(50 * 1000);
    ck_assert(!atomic_load(&o.returned));
    sem_post(&p.go);
    thread_join(th);
    ck_assert(o.ran);
    ck_assert_int_eq(sem_trywait(&p.done), 0); /* the hook ended before off returned */
    ck_assert_int_eq(tether_token_free(t), 0);
    probe_destroy(&p);
    ck_assert_int_eq(bad_seen(), 0);
    th_baseline_check(b);
}
END_TEST

static tether_hook *self_hook;
static sem_t self_done;

static void off_itself(void *arg)
{
    (void)arg;
    bool ran = false;
    EXPECT(tether_hook_off(self_hook, &ran) == 0 && ran, "off from inside");
    sem_post(&self_done);
}

START_TEST(off_from_inside_the_hook_returns_at_once)
{
    th_baseline b = th_baseline_take();
    sem_init(&self_done, 0, 0);
    tether_token *t = new_token(NULL, TETHER_NEVER);
    self_hook = hook_on(t, off_itself, NULL);
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ck_assert(th_sem_wait_bounded(&self_done, 2000));
    ck_assert_int_eq(tether_token_free(t), 0); /* waits for the hook's end */
    sem_destroy(&self_done);
    ck_assert_int_eq(bad_seen(), 0);
    th_baseline_check(b);
}
END_TEST

/* ===================================================== runners */

/* A blocking hook that many runners run at once on one probe: counts,
 * records nothing else. */
static void busy_hook(void *arg)
{
    struct probe *p = arg;
    atomic_fetch_add(&p->runs, 1);
    sem_post(&p->started);
    sem_wait_ok(&p->go);
}

/* Fill every runner with a blocking hook; returns the tokens and hooks. */
static void fill_runners(struct probe *p, tether_token **ts, tether_hook **hs)
{
    for (int i = 0; i < RUNNER_BOUND; i++) {
        ts[i] = new_token(NULL, TETHER_NEVER);
        hs[i] = hook_on(ts[i], busy_hook, p);
    }
    for (int i = 0; i < RUNNER_BOUND; i++)
        ck_assert_int_eq(tether_token_cancel(ts[i], 0), 0);
    for (int i = 0; i < RUNNER_BOUND; i++)
        ck_assert(th_sem_wait_bounded(&p->started, 4000));
}

static void drain_runners(struct probe *p, tether_token **ts, tether_hook **hs)
{
    for (int i = 0; i < RUNNER_BOUND; i++)
        sem_post(&p->go);
    for (int i = 0; i < RUNNER_BOUND; i++) {
        ck_assert(hook_off(hs[i]));
        ck_assert_int_eq(tether_token_free(ts[i]), 0);
    }
}

START_TEST(queued_hook_of_a_freed_token_never_runs)
{
    th_baseline b = th_baseline_take();
    struct probe busy, q;
    probe_init(&busy, true);
    probe_init(&q, false);
    tether_token *ts[RUNNER_BOUND];
    tether_hook *hs[RUNNER_BOUND];
    fill_runners(&busy, ts, hs);

    /* Every runner is busy: this hook queues, and its token's free drops it
     * without waiting. */
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_hook *h = hook_on(t, probe_hook, &q);
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ck_assert(!th_sem_wait_bounded(&q.started, 50)); /* the bound holds */
    tether_time_t t0 = tether_now();
    ck_assert_int_eq(tether_token_free(t), 0);
    ck_assert(tether_now() - t0 < th_bound_ns(50));
    drain_runners(&busy, ts, hs);
    ck_assert(!th_sem_wait_bounded(&q.started, 50));
    ck_assert(!hook_off(h));
    ck_assert_int_eq(atomic_load(&q.runs), 0);
    probe_destroy(&busy);
    probe_destroy(&q);
    th_baseline_check(b);
}
END_TEST

static atomic_int concurrent, most_concurrent;

static void counted_hook(void *arg)
{
    struct probe *p = arg;
    int now = atomic_fetch_add(&concurrent, 1) + 1;
    for (int m = atomic_load(&most_concurrent); now > m;)
        if (atomic_compare_exchange_weak(&most_concurrent, &m, now))
            break;
    usleep(5000);
    atomic_fetch_sub(&concurrent, 1);
    atomic_fetch_add(&p->runs, 1);
    sem_post(&p->done);
}

START_TEST(more_hooks_than_runners_all_run)
{
    th_baseline b = th_baseline_take();
    enum { N = 3 * RUNNER_BOUND + 7 };
    struct probe p;
    probe_init(&p, false);
    atomic_store(&concurrent, 0);
    atomic_store(&most_concurrent, 0);
    tether_token *root = new_token(NULL, TETHER_NEVER);
    static tether_token *ts[N];
    static tether_hook *hs[N];
    for (int i = 0; i < N; i++) {
        ts[i] = new_token(root, TETHER_NEVER);
        hs[i] = hook_on(ts[i], counted_hook, &p);
    }
    ck_assert_int_eq(tether_token_cancel(root, 0), 0); /* one cancel, N hooks */
    for (int i = 0; i < N; i++)
        ck_assert(th_sem_wait_bounded(&p.done, 4000));
    ck_assert_int_eq(atomic_load(&p.runs), N);
    ck_assert_int_le(atomic_load(&most_concurrent), RUNNER_BOUND);
    ck_assert_int_gt(atomic_load(&most_concurrent), 1);
    for (int i = 0; i < N; i++) {
        ck_assert(hook_off(hs[i]));
        ck_assert_int_eq(tether_token_free(ts[i]), 0);
    }
    ck_assert_int_eq(tether_token_free(root), 0);
    probe_destroy(&p);
    th_baseline_check(b);
}
END_TEST

START_TEST(runners_are_lazy_and_trim_releases_them)
{
    (void)th_baseline_take(); /* under TSan, its runtime's thread first */
    tether_trim();
    int n = th_wait_thread_count(th_thread_count());
    struct probe p;
    probe_init(&p, false);
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_hook *h = hook_on(t, probe_hook, &p);
    ck_assert_int_eq(th_thread_count(), n); /* registered, never ran: none */
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ck_assert(th_sem_wait_bounded(&p.done, 2000));
    ck_assert(hook_off(h));
    ck_assert_int_eq(tether_token_free(t), 0);
    ck_assert_int_eq(th_thread_count(), n + 1); /* one idle runner */
    tether_trim();
    ck_assert_int_eq(th_wait_thread_count(n), n);
    probe_destroy(&p);
}
END_TEST

static int fork_child_checks(void)
{
    /* Only the forking thread came along: no runner of the parent. */
#ifndef TS_TSAN
    if (th_thread_count() != 1)
        return 10;
#endif
    struct probe p;
    probe_init(&p, false);
    tether_token *t;
    tether_hook *h;
    if (tether_token_new(&t, NULL, TETHER_NEVER) || tether_hook_on_cancel(t, probe_hook, &p, &h))
        return 11;
    tether_token_cancel(t, 0);
    if (!th_sem_wait_bounded(&p.done, 2000))
        return 12;
    bool ran = false;
    if (tether_hook_off(h, &ran) || !ran || tether_token_free(t))
        return 13;
    return atomic_load(&p.runs) == 1 ? 0 : 14;
}

START_TEST(fork_child_has_no_parent_runner_and_runs_its_own)
{
    th_baseline b = th_baseline_take();
    struct probe p;
    probe_init(&p, false);
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_hook *h = hook_on(t, probe_hook, &p);
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ck_assert(th_sem_wait_bounded(&p.done, 2000));
    ck_assert(hook_off(h));
    /* An idle runner exists; let it park before forking. */
    ck_assert_int_eq(th_wait_thread_count(b.threads + 1), b.threads + 1);
    usleep(20 * 1000);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(fork_child_checks());
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
    ck_assert_int_eq(tether_token_free(t), 0);
    probe_destroy(&p);
    th_baseline_check(b);
}
END_TEST

/* ===================================================== descriptor spans */

struct reader {
    tether_token *t;
    int fd;
    ssize_t got;
    bool fired;
    int begin_rc;
};

/* Under r->t, open a span on r->fd and block in a plain read(2). */
static void *read_in_span(void *arg)
{
    struct reader *r = arg;
    enter(r->t);
    tether_fd_span *s;
    r->begin_rc = tether_fd_span_begin(r->fd, SHUT_RDWR, &s);
    if (r->begin_rc == 0) {
        char c;
        r->got = read(r->fd, &c, 1); /* not tether's: only the shutdown ends it */
        EXPECT(tether_fd_span_end(s, &r->fired) == 0, "end");
    }
    leave(r->t);
    return NULL;
}

static void span_stops_read(tether_time_t deadline)
{
    th_baseline b = th_baseline_take();
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct reader r = { .t = new_token(NULL, deadline), .fd = sv[0], .got = -2 };
    pthread_t th = thread_start(read_in_span, &r);
    if (deadline == TETHER_NEVER) {
        usleep(20 * 1000);
        ck_assert_int_eq(tether_token_cancel(r.t, 0), 0);
    }
    tether_time_t end = tether_now() + th_bound_ns(2000);
    thread_join(th);
    ck_assert(tether_now() < end);
    ck_assert_int_eq(r.begin_rc, 0);
    ck_assert_int_eq(r.got, 0); /* end of file: shut down */
    ck_assert(r.fired);
    ck_assert_int_eq(tether_token_free(r.t), 0);
    close(sv[0]);
    close(sv[1]);
    ck_assert_int_eq(bad_seen(), 0);
    th_baseline_check(b);
}

START_TEST(span_shuts_down_on_cancel)
{
    span_stops_read(TETHER_NEVER);
}
END_TEST

START_TEST(span_shuts_down_at_deadline)
{
    span_stops_read(tether_deadline_after(tether_ms(30)));
}
END_TEST

/* A canceler released at the same instant as the span's end. */
struct span_race {
    sem_t go, done;
    tether_token *t;
    atomic_bool stop;
};

static void *race_canceler(void *arg)
{
    struct span_race *r = arg;
    for (;;) {
        sem_wait_ok(&r->go);
        if (atomic_load(&r->stop))
            return NULL;
        EXPECT(tether_token_cancel(r->t, 0) == 0, "cancel");
        sem_post(&r->done);
    }
}

/* Whether the socket pair still carries a byte each way. */
static bool pair_works(int a, int b)
{
    char c = 0;
    if (send(a, "x", 1, MSG_NOSIGNAL) != 1 || send(b, "y", 1, MSG_NOSIGNAL) != 1)
        return false;
    return recv(b, &c, 1, MSG_DONTWAIT) == 1 && c == 'x' && recv(a, &c, 1, MSG_DONTWAIT) == 1 &&
           c == 'y';
}

START_TEST(span_never_fires_after_end_even_with_the_number_reused)
{
    th_baseline b = th_baseline_take();
    int rounds = stress(2000);
    struct span_race r;
    sem_init(&r.go, 0, 0);
    sem_init(&r.done, 0, 0);
    atomic_store(&r.stop, false);
    pthread_t th = thread_start(race_canceler, &r);
    int fired = 0;
    for (int i = 0; i < rounds; i++) {
        int sv[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        r.t = new_token(NULL, TETHER_NEVER);
        enter(r.t);
        tether_fd_span *s;
        ck_assert_int_eq(tether_fd_span_begin(sv[0], SHUT_RDWR, &s), 0);
        sem_post(&r.go);
        if (i & 1)
            busy_spin((unsigned)(i % 97) * 10);
        bool f;
        ck_assert_int_eq(tether_fd_span_end(s, &f), 0);
        int old = sv[0];
        close(sv[0]);
        close(sv[1]);
        int nv[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, nv), 0);
        sem_wait_ok(&r.done); /* the cancel has returned */
        ck_assert_msg(nv[0] == old || nv[1] == old, "number %d not reused", old);
        ck_assert_msg(pair_works(nv[0], nv[1]), "round %d: the new descriptor was shut down", i);
        fired += f;
        close(nv[0]);
        close(nv[1]);
        leave(r.t);
        ck_assert_int_eq(tether_token_free(r.t), 0);
    }
    atomic_store(&r.stop, true);
    sem_post(&r.go);
    thread_join(th);
    printf("span race: %d of %d rounds fired before the end\n", fired, rounds);
    sem_destroy(&r.go);
    sem_destroy(&r.done);
    ck_assert_int_eq(bad_seen(), 0);
    th_baseline_check(b);
}
END_TEST

START_TEST(span_without_token_never_fires)
{
    th_baseline b = th_baseline_take();
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    tether_fd_span *s;
    ck_assert_int_eq(tether_fd_span_begin(sv[0], SHUT_RDWR, &s), 0);
    bool f = true;
    ck_assert_int_eq(tether_fd_span_end(s, &f), 0);
    ck_assert(!f);
    ck_assert(pair_works(sv[0], sv[1]));
    close(sv[0]);
    close(sv[1]);
    th_baseline_check(b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("hook");
    TCase *tc = tcase_create("hooks");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, blocking_hook_delays_its_owner_and_nothing_else);
    tcase_add_test(tc, join_waits_for_hooks_of_its_children);
    tcase_add_test(tc, hook_runs_once_under_concurrent_cancels);
    tcase_add_test(tc, already_canceled_runs_on_a_runner);
    tcase_add_test(tc, deadline_fires_the_hook_off_the_timer_thread);
    tcase_add_test(tc, off_before_cancel_never_runs);
    tcase_add_test(tc, off_during_run_waits_for_it);
    tcase_add_test(tc, off_from_inside_the_hook_returns_at_once);
    tcase_add_test(tc, queued_hook_of_a_freed_token_never_runs);
    tcase_add_test(tc, more_hooks_than_runners_all_run);
    tcase_add_test(tc, runners_are_lazy_and_trim_releases_them);
    tcase_add_test(tc, fork_child_has_no_parent_runner_and_runs_its_own);
    suite_add_tcase(s, tc);

    tc = tcase_create("spans");
    tcase_set_timeout(tc, th_timeout_s(30));
    tcase_add_test(tc, span_shuts_down_on_cancel);
    tcase_add_test(tc, span_shuts_down_at_deadline);
    tcase_add_test(tc, span_never_fires_after_end_even_with_the_number_reused);
    tcase_add_test(tc, span_without_token_never_fires);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
