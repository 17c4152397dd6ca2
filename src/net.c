/*
 * Cancellable socket calls: the recv and send families, accept and connect.
 *
 * Every call first tries the transfer without blocking (MSG_DONTWAIT), so a
 * ready socket costs exactly the one syscall the raw call costs; only when
 * it would block does it wait in poll with the token's eventfd. Like the raw
 * blocking calls, send keeps going until everything is sent and MSG_WAITALL
 * keeps receiving; bytes already moved are returned, and the cancellation
 * is reported by the next call. SO_RCVTIMEO / SO_SNDTIMEO are honoured as
 * the raw calls honour them (read only when a wait is needed).
 */
#define _GNU_SOURCE
#include "legacy_internal.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/socket.h>
#include <unistd.h>

/* The instant a blocking call on fd gives up under SO_RCVTIMEO/SO_SNDTIMEO
 * (`opt`), or TETHER_NEVER when the option is unset. */
static tether_time_t sock_timeout_until(int fd, int opt)
{
    struct timeval tv;
    socklen_t len = sizeof tv;
    if (getsockopt(fd, SOL_SOCKET, opt, &tv, &len) < 0 || (tv.tv_sec == 0 && tv.tv_usec == 0))
        return TETHER_NEVER;
    return tether_deadline_after(tether_sec(tv.tv_sec) + tether_us(tv.tv_usec));
}

static bool sock_is_stream(int fd)
{
    int type = 0;
    socklen_t len = sizeof type;
    return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM;
}

/* The common wait of a call that found fd not ready: 1 to try again, or -1
 * with errno (EAGAIN for the raw call's own behaviour: O_NONBLOCK,
 * MSG_DONTWAIT, SO_*TIMEO elapsed). *until is UNTIL_UNREAD until the
 * option has been read (a monotonic instant is never 0). */
enum { UNTIL_UNREAD = 0 };
static int sock_wait(tether_token *t, int fd, int flags, short events, int timeo_opt,
                     tether_time_t *until)
{
    if ((flags & MSG_DONTWAIT) || tether__fd_nonblocking(fd))
        return tether__fail(EAGAIN);
    if (*until == UNTIL_UNREAD)
        *until = sock_timeout_until(fd, timeo_opt);
    int w = tether__legacy_wait_fd(t, fd, events, *until);
    if (w < 0)
        return -1;
    if (w == 0)
        return tether__fail(EAGAIN); /* SO_*TIMEO elapsed, as the raw call reports it */
    return 1;
}

/* The result of a transfer that may have moved bytes before failing. */
static ssize_t moved_or_fail(size_t done)
{
    return done ? (ssize_t)done : -1;
}

static ssize_t recv_common(tether_token *t, int fd, void *buf, size_t len, int flags,
                           struct sockaddr *src, socklen_t *srclen)
{
    if (tether__check_or_fail(t) < 0)
        return -1;
    size_t done = 0;
    tether_time_t until = UNTIL_UNREAD;
    for (;;) {
        ssize_t n = recvfrom(fd, (char *)buf + done, len - done, flags | MSG_DONTWAIT, src, srclen);
        if (n > 0) {
            done += (size_t)n;
            /* MSG_WAITALL on a stream: keep going, as the blocking call does. */
            if (!(flags & MSG_WAITALL) || (flags & MSG_PEEK) || done == len)
                return (ssize_t)done;
            if (done == (size_t)n && !sock_is_stream(fd))
                return (ssize_t)done;
            continue;
        }
        if (n == 0)
            return (ssize_t)done; /* end of stream, or an empty datagram */
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return moved_or_fail(done);
        if (sock_wait(t, fd, flags, POLLIN, SO_RCVTIMEO, &until) < 0)
            return moved_or_fail(done);
    }
}

ssize_t tether_recv(int fd, void *buf, size_t len, int flags)
{
    tether_token *t = tether__current;
    if (!t)
        return recv(fd, buf, len, flags);
    return recv_common(t, fd, buf, len, flags, NULL, NULL);
}

ssize_t tether_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *src,
                        socklen_t *srclen)
{
    tether_token *t = tether__current;
    if (!t)
        return recvfrom(fd, buf, len, flags, src, srclen);
    return recv_common(t, fd, buf, len, flags, src, srclen);
}

static size_t iov_total(const struct iovec *iov, size_t cnt)
{
    size_t total = 0;
    for (size_t i = 0; i < cnt; i++)
        total += iov[i].iov_len;
    return total;
}

/* The rest of a message after the first `n` bytes moved: a copy of msg over
 * a private copy of its iovecs, without control data (it went with the first
 * bytes) or an address (a stream has none). */
struct msg_rest {
    struct msghdr hdr;
    struct iovec small[8];
    struct iovec *iov;
};

