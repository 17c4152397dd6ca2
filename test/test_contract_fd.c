/*
 * Contract matrix: descriptor I/O, poll and sleeps (tether_read, _write,
 * _readv, _writev, _pread, _pwrite, _read_all, _write_all, _poll, _ppoll,
 * _sleep_until, _sleep_for, _nanosleep).
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
            { "fd -1", -1, buf },
            { "closed fd", cfd, buf },
            { "NULL buf", p[0], NULL },
            { "unmapped buf", p[0], bad },
            { "write end", p[1], buf },
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
            snprintf(name, sizeof name, "tether_readv/iovcnt %d/%s", cnts[k], ct_state_name(states[i]));
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
        snprintf(name, sizeof name, "tether_read_all/count > SSIZE_MAX/%s", ct_state_name(states[i]));
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
            { "fd -1", -1, "abcd" },
            { "closed fd", cfd, "abcd" },
            { "NULL buf", p[1], NULL },
            { "unmapped buf", p[1], bad },
            { "read end", p[0], "abcd" },
            { "no reader (EPIPE)", q[1], "abcd" },
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
    struct iovec iov = { (void *)b, n };
    return tether_writev(fd, &iov, 1);
}
static ssize_t r_writev1(int fd, const void *b, size_t n)
{
    struct iovec iov = { (void *)b, n };
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
        if (write(ep[1], e, sizeof e) != sizeof e) _exit(3);
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
    if (WIFSIGNALED(ws)) return -1000 - WTERMSIG(ws);
    if (got != sizeof e) return -1000; /* no result: a sanitizer stopped it */
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
                if (iov) munmap((void *)iov, 4096);
                int te = 0;
                int tr = iov_child(which, w, states[i], &te);
                char name[96];
                snprintf(name, sizeof name, "%s/%s/%s", w ? "tether_writev" : "tether_readv",
                         wn[which], ct_state_name(states[i]));
                if (tr <= -1000)
                    ct_row(&r, 0, "%s: expected as the raw call (%zd/%s), got a crash (signal %d; 0: a sanitizer report)",
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
        snprintf(name, sizeof name, "tether_write_all/count > SSIZE_MAX/%s", ct_state_name(states[i]));
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
        if (rr > 0) ck_assert_int_eq(write(p[1], b, (size_t)rr), rr);
        tether_token *t = ct_enter(states[i], 0);
        errno = 0;
        ssize_t tr = tether_read(p[0], b, big);
        int te = errno;
        ct_leave(t);
        if (tr > 0) ck_assert_int_eq(write(p[1], b, (size_t)tr), tr);
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

START_TEST(contract_tether_poll)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    char name[96];
    void *bad = ct_unmapped();
    int p[2];
    mkpipe(p, 1);
    for (size_t i = 0; i < 2; i++) {
        struct pollfd pf = { p[0], POLLIN, 0 };
        struct {
            const char *what;
            struct pollfd *fds;
            nfds_t n;
        } rows[] = {
            { "NULL fds nfds 1", NULL, 1 },
            { "unmapped fds", bad, 1 },
            { "nfds 0 timeout 0", NULL, 0 },
            { "empty pipe timeout 0", &pf, 1 },
        };
        for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) {
            errno = 0;
            int rr = poll(rows[k].fds, rows[k].n, 0);
            int re = errno;
            tether_token *t = ct_enter(states[i], 0);
            errno = 0;
            int tr = tether_poll(rows[k].fds, rows[k].n, 0);
            int te = errno;
            ct_leave(t);
            snprintf(name, sizeof name, "tether_poll/%s/%s", rows[k].what, ct_state_name(states[i]));
            CT_SAME(&r, name, tr, te, rr, re);
        }
        /* A negative fd is ignored; a closed one reports POLLNVAL. */
        struct pollfd two[2] = { { -1, POLLIN, 0 }, { closed_fd(), POLLIN, 0 } };
        tether_token *t = ct_enter(states[i], 0);
        int tr = tether_poll(two, 2, 0);
        ct_leave(t);
        snprintf(name, sizeof name, "tether_poll/fd -1 and closed fd/%s", ct_state_name(states[i]));
        ct_row(&r, tr == 1 && two[0].revents == 0 && two[1].revents == POLLNVAL,
               "%s: expected 1 with POLLNVAL on the closed one, got %d (%#x %#x)", name, tr,
               two[0].revents, two[1].revents);
    }
    /* Already canceled/expired: fails even with timeout 0 and a ready fd. */
    ck_assert_int_eq(write(p[1], "x", 1), 1);
    for (size_t i = 0; i < 2; i++) {
        struct pollfd pf = { p[0], POLLIN, 0 };
        tether_token *t = ct_enter(dead[i], 0);
        errno = 0;
        int tr = tether_poll(&pf, 1, 0);
        snprintf(name, sizeof name, "tether_poll/timeout 0 ready fd/%s", ct_state_name(dead[i]));
        CT_ERR(&r, name, tr, ct_expected(dead[i]));
        errno = 0;
        tr = tether_poll(NULL, 0, 0);
        snprintf(name, sizeof name, "tether_poll/nfds 0 timeout 0/%s", ct_state_name(dead[i]));
        CT_ERR(&r, name, tr, ct_expected(dead[i]));
        ct_leave(t);
    }
    /* A token deadline before timeout_ms: ETIMEDOUT; timeout_ms first: 0. */
    {
        struct pollfd pf = { p[0], POLLOUT, 0 };
        char d;
        ck_assert_int_eq(read(p[0], &d, 1), 1);
        pf.events = POLLIN;
        tether_token *t;
        ck_assert_int_eq(tether_token_new(&t, NULL, tether_deadline_after(tether_ms(20))), 0);
        ck_assert_int_eq(tether_token_enter(t), 0);
        errno = 0;
        int tr = tether_poll(&pf, 1, 10000);
        CT_ERR(&r, "tether_poll/token deadline before timeout", tr, ETIMEDOUT);
        ct_leave(t);
        t = ct_enter(CT_BOUNDED, 5000);
        tr = tether_poll(&pf, 1, 20);
        ct_row(&r, tr == 0, "tether_poll/timeout before deadline: expected 0 got %d", tr);
        ct_leave(t);
    }
    closepair(p);
    munmap(bad, 4096);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

