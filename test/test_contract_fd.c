/*
 * Contract matrix: descriptor I/O (tether_read, _write, _readv, _writev,
 * _pread, _pwrite, _read_all, _write_all). Poll, sleeps and signals are in
 * test_contract_wait.c.
 *
 * Each test is one function; each row one documented error or one
 * difference from the raw call, compared side by side with the raw call in
 * the same test. Rows are listed in docs/contract-matrix.md.
 */
#define _GNU_SOURCE
#include "contract.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>

static const ct_state states[] = { CT_NONE, CT_LIVE };
static const ct_state dead[] = { CT_CANCELED, CT_EXPIRED };

/* A pipe, optionally O_NONBLOCK on both ends. */
static void mkpipe(int p[2], int nonblock)
{
    ck_assert_int_eq(pipe2(p, O_CLOEXEC | (nonblock ? O_NONBLOCK : 0)), 0);
}

static void closepair(int p[2])
{
    close(p[0]);
    close(p[1]);
}

/* A closed descriptor number. */
static int closed_fd(void)
{
    /* High, so that a descriptor tether opens meanwhile (a token's eventfd)
     * does not take the number. */
    int fd = fcntl(0, F_DUPFD_CLOEXEC, 900);
    ck_assert_int_ge(fd, 0);
    close(fd);
    return fd;
}

/* Fill a non-blocking pipe so writes would block. */
static void fill(int wfd)
{
    char b[4096];
    memset(b, 'f', sizeof b);
    while (write(wfd, b, sizeof b) > 0) {
    }
}

typedef ssize_t (*rd_fn)(int fd, void *buf, size_t n);

/* The rows every read-like call shares, for one (tether, raw) pair. */
static void read_rows(ct_rows *r, const char *fn, rd_fn tf, rd_fn rf)
{
    char name[128], buf[8];
    void *bad = ct_unmapped();
    int cfd = closed_fd();
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++) {
        ct_state st = states[i];
        int p[2];
        mkpipe(p, 1);
        ck_assert_int_eq(write(p[1], "abcdabcd", 8), 8);
        struct {
            const char *what;
            int fd;
            void *buf;
        } rows[] = {
            { "fd -1", -1, buf },          { "closed fd", cfd, buf },  { "NULL buf", p[0], NULL },
            { "unmapped buf", p[0], bad }, { "write end", p[1], buf },
        };
        for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) {
            errno = 0;
            ssize_t rr = rf(rows[k].fd, rows[k].buf, 4);
            int re = errno;
            tether_token *t = ct_enter(st, 2000);
            errno = 0;
            ssize_t tr = tf(rows[k].fd, rows[k].buf, 4);
            int te = errno;
            ct_leave(t);
            snprintf(name, sizeof name, "%s/%s/%s", fn, rows[k].what, ct_state_name(st));
            CT_SAME(r, name, tr, te, rr, re);
        }
        /* O_NONBLOCK empty: EAGAIN as the raw call. */
        char drain[64];
        while (read(p[0], drain, sizeof drain) > 0) {
        }
        errno = 0;
        ssize_t rr = rf(p[0], buf, 4);
        int re = errno;
        tether_token *t = ct_enter(st, 2000);
        errno = 0;
        ssize_t tr = tf(p[0], buf, 4);
        int te = errno;
        ct_leave(t);
        snprintf(name, sizeof name, "%s/O_NONBLOCK empty/%s", fn, ct_state_name(st));
        CT_SAME(r, name, tr, te, rr, re);
        /* End of file: as the raw call (0; ESPIPE for pread). */
        close(p[1]);
        errno = 0;
        rr = rf(p[0], buf, 4);
        re = errno;
        t = ct_enter(st, 2000);
        errno = 0;
        tr = tf(p[0], buf, 4);
        te = errno;
        ct_leave(t);
        snprintf(name, sizeof name, "%s/eof/%s", fn, ct_state_name(st));
        CT_SAME(r, name, tr, te, rr, re);
        close(p[0]);
    }
    /* Already canceled / expired: fails at once, O_NONBLOCK or not, data or not. */
    for (size_t i = 0; i < 2; i++) {
        for (int nb = 0; nb < 2; nb++) {
            int p[2];
            mkpipe(p, nb);
            ck_assert_int_eq(write(p[1], "x", 1), 1);
            tether_token *t = ct_enter(dead[i], 0);
            errno = 0;
            ssize_t tr = tf(p[0], buf, 1);
            snprintf(name, sizeof name, "%s/%s/%s", fn, nb ? "O_NONBLOCK" : "blocking",
                     ct_state_name(dead[i]));
            CT_ERR(r, name, tr, ct_expected(dead[i]));
            ct_leave(t);
            closepair(p);
        }
    }
    munmap(bad, 4096);
}

