/*
 * Cancellable waits for child processes, and child processes run under the
 * current token.
 *
 * A pidfd (pidfd_open) becomes readable when its process exits, so waiting
 * for one child is a poll of the pidfd with the token's eventfd, followed by
 * the raw wait with WNOHANG. Waits that a pidfd cannot express (any child,
 * a process group, stop/continue events) re-check with WNOHANG in short
 * sleeps on the token.
 *
 * tether_proc_spawn starts the child in a process group of its own (unless
 * asked not to) and hands it the token's deadline in TETHER_DEADLINE
 * (root.c builds the environment). tether_proc_wait ends the child's whole
 * tree on cancellation: SIGTERM to the group (or through the pidfd to the
 * child alone), the grace period, SIGKILL, and always the reap of the
 * direct child, last: until then its pid, which is the group's id, cannot
 * name another process or group, so the signals to the group cannot stray.
 */
#define _GNU_SOURCE
#include "dropin.h"

#include "clock.h"

#include <spawn.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

extern char **environ;


/* Wait for the next chance of a child event: the pidfd readable (when there
 * is one), or a backoff nap. 0 to look again, -1 with errno. */
static int wait_child(tether_token *t, int pidfd, int64_t *step)
{
    if (pidfd >= 0)
        return tether__token_wait_fd(t, pidfd, POLLIN, TETHER_NEVER) < 0 ? -1 : 0;
    return tether__token_backoff(t, step);
}

static void close_keep_errno(int fd)
{
    int saved = errno;
    tether__sys_close(fd);
    errno = saved;
}

pid_t tether_waitpid(pid_t pid, int *wstatus, int options)
{
    tether_token *t = tether__current_or_root();
    if (!t)
        return tether__sys_waitpid(pid, wstatus, options);
    if (tether__check_or_fail(t) < 0) /* WNOHANG too, as every non-blocking form */
        return -1;
    if (options & WNOHANG)
        return tether__sys_waitpid(pid, wstatus, options);
    int pidfd = -1;
    int64_t step = 0;
    pid_t r;
    for (;;) {
        r = tether__sys_waitpid(pid, wstatus, options | WNOHANG);
        if (r != 0)
            break;
        if (pidfd < 0 && pid > 0 && !(options & (WUNTRACED | WCONTINUED)))
            pidfd = tether__sys_pidfd_open(pid); /* on failure: the backoff */
        if (wait_child(t, pidfd, &step) < 0) {
            r = -1;
            break;
        }
    }
    if (pidfd >= 0)
        close_keep_errno(pidfd);
    return r;
}

int tether_waitid(idtype_t idtype, id_t id, siginfo_t *info, int options)
{
    tether_token *t = tether__current_or_root();
    if (!t)
        return tether__sys_waitid(idtype, id, info, options);
    if (tether__check_or_fail(t) < 0) /* WNOHANG too, as every non-blocking form */
        return -1;
    if (options & WNOHANG)
        return tether__sys_waitid(idtype, id, info, options);
    bool exits_only = !(options & (WSTOPPED | WCONTINUED));
    int pidfd = -1;
    bool own = false;
    if (exits_only && (int)idtype == P_PIDFD)
        pidfd = (int)id;
    int64_t step = 0;
    int r;
    /* The kernel fills *info (si_pid 0 when nothing is ready) and reports a
     * bad pointer as EFAULT; ours stands in only for a NULL one. */
    siginfo_t own_si = { 0 };
    siginfo_t *si = info ? info : &own_si;
    for (;;) {
        r = tether__sys_waitid(idtype, id, si, options | WNOHANG);
        if (r < 0)
            break;
        if (si->si_pid != 0)
            break;
        if (pidfd < 0 && exits_only && idtype == P_PID && id > 0) {
            pidfd = tether__sys_pidfd_open((pid_t)id);
            own = pidfd >= 0;
        }
        if (wait_child(t, pidfd, &step) < 0) {
            r = -1;
            break;
        }
    }
    if (own)
        close_keep_errno(pidfd);
    return r;
}