/* Items 9 and 17: nfds against RLIMIT_NOFILE. The array ends where a
 * PROT_NONE page starts, so a read past the caller's entries faults. */
START_TEST(contract_poll_nfds_limits)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    struct rlimit rl;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = 64;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    char *guard = ct_guarded();
    nfds_t lim = 64;
    struct pollfd *fds = (struct pollfd *)(guard - lim * sizeof(struct pollfd));
    for (nfds_t k = 0; k < lim; k++) fds[k] = (struct pollfd){ -1, POLLIN, 0 };
    int p[2];
    mkpipe(p, 1);
    ck_assert_int_eq(write(p[1], "x", 1), 1);
    fds[lim - 1].fd = p[0];
    char name[96];
    /* Not {0, 0}: a zero timeout is the raw call; 1 ms takes the waiting path. */
    struct timespec zero = { 0, 1000000 };
    for (size_t i = 0; i < 2; i++) {
        /* nfds == RLIMIT_NOFILE: succeeds as poll(2) (item 17). */
        errno = 0;
        int rr = poll(fds, lim, 0);
        int re = errno;
        tether_token *t = ct_enter(states[i], 0);
        errno = 0;
        int tr = tether_poll(fds, lim, 0);
        int te = errno;
        int tpr = tether_ppoll(fds, lim, &zero, NULL);
        int tpe = errno;
        ct_leave(t);
        snprintf(name, sizeof name, "tether_poll/nfds == RLIMIT_NOFILE/%s", ct_state_name(states[i]));
        CT_SAME(&r, name, tr, te, rr, re);
        snprintf(name, sizeof name, "tether_ppoll/nfds == RLIMIT_NOFILE/%s", ct_state_name(states[i]));
        CT_SAME(&r, name, tpr, tpe, rr, re);
    }
    ct_done(&r);
    closepair(p);
    th_baseline_check(base);
}
END_TEST

/* Item 9: nfds above the limit, and nfds + 1 wrapping, must fail with
 * EINVAL without reading the array (a read faults: the test dies). */
#if defined(__SANITIZE_ADDRESS__)
#define TH_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TH_ASAN 1
#endif
#endif
#ifndef TH_ASAN
#define TH_ASAN 0
#endif

struct over_args {
    struct pollfd *fds;
    nfds_t n;
    int use_ppoll;
    ct_state st;
};
static long long over_call(void *ctx)
{
    struct over_args *a = ctx;
    struct timespec tmo = { 0, 1000000 }; /* not {0, 0}: that is the raw call */
    tether_token *t = ct_enter(a->st, 0);
    errno = 0;
    long long rc = a->use_ppoll ? tether_ppoll(a->fds, a->n, &tmo, NULL) : tether_poll(a->fds, a->n, 1);
    int e = errno;
    ct_leave(t);
    errno = e;
    return rc;
}

