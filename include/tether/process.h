/*
 * tether/process.h — child processes: cancellable waitpid/waitid, and
 * processes run under the current token that are terminated (SIGTERM, then
 * SIGKILL) and reaped when it is canceled.
 */
#ifndef TETHER_PROCESS_H
#define TETHER_PROCESS_H

#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/wait.h>

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * tether_waitpid — waitpid(2) that can be canceled.
 *
 * Cancellation leaves the child alone (it is not signaled and stays
 * waitable): use tether_proc_wait to terminate it. For pid > 0 without
 * WUNTRACED/WCONTINUED it polls a pidfd, so it wakes at once; otherwise
 * (pid <= 0, stop/continue events) it re-checks with WNOHANG in sleeps of at
 * most 20 ms. With WNOHANG under a canceled or expired token it fails at
 * once, as every non-blocking form does. wstatus is handed to the kernel,
 * which reports a bad pointer as EFAULT (after reaping the child, as
 * waitpid(2) does).
 *
 * Parameters:
 *  pid      which child, as for waitpid(2).
 *  wstatus  if not NULL, receives the child's status.
 *  options  as for waitpid(2).
 * Returns: What waitpid(2) returns: the child's pid, 0 with WNOHANG, or -1
 * with errno set.
 * Errors:
 *  ECANCELED  the current token was canceled.
 *  ETIMEDOUT  the current token's deadline passed.
 *  EINTR      a signal handler ran.
 *  EMFILE     no descriptor for the pidfd.
 *  otherwise  waitpid(2)'s errors (ECHILD, EINVAL, EFAULT).
 * Blocking: Blocks unless WNOHANG; a cancellation point.
 * Thread safety: Thread-safe as waitpid(2); uses the calling thread's
 * current token.
 * Ownership: wstatus is the caller's.
 */
TETHER_API pid_t tether_waitpid(pid_t pid, int *wstatus, int options);

/*
 * waitid(2) and its types are POSIX 2008 / X/Open: declared by <sys/wait.h>
 * only under those feature macros (the default with glibc and musl, but not
 * under a bare -std=c11). Test the public feature macros, so that the
 * header stays usable in strict ISO C builds on any C library.
 */
#if (defined(_POSIX_C_SOURCE) && _POSIX_C_SOURCE >= 200809L) || defined(_XOPEN_SOURCE) || \
    defined(_GNU_SOURCE) || defined(_DEFAULT_SOURCE) || defined(_BSD_SOURCE)
/*
 * tether_waitid — waitid(2) that can be canceled, including P_PIDFD.
 *
 * Waits as tether_waitpid (P_PID and P_PIDFD without WSTOPPED / WCONTINUED
 * poll a pidfd; WNOHANG under a canceled or expired token fails). info is
 * handed to the kernel: a bad pointer gives EFAULT, under a token at the
 * first look rather than when a child changes state. Declared only where <sys/wait.h> declares waitid(2) itself:
 * with _POSIX_C_SOURCE >= 200809L, _XOPEN_SOURCE, _GNU_SOURCE,
 * _DEFAULT_SOURCE or _BSD_SOURCE (the C library's default).
 *
 * Parameters:
 *  idtype   P_PID, P_PGID, P_ALL or P_PIDFD, as for waitid(2).
 *  id       which child or group.
 *  info     receives the child's state.
 *  options  as for waitid(2).
 * Returns: 0 (child state in *info; with WNOHANG, info->si_pid 0 if none),
 * or -1 with errno set.
 * Errors:
 *  ECANCELED  the current token was canceled.
 *  ETIMEDOUT  the current token's deadline passed.
 *  EINTR      a signal handler ran.
 *  EMFILE     no descriptor for the pidfd.
 *  otherwise  waitid(2)'s errors (ECHILD, EINVAL, EFAULT).
 * Blocking: Blocks unless WNOHANG; a cancellation point.
 * Thread safety: Thread-safe as waitid(2); uses the calling thread's current
 * token.
 * Ownership: info is the caller's.
 */
TETHER_API int tether_waitid(idtype_t idtype, id_t id, siginfo_t *info, int options);
#endif

