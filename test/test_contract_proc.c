/*
 * Contract matrix: child processes (tether_waitpid, tether_waitid,
 * tether_proc_spawn, tether_proc_pid, tether_proc_wait, tether_proc_run) and
 * what carries a deadline across process boundaries: TETHER_DEADLINE and
 * the process root (tether_process_deadline*), network budgets
 * (tether_budget_*).
 * One Check test per function, one row per documented error and per
 * difference from the raw call. Rows are listed in docs/contract-matrix.md.
 */
#define _GNU_SOURCE
#include "contract.h"

#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

static const ct_state states[] = { CT_NONE, CT_LIVE };
static const ct_state dead[] = { CT_CANCELED, CT_EXPIRED };

static char *const sleep_argv[] = { "sleep", "10", NULL };
static char *const true_argv[] = { "true", NULL };

/* A child that sleeps until killed. */
static pid_t sleeper(void)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        pause();
        _exit(0);
    }
    return pid;
}

static void reap(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

START_TEST(contract_tether_waitpid)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    char name[128];
    /* No children at all / not our child / bad options: as waitpid(2). */
    for (size_t i = 0; i < 2; i++) {
        const char *sn = ct_state_name(states[i]);
        int ws;
        CT_SIDE(&r, states[i], waitpid(-1, &ws, WNOHANG), tether_waitpid(-1, &ws, WNOHANG),
                "tether_waitpid/no children, WNOHANG/%s", sn);
        CT_SIDE(&r, states[i], waitpid(-1, &ws, 0), tether_waitpid(-1, &ws, 0),
                "tether_waitpid/no children/%s", sn);
        CT_SIDE(&r, states[i], waitpid(1, &ws, 0), tether_waitpid(1, &ws, 0),
                "tether_waitpid/pid 1 (not a child)/%s", sn);
        CT_SIDE(&r, states[i], waitpid(-1, &ws, 0x7000000), tether_waitpid(-1, &ws, 0x7000000),
                "tether_waitpid/bad options/%s", sn);
    }
    /* A running child with WNOHANG: 0 as waitpid(2). */
    pid_t pid = sleeper();
    for (size_t i = 0; i < 2; i++) {
        int ws;
        CT_SIDE(&r, states[i], waitpid(pid, &ws, WNOHANG), tether_waitpid(pid, &ws, WNOHANG),
                "tether_waitpid/running child, WNOHANG/%s", ct_state_name(states[i]));
    }
    /* Item 13: WNOHANG (and a blocking wait) under a dead token: fails. */
    for (size_t i = 0; i < 2; i++) {
        int opts[] = { WNOHANG, 0, WNOHANG | WUNTRACED };
        static const char *on[] = { "WNOHANG", "blocking", "WNOHANG|WUNTRACED" };
        for (int k = 0; k < 3; k++) {
            tether_token *t = ct_enter(dead[i], 0);
            int ws;
            errno = 0;
            pid_t got = tether_waitpid(pid, &ws, opts[k]);
            snprintf(name, sizeof name, "tether_waitpid/running child, %s/%s", on[k],
                     ct_state_name(dead[i]));
            CT_ERR(&r, name, got, ct_expected(dead[i]));
            errno = 0;
            got = tether_waitpid(-1, &ws, opts[k]);
            snprintf(name, sizeof name, "tether_waitpid/pid -1, %s/%s", on[k],
                     ct_state_name(dead[i]));
            CT_ERR(&r, name, got, ct_expected(dead[i]));
            ct_leave(t);
        }
    }
    /* The child is left alone by a cancellation: still waitable. */
    kill(pid, SIGKILL);
    int ws = 0;
    pid_t got = tether_waitpid(pid, &ws, 0);
    ct_row(&r, got == pid && WIFSIGNALED(ws),
           "tether_waitpid/after the refused calls: expected the child still waitable, got %d",
           got);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_tether_waitid)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    char name[128];
    for (size_t i = 0; i < 2; i++) {
        const char *sn = ct_state_name(states[i]);
        siginfo_t si;
        CT_SIDE(&r, states[i], waitid(P_ALL, 0, &si, WEXITED | WNOHANG),
                tether_waitid(P_ALL, 0, &si, WEXITED | WNOHANG),
                "tether_waitid/no children, WNOHANG/%s", sn);
        CT_SIDE(&r, states[i], waitid(P_PID, 1, &si, WEXITED),
                tether_waitid(P_PID, 1, &si, WEXITED), "tether_waitid/P_PID not a child/%s", sn);
        CT_SIDE(&r, states[i], waitid((idtype_t)77, 0, &si, WEXITED),
                tether_waitid((idtype_t)77, 0, &si, WEXITED), "tether_waitid/bad idtype/%s", sn);
        CT_SIDE(&r, states[i], waitid(P_ALL, 0, &si, 0), tether_waitid(P_ALL, 0, &si, 0),
                "tether_waitid/options 0/%s", sn);
        CT_SIDE(&r, states[i], waitid(P_PIDFD, 100000, &si, WEXITED),
                tether_waitid(P_PIDFD, 100000, &si, WEXITED), "tether_waitid/P_PIDFD bad fd/%s",
                sn);
    }
    pid_t pid = sleeper();
    for (size_t i = 0; i < 2; i++) {
        siginfo_t si = { 0 };
        si.si_pid = 12345;
        tether_token *t = ct_enter(states[i], 0);
        int rc = tether_waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG);
        ct_leave(t);
        ct_row(&r, rc == 0 && si.si_pid == 0,
               "tether_waitid/running child, WNOHANG/%s: expected 0 and si_pid 0, got %d %d",
               ct_state_name(states[i]), rc, si.si_pid);
    }
    /* Item 13 for waitid. */
    for (size_t i = 0; i < 2; i++) {
        int opts[] = { WEXITED | WNOHANG, WEXITED };
        static const char *on[] = { "WNOHANG", "blocking" };
        for (int k = 0; k < 2; k++) {
            tether_token *t = ct_enter(dead[i], 0);
            siginfo_t si;
            errno = 0;
            int rc = tether_waitid(P_PID, (id_t)pid, &si, opts[k]);
            snprintf(name, sizeof name, "tether_waitid/running child, %s/%s", on[k],
                     ct_state_name(dead[i]));
            CT_ERR(&r, name, rc, ct_expected(dead[i]));
            errno = 0;
            rc = tether_waitid(P_ALL, 0, &si, opts[k]);
            snprintf(name, sizeof name, "tether_waitid/P_ALL, %s/%s", on[k],
                     ct_state_name(dead[i]));
            CT_ERR(&r, name, rc, ct_expected(dead[i]));
            ct_leave(t);
        }
    }
    reap(pid);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

