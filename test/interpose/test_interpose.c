/*
 * The interposition layer, loaded in front of libc (LD_PRELOAD, or linked
 * ahead of it: the same source runs both ways). The test code calls the
 * plain libc names — read, poll, sleep, getaddrinfo — as third-party code
 * would, and checks that under a token each stops at the deadline and at a
 * cancel with ECANCELED/ETIMEDOUT, never EINTR; that with no token each is
 * the plain call and is not counted; that a cut connected stream socket is
 * shut down (unless turned off); and that nothing is left behind.
 *
 * getaddrinfo: a stand-in resolver (slow_resolver.c, loaded after the layer)
 * answers "slow.invalid" only after a second, so the helper-thread design is
 * exercised without a network.
 */
#define _GNU_SOURCE
#include "support.h"

#include <tether/interpose.h>

#include <dlfcn.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* The fortified entry points, as compilers emit calls to them. */
extern ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen);
extern ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags);
extern ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
                              struct sockaddr *a, socklen_t *al);
extern int __poll_chk(struct pollfd *fds, nfds_t n, int tmo, size_t fdslen);
extern int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *tmo, const sigset_t *ss,
                       size_t fdslen);

/* ------------------------------------------------------------ the layer */

typedef size_t (*counters_fn)(tether_interpose_counter *, size_t);
typedef bool (*set_shutdown_fn)(bool);

/* The layer's controls, found as a preloading program finds them. */
static counters_fn layer_counters(void)
{
    counters_fn f = (counters_fn)dlsym(RTLD_DEFAULT, "tether_interpose_counters");
    ck_assert_msg(f, "libtether_interpose.so is not loaded");
    return f;
}

static tether_interpose_counter counter(const char *name)
{
    tether_interpose_counter c[64];
    size_t n = layer_counters()(c, 64);
    ck_assert_uint_le(n, 64);
    for (size_t i = 0; i < n; i++)
        if (strcmp(c[i].name, name) == 0)
            return c[i];
    ck_abort_msg("no counter named %s", name);
    return c[0];
}

/* ------------------------------------------------------------ fixtures */

static struct {
    int p[2]; /* an empty pipe: its read end blocks */
    int s[2]; /* a connected AF_UNIX stream pair, nothing to read */
    int lst;  /* a TCP listener on 127.0.0.1 nobody connects to */
    int ep;   /* an epoll set holding p[0] */
    th_baseline base;
} F;

static void setup(void)
{
    F.base = th_baseline_take();
    ck_assert_int_eq(pipe2(F.p, O_CLOEXEC), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, F.s), 0);
    F.lst = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    ck_assert_int_eq(bind(F.lst, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(F.lst, 4), 0);
    F.ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = F.p[0] };
    ck_assert_int_eq(epoll_ctl(F.ep, EPOLL_CTL_ADD, F.p[0], &ev), 0);
}

static void teardown(void)
{
    close(F.ep);
    close(F.lst);
    close(F.s[0]);
    close(F.s[1]);
    close(F.p[0]);
    close(F.p[1]);
    ck_assert_int_eq(tether_getaddrinfo_drain(tether_now() + th_bound_ns(3000)), 0);
    th_baseline_check(F.base);
}

/* ------------------------------------------------------------ blocking calls */

/* One blocking call made through a plain libc name. Returns 0 on the
 * expected failure with errno set, as the raw call reports it. */
typedef struct blocker {
    const char *counter;   /* the entry point it goes through */
    long (*call)(void);    /* -1 and errno, like the raw call */
    void (*prepare)(void); /* makes the call block (NULL: nothing to do) */
} blocker;

static char buf[256];

