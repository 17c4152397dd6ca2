/*
 * The timer thread: a token's own deadline cancels it at the deadline with
 * nobody waiting (cause deadline, callbacks run then, on the timer thread),
 * never early; the thread starts lazily and tether_trim stops it when idle;
 * a token freed before (or while) its deadline fires is safe; a fork child
 * gets deadlines too.
 */
#define _GNU_SOURCE
#include "token_fixtures.h"

#include <dirent.h>
#include <sys/socket.h>
#include <sys/wait.h>

/* Threads in this process, without tether_trim (th_thread_count's
 * helpers trim, which would stop the thread under test). */
static int raw_thread_count(void)
{
    DIR *d = opendir("/proc/self/task");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Wait up to a bound for the raw thread count to be n; the last count. */
static int wait_raw_threads(int n)
{
    tether_time_t end = tether_now() + th_bound_ns(2000);
    int c;
    while ((c = raw_thread_count()) != n && tether_now() < end)
        usleep(1000);
    return c;
}

/* What a callback saw when it ran. */
struct fired {
    sem_t done;
    tether_time_t at;
    pthread_t thread;
    int fd;        /* >= 0: shut down (socket) or closed (pipe end) */
    bool close_it; /* close fd instead of shutdown */
};

static void record(void *arg)
{
    struct fired *f = arg;
    f->at = tether_now();
    f->thread = pthread_self();
    if (f->fd >= 0) {
        if (f->close_it) {
            close(f->fd);
            f->fd = -1;
        } else {
            shutdown(f->fd, SHUT_RDWR);
        }
    }
    sem_post(&f->done);
}

static void fired_init(struct fired *f, int fd, bool close_it)
{
    memset(f, 0, sizeof *f);
    ck_assert_int_eq(sem_init(&f->done, 0, 0), 0);
    f->fd = fd;
    f->close_it = close_it;
}

/* ================================================== firing with no waiter */

START_TEST(callback_fires_with_nobody_waiting)
{
    th_baseline b = th_baseline_take();
    struct fired f;
    fired_init(&f, -1, false);
    tether_time_t d = tether_deadline_after(tether_ms(50));
    tether_token *t = new_token(NULL, d);
    tether_token *below = new_token(t, TETHER_NEVER);
    tether_callback *cb = on_cancel(below, record, &f);

    ck_assert_msg(th_sem_wait_bounded(&f.done, 2000), "the deadline's callback never ran");
    ck_assert_int_ge(f.at, d);
    ck_assert_msg(f.at - d < th_bound_ns(500), "callback %lld ns late", (long long)(f.at - d));
    ck_assert(!pthread_equal(f.thread, pthread_self()));
    ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(tether_token_error(t), ETIMEDOUT);
    ck_assert_int_eq(tether_token_cause(below), TETHER_CAUSE_PARENT);
    ck_assert_int_eq(tether_token_root_cause(below), TETHER_CAUSE_DEADLINE);
    ck_assert(off_cancel(cb));
    free_token(below);
    free_token(t);
    sem_destroy(&f.done);
    th_baseline_check(b);
}
END_TEST

START_TEST(expired_at_birth_is_canceled_soon)
{
    th_baseline b = th_baseline_take();
    struct fired f;
    fired_init(&f, -1, false);
    tether_token *t = new_token(NULL, tether_now() - 1);
    tether_callback *cb = on_cancel(t, record, &f);
    /* Either the timer thread got there first (then the callback ran here,
     * at registration) or it runs it now: either way, with no check. */
    ck_assert(th_sem_wait_bounded(&f.done, 2000));
    ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_DEADLINE);
    ck_assert(off_cancel(cb));
    free_token(t);
    sem_destroy(&f.done);
    th_baseline_check(b);
}
END_TEST

/* A pool worker's job: a fresh token with the job's deadline, a cancel
 * callback that shuts the job's socket down (docs/limits.md), and a plain
 * read(2) that tether cannot see. */
struct job {
    tether_time_t deadline;
    int sock;
    ssize_t got;
    tether_time_t ended;
};

static void *pool_job(void *arg)
{
    struct job *j = arg;
    tether_token *t = new_token(NULL, j->deadline);
    struct fired f;
    fired_init(&f, j->sock, false);
    tether_callback *cb;
    EXPECT(tether_token_on_cancel(t, record, &f, &cb) == 0, "on_cancel");
    enter(t);
    char c;
    j->got = read(j->sock, &c, 1); /* plain read: only the shutdown ends it */
    j->ended = tether_now();
    leave(t);
    EXPECT(tether_token_off_cancel(cb, NULL) == 0, "off_cancel");
    EXPECT(tether_token_free(t) == 0, "free");
    sem_destroy(&f.done);
    return NULL;
}

