/*
 * The hostage watchdog: a child still running a grace time after its scope
 * was canceled is reported (once, then again when it finishes), by the
 * thread in tether_scope_join, which wakes for it (join.c); with escalation,
 * its blocking system call is interrupted by a signal, repeatedly, with
 * backoff. Also what a thread is blocked in (/proc/self/task/TID/syscall),
 * which the dump (dump.c) prints too.
 *
 * Escalation signals: a realtime signal gets tether's handler, which does
 * nothing, installed without SA_RESTART the first time a scope asks for it,
 * and keeps it: a thread blocked in a system call when the signal lands
 * sees EINTR. A signal is sent only under s->mu while the child has not
 * finished, so its thread (and kernel id) is still alive.
 */
#define _GNU_SOURCE
#include "scope.h"

#include "clock.h"
#include "sys.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

enum {
    BLOCKED_IN_MAX = 32,
    ESCALATE_FIRST_NS = 10 * 1000 * 1000, /* 10 ms after the first attempt */
    ESCALATE_CAP_NS = 1000 * 1000 * 1000, /* then doubling, at most 1 s apart */
    REPORT_LINE_MAX = 256
};

/* ---------------------------------------------------------------------- */
/* What a thread is blocked in                                            */

/* The calls a thread blocks in, by this architecture's numbers (x86-64 and
 * AArch64 have different ones, and some calls exist only on one). */
