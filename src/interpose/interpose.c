/*
 * libtether_interpose.so: the blocking calls of unmodified code, routed to
 * tether when the calling thread has a current token.
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
 *    so a later use of the connection fails cleanly (see set_shutdown).
 * A stopped call never reports EINTR: a signal that raced with the
 * cancellation is reported as the cancellation, or clients that retry EINTR
 * would spin on a sticky cancel.
 */
#define _GNU_SOURCE
#undef _FORTIFY_SOURCE /* we define read, recv, poll...: not their fortified inlines */

#include <tether.h>
#include <tether/interpose.h>

#include <dlfcn.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define LAYER_API __attribute__((visibility("default")))
/* The routed half of a hot wrapper: kept out of line so that the no-token
 * half is a leaf that saves no registers. */
#define NOINLINE __attribute__((noinline))

/* The calling thread's current token: libtether's own thread-local,
 * exported for this one reader (src/internal.h). Read directly, it makes the
 * no-token path a TLS load and a test instead of a call. */
extern _Thread_local tether_token *tether__current __attribute__((tls_model("initial-exec")));

/* glibc's fortify failure ("*** buffer overflow detected ***"). The
 * reserved __*_chk names in this file are glibc's ABI: the layer must define
 * (and call) exactly those names, hence the NOLINTs. */
// NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp)
extern void __chk_fail(void) __attribute__((noreturn));

/* The fortified entry points compilers emit calls to (glibc's prototypes
 * live in its internal headers). */
// NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp)
ssize_t __read_chk(int fd, void *buf, size_t count, size_t buflen);
// NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp)
ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags);
// NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp)
ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags,
                       struct sockaddr *src, socklen_t *srclen);
// NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp)
int __poll_chk(struct pollfd *fds, nfds_t nfds, int timeout_ms, size_t fdslen);
// NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp)
int __ppoll_chk(struct pollfd *fds, nfds_t nfds, const struct timespec *tmo,
                const sigset_t *sigmask, size_t fdslen);

/* ----------------------------------------------------------------------
 * Entry points: names, next definitions, counters
 * ---------------------------------------------------------------------- */

enum entry {
    E_READ, E_READV, E_RECV, E_RECVFROM, E_RECVMSG,
    E_WRITE, E_WRITEV, E_SEND, E_SENDTO, E_SENDMSG,
    E_CONNECT, E_ACCEPT, E_ACCEPT4,
    E_POLL, E_PPOLL, E_SELECT, E_PSELECT,
    E_EPOLL_WAIT, E_EPOLL_PWAIT, E_EPOLL_PWAIT2,
    E_NANOSLEEP, E_CLOCK_NANOSLEEP, E_USLEEP, E_SLEEP,
    E_READ_CHK, E_RECV_CHK, E_RECVFROM_CHK, E_POLL_CHK, E_PPOLL_CHK,
    E_GETADDRINFO,
    E_COUNT
};

static const char *const entry_name[E_COUNT] = {
    [E_READ] = "read", [E_READV] = "readv", [E_RECV] = "recv",
    [E_RECVFROM] = "recvfrom", [E_RECVMSG] = "recvmsg",
    [E_WRITE] = "write", [E_WRITEV] = "writev", [E_SEND] = "send",
    [E_SENDTO] = "sendto", [E_SENDMSG] = "sendmsg",
    [E_CONNECT] = "connect", [E_ACCEPT] = "accept", [E_ACCEPT4] = "accept4",
    [E_POLL] = "poll", [E_PPOLL] = "ppoll", [E_SELECT] = "select", [E_PSELECT] = "pselect",
    [E_EPOLL_WAIT] = "epoll_wait", [E_EPOLL_PWAIT] = "epoll_pwait",
    [E_EPOLL_PWAIT2] = "epoll_pwait2",
    [E_NANOSLEEP] = "nanosleep", [E_CLOCK_NANOSLEEP] = "clock_nanosleep",
    [E_USLEEP] = "usleep", [E_SLEEP] = "sleep",
    [E_READ_CHK] = "__read_chk", [E_RECV_CHK] = "__recv_chk",
    [E_RECVFROM_CHK] = "__recvfrom_chk", [E_POLL_CHK] = "__poll_chk",
    [E_PPOLL_CHK] = "__ppoll_chk",
    [E_GETADDRINFO] = "getaddrinfo",
};

/* The next definition of each name (NULL until resolved, or if absent). */
static void *_Atomic next_fn[E_COUNT];
static pthread_once_t next_once = PTHREAD_ONCE_INIT;

/*
 * Counters. Each thread that makes a call under a token counts into its own
 * block (a plain load and store, no locked instruction on the routed path);
 * the blocks are listed so a reader can sum them, and a thread's counts are
 * folded into `retired` when it exits. A thread whose block could not be
 * allocated counts into `shared` with atomic additions instead.
 */
