/*
 * The new public API (hooks, spans, context, metrics, events) driven as an
 * outside suite would drive it, from its headers alone: the conventions the
 * umbrella states (an error-number call leaves errno as it was, even when
 * the error comes from the kernel or tether's own calls in a canceler),
 * snprintf-like truncation, reentrant calls from inside hooks (a cancel
 * hook that frees its own token) and a hook whose runner could not start.
 */
#define _GNU_SOURCE
#include "support.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* A sentinel that no call here can set by itself. */
enum { SENTINEL = EXDEV };

/* ------------------------------------------------- errno stays untouched */

/* A span on a socket that is not connected: its shutdown(2) fails with
 * ENOTCONN in the canceler, which must not see it in errno. */
START_TEST(span_shutdown_failing_leaves_the_cancelers_errno)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(shutdown(fd, SHUT_RDWR), -1); /* what the span will meet */
    tether_token *t = new_token(NULL, TETHER_NEVER);
    enter(t);
    tether_fd_span *s;
    ck_assert_int_eq(tether_fd_span_begin(fd, SHUT_RDWR, &s), 0);
    leave(t);
    errno = SENTINEL;
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ck_assert_msg(errno == SENTINEL, "tether_token_cancel changed errno to %s",
                  strerrorname_np(errno));
    bool fired = false;
    ck_assert_int_eq(tether_fd_span_end(s, &fired), 0);
    ck_assert(fired);

    /* Already canceled: the shutdown runs inside tether_fd_span_begin. */
    enter(t);
    errno = SENTINEL;
    ck_assert_int_eq(tether_fd_span_begin(fd, SHUT_RD, &s), 0);
    ck_assert_msg(errno == SENTINEL, "tether_fd_span_begin changed errno to %s",
                  strerrorname_np(errno));
    ck_assert_int_eq(tether_fd_span_end(s, &fired), 0);
    ck_assert(fired);
    leave(t);
    ck_assert_int_eq(tether_token_free(t), 0);
    close(fd);
}
END_TEST

/* The errors tether_fd_span_begin returns from the kernel's answer. */
START_TEST(span_begin_errors_leave_errno)
{
    tether_fd_span *s = NULL;
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    errno = SENTINEL;
    ck_assert_int_eq(tether_fd_span_begin(p[0], SHUT_RD, &s), ENOTSOCK);
    ck_assert_msg(errno == SENTINEL, "ENOTSOCK: errno is %s", strerrorname_np(errno));
    close(p[1]);
    close(p[0]);
    errno = SENTINEL;
    ck_assert_int_eq(tether_fd_span_begin(p[0], SHUT_RD, &s), EBADF);
    ck_assert_msg(errno == SENTINEL, "EBADF: errno is %s", strerrorname_np(errno));
    ck_assert_ptr_null(s);
}
END_TEST

/* ------------------------------------------------ snprintf-like truncation */

START_TEST(metrics_format_truncates_as_snprintf)
{
    tether_metrics_snapshot snap;
    ck_assert_int_eq(tether_metrics_snapshot_take(&snap), 0);
    size_t need = 0;
    ck_assert_int_eq(tether_metrics_format(&snap, NULL, 0, &need), ERANGE);
    ck_assert_uint_gt(need, 0);
    char *full = malloc(need + 1);
    char *buf = malloc(need + 1);
    ck_assert_int_eq(tether_metrics_format(&snap, full, need + 1, NULL), 0);
    ck_assert_uint_eq(strlen(full), need);
    size_t sizes[] = { 1, 2, need / 2, need };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t size = sizes[i], len = 0;
        memset(buf, 'x', need + 1);
        ck_assert_int_eq(tether_metrics_format(&snap, buf, size, &len), ERANGE);
        ck_assert_uint_eq(len, need);
        ck_assert_msg(buf[size - 1] == '\0', "size %zu: no NUL at the end", size);
        ck_assert_msg(strncmp(buf, full, size - 1) == 0, "size %zu: not a prefix", size);
        ck_assert_msg(buf[size] == 'x', "size %zu: wrote past the end", size);
    }
    free(buf);
    free(full);
    tether_metrics_snapshot_release(&snap);
}
END_TEST

