/*
 * Cancellable primitives: tether_sleep_for, tether_sleep_until, tether_read,
 * tether_write and tether_poll (tether.h, "Cancellable primitives").
 *
 * What the contract promises, and what these tests hold it to:
 *  - with no current token each one is the raw call (same return, same errno);
 *  - with a live token the success path is the raw call's too;
 *  - a cancelled (or expired) token fails the call at once, without blocking
 *    and without moving a byte, even when the descriptor is ready;
 *  - a blocked call wakes on cancellation of its token or of any ancestor,
 *    and at the effective deadline, never before it;
 *  - bytes already moved are returned, and the next call reports the cancel;
 *  - O_NONBLOCK descriptors keep their EAGAIN; signal handlers give EINTR;
 *  - sleepers hold no descriptor, fd waiters share one eventfd per token.
 *
 * Many tests are loop tests: over the five primitives (enum op_kind), or over
 * "no token / live token / live token with a far deadline" (enum mode), so
 * one body checks that the token changes nothing on the success path.
 */
#define _GNU_SOURCE
#include "support.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Sanitizers change what "many threads" can mean (TSan cannot map 10,000
 * thread traces here, and creates threads ~50x slower). */

/* A sleep that only cancellation, a deadline or a signal can end. */
#define DAY tether_sec(86400)

/* ======================================================================
 * Small utilities
 * ====================================================================== */

/* Assert that `expr` fails with -1 and errno `e`, printing both on mismatch. */
#define ASSERT_FAILS(expr, e)                                                                   \
    do {                                                                                        \
        errno = 0;                                                                              \
        ssize_t r_ = (ssize_t)(expr);                                                           \
        int e_ = errno;                                                                         \
        ck_assert_msg(r_ == -1 && e_ == (e), "%s: returned %zd errno %d (%s); expected -1 %s", \
                      #expr, r_, e_, strerror(e_), strerror(e));                                \
    } while (0)

static void xpipe(int p[2])
{
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
}

static void xclose(int fd)
{
    ck_assert_int_eq(close(fd), 0);
}

static void close_pair(int p[2])
{
    xclose(p[0]);
    xclose(p[1]);
}

static void set_nonblock(int fd, bool on)
{
    int fl = fcntl(fd, F_GETFL);
    ck_assert_int_ge(fl, 0);
    ck_assert_int_eq(fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK), 0);
}

/* Bytes waiting to be read in a pipe, FIFO or stream socket. */
static int pending(int fd)
{
    int n = -1;
    ck_assert_int_eq(ioctl(fd, FIONREAD, &n), 0);
    return n;
}

/* Write zeros until a write of even one byte would block; returns the count.
 * Descending chunk sizes so that a partly used last page fills quickly. */
static size_t fill(int wfd)
{
    static const char zeros[65536];
    int fl = fcntl(wfd, F_GETFL);
    ck_assert_int_ge(fl, 0);
    ck_assert_int_eq(fcntl(wfd, F_SETFL, fl | O_NONBLOCK), 0);
    size_t total = 0;
    for (size_t chunk = sizeof zeros; chunk > 0; chunk /= 2) {
        for (;;) {
            ssize_t n = write(wfd, zeros, chunk);
            if (n < 0) {
                ck_assert_int_eq(errno, EAGAIN);
                break;
            }
            total += (size_t)n;
        }
    }
    ck_assert_int_eq(fcntl(wfd, F_SETFL, fl), 0);
    return total;
}

/* A deterministic byte pattern, so any lost, duplicated or reordered byte
 * shows up at a known offset. */
static unsigned char pat(size_t i)
{
    return (unsigned char)((i * 131u) ^ (i >> 9) ^ 0x5a);
}

static unsigned char *pattern(size_t len)
{
    unsigned char *b = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(b);
    for (size_t i = 0; i < len; i++)
        b[i] = pat(i);
    return b;
}

static bool pattern_ok(const unsigned char *b, size_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i] != pat(off + i))
            return false;
    return true;
}

/* Read everything now in fd (whose writer is still open) without blocking;
 * when `check`, it must continue the pattern at `off`. Returns the count. */
static size_t drain(int fd, size_t off, bool check)
{
    int fl = fcntl(fd, F_GETFL);
    ck_assert_int_ge(fl, 0);
    ck_assert_int_eq(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
    unsigned char buf[16384];
    size_t total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            ck_assert_int_eq(errno, EAGAIN);
            break;
        }
        if (n == 0)
            break;
        if (check)
            ck_assert_msg(pattern_ok(buf, off + total, (size_t)n), "pattern broken near %zu",
                          off + total);
        total += (size_t)n;
    }
    ck_assert_int_eq(fcntl(fd, F_SETFL, fl), 0);
    return total;
}

/* Read exactly n bytes (blocking). */
static void read_exact(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        ck_assert_int_gt(r, 0);
        got += (size_t)r;
    }
}

/* A descriptor number that is not open (and that no new fd will take soon,
 * unlike a just-closed one, which the next eventfd would reuse). */
static int unused_fd(void)
{
    int fd = 900;
    while (fcntl(fd, F_GETFD) != -1)
        fd++;
    return fd;
}

static tether_token *token(tether_token *parent, tether_time_t deadline)
{
    tether_token *t = NULL;
    ck_assert_int_eq(tether_token_new(&t, parent, deadline), 0);
    return t;
}

static void enter(tether_token *t)
{
    ck_assert_int_eq(tether_token_enter(t), 0);
}

static void leave(tether_token *t)
{
    ck_assert_int_eq(tether_token_leave(t), 0);
}

static void token_free(tether_token *t)
{
    ck_assert_int_eq(tether_token_free(t), 0);
}

static void xsem_wait(sem_t *s)
{
    while (sem_wait(s) != 0)
        ck_assert_int_eq(errno, EINTR);
}

/* sem_wait with an upper bound; false if it ran out. (CLOCK_REALTIME
 * sem_timedwait because ThreadSanitizer intercepts it and not sem_clockwait.) */
static bool sem_wait_bounded(sem_t *s, int64_t ns)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t at = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + ns;
    ts = (struct timespec){ .tv_sec = at / 1000000000, .tv_nsec = at % 1000000000 };
    while (sem_timedwait(s, &ts) != 0) {
        if (errno == ETIMEDOUT)
            return false;
        ck_assert_int_eq(errno, EINTR);
    }
    return true;
}

static void busy_wait_ns(int64_t ns)
{
    tether_time_t end = tether_now() + ns;
    while (tether_now() < end) {
    }
}

/* ======================================================================
 * The five primitives behind one interface, for the loop tests
 * ====================================================================== */

enum op_kind { OP_SLEEP_FOR, OP_SLEEP_UNTIL, OP_READ, OP_WRITE, OP_POLL, OP_COUNT };

static const char *const op_name[OP_COUNT] = {
    "tether_sleep_for", "tether_sleep_until", "tether_read", "tether_write", "tether_poll",
};

/* One primitive and the pipe it works on. `ready`: the call would complete
 * at once (16 bytes to read, room to write, a sleep of 0). Otherwise it
 * would block (empty pipe, full pipe, a day's sleep). */
struct op {
    enum op_kind kind;
    bool ready;
    int p[2];
    size_t in_pipe;      /* bytes in the pipe after setup */
    const void *wsrc;    /* what OP_WRITE writes: one byte unless changed */
    size_t wlen;
    short revents;       /* OP_POLL's result */
    unsigned char buf[64];
};

static const char ready_data[16] = "0123456789abcdef";

static void op_setup(struct op *o, int kind, bool ready)
{
    memset(o, 0, sizeof *o);
    o->kind = (enum op_kind)kind;
    o->ready = ready;
    o->wsrc = "w";
    o->wlen = 1;
    xpipe(o->p);
    if ((kind == OP_READ || kind == OP_POLL) && ready) {
        ck_assert_int_eq(write(o->p[1], ready_data, sizeof ready_data), sizeof ready_data);
        o->in_pipe = sizeof ready_data;
    } else if (kind == OP_WRITE && !ready) {
        o->in_pipe = fill(o->p[1]);
    }
}