static int msg_rest_init(struct msg_rest *r, const struct msghdr *msg, size_t n)
{
    if (msg->msg_iovlen > INT_MAX)
        return tether__fail(EMSGSIZE);
    int cnt = (int)msg->msg_iovlen;
    r->iov = tether__iov_copy(msg->msg_iov, cnt, r->small, 8);
    if (!r->iov)
        return -1;
    struct iovec *v = r->iov;
    tether__iov_advance(&v, &cnt, n);
    r->hdr = (struct msghdr){ .msg_iov = v, .msg_iovlen = (size_t)cnt };
    return 0;
}

static void msg_rest_advance(struct msg_rest *r, size_t n)
{
    struct iovec *v = r->hdr.msg_iov;
    int cnt = (int)r->hdr.msg_iovlen;
    tether__iov_advance(&v, &cnt, n);
    r->hdr.msg_iov = v;
    r->hdr.msg_iovlen = (size_t)cnt;
}

static void msg_rest_free(struct msg_rest *r)
{
    if (r->iov)
        tether__iov_release(r->iov, r->small);
}

ssize_t tether_recvmsg(int fd, struct msghdr *msg, int flags)
{
    tether_token *t = tether__current;
    if (!t)
        return recvmsg(fd, msg, flags);
    if (tether__check_or_fail(t) < 0)
        return -1;
    size_t done = 0, total = 0;
    tether_time_t until = UNTIL_UNREAD;
    struct msg_rest rest = { .iov = NULL };
    struct msghdr *cur = msg;
    ssize_t result;
    for (;;) {
        ssize_t n = recvmsg(fd, cur, flags | MSG_DONTWAIT);
        if (n > 0) {
            done += (size_t)n;
            if (cur != msg)
                msg->msg_flags |= cur->msg_flags;
            if (!(flags & MSG_WAITALL) || (flags & MSG_PEEK)) {
                result = (ssize_t)done;
                break;
            }
            if (cur == msg) {
                total = iov_total(msg->msg_iov, msg->msg_iovlen);
                if (done == total || !sock_is_stream(fd)) {
                    result = (ssize_t)done;
                    break;
                }
                if (msg_rest_init(&rest, msg, done) < 0) {
                    result = (ssize_t)done; /* no memory to go on: what arrived */
                    break;
                }
                cur = &rest.hdr;
            } else {
                msg_rest_advance(&rest, (size_t)n);
            }
            if (done == total) {
                result = (ssize_t)done;
                break;
            }
            continue;
        }
        if (n == 0) {
            result = (ssize_t)done;
            break;
        }
        if ((errno != EAGAIN && errno != EWOULDBLOCK) ||
            sock_wait(t, fd, flags, POLLIN, SO_RCVTIMEO, &until) < 0) {
            result = moved_or_fail(done);
            break;
        }
    }
    int saved = errno;
    msg_rest_free(&rest);
    errno = saved;
    return result;
}

/* The wait of a send that would block. A socket that polls writable yet
 * still refuses (an unconnected AF_UNIX datagram socket whose receiver is
 * full) is retried with a backoff instead of spinning. 0 to try again, or -1
 * with errno. */
struct send_wait {
    tether_time_t until;
    int refused;
    int64_t step;
};

static int send_wait(tether_token *t, int fd, int flags, struct send_wait *sw)
{
    if (sw->refused++ < 2)
        return sock_wait(t, fd, flags, POLLOUT, SO_SNDTIMEO, &sw->until) < 0 ? -1 : 0;
    if (sw->until == UNTIL_UNREAD)
        sw->until = sock_timeout_until(fd, SO_SNDTIMEO);
    if (tether_now() >= sw->until)
        return tether__fail(EAGAIN);
    int r = tether__backoff(t, &sw->step, 20);
    return r ? tether__fail(r) : 0;
}

/* send and sendto: keep sending until everything is sent, as the blocking
 * calls do (a datagram is never split). */
static ssize_t send_common(tether_token *t, int fd, const void *buf, size_t len, int flags,
                           const struct sockaddr *dest, socklen_t destlen)
{
    if (tether__check_or_fail(t) < 0)
        return -1;
    size_t done = 0;
    struct send_wait sw = { .until = UNTIL_UNREAD };
    for (;;) {
        ssize_t n = sendto(fd, (const char *)buf + done, len - done, flags | MSG_DONTWAIT, dest,
                           destlen);
        if (n >= 0) {
            done += (size_t)n;
            if (done >= len || n == 0)
                return (ssize_t)done;
            sw.refused = 0;
            continue;
        }
        if ((errno != EAGAIN && errno != EWOULDBLOCK) || send_wait(t, fd, flags, &sw) < 0)
            return moved_or_fail(done);
    }
}

ssize_t tether_send(int fd, const void *buf, size_t len, int flags)
{
    tether_token *t = tether__current;
    if (!t)
        return send(fd, buf, len, flags);
    return send_common(t, fd, buf, len, flags, NULL, 0);
}