static long b_read(void)
{
    return read(F.p[0], buf, sizeof buf);
}
static long b_read_chk(void)
{
    return __read_chk(F.p[0], buf, 16, sizeof buf);
}
static long b_readv(void)
{
    struct iovec iov[2] = { { buf, 8 }, { buf + 8, 8 } };
    return readv(F.p[0], iov, 2);
}
static long b_recv(void)
{
    return recv(F.s[0], buf, sizeof buf, 0);
}
static long b_recv_chk(void)
{
    return __recv_chk(F.s[0], buf, 16, sizeof buf, 0);
}
static long b_recvfrom(void)
{
    return recvfrom(F.s[0], buf, sizeof buf, 0, NULL, NULL);
}
static long b_recvfrom_chk(void)
{
    return __recvfrom_chk(F.s[0], buf, 16, sizeof buf, 0, NULL, NULL);
}
static long b_recvmsg(void)
{
    struct iovec iov = { buf, sizeof buf };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
    return recvmsg(F.s[0], &m, 0);
}
/* Writes block on a full pipe / socket. */
static void fill(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    static char junk[4096];
    while (send(fd, junk, sizeof junk, MSG_DONTWAIT | MSG_NOSIGNAL) > 0) {
    }
    while (write(fd, junk, 1) > 0) {
    }
    fcntl(fd, F_SETFL, fl);
}
static void fill_pipe(void)
{
    fill(F.p[1]);
}
static void fill_socket(void)
{
    fill(F.s[0]);
}
static long b_write(void)
{
    return write(F.p[1], buf, sizeof buf);
}
static long b_writev(void)
{
    struct iovec iov[1] = { { buf, sizeof buf } };
    return writev(F.p[1], iov, 1);
}
static long b_send(void)
{
    return send(F.s[0], buf, sizeof buf, MSG_NOSIGNAL);
}
static long b_sendto(void)
{
    return sendto(F.s[0], buf, sizeof buf, MSG_NOSIGNAL, NULL, 0);
}
static long b_sendmsg(void)
{
    struct iovec iov = { buf, sizeof buf };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
    return sendmsg(F.s[0], &m, MSG_NOSIGNAL);
}
static long b_accept(void)
{
    return accept(F.lst, NULL, NULL);
}
static long b_accept4(void)
{
    return accept4(F.lst, NULL, NULL, SOCK_CLOEXEC);
}
static long b_poll(void)
{
    struct pollfd p = { .fd = F.p[0], .events = POLLIN };
    return poll(&p, 1, -1);
}
static long b_poll_chk(void)
{
    struct pollfd p = { .fd = F.p[0], .events = POLLIN };
    return __poll_chk(&p, 1, -1, sizeof p);
}
static long b_ppoll(void)
{
    struct pollfd p = { .fd = F.p[0], .events = POLLIN };
    return ppoll(&p, 1, NULL, NULL);
}
static long b_ppoll_chk(void)
{
    struct pollfd p = { .fd = F.p[0], .events = POLLIN };
    return __ppoll_chk(&p, 1, NULL, NULL, sizeof p);
}
static long b_select(void)
{
    fd_set r;
    FD_ZERO(&r);
    FD_SET(F.p[0], &r);
    return select(F.p[0] + 1, &r, NULL, NULL, NULL);
}
static long b_pselect(void)
{
    fd_set r;
    FD_ZERO(&r);
    FD_SET(F.p[0], &r);
    return pselect(F.p[0] + 1, &r, NULL, NULL, NULL, NULL);
}
static long b_epoll_wait(void)
{
    struct epoll_event ev[4];
    return epoll_wait(F.ep, ev, 4, -1);
}
static long b_epoll_pwait(void)
{
    struct epoll_event ev[4];
    sigset_t none;
    sigemptyset(&none);
    return epoll_pwait(F.ep, ev, 4, -1, &none);
}
static long b_nanosleep(void)
{
    struct timespec t = { .tv_sec = 60 };
    return nanosleep(&t, NULL);
}
static long b_clock_nanosleep(void)
{
    struct timespec t = { .tv_sec = 60 };
    int e = clock_nanosleep(CLOCK_MONOTONIC, 0, &t, NULL);
    if (e == 0)
        return 0;
    errno = e;
    return -1;
}
static long b_clock_nanosleep_abs(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += 60;
    int e = clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &t, NULL);
    if (e == 0)
        return 0;
    errno = e;
    return -1;
}
static long b_usleep(void)
{
    return usleep(30 * 1000 * 1000);
}
static long b_sleep(void)
{
    unsigned left = sleep(60);
    return left > 0 && left <= 60 ? -1 : 0; /* errno set by the layer */
}

