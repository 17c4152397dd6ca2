/*
 * tether/scope.h — scopes: a scope owns the child threads spawned into it —
 * one thread per child, new or (reuse_threads) parked by an exited child —
 * and tether_scope_join returns only after every child's function has
 * returned and its cleanup ran. The scope owns a token, a child of its parent
 * token; every child runs with its own token (a child of the scope's) as its
 * current token.
 */
#ifndef TETHER_SCOPE_H
#define TETHER_SCOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

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
    /* Hedging: the first child to return 0 wins and the rest are canceled
     * (TETHER_CAUSE_SIBLING_SUCCEEDED); if all fail, failed with the first error. */
    TETHER_POLICY_FIRST_SUCCESS
} tether_policy;

/* What a hostage report is about (see tether_scope_opts.hostage_grace_ns). */
typedef enum tether_hostage_event {
    TETHER_HOSTAGE_HELD = 0,    /* still running grace after the cancel: reported once */
    TETHER_HOSTAGE_INTERRUPTED, /* escalation sent the signal (once per attempt) */
    TETHER_HOSTAGE_RELEASED     /* a reported child finished at last */
} tether_hostage_event;

/* One hostage report, passed to the hook (valid only during the call). */
typedef struct tether_hostage_report {
    tether_hostage_event event;
    const char *scope_name;  /* "" when the scope has none */
    const char *child_name;  /* "" when the child has none */
    int child_index;         /* the child's index in its scope */
    int tid;                 /* the child's kernel thread id (0: not known yet) */
    int64_t since_cancel_ns; /* time from the cancellation to this report */
    const char *blocked_in;  /* system call by name, "syscall N", "running", ... */
    unsigned attempt;        /* INTERRUPTED: 1 for the first signal, then 2, ... */
    int signal;              /* INTERRUPTED: the signal sent; otherwise 0 */
} tether_hostage_report;

/* Options for tether_scope_open. Zero-initialise, then set what you need. */
typedef struct tether_scope_opts {
    tether_policy policy;   /* default fail-fast */
    tether_time_t deadline; /* absolute; 0 = none of its own */
    int64_t timeout_ns;     /* relative to open; 0 = none; with deadline, the earlier wins */
    unsigned max_children;  /* live children at once; 0 = unbounded */
    const char *name;       /* copied: up to 31 bytes, never read past its first NUL */
    tether_token *parent;   /* NULL = the calling thread's current token */
    bool detached;          /* true: no parent at all, even if there is a current token
                             * (or a process root) */
    /* true: run children on threads kept from exited children (of any scope
     * that set this) when one with the same stack_size request is idle; at
     * most 16 idle threads are kept, each for at most 1 s, and tether_trim
     * releases them. A reused thread starts with no current token and no
     * entries, the child's name (or the spawner's when it has none) and the
     * spawner's signal mask, as a new thread would; it keeps the
     * thread-locals of user code (pthread keys, _Thread_local) from its
     * earlier children, whose destructors run when the thread exits. */
    bool reuse_threads;
    /* Hostage watchdog, kept by the thread in tether_scope_join: a child
     * still running hostage_grace_ns after its cancellation is reported. */
    int64_t hostage_grace_ns;                                             /* 0 = no watchdog */
    void (*hostage_hook)(const tether_hostage_report *report, void *arg); /* NULL = stderr */
    void *hostage_arg;     /* passed to hostage_hook */
    bool hostage_escalate; /* also interrupt the hostage's system call with a signal */
    int hostage_signal;    /* the escalation signal, realtime; 0 = SIGRTMIN + 3 */
} tether_scope_opts;

/* Options for tether_spawn. Zero-initialise, then set what you need. */
typedef struct tether_spawn_opts {
    const char *name;   /* copied as tether_scope_opts.name; the thread's name gets 15 */
    int64_t timeout_ns; /* the child's own deadline, relative to spawn; 0 = none.
                                * A child that returns ECANCELED/ETIMEDOUT because this
                                * deadline fired counts as failed (not canceled). */
    size_t stack_size;  /* 0 = the default; otherwise at least PTHREAD_STACK_MIN */
    bool background;    /* halted automatically once the foreground work is done */
} tether_spawn_opts;