START_TEST(pool_job_shutdown_at_deadline)
{
    th_baseline b = th_baseline_take();
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct job j = { .deadline = tether_deadline_after(tether_ms(50)), .sock = sv[0] };
    pthread_t th = thread_start(pool_job, &j);
    thread_join(th);
    ck_assert_int_eq(bad_seen(), 0);
    ck_assert_int_eq(j.got, 0); /* EOF from the shutdown */
    ck_assert_int_ge(j.ended, j.deadline);
    ck_assert_msg(j.ended - j.deadline < th_bound_ns(500), "job ended %lld ns after its deadline",
                  (long long)(j.ended - j.deadline));
    close(sv[0]);
    close(sv[1]);
    th_baseline_check(b);
}
END_TEST

/* A scope child blocked in a plain read(2) of a pipe, with its own spawn
 * timeout: its callback closes the pipe's write end, so EOF proves it ran. */
struct reader {
    int rd, wr;
    tether_time_t spawned, ended;
    ssize_t got;
};

static int plain_reader(void *arg)
{
    struct reader *r = arg;
    struct fired f;
    fired_init(&f, r->wr, true);
    tether_callback *cb;
    int rc = tether_token_on_cancel(tether_current(), record, &f, &cb);
    if (rc)
        return rc;
    char c;
    r->got = read(r->rd, &c, 1);
    r->ended = tether_now();
    bool ran = false;
    tether_token_off_cancel(cb, &ran);
    if (ran)
        r->wr = -1; /* closed by the callback */
    sem_destroy(&f.done);
    return tether_check();
}

START_TEST(spawn_timeout_cancels_child_in_plain_read)
{
    th_baseline b = th_baseline_take();
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    struct reader r = { .rd = p[0], .wr = p[1] };
    tether_scope_opts so = { .name = "timer", .policy = TETHER_POLICY_SUPERVISOR };
    tether_scope *s = open_scope(&so);
    tether_spawn_opts o = { .name = "reader", .timeout_ns = tether_ms(50) };
    r.spawned = tether_now();
    ck_assert_int_eq(tether_spawn(s, plain_reader, &r, &o, NULL), 0);
    tether_result res = join_and_free(s);
    ck_assert_int_eq(r.got, 0); /* EOF: the callback closed the write end */
    ck_assert_int_eq(r.wr, -1);
    ck_assert_int_ge(r.ended - r.spawned, tether_ms(50));
    ck_assert_msg(r.ended - r.spawned < tether_ms(50) + th_bound_ns(500), "child blocked %lld ms",
                  (long long)((r.ended - r.spawned) / 1000000));
    ck_assert_int_eq(res.failed, 1);
    ck_assert_int_eq(res.error, ETIMEDOUT);
    close(p[0]);
    th_baseline_check(b);
}
END_TEST

/* ===================================================== the thread's life */

START_TEST(thread_is_lazy_and_trim_stops_it)
{
    (void)th_baseline_take(); /* under TSan, its runtime's thread first */
    tether_trim();
    int n = wait_raw_threads(raw_thread_count());
    tether_token *plain = new_token(NULL, TETHER_NEVER);
    tether_token *inherits = new_token(plain, TETHER_NEVER);
    ck_assert_int_eq(raw_thread_count(), n); /* no deadline, no thread */

    tether_token *t = new_token(NULL, tether_deadline_after(DAY));
    ck_assert_int_eq(raw_thread_count(), n + 1);
    tether_token *u = new_token(t, tether_deadline_after(DAY / 2)); /* one thread for all */
    ck_assert_int_eq(raw_thread_count(), n + 1);
    tether_trim(); /* deadlines armed: it stays */
    ck_assert_int_eq(raw_thread_count(), n + 1);
    free_token(u);
    free_token(t);
    ck_assert_int_eq(raw_thread_count(), n + 1); /* idle, until trimmed */
    tether_trim();
    ck_assert_int_eq(wait_raw_threads(n), n);
    tether_trim(); /* twice is fine */

    /* Started again at the next deadline, and still on time. */
    struct fired f;
    fired_init(&f, -1, false);
    tether_time_t d = tether_deadline_after(tether_ms(20));
    t = new_token(inherits, d);
    tether_callback *cb = on_cancel(t, record, &f);
    ck_assert_int_eq(raw_thread_count(), n + 1);
    ck_assert(th_sem_wait_bounded(&f.done, 2000));
    ck_assert_int_ge(f.at, d);
    ck_assert(off_cancel(cb));
    free_token(t);
    free_token(inherits);
    free_token(plain);
    tether_trim();
    ck_assert_int_eq(wait_raw_threads(n), n);
    sem_destroy(&f.done);
}
END_TEST

/* A callback on the timer thread may call tether_trim (it is a no-op there:
 * the thread cannot join itself) and arm new deadlines. */
