/*
 * tether/interpose.h — the interposition layer's controls
 * (libtether_interpose.so, CMake target tether::interpose, pkg-config
 * tether-interpose).
 *
 * Loaded with LD_PRELOAD, or linked ahead of libc, the layer defines read,
 * recv, poll, nanosleep, getaddrinfo and the other blocking calls listed in
 * docs/retrofit.md. On a thread with no current token each forwards to the
 * next definition (libc's) unchanged; on a thread with one it behaves as the
 * matching tether_* call, so unmodified third-party code blocked in it
 * returns ECANCELED or ETIMEDOUT when the token is canceled or its deadline
 * passes.
 *
 * The functions below live in libtether_interpose.so, not libtether: a
 * program that only preloads the layer reaches them with
 * dlsym(RTLD_DEFAULT, "tether_interpose_counters") and so on. <tether.h>
 * does not include this header.
 *
 * Environment, read once when the layer is loaded:
 *  TETHER_INTERPOSE_SHUTDOWN=0  do not shut down connected stream sockets
 *                               whose wait the layer cut short (default: do);
 *  TETHER_INTERPOSE_STATS=1     print the per-call counters to stderr at exit.
 */
#ifndef TETHER_INTERPOSE_H
#define TETHER_INTERPOSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One entry point's counters. */
typedef struct tether_interpose_counter {
    const char *name; /* the entry point, e.g. "recv" or "__poll_chk" (static) */
    uint64_t seen;    /* calls made by a thread with a current token */
    uint64_t stopped; /* of those, the ones that ended in ECANCELED/ETIMEDOUT */
} tether_interpose_counter;

/*
 * tether_interpose_counters — a snapshot of every entry point's counters.
 *
 * Calls made with no current token are not counted (that path costs
 * nothing). Entries come in a fixed order. Each counter is exact; the
 * snapshot as a whole is not atomic.
 *
 * Parameters:
 *  out  an array of max entries to fill (may be NULL when max is 0).
 *  max  how many entries out has room for.
 * Returns: The number of entry points the layer has; the first
 * min(max, that number) entries of out are filled.
 * Errors: None.
 * Blocking: Blocks only briefly (a lock shared with threads that start or
 * stop counting); not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: out is the caller's; the names are static strings.
 */
TETHER_API size_t tether_interpose_counters(tether_interpose_counter *out, size_t max);

/*
 * tether_interpose_set_shutdown — choose what happens to a connected stream
 * socket whose wait the layer cut short.
 *
 * When a read, recv, write, send, poll, ppoll, select or pselect on a
 * connected stream socket returns ECANCELED or ETIMEDOUT, the layer by
 * default shuts the socket down (SHUT_RDWR), so the client's next use of the
 * connection fails cleanly instead of reading the reply that belonged to the
 * abandoned request. The descriptor stays open: the client closes it as
 * usual. A later write to it fails with EPIPE (and raises SIGPIPE unless the
 * program ignores it or the client sends with MSG_NOSIGNAL).
 *
 * Parameters:
 *  on  true: shut such sockets down (the default, unless the environment
 *      has TETHER_INTERPOSE_SHUTDOWN=0); false: leave them as they are.
 * Returns: The previous setting.
 * Errors: None.
 * Blocking: Never blocks; not a cancellation point.
 * Thread safety: Thread-safe; process-wide; applies to cuts after it returns.
 * Ownership: Nothing is allocated.
 */
TETHER_API bool tether_interpose_set_shutdown(bool on);

/*
 * tether_interpose_print_counters — print the counters of every entry point
 * that saw a call under a token.
 *
 * One line each on stderr, "tether-interpose: NAME seen N stopped M": what
 * TETHER_INTERPOSE_STATS=1 prints at exit.
 *
 * Parameters: None.
 * Returns: Nothing.
 * Errors: None.
 * Blocking: Blocks only to write to stderr; not a cancellation point.
 * Thread safety: Thread-safe.
 * Ownership: Nothing is allocated.
 */
TETHER_API void tether_interpose_print_counters(void);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_INTERPOSE_H */
