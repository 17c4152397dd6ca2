/*
 * Every system call tether makes, for itself and on behalf of its drop-ins,
 * entered directly (inline syscall instruction, or syscall(2) elsewhere), so
 * that an LD_PRELOAD library or a -Wl,--wrap of read(), write(), poll(), ...
 * never sees them. Each keeps the libc call's convention: -1 and errno.
 * Descriptor acquisitions go through the fault-injection funnel (EMFILE).
 */
#ifndef TETHER__SYS_H
#define TETHER__SYS_H

#include "internal.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>

/* eventfd(0, flags); EMFILE when the funnel injects a failure. */
TETHER_HIDDEN int tether__sys_eventfd(int flags);
/* Add one to an eventfd's counter. */
TETHER_HIDDEN int tether__sys_eventfd_signal(int efd);
/* Read (and so reset) an eventfd's counter; EAGAIN when it is zero. */
TETHER_HIDDEN int tether__sys_eventfd_drain(int efd);
/* close(2) of a descriptor tether owns. */
TETHER_HIDDEN int tether__sys_close(int fd);
/* FUTEX_WAIT_BITSET (private) until `abs` on CLOCK_MONOTONIC (NULL: none). */
TETHER_HIDDEN int tether__sys_futex_wait(_Atomic uint32_t *word, uint32_t expected,
                                         const struct timespec *abs);
/* FUTEX_WAKE (private) of every sleeper on word. */
TETHER_HIDDEN int tether__sys_futex_wake(_Atomic uint32_t *word);
/* ppoll(2); `rel` is not modified. */
TETHER_HIDDEN int tether__sys_ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *rel,
                                    const sigset_t *sigmask);
/* poll(2). */
TETHER_HIDDEN int tether__sys_poll(struct pollfd *fds, nfds_t nfds, int timeout_ms);
/* clock_nanosleep(2), but -1 and errno like the other calls here. */
TETHER_HIDDEN int tether__sys_clock_nanosleep(clockid_t clock, int flags,
                                              const struct timespec *req, struct timespec *rem);
/* Let the kernel read the duration at ts, as nanosleep(2) does: 0 if it is
 * readable and valid, else -1 with EFAULT or EINVAL. Never sleeps. */
TETHER_HIDDEN int tether__sys_timespec_check(const struct timespec *ts);
/* Let the kernel write a timespec at ts (it stores the CLOCK_MONOTONIC
 * time): 0 if ts is writable, else -1 with EFAULT. */
TETHER_HIDDEN int tether__sys_timespec_probe(struct timespec *ts);
/* read(2), write(2), readv(2), writev(2), pread(2), pwrite(2). */
TETHER_HIDDEN ssize_t tether__sys_read(int fd, void *buf, size_t n);
TETHER_HIDDEN ssize_t tether__sys_write(int fd, const void *buf, size_t n);
TETHER_HIDDEN ssize_t tether__sys_readv(int fd, const struct iovec *iov, int cnt);
TETHER_HIDDEN ssize_t tether__sys_writev(int fd, const struct iovec *iov, int cnt);
TETHER_HIDDEN ssize_t tether__sys_pread(int fd, void *buf, size_t n, off_t off);
TETHER_HIDDEN ssize_t tether__sys_pwrite(int fd, const void *buf, size_t n, off_t off);
/* preadv2(2) / pwritev2(2); off -1 means the file position. */
TETHER_HIDDEN ssize_t tether__sys_preadv2(int fd, const struct iovec *iov, int cnt, off_t off,
                                          int flags);
TETHER_HIDDEN ssize_t tether__sys_pwritev2(int fd, const struct iovec *iov, int cnt, off_t off,
                                           int flags);
/* recvfrom(2), sendto(2), recvmsg(2), sendmsg(2). */
TETHER_HIDDEN ssize_t tether__sys_recvfrom(int fd, void *buf, size_t n, int flags,
                                           struct sockaddr *src, socklen_t *srclen);
TETHER_HIDDEN ssize_t tether__sys_sendto(int fd, const void *buf, size_t n, int flags,
                                         const struct sockaddr *dst, socklen_t dstlen);
TETHER_HIDDEN ssize_t tether__sys_recvmsg(int fd, struct msghdr *msg, int flags);
TETHER_HIDDEN ssize_t tether__sys_sendmsg(int fd, const struct msghdr *msg, int flags);
/* accept4(2), connect(2), getsockopt(2), shutdown(2). */
TETHER_HIDDEN int tether__sys_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
TETHER_HIDDEN int tether__sys_connect(int fd, const struct sockaddr *addr, socklen_t len);
TETHER_HIDDEN int tether__sys_getsockopt(int fd, int level, int opt, void *val, socklen_t *len);
TETHER_HIDDEN int tether__sys_shutdown(int fd, int how);
/* fcntl(2) with an integer argument (F_GETFL, F_SETFL). */
TETHER_HIDDEN int tether__sys_fcntl(int fd, int cmd, long arg);
/* fstat(2). */
TETHER_HIDDEN int tether__sys_fstat(int fd, struct stat *st);
/* getrlimit(2) through prlimit64 on this process. */
TETHER_HIDDEN int tether__sys_getrlimit(int resource, struct rlimit *rl);
/* waitpid(2) (wait4 without rusage), waitid(2) (without rusage). */
TETHER_HIDDEN pid_t tether__sys_waitpid(pid_t pid, int *wstatus, int options);
TETHER_HIDDEN int tether__sys_waitid(idtype_t idtype, id_t id, siginfo_t *info, int options);
/* pidfd_open(2) (EMFILE when the funnel injects a failure), pidfd_send_signal(2), kill(2). */
TETHER_HIDDEN int tether__sys_pidfd_open(pid_t pid);
TETHER_HIDDEN int tether__sys_pidfd_send_signal(int pidfd, int sig);
TETHER_HIDDEN int tether__sys_kill(pid_t pid, int sig);
/* getpid(2). */
TETHER_HIDDEN pid_t tether__sys_getpid(void);
/* gettid(2): the calling thread's kernel id. */
TETHER_HIDDEN pid_t tether__sys_gettid(void);
/* tgkill(2) to thread `tid` of this process. */
TETHER_HIDDEN int tether__sys_tgkill(pid_t tid, int sig);
/* openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC); EMFILE when the funnel injects
 * a failure. For reading /proc. */
TETHER_HIDDEN int tether__sys_open_read(const char *path);
/* One read(2) of at most size - 1 bytes of the file at `path` relative to
 * the directory dirfd (a /proc file), opened and closed here; buf is
 * NUL-terminated (empty on failure). The bytes read, or -1 with errno. */
TETHER_HIDDEN ssize_t tether__sys_read_at(int dirfd, const char *path, char *buf, size_t size);
/* getdents64(2): directory entries (struct linux_dirent64) of fd. */
TETHER_HIDDEN ssize_t tether__sys_getdents64(int fd, void *buf, size_t n);

/* Whether process group `pgid` has a member other than `except` that has
 * not exited (zombies do not count), read from /proc (pgroup.c); true when
 * /proc cannot be read, so a caller waits and kills rather than assume. */
TETHER_HIDDEN bool tether__pgroup_alive(pid_t pgid, pid_t except);

#endif /* TETHER__SYS_H */