static void op_teardown(struct op *o)
{
    close_pair(o->p);
}

static ssize_t op_call(struct op *o, int *err)
{
    ssize_t r = -2;
    errno = 0;
    switch (o->kind) {
    case OP_SLEEP_FOR:
        r = tether_sleep_for(o->ready ? 0 : DAY);
        break;
    case OP_SLEEP_UNTIL:
        r = tether_sleep_until(o->ready ? tether_now() : tether_now() + DAY);
        break;
    case OP_READ:
        r = tether_read(o->p[0], o->buf, sizeof o->buf);
        break;
    case OP_WRITE:
        r = tether_write(o->p[1], o->wsrc, o->wlen);
        break;
    case OP_POLL: {
        struct pollfd pfd = { .fd = o->p[0], .events = POLLIN, .revents = 0x5a5a };
        r = tether_poll(&pfd, 1, -1);
        o->revents = pfd.revents;
        break;
    }
    case OP_COUNT:
        break;
    }
    *err = errno;
    return r;
}

/* A failed call moved no bytes: the pipe holds what setup put there. */
static void op_check_untouched(struct op *o)
{
    ck_assert_msg(pending(o->p[0]) == (int)o->in_pipe, "%s: pipe holds %d bytes, expected %zu",
                  op_name[o->kind], pending(o->p[0]), o->in_pipe);
}

/* The success result of a ready op (as the raw call would give it). */
static void op_check_ready_success(struct op *o, ssize_t r, int err)
{
    switch (o->kind) {
    case OP_SLEEP_FOR:
    case OP_SLEEP_UNTIL:
        ck_assert_msg(r == 0, "%s: %zd errno %s", op_name[o->kind], r, strerror(err));
        break;
    case OP_READ:
        ck_assert_int_eq(r, sizeof ready_data);
        ck_assert_mem_eq(o->buf, ready_data, sizeof ready_data);
        ck_assert_int_eq(pending(o->p[0]), 0);
        break;
    case OP_WRITE:
        ck_assert_int_eq(r, 1);
        ck_assert_int_eq(pending(o->p[0]), 1);
        break;
    case OP_POLL:
        ck_assert_int_eq(r, 1);
        ck_assert_int_eq(o->revents, POLLIN);
        break;
    case OP_COUNT:
        break;
    }
}

/* A thread that makes one call, optionally under a token it enters. */
struct runner {
    struct op *op;
    tether_token *tok;
    pthread_t thread;
    sem_t started, done;
    pid_t tid;
    ssize_t ret;
    int err;
    tether_time_t returned_at;
};

static void *runner_main(void *arg)
{
    struct runner *r = arg;
    r->tid = th_gettid();
    if (r->tok)
        enter(r->tok);
    sem_post(&r->started);
    r->ret = op_call(r->op, &r->err);
    r->returned_at = tether_now();
    if (r->tok)
        leave(r->tok);
    sem_post(&r->done);
    return NULL;
}

static void runner_start(struct runner *r, struct op *op, tether_token *tok)
{
    memset(r, 0, sizeof *r);
    r->op = op;
    r->tok = tok;
    ck_assert_int_eq(sem_init(&r->started, 0, 0), 0);
    ck_assert_int_eq(sem_init(&r->done, 0, 0), 0);
    ck_assert_int_eq(pthread_create(&r->thread, NULL, runner_main, r), 0);
}

/* Wait until the runner is inside its call, asleep in the kernel. */
static void runner_wait_blocked(struct runner *r)
{
    xsem_wait(&r->started);
    ck_assert_msg(th_wait_blocked(r->tid) == 0, "%s: thread %d never blocked",
                  op_name[r->op->kind], (int)r->tid);
}

static void runner_join(struct runner *r)
{
    ck_assert_int_eq(pthread_join(r->thread, NULL), 0);
    sem_destroy(&r->started);
    sem_destroy(&r->done);
}

/* The runner returns (bounded), is joined, and failed with `e` no later than
 * th_bound_ns(1000) after `since`. */
static void runner_expect_fail(struct runner *r, int e, tether_time_t since)
{
    ck_assert_msg(sem_wait_bounded(&r->done, th_bound_ns(5000)), "%s: still blocked",
                  op_name[r->op->kind]);
    runner_join(r);
    ck_assert_msg(r->ret == -1 && r->err == e, "%s: returned %zd errno %s; expected -1 %s",
                  op_name[r->op->kind], r->ret, strerror(r->err), strerror(e));
    ck_assert_int_le(r->returned_at - since, th_bound_ns(1000));
}

/* ======================================================================
 * Token modes for the "behaves like the raw call" loop tests
 * ====================================================================== */

enum mode { MODE_NONE, MODE_TOKEN, MODE_DEADLINE, MODE_COUNT };

/* Enter a token (or none) on the calling thread for the span of a test. */
static tether_token *mode_begin(int mode)
{
    ck_assert_ptr_null(tether_current());
    if (mode == MODE_NONE)
        return NULL;
    tether_time_t dl = mode == MODE_DEADLINE ? tether_deadline_after(tether_sec(3600)) : TETHER_NEVER;
    tether_token *t = token(NULL, dl);
    enter(t);
    return t;
}

/* Leave and free it; the success path must never have cancelled it. */
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

/* A thread that reads exactly `len` bytes with read(2) and checks the pattern. */
struct sink {
    int fd;
    size_t len, got;
    bool ok;
    pthread_t thread;
};

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