#define TETHER_NAME_MAX 32

/*
 * What tether_scope_join reports. Task indexes are the 0-based spawn order
 * within the scope (tether_task_index). Outcome ok: every foreground child
 * succeeded or was halted by tether_task_halt (a halted child that stopped
 * counts in `canceled`; one that returned 0 anyway is a late success). A scope canceled from outside reports error = the cancel's
 * error (tether_token_error of the scope's token: the user's error given to
 * tether_token_cancel on it or an ancestor, else ECANCELED). A scope ended
 * by a deadline is deadline_exceeded: cause deadline for its own, cause
 * parent when an ancestor's deadline capped it; error ETIMEDOUT.
 */
typedef struct tether_result {
    tether_outcome outcome;
    int error;      /* the winning error, 0 if none */
    int error_task; /* its task's index (spawn order), -1 if none */
    char error_task_name[TETHER_NAME_MAX];
    tether_cause cause;                   /* why the scope (or its background) was canceled */
    int cause_task;                       /* the sibling behind SIBLING_FAILED/SUCCEEDED, else -1 */
    int winner;                           /* first-success: index of the winner, else -1 */
    unsigned spawned;                     /* children spawned */
    unsigned succeeded, failed, canceled; /* succeeded + failed + canceled == spawned */
    int64_t convergence_ns;               /* first cancel request to last child's exit; 0 if none */
    unsigned late_succeeded;              /* of the succeeded: late successes (below) */
} tether_result;

/*
 * A late success: a foreground child that returned 0 although its token had
 * already been canceled from above when it returned: by the scope's deadline
 * or cancel (explicit, an ancestor's, a signal), by a sibling's failure
 * (fail-fast), by another child's win (first-success), by tether_scope_run's
 * failing body, or by tether_task_halt. Its effect happened (the value was
 * popped, the row committed) after the scope gave up on it, so the caller
 * may have to use or undo it: late_succeeded counts such children and
 * tether_task_late names them. A late success counts as succeeded, never
 * wins a first-success scope and never changes the outcome (a scope whose
 * deadline passed still ends deadline_exceeded).
 *
 * Not late: a child canceled by its own spawn timeout (nothing above gave up
 * on it: its 0 is an ordinary success); a background child, whose halt at
 * the scope's end (or with the scope) is its normal end, so returning 0 then
 * is how it stops; a child that returned before the cancel. A child that
 * stops because it was canceled should return ECANCELED or ETIMEDOUT (it
 * then counts as canceled); returning 0 says "my work is done".
 */

/*
 * tether_scope_open — open a scope.
 *
 * The scope's token is a child of opts->parent, or of the calling thread's
 * current token, or, in a thread without one, of the process root when
 * there is one (an inherited deadline, see <tether/core.h>), or of nothing
 * (opts->detached: not even the process root). Its deadline is the earlier
 * of opts->deadline and opts->timeout_ns from now.
 *
 * Hostage watchdog (opts->hostage_grace_ns > 0): once the scope is canceled
 * (any cause; for a background child, also the background halt), a child
 * still running hostage_grace_ns later is a *hostage* — blocked where tether
 * cannot reach it, holding the join. It is reported once (event
 * TETHER_HOSTAGE_HELD), and again when it finishes (TETHER_HOSTAGE_RELEASED,
 * "released after X ms"): by default one line on stderr, or through
 * opts->hostage_hook. A report names the scope and the child, its thread id,
 * the time since the cancellation and what the thread is blocked in — the
 * system call read from /proc/self/task/TID/syscall, by name ("read",
 * "futex", "syscall N" for one not in tether's table), "running" when it is
 * not in a system call. The watch is kept by the thread in
 * tether_scope_join, which wakes at cancel + grace (no extra thread), so a
 * scope canceled but not yet joined is reported once its join starts.
 *
 * Escalation (opts->hostage_escalate, opt-in): after the report, the
 * hostage's thread is sent opts->hostage_signal (default SIGRTMIN + 3; any
 * realtime signal) at once, then again after 10 ms, 20 ms, 40 ms, ... (at
 * most 1 s apart) until it finishes; each attempt is reported
 * (TETHER_HOSTAGE_INTERRUPTED). tether installs a handler that does nothing
 * for that signal, without SA_RESTART, on the first scope that asks, and
 * leaves it installed; so a blocking system call in the hostage fails with
 * EINTR. Code that retries on EINTR simply retries (and is interrupted again
 * at the next attempt); the interposition layer, libtether_interpose, turns
 * the interrupted call into ECANCELED.
 *
 * Parameters:
 *  out   receives the scope.
 *  opts  NULL for defaults (fail-fast, no deadline, unbounded, parent = the
 *        current token).
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  out is NULL, policy is out of range, timeout_ns, deadline or
 *          hostage_grace_ns is negative, hostage_escalate is set without
 *          hostage_grace_ns, or hostage_signal is not a realtime signal.
 *  EBUSY   hostage_escalate is set and hostage_signal already has a handler
 *          that is not tether's.
 *  ENOMEM  out of memory.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe; the parent token may be used concurrently.
 * Ownership: The calling thread becomes the scope's owner: it joins and
 * frees it (tether_scope_join, tether_scope_free). The parent token must
 * outlive the scope. opts is used only during the call (the name is
 * copied); hostage_arg must stay valid until the scope is joined.
 */
