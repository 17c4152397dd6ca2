/*
 * Cancellable sleep, read, write and poll: drop-in replacements that use the
 * calling thread's current token. Also the vector, positional, ppoll,
 * nanosleep and whole-buffer calls for legacy code, and the descriptor wait
 * those share with net.c, sync.c and process.c (legacy_internal.h).
 *
 * read and write first try the transfer without blocking (RWF_NOWAIT), so a
 * descriptor that is ready costs exactly the one syscall the raw call costs;
 * only when it would block do they wait in poll with the token's eventfd.
 * Bytes already moved are always returned: cancellation is reported by the
 * next call.
 */
#define _GNU_SOURCE
#include "legacy_internal.h"

#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

int tether_sleep_until(tether_time_t when)
{
    tether_token *t = tether__current;
    if (!t) {
        struct timespec ts = tether__timespec(when);
        int r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        if (r) {
            errno = r;
            return -1;
        }
        return 0;
    }
    int r = tether__wait_token(t, when);
    if (r) {
        errno = r;
        return -1;
    }
    return 0;
}

int tether_sleep_for(int64_t duration_ns)
{
    if (duration_ns <= 0) {
        int c = tether_check();
        if (c) {
            errno = c;
            return -1;
        }
        return 0;
    }
    return tether_sleep_until(tether_deadline_after(duration_ns));
}

static bool fd_is_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && (fl & O_NONBLOCK);
}

/* Regular files and block devices are always "ready" to poll, yet RWF_NOWAIT
 * refuses them when the data is not cached: they need the plain call. */
static bool fd_is_file(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
}

/* Wait until fd has `events` or the token says stop; 0 or -1 with errno. */
static int wait_fd(tether_token *t, int fd, short events)
{
    struct pollfd p[2] = { { .fd = fd, .events = events } };
    return tether__wait_fds(t, p, 1, TETHER_NEVER, NULL) < 0 ? -1 : 0;
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
        ssize_t n = preadv2(fd, iov, cnt, -1, RWF_NOWAIT);
        if (n >= 0 || (errno != EAGAIN && errno != EOPNOTSUPP))
            return n;
        bool unsupported = errno == EOPNOTSUPP;
        if (fd_is_nonblocking(fd)) {
            if (unsupported || fd_is_file(fd))
                return readv(fd, iov, cnt);
            errno = EAGAIN;
            return -1;
        }
        if ((waited || unsupported) && fd_is_file(fd))
            return readv(fd, iov, cnt);
        if (wait_fd(t, fd, POLLIN) < 0)
            return -1;
        if (unsupported)
            return readv(fd, iov, cnt); /* readable: returns what is there */
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
    ssize_t n = writev(fd, iov, k + 1);
    iov[k].iov_len = saved;
    return n;
}

/*
 * writev(2) under token t, over a private (mutable) copy of the iovecs.
 * Like a blocking writev(2) it writes everything, waiting cancellably for
 * room; bytes already written are returned if it then stops (cancelled,
 * interrupted, an error), and the next call reports why.
 */
