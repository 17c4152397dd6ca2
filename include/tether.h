/*
 * tether — structured concurrency and cancellation propagation for POSIX
 * threads and blocking I/O.
 *
 * A scope owns the threads it spawns (one thread per child) and returns only
 * after every one of them has exited and been joined. Cancellation and
 * deadlines flow down a tree of tokens; a thread blocked in one of tether's
 * cancellable primitives is woken and returns ECANCELED or ETIMEDOUT.
 *
 * Conventions (see README.md):
 *  - Blocking primitives that stand in for a POSIX call (tether_read,
 *    tether_sleep_for, ...) keep that call's parameters and return value:
 *    -1 and errno on failure, with ECANCELED when the calling thread's
 *    current token was cancelled and ETIMEDOUT when its deadline passed.
 *  - Everything else follows pthreads: it returns 0 or a positive error
 *    number and leaves errno alone.
 *  - Time is an absolute CLOCK_MONOTONIC instant in nanoseconds
 *    (tether_time_t); TETHER_NEVER means "no deadline". Durations are
 *    int64_t nanoseconds.
 *  - Every object with a lifecycle is an opaque handle with one owner and one
 *    call that ends it.
 *
 * Each declaration below is preceded by a block in one fixed shape: what it
 * does, parameters, return value, errors, blocking, thread-safety, ownership.
 */
#ifndef TETHER_H
#define TETHER_H

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tether_version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define TETHER_API __attribute__((visibility("default")))
#else
#define TETHER_API
#endif

/* ======================================================================
 * Version
 * ====================================================================== */

/*
 * tether_version — the library's version string, e.g. "0.1.0".
 * Returns a static string; compare with TETHER_VERSION_STRING to detect a
 * header/library mismatch. Never fails, never blocks, thread-safe.
 */
TETHER_API const char *tether_version(void);

/*
 * tether_version_number — the library's version as
 * major * 10000 + minor * 100 + patch (TETHER_VERSION_NUMBER at build time).
 * Never fails, never blocks, thread-safe.
 */
TETHER_API int tether_version_number(void);

/* ======================================================================
 * Time
 * ====================================================================== */

/* An absolute CLOCK_MONOTONIC instant in nanoseconds. */
typedef int64_t tether_time_t;

/* The deadline that never comes. */
#define TETHER_NEVER INT64_MAX

/* tether_us — microseconds to a duration in nanoseconds, saturating. */
static inline int64_t tether_us(int64_t us)
{
    if (us > INT64_MAX / 1000) return INT64_MAX;
    if (us < INT64_MIN / 1000) return INT64_MIN;
    return us * 1000;
}

/* tether_ms — milliseconds to a duration in nanoseconds, saturating. */
static inline int64_t tether_ms(int64_t ms)
{
    if (ms > INT64_MAX / 1000000) return INT64_MAX;
    if (ms < INT64_MIN / 1000000) return INT64_MIN;
    return ms * 1000000;
}

/* tether_sec — seconds to a duration in nanoseconds, saturating. */
static inline int64_t tether_sec(int64_t s)
{
    if (s > INT64_MAX / 1000000000) return INT64_MAX;
    if (s < INT64_MIN / 1000000000) return INT64_MIN;
    return s * 1000000000;
}

/*
 * tether_now — the current CLOCK_MONOTONIC time in nanoseconds.
 * Never fails (vDSO, about 25 ns), never blocks, async-signal-safe.
 */
TETHER_API tether_time_t tether_now(void);

/*
 * tether_deadline_after — the instant `duration_ns` from now, saturating:
 * a duration that would overflow gives TETHER_NEVER, and a negative one gives
 * an instant in the past. Never fails, never blocks, thread-safe.
 */
TETHER_API tether_time_t tether_deadline_after(int64_t duration_ns);

/* ======================================================================
 * Cancellation causes and scope outcomes
 * ====================================================================== */

/* Why a token was cancelled. The first cause is kept; later ones are ignored. */
typedef enum tether_cause {
    TETHER_CAUSE_NONE = 0,          /* not cancelled */
    TETHER_CAUSE_EXPLICIT,          /* tether_token_cancel / tether_scope_cancel */
    TETHER_CAUSE_DEADLINE,          /* this token's own deadline passed */
    TETHER_CAUSE_PARENT,            /* an ancestor was cancelled (see root cause) */
    TETHER_CAUSE_SIBLING_FAILED,    /* fail-fast: a child of the scope failed */
    TETHER_CAUSE_SIBLING_SUCCEEDED, /* first-success: another child won */
    TETHER_CAUSE_SCOPE_FINISHED,    /* background child halted: foreground done */
    TETHER_CAUSE_HALTED,            /* tether_task_halt on this one child */
    TETHER_CAUSE_SIGNAL             /* tether_sigcancel_fire (signal handler) */
} tether_cause;

/*
 * tether_cause_name — a short static name for a cause ("explicit",
 * "deadline", ...), or "unknown" for a value outside the enum.
 * Never fails, never blocks, thread-safe.
 */
TETHER_API const char *tether_cause_name(tether_cause cause);

/* How a scope ended. */
typedef enum tether_outcome {
    TETHER_OUTCOME_OK = 0,            /* every foreground child succeeded (first-success: one won) */
    TETHER_OUTCOME_PARTIAL,           /* supervisor: some succeeded, some failed */
    TETHER_OUTCOME_FAILED,            /* a child failure decided the scope */
    TETHER_OUTCOME_CANCELED,          /* cancelled from outside (explicit, parent, signal) */
    TETHER_OUTCOME_DEADLINE_EXCEEDED  /* the scope's effective deadline passed */
} tether_outcome;

/*
 * tether_outcome_name — a short static name for an outcome ("ok",
 * "partial", "failed", "canceled", "deadline_exceeded"), or "unknown".
 * Never fails, never blocks, thread-safe.
 */
TETHER_API const char *tether_outcome_name(tether_outcome outcome);

/* ======================================================================
 * Tokens
 *
 * A token carries a cancelled state and a deadline down a tree. Cancelling a
 * token cancels every descendant (cause TETHER_CAUSE_PARENT) and never touches
 * its parent or siblings. A token's effective deadline is the minimum of its
 * own and every ancestor's, so a deadline never loosens going down the tree.
 *
 * A deadline is enforced by every cancellation point: a thread blocked under
 * the token wakes when the deadline passes, and the first thread that sees it
 * passed (a cancellation point, tether_token_check, a scope's join) turns it
 * into a cancellation of the token that owns that deadline, with cause
 * TETHER_CAUSE_DEADLINE, so that descendants and callbacks see it too.
 * ====================================================================== */

typedef struct tether_token tether_token;

/*
 * tether_token_new — create a token.
 *  out:      receives the new token.
 *  parent:   its parent, or NULL for a root token. A child of a cancelled
 *            token is born cancelled (cause TETHER_CAUSE_PARENT).
 *  deadline: its own absolute deadline, or TETHER_NEVER. The effective
 *            deadline is min(deadline, parent's effective deadline).
 * Returns 0, or:
 *  EINVAL  out is NULL.
 *  ENOMEM  out of memory.
 * Never blocks. Thread-safe; the parent may be used concurrently by other
 * threads. Ownership: the caller owns the token and ends it with
 * tether_token_free; the parent must outlive it.
 */
TETHER_API int tether_token_new(tether_token **out, tether_token *parent, tether_time_t deadline);

/*
 * tether_token_free — free a token, unlinking it from its parent.
 * Callbacks still registered on it are detached unrun: tether_token_off_cancel
 * still frees their handles and reports that they did not run.
 * Returns 0, or:
 *  EINVAL  t is NULL.
 *  EBUSY   t still has child tokens, or some thread has it entered
 *          (tether_token_enter without the matching leave). Nothing changes.
 * Never blocks (a short internal lock). Must not race with any other call on
 * the same token (as with pthread_mutex_destroy).
 */
TETHER_API int tether_token_free(tether_token *t);