static void trim_and_rearm(void *arg)
{
    tether_token **next = arg;
    tether_trim();
    EXPECT(tether_token_new(next, NULL, tether_deadline_after(tether_ms(1))) == 0, "new");
}

START_TEST(callback_on_timer_thread_may_trim_and_arm)
{
    th_baseline b = th_baseline_take();
    tether_token *next = NULL;
    tether_token *t = new_token(NULL, tether_deadline_after(tether_ms(5)));
    tether_callback *cb = on_cancel(t, trim_and_rearm, &next);
    struct fired f;
    fired_init(&f, -1, false);
    tether_callback *cb2 = on_cancel(t, record, &f);
    ck_assert(th_sem_wait_bounded(&f.done, 2000));
    ck_assert(off_cancel(cb));
    ck_assert(off_cancel(cb2));
    ck_assert_int_eq(bad_seen(), 0);
    ck_assert_ptr_nonnull(next);
    struct fired g;
    fired_init(&g, -1, false);
    tether_callback *cb3 = on_cancel(next, record, &g);
    ck_assert(th_sem_wait_bounded(&g.done, 2000));
    ck_assert(off_cancel(cb3));
    free_token(next);
    free_token(t);
    sem_destroy(&f.done);
    sem_destroy(&g.done);
    th_baseline_check(b);
}
END_TEST

/* ================================================ many deadlines, in order */

enum { MANY = 200 };

static struct {
    tether_time_t deadline[MANY];
    tether_time_t at[MANY];
    int order[MANY];
    atomic_int fired;
    sem_t all;
} M;

static void many_cb(void *arg)
{
    int i = (int)(intptr_t)arg;
    M.at[i] = tether_now();
    int k = atomic_fetch_add(&M.fired, 1);
    M.order[k] = i;
    if (k + 1 == MANY)
        sem_post(&M.all);
}

START_TEST(many_random_deadlines_fire_in_order_never_early)
{
    th_baseline b = th_baseline_take();
    uint64_t seed = th_seed("many_random_deadlines");
    ck_assert_int_eq(sem_init(&M.all, 0, 0), 0);
    tether_token *t[MANY];
    tether_callback *cb[MANY];
    tether_time_t base = tether_now();
    for (int i = 0; i < MANY; i++) {
        M.deadline[i] = base + tether_ms(10) + (tether_time_t)(th_rand(&seed) % tether_ms(300));
        t[i] = new_token(NULL, M.deadline[i]);
        cb[i] = on_cancel(t[i], many_cb, (void *)(intptr_t)i);
    }
    ck_assert_msg(th_sem_wait_bounded(&M.all, 5000), "%d of %d fired", atomic_load(&M.fired), MANY);
    for (int k = 0; k < MANY; k++) {
        int i = M.order[k];
        ck_assert_msg(M.at[i] >= M.deadline[i], "token %d fired %lld ns early", i,
                      (long long)(M.deadline[i] - M.at[i]));
        if (k > 0)
            ck_assert_msg(M.deadline[M.order[k - 1]] <= M.deadline[i], "fired out of order at %d",
                          k);
        ck_assert_int_eq(tether_token_cause(t[i]), TETHER_CAUSE_DEADLINE);
    }
    for (int i = 0; i < MANY; i++) {
        ck_assert(off_cancel(cb[i]));
        free_token(t[i]);
    }
    sem_destroy(&M.all);
    th_baseline_check(b);
}
END_TEST

/* ===================================================== freeing before it */

static void must_not_run(void *arg)
{
    (void)arg;
    bad("a freed token's deadline fired");
}

START_TEST(free_before_deadline_never_fires)
{
    th_baseline b = th_baseline_take();
    enum { N = 64 };
    tether_token *t[N];
    tether_callback *cb[N];
    tether_time_t d = tether_deadline_after(tether_ms(20));
    for (int i = 0; i < N; i++) {
        t[i] = new_token(NULL, d + i * tether_us(100));
        cb[i] = on_cancel(t[i], must_not_run, NULL);
    }
    for (int i = 0; i < N; i++)
        free_token(t[i]);
    /* A canary armed after them fires after all of their deadlines. */
    struct fired f;
    fired_init(&f, -1, false);
    tether_token *canary = new_token(NULL, d + N * tether_us(100) + tether_ms(5));
    tether_callback *ccb = on_cancel(canary, record, &f);
    ck_assert(th_sem_wait_bounded(&f.done, 2000));
    for (int i = 0; i < N; i++)
        ck_assert(!off_cancel(cb[i]));
    ck_assert(off_cancel(ccb));
    free_token(canary);
    ck_assert_msg(bad_seen() == 0, "%s", bad_first());
    sem_destroy(&f.done);
    th_baseline_check(b);
}
END_TEST

