/*
 * Deadlines across process boundaries: tether_proc_spawn writes
 * TETHER_DEADLINE into the child's environment (never loosening, replacing,
 * never touching the parent's own), and a process adopts the inherited
 * deadline as its root the first time it needs one: tether_check and the
 * drop-ins of threads without a token, tokens made with a NULL parent,
 * scopes without parent, pool jobs; not detached scopes, shields or
 * tether_current(). Malformed values are ignored; the opt-out works before
 * first use only; a fork child keeps the root.
 *
 * Each Check test runs in a fresh fork of a runner that never touched
 * tether, so each adopts (or not) on its own. This program is also its own
 * child: run with "--child MODE", it reports what it adopted.
 */
#define _GNU_SOURCE
#include "support.h"

#include <fcntl.h>
#include <semaphore.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void set_deadline_env(tether_time_t d)
{
    char v[32];
    snprintf(v, sizeof v, "%lld", (long long)d);
    ck_assert_int_eq(setenv(TETHER_DEADLINE_ENV, v, 1), 0);
}

/* Run `sh -c 'echo "${TETHER_DEADLINE-unset}"; env | grep -c ^TETHER_DEADLINE='`
 * with `envp` (NULL: environ) and read its two lines. */
static void child_sees(char *const *envp, char *value, size_t size, int *count)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    posix_spawn_file_actions_t fa;
    ck_assert_int_eq(posix_spawn_file_actions_init(&fa), 0);
    ck_assert_int_eq(posix_spawn_file_actions_adddup2(&fa, fds[1], 1), 0);
    ck_assert_int_eq(posix_spawn_file_actions_addclose(&fa, fds[0]), 0);
    char *const argv[] = { "sh", "-c",
                           "echo \"${TETHER_DEADLINE-unset}\"; env | grep -c '^TETHER_DEADLINE='",
                           NULL };
    tether_proc_opts o = { .envp = envp, .file_actions = &fa };
    int ws;
    ck_assert_int_eq(tether_proc_run("/bin/sh", argv, &o, &ws), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    char buf[128] = { 0 };
    size_t got = 0;
    ssize_t n;
    while ((n = read(fds[0], buf + got, sizeof buf - 1 - got)) > 0)
        got += (size_t)n;
    close(fds[0]);
    ck_assert_int_eq(sscanf(buf, "%63s %d", value, count), 2);
    (void)size;
}

START_TEST(spawn_passes_the_token_deadline)
{
    tether_time_t d = tether_deadline_after(tether_sec(60));
    tether_token *t = new_token(NULL, d);
    enter(t);
    char v[64];
    int count;
    child_sees(NULL, v, sizeof v, &count);
    ck_assert_int_eq(strtoll(v, NULL, 10), d);
    ck_assert_int_eq(count, 1);
    ck_assert_ptr_null(getenv(TETHER_DEADLINE_ENV)); /* the parent's own is untouched */
    leave(t);
    ck_assert_int_eq(tether_token_free(t), 0);
}
END_TEST

START_TEST(spawn_without_deadline_sets_nothing)
{
    tether_token *t = new_token(NULL, TETHER_NEVER);
    enter(t);
    char v[64];
    int count;
    child_sees(NULL, v, sizeof v, &count);
    ck_assert_str_eq(v, "unset");
    ck_assert_int_eq(count, 0);
    leave(t);
    child_sees(NULL, v, sizeof v, &count); /* no token at all */
    ck_assert_str_eq(v, "unset");
    ck_assert_int_eq(tether_token_free(t), 0);
}
END_TEST

/* The caller's envp: an inherited earlier value is kept, a later one
 * lowered, duplicates collapse into one entry, a malformed one is replaced
 * (or passed as it is when there is nothing to write). */