TETHER_API int tether_scope_open(tether_scope **out, const tether_scope_opts *opts);

/*
 * tether_spawn — start a function on a new thread owned by a scope.
 *
 * The child runs fn(arg) with its own token (a child of the scope's) as its
 * current token, on a new thread, or, in a scope opened with reuse_threads,
 * on a parked thread of an exited child made with the same stack_size
 * request (then no thread is created). With max_children set and the scope full, tether_spawn
 * waits for a free slot; the wait is a cancellation point of the caller's
 * current token and ends at the scope's or the caller's deadline.
 *
 * Parameters:
 *  s     the scope; the owner or any of its children may spawn.
 *  fn    returns 0 for success or an error number.
 *  arg   passed to fn.
 *  opts  NULL for defaults.
 *  task  if not NULL, receives a handle for tether_task_wait/halt, valid
 *        until the scope is joined. Without one, a finished child's thread
 *        and memory are reclaimed early, so a long-lived scope can spawn
 *        without limit.
 * Returns: 0, or an error number; on any error no thread was created.
 * Errors:
 *  EINVAL     s or fn is NULL, stack_size is too small, timeout_ns is
 *             negative, or the scope was already joined.
 *  ECANCELED  the scope is canceled, is finishing (background halted in
 *             join), or the caller was canceled while waiting for a slot.
 *  ETIMEDOUT  a deadline passed (the scope's, or the caller's while waiting).
 *  EAGAIN     the system could not create a thread.
 *  ENOMEM     out of memory.
 *  ECHILD     in a fork child, the scope was opened before the fork (see
 *             Fork in tether/core.h).
 *  otherwise  the scope's token was canceled with an error of its own: that
 *             error (tether_token_error of the scope's token), e.g. a
 *             failing child's error under fail-fast, or the error given to
 *             tether_token_cancel on an ancestor.
 * Blocking: Blocks only while waiting for a slot (max_children), and that
 * wait is a cancellation point; otherwise never blocks.
 * Thread safety: Thread-safe.
 * Ownership: arg stays the caller's and must outlive the child; the task
 * handle belongs to the scope and ends when the scope is joined; opts is used
 * only during the call (the name is copied).
 */
TETHER_API int tether_spawn(tether_scope *s, int (*fn)(void *arg), void *arg,
                            const tether_spawn_opts *opts, tether_task **task);

