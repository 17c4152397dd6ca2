/*
 * Cancellable waits for child processes (waitpid, waitid with pidfds) and
 * child processes run under the current token: SIGTERM on cancellation,
 * SIGKILL after the grace period, always reaped — no zombie, no orphan.
 */
#define _GNU_SOURCE
#include "legacy.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>

/* No child of ours is left, dead or alive. */
static void assert_no_children(void)
{
    errno = 0;
    ck_assert_int_eq(waitpid(-1, NULL, WNOHANG), -1);
    ck_assert_int_eq(errno, ECHILD);
}

/* A child that exits with `code` after `ms` milliseconds (0: at once), or
 * waits forever with ms < 0. */
static pid_t child(int code, int ms)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (ms < 0)
            for (;;)
                pause();
        if (ms > 0)
            usleep((useconds_t)ms * 1000);
        _exit(code);
    }
    return pid;
}

static void kill_and_reap(pid_t pid)
{
    kill(pid, SIGKILL);
    ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
}

static pid_t wp_pid;
static int wp_status;
static int wp_options;
static ssize_t t_waitpid(void *a)
{
    (void)a;
    return tether_waitpid(wp_pid, &wp_status, wp_options);
}
static ssize_t r_waitpid(void *a)
{
    (void)a;
    return waitpid(wp_pid, &wp_status, wp_options);
}

START_TEST(waitpid_same_as_raw)
{
    th_baseline base = th_baseline_take();
    tether_token *tok = lu_token(TETHER_NEVER);
    ck_assert_int_eq(tether_token_enter(tok), 0);
    pid_t pid = child(7, 0);
    int st = 0;
    ck_assert_int_eq(tether_waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 7);
    errno = 0;
    ck_assert_int_eq(tether_waitpid(pid, &st, 0), -1); /* already reaped */
    ck_assert_int_eq(errno, ECHILD);
    pid = child(0, -1);
    ck_assert_int_eq(tether_waitpid(pid, &st, WNOHANG), 0);
    kill(pid, SIGKILL);
    ck_assert_int_eq(tether_waitpid(pid, &st, 0), pid);
    ck_assert(WIFSIGNALED(st));
    ck_assert_int_eq(WTERMSIG(st), SIGKILL);
    /* Any child (-1): the backoff path, still the right answer. */
    pid = child(3, 30);
    ck_assert_int_eq(tether_waitpid(-1, &st, 0), pid);
    ck_assert_int_eq(WEXITSTATUS(st), 3);
    errno = 0;
    ck_assert_int_eq(tether_waitpid(-1, &st, 0), -1);
    ck_assert_int_eq(errno, ECHILD);
    /* waitid on a pidfd and on a pid. */
    pid = child(5, 20);
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    ck_assert_int_ge(pidfd, 0);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    ck_assert_int_eq(tether_waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED), 0);
    ck_assert_int_eq(si.si_pid, pid);
    ck_assert_int_eq(si.si_code, CLD_EXITED);
    ck_assert_int_eq(si.si_status, 5);
    close(pidfd);
    pid = child(6, 20);
    memset(&si, 0, sizeof si);
    ck_assert_int_eq(tether_waitid(P_PID, (id_t)pid, &si, WEXITED), 0);
    ck_assert_int_eq(si.si_pid, pid);
    ck_assert_int_eq(si.si_status, 6);
    errno = 0;
    ck_assert_int_eq(tether_waitid(P_PID, (id_t)pid, &si, 0), -1);
    ck_assert_int_eq(errno, EINVAL); /* no event asked for, as waitid */
    ck_assert_int_eq(tether_token_leave(tok), 0);
    lu_free(tok);
    assert_no_children();
    th_baseline_check(base);
}
END_TEST

START_TEST(waitpid_cancel_leaves_child)
{
    th_baseline base = th_baseline_take();
    for (int any = 0; any < 2; any++) {
        pid_t pid = child(0, -1);
        wp_pid = any ? -1 : pid;
        wp_options = 0;
        /* before */
        tether_token *tok = lu_token(TETHER_NEVER);
        tether_token_cancel(tok, 0);
        ck_assert_int_eq(tether_token_enter(tok), 0);
        errno = 0;
        ck_assert_int_eq(t_waitpid(NULL), -1);
        ck_assert_int_eq(errno, ECANCELED);
        ck_assert_int_eq(tether_token_leave(tok), 0);
        lu_free(tok);
        /* while blocked */
        tok = lu_token(TETHER_NEVER);
        lu_thread th;
        lu_start_blocked(&th, tok, t_waitpid, NULL);
        tether_time_t t0 = tether_now();
        tether_token_cancel(tok, 0);
        lu_join(&th);
        ck_assert_int_eq(th.ret, -1);
        ck_assert_int_eq(th.err, ECANCELED);
        lu_assert_prompt(t0, th.ended, 500);
        ck_assert_int_eq(kill(pid, 0), 0); /* untouched, still ours to reap */
        kill_and_reap(pid);
        lu_free(tok);
    }
    assert_no_children();
    th_baseline_check(base);
}
END_TEST