START_TEST(spawn_never_loosens_and_replaces)
{
    tether_time_t d = tether_deadline_after(tether_sec(60));
    tether_token *t = new_token(NULL, d);
    enter(t);
    char early[48], late[48];
    snprintf(early, sizeof early, "TETHER_DEADLINE=%lld", (long long)(d - tether_sec(10)));
    snprintf(late, sizeof late, "TETHER_DEADLINE=%lld", (long long)(d + tether_sec(10)));
    char v[64];
    int count;
    char *const env1[] = { "A=1", late, "B=2", NULL };
    child_sees(env1, v, sizeof v, &count);
    ck_assert_int_eq(strtoll(v, NULL, 10), d);
    ck_assert_int_eq(count, 1);
    char *const env2[] = { early, "A=1", late, early, NULL };
    child_sees(env2, v, sizeof v, &count);
    ck_assert_int_eq(strtoll(v, NULL, 10), d - tether_sec(10));
    ck_assert_int_eq(count, 1);
    char *const env3[] = { "TETHER_DEADLINE=soon", NULL };
    child_sees(env3, v, sizeof v, &count);
    ck_assert_int_eq(strtoll(v, NULL, 10), d);
    ck_assert_int_eq(count, 1);
    leave(t);
    child_sees(env3, v, sizeof v, &count); /* nothing to write: as it was */
    ck_assert_str_eq(v, "soon");
    child_sees(env1, v, sizeof v, &count); /* no token: the inherited value stays */
    ck_assert_int_eq(strtoll(v, NULL, 10), d + tether_sec(10));
    ck_assert_str_eq(env1[1], late); /* the caller's array is untouched */
    ck_assert_int_eq(tether_token_free(t), 0);
}
END_TEST

/* ------------------------------------------------------------ adoption */

static int64_t ms_since(tether_time_t t0)
{
    return (tether_now() - t0) / 1000000;
}