/*
 * tether_token_cancel — cancel a token and all its descendants.
 *  t:     the token.
 *  error: a user error number recorded as the reason (tether_token_error),
 *         or 0 for plain ECANCELED.
 * The first cancellation wins: its cause and error are kept; later calls are
 * no-ops that still return 0. Threads blocked under the token or a
 * descendant wake and fail with ECANCELED. Callbacks registered on the
 * cancelled tokens run synchronously in the calling thread before it
 * returns, so the caller must not hold a lock that a callback takes.
 * Returns 0, or EINVAL if t is NULL.
 * Never blocks waiting for other threads (it takes short internal locks; use
 * tether_sigcancel_fire from a signal handler). Thread-safe: any thread, any
 * number of times, concurrently.
 */
TETHER_API int tether_token_cancel(tether_token *t, int error);

/*
 * tether_token_check — whether t is cancelled or past its effective deadline.
 * Returns 0 if neither, ECANCELED if cancelled, ETIMEDOUT if cancelled by a
 * deadline (its own or an ancestor's) or past its deadline. Observing a
 * passed deadline cancels the token that owns it (see above), so EINVAL is
 * returned only for a NULL t.
 * Never blocks. Thread-safe.
 */
TETHER_API int tether_token_check(tether_token *t);

/*
 * tether_token_cause — the recorded cause of t's cancellation, or
 * TETHER_CAUSE_NONE if it is not cancelled (or t is NULL). A deadline that
 * passed but was not yet observed is not a cause yet: call
 * tether_token_check first. Never blocks. Thread-safe.
 */
TETHER_API tether_cause tether_token_cause(const tether_token *t);

/*
 * tether_token_root_cause — for a token cancelled through its parent, the
 * cause recorded at the ancestor where the cancellation started; otherwise
 * the same as tether_token_cause. Never blocks. Thread-safe.
 */
TETHER_API tether_cause tether_token_root_cause(const tether_token *t);

/*
 * tether_token_error — the error number that cancelled t: the user's error
 * given to tether_token_cancel (ECANCELED if it gave 0), ETIMEDOUT for a
 * deadline, the parent's error for TETHER_CAUSE_PARENT, and for
 * TETHER_CAUSE_SIBLING_FAILED the failing child's error; ECANCELED for the
 * other causes. Non-zero exactly when t is cancelled: returns 0 if t is not
 * cancelled or is NULL. Never blocks. Thread-safe.
 */
TETHER_API int tether_token_error(const tether_token *t);

/*
 * tether_token_deadline — t's effective deadline (the minimum over t and its
 * ancestors), or TETHER_NEVER; TETHER_NEVER for a NULL t.
 * Never blocks. Thread-safe.
 */
TETHER_API tether_time_t tether_token_deadline(const tether_token *t);

/*
 * tether_trim — close the spare eventfds tether keeps for reuse.
 * A token gets an eventfd the first time a thread waits for a descriptor
 * under it. When such a token is freed, its eventfd is kept (at most 4 in
 * the process, close-on-exec) for the next token that needs one, so freeing
 * a scope's children costs no close(2) each. Call this before counting the
 * process's descriptors, e.g. in a leak check; they are also closed at exit.
 * Returns how many it closed. Never blocks (a short internal lock).
 * Thread-safe.
 */
TETHER_API int tether_trim(void);

/* A registered cancellation callback. */
typedef struct tether_callback tether_callback;

/*
 * tether_token_on_cancel — run fn(arg) once when t is cancelled.
 *  out: receives a handle that must be given to tether_token_off_cancel.
 * If t is already cancelled, fn runs at once in the calling thread before
 * this returns. Otherwise it runs exactly once, in the thread whose
 * tether_token_cancel cancelled t (or an ancestor), even under concurrent
 * cancels. fn must be short and must not block; it may call any tether
 * function except tether_token_free / tether_scope_free on its own token,
 * and it may unregister itself.
 * Returns 0, or EINVAL (t, fn or out NULL), ENOMEM.
 * Never blocks. Thread-safe.
 */
TETHER_API int tether_token_on_cancel(tether_token *t, void (*fn)(void *arg), void *arg,
                                      tether_callback **out);

/*
 * tether_token_off_cancel — unregister a callback and free its handle.
 *  ran: if not NULL, receives true if the callback ran (or is running), false
 *       if it was removed before running (or its token was freed first).
 * If the callback is running on another thread, waits for it to finish. From
 * inside the callback itself it returns at once (no deadlock); the handle is
 * freed when the callback returns.
 * Returns 0, or EINVAL if cb is NULL.
 * Blocks only while the callback runs on another thread: do not hold a lock
 * the callback takes. Thread-safe; cb must be unregistered exactly once.
 */
TETHER_API int tether_token_off_cancel(tether_callback *cb, bool *ran);

/* ======================================================================
 * The current token
 *
 * Every thread has a current token (none by default). Cancellable
 * primitives use it; they take no token argument, so they are drop-in
 * replacements for the calls they stand for. Any thread — for example a
 * worker of an existing thread pool — can enter a token for the span of a
 * job and leave it afterwards; entries nest.
 * ====================================================================== */

/*
 * tether_current — the calling thread's current token, or NULL.
 * Never fails, never blocks, thread-safe (thread-local).
 */
TETHER_API tether_token *tether_current(void);

/*
 * tether_token_enter — make t the calling thread's current token until the
 * matching tether_token_leave. Entries nest without limit.
 * Returns 0, or EINVAL (t NULL), ENOMEM (nesting beyond 16 levels needs
 * memory and none was available).
 * Never blocks. A token that some thread has entered cannot be freed (EBUSY).
 */
TETHER_API int tether_token_enter(tether_token *t);

/*
 * tether_token_leave — undo the innermost tether_token_enter.
 *  t: the token that was entered (checked).
 * Returns 0, or:
 *  EINVAL  t is NULL.
 *  EPERM   t is not the calling thread's innermost entered token (nothing
 *          changes).
 * Never blocks.
 */
TETHER_API int tether_token_leave(tether_token *t);

/*
 * tether_check — the cancellation check: tether_token_check on the current
 * token. Returns 0 when there is no current token or it is neither cancelled
 * nor past its deadline (about one load when it has no deadline), else
 * ECANCELED or ETIMEDOUT. Never blocks. Thread-safe.
 */
TETHER_API int tether_check(void);

/*
 * tether_with_deadline — run fn(arg) in the calling thread under a fresh
 * child token of the current one whose own deadline is `deadline` (like
 * Trio's fail_after or Kotlin's withTimeout, without spawning a thread).
 *  fired: if not NULL, receives true if this block's own deadline fired
 *         while fn ran (a cancellation point in fn, or a scope fn joined,
 *         saw it pass and cancelled the block's token); false if fn finished
 *         without seeing it, or an outer deadline or cancel came first.
 * Returns fn's return value, or ENOMEM if the token could not be created (fn
 * was not called; *fired is false), EINVAL if fn is NULL.
 * Blocks as long as fn does. Ownership: the token lives only for the call.
 */
TETHER_API int tether_with_deadline(tether_time_t deadline, int (*fn)(void *arg), void *arg,
                                    bool *fired);

/*
 * tether_with_timeout — tether_with_deadline(tether_deadline_after(timeout_ns), ...).
 */
TETHER_API int tether_with_timeout(int64_t timeout_ns, int (*fn)(void *arg), void *arg,
                                   bool *fired);

/* ======================================================================
 * Cancelling from a signal handler
 *
 * A signal handler cannot take locks, so it cannot walk a token tree. A
 * tether_sigcancel is a small relay set up ahead of time: firing it from a
 * handler only writes to an eventfd, and a relay thread (created by
 * tether_sigcancel_new, the only thread tether creates on its own) performs
 * the cancellation with cause TETHER_CAUSE_SIGNAL.
 * ====================================================================== */

typedef struct tether_sigcancel tether_sigcancel;

/*
 * tether_sigcancel_new — prepare a signal-safe canceller for t.
 *  out:   receives the handle.
 *  t:     the token to cancel; it must outlive the handle.
 *  error: the error number recorded for the cancellation (0: ECANCELED).
 * Returns 0, or EINVAL (out or t NULL), ENOMEM, EMFILE/ENFILE (no eventfd),
 * EAGAIN (no relay thread).
 * Never blocks. Thread-safe. The caller ends the handle with
 * tether_sigcancel_free.
 */