/* Item 9: nfds above the limit, and nfds + 1 wrapping, must fail with
 * EINVAL without reading the array. The array's 4 entries end at a
 * PROT_NONE page, so reading past them faults: each row runs in a child. */
START_TEST(contract_ppoll_nfds_over_limit)
{
    ct_rows r = { .test = __func__ };
    struct rlimit rl;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = 64;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    char *guard = ct_guarded();
    struct pollfd *fds = (struct pollfd *)(guard - 4 * sizeof(struct pollfd));
    for (int k = 0; k < 4; k++) fds[k] = (struct pollfd){ -1, POLLIN, 0 };
    struct timespec tmo = { 0, 1000000 };
    nfds_t counts[] = { 65, (nfds_t)-1 };
    static const char *cn[] = { "nfds > RLIMIT_NOFILE", "nfds + 1 wraps" };
    for (int c = 0; c < 2; c++) {
        for (size_t i = 0; i < 2; i++) {
            /* Under AddressSanitizer, poll/ppoll with no token are the libc
             * calls behind the sanitizer's interceptor, which reads the whole
             * array before the kernel can refuse it: nothing of tether's to
             * test there. */
            if (TH_ASAN && states[i] == CT_NONE) continue;
            for (int pp = 0; pp < 2; pp++) {
                errno = 0;
                /* The raw syscall: a sanitizer's poll interceptor would read
                 * the array itself and fault. */
                int rr = (int)syscall(SYS_ppoll, fds, counts[c], &tmo, NULL, (size_t)8);
                int re = errno;
                struct over_args a = { fds, counts[c], pp, states[i] };
                int te, sig;
                long long tr = ct_in_child(over_call, &a, &te, &sig);
                char name[96];
                snprintf(name, sizeof name, "%s/%s/%s", pp ? "tether_ppoll" : "tether_poll", cn[c],
                         ct_state_name(states[i]));
                if (sig)
                    ct_row(&r, 0, "%s: expected as the raw call (%d/%s), got a crash (signal %d; -1: a sanitizer report)",
                           name, rr, strerrorname_np(re), sig);
                else
                    CT_SAME(&r, name, tr, te, rr, re);
            }
        }
    }
    ct_done(&r);
}
END_TEST

struct ppoll_args {
    struct pollfd *fds;
    nfds_t n;
    const struct timespec *tmo;
};
static long long ppoll_call(void *ctx)
{
    struct ppoll_args *a = ctx;
    return tether_ppoll(a->fds, a->n, a->tmo, NULL);
}

struct nsleep_args {
    const struct timespec *req;
    struct timespec *rem;
};
static long long nsleep_call(void *ctx)
{
    struct nsleep_args *a = ctx;
    return tether_nanosleep(a->req, a->rem);
}

START_TEST(contract_tether_ppoll)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    char name[96];
    int p[2];
    mkpipe(p, 1);
    struct timespec zero = { 0, 0 }, badns = { 0, 1000000000 }, neg = { -1, 0 };
    void *bad = ct_unmapped();
    for (size_t i = 0; i < 2; i++) {
        struct pollfd pf = { p[0], POLLIN, 0 };
        struct {
            const char *what;
            struct pollfd *fds;
            nfds_t n;
            const struct timespec *tmo;
        } rows[] = {
            { "tv_nsec 1e9", &pf, 1, &badns },
            { "negative tv_sec", &pf, 1, &neg },
            /* No "unmapped tmo" row: glibc's own ppoll copies *tmo in user
             * space (time64 conversion) and faults, so there is no raw
             * result to match. */
            { "unmapped fds", bad, 1, &zero },
            { "tmo {0,0} empty", &pf, 1, &zero },
        };
        for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) {
            errno = 0;
            int rr = ppoll(rows[k].fds, rows[k].n, rows[k].tmo, NULL);
            int re = errno;
            tether_token *t = ct_enter(states[i], 0);
            struct ppoll_args a = { rows[k].fds, rows[k].n, rows[k].tmo };
            int te, sig;
            long long tr = ct_in_child(ppoll_call, &a, &te, &sig);
            ct_leave(t);
            snprintf(name, sizeof name, "tether_ppoll/%s/%s", rows[k].what, ct_state_name(states[i]));
            if (sig)
                ct_row(&r, 0, "%s: expected as the raw call (%d/%s), got a crash (signal %d; -1: a sanitizer report)", name, rr,
                       rr == -1 ? strerrorname_np(re) : "-", sig);
            else
                CT_SAME(&r, name, tr, te, rr, re);
        }
    }
    ck_assert_int_eq(write(p[1], "x", 1), 1);
    for (size_t i = 0; i < 2; i++) {
        struct pollfd pf = { p[0], POLLIN, 0 };
        tether_token *t = ct_enter(dead[i], 0);
        errno = 0;
        int tr = tether_ppoll(&pf, 1, &zero, NULL);
        snprintf(name, sizeof name, "tether_ppoll/tmo {0,0} ready fd/%s", ct_state_name(dead[i]));
        CT_ERR(&r, name, tr, ct_expected(dead[i]));
        ct_leave(t);
    }
    closepair(p);
    munmap(bad, 4096);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

