/*
 * Contract matrix: sockets (tether_recv, _recvfrom, _recvmsg, _send,
 * _sendto, _sendmsg, _accept, _accept4, _connect).
 *
 * Each row compares tether with the raw call side by side (CT_SIDE): no
 * current token, and a live token with a bounded deadline, so a call that
 * waits where the raw call fails ends as ETIMEDOUT instead of hanging. Then
 * the non-blocking forms under an already-canceled and an already-expired
 * token. Rows are listed in docs/contract-matrix.md.
 */
#define _GNU_SOURCE
#include "contract.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>

static const ct_state states[] = { CT_NONE, CT_BOUNDED };
static const ct_state dead[] = { CT_CANCELED, CT_EXPIRED };

static int closed_fd(void)
{
    /* High, so that a descriptor tether opens meanwhile (a token's eventfd)
     * does not take the number. */
    int fd = fcntl(0, F_DUPFD_CLOEXEC, 900);
    ck_assert_int_ge(fd, 0);
    close(fd);
    return fd;
}

/* A TCP listener on 127.0.0.1, port chosen by the kernel. */
static int listener(struct sockaddr_in *addr, int flags)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
    ck_assert_int_ge(l, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    ck_assert_int_eq(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(l, 16), 0);
    socklen_t len = sizeof *addr;
    ck_assert_int_eq(getsockname(l, (struct sockaddr *)addr, &len), 0);
    return l;
}

static int connect_to(const struct sockaddr_in *a)
{
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(c, 0);
    ck_assert_int_eq(connect(c, (const struct sockaddr *)a, sizeof *a), 0);
    return c;
}

static void closepair(int p[2])
{
    close(p[0]);
    close(p[1]);
}