/* Same return and revents from poll(2) and tether_poll for one array. */
static void poll_agrees(const struct pollfd *fds, nfds_t n, int tether_timeout)
{
    struct pollfd *a = calloc(n ? n : 1, sizeof *a), *c = calloc(n ? n : 1, sizeof *c);
    ck_assert(a && c);
    for (nfds_t i = 0; i < n; i++) {
        a[i] = fds[i];
        a[i].revents = (short)(0x7a5 + i); /* garbage: both calls must overwrite it */
        c[i] = a[i];
    }
    errno = 0;
    int raw = poll(a, n, 0);
    int raw_errno = errno;
    errno = 0;
    int got = tether_poll(c, n, raw > 0 ? tether_timeout : 10);
    int got_errno = errno;
    ck_assert_msg(got == raw && (raw >= 0 || got_errno == raw_errno),
                  "nfds %lu: tether_poll %d errno %s; poll(2) %d errno %s", (unsigned long)n, got,
                  strerror(got_errno), raw, strerror(raw_errno));
    for (nfds_t i = 0; i < n; i++)
        ck_assert_msg(a[i].fd == c[i].fd && a[i].events == c[i].events &&
                          a[i].revents == c[i].revents,
                      "nfds %lu entry %lu (fd %d events %#x): revents %#x, poll(2) gives %#x",
                      (unsigned long)n, (unsigned long)i, c[i].fd, (unsigned)c[i].events,
                      (unsigned)(unsigned short)c[i].revents, (unsigned)(unsigned short)a[i].revents);
    free(a);
    free(c);
}

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
    const int pool[] = { data[0], data[1], empty[0], empty[1], full[0], full[1],
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

START_TEST(test_regular_file_uncached)
{
    /* A regular file whose pages are not in the page cache, opened blocking
     * (_i 0) or O_NONBLOCK (_i 1; the flag means nothing for regular files:
     * read(2) waits for the disk). tether_read returns the data either way,
     * as read(2) does. (Where the cache cannot be dropped, e.g. tmpfs, the
     * data is cached and this passes trivially.) */
    th_baseline b = th_baseline_take();
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char path[512];
    snprintf(path, sizeof path, "%s/tether-io-XXXXXX", dir);
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    size_t len = 1u << 20;
    unsigned char *src = pattern(len);
    ck_assert_int_eq(write(fd, src, len), len);
    ck_assert_int_eq(fsync(fd), 0);
    xclose(fd);
    fd = open(path, O_RDONLY | O_CLOEXEC | (_i ? O_NONBLOCK : 0));
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);

    tether_token *t = token(NULL, TETHER_NEVER);
    enter(t);
    unsigned char buf[4096];
    errno = 0;
    ssize_t r = tether_read(fd, buf, sizeof buf);
    int e = errno;
    leave(t);
    ck_assert_msg(r == (ssize_t)sizeof buf, "tether_read on an uncached%s file: %zd errno %s; "
                  "read(2) returns the data", _i ? " O_NONBLOCK" : "", r, strerror(e));
    ck_assert(pattern_ok(buf, 0, sizeof buf));
    ck_assert_int_eq(read(fd, buf, sizeof buf), sizeof buf); /* the raw call, for the record */
    ck_assert(pattern_ok(buf, sizeof buf, sizeof buf));

    token_free(t);
    free(src);
    xclose(fd);
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

/* ======================================================================
 * Each primitive under a token: ready, cancelled, blocked, deadlines
 * ====================================================================== */

START_TEST(test_live_token_ready)
{
    /* With a live token a ready call succeeds as the raw one. */
    th_baseline b = th_baseline_take();
    struct op o;
    op_setup(&o, _i, true);
    tether_token *t = token(NULL, TETHER_NEVER);
    enter(t);
    int err;
    ssize_t r = op_call(&o, &err);
    leave(t);
    op_check_ready_success(&o, r, err);
    ck_assert_int_eq(tether_token_check(t), 0);
    token_free(t);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_cancelled_before_call)
{
    /* Already cancelled: -1/ECANCELED at once, even though the call could
     * complete, and nothing moves. */
    th_baseline b = th_baseline_take();
    struct op o;
    op_setup(&o, _i, true);
    tether_token *t = token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    enter(t);
    int err;
    tether_time_t t0 = tether_now();
    ssize_t r = op_call(&o, &err);
    tether_time_t el = tether_now() - t0;
    ck_assert_msg(r == -1 && err == ECANCELED, "%s: %zd errno %s", op_name[_i], r, strerror(err));
    op_check_untouched(&o);
    /* Sticky: again, and a blocking variant too. */
    o.ready = false;
    if (o.kind == OP_WRITE)
        o.in_pipe += fill(o.p[1]);
    r = op_call(&o, &err);
    ck_assert_msg(r == -1 && err == ECANCELED, "%s: %zd errno %s", op_name[_i], r, strerror(err));
    ck_assert_int_le(tether_now() - t0, th_bound_ns(500));
    ck_assert_int_le(el, th_bound_ns(500));
    op_check_untouched(&o);
    leave(t);
    token_free(t);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_cancelled_by_parent_before_call)
{
    /* A token born under a cancelled grandparent is cancelled too. */
    th_baseline b = th_baseline_take();
    struct op o;
    op_setup(&o, _i, true);
    tether_token *g = token(NULL, TETHER_NEVER), *p = token(g, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(g, 0), 0);
    tether_token *c = token(p, TETHER_NEVER);
    enter(c);
    int err;
    ssize_t r = op_call(&o, &err);
    leave(c);
    ck_assert_msg(r == -1 && err == ECANCELED, "%s: %zd errno %s", op_name[_i], r, strerror(err));
    op_check_untouched(&o);
    token_free(c);
    token_free(p);
    token_free(g);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_cancelled_while_blocked)
{
    th_baseline b = th_baseline_take();
    struct op o;
    op_setup(&o, _i, false);
    tether_token *t = token(NULL, TETHER_NEVER);
    struct runner r;
    runner_start(&r, &o, t);
    runner_wait_blocked(&r);
    tether_time_t at = tether_now();
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    runner_expect_fail(&r, ECANCELED, at);
    op_check_untouched(&o);
    ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_EXPLICIT);
    token_free(t);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_parent_cancelled_while_blocked)
{
    /* The blocked thread's token is a grandchild of the one cancelled. */
    th_baseline b = th_baseline_take();
    struct op o;
    op_setup(&o, _i, false);
    tether_token *g = token(NULL, TETHER_NEVER), *p = token(g, TETHER_NEVER),
                 *c = token(p, TETHER_NEVER);
    struct runner r;
    runner_start(&r, &o, c);
    runner_wait_blocked(&r);
    tether_time_t at = tether_now();
    ck_assert_int_eq(tether_token_cancel(g, 0), 0);
    runner_expect_fail(&r, ECANCELED, at);
    op_check_untouched(&o);
    ck_assert_int_eq(tether_token_cause(c), TETHER_CAUSE_PARENT);
    ck_assert_int_eq(tether_token_root_cause(c), TETHER_CAUSE_EXPLICIT);
    token_free(c);
    token_free(p);
    token_free(g);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_sibling_cancel_leaves_waiter)
{
    /* Cancelling a sibling or a child of the waiter's token does not wake it;
     * cancelling its own token then does. */
    th_baseline b = th_baseline_take();
    struct op o;
    op_setup(&o, _i, false);
    tether_token *p = token(NULL, TETHER_NEVER), *mine = token(p, TETHER_NEVER),
                 *sib = token(p, TETHER_NEVER), *kid = token(mine, TETHER_NEVER);
    struct runner r;
    runner_start(&r, &o, mine);
    runner_wait_blocked(&r);
    ck_assert_int_eq(tether_token_cancel(sib, 0), 0);
    ck_assert_int_eq(tether_token_cancel(kid, 0), 0);
    ck_assert_msg(!sem_wait_bounded(&r.done, tether_ms(50)), "%s: woken by a sibling's cancel",
                  op_name[_i]);
    ck_assert_int_eq(th_wait_blocked(r.tid), 0);
    tether_time_t at = tether_now();
    ck_assert_int_eq(tether_token_cancel(mine, 0), 0);
    runner_expect_fail(&r, ECANCELED, at);
    token_free(kid);
    token_free(sib);
    token_free(mine);
    token_free(p);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_deadline_past)
{
    /* A deadline already past: -1/ETIMEDOUT at once, nothing moves, and
     * the token is now cancelled with cause deadline. */
    th_baseline b = th_baseline_take();
    struct op o;
    op_setup(&o, _i, true);
    tether_token *t = token(NULL, tether_now() - tether_sec(1));
    enter(t);
    int err;
    tether_time_t t0 = tether_now();
    ssize_t r = op_call(&o, &err);
    ck_assert_int_le(tether_now() - t0, th_bound_ns(500));
    leave(t);
    ck_assert_msg(r == -1 && err == ETIMEDOUT, "%s: %zd errno %s", op_name[_i], r, strerror(err));
    op_check_untouched(&o);
    ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_DEADLINE);
    token_free(t);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_deadline_now)
{
    th_baseline b = th_baseline_take();
    struct op o;
    op_setup(&o, _i, true);
    tether_token *t = token(NULL, tether_now());
    enter(t);
    int err;
    ssize_t r = op_call(&o, &err);
    leave(t);
    ck_assert_msg(r == -1 && err == ETIMEDOUT, "%s: %zd errno %s", op_name[_i], r, strerror(err));
    op_check_untouched(&o);
    token_free(t);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_deadline_later)
{
    /* A blocked call returns ETIMEDOUT at its deadline: never before, and
     * within a bound after. */
    th_baseline b = th_baseline_take();
    struct op o;
    op_setup(&o, _i, false);
    tether_time_t dl = tether_deadline_after(tether_ms(50));
    tether_token *t = token(NULL, dl);
    enter(t);
    int err;
    ssize_t r = op_call(&o, &err);
    tether_time_t now = tether_now();
    leave(t);
    ck_assert_msg(r == -1 && err == ETIMEDOUT, "%s: %zd errno %s", op_name[_i], r, strerror(err));
    ck_assert_msg(now >= dl, "%s: deadline fired %lld ns early", op_name[_i],
                  (long long)(dl - now));
    ck_assert_int_le(now - dl, th_bound_ns(1000));
    op_check_untouched(&o);
    ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_DEADLINE);
    token_free(t);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_deadline_inherited)
{
    /* The waiter's own token has no deadline; its grandparent's applies. */
    th_baseline b = th_baseline_take();
    struct op o;
    op_setup(&o, _i, false);
    tether_time_t dl = tether_deadline_after(tether_ms(40));
    tether_token *g = token(NULL, dl), *p = token(g, TETHER_NEVER), *c = token(p, TETHER_NEVER);
    ck_assert_int_eq(tether_token_deadline(c), dl);
    enter(c);
    int err;
    ssize_t r = op_call(&o, &err);
    tether_time_t now = tether_now();
    leave(c);
    ck_assert_msg(r == -1 && err == ETIMEDOUT, "%s: %zd errno %s", op_name[_i], r, strerror(err));
    ck_assert_int_ge(now, dl);
    ck_assert_int_le(now - dl, th_bound_ns(1000));
    ck_assert_int_eq(tether_token_cause(g), TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(tether_token_cause(c), TETHER_CAUSE_PARENT);
    op_check_untouched(&o);
    token_free(c);
    token_free(p);
    token_free(g);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_deadline_while_blocked_other_thread)
{
    /* A deadline on a token that another thread entered: that thread, left
     * alone, turns the passed deadline into ETIMEDOUT itself. (Whether it
     * was asleep when the deadline passed depends on the machine's speed.) */
    th_baseline b = th_baseline_take();
    struct op o;
    op_setup(&o, _i, false);
    tether_time_t dl = tether_deadline_after(tether_ms(60));
    tether_token *t = token(NULL, dl);
    struct runner r;
    runner_start(&r, &o, t);
    ck_assert(sem_wait_bounded(&r.done, th_bound_ns(5000)));
    runner_join(&r);
    ck_assert_msg(r.ret == -1 && r.err == ETIMEDOUT, "%s: %zd errno %s", op_name[_i], r.ret,
                  strerror(r.err));
    ck_assert_int_ge(r.returned_at, dl);
    ck_assert_int_le(r.returned_at - dl, th_bound_ns(1000));
    op_check_untouched(&o);
    token_free(t);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

static atomic_int signals_seen;

static void on_signal(int sig)
{
    (void)sig;
    atomic_fetch_add(&signals_seen, 1);
}

/* A handler for SIGUSR1 installed without SA_RESTART. */
static void install_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
}

START_TEST(test_signal_eintr)
{
    /* A handler (no SA_RESTART) interrupting a blocked call: -1/EINTR, with
     * or without a token (_i / OP_COUNT), and the token is not cancelled. */
    th_baseline b = th_baseline_take();
    install_handler();
    int kind = _i % OP_COUNT;
    bool with_token = _i >= OP_COUNT;
    struct op o;
    op_setup(&o, kind, false);
    tether_token *t = with_token ? token(NULL, TETHER_NEVER) : NULL;
    struct runner r;
    runner_start(&r, &o, t);
    runner_wait_blocked(&r);
    tether_time_t at = tether_now();
    ck_assert_int_eq(pthread_kill(r.thread, SIGUSR1), 0);
    runner_expect_fail(&r, EINTR, at);
    ck_assert_int_eq(atomic_load(&signals_seen), 1);
    op_check_untouched(&o);
    if (t) {
        ck_assert_int_eq(tether_token_check(t), 0);
        token_free(t);
    }
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_uses_innermost_token)
{
    /* The current token is the innermost entered one. */
    th_baseline b = th_baseline_take();
    tether_token *dead = token(NULL, TETHER_NEVER), *live = token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(dead, 0), 0);
    int p[2];
    xpipe(p);
    char buf[8];
    ck_assert_int_eq(write(p[1], "abcd", 4), 4);

    enter(dead);
    enter(live);
    ck_assert_ptr_eq(tether_current(), live);
    ck_assert_int_eq(tether_read(p[0], buf, 2), 2);
    leave(live);
    ASSERT_FAILS(tether_read(p[0], buf, 2), ECANCELED);
    ASSERT_FAILS(tether_sleep_for(tether_ms(1)), ECANCELED);
    leave(dead);
    ck_assert_ptr_null(tether_current());
    ck_assert_int_eq(tether_read(p[0], buf, 2), 2);
    ck_assert_mem_eq(buf, "cd", 2);

    close_pair(p);
    token_free(live);
    token_free(dead);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_user_error_still_ecanceled)
{
    /* The error given to tether_token_cancel is the token's, not errno: the
     * primitives report ECANCELED. */
    th_baseline b = th_baseline_take();
    tether_token *t = token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(t, ENOENT), 0);
    enter(t);
    ASSERT_FAILS(tether_read(-1, NULL, 0), ECANCELED);
    ASSERT_FAILS(tether_sleep_for(1), ECANCELED);
    leave(t);
    ck_assert_int_eq(tether_token_error(t), ENOENT);
    token_free(t);
    th_baseline_check(b);
}
END_TEST