TETHER_API int tether_sigcancel_new(tether_sigcancel **out, tether_token *t, int error);

/*
 * tether_sigcancel_fire — request the cancellation. Async-signal-safe: one
 * write(2) to an eventfd; errno is preserved. The token is cancelled shortly
 * after by the relay thread (a few microseconds). Firing again is harmless.
 * Never blocks. Must not race with tether_sigcancel_free.
 */
TETHER_API void tether_sigcancel_fire(tether_sigcancel *sc);

/*
 * tether_sigcancel_free — stop the relay thread and free the handle. A fire
 * that happened before this call has taken effect when it returns.
 * Returns 0, or EINVAL if sc is NULL. Blocks briefly to join the relay
 * thread.
 */
TETHER_API int tether_sigcancel_free(tether_sigcancel *sc);

/* ======================================================================
 * Cancellable primitives
 *
 * Each uses the calling thread's current token. With no current token it
 * behaves exactly like the call it stands for. With one:
 *  - it fails at once with ECANCELED/ETIMEDOUT if the token is already
 *    cancelled or past its deadline, without blocking;
 *  - a thread blocked in it wakes on cancellation (ECANCELED) or at the
 *    effective deadline (ETIMEDOUT);
 *  - a transfer that already took effect is returned (bytes read stay read);
 *    the next call reports the cancellation;
 *  - a signal handler interrupting the wait makes it fail with EINTR, as the
 *    raw call does for handlers installed without SA_RESTART (tether waits in
 *    poll or futex, which the kernel never restarts).
 * Sleeping threads wait on a futex and hold no file descriptor; I/O waits
 * poll the descriptor together with one eventfd per token, created on first
 * use and shared by every thread waiting under that token.
 * ====================================================================== */

/*
 * tether_sleep_until — sleep until the absolute instant `when`.
 * Returns 0 when `when` is reached, or -1 with errno:
 *  ECANCELED  the current token was cancelled;
 *  ETIMEDOUT  the current token's effective deadline came before `when`;
 *  EINTR      a signal handler ran.
 * Blocks; cancellation point. Holds no file descriptor while sleeping.
 */
TETHER_API int tether_sleep_until(tether_time_t when);

/*
 * tether_sleep_for — sleep for duration_ns nanoseconds (<= 0 returns at once
 * after the cancellation check). Same returns and errors as
 * tether_sleep_until.
 */
TETHER_API int tether_sleep_for(int64_t duration_ns);

/*
 * tether_read — read(2) that can be cancelled.
 * Returns what read(2) returns. On a descriptor with data ready it costs one
 * syscall (a non-blocking attempt with RWF_NOWAIT). A descriptor in
 * O_NONBLOCK mode fails with EAGAIN as read(2) would. Errors: read(2)'s, plus
 * ECANCELED, ETIMEDOUT, EINTR (see above), ENOMEM/EMFILE if the token's
 * eventfd could not be created on first use.
 * Blocks; cancellation point.
 */
TETHER_API ssize_t tether_read(int fd, void *buf, size_t count);

/*
 * tether_write — write(2) that can be cancelled.
 * Like a blocking write(2), it keeps writing until all `count` bytes are
 * written; if cancelled (or interrupted) after writing some, it returns the
 * number written, and the next call reports the cancellation. A descriptor
 * in O_NONBLOCK mode behaves as write(2) would. Errors: write(2)'s, plus
 * ECANCELED, ETIMEDOUT, EINTR, ENOMEM/EMFILE as for tether_read.
 * Blocks; cancellation point.
 */
TETHER_API ssize_t tether_write(int fd, const void *buf, size_t count);

/*
 * tether_poll — poll(2) that can be cancelled.
 * timeout_ms as poll(2): negative waits forever (up to the deadline), 0
 * polls once. Returns the number of ready descriptors, 0 if timeout_ms
 * elapsed first, or -1 with errno: poll(2)'s errors, ECANCELED, ETIMEDOUT
 * (the token's deadline came before timeout_ms), EINTR, ENOMEM, EMFILE/ENFILE
 * (the token's eventfd could not be created on first use).
 * Blocks; cancellation point.
 */
TETHER_API int tether_poll(struct pollfd *fds, nfds_t nfds, int timeout_ms);

/* ======================================================================
 * Cancellable calls for legacy code
 *
 * Drop-in replacements for blocking POSIX calls, so that retrofitting
 * cancellation onto existing code is a mechanical substitution: each keeps
 * the parameters, return values, errno values and partial transfers of the
 * call it replaces, and follows the rules of the primitives above (the
 * current token; ECANCELED / ETIMEDOUT; an immediate failure when already
 * cancelled; a transfer or an accepted descriptor that already took effect
 * is returned; EINTR like the raw call under a handler without SA_RESTART;
 * with no current token, exactly the raw call). Calls modelled on pthreads
 * (condition variables, processes, shields, signals) return an error number
 * instead, as pthreads does.
 *
 * What tether cannot interrupt — calls not routed through it, getaddrinfo,
 * disk I/O on regular files — and how to structure code around it is
 * described in docs/limits.md.
 * ====================================================================== */

/* Close extern "C" around system headers: C++ includes them on its own terms. */
#ifdef __cplusplus
}
#endif
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#ifdef __cplusplus
extern "C" {
#endif

/*
 * tether_readv — readv(2) that can be cancelled.
 * Returns what readv(2) returns. Like tether_read: a descriptor with data
 * ready costs one syscall (preadv2 with RWF_NOWAIT); an O_NONBLOCK descriptor
 * fails with EAGAIN. Errors: readv(2)'s, plus ECANCELED, ETIMEDOUT, EINTR,
 * ENOMEM/EMFILE (the token's eventfd could not be created on first use).
 * Blocks; cancellation point.
 */
TETHER_API ssize_t tether_readv(int fd, const struct iovec *iov, int iovcnt);

/*
 * tether_writev — writev(2) that can be cancelled.
 * Like a blocking writev(2) it writes every byte of every buffer; if
 * cancelled (or interrupted) after writing some, it returns the number
 * written and the next call reports the cancellation. An O_NONBLOCK
 * descriptor behaves as writev(2) would. Errors: writev(2)'s, plus
 * ECANCELED, ETIMEDOUT, EINTR, ENOMEM/EMFILE. The iov array is not modified.
 * Blocks; cancellation point.
 */
TETHER_API ssize_t tether_writev(int fd, const struct iovec *iov, int iovcnt);

/*
 * tether_pread — pread(2) that can be cancelled.
 * Returns what pread(2) returns: on a regular file a short count means end
 * of file, as with pread(2) (a read that is only partly cached is completed
 * with the plain call). Disk I/O itself cannot be interrupted: only the
 * check before it is a cancellation point. Errors: pread(2)'s, plus
 * ECANCELED, ETIMEDOUT, EINTR, ENOMEM/EMFILE.
 * Blocks; cancellation point.
 */
TETHER_API ssize_t tether_pread(int fd, void *buf, size_t count, off_t offset);

/*
 * tether_pwrite — pwrite(2) that can be cancelled (see tether_pread).
 * Returns what pwrite(2) returns. Errors: pwrite(2)'s, plus ECANCELED,
 * ETIMEDOUT, EINTR, ENOMEM/EMFILE.
 * Blocks; cancellation point.
 */
TETHER_API ssize_t tether_pwrite(int fd, const void *buf, size_t count, off_t offset);

/*
 * tether_read_all — read until `count` bytes have arrived or end of file.
 *  moved: if not NULL, receives the number of bytes read, in every case —
 *         also when -1 is returned (how much arrived before a cancellation
 *         or an error).
 * Returns the number of bytes read (count, or fewer at end of file), or -1
 * with errno: read(2)'s errors, ECANCELED, ETIMEDOUT, ENOMEM/EMFILE. EINTR is
 * retried, not returned (cancel instead). An O_NONBLOCK descriptor with no
 * data fails with EAGAIN.
 * Blocks; cancellation point.
 */
TETHER_API ssize_t tether_read_all(int fd, void *buf, size_t count, size_t *moved);

/*
 * tether_write_all — write all `count` bytes.
 *  moved: as for tether_read_all: bytes written, in every case.
 * Returns count, or -1 with errno: write(2)'s errors, ECANCELED, ETIMEDOUT,
 * ENOMEM/EMFILE. EINTR is retried, not returned.
 * Blocks; cancellation point.
 */
TETHER_API ssize_t tether_write_all(int fd, const void *buf, size_t count, size_t *moved);

/*
 * tether_ppoll — ppoll(2) that can be cancelled.
 *  tmo:     as ppoll(2): NULL waits forever (up to the deadline), {0, 0}
 *           polls once. Combined with the token's deadline: whichever comes
 *           first ends the wait.
 *  sigmask: as ppoll(2): the signal mask in force while waiting, or NULL.
 * Returns the number of ready descriptors, 0 if tmo elapsed first, or -1 with
 * errno: ppoll(2)'s errors, ECANCELED, ETIMEDOUT (the token's deadline came
 * first), EINTR, ENOMEM/EMFILE.
 * Blocks; cancellation point.
 */
TETHER_API int tether_ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *tmo,
                            const sigset_t *sigmask);

