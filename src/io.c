/*
 * Descriptor I/O under the calling thread's current token: the read and
 * write families (plain, vector, positional, whole-buffer) and poll/ppoll.
 *
 * read and write first try the transfer without blocking (RWF_NOWAIT; reads
 * from a socket use recv(MSG_DONTWAIT), cheaper there), so a descriptor
 * that is ready costs exactly the one syscall the raw call costs;
 * only when it would block do they wait in poll with the token's eventfd
 * (the skeleton of dropin.h). Bytes already moved are always returned:
 * cancellation is reported by the next call. poll and ppoll first let the
 * kernel look at the caller's set with a zero timeout.
 */
#define _GNU_SOURCE
#include "dropin.h"

#include "clock.h"

#include <limits.h>
#include <string.h>

/* The entries a vector transfer has left: the caller's array, read only
 * by the kernel, until a short transfer needs it advanced; then a private
 * copy (`small` or the heap). */
struct vec {
    struct iovec *iov;
    int cnt;
    bool owned;
    bool nonempty; /* known to hold a byte (tether_read's own entry) */
    struct iovec *copy;
    struct iovec small[TETHER_IOV_SMALL];
};

/* Advance v past n bytes moved. Whole entries are skipped in place; only an
 * entry left half done needs the entries copied first (the kernel has just
 * read them, so they are mapped). -1 (ENOMEM) if no copy could be made. */
static int vec_advance(struct vec *v, size_t n)
{
    while (v->cnt > 0 && n >= v->iov->iov_len) {
        n -= v->iov->iov_len;
        v->iov++;
        v->cnt--;
    }
    if (v->cnt == 0 || n == 0)
        return 0;
    if (!v->owned) {
        v->copy = tether__iov_copy(v->iov, v->cnt, v->small);
        if (!v->copy)
            return -1;
        v->iov = v->copy;
        v->owned = true;
    }
    v->iov->iov_base = (char *)v->iov->iov_base + n;
    v->iov->iov_len -= n;
    return 0;
}

static void vec_release(struct vec *v)
{
    if (v->owned)
        tether__iov_release(v->copy, v->small);
}

/*
 * Which non-blocking read a descriptor gets first: a hint per descriptor
 * number, never a fact. Numbers are reused, so a hint may be stale, and it
 * need not be right, because each attempt is correct on every kind of
 * descriptor: recv on something that is no socket fails with ENOTSOCK
 * without touching it (the hint then says "not a socket" and preadv2
 * answers); preadv2(RWF_NOWAIT) on a socket is what read(2) itself does
 * there, only dearer. A wrong hint costs one syscall, never a different
 * result, and racing updates (relaxed bytes) are benign for the same
 * reason. "Not a socket" is forgotten whenever the descriptor makes the
 * caller wait, so a socket that took over a pipe's number is found again
 * at its first wait.
 */
enum { KIND_HINTS = 4096 };
static _Atomic bool not_socket[KIND_HINTS];

static bool hint_not_socket(int fd)
{
    return fd < 0 || fd >= KIND_HINTS ||
           atomic_load_explicit(&not_socket[fd], memory_order_relaxed);
}

static void hint_set(int fd, bool is_not_socket)
{
    if (fd >= 0 && fd < KIND_HINTS &&
        atomic_load_explicit(&not_socket[fd], memory_order_relaxed) != is_not_socket)
        atomic_store_explicit(&not_socket[fd], is_not_socket, memory_order_relaxed);
}

/* The largest count read(2) moves at once (the kernel's MAX_RW_COUNT,
 * INT_MAX rounded down to a page); recv would take up to INT_MAX. */
enum { READ_MAX = INT_MAX & ~4095 };

/* Whether recv_attempt may answer for v: readv(2) itself would take the
 * array (a count outside 1..IOV_MAX is EINVAL there, EMSGSIZE from
 * recvmsg), and no single entry beyond READ_MAX. */
static bool recv_fits(const struct vec *v)
{
    if (v->cnt < 1 || v->cnt > IOV_MAX)
        return false;
    return v->cnt > 1 || !v->nonempty || v->iov->iov_len <= READ_MAX;
}