START_TEST(waitpid_deadline_and_eintr)
{
    th_baseline base = th_baseline_take();
    pid_t pid = child(0, -1);
    wp_pid = pid;
    wp_options = 0;
    tether_time_t deadline = tether_deadline_after(tether_ms(50));
    tether_token *tok = lu_token(deadline);
    lu_thread th;
    lu_start(&th, tok, t_waitpid, NULL);
    lu_join(&th);
    ck_assert_int_eq(th.ret, -1);
    ck_assert_int_eq(th.err, ETIMEDOUT);
    lu_assert_not_early(th.ended, deadline);
    lu_free(tok);

    lu_eintr_handler();
    tok = lu_token(TETHER_NEVER);
    for (int tethered = 0; tethered < 2; tethered++) {
        lu_start(&th, tethered ? tok : NULL, tethered ? t_waitpid : r_waitpid, NULL);
        lu_interrupt(&th);
        ck_assert_int_eq(th.ret, -1);
        ck_assert_int_eq(th.err, EINTR);
    }
    lu_free(tok);
    kill_and_reap(pid);
    assert_no_children();
    th_baseline_check(base);
}
END_TEST

/* ------------------------------------------------------------ tether_proc */

static char *sh_argv(const char *script)
{
    return th_unconst(script);
}

static int run_sh(const char *script, const tether_proc_opts *opts, int *status)
{
    char *argv[] = { "sh", "-c", sh_argv(script), NULL };
    return tether_proc_run("/bin/sh", argv, opts, status);
}

START_TEST(proc_exits_normally)
{
    th_baseline base = th_baseline_take();
    int st = -1;
    ck_assert_int_eq(run_sh("exit 3", NULL, &st), 0); /* no token */
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 3);
    tether_token *tok = lu_token(TETHER_NEVER);
    ck_assert_int_eq(tether_token_enter(tok), 0);
    char *argv[] = { "true", NULL };
    tether_proc_opts o = { .search_path = true };
    ck_assert_int_eq(tether_proc_run("true", argv, &o, &st), 0);
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 0);
    ck_assert_int_eq(run_sh("sleep 0.05; exit 9", NULL, &st), 0);
    ck_assert_int_eq(WEXITSTATUS(st), 9);
    char *bad[] = { "nope", NULL };
    ck_assert_int_eq(tether_proc_run("/nonexistent/nope", bad, NULL, &st), ENOENT);
    ck_assert_int_eq(tether_check(), 0);
    ck_assert_int_eq(tether_token_leave(tok), 0);
    lu_free(tok);
    ck_assert_int_eq(tether_proc_run(NULL, argv, NULL, &st), EINVAL);
    ck_assert_int_eq(tether_proc_wait(NULL, &st), EINVAL);
    ck_assert_int_eq(tether_proc_pid(NULL), -1);
    assert_no_children();
    th_baseline_check(base);
}
END_TEST

START_TEST(proc_cancel_before_spawns_nothing)
{
    th_baseline base = th_baseline_take();
    tether_token *tok = lu_token(TETHER_NEVER);
    tether_token_cancel(tok, 0);
    ck_assert_int_eq(tether_token_enter(tok), 0);
    tether_proc *p = (tether_proc *)1;
    char *argv[] = { "true", NULL };
    ck_assert_int_eq(tether_proc_spawn(&p, "/bin/true", argv, NULL), ECANCELED);
    ck_assert_ptr_null(p);
    ck_assert_int_eq(tether_token_leave(tok), 0);
    lu_free(tok);
    assert_no_children();
    th_baseline_check(base);
}
END_TEST

static const char *pr_script;
static int pr_status;
static tether_proc_opts pr_opts;
static pid_t pr_pid;
static ssize_t t_proc(void *a)
{
    (void)a;
    char *argv[] = { "sh", "-c", sh_argv(pr_script), NULL };
    tether_proc *p;
    int rc = tether_proc_spawn(&p, "/bin/sh", argv, &pr_opts);
    if (rc)
        return rc;
    pr_pid = tether_proc_pid(p);
    return tether_proc_wait(p, &pr_status);
}

/* A child that dies of SIGTERM: terminated at once on cancel, reaped. */
START_TEST(proc_cancel_sigterm)
{
    th_baseline base = th_baseline_take();
    pr_script = "exec sleep 30";
    pr_opts = (tether_proc_opts){ .grace_ns = tether_sec(20) };
    tether_token *tok = lu_token(TETHER_NEVER);
    lu_thread th;
    lu_start_blocked(&th, tok, t_proc, NULL);
    tether_time_t t0 = tether_now();
    tether_token_cancel(tok, 0);
    lu_join(&th);
    ck_assert_int_eq(th.ret, ECANCELED);
    ck_assert(WIFSIGNALED(pr_status));
    ck_assert_int_eq(WTERMSIG(pr_status), SIGTERM);
    lu_assert_prompt(t0, th.ended, 1000); /* nowhere near the grace period */
    errno = 0;
    ck_assert_int_eq(kill(pr_pid, 0), -1); /* gone: reaped, not a zombie */
    ck_assert_int_eq(errno, ESRCH);
    lu_free(tok);
    assert_no_children();
    th_baseline_check(base);
}
END_TEST