typedef struct count_block {
    _Atomic uint64_t seen[E_COUNT], stopped[E_COUNT];
    struct count_block *prev, *next;
} count_block;

static pthread_mutex_t blocks_lock = PTHREAD_MUTEX_INITIALIZER;
static count_block *blocks;                              /* guarded by blocks_lock */
static uint64_t retired_seen[E_COUNT], retired_stopped[E_COUNT]; /* likewise */
static count_block shared;
static pthread_key_t block_key;
static pthread_once_t block_key_once = PTHREAD_ONCE_INIT;
static _Thread_local count_block *my_block __attribute__((tls_model("initial-exec")));

static atomic_bool shutdown_on_cut = true;
static bool print_at_exit;

/* Nonzero while this thread is inside the layer (in a tether call). */
static _Thread_local int in_layer __attribute__((tls_model("initial-exec")));

static void resolve_all(void)
{
    for (int e = 0; e < E_COUNT; e++)
        atomic_store_explicit(&next_fn[e], dlsym(RTLD_NEXT, entry_name[e]),
                              memory_order_release);
}

/* The next definition of entry e; resolved on first use by any thread (a
 * constructor of another library may call read before ours has run). */
static __attribute__((noinline, cold)) void *next_slow(enum entry e)
{
    pthread_once(&next_once, resolve_all);
    void *p = atomic_load_explicit(&next_fn[e], memory_order_acquire);
    if (!p) {
        /* Every required name is in any libc the layer can load with; only
         * the fortified ones may be missing, and their callers check. */
        static const char msg[] = "tether-interpose: a libc function is missing\n";
        ssize_t (*w)(int, const void *, size_t) = dlsym(RTLD_NEXT, "write");
        if (w)
            (void)w(2, msg, sizeof msg - 1);
        abort();
    }
    return p;
}

static inline void *next(enum entry e)
{
    void *p = atomic_load_explicit(&next_fn[e], memory_order_acquire);
    return __builtin_expect(p != NULL, 1) ? p : next_slow(e);
}

/*
 * The fast path's test: entry e's next definition when the thread has no
 * current token and that definition is resolved, else NULL (then the
 * wrapper's out-of-line routed half decides). Both outcomes end in a tail
 * call, so the forwarding wrapper saves no registers.
 */
static inline void *fast(enum entry e)
{
    void *p = atomic_load_explicit(&next_fn[e], memory_order_acquire);
    return __builtin_expect(tether__current == NULL, 1) ? p : NULL;
}

/* True when the call is to go to tether: a current token, not re-entered. */
static inline bool routed(void)
{
    return __builtin_expect(tether__current != NULL, 0) && !in_layer;
}

/* At thread exit: fold the thread's counts into the totals. */
static void block_retire(void *arg)
{
    count_block *b = arg;
    pthread_mutex_lock(&blocks_lock);
    for (int e = 0; e < E_COUNT; e++) {
        retired_seen[e] += atomic_load_explicit(&b->seen[e], memory_order_relaxed);
        retired_stopped[e] += atomic_load_explicit(&b->stopped[e], memory_order_relaxed);
    }
    if (b->prev)
        b->prev->next = b->next;
    else
        blocks = b->next;
    if (b->next)
        b->next->prev = b->prev;
    pthread_mutex_unlock(&blocks_lock);
    my_block = NULL;
    free(b);
}

static void block_key_init(void)
{
    if (pthread_key_create(&block_key, block_retire) != 0)
        block_key = (pthread_key_t)-1;
}

/* The calling thread's block, created on its first counted call; NULL if
 * that failed (then `shared` counts for it). */
static count_block *block_get(void)
{
    count_block *b = my_block;
    if (__builtin_expect(b != NULL, 1))
        return b;
    pthread_once(&block_key_once, block_key_init);
    if (block_key == (pthread_key_t)-1 || !(b = calloc(1, sizeof *b)))
        return NULL;
    if (pthread_setspecific(block_key, b) != 0) {
        free(b);
        return NULL;
    }
    pthread_mutex_lock(&blocks_lock);
    b->next = blocks;
    if (blocks)
        blocks->prev = b;
    blocks = b;
    pthread_mutex_unlock(&blocks_lock);
    my_block = b;
    return b;
}

/* Add one to a counter only its own thread writes (or to a shared one). */
static inline void count(_Atomic uint64_t *mine, _Atomic uint64_t *fallback)
{
    if (mine)
        atomic_store_explicit(mine, atomic_load_explicit(mine, memory_order_relaxed) + 1,
                              memory_order_relaxed);
    else
        atomic_fetch_add_explicit(fallback, 1, memory_order_relaxed);
}