/* ------------------------------------------------------- signal handlers */

static volatile sig_atomic_t was_on, now_on;

static void toggle_metrics(int sig)
{
    (void)sig;
    was_on = tether_metrics_set_enabled(!tether_metrics_enabled());
    now_on = tether_metrics_enabled();
}

/* The metrics switch says async-signal-safe: a handler flips it while the
 * interrupted thread takes snapshots and opens scopes. */
START_TEST(metrics_switch_from_a_signal_handler)
{
    struct sigaction sa = { .sa_handler = toggle_metrics }, old;
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGUSR1, &sa, &old), 0);
    for (int i = 0; i < 200; i++) {
        bool before = tether_metrics_enabled();
        tether_metrics_snapshot snap;
        ck_assert_int_eq(tether_metrics_snapshot_take(&snap), 0);
        ck_assert_int_eq(raise(SIGUSR1), 0);
        ck_assert(was_on == before && now_on == !before);
        tether_metrics_snapshot_release(&snap);
        tether_scope *s = open_scope(&(tether_scope_opts){ .name = "adv" });
        join_and_free(s);
    }
    tether_metrics_set_enabled(true);
    ck_assert_int_eq(sigaction(SIGUSR1, &old, NULL), 0);
}
END_TEST

/* -------------------------------------------------- hooks inside hooks */

struct self_free {
    tether_token *t;
    atomic_int rc;
    sem_t done;
};

static void free_own_token(void *arg)
{
    struct self_free *sf = arg;
    atomic_store(&sf->rc, tether_token_free(sf->t));
    sem_post(&sf->done);
}

/* A cancel hook that frees its own token (the header forbids it) is told
 * EBUSY, as an event hook is, and the token stays its owner's to free. */
START_TEST(hook_freeing_its_own_token_gets_ebusy)
{
    struct self_free sf = { .t = new_token(NULL, TETHER_NEVER) };
    atomic_init(&sf.rc, -1);
    sem_init(&sf.done, 0, 0);
    tether_hook *h;
    ck_assert_int_eq(tether_hook_on_cancel(sf.t, free_own_token, &sf, &h), 0);
    ck_assert_int_eq(tether_token_cancel(sf.t, 0), 0);
    ck_assert(th_sem_wait_bounded(&sf.done, 2000));
    ck_assert_int_eq(atomic_load(&sf.rc), EBUSY);
    bool ran = false;
    ck_assert_int_eq(tether_hook_off(h, &ran), 0);
    ck_assert(ran);
    ck_assert_int_eq(tether_token_free(sf.t), 0);
    sem_destroy(&sf.done);
}
END_TEST

/* ------------------------------------------------------ many threads */

enum { CHURNERS = 4 };

static atomic_bool stop;

static void post_hook(void *arg)
{
    sem_post(arg);
}

/* Register, cancel, wait for the run, unregister, free: over and over. */
static void *hook_churn(void *arg)
{
    (void)arg;
    sem_t ran;
    sem_init(&ran, 0, 0);
    while (!atomic_load(&stop)) {
        tether_token *t = new_token(NULL, TETHER_NEVER);
        tether_hook *h;
        EXPECT(tether_hook_on_cancel(t, post_hook, &ran, &h) == 0, "on_cancel");
        EXPECT(tether_token_cancel(t, 0) == 0, "cancel");
        EXPECT(th_sem_wait_bounded(&ran, 4000), "the hook never ran");
        bool did = false;
        EXPECT(tether_hook_off(h, &did) == 0 && did, "off: ran %d", did);
        EXPECT(tether_token_free(t) == 0, "free");
    }
    sem_destroy(&ran);
    return NULL;
}

/* tether_trim releasing idle runners while other threads register hooks,
 * cancel and unregister: every hook runs once, nothing leaks or hangs. */