/* ======================================================================
 * Sleep, read, write, poll: specific promises
 * ====================================================================== */

START_TEST(test_sleep_before_deadline)
{
    /* Waking before the deadline is success; the token stays live. */
    th_baseline b = th_baseline_take();
    tether_token *t = token(NULL, tether_deadline_after(tether_sec(10)));
    enter(t);
    tether_time_t when = tether_now() + tether_ms(20);
    ck_assert_int_eq(tether_sleep_until(when), 0);
    ck_assert_int_ge(tether_now(), when);
    tether_time_t t0 = tether_now();
    ck_assert_int_eq(tether_sleep_for(tether_ms(20)), 0);
    ck_assert_int_ge(tether_now() - t0, tether_ms(20));
    leave(t);
    ck_assert_int_eq(tether_token_check(t), 0);
    token_free(t);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_sleep_until_after_deadline)
{
    /* `when` after the deadline: ETIMEDOUT at the deadline, not at `when`. */
    th_baseline b = th_baseline_take();
    tether_time_t dl = tether_deadline_after(tether_ms(30));
    tether_token *t = token(NULL, dl);
    enter(t);
    ASSERT_FAILS(tether_sleep_until(dl + tether_sec(60)), ETIMEDOUT);
    tether_time_t now = tether_now();
    leave(t);
    ck_assert_int_ge(now, dl);
    ck_assert_int_le(now - dl, th_bound_ns(1000));
    token_free(t);
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
    tether_token *t = mode == MODE_NONE ? NULL
                      : token(NULL, mode == MODE_DEADLINE ? tether_deadline_after(tether_sec(3600))
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

START_TEST(test_read_keeps_bytes_on_cancel)
{
    /* A cancelled read takes nothing: the bytes stay in the pipe. */
    th_baseline b = th_baseline_take();
    int p[2];
    xpipe(p);
    unsigned char *src = pattern(100);
    char buf[200];

    /* Data first, then the cancel, then the call. */
    ck_assert_int_eq(write(p[1], src, 100), 100);
    tether_token *t = token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    enter(t);
    ASSERT_FAILS(tether_read(p[0], buf, sizeof buf), ECANCELED);
    ASSERT_FAILS(tether_read(p[0], buf, sizeof buf), ECANCELED);
    leave(t);
    ck_assert_int_eq(pending(p[0]), 100);
    ck_assert_int_eq(read(p[0], buf, sizeof buf), 100);
    ck_assert_mem_eq(buf, src, 100);
    token_free(t);

    /* Blocked, cancelled, then data arrives: the read failed, the data waits. */
    struct op o;
    memset(&o, 0, sizeof o);
    o.kind = OP_READ;
    o.p[0] = p[0];
    o.p[1] = p[1];
    t = token(NULL, TETHER_NEVER);
    struct runner r;
    runner_start(&r, &o, t);
    runner_wait_blocked(&r);
    tether_time_t at = tether_now();
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    runner_expect_fail(&r, ECANCELED, at);
    ck_assert_int_eq(write(p[1], src, 100), 100);
    enter(t);
    ASSERT_FAILS(tether_read(p[0], buf, sizeof buf), ECANCELED);
    leave(t);
    ck_assert_int_eq(read(p[0], buf, sizeof buf), 100);
    ck_assert_mem_eq(buf, src, 100);
    token_free(t);

    free(src);
    close_pair(p);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_write_partial_on_cancel)
{
    /* A write of 4x the pipe's capacity with a slow reader, cancelled midway:
     * it returns exactly the bytes that went in (> 0), the reader gets those
     * bytes in order, and the next call reports the cancellation. */
    th_baseline b = th_baseline_take();
    struct op o;
    op_setup(&o, OP_WRITE, true);
    size_t cap = (size_t)fcntl(o.p[1], F_GETPIPE_SZ);
    size_t len = 4 * cap;
    unsigned char *src = pattern(len);
    o.wsrc = src;
    o.wlen = len;
    tether_token *t = token(NULL, TETHER_NEVER);
    struct runner r;
    runner_start(&r, &o, t);
    runner_wait_blocked(&r);

    /* The slow reader: a few pages, letting the writer block again. */
    unsigned char buf[5000];
    size_t got = 0;
    for (int k = 0; k < 3; k++) {
        read_exact(o.p[0], buf, sizeof buf);
        ck_assert(pattern_ok(buf, got, sizeof buf));
        got += sizeof buf;
        ck_assert_int_eq(th_wait_blocked(r.tid), 0);
    }
    tether_time_t at = tether_now();
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ck_assert(sem_wait_bounded(&r.done, th_bound_ns(5000)));
    runner_join(&r);
    ck_assert_int_le(r.returned_at - at, th_bound_ns(1000));
    ck_assert_msg(r.ret >= (ssize_t)cap && r.ret < (ssize_t)len,
                  "returned %zd (errno %s); expected a partial count in [%zu, %zu)", r.ret,
                  strerror(r.err), cap, len);
    got += drain(o.p[0], got, true);
    ck_assert_int_eq(got, r.ret);

    enter(t);
    ASSERT_FAILS(tether_write(o.p[1], src, 1), ECANCELED);
    leave(t);
    ck_assert_int_eq(pending(o.p[0]), 0);

    free(src);
    token_free(t);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_write_interrupted_returns_partial)
{
    /* A signal after some bytes went in: the count, not -1/EINTR, with or
     * without a token (as write(2)). */
    th_baseline b = th_baseline_take();
    install_handler();
    struct op o;
    op_setup(&o, OP_WRITE, true);
    size_t cap = (size_t)fcntl(o.p[1], F_GETPIPE_SZ);
    unsigned char *src = pattern(2 * cap);
    o.wsrc = src;
    o.wlen = 2 * cap;
    tether_token *t = _i == MODE_NONE ? NULL : token(NULL, TETHER_NEVER);
    struct runner r;
    runner_start(&r, &o, t);
    runner_wait_blocked(&r);
    ck_assert_int_eq(pthread_kill(r.thread, SIGUSR1), 0);
    ck_assert(sem_wait_bounded(&r.done, th_bound_ns(5000)));
    runner_join(&r);
    ck_assert_int_eq(atomic_load(&signals_seen), 1);
    ck_assert_msg(r.ret > 0 && r.ret < (ssize_t)(2 * cap), "returned %zd errno %s", r.ret,
                  strerror(r.err));
    ck_assert_int_eq(drain(o.p[0], 0, true), r.ret);
    if (t) {
        ck_assert_int_eq(tether_token_check(t), 0);
        token_free(t);
    }
    free(src);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_poll_timeout_before_deadline)
{
    /* poll's own timeout comes first: 0, revents cleared, token live. */
    th_baseline b = th_baseline_take();
    int p[2];
    xpipe(p);
    tether_token *t = token(NULL, tether_deadline_after(tether_sec(10)));
    enter(t);
    struct pollfd pfd = { .fd = p[0], .events = POLLIN, .revents = 0x7fff };
    tether_time_t t0 = tether_now();
    ck_assert_int_eq(tether_poll(&pfd, 1, 30), 0);
    tether_time_t el = tether_now() - t0;
    leave(t);
    ck_assert_int_eq(pfd.revents, 0);
    ck_assert_int_ge(el, tether_ms(30));
    ck_assert_int_le(el, tether_ms(30) + th_bound_ns(1000));
    ck_assert_int_eq(tether_token_check(t), 0);
    token_free(t);
    close_pair(p);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_poll_deadline_before_timeout)
{
    /* The deadline comes first: ETIMEDOUT at the deadline, not 0. */
    th_baseline b = th_baseline_take();
    int p[2];
    xpipe(p);
    tether_time_t dl = tether_deadline_after(tether_ms(30));
    tether_token *t = token(NULL, dl);
    enter(t);
    struct pollfd pfd = { .fd = p[0], .events = POLLIN };
    ASSERT_FAILS(tether_poll(&pfd, 1, 10000), ETIMEDOUT);
    tether_time_t now = tether_now();
    leave(t);
    ck_assert_int_ge(now, dl);
    ck_assert_int_le(now - dl, th_bound_ns(1000));
    token_free(t);
    close_pair(p);
    th_baseline_check(b);
}
END_TEST

/* A one-entry pollfd array that ends exactly where an inaccessible page
 * begins, so anything that reads past its end faults. */
static struct pollfd *guarded_pollfd(void **map, size_t *maplen)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    char *m = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert(m != MAP_FAILED);
    ck_assert_int_eq(mprotect(m + pg, pg, PROT_NONE), 0);
    *map = m;
    *maplen = 2 * pg;
    return (struct pollfd *)(void *)(m + pg) - 1;
}

static void set_nofile(rlim_t soft)
{
    struct rlimit rl;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    ck_assert_msg(rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= soft, "hard limit %lu",
                  (unsigned long)rl.rlim_max);
    rl.rlim_cur = soft;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
}

/* tether_poll with an nfds poll(2) rejects (EINVAL) and a one-entry array:
 * it must fail the same way without touching memory past the array. */
static void poll_rejects_nfds(nfds_t nfds)
{
    th_baseline b = th_baseline_take();
    set_nofile(1024);
    int p[2];
    xpipe(p);
    ck_assert_int_eq(write(p[1], "x", 1), 1);
    void *map;
    size_t maplen;
    struct pollfd *one = guarded_pollfd(&map, &maplen);
    *one = (struct pollfd){ .fd = p[0], .events = POLLIN };

#if !defined(TS_ASAN) && !defined(TS_TSAN)
    /* poll(2), and tether_poll with no token (which is poll(2)): the kernel
     * rejects nfds before it reads the array. Not under a sanitizer: its
     * poll interceptor reads all nfds entries first. */
    ASSERT_FAILS(poll(one, nfds, 0), EINVAL);
    ASSERT_FAILS(tether_poll(one, nfds, 0), EINVAL);
#endif
    tether_token *t = token(NULL, TETHER_NEVER);
    enter(t);
    ASSERT_FAILS(tether_poll(one, nfds, 0), EINVAL);
    ASSERT_FAILS(tether_poll(one, nfds, 100), EINVAL);
    ASSERT_FAILS(tether_poll(one, nfds, -1), EINVAL);
    leave(t);
    token_free(t);
    ck_assert_int_eq(munmap(map, maplen), 0);
    close_pair(p);
    th_baseline_check(b);
}

START_TEST(test_poll_nfds_above_rlimit)
{
    poll_rejects_nfds(1025);
}
END_TEST

START_TEST(test_poll_nfds_max)
{
    poll_rejects_nfds((nfds_t)-1);
}
END_TEST

START_TEST(test_poll_nfds_at_rlimit)
{
    /* poll(2) accepts nfds == RLIMIT_NOFILE (unused entries have fd -1);
     * with a token tether_poll must too, despite the slot it adds. */
    th_baseline b = th_baseline_take();
    enum { LIMIT = 64 };
    ck_assert_int_lt(th_fd_count(), LIMIT - 8);
    set_nofile(LIMIT);
    int p[2];
    xpipe(p);
    ck_assert_int_eq(write(p[1], "x", 1), 1);
    struct pollfd set[LIMIT];
    for (int i = 0; i < LIMIT; i++)
        set[i] = (struct pollfd){ .fd = -1, .events = POLLIN };
    set[10] = (struct pollfd){ .fd = p[0], .events = POLLIN };
    set[40] = (struct pollfd){ .fd = p[1], .events = POLLOUT };
    tether_token *t = token(NULL, TETHER_NEVER);
    enter(t);
    poll_agrees(set, LIMIT, 1000);
    poll_agrees(set, LIMIT, -1);
    leave(t);
    token_free(t);
    close_pair(p);
    th_baseline_check(b);
}
END_TEST

/* ======================================================================
 * Descriptor kinds where RWF_NOWAIT is not supported (FIFOs, ttys, ...)
 * ====================================================================== */

struct fifo {
    int rfd, wfd;
};

/* A named pipe with both ends open, O_NONBLOCK as asked. Its name is gone
 * before this returns, so a failing test leaves nothing behind. */
static void fifo_open(struct fifo *f, bool nonblocking_reader, bool nonblocking_writer)
{
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char dir[256], path[300];
    snprintf(dir, sizeof dir, "%s/tether-io-XXXXXX", tmp);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/fifo", dir);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    f->rfd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    f->wfd = f->rfd < 0 ? -1
                        : open(path, O_WRONLY | O_CLOEXEC | (nonblocking_writer ? O_NONBLOCK : 0));
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(rmdir(dir), 0);
    ck_assert_int_ge(f->rfd, 0);
    ck_assert_int_ge(f->wfd, 0);
    set_nonblock(f->rfd, nonblocking_reader);
}

static void fifo_close(struct fifo *f)
{
    xclose(f->rfd);
    xclose(f->wfd);
}

START_TEST(test_fifo_blocking)
{
    /* A named pipe in blocking mode: data both ways, and a blocked read
     * wakes on cancellation. */
    th_baseline b = th_baseline_take();
    struct fifo f;
    fifo_open(&f, false, false);
    tether_token *t = token(NULL, TETHER_NEVER);
    enter(t);
    char buf[32];
    ck_assert_int_eq(tether_write(f.wfd, "hello fifo", 10), 10);
    ck_assert_int_eq(tether_read(f.rfd, buf, 5), 5);
    ck_assert_mem_eq(buf, "hello", 5);
    ck_assert_int_eq(tether_read(f.rfd, buf, sizeof buf), 5);
    ck_assert_mem_eq(buf, " fifo", 5);
    leave(t);

    struct op o;
    memset(&o, 0, sizeof o);
    o.kind = OP_READ;
    o.p[0] = f.rfd;
    o.p[1] = f.wfd;
    struct runner r;
    runner_start(&r, &o, t);
    runner_wait_blocked(&r);
    tether_time_t at = tether_now();
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    runner_expect_fail(&r, ECANCELED, at);
    token_free(t);
    fifo_close(&f);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_fifo_nonblocking_read)
{
    /* An empty O_NONBLOCK FIFO: read(2) says EAGAIN at once; so must
     * tether_read under a token. (A backstop deadline turns a wrongful
     * wait into ETIMEDOUT instead of a hang.) */
    th_baseline b = th_baseline_take();
    struct fifo f;
    fifo_open(&f, true, false);
    char buf[8];
    ASSERT_FAILS(read(f.rfd, buf, sizeof buf), EAGAIN);
    ASSERT_FAILS(tether_read(f.rfd, buf, sizeof buf), EAGAIN); /* no token */
    tether_token *t = token(NULL, tether_deadline_after(th_bound_ns(1000)));
    enter(t);
    tether_time_t t0 = tether_now();
    errno = 0;
    ssize_t r = tether_read(f.rfd, buf, sizeof buf);
    int e = errno;
    tether_time_t el = tether_now() - t0;
    leave(t);
    ck_assert_msg(r == -1 && e == EAGAIN,
                  "tether_read on an empty O_NONBLOCK FIFO: %zd errno %s after %lld ms; "
                  "read(2) gives -1 EAGAIN at once",
                  r, strerror(e), (long long)(el / 1000000));
    token_free(t);
    fifo_close(&f);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_fifo_nonblocking_write)
{
    /* A full O_NONBLOCK FIFO: write(2) says EAGAIN at once; so must
     * tether_write under a token. */
    th_baseline b = th_baseline_take();
    struct fifo f;
    fifo_open(&f, false, true);
    fill(f.wfd);
    ASSERT_FAILS(write(f.wfd, "x", 1), EAGAIN);
    tether_token *t = token(NULL, tether_deadline_after(th_bound_ns(1000)));
    enter(t);
    tether_time_t t0 = tether_now();
    errno = 0;
    ssize_t r = tether_write(f.wfd, "x", 1);
    int e = errno;
    tether_time_t el = tether_now() - t0;
    leave(t);
    ck_assert_msg(r == -1 && e == EAGAIN,
                  "tether_write on a full O_NONBLOCK FIFO: %zd errno %s after %lld ms; "
                  "write(2) gives -1 EAGAIN at once",
                  r, strerror(e), (long long)(el / 1000000));
    token_free(t);
    fifo_close(&f);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_fifo_write_cancel)
{
    /* A write bigger than a FIFO's capacity with nobody reading blocks; a
     * cancel must wake it, returning the bytes already written. */
    th_baseline b = th_baseline_take();
    struct fifo f;
    fifo_open(&f, true, false);
    size_t cap = (size_t)fcntl(f.wfd, F_GETPIPE_SZ);
    size_t len = 4 * cap;
    unsigned char *src = pattern(len);
    struct op o;
    memset(&o, 0, sizeof o);
    o.kind = OP_WRITE;
    o.p[0] = f.rfd;
    o.p[1] = f.wfd;
    o.wsrc = src;
    o.wlen = len;
    tether_token *t = token(NULL, TETHER_NEVER);
    struct runner r;
    runner_start(&r, &o, t);
    runner_wait_blocked(&r);
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    bool woken = sem_wait_bounded(&r.done, th_bound_ns(2000));
    size_t got = 0;
    if (!woken) {
        /* Let the writer finish so the test can end cleanly. */
        while (sem_trywait(&r.done) != 0) {
            struct pollfd pfd = { .fd = f.rfd, .events = POLLIN };
            poll(&pfd, 1, 10);
            got += drain(f.rfd, got, true);
        }
    }
    runner_join(&r);
    ck_assert_msg(woken,
                  "tether_write on a FIFO was not woken by cancellation (it returned %zd only "
                  "after the reader drained the FIFO)",
                  r.ret);
    ck_assert_msg(r.ret > 0 && r.ret < (ssize_t)len, "returned %zd errno %s", r.ret,
                  strerror(r.err));
    got += drain(f.rfd, got, true);
    ck_assert_int_eq(got, r.ret);
    free(src);
    token_free(t);
    fifo_close(&f);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_socket_cancel_while_blocked)
{
    th_baseline b = th_baseline_take();
    int s[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s), 0);
    struct op o;
    memset(&o, 0, sizeof o);
    o.p[0] = s[1];
    o.p[1] = s[0];
    o.wsrc = "w";
    o.wlen = 1;
    /* _i 0: read on an empty socket; 1: write to a full one. */
    o.kind = _i == 0 ? OP_READ : OP_WRITE;
    if (o.kind == OP_WRITE)
        o.in_pipe = fill(s[0]);
    tether_token *t = token(NULL, TETHER_NEVER);
    struct runner r;
    runner_start(&r, &o, t);
    runner_wait_blocked(&r);
    tether_time_t at = tether_now();
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    runner_expect_fail(&r, ECANCELED, at);
    op_check_untouched(&o);
    token_free(t);
    close_pair(s);
    th_baseline_check(b);
}
END_TEST

