/*
 * Fixtures shared by the I/O primitive suites (test/test_io_*.c).
 *
 * Cancellable primitives: tether_sleep_for, tether_sleep_until, tether_read,
 * tether_write and tether_poll (tether.h, "Cancellable primitives").
 *
 * What the contract promises, and what these tests hold it to:
 *  - with no current token each one is the raw call (same return, same errno);
 *  - with a live token the success path is the raw call's too;
 *  - a canceled (or expired) token fails the call at once, without blocking
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
#ifndef TETHER_TEST_IO_FIXTURES_H
#define TETHER_TEST_IO_FIXTURES_H

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

/* ======================================================================
 * Small utilities
 * ====================================================================== */

/* Assert that `expr` fails with -1 and errno `e`, printing both on mismatch. */
#define ASSERT_FAILS(expr, e)                                                                  \
    do {                                                                                       \
        errno = 0;                                                                             \
        ssize_t r_ = (ssize_t)(expr);                                                          \
        int e_ = errno;                                                                        \
        ck_assert_msg(r_ == -1 && e_ == (e), "%s: returned %zd errno %d (%s); expected -1 %s", \
                      #expr, r_, e_, strerror(e_), strerror(e));                               \
    } while (0)

static inline void xpipe(int p[2])
{
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
}

static inline void xclose(int fd)
{
    ck_assert_int_eq(close(fd), 0);
}

static inline void close_pair(int p[2])
{
    xclose(p[0]);
    xclose(p[1]);
}

static inline void set_nonblock(int fd, bool on)
{
    int fl = fcntl(fd, F_GETFL);
    ck_assert_int_ge(fl, 0);
    ck_assert_int_eq(fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK), 0);
}

/* Bytes waiting to be read in a pipe, FIFO or stream socket. */
static inline int pending(int fd)
{
    int n = -1;
    ck_assert_int_eq(ioctl(fd, FIONREAD, &n), 0);
    return n;
}

/* Write zeros until a write of even one byte would block; returns the count.
 * Descending chunk sizes so that a partly used last page fills quickly. */
static inline size_t fill(int wfd)
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
static inline unsigned char pat(size_t i)
{
    return (unsigned char)((i * 131u) ^ (i >> 9) ^ 0x5a);
}

static inline unsigned char *pattern(size_t len)
{
    unsigned char *b = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(b);
    for (size_t i = 0; i < len; i++)
        b[i] = pat(i);
    return b;
}

static inline bool pattern_ok(const unsigned char *b, size_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i] != pat(off + i))
            return false;
    return true;
}

/* Read everything now in fd (whose writer is still open) without blocking;
 * when `check`, it must continue the pattern at `off`. Returns the count. */
static inline size_t drain(int fd, size_t off, bool check)
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
static inline void read_exact(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        ck_assert_int_gt(r, 0);
        got += (size_t)r;
    }
}

static inline void token_free(tether_token *t)
{
    ck_assert_int_eq(tether_token_free(t), 0);
}

/* sem_wait with an upper bound; false if it ran out. (CLOCK_REALTIME
 * sem_timedwait because ThreadSanitizer intercepts it and not sem_clockwait.) */
static inline bool sem_wait_bounded(sem_t *s, int64_t ns)
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
    size_t in_pipe;   /* bytes in the pipe after setup */
    const void *wsrc; /* what OP_WRITE writes: one byte unless changed */
    size_t wlen;
    short revents; /* OP_POLL's result */
    unsigned char buf[64];
};

static const char ready_data[16] = "0123456789abcdef";

static inline void op_setup(struct op *o, int kind, bool ready)
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

static inline void op_teardown(struct op *o)
{
    close_pair(o->p);
}

static inline ssize_t op_call(struct op *o, int *err)
{
    ssize_t r = -2;
    errno = 0;
    switch (o->kind) {
    case OP_SLEEP_FOR: r = tether_sleep_for(o->ready ? 0 : DAY); break;
    case OP_SLEEP_UNTIL:
        r = tether_sleep_until(o->ready ? tether_now() : tether_now() + DAY);
        break;
    case OP_READ: r = tether_read(o->p[0], o->buf, sizeof o->buf); break;
    case OP_WRITE: r = tether_write(o->p[1], o->wsrc, o->wlen); break;
    case OP_POLL: {
        struct pollfd pfd = { .fd = o->p[0], .events = POLLIN, .revents = 0x5a5a };
        r = tether_poll(&pfd, 1, -1);
        o->revents = pfd.revents;
        break;
    }
    case OP_COUNT: break;
    }
    *err = errno;
    return r;
}

/* A failed call moved no bytes: the pipe holds what setup put there. */
static inline void op_check_untouched(struct op *o)
{
    ck_assert_msg(pending(o->p[0]) == (int)o->in_pipe, "%s: pipe holds %d bytes, expected %zu",
                  op_name[o->kind], pending(o->p[0]), o->in_pipe);
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

static inline void *runner_main(void *arg)
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

static inline void runner_start(struct runner *r, struct op *op, tether_token *tok)
{
    memset(r, 0, sizeof *r);
    r->op = op;
    r->tok = tok;
    ck_assert_int_eq(sem_init(&r->started, 0, 0), 0);
    ck_assert_int_eq(sem_init(&r->done, 0, 0), 0);
    ck_assert_int_eq(pthread_create(&r->thread, NULL, runner_main, r), 0);
}

/* Wait until the runner is inside its call, asleep in the kernel. */
static inline void runner_wait_blocked(struct runner *r)
{
    sem_wait_ok(&r->started);
    ck_assert_msg(th_wait_blocked(r->tid) == 0, "%s: thread %d never blocked", op_name[r->op->kind],
                  (int)r->tid);
}

static inline void runner_join(struct runner *r)
{
    ck_assert_int_eq(pthread_join(r->thread, NULL), 0);
    sem_destroy(&r->started);
    sem_destroy(&r->done);
}

/* The runner returns (bounded), is joined, and failed with `e` no later than
 * th_bound_ns(1000) after `since`. */
static inline void runner_expect_fail(struct runner *r, int e, tether_time_t since)
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

/* A thread that reads exactly `len` bytes with read(2) and checks the pattern. */
struct sink {
    int fd;
    size_t len, got;
    bool ok;
    pthread_t thread;
};

/* Same return and revents from poll(2) and tether_poll for one array. */
static inline void poll_agrees(const struct pollfd *fds, nfds_t n, int tether_timeout)
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
        ck_assert_msg(
            a[i].fd == c[i].fd && a[i].events == c[i].events && a[i].revents == c[i].revents,
            "nfds %lu entry %lu (fd %d events %#x): revents %#x, poll(2) gives %#x",
            (unsigned long)n, (unsigned long)i, c[i].fd, (unsigned)c[i].events,
            (unsigned)(unsigned short)c[i].revents, (unsigned)(unsigned short)a[i].revents);
    free(a);
    free(c);
}

#endif