/* SO_RCVTIMEO on a socket: EAGAIN after the socket timeout (item 7). */
static void rcvtimeo_row(ct_rows *r, const char *fn, rd_fn tf)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct timeval tv = { 0, 50000 };
    ck_assert_int_eq(setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    char buf[4];
    errno = 0;
    ssize_t rr = read(sv[0], buf, sizeof buf);
    int re = errno;
    tether_token *t = ct_enter(CT_BOUNDED, 250);
    errno = 0;
    ssize_t tr = tf(sv[0], buf, sizeof buf);
    int te = errno;
    ct_leave(t);
    char name[96];
    snprintf(name, sizeof name, "%s/SO_RCVTIMEO 50ms under token", fn);
    CT_SAME(r, name, tr, te, rr, re);
    closepair(sv);
}

static ssize_t t_readv1(int fd, void *b, size_t n)
{
    struct iovec iov = { b, n };
    return tether_readv(fd, &iov, 1);
}
static ssize_t r_readv1(int fd, void *b, size_t n)
{
    struct iovec iov = { b, n };
    return readv(fd, &iov, 1);
}
static ssize_t t_pread0(int fd, void *b, size_t n)
{
    return tether_pread(fd, b, n, 0);
}
static ssize_t r_pread0(int fd, void *b, size_t n)
{
    return pread(fd, b, n, 0);
}
static ssize_t t_read_all(int fd, void *b, size_t n)
{
    return tether_read_all(fd, b, n, NULL);
}

START_TEST(contract_tether_read)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    read_rows(&r, "tether_read", tether_read, read);
    rcvtimeo_row(&r, "tether_read", tether_read);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_tether_readv)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    read_rows(&r, "tether_readv", t_readv1, r_readv1);
    rcvtimeo_row(&r, "tether_readv", t_readv1);
    /* iovcnt out of range: EINVAL as readv(2). */
    int p[2];
    mkpipe(p, 1);
    char b[4];
    struct iovec iov = { b, 4 };
    int cnts[] = { -1, IOV_MAX + 1 };
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < 2; i++) {
            errno = 0;
            ssize_t rr = readv(p[0], &iov, cnts[k]);
            int re = errno;
            tether_token *t = ct_enter(states[i], 0);
            errno = 0;
            ssize_t tr = tether_readv(p[0], &iov, cnts[k]);
            int te = errno;
            ct_leave(t);
            char name[96];
            snprintf(name, sizeof name, "tether_readv/iovcnt %d/%s", cnts[k],
                     ct_state_name(states[i]));
            CT_SAME(&r, name, tr, te, rr, re);
        }
    }
    closepair(p);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_tether_pread)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    /* A pipe is not seekable: ESPIPE for every data row, as pread(2). */
    read_rows(&r, "tether_pread", t_pread0, r_pread0);
    char tmpl[] = "/tmp/tether-contract-XXXXXX";
    int fd = mkstemp(tmpl);
    ck_assert_int_ge(fd, 0);
    unlink(tmpl);
    ck_assert_int_eq(write(fd, "hello", 5), 5);
    char b[8];
    for (size_t i = 0; i < 2; i++) {
        errno = 0;
        ssize_t rr = pread(fd, b, 4, -1);
        int re = errno;
        tether_token *t = ct_enter(states[i], 0);
        errno = 0;
        ssize_t tr = tether_pread(fd, b, 4, -1);
        int te = errno;
        ssize_t past = tether_pread(fd, b, 4, 100);
        ct_leave(t);
        char name[96];
        snprintf(name, sizeof name, "tether_pread/negative offset/%s", ct_state_name(states[i]));
        CT_SAME(&r, name, tr, te, rr, re);
        snprintf(name, sizeof name, "tether_pread/offset past eof/%s", ct_state_name(states[i]));
        ct_row(&r, past == 0, "%s: expected 0 got %zd", name, past);
    }
    for (size_t i = 0; i < 2; i++) {
        tether_token *t = ct_enter(dead[i], 0);
        errno = 0;
        ssize_t tr = tether_pread(fd, b, 4, 0);
        char name[96];
        snprintf(name, sizeof name, "tether_pread/regular file/%s", ct_state_name(dead[i]));
        CT_ERR(&r, name, tr, ct_expected(dead[i]));
        ct_leave(t);
    }
    close(fd);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_tether_read_all)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    read_rows(&r, "tether_read_all", t_read_all, read);
    rcvtimeo_row(&r, "tether_read_all", t_read_all);
    /* count > SSIZE_MAX: EINVAL (decision 18), moved 0. */
    int p[2];
    mkpipe(p, 1);
    char b[4];
    for (size_t i = 0; i < 2; i++) {
        tether_token *t = ct_enter(states[i], 0);
        size_t moved = 99;
        errno = 0;
        ssize_t tr = tether_read_all(p[0], b, (size_t)SSIZE_MAX + 1, &moved);
        ct_leave(t);
        char name[96];
        snprintf(name, sizeof name, "tether_read_all/count > SSIZE_MAX/%s",
                 ct_state_name(states[i]));
        CT_ERR(&r, name, tr, EINVAL);
        ct_row(&r, moved == 0, "%s: expected moved 0, got %zu", name, moved);
    }
    closepair(p);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

