/*
 * The interposed descriptor and socket calls: the read and write families,
 * connect and accept, and the fortified __read_chk, __recv_chk and
 * __recvfrom_chk. A stopped read or write shuts its connection down (cut).
 */
#define _GNU_SOURCE
#undef _FORTIFY_SOURCE /* the layer defines read, recv, poll...: not their fortified inlines */

#include "layer.h"

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* The fortified entry points compilers emit calls to (glibc's prototypes
 * live in its internal headers). */
// NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp)
ssize_t __read_chk(int fd, void *buf, size_t count, size_t buflen);
// NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp)
ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags);
// NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp)
ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags,
                       struct sockaddr *src, socklen_t *srclen);

static ssize_t io_done(enum entry e, ssize_t r, int fd)
{
    if (leave(e, r < 0))
        cut(fd);
    return r;
}

/* readv and writev: one routed half for both, given the tether call. The
 * caller checked routed(). */
typedef ssize_t (*iov_fn)(int, const struct iovec *, int);

static NOINLINE ssize_t routed_iov(enum entry e, iov_fn op, int fd, const struct iovec *iov,
                                   int iovcnt)
{
    enter(e);
    return io_done(e, op(fd, iov, iovcnt), fd);
}

/* ----------------------------------------------------------------------
 * Reads
 * ---------------------------------------------------------------------- */

typedef ssize_t (*read_fn)(int, void *, size_t);
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

LAYER_API ssize_t readv(int fd, const struct iovec *iov, int iovcnt)
{
    if (!routed())
        return ((iov_fn)next(E_READV))(fd, iov, iovcnt);
    return routed_iov(E_READV, tether_readv, fd, iov, iovcnt);
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

/* The caller checked routed(). */
static NOINLINE ssize_t routed_recvmsg(int fd, struct msghdr *msg, int flags)
{
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
typedef ssize_t (*send_fn)(int, const void *, size_t, int);
typedef ssize_t (*sendto_fn)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
typedef ssize_t (*sendmsg_fn)(int, const struct msghdr *, int);

/* write and send: one routed half for both (write is send without flags,
 * on any descriptor). The caller checked routed(). */
static NOINLINE ssize_t routed_send(enum entry e, int fd, const void *buf, size_t len, int flags)
{
    enter(e);
    ssize_t r = e == E_WRITE ? tether_write(fd, buf, len) : tether_send(fd, buf, len, flags);
    return io_done(e, r, fd);
}

LAYER_API ssize_t write(int fd, const void *buf, size_t count)
{
    if (!routed())
        return ((write_fn)next(E_WRITE))(fd, buf, count);
    return routed_send(E_WRITE, fd, buf, count, 0);
}

LAYER_API ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
    if (!routed())
        return ((iov_fn)next(E_WRITEV))(fd, iov, iovcnt);
    return routed_iov(E_WRITEV, tether_writev, fd, iov, iovcnt);
}

LAYER_API ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    if (!routed())
        return ((send_fn)next(E_SEND))(fd, buf, len, flags);
    return routed_send(E_SEND, fd, buf, len, flags);
}

LAYER_API ssize_t sendto(int fd, const void *buf, size_t len, int flags,
                         const struct sockaddr *dest, socklen_t destlen)
{
    if (!routed())
        return ((sendto_fn)next(E_SENDTO))(fd, buf, len, flags, dest, destlen);
    enter(E_SENDTO);
    return io_done(E_SENDTO, tether_sendto(fd, buf, len, flags, dest, destlen), fd);
}

/* The caller checked routed(). */
static NOINLINE ssize_t routed_sendmsg(int fd, const struct msghdr *msg, int flags)
{
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

/* accept and accept4: one routed half for both. The caller checked
 * routed(). */
static NOINLINE int routed_accept(enum entry e, int fd, struct sockaddr *addr, socklen_t *addrlen,
                                  int flags)
{
    enter(e);
    int r =
        e == E_ACCEPT ? tether_accept(fd, addr, addrlen) : tether_accept4(fd, addr, addrlen, flags);
    leave(e, r < 0);
    return r;
}

LAYER_API int accept(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
    if (!routed())
        return ((accept_fn)next(E_ACCEPT))(fd, addr, addrlen);
    return routed_accept(E_ACCEPT, fd, addr, addrlen, 0);
}

LAYER_API int accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
    if (!routed())
        return ((accept4_fn)next(E_ACCEPT4))(fd, addr, addrlen, flags);
    return routed_accept(E_ACCEPT4, fd, addr, addrlen, flags);
}