ssize_t tether_sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *dest,
                      socklen_t destlen)
{
    tether_token *t = tether__current;
    if (!t)
        return sendto(fd, buf, len, flags, dest, destlen);
    return send_common(t, fd, buf, len, flags, dest, destlen);
}

ssize_t tether_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    tether_token *t = tether__current;
    if (!t)
        return sendmsg(fd, msg, flags);
    if (tether__check_or_fail(t) < 0)
        return -1;
    size_t done = 0, total = 0;
    struct send_wait sw = { .until = UNTIL_UNREAD };
    struct msg_rest rest = { .iov = NULL };
    const struct msghdr *cur = msg;
    ssize_t result;
    for (;;) {
        ssize_t n = sendmsg(fd, cur, flags | MSG_DONTWAIT);
        if (n >= 0) {
            done += (size_t)n;
            if (cur == msg) {
                total = iov_total(msg->msg_iov, msg->msg_iovlen);
                if (done >= total || n == 0) {
                    result = (ssize_t)done;
                    break;
                }
                if (msg_rest_init(&rest, msg, done) < 0) {
                    result = (ssize_t)done;
                    break;
                }
                /* A stream has no address to repeat; a datagram is never split. */
                cur = &rest.hdr;
            } else {
                msg_rest_advance(&rest, (size_t)n);
                if (done >= total || n == 0) {
                    result = (ssize_t)done;
                    break;
                }
            }
            sw.refused = 0;
            continue;
        }
        if ((errno != EAGAIN && errno != EWOULDBLOCK) || send_wait(t, fd, flags, &sw) < 0) {
            result = moved_or_fail(done);
            break;
        }
    }
    int saved = errno;
    msg_rest_free(&rest);
    errno = saved;
    return result;
}

int tether_accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
    tether_token *t = tether__current;
    if (!t)
        return accept4(fd, addr, addrlen, flags);
    if (tether__check_or_fail(t) < 0)
        return -1;
    if (fd < 0)
        return accept4(fd, addr, addrlen, flags); /* EBADF: poll would ignore it */
    /* A pending connection: one look, then the raw call. */
    int w = tether__legacy_wait_fd(t, fd, POLLIN, 0);
    if (w < 0)
        return -1;
    if (w == 0) {
        if (tether__fd_nonblocking(fd))
            return accept4(fd, addr, addrlen, flags); /* EAGAIN, or one that just came */
        w = tether__legacy_wait_fd(t, fd, POLLIN, sock_timeout_until(fd, SO_RCVTIMEO));
        if (w < 0)
            return -1;
        if (w == 0)
            return tether__fail(EAGAIN); /* SO_RCVTIMEO, as accept(2) honours it */
    }
    /* Whatever the token says now, a connection accepted here is returned. */
    return accept4(fd, addr, addrlen, flags);
}

int tether_accept(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
    tether_token *t = tether__current;
    if (!t)
        return accept(fd, addr, addrlen);
    return tether_accept4(fd, addr, addrlen, 0);
}

/* Put the socket's flags back; keeps errno. */
static void restore_flags(int fd, int fl)
{
    int saved = errno;
    int r = fcntl(fd, F_SETFL, fl);
    (void)r;
    errno = saved;
}

int tether_connect(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
    tether_token *t = tether__current;
    if (!t)
        return connect(fd, addr, addrlen);
    if (tether__check_or_fail(t) < 0)
        return -1;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -1;
    if (fl & O_NONBLOCK)
        return connect(fd, addr, addrlen);
    if (fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    int64_t step = 0;
    int r;
    while ((r = connect(fd, addr, addrlen)) < 0 && errno == EAGAIN) {
        /* A full AF_UNIX backlog: the blocking call waits for room, which
         * cannot be polled for. */
        int e = tether__backoff(t, &step, 20);
        if (e) {
            restore_flags(fd, fl);
            return tether__fail(e);
        }
    }
    if (r == 0 || errno != EINPROGRESS) {
        restore_flags(fd, fl);
        return r;
    }
    /* In progress: wait until writable, then ask connect(2) itself for the
     * outcome, which also moves the socket to the connected state (so a
     * later connect says EISCONN, as after a blocking one). */
    tether_time_t until = sock_timeout_until(fd, SO_SNDTIMEO);
    for (;;) {
        int w = tether__legacy_wait_fd(t, fd, POLLOUT, until);
        if (w <= 0) {
            restore_flags(fd, fl);
            return w < 0 ? -1 : tether__fail(EINPROGRESS); /* SO_SNDTIMEO, as connect(2) */
        }
        r = connect(fd, addr, addrlen);
        if (r < 0 && (errno == EALREADY || errno == EINPROGRESS))
            continue;
        restore_flags(fd, fl);
        return r;
    }
}
