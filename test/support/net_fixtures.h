/*
 * Fixtures shared by the socket suites (test/test_net_*.c).
 *
 * Cancellable socket calls: recv/send families, accept/accept4, connect.
 *
 * Every call is checked against the raw call it replaces (return value,
 * errno, partial transfers), then blocked and: canceled before the call,
 * canceled while blocked, stopped by a deadline, interrupted by a signal
 * handler without SA_RESTART (-1/EINTR, like the raw call). Blocking
 * connects go to a loopback listener whose accept queue is full, so the
 * SYN is dropped and the connect hangs: no traffic leaves the machine.
 */
#ifndef TETHER_TEST_NET_FIXTURES_H
#define TETHER_TEST_NET_FIXTURES_H

#include "legacy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>

/* Fill sv[0]'s send path until a blocking send would block. */
static inline void fill(int fd)
{
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    static char junk[4096];
    while (send(fd, junk, sizeof junk, MSG_DONTWAIT) > 0) {
    }
    ck_assert_int_eq(errno, EAGAIN);
    while (send(fd, junk, 1, MSG_DONTWAIT) > 0) {
    }
}

static inline int listener(struct sockaddr_in *addr, int backlog)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(l, 0);
    *addr =
        (struct sockaddr_in){ .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    ck_assert_int_eq(bind(l, (struct sockaddr *)addr, sizeof *addr), 0);
    ck_assert_int_eq(listen(l, backlog), 0);
    socklen_t len = sizeof *addr;
    ck_assert_int_eq(getsockname(l, (struct sockaddr *)addr, &len), 0);
    return l;
}

/* A loopback address whose SYNs are dropped: a listener with backlog 0 and
 * a full accept queue. The filling connections go in fill[]. */
struct blackhole {
    int lfd;
    struct sockaddr_in addr;
    int fill[16];
    int nfill;
};

static inline void blackhole_open(struct blackhole *bh)
{
    bh->lfd = listener(&bh->addr, 0);
    bh->nfill = 0;
    for (;;) {
        ck_assert_int_lt(bh->nfill, 16);
        int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(s, 0);
        bh->fill[bh->nfill++] = s;
        int r = connect(s, (struct sockaddr *)&bh->addr, sizeof bh->addr);
        if (r == 0)
            continue;
        ck_assert_int_eq(errno, EINPROGRESS);
        struct pollfd p = { .fd = s, .events = POLLOUT };
        if (poll(&p, 1, 200) == 0)
            return; /* this SYN was dropped: the queue is full */
    }
}

static inline void blackhole_close(struct blackhole *bh)
{
    for (int i = 0; i < bh->nfill; i++)
        close(bh->fill[i]);
    close(bh->lfd);
}

static inline int tcp_socket(void)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(s, 0);
    return s;
}

#endif
