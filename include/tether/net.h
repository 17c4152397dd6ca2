/*
 * tether/net.h — cancellable socket calls: recv, send, accept and connect
 * in their POSIX forms.
 *
 * Each is a drop-in replacement for the raw call (see tether/io.h for the
 * rules every cancellable descriptor call follows): same parameters, same
 * return values, -1 and errno, with ECANCELED / ETIMEDOUT for the calling
 * thread's current token, a transfer or an accepted descriptor that already
 * took effect returned, and with no current token exactly the raw call.
 */
#ifndef TETHER_NET_H
#define TETHER_NET_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * tether_recv — recv(2) that can be canceled.
 *
 * A socket with data ready costs one syscall (MSG_DONTWAIT); an O_NONBLOCK
 * socket, or flags with MSG_DONTWAIT, fail with EAGAIN as the raw call
 * would; SO_RCVTIMEO is honoured (EAGAIN when it elapses). MSG_WAITALL on a
 * stream socket waits for the whole length, and a cancellation after part of
 * it arrived returns the part.
 *
 * Parameters:
 *  fd     the socket.
 *  buf    where to put the bytes.
 *  len    the most bytes to receive.
 *  flags  as for recv(2).
 * Returns: What recv(2) returns: the number of bytes received, 0 at an orderly
 * shutdown, or -1 with errno set.
 * Errors:
 *  ECANCELED     the current token was canceled.
 *  ETIMEDOUT     the current token's deadline passed.
 *  EINTR         a signal handler ran.
 *  ENOMEM/EMFILE the token's eventfd could not be created on first use.
 *  otherwise     recv(2)'s errors.
 * Blocking: Blocks; a cancellation point.
 * Thread safety: Thread-safe as recv(2); uses the calling thread's current
 * token.
 * Ownership: buf is the caller's and used only during the call.
 */
TETHER_API ssize_t tether_recv(int fd, void *buf, size_t len, int flags);

/*
 * tether_recvfrom — recvfrom(2) that can be canceled.
 *
 * A socket with data ready costs one syscall (MSG_DONTWAIT); an O_NONBLOCK
 * socket, or flags with MSG_DONTWAIT, fail with EAGAIN as the raw call
 * would; SO_RCVTIMEO is honoured (EAGAIN when it elapses). MSG_WAITALL on a
 * stream socket waits for the whole length, and a cancellation after part of
 * it arrived returns the part.
 *
 * Parameters:
 *  fd      the socket.
 *  buf     where to put the bytes.
 *  len     the most bytes to receive.
 *  flags   as for recvfrom(2).
 *  src     if not NULL, receives the source address.
 *  srclen  the size of *src on entry, the address length on return.
 * Returns: What recvfrom(2) returns: the number of bytes received, 0 at an orderly
 * shutdown, or -1 with errno set.
 * Errors:
 *  ECANCELED     the current token was canceled.
 *  ETIMEDOUT     the current token's deadline passed.
 *  EINTR         a signal handler ran.
 *  ENOMEM/EMFILE the token's eventfd could not be created on first use.
 *  otherwise     recvfrom(2)'s errors.
 * Blocking: Blocks; a cancellation point.
 * Thread safety: Thread-safe as recvfrom(2); uses the calling thread's current
 * token.
 * Ownership: buf, src and srclen are the caller's and used only during the
 * call.
 */
TETHER_API ssize_t tether_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *src,
                                   socklen_t *srclen);

/*
 * tether_recvmsg — recvmsg(2) that can be canceled.
 *
 * A socket with data ready costs one syscall (MSG_DONTWAIT); an O_NONBLOCK
 * socket, or flags with MSG_DONTWAIT, fail with EAGAIN as the raw call
 * would; SO_RCVTIMEO is honoured (EAGAIN when it elapses). MSG_WAITALL on a
 * stream socket waits for the whole length, and a cancellation after part of
 * it arrived returns the part.
 * Control data is taken with the first bytes.
 *
 * Parameters:
 *  fd     the socket.
 *  msg    the buffers, address and control space, as for recvmsg(2).
 *  flags  as for recvmsg(2).
 * Returns: What recvmsg(2) returns: the number of bytes received, 0 at an orderly
 * shutdown, or -1 with errno set.
 * Errors:
 *  ECANCELED     the current token was canceled.
 *  ETIMEDOUT     the current token's deadline passed.
 *  EINTR         a signal handler ran.
 *  ENOMEM/EMFILE the token's eventfd could not be created on first use.
 *  otherwise     recvmsg(2)'s errors.
 * Blocking: Blocks; a cancellation point.
 * Thread safety: Thread-safe as recvmsg(2); uses the calling thread's current
 * token.
 * Ownership: msg and what it points to are the caller's and used only
 * during the call.
 */
TETHER_API ssize_t tether_recvmsg(int fd, struct msghdr *msg, int flags);

