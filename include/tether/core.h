/*
 * tether/core.h — the core of tether: tokens, the calling thread's current
 * token, in-thread deadlines, and what a fork child may still use. Every
 * other tether header builds on this one (and on <tether/base.h>, which it
 * includes); <tether.h> includes them all. The doc-block layout is
 * described in <tether/base.h>.
 */
#ifndef TETHER_CORE_H
#define TETHER_CORE_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include "base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ======================================================================
 * Tokens
 *
 * A token carries a canceled state and a deadline down a tree. Canceling a
 * token cancels every descendant (cause TETHER_CAUSE_PARENT) and never touches
 * its parent or siblings. A token's effective deadline is the minimum of its
 * own and every ancestor's, so a deadline never loosens going down the tree.
 *
 * A deadline cancels the token that owns it (the token whose own deadline
 * it is) at the deadline, with cause TETHER_CAUSE_DEADLINE, whether or not
 * any thread waits under it, so that descendants and callbacks see it then:
 * tether's timer thread does it, like Go's context timers. There is one
 * timer thread per process, started when the first token with a deadline of
 * its own is created (none while no token has ever had one) and stopped by
 * tether_trim once no live token has one. Every cancellation point enforces
 * deadlines too: a thread blocked under the token wakes when the deadline
 * passes, and the first thread that sees it passed (the timer thread, a
 * cancellation point, tether_token_check, a scope's join) makes the
 * cancellation. If the timer thread cannot be started (no thread can be
 * created), deadlines are still enforced by those waiters, and the next
 * token with a deadline of its own tries again.
 * ====================================================================== */

typedef struct tether_token tether_token;

/*
 * tether_token_new — create a token.
 *
 * A child of a canceled token is born canceled (cause TETHER_CAUSE_PARENT).
 * The new token's effective deadline is min(deadline, the parent's effective
 * deadline). When its own deadline is the earlier one, the token is armed on
 * tether's timer thread (see Tokens above), which cancels it at that
 * deadline; the first such token starts the timer thread.
 *
 * A NULL parent makes a root token, or, in a process that adopted an
 * inherited deadline (see "The process root" in <tether/process.h>), a
 * child of the process root.
 *
 * Parameters:
 *  out       receives the new token.
 *  parent    its parent, or NULL for a root token (under the process root
 *            when there is one).
 *  deadline  its own absolute deadline, or TETHER_NEVER.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  out is NULL.
 *  ENOMEM  out of memory (for the token, or to arm its deadline).
 * Blocking: Never blocks (short internal locks; the first token with a
 * deadline of its own creates the timer thread); not a cancellation point.
 * Thread safety: Thread-safe; the parent may be used concurrently by other
 * threads.
 * Ownership: The caller owns the token and ends it with tether_token_free;
 * the parent must outlive it.
 */
TETHER_API int tether_token_new(tether_token **out, tether_token *parent, tether_time_t deadline);

/*
 * tether_token_free — free a token, unlinking it from its parent.
 *
 * Callbacks still registered on it are detached unrun:
 * tether_token_off_cancel still frees their handles and reports that they
 * did not run. Its cancel hooks (tether_hook_on_cancel) that have not
 * started never run; running ones are waited for.
 *
 * Parameters:
 *  t  the token.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  t is NULL.
 *  EBUSY   t still has child tokens, or some thread has it entered
 *          (tether_token_enter without the matching leave), or the call
 *          comes from the token_canceled event hook reporting t
 *          (tether/events.h) or from one of t's own cancel hooks
 *          (tether/hook.h). Nothing changes.
 * Blocking: Never blocks (a short internal lock), except while cancel hooks
 * of t run on runner threads: it waits for them to return (do not hold a
 * lock such a hook takes), and while a token_canceled event hook reporting t runs in
 * another thread (tether/events.h). Not a cancellation point.
 * Thread safety: Must not race with any other call on the same token (as
 * with pthread_mutex_destroy); calls on other tokens are fine. A
 * tether_token_cancel whose effect the caller has seen (directly, or through
 * a thread it woke) no longer touches t and need not have returned.
 * Ownership: Ends the token; t is invalid once 0 is returned.
 */
TETHER_API int tether_token_free(tether_token *t);

/*
 * tether_token_cancel — cancel a token and all its descendants.
 *
 * The first cancellation wins: its cause and error are kept; later calls are
 * no-ops that still return 0. Threads blocked under the token or a
 * descendant wake and fail with ECANCELED. Callbacks registered on the
 * canceled tokens run synchronously in the calling thread before it
 * returns, so the caller must not hold a lock that a callback takes.
 *
 * Parameters:
 *  t      the token.
 *  error  a user error number recorded as the reason (tether_token_error),
 *         or 0 for plain ECANCELED.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  t is NULL.
 * Blocking: Never waits for other threads (it takes short internal locks and
 * runs the callbacks); not a cancellation point. Not async-signal-safe: use
 * tether_sigcancel_fire from a signal handler.
 * Thread safety: Thread-safe: any thread, any number of times, concurrently.
 * A cancel may be what lets another thread go on to free t (a waiter it
 * woke returns, a scope's join returns): it touches t for the last time
 * before any thread can see its effect, so that free is safe. A cancel that
 * starts after free has begun uses a freed token, as for any handle.
 * Ownership: t stays the caller's.
 */
TETHER_API int tether_token_cancel(tether_token *t, int error);

/*
 * tether_token_check — whether a token is canceled or past its deadline.
 *
 * Observing a passed deadline cancels the token that owns it (cause
 * TETHER_CAUSE_DEADLINE), so that descendants and callbacks see it too.
 *
 * Parameters:
 *  t  the token.
 * Returns: 0 if t is neither canceled nor past its effective deadline,
 * ECANCELED if it is canceled, ETIMEDOUT if it was canceled by a deadline
 * (its own or an ancestor's) or is past its deadline.
 * Errors:
 *  EINVAL  t is NULL.
 * Blocking: Never blocks; not a cancellation point (it is the check one
 * makes).
 * Thread safety: Thread-safe.
 * Ownership: t stays the caller's.
 */
TETHER_API int tether_token_check(tether_token *t);

/*
 * tether_token_cause — why a token was canceled.
 *
 * A deadline that passed becomes a cause once it is observed: by tether's
 * timer thread, normally within a fraction of a millisecond, or by any
 * check. Call tether_token_check first to be sure.
 *
 * Parameters:
 *  t  the token.
 * Returns: The recorded cause, or TETHER_CAUSE_NONE if t is not canceled or
 * is NULL.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: t stays the caller's.
 */
TETHER_API tether_cause tether_token_cause(const tether_token *t);

/*
 * tether_token_root_cause — the cause at the token where a cancellation
 * started.
 *
 * For a token canceled through its parent (TETHER_CAUSE_PARENT), the cause
 * recorded at the ancestor where the cancellation started; otherwise the
 * same as tether_token_cause.
 *
 * Parameters:
 *  t  the token.
 * Returns: The root cause, or TETHER_CAUSE_NONE if t is not canceled or is
 * NULL.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: t stays the caller's.
 */
TETHER_API tether_cause tether_token_root_cause(const tether_token *t);

/*
 * tether_token_error — the error number that canceled a token.
 *
 * That is the user's error given to tether_token_cancel (ECANCELED if it
 * gave 0), ETIMEDOUT for a deadline, the parent's error for
 * TETHER_CAUSE_PARENT, the failing child's error for
 * TETHER_CAUSE_SIBLING_FAILED, and ECANCELED for the other causes.
 *
 * Parameters:
 *  t  the token.
 * Returns: Non-zero exactly when t is canceled: the error number, or 0 if t
 * is not canceled or is NULL.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: t stays the caller's.
 */
TETHER_API int tether_token_error(const tether_token *t);

/*
 * tether_token_deadline — a token's effective deadline.
 *
 * The effective deadline is the minimum over t's own deadline and every
 * ancestor's.
 *
 * Parameters:
 *  t  the token.
 * Returns: The effective deadline, or TETHER_NEVER if there is none or t is
 * NULL.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: t stays the caller's.
 */
TETHER_API tether_time_t tether_token_deadline(const tether_token *t);

/*
 * tether_trim — release what tether keeps for reuse: spare eventfds, idle
 * threads and an idle timer thread.
 *
 * A token gets an eventfd the first time a thread waits for a descriptor
 * under it. When such a token is freed, its eventfd is kept (at most 4 in
 * the process, close-on-exec) for the next token that needs one, so freeing
 * a scope's children costs no close(2) each. Threads of exited children of
 * scopes opened with reuse_threads park for the next child (at most 16, for
 * at most 1 s each). Call this before counting the process's descriptors or
 * threads, e.g. in a leak check; the eventfds are also closed at exit.
 *
 * tether's timer thread (see Tokens) stays once started, asleep, until this
 * stops it: it does so when no live token has a deadline of its own, and
 * leaves it running otherwise. Called on the timer thread itself (from a
 * deadline's callback), it does not stop it. The next token with a deadline
 * of its own starts a new one.
 *
 * Parameters: None.
 * Returns: How many descriptors it closed.
 * Errors: None.
 * Blocking: Blocks until every released idle thread and a stopped timer
 * thread have exited (they are parked or idle, or the timer is finishing a
 * deadline's callbacks, so this is short); not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: Closes only descriptors and ends only threads tether owns.
 */
TETHER_API int tether_trim(void);

/* A registered cancellation callback. */
typedef struct tether_callback tether_callback;

/*
 * tether_token_on_cancel — run a function once when a token is canceled.
 *
 * If t is already canceled, fn runs at once in the calling thread before
 * this returns. Otherwise it runs exactly once, in the thread whose
 * tether_token_cancel canceled t (or an ancestor), even under concurrent
 * cancels; when a deadline canceled it, in the thread that observed the
 * deadline, normally tether's timer thread at the deadline (then fn delays
 * every later deadline while it runs). fn must be short and must not block; it may call any tether
 * function except tether_token_free / tether_scope_free on its own token,
 * and it may unregister itself.
 *
 * Parameters:
 *  t    the token.
 *  fn   the callback.
 *  arg  passed to fn.
 *  out  receives a handle that must be given to tether_token_off_cancel.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  t, fn or out is NULL.
 *  ENOMEM  out of memory.
 * Blocking: Never blocks (a short internal lock) unless fn runs at once and
 * blocks; not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: The caller owns the handle and ends it with
 * tether_token_off_cancel, exactly once; arg stays the caller's.
 */
TETHER_API int tether_token_on_cancel(tether_token *t, void (*fn)(void *arg), void *arg,
                                      tether_callback **out);

/*
 * tether_token_off_cancel — unregister a callback and free its handle.
 *
 * If the callback is running on another thread, waits for it to finish.
 * From inside the callback itself it returns at once (no deadlock); the
 * handle is freed when the callback returns.
 *
 * Parameters:
 *  cb   the handle from tether_token_on_cancel.
 *  ran  if not NULL, receives true if the callback ran (or is running),
 *       false if it was removed before running (or its token was freed
 *       first).
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  cb is NULL.
 * Blocking: Blocks only while the callback runs on another thread: do not
 * hold a lock the callback takes. Not a cancellation point.
 * Thread safety: Thread-safe; cb must be unregistered exactly once.
 * Ownership: Ends the handle.
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
 * tether_current — the calling thread's current token.
 *
 * Parameters: None.
 * Returns: The innermost token the calling thread has entered, or NULL.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe (thread-local).
 * Ownership: The token stays its owner's; do not free it while it is
 * entered.
 */
TETHER_API tether_token *tether_current(void);

/*
 * tether_token_enter — make a token the calling thread's current token.
 *
 * It stays current until the matching tether_token_leave. Entries nest
 * without limit.
 *
 * Parameters:
 *  t  the token.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  t is NULL.
 *  ENOMEM  nesting beyond 16 levels needs memory and none was available.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Affects only the calling thread; t may be entered by many
 * threads at once.
 * Ownership: t stays its owner's; a token that some thread has entered cannot
 * be freed (EBUSY).
 */
TETHER_API int tether_token_enter(tether_token *t);

/*
 * tether_token_leave — undo the innermost tether_token_enter.
 *
 * Parameters:
 *  t  the token that was entered (checked).
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  t is NULL.
 *  EPERM   t is not the calling thread's innermost entered token (nothing
 *          changes).
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Affects only the calling thread: leave on the thread that
 * entered.
 * Ownership: t stays its owner's.
 */
TETHER_API int tether_token_leave(tether_token *t);

/*
 * tether_check — the cancellation check on the current token.
 *
 * tether_token_check on the calling thread's current token, or, in a
 * thread without one, on the process root (<tether/process.h>). With
 * GCC or Clang, tether_check() is inline code in the caller: one
 * thread-local load (tether__check_word, initial-exec) and one load of the
 * word it points to, or of tether__root_check when it is NULL; only when
 * that word is not zero (the token is canceled or has a deadline, or the
 * process root has not been looked at yet or has a deadline) does it call
 * the library's tether_check. The exported function remains (taking its
 * address, or writing (tether_check)(), calls it directly).
 * ABI: compiled callers depend on the exported thread-local
 * tether__check_word being NULL without a current token and otherwise
 * pointing to a 32-bit word that is never zero while the check could fail,
 * and on the exported tether__root_check being a 32-bit word that is never
 * zero while a thread without a token could fail the check; nothing else
 * of the token's layout is visible. Like any initial-exec variable it
 * needs libtether loaded at start-up or with static TLS room (libtether's
 * own current-token variable already does).
 *
 * Parameters: None.
 * Returns: 0 when there is neither a current token nor a process root, or
 * that token is neither canceled nor past its deadline, else ECANCELED or
 * ETIMEDOUT.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point (it is the check one
 * makes).
 * Thread safety: Thread-safe.
 * Ownership: Nothing is allocated.
 */
TETHER_API int tether_check(void);

#if defined(__GNUC__)
extern TETHER_API __thread const unsigned int *tether__check_word
    __attribute__((tls_model("initial-exec")));
extern TETHER_API unsigned int tether__root_check;

/*
 * tether__check_inline — the inline half of tether_check; write
 * tether_check() instead.
 *
 * Reads tether__check_word (not API; only libtether writes it) and the word
 * it points to, or tether__root_check when it is NULL (no current token:
 * that word is not zero while the process root must be looked at), and
 * calls the exported tether_check only when the word read is not zero.
 *
 * Parameters: None.
 * Returns: As tether_check.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: Nothing is allocated.
 */
static inline int tether__check_inline(void)
{
    const unsigned int *w = tether__check_word;
    unsigned int v = w ? __atomic_load_n(w, __ATOMIC_ACQUIRE)
                       : __atomic_load_n(&tether__root_check, __ATOMIC_RELAXED);
    if (__builtin_expect(v != 0, 0))
        return (tether_check)();
    return 0;
}
#define tether_check() tether__check_inline()
#endif

/*
 * tether_with_deadline — run a function under a deadline, in the calling
 * thread.
 *
 * fn(arg) runs in the calling thread under a fresh child token of the
 * current one whose own deadline is `deadline` (like Trio's fail_after or
 * Kotlin's withTimeout, without spawning a thread). fn must leave its token
 * entries balanced and free any token or scope it derived from the block's
 * token, else the process aborts with a message saying so.
 *
 * Parameters:
 *  deadline  the block's own absolute deadline.
 *  fn        the function to run.
 *  arg       passed to fn.
 *  fired     if not NULL, receives true if this block's own deadline fired
 *            while fn ran (the timer thread, a cancellation point in fn, or
 *            a scope fn joined, saw it pass and canceled the block's token);
 *            false if fn finished before that, if an outer deadline or
 *            cancel came first, or if fn was not called.
 * Returns: fn's return value, or an error number if fn was not called.
 * Errors:
 *  EINVAL  fn is NULL.
 *  ENOMEM  the token could not be created or entered.
 * Blocking: Blocks as long as fn does; not itself a cancellation point.
 * Thread safety: Thread-safe; it affects only the calling thread's current
 * token.
 * Ownership: The token lives only for the call; arg stays the caller's.
 */
TETHER_API int tether_with_deadline(tether_time_t deadline, int (*fn)(void *arg), void *arg,
                                    bool *fired);

/*
 * tether_with_timeout — run a function under a timeout, in the calling
 * thread.
 *
 * The same as tether_with_deadline(tether_deadline_after(timeout_ns), fn,
 * arg, fired).
 *
 * Parameters:
 *  timeout_ns  the block's timeout, from now.
 *  fn          the function to run.
 *  arg         passed to fn.
 *  fired       as for tether_with_deadline.
 * Returns: fn's return value, or an error number if fn was not called.
 * Errors:
 *  EINVAL  fn is NULL.
 *  ENOMEM  the token could not be created or entered.
 * Blocking: Blocks as long as fn does; not itself a cancellation point.
 * Thread safety: Thread-safe; it affects only the calling thread's current
 * token.
 * Ownership: The token lives only for the call; arg stays the caller's.
 */
TETHER_API int tether_with_timeout(int64_t timeout_ns, int (*fn)(void *arg), void *arg,
                                   bool *fired);

/* ======================================================================
 * Fork
 *
 * fork(2) may be called while other threads are inside tether (canceling,
 * spawning, waiting, freeing): tether's fork handlers, registered on its
 * first use, hold its process-wide locks across the fork, so the child
 * never finds one held by a thread it does not have. The child has only the
 * thread that called fork. In it:
 *
 * Tokens inherited from the parent stay valid and work: check, cancel,
 * callbacks, new children, enter/leave, free, waits under them, and their
 * request context values (tether/context.h), which the child may replace. The two
 * processes' copies are independent: a cancel in one never wakes, fails or
 * busies a wait in the other (each process gives an inherited token its own
 * wake-up descriptor on first use). Callbacks registered by threads that
 * stayed in the parent never run in the child; those of the forking thread
 * do. A token that such a thread had entered stays entered in the child, so
 * tether_token_free fails there with EBUSY.
 *
 * Deadlines: tether's timer thread (see Tokens) stays in the parent. The
 * child starts its own when it first creates a token or registers a
 * callback, and from then on every armed deadline fires in the child too,
 * those of tokens inherited from the parent included (on the child's copy,
 * running only the forking thread's callbacks). Until then, deadlines in the
 * child are enforced by the threads that wait under them.
 *
 * Scopes opened in the parent: their children are the parent's threads and
 * do not exist in the child. There tether_spawn, tether_try_spawn,
 * tether_scope_join, tether_task_wait and tether_task_halt fail with
 * ECHILD; tether_task_late returns false; tether_scope_cancel returns 0 and cancels the child's copy of the
 * scope's tokens; tether_scope_free releases the handle and what it owns
 * without waiting for any thread and returns 0 (or EBUSY as it documents).
 * Scopes opened in the child are ordinary.
 *
 * A tether_sigcancel or tether_signals handle made in the parent is inert in
 * the child: firing it does nothing (it never reaches the parent's relay),
 * and freeing or restoring it returns 0 without waiting for the parent's
 * relay thread. Dispositions installed by tether_signals_install stay
 * installed in the child, as fork keeps them, but cancel nothing; the child
 * may make its own handles and install its own (the inherited installation
 * no longer counts for EBUSY).
 *
 * A tether_dump_on_signal installation made in the parent is inert in the
 * child in the same way: the signal writes no dump (it never wakes the
 * parent's relay), tether_dump_signal_free returns 0 at once, and the child
 * may install its own. tether_dump in the child lists the inherited tokens
 * and scopes, their children marked as the parent's threads. The hostage
 * watch runs only in tether_scope_join, which fails with ECHILD on an
 * inherited scope; the do-nothing handler of an escalation signal stays
 * installed, as fork keeps dispositions.
 *
 * Everything else (new tokens and scopes, every cancellable call, retry,
 * pool jobs with tether_job_run) works in the child; a job may run under an
 * inherited parent token, and a job whose function forks returns in both
 * processes, each with its own copy of the job's token. As for any fork of
 * a threaded process, a lock of the program's own that another thread held
 * at the fork stays held in the child, and a fork from a signal handler that interrupted a tether call is
 * not covered by these handlers.
 * ====================================================================== */

#ifdef __cplusplus
}
#endif

#endif /* TETHER_CORE_H */