static ssize_t write_vec(tether_token *t, int fd, struct iovec *iov, int cnt)
{
    size_t done = 0;
    bool waited = false;
    do {
        ssize_t n = pwritev2(fd, iov, cnt, -1, RWF_NOWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EOPNOTSUPP)) {
            bool unsupported = errno == EOPNOTSUPP;
            if (fd_is_nonblocking(fd)) {
                if (!unsupported && !fd_is_file(fd)) {
                    errno = EAGAIN;
                    break;
                }
                n = writev(fd, iov, cnt);
            } else if ((waited || unsupported) && fd_is_file(fd)) {
                n = writev(fd, iov, cnt);
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
    tether_token *t = tether__current;
    if (!t)
        return read(fd, buf, count);
    if (tether__check_or_fail(t) < 0)
        return -1;
    struct iovec iov = { .iov_base = buf, .iov_len = count };
    return read_vec(t, fd, &iov, 1);
}

ssize_t tether_write(int fd, const void *buf, size_t count)
{
    tether_token *t = tether__current;
    if (!t)
        return write(fd, buf, count);
    if (tether__check_or_fail(t) < 0)
        return -1;
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = count };
    return write_vec(t, fd, &iov, 1);
}

int tether_poll(struct pollfd *fds, nfds_t nfds, int timeout_ms)
{
    tether_token *t = tether__current;
    if (!t)
        return poll(fds, nfds, timeout_ms);
    if (tether__check_or_fail(t) < 0)
        return -1;
    enum { SMALL = 16 };
    /* poll(2) refuses nfds above RLIMIT_NOFILE before reading the array;
     * so must we, before copying it. Asked only for larger sets: the fd
     * limit is never below 17 in practice, and the syscall costs ~1 us. */
    struct rlimit rl = { .rlim_cur = RLIM_INFINITY };
    if (nfds > INT_MAX) { /* above any fd limit the kernel allows */
        errno = EINVAL;
        return -1;
    }
    if (nfds >= SMALL && getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        nfds > rl.rlim_cur) {
        errno = EINVAL;
        return -1;
    }
    if (timeout_ms == 0)
        return poll(fds, nfds, 0);
    if (nfds > 0 && !fds) {
        errno = EFAULT;
        return -1;
    }
    /* The token's eventfd needs a slot. At the fd limit there is no room for
     * one more, so it takes the place of an entry poll(2) ignores (fd < 0). */
    nfds_t host = nfds;
    if (rl.rlim_cur != RLIM_INFINITY && nfds + 1 > rl.rlim_cur)
        for (nfds_t i = 0; i < nfds && host == nfds; i++)
            if (fds[i].fd < 0)
                host = i;
    tether_time_t until = timeout_ms < 0 ? TETHER_NEVER : tether_deadline_after(tether_ms(timeout_ms));
    struct pollfd small[SMALL];
    struct pollfd *all = small;
    if (nfds + 1 > SMALL) {
        all = tether__malloc((nfds + 1) * sizeof *all);
        if (!all) {
            errno = ENOMEM;
            return -1;
        }
    }
    nfds_t m = 0;
    for (nfds_t i = 0; i < nfds; i++)
        if (i != host)
            all[m++] = (struct pollfd){ .fd = fds[i].fd, .events = fds[i].events };
    int n = tether__wait_fds(t, all, m, until, NULL);
    int saved = errno;
    if (n >= 0)
        for (nfds_t i = 0, j = 0; i < nfds; i++)
            fds[i].revents = (short)(i == host ? 0 : all[j++].revents);
    if (all != small)
        free(all);
    errno = saved;
    return n;
}

/* ----------------------------------------------------------------------
 * Legacy calls
 * ---------------------------------------------------------------------- */

bool tether__fd_nonblocking(int fd)
{
    return fd_is_nonblocking(fd);
}

int tether__legacy_wait_fd(tether_token *t, int fd, short events, tether_time_t until)
{
    struct pollfd p[2] = { { .fd = fd, .events = events } };
    int n = tether__wait_fds(t, p, 1, until, NULL);
    return n < 0 ? -1 : n > 0;
}

ssize_t tether_readv(int fd, const struct iovec *iov, int iovcnt)
{
    tether_token *t = tether__current;
    if (!t)
        return readv(fd, iov, iovcnt);
    if (tether__check_or_fail(t) < 0)
        return -1;
    return read_vec(t, fd, iov, iovcnt);
}

ssize_t tether_writev(int fd, const struct iovec *iov, int iovcnt)
{
    tether_token *t = tether__current;
    if (!t)
        return writev(fd, iov, iovcnt);
    if (tether__check_or_fail(t) < 0)
        return -1;
    if (iovcnt <= 0 || iovcnt > IOV_MAX)
        return writev(fd, iov, iovcnt); /* EINVAL, or the empty write */
    struct iovec small[8];
    struct iovec *copy = tether__iov_copy(iov, iovcnt, small, 8);
    if (!copy)
        return -1;
    ssize_t n = write_vec(t, fd, copy, iovcnt);
    int saved = errno;
    tether__iov_release(copy, small);
    errno = saved;
    return n;
}

ssize_t tether_pread(int fd, void *buf, size_t count, off_t offset)
{
    tether_token *t = tether__current;
    if (!t)
        return pread(fd, buf, count, offset);
    if (tether__check_or_fail(t) < 0)
        return -1;
    if (offset < 0)
        return pread(fd, buf, count, offset); /* EINVAL: preadv2 reads -1 as "current" */
    struct iovec iov = { .iov_base = buf, .iov_len = count };
    for (;;) {
        ssize_t n = preadv2(fd, &iov, 1, offset, RWF_NOWAIT);
        if (n >= 0) {
            if (n == 0 || (size_t)n == count || !fd_is_file(fd))
                return n;
            /* Partly cached: the rest from the disk, as pread(2) would. */
            ssize_t m = pread(fd, (char *)buf + n, count - (size_t)n, offset + n);
            return m > 0 ? n + m : n;
        }
        if (errno == EOPNOTSUPP) {
            if (!fd_is_file(fd) && wait_fd(t, fd, POLLIN) < 0)
                return -1;
            return pread(fd, buf, count, offset);
        }
        if (errno != EAGAIN)
            return -1;
        if (fd_is_file(fd))
            return pread(fd, buf, count, offset); /* not cached: disk I/O */
        if (fd_is_nonblocking(fd))
            return -1;
        if (wait_fd(t, fd, POLLIN) < 0)
            return -1;
    }
}

ssize_t tether_pwrite(int fd, const void *buf, size_t count, off_t offset)
{
    tether_token *t = tether__current;
    if (!t)
        return pwrite(fd, buf, count, offset);
    if (tether__check_or_fail(t) < 0)
        return -1;
    if (offset < 0)
        return pwrite(fd, buf, count, offset); /* EINVAL */
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = count };
    for (;;) {
        ssize_t n = pwritev2(fd, &iov, 1, offset, RWF_NOWAIT);
        if (n >= 0) {
            if ((size_t)n == count || n == 0 || !fd_is_file(fd))
                return n;
            ssize_t m = pwrite(fd, (const char *)buf + n, count - (size_t)n, offset + n);
            return m > 0 ? n + m : n;
        }
        if (errno == EOPNOTSUPP) {
            if (!fd_is_file(fd) && wait_fd(t, fd, POLLOUT) < 0)
                return -1;
            return pwrite(fd, buf, count, offset);
        }
        if (errno != EAGAIN)
            return -1;
        if (fd_is_file(fd))
            return pwrite(fd, buf, count, offset);
        if (fd_is_nonblocking(fd))
            return -1;
        if (wait_fd(t, fd, POLLOUT) < 0)
            return -1;
    }
}