/*
 * tether_nanosleep — nanosleep(2) that can be cancelled.
 *  rem: if not NULL, receives the time that was left when the sleep was
 *       cut short (EINTR, ECANCELED or ETIMEDOUT); untouched on success.
 * Returns 0 after sleeping the whole duration, or -1 with errno: EINVAL
 * (tv_nsec outside 0..999999999 or tv_sec negative), EFAULT, EINTR,
 * ECANCELED, ETIMEDOUT (the token's deadline came first).
 * Blocks; cancellation point. Holds no file descriptor while sleeping.
 */
TETHER_API int tether_nanosleep(const struct timespec *req, struct timespec *rem);

/*
 * tether_recv, tether_recvfrom, tether_recvmsg — recv(2), recvfrom(2),
 * recvmsg(2) that can be cancelled.
 * Return what the raw calls return. A socket with data ready costs one
 * syscall (MSG_DONTWAIT); an O_NONBLOCK socket, or flags with MSG_DONTWAIT,
 * fail with EAGAIN as the raw call would; SO_RCVTIMEO is honoured (EAGAIN
 * when it elapses). MSG_WAITALL on a stream socket waits for the whole
 * length, and a cancellation after part of it arrived returns the part.
 * For recvmsg, control data is taken with the first bytes. Errors: the raw
 * call's, plus ECANCELED, ETIMEDOUT, EINTR, ENOMEM/EMFILE.
 * Blocks; cancellation points.
 */
TETHER_API ssize_t tether_recv(int fd, void *buf, size_t len, int flags);
/* tether_recvfrom — recvfrom(2) that can be cancelled; as tether_recv above. */
TETHER_API ssize_t tether_recvfrom(int fd, void *buf, size_t len, int flags,
                                   struct sockaddr *src, socklen_t *srclen);
/* tether_recvmsg — recvmsg(2) that can be cancelled; as tether_recv above. */
TETHER_API ssize_t tether_recvmsg(int fd, struct msghdr *msg, int flags);

/*
 * tether_send, tether_sendto, tether_sendmsg — send(2), sendto(2),
 * sendmsg(2) that can be cancelled.
 * Like the blocking raw calls they send the whole buffer; if cancelled or
 * interrupted after sending part of it, they return the part sent and the
 * next call reports the cancellation. An O_NONBLOCK socket or MSG_DONTWAIT
 * behaves as the raw call; SO_SNDTIMEO is honoured. For sendmsg, control
 * data goes with the first bytes only; msg is not modified. Pass
 * MSG_NOSIGNAL as with the raw calls to avoid SIGPIPE. Errors: the raw
 * call's, plus ECANCELED, ETIMEDOUT, EINTR, ENOMEM/EMFILE.
 * Blocks; cancellation points.
 */
TETHER_API ssize_t tether_send(int fd, const void *buf, size_t len, int flags);
/* tether_sendto — sendto(2) that can be cancelled; as tether_send above. */
TETHER_API ssize_t tether_sendto(int fd, const void *buf, size_t len, int flags,
                                 const struct sockaddr *dest, socklen_t destlen);
/* tether_sendmsg — sendmsg(2) that can be cancelled; as tether_send above. */
TETHER_API ssize_t tether_sendmsg(int fd, const struct msghdr *msg, int flags);

/*
 * tether_accept, tether_accept4 — accept(2), accept4(2) that can be
 * cancelled.
 * Return the new descriptor, or -1 with errno: the raw call's errors, plus
 * ECANCELED, ETIMEDOUT, EINTR, ENOMEM/EMFILE. A connection accepted while a
 * cancellation arrives is returned, never lost: the next call reports the
 * cancellation. An O_NONBLOCK listener fails with EAGAIN as the raw call
 * would. The wait is a poll for POLLIN followed by the raw call: when several
 * threads accept on one blocking listener, the one that loses the race for a
 * connection blocks in the raw call until the next connection, and that wait
 * cannot be cancelled — make such a listener O_NONBLOCK (see docs/limits.md).
 * Blocks; cancellation points.
 */
TETHER_API int tether_accept(int fd, struct sockaddr *addr, socklen_t *addrlen);
/* tether_accept4 — accept4(2) that can be cancelled; as tether_accept above. */
TETHER_API int tether_accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags);

/*
 * tether_connect — connect(2) that can be cancelled.
 * On a blocking socket it waits for the connection as connect(2) does, but
 * cancellably: the socket is switched to O_NONBLOCK for the attempt and its
 * flags are restored before returning, whatever the outcome (other threads
 * must not use the socket meanwhile). On an O_NONBLOCK socket it is the raw
 * call (EINPROGRESS). Returns 0, or -1 with errno: connect(2)'s errors, plus
 * ECANCELED, ETIMEDOUT, EINTR, ENOMEM/EMFILE. After ECANCELED, ETIMEDOUT or
 * EINTR the attempt goes on in the background exactly as after a raw
 * connect(2) interrupted by a signal: close the socket, or call connect
 * again (EALREADY, EISCONN). A full AF_UNIX backlog is retried with a short
 * backoff (up to 20 ms).
 * Blocks; cancellation point.
 */
TETHER_API int tether_connect(int fd, const struct sockaddr *addr, socklen_t addrlen);

/*
 * tether_cond_wait — pthread_cond_wait that can be cancelled.
 * Returns 0 when woken (spurious wakeups included, as with
 * pthread_cond_wait: re-check the predicate), or ECANCELED / ETIMEDOUT (the
 * current token was cancelled or its deadline passed), or
 * pthread_cond_clockwait's errors. In every case the mutex is held again on
 * return, as pthread_cond_wait callers expect. With no current token it is
 * pthread_cond_wait.
 * How: a cancellation callback on the current token locks `mutex` and
 * broadcasts `cond`, so the thread that cancels the token must not hold
 * `mutex` (it would deadlock), and every waiter on cond wakes (they re-check
 * their predicates). The deadline is waited for with
 * pthread_cond_clockwait(CLOCK_MONOTONIC), which works whatever clock the
 * condvar was initialised with. Each wait under a token registers one
 * callback (a small allocation): ENOMEM if it cannot.
 * Blocks; cancellation point. Thread-safe as pthread_cond_wait.
 */
TETHER_API int tether_cond_wait(pthread_cond_t *cond, pthread_mutex_t *mutex);

/*
 * tether_cond_timedwait — pthread_cond_timedwait that can be cancelled.
 *  abstime: an absolute CLOCK_REALTIME time, as for pthread_cond_timedwait
 *           on a condvar with default attributes. (For a condvar set to
 *           CLOCK_MONOTONIC, pass that clock to tether_cond_clockwait.)
 * Returns 0, ETIMEDOUT (abstime passed, or the token's deadline did),
 * ECANCELED, EINVAL (abstime's tv_nsec out of range); the mutex is held
 * again on return. Otherwise as tether_cond_wait.
 */
TETHER_API int tether_cond_timedwait(pthread_cond_t *cond, pthread_mutex_t *mutex,
                                     const struct timespec *abstime);