static inline void enter(enum entry e)
{
    in_layer++;
    count_block *b = block_get();
    count(b ? &b->seen[e] : NULL, &shared.seen[e]);
}

/*
 * After a tether call that returned `failed` (true for -1): leave the layer,
 * turn an EINTR that raced with a cancel into the cancel, and count a stop.
 * Returns true if the call was stopped by the token.
 */
static bool leave(enum entry e, bool failed)
{
    in_layer--;
    if (!failed)
        return false;
    int err = errno;
    if (err != EINTR && err != ECANCELED && err != ETIMEDOUT)
        return false;
    int c = tether_check();
    if (c == 0) {
        errno = err; /* a real EINTR (a handler ran), or the raw call's ETIMEDOUT */
        return false;
    }
    if (err == EINTR)
        err = c;
    count_block *b = block_get();
    count(b ? &b->stopped[e] : NULL, &shared.stopped[e]);
    errno = err;
    return true;
}

/* Shut down fd if it is a connected stream socket; errno is kept. */
static void cut(int fd)
{
    if (fd < 0 || !atomic_load_explicit(&shutdown_on_cut, memory_order_relaxed))
        return;
    int saved = errno;
    int type = 0;
    socklen_t len = sizeof type;
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM &&
        getpeername(fd, (struct sockaddr *)&peer, &plen) == 0)
        (void)shutdown(fd, SHUT_RDWR);
    errno = saved;
}

static void cut_pollfds(const struct pollfd *fds, nfds_t nfds)
{
    for (nfds_t i = 0; i < nfds; i++)
        cut(fds[i].fd);
}

static ssize_t io_done(enum entry e, ssize_t r, int fd)
{
    if (leave(e, r < 0))
        cut(fd);
    return r;
}

/* ----------------------------------------------------------------------
 * Reads
 * ---------------------------------------------------------------------- */

typedef ssize_t (*read_fn)(int, void *, size_t);
typedef ssize_t (*readv_fn)(int, const struct iovec *, int);
typedef ssize_t (*recv_fn)(int, void *, size_t, int);
typedef ssize_t (*recvfrom_fn)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
typedef ssize_t (*recvmsg_fn)(int, struct msghdr *, int);

static NOINLINE ssize_t routed_read(enum entry e, int fd, void *buf, size_t count)
{
    if (!routed()) /* re-entered, or not resolved yet */
        return ((read_fn)next(E_READ))(fd, buf, count);
    enter(e);
    return io_done(e, tether_read(fd, buf, count), fd);
}

LAYER_API ssize_t read(int fd, void *buf, size_t count)
{
    read_fn f = (read_fn)fast(E_READ);
    if (__builtin_expect(f != NULL, 1))
        return f(fd, buf, count);
    return routed_read(E_READ, fd, buf, count);
}

// NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp)
LAYER_API ssize_t __read_chk(int fd, void *buf, size_t count, size_t buflen)
{
    if (count > buflen)
        __chk_fail();
    read_fn f = (read_fn)fast(E_READ);
    if (__builtin_expect(f != NULL, 1))
        return f(fd, buf, count);
    return routed_read(E_READ_CHK, fd, buf, count);
}

static NOINLINE ssize_t routed_readv(int fd, const struct iovec *iov, int iovcnt)
{
    if (!routed()) /* re-entered, or not resolved yet */
        return ((readv_fn)next(E_READV))(fd, iov, iovcnt);
    enter(E_READV);
    return io_done(E_READV, tether_readv(fd, iov, iovcnt), fd);
}

LAYER_API ssize_t readv(int fd, const struct iovec *iov, int iovcnt)
{
    if (!routed())
        return ((readv_fn)next(E_READV))(fd, iov, iovcnt);
    return routed_readv(fd, iov, iovcnt);
}

static NOINLINE ssize_t routed_recv(enum entry e, int fd, void *buf, size_t len, int flags)
{
    if (!routed()) /* re-entered, or not resolved yet */
        return ((recv_fn)next(E_RECV))(fd, buf, len, flags);
    enter(e);
    return io_done(e, tether_recv(fd, buf, len, flags), fd);
}

LAYER_API ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    recv_fn f = (recv_fn)fast(E_RECV);
    if (__builtin_expect(f != NULL, 1))
        return f(fd, buf, len, flags);
    return routed_recv(E_RECV, fd, buf, len, flags);
}

// NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp)
LAYER_API ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags)
{
    if (len > buflen)
        __chk_fail();
    recv_fn f = (recv_fn)fast(E_RECV);
    if (__builtin_expect(f != NULL, 1))
        return f(fd, buf, len, flags);
    return routed_recv(E_RECV_CHK, fd, buf, len, flags);
}