/* A child process run under the current token (tether_proc_spawn). */
typedef struct tether_proc tether_proc;

/* The default grace period between SIGTERM and SIGKILL: 2 seconds. */
#define TETHER_PROC_GRACE_DEFAULT ((int64_t)2000000000)

/* Options for tether_proc_spawn / tether_proc_run. Zero-initialise. */
typedef struct tether_proc_opts {
    int64_t grace_ns; /* SIGTERM to SIGKILL; 0 = TETHER_PROC_GRACE_DEFAULT, < 0 = SIGKILL at once */
    char *const *envp; /* the child's environment; NULL = the caller's (environ) */
    const posix_spawn_file_actions_t *file_actions; /* as posix_spawn; may be NULL */
    const posix_spawnattr_t *attr;                  /* as posix_spawn; may be NULL */
    bool search_path;                               /* posix_spawnp: look `file` up in PATH */
    bool same_group; /* keep the child in the caller's process group (job control); a cancel
                      * then signals the child alone, not its tree */
} tether_proc_opts;

/*
 * tether_proc_spawn — start a child process to be waited for with
 * tether_proc_wait.
 *
 * The child is started with posix_spawn (posix_spawnp with search_path).
 * The handle holds a pidfd (close-on-exec). The caller must not reap the
 * child by other means (waitpid(-1), SIGCHLD set to SIG_IGN).
 *
 * Process group: unless opts->same_group, the child leads a process group
 * of its own (POSIX_SPAWN_SETPGROUP with group 0, added to a copy of
 * opts->attr), which its descendants join unless they leave it (setsid,
 * setpgid): tether_proc_wait ends that whole group on cancellation. With
 * attributes that already set POSIX_SPAWN_SETSID or a new group (group
 * 0), the child's group is still ended; attributes that put it into an
 * existing group are kept as given, and a cancel then signals the child
 * alone. A child in its own group is not in the terminal's foreground group: the
 * terminal's Ctrl-C (SIGINT) reaches the caller, not the child (a caller
 * that turns SIGINT into a cancel, tether_signals_install, ends the child's
 * tree through that), and a child that reads the terminal stops (SIGTTIN);
 * set same_group for a child that needs the terminal.
 *
 * Deadline: the child's environment (opts->envp, else environ; the
 * caller's own is never modified) gets TETHER_DEADLINE=<ns>, the absolute
 * CLOCK_MONOTONIC deadline in decimal nanoseconds (see "The process root"
 * below): the earlier of the current token's effective
 * deadline (the process root's when the thread has no token) and every
 * valid TETHER_DEADLINE already in that environment, so a deadline passed
 * on never loosens. Every TETHER_DEADLINE entry of that environment is
 * replaced by that one value, never duplicated. With no deadline in either,
 * the environment is passed as it is (a malformed value in it too). A
 * program not written with tether honours the variable in a few lines:
 *
 *   const char *v = getenv("TETHER_DEADLINE");
 *   char *end;
 *   errno = 0;
 *   long long d = v ? strtoll(v, &end, 10) : -1;
 *   if (v && *v >= '0' && *v <= '9' && *end == '\0' && errno == 0) {
 *       struct timespec now;
 *       clock_gettime(CLOCK_MONOTONIC, &now);
 *       long long left_ns = d - (now.tv_sec * 1000000000LL + now.tv_nsec);
 *       // left_ns <= 0: out of time; else use it as the timeout
 *   }
 *
 * Parameters:
 *  out   receives the handle.
 *  file  the program.
 *  argv  its arguments, NULL-terminated.
 *  opts  NULL for defaults.
 * Returns: 0, or an error number.
 * Errors:
 *  ECANCELED  the current token is already canceled: nothing is started.
 *  ETIMEDOUT  the current token is already past its deadline: nothing is
 *             started.
 *  EINVAL     out, file or argv is NULL.
 *  ENOMEM     out of memory.
 *  EMFILE     no descriptor for the pidfd.
 *  otherwise  posix_spawn's errors (ENOENT, EACCES, ...).
 * Blocking: Never blocks beyond the spawn itself; checks for cancellation
 * before starting.
 * Thread safety: Thread-safe as posix_spawn.
 * Ownership: The caller ends the handle with tether_proc_wait, exactly
 * once; file, argv and opts are used only during the call.
 */
