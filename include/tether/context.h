/*
 * tether/context.h — request context: a short string (a request id, a trace
 * id) attached to a token and seen by every token below it. A lookup walks
 * up the tree at the time of the lookup and returns the nearest value, so a
 * value set on a scope's token is what every child of that scope, their
 * nested scopes and a pool job run under it see, and what tether_dump shows
 * on that token. A fork child keeps the values of the tokens it inherited;
 * a value set in either process afterwards stays in that process.
 */
#ifndef TETHER_CONTEXT_H
#define TETHER_CONTEXT_H

#include <stddef.h>

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The size of a buffer that holds any context value with its NUL: a value
 * is at most TETHER_CONTEXT_MAX - 1 (127) bytes. */
#define TETHER_CONTEXT_MAX 128

/*
 * tether_token_set_context — attach a context value to a token.
 *
 * The value is copied; setting a token's value again replaces it, and NULL
 * removes it, so that its descendants see the nearest ancestor's value
 * again. Any bytes but NUL may appear in a value (tether_dump escapes
 * quotes, backslashes and control characters); the empty string is a value
 * like any other and hides the ancestors' values. Only t's own value
 * changes: a descendant's own value, if it has one, still wins below it. A
 * canceled or expired token takes a value like a live one.
 *
 * Parameters:
 *  t      the token.
 *  value  a NUL-terminated string of at most 127 bytes (never read past
 *         its first NUL or its 128th byte), or NULL to remove t's value.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  t is NULL.
 *  ERANGE  value is longer than 127 bytes (no NUL in its first 128);
 *          nothing changes.
 *  ENOMEM  out of memory for the copy; nothing changes.
 * Blocking: Never blocks (a short internal lock); not a cancellation point.
 * Thread safety: Thread-safe, also while other threads look the value up
 * from t or any descendant: each lookup sees the old value or the new one
 * whole, never a mix. Must not race with tether_token_free of t.
 * Ownership: value stays the caller's; t keeps its own copy, freed with t.
 */
TETHER_API int tether_token_set_context(tether_token *t, const char *value);

/*
 * tether_token_context — the context value a token sees.
 *
 * The value of t itself if it has one, else that of its nearest ancestor
 * that has one. Looked up now: a value set on an ancestor after t was
 * created is seen, and so is a replacement. A lookup that finds no value
 * takes no lock.
 *
 * Parameters:
 *  t     the token.
 *  buf   receives the value, NUL-terminated.
 *  size  buf's size in bytes; TETHER_CONTEXT_MAX always suffices.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  t or buf is NULL.
 *  ENOENT  neither t nor any ancestor has a value; buf is untouched.
 *  ERANGE  the value and its NUL do not fit in size bytes; buf is
 *          untouched.
 * Blocking: Never blocks (a short internal lock); not a cancellation point.
 * Thread safety: Thread-safe, also while another thread sets or removes a
 * value on t or an ancestor (see tether_token_set_context).
 * Ownership: t stays the caller's; the copy in buf is the caller's.
 */
TETHER_API int tether_token_context(const tether_token *t, char *buf, size_t size);

/*
 * tether_context — the context value the calling thread's current token
 * sees.
 *
 * tether_token_context(tether_current(), buf, size), with ENOENT, not
 * EINVAL, when there is no current token: in a scope's child, a pool job
 * run by tether_job_run or a tether_with_deadline block, the value set on
 * the scope, the job's parent or any token above them.
 *
 * Parameters:
 *  buf   receives the value, NUL-terminated.
 *  size  buf's size in bytes; TETHER_CONTEXT_MAX always suffices.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  buf is NULL.
 *  ENOENT  there is no current token, or neither it nor any ancestor has a
 *          value; buf is untouched.
 *  ERANGE  the value and its NUL do not fit in size bytes; buf is
 *          untouched.
 * Blocking: Never blocks (a short internal lock); not a cancellation point.
 * Thread safety: Thread-safe. Not async-signal-safe: a handler that
 * interrupted a lookup or a set in its own thread would wait for itself.
 * Ownership: The copy in buf is the caller's.
 */
TETHER_API int tether_context(char *buf, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_CONTEXT_H */