/* Item 6 and the accept rows. */
static void accept_rows(ct_rows *r, int four)
{
    const char *fn = four ? "tether_accept4" : "tether_accept";
#define ACC(fd) (four ? accept4((fd), NULL, NULL, SOCK_CLOEXEC) : accept((fd), NULL, NULL))
#define TACC(fd) \
    (four ? tether_accept4((fd), NULL, NULL, SOCK_CLOEXEC) : tether_accept((fd), NULL, NULL))
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    int udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int unl = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    int l = listener(&a, 0);
    int c = connect_to(&a);
    int s = accept(l, NULL, NULL);
    ck_assert_int_ge(s, 0);
    int cfd = closed_fd();
    for (size_t i = 0; i < 2; i++) {
        ct_state st = states[i];
        const char *sn = ct_state_name(st);
        CT_SIDE(r, st, ACC(-1), TACC(-1), "%s/fd -1/%s", fn, sn);
        CT_SIDE(r, st, ACC(cfd), TACC(cfd), "%s/closed fd/%s", fn, sn);
        CT_SIDE(r, st, ACC(p[0]), TACC(p[0]), "%s/pipe (ENOTSOCK)/%s", fn, sn);
        CT_SIDE(r, st, ACC(udp), TACC(udp), "%s/UDP socket (EOPNOTSUPP)/%s", fn, sn);
        CT_SIDE(r, st, ACC(s), TACC(s), "%s/connected stream (EINVAL)/%s", fn, sn);
        CT_SIDE(r, st, ACC(unl), TACC(unl), "%s/unlistened stream (EINVAL)/%s", fn, sn);
    }
    /* A listener with SO_RCVTIMEO: EAGAIN after it (item 7's accept side). */
    struct timeval tv = { 0, 50000 };
    ck_assert_int_eq(setsockopt(l, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    for (size_t i = 0; i < 2; i++)
        CT_SIDE(r, states[i], ACC(l), TACC(l), "%s/SO_RCVTIMEO 50ms/%s", fn,
                ct_state_name(states[i]));
    if (four) {
        int bad = 0x40000000;
        for (size_t i = 0; i < 2; i++)
            CT_SIDE(r, states[i], accept4(l, NULL, NULL, bad), tether_accept4(l, NULL, NULL, bad),
                    "%s/bad flags/%s", fn, ct_state_name(states[i]));
    }
    /* O_NONBLOCK listener, nothing pending: EAGAIN. */
    struct sockaddr_in a2;
    int nl = listener(&a2, SOCK_NONBLOCK);
    for (size_t i = 0; i < 2; i++)
        CT_SIDE(r, states[i], ACC(nl), TACC(nl), "%s/O_NONBLOCK empty/%s", fn,
                ct_state_name(states[i]));
    /* Already canceled / expired with a connection pending on an
     * O_NONBLOCK listener: fails at once, the connection stays queued. */
    int c2 = connect_to(&a2);
    for (size_t i = 0; i < 2; i++) {
        tether_token *t = ct_enter(dead[i], 0);
        errno = 0;
        int fd = TACC(nl);
        char name[96];
        snprintf(name, sizeof name, "%s/O_NONBLOCK pending/%s", fn, ct_state_name(dead[i]));
        CT_ERR(r, name, fd, ct_expected(dead[i]));
        if (fd >= 0)
            close(fd);
        ct_leave(t);
    }
    int got = TACC(nl);
    ct_row(r, got >= 0,
           "%s/pending connection after the refused calls: expected still queued, got %d", fn, got);
    if (got >= 0)
        close(got);
    close(c2);
    close(nl);
    close(c);
    close(s);
    close(l);
    close(udp);
    close(unl);
    closepair(p);
#undef ACC
#undef TACC
}

START_TEST(contract_tether_accept)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    accept_rows(&r, 0);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_tether_accept4)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    accept_rows(&r, 1);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

/* 0 recv, 1 recvfrom, 2 recvmsg on a buffer. */
static ssize_t raw_rx(int kind, int fd, void *b, size_t n, int fl)
{
    struct iovec iov = { b, n };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
    switch (kind) {
    case 0: return recv(fd, b, n, fl);
    case 1: return recvfrom(fd, b, n, fl, NULL, NULL);
    default: return recvmsg(fd, &m, fl);
    }
}
static ssize_t t_rx(int kind, int fd, void *b, size_t n, int fl)
{
    struct iovec iov = { b, n };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
    switch (kind) {
    case 0: return tether_recv(fd, b, n, fl);
    case 1: return tether_recvfrom(fd, b, n, fl, NULL, NULL);
    default: return tether_recvmsg(fd, &m, fl);
    }
}

static void recv_rows(ct_rows *r, int kind)
{
    static const char *fns[] = { "tether_recv", "tether_recvfrom", "tether_recvmsg" };
    const char *fn = fns[kind];
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int unc = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int cfd = closed_fd();
    void *bad = ct_unmapped();
    char b[8];
    for (size_t i = 0; i < 2; i++) {
        ct_state st = states[i];
        const char *sn = ct_state_name(st);
        CT_SIDE(r, st, raw_rx(kind, -1, b, 4, 0), t_rx(kind, -1, b, 4, 0), "%s/fd -1/%s", fn, sn);
        CT_SIDE(r, st, raw_rx(kind, cfd, b, 4, 0), t_rx(kind, cfd, b, 4, 0), "%s/closed fd/%s", fn,
                sn);
        CT_SIDE(r, st, raw_rx(kind, p[0], b, 4, 0), t_rx(kind, p[0], b, 4, 0),
                "%s/pipe (ENOTSOCK)/%s", fn, sn);
        CT_SIDE(r, st, raw_rx(kind, unc, b, 4, 0), t_rx(kind, unc, b, 4, 0),
                "%s/unconnected stream/%s", fn, sn);
        CT_SIDE(r, st, raw_rx(kind, sv[0], b, 4, MSG_DONTWAIT),
                t_rx(kind, sv[0], b, 4, MSG_DONTWAIT), "%s/MSG_DONTWAIT empty/%s", fn, sn);
        ck_assert_int_eq(write(sv[1], "abcd", 4), 4);
        CT_SIDE(r, st, raw_rx(kind, sv[0], NULL, 4, 0), t_rx(kind, sv[0], NULL, 4, 0),
                "%s/NULL buf/%s", fn, sn);
        CT_SIDE(r, st, raw_rx(kind, sv[0], bad, 4, 0), t_rx(kind, sv[0], bad, 4, 0),
                "%s/unmapped buf/%s", fn, sn);
        char d[8];
        while (recv(sv[0], d, sizeof d, MSG_DONTWAIT) > 0) {
        }
    }
    /* SO_RCVTIMEO: EAGAIN (documented as honoured). */
    struct timeval tv = { 0, 50000 };
    ck_assert_int_eq(setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    for (size_t i = 0; i < 2; i++)
        CT_SIDE(r, states[i], raw_rx(kind, sv[0], b, 4, 0), t_rx(kind, sv[0], b, 4, 0),
                "%s/SO_RCVTIMEO 50ms/%s", fn, ct_state_name(states[i]));
    /* Dead tokens: MSG_DONTWAIT and O_NONBLOCK with data ready still fail. */
    ck_assert_int_eq(write(sv[1], "abcd", 4), 4);
    for (size_t i = 0; i < 2; i++) {
        tether_token *t = ct_enter(dead[i], 0);
        char name[96];
        errno = 0;
        ssize_t n = t_rx(kind, sv[0], b, 1, MSG_DONTWAIT);
        snprintf(name, sizeof name, "%s/MSG_DONTWAIT data ready/%s", fn, ct_state_name(dead[i]));
        CT_ERR(r, name, n, ct_expected(dead[i]));
        ct_leave(t);
    }
    /* Peer closed: 0 as the raw call. */
    char d[8];
    while (recv(sv[0], d, sizeof d, MSG_DONTWAIT) > 0) {
    }
    close(sv[1]);
    for (size_t i = 0; i < 2; i++)
        CT_SIDE(r, states[i], raw_rx(kind, sv[0], b, 4, 0), t_rx(kind, sv[0], b, 4, 0),
                "%s/peer closed/%s", fn, ct_state_name(states[i]));
    close(sv[0]);
    close(unc);
    closepair(p);
    munmap(bad, 4096);
}

START_TEST(contract_tether_recv)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    recv_rows(&r, 0);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_tether_recvfrom)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    recv_rows(&r, 1);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

static long long recvmsg_null(void *ctx)
{
    return tether_recvmsg(*(int *)ctx, NULL, 0);
}
static long long sendmsg_null(void *ctx)
{
    return tether_sendmsg(*(int *)ctx, NULL, MSG_NOSIGNAL);
}

/* The msghdr pointer itself: NULL (EFAULT from the raw call), in a child
 * so a crash fails this row alone. */
static void msg_null_row(ct_rows *r, int send)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    ck_assert_int_eq(write(sv[1], "abcd", 4), 4);
    for (size_t i = 0; i < 2; i++) {
        errno = 0;
        long long rr = send ? sendmsg(sv[0], NULL, MSG_NOSIGNAL) : recvmsg(sv[0], NULL, 0);
        int re = errno;
        tether_token *t = ct_enter(states[i], 250);
        int te, sig;
        long long tr = ct_in_child(send ? sendmsg_null : recvmsg_null, &sv[0], &te, &sig);
        ct_leave(t);
        char name[96];
        snprintf(name, sizeof name, "%s/NULL msg/%s", send ? "tether_sendmsg" : "tether_recvmsg",
                 ct_state_name(states[i]));
        if (sig)
            ct_row(r, 0,
                   "%s: raw gave %lld/%s, tether died (signal %d; -1: no result, e.g. a sanitizer "
                   "report)",
                   name, rr, strerrorname_np(re), sig);
        else
            CT_SAME(r, name, tr, te, rr, re);
    }
    closepair(sv);
}