/* ======================================================================
 * Descriptors: sleepers hold none, fd waiters share one per token
 * ====================================================================== */

struct sleepers {
    tether_token *tok;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started, target;
    atomic_int canceled, other;
};

static void *sleeper_main(void *arg)
{
    struct sleepers *s = arg;
    bool entered = tether_token_enter(s->tok) == 0;
    pthread_mutex_lock(&s->mu);
    if (++s->started >= s->target)
        pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (!entered) {
        atomic_fetch_add(&s->other, 1);
        return NULL;
    }
    errno = 0;
    int r = tether_sleep_for(DAY);
    if (r == -1 && errno == ECANCELED)
        atomic_fetch_add(&s->canceled, 1);
    else
        atomic_fetch_add(&s->other, 1);
    tether_token_leave(s->tok);
    return NULL;
}

START_TEST(test_ten_thousand_sleepers)
{
    /* 10,000 threads with 64 KiB stacks sleep under one token with the fd
     * limit at 1024: no descriptor is used, one cancel wakes them all. */
#if defined(TS_TSAN)
    enum { N = 100 }; /* TSan: 10,000 thread traces fail to map, and each
                         thread takes ~50 ms to start here */
#elif defined(TS_ASAN)
    enum { N = 2000 }; /* ASan: thread creation is several times slower */
#else
    enum { N = 10000 };
#endif
    th_baseline b = th_baseline_take();
    set_nofile(1024);
    int fds_before = th_fd_count();
    struct sleepers s = { .target = N };
    ck_assert_int_eq(pthread_mutex_init(&s.mu, NULL), 0);
    ck_assert_int_eq(pthread_cond_init(&s.cv, NULL), 0);
    s.tok = token(NULL, TETHER_NEVER);
    pthread_attr_t attr;
    ck_assert_int_eq(pthread_attr_init(&attr), 0);
    ck_assert_int_eq(pthread_attr_setstacksize(&attr, 64 * 1024), 0);
    pthread_t *th = malloc(N * sizeof *th);
    ck_assert_ptr_nonnull(th);

    tether_time_t t0 = tether_now();
    int n = 0;
    for (; n < N; n++) {
        int rc = pthread_create(&th[n], &attr, sleeper_main, &s);
        if (rc != 0) {
            fprintf(stderr, "ten_thousand_sleepers: pthread_create failed after %d threads: %s\n",
                    n, strerror(rc));
            ck_assert_int_eq(rc, EAGAIN);
            break;
        }
    }
    ck_assert_int_gt(n, 0);
    pthread_mutex_lock(&s.mu);
    s.target = n;
    while (s.started < s.target)
        pthread_cond_wait(&s.cv, &s.mu);
    pthread_mutex_unlock(&s.mu);
    tether_time_t t1 = tether_now();
    ck_assert_int_eq(th_fd_count(), fds_before);

    ck_assert_int_eq(tether_token_cancel(s.tok, 0), 0);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    tether_time_t t2 = tether_now();
    fprintf(stderr, "ten_thousand_sleepers: %d threads: start %.3f s, cancel+join %.3f s\n", n,
            (double)(t1 - t0) / 1e9, (double)(t2 - t1) / 1e9);
    ck_assert_int_eq(atomic_load(&s.canceled), n);
    ck_assert_int_eq(atomic_load(&s.other), 0);
    ck_assert_int_eq(th_fd_count(), fds_before);

    free(th);
    pthread_attr_destroy(&attr);
    token_free(s.tok);
    pthread_cond_destroy(&s.cv);
    pthread_mutex_destroy(&s.mu);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_sleepers_hold_no_fd)
{
    /* Sleepers blocked under a token: not one descriptor more. */
    enum { N = 100 };
    th_baseline b = th_baseline_take();
    tether_token *t = token(NULL, TETHER_NEVER);
    struct op o[N];
    struct runner *r = calloc(N, sizeof *r);
    ck_assert_ptr_nonnull(r);
    for (int i = 0; i < N; i++) {
        memset(&o[i], 0, sizeof o[i]);
        o[i].kind = i % 2 ? OP_SLEEP_FOR : OP_SLEEP_UNTIL;
        runner_start(&r[i], &o[i], t);
    }
    for (int i = 0; i < N; i++)
        runner_wait_blocked(&r[i]);
    ck_assert_int_eq(th_fd_count(), b.fds);
    tether_time_t at = tether_now();
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    for (int i = 0; i < N; i++)
        runner_expect_fail(&r[i], ECANCELED, at);
    free(r);
    token_free(t);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_one_eventfd_per_token)
{
    /* 100 threads blocked in read, poll and write under one token add
     * exactly one descriptor (the token's eventfd), created on first use and
     * released with the token. */
    enum { N = 100 };
    th_baseline b = th_baseline_take();
    int empty[2], full[2];
    xpipe(empty);
    xpipe(full);
    fill(full[1]);
    int base = th_fd_count();
    tether_token *t = token(NULL, TETHER_NEVER);
    ck_assert_int_eq(th_fd_count(), base); /* none until a wait needs it */

    static const int kinds[] = { OP_READ, OP_POLL, OP_WRITE };
    struct op *o = calloc(N, sizeof *o);
    struct runner *r = calloc(N, sizeof *r);
    ck_assert(o && r);
    for (int i = 0; i < N; i++) {
        o[i].kind = (enum op_kind)kinds[i % 3];
        o[i].wsrc = "w";
        o[i].wlen = 1;
        int *p = o[i].kind == OP_WRITE ? full : empty;
        o[i].p[0] = p[0];
        o[i].p[1] = p[1];
    }
    runner_start(&r[0], &o[0], t);
    runner_wait_blocked(&r[0]);
    ck_assert_int_eq(th_fd_count(), base + 1);
    for (int i = 1; i < N; i++)
        runner_start(&r[i], &o[i], t);
    for (int i = 1; i < N; i++)
        runner_wait_blocked(&r[i]);
    ck_assert_int_eq(th_fd_count(), base + 1);

    tether_time_t at = tether_now();
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    for (int i = 0; i < N; i++)
        runner_expect_fail(&r[i], ECANCELED, at);
    ck_assert_int_eq(th_fd_count(), base + 1);
    token_free(t);
    ck_assert_int_eq(th_fd_count(), base);
    free(o);
    free(r);
    close_pair(empty);
    close_pair(full);
    th_baseline_check(b);
}
END_TEST

