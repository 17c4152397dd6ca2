/*
 * Child process trees: a canceled tether_proc ends the whole process group
 * its child leads (SIGTERM, the grace period, SIGKILL), also when the
 * direct child has already exited; the direct child is always reaped; the
 * same_group opt-out signals the child alone. The grandchild is a `sleep`
 * started by a shell child, its pid written to a file. This process makes
 * itself a child subreaper, as an init would be, so that it can see the
 * grandchild die and reap it: no zombie is left in /proc.
 */
#define _GNU_SOURCE
#include "support.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static char pidfile[64];

static void setup(void)
{
    ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
    snprintf(pidfile, sizeof pidfile, "/tmp/tether_tree_%d", (int)getpid());
    unlink(pidfile);
}

static void teardown(void)
{
    unlink(pidfile);
}

/* The grandchild's pid, once the shell has written it to `path` (bounded
 * wait). */
static pid_t grandchild_pid_in(const char *path)
{
    tether_time_t end = tether_now() + th_bound_ns(5000);
    while (tether_now() < end) {
        FILE *f = fopen(path, "r");
        int pid = 0;
        if (f) {
            int n = fscanf(f, "%d", &pid);
            fclose(f);
            if (n == 1 && pid > 0)
                return pid;
        }
        usleep(2000);
    }
    ck_abort_msg("the shell never wrote the grandchild's pid");
    return -1;
}

static pid_t grandchild_pid(void)
{
    return grandchild_pid_in(pidfile);
}

/* The state letter of /proc/<pid>/stat, or 0 when the process is gone. */
static char proc_state(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' ? p[2] : '?';
}

/* Whether pid (a grandchild, ours as subreaper once orphaned) is dead
 * within `ms`: reaped here, or gone. Leaves no zombie behind. */
static bool dies_within(pid_t pid, int64_t ms)
{
    tether_time_t end = tether_now() + th_bound_ns(ms);
    do {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return proc_state(pid) == 0;
        if (proc_state(pid) == 0)
            return true;
        usleep(2000);
    } while (tether_now() < end);
    return false;
}

/* Whether pid runs the program `sleep` (its /proc comm). */
static bool runs_sleep(pid_t pid)
{
    char path[64], comm[32] = { 0 };
    snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    bool yes = fgets(comm, sizeof comm, f) && strcmp(comm, "sleep\n") == 0;
    fclose(f);
    return yes;
}

static void kill_grandchild(pid_t pid)
{
    kill(pid, SIGKILL);
    ck_assert(dies_within(pid, 5000));
}

static tether_proc *spawn_sh(const char *script, const tether_proc_opts *o)
{
    char *const argv[] = { "sh", "-c", th_unconst(script), "sh", pidfile, NULL };
    tether_proc *p;
    ck_assert_int_eq(tether_proc_spawn(&p, "/bin/sh", argv, o), 0);
    return p;
}

/* A shell that starts `sleep 60` in the background, writes its pid and
 * waits for it. */
static const char WAITS[] = "sleep 60 & echo $! > \"$1\"; wait";

START_TEST(cancel_ends_the_grandchild)
{
    tether_token *t = new_token(NULL, TETHER_NEVER);
    enter(t);
    tether_proc_opts o = { .grace_ns = tether_sec(3) };
    tether_proc *p = spawn_sh(WAITS, &o);
    pid_t child = tether_proc_pid(p);
    ck_assert_int_eq(getpgid(child), child); /* a group of its own */
    pid_t gc = grandchild_pid();
    ck_assert_int_eq(getpgid(gc), child);
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    tether_time_t t0 = tether_now();
    int ws;
    ck_assert_int_eq(tether_proc_wait(p, &ws), ECANCELED);
    int64_t took = tether_now() - t0;
    ck_assert(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGTERM);
    /* SIGTERM ends both at once: no grace period spent. */
    ck_assert_int_lt(took, tether_sec(3));
    ck_assert(dies_within(gc, 2000));
    ck_assert_int_eq(proc_state(child), 0); /* reaped */
    leave(t);
    ck_assert_int_eq(tether_token_free(t), 0);
}
END_TEST

