/*
 * tether/resolve.h — name resolution that stops at cancellation and
 * deadline. Part of libtether; included by <tether.h>.
 */
#ifndef TETHER_RESOLVE_H
#define TETHER_RESOLVE_H

#include <tether.h>

#include <netdb.h>

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
 *  node, service, hints, res: as getaddrinfo(3).
 * With no current token it is getaddrinfo(3) itself, on the calling thread.
 * With one, the lookup runs on a short-lived detached helper thread (glibc's
 * resolver waits in calls nothing outside libc can reach) and the caller
 * waits for it cancellably.
 * Returns what getaddrinfo(3) returns: 0 with *res set (free it with
 * freeaddrinfo), or an EAI_* code. Errors beyond getaddrinfo(3)'s own:
 *  EAI_SYSTEM with errno ECANCELED  the current token was cancelled (before
 *                                   or during the lookup);
 *  EAI_SYSTEM with errno ETIMEDOUT  its deadline passed;
 *  EAI_AGAIN   TETHER_GETADDRINFO_MAX_HELPERS lookups are already running;
 *  EAI_MEMORY  no memory for the request;
 *  EAI_SYSTEM with errno EAGAIN     no helper thread could be created.
 * *res is set only when 0 is returned.
 * What happens to an abandoned lookup: its helper thread is not a hostage
 * and holds nothing of the caller's (node, service and hints are copied). It
 * finishes when getaddrinfo(3) does — bounded by the resolver's own timeouts
 * (resolv.conf "timeout" x "attempts", 5 s x 2 per name server by default) —
 * then frees the answer nobody wants and exits. tether_getaddrinfo_drain
 * waits for such helpers (tests, clean shutdown).
 * Blocks; cancellation point. Thread-safe. The caller owns *res.
 */
TETHER_API int tether_getaddrinfo(const char *node, const char *service,
                                  const struct addrinfo *hints, struct addrinfo **res);

/*
 * tether_getaddrinfo_drain — wait until no tether_getaddrinfo helper thread
 * is running (abandoned lookups included), or until `deadline`.
 * Returns 0 when none runs, ETIMEDOUT if some still ran at the deadline.
 * Blocks (not a cancellation point: it ignores the current token). Thread-
 * safe.
 */
TETHER_API int tether_getaddrinfo_drain(tether_time_t deadline);

/*
 * tether_getaddrinfo_running — how many helper threads run right now
 * (lookups waited for and abandoned ones). Never blocks. Thread-safe.
 */
TETHER_API int tether_getaddrinfo_running(void);

#ifdef __cplusplus
}
#endif

#endif