/*
 * tether_send — send(2) that can be canceled.
 *
 * Like the blocking raw call it sends the whole buffer; if canceled or
 * interrupted after sending part of it, it returns the part sent and the
 * next call reports the cancellation. An O_NONBLOCK socket or MSG_DONTWAIT
 * behaves as the raw call; SO_SNDTIMEO is honoured. Pass MSG_NOSIGNAL as
 * with the raw call to avoid SIGPIPE.
 *
 * Parameters:
 *  fd     the socket.
 *  buf    the bytes to send.
 *  len    how many.
 *  flags  as for send(2).
 * Returns: What send(2) returns: the number of bytes sent, or -1 with errno
 * set.
 * Errors:
 *  ECANCELED     the current token was canceled.
 *  ETIMEDOUT     the current token's deadline passed.
 *  EINTR         a signal handler ran.
 *  ENOMEM/EMFILE the token's eventfd could not be created on first use.
 *  otherwise     send(2)'s errors.
 * Blocking: Blocks; a cancellation point.
 * Thread safety: Thread-safe as send(2); uses the calling thread's current
 * token.
 * Ownership: buf is the caller's and used only during the call.
 */
TETHER_API ssize_t tether_send(int fd, const void *buf, size_t len, int flags);

/*
 * tether_sendto — sendto(2) that can be canceled.
 *
 * Like the blocking raw call it sends the whole buffer; if canceled or
 * interrupted after sending part of it, it returns the part sent and the
 * next call reports the cancellation. An O_NONBLOCK socket or MSG_DONTWAIT
 * behaves as the raw call; SO_SNDTIMEO is honoured. Pass MSG_NOSIGNAL as
 * with the raw call to avoid SIGPIPE.
 *
 * Parameters:
 *  fd       the socket.
 *  buf      the bytes to send.
 *  len      how many.
 *  flags    as for sendto(2).
 *  dest     the destination address, or NULL on a connected socket.
 *  destlen  its length.
 * Returns: What sendto(2) returns: the number of bytes sent, or -1 with errno
 * set.
 * Errors:
 *  ECANCELED     the current token was canceled.
 *  ETIMEDOUT     the current token's deadline passed.
 *  EINTR         a signal handler ran.
 *  ENOMEM/EMFILE the token's eventfd could not be created on first use.
 *  otherwise     sendto(2)'s errors.
 * Blocking: Blocks; a cancellation point.
 * Thread safety: Thread-safe as sendto(2); uses the calling thread's current
 * token.
 * Ownership: buf and dest are the caller's and used only during the call.
 */
TETHER_API ssize_t tether_sendto(int fd, const void *buf, size_t len, int flags,
                                 const struct sockaddr *dest, socklen_t destlen);

/*
 * tether_sendmsg — sendmsg(2) that can be canceled.
 *
 * Like the blocking raw call it sends the whole buffer; if canceled or
 * interrupted after sending part of it, it returns the part sent and the
 * next call reports the cancellation. An O_NONBLOCK socket or MSG_DONTWAIT
 * behaves as the raw call; SO_SNDTIMEO is honoured. Pass MSG_NOSIGNAL as
 * with the raw call to avoid SIGPIPE.
 * Control data goes with the first bytes only; msg is not modified.
 *
 * Parameters:
 *  fd     the socket.
 *  msg    the buffers, address and control data, as for sendmsg(2); not
 *         modified.
 *  flags  as for sendmsg(2).
 * Returns: What sendmsg(2) returns: the number of bytes sent, or -1 with errno
 * set.
 * Errors:
 *  ECANCELED     the current token was canceled.
 *  ETIMEDOUT     the current token's deadline passed.
 *  EINTR         a signal handler ran.
 *  ENOMEM/EMFILE the token's eventfd could not be created on first use.
 *  otherwise     sendmsg(2)'s errors.
 * Blocking: Blocks; a cancellation point.
 * Thread safety: Thread-safe as sendmsg(2); uses the calling thread's current
 * token.
 * Ownership: msg and what it points to are the caller's and used only
 * during the call.
 */
TETHER_API ssize_t tether_sendmsg(int fd, const struct msghdr *msg, int flags);