static NOINLINE ssize_t routed_recvfrom(enum entry e, int fd, void *buf, size_t len, int flags,
                           struct sockaddr *src, socklen_t *srclen)
{
    if (!routed()) /* re-entered, or not resolved yet */
        return ((recvfrom_fn)next(E_RECVFROM))(fd, buf, len, flags, src, srclen);
    enter(e);
    return io_done(e, tether_recvfrom(fd, buf, len, flags, src, srclen), fd);
}

LAYER_API ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *src,
                           socklen_t *srclen)
{
    recvfrom_fn f = (recvfrom_fn)fast(E_RECVFROM);
    if (__builtin_expect(f != NULL, 1))
        return f(fd, buf, len, flags, src, srclen);
    return routed_recvfrom(E_RECVFROM, fd, buf, len, flags, src, srclen);
}

// NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp)
LAYER_API ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags,
                                 struct sockaddr *src, socklen_t *srclen)
{
    if (len > buflen)
        __chk_fail();
    recvfrom_fn f = (recvfrom_fn)fast(E_RECVFROM);
    if (__builtin_expect(f != NULL, 1))
        return f(fd, buf, len, flags, src, srclen);
    return routed_recvfrom(E_RECVFROM_CHK, fd, buf, len, flags, src, srclen);
}

static NOINLINE ssize_t routed_recvmsg(int fd, struct msghdr *msg, int flags)
{
    if (!routed()) /* re-entered, or not resolved yet */
        return ((recvmsg_fn)next(E_RECVMSG))(fd, msg, flags);
    enter(E_RECVMSG);
    return io_done(E_RECVMSG, tether_recvmsg(fd, msg, flags), fd);
}

LAYER_API ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    if (!routed())
        return ((recvmsg_fn)next(E_RECVMSG))(fd, msg, flags);
    return routed_recvmsg(fd, msg, flags);
}

/* ----------------------------------------------------------------------
 * Writes
 * ---------------------------------------------------------------------- */

typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);
typedef ssize_t (*send_fn)(int, const void *, size_t, int);
typedef ssize_t (*sendto_fn)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
typedef ssize_t (*sendmsg_fn)(int, const struct msghdr *, int);

static NOINLINE ssize_t routed_write(int fd, const void *buf, size_t count)
{
    if (!routed()) /* re-entered, or not resolved yet */
        return ((write_fn)next(E_WRITE))(fd, buf, count);
    enter(E_WRITE);
    return io_done(E_WRITE, tether_write(fd, buf, count), fd);
}

LAYER_API ssize_t write(int fd, const void *buf, size_t count)
{
    if (!routed())
        return ((write_fn)next(E_WRITE))(fd, buf, count);
    return routed_write(fd, buf, count);
}

static NOINLINE ssize_t routed_writev(int fd, const struct iovec *iov, int iovcnt)
{
    if (!routed()) /* re-entered, or not resolved yet */
        return ((writev_fn)next(E_WRITEV))(fd, iov, iovcnt);
    enter(E_WRITEV);
    return io_done(E_WRITEV, tether_writev(fd, iov, iovcnt), fd);
}

LAYER_API ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
    if (!routed())
        return ((writev_fn)next(E_WRITEV))(fd, iov, iovcnt);
    return routed_writev(fd, iov, iovcnt);
}

static NOINLINE ssize_t routed_send(int fd, const void *buf, size_t len, int flags)
{
    if (!routed()) /* re-entered, or not resolved yet */
        return ((send_fn)next(E_SEND))(fd, buf, len, flags);
    enter(E_SEND);
    return io_done(E_SEND, tether_send(fd, buf, len, flags), fd);
}

LAYER_API ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    if (!routed())
        return ((send_fn)next(E_SEND))(fd, buf, len, flags);
    return routed_send(fd, buf, len, flags);
}

LAYER_API ssize_t sendto(int fd, const void *buf, size_t len, int flags,
                         const struct sockaddr *dest, socklen_t destlen)
{
    if (!routed())
        return ((sendto_fn)next(E_SENDTO))(fd, buf, len, flags, dest, destlen);
    enter(E_SENDTO);
    return io_done(E_SENDTO, tether_sendto(fd, buf, len, flags, dest, destlen), fd);
}

static NOINLINE ssize_t routed_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    if (!routed()) /* re-entered, or not resolved yet */
        return ((sendmsg_fn)next(E_SENDMSG))(fd, msg, flags);
    enter(E_SENDMSG);
    return io_done(E_SENDMSG, tether_sendmsg(fd, msg, flags), fd);
}

LAYER_API ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    if (!routed())
        return ((sendmsg_fn)next(E_SENDMSG))(fd, msg, flags);
    return routed_sendmsg(fd, msg, flags);
}

/* ----------------------------------------------------------------------
 * Connections (nothing to shut down: not connected yet, or a listener)
 * ---------------------------------------------------------------------- */

typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);
typedef int (*accept_fn)(int, struct sockaddr *, socklen_t *);
typedef int (*accept4_fn)(int, struct sockaddr *, socklen_t *, int);

LAYER_API int connect(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
    if (!routed())
        return ((connect_fn)next(E_CONNECT))(fd, addr, addrlen);
    enter(E_CONNECT);
    int r = tether_connect(fd, addr, addrlen);
    leave(E_CONNECT, r < 0);
    return r;
}

LAYER_API int accept(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
    if (!routed())
        return ((accept_fn)next(E_ACCEPT))(fd, addr, addrlen);
    enter(E_ACCEPT);
    int r = tether_accept(fd, addr, addrlen);
    leave(E_ACCEPT, r < 0);
    return r;
}

LAYER_API int accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
    if (!routed())
        return ((accept4_fn)next(E_ACCEPT4))(fd, addr, addrlen, flags);
    enter(E_ACCEPT4);
    int r = tether_accept4(fd, addr, addrlen, flags);
    leave(E_ACCEPT4, r < 0);
    return r;
}

/* ----------------------------------------------------------------------
 * Readiness waits
 * ---------------------------------------------------------------------- */

typedef int (*poll_fn)(struct pollfd *, nfds_t, int);
typedef int (*ppoll_fn)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
typedef int (*select_fn)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
typedef int (*pselect_fn)(int, fd_set *, fd_set *, fd_set *, const struct timespec *,
                          const sigset_t *);
typedef int (*epoll_wait_fn)(int, struct epoll_event *, int, int);
typedef int (*epoll_pwait_fn)(int, struct epoll_event *, int, int, const sigset_t *);
typedef int (*epoll_pwait2_fn)(int, struct epoll_event *, int, const struct timespec *,
                               const sigset_t *);

static int poll_done(enum entry e, int r, const struct pollfd *fds, nfds_t nfds)
{
    if (leave(e, r < 0))
        cut_pollfds(fds, nfds);
    return r;
}

static NOINLINE int routed_poll(enum entry e, struct pollfd *fds, nfds_t nfds, int timeout_ms)
{
    if (!routed()) /* re-entered, or not resolved yet */
        return ((poll_fn)next(E_POLL))(fds, nfds, timeout_ms);
    enter(e);
    return poll_done(e, tether_poll(fds, nfds, timeout_ms), fds, nfds);
}

LAYER_API int poll(struct pollfd *fds, nfds_t nfds, int timeout_ms)
{
    poll_fn f = (poll_fn)fast(E_POLL);
    if (__builtin_expect(f != NULL, 1))
        return f(fds, nfds, timeout_ms);
    return routed_poll(E_POLL, fds, nfds, timeout_ms);
}

// NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp)
LAYER_API int __poll_chk(struct pollfd *fds, nfds_t nfds, int timeout_ms, size_t fdslen)
{
    if (fdslen / sizeof *fds < nfds)
        __chk_fail();
    poll_fn f = (poll_fn)fast(E_POLL);
    if (__builtin_expect(f != NULL, 1))
        return f(fds, nfds, timeout_ms);
    return routed_poll(E_POLL_CHK, fds, nfds, timeout_ms);
}

static NOINLINE int routed_ppoll(enum entry e, struct pollfd *fds, nfds_t nfds, const struct timespec *tmo,
                    const sigset_t *sigmask)
{
    if (!routed()) /* re-entered, or not resolved yet */
        return ((ppoll_fn)next(E_PPOLL))(fds, nfds, tmo, sigmask);
    enter(e);
    return poll_done(e, tether_ppoll(fds, nfds, tmo, sigmask), fds, nfds);
}

LAYER_API int ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *tmo,
                    const sigset_t *sigmask)
{
    ppoll_fn f = (ppoll_fn)fast(E_PPOLL);
    if (__builtin_expect(f != NULL, 1))
        return f(fds, nfds, tmo, sigmask);
    return routed_ppoll(E_PPOLL, fds, nfds, tmo, sigmask);
}

// NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp)
LAYER_API int __ppoll_chk(struct pollfd *fds, nfds_t nfds, const struct timespec *tmo,
                          const sigset_t *sigmask, size_t fdslen)
{
    if (fdslen / sizeof *fds < nfds)
        __chk_fail();
    ppoll_fn f = (ppoll_fn)fast(E_PPOLL);
    if (__builtin_expect(f != NULL, 1))
        return f(fds, nfds, tmo, sigmask);
    return routed_ppoll(E_PPOLL_CHK, fds, nfds, tmo, sigmask);
}

/*
 * select and pselect as one tether_ppoll over the descriptors in the sets.
 * Readiness maps back as the kernel's select does: readable on POLLIN,
 * POLLHUP or POLLERR; writable on POLLOUT or POLLERR; exceptional on
 * POLLPRI. A descriptor that is not open fails the call with EBADF.
 */
