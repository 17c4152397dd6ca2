/*
 * Cancellable socket transfers (recv/send families): blocked and canceled,
 * timed out or interrupted; same results as the raw calls; partial transfers
 * returned.
 */
#define _GNU_SOURCE
#include "net_fixtures.h"

/* ------------------------------------------------------------ fixtures */

static void pair(int sv[2], int type)
{
    ck_assert_int_eq(socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv), 0);
}

static void close_pair(int sv[2])
{
    close(sv[0]);
    close(sv[1]);
}

/* ------------------------------------------------------------ the blockers */

/* One fixture per test process (CK_FORK): whatever a blocker needs. */
static struct {
    int sv[2];
    struct blackhole bh;
    struct sockaddr_in laddr;
    int lfd, cfd;
    char big[65536];
    char small[16];
    int flags_before;
} F;

typedef lu_blocker blocker;

static void setup_read(void)
{
    pair(F.sv, SOCK_STREAM);
}

static void setup_write(void)
{
    pair(F.sv, SOCK_STREAM);
    fill(F.sv[0]);
}

static void teardown_pair(void)
{
    close_pair(F.sv);
}

static void setup_accept(void)
{
    F.lfd = listener(&F.laddr, 16);
}

static void teardown_accept(void)
{
    close(F.lfd);
}

static void setup_connect(void)
{
    blackhole_open(&F.bh);
    F.cfd = tcp_socket();
    F.flags_before = fcntl(F.cfd, F_GETFL);
}

static void teardown_connect(void)
{
    ck_assert_int_eq(fcntl(F.cfd, F_GETFL), F.flags_before); /* flags as they were */
    close(F.cfd);
    blackhole_close(&F.bh);
}

static struct msghdr one_iov_msg(struct iovec *iov, void *buf, size_t len)
{
    iov->iov_base = buf;
    iov->iov_len = len;
    return (struct msghdr){ .msg_iov = iov, .msg_iovlen = 1 };
}

static ssize_t t_recv(void *a)
{
    (void)a;
    return tether_recv(F.sv[0], F.small, sizeof F.small, 0);
}

static ssize_t r_recv(void *a)
{
    (void)a;
    return recv(F.sv[0], F.small, sizeof F.small, 0);
}

static ssize_t t_recvfrom(void *a)
{
    (void)a;
    return tether_recvfrom(F.sv[0], F.small, sizeof F.small, 0, NULL, NULL);
}

static ssize_t r_recvfrom(void *a)
{
    (void)a;
    return recvfrom(F.sv[0], F.small, sizeof F.small, 0, NULL, NULL);
}

static ssize_t t_recvmsg(void *a)
{
    (void)a;
    struct iovec iov;
    struct msghdr m = one_iov_msg(&iov, F.small, sizeof F.small);
    return tether_recvmsg(F.sv[0], &m, 0);
}

static ssize_t r_recvmsg(void *a)
{
    (void)a;
    struct iovec iov;
    struct msghdr m = one_iov_msg(&iov, F.small, sizeof F.small);
    return recvmsg(F.sv[0], &m, 0);
}

static ssize_t t_send(void *a)
{
    (void)a;
    return tether_send(F.sv[0], F.big, sizeof F.big, MSG_NOSIGNAL);
}

static ssize_t r_send(void *a)
{
    (void)a;
    return send(F.sv[0], F.big, sizeof F.big, MSG_NOSIGNAL);
}

static ssize_t t_sendto(void *a)
{
    (void)a;
    return tether_sendto(F.sv[0], F.big, sizeof F.big, MSG_NOSIGNAL, NULL, 0);
}

static ssize_t r_sendto(void *a)
{
    (void)a;
    return sendto(F.sv[0], F.big, sizeof F.big, MSG_NOSIGNAL, NULL, 0);
}

static ssize_t t_sendmsg(void *a)
{
    (void)a;
    struct iovec iov;
    struct msghdr m = one_iov_msg(&iov, F.big, sizeof F.big);
    return tether_sendmsg(F.sv[0], &m, MSG_NOSIGNAL);
}

static ssize_t r_sendmsg(void *a)
{
    (void)a;
    struct iovec iov;
    struct msghdr m = one_iov_msg(&iov, F.big, sizeof F.big);
    return sendmsg(F.sv[0], &m, MSG_NOSIGNAL);
}