static void count_runs(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

/* Free at random instants around the deadline while the timer thread
 * fires: each callback runs at most once, and nothing is touched after
 * free (ASan and TSan builds check the last part). */
START_TEST(free_races_the_fire)
{
    th_baseline b = th_baseline_take();
    uint64_t seed = th_seed("free_races_the_fire");
    int rounds = stress(300);
    atomic_int runs = 0;
    int ran = 0;
    for (int r = 0; r < rounds; r++) {
        tether_token *t =
            new_token(NULL, tether_deadline_after((int64_t)(th_rand(&seed) % 200000)));
        tether_token *below = new_token(t, TETHER_NEVER);
        tether_callback *cb = on_cancel(below, count_runs, &runs);
        busy_spin((unsigned)(th_rand(&seed) % 20000));
        bool did = off_cancel(cb);
        ran += did;
        free_token(below);
        free_token(t);
    }
    ck_assert_int_eq(atomic_load(&runs), ran);
    th_baseline_check(b);
}
END_TEST

/* ================================================================== fork */

/* The timer thread's kernel id (its name is set first thing it does), or 0
 * if it has none. */
static pid_t timer_tid(void)
{
    DIR *d = opendir("/proc/self/task");
    ck_assert_ptr_nonnull(d);
    pid_t tid = 0;
    for (struct dirent *e; !tid && (e = readdir(d));) {
        char path[300], name[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = e->d_name[0] != '.' ? fopen(path, "r") : NULL;
        if (f) {
            if (fgets(name, sizeof name, f) && strcmp(name, "tether-timer\n") == 0)
                tid = (pid_t)atoi(e->d_name);
            fclose(f);
        }
    }
    closedir(d);
    return tid;
}

/* In the child: a new deadline's callback runs with nobody waiting, and so
 * does an inherited one's; 0 if both did. */
static int child_checks(tether_token *inherited, tether_time_t inherited_deadline)
{
    struct fired f, g;
    if (sem_init(&f.done, 0, 0) || sem_init(&g.done, 0, 0))
        return 10;
    f.fd = g.fd = -1;
    tether_callback *ci, *cn;
    if (tether_token_on_cancel(inherited, record, &g, &ci))
        return 11;
    tether_token *t;
    tether_time_t d = tether_deadline_after(tether_ms(20));
    if (tether_token_new(&t, NULL, d) || tether_token_on_cancel(t, record, &f, &cn))
        return 12;
    if (!th_sem_wait_bounded(&f.done, 2000))
        return 13;
    if (f.at < d)
        return 14;
    if (!th_sem_wait_bounded(&g.done, 2000))
        return 15;
    if (g.at < inherited_deadline || tether_token_cause(inherited) != TETHER_CAUSE_DEADLINE)
        return 16;
    tether_token_off_cancel(ci, NULL);
    tether_token_off_cancel(cn, NULL);
    tether_token_free(t);
    return 0;
}

START_TEST(fork_child_gets_deadlines)
{
    th_baseline b = th_baseline_take();
    /* The parent's timer thread runs (an armed deadline) when it forks. */
    tether_time_t d = tether_deadline_after(tether_ms(60));
    tether_token *inherited = new_token(NULL, d);
    ck_assert_int_eq(wait_raw_threads(b.threads + 1), b.threads + 1);
    /* Fork once it sleeps: a thread still starting up may hold the
     * allocator's lock of a sanitizer runtime, which is not fork-safe (ASan
     * in gcc 12), and the child's own timer thread would then hang in it. */
    tether_time_t end = tether_now() + th_bound_ns(2000);
    pid_t tid;
    while (!(tid = timer_tid()) && tether_now() < end)
        usleep(200);
    ck_assert_int_ne(tid, 0);
    ck_assert_int_eq(th_wait_blocked(tid), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(child_checks(inherited, d));
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
    /* The parent's copy fired on its own. */
    ck_assert_int_eq(tether_token_check(inherited) == ETIMEDOUT, 1);
    free_token(inherited);
    th_baseline_check(b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("token_timer");
    TCase *tc = tcase_create("fire");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, callback_fires_with_nobody_waiting);
    tcase_add_test(tc, expired_at_birth_is_canceled_soon);
    tcase_add_test(tc, pool_job_shutdown_at_deadline);
    tcase_add_test(tc, spawn_timeout_cancels_child_in_plain_read);
    tcase_add_test(tc, many_random_deadlines_fire_in_order_never_early);
    suite_add_tcase(s, tc);

    tc = tcase_create("life");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, thread_is_lazy_and_trim_stops_it);
    tcase_add_test(tc, callback_on_timer_thread_may_trim_and_arm);
    tcase_add_test(tc, free_before_deadline_never_fires);
    tcase_add_test(tc, free_races_the_fire);
    tcase_add_test(tc, fork_child_gets_deadlines);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
