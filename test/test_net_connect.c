/*
 * Cancellable accept/accept4 and connect: blocked and canceled, timed out or
 * interrupted, and the raw call's results otherwise.
 */
#define _GNU_SOURCE
#include "net_fixtures.h"

/* ------------------------------------------------------------ accept */

START_TEST(accept_same_as_raw)
{
    th_baseline base = th_baseline_take();
    struct sockaddr_in la;
    int l = listener(&la, 16);
    tether_token *tok = lu_token(TETHER_NEVER);
    ck_assert_int_eq(tether_token_enter(tok), 0);
    for (int round = 0; round < 2; round++) {
        int c = tcp_socket();
        ck_assert_int_eq(connect(c, (struct sockaddr *)&la, sizeof la), 0);
        struct sockaddr_in peer, want;
        socklen_t pl = sizeof peer, wl = sizeof want;
        ck_assert_int_eq(getsockname(c, (struct sockaddr *)&want, &wl), 0);
        int a = round
                    ? tether_accept4(l, (struct sockaddr *)&peer, &pl, SOCK_NONBLOCK | SOCK_CLOEXEC)
                    : tether_accept(l, (struct sockaddr *)&peer, &pl);
        ck_assert_int_ge(a, 0);
        ck_assert_int_eq(pl, sizeof peer);
        ck_assert_int_eq(peer.sin_port, want.sin_port);
        ck_assert_int_eq(!!(fcntl(a, F_GETFL) & O_NONBLOCK), round);
        ck_assert_int_eq(!!(fcntl(a, F_GETFD) & FD_CLOEXEC), round);
        close(a);
        close(c);
    }
    /* O_NONBLOCK listener: EAGAIN, as accept(2). */
    fcntl(l, F_SETFL, fcntl(l, F_GETFL) | O_NONBLOCK);
    errno = 0;
    ck_assert_int_eq(tether_accept(l, NULL, NULL), -1);
    ck_assert_int_eq(errno, EAGAIN);
    errno = 0;
    ck_assert_int_eq(tether_accept(-1, NULL, NULL), -1);
    ck_assert_int_eq(errno, EBADF);
    ck_assert_int_eq(tether_token_leave(tok), 0);
    ck_assert_int_eq(accept(l, NULL, NULL), -1);
    ck_assert_int_eq(errno, EAGAIN);
    close(l);
    lu_free(tok);
    th_baseline_check(base);
}
END_TEST

/* Thousands of accepts racing a cancel: every connection is accepted exactly
 * once, by tether_accept or afterwards, and no descriptor is left open. */
static int race_lfd;

static ssize_t t_accept_race(void *a)
{
    (void)a;
    return tether_accept(race_lfd, NULL, NULL);
}

START_TEST(accept_race_never_leaks)
{
    th_baseline base = th_baseline_take();
    uint64_t rng = th_seed("accept_race_never_leaks");
    struct sockaddr_in la;
    race_lfd = listener(&la, 64);
    int iterations = 2000, by_tether = 0, by_drain = 0, canceled = 0;
    for (int i = 0; i < iterations; i++) {
        tether_token *tok = lu_token(TETHER_NEVER);
        lu_thread th;
        lu_start(&th, tok, t_accept_race, NULL);
        uint64_t r = th_rand(&rng);
        int c = tcp_socket();
        unsigned spin = (unsigned)(r >> 8) % 100000;
        if (r & 1) {
            ck_assert_int_eq(connect(c, (struct sockaddr *)&la, sizeof la), 0);
            for (volatile unsigned k = 0; k < spin; k++) {
            }
            tether_token_cancel(tok, 0);
        } else {
            for (volatile unsigned k = 0; k < spin; k++) {
            }
            tether_token_cancel(tok, 0);
            ck_assert_int_eq(connect(c, (struct sockaddr *)&la, sizeof la), 0);
        }
        lu_join(&th);
        if (th.ret >= 0) {
            by_tether++;
            close((int)th.ret);
        } else {
            ck_assert_int_eq(th.err, ECANCELED);
            canceled++;
            struct pollfd p = { .fd = race_lfd, .events = POLLIN };
            ck_assert_int_eq(poll(&p, 1, 5000), 1); /* the connection waits in the queue */
            int a = accept(race_lfd, NULL, NULL);
            ck_assert_int_ge(a, 0);
            by_drain++;
            close(a);
        }
        close(c);
        lu_free(tok);
    }
    ck_assert_int_eq(by_tether + by_drain, iterations);
    struct pollfd p = { .fd = race_lfd, .events = POLLIN };
    ck_assert_int_eq(poll(&p, 1, 0), 0); /* nothing accepted twice, nothing left */
    fprintf(stderr, "accept race: %d accepted by tether, %d canceled\n", by_tether, canceled);
    close(race_lfd);
    th_baseline_check(base);
}
END_TEST

/* ------------------------------------------------------------ connect */