static const blocker blockers[] = {
    { "read", b_read, NULL },
    { "__read_chk", b_read_chk, NULL },
    { "readv", b_readv, NULL },
    { "recv", b_recv, NULL },
    { "__recv_chk", b_recv_chk, NULL },
    { "recvfrom", b_recvfrom, NULL },
    { "__recvfrom_chk", b_recvfrom_chk, NULL },
    { "recvmsg", b_recvmsg, NULL },
    { "write", b_write, fill_pipe },
    { "writev", b_writev, fill_pipe },
    { "send", b_send, fill_socket },
    { "sendto", b_sendto, fill_socket },
    { "sendmsg", b_sendmsg, fill_socket },
    { "accept", b_accept, NULL },
    { "accept4", b_accept4, NULL },
    { "poll", b_poll, NULL },
    { "__poll_chk", b_poll_chk, NULL },
    { "ppoll", b_ppoll, NULL },
    { "__ppoll_chk", b_ppoll_chk, NULL },
    { "select", b_select, NULL },
    { "pselect", b_pselect, NULL },
    { "epoll_wait", b_epoll_wait, NULL },
    { "epoll_pwait", b_epoll_pwait, NULL },
    { "nanosleep", b_nanosleep, NULL },
    { "clock_nanosleep", b_clock_nanosleep, NULL },
    { "clock_nanosleep", b_clock_nanosleep_abs, NULL },
    { "usleep", b_usleep, NULL },
    { "sleep", b_sleep, NULL },
};
enum { N_BLOCKERS = sizeof blockers / sizeof blockers[0] };

static struct {
    const blocker *b;
    long r;
    int err;
    tether_time_t returned;
} run;

static int run_blocker(void *arg)
{
    (void)arg;
    errno = 0;
    run.r = run.b->call();
    run.err = errno;
    run.returned = tether_now();
    return 0;
}

/* Each blocking call under a 100 ms deadline: ETIMEDOUT, soon after it,
 * counted as seen and stopped. */
START_TEST(deadline_stops_each_call)
{
    const blocker *b = &blockers[_i];
    if (b->prepare)
        b->prepare();
    tether_interpose_counter before = counter(b->counter);
    run.b = b;
    tether_time_t deadline = tether_deadline_after(tether_ms(100));
    bool fired = false;
    tether_with_deadline(deadline, run_blocker, NULL, &fired);
    ck_assert_msg(run.r == -1 && run.err == ETIMEDOUT, "%s (#%d): returned %ld, errno %s",
                  b->counter, _i, run.r, strerror(run.err));
    ck_assert_int_ge(run.returned, deadline);
    ck_assert_int_lt(run.returned - deadline, th_bound_ns(200));
    tether_interpose_counter after = counter(b->counter);
    ck_assert_uint_eq(after.seen, before.seen + 1);
    ck_assert_uint_eq(after.stopped, before.stopped + 1);
}
END_TEST

/* The same calls blocked under a token that another thread cancels:
 * ECANCELED, promptly. */
static tether_token *cancel_tok;
static pthread_barrier_t cancel_bar;

static void *cancel_thread(void *arg)
{
    (void)arg;
    tether_token_enter(cancel_tok);
    pthread_barrier_wait(&cancel_bar);
    run_blocker(NULL);
    tether_token_leave(cancel_tok);
    return NULL;
}

START_TEST(cancel_stops_each_call)
{
    const blocker *b = &blockers[_i];
    run.b = b;
    if (b->prepare)
        b->prepare();
    ck_assert_int_eq(tether_token_new(&cancel_tok, NULL, TETHER_NEVER), 0);
    pthread_barrier_init(&cancel_bar, NULL, 2);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, cancel_thread, NULL), 0);
    pthread_barrier_wait(&cancel_bar);
    struct timespec t = { .tv_nsec = 50 * 1000 * 1000 };
    nanosleep(&t, NULL); /* no token here: the plain call; lets it block */
    tether_time_t at = tether_now();
    tether_token_cancel(cancel_tok, 0);
    pthread_join(th, NULL);
    pthread_barrier_destroy(&cancel_bar);
    tether_token_free(cancel_tok);
    ck_assert_msg(run.r == -1 && run.err == ECANCELED, "%s (#%d): returned %ld, errno %s",
                  b->counter, _i, run.r, strerror(run.err));
    ck_assert_int_lt(run.returned - at, th_bound_ns(200));
}
END_TEST

/* ------------------------------------------------------------ no token */