typedef ssize_t (*wr_fn)(int fd, const void *buf, size_t n);

static void write_rows(ct_rows *r, const char *fn, wr_fn tf, wr_fn rf)
{
    char name[128];
    void *bad = ct_unmapped();
    int cfd = closed_fd();
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < 2; i++) {
        ct_state st = states[i];
        int p[2];
        mkpipe(p, 1);
        int q[2];
        mkpipe(q, 1);
        close(q[0]);
        struct {
            const char *what;
            int fd;
            const void *buf;
        } rows[] = {
            { "fd -1", -1, "abcd" },      { "closed fd", cfd, "abcd" },
            { "NULL buf", p[1], NULL },   { "unmapped buf", p[1], bad },
            { "read end", p[0], "abcd" }, { "no reader (EPIPE)", q[1], "abcd" },
        };
        for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) {
            errno = 0;
            ssize_t rr = rf(rows[k].fd, rows[k].buf, 4);
            int re = errno;
            tether_token *t = ct_enter(st, 2000);
            errno = 0;
            ssize_t tr = tf(rows[k].fd, rows[k].buf, 4);
            int te = errno;
            ct_leave(t);
            snprintf(name, sizeof name, "%s/%s/%s", fn, rows[k].what, ct_state_name(st));
            CT_SAME(r, name, tr, te, rr, re);
        }
        fill(p[1]);
        errno = 0;
        ssize_t rr = rf(p[1], "abcd", 4);
        int re = errno;
        tether_token *t = ct_enter(st, 2000);
        errno = 0;
        ssize_t tr = tf(p[1], "abcd", 4);
        int te = errno;
        ct_leave(t);
        snprintf(name, sizeof name, "%s/O_NONBLOCK full/%s", fn, ct_state_name(st));
        CT_SAME(r, name, tr, te, rr, re);
        closepair(p);
        close(q[1]);
    }
    for (size_t i = 0; i < 2; i++) {
        for (int nb = 0; nb < 2; nb++) {
            int p[2];
            mkpipe(p, nb);
            tether_token *t = ct_enter(dead[i], 0);
            errno = 0;
            ssize_t tr = tf(p[1], "x", 1);
            snprintf(name, sizeof name, "%s/%s with room/%s", fn, nb ? "O_NONBLOCK" : "blocking",
                     ct_state_name(dead[i]));
            CT_ERR(r, name, tr, ct_expected(dead[i]));
            ct_leave(t);
            closepair(p);
        }
    }
    munmap(bad, 4096);
}