struct tether_proc {
    pid_t pid;
    int pidfd;
    int64_t grace_ns;
    bool group; /* the child leads a process group of its own: end the group */
};

/* The attributes to spawn with: opts' (copied) plus a process group of the
 * child's own unless the caller keeps it in theirs. Sets *group when the
 * child will lead its own group (asked for here, or by the caller's
 * attributes: a new group or a new session). */
static const posix_spawnattr_t *spawn_attr(const tether_proc_opts *o, posix_spawnattr_t *own,
                                           bool *group)
{
    *group = false;
    if (o->same_group)
        return o->attr;
    short flags = 0;
    if (o->attr) {
        *own = *o->attr; /* a plain structure in glibc and musl */
        posix_spawnattr_getflags(own, &flags);
    } else {
        posix_spawnattr_init(own);
    }
    pid_t pg = 0;
    if (flags & POSIX_SPAWN_SETSID) {
        *group = true;
    } else if (flags & POSIX_SPAWN_SETPGROUP) {
        posix_spawnattr_getpgroup(own, &pg);
        *group = pg == 0; /* the caller's own choice of an existing group: not ours to end */
    } else {
        posix_spawnattr_setflags(own, (short)(flags | POSIX_SPAWN_SETPGROUP));
        posix_spawnattr_setpgroup(own, 0);
        *group = true;
    }
    return own;
}