/* A grandchild that ignores SIGTERM is killed after the grace period. */
START_TEST(sigterm_ignored_then_killed_after_grace)
{
    tether_token *t = new_token(NULL, tether_deadline_after(tether_ms(100)));
    enter(t);
    tether_proc_opts o = { .grace_ns = tether_ms(300) };
    tether_proc *p = spawn_sh(
        "trap '' TERM; sh -c 'trap \"\" TERM; exec sleep 60' & echo $! > \"$1\"; wait", &o);
    pid_t child = tether_proc_pid(p);
    pid_t gc = grandchild_pid();
    int ws;
    tether_time_t t0 = tether_now();
    ck_assert_int_eq(tether_proc_wait(p, &ws), ETIMEDOUT);
    int64_t took = tether_now() - t0;
    ck_assert(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
    ck_assert_int_ge(took, tether_ms(300)); /* the whole grace period */
    ck_assert_int_lt(took, tether_ms(400) + th_bound_ns(2000));
    ck_assert(dies_within(gc, 2000));
    ck_assert_int_eq(proc_state(child), 0);
    leave(t);
    ck_assert_int_eq(tether_token_free(t), 0);
}
END_TEST

/* The child dies of SIGTERM but its grandchild ignores it: the grace period
 * waits for the member that is left (found in /proc), then SIGKILL to the
 * group ends it. */
START_TEST(member_ignoring_sigterm_outlives_the_child)
{
    tether_token *t = new_token(NULL, TETHER_NEVER);
    enter(t);
    tether_proc_opts o = { .grace_ns = tether_ms(400) };
    tether_proc *p = spawn_sh("sh -c 'trap \"\" TERM; exec sleep 60' & echo $! > \"$1\"; wait", &o);
    pid_t gc = grandchild_pid();
    /* The trap is set once the inner shell has exec'ed sleep. */
    tether_time_t end = tether_now() + th_bound_ns(5000);
    while (!runs_sleep(gc) && tether_now() < end)
        usleep(2000);
    ck_assert(runs_sleep(gc));
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    tether_time_t t0 = tether_now();
    int ws;
    ck_assert_int_eq(tether_proc_wait(p, &ws), ECANCELED);
    int64_t took = tether_now() - t0;
    ck_assert(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGTERM);
    ck_assert_int_ge(took, tether_ms(400));
    ck_assert_int_lt(took, tether_ms(400) + th_bound_ns(2000));
    ck_assert(dies_within(gc, 2000));
    leave(t);
    ck_assert_int_eq(tether_token_free(t), 0);
}
END_TEST

/* The direct child already exited, its group's other member remains: a
 * cancel still ends it; the child's own exit is what is reported. */
START_TEST(members_left_after_the_child_exited)
{
    tether_token *t = new_token(NULL, TETHER_NEVER);
    enter(t);
    tether_proc *p = spawn_sh("sleep 60 & echo $! > \"$1\"; exit 3", NULL);
    pid_t child = tether_proc_pid(p);
    pid_t gc = grandchild_pid();
    /* Wait for the shell's exit without reaping it. */
    siginfo_t si;
    ck_assert_int_eq(waitid(P_PID, (id_t)child, &si, WEXITED | WNOWAIT), 0);
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    int ws;
    ck_assert_int_eq(tether_proc_wait(p, &ws), 0);
    ck_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 3);
    ck_assert(dies_within(gc, 2000));
    ck_assert_int_eq(proc_state(child), 0);
    leave(t);
    ck_assert_int_eq(tether_token_free(t), 0);
}
END_TEST

/* Without a cancellation, a child's exit leaves the group alone. */
START_TEST(no_cancel_leaves_members_alone)
{
    tether_proc *p = spawn_sh("sleep 60 & echo $! > \"$1\"; exit 0", NULL);
    pid_t gc = grandchild_pid();
    int ws;
    ck_assert_int_eq(tether_proc_wait(p, &ws), 0);
    ck_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    usleep(100000);
    char st = proc_state(gc);
    ck_assert(st != 0 && st != 'Z');
    kill_grandchild(gc);
}
END_TEST

/* same_group: the child stays in our group, a cancel signals it alone. */
START_TEST(same_group_signals_the_child_alone)
{
    tether_token *t = new_token(NULL, TETHER_NEVER);
    enter(t);
    tether_proc_opts o = { .same_group = true };
    tether_proc *p = spawn_sh(WAITS, &o);
    pid_t child = tether_proc_pid(p);
    ck_assert_int_eq(getpgid(child), getpgrp());
    pid_t gc = grandchild_pid();
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    int ws;
    ck_assert_int_eq(tether_proc_wait(p, &ws), ECANCELED);
    usleep(100000);
    char st = proc_state(gc);
    ck_assert(st != 0 && st != 'Z'); /* not reached, as documented */
    kill_grandchild(gc);
    leave(t);
    ck_assert_int_eq(tether_token_free(t), 0);
}
END_TEST

