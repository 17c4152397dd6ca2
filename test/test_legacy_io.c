/*
 * Cancellable vector, positional, poll and sleep calls for legacy code:
 * readv/writev, pread/pwrite, ppoll, nanosleep, read_all/write_all.
 *
 * Each is checked against the raw call it replaces (return value, errno,
 * partial transfers), then blocked and: canceled before the call,
 * canceled while blocked, stopped by a deadline, interrupted by a signal
 * handler without SA_RESTART (-1/EINTR like the raw call; the whole-buffer
 * helpers retry EINTR instead).
 */
#define _GNU_SOURCE
#include "legacy.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <time.h>

/* ------------------------------------------------------------ fixtures */

static struct {
    int p[2];
    char buf[65536];
    struct pollfd pfd[3];
} F;

static void mkpipe(int p[2])
{
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
}

static void fill_pipe(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    static char junk[4096];
    while (write(fd, junk, sizeof junk) > 0) {
    }
    while (write(fd, junk, 1) > 0) {
    }
    fcntl(fd, F_SETFL, fl);
}

static void setup_empty(void)
{
    mkpipe(F.p);
}
static void setup_full(void)
{
    mkpipe(F.p);
    fill_pipe(F.p[1]);
}
static void teardown_pipe(void)
{
    close(F.p[0]);
    close(F.p[1]);
}
static void setup_none(void)
{
}
static void teardown_none(void)
{
}

static ssize_t t_readv(void *a)
{
    (void)a;
    struct iovec iov[2] = { { F.buf, 4 }, { F.buf + 4, 4 } };
    return tether_readv(F.p[0], iov, 2);
}
static ssize_t r_readv(void *a)
{
    (void)a;
    struct iovec iov[2] = { { F.buf, 4 }, { F.buf + 4, 4 } };
    return readv(F.p[0], iov, 2);
}
static ssize_t t_writev(void *a)
{
    (void)a;
    struct iovec iov[2] = { { F.buf, 1000 }, { F.buf + 1000, 1000 } };
    return tether_writev(F.p[1], iov, 2);
}
static ssize_t r_writev(void *a)
{
    (void)a;
    struct iovec iov[2] = { { F.buf, 1000 }, { F.buf + 1000, 1000 } };
    return writev(F.p[1], iov, 2);
}
static ssize_t t_ppoll(void *a)
{
    (void)a;
    struct pollfd p = { .fd = F.p[0], .events = POLLIN };
    return tether_ppoll(&p, 1, NULL, NULL);
}
static ssize_t r_ppoll(void *a)
{
    (void)a;
    struct pollfd p = { .fd = F.p[0], .events = POLLIN };
    return ppoll(&p, 1, NULL, NULL);
}
static struct timespec ns_rem;
static ssize_t t_nanosleep(void *a)
{
    (void)a;
    struct timespec req = { .tv_sec = 30 };
    return tether_nanosleep(&req, &ns_rem);
}
static ssize_t r_nanosleep(void *a)
{
    (void)a;
    struct timespec req = { .tv_sec = 30 };
    return nanosleep(&req, &ns_rem);
}
static ssize_t t_read_all(void *a)
{
    (void)a;
    return tether_read_all(F.p[0], F.buf, 100, NULL);
}
static ssize_t t_write_all(void *a)
{
    (void)a;
    return tether_write_all(F.p[1], F.buf, 5000, NULL);
}

typedef lu_blocker blocker;

static const blocker blockers[] = {
    { "readv", setup_empty, t_readv, r_readv, teardown_pipe },
    { "writev", setup_full, t_writev, r_writev, teardown_pipe },
    { "ppoll", setup_empty, t_ppoll, r_ppoll, teardown_pipe },
    { "nanosleep", setup_none, t_nanosleep, r_nanosleep, teardown_none },
    { "read_all", setup_empty, t_read_all, NULL, teardown_pipe },
    { "write_all", setup_full, t_write_all, NULL, teardown_pipe },
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
    lu_check_deadline(&blockers[_i], 50);
}
END_TEST

START_TEST(blocker_eintr)
{
    const blocker *b = &blockers[_i];
    if (!b->raw)
        return;
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
    lu_free(tok);
    th_baseline_check(base);
}
END_TEST

