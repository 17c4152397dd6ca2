/*
 * tether/interpose.h — the interposition layer (libtether_interpose.so).
 *
 * Loaded with LD_PRELOAD, or linked ahead of libc, the layer defines read,
 * recv, poll, nanosleep, getaddrinfo and the other blocking calls listed in
 * docs/retrofit.md. On a thread with no current token each forwards to the
 * next definition (libc's) unchanged; on a thread with one it behaves as the
 * matching tether_* call, so unmodified third-party code blocked in it
 * returns ECANCELED or ETIMEDOUT when the token is cancelled or its deadline
 * passes.
 *
 * The functions below are the layer's own controls. They live in
 * libtether_interpose.so: a program that only preloads the layer can reach
 * them with dlsym(RTLD_DEFAULT, "tether_interpose_...").
 *
 * Environment, read once when the layer is loaded:
 *  TETHER_INTERPOSE_SHUTDOWN=0  do not shut down connected stream sockets
 *                               whose wait the layer cut short (default: do);
 *  TETHER_INTERPOSE_STATS=1     print the per-call counters to stderr at exit.
 */
#ifndef TETHER_INTERPOSE_H
#define TETHER_INTERPOSE_H

#include <tether.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One entry point's counters. */
typedef struct tether_interpose_counter {
    const char *name;  /* the entry point, e.g. "recv" or "__poll_chk" (static) */
    uint64_t seen;     /* calls made by a thread with a current token */
    uint64_t stopped;  /* of those, the ones that ended in ECANCELED/ETIMEDOUT */
} tether_interpose_counter;

/*
 * tether_interpose_counters — a snapshot of every entry point's counters.
 *  out: an array of `max` entries to fill (may be NULL when max is 0).
 * Returns the number of entry points the layer has (fills the first
 * min(max, that number) entries of out, in a fixed order). Calls made with
 * no current token are not counted (that path costs nothing). Each counter
 * is read atomically; the snapshot as a whole is not.
 * Never fails. Blocks only briefly (a lock shared with threads starting or
 * exiting). Thread-safe. The names are static strings.
 */
TETHER_API size_t tether_interpose_counters(tether_interpose_counter *out, size_t max);

/*
 * tether_interpose_set_shutdown — choose what happens to a connected stream
 * socket whose wait the layer cut short (a read, recv, write, send, poll,
 * ppoll, select or pselect on it returned ECANCELED/ETIMEDOUT).
 *  on: true (the default, unless TETHER_INTERPOSE_SHUTDOWN=0): shut it down
 *      with SHUT_RDWR, so the client's next use of the connection fails
 *      cleanly instead of reading the reply that belonged to the abandoned
 *      request; false: leave it as it is (the caller then owns the problem
 *      of a half-finished exchange).
 * Returns the previous setting. Process-wide; takes effect for cuts after
 * it returns. Never fails, never blocks. Thread-safe.
 */
TETHER_API bool tether_interpose_set_shutdown(bool on);

/*
 * tether_interpose_print_counters — write the counters of every entry point
 * that saw a call under a token to stderr, one "tether-interpose: NAME seen N
 * stopped M" line each (what TETHER_INTERPOSE_STATS=1 prints at exit).
 * Never blocks beyond the write. Thread-safe.
 */
TETHER_API void tether_interpose_print_counters(void);

#ifdef __cplusplus
}
#endif

#endif
