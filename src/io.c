/*
 * Descriptor I/O under the calling thread's current token: the read and
 * write families (plain, vector, positional, whole-buffer) and poll/ppoll.
 *
 * read and write first try the transfer without blocking (RWF_NOWAIT), so a
 * descriptor that is ready costs exactly the one syscall the raw call costs;
 * only when it would block do they wait in poll with the token's eventfd.
 * Bytes already moved are always returned: cancellation is reported by the
 * next call.
 */
#define _GNU_SOURCE
#include "dropin.h"

#include "clock.h"

#include <limits.h>
#include <string.h>

/* Wait until fd has `events` or the token says stop; 0 or -1 with errno. */
static int wait_fd(tether_token *t, int fd, short events)
{
    return tether__token_wait_fd(t, fd, events, TETHER_NEVER) < 0 ? -1 : 0;
}

/*
 * readv(2) under token t. The first attempt never blocks (RWF_NOWAIT), so a
 * ready descriptor costs one syscall. Only when that attempt says it would
 * block (EAGAIN), or cannot say (EOPNOTSUPP: FIFOs, ttys, ...), do we look
 * at what the descriptor is:
 *  - O_NONBLOCK: answer as readv(2) would (EAGAIN, or the plain call);
 *  - a regular file whose data is not cached: the plain call (disk I/O is
 *    not a wait tether can cut short; poll would say "ready" forever);
 *  - otherwise wait for POLLIN, cancellably, and try again.
 */
static ssize_t read_vec(tether_token *t, int fd, const struct iovec *iov, int cnt)
{
    bool waited = false;
    for (;;) {
        ssize_t n = tether__sys_preadv2(fd, iov, cnt, -1, RWF_NOWAIT);
        if (n >= 0 || (errno != EAGAIN && errno != EOPNOTSUPP))
            return n;
        bool unsupported = errno == EOPNOTSUPP;
        if (tether__fd_nonblocking(fd)) {
            if (unsupported || tether__fd_is_file(fd))
                return tether__sys_readv(fd, iov, cnt);
            return tether__fail(EAGAIN);
        }
        if ((waited || unsupported) && tether__fd_is_file(fd))
            return tether__sys_readv(fd, iov, cnt);
        if (wait_fd(t, fd, POLLIN) < 0)
            return -1;
        if (unsupported)
            return tether__sys_readv(fd, iov, cnt); /* readable: returns what is there */
        waited = true;
    }
}

/* writev(2) of at most `max` bytes of iov: after POLLOUT on a pipe, FIFO or
 * tty, PIPE_BUF bytes fit without blocking. iov is the caller's private copy. */
static ssize_t writev_at_most(int fd, struct iovec *iov, int cnt, size_t max)
{
    int k = 0;
    size_t total = 0;
    while (k < cnt - 1 && total + iov[k].iov_len < max)
        total += iov[k++].iov_len;
    size_t saved = iov[k].iov_len;
    if (total + saved > max)
        iov[k].iov_len = max - total;
    ssize_t n = tether__sys_writev(fd, iov, k + 1);
    iov[k].iov_len = saved;
    return n;
}

/*
 * writev(2) under token t, over a private (mutable) copy of the iovecs.
 * Like a blocking writev(2) it writes everything, waiting cancellably for
 * room; bytes already written are returned if it then stops (canceled,
 * interrupted, an error), and the next call reports why.
 */
static ssize_t write_vec(tether_token *t, int fd, struct iovec *iov, int cnt)
{
    size_t done = 0;
    bool waited = false;
    do {
        ssize_t n = tether__sys_pwritev2(fd, iov, cnt, -1, RWF_NOWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EOPNOTSUPP)) {
            bool unsupported = errno == EOPNOTSUPP;
            if (tether__fd_nonblocking(fd)) {
                if (!unsupported && !tether__fd_is_file(fd)) {
                    errno = EAGAIN;
                    break;
                }
                n = tether__sys_writev(fd, iov, cnt);
            } else if ((waited || unsupported) && tether__fd_is_file(fd)) {
                n = tether__sys_writev(fd, iov, cnt);
            } else {
                if (wait_fd(t, fd, POLLOUT) < 0)
                    break;
                waited = true;
                if (!unsupported)
                    continue;
                n = writev_at_most(fd, iov, cnt, PIPE_BUF);
            }
        }
        if (n < 0)
            break; /* errno says why */
        if (n == 0)
            return (ssize_t)done; /* nothing (more) to write, as writev(2) */
        done += (size_t)n;
        tether__iov_advance(&iov, &cnt, (size_t)n);
    } while (cnt > 0);
    return done > 0 || cnt == 0 ? (ssize_t)done : -1;
}