/*
 * read(2) on a socket as recv(MSG_DONTWAIT). The kernel runs the same
 * sock_recvmsg for both (O_NONBLOCK and SO_RCVTIMEO read the same way);
 * only what read(2) does before it differs: it answers 0 at once for an
 * empty buffer, where recv would wait for data, and checks the descriptor
 * before the buffer, where recv checks the buffer's range first. So the
 * result stands except: ENOTSOCK, EFAULT, and EAGAIN for entries not known
 * to hold a byte, which return 1 for preadv2 to answer as read(2) does.
 */
static int recv_attempt(int fd, const struct vec *v, ssize_t *n)
{
    bool one = v->cnt == 1 && v->nonempty;
    if (one) {
        *n = tether__sys_recvfrom(fd, v->iov->iov_base, v->iov->iov_len, MSG_DONTWAIT, NULL, NULL);
    } else {
        struct msghdr m = { .msg_iov = v->iov, .msg_iovlen = (size_t)v->cnt };
        *n = tether__sys_recvmsg(fd, &m, MSG_DONTWAIT);
    }
    if (*n >= 0)
        return 0;
    if (errno == ENOTSOCK)
        hint_set(fd, true);
    return errno == ENOTSOCK || errno == EFAULT || (errno == EAGAIN && !one);
}

/*
 * The attempt of readv(2) under a token. It never blocks (recv with
 * MSG_DONTWAIT on sockets, RWF_NOWAIT elsewhere), so a ready descriptor
 * costs one syscall. When the descriptor would block (EAGAIN) or cannot
 * say (EOPNOTSUPP: ttys, ...):
 *  - without RWF_NOWAIT, once readable or O_NONBLOCK: the plain call;
 *  - a regular file whose data is not cached: the plain call (disk I/O is
 *    not a wait tether can cut short; poll would say "ready" forever);
 *  - otherwise EAGAIN: the skeleton waits for POLLIN (or answers EAGAIN for
 *    O_NONBLOCK, or after SO_RCVTIMEO).
 */
static ssize_t read_attempt(struct tether__xfer *x, void *ctx)
{
    struct vec *v = ctx;
    ssize_t n;
    if (!hint_not_socket(x->fd) && recv_fits(v) && recv_attempt(x->fd, v, &n) == 0)
        return n;
    n = tether__sys_preadv2(x->fd, v->iov, v->cnt, -1, RWF_NOWAIT);
    if (n >= 0 || (errno != EAGAIN && errno != EOPNOTSUPP))
        return n;
    bool unsupported = errno == EOPNOTSUPP;
    if (unsupported && (x->waited || tether__xfer_nonblocking(x)))
        return tether__sys_readv(x->fd, v->iov, v->cnt);
    if ((unsupported || x->waited || tether__xfer_nonblocking(x)) && tether__fd_is_file(x->fd))
        return tether__sys_readv(x->fd, v->iov, v->cnt);
    hint_set(x->fd, false); /* about to wait: look again next time */
    return tether__fail(EAGAIN);
}

/* writev(2) of at most PIPE_BUF bytes of the first non-empty entry: after
 * POLLOUT on a pipe, FIFO or tty, that much fits without blocking. */
static ssize_t write_pipe_buf(int fd, const struct vec *v)
{
    int k = 0;
    while (k < v->cnt - 1 && v->iov[k].iov_len == 0)
        k++;
    struct iovec one = v->iov[k];
    if (one.iov_len > PIPE_BUF)
        one.iov_len = PIPE_BUF;
    return tether__sys_writev(fd, &one, 1);
}

/*
 * The attempt of writev(2) under a token. Like a blocking writev(2) it
 * writes everything, so it goes on while the descriptor takes bytes; it
 * returns EAGAIN for the skeleton to wait for room, with the same
 * fallbacks as read_attempt (plain call for files and, once writable or
 * O_NONBLOCK, for descriptors without RWF_NOWAIT).
 */