int tether_proc_spawn(tether_proc **out, const char *file, char *const argv[],
                      const tether_proc_opts *opts)
{
    if (!out || !file || !argv)
        return EINVAL;
    *out = NULL;
    tether_token *t = tether__current_or_root();
    int c = t ? tether_token_check(t) : 0;
    if (c)
        return c;
    tether_proc_opts o = opts ? *opts : (tether_proc_opts){ 0 };
    tether_proc *p = tether__malloc(sizeof *p);
    if (!p)
        return ENOMEM;
    p->grace_ns = o.grace_ns ? o.grace_ns : TETHER_PROC_GRACE_DEFAULT;
    char *const *envp = o.envp ? o.envp : environ;
    char **env = NULL;
    int rc = tether__child_env(envp, t ? tether_token_deadline(t) : TETHER_NEVER, &env);
    if (rc) {
        free(p);
        return rc;
    }
    posix_spawnattr_t own;
    const posix_spawnattr_t *attr = spawn_attr(&o, &own, &p->group);
    char *const *cenv = env ? env : envp;
    rc = o.search_path ? posix_spawnp(&p->pid, file, o.file_actions, attr, argv, cenv)
                       : posix_spawn(&p->pid, file, o.file_actions, attr, argv, cenv);
    free(env);
    if (attr == &own)
        posix_spawnattr_destroy(&own); /* a no-op in glibc and musl, even for the copy */
    if (rc) {
        free(p);
        return rc;
    }
    /* The child cannot have been reaped yet (that is ours to do), so the pid
     * still names it. */
    p->pidfd = tether__sys_pidfd_open(p->pid);
    if (p->pidfd < 0) {
        rc = errno;
        tether__sys_kill(p->pid, SIGKILL);
        while (tether__sys_waitpid(p->pid, NULL, 0) < 0 && errno == EINTR) {
        }
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

pid_t tether_proc_pid(const tether_proc *p)
{
    return p ? p->pid : -1;
}

/* Poll the pidfd alone for up to `ns` (negative: forever), riding out
 * signal handlers. Whether the child has exited. */
static bool exited_within(int pidfd, int64_t ns)
{
    tether_time_t until = ns < 0 ? TETHER_NEVER : tether_deadline_after(ns);
    for (;;) {
        struct timespec ts = tether__timespec(tether__time_left(until, tether_now()));
        struct pollfd p = { .fd = pidfd, .events = POLLIN };
        int n = tether__sys_ppoll(&p, 1, until == TETHER_NEVER ? NULL : &ts, NULL);
        if (n > 0)
            return true;
        if (n == 0 || (n < 0 && errno != EINTR))
            return false;
    }
}

/* Wait for the exit under t: 0 once exited, else the token's error. */
static int wait_exit(tether_token *t, int pidfd)
{
    for (;;) {
        struct pollfd p[2] = { { .fd = pidfd, .events = POLLIN } };
        int n = tether__token_wait_fds(t, p, 1, TETHER_NEVER, NULL);
        if (n > 0)
            return 0;
        if (errno == EINTR)
            continue;
        if (errno == ECANCELED || errno == ETIMEDOUT)
            return errno;
        /* No eventfd for the token: look at the token between short polls. */
        for (;;) {
            int c = tether_token_check(t);
            if (c)
                return c;
            if (exited_within(pidfd, tether_ms(10)))
                return 0;
        }
    }
}

/* Send sig to the child's tree: its group, or the child alone. */
static void signal_tree(const tether_proc *p, int sig)
{
    if (p->group)
        tether__sys_kill(-p->pid, sig);
    else
        tether__sys_pidfd_send_signal(p->pidfd, sig);
}

/* Whether the tree is gone within `ns`: the child exited and, for a group,
 * no other member is left (looked at every few milliseconds). */
static bool tree_gone_within(const tether_proc *p, int64_t ns)
{
    tether_time_t until = tether_deadline_after(ns);
    if (!exited_within(p->pidfd, ns))
        return false;
    if (!p->group)
        return true;
    for (int64_t step = tether_ms(1);; step = tether__min_time(step * 2, tether_ms(20))) {
        if (!tether__pgroup_alive(p->pid, p->pid))
            return true;
        int64_t left = tether__time_left(until, tether_now());
        if (left == 0)
            return false;
        struct timespec ts = tether__timespec(tether__min_time(step, left));
        tether__sys_clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
    }
}

/* End the tree of a canceled child: SIGTERM, the grace period, SIGKILL.
 * `running`: the child itself has not exited (else only its group's other
 * members are left, if any). */
static void end_tree(const tether_proc *p, bool running)
{
    if (!running && (!p->group || !tether__pgroup_alive(p->pid, p->pid)))
        return;
    if (p->grace_ns >= 0) {
        signal_tree(p, SIGTERM);
        if (tree_gone_within(p, p->grace_ns))
            return;
    }
    signal_tree(p, SIGKILL);
}

int tether_proc_wait(tether_proc *p, int *wstatus)
{
    if (!p)
        return EINVAL;
    tether_token *t = tether__current_or_root();
    int rc = t ? wait_exit(t, p->pidfd) : 0;
    bool running = !exited_within(p->pidfd, 0);
    if (rc || (t && tether_token_check(t) != 0))
        end_tree(p, running); /* before the reap: the group's id stays the child's */
    if (!rc || !running)
        rc = 0; /* it exited on its own, whatever the token says */
    /* The kernel stores the status (EFAULT for a bad wstatus, after the
     * reap, as waitpid(2)). */
    int status = 0;
    int *ws = wstatus ? wstatus : &status;
    pid_t r;
    while ((r = tether__sys_waitpid(p->pid, ws, 0)) < 0 && errno == EINTR) {
    }
    if (r < 0 && errno == EFAULT)
        rc = EFAULT;
    else if (rc && !(WIFSIGNALED(*ws) && (WTERMSIG(*ws) == SIGTERM || WTERMSIG(*ws) == SIGKILL)))
        rc = 0; /* it exited (or died) by itself before our signal landed */
    tether__sys_close(p->pidfd);
    free(p);
    return rc;
}

int tether_proc_run(const char *file, char *const argv[], const tether_proc_opts *opts,
                    int *wstatus)
{
    tether_proc *p;
    int rc = tether_proc_spawn(&p, file, argv, opts);
    if (rc)
        return rc;
    return tether_proc_wait(p, wstatus);
}
