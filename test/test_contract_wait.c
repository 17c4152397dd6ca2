/*
 * Contract matrix: poll, sleeps and signals (tether_poll, tether_ppoll,
 * tether_sleep_until, tether_sleep_for, tether_nanosleep, and a signal
 * handler with and without SA_RESTART interrupting a sleep or a read).
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


typedef ssize_t (*rd_fn)(int fd, void *buf, size_t n);


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
            snprintf(name, sizeof name, "tether_poll/%s/%s", rows[k].what,
                     ct_state_name(states[i]));
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
    for (nfds_t k = 0; k < lim; k++)
        fds[k] = (struct pollfd){ -1, POLLIN, 0 };
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
        snprintf(name, sizeof name, "tether_poll/nfds == RLIMIT_NOFILE/%s",
                 ct_state_name(states[i]));
        CT_SAME(&r, name, tr, te, rr, re);
        snprintf(name, sizeof name, "tether_ppoll/nfds == RLIMIT_NOFILE/%s",
                 ct_state_name(states[i]));
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
    long long rc =
        a->use_ppoll ? tether_ppoll(a->fds, a->n, &tmo, NULL) : tether_poll(a->fds, a->n, 1);
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
    for (int k = 0; k < 4; k++)
        fds[k] = (struct pollfd){ -1, POLLIN, 0 };
    struct timespec tmo = { 0, 1000000 };
    nfds_t counts[] = { 65, (nfds_t)-1 };
    static const char *cn[] = { "nfds > RLIMIT_NOFILE", "nfds + 1 wraps" };
    for (int c = 0; c < 2; c++) {
        for (size_t i = 0; i < 2; i++) {
            /* Under AddressSanitizer, poll/ppoll with no token are the libc
             * calls behind the sanitizer's interceptor, which reads the whole
             * array before the kernel can refuse it: nothing of tether's to
             * test there. */
            if (TH_ASAN && states[i] == CT_NONE)
                continue;
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
                    ct_row(&r, 0,
                           "%s: expected as the raw call (%d/%s), got a crash (signal %d; -1: a "
                           "sanitizer report)",
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
            snprintf(name, sizeof name, "tether_ppoll/%s/%s", rows[k].what,
                     ct_state_name(states[i]));
            if (sig)
                ct_row(&r, 0,
                       "%s: expected as the raw call (%d/%s), got a crash (signal %d; -1: a "
                       "sanitizer report)",
                       name, rr, rr == -1 ? strerrorname_np(re) : "-", sig);
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
            { "tv_nsec 1e9", &badns }, { "negative tv_sec", &neg }, { "NULL req", NULL },
            { "unmapped req", bad },   { "zero", &zero },
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
            snprintf(name, sizeof name, "tether_nanosleep/%s/%s", rows[k].what,
                     ct_state_name(states[i]));
            if (sig)
                ct_row(&r, 0,
                       "%s: expected as the raw call (%d/%s), got a crash (signal %d; -1: a "
                       "sanitizer report)",
                       name, rr, rr == -1 ? strerrorname_np(re) : "-", sig);
            else
                CT_SAME(&r, name, tr, te, rr, re);
        }
        tether_token *t = ct_enter(states[i], 0);
        int a = tether_sleep_for(0), b = tether_sleep_for(-5), c = tether_sleep_until(0);
        ct_leave(t);
        snprintf(name, sizeof name, "tether_sleep_for/0, negative; sleep_until past/%s",
                 ct_state_name(states[i]));
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
    /* An unmapped rem: untouched when the sleep completes (0, as nanosleep(2));
     * when it is cut short the kernel cannot store it: EFAULT, never a crash. */
    struct timespec us = { 0, 1000 };
    errno = 0;
    int rr = nanosleep(&us, bad);
    int re = errno;
    t = ct_enter(CT_LIVE, 0);
    struct nsleep_args na = { &us, bad };
    int te, sig;
    long long tl = ct_in_child(nsleep_call, &na, &te, &sig);
    ct_leave(t);
    if (sig)
        ct_row(&r, 0,
               "tether_nanosleep/unmapped rem, completes/live: expected as the raw call (%d), got "
               "a crash (signal %d)",
               rr, sig);
    else
        CT_SAME(&r, "tether_nanosleep/unmapped rem, completes/live", tl, te, rr, re);
    ck_assert_int_eq(tether_token_new(&t, NULL, tether_deadline_after(tether_ms(5))), 0);
    ck_assert_int_eq(tether_token_enter(t), 0);
    na.req = &ten;
    tl = ct_in_child(nsleep_call, &na, &te, &sig);
    ct_leave(t);
    if (sig)
        ct_row(&r, 0,
               "tether_nanosleep/unmapped rem, deadline first: expected -1/EFAULT, got a crash "
               "(signal %d)",
               sig);
    else
        CT_ERR(&r, "tether_nanosleep/unmapped rem, deadline first", (errno = te, tl), EFAULT);
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
    if (rc == -1 && *err == EINTR && kind <= 1 && rem.tv_sec == 0 && rem.tv_nsec == 0)
        *err = -1;
    return rc;
}

START_TEST(contract_sleep_signals)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    static const char *kn[] = { "nanosleep", "tether_nanosleep", "tether_sleep_for",
                                "tether_sleep_until" };
    for (int restart = 0; restart < 2; restart++) {
        struct sigaction sa = { 0 };
        sa.sa_handler = on_usr1;
        sa.sa_flags = restart ? SA_RESTART : 0;
        sigemptyset(&sa.sa_mask);
        ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
        for (int kind = 0; kind < 4; kind++) {
            for (size_t i = 0; i < 2; i++) {
                if (kind == 0 && i == 1)
                    continue;
                int err = 0;
                int rc = interrupted_sleep(kind, states[i], &err);
                char name[128];
                snprintf(name, sizeof name, "%s/signal %s/%s", kn[kind],
                         restart ? "with SA_RESTART" : "without SA_RESTART",
                         ct_state_name(states[i]));
                ct_row(&r, rc == -1 && err == EINTR, "%s: expected -1/EINTR (rem filled) got %d/%s",
                       name, rc,
                       rc == -1 ? (err == -1 ? "EINTR with rem unfilled" : strerrorname_np(err))
                                : "-");
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

static Suite *contract_wait_suite(void)
{
    Suite *s = suite_create("contract_wait");
    TCase *tc = tcase_create("contract_wait");
    tcase_set_timeout(tc, th_timeout_s(20));
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
    return th_run_suite(contract_wait_suite());
}