START_TEST(adopted_by_a_thread_without_token)
{
    tether_time_t d = tether_deadline_after(tether_ms(300));
    set_deadline_env(d);
    ck_assert_int_eq(tether_check(), 0); /* the first use adopts */
    ck_assert_int_eq(tether_process_deadline(), d);
    ck_assert_ptr_null(tether_current());
    tether_time_t t0 = tether_now();
    ck_assert_int_eq(tether_sleep_for(tether_sec(30)), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_ge(tether_now(), d);
    ck_assert_int_lt(ms_since(t0), 300 + th_bound_ns(2000) / 1000000);
    ck_assert_int_eq(tether_check(), ETIMEDOUT);
    ck_assert_int_eq((tether_check)(), ETIMEDOUT);
    char buf[8];
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    ck_assert_int_eq(tether_read(fds[0], buf, sizeof buf), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    close(fds[0]);
    close(fds[1]);
}
END_TEST

/* A count of runs and a semaphore posted at each. */
struct runs {
    atomic_int n;
    sem_t done;
};

static void count_cb(void *arg)
{
    struct runs *r = arg;
    atomic_fetch_add(&r->n, 1);
    sem_post(&r->done);
}

/* The root's deadline fires on the timer thread, nobody checking: a
 * callback on a token made with a NULL parent runs at it. */
START_TEST(root_deadline_fires_by_the_timer)
{
    tether_time_t d = tether_deadline_after(tether_ms(200));
    set_deadline_env(d);
    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_deadline(t), d); /* under the root */
    struct runs ran = { .n = 0 };
    sem_init(&ran.done, 0, 0);
    tether_callback *cb;
    ck_assert_int_eq(tether_token_on_cancel(t, count_cb, &ran, &cb), 0);
    ck_assert(th_sem_wait_bounded(&ran.done, 2200));
    ck_assert_int_eq(atomic_load(&ran.n), 1);
    ck_assert_int_ge(tether_now(), d);
    ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_PARENT);
    ck_assert_int_eq(tether_token_root_cause(t), TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(tether_token_off_cancel(cb, NULL), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    sem_destroy(&ran.done);
}
END_TEST

static int job_fn(void *arg)
{
    *(tether_time_t *)arg = tether_token_deadline(tether_current());
    return 0;
}

static int child_fn(void *arg)
{
    return job_fn(arg);
}

/* Who is under the root and who is not. */
START_TEST(which_calls_see_the_root)
{
    tether_time_t d = tether_deadline_after(tether_sec(60));
    set_deadline_env(d);
    tether_token *t = new_token(NULL, tether_deadline_after(tether_sec(120)));
    ck_assert_int_eq(tether_token_deadline(t), d); /* capped by the root */
    ck_assert_int_eq(tether_token_free(t), 0);

    tether_time_t seen = 0;
    tether_job_result r;
    ck_assert_int_eq(tether_job_run(NULL, TETHER_NEVER, job_fn, &seen, &r), 0);
    ck_assert_int_eq(seen, d);
    bool fired;
    seen = 0;
    ck_assert_int_eq(tether_with_timeout(tether_sec(120), job_fn, &seen, &fired), 0);
    ck_assert_int_eq(seen, d);

    tether_scope *s = open_scope(NULL);
    seen = 0;
    spawn_ok(s, child_fn, &seen, "under", NULL);
    join_and_free(s);
    ck_assert_int_eq(seen, d);

    tether_scope_opts det = { .detached = true };
    s = open_scope(&det);
    seen = 0;
    spawn_ok(s, child_fn, &seen, "detached", NULL);
    join_and_free(s);
    ck_assert_int_eq(seen, TETHER_NEVER);

    tether_shield *sh;
    ck_assert_int_eq(tether_shield_enter(&sh, TETHER_NEVER), 0);
    ck_assert_int_eq(tether_token_deadline(tether_current()), TETHER_NEVER);
    ck_assert_int_eq(tether_shield_leave(sh), 0);
    ck_assert_ptr_null(tether_current());

    char b[TETHER_BUDGET_SIZE];
    ck_assert_int_eq(tether_budget_format(tether_process_deadline(), b, sizeof b), 0);
}
END_TEST

/* A cancel hook is clean-up: it runs outside the process root, so its own
 * tether calls work after the inherited deadline passed. */
static void hook_fn(void *arg)
{
    struct runs *out = arg;
    tether_token *t;
    int ok = tether_sleep_for(tether_ms(1)) == 0 && tether_check() == 0 &&
             tether_token_new(&t, NULL, TETHER_NEVER) == 0;
    if (ok) {
        ok = tether_token_deadline(t) == TETHER_NEVER && tether_token_check(t) == 0;
        tether_token_free(t);
    }
    atomic_store(&out->n, ok ? 1 : 2);
    sem_post(&out->done);
}

START_TEST(hooks_run_outside_the_root)
{
    tether_time_t d = tether_now() - 1; /* already passed */
    set_deadline_env(d);
    ck_assert_int_eq(tether_check(), ETIMEDOUT);
    tether_token *t = new_token(NULL, TETHER_NEVER); /* born canceled under the root */
    ck_assert_int_eq(tether_token_check(t), ETIMEDOUT);
    struct runs out = { .n = 0 };
    sem_init(&out.done, 0, 0);
    tether_hook *h;
    ck_assert_int_eq(tether_hook_on_cancel(t, hook_fn, &out, &h), 0);
    ck_assert(th_sem_wait_bounded(&out.done, 2000));
    ck_assert_int_eq(atomic_load(&out.n), 1);
    ck_assert_int_eq(tether_process_deadline(), d); /* the same, asked from any thread */
    ck_assert_int_eq(tether_hook_off(h, NULL), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    sem_destroy(&out.done);
}
END_TEST

START_TEST(opt_out_before_first_use)
{
    set_deadline_env(tether_now() - 1); /* already passed */
    ck_assert_int_eq(tether_process_deadline_ignore(), 0);
    ck_assert_int_eq(tether_process_deadline_ignore(), 0); /* again: still fine */
    ck_assert_int_eq(tether_process_deadline(), TETHER_NEVER);
    ck_assert_int_eq(tether_check(), 0);
    ck_assert_int_eq(tether_sleep_for(tether_ms(1)), 0);
    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_check(t), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
}
END_TEST

START_TEST(opt_out_after_adoption_is_refused)
{
    tether_time_t d = tether_deadline_after(tether_sec(60));
    set_deadline_env(d);
    ck_assert_int_eq(tether_process_deadline(), d);
    ck_assert_int_eq(tether_process_deadline_ignore(), EBUSY);
    ck_assert_int_eq(tether_process_deadline(), d);
}
END_TEST

START_TEST(no_variable_no_root)
{
    unsetenv(TETHER_DEADLINE_ENV);
    ck_assert_int_eq(tether_check(), 0);
    ck_assert_int_eq(tether_process_deadline(), TETHER_NEVER);
    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_deadline(t), TETHER_NEVER);
    ck_assert_int_eq(tether_token_free(t), 0);
    ck_assert_int_eq(tether_process_deadline_ignore(), 0);
}
END_TEST

/* What a fresh process adopts from `value`: fork, set, ask. */
static tether_time_t adopted_from(const char *value)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        setenv(TETHER_DEADLINE_ENV, value, 1);
        tether_time_t d = tether_process_deadline();
        _exit(write(fds[1], &d, sizeof d) == sizeof d ? 0 : 1);
    }
    close(fds[1]);
    tether_time_t d = 0;
    ck_assert_int_eq(read(fds[0], &d, sizeof d), (ssize_t)sizeof d);
    close(fds[0]);
    int ws;
    ck_assert_int_eq(waitpid(pid, &ws, 0), pid);
    ck_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    return d;
}