/*
 * tether_try_spawn — tether_spawn that never waits for a slot.
 *
 * When max_children children are live it fails with EAGAIN instead of
 * waiting. Otherwise as tether_spawn.
 *
 * Parameters:
 *  s     the scope; the owner or any of its children may spawn.
 *  fn    returns 0 for success or an error number.
 *  arg   passed to fn.
 *  opts  NULL for defaults.
 *  task  as for tether_spawn.
 * Returns: 0, or an error number; on any error no thread was created.
 * Errors:
 *  EINVAL     s or fn is NULL, stack_size is too small, timeout_ns is
 *             negative, or the scope was already joined.
 *  ECANCELED  the scope is canceled or is finishing.
 *  ETIMEDOUT  the scope's deadline passed.
 *  EAGAIN     max_children children are live, or the system could not
 *             create a thread.
 *  ENOMEM     out of memory.
 *  ECHILD     in a fork child, the scope was opened before the fork.
 *  otherwise  the scope's token was canceled with an error of its own, as
 *             for tether_spawn.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: As for tether_spawn.
 */
TETHER_API int tether_try_spawn(tether_scope *s, int (*fn)(void *arg), void *arg,
                                const tether_spawn_opts *opts, tether_task **task);

/*
 * tether_task_wait — wait for one child to exit.
 *
 * If the scope's deadline passes while waiting, the wait cancels the scope
 * as tether_scope_join would.
 *
 * Parameters:
 *  task    the child's handle from tether_spawn.
 *  result  if not NULL, receives the child's return value.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL   task is NULL.
 *  EDEADLK  called from that child itself or one of its descendant children
 *           (a child of a scope opened by it, recursively); or called by
 *           the scope's owner (the thread that opened it) on a background
 *           task before tether_scope_join: background children are halted
 *           only by join, so the wait could never end.
 *  ECHILD   in a fork child, the scope was opened before the fork.
 * Blocking: Blocks until the child exits; not a cancellation point (the
 * child is canceled with its scope, so the wait is bounded by the scope's
 * fate).
 * Thread safety: Thread-safe, also concurrently with the owner's
 * tether_scope_join: join waits for threads inside this call to return
 * before it frees the task. A call that starts after join returned uses a
 * freed handle.
 * Ownership: The handle stays valid until the scope is joined.
 */
TETHER_API int tether_task_wait(tether_task *task, int *result);

/*
 * tether_task_halt — cancel one child alone and wait for it to exit.
 *
 * The child is canceled with cause TETHER_CAUSE_HALTED. Its siblings are not
 * touched, and a child halted this way counts as canceled, never as a
 * failure.
 *
 * Parameters:
 *  task    the child's handle from tether_spawn.
 *  result  if not NULL, receives the child's return value.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL   task is NULL.
 *  EDEADLK  called from that child itself or one of its descendant
 *           children; nothing is canceled.
 *  ECHILD   in a fork child, the scope was opened before the fork.
 * Blocking: Blocks until the child exits; not a cancellation point.
 * Thread safety: Thread-safe, also concurrently with the owner's
 * tether_scope_join, as tether_task_wait.
 * Ownership: The handle stays valid until the scope is joined.
 */
TETHER_API int tether_task_halt(tether_task *task, int *result);

/*
 * tether_task_late — whether a child's success was late.
 *
 * True once the child has returned 0 although its token had been canceled
 * from above when it returned: by the scope's deadline or cancel, an
 * ancestor's cancel, a sibling's failure (fail-fast), another child's win
 * (first-success), a failing tether_scope_run body, or tether_task_halt.
 * Its effect happened after the scope gave up on it; it counts as
 * succeeded and in tether_result.late_succeeded, never wins and never
 * changes the outcome. Never late: a child stopped by its own spawn timeout,
 * a background child, a child that returned before the cancel. To
 * compensate per child, wait for the child (tether_task_wait) and ask before
 * the scope is joined: join ends the handle.
 *
 * Parameters:
 *  task  the child's handle from tether_spawn.
 * Returns: true if the child has finished with a late success; false while
 * it runs, if it finished otherwise, if task is NULL, or in a fork child for
 * a scope opened before the fork (its children stayed in the parent).
 * Errors: None.
 * Blocking: Never blocks (a short internal lock); not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: The handle stays valid until the scope is joined.
 */
TETHER_API bool tether_task_late(const tether_task *task);

/*
 * tether_task_token — a child's token.
 *
 * That is the child's current token while it runs.
 *
 * Parameters:
 *  task  the child's handle from tether_spawn.
 * Returns: The token, or NULL for a NULL task.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: The token belongs to the scope; valid until the scope is joined.
 */