/* Without a token every call is libc's: it works, and is not counted. */
START_TEST(no_token_is_the_plain_call)
{
    tether_interpose_counter r0 = counter("read"), p0 = counter("poll"), s0 = counter("nanosleep"),
                             g0 = counter("getaddrinfo");
    ck_assert_int_eq(write(F.p[1], "abc", 3), 3);
    struct pollfd p = { .fd = F.p[0], .events = POLLIN };
    ck_assert_int_eq(poll(&p, 1, 1000), 1);
    ck_assert_int_eq(read(F.p[0], buf, sizeof buf), 3);
    ck_assert_int_eq(poll(&p, 1, 10), 0);
    struct timespec t = { .tv_nsec = 1000 };
    ck_assert_int_eq(nanosleep(&t, NULL), 0);
    struct addrinfo hints = { .ai_family = AF_INET,
                              .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICHOST };
    struct addrinfo *res = NULL;
    ck_assert_int_eq(getaddrinfo("127.0.0.1", "80", &hints, &res), 0);
    freeaddrinfo(res);
    /* A non-blocking read with nothing there is EAGAIN, as always. */
    fcntl(F.p[0], F_SETFL, O_NONBLOCK);
    ck_assert_int_eq(read(F.p[0], buf, sizeof buf), -1);
    ck_assert_int_eq(errno, EAGAIN);
    ck_assert_uint_eq(counter("read").seen, r0.seen);
    ck_assert_uint_eq(counter("poll").seen, p0.seen);
    ck_assert_uint_eq(counter("nanosleep").seen, s0.seen);
    ck_assert_uint_eq(counter("getaddrinfo").seen, g0.seen);
}
END_TEST

/* Under a live token a call that does not need to wait behaves as libc's. */
static int live_token_body(void *arg)
{
    (void)arg;
    ck_assert_int_eq(write(F.p[1], "hello", 5), 5);
    ck_assert_int_eq(read(F.p[0], buf, sizeof buf), 5);
    ck_assert_int_eq(send(F.s[1], "xy", 2, MSG_NOSIGNAL), 2);
    ck_assert_int_eq(recv(F.s[0], buf, sizeof buf, 0), 2);
    struct pollfd p = { .fd = F.p[0], .events = POLLIN };
    ck_assert_int_eq(poll(&p, 1, 20), 0); /* its own timeout first: 0, as poll */
    fd_set r;
    FD_ZERO(&r);
    FD_SET(F.p[0], &r);
    struct timeval tv = { .tv_usec = 20000 };
    ck_assert_int_eq(select(F.p[0] + 1, &r, NULL, NULL, &tv), 0);
    ck_assert(!FD_ISSET(F.p[0], &r));
    ck_assert_int_eq(write(F.p[1], "z", 1), 1);
    FD_SET(F.p[0], &r);
    tv = (struct timeval){ .tv_sec = 1 };
    ck_assert_int_eq(select(F.p[0] + 1, &r, NULL, NULL, &tv), 1);
    ck_assert(FD_ISSET(F.p[0], &r));
    struct epoll_event ev[2];
    ck_assert_int_eq(epoll_wait(F.ep, ev, 2, 1000), 1);
    ck_assert_int_eq(ev[0].data.fd, F.p[0]);
    ck_assert_int_eq(read(F.p[0], buf, 1), 1);
    ck_assert_int_eq(epoll_wait(F.ep, ev, 2, 20), 0);
    ck_assert_int_eq(usleep(1000), 0);
    ck_assert_uint_eq(sleep(0), 0);
    struct addrinfo hints = { .ai_family = AF_INET, .ai_flags = AI_NUMERICHOST };
    struct addrinfo *res = NULL;
    ck_assert_int_eq(getaddrinfo("127.0.0.1", NULL, &hints, &res), 0);
    freeaddrinfo(res);
    return 0;
}

START_TEST(live_token_behaves_as_libc)
{
    tether_interpose_counter r0 = counter("read");
    ck_assert_int_eq(tether_with_timeout(tether_sec(30), live_token_body, NULL, NULL), 0);
    tether_interpose_counter r1 = counter("read");
    ck_assert_uint_eq(r1.seen, r0.seen + 2);
    ck_assert_uint_eq(r1.stopped, r0.stopped);
}
END_TEST

/* ------------------------------------------------------------ cut sockets */

