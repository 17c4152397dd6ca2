/*
 * The interposed waits: poll, ppoll, select, pselect, the epoll waits, the
 * sleeps, getaddrinfo, and the fortified __poll_chk and __ppoll_chk. A
 * stopped poll or select shuts down the connections it waited on (cut).
 */
#define _GNU_SOURCE
#undef _FORTIFY_SOURCE /* the layer defines read, recv, poll...: not their fortified inlines */

#include "layer.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

/* The fortified entry points compilers emit calls to (glibc's prototypes
 * live in its internal headers). */
// NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp)
int __poll_chk(struct pollfd *fds, nfds_t nfds, int timeout_ms, size_t fdslen);
// NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp)
int __ppoll_chk(struct pollfd *fds, nfds_t nfds, const struct timespec *tmo,
                const sigset_t *sigmask, size_t fdslen);

static void cut_pollfds(const struct pollfd *fds, nfds_t nfds)
{
    for (nfds_t i = 0; i < nfds; i++)
        cut(fds[i].fd);
}

/* ----------------------------------------------------------------------
 * Readiness waits
 * ---------------------------------------------------------------------- */

typedef int (*poll_fn)(struct pollfd *, nfds_t, int);
typedef int (*ppoll_fn)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
typedef int (*select_fn)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
typedef int (*pselect_fn)(int, fd_set *, fd_set *, fd_set *, const struct timespec *,
                          const sigset_t *);
typedef int (*epoll_wait_fn)(int, struct epoll_event *, int, int);
typedef int (*epoll_pwait_fn)(int, struct epoll_event *, int, int, const sigset_t *);
typedef int (*epoll_pwait2_fn)(int, struct epoll_event *, int, const struct timespec *,
                               const sigset_t *);

static int poll_done(enum entry e, int r, const struct pollfd *fds, nfds_t nfds)
{
    if (leave(e, r < 0))
        cut_pollfds(fds, nfds);
    return r;
}

static NOINLINE int routed_poll(enum entry e, struct pollfd *fds, nfds_t nfds, int timeout_ms)
{
    if (!routed()) /* re-entered, or not resolved yet */
        return ((poll_fn)next(E_POLL))(fds, nfds, timeout_ms);
    enter(e);
    return poll_done(e, tether_poll(fds, nfds, timeout_ms), fds, nfds);
}

LAYER_API int poll(struct pollfd *fds, nfds_t nfds, int timeout_ms)
{
    poll_fn f = (poll_fn)fast(E_POLL);
    if (__builtin_expect(f != NULL, 1))
        return f(fds, nfds, timeout_ms);
    return routed_poll(E_POLL, fds, nfds, timeout_ms);
}

// NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp)
LAYER_API int __poll_chk(struct pollfd *fds, nfds_t nfds, int timeout_ms, size_t fdslen)
{
    if (fdslen / sizeof *fds < nfds)
        __chk_fail();
    poll_fn f = (poll_fn)fast(E_POLL);
    if (__builtin_expect(f != NULL, 1))
        return f(fds, nfds, timeout_ms);
    return routed_poll(E_POLL_CHK, fds, nfds, timeout_ms);
}

static NOINLINE int routed_ppoll(enum entry e, struct pollfd *fds, nfds_t nfds,
                                 const struct timespec *tmo, const sigset_t *sigmask)
{
    if (!routed()) /* re-entered, or not resolved yet */
        return ((ppoll_fn)next(E_PPOLL))(fds, nfds, tmo, sigmask);
    enter(e);
    return poll_done(e, tether_ppoll(fds, nfds, tmo, sigmask), fds, nfds);
}

LAYER_API int ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *tmo,
                    const sigset_t *sigmask)
{
    ppoll_fn f = (ppoll_fn)fast(E_PPOLL);
    if (__builtin_expect(f != NULL, 1))
        return f(fds, nfds, tmo, sigmask);
    return routed_ppoll(E_PPOLL, fds, nfds, tmo, sigmask);
}

// NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp)
LAYER_API int __ppoll_chk(struct pollfd *fds, nfds_t nfds, const struct timespec *tmo,
                          const sigset_t *sigmask, size_t fdslen)
{
    if (fdslen / sizeof *fds < nfds)
        __chk_fail();
    ppoll_fn f = (ppoll_fn)fast(E_PPOLL);
    if (__builtin_expect(f != NULL, 1))
        return f(fds, nfds, tmo, sigmask);
    return routed_ppoll(E_PPOLL_CHK, fds, nfds, tmo, sigmask);
}

/*
 * select and pselect as one tether_ppoll over the descriptors in the sets.
 * Readiness maps back as the kernel's select does: readable on POLLIN,
 * POLLHUP or POLLERR; writable on POLLOUT or POLLERR; exceptional on
 * POLLPRI. A descriptor that is not open fails the call with EBADF.
 */
static int select_via_poll(enum entry e, int nfds, fd_set *rd, fd_set *wr, fd_set *ex,
                           const struct timespec *tmo, const sigset_t *sigmask)
{
    if (nfds < 0 || nfds > FD_SETSIZE) {
        errno = EINVAL;
        return -1;
    }
    struct pollfd pfd[FD_SETSIZE];
    nfds_t n = 0;
    for (int fd = 0; fd < nfds; fd++) {
        short ev = 0;
        if (rd && FD_ISSET(fd, rd))
            ev |= POLLIN;
        if (wr && FD_ISSET(fd, wr))
            ev |= POLLOUT;
        if (ex && FD_ISSET(fd, ex))
            ev |= POLLPRI;
        if (ev)
            pfd[n++] = (struct pollfd){ .fd = fd, .events = ev };
    }
    enter(e);
    int r = tether_ppoll(pfd, n, tmo, sigmask);
    if (leave(e, r < 0)) {
        cut_pollfds(pfd, n);
        return -1;
    }
    if (r < 0)
        return -1;
    for (nfds_t i = 0; i < n; i++) {
        if (pfd[i].revents & POLLNVAL) {
            errno = EBADF;
            return -1;
        }
    }
    int ready = 0;
    for (nfds_t i = 0; i < n; i++) {
        int fd = pfd[i].fd;
        short re = pfd[i].revents;
        if (rd && FD_ISSET(fd, rd)) {
            if (re & (POLLIN | POLLHUP | POLLERR))
                ready++;
            else
                FD_CLR(fd, rd);
        }
        if (wr && FD_ISSET(fd, wr)) {
            if (re & (POLLOUT | POLLERR))
                ready++;
            else
                FD_CLR(fd, wr);
        }
        if (ex && FD_ISSET(fd, ex)) {
            if (re & POLLPRI)
                ready++;
            else
                FD_CLR(fd, ex);
        }
    }
    return ready;
}

LAYER_API int select(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, struct timeval *tv)
{
    if (!routed())
        return ((select_fn)next(E_SELECT))(nfds, rd, wr, ex, tv);
    if (tv && (tv->tv_sec < 0 || tv->tv_usec < 0 || tv->tv_usec >= 1000000)) {
        errno = EINVAL;
        return -1;
    }
    struct timespec ts, *tsp = NULL;
    tether_time_t end = TETHER_NEVER;
    if (tv) {
        ts = (struct timespec){ .tv_sec = tv->tv_sec, .tv_nsec = (long)tv->tv_usec * 1000 };
        tsp = &ts;
        end = tether_deadline_after(tether_sec(tv->tv_sec) + tether_us(tv->tv_usec));
    }
    int r = select_via_poll(E_SELECT, nfds, rd, wr, ex, tsp, NULL);
    if (tv) {
        /* Linux's select leaves the time not slept in *tv. */
        int saved = errno;
        int64_t left = end - tether_now();
        if (left < 0)
            left = 0;
        tv->tv_sec = left / 1000000000;
        tv->tv_usec = (left % 1000000000) / 1000;
        errno = saved;
    }
    return r;
}

