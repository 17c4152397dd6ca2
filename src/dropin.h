/*
 * The skeleton every drop-in (tether_read, tether_recv, ...) is built on:
 * the entry under the current token, the descriptor questions the attempts
 * ask, the one attempt/wait/retry loop (tether__xfer_run) and the iovec
 * helpers. All system calls go through sys.h.
 */
#ifndef TETHER__DROPIN_H
#define TETHER__DROPIN_H

#include "current.h"
#include "sys.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>

/* Stack room before a drop-in allocates: iovec and pollfd copies. */
enum { TETHER_IOV_SMALL = 8, TETHER_POLL_SMALL = 16 };


/* A const buffer as the void * that struct iovec and struct msghdr carry on
 * the output paths, where the kernel only reads through it. */
static inline void *tether__unconst(const void *p)
{
    return (void *)(uintptr_t)p;
}

/* The entry of a drop-in that checks the token first: 0 when the thread
 * has no current token (make the raw call), 1 to go on under *t, -1 with
 * errno ECANCELED/ETIMEDOUT when *t is canceled or past its deadline. */
static inline int tether__dropin_entry(tether_token **t)
{
    *t = tether__current_or_root();
    if (!*t)
        return 0;
    int c = tether__token_poll(*t);
    return c ? tether__fail(c) : 1;
}

/* Whether fd is in O_NONBLOCK mode (false if fcntl fails). One syscall. */
static inline bool tether__fd_nonblocking(int fd)
{
    int fl = tether__sys_fcntl(fd, F_GETFL, 0);
    return fl >= 0 && (fl & O_NONBLOCK);
}

/* Whether fd is a regular file or block device: always "ready" to poll, yet
 * refused by RWF_NOWAIT when the data is not cached, so it needs the plain
 * call. One syscall. */
static inline bool tether__fd_is_file(int fd)
{
    struct stat st;
    return tether__sys_fstat(fd, &st) == 0 && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
}

/* The instant a blocking call on fd gives up under SO_RCVTIMEO/SO_SNDTIMEO
 * (`opt`), or TETHER_NEVER when the option is unset or fd is no socket. */
static inline tether_time_t tether__sock_timeout_until(int fd, int opt)
{
    struct timeval tv;
    socklen_t len = sizeof tv;
    if (tether__sys_getsockopt(fd, SOL_SOCKET, opt, &tv, &len) < 0 ||
        (tv.tv_sec == 0 && tv.tv_usec == 0))
        return TETHER_NEVER;
    return tether_deadline_after(tether_sec(tv.tv_sec) + tether_us(tv.tv_usec));
}

/*
 * The one skeleton of the drop-ins that may wait (read/write families,
 * pread/pwrite, recv/send families, accept, connect):
 *
 *     attempt without blocking -> if it would block (EAGAIN) and the call
 *     may wait: wait for readiness under the token, bounded by the socket's
 *     SO_RCVTIMEO/SO_SNDTIMEO -> attempt again
 *
 * An attempt does one family's non-blocking try (and its own fallbacks:
 * regular files, descriptors without RWF_NOWAIT, short transfers); it
 * returns the call's result, or -1 with errno EAGAIN to be waited for.
 * Nothing here runs before the first attempt, so a ready descriptor costs
 * the attempt's syscalls only.
 */
struct tether__xfer {
    int fd;
    short events;              /* POLLIN or POLLOUT */
    bool dontwait;             /* MSG_DONTWAIT: never wait, EAGAIN */
    signed char backoff_after; /* waits that poll before napping; -1: never nap */
    bool waited;               /* a wait said ready since the last progress */
    signed char nonblock;      /* O_NONBLOCK: -1 not asked yet, else 0 or 1 */
    int timeo_opt;             /* SO_RCVTIMEO or SO_SNDTIMEO */
    int timeout_err;           /* what the socket timeout reports (EAGAIN) */
    int refused;               /* waits since the last progress */
    size_t done;               /* bytes moved so far */
    tether_time_t until;       /* the socket timeout; 0 until read */
    int64_t step;              /* the backoff nap */
};

/* A transfer on fd waiting for `events` under the socket option timeo_opt. */
static inline struct tether__xfer tether__xfer_init(int fd, short events, int timeo_opt)
{
    return (struct tether__xfer){ .fd = fd,
                                  .events = events,
                                  .backoff_after = -1,
                                  .nonblock = -1,
                                  .timeo_opt = timeo_opt,
                                  .timeout_err = EAGAIN };
}