/* SO_SNDTIMEO: EAGAIN once the socket timeout passes with the buffer full
 * (item 7). The raw call's partial count is compared too. */
static void sndtimeo_row(ct_rows *r, const char *fn, wr_fn tf)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct timeval tv = { 0, 50000 };
    ck_assert_int_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), 0);
    int fl = fcntl(sv[0], F_GETFL);
    fcntl(sv[0], F_SETFL, fl | O_NONBLOCK);
    fill(sv[0]);
    fcntl(sv[0], F_SETFL, fl);
    errno = 0;
    ssize_t rr = write(sv[0], "abcd", 4);
    int re = errno;
    tether_token *t = ct_enter(CT_BOUNDED, 250);
    errno = 0;
    ssize_t tr = tf(sv[0], "abcd", 4);
    int te = errno;
    ct_leave(t);
    char name[96];
    snprintf(name, sizeof name, "%s/SO_SNDTIMEO 50ms under token", fn);
    CT_SAME(r, name, tr, te, rr, re);
    closepair(sv);
}

static ssize_t t_writev1(int fd, const void *b, size_t n)
{
    struct iovec iov = { th_unconst(b), n };
    return tether_writev(fd, &iov, 1);
}
static ssize_t r_writev1(int fd, const void *b, size_t n)
{
    struct iovec iov = { th_unconst(b), n };
    return writev(fd, &iov, 1);
}
static ssize_t t_pwrite0(int fd, const void *b, size_t n)
{
    return tether_pwrite(fd, b, n, 0);
}
static ssize_t r_pwrite0(int fd, const void *b, size_t n)
{
    return pwrite(fd, b, n, 0);
}
static ssize_t t_write_all(int fd, const void *b, size_t n)
{
    return tether_write_all(fd, b, n, NULL);
}

START_TEST(contract_tether_write)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    write_rows(&r, "tether_write", tether_write, write);
    sndtimeo_row(&r, "tether_write", tether_write);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_tether_writev)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    write_rows(&r, "tether_writev", t_writev1, r_writev1);
    sndtimeo_row(&r, "tether_writev", t_writev1);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

/* Item 8: a NULL or unmapped iov array. Each call may crash the process, so
 * every row runs in a forked child and a crash is reported as the row. */
static int iov_child(int which, int vec_write, ct_state st, int *out_errno)
{
    int p[2];
    mkpipe(p, 1);
    ck_assert_int_eq(write(p[1], "abcd", 4), 4);
    int ep[2];
    ck_assert_int_eq(pipe(ep), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        const struct iovec *iov = which ? ct_unmapped() : NULL;
        tether_token *t = ct_enter(st, 2000);
        errno = 0;
        ssize_t n = vec_write ? tether_writev(p[1], iov, 1) : tether_readv(p[0], iov, 1);
        int e[2] = { (int)n, errno };
        if (write(ep[1], e, sizeof e) != sizeof e)
            _exit(3);
        ct_leave(t);
        _exit(0);
    }
    close(ep[1]);
    int e[2] = { 0, 0 };
    ssize_t got = read(ep[0], e, sizeof e);
    int ws;
    waitpid(pid, &ws, 0);
    close(ep[0]);
    closepair(p);
    if (WIFSIGNALED(ws))
        return -1000 - WTERMSIG(ws);
    if (got != sizeof e)
        return -1000; /* no result: a sanitizer stopped it */
    *out_errno = e[1];
    return e[0];
}