static const struct syscall_name {
    long nr;
    const char *name;
} syscall_names[] = {
#ifdef __NR_read
    { __NR_read, "read" },
#endif
#ifdef __NR_write
    { __NR_write, "write" },
#endif
#ifdef __NR_readv
    { __NR_readv, "readv" },
#endif
#ifdef __NR_writev
    { __NR_writev, "writev" },
#endif
#ifdef __NR_pread64
    { __NR_pread64, "pread64" },
#endif
#ifdef __NR_pwrite64
    { __NR_pwrite64, "pwrite64" },
#endif
#ifdef __NR_preadv
    { __NR_preadv, "preadv" },
#endif
#ifdef __NR_pwritev
    { __NR_pwritev, "pwritev" },
#endif
#ifdef __NR_preadv2
    { __NR_preadv2, "preadv2" },
#endif
#ifdef __NR_pwritev2
    { __NR_pwritev2, "pwritev2" },
#endif
#ifdef __NR_poll
    { __NR_poll, "poll" },
#endif
#ifdef __NR_ppoll
    { __NR_ppoll, "ppoll" },
#endif
#ifdef __NR_select
    { __NR_select, "select" },
#endif
#ifdef __NR_pselect6
    { __NR_pselect6, "pselect6" },
#endif
#ifdef __NR_epoll_wait
    { __NR_epoll_wait, "epoll_wait" },
#endif
#ifdef __NR_epoll_pwait
    { __NR_epoll_pwait, "epoll_pwait" },
#endif
#ifdef __NR_epoll_pwait2
    { __NR_epoll_pwait2, "epoll_pwait2" },
#endif
#ifdef __NR_futex
    { __NR_futex, "futex" },
#endif
#ifdef __NR_futex_waitv
    { __NR_futex_waitv, "futex_waitv" },
#endif
#ifdef __NR_nanosleep
    { __NR_nanosleep, "nanosleep" },
#endif
#ifdef __NR_clock_nanosleep
    { __NR_clock_nanosleep, "clock_nanosleep" },
#endif
#ifdef __NR_pause
    { __NR_pause, "pause" },
#endif
#ifdef __NR_rt_sigsuspend
    { __NR_rt_sigsuspend, "rt_sigsuspend" },
#endif
#ifdef __NR_rt_sigtimedwait
    { __NR_rt_sigtimedwait, "rt_sigtimedwait" },
#endif
#ifdef __NR_accept
    { __NR_accept, "accept" },
#endif
#ifdef __NR_accept4
    { __NR_accept4, "accept4" },
#endif
#ifdef __NR_connect
    { __NR_connect, "connect" },
#endif
#ifdef __NR_recvfrom
    { __NR_recvfrom, "recvfrom" },
#endif
#ifdef __NR_sendto
    { __NR_sendto, "sendto" },
#endif
#ifdef __NR_recvmsg
    { __NR_recvmsg, "recvmsg" },
#endif
#ifdef __NR_sendmsg
    { __NR_sendmsg, "sendmsg" },
#endif
#ifdef __NR_recvmmsg
    { __NR_recvmmsg, "recvmmsg" },
#endif
#ifdef __NR_sendmmsg
    { __NR_sendmmsg, "sendmmsg" },
#endif
#ifdef __NR_wait4
    { __NR_wait4, "wait4" },
#endif
#ifdef __NR_waitid
    { __NR_waitid, "waitid" },
#endif
#ifdef __NR_flock
    { __NR_flock, "flock" },
#endif
#ifdef __NR_fcntl
    { __NR_fcntl, "fcntl" },
#endif
#ifdef __NR_fsync
    { __NR_fsync, "fsync" },
#endif
#ifdef __NR_fdatasync
    { __NR_fdatasync, "fdatasync" },
#endif
#ifdef __NR_sync_file_range
    { __NR_sync_file_range, "sync_file_range" },
#endif
#ifdef __NR_msgrcv
    { __NR_msgrcv, "msgrcv" },
#endif
#ifdef __NR_msgsnd
    { __NR_msgsnd, "msgsnd" },
#endif
#ifdef __NR_semop
    { __NR_semop, "semop" },
#endif
#ifdef __NR_semtimedop
    { __NR_semtimedop, "semtimedop" },
#endif
#ifdef __NR_mq_timedreceive
    { __NR_mq_timedreceive, "mq_timedreceive" },
#endif
#ifdef __NR_mq_timedsend
    { __NR_mq_timedsend, "mq_timedsend" },
#endif
#ifdef __NR_io_getevents
    { __NR_io_getevents, "io_getevents" },
#endif
#ifdef __NR_io_pgetevents
    { __NR_io_pgetevents, "io_pgetevents" },
#endif
#ifdef __NR_io_uring_enter
    { __NR_io_uring_enter, "io_uring_enter" },
#endif
#ifdef __NR_open
    { __NR_open, "open" },
#endif
#ifdef __NR_openat
    { __NR_openat, "openat" },
#endif
#ifdef __NR_openat2
    { __NR_openat2, "openat2" },
#endif
#ifdef __NR_close
    { __NR_close, "close" },
#endif
#ifdef __NR_sendfile
    { __NR_sendfile, "sendfile" },
#endif
#ifdef __NR_splice
    { __NR_splice, "splice" },
#endif
#ifdef __NR_tee
    { __NR_tee, "tee" },
#endif
#ifdef __NR_getrandom
    { __NR_getrandom, "getrandom" },
#endif
#ifdef __NR_ioctl
    { __NR_ioctl, "ioctl" },
#endif
#ifdef __NR_sched_yield
    { __NR_sched_yield, "sched_yield" },
#endif
};

static const char *syscall_name(long nr)
{
    for (size_t i = 0; i < sizeof syscall_names / sizeof syscall_names[0]; i++)
        if (syscall_names[i].nr == nr)
            return syscall_names[i].name;
    return NULL;
}