/* A child that has exited: a zombie (seen with WNOWAIT, which does not reap). */
static pid_t zombie(void)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(3);
    siginfo_t si;
    ck_assert_int_eq(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT), 0);
    return pid;
}

/* Unmapped wstatus / info: the kernel sees the pointer and says EFAULT (the
 * child is reaped either way, as by the raw call); never a crash. */
START_TEST(contract_wait_unmapped_status)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    char name[128];
    void *bad = ct_unmapped();
    for (size_t i = 0; i < 2; i++) {
        const char *sn = ct_state_name(states[i]);
        pid_t a = zombie(), b = zombie();
        CT_SIDE(&r, states[i], waitpid(a, bad, 0), tether_waitpid(b, bad, 0) == b ? a : -1,
                "tether_waitpid/unmapped wstatus, exited child/%s", sn);
        a = zombie();
        b = zombie();
        CT_SIDE(&r, states[i], waitpid(a, bad, WNOHANG),
                tether_waitpid(b, bad, WNOHANG) == b ? a : -1,
                "tether_waitpid/unmapped wstatus, exited child, WNOHANG/%s", sn);
        a = zombie();
        b = zombie();
        CT_SIDE(&r, states[i], waitid(P_PID, (id_t)a, bad, WEXITED),
                tether_waitid(P_PID, (id_t)b, bad, WEXITED),
                "tether_waitid/unmapped info, exited child/%s", sn);
        CT_SIDE(&r, states[i], waitpid(a, NULL, WNOHANG), tether_waitpid(b, NULL, WNOHANG),
                "tether_waitpid/after EFAULT: child reaped/%s", sn);
        a = zombie();
        b = zombie();
        CT_SIDE(&r, states[i], waitid(P_PID, (id_t)a, bad, WEXITED | WNOHANG),
                tether_waitid(P_PID, (id_t)b, bad, WEXITED | WNOHANG),
                "tether_waitid/unmapped info, WNOHANG/%s", sn);
        waitpid(a, NULL, WNOHANG);
        waitpid(b, NULL, WNOHANG);
    }
    /* tether_proc_wait stores the status through the kernel too. */
    for (size_t i = 0; i < 2; i++) {
        tether_proc *p;
        ck_assert_int_eq(tether_proc_spawn(&p, "/bin/true", true_argv, NULL), 0);
        tether_token *t = ct_enter(states[i], 0);
        int rc = tether_proc_wait(p, bad);
        ct_leave(t);
        snprintf(name, sizeof name, "tether_proc_wait/unmapped wstatus/%s",
                 ct_state_name(states[i]));
        CT_RC(&r, name, rc, EFAULT);
        ct_row(&r, waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD,
               "tether_proc_wait/unmapped wstatus, child reaped/%s: expected no zombie left",
               ct_state_name(states[i]));
    }
    munmap(bad, 4096);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_tether_proc_spawn)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    tether_proc *p = NULL;
    char name[128];
    CT_RC(&r, "tether_proc_spawn/out NULL", tether_proc_spawn(NULL, "/bin/true", true_argv, NULL),
          EINVAL);
    CT_RC(&r, "tether_proc_spawn/file NULL", tether_proc_spawn(&p, NULL, true_argv, NULL), EINVAL);
    CT_RC(&r, "tether_proc_spawn/argv NULL", tether_proc_spawn(&p, "/bin/true", NULL, NULL),
          EINVAL);
    int rc = tether_proc_spawn(&p, "/nonexistent/prog", true_argv, NULL);
    CT_RC(&r, "tether_proc_spawn/missing program", rc, ENOENT);
    if (rc == 0)
        tether_proc_wait(p, NULL);
    tether_proc_opts po = { .search_path = true };
    rc = tether_proc_spawn(&p, "no-such-program-tether", true_argv, &po);
    CT_RC(&r, "tether_proc_spawn/search_path missing", rc, ENOENT);
    if (rc == 0)
        tether_proc_wait(p, NULL);
    for (size_t i = 0; i < 2; i++) {
        tether_token *t = ct_enter(dead[i], 0);
        p = NULL;
        rc = tether_proc_spawn(&p, "/bin/true", true_argv, NULL);
        snprintf(name, sizeof name, "tether_proc_spawn/%s (nothing started)",
                 ct_state_name(dead[i]));
        CT_RC(&r, name, rc, ct_expected(dead[i]));
        ct_leave(t);
        if (rc == 0)
            tether_proc_wait(p, NULL);
    }
    /* The spawned child is ours alone: waitpid(-1, WNOHANG) finds no zombie
     * to steal only after tether_proc_wait reaped it. */
    rc = tether_proc_spawn(&p, "/bin/true", true_argv, NULL);
    ct_row(&r, rc == 0, "tether_proc_spawn/ok: expected 0, got %d", rc);
    if (rc == 0) {
        int ws = -1;
        rc = tether_proc_wait(p, &ws);
        ct_row(&r, rc == 0 && WIFEXITED(ws) && WEXITSTATUS(ws) == 0,
               "tether_proc_wait/exited on its own: expected 0, exit 0, got %d ws %#x", rc, ws);
        errno = 0;
        ct_row(&r, waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD,
               "tether_proc_wait/after return: expected no zombie left");
    }
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_tether_proc_pid_wait_run)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    ct_row(&r, tether_proc_pid(NULL) == -1, "tether_proc_pid/NULL: expected -1");
    CT_RC(&r, "tether_proc_wait/NULL", tether_proc_wait(NULL, NULL), EINVAL);
    int ws = -1;
    CT_RC(&r, "tether_proc_run/missing program",
          tether_proc_run("/nonexistent/prog", true_argv, NULL, &ws), ENOENT);
    CT_RC(&r, "tether_proc_run/file NULL", tether_proc_run(NULL, true_argv, NULL, &ws), EINVAL);
    int rc = tether_proc_run("/bin/true", true_argv, NULL, &ws);
    ct_row(&r, rc == 0 && WIFEXITED(ws), "tether_proc_run/true: expected 0 exited, got %d ws %#x",
           rc, ws);
    for (size_t i = 0; i < 2; i++) {
        tether_token *t = ct_enter(dead[i], 0);
        rc = tether_proc_run("/bin/true", true_argv, NULL, &ws);
        char name[96];
        snprintf(name, sizeof name, "tether_proc_run/%s", ct_state_name(dead[i]));
        CT_RC(&r, name, rc, ct_expected(dead[i]));
        ct_leave(t);
    }
    /* Canceled while waiting: SIGTERM, ECANCELED, reaped. */
    tether_proc *p;
    ck_assert_int_eq(tether_proc_spawn(&p, "/bin/sleep", sleep_argv, NULL), 0);
    pid_t pid = tether_proc_pid(p);
    ct_row(&r, pid > 0, "tether_proc_pid/live handle: expected the pid, got %d", pid);
    tether_token *t;
    ck_assert_int_eq(tether_token_new(&t, NULL, tether_deadline_after(tether_ms(20))), 0);
    ck_assert_int_eq(tether_token_enter(t), 0);
    ws = 0;
    rc = tether_proc_wait(p, &ws);
    ct_row(&r, rc == ETIMEDOUT && WIFSIGNALED(ws) && WTERMSIG(ws) == SIGTERM,
           "tether_proc_wait/deadline while waiting: expected ETIMEDOUT killed by SIGTERM, got %d "
           "ws %#x",
           rc, ws);
    ct_leave(t);
    errno = 0;
    ct_row(&r, kill(pid, 0) == -1 && errno == ESRCH,
           "tether_proc_wait/after a deadline kill: expected the child reaped");
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