/*
 * tether_accept — accept(2) that can be canceled.
 *
 * A connection accepted while a cancellation arrives is returned, never
 * lost: the next call reports the cancellation. An O_NONBLOCK listener fails
 * with EAGAIN as the raw call would. The wait is a poll for POLLIN followed
 * by the raw call: when several threads accept on one blocking listener, the
 * one that loses the race for a connection blocks in the raw call until the
 * next connection, and that wait cannot be canceled — make such a listener
 * O_NONBLOCK (see docs/limits.md). A descriptor that is not a listening
 * socket (a pipe, a UDP socket, a connected stream) fails at once with the
 * raw call's error, as do flags the raw call refuses; SO_RCVTIMEO is
 * honoured (EAGAIN when it elapses).
 *
 * Parameters:
 *  fd       the listening socket.
 *  addr     if not NULL, receives the peer's address.
 *  addrlen  the size of *addr on entry, the address length on return.
 * Returns: The new descriptor, or -1 with errno set.
 * Errors:
 *  ECANCELED     the current token was canceled.
 *  ETIMEDOUT     the current token's deadline passed.
 *  EINTR         a signal handler ran.
 *  EAGAIN        O_NONBLOCK and nothing pending, or SO_RCVTIMEO elapsed.
 *  ENOTSOCK      fd is not a socket (at once, never waits).
 *  EOPNOTSUPP    fd is a socket type that does not listen, such as UDP.
 *  EINVAL        fd is a stream socket that is not listening.
 *  ENOMEM/EMFILE the token's eventfd could not be created on first use.
 *  otherwise     accept(2)'s errors.
 * Blocking: Blocks; a cancellation point (except the race described above).
 * Thread safety: Thread-safe as accept(2); uses the calling thread's current
 * token.
 * Ownership: The caller owns the new descriptor; addr and addrlen are the
 * caller's and used only during the call.
 */
TETHER_API int tether_accept(int fd, struct sockaddr *addr, socklen_t *addrlen);

/*
 * tether_accept4 — accept4(2) that can be canceled.
 *
 * A connection accepted while a cancellation arrives is returned, never
 * lost: the next call reports the cancellation. An O_NONBLOCK listener fails
 * with EAGAIN as the raw call would. The wait is a poll for POLLIN followed
 * by the raw call: when several threads accept on one blocking listener, the
 * one that loses the race for a connection blocks in the raw call until the
 * next connection, and that wait cannot be canceled — make such a listener
 * O_NONBLOCK (see docs/limits.md). A descriptor that is not a listening
 * socket (a pipe, a UDP socket, a connected stream) fails at once with the
 * raw call's error, as do flags the raw call refuses; SO_RCVTIMEO is
 * honoured (EAGAIN when it elapses).
 *
 * Parameters:
 *  fd       the listening socket.
 *  addr     if not NULL, receives the peer's address.
 *  addrlen  the size of *addr on entry, the address length on return.
 *  flags    as for accept4(2) (SOCK_NONBLOCK, SOCK_CLOEXEC).
 * Returns: The new descriptor, or -1 with errno set.
 * Errors:
 *  ECANCELED     the current token was canceled.
 *  ETIMEDOUT     the current token's deadline passed.
 *  EINTR         a signal handler ran.
 *  EAGAIN        O_NONBLOCK and nothing pending, or SO_RCVTIMEO elapsed.
 *  ENOTSOCK      fd is not a socket (at once, never waits).
 *  EOPNOTSUPP    fd is a socket type that does not listen, such as UDP.
 *  EINVAL        fd is a stream socket that is not listening, or flags has
 *                a bit other than SOCK_NONBLOCK and SOCK_CLOEXEC.
 *  ENOMEM/EMFILE the token's eventfd could not be created on first use.
 *  otherwise     accept4(2)'s errors.
 * Blocking: Blocks; a cancellation point (except the race described above).
 * Thread safety: Thread-safe as accept4(2); uses the calling thread's current
 * token.
 * Ownership: The caller owns the new descriptor; addr and addrlen are the
 * caller's and used only during the call.
 */
TETHER_API int tether_accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags);

/*
 * tether_connect — connect(2) that can be canceled.
 *
 * On a blocking socket it waits for the connection as connect(2) does, but
 * cancellably: the socket is switched to O_NONBLOCK for the attempt and its
 * flags are restored before returning, whatever the outcome. On an
 * O_NONBLOCK socket it is the raw call (EINPROGRESS). After ECANCELED,
 * ETIMEDOUT or EINTR the attempt goes on in the background exactly as after
 * a raw connect(2) interrupted by a signal: close the socket, or call
 * connect again (EALREADY, EISCONN). A full AF_UNIX backlog is retried with
 * a short backoff (up to 20 ms).
 *
 * Parameters:
 *  fd       the socket.
 *  addr     the address to connect to.
 *  addrlen  its length.
 * Returns: 0, or -1 with errno set.
 * Errors:
 *  ECANCELED     the current token was canceled.
 *  ETIMEDOUT     the current token's deadline passed.
 *  EINTR         a signal handler ran.
 *  ENOMEM/EMFILE the token's eventfd could not be created on first use.
 *  otherwise     connect(2)'s errors.
 * Blocking: Blocks; a cancellation point.
 * Thread safety: Other threads must not use the socket meanwhile (its flags
 * change during the call); uses the calling thread's current token.
 * Ownership: addr is the caller's and used only during the call.
 */
TETHER_API int tether_connect(int fd, const struct sockaddr *addr, socklen_t addrlen);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_NET_H */