START_TEST(contract_iov_pointers)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    static const char *wn[] = { "NULL iov", "unmapped iov" };
    for (int w = 0; w < 2; w++) {
        for (int which = 0; which < 2; which++) {
            for (size_t i = 0; i < 2; i++) {
                const struct iovec *iov = which ? ct_unmapped() : NULL;
                int p[2];
                mkpipe(p, 1);
                ck_assert_int_eq(write(p[1], "abcd", 4), 4);
                errno = 0;
                ssize_t rr = w ? writev(p[1], iov, 1) : readv(p[0], iov, 1);
                int re = errno;
                closepair(p);
                if (iov)
                    munmap(th_unconst(iov), 4096);
                int te = 0;
                int tr = iov_child(which, w, states[i], &te);
                char name[96];
                snprintf(name, sizeof name, "%s/%s/%s", w ? "tether_writev" : "tether_readv",
                         wn[which], ct_state_name(states[i]));
                if (tr <= -1000)
                    ct_row(&r, 0,
                           "%s: expected as the raw call (%zd/%s), got a crash (signal %d; 0: a "
                           "sanitizer report)",
                           name, rr, strerrorname_np(re), -tr - 1000);
                else
                    CT_SAME(&r, name, tr, te, rr, re);
            }
        }
    }
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_tether_pwrite)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    write_rows(&r, "tether_pwrite", t_pwrite0, r_pwrite0);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_tether_write_all)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    write_rows(&r, "tether_write_all", t_write_all, write);
    sndtimeo_row(&r, "tether_write_all", t_write_all);
    int p[2];
    mkpipe(p, 1);
    for (size_t i = 0; i < 2; i++) {
        tether_token *t = ct_enter(states[i], 0);
        size_t moved = 99;
        errno = 0;
        ssize_t tr = tether_write_all(p[1], "abcd", (size_t)SSIZE_MAX + 1, &moved);
        ct_leave(t);
        char name[96];
        snprintf(name, sizeof name, "tether_write_all/count > SSIZE_MAX/%s",
                 ct_state_name(states[i]));
        CT_ERR(&r, name, tr, EINVAL);
        ct_row(&r, moved == 0, "%s: expected moved 0, got %zu", name, moved);
    }
    closepair(p);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

/* Item 18: count > SSIZE_MAX for read/write/pread/pwrite: the raw call's error. */
START_TEST(contract_count_above_ssize_max)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    int p[2];
    mkpipe(p, 1);
    ck_assert_int_eq(write(p[1], "abcd", 4), 4);
    char b[8];
    volatile size_t big = (size_t)SSIZE_MAX + 1; /* hidden from -Wstringop-overflow */
    for (size_t i = 0; i < 2; i++) {
        char name[96];
        errno = 0;
        ssize_t rr = read(p[0], b, big);
        int re = errno;
        if (rr > 0)
            ck_assert_int_eq(write(p[1], b, (size_t)rr), rr);
        tether_token *t = ct_enter(states[i], 0);
        errno = 0;
        ssize_t tr = tether_read(p[0], b, big);
        int te = errno;
        ct_leave(t);
        if (tr > 0)
            ck_assert_int_eq(write(p[1], b, (size_t)tr), tr);
        snprintf(name, sizeof name, "tether_read/count > SSIZE_MAX/%s", ct_state_name(states[i]));
        CT_SAME(&r, name, tr, te, rr, re);

        errno = 0;
        rr = write(p[1], "abcd", big);
        re = errno;
        t = ct_enter(states[i], 0);
        errno = 0;
        tr = tether_write(p[1], "abcd", big);
        te = errno;
        ct_leave(t);
        snprintf(name, sizeof name, "tether_write/count > SSIZE_MAX/%s", ct_state_name(states[i]));
        CT_SAME(&r, name, tr, te, rr, re);
    }
    closepair(p);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

/* One read row on fd: tether_read (or tether_readv over iov when iov is
 * not NULL) under a token in state st against the raw call, side by side;
 * `setup` refills the descriptor before each of the two calls. */
static void kind_row(ct_rows *r, const char *what, ct_state st, int fd, void *buf, size_t n,
                     const struct iovec *iov, int cnt, void (*setup)(int wfd), int wfd)
{
    if (setup)
        setup(wfd);
    errno = 0;
    ssize_t rr = iov ? readv(fd, iov, cnt) : read(fd, buf, n);
    int re = errno;
    if (setup)
        setup(wfd);
    tether_token *t = ct_enter(st, 0);
    errno = 0;
    ssize_t tr = iov ? tether_readv(fd, iov, cnt) : tether_read(fd, buf, n);
    int te = errno;
    ct_leave(t);
    char name[128];
    snprintf(name, sizeof name, "%s/%s", what, ct_state_name(st));
    CT_SAME(r, name, tr, te, rr, re);
}

static void put64(int wfd)
{
    char b[64];
    memset(b, 's', sizeof b);
    ck_assert_int_eq(write(wfd, b, sizeof b), 64);
}