START_TEST(malformed_values_are_ignored)
{
    const char *bad[] = { "",
                          " ",
                          "-1",
                          "+5",
                          " 5",
                          "5 ",
                          "5s",
                          "0x10",
                          "1e9",
                          "12.5",
                          "9223372036854775808", /* INT64_MAX + 1 */
                          "99999999999999999999",
                          "00000000000000000001", /* 20 digits */
                          "9223372036854775807",  /* INT64_MAX: TETHER_NEVER */
                          "five" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        ck_assert_msg(adopted_from(bad[i]) == TETHER_NEVER, "\"%s\" adopted", bad[i]);
    ck_assert_int_eq(adopted_from("0"), 0); /* valid: long passed */
    ck_assert_int_eq(adopted_from("0000000000000000042"), 42);
    ck_assert_int_eq(adopted_from("9223372036854775806"), INT64_MAX - 1);
    /* Seeded random strings: adopted exactly when all digits and in range. */
    uint64_t st = th_seed(__func__);
    const char alphabet[] = "0123456789 -+x.";
    for (int i = 0; i < 150; i++) {
        char v[24];
        size_t len = (size_t)(th_rand(&st) % 22);
        bool digits = len > 0 && len <= 19;
        for (size_t k = 0; k < len; k++) {
            v[k] = (th_rand(&st) % 5) ? (char)('0' + th_rand(&st) % 10)
                                      : alphabet[th_rand(&st) % (sizeof alphabet - 1)];
            digits = digits && v[k] >= '0' && v[k] <= '9';
        }
        v[len] = '\0';
        errno = 0;
        long long want = digits ? strtoll(v, NULL, 10) : 0;
        bool ok = digits && errno == 0 && want != INT64_MAX;
        tether_time_t got = adopted_from(v);
        ck_assert_msg(ok ? got == want : got == TETHER_NEVER, "\"%s\": got %lld", v,
                      (long long)got);
    }
}
END_TEST

/* Many threads' first uses race: one root, the same deadline for all. */
static void *first_use(void *arg)
{
    tether_token *t;
    ck_assert_int_eq(tether_token_new(&t, NULL, TETHER_NEVER), 0);
    *(tether_time_t *)arg = tether_token_deadline(t);
    ck_assert_int_eq(tether_check(), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    return NULL;
}

START_TEST(first_uses_race)
{
    tether_time_t d = tether_deadline_after(tether_sec(60));
    set_deadline_env(d);
    enum { N = 8 };
    pthread_t th[N];
    tether_time_t seen[N];
    for (int i = 0; i < N; i++)
        th[i] = thread_start(first_use, &seen[i]);
    for (int i = 0; i < N; i++) {
        thread_join(th[i]);
        ck_assert_int_eq(seen[i], d);
    }
    ck_assert_int_eq(tether_process_deadline(), d);
}
END_TEST

START_TEST(fork_child_keeps_the_root)
{
    tether_time_t d = tether_deadline_after(tether_ms(300));
    set_deadline_env(d);
    ck_assert_int_eq(tether_process_deadline(), d);
    ck_assert_int_eq(unsetenv(TETHER_DEADLINE_ENV), 0); /* the child does not read it again */
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        bool ok = tether_process_deadline() == d;
        ok = ok && tether_sleep_for(tether_sec(30)) == -1 && errno == ETIMEDOUT;
        ok = ok && tether_now() >= d;
        _exit(ok ? 0 : 1);
    }
    int ws;
    ck_assert_int_eq(waitpid(pid, &ws, 0), pid);
    ck_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
}
END_TEST

/* End to end: a child that uses tether stops at its parent's deadline with
 * its own calls, and passes the same deadline on to its own child. */
static int child_main(void)
{
    tether_time_t d = tether_process_deadline();
    char *const argv[] = { "sh", "-c", "exit $(( ${TETHER_DEADLINE-0} % 100 ))", NULL };
    int ws = 0;
    if (tether_proc_run("/bin/sh", argv, NULL, &ws) != 0 || !WIFEXITED(ws) ||
        WEXITSTATUS(ws) != (int)(d % 100))
        return 3; /* the grandchild saw another value */
    if (tether_sleep_for(tether_sec(60)) == 0 || errno != ETIMEDOUT)
        return 4;
    return tether_now() >= d ? 0 : 5;
}

START_TEST(child_program_stops_at_parent_deadline)
{
    tether_time_t d = tether_deadline_after(tether_ms(400));
    char *const argv[] = { "test_proc_deadline", "--child", NULL };
    int ws = th_spawn_self_by(d, argv);
    ck_assert(WIFEXITED(ws));
    ck_assert_int_eq(WEXITSTATUS(ws), 0);
    ck_assert_int_ge(tether_now(), d);
    ck_assert_int_lt(tether_now(), d + th_bound_ns(3000));
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("proc_deadline");
    TCase *tc = tcase_create("spawn");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, spawn_passes_the_token_deadline);
    tcase_add_test(tc, spawn_without_deadline_sets_nothing);
    tcase_add_test(tc, spawn_never_loosens_and_replaces);
    suite_add_tcase(s, tc);

    tc = tcase_create("adopt");
    tcase_set_timeout(tc, th_timeout_s(30));
    tcase_add_test(tc, adopted_by_a_thread_without_token);
    tcase_add_test(tc, root_deadline_fires_by_the_timer);
    tcase_add_test(tc, which_calls_see_the_root);
    tcase_add_test(tc, hooks_run_outside_the_root);
    tcase_add_test(tc, opt_out_before_first_use);
    tcase_add_test(tc, opt_out_after_adoption_is_refused);
    tcase_add_test(tc, no_variable_no_root);
    tcase_add_test(tc, malformed_values_are_ignored);
    tcase_add_test(tc, first_uses_race);
    tcase_add_test(tc, fork_child_keeps_the_root);
    tcase_add_test(tc, child_program_stops_at_parent_deadline);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--child") == 0)
        return child_main();
    unsetenv(TETHER_DEADLINE_ENV); /* the tests set their own */
    return th_run_suite(suite());
}