static ssize_t t_accept(void *a)
{
    (void)a;
    return tether_accept(F.lfd, NULL, NULL);
}

static ssize_t r_accept(void *a)
{
    (void)a;
    return accept(F.lfd, NULL, NULL);
}

static ssize_t t_accept4(void *a)
{
    (void)a;
    return tether_accept4(F.lfd, NULL, NULL, SOCK_CLOEXEC);
}

static ssize_t r_accept4(void *a)
{
    (void)a;
    return accept4(F.lfd, NULL, NULL, SOCK_CLOEXEC);
}

static ssize_t t_connect(void *a)
{
    (void)a;
    return tether_connect(F.cfd, (struct sockaddr *)&F.bh.addr, sizeof F.bh.addr);
}

static ssize_t r_connect(void *a)
{
    (void)a;
    return connect(F.cfd, (struct sockaddr *)&F.bh.addr, sizeof F.bh.addr);
}

static const blocker blockers[] = {
    { "recv", setup_read, t_recv, r_recv, teardown_pair },
    { "recvfrom", setup_read, t_recvfrom, r_recvfrom, teardown_pair },
    { "recvmsg", setup_read, t_recvmsg, r_recvmsg, teardown_pair },
    { "send", setup_write, t_send, r_send, teardown_pair },
    { "sendto", setup_write, t_sendto, r_sendto, teardown_pair },
    { "sendmsg", setup_write, t_sendmsg, r_sendmsg, teardown_pair },
    { "accept", setup_accept, t_accept, r_accept, teardown_accept },
    { "accept4", setup_accept, t_accept4, r_accept4, teardown_accept },
    { "connect", setup_connect, t_connect, r_connect, teardown_connect },
};

#define NBLOCKERS ((int)(sizeof blockers / sizeof blockers[0]))

START_TEST(blocker_cancel_before)
{
    lu_check_cancel_before(&blockers[_i]);
}
END_TEST

START_TEST(blocker_cancel_blocked)
{
    lu_check_cancel_blocked(&blockers[_i]);
}
END_TEST

START_TEST(blocker_deadline)
{
    lu_check_deadline(&blockers[_i], 60);
}
END_TEST

/* A handler without SA_RESTART: the raw call fails with EINTR, and so does
 * tether's (it waits in poll, which the kernel never restarts). */
START_TEST(blocker_eintr)
{
    const blocker *b = &blockers[_i];
    th_baseline base = th_baseline_take();
    lu_eintr_handler();
    tether_token *tok = lu_token(TETHER_NEVER);
    for (int tethered = 0; tethered < 2; tethered++) {
        b->setup();
        lu_thread th;
        lu_start(&th, tethered ? tok : NULL, tethered ? b->call : b->raw, NULL);
        lu_interrupt(&th);
        ck_assert_msg(th.ret == -1 && th.err == EINTR, "%s (%s): %zd %s", b->name,
                      tethered ? "tether" : "raw", th.ret, strerror(th.err));
        b->teardown();
    }
    ck_assert_int_eq(tether_token_check(tok), 0);
    lu_free(tok);
    th_baseline_check(base);
}
END_TEST

/* ------------------------------------------------------------ same as raw */

/* Runs fn twice on identical fixtures, raw and under a live token, and
 * compares return values and errno. */
typedef ssize_t (*pair_fn)(int sv[2], bool tethered);

static void same_as_raw(pair_fn fn, int type, const char *what)
{
    tether_token *tok = lu_token(TETHER_NEVER);
    ssize_t ret[2];
    int err[2];
    for (int tethered = 0; tethered < 2; tethered++) {
        int sv[2];
        pair(sv, type);
        if (tethered)
            ck_assert_int_eq(tether_token_enter(tok), 0);
        errno = 0;
        ret[tethered] = fn(sv, tethered);
        err[tethered] = errno;
        if (tethered)
            ck_assert_int_eq(tether_token_leave(tok), 0);
        close_pair(sv);
    }
    ck_assert_msg(ret[0] == ret[1], "%s: raw %zd, tether %zd", what, ret[0], ret[1]);
    if (ret[0] < 0)
        ck_assert_msg(err[0] == err[1], "%s: raw %s, tether %s", what, strerror(err[0]),
                      strerror(err[1]));
    lu_free(tok);
}

