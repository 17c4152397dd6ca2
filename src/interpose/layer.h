/*
 * layer.h: what the files of libtether_interpose.so share (not installed).
 *
 *   interpose.c  the next definitions, counters, controls, environment,
 *                fork handlers, init/exit; enter/leave/cut
 *   io.c         read/write families, connect, accept (and __*_chk)
 *   wait.c       poll/select/epoll waits, sleeps, getaddrinfo (and __*_chk)
 *
 * Every entry point has the same shape:
 *  - no current token, or the thread is already inside the layer: call the
 *    next definition (libc's), found once with dlsym(RTLD_NEXT) and kept in
 *    an atomic pointer. That path is a thread-local load, a test and a
 *    jump through the pointer: nothing a system call notices.
 *  - otherwise: mark the thread as inside the layer (so whatever the tether
 *    call does through interposable names reaches libc, not us), call the
 *    matching tether_* function, count the call, and if it was stopped
 *    (ECANCELED/ETIMEDOUT) shut down the connected stream sockets involved
 *    so a later use of the connection fails cleanly (see cut).
 * A stopped call never reports EINTR: a signal that raced with the
 * cancellation is reported as the cancellation, or clients that retry EINTR
 * would spin on a sticky cancel.
 *
 * The state below is shared across the files with hidden visibility, so the
 * fast path reads it exactly as it would a file's static.
 */
#ifndef TETHER_INTERPOSE_LAYER_H
#define TETHER_INTERPOSE_LAYER_H

#include <tether.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <sys/types.h>

#define LAYER_API    __attribute__((visibility("default")))
#define LAYER_HIDDEN __attribute__((visibility("hidden")))
/* The routed half of a hot wrapper: kept out of line so that the no-token
 * half is a leaf that saves no registers. */
#define NOINLINE     __attribute__((noinline))

/* The calling thread's current token: libtether's own thread-local,
 * exported for this one reader (src/internal.h). Read directly, it makes the
 * no-token path a TLS load and a test instead of a call. */
extern _Thread_local tether_token *tether__current __attribute__((tls_model("initial-exec")));

/* glibc's fortify failure ("*** buffer overflow detected ***"). The
 * reserved __*_chk names in this layer are glibc's ABI: the layer must
 * define (and call) exactly those names, hence the NOLINTs. */
// NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp)
extern void __chk_fail(void) __attribute__((noreturn));

/* Every name the layer defines; entry_name (interpose.c) spells them. */
enum entry {
    E_READ,
    E_READV,
    E_RECV,
    E_RECVFROM,
    E_RECVMSG,
    E_WRITE,
    E_WRITEV,
    E_SEND,
    E_SENDTO,
    E_SENDMSG,
    E_CONNECT,
    E_ACCEPT,
    E_ACCEPT4,
    E_POLL,
    E_PPOLL,
    E_SELECT,
    E_PSELECT,
    E_EPOLL_WAIT,
    E_EPOLL_PWAIT,
    E_EPOLL_PWAIT2,
    E_NANOSLEEP,
    E_CLOCK_NANOSLEEP,
    E_USLEEP,
    E_SLEEP,
    E_READ_CHK,
    E_RECV_CHK,
    E_RECVFROM_CHK,
    E_POLL_CHK,
    E_PPOLL_CHK,
    E_GETADDRINFO,
    E_COUNT
};

/* The next definition of each name (NULL until resolved, or if absent). */
LAYER_HIDDEN extern void *_Atomic tether__layer_next_fn[E_COUNT];

/* Nonzero while this thread is inside the layer (in a tether call). */
LAYER_HIDDEN extern _Thread_local int tether__layer_depth
    __attribute__((tls_model("initial-exec")));

/* Resolves every name once, then returns entry e's next definition; aborts
 * with a message if libc lacks it. Cold: only before the constructor ran. */
LAYER_HIDDEN void *tether__layer_next_slow(enum entry e);

/* Enters the layer and counts a routed call of entry e. */
LAYER_HIDDEN void tether__layer_enter(enum entry e);

/* After a tether call that returned `failed` (true for -1): leaves the
 * layer, turns an EINTR that raced with a cancel into the cancel, and counts
 * a stop. Returns true if the call was stopped by the token. */
LAYER_HIDDEN bool tether__layer_leave(enum entry e, bool failed);

/* Shuts down fd if it is a connected stream socket (and shutting down is
 * on: tether_interpose_set_shutdown); errno is kept. */
LAYER_HIDDEN void tether__layer_cut(int fd);

/* Entry e's next definition, resolved on first use by any thread (a
 * constructor of another library may call read before ours has run). */
static inline void *next(enum entry e)
{
    void *p = atomic_load_explicit(&tether__layer_next_fn[e], memory_order_acquire);
    return __builtin_expect(p != NULL, 1) ? p : tether__layer_next_slow(e);
}

/* Whether the thread is under no token at all: no current token, and no
 * process root (libtether's tether__root_check, core.h, is zero once the
 * process is known to have none; until the first call resolves that, calls
 * go to tether, which resolves it). */
static inline bool untethered(void)
{
    return tether__current == NULL && __atomic_load_n(&tether__root_check, __ATOMIC_RELAXED) == 0;
}

/*
 * The fast path's test: entry e's next definition when the thread is under
 * no token and that definition is resolved, else NULL (then the wrapper's
 * out-of-line routed half decides). Both outcomes end in a tail call, so
 * the forwarding wrapper saves no registers.
 */
static inline void *fast(enum entry e)
{
    void *p = atomic_load_explicit(&tether__layer_next_fn[e], memory_order_acquire);
    return __builtin_expect(untethered(), 1) ? p : NULL;
}

/* True when the call is to go to tether: a current token or the process
 * root, not re-entered. */
static inline bool routed(void)
{
    return __builtin_expect(!untethered(), 0) && !tether__layer_depth;
}

static inline void enter(enum entry e)
{
    tether__layer_enter(e);
}

static inline bool leave(enum entry e, bool failed)
{
    return tether__layer_leave(e, failed);
}

static inline void cut(int fd)
{
    tether__layer_cut(fd);
}

#endif