static int recv_body(void *arg)
{
    (void)arg;
    ck_assert_int_eq(recv(F.s[0], buf, sizeof buf, 0), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    return 0;
}

/* A connected stream socket whose wait was cut is shut down: the peer sees
 * end of file, a later read sees it too; the fd stays open (the client
 * closes it). */
START_TEST(cut_socket_is_shut_down)
{
    tether_with_timeout(tether_ms(50), recv_body, NULL, NULL);
    ck_assert_int_eq(recv(F.s[1], buf, sizeof buf, MSG_DONTWAIT), 0);
    ck_assert_int_eq(recv(F.s[0], buf, sizeof buf, 0), 0);
    ck_assert_int_ge(fcntl(F.s[0], F_GETFD), 0);
}
END_TEST

START_TEST(cut_socket_left_alone_when_turned_off)
{
    set_shutdown_fn set = (set_shutdown_fn)dlsym(RTLD_DEFAULT, "tether_interpose_set_shutdown");
    ck_assert_ptr_nonnull(set);
    ck_assert(set(false));
    tether_with_timeout(tether_ms(50), recv_body, NULL, NULL);
    ck_assert_int_eq(recv(F.s[1], buf, sizeof buf, MSG_DONTWAIT), -1);
    ck_assert_int_eq(errno, EAGAIN);
    ck_assert_int_eq(send(F.s[1], "ok", 2, MSG_NOSIGNAL), 2);
    ck_assert_int_eq(recv(F.s[0], buf, sizeof buf, 0), 2);
    ck_assert(!set(true));
}
END_TEST

/* ------------------------------------------------------------ no EINTR */

static void on_alarm(int sig)
{
    (void)sig;
}

static int cancel_then_signal_body(void *arg)
{
    pthread_t *self_tid = arg;
    (void)self_tid;
    tether_token_cancel(tether_current(), 0);
    /* The token is canceled: a call fails at once, and a signal arriving
     * while it runs changes nothing. */
    raise(SIGUSR1);
    ck_assert_int_eq(read(F.p[0], buf, sizeof buf), -1);
    ck_assert_int_eq(errno, ECANCELED);
    struct timespec t = { .tv_sec = 10 };
    ck_assert_int_eq(nanosleep(&t, NULL), -1);
    ck_assert_int_eq(errno, ECANCELED);
    return 0;
}

START_TEST(stopped_call_never_reports_eintr)
{
    struct sigaction sa = { .sa_handler = on_alarm }; /* no SA_RESTART */
    sigaction(SIGUSR1, &sa, NULL);
    tether_with_timeout(tether_sec(30), cancel_then_signal_body, NULL, NULL);
}
END_TEST

/* ------------------------------------------------------------ no recursion */

/* tether's own wake-up write, issued from a thread whose own token is
 * canceled, must reach the kernel and wake the waiter (it must not be
 * routed back into the layer and refused with ECANCELED). */
static tether_token *waiter_tok;
static pid_t waiter_tid;
static pthread_barrier_t rec_bar;

static void *waiter(void *arg)
{
    (void)arg;
    tether_token_enter(waiter_tok);
    waiter_tid = th_gettid();
    pthread_barrier_wait(&rec_bar);
    run.r = read(F.p[0], buf, sizeof buf);
    run.err = errno;
    tether_token_leave(waiter_tok);
    return NULL;
}

static int canceler_body(void *arg)
{
    (void)arg;
    tether_token_cancel(tether_current(), 0); /* this thread's own token: canceled */
    struct timespec t = { .tv_sec = 1 };
    ck_assert_int_eq(nanosleep(&t, NULL), -1); /* at once: the token is canceled */
    ck_assert_int_eq(errno, ECANCELED);
    tether_token_cancel(waiter_tok, 0); /* its wake-up write must go through */
    return 0;
}

START_TEST(canceler_with_canceled_token_still_wakes)
{
    ck_assert_int_eq(tether_token_new(&waiter_tok, NULL, TETHER_NEVER), 0);
    pthread_barrier_init(&rec_bar, NULL, 2);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, waiter, NULL), 0);
    pthread_barrier_wait(&rec_bar);
    ck_assert_int_eq(th_wait_blocked(waiter_tid), 0); /* blocked in the read */
    tether_with_timeout(tether_sec(30), canceler_body, NULL, NULL);
    /* The waiter must return (ECANCELED); a lost wake-up hangs here until
     * Check's timeout fails the test. */
    pthread_join(th, NULL);
    pthread_barrier_destroy(&rec_bar);
    tether_token_free(waiter_tok);
    ck_assert_int_eq(run.r, -1);
    ck_assert_int_eq(run.err, ECANCELED);
}
END_TEST

/* ------------------------------------------------------------ getaddrinfo */

static int gai_rc, gai_err;

static int gai_body(void *arg)
{
    const char *host = arg;
    struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    gai_rc = getaddrinfo(host, "80", &hints, &res);
    gai_err = errno;
    run.returned = tether_now();
    if (gai_rc == 0)
        freeaddrinfo(res);
    return 0;
}