START_TEST(connect_same_as_raw)
{
    th_baseline base = th_baseline_take();
    struct sockaddr_in la;
    int l = listener(&la, 16);
    tether_token *tok = lu_token(TETHER_NEVER);
    ck_assert_int_eq(tether_token_enter(tok), 0);

    int c = tcp_socket();
    int fl = fcntl(c, F_GETFL);
    ck_assert_int_eq(tether_connect(c, (struct sockaddr *)&la, sizeof la), 0);
    ck_assert_int_eq(fcntl(c, F_GETFL), fl);
    errno = 0;
    ck_assert_int_eq(tether_connect(c, (struct sockaddr *)&la, sizeof la), -1);
    ck_assert_int_eq(errno, EISCONN);
    ck_assert_int_eq(tether_send(c, "hi", 2, 0), 2);
    int a = accept(l, NULL, NULL);
    char buf[4];
    ck_assert_int_eq(recv(a, buf, sizeof buf, 0), 2);
    close(a);
    close(c);

    /* A closed port: ECONNREFUSED, as the raw call, flags as they were. */
    struct sockaddr_in dead;
    int d = listener(&dead, 1);
    close(d);
    int errs[2];
    for (int tethered = 0; tethered < 2; tethered++) {
        c = tcp_socket();
        errno = 0;
        int r = tethered ? tether_connect(c, (struct sockaddr *)&dead, sizeof dead)
                         : connect(c, (struct sockaddr *)&dead, sizeof dead);
        ck_assert_int_eq(r, -1);
        errs[tethered] = errno;
        ck_assert_int_eq(fcntl(c, F_GETFL), fl);
        close(c);
    }
    ck_assert_int_eq(errs[0], ECONNREFUSED);
    ck_assert_int_eq(errs[1], errs[0]);

    /* O_NONBLOCK: the raw call (EINPROGRESS or 0). */
    c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int r = tether_connect(c, (struct sockaddr *)&la, sizeof la);
    ck_assert(r == 0 || errno == EINPROGRESS);
    ck_assert(fcntl(c, F_GETFL) & O_NONBLOCK);
    close(c);

    /* AF_UNIX stream, and a bad descriptor. */
    struct sockaddr_un ua = { .sun_family = AF_UNIX };
    snprintf(ua.sun_path, sizeof ua.sun_path, "/tmp/tether-net-%d", (int)getpid());
    unlink(ua.sun_path);
    int ul = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_eq(bind(ul, (struct sockaddr *)&ua, sizeof ua), 0);
    ck_assert_int_eq(listen(ul, 4), 0);
    int uc = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_eq(tether_connect(uc, (struct sockaddr *)&ua, sizeof ua), 0);
    close(uc);
    close(ul);
    unlink(ua.sun_path);
    errno = 0;
    ck_assert_int_eq(tether_connect(-1, (struct sockaddr *)&la, sizeof la), -1);
    ck_assert_int_eq(errno, EBADF);

    ck_assert_int_eq(tether_token_leave(tok), 0);
    close(l);
    lu_free(tok);
    th_baseline_check(base);
}
END_TEST

/* The blackhole really blackholes: a raw non-blocking connect to it is
 * still pending after a while (so the deadline tests test something). */
START_TEST(connect_blackhole_hangs)
{
    th_baseline base = th_baseline_take();
    struct blackhole bh;
    blackhole_open(&bh);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ck_assert_int_eq(connect(c, (struct sockaddr *)&bh.addr, sizeof bh.addr), -1);
    ck_assert_int_eq(errno, EINPROGRESS);
    struct pollfd p = { .fd = c, .events = POLLOUT };
    ck_assert_int_eq(poll(&p, 1, 300), 0);
    close(c);
    blackhole_close(&bh);
    th_baseline_check(base);
}
END_TEST

/* A deadline on a connect inside tether_with_timeout: the drop-in use. */
static struct blackhole wt_bh;

static int connect_in_block(void *arg)
{
    int *c = arg;
    return tether_connect(*c, (struct sockaddr *)&wt_bh.addr, sizeof wt_bh.addr) < 0 ? errno : 0;
}

START_TEST(connect_with_timeout_block)
{
    th_baseline base = th_baseline_take();
    blackhole_open(&wt_bh);
    int c = tcp_socket();
    int fl = fcntl(c, F_GETFL);
    bool fired = false;
    tether_time_t t0 = tether_now();
    ck_assert_int_eq(tether_with_timeout(tether_ms(80), connect_in_block, &c, &fired), ETIMEDOUT);
    ck_assert(fired);
    ck_assert_int_ge(tether_now() - t0, tether_ms(80));
    ck_assert_int_eq(fcntl(c, F_GETFL), fl);
    close(c);
    blackhole_close(&wt_bh);
    th_baseline_check(base);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("net_connect");
    TCase *tc;

    tc = tcase_create("accept_connect");
    tcase_set_timeout(tc, th_timeout_s(60));
    tcase_add_test(tc, accept_same_as_raw);
    tcase_add_test(tc, accept_race_never_leaks);
    tcase_add_test(tc, connect_same_as_raw);
    tcase_add_test(tc, connect_blackhole_hangs);
    tcase_add_test(tc, connect_with_timeout_block);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