static ssize_t do_recv_data(int sv[2], bool t)
{
    ck_assert_int_eq(write(sv[1], "hello", 5), 5);
    char buf[16] = { 0 };
    ssize_t n = t ? tether_recv(sv[0], buf, sizeof buf, 0) : recv(sv[0], buf, sizeof buf, 0);
    ck_assert_str_eq(buf, "hello");
    return n;
}

static ssize_t do_recv_peek(int sv[2], bool t)
{
    ck_assert_int_eq(write(sv[1], "abc", 3), 3);
    char buf[8] = { 0 };
    ssize_t n = t ? tether_recv(sv[0], buf, 2, MSG_PEEK) : recv(sv[0], buf, 2, MSG_PEEK);
    ck_assert_int_eq(recv(sv[0], buf, sizeof buf, 0), 3);
    return n;
}

static ssize_t do_recv_eof(int sv[2], bool t)
{
    shutdown(sv[1], SHUT_WR);
    char buf[8];
    return t ? tether_recv(sv[0], buf, sizeof buf, 0) : recv(sv[0], buf, sizeof buf, 0);
}

static ssize_t do_recv_dontwait(int sv[2], bool t)
{
    char buf[8];
    return t ? tether_recv(sv[0], buf, sizeof buf, MSG_DONTWAIT)
             : recv(sv[0], buf, sizeof buf, MSG_DONTWAIT);
}

static ssize_t do_recv_nonblock(int sv[2], bool t)
{
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    char buf[8];
    return t ? tether_recv(sv[0], buf, sizeof buf, 0) : recv(sv[0], buf, sizeof buf, 0);
}

static ssize_t do_recv_badf(int sv[2], bool t)
{
    (void)sv;
    char buf[8];
    return t ? tether_recv(-1, buf, sizeof buf, 0) : recv(-1, buf, sizeof buf, 0);
}

static ssize_t do_recv_notsock(int sv[2], bool t)
{
    (void)sv;
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    char buf[8];
    ssize_t n = t ? tether_recv(p[0], buf, sizeof buf, 0) : recv(p[0], buf, sizeof buf, 0);
    int e = errno;
    close(p[0]);
    close(p[1]);
    errno = e;
    return n;
}

static ssize_t do_recv_timeo(int sv[2], bool t)
{
    struct timeval tv = { .tv_usec = 50000 };
    ck_assert_int_eq(setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    char buf[8];
    tether_time_t t0 = tether_now();
    ssize_t n = t ? tether_recv(sv[0], buf, sizeof buf, 0) : recv(sv[0], buf, sizeof buf, 0);
    int e = errno;
    ck_assert_int_ge(tether_now() - t0, tether_ms(45)); /* the kernel rounds to jiffies */
    errno = e;
    return n;
}

static ssize_t do_recv_waitall_ready(int sv[2], bool t)
{
    ck_assert_int_eq(write(sv[1], "abcdef", 6), 6);
    char buf[8];
    return t ? tether_recv(sv[0], buf, 6, MSG_WAITALL) : recv(sv[0], buf, 6, MSG_WAITALL);
}

static ssize_t do_recv_dgram(int sv[2], bool t)
{
    ck_assert_int_eq(send(sv[1], "0123456789", 10, 0), 10);
    ck_assert_int_eq(send(sv[1], "xy", 2, 0), 2);
    char buf[4];
    /* A datagram larger than the buffer is truncated, the rest dropped. */
    ssize_t n = t ? tether_recv(sv[0], buf, sizeof buf, MSG_WAITALL)
                  : recv(sv[0], buf, sizeof buf, MSG_WAITALL);
    ck_assert_int_eq(memcmp(buf, "0123", 4), 0);
    char next[4];
    ck_assert_int_eq(recv(sv[0], next, sizeof next, 0), 2);
    return n;
}

static ssize_t do_send_data(int sv[2], bool t)
{
    ssize_t n = t ? tether_send(sv[0], "ping", 4, 0) : send(sv[0], "ping", 4, 0);
    char buf[8] = { 0 };
    ck_assert_int_eq(recv(sv[1], buf, sizeof buf, 0), 4);
    ck_assert_str_eq(buf, "ping");
    return n;
}

static ssize_t do_send_empty(int sv[2], bool t)
{
    return t ? tether_send(sv[0], "", 0, 0) : send(sv[0], "", 0, 0);
}

static ssize_t do_send_epipe(int sv[2], bool t)
{
    close(sv[1]);
    sv[1] = socket(AF_UNIX, SOCK_STREAM, 0); /* something for close_pair */
    return t ? tether_send(sv[0], "x", 1, MSG_NOSIGNAL) : send(sv[0], "x", 1, MSG_NOSIGNAL);
}

static ssize_t do_send_full_nonblock(int sv[2], bool t)
{
    fill(sv[0]);
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    return t ? tether_send(sv[0], "x", 1, 0) : send(sv[0], "x", 1, 0);
}

static ssize_t do_send_full_dontwait(int sv[2], bool t)
{
    fill(sv[0]);
    return t ? tether_send(sv[0], "x", 1, MSG_DONTWAIT) : send(sv[0], "x", 1, MSG_DONTWAIT);
}

static ssize_t do_send_timeo(int sv[2], bool t)
{
    fill(sv[0]);
    struct timeval tv = { .tv_usec = 50000 };
    ck_assert_int_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), 0);
    tether_time_t t0 = tether_now();
    ssize_t n = t ? tether_send(sv[0], "x", 1, 0) : send(sv[0], "x", 1, 0);
    int e = errno;
    ck_assert_int_ge(tether_now() - t0, tether_ms(45));
    errno = e;
    return n;
}

