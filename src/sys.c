/*
 * Every system call tether makes (sys.h), entered with the syscall
 * instruction itself on x86-64 and AArch64 and through syscall(2) elsewhere:
 * no call here goes through a symbol that an LD_PRELOAD library or a link-time
 * wrap of read(), write(), poll(), ... could replace, so an interposer built
 * on tether never lands back in itself. Results follow libc: -1 and errno.
 */
#define _GNU_SOURCE
#include "sys.h"

#include "clock.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>


/* The kernel's sigset size for ppoll (what glibc passes: _NSIG / 8). */
enum { KERNEL_SIGSET_BYTES = _NSIG / 8 };

#if defined(__x86_64__)
static inline long sys6(long nr, long a, long b, long c, long d, long e, long f)
{
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
#elif defined(__aarch64__)
static inline long sys6(long nr, long a, long b, long c, long d, long e, long f)
{
    register long x8 __asm__("x8") = nr;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    register long x5 __asm__("x5") = f;
    __asm__ volatile("svc 0"
                     : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
                     : "memory");
    return x0;
}
#else
static inline long sys6(long nr, long a, long b, long c, long d, long e, long f)
{
    long r = syscall(nr, a, b, c, d, e, f);
    return r == -1 ? -errno : r;
}
#endif

/* A raw result to libc's convention: -1 and errno for -4095..-1. */
static inline long ret(long r)
{
    if ((unsigned long)r > -4096ul) {
        errno = (int)-r;
        return -1;
    }
    return r;
}

#define L(x)                      ((long)(x))
#define SYS(nr, a, b, c, d, e, f) ret(sys6((nr), L(a), L(b), L(c), L(d), L(e), L(f)))

/* A descriptor about to be created: whether the funnel refuses it (EMFILE). */
static bool fd_refused(void)
{
    if (!tether__fault_hit())
        return false;
    errno = EMFILE;
    return true;
}

int tether__sys_eventfd(int flags)
{
    return fd_refused() ? -1 : (int)SYS(SYS_eventfd2, 0, flags, 0, 0, 0, 0);
}

int tether__sys_eventfd_signal(int efd)
{
    uint64_t one = 1;
    return (int)SYS(SYS_write, efd, &one, sizeof one, 0, 0, 0);
}

int tether__sys_eventfd_drain(int efd)
{
    uint64_t count;
    return (int)SYS(SYS_read, efd, &count, sizeof count, 0, 0, 0);
}

int tether__sys_close(int fd)
{
    return (int)SYS(SYS_close, fd, 0, 0, 0, 0, 0);
}

int tether__sys_futex_wait(_Atomic uint32_t *word, uint32_t expected, const struct timespec *abs)
{
    return (int)SYS(SYS_futex, word, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, expected, abs, 0,
                    FUTEX_BITSET_MATCH_ANY);
}

int tether__sys_futex_wake(_Atomic uint32_t *word)
{
    return (int)SYS(SYS_futex, word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, INT32_MAX, 0, 0, 0);
}

int tether__sys_ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *rel,
                      const sigset_t *sigmask)
{
    /* The kernel writes the time left back: give it a copy, as libc does. */
    struct timespec copy, *tsp = NULL;
    if (rel) {
        copy = *rel;
        tsp = &copy;
    }
    return (int)SYS(SYS_ppoll, fds, nfds, tsp, sigmask, KERNEL_SIGSET_BYTES, 0);
}

int tether__sys_poll(struct pollfd *fds, nfds_t nfds, int timeout_ms)
{
    struct timespec ts = tether__timespec(tether_ms(timeout_ms));
    return tether__sys_ppoll(fds, nfds, timeout_ms < 0 ? NULL : &ts, NULL);
}

int tether__sys_clock_nanosleep(clockid_t clock, int flags, const struct timespec *req,
                                struct timespec *rem)
{
    return (int)SYS(SYS_clock_nanosleep, clock, flags, req, rem, 0, 0);
}

int tether__sys_timespec_check(const struct timespec *ts)
{
    /* FUTEX_WAIT copies and validates its timeout (EFAULT, EINVAL as for
     * nanosleep) before it compares the word, which differs: EAGAIN. */
    uint32_t word = 0;
    if (SYS(SYS_futex, &word, FUTEX_WAIT | FUTEX_PRIVATE_FLAG, 1, ts, 0, 0) < 0 && errno != EAGAIN)
        return -1;
    return 0;
}

int tether__sys_timespec_probe(struct timespec *ts)
{
    /* The syscall, not the vDSO: the kernel's copy reports a bad pointer. */
    return (int)SYS(SYS_clock_gettime, CLOCK_MONOTONIC, ts, 0, 0, 0, 0);
}

ssize_t tether__sys_read(int fd, void *buf, size_t n)
{
    return SYS(SYS_read, fd, buf, n, 0, 0, 0);
}

ssize_t tether__sys_write(int fd, const void *buf, size_t n)
{
    return SYS(SYS_write, fd, buf, n, 0, 0, 0);
}

