/*
 * Cancellable sleep, read, write and poll: drop-in replacements that use the
 * calling thread's current token.
 *
 * read and write first try the transfer without blocking (RWF_NOWAIT), so a
 * descriptor that is ready costs exactly the one syscall the raw call costs;
 * only when it would block do they wait in poll with the token's eventfd.
 * Bytes already moved are always returned: cancellation is reported by the
 * next call.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

int tether_sleep_until(tether_time_t when)
{
    tether_token *t = tether__current;
    if (!t) {
        struct timespec ts = { .tv_sec = when / 1000000000, .tv_nsec = when % 1000000000 };
        if (when < 0)
            ts = (struct timespec){ 0, 0 };
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
    return tether__wait_fds(t, p, 1, TETHER_NEVER) < 0 ? -1 : 0;
}

ssize_t tether_read(int fd, void *buf, size_t count)
{
    tether_token *t = tether__current;
    if (!t)
        return read(fd, buf, count);
    int c = tether_check();
    if (c) {
        errno = c;
        return -1;
    }
    struct iovec iov = { .iov_base = buf, .iov_len = count };
    bool waited = false;
    for (;;) {
        ssize_t n = preadv2(fd, &iov, 1, -1, RWF_NOWAIT);
        if (n >= 0)
            return n;
        if (errno == EOPNOTSUPP) {
            /* No RWF_NOWAIT for this kind of fd: wait, then the plain call. */
            if (wait_fd(t, fd, POLLIN) < 0)
                return -1;
            return read(fd, buf, count);
        }
        if (errno != EAGAIN)
            return -1;
        if (fd_is_nonblocking(fd))
            return -1; /* EAGAIN, as read(2) on an O_NONBLOCK fd */
        if (waited && fd_is_file(fd))
            return read(fd, buf, count);
        if (wait_fd(t, fd, POLLIN) < 0)
            return -1;
        waited = true;
    }
}

ssize_t tether_write(int fd, const void *buf, size_t count)
{
    tether_token *t = tether__current;
    if (!t)
        return write(fd, buf, count);
    int c = tether_check();
    if (c) {
        errno = c;
        return -1;
    }
    size_t done = 0;
    bool waited = false;
    for (;;) {
        struct iovec iov = { .iov_base = (char *)buf + done, .iov_len = count - done };
        ssize_t n = pwritev2(fd, &iov, 1, -1, RWF_NOWAIT);
        if (n > 0) {
            done += (size_t)n;
            if (done == count)
                return (ssize_t)done;
            continue;
        }
        if (n == 0)
            return (ssize_t)done;
        if (errno == EOPNOTSUPP || (errno == EAGAIN && waited && fd_is_file(fd))) {
            if (errno == EOPNOTSUPP && wait_fd(t, fd, POLLOUT) < 0)
                return done ? (ssize_t)done : -1;
            n = write(fd, (const char *)buf + done, count - done);
            if (n < 0)
                return done ? (ssize_t)done : -1;
            return (ssize_t)(done + (size_t)n);
        }
        if (errno != EAGAIN || fd_is_nonblocking(fd))
            return done ? (ssize_t)done : -1;
        if (wait_fd(t, fd, POLLOUT) < 0)
            return done ? (ssize_t)done : -1;
        waited = true;
    }
}

int tether_poll(struct pollfd *fds, nfds_t nfds, int timeout_ms)
{
    tether_token *t = tether__current;
    if (!t)
        return poll(fds, nfds, timeout_ms);
    int c = tether_check();
    if (c) {
        errno = c;
        return -1;
    }
    if (timeout_ms == 0)
        return poll(fds, nfds, 0);
    if (nfds > 0 && !fds) {
        errno = EFAULT;
        return -1;
    }
    tether_time_t until = timeout_ms < 0 ? TETHER_NEVER : tether_deadline_after(tether_ms(timeout_ms));
    /* The caller's array plus one slot for the token's eventfd. */
    struct pollfd small[16];
    struct pollfd *all = small;
    if (nfds + 1 > sizeof small / sizeof small[0]) {
        if (nfds >= SIZE_MAX / sizeof *all - 1) {
            errno = EINVAL;
            return -1;
        }
        all = malloc((nfds + 1) * sizeof *all);
        if (!all) {
            errno = ENOMEM;
            return -1;
        }
    }
    if (nfds)
        memcpy(all, fds, nfds * sizeof *all);
    int n = tether__wait_fds(t, all, nfds, until);
    int saved = errno;
    if (n >= 0)
        for (nfds_t i = 0; i < nfds; i++)
            fds[i].revents = all[i].revents;
    if (all != small)
        free(all);
    errno = saved;
    return n;
}
