/*
 * The cancellable primitives on their success path: with no token, a live
 * token or a live token with a far deadline, tether_sleep_for/_until,
 * tether_read, tether_write and tether_poll behave exactly like the raw calls
 * (same return, same errno, same bytes) on pipes, files and sockets.
 */
#define _GNU_SOURCE
#include "io_fixtures.h"

/* A descriptor number that is not open (and that no new fd will take soon,
 * unlike a just-closed one, which the next eventfd would reuse). */
static int unused_fd(void)
{
    int fd = 900;
    while (fcntl(fd, F_GETFD) != -1)
        fd++;
    return fd;
}

/* Enter a token (or none) on the calling thread for the span of a test. */
static tether_token *mode_begin(int mode)
{
    ck_assert_ptr_null(tether_current());
    if (mode == MODE_NONE)
        return NULL;
    tether_time_t dl =
        mode == MODE_DEADLINE ? tether_deadline_after(tether_sec(3600)) : TETHER_NEVER;
    tether_token *t = new_token(NULL, dl);
    enter(t);
    return t;
}

/* Leave and free it; the success path must never have canceled it. */
static void mode_end(tether_token *t)
{
    if (!t)
        return;
    ck_assert_int_eq(tether_token_check(t), 0);
    leave(t);
    token_free(t);
}

/* ======================================================================
 * No token / live token: the raw call's behaviour
 * ====================================================================== */

START_TEST(test_sleep_like_raw)
{
    th_baseline b = th_baseline_take();
    tether_token *t = mode_begin(_i);

    /* Zero and negative durations, and instants already past, return 0 at once. */
    tether_time_t t0 = tether_now();
    ck_assert_int_eq(tether_sleep_for(0), 0);
    ck_assert_int_eq(tether_sleep_for(-5), 0);
    ck_assert_int_eq(tether_sleep_for(INT64_MIN), 0);
    ck_assert_int_eq(tether_sleep_until(0), 0);
    ck_assert_int_eq(tether_sleep_until(-1), 0);
    ck_assert_int_eq(tether_sleep_until(tether_now() - tether_ms(5)), 0);
    ck_assert_int_le(tether_now() - t0, th_bound_ns(500));

    /* A real sleep: never shorter than asked. */
    int64_t d = tether_ms(20);
    t0 = tether_now();
    ck_assert_int_eq(tether_sleep_for(d), 0);
    tether_time_t el = tether_now() - t0;
    ck_assert_int_ge(el, d);
    ck_assert_int_le(el, d + th_bound_ns(1000));

    tether_time_t when = tether_now() + tether_ms(20);
    ck_assert_int_eq(tether_sleep_until(when), 0);
    tether_time_t now = tether_now();
    ck_assert_int_ge(now, when);
    ck_assert_int_le(now - when, th_bound_ns(1000));

    mode_end(t);
    th_baseline_check(b);
}
END_TEST

/* A non-destructive case: tether_read and read(2) agree. */
static void read_agrees(int fd, size_t count, ssize_t want, int want_errno)
{
    char buf[64];
    errno = 0;
    ssize_t raw = read(fd, buf, count);
    int raw_errno = errno;
    errno = 0;
    ssize_t got = tether_read(fd, buf, count);
    int got_errno = errno;
    ck_assert_msg(raw == want && (want >= 0 || raw_errno == want_errno),
                  "read(2) on fd %d: %zd errno %s (test assumption broken)", fd, raw,
                  strerror(raw_errno));
    ck_assert_msg(got == raw && (raw >= 0 || got_errno == raw_errno),
                  "fd %d: tether_read %zd errno %s; read(2) %zd errno %s", fd, got,
                  strerror(got_errno), raw, strerror(raw_errno));
}

