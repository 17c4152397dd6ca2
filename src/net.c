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
#include "dropin.h"

#include <limits.h>

/* The instant a blocking call on fd gives up under SO_RCVTIMEO/SO_SNDTIMEO
 * (`opt`), or TETHER_NEVER when the option is unset. */
static tether_time_t sock_timeout_until(int fd, int opt)
{
    struct timeval tv;
    socklen_t len = sizeof tv;
    if (tether__sys_getsockopt(fd, SOL_SOCKET, opt, &tv, &len) < 0 || (tv.tv_sec == 0 && tv.tv_usec == 0))
        return TETHER_NEVER;
    return tether_deadline_after(tether_sec(tv.tv_sec) + tether_us(tv.tv_usec));
}

static bool sock_is_stream(int fd)
{
    int type = 0;
    socklen_t len = sizeof type;
    return tether__sys_getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM;
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
    int w = tether__token_wait_fd(t, fd, events, *until);
    if (w < 0)
        return -1;
    if (w == 0)
        return tether__fail(EAGAIN); /* SO_*TIMEO elapsed, as the raw call reports it */
    return 1;
}

static ssize_t recv_common(tether_token *t, int fd, void *buf, size_t len, int flags,
                           struct sockaddr *src, socklen_t *srclen)
{
    size_t done = 0;
    tether_time_t until = UNTIL_UNREAD;
    for (;;) {
        ssize_t n = tether__sys_recvfrom(fd, (char *)buf + done, len - done, flags | MSG_DONTWAIT, src, srclen);
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
            return tether__moved_or_fail(done);
        if (sock_wait(t, fd, flags, POLLIN, SO_RCVTIMEO, &until) < 0)
            return tether__moved_or_fail(done);
    }
}

/* The drop-in entry of recv and recvfrom (no PLT hop between them). */
static ssize_t recv_entry(int fd, void *buf, size_t len, int flags, struct sockaddr *src,
                          socklen_t *srclen)
{
    tether_token *t;
    int e = tether__dropin_entry(&t);
    if (e <= 0)
        return e < 0 ? -1 : tether__sys_recvfrom(fd, buf, len, flags, src, srclen);
    return recv_common(t, fd, buf, len, flags, src, srclen);
}

ssize_t tether_recv(int fd, void *buf, size_t len, int flags)
{
    return recv_entry(fd, buf, len, flags, NULL, NULL);
}

ssize_t tether_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *src,
                        socklen_t *srclen)
{
    return recv_entry(fd, buf, len, flags, src, srclen);
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
    struct iovec small[TETHER_IOV_SMALL];
    struct iovec *iov;
};

static int msg_rest_init(struct msg_rest *r, const struct msghdr *msg, size_t n)
{
    if (msg->msg_iovlen > INT_MAX)
        return tether__fail(EMSGSIZE);
    int cnt = (int)msg->msg_iovlen;
    r->iov = tether__iov_copy(msg->msg_iov, cnt, r->small);
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
        tether__iov_release(r->iov, r->small); /* keeps errno */
}

/* The wait of a call that would block. A socket that polls writable yet
 * still refuses a send (an unconnected AF_UNIX datagram socket whose
 * receiver is full) is retried with a backoff instead of spinning. 0 to try
 * again, or -1 with errno. */
struct xfer_wait {
    tether_time_t until;
    int refused;
    int64_t step;
};

static int xfer_wait(tether_token *t, int fd, int flags, bool sending, struct xfer_wait *w)
{
    if (!sending)
        return sock_wait(t, fd, flags, POLLIN, SO_RCVTIMEO, &w->until) < 0 ? -1 : 0;
    if (w->refused++ < 2)
        return sock_wait(t, fd, flags, POLLOUT, SO_SNDTIMEO, &w->until) < 0 ? -1 : 0;
    if (w->until == UNTIL_UNREAD)
        w->until = sock_timeout_until(fd, SO_SNDTIMEO);
    if (tether_now() >= w->until)
        return tether__fail(EAGAIN);
    return tether__token_backoff(t, &w->step);
}