/* The whole-buffer helpers ride out EINTR and finish the transfer. */
START_TEST(read_all_retries_eintr)
{
    th_baseline base = th_baseline_take();
    lu_eintr_handler();
    setup_empty();
    tether_token *tok = lu_token(TETHER_NEVER);
    lu_thread th;
    lu_start_blocked(&th, tok, t_read_all, NULL);
    ck_assert_int_eq(pthread_kill(th.th, SIGUSR1), 0);
    ck_assert_int_eq(th_wait_blocked(th.tid), 0);
    char data[100];
    memset(data, 'z', sizeof data);
    ck_assert_int_eq(write(F.p[1], data, 60), 60);
    ck_assert_int_eq(th_wait_blocked(th.tid), 0);
    ck_assert_int_eq(write(F.p[1], data, 40), 40);
    lu_join(&th);
    ck_assert_int_eq(th.ret, 100);
    teardown_pipe();
    lu_free(tok);
    th_baseline_check(base);
}
END_TEST

/* ------------------------------------------------------------ same as raw */

typedef ssize_t (*cmp_fn)(bool tethered);

static void same_as_raw(cmp_fn fn, const char *what)
{
    tether_token *tok = lu_token(TETHER_NEVER);
    ssize_t ret[2];
    int err[2];
    for (int tethered = 0; tethered < 2; tethered++) {
        if (tethered)
            ck_assert_int_eq(tether_token_enter(tok), 0);
        errno = 0;
        ret[tethered] = fn(tethered);
        err[tethered] = errno;
        if (tethered)
            ck_assert_int_eq(tether_token_leave(tok), 0);
    }
    ck_assert_msg(ret[0] == ret[1], "%s: raw %zd, tether %zd", what, ret[0], ret[1]);
    if (ret[0] < 0)
        ck_assert_msg(err[0] == err[1], "%s: raw %s, tether %s", what, strerror(err[0]),
                      strerror(err[1]));
    ck_assert_int_eq(tether_token_check(tok), 0);
    lu_free(tok);
}

static ssize_t do_readv_scatter(bool t)
{
    int p[2];
    mkpipe(p);
    ck_assert_int_eq(write(p[1], "abcdefg", 7), 7);
    char a[3], b[10] = { 0 };
    struct iovec iov[2] = { { a, 3 }, { b, sizeof b } };
    ssize_t n = t ? tether_readv(p[0], iov, 2) : readv(p[0], iov, 2);
    ck_assert_int_eq(memcmp(a, "abc", 3), 0);
    ck_assert_str_eq(b, "defg");
    close(p[0]);
    close(p[1]);
    return n;
}
static ssize_t do_readv_eof(bool t)
{
    int p[2];
    mkpipe(p);
    close(p[1]);
    char a[3];
    struct iovec iov = { a, 3 };
    ssize_t n = t ? tether_readv(p[0], &iov, 1) : readv(p[0], &iov, 1);
    close(p[0]);
    return n;
}
static ssize_t do_readv_nonblock(bool t)
{
    int p[2];
    ck_assert_int_eq(pipe2(p, O_NONBLOCK), 0);
    char a[3];
    struct iovec iov = { a, 3 };
    ssize_t n = t ? tether_readv(p[0], &iov, 1) : readv(p[0], &iov, 1);
    int e = errno;
    close(p[0]);
    close(p[1]);
    errno = e;
    return n;
}
static ssize_t do_readv_badf(bool t)
{
    char a[3];
    struct iovec iov = { a, 3 };
    return t ? tether_readv(-1, &iov, 1) : readv(-1, &iov, 1);
}
static ssize_t do_readv_einval(bool t)
{
    int p[2];
    mkpipe(p);
    char a[3];
    struct iovec iov = { a, 3 };
    volatile int bad = -1; /* hidden from the compiler's bounds checks */
    ssize_t n = t ? tether_readv(p[0], &iov, bad) : readv(p[0], &iov, bad);
    int e = errno;
    close(p[0]);
    close(p[1]);
    errno = e;
    return n;
}
static ssize_t do_writev_gather(bool t)
{
    int p[2];
    mkpipe(p);
    struct iovec iov[3] = { { "ab", 2 }, { "", 0 }, { "cde", 3 } };
    ssize_t n = t ? tether_writev(p[1], iov, 3) : writev(p[1], iov, 3);
    char buf[8] = { 0 };
    ck_assert_int_eq(read(p[0], buf, sizeof buf), 5);
    ck_assert_str_eq(buf, "abcde");
    close(p[0]);
    close(p[1]);
    return n;
}
static ssize_t do_writev_empty(bool t)
{
    int p[2];
    mkpipe(p);
    struct iovec iov = { "x", 0 };
    ssize_t n = t ? tether_writev(p[1], &iov, 1) : writev(p[1], &iov, 1);
    ssize_t m = t ? tether_writev(p[1], &iov, 0) : writev(p[1], &iov, 0);
    ck_assert_int_eq(m, 0);
    close(p[0]);
    close(p[1]);
    return n;
}
static ssize_t do_writev_epipe(bool t)
{
    signal(SIGPIPE, SIG_IGN);
    int p[2];
    mkpipe(p);
    close(p[0]);
    struct iovec iov = { "x", 1 };
    ssize_t n = t ? tether_writev(p[1], &iov, 1) : writev(p[1], &iov, 1);
    int e = errno;
    close(p[1]);
    errno = e;
    return n;
}
static ssize_t do_writev_nonblock_partial(bool t)
{
    int p[2];
    ck_assert_int_eq(pipe2(p, O_NONBLOCK), 0);
    fill_pipe(p[1]);
    char c;
    ck_assert_int_eq(read(p[0], &c, 1), 1); /* no room for a page: EAGAIN */
    static char big[8192];
    struct iovec iov = { big, sizeof big };
    ssize_t n = t ? tether_writev(p[1], &iov, 1) : writev(p[1], &iov, 1);
    int e = errno;
    close(p[0]);
    close(p[1]);
    errno = e;
    return n;
}