TETHER_API int tether_proc_spawn(tether_proc **out, const char *file, char *const argv[],
                                 const tether_proc_opts *opts);

/*
 * tether_proc_pid — a child process's id.
 *
 * Parameters:
 *  p  the handle.
 * Returns: The child's process id (valid until tether_proc_wait returns), or
 * -1 for NULL.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe until tether_proc_wait returns.
 * Ownership: p stays the caller's.
 */
TETHER_API pid_t tether_proc_pid(const tether_proc *p);

/*
 * tether_proc_wait — wait for a child process to exit, reap it and free the
 * handle.
 *
 * If the current token (the process root's when the thread has no token)
 * is canceled (or its deadline passes) before the child exits, the child's
 * tree receives SIGTERM: its process group (see tether_proc_spawn), or the
 * child alone with same_group. The grace period ends when the child has
 * exited and no other member of its group is left (looked up in /proc,
 * zombies not counted), or after grace_ns: then the group (or the child)
 * receives SIGKILL. When the token is canceled and the child has already
 * exited, the members of its group still left get the same sequence. The
 * direct child is always reaped by tether, last: no zombie. Its descendants
 * are reparented to init (or the nearest PR_SET_CHILD_SUBREAPER ancestor),
 * which reaps them once the group signals end them; tether does not make
 * the caller a subreaper, which would make it inherit every orphan of its
 * other children too. A descendant that left the group (setsid, setpgid)
 * is not reached. A child that exits on its own, without a cancellation,
 * leaves its group's other members alone. Signal handlers do not interrupt it (no EINTR). A child that
 * exits on its own while the cancellation lands is reported as exited: if
 * its status is not death by SIGTERM or SIGKILL, 0 is returned (so a child
 * that handles SIGTERM and exits counts as exited too; *wstatus tells).
 *
 * Parameters:
 *  p        the handle.
 *  wstatus  if not NULL, receives the status as waitpid(2) reports it, also
 *           after a cancellation (then usually killed by SIGTERM or SIGKILL).
 * Returns: 0 if the child exited on its own, or an error number.
 * Errors:
 *  ECANCELED  the token was canceled and the child died of SIGTERM/SIGKILL.
 *  ETIMEDOUT  the token's deadline passed and the child died of
 *             SIGTERM/SIGKILL.
 *  EFAULT     wstatus points outside the address space (the kernel says so
 *             when it stores the status; the child is reaped all the same).
 *  EINVAL     p is NULL.
 * Blocking: Blocks; a cancellation point whose clean-up can take up to the
 * grace period (plus the kill; while group members remain, /proc is read
 * every 20 ms at most).
 * Thread safety: One call per handle; uses the calling thread's current
 * token.
 * Ownership: The handle is freed in every case except EINVAL.
 */
TETHER_API int tether_proc_wait(tether_proc *p, int *wstatus);

/*
 * tether_proc_run — run a program to completion under the current token.
 *
 * tether_proc_spawn then tether_proc_wait.
 *
 * Parameters:
 *  file     the program.
 *  argv     its arguments, NULL-terminated.
 *  opts     NULL for defaults.
 *  wstatus  if not NULL, receives the status as for tether_proc_wait.
 * Returns: 0 if the program ran and exited on its own (*wstatus tells how),
 * or an error number.
 * Errors:
 *  ECANCELED  the token was canceled: nothing started, or the child was
 *             terminated.
 *  ETIMEDOUT  the token's deadline passed: nothing started, or the child was
 *             terminated.
 *  EINVAL     file or argv is NULL.
 *  EFAULT     wstatus is a bad pointer (as for tether_proc_wait).
 *  ENOMEM     out of memory.
 *  EMFILE     no descriptor for the pidfd.
 *  otherwise  posix_spawn's errors (ENOENT, EACCES, ...).
 * Blocking: Blocks until the child has exited; a cancellation point.
 * Thread safety: Thread-safe; uses the calling thread's current token.
 * Ownership: file, argv and opts are used only during the call.
 */