START_TEST(trim_races_hook_registration)
{
    th_baseline b = th_baseline_take();
    atomic_store(&stop, false);
    pthread_t th[CHURNERS];
    for (int i = 0; i < CHURNERS; i++)
        th[i] = thread_start(hook_churn, NULL);
    tether_time_t end = tether_deadline_after(tether_ms(300));
    int trims = 0;
    while (tether_now() < end) {
        tether_trim();
        trims++;
    }
    atomic_store(&stop, true);
    for (int i = 0; i < CHURNERS; i++)
        thread_join(th[i]);
    ck_assert_int_gt(trims, 0);
    ck_assert_int_eq(bad_seen(), 0);
    th_baseline_check(b);
}
END_TEST

/* An event hook that takes a snapshot, formats it and reads the request
 * context of the token it is given. */
static atomic_long seen_events;

static void on_joined(void *arg, tether_scope *s, const char *name, tether_token *t,
                      const tether_result *r)
{
    (void)arg, (void)s, (void)name, (void)r;
    tether_metrics_snapshot snap;
    EXPECT(tether_metrics_snapshot_take(&snap) == 0, "snapshot in a hook");
    size_t len = 0;
    EXPECT(tether_metrics_format(&snap, NULL, 0, &len) == ERANGE && len > 0, "format");
    tether_metrics_snapshot_release(&snap);
    char buf[TETHER_CONTEXT_MAX];
    int rc = tether_token_context(t, buf, sizeof buf);
    EXPECT(rc == 0 && strcmp(buf, "req") == 0, "context: %d", rc);
    EXPECT(tether_events_set(NULL) == EDEADLK, "events_set from a hook");
    atomic_fetch_add(&seen_events, 1);
}

static void *events_churn(void *arg)
{
    const tether_events *ev = arg;
    while (!atomic_load(&stop)) {
        EXPECT(tether_events_set(ev) == 0, "set");
        EXPECT(tether_events_set(NULL) == 0, "clear");
    }
    return NULL;
}

static void *scope_churn(void *arg)
{
    tether_token *root = arg;
    while (!atomic_load(&stop)) {
        tether_scope *s = open_scope(&(tether_scope_opts){ .parent = root, .name = "churn" });
        spawn_ok(s, return_zero, NULL, "c", NULL);
        join_and_free(s);
    }
    return NULL;
}

/* Registrations replaced while scopes are joined in other threads whose
 * hooks take snapshots and read the context. */
START_TEST(events_replaced_while_hooks_snapshot)
{
    th_baseline b = th_baseline_take();
    tether_token *root = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_set_context(root, "req"), 0);
    tether_events ev = { .scope_joined = on_joined };
    atomic_store(&stop, false);
    atomic_store(&seen_events, 0);
    pthread_t th[CHURNERS];
    th[0] = thread_start(events_churn, &ev);
    for (int i = 1; i < CHURNERS; i++)
        th[i] = thread_start(scope_churn, root);
    tether_sleep_for(tether_ms(300));
    atomic_store(&stop, true);
    for (int i = 0; i < CHURNERS; i++)
        thread_join(th[i]);
    ck_assert_int_eq(tether_events_set(&ev), 0);
    long before = atomic_load(&seen_events);
    join_and_free(open_scope(&(tether_scope_opts){ .parent = root }));
    ck_assert_int_eq(atomic_load(&seen_events), before + 1);
    ck_assert_int_eq(tether_events_set(NULL), 0);
    ck_assert_int_eq(bad_seen(), 0);
    ck_assert_int_eq(tether_token_free(root), 0);
    th_baseline_check(b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("adversarial_api");
    TCase *tc = tcase_create("errno");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, span_shutdown_failing_leaves_the_cancelers_errno);
    tcase_add_test(tc, span_begin_errors_leave_errno);
    suite_add_tcase(s, tc);
    tc = tcase_create("signals");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, metrics_switch_from_a_signal_handler);
    suite_add_tcase(s, tc);
    tc = tcase_create("threads");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, trim_races_hook_registration);
    tcase_add_test(tc, events_replaced_while_hooks_snapshot);
    suite_add_tcase(s, tc);
    tc = tcase_create("truncation");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, metrics_format_truncates_as_snprintf);
    suite_add_tcase(s, tc);
    tc = tcase_create("reentrancy");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, hook_freeing_its_own_token_gets_ebusy);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
