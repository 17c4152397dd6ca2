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

static bool sock_is_stream(int fd)
{
    int type = 0;
    socklen_t len = sizeof type;
    return tether__sys_getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM;
}

/* A recv or recvfrom's arguments, for its attempt. */
struct recv_args {
    void *buf;
    size_t len;
    int flags;
    struct sockaddr *src;
    socklen_t *srclen;
};

/* The attempt of recv/recvfrom: MSG_DONTWAIT, going on under MSG_WAITALL
 * on a stream as the blocking call does; EAGAIN for the skeleton to wait. */
static ssize_t recv_attempt(struct tether__xfer *x, void *ctx)
{
    const struct recv_args *r = ctx;
    for (;;) {
        ssize_t n = tether__sys_recvfrom(x->fd, (char *)r->buf + x->done, r->len - x->done,
                                         r->flags | MSG_DONTWAIT, r->src, r->srclen);
        if (n > 0) {
            tether__xfer_moved(x, (size_t)n);
            if (!(r->flags & MSG_WAITALL) || (r->flags & MSG_PEEK) || x->done == r->len)
                return (ssize_t)x->done;
            if (x->done == (size_t)n && !sock_is_stream(x->fd))
                return (ssize_t)x->done;
            continue;
        }
        if (n == 0)
            return (ssize_t)x->done; /* end of stream, or an empty datagram */
        return errno == EAGAIN ? -1 : tether__moved_or_fail(x->done);
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
    struct tether__xfer x = tether__xfer_init(fd, POLLIN, SO_RCVTIMEO);
    x.dontwait = flags & MSG_DONTWAIT;
    struct recv_args r = { .buf = buf, .len = len, .flags = flags, .src = src, .srclen = srclen };
    return tether__xfer_run(t, &x, recv_attempt, &r);
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

/* A send or sendto's arguments, for its attempt. */
struct send_args {
    const void *buf;
    size_t len;
    int flags;
    const struct sockaddr *dest;
    socklen_t destlen;
};

/* The attempt of send/sendto: MSG_DONTWAIT, going on until everything is
 * sent, as the blocking calls do (a datagram is never split). */
static ssize_t send_attempt(struct tether__xfer *x, void *ctx)
{
    const struct send_args *a = ctx;
    for (;;) {
        ssize_t n = tether__sys_sendto(x->fd, (const char *)a->buf + x->done, a->len - x->done,
                                       a->flags | MSG_DONTWAIT, a->dest, a->destlen);
        if (n < 0)
            return errno == EAGAIN ? -1 : tether__moved_or_fail(x->done);
        tether__xfer_moved(x, (size_t)n);
        if (x->done >= a->len || n == 0)
            return (ssize_t)x->done;
    }
}

/* A sending transfer: waits for POLLOUT, and a socket that polls writable
 * yet refuses twice gets backoff naps (see tether__xfer_wait). */
static struct tether__xfer send_xfer(int fd, int flags)
{
    struct tether__xfer x = tether__xfer_init(fd, POLLOUT, SO_SNDTIMEO);
    x.dontwait = flags & MSG_DONTWAIT;
    x.backoff_after = 2;
    return x;
}

/* The drop-in entry of send and sendto. */
static ssize_t send_entry(int fd, const void *buf, size_t len, int flags,
                          const struct sockaddr *dest, socklen_t destlen)
{
    tether_token *t;
    int e = tether__dropin_entry(&t);
    if (e <= 0)
        return e < 0 ? -1 : tether__sys_sendto(fd, buf, len, flags, dest, destlen);
    struct tether__xfer x = send_xfer(fd, flags);
    struct send_args a = {
        .buf = buf, .len = len, .flags = flags, .dest = dest, .destlen = destlen
    };
    return tether__xfer_run(t, &x, send_attempt, &a);
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
 * The attempt of recvmsg/sendmsg: the first call with the user's header;
 * when MSG_WAITALL (receiving) or a short send (sending) asks for more, the
 * rest goes through a private header over the remaining iovecs (msg_rest).
 * The user's header is written only when receiving (msg_flags).
 */
struct msg_args {
    struct msghdr *msg;
    struct msghdr *cur;
    size_t total;
    int flags;
    bool sending;
    struct msg_rest rest;
};

static ssize_t msg_attempt(struct tether__xfer *x, void *ctx)
{
    struct msg_args *m = ctx;
    for (;;) {
        ssize_t n = m->sending ? tether__sys_sendmsg(x->fd, m->cur, m->flags | MSG_DONTWAIT)
                               : tether__sys_recvmsg(x->fd, m->cur, m->flags | MSG_DONTWAIT);
        if (n < 0)
            return errno == EAGAIN ? -1 : tether__moved_or_fail(x->done);
        if (n == 0 && !m->sending)
            return (ssize_t)x->done; /* end of stream, or an empty datagram */
        tether__xfer_moved(x, (size_t)n);
        if (!m->sending && m->cur != m->msg)
            m->msg->msg_flags |= m->cur->msg_flags;
        if (!m->sending && (!(m->flags & MSG_WAITALL) || (m->flags & MSG_PEEK)))
            return (ssize_t)x->done;
        if (m->cur == m->msg) {
            m->total = iov_total(m->msg->msg_iov, m->msg->msg_iovlen);
            /* A datagram is never split, nor received in parts. */
            if (x->done >= m->total || n == 0 || (!m->sending && !sock_is_stream(x->fd)))
                return (ssize_t)x->done;
            if (msg_rest_init(&m->rest, m->msg, x->done) < 0)
                return (ssize_t)x->done; /* no memory to go on: what moved */
            m->cur = &m->rest.hdr;
        } else {
            msg_rest_advance(&m->rest, (size_t)n);
        }
        if (x->done >= m->total || n == 0)
            return (ssize_t)x->done;
    }
}

/* recvmsg/sendmsg under t: the skeleton over msg_attempt. */
static ssize_t msg_transfer(tether_token *t, int fd, struct msghdr *msg, int flags, bool sending)
{
    struct tether__xfer x =
        sending ? send_xfer(fd, flags) : tether__xfer_init(fd, POLLIN, SO_RCVTIMEO);
    x.dontwait = flags & MSG_DONTWAIT;
    struct msg_args m = {
        .msg = msg, .cur = msg, .flags = flags, .sending = sending, .rest = { .iov = NULL }
    };
    ssize_t n = tether__xfer_run(t, &x, msg_attempt, &m);
    msg_rest_free(&m.rest);
    return n;
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

/* Whether fd is a listening socket (false for anything else). */
static bool sock_is_listener(int fd)
{
    int on = 0;
    socklen_t len = sizeof on;
    return tether__sys_getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on;
}

/* An accept4's arguments, for its attempt. */
struct accept_args {
    struct sockaddr *addr;
    socklen_t *addrlen;
    int flags;
};

/*
 * The attempt of accept4: a blocking listener cannot be asked without
 * blocking, so one look (poll, zero timeout), then the raw call when a
 * connection is pending. The raw call also answers at once when it would
 * not wait: an O_NONBLOCK listener (EAGAIN, or one that just came), a
 * descriptor that is no listener (ENOTSOCK, EOPNOTSUPP, EINVAL), flags it
 * refuses (EINVAL). Otherwise EAGAIN: the skeleton waits for POLLIN, up to
 * SO_RCVTIMEO as accept(2) honours it. A connection accepted here is
 * returned whatever the token says by now.
 */
static ssize_t accept_attempt(struct tether__xfer *x, void *ctx)
{
    const struct accept_args *a = ctx;
    struct pollfd p = { .fd = x->fd, .events = POLLIN };
    int n = tether__sys_poll(&p, 1, 0);
    if (n < 0)
        return -1;
    if (n > 0 || tether__xfer_nonblocking(x) || !sock_is_listener(x->fd) ||
        (a->flags & ~(SOCK_CLOEXEC | SOCK_NONBLOCK)))
        return tether__sys_accept4(x->fd, a->addr, a->addrlen, a->flags);
    return tether__fail(EAGAIN);
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
    struct tether__xfer x = tether__xfer_init(fd, POLLIN, SO_RCVTIMEO);
    struct accept_args a = { .addr = addr, .addrlen = addrlen, .flags = flags };
    return (int)tether__xfer_run(t, &x, accept_attempt, &a);
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

/* A connect's arguments, for its attempt. */
struct connect_args {
    const struct sockaddr *addr;
    socklen_t len;
};

/* The attempt of connect on a socket tether made O_NONBLOCK: 0, an error,
 * or EAGAIN for the skeleton to wait. In progress (EINPROGRESS, then
 * EALREADY): wait until writable, then ask connect(2) itself for the
 * outcome, which also moves the socket to the connected state (so a later
 * connect says EISCONN, as after a blocking one); SO_SNDTIMEO ends that
 * wait with EINPROGRESS, as connect(2) reports it. A full AF_UNIX backlog
 * (EAGAIN): the blocking call waits for room, which cannot be polled for,
 * so the skeleton naps with backoff. */
static ssize_t connect_attempt(struct tether__xfer *x, void *ctx)
{
    const struct connect_args *c = ctx;
    int r = tether__sys_connect(x->fd, c->addr, c->len);
    if (r == 0 || (errno != EAGAIN && errno != EINPROGRESS && errno != EALREADY))
        return r;
    bool backlog = errno == EAGAIN;
    x->backoff_after = backlog ? 0 : -1;
    x->timeout_err = backlog ? EAGAIN : EINPROGRESS;
    return tether__fail(EAGAIN);
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
    struct tether__xfer x = tether__xfer_init(fd, POLLOUT, SO_SNDTIMEO);
    x.nonblock = 0; /* the caller's mode: a blocking connect waits */
    struct connect_args c = { .addr = addr, .len = addrlen };
    return restore_flags(fd, fl, (int)tether__xfer_run(t, &x, connect_attempt, &c));
}