static ssize_t do_dgram_sendrecv(int sv[2], bool t)
{
    ssize_t a =
        t ? tether_sendto(sv[0], "dgram", 5, 0, NULL, 0) : sendto(sv[0], "dgram", 5, 0, NULL, 0);
    ck_assert_int_eq(a, 5);
    char buf[16] = { 0 };
    struct sockaddr_un from;
    socklen_t fl = sizeof from;
    ssize_t n = t ? tether_recvfrom(sv[1], buf, sizeof buf, 0, (struct sockaddr *)&from, &fl)
                  : recvfrom(sv[1], buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
    ck_assert_str_eq(buf, "dgram");
    return n * 1000 + fl;
}

static ssize_t do_msg_rights(int sv[2], bool t)
{
    int passed = dup(sv[0]);
    char payload[3] = "fd";
    struct iovec iov = { .iov_base = payload, .iov_len = 2 };
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    memset(&u, 0, sizeof u);
    struct msghdr m = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf
    };
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &passed, sizeof passed);
    ck_assert_int_eq(t ? tether_sendmsg(sv[1], &m, 0) : sendmsg(sv[1], &m, 0), 2);
    close(passed);

    char rbuf[8] = { 0 };
    struct iovec riov = { .iov_base = rbuf, .iov_len = sizeof rbuf };
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ru;
    struct msghdr rm = {
        .msg_iov = &riov, .msg_iovlen = 1, .msg_control = ru.buf, .msg_controllen = sizeof ru.buf
    };
    ssize_t n =
        t ? tether_recvmsg(sv[0], &rm, MSG_CMSG_CLOEXEC) : recvmsg(sv[0], &rm, MSG_CMSG_CLOEXEC);
    ck_assert_str_eq(rbuf, "fd");
    struct cmsghdr *rc = CMSG_FIRSTHDR(&rm);
    ck_assert_ptr_nonnull(rc);
    ck_assert_int_eq(rc->cmsg_type, SCM_RIGHTS);
    int got;
    memcpy(&got, CMSG_DATA(rc), sizeof got);
    ck_assert_int_ge(got, 0);
    close(got);
    return n * 100 + rm.msg_flags;
}

static const struct {
    const char *name;
    pair_fn fn;
    int type;
} same_cases[] = {
    { "recv data", do_recv_data, SOCK_STREAM },
    { "recv peek", do_recv_peek, SOCK_STREAM },
    { "recv eof", do_recv_eof, SOCK_STREAM },
    { "recv dontwait", do_recv_dontwait, SOCK_STREAM },
    { "recv nonblock", do_recv_nonblock, SOCK_STREAM },
    { "recv badf", do_recv_badf, SOCK_STREAM },
    { "recv notsock", do_recv_notsock, SOCK_STREAM },
    { "recv rcvtimeo", do_recv_timeo, SOCK_STREAM },
    { "recv waitall ready", do_recv_waitall_ready, SOCK_STREAM },
    { "recv dgram truncated", do_recv_dgram, SOCK_DGRAM },
    { "send data", do_send_data, SOCK_STREAM },
    { "send empty", do_send_empty, SOCK_STREAM },
    { "send epipe", do_send_epipe, SOCK_STREAM },
    { "send full nonblock", do_send_full_nonblock, SOCK_STREAM },
    { "send full dontwait", do_send_full_dontwait, SOCK_STREAM },
    { "send sndtimeo", do_send_timeo, SOCK_STREAM },
    { "sendto/recvfrom dgram", do_dgram_sendrecv, SOCK_DGRAM },
    { "sendmsg/recvmsg rights", do_msg_rights, SOCK_STREAM },
};