static int select_via_poll(enum entry e, int nfds, fd_set *rd, fd_set *wr, fd_set *ex,
                           const struct timespec *tmo, const sigset_t *sigmask)
{
    if (nfds < 0 || nfds > FD_SETSIZE) {
        errno = EINVAL;
        return -1;
    }
    struct pollfd pfd[FD_SETSIZE];
    nfds_t n = 0;
    for (int fd = 0; fd < nfds; fd++) {
        short ev = 0;
        if (rd && FD_ISSET(fd, rd))
            ev |= POLLIN;
        if (wr && FD_ISSET(fd, wr))
            ev |= POLLOUT;
        if (ex && FD_ISSET(fd, ex))
            ev |= POLLPRI;
        if (ev)
            pfd[n++] = (struct pollfd){.fd = fd, .events = ev};
    }
    enter(e);
    int r = tether_ppoll(pfd, n, tmo, sigmask);
    if (leave(e, r < 0)) {
        cut_pollfds(pfd, n);
        return -1;
    }
    if (r < 0)
        return -1;
    for (nfds_t i = 0; i < n; i++) {
        if (pfd[i].revents & POLLNVAL) {
            errno = EBADF;
            return -1;
        }
    }
    int ready = 0;
    for (nfds_t i = 0; i < n; i++) {
        int fd = pfd[i].fd;
        short re = pfd[i].revents;
        if (rd && FD_ISSET(fd, rd)) {
            if (re & (POLLIN | POLLHUP | POLLERR))
                ready++;
            else
                FD_CLR(fd, rd);
        }
        if (wr && FD_ISSET(fd, wr)) {
            if (re & (POLLOUT | POLLERR))
                ready++;
            else
                FD_CLR(fd, wr);
        }
        if (ex && FD_ISSET(fd, ex)) {
            if (re & POLLPRI)
                ready++;
            else
                FD_CLR(fd, ex);
        }
    }
    return ready;
}

LAYER_API int select(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, struct timeval *tv)
{
    if (!routed())
        return ((select_fn)next(E_SELECT))(nfds, rd, wr, ex, tv);
    if (tv && (tv->tv_sec < 0 || tv->tv_usec < 0 || tv->tv_usec >= 1000000)) {
        errno = EINVAL;
        return -1;
    }
    struct timespec ts, *tsp = NULL;
    tether_time_t end = TETHER_NEVER;
    if (tv) {
        ts = (struct timespec){.tv_sec = tv->tv_sec, .tv_nsec = (long)tv->tv_usec * 1000};
        tsp = &ts;
        end = tether_deadline_after(tether_sec(tv->tv_sec) + tether_us(tv->tv_usec));
    }
    int r = select_via_poll(E_SELECT, nfds, rd, wr, ex, tsp, NULL);
    if (tv) {
        /* Linux's select leaves the time not slept in *tv. */
        int saved = errno;
        int64_t left = end - tether_now();
        if (left < 0)
            left = 0;
        tv->tv_sec = left / 1000000000;
        tv->tv_usec = (left % 1000000000) / 1000;
        errno = saved;
    }
    return r;
}

LAYER_API int pselect(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, const struct timespec *tmo,
                      const sigset_t *sigmask)
{
    if (!routed())
        return ((pselect_fn)next(E_PSELECT))(nfds, rd, wr, ex, tmo, sigmask);
    return select_via_poll(E_PSELECT, nfds, rd, wr, ex, tmo, sigmask);
}

/*
 * epoll: the epoll descriptor itself is readable while any of its events is
 * ready, so wait for that under the token, then collect with a zero-timeout
 * epoll_wait. Another thread may collect the events first: then wait again
 * for what is left of the timeout. The descriptors in the set are unknown
 * here, so a cut epoll wait shuts nothing down (docs/retrofit.md).
 */