ssize_t tether__sys_readv(int fd, const struct iovec *iov, int cnt)
{
    return SYS(SYS_readv, fd, iov, cnt, 0, 0, 0);
}

ssize_t tether__sys_writev(int fd, const struct iovec *iov, int cnt)
{
    return SYS(SYS_writev, fd, iov, cnt, 0, 0, 0);
}

ssize_t tether__sys_pread(int fd, void *buf, size_t n, off_t off)
{
    return SYS(SYS_pread64, fd, buf, n, off, 0, 0);
}

ssize_t tether__sys_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    return SYS(SYS_pwrite64, fd, buf, n, off, 0, 0);
}

/* The offset of preadv2/pwritev2 travels as two longs, low then high (on a
 * 64-bit kernel the high one is ignored). */
static long off_hi(off_t off)
{
    return (long)((uint64_t)off >> 32);
}

ssize_t tether__sys_preadv2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
    return SYS(SYS_preadv2, fd, iov, cnt, off, off_hi(off), flags);
}

ssize_t tether__sys_pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
    return SYS(SYS_pwritev2, fd, iov, cnt, off, off_hi(off), flags);
}

ssize_t tether__sys_recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *src,
                             socklen_t *srclen)
{
    return SYS(SYS_recvfrom, fd, buf, n, flags, src, srclen);
}

ssize_t tether__sys_sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *dst,
                           socklen_t dstlen)
{
    return SYS(SYS_sendto, fd, buf, n, flags, dst, dstlen);
}

ssize_t tether__sys_recvmsg(int fd, struct msghdr *msg, int flags)
{
    return SYS(SYS_recvmsg, fd, msg, flags, 0, 0, 0);
}

ssize_t tether__sys_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    return SYS(SYS_sendmsg, fd, msg, flags, 0, 0, 0);
}

int tether__sys_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    return (int)SYS(SYS_accept4, fd, addr, len, flags, 0, 0);
}

int tether__sys_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    return (int)SYS(SYS_connect, fd, addr, len, 0, 0, 0);
}

int tether__sys_getsockopt(int fd, int level, int opt, void *val, socklen_t *len)
{
    return (int)SYS(SYS_getsockopt, fd, level, opt, val, len, 0);
}

int tether__sys_shutdown(int fd, int how)
{
    return (int)SYS(SYS_shutdown, fd, how, 0, 0, 0, 0);
}

int tether__sys_fcntl(int fd, int cmd, long arg)
{
    return (int)SYS(SYS_fcntl, fd, cmd, arg, 0, 0, 0);
}

int tether__sys_fstat(int fd, struct stat *st)
{
    return (int)SYS(SYS_fstat, fd, st, 0, 0, 0, 0);
}

int tether__sys_getrlimit(int resource, struct rlimit *rl)
{
    return (int)SYS(SYS_prlimit64, 0, resource, 0, rl, 0, 0);
}

pid_t tether__sys_waitpid(pid_t pid, int *wstatus, int options)
{
    return (pid_t)SYS(SYS_wait4, pid, wstatus, options, 0, 0, 0);
}

int tether__sys_waitid(idtype_t idtype, id_t id, siginfo_t *info, int options)
{
    return (int)SYS(SYS_waitid, idtype, id, info, options, 0, 0);
}

int tether__sys_pidfd_open(pid_t pid)
{
    return fd_refused() ? -1 : (int)SYS(SYS_pidfd_open, pid, 0, 0, 0, 0, 0);
}

int tether__sys_pidfd_send_signal(int pidfd, int sig)
{
    return (int)SYS(SYS_pidfd_send_signal, pidfd, sig, 0, 0, 0, 0);
}

int tether__sys_kill(pid_t pid, int sig)
{
    return (int)SYS(SYS_kill, pid, sig, 0, 0, 0, 0);
}

pid_t tether__sys_getpid(void)
{
    return (pid_t)SYS(SYS_getpid, 0, 0, 0, 0, 0, 0);
}

pid_t tether__sys_gettid(void)
{
    return (pid_t)SYS(SYS_gettid, 0, 0, 0, 0, 0, 0);
}

int tether__sys_tgkill(pid_t tid, int sig)
{
    return (int)SYS(SYS_tgkill, tether__sys_getpid(), tid, sig, 0, 0, 0);
}

int tether__sys_open_read(const char *path)
{
    return fd_refused() ? -1 : (int)SYS(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0, 0, 0);
}

ssize_t tether__sys_read_at(int dirfd, const char *path, char *buf, size_t size)
{
    int fd = fd_refused() ? -1 : (int)SYS(SYS_openat, dirfd, path, O_RDONLY | O_CLOEXEC, 0, 0, 0);
    if (fd < 0)
        return -1;
    ssize_t n = tether__sys_read(fd, buf, size - 1);
    int saved = errno;
    tether__sys_close(fd);
    errno = saved;
    buf[n > 0 ? n : 0] = '\0';
    return n;
}

ssize_t tether__sys_getdents64(int fd, void *buf, size_t n)
{
    return SYS(SYS_getdents64, fd, buf, n, 0, 0, 0);
}