START_TEST(same_as_raw_calls)
{
    th_baseline base = th_baseline_take();
    same_as_raw(same_cases[_i].fn, same_cases[_i].type, same_cases[_i].name);
    th_baseline_check(base);
}
END_TEST

/* No current token: the raw call, blocking included. */
START_TEST(no_token_passthrough)
{
    th_baseline base = th_baseline_take();
    ck_assert_ptr_null(tether_current());
    int sv[2];
    pair(sv, SOCK_STREAM);
    ck_assert_int_eq(tether_send(sv[1], "ab", 2, 0), 2);
    char buf[4];
    ck_assert_int_eq(tether_recv(sv[0], buf, sizeof buf, 0), 2);
    errno = 0;
    ck_assert_int_eq(tether_recv(sv[0], buf, sizeof buf, MSG_DONTWAIT), -1);
    ck_assert_int_eq(errno, EAGAIN);
    close_pair(sv);
    th_baseline_check(base);
}
END_TEST

/* ------------------------------------------------------------ partial transfers */

static int waitall_fd;

static char waitall_buf[8];

static ssize_t t_recv_waitall(void *a)
{
    (void)a;
    return tether_recv(waitall_fd, waitall_buf, 6, MSG_WAITALL);
}

START_TEST(recv_waitall_blocks_for_all)
{
    th_baseline base = th_baseline_take();
    int sv[2];
    pair(sv, SOCK_STREAM);
    waitall_fd = sv[0];
    tether_token *tok = lu_token(TETHER_NEVER);
    ck_assert_int_eq(write(sv[1], "abc", 3), 3);
    lu_thread th;
    lu_start_blocked(&th, tok, t_recv_waitall, NULL);
    ck_assert_int_eq(write(sv[1], "def", 3), 3);
    lu_join(&th);
    ck_assert_int_eq(th.ret, 6);
    ck_assert_int_eq(memcmp(waitall_buf, "abcdef", 6), 0);
    close_pair(sv);
    lu_free(tok);
    th_baseline_check(base);
}
END_TEST

START_TEST(recv_waitall_cancel_returns_part)
{
    th_baseline base = th_baseline_take();
    int sv[2];
    pair(sv, SOCK_STREAM);
    waitall_fd = sv[0];
    tether_token *tok = lu_token(TETHER_NEVER);
    ck_assert_int_eq(write(sv[1], "abc", 3), 3);
    lu_thread th;
    lu_start_blocked(&th, tok, t_recv_waitall, NULL);
    tether_token_cancel(tok, 0);
    lu_join(&th);
    ck_assert_int_eq(th.ret, 3); /* the bytes that arrived are reported */
    ck_assert_int_eq(memcmp(waitall_buf, "abc", 3), 0);
    /* ... and the next call reports the cancellation. */
    ck_assert_int_eq(tether_token_enter(tok), 0);
    errno = 0;
    ck_assert_int_eq(tether_recv(sv[0], waitall_buf, 1, 0), -1);
    ck_assert_int_eq(errno, ECANCELED);
    ck_assert_int_eq(tether_token_leave(tok), 0);
    close_pair(sv);
    lu_free(tok);
    th_baseline_check(base);
}
END_TEST

/* recvmsg with MSG_WAITALL across several iovecs, data in three pieces. */
static int rm_fd;

static char rm_a[3], rm_b[5];

static ssize_t t_recvmsg_waitall(void *a)
{
    (void)a;
    struct iovec iov[2] = { { rm_a, sizeof rm_a }, { rm_b, sizeof rm_b } };
    struct msghdr m = { .msg_iov = iov, .msg_iovlen = 2 };
    return tether_recvmsg(rm_fd, &m, MSG_WAITALL);
}