/*
 * tether_cond_clockwait — pthread_cond_clockwait that can be cancelled:
 * abstime is on `clock` (CLOCK_MONOTONIC or CLOCK_REALTIME; others EINVAL).
 * Returns and behaves as tether_cond_timedwait.
 */
TETHER_API int tether_cond_clockwait(pthread_cond_t *cond, pthread_mutex_t *mutex,
                                     clockid_t clock, const struct timespec *abstime);

/*
 * tether_sem_wait — sem_wait(3) that can be cancelled.
 * Returns 0 with one unit taken, or -1 with errno: EINTR, EINVAL, ECANCELED,
 * ETIMEDOUT. A unit is taken only when 0 is returned: a cancellation never
 * consumes, invents or loses a unit, and other waiters (tether's or raw
 * sem_wait callers) are unaffected. A semaphore cannot be woken from
 * outside without posting to it, so the wait under a token sleeps in slices
 * of sem_clockwait(CLOCK_MONOTONIC) of at most 10 ms: a post wakes it at
 * once, a cancellation within about 10 ms, a deadline exactly.
 * Blocks; cancellation point.
 */
TETHER_API int tether_sem_wait(sem_t *sem);

/*
 * tether_sem_timedwait — sem_timedwait(3) (abstime on CLOCK_REALTIME) that
 * can be cancelled. Returns 0, or -1 with errno: ETIMEDOUT (abstime or the
 * token's deadline passed), EINVAL, EINTR, ECANCELED. Otherwise as
 * tether_sem_wait.
 */
TETHER_API int tether_sem_timedwait(sem_t *sem, const struct timespec *abstime);

/*
 * tether_waitpid — waitpid(2) that can be cancelled.
 * Returns what waitpid(2) returns: the child's pid (its status in
 * *wstatus), 0 with WNOHANG, or -1 with errno: waitpid(2)'s errors, plus
 * ECANCELED, ETIMEDOUT, EINTR, EMFILE. Cancellation leaves the child alone
 * (it is not signalled and stays waitable): use tether_proc_wait to
 * terminate it. For pid > 0 without WUNTRACED/WCONTINUED it polls a pidfd,
 * so it wakes at once; otherwise (pid <= 0, stop/continue events) it
 * re-checks with WNOHANG in sleeps of at most 20 ms.
 * Blocks; cancellation point.
 */
TETHER_API pid_t tether_waitpid(pid_t pid, int *wstatus, int options);

#if defined(__USE_XOPEN) || defined(__USE_XOPEN2K8)
/*
 * tether_waitid — waitid(2) that can be cancelled, including P_PIDFD.
 * Returns 0 (child state in *info; with WNOHANG, info->si_pid 0 if none), or
 * -1 with errno: waitid(2)'s errors, plus ECANCELED, ETIMEDOUT, EINTR,
 * EMFILE. Waits as tether_waitpid (P_PID and P_PIDFD without WSTOPPED /
 * WCONTINUED poll a pidfd). Blocks; cancellation point.
 * Declared only where <sys/wait.h> declares waitid(2) itself (POSIX 2008 /
 * X/Open, the default; not under a bare -std=c11), so that tether.h stays
 * usable in strict ISO C builds.
 */
TETHER_API int tether_waitid(idtype_t idtype, id_t id, siginfo_t *info, int options);
#endif

/* A child process run under the current token (tether_proc_spawn). */
typedef struct tether_proc tether_proc;

/* The default grace period between SIGTERM and SIGKILL: 2 seconds. */
#define TETHER_PROC_GRACE_DEFAULT ((int64_t)2000000000)

/* Options for tether_proc_spawn / tether_proc_run. Zero-initialise. */
typedef struct tether_proc_opts {
    int64_t grace_ns;     /* SIGTERM to SIGKILL; 0 = TETHER_PROC_GRACE_DEFAULT, < 0 = SIGKILL at once */
    char *const *envp;    /* the child's environment; NULL = the caller's (environ) */
    const posix_spawn_file_actions_t *file_actions; /* as posix_spawn; may be NULL */
    const posix_spawnattr_t *attr;                  /* as posix_spawn; may be NULL */
    bool search_path;     /* posix_spawnp: look `file` up in PATH */
} tether_proc_opts;

/*
 * tether_proc_spawn — start a child process (posix_spawn) to be waited for
 * with tether_proc_wait.
 *  out:  receives the handle.
 *  file: the program; argv: its arguments, NULL-terminated.
 *  opts: NULL for defaults.
 * Returns 0, or an error number: ECANCELED / ETIMEDOUT (the current token is
 * already cancelled or past its deadline: nothing is started), EINVAL (out,
 * file or argv NULL), ENOMEM, posix_spawn's errors (ENOENT, EACCES, ...),
 * pidfd_open's (EMFILE). Never blocks beyond the spawn itself. The handle
 * holds a pidfd (close-on-exec). The caller must not reap the child by other
 * means (waitpid(-1), SIGCHLD set to SIG_IGN).
 * Ownership: the caller ends the handle with tether_proc_wait, exactly once.
 */
TETHER_API int tether_proc_spawn(tether_proc **out, const char *file, char *const argv[],
                                 const tether_proc_opts *opts);

/*
 * tether_proc_pid — the child's process id (valid until tether_proc_wait
 * returns), or -1 for NULL. Never blocks.
 */
TETHER_API pid_t tether_proc_pid(const tether_proc *p);

/*
 * tether_proc_wait — wait for the child to exit, reap it and free the
 * handle.
 *  wstatus: if not NULL, receives the status as waitpid(2) reports it, also
 *           after a cancellation (then usually killed by SIGTERM or SIGKILL).
 * If the current token is cancelled (or its deadline passes) before the
 * child exits, the child receives SIGTERM; if it has not exited after the
 * grace period, SIGKILL. Either way it is reaped before this returns: no
 * zombie, no orphan.
 * Returns 0 if the child exited on its own, ECANCELED / ETIMEDOUT if it was
 * terminated because of the token, EINVAL if p is NULL. Signal handlers do
 * not interrupt it (no EINTR). Blocks: a cancellation point whose clean-up
 * can take up to the grace period (plus the kill). The handle is freed in
 * every case except EINVAL.
 */
TETHER_API int tether_proc_wait(tether_proc *p, int *wstatus);

/*
 * tether_proc_run — tether_proc_spawn then tether_proc_wait: run a program
 * to completion under the current token. Returns as those two (0 if it ran
 * and exited on its own; *wstatus tells how).
 */
TETHER_API int tether_proc_run(const char *file, char *const argv[], const tether_proc_opts *opts,
                               int *wstatus);

/* A region in which cancellation from outside is deferred (tether_shield_enter). */
typedef struct tether_shield tether_shield;

/*
 * tether_shield_enter — start a shielded region on the calling thread: until
 * tether_shield_leave, cancellation of the tokens entered before (and their
 * deadlines) is deferred, so clean-up can still do blocking I/O. The region
 * has its own deadline to keep that clean-up bounded, and its own token
 * (tether_shield_token): scopes opened and tokens created inside descend
 * from it, so cancellations that start inside the shield still apply.
 *  out:      receives the handle.
 *  deadline: absolute; TETHER_NEVER for an unbounded region (avoid).
 * After leaving, a cancellation that arrived meanwhile is seen by the next
 * cancellation point (cancellation is sticky).
 * Returns 0, or EINVAL (out NULL), ENOMEM.
 * Never blocks. The shield belongs to the calling thread: leave it on the
 * same thread, innermost first. Ownership: ended by tether_shield_leave.
 */
TETHER_API int tether_shield_enter(tether_shield **out, tether_time_t deadline);

/*
 * tether_shield_token — the shield's token (the calling thread's current
 * token while the shield is innermost): cancel it to end the region's work
 * early. NULL for NULL. Valid until tether_shield_leave.
 */
TETHER_API tether_token *tether_shield_token(tether_shield *s);

/*
 * tether_shield_leave — end the shielded region and free the handle.
 * Returns 0, or:
 *  EINVAL  s is NULL.
 *  EPERM   s is not the calling thread's innermost entry (a token entered
 *          inside the region was not left): nothing changes.
 *  EBUSY   a token or scope created inside the region still lives: nothing
 *          changes.
 * Never blocks.
 */