/* Item 12, deterministic: the child has already exited on its own (a zombie,
 * seen with WNOWAIT, which does not reap) when the token is canceled and
 * tether_proc_wait is called: it exited on its own, so 0 and its status. */
START_TEST(contract_proc_wait_exited_before_cancel)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    for (size_t i = 0; i < 2; i++) {
        tether_proc *p;
        ck_assert_int_eq(tether_proc_spawn(&p, "/bin/true", true_argv, NULL), 0);
        siginfo_t si = { 0 };
        ck_assert_int_eq(waitid(P_PID, (id_t)tether_proc_pid(p), &si, WEXITED | WNOWAIT), 0);
        tether_token *t = ct_enter(dead[i], 0);
        int ws = -1;
        int rc = tether_proc_wait(p, &ws);
        ct_leave(t);
        ct_row(&r, rc == 0 && WIFEXITED(ws) && WEXITSTATUS(ws) == 0,
               "tether_proc_wait/child already exited, token %s: expected 0 with exit 0, got %d ws "
               "%#x",
               ct_state_name(dead[i]), rc, ws);
    }
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

/* Item 12: a child that exits on its own while a cancel lands at a random
 * instant around its exit. Whenever wstatus says it exited by itself, the
 * return must be 0, never ECANCELED. */
START_TEST(contract_proc_wait_exit_races_cancel)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    uint64_t seed = th_seed("contract_proc_wait_exit_races_cancel");
    const char *stress = getenv("TETHER_STRESS");
    int rounds = 400 * (stress && atoi(stress) > 0 ? atoi(stress) : 1);
    int bad = 0, exited = 0, killed = 0, first_bad = -1, first_rc = 0;
    for (int i = 0; i < rounds; i++) {
        tether_token *t;
        ck_assert_int_eq(tether_token_new(&t, NULL, TETHER_NEVER), 0);
        ck_assert_int_eq(tether_token_enter(t), 0);
        tether_proc *p;
        ck_assert_int_eq(tether_proc_spawn(&p, "/bin/true", true_argv, NULL), 0);
        /* Land the cancel 0..1.5 ms after spawn: /bin/true exits about then. */
        int64_t until = tether_now() + (int64_t)(th_rand(&seed) % 1500000);
        while (tether_now() < until) {
        }
        tether_token_cancel(t, 0);
        int ws = 0;
        int rc = tether_proc_wait(p, &ws);
        if (WIFEXITED(ws))
            exited++;
        else
            killed++;
        if (WIFEXITED(ws) && rc != 0) {
            if (!bad) {
                first_bad = i;
                first_rc = rc;
            }
            bad++;
        }
        ck_assert_int_eq(tether_token_leave(t), 0);
        ck_assert_int_eq(tether_token_free(t), 0);
    }
    fprintf(stderr,
            "contract_proc_wait_exit_races_cancel: %d rounds, %d exited, %d killed, %d wrong\n",
            rounds, exited, killed, bad);
    ct_row(&r, bad == 0,
           "tether_proc_wait/exit races a cancel: expected 0 whenever ws says exited, got %d wrong "
           "(first: round %d, %s)",
           bad, first_bad, first_rc ? strerrorname_np(first_rc) : "-");
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