/* A child that ignores SIGTERM: killed after the grace period, reaped. */
START_TEST(proc_ignores_sigterm_killed_after_grace)
{
    th_baseline base = th_baseline_take();
    /* The child says when its trap is set, on fd 3. */
    pr_script = "trap '' TERM; echo ready >&3; exec 3>&-; exec sleep 30";
    int ready[2];
    ck_assert_int_eq(pipe2(ready, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, ready[1], 3);
    int64_t grace = tether_ms(150);
    pr_opts = (tether_proc_opts){ .grace_ns = grace, .file_actions = &fa };
    tether_token *tok = lu_token(TETHER_NEVER);
    lu_thread th;
    lu_start(&th, tok, t_proc, NULL);
    char buf[8];
    ck_assert_int_eq(read(ready[0], buf, sizeof buf), 6);
    close(ready[0]);
    close(ready[1]);
    posix_spawn_file_actions_destroy(&fa);
    ck_assert_int_eq(th_wait_blocked(th.tid), 0);
    tether_time_t t0 = tether_now();
    tether_token_cancel(tok, 0);
    lu_join(&th);
    ck_assert_int_eq(th.ret, ECANCELED);
    ck_assert(WIFSIGNALED(pr_status));
    ck_assert_int_eq(WTERMSIG(pr_status), SIGKILL);
    ck_assert_int_ge(th.ended - t0, grace);
    lu_assert_prompt(t0 + grace, th.ended, 1000);
    errno = 0;
    ck_assert_int_eq(kill(pr_pid, 0), -1);
    ck_assert_int_eq(errno, ESRCH);
    lu_free(tok);
    assert_no_children();
    th_baseline_check(base);
}
END_TEST

/* A deadline: ETIMEDOUT, negative grace = SIGKILL at once. */
START_TEST(proc_deadline_kill_at_once)
{
    th_baseline base = th_baseline_take();
    pr_script = "trap '' TERM; exec sleep 30";
    pr_opts = (tether_proc_opts){ .grace_ns = -1 };
    tether_time_t deadline = tether_deadline_after(tether_ms(60));
    tether_token *tok = lu_token(deadline);
    lu_thread th;
    lu_start(&th, tok, t_proc, NULL);
    lu_join(&th);
    ck_assert_int_eq(th.ret, ETIMEDOUT);
    ck_assert(WIFSIGNALED(pr_status));
    ck_assert_int_eq(WTERMSIG(pr_status), SIGKILL);
    lu_assert_not_early(th.ended, deadline);
    lu_assert_prompt(deadline, th.ended, 1000);
    lu_free(tok);
    assert_no_children();
    th_baseline_check(base);
}
END_TEST

/* Signal handlers do not interrupt tether_proc_wait: it still reaps. */
START_TEST(proc_wait_rides_out_signals)
{
    th_baseline base = th_baseline_take();
    lu_eintr_handler();
    pr_script = "sleep 0.2; exit 4";
    pr_opts = (tether_proc_opts){ 0 };
    tether_token *tok = lu_token(TETHER_NEVER);
    lu_thread th;
    lu_start_blocked(&th, tok, t_proc, NULL);
    ck_assert_int_eq(pthread_kill(th.th, SIGUSR1), 0);
    lu_join(&th);
    ck_assert_int_eq(th.ret, 0);
    ck_assert(WIFEXITED(pr_status));
    ck_assert_int_eq(WEXITSTATUS(pr_status), 4);
    lu_free(tok);
    assert_no_children();
    th_baseline_check(base);
}
END_TEST

static Suite *process_suite(void)
{
    Suite *s = suite_create("process");
    TCase *tc = tcase_create("wait");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, waitpid_same_as_raw);
    tcase_add_test(tc, waitpid_cancel_leaves_child);
    tcase_add_test(tc, waitpid_deadline_and_eintr);
    suite_add_tcase(s, tc);

    tc = tcase_create("proc");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, proc_exits_normally);
    tcase_add_test(tc, proc_cancel_before_spawns_nothing);
    tcase_add_test(tc, proc_cancel_sigterm);
    tcase_add_test(tc, proc_ignores_sigterm_killed_after_grace);
    tcase_add_test(tc, proc_deadline_kill_at_once);
    tcase_add_test(tc, proc_wait_rides_out_signals);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(process_suite());
}