TETHER_API int tether_shield_leave(tether_shield *s);

/* Graceful shutdown on SIGINT/SIGTERM (tether_signals_install). */
typedef struct tether_signals tether_signals;

/* Options for tether_signals_install. Zero-initialise. */
typedef struct tether_signals_opts {
    const int *signals;   /* the signals to catch; NULL = SIGINT and SIGTERM */
    size_t nsignals;      /* entries in signals (at most 8) */
    int error;            /* recorded as the token's error; 0 = ECANCELED */
    bool escalate;        /* a second signal restores the default disposition
                             and re-raises it: the process dies as it would
                             have without tether */
} tether_signals_opts;

/*
 * tether_signals_install — turn the signals into a graceful cancellation of
 * t (cause TETHER_CAUSE_SIGNAL) through tether_sigcancel: the first signal
 * cancels t; later ones are ignored, or with escalate the second one
 * restores the default disposition and re-raises the signal. Installs
 * sigaction handlers (SA_RESTART) only when called; the previous
 * dispositions are restored by tether_signals_restore.
 *  out: receives the handle; t must outlive it.
 * Returns 0, or EINVAL (out or t NULL, nsignals 0 or above 8 with signals
 * set, a signal that cannot be caught), EBUSY (already installed: one at a
 * time per process), the errors of tether_sigcancel_new.
 * Never blocks. Not thread-safe with other calls that change the same
 * signals' dispositions.
 */
TETHER_API int tether_signals_install(tether_signals **out, tether_token *t,
                                      const tether_signals_opts *opts);

/*
 * tether_signals_fired — how many of the signals arrived since install
 * (0 for NULL). Never blocks; thread-safe.
 */
TETHER_API unsigned tether_signals_fired(const tether_signals *h);

/*
 * tether_signals_restore — put the previous dispositions back, then free
 * the handle (a signal that arrived before has taken effect on the token).
 * Returns 0, or EINVAL if h is NULL. Blocks briefly (joins the relay).
 */
TETHER_API int tether_signals_restore(tether_signals *h);

/* (legacy section: end) */

/* ======================================================================
 * Scopes
 *
 * A scope owns the child threads spawned into it — one thread per child —
 * and tether_scope_join returns only after every one has exited and been
 * joined. The scope owns a token, a child of its parent token; every child
 * runs with its own token (a child of the scope's) as its current token.
 * ====================================================================== */

typedef struct tether_scope tether_scope;
typedef struct tether_task tether_task;

/* How a scope reacts to its children's results. */
typedef enum tether_policy {
    /* The first child failure cancels all siblings (TETHER_CAUSE_SIBLING_FAILED);
     * the scope fails with that first error. */
    TETHER_POLICY_FAIL_FAST = 0,
    /* Failures are isolated; outcome ok, partial or failed. A deadline or an
     * external cancel still cancels everyone. */
    TETHER_POLICY_SUPERVISOR,
    /* Hedging: the first child to return 0 wins and the rest are cancelled
     * (TETHER_CAUSE_SIBLING_SUCCEEDED); if all fail, failed with the first error. */
    TETHER_POLICY_FIRST_SUCCESS
} tether_policy;

/* Options for tether_scope_open. Zero-initialise, then set what you need. */
typedef struct tether_scope_opts {
    tether_policy policy;      /* default fail-fast */
    tether_time_t deadline;    /* absolute; 0 = none of its own */
    int64_t timeout_ns;        /* relative to open; 0 = none; with deadline, the earlier wins */
    unsigned max_children;     /* live children at once; 0 = unbounded */
    const char *name;          /* copied; up to 31 bytes kept */
    tether_token *parent;      /* NULL = the calling thread's current token */
    bool detached;             /* true: no parent at all, even if there is a current token */
} tether_scope_opts;

/* Options for tether_spawn. Zero-initialise, then set what you need. */
typedef struct tether_spawn_opts {
    const char *name;          /* copied; up to 31 bytes kept; the thread's name gets 15 */
    int64_t timeout_ns;        /* the child's own deadline, relative to spawn; 0 = none */
    size_t stack_size;         /* 0 = the default; otherwise at least PTHREAD_STACK_MIN */
    bool background;           /* halted automatically once the foreground work is done */
} tether_spawn_opts;

#define TETHER_NAME_MAX 32

/* What tether_scope_join reports. */
typedef struct tether_result {
    tether_outcome outcome;
    int error;                         /* the winning error, 0 if none */
    int error_task;                    /* index of the task that produced it, -1 if none */
    char error_task_name[TETHER_NAME_MAX];
    tether_cause cause;                /* why the scope (or its background) was cancelled */
    int cause_task;                    /* the sibling behind SIBLING_FAILED/SUCCEEDED, else -1 */
    int winner;                        /* first-success: index of the winner, else -1 */
    unsigned spawned;                  /* children spawned */
    unsigned succeeded, failed, canceled;
    int64_t convergence_ns;            /* first cancel request to last child's exit; 0 if none */
} tether_result;

/*
 * tether_scope_open — open a scope.
 *  out:  receives the scope.
 *  opts: NULL for defaults (fail-fast, no deadline, unbounded, parent = the
 *        current token).
 * Returns 0, or EINVAL (out NULL, policy out of range, negative timeout),
 * ENOMEM.
 * Never blocks. The calling thread becomes the scope's owner: it joins and
 * frees it (tether_scope_join, tether_scope_free). The parent token must
 * outlive the scope.
 */
TETHER_API int tether_scope_open(tether_scope **out, const tether_scope_opts *opts);

/*
 * tether_spawn — start fn(arg) on a new thread owned by the scope.
 *  s:    the scope; the owner or any of its children may spawn.
 *  fn:   returns 0 for success or an error number.
 *  opts: NULL for defaults.
 *  task: if not NULL, receives a handle for tether_task_wait/halt, valid
 *        until the scope is joined. Without one, a finished child's thread
 *        and memory are reclaimed early, so a long-lived scope can spawn
 *        without limit.
 * With max_children set and the scope full, waits for a free slot; the wait
 * is a cancellation point of the caller's current token and ends at the
 * scope's or the caller's deadline.
 * Returns 0, or:
 *  EINVAL     s or fn NULL, stack_size too small, negative timeout, or the
 *             scope was already joined.
 *  ECANCELED  the scope is cancelled, is finishing (background halted in
 *             join), or the caller was cancelled while waiting for a slot.
 *  ETIMEDOUT  a deadline passed (the scope's, or the caller's while waiting).
 *  EAGAIN     the system could not create a thread.
 *  ENOMEM     out of memory.
 * On any error no thread was created. Blocks only while waiting for a slot.
 * Thread-safe.
 */
TETHER_API int tether_spawn(tether_scope *s, int (*fn)(void *arg), void *arg,
                            const tether_spawn_opts *opts, tether_task **task);

/*
 * tether_try_spawn — tether_spawn that never waits for a slot: EAGAIN when
 * max_children children are live. Other returns as tether_spawn. Never
 * blocks. Thread-safe.
 */
TETHER_API int tether_try_spawn(tether_scope *s, int (*fn)(void *arg), void *arg,
                                const tether_spawn_opts *opts, tether_task **task);

/*
 * tether_task_wait — wait for one child to exit.
 *  result: if not NULL, receives the child's return value.
 * Returns 0, or EINVAL (task NULL), EDEADLK (called from that child itself).
 * Blocks until the child exits (not a cancellation point: the child is
 * cancelled with its scope, so the wait is bounded by the scope's fate). If
 * the scope's deadline passes while waiting, the wait cancels the scope as
 * join would. Thread-safe.
 */
TETHER_API int tether_task_wait(tether_task *task, int *result);

/*
 * tether_task_halt — cancel one child alone (cause TETHER_CAUSE_HALTED) and
 * wait for it to exit. Its siblings are not touched, and a child halted this
 * way counts as canceled, never as a failure.
 *  result: as for tether_task_wait.
 * Returns and blocks as tether_task_wait.
 */
TETHER_API int tether_task_halt(tether_task *task, int *result);