static ssize_t write_attempt(struct tether__xfer *x, void *ctx)
{
    struct vec *v = ctx;
    for (;;) {
        ssize_t n = tether__sys_pwritev2(x->fd, v->iov, v->cnt, -1, RWF_NOWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EOPNOTSUPP)) {
            bool unsupported = errno == EOPNOTSUPP;
            if ((unsupported || x->waited || tether__xfer_nonblocking(x)) &&
                tether__fd_is_file(x->fd))
                n = tether__sys_writev(x->fd, v->iov, v->cnt);
            else if (unsupported && tether__xfer_nonblocking(x))
                n = tether__sys_writev(x->fd, v->iov, v->cnt);
            else if (unsupported && x->waited)
                n = write_pipe_buf(x->fd, v);
            else
                return tether__fail(EAGAIN);
        }
        if (n < 0)
            return tether__moved_or_fail(x->done); /* errno says why */
        if (n == 0)
            return (ssize_t)x->done; /* nothing (more) to write, as writev(2) */
        tether__xfer_moved(x, (size_t)n);
        if (vec_advance(v, (size_t)n) < 0 || v->cnt == 0)
            return (ssize_t)x->done; /* done, or no memory to go on: what moved */
    }
}

/* readv/writev under t: the skeleton over the caller's entries (nonempty:
 * a single entry known to hold a byte). */
static ssize_t vec_transfer(tether_token *t, int fd, const struct iovec *iov, int cnt, bool writing,
                            bool nonempty)
{
    struct tether__xfer x =
        tether__xfer_init(fd, writing ? POLLOUT : POLLIN, writing ? SO_SNDTIMEO : SO_RCVTIMEO);
    struct vec v; /* not zeroed: `small` is scratch, written only on need */
    v.iov = tether__unconst(iov);
    v.cnt = cnt;
    v.owned = false;
    v.nonempty = nonempty;
    ssize_t n = writing ? tether__xfer_run(t, &x, write_attempt, &v)
                        : tether__xfer_run(t, &x, read_attempt, &v);
    vec_release(&v);
    return n;
}

/* count > SSIZE_MAX goes to the raw call, which refuses it at once (EFAULT:
 * no buffer that large can be mapped); RWF_NOWAIT would say EINVAL. */
ssize_t tether_read(int fd, void *buf, size_t count)
{
    tether_token *t;
    int e = tether__dropin_entry(&t);
    if (e <= 0 || count > SSIZE_MAX)
        return e < 0 ? -1 : tether__sys_read(fd, buf, count);
    struct iovec iov = { .iov_base = buf, .iov_len = count };
    return vec_transfer(t, fd, &iov, 1, false, count > 0);
}

ssize_t tether_write(int fd, const void *buf, size_t count)
{
    tether_token *t;
    int e = tether__dropin_entry(&t);
    if (e <= 0 || count > SSIZE_MAX)
        return e < 0 ? -1 : tether__sys_write(fd, buf, count);
    struct iovec iov = { .iov_base = tether__unconst(buf), .iov_len = count };
    return vec_transfer(t, fd, &iov, 1, true, count > 0);
}

/* The drop-in entry of readv and writev. The kernel is the first to read
 * iov (EFAULT for a bad array, EINVAL for a bad count), as in readv(2). */
static ssize_t vec_entry(int fd, const struct iovec *iov, int iovcnt, bool writing)
{
    tether_token *t;
    int e = tether__dropin_entry(&t);
    if (e < 0)
        return -1;
    if (e == 0)
        return writing ? tether__sys_writev(fd, iov, iovcnt) : tether__sys_readv(fd, iov, iovcnt);
    return vec_transfer(t, fd, iov, iovcnt, writing, false);
}

ssize_t tether_readv(int fd, const struct iovec *iov, int iovcnt)
{
    return vec_entry(fd, iov, iovcnt, false);
}

ssize_t tether_writev(int fd, const struct iovec *iov, int iovcnt)
{
    return vec_entry(fd, iov, iovcnt, true);
}

/* One direction of the positional calls. */
struct positional {
    ssize_t (*nowait)(int fd, const struct iovec *iov, int cnt, off_t off, int flags);
    ssize_t (*plain)(int fd, void *buf, size_t n, off_t off); /* blocking */
    short events;
    int timeo_opt;
};

static ssize_t plain_pwrite(int fd, void *buf, size_t n, off_t off)
{
    return tether__sys_pwrite(fd, buf, n, off);
}

static const struct positional pread_dir = { tether__sys_preadv2, tether__sys_pread, POLLIN,
                                             SO_RCVTIMEO };
static const struct positional pwrite_dir = { tether__sys_pwritev2, plain_pwrite, POLLOUT,
                                              SO_SNDTIMEO };