ssize_t tether_read_all(int fd, void *buf, size_t count, size_t *moved)
{
    if (count > SSIZE_MAX)
        count = SSIZE_MAX;
    size_t done = 0;
    ssize_t result = 0;
    while (done < count) {
        ssize_t n = tether_read(fd, (char *)buf + done, count - done);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n == 0)
            break; /* end of file */
        if (errno == EINTR)
            continue;
        result = -1;
        break;
    }
    if (moved)
        *moved = done;
    return result < 0 ? -1 : (ssize_t)done;
}

ssize_t tether_write_all(int fd, const void *buf, size_t count, size_t *moved)
{
    if (count > SSIZE_MAX)
        count = SSIZE_MAX;
    size_t done = 0;
    ssize_t result = 0;
    while (done < count) {
        ssize_t n = tether_write(fd, (const char *)buf + done, count - done);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n == 0)
            break; /* write(2) wrote nothing and said no error: report the short count */
        if (errno == EINTR)
            continue;
        result = -1;
        break;
    }
    if (moved)
        *moved = done;
    return result < 0 ? -1 : (ssize_t)done;
}

int tether_ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *tmo,
                 const sigset_t *sigmask)
{
    tether_token *t = tether__current;
    if (!t)
        return ppoll(fds, nfds, tmo, sigmask);
    if (tmo && (tmo->tv_sec < 0 || tmo->tv_nsec < 0 || tmo->tv_nsec >= 1000000000))
        return tether__fail(EINVAL);
    if (tether__check_or_fail(t) < 0)
        return -1;
    if (tmo && tmo->tv_sec == 0 && tmo->tv_nsec == 0)
        return ppoll(fds, nfds, tmo, sigmask);
    if (nfds > 0 && !fds)
        return tether__fail(EFAULT);
    tether_time_t until = tmo ? tether_deadline_after(tether__timespec_ns(tmo)) : TETHER_NEVER;
    struct pollfd small[16];
    struct pollfd *all = small;
    if (nfds + 1 > sizeof small / sizeof small[0]) {
        if (nfds >= SIZE_MAX / sizeof *all - 1)
            return tether__fail(EINVAL);
        all = tether__malloc((nfds + 1) * sizeof *all);
        if (!all)
            return tether__fail(ENOMEM);
    }
    for (nfds_t i = 0; i < nfds; i++)
        all[i] = (struct pollfd){ .fd = fds[i].fd, .events = fds[i].events };
    int n = tether__wait_fds(t, all, nfds, until, sigmask);
    int saved = errno;
    if (n >= 0)
        for (nfds_t i = 0; i < nfds; i++)
            fds[i].revents = all[i].revents;
    if (all != small)
        free(all);
    errno = saved;
    return n;
}

int tether_nanosleep(const struct timespec *req, struct timespec *rem)
{
    tether_token *t = tether__current;
    if (!t)
        return nanosleep(req, rem);
    if (!req)
        return tether__fail(EFAULT);
    if (req->tv_sec < 0 || req->tv_nsec < 0 || req->tv_nsec >= 1000000000)
        return tether__fail(EINVAL);
    tether_time_t until = tether_deadline_after(tether__timespec_ns(req));
    int r = tether__token_poll(t);
    if (!r)
        r = tether__wait_token(t, until);
    if (!r)
        return 0;
    if (rem) {
        tether_time_t now = tether_now();
        *rem = tether__timespec(until == TETHER_NEVER ? tether__timespec_ns(req)
                                    : until > now        ? until - now
                                                         : 0);
    }
    return tether__fail(r);
}