ssize_t tether_read(int fd, void *buf, size_t count)
{
    tether_token *t;
    int e = tether__dropin_entry(&t);
    if (e <= 0)
        return e < 0 ? -1 : tether__sys_read(fd, buf, count);
    struct iovec iov = { .iov_base = buf, .iov_len = count };
    return read_vec(t, fd, &iov, 1);
}

ssize_t tether_write(int fd, const void *buf, size_t count)
{
    tether_token *t;
    int e = tether__dropin_entry(&t);
    if (e <= 0)
        return e < 0 ? -1 : tether__sys_write(fd, buf, count);
    struct iovec iov = { .iov_base = tether__unconst(buf), .iov_len = count };
    return write_vec(t, fd, &iov, 1);
}

ssize_t tether_readv(int fd, const struct iovec *iov, int iovcnt)
{
    tether_token *t;
    int e = tether__dropin_entry(&t);
    if (e <= 0)
        return e < 0 ? -1 : tether__sys_readv(fd, iov, iovcnt);
    return read_vec(t, fd, iov, iovcnt);
}

ssize_t tether_writev(int fd, const struct iovec *iov, int iovcnt)
{
    tether_token *t;
    int e = tether__dropin_entry(&t);
    if (e <= 0)
        return e < 0 ? -1 : tether__sys_writev(fd, iov, iovcnt);
    if (iovcnt <= 0 || iovcnt > IOV_MAX)
        return tether__sys_writev(fd, iov, iovcnt); /* EINVAL, or the empty write */
    struct iovec small[TETHER_IOV_SMALL];
    struct iovec *copy = tether__iov_copy(iov, iovcnt, small);
    if (!copy)
        return -1;
    ssize_t n = write_vec(t, fd, copy, iovcnt);
    tether__iov_release(copy, small);
    return n;
}

/* One direction of the positional calls. */
struct positional {
    ssize_t (*nowait)(int fd, const struct iovec *iov, int cnt, off_t off, int flags);
    ssize_t (*plain)(int fd, void *buf, size_t n, off_t off); /* blocking */
    short events;
};

static ssize_t plain_pwrite(int fd, void *buf, size_t n, off_t off)
{
    return tether__sys_pwrite(fd, buf, n, off);
}

static const struct positional pread_dir = { tether__sys_preadv2, tether__sys_pread, POLLIN };
static const struct positional pwrite_dir = { tether__sys_pwritev2, plain_pwrite, POLLOUT };

/* pread(2)/pwrite(2) under t, offset >= 0: without blocking when possible;
 * a partly cached file range gets the rest from the disk, as the raw call
 * would; other descriptors wait for readiness cancellably. */
static ssize_t positional(tether_token *t, int fd, void *buf, size_t count, off_t offset,
                          const struct positional *d)
{
    struct iovec iov = { .iov_base = buf, .iov_len = count };
    for (;;) {
        ssize_t n = d->nowait(fd, &iov, 1, offset, RWF_NOWAIT);
        if (n >= 0) {
            if (n == 0 || (size_t)n == count || !tether__fd_is_file(fd))
                return n;
            ssize_t m = d->plain(fd, (char *)buf + n, count - (size_t)n, offset + n);
            return m > 0 ? n + m : n;
        }
        if (errno == EOPNOTSUPP) {
            if (!tether__fd_is_file(fd) && wait_fd(t, fd, d->events) < 0)
                return -1;
            return d->plain(fd, buf, count, offset);
        }
        if (errno != EAGAIN)
            return -1;
        if (tether__fd_is_file(fd))
            return d->plain(fd, buf, count, offset); /* not cached: disk I/O */
        if (tether__fd_nonblocking(fd))
            return -1;
        if (wait_fd(t, fd, d->events) < 0)
            return -1;
    }
}