/* A lookup that takes a second, under a 100 ms deadline: EAI_SYSTEM with
 * ETIMEDOUT at the deadline; the helper finishes on its own afterwards and
 * leaves nothing behind (teardown drains it and checks threads and fds). */
START_TEST(getaddrinfo_stops_at_deadline)
{
    tether_interpose_counter g0 = counter("getaddrinfo");
    tether_time_t deadline = tether_deadline_after(tether_ms(100));
    tether_with_deadline(deadline, gai_body, "slow.invalid", NULL);
    ck_assert_int_eq(gai_rc, EAI_SYSTEM);
    ck_assert_int_eq(gai_err, ETIMEDOUT);
    ck_assert_int_lt(run.returned - deadline, th_bound_ns(200));
    ck_assert_int_eq(tether_getaddrinfo_running(), 1);
    tether_interpose_counter g1 = counter("getaddrinfo");
    ck_assert_uint_eq(g1.stopped, g0.stopped + 1);
}
END_TEST

/* A lookup that answers in time is returned as getaddrinfo returns it. */
START_TEST(getaddrinfo_answers_under_token)
{
    tether_with_timeout(tether_sec(30), gai_body, "slow.invalid", NULL);
    ck_assert_int_eq(gai_rc, 0);
    tether_with_timeout(tether_sec(30), gai_body, "localhost", NULL);
    ck_assert_int_eq(gai_rc, 0);
}
END_TEST

static int gai_canceled_body(void *arg)
{
    (void)arg;
    tether_token_cancel(tether_current(), 0);
    struct addrinfo *res = NULL;
    gai_rc = tether_getaddrinfo("slow.invalid", "80", NULL, &res);
    gai_err = errno;
    ck_assert_ptr_null(res);
    return 0;
}

/* Already canceled: fails at once, no helper started. */
START_TEST(getaddrinfo_canceled_before)
{
    tether_with_timeout(tether_sec(30), gai_canceled_body, NULL, NULL);
    ck_assert_int_eq(gai_rc, EAI_SYSTEM);
    ck_assert_int_eq(gai_err, ECANCELED);
    ck_assert_int_eq(tether_getaddrinfo_running(), 0);
}
END_TEST

/* --------------------------------------------------- the process root */

/* Run as "--root-child": a plain read() on an empty pipe, in a process
 * whose parent handed it a deadline (TETHER_DEADLINE) and no token: the
 * layer routes it to tether, which stops it at that deadline. */
static int root_child(void)
{
    int p[2];
    char c;
    if (pipe(p) != 0)
        return 2;
    tether_time_t d = tether_process_deadline();
    if (d == TETHER_NEVER)
        return 3;
    if (read(p[0], &c, 1) != -1 || errno != ETIMEDOUT)
        return 4;
    return tether_now() >= d ? 0 : 5;
}

START_TEST(process_root_stops_plain_calls)
{
    tether_time_t d = tether_deadline_after(tether_ms(300));
    char *const argv[] = { "test_interpose", "--root-child", NULL };
    int ws = th_spawn_self_by(d, argv);
    ck_assert(WIFEXITED(ws));
    ck_assert_int_eq(WEXITSTATUS(ws), 0);
    ck_assert_int_lt(tether_now(), d + th_bound_ns(3000));
}
END_TEST

/* ------------------------------------------------------------ the suite */

static Suite *interpose_suite(void)
{
    Suite *s = suite_create("interpose");
    TCase *tc = tcase_create("calls");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_loop_test(tc, deadline_stops_each_call, 0, N_BLOCKERS);
    tcase_add_loop_test(tc, cancel_stops_each_call, 0, N_BLOCKERS);
    tcase_add_test(tc, no_token_is_the_plain_call);
    tcase_add_test(tc, live_token_behaves_as_libc);
    tcase_add_test(tc, cut_socket_is_shut_down);
    tcase_add_test(tc, cut_socket_left_alone_when_turned_off);
    tcase_add_test(tc, stopped_call_never_reports_eintr);
    tcase_add_test(tc, canceler_with_canceled_token_still_wakes);
    tcase_add_test(tc, getaddrinfo_stops_at_deadline);
    tcase_add_test(tc, getaddrinfo_answers_under_token);
    tcase_add_test(tc, getaddrinfo_canceled_before);
    tcase_add_test(tc, process_root_stops_plain_calls);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--root-child") == 0)
        return root_child();
    signal(SIGPIPE, SIG_IGN);
    return th_run_suite(interpose_suite());
}
