/*
 * Descriptor spans: shutdown(2) of a socket if the current token is
 * canceled while the span is open.
 *
 * A span is a plain cancellation callback (token.c): shutdown never blocks,
 * so it runs in the canceler. Ending the span unregisters the callback,
 * which waits for one that is running, so after tether_fd_span_end the
 * descriptor number can be closed and reused without ever being shut down.
 * Whether it fired is whether the callback ran.
 */
#define _GNU_SOURCE
#include "current.h"
#include "sys.h"

#include <sys/socket.h>

struct tether_fd_span {
    int fd, how;
    tether_callback *cb; /* NULL: no current token, the span never fires */
};

static void fire(void *arg)
{
    const tether_fd_span *s = arg;
    /* Runs in the canceler (tether_token_cancel, the timer thread, a drop-in
     * that found the deadline passed): its errno is not ours to change.
     * shutdown fails on a socket that is not connected (ENOTCONN) or one the
     * caller closed; the span has done what it could either way. */
    int saved = errno;
    (void)tether__sys_shutdown(s->fd, s->how);
    errno = saved;
}

int tether_fd_span_begin(int fd, int how, tether_fd_span **out)
{
    if (!out || (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR))
        return EINVAL;
    int type;
    socklen_t len = sizeof type;
    if (fd < 0)
        return EBADF;
    int saved = errno; /* an error number is returned: errno stays as it was */
    if (tether__sys_getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) {
        int rc = errno;
        errno = saved;
        return rc;
    }
    tether_fd_span *s = tether__malloc(sizeof *s);
    if (!s)
        return ENOMEM;
    *s = (tether_fd_span){ .fd = fd, .how = how, .cb = NULL };
    tether_token *t = tether__current_or_root();
    int rc = t ? tether_token_on_cancel(t, fire, s, &s->cb) : 0;
    if (rc) {
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int tether_fd_span_end(tether_fd_span *s, bool *fired)
{
    if (!s)
        return EINVAL;
    bool ran = false;
    if (s->cb) {
        int rc = tether_token_off_cancel(s->cb, &ran);
        TETHER_ASSERT(rc == 0);
    }
    free(s);
    if (fired)
        *fired = ran;
    return 0;
}