/* Whether x's descriptor is in O_NONBLOCK mode; asked once per call. */
static inline bool tether__xfer_nonblocking(struct tether__xfer *x)
{
    if (x->nonblock < 0)
        x->nonblock = tether__fd_nonblocking(x->fd) ? 1 : 0;
    return x->nonblock;
}

/* Progress was made: the next refusal starts a fresh wait. */
static inline void tether__xfer_moved(struct tether__xfer *x, size_t n)
{
    x->done += n;
    x->waited = false;
    x->refused = 0;
}

/* The wait of the skeleton: 0 to attempt again, or -1 with errno: EAGAIN
 * when the raw call would not wait (O_NONBLOCK, MSG_DONTWAIT), timeout_err
 * when the socket timeout passed, ECANCELED/ETIMEDOUT/EINTR from the token. */
static inline int tether__xfer_wait(tether_token *t, struct tether__xfer *x)
{
    if (x->dontwait || tether__xfer_nonblocking(x))
        return tether__fail(EAGAIN);
    if (x->until == 0) /* a monotonic instant is never 0 */
        x->until = tether__sock_timeout_until(x->fd, x->timeo_opt);
    /* A socket that polls writable yet still refuses (an unconnected
     * AF_UNIX datagram socket whose receiver is full), or a wait that cannot
     * be polled for (a full AF_UNIX backlog): nap with backoff. */
    if (x->backoff_after >= 0 && x->refused++ >= x->backoff_after) {
        if (tether_now() >= x->until)
            return tether__fail(x->timeout_err);
        return tether__token_backoff(t, &x->step);
    }
    int w = tether__token_wait_fd(t, x->fd, x->events, x->until);
    if (w < 0)
        return -1;
    if (w == 0)
        return tether__fail(x->timeout_err);
    x->waited = true;
    return 0;
}

/* The skeleton's loop: attempt, wait, attempt... Bytes already moved are
 * returned when the wait stops it; the next call reports why. */
static inline ssize_t tether__xfer_run(tether_token *t, struct tether__xfer *x,
                                       ssize_t (*attempt)(struct tether__xfer *x, void *ctx),
                                       void *ctx)
{
    for (;;) {
        ssize_t n = attempt(x, ctx);
        if (n >= 0 || errno != EAGAIN)
            return n;
        if (tether__xfer_wait(t, x) < 0)
            return x->done ? (ssize_t)x->done : -1;
    }
}

/* What a transfer that may have moved bytes before failing returns. */
static inline ssize_t tether__moved_or_fail(size_t done)
{
    return done ? (ssize_t)done : -1;
}

/* Advance an iovec array past n bytes transferred, consuming entries that
 * are done (zero-length ones included). The entries are modified: use a copy. */
static inline void tether__iov_advance(struct iovec **iov, int *cnt, size_t n)
{
    while (*cnt > 0 && n >= (*iov)->iov_len) {
        n -= (*iov)->iov_len;
        (*iov)++;
        (*cnt)--;
    }
    if (*cnt > 0 && n > 0) {
        (*iov)->iov_base = (char *)(*iov)->iov_base + n;
        (*iov)->iov_len -= n;
    }
}

/* Copy an iovec array into `small` (TETHER_IOV_SMALL entries) or a heap
 * array; NULL and errno ENOMEM on failure. Free with tether__iov_release. */
static inline struct iovec *tether__iov_copy(const struct iovec *iov, int cnt,
                                             struct iovec small[TETHER_IOV_SMALL])
{
    struct iovec *c = small;
    if (cnt > TETHER_IOV_SMALL) {
        c = tether__malloc((size_t)cnt * sizeof *c);
        if (!c) {
            errno = ENOMEM;
            return NULL;
        }
    }
    for (int i = 0; i < cnt; i++)
        c[i] = iov[i];
    return c;
}

/* Free a copy from tether__iov_copy; keeps errno. */
static inline void tether__iov_release(struct iovec *c, struct iovec *small)
{
    int saved = errno;
    if (c != small)
        free(c);
    errno = saved;
}

#endif /* TETHER__DROPIN_H */