START_TEST(contract_tether_recvmsg)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    recv_rows(&r, 2);
    msg_null_row(&r, 0);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

static ssize_t raw_tx(int kind, int fd, const void *b, size_t n, int fl)
{
    struct iovec iov = { th_unconst(b), n };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
    switch (kind) {
    case 0: return send(fd, b, n, fl);
    case 1: return sendto(fd, b, n, fl, NULL, 0);
    default: return sendmsg(fd, &m, fl);
    }
}
static ssize_t t_tx(int kind, int fd, const void *b, size_t n, int fl)
{
    struct iovec iov = { th_unconst(b), n };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
    switch (kind) {
    case 0: return tether_send(fd, b, n, fl);
    case 1: return tether_sendto(fd, b, n, fl, NULL, 0);
    default: return tether_sendmsg(fd, &m, fl);
    }
}

static void fill_sock(int fd)
{
    char b[4096] = { 0 };
    while (send(fd, b, sizeof b, MSG_DONTWAIT) > 0) {
    }
}

static void send_rows(ct_rows *r, int kind)
{
    static const char *fns[] = { "tether_send", "tether_sendto", "tether_sendmsg" };
    const char *fn = fns[kind];
    const int NS = MSG_NOSIGNAL;
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int unc = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int cfd = closed_fd();
    void *bad = ct_unmapped();
    for (size_t i = 0; i < 2; i++) {
        ct_state st = states[i];
        const char *sn = ct_state_name(st);
        CT_SIDE(r, st, raw_tx(kind, -1, "ab", 2, NS), t_tx(kind, -1, "ab", 2, NS), "%s/fd -1/%s",
                fn, sn);
        CT_SIDE(r, st, raw_tx(kind, cfd, "ab", 2, NS), t_tx(kind, cfd, "ab", 2, NS),
                "%s/closed fd/%s", fn, sn);
        CT_SIDE(r, st, raw_tx(kind, p[1], "ab", 2, NS), t_tx(kind, p[1], "ab", 2, NS),
                "%s/pipe (ENOTSOCK)/%s", fn, sn);
        CT_SIDE(r, st, raw_tx(kind, unc, "ab", 2, NS), t_tx(kind, unc, "ab", 2, NS),
                "%s/unconnected stream/%s", fn, sn);
        CT_SIDE(r, st, raw_tx(kind, udp, "ab", 2, NS), t_tx(kind, udp, "ab", 2, NS),
                "%s/unconnected UDP without address/%s", fn, sn);
        CT_SIDE(r, st, raw_tx(kind, sv[0], NULL, 2, NS), t_tx(kind, sv[0], NULL, 2, NS),
                "%s/NULL buf/%s", fn, sn);
        CT_SIDE(r, st, raw_tx(kind, sv[0], bad, 2, NS), t_tx(kind, sv[0], bad, 2, NS),
                "%s/unmapped buf/%s", fn, sn);
    }
    fill_sock(sv[0]);
    for (size_t i = 0; i < 2; i++)
        CT_SIDE(r, states[i], raw_tx(kind, sv[0], "ab", 2, NS | MSG_DONTWAIT),
                t_tx(kind, sv[0], "ab", 2, NS | MSG_DONTWAIT), "%s/MSG_DONTWAIT full/%s", fn,
                ct_state_name(states[i]));
    struct timeval tv = { 0, 50000 };
    ck_assert_int_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), 0);
    for (size_t i = 0; i < 2; i++)
        CT_SIDE(r, states[i], raw_tx(kind, sv[0], "ab", 2, NS), t_tx(kind, sv[0], "ab", 2, NS),
                "%s/SO_SNDTIMEO 50ms full/%s", fn, ct_state_name(states[i]));
    /* Dead tokens: MSG_DONTWAIT with room still fails. */
    int sv2[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv2), 0);
    for (size_t i = 0; i < 2; i++) {
        tether_token *t = ct_enter(dead[i], 0);
        char name[96];
        errno = 0;
        ssize_t n = t_tx(kind, sv2[0], "ab", 2, NS | MSG_DONTWAIT);
        snprintf(name, sizeof name, "%s/MSG_DONTWAIT with room/%s", fn, ct_state_name(dead[i]));
        CT_ERR(r, name, n, ct_expected(dead[i]));
        ct_leave(t);
    }
    /* Peer closed: EPIPE (MSG_NOSIGNAL) as the raw call. */
    close(sv2[1]);
    for (size_t i = 0; i < 2; i++)
        CT_SIDE(r, states[i], raw_tx(kind, sv2[0], "ab", 2, NS), t_tx(kind, sv2[0], "ab", 2, NS),
                "%s/peer closed (EPIPE)/%s", fn, ct_state_name(states[i]));
    close(sv2[0]);
    closepair(sv);
    close(unc);
    close(udp);
    closepair(p);
    munmap(bad, 4096);
}