/* ======================================================================
 * Races: cancel at a random moment around the wait
 * ====================================================================== */

/* A thread that, once per round, enters the round's token and makes one call. */
struct waiter {
    struct op *op;
    tether_token *tok;
    sem_t go, done;
    bool stop;
    ssize_t ret;
    int err;
    tether_time_t called_at; /* just before the call */
    pthread_t thread;
};

static void *waiter_main(void *arg)
{
    struct waiter *w = arg;
    for (;;) {
        xsem_wait(&w->go);
        if (w->stop)
            break;
        enter(w->tok);
        w->called_at = tether_now();
        w->ret = op_call(w->op, &w->err);
        leave(w->tok);
        sem_post(&w->done);
    }
    return NULL;
}

static void waiter_start(struct waiter *w, struct op *o)
{
    memset(w, 0, sizeof *w);
    w->op = o;
    ck_assert_int_eq(sem_init(&w->go, 0, 0), 0);
    ck_assert_int_eq(sem_init(&w->done, 0, 0), 0);
    ck_assert_int_eq(pthread_create(&w->thread, NULL, waiter_main, w), 0);
}

static void waiter_stop(struct waiter *w)
{
    w->stop = true;
    sem_post(&w->go);
    ck_assert_int_eq(pthread_join(w->thread, NULL), 0);
    sem_destroy(&w->go);
    sem_destroy(&w->done);
}