const char *tether__blocked_in(int tid, char *buf, size_t n)
{
    char path[64], text[128];
    snprintf(buf, n, "unknown");
    if (tid <= 0) {
        snprintf(buf, n, "starting");
        return buf;
    }
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
    int fd = tether__sys_open_read(path);
    if (fd < 0) {
        if (errno == ENOENT || errno == ESRCH)
            snprintf(buf, n, "exited");
        return buf;
    }
    ssize_t got = tether__sys_read(fd, text, sizeof text - 1);
    tether__sys_close(fd);
    if (got <= 0)
        return buf;
    text[got] = '\0';
    /* "running", or "-1 sp pc" (blocked, not in a call), or "NR args...". */
    if (strncmp(text, "running", 7) == 0) {
        snprintf(buf, n, "running");
        return buf;
    }
    char *end;
    long nr = strtol(text, &end, 10);
    if (end == text)
        return buf;
    const char *name = nr >= 0 ? syscall_name(nr) : NULL;
    if (nr < 0)
        snprintf(buf, n, "no system call");
    else if (name)
        snprintf(buf, n, "%s", name);
    else
        snprintf(buf, n, "syscall %ld", nr);
    return buf;
}

/* ---------------------------------------------------------------------- */
/* The escalation signal                                                  */

static pthread_mutex_t signal_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t signals_installed; /* bit sig - SIGRTMIN, under signal_lock */

/* Does nothing: landing on a blocked thread is the point (EINTR). */
static void on_escalation_signal(int sig)
{
    (void)sig;
}

/* Install the do-nothing handler for sig, unless someone else's is there. */
static int install_signal(int sig)
{
    uint64_t bit = UINT64_C(1) << (sig - SIGRTMIN);
    int rc = 0;
    tether__lock(&signal_lock);
    if (!(signals_installed & bit)) {
        struct sigaction old, sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_escalation_signal;
        sa.sa_flags = 0; /* no SA_RESTART: the interrupted call fails with EINTR */
        sigemptyset(&sa.sa_mask);
        if (sigaction(sig, NULL, &old) < 0)
            rc = errno;
        else if ((old.sa_flags & SA_SIGINFO) ||
                 (old.sa_handler != SIG_DFL && old.sa_handler != on_escalation_signal))
            rc = EBUSY;
        else if (sigaction(sig, &sa, NULL) < 0)
            rc = errno;
        if (!rc)
            signals_installed |= bit;
    }
    tether__unlock(&signal_lock);
    return rc;
}

