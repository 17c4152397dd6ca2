/*
 * tether/io.h — cancellable descriptor I/O: read, write and their vector,
 * positioned and all-or-nothing forms, poll and ppoll.
 *
 * Each call is a drop-in replacement for the POSIX call it stands for: same
 * parameters, same return values, -1 and errno on failure, partial
 * transfers as the raw call. Each uses the calling thread's current token.
 * With no current token it behaves exactly like the raw call. With one:
 *  - it fails at once with ECANCELED/ETIMEDOUT if the token is already
 *    canceled or past its deadline, without blocking;
 *  - a thread blocked in it wakes on cancellation (ECANCELED) or at the
 *    effective deadline (ETIMEDOUT);
 *  - a transfer that already took effect is returned (bytes read stay read);
 *    the next call reports the cancellation;
 *  - a signal handler interrupting the wait makes it fail with EINTR, as the
 *    raw call does for handlers installed without SA_RESTART (tether waits in
 *    poll, which the kernel never restarts).
 * I/O waits poll the descriptor together with one eventfd per token, created
 * on first use and shared by every thread waiting under that token.
 *
 * What tether cannot interrupt (disk I/O on regular files, calls not routed
 * through it) is described in docs/limits.md.
 */
#ifndef TETHER_IO_H
#define TETHER_IO_H