/* What fn(arg) returns in a fork of this process: each Check test runs in a
 * fresh fork of a runner that never used tether, so the fork resolves the
 * process root (TETHER_DEADLINE) on its own. */
static int64_t in_fork(int64_t (*fn)(const char *arg), const char *arg)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int64_t v = fn(arg);
        _exit(write(fds[1], &v, sizeof v) == sizeof v ? 0 : 1);
    }
    close(fds[1]);
    int64_t v = -1;
    if (read(fds[0], &v, sizeof v) != sizeof v)
        v = -1;
    close(fds[0]);
    waitpid(pid, NULL, 0);
    return v;
}

static int64_t adopt(const char *value)
{
    if (value)
        setenv(TETHER_DEADLINE_ENV, value, 1);
    else
        unsetenv(TETHER_DEADLINE_ENV);
    return tether_process_deadline();
}

static int64_t ignore_then_adopt(const char *value)
{
    setenv(TETHER_DEADLINE_ENV, value, 1);
    int rc = tether_process_deadline_ignore();
    return rc ? -rc : tether_process_deadline();
}

static int64_t adopt_then_ignore(const char *value)
{
    setenv(TETHER_DEADLINE_ENV, value, 1);
    (void)tether_process_deadline();
    return tether_process_deadline_ignore();
}