START_TEST(test_read_like_raw)
{
    th_baseline b = th_baseline_take();
    tether_token *t = mode_begin(_i);
    int p[2];
    xpipe(p);
    char buf[100];

    read_agrees(-1, 1, -1, EBADF);
    read_agrees(unused_fd(), 1, -1, EBADF);
    read_agrees(p[1], 1, -1, EBADF); /* the write end */
    read_agrees(p[0], 0, 0, 0);      /* count 0: 0 at once, even on an empty pipe */
    set_nonblock(p[0], true);
    read_agrees(p[0], 10, -1, EAGAIN);
    set_nonblock(p[0], false);

    /* Partial reads: what is there, no more, in order. */
    ck_assert_int_eq(write(p[1], "hello world", 11), 11);
    ck_assert_int_eq(tether_read(p[0], buf, 5), 5);
    ck_assert_mem_eq(buf, "hello", 5);
    ck_assert_int_eq(tether_read(p[0], buf, sizeof buf), 6);
    ck_assert_mem_eq(buf, " world", 6);

    /* O_NONBLOCK with data reads it. */
    ck_assert_int_eq(write(p[1], "xyz", 3), 3);
    set_nonblock(p[0], true);
    ck_assert_int_eq(tether_read(p[0], buf, sizeof buf), 3);
    ck_assert_mem_eq(buf, "xyz", 3);
    set_nonblock(p[0], false);

    /* Bad buffer. */
    ck_assert_int_eq(write(p[1], "q", 1), 1);
    ASSERT_FAILS(tether_read(p[0], NULL, 10), EFAULT);
    drain(p[0], 0, false);

    /* End of file. */
    xclose(p[1]);
    ck_assert_int_eq(tether_read(p[0], buf, sizeof buf), 0);
    ck_assert_int_eq(tether_read(p[0], buf, sizeof buf), 0);
    xclose(p[0]);

    mode_end(t);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_write_like_raw)
{
    th_baseline b = th_baseline_take();
    signal(SIGPIPE, SIG_IGN);
    tether_token *t = mode_begin(_i);
    int p[2];
    xpipe(p);

    ASSERT_FAILS(tether_write(-1, "x", 1), EBADF);
    ASSERT_FAILS(tether_write(p[0], "x", 1), EBADF); /* the read end */
    ck_assert_int_eq(tether_write(p[1], "x", 0), 0);
    ck_assert_int_eq(pending(p[0]), 0);
    ck_assert_int_eq(tether_write(p[1], "abc", 3), 3);
    ck_assert_int_eq(pending(p[0]), 3);
    ASSERT_FAILS(tether_write(p[1], NULL, 3), EFAULT);
    ck_assert_int_eq(pending(p[0]), 3);

    /* No reader: EPIPE (SIGPIPE ignored), as write(2). */
    int q[2];
    xpipe(q);
    xclose(q[0]);
    ASSERT_FAILS(write(q[1], "x", 1), EPIPE);
    ASSERT_FAILS(tether_write(q[1], "x", 1), EPIPE);
    xclose(q[1]);

    close_pair(p);
    mode_end(t);
    th_baseline_check(b);
}
END_TEST

/* A thread that writes `len` pattern bytes with tether_write under `tok`. */
struct pump {
    int fd;
    size_t len;
    tether_token *tok;
    const unsigned char *src;
    ssize_t ret;
    int err;
    pthread_t thread;
};

static void *pump_main(void *arg)
{
    struct pump *p = arg;
    if (p->tok)
        enter(p->tok);
    errno = 0;
    p->ret = tether_write(p->fd, p->src, p->len);
    p->err = errno;
    if (p->tok)
        leave(p->tok);
    return NULL;
}

static void *sink_main(void *arg)
{
    struct sink *s = arg;
    unsigned char buf[7919]; /* odd size: reads straddle the writer's chunks */
    s->ok = true;
    while (s->got < s->len) {
        ssize_t n = read(s->fd, buf, sizeof buf);
        if (n <= 0)
            break;
        if (!pattern_ok(buf, s->got, (size_t)n))
            s->ok = false;
        s->got += (size_t)n;
    }
    return NULL;
}