TETHER_API tether_token *tether_task_token(tether_task *task);

/*
 * tether_task_index — a child's index in its scope.
 *
 * The 0-based order in which the child was spawned into its scope (every
 * tether_spawn and tether_try_spawn that got as far as creating a thread
 * counts, with or without a handle; if creating the thread failed, that
 * number stays unused): the value tether_result reports in error_task,
 * cause_task and winner.
 *
 * Parameters:
 *  task  the child's handle from tether_spawn.
 * Returns: The index (0 or more), or -1 for a NULL task.
 * Errors: None (a plain accessor: -1 stands for a NULL task).
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: task stays the scope's; valid until the scope is joined.
 */
TETHER_API int tether_task_index(const tether_task *task);

/*
 * tether_scope_token — a scope's token.
 *
 * The children's tokens descend from it.
 *
 * Parameters:
 *  s  the scope.
 * Returns: The token, or NULL for a NULL scope.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: The token belongs to the scope; valid until tether_scope_free
 * returns 0 (it stays valid, canceled or not, after tether_scope_join).
 */
TETHER_API tether_token *tether_scope_token(tether_scope *s);

/*
 * tether_scope_cancel — cancel a scope and all its children.
 *
 * The cancellation has cause TETHER_CAUSE_EXPLICIT.
 *
 * Parameters:
 *  s  the scope.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  s is NULL or already joined.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe: any thread, any number of times, until the
 * scope is joined. A call racing the owner's tether_scope_join and
 * tether_scope_free (a watchdog) is safe if it started before free was
 * called: free waits for it to return. One that starts after free has begun
 * uses a freed handle.
 * Ownership: s stays its owner's.
 */
TETHER_API int tether_scope_cancel(tether_scope *s);

/*
 * tether_scope_join — wait for a scope's children and report how it ended.
 *
 * Waits for every foreground child; then halts the background children
 * (cause TETHER_CAUSE_SCOPE_FINISHED) and waits for their cleanup; joins
 * every thread; releases the children's tokens, task handles and memory.
 * If the scope's deadline passes while waiting, cancels the scope (cause
 * TETHER_CAUSE_DEADLINE, or TETHER_CAUSE_PARENT when an ancestor's deadline
 * capped the scope's) and keeps waiting for the children to exit.
 * Children that returned 0 after the scope gave up on them are counted in
 * result->late_succeeded (see tether_task_late). With the hostage watchdog
 * on (tether_scope_open), join also reports (and, with escalation,
 * interrupts) children still running a grace time after the cancellation;
 * the hook runs on this thread, with no lock held, and must not join or free
 * this scope.
 *
 * Parameters:
 *  s       the scope.
 *  result  if not NULL, receives the outcome (see tether_result).
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL   s is NULL, or the scope was already joined (or is being joined).
 *  EDEADLK  the calling thread is one of the scope's own children, or a
 *           descendant child (a child of a scope opened by one of them,
 *           recursively): it could never return. Decided by the thread's
 *           identity, not its current token: the owner may join with the
 *           scope's token entered (as a tether_scope_run body), and a child
 *           that left its token still gets EDEADLK.
 *  ECHILD   in a fork child, the scope was opened before the fork: its
 *           children stayed in the parent (tether_scope_free releases it).
 * Blocking: Blocks until every child has exited, and until the cancel hooks
 * (tether_hook_on_cancel) running on its children's tokens and its own have
 * returned; not a cancellation point (a scope always waits for its
 * children). Do not hold a lock that a child or such a hook needs to finish.
 * Thread safety: One join per scope; other threads may still cancel it, and
 * threads inside tether_task_wait/halt on its tasks return before it does.
 * Ownership: The scope handle stays valid, in the joined state, until
 * tether_scope_free.
 */
TETHER_API int tether_scope_join(tether_scope *s, tether_result *result);