static int64_t null_parent_deadline(const char *value)
{
    setenv(TETHER_DEADLINE_ENV, value, 1);
    tether_token *t;
    if (tether_token_new(&t, NULL, TETHER_NEVER) != 0)
        return -1;
    int64_t d = tether_token_deadline(t);
    tether_token_free(t);
    return d;
}

static int64_t check_no_token(const char *value)
{
    setenv(TETHER_DEADLINE_ENV, value, 1);
    return tether_check();
}

/* Start `sh -c script` with o, its stdout the write end of a pipe whose
 * read end *out receives. */
static int spawn_sh_out(const char *script, tether_proc_opts o, tether_proc **p, int *out)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    char *const argv[] = { "sh", "-c", th_unconst(script), NULL };
    o.file_actions = &fa;
    int rc = tether_proc_spawn(p, "/bin/sh", argv, &o);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    *out = fds[0];
    return rc;
}

/* The TETHER_DEADLINE a child of `envp` sees, as a number (-1: none). */
static int64_t child_value(char *const *envp, bool same_group, pid_t *pgid)
{
    tether_proc_opts o = { .envp = envp, .same_group = same_group };
    tether_proc *p;
    int fd;
    int rc = spawn_sh_out("echo ${TETHER_DEADLINE--1} $(cut -d' ' -f5 /proc/$$/stat)", o, &p, &fd);
    if (rc == 0)
        rc = tether_proc_wait(p, NULL);
    char buf[96] = { 0 };
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    long long v = -2;
    int g = 0;
    if (rc != 0 || n <= 0 || sscanf(buf, "%lld %d", &v, &g) != 2)
        return -2;
    *pgid = g;
    return v;
}