/*
 * tether_task_token — the child's token (its current token while it runs),
 * or NULL for a NULL task. Valid until the scope is joined.
 */
TETHER_API tether_token *tether_task_token(tether_task *task);

/*
 * tether_scope_token — the scope's token: children's tokens descend from
 * it. Valid until tether_scope_join returns; NULL for a NULL scope.
 */
TETHER_API tether_token *tether_scope_token(tether_scope *s);

/*
 * tether_scope_cancel — cancel the scope and all its children (cause
 * TETHER_CAUSE_EXPLICIT). Never blocks; any thread, any number of times,
 * until the scope is joined. Returns 0, or EINVAL (s NULL or joined).
 */
TETHER_API int tether_scope_cancel(tether_scope *s);

/*
 * tether_scope_join — wait for the scope's children and report how it ended.
 * Waits for every foreground child; then halts the background children
 * (cause TETHER_CAUSE_SCOPE_FINISHED) and waits for their cleanup; joins
 * every thread; releases the children's tokens, task handles and memory.
 * If the scope's deadline passes while waiting, cancels the scope (cause
 * TETHER_CAUSE_DEADLINE) and keeps waiting for the children to exit.
 *  result: if not NULL, receives the outcome (see tether_result).
 * Returns 0, or:
 *  EINVAL   s is NULL, or the scope was already joined (or is being joined).
 *  EDEADLK  called from one of the scope's own children (or their
 *           descendants): it could never return.
 * Blocks; not a cancellation point (a scope always waits for its children).
 * Do not hold a lock that a child needs to finish. The scope handle stays
 * valid, in the joined state, until tether_scope_free.
 */
TETHER_API int tether_scope_join(tether_scope *s, tether_result *result);

/*
 * tether_scope_free — free a scope handle. If it was not joined yet, it is
 * cancelled (cause TETHER_CAUSE_EXPLICIT) and joined first, discarding the
 * result.
 * Returns 0, or EINVAL (s NULL), EDEADLK (as tether_scope_join), EBUSY (a
 * token created under tether_scope_token(s) is still alive, or some thread
 * still has the scope's token entered: the scope stays joined and valid, and
 * can be freed again once that is undone).
 * Blocks if it must join. Must not race with other calls on s.
 */
TETHER_API int tether_scope_free(tether_scope *s);

/*
 * tether_scope_run — open a scope, run body(scope, arg) in the calling
 * thread, then join and free the scope (Effection's run). If body returns
 * non-zero, the scope is cancelled and the outcome is failed with body's
 * error (error_task -1) unless a child failure decided it first.
 *  result: receives the outcome; may be NULL.
 * Returns 0, or the errors of tether_scope_open (body not called).
 * Blocks until every child has exited.
 */
TETHER_API int tether_scope_run(const tether_scope_opts *opts,
                                int (*body)(tether_scope *s, void *arg), void *arg,
                                tether_result *result);

/*
 * TETHER_SCOPE_GUARD(var, opts) — declare `tether_scope *var`, opened with
 * opts (NULL for defaults), that is joined (if not already) and freed when
 * the enclosing block is left by any path: end of block, return, break,
 * goto. If opening fails, var is NULL and tether_spawn on it returns EINVAL.
 * Call tether_scope_join inside the block to get the result. GCC and Clang
 * only (the cleanup attribute).
 */
#if defined(__GNUC__)
#define TETHER_SCOPE_GUARD(var, opts) \
    tether_scope *var __attribute__((cleanup(tether__scope_guard_end))) = \
        tether__scope_guard_begin(opts)
#endif

/* Internal to TETHER_SCOPE_GUARD; use the macro instead. */
TETHER_API tether_scope *tether__scope_guard_begin(const tether_scope_opts *opts);
/* Internal to TETHER_SCOPE_GUARD; use the macro instead. */
TETHER_API void tether__scope_guard_end(tether_scope **s);

/* ======================================================================
 * Retry with backoff
 *
 * tether_retry calls an attempt function until it succeeds, fails with an
 * error that is not worth retrying, runs out of attempts or of its time
 * budget, or the calling thread's current token is cancelled or reaches its
 * deadline. Between attempts it sleeps for an exponentially growing delay
 * with jitter (the four strategies of the AWS Architecture Blog's
 * "Exponential Backoff And Jitter"). The backoff sleep is a cancellation
 * point of the current token, exactly like tether_sleep_until: a cancel
 * during it returns at once.
 *
 * The delay before retry n (n = 0 before the second attempt) starts from
 *   d(0) = initial_delay_ns,  d(n) = min(max_delay_ns, d(n-1) * multiplier)
 * (repeated double multiplication, truncated to whole nanoseconds), and the
 * jitter strategy turns it into the sleep s(n):
 *   NONE          s = d(n)
 *   FULL          s = random_between(0, d(n))
 *   EQUAL         s = d(n)/2 + random_between(0, d(n) - d(n)/2)
 *   DECORRELATED  s = min(max_delay_ns, random_between(initial_delay_ns, 3 * s(n-1)))
 *                 with s(-1) = initial_delay_ns (multiplier unused)
 * where random_between(lo, hi) = lo + x mod (hi - lo + 1), inclusive, and x
 * is the next output of a splitmix64 generator owned by the call, its state
 * starting at opts.seed (never rand()); NONE draws nothing. Integer division truncates; 3 * s saturates. With a fixed seed
 * the sleeps are the same on every run. An attempt may raise the next sleep
 * to a minimum of its own with tether_retry_after (a server's retry-after
 * hint); the hint does not feed back into the sequence above.
 *
 * Limits are checked before every attempt and before every sleep:
 *  - no attempt starts once the current token is cancelled, or at or past its
 *    effective deadline or (after the first) the end of max_elapsed_ns;
 *  - a sleep that would end at or past the deadline or the end of the budget
 *    is not started: the call returns at once (ETIMEDOUT for the deadline,
 *    the last attempt's error for the budget; when both would be crossed,
 *    the earlier of the two decides).
 * tether_retry never cancels the token itself.
 *
 * Example (examples/retry_flaky.c runs this against a flaky local server):
 *
 *   static int fetch(void *arg)       // 0, or an errno such as ECONNREFUSED
 *   {
 *       ...connect, send, tether_read the reply...
 *       if (server_said_busy) {
 *           tether_retry_after(tether_ms(busy_ms));
 *           return EAGAIN;
 *       }
 *       return 0;
 *   }
 *
 *   // Under the current token, e.g. in a scope child with a 3 s deadline:
 *   tether_retry_opts o = { .initial_delay_ns = tether_ms(100),
 *                           .attempt_timeout_ns = tether_ms(300) };
 *   tether_retry_result r;
 *   int rc = tether_retry(fetch, &ctx, &o, &r);
 *   printf("%s after %u attempts: %s\n", tether_retry_stop_name(r.stop),
 *          r.attempts, rc ? strerror(rc) : "ok");
 * ====================================================================== */

/* Jitter strategies; see the formulas above. */
typedef enum tether_retry_jitter {
    TETHER_RETRY_JITTER_FULL = 0,    /* the default */
    TETHER_RETRY_JITTER_NONE,
    TETHER_RETRY_JITTER_EQUAL,
    TETHER_RETRY_JITTER_DECORRELATED
} tether_retry_jitter;

/* Why tether_retry stopped. */
typedef enum tether_retry_stop {
    TETHER_RETRY_STOP_SUCCEEDED = 0, /* an attempt returned 0 */
    TETHER_RETRY_STOP_PERMANENT,     /* the classifier refused the error, or the
                                      * call could not run (EINVAL, ENOMEM) */
    TETHER_RETRY_STOP_EXHAUSTED,     /* max_attempts attempts failed */
    TETHER_RETRY_STOP_BUDGET,        /* max_elapsed_ns would be exceeded */
    TETHER_RETRY_STOP_CANCELED,      /* the current token was cancelled */
    TETHER_RETRY_STOP_DEADLINE       /* the current token's deadline came, or
                                      * the next sleep would cross it */
} tether_retry_stop;

/*
 * tether_retry_stop_name — a short static name for a stop reason
 * ("succeeded", "permanent", "exhausted", "budget", "canceled", "deadline"),
 * or "unknown" for a value outside the enum.
 * Never fails, never blocks, thread-safe.
 */