START_TEST(test_write_large_drained)
{
    /* A buffer 64x the pipe's capacity, drained by another thread: a
     * blocking write writes all of it, in order. */
    th_baseline b = th_baseline_take();
    tether_token *t = mode_begin(_i);
    int p[2];
    xpipe(p);
    size_t len = (size_t)fcntl(p[1], F_GETPIPE_SZ) * 64 + 123;
    unsigned char *src = pattern(len);
    struct sink s = { .fd = p[0], .len = len };
    ck_assert_int_eq(pthread_create(&s.thread, NULL, sink_main, &s), 0);

    errno = 0;
    ssize_t w = tether_write(p[1], src, len);
    ck_assert_msg(w == (ssize_t)len, "tether_write returned %zd of %zu (errno %s)", w, len,
                  strerror(errno));
    ck_assert_int_eq(pthread_join(s.thread, NULL), 0);
    ck_assert_int_eq(s.got, len);
    ck_assert(s.ok);

    free(src);
    close_pair(p);
    mode_end(t);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_poll_like_raw)
{
    th_baseline b = th_baseline_take();
    tether_token *t = mode_begin(_i);
    int empty[2], data[2], hup[2], err[2];
    xpipe(empty);
    xpipe(data);
    xpipe(hup);
    xpipe(err);
    ck_assert_int_eq(write(data[1], "d", 1), 1);
    xclose(hup[1]);
    xclose(err[0]);
    int closed = unused_fd();

    /* Timeout 0 on nothing ready: 0 at once. */
    struct pollfd one = { .fd = empty[0], .events = POLLIN, .revents = 0x77 };
    tether_time_t t0 = tether_now();
    ck_assert_int_eq(tether_poll(&one, 1, 0), 0);
    ck_assert_int_eq(one.revents, 0);
    ck_assert_int_le(tether_now() - t0, th_bound_ns(500));

    /* Ready count and revents, for every kind of entry. */
    struct pollfd set[] = {
        { .fd = data[0], .events = POLLIN },           /* POLLIN */
        { .fd = data[1], .events = POLLOUT },          /* POLLOUT */
        { .fd = empty[0], .events = POLLIN },          /* nothing */
        { .fd = -1, .events = POLLIN },                /* ignored */
        { .fd = closed, .events = POLLIN },            /* POLLNVAL */
        { .fd = hup[0], .events = POLLIN },            /* POLLHUP */
        { .fd = err[1], .events = POLLOUT },           /* POLLERR */
        { .fd = data[0], .events = POLLIN | POLLOUT }, /* same fd twice */
        { .fd = empty[1], .events = 0 },               /* no events asked */
    };
    nfds_t n = sizeof set / sizeof set[0];
    for (nfds_t k = 1; k <= n; k++) {
        poll_agrees(set, k, 0);
        poll_agrees(set, k, -1);
        poll_agrees(set, k, 1000);
    }
    poll_agrees(&set[2], 1, -1); /* nothing ready: both time out (10 ms) */

    /* A timeout: 0, revents cleared, never early. */
    one.revents = 0x7fff;
    t0 = tether_now();
    ck_assert_int_eq(tether_poll(&one, 1, 30), 0);
    tether_time_t el = tether_now() - t0;
    ck_assert_int_eq(one.revents, 0);
    ck_assert_int_ge(el, tether_ms(30));
    ck_assert_int_le(el, tether_ms(30) + th_bound_ns(1000));

    /* No descriptors: a sleep of the timeout. */
    t0 = tether_now();
    ck_assert_int_eq(tether_poll(NULL, 0, 20), 0);
    ck_assert_int_ge(tether_now() - t0, tether_ms(20));
    ck_assert_int_eq(tether_poll(NULL, 0, 0), 0);

    close_pair(empty);
    close_pair(data);
    xclose(hup[0]);
    xclose(err[1]);
    mode_end(t);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_poll_sizes_like_raw)
{
    /* Random arrays of every size around the 16-entry stack buffer and well
     * beyond it (the heap path): same count and revents as poll(2). */
    th_baseline b = th_baseline_take();
    uint64_t rng = th_seed("poll_sizes_like_raw");
    tether_token *t = mode_begin(_i);
    int data[2], empty[2], full[2], hup[2], err[2];
    xpipe(data);
    xpipe(empty);
    xpipe(full);
    xpipe(hup);
    xpipe(err);
    ck_assert_int_eq(write(data[1], "d", 1), 1);
    fill(full[1]);
    xclose(hup[1]);
    xclose(err[0]);
    const int pool[] = { data[0], data[1], empty[0], empty[1],    full[0], full[1],
                         hup[0],  err[1],  -1,       unused_fd(), -5 };
    const short evs[] = { POLLIN, POLLOUT, POLLIN | POLLOUT, 0, POLLPRI | POLLIN };
    const nfds_t sizes[] = { 1, 2, 14, 15, 16, 17, 31, 64, 200, 1000 };
    struct pollfd *fds = calloc(1000, sizeof *fds);
    ck_assert_ptr_nonnull(fds);
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        for (int round = 0; round < 4; round++) {
            /* round 3: only not-ready entries, so both time out */
            for (nfds_t i = 0; i < sizes[s]; i++) {
                if (round == 3)
                    fds[i] = (struct pollfd){ .fd = i % 2 ? empty[0] : -1, .events = POLLIN };
                else
                    fds[i] = (struct pollfd){
                        .fd = pool[th_rand(&rng) % (sizeof pool / sizeof pool[0])],
                        .events = evs[th_rand(&rng) % (sizeof evs / sizeof evs[0])],
                    };
            }
            poll_agrees(fds, sizes[s], round == 0 ? 0 : round == 1 ? -1 : 500);
        }
    }
    free(fds);
    close_pair(data);
    close_pair(empty);
    close_pair(full);
    xclose(hup[0]);
    xclose(err[1]);
    mode_end(t);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_poll_null_fds)
{
    /* fds NULL with nfds > 0: EFAULT at once, as poll(2); NULL with 0 is fine. */
    th_baseline b = th_baseline_take();
    tether_token *t = mode_begin(_i);
    struct pollfd *volatile null_fds = NULL; /* hidden from -Wnonnull */
    tether_time_t t0 = tether_now();
    ASSERT_FAILS(poll(null_fds, 1, -1), EFAULT);
    ASSERT_FAILS(tether_poll(NULL, 1, -1), EFAULT);
    ASSERT_FAILS(tether_poll(NULL, 1, 0), EFAULT);
    ASSERT_FAILS(tether_poll(NULL, 1, 100), EFAULT);
    ASSERT_FAILS(tether_poll(NULL, 3, -1), EFAULT);
    ck_assert_int_le(tether_now() - t0, th_bound_ns(500));
    mode_end(t);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_nonblocking_like_raw)
{
    /* O_NONBLOCK descriptors keep EAGAIN and partial writes, never block. */
    th_baseline b = th_baseline_take();
    tether_token *t = mode_begin(_i);
    int p[2], raw[2];
    xpipe(p);
    xpipe(raw);
    set_nonblock(p[0], true);
    set_nonblock(p[1], true);
    set_nonblock(raw[1], true);
    char buf[16];
    tether_time_t t0 = tether_now();

    ASSERT_FAILS(tether_read(p[0], buf, sizeof buf), EAGAIN);
    size_t cap = fill(p[1]);
    ASSERT_FAILS(tether_write(p[1], "x", 1), EAGAIN);
    ck_assert_int_eq(pending(p[0]), (int)cap);

    /* A write bigger than the room left: the same partial count as write(2)
     * on a pipe prepared the same way. */
    ck_assert_int_eq(fill(raw[1]), cap);
    char *junk = calloc(1, 20000);
    ck_assert_ptr_nonnull(junk);
    read_exact(p[0], junk, 4096 + 100);
    read_exact(raw[0], junk, 4096 + 100);
    ssize_t want = write(raw[1], junk, 20000);
    ck_assert_int_gt(want, 0);
    ck_assert_int_lt(want, 20000);
    ck_assert_int_eq(tether_write(p[1], junk, 20000), want);
    free(junk);
    ck_assert_int_le(tether_now() - t0, th_bound_ns(1000));

    close_pair(p);
    close_pair(raw);
    mode_end(t);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_regular_file)
{
    /* A temp file: writes land, reads return them, EOF is 0, the file
     * position moves as with read(2)/write(2). */
    th_baseline b = th_baseline_take();
    tether_token *t = mode_begin(_i);
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char path[512];
    snprintf(path, sizeof path, "%s/tether-io-XXXXXX", dir);
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(unlink(path), 0);

    size_t len = (1u << 20) + 333;
    unsigned char *src = pattern(len), *dst = calloc(1, len + 100);
    ck_assert_ptr_nonnull(dst);
    ck_assert_int_eq(tether_write(fd, src, 1000), 1000);
    ck_assert_int_eq(tether_write(fd, src + 1000, len - 1000), len - 1000);
    ck_assert_int_eq(lseek(fd, 0, SEEK_CUR), len);
    ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
    size_t got = 0;
    for (;;) {
        ssize_t n = tether_read(fd, dst + got, 4093);
        ck_assert_int_ge(n, 0);
        if (n == 0)
            break;
        got += (size_t)n;
        ck_assert_int_le(got, len);
    }
    ck_assert_int_eq(got, len);
    ck_assert(memcmp(src, dst, len) == 0);
    ck_assert_int_eq(tether_read(fd, dst, 100), 0);
    ck_assert_int_eq(lseek(fd, -10, SEEK_END), len - 10);
    ck_assert_int_eq(tether_read(fd, dst, 100), 10);
    ck_assert_mem_eq(dst, src + len - 10, 10);

    /* A read-only descriptor refuses writes. */
    int ro = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(ro, 0);
    ASSERT_FAILS(tether_write(ro, "x", 1), EBADF);
    xclose(ro);

    free(src);
    free(dst);
    xclose(fd);
    mode_end(t);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_socket_stream)
{
    th_baseline b = th_baseline_take();
    tether_token *t = mode_begin(_i);
    int s[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s), 0);
    char buf[64];

    ck_assert_int_eq(tether_write(s[0], "hello world", 11), 11);
    ck_assert_int_eq(tether_read(s[1], buf, 5), 5);
    ck_assert_mem_eq(buf, "hello", 5);
    ck_assert_int_eq(tether_read(s[1], buf, sizeof buf), 6);
    ck_assert_mem_eq(buf, " world", 6);
    ck_assert_int_eq(tether_read(s[1], buf, 0), 0);

    /* 4 MiB one way while this thread reads (with tether_read) the other. */
    size_t len = (4u << 20) + 77;
    unsigned char *src = pattern(len), *dst = malloc(len);
    ck_assert_ptr_nonnull(dst);
    struct pump p = { .fd = s[0], .len = len, .tok = t, .src = src };
    ck_assert_int_eq(pthread_create(&p.thread, NULL, pump_main, &p), 0);
    size_t got = 0;
    while (got < len) {
        ssize_t n = tether_read(s[1], dst + got, len - got < 6007 ? len - got : 6007);
        ck_assert_int_gt(n, 0);
        got += (size_t)n;
    }
    ck_assert_int_eq(pthread_join(p.thread, NULL), 0);
    ck_assert_int_eq(p.ret, len);
    ck_assert(memcmp(src, dst, len) == 0);

    /* O_NONBLOCK: EAGAIN. Shut down: end of file. */
    set_nonblock(s[1], true);
    ASSERT_FAILS(tether_read(s[1], buf, sizeof buf), EAGAIN);
    set_nonblock(s[1], false);
    ck_assert_int_eq(shutdown(s[0], SHUT_WR), 0);
    ck_assert_int_eq(tether_read(s[1], buf, sizeof buf), 0);

    free(src);
    free(dst);
    close_pair(s);
    mode_end(t);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_socket_dgram)
{
    /* Datagram boundaries and truncation are read(2)'s. */
    th_baseline b = th_baseline_take();
    tether_token *t = mode_begin(_i);
    int s[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, s), 0);
    char buf[100];
    ck_assert_int_eq(tether_write(s[0], "0123456789", 10), 10);
    ck_assert_int_eq(tether_write(s[0], "abcdefghijklmnopqrst", 20), 20);
    ck_assert_int_eq(tether_write(s[0], "XYZ", 3), 3);
    ck_assert_int_eq(tether_read(s[1], buf, sizeof buf), 10);
    ck_assert_mem_eq(buf, "0123456789", 10);
    ck_assert_int_eq(tether_read(s[1], buf, 5), 5); /* the rest of it is discarded */
    ck_assert_mem_eq(buf, "abcde", 5);
    ck_assert_int_eq(tether_read(s[1], buf, sizeof buf), 3);
    ck_assert_mem_eq(buf, "XYZ", 3);
    close_pair(s);
    mode_end(t);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_wakes_when_ready)
{
    /* A blocked read, write or poll completes when the pipe becomes ready,
     * under each token mode (_i / 3: read, write, poll). */
    static const int kinds[] = { OP_READ, OP_WRITE, OP_POLL };
    th_baseline b = th_baseline_take();
    int kind = kinds[_i / MODE_COUNT], mode = _i % MODE_COUNT;
    struct op o;
    op_setup(&o, kind, false);
    tether_token *t =
        mode == MODE_NONE
            ? NULL
            : new_token(NULL, mode == MODE_DEADLINE ? tether_deadline_after(tether_sec(3600))
                                                    : TETHER_NEVER);
    struct runner r;
    runner_start(&r, &o, t);
    runner_wait_blocked(&r);
    unsigned char room[8192];
    if (kind == OP_WRITE) {
        read_exact(o.p[0], room, sizeof room);
    } else {
        ck_assert_int_eq(write(o.p[1], "hello", 5), 5);
    }
    ck_assert(sem_wait_bounded(&r.done, th_bound_ns(5000)));
    runner_join(&r);
    switch (kind) {
    case OP_READ:
        ck_assert_int_eq(r.ret, 5);
        ck_assert_mem_eq(o.buf, "hello", 5);
        break;
    case OP_WRITE:
        ck_assert_int_eq(r.ret, 1);
        ck_assert_int_eq(pending(o.p[0]), (int)(o.in_pipe - sizeof room + 1));
        break;
    default:
        ck_assert_int_eq(r.ret, 1);
        ck_assert_int_eq(o.revents, POLLIN);
        break;
    }
    if (t) {
        ck_assert_int_eq(tether_token_check(t), 0);
        token_free(t);
    }
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("io_like_raw");
    TCase *tc;

    tc = tcase_create("like_raw");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_loop_test(tc, test_sleep_like_raw, 0, MODE_COUNT);
    tcase_add_loop_test(tc, test_read_like_raw, 0, MODE_COUNT);
    tcase_add_loop_test(tc, test_write_like_raw, 0, MODE_COUNT);
    tcase_add_loop_test(tc, test_write_large_drained, 0, MODE_COUNT);
    tcase_add_loop_test(tc, test_poll_like_raw, 0, MODE_COUNT);
    tcase_add_loop_test(tc, test_poll_sizes_like_raw, 0, MODE_COUNT);
    tcase_add_loop_test(tc, test_poll_null_fds, 0, MODE_COUNT);
    tcase_add_loop_test(tc, test_nonblocking_like_raw, 0, MODE_COUNT);
    tcase_add_loop_test(tc, test_regular_file, 0, MODE_COUNT);
    tcase_add_loop_test(tc, test_socket_stream, 0, MODE_COUNT);
    tcase_add_loop_test(tc, test_socket_dgram, 0, MODE_COUNT);
    tcase_add_loop_test(tc, test_wakes_when_ready, 0, 3 * MODE_COUNT);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