START_TEST(contract_process_deadline)
{
    ct_rows r = { .test = __func__ };
    char v[32];
    tether_time_t d = tether_deadline_after(tether_sec(60));
    snprintf(v, sizeof v, "%lld", (long long)d);
    int64_t got = in_fork(adopt, NULL);
    ct_row(&r, got == TETHER_NEVER, "tether_process_deadline/no variable: expected NEVER");
    got = in_fork(adopt, v);
    ct_row(&r, got == d, "tether_process_deadline/valid value: expected that deadline");
    got = in_fork(adopt, "12 ");
    ct_row(&r, got == TETHER_NEVER, "tether_process_deadline/malformed: expected NEVER (ignored)");
    got = in_fork(ignore_then_adopt, v);
    ct_row(&r, got == TETHER_NEVER,
           "tether_process_deadline_ignore/before first use: expected 0, nothing adopted");
    got = in_fork(adopt_then_ignore, v);
    ct_row(&r, got == EBUSY, "tether_process_deadline_ignore/after adoption: expected EBUSY");
    got = in_fork(null_parent_deadline, v);
    ct_row(&r, got == d,
           "tether_token_new/NULL parent, adopted deadline: expected under the process root");
    got = in_fork(check_no_token, "1");
    ct_row(&r, got == ETIMEDOUT,
           "tether_check/no token, adopted deadline passed: expected ETIMEDOUT");

    pid_t pg = 0;
    got = child_value(NULL, false, &pg);
    ct_row(&r, got == -1, "tether_proc_spawn/no deadline: expected no TETHER_DEADLINE");
    ct_row(&r, pg != 0 && pg != getpgrp(),
           "tether_proc_spawn/default: expected a process group of its own");
    got = child_value(NULL, true, &pg);
    ct_row(&r, pg == getpgrp(), "tether_proc_spawn/same_group: expected the caller's group");
    tether_token *t = new_token(NULL, d);
    enter(t);
    got = child_value(NULL, false, &pg);
    ct_row(&r, got == d, "tether_proc_spawn/token deadline: expected TETHER_DEADLINE=<it>");
    char early[48];
    snprintf(early, sizeof early, "TETHER_DEADLINE=%lld", (long long)(d - 5));
    char *const env[] = { early, early, NULL };
    got = child_value(env, false, &pg);
    ct_row(&r, got == d - 5, "tether_proc_spawn/envp has an earlier value: expected it kept");
    leave(t);
    tether_token_free(t);
    ct_done(&r);
}
END_TEST