/* A positional call's arguments, for its attempt. */
struct pos {
    void *buf;
    size_t count;
    off_t offset;
    const struct positional *d;
};

/* The attempt of pread(2)/pwrite(2), offset >= 0: without blocking when
 * possible; a partly cached file range gets the rest from the disk, as the
 * raw call would; a file that is not cached, or a descriptor without
 * RWF_NOWAIT once ready (or O_NONBLOCK), gets the plain call; others wait
 * in the skeleton. */
static ssize_t pos_attempt(struct tether__xfer *x, void *ctx)
{
    const struct pos *p = ctx;
    struct iovec iov = { .iov_base = p->buf, .iov_len = p->count };
    ssize_t n = p->d->nowait(x->fd, &iov, 1, p->offset, RWF_NOWAIT);
    if (n >= 0) {
        if (n == 0 || (size_t)n == p->count || !tether__fd_is_file(x->fd))
            return n;
        ssize_t m = p->d->plain(x->fd, (char *)p->buf + n, p->count - (size_t)n, p->offset + n);
        return m > 0 ? n + m : n;
    }
    if (errno == EOPNOTSUPP) {
        if (x->waited || tether__xfer_nonblocking(x) || tether__fd_is_file(x->fd))
            return p->d->plain(x->fd, p->buf, p->count, p->offset);
        return tether__fail(EAGAIN);
    }
    if (errno == EAGAIN && tether__fd_is_file(x->fd))
        return p->d->plain(x->fd, p->buf, p->count, p->offset); /* not cached: disk I/O */
    return -1; /* EAGAIN: the skeleton waits (or says EAGAIN for O_NONBLOCK) */
}

/* The drop-in entry of pread/pwrite. */
static ssize_t positional_call(int fd, void *buf, size_t count, off_t offset,
                               const struct positional *d)
{
    tether_token *t;
    int e = tether__dropin_entry(&t);
    if (e < 0)
        return -1;
    /* offset < 0: EINVAL from the raw call (preadv2 reads -1 as "current");
     * count > SSIZE_MAX: the raw call's EFAULT (RWF_NOWAIT would say EINVAL) */
    if (e == 0 || offset < 0 || count > SSIZE_MAX)
        return d->plain(fd, buf, count, offset);
    struct tether__xfer x = tether__xfer_init(fd, d->events, d->timeo_opt);
    struct pos p = { .buf = buf, .count = count, .offset = offset, .d = d };
    return tether__xfer_run(t, &x, pos_attempt, &p);
}

ssize_t tether_pread(int fd, void *buf, size_t count, off_t offset)
{
    return positional_call(fd, buf, count, offset, &pread_dir);
}

ssize_t tether_pwrite(int fd, const void *buf, size_t count, off_t offset)
{
    return positional_call(fd, tether__unconst(buf), count, offset, &pwrite_dir);
}

static ssize_t write_some(int fd, void *buf, size_t count)
{
    return tether_write(fd, buf, count);
}

/* Move count bytes with `some` (tether_read or a tether_write), riding out
 * EINTR and short transfers; stops at end of file or an error. A count the
 * result cannot express (> SSIZE_MAX) is EINVAL before anything moves. */
static ssize_t transfer_all(ssize_t (*some)(int, void *, size_t), int fd, char *buf, size_t count,
                            size_t *moved)
{
    if (count > SSIZE_MAX) {
        if (moved)
            *moved = 0;
        return tether__fail(EINVAL);
    }
    size_t done = 0;
    ssize_t result = 0;
    while (done < count) {
        ssize_t n = some(fd, buf + done, count - done);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n == 0)
            break; /* end of file; or a write of nothing with no error: the short count */
        if (errno == EINTR)
            continue;
        result = -1;
        break;
    }
    if (moved)
        *moved = done;
    return result < 0 ? -1 : (ssize_t)done;
}

ssize_t tether_read_all(int fd, void *buf, size_t count, size_t *moved)
{
    return transfer_all(tether_read, fd, buf, count, moved);
}

ssize_t tether_write_all(int fd, const void *buf, size_t count, size_t *moved)
{
    return transfer_all(write_some, fd, tether__unconst(buf), count, moved);
}