/* send and sendto: keep sending until everything is sent, as the blocking
 * calls do (a datagram is never split). */
static ssize_t send_common(tether_token *t, int fd, const void *buf, size_t len, int flags,
                           const struct sockaddr *dest, socklen_t destlen)
{
    size_t done = 0;
    struct xfer_wait w = { .until = UNTIL_UNREAD };
    for (;;) {
        ssize_t n = tether__sys_sendto(fd, (const char *)buf + done, len - done,
                                       flags | MSG_DONTWAIT, dest, destlen);
        if (n >= 0) {
            done += (size_t)n;
            if (done >= len || n == 0)
                return (ssize_t)done;
            w.refused = 0;
            continue;
        }
        if ((errno != EAGAIN && errno != EWOULDBLOCK) || xfer_wait(t, fd, flags, true, &w) < 0)
            return tether__moved_or_fail(done);
    }
}

/* The drop-in entry of send and sendto. */
static ssize_t send_entry(int fd, const void *buf, size_t len, int flags,
                          const struct sockaddr *dest, socklen_t destlen)
{
    tether_token *t;
    int e = tether__dropin_entry(&t);
    if (e <= 0)
        return e < 0 ? -1 : tether__sys_sendto(fd, buf, len, flags, dest, destlen);
    return send_common(t, fd, buf, len, flags, dest, destlen);
}

ssize_t tether_send(int fd, const void *buf, size_t len, int flags)
{
    return send_entry(fd, buf, len, flags, NULL, 0);
}

ssize_t tether_sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *dest,
                      socklen_t destlen)
{
    return send_entry(fd, buf, len, flags, dest, destlen);
}

/*
 * recvmsg/sendmsg under t: the first call with the user's header; when
 * MSG_WAITALL (receiving) or a short send (sending) asks for more, the rest
 * goes through a private header over the remaining iovecs (msg_rest). The
 * user's header is written only when receiving (msg_flags).
 */
static ssize_t msg_transfer(tether_token *t, int fd, struct msghdr *msg, int flags, bool sending)
{
    size_t done = 0, total = 0;
    struct xfer_wait w = { .until = UNTIL_UNREAD };
    struct msg_rest rest = { .iov = NULL };
    struct msghdr *cur = msg;
    ssize_t result;
    for (;;) {
        ssize_t n = sending ? tether__sys_sendmsg(fd, cur, flags | MSG_DONTWAIT)
                            : tether__sys_recvmsg(fd, cur, flags | MSG_DONTWAIT);
        if (n > 0 || (n == 0 && sending)) {
            done += (size_t)n;
            if (!sending && cur != msg)
                msg->msg_flags |= cur->msg_flags;
            if (!sending && (!(flags & MSG_WAITALL) || (flags & MSG_PEEK)))
                break;
            if (cur == msg) {
                total = iov_total(msg->msg_iov, msg->msg_iovlen);
                /* A datagram is never split, nor received in parts. */
                if (done >= total || n == 0 || (!sending && !sock_is_stream(fd)))
                    break;
                if (msg_rest_init(&rest, msg, done) < 0)
                    break; /* no memory to go on: what moved */
                cur = &rest.hdr;
            } else {
                msg_rest_advance(&rest, (size_t)n);
            }
            if (done >= total || n == 0)
                break;
            w.refused = 0;
            continue;
        }
        if (n == 0)
            break; /* end of stream, or an empty datagram */
        if ((errno != EAGAIN && errno != EWOULDBLOCK) || xfer_wait(t, fd, flags, sending, &w) < 0) {
            result = tether__moved_or_fail(done);
            goto out;
        }
    }
    result = (ssize_t)done;
out:
    msg_rest_free(&rest);
    return result;
}