#include <poll.h>
#include <stddef.h>
#include <sys/select.h> /* sigset_t, also under a bare -std=c11 (POSIX requires it here) */
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * tether_read — read(2) that can be canceled.
 *
 * On a descriptor with data ready it costs one syscall (a non-blocking
 * attempt with RWF_NOWAIT). A descriptor in O_NONBLOCK mode fails with
 * EAGAIN as read(2) would; on a socket, SO_RCVTIMEO is honoured (EAGAIN
 * when it elapses, unless the token's deadline comes first). A count above
 * SSIZE_MAX fails as read(2) fails on Linux (EFAULT).
 *
 * Parameters:
 *  fd     the descriptor.
 *  buf    where to put the bytes.
 *  count  the most bytes to read.
 * Returns: What read(2) returns: the number of bytes read, 0 at end of
 * file, or -1 with errno set.
 * Errors:
 *  ECANCELED     the current token was canceled.
 *  ETIMEDOUT     the current token's deadline passed.
 *  EINTR         a signal handler ran.
 *  ENOMEM/EMFILE the token's eventfd could not be created on first use.
 *  EAGAIN        O_NONBLOCK and no data, or SO_RCVTIMEO elapsed.
 *  otherwise     read(2)'s errors (EBADF, EFAULT, EIO, ...).
 * Blocking: Blocks; a cancellation point.
 * Thread safety: Thread-safe as read(2); uses the calling thread's current
 * token.
 * Ownership: buf is the caller's and used only during the call.
 */
TETHER_API ssize_t tether_read(int fd, void *buf, size_t count);

/*
 * tether_write — write(2) that can be canceled.
 *
 * Like a blocking write(2), it keeps writing until all `count` bytes are
 * written; if canceled (or interrupted) after writing some, it returns the
 * number written, and the next call reports the cancellation. A descriptor
 * in O_NONBLOCK mode behaves as write(2) would; on a socket, SO_SNDTIMEO is
 * honoured (what was written, or EAGAIN, when it elapses). A count above
 * SSIZE_MAX fails as write(2) fails on Linux (EFAULT).
 *
 * Parameters:
 *  fd     the descriptor.
 *  buf    the bytes to write.
 *  count  how many.
 * Returns: What write(2) returns: the number of bytes written, or -1 with
 * errno set.
 * Errors:
 *  ECANCELED     the current token was canceled.
 *  ETIMEDOUT     the current token's deadline passed.
 *  EINTR         a signal handler ran.
 *  ENOMEM/EMFILE the token's eventfd could not be created on first use.
 *  EAGAIN        O_NONBLOCK and no room, or SO_SNDTIMEO elapsed.
 *  otherwise     write(2)'s errors (EBADF, EFAULT, EPIPE, ...).
 * Blocking: Blocks; a cancellation point.
 * Thread safety: Thread-safe as write(2); uses the calling thread's current
 * token.
 * Ownership: buf is the caller's and used only during the call.
 */
TETHER_API ssize_t tether_write(int fd, const void *buf, size_t count);

/*
 * tether_readv — readv(2) that can be canceled.
 *
 * Like tether_read: a descriptor with data ready costs one syscall (preadv2
 * with RWF_NOWAIT); an O_NONBLOCK descriptor fails with EAGAIN; SO_RCVTIMEO
 * is honoured. The kernel is the first to read iov, so a NULL or unmapped
 * array fails with EFAULT as in readv(2).
 *
 * Parameters:
 *  fd      the descriptor.
 *  iov     the buffers.
 *  iovcnt  how many buffers.
 * Returns: What readv(2) returns.
 * Errors:
 *  ECANCELED     the current token was canceled.
 *  ETIMEDOUT     the current token's deadline passed.
 *  EINTR         a signal handler ran.
 *  ENOMEM/EMFILE the token's eventfd could not be created on first use.
 *  EAGAIN        O_NONBLOCK and no data, or SO_RCVTIMEO elapsed.
 *  EFAULT        iov (or a buffer) is not mapped.
 *  otherwise     readv(2)'s errors.
 * Blocking: Blocks; a cancellation point.
 * Thread safety: Thread-safe as readv(2); uses the calling thread's current
 * token.
 * Ownership: iov and its buffers are the caller's and used only during the
 * call.
 */
TETHER_API ssize_t tether_readv(int fd, const struct iovec *iov, int iovcnt);

/*
 * tether_writev — writev(2) that can be canceled.
 *
 * Like a blocking writev(2) it writes every byte of every buffer; if
 * canceled (or interrupted) after writing some, it returns the number
 * written and the next call reports the cancellation. An O_NONBLOCK
 * descriptor behaves as writev(2) would; SO_SNDTIMEO is honoured. The iov
 * array is not modified; the kernel is the first to read it, so a NULL or
 * unmapped array fails with EFAULT as in writev(2).
 *
 * Parameters:
 *  fd      the descriptor.
 *  iov     the buffers.
 *  iovcnt  how many buffers.
 * Returns: What writev(2) returns.
 * Errors:
 *  ECANCELED     the current token was canceled.
 *  ETIMEDOUT     the current token's deadline passed.
 *  EINTR         a signal handler ran.
 *  ENOMEM/EMFILE the token's eventfd could not be created on first use.
 *  EAGAIN        O_NONBLOCK and no room, or SO_SNDTIMEO elapsed.
 *  EFAULT        iov (or a buffer) is not mapped.
 *  otherwise     writev(2)'s errors.
 * Blocking: Blocks; a cancellation point.
 * Thread safety: Thread-safe as writev(2); uses the calling thread's current
 * token.
 * Ownership: iov and its buffers are the caller's and used only during the
 * call.
 */
TETHER_API ssize_t tether_writev(int fd, const struct iovec *iov, int iovcnt);

/*
 * tether_pread — pread(2) that can be canceled.
 *
 * On a regular file a short count means end of file, as with pread(2) (a
 * read that is only partly cached is completed with the plain call). Disk
 * I/O itself cannot be interrupted: only the check before it is a
 * cancellation point. A count above SSIZE_MAX fails as pread(2) fails on
 * Linux (EFAULT).
 *
 * Parameters:
 *  fd      the descriptor.
 *  buf     where to put the bytes.
 *  count   the most bytes to read.
 *  offset  the file offset to read from.
 * Returns: What pread(2) returns.
 * Errors:
 *  ECANCELED     the current token was canceled.
 *  ETIMEDOUT     the current token's deadline passed.
 *  EINTR         a signal handler ran.
 *  ENOMEM/EMFILE the token's eventfd could not be created on first use.
 *  otherwise     pread(2)'s errors.
 * Blocking: Blocks; a cancellation point (on regular files, only before the
 * disk I/O).
 * Thread safety: Thread-safe as pread(2); uses the calling thread's current
 * token.
 * Ownership: buf is the caller's and used only during the call.
 */
TETHER_API ssize_t tether_pread(int fd, void *buf, size_t count, off_t offset);

/*
 * tether_pwrite — pwrite(2) that can be canceled.
 *
 * As tether_pread: disk I/O itself cannot be interrupted, and a count
 * above SSIZE_MAX fails as pwrite(2) fails on Linux (EFAULT).
 *
 * Parameters:
 *  fd      the descriptor.
 *  buf     the bytes to write.
 *  count   how many.
 *  offset  the file offset to write at.
 * Returns: What pwrite(2) returns.
 * Errors:
 *  ECANCELED     the current token was canceled.
 *  ETIMEDOUT     the current token's deadline passed.
 *  EINTR         a signal handler ran.
 *  ENOMEM/EMFILE the token's eventfd could not be created on first use.
 *  otherwise     pwrite(2)'s errors.
 * Blocking: Blocks; a cancellation point (on regular files, only before the
 * disk I/O).
 * Thread safety: Thread-safe as pwrite(2); uses the calling thread's current
 * token.
 * Ownership: buf is the caller's and used only during the call.
 */
TETHER_API ssize_t tether_pwrite(int fd, const void *buf, size_t count, off_t offset);

/*
 * tether_read_all — read until a count of bytes has arrived or end of file.
 *
 * EINTR is retried, not returned (cancel instead). An O_NONBLOCK descriptor
 * with no data fails with EAGAIN, and so does a socket whose SO_RCVTIMEO
 * elapses (moved says how much arrived before).
 *
 * Parameters:
 *  fd     the descriptor.
 *  buf    where to put the bytes.
 *  count  how many bytes to read.
 *  moved  if not NULL, receives the number of bytes read, in every case —
 *         also when -1 is returned (how much arrived before a cancellation
 *         or an error).
 * Returns: The number of bytes read (count, or fewer at end of file), or -1
 * with errno set.
 * Errors:
 *  ECANCELED     the current token was canceled.
 *  ETIMEDOUT     the current token's deadline passed.
 *  EINVAL        count is above SSIZE_MAX (nothing is read).
 *  EAGAIN        O_NONBLOCK and no data, or SO_RCVTIMEO elapsed.
 *  ENOMEM/EMFILE the token's eventfd could not be created on first use.
 *  otherwise     read(2)'s errors.
 * Blocking: Blocks; a cancellation point.
 * Thread safety: Thread-safe as read(2); uses the calling thread's current
 * token.
 * Ownership: buf and moved are the caller's and used only during the call.
 */
TETHER_API ssize_t tether_read_all(int fd, void *buf, size_t count, size_t *moved);

/*
 * tether_write_all — write all of a buffer.
 *
 * EINTR is retried, not returned (cancel instead). A socket whose
 * SO_SNDTIMEO elapses fails with EAGAIN (moved says how much was written).
 *
 * Parameters:
 *  fd     the descriptor.
 *  buf    the bytes to write.
 *  count  how many.
 *  moved  as for tether_read_all: bytes written, in every case.
 * Returns: count, or -1 with errno set.
 * Errors:
 *  ECANCELED     the current token was canceled.
 *  ETIMEDOUT     the current token's deadline passed.
 *  EINVAL        count is above SSIZE_MAX (nothing is written).
 *  EAGAIN        O_NONBLOCK and no room, or SO_SNDTIMEO elapsed.
 *  ENOMEM/EMFILE the token's eventfd could not be created on first use.
 *  otherwise     write(2)'s errors.
 * Blocking: Blocks; a cancellation point.
 * Thread safety: Thread-safe as write(2); uses the calling thread's current
 * token.
 * Ownership: buf and moved are the caller's and used only during the call.
 */
TETHER_API ssize_t tether_write_all(int fd, const void *buf, size_t count, size_t *moved);

/*
 * tether_poll — poll(2) that can be canceled.
 *
 * The kernel sees fds and nfds first (a look with a zero timeout), so a bad
 * array or count fails as in poll(2), before tether reads the array. With
 * nfds equal to RLIMIT_NOFILE there is no room for the token's eventfd in
 * the set: the wait then polls in slices and notices a cancellation within
 * 10 ms.
 *
 * Parameters:
 *  fds         the descriptors and events, as for poll(2).
 *  nfds        how many.
 *  timeout_ms  as poll(2): negative waits forever (up to the deadline), 0
 *              polls once.
 * Returns: The number of ready descriptors, 0 if timeout_ms elapsed first,
 * or -1 with errno set.
 * Errors:
 *  ECANCELED      the current token was canceled.
 *  ETIMEDOUT      the token's deadline came before timeout_ms.
 *  EINTR          a signal handler ran.
 *  EINVAL         nfds is above RLIMIT_NOFILE (the array is not read).
 *  EFAULT         fds is not mapped.
 *  ENOMEM         out of memory.
 *  EMFILE/ENFILE  the token's eventfd could not be created on first use.
 *  otherwise      poll(2)'s errors.
 * Blocking: Blocks; a cancellation point.
 * Thread safety: Thread-safe as poll(2); uses the calling thread's current
 * token.
 * Ownership: fds is the caller's and used only during the call.
 */
TETHER_API int tether_poll(struct pollfd *fds, nfds_t nfds, int timeout_ms);

/*
 * tether_ppoll — ppoll(2) that can be canceled.
 *
 * The timeout is combined with the token's deadline: whichever comes first
 * ends the wait. As tether_poll: the kernel sees fds and nfds first, and
 * with nfds equal to RLIMIT_NOFILE a cancellation is noticed within 10 ms.
 *
 * Parameters:
 *  fds      the descriptors and events, as for poll(2).
 *  nfds     how many.
 *  tmo      as ppoll(2): NULL waits forever (up to the deadline), {0, 0}
 *           polls once.
 *  sigmask  as ppoll(2): the signal mask in force while waiting, or NULL.
 * Returns: The number of ready descriptors, 0 if tmo elapsed first, or -1
 * with errno set.
 * Errors:
 *  ECANCELED     the current token was canceled.
 *  ETIMEDOUT     the token's deadline came first.
 *  EINTR         a signal handler ran.
 *  EINVAL        nfds is above RLIMIT_NOFILE (the array is not read), or
 *                tmo is not a valid timespec.
 *  EFAULT        fds is not mapped.
 *  ENOMEM/EMFILE the token's eventfd could not be created on first use.
 *  otherwise     ppoll(2)'s errors.
 * Blocking: Blocks; a cancellation point.
 * Thread safety: Thread-safe as ppoll(2); uses the calling thread's current
 * token.
 * Ownership: fds, tmo and sigmask are the caller's and used only during the
 * call.
 */
TETHER_API int tether_ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *tmo,
                            const sigset_t *sigmask);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_IO_H */
