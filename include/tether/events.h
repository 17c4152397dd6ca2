/*
 * tether/events.h — event hooks: one registration per process of functions
 * tether calls, synchronously, when a scope opens or is joined, a child
 * starts or exits, and a token is canceled. Enough to write one log line
 * per request or to feed a tracer.
 *
 * Each hook is called in the thread where the event happens, with no tether
 * lock held, and must return promptly: the thread it runs in is doing the
 * scope's work (or canceling) and waits for it. Which thread:
 *   scope_opened    the thread that called tether_scope_open (or
 *                   tether_scope_run), once the scope is open.
 *   scope_joined    the thread that joined it (tether_scope_join, or free,
 *                   tether_scope_run or the guard, which join), once every
 *                   child has exited, with the scope's result.
 *   child_started   the child's own thread, under the child's token (its
 *                   current token), before the child's function runs.
 *   child_exited    the child's own thread, right after its function
 *                   returned, with the value it returned; before the scope
 *                   counts the exit, so it happens before the join returns.
 *   token_canceled  the thread whose cancel won, once the token and its
 *                   descendants are canceled and its cancel callbacks ran:
 *                   the caller of tether_token_cancel or
 *                   tether_scope_cancel, a child whose failure or win
 *                   canceled its scope, a joining thread halting the
 *                   background, tether_task_halt's caller, a thread that
 *                   found a deadline passed, tether's timer thread, or a
 *                   signal relay thread. It is under the constraints of a
 *                   cancel callback: it must not block, and it must not free
 *                   the token it reports (tether_token_free of it from the
 *                   hook returns EBUSY). The token stays valid during the
 *                   call: a free from another thread waits for the hook.
 *                   Descendants canceled with it (cause parent) are not
 *                   reported one by one.
 * A hook may call tether functions (tether_token_context on the token it
 * is given, to print the request id a parent set with
 * tether_token_set_context; tether_token_cause, tether_cause_name,
 * tether_outcome_name, the dump, tether_token_cancel on another token,
 * ...), but not tether_events_set, and not one that waits for the scope the
 * event is about (joining it from child_started would never return).
 */
#ifndef TETHER_EVENTS_H
#define TETHER_EVENTS_H

#include "base.h"
#include "core.h"
#include "scope.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The hooks of tether_events_set. Zero-initialise, then set the hooks you
 * want; a NULL hook is not called. `arg` is passed to every hook. Names are
 * the scope's or child's name as tether keeps it ("" when unnamed); tokens
 * are the scope's or child's own token.
 */
typedef struct tether_events {
    void *arg;
    void (*scope_opened)(void *arg, tether_scope *scope, const char *name, tether_token *token);
    void (*scope_joined)(void *arg, tether_scope *scope, const char *name, tether_token *token,
                         const tether_result *result);
    void (*child_started)(void *arg, tether_scope *scope, int index, const char *name,
                          tether_token *token);
    void (*child_exited)(void *arg, tether_scope *scope, int index, const char *name,
                         tether_token *token, int result);
    void (*token_canceled)(void *arg, tether_token *token, tether_cause cause, int error);
} tether_events;

/*
 * tether_events_set — register the process's event hooks, or clear them.
 *
 * Copies *ev and publishes the copy; NULL clears the registration. There is
 * one registration per process: a call replaces the previous one. When the
 * call returns, no call of a previous registration's hooks is in progress
 * and none will start: the call waits for hook calls already running (each
 * reads the registration once, when its event happens, and uses that copy
 * to the end of the call). Events that happen while it waits see either
 * registration. So once it returns, the previous registration's arg may be
 * freed. With no registration each place an event could happen costs one
 * relaxed load.
 *
 * A fork child keeps the registration (the hooks' code is in it too).
 *
 * Parameters:
 *  ev  the hooks to copy, or NULL to clear.
 * Returns: 0, or an error number.
 * Errors:
 *  EDEADLK  called from inside a hook (it would wait for itself).
 *  ENOMEM   out of memory (the previous registration stays).
 * Blocking: Blocks until hook calls in progress in other threads return;
 * not a cancellation point.
 * Thread safety: Thread-safe; concurrent calls take effect one after the
 * other.
 * Ownership: *ev is copied; its arg stays the caller's and must stay valid
 * until a later tether_events_set returns.
 */
TETHER_API int tether_events_set(const tether_events *ev);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_EVENTS_H */