/* The caller's attributes are honoured: a session of its own (SETSID)
 * is a group of its own, ended as a whole; the caller's attr is not
 * changed. */
START_TEST(caller_attr_setsid_is_a_group)
{
    posix_spawnattr_t a;
    ck_assert_int_eq(posix_spawnattr_init(&a), 0);
    ck_assert_int_eq(posix_spawnattr_setflags(&a, POSIX_SPAWN_SETSID), 0);
    tether_token *t = new_token(NULL, TETHER_NEVER);
    enter(t);
    tether_proc_opts o = { .attr = &a };
    tether_proc *p = spawn_sh(WAITS, &o);
    pid_t child = tether_proc_pid(p);
    pid_t gc = grandchild_pid();
    ck_assert_int_eq(getsid(child), child);
    short flags = 0;
    ck_assert_int_eq(posix_spawnattr_getflags(&a, &flags), 0);
    ck_assert_int_eq(flags, POSIX_SPAWN_SETSID);
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ck_assert_int_eq(tether_proc_wait(p, NULL), ECANCELED);
    ck_assert(dies_within(gc, 2000));
    leave(t);
    ck_assert_int_eq(tether_token_free(t), 0);
    posix_spawnattr_destroy(&a);
}
END_TEST

/* grace < 0: SIGKILL to the group at once. */
START_TEST(negative_grace_kills_the_group_at_once)
{
    tether_token *t = new_token(NULL, TETHER_NEVER);
    enter(t);
    tether_proc_opts o = { .grace_ns = -1 };
    tether_proc *p = spawn_sh(WAITS, &o);
    pid_t gc = grandchild_pid();
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    int ws;
    ck_assert_int_eq(tether_proc_wait(p, &ws), ECANCELED);
    ck_assert(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
    ck_assert(dies_within(gc, 2000));
    leave(t);
    ck_assert_int_eq(tether_token_free(t), 0);
}
END_TEST

/* Many trees canceled at once from another thread while their waits run:
 * every grandchild dies, every child is reaped. */
struct tree_job {
    char file[80];
    pid_t gc;
    int rc;
};

static int run_tree(void *arg)
{
    struct tree_job *j = arg;
    char *const argv[] = { "sh", "-c", th_unconst(WAITS), "sh", j->file, NULL };
    tether_proc_opts o = { .grace_ns = tether_sec(2) };
    j->rc = tether_proc_run("/bin/sh", argv, &o, NULL);
    return 0;
}

START_TEST(many_trees_canceled_together)
{
    enum { N = 6 };
    struct tree_job jobs[N];
    tether_scope_opts so = { .policy = TETHER_POLICY_SUPERVISOR };
    tether_scope *s = open_scope(&so);
    for (int i = 0; i < N; i++) {
        snprintf(jobs[i].file, sizeof jobs[i].file, "%s.%d", pidfile, i);
        unlink(jobs[i].file);
        spawn_ok(s, run_tree, &jobs[i], "tree", NULL);
    }
    for (int i = 0; i < N; i++)
        jobs[i].gc = grandchild_pid_in(jobs[i].file);
    ck_assert_int_eq(tether_scope_cancel(s), 0);
    join_and_free(s);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(jobs[i].rc, ECANCELED);
        ck_assert(dies_within(jobs[i].gc, 2000));
        unlink(jobs[i].file);
    }
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("proc_tree");
    TCase *tc = tcase_create("tree");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, th_timeout_s(30));
    tcase_add_test(tc, cancel_ends_the_grandchild);
    tcase_add_test(tc, sigterm_ignored_then_killed_after_grace);
    tcase_add_test(tc, member_ignoring_sigterm_outlives_the_child);
    tcase_add_test(tc, members_left_after_the_child_exited);
    tcase_add_test(tc, no_cancel_leaves_members_alone);
    tcase_add_test(tc, same_group_signals_the_child_alone);
    tcase_add_test(tc, caller_attr_setsid_is_a_group);
    tcase_add_test(tc, negative_grace_kills_the_group_at_once);
    tcase_add_test(tc, many_trees_canceled_together);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