int tether__hostage_check(const tether_scope_opts *o, int *sig)
{
    *sig = 0;
    if (o->hostage_grace_ns < 0 || (o->hostage_escalate && o->hostage_grace_ns == 0))
        return EINVAL;
    int want = o->hostage_signal ? o->hostage_signal : SIGRTMIN + 3;
    if (want < SIGRTMIN || want > SIGRTMAX || want - SIGRTMIN >= 64)
        return EINVAL;
    if (!o->hostage_escalate)
        return 0;
    int rc = install_signal(want);
    if (!rc)
        *sig = want;
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Reports                                                                */

static void print_report(const tether_hostage_report *r)
{
    char line[REPORT_LINE_MAX];
    double ms = (double)r->since_cancel_ns / 1e6;
    int len;
    if (r->event == TETHER_HOSTAGE_HELD)
        len = snprintf(line, sizeof line,
                       "tether: hostage: scope '%s' child '%s' (#%d, tid %d) still running "
                       "%.1f ms after cancel, blocked in %s\n",
                       r->scope_name, r->child_name, r->child_index, r->tid, ms, r->blocked_in);
    else if (r->event == TETHER_HOSTAGE_INTERRUPTED)
        len = snprintf(line, sizeof line,
                       "tether: hostage: scope '%s' child '%s' (#%d, tid %d) interrupting %s "
                       "with signal %d, attempt %u, %.1f ms after cancel\n",
                       r->scope_name, r->child_name, r->child_index, r->tid, r->blocked_in,
                       r->signal, r->attempt, ms);
    else
        len = snprintf(line, sizeof line,
                       "tether: hostage: scope '%s' child '%s' (#%d, tid %d) released after "
                       "%.1f ms\n",
                       r->scope_name, r->child_name, r->child_index, r->tid, ms);
    if (len > (int)sizeof line - 1)
        len = (int)sizeof line - 1;
    if (len > 0)
        (void)!tether__sys_write(2, line, (size_t)len); /* one write: one whole line */
}

/* Deliver r to the hook or stderr. s->mu held; dropped around the call. */
static void emit(tether_scope *s, tether_hostage_report *r)
{
    tether__scope_unlock(s);
    if (s->hostage_hook)
        s->hostage_hook(r, s->hostage_arg);
    else
        print_report(r);
    tether__scope_lock(s);
}

/* When t's cancellation started, or 0 while it has none. s->mu held. */
static tether_time_t canceled_at(const tether_scope *s, const tether_task *t)
{
    const tether_token *ref = t->background && s->bg_token ? s->bg_token : s->token;
    return tether__token_canceled(ref) ? ref->canceled_at : 0;
}

/* Fill in a report on t, reading what it is blocked in with s->mu dropped. */
static void describe(tether_scope *s, tether_task *t, tether_hostage_event ev, tether_time_t at,
                     tether_hostage_report *r, char blocked[BLOCKED_IN_MAX])
{
    int tid = atomic_load_explicit(&t->tid, memory_order_relaxed);
    *r = (tether_hostage_report){ .event = ev,
                                  .scope_name = s->name,
                                  .child_name = t->name,
                                  .child_index = t->index,
                                  .tid = tid,
                                  .blocked_in = "" };
    if (ev != TETHER_HOSTAGE_RELEASED) {
        tether__scope_unlock(s);
        r->blocked_in = tether__blocked_in(tid, blocked, BLOCKED_IN_MAX);
        tether__scope_lock(s);
    }
    r->since_cancel_ns = tether_now() - at;
}

/* The next escalation attempt's delay after `attempts` were made. */
static int64_t backoff_ns(unsigned attempts)
{
    int64_t d = ESCALATE_FIRST_NS;
    for (unsigned i = 1; i < attempts && d < ESCALATE_CAP_NS; i++)
        d *= 2;
    return d < ESCALATE_CAP_NS ? d : ESCALATE_CAP_NS;
}

/* Send the escalation signal to t if it is still running, and report it. */
static void escalate(tether_scope *s, tether_task *t, tether_time_t at)
{
    tether_hostage_report r;
    char blocked[BLOCKED_IN_MAX];
    describe(s, t, TETHER_HOSTAGE_INTERRUPTED, at, &r, blocked);
    if (t->done)
        return; /* finished meanwhile: the release report follows */
    if (r.tid > 0)
        tether__sys_tgkill(r.tid, s->hostage_signal);
    t->hostage_attempts++;
    t->hostage_next = tether_now() + backoff_ns(t->hostage_attempts);
    r.attempt = t->hostage_attempts;
    r.signal = s->hostage_signal;
    emit(s, &r);
}

tether_time_t tether__hostage_watch(tether_scope *s)
{
    tether_time_t next = TETHER_NEVER;
    /* Started tasks stay linked while the scope is joining, and `next` is
     * read under the lock, so the walk survives the drops in emit. */
    for (tether_task *t = s->tasks; t; t = t->next) {
        if (!t->started || t->hostage_released)
            continue;
        tether_time_t at = canceled_at(s, t);
        tether_hostage_report r;
        char blocked[BLOCKED_IN_MAX];
        if (t->hostage_held && t->done) {
            t->hostage_released = true;
            describe(s, t, TETHER_HOSTAGE_RELEASED, at, &r, blocked);
            emit(s, &r);
            continue;
        }
        if (t->done || at == 0)
            continue;
        tether_time_t due = at + s->hostage_grace_ns;
        if (!t->hostage_held) {
            if (tether_now() < due) {
                next = tether__min_time(next, due);
                continue;
            }
            t->hostage_held = true;
            t->hostage_next = due;
            s->tally.hostages++;
            describe(s, t, TETHER_HOSTAGE_HELD, at, &r, blocked);
            emit(s, &r);
        }
        if (!s->hostage_signal || t->done)
            continue;
        if (tether_now() >= t->hostage_next)
            escalate(s, t, at);
        next = tether__min_time(next, t->hostage_next);
    }
    return next;
}
