/*
 * tether/hook.h — work to do when a token is canceled that a callback may
 * not do: cancel hooks, which may block (a protocol-level cancel such as
 * libpq's PQcancel or redis' CLIENT UNBLOCK), and descriptor spans, which
 * shut a socket down if the current token is canceled while they are open.
 */
#ifndef TETHER_HOOK_H
#define TETHER_HOOK_H

#include <stdbool.h>

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A registered cancel hook. */
typedef struct tether_hook tether_hook;

/*
 * tether_hook_on_cancel — run a function that may block once a token is
 * canceled, on a tether helper thread.
 *
 * When t is canceled — by tether_token_cancel on it or an ancestor, by its
 * deadline (fired by the timer thread or observed by a waiter), or at once
 * if it already is — fn(arg) runs exactly once on a hook runner thread:
 * never in the canceler, the timer thread or the registering thread, so it
 * may block (a network round trip to ask a server to stop its work). The
 * cancel itself only queues the hook and wakes a runner; the canceler does
 * not wait for it.
 *
 * Runners are started lazily (none exist before the first hook runs), at
 * most 64 at once, one hook each, so a slow hook never delays another's
 * while fewer than 64 run; beyond that hooks queue and run in cancel order
 * as runners free up. A runner idle for 2 s exits; tether_trim releases
 * idle ones at once. If no runner can be created (EAGAIN, out of memory),
 * the hook stays queued: the next tether_hook_on_cancel or tether_hook_off
 * (of any hook), or the next cancel that queues a hook, tries again, and a
 * runner that finishes its hook runs it.
 *
 * Whoever owns t waits for its hooks: tether_token_free(t) (and so a scope's
 * join, which frees its children's tokens and its own) waits until t's
 * running hooks have returned, and hooks not started yet never run — also
 * one whose token was canceled a moment before but that no runner has
 * picked up (the blocked call it was meant to stop has already returned).
 * A hook therefore must not wait for its own token's owner to free it,
 * must not call tether_token_free on its own token (that returns EBUSY and
 * the token stays its owner's) or tether_scope_join on the scope that owns
 * it, and must end on its own (bound it with a timeout
 * of its own, or run it under a token). A hook runs outside the process
 * root (a deadline inherited from the parent process, see <tether/core.h>):
 * like a shield's clean-up, it still works once that deadline has passed.
 *
 * A fork child has no runners of the parent: hooks queued or running there
 * at the fork do not run in the child; the child starts its own runners.
 *
 * Parameters:
 *  t    the token.
 *  fn   the hook.
 *  arg  passed to fn.
 *  out  receives a handle that must be given to tether_hook_off.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  t, fn or out is NULL.
 *  ENOMEM  out of memory.
 * Blocking: Never blocks (short internal locks); not a cancellation point.
 * Thread safety: Thread-safe; t must not be freed concurrently.
 * Ownership: The caller owns the handle and ends it with tether_hook_off,
 * exactly once, whether or not the hook ran; arg stays the caller's and
 * must stay valid until tether_hook_off returns (or t is freed).
 */
TETHER_API int tether_hook_on_cancel(tether_token *t, void (*fn)(void *arg), void *arg,
                                     tether_hook **out);

/*
 * tether_hook_off — unregister a cancel hook and free its handle.
 *
 * A hook that has not started never runs once this returns. If the hook is
 * running on a runner thread, waits for it to return. From inside the hook
 * itself it returns at once (no deadlock); the handle is then freed when
 * the hook returns.
 *
 * Parameters:
 *  h    the handle from tether_hook_on_cancel.
 *  ran  if not NULL, receives true if the hook ran (or is running, when
 *       called from inside it), false if it was removed before it started
 *       (or its token was freed first).
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  h is NULL.
 * Blocking: Blocks only while the hook runs on another thread: do not hold
 * a lock the hook takes. Not a cancellation point.
 * Thread safety: Thread-safe; h must be unregistered exactly once.
 * Ownership: Ends the handle.
 */
TETHER_API int tether_hook_off(tether_hook *h, bool *ran);

/* A descriptor span: shut a socket down if the current token is canceled. */
typedef struct tether_fd_span tether_fd_span;

/*
 * tether_fd_span_begin — shut a socket down if the current token is
 * canceled before the span ends.
 *
 * For code that blocks on a socket where tether cannot reach it (a
 * library's own poll or read): if the calling thread's current token is
 * canceled (any cause, its deadline included) while the span is open,
 * shutdown(fd, how) runs at once in the canceler (or the timer thread), and
 * the blocked call sees end-of-file or EPIPE. If the token already is
 * canceled, the shutdown runs before this returns. With no current token
 * the span is valid but can never fire, so the same code runs with and
 * without tether.
 *
 * The descriptor must stay open during the span: close it only after
 * tether_fd_span_end, which guarantees that no shutdown runs any more, so
 * the number can be reused at once without being hit. shutdown(2) stops
 * only sockets: for a pipe or a terminal, register a callback
 * (tether_token_on_cancel) that writes to the other end, or run the call
 * through tether's drop-ins (tether_read), which wake on cancel by
 * themselves.
 *
 * Parameters:
 *  fd   a socket, open for the whole span.
 *  how  SHUT_RD, SHUT_WR or SHUT_RDWR, as for shutdown(2).
 *  out  receives the span, which must be given to tether_fd_span_end.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL    out is NULL, or how is not SHUT_RD, SHUT_WR or SHUT_RDWR.
 *  EBADF     fd is not an open descriptor.
 *  ENOTSOCK  fd is not a socket.
 *  ENOMEM    out of memory.
 * Blocking: Never blocks (a short internal lock); not a cancellation point.
 * Thread safety: Thread-safe; the span belongs to the calling thread's
 * current token at the call.
 * Ownership: The caller owns the span and ends it with tether_fd_span_end,
 * exactly once; fd stays the caller's.
 */
TETHER_API int tether_fd_span_begin(int fd, int how, tether_fd_span **out);

/*
 * tether_fd_span_end — end a descriptor span: its shutdown never runs
 * after this returns.
 *
 * If the shutdown is running in a canceler at that moment, waits for it
 * (one system call) to finish, so the descriptor may be closed and its
 * number reused as soon as this returns. May be called from any thread,
 * and after the span's token was freed.
 *
 * Parameters:
 *  s      the span from tether_fd_span_begin.
 *  fired  if not NULL, receives true if the shutdown ran, false if not.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  s is NULL.
 * Blocking: Blocks only while a shutdown of s runs; not a cancellation
 * point.
 * Thread safety: Thread-safe; s must be ended exactly once.
 * Ownership: Ends the span; the descriptor stays open and the caller's.
 */
TETHER_API int tether_fd_span_end(tether_fd_span *s, bool *fired);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_HOOK_H */