TETHER_API const char *tether_retry_stop_name(tether_retry_stop stop);

/*
 * The clock tether_retry uses for its own time keeping: the start of the
 * budget, deadline comparisons, and the backoff sleeps. Leave both pointers
 * NULL for the real one (tether_now, and a sleep that is a cancellation
 * point of the current token). A test sets both to run without real waiting:
 * the retry loop then never sleeps by itself.
 *  now:         the current instant, comparable with the current token's
 *               deadline (a fake usually starts at tether_now()).
 *  sleep_until: return 0 once `when` has been reached (a fake advances its
 *               time to `when`), or an error number to stop the retry:
 *               ETIMEDOUT stops it as a deadline, anything else as a cancel.
 *  ctx:         passed to both.
 * Per-attempt timeouts (attempt_timeout_ns) are token deadlines and always
 * run on the real clock.
 */
typedef struct tether_retry_clock {
    tether_time_t (*now)(void *ctx);
    int (*sleep_until)(void *ctx, tether_time_t when);
    void *ctx;
} tether_retry_clock;

/* What on_retry is told before each backoff sleep. */
typedef struct tether_retry_event {
    unsigned attempt;          /* the attempt that just failed, from 1 */
    int error;                 /* its error */
    bool attempt_timed_out;    /* its own attempt_timeout_ns fired */
    int64_t retry_after_ns;    /* its tether_retry_after hint, 0 if none */
    int64_t delay_ns;          /* the sleep about to start (hint applied) */
    int64_t elapsed_ns;        /* since tether_retry was called */
} tether_retry_event;

/* Options for tether_retry. Zero-initialise, then set what you need. */
typedef struct tether_retry_opts {
    int64_t initial_delay_ns;  /* d(0); 0 = 100 ms (use 1 for "almost none") */
    int64_t max_delay_ns;      /* cap on d(n) and s(n); 0 = max(10 s, initial) */
    double multiplier;         /* growth of d(n), >= 1.0; 0 = 2.0 */
    tether_retry_jitter jitter; /* default TETHER_RETRY_JITTER_FULL */
    unsigned max_attempts;     /* attempts in all, first included; 0 = 5;
                                * TETHER_RETRY_UNLIMITED = no limit */
    int64_t max_elapsed_ns;    /* budget from the call's start; 0 = none */
    int64_t attempt_timeout_ns; /* each attempt runs under a child token of
                                 * the current one with this deadline; 0 = none */
    /* Whether an attempt's error is worth another attempt; NULL =
     * tether_retry_transient. Not consulted for 0, nor once the current
     * token is cancelled or past its deadline (never retried). */
    bool (*retryable)(int error, void *ctx);
    /* Called before each backoff sleep (logging, metrics); may be NULL. It
     * may cancel the current token to stop: the sleep then returns at once.
     * Both hooks run in the calling thread, between attempts. */
    void (*on_retry)(const tether_retry_event *ev, void *ctx);
    void *ctx;                 /* passed to retryable and on_retry */
    uint64_t seed;             /* the generator's seed; 0 = from a per-thread
                                * generator seeded by time and thread */
    tether_retry_clock clock;  /* zero = the real clock */
} tether_retry_opts;

/* max_attempts: retry until success, a permanent error, the budget or the
 * token stops it. */
#define TETHER_RETRY_UNLIMITED (~0u)

/* What tether_retry reports. */
typedef struct tether_retry_result {
    int error;                 /* tether_retry's return value */
    int last_error;            /* the last attempt's own return value; 0 if
                                * none ran. Differs from error when a cancel or
                                * deadline stopped the call after an attempt. */
    unsigned attempts;         /* attempts started */
    int64_t slept_ns;          /* total time in backoff sleeps (retry clock) */
    int64_t elapsed_ns;        /* the whole call (retry clock) */
    tether_retry_stop stop;
} tether_retry_result;

/*
 * tether_retry — call attempt(arg) until it succeeds or a stop condition is
 * met, sleeping with backoff between attempts (see above).
 *  attempt: returns 0 for success or a positive error number (a negative
 *           one is passed to the classifier as is). It runs in the calling
 *           thread with the current token, or a child of it when
 *           attempt_timeout_ns is set, as its current token, so tether's
 *           cancellable calls inside it stop with the retry. It must leave
 *           its token entries balanced and free any token or scope it
 *           derived from the child token (else the process aborts with a
 *           message saying so).
 *  arg:     passed to attempt.
 *  opts:    NULL for defaults (100 ms doubling to 10 s, full jitter, 5
 *           attempts, no budget, no per-attempt timeout, transient errors).
 *  result:  if not NULL, receives what happened (always filled, on every
 *           return).
 * Returns 0 when an attempt succeeded (even if a cancel arrived while it
 * ran: its effect stands), or:
 *  ECANCELED  the current token was cancelled: before the first attempt,
 *             during an attempt (not retried, whatever the attempt
 *             returned) or during a sleep (returns at once).
 *  ETIMEDOUT  the current token's effective deadline passed, or the next
 *             sleep would end at or past it (returned without sleeping).
 *             An ETIMEDOUT from an attempt's own attempt_timeout_ns is an
 *             attempt error like any other (retryable by default).
 *  EINVAL     attempt is NULL; a negative delay, budget or timeout;
 *             max_delay_ns below initial_delay_ns; multiplier below 1.0 or
 *             not finite; jitter out of range; only one of clock.now and
 *             clock.sleep_until set. Nothing was attempted.
 *  ENOMEM     the per-attempt child token could not be created.
 *  otherwise  the last attempt's error: permanent (the classifier refused
 *             it), or retryable when max_attempts or max_elapsed_ns ran out.
 * result->stop tells which.
 * Blocks across attempts and sleeps. The backoff sleep is a cancellation
 * point of the current token (a signal handler interrupting it does not end
 * it; cancel from a handler with tether_sigcancel). Thread-safe: any number
 * of threads may retry at once, sharing opts; shared hooks must then be
 * thread-safe. Calls nest (an attempt may itself retry). Ownership: opts and
 * result are the caller's and used only during the call.
 */
TETHER_API int tether_retry(int (*attempt)(void *arg), void *arg,
                            const tether_retry_opts *opts, tether_retry_result *result);

/*
 * tether_retry_after — from inside an attempt, ask that the next attempt
 * start no sooner than min_delay_ns after this one fails (a server's
 * retry-after hint). The next sleep becomes max(s(n), hint): a hint above
 * max_delay_ns is honoured; one that would cross the deadline or the budget
 * stops the retry at once, as any sleep would. Several calls in one attempt
 * keep the largest. Ignored if the attempt succeeds or fails permanently.
 * Applies to the innermost tether_retry running on the calling thread.
 * Returns 0, or:
 *  EINVAL  min_delay_ns is negative.
 *  EPERM   the calling thread is not inside an attempt of tether_retry
 *          (another thread of the attempt, e.g. a scope child, cannot set it).
 * Never blocks. Thread-safe (thread-local).
 */
TETHER_API int tether_retry_after(int64_t min_delay_ns);

/*
 * tether_retry_transient — the default classifier: true for the errors a
 * later attempt may not see again:
 *   EAGAIN (EWOULDBLOCK), EINTR, EBUSY, ETIMEDOUT, ECONNREFUSED, ECONNRESET,
 *   ECONNABORTED, EPIPE, ENETDOWN, ENETUNREACH, ENETRESET, EHOSTDOWN,
 *   EHOSTUNREACH, EADDRNOTAVAIL, ENOBUFS.
 * Everything else is permanent, notably ECANCELED, EIO (usually a failing
 * device, not a passing condition), ENOMEM, EINVAL and 0. ETIMEDOUT counts
 * as transient here because tether_retry never consults the classifier for
 * a timeout of its own token. Never fails, never blocks, thread-safe.
 */
TETHER_API bool tether_retry_transient(int error);

/* (retry section: end) */

#ifdef __cplusplus
}
#endif

/* Name resolution that stops at cancellation (tether_getaddrinfo). */
#include "tether/resolve.h"

#endif /* TETHER_H */