/* A canceled child's group member (a grandchild) ends with it. */
START_TEST(contract_proc_wait_tree)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    tether_proc_opts o = { .grace_ns = tether_sec(5) };
    tether_token *t = ct_enter(CT_LIVE, 0);
    tether_proc *p;
    int fd;
    int rc = spawn_sh_out("sleep 60 & echo $!; wait", o, &p, &fd);
    ck_assert_int_eq(rc, 0);
    char buf[32] = { 0 };
    ck_assert_int_gt(read(fd, buf, sizeof buf - 1), 0);
    close(fd);
    pid_t gc = (pid_t)atoi(buf);
    ck_assert_int_gt(gc, 0);
    tether_token_cancel(t, 0);
    tether_time_t t0 = tether_now();
    rc = tether_proc_wait(p, NULL);
    int64_t took = tether_now() - t0;
    ct_row(&r, rc == ECANCELED,
           "tether_proc_wait/canceled, child leads a group: expected ECANCELED");
    bool gone = false;
    for (tether_time_t end = tether_now() + th_bound_ns(2000); !gone && tether_now() < end;) {
        char path[64], st[256] = { 0 };
        snprintf(path, sizeof path, "/proc/%d/stat", (int)gc);
        FILE *f = fopen(path, "r");
        gone = !f;
        if (f) {
            gone = fgets(st, sizeof st, f) && strstr(st, ") Z ");
            fclose(f);
        }
        if (!gone)
            usleep(2000);
    }
    ct_row(&r, gone && took < tether_sec(5),
           "tether_proc_wait/canceled, grandchild in the group: expected it ended by SIGTERM, "
           "before the grace period");
    ct_leave(t);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_tether_budget)
{
    ct_rows r = { .test = __func__ };
    char b[TETHER_BUDGET_SIZE];
    int rc = tether_budget_format_ns(1, NULL, 10);
    ct_row(&r, rc == EINVAL, "tether_budget_format_ns/buf NULL: expected EINVAL, got %d", rc);
    rc = tether_budget_format_ns(0, b, sizeof b);
    ct_row(&r, rc == ETIMEDOUT && strcmp(b, "0n") == 0,
           "tether_budget_format_ns/zero: expected ETIMEDOUT with \"0n\", got %d", rc);
    rc = tether_budget_format_ns(123456789, b, 6);
    ct_row(&r, rc == ERANGE && b[0] == '\0',
           "tether_budget_format_ns/buffer too small: expected ERANGE with \"\", got %d", rc);
    rc = tether_budget_format_ns(123456789, b, sizeof b);
    ct_row(
        &r, rc == 0 && strcmp(b, "123456u") == 0,
        "tether_budget_format_ns/123456789 ns: expected 0 with \"123456u\" (rounded down), got %d",
        rc);
    rc = tether_budget_format(tether_now(), NULL, 10);
    ct_row(&r, rc == EINVAL, "tether_budget_format/buf NULL: expected EINVAL, got %d", rc);
    rc = tether_budget_format(TETHER_NEVER, b, sizeof b);
    ct_row(&r, rc == ENOENT && b[0] == '\0',
           "tether_budget_format/NEVER: expected ENOENT with \"\", got %d", rc);
    rc = tether_budget_format(tether_now() - 1, b, sizeof b);
    ct_row(&r, rc == ETIMEDOUT && strcmp(b, "0n") == 0,
           "tether_budget_format/passed: expected ETIMEDOUT with \"0n\", got %d", rc);
    rc = tether_budget_format(tether_deadline_after(tether_sec(3600)), b, 3);
    ct_row(&r, rc == ERANGE && b[0] == '\0',
           "tether_budget_format/buffer too small: expected ERANGE with \"\", got %d", rc);

    tether_token *t = new_token(NULL, TETHER_NEVER);
    rc = tether_budget_format_token(NULL, b, sizeof b);
    ct_row(&r, rc == EINVAL, "tether_budget_format_token/t NULL: expected EINVAL, got %d", rc);
    rc = tether_budget_format_token(t, NULL, 10);
    ct_row(&r, rc == EINVAL, "tether_budget_format_token/buf NULL: expected EINVAL, got %d", rc);
    rc = tether_budget_format_token(t, b, sizeof b);
    ct_row(&r, rc == ENOENT, "tether_budget_format_token/no deadline: expected ENOENT, got %d", rc);
    tether_token *d = new_token(t, tether_deadline_after(tether_sec(3600)));
    rc = tether_budget_format_token(d, b, 3);
    ct_row(&r, rc == ERANGE, "tether_budget_format_token/buffer too small: expected ERANGE, got %d",
           rc);
    rc = tether_budget_format_token(d, b, sizeof b);
    ct_row(&r, rc == 0 && strchr("mS", b[strlen(b) - 1]) != NULL,
           "tether_budget_format_token/1 h left: expected 0 in ms or s, got %d \"%s\"", rc, b);
    tether_token_cancel(t, 0);
    rc = tether_budget_format_token(d, b, sizeof b);
    ct_row(&r, rc == ECANCELED && strcmp(b, "0n") == 0,
           "tether_budget_format_token/canceled: expected ECANCELED with \"0n\", got %d", rc);
    tether_token_free(d);
    tether_token_free(t);
    t = new_token(NULL, tether_now() - 1);
    rc = tether_budget_format_token(t, b, sizeof b);
    ct_row(&r, rc == ETIMEDOUT && strcmp(b, "0n") == 0,
           "tether_budget_format_token/expired: expected ETIMEDOUT with \"0n\", got %d", rc);
    tether_token_free(t);

    int64_t ns = 0;
    rc = tether_budget_parse_ns(NULL, 2, &ns);
    ct_row(&r, rc == EINVAL, "tether_budget_parse_ns/s NULL: expected EINVAL, got %d", rc);
    rc = tether_budget_parse_ns("1S", 2, NULL);
    ct_row(&r, rc == EINVAL, "tether_budget_parse_ns/out NULL: expected EINVAL, got %d", rc);
    rc = tether_budget_parse_ns("123456789S", 10, &ns);
    ct_row(&r, rc == EINVAL, "tether_budget_parse_ns/9 digits: expected EINVAL, got %d", rc);
    rc = tether_budget_parse_ns("-1S", 3, &ns);
    ct_row(&r, rc == EINVAL, "tether_budget_parse_ns/sign: expected EINVAL, got %d", rc);
    rc = tether_budget_parse_ns("1s", 2, &ns);
    ct_row(&r, rc == EINVAL, "tether_budget_parse_ns/unknown unit: expected EINVAL, got %d", rc);
    rc = tether_budget_parse_ns("99999999H", 9, &ns);
    ct_row(&r, rc == 0 && ns == INT64_MAX,
           "tether_budget_parse_ns/overflow: expected 0 with INT64_MAX, got %d", rc);
    tether_time_t dl = 0;
    rc = tether_budget_parse(NULL, 2, &dl);
    ct_row(&r, rc == EINVAL, "tether_budget_parse/s NULL: expected EINVAL, got %d", rc);
    rc = tether_budget_parse("1S", 2, NULL);
    ct_row(&r, rc == EINVAL, "tether_budget_parse/deadline NULL: expected EINVAL, got %d", rc);
    rc = tether_budget_parse("1 S", 3, &dl);
    ct_row(&r, rc == EINVAL && dl == 0,
           "tether_budget_parse/junk: expected EINVAL, deadline untouched, got %d", rc);
    tether_time_t before = tether_now();
    rc = tether_budget_parse("2S", 2, &dl);
    ct_row(&r, rc == 0 && dl >= before + tether_sec(2) && dl <= tether_now() + tether_sec(2),
           "tether_budget_parse/2S: expected now + 2 s, got %d", rc);
    rc = tether_budget_parse("99999999H", 9, &dl);
    ct_row(&r, rc == 0 && dl == TETHER_NEVER,
           "tether_budget_parse/overflow: expected 0 with NEVER, got %d", rc);
    ct_done(&r);
}
END_TEST

static Suite *contract_proc_suite(void)
{
    Suite *s = suite_create("contract_proc");
    TCase *tc = tcase_create("contract_proc");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, contract_tether_waitpid);
    tcase_add_test(tc, contract_tether_waitid);
    tcase_add_test(tc, contract_wait_unmapped_status);
    tcase_add_test(tc, contract_tether_proc_spawn);
    tcase_add_test(tc, contract_tether_proc_pid_wait_run);
    tcase_add_test(tc, contract_proc_wait_exited_before_cancel);
    tcase_add_test(tc, contract_proc_wait_exit_races_cancel);
    tcase_add_test(tc, contract_process_deadline);
    tcase_add_test(tc, contract_proc_wait_tree);
    tcase_add_test(tc, contract_tether_budget);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(contract_proc_suite());
}