static int epoll_via_poll(enum entry e, int epfd, struct epoll_event *events, int maxevents,
                          const struct timespec *tmo, const sigset_t *sigmask)
{
    epoll_wait_fn collect = (epoll_wait_fn)next(E_EPOLL_WAIT);
    tether_time_t end = TETHER_NEVER;
    if (tmo) {
        if (tmo->tv_sec < 0 || tmo->tv_nsec < 0 || tmo->tv_nsec >= 1000000000) {
            errno = EINVAL;
            return -1;
        }
        end = tether_deadline_after(tether_sec(tmo->tv_sec) + tmo->tv_nsec);
    }
    enter(e);
    int r;
    for (;;) {
        r = collect(epfd, events, maxevents, 0);
        if (r != 0)
            break;
        struct timespec left, *lp = NULL;
        if (tmo) {
            int64_t ns = end - tether_now();
            if (ns <= 0)
                break; /* r == 0: the timeout elapsed */
            left = (struct timespec){.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
            lp = &left;
        }
        struct pollfd p = {.fd = epfd, .events = POLLIN};
        r = tether_ppoll(&p, 1, lp, sigmask);
        if (r <= 0)
            break; /* -1: stopped or failed; 0: the timeout elapsed */
    }
    leave(e, r < 0);
    return r;
}

static struct timespec ms_to_timespec(int ms)
{
    return (struct timespec){.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
}

LAYER_API int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout_ms)
{
    if (!routed() || maxevents <= 0)
        return ((epoll_wait_fn)next(E_EPOLL_WAIT))(epfd, events, maxevents, timeout_ms);
    struct timespec ts = ms_to_timespec(timeout_ms);
    return epoll_via_poll(E_EPOLL_WAIT, epfd, events, maxevents, timeout_ms < 0 ? NULL : &ts,
                          NULL);
}

LAYER_API int epoll_pwait(int epfd, struct epoll_event *events, int maxevents, int timeout_ms,
                          const sigset_t *sigmask)
{
    if (!routed() || maxevents <= 0)
        return ((epoll_pwait_fn)next(E_EPOLL_PWAIT))(epfd, events, maxevents, timeout_ms,
                                                     sigmask);
    struct timespec ts = ms_to_timespec(timeout_ms);
    return epoll_via_poll(E_EPOLL_PWAIT, epfd, events, maxevents, timeout_ms < 0 ? NULL : &ts,
                          sigmask);
}

LAYER_API int epoll_pwait2(int epfd, struct epoll_event *events, int maxevents,
                           const struct timespec *tmo, const sigset_t *sigmask)
{
    if (!routed() || maxevents <= 0)
        return ((epoll_pwait2_fn)next(E_EPOLL_PWAIT2))(epfd, events, maxevents, tmo, sigmask);
    return epoll_via_poll(E_EPOLL_PWAIT2, epfd, events, maxevents, tmo, sigmask);
}

/* ----------------------------------------------------------------------
 * Sleeps
 * ---------------------------------------------------------------------- */

typedef int (*nanosleep_fn)(const struct timespec *, struct timespec *);
typedef int (*clock_nanosleep_fn)(clockid_t, int, const struct timespec *, struct timespec *);
typedef int (*usleep_fn)(useconds_t);
typedef unsigned (*sleep_fn)(unsigned);

LAYER_API int nanosleep(const struct timespec *req, struct timespec *rem)
{
    if (!routed())
        return ((nanosleep_fn)next(E_NANOSLEEP))(req, rem);
    enter(E_NANOSLEEP);
    int r = tether_nanosleep(req, rem);
    leave(E_NANOSLEEP, r < 0);
    return r;
}

/*
 * clock_nanosleep on CLOCK_MONOTONIC, CLOCK_REALTIME or CLOCK_BOOTTIME,
 * relative or absolute. An absolute time on a clock other than
 * CLOCK_MONOTONIC is turned into a duration when the call starts (a later
 * jump of that clock is not followed). Other clocks go to libc. Returns an
 * error number, as clock_nanosleep does.
 */
LAYER_API int clock_nanosleep(clockid_t clock, int flags, const struct timespec *req,
                              struct timespec *rem)
{
    if (!routed() ||
        (clock != CLOCK_MONOTONIC && clock != CLOCK_REALTIME && clock != CLOCK_BOOTTIME))
        return ((clock_nanosleep_fn)next(E_CLOCK_NANOSLEEP))(clock, flags, req, rem);
    /* A negative relative time is invalid; a negative absolute one is past. */
    if (req->tv_nsec < 0 || req->tv_nsec >= 1000000000 ||
        (req->tv_sec < 0 && !(flags & TIMER_ABSTIME)))
        return EINVAL;
    int saved = errno;
    int r;
    enter(E_CLOCK_NANOSLEEP);
    if (!(flags & TIMER_ABSTIME)) {
        r = tether_nanosleep(req, rem);
    } else {
        int64_t when = tether_sec(req->tv_sec) + req->tv_nsec;
        if (clock != CLOCK_MONOTONIC) {
            struct timespec now;
            clock_gettime(clock, &now);
            when = tether_now() + (when - (tether_sec(now.tv_sec) + now.tv_nsec));
        }
        r = tether_sleep_until(when);
    }
    int err = 0;
    if (r < 0) {
        leave(E_CLOCK_NANOSLEEP, true);
        err = errno;
    } else {
        leave(E_CLOCK_NANOSLEEP, false);
    }
    errno = saved;
    return err;
}

LAYER_API int usleep(useconds_t us)
{
    if (!routed())
        return ((usleep_fn)next(E_USLEEP))(us);
    enter(E_USLEEP);
    int r = tether_sleep_for(tether_us(us));
    leave(E_USLEEP, r < 0);
    return r;
}

/* sleep(3) cannot fail: a stopped sleep returns the whole seconds left
 * (rounded up, so never 0) with errno set to ECANCELED or ETIMEDOUT. */
LAYER_API unsigned sleep(unsigned seconds)
{
    if (!routed())
        return ((sleep_fn)next(E_SLEEP))(seconds);
    struct timespec req = {.tv_sec = (time_t)seconds}, rem = {0};
    enter(E_SLEEP);
    int r = tether_nanosleep(&req, &rem);
    leave(E_SLEEP, r < 0);
    if (r == 0)
        return 0;
    unsigned left = (unsigned)rem.tv_sec + (rem.tv_nsec > 0);
    return left ? left : 1;
}

/* ----------------------------------------------------------------------
 * Name resolution
 * ---------------------------------------------------------------------- */

typedef int (*getaddrinfo_fn)(const char *, const char *, const struct addrinfo *,
                              struct addrinfo **);

/* Under a token the lookup runs on tether_getaddrinfo's helper thread,
 * which has no token: its getaddrinfo comes back here and goes to libc. */
LAYER_API int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                          struct addrinfo **res)
{
    if (!routed())
        return ((getaddrinfo_fn)next(E_GETADDRINFO))(node, service, hints, res);
    enter(E_GETADDRINFO);
    int r = tether_getaddrinfo(node, service, hints, res);
    leave(E_GETADDRINFO, r == EAI_SYSTEM);
    return r;
}