ssize_t tether_recvmsg(int fd, struct msghdr *msg, int flags)
{
    tether_token *t;
    int e = tether__dropin_entry(&t);
    if (e <= 0)
        return e < 0 ? -1 : tether__sys_recvmsg(fd, msg, flags);
    return msg_transfer(t, fd, msg, flags, false);
}

ssize_t tether_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    tether_token *t;
    int e = tether__dropin_entry(&t);
    if (e <= 0)
        return e < 0 ? -1 : tether__sys_sendmsg(fd, msg, flags);
    /* Not written through: msg_transfer writes the header only to receive. */
    return msg_transfer(t, fd, tether__unconst(msg), flags, true);
}

/* The drop-in accept4 (tether_accept and tether_accept4). */
static int accept_entry(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
    tether_token *t;
    int e = tether__dropin_entry(&t);
    if (e < 0)
        return -1;
    if (e == 0 || fd < 0) /* fd < 0: EBADF, which poll would ignore */
        return tether__sys_accept4(fd, addr, addrlen, flags);
    /* A pending connection: one look, then the raw call. */
    int w = tether__token_wait_fd(t, fd, POLLIN, 0);
    if (w < 0)
        return -1;
    if (w == 0) {
        if (tether__fd_nonblocking(fd)) /* EAGAIN, or one that just came */
            return tether__sys_accept4(fd, addr, addrlen, flags);
        w = tether__token_wait_fd(t, fd, POLLIN, sock_timeout_until(fd, SO_RCVTIMEO));
        if (w < 0)
            return -1;
        if (w == 0)
            return tether__fail(EAGAIN); /* SO_RCVTIMEO, as accept(2) honours it */
    }
    /* Whatever the token says now, a connection accepted here is returned. */
    return tether__sys_accept4(fd, addr, addrlen, flags);
}

int tether_accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
    return accept_entry(fd, addr, addrlen, flags);
}

int tether_accept(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
    return accept_entry(fd, addr, addrlen, 0);
}

/* Put the socket's flags back and return r; keeps errno. */
static int restore_flags(int fd, int fl, int r)
{
    int saved = errno;
    tether__sys_fcntl(fd, F_SETFL, fl);
    errno = saved;
    return r;
}

int tether_connect(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
    tether_token *t;
    int e = tether__dropin_entry(&t);
    if (e <= 0)
        return e < 0 ? -1 : tether__sys_connect(fd, addr, addrlen);
    int fl = tether__sys_fcntl(fd, F_GETFL, 0);
    if (fl < 0)
        return -1;
    if (fl & O_NONBLOCK)
        return tether__sys_connect(fd, addr, addrlen);
    if (tether__sys_fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    int64_t step = 0;
    int r;
    while ((r = tether__sys_connect(fd, addr, addrlen)) < 0 && errno == EAGAIN) {
        /* A full AF_UNIX backlog: the blocking call waits for room, which
         * cannot be polled for. */
        if (tether__token_backoff(t, &step) < 0)
            return restore_flags(fd, fl, -1);
    }
    if (r == 0 || errno != EINPROGRESS)
        return restore_flags(fd, fl, r);
    /* In progress: wait until writable, then ask connect(2) itself for the
     * outcome, which also moves the socket to the connected state (so a
     * later connect says EISCONN, as after a blocking one). */
    tether_time_t until = sock_timeout_until(fd, SO_SNDTIMEO);
    for (;;) {
        int w = tether__token_wait_fd(t, fd, POLLOUT, until);
        if (w < 0)
            return restore_flags(fd, fl, -1);
        if (w == 0) /* SO_SNDTIMEO, as connect(2) reports it */
            return restore_flags(fd, fl, tether__fail(EINPROGRESS));
        r = tether__sys_connect(fd, addr, addrlen);
        if (r < 0 && (errno == EALREADY || errno == EINPROGRESS))
            continue;
        return restore_flags(fd, fl, r);
    }
}
