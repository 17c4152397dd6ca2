/*
 * Internal interface of the cancellable calls for legacy code (io.c, net.c,
 * sync.c, process.c). Nothing here is API.
 *
 *   io.c       readv/writev/pread/pwrite, ppoll, nanosleep, read_all/write_all,
 *              and the descriptor wait every legacy call shares
 *   net.c      recv/send families, accept, connect
 *   sync.c     condition variables and semaphores
 *   process.c  waitpid/waitid, child processes (pidfd)
 *   shield.c   shielded regions
 *   signals.c  SIGINT/SIGTERM to a graceful cancel
 */
#ifndef TETHER_LEGACY_INTERNAL_H
#define TETHER_LEGACY_INTERNAL_H

#include "internal.h"

#include <sys/uio.h>

/* One descriptor: 1 ready, 0 at `until`, -1 with errno. */
TETHER_HIDDEN int tether__legacy_wait_fd(tether_token *t, int fd, short events,
                                         tether_time_t until);

/* Whether fd is in O_NONBLOCK mode (false if fcntl fails). One syscall. */
TETHER_HIDDEN bool tether__fd_nonblocking(int fd);

/* Advance an iovec array past n bytes transferred, consuming entries that
 * are done (zero-length ones included). The entries are modified: use a copy. */
static inline void tether__iov_advance(struct iovec **iov, int *cnt, size_t n)
{
    while (*cnt > 0 && n >= (*iov)->iov_len) {
        n -= (*iov)->iov_len;
        (*iov)++;
        (*cnt)--;
    }
    if (*cnt > 0 && n > 0) {
        (*iov)->iov_base = (char *)(*iov)->iov_base + n;
        (*iov)->iov_len -= n;
    }
}

/* Copy an iovec array into `small` (n entries) or a heap array; NULL and
 * errno ENOMEM on failure. Free with tether__iov_release. */
static inline struct iovec *tether__iov_copy(const struct iovec *iov, int cnt,
                                             struct iovec *small, int nsmall)
{
    struct iovec *c = small;
    if (cnt > nsmall) {
        c = tether__malloc((size_t)cnt * sizeof *c);
        if (!c) {
            errno = ENOMEM;
            return NULL;
        }
    }
    for (int i = 0; i < cnt; i++)
        c[i] = iov[i];
    return c;
}

static inline void tether__iov_release(struct iovec *c, struct iovec *small)
{
    if (c != small)
        free(c);
}


/* A struct timespec duration to nanoseconds, saturating at INT64_MAX. */
static inline int64_t tether__timespec_ns(const struct timespec *ts)
{
    if (ts->tv_sec > (INT64_MAX - ts->tv_nsec) / 1000000000)
        return INT64_MAX;
    return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

/* Sleep with a growing backoff (1 ms doubling to `cap_ms`) while a condition
 * cannot be polled for: 0 when the nap ended, else ECANCELED, ETIMEDOUT or
 * EINTR. *step starts at 0. */
static inline int tether__backoff(tether_token *t, int64_t *step_ns, int64_t cap_ms)
{
    *step_ns = *step_ns ? *step_ns * 2 : tether_ms(1);
    if (*step_ns > tether_ms(cap_ms))
        *step_ns = tether_ms(cap_ms);
    return tether__wait_token(t, tether_deadline_after(*step_ns));
}

#endif /* TETHER_LEGACY_INTERNAL_H */