/* ----------------------------------------------------------------------
 * Controls
 * ---------------------------------------------------------------------- */

/* Sum every thread's counts: live blocks, exited threads', the shared ones. */
static void counts_sum(uint64_t seen[E_COUNT], uint64_t stopped[E_COUNT])
{
    pthread_mutex_lock(&blocks_lock);
    for (int e = 0; e < E_COUNT; e++) {
        seen[e] = retired_seen[e] + atomic_load_explicit(&shared.seen[e], memory_order_relaxed);
        stopped[e] = retired_stopped[e] +
                     atomic_load_explicit(&shared.stopped[e], memory_order_relaxed);
    }
    for (count_block *b = blocks; b; b = b->next) {
        for (int e = 0; e < E_COUNT; e++) {
            seen[e] += atomic_load_explicit(&b->seen[e], memory_order_relaxed);
            stopped[e] += atomic_load_explicit(&b->stopped[e], memory_order_relaxed);
        }
    }
    pthread_mutex_unlock(&blocks_lock);
}

size_t tether_interpose_counters(tether_interpose_counter *out, size_t max)
{
    if (max == 0)
        return E_COUNT;
    uint64_t seen[E_COUNT], stopped[E_COUNT];
    counts_sum(seen, stopped);
    for (size_t e = 0; e < E_COUNT && e < max; e++) {
        out[e].name = entry_name[e];
        out[e].seen = seen[e];
        out[e].stopped = stopped[e];
    }
    return E_COUNT;
}

bool tether_interpose_set_shutdown(bool on)
{
    return atomic_exchange(&shutdown_on_cut, on);
}

void tether_interpose_print_counters(void)
{
    uint64_t seen[E_COUNT], stopped[E_COUNT];
    counts_sum(seen, stopped);
    for (int e = 0; e < E_COUNT; e++) {
        if (seen[e])
            fprintf(stderr, "tether-interpose: %s seen %llu stopped %llu\n", entry_name[e],
                    (unsigned long long)seen[e], (unsigned long long)stopped[e]);
    }
}

static bool env_is(const char *name, const char *value)
{
    /* Only from the constructor, before the program's threads run. */
    const char *v = getenv(name); // NOLINT(concurrency-mt-unsafe)
    return v && strcmp(v, value) == 0;
}

/* fork: the counters' lock is taken around it so the child never inherits
 * it held (the child keeps the counts so far). */
static void blocks_prefork(void)
{
    pthread_mutex_lock(&blocks_lock);
}

static void blocks_postfork(void)
{
    pthread_mutex_unlock(&blocks_lock);
}

__attribute__((constructor)) static void layer_init(void)
{
    pthread_atfork(blocks_prefork, blocks_postfork, blocks_postfork);
    pthread_once(&next_once, resolve_all);
    if (env_is("TETHER_INTERPOSE_SHUTDOWN", "0"))
        atomic_store(&shutdown_on_cut, false);
    print_at_exit = env_is("TETHER_INTERPOSE_STATS", "1");
}

__attribute__((destructor)) static void layer_fini(void)
{
    if (print_at_exit)
        tether_interpose_print_counters();
}
