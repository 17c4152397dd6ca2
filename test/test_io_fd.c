/*
 * The cancellable primitives and their descriptors: bad input (invalid fds,
 * pointers and sizes), the kinds of fd they accept, and the descriptors tether
 * itself holds (one eventfd per token, none for sleepers).
 */
#define _GNU_SOURCE
#include "io_fixtures.h"

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

    tether_token *t = new_token(NULL, TETHER_NEVER);
    enter(t);
    unsigned char buf[4096];
    errno = 0;
    ssize_t r = tether_read(fd, buf, sizeof buf);
    int e = errno;
    leave(t);
    ck_assert_msg(r == (ssize_t)sizeof buf,
                  "tether_read on an uncached%s file: %zd errno %s; "
                  "read(2) returns the data",
                  _i ? " O_NONBLOCK" : "", r, strerror(e));
    ck_assert(pattern_ok(buf, 0, sizeof buf));
    ck_assert_int_eq(read(fd, buf, sizeof buf), sizeof buf); /* the raw call, for the record */
    ck_assert(pattern_ok(buf, sizeof buf, sizeof buf));

    token_free(t);
    free(src);
    xclose(fd);
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
    tether_token *t = new_token(NULL, TETHER_NEVER);
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
    tether_token *t = new_token(NULL, TETHER_NEVER);
    enter(t);
    poll_agrees(set, LIMIT, 1000);
    poll_agrees(set, LIMIT, -1);
    leave(t);
    token_free(t);
    close_pair(p);
    th_baseline_check(b);
}
END_TEST

/* With nfds == RLIMIT_NOFILE and nothing ready, the token's eventfd has no
 * slot (decision 17): the wait polls in slices, yet the token's deadline
 * still ends it, soon after it passes and never before; a poll timeout
 * still gives 0. Both tether_poll and tether_ppoll. */
START_TEST(test_poll_at_rlimit_deadline)
{
    th_baseline b = th_baseline_take();
    enum { LIMIT = 64 };
    ck_assert_int_lt(th_fd_count(), LIMIT - 8);
    set_nofile(LIMIT);
    int p[2];
    xpipe(p);
    struct pollfd set[LIMIT];
    for (int i = 0; i < LIMIT; i++)
        set[i] = (struct pollfd){ .fd = -1, .events = POLLIN };
    set[LIMIT - 1] = (struct pollfd){ .fd = p[0], .events = POLLIN };
    for (int pp = 0; pp < 2; pp++) {
        tether_time_t deadline = tether_deadline_after(tether_ms(60));
        tether_token *t = new_token(NULL, deadline);
        enter(t);
        errno = 0;
        int r = pp ? tether_ppoll(set, LIMIT, NULL, NULL) : tether_poll(set, LIMIT, -1);
        int e = errno;
        tether_time_t end = tether_now();
        leave(t);
        token_free(t);
        ck_assert_msg(r == -1 && e == ETIMEDOUT, "%s: %d/%d", pp ? "ppoll" : "poll", r, e);
        ck_assert_int_ge(end, deadline);
        ck_assert_int_le(end - deadline, th_bound_ns(500));
        /* A timeout shorter than the (absent) deadline: 0, not early. */
        t = new_token(NULL, TETHER_NEVER);
        enter(t);
        struct timespec tmo = { 0, 30000000 };
        tether_time_t start = tether_now();
        r = pp ? tether_ppoll(set, LIMIT, &tmo, NULL) : tether_poll(set, LIMIT, 30);
        end = tether_now();
        leave(t);
        token_free(t);
        ck_assert_int_eq(r, 0);
        ck_assert_int_ge(end - start, tether_ms(30));
    }
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
    f->wfd =
        f->rfd < 0 ? -1 : open(path, O_WRONLY | O_CLOEXEC | (nonblocking_writer ? O_NONBLOCK : 0));
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
    tether_token *t = new_token(NULL, TETHER_NEVER);
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
    tether_token *t = new_token(NULL, tether_deadline_after(th_bound_ns(1000)));
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
    tether_token *t = new_token(NULL, tether_deadline_after(th_bound_ns(1000)));
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
    tether_token *t = new_token(NULL, TETHER_NEVER);
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
    enum {
        N = 100
    }; /* TSan: 10,000 thread traces fail to map, and each
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
    s.tok = new_token(NULL, TETHER_NEVER);
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
    tether_token *t = new_token(NULL, TETHER_NEVER);
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
    tether_token *t = new_token(NULL, TETHER_NEVER);
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

static Suite *suite(void)
{
    Suite *s = suite_create("io_fd");
    TCase *tc;

    tc = tcase_create("bad_input");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, test_poll_nfds_above_rlimit);
    tcase_add_test(tc, test_poll_nfds_max);
    tcase_add_test(tc, test_poll_nfds_at_rlimit);
    tcase_add_test(tc, test_poll_at_rlimit_deadline);
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

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