/*
 * tether_scope_free — free a scope handle.
 *
 * If the scope was not joined yet, it is canceled (cause
 * TETHER_CAUSE_EXPLICIT) and joined first, discarding the result. In a fork
 * child, a scope opened before the fork is released without waiting for its
 * children, which stayed in the parent.
 *
 * Parameters:
 *  s  the scope.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL   s is NULL.
 *  EDEADLK  as tether_scope_join; nothing changes.
 *  EBUSY    the scope is not joined yet and the calling thread runs under
 *           its token (has it or a token below it entered): nothing changes
 *           (not canceled, not joined). Or the scope is joined and a token
 *           created under tether_scope_token(s) is still alive, or some
 *           thread still has the scope's token entered: the scope stays
 *           joined and valid. Either way it can be freed again once that is
 *           undone.
 * Blocking: Blocks if it must join, and while a tether_scope_cancel on s
 * is still running (its callbacks); not a cancellation point.
 * Thread safety: Must not race with other calls on s, except
 * tether_scope_cancel calls that started before free (it waits for them).
 * Ownership: Ends the scope; s is invalid once 0 is returned.
 */
TETHER_API int tether_scope_free(tether_scope *s);

/*
 * tether_scope_run — open a scope, run a body in it, then join and free it.
 *
 * body(scope, arg) runs in the calling thread (Effection's run). If body
 * returns non-zero, the scope is canceled and the outcome is failed with
 * body's error (error_task -1) unless a child failure decided it first.
 *
 * Parameters:
 *  opts    as for tether_scope_open.
 *  body    the function run in the calling thread; it may spawn into the
 *          scope.
 *  arg     passed to body.
 *  result  receives the outcome; may be NULL.
 * Returns: 0, or an error number (body not called).
 * Errors:
 *  EINVAL  body is NULL, or as tether_scope_open.
 *  ENOMEM  out of memory.
 * Blocking: Blocks until body has returned and every child has exited; not
 * itself a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: The scope lives only for the call; arg stays the caller's.
 */
TETHER_API int tether_scope_run(const tether_scope_opts *opts,
                                int (*body)(tether_scope *s, void *arg), void *arg,
                                tether_result *result);

#if defined(__GNUC__)
/*
 * TETHER_SCOPE_GUARD — a scope that is joined and freed when its block ends.
 *
 * Declares `tether_scope *var`, opened with opts, that is joined (if not
 * already) and freed when the enclosing block is left by any path: end of
 * block, return, break, goto. Call tether_scope_join inside the block to get
 * the result. GCC and Clang only (the cleanup attribute).
 *
 * Parameters:
 *  var   the name of the variable to declare.
 *  opts  as for tether_scope_open; NULL for defaults.
 * Returns: A declaration, not a value. If opening fails, var is NULL and
 * tether_spawn on it fails with EINVAL.
 * Errors: None reported; see Returns.
 * Blocking: Leaving the block blocks until every child has exited, as
 * tether_scope_join does.
 * Thread safety: As tether_scope_open and tether_scope_join.
 * Ownership: The block owns the scope; do not free var yourself.
 */
#define TETHER_SCOPE_GUARD(var, opts)                                     \
    tether_scope *var __attribute__((cleanup(tether__scope_guard_end))) = \
        tether__scope_guard_begin(opts)
#endif

/*
 * tether__scope_guard_begin — the opening half of TETHER_SCOPE_GUARD; use
 * the macro instead.
 *
 * Opens a scope as tether_scope_open does.
 *
 * Parameters:
 *  opts  as for tether_scope_open.
 * Returns: The scope, or NULL if opening failed.
 * Errors: None reported (the guard's variable is NULL).
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: As tether_scope_open.
 * Ownership: The scope belongs to the guard's block.
 */
TETHER_API tether_scope *tether__scope_guard_begin(const tether_scope_opts *opts);

/*
 * tether__scope_guard_end — the closing half of TETHER_SCOPE_GUARD; use the
 * macro instead.
 *
 * Joins the scope *s (if not already joined) and frees it; does nothing
 * when *s is NULL.
 *
 * Parameters:
 *  s  the address of the guard's variable.
 * Returns: Nothing.
 * Errors: None reported.
 * Blocking: Blocks until every child has exited, as tether_scope_join.
 * Thread safety: As tether_scope_free.
 * Ownership: Ends the scope the guard's block owned.
 */
TETHER_API void tether__scope_guard_end(tether_scope **s);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_SCOPE_H */