START_TEST(contract_tether_send)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    send_rows(&r, 0);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_tether_sendto)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    send_rows(&r, 1);
    /* An unmapped destination address: EFAULT as sendto(2). */
    int udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    void *bad = ct_unmapped();
    struct sockaddr_in a;
    int l = listener(&a, 0);
    for (size_t i = 0; i < 2; i++) {
        CT_SIDE(&r, states[i], sendto(udp, "ab", 2, 0, bad, sizeof a),
                tether_sendto(udp, "ab", 2, 0, bad, sizeof a), "tether_sendto/unmapped dest/%s",
                ct_state_name(states[i]));
        CT_SIDE(&r, states[i], sendto(udp, "ab", 2, 0, (struct sockaddr *)&a, 1),
                tether_sendto(udp, "ab", 2, 0, (struct sockaddr *)&a, 1),
                "tether_sendto/destlen 1/%s", ct_state_name(states[i]));
    }
    close(l);
    close(udp);
    munmap(bad, 4096);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_tether_sendmsg)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    signal(SIGPIPE, SIG_IGN);
    send_rows(&r, 2);
    msg_null_row(&r, 1);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_tether_connect)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    struct sockaddr_in a;
    int l = listener(&a, 0);
    struct sockaddr_in refused = a;
    {
        /* A port with nothing listening: bind one and close it. */
        struct sockaddr_in b;
        int l2 = listener(&b, 0);
        close(l2);
        refused = b;
    }
    struct sockaddr_un nx = { .sun_family = AF_UNIX, .sun_path = "/nonexistent/tether-contract" };
    void *bad = ct_unmapped();
    int cfd = closed_fd();
    const struct sockaddr *A = (const struct sockaddr *)&a;
    for (size_t i = 0; i < 2; i++) {
        ct_state st = states[i];
        const char *sn = ct_state_name(st);
        CT_SIDE(&r, st, connect(-1, A, sizeof a), tether_connect(-1, A, sizeof a),
                "tether_connect/fd -1/%s", sn);
        CT_SIDE(&r, st, connect(cfd, A, sizeof a), tether_connect(cfd, A, sizeof a),
                "tether_connect/closed fd/%s", sn);
        CT_SIDE(&r, st, connect(p[0], A, sizeof a), tether_connect(p[0], A, sizeof a),
                "tether_connect/pipe (ENOTSOCK)/%s", sn);
        int s1 = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0),
            s2 = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CT_SIDE(&r, st, connect(s1, NULL, sizeof a), tether_connect(s2, NULL, sizeof a),
                "tether_connect/NULL addr/%s", sn);
        CT_SIDE(&r, st, connect(s1, bad, sizeof a), tether_connect(s2, bad, sizeof a),
                "tether_connect/unmapped addr/%s", sn);
        CT_SIDE(&r, st, connect(s1, A, 1), tether_connect(s2, A, 1), "tether_connect/addrlen 1/%s",
                sn);
        close(s1);
        close(s2);
        s1 = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        s2 = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CT_SIDE(&r, st, connect(s1, (struct sockaddr *)&refused, sizeof a),
                tether_connect(s2, (struct sockaddr *)&refused, sizeof a),
                "tether_connect/refused/%s", sn);
        close(s1);
        close(s2);
        s1 = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        s2 = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CT_SIDE(&r, st, connect(s1, (struct sockaddr *)&nx, sizeof nx),
                tether_connect(s2, (struct sockaddr *)&nx, sizeof nx),
                "tether_connect/unix path missing/%s", sn);
        close(s1);
        close(s2);
        s1 = connect_to(&a);
        s2 = connect_to(&a);
        CT_SIDE(&r, st, connect(s1, A, sizeof a), tether_connect(s2, A, sizeof a),
                "tether_connect/already connected (EISCONN)/%s", sn);
        close(s1);
        close(s2);
        int c, fl = fcntl(l, F_GETFL);
        fcntl(l, F_SETFL, fl | O_NONBLOCK);
        while ((c = accept(l, NULL, NULL)) >= 0)
            close(c);
        fcntl(l, F_SETFL, fl);
    }
    for (size_t i = 0; i < 2; i++) {
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        tether_token *t = ct_enter(dead[i], 0);
        errno = 0;
        int rc = tether_connect(s, A, sizeof a);
        char name[96];
        snprintf(name, sizeof name, "tether_connect/listener ready/%s", ct_state_name(dead[i]));
        CT_ERR(&r, name, rc, ct_expected(dead[i]));
        ct_leave(t);
        int fl = fcntl(s, F_GETFL);
        ct_row(&r, !(fl & O_NONBLOCK),
               "tether_connect/socket flags after %s: expected restored (blocking)",
               ct_state_name(dead[i]));
        close(s);
    }
    close(l);
    closepair(p);
    munmap(bad, 4096);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

static Suite *contract_net_suite(void)
{
    Suite *s = suite_create("contract_net");
    TCase *tc = tcase_create("contract_net");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, contract_tether_accept);
    tcase_add_test(tc, contract_tether_accept4);
    tcase_add_test(tc, contract_tether_recv);
    tcase_add_test(tc, contract_tether_recvfrom);
    tcase_add_test(tc, contract_tether_recvmsg);
    tcase_add_test(tc, contract_tether_send);
    tcase_add_test(tc, contract_tether_sendto);
    tcase_add_test(tc, contract_tether_sendmsg);
    tcase_add_test(tc, contract_tether_connect);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    return th_run_suite(contract_net_suite());
}