static int tmpfile_with(const char *data)
{
    char path[] = "/tmp/tether-lio-XXXXXX";
    int fd = mkostemp(path, O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    ck_assert_int_eq(write(fd, data, strlen(data)), (ssize_t)strlen(data));
    return fd;
}
static ssize_t do_pread_file(bool t)
{
    int fd = tmpfile_with("0123456789");
    char buf[16] = { 0 };
    ssize_t n = t ? tether_pread(fd, buf, 4, 3) : pread(fd, buf, 4, 3);
    ck_assert_str_eq(buf, "3456");
    ck_assert_int_eq(lseek(fd, 0, SEEK_CUR), 10); /* the offset is untouched */
    ssize_t m = t ? tether_pread(fd, buf, sizeof buf, 8) : pread(fd, buf, sizeof buf, 8);
    ck_assert_int_eq(m, 2); /* short at end of file */
    close(fd);
    return n;
}
static ssize_t do_pread_espipe(bool t)
{
    int p[2];
    mkpipe(p);
    char buf[4];
    ssize_t n = t ? tether_pread(p[0], buf, 4, 0) : pread(p[0], buf, 4, 0);
    int e = errno;
    close(p[0]);
    close(p[1]);
    errno = e;
    return n;
}
static ssize_t do_pread_negative(bool t)
{
    int fd = tmpfile_with("abc");
    char buf[4];
    ssize_t n = t ? tether_pread(fd, buf, 2, -1) : pread(fd, buf, 2, -1);
    int e = errno;
    close(fd);
    errno = e;
    return n;
}
static ssize_t do_pwrite_file(bool t)
{
    int fd = tmpfile_with("..........");
    ssize_t n = t ? tether_pwrite(fd, "XYZ", 3, 4) : pwrite(fd, "XYZ", 3, 4);
    char buf[16] = { 0 };
    ck_assert_int_eq(pread(fd, buf, sizeof buf, 0), 10);
    ck_assert_str_eq(buf, "....XYZ...");
    ck_assert_int_eq(lseek(fd, 0, SEEK_CUR), 10);
    close(fd);
    return n;
}
static ssize_t do_pwrite_badf(bool t)
{
    return t ? tether_pwrite(-1, "x", 1, 0) : pwrite(-1, "x", 1, 0);
}
static ssize_t do_ppoll_ready(bool t)
{
    int p[2], q[2];
    mkpipe(p);
    mkpipe(q);
    ck_assert_int_eq(write(p[1], "x", 1), 1);
    struct pollfd fds[4] = {
        { p[0], POLLIN, 0 }, { q[0], POLLIN, 0 }, { -1, POLLIN, 0 }, { q[1], POLLOUT, 0 }
    };
    struct timespec tmo = { .tv_sec = 1 };
    ssize_t n = t ? tether_ppoll(fds, 4, &tmo, NULL) : ppoll(fds, 4, &tmo, NULL);
    ck_assert_int_eq(fds[0].revents, POLLIN);
    ck_assert_int_eq(fds[1].revents, 0);
    ck_assert_int_eq(fds[2].revents, 0);
    ck_assert_int_eq(fds[3].revents, POLLOUT);
    close(p[0]);
    close(p[1]);
    close(q[0]);
    close(q[1]);
    return n;
}
static ssize_t do_ppoll_timeout(bool t)
{
    int p[2];
    mkpipe(p);
    struct pollfd fds = { p[0], POLLIN, 0 };
    struct timespec tmo = { .tv_nsec = 30000000 };
    tether_time_t t0 = tether_now();
    ssize_t n = t ? tether_ppoll(&fds, 1, &tmo, NULL) : ppoll(&fds, 1, &tmo, NULL);
    ck_assert_int_ge(tether_now() - t0, tether_ms(30));
    struct timespec zero = { 0, 0 };
    ck_assert_int_eq(t ? tether_ppoll(&fds, 1, &zero, NULL) : ppoll(&fds, 1, &zero, NULL), 0);
    close(p[0]);
    close(p[1]);
    return n;
}
static ssize_t do_ppoll_einval(bool t)
{
    struct timespec bad = { .tv_nsec = 1000000000 };
    return t ? tether_ppoll(NULL, 0, &bad, NULL) : ppoll(NULL, 0, &bad, NULL);
}
static ssize_t do_nanosleep_ok(bool t)
{
    struct timespec req = { .tv_nsec = 20000000 }, rem = { 7, 7 };
    tether_time_t t0 = tether_now();
    ssize_t n = t ? tether_nanosleep(&req, &rem) : nanosleep(&req, &rem);
    ck_assert_int_ge(tether_now() - t0, tether_ms(20));
    ck_assert_int_eq(rem.tv_sec, 7); /* untouched on success */
    return n;
}
static ssize_t do_nanosleep_einval(bool t)
{
    struct timespec req = { .tv_nsec = -1 };
    return t ? tether_nanosleep(&req, NULL) : nanosleep(&req, NULL);
}

static const struct {
    const char *name;
    cmp_fn fn;
} same_cases[] = {
    { "readv scatter", do_readv_scatter },
    { "readv eof", do_readv_eof },
    { "readv nonblock", do_readv_nonblock },
    { "readv badf", do_readv_badf },
    { "readv einval", do_readv_einval },
    { "writev gather", do_writev_gather },
    { "writev empty", do_writev_empty },
    { "writev epipe", do_writev_epipe },
    { "writev nonblock full", do_writev_nonblock_partial },
    { "pread file", do_pread_file },
    { "pread espipe", do_pread_espipe },
    { "pread negative offset", do_pread_negative },
    { "pwrite file", do_pwrite_file },
    { "pwrite badf", do_pwrite_badf },
    { "ppoll ready", do_ppoll_ready },
    { "ppoll timeout", do_ppoll_timeout },
    { "ppoll einval", do_ppoll_einval },
    { "nanosleep", do_nanosleep_ok },
    { "nanosleep einval", do_nanosleep_einval },
};

START_TEST(same_as_raw_calls)
{
    th_baseline base = th_baseline_take();
    same_as_raw(same_cases[_i].fn, same_cases[_i].name);
    th_baseline_check(base);
}
END_TEST

/* pread/pwrite cannot block on anything pollable here (pipes and sockets
 * refuse them): their cancellation point is the check before the call. */
START_TEST(pread_pwrite_cancel_before)
{
    th_baseline base = th_baseline_take();
    int fd = tmpfile_with("abcdef");
    tether_token *tok = lu_token(TETHER_NEVER);
    tether_token_cancel(tok, 0);
    ck_assert_int_eq(tether_token_enter(tok), 0);
    char buf[4];
    errno = 0;
    ck_assert_int_eq(tether_pread(fd, buf, 2, 0), -1);
    ck_assert_int_eq(errno, ECANCELED);
    errno = 0;
    ck_assert_int_eq(tether_pwrite(fd, "zz", 2, 0), -1);
    ck_assert_int_eq(errno, ECANCELED);
    ck_assert_int_eq(tether_token_leave(tok), 0);
    ck_assert_int_eq(pread(fd, buf, 2, 0), 2);
    ck_assert_int_eq(memcmp(buf, "ab", 2), 0); /* nothing written */
    close(fd);
    lu_free(tok);
    th_baseline_check(base);
}
END_TEST

/* ------------------------------------------------------------ partial transfers */

enum { BIG = 1 << 20 };
static char *big_src;

static ssize_t t_writev_big(void *a)
{
    (void)a;
    struct iovec iov[3] = { { big_src, 100 },
                            { big_src + 100, BIG / 2 - 100 },
                            { big_src + BIG / 2, BIG / 2 } };
    ssize_t n = tether_writev(F.p[1], iov, 3);
    ck_assert_int_eq(iov[1].iov_len, BIG / 2 - 100); /* the caller's iovecs are untouched */
    return n;
}
static size_t wa_moved;
static ssize_t t_write_all_big(void *a)
{
    (void)a;
    return tether_write_all(F.p[1], big_src, BIG, &wa_moved);
}

/* A big write to a slow reader, canceled part-way: what it reports is
 * exactly what the reader gets. */
static void write_partial(lu_fn fn, bool is_all)
{
    th_baseline base = th_baseline_take();
    mkpipe(F.p);
    big_src = malloc(BIG);
    for (size_t i = 0; i < BIG; i++)
        big_src[i] = (char)(i * 13);
    tether_token *tok = lu_token(TETHER_NEVER);
    lu_thread th;
    lu_start_blocked(&th, tok, fn, NULL);
    char *got = malloc(BIG);
    size_t have = 0;
    ssize_t n = read(F.p[0], got, 1000);
    ck_assert_int_gt(n, 0);
    have += (size_t)n;
    ck_assert_int_eq(th_wait_blocked(th.tid), 0);
    tether_token_cancel(tok, 0);
    lu_join(&th);
    size_t reported;
    if (is_all) {
        ck_assert_int_eq(th.ret, -1);
        ck_assert_int_eq(th.err, ECANCELED);
        reported = wa_moved;
    } else {
        ck_assert_int_gt(th.ret, 0);
        reported = (size_t)th.ret;
    }
    ck_assert_uint_gt(reported, 0);
    ck_assert_uint_lt(reported, BIG);
    close(F.p[1]);
    while ((n = read(F.p[0], got + have, BIG - have)) > 0)
        have += (size_t)n;
    ck_assert_uint_eq(have, reported);
    ck_assert_int_eq(memcmp(got, big_src, have), 0);
    close(F.p[0]);
    free(got);
    free(big_src);
    lu_free(tok);
    th_baseline_check(base);
}

START_TEST(writev_cancel_reports_partial)
{
    write_partial(t_writev_big, false);
}
END_TEST

START_TEST(write_all_cancel_reports_moved)
{
    write_partial(t_write_all_big, true);
}
END_TEST

static size_t ra_moved;
static char ra_buf[100];
static ssize_t t_read_all_moved(void *a)
{
    (void)a;
    return tether_read_all(F.p[0], ra_buf, sizeof ra_buf, &ra_moved);
}

START_TEST(read_all_whole_eof_and_cancel)
{
    th_baseline base = th_baseline_take();
    tether_token *tok = lu_token(TETHER_NEVER);
    /* Pieces until the buffer is full. */
    mkpipe(F.p);
    lu_thread th;
    lu_start_blocked(&th, tok, t_read_all_moved, NULL);
    char data[100];
    memset(data, 'q', sizeof data);
    ck_assert_int_eq(write(F.p[1], data, 30), 30);
    ck_assert_int_eq(th_wait_blocked(th.tid), 0);
    ck_assert_int_eq(write(F.p[1], data, 70), 70);
    lu_join(&th);
    ck_assert_int_eq(th.ret, 100);
    ck_assert_uint_eq(ra_moved, 100);
    /* End of file first: the short count. */
    ck_assert_int_eq(write(F.p[1], data, 40), 40);
    close(F.p[1]);
    ck_assert_int_eq(tether_read_all(F.p[0], ra_buf, sizeof ra_buf, &ra_moved), 40);
    ck_assert_uint_eq(ra_moved, 40);
    close(F.p[0]);
    /* Canceled after some arrived: -1/ECANCELED, moved says how much. */
    mkpipe(F.p);
    ck_assert_int_eq(write(F.p[1], data, 25), 25);
    lu_start_blocked(&th, tok, t_read_all_moved, NULL);
    tether_token_cancel(tok, 0);
    lu_join(&th);
    ck_assert_int_eq(th.ret, -1);
    ck_assert_int_eq(th.err, ECANCELED);
    ck_assert_uint_eq(ra_moved, 25);
    teardown_pipe();
    /* write_all, the whole buffer. */
    mkpipe(F.p);
    size_t moved = 0;
    ck_assert_int_eq(tether_write_all(F.p[1], data, 100, &moved), 100);
    ck_assert_uint_eq(moved, 100);
    teardown_pipe();
    lu_free(tok);
    th_baseline_check(base);
}
END_TEST

/* ------------------------------------------------------------ timeouts and deadlines */

/* ppoll: the caller's timeout and the token's deadline, whichever first. */
START_TEST(ppoll_timeout_vs_deadline)
{
    th_baseline base = th_baseline_take();
    mkpipe(F.p);
    struct pollfd p = { F.p[0], POLLIN, 0 };
    /* Deadline first: ETIMEDOUT, not before it. */
    tether_time_t deadline = tether_deadline_after(tether_ms(40));
    tether_token *tok = lu_token(deadline);
    ck_assert_int_eq(tether_token_enter(tok), 0);
    struct timespec long_tmo = { .tv_sec = 10 };
    errno = 0;
    ck_assert_int_eq(tether_ppoll(&p, 1, &long_tmo, NULL), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_ge(tether_now(), deadline);
    ck_assert_int_eq(tether_token_leave(tok), 0);
    lu_free(tok);
    /* Timeout first: 0, as ppoll, and the token is untouched. */
    tok = lu_token(tether_deadline_after(tether_sec(10)));
    ck_assert_int_eq(tether_token_enter(tok), 0);
    struct timespec short_tmo = { .tv_nsec = 30000000 };
    tether_time_t t0 = tether_now();
    ck_assert_int_eq(tether_ppoll(&p, 1, &short_tmo, NULL), 0);
    ck_assert_int_ge(tether_now() - t0, tether_ms(30));
    ck_assert_int_eq(tether_check(), 0);
    ck_assert_int_eq(tether_token_leave(tok), 0);
    lu_free(tok);
    teardown_pipe();
    th_baseline_check(base);
}
END_TEST

/* ppoll's signal mask applies while waiting: with SIGUSR1 unblocked only
 * inside the call, the handler interrupts exactly that call. */
static ssize_t t_ppoll_masked(void *a)
{
    (void)a;
    sigset_t block, during;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &block, &during);
    sigdelset(&during, SIGUSR1);
    struct pollfd p = { .fd = F.p[0], .events = POLLIN };
    return tether_ppoll(&p, 1, NULL, &during);
}

START_TEST(ppoll_sigmask)
{
    th_baseline base = th_baseline_take();
    lu_eintr_handler();
    mkpipe(F.p);
    tether_token *tok = lu_token(TETHER_NEVER);
    lu_thread th;
    lu_start(&th, tok, t_ppoll_masked, NULL);
    lu_interrupt(&th);
    ck_assert_int_eq(th.ret, -1);
    ck_assert_int_eq(th.err, EINTR);
    teardown_pipe();
    lu_free(tok);
    th_baseline_check(base);
}
END_TEST

/* nanosleep reports the time left when it is cut short. */
START_TEST(nanosleep_remaining)
{
    th_baseline base = th_baseline_take();
    tether_time_t deadline = tether_deadline_after(tether_ms(50));
    tether_token *tok = lu_token(deadline);
    ck_assert_int_eq(tether_token_enter(tok), 0);
    struct timespec req = { .tv_sec = 2 }, rem = { 0, 0 };
    errno = 0;
    tether_time_t before = tether_now();
    ck_assert_int_eq(tether_nanosleep(&req, &rem), -1);
    tether_time_t after = tether_now();
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_ge(after, deadline);
    /* The sleep would have ended in [before, after] + 2 s; it was cut short
     * in [deadline, after]. */
    int64_t left = (int64_t)rem.tv_sec * 1000000000 + rem.tv_nsec;
    ck_assert_int_le(left, after + tether_sec(2) - deadline);
    ck_assert_int_ge(left, before + tether_sec(2) - after);
    ck_assert_int_eq(tether_token_leave(tok), 0);
    lu_free(tok);
    /* Interrupted by a handler: EINTR and the rest, as nanosleep. */
    lu_eintr_handler();
    tok = lu_token(TETHER_NEVER);
    lu_thread th;
    lu_start(&th, tok, t_nanosleep, NULL);
    lu_interrupt(&th);
    ck_assert_int_eq(th.ret, -1);
    ck_assert_int_eq(th.err, EINTR);
    ck_assert_int_gt(ns_rem.tv_sec, 20);
    ck_assert_int_le(ns_rem.tv_sec, 30);
    lu_free(tok);
    th_baseline_check(base);
}
END_TEST

START_TEST(no_token_passthrough)
{
    th_baseline base = th_baseline_take();
    ck_assert_ptr_null(tether_current());
    mkpipe(F.p);
    struct iovec iov = { "abc", 3 };
    ck_assert_int_eq(tether_writev(F.p[1], &iov, 1), 3);
    char buf[4];
    struct iovec riov = { buf, sizeof buf };
    ck_assert_int_eq(tether_readv(F.p[0], &riov, 1), 3);
    struct pollfd p = { F.p[0], POLLIN, 0 };
    struct timespec zero = { 0, 0 };
    ck_assert_int_eq(tether_ppoll(&p, 1, &zero, NULL), 0);
    struct timespec req = { 0, 1000 };
    ck_assert_int_eq(tether_nanosleep(&req, NULL), 0);
    teardown_pipe();
    th_baseline_check(base);
}
END_TEST

static Suite *legacy_io_suite(void)
{
    Suite *s = suite_create("legacy_io");
    TCase *tc = tcase_create("blockers");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_loop_test(tc, blocker_cancel_before, 0, NBLOCKERS);
    tcase_add_loop_test(tc, blocker_cancel_blocked, 0, NBLOCKERS);
    tcase_add_loop_test(tc, blocker_deadline, 0, NBLOCKERS);
    tcase_add_loop_test(tc, blocker_eintr, 0, NBLOCKERS);
    tcase_add_test(tc, read_all_retries_eintr);
    suite_add_tcase(s, tc);

    tc = tcase_create("same_as_raw");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_loop_test(tc, same_as_raw_calls, 0, (int)(sizeof same_cases / sizeof same_cases[0]));
    tcase_add_test(tc, pread_pwrite_cancel_before);
    tcase_add_test(tc, no_token_passthrough);
    suite_add_tcase(s, tc);

    tc = tcase_create("partial");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, writev_cancel_reports_partial);
    tcase_add_test(tc, write_all_cancel_reports_moved);
    tcase_add_test(tc, read_all_whole_eof_and_cancel);
    suite_add_tcase(s, tc);

    tc = tcase_create("time");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, ppoll_timeout_vs_deadline);
    tcase_add_test(tc, ppoll_sigmask);
    tcase_add_test(tc, nanosleep_remaining);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(legacy_io_suite());
}
