/*
 * tether/resolve.h — name resolution that stops at cancellation and at the
 * deadline: tether_getaddrinfo.
 *
 * glibc's resolver waits in calls that nothing outside libc can reach, so
 * the lookup itself cannot be interrupted. tether_getaddrinfo runs it on a
 * short-lived helper thread and waits for the answer cancellably; a lookup
 * the caller stopped waiting for finishes on its own (bounded by the
 * resolver's timeouts), frees its answer and exits.
 */
#ifndef TETHER_RESOLVE_H
#define TETHER_RESOLVE_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Declared by <netdb.h> only under POSIX feature macros; named here so the
 * prototypes below also compile in strict ISO C. */
struct addrinfo;

/* At most this many lookups run on helper threads at once (abandoned ones
 * included); one more fails with EAI_AGAIN until one of them finishes. */
#define TETHER_GETADDRINFO_MAX_HELPERS 64

/*
 * tether_getaddrinfo — getaddrinfo(3) that stops waiting at cancellation and
 * at the deadline.
 *
 * With no current token it is getaddrinfo(3) itself, on the calling thread.
 * With one, the lookup runs on a detached helper thread and the caller waits
 * for it under the token. An answer that arrived is returned even if a
 * cancellation came meanwhile. A lookup the caller stopped waiting for is
 * not a hostage and holds nothing of the caller's (node, service and hints
 * are copied): its helper finishes when getaddrinfo(3) does, bounded by the
 * resolver's own timeouts (resolv.conf timeout times attempts, 5 s x 2 per
 * name server by default), frees the answer and exits. At most
 * TETHER_GETADDRINFO_MAX_HELPERS helpers run at once;
 * tether_getaddrinfo_drain waits for them. The interposition layer
 * (tether/interpose.h) routes getaddrinfo here under a token.
 *
 * Parameters:
 *  node     as for getaddrinfo(3).
 *  service  as for getaddrinfo(3).
 *  hints    as for getaddrinfo(3), or NULL.
 *  res      receives the list, only when 0 is returned.
 * Returns: What getaddrinfo(3) returns: 0, or an EAI_* code; EAI_SYSTEM with
 * errno set for the errors below.
 * Errors:
 *  EAI_SYSTEM/ECANCELED  (errno) the current token was canceled, before or
 *                        during the lookup.
 *  EAI_SYSTEM/ETIMEDOUT  (errno) the current token's deadline passed.
 *  EAI_SYSTEM/EAGAIN     (errno) no helper thread could be created.
 *  EAI_AGAIN             TETHER_GETADDRINFO_MAX_HELPERS lookups already run.
 *  EAI_MEMORY            no memory for the request.
 *  otherwise             getaddrinfo(3)'s errors.
 * Blocking: Blocks; a cancellation point.
 * Thread safety: Thread-safe; uses the calling thread's current token.
 * Ownership: The caller owns *res and frees it with freeaddrinfo(3); the
 * arguments are copied before the call returns.
 */
TETHER_API int tether_getaddrinfo(const char *node, const char *service,
                                  const struct addrinfo *hints, struct addrinfo **res);

/*
 * tether_getaddrinfo_drain — wait until no tether_getaddrinfo helper thread
 * runs.
 *
 * Counts abandoned lookups too, so a test or a clean shutdown can wait for
 * every helper to be gone.
 *
 * Parameters:
 *  deadline  give up at this instant (TETHER_NEVER: wait as long as it takes).
 * Returns: 0 when none runs, or ETIMEDOUT.
 * Errors:
 *  ETIMEDOUT  some helper still ran at the deadline.
 * Blocking: Blocks; not a cancellation point (it ignores the current token).
 * Thread safety: Thread-safe.
 * Ownership: Nothing is allocated.
 */
TETHER_API int tether_getaddrinfo_drain(tether_time_t deadline);

/*
 * tether_getaddrinfo_running — how many tether_getaddrinfo helper threads run
 * now.
 *
 * Lookups being waited for and abandoned ones alike.
 *
 * Parameters: None.
 * Returns: The number of helper threads running.
 * Errors: None.
 * Blocking: Never blocks (a short internal lock); not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: Nothing is allocated.
 */
TETHER_API int tether_getaddrinfo_running(void);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_RESOLVE_H */