LAYER_API int pselect(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, const struct timespec *tmo,
                      const sigset_t *sigmask)
{
    if (!routed())
        return ((pselect_fn)next(E_PSELECT))(nfds, rd, wr, ex, tmo, sigmask);
    return select_via_poll(E_PSELECT, nfds, rd, wr, ex, tmo, sigmask);
}

/*
 * epoll: the epoll descriptor itself is readable while any of its events is
 * ready, so wait for that under the token, then collect with a zero-timeout
 * epoll_wait. Another thread may collect the events first: then wait again
 * for what is left of the timeout. The descriptors in the set are unknown
 * here, so a cut epoll wait shuts nothing down (docs/retrofit.md).
 */
static int epoll_via_poll(enum entry e, int epfd, struct epoll_event *events, int maxevents,
                          const struct timespec *tmo, const sigset_t *sigmask)
{
    epoll_wait_fn collect = (epoll_wait_fn)next(E_EPOLL_WAIT);
    tether_time_t end = TETHER_NEVER;
    if (tmo) {
        if (tmo->tv_sec < 0 || tmo->tv_nsec < 0 || tmo->tv_nsec >= 1000000000) {
            errno = EINVAL;
            return -1;
        }
        end = tether_deadline_after(tether_sec(tmo->tv_sec) + tmo->tv_nsec);
    }
    enter(e);
    int r;
    for (;;) {
        r = collect(epfd, events, maxevents, 0);
        if (r != 0)
            break;
        struct timespec left, *lp = NULL;
        if (tmo) {
            int64_t ns = end - tether_now();
            if (ns <= 0)
                break; /* r == 0: the timeout elapsed */
            left = (struct timespec){ .tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000 };
            lp = &left;
        }
        struct pollfd p = { .fd = epfd, .events = POLLIN };
        r = tether_ppoll(&p, 1, lp, sigmask);
        if (r <= 0)
            break; /* -1: stopped or failed; 0: the timeout elapsed */
    }
    leave(e, r < 0);
    return r;
}

static struct timespec ms_to_timespec(int ms)
{
    return (struct timespec){ .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };
}

LAYER_API int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout_ms)
{
    if (!routed() || maxevents <= 0)
        return ((epoll_wait_fn)next(E_EPOLL_WAIT))(epfd, events, maxevents, timeout_ms);
    struct timespec ts = ms_to_timespec(timeout_ms);
    return epoll_via_poll(E_EPOLL_WAIT, epfd, events, maxevents, timeout_ms < 0 ? NULL : &ts, NULL);
}

LAYER_API int epoll_pwait(int epfd, struct epoll_event *events, int maxevents, int timeout_ms,
                          const sigset_t *sigmask)
{
    if (!routed() || maxevents <= 0)
        return ((epoll_pwait_fn)next(E_EPOLL_PWAIT))(epfd, events, maxevents, timeout_ms, sigmask);
    struct timespec ts = ms_to_timespec(timeout_ms);
    return epoll_via_poll(E_EPOLL_PWAIT, epfd, events, maxevents, timeout_ms < 0 ? NULL : &ts,
                          sigmask);
}

LAYER_API int epoll_pwait2(int epfd, struct epoll_event *events, int maxevents,
                           const struct timespec *tmo, const sigset_t *sigmask)
{
    if (!routed() || maxevents <= 0)
        return ((epoll_pwait2_fn)next(E_EPOLL_PWAIT2))(epfd, events, maxevents, tmo, sigmask);
    return epoll_via_poll(E_EPOLL_PWAIT2, epfd, events, maxevents, tmo, sigmask);
}

/* ----------------------------------------------------------------------
 * Sleeps
 * ---------------------------------------------------------------------- */

typedef int (*nanosleep_fn)(const struct timespec *, struct timespec *);
typedef int (*clock_nanosleep_fn)(clockid_t, int, const struct timespec *, struct timespec *);
typedef int (*usleep_fn)(useconds_t);
typedef unsigned (*sleep_fn)(unsigned);

