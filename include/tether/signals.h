/*
 * tether/signals.h — canceling from a signal handler, and graceful shutdown
 * on SIGINT/SIGTERM.
 *
 * A signal handler cannot take locks, so it cannot walk a token tree. A
 * tether_sigcancel is a small relay set up ahead of time: firing it from a
 * handler only writes to an eventfd, and a relay thread (created by
 * tether_sigcancel_new, the only thread tether creates on its own) performs
 * the cancellation with cause TETHER_CAUSE_SIGNAL. tether_signals_install
 * builds on it; it installs handlers only when called.
 */
#ifndef TETHER_SIGNALS_H
#define TETHER_SIGNALS_H

#include <stdbool.h>
#include <stddef.h>

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tether_sigcancel tether_sigcancel;

/*
 * tether_sigcancel_new — prepare a signal-safe canceler for a token.
 *
 * Starts the relay thread (with every signal blocked in it).
 *
 * Parameters:
 *  out    receives the handle.
 *  t      the token to cancel; it must outlive the handle.
 *  error  the error number recorded for the cancellation (0: ECANCELED).
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL         out or t is NULL.
 *  ENOMEM         out of memory.
 *  EMFILE/ENFILE  no eventfd.
 *  EAGAIN         no relay thread.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: The caller ends the handle with tether_sigcancel_free.
 */
TETHER_API int tether_sigcancel_new(tether_sigcancel **out, tether_token *t, int error);

/*
 * tether_sigcancel_fire — request the cancellation, from a signal handler.
 *
 * One write(2) to an eventfd; errno is preserved. The token is canceled
 * shortly after by the relay thread (a few microseconds). Firing again is
 * harmless; a NULL sc is ignored. In a fork child, a handle made before the
 * fork is inert: firing it does nothing.
 *
 * Parameters:
 *  sc  the handle.
 * Returns: Nothing.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Async-signal-safe and thread-safe; must not race with
 * tether_sigcancel_free.
 * Ownership: sc stays the caller's.
 */
TETHER_API void tether_sigcancel_fire(tether_sigcancel *sc);

/*
 * tether_sigcancel_free — stop the relay thread and free the handle.
 *
 * A fire that happened before this call has taken effect when it returns.
 * In a fork child, a handle made before the fork is freed without waiting
 * for the parent's relay thread.
 *
 * Parameters:
 *  sc  the handle.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  sc is NULL.
 * Blocking: Blocks briefly to join the relay thread; not a cancellation
 * point.
 * Thread safety: Must not race with other calls on sc.
 * Ownership: Ends the handle.
 */
TETHER_API int tether_sigcancel_free(tether_sigcancel *sc);

/* Graceful shutdown on SIGINT/SIGTERM (tether_signals_install). */
typedef struct tether_signals tether_signals;

/* Options for tether_signals_install. Zero-initialise. */
typedef struct tether_signals_opts {
    const int *signals; /* the signals to catch; NULL = SIGINT and SIGTERM */
    size_t nsignals;    /* entries in signals (at most 8) */
    int error;          /* recorded as the token's error; 0 = ECANCELED */
    bool escalate;      /* a second signal restores the default disposition
                             and re-raises it: the process dies as it would
                             have without tether */
} tether_signals_opts;

/*
 * tether_signals_install — turn signals into a graceful cancellation of a
 * token.
 *
 * Through a tether_sigcancel, the first signal cancels t (cause
 * TETHER_CAUSE_SIGNAL); later ones are ignored, or with escalate the second
 * one restores the default disposition and re-raises the signal. Installs
 * sigaction handlers (SA_RESTART) only when called; the previous
 * dispositions are restored by tether_signals_restore.
 *
 * Parameters:
 *  out   receives the handle.
 *  t     the token to cancel; it must outlive the handle.
 *  opts  NULL for defaults (SIGINT and SIGTERM, ECANCELED, no escalation).
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL     out or t is NULL, nsignals is 0 or above 8 with signals set,
 *             or a signal cannot be caught.
 *  EBUSY      already installed: one at a time per process (in a fork
 *             child, one inherited from the parent does not count).
 *  otherwise  the errors of tether_sigcancel_new.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Not thread-safe with other calls that change the same
 * signals' dispositions.
 * Ownership: The caller ends the handle with tether_signals_restore; opts is
 * used only during the call (the signal list is copied).
 */
TETHER_API int tether_signals_install(tether_signals **out, tether_token *t,
                                      const tether_signals_opts *opts);

/*
 * tether_signals_fired — how many of the signals arrived since install.
 *
 * Parameters:
 *  h  the handle.
 * Returns: The count, or 0 for NULL.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: h stays the caller's.
 */
TETHER_API unsigned tether_signals_fired(const tether_signals *h);

/*
 * tether_signals_restore — put the previous signal dispositions back, then
 * free the handle.
 *
 * A signal that arrived before has taken effect on the token when it
 * returns. In a fork child, an installation made before the fork cancels
 * nothing; restoring it puts the previous dispositions back unless the
 * child has installed its own since, and returns 0 without waiting for the
 * parent's relay thread.
 *
 * Parameters:
 *  h  the handle.
 * Returns: 0, or an error number.
 * Errors:
 *  EINVAL  h is NULL.
 * Blocking: Blocks briefly (joins the relay thread); not a cancellation
 * point.
 * Thread safety: Not thread-safe with other calls on h or that change the
 * same signals' dispositions.
 * Ownership: Ends the handle.
 */
TETHER_API int tether_signals_restore(tether_signals *h);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_SIGNALS_H */