START_TEST(test_race_cancel)
{
    /* Thousands of rounds: the waiter enters a blocking call while the
     * cancel lands 0-100 us later (busy-waited): before the call, during its
     * set-up, or while it sleeps. Every round ends in ECANCELED; a lost
     * wakeup would hang (bounded wait, then the Check timeout). */
    th_baseline b = th_baseline_take();
    char name[64];
    snprintf(name, sizeof name, "race_cancel(%s)", op_name[_i]);
    uint64_t rng = th_seed(name);
    int rounds = 3000 * stress(1);
    struct op o;
    op_setup(&o, _i, false);
    struct waiter w;
    waiter_start(&w, &o);
    int late = 0; /* rounds where the call began before the cancel */
    for (int i = 0; i < rounds; i++) {
        w.tok = token(NULL, TETHER_NEVER);
        sem_post(&w.go);
        busy_wait_ns(tether_us((int64_t)(th_rand(&rng) % 101)));
        tether_time_t cancel_at = tether_now();
        ck_assert_int_eq(tether_token_cancel(w.tok, 0), 0);
        ck_assert_msg(sem_wait_bounded(&w.done, th_bound_ns(5000)),
                      "%s: round %d: waiter never woke", op_name[_i], i);
        ck_assert_msg(w.ret == -1 && w.err == ECANCELED, "%s: round %d: %zd errno %s",
                      op_name[_i], i, w.ret, strerror(w.err));
        late += w.called_at < cancel_at;
        token_free(w.tok);
    }
    waiter_stop(&w);
    /* Coverage, not a requirement: a slow machine may shift the mix. */
    fprintf(stderr, "%s: %d rounds, %d with the call begun before the cancel\n", name, rounds,
            late);
    op_check_untouched(&o);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_race_conservation)
{
    /* Data and cancel race a blocked read (_i 0) or write (_i 1): whatever
     * the interleaving, every byte is either reported by the call or still
     * in the pipe, never lost nor counted twice. */
    th_baseline b = th_baseline_take();
    bool reading = _i == 0;
    uint64_t rng = th_seed(reading ? "race_conservation(read)" : "race_conservation(write)");
    int rounds = 1000 * stress(1);
    struct op o;
    op_setup(&o, reading ? OP_READ : OP_WRITE, false);
    enum { WMAX = 3 * 4096 };
    unsigned char *wsrc = pattern(WMAX);
    o.wsrc = wsrc;
    struct waiter w;
    waiter_start(&w, &o);
    unsigned char src[sizeof o.buf], got[sizeof o.buf];
    static unsigned char sink[8192];
    int moved_rounds = 0, partial_rounds = 0;
    for (int i = 0; i < rounds; i++) {
        size_t before = (size_t)pending(o.p[0]);
        size_t n = 1 + th_rand(&rng) % sizeof src; /* read: bytes written */
        size_t k = th_rand(&rng) % (sizeof sink + 1); /* write: bytes drained */
        if (reading) {
            for (size_t j = 0; j < n; j++)
                src[j] = (unsigned char)th_rand(&rng);
        } else {
            o.wlen = 1 + th_rand(&rng) % WMAX;
        }
        bool data_first = th_rand(&rng) % 2;
        int64_t d1 = tether_us((int64_t)(th_rand(&rng) % 101));
        int64_t d2 = tether_us((int64_t)(th_rand(&rng) % 51));
        w.tok = token(NULL, TETHER_NEVER);
        sem_post(&w.go);
        busy_wait_ns(d1);
        if (!data_first)
            ck_assert_int_eq(tether_token_cancel(w.tok, 0), 0);
        if (reading)
            ck_assert_int_eq(write(o.p[1], src, n), n);
        else
            read_exact(o.p[0], sink, k);
        busy_wait_ns(d2);
        if (data_first)
            ck_assert_int_eq(tether_token_cancel(w.tok, 0), 0);
        ck_assert_msg(sem_wait_bounded(&w.done, th_bound_ns(5000)), "round %d: never woke", i);
        ck_assert_msg(w.ret > 0 || (w.ret == -1 && w.err == ECANCELED), "round %d: %zd errno %s",
                      i, w.ret, strerror(w.err));
        size_t moved = w.ret > 0 ? (size_t)w.ret : 0;
        moved_rounds += moved > 0;
        partial_rounds += moved > 0 && moved < (reading ? n : o.wlen);
        size_t now = (size_t)pending(o.p[0]);
        if (reading) {
            /* n <= PIPE_BUF arrives whole: read all of it or none. */
            ck_assert_msg(moved == 0 || moved == n, "round %d: read %zu of %zu", i, moved, n);
            if (moved)
                ck_assert_mem_eq(o.buf, src, n);
            ck_assert_msg(moved + now == n, "round %d: read %zu + left %zu != written %zu", i,
                          moved, now, n);
            if (now) {
                ck_assert_int_eq(read(o.p[0], got, sizeof got), now);
                ck_assert_mem_eq(got, src, n);
            }
        } else {
            ck_assert_msg(moved <= o.wlen, "round %d: wrote %zu of %zu", i, moved, o.wlen);
            ck_assert_msg(now == before - k + moved,
                          "round %d: pipe holds %zu; expected %zu - %zu drained + %zu written",
                          i, now, before, k, moved);
            fill(o.p[1]);
        }
        token_free(w.tok);
    }
    waiter_stop(&w);
    fprintf(stderr, "race_conservation(%s): %d rounds: %d moved bytes (%d partially), %d cancelled\n",
            reading ? "read" : "write", rounds, moved_rounds, partial_rounds,
            rounds - moved_rounds);
    free(wsrc);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

/* ======================================================================
 * The suite
 * ====================================================================== */

static Suite *suite(void)
{
    Suite *s = suite_create("io");
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

    tc = tcase_create("cancellation");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_loop_test(tc, test_live_token_ready, 0, OP_COUNT);
    tcase_add_loop_test(tc, test_cancelled_before_call, 0, OP_COUNT);
    tcase_add_loop_test(tc, test_cancelled_by_parent_before_call, 0, OP_COUNT);
    tcase_add_loop_test(tc, test_cancelled_while_blocked, 0, OP_COUNT);
    tcase_add_loop_test(tc, test_parent_cancelled_while_blocked, 0, OP_COUNT);
    tcase_add_loop_test(tc, test_sibling_cancel_leaves_waiter, 0, OP_COUNT);
    tcase_add_loop_test(tc, test_signal_eintr, 0, 2 * OP_COUNT);
    tcase_add_test(tc, test_uses_innermost_token);
    tcase_add_test(tc, test_user_error_still_ecanceled);
    tcase_add_test(tc, test_read_keeps_bytes_on_cancel);
    tcase_add_test(tc, test_write_partial_on_cancel);
    tcase_add_loop_test(tc, test_write_interrupted_returns_partial, 0, 2);
    tcase_add_loop_test(tc, test_socket_cancel_while_blocked, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("deadlines");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_loop_test(tc, test_deadline_past, 0, OP_COUNT);
    tcase_add_loop_test(tc, test_deadline_now, 0, OP_COUNT);
    tcase_add_loop_test(tc, test_deadline_later, 0, OP_COUNT);
    tcase_add_loop_test(tc, test_deadline_inherited, 0, OP_COUNT);
    tcase_add_loop_test(tc, test_deadline_while_blocked_other_thread, 0, OP_COUNT);
    tcase_add_test(tc, test_sleep_before_deadline);
    tcase_add_test(tc, test_sleep_until_after_deadline);
    tcase_add_test(tc, test_poll_timeout_before_deadline);
    tcase_add_test(tc, test_poll_deadline_before_timeout);
    suite_add_tcase(s, tc);

    tc = tcase_create("bad_input");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, test_poll_nfds_above_rlimit);
    tcase_add_test(tc, test_poll_nfds_max);
    tcase_add_test(tc, test_poll_nfds_at_rlimit);
    suite_add_tcase(s, tc);

    tc = tcase_create("fd_kinds");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, test_fifo_blocking);
    tcase_add_test(tc, test_fifo_nonblocking_read);
    tcase_add_test(tc, test_fifo_nonblocking_write);
    tcase_add_test(tc, test_fifo_write_cancel);
    tcase_add_loop_test(tc, test_regular_file_uncached, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("descriptors");
    tcase_set_timeout(tc, th_timeout_s(40));
    tcase_add_test(tc, test_ten_thousand_sleepers);
    tcase_add_test(tc, test_sleepers_hold_no_fd);
    tcase_add_test(tc, test_one_eventfd_per_token);
    suite_add_tcase(s, tc);

    tc = tcase_create("races");
    tcase_set_timeout(tc, th_timeout_s(30) * stress(1));
    tcase_add_loop_test(tc, test_race_cancel, 0, OP_COUNT);
    tcase_add_loop_test(tc, test_race_conservation, 0, 2);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