/* Drain what put64 left when the row read nothing. */
static void drain(int fd)
{
    char b[256];
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    while (read(fd, b, sizeof b) > 0) {
    }
    fcntl(fd, F_SETFL, fl);
}

/*
 * Reads from a socket go through recv(MSG_DONTWAIT), picked by a hint per
 * descriptor number: every row that differs between the two attempts, and
 * descriptor numbers that change kind (a pipe's number reused by a socket
 * and back; a closed number that was a socket), as the raw call.
 */
START_TEST(contract_read_socket_kinds)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    char buf[64];
    struct iovec empty2[2] = { { buf, 0 }, { buf, 0 } };
    struct iovec two[2] = { { buf, 16 }, { buf + 16, 48 } };
    void *kernel = (void *)(uintptr_t)0xffff800000000000u; /* fails access_ok */
    for (size_t i = 0; i < 2; i++) {
        ct_state st = states[i];
        int sv[2], q[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        kind_row(&r, "tether_read/socket data", st, sv[0], buf, 64, NULL, 0, put64, sv[1]);
        kind_row(&r, "tether_read/socket count 0 empty", st, sv[0], buf, 0, NULL, 0, NULL, -1);
        kind_row(&r, "tether_readv/socket two entries", st, sv[0], NULL, 0, two, 2, put64, sv[1]);
        kind_row(&r, "tether_readv/socket empty entries, empty", st, sv[0], NULL, 0, empty2, 2,
                 NULL, -1);
        kind_row(&r, "tether_readv/socket empty entries, data", st, sv[0], NULL, 0, empty2, 2,
                 put64, sv[1]);
        drain(sv[0]);
        kind_row(&r, "tether_read/socket kernel pointer", st, sv[0], kernel, 64, NULL, 0, put64,
                 sv[1]);
        drain(sv[0]);
        /* The socket's number becomes a pipe's, then a socket's again. */
        mkpipe(q, 0);
        ck_assert_int_eq(dup3(q[0], sv[0], O_CLOEXEC), sv[0]);
        kind_row(&r, "tether_read/pipe at a socket's number", st, sv[0], buf, 64, NULL, 0, put64,
                 q[1]);
        closepair(q);
        int w[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, w), 0);
        ck_assert_int_eq(dup3(w[0], sv[0], O_CLOEXEC), sv[0]);
        kind_row(&r, "tether_read/socket at a pipe's number", st, sv[0], buf, 64, NULL, 0, put64,
                 w[1]);
        /* Peer shut down: end of file as read(2). */
        shutdown(w[1], SHUT_WR);
        kind_row(&r, "tether_read/socket after shutdown", st, sv[0], buf, 64, NULL, 0, NULL, -1);
        closepair(w);
        closepair(sv);
        /* A closed number that was read as a socket: EBADF before EFAULT,
         * as read(2) (recv would look at the pointer first). */
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        int hi = fcntl(sv[0], F_DUPFD_CLOEXEC, 700);
        ck_assert_int_ge(hi, 700);
        kind_row(&r, "tether_read/socket at a fresh number", st, hi, buf, 64, NULL, 0, put64,
                 sv[1]);
        close(hi);
        kind_row(&r, "tether_read/closed socket number, kernel pointer", st, hi, kernel, 64, NULL,
                 0, NULL, -1);
        closepair(sv);
    }
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

static Suite *contract_fd_suite(void)
{
    Suite *s = suite_create("contract_fd");
    TCase *tc = tcase_create("contract_fd");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, contract_tether_read);
    tcase_add_test(tc, contract_tether_readv);
    tcase_add_test(tc, contract_tether_pread);
    tcase_add_test(tc, contract_tether_read_all);
    tcase_add_test(tc, contract_tether_write);
    tcase_add_test(tc, contract_tether_writev);
    tcase_add_test(tc, contract_iov_pointers);
    tcase_add_test(tc, contract_tether_pwrite);
    tcase_add_test(tc, contract_tether_write_all);
    tcase_add_test(tc, contract_count_above_ssize_max);
    tcase_add_test(tc, contract_read_socket_kinds);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(contract_fd_suite());
}
