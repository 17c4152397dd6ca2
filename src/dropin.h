/*
 * The skeleton every drop-in (tether_read, tether_recv, ...) is built on:
 * the entry under the current token, the descriptor questions the retry
 * loops ask, and the iovec helpers. All system calls go through sys.h.
 */
#ifndef TETHER__DROPIN_H
#define TETHER__DROPIN_H

#include "current.h"
#include "sys.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>

/* Stack room before a drop-in allocates: iovec and pollfd copies. */
enum { TETHER_IOV_SMALL = 8, TETHER_POLL_SMALL = 16 };


/* A const buffer as the void * that struct iovec and struct msghdr carry on
 * the output paths, where the kernel only reads through it. */
static inline void *tether__unconst(const void *p)
{
    return (void *)(uintptr_t)p;
}

/* The entry of a drop-in that checks the token first: 0 when the thread
 * has no current token (make the raw call), 1 to go on under *t, -1 with
 * errno ECANCELED/ETIMEDOUT when *t is canceled or past its deadline. */
static inline int tether__dropin_entry(tether_token **t)
{
    *t = tether__current;
    if (!*t)
        return 0;
    int c = tether__token_poll(*t);
    return c ? tether__fail(c) : 1;
}

/* Whether fd is in O_NONBLOCK mode (false if fcntl fails). One syscall. */
static inline bool tether__fd_nonblocking(int fd)
{
    int fl = tether__sys_fcntl(fd, F_GETFL, 0);
    return fl >= 0 && (fl & O_NONBLOCK);
}

/* Whether fd is a regular file or block device: always "ready" to poll, yet
 * refused by RWF_NOWAIT when the data is not cached, so it needs the plain
 * call. One syscall. */
static inline bool tether__fd_is_file(int fd)
{
    struct stat st;
    return tether__sys_fstat(fd, &st) == 0 && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
}

/* What a transfer that may have moved bytes before failing returns. */
static inline ssize_t tether__moved_or_fail(size_t done)
{
    return done ? (ssize_t)done : -1;
}

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

/* Copy an iovec array into `small` (TETHER_IOV_SMALL entries) or a heap
 * array; NULL and errno ENOMEM on failure. Free with tether__iov_release. */
static inline struct iovec *tether__iov_copy(const struct iovec *iov, int cnt,
                                             struct iovec small[TETHER_IOV_SMALL])
{
    struct iovec *c = small;
    if (cnt > TETHER_IOV_SMALL) {
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

/* Free a copy from tether__iov_copy; keeps errno. */
static inline void tether__iov_release(struct iovec *c, struct iovec *small)
{
    int saved = errno;
    if (c != small)
        free(c);
    errno = saved;
}

#endif /* TETHER__DROPIN_H */