/* The drop-in entry of pread/pwrite. */
static ssize_t positional_call(int fd, void *buf, size_t count, off_t offset,
                               const struct positional *d)
{
    tether_token *t;
    int e = tether__dropin_entry(&t);
    if (e < 0)
        return -1;
    /* offset < 0: EINVAL from the raw call (preadv2 reads -1 as "current") */
    if (e == 0 || offset < 0)
        return d->plain(fd, buf, count, offset);
    return positional(t, fd, buf, count, offset, d);
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
 * EINTR and short transfers; stops at end of file or an error. */
static ssize_t transfer_all(ssize_t (*some)(int, void *, size_t), int fd, char *buf,
                            size_t count, size_t *moved)
{
    if (count > SSIZE_MAX)
        count = SSIZE_MAX;
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

/* Poll the user's fds under t, except fds[host] (host == nfds: none), with
 * the token's eventfd in a slot of a private copy; the user's revents are
 * filled in on success. */
static int poll_copy(tether_token *t, struct pollfd *fds, nfds_t nfds, nfds_t host,
                     tether_time_t until, const sigset_t *sigmask)
{
    struct pollfd small[TETHER_POLL_SMALL];
    struct pollfd *all = small;
    if (nfds + 1 > TETHER_POLL_SMALL) {
        if (nfds >= SIZE_MAX / sizeof *all - 1)
            return tether__fail(EINVAL);
        all = tether__malloc((nfds + 1) * sizeof *all);
        if (!all)
            return tether__fail(ENOMEM);
    }
    nfds_t m = 0;
    for (nfds_t i = 0; i < nfds; i++)
        if (i != host)
            all[m++] = (struct pollfd){ .fd = fds[i].fd, .events = fds[i].events };
    int n = tether__token_wait_fds(t, all, m, until, sigmask);
    int saved = errno;
    if (n >= 0)
        for (nfds_t i = 0, j = 0; i < nfds; i++)
            fds[i].revents = (short)(i == host ? 0 : all[j++].revents);
    if (all != small)
        free(all);
    errno = saved;
    return n;
}

int tether_poll(struct pollfd *fds, nfds_t nfds, int timeout_ms)
{
    tether_token *t;
    int e = tether__dropin_entry(&t);
    if (e <= 0)
        return e < 0 ? -1 : tether__sys_poll(fds, nfds, timeout_ms);
    /* poll(2) refuses nfds above RLIMIT_NOFILE before reading the array;
     * so must we, before copying it. Asked only for larger sets: the fd
     * limit is never below 17 in practice, and the syscall costs ~1 us. */
    struct rlimit rl = { .rlim_cur = RLIM_INFINITY };
    if (nfds > INT_MAX) /* above any fd limit the kernel allows */
        return tether__fail(EINVAL);
    if (nfds >= TETHER_POLL_SMALL && tether__sys_getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
        rl.rlim_cur != RLIM_INFINITY && nfds > rl.rlim_cur)
        return tether__fail(EINVAL);
    if (timeout_ms == 0)
        return tether__sys_poll(fds, nfds, 0);
    if (nfds > 0 && !fds)
        return tether__fail(EFAULT);
    /* The token's eventfd needs a slot. At the fd limit there is no room for
     * one more, so it takes the place of an entry poll(2) ignores (fd < 0). */
    nfds_t host = nfds;
    if (rl.rlim_cur != RLIM_INFINITY && nfds + 1 > rl.rlim_cur)
        for (nfds_t i = 0; i < nfds && host == nfds; i++)
            if (fds[i].fd < 0)
                host = i;
    tether_time_t until =
        timeout_ms < 0 ? TETHER_NEVER : tether_deadline_after(tether_ms(timeout_ms));
    return poll_copy(t, fds, nfds, host, until, NULL);
}

int tether_ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *tmo,
                 const sigset_t *sigmask)
{
    tether_token *t = tether__current;
    if (!t)
        return tether__sys_ppoll(fds, nfds, tmo, sigmask);
    if (tmo && !tether__timespec_valid(tmo))
        return tether__fail(EINVAL);
    int c = tether__token_poll(t);
    if (c)
        return tether__fail(c);
    if (tmo && tmo->tv_sec == 0 && tmo->tv_nsec == 0)
        return tether__sys_ppoll(fds, nfds, tmo, sigmask);
    if (nfds > 0 && !fds)
        return tether__fail(EFAULT);
    tether_time_t until = tmo ? tether_deadline_after(tether__timespec_ns(tmo)) : TETHER_NEVER;
    return poll_copy(t, fds, nfds, nfds, until, sigmask);
}