/* Sleeps: the argument rows and the dead-token rows. */
START_TEST(contract_sleeps)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    char name[96];
    void *bad = ct_unmapped();
    struct timespec zero = { 0, 0 }, badns = { 0, 1000000000 }, neg = { -1, 0 }, rem;
    for (size_t i = 0; i < 2; i++) {
        struct {
            const char *what;
            const struct timespec *req;
        } rows[] = {
            { "tv_nsec 1e9", &badns },
            { "negative tv_sec", &neg },
            { "NULL req", NULL },
            { "unmapped req", bad },
            { "zero", &zero },
        };
        for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) {
            errno = 0;
            int rr = nanosleep(rows[k].req, &rem);
            int re = errno;
            tether_token *t = ct_enter(states[i], 0);
            struct nsleep_args a = { rows[k].req, &rem };
            int te, sig;
            long long tr = ct_in_child(nsleep_call, &a, &te, &sig);
            ct_leave(t);
            snprintf(name, sizeof name, "tether_nanosleep/%s/%s", rows[k].what, ct_state_name(states[i]));
            if (sig)
                ct_row(&r, 0, "%s: expected as the raw call (%d/%s), got a crash (signal %d; -1: a sanitizer report)", name, rr,
                       rr == -1 ? strerrorname_np(re) : "-", sig);
            else
                CT_SAME(&r, name, tr, te, rr, re);
        }
        tether_token *t = ct_enter(states[i], 0);
        int a = tether_sleep_for(0), b = tether_sleep_for(-5), c = tether_sleep_until(0);
        ct_leave(t);
        snprintf(name, sizeof name, "tether_sleep_for/0, negative; sleep_until past/%s", ct_state_name(states[i]));
        ct_row(&r, a == 0 && b == 0 && c == 0, "%s: expected 0 0 0 got %d %d %d", name, a, b, c);
    }
    for (size_t i = 0; i < 2; i++) {
        tether_token *t = ct_enter(dead[i], 0);
        int e = ct_expected(dead[i]);
        errno = 0;
        int tr = tether_sleep_for(0);
        snprintf(name, sizeof name, "tether_sleep_for/0/%s", ct_state_name(dead[i]));
        CT_ERR(&r, name, tr, e);
        errno = 0;
        tr = tether_sleep_until(0);
        snprintf(name, sizeof name, "tether_sleep_until/past/%s", ct_state_name(dead[i]));
        CT_ERR(&r, name, tr, e);
        errno = 0;
        tr = tether_nanosleep(&zero, NULL);
        snprintf(name, sizeof name, "tether_nanosleep/zero/%s", ct_state_name(dead[i]));
        CT_ERR(&r, name, tr, e);
        ct_leave(t);
    }
    /* A deadline before the sleep's end: ETIMEDOUT and rem filled. */
    tether_token *t;
    ck_assert_int_eq(tether_token_new(&t, NULL, tether_deadline_after(tether_ms(20))), 0);
    ck_assert_int_eq(tether_token_enter(t), 0);
    struct timespec ten = { 10, 0 };
    rem = (struct timespec){ 0, 0 };
    errno = 0;
    int tr = tether_nanosleep(&ten, &rem);
    CT_ERR(&r, "tether_nanosleep/deadline first", tr, ETIMEDOUT);
    ct_row(&r, rem.tv_sec >= 9, "tether_nanosleep/deadline first: rem %ld s, expected ~10",
           (long)rem.tv_sec);
    ct_leave(t);
    munmap(bad, 4096);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

/* Item 11: a signal handler interrupting a sleep, with and without
 * SA_RESTART: -1/EINTR as nanosleep(2) (which returns EINTR for both). */
static void on_usr1(int sig)
{
    (void)sig;
}

static _Atomic pid_t sleeper_tid;
static pthread_t sleeper;