LAYER_API int nanosleep(const struct timespec *req, struct timespec *rem)
{
    if (!routed())
        return ((nanosleep_fn)next(E_NANOSLEEP))(req, rem);
    enter(E_NANOSLEEP);
    int r = tether_nanosleep(req, rem);
    leave(E_NANOSLEEP, r < 0);
    return r;
}

/*
 * clock_nanosleep on CLOCK_MONOTONIC, CLOCK_REALTIME or CLOCK_BOOTTIME,
 * relative or absolute. An absolute time on a clock other than
 * CLOCK_MONOTONIC is turned into a duration when the call starts (a later
 * jump of that clock is not followed). Other clocks go to libc. Returns an
 * error number, as clock_nanosleep does.
 */
LAYER_API int clock_nanosleep(clockid_t clock, int flags, const struct timespec *req,
                              struct timespec *rem)
{
    if (!routed() ||
        (clock != CLOCK_MONOTONIC && clock != CLOCK_REALTIME && clock != CLOCK_BOOTTIME))
        return ((clock_nanosleep_fn)next(E_CLOCK_NANOSLEEP))(clock, flags, req, rem);
    /* A negative relative time is invalid; a negative absolute one is past. */
    if (req->tv_nsec < 0 || req->tv_nsec >= 1000000000 ||
        (req->tv_sec < 0 && !(flags & TIMER_ABSTIME)))
        return EINVAL;
    int saved = errno;
    int r;
    enter(E_CLOCK_NANOSLEEP);
    if (!(flags & TIMER_ABSTIME)) {
        r = tether_nanosleep(req, rem);
    } else {
        int64_t when = tether_sec(req->tv_sec) + req->tv_nsec;
        if (clock != CLOCK_MONOTONIC) {
            struct timespec now;
            clock_gettime(clock, &now);
            when = tether_now() + (when - (tether_sec(now.tv_sec) + now.tv_nsec));
        }
        r = tether_sleep_until(when);
    }
    int err = 0;
    if (r < 0) {
        leave(E_CLOCK_NANOSLEEP, true);
        err = errno;
    } else {
        leave(E_CLOCK_NANOSLEEP, false);
    }
    errno = saved;
    return err;
}

LAYER_API int usleep(useconds_t us)
{
    if (!routed())
        return ((usleep_fn)next(E_USLEEP))(us);
    enter(E_USLEEP);
    int r = tether_sleep_for(tether_us(us));
    leave(E_USLEEP, r < 0);
    return r;
}

/* sleep(3) cannot fail: a stopped sleep returns the whole seconds left
 * (rounded up, so never 0) with errno set to ECANCELED or ETIMEDOUT. */
LAYER_API unsigned sleep(unsigned seconds)
{
    if (!routed())
        return ((sleep_fn)next(E_SLEEP))(seconds);
    struct timespec req = { .tv_sec = (time_t)seconds }, rem = { 0 };
    enter(E_SLEEP);
    int r = tether_nanosleep(&req, &rem);
    leave(E_SLEEP, r < 0);
    if (r == 0)
        return 0;
    unsigned left = (unsigned)rem.tv_sec + (rem.tv_nsec > 0);
    return left ? left : 1;
}

/* ----------------------------------------------------------------------
 * Name resolution
 * ---------------------------------------------------------------------- */

typedef int (*getaddrinfo_fn)(const char *, const char *, const struct addrinfo *,
                              struct addrinfo **);

/* Under a token the lookup runs on tether_getaddrinfo's helper thread,
 * which has no token: its getaddrinfo comes back here and goes to libc. */
LAYER_API int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                          struct addrinfo **res)
{
    if (!routed())
        return ((getaddrinfo_fn)next(E_GETADDRINFO))(node, service, hints, res);
    enter(E_GETADDRINFO);
    int r = tether_getaddrinfo(node, service, hints, res);
    leave(E_GETADDRINFO, r == EAI_SYSTEM);
    return r;
}