TETHER_API int tether_proc_run(const char *file, char *const argv[], const tether_proc_opts *opts,
                               int *wstatus);

/* ======================================================================
 * The process root: a deadline inherited from the parent process
 *
 * tether_proc_spawn puts the spawning token's deadline into the child's
 * environment as TETHER_DEADLINE=<ns>: the absolute CLOCK_MONOTONIC
 * deadline in nanoseconds, 1 to 19 decimal digits and nothing else (see
 * tether_proc_spawn above). CLOCK_MONOTONIC is one clock for every process
 * of a Linux host, so the value means the same instant in the child and is
 * passed on unchanged to grandchildren; it is meaningless on another host,
 * after a reboot and in another time namespace (unshare(CLONE_NEWTIME)
 * shifts CLOCK_MONOTONIC), so never forward the variable there.
 *
 * A process that uses tether adopts that deadline: the first call that
 * needs it (below) reads the variable, once for the life of the process,
 * and creates a root token with that deadline, armed on the timer thread
 * like any deadline. From then on that root stands in for "no token":
 *  - every cancellation point (the drop-ins, tether_check, the waits of
 *    tether_proc_*, tether_getaddrinfo, tether_retry's sleeps) of a thread
 *    with no current token runs under it;
 *  - tether_token_new with a NULL parent, tether_job_run with a NULL parent,
 *    tether_with_deadline / tether_with_timeout in a thread with no token,
 *    and tether_scope_open without parent and not detached make their token
 *    its child.
 * Not under it: tether_current() still returns only the tokens the thread
 * entered (NULL otherwise); a scope opened with .detached and a shield have
 * no parent at all; a cancel hook (<tether/hook.h>) is clean-up and runs
 * outside it. libtether_interpose.so routes the plain calls of a thread
 * under the process root to tether too, so a program that is not written
 * with tether but runs with the layer stops at its parent's deadline. A
 * fork child keeps the adopted root.
 *
 * A value that is not 1 to 19 digits within int64_t (empty, signed, spaces,
 * anything else) is ignored, as is the largest int64_t (TETHER_NEVER): the
 * process then has no root. Without the variable nothing changes: no token
 * is created, and tether_check costs one more load of a word that stays 0.
 * A process that must outlive its launcher's deadline (a daemon) opts out
 * with tether_process_deadline_ignore before its first tether call, or
 * removes the variable from its environment before that call.
 * ====================================================================== */

/* The environment variable that carries a deadline to a child process. */
#define TETHER_DEADLINE_ENV "TETHER_DEADLINE"

/*
 * tether_process_deadline — the deadline this process inherited, adopting
 * it if that has not happened yet.
 *
 * The first call in the process (of this or of anything that needs the
 * process root, see above) reads TETHER_DEADLINE; later ones return what
 * that found.
 *
 * Parameters: None.
 * Returns: The adopted absolute CLOCK_MONOTONIC deadline, or TETHER_NEVER
 * when there is none (no variable, a malformed value, opted out, or no
 * memory for the root token: then the next call tries again).
 * Errors: None.
 * Blocking: Never blocks (the first call reads the environment and creates
 * a token); not a cancellation point.
 * Thread safety: Thread-safe; concurrent first calls adopt once. Reads the
 * environment with getenv: do not race it with setenv.
 * Ownership: The root token is tether's and lives as long as the process.
 */
TETHER_API tether_time_t tether_process_deadline(void);

/*
 * tether_process_deadline_ignore — never adopt an inherited deadline.
 *
 * Call it before the first tether call that needs the process root (or any
 * time when there is nothing to adopt). Children started afterwards still
 * get the variable as tether_proc_spawn describes: it lowers, never drops,
 * a value already in the environment it passes on.
 *
 * Parameters: None.
 * Returns: 0 (no deadline will be adopted), or an error number.
 * Errors:
 *  EBUSY  a deadline was already adopted: it stays.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: Nothing is allocated.
 */
TETHER_API int tether_process_deadline_ignore(void);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_PROCESS_H */