START_TEST(recvmsg_waitall_iovecs)
{
    th_baseline base = th_baseline_take();
    int sv[2];
    pair(sv, SOCK_STREAM);
    rm_fd = sv[0];
    tether_token *tok = lu_token(TETHER_NEVER);
    ck_assert_int_eq(write(sv[1], "12", 2), 2);
    lu_thread th;
    lu_start_blocked(&th, tok, t_recvmsg_waitall, NULL);
    ck_assert_int_eq(write(sv[1], "345", 3), 3);
    ck_assert_int_eq(th_wait_blocked(th.tid), 0);
    ck_assert_int_eq(write(sv[1], "678", 3), 3);
    lu_join(&th);
    ck_assert_int_eq(th.ret, 8);
    ck_assert_int_eq(memcmp(rm_a, "123", 3), 0);
    ck_assert_int_eq(memcmp(rm_b, "45678", 5), 0);
    close_pair(sv);
    lu_free(tok);
    th_baseline_check(base);
}
END_TEST

/* A big send to a slow reader, canceled part-way: the count returned is
 * exactly what the reader gets. */
static int bs_fd;

static char *bs_buf;

enum { BIG = 1 << 22 };

static ssize_t t_send_big(void *a)
{
    (void)a;
    return tether_send(bs_fd, bs_buf, BIG, MSG_NOSIGNAL);
}

static ssize_t t_sendmsg_big(void *a)
{
    (void)a;
    struct iovec iov[2] = { { bs_buf, BIG / 2 }, { bs_buf + BIG / 2, BIG / 2 } };
    struct msghdr m = { .msg_iov = iov, .msg_iovlen = 2 };
    ssize_t n = tether_sendmsg(bs_fd, &m, MSG_NOSIGNAL);
    ck_assert_ptr_eq(iov[0].iov_base, bs_buf); /* msg untouched */
    ck_assert_int_eq(iov[1].iov_len, BIG / 2);
    return n;
}

static void send_partial(lu_fn fn)
{
    th_baseline base = th_baseline_take();
    int sv[2];
    pair(sv, SOCK_STREAM);
    bs_fd = sv[0];
    bs_buf = malloc(BIG);
    for (size_t i = 0; i < BIG; i++)
        bs_buf[i] = (char)(i * 7);
    tether_token *tok = lu_token(TETHER_NEVER);
    lu_thread th;
    lu_start_blocked(&th, tok, fn, NULL);
    char *got = malloc(BIG);
    size_t have = 0;
    ssize_t n = recv(sv[1], got, 1000, 0); /* read a little, so some moved */
    ck_assert_int_gt(n, 0);
    have += (size_t)n;
    ck_assert_int_eq(th_wait_blocked(th.tid), 0);
    tether_token_cancel(tok, 0);
    lu_join(&th);
    ck_assert_int_gt(th.ret, 0);
    ck_assert_int_lt(th.ret, BIG);
    shutdown(sv[0], SHUT_WR);
    while ((n = recv(sv[1], got + have, BIG - have, 0)) > 0)
        have += (size_t)n;
    ck_assert_int_eq((ssize_t)have, th.ret);
    ck_assert_int_eq(memcmp(got, bs_buf, have), 0);
    free(got);
    free(bs_buf);
    close_pair(sv);
    lu_free(tok);
    th_baseline_check(base);
}

START_TEST(send_cancel_reports_partial)
{
    send_partial(t_send_big);
}
END_TEST

START_TEST(sendmsg_cancel_reports_partial)
{
    send_partial(t_sendmsg_big);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("net_io");
    TCase *tc;

    tc = tcase_create("blockers");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_loop_test(tc, blocker_cancel_before, 0, NBLOCKERS);
    tcase_add_loop_test(tc, blocker_cancel_blocked, 0, NBLOCKERS);
    tcase_add_loop_test(tc, blocker_deadline, 0, NBLOCKERS);
    tcase_add_loop_test(tc, blocker_eintr, 0, NBLOCKERS);
    suite_add_tcase(s, tc);

    tc = tcase_create("same_as_raw");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_loop_test(tc, same_as_raw_calls, 0, (int)(sizeof same_cases / sizeof same_cases[0]));
    tcase_add_test(tc, no_token_passthrough);
    suite_add_tcase(s, tc);

    tc = tcase_create("partial");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, recv_waitall_blocks_for_all);
    tcase_add_test(tc, recv_waitall_cancel_returns_part);
    tcase_add_test(tc, recvmsg_waitall_iovecs);
    tcase_add_test(tc, send_cancel_reports_partial);
    tcase_add_test(tc, sendmsg_cancel_reports_partial);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