static void *signaler(void *arg)
{
    (void)arg;
    pid_t tid;
    while ((tid = atomic_load(&sleeper_tid)) == 0) {
    }
    th_wait_blocked(tid);
    pthread_kill(sleeper, SIGUSR1);
    return NULL;
}

/* Run one sleep kind (0 raw nanosleep, 1 tether_nanosleep, 2 sleep_for,
 * 3 sleep_until) under st, interrupted once; returns ret, sets *err. */
static int interrupted_sleep(int kind, ct_state st, int *err)
{
    atomic_store(&sleeper_tid, 0);
    sleeper = pthread_self();
    pthread_t sg;
    ck_assert_int_eq(pthread_create(&sg, NULL, signaler, NULL), 0);
    tether_token *t = ct_enter(st, 0);
    /* A missing EINTR ends as a full 0.5 s sleep (0), never a hang. */
    struct timespec req = { 0, 500000000 }, rem = { 0, 0 };
    atomic_store(&sleeper_tid, th_gettid());
    errno = 0;
    int rc;
    switch (kind) {
    case 0: rc = nanosleep(&req, &rem); break;
    case 1: rc = tether_nanosleep(&req, &rem); break;
    case 2: rc = tether_sleep_for(tether_ms(500)); break;
    default: rc = tether_sleep_until(tether_now() + tether_ms(500)); break;
    }
    *err = errno;
    ct_leave(t);
    pthread_join(sg, NULL);
    if (rc == -1 && *err == EINTR && kind <= 1 && rem.tv_sec == 0 && rem.tv_nsec == 0) *err = -1;
    return rc;
}

START_TEST(contract_sleep_signals)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    static const char *kn[] = { "nanosleep", "tether_nanosleep", "tether_sleep_for", "tether_sleep_until" };
    for (int restart = 0; restart < 2; restart++) {
        struct sigaction sa = { 0 };
        sa.sa_handler = on_usr1;
        sa.sa_flags = restart ? SA_RESTART : 0;
        sigemptyset(&sa.sa_mask);
        ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
        for (int kind = 0; kind < 4; kind++) {
            for (size_t i = 0; i < 2; i++) {
                if (kind == 0 && i == 1) continue;
                int err = 0;
                int rc = interrupted_sleep(kind, states[i], &err);
                char name[128];
                snprintf(name, sizeof name, "%s/signal %s/%s", kn[kind],
                         restart ? "with SA_RESTART" : "without SA_RESTART", ct_state_name(states[i]));
                ct_row(&r, rc == -1 && err == EINTR, "%s: expected -1/EINTR (rem filled) got %d/%s", name,
                       rc, rc == -1 ? (err == -1 ? "EINTR with rem unfilled" : strerrorname_np(err)) : "-");
            }
        }
    }
    signal(SIGUSR1, SIG_DFL);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

/* A signal during a blocking tether_read, with and without SA_RESTART: the
 * raw read(2) restarts under SA_RESTART; tether documents EINTR for both. */
START_TEST(contract_read_signals)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    for (int restart = 0; restart < 2; restart++) {
        struct sigaction sa = { 0 };
        sa.sa_handler = on_usr1;
        sa.sa_flags = restart ? SA_RESTART : 0;
        sigemptyset(&sa.sa_mask);
        ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
        int p[2];
        mkpipe(p, 0);
        atomic_store(&sleeper_tid, 0);
        sleeper = pthread_self();
        pthread_t sg;
        ck_assert_int_eq(pthread_create(&sg, NULL, signaler, NULL), 0);
        tether_token *t = ct_enter(CT_BOUNDED, 250);
        atomic_store(&sleeper_tid, th_gettid());
        char b[4];
        errno = 0;
        ssize_t rc = tether_read(p[0], b, sizeof b);
        int e = errno;
        ct_leave(t);
        pthread_join(sg, NULL);
        char name[96];
        snprintf(name, sizeof name, "tether_read/signal %s/live",
                 restart ? "with SA_RESTART" : "without SA_RESTART");
        errno = e;
        CT_ERR(&r, name, rc, EINTR);
        closepair(p);
    }
    signal(SIGUSR1, SIG_DFL);
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
    tcase_add_test(tc, contract_tether_poll);
    tcase_add_test(tc, contract_poll_nfds_limits);
    tcase_add_test(tc, contract_ppoll_nfds_over_limit);
    tcase_add_test(tc, contract_tether_ppoll);
    tcase_add_test(tc, contract_sleeps);
    tcase_add_test(tc, contract_sleep_signals);
    tcase_add_test(tc, contract_read_signals);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(contract_fd_suite());
}