/* How long one look lasts when the token's eventfd cannot join the set. */
enum { POLL_SLICE_MS = 10 };

/* Poll the user's fds under t with the token's eventfd in the spare slot of
 * a private copy; the user's revents are filled in on success. -1 with
 * errno EINVAL when the set plus that slot is over RLIMIT_NOFILE. */
static int poll_copy(tether_token *t, struct pollfd *fds, nfds_t nfds, tether_time_t until,
                     const sigset_t *sigmask)
{
    struct pollfd small[TETHER_POLL_SMALL];
    struct pollfd *all = small;
    if (nfds + 1 > TETHER_POLL_SMALL) {
        all = tether__malloc((nfds + 1) * sizeof *all);
        if (!all)
            return tether__fail(ENOMEM);
    }
    for (nfds_t i = 0; i < nfds; i++)
        all[i] = (struct pollfd){ .fd = fds[i].fd, .events = fds[i].events };
    int n = tether__token_wait_fds(t, all, nfds, until, sigmask);
    int saved = errno;
    if (n >= 0)
        for (nfds_t i = 0; i < nfds; i++)
            fds[i].revents = all[i].revents;
    if (all != small)
        free(all);
    errno = saved;
    return n;
}

/* The set is exactly RLIMIT_NOFILE long, so the eventfd has no slot: poll
 * the caller's array itself in slices of POLL_SLICE_MS, checking the token
 * between them (cancellation is noticed within one slice). */
static int poll_slices(tether_token *t, struct pollfd *fds, nfds_t nfds, tether_time_t until,
                       const sigset_t *sigmask)
{
    for (;;) {
        int c = tether__token_poll(t);
        if (c)
            return tether__fail(c);
        tether_time_t now = tether_now();
        if (now >= until)
            return 0;
        tether_time_t end = tether__min_time(until, now + tether_ms(POLL_SLICE_MS));
        struct timespec ts = tether__timespec(tether__time_left(end, now));
        int n = tether__sys_ppoll(fds, nfds, &ts, sigmask);
        if (n != 0)
            return n;
    }
}

/*
 * poll/ppoll under t with a timeout that is not zero. The first look is the
 * raw call with a zero timeout on the caller's own array, so the kernel
 * judges nfds (EINVAL above RLIMIT_NOFILE, before reading anything) and the
 * pointer (EFAULT) as poll(2) does, and a ready set costs that one call.
 * Only if nothing is ready does the wait copy the set and add the eventfd.
 */
static int poll_under(tether_token *t, struct pollfd *fds, nfds_t nfds, tether_time_t until,
                      const sigset_t *sigmask)
{
    static const struct timespec zero = { 0, 0 };
    int n = tether__sys_ppoll(fds, nfds, &zero, sigmask);
    if (n != 0)
        return n;
    n = poll_copy(t, fds, nfds, until, sigmask);
    if (n < 0 && errno == EINVAL) /* nfds == RLIMIT_NOFILE: no room for the eventfd */
        return poll_slices(t, fds, nfds, until, sigmask);
    return n;
}

int tether_poll(struct pollfd *fds, nfds_t nfds, int timeout_ms)
{
    tether_token *t;
    int e = tether__dropin_entry(&t);
    if (e <= 0 || timeout_ms == 0)
        return e < 0 ? -1 : tether__sys_poll(fds, nfds, timeout_ms);
    tether_time_t until =
        timeout_ms < 0 ? TETHER_NEVER : tether_deadline_after(tether_ms(timeout_ms));
    return poll_under(t, fds, nfds, until, NULL);
}

int tether_ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *tmo,
                 const sigset_t *sigmask)
{
    tether_token *t = tether__current_or_root();
    if (!t)
        return tether__sys_ppoll(fds, nfds, tmo, sigmask);
    if (tmo && !tether__timespec_valid(tmo))
        return tether__fail(EINVAL);
    int c = tether__token_poll(t);
    if (c)
        return tether__fail(c);
    if (tmo && tmo->tv_sec == 0 && tmo->tv_nsec == 0)
        return tether__sys_ppoll(fds, nfds, tmo, sigmask);
    tether_time_t until = tmo ? tether_deadline_after(tether__timespec_ns(tmo)) : TETHER_NEVER;
    return poll_under(t, fds, nfds, until, sigmask);
}
